"""Per-dim quality: exact cosine retrieval and STS Spearman at every Matryoshka prefix.

The corpus is encoded once at full width (and cached); each dim is a re-normalized slice of that
matrix, so evaluating five dims costs one encoding, not five.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from mrl.data import BeirDataset, StsData
from mrl.encode import EmbeddingCache, encode_texts, prefix
from mrl.metrics import Run, retrieval_metrics, run_from_rows
from mrl.model import embedding_dim

FULL = "full"


def parse_dims(spec: str) -> list[int | str]:
    """``"64,128,256,full"`` -> ``[64, 128, 256, "full"]``; order kept, duplicates removed."""
    dims: list[int | str] = []
    for part in spec.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == FULL:
            value: int | str = FULL
        else:
            try:
                value = int(part)
            except ValueError:
                raise ValueError(f"dim '{part}' is not a positive integer or 'full'") from None
            if value <= 0:
                raise ValueError(f"dim '{part}' is not a positive integer")
        if value not in dims:
            dims.append(value)
    if not dims:
        raise ValueError("no dims given")
    return dims


def resolve_dims(dims: list[int | str], width: int) -> list[tuple[str, int]]:
    """Label/width pairs; 'full' is the model's width. A dim equal to the width is reported as 'full'."""
    out: list[tuple[str, int]] = []
    for d in dims:
        size = width if d == FULL else int(d)
        if size > width:
            raise ValueError(f"dim {size} is larger than the model's embedding width ({width})")
        label = FULL if size == width else str(size)
        if label not in [lbl for lbl, _ in out]:
            out.append((label, size))
    return out


def exact_search(queries: np.ndarray, docs: np.ndarray, doc_ids: list[str], k: int, query_ids: list[str]) -> Run:
    """Brute-force cosine top-k (inputs already unit-normalized); chunks queries to bound memory."""
    k = min(k, docs.shape[0])
    run: Run = {}
    for start in range(0, queries.shape[0], 256):
        scores = queries[start : start + 256] @ docs.T
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        run.update(run_from_rows(idx, np.take_along_axis(scores, idx, axis=1), doc_ids, query_ids[start : start + 256]))
    return run


@dataclass
class ModelEvaluation:
    model: str
    full_dim: int
    dims: dict[str, dict[str, float]] = field(default_factory=dict)
    encode_seconds: float | None = None
    cached: bool = False

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "full_dim": self.full_dim,
            "dims": self.dims,
            "corpus_embeddings_cached": self.cached,
        }


def evaluate_retrieval(
    model,
    dataset: BeirDataset,
    dims: list[int | str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    progress: bool = True,
    ignore_identical_ids: bool = True,
    model_name: str | None = None,
) -> ModelEvaluation:
    """nDCG@10, Recall@10/100, MRR@10 and bytes/vector at each dim, plus % of full-dim nDCG kept.

    ``ignore_identical_ids`` drops a document whose id equals the query id, as BEIR and MTEB do.
    """
    width = embedding_dim(model)
    labelled = resolve_dims(dims, width)
    doc_ids = list(dataset.corpus)
    texts = [dataset.corpus[i] for i in doc_ids]
    cache = cache or EmbeddingCache()
    doc_emb, cached = cache.get_or_encode(
        model, dataset.corpus_fingerprint(), texts, batch_size=batch_size, progress=progress
    )
    query_ids = list(dataset.queries)
    query_emb = encode_texts(model, [dataset.queries[q] for q in query_ids], batch_size, progress=False)

    result = ModelEvaluation(model_name or getattr(model, "mrl_source", str(model)), width, cached=cached)
    for label, size in labelled:
        run = exact_search(prefix(query_emb, size), prefix(doc_emb, size), doc_ids, 101, query_ids)
        metrics = retrieval_metrics(dataset.qrels, run, ignore_identical_ids)
        metrics["bytes_per_vector"] = size * 4
        metrics["dim"] = size
        result.dims[label] = metrics
    add_retained(result.dims, "ndcg@10")
    return result


def evaluate_sts(model, data: StsData, dims: list[int | str], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Spearman correlation (x100, as MTEB reports it) of cosine similarity with gold scores, per dim."""
    width = embedding_dim(model)
    a = encode_texts(model, data.sentences1, batch_size, progress=False)
    b = encode_texts(model, data.sentences2, batch_size, progress=False)
    out: dict[str, dict[str, float]] = {}
    for label, size in resolve_dims(dims, width):
        cos = np.sum(prefix(a, size) * prefix(b, size), axis=1)
        out[label] = {"spearman": float(spearmanr(cos, data.scores).statistic * 100), "dim": size}
    add_retained(out, "spearman")
    return out


def add_retained(per_dim: dict[str, dict], metric: str) -> None:
    """Add ``retained_<metric>``: each dim's score as a percentage of the full-width score."""
    full = per_dim.get(FULL, {}).get(metric)
    for values in per_dim.values():
        values[f"retained_{metric}"] = 100.0 * values[metric] / full if full else None
