"""The ``mrl`` command line: a thin layer over the library that turns user errors into one clear line."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mrl.errors import MrlError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Matryoshka embeddings end to end: train, measure quality per dim, search with a two-pass index.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # a note or an error is one line, whatever the terminal
STATE = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug
    if not debug:
        # Library chatter (weight-loading bars, HF warnings) hides what mrl itself says.
        logging.getLogger("transformers").setLevel(logging.ERROR)
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@app.command("eval")
def eval_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model folder or hub id; repeat to compare (default: all-MiniLM-L6-v2)."),
    ] = None,
    beir: Annotated[
        str | None, typer.Option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or hf:<name>.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split to evaluate.")] = "test",
    dims: Annotated[str, typer.Option(help="Comma-separated prefix dims; 'full' is the model's width.")] = (
        "64,128,256,full"
    ),
    sts: Annotated[Path | None, typer.Option(help="STS-benchmark TSV: also report Spearman per dim.")] = None,
    out: Annotated[Path | None, typer.Option(help="Results JSON (a PNG plot is written beside it).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Plot path (default: --out with .png).")] = None,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.")] = 64,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache folder (default: $MRL_CACHE_DIR or ~/.cache/mrl).")
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            help="Also measure every dim on rotated vectors: the rotation mrl's index stores them in, fitted "
            "on the evaluated corpus (STS: on its sentences). It is the free baseline any model gets."
        ),
    ] = False,
    rotate_sample: Annotated[
        int | None, typer.Option(help="Fit the rotation on this many random corpus vectors (implies --rotate).")
    ] = None,
    skip_empty: Annotated[bool, typer.Option(help=SKIP_EMPTY_HELP)] = False,
    mteb: Annotated[
        bool, typer.Option("--mteb", help="Also run --beir through the mteb package (a custom task, offline), per dim.")
    ] = False,
    mteb_task: Annotated[
        str | None, typer.Option(help="Run a named MTEB task per dim, e.g. SciFact (downloads its data: network).")
    ] = None,
    engine: Annotated[str, typer.Option("--backend", "--model-backend", help=ENGINE_HELP)] = "torch",
    ignore_identical_ids: Annotated[
        bool,
        typer.Option(
            "--ignore-identical-ids/--keep-identical-ids",
            help="Drop a retrieved document whose id equals the query id (BEIR's convention, the default) or keep "
            "it (MTEB's retrieval default). Applies to mrl's and mteb's scores alike, and is recorded.",
        ),
    ] = True,
    classify: Annotated[
        list[Path] | None,
        typer.Option(
            help="Labelled test file (JSONL, CSV/TSV, Parquet): report classification accuracy per dim and "
            "with early exit; repeatable."
        ),
    ] = None,
    classify_train: Annotated[
        list[Path] | None,
        typer.Option(
            help="Labelled training file for --classify (20% of it, seeded, calibrates early exit); repeatable."
        ),
    ] = None,
    classifier: Annotated[str, typer.Option(help="--classify: centroid (nearest class mean) or knn.")] = "centroid",
    knn_k: Annotated[int | None, typer.Option(help="--classifier knn: neighbours that vote (default 10).")] = None,
    label_field: Annotated[str, typer.Option(help="--classify: the label column.")] = "label",
    text_field: Annotated[str, typer.Option(help="--classify: the text column of single-text rows.")] = "text",
    pair_fields: Annotated[
        str | None,
        typer.Option(help="--classify: two text columns of pair rows, e.g. premise,hypothesis (NLI data)."),
    ] = None,
    exit_margin: Annotated[
        float | None,
        typer.Option(
            help="--classify: the lead (0-2) of the best class that stops an item at a narrower width, "
            "instead of calibrating it."
        ),
    ] = None,
    target_agreement: Annotated[
        float | None,
        typer.Option(
            help="--classify: calibrate the early-exit margin to agree with the full width on this share "
            "of the held-out training items (default 0.99)."
        ),
    ] = None,
) -> None:
    """Measure retrieval quality (nDCG@10, Recall@10/100, MRR@10) at each prefix dim, for one or more models.

    The corpus is encoded once per model at full width and cached; each dim is a re-normalized prefix.
    With --rotate each dim is measured raw and on rotated vectors (dashed lines in the plot).
    With --classify: accuracy of a nearest-centroid or k-NN classifier at each dim, and with early exit (each item
    read at the narrowest dim of --dims that is sure enough, the rest widened), with its mean dims per item.
    Example: mrl eval --model default --model models/scifact-mrl --beir ../shared/data/scifact --rotate --out r.json
    Example: mrl eval --classify test.jsonl --classify-train train.jsonl --dims 32,64,128,256,full
    """
    from mrl.data import load_beir, load_sts
    from mrl.encode import EmbeddingCache
    from mrl.eval.retrieval import evaluate_retrieval, evaluate_sts, parse_dims
    from mrl.eval.tables import classification_table, plot_quality, print_table, retrieval_table, sts_table
    from mrl.model import check_dims, embedding_dim, load_model
    from mrl.provenance import write_json

    labelled = _labelled_sets(
        classify,
        classify_train,
        classifier,
        knn_k,
        label_field,
        text_field,
        pair_fields,
        exit_margin,
        target_agreement,
    )
    if beir is None and sts is None and mteb_task is None and not classify:
        raise MrlError(
            "give --beir (retrieval), --sts (similarity), --classify (classification) and/or --mteb-task data to "
            "evaluate on"
        )
    if mteb and beir is None:
        raise MrlError("--mteb runs the --beir folder through mteb: give --beir (or --mteb-task NAME)")
    try:
        dim_list = parse_dims(dims)
    except ValueError as exc:
        raise MrlError(f"--dims: {exc}") from None
    if batch_size <= 0:
        raise MrlError("--batch-size must be positive")
    if rotate_sample is not None and beir is None:
        raise MrlError("--rotate-sample samples the --beir corpus: give --beir, or --rotate alone")
    rotate = rotate or rotate_sample is not None
    dataset = load_beir(beir, split, skip_empty=skip_empty) if beir else None
    if dataset and dataset.skipped:
        _report_skipped(dataset.skipped, dataset.judgements_on_skipped)
    if dataset and rotate_sample is not None and not 0 < rotate_sample <= len(dataset.corpus):
        raise MrlError(
            f"--rotate-sample: {rotate_sample} vectors asked for, the corpus has {len(dataset.corpus)} documents"
        )
    sts_data = load_sts(sts) if sts else None
    if dataset:
        err.print(
            f"[dim]{dataset.name}/{split}: {dataset.counts['documents']} documents, "
            f"{dataset.counts['queries']} queries, {dataset.counts['judgements']} judgements[/dim]"
        )
    specs = model or ["default"]
    models = [load_model(spec, backend=engine) for spec in specs]  # load all first: a bad second model fails fast
    if engine != "torch" and (mteb or mteb_task):
        raise MrlError("--mteb runs sentence-transformers models: use --backend torch with it")
    for m in models:
        check_dims(m, [embedding_dim(m) if d == "full" else int(d) for d in dim_list])

    name = dataset.name if dataset else sts.name if sts else mteb_task or classify[0].stem
    result: dict = {"dataset": name, "split": split, "ignore_identical_ids": ignore_identical_ids, "models": []}
    if dataset:
        result["counts"] = dataset.counts
        if dataset.skipped:
            result["skipped_documents"] = [s.to_json() for s in dataset.skipped]
            result["judgements_on_skipped"] = dataset.judgements_on_skipped
    cache = EmbeddingCache(cache_dir)
    for spec, m in zip(specs, models, strict=True):
        entry: dict = {"model": getattr(m, "mrl_source", spec), "full_dim": embedding_dim(m), "dims": {}}
        if dataset:
            err.print(f"[bold]evaluating[/bold] {spec}")
            try:
                evaluation = evaluate_retrieval(
                    m,
                    dataset,
                    dim_list,
                    cache=cache,
                    batch_size=batch_size,
                    rotate=rotate,
                    rotate_sample=rotate_sample,
                    ignore_identical_ids=ignore_identical_ids,
                )
            except ValueError as exc:
                raise MrlError(str(exc)) from None
            entry = evaluation.to_json()
        if mteb or mteb_task:
            from mrl.eval.mteb import local_task, named_task, run_mteb

            if mteb:
                err.print(f"[bold]mteb[/bold] {spec} on {dataset.name}")
                entry["mteb"] = run_mteb(m, local_task(dataset, ignore_identical_ids), dim_list)
            if mteb_task:
                err.print(f"[bold]mteb task {mteb_task}[/bold] {spec}")
                task = named_task(mteb_task, ignore_identical_ids)
                entry["mteb_task"] = {"name": mteb_task, "dims": run_mteb(m, task, dim_list)}
        if labelled:
            from mrl.eval.classification import DEFAULT_TARGET_AGREEMENT, evaluate_classification
            from mrl.eval.prefix_classifier import DEFAULT_K

            err.print(f"[bold]classifying[/bold] with {spec}")
            entry["classification"] = evaluate_classification(
                m,
                *labelled,
                dim_list,
                kind=classifier,
                k=knn_k or DEFAULT_K,
                margin=exit_margin,
                target_agreement=target_agreement or DEFAULT_TARGET_AGREEMENT,
                rotate=rotate,
                cache=cache,
                batch_size=batch_size,
            )
        if sts_data:
            entry["sts"], sts_rotated = evaluate_sts(m, sts_data, dim_list, batch_size=batch_size, rotate=rotate)
            if sts_rotated is not None:
                entry["sts_rotated"] = sts_rotated
        result["models"].append(entry)

    if dataset:
        print_table(retrieval_table(result))
    if mteb or mteb_task:
        _print_mteb(result)
    if sts_data:
        print_table(sts_table(result))
    if labelled:
        print_table(classification_table(result))
    if out:
        write_json(result, out)
        err.print(f"wrote {out}")
        if dataset:
            plot_path = plot_quality(result, plot or out.with_suffix(".png"))
            err.print(f"wrote {plot_path}")


ENGINE_HELP = (
    "Where the model runs: torch, onnx or onnx-int8 (ONNX Runtime on the model's exported onnx/ files: "
    "mrl export MODEL --onnx [--quantize int8])."
)
SKIP_EMPTY_HELP = (
    "Leave out documents with no text instead of stopping; they are counted and listed (and in the JSON), and "
    "judgements that name them are reported and count as not found."
)
REPLICA_HELP = (
    "PostgreSQL index: a hot standby (postgresql://user[:password]@host[:port]/database) that serves reads in turn "
    "with the others; repeatable. Writes go to LOCATION's server, and this process reads its own writes."
)
IO_HELP = (
    "How the rerank reads vector rows (embedded index): mmap, pread (batched reads from disk, for vectors larger "
    "than RAM) or auto (pread when the vectors exceed half of the available memory)."
)


def _labelled_sets(
    classify: list[Path] | None,
    classify_train: list[Path] | None,
    classifier: str,
    knn_k: int | None,
    label_field: str,
    text_field: str,
    pair_fields: str | None,
    exit_margin: float | None,
    target_agreement: float | None,
):
    """The --classify (train, test) sets, after checking that every classification option can be honoured."""
    from mrl.data.labels import load_labelled
    from mrl.eval.prefix_classifier import CLASSIFIERS, MAX_MARGIN

    given = {
        "--classify-train": classify_train,
        "--classifier": classifier != "centroid" or None,
        "--knn-k": knn_k,
        "--label-field": label_field != "label" or None,
        "--text-field": text_field != "text" or None,
        "--pair-fields": pair_fields,
        "--exit-margin": exit_margin,
        "--target-agreement": target_agreement,
    }
    if not classify:
        used = [flag for flag, value in given.items() if value is not None]
        if used:
            raise MrlError(f"{', '.join(used)}: only used with --classify (a labelled test file)")
        return None
    if not classify_train:
        raise MrlError("--classify needs --classify-train: the labelled file the classifier is fitted on")
    if classifier not in CLASSIFIERS:
        raise MrlError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, got '{classifier}'")
    if knn_k is not None and (classifier != "knn" or knn_k <= 0):
        raise MrlError("--knn-k: a positive number of neighbours, with --classifier knn")
    if exit_margin is not None and target_agreement is not None:
        raise MrlError("--exit-margin fixes the margin that --target-agreement calibrates: give one of them")
    if exit_margin is not None and not 0 <= exit_margin <= MAX_MARGIN:
        raise MrlError(f"--exit-margin must be between 0 and {MAX_MARGIN}, got {exit_margin}")
    if target_agreement is not None and not 0 < target_agreement <= 1:
        raise MrlError(f"--target-agreement must be in (0, 1], got {target_agreement}")
    pair = None
    if pair_fields is not None:
        pair = tuple(f.strip() for f in pair_fields.split(","))
        if len(pair) != 2 or not all(pair):
            raise MrlError(f"--pair-fields: two column names separated by a comma, got '{pair_fields}'")
        if text_field != "text":
            raise MrlError("--text-field names the text of single-text rows; pair rows take --pair-fields")
    return (
        load_labelled(classify_train, label_field, text_field, pair),
        load_labelled(classify, label_field, text_field, pair),
    )


def _report_skipped(skipped, judgements_on_skipped=()) -> None:
    from mrl.data.skipped import describe

    err.print(f"[yellow]{describe(skipped)}[/yellow]")
    if judgements_on_skipped:
        err.print(
            f"[yellow]{len(judgements_on_skipped)} judgement(s) name a skipped document; they stay and count as "
            f"not found: {', '.join(j['query-id'] + '->' + j['corpus-id'] for j in judgements_on_skipped[:10])}"
            "[/yellow]"
        )


def _int_list(spec: str, option: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise MrlError(f"{option}: '{spec}' is not a comma-separated list of integers") from None


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="Output folder: a normal Sentence-Transformers model + mrl.json.")],
    model: Annotated[str, typer.Option(help="Base model folder or hub id.")] = "default",
    triplets: Annotated[
        list[Path] | None, typer.Option(help="Triplet file (JSONL, CSV/TSV, Parquet); repeatable.")
    ] = None,
    pairs: Annotated[list[Path] | None, typer.Option(help="(anchor, positive) pair file; repeatable.")] = None,
    mine_negatives_from: Annotated[
        Path | None, typer.Option(help="BEIR-style corpus.jsonl to mine one hard negative per pair from.")
    ] = None,
    anchor_column: Annotated[str, typer.Option(help="Column holding the anchor/query.")] = "anchor",
    positive_column: Annotated[str, typer.Option(help="Column holding the positive.")] = "positive",
    negative_column: Annotated[str, typer.Option(help="Column holding the negative.")] = "negative",
    dims: Annotated[str, typer.Option(help="Matryoshka dims to train, e.g. 384,256,128,64.")] = "384,256,128,64",
    loss: Annotated[str, typer.Option(help="Inner loss: mnrl, cached-mnrl (big batches, small memory), triplet.")] = (
        "mnrl"
    ),
    matryoshka: Annotated[
        bool, typer.Option("--matryoshka/--no-matryoshka", help="--no-matryoshka: control run, plain inner loss.")
    ] = True,
    dim_weights: Annotated[
        str | None, typer.Option(help="Loss weight per dim, same order as --dims, e.g. 1,1,1.5,2.")
    ] = None,
    n_dims_per_step: Annotated[int, typer.Option(help="Random dims per step (-1: all).")] = -1,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Batch size (in-batch negatives for MNRL).")] = 32,
    mini_batch_size: Annotated[int, typer.Option(help="Mini-batch for cached-mnrl.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-5,
    warmup_ratio: Annotated[float, typer.Option(help="Warm-up fraction of steps.")] = 0.1,
    triplet_margin: Annotated[float, typer.Option(help="Cosine-distance margin for --loss triplet.")] = 0.3,
    max_seq_length: Annotated[int | None, typer.Option(help="Truncate inputs to this many tokens.")] = None,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: run all epochs).")] = -1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    dev_beir: Annotated[
        Path | None, typer.Option(help="BEIR folder for the per-dim dev evaluation each epoch (never the test set).")
    ] = None,
    dev_split: Annotated[str, typer.Option(help="qrels split of --dev-beir.")] = "dev",
    mine_margin: Annotated[float, typer.Option(help="Skip candidates scoring above (1-margin) x positive.")] = 0.05,
    mine_skip_top: Annotated[int, typer.Option(help="Ignore the best N candidates when mining.")] = 0,
    mine_depth: Annotated[int, typer.Option(help="How deep in the ranking to look for a negative.")] = 50,
    rotate: Annotated[
        bool,
        typer.Option(
            help="Before training, append the rotation that puts the model's energy in its first dims, fitted "
            "on --rotate-corpus (or --mine-negatives-from): the prefixes start at the free baseline."
        ),
    ] = False,
    rotate_corpus: Annotated[
        Path | None, typer.Option(help="corpus.jsonl whose vectors the --rotate rotation is fitted on.")
    ] = None,
    distill_weight: Annotated[
        float,
        typer.Option(help="> 0: each prefix also learns the full vector's ranking of the batch (KL term weight)."),
    ] = 0.0,
    adaptor: Annotated[
        bool,
        typer.Option(
            "--adaptor",
            help="Freeze --model and train a Matryoshka adaptor on its embeddings (seconds on a CPU): the "
            "recommended recipe on a plain fine-tune. Needs --adaptor-corpus (or --mine-negatives-from).",
        ),
    ] = False,
    adaptor_corpus: Annotated[
        Path | None, typer.Option(help="corpus.jsonl of unlabelled documents for --adaptor (and its rotation).")
    ] = None,
    adaptor_steps: Annotated[int, typer.Option(help="Training steps of --adaptor.")] = 300,
    orthogonal: Annotated[
        bool,
        typer.Option(
            "--orthogonal",
            help="With --adaptor: one orthogonal map instead of the residual head, so every full-width score stays "
            "the frozen model's; only the order of the directions is learned.",
        ),
    ] = False,
    skip_empty: Annotated[bool, typer.Option(help=SKIP_EMPTY_HELP)] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
) -> None:
    """Fine-tune a Sentence-Transformers model with MatryoshkaLoss, or fit a Matryoshka adaptor on a frozen one.

    The recommended recipe (the README's training results): a plain fine-tune first, then an adaptor on it:
      mrl train --pairs pairs.jsonl --mine-negatives-from corpus.jsonl --no-matryoshka --epochs 5 --out models/control
      mrl train --model models/control --adaptor --pairs pairs.jsonl --mine-negatives-from corpus.jsonl
                --dims 384,256,128,64,32 --out models/mrl
    Logs the loss at each dim and, with --dev-beir, nDCG@10 at each dim every epoch (best epoch kept).
    Multi-GPU: accelerate launch -m mrl.cli train ... (or torchrun --nproc_per_node N -m mrl.cli train ...).
    """
    from mrl.data import load_beir, load_pairs, load_triplets
    from mrl.data.beir import load_corpus
    from mrl.model import embedding_dim, load_model
    from mrl.train.adaptor import AdaptorConfig
    from mrl.train.recipe import Mining, Recipe, fit, mine
    from mrl.train.trainer import TrainConfig, prepare_output

    config = TrainConfig(
        model=model,
        dims=_int_list(dims, "--dims"),
        loss=loss,
        matryoshka=matryoshka,
        dim_weights=[float(w) for w in dim_weights.split(",")] if dim_weights else None,
        n_dims_per_step=n_dims_per_step,
        epochs=epochs,
        batch_size=batch_size,
        mini_batch_size=mini_batch_size,
        learning_rate=lr,
        warmup_ratio=warmup_ratio,
        triplet_margin=triplet_margin,
        max_seq_length=max_seq_length,
        max_steps=max_steps,
        seed=seed,
        rotate=rotate,
        distill_weight=distill_weight,
    )
    if mine_negatives_from and not pairs:
        raise MrlError("--mine-negatives-from needs --pairs to mine for")
    if rotate_corpus and not rotate:
        raise MrlError("--rotate-corpus needs --rotate")
    if rotate and not resume and not (rotate_corpus or mine_negatives_from):
        raise MrlError("--rotate needs a corpus to fit the rotation on: give --rotate-corpus corpus.jsonl")
    if adaptor and not (adaptor_corpus or mine_negatives_from):
        raise MrlError("--adaptor needs unlabelled documents: give --adaptor-corpus corpus.jsonl")
    if orthogonal and not adaptor:
        raise MrlError("--orthogonal shapes the adaptor: add --adaptor")
    if adaptor and (rotate or distill_weight or not matryoshka or resume):
        raise MrlError("--adaptor trains on its own: drop --rotate, --distill-weight, --no-matryoshka and --resume")
    all_triplets = [
        t for path in triplets or [] for t in load_triplets(path, anchor_column, positive_column, negative_column)
    ]
    all_pairs = [p for path in pairs or [] for p in load_pairs(path, anchor_column, positive_column)]
    if not all_triplets and not all_pairs:
        raise MrlError("no training data: give --triplets and/or --pairs")
    dev = load_beir(dev_beir, dev_split, skip_empty=skip_empty) if dev_beir else None
    skipped: list = []
    corpus = load_corpus(mine_negatives_from, skip_empty, skipped) if mine_negatives_from else None
    rotation_corpus = load_corpus(rotate_corpus, skip_empty, skipped) if rotate_corpus else corpus
    unlabelled = load_corpus(adaptor_corpus, skip_empty, skipped) if adaptor_corpus else corpus
    if skipped or (dev and dev.skipped):
        _report_skipped(skipped + (dev.skipped if dev else []), dev.judgements_on_skipped if dev else [])
    base = load_model(model)
    config.validate(embedding_dim(base))
    adaptor_config = AdaptorConfig.like(config, steps=adaptor_steps, orthogonal=orthogonal) if adaptor else None
    if adaptor_config is not None:
        adaptor_config.validate(embedding_dim(base))
    if rotate and not resume:
        from mrl.vectors.rotation import check_rotation_sample

        assert rotation_corpus is not None
        check_rotation_sample(len(rotation_corpus), embedding_dim(base), "--rotate-corpus", "give a larger corpus")
    prepare_output(out, overwrite, resume)  # refuse before spending minutes on mining
    recipe = Recipe(config, adaptor_config, Mining(skip_top=mine_skip_top, margin=mine_margin, depth=mine_depth))
    extra = {}
    if corpus is not None:
        mined, counts = mine(base, all_pairs, corpus, recipe.mining)
        err.print(f"mined {len(mined)} negatives; skipped candidates: {counts}")
        all_triplets, all_pairs, extra = all_triplets + mined, [], {"mining": counts}
    err.print(f"training on {len(all_triplets)} triplets and {len(all_pairs)} pairs")
    if rotate and not resume:
        err.print(f"fitting the rotation on {len(rotation_corpus)} corpus vectors")
    meta = fit(
        recipe, out, all_triplets, all_pairs, unlabelled if adaptor else rotation_corpus, dev, model=base,
        resume=resume, extra_metadata=extra,
    )  # fmt: skip
    if adaptor:
        err.print(f"saved {out} (adaptor trained in {meta['train_seconds']:.0f} s)")
        _print_dev(meta)
        return
    err.print(f"saved {out} ({meta['train_seconds']:.0f} s; epochs: {meta['epoch_seconds']} s)")
    _print_dev(meta)


def _print_dev(meta: dict) -> None:
    final = meta["final_dev_metrics"] or {}
    raw = {k.split("_")[1]: round(v, 4) for k, v in final.items() if k.endswith("_ndcg@10") and "rotated" not in k}
    if raw:
        err.print(f"dev nDCG@10 per dim: {raw}")


LOCATION_HELP = (
    "Index: a folder, postgresql://user[:password]@host[:port]/database/table, qdrant://host:6333/collection, "
    "qdrant:///absolute/path/collection (qdrant-client local mode) or qdrant-edge:///absolute/path (Qdrant Edge)."
)

index_app = typer.Typer(no_args_is_help=True, help="Build and maintain a two-pass Matryoshka index.")
app.add_typer(index_app, name="index")


def _encode_documents(
    model_spec: str | None,
    documents,
    batch_size: int,
    cache_dir: Path | None,
    engine: str = "torch",
    check=None,
    chunk_rows: int | None = None,
):
    """Load the model and encode the documents; ``check(width)`` runs in between, before the long part.

    The vectors go to the embedding cache chunk by chunk and come back as a read-only memory map, so a corpus
    whose vectors exceed RAM can be indexed, and an interrupted encoding resumes (EmbeddingCache.encode_to_file).
    """
    import numpy as np

    from mrl.data.beir import texts_fingerprint
    from mrl.encode import EmbeddingCache
    from mrl.model import embedding_dim, load_model

    model = load_model(model_spec, backend=engine)
    if check is not None:
        check(embedding_dim(model))
    texts = {d.id: d.text for d in documents}
    path = EmbeddingCache(cache_dir).encode_to_file(
        model, texts_fingerprint(texts), list(texts.values()), batch_size=batch_size, chunk_rows=chunk_rows
    )
    return model, np.load(path, mmap_mode="r")


STORAGE_BACKENDS = ("embedded", "postgres", "qdrant", "qdrant-edge")  # --backend's meaning on index build until 0.4


@index_app.command("build")
def index_build(
    location: Annotated[
        str | None,
        typer.Argument(
            help=LOCATION_HELP + " The old --out/--dsn/--table/--url/--collection/--qdrant-path still work."
        ),
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="Documents: BEIR corpus.jsonl or JSONL/CSV/Parquet with id and text.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model folder or hub id (recorded in the index for queries).")] = (
        "default"
    ),
    prefix_dim: Annotated[
        str,
        typer.Option(
            help="Dims of the first-pass prefix, or auto: build at full width, then measure narrower prefixes and an "
            "exact scan on held-out sample queries and keep the fastest that reaches --target-recall (embedded "
            "index; the other backends build 64 dims under auto)."
        ),
    ] = "auto",
    ann: Annotated[
        str | None,
        typer.Option(
            help="First-pass engine of the embedded index: zvec (zvec's HNSW with prefetching: the default where zvec "
            "installs, hnsw on macOS on Intel), hnsw (faiss), ivf, flat, or vamana (Intel SVS's Vamana graph: "
            "pip install 'mrl\\[svs]')."
        ),
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option(
            help="First-pass codes: sq8 (1 byte/dim, the default), sq4 (4 bits/dim), fp16, fp32, or pq4 (ivf only: "
            "4-bit fast-scan PQ). With vamana, sq8 and sq4 are SVS's LVQ-8 and LVQ-4 (Intel CPUs only); zvec takes "
            "sq8, fp16, fp32. Embedded only."
        ),
    ] = None,
    store: Annotated[
        str,
        typer.Option(
            help="Rerank vectors: float32, float16, or int8 (a per-dim scale calibrated on the corpus, kept in the "
            "manifest; embedded only)."
        ),
    ] = "float32",
    keep_dims: Annotated[
        int | None,
        typer.Option(
            help="Store only the first D dims (after the rotation) and rerank on them: less disk for a quality "
            "floor. At least --prefix-dim; embedded only."
        ),
    ] = None,
    hnsw_m: Annotated[
        int, typer.Option(help="Graph degree M, for hnsw, zvec, PostgreSQL and Qdrant (vamana: 2M neighbours a node).")
    ] = 16,
    ef_construction: Annotated[
        int | None,
        typer.Option(help="HNSW efConstruction (default 80; zvec 200); vamana's build window (default 200)."),
    ] = None,
    nlist: Annotated[int | None, typer.Option(help="IVF lists (default about 4 x sqrt(n)); --ann ivf only.")] = None,
    target_recall: Annotated[
        float | None,
        typer.Option(
            help="Auto-tune shortlist and efSearch/nprobe (and under --prefix-dim auto the width) for this recall@10 "
            "against exact search; default 0.99 under --prefix-dim auto, else no tuning."
        ),
    ] = None,
    tune_queries: Annotated[
        Path | None,
        typer.Option(
            help="Queries to tune on instead of held-out documents: JSONL/CSV/Parquet with a 'text' column (BEIR "
            "queries.jsonl works), or a .npy matrix of query vectors."
        ),
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Id column (default _id, else id).")] = None,
    text_field: Annotated[str, typer.Option(help="Text column.")] = "text",
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.")] = 64,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Embedding cache folder (default ~/.cache/mrl/embeddings): the vectors are written there as they "
            "are made, and an interrupted encoding resumes from it."
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(help="Texts encoded and written to disk at a time; vectors an index build reads at a time.")
    ] = 4096,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate/--no-rotate",
            help="Store vectors in a learned basis whose first dims hold the most energy, so the prefix ranks like "
            "the full vector (every score unchanged).",
        ),
    ] = True,
    shards: Annotated[
        int | None,
        typer.Option(
            help="A folder: split the index into N shards, each document to the shard its id hashes to (serve them "
            "replicated with 'mrl serve --ray'). A Qdrant server: its shard number."
        ),
    ] = None,
    replicas: Annotated[int | None, typer.Option(help="Qdrant server: replication factor.")] = None,
    replica_dsn: Annotated[
        list[str] | None, typer.Option(help=REPLICA_HELP + " The build waits until they replay it.")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Encode and build the --shards on a Ray cluster: auto ($RAY_ADDRESS, or the cluster 'ray start "
            "--head' started here) or HOST:PORT. Ray Data encodes blocks of --chunk-rows texts on model actors; "
            "rerun the same command to resume. Needs pip install 'mrl[ray]'."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="--ray: encoder actors, each holding the model (default: one per node).")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="--ray: GPUs each encoder actor takes (0: CPU).")] = 0.0,
    skip_empty: Annotated[bool, typer.Option(help=SKIP_EMPTY_HELP)] = False,
    engine: Annotated[str, typer.Option("--backend", help=ENGINE_HELP)] = "torch",
    model_backend: Annotated[
        str | None, typer.Option("--model-backend", hidden=True, help="Deprecated: --backend.")
    ] = None,
    out: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: the LOCATION argument.")] = None,
    dsn: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: LOCATION postgresql://...")] = None,
    table: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: LOCATION postgresql://.../table")] = None,
    url: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: LOCATION qdrant://host:port/...")] = None,
    qdrant_path: Annotated[
        Path | None, typer.Option(hidden=True, help="Deprecated: LOCATION qdrant-edge://...")
    ] = None,
    collection: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: LOCATION qdrant://.../name")] = None,
) -> None:
    """Encode a corpus once and build a two-pass index at LOCATION: a first pass over the prefix, full vectors to
    rerank.

    By default (--prefix-dim auto) the prefix width is measured, not guessed: the build never answers slower than
    the same engine on the full vectors, and searches exactly where an exact scan is fastest.

    Examples:
      mrl index build idx/scifact --model models/scifact-mrl --corpus corpus.jsonl
      mrl index build idx/scifact --model models/scifact-mrl --corpus corpus.jsonl --prefix-dim 64
      mrl index build postgresql://mrl@localhost/search/docs --corpus corpus.jsonl --prefix-dim 128
      mrl index build qdrant://localhost:6333/docs --corpus corpus.jsonl --prefix-dim 128
      mrl index build qdrant-edge:///srv/idx/edge --corpus corpus.jsonl --prefix-dim 128
    """
    import numpy as np

    from mrl.data import load_documents
    from mrl.data.queries import check_query_width, load_queries
    from mrl.index import build_index
    from mrl.index.engines import DEFAULT_ANN, check_ann
    from mrl.index.interface import AUTO
    from mrl.index.locations import backend_of

    if model_backend is not None:
        err.print("--model-backend is deprecated and goes in mrl 0.4: use --backend")
        engine = model_backend
    if engine in STORAGE_BACKENDS:  # the storage flag of mrl <= 0.3
        location = _deprecated_location(engine, location, out, dsn, table, url, qdrant_path, collection)
        engine = "torch"
    elif any(v is not None for v in (out, dsn, table, url, qdrant_path, collection)):
        location = _deprecated_location("embedded", location, out, dsn, table, url, qdrant_path, collection)
    if location is None:
        raise MrlError("give the index LOCATION: a folder, postgresql://..., qdrant://... or qdrant-edge://...")
    if corpus is None:
        raise MrlError("--corpus is required: the documents to index")
    backend = backend_of(location)
    width = _prefix_dim(prefix_dim)
    if backend != "embedded" and width == AUTO:
        err.print(
            f"--prefix-dim auto measures widths on the embedded index only: {backend} builds the "
            f"{DATABASE_PREFIX_DIM}-dim prefix (pass --prefix-dim N to choose)"
        )
        width = DATABASE_PREFIX_DIM
    if target_recall is not None and not 0 < target_recall <= 1:
        raise MrlError(f"--target-recall must be in (0, 1], got {target_recall}")
    if chunk_rows < 1:
        raise MrlError(f"--chunk-rows must be at least 1, not {chunk_rows}")
    if keep_dims is not None and width != AUTO and keep_dims < width:
        raise MrlError(f"--keep-dims {keep_dims} must be at least --prefix-dim {width}")
    embedded = {"ann": ann, "quant": quant, "keep_dims": keep_dims, "nlist": nlist}
    given = [f"--{k.replace('_', '-')}" for k, v in embedded.items() if v is not None]
    if backend != "embedded" and (given or store == "int8"):
        raise MrlError(f"{(given or ['--store int8'])[0]} is for the embedded index; {backend} takes no such option")
    if backend not in ("qdrant", "embedded") and shards is not None:
        raise MrlError(f"--shards splits a folder or a Qdrant server's collection, not {backend}")
    if backend != "qdrant" and replicas is not None:
        serving = " (a sharded folder's replicas are set when serving it: mrl serve --ray --replicas N)"
        raise MrlError(
            f"--replicas is a Qdrant server's replication factor, not {backend}'s"
            + (serving if backend == "embedded" else "")
        )
    if ray is not None and (backend != "embedded" or shards is None):
        raise MrlError("--ray builds a sharded index folder: give a folder LOCATION and --shards N")
    if ray is None and (workers is not None or gpus_per_worker):
        raise MrlError("--workers and --gpus-per-worker size the encoding on a Ray cluster: add --ray")
    if shards is not None and backend == "embedded":
        from mrl.index.shards import check_shard_count

        check_shard_count(shards)
    if replica_dsn and backend != "postgres":
        raise MrlError(f"--replica-dsn names PostgreSQL hot standbys, not replicas of {backend}")
    queries = load_queries(tune_queries) if tune_queries is not None else None
    documents = load_documents(corpus, id_field, text_field, skip_empty=skip_empty)
    if documents.skipped:
        _report_skipped(documents.skipped)
    folder = Path(location)
    resuming = ray is not None and (folder / ".staging" / "plan.json").is_file()  # the same command resumes
    if backend == "embedded" and folder.exists() and any(folder.iterdir()) and not overwrite and not resuming:
        raise MrlError(f"{folder}: folder exists and is not empty (use --overwrite)")
    if ray is not None:
        _build_on_ray(
            folder, documents, model, queries, shards, ray, workers, gpus_per_worker, chunk_rows, batch_size,
            engine, overwrite, rotate, width, ann, quant, store, keep_dims, hnsw_m, ef_construction, nlist,
            target_recall,
        )  # fmt: skip
        return

    def before_encoding(model_width: int) -> None:  # the checks that need the model's width, before the long part
        if isinstance(queries, np.ndarray):
            check_query_width(queries, model_width, tune_queries)
        if backend == "embedded":  # the engine can run here, and the files fit, before an hour of encoding
            from mrl.index.build import check_free_space, estimate_bytes

            kind = ann or DEFAULT_ANN
            check_ann(kind, quant or "sq8", width if width != AUTO else keep_dims or model_width)
            text_bytes = sum(len(d.text) + len(d.id) for d in documents)
            # auto builds its widest first pass, then one narrower candidate beside it at a time
            first = width if width != AUTO else 2 * (keep_dims or model_width)
            needed = estimate_bytes(len(documents), model_width, first, store, keep_dims, text_bytes, kind)
            check_free_space(folder, needed)

    loaded, vectors = _encode_documents(
        model, documents, batch_size, cache_dir, engine, check=before_encoding, chunk_rows=chunk_rows
    )
    if queries is not None and not isinstance(queries, np.ndarray):
        from mrl.encode import encode_texts

        queries = encode_texts(loaded, queries, progress=False)
    index = build_index(
        location, vectors, documents, model=getattr(loaded, "mrl_source", model), loaded_model=loaded,
        prefix_dim=width, store=store, rotate=rotate, overwrite=overwrite, hnsw_m=hnsw_m,
        ef_construction=ef_construction, target_recall=target_recall, tune_queries=queries, report=err.print,
        **{k: v for k, v in embedded.items() if v is not None},
        **({"chunk_rows": chunk_rows} if backend == "embedded" else {}),
        **{k: v for k, v in (("shards", shards), ("replicas", replicas), ("standbys", replica_dsn)) if v},
    )  # fmt: skip
    err.print(f"built {index.location}: {index.count} documents")
    if index.tuned:
        _print_tuned(index.tuned)
    _print_stats(index.stats())
    index.close()


def _build_on_ray(
    folder: Path,
    documents: list,
    model: str,
    queries,
    shards: int,
    address: str,
    workers: int | None,
    gpus: float,
    block_rows: int,
    batch_size: int,
    engine: str,
    overwrite: bool,
    rotate: bool,
    width,
    ann: str | None,
    quant: str | None,
    store: str,
    keep_dims: int | None,
    hnsw_m: int,
    ef_construction: int | None,
    nlist: int | None,
    target_recall: float | None,
) -> None:
    """``mrl index build --shards N --ray ADDRESS``: encode on the cluster, build the shards there, print the result."""
    import numpy as np

    from mrl.cluster.build import build_on_ray
    from mrl.index import open_index
    from mrl.index.engines import DEFAULT_ANN
    from mrl.index.engines import engine as ann_engine

    if queries is not None and not isinstance(queries, np.ndarray):
        from mrl.encode import encode_texts
        from mrl.model import load_model

        queries = encode_texts(load_model(model, backend=engine), queries, progress=False)
    kind = ann or DEFAULT_ANN
    extra = {k: v for k, v in (("keep_dims", keep_dims), ("target_recall", target_recall)) if v is not None}
    build_on_ray(
        folder, documents, model=model, shards=shards, address=address, block_rows=block_rows,
        batch_size=batch_size, workers=workers, gpus=gpus, backend=engine, overwrite=overwrite, rotate=rotate,
        prefix_dim=width, ann=kind, ann_params=ann_engine(kind).params(hnsw_m, ef_construction, nlist),
        quant=quant or "sq8", store=store, tune_queries=queries, report=err.print, **extra,
    )  # fmt: skip
    index = open_index(folder)
    err.print(f"built {index.location}: {index.count} documents in {index.layout.shards} shards on Ray")
    _print_stats(index.stats())
    index.close()


def _deprecated_location(
    backend: str,
    location: str | None,
    out: Path | None,
    dsn: str | None,
    table: str | None,
    url: str | None,
    qdrant_path: Path | None,
    collection: str | None,
) -> str:
    """The LOCATION that mrl <= 0.3's storage flags name, with one line saying how to write it from now on."""
    if location is not None:
        raise MrlError("give the LOCATION argument or the old --out/--dsn/--table/--url/--collection flags, not both")
    if backend == "embedded":
        if out is None:
            raise MrlError("give the index LOCATION (a folder), or the old --out")
        made = str(out)
    elif backend == "postgres":
        dsn = dsn or os.environ.get("MRL_PG_DSN")
        if not (dsn and table):
            raise MrlError("--backend postgres needs --dsn (or $MRL_PG_DSN) and --table")
        made = f"{dsn.rstrip('/')}/{table}"
    else:
        from mrl.index.qdrant import QdrantIndex

        if backend == "qdrant" and not ((url or qdrant_path) and collection):
            raise MrlError("--backend qdrant needs --url (a server) or --qdrant-path (local mode), and --collection")
        if backend == "qdrant-edge" and not qdrant_path:
            raise MrlError("--backend qdrant-edge needs --qdrant-path (the shard folder)")
        made = QdrantIndex.location_for(url, qdrant_path, collection, edge=backend == "qdrant-edge")
    err.print(f"--backend/--out/--dsn/--table/--url/--collection/--qdrant-path are deprecated: write the location, "
              f"mrl index build {_redacted(made)} ...")  # fmt: skip
    return made


def _redacted(location: str) -> str:
    from mrl.index.postgres import redact

    return redact(location) if location.startswith(("postgresql://", "postgres://")) else location


DATABASE_PREFIX_DIM = 64  # what --prefix-dim auto builds on a database backend, which cannot measure widths


def _prefix_dim(spec: str) -> int | str:
    """--prefix-dim: 'auto' or a positive whole number."""
    from mrl.index.interface import AUTO

    if spec.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(spec)
    except ValueError:
        value = 0
    if value < 1:
        raise MrlError(f"--prefix-dim must be a positive whole number or auto, not '{spec}'")
    return value


def _print_tuned(tuned: dict) -> None:
    """The tuner's choice in one line, then every setting it measured."""
    from rich.table import Table

    from mrl.eval.tables import console

    err.print(f"tuned: {tuned['choice']}" if "choice" in tuned else f"tuned: {tuned}")
    adaptive = tuned.get("adaptive")
    if adaptive and adaptive.get("margin") is not None:
        err.print(
            f"adaptive width (--adaptive): middle width {adaptive['width']}, margin {adaptive['margin']}: recall "
            f"{adaptive['recall']:.4f}, {adaptive['widened_share']:.0%} of queries widened, "
            f"{adaptive['rerank_bytes_ratio_vs_fixed']:.2f}x the fixed rerank's bytes"
        )
    elif adaptive:
        err.print(f"adaptive width: not calibrated ({adaptive['reason']})")
    rows = tuned.get("table")
    if not rows:
        return
    chosen = (tuned.get("prefix_dim"), tuned.get("ann_search"), tuned.get("shortlist"))
    exact = tuned.get("exact")
    table = Table(title=f"settings measured on {tuned['sample_queries']} sample {tuned['sample_source']}")
    for col in ("width", "beam", "k'", f"recall@{tuned['k']}", "QPS single", "QPS batch", ""):
        table.add_column(col, justify="right")
    for r in rows:
        mark = (r["width"] == "exact") if exact else (r["width"], r["ann_search"], r["shortlist"]) == chosen
        table.add_row(
            str(r["width"]),
            str(r["ann_search"] if r["ann_search"] is not None else "-"),
            str(r["shortlist"] if r["shortlist"] is not None else "-"),
            f"{r['recall']:.4f}",
            f"{r['qps_single']:,.0f}" if r["qps_single"] else "not reached",
            f"{r['qps_batch']:,.0f}" if r["qps_batch"] else "-",
            "chosen" if mark else "",
        )
    console().print(table)


def _print_stats(stats: dict) -> None:
    from rich.table import Table

    from mrl.eval.tables import console

    table = Table(title=f"index {stats['path']}", show_header=False)
    for key, value in stats.items():
        if key not in ("tuned", "parts", "reads", "per_shard"):
            table.add_row(key, str(value))
    for shard in stats.get("per_shard", []):  # a sharded index: each shard's share
        replica = shard.get("replica")
        where = f", replica pid {replica['pid']} on node {replica['node'][:8]}" if replica else ""
        share = f"{shard['documents']:,} documents, {shard['ram_bytes']:,} bytes in RAM{where}"
        table.add_row(f"shard {shard['shard']}", share)
    if "reads" in stats:  # a PostgreSQL index with standbys: reads served by each server
        table.add_row("reads: primary", str(stats["reads"]["primary"]))
        for name, standby in stats["reads"]["standbys"].items():
            state = "serving" if standby["serving"] else "left out (unreachable)"
            table.add_row(f"reads: standby {name}", f"{standby['reads']} ({state})")
    for part in stats.get("parts", []):  # hot (held in RAM by a search) against cold (read from disk)
        table.add_row(f"{part['where']}: {part['part']}", f"{part['bytes']:,} bytes")
    tuned = stats.get("tuned")
    if tuned:
        table.add_row("tuned", repr({k: v for k, v in tuned.items() if k not in ("table", "finalists", "choice")}))
        table.add_row("tuning chose", tuned.get("choice", "-"))
    console().print(table)


@index_app.command("add")
def index_add(
    location: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    file: Annotated[Path, typer.Argument(help="Documents to add (JSONL/CSV/Parquet with id and text).")],
    upsert: Annotated[bool, typer.Option(help="Replace documents whose id exists instead of refusing.")] = False,
    id_field: Annotated[str | None, typer.Option(help="Id column.")] = None,
    text_field: Annotated[str, typer.Option(help="Text column.")] = "text",
    skip_empty: Annotated[bool, typer.Option(help=SKIP_EMPTY_HELP)] = False,
) -> None:
    """Add (or with --upsert, add or replace) documents atomically: all become visible at once, or none."""
    from mrl.data import load_documents
    from mrl.index import open_index

    documents = load_documents(file, id_field, text_field, skip_empty=skip_empty)
    if documents.skipped:
        _report_skipped(documents.skipped)
    index = open_index(location)
    count = index.upsert(documents) if upsert else index.add(documents)
    err.print(f"{'upserted' if upsert else 'added'} {count} documents; index holds {index.count}")
    index.close()  # flushes what a database backend buffers


@index_app.command("delete")
def index_delete(
    location: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    ids: Annotated[str, typer.Option(help="Comma-separated document ids.")],
    missing_ok: Annotated[
        bool, typer.Option(help="Delete the ids that exist and pass over the rest (by default all must exist).")
    ] = False,
) -> None:
    """Delete documents by id (all ids must exist, and nothing changes otherwise, unless --missing-ok)."""
    from mrl.index import open_index

    id_list = [i.strip() for i in ids.split(",") if i.strip()]
    if not id_list:
        raise MrlError("--ids: no ids given")
    index = open_index(location)
    count = index.delete(id_list, missing_ok=missing_ok)
    err.print(f"deleted {count}; index holds {index.count}")
    index.close()


@index_app.command("create")
def index_create(
    location: Annotated[str, typer.Argument(help="Index folder to create (an embedded index).")],
    model: Annotated[str, typer.Option(help="Model folder or hub id (recorded in the index for queries).")] = (
        "default"
    ),
    prefix_dim: Annotated[int | None, typer.Option(help="Dims of the first-pass prefix (default: full width).")] = None,
    ann: Annotated[str | None, typer.Option(help="First-pass engine (default: zvec where it installs).")] = None,
    quant: Annotated[str, typer.Option(help="First-pass codes: sq8, sq4, fp16, fp32 (see index build).")] = "sq8",
    store: Annotated[str, typer.Option(help="Rerank vectors: float32 or float16.")] = "float32",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
) -> None:
    """Create an empty index to fill with `mrl index add` (or the HTTP API, or a framework's store).

    With no vectors to learn from, it stores them unrotated and builds its first pass with its first documents;
    once it is filled, `mrl index tune LOCATION --prefix-dim auto` measures the prefix width.
    """
    from mrl.index import Index
    from mrl.index.engines import DEFAULT_ANN

    index = Index.create(
        location, model=model, prefix_dim=prefix_dim, ann=ann or DEFAULT_ANN, quant=quant, store=store,
        overwrite=overwrite,
    )  # fmt: skip
    err.print(f"created {index.location}: empty, {index.full_dim} dims, first pass over {index.prefix_dim}")
    index.close()


@index_app.command("stats")
def index_stats(location: Annotated[str, typer.Argument(help=LOCATION_HELP)]) -> None:
    """Size, dims, settings, tuned values (with every setting the tuner measured), RAM and disk use."""
    from mrl.index import open_index

    stats = open_index(location).stats()
    _print_stats(stats)
    if stats.get("tuned"):
        _print_tuned(stats["tuned"])


@index_app.command("tune")
def index_tune(
    location: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    target_recall: Annotated[float, typer.Option(help="Recall@k against exact full-dim search to reach.")] = 0.99,
    k: Annotated[int, typer.Option("-k", help="k of recall@k.")] = 10,
    sample: Annotated[int, typer.Option(help="Documents used as sample queries (without --queries).")] = 200,
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            "--tune-queries",
            help="Real queries to tune on: JSONL/CSV/Parquet with a 'text' column, or a .npy matrix of query "
            "vectors. Better than held-out documents.",
        ),
    ] = None,
    prefix_dim: Annotated[
        str | None,
        typer.Option(
            help="Also re-pick the prefix width (embedded index): auto measures every width and an exact scan, N "
            "rebuilds the first pass at N dims. Default: keep the width."
        ),
    ] = None,
) -> None:
    """Pick the fastest shortlist k' and efSearch/nprobe (and with --prefix-dim, the width) that reach the target.

    The choice and every setting measured are stored with the index; `mrl index stats` shows them.
    """
    from mrl.data.queries import check_query_width, load_queries
    from mrl.index import open_index
    from mrl.index.interface import AUTO
    from mrl.index.tuning import tune

    widths = None
    if prefix_dim is not None:
        width = _prefix_dim(prefix_dim)
        widths = AUTO if width == AUTO else [width]
    loaded = load_queries(queries) if queries is not None else None
    index = open_index(location)
    vectors = None
    if isinstance(loaded, list):
        vectors = index.encode(loaded)
    elif loaded is not None:
        check_query_width(loaded, index.full_dim, queries)
        vectors = loaded
    tuned = tune(index, target_recall, k=k, sample=sample, queries=vectors, widths=widths, report=err.print)
    _print_tuned(tuned)


