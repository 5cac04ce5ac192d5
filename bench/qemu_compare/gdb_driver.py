"""Runs inside gdb (`gdb -nx -batch -x gdb_driver.py`), driving QEMU's gdbstub through gdb's
Python API. The scenario and its parameters come as JSON in the file named by $QB_CONFIG;
the measurements go as JSON to the file named there. Standard library only: this is
Debian gdb's Python, not the project's.

Every scenario first attaches the way a gdb user would: `target remote`, a hardware
breakpoint on guest_main (a software one set before QEMU's boot loader copies the kernel
in would be overwritten), continue, delete it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import gdb  # type: ignore[import-not-found]

with open(os.environ["QB_CONFIG"]) as config_file:
    CONFIG = json.load(config_file)
PARAMS = CONFIG["params"]
RESULT: dict = {}


def run(command: str) -> str:
    return gdb.execute(command, to_string=True)


def save() -> None:
    with open(CONFIG["result"], "w") as out:
        json.dump(RESULT, out)


def note(key: str, value) -> None:
    """Results are saved as they come, so a run the driver kills still reports them."""
    RESULT[key] = value
    save()


def breakpoint_at(address: int, hardware: bool = False):
    kind = gdb.BP_HARDWARE_BREAKPOINT if hardware else gdb.BP_BREAKPOINT
    return gdb.Breakpoint(f"*{address:#x}", type=kind)


def symbol(name: str) -> int:
    return int(gdb.parse_and_eval(f"(unsigned long)&{name}"))


def pc() -> int:
    return int(gdb.parse_and_eval("(unsigned long)$pc"))


def resume() -> bool:
    """Continue to the next stop; False when the guest ended (QEMU exited)."""
    try:
        run("continue")
    except gdb.error:
        return False
    return gdb.selected_inferior().pid != 0


def attach() -> None:
    run("set architecture i386:x86-64")
    run("set confirm off")
    run("set pagination off")
    run(f"file {CONFIG['elf']}")
    run(f"target remote 127.0.0.1:{CONFIG['port']}")
    entry = gdb.Breakpoint("*guest_main", type=gdb.BP_HARDWARE_BREAKPOINT)
    run("continue")
    entry.delete()
    if pc() != symbol("guest_main"):
        raise RuntimeError(f"attach: stopped at {pc():#x}, not at guest_main")


def steps() -> None:
    target = breakpoint_at(symbol("qb_leaf"), PARAMS["hardware"])
    resume()
    target.delete()
    count = PARAMS["steps"]
    started = time.perf_counter()
    for _ in range(count):
        run("stepi")
    note("instruction steps/s", count / (time.perf_counter() - started))


def hits() -> None:
    for i in range(PARAMS["others"]):
        breakpoint_at(PARAMS["free_ram"] + 16 * i)
    leaf = symbol("qb_leaf")
    breakpoint_at(leaf, PARAMS["hardware"])
    resume()  # the first resume inserts everything: not a steady-state hit
    count = PARAMS["hits"]
    started = time.perf_counter()
    for _ in range(count):
        if not resume() or pc() != leaf:
            raise RuntimeError(f"hits: stopped at {pc():#x}, not at qb_leaf")
    note("breakpoint hits/s", count / (time.perf_counter() - started))


def breakpoint_costs() -> None:
    leaf = symbol("qb_leaf")
    breakpoint_at(leaf)
    resume()
    count = PARAMS["count"]
    started = time.perf_counter()
    created = [breakpoint_at(PARAMS["free_ram"] + 16 * i) for i in range(count)]
    note("set", time.perf_counter() - started)
    for key in ("first resume", "resume"):
        started = time.perf_counter()
        resume()
        note(key, time.perf_counter() - started)
    started = time.perf_counter()
    for bp in created:
        bp.delete()
    note("remove", time.perf_counter() - started)
    started = time.perf_counter()
    resume()
    note("resume after remove", time.perf_counter() - started)
    if pc() != leaf:
        raise RuntimeError(f"breakpoint costs: stopped at {pc():#x}, not at qb_leaf")


def next_over_line() -> None:
    start = PARAMS["line_start"]
    first = breakpoint_at(start, PARAMS["hardware"])
    resume()
    first.delete()
    note("next started", True)
    started = time.perf_counter()
    run("next")
    note("next (s)", time.perf_counter() - started)
    note("next stopped at", pc())


def run_speed() -> None:
    never = breakpoint_at(symbol("qb_never"), PARAMS["hardware"])
    started = time.perf_counter()
    ended = not resume()
    note("run (s)", time.perf_counter() - started)
    note("ended without a hit", ended)
    del never


def pushf() -> None:
    probe = breakpoint_at(symbol("qb_pushf_probe"), PARAMS["hardware"])
    resume()
    probe.delete()
    for _ in range(3):  # pushfq; popq %rax; movq %rax, qb_pushf_image
        run("stepi")
    note("pushed image", int(gdb.parse_and_eval("qb_pushf_image")))
    note("stopped at", pc())


SCENARIOS = {"steps": steps, "hits": hits, "breakpoint costs": breakpoint_costs,
             "next": next_over_line, "run": run_speed, "pushf": pushf}

try:
    attach()
    SCENARIOS[CONFIG["scenario"]]()
except Exception as error:  # reported to the driver, which decides what the run is worth
    note("error", f"{type(error).__name__}: {error}")
finally:
    save()
    with contextlib.suppress(gdb.error):
        run("kill")
