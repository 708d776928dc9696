"""API keys: stored as SHA-256 hashes, compared in constant time.

The keys file holds one ``sha256:<hex>`` line per key (``mrl serve --new-key FILE`` appends one and
prints the key once); a plain-text line is accepted too and hashed on load, so that the server never
keeps a raw key in memory longer than the load.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from mrl.errors import MrlError

PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def load_key_hashes(path: Path) -> list[str]:
    if not path.is_file():
        raise MrlError(f"{path}: API key file not found")
    hashes = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(PREFIX):
            if len(line) != len(PREFIX) + 64:
                raise MrlError(f"{path}, line {line_no}: malformed sha256 hash")
            hashes.append(line)
        else:
            hashes.append(hash_key(line))
    if not hashes:
        raise MrlError(f"{path}: no API keys in the file")
    return hashes


def new_key(path: Path) -> str:
    """Create a random key, append its hash to ``path``, and return the key (shown to the user once)."""
    key = secrets.token_urlsafe(32)
    with path.open("a") as handle:
        handle.write(hash_key(key) + "\n")
    return key


def key_ok(presented: str | None, hashes: list[str]) -> bool:
    if not presented:
        return False
    digest = hash_key(presented)
    ok = False
    for h in hashes:  # no early exit: the time taken does not depend on which key matched
        ok |= hmac.compare_digest(digest, h)
    return ok
