"""The emulated platform's C hot path (platform/emulated/native/) against its pure-Python
twin, and the Unicorn behaviour it relies on.

The C slice must change nothing but speed: the same guest, stepped instruction by
instruction through the engine, leaves the same trace of stops and registers either way.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

from whpx_core.debug.events import Exited, Stopped
from whpx_core.debug.launch import launch
from whpx_core.machine.elf_loader import load_elf
from whpx_core.platform.choice import choose
from whpx_core.platform.emulated import native
from whpx_core.platform.registers import Reg

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3000

pytestmark = pytest.mark.skipif(native.load() is None,
                                reason=f"the C slice is not in use here: {native.reason()}")


def _trace(guest: Path, *, c_slice: bool, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    with monkeypatch.context() as patch:
        if not c_slice:
            patch.setattr(native, "load", lambda: None)
        engine = launch(choose("emulated").platform, load_elf(guest))
    try:
        trace: list[object] = []
        for _ in range(STEPS):
            stop = engine.step_instruction(0)
            if isinstance(stop, Exited):
                trace.append(stop)
                break
            rsp, rflags = engine.get_registers(0, [Reg.RSP, Reg.RFLAGS])
            trace.append((stop.reason, stop.rip, rsp, rflags))
        if not isinstance(trace[-1], Exited):
            engine.resume()
            trace.append(engine.wait_stop(60))
        trace.append(engine.output.decode(errors="replace"))
        return trace
    finally:
        engine.close()


@pytest.mark.parametrize("guest", ["tfprobe", "selfdebug", "faults", "timer"])
def test_c_slice_steps_exactly_like_the_python_slice(guests, guest, monkeypatch):
    """PUSHF / POPF / IRETQ / INT n / faults / the guest's own TF and DR0, every one
    stepped through the engine: the C slice's fast step and its fallbacks."""
    with_c = _trace(guests[guest], c_slice=True, monkeypatch=monkeypatch)
    without = _trace(guests[guest], c_slice=False, monkeypatch=monkeypatch)
    assert len(with_c) > 100
    assert with_c == without


def test_c_slice_hits_like_the_python_slice(guests, monkeypatch):
    """Breakpoint hits on two vCPUs and the exclusive step off each (write_step_byte),
    to the guest's end. Which vCPU hits first depends on host thread timing (a stop
    cancels the other vCPU wherever it is), so the hits are compared as counts."""
    def hits(c_slice: bool) -> tuple[Counter[int], object, str]:
        with monkeypatch.context() as patch:
            if not c_slice:
                patch.setattr(native, "load", lambda: None)
            image = load_elf(guests["smp"])
            engine = launch(choose("emulated").platform, image, cpus=2)
        try:
            engine.write_memory(image.symbols["smp_iterations"], (300).to_bytes(8, "little"))
            engine.add_breakpoint(image.symbols["smp_hit"])
            seen: Counter[int] = Counter()
            while True:
                engine.resume()
                stop = engine.wait_stop(60)
                if not isinstance(stop, Stopped):
                    return seen, stop, engine.output.decode(errors="replace")
                seen[stop.vcpu] += 1
        finally:
            engine.close()

    with_c = hits(True)
    assert sum(with_c[0].values()) > 10 and len(with_c[0]) == 2
    assert with_c == hits(False)


