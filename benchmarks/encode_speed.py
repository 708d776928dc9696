"""CPU encoding speed and per-dim quality of one model on torch, ONNX Runtime, and ONNX Runtime with int8 weights.

All three run in this one process on the same texts, so the speed ratios hold on a shared machine:
sentences per second over SciFact abstracts (long, up to the model's 256 tokens) and STS-B sentences
(short), each timed as the median of --repeats passes. Quality: SciFact test nDCG@10 at 64/128/256/full
dims for each backend (the full 5,183-document corpus unless --corpus-distractors), and its difference from
torch's. The ONNX files are exported into a copy of the model (mrl export --onnx --quantize int8).

    python benchmarks/encode_speed.py                       # the bundled all-MiniLM-L6-v2
    python benchmarks/encode_speed.py --model models/bench/mrl-rd

Writes benchmarks/results/encode_speed[-<tag>].json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.table import Table

from mrl.data import load_beir, load_sts
from mrl.data.beir import subset
from mrl.encode import EmbeddingCache
from mrl.eval.retrieval import evaluate_retrieval
from mrl.eval.tables import console
from mrl.model import load_model
from mrl.model.onnx import export_onnx
from mrl.provenance import write_json

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnx", "onnx-int8")
DIMS = [64, 128, 256, "full"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MRL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--long", type=int, default=400, help="SciFact abstracts timed")
    ap.add_argument("--short", type=int, default=2000, help="STS-B sentences timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--corpus-distractors", type=int, default=0, help="0: the full corpus for the quality check")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    test = load_beir(args.data / "scifact", "test")
    if args.corpus_distractors:
        test = subset(test, list(test.qrels), args.corpus_distractors, random.Random(0))
    sts = load_sts(args.data / "stsbenchmark" / "sts-test.csv")
    workloads = {
        "scifact_abstracts": list(test.corpus.values())[: args.long],
        "sts_sentences": (sts.sentences1 + sts.sentences2)[: args.short],
    }
    with tempfile.TemporaryDirectory(prefix="mrl-onnx-") as tmp:
        folder = Path(tmp) / "model"
        load_model(args.model).save(str(folder))
        export_onnx(load_model(str(folder), device="cpu"), folder, quantize="int8")
        result = {"model": args.model, "batch_size": args.batch_size, "backends": {}, "workloads": {}}
        for name, texts in workloads.items():
            result["workloads"][name] = {"texts": len(texts), "chars_mean": sum(map(len, texts)) / len(texts)}
        cache = EmbeddingCache(Path(tmp) / "cache")  # this run's own: every backend encodes the corpus itself
        for backend in BACKENDS:
            model = load_model(str(folder), backend=backend)
            entry = {}
            for name, texts in workloads.items():
                model.encode(texts[:64], batch_size=args.batch_size)  # warm-up: first-call allocations
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    model.encode(texts, batch_size=args.batch_size)
                    times.append(time.perf_counter() - t0)
                entry[f"{name}_per_s"] = len(texts) / statistics.median(times)
            ev = evaluate_retrieval(model, test, DIMS, cache=cache, model_name=backend, progress=False)
            entry["ndcg@10"] = {k: v["ndcg@10"] for k, v in ev.dims.items()}
            result["backends"][backend] = entry
            console().print(backend, entry)
        ref = result["backends"]["torch"]
        for entry in result["backends"].values():
            entry["speedup"] = {n: entry[f"{n}_per_s"] / ref[f"{n}_per_s"] for n in workloads}
            entry["ndcg@10_minus_torch"] = {d: entry["ndcg@10"][d] - ref["ndcg@10"][d] for d in entry["ndcg@10"]}
        result["quality_corpus"] = len(test.corpus)
    out = ROOT / "benchmarks" / "results" / f"encode_speed{'-' + args.tag if args.tag else ''}.json"
    write_json(result, out)
    print_table(result)


def print_table(result: dict) -> None:
    table = Table(title=f"CPU encoding, {result['model']} (batch {result['batch_size']})")
    for col in ("backend", "abstracts/s", "x torch", "sentences/s", "x torch", *(f"nDCG@10 {d}" for d in DIMS)):
        table.add_column(col, justify="right")
    for backend, e in result["backends"].items():
        table.add_row(
            backend,
            f"{e['scifact_abstracts_per_s']:.1f}",
            f"{e['speedup']['scifact_abstracts']:.2f}",
            f"{e['sts_sentences_per_s']:.0f}",
            f"{e['speedup']['sts_sentences']:.2f}",
            *(f"{e['ndcg@10'][str(d)]:.4f} ({e['ndcg@10_minus_torch'][str(d)]:+.4f})" for d in DIMS),
        )
    console().print(table)


if __name__ == "__main__":
    main()
