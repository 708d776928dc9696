"""Losses mrl adds on top of sentence-transformers' (one class per file)."""

from mrl.train.losses.matryoshka_distill import MatryoshkaDistillLoss
from mrl.train.losses.recording_matryoshka import RecordingMatryoshkaLoss

__all__ = ["MatryoshkaDistillLoss", "RecordingMatryoshkaLoss"]
