"""The payload index of the embedded index: per-field inverted lists over the documents' metadata, by row.

Why: a filtered search must know which rows match before it walks the graph, and reading every document's JSON on
each query would cost more than the search. The payload index keeps, for each metadata field, the rows of each
value (text, true/false, numbers), the numbers and the ISO 8601 dates in sorted order for ranges, and the rows that
have the field at all. A filter (:mod:`mrl.index.filters`) becomes a boolean mask over rows in a few numpy
operations. It is built from the document store the first time a filter needs it and extended as rows are
appended; tombstones are the index's own mask, applied on top.

Example::

    from mrl.index.filters import parse_filter
    from mrl.index.payload import PayloadIndex

    payload = PayloadIndex.build([{"source": "a", "year": 2020}, {"source": "b"}, {"tags": ["x", "y"]}])
    payload.mask(parse_filter({"year": {"$gte": 2019}})).tolist()        # [True, False, False]
    payload.mask(parse_filter({"tags": "y"})).tolist()                   # [False, False, True]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from mrl.index.filters import And, Compare, Exists, FilterError, In, Node, Not, Or, as_datetime


def value_key(value) -> tuple | None:
    """How a scalar is keyed for equality: numbers as floats (1 == 1.0), true/false apart from numbers."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None  # a nested object is stored, not indexed


@dataclass
class FieldIndex:
    """One field: rows by value, sorted numbers and dates with their rows, and the rows that hold it."""

    by_value: dict[tuple, list[int]] = field(default_factory=dict)
    numbers: list[tuple[float, int]] = field(default_factory=list)
    dates: list[tuple[float, int]] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    text: bool = False  # holds text that is not a date: a range on it is a mistake
    _sorted: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    _arrays: dict[object, np.ndarray] = field(default_factory=dict)  # the lists above as arrays, made on first use

    def array(self, key) -> np.ndarray:
        """The rows of value ``key`` (or of ``"present"``) as an array."""
        if key not in self._arrays:
            rows = self.present if key == "present" else self.by_value.get(key, ())
            self._arrays[key] = np.asarray(rows, dtype=np.int64)
        return self._arrays[key]

    def add(self, row: int, value) -> None:
        self.present.append(row)
        for item in value if isinstance(value, list) else [value]:
            key = value_key(item)
            if key is None:
                continue
            self.by_value.setdefault(key, []).append(row)
            if key[0] == "n":
                self.numbers.append((key[1], row))
            elif key[0] == "s":
                moment = as_datetime(item)
                if moment is not None:
                    self.dates.append((moment.timestamp(), row))
                else:
                    self.text = True
        self._sorted = None
        self._arrays.clear()

    def ordered(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(sorted values, their rows) of ``numbers`` or ``dates``."""
        if self._sorted is None:
            self._sorted = {}
        if kind not in self._sorted:
            pairs = np.array(getattr(self, kind), dtype=np.float64).reshape(-1, 2)
            order = np.argsort(pairs[:, 0], kind="stable")
            self._sorted[kind] = (pairs[order, 0], pairs[order, 1].astype(np.int64))
        return self._sorted[kind]


class PayloadIndex:
    """Inverted lists over the metadata of rows ``0 .. rows - 1``."""

    CACHED = 16  # masks kept for filters asked again (a tenant's filter comes back on every query)

    def __init__(self) -> None:
        self.rows = 0
        self.fields: dict[str, FieldIndex] = {}
        self._masks: dict[tuple[Node, int], np.ndarray] = {}

    @classmethod
    def build(cls, metadatas: Iterable[dict]) -> PayloadIndex:
        payload = cls()
        payload.extend(metadatas)
        return payload

    def extend(self, metadatas: Iterable[dict]) -> None:
        """Index the metadata of the next rows, in row order."""
        for metadata in metadatas:
            for name, value in (metadata or {}).items():
                if value is not None:
                    self.fields.setdefault(name, FieldIndex()).add(self.rows, value)
            self.rows += 1
        self._masks.clear()

    def mask(self, node: Node | None, rows: int | None = None) -> np.ndarray:
        """Which of the first ``rows`` rows (default: all indexed) match the filter ``node`` (read-only)."""
        n = self.rows if rows is None else rows
        if node is None:
            return np.ones(n, dtype=bool)
        key = (node, n)
        if key not in self._masks:
            if len(self._masks) >= self.CACHED:
                self._masks.pop(next(iter(self._masks)))
            mask = self._mask(node, n)
            mask.flags.writeable = False
            self._masks[key] = mask
        return self._masks[key]

    def _rows(self, found: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[found[found < n]] = True
        return out

    def _mask(self, node: Node, n: int) -> np.ndarray:
        if isinstance(node, And):
            out = np.ones(n, dtype=bool)
            for part in node.parts:
                out &= self._mask(part, n)
            return out
        if isinstance(node, Or):
            out = np.zeros(n, dtype=bool)
            for part in node.parts:
                out |= self._mask(part, n)
            return out
        if isinstance(node, Not):
            return ~self._mask(node.part, n)
        f = self.fields.get(node.field)
        if f is None:  # no document has the field: nothing matches (and nothing is wrong)
            return np.zeros(n, dtype=bool) if not (isinstance(node, Exists) and not node.present) else np.ones(n, bool)
        present = self._rows(f.array("present"), n)
        if isinstance(node, Exists):
            return present if node.present else ~present
        if isinstance(node, In):
            hit = np.zeros(n, dtype=bool)
            for value in node.values:
                hit |= self._rows(f.array(value_key(value)), n)
            return present & ~hit if node.negate else hit
        assert isinstance(node, Compare)
        if node.op in ("$eq", "$ne"):
            hit = self._rows(f.array(value_key(node.value)), n)
            return hit if node.op == "$eq" else present & ~hit
        return self._range(node, f, n)

    def _range(self, node: Compare, f: FieldIndex, n: int) -> np.ndarray:
        is_date = isinstance(node.value, dt.datetime)
        kind = "dates" if is_date else "numbers"
        if not getattr(f, kind):
            if f.text or (f.dates if not is_date else f.numbers):
                holds = "text" if f.text else ("dates" if f.dates else "numbers")
                wants = "a date" if is_date else "a number"
                raise FilterError(f"{node.op} compares field {node.field!r} with {wants}; it holds {holds}", node.where)
            return np.zeros(n, dtype=bool)
        values, rows = f.ordered(kind)
        bound = node.value.timestamp() if is_date else float(node.value)
        side = "left" if node.op in ("$gte", "$lt") else "right"
        cut = int(np.searchsorted(values, bound, side=side))
        chosen = rows[cut:] if node.op in ("$gt", "$gte") else rows[:cut]
        return self._rows(chosen, n)
