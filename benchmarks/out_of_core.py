"""Beyond RAM: the two-pass index with its rerank vectors read cold from disk, against DiskANN and LanceDB.

Two parts, each written to its own file:

``--part storage``: which rerank storage to pick. SciFact test nDCG@10 (300 queries, the full corpus) of the
two-pass search, with k' and efSearch tuned for recall@10 0.99 on SciFact train queries, and bytes per vector,
for full vectors in float32 / float16 / int8 and for ``--keep-dims`` 256 and 128 (float16). The quality floor
of a dropped tail shows here.

``--part cold``: the out-of-core regime. At each ``--sizes`` N, vectors drawn from the fitted distribution of
real embeddings (as ``index_speed.py`` draws them), 1,000 real SciFact claims as queries, recall@10 against
exact search. Before every timed pass, the pages of each system's own files are dropped from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)`` on those files only; no system-wide cache or setting is touched), so
that every rerank row comes from the disk. Per query: latency, and the bytes and read calls it took from the
disk (``/proc/self/io``). RAM: what each system keeps hot, and the resident-set growth while it searched.
Systems: mrl (prefix HNSW in RAM, float16 rows read by batched ``preadv``, and the same through a memory
map), DiskANN's SSD index (``diskannpy``: PQ codes in RAM, graph and full vectors on disk), LanceDB IVF_PQ
with ``refine_factor`` on disk; faiss HNSW on the full vectors is given as the RAM it would need.

``--part limited``: the same under a real memory limit. At each ``--sizes`` N the vectors are drawn into a
file a chunk at a time (the parent never holds them whole); then, in a child process placed in a memory
cgroup of its own (cgroup v1 ``memory.limit_in_bytes``, page cache included; root only), ``Index.build``
reads that file through a memory map and builds the index, and one child per ``--points`` setting opens it
(``io="pread"``) and searches cold, with the bytes and reads each query took from the disk. The limit is
``--ram-fraction`` of the full float32 vectors' bytes for a search (default 1/8, so the vectors are 8x the
limit) and ``--build-ram-fraction`` for the build (default 1/4: it holds the growing ANN lists and a chunk's
copies besides), each plus the runtime's own memory, measured first in a child that only imports
(interpreter, numpy, faiss, mrl). Each child
reports its peak resident and anonymous memory, and the cgroup its peak usage. For contrast, the same build
from the vectors loaded whole (``np.load`` without a map) runs under the same limit. The first pass defaults
to IVF with 8-bit codes (``--ann ivf``): about 72 bytes a vector at a 64-dim prefix, where HNSW's links alone
take 128 at M 16.

``--part adaptive``: adaptive width where it should pay, under the same memory limit. The index (IVF over the
prefix with 8-bit codes, float16 rows read by ``preadv``) is built as in the limited part. At each ``--points``
setting the fixed two-pass search reads all k' candidates' rows from the disk; the adaptive one
(:mod:`mrl.index.adaptive`, middle width = the prefix, whose scores the first pass already computed in RAM) reads
only the rows within a margin of the k-th best. The margin is chosen on the 809 SciFact train claims (the smallest of
``--adaptive-margins`` whose recall@10 is within 0.002 of the fixed search's at the same point); both are then timed
cold on the 300 test claims, held out.

    python benchmarks/out_of_core.py --part storage
    python benchmarks/out_of_core.py --part cold --sizes 10000,100000,1000000
    python benchmarks/out_of_core.py --part limited --sizes 1000000,3000000,10000000 --prefix-dim 128   # as root
    python benchmarks/out_of_core.py --part adaptive --sizes 3000000,10000000 --prefix-dim 128 --points 320:128,640:256

Writes benchmarks/results/out_of_core-{storage,cold,limited}[-<tag>].json (and a plot against N for
the limited part), or for the adaptive part adaptive-beyond-ram[-<tag>].json, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import all_claims, draw, exact_truth, query_splits, real_embeddings  # the speed runs' vectors and claims

from mrl.data import Document, load_beir
from mrl.encode import EmbeddingCache, encode_texts
from mrl.eval.metrics import retrieval_metrics, run_from_rows
from mrl.eval.tables import console
from mrl.index import Index
from mrl.index.adaptive import AdaptiveWidth, summary
from mrl.index.interface import SearchTimings
from mrl.index.segments import drop_cached_pages
from mrl.index.tuning import recall_at_k, tune
from mrl.model import load_model
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix

ROOT = Path(__file__).resolve().parents[1]
K = 10
STORAGE = [  # (name, store, keep_dims)
    ("float32", "float32", None),
    ("float16", "float16", None),
    ("int8", "int8", None),
    ("keep-256 float16", "float16", 256),
    ("keep-128 float16", "float16", 128),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("storage", "cold", "limited", "adaptive"), required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MRL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--prefix-dim", type=int, default=64, help="first-pass prefix (storage part: 64; cold: 128)")
    ap.add_argument("--sizes", default="10000,100000", help="cold part: corpus sizes")
    ap.add_argument("--store", default="float16", help="cold part: how mrl stores the rerank rows")
    ap.add_argument("--shortlists", default="20,40,80,160", help="cold part: mrl's k' grid")
    ap.add_argument("--single", type=int, default=300, help="cold part: queries timed one at a time")
    ap.add_argument("--peers", default="diskann,lancedb", help="cold part: peers to run (diskann, lancedb)")
    ap.add_argument("--diskann-complexities", default="20,40,80,160", help="cold part: DiskANN's search list sizes")
    ap.add_argument("--peer-max-n", type=int, default=1_000_000, help="cold part: largest N a peer is built at")
    ap.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: a temp folder)")
    ap.add_argument(
        "--ram-fraction",
        type=float,
        default=0.125,
        help="limited part: memory limit / full float32 vectors (plus the runtime's own memory)",
    )
    ap.add_argument(
        "--build-ram-fraction",
        type=float,
        default=0.25,
        help="limited part: the build's memory limit / full float32 vectors (plus the runtime's own memory)",
    )
    ap.add_argument(
        "--ann", default=None, help="mrl's first pass: hnsw or ivf (default: hnsw in the cold part, ivf in limited)"
    )
    ap.add_argument("--quant", default="sq8", help="mrl's first-pass codes")
    ap.add_argument(
        "--points",
        default=None,
        help="mrl's k':search-width pairs (nprobe for ivf, efSearch for hnsw), e.g. 80:32,160:64; limited part "
        "default 80:32,80:64,160:64,160:128,320:128; without it the cold part takes --shortlists "
        "(efSearch max(k', 64))",
    )
    ap.add_argument(
        "--adaptive-margins",
        default="0.0,0.005,0.01,0.015,0.02,0.03,0.04,0.05,0.065,0.08",
        help="adaptive part: the margins tried on the train claims",
    )
    ap.add_argument("--tag", default="")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # limited part: JSON of one child's job
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    args.ann = args.ann or ("ivf" if args.part in ("limited", "adaptive") else "hnsw")
    if args.points is None and args.part in ("limited", "adaptive"):
        args.points = "80:32,80:64,160:64,160:128,320:128"
    model = load_model(args.model)
    if args.part == "storage":
        storage_part(args, model)
    elif args.part == "cold":
        cold_part(args, model)
    elif args.part == "adaptive":
        adaptive_part(args, model)
    else:
        limited_part(args, model)


# ---- part 1: quality and bytes of each storage choice ---------------------------------------------------------
def storage_part(args, model) -> None:
    data = load_beir(args.data / "scifact", "test")
    doc_ids = list(data.corpus)
    vectors, _ = EmbeddingCache().get_or_encode(model, data.corpus_fingerprint(), [data.corpus[d] for d in doc_ids])
    train_queries = list(load_beir(args.data / "scifact", "train").queries.values())
    tuning = encode_texts(model, train_queries, progress=False)
    qids = list(data.queries)
    queries = encode_texts(model, [data.queries[q] for q in qids], progress=False)
    docs = [Document(d, "") for d in doc_ids]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, store, keep in STORAGE:
            index = Index.build(
                Path(tmp) / name, vectors, docs, prefix_dim=args.prefix_dim, store=store, keep_dims=keep
            )
            tuned = tune(index, 0.99, k=K, queries=tuning)
            run = run_from_rows(*index.search_keys(prefix(queries, queries.shape[1]), K + 1), doc_ids, qids)
            exact = run_from_rows(*index_exact(index, queries), doc_ids, qids)
            stats = index.stats()
            rows.append(
                {
                    "storage": name,
                    "store": store,
                    "keep_dims": keep,
                    "bytes_per_vector": stats["bytes_per_vector"],
                    "vector_bytes": stats["vector_bytes"],
                    "shortlist": tuned["shortlist"],
                    "ann_search": tuned["ann_search"],
                    "tuned_recall@10": tuned["measured_recall"],
                    "ndcg@10_two_pass": ndcg(data, run),
                    "ndcg@10_exact_on_stored": ndcg(data, exact),
                }
            )
            console().print(rows[-1])
    result = {"dataset": "scifact", "split": "test", "model": getattr(model, "mrl_source", args.model),
              "prefix_dim": args.prefix_dim, "rows": rows}  # fmt: skip
    write_json(result, ROOT / "benchmarks" / "results" / "out_of_core-storage.json")
    table = Table(title="SciFact test: rerank storage, two-pass nDCG@10 and bytes per vector")
    for col in ("storage", "bytes/vector", "k'", "two-pass nDCG@10", "exact on stored rows"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["storage"], str(r["bytes_per_vector"]), str(r["shortlist"]),
                      f"{r['ndcg@10_two_pass']:.4f}", f"{r['ndcg@10_exact_on_stored']:.4f}")  # fmt: skip
    console().print(table)


def index_exact(index: Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over the stored rows (what the rerank can at best return), with scores for the run."""
    unit = prefix(queries, queries.shape[1])
    rows = index.exact_keys(unit, K + 1)
    stored = index.gen.stored_queries(unit)
    scores = np.stack([index.vectors(r) @ q for r, q in zip(rows, stored, strict=True)])
    return rows, scores


