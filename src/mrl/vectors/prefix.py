"""Matryoshka prefix views: the first ``dim`` coordinates of each vector, re-normalized.

The slice of a unit vector is not a unit vector, and comparing un-normalized prefixes with a dot product silently
ranks by prefix norm instead of angle (the classic MRL truncation bug), so every prefix in mrl comes from here.

Example::

    import numpy as np
    from mrl.vectors.prefix import prefix

    x = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    p = prefix(x, 64)
    assert p.shape == (4, 64) and np.allclose(np.linalg.norm(p, axis=1), 1)
"""

from __future__ import annotations

import numpy as np


def prefix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, re-normalized to unit length (float32)."""
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {vectors.shape}")
    if not 0 < dim <= vectors.shape[1]:
        raise ValueError(f"dim {dim} outside 1..{vectors.shape[1]}")
    view = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(view, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return view / norms
