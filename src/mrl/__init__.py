"""mrl: Matryoshka embeddings end to end -- train, measure per dim, two-pass search."""

__version__ = "0.3.0"
