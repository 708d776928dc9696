"""Sharding: what splitting one index into N shards behind the router costs and gives, and what a Ray build costs.

``--part search`` (default): the same ``--n`` vectors as one embedded index and as 1, 2 and 4 shards behind mrl's
router (:class:`mrl.index.router.ShardedIndex`, shards in this process, searched at once on a thread each), every
one built with the same engine, prefix, quantization and rerank. At each per-shard shortlist k' it measures, on the
300 SciFact test claims (nothing is tuned here: the k' grid is fixed), recall@10 against exact search over the whole
corpus, single-query QPS, p50/p99 and batch QPS by the shared protocol (:func:`harness.time_point`), each shard
alone at the same k', and the router's own cost: its latency over the slowest shard's, and the merge alone.

``--part build``: encoding and building SciFact's 5,183 abstracts into 2 shards on a local Ray cluster of 2 worker
nodes (one CPU each; Ray Data over model actors) against the same
work in one process. On a 2-core machine this shows the overhead, not a speed-up.

    python benchmarks/shards.py --n 1000000 --prefix-dim 128 --ann hnsw
    python benchmarks/shards.py --part build

Writes benchmarks/results/shards-<n>[-<tag>].json (search) or shards-<docs>-build[-<tag>].json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from harness import RESULTS, K, add_data_args, benchmark_vectors, exact_truth, single_pass, time_point
from rich.table import Table

from mrl.data import Document
from mrl.eval.tables import console
from mrl.index.embedded import Index
from mrl.index.router import ShardedIndex, merge_answers
from mrl.index.shards import build_sharded
from mrl.provenance import write_json


def answer(index, queries: np.ndarray, shortlist: int) -> list[list]:
    """What a user's search returns (hits with ids and documents, as :meth:`SearchIndex.search` does), for any index."""
    keys, scores = index.search_keys(queries, K, shortlist=shortlist)
    return index.hits_for(keys, scores)


def rows_of(hits: list[list]) -> np.ndarray:
    """Hits as corpus rows (every document's id is its row number), -1 padded to k."""
    return np.array([[int(hit.id) for hit in hh] + [-1] * (K - len(hh)) for hh in hits])


