"""Pin glibc's mmap threshold so a node's RSS follows what it holds, not what it once held.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB) with its own ``mmap`` and gives
it back on ``free``, but by default it raises the threshold to the size of each such block
freed, up to 32 MiB (mallopt(3), "dynamic mmap threshold"). A node allocates blocks of that
size all the time: batch entries of a few hundred KiB, snapshot bytes of several MiB. Once the
threshold has risen they come from the heap, and a heap grows in the holes between long-lived
objects and is rarely trimmed, so RSS kept climbing with every snapshot retention took
(issue 15). Setting the threshold explicitly turns the adjustment off (mallopt(3)): large
blocks go back to the kernel when freed, at the price of an mmap/munmap pair (and page faults)
per block, which is why the threshold is pinned above the write path's blocks, not at 128 KiB.

``MALLOC_MMAP_THRESHOLD_`` in the environment (an operator's choice) is left alone, as is any
libc that is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# Above the entries and frames of the write path (a batch entry of 1,000 records is ~200 KiB, a
# peer message at most ``max_msg_bytes``, 1 MiB), which stay on the fast heap path; below the
# snapshot-sized blocks (MiBs) whose churn grew the heap.
MMAP_THRESHOLD_BYTES = 4 << 20


def pin_mmap_threshold() -> bool:
    """Fix the threshold at ``MMAP_THRESHOLD_BYTES``; True when it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt): nothing to pin
    ok = bool(mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES)))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed: RSS may grow past what the node holds")
    return ok
