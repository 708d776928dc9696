"""Classification over prefixes with early exit: the real model on real NLI sentences.

Two tasks from the shared NLI files: single texts labelled by the corpus they come from (SNLI's image captions
against MultiNLI's many genres), which a frozen model separates well, and premise/hypothesis pairs with their
three-way NLI label, which ``mrl eval --classify`` reports on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrl.data.labels import load_labelled
from mrl.encode import encode_texts
from mrl.errors import DataError, MrlError
from mrl.eval.classification import evaluate_classification
from mrl.eval.prefix_classifier import MAX_MARGIN, PrefixClassifier

WIDTHS = [16, 32, 64, 128, 384]


def nli(data_dir: Path, name: str) -> Path:
    return data_dir / "nli-triplets" / f"{name}.pairs.jsonl"


@pytest.fixture(scope="module")
def genre(data_dir, model):
    """300 SNLI and 300 MultiNLI hypotheses, encoded, shuffled once and cut into fit / held-out / test."""
    texts, labels = [], []
    for name, label in (("snli_dev", "snli"), ("mnli_dev_matched", "mnli")):
        rows = [json.loads(line) for line in nli(data_dir, name).read_text().splitlines()[:300]]
        texts += [r["hypothesis"] for r in rows]
        labels += [label] * len(rows)
    vectors = encode_texts(model, texts, progress=False)
    order = np.random.default_rng(0).permutation(len(texts))
    labels = np.array(labels)
    parts = order[:360], order[360:480], order[480:]
    return [(vectors[p], labels[p]) for p in parts]


@pytest.mark.parametrize("kind", ["centroid", "knn"])
def test_full_width_separates_the_genres_and_calibrated_exit_reads_fewer_dims(genre, kind):
    (fit_x, fit_y), (dev_x, _), (test_x, test_y) = genre
    clf = PrefixClassifier(WIDTHS, kind).fit(fit_x, list(fit_y))
    full = np.array(clf.classes)[clf.scores(test_x).argmax(axis=1)]
    assert np.mean(full == test_y) > 0.8

    chosen = clf.calibrate(dev_x, target_agreement=0.99)
    assert chosen["agreement_with_full"] >= 0.99 and chosen["margin"] == clf.margin
    # the calibration's own figures are those of predict on the same items
    again = clf.predict(dev_x)
    dev_full = np.array(clf.classes)[clf.scores(dev_x).argmax(axis=1)]
    assert np.mean(np.array(again.labels) == dev_full) == pytest.approx(chosen["agreement_with_full"])
    assert again.widths.mean() == pytest.approx(chosen["mean_dims"])
    assert chosen["mean_dims"] < 384  # some items stop early
    # every item that stopped early led by the margin where it stopped; the full width answers the rest
    early = clf.predict(test_x)
    stopped = early.widths < 384
    assert stopped.any() and np.all(early.leads[stopped] >= clf.margin)


def test_margin_zero_is_the_first_width_and_the_largest_margin_is_the_full_width(genre):
    (fit_x, fit_y), _, (test_x, _) = genre
    clf = PrefixClassifier(WIDTHS).fit(fit_x, list(fit_y))
    classes = np.array(clf.classes)
    first = clf.predict(test_x, margin=0.0)
    assert np.all(first.widths == 16)
    assert first.labels == list(classes[clf.scores(test_x, width=16).argmax(axis=1)])
    last = clf.predict(test_x, margin=MAX_MARGIN)
    assert np.all(last.widths == 384)
    assert last.labels == list(classes[clf.scores(test_x).argmax(axis=1)])
    # no margin at all (an uncalibrated classifier): the full width for every item
    assert clf.predict(test_x).labels == last.labels


def test_knn_with_one_neighbour_gives_each_training_item_its_own_label(genre):
    (fit_x, fit_y), _, _ = genre
    clf = PrefixClassifier(WIDTHS, "knn", k=1).fit(fit_x, list(fit_y))
    assert clf.predict(fit_x).labels == list(fit_y)


def test_pairs_are_classified_on_pair_features(data_dir, model):
    items = load_labelled([nli(data_dir, "snli_dev")], pair=("premise", "hypothesis")).subset(range(240))
    first = encode_texts(model, items.texts, progress=False)
    second = encode_texts(model, items.seconds, progress=False)
    clf = PrefixClassifier([32, 384]).fit(first[:200], items.labels[:200], second[:200])
    assert clf.classes == ["contradiction", "entailment", "neutral"]
    assert clf.scores(first[200:], second[200:]).shape == (40, 3)
    with pytest.raises(MrlError, match="fitted on pairs"):
        clf.scores(first[200:])


def test_bad_settings_are_refused(genre):
    (fit_x, fit_y), _, _ = genre
    with pytest.raises(MrlError, match="`widths`"):
        PrefixClassifier([64, 32])
    with pytest.raises(MrlError, match="`kind`"):
        PrefixClassifier(WIDTHS, "svm")
    with pytest.raises(MrlError, match="`margin`"):
        PrefixClassifier(WIDTHS, margin=2.5)
    with pytest.raises(MrlError, match="two classes"):
        PrefixClassifier(WIDTHS).fit(fit_x, ["a"] * len(fit_x))
    with pytest.raises(MrlError, match="`k`"):
        PrefixClassifier(WIDTHS, "knn", k=1000).fit(fit_x, list(fit_y))
    with pytest.raises(MrlError, match="at least 384 dims"):
        PrefixClassifier(WIDTHS).fit(fit_x[:, :128], list(fit_y))
    clf = PrefixClassifier(WIDTHS).fit(fit_x, list(fit_y))
    with pytest.raises(MrlError, match="`target_agreement`"):
        clf.calibrate(fit_x, target_agreement=1.5)
    with pytest.raises(MrlError, match="`width`"):
        clf.scores(fit_x, width=48)


def test_evaluation_reports_each_width_and_the_early_exit_on_nli_pairs(data_dir, model, tmp_path):
    train = load_labelled([nli(data_dir, "snli_dev")], pair=("premise", "hypothesis")).subset(range(600))
    test = load_labelled([nli(data_dir, "snli_test")], pair=("premise", "hypothesis")).subset(range(300))
    result = evaluate_classification(model, train, test, [32, 64, "full"], progress=False)
    assert result["items"] == {"fit": 480, "dev": 120, "test": 300} and result["pairs"]
    raw = result["raw"]
    assert set(raw["dims"]) == {"32", "64", "full"} and raw["dims"]["full"]["agreement_with_full"] == 1.0
    assert raw["dims"]["full"]["accuracy"] > 0.45  # three classes: chance is a third
    early = raw["early_exit"]
    assert early["widths"] == [32, 64, 384] and not early["calibration"]["given"]
    assert sum(early["stopped_at"].values()) == pytest.approx(1.0)
    assert early["mean_dims"] == pytest.approx(sum(int(w) * s for w, s in early["stopped_at"].items()))
    assert early["full_accuracy"] == raw["dims"]["full"]["accuracy"]

    fixed = evaluate_classification(model, train, test, [32, 64, "full"], margin=0.0, progress=False)["raw"]
    assert fixed["early_exit"]["accuracy"] == fixed["dims"]["32"]["accuracy"]
    assert fixed["early_exit"]["stopped_at"]["32"] == 1.0


def test_a_test_label_unseen_in_training_is_refused_where_it_stands(data_dir, model, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": lbl}) + "\n" for t, lbl in [("a", 0), ("b", 1)] * 10))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": "a", "label": 0}) + "\n" + json.dumps({"text": "c", "label": 2}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl, line 2: label '2' does not occur"):
        evaluate_classification(model, load_labelled([train]), load_labelled([test]), ["full"], progress=False)


def test_labelled_files_name_the_bad_row(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"text": "no label"}\n')
    with pytest.raises(DataError, match=r"l.jsonl, line 2, field 'label': missing column"):
        load_labelled([path])
    path.write_text('{"text": "fine", "label": true}\n')
    with pytest.raises(DataError, match=r"line 1, field 'label': expected a text or integer label"):
        load_labelled([path])
    path.write_text('{"premise": "p", "label": "x"}\n')
    with pytest.raises(DataError, match=r"line 1, field 'hypothesis'"):
        load_labelled([path], pair=("premise", "hypothesis"))
    path.write_text('{"text": "t", "label": 7}\n')
    assert load_labelled([path]).labels == ["7"]  # labels are compared as text


def run_mrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True, timeout=600)


def test_mrl_eval_classify_writes_the_table_and_json(data_dir, tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(nli(data_dir, "snli_dev").read_text().splitlines(keepends=True)[:600]))
    test.write_text("".join(nli(data_dir, "snli_test").read_text().splitlines(keepends=True)[:150]))
    out = tmp_path / "c.json"
    common = ["eval", "--classify", str(test), "--classify-train", str(train), "--pair-fields", "premise,hypothesis"]
    proc = run_mrl(*common, "--dims", "32,64,full", "--classifier", "knn", "--knn-k", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "early exit" in proc.stdout and "agrees with full" in proc.stdout
    found = json.loads(out.read_text())["models"][0]["classification"]
    assert found["classifier"] == "knn" and found["k"] == 5 and set(found["raw"]["dims"]) == {"32", "64", "full"}

    for args, message in [
        (["--knn-k", "5"], "--knn-k: a positive number of neighbours, with --classifier knn"),
        (["--exit-margin", "3"], "--exit-margin must be between 0 and 2"),
        (["--exit-margin", "0.1", "--target-agreement", "0.9"], "give one of them"),
        (["--pair-fields", "premise"], "--pair-fields: two column names"),
    ]:
        bad = run_mrl(*common[:5], *args) if args[0] == "--pair-fields" else run_mrl(*common, *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    lonely = run_mrl("eval", "--classify-train", str(train))
    assert lonely.returncode == 2 and "--classify-train: only used with --classify" in lonely.stderr
    missing = run_mrl("eval", "--classify", str(test))
    assert missing.returncode == 2 and "--classify needs --classify-train" in missing.stderr
