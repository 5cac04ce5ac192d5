"""Ours against QEMU + gdb on the same guest ELF, in the same run (issue 9).

    python bench/vs_qemu.py [--quick] [--runs N]

The guest is tests/guests/qbench.c, booted by our VMM in long mode and by QEMU's `-kernel`
through its multiboot header (tests/guests/multiboot.S). Ours is the engine API on every
platform present (emulated; kvm, which is kvm_pvm here); theirs is Debian's QEMU with TCG
and with -accel kvm, its gdbstub on loopback, driven by Debian's gdb through its Python API
(bench/qemu_compare/gdb_driver.py). Like is compared with like: emulated against TCG, kvm
against QEMU's kvm. Writes bench/results/vs_qemu.{json,md,png} (--quick: only with --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import RESULTS, platforms_present
from qemu_compare import guest, ours, peer, report
from qemu_compare.plan import FULL, HUGE, QUICK, Sizes

Cell = dict[str, object]


def spread(values: list[float]) -> Cell:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "runs": len(values)}


def measure(fn: Callable[[], float], runs: int) -> Cell:
    try:
        return spread([fn() for _ in range(runs)])
    except Exception as error:  # one broken cell must not lose the rest of a long run
        print(f"    failed: {error}", file=sys.stderr)
        return {"failed": str(error)[:300]}


def measure_pair(first: Callable[[], float], second: Callable[[], float], runs: int
                 ) -> tuple[Cell, Cell]:
    """Alternating runs, so that load from other users of the machine falls on both."""
    try:
        pairs = [(first(), second()) for _ in range(runs)]
    except Exception as error:
        print(f"    failed: {error}", file=sys.stderr)
        return {"failed": str(error)[:300]}, {"failed": str(error)[:300]}
    return spread([a for a, _ in pairs]), spread([b for _, b in pairs])


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def ours_rows(name: str, platform, elf: Path, sizes: Sizes, table: dict) -> None:
    fast = name == "emulated"
    system = f"ours {name}"
    hot = guest.patched(elf, {"qb_hot_iterations": HUGE})
    line = guest.patched(elf, {"qb_hot_iterations": 0,
                               "qb_line_iterations": sizes.line_iterations})
    runs, free = sizes.runs, guest.FREE_RAM
    steps = sizes.steps_fast if fast else sizes.steps_slow
    log(f"{system}: steps, hits")
    # Ten times gdb's count: ours is that much faster, and each run should last long
    # enough to be measured.
    table["instruction steps/s"][system] = measure(
        lambda: ours.steps(platform, hot, steps * 10), runs)
    table["breakpoint hits/s"][system] = measure(
        lambda: ours.hits(platform, hot, sizes.hits, 0, free), runs)
    table[f"breakpoint hits/s with {sizes.others:,} others"][system] = measure(
        lambda: ours.hits(platform, hot, sizes.hits, sizes.others, free), runs)
    table["breakpoint hits/s, 2 vCPUs"][system] = measure(
        lambda: ours.hits(platform, hot, sizes.hits, 0, free, cpus=2), runs)
    log(f"{system}: breakpoint costs")
    table["breakpoint costs"][system] = {
        count: [_safe(lambda c=count: ours.breakpoint_costs(platform, hot, c, free))
                for _ in range(runs)] for count in sizes.breakpoint_counts}
    log(f"{system}: next over the long line")
    ranges = guest.long_line_ranges(elf)
    table["next"][system] = measure(lambda: ours.next_over_line(platform, line, ranges), runs)
    log(f"{system}: run speed, pushf")
    work = guest.patched(elf, {"qb_hot_iterations": sizes.run_fast if fast else sizes.run_slow,
                               "qb_line_iterations": 0})
    table["run alone (s)"][system], table["run attached (s)"][system] = measure_pair(
        lambda: ours.run_alone(platform, work), lambda: ours.run_attached(platform, work), runs)
    table["pushf image"][system] = _safe(lambda: ours.pushf_image(platform, elf))


def _safe(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception as error:
        print(f"    failed: {error}", file=sys.stderr)
        return {"failed": str(error)[:300]}


def peer_rows(p: peer.Peer, elf: Path, sizes: Sizes, table: dict) -> None:
    system = f"QEMU {p.name} + gdb"
    fast = p.name == "tcg"
    hw = p.hardware_breakpoints_only
    no_sw = {"not available": "kvm_pvm: an int3 at CPL0 is a KVM emulation failure that "
             "stops QEMU's VM ('KVM internal error'); gdb has only hbreak (4 debug registers)"}
    hot = guest.patched(elf, {"qb_hot_iterations": HUGE})
    line = guest.patched(elf, {"qb_hot_iterations": 0,
                               "qb_line_iterations": sizes.line_iterations})
    runs, free, timeout = sizes.runs, guest.FREE_RAM, sizes.peer_timeout

    def gdb(elf_: Path, scenario: str, key: str, **params) -> float:
        data = peer.run_gdb(p, elf_, scenario, {"hardware": hw, "free_ram": free, **params},
                            timeout)
        if "timed out" in data:
            raise RuntimeError(f"gdb {scenario} still running after {timeout} s")
        return data[key]

    steps = sizes.steps_fast if fast else sizes.steps_slow
    log(f"{system}: steps, hits")
    table["instruction steps/s"][system] = measure(
        lambda: gdb(hot, "steps", "instruction steps/s", steps=steps), runs)
    table["breakpoint hits/s"][system] = measure(
        lambda: gdb(hot, "hits", "breakpoint hits/s", hits=sizes.hits, others=0), runs)
    # mb_cpus tells the multiboot entry how many vCPUs to wake (QEMU's -smp 2).
    smp = guest.patched(elf, {"qb_hot_iterations": HUGE, "mb_cpus": 2})
    table["breakpoint hits/s, 2 vCPUs"][system] = measure(
        lambda: peer.run_gdb(p, smp, "hits", {"hardware": hw, "free_ram": free,
                                               "hits": sizes.hits, "others": 0},
                             timeout, cpus=2)["breakpoint hits/s"], runs)
    others = f"breakpoint hits/s with {sizes.others:,} others"
    if hw:
        table[others][system] = no_sw
        table["breakpoint costs"][system] = no_sw
    else:
        table[others][system] = measure(
            lambda: gdb(hot, "hits", "breakpoint hits/s", hits=sizes.peer_hits_with_others,
                        others=sizes.others), runs)
        table[others][system]["hits per run"] = sizes.peer_hits_with_others
        log(f"{system}: breakpoint costs")
        table["breakpoint costs"][system] = {
            count: [_safe(lambda c=count: _costs(p, hot, c, free, timeout))
                    for _ in range(runs)] for count in sizes.breakpoint_counts}
    if not fast and not sizes.all_kvm_peer_rows:
        skip = {"not available": "skipped in --quick (each QEMU boot on kvm_pvm takes seconds)"}
        for key in ("next", "run alone (s)", "run attached (s)"):
            table[key][system] = skip
        table["pushf image"][system] = _safe(
            lambda: peer.run_gdb(p, elf, "pushf", {"hardware": hw}, timeout)["pushed image"])
        return
    log(f"{system}: next over the long line (capped at {sizes.next_timeout:.0f} s)")
    start = guest.long_line_ranges(elf)[0][0]
    table["next"][system] = _next(p, line, start, hw, sizes.next_timeout)
    log(f"{system}: run speed, pushf")
    work = guest.patched(elf, {"qb_hot_iterations": sizes.run_fast if fast else sizes.run_slow,
                               "qb_line_iterations": 0})
    idle = guest.patched(elf, {"qb_hot_iterations": 0, "qb_line_iterations": 0})
    # QEMU's start-up (BIOS, option ROM) is in every run: the guest's work is the
    # difference between the sized run and an empty one, measured back to back.
    table["run alone (s)"][system], table["run attached (s)"][system] = measure_pair(
        lambda: peer.run_alone(p, work, timeout) - peer.run_alone(p, idle, timeout),
        lambda: gdb(work, "run", "run (s)") - gdb(idle, "run", "run (s)"), runs)
    table["pushf image"][system] = _safe(
        lambda: peer.run_gdb(p, elf, "pushf", {"hardware": hw}, timeout)["pushed image"])


def _costs(p: peer.Peer, elf: Path, count: int, free: int, timeout: float) -> dict:
    data = peer.run_gdb(p, elf, "breakpoint costs", {"count": count, "free_ram": free,
                                                     "hardware": False}, timeout)
    if "timed out" in data:
        raise RuntimeError(f"{count} breakpoints: gdb still running after {timeout} s")
    return data


def _next(p: peer.Peer, elf: Path, start: int, hw: bool, cap: float) -> Cell:
    try:
        data = peer.run_gdb(p, elf, "next", {"line_start": start, "hardware": hw}, cap)
    except Exception as error:
        return {"failed": str(error)[:300]}
    if "timed out" in data:
        if not data.get("next started"):
            return {"failed": f"gdb did not reach the line within {cap:.0f} s"}
        return {"lower bound": cap, "runs": 1,
                "note": f"gdb's next was still stepping when stopped after {cap:.0f} s"}
    return spread([data["next (s)"]])


def dap_rows(platforms: dict, sizes: Sizes, table: dict) -> None:
    from dap_latency import describe, step_cycles

    for name in platforms:
        log(f"DAP step cycle on {name}")
        try:
            _, cycle = step_cycles(name, sizes.dap_cycles)
            table["dap step cycle"][f"ours {name}"] = describe(cycle)
        except Exception as error:
            table["dap step cycle"][f"ours {name}"] = {"failed": str(error)[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--runs", type=int, help="repetitions per cell (default 3; quick 1)")
    parser.add_argument("--out", type=Path, help="where to write vs_qemu.{json,md,png} "
                        "(default bench/results; --quick writes them only when given)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    elf = guest.build()
    if not guest.file_layout_is_contiguous(elf):
        sys.exit(f"{elf}: PT_LOAD segments are not laid out contiguously; QEMU's multiboot "
                 "loader would load them wrong")
    table: dict[str, dict] = {key: {} for key in report.sections(sizes)}
    systems: dict[str, str] = {}
    skipped: dict[str, str] = {}
    platforms = {}
    for name, platform in platforms_present().items():
        if isinstance(platform, str):
            skipped[f"ours {name}"] = platform
            continue
        platforms[name] = platform
        systems[f"ours {name}"] = platform.describe()
        ours_rows(name, platform, elf, sizes, table)
    for name, found in peer.peers_present().items():
        if isinstance(found, str):
            skipped[f"QEMU {name} + gdb"] = found
            continue
        systems[f"QEMU {name} + gdb"] = found.describe()
        peer_rows(found, elf, sizes, table)
    dap_rows(platforms, sizes, table)
    results = report.assemble(sizes, systems, skipped, table)
    print(report.markdown(results))
    if args.out or not args.quick:
        for path in report.save(results, args.out or RESULTS):
            print(f"saved {path}")


if __name__ == "__main__":
    main()
