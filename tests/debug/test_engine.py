"""The debug engine through its public API, on real guests, on every platform present."""

from __future__ import annotations

import time

import pytest

from whpx_core.debug.events import Exited, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf
from whpx_core.platform.registers import Reg

TIMEOUT = 60


@pytest.fixture
def engines():
    made = []
    yield made
    for engine in made:
        engine.close()


def start(engines, platform, path, **kwargs):
    engine = launch(platform, path, **kwargs)
    engines.append(engine)
    return engine


def patch(engine, image, symbol: str, value: int) -> None:
    engine.write_memory(image.symbols[symbol], value.to_bytes(8, "little"))


def assert_memory_clean(engine, image) -> None:
    """At every stop the guest's code holds the image's bytes, not a planted 0xF1."""
    for segment in image.segments:
        if segment.data and segment.executable:
            raw = engine.partition.read_memory(segment.address, len(segment.data))
            if raw != segment.data:
                at = next(i for i in range(len(raw)) if raw[i] != segment.data[i])
                raise AssertionError(f"memory differs at {segment.address + at:#x}")


def test_continue_to_exit_reports_the_exit_code(engines, platform, guests):
    engine = start(engines, platform, guests["hello"])
    engine.resume()
    event = engine.wait_stop(TIMEOUT)
    assert isinstance(event, Exited) and event.exit_code == 42


def test_breakpoint_hit_then_memory_is_clean(engines, platform, guests):
    image = load_elf(guests["hello"])
    engine = start(engines, platform, image)
    bp = engine.add_breakpoint(image.symbols["say_hello"])
    engine.resume()
    stop = engine.wait_stop(TIMEOUT)
    assert isinstance(stop, Stopped) and stop.reason is StopReason.BREAKPOINT
    assert stop.breakpoints == (bp.id,) and stop.rip == image.symbols["say_hello"]
    assert engine.get_registers(0, [Reg.RIP]) == [image.symbols["say_hello"]]
    assert_memory_clean(engine, image)
    assert engine.read_memory(stop.rip, 1) != b"\xf1"
    engine.resume()
    event = engine.wait_stop(TIMEOUT)
    assert isinstance(event, Exited) and event.exit_code == 42, engine.output.decode()


@pytest.mark.parametrize("cpus", [2, 4])
def test_shared_breakpoint_hits_are_each_reported_once_and_counts_stay_exact(
        engines, platform, guests, cpus):
    if cpus > platform.capabilities().max_vcpus:
        pytest.skip(f"{platform.name} offers {platform.capabilities().max_vcpus} vCPUs here")
    image = load_elf(guests["smp"])
    engine = start(engines, platform, image, cpus=cpus)
    iterations = 5000 // cpus
    patch(engine, image, "smp_iterations", iterations)
    bp = engine.add_breakpoint(image.symbols["smp_hit"])
    hits = [0] * cpus
    while True:
        engine.resume()
        event = engine.wait_stop(TIMEOUT)
        if isinstance(event, Exited):
            break
        assert event.reason is StopReason.BREAKPOINT, event
        assert event.breakpoints == (bp.id,) and event.rip == image.symbols["smp_hit"]
        hits[event.vcpu] += 1
        if sum(hits) % 500 == 1:
            assert_memory_clean(engine, image)
    assert event.exit_code == 0, event  # the guest checked its own counters
    assert hits == [iterations] * cpus


def test_step_instruction_moves_one_instruction(engines, platform, guests):
    image = load_elf(guests["spin"])
    engine = start(engines, platform, image)
    patch(engine, image, "spin_iterations", 3)
    loop = image.symbols["spin_loop"]
    engine.add_breakpoint(loop)
    engine.resume()
    assert engine.wait_stop(TIMEOUT).rip == loop
    rips = []
    for _ in range(4):
        stop = engine.step_instruction(0)
        assert isinstance(stop, Stopped) and stop.reason is StopReason.STEP
        rips.append(stop.rip)
        assert engine.wait_stop(TIMEOUT) == stop  # also emitted as an event
    # dec rcx (3 bytes); jnz back to the loop; dec; jnz
    assert rips == [loop + 3, loop, loop + 3, loop]
    assert engine.get_registers(0, [Reg.RCX]) == [1]


def test_pause_stops_a_running_two_vcpu_guest(engines, platform, guests):
    if platform.capabilities().max_vcpus < 2:
        pytest.skip("needs 2 vCPUs")
    image = load_elf(guests["spin"])
    engine = start(engines, platform, image, cpus=2)
    patch(engine, image, "spin_iterations", 1 << 62)
    engine.resume()
    time.sleep(0.3)
    engine.pause()
    stop = engine.wait_stop(TIMEOUT)
    assert isinstance(stop, Stopped) and stop.reason is StopReason.PAUSE
    assert not engine.running
    rcx = [engine.get_registers(i, [Reg.RCX])[0] for i in range(2)]
    assert all(value < 1 << 62 for value in rcx)  # both made progress
    engine.resume()
    time.sleep(0.1)
    engine.pause()
    assert engine.wait_stop(TIMEOUT).reason is StopReason.PAUSE


def test_pending_breakpoint_on_unmapped_address_stays_unverified(engines, platform, guests):
    engine = start(engines, platform, guests["hello"])
    bp = engine.add_breakpoint(0x4000_0000)  # beyond RAM: not mapped
    engine.resume()
    event = engine.wait_stop(TIMEOUT)
    assert isinstance(event, Exited) and event.exit_code == 42
    assert not engine.is_verified(bp.id)


