"""evaluate (watch, hover, debug console) in the safe expression language."""

from __future__ import annotations

from typing import Any

from dap_whpx.handlers.common import engine_of, hex_address
from dap_whpx.handlers.source import RegisterContext
from dap_whpx.protocol.messages import EvaluateArguments
from dap_whpx.session import DapError, Session, capability, request


def evaluate_int(session: Session, text: str, vcpu: int) -> int:
    # Imported here: the expression language pulls in pyelftools, which start-up skips.
    from whpx_core.symbols.expressions import ExpressionError, evaluate

    try:
        return evaluate(text, RegisterContext(session, vcpu, {}))
    except ExpressionError as error:
        raise DapError(str(error)) from None


@capability(supportsEvaluateForHovers=True)
@request("evaluate", EvaluateArguments)
def evaluate_request(session: Session, args: EvaluateArguments) -> dict[str, Any]:
    """C expressions over the frame's variables, registers, symbols and memory."""
    from dap_whpx.handlers.source import FrameRef, evaluate_in_frame, frame_ref, symbols_lock
    from dap_whpx.handlers.stack import variable_body
    from whpx_core.symbols.expressions import format_value

    engine = engine_of(session)
    ref = frame_ref(session, args.frameId) if args.frameId is not None else FrameRef(0, 0)
    if engine.running:
        raise DapError("the program is running; pause it to evaluate")
    value = evaluate_in_frame(session, args.expression, ref)
    if isinstance(value, int):
        return {"result": format_value(value), "type": "u64", "variablesReference": 0,
                "memoryReference": hex_address(value & (1 << 64) - 1)}
    shown = variable_body(session, args.expression, value, args.expression, ref)
    with symbols_lock:
        pointer = value.type.strip().kind == "pointer" and not value.optimized_out
        target = value.as_int() if pointer else value.address
    body = {"result": shown["value"], "type": shown.get("type"),
            "variablesReference": shown["variablesReference"]}
    if target is not None:
        body["memoryReference"] = hex_address(target)
    return body
