"""Metadata filters and MMR: one language, the same answers on the embedded index, Qdrant Edge and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pytest

from mrl.data import Document
from mrl.errors import DataError, MrlError
from mrl.index import Index
from mrl.index.filters import FilterError, parse_filter, to_qdrant
from mrl.index.payload import PayloadIndex
from mrl.index.qdrant import QdrantIndex
from mrl.index.tuning import recall_at_k
from mrl.vectors.mmr import maximal_marginal_relevance
from mrl.vectors.prefix import prefix

FILTERS = [
    {"group": "a"},
    {"group": {"$ne": "a"}},
    {"year": {"$gte": 2015, "$lt": 2020}},
    {"group": {"$in": ["b", "c"]}},
    {"group": {"$nin": ["a", "b"]}},
    {"tags": "even"},
    {"doi": {"$exists": True}},
    {"doi": {"$exists": False}},
    {"$or": [{"group": "a"}, {"year": {"$gt": 2022}}]},
    {"$not": {"group": "a"}},
    {"seen": {"$lt": "2021-06-01"}},
    {"rare": True},
]


def metadata(i: int) -> dict:
    """Fields of several kinds and selectivities; one with dates as ISO text, one list-valued."""
    out = {"group": "abcd"[i % 4], "year": 2010 + i % 15, "tags": ["even" if i % 2 == 0 else "odd", f"t{i % 3}"],
           "seen": dt.date(2020, 1, 1) + dt.timedelta(days=7 * (i % 100)), "rare": i % 97 == 0}  # fmt: skip
    if i % 5 == 0:
        out["doi"] = f"10.1/{i}"
    return out


def expected_ids(docs: list[Document], node) -> set[str]:
    """Which documents a filter matches, by the payload index (tested against hand-written rules below)."""
    mask = PayloadIndex.build(d.metadata for d in docs).mask(node)
    return {d.id for d, keep in zip(docs, mask, strict=True) if keep}


def test_the_payload_index_answers_each_operator_as_documented():
    docs = [Document(str(i), "x", metadata(i)) for i in range(200)]
    meta = [d.metadata for d in docs]
    rules = {
        0: lambda m: m["group"] == "a",
        1: lambda m: m["group"] != "a",
        2: lambda m: 2015 <= m["year"] < 2020,
        3: lambda m: m["group"] in ("b", "c"),
        4: lambda m: m["group"] not in ("a", "b"),
        5: lambda m: "even" in m["tags"],
        6: lambda m: "doi" in m,
        7: lambda m: "doi" not in m,
        8: lambda m: m["group"] == "a" or m["year"] > 2022,
        9: lambda m: m["group"] != "a",
        10: lambda m: m["seen"] < "2021-06-01",
        11: lambda m: m["rare"] is True,
    }
    for i, spec in enumerate(FILTERS):
        want = {d.id for d, m in zip(docs, meta, strict=True) if rules[i](m)}
        assert expected_ids(docs, parse_filter(spec)) == want, spec
    assert expected_ids(docs, parse_filter({"nobody": "has it"})) == set()  # no such field: nothing, no error


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"year": {"$between": [1, 2]}}, "at $.year.$between: unknown operator '$between'"),
        ({"$xor": []}, "at $.$xor: unknown operator '$xor'"),
        ({"$or": {"a": 1}}, "at $.$or: $or takes a non-empty list"),
        ({"year": {"$gt": "soon"}}, "at $.year.$gt: a range compares numbers or dates"),
        ({"group": {"$in": "a"}}, "at $.group.$in: $in takes a non-empty list"),
        ({"group": [1, 2]}, "at $.group: expected text, a number or true/false"),
        ('{"group": ', "at $: not JSON"),
    ],
)
def test_a_malformed_filter_names_the_operator_and_its_place(spec, needle):
    with pytest.raises(FilterError, match=None) as info:
        parse_filter(spec)
    assert needle in str(info.value)


def test_a_range_on_a_text_field_is_refused_when_it_meets_the_data():
    payload = PayloadIndex.build([{"group": "a"}, {"group": "b"}])
    with pytest.raises(
        FilterError, match=r"at \$.group.\$gt: \$gt compares field 'group' with a number; it holds text"
    ):
        payload.mask(parse_filter({"group": {"$gt": 3}}))


def test_metadata_json_cannot_hold_is_refused_and_dates_become_iso():
    assert Document("d", "x", {"at": dt.datetime(2024, 5, 6, 7, 8)}).metadata == {"at": "2024-05-06T07:08:00+00:00"}
    assert Document("d", "x", {"n": np.int64(3), "v": (1, 2)}).metadata == {"n": 3, "v": [1, 2]}
    with pytest.raises(DataError, match="document 'd': metadata field 'tags' holds a set"):
        Document("d", "x", {"tags": {"a"}})
    with pytest.raises(DataError, match=r"metadata field 'x\.y' is nan"):
        Document("d", "x", {"x": {"y": float("nan")}})


def test_mmr_prefers_a_relevant_document_unlike_the_ones_picked():
    docs = np.array([[1, 0, 0], [0.99, 0.14, 0], [0.6, 0, 0.8]], dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    scores = docs @ np.array([1, 0, 0], dtype=np.float32)
    assert maximal_marginal_relevance(scores, docs, 2, 1.0) == [0, 1]  # relevance only
    assert maximal_marginal_relevance(scores, docs, 2, 0.4) == [0, 2]  # the near-copy gives way


@pytest.fixture(params=["embedded", "qdrant-edge", "postgres"])
def backend(request, corpus, model, tmp_path):
    """The corpus with metadata() on each backend, and its documents."""
    _, _, docs, vectors = corpus
    docs = [Document(d.id, d.text, metadata(i)) for i, d in enumerate(docs)]
    if request.param == "embedded":
        index = Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    elif request.param == "qdrant-edge":
        location = f"qdrant-edge://{tmp_path / 'e'}"
        index = QdrantIndex.build(location, vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    else:
        from mrl.index.postgres import PostgresIndex

        dsn = request.getfixturevalue("postgres_dsn")
        index = PostgresIndex.build(dsn, "filtered", vectors, docs, model="default", prefix_dim=64, overwrite=True,
                                    loaded_model=model)  # fmt: skip
    yield index, docs, vectors
    index.close()


@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filtered_search_returns_only_matches_and_finds_the_exact_filtered_top(backend, spec):
    index, docs, vectors = backend
    allowed = expected_ids(docs, parse_filter(spec))
    queries = prefix(vectors[:8] + 0.3 * vectors[8:16], vectors.shape[1])
    truth = index.exact_keys(queries, 5, filter=spec)
    found, _ = index.search_keys(queries, 5, shortlist=len(docs), filter=spec)

    def ids(keys) -> list[list[str]]:  # keys are rows on the embedded index, ids on the databases
        return [[h.id for h in hs] for hs in index.hits_for(keys, [[0.0] * len(row) for row in keys])]

    hits, exact = ids(found), ids(truth)
    assert all(i in allowed for row in hits + exact for i in row)
    assert all(len(row) == min(5, len(allowed)) for row in hits)  # fewer than k match: fewer come back
    assert recall_at_k(hits, exact) >= 0.95
    assert sorted(index.ids_matching(spec)) == sorted(allowed)


def test_text_search_with_a_filter_and_mmr_on_each_backend(backend):
    index, _, _ = backend
    hits = index.search("vitamin D and bone fractures", k=4, filter={"group": "b"})
    assert hits and all(h.metadata["group"] == "b" for h in hits)
    picked = index.max_marginal_relevance("vitamin D and bone fractures", k=3, fetch_k=12, lambda_mult=0.3)
    plain = index.search("vitamin D and bone fractures", k=12)
    assert len(picked) == 3 and picked[0].id == plain[0].id and {h.id for h in picked} <= {h.id for h in plain}
    only_b = index.max_marginal_relevance("vitamin D", k=2, fetch_k=8, filter={"group": "b"})
    assert all(h.metadata["group"] == "b" for h in only_b)
    for kwargs, needle in (({"fetch_k": 2}, "`fetch_k` must be"), ({"lambda_mult": 1.5}, "`lambda_mult` must be")):
        with pytest.raises(MrlError, match=needle):
            index.max_marginal_relevance("vitamin D", k=3, **kwargs)


def test_deleting_missing_ids_is_an_option_and_strict_by_default(backend):
    index, docs, _ = backend
    before = index.count
    with pytest.raises(MrlError, match="unknown ids: nope"):
        index.delete([docs[0].id, "nope"])
    assert index.count == before  # nothing deleted
    assert index.delete([docs[0].id, "nope"], missing_ok=True) == 1 and index.count == before - 1
    assert index.delete(["nope"], missing_ok=True) == 0


def mrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_search_filters_and_reports_a_bad_filter_with_its_place(corpus, model, tmp_path):
    _, _, docs, vectors = corpus
    docs = [Document(d.id, d.text, metadata(i)) for i, d in enumerate(docs)]
    Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    found = mrl("search", str(tmp_path / "i"), "vitamin D", "-k", "3", "--json", "--filter", '{"group": "c"}')
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["results"][0]
    assert len(hits) == 3 and all(h["metadata"]["group"] == "c" for h in hits)
    bad = mrl("search", str(tmp_path / "i"), "vitamin D", "--filter", '{"year": {"$near": 3}}')
    assert bad.returncode == 2
    assert (
        "--filter at $.year.$near: unknown operator '$near'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    )
    mmr = mrl("search", str(tmp_path / "i"), "vitamin D", "-k", "2", "--mmr", "0.5", "--json")
    assert mmr.returncode == 0 and len(json.loads(mmr.stdout)["results"][0]) == 2


def test_an_empty_index_is_created_then_filled(model, tmp_path):
    index = Index.create(tmp_path / "e", model="default", prefix_dim=128, loaded_model=model)
    assert index.count == 0 and Index.open(tmp_path / "e").count == 0
    index.add([Document("a", "Vitamin D and hip fractures", {"src": "x"}), Document("b", "Aspirin and stroke")])
    assert [h.id for h in index.search("vitamin D fractures", k=1)] == ["a"]
    assert index.search("vitamin D fractures", k=2, filter={"src": "x"})[0].id == "a"
    assert len(index.search("vitamin D fractures", k=2, filter={"src": "x"})) == 1
    with pytest.raises(MrlError, match="folder exists and is not empty"):
        Index.create(tmp_path / "e", model="default", loaded_model=model)
    made = mrl("index", "create", str(tmp_path / "cli"))
    assert made.returncode == 0 and "created" in made.stderr and Index.open(tmp_path / "cli").count == 0


def test_number_equality_reaches_qdrant_as_a_range_its_float_payload_index_serves():
    """Qdrant's float payload index answers ranges only: a MatchValue on a number made it check every payload."""
    from qdrant_client import models

    got = to_qdrant(parse_filter({"year": 2020, "lang": "en", "n": {"$in": [1, 2.5]}}), models)
    year, lang, n_any = (part.must[0] for part in got.must)
    assert (year.key, year.range) == ("metadata.year", models.Range(gte=2020, lte=2020))
    assert (lang.key, lang.match) == ("metadata.lang", models.MatchValue(value="en"))
    assert [c.range for c in n_any.should] == [models.Range(gte=1, lte=1), models.Range(gte=2.5, lte=2.5)]


