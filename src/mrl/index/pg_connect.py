"""Connections to PostgreSQL that every part of the pgvector backend shares: pools for reads, DSNs in messages.

A DSN carries a password, so every message names a server through :func:`redact`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

POOL_TIMEOUT_S = 10  # seconds a read waits for a pooled connection (and a new connection for its server)


def read_pool(dsn: str, name: str, timeout: float = POOL_TIMEOUT_S):
    """An open pool of autocommit connections with pgvector's types, for reads; ``$MRL_PG_POOL`` sets its size
    (default 4; PostgreSQL runs one statement per connection at a time)."""
    from pgvector.psycopg import register_vector
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=int(os.environ.get("MRL_PG_POOL", "4")),
        kwargs={"autocommit": True, "connect_timeout": max(2, int(timeout))},
        configure=register_vector,
        name=name,
        timeout=timeout,
        open=True,
    )


def redact(dsn: str) -> str:
    """The DSN without its password, for messages (credentials are never printed or logged)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}@{host}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)
