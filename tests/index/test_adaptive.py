"""Adaptive width per query: the two ends of the margin, the calibration the tuner stores, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mrl.errors import MrlError
from mrl.index import Index
from mrl.index.adaptive import DEFAULT_MARGIN, AdaptiveWidth
from mrl.index.interface import SearchTimings
from mrl.index.tuning import recall_at_k, tune
from mrl.vectors.prefix import prefix

K = 10
KPRIME = 40


@pytest.fixture(scope="module")
def built(corpus, model, tmp_path_factory):
    """About 220 real SciFact abstracts in an index over the 64-dim prefix, and the 20 test claims' vectors."""
    _, data, docs, vectors = corpus
    index = Index.build(tmp_path_factory.mktemp("adaptive") / "idx", vectors, docs, model="default", prefix_dim=64)
    queries = prefix(model.encode(list(data.queries.values())), vectors.shape[1])
    return index, queries


def search(index: Index, queries: np.ndarray, adaptive: AdaptiveWidth | None):
    timings = SearchTimings()
    rows, scores = index.search_keys(queries, K, KPRIME, 64, timings=timings, adaptive=adaptive)
    return rows, scores, timings.widths


def test_margin_zero_ranks_every_query_at_the_middle_width_and_reads_no_full_row(built):
    index, queries = built
    rows, scores, widths = search(index, queries, AdaptiveWidth(128, 0.0))
    cand = index.candidates(queries, K, KPRIME, 64)
    stored_q = index.gen.stored_queries(queries)
    for i, used in enumerate(widths):
        c = cand[i][cand[i] >= 0]
        heads = prefix(index.key_vectors(c)[:, :128], 128)
        cosines = heads @ prefix(stored_q[i : i + 1, :128], 128)[0]
        assert list(rows[i]) == list(c[np.argsort(-cosines, kind="stable")[:K]])
        np.testing.assert_allclose(scores[i], np.sort(cosines)[::-1][:K], rtol=1e-5)
        assert (used.dims, used.widened, used.candidates) == (128, 0, len(c))
        assert used.rerank_bytes == len(c) * 128 * 4 and used.fixed_bytes == len(c) * 384 * 4


def test_a_margin_past_every_gap_widens_every_query_to_the_fixed_two_pass_answer(built):
    index, queries = built
    fixed_rows, fixed_scores = index.search_keys(queries, K, KPRIME, 64)
    rows, scores, widths = search(index, queries, AdaptiveWidth(64, 2.0))  # cosines differ by at most 2
    assert (rows == fixed_rows).all()
    np.testing.assert_allclose(scores, fixed_scores, rtol=1e-5)
    for used in widths:
        assert used.dims == 384 and used.widened == used.candidates == KPRIME
        assert used.rerank_bytes == KPRIME * (64 + 384) * 4


def test_tuning_calibrates_the_least_reading_margin_that_keeps_the_target_recall(built, tmp_path):
    index, queries = built
    tuned = tune(index, 0.95, k=K, queries=queries)
    chosen = tuned["adaptive"]
    assert chosen["margin"] is not None and chosen["width"] in (64, 128)
    reached = [t for t in chosen["trials"] if t["recall"] >= 0.95]
    assert chosen["rerank_bytes"] == min(t["rerank_bytes"] for t in reached)
    for width in {t["width"] for t in chosen["trials"]}:  # per width, the margins rise until the target is met
        margins = [t["margin"] for t in chosen["trials"] if t["width"] == width]
        assert margins == sorted(margins) and margins[0] == 0.0

    reopened = Index.open(index.folder)  # stored with the index: a later search uses it
    assert reopened.adaptive_setting(True) == AdaptiveWidth(chosen["width"], chosen["margin"])
    rows, _ = reopened.search_keys(queries, K, adaptive=reopened.adaptive_setting(True))
    truth = reopened.exact_keys(queries, K)
    assert recall_at_k(rows, truth) == pytest.approx(chosen["recall"]) and chosen["recall"] >= 0.95
    hits = reopened.search(queries[0], k=K, adaptive=True)
    assert [h.id for h in hits] == [reopened.docs.fetch([r])[r][0] for r in rows[0]]
    assert len(reopened.last_timings.widths) == 1


def test_an_index_never_calibrated_uses_the_documented_default_and_says_so_once(corpus, tmp_path):
    _, _, docs, vectors = corpus
    untuned = Index.build(tmp_path / "untuned", vectors, docs, prefix_dim=64)
    with pytest.warns(UserWarning, match=r"no calibrated margin .*width 128 and margin 0\.03") as said:
        untuned.search(vectors[:3], adaptive=True)
        untuned.search(vectors[:3], adaptive=True)
    assert len(said) == 1
    assert untuned.adaptive_setting(True) == AdaptiveWidth(128, DEFAULT_MARGIN)
    assert {w.dims for w in untuned.last_timings.widths} <= {128, 384}
    full = Index.build(tmp_path / "full", vectors, docs, prefix_dim=384)
    with pytest.raises(MrlError, match="the prefix is the full width"):
        full.search(vectors[0], adaptive=True)


