"""The two-pass index in Qdrant: two named vectors per point and the Query API's prefetch.

Each point carries ``prefix`` (the first p dims, which Qdrant normalizes for cosine, with an HNSW
graph) and ``full`` (the whole vector, on disk, no graph: it is only ever scored for candidates).
A search is one Query API call: ``prefetch`` takes k' candidates from the prefix graph, the outer
query rescores just those on ``full``. Qdrant has no expression index, so the prefix is stored a
second time; that costs p x 4 bytes per point (256 bytes at p = 64), the price of running inside Qdrant.

Document ids become UUIDv5 point ids (Qdrant takes only integers and UUIDs); the id itself, the
text and the metadata are the payload. Settings (model, dims, tuned k') live in the collection's
metadata. The same code takes a server (``qdrant://host:6333/collection``; ``qdrant+https://`` for
TLS, API key from ``$QDRANT_API_KEY``), where ``shards`` and ``replicas`` spread the collection over
a cluster, or Qdrant's local mode (``qdrant:///abs/path/collection``), in process and on disk.

Qdrant applies each write request atomically but has no transactions across requests: a large
add is sent in batches, and a failure part-way leaves the earlier batches written (rerun with upsert).
"""

from __future__ import annotations

import os
import threading
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
    DEFAULT_SHORTLIST_FACTOR,
    Hit,
    SearchBackend,
    SearchTimings,
    check_unique,
    existing_ids_error,
    unit_vectors,
    unknown_ids_error,
)

FORMAT_VERSION = 1
NAMESPACE = uuid.UUID("6f0d6a43-3c55-4f1b-9a51-0b8f6f2f4a11")  # fixed: the same id maps to the same point
BATCH = 256
# local mode scores every point exactly and says so on each query; that is expected here, not news
warnings.filterwarnings("ignore", message="Local mode performs exact", category=UserWarning)


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, doc_id))


def parse_location(location: str) -> tuple[dict, str]:
    """``qdrant://h:6333/c`` -> ({"url": "http://h:6333"}, "c"); ``qdrant:///dir/c`` -> ({"path": "/dir"}, "c")."""
    parts = urlsplit(location)
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


