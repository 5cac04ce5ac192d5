"""The debugger is invisible to the guest: stepping never leaks RFLAGS.TF into the guest's
view, and a guest that debugs itself (INT3, its own TF, its own DR0) behaves the same with
and without the debugger attached. On every platform present.

Guests: `tfprobe` (a labelled probe per instruction class the TF primitive could leak
through: PUSHF, POPF, IRETQ, INT n, INT3, a fault, DR6, a pending timer interrupt) and
`selfdebug` (its own INT3, TF single-stepping and DR0 breakpoint). See the comments at the
top of tests/guests/tfprobe.c and selfdebug.c.
"""

from __future__ import annotations

import itertools
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from whpx_core.debug.engine import Engine
from whpx_core.debug.events import Exited, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import ElfImage, load_elf
from whpx_core.machine.vm import Machine, RunResult
from whpx_core.platform.base import Platform
from whpx_core.platform.exits import DR6_BS
from whpx_core.platform.registers import RFLAGS_TF, Reg, Table

TIMEOUT = 60

PROBES = ("pushf", "popf", "iretq", "int", "int3", "fault", "dr6", "timer")
# Probes whose first instruction enters a handler, and through which IDT vector.
HANDLER_VECTORS = {"int": 0x30, "int3": 3, "fault": 6}
# What the guest recorded: RFLAGS images it stored or found in an exception frame.
IMAGES = ("seen_pushf", "seen_popf", "seen_iretq", "seen_int_frame", "seen_int_after",
          "seen_int3_frame", "seen_int3_after", "seen_ud_frame", "seen_ud_after",
          "seen_timer_frame", "seen_timer_after")
HITS = ("hits_int", "hits_int3", "hits_ud", "hits_timer")

# Known bugs, each pinned by a strict xfail (an XPASS means it was fixed: drop the mark).
EMULATED_DR6_LEAK = (
    "emulated platform: Unicorn sets DR6.BS for the platform's own step trap and it is "
    "left in the guest's DR6")
ENGINE_OWED_DB = (
    "engine: the guest's own single-step #DB is injected and left pending across the "
    "reported stop; the next step takes its delivery for the instruction at RIP, forces "
    "TF on in the handler, strips the guest's TF from the frame and injects again")


def xfail_on(request: pytest.FixtureRequest, platform: Platform, name: str,
             reason: str) -> None:
    if platform.name == name:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def start(engines: list[Engine], platform: Platform, image: ElfImage, *,
          step_into_handlers: bool = False) -> Engine:
    engine = launch(platform, image, step_into_handlers=step_into_handlers)
    engines.append(engine)
    return engine


def run_plain(platform: Platform, path: Path, patch: dict[str, int]) -> tuple[RunResult, str]:
    """The guest on a bare Machine: no engine, no intercepts."""
    output = bytearray()
    machine = Machine(platform, cpus=1, memory_mib=64, on_output=output.extend)
    try:
        image = load_elf(path)
        machine.load(image)
        for symbol, value in patch.items():
            machine.partition.write_memory(image.symbols[symbol], value.to_bytes(8, "little"))
        result = machine.run()
    finally:
        machine.close()
    return result, output.decode(errors="replace")


def read_u64(engine: Engine, address: int) -> int:
    return int.from_bytes(engine.read_memory(address, 8), "little")


def wait_stop(engine: Engine) -> Stopped:
    event = engine.wait_stop(TIMEOUT)
    assert isinstance(event, Stopped), (event, engine.output.decode(errors="replace"))
    return event


def finish(engine: Engine) -> str:
    """Resume to the end; the guest must exit 0. Returns its serial output."""
    engine.resume()
    event = engine.wait_stop(TIMEOUT)
    output = engine.output.decode(errors="replace")
    assert isinstance(event, Exited) and event.exit_code == 0, (event, output)
    return output


def probe_path(image: ElfImage, probe: str) -> list[int]:
    """Where each successive step from `probe_<probe>` must land: its numbered labels,
    then `probe_<probe>_end` (tfprobe.c puts a label on every instruction)."""
    base = f"probe_{probe}"
    path = []
    while f"{base}_{len(path) + 1}" in image.symbols:
        path.append(image.symbols[f"{base}_{len(path) + 1}"])
    return [*path, image.symbols[f"{base}_end"]]


