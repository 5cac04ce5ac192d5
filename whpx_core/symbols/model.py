"""The plain records the symbols layer hands out: source lines, functions, frames, scopes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from whpx_core.symbols.values import Value


class MemoryReader(Protocol):
    """Reads guest memory; raises (any exception) when the bytes cannot be read."""

    def __call__(self, address: int, size: int) -> bytes: ...


MemoryFunction = Callable[[int, int], bytes]


class SourceLine(NamedTuple):
    file: str  # absolute, normalised
    line: int
    column: int
    address: int  # where the line-table row that covers the queried address starts
    is_stmt: bool = True  # the row is a statement (a place a line step may stop)


class LineResolution(NamedTuple):
    line: int  # the line that has code (>= the requested one)
    addresses: list[int]  # where breakpoints go: one per function / inlined copy


@dataclass(frozen=True)
class Function:
    name: str
    low: int
    high: int  # exclusive end of the range that holds the entry point
    body_start: int  # first address after the prologue
    file: str | None
    line: int | None  # declaration line
    from_dwarf: bool
    ranges: tuple[tuple[int, int], ...] = ()  # every [lo, hi) range (hot/cold parts)
    die_offset: int | None = None
    call_site: SourceLine | None = None  # inlined copies: the caller's call line

    def contains(self, address: int) -> bool:
        return any(lo <= address < hi for lo, hi in self.ranges or ((self.low, self.high),))


@dataclass
class Frame:
    pc: int  # frame 0: the current pc; outer frames: the return address
    cfa: int | None  # canonical frame address (caller's rsp before the call)
    regs: dict[str, int]  # registers known in this frame (outer frames: as unwound)
    function: Function | None
    line: SourceLine | None
    index: int = 0

    @property
    def lookup_pc(self) -> int:
        """The address whose line/scope describes the frame: the call instruction for
        outer frames (the return address may already be the next line or function)."""
        return self.pc if self.index == 0 else self.pc - 1


@dataclass
class Variable:
    name: str
    value: Value
    kind: str = "local"  # local, argument, global


@dataclass
class FrameScopes:
    arguments: list[Variable] = field(default_factory=list)
    locals: list[Variable] = field(default_factory=list)
