"""Training examples: (anchor, positive, negative) triplets and (anchor, positive) pairs.

Column names are configurable because every dataset names them differently (query/pos/neg,
premise/hypothesis, ...). A bad row stops the load with its file, line and field: training on a
silently shortened file is worse than not training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrl.data.records import read_rows, text_field
from mrl.errors import DataError

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Triplet:
    anchor: str
    positive: str
    negative: str


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str


def load_triplets(
    path: str | Path,
    anchor: str = "anchor",
    positive: str = "positive",
    negative: str = "negative",
) -> list[Triplet]:
    """Load triplets from JSONL, CSV/TSV, Parquet, or ``hf:<dataset>[:<subset>][@split]``.

    A positive equal to its negative is an error: it teaches the model nothing and usually means
    a column mix-up.
    """
    out: list[Triplet] = []
    for line, row, source in _rows(path):
        a = text_field(row, anchor, source, line)
        p = text_field(row, positive, source, line)
        n = text_field(row, negative, source, line)
        if p.strip() == n.strip():
            raise DataError("positive and negative are the same text", source, line, negative)
        out.append(Triplet(a, p, n))
    if not out:
        raise DataError("no triplets found", path)
    return out


def load_pairs(path: str | Path, anchor: str = "anchor", positive: str = "positive") -> list[Pair]:
    """Load (anchor, positive) pairs from the same formats as :func:`load_triplets`."""
    out = [
        Pair(text_field(row, anchor, source, line), text_field(row, positive, source, line))
        for line, row, source in _rows(path)
    ]
    if not out:
        raise DataError("no pairs found", path)
    return out


def _rows(path: str | Path):
    spec = str(path)
    if spec.startswith(HF_PREFIX):
        for i, row in enumerate(load_hf_rows(spec[len(HF_PREFIX) :]), start=1):
            yield i, row, spec
    else:
        for line, row in read_rows(path):
            yield line, row, path


def load_hf_rows(spec: str) -> list[dict]:
    """Rows of a Hugging Face dataset named ``name[:subset][@split]`` (needs a network or the HF cache)."""
    from datasets import load_dataset

    name, _, split = spec.partition("@")
    name, _, subset = name.partition(":")
    try:
        ds = load_dataset(name, subset or None, split=split or "train")
    except Exception as exc:  # network errors, unknown names, missing splits: all the user's to fix
        raise DataError(f"could not load Hugging Face dataset: {exc}", HF_PREFIX + spec) from None
    return list(ds)
