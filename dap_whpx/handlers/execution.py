"""threads, continue, pause, next / stepIn / stepOut (instruction granularity for now)."""

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


def _step(session: Session, args: ThreadArguments) -> None:
    engine = engine_of(session)
    vcpu = vcpu_of(session, args.threadId)
    if engine.running:
        raise DapError("the program is running; pause it first")
    session.handles.clear()
    # Instruction steps move only the stepped vCPU; the others stay halted, which is
    # what singleThread asks for as well.
    session.after_response(lambda: engine.step_instruction(vcpu))


@capability(supportsSteppingGranularity=True)
@request("next", ThreadArguments)
def next_(session: Session, args: ThreadArguments) -> None:
    _step(session, args)


@request("stepIn", ThreadArguments)
def step_in(session: Session, args: ThreadArguments) -> None:
    _step(session, args)


@request("stepOut", ThreadArguments)
def step_out(session: Session, args: ThreadArguments) -> None:
    _step(session, args)
