"""Delivering an exception or interrupt through the guest's IDT, in software.

What the CPU does on an event in 64-bit mode, for platforms that cannot make the
hardware do it (Unicorn never uses the guest IDT; kvm_pvm fails on INT n at CPL0):
read the gate, pick the stack (same, RSP0 on a privilege change, or an IST slot), align
it, push SS, RSP, RFLAGS, CS, RIP and the error code, clear TF/NT/RF (and IF for an
interrupt gate), and load CS:RIP. A fault while doing so becomes #DF; a fault while
delivering #DF is a triple fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from whpx_core.platform.exits import ERROR_CODE_VECTORS, Vector
from whpx_core.platform.paging import PageFault, PagingState, translate
from whpx_core.platform.registers import (
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
    Reg,
    RegValue,
    Segment,
    Table,
)

_GATE_INTERRUPT = 0xE
_GATE_TRAP = 0xF


class TripleFault(Exception):
    pass


class _DeliveryFault(Exception):
    def __init__(self, vector: int, error_code: int = 0) -> None:
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class Event:
    vector: int
    # RIP to return to: the faulting instruction for faults, the next one for traps.
    return_rip: int
    error_code: int | None = None
    software: bool = False  # INT n / INT3 / INTO: the gate's DPL is checked


class CpuView:
    """Registers and guest-physical memory of one vCPU, as delivery needs them."""

    def __init__(
        self,
        get: Callable[[list[Reg]], list[RegValue]],
        set_: Callable[[dict[Reg, RegValue]], None],
        read_phys: Callable[[int, int], bytes],
        write_phys: Callable[[int, bytes], None],
    ) -> None:
        self.get = get
        self.set = set_
        self.read_phys = read_phys
        self.write_phys = write_phys


_STATE_REGS = [Reg.IDTR, Reg.GDTR, Reg.TR, Reg.CS, Reg.SS, Reg.RSP, Reg.RFLAGS,
               Reg.CR0, Reg.CR3]


def segment_from_descriptor(selector: int, descriptor: int) -> Segment:
    limit = (descriptor & 0xFFFF) | ((descriptor >> 48) & 0xF) << 16
    attributes = ((descriptor >> 40) & 0xFF) | ((descriptor >> 52) & 0xF) << 12
    if attributes & (1 << 15):
        limit = limit << 12 | 0xFFF
    base = ((descriptor >> 16) & 0xFFFFFF) | ((descriptor >> 56) & 0xFF) << 24
    return Segment(selector, base, limit, attributes)


def deliver(cpu: CpuView, event: Event, pushed_rflags: int | None = None) -> int:
    """Deliver `event`; return the vector that was finally delivered (may be #DF).

    `pushed_rflags` overrides the RFLAGS image saved on the stack, so a platform can
    keep its own single-step TF out of the guest's view.
    """
    try:
        _deliver_once(cpu, event, pushed_rflags)
        return event.vector
    except _DeliveryFault:
        if event.vector == Vector.DF:
            raise TripleFault() from None
    double = Event(Vector.DF, event.return_rip, 0)
    try:
        _deliver_once(cpu, double, pushed_rflags)
    except _DeliveryFault:
        raise TripleFault() from None
    return Vector.DF


def _deliver_once(cpu: CpuView, event: Event, pushed_rflags: int | None) -> None:
    idtr, gdtr, tr, cs, ss, rsp, rflags, cr0, cr3 = cpu.get(_STATE_REGS)
    assert isinstance(idtr, Table) and isinstance(gdtr, Table) and isinstance(tr, Segment)
    assert isinstance(cs, Segment) and isinstance(ss, Segment)
    assert isinstance(rsp, int) and isinstance(rflags, int)
    assert isinstance(cr0, int) and isinstance(cr3, int)
    paging = PagingState(cr0, cr3)
    idt_error = event.vector * 8 + 2  # IDT bit set in the selector error code

    def read_linear(va: int, size: int) -> bytes:
        try:
            return cpu.read_phys(translate(cpu.read_phys, paging, va), size)
        except PageFault as fault:
            raise _DeliveryFault(Vector.PF, fault.error_code) from None

    if event.vector * 16 + 15 > idtr.limit:
        raise _DeliveryFault(Vector.GP, idt_error)
    low, high = struct.unpack("<QQ", read_linear(idtr.base + event.vector * 16, 16))
    offset = (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16 | (high & 0xFFFFFFFF) << 32
    selector = (low >> 16) & 0xFFFF
    ist = (low >> 32) & 0x7
    gate_type = (low >> 40) & 0xF
    gate_dpl = (low >> 45) & 0x3
    present = (low >> 47) & 0x1
    cpl = cs.selector & 3
    if gate_type not in (_GATE_INTERRUPT, _GATE_TRAP):
        raise _DeliveryFault(Vector.GP, idt_error)
    if event.software and gate_dpl < cpl:
        raise _DeliveryFault(Vector.GP, idt_error)
    if not present:
        raise _DeliveryFault(Vector.NP, idt_error)

    index = selector >> 3
    if index == 0 or index * 8 + 7 > gdtr.limit:
        raise _DeliveryFault(Vector.GP, selector & 0xFFFC)
    (descriptor,) = struct.unpack("<Q", read_linear(gdtr.base + index * 8, 8))
    new_cs = segment_from_descriptor(selector & 0xFFFC, descriptor)
    if not new_cs.present or not new_cs.long_mode:
        raise _DeliveryFault(Vector.GP, selector & 0xFFFC)
    new_cpl = new_cs.dpl
    new_cs = Segment(new_cs.selector | new_cpl, new_cs.base, new_cs.limit, new_cs.attributes)

    if ist:
        (new_rsp,) = struct.unpack("<Q", read_linear(tr.base + 0x24 + (ist - 1) * 8, 8))
    elif new_cpl < cpl:
        (new_rsp,) = struct.unpack("<Q", read_linear(tr.base + 4 + new_cpl * 8, 8))
    else:
        new_rsp = rsp
    new_rsp &= ~0xF

    image = rflags if pushed_rflags is None else pushed_rflags
    frame = [ss.selector, rsp, image, cs.selector, event.return_rip]
    has_error = event.error_code is not None and not event.software
    if has_error or (event.vector in ERROR_CODE_VECTORS and not event.software):
        frame.append(event.error_code or 0)
    for value in frame:
        new_rsp = (new_rsp - 8) & 0xFFFF_FFFF_FFFF_FFFF
        try:
            pa = translate(cpu.read_phys, paging, new_rsp, write=True)
        except PageFault as fault:
            raise _DeliveryFault(Vector.PF, fault.error_code) from None
        cpu.write_phys(pa, struct.pack("<Q", value))

    cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
    if gate_type == _GATE_INTERRUPT:
        cleared |= RFLAGS_IF
    updates: dict[Reg, RegValue] = {
        Reg.RSP: new_rsp,
        Reg.RIP: offset,
        Reg.RFLAGS: rflags & ~cleared,
        Reg.CS: new_cs,
    }
    if new_cpl != cpl:
        updates[Reg.SS] = Segment(new_cpl, 0, 0, 0)
    cpu.set(updates)