def search_part(args: argparse.Namespace) -> dict:
    _, base, queries, info = benchmark_vectors(args)
    test = queries["test"]
    truth = exact_truth(test, base)
    documents = [Document(str(i), "") for i in range(len(base))]
    options = {"prefix_dim": args.prefix_dim, "ann": args.ann, "quant": args.quant}
    work = Path(tempfile.mkdtemp(prefix="mrl-shards-", dir=args.work))
    shortlists = [int(s) for s in args.shortlists.split(",")]
    out: dict = {"n": len(base), "vectors": info, "queries": len(test), "settings": options, "systems": []}
    try:
        t0 = time.perf_counter()
        single = Index.build(work / "single", base, documents, **options)
        built = time.perf_counter() - t0
        points = []
        for kp in shortlists:
            point = time_point(lambda q, kp=kp: rows_of(answer(single, q, kp)), test, truth)
            points.append({"shortlist": kp, **point})
            console().print(f"single index k'={kp}: recall {point['recall@10']:.4f}, {point['qps_single']:.0f} QPS")
        out["systems"].append({
            "system": "one index", "shards": 1, "build_seconds": built, "ram_bytes": single.stats()["ram_bytes"],
            "points": points,
        })  # fmt: skip
        single.close()
        shutil.rmtree(work / "single")
        for shards in [int(s) for s in args.shards.split(",")]:
            folder = work / f"sharded-{shards}"
            t0 = time.perf_counter()
            build_sharded(folder, base, documents, shards, **options)
            built = time.perf_counter() - t0
            router = ShardedIndex.open(folder)
            points = []
            for kp in shortlists:
                point = time_point(lambda q, kp=kp, r=router: rows_of(answer(r, q, kp)), test, truth)
                per_shard = []
                for client in router.clients:  # each shard alone, one query at a time, at the same k'
                    _, lat = single_pass(lambda q, c=client, kp=kp: c.search(q, K, kp, *[None] * 4).rows, test)
                    per_shard.append({
                        "qps_single": len(lat) / float(lat.sum()), "p50_ms": float(np.percentile(lat, 50) * 1e3),
                        "p99_ms": float(np.percentile(lat, 99) * 1e3),
                    })  # fmt: skip
                answers = [[c.search(q[None, :], K, kp, None, None, None, None) for c in router.clients] for q in test]
                t0 = time.perf_counter()
                for parts in answers:
                    merge_answers(parts, K)
                merge_ms = (time.perf_counter() - t0) / len(test) * 1e3
                slowest = max(s["p50_ms"] for s in per_shard)
                points.append({
                    "shortlist": kp, **point, "per_shard": per_shard, "merge_ms": merge_ms,
                    "router_over_slowest_shard_p50_ms": point["p50_ms"] - slowest,
                })  # fmt: skip
                console().print(
                    f"{shards} shards k'={kp}: recall {point['recall@10']:.4f}, {point['qps_single']:.0f} QPS, "
                    f"p99 {point['p99_ms']:.2f} ms, merge {merge_ms:.3f} ms"
                )
            out["systems"].append({
                "system": f"router over {shards} shard{'s' if shards > 1 else ''}", "shards": shards,
                "build_seconds": built, "ram_bytes": router.stats()["ram_bytes"], "points": points,
            })  # fmt: skip
            router.close()
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def build_part(args: argparse.Namespace) -> dict:
    """The same corpus encoded and built into 2 shards: in this process, then on a 2-node local Ray cluster."""
    import ray
    from ray.cluster_utils import Cluster

    from mrl.cluster.build import build_on_ray
    from mrl.data import load_beir
    from mrl.encode import encode_texts
    from mrl.model import load_model

    corpus = list(load_beir(args.data / "scifact", "test").corpus.items())[: args.docs]
    documents = [Document(i, t) for i, t in corpus]
    texts = [t for _, t in corpus]
    options = {"prefix_dim": args.prefix_dim, "ann": args.ann, "quant": args.quant}
    work = Path(tempfile.mkdtemp(prefix="mrl-shards-build-", dir=args.work))
    out: dict = {"documents": len(documents), "settings": options, "shards": 2}
    try:
        t0 = time.perf_counter()
        model = load_model(args.model)
        vectors = encode_texts(model, texts, batch_size=64)
        encoded = time.perf_counter() - t0
        build_sharded(work / "local", vectors, documents, 2, model=args.model, **options)
        local = time.perf_counter() - t0
        out["one_process"] = {"seconds": local, "encode_seconds": encoded, "docs_per_s": len(texts) / local}
        console().print(f"one process: {local:.1f} s ({len(texts) / local:.0f} docs/s)")
        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        started = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            build_on_ray(work / "ray", documents, model=args.model, shards=2, address=cluster.address, **options)
            seconds = time.perf_counter() - t0
        finally:
            ray.shutdown()
            cluster.shutdown()
        out["ray_2_nodes"] = {
            "seconds": seconds, "docs_per_s": len(texts) / seconds, "cluster_start_seconds": started,
            "nodes": 2, "cpus_per_node": 1,
        }  # fmt: skip
        out["ray_over_one_process"] = seconds / local
        rate = len(texts) / seconds
        console().print(f"Ray, 2 nodes: {seconds:.1f} s ({rate:.0f} docs/s), cluster up in {started:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_table(result: dict) -> None:
    if "systems" not in result:
        table = Table(title=f"encode + build into 2 shards, {result['documents']:,} documents")
        for col in ("where", "seconds", "docs/s"):
            table.add_column(col)
        for name in ("one_process", "ray_2_nodes"):
            table.add_row(name, f"{result[name]['seconds']:.1f}", f"{result[name]['docs_per_s']:.0f}")
        console().print(table)
        return
    table = Table(title=f"{result['n']:,} vectors, {result['queries']} held-out queries, per-shard k'")
    for col in ("system", "k'", "recall@10", "QPS single", "p99 ms", "QPS batch", "slowest shard p50", "merge ms"):
        table.add_column(col, justify="right")
    for system in result["systems"]:
        for p in system["points"]:
            shard = f"{max(s['p50_ms'] for s in p['per_shard']):.2f}" if "per_shard" in p else "-"
            merge = f"{p['merge_ms']:.3f}" if "merge_ms" in p else "-"
            table.add_row(
                system["system"], str(p["shortlist"]), f"{p['recall@10']:.4f}", f"{p['qps_single']:.0f}",
                f"{p['p99_ms']:.2f}", f"{p['qps_batch']:.0f}", shard, merge,
            )  # fmt: skip
    console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--part", choices=("search", "build"), default="search")
    ap.add_argument("--shards", default="1,2,4", help="shard counts behind the router")
    ap.add_argument("--shortlists", default="20,40,80,160", help="per-shard k' values")
    ap.add_argument("--prefix-dim", type=int, default=128)
    ap.add_argument("--ann", default="hnsw")
    ap.add_argument("--quant", default="sq8")
    ap.add_argument("--docs", type=int, default=5183, help="--part build: SciFact abstracts to encode")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for the indexes (default: the temp dir)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    result = search_part(args) if args.part == "search" else build_part(args)
    size = args.n if args.part == "search" else f"{args.docs}-build"
    path = write_json(result, RESULTS / f"shards-{size}{'-' + args.tag if args.tag else ''}.json")
    print_table(result)
    console().print(f"wrote {path}")


if __name__ == "__main__":
    main()
