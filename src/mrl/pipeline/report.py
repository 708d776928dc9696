"""The ``mrl run`` report: ``report.md`` with tables and three PNG plots beside it."""

from __future__ import annotations

from pathlib import Path

from mrl.eval.tables import plot_quality


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_at(ev: dict, dim: str, exclude: str | None = None) -> tuple[str, str, float] | None:
    """The (model, "raw" | "rotated", nDCG@10) with the highest nDCG@10 at ``dim``, leaving out model ``exclude``."""
    views = [(name, "raw", dims) for name, dims in ev["models"].items()]
    views += [(name, "rotated", dims) for name, dims in ev.get("rotated", {}).items()]
    scored = [(name, view, dims[dim]["ndcg@10"]) for name, view, dims in views if dim in dims and name != exclude]
    return max(scored, key=lambda x: x[2]) if scored else None


def best_sentence(ev: dict, dim: str) -> str:
    """One sentence naming the best vectors at ``dim`` and their margin over the best of the other models."""
    best = best_at(ev, dim)
    if best is None:
        return ""
    name, view, value = best
    said = f"At {dim} dims the best vectors are the {name} model's {view} prefix (nDCG@10 {value:.4f})"
    rival = best_at(ev, dim, exclude=name)
    if rival is None:
        return said + "."
    return f"{said}, {value - rival[2]:+.4f} against the best other, the {rival[0]} model's {rival[1]} prefix."


def write_report(report: dict, out: Path) -> Path:
    ev = report["eval"]
    quality = {
        "dataset": ev["dataset"],
        "split": ev["split"],
        "models": [
            {"model": name, "dims": dims, "rotated": ev.get("rotated", {}).get(name)}
            for name, dims in ev["models"].items()
        ],
    }
    plot_quality(quality, out / "ndcg_by_dim.png")
    _plot_recall_qps(report["index"], out / "recall_vs_qps.png")
    _plot_bytes(ev, out / "bytes_vs_quality.png")

    dims = list(next(iter(ev["models"].values())))
    lines = [
        f"# mrl run: {report['name']}",
        "",
        f"{ev['dataset']} {ev['split']}, {ev['documents']} documents. Models: "
        + ", ".join(f"{k} = `{v}`" for k, v in report["models"].items()),
        "",
        *(
            [
                f"{len(ev['skipped_documents'])} documents without text were left out (`skip_empty`); "
                f"{len(ev['judgements_on_skipped'])} judgements name them and count as not found.",
                "",
            ]
            if ev.get("skipped_documents")
            else []
        ),
        "## nDCG@10 by dims",
        "",
        "| model | " + " | ".join(dims) + " |",
        "|---|" + "---:|" * len(dims),
    ]
    rows = [(name, per_dim) for name, per_dim in ev["models"].items()]
    rows += [(f"{name} (rotated)", per_dim) for name, per_dim in ev.get("rotated", {}).items()]
    for name, per_dim in rows:
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{m['ndcg@10']:.4f} ({m['retained_ndcg@10']:.0f}%)"
                if m.get("retained_ndcg@10")
                else f"{m['ndcg@10']:.4f}"
                for m in per_dim.values()
            )
            + " |"
        )
    if "control" in ev["models"] and "matryoshka" in ev["models"]:
        gains = [ev["models"]["matryoshka"][d]["ndcg@10"] - ev["models"]["control"][d]["ndcg@10"] for d in dims]
        lines.append("| matryoshka - control | " + " | ".join(f"{g:+.4f}" for g in gains) + " |")
    if "control" in ev.get("rotated", {}) and "matryoshka" in ev["models"]:
        ctrl = ev["rotated"]["control"]
        gains = [ev["models"]["matryoshka"][d]["ndcg@10"] - ctrl[d]["ndcg@10"] for d in dims]
        lines.append("| matryoshka - control (rotated) | " + " | ".join(f"{g:+.4f}" for g in gains) + " |")
    lines += [
        "",
        "(percent: of the same model's full-dim nDCG@10; rotated: prefixes of the vectors in the rotation "
        "mrl's index fits to this corpus, which needs no training. The full-dim column is the same either way.)",
        "",
        best_sentence(ev, "64" if "64" in dims else str(report["index"]["prefix_dim"])),
        "",
        "![nDCG@10 by dims](ndcg_by_dim.png)",
        "![bytes per vector against quality](bytes_vs_quality.png)",
        "",
    ]
    ix = report["index"]
    t = ix["tuned"]
    lines += [
        "## Two-pass index (matryoshka model)",
        "",
        f"{ix['documents']} documents, first pass {ix['ann']}{' on the rotated vectors' if ix.get('rotated') else ''}"
        f"; tuned on training queries for recall@10 {t.get('target_recall', '-')}: {t.get('choice', t)}. As tuned "
        f"it answers {ix['tuned_qps_single']:.0f} queries a second one at a time, "
        f"{ix['tuned_qps_single'] / ix['exact_full_qps_single']:.1f}x an exact scan of the full vectors.",
        "",
        f"nDCG@10 two-pass {ix['ndcg@10_two_pass']:.4f} vs exact full-dim {ix['ndcg@10_exact_full']:.4f} "
        f"({100 * ix['ndcg@10_two_pass'] / ix['ndcg@10_exact_full']:.2f}%). "
        f"ANN in RAM: {ix['ram_bytes'] / 1024:.0f} KiB; full vectors memory-mapped: "
        f"{ix['vector_bytes'] / 1024:.0f} KiB.",
        "",
        f"Two-pass at the {ix['prefix_dim']}-dim prefix, by shortlist:",
        "",
        "| shortlist k' | recall@10 vs exact | single-query QPS | x exact full-dim |",
        "|---:|---:|---:|---:|",
    ]
    for p in ix["points"]:
        lines.append(
            f"| {p['shortlist']} | {p['recall@10']:.4f} | {p['qps_single']:.0f} | "
            f"{p['qps_single'] / ix['exact_full_qps_single']:.1f} |"
        )
    lines += [
        f"| exact full-dim (numpy) | 1.0000 | {ix['exact_full_qps_single']:.0f} | 1.0 |",
        "",
        "![recall against QPS](recall_vs_qps.png)",
        "",
        "## Stage times (s)",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in report["stage_seconds"].items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plot_recall_qps(ix: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts = sorted(ix["points"], key=lambda p: p["shortlist"])
    ax.plot(
        [p["recall@10"] for p in pts],
        [p["qps_single"] for p in pts],
        marker="o",
        label=f"two-pass (prefix {ix['prefix_dim']})",
    )
    for p in pts:
        ax.annotate(f"k'={p['shortlist']}", (p["recall@10"], p["qps_single"]), fontsize=7)
    ax.scatter([1.0], [ix["exact_full_qps_single"]], color="red", label="exact full-dim", zorder=3)
    ax.set_yscale("log")
    _finish(plt, fig, ax, path, "recall@10 vs exact full-dim", "single-query QPS (log)")


def _plot_bytes(ev: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, per_dim in ev["models"].items():
        pts = sorted((m["bytes_per_vector"], m["ndcg@10"]) for m in per_dim.values())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    _finish(plt, fig, ax, path, "bytes per vector (float32 prefix)", "nDCG@10")


def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