@app.command("search")
def search_cmd(
    location: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    query: Annotated[list[str], typer.Argument(help="One or more query texts.")],
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    shortlist: Annotated[int | None, typer.Option(help="First-pass candidates k' (default: tuned, else 10 x k).")] = (
        None
    ),
    ann_search: Annotated[
        int | None, typer.Option(help="efSearch (hnsw, zvec), nprobe (ivf) or search window (vamana).")
    ] = None,
    target_recall: Annotated[
        float | None, typer.Option(help="Tune k' and efSearch/nprobe for this recall first (stored in the index).")
    ] = None,
    funnel: Annotated[
        str | None, typer.Option(help="Rerank stages, e.g. 64,128,full (first must be the index's prefix dim).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    engine: Annotated[str, typer.Option("--backend", "--model-backend", help=ENGINE_HELP)] = "torch",
    io: Annotated[str, typer.Option(help=IO_HELP)] = "auto",
    replica_dsn: Annotated[list[str] | None, typer.Option(help=REPLICA_HELP)] = None,
    filter_json: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='Metadata filter as JSON, in the Chroma / MongoDB "where" shape: \'{"source": "pubmed"}\', '
            '\'{"year": {"$gte": 2020}}\'; operators $eq $ne $gt $gte $lt $lte $in $nin $exists, $and $or $not.',
        ),
    ] = None,
    mmr: Annotated[
        float | None,
        typer.Option(
            help="Pick the k hits by maximal marginal relevance among --fetch-k, with this lambda (1: relevance "
            "only, 0: diversity only)."
        ),
    ] = None,
    fetch_k: Annotated[int, typer.Option(help="Candidates --mmr picks from.")] = 20,
    adaptive: Annotated[
        bool,
        typer.Option(
            help="Adaptive width: score the candidates at a middle width and read the full vectors only of those "
            "it leaves in doubt, with the margin 'mrl index tune' calibrated; prints what each query read.",
        ),
    ] = False,
) -> None:
    """Search an index: prefix ANN shortlist, then exact rerank on the full vectors.

    Examples:
      mrl search idx/scifact "does vitamin D prevent fractures" -k 10 --funnel 64,128,full
      mrl search idx/scifact "vitamin D" --filter '{"year": {"$gte": 2020}}' --mmr 0.5
      mrl search idx/scifact "vitamin D" --adaptive
    """
    import json as jsonlib

    from rich.table import Table

    from mrl.eval.tables import console
    from mrl.index import open_index
    from mrl.index.tuning import tune

    index = open_index(location, io=io, standbys=replica_dsn or ())
    if engine != "torch":
        index.use_backend(engine)
    if target_recall is not None:
        current = index.tuned or {}
        if current.get("target_recall") != target_recall or current.get("k") != k:
            tune(index, target_recall, k=k)
    from mrl.index.filters import parse_filter

    where = parse_filter(filter_json)  # a malformed filter fails before the model loads
    stages = _funnel(funnel, index.prefix_dim, index.full_dim) if funnel else None
    if adaptive and (stages or mmr is not None):
        raise MrlError("--adaptive chooses the rerank width per query: drop --funnel and --mmr")
    if mmr is not None:
        if stages or shortlist or ann_search:
            raise MrlError(
                "--mmr picks among the --fetch-k best of the tuned search: drop --funnel, --shortlist, --ann-search"
            )
        results = [index.max_marginal_relevance(q, k=k, fetch_k=fetch_k, lambda_mult=mmr, filter=where) for q in query]
    else:
        results = index.search(
            query, k=k, shortlist=shortlist, ann_search=ann_search, funnel=stages, filter=where, adaptive=adaptive
        )
    t = index.last_timings
    widths = t.widths or [None] * len(query)
    if as_json:
        answer = {
            "results": [[h.__dict__ for h in hits] for hits in results],
            "timings_ms": {"encode": t.encode * 1e3, "shortlist": t.shortlist * 1e3, "rerank": t.rerank * 1e3},
        }
        if t.widths is not None:
            answer["widths"] = [w.as_dict() for w in t.widths]
        print(jsonlib.dumps(answer, indent=2))
        return
    for q, hits, used in zip(query, results, widths, strict=True):
        read = (
            f"; {used.dims} dims, {used.widened} of {used.candidates} read in full, {used.rerank_bytes:,} bytes"
            if used
            else ""
        )
        table = Table(
            title=f"{q}  (encode {t.encode * 1e3:.1f} ms, shortlist {t.shortlist * 1e3:.1f} ms, "
            f"rerank {t.rerank * 1e3:.1f} ms{read})"
        )
        for col in ("#", "id", "score", "text"):
            table.add_column(col)
        for rank, h in enumerate(hits, 1):
            table.add_row(str(rank), h.id, f"{h.score:.4f}", (h.text or "")[:100])
        console().print(table)


