"""Evaluation: retrieval and STS quality at every prefix dim, raw and rotated (``retrieval``), during training
(``during_training``), through MTEB (``mteb``), pytrec_eval metrics (``metrics``) and the tables and plots that
show them (``tables``).
"""
