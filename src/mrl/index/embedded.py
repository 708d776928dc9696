"""The embedded two-pass index: ANN shortlist on the short prefix, exact rerank on full vectors.

Layout of an index folder (every file but ``CURRENT`` and ``docs.sqlite`` is immutable once written):

    CURRENT                      name of the live manifest
    manifest-<gen>.json          settings, tuned values and the files of generation <gen>
    vectors-<gen>.npy            a segment of rerank vectors (float32, float16 or int8 codes; all dims or the
                                 first keep_dims), read by memory map or batched preadv (mrl.index.segments)
    ann-<gen>.faiss              the first pass over the re-normalized prefix (ids = row numbers): a faiss index,
    ann-<gen>-p<width>.<suffix>  or one the tuner built at another prefix width (mrl.index.generation)
    ann-<gen>.svs/               instead, with ``ann="vamana"``: the SVS graph folder (mrl.index.engines.vamana)
    ann-<gen>.zvec/              instead, with ``ann="zvec"``: the zvec collection (mrl.index.engines.zvec)
    deleted-<gen>.npy            rows tombstoned by delete/upsert
    rotation-<gen>.npy           the d x d rotation the vectors are stored in (mrl.vectors.rotation), if any
    docs.sqlite                  row -> id, text, metadata
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.adaptive import AdaptiveWidth, WidthUsed, adaptive_rerank
from mrl.index.build import write_index
from mrl.index.docstore import DocStore
from mrl.index.engines import DEFAULT_ANN, FirstPass, engine
from mrl.index.filters import Filter, parse_filter
from mrl.index.generation import (
    BUILD_CHUNK,
    Generation,
    WidthTrials,
    raise_failed_write,
    remove_generation_files,
    save_first_pass,
)
from mrl.index.interface import (
    AUTO,
    DEFAULT_TARGET_RECALL,
    TUNE_SAMPLE,
    Hit,
    SearchIndex,
    SearchTimings,
    check_prefix_dim,
    existing_ids_error,
    unknown_ids_error,
)
from mrl.index.manifest import Manifest, collect_garbage, commit, read_current
from mrl.index.payload import PayloadIndex
from mrl.index.segments import DTYPES, encode_rows, keep_prefix, resolve_io, write_segment
from mrl.index.tuning import exact_top, exact_top_rows
from mrl.vectors.files import atomic_write, path_bytes, writer_lock
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import rotate_rows, unrotate_rows

RERANK_BYTES = 8 << 20  # decoded candidate rows a batch search gathers at a time
# a filter matching rows whose prefixes fit in this many bytes is answered by scoring those prefixes exactly: a graph
# walk masked down to a few rows visits many nodes for each one it may return
FILTER_SCAN_BYTES = 16 << 20
MATCHINGS_KEPT = 16  # filters whose matching rows (and, when few, their prefixes) an open index keeps


@dataclass
class Matching:
    """The rows a filter lets through in one generation: a mask, its row numbers, and (once a search scanned
    them) the re-normalized prefixes of those rows, when few enough to score exactly."""

    mask: np.ndarray
    rows: np.ndarray
    prefixes: np.ndarray | None = None


class Index(SearchIndex):
    """An embedded Matryoshka index; open with :meth:`open`, create with :meth:`build`.

    Example::

        from mrl.index import Index
        index = Index.build("idx/demo", vectors, documents, model="all-MiniLM-L6-v2", prefix_dim=64)
        hits = index.search("does vitamin D prevent fractures", k=10)
    """

    adaptive_width = True

    def __init__(self, folder: Path, gen: Generation, model=None, io: str = "mmap"):
        super().__init__()
        self.folder = Path(folder)
        self.io = io  # how rerank rows are read: mmap or pread (resolved from "auto" when opened)
        self.location = str(self.folder)
        self._model = model
        self.docs = DocStore(self.folder / "docs.sqlite")
        self._write_lock = threading.Lock()  # one writer per process; the file lock covers other processes
        self._payload: PayloadIndex | None = None  # metadata by field, for filters (built on first use)
        self._matchings: dict = {}  # (filter, generation) -> Matching
        self._payload_lock = threading.Lock()
        self.gen = gen

    @property
    def manifest(self) -> Manifest:
        return self.gen.manifest

    @property
    def ann(self) -> FirstPass:
        return self.gen.ann

    @property
    def deleted(self) -> np.ndarray:
        return self.gen.deleted

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.gen.vectors(rows)

    # ---- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, model=None, io: str = "auto") -> Index:
        """Open the live generation of an index folder (cheap: nothing is read but the first pass).

        ``io`` is how the rerank reads vector rows: ``mmap`` (the page cache keeps them), ``pread`` (batched
        reads from disk for vectors larger than RAM), or ``auto`` (pread when the vectors exceed half of the
        available memory). :func:`mrl.index.open_index` opens any backend by location.
        """
        if "://" in str(folder):
            raise MrlError(f"`folder`: {folder} is a database location; open it with mrl.index.open_index")
        folder = Path(folder)
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
        rotation: np.ndarray | None = None,
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
        the full vector, so the same recall needs a shorter prefix or shortlist. ``rotation`` gives that basis
        instead of fitting it (the shards of a sharded index share one: :mod:`mrl.index.shards`).

        ``store`` codes the rerank vectors as float32, float16 or int8 (per-dim scale calibrated on these
        vectors); ``keep_dims`` stores only the first dims and reranks on them, trading a quality floor for
        disk. The old generation of an overwritten index stays intact until the new one is complete: a
        build that fails (a full disk included) removes its own files and changes nothing else.

        ``vectors`` may be a memory map (``np.load(path, mmap_mode="r")``, as ``mrl index build`` passes its
        embeddings file): they are read ``chunk_rows`` at a time and never copied whole (:mod:`mrl.index.build`).
        :func:`mrl.index.build_index` builds any backend by location.
        """
        folder = Path(folder)
        auto = check_prefix_dim(prefix_dim) is None
        if target_recall is not None and not 0 < target_recall <= 1:
            raise MrlError(f"`target_recall` must be in (0, 1], got {target_recall}")
        manifest = write_index(
            folder, vectors, documents, model=model, prefix_dim=prefix_dim, ann=ann, quant=quant, store=store,
            ann_params=ann_params, overwrite=overwrite, rotate=rotate, keep_dims=keep_dims, chunk_rows=chunk_rows,
            rotation=rotation,
        )  # fmt: skip
        mode = resolve_io(io, [folder / manifest.segments[0]["file"]])
        built = cls(folder, Generation.load(folder, manifest, mode), loaded_model, mode)
        if auto or target_recall is not None:
            built.tune_after_build(auto, target_recall or DEFAULT_TARGET_RECALL, tune_queries, tune_sample, report)
        return built

    @classmethod
    def create(
        cls,
        folder: str | Path,
        model: str | None = None,
        full_dim: int | None = None,
        prefix_dim: int | None = None,
        ann: str = DEFAULT_ANN,
        quant: str = "sq8",
        store: str = "float32",
        ann_params: dict | None = None,
        loaded_model=None,
        overwrite: bool = False,
    ) -> Index:
        """An empty index to fill later with :meth:`add` (the way LangChain and LlamaIndex make their stores).

        The width comes from ``model`` (or ``full_dim`` for an index of given vectors). With no vectors to learn
        from, the index stores them unrotated and builds its first pass (``prefix_dim``, default the full width)
        with its first rows; once it is filled, ``mrl index tune --prefix-dim auto`` measures the width, and a
        rebuild from the same documents adds the rotation.
        """
        from mrl.index.build import create_empty

        if full_dim is None:
            from mrl.model import embedding_dim, load_model

            loaded_model = loaded_model or load_model(model)
            full_dim = embedding_dim(loaded_model)
            model = getattr(loaded_model, "mrl_source", model)  # where queries load it from
        folder = Path(folder)
        create_empty(folder, model, full_dim, prefix_dim or full_dim, ann, quant, store, ann_params, overwrite)
        return cls(folder, Generation.load_current(folder), loaded_model)

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

    def exact_keys(self, unit_queries: np.ndarray, k: int, filter: Filter = None) -> np.ndarray:
        """Exact full-dim top-k rows over live (and ``filter``-matching) rows, streaming the vectors in chunks."""
        g = self.gen
        allowed = self._allowed(g, filter)
        excluded = g.deleted if allowed is None else ~allowed
        return exact_top_rows(g.stored_queries(unit_queries), g.manifest.rows, g.vectors, k, excluded=excluded)

    def exact_search(self, unit_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (rows, scores) of every live row at full stored width: what an index tuned to ``exact`` does."""
        g = self.gen
        self.check_k(k)
        return self._exact(g, g.stored_queries(unit_queries), k)

    @staticmethod
    def _exact(
        g: Generation, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        flat = g.flat_float32()
        if flat is not None and allowed is None and not g.deleted.any():
            scores, rows = faiss.knn(np.ascontiguousarray(queries), flat, k, metric=faiss.METRIC_INNER_PRODUCT)
            return rows, scores
        excluded = g.deleted if allowed is None else ~allowed
        return exact_top(queries, g.manifest.rows, g.vectors, k, excluded=excluded)

    def _allowed(self, g: Generation, spec: Filter) -> np.ndarray | None:
        """The live rows a filter lets through (None: no filter), from the payload index (read-only)."""
        matching = self._matching(g, spec)
        return None if matching is None else matching.mask

    def _matching(self, g: Generation, spec: Filter) -> Matching | None:
        """What a filter lets through in generation ``g``, kept for the filters asked again (a tenant's comes back
        on every query) until a write makes a new generation."""
        node = parse_filter(spec)
        if node is None:
            return None
        key = (node, g.manifest.generation)
        with self._payload_lock:
            found = self._matchings.get(key)
        if found is None:
            mask = self.payload(g).mask(node, g.manifest.rows) & ~g.deleted
            mask.flags.writeable = False
            found = Matching(mask, np.flatnonzero(mask))
            with self._payload_lock:
                while len(self._matchings) >= MATCHINGS_KEPT:
                    self._matchings.pop(next(iter(self._matchings)))
                self._matchings[key] = found
        return found

    def payload(self, g: Generation | None = None) -> PayloadIndex:
        """The payload index over this generation's rows: built on first use, extended as rows are appended."""
        g = g or self.gen
        with self._payload_lock:
            if self._payload is None or self._payload.rows > g.manifest.rows:  # a rebuild replaced the rows
                self._payload = PayloadIndex()
            if self._payload.rows < g.manifest.rows:
                self._payload.extend(self.docs.metadata(self._payload.rows, g.manifest.rows))
            return self._payload

    def key_vectors(self, keys: list) -> np.ndarray:
        return self.gen.vectors(np.asarray(keys, dtype=np.int64))

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        g = self.gen
        live = np.flatnonzero(~g.deleted)
        rows = np.random.default_rng(seed).choice(live, size=min(n, len(live)), replace=False)
        stored = g.vectors(rows)
        if stored.shape[1] < g.manifest.full_dim:  # keep_dims: the dropped tail reads as zeros (the query's is unused)
            stored = np.pad(stored, ((0, 0), (0, g.manifest.full_dim - stored.shape[1])))
        return unrotate_rows(stored, g.rotation)

    def ann_search_grid(self) -> list[int | None]:
        return self.ann.search_grid()

    @property
    def beam_bounds_shortlist(self) -> bool:
        return engine(self.manifest.ann).graph

    def search_keys(
        self,
        unit_queries: np.ndarray,
        k: int,
        shortlist: int | None = None,
        ann_search: int | None = None,
        funnel: list[int] | None = None,
        timings: SearchTimings | None = None,
        filter: Filter = None,
        adaptive: AdaptiveWidth | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two-pass search on unit query vectors; keys are rows: (rows, scores), each (n_queries, k), -1 padded.

        With ``filter`` (:mod:`mrl.index.filters`) only matching rows can rank: the first pass walks with the
        matching rows as a mask, or, when they are few enough to scan, their prefixes are scored exactly; the
        rerank sees only matching rows either way. Fewer than ``k`` rows may match. With ``adaptive``
        (:mod:`mrl.index.adaptive`) the rerank reads the full vectors only of the candidates a middle width leaves
        in doubt, and ``timings.widths`` says per query what it read.
        """
        g = self.gen
        timings = timings or SearchTimings()
        if adaptive is not None:
            if funnel:
                raise MrlError("`adaptive` chooses the rerank width per query: drop `funnel`")
            adaptive.check(g.manifest.stored_dim)
        matching = self._matching(g, filter)
        fixed = shortlist is None and ann_search is None and not funnel and adaptive is None
        exact_mode = fixed and (g.manifest.tuned or {}).get("exact")
        if exact_mode or (matching is not None and not len(matching.rows)):
            self.check_k(k)
            t0 = time.perf_counter()  # tuned to an exact scan: faster than any first pass on this corpus
            rows, scores = self._exact(g, g.stored_queries(unit_queries), k, matching and matching.mask)
            timings.rerank = time.perf_counter() - t0
            return rows, scores

        t0 = time.perf_counter()
        unit_queries = g.stored_queries(unit_queries)
        # an adaptive rerank at the prefix's own width takes the first pass's scores where the engine gives them
        head = None
        if adaptive is not None and adaptive.width == g.manifest.prefix_dim and g.ann.scores_answers and not matching:
            cand, head = self._first_pass(g, unit_queries, k, shortlist, ann_search, scored=True)
        else:
            cand = self._first_pass(g, unit_queries, k, shortlist, ann_search, matching)
        timings.shortlist = time.perf_counter() - t0

        t0 = time.perf_counter()
        if adaptive is None:
            rows, scores = self._rerank(g, unit_queries, cand, k, funnel or [])
        else:
            rows, scores, timings.widths = self._adaptive_rerank(g, unit_queries, cand, k, adaptive, head)
        timings.rerank = time.perf_counter() - t0
        return rows, scores

    def rank_at_widths(
        self, unit_query: np.ndarray, k: int, dims: list[int], adaptive: AdaptiveWidth
    ) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], WidthUsed]:
        """For :meth:`compare_widths`: one first pass on one generation, its candidates ranked at each of ``dims``
        (margin 0), at the full width and adaptively. Per width (dims, rows, scores), full width last, and what the
        adaptive rerank read."""
        g = self.gen  # one snapshot: a write between the columns cannot make them rank different candidates
        stored = g.manifest.stored_dim
        settings = [AdaptiveWidth(d, 0.0).check(stored) for d in dims]
        adaptive.check(stored)
        query = g.stored_queries(unit_query)
        cand = self._first_pass(g, query, k, None, None)
        columns = [(s.width, *self._adaptive_rerank(g, query, cand, k, s)[:2]) for s in settings]
        columns.append((stored, *self._rerank(g, query, cand, k, [])))
        return columns, self._adaptive_rerank(g, query, cand, k, adaptive)[2][0]

    @staticmethod
    def _adaptive_rerank(
        g: Generation,
        queries: np.ndarray,
        cand: np.ndarray,
        k: int,
        adaptive: AdaptiveWidth,
        head: np.ndarray | None = None,
    ):
        """:func:`adaptive_rerank` over this generation's stored rows (queries in the stored basis); ``head``: the
        candidates' scores at the middle width, when the first pass gave them. A block of queries at a time, as the
        fixed rerank reads, so a large batch never gathers more than ``RERANK_BYTES`` of rows at once."""
        value_bytes = g.segments[0].dtype.itemsize
        block = max(1, RERANK_BYTES // (4 * g.manifest.stored_dim * max(cand.shape[1], 1)))
        parts = [
            adaptive_rerank(
                g.vectors, queries[i : i + block], cand[i : i + block], k, adaptive, g.manifest.stored_dim,
                value_bytes, None if head is None else head[i : i + block],
            )
            for i in range(0, max(len(queries), 1), block)  # one call for an empty batch too
        ]  # fmt: skip
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            [used for p in parts for used in p[2]],
        )

    def candidates(
        self, unit_queries: np.ndarray, k: int, shortlist: int | None = None, ann_search: int | None = None
    ) -> np.ndarray:
        """The first pass alone: each query's k' candidate rows, -1 padded, as :meth:`search_keys` reranks them.

        For measuring what a search reads: the rerank touches exactly these rows of the vector file.
        """
        g = self.gen
        return self._first_pass(g, g.stored_queries(unit_queries), k, shortlist, ann_search)

    def _first_pass(
        self,
        g: Generation,
        queries: np.ndarray,
        k: int,
        shortlist: int | None,
        ann_search: int | None,
        matching: Matching | None = None,
        scored: bool = False,
    ):
        """k' candidate rows a query from the first pass over the prefix (queries in the stored basis); k' and the
        search width default to the tuned values, as for every search. ``matching``: a filter's rows only.
        ``scored``: (rows, their prefix scores from the engine's codes), from an engine that gives them."""
        self.check_k(k)
        kprime = self.shortlist_size(k, shortlist)
        ann_search = ann_search or (g.manifest.tuned or {}).get("ann_search")
        width = g.manifest.prefix_dim
        q_prefix = prefix(queries, width)
        if scored:
            return g.ann.search_scored(q_prefix, kprime, ann_search)
        if matching is None:
            return g.ann.search(q_prefix, kprime, ann_search)
        rows = matching.rows
        if len(rows) * width * 4 <= FILTER_SCAN_BYTES:
            # few enough matching rows to score their prefixes exactly (kept with the filter): a walk through a
            # graph masked down to a few rows visits many nodes for each one it may return
            if matching.prefixes is None:
                matching.prefixes = prefix(g.vectors(rows, width), width)
            return scan_prefixes(q_prefix, [(rows, matching.prefixes)], kprime)
        cand = g.ann.search(q_prefix, kprime, ann_search, matching.mask)
        # an engine that over-fetches stops at its largest answer: a query it left short is scanned exactly, the
        # matching prefixes read a part at a time
        short = np.flatnonzero((cand >= 0).sum(axis=1) < min(kprime, len(rows)))
        if len(short):
            parts = np.array_split(rows, -(-len(rows) * width * 4 // FILTER_SCAN_BYTES))
            read = ((part, prefix(g.vectors(part, width), width)) for part in parts)
            cand[short] = scan_prefixes(q_prefix[short], read, kprime)
        return cand

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

    def ids_matching(self, filter: Filter = None) -> list[str]:
        g = self.gen
        allowed = self._allowed(g, filter)
        rows = np.flatnonzero(~g.deleted if allowed is None else allowed)  # an upsert leaves its old row deleted
        return sorted(doc_id for doc_id, _, _ in self.docs.fetch(rows.tolist()).values())

    # ---- writing --------------------------------------------------------------------------
    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add new documents (ids must be new); encodes texts when no vectors are given."""
        return self._write(documents, vectors, replace=False)

    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add or replace documents by id."""
        return self._write(documents, vectors, replace=True)

    def delete(self, ids: list[str], missing_ok: bool = False) -> int:
        """Tombstone documents by id (see :meth:`SearchIndex.delete`); deleting nothing commits nothing."""
        with self._write_lock, writer_lock(self.folder):
            self.refresh()
            rows = self._live_rows(ids)
            missing = [i for i in ids if i not in rows]
            if missing and not missing_ok:
                raise unknown_ids_error(missing)
            if not rows:
                return 0
            m = self._next_manifest()
            self._commit_tombstones(m, [r for rs in rows.values() for r in rs])
            m.live -= len(rows)
            commit(self.folder, m)
            collect_garbage(self.folder)
            self.gen = Generation.load(self.folder, m, self.io, self.gen)
        return len(rows)

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
                eng = engine(m.ann)
                if self.manifest.ann_file:  # a copy to extend: searches keep using the live one meanwhile
                    first = eng.load(self.folder / self.manifest.ann_file, m.quant, writable=True)
                    first.add(prefix(unit, m.prefix_dim), first_row)
                else:  # an index created empty gets its first pass with its first rows
                    rows = lambda: iter([(0, unit)])  # noqa: E731
                    first = eng.build(m.quant, m.prefix_dim, len(unit), m.ann_params, rows, rows, len(unit))
                m.ann_file = save_first_pass(self.folder, f"ann-{m.generation:08d}", m.ann, first)
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
        remove_generation_files(self.folder, m)  # what a writer killed before its commit left under this number
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
        ann_bytes = files.get(m.ann_file, 0)  # none yet in an index created empty
        # zvec keeps a float copy of the prefixes that a quantized search never reads: on disk, not in RAM
        ann_hot, ann_cold = engine(m.ann).disk_split(self.folder / m.ann_file, m.quant) if m.ann_file else (0, 0)
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


def scan_prefixes(queries: np.ndarray, parts: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """The ``k`` best rows of each query by exact prefix score over ``parts`` ((row numbers, their prefixes),
    read one at a time so that a large filter never holds all its prefixes), -1 padded, in file order."""
    top_rows = np.empty((len(queries), 0), dtype=np.int64)
    top_scores = np.empty((len(queries), 0), dtype=np.float32)
    for rows, prefixes in parts:
        scores = np.concatenate([top_scores, queries @ prefixes.T], axis=1)
        pool = np.concatenate([top_rows, np.broadcast_to(rows, (len(queries), len(rows)))], axis=1)
        keep = min(k, pool.shape[1])
        best = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        top_rows, top_scores = np.take_along_axis(pool, best, 1), np.take_along_axis(scores, best, 1)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out[:, : top_rows.shape[1]] = np.sort(top_rows, axis=1)  # the rerank reads them in file order
    return out


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
