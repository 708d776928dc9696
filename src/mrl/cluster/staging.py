"""Where a distributed build keeps its encoded vectors until the shards are built: ``<index>/.staging/``.

The corpus is cut into blocks of ``block_rows`` documents in corpus order. When every row of a block is encoded, the
block's vectors are written to each shard's folder (``shard-03/block-000012.npy``: that block's rows owned by shard 3,
in corpus order), and only then the block's marker (``done/block-000012``). A block is done when its marker exists,
so a build killed at any moment (the driver included) resumes with the same command, re-encoding at most the blocks
it had not finished; a block written twice (a retried Ray task) is written whole, once.

``plan.json`` pins what the staged vectors are of (the corpus's fingerprint, the model, the shard count, the block
size, the build's id): a rerun with anything else is refused instead of mixing two builds.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mrl.errors import MrlError
from mrl.index.build import sample_moment
from mrl.index.interface import unit_vectors
from mrl.vectors.files import atomic_write, atomic_write_json

STAGING = ".staging"


class Staging:
    """The staged blocks of one distributed build (see the module docstring)."""

    def __init__(self, index_folder: Path, plan: dict, owners: np.ndarray):
        self.root = Path(index_folder) / STAGING
        self.plan = plan
        self.owners = owners  # each document's shard, in corpus order
        self.block_rows = int(plan["block_rows"])
        self.documents = int(plan["documents"])

    @classmethod
    def open(cls, index_folder: Path, plan: dict, owners: np.ndarray) -> Staging:
        """Start staging ``plan``, or resume the staging of the same plan; refuse another build's blocks."""
        root = Path(index_folder) / STAGING
        path = root / "plan.json"
        if path.is_file():
            old = json.loads(path.read_text())
            differs = [key for key in plan if key != "build_id" and old.get(key) != plan[key]]
            if differs:
                raise MrlError(
                    f"{root}: blocks of another build are staged here ({differs[0]}: {old.get(differs[0])!r}, this "
                    f"build {plan[differs[0]]!r}); rerun that build's command to finish it, or pass `overwrite`"
                )
            plan = {**plan, "build_id": old["build_id"]}
        else:
            plan = {**plan, "build_id": plan.get("build_id") or uuid.uuid4().hex}
            (root / "done").mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, plan)
        return cls(index_folder, plan, owners)

    @property
    def build_id(self) -> str:
        return self.plan["build_id"]

    @property
    def blocks(self) -> int:
        return -(-self.documents // self.block_rows)

    def block_range(self, block: int) -> range:
        return range(block * self.block_rows, min((block + 1) * self.block_rows, self.documents))

    def done(self, block: int) -> bool:
        return (self.root / "done" / f"block-{block:06d}").is_file()

    def pending(self) -> list[int]:
        return [b for b in range(self.blocks) if not self.done(b)]

    def shard_dir(self, shard: int) -> Path:
        return staged_shard_dir(self.root.parent, shard)

    def write_block(self, block: int, vectors: np.ndarray) -> None:
        """Stage one whole block (rows in corpus order): each shard's rows to its folder, then the marker."""
        span = self.block_range(block)
        if vectors.shape[0] != len(span):
            raise MrlError(f"block {block}: {vectors.shape[0]} vectors for {len(span)} documents")
        owners = self.owners[span.start : span.stop]
        for shard in np.unique(owners):
            rows = vectors[owners == shard]
            folder = self.shard_dir(int(shard))
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / f"block-{block:06d}.npy", lambda h, rows=rows: np.save(h, rows))
        atomic_write_json(self.root / "done" / f"block-{block:06d}", {"rows": len(span)})

    def sample_units(self, sample: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
        """The unit vectors of the corpus rows ``sample`` (the fixed sample a single build of this corpus fits its
        rotation on: :func:`mrl.index.build.sample_rows`), in corpus order, a block at a time, read back from the
        shards' staged files."""
        for block in range(self.blocks):
            span = self.block_range(block)
            wanted = sample[(sample >= span.start) & (sample < span.stop)] - span.start
            if not len(wanted):
                continue
            owners = self.owners[span.start : span.stop]
            # a row's place in its shard's block file: how many rows of the same shard come before it in the block
            place = np.empty(len(owners), dtype=np.int64)
            for shard in np.unique(owners):
                mine = np.flatnonzero(owners == shard)
                place[mine] = np.arange(len(mine))
            files = {
                int(s): np.load(self.shard_dir(int(s)) / f"block-{block:06d}.npy", mmap_mode="r")
                for s in np.unique(owners[wanted])
            }
            rows = np.stack([files[int(owners[i])][place[i]] for i in wanted])
            for start in range(0, len(rows), chunk_rows):
                yield unit_vectors(rows[start : start + chunk_rows], rows.shape[1], "staged vectors")

    def moment(self, sample: np.ndarray, chunk_rows: int) -> np.ndarray:
        return sample_moment(self.sample_units(sample, chunk_rows))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def staged_shard_dir(index_folder: Path, shard: int) -> Path:
    return Path(index_folder) / STAGING / f"shard-{shard:04d}"


def staged_shard_vectors(index_folder: Path, shard: int) -> np.ndarray:
    """A shard's staged vectors in corpus order, once every block is done (a block with none of the shard's rows
    has no file); read where the shard is built, which may be another node sharing the folder."""
    return np.concatenate([np.load(path) for path in sorted(staged_shard_dir(index_folder, shard).glob("block-*.npy"))])
