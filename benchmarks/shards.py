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
    python benchmarks/shards.py --part build --docs 2000
    python benchmarks/shards.py --part projection     # from the two files above and out_of_core-limited.json

``--part projection``: the brief's 100M x 1536-dim case projected from those measurements (nodes at a given RAM
per node, QPS per node, the fan-out cost, encoding time on N GPUs), every assumption written into the result.

Writes benchmarks/results/shards-<n>[-<tag>].json (search), shards-<docs>-build.json or
shards-<target-n>-projection.json, and prints a table.
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


def projection_part(args: argparse.Namespace) -> dict:
    """The brief's case, ``--target-n`` vectors of ``--target-dim`` dims, projected from measured figures.

    Measured inputs: the beyond-RAM search at 10M vectors (RAM per vector of the prefix index, single-query QPS and
    disk reads per query on 2 cores, out_of_core-limited.json), the router's merge and fan-out (the search part's
    file) and the Ray build's overhead (the build part's file). Everything else is an assumption, written into the
    result with its value.
    """
    import json
    import math

    beyond = json.loads((RESULTS / "out_of_core-limited.json").read_text())["sizes"]["10000000"]
    search = json.loads(args.search_result.read_text())
    build = json.loads(args.build_result.read_text())
    point = beyond["search"][0]
    cpu = json.loads((RESULTS / "out_of_core-limited.json").read_text())["provenance"]["machine"]["cpu_model"]
    measured_prefix = 128  # the out_of_core run's prefix (IVF over 8-bit codes)
    ram_per_vector = point["index_ram_bytes"] / beyond["n"] + (args.target_prefix - measured_prefix)  # 1 B a dim
    row_bytes = args.target_dim * 2  # float16 rerank rows
    one = next(s for s in search["systems"] if s["shards"] == 1 and s["system"] == "one index")
    widest = max(search["systems"], key=lambda s: s["shards"])
    kp = args.fan_out_shortlist
    fan = {
        "shards": widest["shards"],
        "shortlist": kp,
        "qps_one_index": next(p for p in one["points"] if p["shortlist"] == kp)["qps_single"],
        "qps_router": next(p for p in widest["points"] if p["shortlist"] == kp)["qps_single"],
        "merge_ms": next(p for p in widest["points"] if p["shortlist"] == kp)["merge_ms"],
    }
    fan["router_over_one_index"] = fan["qps_router"] / fan["qps_one_index"]
    # shards of the measured size: a shard's search is what was measured (an IVF's cost grows with its size)
    shard_vectors = beyond["n"]
    shards = math.ceil(args.target_n / shard_vectors)
    shard_ram = shard_vectors * ram_per_vector
    core_seconds = 2 / point["qps_single"]  # one shard search: 2 cores for 1/QPS seconds
    qps_per_node = args.node_cores / (shards * core_seconds)  # every query searches every shard
    nodes = []
    for ram_gb in [int(g) for g in args.node_ram_gb.split(",")]:
        fit = min(shards, args.node_cores // 2, int(ram_gb * 2**30 * args.ram_fraction // shard_ram))
        count = math.ceil(shards / fit) if fit else None
        nodes.append({
            "ram_gb": ram_gb, "shards_per_node": fit, "nodes": count, "prefix_ram_gb_per_node": fit * shard_ram / 2**30,
            "nvme_gb_per_node": fit * shard_vectors * row_bytes / 2**30, "qps": (count or 0) * qps_per_node,
        })  # fmt: skip
    encoding = [
        {"gpus": g, "hours": args.target_n / (args.gpu_docs_per_s * g) / 3600 * build["ray_over_one_process"]}
        for g in [int(g) for g in args.gpus.split(",")]
    ]
    return {
        "projection": True,
        "target": {"n": args.target_n, "dim": args.target_dim, "prefix_dim": args.target_prefix},
        "measured": {
            "beyond_ram_10m": {
                "index_ram_bytes_per_vector": point["index_ram_bytes"] / beyond["n"],
                "prefix_dim": measured_prefix,
                "qps_single_2_cores": point["qps_single"],
                "p99_ms": point["p99_ms"],
                "disk_reads_per_query": point["disk_reads_per_query"],
                "recall@10": point["recall@10"],
                "cpu": cpu,
            },
            "fan_out_1m": fan,
            "ray_build_over_one_process": build["ray_over_one_process"],
        },
        "assumptions": {
            "ram_per_vector_bytes": ram_per_vector,
            "prefix_share_of_node_ram": args.ram_fraction,
            "rerank_row_bytes": row_bytes,
            "node_cores": args.node_cores,
            "qps_scales_with_cores": "a shard search takes 2 cores for 1/QPS seconds, as measured, on any node",
            "network_ms": args.network_ms,
            "rows_per_page": "a 1536-dim float16 row (3,072 B) fits in one 4 KiB page, as a 384-dim row does: the "
            "rerank reads as many pages per query as measured",
            "gpu_docs_per_s": args.gpu_docs_per_s,
            "gpu_rate_is_measured": False,
        },
        "shards": shards,
        "full_float32_gib": args.target_n * args.target_dim * 4 / 2**30,
        "vectors_per_shard": shard_vectors,
        "shard_ram_gb": shard_ram / 2**30,
        "qps_per_node": qps_per_node,
        "disk_reads_per_s_per_node": qps_per_node * shards * point["disk_reads_per_query"],
        "latency_p99_ms": point["p99_ms"] + fan["merge_ms"] + args.network_ms,
        "nodes": nodes,
        "encoding": encoding,
    }


def print_table(result: dict) -> None:
    if result.get("projection"):
        table = Table(title=f"projection: {result['target']['n']:,} x {result['target']['dim']} dims")
        for col in ("RAM per node", "shards per node", "nodes", "prefix RAM GiB", "NVMe GiB", "QPS"):
            table.add_column(col, justify="right")
        for row in result["nodes"]:
            table.add_row(
                f"{row['ram_gb']} GB", str(row["shards_per_node"]), str(row["nodes"]),
                f"{row['prefix_ram_gb_per_node']:.1f}", f"{row['nvme_gb_per_node']:.0f}",
                f"{row['qps']:.0f}",
            )  # fmt: skip
        console().print(table)
        return
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
    ap.add_argument("--part", choices=("search", "build", "projection"), default="search")
    ap.add_argument("--shards", default="1,2,4", help="shard counts behind the router")
    ap.add_argument("--shortlists", default="20,40,80,160", help="per-shard k' values")
    ap.add_argument("--prefix-dim", type=int, default=128)
    ap.add_argument("--ann", default="hnsw")
    ap.add_argument("--quant", default="sq8")
    ap.add_argument("--docs", type=int, default=5183, help="--part build: SciFact abstracts to encode")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for the indexes (default: the temp dir)")
    ap.add_argument("--search-result", type=Path, default=RESULTS / "shards-1000000.json")
    ap.add_argument("--build-result", type=Path, default=RESULTS / "shards-2000-build.json")
    ap.add_argument("--target-n", type=int, default=100_000_000)
    ap.add_argument("--target-dim", type=int, default=1536)
    ap.add_argument("--target-prefix", type=int, default=256)
    ap.add_argument("--node-ram-gb", default="16,32,64,128")
    ap.add_argument("--ram-fraction", type=float, default=0.5, help="share of a node's RAM the prefix index may take")
    ap.add_argument("--node-cores", type=int, default=32)
    ap.add_argument("--fan-out-shortlist", type=int, default=80)
    ap.add_argument("--network-ms", type=float, default=0.5, help="assumed round trip from the router to a shard")
    ap.add_argument("--gpu-docs-per-s", type=float, default=2000.0, help="assumed encoding rate of one GPU")
    ap.add_argument("--gpus", default="1,8,32")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    parts = {"search": search_part, "build": build_part, "projection": projection_part}
    result = parts[args.part](args)
    size = {"search": args.n, "build": f"{args.docs}-build", "projection": f"{args.target_n}-projection"}[args.part]
    path = write_json(result, RESULTS / f"shards-{size}{'-' + args.tag if args.tag else ''}.json")
    print_table(result)
    console().print(f"wrote {path}")


if __name__ == "__main__":
    main()
