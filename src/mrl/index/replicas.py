"""Reads over PostgreSQL hot standbys: the standard way to scale pgvector reads past one server.

pgvector's HNSW indexes are WAL-logged, so a streaming replica (``pg_basebackup -R``) holds the same table and the
same prefix index, and answers the same two-pass statement. :class:`StandbyReads` sends each read (a search, a
``get``, a count) to the next standby in turn and leaves writes to the primary. Its guarantees:

- **A standby is checked before it serves**: it must be in recovery (``pg_is_in_recovery()``), replicate the
  primary's cluster (the same ``system_identifier``) and open the same database. A DSN that names a primary, another
  cluster or another database is refused with the reason.
- **Read-your-writes**, within one opened index (one process): each write records the primary's WAL position after
  its commit; until a standby has replayed past the latest such position, reads that would go to it go to the primary.
  Reads from other processes see a standby's state, which trails the primary by the replication lag.
- **A standby that fails is skipped**: a read that cannot reach it (or is cancelled by a recovery conflict) runs
  again on the next standby, else on the primary. An unreachable standby is said once in a warning, left out and
  tried again after ``RETRY_S`` seconds, checked again before it serves.

Example::

    from mrl.index import open_index

    index = open_index("postgresql://mrl@primary/search/docs",
                       standbys=["postgresql://mrl@standby1/search", "postgresql://mrl@standby2/search"])
    index.search("vitamin D", k=10)   # runs on a standby
    index.stats()["reads"]            # reads served per server
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mrl.errors import MrlError
from mrl.index.pg_connect import read_pool, redact

RETRY_S = 30.0  # seconds an unreachable standby is left out before it is tried again
STANDBY_TIMEOUT_S = 3  # seconds to reach a standby before the read moves on: a dead one must not stall every read
REPLAY_POLL_S = 0.05


def lsn(text: str | None) -> int:
    """A WAL position (``16/B374D848``) as an integer; None (no WAL replayed yet) as -1."""
    if text is None:
        return -1
    high, low = str(text).split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class Standby:
    dsn: str
    pool: Any = None  # open while the standby serves
    down_until: float = 0.0  # monotonic time before which it is left out
    replayed: int = -1  # the highest WAL position it is known to have replayed
    reads: int = 0
    warned: bool = False  # said in a warning during this outage

    @property
    def name(self) -> str:
        return redact(self.dsn)


@dataclass
class StandbyReads:
    """Routes the reads of one PostgreSQL index over hot standbys (see the module docstring).

    ``identity`` is the primary's ``(system_identifier, database)``, as :func:`identity` reads it.
    """

    dsns: Sequence[str]
    identity: tuple[str, str]
    table: str
    require_table: bool = True  # False while building: the table does not exist yet
    retry_s: float = RETRY_S  # seconds an unreachable standby is left out before it is tried again
    standbys: list[Standby] = field(init=False)
    primary_reads: int = 0
    written: int = -1  # WAL position after this index's latest write
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def __post_init__(self) -> None:
        if not self.dsns:
            raise MrlError("`standbys`: give at least one standby DSN")
        self.standbys = [Standby(dsn) for dsn in self.dsns]
        for standby in self.standbys:  # refuse a wrong DSN now; one that does not answer is tried when it is needed
            try:
                self._open(standby)
            except _Unreachable as exc:
                self._mark_down(standby, exc.reason)

    def read(self, work: Callable[[Any], Any], primary_pool) -> Any:
        """``work(connection)`` on a standby that has replayed this index's writes, else on the primary."""
        for standby in self._order():
            pool = standby.pool  # another thread may mark it down meanwhile: a closed pool raises, and is caught
            if pool is None:
                continue
            try:
                with pool.connection() as conn:
                    if self.written > standby.replayed:
                        standby.replayed = lsn(conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0])
                        if self.written > standby.replayed:
                            continue  # it has not replayed our latest write yet: read elsewhere
                    result = work(conn)
            except _retryable() as exc:
                if _is_recovery_conflict(exc):
                    continue  # the standby cancelled the read to replay WAL: run it elsewhere, the standby is fine
                self._mark_down(standby, _reason(exc))
                continue
            with self.lock:
                standby.reads += 1
            return result
        with primary_pool.connection() as conn:
            result = work(conn)
        with self.lock:
            self.primary_reads += 1
        return result

    def wrote(self, primary_conn) -> None:
        """Record the primary's WAL position after a committed write (call it outside the write's transaction)."""
        position = lsn(primary_conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
        with self.lock:
            self.written = max(self.written, position)

    def wait_replayed(self, timeout: float, report: Callable[[str], None] | None = None) -> dict[str, bool]:
        """Wait until every reachable standby has replayed this index's writes; per standby, whether it did."""
        deadline = time.monotonic() + timeout
        done: dict[str, bool] = {}
        for standby in self.standbys:
            if not self._usable(standby):
                done[standby.name] = False
                continue
            while True:
                try:
                    with standby.pool.connection() as conn:
                        standby.replayed = lsn(conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0])
                except _retryable() as exc:
                    self._mark_down(standby, _reason(exc))
                    done[standby.name] = False
                    break
                if standby.replayed >= self.written:
                    done[standby.name] = True
                    break
                if time.monotonic() > deadline:
                    if report:
                        report(f"{standby.name} has not replayed the build after {timeout:.0f} s; reads skip it")
                    done[standby.name] = False
                    break
                time.sleep(REPLAY_POLL_S)
        return done

    def stats(self) -> dict:
        """Reads served by each server since the index was opened, and which standbys are left out now."""
        now = time.monotonic()
        return {
            "primary": self.primary_reads,
            "standbys": {s.name: {"reads": s.reads, "serving": s.down_until <= now} for s in self.standbys},
        }

    def close(self) -> None:
        for standby in self.standbys:
            if standby.pool is not None:
                standby.pool.close()
                standby.pool = None

    # ---- internals ---------------------------------------------------------------------------
    def _order(self) -> list[Standby]:
        """The usable standbys, starting one further along each read (round robin)."""
        with self.lock:
            start = self._next
            self._next = (self._next + 1) % len(self.standbys)
        turn = self.standbys[start:] + self.standbys[:start]
        return [s for s in turn if self._usable(s)]

    def _usable(self, standby: Standby) -> bool:
        if standby.pool is not None:
            return True
        if time.monotonic() < standby.down_until:
            return False
        try:
            self._open(standby)
        except _Unreachable as exc:
            self._mark_down(standby, exc.reason)
            return False
        return True

    def _open(self, standby: Standby) -> None:
        import psycopg

        try:
            with psycopg.connect(standby.dsn, autocommit=True, connect_timeout=STANDBY_TIMEOUT_S) as conn:
                check_standby(conn, standby.name, self.identity, self.table if self.require_table else None)
        except psycopg.OperationalError as exc:
            raise _Unreachable(_reason(exc)) from None
        standby.pool = read_pool(standby.dsn, f"mrl-{self.table}-standby", timeout=STANDBY_TIMEOUT_S)
        if standby.warned:
            warnings.warn(f"standby {standby.name} answers again: reads go to it", stacklevel=4)
        standby.warned = False

    def _mark_down(self, standby: Standby, reason: str) -> None:
        with self.lock:
            pool, standby.pool = standby.pool, None
            standby.down_until = time.monotonic() + self.retry_s
            say = not standby.warned
            standby.warned = True
        if pool is not None:
            pool.close(timeout=0)
        if say:  # once per outage, not once per read
            warnings.warn(
                f"standby {standby.name} is unreachable ({reason}): its reads go to the other standbys or the "
                f"primary; trying it again every {self.retry_s:g} s",
                stacklevel=4,
            )


