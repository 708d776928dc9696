"""The learned rotation (mrl.index.rotation) and indexes stored in it, on real SciFact embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrl.index import Index
from mrl.index.manifest import read_current
from mrl.index.tuning import recall_at_k
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import fit_rotation, rotate_rows


def neighbours_found(vectors: np.ndarray, dim: int, shortlist: int) -> float:
    """Share of each vector's full-dim top-10 (itself excluded) inside its top-``shortlist`` by the ``dim`` prefix."""
    full = np.argsort(-(vectors @ vectors.T), axis=1)[:, 1:11]
    short = prefix(vectors, dim)
    cand = np.argsort(-(short @ short.T), axis=1)[:, 1 : shortlist + 1]
    return float(np.mean([len(set(f) & set(c)) / 10 for f, c in zip(full, cand, strict=True)]))


def test_rotation_keeps_every_score_and_makes_the_prefix_rank_like_the_full_vector(corpus):
    _, _, _, vectors = corpus
    unit = prefix(vectors, vectors.shape[1])
    rotation = fit_rotation(unit)
    rotated = rotate_rows(unit, rotation)
    assert np.allclose(rotation @ rotation.T, np.eye(len(rotation)), atol=1e-5)
    assert np.allclose(rotated @ rotated.T, unit @ unit.T, atol=1e-5)  # cosine between any two documents: kept
    assert np.allclose(rotated @ rotation, unit, atol=1e-5)  # and undone exactly
    energy = (rotated**2).sum(axis=0)
    assert np.all(np.diff(energy) <= 1e-4)  # strongest direction first
    # the base model's raw 32-dim prefix finds about half of each document's top-10 in its top-20; rotated, nearly all
    raw, turned = neighbours_found(unit, 32, 20), neighbours_found(rotated, 32, 20)
    assert turned >= 0.9 and turned >= raw + 0.2


def test_rotated_index_answers_in_the_models_basis(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    unit = prefix(vectors, vectors.shape[1])
    index = Index.build(
        tmp_path / "i", vectors[:150], docs[:150], model="default", prefix_dim=32, ann="hnsw", loaded_model=model
    )
    assert index.stats()["rotated"] and read_current(tmp_path / "i").format_version == 2
    queries = unit[150:180]  # documents the rotation was not fitted on
    rows, scores = index.search_keys(queries, 10, shortlist=150, ann_search=512)
    expected = np.argsort(-(queries @ unit[:150].T), axis=1)[:, :10]
    assert recall_at_k(rows, expected) >= 0.999
    assert np.allclose(scores, np.take_along_axis(queries @ unit[:150].T, expected, axis=1), atol=1e-4)
    sample = index.sample_vectors(20, seed=0)  # tuning queries come back in the model's basis
    assert np.abs(sample @ unit[:150].T).max(axis=1) == pytest.approx(np.ones(20), abs=1e-4)

    index.add(docs[150:], vectors[150:])  # new documents are rotated on the way in, with the stored rotation
    reopened = Index.open(tmp_path / "i", model=model)
    assert reopened.stats()["rotated"] and reopened.count == len(docs)
    hits = reopened.search(vectors[200], k=1)
    assert hits[0].id == docs[200].id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    truth = reopened.exact_keys(queries, 10)
    assert recall_at_k(reopened.search_keys(queries, 10, shortlist=len(docs), ann_search=512)[0], truth) >= 0.999


def test_unrotated_index_keeps_format_1_and_the_raw_prefix(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    index = Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=32, ann="hnsw", rotate=False)
    m = read_current(tmp_path / "i")
    assert m.rotation_file is None and m.format_version == 1 and not index.stats()["rotated"]
    raw = prefix(vectors[:5], 32)
    assert np.array_equal(index.ann.search(raw, 1, None)[:, 0], np.arange(5))  # the first pass holds the raw prefix


def test_index_written_before_rotation_opens_and_searches(corpus, tmp_path, model):
    """A manifest from an older mrl has no rotation_file key at all: it opens as unrotated and answers the same."""
    _, _, docs, vectors = corpus
    built = Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=32, rotate=False)
    queries = prefix(vectors[:10], vectors.shape[1])
    expected = built.search_keys(queries, 10, shortlist=len(docs), ann_search=512)[0]
    path = tmp_path / "i" / (tmp_path / "i" / "CURRENT").read_text().strip()
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "rotation_file"}
    path.write_text(json.dumps(old))
    reopened = Index.open(tmp_path / "i", model=model)
    assert not reopened.stats()["rotated"]
    assert np.array_equal(reopened.search_keys(queries, 10, shortlist=len(docs), ann_search=512)[0], expected)
