"""The two-pass index in Qdrant: two named vectors per point and the Query API's prefetch.

Each point carries ``prefix`` (the first p dims, which Qdrant normalizes for cosine, with an HNSW
graph) and ``full`` (the whole vector, on disk, no graph: it is only ever scored for candidates).
A search is one query: ``prefetch`` takes k' candidates from the prefix graph, the outer query
rescores just those on ``full``. Qdrant has no expression index, so the prefix is stored a second
time; that costs p x 4 bytes per point (256 bytes at p = 64), the price of running inside Qdrant.

Two engines run the same :class:`QdrantIndex`:

* qdrant-client (:class:`ClientEngine`): a server, ``qdrant://host:6333/collection``
  (``qdrant+https://`` for TLS, API key from ``$QDRANT_API_KEY``), where ``shards`` and ``replicas``
  spread the collection over a cluster; or the client's local mode, ``qdrant:///abs/path/collection``,
  which stores points on disk but scores every point exactly in Python (no HNSW).
* Qdrant Edge (:class:`EdgeEngine`, package ``qdrant-edge-py``): Qdrant's engine in this process,
  with real HNSW graphs and segments, ``qdrant-edge:///abs/path``. One shard, no server.

Document ids become UUIDv5 point ids (Qdrant takes only integers and UUIDs); the id itself, the
text and the metadata are the payload. Settings (model, dims, tuned k') live in the collection's
metadata (client) or in ``mrl.json`` beside the shard (Edge).

Qdrant applies each write request atomically but has no transactions across requests: a large
add is sent in batches, and a failure part-way leaves the earlier batches written (rerun with upsert).
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.filters import BOOL_SHADOW, parse_filter, to_qdrant
from mrl.index.interface import (
    DatabaseIndex,
    SearchTimings,
    check_unique,
    existing_ids_error,
    prepare_build,
    stored_settings,
    unknown_ids_error,
)
from mrl.vectors.files import atomic_write_json
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import rotate_rows, unrotate_rows

FORMAT_VERSION = 2  # 2: vectors stored rotated (settings 'rotation'); unrotated indexes are still written as 1
NAMESPACE = uuid.UUID("6f0d6a43-3c55-4f1b-9a51-0b8f6f2f4a11")  # fixed: the same id maps to the same point
BATCH = 256
# local mode scores every point exactly and says so on each query; that is expected here, not news
warnings.filterwarnings("ignore", message="Local mode performs exact", category=UserWarning)


def payload_types(documents: list[Document]) -> dict[str, str]:
    """The payload index each metadata field gets: ``keyword`` for text, ``datetime`` for ISO 8601 dates,
    ``float`` for numbers, ``bool`` for true/false (a list-valued field by its elements; the first kind seen wins).

    Why: without one, Qdrant cannot estimate how many points a filter keeps, and walks the graph even for a filter
    that keeps a handful, missing some of them; with one, a selective filter scans its matches exactly."""
    from mrl.index.filters import as_datetime

    found: dict[str, str] = {}
    for d in documents:
        for name, value in (d.metadata or {}).items():
            item = value[0] if isinstance(value, list) and value else value
            if name in found or item is None or isinstance(item, dict | list):
                continue
            if isinstance(item, bool):
                found[name] = "bool"
            elif isinstance(item, int | float):
                found[name] = "float"
            elif isinstance(item, str):
                found[name] = "datetime" if as_datetime(item) is not None else "keyword"
    return found


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, doc_id))


def parse_location(location: str) -> tuple[dict, str]:
    """``qdrant://h:6333/c`` -> ({"url": "http://h:6333"}, "c"); ``qdrant:///dir/c`` -> ({"path": "/dir"}, "c")."""
    parts = urlsplit(location)
    if parts.scheme == "qdrant-edge":
        if parts.netloc or not parts.path.startswith("/"):
            raise MrlError(f"{location}: expected qdrant-edge:///absolute/path")
        return {"edge": parts.path.rstrip("/") or "/"}, ""
    path = parts.path.rstrip("/")
    if not path or "/" not in path:
        raise MrlError(f"{location}: expected qdrant://host:port/collection or qdrant:///absolute/path/collection")
    folder, collection = path.rsplit("/", 1)
    if parts.netloc:
        scheme = "https" if parts.scheme == "qdrant+https" else "http"
        if folder:
            raise MrlError(f"{location}: a server location is qdrant://host:port/collection")
        return {"url": f"{scheme}://{parts.netloc}"}, collection
    return {"path": folder or "/"}, collection


