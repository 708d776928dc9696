"""Documents to index: id, text and free-form metadata, from JSONL/CSV/TSV/Parquet.

Accepts BEIR corpus rows (``_id``, ``title``, ``text``, ``metadata``) and plain rows (``id``,
``text``); other columns become metadata. Duplicate ids are an error: an index with two vectors
for one id would return the same document twice.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrl.data.records import has_no_text, read_rows, text_field
from mrl.data.skipped import EMPTY_HINT, DocumentList, SkippedDocument
from mrl.errors import DataError


@dataclass
class Document:
    """One document to index. Its metadata must be what JSON holds: dates and datetimes become ISO 8601 text
    (a datetime without a zone is taken as UTC), numpy numbers plain numbers, tuples lists; anything else is
    refused with the field it sits in, before anything is written."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metadata:
            self.metadata = {str(k): json_value(v, self.id, str(k)) for k, v in self.metadata.items()}


def json_value(value, doc_id: str, where: str):
    """``value`` as JSON holds it (see :class:`Document`), or a clear error naming the document and the field."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"document '{doc_id}': metadata field '{where}' is {value}, which JSON cannot hold")
        return value
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return json_value(value.item(), doc_id, where)
    if isinstance(value, list | tuple):
        return [json_value(v, doc_id, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): json_value(v, doc_id, f"{where}.{k}") for k, v in value.items()}
    raise DataError(
        f"document '{doc_id}': metadata field '{where}' holds a {type(value).__name__}, which JSON cannot hold "
        "(use text, numbers, true/false, lists, objects, or dates)"
    )


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
