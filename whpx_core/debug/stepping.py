"""Single-stepping that the guest cannot observe: instruction classes and fix-ups.

The step primitive on WHPX and the emulated platform is RFLAGS.TF (the seed's approach).
TF is architectural state, so a few instructions would let the guest see it or change
it: PUSHF stores it, POPF / IRETQ load it, and an event delivered during the step saves
it in the exception frame. These helpers decide from the instruction's bytes alone
(no disassembler on the hot path) what to capture before a step and what to repair after.
Plain Python over register and memory callables, unit-testable without a hypervisor.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from whpx_core.platform.registers import RFLAGS_TF

_PREFIXES = frozenset({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65})


class StepClass(enum.Enum):
    PLAIN = "plain"
    PUSHF = "pushf"
    POPF = "popf"
    IRET = "iret"
    SOFTWARE_INTERRUPT = "int"  # INT n, INT3, INTO, INT1 executed by the guest


@dataclass(frozen=True, slots=True)
class Decoded:
    kind: StepClass
    operand_16: bool = False  # 0x66 prefix: PUSHF/POPF move 16 bits
    rex_w: bool = False


_OPCODE_CLASS = {
    0x9C: StepClass.PUSHF,
    0x9D: StepClass.POPF,
    0xCF: StepClass.IRET,
    0xCC: StepClass.SOFTWARE_INTERRUPT,
    0xCD: StepClass.SOFTWARE_INTERRUPT,
    0xCE: StepClass.SOFTWARE_INTERRUPT,
    0xF1: StepClass.SOFTWARE_INTERRUPT,
}
_PLAIN = Decoded(StepClass.PLAIN)


def classify(code: bytes) -> Decoded:
    if code and code[0] not in _SPECIAL_FIRST:
        return _PLAIN  # no prefix, no REX, no special opcode: most instructions, at once
    if len(code) > 1 and 0x40 <= code[0] <= 0x4F and code[1] not in _OPCODE_CLASS:
        return _PLAIN  # REX and an ordinary opcode (a REX comes right before the opcode)
    operand_16 = rex_w = False
    i = 0
    while i < len(code) and code[i] in _PREFIXES:
        operand_16 |= code[i] == 0x66
        i += 1
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex_w = bool(code[i] & 0x8)
        i += 1
    if i >= len(code):
        return _PLAIN
    kind = _OPCODE_CLASS.get(code[i], StepClass.PLAIN)
    if kind is StepClass.PLAIN:
        return _PLAIN  # the prefixes matter only to the special classes
    return Decoded(kind, operand_16, rex_w)


# First bytes that may start a special instruction: a prefix, a REX or a special opcode.
_SPECIAL_FIRST = frozenset(_PREFIXES) | frozenset(range(0x40, 0x50)) | frozenset(_OPCODE_CLASS)


ReadMem = Callable[[int, int], bytes]
WriteMem = Callable[[int, bytes], None]


class BeforeStep(NamedTuple):  # a tuple: built before every step, and cheaply
    """What the guest's TF should be once the step is over."""

    decoded: Decoded
    rip: int
    rsp: int
    guest_tf: bool  # the guest's TF once the instruction is done
    tf_at_start: bool  # the guest itself was single-stepping: it is owed a #DB


def before_step(decoded: Decoded, rip: int, rsp: int, rflags: int, read: ReadMem) -> BeforeStep:
    guest_tf = tf_at_start = bool(rflags & RFLAGS_TF)
    if decoded is _PLAIN:
        return BeforeStep(decoded, rip, rsp, guest_tf, tf_at_start)  # loads no flags
    try:
        if decoded.kind is StepClass.POPF:
            size = 2 if decoded.operand_16 else 8
            guest_tf = bool(int.from_bytes(read(rsp, size), "little") & RFLAGS_TF)
        elif decoded.kind is StepClass.IRET:
            # 64-bit IRETQ frame: RIP, CS, RFLAGS, RSP, SS (8 bytes each).
            (image,) = struct.unpack("<Q", read(rsp + 16, 8))
            guest_tf = bool(image & RFLAGS_TF)
    except Exception:
        pass  # an unreadable stack faults the instruction itself; nothing is loaded
    return BeforeStep(decoded, rip, rsp, guest_tf, tf_at_start)


def after_step(
    before: BeforeStep, rsp: int, rflags: int, read: ReadMem, write: WriteMem
) -> int:
    """Repair guest-visible state after the step; returns the RFLAGS to set."""
    kind = before.decoded.kind
    if kind is StepClass.PUSHF and rsp == before.rsp - (2 if before.decoded.operand_16 else 8):
        size = 2 if before.decoded.operand_16 else 8
        image = int.from_bytes(read(rsp, size), "little")
        if image & RFLAGS_TF and not before.guest_tf:
            write(rsp, (image & ~RFLAGS_TF).to_bytes(size, "little"))
    if before.guest_tf:
        return rflags | RFLAGS_TF
    return rflags & ~RFLAGS_TF


@dataclass(frozen=True, slots=True)
class HandlerFrame:
    """An exception frame the step pushed: where it is and what it returns to."""

    rip_slot: int  # address of the saved RIP
    return_rip: int


def entered_handler(before: BeforeStep, rsp: int, read: ReadMem) -> HandlerFrame | None:
    """Did the step deliver an event (so the vCPU is now in a handler)? Recognised by the
    frame the CPU pushed: the saved RSP is the old RSP and the saved RIP is the stepped
    instruction (a fault) or just after it (a trap). Works for any vector, with or without
    an error code, on the same stack or an IST stack, and when the platform's step stops
    one instruction into the handler (kvm_pvm)."""
    if abs(rsp - before.rsp) <= 16:
        return None  # push / pop / call / ret: no room for a 40-byte frame
    for rip_slot in (rsp, rsp + 8, rsp + 16):
        try:
            saved_rip, _cs, _rflags, saved_rsp = struct.unpack("<4Q", read(rip_slot, 32))
        except Exception:
            return None
        if saved_rsp == before.rsp and before.rip <= saved_rip <= before.rip + 15:
            return HandlerFrame(rip_slot, saved_rip)
    return None


def clear_tf_in_frame(frame: HandlerFrame, read: ReadMem, write: WriteMem) -> None:
    """Hardware saves the debugger's TF in the frame of an event taken during the step."""
    (image,) = struct.unpack("<Q", read(frame.rip_slot + 16, 8))
    if image & RFLAGS_TF:
        write(frame.rip_slot + 16, struct.pack("<Q", image & ~RFLAGS_TF))


def returns_from(frame: HandlerFrame, code: bytes, rsp: int) -> bool:
    """About to execute the IRETQ that pops `frame`."""
    return classify(code).kind is StepClass.IRET and rsp == frame.rip_slot
