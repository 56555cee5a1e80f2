"""The refinery process's heap: memory a segment frees is kept for the next arrays.

A segment's arrays are made and freed phase after phase (the scanners' level arrays, the book
batches' arenas, the engines' output columns, Parquet buffers). By default glibc's ``malloc``
hands a freed block above its mmap threshold (adjusted as blocks are freed, up to 32 MiB) back
to the kernel at once, and trims the top of its heap, so the next phase's arrays are new pages
again: a page fault and a zeroed page per 4 KiB, which on the virtual machines measured costs
more than the work that fills them. With the threshold fixed at its ceiling and the heap
trimmed only past 1 GiB, a freed block serves the next allocation instead
(docs/performance.md, "Eighth pass": a 50 MB mixed segment, page faults 35.5k -> 26.7k).
Blocks above that ceiling (a large segment's level rows, a 60 MB segment's copy) would still
get mappings of their own, new pages at every use: ``malloc`` is told to make no mappings at
all, so they come from the heap too (docs/performance.md, "Eleventh pass").

The price: a refinery process keeps the heap of its largest segment until it exits (its peak
memory, which the quality bar already bounds), and every block comes from the heap, not from
a mapping of its own. ``refinery.keep_freed_memory: false`` leaves glibc's defaults.

Kept memory has one cost at the peak: an array read once, front to back, while its successor
is written (a scanner's level rows while their columns are laid out, a book's columns while
the engine applies them) holds all its pages until it is freed. ``release`` hands the pages
already read back to the kernel as the reader goes (docs/performance.md, "Fourteenth pass").
With transparent huge pages, pages handed back inside a huge page made the kernel zero whole
2 MiB pages again when the heap reused them (100 MB of Bitget captures: 1.52-1.55 -> 1.87-2.65
s of CPU, ``clear_page`` 6 -> 19 % of the samples); the refinery's process asks for none
(``PR_SET_THP_DISABLE``): 1.68-1.71 s, and the mixed captures and documented shapes as fast
as with them, peaking 20 MB lower.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import platform

import numpy as np

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h) and the values set
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling (HEAP_MAX_SIZE / 2 on 64-bit): a larger one is refused
TRIM_THRESHOLD = 1 << 30
MMAP_MAX = 0  # no block in a mapping of its own, whatever its size
PR_SET_THP_DISABLE = 41  # prctl (linux/prctl.h): no transparent huge pages for this process

MADV_DONTNEED = 4  # (Linux) the pages read as zeros afterwards, and hold no memory until then

_applied: bool | None = None  # None: not asked yet in this process
_madvise: ctypes._CFuncPtr | bool | None = None  # None: not looked up yet; False: none here


def keep_freed_memory() -> bool:
    """Set the process's ``malloc`` to keep freed memory, and ask for no transparent huge
    pages (once per process; later calls return the first answer). False where the C library
    is not glibc (musl, macOS: nothing to set) or glibc refused a value."""
    global _applied
    if _applied is None:
        _applied = _set()
    return _applied


def _set() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        ok = libc.mallopt(M_MMAP_MAX, MMAP_MAX) == 1 and ok
    except (OSError, AttributeError) as exc:
        log.debug("mallopt unavailable: %s", exc)
        return False
    if not ok:
        log.debug("glibc refused a mallopt value: its defaults stay")
    elif libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:  # (a kernel before 3.15: none)
        log.debug("transparent huge pages stay: prctl refused")
    return ok


def releasable(a: np.ndarray) -> bool:
    """Whether ``release`` takes pages of `a`: contiguous and writable (a bytes object's
    memory or a read-only map is not this process's to hand back)."""
    return bool(a.flags.c_contiguous and a.flags.writeable)


def release(a: np.ndarray, start: int, stop: int) -> int:
    """Hand the whole pages inside bytes [start, stop) of the contiguous array `a` back to
    the kernel: they stop counting in the process's memory, and read as zeros afterwards.
    Only for an array this process allocated (not a file's map) whose bytes there are never
    read again. Returns the bytes handed back (0 where the system has no ``madvise``)."""
    if not releasable(a):
        raise ValueError("release: the array must be contiguous and this process's own")
    start, stop = max(start, 0), min(stop, a.nbytes)
    page = mmap.PAGESIZE
    base = a.ctypes.data
    lo = -(-(base + start) // page) * page  # first whole page inside the range
    hi = (base + stop) // page * page
    fn = _madvise_fn()
    if hi <= lo or not fn:
        return 0
    if fn(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), MADV_DONTNEED) != 0:
        return 0  # (an advice refused changes nothing: the pages stay, as they were)
    return hi - lo


def _madvise_fn() -> ctypes._CFuncPtr | None:
    global _madvise
    if _madvise is None:
        _madvise = False
        if platform.system() == "Linux":
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError) as exc:
                log.debug("madvise unavailable: %s", exc)
    return _madvise or None
