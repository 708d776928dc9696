"""The index interface: what the CLI, the server, the tuner and the integrations use, wherever the vectors live.

Three implementations share it: the embedded index (:class:`mrl.index.embedded.Index`, a folder on
disk), PostgreSQL + pgvector (:class:`mrl.index.postgres.PostgresIndex`) and Qdrant
(:class:`mrl.index.qdrant.QdrantIndex`). Each runs the same two-pass search (a shortlist of k'
candidates from an ANN index over the re-normalized prefix, an exact rerank on the full vector)
where its data lives, so a user who outgrows one machine changes the location string and nothing else.
This module imports none of them: :mod:`mrl.index.locations` opens and builds any of them by location.

Locations::

    idx/scifact                                      embedded index folder
    postgresql://user:password@host:5432/db/table    a table in PostgreSQL with pgvector (postgres:// too)
    qdrant://host:6333/collection                    a Qdrant server (qdrant+https:// for TLS)
    qdrant:///abs/path/collection                    qdrant-client's local mode (exact scoring, no HNSW)
    qdrant-edge:///abs/path                          Qdrant Edge: Qdrant's engine in this process

Example::

    from mrl.index import open_index
    index = open_index("postgresql://mrl@localhost:5432/search/scifact")
    hits = index.search("does vitamin D prevent fractures", k=10)
"""

from __future__ import annotations

import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from operator import attrgetter

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.adaptive import AdaptiveWidth, WidthUsed
from mrl.index.filters import Filter, parse_filter
from mrl.index.segments import check_store
from mrl.vectors.mmr import maximal_marginal_relevance
from mrl.vectors.rotation import fit_rotation, rotate_rows, rotation_from_text, rotation_to_text

DEFAULT_SHORTLIST_FACTOR = 10
AUTO = "auto"  # prefix_dim: let the tuner measure widths (embedded index) and keep the fastest
DEFAULT_TARGET_RECALL = 0.99  # recall@10 against exact search that tuning aims for when none is given
TUNE_SAMPLE = 200  # documents held out as tuning queries when no queries are given


@dataclass
class Hit:
    id: str
    score: float
    text: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class SearchTimings:
    """Seconds spent per stage of the last search call (for the server's per-stage metrics), and what an adaptive
    search read per query (:class:`mrl.index.adaptive.WidthUsed`; None for a fixed search)."""

    encode: float = 0.0
    shortlist: float = 0.0
    rerank: float = 0.0
    widths: list[WidthUsed] | None = None


