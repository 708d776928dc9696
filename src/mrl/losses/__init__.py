"""Losses mrl adds on top of sentence-transformers' (one class per file)."""

from mrl.losses.matryoshka_distill import MatryoshkaDistillLoss
from mrl.losses.recording_matryoshka import RecordingMatryoshkaLoss

__all__ = ["MatryoshkaDistillLoss", "RecordingMatryoshkaLoss"]
