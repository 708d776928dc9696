"""Two-pass Matryoshka search: ANN shortlist on the prefix, exact rerank on full vectors.

The front door: :func:`open_index` and :func:`build_index` take a location (a folder, ``postgresql://...``,
``qdrant://...``, ``qdrant-edge://...``); :class:`Index` is the embedded index itself, and every backend answers the
:class:`SearchIndex` interface.
"""

from mrl.index.embedded import Index
from mrl.index.interface import Hit, SearchIndex
from mrl.index.locations import build_index, open_index

__all__ = ["Hit", "Index", "SearchIndex", "build_index", "open_index"]