def ndcg(data, run) -> float:
    return retrieval_metrics(data.qrels, run, ignore_identical_ids=True)["ndcg@10"]


# ---- part 2: cold reads at growing N ----------------------------------------------------------------------------
def cold_part(args, model) -> None:
    real, info = real_embeddings(model, args.data, EmbeddingCache(), "scifact")
    queries = all_claims(query_splits(model, args.data), 1000)
    sizes = [int(s) for s in args.sizes.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mrl-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"queries": len(queries), "k": K, "dim": int(real.shape[1]), "prefix_dim": args.prefix_dim,
                    "ann": args.ann, "quant": args.quant, "store": args.store, "vectors": info,
                    "sizes": {}}  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"out_of_core-cold{'-' + args.tag if args.tag else ''}.json"
    try:
        for n in sizes:
            vectors = draw(real, n, 0.5, seed=0)
            truth = exact_truth(queries, vectors)
            entry: dict = {"n": n, "full_float32_bytes": int(vectors.nbytes), "points": []}
            entry["faiss_hnsw_full_ram_bytes"] = int(n * (vectors.shape[1] * 4 + 2 * 32 * 4))  # vectors + level-0 links
            entry["points"] += mrl_points(args, work / f"mrl-{n}", vectors, queries, truth, entry)
            if n <= args.peer_max_n:
                if "diskann" in peers:
                    entry["points"] += diskann_points(args, work / f"diskann-{n}", vectors, queries, truth, entry)
                if "lancedb" in peers:
                    entry["points"] += lancedb_points(args, work / f"lance-{n}", vectors, queries, truth, entry)
            for p in entry["points"]:  # the RAM a search held, against the full vectors' bytes
                hot = p.get("hot_bytes") or p.get("hot_bytes_files") or p["rss_growth_bytes"]
                p["hot_mb"] = round(hot / 1e6, 1)
                p["hot_over_full_float32"] = round(hot / entry["full_float32_bytes"], 3)
            entry["full_float32_mb"] = round(entry["full_float32_bytes"] / 1e6, 1)
            result["sizes"][str(n)] = entry
            write_json(result, out)  # after every size: a later crash keeps what finished
            del vectors
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_cold(result)


