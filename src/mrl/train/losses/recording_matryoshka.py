"""MatryoshkaLoss that also reports the loss at each dim, not only the weighted sum."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss
from torch import Tensor, nn


class RecordingMatryoshkaLoss(MatryoshkaLoss):
    """``MatryoshkaLoss`` whose per-dim (unweighted) inner losses are kept for logging.

    The sum that ``MatryoshkaLoss`` returns hides which dim is learning: a falling total can come
    entirely from the full dim while the 64-dim loss stays flat. This subclass records each dim's
    inner loss every step (also for the gradient-caching losses, where the inner loss sees the
    truncated embeddings directly) so a trainer callback can log ``loss_dim_64``, ``loss_dim_128``, ...
    It changes nothing in the optimisation: the returned loss is the parent's.

    Example::

        from sentence_transformers import SentenceTransformer, losses
        from mrl.train.losses import RecordingMatryoshkaLoss

        model = SentenceTransformer("all-MiniLM-L6-v2")
        loss = RecordingMatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), [384, 128, 64])
        # ... train with SentenceTransformerTrainer(loss=loss) ...
        loss.pop_dim_losses()   # {384: 1.2, 128: 1.5, 64: 1.9}: means since the last call

    References:
        - Kusupati et al., Matryoshka Representation Learning, https://arxiv.org/abs/2205.13147
    """

    def __init__(
        self,
        model,
        loss: nn.Module,
        matryoshka_dims: Sequence[int],
        matryoshka_weights: Sequence[float] | None = None,
        n_dims_per_step: int = -1,
    ) -> None:
        super().__init__(model, loss, matryoshka_dims, matryoshka_weights, n_dims_per_step)
        self._sums: dict[int, float] = defaultdict(float)
        self._counts: dict[int, int] = defaultdict(int)
        if self.uses_gradient_cache:
            # The parent wrapped calculate_loss in a decorator that shrinks the cached embeddings per dim;
            # wrap the function it calls, which sees embeddings of exactly the current dim.
            decorator = loss.calculate_loss
            decorator.fn = _RecordByWidth(decorator.fn, self._record)
        else:
            self.loss = _RecordByForwardDim(loss, model, self._record)

    def _record(self, dim: int, value: Tensor) -> None:
        self._sums[dim] += float(value.detach())
        self._counts[dim] += 1

    def pop_dim_losses(self) -> dict[int, float]:
        """Mean inner loss per dim since the last call (dims not sampled by n_dims_per_step are absent)."""
        out = {dim: self._sums[dim] / self._counts[dim] for dim in sorted(self._counts) if self._counts[dim]}
        self._sums.clear()
        self._counts.clear()
        return out

    def dim_counts(self) -> dict[int, int]:
        """How many loss evaluations each dim received since the last pop (shows n_dims_per_step at work)."""
        return dict(self._counts)


class _RecordByForwardDim(nn.Module):
    """Wraps the inner loss; MatryoshkaLoss sets the current dim on the decorated model.forward."""

    def __init__(self, inner: nn.Module, model, record) -> None:
        super().__init__()
        self.inner = inner
        self._model = [model]  # a list keeps the model out of this module's parameters
        self._record = record

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        value = self.inner(sentence_features, labels)
        model = self._model[0]
        dim = getattr(model.forward, "dim", None) or model.get_embedding_dimension()
        self._record(int(dim), value)
        return value


class _RecordByWidth:
    """Wraps a Cached* loss's calculate_loss; the dim is the width of the embeddings it receives."""

    def __init__(self, fn, record) -> None:
        self.fn = fn
        self._record = record

    def __call__(self, reps, *args, **kwargs):
        value = self.fn(reps, *args, **kwargs)
        self._record(int(reps[0][0].shape[-1]), value)
        return value
