"""Generations of an embedded index: what one committed state holds, how it loads, and trial first passes.

Every committed state of an index is a generation (:mod:`mrl.index.manifest`): its manifest names immutable files,
and :class:`Generation` is those files opened for searching, swapped into an :class:`~mrl.index.embedded.Index` as
one reference. :class:`WidthTrials` builds first passes at other prefix widths beside the committed generation,
for the tuner to measure, and commits the one it keeps. A write that fails removes its own files
(:func:`raise_failed_write`), so the live generation is never touched.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.errors import MrlError
from mrl.index.engines import FirstPass, engine
from mrl.index.hugepages import HugePageAdvice
from mrl.index.manifest import MAX_RACES, Manifest, collect_garbage, commit, read_current
from mrl.index.segments import Segment, decode_rows, keep_prefix
from mrl.vectors.files import free_bytes
from mrl.vectors.rotation import rotate_rows
from mrl.vectors.sampling import training_rows

BUILD_CHUNK = 4096  # rows a build reads at a time: 6 MB of 384-dim float32, a few copies of it at a peak


@dataclass
class Generation:
    """Everything one committed generation needs for searching, swapped as one reference.

    A search takes ``g = index.gen`` once and uses only ``g``, so a concurrent commit in another
    thread can never mix one generation's ANN with another's vectors or tombstones.
    """

    manifest: Manifest
    segments: list[Segment]
    starts: np.ndarray
    ann: FirstPass
    deleted: np.ndarray
    rotation: np.ndarray | None

    @classmethod
    def load(cls, folder: Path, m: Manifest, io: str = "mmap", previous: Generation | None = None) -> Generation:
        """Open generation ``m``; ``io`` is how rerank rows are read (mmap or pread, mrl.index.segments).

        Segments that ``previous`` already opened (and checked) are shared, since a segment file never
        changes: a write opens and checks only the segment it added.
        """
        opened = {seg.path.name: seg for seg in previous.segments if seg.io == io} if previous else {}
        segments = [opened.get(s["file"]) or Segment(folder / s["file"], s, io) for s in m.segments]
        starts = np.cumsum([0] + [s["rows"] for s in m.segments])
        deleted = np.zeros(m.rows, dtype=bool)
        if m.tombstones_file:
            deleted[np.load(folder / m.tombstones_file)] = True
        if m.ann_file:
            ann = engine(m.ann).load(folder / m.ann_file, m.quant, hidden=np.flatnonzero(deleted))
        else:
            ann = NoFirstPass(engine(m.ann))
        rotation = np.load(folder / m.rotation_file) if m.rotation_file else None
        return cls(m, segments, starts, ann, deleted, rotation)

    @classmethod
    def load_current(cls, folder: Path, io: str = "mmap") -> Generation:
        """Load the live generation, retrying when another process's commits remove its files meanwhile.

        Garbage collection keeps the two newest generations, so a reader that read ``CURRENT`` and then
        lost the race against two commits finds its files gone, but also finds a newer ``CURRENT``:
        loading that one instead is exactly what it would have seen a moment later.
        """
        for _ in range(MAX_RACES):
            m = read_current(folder)
            try:
                return cls.load(folder, m, io)
            except (OSError, RuntimeError):  # faiss reports a missing file as RuntimeError
                if read_current(folder).generation == m.generation:
                    raise
        raise MrlError(f"{folder}: the index changed {MAX_RACES} times while opening it; try again")

    def flat_float32(self) -> np.ndarray | None:
        """The stored vectors as one mapped float32 matrix when they are one segment (a fresh build), else None."""
        arr = self.segments[0].array if len(self.segments) == 1 else None
        return arr if arr is not None and arr.dtype == np.float32 and arr.flags.c_contiguous else None

    def vectors(self, rows: np.ndarray, width: int | None = None) -> np.ndarray:
        """Stored rerank vectors of the given rows as float32 (``stored_dim`` wide, or their first ``width`` dims),
        in the order given."""
        scale = self.manifest.int8_scale
        if len(self.segments) == 1:
            return decode_rows(self.segments[0].rows(rows, width), scale)
        seg = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), width or self.manifest.stored_dim), dtype=np.float32)
        for s in np.unique(seg):
            mask = seg == s
            out[mask] = decode_rows(self.segments[s].rows(rows[mask] - self.starts[s], width), scale)
        return out

    @property
    def huge_pages(self) -> HugePageAdvice:
        return self.ann.huge_pages

    def stored_queries(self, unit_queries: np.ndarray) -> np.ndarray:
        """Queries in the basis and width of the stored rows: rotated, and cut to ``keep_dims`` if it is set."""
        return keep_prefix(rotate_rows(unit_queries, self.rotation), self.manifest.keep_dims)


class WidthTrials:
    """Candidate first passes of one index at several prefix widths (:meth:`Index.width_trials`).

    Each candidate is the index's own engine and codes (``ann``, ``quant``, its build parameters) over the first
    ``width`` dims of the stored rows, written under the next generation's number with its width in the name, and
    loaded as an uncommitted :class:`Generation` that the index searches while :meth:`use` has it selected.
    """

    def __init__(self, index):
        self.index = index
        self.base = index.gen
        self.generation = self.base.manifest.generation + 1
        self.stored_dim = self.base.manifest.stored_dim
        self.built: dict[int, Generation] = {}
        self.adopted = False

    def use(self, width: int) -> None:
        """Search with the first pass at ``width`` from now on (building it on first use)."""
        if width not in self.built:
            self.built[width] = self._build(width)
        self.index.gen = self.built[width]

    def _build(self, width: int) -> Generation:
        base = self.base.manifest
        m = Manifest(**{**base.__dict__})
        m.generation, m.prefix_dim, m.tuned = self.generation, width, None
        m.segments = list(base.segments)
        if width == base.prefix_dim:  # the committed first pass, searched as it is
            return dataclasses.replace(self.base, manifest=m)
        eng = engine(m.ann)
        eng.check(m.quant, width)
        rows, params = base.rows, dict(base.ann_params)
        sample = training_rows(rows, eng.sample_size(rows, params))
        sample = np.arange(rows) if sample is None else sample

        def stored_chunks():
            for start in range(0, rows, BUILD_CHUNK):
                yield start, self.base.vectors(np.arange(start, min(start + BUILD_CHUNK, rows)))

        def sample_chunks():
            for start in range(0, len(sample), BUILD_CHUNK):
                yield start, self.base.vectors(sample[start : start + BUILD_CHUNK])

        folder = self.index.folder
        try:
            first = eng.build(m.quant, width, rows, params, stored_chunks, sample_chunks, len(sample))
            m.ann_file = save_first_pass(folder, f"ann-{self.generation:08d}-p{width}", m.ann, first)
        except BaseException as exc:
            raise_failed_write(folder, m, exc, f"building the {width}-dim first pass")
        del first  # the saved copy is what the generation loads (and moves to 2 MiB pages)
        return Generation.load(folder, m, self.index.io, self.base)

    def drop(self, width: int) -> None:
        """Forget the candidate at ``width`` and remove its files (never the committed generation's)."""
        gen = self.built.pop(width, None)
        if self.index.gen is gen:
            self.index.gen = self.base
        if gen is not None and gen.manifest.ann_file != self.base.manifest.ann_file:
            path = self.index.folder / gen.manifest.ann_file
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def adopt(self, width: int, tuned: dict) -> None:
        """Commit the candidate at ``width`` as the live generation, with ``tuned`` (the tuner's choice and table)."""
        gen = self.built[width]
        gen.manifest.tuned = tuned
        commit(self.index.folder, gen.manifest)
        self.index.gen = gen
        self.adopted = True

    def close(self) -> None:
        for width in list(self.built):
            if not (self.adopted and self.index.gen is self.built[width]):
                self.drop(width)
        if not self.adopted:
            self.index.gen = self.base
        collect_garbage(self.index.folder)


class NoFirstPass(FirstPass):
    """The first pass of an index created empty: it finds nothing, and the first rows build a real one."""

    def __init__(self, eng):
        self.engine = eng
        self.huge_pages = HugePageAdvice()

    @property
    def ntotal(self) -> int:
        return 0

    def search(self, queries: np.ndarray, k: int, beam: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
        return np.full((len(queries), k), -1, dtype=np.int64)

    def hide(self, rows: np.ndarray) -> None:
        pass

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        raise MrlError("an empty index builds its first pass with its first rows")

    def save(self, path: Path) -> None:
        raise MrlError("an empty index has no first pass to save")

    def search_grid(self) -> list[int | None]:
        return [None]


def save_first_pass(folder: Path, stem: str, ann: str, first: FirstPass) -> str:
    """Save a first pass of engine ``ann`` as ``<stem>.<suffix>`` in ``folder``; returns the name."""
    name = f"{stem}.{engine(ann).suffix}"
    first.save(folder / name)
    return name


def _committed(folder: Path, generation: int) -> bool:
    return (folder / "CURRENT").exists() and read_current(folder).generation == generation


def raise_failed_write(folder: Path, m: Manifest, exc: BaseException, doing: str, cleanup=None) -> None:
    """After a write of generation ``m`` failed: remove its files (unless it committed after all) and re-raise.

    A full disk becomes one clear error. The live generation is untouched either way. ``cleanup`` removes
    what else the caller wrote.
    """
    if _committed(folder, m.generation):
        raise exc  # the commit went through before the failure: the new generation is live, keep its files
    full = _disk_full(folder, exc)  # before our partial files go and free their space again
    if folder.exists():
        remove_generation_files(folder, m)
    if cleanup is not None:
        cleanup()
    if full:
        raise MrlError(f"{folder}: the disk filled up while {doing}; nothing was changed") from None
    raise exc


def _disk_full(folder: Path, exc: BaseException) -> bool:
    """ENOSPC, or a short write (numpy's and faiss's errors carry no errno) on a disk with under 1 MiB left."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if not isinstance(exc, OSError | RuntimeError):
        return False
    return free_bytes(folder) < 2**20


def remove_generation_files(folder: Path, m: Manifest) -> None:
    """Delete what a failed write of generation ``m`` left: its own files and its manifest, never older ones.

    Also called before a write of ``m`` starts: a writer killed before its commit (SIGKILL, a power cut) leaves files
    of the generation the next writer will number the same, and a folder (zvec, SVS) cannot be renamed over one.
    """
    tag = f"-{m.generation:08d}"
    for path in folder.glob(f"*{tag}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for stray in folder.glob(f".*{tag}*"):  # temp files of an interrupted atomic write
        shutil.rmtree(stray, ignore_errors=True) if stray.is_dir() else stray.unlink(missing_ok=True)
