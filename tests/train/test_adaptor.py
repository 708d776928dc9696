"""The Matryoshka adaptor on the real model's embeddings of real SciFact text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from mrl.data import Pair, load_beir
from mrl.encode import EmbeddingCache, encode_texts
from mrl.errors import MrlError
from mrl.train.adaptor import AdaptorConfig, train_adaptor
from mrl.vectors.rotation import fit_rotation


@pytest.fixture(scope="module")
def embedded(model, scifact_400):
    data = load_beir(scifact_400, "test")
    docs, _ = EmbeddingCache().get_or_encode(model, data.corpus_fingerprint(), list(data.corpus.values()))
    rows = {d: i for i, d in enumerate(data.corpus)}
    qids = list(data.qrels)
    queries = encode_texts(model, [data.queries[q] for q in qids], progress=False)
    anchor = np.stack([queries[i] for i, q in enumerate(qids) for _ in data.qrels[q]])
    positive = np.stack([docs[rows[d]] for q in qids for d in data.qrels[q]])
    return data, docs, anchor, positive


def cross_energy(y: np.ndarray, d: int) -> float:
    """Share of the second moment between the first d dims and the rest: 0 when a rotation keeps the prefix."""
    m = y.T @ y / len(y)
    return float((m[:d, d:] ** 2).sum() / (m**2).sum())


def in_batch_loss(adaptor, anchor: np.ndarray, positive: np.ndarray, d: int, scale: float = 20.0) -> float:
    """MultipleNegativesRankingLoss at prefix width ``d`` over every pair at once (the training's own objective,
    without the noise of its random batches)."""
    a, p = (adaptor.embed(x)[:, :d] for x in (anchor, positive))
    a, p = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, p))
    s = scale * a @ p.T
    top = s.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(s - top).sum(axis=1)) + top[:, 0] - np.diag(s)))


def test_adaptor_starts_at_the_rotation_and_learns_decorrelated_prefixes(embedded):
    _, docs, anchor, positive = embedded
    config = AdaptorConfig(dims=[384, 64, 32], steps=60, batch_size=16)
    still, _ = train_adaptor(
        AdaptorConfig(dims=[384, 64, 32], steps=1, learning_rate=1e-12, batch_size=16), (anchor, positive), docs
    )
    rotation = fit_rotation(docs / np.linalg.norm(docs, axis=1, keepdims=True))
    expected = docs @ rotation.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(still.embed(docs) - expected).max() < 1e-4  # zero head: exactly the corpus rotation
    trained, history = train_adaptor(config, (anchor, positive), docs, anchor)
    assert history[-1]["step"] == 60 and history[-1]["rank"] < 1e3
    free = AdaptorConfig(dims=[384, 64, 32], steps=60, batch_size=16, decorrelation=0.0)
    loose, _ = train_adaptor(free, (anchor, positive), docs, anchor)
    for d in (32, 64):
        assert cross_energy(trained.embed(docs), d) < cross_energy(loose.embed(docs), d)
    with pytest.raises(MrlError, match="must include the full width"):
        train_adaptor(AdaptorConfig(dims=[64, 32]), (anchor, positive), docs)


def test_appended_modules_encode_what_the_adaptor_computes(embedded, model, tmp_path):
    data, docs, anchor, positive = embedded
    adaptor, _ = train_adaptor(AdaptorConfig(dims=[384, 64], steps=30, batch_size=16), (anchor, positive), docs)
    from mrl.model import load_model

    fresh = load_model("default")
    texts = list(data.corpus.values())[:12]
    before = fresh.encode(texts)
    adaptor.append_to(fresh)
    fresh.save(str(tmp_path / "m"))
    loaded = SentenceTransformer(str(tmp_path / "m"))  # standard modules: loads anywhere
    assert [type(m).__name__ for m in loaded][-3:] == ["Dense", "Dense", "Normalize"]
    assert np.abs(loaded.encode(texts) - adaptor.embed(before)).max() < 1e-5


def test_train_adaptor_cli(tmp_path, scifact_400):
    import subprocess
    import sys

    data = load_beir(scifact_400, "test")
    pairs = tmp_path / "pairs.jsonl"
    rows = [Pair(data.queries[q], data.corpus[d]) for q in data.qrels for d in data.qrels[q]]
    pairs.write_text("".join(json.dumps(p.__dict__) + "\n" for p in rows))
    out = tmp_path / "m"
    base = [sys.executable, "-m", "mrl.cli", "train", "--pairs", str(pairs), "--out", str(out), "--batch-size", "8"]
    proc = subprocess.run([*base, "--adaptor"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--adaptor needs unlabelled documents" in proc.stderr and not out.exists()
    corpus = str(scifact_400 / "corpus.jsonl")
    cmd = [*base, "--adaptor", "--adaptor-corpus", corpus, "--dims", "384,64,32", "--adaptor-steps", "40"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "mrl.json").read_text())
    assert meta["adaptor"]["steps"] == 40 and meta["matryoshka_dims"] == [384, 64, 32]
    assert meta["rotation"]["fitted_on_vectors"] == len(data.corpus)
    assert {k: len(v[0]) for k, v in meta["int8_ranges"].items()} == {"384": 384, "64": 64, "32": 32}
    assert "## Matryoshka dims (mrl)" in (out / "README.md").read_text()
    assert SentenceTransformer(str(out)).encode(["vitamin D"]).shape == (1, 384)


def test_an_orthogonal_adaptor_keeps_every_full_width_score_and_still_trains_its_prefixes(embedded, model, tmp_path):
    data, docs, anchor, positive = embedded
    config = AdaptorConfig(dims=[384, 64, 32], steps=60, batch_size=16, orthogonal=True)
    adaptor, history = train_adaptor(config, (anchor, positive), docs, anchor)
    assert adaptor.weight is None and np.abs(adaptor.rotation @ adaptor.rotation.T - np.eye(384)).max() < 1e-5
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    out = adaptor.embed(docs)
    # the frozen model's full-width scores, to float error: nothing is given up at full width
    assert np.abs(out[:200] @ out.T - unit[:200] @ unit.T).max() < 1e-5
    start, _ = train_adaptor(
        AdaptorConfig(dims=[384, 64, 32], steps=1, learning_rate=1e-12, batch_size=16, orthogonal=True),
        (anchor, positive),
        docs,
    )
    assert np.abs(adaptor.rotation - start.rotation).max() > 1e-3  # it moved away from the corpus rotation
    assert history[-1]["step"] == 60
    for d in (32, 64):  # the ranking loss of the training pairs at each prefix, over all of them, went down
        assert in_batch_loss(adaptor, anchor, positive, d) < in_batch_loss(start, anchor, positive, d)
    from mrl.model import load_model

    fresh = load_model("default")
    texts = list(data.corpus.values())[:12]
    before = fresh.encode(texts)
    adaptor.append_to(fresh)
    fresh.save(str(tmp_path / "m"))
    loaded = SentenceTransformer(str(tmp_path / "m"))
    assert [type(m).__name__ for m in loaded][-2:] == ["Dense", "Normalize"]  # one map, no residual head
    assert np.abs(loaded.encode(texts) - adaptor.embed(before)).max() < 1e-5
    with pytest.raises(MrlError, match="`orthogonal` keeps the full width"):
        train_adaptor(AdaptorConfig(dims=[384], orthogonal=True), (anchor, positive), docs)
    with pytest.raises(MrlError, match=r"`dim_weights`: an orthogonal adaptor keeps the full width .* \(2\)"):
        train_adaptor(AdaptorConfig(dims=[384, 64], dim_weights=[2, 1], orthogonal=True), (anchor, positive), docs)


def test_orthogonal_without_adaptor_is_refused_before_any_work(tmp_path):
    import subprocess
    import sys

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"anchor": "a", "positive": "b"}) + "\n")
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "mrl.cli", "train", "--pairs", str(pairs), "--out", str(out), "--orthogonal"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--orthogonal shapes the adaptor: add --adaptor" in proc.stderr
    assert not out.exists()
