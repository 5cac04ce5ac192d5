"""Bulk byte writes into guest RAM buffers, shared by the platforms that map host RAM."""

from __future__ import annotations

import mmap
from collections.abc import Iterable

import numpy as np

_SMALL = 32


def swap_bytes(regions: Iterable[tuple[int, mmap.mmap]], gpas, values) -> None:  # type: ignore[no-untyped-def]
    """`ram[gpa] = value` for many addresses in one vectorised write per region (the
    breakpoint park / unpark cycle: 10,000 bytes in well under a millisecond)."""
    regions = list(regions)
    if len(gpas) <= _SMALL and len(regions) == 1:
        # numpy's fixed cost (~10 us) dominates for a handful of bytes.
        base, buffer = regions[0]
        for gpa, value in zip(gpas, values, strict=True):
            buffer[int(gpa) - base] = int(value)
        return
    gpas = np.asarray(gpas, dtype=np.int64)
    values = np.asarray(values, dtype=np.uint8)
    if len(regions) == 1:
        base, buffer = regions[0]
        if gpas.min() < base or gpas.max() >= base + len(buffer):
            raise ValueError("a guest-physical address is not RAM")
        view = np.frombuffer(buffer, dtype=np.uint8)
        view[gpas - base] = values
        del view  # release the buffer export at once, so the mmap can be closed
        return
    covered = np.zeros(len(gpas), dtype=bool)
    for base, buffer in regions:
        inside = (gpas >= base) & (gpas < base + len(buffer))
        if inside.any():
            view = np.frombuffer(buffer, dtype=np.uint8)
            view[gpas[inside] - base] = values[inside]
            del view
            covered |= inside
    if not covered.all():
        missing = int(gpas[~covered][0])
        raise ValueError(f"guest-physical address {missing:#x} is not RAM")
