"""The software breakpoint table: one low-level entry per guest-virtual address.

Design of the seed (INT1 = 0xF1 planted in guest memory, per-address states CLEARED /
SET_PENDING / SET / CLEAR_PENDING, failures kept pending and retried), with two changes:
- add and remove are O(1) (a dict and per-owner sets, where the seed rebuilt its whole
  list in O(N^2) after every change);
- the bytes are in memory only while vCPUs run, and the park / unpark cycle at every stop
  and resume is one vectorised numpy write of all armed bytes, so a hit costs about the
  same with 10 or 10,000 breakpoints set.

Plain Python over a small `MemoryPort`; no hypervisor needed to test it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

INT1 = 0xF1
_PAGE_SHIFT = 12


class BpState(enum.Enum):
    CLEARED = "cleared"  # not wanted, not in memory (the entry is deleted)
    SET_PENDING = "set-pending"  # wanted, not plantable yet (address not mapped)
    SET = "set"  # wanted and plantable: in memory whenever the table is armed
    CLEAR_PENDING = "clear-pending"  # not wanted, but its byte could not be restored yet


class MemoryPort(Protocol):
    """What the table needs from the VM."""

    def translate(self, address: int) -> int | None:
        """Guest-physical address of a guest-virtual one, None if not mapped."""

    def read_byte(self, gpa: int) -> int: ...

    def write_byte(self, gpa: int, value: int) -> bool:
        """A real change to guest code (invalidates translated code). False on failure."""

    def swap_bytes(self, gpas: np.ndarray, values: np.ndarray) -> None:
        """Write many single bytes at once, leaving translated code alone: only for the
        park / unpark cycle, where no instruction executes between the two writes."""


@dataclass(slots=True, eq=False)
class LowLevelBreakpoint:
    address: int
    state: BpState = BpState.CLEARED
    gpa: int | None = None
    original: int | None = None
    owners: set[Hashable] = field(default_factory=set)


class BreakpointTable:
    def __init__(self) -> None:
        self._entries: dict[int, LowLevelBreakpoint] = {}
        self._by_page: dict[int, set[int]] = {}
        self._pending: set[int] = set()  # SET_PENDING or CLEAR_PENDING addresses
        self._armed = False
        self._vector: tuple[np.ndarray, np.ndarray] | None = None  # SET gpas, originals
        self._int1: np.ndarray | None = None

    # -- queries ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LowLevelBreakpoint]:
        return iter(self._entries.values())

    def get(self, address: int) -> LowLevelBreakpoint | None:
        return self._entries.get(address)

    @property
    def armed(self) -> bool:
        return self._armed

    def is_planted_at(self, address: int) -> bool:
        entry = self._entries.get(address)
        return self._armed and entry is not None and entry.state is BpState.SET

    # -- changes: O(1) each ------------------------------------------------------------
    def add(
        self, address: int, owner: Hashable, port: MemoryPort | None = None
    ) -> LowLevelBreakpoint:
        """Add one owner's interest in `address`. While armed, `port` plants at once."""
        entry = self._entries.get(address)
        if entry is None:
            entry = LowLevelBreakpoint(address, BpState.SET_PENDING)
            self._entries[address] = entry
            self._by_page.setdefault(address >> _PAGE_SHIFT, set()).add(address)
            self._pending.add(address)
        elif entry.state is BpState.CLEAR_PENDING:
            entry.state = BpState.SET  # its byte is still in memory: wanted again
            self._pending.discard(address)
            self._vector = None
        entry.owners.add(owner)
        if self._armed and entry.state is BpState.SET_PENDING and port is not None:
            self._try_plant(entry, port)
        return entry

    def remove(self, address: int, owner: Hashable, port: MemoryPort | None = None) -> None:
        entry = self._entries.get(address)
        if entry is None or owner not in entry.owners:
            return
        entry.owners.discard(owner)
        if entry.owners:
            return
        if entry.state is BpState.SET_PENDING:
            self._delete(entry)
        elif entry.state is BpState.SET:
            self._vector = None
            if self._armed:
                entry.state = BpState.CLEAR_PENDING
                self._pending.add(address)
                if port is not None:
                    self._try_restore(entry, port)
            elif port is not None and entry.gpa is not None and entry.original is not None:
                # Memory already holds the original byte, but code translated while it was
                # planted may still hold the INT1: a real write invalidates it.
                port.write_byte(entry.gpa, entry.original)
                self._delete(entry)
            else:
                self._delete(entry)

    def _delete(self, entry: LowLevelBreakpoint) -> None:
        entry.state = BpState.CLEARED
        del self._entries[entry.address]
        page = self._by_page[entry.address >> _PAGE_SHIFT]
        page.discard(entry.address)
        if not page:
            del self._by_page[entry.address >> _PAGE_SHIFT]
        self._pending.discard(entry.address)

    # -- the park / unpark cycle ----------------------------------------------------------
    def arm(self, port: MemoryPort) -> list[LowLevelBreakpoint]:
        """Put every wanted byte in memory before vCPUs run. Returns the entries that
        became SET for the first time (pending breakpoints now verified)."""
        assert not self._armed
        if not self._entries:
            self._armed = True  # nothing to plant: the common case of instruction steps
            return []
        gpas, _ = self._vectors()
        if len(gpas):
            port.swap_bytes(gpas, self._int1_bytes(len(gpas)))
        self._armed = True
        newly_set = []
        for address in list(self._pending):
            entry = self._entries[address]
            if entry.state is BpState.SET_PENDING and self._try_plant(entry, port):
                newly_set.append(entry)
            elif entry.state is BpState.CLEAR_PENDING:
                self._try_restore(entry, port)
        return newly_set

    def disarm(self, port: MemoryPort) -> None:
        """Take every byte out of memory once all vCPUs have stopped."""
        assert self._armed
        if not self._entries:
            self._armed = False
            return
        for address in list(self._pending):
            entry = self._entries[address]
            if entry.state is BpState.CLEAR_PENDING:
                self._try_restore(entry, port)
        gpas, originals = self._vectors()
        if len(gpas):
            port.swap_bytes(gpas, originals)
        self._armed = False

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._vector is None:
            planted = [e for e in self._entries.values()
                       if e.state in (BpState.SET, BpState.CLEAR_PENDING)]
            self._vector = (
                np.fromiter((e.gpa for e in planted), dtype=np.int64, count=len(planted)),
                np.fromiter((e.original for e in planted), dtype=np.uint8, count=len(planted)),
            )
        return self._vector

    def _int1_bytes(self, count: int) -> np.ndarray:
        if self._int1 is None or len(self._int1) < count:
            self._int1 = np.full(max(count, 64), INT1, dtype=np.uint8)
        return self._int1[:count]

    def _try_plant(self, entry: LowLevelBreakpoint, port: MemoryPort) -> bool:
        gpa = port.translate(entry.address)
        if gpa is None:
            return False  # stays SET_PENDING; retried at every arm()
        original = port.read_byte(gpa)
        if not port.write_byte(gpa, INT1):
            return False
        entry.gpa, entry.original, entry.state = gpa, original, BpState.SET
        self._pending.discard(entry.address)
        self._vector = None
        return True

    def _try_restore(self, entry: LowLevelBreakpoint, port: MemoryPort) -> None:
        assert entry.gpa is not None and entry.original is not None
        if port.write_byte(entry.gpa, entry.original):
            self._vector = None
            self._delete(entry)

    # -- the debugger's view of memory ---------------------------------------------------
    def original_bytes(self, address: int, data: bytes) -> bytes:
        """`data` read from guest-virtual `address` with planted bytes replaced by the
        original ones (only needed while armed)."""
        if not self._armed or not self._entries:
            return data
        out: bytearray | None = None
        first, last = address >> _PAGE_SHIFT, (address + len(data) - 1) >> _PAGE_SHIFT
        for page in range(first, last + 1):
            for planted in self._by_page.get(page, ()):
                entry = self._entries[planted]
                if address <= planted < address + len(data) and entry.original is not None \
                        and entry.state in (BpState.SET, BpState.CLEAR_PENDING):
                    if out is None:
                        out = bytearray(data)
                    out[planted - address] = entry.original
        return data if out is None else bytes(out)

    def update_original(self, address: int, value: int) -> bool:
        """The debugger wrote `value` over a planted byte: it becomes the new original.
        Returns True when the byte is planted (the caller must not write it to memory)."""
        entry = self._entries.get(address)
        if entry is None or entry.original is None or \
                entry.state not in (BpState.SET, BpState.CLEAR_PENDING):
            return False
        entry.original = value
        self._vector = None
        return self._armed
