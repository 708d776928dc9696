"""Reads over a real PostgreSQL hot standby: a streaming replica of the session's server (pg_basebackup -R)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import psycopg
import pytest
from pgserver import standby_server

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import open_index
from mrl.index.postgres import PostgresIndex
from mrl.vectors.prefix import prefix

TABLE = "t_replicated"


@pytest.fixture(scope="module")
def standby(postgres_dsn):
    with standby_server(postgres_dsn) as server:
        yield server


@pytest.fixture(scope="module")
def replicated(postgres_dsn, standby, corpus, model):
    """An index built on the primary with the standby named: the build returns once the standby has replayed it."""
    _, _, docs, vectors = corpus
    index = PostgresIndex.build(
        postgres_dsn, TABLE, vectors, docs, model="default", prefix_dim=64, overwrite=True, loaded_model=model,
        standbys=[standby.dsn],
    )  # fmt: skip
    yield index
    index.close()


def rows_on(dsn: str, sql: str, *params):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def test_the_build_is_on_the_standby_when_it_returns_and_searches_run_there(replicated, postgres_dsn, standby, corpus):
    _, _, docs, vectors = corpus
    assert rows_on(standby.dsn, f"SELECT count(*) FROM {TABLE}")[0][0] == len(docs)
    assert rows_on(standby.dsn, "SELECT pg_is_in_recovery()")[0][0]
    queries = prefix(vectors[:20], vectors.shape[1])
    primary_only = PostgresIndex.open(f"{postgres_dsn}/{TABLE}")
    expected = primary_only.search_keys(queries, 10)
    primary_only.close()
    reads = replicated.stats()["reads"]  # stats is itself a read
    assert replicated.search_keys(queries, 10) == expected  # the same graph, replayed: the same answers
    after = replicated.stats()["reads"]
    assert after["primary"] == reads["primary"] == 0
    (name,) = after["standbys"]
    assert after["standbys"][name]["reads"] == reads["standbys"][name]["reads"] + 2 and "s3cret" not in name


def test_a_write_is_read_back_from_the_primary_until_the_standby_replays_it(replicated, postgres_dsn, standby, model):
    other = open_index(f"{postgres_dsn}/{TABLE}", standbys=[standby.dsn])  # another process's view
    rows_on(standby.dsn, "SELECT pg_wal_replay_pause()")
    try:
        replicated.upsert([Document("rw-1", "a document written while the standby is paused")])
        before = replicated.standby_reads.stats()["primary"]
        assert "rw-1" in replicated.get(["rw-1"])  # read-your-writes: the standby has not replayed it
        assert replicated.standby_reads.stats()["primary"] == before + 1
        assert other.get(["rw-1"]) == {}  # the other index reads the standby, which trails: documented
    finally:
        rows_on(standby.dsn, "SELECT pg_wal_replay_resume()")
    assert replicated.standby_reads.wait_replayed(30) == {next(iter(replicated.stats()["reads"]["standbys"])): True}
    served = replicated.standby_reads.stats()
    assert "rw-1" in replicated.get(["rw-1"]) and "rw-1" in other.get(["rw-1"])
    assert replicated.standby_reads.stats()["primary"] == served["primary"]  # replayed: the standby serves it
    replicated.delete(["rw-1"])
    other.close()


def test_a_stopped_standby_sends_reads_to_the_primary_with_one_warning(replicated, standby, corpus):
    _, _, _, vectors = corpus
    queries = prefix(vectors[:5], vectors.shape[1])
    expected = replicated.search_keys(queries, 10)
    replicated.standby_reads.retry_s = 0.5  # try the standby again soon, so the test sees it come back
    standby.stop()
    try:
        before = replicated.standby_reads.stats()["primary"]
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for _ in range(4):
                assert replicated.search_keys(queries, 10) == expected
        assert replicated.standby_reads.stats()["primary"] == before + 4
        unreachable = [w for w in said if "is unreachable" in str(w.message)]
        assert len(unreachable) == 1 and "s3cret" not in str(unreachable[0].message)
    finally:
        standby.start()
    time.sleep(0.6)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert replicated.search_keys(queries, 10) == expected
    assert any("answers again" in str(w.message) for w in said)
    name = next(iter(replicated.standby_reads.stats()["standbys"]))
    assert replicated.standby_reads.stats()["standbys"][name]["serving"]


def test_a_primary_or_another_database_is_refused_as_a_standby(replicated, postgres_dsn, standby, corpus):
    with pytest.raises(MrlError, match="is a primary, not a standby"):
        PostgresIndex.open(f"{postgres_dsn}/{TABLE}", standbys=[postgres_dsn])
    other_db = standby.dsn.rsplit("/", 1)[0] + "/template1"
    with pytest.raises(MrlError, match="opens database 'template1', the index is in 'postgres'"):
        PostgresIndex.open(f"{postgres_dsn}/{TABLE}", standbys=[other_db])
    # a build with a wrong standby changes nothing
    _, _, docs, vectors = corpus
    with pytest.raises(MrlError, match="is a primary"):
        PostgresIndex.build(postgres_dsn, "t_refused", vectors, docs, prefix_dim=64, standbys=[postgres_dsn])
    assert rows_on(postgres_dsn, "SELECT to_regclass('t_refused')")[0][0] is None
    with pytest.raises(MrlError, match="`standbys`: hot standbys serve a postgresql:// index"):
        open_index("some/folder", standbys=[standby.dsn])


def test_http_writes_are_read_back_and_stats_show_the_reads_per_server(replicated, standby, corpus):
    """`mrl serve --replica-dsn`: a document posted is found by the next request (read-your-writes), and /stats says
    which server served the reads."""
    from fastapi.testclient import TestClient

    from mrl.serve import create_app

    with TestClient(create_app(replicated)) as client:
        put = client.post("/documents", json={"documents": [{"id": "http-r1", "text": "Statins and muscle pain."}]})
        assert put.status_code == 200
        assert client.get("/documents/http-r1").json()["text"] == "Statins and muscle pain."
        found = client.post("/search", json={"query": "statins muscle pain", "k": 3}).json()["results"]
        assert "http-r1" in [h["id"] for h in found]
        assert client.delete("/documents/http-r1").status_code == 200
        assert client.get("/documents/http-r1").status_code == 404
        reads = client.get("/stats").json()["reads"]
        assert reads["primary"] + sum(s["reads"] for s in reads["standbys"].values()) > 0
        assert all(s["serving"] for s in reads["standbys"].values())


def test_standby_vectors_equal_the_primary_s(replicated, standby, postgres_dsn):
    ids = [r[0] for r in rows_on(postgres_dsn, f"SELECT id FROM {TABLE} ORDER BY id LIMIT 5")]
    on_standby = replicated.stored_vectors(ids)
    primary_only = PostgresIndex.open(f"{postgres_dsn}/{TABLE}")
    on_primary = primary_only.stored_vectors(ids)
    primary_only.close()
    for key in ids:
        np.testing.assert_array_equal(on_standby[key], on_primary[key])


def test_cli_builds_with_a_standby_and_searches_on_it(postgres_dsn, standby, scifact_small, tmp_path):
    import json
    import subprocess
    import sys

    mrl = [sys.executable, "-m", "mrl.cli"]
    location = f"{postgres_dsn}/cli_replicated"
    build = subprocess.run(
        [*mrl, "index", "build", location, "--corpus", str(scifact_small / "corpus.jsonl"), "--prefix-dim", "64",
         "--replica-dsn", standby.dsn, "--overwrite", "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "reads: standby" in build.stdout and "s3cret" not in build.stdout + build.stderr
    searches = [
        subprocess.run([*mrl, "search", location, "vitamin D deficiency", "-k", "5", "--json", *extra],
                       capture_output=True, text=True, timeout=300)
        for extra in ([], ["--replica-dsn", standby.dsn])
    ]  # fmt: skip
    assert all(s.returncode == 0 for s in searches), searches[1].stderr
    primary, replica = (json.loads(s.stdout)["results"][0] for s in searches)
    assert [h["id"] for h in replica] == [h["id"] for h in primary]

    refused = subprocess.run(
        [*mrl, "search", location, "vitamin D", "--replica-dsn", postgres_dsn], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "is a primary, not a standby" in refused.stderr
    assert "s3cret" not in refused.stderr
    wrong_backend = subprocess.run(
        [*mrl, "index", "build", str(tmp_path / "idx"), "--corpus", str(scifact_small / "corpus.jsonl"),
         "--replica-dsn", standby.dsn],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wrong_backend.returncode == 2 and "--replica-dsn names PostgreSQL hot standbys" in wrong_backend.stderr
    assert not (tmp_path / "idx").exists()
