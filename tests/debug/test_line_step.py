"""Source-line next / stepIn / stepOut inside the engine, on the srcdemo guest (real guest
code, real DWARF), on every platform present."""

from __future__ import annotations

import pytest

from tests.guests import build
from whpx_core.debug.engine import Engine
from whpx_core.debug.events import Exited, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.debug.line_step import StepKind
from whpx_core.debug.source_steps import DebugInfoSteps
from whpx_core.platform.registers import Reg
from whpx_core.symbols.debug_info import DebugInfo

TIMEOUT = 120
SOURCE = build.GUEST_DIR / "srcdemo.c"


def marker(name: str) -> int:
    for number, text in enumerate(SOURCE.read_text().splitlines(), 1):
        if f"LINE:{name} " in text or text.rstrip().endswith(f"LINE:{name} */"):
            return number
    raise KeyError(name)


@pytest.fixture(scope="module", params=[("-O0", 5), ("-O2", 4)], ids=["O0-dwarf5", "O2-dwarf4"])
def srcdemo(request, tmp_path_factory):
    opt, dwarf = request.param
    path = build.build_guest("srcdemo", tmp_path_factory.mktemp("srcdemo"), opt=opt, dwarf=dwarf)
    return path, DebugInfo.open(path), opt


class Session:
    def __init__(self, platform, srcdemo, cpus: int = 2) -> None:
        path, self.info, self.opt = srcdemo
        self.steps = DebugInfoSteps(self.info)
        self.engine: Engine = launch(platform, path, cpus=cpus)

    def line_of(self, rip: int) -> int:
        line = self.info.line_for_address(rip)
        assert line is not None, f"no line at {rip:#x}"
        return line.line

    def function_of(self, rip: int) -> str:
        function = self.info.function_at(rip)
        assert function is not None
        return function.name

    def run_to_line(self, name: str) -> Stopped:
        resolved = self.info.resolve_line(str(SOURCE), marker(name))
        assert resolved is not None
        bps = [self.engine.add_breakpoint(a) for a in resolved.addresses]
        self.engine.resume()
        stop = self.engine.wait_stop(TIMEOUT)
        for bp in bps:
            self.engine.remove_breakpoint(bp.id)
        assert isinstance(stop, Stopped) and stop.reason is StopReason.BREAKPOINT, stop
        return stop

    def step(self, kind: StepKind, vcpu: int = 0, **kwargs) -> Stopped:
        self.engine.step_line(vcpu, kind, self.steps, **kwargs)
        stop = self.engine.wait_stop(TIMEOUT)
        assert isinstance(stop, Stopped), stop
        return stop

    def cfa(self, vcpu: int = 0) -> int | None:
        regs = self.engine.frame_registers(vcpu)
        return self.steps.frame_cfa(regs, lambda a, n: self.engine.read_memory(a, n, vcpu))

    def finish(self) -> None:
        self.engine.resume()
        end = self.engine.wait_stop(TIMEOUT)
        assert isinstance(end, Exited) and end.exit_code == 0, (end, self.engine.output)
        assert b"srcdemo: calls=" in self.engine.output

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def session(platform, srcdemo):
    made = Session(platform, srcdemo)
    yield made
    made.close()


def test_next_steps_over_the_call_to_the_following_line(session):
    stop = session.run_to_line("step_call")
    cfa = session.cfa()
    stop = session.step(StepKind.OVER)
    assert stop.reason is StopReason.STEP and stop.vcpu == 0
    assert session.function_of(stop.rip) == "step_demo"
    assert session.line_of(stop.rip) == marker("step_after")
    assert session.cfa() == cfa
    session.finish()


def test_step_in_stops_after_the_callee_prologue(session):
    session.run_to_line("step_call")
    stop = session.step(StepKind.INTO)
    assert session.function_of(stop.rip) == "step_callee"
    assert stop.rip == session.info.function_named("step_callee").body_start
    # stepOut returns to the caller at the return address: the middle of the call's line,
    # or (at -O2, where the call ends its line) the start of the next one
    stop = session.step(StepKind.OUT)
    assert session.function_of(stop.rip) == "step_demo"
    assert session.engine.read_memory(stop.rip - 5, 1) == b"\xe8"  # just after the call
    assert session.line_of(stop.rip) in (marker("step_call"), marker("step_after"))
    session.finish()


def test_next_over_a_recursive_call_stays_in_the_same_frame(session):
    session.run_to_line("fact_recurse")  # the outermost call, n == 5
    cfa = session.cfa()
    stop = session.step(StepKind.OVER)
    assert session.function_of(stop.rip) == "factorial"
    assert session.cfa() == cfa, "next stopped in a deeper recursive frame"
    assert session.line_of(stop.rip) == marker("fact_after")
    session.finish()


def test_next_over_a_line_that_loops_100000_times(session):
    session.run_to_line("hot_loop")
    seen = set()
    for _ in range(4):  # the first next may land mid-loop on optimised code
        stop = session.step(StepKind.OVER)
        seen.add(session.line_of(stop.rip))
        if marker("hot_after") in seen:
            break
    assert marker("hot_after") in seen
    session.finish()


def test_a_breakpoint_hit_during_next_is_reported_and_ends_the_step(session):
    session.run_to_line("main_callers")
    leaf = session.info.resolve_line(str(SOURCE), marker("leaf_body"))
    bp = session.engine.add_breakpoint(leaf.addresses[0])
    stop = session.step(StepKind.OVER)
    assert stop.reason is StopReason.BREAKPOINT and stop.breakpoints == (bp.id,)
    session.engine.remove_breakpoint(bp.id)
    engine = session.engine
    frames = session.info.unwind(engine.frame_registers(0),
                                 engine.read_memory, max_frames=2)
    stop = session.step(StepKind.OUT)
    # caller_a (or, where the compiler made leaf a tail call, caller_a's caller)
    assert frames[1].function.name in ("caller_a", "guest_main")
    assert stop.rip == frames[1].pc
    assert session.function_of(stop.rip) == frames[1].function.name
    session.finish()


def test_single_thread_next_leaves_the_other_vcpu_where_it_was(session):
    session.run_to_line("step_call")
    (other_before,) = session.engine.get_registers(1, [Reg.RIP])
    session.step(StepKind.OVER, single_thread=True)
    (other_after,) = session.engine.get_registers(1, [Reg.RIP])
    assert other_after == other_before
    session.finish()


def test_another_vcpus_breakpoint_during_next_is_reported_and_ends_the_step(session):
    session.run_to_line("hot_loop")  # a long line: vCPU 1 surely runs during the next
    resolved = session.info.resolve_line(str(SOURCE), marker("worker_wait"))
    # every block of the loop's line: the first is the jump into the loop, run once
    starts = {lo for a in resolved.addresses for lo, _ in session.info.line_ranges(a)}
    bps = [session.engine.add_breakpoint(a) for a in sorted(starts)]
    stop = session.step(StepKind.OVER)  # vCPU 1 spins in worker(): it hits meanwhile
    assert stop.reason is StopReason.BREAKPOINT and stop.vcpu == 1
    assert set(stop.breakpoints) <= {bp.id for bp in bps}
    for bp in bps:
        session.engine.remove_breakpoint(bp.id)
    # the abandoned step left no temporary breakpoint behind: the guest runs to its end
    assert not any("line-step" in entry.owners for entry in session.engine.table)
    session.finish()