class ClientEngine:
    """qdrant-client against a server or in local mode."""

    def __init__(self, target: dict, collection: str):
        from qdrant_client import QdrantClient

        self.collection = collection
        try:
            if "url" in target:
                self.client = QdrantClient(url=target["url"], api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
                self.client.get_collections()  # fail now, clearly, rather than on the first search
            else:
                Path(target["path"]).mkdir(parents=True, exist_ok=True)
                self.client = QdrantClient(path=target["path"])
        except Exception as exc:  # connection errors come as several types (httpx, grpc, portalocker)
            where = target.get("url") or target.get("path")
            raise MrlError(f"cannot open Qdrant at {where}: {str(exc).strip().splitlines()[0]}") from None

    def settings(self) -> dict | None:
        if not self.client.collection_exists(self.collection):
            return None
        return (self.client.get_collection(self.collection).config.metadata or {}).get("mrl", {})

    def widths(self) -> dict:
        vectors = self.client.get_collection(self.collection).config.params.vectors
        return {name: v.size for name, v in vectors.items()} if isinstance(vectors, dict) else {}

    def create(self, settings: dict, hnsw_m: int, ef_construction: int, shards: int, replicas: int) -> None:
        from qdrant_client import models

        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)
        datatype = models.Datatype.FLOAT16 if settings["store"] == "float16" else models.Datatype.FLOAT32
        self.client.create_collection(
            self.collection,
            vectors_config={
                "prefix": models.VectorParams(
                    size=settings["prefix_dim"],
                    distance=models.Distance.COSINE,
                    hnsw_config=models.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construction),
                ),
                # m=0: no graph for the full vector; it is only scored for prefetched candidates
                "full": models.VectorParams(
                    size=settings["full_dim"],
                    distance=models.Distance.COSINE,
                    on_disk=True,
                    datatype=datatype,
                    hnsw_config=models.HnswConfigDiff(m=0),
                ),
            },
            shard_number=shards,
            replication_factor=replicas,
            metadata={"mrl": settings},
        )

    def save_settings(self, settings: dict) -> None:
        self.client.update_collection(self.collection, metadata={"mrl": settings})

    @staticmethod
    def payload(d: Document) -> dict:
        return {"id": d.id, "text": d.text, "metadata": d.metadata or {}}

    def index_fields(self, types: dict[str, str]) -> None:
        from qdrant_client import models

        for name, kind in types.items():
            schema = getattr(models.PayloadSchemaType, kind.upper())
            self.client.create_payload_index(self.collection, f"metadata.{name}", field_schema=schema, wait=True)

    def upsert(self, ids: list[str], short: np.ndarray, full: np.ndarray, payloads: list[dict]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(id=i, vector={"prefix": s.tolist(), "full": f.tolist()}, payload=p)
            for i, s, f, p in zip(ids, short, full, payloads, strict=True)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def query(self, q_prefix, q_full, kprime: int, k: int, ef: int | None, where=None) -> list[list[tuple[str, float]]]:
        from qdrant_client import models

        params = models.SearchParams(hnsw_ef=ef) if ef else None
        flt = to_qdrant(where, models) if where is not None else None
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(query=qp.tolist(), using="prefix", limit=kprime, params=params, filter=flt),
                query=qf.tolist(),
                using="full",
                limit=k,
                with_payload=["id"],
            )
            for qp, qf in zip(q_prefix, q_full, strict=True)
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[(p.payload["id"], float(p.score)) for p in r.points] for r in responses]

    def exact(self, q_full, k: int, where=None) -> list[list[str]]:
        from qdrant_client import models

        flt = to_qdrant(where, models) if where is not None else None
        requests = [
            models.QueryRequest(
                query=q.tolist(),
                using="full",
                limit=k,
                params=models.SearchParams(exact=True),
                filter=flt,
                with_payload=["id"],
            )
            for q in q_full
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[p.payload["id"] for p in r.points] for r in responses]

    def full_vectors_of(self, ids: list[str]) -> dict[str, list[float]]:
        points = self.client.retrieve(self.collection, ids=ids, with_payload=["id"], with_vectors=["full"])
        return {p.payload["id"]: p.vector["full"] for p in points}

    def retrieve(self, ids: list[str]) -> list[dict]:
        return [p.payload for p in self.client.retrieve(self.collection, ids=ids, with_payload=True)]

    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        self.client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True)

    def ids_matching(self, where=None) -> list[str]:
        from qdrant_client import models

        match = to_qdrant(where, models) if where is not None else None
        out, offset = [], None
        while True:
            points, offset = self.client.scroll(
                self.collection, scroll_filter=match, limit=1024, offset=offset, with_payload=["id"]
            )
            out += [p.payload["id"] for p in points]
            if offset is None:
                return out

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def full_vectors(self, limit: int) -> list[list[float]]:
        points, _ = self.client.scroll(self.collection, limit=limit, with_vectors=["full"], with_payload=False)
        return [p.vector["full"] for p in points]

    def describe(self) -> dict:
        info = self.client.get_collection(self.collection)
        params = info.config.params
        return {"shards": params.shard_number, "replicas": params.replication_factor, "status": str(info.status)}

    def close(self) -> None:
        self.client.close()


