"""Filtered search at scale: recall@10 against exact filtered search, and QPS, at every filter selectivity.

Each vector gets metadata with fields of known selectivity, and one field correlated with the vectors' clusters
(real filters are: a tenant's or a source's documents sit together in the embedding space):

* ``half`` (50%), ``tenth`` (10%), ``hundredth`` (1%), ``thousandth`` (0.1%): a random value of 2, 10, 100 or 1,000;
* ``topic`` (about 10%, clustered): which of 10 k-means clusters of the vectors a row falls in; the filter takes
  the cluster whose share is nearest 10%.

Systems, each built once over the same vectors and metadata and searched with the same filters: mrl's embedded index
(its payload index and filtered first pass), Qdrant Edge with a payload index on every field (HNSW over int8 codes,
originals on disk, rescoring, as in index_speed.py), and faiss HNSW on the full vectors with an ``IDSelector`` of the
matching rows. For every filter and system the cheapest setting that reaches ``--target`` recall on the 809 SciFact
train claims is chosen, then the 300 test claims are measured (held out), one at a time and as a batch.

    python benchmarks/filtered_search.py --n 1000000 --model default --prefix-dim 256
    python benchmarks/filtered_search.py --n 100000 --quick --tag smoke

Writes benchmarks/results/filtered_search-<n>[-<tag>].json and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np
from harness import RESULTS, K, add_data_args, benchmark_vectors, operating_point, time_point
from rich.table import Table
from systems import SETTING_KEYS, FaissSystem, MrlSystem, QdrantEdgeSystem, System, sweep

from mrl.eval.tables import console
from mrl.provenance import write_json

FIELDS = {"half": 2, "tenth": 10, "hundredth": 100, "thousandth": 1000}  # field: how many values it takes
TOPICS = 10


def metadata_for(base: np.ndarray, seed: int = 0) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Each row's metadata, and each field's values as an array (for the masks the faiss peer filters with)."""
    rng = np.random.default_rng(seed)
    columns = {name: rng.integers(0, values, len(base)) for name, values in FIELDS.items()}
    kmeans = faiss.Kmeans(base.shape[1], TOPICS, niter=10, seed=seed, spherical=True)
    kmeans.train(base[rng.choice(len(base), min(len(base), 50_000), replace=False)])
    columns["topic"] = kmeans.index.search(base, 1)[1][:, 0]
    rows = [{name: int(col[i]) for name, col in columns.items()} for i in range(len(base))]
    return rows, columns


def filters_for(columns: dict[str, np.ndarray]) -> dict[str, tuple[dict, np.ndarray]]:
    """name -> (filter, the rows it matches); the topic filter takes the cluster nearest 10% of the rows."""
    out = {name: ({name: 0}, columns[name] == 0) for name in FIELDS}
    sizes = np.bincount(columns["topic"], minlength=TOPICS)
    topic = int(np.argmin(np.abs(sizes / len(columns["topic"]) - 0.1)))
    out["topic"] = ({"topic": topic}, columns["topic"] == topic)
    return out


