"""The one translation point from engine events to DAP events."""

from __future__ import annotations

import codecs
from typing import Any

from dap_whpx.session import Session
from whpx_core.debug.events import (
    BreakpointVerified,
    Exited,
    LogMessage,
    Output,
    Stopped,
    StopReason,
)

_REASONS = {
    StopReason.ENTRY: "entry",
    StopReason.STEP: "step",
    StopReason.PAUSE: "pause",
    StopReason.EXCEPTION: "exception",
}


def translate(session: Session, event: Any) -> None:
    match event:
        case Output(data=data):
            # A UTF-8 character may be split across two events: decode incrementally.
            decoder = session.state.get("output_decoder")
            if decoder is None:
                decoder = session.state["output_decoder"] = \
                    codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = decoder.decode(data)
            if text:
                session.event("output", {"category": "stdout", "output": text})
        case LogMessage(breakpoint_id=engine_id, text=text):
            body = {"category": "console", "output": text + "\n"}
            owner = session.state.get("engine_to_dap", {}).get(engine_id)
            if owner is not None and owner[1].startswith("source:"):
                path = owner[1][len("source:"):]
                body["source"] = {"name": path.rsplit("/", 1)[-1], "path": path}
            session.event("output", body)
        case Stopped():
            session.handles.clear()
            body: dict[str, Any] = {"reason": _reason(session, event),
                                    "threadId": event.vcpu + 1, "allThreadsStopped": True}
            if event.description:
                body["description"] = event.description
                if event.reason is StopReason.EXCEPTION:
                    body["text"] = event.description
            hit = _dap_ids(session, event.breakpoints)
            if hit:
                body["hitBreakpointIds"] = hit
            session.event("stopped", body)
        case BreakpointVerified(breakpoint_id=engine_id):
            from dap_whpx.handlers.breakpoints import verified

            verified(session, engine_id)
        case Exited(exit_code=code, message=message):
            if message:
                session.output(f"dap-whpx: {message}\n")
            for vcpu in range(session.state["launch"].cpus):
                session.event("thread", {"reason": "exited", "threadId": vcpu + 1})
            session.event("exited", {"exitCode": code})
            session.event("terminated")


def _dap_ids(session: Session, engine_ids: tuple[int, ...]) -> list[int]:
    owners = session.state.get("engine_to_dap", {})
    return sorted({owners[e][0] for e in engine_ids if e in owners})


def _reason(session: Session, event: Stopped) -> str:
    if event.reason is not StopReason.BREAKPOINT:
        return _REASONS.get(event.reason, "pause")
    owners = session.state.get("engine_to_dap", {})
    kinds = {owners[e][1] for e in event.breakpoints if e in owners}
    if kinds == {"instruction"}:
        return "instruction breakpoint"
    if kinds == {"function"}:
        return "function breakpoint"
    if kinds == {"data"}:
        return "data breakpoint"
    return "breakpoint"
