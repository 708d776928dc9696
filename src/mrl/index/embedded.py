"""The embedded two-pass index: ANN shortlist on the short prefix, exact rerank on full vectors.

Layout of an index folder (every file but ``CURRENT`` and ``docs.sqlite`` is immutable once written):

    CURRENT                      name of the live manifest
    manifest-<gen>.json          settings, tuned values and the files of generation <gen>
    vectors-<gen>.npy            a segment of rerank vectors (float32, float16 or int8 codes; all dims or the
                                 first keep_dims), read by memory map or batched preadv (mrl.index.segments)
    ann-<gen>.faiss              the faiss index over the re-normalized prefix (ids = row numbers)
    ann-<gen>.svs/               instead, with ``ann="vamana"``: the SVS graph folder (mrl.index.vamana)
    ann-<gen>.zvec/              instead, with ``ann="zvec"``: the zvec collection (mrl.index.zvec_graph)
    deleted-<gen>.npy            rows tombstoned by delete/upsert
    rotation-<gen>.npy           the d x d rotation the vectors are stored in (mrl.index.rotation), if any
    docs.sqlite                  row -> id, text, metadata
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from mrl.config import DEFAULT_ANN
from mrl.data import Document
from mrl.encode import prefix
from mrl.errors import MrlError
from mrl.index.ann import (
    DEFAULT_PARAMS,
    FOLDER_ANNS,
    FolderAnn,
    add_in_chunks,
    ann_search_grid,
    build_ann,
    check_ann,
    search_params,
    trained_faiss_index,
    training_limit,
    training_rows,
)
from mrl.index.backend import (
    AUTO,
    DEFAULT_TARGET_RECALL,
    TUNE_SAMPLE,
    Hit,
    SearchBackend,
    SearchTimings,
    check_build_inputs,
    check_prefix_dim,
    existing_ids_error,
    open_index,
    unit_vectors,
    unknown_ids_error,
)
from mrl.index.docstore import DocStore
from mrl.index.hugepages import HugePageAdvice, advise_huge_pages, advise_new_mappings, memory_map
from mrl.index.manifest import MAX_RACES, Manifest, collect_garbage, commit, read_current
from mrl.index.rotation import rotate_rows, rotation_from_moment, unrotate_rows
from mrl.index.segments import (
    DTYPES,
    Segment,
    calibrate_int8,
    decode_rows,
    encode_rows,
    keep_prefix,
    resolve_io,
    write_segment,
    write_segment_chunks,
)
from mrl.index.storage import atomic_write, atomic_write_path, free_bytes, path_bytes, writer_lock
from mrl.index.tuning import exact_top, exact_top_rows
from mrl.index.vamana import VamanaAnn
from mrl.index.zvec_graph import MIN_BYTES as ZVEC_MIN_BYTES
from mrl.index.zvec_graph import ZvecAnn, hot_bytes

RERANK_BYTES = 8 << 20  # decoded candidate rows a batch search gathers at a time
BUILD_CHUNK = 4096  # rows a build reads at a time: 6 MB of 384-dim float32, a few copies of it at a peak


@dataclass
class Generation:
    """Everything one committed generation needs for searching, swapped as one reference.

    A search takes ``g = index.gen`` once and uses only ``g``, so a concurrent commit in another
    thread can never mix one generation's ANN with another's vectors or tombstones.
    """

    manifest: Manifest
    segments: list[Segment]
    starts: np.ndarray
    ann: faiss.Index | FolderAnn
    deleted: np.ndarray
    selector: faiss.IDSelector | None
    live_bits: np.ndarray | None
    huge_pages: HugePageAdvice
    rotation: np.ndarray | None

    @classmethod
    def load(cls, folder: Path, m: Manifest, io: str = "mmap", previous: Generation | None = None) -> Generation:
        """Open generation ``m``; ``io`` is how rerank rows are read (mmap or pread, mrl.index.segments).

        Segments that ``previous`` already opened (and checked) are shared, since a segment file never
        changes: a write opens and checks only the segment it added.
        """
        opened = {seg.path.name: seg for seg in previous.segments if seg.io == io} if previous else {}
        segments = [opened.get(s["file"]) or Segment(folder / s["file"], s, io) for s in m.segments]
        starts = np.cumsum([0] + [s["rows"] for s in m.segments])
        deleted = np.zeros(m.rows, dtype=bool)
        if m.tombstones_file:
            deleted[np.load(folder / m.tombstones_file)] = True
        selector, live_bits = None, None
        if m.ann == "zvec":
            ann = ZvecAnn.load(folder / m.ann_file, m.quant)
            ann.hide(np.flatnonzero(deleted))
            huge = ann.huge_pages
        elif m.ann == "vamana":
            before = memory_map()
            ann = VamanaAnn.load(folder / m.ann_file, m.quant, writable=bool(deleted.any()))
            ann.hide(np.flatnonzero(deleted))
            huge = advise_new_mappings(before, background=True)
        else:
            ann = faiss.read_index(str(folder / m.ann_file))
            huge = advise_huge_pages(ann, background=True)  # searches need not wait for the pages to move
            if deleted.any():
                # faiss skips tombstoned rows during graph/list traversal instead of us over-fetching
                live_bits = np.packbits(~deleted, bitorder="little")
                selector = faiss.IDSelectorBitmap(m.rows, faiss.swig_ptr(live_bits))
        rotation = np.load(folder / m.rotation_file) if m.rotation_file else None
        return cls(m, segments, starts, ann, deleted, selector, live_bits, huge, rotation)

    @classmethod
    def load_current(cls, folder: Path, io: str = "mmap") -> Generation:
        """Load the live generation, retrying when another process's commits remove its files meanwhile.

        Garbage collection keeps the two newest generations, so a reader that read ``CURRENT`` and then
        lost the race against two commits finds its files gone, but also finds a newer ``CURRENT``:
        loading that one instead is exactly what it would have seen a moment later.
        """
        for _ in range(MAX_RACES):
            m = read_current(folder)
            try:
                return cls.load(folder, m, io)
            except (OSError, RuntimeError):  # faiss reports a missing file as RuntimeError
                if read_current(folder).generation == m.generation:
                    raise
        raise MrlError(f"{folder}: the index changed {MAX_RACES} times while opening it; try again")

    def flat_float32(self) -> np.ndarray | None:
        """The stored vectors as one mapped float32 matrix when they are one segment (a fresh build), else None."""
        arr = self.segments[0].array if len(self.segments) == 1 else None
        return arr if arr is not None and arr.dtype == np.float32 and arr.flags.c_contiguous else None

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored rerank vectors of the given rows as float32 (``stored_dim`` wide), in the order given."""
        scale = self.manifest.int8_scale
        if len(self.segments) == 1:
            return decode_rows(self.segments[0].rows(rows), scale)
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.manifest.stored_dim), dtype=np.float32)
        for s in np.unique(seg):
            mask = seg == s
            out[mask] = decode_rows(self.segments[s].rows(rows[mask] - self.starts[s]), scale)
        return out

    def stored_queries(self, unit_queries: np.ndarray) -> np.ndarray:
        """Queries in the basis and width of the stored rows: rotated, and cut to ``keep_dims`` if it is set."""
        return keep_prefix(rotate_rows(unit_queries, self.rotation), self.manifest.keep_dims)


