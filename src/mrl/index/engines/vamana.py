"""A Vamana graph over LVQ codes (Intel's Scalable Vector Search) as the first pass: ``--ann vamana``.

Why a second graph engine beside faiss HNSW: on a prefix, a graph walk is bound by memory latency,
one random read of a code per visited node. SVS compresses each prefix with LVQ (Aguerrebere et al.,
VLDB 2023, arXiv:2304.04759): 8-bit scalar codes with a scale and bias *per vector*, laid out so a
distance is a few SIMD instructions on the code as read; its Vamana graph (DiskANN's, Subramanya
et al., NeurIPS 2019) prunes each node's neighbours for long-range hops. On this project's
1M x 384 benchmark, mrl with this first pass (LVQ-4, on 2 MiB pages: mrl.index.hugepages) runs at 2.16x
faiss HNSW on the full vectors one query at a time at recall 0.99, where faiss's HNSW-SQ8 on the same
prefix ran at 0.95x (benchmarks/results/index_speed-1000000-p192-vamana-thp.json, -p192-rerank.json).
``quant="sq8"`` maps to LVQ-8 (the same byte a dim, with the per-vector range), ``sq4`` to LVQ-4
(half a byte a dim, in SVS's "turbo" layout for SIMD), ``fp16`` and ``fp32`` to uncompressed floats.
The rerank on full vectors absorbs the coarser codes.

SVS ships as a binary wheel under the Intel Simplified Software License (``pip install 'mrl[svs]'``,
x86-64 Linux); everything else in mrl stays open source and this module is only imported for
``--ann vamana``. Its LVQ codes run on Intel CPUs only: elsewhere SVS ends the whole process, so
building or opening an LVQ index checks the CPU first (:mod:`mrl.cpu`) and raises a clear error;
``fp32`` (SVS's open-source float path) runs on any x86-64 CPU.

On disk an index is one folder ``ann-<gen>.svs`` holding SVS's ``config``, ``graph`` and ``data``
folders, written whole and renamed into place like every other generation file. :meth:`add` extends
a copy of it without a rebuild (as SVS's dynamic index); tombstoned rows are soft-deleted in memory
when a generation loads, never written into the graph, as with faiss.

Example::

    import numpy as np
    from mrl.index.engines import ENGINES

    x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chunks = lambda: iter([(0, x)])
    first = ENGINES["vamana"].build("fp32", 32, len(x), {}, chunks, chunks, len(x))
    assert (first.search(x[:3], 5, beam=32)[:, 0] == [0, 1, 2]).all()
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from mrl.cpu import require_lvq
from mrl.errors import MrlError
from mrl.index.engines.base import GRAPH_SEARCH_GRID, Chunks, Engine, FirstPass, all_prefixes, overfetch
from mrl.index.hugepages import HugePageAdvice, advise_new_mappings, memory_map
from mrl.vectors.files import atomic_write_path

QUANTS = ("sq8", "sq4", "fp16", "fp32")
LVQ_BITS = {"sq8": 8, "sq4": 4}  # bits a dim of the LVQ code each quant maps to; fp16/fp32 are uncompressed
FLOATS = {"fp16": np.float16, "fp32": np.float32}  # SVS's open-source float paths, which run on any x86-64 CPU
DEFAULT_PARAMS = {"graph_max_degree": 32, "window_size": 200, "alpha": 0.95}
PADDING = 32  # bytes each LVQ code starts on: aligned loads, at a few bytes a vector
PARTS = ("config", "graph", "data")


def check_cpu(quant: str, what: str, advice: str = "use") -> None:
    """Refuse LVQ codes on a CPU that SVS would end the process on (:mod:`mrl.cpu`); fp32 runs anywhere."""
    if quant in LVQ_BITS:
        require_lvq(f"{what} (LVQ-{LVQ_BITS[quant]} codes)", advice)


def svs_module():
    """``svs``, or a clear error naming the extra that installs it."""
    try:
        import svs
    except ImportError as exc:
        raise MrlError(
            "ann vamana needs Intel's Scalable Vector Search: pip install 'mrl[svs]' (x86-64 Linux)"
        ) from exc
    return svs


class VamanaFirstPass(FirstPass):
    """An SVS Vamana index whose ids are the rows of the mrl index.

    Two SVS classes sit behind it. A fresh build is searched as SVS's *static* index, which holds exactly
    its codes and graph. SVS's *dynamic* index, needed to add points or hide deleted ones, allocates its
    storage in large blocks, far more resident memory than the static one holds for the same codes and
    graph. So a generation is opened dynamic only when it has to be: after an ``add`` (SVS saves it in the
    dynamic format) or when it has tombstones.
    """

    def __init__(self, index, quant: str):
        self.index = index
        self.quant = quant
        self.huge_pages = HugePageAdvice()  # what a load moved onto 2 MiB pages (VamanaEngine.load)
        # SVS keeps the search window and thread count on the index object: set-and-search must not interleave
        self._lock = threading.Lock()

    @property
    def dynamic(self) -> bool:
        return type(self.index).__name__ == "DynamicVamana"

    # ---- building and persistence -----------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, quant: str, params: dict) -> VamanaFirstPass:
        """Graph over ``vectors`` (unit prefixes; ids = row numbers), built on every core.

        ``params`` gets SVS's defaults filled in, so the manifest records what was built.
        """
        check_cpu(quant, f"--ann vamana --quant {quant}")
        svs = svs_module()
        for key, value in DEFAULT_PARAMS.items():
            params.setdefault(key, value)
        build = svs.VamanaBuildParameters(
            graph_max_degree=int(params["graph_max_degree"]),
            window_size=int(params["window_size"]),
            alpha=float(params["alpha"]),
        )
        threads = os.cpu_count() or 1
        if quant in FLOATS:  # the float paths build from the array itself
            data = np.ascontiguousarray(vectors, dtype=FLOATS[quant])
            return cls(svs.Vamana.build(build, data, svs.DistanceType.MIP, threads), quant)
        with tempfile.TemporaryDirectory(prefix="mrl-svs-") as tmp:
            # LVQ compresses from a file loader, and only the static index builds from one
            source = Path(tmp) / "prefix.fvecs"
            svs.write_vecs(np.ascontiguousarray(vectors, dtype=np.float32), str(source))
            data = svs.VectorDataLoader(str(source), svs.float32, dims=vectors.shape[1])
            loader = svs.LVQLoader(data, primary=LVQ_BITS[quant], padding=PADDING)
            return cls(svs.Vamana.build(build, loader, svs.DistanceType.MIP, threads), quant)

    @classmethod
    def load(cls, folder: Path, quant: str, writable: bool = False) -> VamanaFirstPass:
        """Open a saved index: static unless it was saved dynamic or ``writable`` (to add or hide rows) is asked."""
        check_cpu(quant, f"{folder}: this index's Vamana graph uses `quant` {quant}", "rebuild it with")
        svs = svs_module()
        if not all((folder / p).is_dir() for p in PARTS):
            # an OSError, like a missing faiss file: Generation.load_current retries it when a commit raced
            raise FileNotFoundError(f"{folder}: incomplete SVS index (needs {', '.join(PARTS)} folders)")
        saved_dynamic = "vamana_dynamic" in (folder / "config" / "svs_config.toml").read_text()
        data = (
            svs.LVQLoader(str(folder / "data"), padding=PADDING)  # the bits are in the saved config
            if quant in LVQ_BITS
            else svs.VectorDataLoader(str(folder / "data"), svs.float16 if quant == "fp16" else svs.float32)
        )
        parts = (str(folder / "config"), svs.GraphLoader(str(folder / "graph")), data, svs.DistanceType.MIP)
        threads = os.cpu_count() or 1
        if not (writable or saved_dynamic):
            return cls(svs.Vamana(*parts, num_threads=threads), quant)
        # SVS opens a static save as a dynamic index on request (debug_load_from_static)
        return cls(svs.DynamicVamana(*parts, num_threads=threads, debug_load_from_static=not saved_dynamic), quant)

    def save(self, folder: Path) -> None:
        """Write the index as ``folder``, complete or not at all (see :func:`atomic_write_path`)."""

        def write_to(tmp: Path) -> None:
            tmp.mkdir()
            with self._lock:
                self.index.save(*(str(tmp / p) for p in PARTS))

        atomic_write_path(folder, write_to)

    # ---- searching and writing --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.size)

    def search(self, queries: np.ndarray, k: int, beam: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
        """Top-``k`` rows of each query, -1 padded; ``beam`` is the search window (raised to at least ``k``)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None:
            return overfetch(self.search, queries, k, beam, allowed, self.ntotal)
        k_found = min(k, self.ntotal)
        if k_found == 0:
            return np.full((len(queries), k), -1, dtype=np.int64)
        with self._lock:
            self.index.num_threads = 1 if len(queries) == 1 else (os.cpu_count() or 1)
            self.index.search_window_size = max(int(beam or 0), k_found)
            found = self.index.search(queries, k_found)[0].astype(np.int64)
        if k_found < k:
            found = np.pad(found, ((0, 0), (0, k - k_found)), constant_values=-1)
        return found

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Append rows ``first_row``... (the index must be opened ``writable``)."""
        rows = np.arange(first_row, first_row + len(vectors), dtype=np.uint64)
        with self._lock:
            self.index.num_threads = os.cpu_count() or 1
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32), rows)

    def hide(self, rows: np.ndarray) -> None:
        """Soft-delete rows for searches of this in-memory copy (tombstones; the saved graph keeps them)."""
        if len(rows):
            with self._lock:
                self.index.delete(np.asarray(rows, dtype=np.uint64))

    def search_grid(self) -> list[int | None]:
        return list(GRAPH_SEARCH_GRID)


class VamanaEngine(Engine):
    """``--ann vamana``: SVS's Vamana graph over LVQ codes (Intel CPUs only) or floats (any x86-64 CPU)."""

    name = "vamana"
    quants = QUANTS
    defaults = DEFAULT_PARAMS
    graph = True
    suffix = "svs"

    def check(self, quant: str, width: int) -> None:
        super().check(quant, width)
        check_cpu(quant, f"ann vamana, quant {quant}")  # before SVS could end the process on a non-Intel CPU
        svs_module()  # fail before encoding when the optional engine is missing

    def params(self, m: int, ef_construction: int | None, nlist: int | None) -> dict:
        """Vamana's one neighbour list a node corresponds to HNSW's base layer, which holds 2M neighbours."""
        return {"graph_max_degree": 2 * m, **({"window_size": ef_construction} if ef_construction else {})}

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
        return VamanaFirstPass.build(all_prefixes(stored_chunks, rows, width), quant, params)

    def load(self, path: Path, quant: str, writable: bool = False, hidden: np.ndarray | None = None) -> FirstPass:
        """SVS hides rows only in its dynamic index: a generation with tombstones opens that one."""
        hide = hidden is not None and len(hidden) > 0
        before = memory_map()
        first = VamanaFirstPass.load(path, quant, writable=writable or hide)
        if hide:
            first.hide(hidden)
        first.huge_pages = advise_new_mappings(before, background=True)
        return first


VAMANA = VamanaEngine()
