"""Auto-tuning the first pass: the cheapest shortlist size k' and efSearch/nprobe that reach a recall target.

Recall is measured as recall@k of the two-pass result against exact full-dim search, on sample
queries: real ones when the user has them (a query log, training queries), else a sample of the
index's own documents. Document-as-query tuning is optimistic for short queries whose neighbours sit
further away; pass real queries when there are any.
Among settings that reach the target, the one with the lowest measured batch search time wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mrl.errors import MrlError
from mrl.index.backend import SearchBackend


def exact_top_rows(
    queries: np.ndarray,
    n_rows: int,
    fetch: Callable[[np.ndarray], np.ndarray],
    k: int,
    excluded: np.ndarray | None = None,
    chunk: int = 65_536,
) -> np.ndarray:
    """Exact top-``k`` row numbers by inner product, best first, streaming the rows in chunks.

    ``fetch(rows)`` returns those rows' vectors (so memory-mapped or multi-segment storage is never
    loaded whole); rows where ``excluded`` is true never rank. This is the reference recall is measured
    against, for the index and for the benchmarks alike.
    """
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, n_rows, chunk):
        rows = np.arange(start, min(start + chunk, n_rows))
        scores = queries @ fetch(rows).T
        if excluded is not None:
            scores[:, excluded[rows]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_rows = np.take_along_axis(all_rows, top, axis=1)
    order = np.argsort(-best_scores, axis=1)  # best first: a shortlist of k' is the first k' columns
    return np.take_along_axis(best_rows, order, axis=1)


def recall_at_k(found, truth) -> float:
    """Mean fraction of each query's exact top-k that the search found (keys: rows or ids; -1 pads rows)."""
    k = len(truth[0])
    return float(np.mean([len(set(list(f)) & set(list(t))) / k for f, t in zip(found, truth, strict=True)]))


def tune(
    index: SearchBackend,
    target_recall: float = 0.99,
    k: int = 10,
    sample: int = 200,
    shortlists: list[int] | None = None,
    seed: int = 0,
    queries: np.ndarray | None = None,
) -> dict:
    """Find and store (in a new manifest generation) the cheapest settings that reach ``target_recall``.

    ``queries``: optional full-width query vectors to tune on instead of sampled documents.
    """
    if not 0 < target_recall <= 1:
        raise MrlError(f"--target-recall must be in (0, 1], got {target_recall}")
    live = index.count
    if live <= k:
        raise MrlError(f"the index holds {live} documents: too few to tune for k={k}")
    if queries is None:
        source = "documents"
        queries = index.sample_vectors(sample, seed)
    else:
        source = "queries"
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != index.full_dim:
            raise MrlError(f"tuning queries must be {index.full_dim}-dim vectors")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    truth = index.exact_keys(queries, k)
    shortlists = shortlists or [k * f for f in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500)]
    shortlists = sorted({min(s, live) for s in shortlists if s >= k})
    tried = []
    for ann_search in index.ann_search_grid():
        for kprime in shortlists:
            t0 = time.perf_counter()
            found, _ = index.search_keys(queries, k, shortlist=kprime, ann_search=ann_search)
            seconds = time.perf_counter() - t0
            recall = recall_at_k(found, truth)
            tried.append({"ann_search": ann_search, "shortlist": kprime, "recall": recall, "seconds": seconds})
            if recall >= target_recall:
                break  # a longer shortlist at this ann setting only costs more
    good = [t for t in tried if t["recall"] >= target_recall]
    if not good:
        best = max(tried, key=lambda t: t["recall"])
        raise MrlError(
            f"recall {target_recall} not reached; best was {best['recall']:.4f} "
            f"(shortlist {best['shortlist']}, ann_search {best['ann_search']}): use a larger prefix dim or 'flat'"
        )
    choice = min(good, key=lambda t: t["seconds"])
    tuned = {
        "target_recall": target_recall,
        "k": k,
        "shortlist": choice["shortlist"],
        "ann_search": choice["ann_search"],
        "measured_recall": choice["recall"],
        "sample_queries": len(queries),
        "sample_source": source,
        "tried": tried,
    }
    index.set_tuned(tuned)
    return tuned
