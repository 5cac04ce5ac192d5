"""Why `Vcpu.run()` returned: one typed shape per reason, the same on every platform.

The shapes follow WHV_RUN_VP_EXIT_CONTEXT. Port and MMIO accesses are not exits here:
like WHv's instruction emulator (WHvEmulatorTryIoEmulation calls back into the VMM) and
Unicorn's MMIO hooks, they are answered synchronously through `IoHandler`, so a read
never has to be completed across a second `run()`.

Exits are values: nothing changes one once made. They are not frozen dataclasses (so
not hashable either) only because one is made at every single step, and a frozen one
costs four times as much to build (0.8 µs against 0.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Vector(enum.IntEnum):
    """x86 exception vectors (WHV_EXCEPTION_TYPE numbers)."""

    DE = 0   # divide error
    DB = 1   # debug
    NMI = 2
    BP = 3   # breakpoint (INT3)
    OF = 4
    BR = 5
    UD = 6   # invalid opcode
    NM = 7
    DF = 8   # double fault
    TS = 10
    NP = 11
    SS = 12
    GP = 13  # general protection
    PF = 14  # page fault
    MF = 16
    AC = 17
    MC = 18
    XM = 19


# Vectors that push an error code.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})

# DR6 bits, as reported in `ExceptionExit.debug_status` for #DB.
DR6_B0 = 1 << 0
DR6_BS = 1 << 14  # single step (TF or the platform's step primitive)
DR6_FIXED = 0xFFFF0FF0


@dataclass(slots=True)
class ExceptionExit:
    """An intercepted exception, reported before the guest sees it.

    For faults `rip` is the faulting instruction; for #DB after a single step it is the
    next instruction; for an executed INT1 (0xF1) it is the 0xF1 byte itself (as WHv
    reports it), with `instruction_bytes` starting with 0xF1.
    """

    vector: int
    rip: int
    error_code: int | None = None
    instruction_bytes: bytes = b""
    cr2: int | None = None
    debug_status: int = 0  # DR6 image for #DB

    @property
    def is_icebp(self) -> bool:
        return self.vector == Vector.DB and self.instruction_bytes[:1] == b"\xf1"

    @property
    def is_single_step(self) -> bool:
        return self.vector == Vector.DB and bool(self.debug_status & DR6_BS)


@dataclass(slots=True)
class HaltExit:
    """HLT with interrupts disabled: nothing but a reset can wake this vCPU."""

    rip: int


@dataclass(slots=True)
class CanceledExit:
    """`Vcpu.cancel()` was called (from any thread) or the VM was asked to stop."""

    rip: int


@dataclass(slots=True)
class ShutdownExit:
    """Triple fault: the guest cannot continue."""

    rip: int
    reason: str = "triple fault"


@dataclass(slots=True)
class InternalErrorExit:
    """The platform could not go on (unsupported instruction, emulation failure...)."""

    rip: int
    message: str
    instruction_bytes: bytes = field(default=b"")


Exit = ExceptionExit | HaltExit | CanceledExit | ShutdownExit | InternalErrorExit