def io_counters() -> tuple[int, int]:
    """(bytes read from storage, read system calls) of this process so far: /proc/self/io."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"]), int(fields["syscr"])


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def drop_folder(folder: Path) -> None:
    """Drop the page-cache pages of every file a system wrote (its own files only)."""
    for path in folder.rglob("*"):
        if path.is_file():
            drop_cached_pages(path)


def measure(system: str, setting: dict, make, queries, truth, folder: Path, single: int) -> dict:
    """One cold pass of single queries and one cold batch; per-query latency, bytes and reads from the disk.

    ``make()`` opens the system and returns its (one query, batch) search functions. It runs after the pages
    are dropped, since the kernel keeps pages that a live memory map holds.
    """
    drop_folder(folder)
    search_one, search_batch = make()
    lat, read_bytes, reads, found = [], [], [], []
    for q in queries[:single]:
        b0, r0 = io_counters()
        t0 = time.perf_counter()
        found.append(search_one(q))
        lat.append(time.perf_counter() - t0)
        b1, r1 = io_counters()
        read_bytes.append(b1 - b0)
        reads.append(r1 - r0 - 1)  # less the read of /proc/self/io itself
    search_one = search_batch = None  # unmap (mmap) before the pages are dropped again
    drop_folder(folder)
    _, search_batch = make()
    t0 = time.perf_counter()
    batch = search_batch(queries)
    batch_s = time.perf_counter() - t0
    lat_ms = np.array(lat) * 1e3
    return {
        "system": system,
        **setting,
        "recall@10": recall_at_k(np.asarray(batch), truth),
        "recall@10_single": recall_at_k(np.asarray(found), truth[:single]),
        "qps_single": len(lat) / sum(lat),
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "qps_batch": len(queries) / batch_s,
        "disk_bytes_per_query": float(np.mean(read_bytes)),
        "disk_kb_per_query": round(float(np.mean(read_bytes)) / 1e3, 1),
        "disk_reads_per_query": float(np.mean(reads)),
    }


def mrl_points(args, folder: Path, vectors, queries, truth, entry: dict) -> list[dict]:
    shutil.rmtree(folder, ignore_errors=True)
    docs = [Document(str(i), "") for i in range(len(vectors))]
    t0 = time.perf_counter()
    Index.build(folder, vectors, docs, prefix_dim=args.prefix_dim, ann=args.ann, quant=args.quant, store=args.store,
                io="pread")  # fmt: skip
    entry["mrl_build_s"] = time.perf_counter() - t0
    grid = parse_points(args.points) if args.points else [(int(s), max(int(s), 64)) for s in args.shortlists.split(",")]
    points = []
    for io in ("pread", "mmap"):
        before = rss_bytes()
        stats = Index.open(folder, io=io).stats()
        entry["mrl_hot_bytes"], entry["mrl_cold_bytes"] = stats["ram_bytes"], stats["vector_bytes"]
        for shortlist, ef in grid:

            def make(shortlist=shortlist, ef=ef, io=io):
                index = Index.open(folder, io=io)
                return (
                    lambda q: index.search_keys(q[None, :], K, shortlist=shortlist, ann_search=ef)[0][0],
                    lambda qs: index.search_keys(qs, K, shortlist=shortlist, ann_search=ef)[0],
                )

            width = "efSearch" if args.ann == "hnsw" else "nprobe"
            setting = {"io": io, "shortlist": shortlist, width: ef, "hot_bytes": stats["ram_bytes"]}
            points.append(measure("mrl", setting, make, queries, truth, folder, args.single))
            points[-1]["rss_growth_bytes"] = rss_bytes() - before
            console().print(points[-1])
    return points


def diskann_points(args, folder: Path, vectors, queries, truth, entry: dict) -> list[dict]:
    """DiskANN's SSD index: L2 on unit vectors (the cosine ranking); PQ codes of 64 bytes in RAM."""
    import diskannpy

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    diskannpy.build_disk_index(
        vectors, "l2", str(folder), complexity=100, graph_degree=64, build_memory_maximum=8.0,
        num_threads=os.cpu_count() or 1, num_of_pq_chunks=64, vector_dtype=np.float32,
    )  # fmt: skip
    entry["diskann_build_s"] = time.perf_counter() - t0
    before = rss_bytes()
    index = diskannpy.StaticDiskIndex(str(folder), num_threads=os.cpu_count() or 1, beam_width=4,
                                      distance_metric="l2", vector_dtype=np.float32)  # fmt: skip
    loaded = rss_bytes() - before
    # what the SSD index holds in RAM by design: its PQ codes and pivots (graph and full vectors stay on disk)
    pq_bytes = sum(f.stat().st_size for f in folder.glob("*pq*") if f.is_file())
    points = []
    for complexity in [int(c) for c in args.diskann_complexities.split(",")]:

        def make(c=complexity):  # DiskANN reads with O_DIRECT: the open index holds no page cache
            return (
                lambda q: index.search(q, K, c).identifiers,
                lambda qs: index.batch_search(qs, K, c, os.cpu_count() or 1).identifiers,
            )

        setting = {"complexity": complexity, "beam_width": 4, "rss_at_open": loaded, "hot_bytes_files": pq_bytes}
        points.append(measure("diskann", setting, make, queries, truth, folder, args.single))
        points[-1]["rss_growth_bytes"] = rss_bytes() - before
        console().print(points[-1])
    return points


