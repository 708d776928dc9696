"""STS-benchmark files: tab-separated, no header, no quoting (quotes inside sentences are literal)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrl.errors import DataError

MIN_COLUMNS = 7  # genre, file, year, id, score, sentence1, sentence2 [, sources...]


@dataclass
class StsData:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def load_sts(path: str | Path) -> StsData:
    """Read an STS-B ``sts-*.csv`` file; scores must lie in [0, 5]."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path, line_no) from None
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < MIN_COLUMNS:
                raise DataError(f"has {len(cols)} tab-separated columns, expected at least 7", path, line_no)
            try:
                score = float(cols[4])
            except ValueError:
                raise DataError(f"'{cols[4]}' is not a number", path, line_no, "score") from None
            if not 0.0 <= score <= 5.0:
                raise DataError(f"{score} is outside [0, 5]", path, line_no, "score")
            for field, text in (("sentence1", cols[5]), ("sentence2", cols[6])):
                if not text.strip():
                    raise DataError("is empty", path, line_no, field)
            s1.append(cols[5])
            s2.append(cols[6])
            scores.append(score)
    if not scores:
        raise DataError("no sentence pairs found", path)
    return StsData(s1, s2, scores)
