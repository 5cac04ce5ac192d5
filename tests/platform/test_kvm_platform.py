"""The KVM backend with real guest machine code on /dev/kvm.

Skipped, with the reason, where /dev/kvm is not usable. Guests are tiny: CPL0 code is
emulated instruction by instruction on kvm_pvm (~1.7 M instructions/s).
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.asm import assemble
from tests.platform.rawguest import CODE, RawGuest
from whpx_core.machine import boot
from whpx_core.platform.base import HwBreakpoint, PlatformError
from whpx_core.platform.exits import (
    DR6_BS,
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    InternalErrorExit,
    Vector,
)
from whpx_core.platform.kvm.platform import KvmPlatform
from whpx_core.platform.registers import (
    GENERAL_REGS,
    RFLAGS_IF,
    RFLAGS_RF,
    RFLAGS_TF,
    Reg,
    RegValue,
    Segment,
    Table,
)

HANDLER = CODE + 0x1000
RAM = 4 << 20

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def kvm() -> KvmPlatform:
    reason = KvmPlatform.probe()
    if reason:
        pytest.skip(f"KVM not usable here: {reason}")
    return KvmPlatform()


@pytest.fixture
def guest(kvm: KvmPlatform) -> Iterator[RawGuest]:
    raw = RawGuest(kvm)
    yield raw
    raw.close()


def halt(exit_: Exit) -> HaltExit:
    assert isinstance(exit_, HaltExit), exit_
    return exit_


# -- platform -------------------------------------------------------------------------
def test_probe_describe_and_measured_capabilities(kvm: KvmPlatform) -> None:
    caps = kvm.capabilities()
    assert caps.max_vcpus >= 1
    assert caps.single_step in ("tf", "guest-debug")
    assert caps.icebp_exits
    if kvm.is_pvm:
        assert "kvm_pvm" in kvm.describe()
        assert any("kvm_pvm" in note for note in caps.notes)
        # Measured on kvm_pvm (platform-facts.md section 1).
        assert caps.single_step == "guest-debug"
        assert not caps.hardware_watchpoints


def test_too_many_vcpus_is_refused(kvm: KvmPlatform) -> None:
    with pytest.raises(PlatformError):
        kvm.create_partition(kvm.capabilities().max_vcpus + 1)


def test_close_is_idempotent_and_releases_the_buffer(kvm: KvmPlatform) -> None:
    partition = kvm.create_partition(1)
    ram = mmap.mmap(-1, RAM)
    partition.map_memory(0, ram)
    partition.clock.call_at(partition.clock.now_ns() + 10**9, lambda: None)
    partition.close()
    partition.close()
    ram.close()  # would raise BufferError if the backend still pinned it


def test_memory_reads_and_writes_span_adjacent_slots(kvm: KvmPlatform) -> None:
    with kvm.create_partition(1) as partition:
        low, high = mmap.mmap(-1, 0x1000), mmap.mmap(-1, 0x1000)
        partition.map_memory(0, low)
        partition.map_memory(0x1000, high)
        partition.write_memory(0xFFE, b"abcd")
        assert partition.read_memory(0xFFE, 4) == b"abcd"
        assert high[:2] == b"cd"
        with pytest.raises(PlatformError):
            partition.read_memory(0x2000, 1)
    low.close()
    high.close()


def test_only_db_and_bp_can_be_intercepted(guest: RawGuest) -> None:
    guest.partition.set_exception_intercepts(frozenset({Vector.DB, Vector.BP}))
    with pytest.raises(PlatformError, match="only #DB"):
        guest.partition.set_exception_intercepts(frozenset({Vector.PF}))


# -- port and MMIO I/O ----------------------------------------------------------------
def test_out_reaches_the_io_handler_with_each_size(guest: RawGuest) -> None:
    guest.load(
        assemble(
            "mov $0x42, %al; out %al, $0x10; mov $0x1234, %ax; out %ax, $0x12;"
            "mov $0xdeadbeef, %eax; mov $0x3f8, %dx; out %eax, %dx; cli; hlt"
        )
    )
    halt(guest.vcpu().run())
    assert guest.io.writes == [(0, 0x10, 1, 0x42), (0, 0x12, 2, 0x1234), (0, 0x3F8, 4, 0xDEADBEEF)]


def test_in_gets_the_io_handler_value(guest: RawGuest) -> None:
    guest.io.port_values.update({0x20: 0x5A, 0x22: 0xBEEF})
    guest.load(assemble("in $0x20, %al; mov %eax, %ebx; in $0x22, %ax; cli; hlt"))
    vcpu = guest.vcpu()
    vcpu.set_registers({Reg.RAX: 0, Reg.RBX: 0})
    halt(vcpu.run())
    assert vcpu.get_registers([Reg.RBX, Reg.RAX]) == [0x5A, 0xBEEF]


def test_string_io_with_a_count(guest: RawGuest) -> None:
    guest.io.port_values[0x31] = 0x77
    code = assemble(
        "lea data(%rip), %rsi; mov $3, %ecx; mov $0x30, %dx; rep outsb;"
        "lea buf(%rip), %rdi; mov $4, %ecx; mov $0x31, %dx; rep insb; cli; hlt;"
        "data: .byte 1, 2, 3; buf: .byte 0, 0, 0, 0, 0"
    )
    guest.load(code)
    halt(guest.vcpu().run())
    assert guest.io.writes == [(0, 0x30, 1, 1), (0, 0x30, 1, 2), (0, 0x30, 1, 3)]
    buf = CODE + len(code) - 5
    assert guest.partition.read_memory(buf, 5) == b"\x77\x77\x77\x77\x00"


def test_mmio_read_and_write(guest: RawGuest) -> None:
    guest.partition.add_mmio_region(boot.LAPIC_GPA, boot.LAPIC_SIZE)
    guest.io.mmio_values[boot.LAPIC_GPA + 0x20] = 0x1122_3344
    guest.load(
        assemble(
            "mov $0xfee00000, %rbx; movl $0x77, 0x80(%rbx); movw $0x55, 0xb0(%rbx);"
            "mov 0x20(%rbx), %eax; cli; hlt"
        )
    )
    vcpu = guest.vcpu()
    halt(vcpu.run())
    assert guest.io.mmio_writes == [
        (0, boot.LAPIC_GPA + 0x80, 4, 0x77),
        (0, boot.LAPIC_GPA + 0xB0, 2, 0x55),
    ]
    assert vcpu.get_int(Reg.RAX) == 0x1122_3344


# -- halts, exceptions, quirks ----------------------------------------------------------
def test_hlt_with_if_clear_is_a_halt_exit_after_the_hlt(guest: RawGuest) -> None:
    code = assemble("nop; cli; hlt")
    guest.load(code)
    assert halt(guest.vcpu().run()).rip == CODE + len(code)


def test_icebp_at_cpl0_is_a_db_exit_at_the_byte(guest: RawGuest) -> None:
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    guest.load(assemble("nop; nop; .byte 0xf1; cli; hlt"))
    exit_ = guest.vcpu().run()
    assert isinstance(exit_, ExceptionExit), exit_
    assert (exit_.vector, exit_.rip, exit_.is_icebp) == (Vector.DB, CODE + 2, True)
    # Resuming without removing it stops there again (the engine's job to step over).
    again = guest.vcpu().run()
    assert isinstance(again, ExceptionExit) and again.rip == CODE + 2


def test_int3_is_a_bp_exit_when_intercepted(guest: RawGuest) -> None:
    guest.partition.set_exception_intercepts(frozenset({Vector.BP}))
    guest.load(assemble("nop; int3; cli; hlt"))
    exit_ = guest.vcpu().run()
    assert isinstance(exit_, ExceptionExit), exit_
    assert (exit_.vector, exit_.rip, exit_.instruction_bytes[:1]) == (Vector.BP, CODE + 1, b"\xcc")


@pytest.mark.parametrize(
    ("source", "vector", "after"),
    [(".byte 0xf1", Vector.DB, 1), ("int3", Vector.BP, 1), ("int $0x40", 0x40, 2)],
)
def test_software_interrupts_not_intercepted_reach_the_guest_idt(
    guest: RawGuest, source: str, vector: int, after: int
) -> None:
    """INT1 / INT3 / INT n fail to emulate at CPL0 on kvm_pvm; the backend delivers them."""
    guest.install_idt({vector: HANDLER})
    guest.load(assemble("mov (%rsp), %rax; out %eax, $0x83; cli; hlt"), at=HANDLER)
    guest.load(assemble(f"nop; {source}; cli; hlt"))
    halt(guest.vcpu().run())
    # The saved RIP is the instruction after, as for any trap-like software interrupt.
    assert guest.io.writes == [(0, 0x83, 4, CODE + 1 + after)]


def test_unemulatable_instruction_is_an_internal_error_with_its_bytes(
    kvm: KvmPlatform, guest: RawGuest
) -> None:
    if not kvm.is_pvm:
        pytest.skip("only kvm_pvm fails to emulate UD0 at CPL0; hardware raises #UD")
    guest.load(bytes.fromhex("90 0fff f4"))  # nop; ud0; hlt
    exit_ = guest.vcpu().run()
    assert isinstance(exit_, InternalErrorExit), exit_
    assert exit_.rip == CODE + 1 and exit_.instruction_bytes[:2] == b"\x0f\xff"
    assert "0f ff" in exit_.message


def test_inject_exception_goes_through_the_idt_with_its_error_code(guest: RawGuest) -> None:
    guest.install_idt({Vector.GP: HANDLER})
    guest.load(assemble("mov (%rsp), %rax; out %eax, $0x84; cli; hlt"), at=HANDLER)
    guest.load(assemble("nop; cli; hlt"))
    guest.vcpu().inject_exception(Vector.GP, 0x18)
    halt(guest.vcpu().run())
    assert guest.io.writes == [(0, 0x84, 4, 0x18)]


def test_the_guests_dr_registers_stay_the_guests(kvm: KvmPlatform, guest: RawGuest) -> None:
    """The guest's DR0-3/DR7 are the guest's, also while #DB is intercepted and while the
    debugger has a slot of the same number: the debugger's own slot (set with
    `set_hardware_breakpoints`) exits, the guest's breakpoint goes to the guest's own
    #DB handler with its DR6 bit, before the instruction."""
    if kvm.capabilities().hardware_breakpoints == 0:
        pytest.skip("no DR execute breakpoints on this host (measured)")
    if not kvm.is_pvm:
        pytest.skip("hardware KVM loads only guest debug's DRs while the debugger has "
                    "slots, and mirrors the guest's while #DB is intercepted (vcpu.py)")
    guest.partition.set_exception_intercepts(frozenset({Vector.DB}))
    guest.install_idt({Vector.DB: HANDLER})
    # Reports DR6 and the saved RIP, disarms the guest's breakpoints, returns.
    guest.load(assemble("mov %dr6, %rax; out %eax, $0x81; mov (%rsp), %rax; out %eax, $0x82;"
                        "mov $0x400, %eax; mov %rax, %dr7; iretq"), at=HANDLER)
    guest.load(assemble("nop; nop; nop; cli; hlt"))
    vcpu = guest.vcpu()
    vcpu.set_registers({Reg.DR1: CODE + 2, Reg.DR7: 0x400 | 1 << 2})  # the guest's DR1
    guest.partition.set_hardware_breakpoints([None, HwBreakpoint(CODE + 1)])  # the debugger's
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit), exit_
    assert exit_.rip == CODE + 1 and exit_.debug_status & 0xF == 0b10
    assert guest.io.writes == []  # the debugger's hit is not the guest's business
    halt(vcpu.run())
    (_, _, _, dr6), (_, _, _, saved_rip) = guest.io.writes
    assert dr6 & 0xF == 0b10 and saved_rip == CODE + 2


