"""The router of a sharded index: one :class:`~mrl.index.interface.SearchIndex` over N shards, wherever they run.

A search is sent to every shard before the router waits for any (shards in this process run one after the other,
as they share its cores; remote ones run at once); each runs the whole two-pass search on its own documents (the
ANN shortlist of k' on the prefix, the exact rerank on the full vectors) and answers its top k with full scores; the
router keeps the best k of those by full score. Every shard shares one basis (:mod:`mrl.index.shards`), so a
shard's prefix scores are the single index's: of the single index's top k' by prefix, the ones a shard holds are
among that shard's top k'. The union of the shortlists therefore holds the single index's shortlist (with an exact
first pass; an ANN first pass misses alike in both), the rerank is exact, and the merged top k is at least as good at
the same k' per shard. The cost is N x k' reranked rows and the slowest shard's latency.

A write goes to the shard that owns each id (:func:`mrl.index.shards.shard_of`) and returns once that shard has
committed it (an embedded shard's commit is fsynced). A batch that spans shards is committed shard by shard; a shard
that cannot answer raises :class:`mrl.errors.Unavailable` naming it (HTTP 503), never a partial result.

Shards are reached through :class:`ShardClient`: :class:`LocalShard` (an embedded index in this process) or
:class:`mrl.cluster.serving.RayShard` (a Ray Serve deployment of replicas).

Example::

    from mrl.index import open_index
    index = open_index("idx/big")        # a folder with shards.json opens as a ShardedIndex of local shards
    hits = index.search("does vitamin D prevent fractures", k=10)
"""

from __future__ import annotations

import heapq
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.adaptive import AdaptiveWidth, WidthUsed
from mrl.index.filters import Filter
from mrl.index.interface import Hit, SearchIndex, SearchTimings, existing_ids_error, unknown_ids_error
from mrl.index.shards import ShardLayout, shard_numbers

COUNT_TTL_S = 1.0  # how stale the document count may be between a router's own writes (other routers write too)


@dataclass(frozen=True)
class ShardKey:
    """A hit's key in a sharded index: its shard and id (equality and hashing), with the shard's own key (row) and
    the hit itself carried along so that no second round trip fetches them."""

    shard: int
    id: str
    key: int = field(compare=False, default=-1)
    hit: Hit | None = field(compare=False, default=None)


@dataclass
class ShardAnswer:
    """One shard's answer to a batch of queries: per query its top hits by full score, with the rows they came from,
    and what the stages took (and an adaptive search read)."""

    hits: list[list[Hit]]
    rows: list[list[int]]
    shortlist_s: float = 0.0
    rerank_s: float = 0.0
    widths: list[WidthUsed] | None = None


class ShardClient(ABC):
    """One shard, as the router sees it. Every method may raise :class:`mrl.errors.Unavailable`."""

    shard: int

    @abstractmethod
    def search(
        self,
        unit_queries: np.ndarray,
        k: int,
        shortlist: int | None,
        ann_search: int | None,
        funnel: list[int] | None,
        filter: Filter,
        adaptive: AdaptiveWidth | None,
    ) -> ShardAnswer:
        """The shard's own two-pass top ``k`` (fewer where it holds fewer documents)."""

    @abstractmethod
    def exact(self, unit_queries: np.ndarray, k: int, filter: Filter) -> ShardAnswer:
        """The shard's exact full-width top ``k``."""

    @abstractmethod
    def describe(self) -> dict:
        """``count``, ``generation``, ``tuned``, ``prefix_dim``, ``full_dim``, ``model``, ``ann_search_grid``."""

    @abstractmethod
    def get(self, ids: list[str]) -> dict[str, Document]: ...

    @abstractmethod
    def ids_matching(self, filter: Filter) -> list[str]: ...

    @abstractmethod
    def write(self, documents: list[Document], vectors: np.ndarray, replace: bool) -> int:
        """Add (``replace`` False: ids must be new) or upsert; returns once durable."""

    @abstractmethod
    def delete(self, ids: list[str]) -> int:
        """Delete the present ones of ``ids``; returns how many went."""

    @abstractmethod
    def key_vectors(self, rows: list[int]) -> np.ndarray: ...

    @abstractmethod
    def sample_vectors(self, n: int, seed: int) -> np.ndarray: ...

    @abstractmethod
    def stats(self) -> dict: ...

    def start(self, method: str, *args) -> Callable[[], object]:
        """Start ``method(*args)`` and return what waits for its result, so the router starts every shard's call
        before it waits for any. Here the call runs now (a shard in this process shares its cores with the others);
        a remote client only sends it."""
        try:
            value = getattr(self, method)(*args)
        except Exception as exc:  # raised when waited for, like a remote call's error
            error = exc

            def fail():
                raise error

            return fail
        return lambda: value

    def close(self) -> None:  # noqa: B027 - a client that holds nothing has nothing to release
        """Release what the client holds."""


