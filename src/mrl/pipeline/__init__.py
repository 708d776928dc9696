"""``mrl run``: one TOML config (``config``) drives resumable stages (``stages``: train, evaluate, index, benchmark)
and writes one report (``report``).
"""
