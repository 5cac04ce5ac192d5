"""WHV_RUN_VP_EXIT_CONTEXT -> the platform's typed exits.

Only the reasons that end a `run()` become `Exit`s here; port I/O, MMIO, MSR, CPUID,
interrupt-window and halt exits are answered inside the vCPU's run loop (vcpu.py).
"""

from __future__ import annotations

from typing import Any

from whpx_core.platform.exits import (
    DR6_B0,
    DR6_BS,
    DR6_FIXED,
    CanceledExit,
    ExceptionExit,
    Exit,
    InternalErrorExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.whp.bindings import ExitReason, ffi
from whpx_core.platform.whp.bindings import bit as _bit

# WHV_X64_PENDING_DEBUG_EXCEPTION: Breakpoint0-3 are bits 0-3 like DR6.B0-B3, SingleStep is
# bit 4 where DR6 has BS at bit 14.
_PDE_BREAKPOINTS = 0xF
_PDE_SINGLE_STEP = 1 << 4


def debug_status(pending_debug_exception: int) -> int:
    """The DR6 image for a #DB from WHV_X64_PENDING_DEBUG_EXCEPTION bits."""
    status = pending_debug_exception & _PDE_BREAKPOINTS * DR6_B0
    if pending_debug_exception & _PDE_SINGLE_STEP:
        status |= DR6_BS
    return status | DR6_FIXED if status else 0


def instruction_bytes(context: Any) -> bytes:
    count = min(int(context.InstructionByteCount), 16)
    return bytes(ffi.buffer(context.InstructionBytes, 16))[:count]


def exception_exit(exit_ctx: Any) -> ExceptionExit:
    """An intercepted exception. WHv puts the #PF address and the #DB cause (DR6 bits)
    in ExceptionParameter."""
    ex = exit_ctx.VpException
    vector = int(ex.ExceptionType)
    info = int(ex.ExceptionInfo.AsUINT32)
    error_code = int(ex.ErrorCode) if _bit("WHV_VP_EXCEPTION_INFO", "ErrorCodeValid", info) \
        else None
    parameter = int(ex.ExceptionParameter)
    return ExceptionExit(
        vector=vector,
        rip=int(exit_ctx.VpContext.Rip),
        error_code=error_code,
        instruction_bytes=instruction_bytes(ex),
        cr2=parameter if vector == Vector.PF else None,
        debug_status=parameter | DR6_FIXED if vector == Vector.DB and parameter else 0,
    )


def final_exit(exit_ctx: Any) -> Exit | None:
    """The `Exit` for reasons that end `run()`; None for those the run loop handles."""
    reason = int(exit_ctx.ExitReason)
    rip = int(exit_ctx.VpContext.Rip)
    if reason == ExitReason.WHvRunVpExitReasonException:
        return exception_exit(exit_ctx)
    if reason == ExitReason.WHvRunVpExitReasonCanceled:
        return CanceledExit(rip)
    if reason == ExitReason.WHvRunVpExitReasonUnrecoverableException:
        return ShutdownExit(rip, "unrecoverable exception (triple fault)")
    if reason == ExitReason.WHvRunVpExitReasonInvalidVpRegisterValue:
        return InternalErrorExit(rip, "WHPX refused a register value of this vCPU")
    if reason == ExitReason.WHvRunVpExitReasonUnsupportedFeature:
        feature = exit_ctx.UnsupportedFeature
        return InternalErrorExit(rip, f"WHPX: unsupported feature {int(feature.FeatureCode)} "
                                      f"(parameter {int(feature.FeatureParameter):#x})")
    if reason in _HANDLED:
        return None
    return InternalErrorExit(rip, f"WHPX: unexpected exit reason {reason:#x}")


_HANDLED = frozenset({
    ExitReason.WHvRunVpExitReasonNone,
    ExitReason.WHvRunVpExitReasonMemoryAccess,
    ExitReason.WHvRunVpExitReasonX64IoPortAccess,
    ExitReason.WHvRunVpExitReasonX64InterruptWindow,
    ExitReason.WHvRunVpExitReasonX64Halt,
    ExitReason.WHvRunVpExitReasonX64MsrAccess,
    ExitReason.WHvRunVpExitReasonX64Cpuid,
})
