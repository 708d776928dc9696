"""Rerank vectors on disk: int8 codes, dropped tails (keep_dims), batched preadv reads, and damaged or full disks.

Real SciFact embeddings, real faiss; the full-disk case writes to a real size-limited tmpfs that the test
mounts itself (root only; elsewhere it skips, saying why).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index import Index
from mrl.index.build import check_free_space, estimate_bytes
from mrl.index.embedded import RERANK_BYTES
from mrl.index.manifest import read_current
from mrl.index.segments import (
    Segment,
    calibrate_int8,
    decode_rows,
    drop_cached_pages,
    encode_rows,
    resolve_io,
    write_segment,
)
from mrl.index.tuning import recall_at_k
from mrl.vectors.prefix import prefix


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "write.lock"}


def test_int8_codes_round_trip_within_half_a_step(corpus):
    unit = prefix(corpus[3], corpus[3].shape[1])
    scale = calibrate_int8(unit)
    codes = encode_rows(unit, "int8", scale)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127  # each dim's peak maps to the top code
    error = np.abs(decode_rows(codes, scale) - unit)
    assert np.all(error <= np.asarray(scale) / 2 + 1e-7)
    # a later row beyond the calibrated range is clipped, not wrapped around
    assert encode_rows(unit[:1] * 3, "int8", scale).min() >= -127


def test_pread_and_mmap_read_the_same_rows(corpus, tmp_path):
    unit = prefix(corpus[3], corpus[3].shape[1]).astype(np.float16)
    entry = write_segment(tmp_path, "vectors-00000001.npy", unit)
    rows = np.array([5, 3, 3, 4, 100, 0, len(unit) - 1, 6])  # unsorted, repeated, adjacent runs, both ends
    by_map = Segment(tmp_path / entry["file"], entry, "mmap").rows(rows)
    drop_cached_pages(tmp_path / entry["file"])
    by_read = Segment(tmp_path / entry["file"], entry, "pread").rows(rows)
    np.testing.assert_array_equal(by_map, unit[rows])
    np.testing.assert_array_equal(by_read, unit[rows])
    ordered = np.array([0, 1, 2, 7, 9, len(unit) - 1])  # sorted and unique: read as they are
    np.testing.assert_array_equal(Segment(tmp_path / entry["file"], entry, "pread").rows(ordered), unit[ordered])


def test_auto_io_reads_by_map_when_the_vectors_fit(tmp_path):
    small = tmp_path / "v.npy"
    np.save(small, np.zeros((4, 8), dtype=np.float32))
    assert resolve_io("auto", [small]) == "mmap"
    assert resolve_io("pread", [small]) == "pread"
    with pytest.raises(MrlError, match="`io` must be one of"):
        resolve_io("direct", [small])


@pytest.mark.parametrize("store", ["float16", "int8"])
def test_coded_index_finds_what_float32_finds(corpus, tmp_path, model, store):
    _, _, docs, vectors = corpus
    reference = Index.build(tmp_path / "f32", vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    index = Index.build(
        tmp_path / store, vectors, docs, model="default", prefix_dim=64, store=store, loaded_model=model
    )
    queries = prefix(vectors[:40] + 0.3 * vectors[40:80], vectors.shape[1])
    truth = reference.exact_keys(queries, 10)
    rows, _ = index.search_keys(queries, 10, shortlist=len(docs), ann_search=512)
    assert recall_at_k(rows, truth) >= 0.97
    stats = index.stats()
    assert stats["bytes_per_vector"] == vectors.shape[1] * (2 if store == "float16" else 1)
    # the store's own format (int8 3, float16 2), or zvec's 4 where the default first pass is zvec
    expected = 4 if index.manifest.ann == "zvec" else (3 if store == "int8" else 2)
    assert read_current(tmp_path / store).format_version == expected
    if store == "int8":  # the calibration travels with the index: an added row decodes with the same scale
        index.add([Document("new", "a new document", {})], vectors[:1])
        again = Index.open(tmp_path / store)
        assert again.manifest.int8_scale == index.manifest.int8_scale
        assert again.search(vectors[0], k=2)[0].id in {"new", docs[0].id}


def test_a_build_from_a_memory_map_in_chunks_gives_the_in_memory_index(corpus, tmp_path, model):
    """Out of core: vectors read from a file 17 rows at a time, in two passes, never copied whole."""
    _, _, docs, vectors = corpus
    np.save(tmp_path / "vectors.npy", vectors)
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    whole = Index.build(tmp_path / "whole", vectors, docs, prefix_dim=64, store="int8", loaded_model=model)
    chunked = Index.build(
        tmp_path / "chunked", mapped, docs, prefix_dim=64, store="int8", loaded_model=model, chunk_rows=17
    )
    # the rotation's moment is summed in float64 whatever the chunking: the scales agree to float32 rounding
    assert chunked.manifest.int8_scale == pytest.approx(whole.manifest.int8_scale, rel=1e-6)
    rows = np.arange(len(docs))
    # the same scores between stored rows (an eigenvector's sign, or the order of near-equal ones, may differ)
    gram = chunked.vectors(rows) @ chunked.vectors(rows).T
    assert np.abs(gram - whole.vectors(rows) @ whole.vectors(rows).T).max() < 0.01
    queries = prefix(vectors[:30] + 0.3 * vectors[30:60], vectors.shape[1])
    want, _ = whole.search_keys(queries, 10, shortlist=100, ann_search=256)
    got, _ = chunked.search_keys(queries, 10, shortlist=100, ann_search=256)
    assert recall_at_k(got, want) >= 0.99


def test_a_bad_row_in_a_later_chunk_names_its_rows_and_writes_nothing(corpus, tmp_path):
    _, _, docs, vectors = corpus
    bad = vectors.copy()
    bad[150] = np.nan
    with pytest.raises(MrlError, match=r"corpus vectors contains NaN or infinite values \(row 150\)"):
        Index.build(tmp_path / "i", bad, docs, prefix_dim=64, chunk_rows=100, rotate=False)
    assert not (tmp_path / "i").exists()


def test_keep_dims_stores_and_reranks_the_prefix_only(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    index = Index.build(
        tmp_path / "k", vectors, docs, model="default", prefix_dim=64, keep_dims=128, loaded_model=model
    )
    stats = index.stats()
    assert stats["stored_dim"] == 128 and stats["bytes_per_vector"] == 128 * 4
    assert np.load(tmp_path / "k" / index.manifest.segments[0]["file"], mmap_mode="r").shape == (len(docs), 128)
    # its exact search is cosine on the first 128 rotated dims, and the two-pass search reaches it
    queries = prefix(vectors[:30] + 0.3 * vectors[30:60], vectors.shape[1])
    rotated = queries @ np.load(tmp_path / "k" / index.manifest.rotation_file).T
    stored = np.load(tmp_path / "k" / index.manifest.segments[0]["file"])
    expected = np.argsort(-(prefix(rotated, 128) @ stored.T), axis=1)[:, :10]
    np.testing.assert_array_equal(index.exact_keys(queries, 10), expected)
    rows, _ = index.search_keys(queries, 10, shortlist=len(docs), ann_search=512)
    assert recall_at_k(rows, expected) >= 0.99
    with pytest.raises(MrlError, match="`keep_dims`: 32 must be between the prefix dim 64"):
        Index.build(tmp_path / "bad", vectors, docs, prefix_dim=64, keep_dims=32)
    assert not (tmp_path / "bad").exists()


def test_stats_split_hot_and_cold_bytes(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    # unrotated: at 219 documents the 384 x 384 rotation alone would outweigh the vectors
    # faiss HNSW: a tiny zvec collection's preallocated files (about 5 MiB each) would outweigh the vectors
    index = Index.build(
        tmp_path / "i", vectors, docs, model="default", prefix_dim=64, ann="hnsw", rotate=False, loaded_model=model
    )
    stats = index.stats()
    where = {p["where"] for p in stats["parts"]}
    assert where == {"ram", "disk"}
    assert stats["cold_bytes"] >= stats["vector_bytes"] > stats["ram_bytes"] > 0
    assert stats["ram_bytes"] + stats["cold_bytes"] == sum(p["bytes"] for p in stats["parts"])


def test_pread_index_gives_the_mmap_results(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=64, store="float16", loaded_model=model)
    queries = prefix(vectors[:20] + 0.3 * vectors[20:40], vectors.shape[1])
    by_map = Index.open(tmp_path / "i", io="mmap").search_keys(queries, 10)
    drop_cached_pages(tmp_path / "i" / read_current(tmp_path / "i").segments[0]["file"])
    cold = Index.open(tmp_path / "i", io="pread")
    assert cold.stats()["io"] == "pread"
    by_read = cold.search_keys(queries, 10)
    np.testing.assert_array_equal(by_map[0], by_read[0])
    np.testing.assert_allclose(by_map[1], by_read[1], rtol=1e-6)


def test_a_batch_larger_than_one_rerank_block_ranks_each_query_as_alone(corpus, tmp_path, model):
    """A batch's rerank gathers a block of queries' candidates at a time (RERANK_BYTES): the blocks must not
    change any query's result."""
    _, _, docs, vectors = corpus
    Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=64, store="float16", loaded_model=model)
    index = Index.open(tmp_path / "i", io="pread")
    shortlist = len(docs)
    per_block = RERANK_BYTES // (4 * vectors.shape[1] * shortlist)
    rng = np.random.default_rng(0)
    mixed = vectors[rng.integers(0, len(vectors), (2 * per_block + 5, 2))].sum(axis=1)
    queries = prefix(mixed, vectors.shape[1])  # more than two blocks of queries
    rows, scores = index.search_keys(queries, 10, shortlist=shortlist)
    for i in (0, per_block - 1, per_block, 2 * per_block, len(queries) - 1):  # each side of each block boundary
        alone = index.search_keys(queries[i : i + 1], 10, shortlist=shortlist)
        np.testing.assert_array_equal(rows[i], alone[0][0])
        np.testing.assert_allclose(scores[i], alone[1][0], rtol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_a_damaged_vector_file_is_refused_on_open(corpus, tmp_path, model, damage):
    _, _, docs, vectors = corpus
    folder = tmp_path / "i"
    Index.build(folder, vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    segment = folder / read_current(folder).segments[0]["file"]
    if damage == "truncate":
        os.truncate(segment, segment.stat().st_size - 4096)
    else:
        with open(segment, "r+b") as handle:
            handle.seek(segment.stat().st_size - 100)
            handle.write(b"\x7f" * 100)
    before = snapshot(folder)
    with pytest.raises(MrlError, match="truncated or replaced" if damage == "truncate" else "checksum differs"):
        Index.open(folder)
    assert snapshot(folder) == before


def test_a_build_that_cannot_fit_is_refused_before_encoding(scifact_small, tmp_mount):
    """mrl index build checks the disk between loading the model and encoding: a refusal costs seconds."""
    needed = estimate_bytes(10_000_000, 384, 64, "float16")
    with pytest.raises(MrlError, match=r"needs about [\d,.]+ MiB on disk and [\d,.]+ MiB are free"):
        check_free_space(tmp_mount / "i", needed)
    (tmp_mount / "other").write_bytes(b"\0" * (shutil.disk_usage(tmp_mount).free - 50_000))  # 50 kB left
    out = subprocess.run(
        [sys.executable, "-m", "mrl.cli", "index", "build", "--corpus", str(scifact_small / "corpus.jsonl"),
         str(tmp_mount / "i"), "--keep-dims", "384", "--store", "float32"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "MiB are free there" in out.stderr and "Traceback" not in out.stderr
    assert "encoding" not in out.stderr.lower()  # refused before the corpus was encoded
    assert [p.name for p in tmp_mount.iterdir()] == ["other"]


@pytest.mark.parametrize("write", ["build", "add"])
def test_a_disk_that_fills_during_a_write_leaves_the_old_index(corpus, tmp_mount, model, write):
    """Another writer takes the space, then a rebuild (or an add) runs out of it: ENOSPC mid-write."""
    _, _, docs, vectors = corpus
    folder = tmp_mount / "i"
    old = Index.build(folder, vectors[:40], docs[:40], model="default", prefix_dim=64, loaded_model=model)
    hits = [h.id for h in old.search(vectors[3], k=3)]
    before = snapshot(folder)
    filler = tmp_mount / "filler"
    with open(filler, "wb") as handle:  # leave less than the new vectors need
        handle.write(b"\0" * max(shutil.disk_usage(tmp_mount).free - 100_000, 0))
    with pytest.raises(MrlError, match="the disk filled up while") as raised:
        if write == "build":
            Index.build(folder, vectors, docs, model="default", prefix_dim=64, overwrite=True)
        else:
            old.add([Document(f"new{i}", d.text, {}) for i, d in enumerate(docs[40:])], vectors[40:])
    filler.unlink()
    assert "nothing was changed" in str(raised.value)
    assert snapshot(folder) == before  # no partial file, the old generation intact
    assert [h.id for h in Index.open(folder, model=model).search(vectors[3], k=3)] == hits


@pytest.fixture()
def tmp_mount(tmp_path):
    """A real 32 MiB tmpfs mounted for one test, or a skip that says why it could not be mounted.

    32 MiB: room for a small zvec collection, whose files zvec allocates in steps of about 5 MiB."""
    point = tmp_path / f"small-{uuid.uuid4().hex[:8]}"
    point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root and mount(8); this run has neither")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"could not mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_cli_builds_a_small_int8_index_and_searches_it_by_pread(scifact_small, tmp_path):
    def mrl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mrl.cli", *args], capture_output=True, text=True, timeout=600)

    folder = tmp_path / "i"
    built = mrl("index", "build", str(folder), "--corpus", str(scifact_small / "corpus.jsonl"),
                "--prefix-dim", "64", "--keep-dims", "128", "--store", "int8")  # fmt: skip
    assert built.returncode == 0, built.stderr
    stats = mrl("index", "stats", str(folder))
    assert "disk: rerank vectors (128 dims, int8" in stats.stdout and "ram: ANN over the 64-dim prefix" in stats.stdout
    found = mrl("search", str(folder), "vitamin D and bone fractures", "-k", "3", "--io", "pread", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["results"][0]) == 3
    refused = mrl("search", "postgresql://u@h/db/t", "x", "--io", "pread")
    assert refused.returncode == 2 and "--io: pread applies to an embedded index" in refused.stderr
