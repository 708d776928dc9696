"""Document ids, text and metadata in SQLite, addressed by vector row number.

Rows are only ever appended. A row is visible when it is below the live manifest's row count and not
tombstoned, so rows written by a writer that crashed before its commit stay invisible and are
removed by the next writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from mrl.data import Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL, text TEXT, metadata TEXT);
CREATE INDEX IF NOT EXISTS docs_id ON docs(id);
"""


class DocStore:
    def __init__(self, path: Path):
        self.path = path
        self.conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")  # readers keep reading while a writer appends
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()  # one connection shared by a server's threads: serialize its use

    def append(self, first_row: int, docs: Sequence[Document]) -> None:
        """Insert rows ``first_row..`` in one transaction, first dropping uncommitted leftovers."""
        with self.lock, self.conn:
            self.conn.execute("DELETE FROM docs WHERE row >= ?", (first_row,))
            self.conn.executemany(
                "INSERT INTO docs(row, id, text, metadata) VALUES (?, ?, ?, ?)",
                ((first_row + i, d.id, d.text, json.dumps(d.metadata)) for i, d in enumerate(docs)),  # streamed
            )

    def rows_for_ids(self, ids: list[str], below: int) -> dict[str, list[int]]:
        """Every committed row of each id (the caller filters tombstones)."""
        out: dict[str, list[int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self.lock:
                found = self.conn.execute(
                    f"SELECT row, id FROM docs WHERE id IN ({marks}) AND row < ?", (*chunk, below)
                ).fetchall()
            for row, doc_id in found:
                out.setdefault(doc_id, []).append(row)
        return out

    def fetch(self, rows: list[int]) -> dict[int, tuple[str, str, dict]]:
        """``{row: (id, text, metadata)}`` for the given rows."""
        out: dict[int, tuple[str, str, dict]] = {}
        for start in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            with self.lock:
                found = self.conn.execute(
                    f"SELECT row, id, text, metadata FROM docs WHERE row IN ({marks})", chunk
                ).fetchall()
            for row, doc_id, text, meta in found:
                out[row] = (doc_id, text, json.loads(meta) if meta else {})
        return out

    def metadata(self, start: int, stop: int) -> Iterator[dict]:
        """The metadata of rows ``start .. stop - 1``, in row order (read in pages: the payload index's build)."""
        for first in range(start, stop, 10_000):
            last = min(first + 10_000, stop)
            with self.lock:
                found = dict(
                    self.conn.execute("SELECT row, metadata FROM docs WHERE row >= ? AND row < ?", (first, last))
                )
            for row in range(first, last):
                meta = found.get(row)
                yield json.loads(meta) if meta else {}

    def close(self) -> None:
        self.conn.close()
