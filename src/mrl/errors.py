"""Errors that carry where a problem is, so a user can fix their file without reading a traceback."""

from __future__ import annotations

from pathlib import Path


class MrlError(Exception):
    """Any problem caused by the user's input or environment; the CLI prints it as one line, exit code 2."""


class DataError(MrlError):
    """A problem in an input file, located by file, line (1-based; row for Parquet) and field."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = []
        if self.path:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class Unavailable(MrlError):
    """A part that must answer does not (a shard with no live replica): the server answers 503, never a partial
    result passed off as whole."""
