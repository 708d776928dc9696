"""Fine-tuning a Sentence-Transformers model with MatryoshkaLoss (or the plain inner loss as a control).

Built on ``SentenceTransformerTrainer``: checkpoints, resume, fp16/bf16 on GPU and multi-GPU through
accelerate/torchrun come from there. mrl adds the loss set-up, per-dim loss logging, a per-dim dev
evaluation each epoch, and the ``mrl.json`` metadata that makes a trained folder self-describing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mrl.data import BeirDataset, Pair, Triplet
from mrl.errors import MrlError
from mrl.model import METADATA_FILE, embedding_dim, load_model
from mrl.model.card import write_model_card
from mrl.train.adaptor import AdaptorConfig
from mrl.train.calibration import int8_calibration

LOSSES = ("mnrl", "cached-mnrl", "triplet")
CHECKPOINTS = "checkpoints"


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored verbatim in the model's ``mrl.json``."""

    model: str | None = None
    dims: list[int] = field(default_factory=lambda: [384, 256, 128, 64])
    loss: str = "mnrl"
    matryoshka: bool = True
    dim_weights: list[float] | None = None
    n_dims_per_step: int = -1
    epochs: float = 3.0
    batch_size: int = 32
    mini_batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    triplet_margin: float = 0.3
    max_seq_length: int | None = None
    max_steps: int = -1
    seed: int = 42
    rotate: bool = False  # append a rotation fitted to the corpus before training (mrl.model.append_rotation)
    distill_weight: float = 0.0  # > 0: each prefix also learns the full vector's ranking (MatryoshkaDistillLoss)

    def validate(self, width: int) -> None:
        if self.loss not in LOSSES:
            raise MrlError(f"`loss` '{self.loss}' is not one of {', '.join(LOSSES)}")
        if not self.dims:
            raise MrlError("`dims`: give at least one dim")
        for d in self.dims:
            if d <= 0:
                raise MrlError(f"`dims`: {d} is not a positive integer")
            if d > width:
                raise MrlError(f"`dims`: {d} is larger than the model's embedding width ({width})")
        if len(set(self.dims)) != len(self.dims):
            raise MrlError("`dims`: a dim is repeated")
        if self.dim_weights is not None:
            if len(self.dim_weights) != len(self.dims):
                raise MrlError(f"`dim_weights`: {len(self.dim_weights)} weights for {len(self.dims)} dims")
            if any(w < 0 for w in self.dim_weights) or not any(self.dim_weights):
                raise MrlError("`dim_weights`: weights must be >= 0 and not all 0")
        if self.n_dims_per_step == 0 or self.n_dims_per_step < -1:
            raise MrlError("`n_dims_per_step`: -1 (all dims) or a positive number")
        for name in ("batch_size", "mini_batch_size"):
            if getattr(self, name) <= 0:
                raise MrlError(f"--{name.replace('_', '-')} must be positive")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise MrlError("`epochs` must be positive")
        if self.triplet_margin <= 0:
            raise MrlError("`triplet_margin` must be positive")
        if self.distill_weight < 0:
            raise MrlError("`distill_weight` must be >= 0")
        if self.distill_weight > 0 and (not self.matryoshka or self.loss != "mnrl"):
            raise MrlError("`distill_weight` needs Matryoshka training with `loss` mnrl")


def data_fingerprint(triplets: list[Triplet], pairs: list[Pair]) -> str:
    h = hashlib.sha256()
    for t in triplets:
        h.update(f"{t.anchor}\0{t.positive}\0{t.negative}\1".encode())
    for p in pairs:
        h.update(f"{p.anchor}\0{p.positive}\2".encode())
    return h.hexdigest()[:16]


def build_loss(model, config: TrainConfig):
    """The inner loss, wrapped in a recording MatryoshkaLoss unless this is the control run.

    With ``distill_weight`` > 0 the wrapper is :class:`~mrl.losses.MatryoshkaDistillLoss`, which adds
    each prefix's distance to the full vector's ranking. The triplet loss uses cosine distance with a
    margin of ``triplet_margin``: the library default (Euclidean, margin 5) can never be satisfied by
    unit vectors, whose distances are at most 2.
    """
    from sentence_transformers.sentence_transformer import losses

    if config.loss == "mnrl":
        inner = losses.MultipleNegativesRankingLoss(model)
    elif config.loss == "cached-mnrl":
        inner = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    else:
        inner = losses.TripletLoss(
            model, distance_metric=losses.TripletDistanceMetric.COSINE, triplet_margin=config.triplet_margin
        )
    if not config.matryoshka:
        return inner
    from mrl.train.losses import MatryoshkaDistillLoss, RecordingMatryoshkaLoss

    if config.distill_weight > 0:
        return MatryoshkaDistillLoss(model, inner, config.dims, config.dim_weights, config.distill_weight)
    return RecordingMatryoshkaLoss(model, inner, config.dims, config.dim_weights, config.n_dims_per_step)


