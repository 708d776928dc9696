"""The ``mrl`` command as a user runs it: a real subprocess, real model, real data subset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def mrl(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MRL_CACHE_DIR": str(cache)} if cache else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_help_lists_commands():
    out = mrl("--help")
    assert out.returncode == 0 and "eval" in out.stdout


def test_eval_two_models_writes_table_json_and_plot(scifact_small, tmp_path, model):
    # the same weights through two routes (the default alias and its folder) must give the same numbers
    folder = model.mrl_source
    out = tmp_path / "res.json"
    proc = mrl(
        "eval",
        "--model",
        "default",
        "--model",
        folder,
        "--beir",
        str(scifact_small),
        "--dims",
        "64,128,full",
        "--out",
        str(out),
        cache=tmp_path / "c",
    )
    assert proc.returncode == 0, proc.stderr
    assert "nDCG@10" in proc.stdout and "bytes/vec" in proc.stdout
    result = json.loads(out.read_text())
    assert result["dataset"] == scifact_small.name and result["split"] == "test"
    assert len(result["models"]) == 2
    first, second = result["models"]
    assert first["full_dim"] == 384 and set(first["dims"]) == {"64", "128", "full"}
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert first["dims"]["full"][key] == pytest.approx(second["dims"]["full"][key])
    assert second["corpus_embeddings_cached"]  # same weights, same corpus: encoded once
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "provenance" in result and result["provenance"]["machine"]["cpus"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--split", "nope"], "unknown split 'nope'"),
        (["--dims", "64,999"], "larger than the model's embedding width (384)"),
        (["--dims", "64,x"], "--dims"),
    ],
)
def test_bad_input_one_line_exit_2(scifact_small, args, needle):
    proc = mrl("eval", "--beir", str(scifact_small), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error")]) == 1


def test_not_a_model_folder(tmp_path, scifact_small):
    (tmp_path / "junk").mkdir()
    proc = mrl("eval", "--model", str(tmp_path / "junk"), "--beir", str(scifact_small))
    assert proc.returncode == 2 and "not a Sentence-Transformers model folder" in proc.stderr


def test_malformed_corpus_names_line(tmp_path, scifact_small):
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "qrels" / "test.tsv").write_text((scifact_small / "qrels" / "test.tsv").read_text())
    (bad / "queries.jsonl").write_text((scifact_small / "queries.jsonl").read_text())
    lines = (scifact_small / "corpus.jsonl").read_text().splitlines()
    lines[2] = lines[2][:30]
    (bad / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    proc = mrl("eval", "--beir", str(bad))
    assert proc.returncode == 2
    assert f"{bad / 'corpus.jsonl'}, line 3: bad JSON" in proc.stderr


def test_debug_shows_traceback(scifact_small):
    proc = mrl("--debug", "eval", "--beir", str(scifact_small), "--split", "nope")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
