"""Markdown tables of the committed results for the README and the docs, every figure followed by its source.

Each figure is written as ``1.52x<!-- figure: benchmarks/results/<file>.json#<json.path> -->``: the marker names the
value the figure was printed from, and tests/test_docs.py checks every marker against its file at the printed
precision. Paste a table as printed; re-run this script after a result file changes.

    python benchmarks/summarize.py lead --file F        # README: mrl and each peer at recall 0.99, vs the best peer
    python benchmarks/summarize.py peers --file F       # mrl against each peer, re-timed in turns
    python benchmarks/summarize.py systems --file F     # every system's cheapest point at recall 0.99, hot set, cold
    python benchmarks/summarize.py widths --file F      # what --prefix-dim auto measured before it chose
    python benchmarks/summarize.py recipes              # train_scifact.json: nDCG@10 per dim, raw / rotated
    python benchmarks/summarize.py verdict              # train_scifact.json: smallest margin over seeds vs spread
    python benchmarks/summarize.py criteria             # train_scifact.json: each seed's margins
    python benchmarks/summarize.py limited              # out_of_core-limited.json: search under a memory limit
    python benchmarks/summarize.py cold                 # out_of_core-cold-1m.json: read cold from disk vs DiskANN
    python benchmarks/summarize.py filtered --file F    # filtered_search: each filter, each system
    python benchmarks/summarize.py adaptors-mpnet       # adaptor_quality-mpnet-*.json: adaptors on a frozen model
    python benchmarks/summarize.py encoding             # encode_speed.json: torch against ONNX Runtime
    python benchmarks/summarize.py backends             # backends-100000-p128.json: one index on each backend
    python benchmarks/summarize.py serving              # serve_load.json: concurrent clients against mrl serve
    python benchmarks/summarize.py runs                 # every index_speed run, folded into the docs' history
    python benchmarks/summarize.py adaptive --file benchmarks/results/adaptive-scifact-adaptor.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DIMS = ("32", "64", "128", "256", "full")
SETTING_KEYS = ("efSearch", "k_factor", "ef", "window", "ann_search", "shortlist", "hnsw_ef", "oversampling")
MIB = 2**20


class Figures:
    """Prints figures of one result file, each with its marker."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text())
        self.name = f"benchmarks/results/{path.relative_to(RESULTS).as_posix()}"

    def __call__(self, text: str, *keys: object) -> str:
        """``text`` (the figure as printed) followed by the marker of the value at ``keys``."""
        return f"{text}<!-- figure: {self.name}#{'.'.join(str(k) for k in keys)} -->"

    def num(self, fmt: str, *keys: object, unit: str = "") -> str:
        """The value at ``keys`` printed with ``fmt`` (``unit`` " MiB" divides by 2^20), with its marker."""
        value = self.get(*keys)
        shown = value / MIB if unit == " MiB" else value * 100 if unit == "%" else value
        return self(f"{shown:{fmt}}{unit}", *keys)

    def get(self, *keys: object):
        node = self.data
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[str(k)]
        return node


def cpu_of(run: dict) -> str:
    """The CPU a result file records (files from before mrl.cpu record only the architecture)."""
    machine = run.get("provenance", {}).get("machine", {})
    if "cpu_model" in machine:
        return f"{machine['cpu_model']} ({', '.join(machine.get('simd', [])) or 'no AVX2'}), {machine['cpus']} cores"
    return "not recorded (x86-64, 2 cores)"


def source(f: Figures) -> str:
    """The line under a table: the command, the CPU and the file."""
    prov = f.data.get("provenance", {})
    return f"`python benchmarks/{prov.get('command', '?')}` on {cpu_of(f.data)}; `{f.name}`."


def setting_of(point: dict) -> str:
    setting = point.get("setting", point)
    return ", ".join(f"{k} {setting[k]}" for k in SETTING_KEYS if k in setting)


