"""Segment files: the rerank vectors of an embedded index on disk, how they are coded, checked and read.

A segment is one ``.npy`` file of rows in the index's stored basis (rotated, and truncated to ``keep_dims``
when the tail is dropped), coded as float32, float16 or int8. int8 keeps a per-dim scale fitted at build time
(:func:`calibrate_int8`), recorded in the manifest, so that every later segment decodes the same way.

Two ways to read rows, with the same result:

* ``mmap``: a memory map; the page cache serves repeated reads, and a cold row costs a page fault.
* ``pread``: the rows a search needs, sorted by offset and coalesced into runs, read by a small thread pool
  with ``preadv`` (threads release the GIL in the system call, so a query's reads overlap on the device).
  It is the path for vectors far larger than RAM: nothing is mapped, and the process holds only the rows
  it reads. ``auto`` picks it when the segments are larger than half of the available memory.

Each segment records its size and a checksum of sampled blocks, checked when an index is opened: a file that
was truncated or changed is refused with a clear error instead of giving wrong scores (or a SIGBUS on a map).
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mrl.errors import MrlError
from mrl.vectors.files import atomic_write
from mrl.vectors.prefix import prefix

STORES = ("float32", "float16", "int8")
IO_MODES = ("auto", "mmap", "pread")
DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
CHECK_BLOCK = 4096  # bytes per sampled block of the checksum
CHECK_BLOCKS = 8  # blocks sampled over the file (plus the first and last)
READ_THREADS = 16  # concurrent preadv calls: enough to keep an SSD's queue busy from 2 cores
INT8_MAX = 127


def check_store(store: str) -> None:
    if store not in STORES:
        raise MrlError(f"`store` must be one of {', '.join(STORES)}, not '{store}'")


def keep_prefix(rows: np.ndarray, keep_dims: int | None) -> np.ndarray:
    """Rows (stored vectors or queries) cut to ``keep_dims`` and re-normalized; unchanged without it."""
    return prefix(rows, keep_dims) if keep_dims and keep_dims < rows.shape[1] else rows


def calibrate_int8(unit: np.ndarray) -> list[float]:
    """Per-dim scale so that the largest magnitude of each dim in ``unit`` maps to code 127.

    Symmetric (no offset): the rows are unit vectors, centred near zero in the rotated basis, and a dot
    product with a symmetric code needs no correction term. Later rows outside the range are clipped.
    """
    peak = np.abs(unit).max(axis=0).astype(np.float64)
    return [float(x) for x in np.maximum(peak, 1e-6) / INT8_MAX]


def encode_rows(unit: np.ndarray, store: str, scale: list[float] | None) -> np.ndarray:
    """Unit rows (float32) as they are written: cast, or int8 codes under ``scale``."""
    if store == "int8":
        codes = np.rint(unit / np.asarray(scale, dtype=np.float32))
        return np.clip(codes, -INT8_MAX, INT8_MAX).astype(np.int8)
    return unit.astype(DTYPES[store])


def decode_rows(stored: np.ndarray, scale: list[float] | None) -> np.ndarray:
    """Stored rows (all dims, or the first ones) back to float32 (int8 codes times their scale)."""
    if stored.dtype == np.int8:
        return stored.astype(np.float32) * np.asarray(scale, dtype=np.float32)[: stored.shape[1]]
    return stored.astype(np.float32, copy=False)


def sampled_checksum(path: Path, size: int | None = None) -> int:
    """CRC32 of the first and last blocks and of blocks spread over the file: cheap on a file of any size.

    It catches truncation, a file replaced by another and most in-place edits without reading the file.
    """
    size = os.path.getsize(path) if size is None else size
    starts = {0, max(size - CHECK_BLOCK, 0)} | {size * i // (CHECK_BLOCKS + 1) for i in range(1, CHECK_BLOCKS + 1)}
    crc = zlib.crc32(size.to_bytes(8, "little"))
    with open(path, "rb") as handle:
        for start in sorted(starts):
            crc = zlib.crc32(os.pread(handle.fileno(), CHECK_BLOCK, start), crc)
    return crc


def write_segment(folder: Path, name: str, stored: np.ndarray) -> dict:
    """Write coded rows durably; the manifest entry records rows, size and checksum."""
    return write_segment_chunks(folder, name, stored.shape, stored.dtype, [stored])


def write_segment_chunks(
    folder: Path, name: str, shape: tuple[int, int], dtype: np.dtype, chunks: Iterable[np.ndarray]
) -> dict:
    """Like :func:`write_segment`, from coded rows that arrive in chunks: an out-of-core build holds one chunk.

    The ``.npy`` header is written first from the known shape, then each chunk's bytes; the file appears
    (renamed into place) only once every row is on disk.
    """
    path = folder / name
    dtype = np.dtype(dtype)

    def write(handle) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(handle, header)
        rows = 0
        for chunk in chunks:
            if chunk.dtype != dtype or chunk.ndim != 2 or chunk.shape[1] != shape[1]:
                raise ValueError(f"chunk {chunk.dtype} {chunk.shape} does not fit a {dtype} segment of {shape}")
            handle.write(np.ascontiguousarray(chunk).data)
            rows += len(chunk)
        if rows != shape[0]:
            raise ValueError(f"{rows} rows written, the segment header says {shape[0]}")

    atomic_write(path, write)
    size = path.stat().st_size
    return {"file": name, "rows": int(shape[0]), "bytes": size, "checksum": sampled_checksum(path, size)}


def verify_segment(path: Path, entry: dict) -> None:
    """Refuse a segment whose size or sampled checksum differs from what its manifest recorded."""
    if "bytes" not in entry:
        return  # written before mrl recorded them
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MrlError(f"{path}: vector segment is missing") from None
    if size != entry["bytes"]:
        raise MrlError(
            f"{path}: vector segment is {size:,} bytes, the manifest recorded {entry['bytes']:,}: the file was "
            "truncated or replaced; rebuild the index or restore the file"
        )
    if sampled_checksum(path, size) != entry["checksum"]:
        raise MrlError(f"{path}: vector segment changed since it was written (checksum differs); rebuild the index")


class Segment:
    """One opened segment file: rows by number, through a memory map or through batched ``preadv``."""

    def __init__(self, path: Path, entry: dict, io: str):
        self.path = path
        verify_segment(path, entry)
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            self.shape, _, self.dtype = read_header(handle)
            self.offset = handle.tell()
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.io = io
        self.array: np.ndarray | None = None  # the mapped rows (mmap); pread maps nothing
        self._fd: int | None = None
        if io == "pread":
            self._fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: rows are scattered
            # closed when the last search holding this generation lets go of it, never under a running one
            weakref.finalize(self, os.close, self._fd)
        else:
            # a plain view of the map: np.memmap's Python-level __getitem__ would run on every per-query gather.
            # MADV_RANDOM: a rerank reads scattered rows, and readahead around each would fill the page cache with
            # rows no query asked for (cold searches read more, and the hot set looks like the whole file)
            with open(path, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
            if hasattr(mmap, "MADV_RANDOM"):
                mapped.madvise(mmap.MADV_RANDOM)
            count = self.shape[0] * self.shape[1]
            self.array = np.frombuffer(mapped, dtype=self.dtype, count=count, offset=self.offset).reshape(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, rows: np.ndarray, width: int | None = None) -> np.ndarray:
        """Stored rows (coded) in the order given; their first ``width`` dims only, where given (a mapped segment
        then reads just those bytes of each row)."""
        if self.array is not None:
            order = np.argsort(rows)  # sorted reads are friendlier to the page cache
            out = np.empty((len(rows), width or self.shape[1]), dtype=self.dtype)
            out[order] = self.array[rows[order], :width] if width else self.array[rows[order]]
            return out
        if len(rows) < 2 or (rows[1:] > rows[:-1]).all():  # sorted and unique already (a rerank's gather)
            return self._pread(rows)[:, :width]
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._pread(unique)[inverse][:, :width]

    def _pread(self, rows: np.ndarray) -> np.ndarray:
        """Sorted unique rows, coalesced into runs of adjacent rows, read concurrently."""
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if not len(rows):
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(rows)]])
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        runs = [(int(rows[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
        groups = [runs[i::READ_THREADS] for i in range(min(READ_THREADS, len(runs)))]

        def read(group: list[tuple[int, int, int]]) -> None:
            for first, a, b in group:
                want = (b - a) * self.row_bytes
                view = buffer[a * self.row_bytes : b * self.row_bytes]
                got = os.preadv(self._fd, [view], self.offset + first * self.row_bytes)
                if got != want:
                    raise MrlError(f"{self.path}: short read at row {first} ({got} of {want} bytes): file truncated?")

        if len(groups) == 1:
            read(groups[0])
        else:
            for future in [_pool().submit(read, g) for g in groups]:
                future.result()
        return out


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="mrl-pread")
        return _POOL


def resolve_io(io: str, paths: list[Path]) -> str:
    """``auto``: ``pread`` when the segments are larger than half of the memory available now, else ``mmap``."""
    if io not in IO_MODES:
        raise MrlError(f"`io` must be one of {', '.join(IO_MODES)}, not '{io}'")
    if io != "auto":
        return io
    total = sum(p.stat().st_size for p in paths if p.exists())
    return "pread" if total > available_memory() / 2 else "mmap"


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes); the physical memory where that is not readable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def drop_cached_pages(path: Path) -> None:
    """Ask the kernel to drop this one file's pages from the page cache (POSIX_FADV_DONTNEED).

    For measuring cold reads: it touches no other file and no system-wide setting. Dirty pages are written
    first (fsync), since the kernel keeps pages that are not yet on disk.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
