"""Crash-safe file primitives for the index: write to a temp file, fsync, rename, fsync the folder.

A rename within one filesystem is atomic, so a reader (or a process restarted after a crash)
sees either the old file or the complete new one, never a prefix of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(handle)`` so that it appears complete or not at all."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    atomic_write_path(path, to_file)


def atomic_write_path(path: Path, write_to: Callable[[Path], None]) -> None:
    """Like :func:`atomic_write` for writers that take a name: a file (faiss.write_index) or a folder (SVS).

    A folder is synced file by file, then folder by folder, before its one rename makes it visible.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.is_dir():  # left by a crashed writer of this pid
        shutil.rmtree(tmp)
    try:
        write_to(tmp)
        if tmp.is_dir():
            for inner in sorted(tmp.rglob("*"), reverse=True):  # files before the folders that name them
                fsync_path(inner)
        fsync_path(tmp)
    except BaseException:  # a full disk, an interrupt: leave no partial file behind
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_path(path.parent)


def path_bytes(path: Path) -> int:
    """Size of a file, or of every file under a folder (an SVS index is a folder)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path``, or would hold it once its folders are made."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda h: h.write(json.dumps(data, indent=2).encode()))


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """One writer at a time per index (readers take no lock: they read immutable generations)."""
    with open(folder / "write.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