class EdgeEngine:
    """Qdrant Edge: the Qdrant engine in this process, one shard in a folder."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.shard = None
        self.pending: dict | None = None  # the settings of a build in progress (create .. finish_build)
        if (self.folder / "mrl.json").is_file():
            self.shard = self._qe().EdgeShard.load(str(self.folder / "shard"))

    @staticmethod
    def _qe():
        try:
            import qdrant_edge
        except ImportError:
            raise MrlError("Qdrant Edge needs the package qdrant-edge-py (pip install 'mrl[qdrant]')") from None
        return qdrant_edge

    def _saved(self) -> dict | None:
        path = self.folder / "mrl.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def settings(self) -> dict | None:
        saved = self._saved()
        return None if saved is None else {k: v for k, v in saved.items() if k != "widths"}

    def widths(self) -> dict:
        return self._saved()["widths"]

    def create(self, settings: dict, hnsw_m: int, ef_construction: int, shards: int, replicas: int) -> None:
        import shutil

        qe = self._qe()
        if shards != 1 or replicas != 1:
            raise MrlError("Qdrant Edge holds one local shard: shards and replicas need a Qdrant server")
        if self.shard is not None:
            self.shard.close()
        shutil.rmtree(self.folder / "shard", ignore_errors=True)
        (self.folder / "mrl.json").unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        datatype = qe.VectorStorageDatatype.Float16 if settings["store"] == "float16" else None
        config = qe.EdgeConfig(
            vectors={
                "prefix": qe.EdgeVectorParams(
                    size=settings["prefix_dim"],
                    distance=qe.Distance.Cosine,
                    hnsw_config=qe.HnswIndexConfig(m=hnsw_m, ef_construct=ef_construction, full_scan_threshold=10),
                ),
                "full": qe.EdgeVectorParams(
                    size=settings["full_dim"],
                    distance=qe.Distance.Cosine,
                    on_disk=True,
                    datatype=datatype,
                    hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=ef_construction, full_scan_threshold=10),
                ),
            }
        )
        self.shard = qe.EdgeShard.create(str(self.folder / "shard"), config)
        self.pending: dict | None = settings  # written by finish_build: until then the shard is no index

    def save_settings(self, settings: dict) -> None:
        if self.pending is not None:  # a build in progress records its settings when it finishes
            self.pending = settings
            return
        widths = {"prefix": settings["prefix_dim"], "full": settings["full_dim"]}
        atomic_write_json(self.folder / "mrl.json", {**settings, "widths": widths})

    @staticmethod
    def payload(d: Document) -> dict:
        """The point's payload, with each true/false metadata value also as text (see filters.BOOL_SHADOW)."""
        flags = {k: "true" if v else "false" for k, v in (d.metadata or {}).items() if isinstance(v, bool)}
        return {"id": d.id, "text": d.text, "metadata": d.metadata or {}, **({"mrl_bool": flags} if flags else {})}

    def index_fields(self, types: dict[str, str]) -> None:
        qe = self._qe()
        for name, kind in types.items():
            key, schema = (BOOL_SHADOW + name, "keyword") if kind == "bool" else (f"metadata.{name}", kind)
            self.shard.update(
                qe.UpdateOperation.create_field_index(key, getattr(qe.PayloadSchemaType, schema.capitalize()))
            )

    def finish_build(self) -> None:
        """Build the HNSW graphs now (not on the first searches), then record the settings: the commit point."""
        self.shard.optimize()
        self.shard.flush()
        settings, self.pending = self.pending, None
        self.save_settings(settings)

    def upsert(self, ids: list[str], short: np.ndarray, full: np.ndarray, payloads: list[dict]) -> None:
        qe = self._qe()
        points = [
            qe.Point(i, {"prefix": s.tolist(), "full": f.tolist()}, p)
            for i, s, f, p in zip(ids, short, full, payloads, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def query(self, q_prefix, q_full, kprime: int, k: int, ef: int | None, where=None) -> list[list[tuple[str, float]]]:
        qe = self._qe()
        params = qe.SearchParams(hnsw_ef=ef) if ef else None
        flt = to_qdrant(where, qe) if where is not None else None
        out = []
        for qp, qf in zip(q_prefix, q_full, strict=True):
            first = qe.Prefetch(limit=kprime, query=qe.Query.Nearest(qp.tolist(), using="prefix"), params=params,
                                filter=flt)  # fmt: skip
            request = qe.QueryRequest(
                limit=k, prefetches=[first], query=qe.Query.Nearest(qf.tolist(), using="full"), with_payload=["id"]
            )
            out.append([(p.payload["id"], float(p.score)) for p in self.shard.query(request)])
        return out

    def exact(self, q_full, k: int, where=None) -> list[list[str]]:
        qe = self._qe()
        flt = to_qdrant(where, qe) if where is not None else None
        out = []
        for q in q_full:
            request = qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(q.tolist(), using="full"), params=qe.SearchParams(exact=True),
                filter=flt, with_payload=["id"],
            )  # fmt: skip
            out.append([p.payload["id"] for p in self.shard.query(request)])
        return out

    def full_vectors_of(self, ids: list[str]) -> dict[str, list[float]]:
        records = self.shard.retrieve(ids, with_payload=["id"], with_vector=["full"])
        return {r.payload["id"]: r.vector["full"] for r in records}

    def retrieve(self, ids: list[str]) -> list[dict]:
        return [r.payload for r in self.shard.retrieve(ids, with_payload=True, with_vector=False)]

    def delete(self, ids: list[str]) -> None:
        self.shard.update(self._qe().UpdateOperation.delete_points(ids))

    def ids_matching(self, where=None) -> list[str]:
        qe = self._qe()
        match = to_qdrant(where, qe) if where is not None else None
        out, offset = [], None
        while True:
            points, offset = self.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1024, filter=match, with_payload=True, with_vector=False)
            )
            out += [p.payload["id"] for p in points]
            if offset is None:
                return out

    def count(self) -> int:
        return self.shard.count(self._qe().CountRequest(exact=True))

    def full_vectors(self, limit: int) -> list[list[float]]:
        points, _ = self.shard.scroll(self._qe().ScrollRequest(limit=limit, with_vector=["full"]))
        return [p.vector["full"] for p in points]

    def describe(self) -> dict:
        info = self.shard.info()
        return {"segments": info.segments_count, "indexed_vectors": info.indexed_vectors_count}

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None


