"""A learned rotation that moves most of each vector's energy into its first dims.

Why: the first pass ranks documents by a short prefix, and the exact rerank only sees what that
shortlist holds, so the prefix has to rank like the *full* vector. A Matryoshka model is trained so
that its prefix carries the meaning, which is not quite the same thing: on the 1M benchmark set
(benchmarks/results/prefix_ceiling-1000000.json), only 94.5% of the full-vector top-10 lies in the
top-100 by the raw 128-dim prefix of the Matryoshka-trained model.

An orthogonal rotation changes no inner product between full vectors, so the rerank, exact search
and every score stay what they were. Rotating by the eigenvectors of the *uncentered* second-moment
matrix E[x xᵀ], strongest first, makes each prefix the rank-p projection that keeps the most of the
inner products (Eckart-Young); centering (plain PCA) would not do, as it shifts each document's score
by a term of its own. The same idea is behind faiss's ``PCAMatrix`` preprocessing and the
energy-compaction step of Panorama (Wen et al., 2025, arXiv:2510.00566).

The index stores its full vectors rotated, so "the prefix" keeps meaning the first dims of a stored
vector: the ANN index, the funnel stages and the rerank need no other change. Queries and new
documents are rotated on the way in (one d x d product), sampled vectors rotated back on the way out.

Example::

    import numpy as np
    from mrl.vectors.rotation import fit_rotation

    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32) * np.linspace(0.1, 1, 64)
    r = fit_rotation(x)
    assert np.allclose(r @ r.T, np.eye(64), atol=1e-4)         # orthogonal: inner products are kept
    energy = ((x @ r.T) ** 2).mean(axis=0)
    assert energy[:8].sum() > ((x[:, :8]) ** 2).mean(axis=0).sum()  # the first dims now hold more of it
"""

from __future__ import annotations

import base64

import numpy as np

from mrl.errors import MrlError
from mrl.vectors.sampling import training_sample


def check_rotation_sample(rows: int, dim: int, option: str, advice: str) -> None:
    """Refuse to fit a rotation that ``rows`` vectors do not determine (fewer vectors than dims).

    Its last ``dim - rows`` directions would be arbitrary, so prefixes longer than ``rows`` would mean nothing.
    """
    if rows < dim:
        raise MrlError(
            f"{option}: a rotation of {dim}-dim vectors needs at least {dim} of them to be determined, "
            f"got {rows}; {advice}"
        )


def fit_rotation(vectors: np.ndarray) -> np.ndarray:
    """An orthogonal d x d matrix whose rows are the directions of most energy first.

    Estimated on :func:`mrl.vectors.sampling.training_sample` rows. Apply it as ``vectors @ rotation.T``; undo it
    with ``rotated @ rotation``.
    """
    x = np.asarray(training_sample(vectors), dtype=np.float64)
    return rotation_from_moment(x.T @ x)


def rotation_from_moment(moment: np.ndarray) -> np.ndarray:
    """The rotation of :func:`fit_rotation` from the second-moment matrix ``sum x xᵀ`` (float64, d x d).

    The matrix can be summed a chunk of rows at a time, so a build fits the rotation without the rows in memory.
    """
    _, eigenvectors = np.linalg.eigh(moment)  # eigenvalues in ascending order
    return np.ascontiguousarray(eigenvectors[:, ::-1].T, dtype=np.float32)


def rotate_rows(vectors: np.ndarray, rotation: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """Vectors in the stored basis, ``vectors @ rotation.T`` (unchanged when ``rotation`` is None).

    Works in chunks and into ``out`` when given (it may be ``vectors``), so a large corpus needs no second copy.
    """
    if rotation is None:
        return vectors
    out = np.empty_like(vectors, dtype=np.float32) if out is None else out
    chunk = 65_536
    for start in range(0, len(vectors), chunk):
        out[start : start + chunk] = vectors[start : start + chunk] @ rotation.T
    return out


def unrotate_rows(stored: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """Stored vectors back in the model's own basis (unchanged when ``rotation`` is None)."""
    return stored if rotation is None else stored @ rotation


def rotation_to_text(rotation: np.ndarray | None) -> str | None:
    """The matrix as base64 float32, for a database's settings record (JSON)."""
    if rotation is None:
        return None
    return base64.b64encode(np.ascontiguousarray(rotation, dtype="<f4").tobytes()).decode()


def rotation_from_text(text: str | None, dim: int) -> np.ndarray | None:
    """The inverse of :func:`rotation_to_text`, checked against the index width."""
    if text is None:
        return None
    flat = np.frombuffer(base64.b64decode(text), dtype="<f4")
    if flat.size != dim * dim:
        raise MrlError(f"stored rotation has {flat.size} values, a {dim}-dim index needs {dim * dim}")
    return flat.reshape(dim, dim).astype(np.float32)
