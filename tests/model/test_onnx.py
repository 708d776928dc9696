"""ONNX export and ONNX Runtime encoding of a real model: the same vectors as torch, int8 close in quality."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mrl.data import load_beir
from mrl.eval.retrieval import evaluate_retrieval
from mrl.model import load_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "m"
    cmd = [sys.executable, "-m", "mrl.cli", "export", "default", "--onnx", "--quantize", "int8", "--out", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (folder / "onnx" / "model.onnx").is_file() and (folder / "onnx" / "model_qint8.onnx").is_file()
    return folder


def test_onnx_embeddings_equal_torch(exported, scifact_small):
    texts = [*list(load_beir(scifact_small, "test").corpus.values())[:24], "vitamin D", "a"]
    torch_model = load_model(str(exported))
    onnx_model = load_model(str(exported), backend="onnx")
    want = torch_model.encode(texts, batch_size=8)
    got = onnx_model.encode(texts, batch_size=8)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
    assert onnx_model.get_embedding_dimension() == 384


def test_int8_vectors_stay_close_to_float_at_every_prefix(exported, scifact_small):
    """int8 blocks perturb each vector a little (the nDCG@10 drift on SciFact: benchmarks/encode_speed.py)."""
    from mrl.vectors.prefix import prefix

    texts = list(load_beir(scifact_small, "test").corpus.values())
    full = load_model(str(exported)).encode(texts, batch_size=16)
    int8 = load_model(str(exported), backend="onnx-int8").encode(texts, batch_size=16)
    for dim in (64, 128, 384):
        cosine = np.sum(prefix(full, dim) * prefix(int8, dim), axis=1)
        # mean / min 0.9991 / 0.9985 seen on all-MiniLM-L6-v2 (AMD EPYC); the dynamic scheme's 0.9977 / 0.9962 fails
        assert cosine.mean() > 0.998 and cosine.min() > 0.997, (dim, cosine.mean(), cosine.min())


def test_int8_moves_ndcg_by_less_than_0005_at_every_dim(exported, data_dir):
    """The bar the int8 export is held to, on benchmarks/encode_speed.py's quality set: all 300 SciFact test
    queries over their judged abstracts and 1,000 others (a few minutes). A small subset cannot hold this bar:
    with 20 queries, one query's reordered top 10 moves the mean by more than 0.005."""
    import random

    from mrl.data.beir import subset

    test = load_beir(data_dir / "scifact", "test")
    test = subset(test, list(test.qrels), 1000, random.Random(0))
    dims = [64, 128, 256, "full"]
    float_ = evaluate_retrieval(load_model(str(exported), backend="onnx"), test, dims, progress=False)
    int8 = evaluate_retrieval(load_model(str(exported), backend="onnx-int8"), test, dims, progress=False)
    for dim in float_.dims:
        assert abs(int8.dims[dim]["ndcg@10"] - float_.dims[dim]["ndcg@10"]) < 0.005, dim


def test_eval_and_search_with_the_onnx_backend(exported, scifact_small, tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "mrl.cli", "eval", "--model", str(exported), "--beir", str(scifact_small)]
    proc = subprocess.run(
        [*cmd, "--dims", "64,full", "--backend", "onnx", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_ndcg = json.loads(out.read_text())["models"][0]["dims"]["full"]["ndcg@10"]
    torch_ndcg = evaluate_retrieval(
        load_model(str(exported)), load_beir(scifact_small, "test"), ["full"], progress=False
    )
    assert onnx_ndcg == pytest.approx(torch_ndcg.dims["full"]["ndcg@10"], abs=1e-4)
    missing = subprocess.run(
        [sys.executable, "-m", "mrl.cli", "eval", "--beir", str(scifact_small), "--backend", "onnx"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert missing.returncode == 2 and "mrl export" in missing.stderr


def test_a_new_int8_scheme_gets_new_cache_keys(exported, tmp_path):
    """The embedding cache keys an ONNX model by its graph file too: re-quantizing the same folder with another
    scheme must not reuse the vectors of the old graph."""
    import shutil

    from mrl.model import model_fingerprint
    from mrl.model.onnx import quantize_int8

    folder = tmp_path / "m"
    shutil.copytree(exported, folder)
    before = model_fingerprint(load_model(str(folder), backend="onnx-int8"))
    assert model_fingerprint(load_model(str(folder), backend="onnx-int8")) == before  # stable across loads
    quantize_int8(folder / "onnx" / "model.onnx", folder / "onnx" / "model_qint8.onnx", block_size=None)
    assert model_fingerprint(load_model(str(folder), backend="onnx-int8")) != before
    assert model_fingerprint(load_model(str(folder), backend="onnx")) != before
