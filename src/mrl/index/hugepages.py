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
from dataclasses import dataclass

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


@dataclass
class HugePageAdvice:
    """What :func:`advise_huge_pages` asked for: the bytes the kernel accepted and the thread moving them, if any."""

    bytes: int = 0
    collapsing: threading.Thread | None = None

    def wait(self) -> None:
        """Block until the pages have moved (at once when the move ran in the caller's thread)."""
        if self.collapsing is not None:
            self.collapsing.join()


def advise_huge_pages(index: faiss.Index, background: bool = False) -> HugePageAdvice:
    """Ask for 2 MiB pages under ``index``'s large arrays.

    Only whole 2 MiB pages inside each array qualify (the ragged ends keep 4 KiB pages). Moving the
    already-filled pages copies them, about as long as reading the index from disk, so
    ``background=True`` does it in a daemon thread (ctypes releases the GIL) and searches run meanwhile
    on the old pages: the contents never change, only their backing. Where transparent huge pages are
    off or the platform lacks them this accepts 0 bytes and changes nothing: it is a speed hint.
    """
    if LIBC is None:
        return HugePageAdvice()
    spans = []
    for address, size in large_arrays(index):
        start = -(-address // HUGE_PAGE) * HUGE_PAGE
        end = (address + size) // HUGE_PAGE * HUGE_PAGE
        if end > start and LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE) == 0:
            spans.append((start, end - start))

    def collapse() -> None:
        # MADV_COLLAPSE fails on kernels before 6.1; MADV_HUGEPAGE alone still lets khugepaged do it later
        for start, length in spans:
            LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_COLLAPSE)

    advice = HugePageAdvice(sum(length for _, length in spans))
    if background and spans:
        advice.collapsing = threading.Thread(target=collapse, name="mrl-huge-pages", daemon=True)
        advice.collapsing.start()
    else:
        collapse()
    return advice