def lancedb_points(args, folder: Path, vectors, queries, truth, entry: dict) -> list[dict]:
    """LanceDB IVF_PQ on disk (dot product on unit vectors), refine_factor rereading full vectors from disk."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfPq

    shutil.rmtree(folder, ignore_errors=True)
    n, dim = vectors.shape
    db = lancedb.connect(str(folder))
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
    t0 = time.perf_counter()
    table = db.create_table("v", pa.table({"id": pa.array(np.arange(n)), "vector": column}))
    table.create_index("vector", config=IvfPq(distance_type="dot", num_partitions=max(int(np.sqrt(n)), 16),
                                              num_sub_vectors=dim // 8))  # fmt: skip
    entry["lancedb_build_s"] = time.perf_counter() - t0
    before = rss_bytes()
    points = []
    for refine in (2, 5, 10, 20):

        def make(r=refine):
            opened = lancedb.connect(str(folder)).open_table("v")

            def one(q):
                query = opened.search(q).distance_type("dot").nprobes(32).refine_factor(r).limit(K).select(["id"])
                return np.asarray(query.to_arrow()["id"])

            return one, lambda qs: np.stack([one(q) for q in qs])

        setting = {"refine_factor": refine, "nprobes": 32}
        points.append(measure("lancedb", setting, make, queries, truth, folder, args.single))
        points[-1]["rss_growth_bytes"] = rss_bytes() - before
        console().print(points[-1])
    return points


# ---- part 3: build and search under a real memory limit -------------------------------------------------------
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def limited_part(args, model) -> None:
    if os.geteuid() != 0 or not (CGROUP_ROOT / "memory.limit_in_bytes").is_file():
        sys.exit("--part limited needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory")
    real, info = real_embeddings(model, args.data, EmbeddingCache(), "scifact")
    queries = all_claims(query_splits(model, args.data), 1000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mrl-limited-"))
    work.mkdir(parents=True, exist_ok=True)
    out = ROOT / "benchmarks" / "results" / f"out_of_core-limited{'-' + args.tag if args.tag else ''}.json"
    dim = int(real.shape[1])
    result: dict = {"queries": len(queries), "k": K, "dim": dim, "prefix_dim": args.prefix_dim, "ann": args.ann,
                    "quant": args.quant, "store": args.store, "ram_fraction": args.ram_fraction,
                    "build_ram_fraction": args.build_ram_fraction, "points": parse_points(args.points), "vectors": info,
                    "sizes": {}}  # fmt: skip
    np.save(work / "queries-all.npy", queries)
    # the interpreter with numpy, faiss and mrl loaded: a fixed cost that the limit allows on top of the fraction
    result["runtime"] = run_limited({"do": "baseline"}, None)
    runtime = result["runtime"]["cgroup_peak_bytes"]  # its anonymous memory and the pages of its libraries
    for n, path, folder, generate_s in drawn_sizes(args, real, work, {"all": queries}):
        full = n * dim * 4
        limit = int(full * args.ram_fraction) + runtime
        build_limit = int(full * args.build_ram_fraction) + runtime
        entry: dict = {
            "n": n,
            "full_float32_bytes": full,
            "memory_limit_bytes": limit,
            "build_memory_limit_bytes": build_limit,
            "generate_s": generate_s,
        }
        entry.update({"full_float32_mb": round(full / 1e6, 1), "memory_limit_mb": round(limit / 1e6, 1),
                      "build_memory_limit_mb": round(build_limit / 1e6, 1)})  # fmt: skip
        job = {"vectors": str(path), "folder": str(folder), "prefix_dim": args.prefix_dim, "ann": args.ann,
               "quant": args.quant, "store": args.store}  # fmt: skip
        entry["build"] = run_limited({**job, "do": "build", "mmap": True}, build_limit)
        console().print(entry["build"])
        if entry["build"]["completed"]:
            for shortlist, ann_search in result["points"]:
                search = {**job, "do": "search", "shortlist": shortlist, "ann_search": ann_search,
                          "single": args.single, "queries": str(work / "queries-all.npy"),
                          "truth": str(work / "truth-all.npy")}  # fmt: skip
                entry.setdefault("search", []).append(run_limited(search, limit))
                console().print(entry["search"][-1])
        for report in [entry["build"], *entry.get("search", [])]:
            if "index_ram_bytes" in report:
                report["index_ram_over_full_float32"] = round(report["index_ram_bytes"] / full, 3)
        shutil.rmtree(folder, ignore_errors=True)
        entry["build_whole_matrix"] = run_limited({**job, "do": "build", "mmap": False}, build_limit)
        result["sizes"][str(n)] = entry
        write_json(result, out)
    print_limited(result)
    plot_limited(result, out.with_suffix(".png"))


def adaptive_part(args, model) -> None:
    """Fixed against adaptive rerank width under the memory limit, margin chosen on train claims, timed on test."""
    if os.geteuid() != 0 or not (CGROUP_ROOT / "memory.limit_in_bytes").is_file():
        sys.exit("--part adaptive needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory")
    real, info = real_embeddings(model, args.data, EmbeddingCache(), "scifact")
    splits = query_splits(model, args.data)
    margins = [float(m) for m in args.adaptive_margins.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mrl-adaptive-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    out = ROOT / "benchmarks" / "results" / f"adaptive-beyond-ram{'-' + args.tag if args.tag else ''}.json"
    dim = int(real.shape[1])
    result: dict = {"k": K, "dim": dim, "prefix_dim": args.prefix_dim, "ann": args.ann, "quant": args.quant,
                    "store": args.store, "ram_fraction": args.ram_fraction, "points": parse_points(args.points),
                    "margins_tried": margins, "vectors": info, "io": "pread",
                    "queries": "margin chosen on the 809 SciFact train claims (recall within 0.002 of the fixed "
                               "search's); both searches timed cold on the 300 test claims (held out)",
                    "sizes": {}}  # fmt: skip
    for name in ("train", "test"):
        np.save(work / f"queries-{name}.npy", splits[name])
    result["runtime"] = run_limited({"do": "baseline"}, None)
    runtime = result["runtime"]["cgroup_peak_bytes"]
    for n, path, folder, _ in drawn_sizes(args, real, work, splits):
        full = n * dim * 4
        limit = int(full * args.ram_fraction) + runtime
        entry: dict = {"n": n, "memory_limit_mb": round(limit / 1e6, 1), "full_float32_mb": round(full / 1e6, 1)}
        job = {"vectors": str(path), "folder": str(folder), "prefix_dim": args.prefix_dim, "ann": args.ann,
               "quant": args.quant, "store": args.store}  # fmt: skip
        build_limit = int(full * args.build_ram_fraction) + runtime
        entry["build"] = run_limited({**job, "do": "build", "mmap": True}, build_limit)
        console().print(entry["build"])
        entry["points"] = [adaptive_point(job, point, margins, work, limit, args.single)
                           for point in result["points"]] if entry["build"]["completed"] else []  # fmt: skip
        result["sizes"][str(n)] = entry
        write_json(result, out)
    print_adaptive(result)


def adaptive_point(job: dict, point: tuple[int, int], margins: list[float], work: Path, limit: int, single: int):
    """At one (k', search width): the margin chosen on train claims, then fixed and adaptive timed on test claims."""
    shortlist, width = point
    base = {**job, "shortlist": shortlist, "ann_search": width, "single": single}
    train = {"queries": str(work / "queries-train.npy"), "truth": str(work / "truth-train.npy")}
    test = {"queries": str(work / "queries-test.npy"), "truth": str(work / "truth-test.npy")}
    fixed_train = run_limited({**base, **train, "do": "recall", "margin": None}, limit)
    trials = []
    for margin in margins:  # smallest first: a larger margin only reads more
        trials.append(run_limited({**base, **train, "do": "recall", "margin": margin}, limit))
        console().print(
            {
                "shortlist": shortlist,
                "width": width,
                **{k: trials[-1].get(k) for k in ("margin", "recall@10", "rerank_bytes_ratio_vs_fixed")},
            }
        )
        if trials[-1].get("recall@10", 0) >= fixed_train["recall@10"] - 0.002:
            break
    row = {"shortlist": shortlist, "ann_search": width, "fixed_train_recall": fixed_train.get("recall@10"),
           "trials": trials}  # fmt: skip
    row["fixed"] = run_limited({**base, **test, "do": "search", "margin": None}, limit)
    chosen = trials[-1] if trials[-1].get("recall@10", 0) >= fixed_train["recall@10"] - 0.002 else None
    if chosen is None:
        row["adaptive"] = None
        return row
    row["margin"] = chosen["margin"]
    row["adaptive"] = run_limited({**base, **test, "do": "search", "margin": chosen["margin"]}, limit)
    fixed, adaptive = row["fixed"], row["adaptive"]
    if fixed["completed"] and adaptive["completed"]:
        row["rerank_bytes_ratio_vs_fixed"] = adaptive["rerank_bytes_ratio_vs_fixed"]
        row["disk_bytes_ratio_vs_fixed"] = adaptive["disk_bytes_per_query"] / fixed["disk_bytes_per_query"]
        row["qps_single_ratio_vs_fixed"] = adaptive["qps_single"] / fixed["qps_single"]
        row["qps_batch_ratio_vs_fixed"] = adaptive["qps_batch"] / fixed["qps_batch"]
        row["p99_ratio_vs_fixed"] = adaptive["p99_ms"] / fixed["p99_ms"]
    console().print(row | {"trials": len(trials)})
    return row


def print_adaptive(result: dict) -> None:
    table = Table(title=f"Fixed vs adaptive rerank width, cold, memory limit {result['ram_fraction']} x the full "
                        "vectors; held-out test claims")  # fmt: skip
    for col in ("N", "k'", "search", "margin", "mode", "recall@10", "QPS", "QPS batch", "p50 ms", "p99 ms",
                "disk kB/q", "reads/q", "rerank bytes vs fixed"):  # fmt: skip
        table.add_column(col, justify="right")
    for n, e in result["sizes"].items():
        for p in e["points"]:
            for mode in ("fixed", "adaptive"):
                r = p.get(mode)
                if not r or not r.get("completed"):
                    table.add_row(n, str(p["shortlist"]), str(p["ann_search"]), "", mode, "not reached", *[""] * 7)
                    continue
                table.add_row(
                    n, str(p["shortlist"]), str(p["ann_search"]),
                    f"{p.get('margin', '')}" if mode == "adaptive" else "", mode, f"{r['recall@10']:.4f}",
                    f"{r['qps_single']:.0f}", f"{r['qps_batch']:.0f}",
                    f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['disk_kb_per_query']:.1f}",
                    f"{r['disk_reads_per_query']:.1f}",
                    f"{r['rerank_bytes_ratio_vs_fixed']:.2f}x" if mode == "adaptive" else "1.00x",
                )  # fmt: skip
    console().print(table)