def masked_truth(queries: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Exact top-K among the rows a filter matches (row numbers of the whole set)."""
    rows = np.flatnonzero(mask)
    _, found = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(base[rows]), K, faiss.METRIC_INNER_PRODUCT)
    return rows[found]


def measure(system: System, base, metadata, splits, filters, args, result: dict) -> None:
    c = console()
    seconds = system.build(base, metadata)
    c.print(f"{system.name} built in {seconds:.0f} s")
    entry = result["systems"][system.name] = {"build_s": seconds, **system.info(), "filters": {}}
    for name, (where, mask) in filters.items():
        truths = {split: masked_truth(q, base, mask) for split, q in splits.items()}
        recalls: list[dict] = []
        points = sweep(system, splits["tune"], truths["tune"], args.quick, (args.target,), where, mask, recalls)
        chosen = operating_point(points, args.target)
        selectivity = float(mask.mean())
        row = {
            "system": system.name,
            "name": name,
            "filter": where,
            "selectivity": selectivity,
            "tuning_points": points,
        }
        if chosen is None:
            best = max(recalls, key=lambda p: p["recall@10"])
            row |= {"reached": False, "best_tuning_recall": best["recall@10"], "best_setting": best}
            c.print(
                f"  {system.name} {name}: recall {args.target} not reached (best {best['recall@10']:.4f} at {best})"
            )
        else:
            setting = {k: v for k, v in chosen.items() if k in SETTING_KEYS}
            test = time_point(system.searcher(setting, where, mask), splits["test"], truths["test"])
            row |= {"reached": True, "setting": setting, **test}
            c.print(f"  {system.name} {name} ({selectivity:.1%}): {setting} -> recall {test['recall@10']:.4f}, "
                    f"{test['qps_single']:,.0f} QPS single, {test['qps_batch']:,.0f} batch")  # fmt: skip
        entry["filters"][name] = row
        result["points"].append({k: v for k, v in row.items() if k != "tuning_points"})
    system.close()


def summarize(result: dict) -> dict:
    """Per filter name: each system's point, and mrl's QPS over Qdrant Edge's and faiss's (when both reached the
    target)."""
    out: dict = {}
    for p in result["points"]:
        out.setdefault(p["name"], {"filter": p["filter"], "selectivity": p["selectivity"]})[p["system"]] = p
    for entry in out.values():
        mine = entry.get("mrl")
        for peer in ("qdrant-edge", "faiss-hnsw"):
            theirs = entry.get(peer)
            if mine and theirs and mine.get("reached") and theirs.get("reached"):
                entry[f"qps_single_ratio_vs_{peer}"] = mine["qps_single"] / theirs["qps_single"]
                entry[f"qps_batch_ratio_vs_{peer}"] = mine["qps_batch"] / theirs["qps_batch"]
    return out


def print_summary(result: dict) -> None:
    table = Table(
        title=f"filtered search, recall@10 >= {result['target']} on held-out queries, {result['n']:,} vectors"
    )
    for col in ("filter", "selectivity", "system", "recall@10", "QPS single", "QPS batch", "mrl / peer single"):
        table.add_column(col, justify="right")
    for name, entry in result["summary"].items():
        for system in ("mrl", "qdrant-edge", "faiss-hnsw"):
            p = entry.get(system)
            if p is None:
                continue
            ratio = entry.get(f"qps_single_ratio_vs_{system}")
            cells = (
                [f"{p['recall@10']:.4f}", f"{p['qps_single']:,.0f}", f"{p['qps_batch']:,.0f}"]
                if p.get("reached")
                else ["not reached", "", ""]
            )
            table.add_row(name, f"{entry['selectivity']:.1%}", system, *cells, f"x{ratio:.2f}" if ratio else "")
    console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--prefix-dim", default="auto", help="mrl's first-pass width: auto (measured) or a number")
    ap.add_argument("--ann", default="zvec")
    ap.add_argument("--quant", default="sq8")
    ap.add_argument("--mrl-hnsw-m", type=int, default=16, help="M of mrl's graph and Qdrant's")
    ap.add_argument("--mrl-ef-construction", type=int, default=200, help="efConstruction of those graphs")
    ap.add_argument("--hnsw-m", type=int, default=32, help="M of the faiss peer")
    ap.add_argument("--hnsw-ef-construction", type=int, default=200, help="efConstruction of the faiss peer")
    ap.add_argument("--target", type=float, default=0.95, help="recall@10 each system is tuned to reach")
    ap.add_argument("--systems", default="mrl,qdrant-edge,faiss-hnsw")
    ap.add_argument("--quick", action="store_true", help="fewer beams")
    ap.add_argument("--tag", default="")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    model, base, queries, info = benchmark_vectors(args)
    del model
    gc.collect()
    splits = {"tune": queries["train"], "test": queries["test"]}
    t0 = time.perf_counter()
    metadata, columns = metadata_for(base)
    filters = filters_for(columns)
    c = console()
    c.print(f"{len(base):,} x {base.shape[1]} vectors; metadata in {time.perf_counter() - t0:.0f} s")
    result = {
        "n": args.n,
        "dim": int(base.shape[1]),
        "model": args.model,
        "k": K,
        "target": args.target,
        "data": info,
        "queries": f"held-out: the {len(splits['test'])} SciFact test claims; settings chosen on "
        f"{len(splits['tune'])} SciFact train claims, per filter",
        "filters": {
            name: {"filter": where, "selectivity": float(mask.mean())} for name, (where, mask) in filters.items()
        },
        "systems": {},
        "points": [],
    }
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mrl-filtered-"))
    width = args.prefix_dim if args.prefix_dim == "auto" else int(args.prefix_dim)
    makers = {
        "mrl": lambda: MrlSystem("mrl", workdir / "mrl", width, args, splits["tune"]),
        "qdrant-edge": lambda: QdrantEdgeSystem(workdir / "qdrant-edge", args),
        "faiss-hnsw": lambda: FaissSystem("faiss-hnsw", f"HNSW{args.hnsw_m}", args, refine=False),
    }
    for name in [s for s in args.systems.split(",") if s]:
        measure(makers[name](), base, metadata, splits, filters, args, result)
        gc.collect()
    shutil.rmtree(workdir, ignore_errors=True)
    result["summary"] = summarize(result)
    out = RESULTS / f"filtered_search-{args.n}{'-' + args.tag if args.tag else ''}.json"
    write_json(result, out)
    print_summary(result)


if __name__ == "__main__":
    main()
