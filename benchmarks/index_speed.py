"""Speed at scale: mrl's two-pass index against the same engine on the full vectors and what users run instead.

What it answers: does the prefix make search faster than the strongest simple alternative, at recall@10 0.99 against
exact search, with held-out queries, every system on the same footing?

* **Vectors**: ``--n`` unit vectors drawn as a kernel density estimate around real embeddings of SciFact abstracts and
  NLI / STS-B sentences (benchmarks/harness.py). **Queries**: the 809 SciFact train claims pick every system's
  settings; the 300 SciFact test claims are measured. mrl's adaptors train on SciFact train at most, so the measured
  queries are held out from every model, adaptor and tuner.
* **mrl**: the embedded index as a user builds it (``Index.build``), ``--prefix-dims auto`` (the default: the tuner
  measures widths, the full width and an exact scan included, and keeps the fastest) and any fixed widths.
* **Peers**, each on 2 MiB pages where the engine lets us: ``zvec-full`` (mrl's own engine, M and efConstruction,
  int8 codes of all dims and the same rerank: the index without a prefix), ``qdrant-edge`` (Qdrant's engine in this
  process, HNSW over int8 scalar-quantized vectors, originals on disk, oversampled rescoring), ``faiss-hnsw``
  (HNSW32 on the float32 vectors), ``hnsw-sq8-refine`` (faiss ``HNSW32,SQ8,Refine(Flat)``), ``pca-hnsw-refine``
  (PCA to ``--peer-pca-dim``, HNSW, full-vector refine), and on Intel CPUs SVS Vamana over LVQ-8 / LeanVec
  (skipped with the reason elsewhere).
* **Protocol** (the same functions for every system): sweep each system's knobs on the tuning split; at each recall
  target keep the setting with the most single-query QPS; measure that setting on the test split (batch and one
  query at a time, median of 3); then re-time the primary mrl system and each peer in turns (``--head-to-head``
  rounds, median of the per-round ratios). Memory is the hot set: what a system holds in RAM plus the pages of its
  files that the timed test queries read (``mincore`` after evicting the files and reopening the system);
  mrl's queries are also timed with those pages evicted (cold).

    python benchmarks/index_speed.py --n 1000000 --model default --tag 384-minilm
    python benchmarks/index_speed.py --n 1000000 --model models/bench/adaptor-scifact-minilm --real-limit 2000 \\
        --prefix-dims auto,128 --tag 384-scifact
    python benchmarks/index_speed.py --n 200000 --quick --peers zvec-full,qdrant-edge --tag smoke

Writes benchmarks/results/index_speed-<n>[-<tag>].json and .png and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np
from harness import (
    RESULTS,
    K,
    add_data_args,
    benchmark_vectors,
    evict,
    exact_truth,
    faiss_bytes,
    in_turns,
    operating_point,
    resident_bytes,
    time_point,
    versus_peers,
)
from rich.table import Table

from mrl.data import Document
from mrl.index import Index
from mrl.index.hugepages import HugePageAdvice, advise_huge_pages, advise_new_mappings, memory_map
from mrl.index.tuning import recall_at_k
from mrl.report import console, write_json

TARGETS = (0.95, 0.99)
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

    def searcher(self, setting: dict):
        """A function from unit query rows to their top-K row numbers, at ``setting``."""
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

    def build(self, base: np.ndarray) -> float:
        shutil.rmtree(self.folder, ignore_errors=True)
        t0 = time.perf_counter()
        self.index = Index.build(
            self.folder,
            base,
            [Document(str(i), "") for i in range(len(base))],
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

    def searcher(self, setting: dict):
        index = self.index
        return lambda q: index.search_keys(q, K, shortlist=setting["shortlist"], ann_search=setting["ann_search"])[0]

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

    def build(self, base: np.ndarray) -> float:
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

    def searcher(self, setting: dict):
        if self.refine:
            params = faiss.IndexRefineSearchParameters(
                k_factor=setting["k_factor"],
                base_index_params=faiss.SearchParametersHNSW(
                    efSearch=max(setting["efSearch"], setting["k_factor"] * K)
                ),
            )
        else:
            params = faiss.SearchParametersHNSW(efSearch=setting["efSearch"])
        index = self.index
        return lambda q: index.search(q, K, params=params)[1]

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

    def build(self, base: np.ndarray) -> float:
        import qdrant_edge as qe

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
        for start in range(0, len(base), 1000):
            rows = base[start : start + 1000]
            points = [qe.Point(start + i, {"v": row.tolist()}) for i, row in enumerate(rows)]
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

    def searcher(self, setting: dict):
        import qdrant_edge as qe

        params = qe.SearchParams(
            hnsw_ef=setting["hnsw_ef"],
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=setting["oversampling"]),
        )
        shard = self.shard

        def request(q: np.ndarray):
            return qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist(), using="v"), params=params)

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

    def build(self, base: np.ndarray) -> float:
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

    def searcher(self, setting: dict):
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


def sweep(system: System, queries: np.ndarray, truth: np.ndarray, quick: bool) -> list[dict]:
    """Each group of the grid until it reaches the last target: recall of every setting, timing of each setting that
    is the first of its group to reach a target (the cheapest there). All on the tuning split."""
    points = []
    for group in system.grid(quick):
        reached: set[float] = set()
        for setting in group:
            search = system.searcher(setting)
            recall = recall_at_k(search(queries), truth)
            new = [t for t in TARGETS if recall >= t and t not in reached]
            if new:
                points.append({**setting, **time_point(search, queries, truth)})
                reached |= set(new)
            if len(reached) == len(TARGETS):
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


def measure(system: System, base, splits, truths, args, result: dict) -> dict[float, dict | None]:
    """Build, sweep on the tuning split, measure each target's setting on the test split; record it all."""
    c = console()
    seconds = system.build(base)
    c.print(f"{system.name} built in {seconds:.0f} s")
    entry = result["systems"][system.name] = {"role": system.role, "build_s": seconds, **system.info()}
    tuning = sweep(system, splits["tune"], truths["tune"], args.quick)
    entry["tuning_points"] = tuning
    chosen = {}
    for target in TARGETS:
        point = operating_point(tuning, target)
        if point is None:
            chosen[target] = None
            c.print(f"  {system.name}: recall {target} not reached on the tuning split")
            continue
        setting = {k: v for k, v in point.items() if k in SETTING_KEYS}
        test = time_point(system.searcher(setting), splits["test"], truths["test"])
        chosen[target] = {"system": system.name, "setting": setting, **test}
        c.print(f"  {system.name} @ {target}: {setting} -> test recall {test['recall@10']:.4f}, "
                f"{test['qps_single']:,.0f} QPS single, {test['qps_batch']:,.0f} batch")  # fmt: skip
    if chosen[0.99] is not None:
        chosen[0.99] |= hot_set(system, chosen[0.99]["setting"], splits["test"], truths["test"])
        c.print(f"  {system.name} hot set {chosen[0.99]['hot_bytes'] / 2**20:,.0f} MiB")
    entry["chosen"] = {str(t): p for t, p in chosen.items()}
    return chosen


