"""stackTrace, scopes, variables, setVariable: frames unwound from DWARF CFI, with
Locals / Arguments / Globals scopes from DWARF and a Registers scope per frame."""

from __future__ import annotations

from typing import Any

from dap_whpx.handlers.common import engine_of, hex_address, vcpu_of
from dap_whpx.handlers.source import (
    FrameRef,
    debug_info,
    evaluate_in_frame,
    frame_ref,
    frames,
    reader,
    source_of,
    symbols_lock,
)
from dap_whpx.protocol.messages import (
    Scope,
    ScopesArguments,
    SetVariableArguments,
    Source,
    StackFrame,
    StackTraceArguments,
    Variable,
    VariablesArguments,
)
from dap_whpx.session import DapError, Session, capability, request
from whpx_core.platform.registers import (
    CONTROL_REGS,
    DEBUG_REGS,
    GENERAL_REGS,
    SEGMENT_REGS,
    TABLE_REGS,
    Reg,
    Segment,
    Table,
)

FLAGS = [("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
         ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18),
         ("VIF", 19), ("VIP", 20), ("ID", 21)]
_BY_NAME = {reg.name: reg for reg in Reg}


@request("stackTrace", StackTraceArguments)
def stack_trace(session: Session, args: StackTraceArguments) -> dict[str, Any]:
    """Frames unwound with CFI (frame pointers where there is none): a source line where
    the DWARF has one, symbol+offset otherwise, and always the instruction pointer."""
    engine = engine_of(session)
    vcpu = vcpu_of(session, args.threadId)
    if engine.running:
        raise DapError("the program is running; pause it to see its stack")
    found = frames(session, vcpu)
    end = len(found) if not args.levels else min(len(found), args.startFrame + args.levels)
    out = []
    for index in range(args.startFrame, end):
        frame = found[index]
        ref = session.handles.add(FrameRef(vcpu, index))
        out.append(_stack_frame(session, ref, frame, vcpu).dump())
    return {"stackFrames": out, "totalFrames": len(found)}


def _stack_frame(session: Session, ref: int, frame: Any, vcpu: int) -> StackFrame:
    symbols = session.state["symbols"]
    name = frame.function.name if frame.function is not None else \
        symbols.describe(frame.lookup_pc if frame.index else frame.pc)
    if frame.index == 0 and engine_of(session).is_halted(vcpu):
        name += " (halted)"
    line = frame.line
    if line is None:
        return StackFrame(id=ref, name=name, line=0, column=0,
                          instructionPointerReference=hex_address(frame.pc),
                          presentationHint="subtle" if frame.index else None)
    return StackFrame(id=ref, name=name, source=Source(**source_of(line.file)),
                      line=line.line, column=max(line.column, 1),
                      instructionPointerReference=hex_address(frame.pc))


@request("scopes", ScopesArguments)
def scopes(session: Session, args: ScopesArguments) -> dict[str, Any]:
    ref = frame_ref(session, args.frameId)
    out = []
    if debug_info(session) is not None:
        function = frames(session, ref.vcpu)[ref.index].function
        in_c = function is not None and function.from_dwarf
        for name, hint, kind, expensive in (("Locals", "locals", "locals", False),
                                            ("Arguments", "arguments", "arguments", False),
                                            ("Globals", None, "globals", True)):
            if kind != "globals" and not in_c:
                continue  # assembly: no DWARF function, no locals
            handle = session.handles.add((kind, ref))
            out.append(Scope(name=name, presentationHint=hint, variablesReference=handle,
                             expensive=expensive).dump())
    if ref.index == 0:
        handle = session.handles.add(("registers", ref.vcpu))
    else:
        handle = session.handles.add(("unwound", ref))
    out.append(Scope(name="Registers", presentationHint="registers",
                     variablesReference=handle).dump())
    return {"scopes": out}


def _u64(value: int) -> str:
    return f"{value:#018x}"


