"""A sharded embedded index: N embedded indexes, each holding the documents whose id hashes to it, in one folder.

Layout::

    idx/big/shards.json      the build: its id, the shard count, the hash, each shard's folder and size
    idx/big/shard-00/        an embedded index (mrl.index.embedded) with shard.json naming its build and number
    idx/big/shard-01/        ...

A document's shard is ``blake2b-64(id) mod N`` (:func:`shard_of`): stable across processes, machines and Python
versions (Python's own ``hash`` of a string is salted per process), so a write finds its owner without a lookup.

Every shard is built in the same basis (one rotation, fitted on the whole corpus's sample exactly as a single build
fits it), so a shard's prefix scores are the single index's prefix scores: the union of the shards' top-k'
shortlists holds the single index's top-k' shortlist, and after the exact rerank the merged top k is at least as
good (:mod:`mrl.index.router`). ``shards.json`` is written last: a folder without it is no index, and a build that
stops before it leaves nothing that opens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.build import sample_chunks, sample_moment, sample_rows
from mrl.index.engines import engine
from mrl.index.generation import BUILD_CHUNK
from mrl.index.interface import AUTO, check_build_inputs
from mrl.index.manifest import SHARD_MARKER
from mrl.vectors.files import atomic_write_json
from mrl.vectors.rotation import rotation_from_moment

SHARDS_FILE = "shards.json"
HASH = "blake2b-64"
MAX_SHARDS = 1024


def shard_of(doc_id: str, shards: int) -> int:
    """The shard that owns ``doc_id`` among ``shards``: the first 8 bytes of its BLAKE2b digest, mod ``shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def shard_numbers(ids: Sequence[str], shards: int) -> np.ndarray:
    """:func:`shard_of` of each id, as an array."""
    return np.fromiter((shard_of(i, shards) for i in ids), dtype=np.int64, count=len(ids))


