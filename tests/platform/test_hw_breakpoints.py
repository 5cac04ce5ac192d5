"""Hardware breakpoints: the debugger's slots (`Partition.set_hardware_breakpoints`) and the
guest's own DR0-DR3/DR7, with real guest code on every platform.

What a platform cannot do is skipped with the reason it measured (`Capabilities`).
"""

from __future__ import annotations

import struct

import pytest

from tests.asm import assemble
from tests.platform.rawguest import CODE, RawGuest
from whpx_core.platform.base import HwBreakpoint, Platform, PlatformError
from whpx_core.platform.exits import DR6_BS, ExceptionExit, Exit, HaltExit, Vector
from whpx_core.platform.registers import Reg

HANDLER = CODE + 0x1000
DATA = 0x200000
TARGET = CODE + 0x20  # where `.org 0x20` puts the code the tests break on
HITS = 0xF


@pytest.fixture
def guest(platform: Platform):
    caps = platform.capabilities()
    if caps.hardware_breakpoints < 4:
        pytest.skip(f"{platform.name}: {caps.hardware_breakpoints} hardware breakpoint "
                    f"slots (measured)")
    raw = RawGuest(platform)
    yield raw
    raw.close()


def need_watchpoints(platform: Platform) -> None:
    caps = platform.capabilities()
    if not caps.hardware_watchpoints:
        why = next((n for n in caps.notes if "watchpoints" in n), "not available (measured)")
        pytest.skip(f"{platform.name}: data watchpoints: {why}")


def slots(*pairs: tuple[int, HwBreakpoint]) -> list[HwBreakpoint | None]:
    out: list[HwBreakpoint | None] = [None] * 4
    for n, bp in pairs:
        out[n] = bp
    return out


def db_exit(exit_: Exit) -> ExceptionExit:
    assert isinstance(exit_, ExceptionExit) and exit_.vector == Vector.DB, exit_
    return exit_


def halt(exit_: Exit) -> HaltExit:
    assert isinstance(exit_, HaltExit), exit_
    return exit_


def step(guest: RawGuest) -> ExceptionExit:
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    try:
        return db_exit(vcpu.run())
    finally:
        vcpu.set_single_step(False)


# A loop whose body starts at TARGET: inc %ebx (2 bytes), dec %ecx, jnz back.
LOOP = "mov $3, %ecx; jmp 1f; .org 0x20; 1: inc %ebx; dec %ecx; jnz 1b; cli; hlt"
AFTER_INC = TARGET + 2


