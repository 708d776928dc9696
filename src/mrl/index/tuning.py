"""Auto-tuning the first pass: the cheapest shortlist size k' and efSearch/nprobe that reach a recall target.

Recall is measured as recall@k of the two-pass result against exact full-dim search, on sample
queries: real ones when the user has them (a query log, training queries), else a sample of the
index's own documents. Document-as-query tuning is optimistic for short queries whose neighbours sit
further away; pass real queries when there are any.
Among settings that reach the target, the one with the lowest measured batch search time wins.
"""

from __future__ import annotations

import time

import numpy as np

from mrl.errors import MrlError
from mrl.index.ann import ann_search_grid
from mrl.index.embedded import Index


def exact_top_k(index: Index, queries: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
    """Exact full-dim top-k rows over live rows (streams the memory-mapped vectors in chunks)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, index.manifest.rows, chunk):
        rows = np.arange(start, min(start + chunk, index.manifest.rows))
        block = index.vectors(rows)
        scores = queries @ block.T
        scores[:, index.deleted[rows]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_rows = np.take_along_axis(all_rows, top, axis=1)
    return best_rows


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def tune(
    index: Index,
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
    live = np.flatnonzero(~index.deleted)
    if len(live) <= k:
        raise MrlError(f"the index holds {len(live)} documents: too few to tune for k={k}")
    rng = np.random.default_rng(seed)
    if queries is None:
        source = "documents"
        queries = index.vectors(rng.choice(live, size=min(sample, len(live)), replace=False))
    else:
        source = "queries"
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != index.manifest.full_dim:
            raise MrlError(f"tuning queries must be {index.manifest.full_dim}-dim vectors")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    truth = exact_top_k(index, queries, k)
    shortlists = shortlists or [k * f for f in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500)]
    shortlists = sorted({min(s, len(live)) for s in shortlists if s >= k})
    tried = []
    for ann_search in ann_search_grid(index.ann):
        for kprime in shortlists:
            t0 = time.perf_counter()
            found, _ = index.search_vectors(queries, k, shortlist=kprime, ann_search=ann_search)
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
