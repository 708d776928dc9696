"""Per-dim retrieval evaluation on a real SciFact subset with the real model."""

from __future__ import annotations

import numpy as np
import pytest

from mrl.data import load_beir, load_sts
from mrl.encode import EmbeddingCache
from mrl.eval.retrieval import evaluate_retrieval, evaluate_sts, exact_search, parse_dims, resolve_dims


def test_parse_and_resolve_dims():
    assert parse_dims("64, 128,full,64") == [64, 128, "full"]
    assert resolve_dims([64, 384, "full"], 384) == [("64", 64), ("full", 384)]
    with pytest.raises(ValueError, match="not a positive integer"):
        parse_dims("64,abc")
    with pytest.raises(ValueError, match="not a positive integer"):
        parse_dims("-5")
    with pytest.raises(ValueError, match="larger than the model's embedding width"):
        resolve_dims([512], 384)


def test_exact_search_returns_true_top_k():
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    run = exact_search(docs[:3], docs, [f"d{i}" for i in range(50)], 5, ["a", "b", "c"])
    assert max(run["b"], key=run["b"].get) == "d1"
    expected = np.argsort(-(docs[2] @ docs.T))[:5]
    assert set(run["c"]) == {f"d{i}" for i in expected}


def test_retrieval_per_dim_on_real_subset(model, scifact_small, cache_dir):
    dataset = load_beir(scifact_small, "test")
    cache = EmbeddingCache(cache_dir)
    result = evaluate_retrieval(model, dataset, [64, 128, "full"], cache=cache, progress=False)
    assert list(result.dims) == ["64", "128", "full"]
    full = result.dims["full"]
    # a few dozen docs, relevant ones included: the base model finds most of them
    assert full["ndcg@10"] > 0.6 and full["recall@100"] == 1.0
    assert full["retained_ndcg@10"] == pytest.approx(100.0)
    assert result.dims["64"]["bytes_per_vector"] == 256 and full["bytes_per_vector"] == 1536
    assert result.dims["64"]["ndcg@10"] < full["ndcg@10"] + 0.05
    assert not result.cached
    again = evaluate_retrieval(model, dataset, [64, 128, "full"], cache=cache, progress=False)
    assert again.cached and again.dims == result.dims


def test_sts_spearman_per_dim(model, data_dir, tmp_path):
    lines = (data_dir / "stsbenchmark" / "sts-test.csv").read_text().splitlines()[:80]
    path = tmp_path / "sts.csv"
    path.write_text("\n".join(lines) + "\n")
    out, rotated = evaluate_sts(model, load_sts(path), [64, "full"])
    assert rotated is None
    assert 60 < out["full"]["spearman"] <= 100
    assert out["64"]["spearman"] < out["full"]["spearman"] + 5


def test_rotated_prefixes_are_measured_beside_raw_ones(model, scifact_400):
    """--rotate: the free baseline. Full width is unchanged by a rotation; a short prefix gains from it."""
    dataset = load_beir(scifact_400, "test")
    result = evaluate_retrieval(model, dataset, [32, 128, "full"], progress=False, rotate=True)
    assert set(result.rotated) == set(result.dims) == {"32", "128", "full"}
    assert result.rotated["full"]["ndcg@10"] == pytest.approx(result.dims["full"]["ndcg@10"], abs=1e-4)
    assert result.rotated["32"]["ndcg@10"] > result.dims["32"]["ndcg@10"] + 0.02
    assert result.rotation == {"fitted_on_vectors": len(dataset.corpus), "of": len(dataset.corpus), "seed": 0}
    sampled = evaluate_retrieval(model, dataset, [32], progress=False, rotate_sample=384)
    assert sampled.rotation["fitted_on_vectors"] == 384 and sampled.rotated["32"]["ndcg@10"] > 0
    assert result.to_json()["rotated"] == result.rotated
    with pytest.raises(ValueError, match="larger than the corpus"):
        evaluate_retrieval(model, dataset, [32], progress=False, rotate_sample=len(dataset.corpus) + 1)
