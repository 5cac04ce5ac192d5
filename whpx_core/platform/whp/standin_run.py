"""The stand-in's WHvRunVirtualProcessor and WHvEmulatorTry*Emulation bodies."""

from __future__ import annotations

from typing import Any

from whpx_core.platform.exits import CanceledExit, ExceptionExit, Exit, Vector
from whpx_core.platform.registers import INTERRUPT_SHADOW, RFLAGS_IF, RFLAGS_TF, Reg
from whpx_core.platform.whp.bindings import ExitReason, Hr, failed, ffi
from whpx_core.platform.whp.standin_values import encode_exit
from whpx_core.platform.whp.standin_vp import Access, StandinVp

_SINGLE_STEP = 1 << 4  # WHV_X64_PENDING_DEBUG_EXCEPTION.SingleStep
_SUCCESS = 1  # WHV_EMULATOR_STATUS.EmulationSuccessful
_PORT_CALLBACK_FAILED = 1 << 2
_MEMORY_CALLBACK_FAILED = 1 << 3


def run(vp: StandinVp, ctx: Any, faults: frozenset[str]) -> None:
    """Run one virtual processor until its next exit, written into `ctx`."""
    if vp.cancel_requested:
        vp.cancel_requested = False
        _finish(vp, ctx, CanceledExit(_rip(vp)), faults)
        return
    if vp.pending_debug & _SINGLE_STEP:
        # WHPX delivers a pending single-step #DB to the guest: the seed clears the bit.
        vp.pending_debug &= ~_SINGLE_STEP
        vp.vcpu.inject_exception(Vector.DB)
    window = vp.window_wanted
    if window and _window_open(vp):
        _window_exit(vp, ctx)
        return
    state, rflags, dr6 = vp.vcpu.get_registers((Reg.INTERRUPT_STATE, Reg.RFLAGS, Reg.DR6))
    # The seed's step (TF and an interrupt shadow set by the host): hardware traps after
    # one instruction with DR6 as the guest left it. Unicorn's raw TF path hides DR6.BS
    # during the instruction, its step primitive does not: use that one.
    host_step = bool(int(state) & INTERRUPT_SHADOW and int(rflags) & RFLAGS_TF)
    vp.running = True
    if window or host_step:
        vp.vcpu.set_single_step(True)  # one instruction at a time
    try:
        while True:
            kind, item = vp.resume()
            if kind == "access":
                vp.access = item
                _access_exit(ctx, item)
                return
            if window and isinstance(item, ExceptionExit) and item.is_single_step:
                if _window_open(vp):
                    _window_exit(vp, ctx)
                    return
                continue
            break
    finally:
        vp.running = False
        if window or host_step:
            vp.when_idle(lambda: vp.vcpu.set_single_step(False))
    if isinstance(item, CanceledExit):
        vp.cancel_requested = False
    elif host_step and isinstance(item, ExceptionExit) and item.is_single_step:
        # An intercepted #DB: the trap stays pending and the guest's DR6 untouched, as
        # on WHPX (Unicorn wrote DR6 when it raised the trap).
        vp.pending_debug |= _SINGLE_STEP
        vp.vcpu.set_registers({Reg.DR6: dr6})
    _finish(vp, ctx, item, faults)


def _finish(vp: StandinVp, ctx: Any, exit_: Exit, faults: frozenset[str]) -> None:
    rflags = vp.vcpu.get_int(Reg.RFLAGS)
    encode_exit(ctx, exit_, rflags)
    if "exception-rip" in faults and ctx.ExitReason == ExitReason.WHvRunVpExitReasonException:
        ctx.VpContext.Rip += 1  # the faulting instruction reported one byte off


def _rip(vp: StandinVp) -> int:
    return vp.vcpu.get_int(Reg.RIP)


def _window_open(vp: StandinVp) -> bool:
    rflags, state = vp.vcpu.get_registers((Reg.RFLAGS, Reg.INTERRUPT_STATE))
    return bool(int(rflags) & RFLAGS_IF) and not int(state) & INTERRUPT_SHADOW


def _window_exit(vp: StandinVp, ctx: Any) -> None:
    vp.window_wanted = False
    ctx.ExitReason = ExitReason.WHvRunVpExitReasonX64InterruptWindow
    ctx.VpContext.Rip = _rip(vp)


def _access_exit(ctx: Any, access: Access) -> None:
    if access.kind == "port":
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonX64IoPortAccess
        io = ctx.IoPortAccess
        io.PortNumber = access.address
        io.AccessInfo.AsUINT32 = int(access.write) | access.size << 1
        io.Rax = access.value
    else:
        ctx.ExitReason = ExitReason.WHvRunVpExitReasonMemoryAccess
        mem = ctx.MemoryAccess
        mem.Gpa = access.address
        mem.AccessInfo.AsUINT32 = int(access.write)  # AccessType: 0 read, 1 write


def emulate(callbacks: Any, vp: StandinVp, context: Any, status: Any) -> int:
    """WinHvEmulation's part: the access goes to the VMM through its callbacks, then the
    instruction completes with the value they gave."""
    access = vp.access
    assert access is not None
    if access.kind == "port":
        info = ffi.new("WHV_EMULATOR_IO_ACCESS_INFO *")
        info.Direction, info.Port, info.AccessSize = access.write, access.address, access.size
        info.Data = access.value
        hr = callbacks.WHvEmulatorIoPortCallback(context, info)
        value, failure = int(info.Data), _PORT_CALLBACK_FAILED
    else:
        info = ffi.new("WHV_EMULATOR_MEMORY_ACCESS_INFO *")
        info.GpaAddress, info.Direction = access.address, access.write
        info.AccessSize = access.size
        ffi.memmove(info.Data, access.value.to_bytes(8, "little"), 8)
        hr = callbacks.WHvEmulatorMemoryCallback(context, info)
        value = int.from_bytes(bytes(ffi.buffer(info.Data, 8))[:access.size], "little")
        failure = _MEMORY_CALLBACK_FAILED
    status.AsUINT32 = failure if failed(hr) else _SUCCESS
    vp.answer(0 if failed(hr) else value)
    return Hr.S_OK