def test_compare_widths_ranks_the_same_candidates_at_each_width_against_full_width(built):
    index, queries = built
    view = index.compare_widths(queries[1], k=K, dims=[128, 32, 64])
    assert [c["dims"] for c in view["columns"]] == [32, 64, 128, 384]
    full = [h.id for h in view["columns"][-1]["hits"]]
    assert full == [h.id for h in index.search(queries[1], k=K)] and view["columns"][-1]["overlap"] == 1.0
    for column in view["columns"][:-1]:
        rows, _ = index.search_keys(queries[1:2], K, adaptive=AdaptiveWidth(column["dims"], 0.0))
        ids = [h.id for h in column["hits"]]
        assert ids == [index.docs.fetch([r])[r][0] for r in rows[0]]
        assert column["overlap"] == len(set(ids) & set(full)) / K
    assert view["columns"][2]["overlap"] >= view["columns"][0]["overlap"]  # 128 dims agree more than 32
    assert view["adaptive"]["dims"] in (view["adaptive"]["width"], 384) and view["adaptive"]["candidates"] > 0
    with pytest.raises(MrlError, match="`dims`: 384 is not between 1 and 383"):
        index.compare_widths(queries[1], dims=[64, 384])


def test_adaptive_is_refused_where_it_cannot_apply(built, corpus, tmp_path):
    index, queries = built
    _, _, docs, vectors = corpus
    with pytest.raises(MrlError, match=r"`adaptive\.width` must be between 1 and 383"):
        index.search(queries[0], adaptive=AdaptiveWidth(384, 0.01))
    with pytest.raises(MrlError, match=r"`adaptive\.margin` must be a cosine margin of 0 or more"):
        index.search(queries[0], adaptive=AdaptiveWidth(128, -0.1))
    with pytest.raises(MrlError, match="drop `funnel`"):
        index.search(queries[0], funnel=[128], adaptive=AdaptiveWidth(128, 0.01))
    from mrl.index.qdrant import QdrantIndex

    edge = QdrantIndex.build(f"qdrant-edge://{tmp_path / 'edge'}", vectors, docs, prefix_dim=64)
    with pytest.raises(MrlError, match="adaptive width needs an embedded index"):
        edge.search(queries[0], adaptive=True)


def mrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True)


def test_mrl_search_adaptive_reports_what_each_query_read(built, corpus, tmp_path):
    index, _ = built
    _, _, docs, vectors = corpus
    untuned = Index.build(tmp_path / "untuned", vectors, docs, model="default", prefix_dim=64)
    proc = mrl("search", str(untuned.folder), "vitamin D", "aspirin", "--adaptive")
    assert proc.returncode == 0 and proc.stderr.count("no calibrated margin") == 1, proc.stderr
    tune(index, 0.95, k=K, sample=50)  # held-out documents as the tuning queries
    proc = mrl("search", str(index.folder), "vitamin D", "aspirin and cancer", "--adaptive", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["widths"]) == 2 and all(w["dims"] in (index.tuned["adaptive"]["width"], 384) for w in out["widths"])
    proc = mrl("search", str(index.folder), "vitamin D", "--adaptive")
    assert proc.returncode == 0 and "read in full" in proc.stdout and "bytes" in proc.stdout


def test_at_the_prefix_width_a_faiss_first_pass_lends_its_scores_and_no_head_is_read(built, corpus, tmp_path):
    """The faiss engines score their answers on their codes: an adaptive rerank at the prefix's width uses those
    scores, so it reads only the rows in doubt (what pays when every read is a disk read)."""
    _, _, docs, vectors = corpus
    _, queries = built
    index = Index.build(tmp_path / "hnsw", vectors, docs, model="default", prefix_dim=64, ann="hnsw")
    stored_q = index.gen.stored_queries(queries)
    cand, first = index.gen.ann.search_scored(prefix(stored_q, 64), KPRIME, 64)
    assert (cand == index.candidates(queries, K, KPRIME, 64)).all()
    heads = [prefix(index.key_vectors(c[c >= 0])[:, :64], 64) @ prefix(stored_q[i : i + 1, :64], 64)[0]
             for i, c in enumerate(cand)]  # fmt: skip
    for i, exact in enumerate(heads):  # inner products on 8-bit codes: close to the exact prefix cosines
        np.testing.assert_allclose(first[i][cand[i] >= 0], exact, atol=0.02)

    rows, scores, widths = search(index, queries, AdaptiveWidth(64, 0.0))
    for i, used in enumerate(widths):
        order = np.argsort(-first[i], kind="stable")[:K]
        assert list(rows[i]) == list(cand[i][order]) and (scores[i] == first[i][order]).all()
        assert (used.dims, used.widened, used.rerank_bytes) == (64, 0, 0)

    fixed_rows, fixed_scores = index.search_keys(queries, K, KPRIME, 64)
    rows, scores, widths = search(index, queries, AdaptiveWidth(64, 2.0))
    assert (rows == fixed_rows).all()
    np.testing.assert_allclose(scores, fixed_scores, rtol=1e-5)
    assert all(used.rerank_bytes == used.fixed_bytes == KPRIME * 384 * 4 for used in widths)
    assert not Index.build(tmp_path / "zvec", vectors, docs, prefix_dim=64).gen.ann.scores_answers
