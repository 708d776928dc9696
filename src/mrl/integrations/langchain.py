"""A LangChain ``VectorStore`` over any mrl index, and ``Embeddings`` from the index's model.

Why: a LangChain app (a RAG chain, an agent's retriever) gets mrl's two-pass search (a short-prefix
shortlist, an exact full-vector rerank) and its backends without changing anything but the store. The
store encodes with the index's own model, so documents and queries always share one embedding space;
``MrlEmbeddings`` exposes that model to the rest of a chain, optionally truncated (``dimensions``).

Example::

    from mrl.integrations.langchain import MrlVectorStore

    store = MrlVectorStore("idx/scifact")          # or "postgresql://user@host/db/docs", "qdrant-edge:///srv/docs"
    store.add_texts(["Vitamin D and hip fractures"], metadatas=[{"source": "notes"}], ids=["n1"])
    store.similarity_search_with_score("does vitamin D prevent fractures", k=3)
    retriever = store.as_retriever(search_kwargs={"k": 5})
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
from mrl.encode import prefix
from mrl.index.backend import SearchBackend, open_index


def _backend(location: str | Path | SearchBackend) -> SearchBackend:
    return location if isinstance(location, SearchBackend) else open_index(location)


class MrlEmbeddings(Embeddings):
    """The index's model as LangChain embeddings: unit vectors, or their re-normalized first ``dimensions``."""

    def __init__(self, index: str | Path | SearchBackend, dimensions: int | None = None):
        self.index = _backend(index)
        self.dimensions = dimensions or self.index.full_dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return prefix(self.index.encode(list(texts)), self.dimensions).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class MrlVectorStore(VectorStore):
    """LangChain's vector store interface over an mrl index (any location ``mrl.index.open_index`` takes).

    ``shortlist`` and ``ann_search`` (k' and the first pass's search knob) default to the index's tuned values.
    Writes are upserts by id, as LangChain's ``add_documents`` with ids expects.
    """

    def __init__(self, index: str | Path | SearchBackend, shortlist: int | None = None, ann_search: int | None = None):
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
        ids = [str(i) for i in ids] if ids else [str(uuid.uuid4()) for _ in texts]
        metadatas = metadatas or [{} for _ in texts]
        self.index.upsert([Document(i, t, dict(m)) for i, t, m in zip(ids, texts, metadatas, strict=True)])
        return ids

    def add_documents(self, documents: list[LCDocument], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id or str(uuid.uuid4()) for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids)

    def _search(self, query: str | np.ndarray, k: int, **kwargs: Any) -> list[tuple[LCDocument, float]]:
        k = min(k, self.index.count)
        if k <= 0:
            return []
        hits = self.index.search(
            query,
            k=k,
            shortlist=kwargs.get("shortlist", self.shortlist),
            ann_search=kwargs.get("ann_search", self.ann_search),
        )
        return [(LCDocument(page_content=h.text or "", metadata=h.metadata, id=h.id), h.score) for h in hits]

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

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        if not ids:
            raise ValueError("give the ids to delete (mrl does not delete a whole index through delete())")
        self.index.delete(list(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        found = self.index.get(list(ids))
        return [LCDocument(page_content=found[i].text, metadata=found[i].metadata, id=i) for i in ids if i in found]

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
