"""How an int8 ONNX export should round: nDCG@10 drift and speed of each scheme.

Dynamic int8 quantization rounds each product's activations to one uint8 scale per batch: a few large values
(the feed-forward down-projection reads the GELU output) make that scale coarse for all the rest. Blockwise
int8 (ONNX Runtime's MatMulNBits at 8 bits, accuracy level 4) keeps one scale per block of inputs, for the
weights and for each activation row. Each variant below is one call of ``mrl.onnx_backend.quantize_int8``
(a block size, or dynamic with some products left in float by regular expressions on ONNX node names), measured
in this one process against the float ONNX graph (which gives torch's rankings): SciFact test nDCG@10 at
64/128/256/full dims (the judged documents plus --corpus-distractors others) and abstracts encoded per second.

    python benchmarks/int8_sensitivity.py                        # the bundled all-MiniLM-L6-v2
    python benchmarks/int8_sensitivity.py --model models/my-mrl --tag my-mrl

Writes benchmarks/results/int8_sensitivity[-<tag>].json and prints a table.
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

from mrl.data import load_beir
from mrl.data.beir import subset
from mrl.encode import EmbeddingCache
from mrl.eval.retrieval import evaluate_retrieval
from mrl.eval.tables import console
from mrl.model import load_model
from mrl.model.onnx import BLOCK_SIZE, FLOAT_FILE, INT8_FILE, ONNX_DIR, export_onnx, quantize_int8
from mrl.provenance import write_json

ROOT = Path(__file__).resolve().parents[1]
DIMS = [64, 128, 256, "full"]
FFN_DOWN = r"layer\.\d+/output/dense/"


def variants() -> dict[str, tuple[int | None, tuple[str, ...]]]:
    """Name -> (block size, or None for dynamic; the products left in float)."""
    return {
        "dynamic, every product int8": (None, ()),
        "dynamic, ffn down float": (None, (FFN_DOWN,)),
        "blocks of 32": (32, ()),
        "blocks of 64": (64, ()),
        f"blocks of {BLOCK_SIZE} (default)": (BLOCK_SIZE, ()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MRL_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--corpus-distractors", type=int, default=1000)
    ap.add_argument("--long", type=int, default=100, help="SciFact abstracts timed per variant")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    test = load_beir(args.data / "scifact", "test")
    test = subset(test, list(test.qrels), args.corpus_distractors, random.Random(0))  # as encode_speed.py
    texts = list(test.corpus.values())[: args.long]
    result: dict = {"model": args.model, "quality_corpus": len(test.corpus), "timed_texts": len(texts), "rows": []}
    with tempfile.TemporaryDirectory(prefix="mrl-int8-") as tmp:
        folder = Path(tmp) / "model"
        base = load_model(args.model)
        base.save(str(folder))
        export_onnx(load_model(str(folder), device="cpu"), folder)
        cache = EmbeddingCache(Path(tmp) / "cache")  # keyed by the graph file's bytes: each variant encodes anew
        runs = [("float (onnx)", None), *variants().items()]
        for name, scheme in runs:
            if scheme is not None:
                quantize_int8(folder / ONNX_DIR / FLOAT_FILE, folder / ONNX_DIR / INT8_FILE, *scheme)
            model = load_model(str(folder), backend="onnx" if scheme is None else "onnx-int8")
            model.encode(texts[:32])  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model.encode(texts, batch_size=32)
                times.append(time.perf_counter() - t0)
            ev = evaluate_retrieval(model, test, DIMS, cache=cache, model_name=name, progress=False)
            block, keep = scheme or (None, ())
            row = {"variant": name, "block_size": block, "float_patterns": list(keep),
                   "abstracts_per_s": len(texts) / statistics.median(times),
                   "ndcg@10": {k: v["ndcg@10"] for k, v in ev.dims.items()}}  # fmt: skip
            result["rows"].append(row)
            console().print(row)
    ref = result["rows"][0]
    for row in result["rows"]:
        row["ndcg@10_minus_float"] = {d: row["ndcg@10"][d] - ref["ndcg@10"][d] for d in row["ndcg@10"]}
        row["worst_drift"] = min(row["ndcg@10_minus_float"].values())
        row["speed_x_float"] = row["abstracts_per_s"] / ref["abstracts_per_s"]
    write_json(result, ROOT / "benchmarks" / "results" / f"int8_sensitivity{'-' + args.tag if args.tag else ''}.json")
    table = Table(title=f"int8 ONNX schemes, {args.model}")
    for col in ("variant", "abstracts/s", "x float", *(f"nDCG@10 {d}" for d in DIMS)):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(
            r["variant"], f"{r['abstracts_per_s']:.1f}", f"{r['speed_x_float']:.2f}",
            *(f"{r['ndcg@10'][str(d)]:.4f} ({r['ndcg@10_minus_float'][str(d)]:+.4f})" for d in DIMS),
        )  # fmt: skip
    console().print(table)


if __name__ == "__main__":
    main()
