"""Source-level facts for the handlers: the program's DWARF, unwound frames per stopped
vCPU, expression contexts for a frame, and breakpoint conditions compiled for the engine.

pyelftools reads through one file object, so every use of `DebugInfo` goes through
`symbols_lock`: conditions are evaluated on vCPU threads while the adapter's thread may
be answering a request.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dap_whpx.handlers.common import engine_of
from dap_whpx.protocol.messages import Source
from dap_whpx.session import DapError, Session
from whpx_core.debug.vm_memory import GuestMemoryError
from whpx_core.platform.registers import Reg

# The engine and the expression language (which pulls in pyelftools) are imported where
# they are used: `initialize`, which a client waits for, needs neither (see lifecycle.py).
if TYPE_CHECKING:
    from whpx_core.debug.engine import BreakpointOptions, HitContext
    from whpx_core.symbols.debug_info import DebugInfo
    from whpx_core.symbols.expressions import Expr
    from whpx_core.symbols.model import Frame

symbols_lock = threading.RLock()

MAX_FRAMES = 64


def debug_info(session: Session) -> DebugInfo | None:
    """The program's DWARF, None when it has none."""
    info = session.state.get("debug_info")
    return info if info is not None and info.has_dwarf else None


def source_of(path: str) -> dict[str, Any]:
    return Source(name=path.rsplit("/", 1)[-1], path=path).dump()


def reader(session: Session, vcpu: int):
    engine = engine_of(session)

    def read(address: int, size: int) -> bytes:
        try:
            return engine.read_memory(address, size, vcpu)
        except GuestMemoryError as error:
            from whpx_core.symbols.expressions import ExpressionError

            raise ExpressionError(str(error)) from None

    return read


def frame_registers(session: Session, vcpu: int) -> dict[str, int]:
    return engine_of(session).frame_registers(vcpu)


def frames(session: Session, vcpu: int) -> list[Frame]:
    """The vCPU's call stack, unwound once per stop."""
    from whpx_core.symbols.model import Frame

    key = ("frames", vcpu)
    cache = session.handles.cache
    if key not in cache:
        regs = frame_registers(session, vcpu)
        info = session.state.get("debug_info")
        if info is None:
            found = [Frame(regs["rip"], None, regs, None, None, 0)]
        else:
            with symbols_lock:
                found = info.unwind(regs, reader(session, vcpu), MAX_FRAMES) or \
                    [Frame(regs["rip"], None, regs, None, None, 0)]
        cache[key] = found
    return cache[key]


@dataclass(frozen=True)
class FrameRef:
    """What a DAP frameId stands for."""

    vcpu: int
    index: int


def frame_ref(session: Session, frame_id: int) -> FrameRef:
    """A frameId from stackTrace; a threadId is accepted too (its innermost frame), so
    clients that never asked for a stack trace can still evaluate."""
    try:
        item = session.handles.get(frame_id)
    except DapError:
        item = None
    if isinstance(item, FrameRef):
        return item
    engine = engine_of(session)
    if 1 <= frame_id <= engine.vcpu_count:
        return FrameRef(frame_id - 1, 0)
    raise DapError(f"there is no frame {frame_id} (the VM has run since?)")


class RegisterContext:
    """Registers (`registers` first, then the vCPU's own), ELF symbols and memory: the
    context without DWARF, and the register half of a frame's context."""

    def __init__(self, session: Session, vcpu: int, registers: dict[str, int]) -> None:
        self._engine = engine_of(session)
        self._symbols = session.state["symbols"]
        self._vcpu = vcpu
        self._registers = registers
        self.read_memory = reader(session, vcpu)

    def register(self, name: str) -> int | None:
        if name in self._registers:
            return self._registers[name]
        reg = Reg.__members__.get(name.upper())
        if reg is None:
            return None
        value = self._engine.get_registers(self._vcpu, [reg])[0]
        return value if isinstance(value, int) else getattr(value, "selector", None)

    def symbol(self, name: str) -> int | None:
        return self._symbols.address_of(name)


def context_for(session: Session, ref: FrameRef):
    """An expression context for one frame: its unwound registers and C variables."""
    frame = frames(session, ref.vcpu)[min(ref.index, len(frames(session, ref.vcpu)) - 1)]
    info = debug_info(session)
    if info is None:
        return RegisterContext(session, ref.vcpu, frame.regs if ref.index else {})
    from whpx_core.symbols.eval_context import FrameEvalContext

    live = frame_registers(session, ref.vcpu) if ref.index == 0 else None
    return _LockedContext(FrameEvalContext(info, frame, reader(session, ref.vcpu), live),
                          RegisterContext(session, ref.vcpu, frame.regs if ref.index else {}))


