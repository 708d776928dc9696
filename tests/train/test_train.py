"""Training on real NLI triplets and SciFact pairs, a handful of steps with the real model."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses

from mrl.data import Pair, load_beir, load_triplets
from mrl.errors import MrlError
from mrl.model import check_dims, load_model
from mrl.train.losses import RecordingMatryoshkaLoss
from mrl.train.mining import mine_hard_negatives
from mrl.train.trainer import TrainConfig, build_loss, train


@pytest.fixture(scope="module")
def nli(data_dir):
    return load_triplets(data_dir / "nli-triplets" / "snli_dev.triplets.jsonl")[:24]


def _features(model, texts):
    return model.tokenize(texts)


@pytest.mark.parametrize("inner", ["mnrl", "cached-mnrl"])
def test_per_dim_losses_and_n_dims_per_step(inner, nli):
    """n_dims_per_step=1 must evaluate exactly one dim per step, also for the gradient-caching loss."""
    model = load_model("default")
    for n_dims, expected in ((1, 1), (-1, 3)):
        config = TrainConfig(dims=[384, 128, 64], loss=inner, n_dims_per_step=n_dims, mini_batch_size=4)
        loss = build_loss(model, config)
        assert isinstance(loss, RecordingMatryoshkaLoss)
        batch = nli[:8]
        features = [_features(model, [getattr(t, c) for t in batch]) for c in ("anchor", "positive", "negative")]
        for _ in range(4):
            value = loss(features, torch.zeros(8))
            value.backward()
            model.zero_grad()
        counts = loss.dim_counts()
        assert sum(counts.values()) == 4 * expected, counts
        assert set(counts) <= {384, 128, 64}
        per_dim = loss.pop_dim_losses()
        assert all(v > 0 for v in per_dim.values())
        assert loss.dim_counts() == {}


def test_triplet_loss_uses_cosine_margin():
    model = load_model("default")
    loss = build_loss(model, TrainConfig(loss="triplet", matryoshka=False, triplet_margin=0.3))
    assert isinstance(loss, losses.TripletLoss)
    assert loss.triplet_margin == 0.3
    assert loss.distance_metric == losses.TripletDistanceMetric.COSINE


def test_train_saves_loadable_model_with_metadata(nli, tmp_path, scifact_small):
    out = tmp_path / "m"
    config = TrainConfig(dims=[384, 128, 64], batch_size=8, max_steps=3, max_seq_length=64)
    dev = load_beir(scifact_small, "test")
    meta = train(config, out, triplets=nli, dev=dev)
    loaded = SentenceTransformer(str(out))  # a normal Sentence-Transformers folder
    assert loaded.encode(["hello"]).shape == (1, 384)
    saved = json.loads((out / "mrl.json").read_text())
    assert saved["matryoshka_dims"] == [384, 128, 64]
    assert saved["data_fingerprint"] == meta["data_fingerprint"] and saved["examples"]["triplets"] == 24
    logged = [row for row in saved["log_history"] if "loss" in row]
    assert logged and {"loss_dim_64", "loss_dim_128", "loss_dim_384"} <= set(logged[-1])
    final = saved["final_dev_metrics"]
    assert {"dev_dim64_ndcg@10", "dev_dim128_ndcg@10", "dev_dim384_ndcg@10"} <= set(final)
    assert not (out / "checkpoints").exists()
    card = (out / "README.md").read_text()  # sentence-transformers' card, plus mrl's per-dim section
    assert "sentence-transformers" in card and "## Matryoshka dims (mrl)" in card
    for d in (384, 128, 64):
        assert f"| {d} | {final[f'dev_dim{d}_ndcg@10']:.4f} | - | {4 * d} | {d} |" in card  # 39 docs: no rotation
    assert f"`{saved['data_fingerprint']}`" in card and "Recommended `truncate_dim`" in card
    # truncating to a dim the model was not trained at warns
    model = load_model(str(out))
    with pytest.warns(UserWarning, match=r"dims \[256\] were not among"):
        check_dims(model, [256])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dims(model, [128, 64])


def test_refuses_existing_output_and_bad_config(nli, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MrlError, match="`overwrite`"):
        train(TrainConfig(max_steps=1), out, triplets=nli)
    assert (out / "keep.txt").exists()
    for bad, needle in (
        (TrainConfig(dims=[512]), "larger than the model's embedding width"),
        (TrainConfig(dims=[0, 64]), "not a positive integer"),
        (TrainConfig(dims=[384, 64], dim_weights=[1.0]), "weights for 2 dims"),
        (TrainConfig(loss="contrastive"), "not one of"),
    ):
        with pytest.raises(MrlError, match=needle):
            train(bad, tmp_path / "new", triplets=nli)
        assert not (tmp_path / "new").exists()


def test_mining_skips_known_positives_and_near_duplicates(scifact_small):
    data = load_beir(scifact_small, "test")
    model = load_model("default")
    pairs = [Pair(data.queries[q], data.corpus[d]) for q, docs in data.qrels.items() for d in docs]
    triplets, counts = mine_hard_negatives(model, pairs, data.corpus, progress=False)
    assert len(triplets) == len(pairs) and counts["pairs"] == len(pairs)
    positives_of: dict[str, set[str]] = {}
    for p in pairs:
        positives_of.setdefault(p.anchor, set()).add(p.positive)
    for t in triplets:
        assert t.negative not in positives_of[t.anchor]  # no known positive of the same query
    assert counts["skipped_known_positive"] >= len(pairs)  # the positive itself ranks near the top


def test_mining_a_positive_outside_the_corpus_skips_its_near_copy_in_the_corpus(scifact_small):
    """A positive that is not a corpus document is encoded itself; the document it copies is too close to mine."""
    data = load_beir(scifact_small, "test")
    model = load_model("default")
    query, doc = next((q, d) for q, docs in data.qrels.items() for d in docs)
    edited = data.corpus[doc] + " (Edited.)"  # not a corpus text, so it is encoded, not looked up
    triplets, counts = mine_hard_negatives(model, [Pair(data.queries[query], edited)], data.corpus, progress=False)
    assert triplets[0].positive == edited and triplets[0].negative != data.corpus[doc]
    assert counts["skipped_known_positive"] == 0 and counts["skipped_near_duplicate"] >= 1


def test_resume_after_kill(nli, tmp_path):
    """SIGKILL a training run after its first checkpoint; --resume finishes it from there."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(t.__dict__) + "\n" for t in nli))
    out = tmp_path / "m"
    args = [
        sys.executable,
        "-m",
        "mrl.cli",
        "train",
        "--triplets",
        str(data),
        "--out",
        str(out),
        "--dims",
        "384,64",
        "--batch-size",
        "8",
        "--epochs",
        "4",
        "--max-seq-length",
        "32",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "mrl.json").exists()
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # a plain rerun refuses to clobber it
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    meta = json.loads((out / "mrl.json").read_text())
    steps = [row["step"] for row in meta["log_history"] if "loss" in row]
    assert steps and steps[0] > 3  # logging restarted after the checkpointed steps, not from step 1


