"""The platform interface's contract, checked with real guest code on every platform."""

from __future__ import annotations

import threading
import time

import pytest

from tests.asm import assemble
from tests.platform.rawguest import CODE, RawGuest
from whpx_core.machine import boot
from whpx_core.platform.exits import (
    CanceledExit,
    ExceptionExit,
    HaltExit,
    Vector,
)
from whpx_core.platform.registers import (
    GENERAL_REGS,
    RFLAGS_TF,
    Reg,
    Segment,
    Table,
)

HANDLER = CODE + 0x1000


@pytest.fixture
def guest(platform):
    raw = RawGuest(platform)
    yield raw
    raw.close()


def run_to_halt(guest: RawGuest, index: int = 0):
    exit_ = guest.vcpu(index).run()
    assert isinstance(exit_, HaltExit), exit_
    return exit_


def test_port_write_reaches_the_io_handler(guest):
    guest.load(assemble("mov $0x1234, %eax; out %eax, $0x80; cli; hlt"))
    run_to_halt(guest)
    assert guest.io.writes == [(0, 0x80, 4, 0x1234)]


def test_port_read_gets_the_io_handler_value(guest):
    guest.io.port_values[0x81] = 0x5A
    guest.load(assemble("in $0x81, %al; out %al, $0x80; cli; hlt"))
    run_to_halt(guest)
    assert guest.io.writes == [(0, 0x80, 1, 0x5A)]


def test_mmio_accesses_reach_the_io_handler(guest):
    guest.partition.add_mmio_region(boot.LAPIC_GPA, boot.LAPIC_SIZE)
    guest.io.mmio_values[boot.LAPIC_GPA + 0x390] = 99
    guest.load(assemble(
        "mov $0xfee00000, %rbx; movl $7, 0x380(%rbx); mov 0x390(%rbx), %eax;"
        "out %eax, $0x80; cli; hlt"))
    run_to_halt(guest)
    assert guest.io.mmio_writes == [(0, boot.LAPIC_GPA + 0x380, 4, 7)]
    assert guest.io.writes == [(0, 0x80, 4, 99)]


def test_hlt_with_interrupts_off_is_a_halt_exit(guest):
    code = assemble("nop; cli; hlt")
    guest.load(code)
    exit_ = run_to_halt(guest)
    assert exit_.rip == CODE + len(code)


def test_icebp_is_a_debug_exception_at_the_byte_when_intercepted(guest):
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    guest.load(assemble("nop; .byte 0xf1; nop; cli; hlt"))
    exit_ = guest.vcpu().run()
    assert isinstance(exit_, ExceptionExit), exit_
    assert exit_.vector == Vector.DB and exit_.rip == CODE + 1 and exit_.is_icebp
    assert guest.vcpu().get_int(Reg.RIP) == CODE + 1


def test_exceptions_not_intercepted_reach_the_guest_idt(guest):
    guest.install_idt({Vector.UD: HANDLER})
    guest.load(assemble("mov (%rsp), %rax; out %eax, $0x83; cli; hlt"), at=HANDLER)
    guest.load(assemble("nop; ud2; cli; hlt"))
    run_to_halt(guest)
    # The handler saw the #UD frame: saved RIP is the ud2 itself.
    assert guest.io.writes == [(0, 0x83, 4, CODE + 1)]


def test_intercepted_page_fault_reports_address_and_error_code(platform, guest):
    if Vector.PF not in platform.capabilities().interceptable_vectors:
        pytest.skip(f"{platform.name} cannot intercept #PF (only "
                    f"{sorted(platform.capabilities().interceptable_vectors)})")
    guest.partition.set_exception_intercepts(frozenset({Vector.PF}))
    guest.load(assemble("movq $1, 0x40000000; cli; hlt"))
    exit_ = guest.vcpu().run()
    assert isinstance(exit_, ExceptionExit), exit_
    assert (exit_.vector, exit_.rip, exit_.error_code, exit_.cr2) == \
        (Vector.PF, CODE, 0x2, 0x40000000)


def test_single_step_exits_after_each_instruction(guest):
    code = assemble("nop; xor %eax, %eax; inc %eax; cli; hlt")
    guest.load(code)
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    rips = []
    for _ in range(3):
        exit_ = vcpu.run()
        assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
        rips.append(exit_.rip)
        assert not vcpu.get_int(Reg.RFLAGS) & RFLAGS_TF
    assert rips == [CODE + 1, CODE + 3, CODE + 5]
    assert vcpu.get_int(Reg.RAX) == 1
    vcpu.set_single_step(False)
    run_to_halt(guest)


