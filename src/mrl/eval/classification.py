"""Classification accuracy at every prefix width, and what early exit saves: ``mrl eval --classify``.

The training items are split once (seeded): most fit a :class:`~mrl.eval.prefix_classifier.PrefixClassifier`, a
held-out share calibrates its early-exit margin, and the test items are scored only at the end, never used to
choose anything. Every text is encoded once at full width (through the embedding cache) and every width is a prefix
of that one matrix, as in retrieval evaluation.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mrl.data.beir import texts_fingerprint
from mrl.data.labels import LabelledSet
from mrl.encode import EmbeddingCache
from mrl.errors import DataError, MrlError
from mrl.eval.prefix_classifier import DEFAULT_K, PrefixClassifier
from mrl.eval.retrieval import FULL, resolve_dims
from mrl.model import embedding_dim
from mrl.vectors.rotation import check_rotation_sample, fit_rotation

DEV_SHARE = 0.2  # of the training items, held out to calibrate the early-exit margin
DEFAULT_TARGET_AGREEMENT = 0.99


def evaluate_classification(
    model,
    train: LabelledSet,
    test: LabelledSet,
    dims: list[int | str],
    kind: str = "centroid",
    k: int = DEFAULT_K,
    margin: float | None = None,
    target_agreement: float = DEFAULT_TARGET_AGREEMENT,
    rotate: bool = False,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Accuracy at each width of ``dims`` and with early exit over them, on ``test``; a JSON-ready dict.

    ``margin`` fixes the early-exit margin; without it the margin is calibrated on the held-out training share to
    agree with the full width on ``target_agreement`` of those items. With ``rotate`` every figure is measured a
    second time on rotated prefixes (the rotation fitted on the fitting items' vectors, as an index fits its own).
    """
    if train.is_pairs != test.is_pairs:
        raise MrlError("the training and test files must both hold pairs or both single texts")
    classes = set(train.labels)
    for label, (path, line) in zip(test.labels, test.where, strict=True):
        if label not in classes:
            raise DataError(f"label '{label}' does not occur in the training files", path, line)
    width = embedding_dim(model)
    labelled = resolve_dims(dims, width)
    widths = sorted({size for _, size in labelled})
    if widths[-1] != width:
        widths.append(width)  # the last width answers for the items still in doubt: it is the full width
    fit_rows, dev_rows = split_rows(len(train), seed)
    fit, dev = train.subset(fit_rows), train.subset(dev_rows)

    vectors = _encode(model, [train, test], cache, batch_size, progress)
    views = {"raw": vectors}
    rotation_record = None
    if rotate:
        fit_texts = np.stack([vectors[t] for t in dict.fromkeys([*fit.texts, *(fit.seconds or [])])])
        check_rotation_sample(len(fit_texts), width, "`rotate`", "classify with more training items")
        rotation, rotation_record = fit_rotation(fit_texts), {"fitted_on_vectors": len(fit_texts)}
        views["rotated"] = {t: v @ rotation.T for t, v in vectors.items()}

    result: dict = {
        "model": getattr(model, "mrl_source", str(model)),
        "full_dim": width,
        "classifier": kind,
        **({"k": k} if kind == "knn" else {}),
        "items": {"fit": len(fit), "dev": len(dev), "test": len(test)},
        "labels": dict(sorted(Counter(test.labels).items())),
        "pairs": train.is_pairs,
    }
    for view, vecs in views.items():
        result[view] = _measure(
            vecs, fit, dev, test, widths, [size for _, size in labelled], kind, k, margin, target_agreement
        )
    if rotation_record:
        result["rotation"] = rotation_record
    return result


def split_rows(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``n`` training items: (fit rows, held-out rows), each in file order."""
    dev = round(n * DEV_SHARE)
    if dev < 1 or n - dev < 2:
        raise MrlError(f"the training files hold {n} items: too few to fit on and hold out {DEV_SHARE:.0%}")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[dev:].tolist()), sorted(order[:dev].tolist())


def _encode(
    model, sets: list[LabelledSet], cache: EmbeddingCache | None, batch_size: int, progress: bool
) -> dict[str, np.ndarray]:
    """Every distinct text of the sets, encoded once at full width (cached): text -> vector."""
    texts = list(dict.fromkeys(t for s in sets for t in [*s.texts, *(s.seconds or [])]))
    key = "labelled-" + texts_fingerprint({str(i): t for i, t in enumerate(texts)})
    matrix, _ = (cache or EmbeddingCache()).get_or_encode(model, key, texts, batch_size=batch_size, progress=progress)
    return dict(zip(texts, matrix, strict=True))


def _stack(vectors: dict[str, np.ndarray], items: LabelledSet) -> tuple[np.ndarray, np.ndarray | None]:
    first = np.stack([vectors[t] for t in items.texts])
    return first, None if items.seconds is None else np.stack([vectors[t] for t in items.seconds])


def _measure(
    vectors: dict[str, np.ndarray],
    fit: LabelledSet,
    dev: LabelledSet,
    test: LabelledSet,
    widths: list[int],
    reported: list[int],
    kind: str,
    k: int,
    margin: float | None,
    target_agreement: float,
) -> dict:
    fit_first, fit_second = _stack(vectors, fit)
    classifier = PrefixClassifier(widths, kind, k, margin).fit(fit_first, fit.labels, fit_second)
    test_first, test_second = _stack(vectors, test)
    truth = np.array(test.labels)
    classes = np.array(classifier.classes)
    answers = {
        w: classes[classifier.scores(test_first, test_second, w).argmax(axis=1)] for w in {*reported, widths[-1]}
    }
    full = answers[widths[-1]]
    per_width = {}
    for size in reported:
        predicted = answers[size]
        per_width[FULL if size == widths[-1] else str(size)] = {
            "dim": size,
            "accuracy": float(np.mean(predicted == truth)),
            "agreement_with_full": float(np.mean(predicted == full)),
        }
    calibration = (
        {"margin": margin, "given": True}
        if margin is not None
        else {**classifier.calibrate(*_stack(vectors, dev), target_agreement=target_agreement), "given": False}
    )
    early = classifier.predict(test_first, test_second)
    answered = np.array(early.labels)
    stopped = Counter(early.widths.tolist())
    return {
        "dims": per_width,
        "early_exit": {
            "widths": widths,
            "margin": classifier.margin,
            "calibration": calibration,
            "accuracy": float(np.mean(answered == truth)),
            "full_accuracy": float(np.mean(full == truth)),
            "agreement_with_full": float(np.mean(answered == full)),
            "mean_dims": float(early.widths.mean()),
            "mean_dims_ratio_vs_full": float(early.widths.mean() / widths[-1]),
            "stopped_at": {str(w): stopped.get(w, 0) / len(test) for w in widths},
        },
    }
