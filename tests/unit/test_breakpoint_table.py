"""The breakpoint table's state machine, driven by hypothesis against a fake memory
that has unmapped pages (writes there fail until the page is mapped)."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from whpx_core.debug.breakpoints import INT1, BpState, BreakpointTable

PAGES = 4
PAGE = 4096
IMAGE = bytes((i * 7 + 3) & 0xFF for i in range(PAGES * PAGE))
ADDRESSES = st.integers(0, PAGES * PAGE - 1)
OWNERS = st.sampled_from(["user:1", "user:2", "step", "condition"])


class FakeMemory:
    """Virtual = physical + 0x1000, some pages not mapped."""

    def __init__(self) -> None:
        self.ram = bytearray(IMAGE)
        self.mapped = [True] * PAGES
        self.real_writes = 0

    def translate(self, address: int) -> int | None:
        return address if self.mapped[address // PAGE] else None

    def read_byte(self, gpa: int) -> int:
        return self.ram[gpa]

    def write_byte(self, gpa: int, value: int) -> bool:
        self.real_writes += 1
        self.ram[gpa] = value
        return True

    def swap_bytes(self, gpas: np.ndarray, values: np.ndarray) -> None:
        for gpa, value in zip(gpas.tolist(), values.tolist(), strict=True):
            self.ram[gpa] = value


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.memory = FakeMemory()
        self.table = BreakpointTable()
        self.wanted: dict[int, set[str]] = {}
        self.image = bytearray(IMAGE)  # what memory must hold whenever disarmed

    @rule(address=ADDRESSES, owner=OWNERS)
    def add(self, address: int, owner: str) -> None:
        self.table.add(address, owner, self.memory)
        self.wanted.setdefault(address, set()).add(owner)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if not self.wanted:
            return
        address = data.draw(st.sampled_from(sorted(self.wanted)))
        owner = data.draw(st.sampled_from(sorted(self.wanted[address])))
        self.table.remove(address, owner, self.memory)
        self.wanted[address].discard(owner)
        if not self.wanted[address]:
            del self.wanted[address]

    @rule(owner=OWNERS, address=ADDRESSES)
    def remove_unknown_is_harmless(self, owner: str, address: int) -> None:
        if owner not in self.wanted.get(address, set()):
            self.table.remove(address, owner, self.memory)

    @rule(page=st.integers(0, PAGES - 1), mapped=st.booleans())
    def map_or_unmap(self, page: int, mapped: bool) -> None:
        self.memory.mapped[page] = mapped

    @precondition(lambda self: not self.table.armed)
    @rule()
    def arm(self) -> None:
        newly = self.table.arm(self.memory)
        for entry in newly:
            assert entry.state is BpState.SET

    @precondition(lambda self: self.table.armed)
    @rule()
    def disarm(self) -> None:
        self.table.disarm(self.memory)

    @precondition(lambda self: not self.table.armed)
    @rule(address=ADDRESSES, value=st.integers(0, 255))
    def debugger_writes(self, address: int, value: int) -> None:
        self.memory.ram[address] = value
        self.image[address] = value
        self.table.update_original(address, value)

    @rule(address=ADDRESSES, size=st.integers(1, 64))
    def debugger_reads_original_bytes(self, address: int, size: int) -> None:
        size = min(size, len(IMAGE) - address)
        raw = bytes(self.memory.ram[address : address + size])
        seen = self.table.original_bytes(address, raw)
        assert seen == bytes(self.image[address:address + size])

    @invariant()
    def memory_is_the_image_whenever_disarmed(self) -> None:
        if not self.table.armed:
            assert self.memory.ram == self.image

    @invariant()
    def armed_memory_holds_int1_exactly_where_set(self) -> None:
        if not self.table.armed:
            return
        planted = {e.address for e in self.table
                   if e.state in (BpState.SET, BpState.CLEAR_PENDING)}
        for address in range(len(IMAGE)):
            expected = INT1 if address in planted else self.image[address]
            assert self.memory.ram[address] == expected, hex(address)

    @invariant()
    def one_entry_per_wanted_address(self) -> None:
        live = {e.address: e for e in self.table if e.state is not BpState.CLEAR_PENDING}
        assert set(live) == set(self.wanted)
        for address, entry in live.items():
            assert entry.owners == self.wanted[address]


TableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                          deadline=None)
test_breakpoint_table_state_machine = TableMachine.TestCase


def test_add_and_remove_are_constant_time_per_breakpoint():
    """10,000 breakpoints: the table never rebuilds on add/remove (the seed did, in
    O(N^2)); each real write happens once per breakpoint."""
    memory = FakeMemory()
    table = BreakpointTable()
    for address in range(0, 10_000):
        table.add(address % len(IMAGE), f"user:{address}")
    table.arm(memory)
    assert memory.real_writes == 10_000
    table.disarm(memory)
    assert memory.ram == bytearray(IMAGE)
