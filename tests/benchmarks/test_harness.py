"""The benchmark harness's pure parts: turn ratios, operating points, verdicts against peers, and the tables that
print figures with the markers tests/test_docs.py checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness
import summarize
from test_docs import check, markers


def test_turn_summary_takes_the_median_of_the_per_round_ratios():
    single = {"mine": [200.0, 100.0, 300.0], "theirs": [100.0, 100.0, 100.0]}
    batch = {"mine": [10.0, 10.0, 10.0], "theirs": [20.0, 5.0, 10.0]}
    out = harness.turn_summary(single, batch)
    assert out["rounds"] == 3
    assert out["median_ratio_single"] == 2.0  # of 2, 1, 3 (not the ratio of medians 200/100 by chance)
    assert out["median_ratio_batch"] == 1.0  # of 0.5, 2, 1
    assert out["median_qps_single_mine"] == 200.0 and out["median_qps_batch_theirs"] == 10.0


def test_the_median_of_ratios_cancels_a_drift_that_a_ratio_of_medians_keeps():
    # the machine slows down 3x between rounds; mine is 1.5x theirs in every round
    mine = [300.0, 100.0, 150.0]
    theirs = [200.0, 66.666666, 100.0]
    out = harness.turn_summary({"mine": mine, "theirs": theirs}, {"mine": mine, "theirs": theirs})
    assert out["median_ratio_single"] == pytest.approx(1.5, rel=1e-6)


def test_operating_point_is_the_fastest_that_reaches_the_target():
    points = [
        {"recall@10": 0.99, "qps_single": 100.0},
        {"recall@10": 0.995, "qps_single": 80.0},
        {"recall@10": 0.98, "qps_single": 500.0},
        {"recall@10": 0.991, "qps_single": 120.0},
    ]
    assert harness.operating_point(points, 0.99)["qps_single"] == 120.0
    assert harness.operating_point(points, 0.999) is None


def point(single: float, batch: float, hot: int) -> dict:
    return {"qps_single": single, "qps_batch": batch, "hot_bytes": hot, "recall@10": 0.99}


def test_versus_peers_names_the_best_peer_per_mode_and_prefers_timings_in_turns():
    mine = point(300.0, 600.0, 100)
    turns = {
        "median_ratio_single": 1.2,
        "median_ratio_batch": 0.9,
        "qps_single": {"mine": [1.0], "theirs": [1.0]},
        "qps_batch": {"mine": [1.0], "theirs": [1.0]},
    }
    peers = {
        "a": {"point": point(100.0, 300.0, 400), "hot_bytes": 400},  # mine is 3x, 2x
        "b": {"point": point(250.0, 500.0, 200), "hot_bytes": 200, "turns": turns},  # in turns: 1.2x, 0.9x
        "c": {"point": None, "skipped": "needs an Intel CPU"},
    }
    out = harness.versus_peers(mine, peers)
    assert out["peers"]["b"]["ratio_source"] == "in turns"
    assert out["peers"]["b"]["qps_single_ratio"] == 1.2  # the turns, not 300 / 250
    assert out["peers"]["a"]["qps_single_ratio"] == 3.0 and out["peers"]["a"]["ratio_source"] == "one timing each"
    assert out["peers"]["a"]["ram_ratio"] == 0.25
    assert out["peers"]["c"] == {"reached": False, "skipped": "needs an Intel CPU"}
    assert out["best_peer"] == "b" and out["qps_single_ratio_vs_best_peer"] == 1.2
    assert out["best_peer_batch"] == "b" and out["qps_batch_ratio_vs_best_peer"] == 0.9  # a loss stays a loss
    board = out["vs_best_peer"]
    assert board["b"] == {"single": 1.0, "batch": 1.0}
    assert board["mrl"] == {"single": 1.2, "batch": 0.9}
    assert board["a"]["single"] == pytest.approx(0.4)  # 1.2 / 3
    assert "c" not in board


def test_versus_peers_without_any_peer_that_reached_the_target_names_no_best():
    out = harness.versus_peers(point(1.0, 1.0, 1), {"a": {"point": None}})
    assert "best_peer" not in out and out["peers"]["a"] == {"reached": False}


def fake_run(tmp_path: Path) -> Path:
    mine = point(300.0, 600.0, 3 * 2**20) | {"system": "mrl-auto", "setting": {"ann_search": 64, "shortlist": 20}}
    peer = point(200.0, 700.0, 12 * 2**20) | {"system": "zvec-full", "setting": {"ann_search": 96, "shortlist": 20}}
    run = {
        "dim": 384,
        "systems": {"mrl-auto": {"role": "mrl"}, "zvec-full": {"role": "peer"}, "svs-lvq8": {"skipped": "Intel; x"}},
        "summary": {
            "0.99": {
                "mrl": mine,
                "peers": {"zvec-full": peer, "svs-lvq8": None},
                "vs_best_peer": {"mrl": {"single": 1.5, "batch": 0.857}, "zvec-full": {"single": 1.0, "batch": 1.0}},
            }
        },
    }
    results = tmp_path / "results"
    results.mkdir()
    path = results / "index_speed-x.json"
    path.write_text(json.dumps(run))
    return path


def test_the_lead_table_prints_each_figure_with_a_marker_that_checks(tmp_path, monkeypatch):
    path = fake_run(tmp_path)
    monkeypatch.setattr(summarize, "RESULTS", path.parent)
    table = summarize.lead(path)
    assert "svs-lvq8" not in table  # skipped peers are said under the table, not as empty rows
    assert summarize.skipped(path) == "svs-lvq8: Intel"
    page = tmp_path / "page.md"
    page.write_text(table)
    found = markers(page)
    assert len(found) == 2 * 6  # recall, two QPS, two ratios and the hot set per row
    for _, before, file, json_path in found:
        # markers name benchmarks/results/<file>; here that folder is tmp_path/results
        assert check(before, file.replace("benchmarks/", ""), json_path, tmp_path) is None
    assert "0.86x<!-- figure: benchmarks/results/index_speed-x.json#summary.0.99.vs_best_peer.mrl.batch -->" in table
    assert "3 MiB<!--" in table and "12 MiB<!--" in table


def test_exact_truth_streams_a_memory_map_and_matches_a_full_sort(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    np.save(tmp_path / "b.npy", base)
    mapped = np.load(tmp_path / "b.npy", mmap_mode="r")
    expected = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    assert (harness.exact_truth(queries, mapped) == expected).all()
