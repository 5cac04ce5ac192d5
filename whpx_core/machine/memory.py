"""Guest RAM: one anonymous host mapping, shared by every vCPU of the partition."""

from __future__ import annotations

import mmap
import sys

MIB = 1024 * 1024


def allocate_ram(size: int) -> mmap.mmap:
    # Anonymous, page-aligned and zeroed: what KVM memory slots and Unicorn's
    # mem_map_ptr both accept.
    if sys.platform == "win32":  # no MAP_* flags there; -1 is an anonymous mapping
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
