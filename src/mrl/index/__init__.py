"""Two-pass Matryoshka search: ANN shortlist on the prefix, exact rerank on full vectors.

``Index`` is the embedded index (a folder); ``open_index`` opens any backend by location.
"""

from mrl.index.backend import Hit, SearchBackend, open_index
from mrl.index.embedded import Index

__all__ = ["Hit", "Index", "SearchBackend", "open_index"]
