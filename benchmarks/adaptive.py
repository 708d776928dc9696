"""Adaptive width per query against the fixed two-pass search: rerank bytes, recall, nDCG@10 and QPS.

One mrl index (zvec over the prefix, full vectors in RAM), tuned on the 809 SciFact train claims for each
``--targets`` recall: the tuner picks k' and the beam, then calibrates the adaptive margin (and the middle width:
the prefix or twice it) on the same claims (:mod:`mrl.index.adaptive`). The 300 test claims, held out, are then
searched three ways with the tuned k' and beam: the fixed two-pass search, the adaptive one, and an exact scan of
the full vectors (the truth recall is counted against). Each gets recall@10, single and batch QPS (the harness's
timing protocol), and the adaptive one its mean dims, share of queries widened and rerank bytes a query, over the
fixed search's (``rerank_bytes_ratio_vs_fixed``).

Which signal decides: beside the margin between the top scores (the product's signal), the benchmark measures the
**agreement** signal at each target: a query stops at the middle width when that width's top k equals the first
pass's top k (the prefix's order), and otherwise reads every candidate in full; its tolerance (how many of the k may
differ) is calibrated on the train claims the same way, and both signals' bytes are compared at equal recall on the
test claims (``signals`` in the result). A learned router (AdaWidth's) is not measured.

``--n 0`` indexes the 5,183 SciFact abstracts themselves, so nDCG@10 against the qrels is reported too; a larger
``--n`` draws that many vectors around real embeddings (harness.benchmark_vectors), where only recall has a truth.
Everything runs in RAM; a disk-bound rerank (``--io pread``) is not measured here.

    python benchmarks/adaptive.py --n 0 --prefix-dim 128
    python benchmarks/adaptive.py --n 1000000 --prefix-dim 256 --tag 1m

Writes benchmarks/results/adaptive-<tag>.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from harness import RESULTS, K, add_data_args, benchmark_vectors, load_bench_model, query_splits
from harness import time_point as timed
from rich.table import Table

from mrl.data import Document, load_beir
from mrl.data.beir import texts_fingerprint
from mrl.encode import EmbeddingCache
from mrl.eval.metrics import retrieval_metrics, run_from_rows
from mrl.eval.tables import console
from mrl.index import Index
from mrl.index.adaptive import summary
from mrl.index.interface import SearchTimings
from mrl.index.tuning import recall_at_k, tune
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix


def scifact_corpus(args: argparse.Namespace):
    """The real SciFact abstracts, their unit embeddings, the claims by split and the test qrels."""
    model = load_bench_model(args)
    data = load_beir(args.data / "scifact", "test")
    texts = list(data.corpus.values())
    vectors, _ = EmbeddingCache().get_or_encode(model, texts_fingerprint(data.corpus), texts, batch_size=128)
    info = {"corpus": "SciFact abstracts", "documents": len(texts)}
    return prefix(vectors, vectors.shape[1]), query_splits(model, args.data), info, list(data.corpus), data


def measure(
    index: Index, queries: np.ndarray, truth: np.ndarray, adaptive: bool
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Timing point of one search mode with the index's tuned k' and beam, what it read a query, and its rows and
    scores (for nDCG). The fixed search reads every candidate's full row: its bytes are the mean candidate count
    times a stored row's bytes (the ``fixed_bytes`` the adaptive summary counts over the same candidates)."""
    setting = index.adaptive_setting(True) if adaptive else None
    point = timed(lambda q: index.search_keys(q, K, adaptive=setting)[0], queries, truth)
    timings = SearchTimings()
    rows, scores = index.search_keys(queries, K, timings=timings, adaptive=setting)
    if not adaptive:  # every candidate's full row
        candidates = float((index.candidates(queries, K) >= 0).sum(axis=1).mean())
        row_bytes = index.manifest.stored_dim * index.gen.segments[0].dtype.itemsize
        return point | {"rerank_bytes": candidates * row_bytes, "mean_dims": float(index.full_dim)}, rows, scores
    return point | summary(timings.widths), rows, scores


