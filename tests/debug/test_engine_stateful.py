"""Random add / remove / continue / pause / step sequences through the real engine on a
real 2-vCPU guest, including breakpoints on unmapped addresses. After every stop the
guest's code must be exactly the ELF image: no planted byte is ever left behind."""

from __future__ import annotations

import queue

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from whpx_core.debug.events import Exited, Stopped, StopReason
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf

UNMAPPED = (0x4000_0000, 0x4000_1000, 0xFFFF_8000_0000_0000)
FUNCTIONS = ("smp_hit", "guest_main", "spin_lock", "spin_unlock", "serial_putc", "memset")
TIMEOUT = 60


def machine_class(platform, elf):
    image = load_elf(elf)
    targets = [image.symbols[name] for name in FUNCTIONS if name in image.symbols]
    targets += list(UNMAPPED)
    code = [s for s in image.segments if s.executable]

    class EngineMachine(RuleBasedStateMachine):
        added = Bundle("breakpoints")

        def __init__(self) -> None:
            super().__init__()
            self.engine = launch(platform, image, cpus=2)
            self.engine.write_memory(image.symbols["smp_iterations"],
                                     (10**9).to_bytes(8, "little"))
            self.breakpoints: dict[int, int] = {}  # id -> address
            self.ended = False

        def teardown(self) -> None:
            self.engine.close()

        @rule(target=added, address=st.sampled_from(targets))
        def add(self, address: int) -> int:
            bp = self.engine.add_breakpoint(address)
            self.breakpoints[bp.id] = address
            return bp.id

        @rule(bp_id=consumes(added))
        def remove(self, bp_id: int) -> None:
            self.engine.remove_breakpoint(bp_id)
            del self.breakpoints[bp_id]

        @rule()
        def continue_until_a_stop(self) -> None:
            if self.ended:
                return
            self.engine.resume()
            try:
                event = self.engine.wait_stop(0.3)
            except queue.Empty:  # no breakpoint on the guest's path: stop it ourselves
                self.engine.pause()
                event = self.engine.wait_stop(TIMEOUT)
            if isinstance(event, Exited):
                # The guest runs 10^9 iterations: ending now means it crashed (a stale
                # INT1 it took for its own, say).
                raise AssertionError(f"the guest ended: {event}: {self.engine.output!r}")
            assert event.reason in (StopReason.BREAKPOINT, StopReason.PAUSE), event
            if event.reason is StopReason.BREAKPOINT:
                assert set(event.breakpoints) <= set(self.breakpoints)
                assert event.rip in self.breakpoints.values()

        @rule(vcpu=st.integers(0, 1))
        def step(self, vcpu: int) -> None:
            if not self.ended and not self.engine.is_halted(vcpu):
                stop = self.engine.step_instruction(vcpu)
                assert isinstance(stop, Stopped | Exited)
                assert self.engine.wait_stop(TIMEOUT) == stop  # also emitted as an event
                self.ended = isinstance(stop, Exited)

        @invariant()
        def code_is_the_image(self) -> None:
            if self.engine.running:
                return
            for segment in code:
                raw = self.engine.partition.read_memory(segment.address, len(segment.data))
                assert raw == segment.data

        @invariant()
        def unmapped_breakpoints_stay_unverified(self) -> None:
            for bp_id, address in self.breakpoints.items():
                if address in UNMAPPED:
                    assert not self.engine.is_verified(bp_id)

    return EngineMachine


def test_random_debugging_sessions_leave_no_planted_byte(platform, guests):
    if platform.capabilities().max_vcpus < 2:
        pytest.skip("needs 2 vCPUs")
    examples = 20 if platform.name == "emulated" else 5
    run_state_machine_as_test(
        machine_class(platform, guests["smp"]),
        settings=settings(max_examples=examples, stateful_step_count=20, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