# -- single step ------------------------------------------------------------------------
def test_single_step_gives_one_exit_per_instruction(guest: RawGuest) -> None:
    guest.partition.add_mmio_region(boot.LAPIC_GPA, boot.LAPIC_SIZE)
    guest.io.port_values[0x51] = 0x66
    guest.io.mmio_values[boot.LAPIC_GPA + 0x30] = 0x14
    lines = [
        "nop",
        "xor %eax, %eax",
        "inc %eax",
        "out %al, $0x50",
        "in $0x51, %al",
        "mov $0xfee00000, %ebx",
        "mov 0x30(%rbx), %ecx",
        "mov $7, %ebx",
    ]
    expected = [CODE + len(assemble("; ".join(lines[: n + 1]))) for n in range(len(lines))]
    guest.load(assemble("; ".join([*lines, "cli", "hlt"])))
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    rips = []
    for _ in lines:
        exit_ = vcpu.run()
        assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
        assert exit_.vector == Vector.DB and exit_.debug_status & DR6_BS
        assert exit_.rip == vcpu.get_int(Reg.RIP)
        rips.append(exit_.rip)
    assert rips == expected
    # Port and MMIO accesses completed within their own step.
    assert guest.io.writes == [(0, 0x50, 1, 1)]
    assert vcpu.get_registers([Reg.RAX, Reg.RCX, Reg.RBX]) == [0x66, 0x14, 7]
    assert not vcpu.get_int(Reg.RFLAGS) & 0x100  # the primitive never shows as TF
    vcpu.set_single_step(False)
    halt(vcpu.run())


