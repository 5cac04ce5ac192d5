"""Conditional breakpoints, hit conditions and logpoints, decided inside the engine on real
guests: the guest goes on without a stop being reported, and its counters stay exact."""

from __future__ import annotations

from whpx_core.debug.engine import BreakpointOptions, HitContext
from whpx_core.debug.events import Exited, LogMessage, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf
from whpx_core.platform.registers import Reg

TIMEOUT = 120
ITERATIONS = 50


def _smp(platform, guests, cpus=2):
    image = load_elf(guests["smp"])
    engine = launch(platform, image, cpus=cpus)
    engine.write_memory(image.symbols["smp_iterations"], ITERATIONS.to_bytes(8, "little"))
    return engine, image


def _cpu_argument(context: HitContext) -> int:
    (rdi,) = context.get_registers([Reg.RDI])
    return int(rdi)


def test_condition_and_hit_condition_stop_exactly_once(platform, guests):
    engine, image = _smp(platform, guests)
    try:
        options = BreakpointOptions(condition=lambda ctx: _cpu_argument(ctx) == 1,
                                    hit_condition=lambda count: count == 25)
        bp = engine.add_breakpoint(image.symbols["smp_hit"], options)
        engine.resume()
        stop = engine.wait_stop(TIMEOUT)
        assert isinstance(stop, Stopped) and stop.reason is StopReason.BREAKPOINT
        assert stop.breakpoints == (bp.id,) and stop.vcpu == 1
        assert engine.hit_count(bp.id) == 25
        engine.resume()
        end = engine.wait_stop(TIMEOUT)
        assert isinstance(end, Exited) and end.exit_code == 0, engine.output.decode()
        assert engine.hit_count(bp.id) == ITERATIONS  # only vCPU 1's hits passed
    finally:
        engine.close()


def test_logpoint_logs_every_hit_without_a_stop(platform, guests):
    engine, image = _smp(platform, guests)
    try:
        options = BreakpointOptions(log=lambda ctx: f"cpu {_cpu_argument(ctx)}")
        bp = engine.add_breakpoint(image.symbols["smp_hit"], options)
        engine.resume()
        messages = []
        while True:
            event = engine.wait_event(TIMEOUT)
            if isinstance(event, LogMessage):
                assert event.breakpoint_id == bp.id
                messages.append(event.text)
            elif isinstance(event, Stopped | Exited):
                break
        assert isinstance(event, Exited) and event.exit_code == 0, event
        assert sorted(messages) == ["cpu 0"] * ITERATIONS + ["cpu 1"] * ITERATIONS
    finally:
        engine.close()


def test_a_condition_that_fails_to_evaluate_stops_with_the_reason(platform, guests):
    engine, image = _smp(platform, guests, cpus=1)
    try:
        def broken(_context: HitContext) -> bool:
            raise ValueError("no such variable 'j'")

        bp = engine.add_breakpoint(image.symbols["smp_hit"], BreakpointOptions(condition=broken))
        engine.resume()
        stop = engine.wait_stop(TIMEOUT)
        assert isinstance(stop, Stopped) and stop.breakpoints == (bp.id,)
        assert "no such variable 'j'" in stop.description
    finally:
        engine.close()
