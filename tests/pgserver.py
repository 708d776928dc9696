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


@contextmanager
def postgres_server():
    """Yield the DSN of a fresh server; raise RuntimeError with the reason when none can be started."""
    bin_ = bindir()
    if bin_ is None:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/install-pgvector.sh (make postgres)")
    root = Path(tempfile.mkdtemp(prefix="mrl-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    (root / "pw").write_text(PASSWORD)
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    data, log = root / "data", root / "log"

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

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
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*prefix, str(bin_ / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)