def _funnel(spec: str, prefix_dim: int, full_dim: int) -> list[int]:
    try:
        stages = [full_dim if s.strip() == "full" else int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        stages = []
    if len(stages) < 2 or stages[0] != prefix_dim or stages[-1] != full_dim or stages != sorted(stages):
        raise MrlError(
            f"--funnel must rise from the prefix dim {prefix_dim} to full ({full_dim}), e.g. {prefix_dim},128,full"
        )
    return stages[1:-1]


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("serve")
def serve_cmd(
    location: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --api-key-file.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File of API keys (sha256:<hex> lines from 'mrl keys create', or raw keys).")
    ] = None,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.")] = 100,
    max_text_chars: Annotated[int, typer.Option(help="Longest query text accepted.")] = 2000,
    max_batch: Annotated[int, typer.Option(help="Most queries per search request.")] = 64,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1_000_000,
    engine: Annotated[str, typer.Option("--backend", "--model-backend", help=ENGINE_HELP)] = "torch",
    io: Annotated[str, typer.Option(help=IO_HELP)] = "auto",
    replica_dsn: Annotated[list[str] | None, typer.Option(help=REPLICA_HELP)] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Serve a sharded folder on a Ray cluster (auto or HOST:PORT): each shard a Ray Serve deployment of "
            "--replicas replicas, this process the router (same HTTP API). Needs pip install 'mrl[ray]'."
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(help="--ray: replicas of each shard.")] = 1,
    retry_window: Annotated[
        float,
        typer.Option(
            help="--ray: seconds a shard may have no live replica (Ray replacing one) before a request fails with "
            "503 naming the shard."
        ),
    ] = 30.0,
) -> None:
    """Serve an index over HTTP: POST /search, POST /documents, DELETE /documents/{id}, /health, /stats,
    /metrics (Prometheus), OpenAI-compatible POST /v1/embeddings and GET /v1/models, OpenAPI docs at /docs,
    and a search page at /.

    A sharded folder (mrl index build --shards N) is served by one router over its shards: in this process, or
    with --ray on a Ray cluster as --replicas replicas of each shard.

    Examples:
      mrl serve idx/scifact --port 8000 --api-key-file keys.txt
      mrl serve idx/big --ray auto --replicas 2
    """
    import uvicorn

    from mrl.index import open_index
    from mrl.index.shards import is_sharded
    from mrl.serve import Limits, create_app
    from mrl.serve.auth import load_key_hashes

    hashes = load_key_hashes(api_key_file) if api_key_file else None
    if hashes is None and host not in LOOPBACK:
        raise MrlError(f"refusing to serve on {host} without --api-key-file (without keys mrl binds to loopback only)")
    if ray is None and (replicas != 1 or retry_window != 30.0):
        raise MrlError("--replicas and --retry-window place shards on a Ray cluster: add --ray")
    if ray is not None:
        if not is_sharded(location):
            raise MrlError(f"--ray serves a sharded folder (mrl index build --shards N); {location} is not one")
        from mrl.cluster.serving import deploy, undeploy

        index = deploy(location, replicas=replicas, address=ray, io=io, retry_window_s=retry_window)
    else:
        index = open_index(location, io=io, standbys=replica_dsn or ())
    if engine != "torch":
        index.use_backend(engine)
    _ = index.model  # load before accepting requests, not on the first one
    limits = Limits(max_k=max_k, max_text_chars=max_text_chars, max_batch=max_batch, max_body_bytes=max_body_bytes)
    if hashes is None:
        err.print("no API keys: serving on loopback only")
    err.print(f"serving {index.location} ({index.count} documents) on http://{host}:{port}/")
    try:
        uvicorn.run(create_app(index, hashes, limits), host=host, port=port, log_level="warning")
    finally:
        if ray is not None:
            undeploy(index)  # the shards' replicas go with the router; the cluster keeps running


keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys for 'mrl serve'.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(file: Annotated[Path, typer.Argument(help="Key file to append the new key's hash to.")]) -> None:
    """Create an API key: its SHA-256 hash is appended to FILE, the key itself is printed once."""
    from mrl.serve.auth import new_key

    print(new_key(file))


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="TOML config (see configs/scifact-quick.toml).")],
    reports_dir: Annotated[Path, typer.Option(help="Where reports/<name>/ is written.")] = Path("reports"),
) -> None:
    """The whole job from one config: train (control and Matryoshka), evaluate base/control/Matryoshka at every
    dim, build and benchmark the two-pass index, write reports/<name>/report.md, report.json and plots.

    Finished stages whose inputs did not change are skipped, so an interrupted run resumes.
    Example: mrl run configs/scifact-quick.toml
    """
    from mrl.pipeline.config import load_config
    from mrl.pipeline.stages import Pipeline

    cfg = load_config(config)
    report = Pipeline(cfg, reports_dir, err).run()
    out = reports_dir / cfg.name
    from rich.markdown import Markdown

    from mrl.eval.tables import console

    console().print(Markdown((out / "report.md").read_text()))
    err.print(f"wrote {out}/report.md, report.json and plots ({sum(report['stage_seconds'].values()):.0f} s of stages)")


