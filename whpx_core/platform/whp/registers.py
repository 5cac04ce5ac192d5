"""Register names and values: `Reg` / `RegValue` <-> WHV_REGISTER_NAME / WHV_REGISTER_VALUE.

The backend marshals through these functions only, and the stand-in unmarshals with
the same ones, so a wrong shape here shows up in the scenario suite (and a wrong
number in the layout test, which checks WHV_REGISTER_NAME values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whpx_core.platform.registers import Reg, RegValue, Segment, Table
from whpx_core.platform.whp.bindings import aligned_new

NAMES: dict[Reg, int] = {
    Reg.RAX: 0x00, Reg.RCX: 0x01, Reg.RDX: 0x02, Reg.RBX: 0x03,
    Reg.RSP: 0x04, Reg.RBP: 0x05, Reg.RSI: 0x06, Reg.RDI: 0x07,
    Reg.R8: 0x08, Reg.R9: 0x09, Reg.R10: 0x0A, Reg.R11: 0x0B,
    Reg.R12: 0x0C, Reg.R13: 0x0D, Reg.R14: 0x0E, Reg.R15: 0x0F,
    Reg.RIP: 0x10, Reg.RFLAGS: 0x11,
    Reg.ES: 0x12, Reg.CS: 0x13, Reg.SS: 0x14, Reg.DS: 0x15, Reg.FS: 0x16, Reg.GS: 0x17,
    Reg.LDTR: 0x18, Reg.TR: 0x19, Reg.IDTR: 0x1A, Reg.GDTR: 0x1B,
    Reg.CR0: 0x1C, Reg.CR2: 0x1D, Reg.CR3: 0x1E, Reg.CR4: 0x1F, Reg.CR8: 0x20,
    Reg.DR0: 0x21, Reg.DR1: 0x22, Reg.DR2: 0x23, Reg.DR3: 0x24, Reg.DR6: 0x25,
    Reg.DR7: 0x26,
    Reg.EFER: 0x2001,  # WHvX64RegisterEfer
    Reg.INTERRUPT_STATE: 0x80000001,  # WHvRegisterInterruptState
}
REGS: dict[int, Reg] = {number: reg for reg, number in NAMES.items()}

# Registers the backend uses that have no `Reg` of their own.
PENDING_EVENT = 0x80000002  # WHvRegisterPendingEvent
PENDING_DEBUG_EXCEPTION = 0x80000006  # WHvX64RegisterPendingDebugException

PENDING_INTERRUPTION = 0x80000000  # WHvRegisterPendingInterruption
DELIVERABILITY_NOTIFICATIONS = 0x80000004  # WHvX64RegisterDeliverabilityNotifications

# Every number above under its SDK name, for the layout test.
CONSTANTS = {
    **{f"WHvX64Register{reg.name.capitalize()}": number for reg, number in NAMES.items()
       if reg is not Reg.INTERRUPT_STATE},
    "WHvRegisterInterruptState": NAMES[Reg.INTERRUPT_STATE],
    "WHvRegisterPendingEvent": PENDING_EVENT,
    "WHvX64RegisterPendingDebugException": PENDING_DEBUG_EXCEPTION,
    "WHvRegisterPendingInterruption": PENDING_INTERRUPTION,
    "WHvX64RegisterDeliverabilityNotifications": DELIVERABILITY_NOTIFICATIONS,
}

_SEGMENTS = frozenset({Reg.ES, Reg.CS, Reg.SS, Reg.DS, Reg.FS, Reg.GS, Reg.LDTR, Reg.TR})
_TABLES = frozenset({Reg.IDTR, Reg.GDTR})


def name_array(numbers: Sequence[int]) -> Any:
    names = aligned_new("WHV_REGISTER_NAME", len(numbers))
    for i, number in enumerate(numbers):
        names[i] = number
    return names


def value_array(count: int) -> Any:
    return aligned_new("WHV_REGISTER_VALUE", count)


def store(slot: Any, reg: Reg, value: RegValue) -> None:
    """Write `value` into one WHV_REGISTER_VALUE (a cdata lvalue)."""
    if reg in _SEGMENTS:
        if not isinstance(value, Segment):
            raise TypeError(f"{reg} takes a Segment, not {value!r}")
        seg = slot.Segment
        seg.Base, seg.Limit, seg.Selector = value.base, value.limit, value.selector
        seg.Attributes = value.attributes
    elif reg in _TABLES:
        if not isinstance(value, Table):
            raise TypeError(f"{reg} takes a Table, not {value!r}")
        slot.Table.Base, slot.Table.Limit = value.base, value.limit
    else:
        if not isinstance(value, int):
            raise TypeError(f"{reg} takes an int, not {value!r}")
        slot.Reg128.High64 = 0
        slot.Reg64 = value & 0xFFFF_FFFF_FFFF_FFFF


def load(slot: Any, reg: Reg) -> RegValue:
    """Read one WHV_REGISTER_VALUE as `reg`'s shape."""
    if reg in _SEGMENTS:
        seg = slot.Segment
        return Segment(seg.Selector, seg.Base, seg.Limit, seg.Attributes)
    if reg in _TABLES:
        return Table(slot.Table.Base, slot.Table.Limit)
    return int(slot.Reg64)