def drawn_sizes(
    args, real: np.ndarray, work: Path, query_sets: dict[str, np.ndarray]
) -> Iterator[tuple[int, Path, Path, float]]:
    """For each ``--sizes`` N: N vectors drawn into a file a chunk at a time, and the exact top 10 of each query set
    saved as ``truth-<name>.npy``; yields (N, the vectors file, the index folder, seconds it took) and removes both
    once the caller is done, and the work folder at the end unless it is ``--workdir``."""
    dim = int(real.shape[1])
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            path, folder = work / f"vectors-{n}.npy", work / f"mrl-{n}"
            t0 = time.perf_counter()
            vectors = draw(real, n, 0.5, seed=0, out=np.lib.format.open_memmap(path, "w+", np.float32, (n, dim)))
            for name, queries in query_sets.items():
                np.save(work / f"truth-{name}.npy", exact_truth(queries, vectors))
            vectors.flush()
            del vectors
            yield n, path, folder, round(time.perf_counter() - t0, 1)
            shutil.rmtree(folder, ignore_errors=True)
            path.unlink()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def parse_points(text: str) -> list[tuple[int, int]]:
    """``"80:16,160:32"``: (k', the first pass's search width: efSearch or nprobe) pairs."""
    try:
        return [(int(a), int(b)) for a, b in (p.split(":") for p in text.split(",") if p)]
    except ValueError:
        sys.exit(f"--points wants k':search pairs such as 80:16,160:32, not {text!r}")