def agreement(index: Index, queries: np.ndarray, width: int, tolerance: int) -> tuple[np.ndarray, dict]:
    """The agreement signal: stop at ``width`` when its top k shares at least k - ``tolerance`` rows with the first
    pass's top k, else read every candidate in full. Rows found, and the mean bytes read a query against the fixed
    search's (the same candidates' full rows)."""
    g = index.gen
    stored_q = g.stored_queries(queries)
    cand = index.candidates(queries, K)
    value_bytes = g.segments[0].dtype.itemsize
    full_dim = index.manifest.stored_dim
    rows = np.full((len(queries), K), -1, dtype=np.int64)
    read = fixed = 0
    for i, q in enumerate(stored_q):
        c = cand[i][cand[i] >= 0]
        head = prefix(g.vectors(c, width), width) @ prefix(q[None, :width], width)[0]
        top_head = c[np.argsort(-head, kind="stable")[:K]]
        read += len(c) * width * value_bytes
        fixed += len(c) * full_dim * value_bytes
        if len(set(top_head) & set(c[:K])) >= K - tolerance:
            rows[i, : len(top_head)] = top_head
            continue
        full = g.vectors(c) @ q
        best = c[np.argsort(-full, kind="stable")[:K]]
        rows[i, : len(best)] = best
        read += len(c) * full_dim * value_bytes
    return rows, {"rerank_bytes": read / len(queries), "rerank_bytes_ratio_vs_fixed": read / fixed}


