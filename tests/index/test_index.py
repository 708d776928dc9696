"""The embedded two-pass index on real SciFact embeddings with real faiss."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_lvq, refuses_lvq

from mrl.cpu import cpu_info, lvq_unsupported_reason, parse_cpuinfo, require_lvq
from mrl.data import Document, load_documents
from mrl.errors import DataError, MrlError
from mrl.index import Index
from mrl.index.embedded import rerank_by_rows
from mrl.index.manifest import read_current
from mrl.index.tuning import recall_at_k, tune
from mrl.vectors.prefix import prefix


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "write.lock"}


@pytest.mark.parametrize(
    ("ann", "quant", "store"),
    [
        ("hnsw", "sq8", "float32"),
        ("ivf", "sq8", "float16"),
        ("ivf", "pq4", "float32"),
        ("flat", "fp32", "float32"),
        ("hnsw", "sq4", "float16"),
        ("hnsw", "fp16", "float32"),
        pytest.param("vamana", "sq8", "float32", marks=needs_lvq),
        pytest.param("vamana", "sq4", "float32", marks=needs_lvq),
        ("vamana", "fp32", "float16"),
        ("vamana", "fp16", "float32"),
        ("zvec", "sq8", "float32"),
        ("zvec", "fp16", "float16"),
        ("zvec", "fp32", "float32"),
    ],
)
def test_two_pass_matches_exact_search_with_full_shortlist(corpus, tmp_path, model, ann, quant, store):
    _, _, docs, vectors = corpus
    index = Index.build(
        tmp_path / "i",
        vectors,
        docs,
        model="default",
        prefix_dim=64,
        ann=ann,
        quant=quant,
        store=store,
        loaded_model=model,
    )
    queries = prefix(vectors[:30], vectors.shape[1])
    truth = index.exact_keys(queries, 10)
    # a shortlist of the whole corpus and an exhaustive first pass: exact by construction
    rows, scores = index.search_keys(queries, 10, shortlist=len(docs), ann_search=512)
    assert recall_at_k(rows, truth) >= (0.999 if store == "float32" else 0.98)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    assert rows[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-2)  # a document finds itself


def test_rerank_in_faiss_matches_numpy(corpus):
    """The C++ rerank of a fresh float32 index against the same scores computed in numpy, -1 padding included."""
    _, _, _, vectors = corpus
    unit = np.ascontiguousarray(prefix(vectors, vectors.shape[1]))
    queries = unit[:20] + 0.05 * unit[20:40]
    rng = np.random.default_rng(0)
    cand = np.stack([rng.choice(len(unit), 40, replace=False) for _ in range(20)])
    cand[:, 30:] = -1  # faiss pads short shortlists at the end
    cand[0, 5:] = -1  # fewer candidates than k: the tail stays -1 / -inf
    rows, scores = rerank_by_rows(unit, queries, cand, 10)
    for i in range(20):
        c = cand[i][cand[i] >= 0]
        s = unit[c] @ queries[i]
        order = np.argsort(-s)[:10]
        assert list(rows[i, : len(order)]) == list(c[order])
        np.testing.assert_allclose(scores[i, : len(order)], s[order], rtol=1e-5)
    assert list(rows[0, 5:]) == [-1] * 5 and np.all(np.isneginf(scores[0, 5:]))


def test_text_and_vector_queries_single_and_batch(corpus, tmp_path, model):
    _, data, docs, vectors = corpus
    index = Index.build(tmp_path / "i", vectors, docs, model="default", prefix_dim=64, loaded_model=model)
    query = next(iter(data.queries.values()))
    hits = index.search(query, k=5)
    assert len(hits) == 5 and hits[0].text and "n" in hits[0].metadata
    batch = index.search([query, "aspirin and heart attack"], k=3)
    assert len(batch) == 2 and [h.id for h in batch[0]] == [h.id for h in hits[:3]]
    by_vector = index.search(vectors[7], k=1)
    assert by_vector[0].id == docs[7].id
    assert index.last_timings.shortlist > 0 and index.last_timings.rerank > 0


@pytest.mark.parametrize(("ann", "quant"), [("hnsw", "sq8"), ("vamana", "fp16"), ("zvec", "sq8")])
def test_candidates_are_the_rows_the_rerank_orders(corpus, tmp_path, ann, quant):
    """The first pass alone (what benchmarks count as the rerank's reads): k' rows a query, holding every hit."""
    _, _, docs, vectors = corpus
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=64, ann=ann, quant=quant)
    queries = vectors[:8]
    cand = index.candidates(queries, 5, shortlist=30, ann_search=64)
    rows, _ = index.search_keys(queries, 5, shortlist=30, ann_search=64)
    assert cand.shape == (8, 30) and (cand >= 0).all()
    assert all(set(r) <= set(c) for r, c in zip(rows, cand, strict=True))
    assert (rows[:, 0] == np.arange(8)).all()  # each vector is its own best match, through the shortlist


@pytest.mark.parametrize(
    ("ann", "quant"),
    [
        ("hnsw", "sq8"),
        ("ivf", "pq4"),
        ("vamana", "fp16"),
        pytest.param("vamana", "sq8", marks=needs_lvq),
        ("zvec", "sq8"),
    ],
)
def test_reopen_add_upsert_delete(corpus, tmp_path, model, ann, quant):
    _, _, docs, vectors = corpus
    folder = tmp_path / "i"
    Index.build(folder, vectors[:200], docs[:200], model="default", ann=ann, quant=quant, loaded_model=model)
    index = Index.open(folder, model=model)
    assert index.stats()["documents"] == 200
    index.add(docs[200:], vectors[200:])
    assert Index.open(folder).stats()["documents"] == len(docs)
    with pytest.raises(MrlError, match="already in the index"):
        index.add([docs[0]], vectors[:1])
    # upsert replaces: doc 0 now carries doc 5's vector, so a query with that vector returns both
    index.upsert([Document(docs[0].id, "replaced", {"v": 2})], vectors[5:6])
    hits = index.search(vectors[5], k=2)
    assert {h.id for h in hits} == {docs[0].id, docs[5].id}
    assert [h.text for h in hits if h.id == docs[0].id] == ["replaced"]
    assert index.stats()["documents"] == len(docs)
    index.delete([docs[5].id])
    hits = index.search(vectors[5], k=3)
    assert docs[5].id not in {h.id for h in hits}
    reopened = Index.open(folder)
    assert reopened.stats()["documents"] == len(docs) - 1 and reopened.stats()["deleted"] == 2
    with pytest.raises(MrlError, match="unknown ids: nope"):
        reopened.delete([docs[1].id, "nope"])
    assert Index.open(folder).stats()["documents"] == len(docs) - 1  # nothing deleted
    if ann == "vamana":  # SVS's dynamic index (large blocks) only once the graph was extended or has tombstones
        fresh = Index.build(tmp_path / "fresh", vectors[:200], docs[:200], ann=ann, quant=quant)
        assert not fresh.gen.ann.dynamic and reopened.gen.ann.dynamic
    # the two kept generations (upsert, delete) share one ANN file or SVS folder; older ones were collected
    assert {p.name for p in folder.glob("ann-*")} == {Index.open(folder).manifest.ann_file}


def test_bad_queries_change_nothing(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    folder = tmp_path / "i"
    index = Index.build(folder, vectors, docs, model="default", loaded_model=model)
    before = snapshot(folder)
    nan = vectors[0].copy()
    nan[3] = np.nan
    for call, needle in (
        (lambda: index.search(np.ones(100, dtype=np.float32)), "width 100"),
        (lambda: index.search(nan), "NaN"),
        (lambda: index.search(vectors[0], k=0), "positive integer"),
        (lambda: index.search(vectors[0], k=len(docs) + 1), "larger than the number of documents"),
        (lambda: index.search("   "), "non-empty"),
        (lambda: index.add([Document("x", "a"), Document("x", "b")], vectors[:2]), "duplicate ids: x"),
        (lambda: index.add([Document("y", "a")], np.full((1, 384), np.nan)), "NaN"),
    ):
        with pytest.raises(MrlError, match=needle):
            call()
    assert snapshot(folder) == before


def test_open_errors(tmp_path, corpus, model):
    with pytest.raises(MrlError, match="not an mrl index"):
        Index.open(tmp_path)
    _, _, docs, vectors = corpus
    folder = tmp_path / "i"
    Index.build(folder, vectors, docs, model="default", loaded_model=model)
    m = read_current(folder)
    path = folder / f"manifest-{m.generation:08d}.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(MrlError, match="newer mrl"):
        Index.open(folder)


def test_pq4_first_pass_needs_ivf_and_an_even_prefix(corpus, tmp_path):
    _, _, docs, vectors = corpus
    for ann, prefix_dim, needle in (
        ("hnsw", 64, r"`quant`: 'pq4' needs `ann` ivf \(got `ann` hnsw\)"),
        ("ivf", 63, r"`quant`: 'pq4' needs an even prefix dim \(got 63\)"),
    ):
        with pytest.raises(MrlError, match=needle):
            Index.build(tmp_path / "i", vectors, docs, prefix_dim=prefix_dim, ann=ann, quant="pq4")
        assert not (tmp_path / "i").exists()
    with pytest.raises(MrlError, match=r"`quant`: 'pq4' needs `ann` ivf \(got `ann` vamana\)"):
        Index.build(tmp_path / "i", vectors, docs, ann="vamana", quant="pq4")
    assert not (tmp_path / "i").exists()
    with pytest.raises(MrlError, match="`quant`: ann zvec stores the prefix as sq8, fp16, fp32, not 'sq4'"):
        Index.build(tmp_path / "i", vectors, docs, ann="zvec", quant="sq4")
    assert not (tmp_path / "i").exists()


def test_duplicate_ids_in_corpus_file(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n')
    with pytest.raises(DataError, match="duplicate id 'a' \\(first on line 1\\)") as info:
        load_documents(path)
    assert info.value.line == 3


@pytest.mark.parametrize(("ann", "quant"), [("hnsw", "sq8"), ("vamana", "fp32"), ("zvec", "sq8")])
def test_tune_reaches_target_and_is_stored(corpus, tmp_path, model, ann, quant):
    _, _, docs, vectors = corpus
    index = Index.build(
        tmp_path / "i", vectors, docs, model="default", prefix_dim=64, ann=ann, quant=quant, loaded_model=model
    )
    tuned = tune(index, target_recall=0.95, k=10, sample=100)
    assert tuned["measured_recall"] >= 0.95
    stored = Index.open(tmp_path / "i").manifest.tuned
    assert stored["shortlist"] == tuned["shortlist"] and stored["ann_search"] == tuned["ann_search"]
    # the stored settings are what a plain search uses, and they hold on a fresh sample
    queries = prefix(vectors[np.random.default_rng(5).choice(len(docs), 50, replace=False)], 384)
    rows, _ = index.search_keys(queries, 10)
    assert recall_at_k(rows, index.exact_keys(queries, 10)) >= 0.9


def test_funnel_keeps_quality(corpus, tmp_path, model):
    _, _, docs, vectors = corpus
    index = Index.build(tmp_path / "i", vectors, docs, model="default", loaded_model=model)
    queries = prefix(vectors[:40], 384)
    truth = index.exact_keys(queries, 10)
    rows, _ = index.search_keys(queries, 10, shortlist=200, ann_search=256, funnel=[128])
    assert recall_at_k(rows, truth) >= 0.95


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from mrl.data import Document
    from mrl.index import Index
    index = Index.open(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        docs = [Document(f"w{i}-{j}", f"written {i} {j}") for j in range(20)]
        index.upsert(docs, rng.normal(size=(20, index.manifest.full_dim)).astype("float32"))
        print(i, flush=True)
        i += 1
    """
)


