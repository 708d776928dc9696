"""The first pass: a faiss index over the re-normalized prefix, plus how to search it.

Inner product on unit vectors equals cosine. The prefix is stored 8-bit scalar-quantized by default
(``sq8``: 1 byte a dim; ``sq4``: half a byte), so the ANN structure does not hold a second float copy of
the vectors; the exact second pass on full vectors absorbs the quantization error. ``pq4`` (IVF only) goes further:
4-bit product-quantization codes over pairs of dims (a quarter byte a dim) that faiss scans with SIMD
registers ("fast-scan"); it trades the last points of recall for a fifth of sq8's memory and faster scans
(benchmarks/first_pass.py measures both).
"""

from __future__ import annotations

import faiss
import numpy as np

from mrl.errors import MrlError
from mrl.index.vamana import DEFAULT_PARAMS as VAMANA_DEFAULTS
from mrl.index.vamana import QUANTS as VAMANA_QUANTS
from mrl.index.vamana import VamanaAnn, check_cpu, svs_module
from mrl.index.zvec_graph import DEFAULT_PARAMS as ZVEC_DEFAULTS
from mrl.index.zvec_graph import QUANTS as ZVEC_QUANTS
from mrl.index.zvec_graph import ZvecAnn, zvec_module

ANN_KINDS = ("hnsw", "ivf", "flat", "vamana", "zvec")  # vamana: SVS, mrl.index.vamana; zvec: mrl.index.zvec_graph
FOLDER_ANNS = {"vamana": VamanaAnn, "zvec": ZvecAnn}  # engines that save a folder, not a faiss file
FolderAnn = VamanaAnn | ZvecAnn  # their classes, for annotations and isinstance
KIND_QUANTS = {"vamana": VAMANA_QUANTS, "zvec": ZVEC_QUANTS}  # the codes each folder engine stores
QUANTS = ("sq8", "sq4", "fp16", "fp32", "pq4")
SCALAR_QUANTIZERS = {
    "sq8": faiss.ScalarQuantizer.QT_8bit,
    "sq4": faiss.ScalarQuantizer.QT_4bit,
    "fp16": faiss.ScalarQuantizer.QT_fp16,
}
HNSW_EF_CONSTRUCTION = 80
# search beams auto-tuning tries on a graph (HNSW efSearch, Vamana window); k' raises one below it
GRAPH_SEARCH_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048)
DEFAULT_PARAMS = {
    "hnsw": {"M": 16, "efConstruction": HNSW_EF_CONSTRUCTION},
    "ivf": {"nlist": None},
    "flat": {},
    "vamana": VAMANA_DEFAULTS,
    "zvec": ZVEC_DEFAULTS,
}


TRAIN_SAMPLE = 100_000  # rows that index training (and the rotation fit) learns from; far more than either needs
POINTS_PER_LIST = 39  # faiss's floor of training points per k-means centroid (it warns below it)
IVF_TRAIN_MAX = 500_000  # IVF's k-means may take more, for its default lists at large N (10M rows: 493,311)


def training_limit(kind: str, n: int, nlist: int | None = None) -> int:
    """How many rows a build learns from: TRAIN_SAMPLE, or for IVF enough for POINTS_PER_LIST in each of its
    lists, up to IVF_TRAIN_MAX; else at large N the lists would be too few and too long."""
    if kind != "ivf":
        return TRAIN_SAMPLE
    return max(TRAIN_SAMPLE, min(POINTS_PER_LIST * (nlist or default_nlist(n)), IVF_TRAIN_MAX))


def training_sample(vectors: np.ndarray, limit: int = TRAIN_SAMPLE, seed: int = 0) -> np.ndarray:
    """All rows when there are at most ``limit``, else a fixed random ``limit`` of them (the same on every build)."""
    rows = training_rows(len(vectors), limit, seed)
    return vectors if rows is None else vectors[rows]