def run_limited(job: dict, limit: int | None) -> dict:
    """Run one child job in a fresh memory cgroup limited to ``limit`` bytes; its report plus the cgroup's peak."""
    group = CGROUP_ROOT / f"mrl-bench-{os.getpid()}"
    group.mkdir(exist_ok=True)
    try:
        if limit is not None:
            (group / "memory.limit_in_bytes").write_text(str(limit))
        (group / "memory.max_usage_in_bytes").write_text("0")

        def enter() -> None:  # runs in the child before exec: the whole child lives under the limit
            (group / "cgroup.procs").write_text(str(os.getpid()))

        if "vectors" in job:  # the child's reads are charged to its own group, from the disk
            drop_cached_pages(Path(job["vectors"]))
        cmd = [sys.executable, __file__, "--part", "limited", "--child", json.dumps(job)]
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=enter)
        report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
        report.update({"do": job["do"], "mmap": job.get("mmap"), "completed": proc.returncode == 0,
                       "returncode": proc.returncode,
                       "cgroup_peak_bytes": int((group / "memory.max_usage_in_bytes").read_text()),
                       "oom_killed": "oom_kill 1" in (group / "memory.oom_control").read_text()})  # fmt: skip
        report["cgroup_peak_mb"] = round(report["cgroup_peak_bytes"] / 1e6, 1)
        if proc.returncode != 0:
            report["stderr_tail"] = proc.stderr[-300:]
        return report
    finally:
        group.rmdir()


