"""Joining a Ray cluster, with one clear line when there is none to join."""

from __future__ import annotations

import os
import socket

from mrl.errors import MrlError

START_HINT = "start one with `ray start --head` (then --ray auto), or give a running cluster's address: --ray HOST:PORT"


def ray_module():
    """The ``ray`` package, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise MrlError("`ray`: Ray is not installed here: pip install 'mrl[ray]'") from None
    return ray


def connect(address: str = "auto") -> None:
    """Join the Ray cluster at ``address`` (``auto``: ``$RAY_ADDRESS``, else the cluster ``ray start`` left on this
    machine). An address that does not answer fails at once with the address tried, instead of Ray's minute of
    retries; joining twice is a no-op."""
    ray = ray_module()
    if ray.is_initialized():
        return
    if not isinstance(address, str) or not address.strip():
        raise MrlError(f"`ray`: give a cluster address (HOST:PORT) or auto, not {address!r}")
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    if target and target != "auto" and not target.startswith("ray://"):
        host, _, port = target.rpartition(":")
        if not port.isdigit():
            raise MrlError(f"`ray`: '{target}' is not HOST:PORT; {START_HINT}")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except OSError as exc:
            raise MrlError(f"`ray`: no Ray cluster answers at {target} ({exc.strerror or exc}); {START_HINT}") from None
    try:
        ray.init(address=target or "auto", logging_level="ERROR", log_to_driver=False)
    except ConnectionError:
        tried = target or "auto (no RAY_ADDRESS, and no cluster started on this machine by `ray start`)"
        raise MrlError(f"`ray`: no Ray cluster found at {tried}; {START_HINT}") from None
