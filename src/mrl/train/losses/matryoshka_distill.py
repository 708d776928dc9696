"""MatryoshkaLoss plus prefix self-distillation: every prefix learns to rank candidates as the full vector does."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.losses.matryoshka import shrink
from torch import Tensor, nn


class MatryoshkaDistillLoss(nn.Module):
    """A ranking loss at each Matryoshka dim, plus a KL term that pulls each prefix's ranking to the full vector's.

    Why: ``MatryoshkaLoss`` trains each prefix on the task labels alone (one positive among in-batch
    candidates). That signal is sparse, and a free rotation of a plain fine-tune (PCA of its vectors)
    already gives short prefixes that rank like the full vector. Here each prefix also gets the full
    vector's whole score distribution over the batch's candidates as a soft target (self-distillation,
    the teacher being the model's own full width, detached), so short prefixes learn the graded order
    of every candidate, not just which one is the positive. The full width keeps the plain ranking loss.

    The embeddings are computed once per step; each dim is a re-normalized prefix of them, as in
    ``MatryoshkaLoss``. The inner loss must offer ``compute_loss_from_embeddings`` (sentence-transformers'
    ``MultipleNegativesRankingLoss`` does). Per-dim losses are kept for logging, as by
    :class:`~mrl.losses.RecordingMatryoshkaLoss`.

    Args:
        model: the SentenceTransformer being trained.
        loss: the inner ranking loss, e.g. ``MultipleNegativesRankingLoss(model)``; its ``scale`` is the
            inverse temperature of the distillation softmax too.
        matryoshka_dims: the dims to train, e.g. ``[384, 256, 128, 64, 32]``.
        matryoshka_weights: a weight per dim (default 1 each).
        distill_weight: weight of the KL term relative to the ranking loss at each dim below full width.

    Example::

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from mrl.train.losses import MatryoshkaDistillLoss

        model = SentenceTransformer("all-MiniLM-L6-v2")
        loss = MatryoshkaDistillLoss(model, MultipleNegativesRankingLoss(model), [384, 128, 64, 32])
        # ... train with SentenceTransformerTrainer(loss=loss) on (anchor, positive[, negative]) rows ...
        loss.pop_dim_losses()       # {32: 2.1, 64: 1.7, ...}: ranking loss per dim since the last call
        loss.pop_distill_losses()   # {32: 0.4, 64: 0.2, ...}: KL to the full vector per dim

    References:
        - Kusupati et al., Matryoshka Representation Learning, https://arxiv.org/abs/2205.13147
        - Hinton et al., Distilling the Knowledge in a Neural Network, https://arxiv.org/abs/1503.02531
    """

    def __init__(
        self,
        model,
        loss: nn.Module,
        matryoshka_dims: Sequence[int],
        matryoshka_weights: Sequence[float] | None = None,
        distill_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise ValueError(f"{type(loss).__name__} has no compute_loss_from_embeddings; use MNRL")
        weights = list(matryoshka_weights) if matryoshka_weights is not None else [1.0] * len(matryoshka_dims)
        if len(weights) != len(matryoshka_dims):
            raise ValueError("matryoshka_weights must be as long as matryoshka_dims")
        pairs = sorted(zip(matryoshka_dims, weights, strict=True), reverse=True)
        self.model = model
        self.loss = loss
        self.matryoshka_dims = [d for d, _ in pairs]
        self.matryoshka_weights = [w for _, w in pairs]
        self.distill_weight = float(distill_weight)
        self._sums: dict[str, dict[int, float]] = {"rank": defaultdict(float), "distill": defaultdict(float)}
        self._counts: dict[str, dict[int, int]] = {"rank": defaultdict(int), "distill": defaultdict(int)}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        width = embeddings[0].shape[-1]
        scale = float(getattr(self.loss, "scale", 20.0))
        with torch.no_grad():
            teacher = F.softmax(self._scores(embeddings, width) * scale, dim=-1)
        total = embeddings[0].new_zeros(())
        for dim, weight in zip(self.matryoshka_dims, self.matryoshka_weights, strict=True):
            truncated = [shrink(e, dim) for e in embeddings]
            rank = self.loss.compute_loss_from_embeddings(truncated, labels)
            self._record("rank", dim, rank)
            total = total + weight * rank
            if dim < width and self.distill_weight > 0:
                student = F.log_softmax(self._scores(truncated, dim) * scale, dim=-1)
                distill = F.kl_div(student, teacher, reduction="batchmean")
                self._record("distill", dim, distill)
                total = total + weight * self.distill_weight * distill
        return total

    @staticmethod
    def _scores(embeddings: list[Tensor], dim: int) -> Tensor:
        """Cosine of each anchor with every candidate of the batch (all positives and negatives)."""
        anchors = shrink(embeddings[0], dim)
        candidates = torch.cat([shrink(e, dim) for e in embeddings[1:]])
        return anchors @ candidates.T

    def _record(self, kind: str, dim: int, value: Tensor) -> None:
        self._sums[kind][dim] += float(value.detach())
        self._counts[kind][dim] += 1

    def _pop(self, kind: str) -> dict[int, float]:
        sums, counts = self._sums[kind], self._counts[kind]
        out = {dim: sums[dim] / counts[dim] for dim in sorted(counts) if counts[dim]}
        sums.clear()
        counts.clear()
        return out

    def pop_dim_losses(self) -> dict[int, float]:
        """Mean ranking loss per dim since the last call."""
        return self._pop("rank")

    def pop_distill_losses(self) -> dict[int, float]:
        """Mean KL divergence from the full vector's ranking per dim since the last call."""
        return self._pop("distill")

    def get_config_dict(self) -> dict:
        return {
            "loss": type(self.loss).__name__,
            "matryoshka_dims": self.matryoshka_dims,
            "matryoshka_weights": self.matryoshka_weights,
            "distill_weight": self.distill_weight,
        }
