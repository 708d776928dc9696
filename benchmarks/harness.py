"""What every benchmark shares: its vectors, exact truth, timing, operating points, memory and verdicts.

The benchmarks call the product's own classes (``mrl.index.Index``, its tuner, its rerank) and time every system
with the same functions here, so no system gets a protocol of its own:

* **Vectors and queries** (:func:`benchmark_vectors`): real embeddings of every text we have, and a kernel density
  sample around them to reach ``--n``; queries are SciFact claims encoded with the same model, held out from the
  vectors. :func:`query_splits` gives the split that picks each system's settings and the split that is measured.
* **Truth** (:func:`exact_truth`): exact top-k by inner product, by mrl's own reference search.
* **Timing** (:func:`time_point`): a batch of every query and a pass one query at a time, each the median of
  ``REPEATS`` runs; :func:`in_turns` re-times two systems back to back, alternating who goes first, so the median of
  the per-round ratios cancels the drift of a shared machine.
* **Operating points** (:func:`operating_point`): among the settings that reach a recall target on the tuning
  split, the one with the most single-query QPS.
* **Memory** (:func:`resident_bytes`, :func:`evict`): which pages of a file a search really read, by ``mincore``
  after evicting the file and running the timed queries.
* **Verdicts** (:func:`versus_peers`): a system's ratios against every peer and against the best one.

Run any benchmark from the repository root; results go to ``benchmarks/results/`` with the command and machine.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np

from mrl.data import load_beir, load_sts, load_triplets
from mrl.data.beir import texts_fingerprint
from mrl.encode import EmbeddingCache, encode_texts
from mrl.index.segments import drop_cached_pages
from mrl.index.tuning import exact_top_rows, recall_at_k
from mrl.model import load_model
from mrl.vectors.prefix import prefix

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
K = 10
REPEATS = 3  # a batch takes a fraction of a second: one run is at the mercy of the shared CPU
PAGE = 4096


# ---- vectors and queries ---------------------------------------------------------------------------------------
def add_data_args(ap: argparse.ArgumentParser, n: int) -> None:
    """The options that pick the benchmark vectors; every vector benchmark takes the same ones."""
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MRL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--bandwidth", type=float, default=0.5)
    ap.add_argument(
        "--real-texts",
        choices=("all", "scifact"),
        default="all",
        help="the KDE's seeds: SciFact, NLI and STS-B texts (all), or the SciFact abstracts alone (faster)",
    )
    ap.add_argument(
        "--real-limit",
        type=int,
        default=None,
        help="the first N SciFact abstracts only (a 768-dim model encodes long abstracts slowly on a CPU)",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="encode the real texts in bfloat16: faster on a CPU with bf16 units, embeddings slightly different "
        "from float32 ones (the embedding cache keys on the dtype)",
    )


def load_bench_model(args: argparse.Namespace):
    """The model of --model, cast to bfloat16 with --bf16 (the embedding cache keys on the dtype)."""
    model = load_model(args.model)
    if args.bf16:
        import torch

        model = model.to(torch.bfloat16)
    return model


def real_embeddings(
    model, data: Path, cache: EmbeddingCache, sources: str = "all", limit: int | None = None
) -> tuple[np.ndarray, dict]:
    """Unit embeddings of real texts, the KDE's seeds, and how they were chosen.

    ``sources="all"``: SciFact abstracts, NLI and STS-B sentences (about 57k texts); ``"scifact"``: the 5,183
    abstracts alone; ``limit`` keeps the first that many abstracts (a 768-dim model encodes long abstracts slowly on
    a CPU). Abstracts and sentences are cached apart, so either set is encoded once whatever the other is.
    No query text is among them.
    """
    scifact = load_beir(data / "scifact", "test")
    abstracts = dict(list(scifact.corpus.items())[:limit])
    parts = [abstracts]
    if sources == "all":
        sentences: dict[str, str] = {}
        for f in sorted((data / "nli-triplets").glob("*.triplets.jsonl")):
            for t in load_triplets(f):
                for text in (t.anchor, t.positive, t.negative):
                    sentences.setdefault(f"nli:{text}", text)
        for split in ("train", "dev", "test"):
            sts = load_sts(data / "stsbenchmark" / f"sts-{split}.csv")
            for text in sts.sentences1 + sts.sentences2:
                sentences.setdefault(f"sts:{text}", text)
        parts.append(sentences)
    emb = np.concatenate(
        [cache.get_or_encode(model, texts_fingerprint(t), list(t.values()), batch_size=128)[0] for t in parts]
    )
    info = {"real_texts": len(emb), "real_abstracts": len(abstracts), "real_sources": sources}
    return prefix(emb, emb.shape[1]), info


def query_splits(model, data: Path) -> dict[str, np.ndarray]:
    """Unit vectors of the SciFact claims by BEIR split: ``train`` (809) and ``test`` (300).

    The test claims are held out from everything a mrl model is trained on here (adaptors train on SciFact train);
    a benchmark picks settings on ``train`` and reports ``test``.
    """
    out = {}
    for split in ("train", "test"):
        texts = list(load_beir(data / "scifact", split).queries.values())
        out[split] = prefix(encode_texts(model, texts, progress=False), model.get_embedding_dimension())
    return out


def draw(real: np.ndarray, n: int, bandwidth: float, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Kernel density sample: a random real embedding plus correlated Gaussian noise, re-normalized.

    ``out`` (n rows, e.g. ``np.lib.format.open_memmap``) receives the rows a chunk at a time, so a sample larger
    than RAM goes straight to a file; the rows are the same either way.
    """
    rng = np.random.default_rng(seed)
    centered = real - real.mean(axis=0)
    cov = centered.T @ centered / (len(real) - 1)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    out = np.empty((n, real.shape[1]), dtype=np.float32) if out is None else out
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        base = real[rng.integers(0, len(real), m)]
        noise = rng.standard_normal((m, real.shape[1])).astype(np.float32) @ chol.T.astype(np.float32)
        out[start : start + m] = prefix(base + bandwidth * noise, real.shape[1])
    return out