def _segment_text(segment: Segment) -> str:
    return f"{segment.selector:#06x} (base {segment.base:#x}, limit {segment.limit:#x}, " \
           f"attributes {segment.attributes:#06x})"


def _register_variables(session: Session, vcpu: int) -> list[dict[str, Any]]:
    engine = engine_of(session)
    names = [*GENERAL_REGS, Reg.RIP, Reg.RFLAGS, *SEGMENT_REGS, *CONTROL_REGS,
             *TABLE_REGS, *DEBUG_REGS]
    values = engine.get_registers(vcpu, names)
    out = []
    for reg, value in zip(names, values, strict=True):
        label = reg.name
        if isinstance(value, Segment):
            ref = session.handles.add(("segment", vcpu, reg))
            out.append(Variable(name=label, value=_segment_text(value), type="segment",
                                variablesReference=ref).dump())
        elif isinstance(value, Table):
            out.append(Variable(name=label, value=f"base {value.base:#x}, limit "
                                f"{value.limit:#x}", type="descriptor table").dump())
        elif reg is Reg.RFLAGS:
            set_flags = " ".join(n for n, bit in FLAGS if value >> bit & 1)
            ref = session.handles.add(("rflags", vcpu))
            out.append(Variable(name=label, value=f"{value:#x} [{set_flags}]", type="u64",
                                variablesReference=ref, evaluateName="rflags").dump())
        else:
            out.append(Variable(name=label, value=_u64(value), type="u64",
                                evaluateName=reg.name.lower(),
                                memoryReference=hex_address(value)).dump())
    return out


@request("variables", VariablesArguments)
def variables(session: Session, args: VariablesArguments) -> dict[str, Any]:
    item = session.handles.get(args.variablesReference)
    engine = engine_of(session)
    match item:
        case (("locals" | "arguments" | "globals") as kind, FrameRef() as ref):
            found = [variable_body(session, v.name, v.value, v.name, ref)
                     for v in scope_variables(session, kind, ref)]
        case ("value", value, path, ref):
            with symbols_lock:
                children = value.children()
            found = [variable_body(session, name, child, _child_path(path, name), ref)
                     for name, child in children]
        case ("unwound", FrameRef() as ref):
            regs = frames(session, ref.vcpu)[ref.index].regs
            found = [Variable(name=name.upper(), value=_u64(value), type="u64",
                              memoryReference=hex_address(value)).dump()
                     for name, value in regs.items()]
        case ("registers", vcpu):
            found = _register_variables(session, vcpu)
        case ("rflags", vcpu):
            value = engine.get_registers(vcpu, [Reg.RFLAGS])[0]
            found = [Variable(name=name, value=str(value >> bit & 1), type="bit").dump()
                     for name, bit in FLAGS]
            found.append(Variable(name="IOPL", value=str(value >> 12 & 3), type="u2").dump())
        case ("segment", vcpu, reg):
            segment = engine.get_registers(vcpu, [reg])[0]
            found = [Variable(name=n, value=f"{v:#x}", type="u64").dump() for n, v in (
                ("selector", segment.selector), ("base", segment.base),
                ("limit", segment.limit), ("attributes", segment.attributes),
                ("dpl", segment.dpl))]
        case _:
            raise DapError("not a variables reference of this adapter")
    if args.count:
        found = found[args.start : args.start + args.count]
    return {"variables": found}


