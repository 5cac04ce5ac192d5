"""One KVM vCPU behind the `Vcpu` interface: registers, the run loop, kicks, injection.

The run loop is the one place that turns `kvm_run` into WHv-shaped exits. Port and MMIO
accesses are answered inside it; kvm_pvm's emulation failures on INT1 / INT3 / INT n at
CPL0 are normalised here (see `_on_emulation_failure`).

Hardware breakpoints: the debugger's slots (`Partition.set_hardware_breakpoints`) go to
KVM_SET_GUEST_DEBUG (USE_HW_BP, debugreg[0-3], [7]). The guest's own DR0-DR3/DR7 stay the
guest's: on kvm_pvm they are never put into guest debug, and (measured) its execute
breakpoints reach its own IDT with DR6.Bn and honour RFLAGS.RF from its IRETQ, whether
#DB is intercepted or not, and also while the debugger has slots elsewhere (KVM checks
guest debug's breakpoints first, then the guest's). A debugger slot on the very
instruction the guest's own breakpoint is on exits first; resuming, the guest takes
its #DB, and when its handler returns there the debugger's slot exits again (guest
debug ignores RF), so that arrival is reported twice. Data breakpoints never fire on
kvm_pvm, the guest's or the debugger's. Hardware KVM (kernel source, not run here)
loads only guest debug's DRs while USE_HW_BP is on and exits on INT1 only with
USE_HW_BP or SINGLESTEP: there, while #DB is intercepted and the debugger has no slot,
the guest's DRs are mirrored into guest debug and their hits exit as #DB with DR6.Bn
(the engine gives them back to the guest); with debugger slots, the guest's do not fire.
kvm_pvm ignores RF for guest-debug breakpoints, hence the resume step (`_rf_at`).

Single step on kvm_pvm: guest debug is applied lazily, just before KVM_RUN, so it can
include the handler guards for the RIP the step starts from (quirks.py) and consecutive
steps with the same settings need no KVM_SET_GUEST_DEBUG at all.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from whpx_core.platform.base import PlatformError, Vcpu
from whpx_core.platform.delivery import CpuView, Event, TripleFault, deliver
from whpx_core.platform.emulated.debug_registers import DR7_FIXED, encode_dr7
from whpx_core.platform.exits import (
    DR6_BS,
    DR6_FIXED,
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    InternalErrorExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.kvm import bindings as kb
from whpx_core.platform.kvm.bindings import ffi
from whpx_core.platform.kvm.fds import CData, KvmIoctlError, VcpuFd
from whpx_core.platform.kvm.quirks import (
    EXCEPTION_GATES,
    IRETQ,
    gate_targets,
    step_iretq,
    undo_handler_entry,
)
from whpx_core.platform.kvm.regs import Group, group_of, read_reg, write_reg
from whpx_core.platform.paging import PageFault, PagingState, translate
from whpx_core.platform.registers import Reg, RegValue

if TYPE_CHECKING:
    from whpx_core.platform.kvm.platform import KvmPartition

# The signal that kicks a vCPU thread out of KVM_RUN (see platform.install_kick_handler).
KICK_SIGNAL = signal.SIGUSR1

_SYNC = kb.KVM_SYNC_X86_REGS | kb.KVM_SYNC_X86_SREGS
_DR6_HITS = 0xF | DR6_BS


class KvmVcpu(Vcpu):
    """A vCPU; `run()` must be called from one host thread at a time."""

    def __init__(self, partition: KvmPartition, index: int, fd: VcpuFd, sync_regs: int) -> None:
        self.index = index
        self._p = partition
        self._fd = fd
        self._run: CData = fd.kvm_run
        # Sync registers: after each KVM_RUN, regs/sregs are in kvm_run and writes go back
        # through kvm_dirty_regs, saving two ioctls per step (platform-facts.md).
        self._run.kvm_valid_regs = sync_regs & _SYNC
        self._synced = False  # True once a KVM_RUN has filled kvm_run.s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: int | None = None  # ident of the thread inside run()
        self._cancel = False
        self._irqs: set[int] = set()
        self._single_step = False
        # RF, done here: kvm_pvm re-hits an execute breakpoint on resume even with
        # RFLAGS.RF, so resuming from the address a hit was reported at (`_rf_at`) first
        # steps one instruction with the slots there disarmed (`_rf_mask`).
        self._rf_at: int | None = None
        self._rf_mask = 0  # DR7 enable bits left out while stepping over a breakpoint
        self._resume_step = False  # that step is in progress
        self._armed: tuple[int, ...] = ()  # the debugreg[] last given to KVM
        self._applied: tuple[int, tuple[int, ...]] | None = None  # (control, debugreg)
        self._applied_key: tuple[object, ...] | None = None  # what `_applied` was made from
        self._guard_bits = 0  # DR6 Bn bits of the slots holding handler guards
        self._step_from: tuple[int, int] | None = None  # (RIP, RSP) a kvm_pvm step began at
        self._guard_idt = b""  # the exception gates the guard targets were taken from
        self._guard_free = 0
        self._guard_targets: tuple[int, ...] = ()
        self._needs_completion = False  # an I/O answer KVM applies on the next KVM_RUN
        self._code_pages: dict[tuple[int, int], int] = {}  # (cr3, page) -> gpa, see _at_iretq

    # -- registers --------------------------------------------------------------------
    def _structs(self, groups: Iterable[Group]) -> dict[Group, CData]:
        out: dict[Group, CData] = {}
        synced = self._run.s.regs if self._synced else None
        for group in groups:
            if group is Group.REGS:
                regs = self._sync(kb.KVM_SYNC_X86_REGS)
                out[group] = synced.regs if regs else self._fd.get_regs()
            elif group is Group.SREGS:
                sregs = self._sync(kb.KVM_SYNC_X86_SREGS)
                out[group] = synced.sregs if sregs else self._fd.get_sregs()
            elif group is Group.DEBUG:
                out[group] = self._fd.get_debugregs()
            else:
                out[group] = self._fd.get_vcpu_events()
        return out

    def _sync(self, bit: int) -> bool:
        return self._synced and bool(self._run.kvm_valid_regs & bit)

    def _commit(self, structs: dict[Group, CData]) -> None:
        for group, s in structs.items():
            if group is Group.REGS:
                if self._sync(kb.KVM_SYNC_X86_REGS):
                    self._run.kvm_dirty_regs |= kb.KVM_SYNC_X86_REGS
                else:
                    self._fd.set_regs(s)
            elif group is Group.SREGS:
                if self._sync(kb.KVM_SYNC_X86_SREGS):
                    self._run.kvm_dirty_regs |= kb.KVM_SYNC_X86_SREGS
                else:
                    self._fd.set_sregs(s)
                # Without an in-kernel APIC, KVM_RUN loads CR8 from kvm_run.cr8 on entry.
                self._run.cr8 = s.cr8
            elif group is Group.DEBUG:
                self._fd.set_debugregs(s)
                self._apply_guest_debug()
            else:
                s.flags = kb.KVM_VCPUEVENT_VALID_SHADOW
                self._fd.set_vcpu_events(s)

    def get_registers(self, names: Iterable[Reg]) -> list[RegValue]:
        names = list(names)
        structs = self._structs({group_of(n) for n in names})
        return [read_reg(n, structs) for n in names]

    def set_registers(self, values: Mapping[Reg, RegValue]) -> None:
        structs = self._structs({group_of(n) for n in values})
        for name, value in values.items():
            write_reg(name, value, structs)
        self._commit(structs)

    def _rip(self) -> int:
        return int(self._structs((Group.REGS,))[Group.REGS].rip)

    # -- debug controls ---------------------------------------------------------------
    def set_single_step(self, enabled: bool) -> None:
        self._single_step = enabled
        self._apply_guest_debug()

    @property
    def _stepping(self) -> bool:
        """The step primitive is armed: the caller's single step, or our resume step."""
        return self._single_step or self._resume_step

    def _apply_guest_debug(self) -> None:
        """The step flags, intercepts or breakpoints changed. Hardware KVM: set guest
        debug now. kvm_pvm: at the next entry (`_sync_guest_debug`), with the guards."""
        if not self._p.is_pvm:
            self._sync_guest_debug()

    def _sync_guest_debug(self, guards: tuple[int, ...] = ()) -> None:
        """KVM_SET_GUEST_DEBUG from the step flags, the intercepts, the breakpoints and
        the handler guards (execute breakpoints for free slots); skipped on kvm_pvm when
        KVM already has exactly that."""
        p = self._p
        key = (self._stepping, guards, p.hw_slots, self._rf_mask, p.intercepts)
        if p.is_pvm and key == self._applied_key:
            return  # the usual case while stepping: nothing changed
        control = 0
        debugreg = self._debugreg()
        guard_bits = 0
        if guards:
            regs = list(debugreg) if debugreg else [0, 0, 0, 0, 0, 0, 0, DR7_FIXED]
            free = (n for n in range(4) if not regs[7] >> 2 * n & 3)
            for n, address in zip(free, guards, strict=False):
                regs[n] = address
                regs[7] |= 1 << 2 * n  # local enable, execute (R/W 00), length 1 (00)
                guard_bits |= 1 << n
            debugreg = tuple(regs)
        if self._stepping:
            control |= kb.KVM_GUESTDBG_ENABLE | kb.KVM_GUESTDBG_SINGLESTEP
        if debugreg:
            control |= kb.KVM_GUESTDBG_ENABLE | kb.KVM_GUESTDBG_USE_HW_BP
        if Vector.BP in self._p.intercepts:
            control |= kb.KVM_GUESTDBG_ENABLE | kb.KVM_GUESTDBG_USE_SW_BP
        self._applied_key = key
        self._armed, self._guard_bits = debugreg, guard_bits
        if p.is_pvm and self._applied == (control, debugreg):
            return
        self._fd.set_guest_debug(control, debugreg)
        self._applied = (control, debugreg)

    def _debugreg(self) -> tuple[int, ...]:
        """DR0-3/DR7 for guest debug: the debugger's slots when it has any. Otherwise,
        on hardware KVM with #DB intercepted, the guest's own, mirrored (see the module
        docstring: there INT1 exits only with USE_HW_BP, which hides the guest's DRs).
        Never on kvm_pvm: it exits on INT1 anyway, and the guest's DRs work as they are."""
        slots = self._p.hw_slots
        if self._p.hw_slots_used:
            addresses = [0 if bp is None else bp.address for bp in slots]
            return (*addresses, 0, 0, 0, encode_dr7(slots) & ~self._rf_mask)
        if Vector.DB in self._p.intercepts and not self._p.is_pvm:
            d = self._fd.get_debugregs()
            return (d.db[0], d.db[1], d.db[2], d.db[3], 0, 0, d.dr6, d.dr7 & ~self._rf_mask)
        return ()

    def _handler_guards(self) -> tuple[int, ...]:
        """kvm_pvm, before a step: the first instructions of the exception handlers the
        step could enter (quirks.py), as many as there are free slots, never the RIP the
        step starts from (guest debug ignores RF: it would fire at once). Also records
        where the step starts (`_step_from`)."""
        regs, sregs = self._regs_sregs()
        rip = regs.rip
        self._step_from = (rip, regs.rsp)
        free = 4 - self._p.hw_slots_used
        if not free:
            return ()
        idt = self._exception_gates(sregs)
        if idt != self._guard_idt or free != self._guard_free:
            # One spare target, for when RIP is one of them.
            self._guard_idt, self._guard_free = idt, free
            self._guard_targets = gate_targets(idt)[: free + 1] if idt else ()
        targets = self._guard_targets
        if rip in targets:
            return tuple(t for t in targets if t != rip)[:free]
        return targets[:free]

    def _regs_sregs(self) -> tuple[CData, CData]:
        if self._synced and self._run.kvm_valid_regs & _SYNC == _SYNC:
            synced = self._run.s.regs
            return synced.regs, synced.sregs
        structs = self._structs((Group.REGS, Group.SREGS))
        return structs[Group.REGS], structs[Group.SREGS]

    def _exception_gates(self, sregs: CData) -> bytes:
        """The IDT's first 32 gates (fewer if its limit says so; b"" if unreadable)."""
        idt, cr0, cr3 = sregs.idt, sregs.cr0, sregs.cr3
        base = idt.base
        size = min(idt.limit + 1, EXCEPTION_GATES) & ~0xF
        if (base & 0xFFF) + size <= 0x1000:  # the usual case: one page
            page = self._page_gpa(cr0, cr3, base)
            if page is None:
                return b""
            try:
                return self._p.read_memory(page | (base & 0xFFF), size)
            except PlatformError:
                return b""
        out = b""
        while len(out) < size:
            address = base + len(out)
            chunk = min(size - len(out), 0x1000 - (address & 0xFFF))
            page = self._page_gpa(cr0, cr3, address)
            if page is None:
                return b""
            try:
                out += self._p.read_memory(page | (address & 0xFFF), chunk)
            except PlatformError:
                return b""
        return out

    def _execute_slots_at(self, pc: int, dr6: int = 0xF,
                          debugreg: tuple[int, ...] | None = None) -> int:
        """DR7 enable bits of the debugger's execute breakpoints at `pc` (whose DR6 bit
        is in `dr6`), in `debugreg` (default: what KVM has; the guards are not counted)."""
        if debugreg is None:
            debugreg, dr6 = self._armed, dr6 & ~self._guard_bits
        if not debugreg:
            return 0
        dr7, bits = debugreg[7], 0
        for n in range(4):
            enabled = dr7 >> 2 * n & 3
            execute = not dr7 >> 16 + 4 * n & 3
            if enabled and execute and debugreg[n] == pc and dr6 >> n & 1:
                bits |= 3 << 2 * n
        return bits

    def _begin_resume_step(self) -> None:
        """Resuming at the instruction an execute breakpoint was reported at: run it once
        unchecked, as RFLAGS.RF would, by stepping it with those slots disarmed."""
        at, self._rf_at = self._rf_at, None
        if at is None or self._resume_step or self._rip() != at:
            return
        mask = self._execute_slots_at(at, debugreg=self._debugreg())
        if mask:
            self._rf_mask, self._resume_step = mask, True
            self._apply_guest_debug()

    def _end_resume_step(self, exit_: Exit | None) -> Exit | None:
        """Re-arm after the resume step; its own step exit is not the caller's."""
        if not self._resume_step or exit_ is None:
            return exit_
        self._rf_mask, self._resume_step = 0, False
        self._apply_guest_debug()
        if not self._single_step and isinstance(exit_, ExceptionExit) and exit_.is_single_step:
            return None  # stepped over: carry on running
        return exit_

    # -- events -----------------------------------------------------------------------
    def request_interrupt(self, vector: int) -> None:
        with self._lock:
            self._irqs.add(vector)
            self._wake.notify_all()
            self._kick_locked()

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        events = self._fd.get_vcpu_events()
        events.exception.injected = 1
        events.exception.nr = vector
        events.exception.has_error_code = 0 if error_code is None else 1
        events.exception.error_code = error_code or 0
        events.flags = 0  # leave NMI / SIPI / shadow state as it is
        self._fd.set_vcpu_events(events)

    # -- cancel / kick ----------------------------------------------------------------
    def cancel(self) -> None:
        with self._lock:
            self._cancel = True
            self._wake.notify_all()
            self._kick_locked()

    def _kick_locked(self) -> None:
        """Make a KVM_RUN in progress on another thread return EINTR promptly."""
        thread = self._thread
        if thread is None or thread == threading.get_ident():
            return  # not running, or called from our own IoHandler: the loop checks flags
        self._run.immediate_exit = 1  # covers the window before the thread enters KVM_RUN
        if not self._p.kick_signal:
            return  # no handler installed: the signal would kill the process
        with contextlib.suppress(ProcessLookupError):  # the thread is just leaving run()
            signal.pthread_kill(thread, KICK_SIGNAL)

    # -- run --------------------------------------------------------------------------
    def run(self) -> Exit:
        with self._lock:
            if self._thread is not None:
                raise PlatformError(f"vCPU {self.index}: run() is already in progress")
            if self._p.closed:
                raise PlatformError("the partition is closed")
            self._thread = threading.get_ident()
        try:
            while True:
                exit_ = self._run_once()
                if exit_ is not None:
                    return exit_
        finally:
            with self._lock:
                self._thread = None
                self._run.immediate_exit = 0
                self._wake.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no thread is inside run(); False on timeout or from that thread."""
        with self._lock:
            if self._thread == threading.get_ident():
                return False
            return self._wake.wait_for(lambda: self._thread is None, timeout)

    def _run_once(self) -> Exit | None:
        """One KVM_RUN and its exit; None means go round again."""
        run = self._run
        with self._lock:
            if self._cancel:
                self._cancel = False
                if self._needs_completion:
                    # Let KVM apply the I/O answer without running the guest, so the
                    # registers the caller now reads include the finished IN / MMIO read.
                    run.immediate_exit = 1
                    self._enter()
                return CanceledExit(self._rip())
            run.immediate_exit = 0
            self._begin_resume_step()
            vector = self._pick_interrupt()
        if not self._stepping:
            self._code_pages.clear()
        self._step_from = None
        if self._p.is_pvm:
            if self._stepping and self._at_iretq() and step_iretq(self._cpu_view()):
                exit_ = ExceptionExit(Vector.DB, self._rip(), debug_status=DR6_FIXED | DR6_BS)
                return self._end_resume_step(exit_)
            self._sync_guest_debug(self._handler_guards() if self._single_step else ())
        if vector is not None:
            try:
                self._fd.interrupt(vector)
            except KvmIoctlError:
                with self._lock:
                    self._irqs.add(vector)  # one already queued in KVM: retry next entry
        if not self._enter():
            return None  # kicked: a cancel or an interrupt request, handled above
        return self._end_resume_step(self._dispatch())

    def _enter(self) -> bool:
        self._needs_completion = False
        entered = self._fd.run()
        self._synced = bool(self._run.kvm_valid_regs)  # KVM stores them on EINTR too
        return entered

    def _pick_interrupt(self) -> int | None:
        """Under the lock: the vector to inject before this entry, if the guest can take
        one now; otherwise ask KVM to exit when it can (KVM_EXIT_IRQ_WINDOW_OPEN)."""
        run = self._run
        run.request_interrupt_window = 0
        if not self._irqs or self._stepping:
            return None  # a step holds interrupts off, as the emulated platform does
        if not (run.ready_for_interrupt_injection and run.if_flag):
            run.request_interrupt_window = 1
            return None
        vector = max(self._irqs)  # the APIC serves the highest vector first
        self._irqs.discard(vector)
        if self._irqs:
            run.request_interrupt_window = 1
        return vector

    def _dispatch(self) -> Exit | None:
        run = self._run
        reason = run.exit_reason
        if reason == kb.KVM_EXIT_IO:
            self._on_port_io()
            return self._finish_step_after_io()
        if reason == kb.KVM_EXIT_MMIO:
            return self._on_mmio() or self._finish_step_after_io()
        if reason in (kb.KVM_EXIT_IRQ_WINDOW_OPEN, kb.KVM_EXIT_INTR):
            return None
        if reason == kb.KVM_EXIT_HLT:
            return self._on_halt()
        if reason == kb.KVM_EXIT_DEBUG:
            return self._on_debug()
        if reason == kb.KVM_EXIT_SHUTDOWN:
            return ShutdownExit(self._rip())
        if reason == kb.KVM_EXIT_INTERNAL_ERROR:
            return self._on_internal_error()
        if reason == kb.KVM_EXIT_FAIL_ENTRY:
            hw = run.fail_entry.hardware_entry_failure_reason
            return InternalErrorExit(self._rip(), f"VM entry failed (hardware reason {hw:#x})")
        return InternalErrorExit(self._rip(), f"unexpected KVM exit reason {reason}")

    def _finish_step_after_io(self) -> Exit | None:
        """While stepping, the I/O instruction is the step: complete it and stop.

        Hardware KVM reports the step itself when the access completes (KVM_EXIT_DEBUG
        from the completion run). kvm_pvm loses that trap (measured: the next
        instruction runs too), so the completion runs with immediate_exit and, when it
        comes back EINTR, the step exit is made here with the DR6 kvm_pvm reports.
        """
        if not self._stepping:
            return None
        self._run.immediate_exit = 1
        entered = self._enter()
        self._run.immediate_exit = 0
        if entered:
            return self._dispatch()
        return ExceptionExit(Vector.DB, self._rip(), debug_status=DR6_FIXED | DR6_BS)

    # -- exits --------------------------------------------------------------------------
    def _on_port_io(self) -> None:
        io = self._run.io
        size, port, count, offset = io.size, io.port, io.count, io.data_offset
        area = self._fd.run_area
        handler = self._p.io_handler
        if io.direction == kb.KVM_EXIT_IO_OUT:
            data = area[offset : offset + size * count]
            for i in range(count):  # count > 1: string I/O (OUTS with REP)
                value = int.from_bytes(data[i * size : (i + 1) * size], "little")
                if handler is not None:
                    handler.port_write(self.index, port, size, value)
        else:
            mask = (1 << (8 * size)) - 1
            out = bytearray()
            for _ in range(count):
                value = handler.port_read(self.index, port, size) if handler else mask
                out += (value & mask).to_bytes(size, "little")
            area[offset : offset + len(out)] = bytes(out)
            self._needs_completion = True

    def _on_mmio(self) -> Exit | None:
        mmio = self._run.mmio
        gpa, size = mmio.phys_addr, mmio.len
        handler = self._p.io_handler
        if not self._p.is_mmio(gpa, size):
            kind = "write to" if mmio.is_write else "read from"
            return InternalErrorExit(
                self._rip(), f"guest {kind} unmapped guest-physical address {gpa:#x} ({size} B)"
            )
        if mmio.is_write:
            value = int.from_bytes(bytes(ffi.buffer(mmio.data, size)), "little")
            if handler is not None:
                handler.mmio_write(self.index, gpa, size, value)
        else:
            mask = (1 << (8 * size)) - 1
            value = handler.mmio_read(self.index, gpa, size) if handler else mask
            ffi.memmove(mmio.data, (value & mask).to_bytes(size, "little"), size)
            self._needs_completion = True
        return None

    def _on_halt(self) -> Exit | None:
        if not self._run.if_flag:
            return HaltExit(self._rip())
        # HLT with IF=1: WHv keeps the vCPU inside run() until an interrupt arrives.
        with self._lock:
            while not self._irqs and not self._cancel:
                self._wake.wait()
        return None

    def _on_debug(self) -> Exit:
        arch = self._run.debug.arch
        vector, pc, dr6 = arch.exception, arch.pc, arch.dr6
        if vector == Vector.DB:
            if dr6 & self._guard_bits and self._single_step:
                # A handler guard: the stepped instruction raised an exception, KVM
                # delivered it, and the handler's first instruction has not run. That
                # is where the step ends (a debugger slot there is reported next step).
                return ExceptionExit(Vector.DB, pc, debug_status=DR6_FIXED | DR6_BS)
            if dr6 & DR6_BS and self._step_from is not None and self._single_step:
                # An exception no guard covered: back onto the handler's first
                # instruction if it can be undone (quirks.undo_handler_entry). A step
                # that delivered none moved RSP by 16 bytes at most: checked first.
                rip, rsp = self._step_from
                regs, sregs = self._regs_sregs()
                if abs(regs.rsp - rsp) > 16:
                    idt = self._exception_gates(sregs)
                    if idt and undo_handler_entry(self._cpu_view(), rip, rsp, idt):
                        pc = self._rip()
            insn = b""
            if not dr6 & _DR6_HITS:
                # Neither a step nor a DRn hit: an intercepted INT1 (hardware KVM reports
                # it with pc at the 0xF1 byte). Give the bytes so `is_icebp` holds.
                insn = self._instruction_bytes(pc)
            elif not dr6 & DR6_BS and self._execute_slots_at(pc, dr6):
                self._rf_at = pc  # an execute breakpoint: RF for the next resume
            return ExceptionExit(Vector.DB, pc, debug_status=dr6, instruction_bytes=insn)
        return ExceptionExit(vector, pc, instruction_bytes=self._instruction_bytes(pc))

    def _on_internal_error(self) -> Exit | None:
        internal = self._run.internal
        rip = self._rip()
        if internal.suberror != kb.KVM_INTERNAL_ERROR_EMULATION or internal.ndata < 2:
            data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
            return InternalErrorExit(
                rip, f"KVM internal error, suberror {internal.suberror} (data: {data or '-'})"
            )
        # struct emulation_failure: data[0] = flags, then insn_size (u8) + insn_bytes[15].
        raw = bytes(ffi.buffer(ffi.addressof(internal.data, 1), 16))
        insn = raw[1 : 1 + min(raw[0], 15)]
        return self._on_emulation_failure(rip, insn)

    def _on_emulation_failure(self, rip: int, insn: bytes) -> Exit | None:
        """kvm_pvm emulates CPL0 code and cannot execute INT1, INT3 or INT n there.

        Intercepted vectors become the exit WHv gives (#DB / #BP with RIP at the
        instruction); others are delivered through the guest IDT as the CPU would
        (RIP past the instruction, then the gate), so guests still work.
        """
        intercepts = self._p.intercepts
        first = insn[:1]
        if first == b"\xf1":
            if Vector.DB in intercepts:
                return ExceptionExit(Vector.DB, rip, instruction_bytes=insn, debug_status=DR6_FIXED)
            return self._deliver_software(rip, 1, Vector.DB)
        if first == b"\xcc":
            if Vector.BP in intercepts:
                return ExceptionExit(Vector.BP, rip, instruction_bytes=insn)
            return self._deliver_software(rip, 1, Vector.BP)
        if first == b"\xcd" and len(insn) >= 2:
            return self._deliver_software(rip, 2, insn[1])
        return InternalErrorExit(
            rip,
            f"instruction emulation failed at {rip:#x} (bytes: {insn.hex(' ') or 'none'})",
            insn,
        )

    def _deliver_software(self, rip: int, length: int, vector: int) -> Exit | None:
        """Do what the CPU does for INT n at `rip`, in software (delivery.py).

        Software rather than KVM event injection so the new state is known now: a step
        over INT n stops at the handler's first instruction, as one instruction should.
        """
        try:
            deliver(self._cpu_view(), Event(vector, rip + length, software=True))
        except TripleFault:
            return ShutdownExit(rip, f"triple fault delivering INT {vector:#x}")
        if self._stepping:
            return ExceptionExit(Vector.DB, self._rip(), debug_status=DR6_FIXED | DR6_BS)
        return None

    def _at_iretq(self) -> bool:
        """Cheap check before each kvm_pvm step (see quirks.py): is RIP at an IRETQ?"""
        regs, sregs = self._regs_sregs()
        rip, cr0, cr3 = regs.rip, sregs.cr0, sregs.cr3
        if (rip & 0xFFF) == 0xFFF:
            return True  # straddles a page: let step_iretq look properly
        page = self._page_gpa(cr0, cr3, rip)
        if page is None:
            return False
        try:
            return self._p.read_memory(page | (rip & 0xFFF), 2) == IRETQ
        except PlatformError:
            return False

    def _page_gpa(self, cr0: int, cr3: int, va: int) -> int | None:
        """Guest-physical address of `va`'s page. Cached for the stepping session
        (cleared by any run without stepping), so a step costs small memory reads, not
        page walks."""
        key = (cr3, va >> 12)
        page = self._code_pages.get(key)
        if page is None:
            if len(self._code_pages) > 64:
                self._code_pages.clear()
            try:
                page = translate(self._p.read_memory, PagingState(cr0, cr3), va & ~0xFFF)
            except PageFault:
                return None
            self._code_pages[key] = page
        return page

    def _cpu_view(self) -> CpuView:
        return CpuView(
            self.get_registers, self.set_registers, self._p.read_memory, self._p.write_memory
        )

    def _instruction_bytes(self, va: int, size: int = 15) -> bytes:
        """Best effort: the bytes at guest-virtual `va`, fewer if a page is missing."""
        cr0, cr3 = self.get_registers((Reg.CR0, Reg.CR3))
        assert isinstance(cr0, int) and isinstance(cr3, int)
        paging = PagingState(cr0, cr3)
        out = b""
        while len(out) < size:
            address = va + len(out)
            chunk = min(size - len(out), 0x1000 - (address & 0xFFF))
            try:
                pa = translate(self._p.read_memory, paging, address)
                out += self._p.read_memory(pa, chunk)
            except (PageFault, PlatformError):
                break
        return out

    def close(self) -> None:
        self._synced = False  # later register calls fail on the closed fd, not on kvm_run
        self._fd.close()
