"""Smoke test on real WHPX: breakpoints and stepping through WinHvPlatform.dll.

Runs only on Windows with the Windows Hypervisor Platform feature enabled (see
docs/windows.md); elsewhere it is skipped with the reason. The guest is hand-encoded
machine code, so no compiler is needed on the Windows machine.
"""

from __future__ import annotations

import sys

import pytest

from tests.platform.rawguest import CODE, RawGuest
from whpx_core.platform.base import PlatformUnavailable
from whpx_core.platform.choice import choose
from whpx_core.platform.exits import ExceptionExit, HaltExit, Vector
from whpx_core.platform.registers import RFLAGS_TF, Reg


def _real_whp():
    if sys.platform != "win32":
        pytest.skip("real WHPX needs Windows (Linux CI runs the backend on whp-standin)")
    try:
        return choose("whp").platform
    except PlatformUnavailable as error:
        pytest.skip(str(error))


PROGRAM = bytes.fromhex(
    "b801000000"  # CODE+0:  mov eax, 1
    "ffc0"        # CODE+5:  inc eax
    "ffc0"        # CODE+7:  inc eax
    "e780"        # CODE+9:  out 0x80, eax
    "f1"          # CODE+11: int1 (the debugger's breakpoint byte)
    "ffc0"        # CODE+12: inc eax
    "fa"          # CODE+14: cli
    "f4"          # CODE+15: hlt
)


@pytest.fixture
def guest():
    raw = RawGuest(_real_whp())
    raw.load(PROGRAM)
    yield raw
    raw.close()


def test_stepping_stops_after_each_instruction_and_hides_tf(guest):
    vcpu = guest.vcpu(0)
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    vcpu.set_single_step(True)
    seen = []
    for _ in range(4):
        exit_ = vcpu.run()
        assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
        rip, rax, rflags = vcpu.get_registers((Reg.RIP, Reg.RAX, Reg.RFLAGS))
        assert not rflags & RFLAGS_TF
        seen.append((rip - CODE, rax))
    vcpu.set_single_step(False)
    assert seen == [(5, 1), (7, 2), (9, 3), (11, 3)]
    assert guest.io.writes == [(0, 0x80, 4, 3)]


def test_an_int1_breakpoint_stops_at_its_byte_and_resumes(guest):
    vcpu = guest.vcpu(0)
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit) and exit_.is_icebp, exit_
    assert exit_.rip == CODE + 11
    vcpu.set(Reg.RIP, CODE + 12)  # the engine steps over the byte the same way
    exit_ = vcpu.run()
    assert isinstance(exit_, HaltExit), exit_
    assert vcpu.get_int(Reg.RAX) == 4
    assert guest.io.writes == [(0, 0x80, 4, 3)]
