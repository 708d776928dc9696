"""A Matryoshka adaptor: a small trainable head on a frozen model that makes its prefixes rank like the full vector.

Why: a free rotation (PCA) of a plain fine-tune already gives short prefixes that rank well, and fine-tuning
the whole transformer for short prefixes (MatryoshkaLoss) pays at full width. The adaptor keeps the
fine-tuned transformer frozen and learns what comes after it, on the model's own embeddings:

    y = normalize(z + tanh(W z + b)),   z = R x

``R`` starts as the corpus rotation (so training starts at the free baseline) and ``W``, ``b`` at zero (so
the head starts as the identity). Its loss, at every Matryoshka dim d:

* a ranking loss on labelled (query, positive[, negative]) rows (sentence-transformers'
  ``MultipleNegativesRankingLoss`` on the re-normalized prefixes);
* a distillation loss on unlabelled corpus documents and queries: the KL divergence from the frozen model's
  full-width in-batch similarity distribution to the prefix's (the full width itself with a larger weight,
  so that its ranking stays that of the frozen model);
* a decorrelation penalty on the second moment of the outputs between each prefix and the dims after it.
  A rotation that an index fits to these vectors then finds the prefixes where they are, so the trained
  prefixes survive mrl's own rotation instead of being mixed away by it.

With ``orthogonal`` the head is one orthogonal map instead, ``y = Q R x`` with ``Q`` parametrised as the matrix
exponential of a skew-symmetric matrix (torch's ``orthogonal`` parametrisation), starting at the identity: every
full-width inner product is the frozen model's, so the full width gives up nothing by construction, and the
training can only move which directions come first (AdaWidth, below). Its loss drops the full-width distillation,
which is then constant.

Training runs on embeddings, not text: the corpus and the training texts are encoded once by the frozen
model, and a few hundred steps take seconds on a CPU. The result is appended to the model as standard
sentence-transformers modules (``Dense`` for R, a residual ``Dense`` with tanh for W, ``Normalize``), so the
folder loads with ``SentenceTransformer(folder)`` anywhere.

Example::

    import numpy as np
    from mrl.train.adaptor import AdaptorConfig, train_adaptor

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((2000, 32)).astype(np.float32)
    q, p = corpus[:200] + 0.1 * rng.standard_normal((200, 32)).astype(np.float32), corpus[:200]
    adaptor, history = train_adaptor(AdaptorConfig(dims=[32, 8], steps=20), (q, p), corpus, q)
    adaptor.embed(corpus[:3]).shape          # (3, 32), unit rows

References:
    - Yoon et al., Matryoshka-Adaptor: Unsupervised and Supervised Tuning for Smaller Embedding Dimensions,
      EMNLP 2024, https://arxiv.org/abs/2407.20243
    - Kusupati et al., Matryoshka Representation Learning, https://arxiv.org/abs/2205.13147
    - AdaWidth: an orthogonal adaptor on a frozen encoder and a per-query width router, arXiv 2608.23862
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mrl.errors import MrlError


@dataclass
class AdaptorConfig:
    """Everything that determines an adaptor's training; stored in the model's ``mrl.json``."""

    dims: list[int] = field(default_factory=lambda: [384, 256, 128, 64, 32])
    dim_weights: list[float] | None = None  # default: 2 on the two smallest dims, 1 elsewhere
    steps: int = 300
    learning_rate: float = 1e-3
    batch_size: int = 32  # labelled rows a step
    unlabeled_batch: int = 256  # corpus documents a step
    query_batch: int = 64  # unlabelled queries a step (when given)
    distill_weight: float = 1.0  # KL from the full width's similarities to each prefix's
    full_weight: float = 5.0  # the same KL at full width, from the frozen model: its ranking is kept
    decorrelation: float = 1000.0
    scale: float = 20.0  # inverse temperature of the similarity softmaxes, as MNRL's scale
    seed: int = 42
    orthogonal: bool = False  # one orthogonal map, no residual head: full-width scores stay the frozen model's

    @classmethod
    def like(cls, config, **changes) -> AdaptorConfig:
        """The adaptor a :class:`~mrl.train.trainer.TrainConfig` asks for: its dims, weights, batch size and seed."""
        return cls(
            dims=list(config.dims), dim_weights=config.dim_weights, batch_size=config.batch_size, seed=config.seed,
            **changes,
        )  # fmt: skip

    def weights(self) -> list[float]:
        if self.dim_weights is not None:
            return list(self.dim_weights)
        smallest = sorted(self.dims)[:2]
        return [2.0 if d in smallest else 1.0 for d in self.dims]

    def validate(self, width: int) -> None:
        if not self.dims or any(d <= 0 or d > width for d in self.dims):
            raise MrlError(f"`dims`: every dim must lie between 1 and the model's width ({width})")
        if width not in self.dims:
            raise MrlError(f"`dims` must include the full width ({width}): the adaptor keeps its ranking")
        if self.dim_weights is not None and len(self.dim_weights) != len(self.dims):
            raise MrlError(f"`dim_weights`: {len(self.dim_weights)} weights for {len(self.dims)} dims")
        if self.orthogonal and len(self.dims) < 2:
            raise MrlError("`orthogonal` keeps the full width as it is: give `dims` below it to train")
        if self.orthogonal and self.dim_weights is not None and self.dim_weights[self.dims.index(width)]:
            weight = self.dim_weights[self.dims.index(width)]
            raise MrlError(
                f"`dim_weights`: an orthogonal adaptor keeps the full width as it is, so its weight ({weight:g}) would "
                "have no effect: give it 0"
            )
        if self.steps <= 0 or self.learning_rate <= 0 or self.batch_size <= 1:
            raise MrlError("`adaptor_steps`, the learning rate and the batch size must be positive (batch >= 2)")


class MatryoshkaAdaptor:
    """The trained head: ``embed(x)`` applies it to the frozen model's vectors; ``append_to(model)`` saves it.

    ``weight`` and ``bias`` are None for an orthogonal adaptor, whose ``rotation`` is the whole map.
    """

    def __init__(self, rotation: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None):
        self.rotation, self.weight, self.bias = rotation, weight, bias

    def embed(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float32) @ self.rotation.T
        y = z if self.weight is None else z + np.tanh(z @ self.weight.T + self.bias)
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def append_to(self, model):
        """Append the head to a sentence-transformers model as Dense (R), residual Dense (tanh), Normalize (an
        orthogonal adaptor: Dense (Q R), Normalize)."""
        import torch
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize

        width = self.rotation.shape[0]
        device = next(model.parameters()).device
        rotate = Dense(
            width,
            width,
            bias=False,
            activation_function=torch.nn.Identity(),
            init_weight=torch.from_numpy(self.rotation),
        )
        model.append(rotate.to(device))
        if self.weight is not None:
            head = Dense(
                width,
                width,
                activation_function=torch.nn.Tanh(),
                init_weight=torch.from_numpy(self.weight),
                init_bias=torch.from_numpy(self.bias),
                use_residual=True,
            )
            model.append(head.to(device))
        model.append(Normalize())
        return model


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def train_adaptor(
    config: AdaptorConfig,
    labelled: tuple[np.ndarray, ...],
    corpus: np.ndarray,
    queries: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
) -> tuple[MatryoshkaAdaptor, list[dict]]:
    """Train an adaptor on embeddings of the frozen model; returns it and a loss history (every 25 steps).

    ``labelled`` holds aligned (anchor, positive[, negative]) embedding arrays; ``corpus`` unlabelled documents
    (the rotation is fitted on them unless ``rotation`` is given); ``queries`` unlabelled queries, if any.
    """
    import torch
    import torch.nn.functional as F
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.losses.matryoshka import shrink

    from mrl.vectors.rotation import check_rotation_sample, fit_rotation

    width = corpus.shape[1]
    config.validate(width)
    if len(labelled) not in (2, 3) or len({len(x) for x in labelled}) != 1:
        raise MrlError("labelled rows: aligned (anchor, positive[, negative]) embeddings")
    if len(labelled[0]) < config.batch_size:
        raise MrlError(f"{len(labelled[0])} labelled rows are fewer than the batch size {config.batch_size}")
    if rotation is None:
        check_rotation_sample(len(corpus), width, "`adaptor_corpus`", "give a larger corpus")
        rotation = fit_rotation(corpus)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cols = [torch.from_numpy(_unit(x)) for x in labelled]
    docs = torch.from_numpy(_unit(corpus))
    qs = torch.from_numpy(_unit(queries)) if queries is not None and len(queries) else None
    start = torch.from_numpy(np.ascontiguousarray(rotation, dtype=np.float32))
    if config.orthogonal:
        # Q R with Q = exp(A - A^T), A starting at zero: orthogonal at every step, the identity at the start
        turn = torch.nn.utils.parametrizations.orthogonal(
            torch.nn.Linear(width, width, bias=False), orthogonal_map="matrix_exp", use_trivialization=False
        )
        torch.nn.init.zeros_(turn.parametrizations.weight.original)
        params = list(turn.parameters())

        def forward(x):
            return F.normalize(x @ (turn.weight @ start).T, dim=-1)
    else:
        R = torch.nn.Parameter(start.clone())
        head = torch.nn.Linear(width, width)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        params = [R, *head.parameters()]

        def forward(x):
            z = x @ R.T
            return F.normalize(z + torch.tanh(head(z)), dim=-1)

    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    rank = MultipleNegativesRankingLoss(model=None, scale=config.scale)
    dims, weights = config.dims, config.weights()
    ident = None

    history, sums = [], {"rank": 0.0, "distill": 0.0, "decorrelation": 0.0}
    for step in range(1, config.steps + 1):
        rows = rng.choice(len(cols[0]), config.batch_size, replace=False)
        out = [forward(c[rows]) for c in cols]
        batch = [docs[rng.choice(len(docs), min(config.unlabeled_batch, len(docs)), replace=False)]]
        if qs is not None:
            batch.append(qs[rng.choice(len(qs), min(config.query_batch, len(qs)), replace=False)])
        x = torch.cat(batch)
        if ident is None or len(ident) != len(x):
            ident = torch.eye(len(x)) * 1e4  # a text is not its own neighbour
        with torch.no_grad():
            teacher = F.softmax(x @ x.T * config.scale - ident, dim=-1)
        y = forward(x)
        losses = {"rank": 0.0, "distill": 0.0}
        for dim, w in zip(dims, weights, strict=True):
            if config.orthogonal and dim == width:
                continue  # an orthogonal map keeps every full-width score: nothing to learn or keep there
            losses["rank"] = losses["rank"] + w * rank.compute_loss_from_embeddings([shrink(e, dim) for e in out], None)
            s = shrink(y, dim) @ shrink(y, dim).T * config.scale - ident
            kl = F.kl_div(F.log_softmax(s, dim=-1), teacher, reduction="batchmean")
            losses["distill"] = (
                losses["distill"] + w * (config.full_weight if dim == width else config.distill_weight) * kl
            )
        moment = y.T @ y / len(y)
        energy = moment.diagonal().sum() ** 2
        decor = sum((moment[:d, d:] ** 2).sum() for d in sorted(dims) if d < width) / energy
        loss = losses["rank"] + losses["distill"] + config.decorrelation * decor
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for key, value in (*losses.items(), ("decorrelation", decor)):
            sums[key] += float(value.detach()) if torch.is_tensor(value) else float(value)
        if step % 25 == 0 or step == config.steps:
            n = 25 if step % 25 == 0 else step % 25
            history.append({"step": step, **{k: round(v / n, 4) for k, v in sums.items()}})
            sums = dict.fromkeys(sums, 0.0)
    with torch.no_grad():
        if config.orthogonal:
            adaptor = MatryoshkaAdaptor((turn.weight @ start).numpy().copy())
        else:
            adaptor = MatryoshkaAdaptor(R.numpy().copy(), head.weight.numpy().copy(), head.bias.numpy().copy())
    return adaptor, history


def config_json(config: AdaptorConfig) -> dict:
    return {**asdict(config), "dim_weights": config.weights()}
