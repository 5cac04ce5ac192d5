"""The sample guests, booted by the machine on every platform present."""

from __future__ import annotations

import re
import threading
import time

import pytest

from whpx_core.machine.elf_loader import load_elf
from whpx_core.machine.vm import Machine, RunResult


def run_guest(platform, path, *, cpus: int = 1, memory_mib: int = 64,
              patch: dict[str, int] | None = None) -> tuple[RunResult, str]:
    output = bytearray()
    machine = Machine(platform, cpus=cpus, memory_mib=memory_mib, on_output=output.extend)
    try:
        image = load_elf(path)
        machine.load(image)
        for symbol, value in (patch or {}).items():
            machine.partition.write_memory(image.symbols[symbol], value.to_bytes(8, "little"))
        result = machine.run()
    finally:
        machine.close()
    return result, output.decode(errors="replace")


def test_hello_prints_and_exits_with_its_code(platform, guests):
    result, output = run_guest(platform, guests["hello"])
    assert output == "Hello from dap-whpx guest!\n"
    assert (result.reason, result.exit_code) == ("exit", 42)


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp_counts_are_exact(platform, guests, cpus):
    if cpus > platform.capabilities().max_vcpus:
        pytest.skip(f"{platform.name} offers {platform.capabilities().max_vcpus} vCPUs here")
    iterations = 20_000 if platform.name == "kvm" else 100_000
    result, output = run_guest(platform, guests["smp"], cpus=cpus,
                               patch={"smp_iterations": iterations})
    assert (result.reason, result.exit_code) == ("exit", 0), (result, output)
    assert f"smp: {cpus} cpus, shared={cpus * iterations}" in output


def test_faults_reach_the_guest_handlers_with_vector_cr2_and_error_code(platform, guests):
    if not platform.capabilities().guest_exception_delivery:
        pytest.skip(f"{platform.name}: {'; '.join(platform.capabilities().notes)}")
    result, output = run_guest(platform, guests["faults"])
    assert (result.reason, result.exit_code) == ("exit", 0), (result, output)
    for check in ("UD", "DE", "GP selector", "GP noncanonical", "PF read", "PF write",
                  "BP", "INT 0x30"):
        assert f"ok {check}\n" in output


def test_timer_interrupts_arrive(platform, guests):
    result, output = run_guest(platform, guests["timer"])
    assert (result.reason, result.exit_code) == ("exit", 0), (result, output)
    ticks = int(re.search(r"timer: ticks=(\d+)", output).group(1))
    if platform.name == "emulated":
        assert ticks == 40  # virtual time: 20 per phase, exactly, every run
    else:
        assert ticks >= 40  # host time: a tick may land between the guest's two phases


def test_stop_from_another_thread_ends_a_spinning_guest_promptly(platform, guests):
    machine = Machine(platform, cpus=1, memory_mib=16)
    try:
        image = load_elf(guests["spin"])
        machine.load(image)
        machine.partition.write_memory(image.symbols["spin_iterations"],
                                       (1 << 62).to_bytes(8, "little"))
        threading.Timer(0.3, machine.stop).start()
        started = time.monotonic()
        result = machine.run()
        elapsed = time.monotonic() - started
    finally:
        machine.close()
    assert result.reason == "stopped"
    assert elapsed < 5, f"stop took {elapsed:.2f}s"


def test_emulated_runs_are_deterministic(guests):
    """Virtual time: two runs of the timer guest (interrupts and all) end with the same
    RAM, byte for byte, stacks and counters included."""
    from whpx_core.platform.emulated.platform import EmulatedPlatform

    images = []
    for _ in range(2):
        machine = Machine(EmulatedPlatform(), cpus=2, memory_mib=16)
        machine.load(load_elf(guests["timer"]))
        assert machine.run().exit_code == 0
        images.append(bytes(machine.ram))
        machine.close()
    assert images[0] == images[1]
