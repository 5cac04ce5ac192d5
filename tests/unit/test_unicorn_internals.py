"""The calibrated Unicorn internals, checked against fresh engines and real faults."""

from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

from whpx_core.platform.emulated.unicorn_internals import CpuInternals, calibrate


def engine() -> tuple[Uc, list[int]]:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x200000, UC_PROT_ALL)
    uc.reg_write(x86.UC_X86_REG_RSP, 0x100000)
    vectors: list[int] = []

    def on_intr(uc: Uc, intno: int, data: object) -> None:
        vectors.append(intno)
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_intr)
    return uc, vectors


def run(uc: Uc, code: bytes, count: int = 20) -> None:
    uc.mem_write(0x1000, code + b"\x90" * 16)
    uc.ctl_remove_cache(0x1000, 0x1000 + len(code) + 16)
    uc.emu_start(0x1000, 0, count=count)


def test_calibration_finds_distinct_fields():
    offsets = calibrate()
    fields = [offsets.hflags, offsets.error_code, offsets.exception_is_int,
              offsets.old_exception, offsets.halted]
    assert len(set(fields)) == len(fields)


def test_error_code_of_a_general_protection_fault():
    uc, vectors = engine()
    internals = CpuInternals(uc)
    run(uc, bytes.fromhex("66b8f00f8ed8"))  # mov ax,0x0ff0; mov ds,ax -> #GP(0x0ff0)
    assert vectors == [13]
    assert internals.error_code == 0x0FF0
    assert not internals.exception_is_int


def test_clearing_the_exception_in_flight_stops_false_double_faults():
    uc, vectors = engine()
    internals = CpuInternals(uc)
    for _ in range(2):
        run(uc, bytes.fromhex("31c9f7f1"))  # xor ecx,ecx; div ecx -> #DE
        internals.clear_exception_in_flight()
    assert vectors == [0, 0]
    uc2, vectors2 = engine()
    for _ in range(2):
        run(uc2, bytes.fromhex("31c9f7f1"))
    assert vectors2 == [0, 8], "without the reset Unicorn promotes the second fault to #DF"


def test_software_interrupts_are_marked():
    uc, vectors = engine()
    internals = CpuInternals(uc)
    run(uc, bytes.fromhex("cd41"))
    assert vectors == [0x41] and internals.exception_is_int


def test_interrupt_shadow_after_sti_and_its_write():
    uc, _ = engine()
    internals = CpuInternals(uc)
    run(uc, bytes.fromhex("fb"), count=1)
    assert internals.interrupt_shadow
    internals.interrupt_shadow = False
    assert not internals.interrupt_shadow
    run(uc, bytes.fromhex("90"), count=1)
    assert not internals.interrupt_shadow


def test_halted_tells_hlt_from_the_end_of_a_slice():
    uc, _ = engine()
    internals = CpuInternals(uc)
    run(uc, bytes.fromhex("90f4"), count=2)
    assert internals.halted
    internals.clear_halted()
    run(uc, bytes.fromhex("9090"), count=2)
    assert not internals.halted
