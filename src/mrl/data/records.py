"""Row readers for JSONL, CSV/TSV and Parquet that remember where each row came from.

Every reader yields ``(line, row)`` where ``line`` is the 1-based line in the file (for Parquet, the
1-based row number), so that validation further up can point at the exact place of a bad value.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrl.errors import DataError

TABULAR_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield each non-blank line of a JSON Lines file as a dict."""
    path = Path(path)
    _check_exists(path)
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path, line_no) from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"bad JSON: {exc.msg} (column {exc.colno})", path, line_no) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", path, line_no)
            yield line_no, row


def read_delimited(path: str | Path, delimiter: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield the rows of a CSV or TSV file with a header line; TSV is chosen by suffix unless given."""
    path = Path(path)
    _check_exists(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            for row in reader:
                line_no = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"has {len(row)} columns, the header has {len(header)}", path, line_no)
                yield line_no, dict(zip(header, row, strict=True))
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path) from None
    except csv.Error as exc:
        raise DataError(f"bad CSV: {exc}", path) from None


def read_parquet(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield the rows of a Parquet file; the 'line' is the 1-based row number."""
    import pyarrow.parquet as pq

    path = Path(path)
    _check_exists(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise DataError(f"not a readable Parquet file ({exc})", path) from None
    yield from enumerate(table.to_pylist(), start=1)


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Pick the reader by file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return read_delimited(path)
    if suffix == ".parquet":
        return read_parquet(path)
    raise DataError(f"unknown file type '{suffix}', expected one of {', '.join(TABULAR_SUFFIXES)}", path)


def has_no_text(row: dict[str, Any], field: str = "text") -> bool:
    """No title and a blank ``field``: a document with nothing to embed (a missing or non-text field is an error)."""
    value = row.get(field)
    return not str(row.get("title") or "").strip() and isinstance(value, str) and not value.strip()


def text_field(
    row: dict[str, Any], field: str, path: str | Path, line: int, allow_empty: bool = False, empty: str = "is empty"
) -> str:
    """Return ``row[field]`` as a stripped-checked string, or raise naming file, line and field.

    ``empty`` is the message for a blank value (callers that can skip such rows say how).
    """
    if field not in row:
        raise DataError(f"missing column (row has: {', '.join(map(str, row)) or 'nothing'})", path, line, field)
    value = row[field]
    if value is None:
        raise DataError("is null", path, line, field)
    if not isinstance(value, str):
        raise DataError(f"expected text, got {type(value).__name__}", path, line, field)
    if not allow_empty and not value.strip():
        raise DataError(empty, path, line, field)
    return value