def compare_signals(index: Index, train: np.ndarray, test: np.ndarray, truth: np.ndarray, target: float,
                    margin_point: dict | None) -> dict:  # fmt: skip
    """The agreement signal calibrated on the train claims (per width the tolerances from the largest down, stopping at
    the first that reaches ``target``; of those the one reading the fewest bytes), measured on the test claims beside
    the margin signal's figures."""
    train_truth = index.exact_keys(train, K)
    trials = []
    for width in sorted({index.prefix_dim, min(2 * index.prefix_dim, index.full_dim - 1)}):
        for tolerance in range(K, -1, -1):  # the most tolerant first: it stops the most queries and reads the least
            found, read = agreement(index, train, width, tolerance)
            trials.append({"width": width, "tolerance": tolerance, "recall": recall_at_k(found, train_truth), **read})
            if trials[-1]["recall"] >= target:
                break
    reached = [t for t in trials if t["recall"] >= target]
    out: dict = {"margin": margin_point, "agreement_trials": trials}
    if reached:
        best = min(reached, key=lambda t: t["rerank_bytes"])
        found, read = agreement(index, test, best["width"], best["tolerance"])
        out["agreement"] = {"width": best["width"], "tolerance": best["tolerance"],
                            "recall@10": recall_at_k(found, truth), **read}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, n=0)
    ap.add_argument("--prefix-dim", type=int, default=128)
    ap.add_argument("--targets", default="0.95,0.99", help="recall@10 targets to tune for, comma-separated")
    ap.add_argument("--workdir", type=Path, default=None, help="where the index is built (default: a temp folder)")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    targets = [float(t) for t in args.targets.split(",")]

    if args.n:
        _, vectors, queries, info = benchmark_vectors(args)
        ids, data = [f"v{i}" for i in range(len(vectors))], None
    else:
        vectors, queries, info, ids, data = scifact_corpus(args)
    documents = [Document(i, "") for i in ids]
    test = queries["test"]
    workdir = Path(tempfile.mkdtemp(prefix="mrl-adaptive-", dir=args.workdir))
    index = Index.build(workdir / "idx", vectors, documents, prefix_dim=args.prefix_dim)
    test_ids = list(data.queries) if data else None

    def ndcg(rows: np.ndarray, scores: np.ndarray) -> float | None:
        return retrieval_metrics(data.qrels, run_from_rows(rows, scores, ids, test_ids))["ndcg@10"] if data else None

    exact_rows, exact_scores = index.exact_search(test, K)  # the truth recall is counted against
    truth = exact_rows
    points = []
    for target in targets:
        tuned = tune(index, target, k=K, queries=queries["train"])
        calibrated = {key: v for key, v in tuned["adaptive"].items() if key != "trials"}
        console().print(f"target {target}: shortlist {tuned['shortlist']}, ann_search {tuned['ann_search']}, "
                        f"adaptive {calibrated}")  # fmt: skip
        fixed, f_rows, f_scores = measure(index, test, truth, adaptive=False)
        row = {"target": target, "shortlist": tuned["shortlist"], "ann_search": tuned["ann_search"]}
        row["fixed"] = fixed | {"ndcg@10": ndcg(f_rows, f_scores)}
        row["calibration"] = tuned["adaptive"]
        if calibrated.get("margin") is not None:
            adaptive, a_rows, a_scores = measure(index, test, truth, adaptive=True)
            row["adaptive"] = adaptive | {"ndcg@10": ndcg(a_rows, a_scores)}
            row["rerank_bytes_ratio_vs_fixed"] = adaptive["rerank_bytes_ratio_vs_fixed"]
            row["qps_single_ratio_vs_fixed"] = adaptive["qps_single"] / fixed["qps_single"]
        margin_point = (
            {key: row["adaptive"][key] for key in ("recall@10", "rerank_bytes", "rerank_bytes_ratio_vs_fixed")}
            if "adaptive" in row
            else None
        )
        row["signals"] = compare_signals(index, queries["train"], test, truth, target, margin_point)
        points.append(row)

    result = {
        "n": len(vectors),
        "dim": vectors.shape[1],
        "prefix_dim": args.prefix_dim,
        "model": args.model,
        "k": K,
        "data": info,
        "queries": "settings and the adaptive margin chosen on the 809 SciFact train claims; measured on the 300 "
        "test claims (held out)",
        "exact": {"ndcg@10": ndcg(exact_rows, exact_scores)},
        "points": points,
        "in_ram_only": True,
    }
    tag = args.tag or ("scifact" if not args.n else str(args.n))
    write_json(result, RESULTS / f"adaptive-{tag}.json")

    table = Table(title=f"adaptive width vs fixed two-pass, {len(vectors):,} x {vectors.shape[1]}, prefix "
                        f"{args.prefix_dim}, held-out claims")  # fmt: skip
    for col in ("target", "search", "recall@10", "nDCG@10", "QPS single", "QPS batch", "widened", "mean dims",
                "rerank kB/query", "bytes vs fixed"):  # fmt: skip
        table.add_column(col, justify="right")
    for p in points:
        for name in ("fixed", "adaptive"):
            m = p.get(name)
            if m is None:
                table.add_row(str(p["target"]), name, "not calibrated", *[""] * 7)
                continue
            table.add_row(
                str(p["target"]), name, f"{m['recall@10']:.4f}",
                "" if m["ndcg@10"] is None else f"{m['ndcg@10']:.4f}",
                f"{m['qps_single']:,.0f}", f"{m['qps_batch']:,.0f}",
                f"{m['widened_share']:.0%}" if name == "adaptive" else "100%",
                f"{m['mean_dims']:.0f}" if name == "adaptive" else str(vectors.shape[1]),
                f"{m['rerank_bytes'] / 1e3:.1f}",
                f"{m['rerank_bytes_ratio_vs_fixed']:.2f}x" if name == "adaptive" else "1.00x",
            )  # fmt: skip
    console().print(table)
    signals = Table(title="which signal reads less at the same target (calibrated on train claims, test claims)")
    for col in ("target", "signal", "setting", "recall@10", "rerank kB/query", "bytes vs fixed"):
        signals.add_column(col, justify="right")
    for p in points:
        margin, agree = p["signals"]["margin"], p["signals"].get("agreement")
        if margin:
            setting = f"width {p['calibration']['width']}, margin {p['calibration']['margin']}"
            signals.add_row(
                str(p["target"]), "margin", setting, f"{margin['recall@10']:.4f}",
                f"{margin['rerank_bytes'] / 1e3:.1f}", f"{margin['rerank_bytes_ratio_vs_fixed']:.2f}x",
            )  # fmt: skip
        if agree:
            signals.add_row(str(p["target"]), "agreement", f"width {agree['width']}, tolerance {agree['tolerance']}",
                            f"{agree['recall@10']:.4f}", f"{agree['rerank_bytes'] / 1e3:.1f}",
                            f"{agree['rerank_bytes_ratio_vs_fixed']:.2f}x")  # fmt: skip
        else:
            signals.add_row(str(p["target"]), "agreement", "target not reached on train", "", "", "")
    console().print(signals)


if __name__ == "__main__":
    main()
