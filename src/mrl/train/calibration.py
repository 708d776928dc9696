"""int8 calibration ranges for a model's embeddings, per prefix dim, stored with the model.

``sentence_transformers.quantize_embeddings(precision="int8")`` maps each coordinate's [min, max] onto the
256 codes. Ranges computed on a batch of the client's own vectors would make the same text code differently
from one request to the next, so they are fitted once, on the documents a model was trained with, and kept in
its ``mrl.json`` (``int8_ranges``: dim -> [mins, maxs] of the re-normalized prefix). A model without them (one
``mrl train`` did not write) is calibrated on the served index's vectors instead.
"""

from __future__ import annotations

import random

import numpy as np

from mrl.encode import encode_texts
from mrl.model import embedding_dim, read_metadata
from mrl.vectors.prefix import prefix

SAMPLE = 1000  # documents encoded for the ranges: enough for stable per-coordinate extremes, seconds on a CPU


def int8_ranges(vectors: np.ndarray, dims: list[int]) -> dict[str, list[list[float]]]:
    """[mins, maxs] of each coordinate of the re-normalized prefix at every dim."""
    return {str(d): np.stack([(p := prefix(vectors, d)).min(axis=0), p.max(axis=0)]).tolist() for d in dims}


def int8_calibration(model, texts: list[str], dims: list[int], seed: int = 0) -> dict:
    """The ``mrl.json`` entries for a finished model: ranges at each of ``dims`` and full width, fitted on
    a sample of ``texts`` (its training documents) encoded by that model."""
    unique = sorted(set(texts))
    sample = random.Random(seed).sample(unique, min(SAMPLE, len(unique)))
    vectors = encode_texts(model, sample, progress=False)
    width = embedding_dim(model)
    return {
        "int8_ranges": int8_ranges(vectors, sorted({*(d for d in dims if d < width), width})),
        "int8_ranges_from": {"documents": len(sample), "seed": seed},
    }


def stored_int8_ranges(model, dim: int) -> np.ndarray | None:
    """The ranges ``mrl train`` stored for ``dim`` (2 x dim), or None when the model has none for it."""
    ranges = read_metadata(model).get("int8_ranges", {}).get(str(dim))
    return np.asarray(ranges, dtype=np.float32) if ranges is not None else None
