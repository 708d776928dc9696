"""The ``mrl`` command as a user runs it: a real subprocess, real model, real data subset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import refuses_lvq, with_empty_documents

from mrl.cpu import cpu_info
from mrl.index import Index


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


def test_eval_rotate_reports_raw_and_rotated_prefixes(scifact_400, data_dir, tmp_path):
    out = tmp_path / "res.json"
    sts = tmp_path / "sts.csv"
    sts.write_text("\n".join((data_dir / "stsbenchmark" / "sts-test.csv").read_text().splitlines()[:200]) + "\n")
    proc = mrl(
        "eval", "--beir", str(scifact_400), "--dims", "32,64,full", "--rotate", "--sts", str(sts), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rotated" in proc.stdout and "raw" in proc.stdout
    entry = json.loads(out.read_text())["models"][0]
    assert set(entry["rotated"]) == {"32", "64", "full"} and entry["rotation"]["fitted_on_vectors"] > 384
    assert entry["rotated"]["32"]["ndcg@10"] > entry["dims"]["32"]["ndcg@10"]
    assert set(entry["sts_rotated"]) == {"32", "64", "full"}  # fitted on the 400 STS sentences themselves
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rotate"], "a rotation of 384-dim vectors needs at least 384 of them to be determined, got"),
        (["--rotate-sample", "100000"], "--rotate-sample: 100000 vectors asked for, the corpus has"),
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


def _write_pairs_and_corpus(scifact_small: Path, tmp_path: Path) -> tuple[Path, Path]:
    corpus = {json.loads(x)["_id"]: json.loads(x) for x in (scifact_small / "corpus.jsonl").read_text().splitlines()}
    queries = {
        json.loads(x)["_id"]: json.loads(x)["text"] for x in (scifact_small / "queries.jsonl").read_text().splitlines()
    }
    rows = [line.split("\t") for line in (scifact_small / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": queries[q], "doc": f"{corpus[d]['title']} {corpus[d]['text']}"}) + "\n"
            for q, d, _ in rows
        )
    )
    return pairs, scifact_small / "corpus.jsonl"


def test_train_from_pairs_with_mined_negatives(scifact_small, tmp_path):
    pairs, corpus = _write_pairs_and_corpus(scifact_small, tmp_path)
    out = tmp_path / "model"
    columns = ["--pairs", str(pairs), "--anchor-column", "query", "--positive-column", "doc"]
    proc = mrl(
        "train",
        *columns,
        "--mine-negatives-from",
        str(corpus),
        "--dims",
        "384,128,64",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-seq-length",
        "64",
        "--out",
        str(out),
        cache=tmp_path / "c",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mined" in proc.stderr
    meta = json.loads((out / "mrl.json").read_text())
    assert meta["examples"]["triplets"] == len(pairs.read_text().splitlines())
    assert meta["mining"]["pairs"] == meta["examples"]["triplets"]
    proc = mrl("train", *columns, "--out", str(out), "--max-steps", "1")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


@pytest.mark.parametrize(
    ("rows", "args", "needle"),
    [
        ([{"anchor": "a", "positive": "", "negative": "c"}], [], "line 1, field 'positive': is empty"),
        ([{"anchor": "a", "positive": "b", "negative": "b"}], [], "positive and negative are the same text"),
        ([{"anchor": "a", "positive": "b", "negative": "c"}], ["--dims", "384,1024"], "larger than the model"),
        ([{"anchor": "a", "positive": "b", "negative": "c"}], ["--dims", "384,abc"], "--dims"),
        ([{"anchor": "a", "positive": "b", "negative": "c"}], ["--model", "/nonexistent/m"], "model folder not found"),
        ([{"anchor": "a", "positive": "b", "negative": "c"}], ["--rotate"], "--rotate needs a corpus"),
        ([{"anchor": "a", "positive": "b", "negative": "c"}], ["--rotate-corpus", "c.jsonl"], "needs --rotate"),
        (
            [{"anchor": "a", "positive": "b", "negative": "c"}],
            ["--rotate", "--rotate-corpus", "{corpus}"],
            "needs at least 384 of them to be determined, got ",
        ),
        (
            [{"anchor": "a", "positive": "b", "negative": "c"}],
            ["--distill-weight", "1", "--no-matryoshka"],
            "--distill-weight needs Matryoshka training",
        ),
    ],
)
def test_train_bad_input_fails_before_training(tmp_path, rows, args, needle, scifact_small):
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    corpus = str(scifact_small / "corpus.jsonl")  # about 40 documents: too few for a 384 x 384 rotation
    proc = mrl("train", "--triplets", str(data), "--out", str(out), *(a.format(corpus=corpus) for a in args))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


# fp32: SVS's path on any CPU
@pytest.mark.parametrize(("ann", "quant"), [("hnsw", "sq8"), ("vamana", "fp32"), ("zvec", "sq8")])
def test_index_build_search_add_delete_cli(tmp_path, data_dir, ann, quant):
    from conftest import write_beir_subset

    folder = write_beir_subset(data_dir / "scifact", tmp_path / "sf", 10, 60)
    idx = tmp_path / "idx"
    cache = tmp_path / "c"
    proc = mrl(
        "index",
        "build",
        str(idx),
        "--corpus",
        str(folder / "corpus.jsonl"),
        "--prefix-dim",
        "64",
        "--target-recall",
        "0.95",
        "--ann",
        ann,
        "--quant",
        quant,
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tuned: shortlist" in proc.stderr and "documents" in proc.stdout and "deprecated" not in proc.stderr
    built = Index.open(idx).stats()["ann_params"]
    # --hnsw-m 16 (the default) is M for HNSW and 2M = 32 neighbours a node for Vamana, as HNSW's base layer
    defaults = {
        "hnsw": {"M": 16, "efConstruction": 80},
        "vamana": {"graph_max_degree": 32, "window_size": 200, "alpha": 0.95},
        "zvec": {"M": 16, "efConstruction": 200},
    }
    assert built == defaults[ann]
    proc = mrl("search", str(idx), "vitamin D and bone fractures", "-k", "3", "--json", "--funnel", "64,128,full")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out["results"][0]) == 3 and set(out["timings_ms"]) == {"encode", "shortlist", "rerank"}
    more = tmp_path / "more.jsonl"
    more.write_text('{"id": "n1", "text": "Vitamin D supplements and hip fractures in the elderly"}\n')
    assert mrl("index", "add", str(idx), str(more)).returncode == 0
    proc = mrl("search", str(idx), "vitamin D supplements hip fractures elderly", "-k", "1", "--json")
    assert json.loads(proc.stdout)["results"][0][0]["id"] == "n1"
    again = mrl("index", "add", str(idx), str(more))
    assert again.returncode == 2 and "already in the index" in again.stderr
    more.write_text('{"id": "n1", "text": "Aspirin and the risk of stroke"}\n')
    assert mrl("index", "add", "--upsert", str(idx), str(more)).returncode == 0
    assert mrl("index", "delete", str(idx), "--ids", "n1").returncode == 0
    proc = mrl("index", "delete", str(idx), "--ids", "n1")
    assert proc.returncode == 2 and "unknown ids: n1" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["search", "{tmp}", "q"], "not an mrl index"),
        (["search", "{tmp}/missing", "q"], "index folder not found"),
    ],
)
def test_search_bad_folder(tmp_path, args, needle):
    proc = mrl(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@refuses_lvq
def test_index_build_refuses_lvq_on_this_cpu_with_one_line(tmp_path, scifact_small):
    """SVS ends the process on LVQ codes off Intel: the CLI says so first, exit 2, nothing written."""
    out = tmp_path / "idx"
    corpus = scifact_small / "corpus.jsonl"
    for quant in (["--quant", "sq8"], []):  # sq8 is the default
        proc = mrl("index", "build", str(out), "--corpus", str(corpus), "--ann", "vamana", *quant)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and cpu_info().model in lines[0] and "--quant fp32" in lines[0], proc.stderr
        assert "not supported on non-Intel hardware" not in proc.stderr and not out.exists()


def test_index_build_refuses_pq4_on_a_graph_before_encoding(tmp_path, scifact_small):
    out = tmp_path / "idx"
    corpus = scifact_small / "corpus.jsonl"
    proc = mrl("index", "build", str(out), "--corpus", str(corpus), "--ann", "hnsw", "--quant", "pq4")
    assert proc.returncode == 2 and "'pq4' needs --ann ivf" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_index_build_rotates_by_default_and_no_rotate_opts_out(tmp_path, scifact_small):
    corpus = scifact_small / "corpus.jsonl"
    for flag, rotated in (([], True), (["--no-rotate"], False)):
        out = tmp_path / f"idx{len(flag)}"
        proc = mrl("index", "build", str(out), "--corpus", str(corpus), "--prefix-dim", "32", *flag)
        assert proc.returncode == 0, proc.stderr
        assert Index.open(out).stats()["rotated"] is rotated


def test_skip_empty_documents_in_eval_and_index_build(tmp_path, data_dir):
    folder = with_empty_documents(data_dir, tmp_path / "sf")
    proc = mrl("eval", "--beir", str(folder), "--dims", "64,full")
    assert proc.returncode == 2 and "field 'text': is empty (--skip-empty" in proc.stderr
    out = tmp_path / "r.json"
    proc = mrl("eval", "--beir", str(folder), "--dims", "64,full", "--skip-empty", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "skipped 2 document(s) with no text" in proc.stderr and "1 judgement(s) name a skipped document" in proc.stderr
    )
    result = json.loads(out.read_text())
    assert len(result["skipped_documents"]) == 2 and len(result["judgements_on_skipped"]) == 1
    assert result["counts"]["skipped_documents"] == 2
    idx = tmp_path / "idx"
    build = ["index", "build", str(idx), "--corpus", str(folder / "corpus.jsonl"), "--prefix-dim", "32"]
    proc = mrl(*build)
    assert proc.returncode == 2 and not idx.exists()
    proc = mrl(*build, "--skip-empty", "--no-rotate")
    assert proc.returncode == 0 and "skipped 2 document(s)" in proc.stderr
    rows = len((folder / "corpus.jsonl").read_text().splitlines())
    assert Index.open(idx).stats()["documents"] == rows - 2


def test_push_without_a_network_fails_with_one_line(tmp_path, model):
    folder = tmp_path / "m"
    model.save(str(folder))
    proc = subprocess.run(
        [sys.executable, "-m", "mrl.cli", "push", str(folder), "my-org/my-model"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert proc.returncode == 2 and "could not push" in proc.stderr and "Traceback" not in proc.stderr
    proc = mrl("push", str(tmp_path / "nope"), "my-org/my-model")
    assert proc.returncode == 2 and "model folder not found" in proc.stderr
