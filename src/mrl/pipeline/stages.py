"""``mrl run``: train, evaluate, index and report from one config, resumable stage by stage.

Each stage records a key (a hash of its settings and of the keys of the stages it reads) with its
outputs in ``reports/<name>/stages/<stage>.json``. A stage whose key is unchanged is not redone, so an
interrupted run resumes where it stopped and editing ``[index]`` does not retrain.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console

from mrl import __version__
from mrl.data import BeirDataset, Document, load_beir, load_triplets
from mrl.data.beir import positive_pairs, split_queries, subset
from mrl.encode import EmbeddingCache, encode_texts
from mrl.eval.metrics import retrieval_metrics, run_from_rows
from mrl.eval.retrieval import evaluate_retrieval, exact_search
from mrl.pipeline.config import RunConfig
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix

MODELS = ("base", "control", "matryoshka")


class Pipeline:
    def __init__(self, config: RunConfig, reports_dir: Path = Path("reports"), console: Console | None = None):
        self.config = config
        self.out = reports_dir / config.name
        self.console = console or Console(stderr=True)
        self.cache = EmbeddingCache()
        self.keys: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    # ---- stage bookkeeping ------------------------------------------------------------------
    def stage(self, name: str, settings: dict, after: list[str], fn) -> dict:
        key = hashlib.sha256(
            json.dumps(
                {"settings": settings, "after": [self.keys[a] for a in after], "v": __version__},
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:16]
        self.keys[name] = key
        record = self.out / "stages" / f"{name}.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("key") == key:
                self.console.print(f"[green]✓[/green] {name}: up to date (inputs unchanged)")
                self.timings[name] = saved["seconds"]
                return saved["outputs"]
        self.console.print(f"[bold]▶ {name}[/bold]")
        started = time.perf_counter()
        outputs = fn()
        seconds = round(time.perf_counter() - started, 1)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"key": key, "seconds": seconds, "outputs": outputs}, indent=2, default=str))
        self.timings[name] = seconds
        self.console.print(f"  {name} done in {seconds:.0f} s")
        return outputs

    # ---- the stages ----------------------------------------------------------------------------
    def run(self) -> dict:
        from mrl.model import load_model

        c = self.config
        self.base = load_model(c.model.base)
        if c.model.max_seq_length:
            self.base.max_seq_length = c.model.max_seq_length
        train_data = load_beir(c.train.beir, c.train.split, skip_empty=c.train.skip_empty)
        train_part, self.dev = split_queries(train_data, c.train.dev_queries, c.train.dev_distractors, c.train.seed)
        data = self.stage(
            "data", {"model": asdict(c.model), "train": asdict(c.train)}, [], lambda: self._data(train_data, train_part)
        )
        models = {"base": getattr(self.base, "mrl_source", c.model.base)}
        variants = [("control", False)] if c.train.control else []
        for variant, matryoshka in [*variants, ("matryoshka", True)]:
            init = models["control"] if matryoshka and c.train.matryoshka_init == "control" else c.model.base
            out = self.stage(
                f"train-{variant}",
                {"model": asdict(c.model), "train": asdict(c.train)},
                ["data", *(["train-control"] if init != c.model.base else [])],
                lambda m=matryoshka, v=variant, i=init: self._train(data, v, m, i, train_data),
            )
            models[variant] = out["model"]
        evaluation = self.stage(
            "eval",
            {"eval": asdict(c.eval), "models": models},
            [k for k in self.keys if k.startswith("train")],
            lambda: self._eval(models),
        )
        index = self.stage(
            "index",
            {"index": asdict(c.index), "eval": asdict(c.eval)},
            ["eval"],
            lambda: self._index(models["matryoshka"], train_data),
        )
        report = {
            "name": c.name,
            "config": asdict(c),
            "models": models,
            "data": data,
            "eval": evaluation,
            "index": index,
            "stage_seconds": self.timings,
        }
        from mrl.pipeline.report import write_report

        write_report(report, self.out)
        write_json(report, self.out / "report.json")
        return report

    def _data(self, train_data: BeirDataset, train_part: BeirDataset) -> dict:
        from mrl.train.recipe import mine

        c = self.config.train
        pairs = positive_pairs(train_part)
        if c.max_pairs:
            pairs = pairs[: c.max_pairs]
        triplets = [t for f in c.triplets for t in load_triplets(f)]
        counts: dict = {"pairs": len(pairs), "extra_triplets": len(triplets)}
        if c.mine_negatives:
            mined, mining = mine(self.base, pairs, self._mining_corpus(train_data), cache=self.cache)
            triplets += mined
            counts["mining"] = mining
            pairs = []
        path = self.out / "data" / "train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as handle:
            for t in triplets:
                handle.write(json.dumps({"anchor": t.anchor, "positive": t.positive, "negative": t.negative}) + "\n")
            for p in pairs:
                handle.write(json.dumps({"anchor": p.anchor, "positive": p.positive}) + "\n")
        return {"file": str(path), "triplets": len(triplets), "pairs": len(pairs), **counts}

    def _train(self, data: dict, variant: str, matryoshka: bool, init: str, train_data: BeirDataset) -> dict:
        """Train one variant from ``init`` (the base model, or the control for a second Matryoshka phase)."""
        from mrl.data import Pair, Triplet
        from mrl.model import load_model
        from mrl.train.adaptor import AdaptorConfig
        from mrl.train.recipe import Recipe, fit
        from mrl.train.trainer import TrainConfig

        c, m = self.config.train, self.config.model
        rows = [json.loads(line) for line in Path(data["file"]).read_text().splitlines()]
        triplets = [Triplet(r["anchor"], r["positive"], r["negative"]) for r in rows if "negative" in r]
        pairs = [Pair(r["anchor"], r["positive"]) for r in rows if "negative" not in r]
        config = TrainConfig(
            model=init,
            dims=c.dims,
            loss=c.loss,
            matryoshka=matryoshka,
            dim_weights=c.dim_weights,
            epochs=(c.matryoshka_epochs or c.epochs) if matryoshka else c.epochs,
            batch_size=c.batch_size,
            learning_rate=(c.matryoshka_learning_rate or c.learning_rate) if matryoshka else c.learning_rate,
            max_seq_length=m.max_seq_length,
            seed=c.seed,
            rotate=matryoshka and c.rotate,
            distill_weight=c.distill_weight if matryoshka else 0.0,
        )
        model = load_model(init)
        if m.max_seq_length:
            model.max_seq_length = m.max_seq_length
        out = self.out / "models" / variant
        adaptor = matryoshka and c.adaptor
        head = AdaptorConfig.like(config, steps=c.adaptor_steps, orthogonal=c.adaptor_orthogonal)
        corpus = self._mining_corpus(train_data) if adaptor or config.rotate else None
        meta = fit(
            Recipe(config, head if adaptor else None), out, triplets, pairs, corpus, self.dev, model=model,
            cache=self.cache, overwrite=True,
        )  # fmt: skip
        if adaptor:
            return {"model": str(out), "init": init, "adaptor": True, "train_seconds": meta["train_seconds"]}
        return {
            "model": str(out),
            "init": init,
            "train_seconds": meta["train_seconds"],
            "epoch_seconds": meta["epoch_seconds"],
        }

    def _mining_corpus(self, train_data: BeirDataset) -> dict[str, str]:
        """The training corpus: all of it, or the training queries' judged documents plus distractors."""
        import random

        c = self.config.train
        if not c.mine_corpus_distractors:
            return train_data.corpus
        train_part, _ = split_queries(train_data, c.dev_queries, c.dev_distractors, c.seed)
        return subset(train_part, list(train_part.qrels), c.mine_corpus_distractors, random.Random(c.seed)).corpus

    def _eval_data(self) -> BeirDataset:
        import random

        c = self.config.eval
        data = load_beir(c.beir, c.split, skip_empty=c.skip_empty)
        if c.corpus_distractors:
            sub = subset(data, list(data.qrels), c.corpus_distractors, random.Random(0))
            sub.skipped, sub.judgements_on_skipped = data.skipped, data.judgements_on_skipped
            return sub
        return data

    def _eval(self, models: dict) -> dict:
        from mrl.model import load_model

        c = self.config.eval
        data = self._eval_data()
        out: dict = {"dataset": data.name, "split": data.split, "documents": len(data.corpus), "models": {}}
        if data.skipped:
            out["skipped_documents"] = [s.to_json() for s in data.skipped]
            out["judgements_on_skipped"] = data.judgements_on_skipped
        if c.rotate:
            out["rotated"] = {}
        for name, spec in models.items():
            model = self.base if name == "base" else load_model(spec)
            result = evaluate_retrieval(model, data, list(c.dims), cache=self.cache, model_name=name, rotate=c.rotate)
            out["models"][name] = result.dims
            if c.rotate:
                out["rotated"][name] = result.rotated
        return out

    def _index(self, model_path: str, train_data: BeirDataset) -> dict:
        """Two-pass index over the eval corpus, built where ``[index] location`` says (a temporary folder by
        default): tuned on training queries, measured on the eval queries against an exact scan."""
        import tempfile

        from mrl.index import build_index
        from mrl.index.locations import backend_of
        from mrl.index.tuning import recall_at_k, seconds_per_query
        from mrl.model import load_model

        c = self.config.index
        data = self._eval_data()
        model = load_model(model_path)
        doc_ids = list(data.corpus)
        vectors, _ = self.cache.get_or_encode(model, data.corpus_fingerprint(), [data.corpus[d] for d in doc_ids])
        qids = list(data.queries)
        queries = prefix(encode_texts(model, [data.queries[q] for q in qids], progress=False), vectors.shape[1])
        tuning_queries = encode_texts(model, list(train_data.queries.values())[:300], progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            location = c.location or str(Path(tmp) / "idx")
            embedded = backend_of(location) == "embedded"
            index = build_index(
                location, vectors, [Document(d, "") for d in doc_ids], model=model_path, loaded_model=model,
                prefix_dim=c.prefix_dim, rotate=c.rotate, overwrite=True, target_recall=c.target_recall,
                tune_queries=tuning_queries, report=lambda line: self.console.print(f"  {line}"),
                **({"ann": c.ann} if embedded else {}),
            )  # fmt: skip
            tuned = index.tuned
            truth = index.exact_keys(queries, 10)
            full = prefix(vectors, vectors.shape[1])
            exact_s = seconds_per_query(lambda q: np.argpartition(-(full @ q[0]), 10)[:10], queries)
            points = []
            for kp in sorted({*c.shortlists, *([tuned["shortlist"]] if tuned.get("shortlist") else [])}):
                if kp > len(doc_ids):
                    continue
                rows = index.search_keys(queries, 10, shortlist=kp)[0]  # measured as it is timed below
                seconds = seconds_per_query(lambda q, kp=kp: index.search_keys(q, 10, shortlist=kp), queries)
                points.append({"shortlist": kp, "recall@10": recall_at_k(rows, truth), "qps_single": 1 / seconds})
            tuned_s = seconds_per_query(lambda q: index.search_keys(q, 10), queries)
            run = run_from_rows(*index.search_keys(queries, 11), doc_ids, qids)
            exact_run = exact_search(queries, full, doc_ids, 11, qids)
            stats = index.stats()
            index.close()
        return {
            "documents": len(doc_ids),
            "location": c.location or "a temporary folder",
            "prefix_dim": index.prefix_dim,
            "ann": stats["ann"],
            "rotated": c.rotate,
            "tuned": {k: v for k, v in tuned.items() if k not in ("table", "finalists")},
            "tuned_qps_single": 1 / tuned_s,
            "ndcg@10_two_pass": retrieval_metrics(data.qrels, run, ignore_identical_ids=True)["ndcg@10"],
            "ndcg@10_exact_full": retrieval_metrics(data.qrels, exact_run, ignore_identical_ids=True)["ndcg@10"],
            "exact_full_qps_single": 1 / exact_s,
            "points": points,
            "ram_bytes": stats["ram_bytes"],
            "vector_bytes": stats.get("vector_bytes", 0),
        }