class _LockedContext:
    """A frame's C variables first, then every register of the vCPU (frame 0), under the
    symbols lock."""

    def __init__(self, frame_context, registers: RegisterContext) -> None:
        self._frame = frame_context
        self._registers = registers
        self.read_memory = frame_context.read_memory

    def variable(self, name: str):
        with symbols_lock:
            return self._frame.variable(name)

    def register(self, name: str) -> int | None:
        found = self._frame.register(name)
        return found if found is not None else self._registers.register(name)

    def symbol(self, name: str) -> int | None:
        return self._frame.symbol(name)


def evaluate_in_frame(session: Session, text: str, ref: FrameRef):
    from whpx_core.symbols.expressions import ExpressionError, evaluate_value

    try:
        return evaluate_value(text, context_for(session, ref))
    except ExpressionError as error:
        raise DapError(str(error)) from None


# -- conditions, hit conditions, logpoints: compiled once, run by the engine at the hit ----
_HIT_OPERATOR = re.compile(r"^\s*(==|!=|>=|<=|>|<|%)")


def _hit_context_for(session: Session, context: HitContext):
    """Frame 0 of the vCPU that hit, for evaluating a condition there."""
    info = debug_info(session)
    regs = context.frame_registers()
    read = context.read_memory
    if info is None:
        return _HitRegisters(regs, session.state["symbols"], read)
    from whpx_core.symbols.eval_context import FrameEvalContext

    with symbols_lock:
        unwound = info.unwind(regs, read, max_frames=1)
    frame = unwound[0] if unwound else None
    return _LockedContext(FrameEvalContext(info, frame, read, regs),
                          _HitRegisters(regs, session.state["symbols"], read))


class _HitRegisters:
    def __init__(self, regs: dict[str, int], symbols, read) -> None:
        self._regs, self._symbols, self.read_memory = regs, symbols, read

    def register(self, name: str) -> int | None:
        return self._regs.get(name)

    def symbol(self, name: str) -> int | None:
        return self._symbols.address_of(name)


class _Hits:
    """The context of a hit condition: the name `hits` (or `$hits`) is the hit count."""

    def __init__(self, count: int) -> None:
        self._count = count

    def register(self, name: str) -> int | None:
        return self._count if name == "hits" else None

    def symbol(self, name: str) -> int | None:
        return None

    def read_memory(self, address: int, size: int) -> bytes:
        from whpx_core.symbols.expressions import ExpressionError

        raise ExpressionError("a hit condition cannot read memory")


def _parse(text: str, what: str) -> Expr:
    from whpx_core.symbols.expressions import ExpressionError, parse

    try:
        return parse(text)
    except ExpressionError as error:
        raise DapError(f"{what} '{text}': {error}") from None


def _check_log_message(message: str) -> None:
    """Parse every {expression} now, so a typo is reported when the logpoint is set."""
    text = message.replace("{{", "").replace("}}", "")
    if text.count("{") != text.count("}"):
        raise DapError("log message: unbalanced '{' / '}' (write '{{' for a brace)")
    for expression in re.findall(r"\{([^{}]*)\}", text):
        _parse(expression, "log message expression")


def breakpoint_options(session: Session, condition: str | None, hit_condition: str | None,
                       log_message: str | None) -> BreakpointOptions | None:
    """Compile a source/function breakpoint's extras; DapError says which is malformed."""
    from whpx_core.debug.engine import BreakpointOptions
    from whpx_core.symbols.expressions import evaluate, interpolate

    if not (condition or hit_condition or log_message):
        return None
    options: dict[str, Any] = {}
    if condition:
        expr = _parse(condition, "condition")
        options["condition"] = lambda ctx: evaluate(expr, _hit_context_for(session, ctx)) != 0
    if hit_condition:
        text = hit_condition.strip()
        if text.isdigit():
            text = f">= {text}"  # a bare N: break from the N-th hit on
        if _HIT_OPERATOR.match(text):
            text = f"hits {text}"
        hit_expr = _parse(text.replace("$hits", "hits"), "hit condition")
        options["hit_condition"] = lambda count: evaluate(hit_expr, _Hits(count)) != 0
    if log_message:
        _check_log_message(log_message)

        def log(ctx: HitContext) -> str:
            context = _hit_context_for(session, ctx)
            with symbols_lock:
                return interpolate(log_message, context)

        options["log"] = log
    return BreakpointOptions(**options)
