"""The model card of a trained folder: sentence-transformers' own card plus what a Matryoshka user needs.

Why: a model published without its per-dim quality forces every user to re-measure which truncation is
safe. ``mrl train`` appends to the card sentence-transformers writes (its README.md) a section with the
trained dims, the dev nDCG@10 of each prefix raw and rotated (the rotation any index can apply for free),
bytes per vector, the base model, the data fingerprint, and a recommended ``truncate_dim``: the smallest
trained dim whose raw prefix keeps at least :data:`KEEP` of the full width's dev nDCG@10. Writing it again
replaces the section, so the card always matches ``mrl.json``.

Example::

    from mrl.model.card import write_model_card
    write_model_card("models/my-mrl")           # reads models/my-mrl/mrl.json, updates README.md
"""

from __future__ import annotations

import json
from pathlib import Path

from mrl.model.load import METADATA_FILE

BEGIN, END = "<!-- mrl:begin -->", "<!-- mrl:end -->"
KEEP = 0.95  # share of the full width's dev nDCG@10 a recommended truncate_dim keeps


def recommended_dim(per_dim: dict[int, float]) -> int | None:
    """The smallest dim keeping :data:`KEEP` of the widest dim's nDCG@10 (None without measurements)."""
    if not per_dim:
        return None
    full = per_dim[max(per_dim)]
    return min(d for d, v in per_dim.items() if v >= KEEP * full)


def card_section(meta: dict) -> str:
    """The Markdown section for a folder's ``mrl.json`` metadata."""
    final = meta.get("final_dev_metrics") or {}
    dims = sorted(meta.get("trained_dims") or [], reverse=True)
    raw = {d: final[f"dev_dim{d}_ndcg@10"] for d in dims if f"dev_dim{d}_ndcg@10" in final}
    rotated = {d: final[f"dev_dim{d}_rotated_ndcg@10"] for d in dims if f"dev_dim{d}_rotated_ndcg@10" in final}
    best = recommended_dim(raw)
    lines = [
        BEGIN,
        "## Matryoshka dims (mrl)",
        "",
        f"- Base model: `{meta.get('base_model')}`",
        f"- Matryoshka dims: {meta.get('matryoshka_dims') or 'none (a plain fine-tune)'}",
        f"- Training data fingerprint: `{meta.get('data_fingerprint')}` "
        f"({meta.get('examples', {}).get('triplets', 0)} triplets, {meta.get('examples', {}).get('pairs', 0)} pairs)",
    ]
    if meta.get("rotation"):
        lines.append(
            f"- Trained from its base with the corpus rotation appended (fitted on "
            f"{meta['rotation']['fitted_on_vectors']} vectors): the raw prefix is already the rotated one"
        )
    if best is not None:
        lines += [
            f"- Recommended `truncate_dim`: **{best}** (the smallest trained dim keeping {KEEP:.0%} of the full "
            "width's dev nDCG@10)",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            f'model = SentenceTransformer("<this model>", truncate_dim={best})',
            "```",
            "",
            "| dims | dev nDCG@10, raw prefix | dev nDCG@10, rotated prefix | bytes / vector (float32) | (int8) |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for d in dims:
            if d in raw:
                rot = f"{rotated[d]:.4f}" if d in rotated else "-"
                lines.append(f"| {d} | {raw[d]:.4f} | {rot} | {4 * d} | {d} |")
        lines += [
            "",
            "Rotated: the prefix of the vectors rotated by the eigenvectors of the dev corpus's second moment "
            "(what mrl's index stores), which needs no training. Measured on the dev split carved from the "
            "training queries.",
        ]
    else:
        lines.append("- No dev evaluation was run (train with `--dev-beir` to measure each dim).")
    lines.append(END)
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> Path:
    """Add (or replace) the mrl section of ``folder/README.md`` from ``folder/mrl.json``; returns the card's path."""
    folder = Path(folder)
    meta = json.loads((folder / METADATA_FILE).read_text())
    card = folder / "README.md"
    text = card.read_text() if card.is_file() else f"# {folder.name}\n\nA sentence-transformers model.\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)].rstrip() + "\n\n" + text[text.index(END) + len(END) :].lstrip()
    card.write_text(text.rstrip() + "\n\n" + card_section(meta) + "\n")
    return card
