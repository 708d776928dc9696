"""The tuner: k' and the beam at a fixed width, the prefix width under ``auto``, exact scans, held-out queries."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import Index
from mrl.index.tuning import exact_top, held_out, prefix_widths, recall_at_k, tune
from mrl.vectors.prefix import prefix


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres with a decaying spectrum: a prefix knows most, not all, of each vector."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)) * np.linspace(2, 0.2, dim)
    x = centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim)) * np.linspace(1, 0.3, dim)
    return prefix(x.astype(np.float32), dim)


def docs_for(n: int) -> list[Document]:
    return [Document(f"d{i}", f"text {i}", {"n": i}) for i in range(n)]


def test_held_out_drops_each_querys_own_document():
    assert held_out([[5, 1, 2], [7, 8, 9]], [5, 9], 2) == [[1, 2], [7, 8]]


def test_exact_top_pads_when_fewer_rows_than_k_are_live():
    x = clustered(6)
    excluded = np.array([False, True, False, True, False, False])
    rows, scores = exact_top(x[:2], len(x), x.__getitem__, 5, excluded=excluded)
    assert rows.shape == (2, 5) and set(rows[0, :4]) == {0, 2, 4, 5} and rows[0, 4] == -1
    assert np.isneginf(scores[0, 4]) and np.all(np.diff(scores[0, :4]) <= 0)


def test_candidate_widths_go_from_full_down():
    assert prefix_widths(384) == [384, 256, 192, 128, 96, 64, 48, 32]
    assert prefix_widths(64) == [64, 48, 32]


def test_auto_measures_widths_and_an_exact_scan_and_commits_only_the_winner(tmp_path):
    x = clustered(3000)
    index = Index.build(tmp_path / "i", x, docs_for(3000), tune_sample=150)
    tuned = index.tuned
    widths = {r["width"] for r in tuned["table"]}
    assert 64 in widths and "exact" in widths  # the full width and the exact scan are always measured
    assert tuned["prefix_dim"] == index.prefix_dim and index.prefix_dim in widths
    assert tuned["sample_source"] == "documents" and tuned["sample_queries"] == 150
    reached = [r for r in tuned["table"] if r["qps_single"] is not None]
    assert all(r["recall"] >= 0.99 for r in reached)
    assert tuned["choice"]
    # of the candidates tried, only the committed one is left on disk (beside the built generation's, which the
    # last two generations keep for readers that opened it a moment ago)
    anns = {p.name for p in (tmp_path / "i").iterdir() if p.name.startswith("ann-")}
    assert anns == {index.manifest.ann_file, "ann-00000001.zvec"}
    # the stored choice holds on queries it never saw (held-out: new points near the data)
    rng = np.random.default_rng(7)
    queries = prefix(x[rng.choice(3000, 100)] + 0.2 * rng.standard_normal((100, 64)).astype(np.float32), 64)
    rows, _ = index.search_keys(queries, 10)
    assert recall_at_k(rows, index.exact_keys(queries, 10)) >= 0.95
    reopened = Index.open(tmp_path / "i")
    assert reopened.tuned == tuned and reopened.prefix_dim == index.prefix_dim


def test_an_index_tuned_to_exact_search_answers_exactly(tmp_path):
    x = clustered(500)
    index = Index.build(tmp_path / "i", x, docs_for(500), prefix_dim=16)
    index.set_tuned({"exact": True, "choice": "exact scan"})
    queries = x[:20] + 0.01
    rows, scores = index.search_keys(prefix(queries, 64), 10)
    truth = index.exact_keys(prefix(queries, 64), 10)
    assert (rows == truth).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
    # an explicit shortlist still runs the two-pass search
    two_pass, _ = index.search_keys(prefix(queries, 64), 10, shortlist=20, ann_search=32)
    assert two_pass.shape == (20, 10)
    assert index.stats()["parts"][-2]["where"] == "ram"  # the scan reads every vector: they are hot


def test_a_corpus_too_small_to_hold_out_stays_at_full_width_and_says_why(tmp_path):
    index = Index.build(tmp_path / "i", clustered(150), docs_for(150))
    assert index.prefix_dim == 64
    assert "150 documents are too few" in index.tuned["choice"]


def test_tuning_queries_instead_of_documents(tmp_path):
    x = clustered(1000)
    queries = clustered(60, seed=3)
    index = Index.build(tmp_path / "i", x, docs_for(1000), prefix_dim=32, target_recall=0.95, tune_queries=queries)
    tuned = index.tuned
    assert tuned["sample_source"] == "queries" and tuned["sample_queries"] == 60
    assert tuned["prefix_dim"] == 32 and tuned["measured_recall"] >= 0.95 and "exact" not in tuned
    with pytest.raises(MrlError, match="64-dim vectors"):
        tune(index, 0.95, queries=np.ones((3, 10), dtype=np.float32))


def test_retuning_a_fixed_width_rebuilds_the_first_pass(tmp_path):
    x = clustered(1000)
    index = Index.build(tmp_path / "i", x, docs_for(1000), prefix_dim=16)
    tuned = tune(index, 0.95, widths=[48])
    assert index.prefix_dim == 48 == tuned["prefix_dim"] and Index.open(tmp_path / "i").prefix_dim == 48
    with pytest.raises(MrlError, match="`prefix_dim`: 80 is not between 1 and the stored width 64"):
        tune(index, 0.95, widths=[80])
    assert Index.open(tmp_path / "i").prefix_dim == 48  # a refused width changed nothing


def test_bad_prefix_dim_and_target_are_refused_before_any_work(tmp_path):
    x = clustered(300)
    for kwargs, needle in (
        ({"prefix_dim": "wide"}, "`prefix_dim` must be a positive whole number or 'auto'"),
        ({"prefix_dim": 100}, "`prefix_dim` 100 must be between 1 and the vector width 64"),
        ({"target_recall": 1.5}, r"`target_recall` must be in \(0, 1\]"),
    ):
        with pytest.raises(MrlError, match=needle):
            Index.build(tmp_path / "i", x, docs_for(300), **kwargs)
        assert not (tmp_path / "i").exists()


def mrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        ('{"text": "a claim"}\n{"txt": "no text"}\n', "q.jsonl", "q.jsonl, line 2, field 'text': missing column"),
        ("", "q.jsonl", "q.jsonl: no queries in the file"),
        (None, "q.npy", "q.npy: query vectors are 12-dim, the model makes 384-dim vectors"),
        ('{"text": "ok"}\n{bad json\n', "q.jsonl", "q.jsonl, line 2: bad JSON"),
    ],
)
def test_index_build_refuses_a_bad_tuning_query_file_and_writes_nothing(tmp_path, scifact_small, content, name, needle):
    path = tmp_path / name
    if content is None:
        np.save(path, np.ones((4, 12), dtype=np.float32))
    else:
        path.write_text(content)
    out = tmp_path / "idx"
    proc = mrl("index", "build", str(out), "--corpus", str(scifact_small / "corpus.jsonl"),
               "--tune-queries", str(path))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_index_build_auto_on_a_small_corpus_says_why_it_stays_at_full_width(tmp_path, scifact_small):
    out = tmp_path / "idx"
    proc = mrl("index", "build", str(out), "--corpus", str(scifact_small / "corpus.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "tuned: full width, untuned:" in proc.stderr
    manifest = json.loads((out / (out / "CURRENT").read_text().strip()).read_text())
    assert manifest["prefix_dim"] == 384
    proc = mrl("index", "build", str(out), "--corpus", str(scifact_small / "corpus.jsonl"), "--overwrite",
               "--prefix-dim", "0")  # fmt: skip
    assert proc.returncode == 2 and "--prefix-dim must be a positive whole number or auto, not '0'" in proc.stderr


def test_index_stats_prints_the_measured_table(tmp_path):
    x = clustered(1000)
    Index.build(tmp_path / "i", x, docs_for(1000), prefix_dim=16, target_recall=0.9)
    proc = mrl("index", "stats", str(tmp_path / "i"))
    assert proc.returncode == 0, proc.stderr
    assert "settings measured on 200 sample documents" in proc.stdout and "chosen" in proc.stdout


def test_width_search_needs_an_embedded_index(tmp_path):
    from mrl.index.qdrant import QdrantIndex

    x = clustered(300)
    edge = QdrantIndex.build(f"qdrant-edge://{tmp_path / 'edge'}", x, docs_for(300), prefix_dim=16)
    with pytest.raises(MrlError, match="only an embedded index can measure prefix widths"):
        tune(edge, 0.9, widths="auto")
    assert edge.prefix_dim == 16