def test_cancel_from_another_thread_stops_a_spinning_vcpu(guest):
    guest.load(assemble("1: jmp 1b"))
    vcpu = guest.vcpu()
    timer = threading.Timer(0.2, vcpu.cancel)
    timer.start()
    started = time.monotonic()
    exit_ = vcpu.run()
    elapsed = time.monotonic() - started
    timer.join()
    assert isinstance(exit_, CanceledExit), exit_
    assert elapsed < 5, f"cancel took {elapsed:.2f}s"


def test_cancel_before_run_makes_the_next_run_return_at_once(guest):
    guest.load(assemble("1: jmp 1b"))
    guest.vcpu().cancel()
    assert isinstance(guest.vcpu().run(), CanceledExit)


def test_requested_interrupt_wakes_a_halted_vcpu_through_the_idt(guest):
    guest.install_idt({0x40: HANDLER})
    guest.load(assemble("out %al, $0x82; cli; hlt"), at=HANDLER)
    guest.load(assemble("sti; 1: hlt; jmp 1b"))
    vcpu = guest.vcpu()
    timer = threading.Timer(0.1, vcpu.request_interrupt, args=(0x40,))
    timer.start()
    run_to_halt(guest)
    timer.join()
    assert [w[1] for w in guest.io.writes] == [0x82]


def test_register_round_trip(guest):
    vcpu = guest.vcpu()
    values = {reg: 0x1111_0000_0000_0000 + n * 0x0101 for n, reg in enumerate(GENERAL_REGS)}
    vcpu.set_registers(values)
    assert vcpu.get_registers(list(values)) == list(values.values())
    cs, ds, tr, gdtr = vcpu.get_registers([Reg.CS, Reg.DS, Reg.TR, Reg.GDTR])
    assert isinstance(cs, Segment) and cs.selector == boot.CODE_SELECTOR and cs.long_mode
    assert isinstance(ds, Segment) and ds.selector == boot.DATA_SELECTOR
    assert isinstance(tr, Segment) and tr.selector == boot.TSS_SELECTOR
    assert tr.base == boot.TSS_GPA
    assert gdtr == Table(boot.GDT_GPA, 39)
    assert vcpu.get_registers([Reg.CR0, Reg.CR3, Reg.CR4, Reg.EFER]) == \
        [boot.CR0, boot.PML4_GPA, boot.CR4, boot.EFER]
    vcpu.set(Reg.DR0, 0x100000)
    assert vcpu.get_int(Reg.DR0) == 0x100000


def test_each_vcpu_runs_in_its_own_thread(platform):
    guest = RawGuest(platform, cpus=2)
    try:
        guest.load(assemble("mov %edi, %eax; out %eax, $0x80; cli; hlt"))
        exits: dict[int, object] = {}
        threads = [threading.Thread(target=lambda i=i: exits.__setitem__(i, guest.vcpu(i).run()))
                   for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(isinstance(exits.get(i), HaltExit) for i in range(2)), exits
        assert sorted(w[3] for w in guest.io.writes) == [0, 1]
    finally:
        guest.close()


def test_exception_without_a_handler_becomes_a_double_fault(guest):
    guest.install_idt({Vector.DF: HANDLER})
    # The #DF frame carries error code 0 on top of the stack.
    guest.load(assemble("mov (%rsp), %rax; out %eax, $0x84; cli; hlt"), at=HANDLER)
    guest.load(assemble("ud2; cli; hlt"))
    run_to_halt(guest)
    assert guest.io.writes == [(0, 0x84, 4, 0)]


def test_exception_without_any_idt_is_a_triple_fault_shutdown(guest):
    from whpx_core.platform.exits import ShutdownExit

    guest.load(assemble("ud2"))
    assert isinstance(guest.vcpu().run(), ShutdownExit)


def test_host_writes_over_translated_code_take_effect(guest):
    """Platforms that cache translated code (Unicorn) must drop it on a host write."""
    guest.load(assemble("mov $1, %eax; out %eax, $0x80; cli; hlt"))
    run_to_halt(guest)
    guest.partition.write_memory(CODE + 1, b"\x02")  # the immediate of the mov
    guest.vcpu().set(Reg.RIP, CODE)
    run_to_halt(guest)
    assert [w[3] for w in guest.io.writes] == [1, 2]
