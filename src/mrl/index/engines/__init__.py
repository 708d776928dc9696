"""First-pass engines, one file each, and their registry: the one place that names them.

An engine (:class:`~mrl.index.engines.base.Engine`) builds and loads a
:class:`~mrl.index.engines.base.FirstPass` over the prefixes of an index's rows. To add one, subclass both in a new
file of this package and add its instance to :data:`ENGINES` below (CONTRIBUTING.md walks through it).

Example::

    from mrl.index.engines import DEFAULT_ANN, ENGINES, engine

    engine("zvec").check("sq8", 128)          # raises MrlError naming the choices when it cannot
    sorted(ENGINES)                           # ['flat', 'hnsw', 'ivf', 'vamana', 'zvec']
"""

from __future__ import annotations

import importlib.util

from mrl.errors import MrlError
from mrl.index.engines.base import QUANTS, Engine, FirstPass
from mrl.index.engines.faiss import FLAT, HNSW, IVF
from mrl.index.engines.vamana import VAMANA
from mrl.index.engines.zvec import ZVEC

ENGINES: dict[str, Engine] = {e.name: e for e in (ZVEC, HNSW, IVF, FLAT, VAMANA)}
# the default first pass: zvec wherever its wheel installs (not macOS on Intel), else faiss HNSW
DEFAULT_ANN = "zvec" if importlib.util.find_spec("zvec") is not None else "hnsw"


def engine(name: str) -> Engine:
    """The registered engine called ``name``, or an error that lists them."""
    if name not in ENGINES:
        raise MrlError(f"`ann`: unknown first-pass engine '{name}' (choose {', '.join(ENGINES)})")
    return ENGINES[name]


def check_ann(name: str, quant: str, width: int) -> None:
    """Refuse an engine / codes / width combination before any expensive work (encoding, training)."""
    engine(name).check(quant, width)


__all__ = ["DEFAULT_ANN", "ENGINES", "QUANTS", "Engine", "FirstPass", "check_ann", "engine"]
