"""Quality check: two-pass search on SciFact test keeps >= 99.5% of exact full-dim nDCG@10.

For each prefix dim, builds an mrl index over the SciFact corpus, auto-tunes the shortlist k' and
efSearch for recall@10 0.99 on sample documents, then runs the 300 test queries through the two-pass
search and compares nDCG@10 with exact full-dim search of the same model.

    python benchmarks/index_quality.py --model models/bench/mrl-w
    python benchmarks/index_quality.py --model models/bench/mrl-w --no-rotate   # the raw prefix
    python benchmarks/index_quality.py                      # base all-MiniLM-L6-v2

Writes benchmarks/results/index_quality-<model>[-raw].json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.table import Table

from mrl.data import Document, load_beir
from mrl.encode import EmbeddingCache, encode_texts
from mrl.eval.metrics import retrieval_metrics, run_from_rows
from mrl.eval.retrieval import exact_search
from mrl.eval.tables import console, short_name
from mrl.index import Index
from mrl.index.tuning import tune
from mrl.model import load_model
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import fit_rotation, rotate_rows

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=os.environ.get("MRL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--prefix-dims", default="64,128,256")
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--no-rotate", action="store_true", help="index the raw prefix (Index.build(rotate=False))")
    args = ap.parse_args()

    model = load_model(args.model)
    data = load_beir(Path(args.data) / "scifact", "test")
    doc_ids = list(data.corpus)
    vectors, _ = EmbeddingCache().get_or_encode(model, data.corpus_fingerprint(), [data.corpus[d] for d in doc_ids])
    # tune on real queries from the *train* split: same distribution as test, never the test queries
    train_queries = list(load_beir(Path(args.data) / "scifact", "train").queries.values())
    tuning_queries = encode_texts(model, train_queries, progress=False)
    qids = list(data.queries)
    queries = prefix(encode_texts(model, [data.queries[q] for q in qids], progress=False), vectors.shape[1])
    full = prefix(vectors, vectors.shape[1])

    def ndcg(run: dict) -> float:
        return retrieval_metrics(data.qrels, run, ignore_identical_ids=True)["ndcg@10"]

    exact = ndcg(exact_search(queries, full, doc_ids, 11, qids))
    rotation = fit_rotation(full)  # what Index.build fits on the same vectors: the prefix its first pass ranks by
    turned, turned_queries = rotate_rows(full, rotation), rotate_rows(queries, rotation)
    rows_out = []
    docs = [Document(d, "") for d in doc_ids]
    with tempfile.TemporaryDirectory() as tmp:
        for pdim in [int(x) for x in args.prefix_dims.split(",")]:
            index = Index.build(
                Path(tmp) / f"p{pdim}", vectors, docs, prefix_dim=pdim, ann="hnsw", rotate=not args.no_rotate
            )
            tuned = tune(index, args.target_recall, k=10, queries=tuning_queries)
            two_pass = ndcg(run_from_rows(*index.search_keys(queries, 11), doc_ids, qids))
            rows_out.append(
                {
                    "prefix_dim": pdim,
                    "shortlist": tuned["shortlist"],
                    "ann_search": tuned["ann_search"],
                    "tuned_recall@10": tuned["measured_recall"],
                    "ndcg@10_two_pass": two_pass,
                    "ndcg@10_exact_full": exact,
                    "retained_pct": 100 * two_pass / exact,
                    "prefix_only_ndcg@10": ndcg(
                        exact_search(prefix(queries, pdim), prefix(full, pdim), doc_ids, 11, qids)
                    ),
                    "rotated_prefix_only_ndcg@10": ndcg(
                        exact_search(prefix(turned_queries, pdim), prefix(turned, pdim), doc_ids, 11, qids)
                    ),
                }
            )
            index.close()
    name = short_name(str(getattr(model, "mrl_source", args.model))).split(" ")[0].replace("/", "-")
    result = {
        "dataset": "scifact",
        "split": "test",
        "model": getattr(model, "mrl_source", args.model),
        "target_recall": args.target_recall,
        "rotated": not args.no_rotate,
        "rows": rows_out,
    }
    write_json(result, ROOT / "benchmarks" / "results" / f"index_quality-{name}{'-raw' if args.no_rotate else ''}.json")
    table = Table(title=f"SciFact test: two-pass vs exact full-dim nDCG@10 ({name})")
    for col in (
        "prefix",
        "k'",
        "efSearch",
        "tuned recall@10",
        "two-pass nDCG@10",
        "exact full",
        "% kept",
        "prefix-only nDCG@10",
        "rotated prefix-only",
    ):
        table.add_column(col, justify="right")
    for r in rows_out:
        table.add_row(
            str(r["prefix_dim"]),
            str(r["shortlist"]),
            str(r["ann_search"]),
            f"{r['tuned_recall@10']:.4f}",
            f"{r['ndcg@10_two_pass']:.4f}",
            f"{r['ndcg@10_exact_full']:.4f}",
            f"{r['retained_pct']:.2f}%",
            f"{r['prefix_only_ndcg@10']:.4f}",
            f"{r['rotated_prefix_only_ndcg@10']:.4f}",
        )
    console().print(table)


if __name__ == "__main__":
    main()
