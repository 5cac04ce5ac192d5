"""setBreakpoints, setFunctionBreakpoints, setInstructionBreakpoints,
setExceptionBreakpoints, dataBreakpointInfo, setDataBreakpoints."""

from __future__ import annotations

import itertools
from typing import Any

from dap_whpx.handlers.common import engine_of, hex_address, parse_reference, with_vm_stopped
from dap_whpx.protocol.messages import (
    Breakpoint,
    BreakpointLocationsArguments,
    BreakpointMode,
    DataBreakpointInfoArguments,
    ExceptionBreakpointsFilter,
    SetBreakpointsArguments,
    SetDataBreakpointsArguments,
    SetExceptionBreakpointsArguments,
    SetFunctionBreakpointsArguments,
    SetInstructionBreakpointsArguments,
)
from dap_whpx.session import DapError, Session, capability, request

_ids = itertools.count(1)

# One filter per exception vector the engine can stop on (the platform decides which of
# them it can intercept; unsupported ones are refused with a message when set).
EXCEPTION_FILTERS = {
    "DE": (0, "#DE divide error"),
    "UD": (6, "#UD invalid opcode"),
    "GP": (13, "#GP general protection fault"),
    "PF": (14, "#PF page fault"),
    "BP": (3, "#BP breakpoint (guest INT3)"),
    "DF": (8, "#DF double fault"),
}

MODES = [
    BreakpointMode(mode="software", label="Software",
                   description="INT1 written into guest memory while the VM runs",
                   appliesTo=["source", "instruction"]).dump(),
    BreakpointMode(mode="hardware", label="Hardware",
                   description="a debug register (DR0-DR3): four at most, nothing "
                               "written to guest memory",
                   appliesTo=["instruction", "data"]).dump(),
]

Wanted = tuple[int | None, str | None] | tuple[int | None, str | None, tuple[str, int]]


def _owners(session: Session) -> dict[int, tuple[int, str]]:
    return session.state.setdefault("engine_to_dap", {})


def _remove_kind(session: Session, kind: str) -> None:
    engine = engine_of(session)
    owners = _owners(session)
    for engine_id, (_, owner_kind) in list(owners.items()):
        if owner_kind == kind:
            engine.remove_breakpoint(engine_id)
            del owners[engine_id]


def _replace(session: Session, kind: str, wanted: list[Wanted],
             extra: list[dict[str, Any]] | None = None,
             options: list[Any] | None = None) -> list[dict[str, Any]]:
    """Remove this kind's previous breakpoints, add the new ones (address or a reason
    why not, and a (kind, size) for a hardware one), and describe them."""
    from whpx_core.debug.engine import EngineError

    engine = engine_of(session)
    owners = _owners(session)
    _remove_kind(session, kind)
    out = []
    for index, (address, problem, *hardware) in enumerate(wanted):
        dap_id = next(_ids)
        info = dict(extra[index]) if extra else {}
        if address is not None and hardware:
            try:
                bp = engine.add_hardware_breakpoint(address, *hardware[0])
            except EngineError as error:
                address, problem = None, str(error)
        if address is None:
            out.append(Breakpoint(id=dap_id, verified=False, message=problem,
                                  reason="failed", **info).dump())
            continue
        if not hardware:
            bp = engine.add_breakpoint(address, options[index] if options else None)
        owners[bp.id] = (dap_id, kind)
        verified = engine.is_verified(bp.id) or _mapped(engine, address)
        out.append(Breakpoint(id=dap_id, verified=verified,
                              instructionReference=hex_address(address),
                              message=None if verified else
                              "pending: the address is not mapped yet",
                              reason=None if verified else "pending", **info).dump())
    return out


def _mapped(engine: Any, address: int) -> bool:
    return engine.memory.translate(address) is not None


def verified(session: Session, engine_id: int) -> None:
    """A pending breakpoint was planted: tell the client."""
    owner = _owners(session).get(engine_id)
    if owner is not None:
        session.event("breakpoint", {"reason": "changed",
                                     "breakpoint": {"id": owner[0], "verified": True}})


def _remember(session: Session, command: str, args: Any) -> None:
    session.state.setdefault("breakpoint_requests", {})[command] = args


def replay(session: Session, saved: dict[str, Any]) -> None:
    """Set the same breakpoints again (after a restart)."""
    for command, args in saved.items():
        HANDLERS[command.partition(":")[0]](session, args)


def _options_or_problem(session: Session, bp: Any) -> tuple[Any, str | None]:
    from dap_whpx.handlers.source import breakpoint_options

    try:
        return breakpoint_options(session, bp.condition, bp.hitCondition,
                                  getattr(bp, "logMessage", None)), None
    except DapError as error:
        return None, str(error)


@capability(breakpointModes=MODES, supportsConditionalBreakpoints=True,
            supportsHitConditionalBreakpoints=True, supportsLogPoints=True)
