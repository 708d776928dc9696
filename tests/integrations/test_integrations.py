"""LangChain and LlamaIndex over real mrl indexes (a folder and Qdrant Edge), with the frameworks' real classes."""

from __future__ import annotations

import numpy as np
import pytest

from mrl.index import Index
from mrl.index.qdrant import QdrantIndex
from mrl.vectors.prefix import prefix

QUERY = "does vitamin D prevent bone fractures"


@pytest.fixture(params=["folder", "qdrant-edge"])
def index(request, corpus, model, tmp_path):
    _, _, docs, vectors = corpus
    if request.param == "folder":
        return Index.build(tmp_path / "i", vectors, docs, model="default", loaded_model=model)
    return QdrantIndex.build(f"qdrant-edge://{tmp_path / 'e'}", vectors, docs, model="default", loaded_model=model)


def test_langchain_vector_store(index, tmp_path):
    from langchain_core.documents import Document as LCDocument

    from mrl.integrations.langchain import MrlEmbeddings, MrlVectorStore

    store = MrlVectorStore(index)
    found = store.similarity_search_with_score(QUERY, k=3)
    hits = index.search(QUERY, k=3)
    assert [(d.id, d.page_content) for d, _ in found] == [(h.id, h.text) for h in hits]
    assert np.allclose([s for _, s in found], [h.score for h in hits])  # the two-pass search, as mrl answers it
    assert all(0 <= r <= 1 for _, r in store.similarity_search_with_relevance_scores(QUERY, k=3))

    ids = store.add_documents(
        [LCDocument(page_content="Vitamin D supplements cut hip fractures in the elderly", metadata={"src": "n"})],
        ids=["note-1"],
    )
    assert ids == ["note-1"] and store.get_by_ids(["note-1", "nope"])[0].metadata == {"src": "n"}
    assert store.similarity_search("vitamin D supplements hip fractures elderly", k=1)[0].id == "note-1"
    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert retriever.invoke("vitamin D supplements hip fractures elderly")[0].id == "note-1"
    assert store.delete(["note-1", "never-there"]) and store.get_by_ids(["note-1"]) == []  # missing ids: no-op
    assert store.add_texts([]) == [] and store.embeddings.embed_documents([]) == []

    vector = store.embeddings.embed_query(QUERY)
    assert [d.id for d in store.similarity_search_by_vector(vector, k=3)] == [h.id for h in hits]
    short = MrlEmbeddings(index, dimensions=64).embed_query(QUERY)
    assert np.allclose(short, prefix(np.asarray([vector]), 64)[0], atol=1e-6)


def test_langchain_from_texts_builds_an_index(tmp_path):
    from mrl.integrations.langchain import MrlVectorStore

    texts = [f"note {i} about {'vitamin D' if i % 2 else 'aspirin and stroke'}" for i in range(40)]
    store = MrlVectorStore.from_texts(texts, ids=[f"t{i}" for i in range(40)], location=tmp_path / "lc", prefix_dim=32)
    assert Index.open(tmp_path / "lc").count == 40
    assert store.similarity_search("aspirin stroke", k=1)[0].page_content.endswith("aspirin and stroke")


def test_llama_index_vector_store(index):
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    from mrl.integrations.llama_index import MrlEmbedding, MrlVectorStore

    store = MrlVectorStore(index)
    embed = MrlEmbedding(index)
    li = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    nodes = li.as_retriever(similarity_top_k=3).retrieve(QUERY)
    hits = index.search(QUERY, k=3)
    assert [n.node.node_id for n in nodes] == [h.id for h in hits]
    assert np.allclose([n.score for n in nodes], [h.score for h in hits], atol=1e-5)

    text = " ".join(["Vitamin D supplements reduce hip fractures in elderly women."] * 8 + ["Aspirin and stroke."] * 8)
    before = index.count
    li = VectorStoreIndex.from_documents(
        [Document(text=text, id_="source-1")],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0)],
    )
    chunks = index.ids_where("ref_doc_id", "source-1")
    assert len(chunks) > 1 and index.count == before + len(chunks)
    got = store.get_nodes(node_ids=chunks[:1])
    assert got[0].ref_doc_id == "source-1" and got[0].get_content() in text
    top = li.as_retriever(similarity_top_k=1).retrieve("vitamin D supplements hip fractures elderly women")
    assert top[0].node.ref_doc_id == "source-1"
    li.delete_ref_doc("source-1")
    assert index.ids_where("ref_doc_id", "source-1") == [] and index.count == before