def test_a_filter_past_zvecs_longest_answer_comes_back_short_and_the_scan_completes_it(tmp_path):
    """zvec answers at most 2,048 rows a query; a filter letting 0.3% of rows through would have it over-fetch
    past that. The engine stops at its limit (what it returns all match), and the exact prefix scan the index
    then runs for the short queries finds the filtered top, however many parts it reads the prefixes in."""
    from mrl.index.embedded import scan_prefixes
    from mrl.index.engines.zvec import MAX_EF, ZvecFirstPass

    rng = np.random.default_rng(7)
    vectors = prefix(rng.standard_normal((6000, 16)).astype(np.float32), 16)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::300] = True  # 20 rows: k=10 over a 0.33% share asks for 3,750 > MAX_EF
    queries = prefix(vectors[1:6] + 0.1, 16)
    ann = ZvecFirstPass.build(vectors, "fp32", {})
    ann.save(tmp_path / "z")
    found = ZvecFirstPass.load(tmp_path / "z", "fp32").search(queries, 10, None, allowed)
    assert 1.25 * 10 * len(vectors) / allowed.sum() > MAX_EF
    assert all(allowed[row[row >= 0]].all() for row in found)

    rows = np.flatnonzero(allowed)
    want = np.sort(rows[np.argsort(-(queries @ vectors[rows].T), axis=1)[:, :10]], axis=1)
    for parts in (1, 3, 20):
        split = [(p, vectors[p]) for p in np.array_split(rows, parts)]
        assert np.array_equal(scan_prefixes(queries, split, 10), want)
    assert np.array_equal(scan_prefixes(queries, [(rows[:4], vectors[rows[:4]])], 10)[:, 4:], np.full((5, 6), -1))
