"""What a first-pass engine is: a :class:`Engine` that builds and loads a :class:`FirstPass`.

The embedded index knows first passes only through these two classes, so an engine is one file that subclasses
both and one line in the registry (:mod:`mrl.index.engines`). A first pass holds the re-normalized prefixes of an
index's rows (ids are row numbers), answers a batch of queries with a ``-1``-padded row matrix, hides tombstoned
rows in memory, grows by appending rows to a writable copy, and saves itself whole or not at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mrl.errors import MrlError
from mrl.index.hugepages import HugePageAdvice
from mrl.vectors.prefix import prefix
from mrl.vectors.sampling import TRAIN_SAMPLE

Chunks = Callable[[], Iterator[tuple[int, np.ndarray]]]  # yields (first row, unit rows in the stored basis)
# search beams the tuner tries on a graph (HNSW efSearch, Vamana window); k' raises one below it
GRAPH_SEARCH_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048)
QUANTS = ("sq8", "sq4", "fp16", "fp32", "pq4")  # every code any engine stores the prefix as


class FirstPass(ABC):
    """A built or loaded first pass over the prefixes of an index's rows."""

    huge_pages: HugePageAdvice  # what opening it moved onto 2 MiB pages
    # search_scored gives each answer's inner product with the query prefix, from the codes it holds in RAM: an
    # adaptive rerank whose middle width is the prefix then reads no stored row for it (mrl.index.adaptive)
    scores_answers: bool = False

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Rows it holds, hidden ones included."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, beam: int | None, allowed: np.ndarray | None = None) -> np.ndarray:
        """Top-``k`` live rows of each query (unit prefixes), -1 padded; ``beam`` is the engine's search effort.

        ``allowed`` (a boolean mask over rows, tombstones already cleared) restricts the results to those rows: a
        metadata filter. Engines that can filter inside their walk do; the others over-fetch (:func:`overfetch`).
        """

    def search_scored(self, queries: np.ndarray, k: int, beam: int | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search`'s rows and each one's inner product with its query prefix (-inf where -1), as computed on
        the engine's codes; only an engine with :attr:`scores_answers`."""
        raise MrlError(f"{type(self).__name__} does not score its answers")

    @abstractmethod
    def hide(self, rows: np.ndarray) -> None:
        """Leave ``rows`` (tombstones) out of this in-memory copy's results; the saved copy keeps them."""

    @abstractmethod
    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Append rows ``first_row``... (a copy loaded ``writable``)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write it as ``path``, complete or not at all (:func:`mrl.vectors.files.atomic_write_path`)."""

    def search_grid(self) -> list[int | None]:
        """The search-effort values the tuner tries (None: the engine has no knob)."""
        return [None]


class Engine(ABC):
    """One first-pass engine: its codes and defaults, how it builds, loads and is tuned."""

    name: str  # the --ann value
    quants: tuple[str, ...]  # the codes it can store a prefix as
    defaults: dict  # build parameters it records when none are given
    graph: bool  # its beam is raised to k': the tuner tries k' <= beam only
    suffix: str  # of the file or folder a saved first pass is
    format_version: int = 1  # the oldest index format that knows this engine

    def check(self, quant: str, width: int) -> None:
        """Refuse codes or a width this engine cannot take, before any work (and anything that would end the
        process, such as a vendor-locked instruction set)."""
        if quant not in QUANTS:
            raise MrlError(f"`quant`: unknown quantization '{quant}' (choose {', '.join(QUANTS)})")
        if quant == "pq4" and quant not in self.quants:  # product codes need IVF's fast scan
            raise MrlError(f"`quant`: 'pq4' needs `ann` ivf (got `ann` {self.name})")
        if quant not in self.quants:
            raise MrlError(f"`quant`: ann {self.name} stores the prefix as {', '.join(self.quants)}, not '{quant}'")

    def sample_size(self, rows: int, params: dict) -> int:
        """Rows its quantizer learns from (the rotation learns from the same sample)."""
        return TRAIN_SAMPLE

    def params(self, m: int, ef_construction: int | None, nlist: int | None) -> dict:
        """The CLI's graph options as this engine's build parameters (left out: its defaults)."""
        return dict(self.defaults)

    @abstractmethod
    def build(
        self,
        quant: str,
        width: int,
        rows: int,
        params: dict,
        stored_chunks: Chunks,
        sample_chunks: Chunks,
        sample_size: int,
    ) -> FirstPass:
        """Build over the first ``width`` dims of every stored row; ``params`` gets the defaults filled in, so the
        manifest records what was built."""

    @abstractmethod
    def load(self, path: Path, quant: str, writable: bool = False, hidden: np.ndarray | None = None) -> FirstPass:
        """Open a saved first pass for searching (``writable``: a private copy to add rows to), hiding ``hidden``."""

    def disk_split(self, path: Path, quant: str) -> tuple[int, int]:
        """(bytes a search keeps in RAM, bytes it never reads) of a saved first pass."""
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return size, 0

    def estimate_bytes(self, rows: int, width: int) -> int:
        """Disk a first pass of ``rows`` prefixes of ``width`` dims takes, generously (a build refuses less)."""
        return rows * 4 * (width + 64)


def overfetch(
    search: Callable[[np.ndarray, int, int | None], np.ndarray],
    queries: np.ndarray,
    k: int,
    beam: int | None,
    allowed: np.ndarray,
    rows: int,
    most: int | None = None,
) -> np.ndarray:
    """Top-``k`` allowed rows through a search that cannot filter: ask for k over the allowed fraction (and a
    margin), then twice as many for the queries still short, until each has ``k`` or the whole index, or ``most``
    rows (the engine's largest answer), was asked. A query may come back short: the caller scans for it."""
    out = np.full((len(queries), k), -1, dtype=np.int64)
    share = max(float(allowed.sum()) / max(rows, 1), 1e-9)
    rows = min(rows, most or rows)
    fetch = min(rows, int(np.ceil(1.25 * k / share)))
    todo = np.arange(len(queries))
    while len(todo) and fetch:
        found = search(queries[todo], fetch, max(int(beam or 0), fetch))
        short = []
        for i, row in zip(todo, found, strict=True):
            row = row[row >= 0]
            kept = row[allowed[row]][:k]
            out[i, : len(kept)] = kept
            if len(kept) < k and fetch < rows:
                short.append(i)
        todo, fetch = np.asarray(short, dtype=np.int64), min(rows, 2 * fetch)
    return out


def all_prefixes(stored_chunks: Chunks, rows: int, width: int) -> np.ndarray:
    """Every stored row's ``width``-dim prefix in one matrix: the engines whose build takes them all at once."""
    out = np.empty((rows, width), dtype=np.float32)
    for start, unit in stored_chunks():
        out[start : start + len(unit)] = prefix(unit, width)
    return out
