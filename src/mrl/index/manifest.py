"""The index manifest: what was built, with which settings, and which immutable files hold it.

Every committed state of an index is a *generation*: ``manifest-<gen>.json`` names the vector
segments, the ANN file and the tombstone file of that state; ``CURRENT`` names the live generation.
Writers never modify a file that a manifest names; they write new files and then switch
``CURRENT`` atomically. That is what makes a killed writer harmless and lets readers run during writes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mrl.errors import MrlError
from mrl.vectors.files import atomic_write, atomic_write_json

# 2: full vectors may be stored rotated (``rotation_file``); 3: stored as int8 or truncated (``keep_dims``);
# 4: the first pass may be a zvec collection (``ann="zvec"``).
# An index records the oldest version that reads it (required_version), so older releases still open the rest.
FORMAT_VERSION = 4
CURRENT = "CURRENT"
SHARD_MARKER = "shard.json"  # which sharded build a folder is a shard of (mrl.index.shards); never garbage
MAX_RACES = 50  # retries when a concurrent writer commits twice between reading CURRENT and its files


@dataclass
class Manifest:
    model: str | None
    full_dim: int
    prefix_dim: int
    ann: str  # hnsw | ivf | flat | vamana | zvec
    quant: str  # sq8 | sq4 | fp32 | pq4: how the ANN stores the prefix
    store: str  # float32 | float16 | int8: how the rerank vectors are stored
    ann_params: dict = field(default_factory=dict)
    generation: int = 0
    rows: int = 0  # rows in all segments, deleted ones included
    live: int = 0
    segments: list[dict] = field(default_factory=list)  # {"file": ..., "rows": n}
    ann_file: str = ""
    tombstones_file: str | None = None
    tuned: dict | None = None  # {"target_recall", "k", "shortlist", "ann_search", "measured_recall"}
    rotation_file: str | None = None  # d x d matrix the stored vectors were rotated by (mrl.index.rotation)
    format_version: int = 1  # the oldest format that reads this index: an older mrl must not misread a rotated one
    keep_dims: int | None = None  # only the first keep_dims (rotated) dims are stored and reranked on; None: all
    int8_scale: list[float] | None = None  # store="int8": per-dim scale, value = code * scale (calibrated at build)

    @property
    def stored_dim(self) -> int:
        """Width of the stored rerank vectors: ``keep_dims`` when the tail was dropped, else the model's."""
        return self.keep_dims or self.full_dim

    def required_version(self) -> int:
        """The oldest format version that reads this index correctly."""
        if self.ann == "zvec":
            return 4
        if self.keep_dims or self.store == "int8":
            return 3
        return 2 if self.rotation_file else 1

    def files(self) -> set[str]:
        """The files of this generation (an index created empty has no first pass until its first rows)."""
        names = {s["file"] for s in self.segments}
        names |= {f for f in (self.ann_file, self.tombstones_file, self.rotation_file) if f}
        return names


def manifest_name(generation: int) -> str:
    return f"manifest-{generation:08d}.json"


def read_current(folder: Path) -> Manifest:
    """The live manifest; clear errors for a folder that is not an index or is from a newer mrl."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MrlError(f"{folder}: index folder not found")
    pointer = folder / CURRENT
    if not pointer.is_file():
        raise MrlError(f"{folder}: not an mrl index (no {CURRENT} file)")
    for _ in range(MAX_RACES):
        name = pointer.read_text().strip()
        try:
            data = json.loads((folder / name).read_text())
            break
        except FileNotFoundError:
            if pointer.read_text().strip() != name:
                continue  # two commits collected this manifest after we read CURRENT: read the newer one
            raise MrlError(f"{folder / name}: manifest named by {CURRENT} is missing") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise MrlError(f"{folder / name}: unreadable manifest ({exc})") from None
    else:
        raise MrlError(f"{folder}: the index changed {MAX_RACES} times while reading it; try again")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MrlError(
            f"{folder}: index format version {version} was written by a newer mrl (this one reads <= {FORMAT_VERSION});"
            " upgrade mrl"
        )
    known = set(Manifest.__dataclass_fields__)
    return Manifest(**{k: v for k, v in data.items() if k in known})


def commit(folder: Path, manifest: Manifest) -> None:
    """Durably write the manifest of a new generation, then make it current (the commit point)."""
    name = manifest_name(manifest.generation)
    atomic_write_json(folder / name, asdict(manifest))
    atomic_write(folder / CURRENT, lambda h: h.write(name.encode()))


def collect_garbage(folder: Path, keep_generations: int = 2) -> None:
    """Delete files no manifest among the newest ``keep_generations`` names (and stray temp files).

    Keeping the previous generation lets a reader that read the old CURRENT a moment ago still open its files.
    """
    manifests = sorted(folder.glob("manifest-*.json"))
    keep = manifests[-keep_generations:]
    referenced: set[str] = {CURRENT, "write.lock", "docs.sqlite", SHARD_MARKER, *(m.name for m in keep)}
    for m in keep:
        data = json.loads(m.read_text())
        referenced |= Manifest(**{k: v for k, v in data.items() if k in Manifest.__dataclass_fields__}).files()
    for path in folder.iterdir():
        if path.name in referenced or path.name.startswith("docs.sqlite"):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir() and (".svs" in path.name or ".zvec" in path.name):  # a graph folder or its temp folder
            shutil.rmtree(path, ignore_errors=True)