def identity(conn) -> tuple[str, str]:
    """``(system_identifier, database)`` of a server: a streaming standby has its primary's system identifier."""
    row = conn.execute("SELECT system_identifier::text, current_database() FROM pg_control_system()").fetchone()
    return row[0], row[1]


def check_standby(conn, name: str, primary: tuple[str, str], table: str | None) -> None:
    """Refuse a replica DSN that is not a hot standby of the primary's cluster, on the same database, with the table."""
    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        raise MrlError(
            f"replica {name} is a primary, not a standby (pg_is_in_recovery() is false): writes would split; give a "
            "hot standby of the index's server (pg_basebackup -R)"
        )
    system, database = identity(conn)
    if system != primary[0]:
        raise MrlError(
            f"replica {name} is a standby of another cluster (system identifier {system}, the primary's is "
            f"{primary[0]})"
        )
    if database != primary[1]:
        raise MrlError(f"replica {name} opens database '{database}', the index is in '{primary[1]}'")
    if table is not None and conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        raise MrlError(f"replica {name} has no table '{table}' (has it replayed the build?)")


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _retryable() -> tuple[type[Exception], ...]:
    import psycopg

    return (psycopg.OperationalError, psycopg.errors.SerializationFailure)


def _is_recovery_conflict(exc: Exception) -> bool:
    import psycopg

    return isinstance(exc, psycopg.errors.SerializationFailure)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