def test_single_step_over_int_n_stops_at_the_handler(guest: RawGuest) -> None:
    guest.install_idt({0x40: HANDLER})
    guest.load(assemble("out %al, $0x83; iretq"), at=HANDLER)
    guest.load(assemble("nop; int $0x40; cli; hlt"))
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    rips = []
    for _ in range(4):
        exit_ = vcpu.run()
        assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
        rips.append(exit_.rip)
    assert rips == [CODE + 1, HANDLER, HANDLER + 2, CODE + 3]


# A faulting instruction (the last one of each line) and the vector it raises.
FAULTS = {
    "ud": ("ud2", Vector.UD),
    "gp": ("mov $0x8000000000000000, %rax; mov (%rax), %rbx", Vector.GP),  # non-canonical
    "pf": ("mov $0x40000000, %rax; mov (%rax), %rbx", Vector.PF),  # not mapped
    "de": ("xor %ecx, %ecx; div %ecx", Vector.DE),
}
STUB = 0x40  # bytes per handler stub


def fault_guest(guest: RawGuest, code: str, first: str) -> tuple[int, int]:
    """Every exception vector's handler: `first; inc %r14; cli; hlt`. `code` then
    `cli; hlt`. Returns (address of the faulting instruction, RSP before it)."""
    guest.install_idt({v: HANDLER + STUB * v for v in range(32)})
    for vector in range(32):
        guest.load(assemble(f"{first}; inc %r14; cli; hlt"), at=HANDLER + STUB * vector)
    *setup, _ = code.split("; ")
    guest.load(assemble(code + "; cli; hlt"))
    return CODE + len(assemble("; ".join(setup))) if setup else CODE, guest.vcpu().get_int(Reg.RSP)


