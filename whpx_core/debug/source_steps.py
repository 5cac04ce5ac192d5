"""`StepSymbols` (what line stepping needs) answered from a program's DWARF (`DebugInfo`)."""

from __future__ import annotations

from collections.abc import Mapping

from whpx_core.debug.line_step import MemoryReader
from whpx_core.symbols.debug_info import DebugInfo


class DebugInfoSteps:
    def __init__(self, info: DebugInfo) -> None:
        self.info = info

    def line_ranges(self, pc: int) -> list[tuple[int, int]]:
        return self.info.line_ranges(pc)

    def is_line_start(self, pc: int) -> bool:
        line = self.info.line_for_address(pc)
        return line is not None and line.address == pc and line.is_stmt

    def line_key(self, pc: int) -> tuple[str, int] | None:
        line = self.info.line_for_address(pc)
        return (line.file, line.line) if line is not None else None

    def body_start(self, pc: int) -> int | None:
        function = self.info.function_at(pc)
        if function is None or not function.from_dwarf or function.low != pc:
            return None
        return function.body_start

    def frame_cfa(self, regs: Mapping[str, int], read: MemoryReader) -> int | None:
        frames = self.info.unwind(regs, read, max_frames=1)
        return frames[0].cfa if frames else None

    def caller(self, regs: Mapping[str, int], read: MemoryReader) -> tuple[int, int] | None:
        frames = self.info.unwind(regs, read, max_frames=2)
        if len(frames) < 2 or frames[1].cfa is None:
            return None
        return frames[1].pc, frames[1].cfa
