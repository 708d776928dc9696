"""Two-pass Matryoshka search: ANN shortlist on the prefix, exact rerank on full vectors."""

from mrl.index.embedded import Hit, Index

__all__ = ["Hit", "Index"]