def unit_vectors(
    vectors: np.ndarray, full_dim: int, what: str = "vector", row_numbers: np.ndarray | None = None
) -> np.ndarray:
    """Validate width and finiteness, then scale rows to unit length (cosine = inner product).

    With ``row_numbers`` (the rows' numbers in the whole corpus), an error names the first bad row.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2 or vectors.shape[1] != full_dim:
        raise MrlError(f"{what} has width {vectors.shape[-1]}, this index holds {full_dim}-dim vectors")

    def where(bad: np.ndarray) -> str:
        return f" (row {int(row_numbers[np.flatnonzero(bad)[0]])})" if row_numbers is not None else ""

    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise MrlError(f"{what} contains NaN or infinite values{where(~finite)}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise MrlError(f"{what} is all zeros{where(norms[:, 0] == 0)}")
    return vectors / norms


def check_unique(items: Iterable, key: Callable[[object], str] = str) -> None:
    """Refuse repeated ids (``key(item)`` of each item). Sorts 8-byte hashes, not strings, so millions of ids
    cost megabytes, not a list or set of them (``items`` may be the documents, read lazily); only ids whose
    hashes repeat are compared as strings, on a second pass (a collision alone is no duplicate)."""
    hashes = np.fromiter((hash(key(i)) for i in items), dtype=np.int64)
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return
    seen: set[str] = set()
    dupes = [i for i in map(key, items) if hash(i) in repeated and (i in seen or seen.add(i))]
    if dupes:
        raise MrlError(f"duplicate ids: {', '.join(dupes[:10])}")


def check_build_inputs(vectors: np.ndarray, documents: list[Document], prefix_dim: int, store: str) -> None:
    """The checks of every build that need only the shapes: they run before any vector is read."""
    check_store(store)
    if len(documents) != len(vectors):
        raise MrlError(f"{len(documents)} documents but {len(vectors)} vectors")
    if not documents:
        raise MrlError("nothing to index: the corpus is empty")
    if vectors.ndim != 2:
        raise MrlError(f"corpus vectors must be a 2-d matrix, got shape {vectors.shape}")
    check_unique(documents, key=attrgetter("id"))
    if not 0 < prefix_dim <= vectors.shape[1]:
        raise MrlError(f"`prefix_dim` {prefix_dim} must be between 1 and the vector width {vectors.shape[1]}")


def check_prefix_dim(prefix_dim: int | str) -> int | None:
    """``prefix_dim`` as a width, or None for ``"auto"``; anything else is refused before any work."""
    if prefix_dim == AUTO:
        return None
    if isinstance(prefix_dim, bool) or not isinstance(prefix_dim, int | np.integer):
        raise MrlError(f"`prefix_dim` must be a positive whole number or '{AUTO}', not {prefix_dim!r}")
    return int(prefix_dim)


def prepare_build(
    vectors: np.ndarray, documents: list[Document], prefix_dim: int, store: str, rotate: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check what every backend's build checks before touching storage.

    Returns the unit vectors as they will be stored, and the rotation they are stored in (None without
    ``rotate``; :mod:`mrl.index.rotation`).
    """
    vectors = np.asarray(vectors)
    check_build_inputs(vectors, documents, prefix_dim, store)
    full_dim = vectors.shape[1]
    unit = unit_vectors(vectors, full_dim, "corpus vectors")
    rotation = fit_rotation(unit) if rotate else None
    return rotate_rows(unit, rotation, out=unit), rotation  # unit_vectors returned a fresh array


def stored_settings(
    model: str | None,
    full_dim: int,
    prefix_dim: int,
    store: str,
    ann_params: dict,
    version: int,
    rotation: np.ndarray | None = None,
) -> dict:
    """What a database backend keeps beside its data, so that any client can open the index by its location.

    ``version`` is the backend's format version, recorded only where the index needs it: an unrotated index
    stays format 1, which older mrl releases read.
    """
    return {
        "model": model,
        "full_dim": full_dim,
        "prefix_dim": prefix_dim,
        "store": store,
        "ann": "hnsw",
        "ann_params": ann_params,
        "tuned": None,
        "rotation": rotation_to_text(rotation),
        "format_version": version if rotation is not None else 1,
    }


def existing_ids_error(existing: list[str]) -> MrlError:
    return MrlError(f"ids already in the index: {', '.join(existing[:10])} (use upsert)")


def unknown_ids_error(missing: list[str]) -> MrlError:
    return MrlError(f"unknown ids: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")