def step_to(vcpu, rip: int) -> None:  # type: ignore[no-untyped-def]
    while vcpu.get_int(Reg.RIP) != rip:
        exit_ = vcpu.run()
        assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_


@pytest.mark.parametrize("first", ["pushq $0", "inc %r15"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_single_step_over_a_fault_stops_at_the_handlers_first_instruction(
        kvm: KvmPlatform, guest: RawGuest, fault: str, first: str) -> None:
    """The exception is delivered and the step ends before the handler's first
    instruction (kvm_pvm alone would also run it: the backend's handler guards)."""
    code, vector = FAULTS[fault]
    at, rsp = fault_guest(guest, code, first)
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    step_to(vcpu, at)
    exit_ = vcpu.run()
    entry = HANDLER + STUB * vector
    assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
    assert exit_.debug_status & 0xF == 0  # the guards are the backend's own business
    assert vcpu.get_registers([Reg.RIP, Reg.R14, Reg.R15]) == [entry, 0, 0]
    frame = vcpu.get_int(Reg.RSP) + (8 if vector in (Vector.GP, Vector.PF) else 0)
    assert [guest.read_u64(frame), guest.read_u64(frame + 24)] == [at, rsp]
    # Stepping goes on inside the handler, one instruction at a time.
    after_first = entry + len(assemble(first))
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit) and exit_.rip == after_first
    assert vcpu.get_int(Reg.R14) == 0
    vcpu.set_single_step(False)
    halt(vcpu.run())


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_single_step_over_a_fault_with_every_slot_the_debuggers(
        kvm: KvmPlatform, guest: RawGuest, fault: str) -> None:
    """No slot left for a guard: a handler that starts with PUSH is stepped back onto
    its first instruction (the push undone), with the state the delivery left."""
    if not kvm.is_pvm:
        pytest.skip("the undo is for kvm_pvm's step")
    code, vector = FAULTS[fault]
    at, rsp = fault_guest(guest, code, "push %rbp")
    guest.partition.set_hardware_breakpoints([HwBreakpoint(CODE + 0x800 + n) for n in range(4)])
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    step_to(vcpu, at)
    flags_before = vcpu.get_int(Reg.RFLAGS)
    exit_ = vcpu.run()
    entry = HANDLER + STUB * vector
    assert isinstance(exit_, ExceptionExit) and exit_.is_single_step, exit_
    assert exit_.rip == entry == vcpu.get_int(Reg.RIP)
    frame = vcpu.get_int(Reg.RSP) + (8 if vector in (Vector.GP, Vector.PF) else 0)
    assert [guest.read_u64(frame), guest.read_u64(frame + 24)] == [at, rsp]
    # Entry RFLAGS: the frame's image (RFLAGS before the fault, with RF as KVM sets it
    # for faults and the step primitive's TF, which the engine takes out) less what an
    # interrupt gate clears.
    image = guest.read_u64(frame + 16)
    assert image & ~(RFLAGS_TF | RFLAGS_RF) == flags_before
    assert vcpu.get_int(Reg.RFLAGS) == image & ~(RFLAGS_TF | RFLAGS_RF | RFLAGS_IF)
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit) and exit_.rip == entry + 1