def _datasets(triplets: list[Triplet], pairs: list[Pair], loss: str):
    from datasets import Dataset, DatasetDict

    parts = {}
    if triplets:
        parts["triplets"] = Dataset.from_dict(
            {
                "anchor": [t.anchor for t in triplets],
                "positive": [t.positive for t in triplets],
                "negative": [t.negative for t in triplets],
            }
        )
    if pairs:
        if loss == "triplet":
            raise MrlError("the triplet loss needs negatives: mine them (`mine_negatives_from`) or use `loss` mnrl")
        parts["pairs"] = Dataset.from_dict(
            {"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs]}
        )
    if not parts:
        raise MrlError("no training data: give `triplets` and/or `pairs`")
    return next(iter(parts.values())) if len(parts) == 1 else DatasetDict(parts)


def _callbacks(loss, epoch_seconds: list[float]):
    from transformers import TrainerCallback

    class PerDimLoss(TrainerCallback):
        """Adds ``loss_dim_<d>`` (mean since the last log) to each training log line."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs or not hasattr(loss, "pop_dim_losses"):
                return
            extra = {f"loss_dim_{d}": round(v, 4) for d, v in loss.pop_dim_losses().items()}
            if hasattr(loss, "pop_distill_losses"):
                extra |= {f"distill_dim_{d}": round(v, 4) for d, v in loss.pop_distill_losses().items()}
            logs.update(extra)
            if state.log_history:
                state.log_history[-1].update(extra)

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            epoch_seconds.append(round(time.perf_counter() - self.start, 1))

    return [PerDimLoss(), EpochTimer()]


def last_complete_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (written last by the trainer) exists.

    A run killed while writing a checkpoint leaves a partial folder; resuming from it would fail.
    """
    done = [p for p in (out / CHECKPOINTS).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a folder unless asked; --resume needs the checkpoints of an earlier run."""
    if resume:
        if last_complete_checkpoint(out) is None:
            raise MrlError(
                f"{out}: `resume` needs a complete checkpoint from an interrupted run in {out / CHECKPOINTS}"
            )
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MrlError(f"{out}: output folder exists and is not empty (pass `overwrite` to replace it)")
        shutil.rmtree(out)


def train(
    config: TrainConfig,
    out: str | Path,
    triplets: list[Triplet] | None = None,
    pairs: list[Pair] | None = None,
    dev: BeirDataset | None = None,
    overwrite: bool = False,
    resume: bool = False,
    extra_metadata: dict | None = None,
    model=None,
    rotation_vectors=None,
) -> dict:
    """Train and save a normal Sentence-Transformers folder plus ``mrl.json``; returns that metadata.

    With ``config.rotate``, ``rotation_vectors`` are the starting model's embeddings of the corpus
    (see :func:`corpus_rotation`): the fitted rotation is appended to the model before training.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from mrl.eval.during_training import MatryoshkaRetrievalEvaluator

    out = Path(out)
    triplets, pairs = triplets or [], pairs or []
    model = model or load_model(config.model)
    width = embedding_dim(model)
    config.validate(width)
    if config.rotate and not resume:  # checked before anything on disk changes
        from mrl.vectors.rotation import check_rotation_sample

        if rotation_vectors is None:
            raise MrlError("`rotate` needs a corpus to fit the rotation on (`rotate_corpus`)")
        check_rotation_sample(len(rotation_vectors), width, "`rotate_corpus`", "give a larger corpus")
    prepare_output(out, overwrite, resume)
    rotation_meta = None
    if config.rotate:
        from mrl.model import append_rotation
        from mrl.vectors.rotation import fit_rotation

        if resume:  # the checkpoint holds the trained layer; this one only gives its weights a place to load into
            append_rotation(model, np.eye(width, dtype=np.float32))
        else:
            append_rotation(model, fit_rotation(rotation_vectors))
            rotation_meta = {"fitted_on_vectors": len(rotation_vectors)}
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    train_dataset = _datasets(triplets, pairs, config.loss)
    loss = build_loss(model, config)
    evaluator = MatryoshkaRetrievalEvaluator(dev, config.dims) if dev else None

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a fraction of all steps
        # MNRL treats other rows' positives as negatives: a repeated anchor or text would be a false negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        eval_strategy="epoch" if evaluator else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_dev_mean_ndcg@10" if evaluator else None,
        greater_is_better=True,
        logging_steps=max(1, min(10, config.max_steps if config.max_steps > 0 else 10)),
        seed=config.seed,
        bf16=bf16,
        fp16=cuda and not bf16,
        report_to="none",
        dataloader_pin_memory=cuda,
        disable_tqdm=False,
    )
    epoch_seconds: list[float] = []
    callbacks = _callbacks(loss, epoch_seconds)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator, callbacks=callbacks
    )
    # the per-dim callback must run before the progress printer so that the printed log line includes it
    trainer.callback_handler.callbacks.remove(callbacks[0])
    trainer.callback_handler.callbacks.insert(0, callbacks[0])
    started = time.perf_counter()
    checkpoint = last_complete_checkpoint(out) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started

    if evaluator:
        evaluator.rotate = True  # the final measurement, for mrl.json and the model card: rotated prefixes too
    final_dev = evaluator(model) if evaluator else None
    model.save(str(out))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    metadata = {
        "base_model": getattr(model, "mrl_source", config.model),
        "matryoshka_dims": sorted(config.dims, reverse=True) if config.matryoshka else None,
        "trained_dims": sorted(config.dims, reverse=True),
        "data_fingerprint": data_fingerprint(triplets, pairs),
        "examples": {"triplets": len(triplets), "pairs": len(pairs)},
        "config": asdict(config),
        "device": "cuda" if cuda else "cpu",
        "precision": "bf16" if bf16 else "fp16" if cuda else "fp32",
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": epoch_seconds,
        "log_history": trainer.state.log_history,
        "dev_history": evaluator.history if evaluator else [],
        "final_dev_metrics": final_dev,
        "rotation": rotation_meta,
        **(extra_metadata or {}),
    }
    documents = [t.positive for t in triplets] + [t.negative for t in triplets] + [p.positive for p in pairs]
    metadata |= int8_calibration(model, documents, config.dims, config.seed)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    write_model_card(out)
    return metadata


