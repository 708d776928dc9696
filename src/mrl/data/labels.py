"""Labelled examples for classification: one text and a label per row, or a pair of texts and a label.

A pair row is what NLI data holds (premise, hypothesis, entailment/neutral/contradiction); a text row is what intent,
topic or sentiment data holds. Labels are compared as strings, so ``1`` and ``"1"`` are one class. A bad row stops
the load with its file, line and field, as every mrl reader does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mrl.data.records import read_rows, text_field
from mrl.errors import DataError


@dataclass(frozen=True)
class LabelledSet:
    """Items in file order: ``texts[i]`` (and ``seconds[i]`` for pairs) labelled ``labels[i]``.

    ``where[i]`` is the item's ``(file, line)``, kept so a label unseen in training can be named where it stands.
    """

    texts: list[str]
    seconds: list[str] | None
    labels: list[str]
    where: list[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_pairs(self) -> bool:
        return self.seconds is not None

    def subset(self, rows: Sequence[int]) -> LabelledSet:
        """The items at ``rows``, in that order."""
        return LabelledSet(
            [self.texts[i] for i in rows],
            None if self.seconds is None else [self.seconds[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.where[i] for i in rows],
        )


def load_labelled(
    paths: Sequence[str | Path],
    label: str = "label",
    text: str = "text",
    pair: tuple[str, str] | None = None,
) -> LabelledSet:
    """Read labelled rows from JSONL, CSV/TSV or Parquet files, concatenated in the order given.

    ``pair`` names the two text columns of a pair row (``("premise", "hypothesis")`` for NLI); without it each row
    has one text in column ``text``. A label must be text or an integer; an empty or missing one is an error.
    """
    if not paths:
        raise DataError("no labelled files given")
    texts: list[str] = []
    seconds: list[str] | None = [] if pair else None
    labels: list[str] = []
    where: list[tuple[str, int]] = []
    for path in paths:
        before = len(labels)
        for line, row in read_rows(path):
            if pair:
                texts.append(text_field(row, pair[0], path, line))
                seconds.append(text_field(row, pair[1], path, line))
            else:
                texts.append(text_field(row, text, path, line))
            labels.append(_label(row, label, path, line))
            where.append((str(path), line))
        if len(labels) == before:
            raise DataError("no labelled rows found", path)
    return LabelledSet(texts, seconds, labels, where)


def _label(row: dict, field: str, path: str | Path, line: int) -> str:
    if field not in row:
        raise DataError(f"missing column (row has: {', '.join(map(str, row)) or 'nothing'})", path, line, field)
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"expected a text or integer label, got {type(value).__name__}", path, line, field)
    value = str(value).strip()
    if not value:
        raise DataError("is empty", path, line, field)
    return value
