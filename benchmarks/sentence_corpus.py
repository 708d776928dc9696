"""Write the distinct sentences of triplet files as a BEIR corpus.jsonl, for ``mrl train --adaptor-corpus``.

The adaptor learns from unlabelled documents as well as from its labelled rows. For a benchmark whose vectors
are mostly short sentences (index_speed.py seeds its 1M vectors from NLI and STS-B sentences), sentences held
out of the training triplets match those vectors better than long abstracts, and a 768-dim model encodes them
in minutes on a CPU instead of tens of minutes.

    python benchmarks/sentence_corpus.py $DATA/nli-triplets/mnli_dev_mismatched.triplets.jsonl \
        --out /tmp/mnli-mm-corpus.jsonl

Sentences keep their first-seen order (anchor, positive, negative of each row in turn); ids are ``s0``, ``s1``...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrl.data import load_triplets
from mrl.vectors.files import atomic_write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("triplets", type=Path, nargs="+", help="triplet files (JSONL, CSV/TSV, Parquet)")
    ap.add_argument("--out", type=Path, required=True, help="the corpus.jsonl to write")
    args = ap.parse_args()
    sentences: dict[str, None] = {}
    for path in args.triplets:
        for t in load_triplets(path):
            for text in (t.anchor, t.positive, t.negative):
                sentences.setdefault(text, None)
    lines = (json.dumps({"_id": f"s{i}", "title": "", "text": text}) + "\n" for i, text in enumerate(sentences))
    atomic_write(args.out, lambda f: f.writelines(line.encode() for line in lines))
    print(f"{len(sentences)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