# a faiss file, an SVS folder, a zvec folder
@pytest.mark.parametrize(("ann", "quant"), [("hnsw", "sq8"), ("vamana", "fp32"), ("zvec", "sq8")])
def test_kill_during_writes_leaves_last_committed_state(corpus, tmp_path, model, ann, quant):
    """SIGKILL a writer mid-stream; readers never fail meanwhile and the index reopens consistent."""
    _, _, docs, vectors = corpus
    folder = tmp_path / "i"
    Index.build(folder, vectors, docs, model="default", ann=ann, quant=quant, loaded_model=model)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
    reader_errors: list[Exception] = []
    seen_live: list[int] = []
    stop = threading.Event()

    def read_loop():
        reader = Index.open(folder)
        while not stop.is_set():
            try:
                reader.refresh()
                seen_live.append(reader.manifest.live)
                hits = reader.search(vectors[3], k=5)
                assert len(hits) == 5
            except Exception as exc:
                reader_errors.append(exc)
                return

    thread = threading.Thread(target=read_loop)
    thread.start()
    committed = 0
    deadline = time.monotonic() + 120
    while committed < 5 and time.monotonic() < deadline:  # let a few commits land, then kill mid-stream
        line = proc.stdout.readline()
        if line:
            committed = int(line) + 1
    time.sleep(0.05 * (committed % 3))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    thread.join()
    assert committed >= 5
    assert not reader_errors, reader_errors
    assert seen_live == sorted(seen_live)  # readers only ever moved forward, one committed state at a time
    index = Index.open(folder)
    live = index.manifest.live
    assert live % 20 == len(docs) % 20 and live >= len(docs) + 20 * committed
    assert index.search(vectors[3], k=1)[0].id == docs[3].id
    # the next writer cleans up whatever the killed one left uncommitted
    index.add([Document("after-crash", "text")], vectors[:1])
    assert Index.open(folder).manifest.live == live + 1
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
    assert not leftovers


