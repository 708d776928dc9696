"""The two-pass index inside PostgreSQL with pgvector: one table, one HNSW expression index, one SQL statement.

The table keeps each document's full unit vector once (``vector`` or ``halfvec``). The first pass
needs no second copy: an HNSW index on the expression ``l2_normalize(subvector(embedding, 1, p))``
(pgvector >= 0.7) is the prefix index. A search is a single statement: the inner query orders by
the prefix distance, which the planner answers from that index, and takes k' rows; the outer query
reranks those by the full-vector distance. ``EXPLAIN`` shows the index scan (tested).

Settings (model, dims, tuned k') live in a small ``mrl_indexes`` table beside the data, so any
client that can reach the database can open the index by its location::

    postgresql://user:password@host:5432/database/table

Reads scale over hot standbys (``standbys``, :mod:`mrl.index.replicas`): pgvector's index is WAL-logged, so a
streaming replica answers the same statement. Citus distributes such a table by ``id``
(``SELECT create_distributed_table('docs', 'id')``) and runs the same statement on every shard;
managed PostgreSQL services with pgvector >= 0.7 (RDS, Cloud SQL, Azure, Supabase, Neon) take
the same DSN.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from mrl.data import Document
from mrl.errors import MrlError
from mrl.index.filters import parse_filter, to_sql
from mrl.index.interface import (
    DatabaseIndex,
    SearchTimings,
    check_unique,
    existing_ids_error,
    prepare_build,
    stored_settings,
    unknown_ids_error,
)
from mrl.index.pg_connect import read_pool, redact
from mrl.index.replicas import StandbyReads, identity
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import rotate_rows, unrotate_rows

META_TABLE = "mrl_indexes"
FORMAT_VERSION = 2  # 2: vectors stored rotated (settings 'rotation'); unrotated indexes are still written as 1
MIN_PGVECTOR = (0, 7, 0)  # subvector, l2_normalize and halfvec arrived in 0.7.0
REPLAY_TIMEOUT_S = 300.0  # seconds a build waits for its standbys to replay it
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
FILTERED_SCAN_TUPLES = 1_000_000  # graph tuples a filtered iterative scan may visit before it stops short
DEFAULT_HNSW = {"m": 16, "ef_construction": 64}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
INSTALL_HINT = (
    "install pgvector >= 0.7 on the server (Debian/Ubuntu: apt install postgresql-<major>-pgvector; "
    "or build it: make -C pgvector && make -C pgvector install, see scripts/install-pgvector.sh), then run "
    "CREATE EXTENSION vector in the database"
)


def split_location(location: str) -> tuple[str, str]:
    """``postgresql://u:p@h:5432/db/table`` -> (``postgresql://u:p@h:5432/db``, ``table``)."""
    parts = urlsplit(location)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) != 2:
        raise MrlError(f"{redact(location)}: expected postgresql://[user[:password]@]host[:port]/database/table")
    dsn = urlunsplit(("postgresql", parts.netloc, "/" + segments[0], parts.query, ""))
    return dsn, segments[1]


def check_table_name(table: str) -> str:
    if not IDENTIFIER.match(table) or table == META_TABLE:
        raise MrlError(
            f"table name '{table}': use letters, digits and '_' (not starting with a digit), not {META_TABLE}"
        )
    return table


def connect(dsn: str):
    """Autocommit connection with pgvector's types registered; a clear error when the server or pgvector is missing."""
    import psycopg
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MrlError(f"cannot connect to PostgreSQL at {redact(dsn)}: {reason}") from None
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            conn.close()
            reason = str(exc).strip().splitlines()[0]
            raise MrlError(f"pgvector is not available in {redact(dsn)} ({reason}): {INSTALL_HINT}") from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    version = tuple(int(x) for x in re.findall(r"\d+", row[0])[:3])
    if version < MIN_PGVECTOR:
        conn.close()
        raise MrlError(f"{redact(dsn)} has pgvector {row[0]}; mrl needs >= 0.7 (ALTER EXTENSION vector UPDATE)")
    register_vector(conn)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, settings jsonb NOT NULL)")
    return conn


