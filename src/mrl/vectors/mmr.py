"""Maximal marginal relevance: pick results that are relevant to the query and unlike the ones picked before.

Carbonell and Goldstein (SIGIR 1998). Each step takes the candidate maximizing
``lambda_mult * sim(query, d) - (1 - lambda_mult) * max(sim(d, picked))``: ``lambda_mult = 1`` is plain relevance,
``0`` pure diversity. The index computes it on the full vectors of a reranked shortlist, so the similarities are
exact, not the prefix's.

Example::

    import numpy as np
    from mrl.vectors.mmr import maximal_marginal_relevance

    docs = np.array([[1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)  # the first two are the same document
    maximal_marginal_relevance(docs @ np.array([1, 0], dtype=np.float32), docs, 2, 0.5)   # [0, 2]
"""

from __future__ import annotations

import numpy as np


def maximal_marginal_relevance(query_scores: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Indices of ``k`` of the candidates (their similarity to the query, their unit vectors), in the order picked."""
    n = len(query_scores)
    if n == 0 or k <= 0:
        return []
    similar = vectors @ vectors.T
    picked = [int(np.argmax(query_scores))]
    closest = similar[picked[0]].copy()  # each candidate's highest similarity to anything picked so far
    while len(picked) < min(k, n):
        score = lambda_mult * query_scores - (1 - lambda_mult) * closest
        score[picked] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        np.maximum(closest, similar[best], out=closest)
    return picked
