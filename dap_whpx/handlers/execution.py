"""threads, continue, pause, next / stepIn / stepOut (source lines or instructions)."""

from __future__ import annotations

from typing import Any

from dap_whpx.handlers.common import engine_of, thread_id, vcpu_of
from dap_whpx.protocol.messages import PauseArguments, Thread, ThreadArguments
from dap_whpx.session import DapError, Session, capability, request


@request("threads")
def threads(session: Session, args: Any) -> dict[str, Any]:
    engine = session.engine
    count = engine.vcpu_count if engine is not None else 0
    return {"threads": [Thread(id=thread_id(i), name=f"CPU {i}").dump() for i in range(count)]}


@capability(supportsSingleThreadExecutionRequests=True)
@request("continue", ThreadArguments)
def continue_(session: Session, args: ThreadArguments) -> dict[str, Any]:
    engine = engine_of(session)
    only = vcpu_of(session, args.threadId) if args.singleThread else None
    if engine.running:
        raise DapError("the program is already running")
    session.handles.clear()

    def go() -> None:
        engine.resume(only=only)
        session.event("continued", {"threadId": args.threadId,
                                    "allThreadsContinued": only is None})

    session.after_response(go)
    return {"allThreadsContinued": only is None}


@request("pause", PauseArguments)
def pause(session: Session, args: PauseArguments) -> None:
    engine = engine_of(session)
    vcpu_of(session, args.threadId)
    if not engine.running:
        raise DapError("the program is not running")
    session.after_response(engine.pause)
    return None


def _step(session: Session, args: ThreadArguments, kind: str) -> None:
    """Line granularity (the default) runs inside the engine (line_step.py): one request,
    one stop, however many instructions the line takes. Instruction granularity, or a
    place without line information, steps one instruction of that vCPU alone."""
    from dap_whpx.handlers.source import debug_info, frame_registers, symbols_lock
    from whpx_core.debug.line_step import StepKind

    engine = engine_of(session)
    vcpu = vcpu_of(session, args.threadId)
    if engine.running:
        raise DapError("the program is running; pause it first")
    info = debug_info(session)
    by_line = info is not None and args.granularity != "instruction"
    if by_line and kind != "out":
        with symbols_lock:
            by_line = bool(info.line_ranges(frame_registers(session, vcpu)["rip"]))
    session.handles.clear()
    if not by_line:
        # Instruction steps move only the stepped vCPU; the others stay halted, which is
        # what singleThread asks for as well.
        session.after_response(lambda: engine.step_instruction(vcpu))
        return
    steps = session.state.get("step_symbols")
    if steps is None:
        steps = session.state["step_symbols"] = _LockedSteps(info)
    session.after_response(lambda: engine.step_line(vcpu, StepKind(kind), steps,
                                                    single_thread=args.singleThread))


class _LockedSteps:
    """DebugInfoSteps under the symbols lock (line steps ask on vCPU threads)."""

    def __init__(self, info) -> None:
        from whpx_core.debug.source_steps import DebugInfoSteps

        self._steps = DebugInfoSteps(info)

    def __getattr__(self, name: str):
        from dap_whpx.handlers.source import symbols_lock

        method = getattr(self._steps, name)

        def locked(*args):
            with symbols_lock:
                return method(*args)

        return locked


@capability(supportsSteppingGranularity=True)
@request("next", ThreadArguments)
def next_(session: Session, args: ThreadArguments) -> None:
    _step(session, args, "over")


@request("stepIn", ThreadArguments)
def step_in(session: Session, args: ThreadArguments) -> None:
    _step(session, args, "into")


@request("stepOut", ThreadArguments)
def step_out(session: Session, args: ThreadArguments) -> None:
    _step(session, args, "out")