class ShardServer:
    """One shard's side of the router's calls, over the shard's embedded index: in this process (:class:`LocalShard`)
    or in a Ray Serve replica (:class:`mrl.cluster.serving.ShardReplica`).

    ``fresh_reads``: every read first picks up a generation another process committed (a cheap check of one small
    file), for replicas that share a shard's folder and take writes each.
    """

    def __init__(self, shard: int, index, fresh_reads: bool = False):
        self.shard = shard
        self.index = index
        self.fresh_reads = fresh_reads

    def _read(self):
        if self.fresh_reads:
            self.index.refresh()
        return self.index

    def search(self, unit_queries, k, shortlist, ann_search, funnel, filter, adaptive) -> ShardAnswer:
        """The shard's two-pass top ``k`` (fewer where it holds fewer), hits with their documents and rows."""
        index = self._read()
        timings = SearchTimings()
        live = index.count
        if live == 0:
            return ShardAnswer([[] for _ in unit_queries], [[] for _ in unit_queries])
        top = min(k, live)
        rows, scores = index.search_keys(
            unit_queries, top, shortlist and max(shortlist, top), ann_search, funnel, timings, filter, adaptive
        )
        return ShardAnswer(
            index.hits_for(rows, scores),
            [[int(r) for r in rr if r >= 0] for rr in np.asarray(rows).tolist()],
            timings.shortlist,
            timings.rerank,
            timings.widths,
        )

    def exact(self, unit_queries, k, filter) -> ShardAnswer:
        """The shard's exact top ``k`` with full scores (the reference of recall, and of tuning)."""
        index = self._read()
        top = min(k, index.count)
        if top == 0:
            return ShardAnswer([[] for _ in unit_queries], [[] for _ in unit_queries])
        rows = np.asarray(index.exact_keys(unit_queries, top, filter))
        stored = index.gen.stored_queries(unit_queries)
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        for i, rr in enumerate(rows):
            found = rr >= 0
            if found.any():
                vectors = index.key_vectors(rr[found])
                scores[i, found] = vectors @ stored[i, : vectors.shape[1]]
        return ShardAnswer(index.hits_for(rows, scores), [[int(r) for r in rr if r >= 0] for rr in rows.tolist()])

    def describe(self) -> dict:
        index = self._read()
        return {
            "count": index.count,
            "generation": index.generation,
            "tuned": index.tuned,
            "prefix_dim": index.prefix_dim,
            "full_dim": index.full_dim,
            "model": index.model_name,
            "ann_search_grid": index.ann_search_grid(),
        }

    def get(self, ids):
        return self._read().get(ids)

    def ids_matching(self, filter):
        return self._read().ids_matching(filter)

    def write(self, documents, vectors, replace) -> int:  # a write refreshes under the shard's file lock itself
        return (self.index.upsert if replace else self.index.add)(documents, vectors)

    def delete(self, ids) -> int:
        return self.index.delete(ids, missing_ok=True)

    def key_vectors(self, rows):
        return self._read().key_vectors(rows)

    def sample_vectors(self, n, seed):
        return self._read().sample_vectors(n, seed)

    def stats(self) -> dict:
        return self._read().stats()

    def close(self) -> None:
        self.index.close()


class LocalShard(ShardServer, ShardClient):
    """A shard that is an embedded index opened in this process: the router calls its :class:`ShardServer` directly."""

    def __init__(self, shard: int, folder: Path, io: str = "auto"):
        from mrl.index.embedded import Index

        super().__init__(shard, Index.open(folder, io=io))