class PostgresIndex(DatabaseIndex):
    """A two-pass Matryoshka index in a PostgreSQL table; open with :meth:`open`, create with :meth:`build`.

    Example::

        from mrl.index.postgres import PostgresIndex
        index = PostgresIndex.build("postgresql://mrl@localhost/search", "docs", vectors, documents,
                                    model="all-MiniLM-L6-v2", prefix_dim=64)
        index.search("does vitamin D prevent fractures", k=10)
    """

    def __init__(self, conn, dsn: str, table: str, settings: dict, model=None, standbys: Sequence[str] = ()):
        super().__init__(f"{redact(dsn)}/{table}", settings, model)
        self.conn = conn  # writes, settings and build: one connection behind self.lock
        self.dsn = dsn
        self.table = table
        self.vtype = "halfvec" if settings["store"] == "float16" else "vector"
        self._pool = None
        self.standby_reads = StandbyReads(standbys, identity(conn), table) if standbys else None
        self._pool_lock = threading.Lock()  # not self.lock: a long write must not hold up the first read

    @property
    def pool(self):
        """Connections for reads (search, get), opened on first use: a server's threads query side by side.

        Writes stay on :attr:`conn` under the lock (a server serializes them anyway); each read, counts and
        stats included, takes a pooled connection for one transaction, so it sees one snapshot and never
        waits behind a write. ``$MRL_PG_POOL`` sets the size
        (default 4; PostgreSQL runs one statement per connection at a time).
        """
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = read_pool(self.dsn, f"mrl-{self.table}")
        return self._pool

    # ---- opening and building -------------------------------------------------------------
    @classmethod
    def open(cls, location: str, model=None, standbys: Sequence[str] = ()) -> PostgresIndex:
        """Open the index at ``location``; ``standbys``: DSNs of hot standbys that serve its reads
        (:mod:`mrl.index.replicas`)."""
        dsn, table = split_location(location)
        return cls.open_table(dsn, table, model, standbys)

    @classmethod
    def open_table(cls, dsn: str, table: str, model=None, standbys: Sequence[str] = ()) -> PostgresIndex:
        conn = connect(dsn)
        settings = _settings(conn, check_table_name(table))
        if settings is None:
            conn.close()
            raise MrlError(
                f"{redact(dsn)}: no mrl index named '{table}' (build it first: mrl index build, or build_index)"
            )
        if settings.get("format_version", 0) > FORMAT_VERSION:
            conn.close()
            raise MrlError(f"{redact(dsn)}/{table} was written by a newer mrl; upgrade mrl")
        width = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'embedding'",
            (table,),
        ).fetchone()
        expected = f"{'halfvec' if settings['store'] == 'float16' else 'vector'}({settings['full_dim']})"
        if width is None or width[0] != expected:
            conn.close()
            raise MrlError(
                f"{redact(dsn)}/{table}: column embedding is {width and width[0]}, the index expects {expected}"
            )
        try:
            return cls(conn, dsn, table, settings, model, standbys)
        except MrlError:
            conn.close()
            raise

    @classmethod
    def build(
        cls,
        dsn: str,
        table: str,
        vectors: np.ndarray,
        documents: list[Document],
        model: str | None = None,
        prefix_dim: int = 64,
        store: str = "float32",
        ann_params: dict | None = None,
        overwrite: bool = False,
        loaded_model=None,
        rotate: bool = True,
        standbys: Sequence[str] = (),
        replay_timeout: float = REPLAY_TIMEOUT_S,
        report: Callable[[str], None] | None = None,
    ) -> PostgresIndex:
        """Create the table, load the rows with COPY and build the prefix HNSW index, all in one transaction.

        A failure anywhere (bad input, a lost connection) rolls everything back: no half-written table.
        ``rotate`` stores the vectors rotated so the prefix ranks like the full vector (:mod:`mrl.index.rotation`).
        ``standbys`` (hot standby DSNs) are checked before anything is written, and the build returns once they
        have replayed it (at most ``replay_timeout`` seconds; ``report`` hears of one that has not).
        """
        check_table_name(table)
        unit, rotation = prepare_build(vectors, documents, prefix_dim, store, rotate)
        full_dim = unit.shape[1]
        params = {**DEFAULT_HNSW, **(ann_params or {})}
        settings = stored_settings(model, full_dim, prefix_dim, store, params, FORMAT_VERSION, rotation)
        conn = connect(dsn)
        try:
            self = cls(conn, dsn, table, settings, loaded_model)
            if standbys:  # checked before the build, so a wrong DSN changes nothing
                self.standby_reads = StandbyReads(standbys, identity(conn), table, require_table=False)
        except MrlError:
            conn.close()
            raise
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
        if exists and not overwrite:
            self.close()  # the standbys' pools too
            raise MrlError(f"{self.location}: table exists (pass `overwrite` to replace it)")
        if exists and _settings(conn, table) is None:
            self.close()
            raise MrlError(f"{self.location}: refusing to overwrite a table that is not an mrl index")
        from psycopg.types.json import Jsonb

        v = f"{self.vtype}({full_dim})"
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(
                f"CREATE TABLE {table} (id text PRIMARY KEY, text text NOT NULL, "
                f"metadata jsonb NOT NULL DEFAULT '{{}}', embedding {v} NOT NULL)"
            )
            self._stage(unit, documents)
            conn.execute(f"INSERT INTO {table} SELECT id, text, metadata, embedding::{v} FROM mrl_stage")
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")  # build the graph in memory, not in passes
            conn.execute(
                f"CREATE INDEX {table}_prefix ON {table} USING hnsw ({self._prefix_expr()} {self.vtype}_ip_ops) "
                f"WITH (m = {int(params['m'])}, ef_construction = {int(params['ef_construction'])})"
            )
            conn.execute(
                f"INSERT INTO {META_TABLE} (name, settings) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings",
                (table, Jsonb(settings)),
            )
        conn.execute(f"ANALYZE {table}")
        if self.standby_reads:
            self.standby_reads.wrote(conn)
            self.standby_reads.wait_replayed(replay_timeout, report)
            self.standby_reads.require_table = True
        return self

    # ---- SQL pieces ----------------------------------------------------------------------------
    def _prefix_expr(self, dim: int | None = None) -> str:
        """The re-normalized prefix, written exactly as in the index so the planner matches it."""
        d = dim or self.prefix_dim
        return f"(l2_normalize(subvector(embedding, 1, {d}))::{self.vtype}({d}))"

    def _stage(self, unit: np.ndarray, documents: list[Document]) -> None:
        """COPY rows (binary) into a temporary table that the caller's transaction merges and then drops."""
        from psycopg.types.json import Jsonb

        self.conn.execute(
            f"CREATE TEMP TABLE mrl_stage (id text, text text, metadata jsonb, embedding vector({self.full_dim})) "
            "ON COMMIT DROP"
        )
        copy_sql = "COPY mrl_stage (id, text, metadata, embedding) FROM STDIN WITH (FORMAT BINARY)"
        with self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(["text", "text", "jsonb", "vector"])
            for d, vec in zip(documents, unit, strict=True):
                copy.write_row((d.id, d.text, Jsonb(d.metadata or {}), vec))

    def _two_pass_sql(self, k: int, kprime: int, funnel: list[int], where: str = "") -> tuple[str, list[int]]:
        """The statement, and the funnel dims it reranks at (each takes a parameter ``q_<dim>``). ``where``: a
        metadata filter's condition, applied inside the first pass (pgvector's iterative scan keeps walking the
        graph until k' rows pass it)."""
        stages = []
        sql = (
            f"SELECT id, embedding FROM {self.table} {f'WHERE {where} ' if where else ''}"
            f"ORDER BY {self._prefix_expr()} <#> %(q_prefix)s::{self.vtype}({self.prefix_dim}) LIMIT %(kprime)s"
        )
        keep = kprime
        for dim in funnel:  # intermediate rerank stages, each keeping a quarter (at least 4k)
            if not self.prefix_dim < dim < self.full_dim or keep <= 4 * k:
                continue
            keep = max(4 * k, keep // 4)
            sql = (
                f"SELECT id, embedding FROM ({sql}) s{dim} "
                f"ORDER BY {self._prefix_expr(dim)} <#> %(q_{dim})s::{self.vtype}({dim}) LIMIT {keep}"
            )
            stages.append(dim)
        sql = (
            f"SELECT id, -(embedding <#> %(q)s::{self.vtype}({self.full_dim})) AS score FROM ({sql}) shortlist "
            f"ORDER BY embedding <#> %(q)s::{self.vtype}({self.full_dim}) LIMIT %(k)s"
        )
        return sql, stages

    def _search_settings(self, conn, kprime: int, ann_search: int | None, filtered: bool = False) -> None:
        """Per-transaction HNSW settings: efSearch covers k' (iterative scan past pgvector's cap of 1000, and past
        the rows a filter rejects, up to FILTERED_SCAN_TUPLES visited)."""
        ef = min(max(ann_search or (self.tuned or {}).get("ann_search") or 40, kprime), MAX_EF_SEARCH)
        iterative = "relaxed_order" if kprime > ef or filtered else "off"
        tuples = FILTERED_SCAN_TUPLES if filtered else max(20_000, 4 * kprime)
        conn.execute(  # one round trip for all three
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true), "
            "set_config('hnsw.max_scan_tuples', %s, true)",
            (str(ef), iterative, str(tuples)),
        )

    # ---- the backend interface -------------------------------------------------------------
    def _read(self, work: Callable[[Any], Any]) -> Any:
        """``work(connection)`` on a pooled read connection: a standby's when the index has replicas."""
        if self.standby_reads is not None:
            return self.standby_reads.read(work, self.pool)
        with self.pool.connection() as conn:
            return work(conn)

    def _wrote(self) -> None:
        if self.standby_reads is not None:
            self.standby_reads.wrote(self.conn)

    @property
    def count(self) -> int:
        return self._read(lambda conn: conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def explain(self, k: int = 10, shortlist: int = 100) -> str:
        """The plan of a two-pass search (tests check that the prefix index is used)."""
        sql, _ = self._two_pass_sql(k, shortlist, [])
        q = np.zeros(self.full_dim, dtype=np.float32)
        q[0] = 1
        params = {"q": q, "q_prefix": q[: self.prefix_dim], "kprime": shortlist, "k": k}

        def plan(conn) -> list:
            with conn.transaction():
                self._search_settings(conn, shortlist, None)
                return conn.execute("EXPLAIN " + sql, params).fetchall()

        return "\n".join(r[0] for r in self._read(plan))

    def search_keys(
        self, unit_queries, k, shortlist=None, ann_search=None, funnel=None, timings=None, filter=None, adaptive=None
    ):
        """Keys are document ids; one statement per query, all in one transaction (one snapshot)."""
        self.check_positive_k(k)
        self.check_adaptive(adaptive)
        node = parse_filter(filter)
        unit_queries = rotate_rows(unit_queries, self.rotation)
        funnel = funnel or []
        kprime = self.requested_shortlist(k, shortlist)
        where_params: dict = {}
        where = to_sql(node, where_params) if node is not None else ""
        sql, stages = self._two_pass_sql(k, kprime, funnel, where)
        views = {"q_prefix": prefix(unit_queries, self.prefix_dim)} | {
            f"q_{d}": prefix(unit_queries, d) for d in stages
        }
        timings = timings or SearchTimings()

        def run(conn) -> tuple[list[list[str]], list[list[float]]]:
            keys: list[list[str]] = []
            scores: list[list[float]] = []
            with conn.transaction():
                self._search_settings(conn, kprime, ann_search, filtered=node is not None)
                for i, q in enumerate(unit_queries):
                    params = {"q": q, "kprime": kprime, "k": k} | {name: view[i] for name, view in views.items()}
                    rows = conn.execute(sql, params | where_params).fetchall()
                    keys.append([r[0] for r in rows])
                    scores.append([float(r[1]) for r in rows])
            return keys, scores

        t0 = time.perf_counter()
        keys, scores = self._read(run)  # a read that a standby drops runs again elsewhere, whole
        timings.shortlist = time.perf_counter() - t0  # both passes run inside the database
        if node is None:  # a filter may match fewer than k documents
            self.check_found(keys, k)
        return keys, scores

    def exact_keys(self, unit_queries: np.ndarray, k: int, filter=None) -> list[list[str]]:
        """Exact full-dim search: ordering by the full distance has no index, so PostgreSQL scans every row."""
        node = parse_filter(filter)
        params: dict = {}
        where = f"WHERE {to_sql(node, params)} " if node is not None else ""
        sql = (
            f"SELECT id FROM {self.table} {where}"
            f"ORDER BY embedding <#> %(q)s::{self.vtype}({self.full_dim}) LIMIT %(k)s"
        )
        queries = rotate_rows(unit_queries, self.rotation)
        return self._read(
            lambda conn: [[r[0] for r in conn.execute(sql, {"q": q, "k": k} | params).fetchall()] for q in queries]
        )

    def stored_vectors(self, keys: list) -> dict:
        """The stored full vectors of these ids (rotated: inner products between them are the model's)."""
        sql = f"SELECT id, embedding::vector FROM {self.table} WHERE id = ANY(%s)"
        found = self._read(lambda conn: conn.execute(sql, (list(keys),)).fetchall())
        return {r[0]: _array(r[1]) for r in found}

    def sample_vectors(self, n: int, seed: int) -> np.ndarray:
        sql = f"SELECT embedding::vector FROM {self.table} ORDER BY md5(id || %s) LIMIT %s"
        rows = self._read(lambda conn: conn.execute(sql, (str(seed), n)).fetchall())
        stored = np.asarray([_array(r[0]) for r in rows], dtype=np.float32)
        return unrotate_rows(stored, self.rotation)

    def ann_search_grid(self) -> list[int | None]:
        return [None, 100, 200, 400, MAX_EF_SEARCH]

    def read_settings(self) -> dict | None:
        return _settings(self.conn, self.table)

    def write_settings(self, settings: dict) -> None:
        from psycopg.types.json import Jsonb

        self.conn.execute(f"UPDATE {META_TABLE} SET settings = %s WHERE name = %s", (Jsonb(settings), self.table))
        self._wrote()

    def get(self, ids: list[str]) -> dict[str, Document]:
        sql = f"SELECT id, text, metadata FROM {self.table} WHERE id = ANY(%s)"
        rows = self._read(lambda conn: conn.execute(sql, (list(ids),)).fetchall())
        return {r[0]: Document(r[0], r[1], r[2]) for r in rows}

    def ids_matching(self, filter=None) -> list[str]:
        node = parse_filter(filter)
        params: dict = {}
        where = f"WHERE {to_sql(node, params)} " if node is not None else ""
        sql = f"SELECT id FROM {self.table} {where}ORDER BY id"
        return [r[0] for r in self._read(lambda conn: conn.execute(sql, params).fetchall())]

    def add(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        return self._write(documents, vectors, replace=False)

    def upsert(self, documents: list[Document], vectors: np.ndarray | None = None) -> int:
        return self._write(documents, vectors, replace=True)

    def _write(self, documents: list[Document], vectors: np.ndarray | None, replace: bool) -> int:
        unit = self.vectors_for(documents, vectors)
        v = f"{self.vtype}({self.full_dim})"
        with self.lock, self.conn.transaction():
            self._stage(unit, documents)
            if not replace:
                taken = self.conn.execute(f"SELECT id FROM {self.table} JOIN mrl_stage USING (id) LIMIT 11").fetchall()
                if taken:
                    raise existing_ids_error([r[0] for r in taken])
            conflict = (
                " ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                "embedding = EXCLUDED.embedding"
                if replace
                else ""
            )
            self.conn.execute(
                f"INSERT INTO {self.table} SELECT id, text, metadata, embedding::{v} FROM mrl_stage{conflict}"
            )
        self._wrote()
        return len(documents)

    def delete(self, ids: list[str], missing_ok: bool = False) -> int:
        ids = list(dict.fromkeys(ids)) if missing_ok else ids
        check_unique(ids)
        with self.lock, self.conn.transaction():
            gone = self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s) RETURNING id", (list(ids),))
            found = {r[0] for r in gone.fetchall()}
            if len(found) < len(ids) and not missing_ok:
                raise unknown_ids_error([i for i in ids if i not in found])  # rolls the transaction back
        self._wrote()
        return len(found)

    def stats(self) -> dict:
        sql = f"SELECT count(*), pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass) FROM {self.table}"
        live, table_bytes, index_bytes = self._read(
            lambda conn: conn.execute(sql, (self.table, f"{self.table}_prefix")).fetchone()
        )
        return {
            **self.settings_stats("postgres", "hnsw (pgvector)", live),
            "ann_bytes": index_bytes,
            "disk_bytes": table_bytes,
            **({"reads": self.standby_reads.stats()} if self.standby_reads else {}),
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self.standby_reads is not None:
            self.standby_reads.close()
        self.conn.close()


def _settings(conn, table: str) -> dict | None:
    row = conn.execute(f"SELECT settings FROM {META_TABLE} WHERE name = %s", (table,)).fetchone()
    return row[0] if row else None


def _array(value) -> np.ndarray:
    """A pgvector value as float32 (psycopg returns a ``Vector`` or, for halfvec casts, a numpy array)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
