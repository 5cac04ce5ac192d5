"""Measure what KVM's debug mechanisms do on this host, by running a tiny guest.

`Capabilities` must be measured, not assumed: kvm_pvm and hardware KVM differ in exactly
these points (TF, data watchpoints, INT1). Each probe runs a few instructions of 64-bit
CPL0 code in a throw-away 2 MiB partition and looks at the exit; the whole measurement
takes a few milliseconds and is done once per process.

The boot state here is deliberately minimal and private: the platform layer may not use
`machine/boot.py` (layers only import downwards).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable

from whpx_core.platform.base import Capabilities, HwBreakpoint
from whpx_core.platform.emulated.debug_registers import NO_SLOTS
from whpx_core.platform.exits import (
    ExceptionExit,
    Exit,
    HaltExit,
    Vector,
)
from whpx_core.platform.kvm import bindings as kb
from whpx_core.platform.kvm.fds import KvmSystem
from whpx_core.platform.kvm.platform import KvmPartition, KvmPlatform
from whpx_core.platform.kvm.vcpu import KvmVcpu
from whpx_core.platform.registers import (
    RFLAGS_RESERVED_ONE,
    RFLAGS_RF,
    RFLAGS_TF,
    Reg,
    RegValue,
    Segment,
    Table,
)

RAM = 2 << 20
CODE = 0x10000
DATA = 0x20000
IDT = 0x9000
STUBS = 0xA000  # vector v's handler is a HLT at STUBS + 16 * v
GDT = 0x8000
TSS = 0x8100
IRQ_VECTOR = 0x20
TIMEOUT_NS = 2_000_000_000


def _boot_image() -> dict[int, bytes]:
    gdt = struct.pack(
        "<5Q",
        0,
        0x00AF9B000000FFFF,  # 64-bit code
        0x00CF93000000FFFF,  # data
        0x67 | (TSS & 0xFFFFFF) << 16 | 0x8B << 40,  # busy 64-bit TSS
        0,
    )
    idt = bytearray()
    for vector in range(IRQ_VECTOR + 1):
        handler = STUBS + 16 * vector
        idt += struct.pack("<QQ", (handler & 0xFFFF) | 0x08 << 16 | 0x8E << 40, 0)
    return {
        0x1000: struct.pack("<Q", 0x2000 | 0x3),  # PML4 -> PDPT
        0x2000: struct.pack("<Q", 0x3000 | 0x3),  # PDPT -> PD
        0x3000: struct.pack("<Q", 0x0 | 0x83),  # one 2 MiB identity page
        GDT: gdt,
        IDT: bytes(idt),
        STUBS: b"".join(b"\xf4".ljust(16, b"\x90") for _ in range(IRQ_VECTOR + 1)),
    }


def _stub_vector(exit_: Exit) -> int | None:
    """The vector whose guest handler ran, if the exit is that handler's HLT."""
    if isinstance(exit_, HaltExit) and (exit_.rip - 1 - STUBS) % 16 == 0:
        return (exit_.rip - 1 - STUBS) // 16
    return None


_BOOT_REGS: dict[Reg, RegValue] = {
    Reg.CR0: 0x80050033,
    Reg.CR3: 0x1000,
    Reg.CR4: 0x620,
    Reg.EFER: 0x500,
    Reg.CS: Segment(0x08, 0, 0xFFFFFFFF, 0xB | 1 << 4 | 1 << 7 | 1 << 13 | 1 << 15),
    Reg.SS: Segment(0x10, 0, 0xFFFFFFFF, 0x3 | 1 << 4 | 1 << 7 | 1 << 14 | 1 << 15),
    Reg.DS: Segment(0x10, 0, 0xFFFFFFFF, 0x3 | 1 << 4 | 1 << 7 | 1 << 14 | 1 << 15),
    Reg.TR: Segment(0x18, TSS, 0x67, 0xB | 1 << 7),
    Reg.GDTR: Table(GDT, 5 * 8 - 1),
    Reg.IDTR: Table(IDT, (IRQ_VECTOR + 1) * 16 - 1),
}


