"""Loading and validating every kind of input mrl reads."""

from mrl.data.beir import BeirDataset, load_beir
from mrl.data.documents import Document, load_documents
from mrl.data.pairs import Pair, Triplet, load_pairs, load_triplets
from mrl.data.sts import StsData, load_sts

__all__ = [
    "BeirDataset",
    "Document",
    "Pair",
    "StsData",
    "Triplet",
    "load_beir",
    "load_documents",
    "load_pairs",
    "load_sts",
    "load_triplets",
]