def benchmark_vectors(args: argparse.Namespace) -> tuple[object, np.ndarray, dict[str, np.ndarray], dict]:
    """(model, n unit vectors, the query splits of :func:`query_splits`, info) for :func:`add_data_args`."""
    model = load_bench_model(args)
    real, info = real_embeddings(model, args.data, EmbeddingCache(), args.real_texts, args.real_limit)
    queries = query_splits(model, args.data)
    t0 = time.perf_counter()
    vectors = draw(real, args.n, args.bandwidth, seed=0)
    info |= {
        "method": f"KDE over real embeddings, bandwidth {args.bandwidth}",
        "encoded_in": "bfloat16" if args.bf16 else "float32",
        "generate_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, vectors, queries, info


def all_claims(queries: dict[str, np.ndarray], limit: int | None = None) -> np.ndarray:
    """Every SciFact claim, train then test (the first ``limit``): for benchmarks that choose nothing on queries."""
    return np.concatenate([queries["train"], queries["test"]])[:limit]


def faiss_bytes(index: faiss.Index) -> int:
    """Bytes of a faiss index as written to disk: what it keeps in RAM.

    Streamed to a temporary file rather than ``faiss.serialize_index``, which copies the whole index into one numpy
    array: at 1M x 768 with a full-vector refine that is a 4 GiB spike on top of the index itself.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mrl-bench-size-") as tmp:
        faiss.write_index(index, f"{tmp}/index.faiss")
        return os.path.getsize(f"{tmp}/index.faiss")


# ---- truth and timing -----------------------------------------------------------------------------------------
def exact_truth(queries: np.ndarray, base: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-``k`` rows by inner product: mrl's own reference (``tuning.exact_top_rows``, the one the index tunes
    against), streaming ``base`` in slices, so a memory map is never loaded whole."""
    return exact_top_rows(np.ascontiguousarray(queries), len(base), lambda rows: base[rows[0] : rows[-1] + 1], k)


def single_pass(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``search`` on each query alone: (rows, seconds per query)."""
    rows, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        r = search(q[None, :])
        lat.append(time.perf_counter() - t0)
        rows.append(r[0])
    return np.array(rows), np.array(lat)


def time_point(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: np.ndarray) -> dict:
    """Recall, single-query QPS (p50, p99) and batch QPS of one setting; each pass the median of REPEATS runs."""
    batch_times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        rows = search(queries)
        batch_times.append(time.perf_counter() - t0)
    runs = [single_pass(search, queries) for _ in range(REPEATS)]
    single_rows, lat = sorted(runs, key=lambda run: run[1].sum())[REPEATS // 2]  # the run of median total time
    lat_ms = lat * 1e3
    return {
        "recall@10": recall_at_k(rows, truth),
        "recall@10_single": recall_at_k(single_rows, truth),
        "qps_single": len(lat) / float(lat.sum()),
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "qps_batch": len(queries) / float(np.median(batch_times)),
    }


def in_turns(
    mine: Callable[[np.ndarray], np.ndarray],
    theirs: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    rounds: int,
) -> dict:
    """Two searches re-timed back to back for ``rounds`` rounds, who goes first alternating each round.

    Sweeps time each system once, minutes apart; on a shared machine the speed of the whole box drifts over a long
    run, so a ratio of two sweep points carries that drift. The median of the per-round ratios cancels it.
    """
    single: dict[str, list[float]] = {"mine": [], "theirs": []}
    batch: dict[str, list[float]] = {"mine": [], "theirs": []}
    for r in range(rounds):
        order = [("mine", mine), ("theirs", theirs)]
        for who, search in order if r % 2 == 0 else order[::-1]:
            _, lat = single_pass(search, queries)
            single[who].append(len(queries) / float(lat.sum()))
            t0 = time.perf_counter()
            search(queries)
            batch[who].append(len(queries) / (time.perf_counter() - t0))
    return turn_summary(single, batch)


def turn_summary(single: dict[str, list[float]], batch: dict[str, list[float]]) -> dict:
    """The per-round QPS and the medians of the per-round ratios mine / theirs."""

    def ratio(qps: dict[str, list[float]]) -> float:
        return float(np.median([a / b for a, b in zip(qps["mine"], qps["theirs"], strict=True)]))

    return {
        "rounds": len(single["mine"]),
        "qps_single": single,
        "qps_batch": batch,
        "median_ratio_single": ratio(single),
        "median_ratio_batch": ratio(batch),
        **turn_medians(single, batch),
    }


def turn_medians(single: dict[str, list[float]], batch: dict[str, list[float]]) -> dict:
    """Each side's median QPS over the rounds in turns (what a table shows beside the median ratio)."""
    return {
        f"median_qps_{mode}_{who}": float(np.median(qps[who]))
        for mode, qps in (("single", single), ("batch", batch))
        for who in ("mine", "theirs")
    }


# ---- operating points and verdicts ----------------------------------------------------------------------------
def operating_point(points: list[dict], target: float) -> dict | None:
    """The point with the most single-query QPS among those at ``target`` recall or better (None: none reached)."""
    ok = [p for p in points if p["recall@10"] >= target]
    return max(ok, key=lambda p: p["qps_single"]) if ok else None


def versus_peers(mine: dict, peers: dict[str, dict]) -> dict:
    """``mine``'s ratios against each peer, and against the best peer (the one it beats by the least).

    Each entry of ``peers`` is a peer's measured point, optionally with ``turns`` (an :func:`in_turns` result of mine
    against it), whose median ratios are then used instead of the ratio of two separately timed points. Peers that
    never reached the recall are listed as such and cannot be the best peer.
    """
    out: dict = {"peers": {}}
    for name, peer in peers.items():
        if peer.get("point") is None:
            out["peers"][name] = {"reached": False, **({"skipped": peer["skipped"]} if "skipped" in peer else {})}
            continue
        p = peer["point"]
        turns = peer.get("turns")
        out["peers"][name] = {
            "reached": True,
            "qps_single_ratio": turns["median_ratio_single"] if turns else mine["qps_single"] / p["qps_single"],
            "qps_batch_ratio": turns["median_ratio_batch"] if turns else mine["qps_batch"] / p["qps_batch"],
            "ratio_source": "in turns" if turns else "one timing each",
            **(
                {"ram_ratio": mine["hot_bytes"] / peer["hot_bytes"]}
                if "hot_bytes" in peer and "hot_bytes" in mine
                else {}
            ),
        }
    for name, peer in peers.items():
        turns = peer.get("turns")
        if turns and out["peers"][name]["reached"]:
            out["peers"][name] |= turn_medians(turns["qps_single"], turns["qps_batch"])
    reached = {n: v for n, v in out["peers"].items() if v["reached"]}
    if reached:
        single = min(reached, key=lambda n: reached[n]["qps_single_ratio"])
        batch = min(reached, key=lambda n: reached[n]["qps_batch_ratio"])
        out["best_peer"] = single
        out["qps_single_ratio_vs_best_peer"] = reached[single]["qps_single_ratio"]
        out["best_peer_batch"] = batch
        out["qps_batch_ratio_vs_best_peer"] = reached[batch]["qps_batch_ratio"]
        # every system's speed relative to the best peer's (1.00): from the ratios against mine, so that all of them
        # come from timings in turns when those exist
        out["vs_best_peer"] = {
            "mrl": {"single": reached[single]["qps_single_ratio"], "batch": reached[batch]["qps_batch_ratio"]},
            **{
                n: {
                    "single": reached[single]["qps_single_ratio"] / v["qps_single_ratio"],
                    "batch": reached[batch]["qps_batch_ratio"] / v["qps_batch_ratio"],
                }
                for n, v in reached.items()
            },
        }
    return out


# ---- memory -----------------------------------------------------------------------------------------------------
def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (our own files only: nothing system-wide)."""
    for path in paths:
        drop_cached_pages(path)


def resident_bytes(paths: list[Path]) -> int:
    """Bytes of these files now in the page cache (``mincore`` over a read-only map of each)."""
    libc = ctypes.CDLL(None, use_errno=True)
    total = 0
    for path in paths:
        size = path.stat().st_size
        if not size:
            continue
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ) as mapped:
            view = np.frombuffer(mapped, dtype=np.uint8)  # a read-only buffer still has an address
            pages = np.zeros(-(-size // PAGE), dtype=np.uint8)
            failed = libc.mincore(
                ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), pages.ctypes.data_as(ctypes.c_void_p)
            )
            del view  # the map closes only once no array points into it
            if failed:
                raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
            total += int((pages & 1).sum()) * PAGE
    return total