def engine_for(location: str) -> ClientEngine | EdgeEngine:
    target, collection = parse_location(location)
    return EdgeEngine(target["edge"]) if "edge" in target else ClientEngine(target, collection)


class QdrantIndex(DatabaseIndex):
    """A two-pass Matryoshka index in Qdrant; open with :meth:`open`, create with :meth:`build`.

    Example::

        from mrl.index.qdrant import QdrantIndex
        index = QdrantIndex.build("qdrant-edge:///tmp/docs", vectors, documents, prefix_dim=64)
        index.search(query_vector, k=10)
    """

    def __init__(self, engine, location: str, settings: dict, model=None):
        super().__init__(location, settings, model)
        self.engine = engine

    @staticmethod
    def location_for(url: str | None, path: Path | None, collection: str | None, edge: bool = False) -> str:
        """The location string for a server URL, a local-mode folder or (``edge``) a Qdrant Edge folder."""
        if edge:
            return f"qdrant-edge://{Path(path).resolve()}"
        if url:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            scheme = "qdrant+https" if parts.scheme == "https" else "qdrant"
            return f"{scheme}://{parts.netloc}/{collection}"
        return f"qdrant://{Path(path).resolve()}/{collection}"

    # ---- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, location: str, model=None) -> QdrantIndex:
        engine = engine_for(location)
        settings = engine.settings()
        if not settings:
            engine.close()
            what = "no such collection" if settings is None else "collection is not an mrl index"
            raise MrlError(f"{location}: {what} (build it first: mrl index build or mrl.index.build_index)")
        if settings.get("format_version", 0) > FORMAT_VERSION:
            engine.close()
            raise MrlError(f"{location} was written by a newer mrl; upgrade mrl")
        widths, expected = engine.widths(), {"prefix": settings["prefix_dim"], "full": settings["full_dim"]}
        if widths != expected:
            engine.close()
            raise MrlError(f"{location}: collection holds vectors {widths}, the index expects {expected}")
        return cls(engine, location, settings, model)

    @classmethod
    def build(
        cls,
        location: str,
        vectors: np.ndarray,
        documents: list[Document],
        model: str | None = None,
        prefix_dim: int = 64,
        store: str = "float32",
        hnsw_m: int = 16,
        ef_construction: int = 100,
        shards: int = 1,
        replicas: int = 1,
        overwrite: bool = False,
        loaded_model=None,
        rotate: bool = True,
    ) -> QdrantIndex:
        """Create the collection (or Edge shard) and upload the points (rotated with ``rotate``: mrl.index.rotation)."""
        unit, rotation = prepare_build(vectors, documents, prefix_dim, store, rotate)
        full_dim = unit.shape[1]
        engine = engine_for(location)
        existing = engine.settings()
        if existing is not None and not overwrite:
            engine.close()
            raise MrlError(f"{location}: collection exists (pass `overwrite` to replace it)")
        if existing is not None and not existing:
            engine.close()
            raise MrlError(f"{location}: refusing to overwrite a collection that is not an mrl index")
        self = cls._create(location, engine, model, full_dim, prefix_dim, store, hnsw_m, ef_construction, shards,
                           replicas, loaded_model, rotation)  # fmt: skip
        self._upload(unit, documents)
        if isinstance(engine, EdgeEngine):
            engine.finish_build()
        return self

    @classmethod
    def create(
        cls,
        location: str,
        model: str | None = None,
        full_dim: int | None = None,
        prefix_dim: int = 64,
        store: str = "float32",
        hnsw_m: int = 16,
        ef_construction: int = 100,
        shards: int = 1,
        replicas: int = 1,
        overwrite: bool = False,
        loaded_model=None,
    ) -> QdrantIndex:
        """An empty collection (or Edge shard) to fill with :meth:`add`; its width comes from ``model`` (or
        ``full_dim``). With no vectors to fit a rotation on, the vectors are stored unrotated."""
        if full_dim is None:
            from mrl.model import embedding_dim, load_model

            loaded_model = loaded_model or load_model(model)
            full_dim = embedding_dim(loaded_model)
            model = getattr(loaded_model, "mrl_source", model)
        if not 0 < prefix_dim <= full_dim:
            raise MrlError(f"`prefix_dim` {prefix_dim} must be between 1 and the vector width {full_dim}")
        engine = engine_for(location)
        existing = engine.settings()
        if existing is not None and not overwrite:
            engine.close()
            raise MrlError(f"{location}: collection exists (pass `overwrite` to replace it)")
        self = cls._create(location, engine, model, full_dim, prefix_dim, store, hnsw_m, ef_construction, shards,
                           replicas, loaded_model, None)  # fmt: skip
        if isinstance(engine, EdgeEngine):
            engine.finish_build()
        return self

    @classmethod
    def _create(cls, location, engine, model, full_dim, prefix_dim, store, hnsw_m, ef_construction, shards, replicas,
                loaded_model, rotation) -> QdrantIndex:  # fmt: skip
        settings = stored_settings(
            model, full_dim, prefix_dim, store, {"m": hnsw_m, "ef_construct": ef_construction}, FORMAT_VERSION, rotation
        )
        engine.create(settings, hnsw_m, ef_construction, shards, replicas)
        return cls(engine, location, settings, loaded_model)

    def _upload(self, unit: np.ndarray, documents: list[Document]) -> None:
        known = self.settings.get("payload_indexes") or {}
        new = {k: v for k, v in payload_types(documents).items() if k not in known}
        if new:  # before the points, so that they are indexed as they arrive
            with self.lock:
                self.engine.index_fields(new)
            self.set_payload_indexes({**known, **new})
        short = prefix(unit, self.prefix_dim)
        for start in range(0, len(documents), BATCH):
            part = documents[start : start + BATCH]
            payloads = [self.engine.payload(d) for d in part]
            with self.lock:
                self.engine.upsert(
                    [point_id(d.id) for d in part],
                    short[start : start + BATCH],
                    unit[start : start + BATCH],
                    payloads,
                )

    # ---- the backend interface -------------------------------------------------------------
    @property
    def count(self) -> int:
        with self.lock:
            return self.engine.count()

    def search_keys(
        self, unit_queries, k, shortlist=None, ann_search=None, funnel=None, timings=None, filter=None, adaptive=None
    ):
        """Keys are document ids; both passes run inside Qdrant, one query per vector, a filter in the prefetch."""
        self.check_positive_k(k)
        self.check_adaptive(adaptive)
        node = parse_filter(filter)
        if funnel:
            raise MrlError("the Qdrant backend reranks in one stage (prefix -> full); drop `funnel`")
        kprime = self.requested_shortlist(k, shortlist)
        unit_queries = rotate_rows(unit_queries, self.rotation)
        ef = ann_search or (self.tuned or {}).get("ann_search")
        timings = timings or SearchTimings()
        t0 = time.perf_counter()
        with self.lock:
            found = self.engine.query(
                prefix(unit_queries, self.prefix_dim), unit_queries, kprime, k, max(ef, kprime) if ef else None, node
            )
        timings.shortlist = time.perf_counter() - t0
        keys = [[i for i, _ in row] for row in found]
        if node is None:  # a filter may match fewer than k documents
            self.check_found(keys, k)
        return keys, [[s for _, s in row] for row in found]

    def exact_keys(self, unit_queries: np.ndarray, k: int, filter=None) -> list[list[str]]:
        queries = rotate_rows(unit_queries, self.rotation)
        with self.lock:
            return self.engine.exact(queries, k, parse_filter(filter))

    def stored_vectors(self, keys: list) -> dict:
        """The stored full vectors of these ids (rotated: inner products between them are the model's)."""
        with self.lock:
            found = self.engine.full_vectors_of([point_id(i) for i in keys])
        return {i: np.asarray(v, dtype=np.float32) for i, v in found.items()}

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        with self.lock:
            vectors = self.engine.full_vectors(5 * n)
        chosen = np.random.default_rng(seed).choice(len(vectors), size=min(n, len(vectors)), replace=False)
        return unrotate_rows(np.asarray([vectors[i] for i in chosen], dtype=np.float32), self.rotation)

    def ann_search_grid(self) -> list[int | None]:
        return [None, 128, 256, 512]

    def read_settings(self) -> dict | None:
        return self.engine.settings()

    def write_settings(self, settings: dict) -> None:
        self.engine.save_settings(settings)

    def get(self, ids: list[str]) -> dict[str, Document]:
        with self.lock:
            payloads = self.engine.retrieve([point_id(i) for i in ids])
        return {p["id"]: Document(p["id"], p["text"], p["metadata"]) for p in payloads}

    def ids_matching(self, filter=None) -> list[str]:
        node = parse_filter(filter)
        with self.lock:
            return sorted(self.engine.ids_matching(node))

    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        unit = self.vectors_for(documents, vectors)
        taken = self.get([d.id for d in documents])
        if taken:
            raise existing_ids_error(list(taken))
        self._upload(unit, documents)
        return len(documents)

    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        self._upload(self.vectors_for(documents, vectors), documents)
        return len(documents)

    def delete(self, ids: list[str], missing_ok: bool = False) -> int:
        ids = list(dict.fromkeys(ids)) if missing_ok else ids
        check_unique(ids)
        found = self.get(ids)
        missing = [i for i in ids if i not in found]
        if missing and not missing_ok:
            raise unknown_ids_error(missing)
        present = [i for i in ids if i in found]
        if present:
            with self.lock:
                self.engine.delete([point_id(i) for i in present])
        return len(present)

    def stats(self) -> dict:
        with self.lock:
            extra = self.engine.describe()
        backend = "qdrant-edge" if isinstance(self.engine, EdgeEngine) else "qdrant"
        return {
            **self.settings_stats(backend, "hnsw (qdrant)", self.count),
            **extra,
        }

    def close(self) -> None:
        self.engine.close()
