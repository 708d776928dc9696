"""Documents to index: id, text and free-form metadata, from JSONL/CSV/TSV/Parquet.

Accepts BEIR corpus rows (``_id``, ``title``, ``text``, ``metadata``) and plain rows (``id``,
``text``); other columns become metadata. Duplicate ids are an error: an index with two vectors
for one id would return the same document twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrl.data.records import has_no_text, read_rows, text_field
from mrl.data.skipped import EMPTY_HINT, DocumentList, SkippedDocument
from mrl.errors import DataError


@dataclass
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_documents(
    path: str | Path, id_field: str | None = None, text_field_name: str = "text", skip_empty: bool = False
) -> DocumentList:
    """Read documents; ``id_field`` defaults to ``_id`` if present in the first row, else ``id``.

    A document with no text at all (no title, empty text) stops the load, unless ``skip_empty``: then it is
    left out and recorded in the result's ``skipped``.
    """
    docs = DocumentList()
    seen: dict[str, int] = {}
    for line, row in read_rows(path):
        key = id_field or ("_id" if "_id" in row else "id")
        raw_id = row.get(key)
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise DataError("missing or empty document id", path, line, key)
        if raw_id in seen:
            raise DataError(f"duplicate id '{raw_id}' (first on line {seen[raw_id]})", path, line, key)
        seen[raw_id] = line
        title = row.get("title") or ""
        if skip_empty and has_no_text(row, text_field_name):
            docs.skipped.append(SkippedDocument(str(path), line, raw_id))
            continue
        body = text_field(row, text_field_name, path, line, allow_empty=bool(str(title).strip()), empty=EMPTY_HINT)
        text = f"{title} {body}".strip() if title else body
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        extra = {k: v for k, v in row.items() if k not in (key, "title", text_field_name, "metadata")}
        try:
            json.dumps(extra)
        except TypeError:
            raise DataError("metadata values must be JSON-serialisable", path, line) from None
        docs.append(Document(raw_id, text, {**meta, **extra}))
    if not docs:
        raise DataError("no documents found" + (" with text" if docs.skipped else ""), path)
    return docs
