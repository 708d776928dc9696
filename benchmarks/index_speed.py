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
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
from harness import (
    RESULTS,
    K,
    add_data_args,
    benchmark_vectors,
    exact_truth,
    in_turns,
    operating_point,
    time_point,
    versus_peers,
)
from rich.table import Table
from systems import (
    PEER_KINDS,
    SETTING_KEYS,
    TARGETS,
    FaissSystem,
    MrlSystem,
    QdrantEdgeSystem,
    SvsSystem,
    System,
    hot_set,
    sweep,
)

from mrl.eval.tables import console
from mrl.provenance import write_json


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
        resummarize(args.resummarize)
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


def resummarize(path: Path) -> None:
    """Recompute a saved run's summary from its measurements; the run's own provenance stays, and the code that
    summarized it is recorded beside it."""
    from mrl.provenance import source_commit

    result = json.loads(path.read_text())
    result["summary"] = summarize(result)
    result["provenance"]["resummarized_by"] = source_commit()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
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
            if "vs_best_peer" in verdict:
                entry["vs_best_peer"] = verdict["vs_best_peer"]
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
