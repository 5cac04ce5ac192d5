"""Guest RAM: one anonymous host mapping, shared by every vCPU of the partition."""

from __future__ import annotations

import mmap

MIB = 1024 * 1024


def allocate_ram(size: int) -> mmap.mmap:
    # Anonymous, page-aligned and zeroed: what KVM memory slots and Unicorn's
    # mem_map_ptr both accept.
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