def test_langchain_filters_mmr_and_refusals(index):
    from mrl.integrations.langchain import MrlVectorStore

    store = MrlVectorStore(index)
    for i in range(6):
        store.add_texts([f"Vitamin D trial {i} on hip fractures"], metadatas=[{"src": "trial", "n": i}], ids=[f"v{i}"])
    only = store.similarity_search(QUERY, k=3, filter={"src": "trial", "n": {"$gte": 3}})
    assert [d.metadata["n"] >= 3 for d in only] == [True, True, True]
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"src": "trial"}})
    assert all(d.id.startswith("v") for d in retriever.invoke(QUERY))
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 10, "filter": {"src": "trial"}})
    picked = mmr.invoke(QUERY)
    assert len(picked) == 3 and len({d.id for d in picked}) == 3 and all(d.id.startswith("v") for d in picked)
    assert len(store.max_marginal_relevance_search(QUERY, k=2, fetch_k=8)) == 2
    with pytest.raises(ValueError, match="give filter as a dict"):
        store.similarity_search(QUERY, filter=lambda doc: True)
    with pytest.raises(TypeError, match="not an Embeddings"):
        MrlVectorStore(store.embeddings)


def test_llama_index_user_flow_filters_ids_mmr_delete_clear(index):
    """The flow of LlamaIndex's docs (which ships no standard suite): build from documents with a StorageContext,
    retrieve, filter by metadata, doc_ids and node_ids, MMR, delete a source document, clear."""
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
    )

    from mrl.integrations.llama_index import MrlEmbedding, MrlVectorStore

    store = MrlVectorStore(index)
    embed = MrlEmbedding(index)
    sources = [
        Document(text=" ".join([f"Vitamin D supplements and hip fractures, study {i}."] * 6), id_=f"src-{i}",
                 metadata={"lab": "a" if i % 2 else "b", "year": 2018 + i})
        for i in range(4)
    ]  # fmt: skip
    li = VectorStoreIndex.from_documents(
        sources,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0)],
    )
    lab_a = MetadataFilters(filters=[MetadataFilter(key="lab", value="a")])
    got = li.as_retriever(similarity_top_k=3, filters=lab_a).retrieve(QUERY)
    assert got and all(n.node.metadata["lab"] == "a" for n in got)
    recent = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
                 MetadataFilter(key="lab", value="b")],
        condition=FilterCondition.OR,
    )  # fmt: skip
    assert all(n.node.metadata["year"] >= 2020 or n.node.metadata["lab"] == "b"
               for n in li.as_retriever(similarity_top_k=5, filters=recent).retrieve(QUERY))  # fmt: skip
    by_doc = li.as_retriever(similarity_top_k=3, doc_ids=["src-2"]).retrieve(QUERY)
    assert by_doc and {n.node.ref_doc_id for n in by_doc} == {"src-2"}
    chunk_ids = index.ids_where("ref_doc_id", "src-1")
    by_node = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=5, node_ids=chunk_ids[:2]))
    assert set(by_node.ids) == set(chunk_ids[:2])
    mmr = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3, mode=VectorStoreQueryMode.MMR,
                                       mmr_threshold=0.3, doc_ids=["src-0", "src-3"]))  # fmt: skip
    assert len(mmr.ids) == 3 and {store.get_nodes(node_ids=[i])[0].ref_doc_id for i in mmr.ids} <= {"src-0", "src-3"}
    li.delete_ref_doc("src-1")
    assert index.ids_where("ref_doc_id", "src-1") == []
    store.delete_nodes(node_ids=["not-a-node", *index.ids_where("ref_doc_id", "src-2")[:1]])  # missing: passed over
    assert len(store.get_nodes(filters=lab_a)) == len(index.ids_where("lab", "a"))
    store.clear()
    assert index.count == 0 and li.as_retriever(similarity_top_k=2).retrieve(QUERY) == []
