"""A LlamaIndex vector store over any mrl index, and an embedding model from the index's model.

Why: a LlamaIndex pipeline (``VectorStoreIndex``, its retrievers and query engines) gets mrl's two-pass
search and backends by swapping the store. Use :class:`MrlEmbedding` of the same index as the pipeline's
``embed_model``, so nodes and queries are embedded by the model the index was built with; nodes that arrive
without an embedding are encoded by the index itself. Node content and relationships travel in the
document's metadata (LlamaIndex's own ``node_to_metadata_dict``), so ``delete(ref_doc_id)`` finds every
chunk of a source document on every backend.

Example::

    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from mrl.integrations.llama_index import MrlEmbedding, MrlVectorStore

    store = MrlVectorStore("idx/scifact")
    index = VectorStoreIndex.from_documents(
        [Document(text="Vitamin D and hip fractures", id_="notes-1")],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MrlEmbedding(store.client),
    )
    index.as_retriever(similarity_top_k=3).retrieve("does vitamin D prevent fractures")

LlamaIndex's ``MetadataFilters`` (``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin``, ``any``, ``contains``,
``is_empty``, nested, and/or/not), ``doc_ids``, ``node_ids`` and the MMR query mode all run inside the index: filters
become mrl's filter language (:mod:`mrl.index.filters`), so they apply before the index ranks, on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from mrl.data import Document
from mrl.index import SearchIndex, open_index
from mrl.vectors.prefix import prefix

NODE_ID = "node_id"  # the node's id, kept in its metadata too: what node_ids filter on
OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",  # a list-valued field matches a value when any element does
    FilterOperator.CONTAINS: "$eq",
}


def where(filters: MetadataFilters) -> dict:
    """LlamaIndex's ``MetadataFilters`` in mrl's filter language (:mod:`mrl.index.filters`)."""
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(where(f))
        elif f.operator == FilterOperator.IS_EMPTY:
            parts.append({f.key: {"$exists": False}})
        elif f.operator in OPERATORS:
            parts.append({f.key: {OPERATORS[f.operator]: f.value}})
        else:
            raise ValueError(f"MrlVectorStore does not filter with '{f.operator.value}' (on '{f.key}')")
    if filters.condition == FilterCondition.NOT:
        return {"$not": {"$and": parts}} if len(parts) != 1 else {"$not": parts[0]}
    return {"$or" if filters.condition == FilterCondition.OR else "$and": parts} if len(parts) != 1 else parts[0]


def _backend(location: str | Path | SearchIndex) -> SearchIndex:
    return location if isinstance(location, SearchIndex) else open_index(location)


class MrlEmbedding(BaseEmbedding):
    """The index's model as a LlamaIndex embedding model: unit vectors, or their first ``dimensions`` re-normalized."""

    dimensions: int | None = None
    _index: SearchIndex = PrivateAttr()

    def __init__(self, index: str | Path | SearchIndex, dimensions: int | None = None, **kwargs: Any):
        backend = _backend(index)
        super().__init__(dimensions=dimensions, model_name=str(backend.model_name), **kwargs)
        self._index = backend

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return prefix(self._index.encode(texts), self.dimensions or self._index.full_dim).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts))


