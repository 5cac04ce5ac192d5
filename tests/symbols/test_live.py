"""DebugInfo on a running srcdemo guest through the real engine: breakpoints resolved from
source lines, call stacks unwound from guest memory, variables and C expressions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.symbols.conftest import SOURCE
from tests.symbols.markers import marker_line
from whpx_core.debug.engine import Engine
from whpx_core.debug.events import Exited, Stopped
from whpx_core.debug.launch import launch
from whpx_core.platform.base import Platform
from whpx_core.platform.registers import Reg
from whpx_core.symbols import DebugInfo, Frame, FrameEvalContext, Value
from whpx_core.symbols.expressions import (
    ExpressionError,
    evaluate,
    evaluate_value,
    interpolate,
)

GPRS = [Reg.RAX, Reg.RBX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.RBP, Reg.RSP, Reg.R8,
        Reg.R9, Reg.R10, Reg.R11, Reg.R12, Reg.R13, Reg.R14, Reg.R15, Reg.RIP]


class Session:
    """The engine on one srcdemo build, with the helpers the tests share."""

    def __init__(self, engine: Engine, info: DebugInfo, optimised: bool) -> None:
        self.engine = engine
        self.info = info
        self.optimised = optimised
        self.vcpu = 0

    def memory(self, address: int, size: int) -> bytes:
        return self.engine.read_memory(address, size, self.vcpu)

    def break_at(self, marker: str, source: str = SOURCE) -> list[int]:
        resolved = self.info.resolve_line(source, marker_line(source, marker))
        assert resolved is not None
        ids = [self.engine.add_breakpoint(address).id for address in resolved.addresses]
        return ids

    def clear(self, ids: list[int]) -> None:
        for breakpoint_id in ids:
            self.engine.remove_breakpoint(breakpoint_id)

    def run_to_stop(self) -> list[Frame]:
        self.engine.resume()
        event = self.engine.wait_stop(timeout=30)
        assert isinstance(event, Stopped), event
        self.vcpu = event.vcpu
        values = self.engine.get_registers(event.vcpu, GPRS)
        regs = {reg.value: value for reg, value in zip(GPRS, values, strict=True)}
        return self.info.unwind(regs, self.memory)

    def value(self, frame: Frame, name: str) -> Value:
        found = self.info.lookup_variable(frame, name, self.memory)
        assert found is not None, name
        return found.value

    def check(self, value: Value, expected: int) -> None:
        """Exact at -O0; at -O2 correct or optimized out, never wrong."""
        if value.optimized_out:
            assert self.optimised, "optimized out at -O0"
            return
        assert value.as_int() == expected

    def evaluate(self, frame: Frame, text: str) -> int | None:
        """None when a variable in it is optimized out (only allowed at -O2)."""
        try:
            return evaluate(text, FrameEvalContext(self.info, frame, self.memory))
        except ExpressionError as error:
            assert self.optimised and "optimized out" in str(error), error
            return None


@pytest.fixture
def session(platform: Platform, srcdemo, info: DebugInfo) -> Iterator[Session]:
    path, opt = srcdemo
    engine = launch(platform, Path(path), cpus=2)
    try:
        yield Session(engine, info, opt != "-O0")
    finally:
        engine.close()


def names(frames: list[Frame]) -> list[str]:
    return [frame.function.name if frame.function else hex(frame.pc) for frame in frames]


def lines(frames: list[Frame]) -> list[int | None]:
    return [frame.line.line if frame.line else None for frame in frames]


def test_three_callers_give_three_stacks(session: Session) -> None:
    ids = session.break_at("leaf_body")
    for argument, caller in enumerate(("caller_a", "caller_b", "caller_c"), start=1):
        frames = session.run_to_stop()
        assert session.vcpu == 0  # the other vCPU runs worker(), never leaf()
        assert names(frames) == ["leaf", caller, "guest_main", "_start"]
        assert lines(frames)[:3] == [marker_line(SOURCE, "leaf_body"),
                                     marker_line(SOURCE, f"{caller}_call"),
                                     marker_line(SOURCE, "main_callers")]
        session.check(session.value(frames[0], "x"), argument)
        scopes = session.info.frame_scopes(frames[0], session.memory)
        assert [variable.name for variable in scopes.arguments] == ["x"]
    session.clear(ids)


def test_conditional_breakpoint_i_equals_37(session: Session) -> None:
    ids = session.break_at("loop_body")
    matches = []
    unreadable = 0
    for hit in range(100):
        frames = session.run_to_stop()
        assert names(frames)[:2] == ["loop100", "guest_main"]
        session.check(session.value(frames[0], "i"), hit)
        result = session.evaluate(frames[0], "i == 37")
        unreadable += result is None
        logged = interpolate("i={i}", FrameEvalContext(session.info, frames[0], session.memory))
        assert logged == f"i={hit}" or (result is None and "optimized out" in logged)
        if result:
            matches.append(hit)
    # gcc 12 keeps i readable at every hit at -O2 too; another compiler may not.
    assert matches == [37] or (session.optimised and unreadable and matches == [])
    session.clear(ids)


def test_recursion_stacks(session: Session) -> None:
    ids = session.break_at("fact_test")
    for n in (5, 4, 3, 2, 1):
        frames = session.run_to_stop()
        assert names(frames).count("factorial") == 6 - n
        assert names(frames)[6 - n:] == ["guest_main", "_start"]
        for depth in range(1, 6 - n):
            assert frames[depth].line.line == marker_line(SOURCE, "fact_recurse")
        session.check(session.value(frames[0], "n"), n)
    session.clear(ids)


def test_struct_pointer_array_and_expressions(session: Session) -> None:
    ids = session.break_at("inspect_body")
    frame = session.run_to_stop()[0]
    assert frame.function.name == "inspect"
    scopes = session.info.frame_scopes(frame, session.memory)
    assert [variable.name for variable in scopes.arguments] == ["p", "count"]
    found = {variable.name: variable.value for variable in scopes.locals}
    assert {"pt", "arr", "w", "c", "op", "total"} <= found.keys()
    # pt, arr and w are passed to consume(), so they live in memory even at -O2.
    pt = found["pt"]
    assert pt.type_name == "struct point" and pt.format() == "{...}"
    assert [(name, child.format()) for name, child in pt.children()] == [
        ("x", "3"), ("y", "-4"), ("tag", "113 'q'")]
    assert [child.as_int() for _, child in found["arr"].children()] == [10, 20, 30, 40, 50]
    assert found["w"].member("u").as_int() == 0x11223344
    assert found["w"].member("bytes").index(0).as_int() == 0x44
    if not found["c"].optimized_out:
        assert found["c"].format() == "BLUE"
    if not found["op"].optimized_out:
        assert found["op"].format() == f"{session.info.symbols.address_of('add'):#x} <add>"
    p = session.value(frame, "p")
    nodes = session.info.symbols.address_of("demo_nodes")
    session.check(p, nodes)
    if not p.optimized_out:
        assert p.format() == f"{nodes:#x} <demo_nodes>"
        assert p.deref().member("value").as_int() == 7
        assert session.evaluate(frame, "p->next->value == 11") == 1
        assert session.evaluate(frame, "p->next->next->next != 0") == 0
        assert session.evaluate(frame, "p[1].value + (*p).value") == 18
        assert session.evaluate(frame, "(p + 2)->value") == 13
    assert session.evaluate(frame, "arr[count] + pt.y") in (26, None)
    assert session.evaluate(frame, "pt.tag == 'q' && arr[4] == 50") == 1
    assert session.evaluate(frame, "demo_matrix[1][2] * demo_global") == 6 * 1234
    assert session.evaluate(frame, "&demo_global") == session.info.symbols.address_of(
        "demo_global")
    assert session.evaluate(frame, "*&demo_nodes[2].value") == 13
    assert session.evaluate(frame, "(u8)demo_global") == 1234 & 0xFF
    assert session.evaluate(frame, "$rsp") == frame.regs["rsp"]
    whole = evaluate_value("demo_nodes[0]", FrameEvalContext(session.info, frame,
                                                             session.memory))
    assert isinstance(whole, Value) and whole.type_name == "struct node"
    with pytest.raises(ExpressionError, match="not a number"):
        evaluate("pt + 1", FrameEvalContext(session.info, frame, session.memory))
    with pytest.raises(ExpressionError, match="no member 'nosuch'"):
        evaluate("pt.nosuch", FrameEvalContext(session.info, frame, session.memory))
    session.clear(ids)


def test_globals(session: Session) -> None:
    ids = session.break_at("chain_4_body")
    frame = session.run_to_stop()[0]
    found = {variable.name: variable.value for variable in session.info.globals(
        session.memory)}
    assert found["demo_global"].as_int() == 1234
    assert found["demo_color"].format() == "GREEN"
    assert found["demo_name"].format() == '"srcdemo"'
    matrix = found["demo_matrix"]
    assert matrix.type_name == "int [2][3]"
    assert [[cell.as_int() for _, cell in row.children()] for _, row in matrix.children()] \
        == [[1, 2, 3], [4, 5, 6]]
    assert session.info.lookup_variable(frame, "demo_global", session.memory).kind == "global"
    session.clear(ids)


def test_call_chain_through_assembly(session: Session) -> None:
    ids = session.break_at("chain_4_body")
    frames = session.run_to_stop()
    assert names(frames) == ["chain_4", "chain_3", "demo_asm_frame", "chain_2", "chain_1",
                             "guest_main", "_start"]
    assert lines(frames)[:6] == [marker_line(SOURCE, "chain_4_body"),
                                 marker_line(SOURCE, "chain_3_call"),
                                 marker_line("srcdemo_asm.S", "asm_call"),
                                 marker_line(SOURCE, "chain_2_call"),
                                 marker_line(SOURCE, "chain_1_call"),
                                 marker_line(SOURCE, "main_chain")]
    assert frames[2].line.file.endswith("srcdemo_asm.S")
    session.check(session.value(frames[0], "x"), 5)
    # The assembly frame's rbp (recovered from chain_3's CFI, or kept when chain_3 does
    # not touch it) is its frame pointer: CFA - 16 after `push %rbp; mov %rsp, %rbp`.
    assert frames[2].regs["rbp"] == frames[2].cfa - 16
    assert frames[3].cfa > frames[2].cfa > frames[1].cfa
    session.clear(ids)


def test_unwinding_garbage_stops_cleanly(session: Session) -> None:
    def unreadable(address: int, size: int) -> bytes:
        raise OSError("no memory here")

    frames = session.info.unwind({"rip": session.info.function_named("leaf").body_start,
                                  "rsp": 0x10, "rbp": 0x20}, unreadable)
    assert len(frames) == 1 and frames[0].function.name == "leaf"
    assert session.info.unwind({"rip": 0}, unreadable) == []
    frames = session.info.unwind({"rip": 0xDEAD0000, "rsp": 0x1000, "rbp": 0x0},
                                 session.memory)
    assert len(frames) == 1 and frames[0].function is None


def test_set_variable_in_memory_changes_what_the_guest_computes(session: Session) -> None:
    ids = session.break_at("inspect_body")
    frame = session.run_to_stop()[0]
    element = session.value(frame, "arr").index(2)
    assert element.writable and element.address is not None and element.register is None
    session.engine.write_memory(element.address, element.encode(1030), session.vcpu)
    assert session.value(frame, "arr").index(2).as_int() == 1030
    session.clear(ids)
    session.engine.resume()
    event = session.engine.wait_stop(timeout=60)
    assert isinstance(event, Exited) and event.exit_code == 0, event
    output = session.engine.output.decode()
    if not session.optimised:  # 7 + 11 + arr[2] - 4 + 2 * 6 (see inspect())
        assert "inspect=1056 " in output, output
    else:  # -O2 may have loaded arr[2] before the breakpoint's address
        assert "inspect=1056 " in output or "inspect=56 " in output, output


def test_scopes_of_an_inlined_copy(session: Session) -> None:
    ids = session.break_at("scaled_body")
    frame = session.run_to_stop()[0]
    chain = session.info.inline_chain(frame.lookup_pc)
    assert chain[-1].name == "inspect"
    if chain[0].name != "scaled":
        # gcc -O2 may put the line's is_stmt row just outside the inlined copy's ranges.
        assert session.optimised
        session.clear(ids)
        return
    inner = session.info.frame_scopes(frame, session.memory, inline_depth=0)
    assert sorted(variable.name for variable in inner.arguments) == ["by", "v"]
    values = {variable.name: variable.value for variable in inner.arguments}
    session.check(values["v"], 6)  # BLUE
    session.check(values["by"], 2)
    outer = session.info.frame_scopes(frame, session.memory, inline_depth=1)
    assert [variable.name for variable in outer.arguments] == ["p", "count"]
    assert "product" not in {variable.name for variable in outer.locals}
    assert session.info.frame_scopes(frame, session.memory, inline_depth=2).arguments == []
    session.clear(ids)