def child(job: dict) -> None:
    """One job under the limit: build from the vectors file, or open the index and search cold. Prints JSON."""
    if job["do"] == "build":
        folder = Path(job["folder"])
        vectors = np.load(job["vectors"], mmap_mode="r" if job["mmap"] else None)
        docs = NumberedDocs(len(vectors))
        t0 = time.perf_counter()
        index = Index.build(folder, vectors, docs, prefix_dim=job["prefix_dim"], ann=job["ann"], quant=job["quant"],
                            store=job["store"], io="pread")  # fmt: skip
        stats = index.stats()
        report = {"build_s": time.perf_counter() - t0, "index_ram_bytes": stats["ram_bytes"],
                  "index_disk_bytes": stats["disk_bytes"]}  # fmt: skip
    elif job["do"] == "search":
        report = limited_search(job)
    elif job["do"] == "recall":
        report = adaptive_recall(job)
    else:  # baseline: what the interpreter holds with this script's imports (numpy, faiss, mrl) and nothing else
        report = {}
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    report["peak_rss_mb"] = round(int(status["VmHWM"].split()[0]) / 1e3, 1)
    report["rss_anon_mb"] = round(int(status["RssAnon"].split()[0]) / 1e3, 1)
    print(json.dumps(report))


def limited_search(job: dict) -> dict:
    """Cold passes over the index (``io="pread"``) as :func:`measure` times them, plus what it holds in RAM."""
    folder = Path(job["folder"])
    queries, truth = np.load(job["queries"]), np.load(job["truth"])
    shortlist, width = job["shortlist"], job["ann_search"]
    adaptive = AdaptiveWidth(job["prefix_dim"], job["margin"]) if job.get("margin") is not None else None
    held: dict = {}

    def make():
        index = Index.open(folder, io="pread")
        held["index_ram_bytes"] = index.stats()["ram_bytes"]
        return (
            lambda q: index.search_keys(q[None, :], K, shortlist, width, adaptive=adaptive)[0][0],
            lambda qs: index.search_keys(qs, K, shortlist, width, adaptive=adaptive)[0],
        )

    setting = {"shortlist": shortlist, "ann_search": width, "margin": job.get("margin")}
    report = measure("mrl", setting, make, queries, truth, folder, job["single"])
    if adaptive is not None:  # what it read, from a last (warm) batch: the same rows as the timed ones
        timings = SearchTimings()
        Index.open(folder, io="pread").search_keys(queries, K, shortlist, width, timings=timings, adaptive=adaptive)
        report.update(summary(timings.widths))
    return {**report, **held}


