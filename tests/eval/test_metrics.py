"""pytrec_eval-backed metrics checked against cases computed by hand."""

from __future__ import annotations

import math

import pytest

from mrl.eval.metrics import retrieval_metrics


def test_hand_computed_single_query():
    # relevant: d1, d3. Ranked: d1 (rel), d2, d3 (rel).
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    qrels = {"q": {"d1": 1, "d3": 1}}
    run = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7}}
    m = retrieval_metrics(qrels, run)
    assert m["ndcg@10"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert m["recall@10"] == 1.0 and m["recall@100"] == 1.0
    assert m["mrr@10"] == 1.0


def test_mrr_cut_at_ten_and_recall_cut():
    # the only relevant doc is at rank 11: MRR@10 = 0, Recall@10 = 0, Recall@100 = 1
    run = {"q": {f"d{i}": 1.0 - i / 100 for i in range(1, 12)}}
    m = retrieval_metrics({"q": {"d11": 1}}, run)
    assert m["mrr@10"] == 0.0 and m["recall@10"] == 0.0 and m["recall@100"] == 1.0
    assert m["ndcg@10"] == 0.0


def test_mean_over_queries_counts_missing_queries_as_zero():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    run = {"a": {"d0": 0.9, "d1": 0.5}}  # 'b' retrieved nothing
    m = retrieval_metrics(qrels, run)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3)) / 2)


def test_graded_relevance_ndcg():
    # gains 2 at rank 2, 1 at rank 1: DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3)
    m = retrieval_metrics({"q": {"d1": 1, "d2": 2}}, {"q": {"d1": 0.9, "d2": 0.1}})
    assert m["ndcg@10"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_identical_ids_dropped_only_when_asked_and_rows_to_run():
    import numpy as np

    from mrl.eval.metrics import run_from_rows

    run = run_from_rows(np.array([[2, 0, -1]]), np.array([[0.9, 0.5, 0.0]]), ["d1", "x", "q"], ["q"])
    assert run == {"q": {"q": 0.9, "d1": 0.5}}
    qrels = {"q": {"d1": 1}}
    assert retrieval_metrics(qrels, run)["mrr@10"] == pytest.approx(0.5)
    assert retrieval_metrics(qrels, run, ignore_identical_ids=True)["mrr@10"] == 1.0
