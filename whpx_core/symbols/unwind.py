"""Call-stack unwinding from CFI (.debug_frame and .eh_frame), with a frame-pointer
fallback where no FDE covers the pc.

Each step finds the FDE row for the frame's pc (the return address minus one in outer
frames, so a call at a function's very end still finds its own FDE), computes the CFA
and recovers the caller's registers. Registers a frame cannot know (caller-saved ones
the callee never preserved) are dropped from outer frames rather than guessed, so a
variable living in one reads as optimized out instead of a wrong value.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TYPE_CHECKING

from elftools.dwarf.callframe import FDE, CFARule, RegisterRule

from whpx_core.symbols.model import Frame, MemoryFunction

if TYPE_CHECKING:
    from whpx_core.symbols.debug_info import DebugInfo

# DWARF register numbers (System V x86-64 psABI).
DWARF_REGISTERS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
                   "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
CALLEE_SAVED = frozenset({"rbx", "rbp", "r12", "r13", "r14", "r15"})
RETURN_COLUMN = 16
MASK = (1 << 64) - 1


class _Stop(Exception):
    """Unwinding cannot go further (unreadable memory, no rule, garbage)."""


def _read_u64(memory: MemoryFunction, address: int) -> int:
    try:
        data = memory(address & MASK, 8)
    except Exception as error:
        raise _Stop(f"cannot read {address:#x}") from error
    if len(data) != 8:
        raise _Stop(f"short read at {address:#x}")
    return int.from_bytes(data, "little")


class Unwinder:
    def __init__(self, info: DebugInfo) -> None:
        self.info = info
        self._lows: list[int] = []
        self._fdes: list[FDE] = []
        self._decoded: dict[int, list[dict]] = {}
        self._load()

    def _load(self) -> None:
        dwarf = self.info.dwarf
        entries: list = []
        if dwarf is not None:
            for has, read in ((dwarf.has_CFI, dwarf.CFI_entries),
                              (dwarf.has_EH_CFI, dwarf.EH_CFI_entries)):
                try:
                    if has():
                        entries += read()
                except Exception:  # a damaged CFI section: fall back to frame pointers
                    continue
        fdes = sorted((entry for entry in entries if isinstance(entry, FDE)),
                      key=lambda fde: fde.header["initial_location"])
        self._fdes = fdes
        self._lows = [fde.header["initial_location"] for fde in fdes]

    def _rows_for(self, pc: int) -> list[dict] | None:
        at = bisect.bisect_right(self._lows, pc) - 1
        while at >= 0:
            fde = self._fdes[at]
            low = fde.header["initial_location"]
            if low <= pc < low + fde.header["address_range"]:
                key = id(fde)
                if key not in self._decoded:
                    self._decoded[key] = fde.get_decoded().table
                return self._decoded[key]
            if low + fde.header["address_range"] <= pc and at < len(self._fdes) - 1:
                return None
            at -= 1
        return None

    def cfa_and_caller(self, pc: int, regs: Mapping[str, int],
                       memory: MemoryFunction) -> tuple[int, dict[str, int]]:
        """The CFA of the frame at `pc` and the caller's registers (rip = return address)."""
        rows = self._rows_for(pc)
        if rows is None:
            return self._frame_pointer(regs, memory)
        row = rows[0]
        for candidate in rows:
            if candidate["pc"] > pc:
                break
            row = candidate
        rule: CFARule = row["cfa"]
        if rule.expr is not None or rule.reg is None:
            raise _Stop("CFA given by an expression")
        base = regs.get(DWARF_REGISTERS[rule.reg]) if rule.reg < len(DWARF_REGISTERS) else None
        if base is None:
            raise _Stop("CFA register unknown in this frame")
        cfa = (base + rule.offset) & MASK
        caller = {name: value for name, value in regs.items() if name in CALLEE_SAVED}
        caller["rsp"] = cfa
        return_known = False
        for column, reg_rule in row.items():
            if not isinstance(column, int) or column >= len(DWARF_REGISTERS):
                continue
            name = DWARF_REGISTERS[column]
            value = self._apply(reg_rule, cfa, regs, memory)
            if column == RETURN_COLUMN:
                if value is None:
                    raise _Stop("return address undefined (outermost frame)")
                return_known = True
            if value is None:
                caller.pop(name, None)
            else:
                caller[name] = value
        if not return_known:
            caller["rip"] = _read_u64(memory, cfa - 8)
        return cfa, caller

    @staticmethod
    def _apply(rule: RegisterRule, cfa: int, regs: Mapping[str, int],
               memory: MemoryFunction) -> int | None:
        kind = rule.type
        if kind == RegisterRule.OFFSET:
            return _read_u64(memory, cfa + rule.arg)
        if kind == RegisterRule.VAL_OFFSET:
            return (cfa + rule.arg) & MASK
        if kind == RegisterRule.REGISTER:
            return regs.get(DWARF_REGISTERS[rule.arg]) if rule.arg < len(DWARF_REGISTERS) \
                else None
        if kind == RegisterRule.SAME_VALUE:
            return None  # handled by keeping callee-saved registers
        return None  # UNDEFINED, expressions: not known

    @staticmethod
    def _frame_pointer(regs: Mapping[str, int], memory: MemoryFunction) -> tuple[int, dict]:
        rbp = regs.get("rbp")
        if not rbp:
            raise _Stop("no CFI and no frame pointer")
        caller = {name: value for name, value in regs.items() if name in CALLEE_SAVED}
        caller["rbp"] = _read_u64(memory, rbp)
        caller["rip"] = _read_u64(memory, rbp + 8)
        caller["rsp"] = (rbp + 16) & MASK
        return (rbp + 16) & MASK, caller

    def unwind(self, regs: Mapping[str, int], memory: MemoryFunction,
               max_frames: int = 64) -> list[Frame]:
        frames: list[Frame] = []
        current = {name.lower(): value & MASK for name, value in regs.items()
                   if isinstance(value, int)}
        while len(frames) < max_frames:
            pc = current.get("rip")
            if not pc:
                break
            index = len(frames)
            lookup = pc if index == 0 else pc - 1
            try:
                cfa, caller = self.cfa_and_caller(lookup, current, memory)
            except _Stop:
                cfa, caller = None, None
            frames.append(Frame(pc, cfa, dict(current), self.info.function_at(lookup),
                                self.info.line_for_address(lookup), index))
            if caller is None or cfa is None:
                break
            previous_sp = current.get("rsp")
            if previous_sp is not None and caller["rsp"] <= previous_sp:
                break  # the stack must grow towards the caller; anything else is garbage
            current = caller
        return frames
