"""A nearest-centroid or k-NN classifier over Matryoshka prefixes that reads more dims only for items in doubt.

The brief's own example of a Matryoshka model at work: classify on the first 32 or 64 dims, and look at more only
when the short prefix cannot tell. :class:`PrefixClassifier` is fitted once per width of a ladder (say 32, 64, 128,
256 and the full width). At prediction time each item is scored at the narrowest width first; an item whose best
class leads the second by at least ``margin`` stops there, the rest go on to the next width, and the last width
answers for whatever is left. ``margin`` 0 stops every item at the first width; a margin above every lead reads the
full width for all. :meth:`PrefixClassifier.calibrate` picks the smallest margin (so the fewest dims) whose answers
agree with the full width's on a held-out set at least as often as asked.

Features. An item is one text or a pair of texts (NLI's premise and hypothesis). At width ``w`` a text is its
re-normalized ``w``-dim prefix ``u``; a pair is ``[u * v, |u - v|]``, the pair features of Sentence-BERT's softmax
classifier (Reimers and Gurevych, 2019). Features are standardized with the training set's mean and spread, then
unit-normalized, so class scores are cosines whatever the width, and one margin means the same at every width.

Classifiers. ``centroid``: the cosine to each class's mean feature. ``knn``: the ``k`` nearest training items by
cosine vote for their class with their similarity; a class's score is its share of the votes.

Example::

    import numpy as np
    from mrl.eval.prefix_classifier import PrefixClassifier

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 64)).astype(np.float32)
    labels = ["a" if v[0] > 0 else "b" for v in vectors]  # the label lives in the first dims
    clf = PrefixClassifier(widths=[8, 16, 64]).fit(vectors[:200], labels[:200])
    clf.calibrate(vectors[200:250], target_agreement=0.99)
    predicted = clf.predict(vectors[250:])
    print(predicted.labels[:5], predicted.widths.mean())  # most items stop at 8 dims
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mrl.errors import MrlError
from mrl.vectors.prefix import prefix

CLASSIFIERS = ("centroid", "knn")
DEFAULT_K = 10
MAX_MARGIN = 2.0  # cosine leads lie in [0, 2], vote-share leads in [0, 2]: a larger margin can never stop an item
CHUNK = 2048  # items scored at a time by knn, bounding its similarity matrix
CALIBRATION_STEPS = 400  # margins tried by calibrate: quantiles of the held-out leads


@dataclass(frozen=True)
class Prediction:
    """Each item's label, the width whose scores decided it, and its best class's lead over the second there."""

    labels: list[str]
    widths: np.ndarray
    leads: np.ndarray


class PrefixClassifier:
    """Classify vectors at the narrowest width of ``widths`` that is sure enough (see the module docstring).

    ``widths`` are prefix sizes, ascending; the last should be the vectors' full width (it answers for items still in
    doubt). ``kind`` is ``centroid`` or ``knn`` (with ``k`` neighbours). ``margin`` is the lead that stops an item;
    None until :meth:`calibrate` sets it, and then :meth:`predict` reads every item at the last width.
    """

    def __init__(
        self, widths: Sequence[int], kind: str = "centroid", k: int = DEFAULT_K, margin: float | None = None
    ) -> None:
        widths = [int(w) for w in widths]
        if not widths or any(w <= 0 for w in widths) or widths != sorted(set(widths)):
            raise MrlError(f"`widths` must be positive and ascending without repeats, got {widths}")
        if kind not in CLASSIFIERS:
            raise MrlError(f"`kind` must be one of {', '.join(CLASSIFIERS)}, got '{kind}'")
        if k <= 0:
            raise MrlError(f"`k` must be a positive number of neighbours, got {k}")
        self.widths, self.kind, self.k = widths, kind, k
        self.margin = check_margin(margin) if margin is not None else None
        self.classes: list[str] = []
        self._fitted: list[_Fitted] = []

    def fit(self, first: np.ndarray, labels: Sequence[str], second: np.ndarray | None = None) -> PrefixClassifier:
        """Fit one classifier per width on full-width vectors (``second``: the pairs' second texts)."""
        self._check_vectors(first, second, fitted=False)
        if len(labels) != len(first):
            raise MrlError(f"`labels`: {len(labels)} labels for {len(first)} items")
        self.classes = sorted(set(labels))
        if len(self.classes) < 2:
            raise MrlError(f"`labels`: a classifier needs at least two classes, got {self.classes}")
        y = np.searchsorted(np.array(self.classes), np.array(labels))
        if self.kind == "knn" and self.k > len(y):
            raise MrlError(f"`k`: {self.k} neighbours asked for, {len(y)} training items")
        self._pairs = second is not None
        self._fitted = [_Fitted.fit(features(first, second, w), y, len(self.classes)) for w in self.widths]
        return self

    def scores(self, first: np.ndarray, second: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
        """Class scores (items x classes, in :attr:`classes` order) at ``width`` (default: the last)."""
        self._check_vectors(first, second, fitted=True)
        width = self.widths[-1] if width is None else width
        if width not in self.widths:
            raise MrlError(f"`width` must be one of the fitted widths {self.widths}, got {width}")
        fitted = self._fitted[self.widths.index(width)]
        return fitted.scores(features(first, second, width), self.kind, self.k)

    def predict(self, first: np.ndarray, second: np.ndarray | None = None, margin: float | None = None) -> Prediction:
        """Each item scored from the narrowest width up, stopping once its best class leads by ``margin``.

        ``margin`` defaults to the classifier's own (:meth:`calibrate`); with neither, every item is read at the
        last width. Only the items still in doubt are scored at the next width.
        """
        margin = check_margin(margin) if margin is not None else self.margin
        n = len(first)
        labels = np.zeros(n, dtype=np.int64)
        widths = np.full(n, self.widths[-1], dtype=np.int64)
        leads = np.zeros(n, dtype=np.float32)
        todo = np.arange(n)
        ladder = self.widths if margin is not None else self.widths[-1:]
        for i, width in enumerate(ladder):
            s = self.scores(first[todo], None if second is None else second[todo], width)
            best, lead = top_and_lead(s)
            stop = np.ones(len(todo), dtype=bool) if i == len(ladder) - 1 else lead >= margin
            done = todo[stop]
            labels[done], widths[done], leads[done] = best[stop], width, lead[stop]
            todo = todo[~stop]
            if not len(todo):
                break
        return Prediction([self.classes[i] for i in labels], widths, leads)

    def calibrate(self, first: np.ndarray, second: np.ndarray | None = None, target_agreement: float = 0.99) -> dict:
        """Set :attr:`margin` to the smallest that agrees with the last width on ``target_agreement`` of these items.

        The items should be held out from :meth:`fit` (a training item is its own nearest neighbour). A smaller
        margin stops more items early, so the smallest margin that meets the target reads the fewest dims. Returns
        the choice: margin, agreement with the last width, mean dims per item (and the share stopped at each width).
        """
        if not 0 < target_agreement <= 1:
            raise MrlError(f"`target_agreement` must be in (0, 1], got {target_agreement}")
        per_width = [top_and_lead(self.scores(first, second, w)) for w in self.widths]
        full = per_width[-1][0]
        leads = np.concatenate([lead for _, lead in per_width[:-1]]) if len(self.widths) > 1 else np.zeros(1)
        candidates = np.unique(np.concatenate([[0.0], np.quantile(leads, np.linspace(0, 1, CALIBRATION_STEPS))]))
        for margin in [*candidates.tolist(), MAX_MARGIN]:
            best, widths = ladder_answer(per_width, self.widths, margin)
            agreement = float(np.mean(best == full))
            if agreement >= target_agreement:
                break
        self.margin = float(margin)
        return {
            "margin": self.margin,
            "target_agreement": target_agreement,
            "agreement_with_full": agreement,
            "mean_dims": float(widths.mean()),
            "items": len(first),
        }

    def _check_vectors(self, first: np.ndarray, second: np.ndarray | None, fitted: bool) -> None:
        if first.ndim != 2 or first.shape[1] < self.widths[-1]:
            raise MrlError(f"vectors of at least {self.widths[-1]} dims expected, got shape {first.shape}")
        if second is not None and second.shape != first.shape:
            raise MrlError(f"the pairs' second vectors have shape {second.shape}, the first {first.shape}")
        if fitted:
            if not self._fitted:
                raise MrlError("the classifier is not fitted: call fit first")
            if (second is not None) != self._pairs:
                raise MrlError(f"the classifier was fitted on {'pairs' if self._pairs else 'single texts'}")


@dataclass(frozen=True)
class _Fitted:
    """One width's classifier: the standardization, and the class centroids or the training items."""

    mean: np.ndarray
    scale: np.ndarray
    points: np.ndarray  # centroid: one unit row per class; knn: the standardized training items
    labels: np.ndarray  # knn: each training item's class index
    n_classes: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int) -> _Fitted:
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        scale = np.maximum(x.std(axis=0, dtype=np.float64), 1e-6).astype(np.float32)
        z = _unit((x - mean) / scale)
        centroids = _unit(np.stack([z[y == c].mean(axis=0) for c in range(n_classes)]))
        return cls(mean, scale, np.vstack([centroids, z]), y, n_classes)

    def scores(self, x: np.ndarray, kind: str, k: int) -> np.ndarray:
        z = _unit((x - self.mean) / self.scale)
        if kind == "centroid":
            return z @ self.points[: self.n_classes].T
        train = self.points[self.n_classes :]
        out = np.zeros((len(z), self.n_classes), dtype=np.float32)
        for start in range(0, len(z), CHUNK):
            sim = z[start : start + CHUNK] @ train.T
            near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            weight = np.take_along_axis(sim, near, axis=1)
            votes = out[start : start + CHUNK]
            for c in range(self.n_classes):
                votes[:, c] = np.where(self.labels[near] == c, weight, 0).sum(axis=1)
            votes /= np.maximum(np.abs(weight).sum(axis=1, keepdims=True), 1e-12)
        return out


def features(first: np.ndarray, second: np.ndarray | None, width: int) -> np.ndarray:
    """An item's features at ``width``: its re-normalized prefix, or a pair's ``[u * v, |u - v|]``."""
    u = prefix(first, width)
    if second is None:
        return u
    v = prefix(second, width)
    return np.concatenate([u * v, np.abs(u - v)], axis=1)


def top_and_lead(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best class and how far it leads the second best."""
    best = scores.argmax(axis=1)
    top2 = np.sort(scores, axis=1)[:, -2:]
    return best, top2[:, 1] - top2[:, 0]


def ladder_answer(
    per_width: list[tuple[np.ndarray, np.ndarray]], widths: Sequence[int], margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The answer and width of each item under ``margin``, from every width's (best, lead) computed up front."""
    best = per_width[-1][0].copy()
    used = np.full(len(best), widths[-1], dtype=np.int64)
    undecided = np.ones(len(best), dtype=bool)
    for (b, lead), width in zip(per_width[:-1], widths[:-1], strict=True):
        stop = undecided & (lead >= margin)
        best[stop], used[stop] = b[stop], width
        undecided &= ~stop
    return best, used


def check_margin(margin: float) -> float:
    if not np.isfinite(margin) or not 0 <= margin <= MAX_MARGIN:
        raise MrlError(f"`margin` must be a lead between 0 and {MAX_MARGIN}, got {margin}")
    return float(margin)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