@request("setBreakpoints", SetBreakpointsArguments)
@with_vm_stopped
def set_breakpoints(session: Session, args: SetBreakpointsArguments) -> dict[str, Any]:
    """Source lines through the DWARF line table: each breakpoint goes to the nearest line
    at or after it that has code (every inlined copy / split block of that line)."""
    from dap_whpx.handlers.source import debug_info, symbols_lock

    engine = engine_of(session)
    path = args.source.path or args.source.name or ""
    kind = f"source:{path}"
    _remember_source(session, args)
    _remove_kind(session, kind)
    info = debug_info(session)
    owners = _owners(session)
    out = []
    for bp in args.breakpoints:
        dap_id = next(_ids)
        if info is None:
            problem = "the program has no DWARF line information (build it with -g)"
            resolved = None
        else:
            with symbols_lock:
                resolved = info.resolve_line(path, bp.line)
            problem = f"no code at or after line {bp.line} in {path}" if resolved is None \
                else None
        options, bad = _options_or_problem(session, bp)
        if resolved is None or bad is not None:
            out.append(Breakpoint(id=dap_id, verified=False, message=bad or problem,
                                  reason="failed", line=bp.line, source=args.source).dump())
            continue
        for address in resolved.addresses:
            owners[engine.add_breakpoint(address, options).id] = (dap_id, kind)
        out.append(Breakpoint(id=dap_id, verified=True, line=resolved.line,
                              source=args.source,
                              instructionReference=hex_address(resolved.addresses[0])).dump())
    return {"breakpoints": out}


def _remember_source(session: Session, args: SetBreakpointsArguments) -> None:
    path = args.source.path or args.source.name or ""
    session.state.setdefault("breakpoint_requests", {})[f"setBreakpoints:{path}"] = args


@capability(supportsBreakpointLocationsRequest=True)
@request("breakpointLocations", BreakpointLocationsArguments)
def breakpoint_locations(session: Session, args: BreakpointLocationsArguments) -> dict[str, Any]:
    from dap_whpx.handlers.source import debug_info, symbols_lock

    info = debug_info(session) if session.engine is not None else None
    if info is None:
        return {"breakpoints": []}
    path = args.source.path or args.source.name or ""
    with symbols_lock:
        lines = info.lines_with_code(path, args.line, args.endLine or args.line)
    return {"breakpoints": [{"line": line} for line in lines]}


def resolve_function(session: Session, name: str) -> tuple[int | None, str | None]:
    symbols = session.state["symbols"]
    base, plus, offset = name.replace(" ", "").partition("+")
    address = symbols.address_of(base)
    if address is None:
        try:
            address = int(base, 0)
        except ValueError:
            return None, f"no symbol '{base}' in the program"
    if plus:
        try:
            address += int(offset, 0)
        except ValueError:
            return None, f"'{offset}' is not a number"
    return address, None


@capability(supportsFunctionBreakpoints=True)
@request("setFunctionBreakpoints", SetFunctionBreakpointsArguments)
@with_vm_stopped
def set_function_breakpoints(session: Session,
                             args: SetFunctionBreakpointsArguments) -> dict[str, Any]:
    _remember(session, "setFunctionBreakpoints", args)
    wanted: list[Wanted] = []
    options = []
    for bp in args.breakpoints:
        address, problem = resolve_function(session, bp.name)
        extras, bad = _options_or_problem(session, bp)
        wanted.append((None, bad) if bad else (address, problem))
        options.append(extras)
    return {"breakpoints": _replace(session, "function", wanted, options=options)}


@capability(supportsInstructionBreakpoints=True)
@request("setInstructionBreakpoints", SetInstructionBreakpointsArguments)
@with_vm_stopped
def set_instruction_breakpoints(session: Session,
                                args: SetInstructionBreakpointsArguments) -> dict[str, Any]:
    _remember(session, "setInstructionBreakpoints", args)
    wanted: list[Wanted] = []
    for bp in args.breakpoints:
        try:
            address, physical = parse_reference(session, bp.instructionReference)
        except DapError as error:
            wanted.append((None, str(error)))
            continue
        if physical:
            wanted.append((None, "instruction breakpoints take guest-virtual addresses"))
        elif bp.mode == "hardware":
            wanted.append((address + bp.offset, None, ("execute", 1)))
        else:
            wanted.append((address + bp.offset, None))
    return {"breakpoints": _replace(session, "instruction", wanted)}


@capability(exceptionBreakpointFilters=[
    ExceptionBreakpointsFilter(filter=key, label=label).dump()
    for key, (_, label) in EXCEPTION_FILTERS.items()])