class MrlVectorStore(BasePydanticVectorStore):
    """LlamaIndex's vector store interface over an mrl index; it stores the nodes' text itself."""

    stores_text: bool = True
    shortlist: int | None = None
    ann_search: int | None = None
    _index: SearchIndex = PrivateAttr()

    def __init__(self, index: str | Path | SearchIndex, shortlist: int | None = None, ann_search: int | None = None):
        super().__init__(shortlist=shortlist, ann_search=ann_search)
        self._index = _backend(index)

    @property
    def client(self) -> SearchIndex:
        return self._index

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Upsert the nodes by id; their embeddings are used when they have the index's full width."""
        if not nodes:
            return []
        docs = [
            Document(
                n.node_id,
                n.get_content(metadata_mode=MetadataMode.NONE),
                {**node_to_metadata_dict(n, remove_text=True, flat_metadata=False), NODE_ID: n.node_id},
            )
            for n in nodes
        ]
        width = self._index.full_dim
        embedded = [n.embedding for n in nodes]
        vectors = None
        if all(e is not None and len(e) == width for e in embedded):
            vectors = np.asarray(embedded, dtype=np.float32)
        self._index.upsert(docs, vectors)
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of one source document."""
        ids = self._index.ids_where("ref_doc_id", ref_doc_id)
        if ids:
            self._index.delete(ids, missing_ok=True)

    def delete_nodes(self, node_ids: list[str] | None = None, filters=None, **delete_kwargs: Any) -> None:
        """Delete the nodes with these ids that exist (others are passed over), or every node the filters match."""
        targets = list(node_ids or [])
        if filters is not None:
            matching = self._index.ids_matching(where(filters))
            targets = [i for i in matching if i in set(targets)] if node_ids is not None else matching
        if targets:
            self._index.delete(targets, missing_ok=True)

    def clear(self) -> None:
        """Delete every node."""
        ids = self._index.ids_matching()
        if ids:
            self._index.delete(ids, missing_ok=True)

    def get_nodes(self, node_ids: list[str] | None = None, filters=None) -> list[BaseNode]:
        """The nodes with these ids, or the ones the filters match (both: the ids among the matches)."""
        if node_ids is None and filters is None:
            raise ValueError("give node_ids or filters: MrlVectorStore does not list a whole index")
        ids = list(node_ids) if node_ids is not None else self._index.ids_matching(where(filters))
        if node_ids is not None and filters is not None:
            ids = [i for i in ids if i in set(self._index.ids_matching(where(filters)))]
        found = self._index.get(ids)
        return [self._node(found[i].id, found[i].text, found[i].metadata) for i in ids if i in found]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The two-pass search for ``query.query_embedding`` (full width, the index's model) or ``query.query_str``,
        restricted by ``filters``, ``doc_ids`` and ``node_ids``; the MMR mode picks by maximal marginal relevance."""
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise ValueError(f"MrlVectorStore answers the default and mmr query modes, not {query.mode.value}")
        if query.query_embedding is not None:
            target = np.asarray(query.query_embedding, dtype=np.float32)
        elif query.query_str:
            target = query.query_str
        else:
            raise ValueError("the query has neither an embedding nor text")
        parts = [where(query.filters)] if query.filters is not None else []
        if query.doc_ids:
            parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
        if query.node_ids:
            parts.append({NODE_ID: {"$in": list(query.node_ids)}})
        spec = {"$and": parts} if len(parts) > 1 else parts[0] if parts else None
        k = min(query.similarity_top_k, self._index.count)
        if k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if query.mode == VectorStoreQueryMode.MMR:
            lam = query.mmr_threshold if query.mmr_threshold is not None else 0.5
            fetch = kwargs.get("mmr_prefetch_k") or max(20, 4 * k)
            hits = self._index.max_marginal_relevance(target, k=k, fetch_k=fetch, lambda_mult=lam, filter=spec)
        else:
            hits = self._index.search(target, k=k, shortlist=self.shortlist, ann_search=self.ann_search, filter=spec)
        return VectorStoreQueryResult(
            nodes=[self._node(h.id, h.text, h.metadata) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.id for h in hits],
        )

    @staticmethod
    def _node(node_id: str, text: str | None, metadata: dict) -> BaseNode:
        if "_node_content" in metadata:  # written by add(): LlamaIndex's own serialisation
            node = metadata_dict_to_node(metadata, text=text)
        else:  # a document indexed by mrl itself
            from llama_index.core.schema import TextNode

            node = TextNode(id_=node_id, text=text or "", metadata=metadata)
        node.id_ = node_id
        return node
