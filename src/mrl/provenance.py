"""Where a number was measured: every result file records the command, the code, the machine and the engines.

Why: a speed figure depends on the CPU (AVX2 or AVX-512, Intel or AMD) and on the engines' versions, and a result
written by uncommitted code cannot be reproduced; :func:`write_json` records all of it beside the data.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mrl import __version__
from mrl.cpu import cpu_info

# engines a result may depend on: module name -> distribution name (recorded when the run imported them)
ENGINES = {
    "faiss": "faiss-cpu",
    "svs": "scalable-vs",
    "hnswlib": "hnswlib",
    "scann": "scann",
    "usearch": "usearch",
    "pyglass": "pyglass-portable",
    "diskannpy": "diskannpy",
    "lancedb": "lancedb",
    "rabitqlib": "rabitqlib",
    "pyvsag": "pyvsag",
    "voyager": "voyager",
    "zvec": "zvec",
    "psycopg": "psycopg",
    "qdrant_client": "qdrant-client",
    "qdrant_edge": "qdrant-edge-py",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "torch": "torch",
    "transformers": "transformers",
    "sentence_transformers": "sentence-transformers",
    "numpy": "numpy",
}


def engine_versions() -> dict[str, str]:
    """Installed versions of the engines this process imported, so a figure names what produced it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for module, dist in ENGINES.items():
        if module in sys.modules:
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return out


def machine_info() -> dict:
    """Where a number was measured: benchmark JSON always records it (CPU model, vendor, SIMD, engines)."""
    cpu = cpu_info()
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu.model,
        "cpu_vendor": cpu.vendor_name,
        "simd": cpu.simd,
        "engines": engine_versions(),
    }
    torch = sys.modules.get("torch")  # only if the run used it: importing torch just for this costs seconds
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def source_commit() -> str | None:
    """The git commit of the mrl source this process runs (with ``+dirty`` for uncommitted changes), if it is a
    checkout: a result then names the exact code that made it."""
    import subprocess

    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        code = [":(top)src", ":(top)benchmarks/*.py"]  # the code that makes results, not the results themselves
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", *code], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_json(data: dict, path: str | Path) -> Path:
    """Write JSON atomically (temp file + rename) with provenance: version, time, machine, command."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **data,
        "provenance": {
            "mrl_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            **({"commit": commit} if (commit := source_commit()) else {}),
            "machine": machine_info(),
        },
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path