def test_768_dim_model_trains_evaluates_and_indexes(nli, tmp_path, scifact_small):
    """Any Sentence-Transformers folder works, a 768-dim one too (here MiniLM plus a dense 384 -> 768 layer)."""
    from sentence_transformers.models import Dense, Normalize

    from mrl.data import Document
    from mrl.encode import EmbeddingCache
    from mrl.eval.retrieval import evaluate_retrieval
    from mrl.index import Index

    torch.manual_seed(0)
    base = load_model("default")
    wide = SentenceTransformer(
        modules=[
            base[0],
            base[1],
            Dense(in_features=384, out_features=768, activation_function=torch.nn.Tanh()),
            Normalize(),
        ]
    )
    wide.save(str(tmp_path / "wide"))
    dev = load_beir(scifact_small, "test")
    config = TrainConfig(
        model=str(tmp_path / "wide"), dims=[768, 256, 64], batch_size=8, max_steps=3, max_seq_length=64
    )
    meta = train(config, tmp_path / "wide-mrl", triplets=nli, dev=dev)
    assert meta["matryoshka_dims"] == [768, 256, 64]
    model = load_model(str(tmp_path / "wide-mrl"))
    assert model.get_embedding_dimension() == 768
    result = evaluate_retrieval(model, dev, [64, 256, "full"], cache=EmbeddingCache(tmp_path / "c"), progress=False)
    assert set(result.dims) == {"64", "256", "full"} and result.full_dim == 768
    assert all(0 < m["ndcg@10"] <= 1 for m in result.dims.values())
    vectors, _ = EmbeddingCache(tmp_path / "c").get_or_encode(
        model, dev.corpus_fingerprint(), list(dev.corpus.values())
    )
    docs = [Document(i, t) for i, t in dev.corpus.items()]
    index = Index.build(
        tmp_path / "idx", vectors, docs, model=str(tmp_path / "wide-mrl"), prefix_dim=64, loaded_model=model
    )
    hits = index.search("vitamin D", k=5)
    assert len(hits) == 5 and index.stats()["full_dim"] == 768


