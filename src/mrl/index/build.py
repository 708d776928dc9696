"""Writing a new embedded index: the first generation of a folder, or a complete replacement of its index.

The vectors are read in chunks, twice (and the training sample twice before that: for the rotation, then for the
first pass's quantizer), never copied whole, so ``vectors`` may be a memory map of an embeddings file larger than
RAM. The build holds the first pass (filled a chunk at a time; zvec and SVS take every prefix at once), one chunk,
and the sample's prefixes. The old generation of an overwritten index stays intact until the new one commits: a
build that fails (a full disk included) removes its own files and changes nothing else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.docstore import DocStore
from mrl.index.engines import engine
from mrl.index.generation import BUILD_CHUNK, raise_failed_write, save_first_pass
from mrl.index.interface import AUTO, check_build_inputs, check_prefix_dim, unit_vectors
from mrl.index.manifest import Manifest, collect_garbage, commit, read_current
from mrl.index.segments import DTYPES, calibrate_int8, encode_rows, keep_prefix, write_segment_chunks
from mrl.vectors.files import atomic_write, free_bytes, writer_lock
from mrl.vectors.rotation import rotate_rows, rotation_from_moment
from mrl.vectors.sampling import training_rows


def write_index(
    folder: Path,
    vectors: np.ndarray,
    documents: list[Document],
    model: str | None,
    prefix_dim: int | str = AUTO,
    ann: str = "zvec",
    quant: str = "sq8",
    store: str = "float32",
    ann_params: dict | None = None,
    overwrite: bool = False,
    rotate: bool = True,
    keep_dims: int | None = None,
    chunk_rows: int = BUILD_CHUNK,
    rotation: np.ndarray | None = None,
) -> Manifest:
    """Write and commit a new index generation in ``folder`` (see :meth:`mrl.index.embedded.Index.build`); returns
    its manifest. ``prefix_dim="auto"`` builds the first pass at the full stored width. ``rotation``: a basis fitted
    elsewhere (from :func:`sample_moment`) instead of one fitted here: the shards of one index share theirs, so
    their prefixes rank alike."""
    auto = check_prefix_dim(prefix_dim) is None
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise MrlError(f"{folder}: folder exists and is not empty (pass `overwrite` to replace the index)")
        if not (folder / "CURRENT").exists():
            raise MrlError(f"{folder}: refusing to overwrite a folder that is not an mrl index")
    vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 2 and keep_dims is not None and not 0 < keep_dims <= vectors.shape[1]:
        raise MrlError(f"`keep_dims`: {keep_dims} must be between 1 and the vector width {vectors.shape[1]}")
    width = (keep_dims or (vectors.shape[1] if vectors.ndim == 2 else 1)) if auto else prefix_dim
    check_build_inputs(vectors, documents, width, store)
    rows, full_dim = vectors.shape
    if keep_dims is not None and not width <= keep_dims <= full_dim:
        raise MrlError(f"`keep_dims`: {keep_dims} must be between the prefix dim {width} and {full_dim}")
    keep = keep_dims if keep_dims and keep_dims < full_dim else None
    eng = engine(ann)
    eng.check(quant, width)
    params = {**eng.defaults, **(ann_params or {})}
    chosen = sample_rows(rows, ann, params)  # one sample of rows for the rotation and the first pass's quantizer

    if rotation is not None:
        if not rotate:
            raise MrlError("`rotation` is the basis of a rotated build: drop it, or `rotate`=False")
        if rotation.shape != (full_dim, full_dim):
            raise MrlError(f"`rotation` is {rotation.shape[0]} x {rotation.shape[1]}, the vectors are {full_dim}-dim")
    elif rotate:
        rotation = rotation_from_moment(sample_moment(unit for _, unit in sample_chunks(vectors, chosen, chunk_rows)))

    def stored_chunks():  # unit rows in the stored basis, one chunk at a time
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            unit = unit_vectors(vectors[start:stop], full_dim, "corpus vectors", np.arange(start, stop))
            yield start, rotate_rows(unit, rotation, out=unit)

    # first pass over the rows: the first pass fills a chunk at a time (zvec and SVS take every prefix at once)
    # and int8's per-dim peaks are found; the second, under the writer lock, writes the coded rows
    peak = np.zeros(keep or full_dim, dtype=np.float32)

    def watched_chunks():
        for start, unit in stored_chunks():
            if store == "int8":
                np.maximum(peak, np.abs(keep_prefix(unit, keep)).max(axis=0), out=peak)
            yield start, unit

    def stored_sample():
        for start, unit in sample_chunks(vectors, chosen, chunk_rows):
            yield start, rotate_rows(unit, rotation, out=unit)

    first = eng.build(quant, width, rows, params, watched_chunks, stored_sample, len(chosen))
    scale = calibrate_int8(peak[None, :]) if store == "int8" else None
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with writer_lock(folder):
        gen = read_current(folder).generation + 1 if (folder / "CURRENT").exists() else 1
        manifest = Manifest(
            model=model,
            full_dim=full_dim,
            prefix_dim=width,
            ann=ann,
            quant=quant,
            store=store,
            ann_params=params,
            generation=gen,
            rows=rows,
            live=rows,
            keep_dims=keep,
            int8_scale=scale,
        )
        new_docs = folder / "docs.sqlite.new"
        try:
            codes = (encode_rows(keep_prefix(unit, keep), store, scale) for _, unit in stored_chunks())
            shape = (rows, keep or full_dim)
            manifest.segments = [write_segment_chunks(folder, f"vectors-{gen:08d}.npy", shape, DTYPES[store], codes)]
            if rotation is not None:
                manifest.rotation_file = f"rotation-{gen:08d}.npy"
                atomic_write(folder / manifest.rotation_file, lambda h: np.save(h, rotation))
            manifest.format_version = manifest.required_version()
            manifest.ann_file = save_first_pass(folder, f"ann-{gen:08d}", ann, first)
            _remove_sqlite(new_docs)
            docs = DocStore(new_docs)
            docs.append(0, documents)
            docs.close()
            commit(folder, manifest)  # the commit point: until here the old generation is untouched
        except BaseException as exc:

            def cleanup() -> None:
                _remove_sqlite(new_docs)
                if created:
                    shutil.rmtree(folder, ignore_errors=True)

            raise_failed_write(folder, manifest, exc, "building the index", cleanup)
        _remove_sqlite(folder / "docs.sqlite", keep_main=True)
        os.replace(new_docs, folder / "docs.sqlite")
        collect_garbage(folder)
    return manifest


def sample_rows(rows: int, ann: str, params: dict) -> np.ndarray:
    """The fixed rows of ``rows`` that a build's rotation and its first pass's quantizer learn from: the engine's
    sample size of them (:func:`mrl.vectors.sampling.training_rows`), or all, in increasing order."""
    chosen = training_rows(rows, engine(ann).sample_size(rows, params))
    return np.arange(rows) if chosen is None else chosen


def sample_chunks(vectors: np.ndarray, rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """The unit vectors of ``rows``, a chunk at a time (never the whole sample at full width), with each chunk's
    start in ``rows``; an error names the first bad row."""
    for start in range(0, len(rows), chunk_rows):
        numbers = rows[start : start + chunk_rows]
        yield start, unit_vectors(vectors[numbers], vectors.shape[1], "corpus vectors", numbers)


def sample_moment(units: Iterable[np.ndarray]) -> np.ndarray:
    """``sum x xᵀ`` over chunks of unit rows, in float64: the matrix :func:`rotation_from_moment` turns into the basis.

    float64 products too: a float32 sum's rounding depends on the chunking and on the CPU's kernel, and the
    eigenvectors (hence the int8 scale) would move with it.
    """
    moment = None
    for unit in units:
        wide = unit.astype(np.float64)
        moment = wide.T @ wide if moment is None else moment + wide.T @ wide
    if moment is None:
        raise MrlError("nothing to index: the corpus is empty")
    return moment


def create_empty(
    folder: Path,
    model: str | None,
    full_dim: int,
    prefix_dim: int,
    ann: str,
    quant: str,
    store: str,
    ann_params: dict | None,
    overwrite: bool,
) -> Manifest:
    """Commit generation 1 of an index with no rows: no vectors, no first pass yet, an empty document store."""
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise MrlError(f"{folder}: folder exists and is not empty (pass `overwrite` to replace the index)")
    if isinstance(prefix_dim, bool) or not isinstance(prefix_dim, int) or not 0 < prefix_dim <= full_dim:
        raise MrlError(
            f"`prefix_dim` must be a whole number between 1 and the vector width {full_dim}, not {prefix_dim!r}"
        )
    if store == "int8":
        raise MrlError("`store` int8 calibrates its scale on the vectors of a build; create with float32 or float16")
    eng = engine(ann)
    eng.check(quant, prefix_dim)
    folder.mkdir(parents=True, exist_ok=True)
    with writer_lock(folder):
        gen = read_current(folder).generation + 1 if (folder / "CURRENT").exists() else 1
        manifest = Manifest(
            model=model, full_dim=full_dim, prefix_dim=prefix_dim, ann=ann, quant=quant, store=store,
            ann_params={**eng.defaults, **(ann_params or {})}, generation=gen,
        )  # fmt: skip
        manifest.format_version = manifest.required_version()
        new_docs = folder / "docs.sqlite.new"
        _remove_sqlite(new_docs)
        DocStore(new_docs).close()
        commit(folder, manifest)
        _remove_sqlite(folder / "docs.sqlite", keep_main=True)
        os.replace(new_docs, folder / "docs.sqlite")
        collect_garbage(folder)
    return manifest


def estimate_bytes(
    rows: int,
    full_dim: int,
    prefix_dim: int,
    store: str = "float32",
    keep_dims: int | None = None,
    text_bytes: int = 0,
    ann: str = "zvec",
) -> int:
    """Disk an embedded build of ``rows`` vectors will take: rerank rows, the first pass and the document store.

    Generous on purpose (the graph's links, SQLite's pages at twice the text): a refusal costs a rerun with
    more space, a build that runs out of space costs the encoding.
    """
    row_bytes = (keep_dims or full_dim) * np.dtype(DTYPES[store]).itemsize
    return rows * row_bytes + engine(ann).estimate_bytes(rows, prefix_dim) + 2 * text_bytes


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse a build that cannot fit on the disk, before any work: say how much it needs and how much is free."""
    free = free_bytes(folder)
    if needed > free:
        raise MrlError(
            f"{folder}: the index needs about {needed / 2**20:,.1f} MiB on disk and {free / 2**20:,.1f} MiB are "
            "free there; free some space or build elsewhere"
        )


def _remove_sqlite(path: Path, keep_main: bool = False) -> None:
    """Remove an SQLite file's -wal and -shm companions (and the file itself unless ``keep_main``)."""
    for suffix in ("-wal", "-shm") if keep_main else ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