# ---- speed --------------------------------------------------------------------------------------------------------
def lead(path: Path, target: str = "0.99") -> str:
    """mrl and each peer at ``target``: QPS and hot set, and speed relative to the best peer (1.00x); peers that
    were skipped (a missing package, a CPU they need) are left out, :func:`skipped` says why.

    The relative speeds come from the re-timing in turns (each peer against mrl), so all rows share one footing.
    """
    f = Figures(path)
    s = f.data["summary"][target]
    rows = [
        "| system | recall@10 | QPS one at a time | QPS in batches | vs best peer, one at a time | in batches "
        "| hot set |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [("mrl", s["mrl"], ("summary", target, "mrl"))] + [
        (n, p, ("summary", target, "peers", n)) for n, p in s["peers"].items()
    ]
    for name, point, keys in order:
        label = f"**mrl** ({point['system']}, {setting_of(point)})" if name == "mrl" and point else name
        if point is None:
            if "skipped" not in f.data["systems"].get(name, {}):  # skipped peers are listed under the table
                rows.append(f"| {label} | never reached it | | | | | |")
            continue
        rel = ("summary", target, "vs_best_peer", name)
        rows.append(
            f"| {label} | {f.num('.4f', *keys, 'recall@10')} | {f.num(',.0f', *keys, 'qps_single')} | "
            f"{f.num(',.0f', *keys, 'qps_batch')} | {f.num('.2f', *rel, 'single', unit='x')} | "
            f"{f.num('.2f', *rel, 'batch', unit='x')} | {f.num(',.0f', *keys, 'hot_bytes', unit=' MiB')} |"
        )
    return "\n".join(rows)


def skipped(path: Path) -> str:
    """The peers a run skipped, and why."""
    run = json.loads(path.read_text())
    why = {n: e["skipped"].split(";")[0] for n, e in run["systems"].items() if "skipped" in e}
    return "; ".join(f"{n}: {w}" for n, w in why.items()) or "none"


