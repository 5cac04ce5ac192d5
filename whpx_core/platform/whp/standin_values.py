"""The stand-in's side of WHV_REGISTER_VALUE and WHV_RUN_VP_EXIT_CONTEXT: written apart
from the backend's registers.py / exits.py on purpose, so that a mistake in the
backend's marshalling is not mirrored here and cancelled out."""

from __future__ import annotations

from typing import Any

from whpx_core.platform.exits import (
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.registers import Reg, RegValue, Segment, Table
from whpx_core.platform.whp.bindings import ExitReason, ffi

SEGMENTS = {0x12: Reg.ES, 0x13: Reg.CS, 0x14: Reg.SS, 0x15: Reg.DS, 0x16: Reg.FS,
            0x17: Reg.GS, 0x18: Reg.LDTR, 0x19: Reg.TR}
TABLES = {0x1A: Reg.IDTR, 0x1B: Reg.GDTR}
_GENERAL = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.RBX, Reg.RSP, Reg.RBP, Reg.RSI, Reg.RDI,
            Reg.R8, Reg.R9, Reg.R10, Reg.R11, Reg.R12, Reg.R13, Reg.R14, Reg.R15,
            Reg.RIP, Reg.RFLAGS)
_CONTROL = (Reg.CR0, Reg.CR2, Reg.CR3, Reg.CR4, Reg.CR8, Reg.DR0, Reg.DR1, Reg.DR2,
            Reg.DR3, Reg.DR6, Reg.DR7)
SCALARS = {**dict(enumerate(_GENERAL)), **{0x1C + i: r for i, r in enumerate(_CONTROL)},
           0x2001: Reg.EFER, 0x80000001: Reg.INTERRUPT_STATE}
REGS = {**SEGMENTS, **TABLES, **SCALARS}


def to_value(slot: Any, reg: Reg, value: RegValue) -> None:
    raw = ffi.cast("uint8_t *", ffi.addressof(slot))
    ffi.memmove(raw, b"\0" * 16, 16)
    if isinstance(value, Segment):
        raw_bytes = (value.base.to_bytes(8, "little") + value.limit.to_bytes(4, "little")
                     + value.selector.to_bytes(2, "little")
                     + value.attributes.to_bytes(2, "little"))
        ffi.memmove(raw, raw_bytes, 16)
    elif isinstance(value, Table):
        ffi.memmove(raw + 6, value.limit.to_bytes(2, "little")
                    + value.base.to_bytes(8, "little"), 10)
    else:
        ffi.memmove(raw, int(value).to_bytes(8, "little"), 8)


def from_value(slot: Any, reg: Reg) -> RegValue:
    raw = bytes(ffi.buffer(ffi.addressof(slot), 16))
    if reg in SEGMENTS.values():
        return Segment(selector=int.from_bytes(raw[12:14], "little"),
                       base=int.from_bytes(raw[0:8], "little"),
                       limit=int.from_bytes(raw[8:12], "little"),
                       attributes=int.from_bytes(raw[14:16], "little"))
    if reg in TABLES.values():
        return Table(base=int.from_bytes(raw[8:16], "little"),
                     limit=int.from_bytes(raw[6:8], "little"))
    return int.from_bytes(raw[0:8], "little")


def _software_length(vector: int, code: bytes) -> int:
    """Length of the INT3 / INTO / INT n that raised `vector`, 0 if it was a fault."""
    one_byte = {Vector.BP: b"\xcc", Vector.OF: b"\xce"}.get(vector)
    if one_byte is not None and code[:1] == one_byte:
        return 1
    if code[:1] == b"\xcd" and code[1:2] == bytes([vector]):
        return 2
    return 0


def encode_exit(ctx: Any, exit_: Exit, rflags: int) -> None:
    """Fill a zeroed WHV_RUN_VP_EXIT_CONTEXT for an emulated-platform exit."""
    ctx.VpContext.Rip = exit_.rip
    ctx.VpContext.Rflags = rflags
    if isinstance(exit_, ExceptionExit):
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonException
        ex = ctx.VpException
        code = exit_.instruction_bytes[:16]
        ex.InstructionByteCount = len(code)
        ffi.memmove(ex.InstructionBytes, code, len(code))
        software = _software_length(exit_.vector, code)
        ctx.VpContext._InstructionLengthCr8 = software
        ex.ExceptionInfo.AsUINT32 = (exit_.error_code is not None) | (bool(software) << 1)
        ex.ExceptionType = exit_.vector
        ex.ErrorCode = exit_.error_code or 0
        if exit_.vector == Vector.PF:
            ex.ExceptionParameter = exit_.cr2 or 0
        elif exit_.vector == Vector.DB:
            ex.ExceptionParameter = exit_.debug_status & 0xF00F  # B0-B3, BD, BS, BT
    elif isinstance(exit_, HaltExit):
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonX64Halt
    elif isinstance(exit_, CanceledExit):
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonCanceled
    elif isinstance(exit_, ShutdownExit):
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonUnrecoverableException
    else:  # InternalErrorExit: WHPX's nearest is an unsupported-feature exit
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonUnsupportedFeature
        ctx.UnsupportedFeature.FeatureCode = 1
