"""Query files: the texts (or vectors) a user tunes an index on.

A query file is JSONL, CSV or Parquet with a text column (a BEIR ``queries.jsonl`` is one), or a ``.npy`` matrix of
query vectors, one row a query. Why vectors too: a team that logs query embeddings rather than texts can tune on
what its users really asked without encoding anything again.

Example::

    from mrl.data.queries import load_queries

    texts = load_queries("../shared/data/scifact/queries.jsonl")     # a list of str
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrl.data.records import read_rows, text_field
from mrl.errors import DataError


def load_queries(path: str | Path, field: str = "text") -> list[str] | np.ndarray:
    """The texts of a query file, or the rows of a ``.npy`` file of vectors; refuses an empty or malformed file.

    Every error names the file, and for a text file the line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    if path.suffix.lower() == ".npy":
        try:
            vectors = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"not a readable .npy matrix ({exc})", path) from None
        if vectors.ndim != 2 or not vectors.shape[0] or not np.issubdtype(vectors.dtype, np.number):
            raise DataError(f"expected a 2-d numeric matrix of query vectors, got shape {vectors.shape}", path)
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise DataError(f"row {int(bad[0])} holds NaN or infinite values", path)
        return vectors.astype(np.float32)
    texts = [text_field(row, field, path, line) for line, row in read_rows(path)]
    if not texts:
        raise DataError("no queries in the file", path)
    return texts


def check_query_width(vectors: np.ndarray, width: int, path: str | Path) -> None:
    """Refuse query vectors whose width is not the index's."""
    if vectors.shape[1] != width:
        raise DataError(f"query vectors are {vectors.shape[1]}-dim, the model makes {width}-dim vectors", path)