def train_adaptor_model(
    config: TrainConfig,
    out: str | Path,
    corpus: dict[str, str],
    triplets: list[Triplet] | None = None,
    pairs: list[Pair] | None = None,
    dev: BeirDataset | None = None,
    overwrite: bool = False,
    model=None,
    cache=None,
    adaptor: AdaptorConfig | None = None,
    extra_metadata: dict | None = None,
) -> dict:
    """Freeze ``config.model`` and train a Matryoshka adaptor on its embeddings (:mod:`mrl.adaptor`); save the folder.

    ``corpus`` gives the unlabelled documents (and the starting rotation); the training rows' anchors serve
    as unlabelled queries. The corpus is encoded through ``cache`` (an :class:`mrl.encode.EmbeddingCache`);
    a training text that is also a corpus document reuses that document's vector.
    """
    from mrl.data.beir import texts_fingerprint
    from mrl.encode import EmbeddingCache, encode_reusing
    from mrl.eval.during_training import MatryoshkaRetrievalEvaluator
    from mrl.train.adaptor import AdaptorConfig, config_json, train_adaptor

    out = Path(out)
    triplets, pairs = triplets or [], pairs or []
    if triplets and pairs:
        raise MrlError("the adaptor trains on triplets or on pairs, not a mix of the two")
    rows = triplets or pairs
    if not rows:
        raise MrlError("no training data: give `triplets` and/or `pairs`")
    model = model or load_model(config.model)
    width = embedding_dim(model)
    adaptor = adaptor or AdaptorConfig.like(config)
    adaptor.validate(width)
    if len(corpus) < width:
        from mrl.vectors.rotation import check_rotation_sample

        check_rotation_sample(len(corpus), width, "`adaptor_corpus`", "give a larger corpus")
    prepare_output(out, overwrite, resume=False)
    started = time.perf_counter()
    texts = list(corpus.values())
    docs, _ = (cache or EmbeddingCache()).get_or_encode(model, texts_fingerprint(corpus), texts)
    columns = ("anchor", "positive", "negative") if triplets else ("anchor", "positive")
    # every training text once, in one pass with a progress bar; a corpus document reuses its corpus row
    distinct = sorted({getattr(r, c) for r in rows for c in columns})
    row_of = {t: i for i, t in enumerate(distinct)}
    vectors = encode_reusing(model, distinct, {t: i for i, t in enumerate(texts)}, docs)

    def embed(column: list[str]) -> np.ndarray:
        return vectors[[row_of[t] for t in column]]

    labelled = tuple(embed([getattr(r, c) for r in rows]) for c in columns)
    queries = embed(sorted({r.anchor for r in rows}))
    head, history = train_adaptor(adaptor, labelled, docs, queries)
    head.append_to(model)
    train_seconds = time.perf_counter() - started
    evaluator = MatryoshkaRetrievalEvaluator(dev, adaptor.dims) if dev else None
    if evaluator:
        evaluator.rotate = True
    final_dev = evaluator(model) if evaluator else None
    model.save(str(out))
    metadata = {
        "base_model": getattr(model, "mrl_source", config.model),
        "matryoshka_dims": sorted(adaptor.dims, reverse=True),
        "trained_dims": sorted(adaptor.dims, reverse=True),
        "data_fingerprint": data_fingerprint(triplets, pairs),
        "examples": {"triplets": len(triplets), "pairs": len(pairs), "corpus": len(corpus)},
        "config": asdict(config),
        "adaptor": config_json(adaptor),
        "device": "cpu",
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": [],
        "log_history": [{"loss": h["rank"] + h["distill"], **h} for h in history],
        "dev_history": evaluator.history if evaluator else [],
        "final_dev_metrics": final_dev,
        "rotation": {"fitted_on_vectors": len(docs)},
        **(extra_metadata or {}),
    }
    metadata |= int8_calibration(model, list(corpus.values()), adaptor.dims, config.seed)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    write_model_card(out)
    return metadata
