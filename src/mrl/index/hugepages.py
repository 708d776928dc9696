"""Back a faiss index's large arrays with 2 MiB pages (Linux transparent huge pages).

Why: a graph search is a chain of dependent random reads across hundreds of MiB (the prefix codes
and the neighbor lists). With 4 KiB pages almost every read also misses the TLB and waits for a
page-table walk; with 2 MiB pages the whole structure is covered by a few hundred TLB entries.
Most distributions set transparent huge pages to ``madvise``, so a process only gets them for the
memory it asks for, which is what this module does for the arrays faiss allocated when it read the
index. It changes the physical backing only, never the contents or the results.

Example::

    import faiss
    from mrl.index.hugepages import advise_huge_pages

    index = faiss.read_index("idx/scifact/ann-1.faiss")
    advise_huge_pages(index)  # bytes now eligible for 2 MiB pages; 0 where the OS has no such thing

References: Linux ``madvise(2)``: ``MADV_HUGEPAGE`` and ``MADV_COLLAPSE`` (Linux 6.1+, which
collapses the already-populated pages at once instead of waiting for ``khugepaged``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import faiss

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20


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


def advise_huge_pages(index: faiss.Index) -> int:
    """Ask for 2 MiB pages under ``index``'s large arrays; returns the bytes the kernel accepted.

    Only whole 2 MiB pages inside each array qualify (the ragged ends keep 4 KiB pages). Where
    transparent huge pages are off or the platform lacks them this returns 0 and changes nothing:
    it is a speed hint, not a requirement.
    """
    if LIBC is None:
        return 0
    accepted = 0
    for address, size in large_arrays(index):
        start = -(-address // HUGE_PAGE) * HUGE_PAGE
        end = (address + size) // HUGE_PAGE * HUGE_PAGE
        if end <= start:
            continue
        span = ctypes.c_size_t(end - start)
        if LIBC.madvise(ctypes.c_void_p(start), span, MADV_HUGEPAGE) != 0:
            continue
        # MADV_COLLAPSE fails on kernels before 6.1; MADV_HUGEPAGE alone still lets khugepaged do it later
        LIBC.madvise(ctypes.c_void_p(start), span, MADV_COLLAPSE)
        accepted += end - start
    return accepted