def test_untuned_hnsw_search_returns_the_whole_shortlist(tmp_path):
    """Without a tuned efSearch the first pass must still deliver k' candidates (faiss's default ef is 16)."""
    vectors = np.random.default_rng(0).standard_normal((5000, 128)).astype(np.float32)
    docs = [Document(f"d{i}", "x") for i in range(5000)]
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=64, ann="hnsw", rotate=False)  # raw prefix
    q = prefix(vectors[:20], 64)
    cand = index.ann.search(q, 1000, None)
    assert (cand >= 0).all()
    exact = np.argsort(-(q @ prefix(vectors, 64).T), axis=1)[:, :1000]
    assert np.mean([len(set(c) & set(e)) / 1000 for c, e in zip(cand, exact, strict=True)]) >= 0.9


def test_zvec_counts_its_float_copy_on_disk_and_needs_format_4(corpus, tmp_path):
    """zvec keeps a float copy of the prefixes beside its int8 graph: a quantized search never reads it, so RAM
    leaves it out; unquantized, the copy is the graph's data and counts. Older mrl versions refuse the index."""
    _, _, docs, vectors = corpus
    sq8 = Index.build(tmp_path / "sq8", vectors, docs, prefix_dim=64, ann="zvec", quant="sq8").stats()
    cold = [p for p in sq8["parts"] if p["part"].startswith("zvec's float copy")]
    assert len(cold) == 1 and cold[0]["where"] == "disk" and cold[0]["bytes"] > 0
    ann_hot = next(p["bytes"] for p in sq8["parts"] if p["part"].startswith("ANN"))
    assert ann_hot + cold[0]["bytes"] == sq8["ann_bytes"]
    fp32 = Index.build(tmp_path / "fp32", vectors, docs, prefix_dim=64, ann="zvec", quant="fp32").stats()
    assert not [p for p in fp32["parts"] if p["part"].startswith("zvec's float copy")]
    assert read_current(tmp_path / "sq8").format_version == 4


