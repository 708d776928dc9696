"""Encoding once at full width and deriving every Matryoshka prefix from that one matrix.

Prefix views are ``normalize(full[:, :d])``: the slice of a unit vector is not a unit vector, and
comparing un-normalized prefixes with a dot product silently ranks by prefix norm instead of angle
(the classic MRL truncation bug).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mrl.errors import MrlError
from mrl.model import model_fingerprint

CHUNK_ROWS = 4096  # texts encoded, written and recorded at a time by encode_to_file


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


def encode_reusing(
    model,
    texts: list[str],
    known: Mapping[str, int],
    known_vectors: np.ndarray,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """One row per text of ``texts``: a text in ``known`` takes row ``known[text]`` of ``known_vectors``.

    The rest are encoded in one pass (each distinct text once). Training and mining texts are often corpus
    documents already encoded through the cache (a BEIR positive is one); re-encoding hundreds of abstracts
    costs minutes with a 768-dim model on a CPU. Rows come back as stored: normalize with :func:`prefix`.
    """
    fresh = list(dict.fromkeys(t for t in texts if t not in known))
    encoded = encode_texts(model, fresh, batch_size, progress=progress) if fresh else None
    fresh_row = {t: i for i, t in enumerate(fresh)}
    out = np.empty((len(texts), known_vectors.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = known_vectors[known[text]] if text in known else encoded[fresh_row[text]]
    return out


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
        self._describe(path, model, corpus_key, len(texts))
        return emb, False

    @staticmethod
    def _describe(path: Path, model, corpus_key: str, rows: int) -> None:
        """The entry's sidecar: which model and corpus made it (for a person looking in the cache)."""
        path.with_suffix(".json").write_text(
            json.dumps({"model": getattr(model, "mrl_source", None), "rows": rows, "corpus": corpus_key})
        )

    def encode_to_file(
        self, model, corpus_key: str, texts: list[str], batch_size: int = 64, chunk_rows: int | None = None
    ) -> Path:
        """Encode into the cache entry chunk by chunk, never holding the whole matrix; returns the entry's path.

        For corpora whose vectors do not fit in memory: open the result with ``np.load(path, mmap_mode="r")``.
        Rows go to ``<entry>.partial.npy`` as they are made, and ``<entry>.partial.json`` records how many are
        done, so an interrupted run (Ctrl-C, a killed job) resumes where it stopped when run again; the entry
        appears under its own name only once complete. Free space for the whole file is checked first.
        """
        from mrl.model import embedding_dim
        from mrl.vectors.files import atomic_write_json, free_bytes

        path = self._path(model, corpus_key)
        if path.is_file() and np.load(path, mmap_mode="r").shape[0] == len(texts):
            return path
        dim, chunk_rows = embedding_dim(model), chunk_rows or CHUNK_ROWS
        partial, state_file = path.with_suffix(".partial.npy"), path.with_suffix(".partial.json")
        state = json.loads(state_file.read_text()) if state_file.is_file() and partial.is_file() else {}
        done = state.get("rows", 0) if state.get("total") == len(texts) and state.get("dim") == dim else 0
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
        if not done:
            needed = len(texts) * dim * 4
            self.folder.mkdir(parents=True, exist_ok=True)
            free = free_bytes(self.folder)
            if needed > free:
                raise MrlError(
                    f"{self.folder}: the embeddings need {needed / 2**20:,.1f} MiB and {free / 2**20:,.1f} MiB are "
                    "free there; free some space or pass `cache_dir`"
                )
            with open(partial, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, {**header, "shape": (len(texts), dim)})
                handle.truncate(handle.tell() + needed)
        else:
            Console(stderr=True).print(f"resuming the encoding at text {done:,} of {len(texts):,}")
        with open(partial, "r+b") as handle:
            np.lib.format.read_magic(handle)
            np.lib.format.read_array_header_1_0(handle)
            offset, row_bytes = handle.tell(), dim * 4
            columns = (TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("encoding", total=len(texts), completed=done)
                try:
                    for start in range(done, len(texts), chunk_rows):
                        rows = encode_texts(model, texts[start : start + chunk_rows], batch_size, progress=False)
                        os.pwrite(handle.fileno(), rows.tobytes(), offset + start * row_bytes)
                        os.fsync(handle.fileno())
                        done = start + len(rows)
                        atomic_write_json(state_file, {"rows": done, "total": len(texts), "dim": dim})
                        bar.update(task, completed=done)
                except KeyboardInterrupt:
                    Console(stderr=True).print(
                        f"interrupted after {done:,} of {len(texts):,} texts; the same command resumes from there"
                    )
                    raise
        os.replace(partial, path)
        state_file.unlink()
        self._describe(path, model, corpus_key, len(texts))
        return path