@capability(supportsSetVariable=True)
@request("setVariable", SetVariableArguments)
def set_variable(session: Session, args: SetVariableArguments) -> dict[str, Any]:
    from dap_whpx.handlers.evaluate import evaluate_int

    item = session.handles.get(args.variablesReference)
    engine = engine_of(session)
    if item[0] in ("locals", "arguments", "globals", "value"):
        return _set_c_variable(session, item, args)
    if item[0] == "unwound":
        raise DapError("registers of outer frames are shown as unwound; set registers in "
                       "the innermost frame")
    vcpu = item[1]
    value = evaluate_int(session, args.value, vcpu)
    match item:
        case ("registers", _):
            reg = _BY_NAME.get(args.name)
            if reg is None or reg in SEGMENT_REGS or reg in TABLE_REGS:
                raise DapError(f"register {args.name} cannot be set here")
            engine.set_registers(vcpu, {reg: value & (1 << 64) - 1})
            shown = _u64(value & (1 << 64) - 1)
        case ("rflags", _):
            bits = dict(FLAGS)
            if args.name not in bits or value not in (0, 1):
                raise DapError(f"{args.name}: flags take 0 or 1")
            flags = engine.get_registers(vcpu, [Reg.RFLAGS])[0]
            flags = flags | 1 << bits[args.name] if value else flags & ~(1 << bits[args.name])
            engine.set_registers(vcpu, {Reg.RFLAGS: flags})
            shown = str(value)
        case _:
            raise DapError("this variable cannot be set")
    session.handles.cache.clear()  # unwound frames depend on the registers
    session.after_response(lambda: session.event("invalidated", {"areas": ["variables"]}))
    return {"value": shown}


# -- C variables -------------------------------------------------------------------------
def scope_variables(session: Session, kind: str, ref: FrameRef) -> list[Any]:
    info = debug_info(session)
    assert info is not None
    frame = frames(session, ref.vcpu)[ref.index]
    read = reader(session, ref.vcpu)
    with symbols_lock:
        if kind == "globals":
            return info.globals(read)
        found = info.frame_scopes(frame, read)
    return found.locals if kind == "locals" else found.arguments


def _child_path(parent: str, name: str) -> str:
    if name.startswith("["):
        return f"{parent}{name}"
    if name.startswith("*"):
        return f"*{parent}"
    return f"({parent}).{name}" if parent.startswith("*") else f"{parent}.{name}"


def variable_body(session: Session, name: str, value: Any, path: str,
              ref: FrameRef) -> dict[str, Any]:
    with symbols_lock:
        shown = value.format()
        expandable = value.has_children
        type_name = value.type_name
    handle = session.handles.add(("value", value, path, ref)) if expandable else 0
    memory = hex_address(value.address) if value.address is not None else None
    return Variable(name=name, value=shown, type=type_name, variablesReference=handle,
                    evaluateName=path, memoryReference=memory).dump()


def _set_c_variable(session: Session, item: Any, args: SetVariableArguments) -> dict[str, Any]:
    """A scalar C variable: written where it lives (memory, or a register of frame 0)."""
    engine = engine_of(session)
    if item[0] == "value":
        _, parent, _path, ref = item
        with symbols_lock:
            children = dict(parent.children())
        target = children.get(args.name)
    else:
        ref = item[1]
        target = next((v.value for v in scope_variables(session, item[0], ref)
                       if v.name == args.name), None)
    if target is None:
        raise DapError(f"there is no variable '{args.name}' here")
    if not target.writable:
        raise DapError(f"'{args.name}' cannot be set: it is optimized out or has no "
                       f"single location")
    number = evaluate_in_frame(session, args.value, ref)
    if not isinstance(number, int):
        with symbols_lock:
            number = number.as_int()
    with symbols_lock:
        data = target.encode(number)
    if target.address is not None:
        engine.write_memory(target.address, data, ref.vcpu)
    else:
        if ref.index != 0:
            raise DapError(f"'{args.name}' lives in a register of an outer frame; set it "
                           f"in the innermost frame")
        reg = _BY_NAME.get(target.register.upper())
        if reg is None:
            raise DapError(f"'{args.name}' lives in {target.register}, which cannot be set")
        old = engine.get_registers(ref.vcpu, [reg])[0]
        mask = (1 << 8 * len(data)) - 1
        engine.set_registers(ref.vcpu, {reg: old & ~mask | int.from_bytes(data, "little")})
    session.handles.cache.clear()
    target.data = None
    with symbols_lock:
        shown = target.format()
    session.after_response(lambda: session.event("invalidated", {"areas": ["variables"]}))
    return {"value": shown}
