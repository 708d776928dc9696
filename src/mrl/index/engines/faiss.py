"""faiss first passes over the re-normalized prefix: ``hnsw``, ``ivf`` and ``flat``.

Inner product on unit vectors equals cosine. The prefix is stored 8-bit scalar-quantized by default (``sq8``: 1 byte
a dim; ``sq4``: half a byte), so the first pass does not hold a second float copy of the vectors; the exact second
pass on full vectors absorbs the quantization error. ``pq4`` (IVF only) goes further: 4-bit product-quantization
codes over pairs of dims (a quarter byte a dim) that faiss scans with SIMD registers ("fast-scan"); it trades the
last points of recall for a fifth of sq8's memory and faster scans.

Tombstoned rows are skipped inside faiss's traversal (an ``IDSelectorBitmap`` of live rows) rather than
over-fetched and filtered afterwards. Opening an index moves its codes and graph onto 2 MiB pages
(:mod:`mrl.index.hugepages`).

Example::

    import numpy as np
    from mrl.index.engines import ENGINES

    x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chunks = lambda: iter([(0, x)])
    first = ENGINES["hnsw"].build("sq8", 32, len(x), {}, chunks, chunks, len(x))
    assert (first.search(x[:3], 5, beam=64)[:, 0] == [0, 1, 2]).all()
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from mrl.errors import MrlError
from mrl.index.engines.base import GRAPH_SEARCH_GRID, Chunks, Engine, FirstPass
from mrl.index.hugepages import advise_huge_pages
from mrl.vectors.files import atomic_write_path
from mrl.vectors.prefix import prefix
from mrl.vectors.sampling import TRAIN_SAMPLE

SCALAR_QUANTIZERS = {
    "sq8": faiss.ScalarQuantizer.QT_8bit,
    "sq4": faiss.ScalarQuantizer.QT_4bit,
    "fp16": faiss.ScalarQuantizer.QT_fp16,
}
HNSW_EF_CONSTRUCTION = 80
POINTS_PER_LIST = 39  # faiss's floor of training points per k-means centroid (it warns below it)
IVF_TRAIN_MAX = 500_000  # IVF's k-means may take more, for its default lists at large N (10M rows: 493,311)
ADD_CHUNK = 65_536


def default_nlist(n: int) -> int:
    """About 4 x sqrt(n) lists (the faiss guideline), at least 1 and at most n // POINTS_PER_LIST."""
    return max(1, min(int(4 * np.sqrt(max(n, 1))), max(1, n // POINTS_PER_LIST)))


class FaissFirstPass(FirstPass):
    """A faiss index whose ids are row numbers, with the tombstones of its generation as a bitmap selector."""

    scores_answers = True

    def __init__(self, index: faiss.Index, background_pages: bool = True):
        self.index = index
        self.selector: faiss.IDSelector | None = None
        self._live_bits: np.ndarray | None = None  # the selector points into it: keep it alive
        self.huge_pages = advise_huge_pages(index, background=background_pages)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, beam: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is None:
            return self.index.search(queries, k, params=self.search_params(beam, k))[1]
        # faiss skips rows outside the selector during its walk (or its list scans), as it does tombstones
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        return self.index.search(queries, k, params=self.search_params(beam, k, selector))[1]

    def search_scored(self, queries: np.ndarray, k: int, beam: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The rows and their inner products with the query prefixes (every faiss first pass here is built with the
        inner-product metric, so faiss's distances are those scores, on its codes)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.index.search(queries, k, params=self.search_params(beam, k))
        return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32)

    def search_params(self, beam: int | None, k: int, selector: faiss.IDSelector | None = None):
        """efSearch (HNSW) or nprobe (IVF), plus the tombstone filter.

        efSearch is raised to at least ``k`` (the shortlist size): faiss does not do that itself, and with its
        default of 16 a search for 1,000 candidates returns a few hundred poor ones.
        """
        if isinstance(self.index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(int(beam or 0), k, 16)
        elif isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            if beam:
                params.nprobe = int(beam)
        else:
            params = faiss.SearchParameters()
        selector = selector or self.selector
        if selector is not None:
            params.sel = selector
        return params

    def hide(self, rows: np.ndarray) -> None:
        if len(rows):
            live = np.ones(self.ntotal, dtype=bool)
            live[np.asarray(rows, dtype=np.int64)] = False
            self._live_bits = np.packbits(live, bitorder="little")
            self.selector = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(self._live_bits))

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        if first_row != self.ntotal:
            raise MrlError(f"rows must be appended in order (next row {self.ntotal}, got {first_row})")
        add_in_chunks(self.index, vectors)

    def save(self, path: Path) -> None:
        atomic_write_path(path, lambda tmp: faiss.write_index(self.index, str(tmp)))

    def search_grid(self) -> list[int | None]:
        if isinstance(self.index, faiss.IndexHNSW):
            return list(GRAPH_SEARCH_GRID)
        if isinstance(self.index, faiss.IndexIVF):
            nlist = self.index.nlist
            return sorted({p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist} | {nlist})
        return [None]


def add_in_chunks(index: faiss.Index, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))


class FaissEngine(Engine):
    """``hnsw``, ``ivf`` or ``flat``: an empty faiss index is trained on the sample, then filled a chunk at a time,
    so a build never needs every prefix in one matrix."""

    suffix = "faiss"

    def __init__(self, name: str, quants: tuple[str, ...], defaults: dict, graph: bool):
        self.name, self.quants, self.defaults, self.graph = name, quants, defaults, graph

    def check(self, quant: str, width: int) -> None:
        super().check(quant, width)
        if quant == "pq4" and width % 2:
            raise MrlError(f"`quant`: 'pq4' needs an even prefix dim (got {width})")

    def sample_size(self, rows: int, params: dict) -> int:
        """IVF learns from enough rows for POINTS_PER_LIST in each of its lists, up to IVF_TRAIN_MAX; else at large
        N the lists would be too few and too long."""
        if self.name != "ivf":
            return TRAIN_SAMPLE
        return max(TRAIN_SAMPLE, min(POINTS_PER_LIST * (params.get("nlist") or default_nlist(rows)), IVF_TRAIN_MAX))

    def params(self, m: int, ef_construction: int | None, nlist: int | None) -> dict:
        if self.name == "hnsw":
            return {"M": m, "efConstruction": ef_construction or HNSW_EF_CONSTRUCTION}
        return {"nlist": nlist} if self.name == "ivf" else {}

    def build(
        self,
        quant: str,
        width: int,
        rows: int,
        params: dict,
        stored_chunks: Chunks,
        sample_chunks: Chunks,
        sample_size: int,
    ) -> FirstPass:
        for key, value in self.defaults.items():
            params.setdefault(key, value)
        sample = np.empty((sample_size, width), dtype=np.float32)  # filled in place: no second copy
        for start, unit in sample_chunks():
            sample[start : start + len(unit)] = prefix(unit, width)
        index = self.trained(quant, width, rows, params, sample)
        del sample
        for _, unit in stored_chunks():
            add_in_chunks(index, prefix(unit, width))
        return FaissFirstPass(index)

    def trained(self, quant: str, width: int, rows: int, params: dict, sample: np.ndarray) -> faiss.Index:
        """An empty index for ``rows`` rows, its quantizer (and IVF lists) trained on ``sample``. IVF's ``nlist``
        default is written back into ``params``."""
        metric = faiss.METRIC_INNER_PRODUCT
        sq = SCALAR_QUANTIZERS.get(quant)
        if self.name == "hnsw":
            m = int(params["M"])
            index = faiss.IndexHNSWSQ(width, sq, m, metric) if sq is not None else faiss.IndexHNSWFlat(width, m, metric)
            index.hnsw.efConstruction = int(params["efConstruction"])
        elif self.name == "ivf":
            # a sample smaller than sample_size asks for bounds the lists (POINTS_PER_LIST rows each)
            nlist = int(params.get("nlist") or min(default_nlist(rows), max(1, len(sample) // POINTS_PER_LIST)))
            params["nlist"] = nlist
            coarse = faiss.IndexFlatIP(width)
            if sq is not None:
                index = faiss.IndexIVFScalarQuantizer(coarse, width, nlist, sq, metric)
            elif quant == "pq4":
                index = faiss.IndexIVFPQFastScan(coarse, width, nlist, width // 2, 4, metric)
            else:
                index = faiss.IndexIVFFlat(coarse, width, nlist, metric)
            index.own_fields = True
            coarse.this.disown()
        else:
            index = faiss.IndexScalarQuantizer(width, sq, metric) if sq is not None else faiss.IndexFlatIP(width)
        if not index.is_trained:
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return index

    def load(self, path: Path, quant: str, writable: bool = False, hidden: np.ndarray | None = None) -> FirstPass:
        # searches need not wait for the pages to move; a writable copy is only added to and saved
        first = FaissFirstPass(faiss.read_index(str(path)), background_pages=not writable)
        first.hide(hidden if hidden is not None else np.zeros(0, dtype=np.int64))
        return first


HNSW = FaissEngine("hnsw", ("sq8", "sq4", "fp16", "fp32"), {"M": 16, "efConstruction": HNSW_EF_CONSTRUCTION}, True)
IVF = FaissEngine("ivf", ("sq8", "sq4", "fp16", "fp32", "pq4"), {"nlist": None}, False)
FLAT = FaissEngine("flat", ("sq8", "sq4", "fp16", "fp32"), {}, False)
