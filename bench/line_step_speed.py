"""`next` over one source line that loops N times (srcdemo's hot_line), per platform.

    python bench/line_step_speed.py [--quick] [--iterations N]

Three ways over the same line in the same run:
- the guest's own run time for the loop: a breakpoint after the line, continue to it
  from a breakpoint on it (the baseline);
- `next` (engine.step_line): temporary breakpoints at the line's exits, the loop runs at
  guest speed (line_step.py);
- instruction stepping through it, as a debugger without range stepping does (measured
  over a sample of steps and extrapolated to the loop's instruction count).
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, platforms_present, repeat, save

from whpx_core.debug.events import Stopped
from whpx_core.debug.launch import launch
from whpx_core.debug.line_step import StepKind
from whpx_core.debug.source_steps import DebugInfoSteps
from whpx_core.machine.elf_loader import load_elf
from whpx_core.symbols.debug_info import DebugInfo

SAMPLE_STEPS = 2_000


def _start(platform, path, info, iterations: int):
    image = load_elf(path)
    engine = launch(platform, image)
    engine.write_memory(image.symbols["demo_hot_count"], iterations.to_bytes(8, "little"))
    source = str(ROOT / "tests" / "guests" / "srcdemo.c")
    from tests.symbols.markers import marker_line

    at = info.resolve_line(source, marker_line("srcdemo.c", "hot_loop")).addresses
    after = info.resolve_line(source, marker_line("srcdemo.c", "hot_after")).addresses
    first = [engine.add_breakpoint(a) for a in at]
    engine.resume()
    stop = engine.wait_stop(120)
    assert isinstance(stop, Stopped), stop
    for bp in first:
        engine.remove_breakpoint(bp.id)
    return engine, after


def free_run(platform, path, info, iterations: int) -> float:
    engine, after = _start(platform, path, info, iterations)
    try:
        for address in after:
            engine.add_breakpoint(address)
        started = time.perf_counter()
        engine.resume()
        stop = engine.wait_stop(600)
        elapsed = time.perf_counter() - started
        assert isinstance(stop, Stopped), stop
    finally:
        engine.close()
    return elapsed


def line_next(platform, path, info, iterations: int) -> float:
    engine, _ = _start(platform, path, info, iterations)
    steps = DebugInfoSteps(info)
    hot_after = ROOT / "tests" / "guests" / "srcdemo.c"
    try:
        started = time.perf_counter()
        while True:  # optimised code may need more than one next to leave the line
            engine.step_line(0, StepKind.OVER, steps)
            stop = engine.wait_stop(600)
            assert isinstance(stop, Stopped), stop
            line = info.line_for_address(stop.rip)
            if line is None or line.file != str(hot_after) or \
                    "hot_loop" not in hot_after.read_text().splitlines()[line.line - 1]:
                break
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    return elapsed


def instruction_stepping(platform, path, info, iterations: int) -> tuple[float, int]:
    """(extrapolated seconds, instructions the loop executes): a sample of steps times
    the loop's instruction count (its period in the sampled RIPs x iterations)."""
    engine, _ = _start(platform, path, info, iterations)
    try:
        rips = []
        started = time.perf_counter()
        for _ in range(SAMPLE_STEPS):
            rips.append(engine.step_instruction(0).rip)
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    seen: dict[int, int] = {}
    period = 0
    for index, rip in enumerate(rips[SAMPLE_STEPS // 2:]):  # well inside the loop
        if rip in seen:
            period = index - seen[rip]
            break
        seen[rip] = index
    total = period * iterations
    return elapsed / SAMPLE_STEPS * total, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100_000)
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    iterations = 2_000 if args.quick else args.iterations
    from tests.guests import build

    results: dict[str, dict] = {}
    for opt in ("-O0", "-O2"):
        path = build.build_guest("srcdemo", ROOT / "build" / "guests", opt=opt, dwarf=5)
        info = DebugInfo.open(path)
        for name, platform in platforms_present().items():
            if isinstance(platform, str):
                print(f"{name}: skipped: {platform}")
                continue
            n = iterations if name == "emulated" else max(iterations // 20, 1_000)
            free = repeat(lambda p=platform, n=n, f=path, i=info: free_run(p, f, i, n), runs)
            stepped = repeat(lambda p=platform, n=n, f=path, i=info: line_next(p, f, i, n), runs)
            estimate, instructions = instruction_stepping(platform, path, info, n)
            row = {"iterations": n, "guest run time s": free, "next s": stepped,
                   "instruction stepping s (extrapolated)": estimate,
                   "loop instructions": instructions,
                   "next / guest run time": stepped["median"] / free["median"],
                   "instruction stepping / next": estimate / stepped["median"]}
            results[f"{name} {opt}"] = row
            print(f"{name} {opt}: {n:,} iterations: next {stepped['median'] * 1000:.1f} ms "
                  f"(guest alone {free['median'] * 1000:.1f} ms, ratio "
                  f"{row['next / guest run time']:.2f}); instruction stepping would take "
                  f"{estimate:.1f} s ({row['instruction stepping / next']:.0f}x next)")
    if not args.quick:
        print(f"saved {save('line_step_speed', {'results': results})}")


if __name__ == "__main__":
    main()
