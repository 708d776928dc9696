"""A sharded embedded index in one process: the layout, the router's merge, writes to the owner, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_mrl, unrotated

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import build_index, open_index
from mrl.index.router import ShardedIndex
from mrl.index.shards import SHARDS_FILE, ShardLayout, shard_of
from mrl.vectors.prefix import prefix


@pytest.fixture(scope="module")
def built(corpus, model, tmp_path_factory):
    """The same corpus as one index and as 3 shards, exact first passes (flat, float32 codes) at 64 dims."""
    _, _, docs, vectors = corpus
    root = tmp_path_factory.mktemp("shards")
    options = {"model": "default", "loaded_model": model, "prefix_dim": 64, "ann": "flat", "quant": "fp32"}
    single = build_index(root / "single", vectors, docs, **options)
    sharded = build_index(root / "sharded", vectors, docs, shards=3, **options)
    yield root, single, sharded
    single.close()
    sharded.close()


def test_the_id_hash_is_stable_across_processes_and_versions():
    # BLAKE2b, not Python's salted hash: these numbers must never change, or existing indexes lose their writes
    assert [shard_of(i, 4) for i in ("doc-1", "doc-2", "4983", "")] == [2, 1, 1, 0]
    assert all(0 <= shard_of(str(i), 7) < 7 for i in range(100))


def test_shards_hold_each_document_once_in_its_owner_with_the_single_builds_vectors(built, corpus):
    root, single, sharded = built
    _, _, docs, vectors = corpus
    assert isinstance(sharded, ShardedIndex) and sharded.count == len(docs)
    layout = ShardLayout.read(root / "sharded")
    assert layout.shards == 3 and sum(layout.documents) == len(docs)
    position = {d.id: i for i, d in enumerate(docs)}
    seen = []
    for shard, client in enumerate(sharded.clients):
        index = client.index
        rows = np.flatnonzero(~index.deleted)
        ids = [index.docs.fetch([int(r)])[int(r)][0] for r in rows]
        assert all(shard_of(i, 3) == shard for i in ids)
        expected = prefix(vectors[[position[i] for i in ids]], vectors.shape[1])
        assert np.abs(unrotated(index, rows) - expected).max() < 1e-5
        # one basis for every shard, and it is the single build's: prefixes rank alike everywhere
        np.testing.assert_array_equal(index.gen.rotation, single.gen.rotation)
        seen += ids
    assert sorted(seen) == sorted(d.id for d in docs)


def test_the_merged_top_k_is_at_least_as_good_as_the_single_index_at_the_same_shortlist(built, corpus):
    _, single, sharded = built
    _, _, docs, vectors = corpus
    queries = prefix(vectors[::7] + 0.05 * np.roll(vectors[::7], 1, axis=1), vectors.shape[1])
    exact = single.hits_for(single.exact_keys(queries, 10), np.zeros((len(queries), 10)))
    truth = [{h.id for h in hits} for hits in exact]
    for shortlist in (10, 20, 40):
        one = single.search(queries, k=10, shortlist=shortlist)
        many = sharded.search(queries, k=10, shortlist=shortlist)
        recall_one = np.mean([len({h.id for h in r} & t) for r, t in zip(one, truth, strict=True)]) / 10
        recall_many = np.mean([len({h.id for h in r} & t) for r, t in zip(many, truth, strict=True)]) / 10
        assert recall_many >= recall_one
        for hits in many:  # merged by full score, best first, each id once
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert len({h.id for h in hits}) == 10
    # at a shortlist wide enough to hold every candidate both are exact and agree
    wide = sharded.search(queries, k=10, shortlist=len(docs))
    assert [{h.id for h in r} for r in wide] == truth


def test_exact_keys_filters_and_mmr_run_over_every_shard(built, corpus):
    _, single, sharded = built
    vectors = corpus[3]
    query = prefix(vectors[3:4], vectors.shape[1])
    assert [k.id for k in sharded.exact_keys(query, 5)[0]] == [
        h.id for h in single.hits_for(single.exact_keys(query, 5), np.zeros((1, 5)))[0]
    ]
    hits = sharded.search(query[0], k=10, filter={"n": {"$lt": 50}})
    assert hits and all(h.metadata["n"] < 50 for h in hits)
    assert [h.id for h in hits] == [h.id for h in single.search(query[0], k=10, filter={"n": {"$lt": 50}})]
    mmr = sharded.max_marginal_relevance(query[0], k=4, fetch_k=20, lambda_mult=0.5)
    assert [h.id for h in mmr] == [h.id for h in single.max_marginal_relevance(query[0], k=4, fetch_k=20)]
    assert sharded.ids_matching({"n": {"$lt": 10}}) == single.ids_matching({"n": {"$lt": 10}})


def test_writes_go_to_the_owning_shard_and_bad_writes_change_nothing(tmp_path, corpus, model):
    _, _, docs, vectors = corpus
    index = build_index(tmp_path / "idx", vectors, docs, model="default", loaded_model=model, prefix_dim=64, shards=2)
    before = [c.index.generation for c in index.clients]
    new = [Document(f"new-{i}", f"a new abstract about topic {i}", {"n": 1000 + i}) for i in range(6)]
    assert index.upsert(new, vectors[:6]) == 6
    for d in new:
        owner = index.clients[shard_of(d.id, 2)].index
        assert d.id in owner.get([d.id])
        assert all(d.id not in c.index.get([d.id]) for c in index.clients if c.index is not owner)
    assert index.count == len(docs) + 6 and set(index.get([d.id for d in new])) == {d.id for d in new}
    hits = index.search(vectors[0], k=2)
    assert {hits[0].id, hits[1].id} == {docs[0].id, "new-0"}  # the same vector twice: both rank first
    # an add with one existing id refuses the whole batch, on every shard
    generations = [c.index.generation for c in index.clients]
    with pytest.raises(MrlError, match="new-3"):
        index.add([Document("fresh", "text"), new[3]], vectors[:2])
    assert [c.index.generation for c in index.clients] == generations and "fresh" not in index.get(["fresh"])
    with pytest.raises(MrlError, match="nope"):
        index.delete(["new-1", "nope"])
    assert "new-1" in index.get(["new-1"])
    assert index.delete(["new-1", "new-2"]) == 2 and index.count == len(docs) + 4
    assert [c.index.generation for c in index.clients] > before
    # a second router (another process's view) reads the writes
    other = open_index(tmp_path / "idx")
    assert other.count == len(docs) + 4 and "new-5" in other.get(["new-5"])
    other.close()
    index.close()


def test_a_missing_or_foreign_shard_is_refused_naming_it(built, corpus, model, tmp_path):
    root, _, _ = built
    _, _, docs, vectors = corpus
    copy = tmp_path / "copy"
    shutil.copytree(root / "sharded", copy)
    shutil.rmtree(copy / "shard-01")
    with pytest.raises(MrlError, match=r"shard 1: .*shard-01 is missing"):
        open_index(copy)
    other = build_index(tmp_path / "other", vectors, docs, model="default", loaded_model=model, prefix_dim=64, shards=3)
    other.close()
    shutil.copytree(tmp_path / "other" / "shard-01", copy / "shard-01")
    with pytest.raises(MrlError, match=r"shard 1: .*another build"):
        open_index(copy)
    layout = json.loads((copy / SHARDS_FILE).read_text())
    assert layout["build_id"] != json.loads((tmp_path / "other" / SHARDS_FILE).read_text())["build_id"]


def test_bad_shard_counts_are_refused_before_anything_is_written(tmp_path, corpus):
    _, _, docs, vectors = corpus
    for shards, needle in ((0, "between 1 and"), (len(docs) + 1, "would leave shards empty"), (True, "whole number")):
        with pytest.raises(MrlError, match=needle):
            build_index(tmp_path / "bad", vectors, docs, model="default", prefix_dim=64, shards=shards)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(MrlError, match="does not apply"):
        build_index("postgresql://u@localhost/db/t", vectors, docs, prefix_dim=64, shards=2)


def test_cli_builds_searches_and_serves_flags_a_sharded_folder(scifact_small, tmp_path):
    corpus = str(scifact_small / "corpus.jsonl")
    out = run_mrl("index", "build", str(tmp_path / "idx"), "--corpus", corpus, "--prefix-dim", "64", "--shards", "2")
    assert out.returncode == 0, out.stderr
    assert "shard 0" in out.stdout and "shard 1" in out.stdout
    found = run_mrl("search", str(tmp_path / "idx"), "vitamin D and bone fractures", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["results"][0]) == 3
    refusals = [
        (("--shards", "0"), "--shards must be a whole number between 1 and 1024"),
        (("--shards", "2", "--replicas", "2"), "mrl serve --ray --replicas N"),
        (("--ray", "auto"), "--ray builds a sharded index folder"),
        (("--shards", "2", "--workers", "2"), "add --ray"),
        (("--shards", "2", "--ray", "127.0.0.1:9"), "no Ray cluster answers at 127.0.0.1:9"),
    ]
    for flags, needle in refusals:
        bad = run_mrl("index", "build", str(tmp_path / "bad"), "--corpus", corpus, "--prefix-dim", "64", *flags)
        assert bad.returncode == 2 and needle in bad.stderr.replace("\n", " "), (flags, bad.stderr)
        assert not (tmp_path / "bad").exists()
    serve = run_mrl("serve", str(tmp_path / "idx"), "--replicas", "2")
    assert serve.returncode == 2 and "add --ray" in serve.stderr
