"""mrl's per-dim evaluation through the real mteb package: the same nDCG@10 as mrl's own, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrl.data import load_beir
from mrl.eval.mteb import local_task, run_mteb
from mrl.eval.retrieval import evaluate_retrieval


@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_mteb_agrees_with_mrl_per_dim(model, scifact_small, ignore_identical_ids):
    data = load_beir(scifact_small, "test")
    ours = evaluate_retrieval(model, data, [64, "full"], progress=False, ignore_identical_ids=ignore_identical_ids)
    theirs = run_mteb(model, local_task(data, ignore_identical_ids), [64, "full"])
    assert set(theirs) == {"64", "full"} and model.truncate_dim is None  # the model is left as it was
    for label in ("64", "full"):
        for metric in ("ndcg@10", "recall@10", "mrr@10"):
            assert theirs[label][metric] == pytest.approx(ours.dims[label][metric], abs=1e-4), (label, metric)


def test_cli_mteb_and_an_offline_named_task(scifact_small, tmp_path):
    out = tmp_path / "r.json"
    args = [sys.executable, "-m", "mrl.cli", "eval", "--beir", str(scifact_small), "--dims", "64,full", "--mteb"]
    proc = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    entry = result["models"][0]
    assert result["ignore_identical_ids"] is True
    assert entry["mteb"]["full"]["ndcg@10"] == pytest.approx(entry["dims"]["full"]["ndcg@10"], abs=1e-4)
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mrl.cli", "eval", "--mteb-task", "SciFact", "--dims", "64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=offline, timeout=600)
    assert proc.returncode == 2 and "MTEB task SciFact failed" in proc.stderr and "Traceback" not in proc.stderr