def test_zvec_batch_search_equals_one_query_at_a_time(corpus, tmp_path):
    """A batch runs on every core, a slice a thread; each query gets the answer it gets alone."""
    _, _, docs, vectors = corpus
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=64, ann="zvec")
    queries = vectors[:40]
    batch = index.candidates(queries, 10, shortlist=30, ann_search=48)
    single = np.concatenate([index.candidates(q[None], 10, shortlist=30, ann_search=48) for q in queries])
    assert (batch == single).all() and (batch[:, 0] == np.arange(40)).all()


def huge_kib_at(address: int) -> int:
    """AnonHugePages (KiB) of the mapping that holds ``address``, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc/self/maps")
def test_new_memory_finds_mappings_made_in_freed_space_and_leaves_thread_stacks_out():
    """What an engine maps while it opens an index is found, also where freed memory was; thread stacks are not."""
    import ctypes

    from mrl.index.hugepages import memory_map, new_memory

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    def private_map(size: int) -> int:
        """What C++ engines get from mmap: private anonymous read-write memory (Python's mmap module shares it)."""
        address = libc.mmap(None, size, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
        assert address not in (None, ctypes.c_void_p(-1).value)
        return address

    def covered(spans: list[tuple[int, int]], start: int, size: int) -> bool:
        return any(a <= start and start + size <= a + n for a, n in spans)

    freed = private_map(8 << 20)  # freed while the "open" runs, as zvec's exiting threads free their stacks
    before = memory_map()
    libc.munmap(freed, 8 << 20)
    copy = [(private_map(size), size) for size in (12 << 20, 2 << 20)]  # an engine's copy in pieces, like zvec's
    gate = threading.Event()
    stack = 16 << 20  # larger than what other threads of the test process (servers, pools) may map meanwhile
    default = threading.stack_size(stack)
    try:
        worker = threading.Thread(target=gate.wait)
        worker.start()
    finally:
        threading.stack_size(default)
    try:
        spans = new_memory(before)
        assert all(covered(spans, start, size) for start, size in copy)
        # the new thread's stack is left out (MADV_COLLAPSE would fill it with 2 MiB pages); memory that other
        # threads map meanwhile may show up, but nothing as large as that stack
        others = [n for a, n in spans if not any(a <= start < a + n for start, _ in copy)]
        assert all(n < stack for n in others), others
    finally:
        gate.set()
        worker.join()
        for start, size in copy:
            libc.munmap(start, size)


def thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.read_text().split("[")[1].split("]")[0] if path.exists() else "never"


def collapses_at_once() -> bool:
    """MADV_COLLAPSE (Linux 6.1+) moves the already-filled pages at once; older kernels leave it to khugepaged."""
    return tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2]) >= (6, 1)


