"""The same per-dim evaluation through MTEB, so mrl's numbers line up with the MTEB leaderboard.

Why: users compare models on MTEB. ``mrl eval --mteb`` runs the evaluated BEIR folder through the ``mteb``
package (2.x) as a custom retrieval task, offline, once per dim (sentence-transformers' ``truncate_dim``),
and reports mteb's scores beside mrl's own; ``--mteb-task SciFact`` runs a named MTEB task instead (it
downloads the task's data, so it needs a network). The two conventions differ on one point: MTEB's
retrieval tasks keep a document whose id equals the query id (``ignore_identical_ids=False``), BEIR and
mrl drop it. mrl passes its own setting to the task and records it, so both evaluations score the same
thing; the tests check that mteb's nDCG@10 equals mrl's to 1e-4.

Example::

    from mrl.data import load_beir
    from mrl.model import load_model
    from mrl.eval.mteb import local_task, run_mteb

    task = local_task(load_beir("scifact", "test"), ignore_identical_ids=True)
    run_mteb(load_model("default"), task, [64, 384])   # {"64": {"ndcg@10": ...}, "full": {...}}
"""

from __future__ import annotations

from mrl.data import BeirDataset
from mrl.errors import MrlError
from mrl.eval.retrieval import resolve_dims

# mteb's score names -> mrl's
METRICS = {"ndcg_at_10": "ndcg@10", "recall_at_10": "recall@10", "recall_at_100": "recall@100", "mrr_at_10": "mrr@10"}


def local_task(dataset: BeirDataset, ignore_identical_ids: bool):
    """A BEIR dataset already loaded by mrl, as an MTEB retrieval task (no download)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    split = dataset.split

    class LocalBeirRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=f"mrl-{dataset.name}",
            dataset={"path": f"local/{dataset.name}", "revision": dataset.corpus_fingerprint()},
            description=f"The local BEIR folder {dataset.name}, split {split}, as mrl loaded it.",
            reference=None,
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=[split],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation=None,
        )

        def load_data(self, **kwargs) -> None:
            # titles are already joined into the text, as mrl encodes documents
            corpus = Dataset.from_list([{"id": k, "text": v, "title": ""} for k, v in dataset.corpus.items()])
            queries = Dataset.from_list([{"id": k, "text": v} for k, v in dataset.queries.items()])
            self.dataset = {
                "default": {
                    split: {"corpus": corpus, "queries": queries, "relevant_docs": dataset.qrels, "top_ranked": None}
                }
            }
            self.data_loaded = True

    task = LocalBeirRetrieval()
    task.ignore_identical_ids = ignore_identical_ids
    return task


def named_task(name: str, ignore_identical_ids: bool | None = None):
    """An MTEB task by name (e.g. SciFact); its data comes from the Hugging Face hub."""
    import mteb

    try:
        task = mteb.get_task(name)
    except Exception as exc:
        raise MrlError(f"`mteb_task`: no MTEB task named '{name}' ({type(exc).__name__}: {exc})") from None
    if ignore_identical_ids is not None:
        task.ignore_identical_ids = ignore_identical_ids
    return task


def run_mteb(model, task, dims: list[int | str]) -> dict[str, dict[str, float]]:
    """mteb's retrieval metrics at each dim (``truncate_dim``), under mrl's metric names."""
    import mteb

    from mrl.model import embedding_dim

    out: dict[str, dict[str, float]] = {}
    saved = model.truncate_dim
    try:
        for label, size in resolve_dims(dims, embedding_dim(model)):
            model.truncate_dim = size
            try:
                result = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False)
            except Exception as exc:  # offline data download, a broken task: one line, not a traceback
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise MrlError(f"MTEB task {task.metadata.name} failed: {type(exc).__name__}: {reason}") from None
            scores = result.task_results[0].scores[task.metadata.eval_splits[0]][0]
            out[label] = {ours: float(scores[theirs]) for theirs, ours in METRICS.items() if theirs in scores}
            out[label]["dim"] = size
    finally:
        model.truncate_dim = saved
    return out
