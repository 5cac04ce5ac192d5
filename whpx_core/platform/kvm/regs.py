"""Where each `Reg` lives in KVM's structs, and the segment attribute conversion.

KVM splits the register file over four ioctls (kvm_regs, kvm_sregs, kvm_debugregs,
kvm_vcpu_events); `group_of` says which one a name needs so a batch read or write
touches each struct once.
"""

from __future__ import annotations

import enum

from whpx_core.platform.kvm.bindings import KVM_X86_SHADOW_INT_STI
from whpx_core.platform.kvm.fds import CData
from whpx_core.platform.registers import (
    CONTROL_REGS,
    GENERAL_REGS,
    SEGMENT_REGS,
    TABLE_REGS,
    Reg,
    RegValue,
    Segment,
    Table,
)


class Group(enum.Enum):
    REGS = "regs"  # struct kvm_regs
    SREGS = "sregs"  # struct kvm_sregs
    DEBUG = "debug"  # struct kvm_debugregs
    EVENTS = "events"  # struct kvm_vcpu_events


_REGS_FIELDS: dict[Reg, str] = {r: r.value for r in (*GENERAL_REGS, Reg.RIP, Reg.RFLAGS)}
_SREGS_FIELDS: dict[Reg, str] = {
    **{r: r.value for r in SEGMENT_REGS if r is not Reg.LDTR},
    Reg.LDTR: "ldt",
    Reg.IDTR: "idt",
    Reg.GDTR: "gdt",
    **{r: r.value for r in CONTROL_REGS},
}
_DEBUG_INDEX: dict[Reg, int] = {Reg.DR0: 0, Reg.DR1: 1, Reg.DR2: 2, Reg.DR3: 3}


_GROUPS: dict[Reg, Group] = {
    **dict.fromkeys(_REGS_FIELDS, Group.REGS),
    **dict.fromkeys(_SREGS_FIELDS, Group.SREGS),
    **dict.fromkeys((Reg.DR0, Reg.DR1, Reg.DR2, Reg.DR3, Reg.DR6, Reg.DR7), Group.DEBUG),
    Reg.INTERRUPT_STATE: Group.EVENTS,
}
assert set(_GROUPS) == set(Reg), "every Reg needs a home in KVM's structs"


def group_of(reg: Reg) -> Group:
    return _GROUPS[reg]


def segment_from_kvm(seg: CData) -> Segment:
    attributes = (
        (seg.type & 0xF)
        | (seg.s & 1) << 4
        | (seg.dpl & 3) << 5
        | (seg.present & 1) << 7
        | (seg.avl & 1) << 12
        | (seg.l & 1) << 13
        | (seg.db & 1) << 14
        | (seg.g & 1) << 15
    )
    return Segment(selector=seg.selector, base=seg.base, limit=seg.limit, attributes=attributes)


def segment_to_kvm(value: Segment, seg: CData) -> None:
    a = value.attributes
    seg.selector = value.selector
    seg.base = value.base
    seg.limit = value.limit
    seg.type = a & 0xF
    seg.s = (a >> 4) & 1
    seg.dpl = (a >> 5) & 3
    seg.present = (a >> 7) & 1
    seg.avl = (a >> 12) & 1
    seg.l = (a >> 13) & 1
    seg.db = (a >> 14) & 1
    seg.g = (a >> 15) & 1
    # WHv has no "unusable" bit; like QEMU, a not-present segment is an unusable one.
    seg.unusable = 0 if seg.present else 1


def read_reg(reg: Reg, structs: dict[Group, CData]) -> RegValue:
    group = group_of(reg)
    s = structs[group]
    if group is Group.REGS:
        return int(getattr(s, _REGS_FIELDS[reg]))
    if group is Group.SREGS:
        field = getattr(s, _SREGS_FIELDS[reg])
        if reg in SEGMENT_REGS:
            return segment_from_kvm(field)
        if reg in TABLE_REGS:
            return Table(base=field.base, limit=field.limit)
        return int(field)
    if group is Group.EVENTS:
        return 1 if s.interrupt.shadow else 0
    if reg in _DEBUG_INDEX:
        return int(s.db[_DEBUG_INDEX[reg]])
    return int(s.dr6 if reg is Reg.DR6 else s.dr7)


def write_reg(reg: Reg, value: RegValue, structs: dict[Group, CData]) -> None:
    group = group_of(reg)
    s = structs[group]
    if group is Group.SREGS and reg in SEGMENT_REGS:
        if not isinstance(value, Segment):
            raise TypeError(f"{reg!r} takes a Segment, not {value!r}")
        segment_to_kvm(value, getattr(s, _SREGS_FIELDS[reg]))
        return
    if group is Group.SREGS and reg in TABLE_REGS:
        if not isinstance(value, Table):
            raise TypeError(f"{reg!r} takes a Table, not {value!r}")
        table = getattr(s, _SREGS_FIELDS[reg])
        table.base = value.base
        table.limit = value.limit
        return
    if not isinstance(value, int):
        raise TypeError(f"{reg!r} takes an int, not {value!r}")
    if group is Group.REGS:
        setattr(s, _REGS_FIELDS[reg], value)
    elif group is Group.SREGS:
        setattr(s, _SREGS_FIELDS[reg], value)
    elif group is Group.EVENTS:
        # STI-style shadow: blocks interrupts for one instruction, as WHv's bit 0 does.
        s.interrupt.shadow = KVM_X86_SHADOW_INT_STI if value & 1 else 0
    elif reg in _DEBUG_INDEX:
        s.db[_DEBUG_INDEX[reg]] = value
    elif reg is Reg.DR6:
        s.dr6 = value
    else:
        s.dr7 = value