def test_a_removed_breakpoints_pending_hits_are_not_reported(engines, platform, guests):
    """Hits that other vCPUs caught while the VM was stopping are reported at the next
    resume, unless their breakpoint was removed meanwhile."""
    if platform.capabilities().max_vcpus < 2:
        pytest.skip("needs 2 vCPUs")
    image = load_elf(guests["smp"])
    engine = start(engines, platform, image, cpus=2)
    patch(engine, image, "smp_iterations", 100_000)
    bp = engine.add_breakpoint(image.symbols["smp_hit"])
    for _ in range(20_000):  # until another vCPU has caught a hit while the VM stopped
        engine.resume()
        assert engine.wait_stop(TIMEOUT).reason is StopReason.BREAKPOINT
        if any(t.pending is not None for t in engine._threads):
            break
    else:
        pytest.fail("no simultaneous hit in 20,000 resumes: the scenario was not exercised")
    engine.remove_breakpoint(bp.id)
    other = engine.add_breakpoint(image.symbols["smp_hit"] + 1)
    for _ in range(10):
        engine.resume()
        stop = engine.wait_stop(TIMEOUT)
        assert isinstance(stop, Stopped) and stop.breakpoints == (other.id,), stop


def test_hardware_execute_breakpoint_hits_on_every_vcpu(engines, platform, guests):
    if not platform.capabilities().hardware_breakpoints:
        pytest.skip(f"{platform.name} has no hardware breakpoints")
    cpus = min(2, platform.capabilities().max_vcpus)
    image = load_elf(guests["smp"])
    engine = start(engines, platform, image, cpus=cpus)
    patch(engine, image, "smp_iterations", 20)
    bp = engine.add_hardware_breakpoint(image.symbols["smp_hit"])
    assert engine.is_verified(bp.id)
    hits = [0] * cpus
    while True:
        engine.resume()
        event = engine.wait_stop(TIMEOUT)
        if isinstance(event, Exited):
            break
        assert event.breakpoints == (bp.id,) and event.rip == image.symbols["smp_hit"]
        hits[event.vcpu] += 1
    assert event.exit_code == 0 and hits == [20] * cpus


def test_hardware_write_watchpoint_stops_after_the_write(engines, platform, guests):
    capabilities = platform.capabilities()
    if not capabilities.hardware_watchpoints:
        pytest.skip(f"{platform.name}: data watchpoints do not fire here (measured)")
    image = load_elf(guests["smp"])
    engine = start(engines, platform, image)
    patch(engine, image, "smp_iterations", 5)
    shared = image.symbols["smp_shared"]
    start_bp = engine.add_breakpoint(image.symbols["guest_main"])  # after .bss is cleared
    engine.resume()
    assert engine.wait_stop(TIMEOUT).breakpoints == (start_bp.id,)
    engine.remove_breakpoint(start_bp.id)
    bp = engine.add_hardware_breakpoint(shared, "write", 8)
    values = []
    for _ in range(5):
        engine.resume()
        stop = engine.wait_stop(TIMEOUT)
        assert isinstance(stop, Stopped) and stop.breakpoints == (bp.id,), stop
        values.append(int.from_bytes(engine.read_memory(shared, 8), "little"))
    assert values == [1, 2, 3, 4, 5]  # each stop is right after that write
    engine.remove_breakpoint(bp.id)
    engine.resume()
    assert engine.wait_stop(TIMEOUT).exit_code == 0


def test_a_stop_just_before_the_guest_exits_is_reported_before_the_exit(platform, guests):
    """Each vCPU's last write to smp_done is a watchpoint stop; vCPU 0 exits the guest as
    soon as it sees both, and may do so before the cancel of the other's stop reaches it.
    The stop came first: it is reported, then the exit (it was lost, 1 run in ~20)."""
    if not platform.capabilities().hardware_watchpoints:
        pytest.skip(f"{platform.name}: data watchpoints do not fire here (measured)")
    image = load_elf(guests["smp"])
    for _ in range(30):
        engine = launch(platform, image, cpus=2)
        try:
            patch(engine, image, "smp_iterations", 200)
            start_bp = engine.add_breakpoint(image.symbols["guest_main"])
            engine.resume()
            engine.wait_stop(TIMEOUT)
            engine.remove_breakpoint(start_bp.id)
            engine.add_hardware_breakpoint(image.symbols["smp_done"], "write", 4)
            writers = []
            while True:
                engine.resume()
                event = engine.wait_stop(TIMEOUT)
                if isinstance(event, Exited):
                    break
                writers.append(event.vcpu)
            assert event.exit_code == 0 and sorted(writers) == [0, 1], writers
        finally:
            engine.close()


def test_hardware_slots_are_limited_and_validated(engines, platform, guests):
    from whpx_core.debug.engine import EngineError

    slots = platform.capabilities().hardware_breakpoints
    if not slots:
        pytest.skip(f"{platform.name} has no hardware breakpoints")
    image = load_elf(guests["hello"])
    engine = start(engines, platform, image)
    for n in range(slots):
        engine.add_hardware_breakpoint(image.symbols["say_hello"] + n)
    with pytest.raises(EngineError, match=f"all {slots} hardware breakpoint slots"):
        engine.add_hardware_breakpoint(image.symbols["guest_main"])
    engine.remove_breakpoint(engine.breakpoints()[0].id)
    if platform.capabilities().hardware_watchpoints:
        with pytest.raises(EngineError):
            engine.add_hardware_breakpoint(image.symbols["say_hello"] + 1, "write", 4)
    engine.add_hardware_breakpoint(image.symbols["guest_main"])  # the freed slot
