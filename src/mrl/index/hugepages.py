"""Back an index's large arrays with 2 MiB pages (Linux transparent huge pages).

Why: a graph search is a chain of dependent random reads across hundreds of MiB (the prefix codes
and the neighbor lists). With 4 KiB pages almost every read also misses the TLB and waits for a
page-table walk; with 2 MiB pages the whole structure is covered by a few hundred TLB entries.
Most distributions set transparent huge pages to ``madvise``, so a process only gets them for the
memory it asks for, which is what this module does for the arrays faiss allocated when it read the
index, and for the memory SVS and zvec allocated while they opened one (SVS asks for reserved huge
pages, which most machines have none of, then falls back to 4 KiB pages without the hint; zvec copies
its graph out of the mapped files into plain allocations). It changes the physical backing only, never
the contents or the results.

Example::

    import faiss
    from mrl.index.hugepages import advise_huge_pages

    index = faiss.read_index("idx/scifact/ann-1.faiss")
    advice = advise_huge_pages(index, background=True)  # returns at once; the move runs in a thread
    advice.bytes  # eligible for 2 MiB pages; 0 where the OS has no such thing
    advice.wait()  # only if you must know the move is done

References: Linux ``madvise(2)``: ``MADV_HUGEPAGE`` and ``MADV_COLLAPSE`` (Linux 6.1+, which
collapses the already-populated pages at once instead of waiting for ``khugepaged``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from dataclasses import dataclass, field

import faiss

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20
# glibc puts one inaccessible page (more with a larger guard size) below each thread's stack
STACK_GUARD = 64 << 10


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


LIBC = _libc()


def large_arrays(index: faiss.Index) -> list[tuple[int, int]]:
    """(address, bytes) of the arrays a search reads at random: vector codes and HNSW neighbor lists."""
    arrays = []
    hnsw = isinstance(index, faiss.IndexHNSW)
    codes_owner = faiss.downcast_index(index.storage) if hnsw else index
    if isinstance(codes_owner, faiss.IndexFlatCodes):
        codes = codes_owner.codes
        arrays.append((int(codes.data()), codes.size()))
    if hnsw:
        neighbors = index.hnsw.neighbors
        arrays.append((int(neighbors.data()), neighbors.size() * 4))
    return [(address, size) for address, size in arrays if address and size]


@dataclass
class HugePageAdvice:
    """What :func:`advise_spans` asked for: the (address, bytes) spans the kernel accepted, the thread moving them."""

    spans: list[tuple[int, int]] = field(default_factory=list)
    collapsing: threading.Thread | None = None

    @property
    def bytes(self) -> int:
        return sum(length for _, length in self.spans)

    def wait(self) -> None:
        """Block until the pages have moved (at once when the move ran in the caller's thread)."""
        if self.collapsing is not None:
            self.collapsing.join()


def advise_huge_pages(index: faiss.Index, background: bool = False) -> HugePageAdvice:
    """Ask for 2 MiB pages under ``index``'s large arrays (see :func:`advise_spans`)."""
    return advise_spans(large_arrays(index), background)


@dataclass(frozen=True)
class MemoryMap:
    """A snapshot of this process's writable private memory, from ``/proc/self/maps``.

    For engines whose arrays Python cannot reach (SVS, zvec): the memory that appears while one opens
    an index is the index's. Taken before and after, :func:`new_memory` finds it.
    """

    anonymous: frozenset[tuple[int, int]]  # (start, end) of each writable anonymous mapping
    heap: tuple[int, int] | None  # the [heap] that malloc grows with brk
    guard_ends: frozenset[int]  # ends of small inaccessible mappings: the guard page below a thread stack


def memory_map() -> MemoryMap:
    """This process's :class:`MemoryMap` (empty where /proc is missing)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return MemoryMap(frozenset(), None, frozenset())
    anonymous, heap, guards = set(), None, set()
    for line in lines:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else ""
        if fields[1].startswith("rw") and not name:
            anonymous.add((start, end))
        elif fields[1].startswith("rw") and name == "[heap]":
            heap = (start, end)
        elif fields[1].startswith("---") and end - start <= STACK_GUARD:
            guards.add(end)
    return MemoryMap(frozenset(anonymous), heap, frozenset(guards))


def new_memory(before: MemoryMap) -> list[tuple[int, int]]:
    """(address, bytes) of the writable memory that has appeared since ``before``, thread stacks left out.

    A mapping counts whole unless it is unchanged: engines map their copies themselves (zvec in
    several pieces, which the kernel joins into one mapping when they land side by side), often in
    address space that threads freed a moment before, so comparing extents alone would miss them. A
    mapping that grew or merged with a new neighbor is advised whole, which is harmless; the heap only
    for its growth.
    """
    now = memory_map()
    spans = [
        (start, end - start)
        for start, end in now.anonymous - before.anonymous
        if start not in now.guard_ends  # a new thread's stack sits right above its guard page
    ]
    if now.heap and before.heap and now.heap[0] == before.heap[0] and now.heap[1] > before.heap[1]:
        spans.append((before.heap[1], now.heap[1] - before.heap[1]))
    return sorted(spans)


def advise_new_mappings(before: MemoryMap, background: bool = False) -> HugePageAdvice:
    """Ask for 2 MiB pages under the memory that appeared since ``before`` (:func:`new_memory`).

    Advising memory that is not the index's (another thread's allocation) is harmless: it changes the
    backing of that memory, never its contents.
    """
    return advise_spans(new_memory(before), background)


def advise_spans(spans: list[tuple[int, int]], background: bool = False) -> HugePageAdvice:
    """Ask for 2 MiB pages under each (address, bytes) span.

    Only whole 2 MiB pages inside each span qualify (the ragged ends keep 4 KiB pages). Moving the
    already-filled pages copies them, about as long as reading the index from disk, so
    ``background=True`` does it in a daemon thread (ctypes releases the GIL) and searches run meanwhile
    on the old pages: the contents never change, only their backing. Where transparent huge pages are
    off or the platform lacks them this accepts 0 bytes and changes nothing: it is a speed hint.
    """
    if LIBC is None:
        return HugePageAdvice()
    advised = []
    for address, size in spans:
        start = -(-address // HUGE_PAGE) * HUGE_PAGE
        end = (address + size) // HUGE_PAGE * HUGE_PAGE
        if end > start and LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE) == 0:
            advised.append((start, end - start))

    def collapse() -> None:
        # MADV_COLLAPSE fails on kernels before 6.1; MADV_HUGEPAGE alone still lets khugepaged do it later
        for start, length in advised:
            LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_COLLAPSE)

    advice = HugePageAdvice(advised)
    if background and advised:
        advice.collapsing = threading.Thread(target=collapse, name="mrl-huge-pages", daemon=True)
        advice.collapsing.start()
    else:
        collapse()
    return advice
