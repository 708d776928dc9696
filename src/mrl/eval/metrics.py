"""IR metrics through pytrec_eval (the trec_eval implementation BEIR and MTEB use).

MRR@10 is trec_eval's ``recip_rank`` on runs cut to their ten best documents, since trec_eval's
reciprocal rank has no cut-off of its own.
"""

from __future__ import annotations

import pytrec_eval

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def run_from_rows(rows, scores, doc_ids: list[str], query_ids: list[str]) -> Run:
    """A run from row-index results (``rows[i, j]`` indexes ``doc_ids``; negative rows are padding)."""
    return {
        qid: {doc_ids[r]: float(s) for r, s in zip(rr, ss, strict=True) if r >= 0}
        for qid, rr, ss in zip(query_ids, rows.tolist(), scores.tolist(), strict=True)
    }


def top_k(run: Run, k: int) -> Run:
    return {qid: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k]) for qid, docs in run.items()}


def retrieval_metrics(qrels: Qrels, run: Run, ignore_identical_ids: bool = False) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over all judged queries.

    A judged query missing from the run scores 0 (pytrec_eval alone would skip it and inflate the mean).
    ``ignore_identical_ids`` drops a document whose id equals the query id, as BEIR and MTEB do.
    """
    if not qrels:
        raise ValueError("no judged queries")
    run = {qid: run.get(qid, {}) for qid in qrels}
    if ignore_identical_ids:
        run = {qid: {d: s for d, s in docs.items() if d != qid} for qid, docs in run.items()}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_k(run, 10))

    def mean(source: dict, key: str) -> float:
        return sum(source.get(qid, {}).get(key, 0.0) for qid in qrels) / len(qrels)

    return {
        "ndcg@10": mean(per_query, "ndcg_cut_10"),
        "recall@10": mean(per_query, "recall_10"),
        "recall@100": mean(per_query, "recall_100"),
        "mrr@10": mean(rr, "recip_rank"),
    }
