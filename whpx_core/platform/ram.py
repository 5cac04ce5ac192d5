"""Guest RAM as host buffers: the regions a partition maps, host reads and writes across
them, and bulk byte writes. Shared by the platforms that map host memory."""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from whpx_core.platform.base import PlatformError


@dataclass(slots=True)
class RamRegion:
    gpa: int
    buffer: mmap.mmap

    @property
    def end(self) -> int:
        return self.gpa + len(self.buffer)


class GuestRam:
    def __init__(self) -> None:
        self.regions: list[RamRegion] = []
        # The last address vector swap_bytes saw and its offsets into the one region:
        # the breakpoint table passes the same (never mutated) array at every park and
        # unpark until it changes, so it is checked and rebased once, not at every hit.
        self._rebased: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, gpa: int, buffer: mmap.mmap) -> RamRegion:
        region = RamRegion(gpa, buffer)
        self.regions.append(region)
        return region

    def overlaps(self, gpa: int, size: int) -> bool:
        return any(gpa < r.end and r.gpa < gpa + size for r in self.regions)

    def _chunks(self, gpa: int, size: int) -> list[tuple[RamRegion, int, int]]:
        """(region, offset, length) pieces covering [gpa, gpa+size) across adjacent
        regions."""
        pieces = []
        while size > 0:
            region = next((r for r in self.regions if r.gpa <= gpa < r.end), None)
            if region is None:
                raise PlatformError(f"guest-physical address {gpa:#x} is not RAM")
            length = min(size, region.end - gpa)
            pieces.append((region, gpa - region.gpa, length))
            gpa += length
            size -= length
        return pieces

    def read(self, gpa: int, size: int) -> bytes:
        for region in self.regions:  # the usual case, cheap enough for every step
            if region.gpa <= gpa and gpa + size <= region.end:
                return region.buffer[gpa - region.gpa : gpa - region.gpa + size]
        return b"".join(r.buffer[o : o + n] for r, o, n in self._chunks(gpa, size))

    def write(self, gpa: int, data: bytes) -> None:
        done = 0
        for region, offset, length in self._chunks(gpa, len(data)):
            region.buffer[offset : offset + length] = data[done : done + length]
            done += length

    def swap_bytes(self, gpas, values) -> None:  # type: ignore[no-untyped-def]
        if len(self.regions) == 1 and isinstance(gpas, np.ndarray) and len(gpas) > _SMALL:
            region = self.regions[0]
            rebased = self._rebased
            if rebased is None or rebased[0] is not gpas:
                if gpas.min() < region.gpa or gpas.max() >= region.end:
                    raise ValueError("a guest-physical address is not RAM")
                rebased = self._rebased = (gpas, gpas - region.gpa)
            view = np.frombuffer(region.buffer, dtype=np.uint8)
            view[rebased[1]] = values
            del view  # release the buffer export at once, so the mmap can be closed
            return
        swap_bytes(((r.gpa, r.buffer) for r in self.regions), gpas, values)

    def clear(self) -> None:
        self.regions.clear()
        self._rebased = None

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