@pytest.mark.skipif(thp_mode() == "never", reason="transparent huge pages are off on this machine")
def test_opened_graph_sits_on_huge_pages_and_searches_the_same(tmp_path):
    """Opening advises 2 MiB pages for the codes and neighbor lists, moved in a thread; results never change."""
    import faiss

    from mrl.index.hugepages import large_arrays

    vectors = np.random.default_rng(1).standard_normal((40_000, 256)).astype(np.float32)
    docs = [Document(f"d{i}", "x") for i in range(40_000)]
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=128, ann="hnsw")
    graph = index.ann.index  # the faiss index inside the first pass
    untouched = faiss.deserialize_index(faiss.serialize_index(graph))  # a copy on ordinary pages
    q = prefix(vectors[:50], 128)
    params = faiss.SearchParametersHNSW(efSearch=64)
    expected = untouched.search(q, 20, params=params)[1]
    assert np.array_equal(graph.search(q, 20, params=params)[1], expected)  # while the pages may still move
    arrays = large_arrays(graph)
    assert len(arrays) == 2 and arrays[0][1] == 40_000 * 128  # the 8-bit codes, then the neighbor lists
    assert index.stats()["huge_page_bytes"] >= 2 << 20
    index.gen.huge_pages.wait()
    if collapses_at_once():
        # madvise splits the mapping at the first whole 2 MiB page inside each array: look there
        assert all(huge_kib_at(-(-address // (2 << 20)) * (2 << 20)) >= 2048 for address, _ in arrays)
    assert np.array_equal(graph.search(q, 20, params=params)[1], expected)


@pytest.mark.skipif(thp_mode() == "never", reason="transparent huge pages are off on this machine")
@pytest.mark.parametrize(
    ("ann", "quant", "rows"),
    [
        # SVS falls back to 4 KiB pages when no huge pages are reserved; fp32 codes: 40k x 128 floats, 20 MiB
        ("vamana", "fp32", 40_000),
        # zvec copies a collection's graph and codes out of its mapped files into memory it maps (in pieces)
        # when it opens it: 80k x (128 bytes of codes + 32 neighbors) is about 20 MiB
        ("zvec", "sq8", 80_000),
    ],
)
def test_what_an_engine_allocates_on_open_gets_huge_pages_and_searches_the_same(ann, quant, rows, tmp_path):
    """Opening advises 2 MiB pages for the memory the engine allocated while loading; results never change."""
    if ann == "vamana":
        pytest.importorskip("svs")
    vectors = np.random.default_rng(2).standard_normal((rows, 256)).astype(np.float32)
    docs = [Document(f"d{i}", "x") for i in range(rows)]
    # both engines' copies span several 2 MiB pages: at least 16 MiB of them must be advised
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=128, ann=ann, quant=quant)
    q = prefix(vectors[:50], 256)
    expected = index.search_keys(q, 10, shortlist=20, ann_search=64)[0]  # while the pages may still move
    advice = index.gen.huge_pages
    assert advice.bytes >= 16 << 20 and index.stats()["huge_page_bytes"] == advice.bytes
    advice.wait()
    if collapses_at_once():
        # the copy can come as several allocations; madvise gives each advised span a mapping of its own
        assert sum(huge_kib_at(address) for address, _ in advice.spans) >= 16 << 10
    assert np.array_equal(index.search_keys(q, 10, shortlist=20, ann_search=64)[0], expected)
    assert (expected[:, 0] == np.arange(50)).all()


AMD_CPUINFO = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
)
INTEL_CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
    "flags\t\t: fpu sse4_2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
)