class QdrantIndex(SearchBackend):
    """A two-pass Matryoshka index in a Qdrant collection; open with :meth:`open`, create with :meth:`build`.

    Example::

        from mrl.index.qdrant import QdrantIndex
        index = QdrantIndex.build("qdrant://localhost:6333/docs", vectors, documents, prefix_dim=64)
        index.search(query_vector, k=10)
    """

    def __init__(self, client, location: str, collection: str, settings: dict, model=None):
        super().__init__()
        self.client = client
        self.location = location
        self.collection = collection
        self.settings = settings
        self._model = model
        self.lock = threading.Lock()  # local mode is not thread-safe; a server connection does not mind
        self.model_name = settings["model"]
        self.full_dim = settings["full_dim"]
        self.prefix_dim = settings["prefix_dim"]

    @staticmethod
    def location_for(url: str | None, path: Path | None, collection: str) -> str:
        """The location string for a server URL or a local-mode folder."""
        if url:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            scheme = "qdrant+https" if parts.scheme == "https" else "qdrant"
            return f"{scheme}://{parts.netloc}/{collection}"
        return f"qdrant://{Path(path).resolve()}/{collection}"

    @staticmethod
    def connect(location: str):
        from qdrant_client import QdrantClient

        target, collection = parse_location(location)
        try:
            if "url" in target:
                client = QdrantClient(url=target["url"], api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
                client.get_collections()  # fail now, clearly, rather than on the first search
            else:
                Path(target["path"]).mkdir(parents=True, exist_ok=True)
                client = QdrantClient(path=target["path"])
        except Exception as exc:  # connection errors come as several types (httpx, grpc, portalocker)
            where = target.get("url") or target.get("path")
            raise MrlError(f"cannot open Qdrant at {where}: {str(exc).strip().splitlines()[0]}") from None
        return client, collection

    # ---- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, location: str, model=None) -> QdrantIndex:
        client, collection = cls.connect(location)
        if not client.collection_exists(collection):
            client.close()
            raise MrlError(f"{location}: no such collection (build it with mrl index build --backend qdrant)")
        info = client.get_collection(collection)
        settings = (info.config.metadata or {}).get("mrl")
        if settings is None:
            client.close()
            raise MrlError(f"{location}: collection is not an mrl index")
        if settings.get("format_version", 0) > FORMAT_VERSION:
            client.close()
            raise MrlError(f"{location} was written by a newer mrl; upgrade mrl")
        vectors = info.config.params.vectors
        widths = {name: v.size for name, v in vectors.items()} if isinstance(vectors, dict) else {}
        expected = {"prefix": settings["prefix_dim"], "full": settings["full_dim"]}
        if widths != expected:
            client.close()
            raise MrlError(f"{location}: collection holds vectors {widths}, the index expects {expected}")
        return cls(client, location, collection, settings, model)

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
    ) -> QdrantIndex:
        """Create the collection and upload the points; the prefix graph is built as points arrive."""
        from qdrant_client import models

        if store not in ("float32", "float16"):
            raise MrlError(f"--store must be float32 or float16, not '{store}'")
        vectors = np.asarray(vectors)
        if len(documents) != len(vectors):
            raise MrlError(f"{len(documents)} documents but {len(vectors)} vectors")
        if not documents:
            raise MrlError("nothing to index: the corpus is empty")
        check_unique([d.id for d in documents])
        full_dim = vectors.shape[1]
        if not 0 < prefix_dim <= full_dim:
            raise MrlError(f"--prefix-dim {prefix_dim} must be between 1 and the vector width {full_dim}")
        unit = unit_vectors(vectors, full_dim, "corpus vectors")
        client, collection = cls.connect(location)
        if client.collection_exists(collection):
            metadata = client.get_collection(collection).config.metadata or {}
            if not overwrite:
                client.close()
                raise MrlError(f"{location}: collection exists (use --overwrite)")
            if "mrl" not in metadata:
                client.close()
                raise MrlError(f"{location}: refusing to overwrite a collection that is not an mrl index")
            client.delete_collection(collection)
        settings = {
            "model": model,
            "full_dim": full_dim,
            "prefix_dim": prefix_dim,
            "store": store,
            "ann": "hnsw",
            "ann_params": {"m": hnsw_m, "ef_construct": ef_construction},
            "tuned": None,
            "format_version": FORMAT_VERSION,
        }
        datatype = models.Datatype.FLOAT16 if store == "float16" else models.Datatype.FLOAT32
        client.create_collection(
            collection,
            vectors_config={
                "prefix": models.VectorParams(
                    size=prefix_dim,
                    distance=models.Distance.COSINE,
                    hnsw_config=models.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construction),
                ),
                # m=0: no graph for the full vector; it is only scored for prefetched candidates
                "full": models.VectorParams(
                    size=full_dim,
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
        self = cls(client, location, collection, settings, loaded_model)
        self._upload(unit, documents)
        return self

    def _upload(self, unit: np.ndarray, documents: list[Document]) -> None:
        from qdrant_client import models

        short = prefix(unit, self.prefix_dim)
        for start in range(0, len(documents), BATCH):
            points = [
                models.PointStruct(
                    id=point_id(d.id),
                    vector={"prefix": short[i].tolist(), "full": unit[i].tolist()},
                    payload={"id": d.id, "text": d.text, "metadata": d.metadata or {}},
                )
                for i, d in enumerate(documents[start : start + BATCH], start)
            ]
            with self.lock:
                self.client.upsert(self.collection, points=points, wait=True)

    # ---- the backend interface -------------------------------------------------------------
    @property
    def count(self) -> int:
        with self.lock:
            return self.client.count(self.collection, exact=True).count

    @property
    def tuned(self) -> dict | None:
        return self.settings.get("tuned")

    def search_keys(self, unit_queries, k, shortlist=None, ann_search=None, funnel=None, timings=None):
        """Keys are document ids; one prefetch-then-rescore Query API request per batch."""
        from qdrant_client import models

        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise MrlError(f"k must be a positive integer, got {k}")
        if funnel:
            raise MrlError("the Qdrant backend reranks in one stage (prefix -> full); drop --funnel")
        kprime = max(int(shortlist or (self.tuned or {}).get("shortlist") or DEFAULT_SHORTLIST_FACTOR * k), k)
        ef = ann_search or (self.tuned or {}).get("ann_search")
        params = models.SearchParams(hnsw_ef=max(ef, kprime)) if ef else None
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(
                    query=prefix(q[None, :], self.prefix_dim)[0].tolist(), using="prefix", limit=kprime, params=params
                ),
                query=q.tolist(),
                using="full",
                limit=k,
                with_payload=["id"],
            )
            for q in unit_queries
        ]
        timings = timings or SearchTimings()
        t0 = time.perf_counter()
        with self.lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        timings.shortlist = time.perf_counter() - t0  # both passes run inside Qdrant
        keys = [[p.payload["id"] for p in r.points] for r in responses]
        scores = [[float(p.score) for p in r.points] for r in responses]
        if any(len(r) < k for r in keys) and k > self.count:
            raise MrlError(f"k={k} is larger than the number of documents in the index ({self.count})")
        return keys, scores

    def hits_for(self, keys, scores) -> list[list[Hit]]:
        docs = self.get(sorted({i for ks in keys for i in ks}))
        return [
            [Hit(i, s, docs[i].text, docs[i].metadata) for i, s in zip(ks, ss, strict=True) if i in docs]
            for ks, ss in zip(keys, scores, strict=True)
        ]

    def exact_keys(self, unit_queries: np.ndarray, k: int) -> list[list[str]]:
        from qdrant_client import models

        requests = [
            models.QueryRequest(
                query=q.tolist(), using="full", limit=k, params=models.SearchParams(exact=True), with_payload=["id"]
            )
            for q in unit_queries
        ]
        with self.lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[p.payload["id"] for p in r.points] for r in responses]

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        with self.lock:
            points, _ = self.client.scroll(self.collection, limit=5 * n, with_vectors=["full"], with_payload=False)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(points), size=min(n, len(points)), replace=False)
        return np.asarray([points[i].vector["full"] for i in chosen], dtype=np.float32)

    def ann_search_grid(self) -> list[int | None]:
        return [None, 128, 256, 512]

    def set_tuned(self, tuned: dict) -> None:
        settings = {**self.settings, "tuned": tuned}
        with self.lock:
            self.client.update_collection(self.collection, metadata={"mrl": settings})
        self.settings = settings

    def refresh(self) -> bool:
        with self.lock:
            settings = (self.client.get_collection(self.collection).config.metadata or {}).get("mrl")
        changed = settings != self.settings
        self.settings = settings or self.settings
        return changed

    def get(self, ids: list[str]) -> dict[str, Document]:
        with self.lock:
            points = self.client.retrieve(self.collection, ids=[point_id(i) for i in ids], with_payload=True)
        return {p.payload["id"]: Document(p.payload["id"], p.payload["text"], p.payload["metadata"]) for p in points}

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
        from qdrant_client import models

        check_unique(ids)
        found = self.get(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise unknown_ids_error(missing)
        with self.lock:
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=[point_id(i) for i in ids]), wait=True
            )
        return len(ids)

    def stats(self) -> dict:
        with self.lock:
            info = self.client.get_collection(self.collection)
        s = self.settings
        return {
            "path": self.location,
            "backend": "qdrant",
            "model": s["model"],
            "documents": self.count,
            "full_dim": s["full_dim"],
            "prefix_dim": s["prefix_dim"],
            "ann": "hnsw (qdrant)",
            "store": s["store"],
            "ann_params": s["ann_params"],
            "tuned": s["tuned"],
            "shards": info.config.params.shard_number,
            "replicas": info.config.params.replication_factor,
            "status": str(info.status),
        }

    def close(self) -> None:
        self.client.close()