@pytest.mark.xfail(strict=True, reason=(
    "kvm_pvm: with every debug-register slot the debugger's, a step over a fault still "
    "runs the handler's first instruction when that is not one the backend can undo "
    "(quirks.undo_handler_entry)"))
def test_single_step_over_a_fault_unguarded_and_not_undoable(kvm: KvmPlatform,
                                                              guest: RawGuest) -> None:
    at, _ = fault_guest(guest, "ud2", "inc %r15")
    guest.partition.set_hardware_breakpoints([HwBreakpoint(CODE + 0x800 + n) for n in range(4)])
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    step_to(vcpu, at)
    vcpu.run()
    assert vcpu.get_int(Reg.RIP) == HANDLER + STUB * Vector.UD


def test_a_debugger_slot_on_a_handler_is_reported_by_the_next_step(
        kvm: KvmPlatform, guest: RawGuest) -> None:
    """A step into a handler whose first instruction holds one of the debugger's slots:
    the step ends there, the next step reports the slot (as when a step arrives at a
    breakpoint), then steps on."""
    at, _ = fault_guest(guest, "ud2", "pushq $0")
    entry = HANDLER + STUB * Vector.UD
    guest.partition.set_hardware_breakpoints([None, None, HwBreakpoint(entry)])
    vcpu = guest.vcpu()
    vcpu.set_single_step(True)
    step_to(vcpu, at)
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit) and exit_.is_single_step and exit_.rip == entry
    hit = vcpu.run()
    assert isinstance(hit, ExceptionExit) and not hit.is_single_step
    assert (hit.rip, hit.debug_status & 0xF) == (entry, 0b100)
    exit_ = vcpu.run()
    assert isinstance(exit_, ExceptionExit) and exit_.is_single_step and exit_.rip == entry + 2


# -- cancel ---------------------------------------------------------------------------
def test_cancel_from_another_thread_stops_a_spinning_vcpu_promptly(guest: RawGuest) -> None:
    guest.load(assemble("1: jmp 1b"))
    vcpu = guest.vcpu()
    canceled_at: list[float] = []

    def cancel() -> None:
        canceled_at.append(time.monotonic())
        vcpu.cancel()

    timer = threading.Timer(0.2, cancel)
    timer.start()
    exit_ = vcpu.run()
    returned = time.monotonic()
    timer.join()
    assert isinstance(exit_, CanceledExit), exit_
    assert exit_.rip == CODE
    assert returned - canceled_at[0] < 1.0


def test_pending_cancel_returns_at_once_then_runs_normally(guest: RawGuest) -> None:
    guest.load(assemble("cli; hlt"))
    vcpu = guest.vcpu()
    vcpu.cancel()
    assert isinstance(vcpu.run(), CanceledExit)
    halt(vcpu.run())