def test_distill_loss_is_matryoshka_mnrl_plus_the_recorded_kl(nli):
    """Without distillation it equals sentence-transformers' MatryoshkaLoss(MNRL); with it, that plus each KL."""
    from mrl.train.losses import MatryoshkaDistillLoss

    model = load_model("default")
    model.eval()  # no dropout: the three losses see the same embeddings
    batch = nli[:8]
    features = [_features(model, [getattr(t, c) for t in batch]) for c in ("anchor", "positive", "negative")]
    dims, weights = [384, 128, 32], [1.0, 1.0, 2.0]
    labels = torch.zeros(8)
    with torch.no_grad():
        library = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), dims, weights)(
            features, labels
        )
        plain = MatryoshkaDistillLoss(model, losses.MultipleNegativesRankingLoss(model), dims, weights, 0.0)
        assert torch.isclose(plain(features, labels), library, atol=1e-5)
        distilled = MatryoshkaDistillLoss(model, losses.MultipleNegativesRankingLoss(model), dims, weights, 0.5)
        value = distilled(features, labels)
    rank, kl = distilled.pop_dim_losses(), distilled.pop_distill_losses()
    assert set(rank) == {384, 128, 32} and set(kl) == {128, 32}  # the full width is the teacher, not a student
    assert all(v > 0 for v in kl.values()) and kl[32] > kl[128]  # the shorter prefix ranks less like the full one
    expected = sum(w * rank[d] for d, w in zip(dims, weights, strict=True)) + 0.5 * (kl[128] + 2.0 * kl[32])
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_rotate_then_distill_trains_a_plain_folder_whose_raw_prefix_is_rotated(nli, tmp_path, scifact_small):
    """--rotate appends the corpus rotation before training: at step 0 the raw prefix is the rotated one."""
    import numpy as np

    from mrl.encode import encode_texts
    from mrl.model import append_rotation
    from mrl.vectors.rotation import fit_rotation

    corpus = list(load_beir(scifact_small, "test").corpus.values())
    base = load_model("default")
    base.max_seq_length = 64
    vectors = encode_texts(base, corpus * 10, progress=False)  # repeated: a 384 x 384 fit needs >= 384 vectors
    rotation = fit_rotation(vectors)
    texts = ["vitamin D and fractures", "aspirin lowers stroke risk"]
    rotated = append_rotation(load_model("default"), rotation)
    assert np.allclose(rotated.encode(texts), base.encode(texts) @ rotation.T, atol=1e-5)

    config = TrainConfig(dims=[384, 64, 32], dim_weights=[1, 2, 2], rotate=True, distill_weight=1.0)
    config.batch_size, config.max_steps, config.max_seq_length = 8, 2, 64
    meta = train(config, tmp_path / "m", triplets=nli, rotation_vectors=vectors)
    assert meta["rotation"] == {"fitted_on_vectors": len(vectors)}
    logged = [row for row in meta["log_history"] if "loss" in row][-1]
    assert {"loss_dim_32", "distill_dim_32", "distill_dim_64"} <= set(logged)
    loaded = SentenceTransformer(str(tmp_path / "m"))
    assert [type(m).__name__ for m in loaded][-2:] == ["Dense", "Normalize"]
    emb = loaded.encode(texts)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    for bad, vecs, needle in (
        (TrainConfig(rotate=True, max_steps=1), None, "needs a corpus to fit the rotation on"),
        (TrainConfig(rotate=True, max_steps=1), vectors[:100], "needs at least 384 of them"),
        (TrainConfig(distill_weight=1.0, matryoshka=False), None, "needs Matryoshka training"),
        (TrainConfig(distill_weight=-1.0), None, "must be >= 0"),
    ):
        with pytest.raises(MrlError, match=needle):
            train(bad, tmp_path / "new", triplets=nli, rotation_vectors=vecs)
        assert not (tmp_path / "new").exists()


def test_model_card_section_recommends_the_smallest_dim_that_keeps_95_percent(tmp_path):
    from mrl.model.card import card_section, recommended_dim, write_model_card

    assert recommended_dim({384: 0.70, 128: 0.68, 64: 0.67, 32: 0.60}) == 64  # 0.67 >= 0.95 x 0.70, 0.60 is not
    meta = {
        "base_model": "all-MiniLM-L6-v2",
        "matryoshka_dims": [384, 64],
        "trained_dims": [384, 64],
        "data_fingerprint": "abc",
        "examples": {"triplets": 3, "pairs": 0},
        "rotation": {"fitted_on_vectors": 5183},
        "final_dev_metrics": {
            "dev_dim384_ndcg@10": 0.7,
            "dev_dim64_ndcg@10": 0.69,
            "dev_dim384_rotated_ndcg@10": 0.7,
            "dev_dim64_rotated_ndcg@10": 0.68,
        },
    }
    section = card_section(meta)
    assert "| 64 | 0.6900 | 0.6800 | 256 | 64 |" in section and "truncate_dim=64" in section
    assert "fitted on 5183 vectors" in section
    (tmp_path / "mrl.json").write_text(json.dumps(meta))
    (tmp_path / "README.md").write_text("# card\n")
    write_model_card(tmp_path)
    write_model_card(tmp_path)  # again: the section is replaced, not added twice
    assert (tmp_path / "README.md").read_text().count("## Matryoshka dims (mrl)") == 1