# -- execute slots --------------------------------------------------------------------------
@pytest.mark.parametrize("slot", range(4))
def test_execute_breakpoint_stops_before_the_instruction(guest: RawGuest, slot: int) -> None:
    guest.load(assemble("nop; jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
    guest.partition.set_hardware_breakpoints(slots((slot, HwBreakpoint(TARGET))))
    exit_ = db_exit(guest.vcpu().run())
    assert exit_.rip == TARGET and exit_.debug_status & HITS == 1 << slot
    assert not exit_.is_single_step
    assert guest.vcpu().get_registers([Reg.RIP, Reg.RBX]) == [TARGET, 0]  # not executed


def test_step_from_the_breakpoint_then_each_iteration_hits_again(guest: RawGuest) -> None:
    guest.load(assemble(LOOP))
    guest.partition.set_hardware_breakpoints(slots((1, HwBreakpoint(TARGET))))
    vcpu = guest.vcpu()
    for iteration in range(3):
        exit_ = db_exit(vcpu.run())
        assert (exit_.rip, exit_.debug_status & HITS) == (TARGET, 0b10)
        assert vcpu.get_int(Reg.RBX) == iteration
        # The engine resumes by stepping with the breakpoint still set: no second hit.
        stepped = step(guest)
        assert stepped.is_single_step and stepped.rip == AFTER_INC
        assert vcpu.get_int(Reg.RBX) == iteration + 1
    halt(vcpu.run())


def test_continuing_from_the_breakpoint_does_not_hit_it_at_once(guest: RawGuest) -> None:
    guest.load(assemble(LOOP))
    guest.partition.set_hardware_breakpoints(slots((0, HwBreakpoint(TARGET))))
    vcpu = guest.vcpu()
    hits = []
    while isinstance(exit_ := vcpu.run(), ExceptionExit):
        hits.append((exit_.rip, vcpu.get_int(Reg.RBX)))
    halt(exit_)
    assert hits == [(TARGET, 0), (TARGET, 1), (TARGET, 2)]  # once per arrival


def test_a_step_that_arrives_at_the_breakpoint_reports_it_next(guest: RawGuest) -> None:
    guest.load(assemble("jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
    guest.partition.set_hardware_breakpoints(slots((2, HwBreakpoint(TARGET))))
    assert step(guest).rip == TARGET  # the jmp: a plain step that lands there
    hit = step(guest)  # then the breakpoint, before the instruction runs
    assert not hit.is_single_step and (hit.rip, hit.debug_status & HITS) == (TARGET, 0b100)
    stepped = step(guest)
    assert stepped.is_single_step and stepped.rip == AFTER_INC
    assert guest.vcpu().get_int(Reg.RBX) == 1


def test_clearing_the_slots_stops_the_hits(guest: RawGuest) -> None:
    guest.load(assemble(LOOP))
    partition, vcpu = guest.partition, guest.vcpu()
    partition.set_hardware_breakpoints(slots((3, HwBreakpoint(TARGET))))
    db_exit(vcpu.run())
    partition.set_hardware_breakpoints([None] * 4)
    halt(vcpu.run())
    assert vcpu.get_int(Reg.RBX) == 3


def test_breakpoint_set_on_code_that_already_ran(guest: RawGuest) -> None:
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    guest.load(assemble("jmp 1f; .org 0x20; 1: inc %ebx; .byte 0xf1; jmp 1b"))
    vcpu = guest.vcpu()
    assert db_exit(vcpu.run()).is_icebp  # TARGET ran and is translated / cached
    vcpu.set(Reg.RIP, TARGET)
    guest.partition.set_hardware_breakpoints(slots((0, HwBreakpoint(TARGET))))
    exit_ = db_exit(vcpu.run())
    assert (exit_.rip, exit_.debug_status & HITS, vcpu.get_int(Reg.RBX)) == (TARGET, 1, 1)


def test_the_slots_apply_to_every_vcpu(platform: Platform, guest: RawGuest) -> None:
    two = RawGuest(platform, cpus=2)
    try:
        two.load(assemble("jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
        two.partition.set_hardware_breakpoints(slots((1, HwBreakpoint(TARGET))))
        for index in range(2):
            exit_ = db_exit(two.vcpu(index).run())
            assert (exit_.rip, exit_.debug_status & HITS) == (TARGET, 0b10)
            halt(two.vcpu(index).run())
    finally:
        two.close()


def test_host_hits_leave_the_guest_dr6_alone(guest: RawGuest) -> None:
    guest.load(assemble(LOOP))
    vcpu = guest.vcpu()
    dr6 = vcpu.get_int(Reg.DR6)
    guest.partition.set_hardware_breakpoints(slots((0, HwBreakpoint(TARGET))))
    db_exit(vcpu.run())
    step(guest)
    assert vcpu.get_int(Reg.DR6) == dr6


# -- bad slots ----------------------------------------------------------------------------
@pytest.mark.parametrize(("bad", "words"), [
    ([HwBreakpoint(CODE)] * 5, "only 4"),
    ([HwBreakpoint(DATA + 2, "write", 4)], "aligned"),
    ([HwBreakpoint(DATA, "write", 3)], "1, 2, 4 or 8"),
    ([HwBreakpoint(DATA, "read", 4)], "no read-only"),
    ([HwBreakpoint(CODE, "execute", 4)], "size 1"),
])
def test_invalid_slots_are_refused_with_a_reason(guest: RawGuest, bad, words: str) -> None:
    with pytest.raises(PlatformError, match=words):
        guest.partition.set_hardware_breakpoints(bad)


def test_watchpoints_are_refused_where_they_do_not_fire(platform: Platform,
                                                        guest: RawGuest) -> None:
    if platform.capabilities().hardware_watchpoints:
        pytest.skip(f"{platform.name} has data watchpoints")
    with pytest.raises(PlatformError, match="watchpoints"):
        guest.partition.set_hardware_breakpoints([HwBreakpoint(DATA, "write", 8)])


# -- data slots -----------------------------------------------------------------------------
STORES = {1: "movb $0x11, {a}", 2: "movw $0x2222, {a}", 4: "movl $0x44444444, {a}",
          8: "movq $0x8888, {a}"}


def run_access(guest: RawGuest, access: str, bp: HwBreakpoint, slot: int = 0) -> tuple[
        Exit, int]:
    """Run `access; inc %ebx; cli; hlt` with one slot; return the exit and the address
    just after the access."""
    first = assemble(access)
    guest.load(first + assemble("inc %ebx; cli; hlt"))
    guest.partition.set_hardware_breakpoints(slots((slot, bp)))
    return guest.vcpu().run(), CODE + len(first)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_write_watchpoint_hits_after_the_write(platform: Platform, guest: RawGuest,
                                               size: int) -> None:
    need_watchpoints(platform)
    slot = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    store = STORES[size].format(a=DATA)
    exit_, after = run_access(guest, store, HwBreakpoint(DATA, "write", size), slot)
    exit_ = db_exit(exit_)
    assert (exit_.rip, exit_.debug_status & HITS) == (after, 1 << slot)
    assert guest.vcpu().get_int(Reg.RBX) == 0  # the next instruction has not run
    assert guest.partition.read_memory(DATA, 1) != b"\0"  # the write has


@pytest.mark.parametrize(("access", "hits"), [
    (f"movq $1, {DATA - 4}", True),  # 8 bytes overlapping the slot's first half
    (f"movl $1, {DATA + 4}", False),  # the bytes just after the slot
    (f"movl $1, {DATA - 4}", False),  # the bytes just before
])
def test_a_watchpoint_hits_on_any_overlap(platform: Platform, guest: RawGuest, access: str,
                                          hits: bool) -> None:
    need_watchpoints(platform)
    exit_, after = run_access(guest, access, HwBreakpoint(DATA, "write", 4))
    if hits:
        assert db_exit(exit_).rip == after
    else:
        halt(exit_)


def test_readwrite_watchpoint_hits_on_a_read(platform: Platform, guest: RawGuest) -> None:
    need_watchpoints(platform)
    guest.partition.write_memory(DATA, struct.pack("<Q", 0x1234))
    exit_, after = run_access(guest, f"mov {DATA}, %rax", HwBreakpoint(DATA, "readwrite", 8), 2)
    exit_ = db_exit(exit_)
    assert (exit_.rip, exit_.debug_status & HITS) == (after, 0b100)
    assert guest.vcpu().get_int(Reg.RAX) == 0x1234  # the read completed


def test_write_watchpoint_ignores_reads(platform: Platform, guest: RawGuest) -> None:
    need_watchpoints(platform)
    exit_, _ = run_access(guest, f"mov {DATA}, %rax", HwBreakpoint(DATA, "write", 8))
    halt(exit_)


def test_read_modify_write_completes_exactly_once(platform: Platform, guest: RawGuest) -> None:
    need_watchpoints(platform)
    guest.partition.write_memory(DATA, struct.pack("<Q", 10))
    exit_, after = run_access(guest, f"addq $5, {DATA}", HwBreakpoint(DATA, "write", 8))
    assert db_exit(exit_).rip == after
    halt(guest.vcpu().run())
    assert struct.unpack("<Q", guest.partition.read_memory(DATA, 8))[0] == 15


def test_a_push_completes_before_its_watchpoint_reports(platform: Platform,
                                                        guest: RawGuest) -> None:
    need_watchpoints(platform)
    rsp = guest.vcpu().get_int(Reg.RSP)
    guest.load(assemble("call 1f; 1: inc %ebx; cli; hlt"))
    guest.partition.set_hardware_breakpoints([HwBreakpoint(rsp - 8, "write", 8)])
    exit_ = db_exit(guest.vcpu().run())
    after = CODE + 5  # call rel32
    assert exit_.rip == after  # the call has jumped, and:
    assert guest.vcpu().get_int(Reg.RSP) == rsp - 8  # RSP moved with the push
    assert guest.read_u64(rsp - 8) == after


def test_stepping_over_a_watched_write_reports_both(platform: Platform,
                                                    guest: RawGuest) -> None:
    need_watchpoints(platform)
    store = assemble(f"movq $1, {DATA}")
    guest.load(store + assemble("cli; hlt"))
    guest.partition.set_hardware_breakpoints(slots((1, HwBreakpoint(DATA, "write", 8))))
    exit_ = step(guest)
    assert exit_.rip == CODE + len(store)
    assert exit_.debug_status & (HITS | DR6_BS) == 0b10 | DR6_BS


def test_clearing_a_watchpoint_stops_its_hits(platform: Platform, guest: RawGuest) -> None:
    need_watchpoints(platform)
    guest.load(assemble(f"1: incq {DATA}; cmpq $3, {DATA}; jne 1b; cli; hlt"))
    guest.partition.set_hardware_breakpoints(slots((0, HwBreakpoint(DATA, "readwrite", 8))))
    db_exit(guest.vcpu().run())
    guest.partition.set_hardware_breakpoints([])
    halt(guest.vcpu().run())
    assert struct.unpack("<Q", guest.partition.read_memory(DATA, 8))[0] == 3


# -- the guest's own debug registers ---------------------------------------------------------
# Reports DR6 (port 0x81) and the saved RIP (0x82), clears DR6 and DR7, returns.
DISARMING_HANDLER = ("mov %dr6, %rax; out %eax, $0x81; mov (%rsp), %rax; out %eax, $0x82;"
                     "xor %eax, %eax; mov %rax, %dr6; mov $0x400, %eax; mov %rax, %dr7; iretq")
# Reports DR6, clears it, and resumes with RFLAGS.RF set in the frame: DR7 stays armed.
RF_HANDLER = ("mov %dr6, %rax; out %eax, $0x81; xor %eax, %eax; mov %rax, %dr6;"
              "orq $0x10000, 16(%rsp); iretq")
ARM_DR0_EXECUTE = f"mov ${TARGET}, %rax; mov %rax, %dr0; mov $0x401, %eax; mov %rax, %dr7;"


def with_handler(guest: RawGuest, handler: str) -> None:
    guest.install_idt({Vector.DB: HANDLER})
    guest.load(assemble(handler), at=HANDLER)


@pytest.mark.parametrize("intercepted", [False, True])
def test_guest_execute_breakpoint_reaches_its_own_handler(platform: Platform, guest: RawGuest,
                                                          intercepted: bool) -> None:
    if intercepted and platform.name == "kvm" and not getattr(platform, "is_pvm", False):
        pytest.skip("hardware KVM: intercepting #DB takes the guest's DRs into KVM guest "
                    "debug (KVM_GUESTDBG_USE_HW_BP), so its hits exit to the host")
    if intercepted:
        guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    with_handler(guest, DISARMING_HANDLER)
    guest.load(assemble(ARM_DR0_EXECUTE + "jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
    halt(guest.vcpu().run())
    (_, _, _, dr6), (_, _, _, saved_rip) = guest.io.writes
    assert dr6 & HITS == 0b1 and saved_rip == TARGET  # a fault: before the instruction
    assert guest.vcpu().get_int(Reg.RBX) == 1


def test_guest_execute_breakpoint_resumed_with_rf_hits_once_per_arrival(
        guest: RawGuest) -> None:
    with_handler(guest, RF_HANDLER)
    guest.load(assemble(ARM_DR0_EXECUTE + LOOP))
    halt(guest.vcpu().run())
    assert [w[3] & HITS for w in guest.io.writes] == [1, 1, 1]
    assert guest.vcpu().get_int(Reg.RBX) == 3


def test_guest_breakpoint_set_through_set_registers(guest: RawGuest) -> None:
    with_handler(guest, DISARMING_HANDLER)
    guest.load(assemble("jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
    guest.vcpu().set_registers({Reg.DR2: TARGET, Reg.DR7: 0x400 | 1 << 4})
    halt(guest.vcpu().run())
    assert [w[3] for w in guest.io.writes][1:] == [TARGET]
    assert guest.io.writes[0][3] & HITS == 0b100


def test_guest_write_watchpoint_reaches_its_own_handler(platform: Platform,
                                                        guest: RawGuest) -> None:
    need_watchpoints(platform)
    with_handler(guest, DISARMING_HANDLER)
    # DR1: 4-byte write watchpoint (R/W1 = 01, LEN1 = 11). The emulated platform arms a
    # breakpoint the guest enables at the next slice: spin past one first.
    arm = (f"mov ${DATA}, %rax; mov %rax, %dr1; mov $0xd00404, %eax; mov %rax, %dr7;"
           "mov $60000, %ecx; 2: loop 2b;")
    store = assemble(f"movl $7, {DATA}")
    prefix = assemble(arm)
    guest.load(prefix + store + assemble("inc %ebx; cli; hlt"))
    halt(guest.vcpu().run())
    (_, _, _, dr6), (_, _, _, saved_rip) = guest.io.writes
    assert dr6 & HITS == 0b10 and saved_rip == CODE + len(prefix) + len(store)  # a trap


def test_the_debuggers_slots_and_the_guests_coexist(platform: Platform,
                                                    guest: RawGuest) -> None:
    if platform.name == "kvm" and not getattr(platform, "is_pvm", True):
        pytest.skip("hardware KVM loads only the debugger's DRs while it has slots "
                    "(KVM_GUESTDBG_USE_HW_BP, from the kernel source)")
    with_handler(guest, DISARMING_HANDLER)
    guest.load(assemble(ARM_DR0_EXECUTE + "nop; jmp 1f; .org 0x20; 1: inc %ebx; cli; hlt"))
    nop = len(assemble(ARM_DR0_EXECUTE))
    guest.partition.set_hardware_breakpoints(slots((3, HwBreakpoint(CODE + nop))))
    exit_ = db_exit(guest.vcpu().run())
    assert (exit_.rip, exit_.debug_status & HITS) == (CODE + nop, 0b1000)
    halt(guest.vcpu().run())
    assert guest.io.writes[0][3] & HITS == 0b1  # the guest's own, delivered to it
