"""One WHPX virtual processor: registers, the run loop, cancel, interrupts and stepping.

The run loop answers port I/O and MMIO (through WinHvEmulation), MSR and CPUID exits,
HLT and interrupt windows itself, and returns only the exits the engine cares about.
The local APIC is the machine's own (emulation mode None), so external interrupts are
injected here through WHvRegisterPendingInterruption when the guest can take them, and
an interrupt-window exit is requested when it cannot.

Stepping is the seed's: RFLAGS.TF plus an interrupt shadow for one run, then TF and the
shadow taken away and PendingDebugException.SingleStep cleared so the guest never sees
the #DB. While a step runs every exception is intercepted (step.py), so an exception
the stepped instruction raises is delivered in software and the step ends at the
handler's first instruction, as the platform contract asks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from whpx_core.platform.base import Vcpu
from whpx_core.platform.exits import CanceledExit, Exit, HaltExit, InternalErrorExit
from whpx_core.platform.registers import INTERRUPT_SHADOW, RFLAGS_IF, Reg, RegValue
from whpx_core.platform.whp import registers as wr
from whpx_core.platform.whp.bindings import (
    ExitReason,
    PendingInterruptionType,
    aligned_new,
    bit,
    check,
    ffi,
    with_bit,
)
from whpx_core.platform.whp.emulator import Emulator
from whpx_core.platform.whp.exits import final_exit
from whpx_core.platform.whp.step import Step

if TYPE_CHECKING:
    from whpx_core.platform.whp.partition import WhpPartition

_PI = "WHV_X64_PENDING_INTERRUPTION_REGISTER"
_EXIT_SIZE = ffi.sizeof("WHV_RUN_VP_EXIT_CONTEXT")


class WhpVcpu(Vcpu):
    def __init__(self, partition: WhpPartition, index: int) -> None:
        self.index = index
        self.partition = partition
        self.api = partition.api
        check(self.api.WHvCreateVirtualProcessor(partition.handle, index, 0),
              "WHvCreateVirtualProcessor")
        self._exit = aligned_new("WHV_RUN_VP_EXIT_CONTEXT")
        self._context = ffi.new_handle(self)  # the emulator callbacks' Context
        self._emulator = Emulator(self.api)
        self._cond = threading.Condition()
        self._cancel = False
        self._running = False
        self._halted = False
        self._irqs: set[int] = set()
        self._pending_exception: tuple[int, int | None] | None = None
        self._step = Step(self)

    # -- registers --------------------------------------------------------------------
    def get_raw(self, numbers: list[int]) -> Any:
        values = wr.value_array(len(numbers))
        check(self.api.WHvGetVirtualProcessorRegisters(
            self.partition.handle, self.index, wr.name_array(numbers), len(numbers), values),
            "WHvGetVirtualProcessorRegisters")
        return values

    def set_raw(self, numbers: list[int], values: Any) -> None:
        check(self.api.WHvSetVirtualProcessorRegisters(
            self.partition.handle, self.index, wr.name_array(numbers), len(numbers), values),
            "WHvSetVirtualProcessorRegisters")

    def set_u64(self, items: Mapping[int, int]) -> None:
        values = wr.value_array(len(items))
        for i, value in enumerate(items.values()):
            values[i].Reg64 = value
        self.set_raw(list(items), values)

    def get_registers(self, names: Iterable[Reg]) -> list[RegValue]:
        names = list(names)
        values = self.get_raw([wr.NAMES[name] for name in names])
        return [wr.load(values[i], name) for i, name in enumerate(names)]

    def set_registers(self, values: Mapping[Reg, RegValue]) -> None:
        slots = wr.value_array(len(values))
        for i, (name, value) in enumerate(values.items()):
            wr.store(slots[i], name, value)
        self.set_raw([wr.NAMES[name] for name in values], slots)
        if Reg.RIP in values:
            self._halted = False  # moving RIP takes the vCPU out of HLT, as on KVM

    def translate_gva(self, gva: int, read_phys: object = None) -> int | None:
        result = ffi.new("WHV_TRANSLATE_GVA_RESULT *")
        gpa = ffi.new("WHV_GUEST_PHYSICAL_ADDRESS *")
        flags = 0x8  # WHvTranslateGvaFlagPrivilegeExempt: the debugger reads any page
        check(self.api.WHvTranslateGva(self.partition.handle, self.index, gva, flags, result,
                                       gpa), "WHvTranslateGva")
        return int(gpa[0]) if result.ResultCode == 0 else None

    # -- control ----------------------------------------------------------------------
    def cancel(self) -> None:
        with self._cond:
            self._cancel = True
            self._kick()

    def request_interrupt(self, vector: int) -> None:
        with self._cond:
            self._irqs.add(vector)
            self._kick()

    def _kick(self) -> None:
        """Under the lock: make a running WHvRunVirtualProcessor return, wake a HLT."""
        self._cond.notify_all()
        if self._running:
            self.api.WHvCancelRunVirtualProcessor(self.partition.handle, self.index, 0)

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        self._pending_exception = (vector, error_code)

    def set_single_step(self, enabled: bool) -> None:
        self._step.armed = enabled
        self.partition.stepping(self.index, enabled)

    # -- running ----------------------------------------------------------------------
    def run(self) -> Exit:
        while True:
            with self._cond:
                while self._halted and not self._cancel and not self._irqs:
                    self._cond.wait()
                if self._cancel:
                    self._cancel = False
                    return CanceledExit(self._rip())
            self._halted = False
            self._inject()
            exit_ = self._run_once()
            if exit_ is not None:
                return exit_

    def _run_once(self) -> Exit | None:
        step = self._step.armed
        if step:
            done = self._step.software_interrupt()
            if done is not None:
                return done
            self._step.arm()
        with self._cond:
            if self._cancel:  # arrived while preparing: no run, no kick needed
                if step:
                    self._step.disarm()
                return None
            self._running = True
        try:
            hr = self.api.WHvRunVirtualProcessor(self.partition.handle, self.index,
                                                 self._exit, _EXIT_SIZE)
        finally:
            with self._cond:
                self._running = False
        pending_db = self._step.disarm() if step else 0
        check(hr, "WHvRunVirtualProcessor")
        with self._cond:
            self._running = True  # a kick while the emulator finishes I/O still counts
        try:
            exit_ = self._dispatch()
        finally:
            with self._cond:
                self._running = False
        if step:
            return self._step.finish(exit_, pending_db)
        if isinstance(exit_, CanceledExit) and not self._cancel:
            return None  # a kick to inject an interrupt, not the caller's cancel
        return exit_

    def _dispatch(self) -> Exit | None:
        ctx = self._exit
        reason = int(ctx.ExitReason)
        if reason == ExitReason.WHvRunVpExitReasonX64IoPortAccess:
            return self._emulated(self._emulator.io(self._context, ctx))
        if reason == ExitReason.WHvRunVpExitReasonMemoryAccess:
            return self._emulated(self._emulator.mmio(self._context, ctx))
        if reason == ExitReason.WHvRunVpExitReasonX64Halt:
            return self._on_halt()
        if reason == ExitReason.WHvRunVpExitReasonX64MsrAccess:
            msr = ctx.MsrAccess
            if not bit("WHV_X64_MSR_ACCESS_INFO", "IsWrite", int(msr.AccessInfo.AsUINT32)):
                # An MSR WHPX does not implement reads as 0; writes to it are dropped.
                self.set_u64({wr.NAMES[Reg.RAX]: 0, wr.NAMES[Reg.RDX]: 0})
            self._skip_instruction()
        elif reason == ExitReason.WHvRunVpExitReasonX64Cpuid:
            cpuid = ctx.CpuidAccess  # the hypervisor's own answer, unchanged
            self.set_u64({wr.NAMES[Reg.RAX]: cpuid.DefaultResultRax,
                          wr.NAMES[Reg.RCX]: cpuid.DefaultResultRcx,
                          wr.NAMES[Reg.RDX]: cpuid.DefaultResultRdx,
                          wr.NAMES[Reg.RBX]: cpuid.DefaultResultRbx})
            self._skip_instruction()
        elif reason == ExitReason.WHvRunVpExitReasonX64InterruptWindow:
            self.set_u64({wr.DELIVERABILITY_NOTIFICATIONS: 0})
        return final_exit(ctx)

    def _emulated(self, error: str | None) -> Exit | None:
        if error is None:
            return None
        return InternalErrorExit(int(self._exit.VpContext.Rip), error)

    def _on_halt(self) -> Exit | None:
        rip, rflags = self.get_registers((Reg.RIP, Reg.RFLAGS))
        assert isinstance(rip, int) and isinstance(rflags, int)
        if not rflags & RFLAGS_IF:
            return HaltExit(rip)
        self._halted = True  # waits in run() for an interrupt, as WHPX's own APIC would
        return None

    def _skip_instruction(self) -> None:
        self.set_u64({wr.NAMES[Reg.RIP]: int(self._exit.VpContext.Rip) +
                      self.last_instruction_length()})

    def last_instruction_length(self) -> int:
        ctx = self._exit.VpContext
        return bit("WHV_VP_EXIT_CONTEXT", "InstructionLength", ctx._InstructionLengthCr8)

    def last_exception_was_software(self) -> bool:
        """The last exception exit was INT3 / INTO / INT n, not a fault."""
        info = int(self._exit.VpException.ExceptionInfo.AsUINT32)
        return bool(bit("WHV_VP_EXCEPTION_INFO", "SoftwareException", info))

    def _rip(self) -> int:
        value = self.get(Reg.RIP)
        assert isinstance(value, int)
        return value

    # -- injection --------------------------------------------------------------------
    def _inject(self) -> None:
        if self._pending_exception is not None:
            vector, error_code = self._pending_exception
            self._pending_exception = None
            self._write_pending(vector, error_code, PendingInterruptionType.WHvX64PendingException)
            return
        if not self._irqs or self._step.armed:
            return  # a step holds interrupts off (the seed's interrupt shadow)
        rflags, state = self.get_registers((Reg.RFLAGS, Reg.INTERRUPT_STATE))
        assert isinstance(rflags, int) and isinstance(state, int)
        if rflags & RFLAGS_IF and not state & INTERRUPT_SHADOW:
            with self._cond:
                vector = max(self._irqs)  # the APIC serves the highest vector first
                self._irqs.discard(vector)
            self._write_pending(vector, None, PendingInterruptionType.WHvX64PendingInterrupt)
        else:
            notify = with_bit("WHV_X64_DELIVERABILITY_NOTIFICATIONS_REGISTER",
                              "InterruptNotification", 0, 1)
            self.set_u64({wr.DELIVERABILITY_NOTIFICATIONS: notify})

    def _write_pending(self, vector: int, error_code: int | None, kind: int) -> None:
        value = with_bit(_PI, "InterruptionPending", 0, 1)
        value = with_bit(_PI, "InterruptionType", value, kind)
        value = with_bit(_PI, "InterruptionVector", value, vector)
        if error_code is not None:
            value = with_bit(_PI, "DeliverErrorCode", value, 1)
            value = with_bit(_PI, "ErrorCode", value, error_code)
        self.set_u64({wr.PENDING_INTERRUPTION: value})

    def close(self) -> None:
        self._emulator.close()
        self.api.WHvDeleteVirtualProcessor(self.partition.handle, self.index)