def adaptive_recall(job: dict) -> dict:
    """Recall@10 of one setting (fixed, or adaptive at ``margin``) on the queries given; no timing."""
    queries, truth = np.load(job["queries"]), np.load(job["truth"])
    index = Index.open(Path(job["folder"]), io="pread")
    adaptive = AdaptiveWidth(job["prefix_dim"], job["margin"]) if job.get("margin") is not None else None
    timings = SearchTimings()
    rows, _ = index.search_keys(queries, K, job["shortlist"], job["ann_search"], timings=timings, adaptive=adaptive)
    report = {"margin": job.get("margin"), "recall@10": recall_at_k(rows, truth)}
    return report | (summary(timings.widths) if adaptive is not None else {})


class NumberedDocs(Sequence):
    """Documents "0".."n-1" with no text, made when asked for: the limit measures the index, not a list of them."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return Document(str(i % self.n), "")


def print_limited(result: dict) -> None:
    table = Table(title=f"Under a memory limit of {result['ram_fraction']} x the full float32 vectors (+ runtime)")
    for col in ("N", "full MB", "limit MB", "job", "done", "cgroup peak MB", "anon MB", "index RAM / full",
                "recall@10", "QPS", "p99 ms", "disk kB/q"):  # fmt: skip
        table.add_column(col, justify="right")
    for n, e in result["sizes"].items():
        jobs = [("build (map)", e["build"]),
                *[(f"search k'={p} w={w}", s) for (p, w), s in zip(result["points"], e.get("search", []), strict=True)],
                ("build (whole matrix)", e["build_whole_matrix"])]  # fmt: skip
        for name, r in jobs:
            table.add_row(
                n, f"{e['full_float32_mb']:,.0f}",
                f"{e['build_memory_limit_mb' if name.startswith('build') else 'memory_limit_mb']:,.0f}", name,
                "yes" if r["completed"] else ("OOM-killed" if r["oom_killed"] else f"rc {r['returncode']}"),
                f"{r['cgroup_peak_mb']:,.0f}", f"{r['rss_anon_mb']:,.0f}" if "rss_anon_mb" in r else "",
                f"{r['index_ram_over_full_float32']:.3f}" if "index_ram_over_full_float32" in r else "",
                f"{r['recall@10']:.4f}" if "recall@10" in r else "",
                f"{r['qps_single']:.0f}" if "qps_single" in r else "", f"{r['p99_ms']:.2f}" if "p99_ms" in r else "",
                f"{r['disk_kb_per_query']:.1f}" if "disk_kb_per_query" in r else "",
            )  # fmt: skip
    console().print(table)


def plot_limited(result: dict, path: Path) -> None:
    """Single-query QPS and p99 latency against N, one line per (k', search width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (qps_ax, p99_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (shortlist, width) in enumerate(result["points"]):
        rows = [(int(n), e["search"][i]) for n, e in result["sizes"].items()
                if len(e.get("search", [])) > i and e["search"][i]["completed"]]  # fmt: skip
        label = f"k'={shortlist}, search {width}"
        qps_ax.plot([n for n, _ in rows], [s["qps_single"] for _, s in rows], marker="o", label=label)
        p99_ax.plot([n for n, _ in rows], [s["p99_ms"] for _, s in rows], marker="o", label=label)
    for ax, name in ((qps_ax, "single-query QPS"), (p99_ax, "p99 latency (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel("vectors (N)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    p99_ax.axhline(10, color="grey", linestyle="--", linewidth=1)
    qps_ax.legend(fontsize=8)
    fig.suptitle(f"Cold rerank under a memory limit of {result['ram_fraction']} x the full vectors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_cold(result: dict) -> None:
    table = Table(title="Cold rerank (page cache dropped before each pass): recall@10, latency, disk reads, RAM")
    for col in ("N", "system", "setting", "recall@10", "QPS", "p50 ms", "p99 ms", "disk kB/q", "reads/q", "hot MB"):
        table.add_column(col, justify="right")
    for n, entry in result["sizes"].items():
        for p in entry["points"]:
            keys = ("io", "shortlist", "efSearch", "nprobe", "complexity", "refine_factor")
            setting = ", ".join(f"{k}={p[k]}" for k in keys if k in p)
            table.add_row(
                n, p["system"], setting, f"{p['recall@10']:.4f}", f"{p['qps_single']:.0f}", f"{p['p50_ms']:.2f}",
                f"{p['p99_ms']:.2f}", f"{p['disk_bytes_per_query'] / 1e3:.1f}", f"{p['disk_reads_per_query']:.1f}",
                f"{p.get('hot_bytes', p['rss_growth_bytes']) / 1e6:.1f}",
            )  # fmt: skip
    console().print(table)


if __name__ == "__main__":
    main()