@request("setExceptionBreakpoints", SetExceptionBreakpointsArguments)
@with_vm_stopped
def set_exception_breakpoints(session: Session,
                              args: SetExceptionBreakpointsArguments) -> dict[str, Any]:
    engine = engine_of(session)
    unknown = [f for f in args.filters if f not in EXCEPTION_FILTERS]
    if unknown:
        raise DapError(f"unknown exception filter(s) {unknown}; "
                       f"known: {sorted(EXCEPTION_FILTERS)}")
    allowed = engine.partition_capabilities.interceptable_vectors
    chosen = {EXCEPTION_FILTERS[f][0] for f in args.filters}
    results = []
    for name in args.filters:
        vector = EXCEPTION_FILTERS[name][0]
        ok = vector in allowed
        results.append(Breakpoint(verified=ok, message=None if ok else
                                  f"{session.state['platform'].name} cannot stop on "
                                  f"{EXCEPTION_FILTERS[name][1]}").dump())
    from whpx_core.debug.engine import EngineError

    try:
        engine.set_exception_stops(chosen & allowed)
    except EngineError as error:
        raise DapError(str(error)) from None
    session.state["exception_filters"] = chosen & allowed
    return {"breakpoints": results}


@capability(supportsDataBreakpoints=True, supportsDataBreakpointBytes=True)
@request("dataBreakpointInfo", DataBreakpointInfoArguments)
def data_breakpoint_info(session: Session, args: DataBreakpointInfoArguments) -> dict[str, Any]:
    """A data breakpoint on an address (`asAddress`) or on what an expression names."""
    from dap_whpx.handlers.evaluate import evaluate_int

    engine = engine_of(session)
    if not engine.partition_capabilities.hardware_watchpoints:
        return {"dataId": None, "description": f"{session.state['platform'].name}: "
                "hardware watchpoints do not fire on this platform (measured)"}
    variable = None if args.asAddress else _c_variable(session, args)
    if variable is not None:  # a C variable: its address and its type's size
        if variable.address is None:
            return {"dataId": None, "description": f"'{args.name}' is not in memory "
                    "(it lives in a register, or is optimized out here)"}
        address, size = variable.address, args.bytes or variable.size
    elif args.asAddress:
        address, _ = parse_reference(session, args.name)
        size = args.bytes or 8
    else:
        address, size = evaluate_int(session, args.name, 0), args.bytes or 8
    if size not in (1, 2, 4, 8):
        return {"dataId": None, "description": f"'{args.name}' is {size} bytes; x86 debug "
                "registers watch 1, 2, 4 or 8 bytes"}
    return {"dataId": f"{address:#x}/{size}", "description": f"{size} bytes at {address:#x}",
            "accessTypes": ["write", "readWrite"], "canPersist": False}


def _c_variable(session: Session, args: DataBreakpointInfoArguments) -> Any:
    """The DWARF value the request names: a child of a variables reference (the Variables
    view), or what the name evaluates to in the frame (a watch); None when it is no C
    variable (a register, a symbol, an address expression)."""
    from dap_whpx.handlers.source import (
        FrameRef,
        debug_info,
        evaluate_in_frame,
        frame_ref,
        symbols_lock,
    )
    from dap_whpx.handlers.stack import scope_variables

    if debug_info(session) is None:
        return None
    if args.variablesReference:
        item = session.handles.get(args.variablesReference)
        if item[0] in ("locals", "arguments", "globals"):
            found = {v.name: v.value for v in scope_variables(session, item[0], item[1])}
        elif item[0] == "value":
            with symbols_lock:
                found = dict(item[1].children())
        else:
            return None
        return found.get(args.name)
    ref = frame_ref(session, args.frameId) if args.frameId is not None else FrameRef(0, 0)
    try:
        value = evaluate_in_frame(session, args.name, ref)
    except DapError:
        return None
    if isinstance(value, int) or (value.address is None and value.register is None
                                  and not value.optimized_out):
        return None  # a number or a computed value (&x, p + 1): an address expression
    return value


@request("setDataBreakpoints", SetDataBreakpointsArguments)
@with_vm_stopped
def set_data_breakpoints(session: Session, args: SetDataBreakpointsArguments) -> dict[str, Any]:
    _remember(session, "setDataBreakpoints", args)
    wanted: list[Wanted] = []
    for bp in args.breakpoints:
        address_text, _, size_text = bp.dataId.partition("/")
        try:
            address, size = int(address_text, 0), int(size_text or "8")
        except ValueError:
            wanted.append((None, f"'{bp.dataId}' is not a dataId from dataBreakpointInfo"))
            continue
        # x86 debug registers watch writes or reads-and-writes; a read watch is both.
        kind = "write" if bp.accessType in (None, "write") else "readwrite"
        wanted.append((address, None, (kind, size)))
    return {"breakpoints": _replace(session, "data", wanted)}


HANDLERS = {
    "setBreakpoints": set_breakpoints,
    "setFunctionBreakpoints": set_function_breakpoints,
    "setInstructionBreakpoints": set_instruction_breakpoints,
    "setDataBreakpoints": set_data_breakpoints,
}
