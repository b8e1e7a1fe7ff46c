"""Let freed memory be reused instead of returned to the kernel at once.

A fit allocates and frees arrays of up to ~24 MB at every Levenberg-Marquardt step (fit.batched_lm's chunks).
glibc serves blocks above its mmap threshold (dynamic, from 128 kB) with fresh pages and unmaps them when
freed, so every step pays page faults again: on 1,008 rows `next --law auto` spent 17 of its 85 CPU seconds
in the kernel. With the threshold at its maximum (32 MB on 64-bit) and a trim threshold of 1 GB the heap
keeps the pages (benchmarks/README.md §9).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False (and nothing changed) where libc is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
