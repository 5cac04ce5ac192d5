"""Source-line stepping (next / stepIn / stepOut) planned from the line's machine code.

A line step does not single-step every instruction: the line's address ranges are decoded
once (capstone) and temporary breakpoints go only where control can leave them, so a loop
that stays inside one line runs at full guest speed:

- ARRIVE at the first address after each range (fall-through) and at the target of each
  direct jump that leaves the ranges: landing there ends the range;
- STEP on each instruction whose target is not known statically (RET, IRET, an indirect
  JMP, SYSCALL...), and for stepIn on each CALL: the engine steps that one instruction and
  then looks where it landed.

Calls are stepped over by letting them run: the callee returns into the range (or to its
end, an ARRIVE). A temporary breakpoint only counts on the stepping vCPU and in the step's
frame or an outer one (its canonical frame address, CFA, from `StepSymbols`), so a
recursive call that runs the same line in a deeper frame passes straight through.

The engine owns run control; this module is pure planning and decisions over callables,
testable without a VM.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

MemoryReader = Callable[[int, int], bytes]


class StepKind(enum.Enum):
    OVER = "over"  # next
    INTO = "into"  # stepIn
    OUT = "out"  # stepOut


class StepSymbols(Protocol):
    """What line stepping needs to know about the program (DebugInfo provides it)."""

    def line_ranges(self, pc: int) -> list[tuple[int, int]]:
        """[lo, hi) ranges of the source line containing `pc` in its function; [] if none."""

    def is_line_start(self, pc: int) -> bool:
        """`pc` is where a statement of a source line begins (an is_stmt row)."""

    def line_key(self, pc: int) -> Hashable | None:
        """Which source line `pc` belongs to (equal keys: the same line)."""

    def body_start(self, pc: int) -> int | None:
        """If `pc` is the entry of a function with line info, its first address after the
        prologue; else None."""

    def frame_cfa(self, regs: Mapping[str, int], read: MemoryReader) -> int | None:
        """Canonical frame address of the innermost frame (None if unknown)."""

    def caller(self, regs: Mapping[str, int], read: MemoryReader) -> tuple[int, int] | None:
        """(return address, the caller's CFA) of the innermost frame, None if unknown."""


class Purpose(enum.Enum):
    ARRIVE = "arrive"  # reaching this address ends the current range
    STEP = "step"  # step this instruction, then look where it went


@dataclass
class RangePlan:
    ranges: list[tuple[int, int]]
    breakpoints: dict[int, Purpose] = field(default_factory=dict)

    def contains(self, pc: int) -> bool:
        return any(lo <= pc < hi for lo, hi in self.ranges)


_disassembler = None


def _capstone():  # created on first use: importing capstone costs start-up time
    global _disassembler
    if _disassembler is None:
        import capstone

        _disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        _disassembler.detail = True
    return _disassembler


def plan_ranges(ranges: list[tuple[int, int]], read: MemoryReader, kind: StepKind) -> RangePlan:
    """Temporary breakpoints for running until control leaves `ranges`."""
    import capstone
    from capstone import x86

    plan = RangePlan(sorted(ranges))
    cs = _capstone()
    for lo, hi in plan.ranges:
        code = read(lo, hi - lo)
        end = lo
        for insn in cs.disasm(code, lo):
            end = insn.address + insn.size
            groups = set(insn.groups)
            direct = (len(insn.operands) == 1 and insn.operands[0].type == x86.X86_OP_IMM)
            if capstone.CS_GRP_CALL in groups:
                if kind is StepKind.INTO:
                    plan.breakpoints[insn.address] = Purpose.STEP
            elif capstone.CS_GRP_JUMP in groups and direct:
                target = insn.operands[0].imm
                if not plan.contains(target):
                    plan.breakpoints.setdefault(target, Purpose.ARRIVE)
            elif groups & {capstone.CS_GRP_JUMP, capstone.CS_GRP_RET, capstone.CS_GRP_IRET,
                           capstone.CS_GRP_INT} or insn.mnemonic in _LEAVES_ELSEWHERE:
                plan.breakpoints[insn.address] = Purpose.STEP
        if end < hi:  # undecodable bytes: step from there, never run past them blind
            plan.breakpoints[end] = Purpose.STEP
        if not plan.contains(hi):
            plan.breakpoints.setdefault(hi, Purpose.ARRIVE)
    return plan


# Instructions capstone does not group as jumps that still move RIP elsewhere.
_LEAVES_ELSEWHERE = frozenset({"syscall", "sysret", "sysretq", "sysenter", "sysexit", "hlt",
                               "ud2", "ljmp", "lcall", "retf", "retfq"})


class Verdict(enum.Enum):
    CONTINUE = "continue"  # keep running in the current plan
    STEP_ONE = "step-one"  # step one instruction, then look again
    STOP = "stop"  # the step is done: report it


@dataclass
class LineStep:
    """State of one source-level step of one vCPU; the engine drives it."""

    vcpu: int
    kind: StepKind
    symbols: StepSymbols
    start_cfa: int | None
    plan: RangePlan
    line: Hashable | None = None  # the line being stepped (line_key)
    # Extra ARRIVE targets with the CFA they must be reached in (return addresses for a
    # call stepped into code without line info, stepOut's return address, a body start).
    targets: dict[int, int | None] = field(default_factory=dict)
    finishing: bool = False  # the next ARRIVE at a target ends the step

    def frame_ok(self, cfa: int | None, want: int | None) -> bool:
        """This frame, or an outer one (stacks grow down: outer frames have higher CFAs)."""
        return want is None or cfa is None or cfa >= want

    def breakpoint_addresses(self) -> set[int]:
        return set(self.plan.breakpoints) | set(self.targets)

    def look(self, pc: int, cfa: int | None, read_return: Callable[[], int],
             read: MemoryReader) -> Verdict:
        """Decide after the vCPU arrived at `pc` (in frame `cfa`) outside the plan's
        breakpoints' STEP purpose, or after it stepped one instruction."""
        if self.finishing:
            return Verdict.STOP
        self.targets.pop(pc, None)
        start = self.start_cfa
        if self.plan.contains(pc) and (start is None or cfa is None or cfa == start):
            return Verdict.CONTINUE
        if start is not None and cfa is not None and cfa > start:
            return Verdict.STOP  # returned to the caller: stop there, as gdb does
        if start is not None and cfa is not None and cfa < start:
            return self._entered_callee(pc, cfa, read_return)
        ranges = self.symbols.line_ranges(pc)
        if not ranges:
            return Verdict.STOP  # no line info here
        key = self.symbols.line_key(pc)
        if key == self.line:  # another part of the line being stepped
            self.plan = plan_ranges(ranges, read, self.kind)
            return Verdict.CONTINUE
        if self.symbols.is_line_start(pc):
            return Verdict.STOP
        # Inside another line but not at one of its statements (optimised code): step on
        # until a statement of a different line starts, as gdb does.
        return Verdict.STEP_ONE

    def _entered_callee(self, pc: int, cfa: int, read_return: Callable[[], int]) -> Verdict:
        if self.kind is StepKind.INTO:
            body = self.symbols.body_start(pc)
            if body is not None:
                if body == pc:
                    return Verdict.STOP
                self.targets = {body: cfa}
                self.finishing = True
                return Verdict.CONTINUE
        # No line info there (or next): run until it returns into the stepped frame.
        self.targets[read_return()] = self.start_cfa
        return Verdict.CONTINUE
