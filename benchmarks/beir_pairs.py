"""Write a BEIR split's (query, judged-relevant document) pairs as JSONL, for ``mrl train --pairs``.

``mrl run`` builds these pairs itself; this gives the same pairs to a bare ``mrl train`` run, such as an adaptor
trained in-domain on a frozen model (benchmarks/adaptor_quality.py measures it):

    python benchmarks/beir_pairs.py $DATA/scifact --split train --out /tmp/scifact-train-pairs.jsonl

A document's text is the one ``load_beir`` gives (title and text joined), so a positive that is also a corpus
document reuses that document's cached vector.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrl.data import load_beir
from mrl.data.beir import positive_pairs
from mrl.vectors.files import atomic_write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    ap.add_argument("--split", default="train", help="qrels split to take the pairs from (never the test split)")
    ap.add_argument("--out", type=Path, required=True, help="the pairs JSONL to write")
    args = ap.parse_args()
    pairs = positive_pairs(load_beir(args.beir, args.split))
    lines = (json.dumps({"anchor": p.anchor, "positive": p.positive}) + "\n" for p in pairs)
    atomic_write(args.out, lambda f: f.writelines(line.encode() for line in lines))
    print(f"{len(pairs)} pairs from {args.beir} ({args.split}) -> {args.out}")


if __name__ == "__main__":
    main()
