"""What processor this is, and whether vendor-locked engine features can run on it.

Why a module of its own: Intel's SVS ships LVQ and LeanVec (its compressed codes) as a closed binary
that runs on Intel CPUs only. On any other x86-64 CPU it does not raise: it prints one line and ends
the whole process, which would take ``mrl serve`` or a test session down with it. So mrl asks the CPU
first and refuses with a clear :class:`~mrl.errors.MrlError` instead. The same description of the CPU
goes into every benchmark result (``provenance.machine.cpu``), since speed figures depend on it.

Example::

    from mrl.cpu import cpu_info, lvq_unsupported_reason

    cpu = cpu_info()
    print(cpu.model, cpu.vendor, cpu.simd)       # e.g. 'AMD EPYC' 'AuthenticAMD' ['avx2']
    if lvq_unsupported_reason(cpu) is None:
        print("SVS LVQ / LeanVec codes can run here")
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mrl.errors import MrlError

INTEL = "GenuineIntel"
# the instruction sets that decide which SIMD kernels faiss, SVS and friends run (Linux /proc/cpuinfo names)
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon", "CentaurHauls": "Centaur"}


@dataclass(frozen=True)
class CpuInfo:
    """The processor as the OS reports it; ``simd`` holds the :data:`SIMD_FLAGS` it has."""

    model: str
    vendor: str
    arch: str
    simd: list[str] = field(default_factory=list)

    @property
    def vendor_name(self) -> str:
        return VENDORS.get(self.vendor, self.vendor or "unknown vendor")

    def describe(self) -> str:
        """One phrase for error messages: model, vendor and SIMD level."""
        flags = ", ".join(self.simd) or "no AVX2"
        return f"{self.model} ({self.vendor_name}, {self.arch}, {flags})"

    def to_json(self) -> dict:
        return asdict(self)


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (the first processor's block)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: a machine's cores are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or fields.get("Model") or fields.get("CPU part") or platform.processor() or arch
    return CpuInfo(
        model=model,
        vendor=fields.get("vendor_id", ""),
        arch=arch,
        simd=[f for f in SIMD_FLAGS if f in flags],
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached: it does not change while a process runs)."""
    arch = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"), arch)
    return CpuInfo(model=platform.processor() or arch, vendor="", arch=arch)


def lvq_unsupported_reason(cpu: CpuInfo) -> str | None:
    """Why SVS's LVQ/LeanVec codes cannot run on ``cpu``, or None when they can.

    SVS gates them on the CPU vendor (its CPUID check); AVX-512 is what they are tuned for but not a
    requirement, so an Intel CPU without it is allowed (slower, as SVS warns itself).
    """
    if cpu.arch not in ("x86_64", "AMD64"):
        return f"SVS's LVQ and LeanVec codes need an x86-64 Intel CPU; this is {cpu.describe()}"
    if cpu.vendor != INTEL:
        return f"SVS's LVQ and LeanVec codes run on Intel CPUs only; this is {cpu.describe()}"
    return None


def require_lvq(what: str, advice: str = "use", cpu: CpuInfo | None = None) -> None:
    """Refuse ``what`` (e.g. "`ann` vamana `quant` sq8") before SVS sees it, naming the CPU and the alternatives.

    ``advice`` starts the suggestion: "use" for a new build, "rebuild it with" for an existing index.
    """
    reason = lvq_unsupported_reason(cpu or cpu_info())
    if reason is not None:
        raise MrlError(
            f"{what}: {reason}. Instead, {advice} `ann` vamana `quant` fp32 (SVS's open-source float path) "
            "or `ann` hnsw (faiss, the default)"
        )
