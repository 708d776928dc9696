"""Auto-tuning: the prefix width, the shortlist size k' and the search beam that answer fastest at a recall target.

Recall is recall@k of the two-pass result against exact full-width search, on sample queries that no setting
was chosen with elsewhere: a user's own queries (a query log, training queries), else a sample of the index's
documents, each left out of its own results (its exact top-k and its search results both skip the document
itself, so a document never "finds itself" for free). Document queries are still optimistic for short queries
whose neighbours sit further away: pass real queries when there are any.

For every search beam (efSearch, nprobe, Vamana's window) the tuner finds the smallest k' that reaches the target,
times that setting one query at a time and as one batch, and keeps the setting with the least time a query.
On an embedded index it also picks the prefix width (:func:`tune` with ``widths``): it builds the first pass at
each candidate width over the stored vectors, from the full width down, measures each the same way, measures an
exact scan of the full vectors, re-times the finalists in turns, and keeps the fastest. A corpus so small that an
exact scan beats every graph is searched exactly, and the index says so. Every measured setting is stored with the
index (``tuned["table"]``), and ``mrl index stats`` prints it.

Example::

    from mrl.index import Index
    from mrl.index.tuning import tune

    index = Index.open("idx/scifact")
    tuned = tune(index, target_recall=0.99, widths="auto")   # re-picks the prefix width, k' and the beam
    print(tuned["choice"])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mrl.errors import MrlError
from mrl.index.adaptive import AdaptiveWidth, WidthUsed, calibrate
from mrl.index.interface import SearchTimings

SHORTLIST_FACTORS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500)
WIDTH_STEPS = (384, 256, 192, 128, 96, 64, 48, 32)  # prefix widths the width search tries below the full width
SLOWER_STOP = 1.05  # narrowing stops once a width is this much slower than the best one so far
FINALISTS = 2  # widths kept built for the final re-timing (each holds its first pass in memory and on disk)
FINAL_ROUNDS = 3  # rounds that re-time the finalists (each width's best and the exact scan), taking turns


def exact_top(
    queries: np.ndarray,
    n_rows: int,
    fetch: Callable[[np.ndarray], np.ndarray],
    k: int,
    excluded: np.ndarray | None = None,
    chunk: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (row numbers, scores) by inner product, best first, streaming the rows in chunks.

    ``fetch(rows)`` returns those rows' vectors (so memory-mapped or multi-segment storage is never loaded whole);
    rows where ``excluded`` is true never rank (score -inf, row -1 when fewer than ``k`` rows remain).
    """
    k_eff = min(k, n_rows)
    best_scores = np.full((len(queries), k_eff), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k_eff), -1, dtype=np.int64)
    for start in range(0, n_rows, chunk):
        rows = np.arange(start, min(start + chunk, n_rows))
        scores = queries @ fetch(rows).T
        if excluded is not None:
            scores[:, excluded[rows]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
        top = np.argpartition(-all_scores, k_eff - 1, axis=1)[:, :k_eff]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_rows = np.take_along_axis(all_rows, top, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")  # best first: a shortlist of k' is the first k' columns
    best_rows = np.take_along_axis(best_rows, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_rows[np.isneginf(best_scores)] = -1
    if k_eff < k:
        best_rows = np.pad(best_rows, ((0, 0), (0, k - k_eff)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return best_rows, best_scores


def exact_top_rows(
    queries: np.ndarray,
    n_rows: int,
    fetch: Callable[[np.ndarray], np.ndarray],
    k: int,
    excluded: np.ndarray | None = None,
    chunk: int = 65_536,
) -> np.ndarray:
    """The row numbers of :func:`exact_top`: the reference recall is measured against, for the index and benchmarks."""
    return exact_top(queries, n_rows, fetch, k, excluded, chunk)[0]


def recall_at_k(found, truth) -> float:
    """Mean fraction of each query's exact top-k that the search found (keys: rows or ids; -1 pads rows)."""
    k = len(truth[0])
    return float(np.mean([len(set(list(f)) & set(list(t))) / k for f, t in zip(found, truth, strict=True)]))


def seconds_per_query(search: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Mean wall seconds of ``search(one_query)`` over ``queries`` taken one at a time (a server's usual load)."""
    started = time.perf_counter()
    for q in queries:
        search(q[None, :])
    return (time.perf_counter() - started) / len(queries)


def seconds_per_query_batched(search: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Mean wall seconds a query when all of ``queries`` go in one call."""
    started = time.perf_counter()
    search(queries)
    return (time.perf_counter() - started) / len(queries)


@dataclass
class TuningQueries:
    """Unit query vectors (model basis, full width) and how recall is counted on them."""

    vectors: np.ndarray
    source: str  # "queries" (given) or "documents" (sampled, each left out of its own results)

    @property
    def leave_one_out(self) -> bool:
        return self.source == "documents"


def tuning_queries(index, sample: int, seed: int, queries: np.ndarray | None) -> TuningQueries:
    """The given query vectors, checked and normalized, or ``sample`` of the index's documents."""
    if queries is None:
        return TuningQueries(index.sample_vectors(sample, seed), "documents")
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.full_dim or not len(queries):
        raise MrlError(f"`queries`: tuning queries must be {index.full_dim}-dim vectors, got shape {queries.shape}")
    if not np.isfinite(queries).all():
        raise MrlError("`queries`: tuning queries contain NaN or infinite values")
    return TuningQueries(queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12), "queries")


def held_out(keys: Sequence[Sequence], own: Sequence, k: int) -> list[list]:
    """Each query's keys without the query's own document (``own[i]``), cut to ``k``."""
    return [[key for key in row if key != mine][:k] for row, mine in zip(keys, own, strict=True)]


class Measure:
    """Recall and time of settings on one set of tuning queries (truth computed once)."""

    def __init__(self, index, tq: TuningQueries, k: int):
        self.index, self.tq, self.k = index, tq, k
        extra = 1 if tq.leave_one_out else 0  # one more result, then the query's own document is dropped
        truth = index.exact_keys(tq.vectors, k + extra)
        self.own = [row[0] for row in truth] if extra else None
        self.truth = held_out(truth, self.own, k) if extra else [list(row) for row in truth]

    def search(
        self,
        queries: np.ndarray,
        setting: dict,
        timings: SearchTimings | None = None,
        adaptive: AdaptiveWidth | None = None,
    ):
        k = self.k + (1 if self.own is not None else 0)
        shortlist, ann_search = setting["shortlist"], setting["ann_search"]
        return self.index.search_keys(queries, k, shortlist, ann_search, timings=timings, adaptive=adaptive)[0]

    def recall(self, setting: dict) -> float:
        return self.recall_of(self.search(self.tq.vectors, setting))

    def recall_of(self, found) -> float:
        found = held_out(found, self.own, self.k) if self.own is not None else found
        return recall_at_k(found, self.truth)

    def adaptive(self, setting: dict, adaptive: AdaptiveWidth) -> tuple[float, list[WidthUsed]]:
        """Recall of ``setting`` searched with adaptive width, and what each query read."""
        timings = SearchTimings()
        found = self.search(self.tq.vectors, setting, timings, adaptive)
        return self.recall_of(found), timings.widths

    def timed(self, setting: dict) -> dict:
        """``setting`` with its seconds a query one at a time and batched."""
        queries = self.tq.vectors
        single = seconds_per_query(lambda q: self.search(q, setting), queries)
        batch = seconds_per_query_batched(lambda q: self.search(q, setting), queries)
        return {**setting, "qps_single": 1 / single, "qps_batch": 1 / batch}


def sweep(measure: Measure, target_recall: float, shortlists: list[int], width: int | None) -> list[dict]:
    """Per search beam, the smallest k' that reaches the target, timed; beams that never reach it, untimed.

    Every setting a beam tries is counted: recall alone, except the one that reaches the target, which is timed."""
    rows = []
    graph = measure.index.beam_bounds_shortlist
    for ann_search in measure.index.ann_search_grid():
        # a graph walks a beam at least k' wide: k' beyond the beam is the same setting as a wider beam
        fitting = [s for s in shortlists if not (graph and ann_search is not None and s > ann_search)]
        if not fitting:
            continue
        for kprime in fitting:
            setting = {"width": width, "ann_search": ann_search, "shortlist": kprime}
            recall = measure.recall(setting)
            if recall >= target_recall:
                rows.append(measure.timed({**setting, "recall": recall}))
                break
        else:
            rows.append({**setting, "recall": recall, "qps_single": None, "qps_batch": None})
            continue
        if kprime == shortlists[0]:
            break  # the least k' already reaches the target: a wider beam only costs more
    return rows


def fastest(rows: list[dict]) -> dict | None:
    timed = [r for r in rows if r["qps_single"] is not None]
    return max(timed, key=lambda r: r["qps_single"]) if timed else None


def default_shortlists(k: int, live: int) -> list[int]:
    return sorted({min(k * f, live) for f in SHORTLIST_FACTORS})


def prefix_widths(stored_dim: int) -> list[int]:
    """Candidate widths, widest first: the full stored width, then every step below it."""
    return [stored_dim, *(w for w in WIDTH_STEPS if w < stored_dim)]


def tune(
    index,
    target_recall: float = 0.99,
    k: int = 10,
    sample: int = 200,
    shortlists: list[int] | None = None,
    seed: int = 0,
    queries: np.ndarray | None = None,
    widths: Sequence[int] | str | None = None,
    report: Callable[[str], None] | None = None,
) -> dict:
    """Find and store (in a new manifest generation) the fastest settings that reach ``target_recall``.

    ``queries``: full-width query vectors to tune on instead of sampled documents. ``widths`` (embedded index only):
    ``"auto"`` or a list of prefix widths to measure; the first pass is rebuilt at the winner. ``report`` gets one
    line per step of the width search.
    """
    if not 0 < target_recall <= 1:
        raise MrlError(f"`target_recall` must be in (0, 1], got {target_recall}")
    index.check_positive_k(k)
    live = index.count
    if live <= k + 1:  # a held-out document needs k others to find
        raise MrlError(f"the index holds {live} documents: too few to tune for k={k}")
    if widths is not None and not hasattr(index, "width_trials"):
        raise MrlError("`widths`: only an embedded index can measure prefix widths; give a fixed prefix_dim")
    tq = tuning_queries(index, min(sample, live), seed, queries)
    measure = Measure(index, tq, k)
    shortlists = sorted({min(s, live) for s in shortlists if s >= k}) if shortlists else default_shortlists(k, live)
    header = {
        "target_recall": target_recall,
        "k": k,
        "sample_queries": len(tq.vectors),
        "sample_source": tq.source,
    }
    if widths is None:
        table = sweep(measure, target_recall, shortlists, index.prefix_dim)
        best = fastest(table)
        if best is None:
            raise not_reached(table, target_recall)
        tuned = {**header, **setting_of(best), "measured_recall": best["recall"], "table": table}
        tuned["choice"] = f"shortlist {best['shortlist']}, ann_search {best['ann_search']}"
        if index.adaptive_width:
            tuned["adaptive"] = calibrate_adaptive(index, measure, best, target_recall)
        index.set_tuned(tuned)
        return tuned
    return tune_width(index, measure, header, target_recall, shortlists, widths, report or (lambda _: None))


def setting_of(row: dict) -> dict:
    return {"prefix_dim": row["width"], "shortlist": row["shortlist"], "ann_search": row["ann_search"]}


def not_reached(table: list[dict], target_recall: float) -> MrlError:
    best = max(table, key=lambda t: t["recall"])
    return MrlError(
        f"recall {target_recall} not reached; best was {best['recall']:.4f} (prefix {best['width']}, shortlist "
        f"{best['shortlist']}, ann_search {best['ann_search']}): use a wider prefix or a lower target recall"
    )


def tune_width(
    index,
    measure: Measure,
    header: dict,
    target_recall: float,
    shortlists: list[int],
    widths: Sequence[int] | str,
    report: Callable[[str], None],
) -> dict:
    """The width search of :func:`tune` (see the module docstring)."""
    with index.width_trials() as trial:
        candidates = prefix_widths(trial.stored_dim) if widths == "auto" else sorted(set(widths), reverse=True)
        bad = [w for w in candidates if not 0 < w <= trial.stored_dim]
        if bad:
            raise MrlError(f"`prefix_dim`: {bad[0]} is not between 1 and the stored width {trial.stored_dim}")
        table: list[dict] = []
        finalists: dict[int, dict] = {}
        for i, width in enumerate(candidates, 1):
            report(f"prefix width {width} ({i} of at most {len(candidates)}): building its first pass")
            trial.use(width)
            rows = sweep(measure, target_recall, shortlists, width)
            table += rows
            best = fastest(rows)
            if best is None:
                reached = max(r["recall"] for r in rows)
                report(f"prefix width {width}: recall {target_recall} not reached (best {reached:.4f})")
                trial.drop(width)
                break
            report(
                f"prefix width {width}: {best['qps_single']:,.0f} queries/s one at a time, recall {best['recall']:.4f}"
            )
            leader = max(finalists.values(), key=lambda r: r["qps_single"], default=None)
            finalists[width] = best
            if len(finalists) > FINALISTS:  # the slowest so far leaves: each kept width holds its first pass
                slowest = min(finalists, key=lambda w: finalists[w]["qps_single"])
                trial.drop(slowest)
                del finalists[slowest]
            if leader is not None and best["qps_single"] * SLOWER_STOP < leader["qps_single"]:
                break  # narrower prefixes need longer shortlists still: they only get slower
        if not finalists:
            raise not_reached(table, target_recall)
        exact = exact_row(index, measure)
        table.append(exact)
        for width, row in retimed(trial, index, measure, finalists, exact).items():
            finalists[width] = row
        winner = max(finalists.values(), key=lambda r: r["qps_single"])
        exact_wins = exact["qps_single"] > winner["qps_single"]
        for width in list(trial.built):
            if width != winner["width"]:
                trial.drop(width)
        tuned = {
            **header,
            **setting_of(winner),
            "measured_recall": winner["recall"],
            "exact": exact_wins,
            "table": table,
            "finalists": sorted(finalists.values(), key=lambda r: -r["width"]),
        }
        full = finalists.get(trial.stored_dim)
        tuned["choice"] = choice_line(winner, exact, full, exact_wins, index.count, trial.stored_dim)
        trial.use(winner["width"])
        tuned["adaptive"] = calibrate_adaptive(index, measure, winner, target_recall)
        trial.adopt(winner["width"], tuned)
    return tuned


def calibrate_adaptive(index, measure: Measure, setting: dict, target_recall: float) -> dict:
    """The margin (and middle width: the prefix or twice it) that adaptive search needs for ``target_recall`` with
    the chosen k' and beam (:mod:`mrl.index.adaptive`)."""
    stored = index.manifest.stored_dim
    widths = [w for w in (setting["width"], 2 * setting["width"]) if w < stored]
    if not widths:
        return {"margin": None, "reason": f"the prefix is the full stored width ({stored}): nothing to widen to"}
    return calibrate(lambda adaptive: measure.adaptive(setting, adaptive), widths, target_recall)


def exact_row(index, measure: Measure) -> dict:
    """The exact scan of the full vectors, timed like any setting (recall 1 by construction)."""
    row = {"width": "exact", "ann_search": None, "shortlist": None, "recall": 1.0}
    queries = measure.tq.vectors
    k = measure.k
    single = seconds_per_query(lambda q: index.exact_search(q, k), queries)
    batch = seconds_per_query_batched(lambda q: index.exact_search(q, k), queries)
    return {**row, "qps_single": 1 / single, "qps_batch": 1 / batch}


def retimed(trial, index, measure: Measure, finalists: dict[int, dict], exact: dict) -> dict[int, dict]:
    """Each finalist (and the exact scan) timed again in FINAL_ROUNDS rounds, the order turning each round.

    One sweep times each width once, seconds or minutes apart; on a shared machine the speed of the box drifts
    meanwhile. The median of the rounds is what the choice compares."""
    names = [*finalists, "exact"]
    times: dict = {name: [] for name in names}
    queries, k = measure.tq.vectors, measure.k
    for r in range(FINAL_ROUNDS):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if name == "exact":
                times[name].append(seconds_per_query(lambda q: index.exact_search(q, k), queries))
            else:
                trial.use(name)
                times[name].append(seconds_per_query(lambda q, s=finalists[name]: measure.search(q, s), queries))
    exact["qps_single"] = 1 / float(np.median(times["exact"]))
    return {w: {**row, "qps_single": 1 / float(np.median(times[w]))} for w, row in finalists.items()}


def choice_line(winner: dict, exact: dict, full: dict | None, exact_wins: bool, count: int, stored_dim: int) -> str:
    """One line that says what the width search chose and why, for the CLI and ``mrl index stats``."""
    if exact_wins:
        return (
            f"exact scan: on {count:,} documents it answers {exact['qps_single']:,.0f} queries/s, faster than "
            f"every first pass (best: prefix {winner['width']}, {winner['qps_single']:,.0f}/s)"
        )
    if winner["width"] == stored_dim:
        return (
            f"full width ({stored_dim}): no shorter prefix was faster at recall {winner['recall']:.4f} "
            f"({winner['qps_single']:,.0f} queries/s)"
        )
    versus = f", {winner['qps_single'] / full['qps_single']:.2f}x the full-width first pass" if full else ""
    return (
        f"prefix {winner['width']} of {stored_dim}: {winner['qps_single']:,.0f} queries/s at recall "
        f"{winner['recall']:.4f}{versus}"
    )
