"""zvec's HNSW graph over 8-bit codes as the first pass: ``--ann zvec``.

Why a third graph engine: a graph walk over a prefix is bound by memory latency, one random read of a
code per visited node, and the engines differ most in how they hide it. zvec (Alibaba's Proxima engine,
Apache-2.0, a wheel that needs only numpy) walks an HNSW graph over int8 codes with software prefetching
of the next neighbours' codes and a low-latency single-query path. Over the same prefix, with the same
graph degree and search beam as faiss HNSW-SQ8, it answers a query in less time
(benchmarks/index_speed.py and first_pass.py measure it against the other engines).
``quant="sq8"`` maps to zvec's INT8 codes, ``fp16`` to FP16 and ``fp32`` to uncompressed floats; the
rerank on full vectors absorbs the coarser codes.

On disk an index is one folder ``ann-<gen>.zvec``: a zvec collection whose documents are the rows, in
row order, so zvec's internal ids are the row numbers (checked when a generation loads). zvec keeps a
float copy of every prefix beside the quantized graph; a quantized search never reads it, so
:func:`hot_bytes` counts it on disk, not in RAM. Collections are built with zvec's contiguous layout:
opening one copies the graph and its codes out of the mapped files into memory zvec maps itself (a few
pieces), which mrl then backs with 2 MiB pages (mrl.index.hugepages), as it does faiss's arrays; a walk over
a mapped file of 4 KiB pages pays a TLB miss on almost every hop. :meth:`add` extends a copy of the collection,
never the live one; tombstoned rows are hidden in memory when a generation loads, as with faiss and SVS.

Example::

    import numpy as np
    from mrl.index.engines import ENGINES

    x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chunks = lambda: iter([(0, x)])
    first = ENGINES["zvec"].build("sq8", 32, len(x), {}, chunks, chunks, len(x))
    assert (first.search(x[:3], 5, beam=64)[:, 0] == [0, 1, 2]).all()
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np

from mrl.errors import MrlError
from mrl.index.engines.base import GRAPH_SEARCH_GRID, Chunks, Engine, FirstPass, all_prefixes, overfetch
from mrl.index.hugepages import HugePageAdvice, advise_new_mappings, memory_map
from mrl.vectors.files import atomic_write_path

QUANTS = ("sq8", "fp16", "fp32")
ZVEC_QUANTS = {"sq8": "INT8", "fp16": "FP16", "fp32": None}  # None: zvec's unquantized graph
DEFAULT_PARAMS = {"M": 16, "efConstruction": 200}
FIELD = "v"
MAX_EF = 2048  # zvec refuses a search list (ef, hence also top-k) longer than this
WRITE_BATCH = 1024  # documents a zvec insert takes at most
FLOAT_COPY = "*.index.*.proxima"  # zvec's float copy of the vectors; a quantized graph is *.qindex.*
# a collection's least size on disk: zvec grows its graph and float-copy files in steps of about 5 MiB (40 rows
# of 64 dims took 11 MB)
MIN_BYTES = 12 << 20


def zvec_module():
    """``zvec``, or a clear error naming the package that installs it."""
    try:
        import zvec
    except ImportError as exc:
        raise MrlError("ann zvec needs zvec: pip install zvec (mrl installs it by default)") from exc
    return zvec


def hot_bytes(folder: Path, quant: str) -> tuple[int, int]:
    """(bytes a search reads, bytes it never reads) of a saved collection: the float copy is cold when quantized."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    cold = {f for f in files if f.match(FLOAT_COPY)} if ZVEC_QUANTS[quant] else set()
    return sum(f.stat().st_size for f in files if f not in cold), sum(f.stat().st_size for f in cold)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a collection file by file, so a full disk raises its own OSError (ENOSPC), which the index reports as
    such; ``shutil.copytree`` gathers its errors into one without an errno."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:  # sorted: a folder comes before what it holds
            shutil.copy2(path, target)


