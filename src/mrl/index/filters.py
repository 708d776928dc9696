"""Metadata filters: one language for every entry point and every backend.

The shape is the MongoDB-style ``where`` of Chroma, which LangChain's vector stores (PGVector among them) also take:

* ``{"source": "pubmed"}``: the field equals the value (a list-valued field matches when any element does);
* ``{"year": {"$gte": 2020, "$lt": 2024}}``: comparisons ``$eq $ne $gt $gte $lt $lte`` on numbers, or on dates
  (an ISO 8601 string such as ``"2024-01-31"`` or ``"2024-01-31T12:00:00Z"``, or a ``datetime``);
* ``{"lang": {"$in": ["en", "de"]}}``, ``{"lang": {"$nin": ["fr"]}}``, ``{"doi": {"$exists": true}}``;
* ``{"$and": [...]}``, ``{"$or": [...]}``, ``{"$not": {...}}``; several fields in one object are an ``$and``.

``$ne`` and ``$nin`` match documents that hold the field with another value: a document without the field matches
neither (combine with ``$exists`` or ``$not`` for that, as in Chroma). A filter on a field no document has matches
nothing and is no error. A malformed filter is refused before any search, with the JSON path of what is wrong.

:func:`parse_filter` checks a filter and returns its tree; :mod:`mrl.index.payload` evaluates it on the embedded index,
:func:`to_sql` and :func:`to_qdrant` translate it for PostgreSQL and Qdrant.

Example::

    from mrl.index.filters import parse_filter

    where = parse_filter({"source": "pubmed", "year": {"$gte": 2020}})
    hits = index.search("vitamin D and fractures", k=10, filter={"source": "pubmed"})
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from mrl.errors import MrlError

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
RANGES = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = (*COMPARISONS, "$in", "$nin", "$exists")
LOGICAL = ("$and", "$or", "$not")
Scalar = str | int | float | bool


class FilterError(MrlError):
    """A filter that cannot be applied, with the JSON path (``$.year.$gt``) of what is wrong."""

    def __init__(self, message: str, where: str):
        self.where = where
        super().__init__(f"`filter` at {where}: {message}")


# ---- the tree ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    """``field op value``; ``value`` is a str, bool or float, or a datetime for a date comparison."""

    field: str
    op: str
    value: Scalar | dt.datetime
    where: str = field(default="$", compare=False)  # its JSON path, for errors found when it is applied


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Scalar, ...]
    negate: bool = False


@dataclass(frozen=True)
class Exists:
    field: str
    present: bool = True


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


Node = Compare | In | Exists | And | Or | Not
FilterNode = (Compare, In, Exists, And, Or, Not)  # for isinstance: a filter already parsed
Filter = dict | str | Node | None  # what every search takes: a filter as JSON, its text, or its parsed tree


# ---- parsing ----------------------------------------------------------------------------------------------------
def parse_filter(spec: Filter) -> Node | None:
    """The tree of a filter (None for an empty one); a filter that is not one is refused with its JSON path."""
    if spec is None or spec == {}:
        return None
    if isinstance(spec, FilterNode):
        return spec
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise FilterError(f"not JSON ({exc.msg}, column {exc.colno})", "$") from None
    return _node(spec, "$")


def _node(spec, where: str) -> Node:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"expected an object of conditions, got {json.dumps(spec, default=str)[:60]}", where)
    parts = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"a field name must be text, got {key!r}", where)
        here = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters", here)
            children = tuple(_node(v, f"{here}[{i}]") for i, v in enumerate(value))
            parts.append(And(children) if key == "$and" else Or(children))
        elif key == "$not":
            parts.append(Not(_node(value, here)))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator '{key}' (logical: {', '.join(LOGICAL)})", here)
        else:
            parts.append(_field(key, value, here))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _field(name: str, spec, where: str) -> Node:
    if not isinstance(spec, dict):
        return Compare(name, "$eq", _scalar(spec, where), where)
    if not spec:
        raise FilterError("expected at least one operator", where)
    parts: list[Node] = []
    for op, value in spec.items():
        here = f"{where}.{op}"
        if op not in OPERATORS:
            raise FilterError(f"unknown operator '{op}' (choose {', '.join(OPERATORS)})", here)
        if op == "$exists":
            if not isinstance(value, bool):
                raise FilterError(f"$exists takes true or false, got {value!r}", here)
            parts.append(Exists(name, value))
        elif op in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{op} takes a non-empty list of values", here)
            parts.append(In(name, tuple(_scalar(v, f"{here}[{i}]") for i, v in enumerate(value)), op == "$nin"))
        elif op in RANGES:
            parts.append(Compare(name, op, _orderable(value, here), here))
        else:
            parts.append(Compare(name, op, _scalar(value, here), here))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _scalar(value, where: str) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.date):
        return iso(value)
    raise FilterError(f"expected text, a number or true/false, got {json.dumps(value, default=str)[:60]}", where)


def _orderable(value, where: str) -> float | dt.datetime:
    """A range's bound: a number, or a date (a datetime, a date, or an ISO 8601 string)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.date | str):
        moment = as_datetime(value)
        if moment is not None:
            return moment
    raise FilterError(f"a range compares numbers or dates (ISO 8601), got {json.dumps(value, default=str)[:60]}", where)


def as_datetime(value) -> dt.datetime | None:
    """A datetime (UTC when no zone is given) from a datetime, a date or an ISO 8601 string; None otherwise."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def iso(value: dt.date) -> str:
    """How a date is stored in metadata: ISO 8601 (a datetime without a zone is taken as UTC)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    return value.isoformat()


