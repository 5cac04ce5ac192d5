"""Software stand-ins for instructions kvm_pvm's single step gets wrong.

Measured: with KVM_GUESTDBG_SINGLESTEP, every instruction class we tried stops after
exactly one instruction, except IRETQ, which also runs the instruction it returns to.
So a step over IRETQ back to CPL0 is done here, in software; anything unusual (a return
to another privilege level, a bad selector) is left to the hypervisor.
"""

from __future__ import annotations

import struct

from whpx_core.platform.delivery import CpuView, segment_from_descriptor
from whpx_core.platform.paging import PageFault, PagingState, translate
from whpx_core.platform.registers import RFLAGS_RESERVED_ONE, Reg, RegValue, Segment, Table

IRETQ = b"\x48\xcf"
# CF PF AF ZF SF TF IF DF OF IOPL NT RF AC VIF VIP ID: what IRETQ loads at CPL0 (not VM).
_IRET_LOADS = 0x3D7FD5
_STATE = [Reg.RIP, Reg.RSP, Reg.CS, Reg.GDTR, Reg.CR0, Reg.CR3]


def _read_linear(cpu: CpuView, paging: PagingState, va: int, size: int) -> bytes:
    out = b""
    while len(out) < size:
        address = va + len(out)
        chunk = min(size - len(out), 0x1000 - (address & 0xFFF))
        out += cpu.read_phys(translate(cpu.read_phys, paging, address), chunk)
    return out


def step_iretq(cpu: CpuView) -> bool:
    """If the next instruction is IRETQ returning to CPL0, execute it; True if done."""
    rip, rsp, cs, gdtr, cr0, cr3 = cpu.get(_STATE)
    assert isinstance(rip, int) and isinstance(rsp, int) and isinstance(cs, Segment)
    assert isinstance(gdtr, Table) and isinstance(cr0, int) and isinstance(cr3, int)
    if cs.selector & 3 or not cs.long_mode:
        return False
    paging = PagingState(cr0, cr3)
    try:
        if _read_linear(cpu, paging, rip, 2) != IRETQ:
            return False
        new_rip, new_cs, rflags, new_rsp, new_ss = struct.unpack(
            "<5Q", _read_linear(cpu, paging, rsp, 40)
        )
        code = _descriptor(cpu, paging, gdtr, new_cs & 0xFFFF)
        stack = _descriptor(cpu, paging, gdtr, new_ss & 0xFFFF)
    except (PageFault, ValueError):
        return False
    if new_cs & 3 or code is None or not code.present or not code.long_mode:
        return False
    updates: dict[Reg, RegValue] = {
        Reg.RIP: new_rip,
        Reg.CS: code,
        Reg.RFLAGS: (rflags & _IRET_LOADS) | RFLAGS_RESERVED_ONE,
        Reg.RSP: new_rsp,
        Reg.SS: stack if stack is not None else Segment(new_ss & 0xFFFF, 0, 0, 0),
    }
    cpu.set(updates)
    return True


def _descriptor(cpu: CpuView, paging: PagingState, gdtr: Table, selector: int) -> Segment | None:
    """The segment `selector` loads from the GDT; None for a null selector."""
    index = selector >> 3
    if index == 0:
        return None
    if selector & 4 or index * 8 + 7 > gdtr.limit:
        raise ValueError(f"selector {selector:#x} is not in the GDT")
    (descriptor,) = struct.unpack("<Q", _read_linear(cpu, paging, gdtr.base + index * 8, 8))
    return segment_from_descriptor(selector, descriptor)
