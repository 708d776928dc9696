"""A LangChain ``VectorStore`` over any mrl index, and ``Embeddings`` from the index's model.

Why: a LangChain app (a RAG chain, an agent's retriever) gets mrl's two-pass search (a short-prefix
shortlist, an exact full-vector rerank) and its backends without changing anything but the store. The
store encodes with the index's own model, so documents and queries always share one embedding space;
``MrlEmbeddings`` exposes that model to the rest of a chain, optionally truncated (``dimensions``).

Example::

    from mrl.integrations.langchain import MrlVectorStore

    store = MrlVectorStore("idx/scifact")          # or "postgresql://user@host/db/docs", "qdrant-edge:///srv/docs"
    store = MrlVectorStore.create("idx/notes", model="default")          # an empty index, to fill
    store.add_texts(["Vitamin D and hip fractures"], metadatas=[{"source": "notes"}], ids=["n1"])
    store.similarity_search_with_score("does vitamin D prevent fractures", k=3, filter={"source": "notes"})
    store.max_marginal_relevance_search("vitamin D", k=3, fetch_k=20, lambda_mult=0.5)
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 5, "filter": {"source": "notes"}})

Filters are dicts in the Chroma / MongoDB ``where`` shape (:mod:`mrl.index.filters`), as LangChain's PGVector and
Chroma stores take them; a callable filter is refused, since the index filters before it ranks, not after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from mrl.data import Document
from mrl.index import SearchIndex, open_index
from mrl.vectors.prefix import prefix


def _backend(location: str | Path | SearchIndex) -> SearchIndex:
    if isinstance(location, SearchIndex):
        return location
    if isinstance(location, Embeddings):
        raise TypeError(
            "MrlVectorStore takes an mrl index or its location (a folder, postgresql://..., qdrant-edge://...), not "
            "an Embeddings: the index encodes with its own model. For a new store use MrlVectorStore.create(folder, "
            "model=...) or MrlVectorStore.from_texts(texts, location=folder)"
        )
    return open_index(location)


def _filter(kwargs: dict):
    """The ``filter`` of a LangChain call, as mrl takes it: a where-shaped dict (a callable is refused)."""
    where = kwargs.get("filter")
    if callable(where):
        raise ValueError(
            "MrlVectorStore filters inside the index, before it ranks: give filter as a dict such as "
            '{"source": "pubmed", "year": {"$gte": 2020}} (operators: mrl.index.filters), not a callable'
        )
    return where


class MrlEmbeddings(Embeddings):
    """The index's model as LangChain embeddings: unit vectors, or their re-normalized first ``dimensions``."""

    def __init__(self, index: str | Path | SearchIndex, dimensions: int | None = None):
        self.index = _backend(index)
        self.dimensions = dimensions or self.index.full_dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return prefix(self.index.encode(list(texts)), self.dimensions).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class MrlVectorStore(VectorStore):
    """LangChain's vector store interface over an mrl index (any location ``mrl.index.open_index`` takes).

    ``shortlist`` and ``ann_search`` (k' and the first pass's search knob) default to the index's tuned values.
    Writes are upserts by id, as LangChain's ``add_documents`` with ids expects.
    """

    def __init__(self, index: str | Path | SearchIndex, shortlist: int | None = None, ann_search: int | None = None):
        self.index = _backend(index)
        self.shortlist = shortlist
        self.ann_search = ann_search
        self._embeddings = MrlEmbeddings(self.index)

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        texts = list(texts)
        if not texts:
            return []
        ids = [str(i) for i in ids] if ids else [str(uuid.uuid4()) for _ in texts]
        metadatas = metadatas or [{} for _ in texts]
        self.index.upsert([Document(i, t, dict(m)) for i, t, m in zip(ids, texts, metadatas, strict=True)])
        return ids

    def add_documents(self, documents: list[LCDocument], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id or str(uuid.uuid4()) for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids)

    def _search(self, query: str | np.ndarray, k: int, **kwargs: Any) -> list[tuple[LCDocument, float]]:
        where = _filter(kwargs)
        k = min(k, self.index.count)
        if k <= 0:
            return []
        hits = self.index.search(
            query,
            k=k,
            shortlist=kwargs.get("shortlist", self.shortlist),
            ann_search=kwargs.get("ann_search", self.ann_search),
            filter=where,
        )
        return [(_document(h), h.score) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[LCDocument]:
        return [doc for doc, _ in self._search(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[LCDocument, float]]:
        """Documents with their cosine similarity to the query (higher is closer)."""
        return self._search(query, k, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[LCDocument]:
        """Search with a full-width vector from the index's model (``embeddings.embed_query``)."""
        return [doc for doc, _ in self._search(np.asarray(embedding, dtype=np.float32), k, **kwargs)]

    def _select_relevance_score_fn(self):
        return lambda score: (score + 1.0) / 2.0  # cosine in [-1, 1] to LangChain's [0, 1]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[LCDocument]:
        """``k`` documents relevant to the query and unlike each other, among the ``fetch_k`` best reranked on the
        full vectors (:meth:`mrl.index.SearchIndex.max_marginal_relevance`)."""
        where = _filter(kwargs)
        hits = self.index.max_marginal_relevance(query, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=where)
        return [_document(h) for h in hits]

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[LCDocument]:
        vector = np.asarray(embedding, dtype=np.float32)
        where = _filter(kwargs)
        hits = self.index.max_marginal_relevance(vector, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=where)
        return [_document(h) for h in hits]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by id; ids that are not there are passed over. With no ids, every document goes (LangChain's
        contract: ``delete()`` empties the store)."""
        targets = self.index.ids_matching() if ids is None else list(ids)
        if targets:
            self.index.delete(targets, missing_ok=True)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        found = self.index.get(list(ids))
        return [LCDocument(page_content=found[i].text, metadata=found[i].metadata, id=i) for i in ids if i in found]

    @classmethod
    def create(cls, location: str | Path, model: str = "default", **create: Any) -> MrlVectorStore:
        """An empty embedded index at ``location`` (a new folder), encoding with ``model``; fill it with
        ``add_texts``/``add_documents``. ``create`` goes to :meth:`mrl.index.Index.create` (``prefix_dim``...)."""
        from mrl.index import Index

        return cls(Index.create(location, model=model, **create))

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        location: str | Path | None = None,
        model: str = "default",
        **build: Any,
    ) -> MrlVectorStore:
        """Build an embedded mrl index at ``location`` (a new folder) over ``texts``, encoded by ``model``.

        ``embedding`` is ignored: mrl encodes with the model the index records. ``build`` goes to
        :meth:`mrl.index.Index.build` (``prefix_dim``, ``ann``, ``quant``, ...).
        """
        from mrl.encode import encode_texts
        from mrl.index import Index
        from mrl.model import load_model

        if location is None:
            raise ValueError("MrlVectorStore.from_texts needs location=<a new index folder>")
        ids = [str(i) for i in ids] if ids else [str(uuid.uuid4()) for _ in texts]
        docs = [Document(i, t, dict(m)) for i, t, m in zip(ids, texts, metadatas or [{}] * len(texts), strict=True)]
        loaded = load_model(model)
        vectors = encode_texts(loaded, list(texts), progress=False)
        return cls(Index.build(location, vectors, docs, model=model, loaded_model=loaded, **build))


def _document(hit) -> LCDocument:
    return LCDocument(page_content=hit.text or "", metadata=hit.metadata, id=hit.id)