class ZvecFirstPass(FirstPass):
    """A zvec collection whose internal ids are the rows of the mrl index.

    Searches of a saved collection go through zvec's read-only low-latency path, one query a call; a build
    or an :meth:`add` works on a private writable copy in a temporary folder (searched through zvec's
    slower document path), which :meth:`save` copies into place.
    """

    def __init__(self, collection, path: Path, quant: str, workspace: tempfile.TemporaryDirectory | None = None):
        self.collection = collection
        self.path = path
        self.quant = quant
        self._workspace = workspace  # owns the folder of a writable copy; removed with this object
        self._hidden = np.zeros(0, dtype=bool)
        self.huge_pages = HugePageAdvice()  # what a read-only load moved onto 2 MiB pages
        self._lock = threading.Lock()  # a writable copy is changed by one caller at a time

    # ---- building and persistence -----------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, quant: str, params: dict) -> ZvecFirstPass:
        """Graph over ``vectors`` (unit prefixes; ids = row numbers) in a temporary folder.

        ``params`` gets the defaults filled in, so the manifest records what was built.
        """
        zvec = zvec_module()
        for key, value in DEFAULT_PARAMS.items():
            params.setdefault(key, value)
        quantize = getattr(zvec.QuantizeType, ZVEC_QUANTS[quant] or "UNDEFINED")
        index_param = zvec.HnswIndexParam(
            metric_type=zvec.MetricType.IP,
            m=int(params["M"]),
            ef_construction=int(params["efConstruction"]),
            quantize_type=quantize,
            use_contiguous_memory=True,  # a collection's setting: its graph is copied into memory when opened
        )
        vector = zvec.VectorSchema(FIELD, zvec.DataType.VECTOR_FP32, vectors.shape[1], index_param=index_param)
        workspace = tempfile.TemporaryDirectory(prefix="mrl-zvec-")
        path = Path(workspace.name) / "collection"
        collection = zvec.create_and_open(str(path), zvec.CollectionSchema(name="mrl", vectors=vector))
        ann = cls(collection, path, quant, workspace)
        ann._insert(vectors, 0)
        return ann

    @classmethod
    def load(cls, folder: Path, quant: str, writable: bool = False) -> ZvecFirstPass:
        """Open a saved collection read-only for searches, or (``writable``) a private copy of it to add rows to."""
        zvec = zvec_module()
        if not any(folder.glob("manifest.*")):
            # an OSError, like a missing faiss file: Generation.load_current retries it when a commit raced
            raise FileNotFoundError(f"{folder}: incomplete zvec collection (no manifest)")
        if writable:
            workspace = tempfile.TemporaryDirectory(prefix="mrl-zvec-")
            path = Path(workspace.name) / "collection"
            copy_tree(folder, path)
            return cls(zvec.open(str(path), zvec.CollectionOption(read_only=False)), path, quant, workspace)
        before = memory_map()
        ann = cls(zvec.open(str(folder), zvec.CollectionOption(read_only=True)), folder, quant)
        # the contiguous copy of the graph is made while opening; searches need not wait for its pages to move
        ann.huge_pages = advise_new_mappings(before, background=True)
        ann._check_row_order()
        return ann

    def save(self, folder: Path) -> None:
        """Write the collection as ``folder``, complete or not at all (see :func:`atomic_write_path`)."""
        with self._lock:
            self.collection.flush()
            atomic_write_path(folder, lambda tmp: copy_tree(self.path, tmp))

    def _check_row_order(self) -> None:
        """zvec numbers documents in insertion order; a collection where that fails would return wrong rows."""
        n = self.ntotal
        probe = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, 1000)).astype(np.int64))
        keys = self.collection.resolve_internal_ids(probe)
        if any(key is not None and key != str(row) for key, row in zip(keys, probe, strict=True)):
            raise MrlError(f"{self.path}: zvec's internal ids are not the index's row numbers; rebuild the index")

    # ---- searching and writing --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.collection.stats.doc_count)

    def search(self, queries: np.ndarray, k: int, beam: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
        """Top-``k`` live rows of each query, -1 padded; ``beam`` is zvec's ef (raised to at least ``k``).

        A batch is split over the cores, one thread a slice: zvec answers one query a call and releases
        Python's lock while it searches.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None:  # zvec filters on its own scalar fields, not on a row mask: over-fetch
            return overfetch(self.search, queries, k, beam, allowed, self.ntotal, most=MAX_EF)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        threads = min(os.cpu_count() or 1, len(queries))
        if threads <= 1:
            self._search_into(queries, k, beam, out)
            return out
        bounds = np.linspace(0, len(queries), threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:
            slices = [(queries[a:b], k, beam, out[a:b]) for a, b in pairwise(bounds)]
            for done in [pool.submit(self._search_into, *args) for args in slices]:
                done.result()
        return out

    def _search_into(self, queries: np.ndarray, k: int, ef: int | None, out: np.ndarray) -> None:
        zvec = zvec_module()
        n = self.ntotal
        hidden = self._hidden
        for i, row in enumerate(queries):
            fetch = min(k, n, MAX_EF)
            found = np.zeros(0, dtype=np.int64)
            while fetch:
                param = zvec.HnswQueryParam(ef=min(max(int(ef or 0), fetch), MAX_EF))
                found = self._query(zvec.Query(field_name=FIELD, vector=row, param=param), fetch)
                if len(hidden):
                    found = found[~hidden[found]]
                if len(found) >= k or fetch >= min(n, MAX_EF):
                    break
                fetch = min(n, MAX_EF, 2 * fetch)  # hidden rows took places: ask for more
            out[i, : min(k, len(found))] = found[:k]

    def _query(self, query, k: int) -> np.ndarray:
        if self._workspace is None:  # read-only: the low-latency path that answers internal ids
            found = self.collection.query_internal_ids(query, topk=k)
            return found[found >= 0]
        # a writable copy (a fresh build) is searched through the document path, whose ids are the row numbers
        return np.array([int(doc.id) for doc in self.collection.query(query, topk=k)], dtype=np.int64)

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Append rows ``first_row``... (the collection must be a writable copy: ``load(writable=True)``)."""
        if self._workspace is None:
            raise MrlError(f"{self.path}: opened read-only; open a writable copy to add rows")
        if first_row != self.ntotal:
            raise MrlError(f"{self.path}: rows must be appended in order (next row {self.ntotal}, got {first_row})")
        self._insert(vectors, first_row)

    def _insert(self, vectors: np.ndarray, first_row: int) -> None:
        zvec = zvec_module()
        with self._lock:
            for start in range(0, len(vectors), WRITE_BATCH):
                chunk = np.ascontiguousarray(vectors[start : start + WRITE_BATCH], dtype=np.float32)
                docs = [zvec.Doc(id=str(first_row + start + i), vectors={FIELD: v}) for i, v in enumerate(chunk)]
                failed = [s for s in self.collection.insert(docs) if not s.ok()]
                if failed:
                    raise MrlError(f"zvec refused rows from {first_row + start}: {failed[0]}")
            self.collection.optimize()  # index every new row in the graph now, not at the first search

    def hide(self, rows: np.ndarray) -> None:
        """Leave ``rows`` (tombstones) out of this in-memory copy's results; the saved collection keeps them."""
        if len(rows):
            hidden = np.zeros(self.ntotal, dtype=bool)
            hidden[np.asarray(rows, dtype=np.int64)] = True
            self._hidden = hidden

    def search_grid(self) -> list[int | None]:
        return list(GRAPH_SEARCH_GRID)


class ZvecEngine(Engine):
    """``--ann zvec``: zvec's HNSW over int8 (or float) codes of the prefix, built from every prefix at once."""

    name = "zvec"
    quants = QUANTS
    defaults = DEFAULT_PARAMS
    graph = True
    suffix = "zvec"
    format_version = 4  # indexes older than format 4 had no zvec first pass

    def check(self, quant: str, width: int) -> None:
        super().check(quant, width)
        zvec_module()  # fail before encoding when zvec is missing

    def params(self, m: int, ef_construction: int | None, nlist: int | None) -> dict:
        return {"M": m, "efConstruction": ef_construction or DEFAULT_PARAMS["efConstruction"]}

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
        return ZvecFirstPass.build(all_prefixes(stored_chunks, rows, width), quant, params)

    def load(self, path: Path, quant: str, writable: bool = False, hidden: np.ndarray | None = None) -> FirstPass:
        first = ZvecFirstPass.load(path, quant, writable)
        if hidden is not None:
            first.hide(hidden)
        return first

    def disk_split(self, path: Path, quant: str) -> tuple[int, int]:
        return hot_bytes(path, quant)

    def estimate_bytes(self, rows: int, width: int) -> int:
        """The codes and graph, and the float copy zvec keeps beside them; even a small collection takes about
        MIN_BYTES."""
        return rows * 4 * (2 * width + 64) + MIN_BYTES


ZVEC = ZvecEngine()
