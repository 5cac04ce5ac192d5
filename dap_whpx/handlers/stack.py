"""stackTrace, scopes, variables, setVariable: a Registers scope per vCPU.

Until DWARF unwinding lands, each thread has one frame: RIP as symbol+offset with an
instructionPointerReference, so the client can open the disassembly there.
"""

from __future__ import annotations

from typing import Any

from dap_whpx.handlers.common import engine_of, hex_address, vcpu_of
from dap_whpx.protocol.messages import (
    Scope,
    ScopesArguments,
    SetVariableArguments,
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


def frame_vcpu(session: Session, frame_id: int) -> int:
    return vcpu_of(session, frame_id)  # one frame per thread: frameId == threadId


@request("stackTrace", StackTraceArguments)
def stack_trace(session: Session, args: StackTraceArguments) -> dict[str, Any]:
    engine = engine_of(session)
    vcpu = vcpu_of(session, args.threadId)
    if engine.running:
        raise DapError("the program is running; pause it to see its stack")
    rip = engine.get_registers(vcpu, [Reg.RIP])[0]
    assert isinstance(rip, int)
    name = session.state["symbols"].describe(rip)
    if engine.is_halted(vcpu):
        name += " (halted)"
    frames = [StackFrame(id=args.threadId, name=name, line=0, column=0,
                         instructionPointerReference=hex_address(rip)).dump()]
    return {"stackFrames": frames[args.startFrame:], "totalFrames": 1}


@request("scopes", ScopesArguments)
def scopes(session: Session, args: ScopesArguments) -> dict[str, Any]:
    vcpu = frame_vcpu(session, args.frameId)
    ref = session.handles.add(("registers", vcpu))
    return {"scopes": [Scope(name="Registers", presentationHint="registers",
                             variablesReference=ref).dump()]}


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
    session.after_response(lambda: session.event("invalidated", {"areas": ["variables"]}))
    return {"value": shown}
