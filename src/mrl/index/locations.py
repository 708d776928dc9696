"""The front door of every index: open or build one by its location.

Locations::

    idx/scifact                                      embedded index folder
    postgresql://user:password@host:5432/db/table    a table in PostgreSQL with pgvector (postgres:// too)
    qdrant://host:6333/collection                    a Qdrant server (qdrant+https:// for TLS)
    qdrant:///abs/path/collection                    qdrant-client's local mode (exact scoring, no HNSW)
    qdrant-edge:///abs/path                          Qdrant Edge: Qdrant's engine in this process

The CLI, ``mrl run``, the server and the integrations all come through here, so a user who outgrows one machine
changes the location string and nothing else. An option a backend cannot honour is refused with its name, never
ignored.

Example::

    from mrl.index import build_index, open_index

    index = build_index("idx/demo", vectors, documents, model="default")             # prefix width measured
    index = build_index("postgresql://mrl@localhost/search/docs", vectors, documents, prefix_dim=128)
    hits = open_index("idx/demo").search("does vitamin D prevent fractures", k=10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.interface import AUTO, SearchIndex

POSTGRES = ("postgresql://", "postgres://")
QDRANT = ("qdrant://", "qdrant+https://", "qdrant-edge://")


def backend_of(location: str | Path) -> str:
    """``embedded``, ``postgres``, ``qdrant`` or ``qdrant-edge``: what a location names."""
    text = str(location)
    if text.startswith(POSTGRES):
        return "postgres"
    if text.startswith("qdrant-edge://"):
        return "qdrant-edge"
    if text.startswith(QDRANT):
        return "qdrant"
    if "://" in text:
        scheme = text.split("://")[0]
        raise MrlError(f"`location`: unknown scheme '{scheme}://' (a folder, postgresql://, qdrant://, qdrant-edge://)")
    return "embedded"


def open_index(location: str | Path, model=None, io: str = "auto", standbys: Sequence[str] = ()) -> SearchIndex:
    """Open an index by location (see the module docstring).

    ``io`` (mmap, pread or auto) is how an embedded index reads rerank rows (:mod:`mrl.index.segments`); a
    database reads them itself. ``standbys``: DSNs of PostgreSQL hot standbys that serve a postgresql:// index's
    reads (:mod:`mrl.index.replicas`).
    """
    if not isinstance(location, str | Path):
        raise MrlError(
            f"`location`: expected an index folder or a postgresql://, qdrant:// or qdrant-edge:// location, got a "
            f"{type(location).__name__}"
        )
    backend = backend_of(location)
    if io != "auto" and backend != "embedded":
        raise MrlError(f"`io`: {io} applies to an embedded index (a folder), not to {backend}")
    if standbys and backend != "postgres":
        raise MrlError(f"`standbys`: hot standbys serve a postgresql:// index, not {backend}")
    if backend == "postgres":
        from mrl.index.postgres import PostgresIndex

        return PostgresIndex.open(str(location), model=model, standbys=standbys)
    if backend in ("qdrant", "qdrant-edge"):
        from mrl.index.qdrant import QdrantIndex

        return QdrantIndex.open(str(location), model=model)
    from mrl.index.shards import is_sharded

    if is_sharded(location):
        from mrl.index.router import ShardedIndex

        return ShardedIndex.open(Path(location), model=model, io=io)
    from mrl.index.embedded import Index

    return Index.open(Path(location), model=model, io=io)


def build_index(
    location: str | Path,
    vectors: np.ndarray | None,
    documents: list[Document],
    *,
    model: str | None = None,
    loaded_model=None,
    prefix_dim: int | str = AUTO,
    store: str = "float32",
    rotate: bool = True,
    overwrite: bool = False,
    hnsw_m: int = 16,
    ef_construction: int | None = None,
    target_recall: float | None = None,
    tune_queries: np.ndarray | None = None,
    report: Callable[[str], None] | None = None,
    ann: str | None = None,
    quant: str | None = None,
    keep_dims: int | None = None,
    nlist: int | None = None,
    chunk_rows: int | None = None,
    shards: int | None = None,
    replicas: int | None = None,
    standbys: Sequence[str] | None = None,
) -> SearchIndex:
    """Build a two-pass index at ``location`` over ``documents`` and their full-width ``vectors`` (None: encoded
    with ``loaded_model``, else ``model``).

    Every backend takes ``prefix_dim`` (``"auto"``: measured, embedded index only), ``store``, ``rotate``,
    ``overwrite``, the graph's ``hnsw_m`` and ``ef_construction``, and ``target_recall`` / ``tune_queries`` to tune
    its shortlist and beam. Only the embedded index takes ``ann``, ``quant``, ``keep_dims``, ``nlist`` and
    ``chunk_rows``; an embedded index and a Qdrant server ``shards`` (embedded: that many shard folders by id hash,
    :mod:`mrl.index.shards`); only a Qdrant server ``replicas``; only PostgreSQL ``standbys`` (hot standby DSNs,
    checked first; the build returns once they have replayed it).
    """
    backend = backend_of(location)
    given = {
        "ann": ann,
        "quant": quant,
        "keep_dims": keep_dims,
        "nlist": nlist,
        "chunk_rows": chunk_rows,
        "shards": shards,
        "replicas": replicas,
        "standbys": standbys or None,
    }
    allowed = {
        "embedded": {"ann", "quant", "keep_dims", "nlist", "chunk_rows", "shards"},
        "qdrant": {"shards", "replicas"},
        "postgres": {"standbys"},
    }
    refused = [name for name, value in given.items() if value is not None and name not in allowed.get(backend, ())]
    if refused:
        raise MrlError(f"`{refused[0]}`: does not apply to a {backend} index")
    if backend != "embedded" and prefix_dim == AUTO:
        raise MrlError(f"`prefix_dim`: auto measures widths on the embedded index only; give a width for {backend}")
    if vectors is None:
        from mrl.encode import encode_texts
        from mrl.model import load_model

        loaded_model = loaded_model or load_model(model)
        vectors = encode_texts(loaded_model, [d.text for d in documents])
    if backend == "embedded":
        from mrl.index.embedded import Index
        from mrl.index.engines import DEFAULT_ANN, engine

        kind = ann or DEFAULT_ANN
        extra = {"chunk_rows": chunk_rows} if chunk_rows else {}
        if shards is not None:
            from mrl.index.router import ShardedIndex
            from mrl.index.shards import build_sharded

            build_sharded(
                location, vectors, documents, shards, model=model, prefix_dim=prefix_dim, ann=kind,
                ann_params=engine(kind).params(hnsw_m, ef_construction, nlist), overwrite=overwrite, rotate=rotate,
                quant=quant or "sq8", store=store, keep_dims=keep_dims, target_recall=target_recall,
                tune_queries=tune_queries, report=report, **extra,
            )  # fmt: skip
            return ShardedIndex.open(location, model=loaded_model)
        return Index.build(
            Path(location), vectors, documents, model=model, prefix_dim=prefix_dim, ann=kind,
            quant=quant or "sq8", store=store, ann_params=engine(kind).params(hnsw_m, ef_construction, nlist),
            overwrite=overwrite, loaded_model=loaded_model, rotate=rotate, keep_dims=keep_dims,
            target_recall=target_recall, tune_queries=tune_queries, report=report, **extra,
        )  # fmt: skip
    if backend == "postgres":
        from mrl.index.postgres import PostgresIndex, split_location

        index = PostgresIndex.build(
            *split_location(str(location)), vectors, documents, model=model, prefix_dim=prefix_dim, store=store,
            ann_params={"m": hnsw_m, "ef_construction": ef_construction or 80}, overwrite=overwrite,
            loaded_model=loaded_model, rotate=rotate, standbys=standbys or (), report=report,
        )  # fmt: skip
    else:
        from mrl.index.qdrant import QdrantIndex

        index = QdrantIndex.build(
            str(location), vectors, documents, model=model, prefix_dim=prefix_dim, store=store, hnsw_m=hnsw_m,
            ef_construction=ef_construction or 80, shards=shards or 1, replicas=replicas or 1, overwrite=overwrite,
            loaded_model=loaded_model, rotate=rotate,
        )  # fmt: skip
    if target_recall is not None:
        from mrl.index.tuning import tune

        tune(index, target_recall, queries=tune_queries)
    return index
