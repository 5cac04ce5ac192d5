"""Debug engine speed through its public API, per platform present.

    python bench/engine_speed.py [--quick]

- instruction steps per second (step_instruction on the spin loop);
- breakpoint hits per second (resume -> hit -> resume on a breakpoint in the loop),
  alone and with 1,000 other breakpoints planted in unused RAM;
- the cost of setting, resuming with, and removing N breakpoints (N = 10, 1,000, 10,000);
- on the emulated platform, steps and hits again without the C slice, and hits without
  the engine keeping its threads on one CPU: what each of the two brings.

The baseline in the same run is the platform running the same loop with no debugger
(instructions per second), so every number can be read as a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

from common import build_guest, platforms_present, repeat, save

from whpx_core.debug.events import Exited, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf

FREE_RAM = 0x0200_0000  # 32 MiB: above the spin guest, below the stacks in 64 MiB


def _engine(platform, image, iterations: int):
    engine = launch(platform, image)
    engine.write_memory(image.symbols["spin_iterations"], iterations.to_bytes(8, "little"))
    return engine


def steps_per_second(platform, image, steps: int) -> float:
    engine = _engine(platform, image, 1 << 40)
    try:
        started = time.perf_counter()
        for _ in range(steps):
            engine.step_instruction(0)
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    return steps / elapsed


def hits_per_second(platform, image, hits: int, others: int) -> float:
    engine = _engine(platform, image, 1 << 40)
    try:
        for i in range(others):
            engine.add_breakpoint(FREE_RAM + 16 * i)
        engine.add_breakpoint(image.symbols["spin_loop"])
        engine.resume()
        engine.wait_stop(60)
        started = time.perf_counter()
        for _ in range(hits):
            engine.resume()
            event = engine.wait_stop(60)
            assert not isinstance(event, Exited) and event.reason is StopReason.BREAKPOINT
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    return hits / elapsed


def breakpoint_costs(platform, image, count: int) -> dict[str, float]:
    """Seconds to set `count` breakpoints, to resume with them (to the next stop), and
    to remove them."""
    engine = _engine(platform, image, 1 << 40)
    try:
        engine.add_breakpoint(image.symbols["spin_loop"])
        engine.resume()
        engine.wait_stop(60)
        started = time.perf_counter()
        ids = [engine.add_breakpoint(FREE_RAM + 16 * i).id for i in range(count)]
        set_time = time.perf_counter() - started
        started = time.perf_counter()
        engine.resume()  # first resume plants them all for the first time
        engine.wait_stop(60)
        first_resume = time.perf_counter() - started
        started = time.perf_counter()
        engine.resume()
        engine.wait_stop(60)
        resume = time.perf_counter() - started
        started = time.perf_counter()
        for bp_id in ids:
            engine.remove_breakpoint(bp_id)
        remove_time = time.perf_counter() - started
        started = time.perf_counter()
        engine.resume()  # removal takes the bytes out for good here
        engine.wait_stop(60)
        resume_after_remove = time.perf_counter() - started
    finally:
        engine.close()
    return {"set": set_time, "first resume": first_resume, "resume": resume,
            "remove": remove_time, "resume after remove": resume_after_remove}


@contextlib.contextmanager
def _python_slice() -> Iterator[None]:
    """Emulated vCPUs made meanwhile run without the C slice (platform/emulated/native)."""
    from whpx_core.platform.emulated import native

    load = native.load
    native.load = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        native.load = load  # type: ignore[assignment]


@contextlib.contextmanager
def _threads_not_pinned() -> Iterator[None]:
    """Engines made meanwhile leave their threads where the OS puts them (affinity.py)."""
    before = os.environ.get("WHPX_PIN_THREADS")
    os.environ["WHPX_PIN_THREADS"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["WHPX_PIN_THREADS"]
        else:
            os.environ["WHPX_PIN_THREADS"] = before


def guest_speed(platform, image, iterations: int) -> float:
    from whpx_core.machine.vm import Machine

    machine = Machine(platform, cpus=1, memory_mib=64)
    machine.load(image)
    machine.partition.write_memory(image.symbols["spin_iterations"],
                                   iterations.to_bytes(8, "little"))
    started = time.perf_counter()
    machine.run()
    elapsed = time.perf_counter() - started
    machine.close()
    return 2 * iterations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    image = load_elf(build_guest("spin"))
    results: dict[str, dict] = {}
    for name, platform in platforms_present().items():
        if isinstance(platform, str):
            print(f"{name}: skipped: {platform}")
            continue
        slow = name != "emulated"
        steps = 200 if args.quick else (2_000 if slow else 20_000)
        hits = 50 if args.quick else (300 if slow else 3_000)
        sizes = (10, 100) if args.quick else (10, 1_000, 10_000)
        guest_iterations = 200_000 if slow else 5_000_000
        row: dict[str, object] = {
            "guest instructions/s without debugger": repeat(
                lambda p=platform, n=guest_iterations: guest_speed(p, image, n), runs),
            "instruction steps/s": repeat(
                lambda p=platform, n=steps: steps_per_second(p, image, n), runs),
            "breakpoint hits/s": repeat(
                lambda p=platform, n=hits: hits_per_second(p, image, n, 0), runs),
            "breakpoint hits/s with 1,000 others": repeat(
                lambda p=platform, n=hits: hits_per_second(p, image, n, 1_000), runs),
        }
        if name == "emulated":
            # What the C slice and the thread pinning each bring, measured in this run.
            with _python_slice():
                row["instruction steps/s, pure-Python slice"] = repeat(
                    lambda p=platform, n=steps: steps_per_second(p, image, n), runs)
                row["breakpoint hits/s, pure-Python slice"] = repeat(
                    lambda p=platform, n=hits: hits_per_second(p, image, n, 0), runs)
            with _threads_not_pinned():
                row["breakpoint hits/s, threads not pinned"] = repeat(
                    lambda p=platform, n=hits: hits_per_second(p, image, n, 0), runs)
        for count in sizes:
            costs = [breakpoint_costs(platform, image, count) for _ in range(runs)]
            row[f"{count} breakpoints (s)"] = {
                key: sorted(c[key] for c in costs)[len(costs) // 2] for key in costs[0]}
        results[name] = row
        print(f"== {name}: {platform.describe()}")
        for key, value in row.items():
            if "median" in value:
                print(f"  {key:42} {value['median']:14,.0f}  (min {value['min']:,.0f}, "
                      f"max {value['max']:,.0f})")
            else:
                cells = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in value.items())
                print(f"  {key:42} {cells}")
    if not args.quick:
        print(f"saved {save('engine_speed', results)}")


if __name__ == "__main__":
    main()
