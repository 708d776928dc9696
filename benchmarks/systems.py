"""The contenders of the speed benchmarks, built and searched the same way: mrl's own index and the engines users
run instead (zvec without a prefix, Qdrant Edge, faiss, SVS).

Each is a :class:`System`: it builds once over the benchmark vectors (with the documents' metadata where a benchmark
filters), then answers a batch of unit queries at any setting of its grid, optionally restricted by a metadata filter
(``where``, mrl's filter language, which each system translates: mrl and Qdrant filter inside the index, faiss
through an ``IDSelector`` of the matching rows, ``mask``). :func:`sweep` and :func:`hot_set` are the protocol every
system goes through (benchmarks/harness.py times them).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from harness import K, evict, faiss_bytes, resident_bytes, time_point

from mrl.data import Document
from mrl.eval.tables import console
from mrl.index import Index
from mrl.index.hugepages import HugePageAdvice, advise_huge_pages, advise_new_mappings, memory_map
from mrl.index.tuning import recall_at_k

TARGETS = (0.95, 0.99)
SETTING_KEYS = ("ann_search", "shortlist", "efSearch", "k_factor", "hnsw_ef", "oversampling", "window")
PEER_KINDS = (
    "zvec-full",
    "qdrant-edge",
    "faiss-hnsw",
    "hnsw-sq8-refine",
    "pca-hnsw-refine",
    "svs-lvq8",
    "svs-leanvec",
)
BEAMS = (16, 32, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
SHORTLISTS = (10, 20, 30, 50, 80, 100, 150, 200, 300, 500)
REFINE_FACTORS = (1, 2, 4, 8)
OVERSAMPLING = (1.0, 1.5, 2.0, 3.0, 4.0)
QUICK_BEAMS = (32, 64, 128, 256)


class System:
    """A contender: built once, then searched at settings from its grid (a list of groups, cheapest knob first)."""

    name: str
    role = "peer"

    @property
    def files(self) -> list[Path]:
        """Files whose pages a search reads on demand: the hot set counts the pages the timed queries touched."""
        return []

    def grid(self, quick: bool) -> list[list[dict]]:
        raise NotImplementedError

    def searcher(self, setting: dict, where: dict | None = None, mask: np.ndarray | None = None):
        """A function from unit query rows to their top-K row numbers, at ``setting``; only rows matching ``where``
        (mrl's filter language), which ``mask`` marks, can be returned."""
        raise NotImplementedError

    def ram_bytes(self) -> int:
        """What the system holds in RAM whatever the queries (its files' pages are counted separately)."""
        raise NotImplementedError

    def reopen(self) -> None:
        """Close and open again, so that evicted file pages are read anew (a mapped page survives eviction)."""

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def graph_grid(beams: tuple[int, ...], shortlists: tuple[int, ...]) -> list[list[dict]]:
    """mrl's knobs: per beam, each k' it can take (a graph walks a beam of at least k')."""
    return [[{"ann_search": b, "shortlist": s} for s in shortlists if s <= b] for b in beams]


class MrlSystem(System):
    """The product's embedded index, built by ``Index.build`` as a user would."""

    def __init__(self, name: str, folder: Path, prefix_dim, args, tune_queries: np.ndarray | None, role: str = "mrl"):
        self.name, self.folder, self.prefix_dim, self.args = name, folder, prefix_dim, args
        self.tune_queries, self.role = tune_queries, role

    def build(self, base: np.ndarray, metadata: list[dict] | None = None) -> float:
        shutil.rmtree(self.folder, ignore_errors=True)
        documents = [Document(str(i), "", metadata[i] if metadata else {}) for i in range(len(base))]
        t0 = time.perf_counter()
        self.index = Index.build(
            self.folder,
            base,
            documents,
            prefix_dim=self.prefix_dim,
            ann=self.args.ann,
            quant=self.args.quant,
            ann_params={"M": self.args.mrl_hnsw_m, "efConstruction": self.args.mrl_ef_construction},
            tune_queries=self.tune_queries,
            report=lambda line: console().print(f"  {self.name}: {line}"),
        )
        seconds = time.perf_counter() - t0
        self.index.gen.huge_pages.wait()  # time the steady state, not searches racing the move to 2 MiB pages
        return seconds

    @property
    def files(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.index.manifest.segments]

    def grid(self, quick: bool) -> list[list[dict]]:
        if (self.index.tuned or {}).get("exact"):  # the tuner found an exact scan fastest: it is the one setting
            return [[{"ann_search": None, "shortlist": None}]]
        return graph_grid(QUICK_BEAMS if quick else BEAMS, SHORTLISTS)

    def searcher(self, setting: dict, where: dict | None = None, mask: np.ndarray | None = None):
        index = self.index
        kprime, beam = setting["shortlist"], setting["ann_search"]
        return lambda q: index.search_keys(q, K, shortlist=kprime, ann_search=beam, filter=where)[0]

    def ram_bytes(self) -> int:
        return int(self.index.stats()["ram_bytes"])

    def reopen(self) -> None:
        self.index.close()
        self.index = Index.open(self.folder)
        self.index.gen.huge_pages.wait()

    def info(self) -> dict:
        st = self.index.stats()
        return {
            "prefix_dim": st["prefix_dim"],
            "ann": st["ann"],
            "quant": st["quant"],
            "ann_params": st["ann_params"],
            "ram_bytes": st["ram_bytes"],
            "vector_bytes": st["vector_bytes"],
            "huge_page_bytes": st["huge_page_bytes"],
            "tuned": st["tuned"],
        }

    def close(self) -> None:
        self.index.close()
        del self.index
        shutil.rmtree(self.folder, ignore_errors=True)


def faiss_huge_pages(index: faiss.Index) -> HugePageAdvice:
    """2 MiB pages under every large array of a faiss index, through its refine and transform wrappers."""
    advice = HugePageAdvice()
    stack = [index]
    while stack:
        part = faiss.downcast_index(stack.pop())
        if isinstance(part, faiss.IndexRefine):
            stack += [part.base_index, part.refine_index]
        elif isinstance(part, faiss.IndexPreTransform):
            stack.append(part.index)
        else:
            advice.spans += advise_huge_pages(part).spans
    return advice


class FaissSystem(System):
    """A faiss index from a factory string, on 2 MiB pages."""

    def __init__(self, name: str, factory: str, args, refine: bool):
        self.name, self.factory, self.args, self.refine = name, factory, args, refine

    def build(self, base: np.ndarray, metadata: list[dict] | None = None) -> float:
        dim = base.shape[1]
        self.index = faiss.index_factory(dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        graph = self.index
        while not isinstance(graph, faiss.IndexHNSW):  # through Refine and PreTransform to the graph
            graph = faiss.downcast_index(graph.base_index if isinstance(graph, faiss.IndexRefine) else graph.index)
        graph.hnsw.efConstruction = self.args.hnsw_ef_construction
        t0 = time.perf_counter()
        if not self.index.is_trained:
            self.index.train(base[np.random.default_rng(0).choice(len(base), min(len(base), 100_000), replace=False)])
        self.index.add(base)
        seconds = time.perf_counter() - t0
        self.huge = faiss_huge_pages(self.index)
        self.huge.wait()
        self.size = faiss_bytes(self.index)
        return seconds

    def grid(self, quick: bool) -> list[list[dict]]:
        efs = QUICK_BEAMS if quick else BEAMS
        if not self.refine:
            return [[{"efSearch": ef}] for ef in efs]
        return [[{"efSearch": ef, "k_factor": f} for f in REFINE_FACTORS] for ef in efs]

    def searcher(self, setting: dict, where: dict | None = None, mask: np.ndarray | None = None):
        selector, bits = None, None
        if mask is not None:  # faiss skips the rows outside the bitmap during its walk
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        if self.refine:
            base = faiss.SearchParametersHNSW(efSearch=max(setting["efSearch"], setting["k_factor"] * K), sel=selector)
            factor = setting["k_factor"]
            params = faiss.IndexRefineSearchParameters(k_factor=factor, base_index_params=base, sel=selector)
        else:
            params = faiss.SearchParametersHNSW(efSearch=setting["efSearch"], sel=selector)
        index = self.index

        def search(q: np.ndarray, bits=bits) -> np.ndarray:  # the selector points into the bits: keep them alive
            return index.search(q, K, params=params)[1]

        return search

    def ram_bytes(self) -> int:
        return self.size

    def info(self) -> dict:
        return {"factory": self.factory, "ram_bytes": self.size, "huge_page_bytes": self.huge.bytes}

    def close(self) -> None:
        del self.index


class QdrantEdgeSystem(System):
    """Qdrant Edge as the Qdrant docs configure it for RAM savings: int8 scalar quantization kept in RAM, originals on
    disk, HNSW over the quantized vectors, rescoring the oversampled candidates on the originals."""

    def __init__(self, folder: Path, args):
        self.name, self.folder, self.args = "qdrant-edge", folder, args

    def build(self, base: np.ndarray, metadata: list[dict] | None = None) -> float:
        """``metadata``: each point's payload (``metadata.<field>``), with a payload index on every field, as a Qdrant
        user who filters on them sets up."""
        import qdrant_edge as qe

        from mrl.index.qdrant import EdgeEngine, payload_types

        shutil.rmtree(self.folder, ignore_errors=True)
        config = qe.EdgeConfig(
            vectors={
                "v": qe.EdgeVectorParams(
                    size=base.shape[1],
                    distance=qe.Distance.Cosine,
                    on_disk=True,
                    quantization_config=qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True),
                    hnsw_config=qe.HnswIndexConfig(
                        m=self.args.mrl_hnsw_m, ef_construct=self.args.mrl_ef_construction, full_scan_threshold=10_000
                    ),
                )
            }
        )
        t0 = time.perf_counter()
        shard = qe.EdgeShard.create(str(self.folder), config)
        if metadata:
            sample = [Document(str(i), "", m) for i, m in enumerate(metadata[:1000])]
            for name, kind in payload_types(sample).items():
                key, schema = ("mrl_bool." + name, "keyword") if kind == "bool" else (f"metadata.{name}", kind)
                kind = getattr(qe.PayloadSchemaType, schema.capitalize())
                shard.update(qe.UpdateOperation.create_field_index(key, kind))
        for start in range(0, len(base), 1000):
            rows = base[start : start + 1000]
            payloads = [
                EdgeEngine.payload(Document(str(start + i), "", metadata[start + i])) if metadata else None
                for i in range(len(rows))
            ]
            points = [qe.Point(start + i, {"v": row.tolist()}, payloads[i]) for i, row in enumerate(rows)]
            shard.update(qe.UpdateOperation.upsert_points(points))
        shard.optimize()
        shard.flush()
        seconds = time.perf_counter() - t0
        shard.close()
        self.shard = None
        self._open()
        return seconds

    def _open(self) -> None:
        import qdrant_edge as qe

        anon_before = _rss_anon()
        before = memory_map()
        self.shard = qe.EdgeShard.load(str(self.folder))
        self.huge = advise_new_mappings(before)  # what Qdrant allocated while loading: 2 MiB pages, like mrl's
        self.anon = max(_rss_anon() - anon_before, 0)

    @property
    def files(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.is_file()]

    def grid(self, quick: bool) -> list[list[dict]]:
        efs = QUICK_BEAMS if quick else BEAMS
        return [[{"hnsw_ef": ef, "oversampling": o} for o in OVERSAMPLING] for ef in efs]

    def searcher(self, setting: dict, where: dict | None = None, mask: np.ndarray | None = None):
        import qdrant_edge as qe

        from mrl.index.filters import parse_filter, to_qdrant

        params = qe.SearchParams(
            hnsw_ef=setting["hnsw_ef"],
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=setting["oversampling"]),
        )
        flt = to_qdrant(parse_filter(where), qe) if where else None
        shard = self.shard

        def request(q: np.ndarray):
            return qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist(), using="v"), params=params, filter=flt)

        def search(queries: np.ndarray) -> np.ndarray:
            if len(queries) == 1:
                results = [shard.query(request(queries[0]))]
            else:
                results = shard.query_batch(qe.QueryBatchRequest([request(q) for q in queries]))
            out = np.full((len(queries), K), -1, dtype=np.int64)
            for i, points in enumerate(results):
                out[i, : len(points)] = [p.id for p in points]
            return out

        return search

    def ram_bytes(self) -> int:
        return self.anon  # what Qdrant allocated while loading; its mapped files' pages are counted as touched

    def reopen(self) -> None:
        self.shard.close()
        self._open()

    def info(self) -> dict:
        info = self.shard.info()
        return {
            "segments": info.segments_count,
            "m": self.args.mrl_hnsw_m,
            "ef_construct": self.args.mrl_ef_construction,
            "quantization": "int8 scalar, quantile 0.99, always_ram; originals on disk; rescore on",
            "anon_bytes_at_load": self.anon,
            "huge_page_bytes": self.huge.bytes,
        }

    def close(self) -> None:
        self.shard.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _rss_anon() -> int:
    """This process's anonymous resident memory (RssAnon), bytes."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+) kB", status).group(1)) * 1024


class SvsSystem(System):
    """SVS Vamana on the full vectors, over LVQ-8 codes or LeanVec (reduced dims walked, full dims to rerank)."""

    def __init__(self, kind: str, args):
        self.kind, self.args = kind, args
        self.name = f"svs-vamana-{kind.removeprefix('svs-')}"

    def build(self, base: np.ndarray, metadata: list[dict] | None = None) -> float:
        import svs

        with tempfile.TemporaryDirectory(prefix="svs-peer-") as tmp:
            source = f"{tmp}/x.fvecs"
            svs.write_vecs(np.ascontiguousarray(base), source)
            data = svs.VectorDataLoader(source, svs.float32, dims=base.shape[1])
            if self.kind == "svs-lvq8":
                loader = svs.LVQLoader(data, primary=8, padding=32)
            else:
                loader = svs.LeanVecLoader(data, self.args.peer_pca_dim)
            params = svs.VamanaBuildParameters(
                graph_max_degree=2 * self.args.mrl_hnsw_m, window_size=self.args.hnsw_ef_construction, alpha=0.95
            )
            t0 = time.perf_counter()
            self.index = svs.Vamana.build(params, loader, svs.DistanceType.MIP, os.cpu_count() or 1)
            seconds = time.perf_counter() - t0
            self.index.save(f"{tmp}/c", f"{tmp}/g", f"{tmp}/d")
            files = [f for f in Path(tmp).rglob("*") if f.is_file() and not f.name.endswith(".fvecs")]
            self.size = sum(f.stat().st_size for f in files)
        return seconds

    def grid(self, quick: bool) -> list[list[dict]]:
        return [[{"window": w}] for w in (QUICK_BEAMS if quick else BEAMS)]

    def searcher(self, setting: dict, where: dict | None = None, mask: np.ndarray | None = None):
        if where is not None:
            raise ValueError("the SVS peers are measured without filters")
        index = self.index

        def search(q: np.ndarray) -> np.ndarray:
            index.num_threads = 1 if len(q) == 1 else (os.cpu_count() or 1)
            index.search_window_size = max(setting["window"], K)
            return index.search(q, K)[0].astype(np.int64)

        return search

    def ram_bytes(self) -> int:
        return self.size

    def close(self) -> None:
        del self.index


def sweep(
    system: System,
    queries: np.ndarray,
    truth: np.ndarray,
    quick: bool,
    targets: tuple[float, ...] = TARGETS,
    where: dict | None = None,
    mask: np.ndarray | None = None,
    recalls: list[dict] | None = None,
) -> list[dict]:
    """Each group of the grid until it reaches the last target: recall of every setting, timing of each setting that
    is the first of its group to reach a target (the cheapest there). All on the tuning split. ``recalls`` collects
    every setting's recall, timed or not (what a system that never reaches a target got closest to)."""
    points = []
    for group in system.grid(quick):
        reached: set[float] = set()
        for setting in group:
            search = system.searcher(setting, where, mask)
            recall = recall_at_k(search(queries), truth)
            if recalls is not None:
                recalls.append({**setting, "recall@10": recall})
            new = [t for t in targets if recall >= t and t not in reached]
            if new:
                points.append({**setting, **time_point(search, queries, truth)})
                reached |= set(new)
            if len(reached) == len(targets):
                break
    return points


def hot_set(system: System, setting: dict, queries: np.ndarray, truth: np.ndarray) -> dict:
    """RAM a search at ``setting`` needs: what the system holds, plus its file pages the timed queries read.

    The files' pages are evicted and the system reopened (a mapped page survives eviction), the test queries run one
    at a time (timed: cold) and as a batch, and ``mincore`` counts what they brought in."""
    files = system.files
    if not files:
        return {"hot_bytes": system.ram_bytes(), "file_bytes": 0, "touched_bytes": 0}
    evict(files)
    system.reopen()
    evict(files)
    search = system.searcher(setting)
    t0 = time.perf_counter()
    for q in queries:
        search(q[None, :])
    cold = len(queries) / (time.perf_counter() - t0)
    search(queries)
    touched = resident_bytes(files)
    warm = time_point(search, queries, truth)
    return {
        "hot_bytes": system.ram_bytes() + touched,
        "ram_bytes": system.ram_bytes(),
        "touched_bytes": touched,
        "file_bytes": sum(f.stat().st_size for f in files),
        "qps_single_cold": cold,
        "qps_single_warm_after": warm["qps_single"],
    }