def test_cancel_from_the_io_handler_completes_the_in_first(guest: RawGuest) -> None:
    vcpu = guest.vcpu()

    class CancelingIo(type(guest.io)):  # type: ignore[misc]
        def port_read(self, index: int, port: int, size: int) -> int:
            vcpu.cancel()
            return 0xAB

    guest.partition.set_io_handler(CancelingIo())
    code = assemble("in $0x60, %al; cli; hlt")
    guest.load(code)
    vcpu.set(Reg.RAX, 0)
    exit_ = vcpu.run()
    assert isinstance(exit_, CanceledExit), exit_
    assert vcpu.get_registers([Reg.RAX, Reg.RIP]) == [0xAB, CODE + 2]


# -- SMP ------------------------------------------------------------------------------
def test_two_vcpus_each_in_its_own_thread(kvm: KvmPlatform) -> None:
    guest = RawGuest(kvm, cpus=2)
    try:
        counter = CODE + 0x800
        guest.load(
            assemble(
                f"mov $200, %ecx; 1: lock incl {counter}; dec %ecx; jnz 1b;"
                "mov %edi, %eax; out %eax, $0x80; cli; hlt"
            )
        )
        exits: dict[int, Exit] = {}

        def run(index: int) -> None:
            exits[index] = guest.vcpu(index).run()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(isinstance(exits.get(i), HaltExit) for i in range(2)), exits
        assert sorted(w[3] for w in guest.io.writes) == [0, 1]
        assert struct.unpack("<I", guest.partition.read_memory(counter, 4))[0] == 400
    finally:
        guest.close()


# -- registers ------------------------------------------------------------------------
def _all_registers(seed: int) -> dict[Reg, RegValue]:
    data = Segment(boot.DATA_SELECTOR, 0, 0xFFFFFFFF, boot.DATA_ATTRIBUTES)
    values: dict[Reg, RegValue] = {
        reg: (seed << 56) | 0x0101_0101 * (n + 1) for n, reg in enumerate(GENERAL_REGS)
    }
    values.update(
        {
            Reg.RIP: CODE + 0x10 + seed,
            Reg.RFLAGS: 0x2 | 0x1 | 0x40 | 0x400,  # CF, ZF, DF
            Reg.ES: data,
            Reg.CS: Segment(boot.CODE_SELECTOR, 0, 0xFFFFFFFF, boot.CODE_ATTRIBUTES),
            Reg.SS: data,
            Reg.DS: data,
            Reg.FS: Segment(boot.DATA_SELECTOR, 0x1234_5000 + seed, 0xFFFFFFFF, 0xC093),
            Reg.GS: Segment(boot.DATA_SELECTOR, 0xFFFF_8000_0000_1000, 0xFFFFF, 0x4093),
            Reg.LDTR: Segment(0, 0, 0xFFFF, 0x82),
            Reg.TR: Segment(boot.TSS_SELECTOR, boot.TSS_GPA, boot.TSS_LIMIT, 0x8B),
            Reg.IDTR: Table(0x9000 + seed * 0x100, 0xFFF),
            Reg.GDTR: Table(boot.GDT_GPA, 39),
            Reg.CR0: boot.CR0,
            Reg.CR2: 0xDEAD_0000 + seed,
            Reg.CR3: boot.PML4_GPA,
            Reg.CR4: boot.CR4,
            Reg.CR8: 5 + seed,
            Reg.EFER: boot.EFER | 1,  # + SCE
            Reg.DR0: 0x1000 + seed,
            Reg.DR1: 0x2000,
            Reg.DR2: 0x3000,
            Reg.DR3: 0x4000,
            Reg.DR6: 0xFFFF0FF0 | 0b10,
            Reg.DR7: 0x400 | 1 << 16,  # RW0 set, nothing enabled
            Reg.INTERRUPT_STATE: 1,
        }
    )
    assert set(values) == set(Reg)
    return values