SETTING_KEYS = ("ann_search", "shortlist", "efSearch", "k_factor", "hnsw_ef", "oversampling", "window")


def peer_system(kind: str, dim: int, args, workdir: Path) -> System | str:
    """The peer of --peers ``kind``, or why it is skipped here."""
    from mrl.cpu import cpu_info, lvq_unsupported_reason

    if kind == "zvec-full":
        return MrlSystem("zvec-full", workdir / "zvec-full", dim, args, None, role="peer")
    if kind == "qdrant-edge":
        try:
            import qdrant_edge  # noqa: F401
        except ImportError:
            return "qdrant-edge-py is not installed (pip install 'mrl[qdrant]')"
        return QdrantEdgeSystem(workdir / "qdrant-edge", args)
    if kind == "faiss-hnsw":
        return FaissSystem("faiss-hnsw", f"HNSW{args.hnsw_m}", args, refine=False)
    if kind == "hnsw-sq8-refine":
        return FaissSystem("faiss-hnsw-sq8-refine", f"HNSW{args.hnsw_m},SQ8,Refine(Flat)", args, refine=True)
    if kind == "pca-hnsw-refine":
        factory = f"PCA{args.peer_pca_dim},HNSW{args.hnsw_m},Refine(Flat)"
        return FaissSystem("faiss-pca-hnsw-refine", factory, args, refine=True)
    reason = lvq_unsupported_reason(cpu_info())
    if reason is not None:
        return reason
    try:
        import svs  # noqa: F401
    except ImportError:
        return "scalable-vs is not installed (pip install 'mrl[svs]')"
    return SvsSystem(kind, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--prefix-dims", default="auto", help="mrl systems: auto and/or fixed widths; the first is primary")
    ap.add_argument("--ann", default="zvec", help="mrl's first pass (and zvec-full's engine is always zvec)")
    ap.add_argument("--quant", default="sq8")
    ap.add_argument("--mrl-hnsw-m", type=int, default=16, help="M of mrl's graph, zvec-full's and Qdrant's")
    ap.add_argument("--mrl-ef-construction", type=int, default=200, help="efConstruction of those graphs")
    ap.add_argument("--hnsw-m", type=int, default=32, help="M of the faiss peers")
    ap.add_argument("--hnsw-ef-construction", type=int, default=200, help="efConstruction of the faiss peers")
    ap.add_argument("--peers", default=",".join(PEER_KINDS), help="from: " + ", ".join(PEER_KINDS))
    ap.add_argument("--peer-pca-dim", type=int, default=128, help="dims of the PCA and LeanVec peers' first pass")
    ap.add_argument("--head-to-head", type=int, default=5, help="rounds in turns against each peer (0: none)")
    ap.add_argument("--tune-limit", type=int, default=None, help="use only the first N tuning claims")
    ap.add_argument("--quick", action="store_true", help="fewer beams")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--workdir", default=None, help="where the indexes are written (default: a temp folder)")
    ap.add_argument("--resummarize", type=Path, default=None, help="recompute the summary of a saved result file")
    args = ap.parse_args()
    if args.resummarize:
        result = json.loads(args.resummarize.read_text())
        result["summary"] = summarize(result)
        write_json(result, args.resummarize)
        print_summary(result)
        return
    peers = [k for k in args.peers.split(",") if k]
    unknown = [k for k in peers if k not in PEER_KINDS]
    if unknown:
        raise SystemExit(f"--peers: unknown peer '{unknown[0]}' (choose from {', '.join(PEER_KINDS)})")

    model, base, queries, info = benchmark_vectors(args)
    dim = base.shape[1]
    del model
    gc.collect()
    splits = {"tune": queries["train"][: args.tune_limit], "test": queries["test"]}
    truths = {name: exact_truth(q, base) for name, q in splits.items()}
    c = console()
    c.print(f"{args.n:,} x {dim} vectors from {info['real_texts']:,} real embeddings")
    result = {
        "n": args.n,
        "dim": dim,
        "model": args.model,
        "k": K,
        "data": info,
        "queries": f"held-out: the {len(splits['test'])} SciFact test claims (BEIR test split); every system's "
        f"settings chosen on {len(splits['tune'])} SciFact train claims",
        "threads": faiss.omp_get_max_threads(),
        "systems": {},
        "head_to_head": {},
    }
    t0 = time.perf_counter()
    exact = time_point(lambda q: exact_truth(q, base), splits["test"][:50], truths["test"][:50])
    result["exact"] = {"ram_bytes": base.nbytes, **exact, "seconds": time.perf_counter() - t0}

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mrl-bench-"))
    mrl_points: dict[str, dict] = {}
    primary = None
    for spec in args.prefix_dims.split(","):
        width = spec if spec == "auto" else int(spec)
        system = MrlSystem(f"mrl-{spec}", workdir / f"mrl-{spec}", width, args, splits["tune"])
        mrl_points[system.name] = measure(system, base, splits, truths, args, result)
        if primary is None:
            primary = system
        else:
            system.close()
        gc.collect()

    for kind in peers:
        system = peer_system(kind, dim, args, workdir)
        if isinstance(system, str):
            result["systems"][kind] = {"role": "peer", "skipped": system}
            c.print(f"{kind}: skipped ({system})")
            continue
        chosen = measure(system, base, splits, truths, args, result)
        mine = mrl_points[primary.name][0.99]
        if args.head_to_head and mine is not None and chosen[0.99] is not None:
            turns = in_turns(
                primary.searcher(mine["setting"]),
                system.searcher(chosen[0.99]["setting"]),
                splits["test"],
                args.head_to_head,
            )
            result["head_to_head"][system.name] = turns
            c.print(
                f"  {primary.name} vs {system.name}, {turns['rounds']} rounds in turns: "
                f"x{turns['median_ratio_single']:.2f} single, x{turns['median_ratio_batch']:.2f} batch"
            )
        system.close()
        del system
        gc.collect()
    primary.close()
    shutil.rmtree(workdir, ignore_errors=True)

    result["primary"] = primary.name
    result["summary"] = summarize(result)
    out = RESULTS / f"index_speed-{args.n}{'-' + args.tag if args.tag else ''}.json"
    write_json(result, out)
    plot(result, out.with_suffix(".png"))
    print_summary(result)


def summarize(result: dict) -> dict:
    """Per recall target: the primary mrl system's test point, each peer's, and the ratios (in turns at 0.99)."""
    systems = result["systems"]
    out = {}
    for target in (str(t) for t in TARGETS):
        mine = systems[result["primary"]]["chosen"].get(target)
        peers = {}
        for name, entry in systems.items():
            if entry["role"] != "peer":
                continue
            if "skipped" in entry:
                peers[name] = {"point": None, "skipped": entry["skipped"]}
                continue
            point = entry["chosen"].get(target)
            peers[name] = {
                "point": point,
                **({"hot_bytes": point["hot_bytes"]} if point and "hot_bytes" in point else {}),
            }
            if target == "0.99" and name in result["head_to_head"]:
                peers[name]["turns"] = result["head_to_head"][name]
        entry = {"mrl": mine, "peers": {n: p["point"] for n, p in peers.items()}}
        entry["ablations"] = {n: e["chosen"].get(target) for n, e in systems.items() if e["role"] == "mrl"}
        if mine is not None:
            verdict = versus_peers(mine, peers)
            entry["versus"] = verdict["peers"]
            for key in (
                "best_peer",
                "qps_single_ratio_vs_best_peer",
                "best_peer_batch",
                "qps_batch_ratio_vs_best_peer",
            ):
                if key in verdict:
                    mine[key] = verdict[key]
            faiss_hnsw = verdict["peers"].get("faiss-hnsw", {})
            if faiss_hnsw.get("reached"):
                mine["qps_single_ratio_vs_faiss_hnsw"] = faiss_hnsw["qps_single_ratio"]
                mine["qps_batch_ratio_vs_faiss_hnsw"] = faiss_hnsw["qps_batch_ratio"]
        out[target] = entry
    return out


def print_summary(result: dict) -> None:
    for target, entry in result["summary"].items():
        table = Table(title=f"recall@10 >= {target} (settings from the tuning split, measured on held-out queries), "
                      f"{result['n']:,} x {result['dim']}")  # fmt: skip
        for col in ("system", "setting", "recall@10", "QPS single", "QPS batch", "hot set MiB", "mrl single", "batch"):
            table.add_column(col, justify="right")
        rows = [(n, p) for n, p in entry["ablations"].items()] + list(entry["peers"].items())
        for name, p in rows:
            if p is None:
                table.add_row(name, "not reached" if "skipped" not in result["systems"][name] else "skipped", *[""] * 6)
                continue
            versus = entry.get("versus", {}).get(name, {})
            table.add_row(
                name,
                json.dumps(p["setting"]),
                f"{p['recall@10']:.4f}",
                f"{p['qps_single']:,.0f}",
                f"{p['qps_batch']:,.0f}",
                f"{p['hot_bytes'] / 2**20:,.0f}" if "hot_bytes" in p else "",
                f"x{versus['qps_single_ratio']:.2f}" if versus.get("reached") else "",
                f"x{versus['qps_batch_ratio']:.2f}" if versus.get("reached") else "",
            )
        console().print(table)
        mine = entry["mrl"]
        if mine and "best_peer" in mine:
            console().print(
                f"{result['primary']} against the best peer at {target}: x{mine['qps_single_ratio_vs_best_peer']:.2f} "
                f"single ({mine['best_peer']}), x{mine['qps_batch_ratio_vs_best_peer']:.2f} batch "
                f"({mine['best_peer_batch']})"
            )


def plot(result: dict, path: Path) -> None:
    """Single-query QPS against recall on the tuning split, each system's frontier; its chosen test points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, entry in result["systems"].items():
        pts = sorted(entry.get("tuning_points", []), key=lambda p: -p["recall@10"])
        frontier, best = [], 0.0
        for p in pts:
            if p["qps_single"] > best:
                frontier.append(p)
                best = p["qps_single"]
        if frontier:
            line = ax.plot([p["recall@10"] for p in frontier], [p["qps_single"] for p in frontier], marker="o",
                           label=name, alpha=0.8)  # fmt: skip
            test = [p for p in entry["chosen"].values() if p]
            ax.scatter([p["recall@10"] for p in test], [p["qps_single"] for p in test], marker="*", s=120,
                       color=line[0].get_color())  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 against exact search (lines: tuning split; stars: held-out test at the chosen setting)")
    ax.set_ylabel("single-query QPS (log)")
    ax.set_title(f"{result['n']:,} x {result['dim']} vectors, {result['threads']} threads")
    ax.axvline(0.99, color="grey", ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
