"""Per-dim quality: exact cosine retrieval and STS Spearman at every Matryoshka prefix.

The corpus is encoded once at full width (and cached); each dim is a re-normalized slice of that
matrix, so evaluating five dims costs one encoding, not five.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from mrl.data import BeirDataset, StsData
from mrl.encode import EmbeddingCache, encode_texts
from mrl.eval.metrics import Run, retrieval_metrics, run_from_rows
from mrl.model import embedding_dim
from mrl.vectors.prefix import prefix

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
    rotated: dict[str, dict[str, float]] | None = None  # the same metrics on prefixes of rotated vectors
    rotation: dict | None = None  # what the rotation was fitted on

    def to_json(self) -> dict:
        out = {
            "model": self.model,
            "full_dim": self.full_dim,
            "dims": self.dims,
            "corpus_embeddings_cached": self.cached,
        }
        if self.rotated is not None:
            out["rotated"] = self.rotated
            out["rotation"] = self.rotation
        return out


def corpus_rotation(vectors: np.ndarray, sample: int | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The rotation mrl's index would store these vectors in, fitted on all rows or a random ``sample``.

    It is what any short prefix can get for free: no training, only the corpus (mrl.index.rotation).
    Returns the matrix and a record of what it was fitted on.
    """
    from mrl.vectors.rotation import check_rotation_sample, fit_rotation

    n, dim = vectors.shape
    if sample is not None:
        if sample <= 0:
            raise ValueError(f"--rotate-sample: {sample} is not a positive number of vectors")
        if sample > n:
            raise ValueError(f"--rotate-sample: {sample} is larger than the corpus ({n} vectors)")
        vectors = vectors[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))]
    check_rotation_sample(
        len(vectors), dim, "`rotate`", "evaluate on a larger corpus, or fit on a larger `rotate_sample` of one"
    )
    return fit_rotation(vectors), {"fitted_on_vectors": len(vectors), "of": n, "seed": seed}


def evaluate_retrieval(
    model,
    dataset: BeirDataset,
    dims: list[int | str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    progress: bool = True,
    ignore_identical_ids: bool = True,
    model_name: str | None = None,
    rotate: bool = False,
    rotate_sample: int | None = None,
) -> ModelEvaluation:
    """nDCG@10, Recall@10/100, MRR@10 and bytes/vector at each dim, plus % of full-dim nDCG kept.

    ``ignore_identical_ids`` drops a document whose id equals the query id, as BEIR and MTEB do.
    With ``rotate`` (implied by ``rotate_sample``) every dim is measured a second time on prefixes of
    rotated vectors (:func:`corpus_rotation`, fitted on the evaluated corpus or ``rotate_sample`` of its vectors).
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
    result.dims = per_dim_retrieval(dataset, query_emb, doc_emb, doc_ids, query_ids, labelled, ignore_identical_ids)
    if rotate or rotate_sample is not None:
        rotation, result.rotation = corpus_rotation(doc_emb, rotate_sample)
        result.rotated = per_dim_retrieval(
            dataset, query_emb @ rotation.T, doc_emb @ rotation.T, doc_ids, query_ids, labelled, ignore_identical_ids
        )
    return result


def per_dim_retrieval(
    dataset: BeirDataset,
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    labelled: list[tuple[str, int]],
    ignore_identical_ids: bool,
) -> dict[str, dict[str, float]]:
    """The retrieval metrics of each prefix of the given embeddings, plus % of full-dim nDCG@10 kept."""
    out: dict[str, dict[str, float]] = {}
    for label, size in labelled:
        run = exact_search(prefix(query_emb, size), prefix(doc_emb, size), doc_ids, 101, query_ids)
        metrics = retrieval_metrics(dataset.qrels, run, ignore_identical_ids)
        metrics["bytes_per_vector"] = size * 4
        metrics["dim"] = size
        out[label] = metrics
    add_retained(out, "ndcg@10")
    return out


def evaluate_sts(
    model, data: StsData, dims: list[int | str], batch_size: int = 64, rotate: bool = False
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]] | None]:
    """Spearman correlation (x100, as MTEB reports it) of cosine similarity with gold scores, per dim.

    Returns the raw prefixes' scores and, with ``rotate``, those of rotated prefixes (else None): the
    rotation is fitted on the STS sentences themselves (both sides of every pair), as an index fits
    it on its corpus.
    """
    width = embedding_dim(model)
    labelled = resolve_dims(dims, width)
    a = encode_texts(model, data.sentences1, batch_size, progress=False)
    b = encode_texts(model, data.sentences2, batch_size, progress=False)
    rotated = None
    if rotate:
        rotation, _ = corpus_rotation(np.concatenate([a, b]))
        rotated = per_dim_sts(data, a @ rotation.T, b @ rotation.T, labelled)
    return per_dim_sts(data, a, b, labelled), rotated


def per_dim_sts(
    data: StsData, a: np.ndarray, b: np.ndarray, labelled: list[tuple[str, int]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, size in labelled:
        cos = np.sum(prefix(a, size) * prefix(b, size), axis=1)
        out[label] = {"spearman": float(spearmanr(cos, data.scores).statistic * 100), "dim": size}
    add_retained(out, "spearman")
    return out


def add_retained(per_dim: dict[str, dict], metric: str) -> None:
    """Add ``retained_<metric>``: each dim's score as a percentage of the full-width score."""
    full = per_dim.get(FULL, {}).get(metric)
    for values in per_dim.values():
        values[f"retained_{metric}"] = 100.0 * values[metric] / full if full else None