@app.command("export")
def export_cmd(
    model_dir: Annotated[str, typer.Argument(help="A model folder, or 'default' (then --out is needed).")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (onnx/model.onnx in the folder).")] = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: also onnx/model_qint8.onnx (int8 weights and activations, a scale per 128 inputs).",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write a copy of the model folder here and export into it.")] = None,
) -> None:
    """Export a model for ONNX Runtime, then use it with --backend onnx (or onnx-int8) on eval, search and serve.

    Example: mrl export models/my-mrl --onnx --quantize int8
    """
    from mrl.model import load_model
    from mrl.model.onnx import export_onnx

    if not onnx:
        raise MrlError("say what to export: --onnx")
    if quantize not in (None, "int8"):
        raise MrlError(f"--quantize must be int8, not '{quantize}'")
    folder = Path(model_dir)
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise MrlError(f"{out}: folder exists and is not empty")
        load_model(model_dir).save(str(out))
        folder = out
    elif not folder.is_dir():
        raise MrlError(f"{model_dir}: not a model folder (give --out to export a copy of it)")
    for path in export_onnx(load_model(str(folder), device="cpu"), folder, quantize):
        err.print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")


@app.command("push")
def push_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A trained model folder (mrl train's --out).")],
    repo_id: Annotated[str, typer.Argument(help="Hugging Face repo, e.g. my-org/scifact-mrl.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
) -> None:
    """Upload a model folder, with its model card (per-dim quality, recommended truncate_dim), to the Hugging Face hub.

    The token comes from $HF_TOKEN or `huggingface-cli login`. Example: mrl push models/my-mrl my-org/my-mrl
    """
    from mrl.model import METADATA_FILE, resolve_model
    from mrl.model.card import write_model_card

    if not model_dir.is_dir():
        raise MrlError(f"{model_dir}: model folder not found")
    resolve_model(str(model_dir))  # a Sentence-Transformers folder, or a clear error
    if (model_dir / METADATA_FILE).is_file():
        write_model_card(model_dir)  # the card matches mrl.json at upload time
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        url = api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, ignore_patterns=["checkpoints/*"])
    except Exception as exc:  # no network, offline mode, no token, no rights: one line, not a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MrlError(
            f"could not push {model_dir} to the Hugging Face hub as {repo_id}: {type(exc).__name__}: {reason}"
        ) from None
    err.print(f"pushed {model_dir} to {url}")


def _print_mteb(result: dict) -> None:
    from rich.table import Table

    from mrl.eval.tables import console, short_name

    table = Table(title=f"nDCG@10 by mteb (ignore_identical_ids={result['ignore_identical_ids']})")
    for col in ("model", "task", "dim", "mteb", "mrl"):
        table.add_column(col, justify="left" if col in ("model", "task") else "right")
    for model in result["models"]:
        runs = [(result["dataset"], model.get("mteb"), model.get("dims", {}))]
        if "mteb_task" in model:
            runs.append((model["mteb_task"]["name"], model["mteb_task"]["dims"], {}))
        for task, per_dim, ours in runs:
            for label, m in (per_dim or {}).items():
                mine = ours.get(label, {}).get("ndcg@10")
                row = [short_name(model["model"]), task, label, f"{m['ndcg@10']:.4f}"]
                table.add_row(*row, f"{mine:.4f}" if mine is not None else "-")
    console().print(table)


# library parameters whose flag is not --<name with dashes>
FLAGS = {
    "k": "-k",
    "widths": "--prefix-dim",
    "standbys": "--replica-dsn",
    "location": "LOCATION",
    "learning_rate": "--lr",
}
PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def as_flags(message: str) -> str:
    """A library error, which names parameters in backticks (`prefix_dim`), as the CLI's flags (--prefix-dim)."""
    return PARAMETER.sub(lambda m: FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


def main() -> None:
    """Entry point: user errors print one line and exit 2; --debug shows the traceback."""
    debug = "--debug" in sys.argv
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.simplefilter("default", UserWarning)
    try:
        code = app(standalone_mode=False)  # an exit code comes back here, Ctrl-C's 130 among them
    except MrlError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {as_flags(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
    if code == 130:
        err.print("aborted")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
