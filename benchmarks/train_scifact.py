"""Issue 3 benchmark: does Matryoshka fine-tuning keep retrieval quality in the first 64 dims?

Fine-tunes all-MiniLM-L6-v2 on SciFact train (hard negatives mined from the SciFact corpus with the
base model), then evaluates base, control (plain loss) and Matryoshka runs on SciFact test at
384/256/128/64 dims. The dev split for model selection is carved out of the *train* queries;
test queries are never trained or selected on.

    python benchmarks/train_scifact.py                      # control + matryoshka (about 45 min on 2 cores)
    python benchmarks/train_scifact.py --variants mrl-w     # one named variant
    python benchmarks/train_scifact.py --list               # the variants and their settings

Writes benchmarks/results/train_scifact.json (merged across invocations) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.table import Table

from mrl.data import load_beir
from mrl.data.beir import positive_pairs, split_queries
from mrl.encode import EmbeddingCache
from mrl.evaluate import evaluate_retrieval
from mrl.mining import mine_hard_negatives
from mrl.model import load_model
from mrl.report import console, write_json
from mrl.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_scifact.json"
DIMS = [384, 256, 128, 64]
BASE = {"epochs": 3, "batch_size": 32, "learning_rate": 3e-5, "dims": DIMS}
VARIANTS: dict[str, dict] = {
    "control": {**BASE, "matryoshka": False, "loss": "mnrl", "negatives": True},
    "mrl": {**BASE, "matryoshka": True, "loss": "mnrl", "negatives": True},
    "mrl-w": {**BASE, "matryoshka": True, "loss": "mnrl", "negatives": True, "dim_weights": [1, 1, 2, 4]},
    "mrl-inbatch": {**BASE, "matryoshka": True, "loss": "mnrl", "negatives": False},
    "control-5ep": {**BASE, "epochs": 5, "matryoshka": False, "loss": "mnrl", "negatives": True},
    "mrl-w-5ep": {
        **BASE,
        "epochs": 5,
        "matryoshka": True,
        "loss": "mnrl",
        "negatives": True,
        "dim_weights": [1, 1, 2, 4],
    },
    "mrl-cached-128": {
        **BASE,
        "batch_size": 128,
        "matryoshka": True,
        "loss": "cached-mnrl",
        "negatives": True,
        "dim_weights": [1, 1, 2, 4],
        "learning_rate": 6e-5,
        "epochs": 5,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MRL_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--variants", default="control,mrl", help="comma-separated: " + ",".join(VARIANTS))
    parser.add_argument("--models-dir", default=str(ROOT / "models" / "bench"))
    parser.add_argument("--dev-queries", type=int, default=100)
    parser.add_argument("--dev-distractors", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(VARIANTS, indent=1))
        return
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; known: {list(VARIANTS)}")

    scifact = Path(args.data) / "scifact"
    train_split, test = load_beir(scifact, "train"), load_beir(scifact, "test")
    train_part, dev = split_queries(train_split, args.dev_queries, args.dev_distractors, args.seed)
    pairs, n_train_queries = positive_pairs(train_part), len(train_part.queries)
    cache = EmbeddingCache()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    results.update(
        {
            "dataset": "scifact",
            "split": "test",
            "train_queries": n_train_queries,
            "train_pairs": len(pairs),
            "dev_queries": len(dev.queries),
            "dev_corpus": len(dev.corpus),
        }
    )

    base = load_model("default")
    if "base" not in results["runs"]:
        ev = evaluate_retrieval(base, test, DIMS, cache=cache, model_name="all-MiniLM-L6-v2")
        results["runs"]["base"] = {"settings": {}, "test": ev.dims}
    t0 = time.perf_counter()
    mined, mining_counts = mine_hard_negatives(base, pairs, train_split.corpus, cache=cache)
    results["mining"] = {**mining_counts, "seconds": round(time.perf_counter() - t0, 1)}

    for name in names:
        spec = dict(VARIANTS[name])
        negatives = spec.pop("negatives")
        config = TrainConfig(model="default", seed=args.seed, **spec)
        out = Path(args.models_dir) / name
        meta = train(
            config,
            out,
            triplets=mined if negatives else None,
            pairs=None if negatives else pairs,
            dev=dev,
            overwrite=True,
        )
        model = load_model(str(out))
        ev = evaluate_retrieval(model, test, DIMS, cache=cache, model_name=name)
        results["runs"][name] = {
            "settings": {**VARIANTS[name]},
            # the file merges runs from several invocations; each run keeps the one that made it
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "test": ev.dims,
            "train_seconds": meta["train_seconds"],
            "epoch_seconds": meta["epoch_seconds"],
            "dev_history": meta["dev_history"],
            "per_dim_loss": [
                {k: v for k, v in row.items() if k.startswith("loss") or k in ("step", "epoch")}
                for row in meta["log_history"]
                if "loss" in row
            ],
        }
        write_json(results, RESULTS)  # after every run: a crash later keeps what finished
    write_json(results, RESULTS)
    print_table(results)


def print_table(results: dict) -> None:
    table = Table(title="SciFact test nDCG@10 by dim (all-MiniLM-L6-v2 fine-tunes)")
    for col in ("run", *map(str, DIMS), "64 as % of 384", "s/epoch"):
        table.add_column(col, justify="right")
    for name, run in results["runs"].items():
        row = [run["test"]["full" if d == 384 else str(d)]["ndcg@10"] for d in DIMS]
        epochs = run.get("epoch_seconds") or []
        table.add_row(
            name,
            *(f"{x:.4f}" for x in row),
            f"{100 * row[-1] / row[0]:.1f}%",
            f"{sum(epochs) / len(epochs):.0f}" if epochs else "-",
        )
    console().print(table)


if __name__ == "__main__":
    main()