class SearchIndex(ABC):
    """A two-pass Matryoshka index, wherever it is stored.

    Implementations provide the storage-specific methods; text handling, validation and batching
    of :meth:`search` are shared here so every backend answers the same call the same way.
    """

    location: str
    model_name: str | None
    full_dim: int
    prefix_dim: int
    adaptive_width = False  # whether search_keys takes ``adaptive`` (the rerank is ours, not a database's)
    _adaptive_default_said = False
    _model = None

    def __init__(self) -> None:
        self.last_timings = SearchTimings()

    # ---- what each backend provides ------------------------------------------------------------
    @property
    @abstractmethod
    def count(self) -> int:
        """Live documents."""

    @property
    @abstractmethod
    def tuned(self) -> dict | None:
        """Auto-tuned search settings (``shortlist``, ``ann_search``, ``target_recall``...), if any."""

    @property
    def generation(self) -> int | None:
        """A number that grows with every committed write, where the backend has one."""
        return None

    @abstractmethod
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
    ) -> tuple[list[list], list[list[float]]]:
        """Two-pass search on unit vectors: per query, the keys of the top ``k`` and their scores.

        ``filter`` (:mod:`mrl.index.filters`) lets only matching documents rank; fewer than ``k`` may match.
        ``adaptive`` (:mod:`mrl.index.adaptive`): where the backend reranks itself (:attr:`adaptive_width`), the full
        vectors are read only for the candidates a middle width leaves in doubt; the others refuse it."""

    @abstractmethod
    def key_vectors(self, keys: list) -> np.ndarray:
        """The stored full vectors of these keys, in order (rotated where the index rotates: inner products
        between them are the model's)."""

    @abstractmethod
    def hits_for(self, keys: list[list], scores: list[list[float]]) -> list[list[Hit]]:
        """Turn keys from :meth:`search_keys` into hits with ids, text and metadata."""

    @abstractmethod
    def exact_keys(self, unit_queries: np.ndarray, k: int, filter: Filter = None) -> list[list]:
        """Exact full-dim top-``k`` keys among the ``filter``'s matches (the reference recall is measured against)."""

    @abstractmethod
    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        """Full unit vectors of ``n`` random live documents (tuning queries when none are given)."""

    @abstractmethod
    def ann_search_grid(self) -> list[int | None]:
        """The ANN search-effort values (efSearch / nprobe) worth trying when tuning."""

    @abstractmethod
    def set_tuned(self, tuned: dict) -> None:
        """Store tuned settings with the index so every later search uses them."""

    @abstractmethod
    def get(self, ids: list[str]) -> dict[str, Document]:
        """The live documents among ``ids`` (absent ids are simply not in the result)."""

    @abstractmethod
    def ids_matching(self, filter: Filter = None) -> list[str]:
        """Ids of the live documents a filter matches (:mod:`mrl.index.filters`; None: every document), sorted."""

    def ids_where(self, key: str, value: str | int | bool) -> list[str]:
        """Ids of the live documents whose metadata holds ``key: value`` (e.g. every chunk of one source document)."""
        return self.ids_matching({key: value})

    @abstractmethod
    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add new documents (ids must be new; nothing is written otherwise); encodes when no vectors are given."""

    @abstractmethod
    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        """Add or replace documents by id, in one transaction."""

    @abstractmethod
    def delete(self, ids: list[str], missing_ok: bool = False) -> int:
        """Delete documents by id; returns how many were deleted. Unknown ids are an error and nothing is deleted,
        unless ``missing_ok``: then the present ones go and the rest is a no-op (LangChain's and LlamaIndex's rule)."""

    @abstractmethod
    def stats(self) -> dict:
        """Sizes and settings, for ``mrl index stats`` and the server's ``/stats``."""

    @property
    def beam_bounds_shortlist(self) -> bool:
        """True where the first pass is a graph whose beam is raised to k': the tuner then tries k' <= beam only."""
        return False

    def refresh(self) -> bool:
        """Pick up writes made by other processes; database backends always read the latest state."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections and files."""

    # ---- shared behaviour ------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            from mrl.model import load_model

            self._model = load_model(self.model_name)
        return self._model

    def use_backend(self, backend: str) -> None:
        """Encode queries and new documents with the index's model on another backend (``onnx``, ``onnx-int8``)."""
        from mrl.model import load_model

        self._model = load_model(self.model_name, backend=backend)

    def encode(self, texts: list[str]) -> np.ndarray:
        from mrl.encode import encode_texts

        return encode_texts(self.model, texts, progress=False)

    def vectors_for(self, documents: list[Document], vectors: np.ndarray | None) -> np.ndarray:
        """Unit full vectors for documents to write: the given ones, checked, or encoded from the texts."""
        if not documents:
            raise MrlError("no documents given")
        check_unique([d.id for d in documents])
        if vectors is None:
            vectors = self.encode([d.text for d in documents])
        if len(vectors) != len(documents):
            raise MrlError(f"{len(documents)} documents but {len(vectors)} vectors")
        return unit_vectors(vectors, self.full_dim, "document vectors")

    @staticmethod
    def check_positive_k(k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise MrlError(f"`k` must be a positive integer, got {k}")

    def check_k(self, k: int) -> None:
        self.check_positive_k(k)
        live = self.count
        if k > live:
            raise MrlError(f"k={k} is larger than the number of documents in the index ({live})")

    def check_found(self, keys: list[list], k: int) -> None:
        """After a database search: fewer than k hits means k exceeded the corpus (counted only then)."""
        if any(len(r) < k for r in keys):
            self.check_k(k)

    def requested_shortlist(self, k: int, shortlist: int | None) -> int:
        """k': the given value, else the tuned one, else 10 x k; never below k."""
        return max(int(shortlist or (self.tuned or {}).get("shortlist") or DEFAULT_SHORTLIST_FACTOR * k), k)

    def shortlist_size(self, k: int, shortlist: int | None) -> int:
        """:meth:`requested_shortlist`, and never above the corpus."""
        return min(self.requested_shortlist(k, shortlist), self.count)

    def search(
        self,
        queries,
        k: int = 10,
        shortlist: int | None = None,
        ann_search: int | None = None,
        funnel: list[int] | None = None,
        filter: Filter = None,
        adaptive: bool | AdaptiveWidth = False,
    ):
        """Top-``k`` hits for one query (text or vector: returns a list of hits) or a batch (list of lists).

        ``shortlist`` (k') and ``ann_search`` (efSearch / nprobe) default to the tuned values stored
        with the index, else 10 x k. ``funnel`` adds intermediate rerank dims between the prefix and
        full (e.g. ``[128]`` for 64 -> 128 -> full). ``filter`` (:mod:`mrl.index.filters`, e.g.
        ``{"source": "pubmed", "year": {"$gte": 2020}}``) restricts the hits to matching documents.
        ``adaptive`` (:mod:`mrl.index.adaptive`; ``True``: the margin calibrated by tuning) reads the full vectors
        only of the candidates a middle width leaves in doubt; ``last_timings.widths`` says what each query read.
        """
        single = isinstance(queries, str) or (isinstance(queries, np.ndarray) and queries.ndim == 1)
        batch = [queries] if single else list(queries) if not isinstance(queries, np.ndarray) else queries
        if len(batch) == 0:
            raise MrlError("no queries given")
        node = parse_filter(filter)  # a malformed filter fails before any encoding
        width_setting = self.adaptive_setting(adaptive)
        timings = SearchTimings()
        t0 = time.perf_counter()
        if isinstance(batch, np.ndarray) or not isinstance(batch[0], str):
            vectors = unit_vectors(np.asarray(batch, dtype=np.float32), self.full_dim, "query vector")
        else:
            if any(not isinstance(q, str) or not q.strip() for q in batch):
                raise MrlError("`queries` must be non-empty text")
            _ = self.model  # load outside the timed section: the first call pays for it once
            t0 = time.perf_counter()
            vectors = unit_vectors(self.encode(list(batch)), self.full_dim, "query embedding")
        timings.encode = time.perf_counter() - t0
        keys, scores = self.search_keys(vectors, k, shortlist, ann_search, funnel, timings, node, width_setting)
        self.last_timings = timings
        results = self.hits_for(keys, scores)
        return results[0] if single else results

    def adaptive_setting(self, adaptive: bool | AdaptiveWidth) -> AdaptiveWidth | None:
        """What ``adaptive`` asks of a search: None (fixed width), the tuned setting (True; the default, said once
        in a warning, when the index was never calibrated) or the one given."""
        if adaptive is False or adaptive is None:
            return None
        self.check_adaptive(adaptive)
        if adaptive is True:
            setting, default_used = AdaptiveWidth.from_tuned(self.tuned, self.prefix_dim, self.full_dim)
            if default_used and not self._adaptive_default_said:  # said once per opened index, not per search
                self._adaptive_default_said = True
                warnings.warn(default_used, stacklevel=3)
            return setting
        if not isinstance(adaptive, AdaptiveWidth):
            raise MrlError(f"`adaptive` must be True, False or an AdaptiveWidth, got {adaptive!r}")
        return adaptive

    def check_adaptive(self, adaptive: bool | AdaptiveWidth | None) -> None:
        """Refuse adaptive width on a backend whose rerank runs inside its database, at one width."""
        if adaptive not in (None, False) and not self.adaptive_width:
            raise MrlError(
                f"`adaptive`: the {type(self).__name__} backend reranks inside its database at one width; "
                "adaptive width needs an embedded index"
            )

    def compare_widths(self, query, k: int = 10, dims: Iterable[int] = (32, 64, 128)) -> dict:
        """One query's top ``k`` (text or vector) at each of ``dims`` and at the full width, over the same first-pass
        candidates, with each width's overlap@k against the full width, and what adaptive width (the index's
        setting) read for it: the search page's side-by-side view. Needs a backend that reranks itself
        (:attr:`adaptive_width`; it provides ``rank_at_widths``).

        A width's column is the adaptive rerank with margin 0 (it never widens), so the columns differ only in how
        many dims scored the candidates.
        """
        self.check_positive_k(k)
        dims = sorted(set(dims))
        bad = [d for d in dims if not isinstance(d, int) or not 0 < d < self.full_dim]
        if bad:
            raise MrlError(f"`dims`: {bad[0]} is not between 1 and {self.full_dim - 1} (full width is always shown)")
        setting = self.adaptive_setting(True)  # also refuses a backend that reranks in its database
        if isinstance(query, str):
            if not query.strip():
                raise MrlError("`query` must be non-empty text")
            query = self.encode([query])
        vector = unit_vectors(np.asarray(query, dtype=np.float32).reshape(1, -1), self.full_dim, "query vector")
        ranked, used = self.rank_at_widths(vector, k, dims, setting)
        full = {key for key in ranked[-1][1][0] if not _padding(key)}
        columns = []
        for width, rows, scores in ranked:
            found = {key for key in rows[0] if not _padding(key)}
            columns.append({"dims": width, "hits": self.hits_for(rows, scores)[0], "overlap": len(found & full) / k})
        return {"k": k, "columns": columns, "adaptive": {**asdict(setting), **used.as_dict()}}

    def max_marginal_relevance(
        self, query, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, filter: Filter = None
    ) -> list[Hit]:
        """``k`` hits for one query (text or vector) picked by maximal marginal relevance
        (:mod:`mrl.vectors.mmr`) among the ``fetch_k`` best, reranked on the full vectors: relevant, and unlike
        each other. ``lambda_mult`` 1 is plain relevance, 0 pure diversity."""
        self.check_positive_k(k)
        if not isinstance(fetch_k, int) or fetch_k < k:
            raise MrlError(f"`fetch_k` must be a whole number of at least k ({k}), got {fetch_k}")
        if not 0 <= lambda_mult <= 1:
            raise MrlError(f"`lambda_mult` must be between 0 and 1, got {lambda_mult}")
        node = parse_filter(filter)
        if isinstance(query, str):
            if not query.strip():
                raise MrlError("queries must be non-empty text")
            vector = self.encode([query])
        else:
            vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
        vector = unit_vectors(vector, self.full_dim, "query vector")
        fetch = min(fetch_k, self.count)
        if fetch == 0:
            return []
        keys, scores = self.search_keys(vector, fetch, filter=node)
        found = [(key, score) for key, score in zip(keys[0], scores[0], strict=True) if not _padding(key)]
        if not found:
            return []
        vectors = self.key_vectors([key for key, _ in found])
        chosen = maximal_marginal_relevance(np.asarray([s for _, s in found]), vectors, k, lambda_mult)
        return self.hits_for([[found[i][0] for i in chosen]], [[found[i][1] for i in chosen]])[0]


class DatabaseIndex(SearchIndex):
    """A backend whose data and settings live in a database (PostgreSQL, Qdrant) that any client reaches.

    Keys are document ids. The settings record (:func:`stored_settings`) is read and written through
    :meth:`read_settings` / :meth:`write_settings`; everything built on it is shared here.
    """

    def __init__(self, location: str, settings: dict, model=None):
        super().__init__()
        self.location = location
        self.settings = settings
        self._model = model
        self.lock = threading.Lock()  # one client per process, shared by a server's threads: one call at a time
        self.model_name = settings["model"]
        self.full_dim = settings["full_dim"]
        self.prefix_dim = settings["prefix_dim"]
        self.rotation = rotation_from_text(settings.get("rotation"), self.full_dim)

    def vectors_for(self, documents: list[Document], vectors: np.ndarray | None) -> np.ndarray:
        """As for every backend, then in the basis the index stores its vectors in."""
        return rotate_rows(super().vectors_for(documents, vectors), self.rotation)

    @abstractmethod
    def read_settings(self) -> dict | None:
        """The settings record as stored now (None or empty when it is gone)."""

    @abstractmethod
    def write_settings(self, settings: dict) -> None:
        """Store the settings record."""

    @property
    def tuned(self) -> dict | None:
        return self.settings.get("tuned")

    def set_tuned(self, tuned: dict) -> None:
        settings = {**self.settings, "tuned": tuned}
        with self.lock:
            self.write_settings(settings)
        self.settings = settings

    def set_payload_indexes(self, indexes: dict[str, str]) -> None:
        """Record the metadata fields the database indexes for filters (and how), in the settings record."""
        settings = {**self.settings, "payload_indexes": indexes}
        with self.lock:
            self.write_settings(settings)
        self.settings = settings

    def refresh(self) -> bool:
        """Re-read settings (another client may have tuned the index); data is always current."""
        with self.lock:
            settings = self.read_settings()
        changed = bool(settings) and settings != self.settings
        self.settings = settings or self.settings
        if changed:  # a rebuild by another client may have refitted the rotation
            self.rotation = rotation_from_text(self.settings.get("rotation"), self.full_dim)
        return changed

    @property
    def beam_bounds_shortlist(self) -> bool:
        return True  # pgvector's ef_search and Qdrant's hnsw_ef are raised to k'

    def key_vectors(self, keys: list) -> np.ndarray:
        found = self.stored_vectors(keys)
        return np.stack([found[key] for key in keys]) if keys else np.zeros((0, self.full_dim), dtype=np.float32)

    @abstractmethod
    def stored_vectors(self, keys: list) -> dict:
        """The stored full vectors of these ids, by id."""

    def hits_for(self, keys: list[list], scores: list[list[float]]) -> list[list[Hit]]:
        docs = self.get(sorted({i for ks in keys for i in ks}))
        return [
            [Hit(i, s, docs[i].text, docs[i].metadata) for i, s in zip(ks, ss, strict=True) if i in docs]
            for ks, ss in zip(keys, scores, strict=True)
        ]

    def settings_stats(self, backend: str, ann: str, documents: int) -> dict:
        """The part of :meth:`stats` that the settings record answers."""
        s = self.settings
        return {
            "path": self.location,
            "backend": backend,
            "model": s["model"],
            "documents": documents,
            "full_dim": s["full_dim"],
            "prefix_dim": s["prefix_dim"],
            "ann": ann,
            "store": s["store"],
            "rotated": self.rotation is not None,
            "ann_params": s["ann_params"],
            "tuned": s["tuned"],
        }


def _padding(key) -> bool:
    """A result slot no document filled: row -1 of the embedded index (a database returns fewer keys)."""
    return isinstance(key, int | np.integer) and key < 0
