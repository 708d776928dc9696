"""LangChain's own standard test suites (``langchain-tests``) against mrl's vector store and embeddings.

The store is an empty index made for each test, on the embedded backend (``Index.create``) and on Qdrant Edge, the
way a LangChain user creates a store and fills it. mrl encodes with the index's own model (the bundled
all-MiniLM-L6-v2), not the suite's fake embeddings: the suite's assertions are about the store's behaviour.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests.embeddings import EmbeddingsIntegrationTests
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests
from langchain_tests.unit_tests.embeddings import EmbeddingsUnitTests

from mrl.index import Index
from mrl.index.qdrant import QdrantIndex
from mrl.integrations.langchain import MrlEmbeddings, MrlVectorStore


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One embedded index for the embeddings suites (they only encode; their own fixture is called ``model``)."""
    return Index.create(tmp_path_factory.mktemp("emb") / "i", model="default")


class TestEmbeddedStore(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, model, tmp_path):
        store = MrlVectorStore(Index.create(tmp_path / "store", model="default", loaded_model=model))
        try:
            yield store
        finally:
            store.index.close()


class TestQdrantEdgeStore(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, model, tmp_path):
        store = MrlVectorStore(
            QdrantIndex.create(f"qdrant-edge://{tmp_path / 'edge'}", model="default", prefix_dim=64, loaded_model=model)
        )
        try:
            yield store
        finally:
            store.index.close()


class TestEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self):
        return MrlEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"index": self._index}

    @pytest.fixture(autouse=True)
    def _use(self, shared):
        self._index = shared


class TestEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self):
        return MrlEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"index": self._index}

    @pytest.fixture(autouse=True)
    def _use(self, shared):
        self._index = shared
