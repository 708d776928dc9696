"""Adaptive width per query: read the full vectors only for the candidates a middle width leaves in doubt.

A fixed two-pass search reads every shortlisted candidate's full vector. Most of those reads decide nothing: at a
middle width (the prefix or twice it, read as floats from the stored rows) many candidates already trail the k-th
best by too much to enter the top k, and for some queries the top k already stand clear of the rest. One number, a
cosine ``margin``, decides what is read in full:

1. every candidate of the first pass is scored at ``width`` dims (cosine of the re-normalized prefixes);
2. with ``t`` the k-th best of those scores, the candidates scoring at least ``t - margin`` are in doubt;
3. if only the top k are (the (k+1)-th trails the k-th by more than ``margin``), the query **stops**: its hits
   are the top k at ``width`` dims, with those scores;
4. otherwise the query **widens**: the candidates in doubt, and only they, are scored at the full width.

``margin`` 0 never widens (a search at ``width`` dims); a large margin widens every query over its whole
shortlist (the fixed two-pass search plus the middle read). The signal is the margin between the top scores, which
needs nothing beyond the scores in hand. The agreement of two widths' top k, the other signal measured
(``benchmarks/adaptive.py``), read more bytes at every target; a learned router as in AdaWidth (arXiv 2608.23862)
is not built. :func:`mrl.index.tuning.tune` calibrates ``margin`` (and
picks ``width``) on the tuning queries: the least rerank bytes whose recall@k against exact full-width search meets
the target.

Where the middle width is the prefix itself and the first-pass engine scores its answers (the faiss engines: hnsw,
ivf, flat), those scores are the middle width's and no stored row is read for them: only the rows in doubt are read,
from RAM or, for an index larger than memory (``io="pread"``), from the disk. The scores are then the engine's
inner products on its codes (8-bit ones by default) rather than exact prefix cosines.

Scores of a query that stopped are cosines of the ``width``-dim prefixes, not of the full vectors: they rank that
query's hits, and :class:`WidthUsed` says which width each query's scores come from.

Example::

    from mrl.index import Index
    from mrl.index.adaptive import AdaptiveWidth

    index = Index.open("idx/scifact")
    hits = index.search("vitamin D and fractures", k=10, adaptive=True)   # the tuned margin and width (else a default)
    hits = index.search("vitamin D", k=10, adaptive=AdaptiveWidth(width=128, margin=0.02))
    print(index.last_timings.widths)   # per query: the dims its scores used, rows widened, rerank bytes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from mrl.errors import MrlError

# the margin of an index never calibrated: on SciFact with an in-domain Matryoshka adaptor, a 128-dim middle width of
# 384 needed 0.03 for recall@10 0.99 on the train claims (benchmarks/results/adaptive-scifact-adaptor.json)
DEFAULT_MARGIN = 0.03
# margins the calibration tries, smallest (least widening) first; cosines of the middle-width prefixes
MARGINS = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12)


@dataclass(frozen=True)
class AdaptiveWidth:
    """How an adaptive search reads: ``width`` dims for every candidate, the full width for those within
    ``margin`` (a cosine) of the k-th best."""

    width: int
    margin: float

    def check(self, stored_dim: int) -> AdaptiveWidth:
        if not isinstance(self.width, int) or not 0 < self.width < stored_dim:
            raise MrlError(
                f"`adaptive.width` must be between 1 and {stored_dim - 1} (the full width), got {self.width}"
            )
        if not np.isfinite(self.margin) or self.margin < 0:
            raise MrlError(f"`adaptive.margin` must be a cosine margin of 0 or more, got {self.margin}")
        return self

    @classmethod
    def from_tuned(cls, tuned: dict | None, prefix_dim: int, stored_dim: int) -> tuple[AdaptiveWidth, str | None]:
        """The setting calibrated by :func:`mrl.index.tuning.tune` and stored with the index, else the default
        (twice the prefix, or the prefix where that is the full width, and ``DEFAULT_MARGIN``) and a line that
        says so."""
        found = (tuned or {}).get("adaptive")
        if found and found.get("margin") is not None:
            return cls(int(found["width"]), float(found["margin"])), None
        if prefix_dim >= stored_dim:
            raise MrlError(f"`adaptive`: the prefix is the full width ({stored_dim}): there is no wider read to skip")
        width = 2 * prefix_dim if 2 * prefix_dim < stored_dim else prefix_dim
        reason = (found or {}).get("reason", "the index was not tuned")
        return cls(width, DEFAULT_MARGIN), (
            f"adaptive width: no calibrated margin ({reason}); using the default, width {width} and margin "
            f"{DEFAULT_MARGIN}, which has not been checked on this index: tune it with a target recall to calibrate"
        )


@dataclass(frozen=True)
class WidthUsed:
    """What an adaptive search read for one query."""

    dims: int  # the width its scores come from: the middle width (stopped) or the full width (widened)
    widened: int  # candidates scored at the full width (0: stopped at the middle width)
    candidates: int  # candidates scored at the middle width
    rerank_bytes: int  # stored bytes read: candidates x width (none when the first pass scored them) + widened x full
    fixed_bytes: int  # what the fixed two-pass search reads for the same candidates: candidates x full width

    def as_dict(self) -> dict:
        return asdict(self)


def adaptive_rerank(
    read: Callable[[np.ndarray, int | None], np.ndarray],
    queries: np.ndarray,
    cand: np.ndarray,
    k: int,
    setting: AdaptiveWidth,
    full_dim: int,
    value_bytes: int,
    head_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[WidthUsed]]:
    """Top-``k`` (rows, scores) of each query's candidate rows (-1 padded), and what each query read.

    ``read(rows, width)`` returns the stored rows' first ``width`` dims (None: all ``full_dim``) as float32;
    ``queries`` are in the stored basis, unit length; ``value_bytes`` is the stored size of one value. The whole
    batch is scored at once: one read of the candidates' heads, one of the rows in doubt. ``head_scores``, the
    candidates' scores at ``width`` already in hand (the first pass's, when ``width`` is the prefix), replace the
    read of the heads: then only the rows in doubt are read, which is what pays where every read is a disk read.
    """
    width, margin = setting.width, setting.margin
    valid = cand >= 0
    counts = valid.sum(axis=1)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if not counts.any():
        return out_rows, out_scores, [WidthUsed(width, 0, 0, 0, 0) for _ in queries]
    if head_scores is None:
        unique = np.unique(cand[valid])
        head = read(unique, width)
        head = head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)
        q_head = queries[:, :width] / np.maximum(np.linalg.norm(queries[:, :width], axis=1, keepdims=True), 1e-12)
        at = np.searchsorted(unique, np.where(valid, cand, unique[0]))
        s = np.einsum("qcw,qw->qc", head[at], q_head)
    else:
        s = np.array(head_scores, dtype=np.float32)
    s[~valid] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")
    ranked = np.take_along_axis(s, order, axis=1)
    kth = ranked[np.arange(len(s)), np.clip(np.minimum(k, counts) - 1, 0, None)]
    doubt = valid & (s >= (kth - margin)[:, None])
    in_doubt = doubt.sum(axis=1)
    widen = in_doubt > k  # more than the top k within the margin: the order at this width is unsure
    keep = min(k, cand.shape[1])
    stop = ~widen
    out_rows[stop, :keep] = np.take_along_axis(cand[stop], order[stop, :keep], axis=1)
    out_scores[stop, :keep] = ranked[stop, :keep]
    if widen.any():
        qi, ci = np.nonzero(doubt & widen[:, None])
        rows = cand[qi, ci]
        wanted = np.unique(rows)
        full = read(wanted, None)
        scores = np.full(s.shape, -np.inf, dtype=np.float32)
        scores[qi, ci] = np.einsum("pd,pd->p", full[np.searchsorted(wanted, rows)], queries[qi])
        best = np.argsort(-scores[widen], axis=1, kind="stable")[:, :keep]
        out_rows[widen, :keep] = np.take_along_axis(cand[widen], best, axis=1)
        out_scores[widen, :keep] = np.take_along_axis(scores[widen], best, axis=1)
    out_rows[np.isneginf(out_scores)] = -1
    head_bytes = counts * width * value_bytes if head_scores is None else np.zeros_like(counts)
    widened = np.where(widen, in_doubt, 0)
    return (
        out_rows,
        out_scores,
        [
            WidthUsed(
                full_dim if w else width,
                int(w),
                int(c),
                int(h + w * full_dim * value_bytes),
                int(c * full_dim * value_bytes),
            )
            for w, c, h in zip(widened.tolist(), counts.tolist(), head_bytes.tolist(), strict=True)
        ],
    )


def calibrate(
    measure: Callable[[AdaptiveWidth], tuple[float, list[WidthUsed]]], widths: list[int], target_recall: float
) -> dict:
    """The (width, margin) with the least rerank bytes whose recall meets ``target_recall``.

    ``measure(setting)`` searches the tuning queries with one setting: recall@k against exact full-width search,
    and what each query read. Per width the margins are tried from the smallest up, stopping at the first that
    reaches the target (a larger margin only widens more). Returns what :meth:`AdaptiveWidth.from_tuned` reads:
    the choice, its mean dims and bytes against the fixed two-pass search's, and every trial.
    """
    trials = []
    for width in widths:
        for margin in MARGINS:
            recall, used = measure(AdaptiveWidth(width, margin))
            trials.append({"width": width, "margin": margin, "recall": recall, **summary(used)})
            if recall >= target_recall:
                break
    reached = [t for t in trials if t["recall"] >= target_recall]
    if not reached:
        best = max(trials, key=lambda t: t["recall"])
        return {
            "margin": None,
            "reason": f"recall {target_recall} not reached at any margin (best {best['recall']:.4f})",
            "trials": trials,
        }
    return {**min(reached, key=lambda t: t["rerank_bytes"]), "trials": trials}


def summary(used: list[WidthUsed]) -> dict:
    """Means over queries of what an adaptive search read, and its bytes over the fixed two-pass search's."""
    fixed = sum(u.fixed_bytes for u in used)
    return {
        "widened_share": float(np.mean([u.widened > 0 for u in used])),
        "mean_dims": float(np.mean([u.dims for u in used])),
        "rerank_bytes": float(np.mean([u.rerank_bytes for u in used])),
        "fixed_bytes": fixed / len(used),
        "rerank_bytes_ratio_vs_fixed": sum(u.rerank_bytes for u in used) / fixed if fixed else None,
    }
