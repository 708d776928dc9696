"""Hard-negative mining: turn (query, positive) pairs into triplets with negatives from a corpus.

Negatives are the base model's highest-scoring corpus documents for the query that are (a) not a
known positive of that query (every pair with the same anchor counts, not only this one) and
(b) not a near-duplicate of the positive: a candidate scoring above ``(1 - margin)`` times the
positive's score, or whose text equals the positive, is more likely an unjudged positive than a
negative (the false-negative problem that makes mined negatives hurt).

The corpus is encoded through the embedding cache, so mining after ``mrl eval`` of the same model
and corpus costs no encoding.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from rich.progress import track

from mrl.data import Pair, Triplet
from mrl.data.beir import texts_fingerprint
from mrl.encode import EmbeddingCache, encode_reusing, encode_texts
from mrl.errors import MrlError
from mrl.vectors.prefix import prefix


def mine_hard_negatives(
    model,
    pairs: list[Pair],
    corpus: dict[str, str],
    cache: EmbeddingCache | None = None,
    skip_top: int = 0,
    margin: float = 0.05,
    depth: int = 50,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[Triplet], dict[str, int]]:
    """One mined negative per pair; returns the triplets and counts of what was skipped and why.

    ``skip_top`` ignores the best ``skip_top`` candidates (a common guard against unjudged
    positives); ``depth`` is how far down the ranking to look first. A pair with no candidate
    there (its positive ranks low, so all top documents score too close to it) is searched
    further down the ranking and counted in ``searched_beyond_depth``, never dropped.
    """
    if not corpus:
        raise MrlError("the corpus to mine negatives from is empty")
    doc_ids = list(corpus)
    doc_texts = [corpus[i] for i in doc_ids]
    cache = cache or EmbeddingCache()
    doc_emb, _ = cache.get_or_encode(model, texts_fingerprint(corpus), doc_texts, batch_size, progress)
    docs = prefix(doc_emb, doc_emb.shape[1])

    text_to_index: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(doc_texts):
        text_to_index[text.strip()].append(i)
    positives_of: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        positives_of[pair.anchor].add(pair.positive.strip())

    anchors = list(dict.fromkeys(p.anchor for p in pairs))
    anchor_row = {a: i for i, a in enumerate(anchors)}
    queries = prefix(encode_texts(model, anchors, batch_size, progress=progress), docs.shape[1])
    # a positive that is a corpus document (the usual case for BEIR pairs) reuses that document's vector
    pos_texts = list(dict.fromkeys(p.positive.strip() for p in pairs))
    first_row = {text: rows[0] for text, rows in text_to_index.items()}
    pos_vectors = prefix(encode_reusing(model, pos_texts, first_row, docs, batch_size, progress), docs.shape[1])
    pos_emb = dict(zip(pos_texts, pos_vectors, strict=True))

    depth = min(depth + skip_top, len(doc_ids))
    counts = {
        "pairs": len(pairs),
        "skipped_known_positive": 0,
        "skipped_near_duplicate": 0,
        "searched_beyond_depth": 0,
    }
    triplets: list[Triplet] = []
    for pair in track(pairs, description="mining negatives", disable=not progress):
        q = queries[anchor_row[pair.anchor]]
        scores = docs @ q
        top = np.argpartition(-scores, depth - 1)[:depth]
        top = top[np.argsort(-scores[top])][skip_top:]
        known = {i for text in positives_of[pair.anchor] for i in text_to_index.get(text, [])}
        ceiling = (1.0 - margin) * float(pos_emb[pair.positive.strip()] @ q)
        chosen = _first_negative(top, scores, known, doc_texts, positives_of[pair.anchor], ceiling, counts)
        if chosen is None:  # a hard query: its positive ranks low, so everything near the top is 'too close'
            counts["searched_beyond_depth"] += 1
            ranking = np.argsort(-scores)[depth:]
            chosen = _first_negative(ranking, scores, known, doc_texts, positives_of[pair.anchor], ceiling, counts)
        if chosen is None:
            raise MrlError(f"no document in the corpus qualifies as a negative for anchor '{pair.anchor[:60]}'")
        triplets.append(Triplet(pair.anchor, pair.positive, doc_texts[chosen]))
    return triplets, counts


def _first_negative(
    candidates: np.ndarray,
    scores: np.ndarray,
    known: set[int],
    doc_texts: list[str],
    positive_texts: set[str],
    ceiling: float,
    counts: dict[str, int],
) -> int | None:
    for idx in candidates:
        if idx in known or doc_texts[idx].strip() in positive_texts:
            counts["skipped_known_positive"] += 1
        elif scores[idx] > ceiling:
            counts["skipped_near_duplicate"] += 1
        else:
            return int(idx)
    return None
