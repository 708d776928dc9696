"""Encoding once, prefix views, and the embedding cache, on the real model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mrl.data import load_beir
from mrl.encode import EmbeddingCache, encode_reusing, encode_texts
from mrl.vectors.prefix import prefix

TEXTS = [
    "Vitamin D supplementation reduces fracture risk in older adults.",
    "The mitochondria is the powerhouse of the cell.",
    "Aspirin lowers the risk of heart attack.",
    "Quantum entanglement links the states of two particles.",
]


def test_prefix_is_renormalized_slice():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(10, 384)).astype(np.float32)
    view = prefix(full, 64)
    assert view.shape == (10, 64)
    assert np.allclose(np.linalg.norm(view, axis=1), 1.0, atol=1e-5)
    assert np.allclose(view * np.linalg.norm(full[:, :64], axis=1, keepdims=True), full[:, :64], atol=1e-5)


def test_unnormalized_prefix_ranks_by_norm_not_angle():
    """The classic MRL bug: dot products of raw prefixes prefer long prefixes over aligned ones."""
    query = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    docs = np.array(
        [
            [0.6, 0.8, 0.0, 0.0],  # prefix(2) points 53 degrees away but is long
            [0.3, 0.05, 0.95, 0.0],  # prefix(2) nearly parallel to the query but short
        ],
        dtype=np.float32,
    )
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    raw = query[:, :2] @ docs[:, :2].T
    cosine = prefix(query, 2) @ prefix(docs, 2).T
    assert raw.argmax() == 0
    assert cosine.argmax() == 1


def test_prefix_matches_sentence_transformers_truncate_dim(model):
    full = encode_texts(model, TEXTS, progress=False)
    assert full.shape == (4, 384)
    for dim in (64, 128, 256):
        reference = model.encode(TEXTS, truncate_dim=dim, normalize_embeddings=True)
        assert np.allclose(prefix(full, dim), reference, atol=1e-5)


def test_encode_reusing_takes_known_rows_and_encodes_the_rest(model):
    """Known texts get the stored row as it is (here a marker no model would output); the rest are encoded."""
    marker = np.full((2, 384), 7.0, dtype=np.float32)
    known = {TEXTS[0]: 1}
    texts = [TEXTS[0], TEXTS[2], TEXTS[0], TEXTS[3], TEXTS[2]]
    rows = encode_reusing(model, texts, known, marker, progress=False)
    assert rows.shape == (5, 384) and rows.dtype == np.float32
    assert (rows[0] == 7.0).all() and (rows[2] == 7.0).all()
    fresh = encode_texts(model, [TEXTS[2], TEXTS[3]], progress=False)
    assert np.allclose(rows[[1, 3]], fresh, atol=1e-5)
    assert np.array_equal(rows[1], rows[4])


def test_prefix_rejects_bad_dims():
    with pytest.raises(ValueError):
        prefix(np.ones((2, 8), dtype=np.float32), 9)
    with pytest.raises(ValueError):
        prefix(np.ones((2, 8), dtype=np.float32), 0)


def test_cache_hit_skips_encoding_and_keys_on_content(model, cache_dir):
    cache = EmbeddingCache(cache_dir)
    first, cached = cache.get_or_encode(model, "corpusA", TEXTS, progress=False)
    assert not cached
    again, cached = cache.get_or_encode(model, "corpusA", TEXTS, progress=False)
    assert cached and np.array_equal(first, again)
    other, cached = cache.get_or_encode(model, "corpusB", TEXTS[:2], progress=False)
    assert not cached and other.shape == (2, 384)
    assert not list(cache_dir.glob("*.tmp"))


def test_cache_keys_on_weights_dtype(cache_dir):
    """A model cast to bfloat16 encodes slightly differently, so it must not reuse float32 entries."""
    import torch

    from mrl.model import load_model, model_fingerprint

    model = load_model("default")
    before = model_fingerprint(model)
    cache = EmbeddingCache(cache_dir)
    full, _ = cache.get_or_encode(model, "corpusA", TEXTS, progress=False)
    model.to(torch.bfloat16)
    assert model_fingerprint(model) != before
    half, cached = cache.get_or_encode(model, "corpusA", TEXTS, progress=False)
    assert not cached and not np.array_equal(full, half)
    assert np.allclose(full, half, atol=0.05)


def test_encode_to_file_writes_the_matrix_in_chunks(model, cache_dir):
    path = EmbeddingCache(cache_dir).encode_to_file(model, "corpusA", TEXTS, chunk_rows=3)
    assert np.abs(np.load(path) - encode_texts(model, TEXTS, progress=False)).max() < 1e-5
    again, cached = EmbeddingCache(cache_dir).get_or_encode(model, "corpusA", TEXTS, progress=False)
    assert cached and np.array_equal(again, np.load(path))  # the same cache entry as get_or_encode's
    assert not list(cache_dir.glob("*.partial.*"))


def test_an_interrupted_index_build_resumes_its_encoding(model, scifact_small, tmp_path):
    """Ctrl-C mid-encoding leaves no index, keeps the rows encoded so far, and the same command goes on from them."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "mrl.cli", "index", "build", "--corpus", str(scifact_small / "corpus.jsonl"),
           str(tmp_path / "i"), "--cache-dir", str(cache), "--chunk-rows", "4",
           "--batch-size", "4"]  # fmt: skip
    # Ctrl-C as in a terminal: a runner started in the background by a non-interactive shell ignores SIGINT,
    # and the child would inherit that and build on through the signal
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait for two chunks on disk, then interrupt
        states = list(cache.glob("*.partial.json"))
        if states and json.loads(states[0].read_text())["rows"] >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "resumes from there" in stderr
    assert not (tmp_path / "i").exists()  # no half-built index
    done = json.loads(next(cache.glob("*.partial.json")).read_text())
    total = len(load_beir(scifact_small, "test").corpus)
    assert 8 <= done["rows"] < total and done["total"] == total

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming the encoding at text {done['rows']:,} of {total:,}" in resumed.stderr
    (entry,) = [p for p in cache.glob("*.npy") if ".partial" not in p.name]
    texts = list(load_beir(scifact_small, "test").corpus.values())
    assert np.abs(np.load(entry) - encode_texts(model, texts, batch_size=4, progress=False)).max() < 1e-5
    assert not list(cache.glob("*.partial.*"))