def fields(node: Node | None) -> set[str]:
    """The metadata fields a filter reads."""
    if node is None:
        return set()
    if isinstance(node, And | Or):
        return set().union(*(fields(p) for p in node.parts))
    if isinstance(node, Not):
        return fields(node.part)
    return {node.field}


# ---- PostgreSQL -------------------------------------------------------------------------------------------------
SQL_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
DATE_TEXT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"  # what a field's text must start with to be compared as a date


def to_sql(node: Node, params: dict, column: str = "metadata") -> str:
    """A ``WHERE`` condition over a JSONB ``column``; its values go into ``params`` as psycopg named parameters
    (``%(f0)s``...), so the clause joins a statement's own named parameters."""

    def param(value) -> str:
        name = f"f{len(params)}"
        params[name] = value
        return f"%({name})s"

    def has(name: str) -> str:
        return f"({column} ? {param(name)})"

    def holds(name: str, value) -> str:  # jsonb containment: a list-valued field holds a value when any element is it
        one, listed = param(json.dumps({name: value})), param(json.dumps({name: [value]}))
        return f"({column} @> {one}::jsonb OR {column} @> {listed}::jsonb)"

    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(to_sql(p, params, column) for p in node.parts) + ")"
    if isinstance(node, Not):
        return f"NOT COALESCE({to_sql(node.part, params, column)}, false)"
    if isinstance(node, Exists):
        return has(node.field) if node.present else f"NOT {has(node.field)}"
    if isinstance(node, In):
        anyof = "(" + " OR ".join(holds(node.field, v) for v in node.values) + ")"
        return f"({has(node.field)} AND NOT {anyof})" if node.negate else anyof
    if node.op == "$eq":
        return holds(node.field, node.value)
    if node.op == "$ne":
        return f"({has(node.field)} AND NOT {holds(node.field, node.value)})"
    value, text = f"{column} -> {param(node.field)}", f"{column} ->> {param(node.field)}"
    if isinstance(node.value, dt.datetime):  # ISO strings only: anything else in the field does not match
        check = f"jsonb_typeof({value}) = 'string' AND ({text}) ~ {param(DATE_TEXT)}"
        return f"({check} AND ({text})::timestamptz {SQL_OPS[node.op]} {param(node.value)})"
    return f"(jsonb_typeof({value}) = 'number' AND ({text})::float8 {SQL_OPS[node.op]} {param(node.value)})"


# ---- Qdrant -----------------------------------------------------------------------------------------------------
BOOL_SHADOW = "mrl_bool."  # Qdrant Edge's Python binding reads a true/false match as 1/0: its payloads keep each
# true/false metadata value as text under this key too, and its filters match that instead


def to_qdrant(node: Node, models, prefix: str = "metadata."):
    """A Qdrant ``Filter`` for payloads that keep metadata under ``prefix``; ``models`` is ``qdrant_client.models``
    or the ``qdrant_edge`` module, which spell the same classes."""
    edge = models.__name__.startswith("qdrant_edge")

    def present(name: str):  # the field is missing, null or empty: its negation means "present"
        if edge:
            return models.IsEmptyCondition(prefix + name)
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=prefix + name))

    def condition(key: str, **kw):
        return models.FieldCondition(key, **kw) if edge else models.FieldCondition(key=key, **kw)

    def span(v: float):  # a number equals v: a range [v, v], which the float payload index serves
        return models.RangeFloat(gte=v, lte=v) if edge else models.Range(gte=v, lte=v)

    def equals_any(name: str, values):
        """The field holds one of ``values``. Numbers match as ranges [v, v]: Qdrant's float payload index serves
        ranges only, and a ``MatchValue`` on a number would scan every payload (and miss a float payload)."""
        parts, others = [], []
        for v in values:
            if isinstance(v, bool) and edge:
                parts.append(condition(BOOL_SHADOW + name, match=models.MatchValue("true" if v else "false")))
            elif isinstance(v, int | float) and not isinstance(v, bool):
                parts.append(condition(prefix + name, range=span(v)))
            else:
                others.append(v)
        if len(others) == 1:
            match = models.MatchValue(others[0]) if edge else models.MatchValue(value=others[0])
        else:
            match = models.MatchAny(others) if edge else models.MatchAny(any=others)
        if others:
            parts.append(condition(prefix + name, match=match))
        return parts[0] if len(parts) == 1 else models.Filter(should=parts)

    def build(n: Node):
        if isinstance(n, And):
            return models.Filter(must=[build(p) for p in n.parts])
        if isinstance(n, Or):
            return models.Filter(should=[build(p) for p in n.parts])
        if isinstance(n, Not):
            return models.Filter(must_not=[build(n.part)])
        if isinstance(n, Exists):
            return models.Filter(must_not=[present(n.field)]) if n.present else models.Filter(must=[present(n.field)])
        if isinstance(n, In):
            hit = equals_any(n.field, list(n.values))
            # $nin: present, and no value among them
            return models.Filter(must_not=[present(n.field), hit]) if n.negate else models.Filter(must=[hit])
        if n.op in ("$eq", "$ne"):
            hit = equals_any(n.field, [n.value])
            return models.Filter(must=[hit]) if n.op == "$eq" else models.Filter(must_not=[present(n.field), hit])
        bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[n.op]
        if isinstance(n.value, dt.datetime) and edge:
            rng = models.RangeDateTime(**{bound: n.value.isoformat()})
        elif isinstance(n.value, dt.datetime):
            rng = models.DatetimeRange(**{bound: n.value})
        else:
            rng = models.RangeFloat(**{bound: n.value}) if edge else models.Range(**{bound: n.value})
        return models.Filter(must=[condition(prefix + n.field, range=rng)])

    return build(node)