def handler_entry(engine: Engine, vector: int) -> int:
    """The target of the guest's IDT gate: a handler's first instruction."""
    (idtr,) = engine.get_registers(0, [Reg.IDTR])
    assert isinstance(idtr, Table) and idtr.limit >= vector * 16 + 15
    low, high = struct.unpack("<QQ", engine.read_memory(idtr.base + vector * 16, 16))
    return (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16 | (high & 0xFFFFFFFF) << 32


def guest_rflags(engine: Engine) -> int:
    (rflags,) = engine.get_registers(0, [Reg.RFLAGS])
    assert isinstance(rflags, int)
    return rflags


def step(engine: Engine) -> Stopped:
    stop = engine.step_instruction(0)
    assert isinstance(stop, Stopped), (stop, engine.output.decode(errors="replace"))
    assert stop.reason is StopReason.STEP, stop
    assert engine.wait_stop(TIMEOUT) == stop  # also emitted as an event: consume it
    return stop


def step_hiding_tf(engine: Engine) -> Stopped:
    """A step where the guest has not set TF itself: the debugger's register view is the
    guest's, so the step primitive's TF must not be in it either."""
    stop = step(engine)
    assert not guest_rflags(engine) & RFLAGS_TF, f"TF visible at {stop.rip:#x}"
    return stop


def check_observations(engine: Engine, image: ElfImage) -> None:
    """At `tfprobe_done`: no RFLAGS image the guest saw has TF, every handler ran once,
    and the guest never took a #DB (a leaked TF would have caused one)."""
    images = {name: read_u64(engine, image.symbols[name]) for name in IMAGES}
    leaked = {name: f"{value:#x}" for name, value in images.items() if value & RFLAGS_TF}
    assert not leaked, f"TF in the guest's RFLAGS images: {leaked}"
    hits = {name: read_u64(engine, image.symbols[name]) for name in HITS}
    assert hits == dict.fromkeys(HITS, 1)
    assert read_u64(engine, image.symbols["unexpected_db"]) == 0, \
        f"guest took a #DB at {read_u64(engine, image.symbols['unexpected_db_rip']):#x}"


def output_without(output: str, *prefixes: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith(prefixes)]


# -- tfprobe: stepping hides TF ---------------------------------------------------------
def test_stepping_across_every_probe_hides_tf_and_lands_on_the_next_instruction(
        engines, platform, guests):
    image = load_elf(guests["tfprobe"])
    engine = start(engines, platform, image)
    starts = {image.symbols[f"probe_{p}"]: p for p in PROBES}
    for address in starts:
        engine.add_breakpoint(address)
    done = engine.add_breakpoint(image.symbols["tfprobe_done"])
    stepped = []
    while True:
        engine.resume()
        stop = wait_stop(engine)
        assert stop.reason is StopReason.BREAKPOINT, stop
        if stop.breakpoints == (done.id,):
            break
        probe = starts[stop.rip]
        if probe == "timer":
            time.sleep(0.02)  # host-time platforms: let the expiry callback raise the IRQ
        # INT n / INT3 / ud2 with step_into_handlers off: the handler runs inside the
        # step, which ends at the instruction the handler returns to.
        rips = [step_hiding_tf(engine).rip for _ in probe_path(image, probe)]
        assert [hex(r) for r in rips] == [hex(r) for r in probe_path(image, probe)], probe
        stepped.append(probe)
    assert stepped == list(PROBES)
    check_observations(engine, image)
    # The interrupt was pending across the steps (held off, not taken inside a step) and
    # came in as soon as the guest ran on its own again.
    assert read_u64(engine, image.symbols["timer_rip"]) == image.symbols["probe_timer_end"]
    output = finish(engine)
    assert "tfprobe: done" in output
    # Same observations as without the debugger (where the timer interrupt lands, and so
    # the arithmetic flags in its frame, depends on timing; DR6 has its own test).
    result, plain = run_plain(platform, guests["tfprobe"], {})
    assert (result.reason, result.exit_code) == ("exit", 0), (result, plain)
    ignored = ("timer_frame", "dr6")
    assert output_without(output, *ignored) == output_without(plain, *ignored)


def test_stepping_does_not_set_dr6_bs(engines, platform, guests, request):
    """The step primitive's #DB is the debugger's: DR6.BS must not show up in the DR6
    the guest reads (probe_dr6 clears DR6, the debugger steps a nop, the guest reads
    DR6)."""
    image = load_elf(guests["tfprobe"])
    engine = start(engines, platform, image)
    engine.add_breakpoint(image.symbols["probe_dr6"])
    engine.resume()
    assert wait_stop(engine).rip == image.symbols["probe_dr6"]
    for expected in probe_path(image, "dr6"):
        assert step_hiding_tf(engine).rip == expected
    dr6 = read_u64(engine, image.symbols["seen_dr6"])
    assert not dr6 & DR6_BS, f"the step primitive's #DB shows in the guest's DR6: {dr6:#x}"
    assert "tfprobe: done" in finish(engine)


@pytest.mark.parametrize("probe", sorted(HANDLER_VECTORS))
def test_step_into_handlers_stops_on_the_handlers_first_instruction(
        engines, platform, guests, probe):
    image = load_elf(guests["tfprobe"])
    engine = start(engines, platform, image, step_into_handlers=True)
    engine.add_breakpoint(image.symbols[f"probe_{probe}"])
    engine.resume()
    assert wait_stop(engine).rip == image.symbols[f"probe_{probe}"]
    entry = handler_entry(engine, HANDLER_VECTORS[probe])
    assert step_hiding_tf(engine).rip == entry, "first stop is not the handler's entry"
    # Stepping goes on inside the handler: the stub's `pushq $0` is 2 bytes.
    assert step_hiding_tf(engine).rip == entry + 2
    engine.add_breakpoint(image.symbols["tfprobe_done"])
    engine.resume()
    assert wait_stop(engine).rip == image.symbols["tfprobe_done"]
    check_observations(engine, image)
    assert "tfprobe: done" in finish(engine)


def test_plain_run_sees_no_tf(platform, guests):
    """The reference the debugger runs are compared with."""
    result, output = run_plain(platform, guests["tfprobe"], {})
    assert (result.reason, result.exit_code) == ("exit", 0), (result, output)
    assert "tfprobe: done" in output
    for line in output_without(output, "tfprobe:"):
        name, value = line.split("=")
        if name.startswith(("hits_", "unexpected")):
            assert int(value, 16) == (0 if name == "unexpected_db" else 1), line
        elif name == "dr6":
            assert not int(value, 16) & DR6_BS, line
        else:
            assert not int(value, 16) & RFLAGS_TF, line


# -- selfdebug: the guest's own debugging is unaffected ----------------------------------
SUMMARY = re.compile(r"selfdebug: int3=(\d+) tf=(\d+) dr0=(\d+)\n")


def summary(output: str) -> tuple[int, int, int]:
    match = SUMMARY.search(output)
    assert match, output
    int3, tf, dr0 = map(int, match.groups())
    return int3, tf, dr0


def plain_selfdebug(platform: Platform, path: Path, use_dr0: bool) -> str:
    result, output = run_plain(platform, path, {"selfdebug_use_dr0": int(use_dr0)})
    assert (result.reason, result.exit_code) == ("exit", 0), (result, output)
    return output


def debugged_selfdebug(engines: list[Engine], platform: Platform, path: Path,
                       use_dr0: bool) -> tuple[str, int]:
    """Run under the engine with a breakpoint on the unrelated `selfdebug_marker`, so
    #DB is intercepted for the whole run. Returns (output, marker hits)."""
    image = load_elf(path)
    engine = start(engines, platform, image)
    engine.write_memory(image.symbols["selfdebug_use_dr0"], int(use_dr0).to_bytes(8, "little"))
    marker = engine.add_breakpoint(image.symbols["selfdebug_marker"])
    markers = 0
    while True:
        engine.resume()
        event = engine.wait_stop(TIMEOUT)
        if isinstance(event, Exited):
            output = engine.output.decode(errors="replace")
            assert event.exit_code == 0, (event, output)
            return output, markers
        assert (event.reason, event.breakpoints) == (StopReason.BREAKPOINT, (marker.id,)), \
            (event, engine.output.decode(errors="replace"))
        markers += 1


def test_selfdebug_plain_counts(platform, guests):
    """The guest's own mechanisms work without a debugger (int3 and TF at least)."""
    int3, tf, _ = summary(plain_selfdebug(platform, guests["selfdebug"], use_dr0=False))
    assert (int3, tf) == (1, 5)


def test_selfdebug_same_output_with_an_unrelated_breakpoint(engines, platform, guests):
    plain = plain_selfdebug(platform, guests["selfdebug"], use_dr0=False)
    debugged, markers = debugged_selfdebug(engines, platform, guests["selfdebug"], False)
    assert markers == 4  # #DB was intercepted all along, the guest's TF phase included
    assert debugged == plain


def test_selfdebug_step_over_the_guests_own_int3(engines, platform, guests):
    plain = plain_selfdebug(platform, guests["selfdebug"], use_dr0=False)
    image = load_elf(guests["selfdebug"])
    engine = start(engines, platform, image)
    engine.write_memory(image.symbols["selfdebug_use_dr0"], bytes(8))
    engine.add_breakpoint(image.symbols["self_int3"])
    engine.resume()
    assert wait_stop(engine).rip == image.symbols["self_int3"]
    assert step_hiding_tf(engine).rip == image.symbols["self_int3_end"]
    assert read_u64(engine, image.symbols["int3_hits"]) == 1  # the guest's handler ran
    assert finish(engine) == plain


# The guest's own TF-stepped block (selfdebug.c phase_tf), instruction by instruction,
# with how many single-step traps the guest has taken once that instruction is done.
TF_BLOCK = (("self_tf_start", 0), ("self_tf_or", 0), ("self_tf_set", 0), ("self_tf_1", 0),
            ("self_tf_2", 1), ("self_tf_3", 2), ("self_tf_4", 3), ("self_tf_5", 4),
            ("self_tf_end", 5))



@pytest.mark.parametrize("into", [False, True], ids=["over", "into"])
def test_selfdebug_debugger_steps_through_the_guests_own_tf_stepping(
        engines, platform, guests, into):
    """The clash the seed warns about: the debugger single-steps instructions the guest
    is TF-stepping itself. The guest is owed a #DB after each of them; like any trap
    taken by a stepped instruction, its handler runs inside the step (stepping over
    handlers) or the step stops on the handler's first instruction (stepping into)."""
    plain = plain_selfdebug(platform, guests["selfdebug"], use_dr0=False)
    image = load_elf(guests["selfdebug"])
    engine = start(engines, platform, image, step_into_handlers=into)
    engine.write_memory(image.symbols["selfdebug_use_dr0"], bytes(8))
    engine.add_breakpoint(image.symbols["self_tf_start"])
    engine.resume()
    assert wait_stop(engine).rip == image.symbols["self_tf_start"]
    for (_, traps_before), (label, traps) in itertools.pairwise(TF_BLOCK):
        stop = step(engine)
        if into and traps > traps_before:
            assert stop.rip == handler_entry(engine, 1), \
                f"{label}: stopped at {stop.rip:#x}, not in the guest's #DB handler"
            assert read_u64(engine, image.symbols["tf_traps"]) == traps_before
            engine.add_breakpoint(image.symbols[label])  # run the handler, back to the block
            engine.resume()
            stop = wait_stop(engine)
        assert stop.rip == image.symbols[label], (label, hex(stop.rip))
        assert read_u64(engine, image.symbols["tf_traps"]) == traps, label
    assert finish(engine) == plain


def test_selfdebug_breakpoints_inside_the_guests_own_tf_stepping(engines, platform, guests):
    """Debugger breakpoints on instructions the guest executes with its own TF set: each
    is hit once, stepping off it delivers the guest its trap, and the guest sees the same
    as without a debugger. On the emulated platform this is the case where translated
    code made under TF holds a planted INT1 (write_step_byte must not reuse it)."""
    plain = plain_selfdebug(platform, guests["selfdebug"], use_dr0=False)
    image = load_elf(guests["selfdebug"])
    engine = start(engines, platform, image)
    engine.write_memory(image.symbols["selfdebug_use_dr0"], bytes(8))
    inside = ("self_tf_1", "self_tf_2", "self_tf_3", "self_tf_4")
    for label in inside:
        engine.add_breakpoint(image.symbols[label])
    for label in inside:
        engine.resume()
        stop = wait_stop(engine)
        assert (stop.reason, stop.rip) == (StopReason.BREAKPOINT, image.symbols[label]), \
            (label, stop)
    assert finish(engine) == plain


def plain_with_dr0(platform: Platform, path: Path) -> str:
    """The plain run with the guest's DR0 phase; skips when the platform does not
    honour the guest's own DR0 even without a debugger."""
    plain = plain_selfdebug(platform, path, use_dr0=True)
    if summary(plain)[2] == 0:
        pytest.skip(f"{platform.name}: the guest's own DR0 breakpoint never fires without "
                    f"a debugger either ({plain.strip()!r})")
    return plain


def test_selfdebug_dr0_same_output_with_an_unrelated_breakpoint(
        engines, platform, guests):
    """Includes debugger stops while the guest's DR0 breakpoint is armed (the marker
    is called after each dr0_target call)."""
    plain = plain_with_dr0(platform, guests["selfdebug"])
    debugged, markers = debugged_selfdebug(engines, platform, guests["selfdebug"], True)
    assert markers == 4 + 3
    assert debugged == plain


def test_selfdebug_debugger_breakpoint_on_the_guests_dr0_target(
        engines, platform, guests):
    """The debugger's breakpoint and the guest's DR0 on one instruction: the guest's
    #DB (a fault, before the instruction) and the debugger's stop both happen, once
    per call, and the guest sees exactly what it sees alone."""
    plain = plain_with_dr0(platform, guests["selfdebug"])
    image = load_elf(guests["selfdebug"])
    engine = start(engines, platform, image)
    target = image.symbols["dr0_target"]
    bp = engine.add_breakpoint(target)
    for _ in range(3):
        engine.resume()
        stop = wait_stop(engine)
        assert (stop.reason, stop.rip, stop.breakpoints) == \
            (StopReason.BREAKPOINT, target, (bp.id,)), stop
    assert finish(engine) == plain
