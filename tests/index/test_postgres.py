"""The two-pass index in a real PostgreSQL server with pgvector (started on loopback for this session)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import psycopg
import pytest

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import Index, open_index
from mrl.index.postgres import PostgresIndex, redact
from mrl.index.tuning import recall_at_k, tune
from mrl.vectors.prefix import prefix


@pytest.fixture()
def pg_index(postgres_dsn, corpus, model, request):
    _, _, docs, vectors = corpus
    table = f"t_{request.node.name.split('[')[0][5:40]}".lower()
    index = PostgresIndex.build(
        postgres_dsn, table, vectors, docs, model="default", prefix_dim=64, overwrite=True, loaded_model=model
    )
    yield index
    index.close()


def test_same_results_as_embedded_index(pg_index, postgres_dsn, corpus, model, tmp_path):
    """With a shortlist of the whole corpus both backends are exact, so they must return the same ids."""
    _, _, docs, vectors = corpus
    embedded = Index.build(tmp_path / "e", vectors, docs, model="default", loaded_model=model)
    queries = prefix(vectors[:25], vectors.shape[1])
    pg_ids, pg_scores = pg_index.search_keys(queries, 10, shortlist=len(docs))
    rows, scores = embedded.search_keys(queries, 10, shortlist=len(docs), ann_search=512)
    emb_ids = [[docs[r].id for r in rr] for rr in rows]
    assert pg_ids == emb_ids
    np.testing.assert_allclose(pg_scores, scores, atol=1e-5)
    # the default shortlist (10 x k) through the prefix HNSW index: close to exact
    found, _ = pg_index.search_keys(queries, 10)
    assert recall_at_k(found, pg_index.exact_keys(queries, 10)) >= 0.95
    # text search, hits carry text and metadata, and opening by location gives the same answers
    hits = pg_index.search("vitamin D and bone fractures", k=5)
    same = open_index(f"{postgres_dsn}/{pg_index.table}", model=model)
    with pytest.raises(MrlError, match="is a database location"):
        Index.open(f"{postgres_dsn}/{pg_index.table}", model=model)  # the folder class does not dispatch
    assert [h.id for h in same.search("vitamin D and bone fractures", k=5)] == [h.id for h in hits]
    assert hits[0].text == next(d.text for d in docs if d.id == hits[0].id)
    assert hits[0].metadata == next(d.metadata for d in docs if d.id == hits[0].id)
    same.close()


def test_rotation_is_stored_with_the_table(pg_index, postgres_dsn, corpus, model):
    """Vectors are stored rotated; any client reads the rotation from the settings row; samples come back unrotated."""
    _, _, docs, vectors = corpus
    unit = prefix(vectors, vectors.shape[1])
    assert pg_index.stats()["rotated"] and pg_index.settings["format_version"] == 2
    other = PostgresIndex.open(f"{postgres_dsn}/{pg_index.table}", model=model)
    assert np.array_equal(other.rotation, pg_index.rotation)
    assert np.abs(other.sample_vectors(10, seed=0) @ unit.T).max(axis=1) == pytest.approx(np.ones(10), abs=1e-4)
    other.close()
    raw = PostgresIndex.build(postgres_dsn, "t_raw", vectors, docs, prefix_dim=64, overwrite=True, rotate=False)
    assert raw.rotation is None and raw.settings["format_version"] == 1 and not raw.stats()["rotated"]
    stored = raw.sample_vectors(10, seed=0)  # unrotated storage: the vectors as given
    assert np.abs(stored @ unit.T).max(axis=1) == pytest.approx(np.ones(10), abs=1e-4)
    queries = unit[:10]
    everything = len(docs)
    assert raw.search_keys(queries, 10, shortlist=everything)[0] == pg_index.search_keys(queries, 10, everything)[0]
    raw.close()


def test_concurrent_searches_share_a_pool_and_see_committed_writes(pg_index, corpus):
    """A server's threads search side by side on pooled connections; each answer equals the one-at-a-time one."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, docs, vectors = corpus
    queries = prefix(vectors[:40], vectors.shape[1])
    alone = [pg_index.search_keys(q[None, :], 10, shortlist=100)[0][0] for q in queries]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: pg_index.search_keys(q[None, :], 10, shortlist=100)[0][0], queries))
    assert together == alone
    assert 1 <= pg_index.pool.get_stats()["pool_size"] <= 4  # $MRL_PG_POOL's default caps it
    # reads never queue behind the writer's lock (a server asks for the count on every search)
    with ThreadPoolExecutor(1) as other, pg_index.lock:  # the lock is let go first if a read hangs
        assert other.submit(lambda: pg_index.count).result(timeout=60) == len(docs)
        assert other.submit(lambda: pg_index.stats()["documents"]).result(timeout=60) == len(docs)
    # a write on the writer connection is visible to the next pooled read at once
    pg_index.upsert([Document("fresh", "new text")], vectors[7:8])
    assert "fresh" in pg_index.search_keys(queries[7:8], 2, shortlist=len(docs))[0][0]
    assert pg_index.get(["fresh"])["fresh"].text == "new text"


