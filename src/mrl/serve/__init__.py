"""Serving an index over HTTP (FastAPI)."""

from mrl.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
