"""The two-pass index in Qdrant: Qdrant Edge (the engine in process, real HNSW) and qdrant-client's local mode
(the code path that also drives a server)."""

from __future__ import annotations

import numpy as np
import pytest

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import Index, open_index
from mrl.index.qdrant import QdrantIndex
from mrl.index.tuning import recall_at_k, tune
from mrl.vectors.prefix import prefix


@pytest.fixture(params=["edge", "local"])
def location(tmp_path, request):
    if request.param == "edge":
        return f"qdrant-edge://{tmp_path / 'edge'}"
    return f"qdrant://{tmp_path / 'qdrant'}/docs"


@pytest.fixture()
def q_index(location, corpus, model):
    _, _, docs, vectors = corpus
    index = QdrantIndex.build(location, vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    yield index
    index.close()


def test_same_results_as_embedded_index(q_index, corpus, model, tmp_path):
    _, _, docs, vectors = corpus
    embedded = Index.build(tmp_path / "e", vectors, docs, model="default", loaded_model=model)
    queries = prefix(vectors[:25], vectors.shape[1])
    ids, scores = q_index.search_keys(queries, 10, shortlist=len(docs))
    rows, emb_scores = embedded.search_keys(queries, 10, shortlist=len(docs), ann_search=512)
    assert ids == [[docs[r].id for r in rr] for rr in rows]
    np.testing.assert_allclose(scores, emb_scores, atol=1e-5)
    found, _ = q_index.search_keys(queries, 10)
    assert recall_at_k(found, q_index.exact_keys(queries, 10)) >= 0.95
    hit = q_index.search("vitamin D and bone fractures", k=3)[0]
    doc = next(d for d in docs if d.id == hit.id)
    assert (hit.text, hit.metadata) == (doc.text, doc.metadata)
    with pytest.raises(MrlError, match="one stage"):
        q_index.search_keys(queries, 10, funnel=[128])


def test_writes_tuning_and_reopening(q_index, location, corpus, model):
    _, _, docs, vectors = corpus
    before = q_index.count
    q_index.add([Document("new-1", "Vitamin D supplements and hip fractures in older adults.", {"src": "t"})])
    assert q_index.search("vitamin D hip fractures older adults", k=1)[0].id == "new-1"
    with pytest.raises(MrlError, match="already in the index"):
        q_index.add([Document("new-2", "x"), Document(docs[0].id, "clash")])
    assert "new-2" not in q_index.get(["new-2"])
    q_index.upsert([Document(docs[0].id, "Replaced text about quantum gravity.", {"v": 2})])
    assert q_index.get([docs[0].id])[docs[0].id].metadata == {"v": 2}
    assert q_index.search("quantum gravity", k=1)[0].id == docs[0].id
    with pytest.raises(MrlError, match="unknown ids: nope"):
        q_index.delete(["new-1", "nope"])
    assert q_index.delete(["new-1"]) == 1 and q_index.count == before
    with pytest.raises(MrlError, match="width 768"):
        q_index.upsert([Document("w", "x")], np.ones((1, 768), dtype=np.float32))
    tuned = tune(q_index, 0.99, k=10, sample=40)
    assert tuned["measured_recall"] >= 0.99
    rotation = q_index.rotation  # vectors are stored rotated (mrl.index.rotation); tuning samples come back unrotated
    unit = prefix(vectors, vectors.shape[1])
    assert q_index.stats()["rotated"] and rotation is not None
    assert np.abs(q_index.sample_vectors(10, seed=0) @ unit.T).max(axis=1) == pytest.approx(np.ones(10), abs=1e-4)
    q_index.close()  # local mode and Edge allow one client per folder
    reopened = open_index(location, model=model)
    assert reopened.tuned["shortlist"] == tuned["shortlist"] and reopened.count == before
    assert np.array_equal(reopened.rotation, rotation)
    reopened.close()
    with pytest.raises(MrlError, match="collection exists"):
        QdrantIndex.build(location, vectors, docs)


def test_bad_locations(tmp_path, corpus):
    with pytest.raises(MrlError, match=r"cannot open Qdrant at http://127\.0\.0\.1:1"):
        open_index("qdrant://127.0.0.1:1/docs")
    with pytest.raises(MrlError, match="no such collection"):
        open_index(f"qdrant://{tmp_path / 'empty'}/docs")
    with pytest.raises(MrlError, match="no such collection"):
        open_index(f"qdrant-edge://{tmp_path / 'empty-edge'}")
    with pytest.raises(MrlError, match="one local shard"):
        QdrantIndex.build(f"qdrant-edge://{tmp_path / 'e'}", *corpus[3:1:-1], shards=2)
    with pytest.raises(MrlError, match="expected qdrant://"):
        open_index("qdrant://host:6333")


def test_collection_of_another_width_is_refused(tmp_path):
    """A collection whose vectors do not match the recorded dims (e.g. made by hand) is not opened."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "docs",
        vectors_config={
            "prefix": models.VectorParams(size=64, distance=models.Distance.COSINE),
            "full": models.VectorParams(size=768, distance=models.Distance.COSINE),
        },
        metadata={"mrl": {"model": None, "full_dim": 384, "prefix_dim": 64, "store": "float32", "tuned": None}},
    )
    client.close()
    with pytest.raises(MrlError, match="collection holds vectors"):
        open_index(f"qdrant://{tmp_path / 'q'}/docs")


def test_cli_on_qdrant_edge(scifact_small, tmp_path):
    """The commands a user runs against Qdrant Edge: build, add, search, delete, stats, by location."""
    import json
    import subprocess
    import sys

    mrl = [sys.executable, "-m", "mrl.cli"]
    folder = tmp_path / "edge"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*mrl, *args], capture_output=True, text=True, timeout=600)

    location = f"qdrant-edge://{folder}"
    built = run("index", "build", location, "--corpus", str(scifact_small / "corpus.jsonl"),
                "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "--prefix-dim auto measures widths on the embedded index only: qdrant-edge builds the 64-dim" in built.stderr
    refused = run("index", "build", location, "--corpus", str(scifact_small / "corpus.jsonl"), "--keep-dims", "128")
    assert refused.returncode == 2 and "--keep-dims is for the embedded index" in refused.stderr
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "Zinc lozenges shorten the common cold."}) + "\n")
    assert run("index", "add", location, str(extra)).returncode == 0
    found = run("search", location, "zinc and the common cold", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0][0]["id"] == "extra-1"
    assert run("index", "delete", location, "--ids", "extra-1").returncode == 0
    again = json.loads(run("search", location, "zinc and the common cold", "-k", "2", "--json").stdout)
    assert "extra-1" not in [h["id"] for h in again["results"][0]]
    gone = run("index", "delete", location, "--ids", "extra-1")
    assert gone.returncode == 2 and "unknown ids: extra-1" in gone.stderr


def test_ids_where_finds_live_documents_by_metadata(q_index, corpus):
    from conftest import check_ids_where

    check_ids_where(q_index, corpus[2])
