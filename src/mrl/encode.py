"""Encoding once at full width and deriving every Matryoshka prefix from that one matrix.

Prefix views are ``normalize(full[:, :d])``: the slice of a unit vector is not a unit vector, and
comparing un-normalized prefixes with a dot product silently ranks by prefix norm instead of angle
(the classic MRL truncation bug).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mrl.model import model_fingerprint


def prefix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, re-normalized to unit length (float32)."""
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {vectors.shape}")
    if not 0 < dim <= vectors.shape[1]:
        raise ValueError(f"dim {dim} outside 1..{vectors.shape[1]}")
    view = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(view, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return view / norms


def encode_texts(model, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Full-width float32 embeddings, not normalized here (prefixes are normalized after slicing)."""
    emb = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=False,
    )
    return np.asarray(emb, dtype=np.float32)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MRL_CACHE_DIR", Path.home() / ".cache" / "mrl")) / "embeddings"


class EmbeddingCache:
    """Corpus embeddings on disk keyed by model weights + corpus content, so re-evaluating is free.

    Entries are written to a temporary file and renamed into place, so an interrupted run never
    leaves a truncated matrix that a later run would trust.
    """

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else default_cache_dir()

    def _path(self, model, corpus_key: str) -> Path:
        return self.folder / f"{model_fingerprint(model)}-{corpus_key}.npy"

    def get_or_encode(
        self, model, corpus_key: str, texts: list[str], batch_size: int = 64, progress: bool = True
    ) -> tuple[np.ndarray, bool]:
        """Return ``(embeddings, was_cached)``."""
        path = self._path(model, corpus_key)
        if path.is_file():
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                return emb, True
        emb = encode_texts(model, texts, batch_size=batch_size, progress=progress)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, emb)
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(
            json.dumps({"model": getattr(model, "mrl_source", None), "rows": len(texts), "corpus": corpus_key})
        )
        return emb, False
