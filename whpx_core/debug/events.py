"""What the engine tells its client (the DAP layer), through one thread-safe channel.

Events are values: nothing changes one once made. Not frozen (so not hashable either)
only because a frozen dataclass costs four times as much to build, and a Stopped is made
at every step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StopReason(enum.Enum):
    ENTRY = "entry"
    BREAKPOINT = "breakpoint"
    STEP = "step"
    PAUSE = "pause"
    EXCEPTION = "exception"  # an intercepted exception, a triple fault, a platform error


@dataclass(slots=True)
class Stopped:
    """Every vCPU has stopped; `vcpu` is the one that caused it."""

    reason: StopReason
    vcpu: int
    rip: int
    breakpoints: tuple[int, ...] = ()  # ids of the user breakpoints hit
    description: str = ""


@dataclass(slots=True)
class BreakpointVerified:
    """A pending breakpoint was planted for the first time (its page became mapped)."""

    breakpoint_id: int
    address: int


@dataclass(slots=True)
class Output:
    data: bytes  # guest serial output


@dataclass(slots=True)
class LogMessage:
    """A logpoint was hit: its message, evaluated at the hit; the vCPU went on."""

    breakpoint_id: int
    vcpu: int
    text: str


@dataclass(slots=True)
class Exited:
    """The VM ended; no further stops will come."""

    exit_code: int
    reason: str  # "exit", "halted", "shutdown", "error", "stopped"
    message: str = ""


EngineEvent = Stopped | BreakpointVerified | Output | LogMessage | Exited


@dataclass(slots=True)
class Breakpoint:
    """A user breakpoint: the engine's handle, independent of the low-level table."""

    id: int
    address: int
    verified: bool = field(default=False, compare=False)
