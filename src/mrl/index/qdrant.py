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
from mrl.encode import prefix
from mrl.errors import MrlError
from mrl.index.backend import (
    DatabaseBackend,
    SearchTimings,
    check_unique,
    existing_ids_error,
    prepare_build,
    stored_settings,
    unknown_ids_error,
)
from mrl.index.rotation import rotate_rows, unrotate_rows
from mrl.index.storage import atomic_write_json

FORMAT_VERSION = 2  # 2: vectors stored rotated (settings 'rotation'); unrotated indexes are still written as 1
NAMESPACE = uuid.UUID("6f0d6a43-3c55-4f1b-9a51-0b8f6f2f4a11")  # fixed: the same id maps to the same point
BATCH = 256
# local mode scores every point exactly and says so on each query; that is expected here, not news
warnings.filterwarnings("ignore", message="Local mode performs exact", category=UserWarning)


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

    def upsert(self, ids: list[str], short: np.ndarray, full: np.ndarray, payloads: list[dict]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(id=i, vector={"prefix": s.tolist(), "full": f.tolist()}, payload=p)
            for i, s, f, p in zip(ids, short, full, payloads, strict=True)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def query(self, q_prefix, q_full, kprime: int, k: int, ef: int | None) -> list[list[tuple[str, float]]]:
        from qdrant_client import models

        params = models.SearchParams(hnsw_ef=ef) if ef else None
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(query=qp.tolist(), using="prefix", limit=kprime, params=params),
                query=qf.tolist(),
                using="full",
                limit=k,
                with_payload=["id"],
            )
            for qp, qf in zip(q_prefix, q_full, strict=True)
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[(p.payload["id"], float(p.score)) for p in r.points] for r in responses]

    def exact(self, q_full, k: int) -> list[list[str]]:
        from qdrant_client import models

        requests = [
            models.QueryRequest(
                query=q.tolist(), using="full", limit=k, params=models.SearchParams(exact=True), with_payload=["id"]
            )
            for q in q_full
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[p.payload["id"] for p in r.points] for r in responses]

    def retrieve(self, ids: list[str]) -> list[dict]:
        return [p.payload for p in self.client.retrieve(self.collection, ids=ids, with_payload=True)]

    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        self.client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True)

    def ids_where(self, key: str, value) -> list[str]:
        from qdrant_client import models

        match = models.Filter(must=[models.FieldCondition(key=f"metadata.{key}", match=models.MatchValue(value=value))])
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
        self.pending = settings

    def save_settings(self, settings: dict) -> None:
        widths = {"prefix": settings["prefix_dim"], "full": settings["full_dim"]}
        atomic_write_json(self.folder / "mrl.json", {**settings, "widths": widths})

    def finish_build(self) -> None:
        """Build the HNSW graphs now (not on the first searches), then record the settings: the commit point."""
        self.shard.optimize()
        self.shard.flush()
        self.save_settings(self.pending)

    def upsert(self, ids: list[str], short: np.ndarray, full: np.ndarray, payloads: list[dict]) -> None:
        qe = self._qe()
        points = [
            qe.Point(i, {"prefix": s.tolist(), "full": f.tolist()}, p)
            for i, s, f, p in zip(ids, short, full, payloads, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def query(self, q_prefix, q_full, kprime: int, k: int, ef: int | None) -> list[list[tuple[str, float]]]:
        qe = self._qe()
        params = qe.SearchParams(hnsw_ef=ef) if ef else None
        out = []
        for qp, qf in zip(q_prefix, q_full, strict=True):
            request = qe.QueryRequest(
                limit=k,
                prefetches=[
                    qe.Prefetch(limit=kprime, query=qe.Query.Nearest(qp.tolist(), using="prefix"), params=params)
                ],
                query=qe.Query.Nearest(qf.tolist(), using="full"),
                with_payload=["id"],
            )
            out.append([(p.payload["id"], float(p.score)) for p in self.shard.query(request)])
        return out

    def exact(self, q_full, k: int) -> list[list[str]]:
        qe = self._qe()
        return [
            [
                p.payload["id"]
                for p in self.shard.query(
                    qe.QueryRequest(
                        limit=k,
                        query=qe.Query.Nearest(q.tolist(), using="full"),
                        params=qe.SearchParams(exact=True),
                        with_payload=["id"],
                    )
                )
            ]
            for q in q_full
        ]

    def retrieve(self, ids: list[str]) -> list[dict]:
        return [r.payload for r in self.shard.retrieve(ids, with_payload=True, with_vector=False)]

    def delete(self, ids: list[str]) -> None:
        self.shard.update(self._qe().UpdateOperation.delete_points(ids))

    def ids_where(self, key: str, value) -> list[str]:
        qe = self._qe()
        match = qe.Filter(must=[qe.FieldCondition(key=f"metadata.{key}", match=qe.MatchValue(value))])
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


class QdrantIndex(DatabaseBackend):
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
            raise MrlError(f"{location}: {what} (build it with mrl index build --backend qdrant)")
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
            raise MrlError(f"{location}: collection exists (use --overwrite)")
        if existing is not None and not existing:
            engine.close()
            raise MrlError(f"{location}: refusing to overwrite a collection that is not an mrl index")
        settings = stored_settings(
            model, full_dim, prefix_dim, store, {"m": hnsw_m, "ef_construct": ef_construction}, FORMAT_VERSION, rotation
        )
        engine.create(settings, hnsw_m, ef_construction, shards, replicas)
        self = cls(engine, location, settings, loaded_model)
        self._upload(unit, documents)
        if isinstance(engine, EdgeEngine):
            engine.finish_build()
        return self

    def _upload(self, unit: np.ndarray, documents: list[Document]) -> None:
        short = prefix(unit, self.prefix_dim)
        for start in range(0, len(documents), BATCH):
            part = documents[start : start + BATCH]
            payloads = [{"id": d.id, "text": d.text, "metadata": d.metadata or {}} for d in part]
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

    def search_keys(self, unit_queries, k, shortlist=None, ann_search=None, funnel=None, timings=None):
        """Keys are document ids; both passes run inside Qdrant, one query per vector."""
        self.check_positive_k(k)
        if funnel:
            raise MrlError("the Qdrant backend reranks in one stage (prefix -> full); drop --funnel")
        kprime = self.requested_shortlist(k, shortlist)
        unit_queries = rotate_rows(unit_queries, self.rotation)
        ef = ann_search or (self.tuned or {}).get("ann_search")
        timings = timings or SearchTimings()
        t0 = time.perf_counter()
        with self.lock:
            found = self.engine.query(
                prefix(unit_queries, self.prefix_dim), unit_queries, kprime, k, max(ef, kprime) if ef else None
            )
        timings.shortlist = time.perf_counter() - t0
        keys = [[i for i, _ in row] for row in found]
        self.check_found(keys, k)
        return keys, [[s for _, s in row] for row in found]

    def exact_keys(self, unit_queries: np.ndarray, k: int) -> list[list[str]]:
        queries = rotate_rows(unit_queries, self.rotation)
        with self.lock:
            return self.engine.exact(queries, k)

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

    def ids_where(self, key: str, value) -> list[str]:
        with self.lock:
            return sorted(self.engine.ids_where(key, value))

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

    def delete(self, ids: list[str]) -> int:
        check_unique(ids)
        found = self.get(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise unknown_ids_error(missing)
        with self.lock:
            self.engine.delete([point_id(i) for i in ids])
        return len(ids)

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