def test_every_register_round_trips_before_and_after_a_run(guest: RawGuest) -> None:
    vcpu = guest.vcpu()
    for seed in (1, 2):  # 1: before any KVM_RUN (ioctls); 2: after one (sync registers)
        values = _all_registers(seed)
        vcpu.set_registers(values)
        got = dict(zip(values, vcpu.get_registers(list(values)), strict=True))
        assert got == values
        for reg, value in values.items():  # one by one, too
            vcpu.set(reg, value)
            assert vcpu.get(reg) == value, reg
        vcpu.set_registers({Reg.INTERRUPT_STATE: 0, Reg.RIP: CODE})
        assert vcpu.get(Reg.INTERRUPT_STATE) == 0
        guest.load(assemble("cli; hlt"))
        halt(vcpu.run())


def test_registers_written_between_runs_reach_the_guest(guest: RawGuest) -> None:
    guest.load(assemble("cli; hlt; mov %rbx, %rax; out %eax, $0x80; cli; hlt"))
    vcpu = guest.vcpu()
    halt(vcpu.run())  # now registers come from kvm_run's sync area
    vcpu.set_registers({Reg.RBX: 0xC0FFEE, Reg.RIP: CODE + 2})
    halt(vcpu.run())
    assert guest.io.writes == [(0, 0x80, 4, 0xC0FFEE)]


# -- interrupts -------------------------------------------------------------------------
def test_request_interrupt_wakes_a_halted_vcpu_through_the_idt(guest: RawGuest) -> None:
    guest.install_idt({0x30: HANDLER})
    guest.load(assemble("mov $0x30, %al; out %al, $0x82; iretq"), at=HANDLER)
    guest.load(assemble("sti; hlt; mov $1, %al; out %al, $0x99; cli; hlt"))
    vcpu = guest.vcpu()
    timer = threading.Timer(0.1, vcpu.request_interrupt, args=(0x30,))
    timer.start()
    halt(vcpu.run())
    timer.join()
    assert [w[1:] for w in guest.io.writes] == [(0x82, 1, 0x30), (0x99, 1, 1)]


def test_request_interrupt_reaches_a_spinning_vcpu(guest: RawGuest) -> None:
    guest.install_idt({0x31: HANDLER})
    guest.load(assemble("mov (%rsp), %rax; out %eax, $0x82; cli; hlt"), at=HANDLER)
    guest.load(assemble("sti; 1: jmp 1b"))
    vcpu = guest.vcpu()
    timer = threading.Timer(0.1, vcpu.request_interrupt, args=(0x31,))
    timer.start()
    exit_ = halt(vcpu.run())
    timer.join()
    assert exit_.rip == HANDLER + len(assemble("mov (%rsp), %rax; out %eax, $0x82; cli; hlt"))
    assert guest.io.writes == [(0, 0x82, 4, CODE + 1)]  # interrupted at the jmp


def test_interrupt_waits_while_if_is_clear(guest: RawGuest) -> None:
    guest.install_idt({0x32: HANDLER})
    guest.load(assemble("out %al, $0x82; iretq"), at=HANDLER)
    guest.load(assemble("out %al, $0x90; sti; nop; out %al, $0x91; cli; hlt"))
    vcpu = guest.vcpu()
    vcpu.request_interrupt(0x32)
    halt(vcpu.run())
    ports = [w[1] for w in guest.io.writes]
    # Not before STI; when exactly after it depends on when KVM reports the window.
    assert ports[0] == 0x90 and sorted(ports[1:]) == [0x82, 0x91]
    assert not vcpu.get_int(Reg.RFLAGS) & RFLAGS_IF


def test_hlt_with_if_set_waits_until_canceled(guest: RawGuest) -> None:
    guest.load(assemble("sti; hlt"))
    vcpu = guest.vcpu()
    timer = threading.Timer(0.1, vcpu.cancel)
    timer.start()
    assert isinstance(vcpu.run(), CanceledExit)
    timer.join()


# -- clock ----------------------------------------------------------------------------
def test_clock_calls_back_in_deadline_order_and_cancels(guest: RawGuest) -> None:
    clock = guest.partition.clock
    fired: list[str] = []
    done = threading.Event()
    now = clock.now_ns()
    clock.call_at(now + 30_000_000, lambda: (fired.append("b"), done.set()))
    clock.call_at(now + 10_000_000, lambda: fired.append("a"))
    clock.call_at(now + 20_000_000, lambda: fired.append("x")).cancel()
    assert done.wait(2)
    assert fired == ["a", "b"]
    assert clock.now_ns() - now >= 30_000_000