def test_lvq_is_allowed_on_intel_cpus_only():
    """The decision behind every LVQ refusal, on the /proc/cpuinfo text of an AMD and an Intel server."""
    amd, intel = parse_cpuinfo(AMD_CPUINFO, "x86_64"), parse_cpuinfo(INTEL_CPUINFO, "x86_64")
    assert (amd.vendor_name, amd.model, amd.simd) == ("AMD", "AMD EPYC 7B13", ["avx2"])
    assert intel.simd == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    assert "Intel CPUs only; this is AMD EPYC 7B13 (AMD, x86_64, avx2)" in lvq_unsupported_reason(amd)
    assert lvq_unsupported_reason(intel) is None
    assert "x86-64 Intel CPU" in lvq_unsupported_reason(parse_cpuinfo("processor : 0\nCPU part : 0xd0c\n", "aarch64"))
    with pytest.raises(MrlError, match=r"use `ann` vamana `quant` fp32 .* or `ann` hnsw"):
        require_lvq("--ann vamana --quant sq8", cpu=amd)


@refuses_lvq
def test_lvq_build_and_open_refused_on_this_cpu_and_nothing_changes(corpus, tmp_path):
    """SVS would end the process here: mrl raises a clear error first, for a new build and an existing index."""
    _, _, docs, vectors = corpus
    model_name = cpu_info().model
    for quant in ("sq8", "sq4"):
        with pytest.raises(MrlError, match=f"Intel CPUs only; this is {re.escape(model_name)}.*`quant` fp32"):
            Index.build(tmp_path / "new", vectors, docs, ann="vamana", quant=quant)
        assert not (tmp_path / "new").exists()
    # an LVQ index as an Intel machine would have written it: its manifest says sq8
    folder = tmp_path / "i"
    Index.build(folder, vectors, docs, ann="vamana", quant="fp32")
    m = read_current(folder)
    path = folder / f"manifest-{m.generation:08d}.json"
    path.write_text(path.read_text().replace('"quant": "fp32"', '"quant": "sq8"'))
    before = snapshot(folder)
    with pytest.raises(MrlError, match=r"this index's Vamana graph uses `quant` sq8.*rebuild it with"):
        Index.open(folder)
    assert snapshot(folder) == before


def test_ids_where_finds_live_documents_by_metadata(corpus, tmp_path, model):
    from conftest import check_ids_where

    _, _, docs, vectors = corpus
    check_ids_where(Index.build(tmp_path / "i", vectors, docs, model="default", loaded_model=model), docs)


def test_ivf_lists_are_capped_by_the_training_sample():
    """A sample smaller than the default lists need bounds them: 39 points a list at least."""
    from mrl.index.engines import ENGINES

    sample = prefix(np.random.default_rng(0).standard_normal((3900, 32)).astype(np.float32), 32)
    params: dict = {}
    index = ENGINES["ivf"].trained("sq8", 32, 1_000_000, params, sample)
    assert params["nlist"] == index.nlist == 100  # 4 x sqrt(1M) = 4,000 would leave under 1 point a list


def test_ivf_learns_from_enough_rows_for_its_lists():
    from mrl.index.engines import ENGINES
    from mrl.index.engines.faiss import IVF_TRAIN_MAX, default_nlist
    from mrl.vectors.sampling import TRAIN_SAMPLE

    hnsw, ivf = ENGINES["hnsw"], ENGINES["ivf"]
    assert hnsw.sample_size(10_000_000, {}) == TRAIN_SAMPLE
    assert ivf.sample_size(50_000, {}) == TRAIN_SAMPLE  # small corpora: every row, as before
    assert ivf.sample_size(10_000_000, {}) == 39 * default_nlist(10_000_000) <= IVF_TRAIN_MAX
    assert ivf.sample_size(10_000_000, {"nlist": 65_536}) == IVF_TRAIN_MAX


def test_a_new_index_gets_zvecs_graph_where_zvec_installs(tmp_path):
    """The default first pass is the fastest open-source one measured (zvec); faiss HNSW where zvec has no wheel."""
    import importlib.util

    from mrl.index.engines import DEFAULT_ANN

    assert ("zvec" if importlib.util.find_spec("zvec") else "hnsw") == DEFAULT_ANN
    vectors = np.random.default_rng(3).standard_normal((300, 64)).astype(np.float32)
    docs = [Document(f"d{i}", "x") for i in range(300)]
    index = Index.build(tmp_path / "i", vectors, docs, prefix_dim=32)
    assert index.manifest.ann == DEFAULT_ANN
    rows, _ = index.search_keys(prefix(vectors[:5], 64), 1, shortlist=20, ann_search=64)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
