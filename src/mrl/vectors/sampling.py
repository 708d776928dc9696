"""The fixed sample of rows that a rotation and a quantizer learn from.

Fixed (a seeded choice, sorted) so that two builds of the same vectors learn the same thing, and bounded, since
neither the rotation nor a scalar quantizer needs more than a hundred thousand rows to settle.
"""

from __future__ import annotations

import numpy as np

TRAIN_SAMPLE = 100_000  # rows that index training (and the rotation fit) learns from; far more than either needs


def training_sample(vectors: np.ndarray, limit: int = TRAIN_SAMPLE, seed: int = 0) -> np.ndarray:
    """All rows when there are at most ``limit``, else a fixed random ``limit`` of them (the same on every build)."""
    rows = training_rows(len(vectors), limit, seed)
    return vectors if rows is None else vectors[rows]


def training_rows(n: int, limit: int = TRAIN_SAMPLE, seed: int = 0) -> np.ndarray | None:
    """The row numbers :func:`training_sample` takes, in increasing order (None: all of them)."""
    return None if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