class _Scratch:
    def __init__(self, partition: KvmPartition) -> None:
        self.p = partition
        self.vcpu: KvmVcpu = partition.vcpu(0)
        for gpa, data in _boot_image().items():
            partition.write_memory(gpa, data)
        self.vcpu.set_registers(_BOOT_REGS)

    def run(
        self,
        code: bytes,
        *,
        rflags: int = RFLAGS_RESERVED_ONE,
        intercepts: frozenset[int] = frozenset(),
        setup: Callable[[KvmVcpu], None] | None = None,
    ) -> Exit:
        self.p.write_memory(CODE, code)
        self.p.set_exception_intercepts(intercepts)
        self.vcpu.set_registers({Reg.RIP: CODE, Reg.RSP: RAM - 16, Reg.RFLAGS: rflags})
        if setup is not None:
            setup(self.vcpu)
        # A probe that misbehaves must not hang the debugger: cancel it after a while.
        timer = self.p.clock.call_at(self.p.clock.now_ns() + TIMEOUT_NS, self.vcpu.cancel)
        try:
            return self.vcpu.run()
        finally:
            timer.cancel()
            self.vcpu.set_single_step(False)
            self.vcpu.set_registers({Reg.DR7: 0x400, Reg.DR0: 0, Reg.DR1: 0})
            self.p.arm_slots(NO_SLOTS)
            self.p.set_exception_intercepts(frozenset())

    def icebp_exits(self) -> bool:
        e = self.run(b"\xf1\xf4", intercepts=frozenset({Vector.DB}))
        return isinstance(e, ExceptionExit) and e.is_icebp and e.rip == CODE

    def _stepped(self, e: Exit) -> bool:
        return isinstance(e, ExceptionExit) and e.is_single_step and e.rip == CODE + 1

    def single_step(self) -> str:
        nops = b"\x90\x90\xf4"
        tf = self.run(
            nops, rflags=RFLAGS_RESERVED_ONE | RFLAGS_TF, intercepts=frozenset({Vector.DB})
        )
        if self._stepped(tf):
            return "tf"
        if self._stepped(self.run(nops, setup=lambda v: v.set_single_step(True))):
            return "guest-debug"
        return "none"

    def _arm(self, n: int, bp: HwBreakpoint) -> None:
        """The debugger's slot n (KVM guest debug), unchecked: this is the measurement."""
        slots = list(NO_SLOTS)
        slots[n] = bp
        self.p.arm_slots(slots)

    def hardware_breakpoints(self) -> tuple[int, bool]:
        """(DR0-3 execute slots that fire, whether a hit repeats with RFLAGS.RF set)."""
        fired = 0
        sticky = False
        for n in range(4):

            def arm(v: KvmVcpu, n: int = n) -> None:
                self._arm(n, HwBreakpoint(CODE + 1))

            e = self.run(b"\x90\x90\xf4", intercepts=frozenset({Vector.DB}), setup=arm)
            if isinstance(e, ExceptionExit) and e.rip == CODE + 1 and e.debug_status & 1 << n:
                fired += 1
                if n == 0:
                    sticky = self._rehits_with_rf(arm)
        return fired, sticky

    def _rehits_with_rf(self, arm: Callable[[KvmVcpu], None]) -> bool:
        def resume_with_rf(v: KvmVcpu) -> None:
            arm(v)
            v.set_registers({Reg.RIP: CODE + 1, Reg.RFLAGS: RFLAGS_RESERVED_ONE | RFLAGS_RF})
            v._rf_at = None  # measure KVM itself, not the backend's step-over (vcpu.py)

        e = self.run(b"\x90\x90\xf4", intercepts=frozenset({Vector.DB}), setup=resume_with_rf)
        return isinstance(e, ExceptionExit) and e.rip == CODE + 1

    def data_watchpoints(self) -> bool:
        def arm(v: KvmVcpu) -> None:  # slot 0: 4-byte write watchpoint
            self._arm(0, HwBreakpoint(DATA, "write", 4))

        store = b"\x89\x04\x25" + struct.pack("<I", DATA) + b"\xf4"  # mov [DATA], eax
        e = self.run(store, intercepts=frozenset({Vector.DB}), setup=arm)
        return isinstance(e, ExceptionExit) and bool(e.debug_status & 1)

    def exception_delivery(self) -> bool:
        return _stub_vector(self.run(b"\x0f\x0b")) == Vector.UD  # ud2 -> guest #UD handler

    def interrupts(self) -> bool:
        def request(v: KvmVcpu) -> None:
            v.request_interrupt(IRQ_VECTOR)

        e = self.run(b"\xfb\xf4\xfa\xf4", setup=request)  # sti; hlt; cli; hlt
        return _stub_vector(e) == IRQ_VECTOR


def measure_capabilities(platform: KvmPlatform) -> Capabilities:
    maximum, recommended = platform.limits()
    system = KvmSystem.open()
    try:
        irqchip = system.check_extension(kb.KVM_CAP_IRQCHIP)
    finally:
        system.close()
    with KvmPartition(1, kick_signal=False) as partition:
        ram = mmap.mmap(-1, RAM)
        partition.map_memory(0, ram)
        scratch = _Scratch(partition)
        icebp = scratch.icebp_exits()
        step = scratch.single_step()
        slots, sticky = scratch.hardware_breakpoints()
        watch = scratch.data_watchpoints()
        delivery = scratch.exception_delivery()
        interrupts = scratch.interrupts()
    ram.close()

    notes = []
    if platform.is_pvm:
        notes.append(
            "kvm_pvm: CPL0 guest code is emulated (~1.7 M instructions/s), CPL3 runs "
            "natively; INT1/INT3/INT n at CPL0 are emulation failures, normalised to "
            "#DB/#BP exits (when intercepted) or IDT deliveries"
        )
        notes.append("kvm_pvm: no debug mechanism reaches the host from CPL3 code")
    notes.append("KVM intercepts only #DB and #BP; other exceptions go to the guest IDT")
    if step == "guest-debug":
        notes.append(
            "RFLAGS.TF set by the host does not exit; stepping uses KVM_GUESTDBG_SINGLESTEP "
            "(TF hidden from the guest; HLT completes as one step)"
        )
    if slots and sticky:
        notes.append(
            "a DR execute breakpoint hits again on resume even with RFLAGS.RF: this backend "
            "resumes from one by stepping the instruction with the slot disarmed"
        )
    if not watch:
        notes.append("data watchpoints (DR7 R/W = 01 or 11) never fire on this host")
    notes.append(
        "external interrupts via KVM_INTERRUPT (no in-kernel irqchip"
        + (", though KVM_CAP_IRQCHIP is offered" if irqchip else "")
        + ("): delivered" if interrupts else "): NOT delivered on this host")
    )
    notes.append(f"vCPUs: up to {maximum} per VM, {recommended} recommended (host CPUs)")
    return Capabilities(
        icebp_exits=icebp,
        single_step=step,
        hardware_breakpoints=slots,
        hardware_watchpoints=watch,
        guest_exception_delivery=delivery,
        max_vcpus=maximum,
        # KVM has no general exception bitmap: guest debug intercepts #DB and #BP only.
        interceptable_vectors=frozenset({1, 3}),
        notes=tuple(notes),
    )
