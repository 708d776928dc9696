"""Markdown tables of the committed results, for the README and the docs (every figure read from its file).

    python benchmarks/summarize.py speed        # every index_speed run at recall@10 0.99 against faiss HNSW full
    python benchmarks/summarize.py systems --file F   # one index_speed run: each system's best point at 0.99
    python benchmarks/summarize.py versus --file F    # one index_speed run: each mrl first pass against each peer
    python benchmarks/summarize.py training     # train_scifact.json: every run raw and rotated per dim
    python benchmarks/summarize.py earlier      # train_scifact.json: the runs from before rotated prefixes
    python benchmarks/summarize.py criteria     # train_scifact.json: the recipe against the rotated control
    python benchmarks/summarize.py verdict      # train_scifact.json: those margins against the spread over seeds
    python benchmarks/summarize.py cold         # out_of_core-cold.json: each system's fastest point at recall 0.95

The docs paste these tables under a ``<!-- figures: <file> -->`` marker, and tests/test_docs.py checks that each
figure is in the file the marker names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DIMS = ("32", "64", "128", "256", "full")


def cpu_of(run: dict) -> str:
    """The CPU a result file records (files from before mrl.cpu record only the architecture)."""
    machine = run.get("provenance", {}).get("machine", {})
    if "cpu_model" in machine:
        return f"{machine['cpu_model']} ({', '.join(machine.get('simd', [])) or 'no AVX2'})"
    return "not recorded (x86-64, 2 cores)"


def engine_of(system: str) -> str:
    """Which engine an mrl system name ran: faiss or zvec (open source), or SVS, whose LVQ codes are closed and
    Intel-only."""
    if "zvec" in system:
        return "zvec (open source)"
    if "vamana" not in system:
        return "faiss (open source)"
    if "fp16" in system or "fp32" in system:
        return "SVS floats (Intel's wheel)"
    return f"SVS LVQ-{4 if 'sq4' in system else 8} (closed, Intel CPUs only)"


def speed(target: str = "0.99") -> str:
    """One row per index_speed result: mrl's best first pass against faiss HNSW on full vectors at ``target``."""
    rows = [
        "| file | dims | mrl's first pass | engine | CPU | mrl recall@10 | single-query vs faiss HNSW | batch | RAM |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted(RESULTS.glob("index_speed-*.json")):
        run = json.loads(path.read_text())
        s = run.get("summary", {}).get(target, {})
        mine = s.get("mrl")
        if not mine or "qps_single_ratio_vs_faiss_hnsw" not in s:
            rows.append(f"| {path.name} | {run['dim']} | target not reached | | {cpu_of(run)} | | | | |")
            continue
        rows.append(
            f"| {path.name} | {run['dim']} | {mine['system']} | {engine_of(mine['system'])} | {cpu_of(run)} | "
            f"{mine['recall@10']:.4f} | {s['qps_single_ratio_vs_faiss_hnsw']:.2f}x | "
            f"{s['qps_batch_ratio_vs_faiss_hnsw']:.2f}x | {s['ram_ratio_vs_faiss_hnsw']:.2f}x |"
        )
    return "\n".join(rows)


SETTING_KEYS = ("efSearch", "k_factor", "ef", "window", "ann_search", "shortlist")


def summary_at(run: dict, path: Path, target: float) -> dict:
    """An index_speed run's summary at ``target`` (``index_speed.py --resummarize`` brings older files up to date)."""
    if str(target) not in run["summary"]:
        raise SystemExit(f"{path.name} summarizes recall@10 {', '.join(run['summary'])}, not {target}")
    summary = run["summary"][str(target)]
    if "best" not in summary:
        raise SystemExit(
            f"{path.name} has a summary from before per-system tables: "
            f"python benchmarks/index_speed.py --resummarize {path}"
        )
    return summary


def system_ram(run: dict, system: str) -> int:
    return run["systems"][system.replace("-funnel128", "")]["ram_bytes"]


def systems(path: Path, target: float = 0.99) -> str:
    """One index_speed run: every system's fastest point at ``target``, with what it keeps in RAM and, for mrl,
    how much of the full-vector file its rerank read over all queries; systems that never reach it say so."""
    run = json.loads(path.read_text())
    best = summary_at(run, path, target)["best"]
    rows = [
        "| system | setting | recall@10 | QPS single | p99 ms | QPS batch | index RAM MiB | rerank read |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, info in run["systems"].items():
        if system == "exact":
            continue
        if "skipped" in info or system not in best:
            why = "skipped: " + info["skipped"].split(";")[0] if "skipped" in info else f"never reached {target}"
            rows.append(f"| {system} | {why} | | | | | | |")
            continue
        p, batch = best[system]["point"], best[system]["qps_batch"]
        setting = ", ".join(f"{k} {p[k]}" for k in SETTING_KEYS if k in p)
        foot = info.get("rerank_footprint")
        # measured at the fastest point at recall 0.99 (else 0.95): shown where that is the point in this row
        same = foot and all(foot.get(k, p.get(k)) == p.get(k) for k in ("ann_search", "shortlist"))
        read = f"{foot['touched_fraction']:.1%}" if same else "-"
        rows.append(
            f"| {system} | {setting} | {p['recall@10']:.4f} | {p['qps_single']:.0f} | {p['p99_ms']:.2f} | "
            f"{batch:.0f} | {system_ram(run, system) / 2**20:.0f} | {read} |"
        )
    return "\n".join(rows)


def versus(path: Path, target: float = 0.99) -> str:
    """One index_speed run: each mrl first pass against each peer at ``target``, as ratios (above 1: mrl ahead).

    Read from the run's ``summary[target].by_system``; runs with ``--head-to-head`` rounds get a second table,
    each mrl system's cheapest setting at recall 0.99 and the peer's re-timed in turns (the median of per-round
    ratios).
    """
    run = json.loads(path.read_text())
    by_system = summary_at(run, path, target)["by_system"]
    rows = [
        "| mrl | peer | single-query | batch | index RAM | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for mine, peers in by_system.items():
        for peer, v in peers.items():
            if "point" not in v:
                why = v.get("skipped", "").split(";")[0] or ("peer never reached it" if v["mrl_reached"] else "")
                rows.append(f"| {mine} | {peer} | | | | {why or f'mrl never reached {target}'} |")
                continue
            single, batch = v["qps_single_ratio"], v["qps_batch_ratio"]
            verdict = "mrl faster" if min(single, batch) > 1 else "mrl slower" if max(single, batch) < 1 else "mixed"
            rows.append(f"| {mine} | {peer} | {single:.2f}x | {batch:.2f}x | {v['ram_ratio']:.2f}x | {verdict} |")
    systems = run["systems"].items()
    turns = [(mine, peer, h) for mine, info in systems for peer, h in info.get("head_to_head", {}).items()]
    if turns:
        rows += [
            "",
            "| mrl | peer | rounds | single-query | batch | mrl setting | peer setting |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |",
        ]
        for mine, peer, h in turns:
            if not h["rounds"]:
                rows.append(f"| {mine} | {peer} | 0 | | | | {h['reason']} |")
                continue
            setting = "ann_search {ann_search}, shortlist {shortlist}".format(**h["mrl_setting"])
            rows.append(
                f"| {mine} | {peer} | {h['rounds']} | {h['median_ratio_single']:.2f}x | {h['median_ratio_batch']:.2f}x "
                f"| {setting} | efSearch {h['peer_setting']['efSearch']} |"
            )
    return "\n".join(rows)


def training(path: Path = RESULTS / "train_scifact.json") -> str:
    """Every run of train_scifact.json: nDCG@10 raw / rotated per dim, and STS-B at 64 dims."""
    data = json.loads(path.read_text())
    rows = [
        "| run | role | seed | " + " | ".join(DIMS) + " | STS-B @64 |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in DIMS) + " | ---: |",
    ]
    for name, run in data["runs"].items():
        nd, sts = run["ndcg@10"], run["sts_spearman"]
        cells = [f"{nd['raw'][d]:.4f} / {nd['rotated'][d]:.4f}" if d != "full" else f"{nd['raw'][d]:.4f}" for d in DIMS]
        rows.append(
            f"| {name} | {run['role']} | {run.get('seed', '-')} | "
            + " | ".join(cells)
            + f" | {sts['raw']['64']:.2f} / {sts['rotated']['64']:.2f} |"
        )
    return "\n".join(rows)


def earlier(path: Path = RESULTS / "train_scifact.json") -> str:
    """Runs of train_scifact.json measured before rotated prefixes were: raw nDCG@10 per trained dim."""
    data = json.loads(path.read_text())
    dims = ("64", "128", "256", "full")
    rows = [
        "| run | epochs | Matryoshka | " + " | ".join(dims) + " |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in dims) + " |",
    ]
    for name, run in data.get("earlier_runs", {}).items():
        settings = run["settings"]
        cells = [f"{run['test'][d]['ndcg@10']:.4f}" for d in dims]
        rows.append(
            f"| {name} | {settings['epochs']} | {'yes' if settings['matryoshka'] else 'no'} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(rows)


def criteria(path: Path = RESULTS / "train_scifact.json") -> str:
    """Per seed, the recipe's margins over the control's rotated prefix; then, over seeds, what exceeds the spread."""
    data = json.loads(path.read_text())
    rows = [
        "| seed | 32 raw | 32 rotated | 64 raw | 64 rotated | 128 raw | 256 raw | full | STS-B @64 rotated | met |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, c in data["criteria"].items():
        m = c["margin_over_control_rotated"]
        cells = [
            m["raw"]["32"],
            m["rotated"]["32"],
            m["raw"]["64"],
            m["rotated"]["64"],
            m["raw"]["128"],
            m["raw"]["256"],
        ]
        rows.append(
            f"| {data['runs'][name]['seed']} | "
            + " | ".join(f"{x:+.4f}" for x in cells)
            + f" | {c['full_minus_control_full']:+.4f} | {c['sts64_minus_control_rotated']['rotated']:+.2f} | "
            + f"{'yes' if c['met'] else 'no'} |"
        )
    return "\n".join(rows)


def verdict(path: Path = RESULTS / "train_scifact.json") -> str:
    """Over seeds: the recipe's smallest margin per cell against the seed-to-seed spread of recipe and control."""
    data = json.loads(path.read_text())
    rows = ["| cell | smallest margin over seeds | seed-to-seed spread | exceeds it |", "| --- | ---: | ---: | --- |"]
    for cell, v in data.get("verdict", {}).items():
        if isinstance(v, dict):
            claimed = "yes" if v["claimed"] else "no"
            rows.append(f"| {cell.replace('_', ' ')} | {v['min_margin']:+.4f} | {v['spread']:.4f} | {claimed} |")
    return "\n".join(rows)


def cold(path: Path = RESULTS / "out_of_core-cold.json", target: float = 0.95) -> str:
    """out_of_core.py's cold regime: per size and system, the fastest point at recall@10 >= target (else its best)."""
    data = json.loads(path.read_text())
    rows = [
        "| N | system | setting | recall@10 | QPS | p50 ms | p99 ms | disk kB / query | reads / query | hot RAM MB "
        "| hot / full float32 |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, entry in data["sizes"].items():
        for system in dict.fromkeys(p["system"] + (f" ({p['io']})" if "io" in p else "") for p in entry["points"]):
            points = [p for p in entry["points"] if p["system"] + (f" ({p['io']})" if "io" in p else "") == system]
            good = [p for p in points if p["recall@10"] >= target]
            best = max(good, key=lambda p: p["qps_single"]) if good else max(points, key=lambda p: p["recall@10"])
            setting = ", ".join(f"{k} {best[k]}" for k in ("shortlist", "complexity", "refine_factor") if k in best)
            # RAM from what the system holds by construction (mrl's stats, DiskANN's PQ files); a peer's
            # resident-set growth is not a RAM figure (lazy buffers, reused memory), so none is shown for it
            held = best.get("hot_bytes_files") if best["system"] != "mrl" else best.get("hot_bytes")
            ram = f"{held / 1e6:.1f} | {held / entry['full_float32_bytes']:.3f}" if held else "- | -"
            rows.append(
                f"| {int(n):,} | {system} | {setting} | {best['recall@10']:.4f} | {best['qps_single']:.0f} | "
                f"{best['p50_ms']:.2f} | {best['p99_ms']:.2f} | {best['disk_kb_per_query']:.1f} | "
                f"{best['disk_reads_per_query']:.1f} | {ram} |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "table", choices=("speed", "systems", "versus", "training", "earlier", "criteria", "verdict", "cold")
    )
    ap.add_argument("--target", default="0.99")
    ap.add_argument("--file", type=Path, help="systems, versus: the index_speed result file")
    args = ap.parse_args()
    if args.table in ("systems", "versus") and args.file is None:
        ap.error(f"{args.table} needs --file benchmarks/results/index_speed-....json")
    print(
        {
            "speed": lambda: speed(args.target),
            "systems": lambda: systems(args.file, float(args.target)),
            "versus": lambda: versus(args.file, float(args.target)),
            "training": training,
            "earlier": earlier,
            "criteria": criteria,
            "verdict": verdict,
            "cold": cold,
        }[args.table]()
    )


if __name__ == "__main__":
    main()