def test_unicorn_translates_tf_code_apart_from_free_running_code():
    """What EmulatedPartition.write_step_byte relies on: TF is part of the key of a
    Unicorn translation, so a byte swapped in without invalidating (as the park/unpark
    cycle does) is seen by the first TF run there while free runs keep their code."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    ram = mmap.mmap(-1, 0x10000)
    uc.mem_map_ptr(0, len(ram), UC_PROT_ALL, ctypes.addressof(ctypes.c_char.from_buffer(ram)))
    events: list[object] = []

    def on_interrupt(uc: Uc, vector: int, data: object) -> None:
        events.append(vector)
        uc.emu_stop()

    def on_invalid(uc: Uc, data: object) -> bool:
        events.append("invalid")
        uc.emu_stop()
        return True

    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    uc.hook_add(UC_HOOK_INSN_INVALID, on_invalid)
    code = 0x1000
    ram[code : code + 4] = bytes.fromhex("48ffc0f4")  # inc rax; hlt

    def run(tf: bool) -> tuple[int, list[object]]:
        events.clear()
        uc.reg_write(x86.UC_X86_REG_RAX, 0)
        uc.reg_write(x86.UC_X86_REG_RFLAGS, 0x2 | (0x100 if tf else 0))
        uc.emu_start(code, 0, count=1)
        return uc.reg_read(x86.UC_X86_REG_RAX), list(events)

    assert run(tf=False) == (1, [])  # translated from inc rax
    ram[code] = 0xF1  # swapped in, nothing invalidated
    assert run(tf=False) == (1, [])  # the free run keeps its translation...
    assert run(tf=True) == (0, ["invalid"])  # ...the first TF run translates the INT1
    ram[code] = 0x48
    assert run(tf=True) == (0, ["invalid"])  # and keeps it: why code translated under
    # TF while an INT1 was planted (tf_translations_unsafe) makes write_step_byte invalidate
    uc.ctl_remove_cache(code, code + 1)
    assert run(tf=True) == (1, [1])


def _native_in_subprocess(env: dict[str, str]) -> str:
    script = ("from whpx_core.platform.emulated import native; "
              "print(native.load() is not None, native.reason())")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_whpx_native_0_selects_the_python_slice():
    assert _native_in_subprocess({"WHPX_NATIVE": "0"}) == "False WHPX_NATIVE=0"


def test_without_a_compiler_the_python_slice_runs_and_says_why(tmp_path):
    out = _native_in_subprocess({"WHPX_NATIVE_CACHE": str(tmp_path), "CC": "no-such-cc",
                                 "PATH": str(tmp_path)})
    assert out.startswith("False could not build fastslice.c: no C compiler"), out


def test_the_library_is_built_once_into_the_cache(tmp_path):
    suffix = ".dll" if sys.platform == "win32" else ".so"
    (tmp_path / f"fastslice-0000000000000000{suffix}").write_bytes(b"from an older source")
    assert _native_in_subprocess({"WHPX_NATIVE_CACHE": str(tmp_path)}) == "True None"
    built = list(tmp_path.iterdir())  # the older one pruned
    assert [p.name.startswith("fastslice-") for p in built] == [True]
    stamp = built[0].stat().st_mtime_ns
    assert _native_in_subprocess({"WHPX_NATIVE_CACHE": str(tmp_path)}) == "True None"
    assert [p.stat().st_mtime_ns for p in tmp_path.iterdir()] == [stamp]


def test_stepping_off_a_breakpoint_after_a_step_that_did_not_trap(monkeypatch):
    """After MOV SS the single-step trap waits an instruction, so the step ends on its
    count, and Unicorn has already translated the next block under TF: from the INT1
    planted there. Stepping off that breakpoint must not run it (it used to, as a #UD)."""
    from tests.platform.rawguest import CODE, RawGuest
    from whpx_core.platform.exits import ExceptionExit, Vector

    for c_slice in (True, False):
        with monkeypatch.context() as patch:
            if not c_slice:
                patch.setattr(native, "load", lambda: None)
            guest = RawGuest(choose("emulated").platform)
        try:
            guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
            planted = CODE + 4
            guest.load(bytes.fromhex("8cd0" "8ed0" "90" "90"))  # mov eax,ss; mov ss,eax
            partition, vcpu = guest.partition, guest.vcpu(0)
            partition.swap_bytes([planted], [0xF1])  # as the breakpoint table plants it
            vcpu.set_single_step(True)
            for _ in range(2):
                assert isinstance(vcpu.run(), ExceptionExit)
            assert vcpu.get_int(Reg.RIP) == planted
            partition.write_step_byte(planted, 0x90)  # the engine's step-over
            done = vcpu.run()
            assert isinstance(done, ExceptionExit) and done.is_single_step, (c_slice, done)
            assert vcpu.get_int(Reg.RIP) == planted + 1, c_slice
        finally:
            guest.partition.close()


def test_a_step_does_not_hold_the_baton_lock_while_devices_run():
    """A device answering a stepped OUT may wait for another thread that cancels the
    vCPU or raises an interrupt (the WHPX stand-in's emulator bridge does): both need
    the baton's lock, so the fast step must not hold it while hooks run."""
    import threading

    from tests.platform.rawguest import RawGuest, RecordingIo
    from whpx_core.platform.exits import ExceptionExit

    guest = RawGuest(choose("emulated").platform)
    vcpu = guest.vcpu(0)
    answered: list[bool] = []

    class WaitingDevice(RecordingIo):
        def port_write(self, index: int, port: int, size: int, value: int) -> None:
            other = threading.Thread(target=lambda: (vcpu.request_interrupt(0x30),
                                                     vcpu.cancel()))
            other.start()
            other.join(5)
            answered.append(not other.is_alive())

    try:
        guest.partition.set_io_handler(WaitingDevice())
        guest.load(bytes.fromhex("e680" "90"))  # out 0x80, al; nop
        vcpu.set_single_step(True)
        assert isinstance(vcpu.run(), ExceptionExit)
        assert answered == [True]
    finally:
        vcpu.set_single_step(False)
        guest.partition.close()


def test_a_closed_partitions_vcpus_refuse_instead_of_crashing():
    from tests.platform.rawguest import RawGuest
    from whpx_core.platform.base import PlatformError

    guest = RawGuest(choose("emulated").platform)
    vcpu = guest.vcpu(0)
    guest.partition.close()
    for touch in (lambda: vcpu.get_registers([Reg.RAX]), lambda: vcpu.set(Reg.RAX, 1),
                  vcpu.run, lambda: vcpu.translate_gva(0x1000)):
        with pytest.raises(PlatformError, match="closed"):
            touch()