class Index(SearchBackend):
    """An embedded Matryoshka index; open with :meth:`open`, create with :meth:`build`.

    Example::

        from mrl.index import Index
        index = Index.build("idx/demo", vectors, documents, model="all-MiniLM-L6-v2", prefix_dim=64)
        hits = index.search("does vitamin D prevent fractures", k=10)
    """

    def __init__(self, folder: Path, gen: Generation, model=None, io: str = "mmap"):
        super().__init__()
        self.folder = Path(folder)
        self.io = io  # how rerank rows are read: mmap or pread (resolved from "auto" when opened)
        self.location = str(self.folder)
        self._model = model
        self.docs = DocStore(self.folder / "docs.sqlite")
        self._write_lock = threading.Lock()  # one writer per process; the file lock covers other processes
        self.gen = gen

    @property
    def manifest(self) -> Manifest:
        return self.gen.manifest

    @property
    def ann(self) -> faiss.Index | FolderAnn:
        return self.gen.ann

    @property
    def deleted(self) -> np.ndarray:
        return self.gen.deleted

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.gen.vectors(rows)

    # ---- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, location: str | Path, model=None, io: str = "auto") -> SearchBackend:
        """Open the live generation of an index folder (cheap: nothing is read but the ANN structure).

        ``io`` is how the rerank reads vector rows: ``mmap`` (the page cache keeps them), ``pread`` (batched
        reads from disk for vectors larger than RAM), or ``auto`` (pread when the vectors exceed half of the
        available memory). A database location (``postgresql://...``, ``qdrant://...``) opens that backend
        instead, with the same methods.
        """
        if isinstance(location, str) and "://" in location:
            return open_index(location, model)
        folder = Path(location)
        mode = resolve_io(io, [folder / s["file"] for s in read_current(folder).segments])
        return cls(folder, Generation.load_current(folder, mode), model, mode)

    @classmethod
    def build(
        cls,
        folder: str | Path,
        vectors: np.ndarray,
        documents: list[Document],
        model: str | None = None,
        prefix_dim: int | str = AUTO,
        ann: str = DEFAULT_ANN,
        quant: str = "sq8",
        store: str = "float32",
        ann_params: dict | None = None,
        overwrite: bool = False,
        loaded_model=None,
        rotate: bool = True,
        keep_dims: int | None = None,
        io: str = "auto",
        chunk_rows: int = BUILD_CHUNK,
        target_recall: float | None = None,
        tune_queries: np.ndarray | None = None,
        tune_sample: int = TUNE_SAMPLE,
        report: Callable[[str], None] | None = None,
    ) -> Index:
        """Create a new index from full-width vectors (any scale; they are normalized here).

        ``prefix_dim="auto"`` (the default) builds the first pass at full width, then lets the tuner
        (:func:`mrl.index.tuning.tune`) measure narrower prefixes and an exact scan on held-out sample queries
        (``tune_queries``, else ``tune_sample`` documents each left out of its own results) and keep the fastest
        setting that reaches ``target_recall`` (default 0.99): so the index is never slower than its own engine on
        the full vectors, and uses a prefix exactly where the prefix pays. A corpus of at most ``tune_sample``
        documents is too small to measure on: it stays at full width, and ``tuned["choice"]`` says why. A fixed
        ``prefix_dim`` builds that width, tuned for ``target_recall`` when one is given. ``report`` gets a line per
        step of the width search.

        ``rotate`` stores the vectors in a learned basis whose first dims hold the most energy
        (:mod:`mrl.index.rotation`): every full-vector score is unchanged, the prefix ranks far more like
        the full vector, so the same recall needs a shorter prefix or shortlist.

        ``store`` codes the rerank vectors as float32, float16 or int8 (per-dim scale calibrated on these
        vectors); ``keep_dims`` stores only the first dims and reranks on them, trading a quality floor for
        disk. The old generation of an overwritten index stays intact until the new one is complete: a
        build that fails (a full disk included) removes its own files and changes nothing else.

        ``vectors`` may be a memory map (``np.load(path, mmap_mode="r")``, as ``mrl index build`` passes its
        embeddings file): they are read in chunks of ``chunk_rows`` rows, twice (and the training sample twice
        before that: for the rotation, then for the quantizer), never copied whole. The
        build holds the ANN index (filled a chunk at a time; Vamana's build takes all prefixes at once), one
        chunk, and the prefixes of the sample rows the quantizer trains on (``training_limit``: 100,000, up to
        500,000 for IVF's lists at large N).
        """
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise MrlError(f"{folder}: folder exists and is not empty (use --overwrite)")
            if not (folder / "CURRENT").exists():
                raise MrlError(f"{folder}: refusing to overwrite a folder that is not an mrl index")
        vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, dtype=np.float32)
        auto = check_prefix_dim(prefix_dim) is None
        if vectors.ndim == 2 and keep_dims is not None and not 0 < keep_dims <= vectors.shape[1]:
            raise MrlError(f"keep_dims: {keep_dims} must be between 1 and the vector width {vectors.shape[1]}")
        width = (keep_dims or (vectors.shape[1] if vectors.ndim == 2 else 1)) if auto else prefix_dim
        check_build_inputs(vectors, documents, width, store)
        rows, full_dim = vectors.shape
        if keep_dims is not None and not width <= keep_dims <= full_dim:
            raise MrlError(f"keep_dims: {keep_dims} must be between the prefix dim {width} and {full_dim}")
        if target_recall is not None and not 0 < target_recall <= 1:
            raise MrlError(f"target_recall must be in (0, 1], got {target_recall}")
        keep = keep_dims if keep_dims and keep_dims < full_dim else None
        check_ann(ann, quant, width)
        params = {**DEFAULT_PARAMS.get(ann, {}), **(ann_params or {})}
        # one sample of rows for the rotation and the ANN quantizer
        sample_rows = training_rows(rows, training_limit(ann, rows, params.get("nlist")))
        sample_rows = np.arange(rows) if sample_rows is None else sample_rows

        def sample_chunks():  # the sample's unit rows, a chunk at a time (never the whole sample at full width)
            for start in range(0, len(sample_rows), chunk_rows):
                numbers = sample_rows[start : start + chunk_rows]
                yield start, unit_vectors(vectors[numbers], full_dim, "corpus vectors", numbers)

        rotation = None
        if rotate:
            moment = np.zeros((full_dim, full_dim), dtype=np.float64)
            for _, unit in sample_chunks():
                # float64 products too: a float32 sum's rounding depends on the chunking and on the CPU's kernel,
                # and the eigenvectors (hence the int8 scale) would move with it
                wide = unit.astype(np.float64)
                moment += wide.T @ wide
            rotation = rotation_from_moment(moment)

        def stored_chunks():  # unit rows in the stored basis, one chunk at a time
            for start in range(0, rows, chunk_rows):
                stop = min(start + chunk_rows, rows)
                unit = unit_vectors(vectors[start:stop], full_dim, "corpus vectors", np.arange(start, stop))
                yield start, rotate_rows(unit, rotation, out=unit)

        # first pass over the rows: the ANN index fills a chunk at a time (SVS and zvec builds take all prefixes)
        # and int8's per-dim peaks are found; the second, under the writer lock, writes the coded rows
        peak = np.zeros(keep or full_dim, dtype=np.float32)

        def find_peak(unit: np.ndarray) -> None:
            np.maximum(peak, np.abs(keep_prefix(unit, keep)).max(axis=0), out=peak)

        def stored_sample():
            for start, unit in sample_chunks():
                yield start, rotate_rows(unit, rotation, out=unit)

        index = build_first_pass(
            ann, quant, width, rows, params, stored_chunks, stored_sample, len(sample_rows),
            on_chunk=find_peak if store == "int8" else None,
        )  # fmt: skip
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
                manifest.segments = [
                    write_segment_chunks(folder, f"vectors-{gen:08d}.npy", shape, DTYPES[store], codes)
                ]
                if rotation is not None:
                    manifest.rotation_file = f"rotation-{gen:08d}.npy"
                    atomic_write(folder / manifest.rotation_file, lambda h: np.save(h, rotation))
                manifest.format_version = manifest.required_version()
                manifest.ann_file = _write_ann(folder, f"ann-{gen:08d}", index)
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
        mode = resolve_io(io, [folder / manifest.segments[0]["file"]])
        built = cls(folder, Generation.load(folder, manifest, mode), loaded_model, mode)
        if auto or target_recall is not None:
            built.tune_after_build(auto, target_recall or DEFAULT_TARGET_RECALL, tune_queries, tune_sample, report)
        return built

    def tune_after_build(
        self,
        auto: bool,
        target_recall: float,
        queries: np.ndarray | None,
        sample: int,
        report: Callable[[str], None] | None,
    ) -> dict:
        """The tuning :meth:`build` asks for: the width search with ``auto``, else k' and the beam at the built width.

        Under ``auto`` a corpus of at most ``sample`` documents, too few to hold that many out, stays untuned at full
        width, and the stored ``choice`` says so.
        """
        from mrl.index.tuning import tune

        if auto and queries is None and self.count <= sample:
            tuned = {
                "prefix_dim": self.prefix_dim,
                "choice": f"full width, untuned: {self.count} documents are too few to measure prefix widths on "
                f"{sample} of them held out (give tuning queries, or a fixed prefix dim)",
            }
            self.set_tuned(tuned)
            return tuned
        return tune(self, target_recall, queries=queries, sample=sample, widths="auto" if auto else None, report=report)

    def refresh(self) -> bool:
        """Pick up a newer committed generation written by another process; True if it changed."""
        if read_current(self.folder).generation == self.manifest.generation:
            return False
        self.gen = Generation.load_current(self.folder, self.io)
        return True

    # ---- the backend interface -------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        return self.manifest.model

    @property
    def full_dim(self) -> int:
        return self.manifest.full_dim

    @property
    def prefix_dim(self) -> int:
        return self.manifest.prefix_dim

    @property
    def count(self) -> int:
        return self.manifest.live

    @property
    def tuned(self) -> dict | None:
        return self.manifest.tuned

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def hits_for(self, keys, scores) -> list[list[Hit]]:
        """Keys are row numbers here; :meth:`hits` looks them up in the document store."""
        return self.hits(np.asarray(keys), np.asarray(scores))

    def exact_keys(self, unit_queries: np.ndarray, k: int) -> np.ndarray:
        """Exact full-dim top-k rows over live rows (streams the memory-mapped vectors in chunks)."""
        g = self.gen
        return exact_top_rows(g.stored_queries(unit_queries), g.manifest.rows, g.vectors, k, excluded=g.deleted)

    def exact_search(self, unit_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (rows, scores) of every live row at full stored width: what an index tuned to ``exact`` does."""
        g = self.gen
        self.check_k(k)
        return self._exact(g, g.stored_queries(unit_queries), k)

    @staticmethod
    def _exact(g: Generation, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        flat = g.flat_float32()
        if flat is not None and not g.deleted.any():
            scores, rows = faiss.knn(np.ascontiguousarray(queries), flat, k, metric=faiss.METRIC_INNER_PRODUCT)
            return rows, scores
        return exact_top(queries, g.manifest.rows, g.vectors, k, excluded=g.deleted)

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        g = self.gen
        live = np.flatnonzero(~g.deleted)
        rows = np.random.default_rng(seed).choice(live, size=min(n, len(live)), replace=False)
        stored = g.vectors(rows)
        if stored.shape[1] < g.manifest.full_dim:  # keep_dims: the dropped tail reads as zeros (the query's is unused)
            stored = np.pad(stored, ((0, 0), (0, g.manifest.full_dim - stored.shape[1])))
        return unrotate_rows(stored, g.rotation)

    def ann_search_grid(self) -> list[int | None]:
        return ann_search_grid(self.ann)

    @property
    def beam_bounds_shortlist(self) -> bool:
        return isinstance(self.ann, FolderAnn | faiss.IndexHNSW)

    def search_keys(
        self,
        unit_queries: np.ndarray,
        k: int,
        shortlist: int | None = None,
        ann_search: int | None = None,
        funnel: list[int] | None = None,
        timings: SearchTimings | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two-pass search on unit query vectors; keys are rows: (rows, scores), each (n_queries, k), -1 padded."""
        g = self.gen
        timings = timings or SearchTimings()
        if shortlist is None and ann_search is None and not funnel and (g.manifest.tuned or {}).get("exact"):
            self.check_k(k)
            t0 = time.perf_counter()  # tuned to an exact scan: faster than any first pass on this corpus
            rows, scores = self._exact(g, g.stored_queries(unit_queries), k)
            timings.rerank = time.perf_counter() - t0
            return rows, scores

        t0 = time.perf_counter()
        unit_queries = g.stored_queries(unit_queries)
        cand = self._first_pass(g, unit_queries, k, shortlist, ann_search)
        timings.shortlist = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows, scores = self._rerank(g, unit_queries, cand, k, funnel or [])
        timings.rerank = time.perf_counter() - t0
        return rows, scores

    def candidates(
        self, unit_queries: np.ndarray, k: int, shortlist: int | None = None, ann_search: int | None = None
    ) -> np.ndarray:
        """The first pass alone: each query's k' candidate rows, -1 padded, as :meth:`search_keys` reranks them.

        For measuring what a search reads: the rerank touches exactly these rows of the vector file.
        """
        g = self.gen
        return self._first_pass(g, g.stored_queries(unit_queries), k, shortlist, ann_search)

    def _first_pass(
        self, g: Generation, queries: np.ndarray, k: int, shortlist: int | None, ann_search: int | None
    ) -> np.ndarray:
        """k' candidate rows a query from the ANN over the prefix (queries in the stored basis); k' and the
        search width default to the tuned values, as for every search."""
        self.check_k(k)
        kprime = self.shortlist_size(k, shortlist)
        ann_search = ann_search or (g.manifest.tuned or {}).get("ann_search")
        q_prefix = prefix(queries, g.manifest.prefix_dim)
        if isinstance(g.ann, FolderAnn):
            return g.ann.search(q_prefix, kprime, ann_search)
        return g.ann.search(q_prefix, kprime, params=search_params(g.ann, ann_search, g.selector, kprime))[1]

    @staticmethod
    def _rerank(g: Generation, queries: np.ndarray, cand: np.ndarray, k: int, funnel: list[int]):
        """Exact scores of each query's candidates (queries in the stored basis: ``rotate_rows``)."""
        flat = g.flat_float32()
        if flat is not None and not funnel:
            return rerank_by_rows(flat, queries, cand, k)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        # a block of queries' candidates in one batched read, in file order; the blocks bound what a large
        # batch holds (1,000 queries x k' 320 would gather 320,000 rows at once)
        block = max(1, RERANK_BYTES // (4 * g.manifest.stored_dim * max(cand.shape[1], 1)))
        for i, q in enumerate(queries):
            if i % block == 0:
                block_cand = cand[i : i + block]
                wanted = np.unique(block_cand[block_cand >= 0])
                gathered = g.vectors(wanted)
            c = cand[i][cand[i] >= 0]
            if not len(c):
                continue
            vecs = gathered[np.searchsorted(wanted, c)]
            for dim in funnel:  # cheaper intermediate stages narrow the candidate set before the full dot product
                if dim >= g.manifest.stored_dim or len(c) <= 4 * k:
                    continue
                s = (vecs[:, :dim] @ q[:dim]) / np.maximum(np.linalg.norm(vecs[:, :dim], axis=1), 1e-12)
                keep = np.argpartition(-s, max(4 * k, len(c) // 4) - 1)[: max(4 * k, len(c) // 4)]
                c, vecs = c[keep], vecs[keep]
            s = vecs @ q
            top = np.argsort(-s)[:k] if len(s) <= k else np.argpartition(-s, k - 1)[:k]
            top = top[np.argsort(-s[top])]
            out_rows[i, : len(top)] = c[top]
            out_scores[i, : len(top)] = s[top]
        return out_rows, out_scores

    def hits(self, rows: np.ndarray, scores: np.ndarray) -> list[list[Hit]]:
        """Turn (rows, scores) from :meth:`search_keys` into hits with ids, text and metadata."""
        found = self.docs.fetch(sorted({int(r) for r in rows.ravel() if r >= 0}))
        return [
            [Hit(found[r][0], float(s), found[r][1], found[r][2]) for r, s in zip(rr, ss, strict=True) if r >= 0]
            for rr, ss in zip(rows.tolist(), scores.tolist(), strict=True)
        ]

    def get(self, ids: list[str]) -> dict[str, Document]:
        """The live documents among ``ids`` (absent ids are simply not in the result)."""
        rows = self._live_rows(ids)
        found = self.docs.fetch([r for rs in rows.values() for r in rs])
        return {doc_id: Document(doc_id, found[rs[0]][1], found[rs[0]][2]) for doc_id, rs in rows.items()}

    def ids_where(self, key: str, value) -> list[str]:
        g = self.gen
        matching = self.docs.rows_where(key, value, below=g.manifest.rows)
        live = self._live_rows(list(matching))  # an upsert may have moved an id to a row without the match
        return sorted(i for i, rows in matching.items() if set(rows) & set(live.get(i, [])))

    # ---- writing --------------------------------------------------------------------------
    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add new documents (ids must be new); encodes texts when no vectors are given."""
        return self._write(documents, vectors, replace=False)

    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add or replace documents by id."""
        return self._write(documents, vectors, replace=True)

    def delete(self, ids: list[str]) -> int:
        """Tombstone documents by id; unknown ids are an error and nothing is deleted."""
        with self._write_lock, writer_lock(self.folder):
            self.refresh()
            rows = self._live_rows(ids)
            missing = [i for i in ids if i not in rows]
            if missing:
                raise unknown_ids_error(missing)
            m = self._next_manifest()
            self._commit_tombstones(m, [r for rs in rows.values() for r in rs])
            m.live -= len(ids)
            commit(self.folder, m)
            collect_garbage(self.folder)
            self.gen = Generation.load(self.folder, m, self.io, self.gen)
        return len(ids)

    def _write(self, documents: list[Document], vectors: np.ndarray | None, replace: bool) -> int:
        unit = self.vectors_for(documents, vectors)
        with self._write_lock, writer_lock(self.folder):
            self.refresh()
            existing = self._live_rows([d.id for d in documents])
            if existing and not replace:
                raise existing_ids_error(list(existing))
            unit = rotate_rows(unit, self.gen.rotation)
            m = self._next_manifest()
            first_row = m.rows
            codes = encode_rows(keep_prefix(unit, m.keep_dims), m.store, m.int8_scale)
            try:
                m.segments = [*m.segments, write_segment(self.folder, f"vectors-{m.generation:08d}.npy", codes)]
                # a copy to extend: searches keep using the live one meanwhile
                if m.ann in FOLDER_ANNS:
                    ann = FOLDER_ANNS[m.ann].load(self.folder / self.manifest.ann_file, m.quant, writable=True)
                    ann.add(prefix(unit, m.prefix_dim), first_row)
                else:
                    ann = faiss.clone_index(self.gen.ann)
                    add_in_chunks(ann, prefix(unit, m.prefix_dim))
                m.ann_file = _write_ann(self.folder, f"ann-{m.generation:08d}", ann)
                m.rows += len(unit)
                replaced = [r for rs in existing.values() for r in rs]
                if replaced:
                    self._commit_tombstones(m, replaced)
                m.live += len(unit) - len(replaced)
                self.docs.append(first_row, documents)  # rows past the live manifest's count are never read
                commit(self.folder, m)
            except BaseException as exc:
                raise_failed_write(self.folder, m, exc, "adding documents")
            collect_garbage(self.folder)
            self.gen = Generation.load(self.folder, m, self.io, self.gen)
        return len(documents)

    def _next_manifest(self) -> Manifest:
        m = Manifest(**{**self.manifest.__dict__})
        m.generation += 1
        m.segments = list(m.segments)
        return m

    def _commit_tombstones(self, m: Manifest, rows: list[int]) -> None:
        current = np.flatnonzero(self.deleted)
        merged = np.union1d(current, np.asarray(rows, dtype=np.int64))
        name = f"deleted-{m.generation:08d}.npy"
        atomic_write(self.folder / name, lambda h: np.save(h, merged))
        m.tombstones_file = name

    def _live_rows(self, ids: list[str]) -> dict[str, list[int]]:
        g = self.gen
        found = self.docs.rows_for_ids(ids, below=g.manifest.rows)
        live = {i: [r for r in rows if not g.deleted[r]] for i, rows in found.items()}
        return {i: rows for i, rows in live.items() if rows}

    # ---- introspection --------------------------------------------------------------------
    def stats(self) -> dict:
        m = self.manifest
        files = {name: path_bytes(self.folder / name) for name in m.files()}
        ann_bytes = files[m.ann_file]
        # zvec keeps a float copy of the prefixes that a quantized search never reads: on disk, not in RAM
        ann_hot, ann_cold = hot_bytes(self.folder / m.ann_file, m.quant) if m.ann == "zvec" else (ann_bytes, 0)
        vector_bytes = sum(files[s["file"]] for s in m.segments)
        docs_bytes = (self.folder / "docs.sqlite").stat().st_size
        exact = bool((m.tuned or {}).get("exact"))  # an exact scan reads every row of every search
        # what a search keeps hot (RAM) and what it reads from disk: the rerank's rows, and the hits' documents
        parts = [
            {
                "part": f"ANN over the {m.prefix_dim}-dim prefix ({m.ann}, {m.quant})",
                "bytes": ann_hot,
                "where": "ram",
            },
            *[
                {"part": "zvec's float copy of the prefixes (never searched)", "bytes": b, "where": "disk"}
                for b in [ann_cold]
                if b
            ],
            {"part": "tombstones", "bytes": int(self.deleted.nbytes), "where": "ram"},
            {
                "part": f"{'vectors, scanned exactly' if exact else 'rerank vectors'} ({m.stored_dim} dims, {m.store}, "
                f"{len(m.segments)} segments, {self.io})",
                "bytes": vector_bytes,
                "where": "ram" if exact else "disk",
            },
            {"part": "documents (SQLite)", "bytes": docs_bytes, "where": "disk"},
        ]
        if m.rotation_file:
            parts.insert(1, {"part": "rotation", "bytes": files[m.rotation_file], "where": "ram"})
        return {
            "path": str(self.folder),
            "model": m.model,
            "documents": m.live,
            "rows": m.rows,
            "deleted": int(self.deleted.sum()),
            "full_dim": m.full_dim,
            "prefix_dim": m.prefix_dim,
            "ann": m.ann,
            "quant": m.quant,
            "store": m.store,
            "keep_dims": m.keep_dims,
            "stored_dim": m.stored_dim,
            "io": self.io,
            "rotated": m.rotation_file is not None,
            "ann_params": m.ann_params,
            "tuned": m.tuned,
            "generation": m.generation,
            "ram_bytes": sum(p["bytes"] for p in parts if p["where"] == "ram"),
            "disk_bytes": sum(files.values()) + docs_bytes,
            "cold_bytes": sum(p["bytes"] for p in parts if p["where"] == "disk"),
            "ann_bytes": ann_bytes,
            "vector_bytes": vector_bytes,
            "bytes_per_vector": m.stored_dim * np.dtype(DTYPES[m.store]).itemsize,
            "huge_page_bytes": self.gen.huge_pages.bytes,
            "parts": parts,
        }

    @contextmanager
    def width_trials(self) -> Iterator[WidthTrials]:
        """First passes at other prefix widths, built from the stored rows and searched before one is committed.

        Holds the index's writer lock throughout; whatever :meth:`WidthTrials.adopt` did not commit is removed and
        the index searches its committed generation again when the block ends (see :func:`mrl.index.tuning.tune`).
        """
        with self._write_lock, writer_lock(self.folder):
            self.refresh()
            trials = WidthTrials(self)
            try:
                yield trials
            finally:
                trials.close()

    def set_tuned(self, tuned: dict) -> None:
        """Record auto-tuned search settings in a new generation."""
        with self._write_lock, writer_lock(self.folder):
            self.refresh()
            m = self._next_manifest()
            m.tuned = tuned
            commit(self.folder, m)
            collect_garbage(self.folder)
            self.gen = Generation.load(self.folder, m, self.io, self.gen)

    def close(self) -> None:
        self.docs.close()


class WidthTrials:
    """Candidate first passes of one index at several prefix widths (:meth:`Index.width_trials`).

    Each candidate is the index's own engine and codes (``ann``, ``quant``, its build parameters) over the first
    ``width`` dims of the stored rows, written under the next generation's number with its width in the name, and
    loaded as an uncommitted :class:`Generation` that the index searches while :meth:`use` has it selected.
    """

    def __init__(self, index: Index):
        self.index = index
        self.base = index.gen
        self.generation = self.base.manifest.generation + 1
        self.stored_dim = self.base.manifest.stored_dim
        self.built: dict[int, Generation] = {}
        self.adopted = False

    def use(self, width: int) -> None:
        """Search with the first pass at ``width`` from now on (building it on first use)."""
        if width not in self.built:
            self.built[width] = self._build(width)
        self.index.gen = self.built[width]

    def _build(self, width: int) -> Generation:
        base = self.base.manifest
        m = Manifest(**{**base.__dict__})
        m.generation, m.prefix_dim, m.tuned = self.generation, width, None
        m.segments = list(base.segments)
        if width == base.prefix_dim:  # the committed first pass, searched as it is
            return dataclasses.replace(self.base, manifest=m)
        check_ann(m.ann, m.quant, width)
        rows, params = base.rows, dict(base.ann_params)
        sample = training_rows(rows, training_limit(m.ann, rows, params.get("nlist")))
        sample = np.arange(rows) if sample is None else sample

        def stored_chunks():
            for start in range(0, rows, BUILD_CHUNK):
                yield start, self.base.vectors(np.arange(start, min(start + BUILD_CHUNK, rows)))

        def sample_chunks():
            for start in range(0, len(sample), BUILD_CHUNK):
                yield start, self.base.vectors(sample[start : start + BUILD_CHUNK])

        folder = self.index.folder
        try:
            ann = build_first_pass(m.ann, m.quant, width, rows, params, stored_chunks, sample_chunks, len(sample))
            m.ann_file = _write_ann(folder, f"ann-{self.generation:08d}-p{width}", ann)
        except BaseException as exc:
            raise_failed_write(folder, m, exc, f"building the {width}-dim first pass")
        del ann  # the saved copy is what the generation loads (and moves to 2 MiB pages)
        return Generation.load(folder, m, self.index.io, self.base)

    def drop(self, width: int) -> None:
        """Forget the candidate at ``width`` and remove its files (never the committed generation's)."""
        gen = self.built.pop(width, None)
        if self.index.gen is gen:
            self.index.gen = self.base
        if gen is not None and gen.manifest.ann_file != self.base.manifest.ann_file:
            path = self.index.folder / gen.manifest.ann_file
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def adopt(self, width: int, tuned: dict) -> None:
        """Commit the candidate at ``width`` as the live generation, with ``tuned`` (the tuner's choice and table)."""
        gen = self.built[width]
        gen.manifest.tuned = tuned
        commit(self.index.folder, gen.manifest)
        self.index.gen = gen
        self.adopted = True

    def close(self) -> None:
        for width in list(self.built):
            if not (self.adopted and self.index.gen is self.built[width]):
                self.drop(width)
        if not self.adopted:
            self.index.gen = self.base
        collect_garbage(self.index.folder)


def build_first_pass(
    ann: str,
    quant: str,
    width: int,
    rows: int,
    params: dict,
    stored_chunks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    sample_chunks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    sample_size: int,
    on_chunk: Callable[[np.ndarray], None] | None = None,
) -> faiss.Index | FolderAnn:
    """The first pass over the first ``width`` dims of every stored row (re-normalized), read a chunk at a time.

    ``stored_chunks()`` and ``sample_chunks()`` yield (first row, unit rows in the stored basis) over all rows and
    over the ``sample_size`` rows a faiss quantizer trains on. zvec and SVS take every prefix at once; a faiss index
    fills a chunk at a time. ``on_chunk`` sees each chunk of stored rows too (a build finds int8 peaks there).
    """
    if ann in FOLDER_ANNS:
        first_pass = np.empty((rows, width), dtype=np.float32)
    else:
        sample = np.empty((sample_size, width), dtype=np.float32)  # filled in place: no second copy
        for start, unit in sample_chunks():
            sample[start : start + len(unit)] = prefix(unit, width)
        index = trained_faiss_index(ann, quant, width, rows, params, sample)
        del sample
    for start, unit in stored_chunks():
        if ann in FOLDER_ANNS:
            first_pass[start : start + len(unit)] = prefix(unit, width)
        else:
            add_in_chunks(index, prefix(unit, width))
        if on_chunk is not None:
            on_chunk(unit)
    if ann in FOLDER_ANNS:
        index = build_ann(ann, quant, first_pass, params)
    return index


def rerank_by_rows(vectors: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int):
    """Top-k of each query's candidate rows by exact inner product, in faiss's C++ loop (threaded over queries).

    The same result as gathering the rows and scoring them in numpy, without a Python iteration per query:
    for a short shortlist that iteration costs more than the dot products, and it holds the GIL.
    ``cand`` rows are -1 padded at the end, as faiss's first pass returns them.
    """
    nq, width = cand.shape
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    scores = np.empty((nq, k), dtype=np.float32)
    rows = np.empty((nq, k), dtype=np.int64)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(queries),
        faiss.swig_ptr(vectors),
        faiss.swig_ptr(cand),
        vectors.shape[1],
        nq,
        len(vectors),
        width,
        k,
        faiss.swig_ptr(scores),
        faiss.swig_ptr(rows),
        width,
    )
    scores[rows < 0] = -np.inf
    return rows, scores


def estimate_bytes(
    rows: int,
    full_dim: int,
    prefix_dim: int,
    store: str = "float32",
    keep_dims: int | None = None,
    text_bytes: int = 0,
    ann: str = DEFAULT_ANN,
) -> int:
    """Disk an embedded build of ``rows`` vectors will take: rerank rows, the ANN file and the document store.

    Generous on purpose (the graph's links, SQLite's pages at twice the text): a refusal costs a rerun with
    more space, a build that runs out of space costs the encoding. zvec keeps a float copy of the prefixes
    beside its graph, and even a small collection takes about 11 MB.
    """
    row_bytes = (keep_dims or full_dim) * np.dtype(DTYPES[store]).itemsize
    ann_bytes = 4 * (prefix_dim + 64)
    if ann == "zvec":
        return rows * (row_bytes + ann_bytes + 4 * prefix_dim) + 2 * text_bytes + ZVEC_MIN_BYTES
    return rows * (row_bytes + ann_bytes) + 2 * text_bytes


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse a build that cannot fit on the disk, before any work: say how much it needs and how much is free."""
    free = free_bytes(folder)
    if needed > free:
        raise MrlError(
            f"{folder}: the index needs about {needed / 2**20:,.1f} MiB on disk and {free / 2**20:,.1f} MiB are "
            "free there; free some space or build elsewhere"
        )


def _committed(folder: Path, generation: int) -> bool:
    return (folder / "CURRENT").exists() and read_current(folder).generation == generation


def raise_failed_write(folder: Path, m: Manifest, exc: BaseException, doing: str, cleanup=None) -> None:
    """After a write of generation ``m`` failed: remove its files (unless it committed after all) and re-raise.

    A full disk becomes one clear error. The live generation is untouched either way. ``cleanup`` removes
    what else the caller wrote.
    """
    if _committed(folder, m.generation):
        raise exc  # the commit went through before the failure: the new generation is live, keep its files
    full = _disk_full(folder, exc)  # before our partial files go and free their space again
    if folder.exists():
        _remove_generation_files(folder, m)
    if cleanup is not None:
        cleanup()
    if full:
        raise MrlError(f"{folder}: the disk filled up while {doing}; nothing was changed") from None
    raise exc


def _disk_full(folder: Path, exc: BaseException) -> bool:
    """ENOSPC, or a short write (numpy's and faiss's errors carry no errno) on a disk with under 1 MiB left."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if not isinstance(exc, OSError | RuntimeError):
        return False
    return free_bytes(folder) < 2**20


def _remove_generation_files(folder: Path, m: Manifest) -> None:
    """Delete what a failed write of generation ``m`` left: its own files and its manifest, never older ones."""
    tag = f"-{m.generation:08d}"
    for path in folder.glob(f"*{tag}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for stray in folder.glob(f".*{tag}*"):  # temp files of an interrupted atomic write
        shutil.rmtree(stray, ignore_errors=True) if stray.is_dir() else stray.unlink(missing_ok=True)


def _remove_sqlite(path: Path, keep_main: bool = False) -> None:
    """Remove an SQLite file's -wal and -shm companions (and the file itself unless ``keep_main``)."""
    for suffix in ("-wal", "-shm") if keep_main else ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _write_ann(folder: Path, stem: str, index: faiss.Index | FolderAnn) -> str:
    """Save a first pass as ``<stem>.faiss``, or as the folder ``<stem>.<suffix>`` of a folder engine."""
    if isinstance(index, FolderAnn):
        name = f"{stem}.{index.SUFFIX}"
        index.save(folder / name)
        return name
    name = f"{stem}.faiss"
    atomic_write_path(folder / name, lambda tmp: faiss.write_index(index, str(tmp)))
    return name
