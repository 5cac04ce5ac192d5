"""Software stand-ins for what kvm_pvm's single step gets wrong.

Measured: with KVM_GUESTDBG_SINGLESTEP, every instruction class we tried stops after
exactly one instruction, except
- IRETQ, which also runs the instruction it returns to. So a step over IRETQ back to
  CPL0 is done here, in software (`step_iretq`); anything unusual (a return to another
  privilege level, a bad selector) is left to the hypervisor;
- an instruction that raises an exception (#UD, #GP, #PF, #DE measured alike): KVM
  delivers it and the step also runs the handler's first instruction (KVM's emulator
  does the step trap only for instructions that complete, so the trap comes after the
  next one). Guarded against before the step: execute breakpoints in KVM guest debug
  on the handlers' first instructions (`gate_targets`) fire after the delivery and
  before that instruction, for the vectors that fit in the free slots. For the others
  `undo_handler_entry` puts the vCPU back when the handler's first instruction is one
  whose effects it can undo exactly.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from whpx_core.platform.delivery import CpuView, segment_from_descriptor
from whpx_core.platform.exits import ERROR_CODE_VECTORS, Vector
from whpx_core.platform.paging import PageFault, PagingState, translate
from whpx_core.platform.registers import (
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_RESERVED_ONE,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
    Reg,
    RegValue,
    Segment,
    Table,
)

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


# -- a step over an instruction that raises an exception -----------------------------------
# Vectors a stepped CPL0 instruction can raise, most likely first: the handlers guarded
# by the free debug-register slots, in this order.
GUARD_VECTORS = (
    Vector.PF, Vector.GP, Vector.UD, Vector.DE, Vector.DB, Vector.SS, Vector.NM,
    Vector.XM, Vector.MF, Vector.AC, Vector.BR, Vector.NP, Vector.TS, Vector.DF,
)
EXCEPTION_GATES = 32 * 16  # IDT bytes the guards and the undo look at
_INTERRUPT_GATE, _TRAP_GATE = 0xE, 0xF


@dataclass(frozen=True, slots=True)
class Gate:
    vector: int
    target: int
    interrupt: bool  # an interrupt gate clears IF, a trap gate does not


@functools.lru_cache(maxsize=16)
def exception_gates(idt: bytes) -> tuple[Gate, ...]:
    """The present 64-bit interrupt / trap gates among the IDT's first 32 entries."""
    gates = []
    for vector in range(len(idt) // 16):
        low, high = struct.unpack_from("<QQ", idt, vector * 16)
        gate_type = (low >> 40) & 0xF
        if low >> 47 & 1 and gate_type in (_INTERRUPT_GATE, _TRAP_GATE):
            target = (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16 | (high & 0xFFFFFFFF) << 32
            gates.append(Gate(vector, target, gate_type == _INTERRUPT_GATE))
    return tuple(gates)


@functools.lru_cache(maxsize=16)
def gate_targets(idt: bytes) -> tuple[int, ...]:
    """The handlers' first instructions for GUARD_VECTORS, in that order, each once."""
    by_vector = {gate.vector: gate.target for gate in exception_gates(idt)}
    targets: list[int] = []
    for vector in GUARD_VECTORS:
        target = by_vector.get(vector)
        if target is not None and target not in targets:
            targets.append(target)
    return tuple(targets)


def _undoable(code: bytes) -> tuple[int, int] | None:
    """(length, bytes pushed) of an instruction whose only effects are RIP, RSP, a push
    below the exception frame, and RFLAGS bits that the entry RFLAGS restores: PUSH
    (Windows: PUSH RBP; stubs: PUSH $0; Linux without IBT: PUSH $-1), CLD, NOP.
    Not ENDBR64 (a kvm_pvm step over it also runs the next instruction, measured) nor
    CLAC (kvm_pvm cannot emulate it at CPL0)."""
    first = code[:1]
    if first in (b"\x90", b"\xfc"):  # nop, cld
        return 1, 0
    if b"\x50" <= first <= b"\x57":  # push r64
        return 1, 8
    if first == b"\x41" and b"\x50" <= code[1:2] <= b"\x57":  # push r8-r15
        return 2, 8
    if first == b"\x6a":  # push imm8
        return 2, 8
    if first == b"\x68":  # push imm32
        return 5, 8
    return None


def undo_handler_entry(cpu: CpuView, before_rip: int, before_rsp: int, idt: bytes) -> bool:
    """After a step from (before_rip, before_rsp) that ended one instruction into an
    exception handler (an unguarded vector): if that first instruction is `_undoable`,
    put the vCPU on it as the delivery left it. True if it did.

    Recognised by the frame the delivery pushed (saved RSP = before_rsp, saved RIP the
    stepped instruction or just after it) right above what the first instruction
    pushed. A step that did not deliver an exception moves RSP by at most 16 bytes."""
    rip, rsp, cr0, cr3 = cpu.get([Reg.RIP, Reg.RSP, Reg.CR0, Reg.CR3])
    assert isinstance(rip, int) and isinstance(rsp, int)
    assert isinstance(cr0, int) and isinstance(cr3, int)
    if abs(rsp - before_rsp) <= 16:
        return False
    paging = PagingState(cr0, cr3)
    for gate in exception_gates(idt):
        if not gate.target < rip <= gate.target + 5:
            continue
        try:
            undo = _undoable(_read_linear(cpu, paging, gate.target, 5))
            if undo is None or gate.target + undo[0] != rip:
                continue
            entry_rsp = rsp + undo[1]
            rip_slot = entry_rsp + (8 if gate.vector in ERROR_CODE_VECTORS else 0)
            saved_rip, _cs, image, saved_rsp = struct.unpack(
                "<4Q", _read_linear(cpu, paging, rip_slot, 32))
        except PageFault:
            continue
        if saved_rsp != before_rsp or not before_rip <= saved_rip <= before_rip + 15:
            continue
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM
        if gate.interrupt:
            cleared |= RFLAGS_IF
        cpu.set({
            Reg.RIP: gate.target,
            Reg.RSP: entry_rsp,
            Reg.RFLAGS: (image & ~cleared) | RFLAGS_RESERVED_ONE,
        })
        return True
    return False