def check_shard_count(shards: int, documents: int | None = None) -> None:
    """Refuse a shard count that is no count, or more shards than documents (a shard would be empty)."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise MrlError(f"`shards` must be a whole number between 1 and {MAX_SHARDS}, got {shards!r}")
    if documents is not None and shards > documents:
        raise MrlError(f"`shards`: {shards} shards for {documents} documents would leave shards empty")


def assign_shards(ids: Sequence[str], shards: int) -> np.ndarray:
    """Each id's shard, after refusing a shard count that is no count, exceeds the documents, or leaves a shard with
    no document (the ids hash unevenly at small counts)."""
    check_shard_count(shards, len(ids))
    owners = shard_numbers(ids, shards)
    empty = [s for s in range(shards) if not (owners == s).any()]
    if empty:
        raise MrlError(f"`shards`: no document id hashes to shard {empty[0]} of {shards}; use fewer shards")
    return owners


def is_sharded(location: str | Path) -> bool:
    """Whether ``location`` is a sharded index folder (it holds ``shards.json``)."""
    return "://" not in str(location) and (Path(location) / SHARDS_FILE).is_file()


@dataclass
class ShardLayout:
    """What ``shards.json`` records: the build's id, its shards' folders (relative) and their sizes."""

    build_id: str
    shards: int
    folders: list[str]
    documents: list[int]
    model: str | None
    full_dim: int
    hash: str = HASH
    format: str = "mrl-shards"
    version: int = 1

    @classmethod
    def new(cls, build_id: str, owners: np.ndarray, shards: int, model: str | None, full_dim: int) -> ShardLayout:
        """The layout of a build whose documents go to ``owners`` (each document's shard)."""
        return cls(
            build_id=build_id,
            shards=shards,
            folders=[shard_folder_name(s, shards) for s in range(shards)],
            documents=[int((owners == s).sum()) for s in range(shards)],
            model=model,
            full_dim=full_dim,
        )

    def retire_old(self, root: Path) -> None:
        """Before any shard of this build is written into ``root``: an old build there stops being an index (its
        ``shards.json`` goes first), and the folders of shards this build has not are removed."""
        (Path(root) / SHARDS_FILE).unlink(missing_ok=True)
        for stale in [p for p in Path(root).glob("shard-*") if p.name not in self.folders]:
            shutil.rmtree(stale)

    @classmethod
    def read(cls, folder: Path) -> ShardLayout:
        path = Path(folder) / SHARDS_FILE
        try:
            data = json.loads(path.read_text())
            layout = cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise MrlError(f"{path}: not a readable mrl shards file ({exc})") from None
        if layout.format != "mrl-shards" or layout.hash != HASH or len(layout.folders) != layout.shards:
            raise MrlError(f"{path}: not an mrl shards file of this version (hash {layout.hash})")
        return layout

    def write(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / SHARDS_FILE, asdict(self))

    def shard_folder(self, root: Path, shard: int) -> Path:
        return Path(root) / self.folders[shard]

    def check(self, root: Path) -> None:
        """Refuse to serve a layout whose shard folders are missing or belong to another build, naming the shard."""
        for shard in range(self.shards):
            folder = self.shard_folder(root, shard)
            marker = folder / SHARD_MARKER
            if not (folder / "CURRENT").is_file():
                raise MrlError(f"shard {shard}: {folder} is missing or is not an mrl index (rebuild the sharded index)")
            try:
                mark = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                raise MrlError(
                    f"shard {shard}: {folder} has no readable {SHARD_MARKER}: not a shard of this build"
                ) from None
            if mark.get("build_id") != self.build_id or mark.get("shard") != shard or mark.get("shards") != self.shards:
                raise MrlError(
                    f"shard {shard}: {folder} is shard {mark.get('shard')} of {mark.get('shards')} of build "
                    f"{mark.get('build_id')}, not shard {shard} of {self.shards} of build {self.build_id} (a folder "
                    "copied from another build)"
                )


def mark_shard(folder: Path, build_id: str, shard: int, shards: int) -> None:
    """Write the marker that ties an embedded index folder to its place in one sharded build."""
    atomic_write_json(Path(folder) / SHARD_MARKER, {"build_id": build_id, "shard": shard, "shards": shards})


def shard_folder_name(shard: int, shards: int) -> str:
    return f"shard-{shard:0{max(2, len(str(shards - 1)))}d}"


def prepare_folder(folder: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite`` and it is a sharded mrl index (never wipe a stranger's files)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise MrlError(f"{folder}: folder exists and is not empty (pass `overwrite` to replace the index)")
        if not is_sharded(folder) and not (folder / ".staging").is_dir():
            raise MrlError(f"{folder}: refusing to overwrite a folder that is not a sharded mrl index")


def build_rotation(vectors: np.ndarray, ann: str, ann_params: dict | None, chunk_rows: int) -> np.ndarray:
    """The basis every shard shares: fitted on the same fixed sample of the whole corpus, in the same chunks, as a
    single build of these vectors fits its own (:func:`mrl.index.build.write_index`): so it is that basis."""
    chosen = sample_rows(len(vectors), ann, {**engine(ann).defaults, **(ann_params or {})})
    return rotation_from_moment(sample_moment(unit for _, unit in sample_chunks(vectors, chosen, chunk_rows)))


def build_sharded(
    folder: str | Path,
    vectors: np.ndarray,
    documents: list[Document],
    shards: int,
    *,
    model: str | None = None,
    overwrite: bool = False,
    rotate: bool = True,
    prefix_dim: int | str = AUTO,
    ann: str | None = None,
    ann_params: dict | None = None,
    chunk_rows: int = BUILD_CHUNK,
    report: Callable[[str], None] | None = None,
    **build_options,
) -> ShardLayout:
    """Build ``shards`` embedded indexes in ``folder`` from full-width ``vectors``, a document to the shard its id
    hashes to (:func:`shard_of`), all in one basis; returns the layout. ``build_options`` go to each shard's
    :meth:`mrl.index.embedded.Index.build` (``quant``, ``store``, ``keep_dims``, ``target_recall`` ...). The Ray
    build (:mod:`mrl.cluster.build`) makes the same layout from vectors encoded on a cluster.
    """
    from mrl.index.embedded import Index
    from mrl.index.engines import DEFAULT_ANN

    folder = Path(folder)
    check_shard_count(shards, len(documents))
    ann = ann or DEFAULT_ANN
    width = prefix_dim if prefix_dim != AUTO else vectors.shape[1] if vectors.ndim == 2 else 1
    check_build_inputs(vectors, documents, width, build_options.get("store", "float32"))
    prepare_folder(folder, overwrite)
    owners = assign_shards([d.id for d in documents], shards)
    rotation = build_rotation(vectors, ann, ann_params, chunk_rows) if rotate else None
    layout = ShardLayout.new(uuid.uuid4().hex, owners, shards, model, int(vectors.shape[1]))
    layout.retire_old(folder)
    folder.mkdir(parents=True, exist_ok=True)

    for shard in range(shards):
        rows = np.flatnonzero(owners == shard)
        target = layout.shard_folder(folder, shard)
        if target.exists():
            shutil.rmtree(target)
        if report:
            report(f"shard {shard}: {len(rows):,} documents")
        Index.build(
            target, vectors[rows], [documents[i] for i in rows], model=model, prefix_dim=prefix_dim, ann=ann,
            ann_params=ann_params, overwrite=True, rotate=rotate, rotation=rotation, chunk_rows=chunk_rows,
            report=report, **build_options,
        ).close()  # fmt: skip
        mark_shard(target, layout.build_id, shard, shards)
    layout.write(folder)  # the commit point: until here no reader opens a half-built index
    return layout