def test_prefix_hnsw_index_is_used_by_the_two_pass_statement(postgres_dsn):
    """At a size where it matters (20k rows) the planner answers the shortlist from the prefix HNSW index.

    (On the 220-row tables above it rightly prefers a scan of every row, which is exact and cheaper.)
    """
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_000, 384)).astype(np.float32)
    docs = [Document(f"d{i}", "x") for i in range(len(vectors))]
    index = PostgresIndex.build(postgres_dsn, "explained", vectors, docs, prefix_dim=64, overwrite=True)
    plan = index.explain(k=10, shortlist=100)
    index.close()
    assert "Index Scan using explained_prefix" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_funnel_statement(pg_index, corpus):
    _, _, docs, vectors = corpus
    queries = prefix(vectors[:20], vectors.shape[1])
    found, _ = pg_index.search_keys(queries, 10, shortlist=len(docs), funnel=[128])
    assert recall_at_k(found, pg_index.exact_keys(queries, 10)) >= 0.9


def test_writes_are_transactions(pg_index, corpus, model):
    _, _, docs, vectors = corpus
    before = pg_index.count
    new = [Document("new-1", "Vitamin D supplements and hip fractures in older adults.", {"src": "t"})]
    assert pg_index.add(new) == 1
    assert pg_index.count == before + 1
    assert pg_index.search("vitamin D hip fractures older adults", k=1)[0].id == "new-1"
    # adding an existing id fails and writes nothing, not even the new documents of the same call
    with pytest.raises(MrlError, match="already in the index"):
        pg_index.add([Document("new-2", "another text"), Document(docs[0].id, "clash")])
    assert pg_index.count == before + 1 and "new-2" not in pg_index.get(["new-2"])
    # upsert replaces text, metadata and vector
    pg_index.upsert([Document(docs[0].id, "Replaced text about quantum gravity.", {"v": 2})])
    got = pg_index.get([docs[0].id])[docs[0].id]
    assert got.text == "Replaced text about quantum gravity." and got.metadata == {"v": 2}
    assert pg_index.search("quantum gravity", k=1)[0].id == docs[0].id
    # delete with one unknown id deletes nothing
    with pytest.raises(MrlError, match="unknown ids: nope"):
        pg_index.delete(["new-1", "nope"])
    assert "new-1" in pg_index.get(["new-1"])
    assert pg_index.delete(["new-1"]) == 1
    assert pg_index.count == before
    # wrong width and NaN are refused before anything is written
    with pytest.raises(MrlError, match="width 768"):
        pg_index.add([Document("w", "x")], np.ones((1, 768), dtype=np.float32))
    with pytest.raises(MrlError, match="NaN"):
        pg_index.search(np.full(vectors.shape[1], np.nan, dtype=np.float32))
    assert pg_index.count == before


def test_tuning_is_stored_in_the_database(pg_index, postgres_dsn, model):
    tuned = tune(pg_index, 0.99, k=10, sample=50)
    assert tuned["measured_recall"] >= 0.99
    reopened = open_index(f"{postgres_dsn}/{pg_index.table}", model=model)
    assert reopened.tuned["shortlist"] == tuned["shortlist"]
    reopened.close()


def test_build_refuses_to_clobber(pg_index, postgres_dsn, corpus):
    _, _, docs, vectors = corpus
    with pytest.raises(MrlError, match="table exists"):
        PostgresIndex.build(postgres_dsn, pg_index.table, vectors, docs)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS users_table (id int)")
    with pytest.raises(MrlError, match="not an mrl index"):
        PostgresIndex.build(postgres_dsn, "users_table", vectors, docs, overwrite=True)
    with pytest.raises(MrlError, match="no mrl index named 'users_table'"):
        open_index(f"{postgres_dsn}/users_table")


def test_width_mismatch_between_table_and_settings(pg_index, postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE mrl_indexes SET settings = jsonb_set(settings, '{full_dim}', '768') WHERE name = %s",
            (pg_index.table,),
        )
    with pytest.raises(MrlError, match=r"column embedding is vector\(384\), the index expects vector\(768\)"):
        open_index(f"{postgres_dsn}/{pg_index.table}")


