"""The ``mrl`` command line: a thin layer over the library that turns user errors into one clear line."""

from __future__ import annotations

import logging
import os
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
err = Console(stderr=True)
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
) -> None:
    """Measure retrieval quality (nDCG@10, Recall@10/100, MRR@10) at each prefix dim, for one or more models.

    The corpus is encoded once per model at full width and cached; each dim is a re-normalized prefix.
    Example: mrl eval --model default --model models/scifact-mrl --beir ../shared/data/scifact --out r.json
    """
    from mrl.data import load_beir, load_sts
    from mrl.encode import EmbeddingCache
    from mrl.evaluate import evaluate_retrieval, evaluate_sts, parse_dims
    from mrl.model import check_dims, embedding_dim, load_model
    from mrl.report import plot_quality, print_table, retrieval_table, write_json

    if beir is None and sts is None:
        raise MrlError("give --beir (retrieval) and/or --sts (similarity) data to evaluate on")
    try:
        dim_list = parse_dims(dims)
    except ValueError as exc:
        raise MrlError(f"--dims: {exc}") from None
    if batch_size <= 0:
        raise MrlError("--batch-size must be positive")
    dataset = load_beir(beir, split) if beir else None
    sts_data = load_sts(sts) if sts else None
    if dataset:
        err.print(
            f"[dim]{dataset.name}/{split}: {dataset.counts['documents']} documents, "
            f"{dataset.counts['queries']} queries, {dataset.counts['judgements']} judgements[/dim]"
        )
    specs = model or ["default"]
    models = [load_model(spec) for spec in specs]  # load all first: a bad second model fails fast
    for m in models:
        check_dims(m, [embedding_dim(m) if d == "full" else int(d) for d in dim_list])

    result: dict = {"dataset": dataset.name if dataset else sts.name, "split": split, "models": []}
    if dataset:
        result["counts"] = dataset.counts
    cache = EmbeddingCache(cache_dir)
    for spec, m in zip(specs, models, strict=True):
        entry: dict = {"model": getattr(m, "mrl_source", spec), "full_dim": embedding_dim(m), "dims": {}}
        if dataset:
            err.print(f"[bold]evaluating[/bold] {spec}")
            try:
                evaluation = evaluate_retrieval(m, dataset, dim_list, cache=cache, batch_size=batch_size)
            except ValueError as exc:
                raise MrlError(str(exc)) from None
            entry = evaluation.to_json()
        if sts_data:
            entry["sts"] = evaluate_sts(m, sts_data, dim_list, batch_size=batch_size)
        result["models"].append(entry)

    if dataset:
        print_table(retrieval_table(result))
    if sts_data:
        _print_sts(result)
    if out:
        write_json(result, out)
        err.print(f"wrote {out}")
        if dataset:
            plot_path = plot_quality(result, plot or out.with_suffix(".png"))
            err.print(f"wrote {plot_path}")


def _print_sts(result: dict) -> None:
    from rich.table import Table

    from mrl.report import console, short_name

    table = Table(title="STS Spearman x100 by dim")
    for col in ("model", "dim", "Spearman", "% full"):
        table.add_column(col)
    for model in result["models"]:
        for label, m in model["sts"].items():
            kept = m.get("retained_spearman")
            table.add_row(short_name(model["model"]), label, f"{m['spearman']:.2f}", f"{kept:.1f}%" if kept else "-")
    console().print(table)


def main() -> None:
    """Entry point: user errors print one line and exit 2; --debug shows the traceback."""
    debug = "--debug" in sys.argv
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.simplefilter("default", UserWarning)
    try:
        app(standalone_mode=False)
    except MrlError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
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


if __name__ == "__main__":
    main()