class ShardedIndex(SearchIndex):
    """N shards behind one :class:`SearchIndex`: searches fan out and merge by full score, writes go to the owner.

    Open a sharded folder with :func:`mrl.index.open_index` (local shards) or serve it on a Ray cluster with
    :func:`mrl.cluster.serving.deploy` (replicated shards); build one with ``build_index(..., shards=N)``.
    """

    adaptive_width = True

    def __init__(self, location: str, layout: ShardLayout, clients: list[ShardClient], model=None):
        super().__init__()
        self.location = location
        self.layout = layout
        self.clients = clients
        self._model = model
        self._described: tuple[float, list[dict]] | None = None
        self._lock = threading.Lock()
        first = self._describe()[0]
        self.model_name = first["model"]
        self.full_dim = first["full_dim"]
        self.prefix_dim = first["prefix_dim"]

    @classmethod
    def open(cls, folder: str | Path, model=None, io: str = "auto") -> ShardedIndex:
        """Open a sharded folder with every shard in this process; refuses a missing or foreign shard by number."""
        folder = Path(folder)
        layout = ShardLayout.read(folder)
        layout.check(folder)
        clients = [LocalShard(s, layout.shard_folder(folder, s), io) for s in range(layout.shards)]
        return cls(str(folder), layout, clients, model)

    # ---- fan-out --------------------------------------------------------------------------------
    def _each(self, method: str, *args, per_shard: Callable[[int], tuple] | None = None, shards=None) -> list:
        """``method`` on every shard (or ``shards``), started on all before any is waited for; results in shard
        order. ``per_shard(shard)`` gives each shard its own arguments. The first shard that fails fails the whole
        call: no caller gets an answer with a shard silently missing."""
        chosen = [self.clients[s] for s in (range(len(self.clients)) if shards is None else shards)]
        waits = [c.start(method, *(per_shard(c.shard) if per_shard else args)) for c in chosen]
        return [wait() for wait in waits]

    def _describe(self, fresh: bool = False) -> list[dict]:
        with self._lock:
            cached = self._described
        if cached is not None and not fresh and time.monotonic() - cached[0] < COUNT_TTL_S:
            return cached[1]
        described = self._each("describe")
        with self._lock:
            self._described = (time.monotonic(), described)
        return described

    def _owners(self, ids: list[str]) -> dict[int, list[int]]:
        """Positions in ``ids`` by owning shard."""
        owners = shard_numbers(ids, self.layout.shards)
        return {int(s): np.flatnonzero(owners == s).tolist() for s in np.unique(owners)}

    # ---- the interface --------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return sum(d["count"] for d in self._describe())

    @property
    def tuned(self) -> dict | None:
        """The first shard's tuned settings: every shard of a build is tuned with the same target (each on its own
        documents), so they share the target recall the server checks."""
        return self._describe()[0]["tuned"]

    @property
    def generation(self) -> int:
        """The sum of the shards' generations: it grows with every committed write on any shard."""
        return sum(d["generation"] for d in self._describe())

    def search_keys(
        self,
        unit_queries: np.ndarray,
        k: int,
        shortlist: int | None = None,
        ann_search: int | None = None,
        funnel: list[int] | None = None,
        timings: SearchTimings | None = None,
        filter: Filter = None,
        adaptive: AdaptiveWidth | None = None,
    ) -> tuple[list[list[ShardKey]], list[list[float]]]:
        """Every shard's two-pass top ``k`` at once, merged by full score (see the module docstring)."""
        answers = self._each("search", unit_queries, k, shortlist, ann_search, funnel, filter, adaptive)
        if timings is not None:
            timings.shortlist = max(a.shortlist_s for a in answers)
            timings.rerank = max(a.rerank_s for a in answers)
            if adaptive is not None:
                queries = range(len(answers[0].hits))
                timings.widths = [merge_widths([a.widths[q] for a in answers if a.widths]) for q in queries]
        return merge_answers(answers, k)

    def exact_keys(self, unit_queries: np.ndarray, k: int, filter: Filter = None) -> list[list[ShardKey]]:
        return merge_answers(self._each("exact", unit_queries, k, filter), k)[0]

    def hits_for(self, keys: list[list[ShardKey]], scores: list[list[float]]) -> list[list[Hit]]:
        return [[Hit(key.id, float(s), key.hit.text, key.hit.metadata) for key, s in zip(kk, ss, strict=True)]
                for kk, ss in zip(keys, scores, strict=True)]  # fmt: skip

    def key_vectors(self, keys: list[ShardKey]) -> np.ndarray:
        """Stored vectors in the shared basis, so inner products across shards are the model's."""
        out = np.zeros((len(keys), self.full_dim), dtype=np.float32)  # keep_dims: the dropped tail reads as zeros
        by_shard: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_shard.setdefault(key.shard, []).append(i)
        shards = sorted(by_shard)
        found = self._each("key_vectors", per_shard=lambda s: ([keys[i].key for i in by_shard[s]],), shards=shards)
        for shard, vectors in zip(shards, found, strict=True):
            rows = by_shard[shard]
            out[rows, : vectors.shape[1]] = vectors
        return out

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        """About ``n`` live vectors drawn from every shard in proportion to its size."""
        counts = np.array([d["count"] for d in self._describe(fresh=True)])
        take = np.floor(n * counts / max(1, counts.sum())).astype(int)
        take[np.argmax(counts)] += n - take.sum()
        parts = self._each("sample_vectors", per_shard=lambda s: (int(take[s]), seed + s))
        return np.concatenate([p for p in parts if len(p)])

    def ann_search_grid(self) -> list[int | None]:
        return self._describe()[0]["ann_search_grid"]

    def set_tuned(self, tuned: dict) -> None:
        raise MrlError(
            "a sharded index is tuned shard by shard at build (`target_recall`); tune one shard's folder to change it"
        )

    def get(self, ids: list[str]) -> dict[str, Document]:
        owners = self._owners(ids)
        found: dict[str, Document] = {}
        for part in self._each("get", per_shard=lambda s: ([ids[i] for i in owners[s]],), shards=sorted(owners)):
            found.update(part)
        return found

    def ids_matching(self, filter: Filter = None) -> list[str]:
        return sorted(i for part in self._each("ids_matching", filter) for i in part)

    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add new documents to their owners; an id that exists anywhere refuses the whole batch before any write."""
        unit = self.vectors_for(documents, vectors)
        existing = self.get([d.id for d in documents])
        if existing:
            raise existing_ids_error(list(existing))
        return self._write(documents, unit, replace=False)

    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add or replace documents on their owners; each owner commits its part before this returns."""
        return self._write(documents, self.vectors_for(documents, vectors), replace=True)

    def _write(self, documents: list[Document], unit: np.ndarray, replace: bool) -> int:
        owners = self._owners([d.id for d in documents])
        parts = {s: ([documents[i] for i in rows], unit[rows], replace) for s, rows in owners.items()}
        done = self._each("write", per_shard=parts.__getitem__, shards=sorted(owners))
        self._described = None
        return sum(done)

    def delete(self, ids: list[str], missing_ok: bool = False) -> int:
        if not missing_ok:
            missing = [i for i in ids if i not in self.get(ids)]
            if missing:
                raise unknown_ids_error(missing)
        owners = self._owners(list(ids))
        done = self._each("delete", per_shard=lambda s: ([ids[i] for i in owners[s]],), shards=sorted(owners))
        self._described = None
        return sum(done)

    def stats(self) -> dict:
        shards = self._each("stats")
        return {
            "path": self.location,
            "model": self.model_name,
            "documents": sum(s["documents"] for s in shards),
            "full_dim": self.full_dim,
            "prefix_dim": self.prefix_dim,
            "shards": self.layout.shards,
            "build_id": self.layout.build_id,
            "ram_bytes": sum(s["ram_bytes"] for s in shards),
            "disk_bytes": sum(s["disk_bytes"] for s in shards),
            "per_shard": [{"shard": i, **s} for i, s in enumerate(shards)],
        }

    def compare_widths(self, query, k: int = 10, dims=(32, 64, 128)) -> dict:
        raise MrlError("`dims`: the side-by-side width view runs on one index; open one shard's folder for it")

    def close(self) -> None:
        for client in self.clients:
            client.close()


def merge_answers(answers: list[ShardAnswer], k: int) -> tuple[list[list[ShardKey]], list[list[float]]]:
    """The best ``k`` of every shard's hits per query by full score (ties: lower shard first, as the shards ranked)."""
    keys: list[list[ShardKey]] = []
    scores: list[list[float]] = []
    for q in range(len(answers[0].hits)):
        candidates = [
            (hit.score, -shard, -rank, ShardKey(shard, hit.id, a.rows[q][rank], hit))
            for shard, a in enumerate(answers)
            for rank, hit in enumerate(a.hits[q])
        ]
        merged = heapq.nlargest(k, candidates, key=lambda t: t[:3])
        keys.append([t[3] for t in merged])
        scores.append([t[0] for t in merged])
    return keys, scores


def merge_widths(parts: list[WidthUsed]) -> WidthUsed:
    """What an adaptive search read on every shard for one query: rows and bytes add up, the width is the widest."""
    return WidthUsed(
        dims=max(p.dims for p in parts),
        widened=sum(p.widened for p in parts),
        candidates=sum(p.candidates for p in parts),
        rerank_bytes=sum(p.rerank_bytes for p in parts),
        fixed_bytes=sum(p.fixed_bytes for p in parts),
    )
