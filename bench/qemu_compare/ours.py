"""The same scenarios as gdb_driver.py, through our engine's public API (docs/engine.md)."""

from __future__ import annotations

import time
from pathlib import Path

from whpx_core.debug.engine import Engine
from whpx_core.debug.events import Exited, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf
from whpx_core.machine.vm import Machine
from whpx_core.platform.base import Platform


def _stop(engine: Engine, timeout: float = 120) -> Stopped:
    event = engine.wait_stop(timeout)
    if not isinstance(event, Stopped):
        raise RuntimeError(f"expected a stop, got {event}")
    return event


def _run_to(engine: Engine, address: int) -> None:
    """Resume to a temporary breakpoint at `address` (how gdb_driver attaches too)."""
    bp = engine.add_breakpoint(address)
    engine.resume()
    stop = _stop(engine)
    engine.remove_breakpoint(bp.id)
    if stop.rip != address:
        raise RuntimeError(f"stopped at {stop.rip:#x}, not at {address:#x}")


def steps(platform: Platform, elf: Path, count: int) -> float:
    image = load_elf(elf)
    engine = launch(platform, image)
    try:
        _run_to(engine, image.symbols["qb_leaf"])
        started = time.perf_counter()
        for _ in range(count):
            engine.step_instruction(0)
        return count / (time.perf_counter() - started)
    finally:
        engine.close()


def hits(platform: Platform, elf: Path, count: int, others: int, free_ram: int,
         cpus: int = 1) -> float:
    image = load_elf(elf)
    engine = launch(platform, image, cpus=cpus)
    try:
        for i in range(others):
            engine.add_breakpoint(free_ram + 16 * i)
        leaf = image.symbols["qb_leaf"]
        engine.add_breakpoint(leaf)
        engine.resume()
        _stop(engine)
        started = time.perf_counter()
        for _ in range(count):
            engine.resume()
            stop = _stop(engine)
            if stop.reason is not StopReason.BREAKPOINT or stop.rip != leaf:
                raise RuntimeError(f"hits: {stop}")
        return count / (time.perf_counter() - started)
    finally:
        engine.close()


def breakpoint_costs(platform: Platform, elf: Path, count: int, free_ram: int
                     ) -> dict[str, float]:
    image = load_elf(elf)
    engine = launch(platform, image)
    times: dict[str, float] = {}
    try:
        leaf = image.symbols["qb_leaf"]
        engine.add_breakpoint(leaf)
        engine.resume()
        _stop(engine)
        started = time.perf_counter()
        ids = [engine.add_breakpoint(free_ram + 16 * i).id for i in range(count)]
        times["set"] = time.perf_counter() - started
        for key in ("first resume", "resume"):
            started = time.perf_counter()
            engine.resume()
            _stop(engine)
            times[key] = time.perf_counter() - started
        started = time.perf_counter()
        for bp_id in ids:
            engine.remove_breakpoint(bp_id)
        times["remove"] = time.perf_counter() - started
        started = time.perf_counter()
        engine.resume()
        stop = _stop(engine)
        times["resume after remove"] = time.perf_counter() - started
        if stop.rip != leaf:
            raise RuntimeError(f"breakpoint costs: {stop}")
        return times
    finally:
        engine.close()


def next_over_line(platform: Platform, elf: Path, ranges: list[tuple[int, int]]
                   ) -> float:
    """Seconds for one `next` over the long line, through the engine's line stepping
    (engine.step_line over the program's DWARF)."""
    from whpx_core.debug.line_step import StepKind
    from whpx_core.debug.source_steps import DebugInfoSteps
    from whpx_core.symbols.debug_info import DebugInfo

    image = load_elf(elf)
    engine = launch(platform, image)
    try:
        _run_to(engine, ranges[0][0])
        steps = DebugInfoSteps(DebugInfo.open(elf))
        # gdb has read this line table already (to set the breakpoint on the line).
        steps.line_ranges(ranges[0][0])
        started = time.perf_counter()
        engine.step_line(0, StepKind.OVER, steps)
        stop = engine.wait_stop(1200)
        elapsed = time.perf_counter() - started
        if not isinstance(stop, Stopped) or any(lo <= stop.rip < hi for lo, hi in ranges):
            raise RuntimeError(f"next over the long line ended with {stop}")
        return elapsed
    finally:
        engine.close()


def run_alone(platform: Platform, elf: Path) -> float:
    """Seconds the guest runs with no debugger (loading not counted)."""
    machine = Machine(platform, cpus=1, memory_mib=64)
    try:
        machine.load(load_elf(elf))
        started = time.perf_counter()
        result = machine.run()
        elapsed = time.perf_counter() - started
    finally:
        machine.close()
    if result.exit_code != 0:
        raise RuntimeError(f"qbench ended with {result}")
    return elapsed


def run_attached(platform: Platform, elf: Path) -> float:
    """Seconds the guest runs under the engine with a breakpoint set that is never hit."""
    image = load_elf(elf)
    engine = launch(platform, image)
    try:
        engine.add_breakpoint(image.symbols["qb_never"])
        started = time.perf_counter()
        engine.resume()
        event = engine.wait_stop(600)
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    if not isinstance(event, Exited) or event.exit_code != 0:
        raise RuntimeError(f"qbench under the engine ended with {event}")
    return elapsed


def pushf_image(platform: Platform, elf: Path) -> int:
    """The RFLAGS image the guest stored after we stepped its pushf probe."""
    image = load_elf(elf)
    engine = launch(platform, image)
    try:
        _run_to(engine, image.symbols["qb_pushf_probe"])
        for _ in range(3):  # pushfq; popq %rax; movq %rax, qb_pushf_image
            engine.step_instruction(0)
        raw = engine.read_memory(image.symbols["qb_pushf_image"], 8)
        return int.from_bytes(raw, "little")
    finally:
        engine.close()
