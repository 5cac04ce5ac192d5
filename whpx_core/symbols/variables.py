"""Variables of a frame (arguments, locals of the lexical blocks holding the pc) and
globals, as typed Values located for that frame."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from elftools.dwarf.die import DIE

from whpx_core.symbols.ctypes_model import CType, TypeBuilder
from whpx_core.symbols.dies import die_name, inherited, origin, ref
from whpx_core.symbols.locations import ExpressionRunner, FrameContext, Location, OptimizedOut
from whpx_core.symbols.model import Frame, FrameScopes, MemoryFunction, Variable
from whpx_core.symbols.values import Value

if TYPE_CHECKING:
    from whpx_core.symbols.debug_info import DebugInfo
    from whpx_core.symbols.units import Unit

MASK = (1 << 64) - 1
_VARIABLE_TAGS = ("DW_TAG_variable", "DW_TAG_formal_parameter")


class Variables:
    def __init__(self, info: DebugInfo) -> None:
        self.info = info
        self.types = TypeBuilder()
        self.runner = ExpressionRunner(info.dwarf) if info.has_dwarf else None

    # ------------------------------------------------------------------ frames

    def _scope(self, frame: Frame, memory: MemoryFunction, inline_depth: int = 0
               ) -> tuple[list[tuple[str, DIE, bool]], FrameContext | None]:
        """The frame's variable DIEs, innermost scope first, each name once (an inner
        declaration shadows an outer one), with whether it is an argument.

        `inline_depth` picks the function as `inline_chain` lists them: 0 is the innermost
        (an inlined copy when the pc is in one), 1 the function it was inlined into ..."""
        pc = frame.lookup_pc
        unit = self.info.unit_at(pc)
        function = unit.function_at(pc) if unit else None
        if unit is None or function is None or self.runner is None:
            return [], None
        chain = unit.scope_chain(function, pc)
        context = FrameContext(pc, dict(frame.regs), memory, frame.cfa, outer=frame.index > 0)
        context.frame_base = self._frame_base(chain[0], context)
        starts = [0] + [index for index, die in enumerate(chain)
                        if die.tag == "DW_TAG_inlined_subroutine"]
        if not 0 <= inline_depth < len(starts):
            return [], context
        start = starts[len(starts) - 1 - inline_depth]
        end = starts[len(starts) - inline_depth] if inline_depth else len(chain)
        chain = chain[start:end]
        seen: set[str] = set()
        found: list[tuple[str, DIE, bool]] = []
        for depth, scope in enumerate(reversed(chain)):
            outermost = depth == len(chain) - 1
            for child in scope.iter_children():
                if child.tag not in _VARIABLE_TAGS:
                    continue
                name = die_name(child)
                if name and name not in seen:
                    seen.add(name)
                    found.append((name, child,
                                  child.tag == "DW_TAG_formal_parameter" and outermost))
        return found, context

    def frame_scopes(self, frame: Frame, memory: MemoryFunction,
                     inline_depth: int = 0) -> FrameScopes:
        scopes = FrameScopes()
        found, context = self._scope(frame, memory, inline_depth)
        for name, die, is_argument in found:
            assert context is not None
            variable = Variable(name, self._value(die, context),
                                "argument" if is_argument else "local")
            (scopes.arguments if is_argument else scopes.locals).append(variable)
        return scopes

    def _frame_base(self, subprogram: DIE, context: FrameContext) -> int | None:
        assert self.runner is not None
        try:
            expr = self.runner.expression_at(subprogram, "DW_AT_frame_base", context.pc)
            return None if expr is None else self.runner.value(subprogram, expr, context)
        except OptimizedOut:
            return None

    def _type(self, die: DIE) -> CType:
        return self.types.of(ref(origin(die), "DW_AT_type") or ref(die, "DW_AT_type")) \
            or CType("void")

    def _value(self, die: DIE, context: FrameContext) -> Value:
        ctype = self._type(die)
        symbols = self.info.symbols
        const = inherited(die, "DW_AT_const_value")
        if const is not None and "DW_AT_location" not in die.attributes:
            return Value(ctype, data=_const_bytes(const, ctype.byte_size), symbols=symbols,
                         memory=context.memory)
        assert self.runner is not None
        try:
            expr = self.runner.expression_at(die, "DW_AT_location", context.pc)
            if expr is None:
                return Value.optimized(ctype)
            location = self.runner.location(die, expr, context)
        except OptimizedOut:
            return Value.optimized(ctype)
        value = self._place(ctype, location, context)
        value.symbols = symbols
        return value

    @staticmethod
    def _place(ctype: CType, location: Location, context: FrameContext) -> Value:
        memory = context.memory
        if location.address is not None:
            return Value(ctype, address=location.address, memory=memory)
        if location.register is not None:
            raw = context.regs.get(location.register)
            if raw is None:
                return Value.optimized(ctype)
            size = ctype.byte_size
            if size > 8:
                return Value.optimized(ctype)  # a struct spread over registers: not modelled
            data = (raw & MASK).to_bytes(8, "little")[:size]
            if context.outer:  # where a callee saved it is not tracked: show, don't write
                return Value(ctype, data=data, memory=memory)
            return Value(ctype, register=location.register, data=data, memory=memory)
        data = location.data or b""
        size = ctype.byte_size
        if len(data) < size:
            return Value.optimized(ctype)
        return Value(ctype, data=data[:size], memory=memory)

    # ----------------------------------------------------------------- globals

    @cached_property
    def _global_dies(self) -> list[tuple[Unit, DIE]]:
        return [(unit, die) for unit in self.info.units for die in unit.variables]

    def _global_value(self, die: DIE, memory: MemoryFunction) -> Value:
        context = FrameContext(0, {}, memory)
        value = self._value(die, context)
        value.symbols = self.info.symbols
        return value

    def globals(self, memory: MemoryFunction) -> list[Variable]:
        out: list[Variable] = []
        seen: set[str] = set()
        for _, die in self._global_dies:
            name = die_name(die)
            if name and name not in seen:
                seen.add(name)
                out.append(Variable(name, self._global_value(die, memory), "global"))
        out.sort(key=lambda variable: variable.name)
        return out

    def lookup(self, frame: Frame | None, name: str, memory: MemoryFunction,
               inline_depth: int = 0) -> Variable | None:
        if frame is not None:
            found, context = self._scope(frame, memory, inline_depth)
            for found_name, die, is_argument in found:
                if found_name == name:
                    assert context is not None
                    return Variable(name, self._value(die, context),
                                    "argument" if is_argument else "local")
        # Globals: a static of the frame's own compile unit first, then any.
        home = self.info.unit_at(frame.lookup_pc) if frame is not None else None
        candidates = [(unit, die) for unit, die in self._global_dies if die_name(die) == name]
        candidates.sort(key=lambda item: item[0] is not home)
        for _, die in candidates:
            return Variable(name, self._global_value(die, memory), "global")
        return None


def _const_bytes(const, size: int) -> bytes:
    if isinstance(const, int):
        return (const & ((1 << (8 * max(size, 1))) - 1)).to_bytes(max(size, 1), "little")
    return bytes(const)[:size].ljust(size, b"\0")
