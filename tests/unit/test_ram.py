"""platform/ram.py: bulk byte swaps (the breakpoint park / unpark cycle)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from whpx_core.platform.ram import GuestRam

BASE = 0x10_0000


def ram_of(size: int = 0x10000) -> GuestRam:
    ram = GuestRam()
    ram.add(BASE, mmap.mmap(-1, size))
    return ram


def test_a_large_vector_is_checked_once_and_written_every_time():
    ram = ram_of()
    gpas = np.arange(BASE, BASE + 640, 10, dtype=np.int64)  # 64: past the small path
    ram.swap_bytes(gpas, np.full(len(gpas), 0xF1, dtype=np.uint8))
    assert ram.read(BASE, 11) == b"\xf1" + bytes(9) + b"\xf1"
    ram.swap_bytes(gpas, np.zeros(len(gpas), dtype=np.uint8))  # the same array again
    assert ram.read(BASE, 640) == bytes(640)
    moved = gpas + 1  # a new vector is checked and rebased anew
    ram.swap_bytes(moved, np.full(len(moved), 0xCC, dtype=np.uint8))
    assert ram.read(BASE, 2) == b"\x00\xcc"


def test_a_vector_outside_ram_is_refused_before_anything_is_written():
    ram = ram_of()
    gpas = np.arange(BASE, BASE + 640, 10, dtype=np.int64)
    ram.swap_bytes(gpas, np.zeros(len(gpas), dtype=np.uint8))
    bad = np.append(gpas, BASE + 0x10000)  # one byte past the end
    with pytest.raises(ValueError, match="not RAM"):
        ram.swap_bytes(bad, np.full(len(bad), 0xF1, dtype=np.uint8))
    assert ram.read(BASE, 640) == bytes(640)
