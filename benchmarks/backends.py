"""The same two-pass search on each backend, at 100k vectors, in one run.

Backends: the embedded index (faiss HNSW over the prefix, memory-mapped full vectors); PostgreSQL +
pgvector (HNSW expression index on the prefix, rerank in the same SQL statement; a throwaway server on
loopback unless --dsn is given); Qdrant Edge (Qdrant's engine in process: HNSW on the prefix vector,
prefetch then rescore on the full vector); and qdrant-client's local mode, which scores every point
exactly in Python (no HNSW): it measures the code path that also drives a Qdrant server, not Qdrant's
engine, and runs on the first 50 queries only. Data: the vectors of benchmarks/index_speed.py (real
embeddings plus a kernel density sample around them, same model, same seed); queries are real SciFact
claims, not in the index.

Per backend and shortlist k': recall@10 against exact full-dim search, single-query QPS (one call
per query, all layers included: SQL or client round trip), batch QPS (one call for all queries).

    python benchmarks/backends.py --n 100000 --model models/bench/mrl-w --no-rotate     # the committed runs
    python benchmarks/backends.py --n 100000 --model models/bench/mrl-w --prefix-dim 128 --no-rotate \
        --backends embedded,postgres,qdrant-edge

Writes benchmarks/results/backends-<n>-p<prefix dim>[-rotated].json (rotated: the default) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from rich.table import Table

from mrl.data import Document
from mrl.eval.tables import console
from mrl.index import Index
from mrl.index.tuning import exact_top_rows, recall_at_k
from mrl.provenance import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from harness import K, add_data_args, all_claims, benchmark_vectors  # noqa: E402


def measure(name: str, index, queries: np.ndarray, truth: list[list[str]], shortlists: list[int], single: int):
    points = []
    for kp in shortlists:
        keys, _ = index.search_keys(queries, K, shortlist=kp)
        if name == "embedded":
            keys = [[index.ids[r] for r in row] for row in keys]
        t0 = time.perf_counter()
        index.search_keys(queries, K, shortlist=kp)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in queries[:single]:
            index.search_keys(q[None, :], K, shortlist=kp)
        single_s = (time.perf_counter() - t0) / single
        points.append(
            {
                "backend": name,
                "shortlist": kp,
                "recall@10": recall_at_k(keys, truth),
                "qps_single": 1 / single_s,
                "qps_batch": len(queries) / batch_s,
            }
        )
        console().print(f"  {name} k'={kp}: recall {points[-1]['recall@10']:.4f}, {points[-1]['qps_single']:.0f} QPS")
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 100_000)
    ap.add_argument("--prefix-dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--shortlists", default="50,100,200,500,1000")
    ap.add_argument("--dsn", default=None, help="PostgreSQL DSN with pgvector (default: a throwaway local server)")
    ap.add_argument("--backends", default="embedded,postgres,qdrant-edge,qdrant-local")
    ap.add_argument("--no-rotate", action="store_true", help="every backend on the raw prefix (mrl.index.rotation off)")
    args = ap.parse_args()
    shortlists = [int(s) for s in args.shortlists.split(",")]
    backends = args.backends.split(",")

    _, vectors, queries, info = benchmark_vectors(args)
    queries = all_claims(queries, args.queries)
    ids = [f"d{i}" for i in range(len(vectors))]
    docs = [Document(i, f"document {i}") for i in ids]
    truth = [[ids[r] for r in row] for row in exact_top_rows(queries, len(vectors), vectors.__getitem__, K)]
    result = {
        "n": args.n,
        "model": args.model,
        "prefix_dim": args.prefix_dim,
        "queries": len(queries),
        "single_queries": args.single,
        "data": {**info, "bandwidth": args.bandwidth},
        "builds": {},
        "points": [],
    }
    rotate = not args.no_rotate  # the same storage on every backend, so they run the same two-pass
    result["rotated"] = rotate
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            console().print(f"[bold]{name}[/bold]: building over {args.n} vectors")
            t0 = time.perf_counter()
            if name == "embedded":
                index = Index.build(Path(tmp) / "embedded", vectors, docs, prefix_dim=args.prefix_dim, rotate=rotate)
                index.ids = ids
            elif name == "postgres":
                from mrl.index.postgres import PostgresIndex

                dsn = args.dsn
                if dsn is None:
                    from pgserver import postgres_server

                    dsn = stack.enter_context(postgres_server())
                index = PostgresIndex.build(
                    dsn, "bench", vectors, docs, prefix_dim=args.prefix_dim, overwrite=True, rotate=rotate
                )
            elif name in ("qdrant-edge", "qdrant-local"):
                from mrl.index.qdrant import QdrantIndex

                location = f"qdrant-edge://{tmp}/edge" if name == "qdrant-edge" else f"qdrant://{tmp}/qdrant/bench"
                index = QdrantIndex.build(location, vectors, docs, prefix_dim=args.prefix_dim, rotate=rotate)
            else:
                raise SystemExit(f"unknown backend {name}")
            result["builds"][name] = {"seconds": time.perf_counter() - t0, "stats": index.stats()}
            # local mode scores every point in Python: fewer queries keep its run to minutes
            n_q = len(queries) if name != "qdrant-local" else min(len(queries), 50)
            single = args.single if name != "qdrant-local" else min(args.single, 10)
            result["points"] += [
                {**p, "queries": n_q} for p in measure(name, index, queries[:n_q], truth[:n_q], shortlists, single)
            ]
            index.close()
    name = f"backends-{args.n}-p{args.prefix_dim}{'-rotated' if rotate else ''}.json"
    path = write_json(result, ROOT / "benchmarks" / "results" / name)
    table = Table(title=f"two-pass search per backend, {args.n} vectors, prefix {args.prefix_dim}, recall@10 vs exact")
    for col in ("backend", "k'", "recall@10", "single-query QPS", "batch QPS", "x embedded (single)"):
        table.add_column(col)
    ref = {p["shortlist"]: p["qps_single"] for p in result["points"] if p["backend"] == "embedded"}
    for p in result["points"]:
        ratio = f"{p['qps_single'] / ref[p['shortlist']]:.2f}" if p["shortlist"] in ref else "-"
        table.add_row(
            p["backend"],
            str(p["shortlist"]),
            f"{p['recall@10']:.4f}",
            f"{p['qps_single']:.0f}",
            f"{p['qps_batch']:.0f}",
            ratio,
        )
    console().print(table)
    console().print(f"wrote {path}")


if __name__ == "__main__":
    main()
