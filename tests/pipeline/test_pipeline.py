"""`mrl run`: config validation and a tiny end-to-end run that resumes stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrl.errors import MrlError
from mrl.pipeline.config import load_config
from mrl.pipeline.stages import Pipeline

TINY = """
name = "tiny"
[model]
max_seq_length = 48
[train]
beir = "{data}/scifact"
max_pairs = 24
mine_corpus_distractors = 40
dev_queries = 6
dev_distractors = 20
epochs = 1.0
batch_size = 8
dims = [384, 128, 64, 32]
dim_weights = [1.0, 1.0, 2.0, 2.0]
matryoshka_init = "control"
rotate = true
distill_weight = 1.0
matryoshka_epochs = 0.5
[eval]
beir = "{data}/scifact"
corpus_distractors = 120
[index]
shortlists = [10, 40]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_shipped_configs_are_valid(data_dir, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for name in ("scifact-quick", "scifact"):
        text = (Path("configs") / f"{name}.toml").read_text().replace("../shared/data", str(data_dir))
        cfg = load_config_text(text)
        assert cfg.name == name and cfg.index.prefix_dim == "auto" and cfg.index.location == ""


def load_config_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return load_config(write(Path(tmp), text))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[train]\nepochs = 'three'\n", "train.epochs: expected float"),
        ("[train]\nepoch = 3\n", "unknown key(s) ['train.epoch']"),
        ("colour = 'red'\n", "unknown key(s) ['colour']"),
        ("[eval]\nbeir = '/nope'\n", "eval.beir: folder '/nope' not found"),
        ("[train]\ndims = [384, 64]\ndim_weights = [1.0]\n", "one weight per train.dims"),
        ("[index]\nprefix_dim = 48\n", "index.prefix_dim must be auto or one of eval.dims"),
        ("[index]\nlocation = 'postgresql://u@h/db/t'\n", "index.prefix_dim auto measures widths on a folder index"),
        ("[train]\nmatryoshka_init = 'ctrl'\n", "train.matryoshka_init must be 'base' or 'control'"),
        ("[train]\nmatryoshka_init = 'control'\ncontrol = false\n", "needs train.control = true"),
        ("[train]\nadaptor_orthogonal = true\n", "train.adaptor_orthogonal shapes the adaptor"),
        ("[model\n", "invalid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, extra, needle, data_dir, monkeypatch):
    # the defaults name ../shared/data relative to where mrl runs: give them one, wherever the checkout is
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(Path(data_dir).resolve())
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(MrlError) as info:
        load_config(write(tmp_path, 'name = "x"\n' + extra))
    assert needle in str(info.value)


def test_tiny_run_writes_report_and_resumes(tmp_path, data_dir):
    cfg = load_config(write(tmp_path, TINY.format(data=data_dir)))
    reports = tmp_path / "reports"
    first = Pipeline(cfg, reports).run()
    out = reports / "tiny"
    for name in ("report.md", "report.json", "ndcg_by_dim.png", "recall_vs_qps.png", "bytes_vs_quality.png"):
        assert (out / name).stat().st_size > 500, name
    assert set(first["eval"]["models"]) == {"base", "control", "matryoshka"}
    assert set(first["eval"]["models"]["matryoshka"]) == {"64", "128", "256", "full"}
    report = (out / "report.md").read_text()
    assert "| matryoshka - control |" in report and "| matryoshka - control (rotated) |" in report
    assert set(first["eval"]["rotated"]) == {"base", "control", "matryoshka"}
    assert "| control (rotated) |" in report and "At 64 dims the best vectors are the " in report
    # the Matryoshka phase started from the control, with the corpus rotation appended
    assert json.loads((out / "stages" / "train-matryoshka.json").read_text())["outputs"]["init"].endswith("control")
    trained = json.loads((Path(first["models"]["matryoshka"]) / "mrl.json").read_text())
    assert trained["rotation"]["fitted_on_vectors"] > 384 and trained["config"]["distill_weight"] == 1.0
    # the index stage measured prefix widths and an exact scan on the training queries, and says what it chose
    assert first["index"]["rotated"] and first["index"]["tuned"]["sample_source"] == "queries"
    assert "on the rotated vectors; tuned on training queries for recall@10 0.99: " in report
    stages = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    assert set(stages) == {"data", "train-control", "train-matryoshka", "eval", "index"}

    # unchanged inputs: nothing is redone
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    Pipeline(cfg, reports).run()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")} == before
    # an [index] change re-runs only the index stage
    cfg.index.shortlists = [10, 20]
    Pipeline(cfg, reports).run()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"index.json"}