def test_connection_errors_never_show_the_password(postgres_dsn):
    dead = "postgresql://mrl:hunter2-secret@127.0.0.1:1/postgres/docs"
    with pytest.raises(MrlError) as info:
        open_index(dead)
    assert "cannot connect to PostgreSQL at postgresql://mrl@127.0.0.1:1/postgres" in str(info.value)
    assert "hunter2" not in str(info.value)
    wrong = postgres_dsn.replace("s3cret-test-pw", "wrong-pw-123") + "/docs"
    with pytest.raises(MrlError) as info:
        open_index(wrong)
    assert "password authentication failed" in str(info.value) and "wrong-pw-123" not in str(info.value)
    # the CLI prints one clear line, no traceback, exit code 2 (a user error)
    done = subprocess.run(
        [sys.executable, "-m", "mrl.cli", "search", dead, "vitamin D"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "cannot connect" in done.stderr and "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert redact("host=h password=abc user=u") == "host=h password=*** user=u"


def test_missing_pgvector_says_how_to_install(postgres_dsn):
    """A role that may not create extensions, in a database without pgvector: the error explains the fix."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS plain")
        conn.execute("DROP ROLE IF EXISTS plain_user")
        conn.execute("CREATE ROLE plain_user LOGIN PASSWORD 'pw-plain'")
        conn.execute("CREATE DATABASE plain OWNER plain_user")
    host = postgres_dsn.split("@", 1)[1].split("/", 1)[0]
    with pytest.raises(MrlError, match="pgvector is not available") as info:
        open_index(f"postgresql://plain_user:pw-plain@{host}/plain/docs")
    assert "CREATE EXTENSION vector" in str(info.value) and "pw-plain" not in str(info.value)


def test_cli_build_search_stats_on_postgres(postgres_dsn, scifact_small, tmp_path):
    """The commands a user runs: build into a table, then search and inspect it by its location."""
    import json

    env_run = [sys.executable, "-m", "mrl.cli"]
    corpus_file = scifact_small / "corpus.jsonl"
    build = subprocess.run(
        [*env_run, "index", "build", "--corpus", str(corpus_file), "--backend", "postgres", "--dsn", postgres_dsn,
         "--table", "cli_docs", "--prefix-dim", "64", "--overwrite", "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "s3cret-test-pw" not in build.stdout + build.stderr
    # mrl 0.3's storage flags still build, and say once how to write the location from now on
    assert "are deprecated: write the location, mrl index build postgresql://" in build.stderr
    location = f"{postgres_dsn}/cli_docs"
    search = subprocess.run(
        [*env_run, "search", location, "vitamin D deficiency", "-k", "3", "--json"], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    results = json.loads(search.stdout)["results"][0]
    assert len(results) == 3 and results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    n_docs = sum(1 for _ in corpus_file.open())
    stats = subprocess.run([*env_run, "index", "stats", location], capture_output=True, text=True, timeout=300)
    assert stats.returncode == 0 and re.search(rf"documents\s*│\s*{n_docs}\s", stats.stdout), stats.stdout


def test_http_api_over_postgres(pg_index, corpus):
    """`mrl serve` takes any backend: search, upsert, get and delete through the HTTP API on PostgreSQL."""
    from fastapi.testclient import TestClient

    from mrl.serve import create_app

    _, _, docs, vectors = corpus
    with TestClient(create_app(pg_index)) as client:
        found = client.post("/search", json={"query": "vitamin D and bone fractures", "k": 3}).json()
        assert len(found["results"]) == 3
        by_vector = client.post("/search", json={"vector": vectors[7].tolist(), "k": 1}).json()
        assert by_vector["results"][0]["id"] == docs[7].id
        put = client.post("/documents", json={"documents": [{"id": "http-1", "text": "Statins and muscle pain."}]})
        assert put.status_code == 200 and put.json()["documents"] == len(docs) + 1
        assert client.get("/documents/http-1").json()["text"] == "Statins and muscle pain."
        assert client.delete("/documents/http-1").status_code == 200
        assert client.get("/documents/http-1").status_code == 404
        assert client.get("/stats").json()["backend"] == "postgres"


def test_halfvec_storage(postgres_dsn, corpus):
    """--store float16 keeps the full vectors as halfvec (half the bytes) with the same neighbours."""
    _, _, docs, vectors = corpus
    index = PostgresIndex.build(postgres_dsn, "half", vectors, docs, prefix_dim=64, store="float16", overwrite=True)
    queries = prefix(vectors[:20], vectors.shape[1])
    found, _ = index.search_keys(queries, 10, shortlist=len(docs))
    assert recall_at_k(found, index.exact_keys(queries, 10)) >= 0.98
    assert [row[0] for row in found] == [d.id for d in docs[:20]]  # each vector finds itself first
    reopened = open_index(f"{postgres_dsn}/half")
    assert reopened.stats()["store"] == "float16"
    reopened.close()
    index.close()


def test_ids_where_finds_live_documents_by_metadata(pg_index, corpus):
    from conftest import check_ids_where

    check_ids_where(pg_index, corpus[2])
