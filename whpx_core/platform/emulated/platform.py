"""The emulated platform: Unicorn engines behaving like WHPX partitions.

One Unicorn engine per vCPU over one shared guest-RAM buffer. What WHPX does in
hardware is done here in software and normalised into the same exits:
- an executed 0xF1 (Unicorn: "invalid instruction") is a #DB with RIP at the byte;
- RFLAGS.TF set by the host traps after one instruction (Unicorn models TF itself);
- exceptions and interrupts that are not intercepted are delivered through the guest's
  IDT by `delivery.py` (Unicorn never does);
- HLT with IF=1 waits for an interrupt inside `run()`, as WHPX does with its APIC;
- hardware breakpoints, the debugger's and the guest's own DR0-DR3/DR7, are Unicorn
  hooks restricted to the watched addresses (debug_registers.py).
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_MODE_64,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn import x86_const as x86

from whpx_core.platform.base import (
    Capabilities,
    HwBreakpoint,
    IoHandler,
    Partition,
    Platform,
    PlatformError,
    Vcpu,
)
from whpx_core.platform.delivery import CpuView, Event, TripleFault, deliver
from whpx_core.platform.emulated import native
from whpx_core.platform.emulated.debug_registers import (
    DR6_HITS,
    DR7_ENABLES,
    SLOTS,
    BreakpointHooks,
    FastRegisters,
    Hits,
    decode_dr7,
    validate_slots,
    watchpoints_unavailable,
)
from whpx_core.platform.emulated.registers import UnicornRegisters
from whpx_core.platform.emulated.scheduler import Baton, VirtualClock
from whpx_core.platform.emulated.unicorn_internals import (
    CalibrationError,
    CpuInternals,
    calibrate,
    release,
)
from whpx_core.platform.exits import (
    DR6_BS,
    ERROR_CODE_VECTORS,
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    InternalErrorExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.paging import PagingState, translate
from whpx_core.platform.ram import GuestRam
from whpx_core.platform.registers import RFLAGS_IF, RFLAGS_RF, RFLAGS_TF, Reg, RegValue

# Instructions per slice: long enough to amortise a baton hand-over, short enough that a
# cancel or the other vCPUs are served within about a millisecond.
SLICE_INSTRUCTIONS = 50_000
MAX_VCPUS = 64

# Read in one batch before every slice (FastRegisters): the slice's start and the DR state.
_SLICE_STATE = (x86.UC_X86_REG_RIP, x86.UC_X86_REG_RFLAGS, x86.UC_X86_REG_DR6,
                x86.UC_X86_REG_DR7, x86.UC_X86_REG_CR0, x86.UC_X86_REG_CR3,
                x86.UC_X86_REG_DR0, x86.UC_X86_REG_DR1, x86.UC_X86_REG_DR2,
                x86.UC_X86_REG_DR3)
# Read by the C slice after it ends: where it stopped and what DR6 says about it.
_SLICE_RESULT = (x86.UC_X86_REG_RIP, x86.UC_X86_REG_DR6, x86.UC_X86_REG_RSP,
                 x86.UC_X86_REG_RFLAGS)
_GUEST_DRS = (x86.UC_X86_REG_DR7, x86.UC_X86_REG_DR0, x86.UC_X86_REG_DR1,
              x86.UC_X86_REG_DR2, x86.UC_X86_REG_DR3)


class EmulatedPlatform(Platform):
    name = "emulated"

    @classmethod
    def probe(cls) -> str | None:
        try:
            calibrate()
        except CalibrationError as error:
            return f"this Unicorn build is not supported ({error})"
        return None

    def capabilities(self) -> Capabilities:
        no_watch = watchpoints_unavailable()
        notes = [
            "software model of WHPX debug semantics on Unicorn; virtual time",
            "hardware breakpoints: Unicorn hooks on the watched addresses; data "
            "watchpoints match the guest-physical address the slot maps to at each slice",
            "an execute breakpoint on a REP string instruction is reported again at each "
            "iteration after a resume (Unicorn re-enters the instruction per iteration)",
            "a data breakpoint the guest enables with MOV to DR7 takes effect at the next "
            f"slice (at most {SLICE_INSTRUCTIONS} instructions later)",
        ]
        if no_watch:
            notes.append(f"no data watchpoints: {no_watch}")
        return Capabilities(
            icebp_exits=True,
            single_step="tf",
            hardware_breakpoints=SLOTS,
            hardware_watchpoints=no_watch is None,
            guest_exception_delivery=True,
            max_vcpus=MAX_VCPUS,
            serial_execution=True,
            notes=tuple(notes),
        )

    def describe(self) -> str:
        slice_ = "C slice" if native.load() is not None else \
            f"pure-Python slice: {native.reason()}"
        return f"emulated (Unicorn; WHPX debug semantics modelled in software, virtual " \
            f"time; {slice_})"

    def create_partition(self, vcpu_count: int) -> EmulatedPartition:
        if not 1 <= vcpu_count <= MAX_VCPUS:
            raise PlatformError(f"the emulated platform runs 1 to {MAX_VCPUS} vCPUs")
        return EmulatedPartition(vcpu_count)


class EmulatedPartition(Partition):
    def __init__(self, vcpu_count: int) -> None:
        self.vcpu_count = vcpu_count
        self.clock = VirtualClock()
        self.baton = Baton()
        self.intercepts: frozenset[int] = frozenset()
        self.io: IoHandler | None = None
        self.ram = GuestRam()
        # Code may have been translated under TF from a planted INT1, so write_step_byte
        # must invalidate: set for good once the guest ran with its own TF, or a host step
        # ended without its trap (after MOV SS the trap waits an instruction, and Unicorn
        # has translated the next block under TF before its count stops it).
        self.tf_translations_unsafe = False
        self._vcpus = [EmulatedVcpu(self, i) for i in range(vcpu_count)]
        self.closed = False  # vCPUs refuse to touch their freed engines after close

    # -- memory ------------------------------------------------------------------
    def map_memory(self, gpa: int, buffer: mmap.mmap) -> None:
        if gpa % 4096 or len(buffer) % 4096:
            raise PlatformError("guest memory must be page aligned")
        self.ram.add(gpa, buffer)
        for vcpu in self._vcpus:
            vcpu.map_ram(gpa, buffer)

    def add_mmio_region(self, gpa: int, size: int) -> None:
        for vcpu in self._vcpus:
            vcpu.map_mmio(gpa, size)

    def read_memory(self, gpa: int, size: int) -> bytes:
        return self.ram.read(gpa, size)

    def write_memory(self, gpa: int, data: bytes) -> None:
        self.ram.write(gpa, data)
        # Unicorn keeps translated code: without this the old instruction bytes run on.
        for vcpu in self._vcpus:
            vcpu.remove_cache(gpa, gpa + len(data))

    def swap_bytes(self, gpas, values) -> None:  # type: ignore[no-untyped-def]
        # Translated code is left alone on purpose (see Partition.swap_bytes).
        self.ram.swap_bytes(gpas, values)

    def write_step_byte(self, gpa: int, value: int) -> None:
        # Unicorn translates code run under TF apart from code run freely (TF is part of
        # a translation's key: tests/platform/test_emulated_native.py). The step's
        # translation at a breakpoint is made from the original byte, the free run's from
        # the INT1; both stay valid, so neither is redone at every hit. Unless code may
        # have been translated under TF while an INT1 was planted: see
        # tf_translations_unsafe.
        if self.tf_translations_unsafe:
            self.write_memory(gpa, bytes([value]))
        else:
            self.ram.write(gpa, bytes([value]))

    # -- configuration --------------------------------------------------------------
    def set_io_handler(self, handler: IoHandler) -> None:
        self.io = handler

    def set_exception_intercepts(self, vectors: frozenset[int]) -> None:
        self.intercepts = frozenset(vectors)

    def set_hardware_breakpoints(self, slots: Sequence[HwBreakpoint | None]) -> None:
        checked = validate_slots(slots, watchpoints=watchpoints_unavailable())
        for vcpu in self._vcpus:
            vcpu.breakpoints.host = checked  # hooked before each vCPU's next slice

    def vcpu(self, index: int) -> EmulatedVcpu:
        return self._vcpus[index]

    def close(self) -> None:
        """Stop every vCPU and free the engines. Callers stop their vCPU threads first."""
        if self.closed:
            return
        self.closed = True
        for vcpu in self._vcpus:
            vcpu.cancel()
        self.baton.acquire(-1)  # waits until no engine is executing
        try:
            for vcpu in self._vcpus:
                release(vcpu.uc)
        finally:
            self.baton.release(-1)


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # "intr" or "invalid"
    vector: int = 0


_RIP, _RSP, _RFLAGS = Reg.RIP, Reg.RSP, Reg.RFLAGS  # module constants: read every step


class EmulatedVcpu(Vcpu):
    def __init__(self, partition: EmulatedPartition, index: int) -> None:
        self.index = index
        self._p = partition
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        self._internals = CpuInternals(uc)
        # Interrupts and invalid instructions end every step: recorded by C hooks where
        # the C slice can be built (native/), else by Python ones.
        lib = native.load()
        self._native = None if lib is None else native.NativeSlice(
            lib, uc, self._internals.addresses, _SLICE_STATE, _SLICE_RESULT,
            x86.UC_X86_REG_RFLAGS, x86.UC_X86_REG_DR6, x86.UC_X86_REG_CR2,
            (UC_HOOK_INTR, UC_HOOK_INSN_INVALID))
        if self._native is None:
            uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
            uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        self._fast = FastRegisters(uc)
        self._regs = UnicornRegisters(uc, self._internals, self._read_linear,
                                      self._native or self._fast, self._native)
        # The guest's RIP, RSP and RFLAGS as a fast step left them, until anything can
        # change them (run, set_registers): the engine reads them around every step.
        self._known: dict[Reg, RegValue] | None = None
        self._event: _Event | None = None
        self._cancel = False
        self._stepping = False
        self._guest_tf = False
        self._halted = False
        self._pending_irqs: set[int] = set()
        self._sleeping = False  # in _wait_for_interrupt (HLT with interrupts on)
        self._pending_exception: tuple[int, int | None] | None = None
        self._pending_guest_db = 0  # DR6 B0-B3 of a guest data #DB not delivered yet
        self._emu_thread: int | None = None
        self.breakpoints = BreakpointHooks(uc, self._fast)
        # DR6 at the start of the slice, whether TF was set then, and whether DR6's
        # (sticky) BS was hidden so that a fresh BS tells a TF trap (see _db_cause).
        self._dr6_before = 0
        self._tf_at_start = False
        self._slice_dr7 = 0  # the guest's DR7 at the start of the current slice
        self._bs_hidden = False
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, x86.UC_X86_INS_OUT)

    # -- memory plumbing --------------------------------------------------------------
    def map_ram(self, gpa: int, buffer: mmap.mmap) -> None:
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        self.uc.mem_map_ptr(gpa, len(buffer), UC_PROT_ALL, address)

    def map_mmio(self, gpa: int, size: int) -> None:
        def read(uc: Uc, offset: int, width: int, data: object) -> int:
            assert self._p.io is not None
            return self._p.io.mmio_read(self.index, gpa + offset, width)

        def write(uc: Uc, offset: int, width: int, value: int, data: object) -> None:
            assert self._p.io is not None
            self._p.io.mmio_write(self.index, gpa + offset, width, value)

        self.uc.mmio_map(gpa, size, read, None, write, None)

    def _paging(self) -> PagingState:
        return PagingState(self.uc.reg_read(x86.UC_X86_REG_CR0),
                           self.uc.reg_read(x86.UC_X86_REG_CR3))

    def _read_linear(self, va: int, size: int) -> bytes:
        pa = translate(self._p.read_memory, self._paging(), va)
        return self._p.read_memory(pa, size)

    def remove_cache(self, begin: int, end: int) -> None:
        self._regs.remove_cache(begin, end)

    def translate_gva(self, gva: int, read_phys: object = None) -> int | None:
        self._check_open()
        return self._regs.translate(gva)

    def _check_open(self) -> None:
        # After close the engine is freed: reaching into it would crash the process.
        if self._p.closed:
            raise PlatformError("the partition is closed")

    # -- registers --------------------------------------------------------------------
    def get_registers(self, names: Iterable[Reg]) -> list[RegValue]:
        if not isinstance(names, list):
            names = list(names)
        known = self._known
        if known is not None:
            try:
                return [known[name] for name in names]
            except KeyError:
                pass
        self._check_open()
        values = self._regs.read_many(names)
        if self._stepping and not self._guest_tf and Reg.RFLAGS in names:
            # The step primitive's TF belongs to the platform, not to the guest state.
            at = names.index(Reg.RFLAGS)
            values[at] = int(values[at]) & ~RFLAGS_TF
        return values

    def set_registers(self, values: Mapping[Reg, RegValue]) -> None:
        self._known = None
        self._check_open()
        self._regs.write(dict(values))
        if Reg.RIP in values:
            self._halted = False  # moving RIP takes the vCPU out of HLT, as on KVM

    # -- control --------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel = True
        if self._emu_thread == threading.get_ident():
            self.uc.emu_stop()  # we are inside a hook of our own engine: safe
        self._p.baton.wake_all()

    def set_single_step(self, enabled: bool) -> None:
        self._stepping = enabled

    def request_interrupt(self, vector: int) -> None:
        with self._p.baton.cond:
            self._pending_irqs.add(vector)
            if self._sleeping:
                # Runnable from this virtual instant on, whenever its host thread wakes:
                # the round-robin waits for its turn, so runs stay deterministic.
                self._p.baton.running.add(self.index)
            self._p.baton.cond.notify_all()

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        self._pending_exception = (vector, error_code)

    @property
    def halted(self) -> bool:
        return self._halted

    # -- hooks (called by Unicorn on this vCPU's thread) ----------------------------
    def _on_interrupt(self, uc: Uc, intno: int, data: object) -> None:
        self._event = _Event("intr", intno)
        uc.emu_stop()

    def _on_invalid(self, uc: Uc, data: object) -> bool:
        self._event = _Event("invalid")
        uc.emu_stop()
        return True

    def _on_in(self, uc: Uc, port: int, size: int, data: object) -> int:
        assert self._p.io is not None
        return self._p.io.port_read(self.index, port, size)

    def _on_out(self, uc: Uc, port: int, size: int, value: int, data: object) -> None:
        assert self._p.io is not None
        self._p.io.port_write(self.index, port, size, value)

    # -- running ----------------------------------------------------------------------
    def run(self) -> Exit:
        self._known = None
        self._check_open()
        if self._stepping and self._native is not None and not (
                self._cancel or self._halted or self._pending_guest_db or
                self._pending_exception is not None):
            exit_ = self._step_fast(self._native)
            if exit_ is not None:
                return exit_
        baton = self._p.baton
        try:
            while True:
                if self._cancel:
                    self._cancel = False
                    return CanceledExit(self._regs.read_u64(x86.UC_X86_REG_RIP))
                if self._pending_exception is not None:
                    exit_ = self._deliver_injected()
                    if exit_ is not None:
                        return exit_
                if self._pending_guest_db:
                    exit_ = self._deliver_guest_db(self._pending_guest_db)
                    if exit_ is not None:
                        return exit_
                if self._halted:
                    exit_ = self._wait_for_interrupt()
                    if exit_ is not None:
                        return exit_
                    continue
                exit_ = self._deliver_interrupt()
                if exit_ is not None:
                    return exit_
                baton.acquire(self.index)
                try:
                    exit_ = self._run_slice()
                finally:
                    baton.release(self.index)
                if exit_ is not None:
                    return exit_
        finally:
            baton.leave(self.index)

    def _wait_for_interrupt(self) -> Exit | None:
        rip = self._regs.read_u64(x86.UC_X86_REG_RIP)
        if not self._regs.read_u64(x86.UC_X86_REG_RFLAGS) & RFLAGS_IF:
            return HaltExit(rip)
        baton, clock = self._p.baton, self._p.clock
        with baton.cond:
            baton.running.discard(self.index)
            baton.cond.notify_all()  # a vCPU waiting for this one's turn goes on
            baton.sleepers += 1
            self._sleeping = True
            try:
                while True:
                    if self._cancel:
                        self._cancel = False
                        return CanceledExit(rip)
                    if self._pending_irqs:
                        self._halted = False
                        return None
                    if not baton.running and clock.warp_to_next_deadline():
                        clock.fire_due()  # callbacks may request interrupts (re-entrant)
                        continue
                    baton.cond.wait()
            finally:
                baton.sleepers -= 1
                self._sleeping = False

    def _deliver_interrupt(self) -> Exit | None:
        if not self._pending_irqs or self._stepping:
            return None  # a step holds interrupts off, like the seed's interrupt shadow
        rflags = self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
        if not rflags & RFLAGS_IF or self._internals.interrupt_shadow:
            return None
        with self._p.baton.cond:
            vector = max(self._pending_irqs)  # the APIC serves the highest vector first
            self._pending_irqs.discard(vector)
        rip = self._regs.read_u64(x86.UC_X86_REG_RIP)
        return self._deliver(Event(vector, rip))

    def _deliver_injected(self) -> Exit | None:
        assert self._pending_exception is not None
        vector, error_code = self._pending_exception
        self._pending_exception = None
        rip = self._regs.read_u64(x86.UC_X86_REG_RIP)
        return self._deliver(Event(vector, rip, error_code))

    def _cpu_view(self) -> CpuView:
        return CpuView(self.get_registers, self.set_registers, self._p.read_memory,
                       self._p.write_memory)

    def _deliver(self, event: Event) -> Exit | None:
        rflags = self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
        image = rflags if self._guest_tf or not self._stepping else rflags & ~RFLAGS_TF
        try:
            deliver(self._cpu_view(), event, pushed_rflags=image)
        except TripleFault:
            return ShutdownExit(event.return_rip,
                                f"triple fault delivering vector {event.vector}")
        return None

    def _instruction_bytes(self, rip: int, size: int = 16) -> bytes:
        """Up to `size` bytes at `rip`, fewer where the next page is not mapped."""
        out = b""
        while len(out) < size:
            va = rip + len(out)
            gpa = self._regs.translate(va)
            if gpa is None:
                break
            chunk = min(size - len(out), 0x1000 - (va & 0xFFF))
            try:
                out += self._p.read_memory(gpa, chunk)
            except PlatformError:
                break
        return out

    def _run_slice(self) -> Exit | None:
        uc, clock, fast = self.uc, self._p.clock, self._native
        state = fast.read_state() if fast is not None else self._fast.read(_SLICE_STATE)
        rip, rflags, dr6, dr7, cr0, cr3, *dr = state
        self._slice_dr7 = dr7
        stepping = self._stepping
        if stepping:
            count = 1
            self._guest_tf = bool(rflags & RFLAGS_TF)
        else:
            if rflags & RFLAGS_TF:
                self._p.tf_translations_unsafe = True  # the guest's own TF
            count = SLICE_INSTRUCTIONS
            deadline = clock.next_deadline()
            if deadline is not None:
                count = max(1, min(count, deadline - clock.now_ns()))
        self.breakpoints.prepare(rip, dr, dr7, (cr0, cr3), self._regs.translate,
                                 retranslate=not stepping)
        # Hide a sticky BS only to tell the guest's own TF trap from a DR hit; under the
        # host's step the trap is ours, and hiding BS would show the guest a DR6 it never
        # wrote if the stepped instruction reads DR6 (its #DB handler does).
        self._hide_bs(dr6, bool(rflags & RFLAGS_TF) and not stepping)
        self._emu_thread = threading.get_ident()
        try:
            if fast is not None:
                exit_ = self._run_native(fast, rip, count, stepping)
            else:
                exit_ = self._run_python(rip, rflags, count, stepping)
        except Exception as error:  # an IoHandler failed inside a hook
            exit_ = InternalErrorExit(uc.reg_read(x86.UC_X86_REG_RIP),
                                      f"device error: {error!r}")
        finally:
            self._emu_thread = None
        if exit_ is not None:
            return exit_
        if stepping and fast is not None:
            exit_ = self._host_step_trap(fast)
            if exit_ is not None:
                return exit_
        if not stepping and not self._p.tf_translations_unsafe:
            # The guest may have set TF inside the slice (POPF) and met a planted INT1
            # or a fault before its first trap: that code was translated under TF.
            after = fast.result()[3] if fast is not None else \
                self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
            self._p.tf_translations_unsafe = bool(after & RFLAGS_TF)
        return self._after_slice(rip, count)

    def _step_fast(self, fast: native.NativeSlice) -> Exit | None:
        """The host's single step when nothing but TF is involved (the common case):
        one C call reads the state and runs the instruction. None when the general path
        must go on: before running anything if a DR breakpoint is armed, after it if
        the instruction did anything but trap and that needs another slice."""
        if not self.breakpoints.idle():
            return None
        baton = self._p.baton
        # Usually no other vCPU is in run() (the engine steps one with the others
        # parked): then the slot is taken without joining the round-robin.
        alone = baton.enter_alone(self.index)
        if not alone:
            baton.acquire(self.index)
        try:
            self.uc._hook_exception = None
            self._emu_thread = threading.get_ident()
            try:
                error = fast.step()
            finally:
                self._emu_thread = None
            if error == native.NOT_RUN:
                return None
            cpu = fast.cpu
            state = cpu.state
            rip, rflags = state[0], state[1]
            self._slice_dr7, self._guest_tf = state[3], bool(rflags & RFLAGS_TF)
            self._dr6_before, self._tf_at_start, self._bs_hidden = state[2], False, False
            if cpu.trapped and self.uc._hook_exception is None:
                return self._step_trapped(cpu.result)  # C checked what _host_step_trap does
            try:
                exit_ = self._after_native_run(fast, rip, error)
            except Exception as failure:  # an IoHandler failed inside a hook
                return InternalErrorExit(self._rip(), f"device error: {failure!r}")
            if exit_ is None:
                exit_ = self._host_step_trap(fast)
            return exit_ if exit_ is not None else self._after_slice(rip, 1)
        finally:
            if alone:
                baton.leave_alone(self.index)
            else:
                baton.release(self.index, leaving=True)

    def _host_step_trap(self, fast: native.NativeSlice) -> Exit | None:
        """The common end of a step, decided without the general path below: the host's
        TF trapped after one instruction, and no DR breakpoint, hook hit or event is
        involved. What _after_slice would conclude, at a fraction of its cost; the C
        slice has already put DR6 back (the step primitive leaves no trace there)."""
        event = self._event
        if event is None or event.kind != "intr" or event.vector != Vector.DB or \
                self.breakpoints.hits.any or self._slice_dr7 & DR7_ENABLES or \
                self._internals.exception_is_int:
            return None
        self._internals.clear_exception_in_flight()
        return self._step_trapped(fast.cpu.result)

    def _step_trapped(self, result) -> Exit:  # type: ignore[no-untyped-def]
        """`result`: _SLICE_RESULT as the C slice read it (RIP, DR6, RSP, RFLAGS)."""
        rip = result[0]
        self._known = {_RIP: rip, _RSP: result[2], _RFLAGS: result[3]}
        clock = self._p.clock
        clock.advance(1)
        clock.fire_due()
        self._bs_hidden = False
        return ExceptionExit(Vector.DB, rip, debug_status=DR6_BS)

    def _run_native(self, fast: native.NativeSlice, rip: int, count: int,
                    stepping: bool) -> Exit | None:
        self.uc._hook_exception = None  # the binding's record of a Python hook that raised
        return self._after_native_run(fast, rip, fast.run(count, stepping))

    def _after_native_run(self, fast: native.NativeSlice, rip: int, error: int) -> Exit | None:
        uc = self.uc
        kind, vector = fast.event
        self._event = None if kind == native.NO_EVENT else \
            _Event("intr", vector) if kind == native.INTERRUPT else _Event("invalid")
        if error:
            return InternalErrorExit(uc.reg_read(x86.UC_X86_REG_RIP),
                                     f"emulation: {UcError(error)}",
                                     self._instruction_bytes(rip))
        if uc._hook_exception is not None:
            raise uc._hook_exception
        return None

    def _run_python(self, rip: int, rflags: int, count: int, stepping: bool) -> Exit | None:
        uc = self.uc
        if stepping:
            self._regs.write_u64(x86.UC_X86_REG_RFLAGS, rflags | RFLAGS_TF)
        self._event = None
        self._internals.clear_halted()
        try:
            uc.emu_start(rip, 0, count=count)
        except UcError as error:
            return InternalErrorExit(uc.reg_read(x86.UC_X86_REG_RIP), f"emulation: {error}",
                                     self._instruction_bytes(rip))
        finally:
            if stepping and not self._guest_tf:
                flags = self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
                self._regs.write_u64(x86.UC_X86_REG_RFLAGS, flags & ~RFLAGS_TF)
        return None

    def _after_slice(self, rip: int, count: int) -> Exit | None:
        clock, event, hits = self._p.clock, self._event, self.breakpoints.hits
        stopped = event is not None or hits.any
        halted = self._internals.halted and not stopped
        if halted:
            self._halted = True
        clock.advance(count if not stopped and not halted else 1)
        clock.fire_due()
        if event is not None:
            self._internals.clear_exception_in_flight()
        if hits.resumed_at is not None and not hits.execute and \
                (event is None or self._rip() != hits.resumed_at):
            # The instruction RF let through has completed: RF goes, as on the CPU.
            rflags = self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
            self._regs.write_u64(x86.UC_X86_REG_RFLAGS, rflags & ~RFLAGS_RF)
        if hits.execute:
            return self._on_execute_hit(hits)
        if hits.data:
            return self._on_data_hit(hits, event, rip)
        if event is not None:
            return self._on_event(event, rip)
        self._settle_dr6()
        if self._stepping:
            # A one-instruction slice that ended without a #DB: HLT, or an instruction
            # Unicorn finished without trapping. The step is done either way.
            self._p.tf_translations_unsafe = True
            return ExceptionExit(Vector.DB, self._rip(), debug_status=DR6_BS)
        return None

    def _rip(self) -> int:
        return self._regs.read_u64(x86.UC_X86_REG_RIP)

    # -- DR6 bookkeeping ----------------------------------------------------------------
    def _hide_bs(self, dr6: int, tf_at_start: bool) -> None:
        """Before a slice that starts with TF set: DR6.BS is sticky, so hide it to see
        whether this slice's #DB set it (a trap) or not (a DR breakpoint). Not in other
        slices: the guest may read DR6 in them (its #DB handler does)."""
        self._dr6_before = dr6
        self._tf_at_start = tf_at_start
        self._bs_hidden = tf_at_start and bool(dr6 & DR6_BS)
        if self._bs_hidden:
            self._regs.write_u64(x86.UC_X86_REG_DR6, dr6 & ~DR6_BS)

    def _settle_dr6(self) -> None:
        """Nothing set DR6 for the guest in this slice: put back a BS hidden before it."""
        if self._bs_hidden and self._regs.read_u64(x86.UC_X86_REG_DR6) == \
                self._dr6_before & ~DR6_BS:
            self._regs.write_u64(x86.UC_X86_REG_DR6, self._dr6_before)
        self._bs_hidden = False

    def _restore_dr6(self) -> None:
        """Undo what Unicorn wrote to DR6 for a #DB the guest never sees (the host's
        step, a stale breakpoint)."""
        self._regs.write_u64(x86.UC_X86_REG_DR6, self._dr6_before)
        self._bs_hidden = False

    def _db_cause(self, rip: int) -> tuple[str, int]:
        """Why Unicorn raised #DB, and DR6 as it left it: "tf" (a single-step trap; Unicorn
        sets BS), "dr" (a DR7 execute breakpoint of the guest's at RIP; Unicorn sets Bn) or
        "stale" (a breakpoint Unicorn kept after the host rewrote DR7)."""
        dr6 = self._regs.read_u64(x86.UC_X86_REG_DR6)
        if self._stepping and not self._slice_dr7 & DR7_ENABLES:
            return "tf", dr6  # the host's step, and the guest has no breakpoint armed
        if self._tf_at_start and dr6 & DR6_BS:
            return "tf", dr6  # BS was clear when the slice began (hidden if need be)
        if self._guest_execute_slot_at(rip, dr6):
            return "dr", dr6
        # TF set by the guest inside the slice (POPF, IRETQ): BS may be stale, but then
        # the guest has not cleared it and sees it either way.
        return ("tf" if dr6 & DR6_BS else "stale"), dr6

    # -- hardware breakpoints -----------------------------------------------------------
    def _on_execute_hit(self, hits: Hits) -> Exit | None:
        rip = self._rip()  # the instruction, not executed (a fault-class #DB)
        if hits.host_exec:
            self._settle_dr6()
            self.breakpoints.reported_at = rip  # RF: resuming runs it once unchecked
            return ExceptionExit(Vector.DB, rip, debug_status=hits.host_exec)
        return self._deliver_guest_db(hits.guest_exec)

    def _on_data_hit(self, hits: Hits, event: _Event | None, slice_start: int) -> Exit | None:
        """A data slot was accessed; the vCPU stopped after the accessing instruction,
        unless that instruction faulted or trapped (`event`)."""
        rip = self._rip()
        trapped = event is not None and self._is_hardware_db(event) and \
            self._db_cause(rip)[0] == "tf"
        if event is not None and not trapped:
            if rip == hits.access_rip:  # the accessing instruction faulted: no trap
                return self._on_event(event, slice_start)
            self._restore_dr6()  # the next instruction's event: it recurs on resume
        elif trapped and self._stepping:
            self._restore_dr6()  # the host's step primitive leaves no trace
        elif not trapped:
            self._settle_dr6()
        # One #DB reports every condition of the instruction: BS for a TF trap with it.
        bs = DR6_BS if trapped else 0
        if hits.host_data:
            self._pending_guest_db |= hits.guest_data
            return ExceptionExit(Vector.DB, rip, debug_status=hits.host_data | bs)
        return self._deliver_guest_db(hits.guest_data | (0 if self._stepping else bs))

    def _is_hardware_db(self, event: _Event) -> bool:
        return event.kind == "intr" and event.vector == Vector.DB and \
            not self._internals.exception_is_int

    def _deliver_guest_db(self, bits: int) -> Exit | None:
        """The guest's own DR breakpoint: its #DB, with DR6.Bn, through its IDT. Always the
        guest's, whatever is intercepted: only the debugger's slots exit to the host."""
        self._pending_guest_db = 0
        self._bs_hidden = False
        dr6 = self._regs.read_u64(x86.UC_X86_REG_DR6)
        self._regs.write_u64(x86.UC_X86_REG_DR6, dr6 & ~DR6_HITS | bits)
        return self._after_delivery(Event(Vector.DB, self._rip()))

    def _on_debug_exception(self, rip: int) -> Exit | None:
        """A #DB raised by Unicorn itself: a TF trap, or a DR7 execute breakpoint the
        guest armed with MOV to DR7 (Unicorn implements those)."""
        cause, dr6 = self._db_cause(rip)
        if cause == "tf":
            if not self._stepping:
                self._p.tf_translations_unsafe = True  # TF set inside the slice (POPF)
            if self._stepping:
                self._restore_dr6()  # the host's step primitive leaves no trace
                return ExceptionExit(Vector.DB, rip, debug_status=DR6_BS)
            if Vector.DB in self._p.intercepts:
                return ExceptionExit(Vector.DB, rip, debug_status=DR6_BS)
            return self._after_delivery(Event(Vector.DB, rip))
        if cause == "dr":
            self._regs.write_u64(x86.UC_X86_REG_DR6, dr6 | self._dr6_before & DR6_BS)
            self._bs_hidden = False
            return self._after_delivery(Event(Vector.DB, rip))
        # Unicorn keeps breakpoints the guest armed even after the host rewrote DR7: pass
        # over this one (RF suppresses it for the next block) and carry on.
        self._restore_dr6()
        rflags = self._regs.read_u64(x86.UC_X86_REG_RFLAGS)
        self._regs.write_u64(x86.UC_X86_REG_RFLAGS, rflags | RFLAGS_RF)
        return None

    def _guest_execute_slot_at(self, rip: int, dr6: int) -> bool:
        dr7, *dr = self._fast.read(_GUEST_DRS)
        slots = decode_dr7(dr, dr7)
        return any(bp is not None and bp.kind == "execute" and bp.address == rip
                   and dr6 >> n & 1 for n, bp in enumerate(slots))

    def _on_event(self, event: _Event, slice_start: int) -> Exit | None:
        uc = self.uc
        rip = self._regs.read_u64(x86.UC_X86_REG_RIP)
        intercepts = self._p.intercepts
        if event.kind == "invalid":
            code = self._instruction_bytes(rip)
            if code[:1] == b"\xf1":
                exit_ = ExceptionExit(Vector.DB, rip, instruction_bytes=code)
                if Vector.DB in intercepts:
                    return exit_
                self._regs.write_u64(x86.UC_X86_REG_RIP, rip + 1)
                return self._after_delivery(Event(Vector.DB, rip + 1))
            if Vector.UD in intercepts:
                return ExceptionExit(Vector.UD, rip, instruction_bytes=code)
            return self._after_delivery(Event(Vector.UD, rip))

        vector = event.vector
        software = self._internals.exception_is_int
        if vector == Vector.DB and not software:
            return self._on_debug_exception(rip)
        self._settle_dr6()
        error_code = None
        if vector in ERROR_CODE_VECTORS and not software:
            error_code = self._internals.error_code
        if software:
            # Report INT n / INT3 at the instruction, as a hardware intercept does.
            length = 1 if self._instruction_bytes(rip - 1, 1) == b"\xcc" and vector == 3 else 2
            start = rip - length
            if vector in intercepts and not self._stepping:
                self._regs.write_u64(x86.UC_X86_REG_RIP, start)
                return ExceptionExit(vector, start, None, self._instruction_bytes(start))
            return self._after_delivery(Event(vector, rip, None, software=True))
        if vector in intercepts:
            cr2 = uc.reg_read(x86.UC_X86_REG_CR2) if vector == Vector.PF else None
            return ExceptionExit(vector, rip, error_code, self._instruction_bytes(rip), cr2)
        return self._after_delivery(Event(vector, rip, error_code))

    def _after_delivery(self, event: Event) -> Exit | None:
        exit_ = self._deliver(event)
        if exit_ is None and self._stepping:
            # The step ends where the event took the vCPU: the handler's first instruction.
            return ExceptionExit(Vector.DB, self._regs.read_u64(x86.UC_X86_REG_RIP),
                                 debug_status=DR6_BS)
        return exit_
