"""A real, throwaway PostgreSQL server with pgvector on loopback, for tests and benchmarks.

It runs Debian's server binaries (``scripts/install-pgvector.sh`` installs them and pgvector) from a
temporary data folder, with password authentication, and is stopped and deleted afterwards. As root it
runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

USER, PASSWORD = "mrl", "s3cret-test-pw"


def bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_folder() -> tuple[Path, list[str]]:
    """A temporary folder the server's user owns, and the command prefix that runs as that user."""
    root = Path(tempfile.mkdtemp(prefix="mrl-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(root, "postgres")
    return root, (["runuser", "-u", "postgres", "--"] if as_root else [])


def _runner(prefix: list[str]):
    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    return run


def _stop(prefix: list[str], bin_: Path, data: Path, mode: str = "immediate") -> None:
    if (data / "postmaster.pid").exists():
        subprocess.run([*prefix, str(bin_ / "pg_ctl"), "-D", str(data), "-m", mode, "stop"], capture_output=True)


def _start_options(port: int, root: Path) -> str:
    return f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"


@contextmanager
def postgres_server():
    """Yield the DSN of a fresh server; raise RuntimeError with the reason when none can be started.

    The server allows streaming replication from loopback (initdb's default pg_hba), so :func:`standby_server`
    can copy it.
    """
    bin_ = bindir()
    if bin_ is None:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/install-pgvector.sh (make postgres)")
    root, prefix = _server_folder()
    (root / "pw").write_text(PASSWORD)
    if prefix:
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    data, log = root / "data", root / "log"
    run = _runner(prefix)
    try:
        run(
            str(bin_ / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--pwfile",
            str(root / "pw"),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        run(str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", _start_options(port, root), "-w", "start")
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        _stop(prefix, bin_, data)
        shutil.rmtree(root, ignore_errors=True)


class Standby:
    """A running hot standby: its DSN, and stop/start to take it away and bring it back."""

    def __init__(self, bin_: Path, prefix: list[str], data: Path, root: Path, port: int) -> None:
        self.bin, self.prefix, self.data, self.root, self.port = bin_, prefix, data, root, port
        self.dsn = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        _runner(self.prefix)(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            _start_options(self.port, self.root) + " -c hot_standby=on",
            "-w",
            "start",
        )

    def stop(self) -> None:
        _stop(self.prefix, self.bin, self.data, mode="fast")


@contextmanager
def standby_server(primary_dsn: str):
    """Yield a :class:`Standby`: a streaming hot standby of the server at ``primary_dsn``, copied with
    ``pg_basebackup -R`` (which writes its primary_conninfo and standby.signal), on its own loopback port."""
    bin_ = bindir()
    root, prefix = _server_folder()
    data = root / "data"
    try:
        _runner(prefix)(
            str(bin_ / "pg_basebackup"), "-d", primary_dsn, "-D", str(data), "-R", "-X", "stream", "-c", "fast"
        )
        standby = Standby(bin_, prefix, data, root, free_port())
        standby.start()
        yield standby
    finally:
        _stop(prefix, bin_, data)
        shutil.rmtree(root, ignore_errors=True)
