"""Models: finding and loading them (the bundled default, a folder, a hub id), their ONNX runtime and model card.

``mrl.model`` is the front door: :func:`load_model` and the helpers around a loaded model; ``mrl.model.onnx``
exports and runs ONNX models, ``mrl.model.card`` writes the model card.
"""

from mrl.model.load import (
    METADATA_FILE,
    append_rotation,
    check_dims,
    embedding_dim,
    load_model,
    model_fingerprint,
    model_name,
    read_metadata,
    resolve_model,
)

__all__ = [
    "METADATA_FILE",
    "append_rotation",
    "check_dims",
    "embedding_dim",
    "load_model",
    "model_fingerprint",
    "model_name",
    "read_metadata",
    "resolve_model",
]
