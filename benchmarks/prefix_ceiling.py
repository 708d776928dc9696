"""How much recall a prefix allows: two-pass search with an *exact* first pass, no ANN error.

For each prefix dim and shortlist k', the shortlist is the exact top-k' by re-normalized prefix
cosine, reranked exactly on the full vectors; recall@10 is against exact full-dim search. Whatever
an ANN first pass loses comes on top of this, so comparing with benchmarks/index_speed.py tells
whether a recall ceiling there comes from the prefix or from the ANN index and its 8-bit codes.
Same data and queries as index_speed.py (same generator, seed and model).

    python benchmarks/prefix_ceiling.py --n 1000000 --model models/bench/mrl-w
    python benchmarks/prefix_ceiling.py --n 1000000 --model models/bench/mrl-w --prefix-dims 64,128,192,256 \
        --rotate --tag rotated                      # the prefix of the vectors as mrl stores them
    python benchmarks/prefix_ceiling.py --n 1000000 --model models/all-mpnet-base-v2 --bf16 \
        --prefix-dims 128,256,384 --tag 768

Writes benchmarks/results/prefix_ceiling-<n>[-<tag>].json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from rich.table import Table

from mrl.eval.tables import console
from mrl.index.tuning import exact_top_rows, recall_at_k
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import fit_rotation, rotate_rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness import K, add_data_args, all_claims, benchmark_vectors  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--prefix-dims", default="64,128,256")
    ap.add_argument("--shortlists", default="20,50,100,200,500,1000")
    ap.add_argument("--queries", type=int, default=1000, help="the first N of index_speed.py's 1,000 queries")
    ap.add_argument("--tag", default="", help="suffix of the result file, e.g. 768 for the 768-dim model")
    ap.add_argument(
        "--rotate",
        action="store_true",
        help="prefixes of the vectors as Index.build stores them, rotated (mrl.index.rotation)",
    )
    args = ap.parse_args()
    shortlists = [int(s) for s in args.shortlists.split(",")]

    _, base, queries, info = benchmark_vectors(args)
    queries = all_claims(queries, args.queries)
    truth = exact_top_rows(queries, len(base), base.__getitem__, K)
    if args.rotate:  # the same fit as Index.build's; full-vector scores, and so the truth, are unchanged
        rotation = fit_rotation(base)
        base, queries = rotate_rows(base, rotation, out=base), rotate_rows(queries, rotation)
    rows = []
    for pdim in [int(d) for d in args.prefix_dims.split(",")]:
        short = prefix(base, pdim)
        cand = exact_top_rows(prefix(queries, pdim), len(short), short.__getitem__, max(shortlists))
        for kp in shortlists:
            found = []
            for q, c in zip(queries, cand, strict=True):
                scores = base[c[:kp]] @ q
                found.append(c[:kp][np.argsort(-scores)[:K]])
            rows.append({"prefix_dim": pdim, "shortlist": kp, "recall@10": recall_at_k(np.array(found), truth)})
            console().print(f"p{pdim} k'={kp}: recall@10 {rows[-1]['recall@10']:.4f}")
    result = {
        "n": args.n,
        "model": args.model,
        "queries": len(queries),
        "data": info,
        "rotated": args.rotate,
    }
    name = f"prefix_ceiling-{args.n}{'-' + args.tag if args.tag else ''}.json"
    path = write_json({**result, "rows": rows}, ROOT / "benchmarks" / "results" / name)
    table = Table(title=f"two-pass recall@10 with an exact first pass, {args.n} vectors")
    table.add_column("k'")
    dims = sorted({r["prefix_dim"] for r in rows})
    for d in dims:
        table.add_column(f"prefix {d}", justify="right")
    for kp in shortlists:
        table.add_row(
            str(kp),
            *[f"{r['recall@10']:.4f}" for d in dims for r in rows if r["prefix_dim"] == d and r["shortlist"] == kp],
        )
    console().print(table)
    console().print(f"wrote {path}")


if __name__ == "__main__":
    main()
