"""Vectors as every stage handles them: Matryoshka prefixes, the rotation, row samples and crash-safe files.

The lowest layer of mrl after its errors: training, evaluation and the index all build on it, and it imports
nothing of theirs.
"""
