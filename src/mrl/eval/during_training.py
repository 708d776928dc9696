"""Dev-set evaluation during training: retrieval quality at every Matryoshka dim from one encoding."""

from __future__ import annotations

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from mrl.data import BeirDataset
from mrl.encode import encode_texts
from mrl.eval.metrics import retrieval_metrics
from mrl.eval.retrieval import corpus_rotation, exact_search
from mrl.vectors.prefix import prefix


class MatryoshkaRetrievalEvaluator(SentenceEvaluator):
    """nDCG@10 / Recall / MRR@10 at each dim; the corpus is encoded once per call, not once per dim.

    sentence-transformers' ``InformationRetrievalEvaluator`` with ``truncate_dim`` re-encodes the
    corpus for every dim; on a CPU that multiplies dev time by the number of dims. The primary
    metric is the mean nDCG@10 over the dims, so model selection does not favour the full dim only.
    """

    def __init__(self, dataset: BeirDataset, dims: list[int], name: str = "dev", batch_size: int = 64):
        super().__init__()
        self.dataset = dataset
        self.dims = sorted(dims, reverse=True)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = "mean_ndcg@10"
        self.history: list[dict[str, float]] = []
        # also nDCG@10 of rotated prefixes (dim<d>_rotated_ndcg@10), e.g. for the final model card; model
        # selection stays on the raw prefixes
        self.rotate = False

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        doc_ids = list(self.dataset.corpus)
        docs = encode_texts(model, [self.dataset.corpus[d] for d in doc_ids], self.batch_size, progress=False)
        qids = list(self.dataset.queries)
        queries = encode_texts(model, [self.dataset.queries[q] for q in qids], self.batch_size, progress=False)
        metrics: dict[str, float] = {}
        for dim in self.dims:
            run = exact_search(prefix(queries, dim), prefix(docs, dim), doc_ids, 100, qids)
            for key, value in retrieval_metrics(self.dataset.qrels, run).items():
                metrics[f"dim{dim}_{key}"] = value
        metrics["mean_ndcg@10"] = float(np.mean([metrics[f"dim{d}_ndcg@10"] for d in self.dims]))
        if self.rotate and len(doc_ids) >= docs.shape[1]:  # fewer vectors than dims do not determine a rotation
            rotation, _ = corpus_rotation(docs)
            docs_r, queries_r = docs @ rotation.T, queries @ rotation.T
            for dim in self.dims:
                run = exact_search(prefix(queries_r, dim), prefix(docs_r, dim), doc_ids, 100, qids)
                metrics[f"dim{dim}_rotated_ndcg@10"] = retrieval_metrics(self.dataset.qrels, run)["ndcg@10"]
        self.history.append({"epoch": epoch, "steps": steps, **metrics})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
