"""An expression context for one stopped frame: its registers (as unwound), its C
variables, the ELF symbols and guest memory. The engine evaluates breakpoint conditions
and logpoint {expr}s with it, the adapter evaluate/hover requests too."""

from __future__ import annotations

from collections.abc import Mapping

from whpx_core.symbols.debug_info import DebugInfo
from whpx_core.symbols.model import Frame, MemoryFunction
from whpx_core.symbols.values import Value


class FrameEvalContext:
    def __init__(self, info: DebugInfo, frame: Frame | None, memory: MemoryFunction,
                 registers: Mapping[str, int] | None = None) -> None:
        self.info = info
        self.frame = frame
        self.memory = memory
        self.registers = dict(registers if registers is not None else
                              (frame.regs if frame is not None else {}))
        self._variables: dict[str, Value | None] = {}

    def register(self, name: str) -> int | None:
        return self.registers.get(name)

    def symbol(self, name: str) -> int | None:
        return self.info.symbols.address_of(name)

    def read_memory(self, address: int, size: int) -> bytes:
        return self.memory(address, size)

    def variable(self, name: str) -> Value | None:
        if name not in self._variables:
            found = self.info.lookup_variable(self.frame, name, self.memory)
            self._variables[name] = found.value if found is not None else None
        return self._variables[name]