def peers(path: Path, target: str = "0.99") -> str:
    """mrl against each peer at ``target``: medians of the per-round ratios in turns, and the hot-set ratio."""
    f = Figures(path)
    versus = f.data["summary"][target].get("versus", {})
    rows = [
        "| peer | mrl / peer, one at a time | in batches | how | mrl QPS (median) | peer QPS (median) "
        "| hot set, mrl / peer |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for peer, v in versus.items():
        keys = ("summary", target, "versus", peer)
        if not v["reached"]:
            rows.append(f"| {peer} | {v.get('skipped', 'never reached ' + target).split(';')[0]} | | | | | |")
            continue
        medians = (
            f"{f.num(',.0f', *keys, 'median_qps_single_mine')} | {f.num(',.0f', *keys, 'median_qps_single_theirs')}"
            if "median_qps_single_mine" in v
            else " | "
        )
        ram = f.num(".2f", *keys, "ram_ratio", unit="x") if "ram_ratio" in v else ""
        rows.append(
            f"| {peer} | {f.num('.2f', *keys, 'qps_single_ratio', unit='x')} | "
            f"{f.num('.2f', *keys, 'qps_batch_ratio', unit='x')} | {v['ratio_source']} | {medians} | {ram} |"
        )
    return "\n".join(rows)


def systems(path: Path, target: str = "0.99") -> str:
    """Every system's cheapest point at ``target`` on the held-out queries: speed, hot set, and QPS read cold."""
    f = Figures(path)
    s = f.data["summary"][target]
    rows = [
        "| system | setting | recall@10 | QPS one at a time | p99 ms | QPS in batches | hot set | "
        "QPS with its files evicted |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    points = [(n, p, ("summary", target, "ablations", n)) for n, p in s["ablations"].items()]
    points += [(n, p, ("summary", target, "peers", n)) for n, p in s["peers"].items()]
    for name, p, keys in points:
        if p is None:
            info = f.data["systems"].get(name, {})
            why = "skipped: " + info["skipped"].split(";")[0] if "skipped" in info else f"never reached {target}"
            rows.append(f"| {name} | {why} | | | | | | |")
            continue
        cold = f.num(",.0f", *keys, "qps_single_cold") if "qps_single_cold" in p else "in RAM only"
        rows.append(
            f"| {name} | {setting_of(p)} | {f.num('.4f', *keys, 'recall@10')} | {f.num(',.0f', *keys, 'qps_single')} "
            f"| {f.num('.2f', *keys, 'p99_ms')} | {f.num(',.0f', *keys, 'qps_batch')} | "
            f"{f.num(',.0f', *keys, 'hot_bytes', unit=' MiB')} | {cold} |"
        )
    return "\n".join(rows)


def widths(path: Path) -> str:
    """What ``--prefix-dim auto`` measured on the tuning queries: each width's cheapest point at the target."""
    f = Figures(path)
    system = f.data["primary"]
    tuned = f.data["systems"][system]["tuned"]
    rows = [
        "| width | ann_search | shortlist | recall@10 (tuning queries) | QPS one at a time | QPS in batches |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, row in enumerate(tuned["table"]):
        if row["qps_single"] is None:
            continue  # below the target: the tuner did not time it
        keys = ("systems", system, "tuned", "table", i)
        rows.append(
            f"| {row['width']} | {row['ann_search'] or '-'} | {row['shortlist'] or '-'} | "
            f"{f.num('.4f', *keys, 'recall')} | {f.num(',.0f', *keys, 'qps_single')} | "
            f"{f.num(',.0f', *keys, 'qps_batch')} |"
        )
    return "\n".join(rows) + f"\n\nIt chose: {tuned['choice']}."


def runs() -> str:
    """Every index_speed run at recall 0.99: mrl's system against faiss HNSW and, where the run had it, the best
    peer."""
    rows = [
        "| file | dims | mrl's system | CPU | recall@10 | vs faiss HNSW, one at a time | in batches "
        "| vs best peer, one at a time | in batches |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted(RESULTS.glob("index_speed-*.json")):
        f = Figures(path)
        s = f.data.get("summary", {}).get("0.99", {})
        mine = s.get("mrl")
        if not mine:
            rows.append(f"| `{path.name}` | {f.data['dim']} | never reached 0.99 | {cpu_of(f.data)} | | | | | |")
            continue
        # older files keep the ratios beside the point, newer ones in it
        where = ("summary", "0.99", "mrl") if "qps_single_ratio_vs_faiss_hnsw" in mine else ("summary", "0.99")
        cells = []
        for key in ("qps_single_ratio_vs_faiss_hnsw", "qps_batch_ratio_vs_faiss_hnsw"):
            cells.append(f.num(".2f", *where, key, unit="x") if key in f.get(*where) else "")
        for key in ("qps_single_ratio_vs_best_peer", "qps_batch_ratio_vs_best_peer"):
            cells.append(f.num(".2f", "summary", "0.99", "mrl", key, unit="x") if key in mine else "")
        rows.append(
            f"| `{path.name}` | {f.data['dim']} | {mine['system']} | {cpu_of(f.data)} | "
            f"{f.num('.4f', 'summary', '0.99', 'mrl', 'recall@10')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


# ---- training -----------------------------------------------------------------------------------------------------
RECIPE_ROWS = {
    "base": "base all-MiniLM-L6-v2",
    "control-5ep": "control: plain MNRL fine-tune, 5 epochs",
    "adaptor-full": "control + adaptor trained at full width only",
    "mrl-adaptor": "**control + Matryoshka adaptor** (the recipe)",
}


def recipes(path: Path = RESULTS / "train_scifact.json") -> str:
    """nDCG@10 on SciFact test per dim, raw / rotated, and STS-B Spearman at 64 dims, for the seed-42 runs."""
    f = Figures(path)
    rows = [
        "| model | " + " | ".join(DIMS) + " | STS-B @64 |",
        "| --- | " + " | ".join("---:" for _ in DIMS) + " | ---: |",
    ]
    for name, label in RECIPE_ROWS.items():
        keys = ("runs", name)
        cells = [
            f.num(".4f", *keys, "ndcg@10", "raw", d)
            + ("" if d == "full" else " / " + f.num(".4f", *keys, "ndcg@10", "rotated", d))
            for d in DIMS
        ]
        sts = " / ".join(f.num(".2f", *keys, "sts_spearman", kind, "64") for kind in ("raw", "rotated"))
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {sts} |")
    return "\n".join(rows)


def verdict(path: Path = RESULTS / "train_scifact.json") -> str:
    """Over seeds: the recipe's smallest margin over the control's rotated prefix against the seed-to-seed spread."""
    f = Figures(path)
    rows = [
        "| cell | smallest margin over seeds | seed-to-seed spread | above the spread |",
        "| --- | ---: | ---: | --- |",
    ]
    for cell, v in f.data["verdict"].items():
        if isinstance(v, dict):
            rows.append(
                f"| {cell.replace('_', ' ')} | {f.num('+.4f', 'verdict', cell, 'min_margin')} | "
                f"{f.num('.4f', 'verdict', cell, 'spread')} | {'yes' if v['claimed'] else 'no'} |"
            )
    return "\n".join(rows)


def criteria(path: Path = RESULTS / "train_scifact.json") -> str:
    """Per seed: the recipe's margins over the control's rotated prefix, full width and STS-B."""
    f = Figures(path)
    rows = [
        "| seed | 32 raw | 32 rotated | 64 raw | 64 rotated | 128 raw | 256 raw | full | STS-B @64 rotated |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    cells = (("raw", "32"), ("rotated", "32"), ("raw", "64"), ("rotated", "64"), ("raw", "128"), ("raw", "256"))
    for name in f.data["criteria"]:
        keys = ("criteria", name)
        margins = [f.num("+.4f", *keys, "margin_over_control_rotated", kind, d) for kind, d in cells]
        rows.append(
            f"| {f.data['runs'][name]['seed']} | "
            + " | ".join(margins)
            + f" | {f.num('+.4f', *keys, 'full_minus_control_full')} | "
            + f"{f.num('+.2f', *keys, 'sts64_minus_control_rotated', 'rotated')} |"
        )
    return "\n".join(rows)


# ---- beyond RAM, filters, encoding --------------------------------------------------------------------------------
def limited(path: Path = RESULTS / "out_of_core-limited.json", target: float = 0.95) -> str:
    """Search in a memory cgroup: per size, the fastest point at recall@10 >= ``target``."""
    f = Figures(path)
    rows = [
        "| vectors | full float32 | memory limit | k', nprobe | recall@10 | QPS | p99 ms | index RAM / full vectors |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for n, size in f.data["sizes"].items():
        good = [(i, p) for i, p in enumerate(size["search"]) if p.get("completed") and p["recall@10"] >= target]
        if not good:
            rows.append(f"| {int(n):,} | | | | never reached {target} | | | |")
            continue
        i, p = max(good, key=lambda ip: ip[1]["qps_single"])
        keys = ("sizes", n, "search", i)
        rows.append(
            f"| {f.num(',.0f', 'sizes', n, 'n')} | {f.num(',.0f', 'sizes', n, 'full_float32_mb')} MB | "
            f"{f.num(',.1f', 'sizes', n, 'memory_limit_mb')} MB | {p['shortlist']}, {p['ann_search']} | "
            f"{f.num('.4f', *keys, 'recall@10')} | {f.num(',.0f', *keys, 'qps_single')} | "
            f"{f.num('.2f', *keys, 'p99_ms')} | {f.num('.3f', *keys, 'index_ram_over_full_float32')} |"
        )
    return "\n".join(rows)


def cold(path: Path = RESULTS / "out_of_core-cold-1m.json", target: float = 0.95) -> str:
    """Read cold from disk: per size and system, the fastest point at recall@10 >= ``target`` (else its best)."""
    f = Figures(path)
    rows = [
        "| vectors | system | setting | recall@10 | QPS | p99 ms | disk kB / query | reads / query | hot RAM |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, entry in f.data["sizes"].items():
        label = {i: p["system"] + (f" ({p['io']})" if "io" in p else "") for i, p in enumerate(entry["points"])}
        for system in dict.fromkeys(label.values()):
            mine = [(i, entry["points"][i]) for i, s in label.items() if s == system]
            good = [ip for ip in mine if ip[1]["recall@10"] >= target]
            i, p = (
                max(good, key=lambda ip: ip[1]["qps_single"]) if good else max(mine, key=lambda ip: ip[1]["recall@10"])
            )
            keys = ("sizes", n, "points", i)
            setting = ", ".join(
                f"{k} {p[k]}" for k in ("shortlist", "efSearch", "complexity", "refine_factor") if k in p
            )
            # RAM from what the system holds by construction (mrl's stats, DiskANN's PQ files)
            held = "hot_bytes_files" if p["system"] != "mrl" else "hot_bytes"
            ram = f.num(",.1f", *keys, held, unit=" MiB") if p.get(held) else "-"
            rows.append(
                f"| {int(n):,} | {system} | {setting} | {f.num('.4f', *keys, 'recall@10')} | "
                f"{f.num(',.0f', *keys, 'qps_single')} | {f.num('.2f', *keys, 'p99_ms')} | "
                f"{f.num(',.1f', *keys, 'disk_kb_per_query')} | "
                f"{f.num(',.1f', *keys, 'disk_reads_per_query')} | {ram} |"
            )
    return "\n".join(rows)


def filtered(path: Path) -> str:
    """Each filter and system at the run's target recall on held-out queries, with mrl's ratio to each peer."""
    f = Figures(path)
    rows = [
        "| filter | matches | system | setting | recall@10 | QPS one at a time | QPS in batches | mrl / system, "
        "one at a time |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in f.data["summary"].items():
        share = f.num(".1f", "summary", name, "selectivity", unit="%")
        for system in ("mrl", "qdrant-edge", "faiss-hnsw"):
            p = entry.get(system)
            if p is None:
                continue
            keys = ("summary", name, system)
            if not p["reached"]:
                best = f.num(".4f", *keys, "best_tuning_recall")
                why = f"never reached the target (best {best} on the tuning claims)"
                rows.append(f"| {name} | {share} | {system} | {why} | | | | |")
                continue
            ratio = f"qps_single_ratio_vs_{system}"
            rows.append(
                f"| {name} | {share} | {system} | {setting_of(p)} | {f.num('.4f', *keys, 'recall@10')} | "
                f"{f.num(',.0f', *keys, 'qps_single')} | {f.num(',.0f', *keys, 'qps_batch')} | "
                + (f.num(".2f", "summary", name, ratio, unit="x") if ratio in entry else "")
                + " |"
            )
    return "\n".join(rows)


def adaptive(path: Path) -> str:
    """Per target recall: the fixed two-pass search and adaptive width on the held-out claims, with what each read."""
    f = Figures(path)
    rows = [
        "| target | search | recall@10 | nDCG@10 | QPS one at a time | QPS in batches | queries widened | mean dims | "
        "rerank bytes / query | bytes vs fixed |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, point in enumerate(f.data["points"]):
        target = f.num(".2f", "points", i, "target")
        for name in ("fixed", "adaptive"):
            if name not in point:
                rows.append(f"| {target} | {name} | not calibrated: {point['calibration']['reason']} | | | | | | | |")
                continue
            keys = ("points", i, name)
            ndcg = f.num(".4f", *keys, "ndcg@10") if point[name]["ndcg@10"] is not None else "-"
            widened = f.num(".0f", *keys, "widened_share", unit="%") if name == "adaptive" else "all"
            ratio = f.num(".2f", "points", i, "rerank_bytes_ratio_vs_fixed", unit="x") if name == "adaptive" else "1"
            rows.append(
                f"| {target} | {name} | {f.num('.4f', *keys, 'recall@10')} | {ndcg} | "
                f"{f.num(',.0f', *keys, 'qps_single')} | {f.num(',.0f', *keys, 'qps_batch')} | {widened} | "
                f"{f.num('.0f', *keys, 'mean_dims')} | {f.num(',.0f', *keys, 'rerank_bytes')} | {ratio} |"
            )
    return "\n".join(rows)


def encoding(path: Path = RESULTS / "encode_speed.json") -> str:
    """Texts a second per runtime, its speed-up over torch, and what it changes in nDCG@10."""
    f = Figures(path)
    rows = [
        "| runtime | SciFact abstracts / s | speed-up | STS-B sentences / s | speed-up | nDCG@10 at 128 dims | "
        "change |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in f.data["backends"]:
        keys = ("backends", name)
        rows.append(
            f"| {name} | {f.num(',.1f', *keys, 'scifact_abstracts_per_s')} | "
            f"{f.num('.2f', *keys, 'speedup', 'scifact_abstracts', unit='x')} | "
            f"{f.num(',.0f', *keys, 'sts_sentences_per_s')} | "
            f"{f.num('.2f', *keys, 'speedup', 'sts_sentences', unit='x')} | {f.num('.4f', *keys, 'ndcg@10', '128')} | "
            f"{f.num('+.4f', *keys, 'ndcg@10_minus_torch', '128')} |"
        )
    return "\n".join(rows)


def backends(path: Path = RESULTS / "backends-100000-p128.json") -> str:
    """The same vectors and queries on each backend: recall@10 / QPS one at a time, per shortlist k'."""
    f = Figures(path)
    names = list(dict.fromkeys(p["backend"] for p in f.data["points"]))
    rows = ["| k' | " + " | ".join(names) + " |", "| ---: | " + " | ".join("---:" for _ in names) + " |"]
    by_k: dict[int, dict[str, int]] = {}
    for i, p in enumerate(f.data["points"]):
        by_k.setdefault(p["shortlist"], {})[p["backend"]] = i
    for k, where in by_k.items():
        cells = [
            f"{f.num('.4f', 'points', where[n], 'recall@10')} / {f.num(',.0f', 'points', where[n], 'qps_single')}"
            if n in where
            else ""
            for n in names
        ]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def serving(path: Path = RESULTS / "serve_load.json") -> str:
    """Concurrent clients against ``mrl serve``: requests, QPS and latency per endpoint."""
    f = Figures(path)
    rows = ["| endpoint | requests | QPS | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in f.data["endpoints"]:
        keys = ("endpoints", name)
        rows.append(
            f"| `{name}` | {f.num(',.0f', *keys, 'requests')} | {f.num(',.1f', *keys, 'qps')} | "
            f"{f.num(',.0f', *keys, 'p50_ms')} | {f.num(',.0f', *keys, 'p99_ms')} |"
        )
    return "\n".join(rows)


ADAPTORS = {"scifact": "in-domain (SciFact train)", "scifact-full": "in-domain, full width only", "nli": "NLI triplets"}


def adaptors(base: str) -> str:
    """An adaptor on a frozen ``base`` (minilm, mpnet) against that model: nDCG@10 on SciFact test per dim, raw /
    rotated, for each training set measured (adaptor_quality.py)."""
    found = [(k, RESULTS / f"adaptor_quality-{base}-{k}.json") for k in ADAPTORS]
    found = [(k, p) for k, p in found if p.exists()]
    first = Figures(found[0][1])
    dims = sorted(first.data["models"]["frozen"]["raw"], key=lambda d: (d == "full", int(d) if d != "full" else 0))
    rows = ["| model | " + " | ".join(dims) + " |", "| --- | " + " | ".join("---:" for _ in dims) + " |"]

    def cells(f: Figures, model: str) -> str:
        keys = ("models", model)
        return " | ".join(
            f.num(".4f", *keys, "raw", d, "ndcg@10")
            + ("" if d == "full" else " / " + f.num(".4f", *keys, "rotated", d, "ndcg@10"))
            for d in dims
        )

    rows.append(f"| frozen {base} | {cells(first, 'frozen')} |")
    for kind, path in found:
        rows.append(f"| adaptor, {ADAPTORS[kind]} | {cells(Figures(path), 'adaptor')} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[..., str]] = {
    "lead": lead,
    "peers": peers,
    "systems": systems,
    "widths": widths,
    "filtered": filtered,
    "adaptive": adaptive,
}
BASES = {"adaptors-minilm": "minilm", "adaptors-mpnet": "mpnet"}
FIXED: dict[str, tuple[Callable[..., str], Path | None]] = {
    "runs": (runs, None),
    "recipes": (recipes, RESULTS / "train_scifact.json"),
    "verdict": (verdict, RESULTS / "train_scifact.json"),
    "criteria": (criteria, RESULTS / "train_scifact.json"),
    "limited": (limited, RESULTS / "out_of_core-limited.json"),
    "cold": (cold, RESULTS / "out_of_core-cold-1m.json"),
    "encoding": (encoding, RESULTS / "encode_speed.json"),
    "backends": (backends, RESULTS / "backends-100000-p128.json"),
    "serving": (serving, RESULTS / "serve_load.json"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=(*TABLES, *FIXED, *BASES))
    ap.add_argument(
        "--file", type=Path, help="the result file (needed by lead, peers, systems, widths, filtered, adaptive)"
    )
    ap.add_argument("--source", action="store_true", help="also print the command, CPU and file under the table")
    args = ap.parse_args()
    if args.table in BASES:
        print(adaptors(BASES[args.table]))
        return
    if args.table in TABLES:
        if args.file is None:
            ap.error(f"{args.table} needs --file benchmarks/results/....json")
        path: Path | None = args.file.resolve()
        print(TABLES[args.table](path))
    else:
        table, default = FIXED[args.table]
        path = args.file.resolve() if args.file else default
        print(table(path) if path else table())
    if args.source and path is not None:
        print("\n" + source(Figures(path)))


if __name__ == "__main__":
    main()
