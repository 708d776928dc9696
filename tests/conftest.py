"""Shared fixtures: real data subsets from ../shared/data (override with MRL_DATA) and the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mrl.cpu import cpu_info, lvq_unsupported_reason

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MRL_DATA", REPO.parent / "shared" / "data"))

# SVS's LVQ codes end the whole process on a non-Intel CPU: those cases run only where the CPU supports them
NO_LVQ = lvq_unsupported_reason(cpu_info())
needs_lvq = pytest.mark.skipif(NO_LVQ is not None, reason=f"needs an Intel CPU: {NO_LVQ}")
refuses_lvq = pytest.mark.skipif(
    NO_LVQ is None, reason=f"needs a non-Intel CPU to see the refusal ({cpu_info().model})"
)


def pytest_configure(config):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # tests never read or fill the user's embedding cache
    os.environ.setdefault("MRL_CACHE_DIR", tempfile.mkdtemp(prefix="mrl-test-cache-"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.fail(f"shared data not found at {DATA}; set MRL_DATA to the folder holding scifact/")
    return DATA


def write_beir_subset(src: Path, dst: Path, n_queries: int, n_extra_docs: int, split: str = "test") -> Path:
    """A small BEIR folder: the first n judged queries of a split, their relevant docs, plus distractors."""
    qrels_lines = (src / "qrels" / f"{split}.tsv").read_text().splitlines()
    header, rows = qrels_lines[0], [r.split("\t") for r in qrels_lines[1:]]
    qids: list[str] = []
    for qid, _, _ in rows:
        if qid not in qids:
            qids.append(qid)
    qids = qids[:n_queries]
    kept = [r for r in rows if r[0] in qids]
    wanted = {r[1] for r in kept}
    docs, extra = [], 0
    with (src / "corpus.jsonl").open() as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["_id"] in wanted:
                docs.append(line)
            elif extra < n_extra_docs:
                docs.append(line)
                extra += 1
    queries = [
        line
        for line in (src / "queries.jsonl").read_text().splitlines(keepends=True)
        if json.loads(line)["_id"] in qids
    ]
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    (dst / "corpus.jsonl").write_text("".join(docs))
    (dst / "queries.jsonl").write_text("".join(queries))
    (dst / "qrels" / f"{split}.tsv").write_text("\n".join([header, *("\t".join(r) for r in kept)]) + "\n")
    return dst


def with_empty_documents(data_dir: Path, folder: Path) -> Path:
    """A real SciFact subset in which two documents (one judged relevant) lost their title and text."""
    write_beir_subset(data_dir / "scifact", folder, 10, 20)
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    judged = (folder / "qrels" / "test.tsv").read_text().splitlines()[1].split("\t")[1]
    emptied = [judged, next(r["_id"] for r in rows if r["_id"] != judged)]
    for r in rows:
        if r["_id"] in emptied:
            r["title"], r["text"] = "", "  "
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="session")
def scifact_small(data_dir: Path, tmp_path_factory) -> Path:
    """20 SciFact test queries, their relevant abstracts and 20 distractors (about 45 documents)."""
    return write_beir_subset(data_dir / "scifact", tmp_path_factory.mktemp("scifact_small"), 20, 20)


@pytest.fixture(scope="session")
def scifact_400(data_dir: Path, tmp_path_factory) -> Path:
    """20 SciFact test queries over about 400 documents: enough vectors to fit a 384 x 384 rotation."""
    return write_beir_subset(data_dir / "scifact", tmp_path_factory.mktemp("scifact_400"), 20, 380)


@pytest.fixture(scope="session")
def model():
    from mrl.model import load_model

    return load_model("default")


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def encoded_subset(model, data_dir: Path, folder: Path, n_queries: int, n_extra: int):
    """A SciFact subset, its documents (metadata: position) and their base-model embeddings."""
    from mrl.data import Document, load_beir
    from mrl.encode import EmbeddingCache

    data = load_beir(write_beir_subset(data_dir / "scifact", folder, n_queries, n_extra), "test")
    vectors, _ = EmbeddingCache(folder / "cache").get_or_encode(
        model, data.corpus_fingerprint(), list(data.corpus.values()), progress=False
    )
    docs = [Document(i, t, {"n": n}) for n, (i, t) in enumerate(data.corpus.items())]
    return data, docs, vectors


@pytest.fixture(scope="module")
def corpus(model, data_dir, tmp_path_factory):
    """About 220 real SciFact abstracts (20 test queries' judged ones plus distractors) and their embeddings."""
    folder = tmp_path_factory.mktemp("sf")
    return (folder, *encoded_subset(model, data_dir, folder, 20, 200))


@pytest.fixture(scope="session")
def postgres_dsn():
    """DSN of a real PostgreSQL + pgvector server started for this test session (see tests/pgserver.py).

    Without one, tests fail under CI (which must provide it: make postgres) and are skipped elsewhere.
    """
    from pgserver import postgres_server

    try:
        with postgres_server() as dsn:
            yield dsn
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL for the tests: {exc}")
        pytest.skip(f"PostgreSQL for the tests: {exc}")


def check_ids_where(index, docs) -> None:
    """The metadata lookup behind the framework integrations, the same on every backend."""
    from mrl.data import Document

    assert index.ids_where("n", 5) == [docs[5].id]
    index.upsert([Document(docs[5].id, "moved to another row", {"n": 999})])
    assert index.ids_where("n", 5) == [] and index.ids_where("n", 999) == [docs[5].id]
    index.add([Document("c-a", "first chunk on vitamin D", {"src": "s 1"}), Document("c-b", "second", {"src": "s 1"})])
    assert index.ids_where("src", "s 1") == ["c-a", "c-b"]
    index.delete(["c-a"])
    assert index.ids_where("src", "s 1") == ["c-b"] and index.ids_where("src", "nope") == []


def run_mrl(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The ``mrl`` command as a user runs it: a real subprocess of this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
        timeout=timeout,
    )  # fmt: skip


def unrotated(index, rows) -> np.ndarray:
    """An embedded index's stored rows in the model's basis (the rotation undone): what a build was given, unit."""
    stored = index.key_vectors(rows)
    rotation = index.gen.rotation
    return stored if rotation is None else stored @ rotation