def training_rows(n: int, limit: int = TRAIN_SAMPLE, seed: int = 0) -> np.ndarray | None:
    """The row numbers :func:`training_sample` takes, in increasing order (None: all of them)."""
    return None if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def default_nlist(n: int) -> int:
    """About 4 x sqrt(n) lists (the faiss guideline), at least 1 and at most n // POINTS_PER_LIST."""
    return max(1, min(int(4 * np.sqrt(max(n, 1))), max(1, n // POINTS_PER_LIST)))


def build_params(kind: str, m: int, ef_construction: int | None, nlist: int | None) -> dict:
    """The CLI's graph options as the build parameters of ``kind`` (left out: that kind's default).

    Vamana's one neighbour list a node corresponds to HNSW's base layer, which holds 2M neighbours.
    """
    if kind in ("hnsw", "zvec"):
        return {"M": m, "efConstruction": ef_construction or DEFAULT_PARAMS[kind]["efConstruction"]}
    if kind == "vamana":
        return {"graph_max_degree": 2 * m, **({"window_size": ef_construction} if ef_construction else {})}
    return {"nlist": nlist}


def check_ann(kind: str, quant: str, prefix_dim: int) -> None:
    """Refuse an ANN kind / quantization / prefix combination before any expensive work (encoding, training)."""
    if kind not in ANN_KINDS:
        raise MrlError(f"unknown ANN kind '{kind}' (choose {', '.join(ANN_KINDS)})")
    if quant not in QUANTS:
        raise MrlError(f"unknown quantization '{quant}' (choose {', '.join(QUANTS)})")
    if kind in KIND_QUANTS and quant not in KIND_QUANTS[kind]:
        raise MrlError(f"--ann {kind} stores the prefix as {', '.join(KIND_QUANTS[kind])}, not '{quant}'")
    if kind == "vamana":
        check_cpu(quant, f"--ann vamana --quant {quant}")  # before SVS could end the process on a non-Intel CPU
        svs_module()  # fail before encoding when the optional engine is missing
    if kind == "zvec":
        zvec_module()
    if quant == "pq4" and (kind != "ivf" or prefix_dim % 2):
        raise MrlError(
            f"quantization 'pq4' needs --ann ivf and an even prefix dim (got --ann {kind}, prefix dim {prefix_dim})"
        )


def build_ann(kind: str, quant: str, vectors: np.ndarray, params: dict) -> faiss.Index | FolderAnn:
    """Build and fill an ANN index over ``vectors`` (unit prefixes, float32, ids = row numbers)."""
    n, dim = vectors.shape
    check_ann(kind, quant, dim)
    if kind in FOLDER_ANNS:
        return FOLDER_ANNS[kind].build(vectors, quant, params)
    sample = training_sample(vectors, training_limit(kind, n, params.get("nlist")))
    index = trained_faiss_index(kind, quant, dim, n, params, sample)
    add_in_chunks(index, vectors)
    return index


def trained_faiss_index(kind: str, quant: str, dim: int, n: int, params: dict, sample: np.ndarray) -> faiss.Index:
    """An empty faiss index for ``n`` rows, its quantizer (and IVF lists) trained on ``sample``.

    Rows are added afterwards, a chunk at a time (:func:`add_in_chunks`), so a build never needs all of
    them in one matrix. IVF's ``nlist`` default is written back into ``params``.
    """
    metric = faiss.METRIC_INNER_PRODUCT
    sq = SCALAR_QUANTIZERS.get(quant)
    if kind == "hnsw":
        m = int(params.get("M", 16))
        index = faiss.IndexHNSWSQ(dim, sq, m, metric) if sq is not None else faiss.IndexHNSWFlat(dim, m, metric)
        index.hnsw.efConstruction = int(params.get("efConstruction", 80))
    elif kind == "ivf":
        # a sample smaller than training_limit asks for bounds the lists (POINTS_PER_LIST rows each)
        nlist = int(params.get("nlist") or min(default_nlist(n), max(1, len(sample) // POINTS_PER_LIST)))
        params["nlist"] = nlist
        coarse = faiss.IndexFlatIP(dim)
        if sq is not None:
            index = faiss.IndexIVFScalarQuantizer(coarse, dim, nlist, sq, metric)
        elif quant == "pq4":
            index = faiss.IndexIVFPQFastScan(coarse, dim, nlist, dim // 2, 4, metric)
        else:
            index = faiss.IndexIVFFlat(coarse, dim, nlist, metric)
        index.own_fields = True
        coarse.this.disown()
    else:
        index = faiss.IndexScalarQuantizer(dim, sq, metric) if sq is not None else faiss.IndexFlatIP(dim)
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int = 65_536) -> None:
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))


def search_params(index: faiss.Index, ann_search: int | None, selector: faiss.IDSelector | None, k: int):
    """faiss per-call search parameters: efSearch (HNSW) or nprobe (IVF), plus a deleted-row filter.

    efSearch is raised to at least ``k`` (the shortlist size): faiss does not do that itself, and with
    its default of 16 a search for 1,000 candidates returns a few hundred poor ones.
    """
    kind = ann_kind(index)
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(int(ann_search or 0), k, 16)
    elif kind == "ivf":
        params = faiss.SearchParametersIVF()
        if ann_search:
            params.nprobe = int(ann_search)
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


def ann_kind(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "flat"


def ann_search_grid(index: faiss.Index | FolderAnn) -> list[int | None]:
    """Candidate values of the search-time knob for auto-tuning."""
    kind = "graph" if isinstance(index, FolderAnn) else ann_kind(index)
    if kind in ("hnsw", "graph"):
        return list(GRAPH_SEARCH_GRID)
    if kind == "ivf":
        nlist = index.nlist
        return sorted({p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist} | {nlist})
    return [None]
