"""The seed's single step on WHPX, and what the platform contract adds to it.

Arm: RFLAGS.TF on (remembering whether the guest had it), an interrupt shadow so no
external interrupt is taken before the instruction. Disarm: TF back to the guest's,
shadow off, and PendingDebugException.SingleStep cleared, else WHPX delivers the step's
#DB to the guest on the next run (the seed's fix).

During the step every exception WHPX can intercept exits (partition.py widens the
bitmap), because the CPU enters a handler with TF clear and would run it untraced. An
exception the debugger did not ask for is delivered here in software, through the
guest's IDT, and the step ends at the handler's first instruction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whpx_core.platform.delivery import CpuView, Event, TripleFault, deliver
from whpx_core.platform.exits import (
    DR6_BS,
    DR6_FIXED,
    ExceptionExit,
    Exit,
    HaltExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.registers import RFLAGS_TF, Reg
from whpx_core.platform.whp import registers as wr
from whpx_core.platform.whp.bindings import bit, with_bit
from whpx_core.platform.whp.exits import debug_status

if TYPE_CHECKING:
    from whpx_core.platform.whp.vcpu import WhpVcpu

_PDE = "WHV_X64_PENDING_DEBUG_EXCEPTION"
RFLAGS_OF = 1 << 11
_TRAPS = frozenset({Vector.BP, Vector.OF})  # software exceptions that return after INTn


class Step:
    def __init__(self, vcpu: WhpVcpu) -> None:
        self._vcpu = vcpu
        self.armed = False
        self._guest_tf = False

    def software_interrupt(self) -> Exit | None:
        """Step an INT n / INT3 / INTO / INT1 in software: WHPX cannot intercept vectors
        32-255, and the CPU enters any handler with TF clear, so run in the guest it
        would end the step only after the handler returns. Delivered here, the step
        ends at the handler's first instruction. None when the instruction is another."""
        vcpu = self._vcpu
        rip, rflags = vcpu.get_int(Reg.RIP), vcpu.get_int(Reg.RFLAGS)
        code = self._code(rip)
        if code[:1] == b"\xcd" and len(code) == 2:
            event = Event(code[1], rip + 2, software=True)
        elif code[:1] == b"\xcc":
            event = Event(Vector.BP, rip + 1, software=True)
        elif code[:1] == b"\xce" and rflags & RFLAGS_OF:
            event = Event(Vector.OF, rip + 1, software=True)
        elif code[:1] == b"\xf1":
            event = Event(Vector.DB, rip + 1)  # INT1: no gate DPL check
        else:
            return None
        return self._deliver_event(event, rip)

    def _code(self, rip: int) -> bytes:
        out = b""
        for va in (rip, rip + 1):
            gpa = self._vcpu.translate_gva(va)
            if gpa is None:
                break
            out += self._vcpu.partition.read_memory(gpa, 1)
        return out

    def arm(self) -> None:
        vcpu = self._vcpu
        rflags = vcpu.get_int(Reg.RFLAGS)
        self._guest_tf = bool(rflags & RFLAGS_TF)
        vcpu.set_u64({wr.NAMES[Reg.RFLAGS]: rflags | RFLAGS_TF,
                      wr.NAMES[Reg.INTERRUPT_STATE]: 1})

    def disarm(self) -> int:
        """Undo `arm`; returns the PendingDebugException bits WHPX had left."""
        vcpu = self._vcpu
        values = vcpu.get_raw([wr.NAMES[Reg.RFLAGS], wr.PENDING_DEBUG_EXCEPTION])
        rflags, pending = int(values[0].Reg64), int(values[1].Reg64)
        if not self._guest_tf:
            rflags &= ~RFLAGS_TF
        vcpu.set_u64({wr.NAMES[Reg.RFLAGS]: rflags, wr.NAMES[Reg.INTERRUPT_STATE]: 0,
                      wr.PENDING_DEBUG_EXCEPTION: with_bit(_PDE, "SingleStep", pending, 0)})
        return pending

    def finish(self, exit_: Exit | None, pending: int) -> Exit | None:
        """What one stepped run means: a step exit, or the exit as it is."""
        vcpu = self._vcpu
        if exit_ is None or isinstance(exit_, HaltExit):
            # The instruction was finished outside the guest (port I/O, MMIO, MSR or
            # CPUID answered by the run loop; HLT): no TF trap follows, the step is done.
            return self._stepped()
        if not isinstance(exit_, ExceptionExit):
            return exit_
        if exit_.vector == Vector.DB and not exit_.is_icebp:
            status = exit_.debug_status | debug_status(pending)
            if status & DR6_BS or bit(_PDE, "SingleStep", pending):
                return ExceptionExit(Vector.DB, exit_.rip, debug_status=status | DR6_FIXED)
        if exit_.vector in vcpu.partition.intercepts:
            return exit_  # the debugger's own exception stop
        return self._deliver(exit_)

    def _stepped(self) -> ExceptionExit:
        return ExceptionExit(Vector.DB, self._vcpu.get_int(Reg.RIP),
                             debug_status=DR6_FIXED | DR6_BS)

    def _deliver(self, exit_: ExceptionExit) -> Exit:
        vcpu = self._vcpu
        software = exit_.is_icebp or vcpu.last_exception_was_software()
        return_rip = exit_.rip
        if exit_.is_icebp:
            return_rip += 1
        elif software and exit_.vector in _TRAPS:
            return_rip += vcpu.last_instruction_length()
        if exit_.cr2 is not None:
            vcpu.set_u64({wr.NAMES[Reg.CR2]: exit_.cr2})
        return self._deliver_event(Event(exit_.vector, return_rip, exit_.error_code,
                                         software=software and not exit_.is_icebp), exit_.rip)

    def _deliver_event(self, event: Event, rip: int) -> Exit:
        vcpu = self._vcpu
        partition = vcpu.partition
        view = CpuView(vcpu.get_registers, vcpu.set_registers, partition.read_memory,
                       partition.write_memory)
        try:
            deliver(view, event)
        except TripleFault:
            return ShutdownExit(rip, f"triple fault delivering vector {event.vector}")
        return self._stepped()
