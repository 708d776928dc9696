"""The training recipe, in one place: mine hard negatives, then fit a Matryoshka adaptor on a frozen model (the
recommended recipe) or fine-tune with ``MatryoshkaLoss`` (after appending the corpus rotation when asked).

``mrl train``, ``mrl run`` and ``benchmarks/train_scifact.py`` all call it, so the recipe the README recommends is
the one they run. :func:`mine` and :func:`fit` are its two steps, for callers that keep them apart (``mrl run``
mines once in its data stage and fits each model in its own stage); :func:`run_recipe` does both.

Example (the recommended recipe: a plain fine-tune first, then an adaptor on it)::

    from mrl.data import load_pairs
    from mrl.data.beir import load_corpus
    from mrl.train.adaptor import AdaptorConfig
    from mrl.train.recipe import Recipe, run_recipe
    from mrl.train.trainer import TrainConfig

    pairs = load_pairs("pairs.jsonl")
    corpus = load_corpus("../shared/data/scifact/corpus.jsonl")
    control = Recipe(TrainConfig(model="default", matryoshka=False, epochs=5))
    run_recipe(control, "models/control", pairs=pairs, mine_from=corpus)
    config = TrainConfig(model="models/control", dims=[384, 256, 128, 64, 32])
    adaptor = Recipe(config, AdaptorConfig.like(config))
    run_recipe(adaptor, "models/mrl", pairs=pairs, mine_from=corpus)

References: Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022, arXiv:2205.13147);
Yoon et al., "Matryoshka-Adaptor" (EMNLP 2024, arXiv:2407.20243).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mrl.data import BeirDataset, Pair, Triplet
from mrl.data.beir import texts_fingerprint
from mrl.encode import EmbeddingCache
from mrl.train.adaptor import AdaptorConfig
from mrl.train.mining import mine_hard_negatives
from mrl.train.trainer import TrainConfig, train, train_adaptor_model


@dataclass
class Mining:
    """How :func:`mine` picks one negative per pair (see :func:`mrl.train.mining.mine_hard_negatives`)."""

    skip_top: int = 0
    margin: float = 0.05
    depth: int = 50


@dataclass
class Recipe:
    """What to train: ``config`` (the model, dims, loss, epochs...) and, for the adaptor recipe, ``adaptor``."""

    config: TrainConfig
    adaptor: AdaptorConfig | None = None  # set: freeze config.model and fit an adaptor on its embeddings
    mining: Mining = field(default_factory=Mining)


def mine(
    model, pairs: list[Pair], corpus: dict[str, str], mining: Mining | None = None, cache: EmbeddingCache | None = None
) -> tuple[list[Triplet], dict[str, int]]:
    """The pairs as triplets, each with one negative mined from ``corpus`` by ``model``; and what was skipped."""
    m = mining or Mining()
    return mine_hard_negatives(model, pairs, corpus, cache=cache, skip_top=m.skip_top, margin=m.margin, depth=m.depth)


def fit(
    recipe: Recipe,
    out: str | Path,
    triplets: list[Triplet] | None = None,
    pairs: list[Pair] | None = None,
    corpus: dict[str, str] | None = None,
    dev: BeirDataset | None = None,
    model=None,
    cache: EmbeddingCache | None = None,
    overwrite: bool = False,
    resume: bool = False,
    extra_metadata: dict | None = None,
) -> dict:
    """Fit the adaptor (``corpus``: its unlabelled documents) or fine-tune (``corpus``: where the rotation is fitted
    when ``config.rotate``); returns the saved model's ``mrl.json`` metadata."""
    config = recipe.config
    if recipe.adaptor is not None:
        return train_adaptor_model(
            config, out, corpus or {}, triplets, pairs, dev, overwrite, model=model, cache=cache,
            adaptor=recipe.adaptor, extra_metadata=extra_metadata,
        )  # fmt: skip
    rotation_vectors = None
    if config.rotate and not resume and corpus:
        from mrl.model import load_model

        model = model or load_model(config.model)
        rotation_vectors, _ = (cache or EmbeddingCache()).get_or_encode(
            model, texts_fingerprint(corpus), list(corpus.values())
        )
    return train(
        config, out, triplets, pairs, dev, overwrite=overwrite, resume=resume, extra_metadata=extra_metadata,
        model=model, rotation_vectors=rotation_vectors,
    )  # fmt: skip


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    triplets: list[Triplet] | None = None,
    pairs: list[Pair] | None = None,
    mine_from: dict[str, str] | None = None,
    corpus: dict[str, str] | None = None,
    dev: BeirDataset | None = None,
    model=None,
    cache: EmbeddingCache | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict:
    """Mine negatives for ``pairs`` from ``mine_from`` (when given), then :func:`fit`; ``corpus`` defaults to
    ``mine_from``. The metadata records what mining skipped."""
    from mrl.model import load_model

    model = model or load_model(recipe.config.model)
    triplets, pairs, extra = list(triplets or []), list(pairs or []), {}
    if mine_from is not None and pairs:
        mined, counts = mine(model, pairs, mine_from, recipe.mining, cache)
        triplets, pairs, extra = triplets + mined, [], {"mining": counts}
    return fit(
        recipe, out, triplets, pairs, corpus if corpus is not None else mine_from, dev, model=model, cache=cache,
        overwrite=overwrite, resume=resume, extra_metadata=extra,
    )  # fmt: skip
