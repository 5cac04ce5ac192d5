"""Register names and value shapes, modelled on WHV_REGISTER_NAME / WHV_REGISTER_VALUE.

Every platform reads and writes registers by these names; nothing above `platform/`
sees Unicorn's, KVM's or WHv's own numbering.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reg(enum.Enum):
    RAX = "rax"
    RCX = "rcx"
    RDX = "rdx"
    RBX = "rbx"
    RSP = "rsp"
    RBP = "rbp"
    RSI = "rsi"
    RDI = "rdi"
    R8 = "r8"
    R9 = "r9"
    R10 = "r10"
    R11 = "r11"
    R12 = "r12"
    R13 = "r13"
    R14 = "r14"
    R15 = "r15"
    RIP = "rip"
    RFLAGS = "rflags"
    # Segments: value is a Segment.
    ES = "es"
    CS = "cs"
    SS = "ss"
    DS = "ds"
    FS = "fs"
    GS = "gs"
    LDTR = "ldtr"
    TR = "tr"
    # Descriptor tables: value is a Table.
    IDTR = "idtr"
    GDTR = "gdtr"
    CR0 = "cr0"
    CR2 = "cr2"
    CR3 = "cr3"
    CR4 = "cr4"
    CR8 = "cr8"
    EFER = "efer"
    DR0 = "dr0"
    DR1 = "dr1"
    DR2 = "dr2"
    DR3 = "dr3"
    DR6 = "dr6"
    DR7 = "dr7"
    # WHvRegisterInterruptState: bit 0 = interrupt shadow (after STI / MOV SS).
    INTERRUPT_STATE = "interrupt_state"

    def __repr__(self) -> str:
        return f"Reg.{self.name}"

    # Members are singletons, so identity hashing is exact, and it runs in C: Enum's own
    # __hash__ is Python code, and register names are hashed on every access.
    __hash__ = object.__hash__


GENERAL_REGS: tuple[Reg, ...] = (
    Reg.RAX, Reg.RCX, Reg.RDX, Reg.RBX, Reg.RSP, Reg.RBP, Reg.RSI, Reg.RDI,
    Reg.R8, Reg.R9, Reg.R10, Reg.R11, Reg.R12, Reg.R13, Reg.R14, Reg.R15,
)
SEGMENT_REGS: tuple[Reg, ...] = (Reg.ES, Reg.CS, Reg.SS, Reg.DS, Reg.FS, Reg.GS, Reg.LDTR, Reg.TR)
TABLE_REGS: tuple[Reg, ...] = (Reg.IDTR, Reg.GDTR)
CONTROL_REGS: tuple[Reg, ...] = (Reg.CR0, Reg.CR2, Reg.CR3, Reg.CR4, Reg.CR8, Reg.EFER)
DEBUG_REGS: tuple[Reg, ...] = (Reg.DR0, Reg.DR1, Reg.DR2, Reg.DR3, Reg.DR6, Reg.DR7)

# RFLAGS bits the engine and the platforms care about.
RFLAGS_CF = 1 << 0
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
RFLAGS_RESERVED_ONE = 1 << 1

INTERRUPT_SHADOW = 1 << 0


@dataclass(frozen=True, slots=True)
class Segment:
    """A loaded segment register, hidden part included.

    `attributes` uses the WHV_X64_SEGMENT_REGISTER layout: type (bits 0-3), S (4),
    DPL (5-6), P (7), AVL (12), L (13), D/B (14), G (15).
    """

    selector: int
    base: int = 0
    limit: int = 0xFFFFFFFF
    attributes: int = 0

    @property
    def dpl(self) -> int:
        return (self.attributes >> 5) & 3

    @property
    def long_mode(self) -> bool:
        return bool(self.attributes & (1 << 13))

    @property
    def present(self) -> bool:
        return bool(self.attributes & (1 << 7))


@dataclass(frozen=True, slots=True)
class Table:
    """GDTR / IDTR."""

    base: int
    limit: int


RegValue = int | Segment | Table
