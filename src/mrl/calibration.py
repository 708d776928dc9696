"""int8 calibration ranges for a model's embeddings, per prefix dim, stored with the model.

``sentence_transformers.quantize_embeddings(precision="int8")`` maps each coordinate's [min, max] onto the
256 codes. Ranges computed on a batch of the client's own vectors would make the same text code differently
from one request to the next, so they are fitted once, on the documents a model was trained with, and kept in
its ``mrl.json`` (``int8_ranges``: dim -> [mins, maxs] of the re-normalized prefix). A model without them (one
``mrl train`` did not write) is calibrated on the served index's vectors instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from mrl.encode import encode_texts, prefix
from mrl.model import METADATA_FILE, embedding_dim, read_metadata

SAMPLE = 1000  # documents encoded for the ranges: enough for stable per-coordinate extremes, seconds on a CPU


def int8_ranges(vectors: np.ndarray, dims: list[int]) -> dict[str, list[list[float]]]:
    """[mins, maxs] of each coordinate of the re-normalized prefix at every dim."""
    return {str(d): np.stack([(p := prefix(vectors, d)).min(axis=0), p.max(axis=0)]).tolist() for d in dims}


def store_int8_ranges(model, folder: Path, texts: list[str], dims: list[int], seed: int = 0) -> None:
    """Encode a sample of ``texts`` with the finished model and add their ranges to ``folder``'s mrl.json."""
    sample = random.Random(seed).sample(sorted(set(texts)), min(SAMPLE, len(set(texts))))
    vectors = encode_texts(model, sample, progress=False)
    width = embedding_dim(model)
    path = Path(folder) / METADATA_FILE
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta["int8_ranges"] = int8_ranges(vectors, sorted({*(d for d in dims if d < width), width}))
    meta["int8_ranges_from"] = {"documents": len(sample), "seed": seed}
    path.write_text(json.dumps(meta, indent=2, default=str))


def stored_int8_ranges(model, dim: int) -> np.ndarray | None:
    """The ranges ``mrl train`` stored for ``dim`` (2 x dim), or None when the model has none for it."""
    ranges = read_metadata(model).get("int8_ranges", {}).get(str(dim))
    return np.asarray(ranges, dtype=np.float32) if ranges is not None else None
