"""cffi ABI-mode declarations of the WinHvPlatform / WinHvEmulation API this backend uses.

Everything is declared by hand from the Windows SDK's `winhvplatformdefs.h`,
`winhvplatform.h` and `winhvemulation.h`, with the SDK's own type and field names, and
`tests/platform/test_whp_layout.py` compiles `_Static_assert`s generated from what cffi
computed (sizes, offsets, alignments, constants, bit positions, function signatures)
against those headers with mingw-w64, so a drifted declaration fails CI on Linux.

Unions keep only the members this backend reads or writes, plus a `_size` byte array
that gives them the header's size. Bitfields are not declared: cffi cannot be checked
against them (offsetof does not apply), so the code uses the `AsUINT*` member with the
bit positions in `BITS`, which the layout test checks instead.

cffi cannot express `DECLSPEC_ALIGN(16)`: the types in `ALIGN16` are allocated through
`aligned_new`, which places them on a 16-byte boundary as the hypervisor expects.
"""

from __future__ import annotations

import enum
import re
import sys
import weakref
from typing import Any

import cffi

from whpx_core.platform.base import PlatformError

CDEF_TYPES = """
typedef int32_t HRESULT;
typedef int32_t WINBOOL;
typedef uint8_t UINT8;
typedef uint16_t UINT16;
typedef uint32_t UINT32;
typedef uint64_t UINT64;
typedef void VOID;
typedef void *WHV_PARTITION_HANDLE;
typedef void *WHV_EMULATOR_HANDLE;
typedef uint64_t WHV_GUEST_PHYSICAL_ADDRESS;
typedef uint64_t WHV_GUEST_VIRTUAL_ADDRESS;
/* C enums in the SDK: 4 bytes, values in the Python enums below. */
typedef uint32_t WHV_CAPABILITY_CODE;
typedef uint32_t WHV_PARTITION_PROPERTY_CODE;
typedef uint32_t WHV_MAP_GPA_RANGE_FLAGS;
typedef uint32_t WHV_TRANSLATE_GVA_FLAGS;
typedef uint32_t WHV_TRANSLATE_GVA_RESULT_CODE;
typedef uint32_t WHV_REGISTER_NAME;
typedef uint32_t WHV_RUN_VP_EXIT_REASON;
typedef uint32_t WHV_X64_LOCAL_APIC_EMULATION_MODE;

typedef union WHV_EXTENDED_VM_EXITS {
    UINT64 AsUINT64;
} WHV_EXTENDED_VM_EXITS;

typedef union WHV_CAPABILITY {
    WINBOOL HypervisorPresent;
    UINT64 ExtendedVmExits;
    UINT64 ExceptionExitBitmap;
    UINT8 _size[24];
} WHV_CAPABILITY;

typedef union WHV_PARTITION_PROPERTY {
    UINT64 ExtendedVmExits;
    UINT32 ProcessorCount;
    UINT64 ExceptionExitBitmap;
    WHV_X64_LOCAL_APIC_EMULATION_MODE LocalApicEmulationMode;
    UINT8 _size[48];
} WHV_PARTITION_PROPERTY;

typedef struct WHV_TRANSLATE_GVA_RESULT {
    WHV_TRANSLATE_GVA_RESULT_CODE ResultCode;
    UINT32 Reserved;
} WHV_TRANSLATE_GVA_RESULT;

typedef union WHV_UINT128 {
    struct { UINT64 Low64; UINT64 High64; };
    UINT32 Dword[4];
} WHV_UINT128;

typedef struct WHV_X64_SEGMENT_REGISTER {
    UINT64 Base;
    UINT32 Limit;
    UINT16 Selector;
    UINT16 Attributes;
} WHV_X64_SEGMENT_REGISTER;

typedef struct WHV_X64_TABLE_REGISTER {
    UINT16 Pad[3];
    UINT16 Limit;
    UINT64 Base;
} WHV_X64_TABLE_REGISTER;

typedef union WHV_X64_INTERRUPT_STATE_REGISTER {
    UINT64 AsUINT64;
} WHV_X64_INTERRUPT_STATE_REGISTER;

typedef union WHV_X64_PENDING_INTERRUPTION_REGISTER {
    UINT64 AsUINT64;
} WHV_X64_PENDING_INTERRUPTION_REGISTER;

typedef union WHV_X64_DELIVERABILITY_NOTIFICATIONS_REGISTER {
    UINT64 AsUINT64;
} WHV_X64_DELIVERABILITY_NOTIFICATIONS_REGISTER;

typedef union WHV_X64_PENDING_DEBUG_EXCEPTION {
    UINT64 AsUINT64;
} WHV_X64_PENDING_DEBUG_EXCEPTION;

typedef union WHV_X64_PENDING_EXCEPTION_EVENT {
    struct { UINT32 _Header; UINT32 ErrorCode; UINT64 ExceptionParameter; };
    WHV_UINT128 AsUINT128;
} WHV_X64_PENDING_EXCEPTION_EVENT;

typedef union WHV_REGISTER_VALUE {
    WHV_UINT128 Reg128;
    UINT64 Reg64;
    UINT32 Reg32;
    UINT16 Reg16;
    UINT8 Reg8;
    WHV_X64_SEGMENT_REGISTER Segment;
    WHV_X64_TABLE_REGISTER Table;
    WHV_X64_INTERRUPT_STATE_REGISTER InterruptState;
    WHV_X64_PENDING_INTERRUPTION_REGISTER PendingInterruption;
    WHV_X64_DELIVERABILITY_NOTIFICATIONS_REGISTER DeliverabilityNotifications;
    WHV_X64_PENDING_EXCEPTION_EVENT ExceptionEvent;
    WHV_X64_PENDING_DEBUG_EXCEPTION PendingDebugException;
} WHV_REGISTER_VALUE;

typedef union WHV_X64_VP_EXECUTION_STATE {
    UINT16 AsUINT16;
} WHV_X64_VP_EXECUTION_STATE;

typedef struct WHV_VP_EXIT_CONTEXT {
    WHV_X64_VP_EXECUTION_STATE ExecutionState;
    UINT8 _InstructionLengthCr8;
    UINT8 Reserved;
    UINT32 Reserved2;
    WHV_X64_SEGMENT_REGISTER Cs;
    UINT64 Rip;
    UINT64 Rflags;
} WHV_VP_EXIT_CONTEXT;

typedef union WHV_MEMORY_ACCESS_INFO {
    UINT32 AsUINT32;
} WHV_MEMORY_ACCESS_INFO;

typedef struct WHV_MEMORY_ACCESS_CONTEXT {
    UINT8 InstructionByteCount;
    UINT8 Reserved[3];
    UINT8 InstructionBytes[16];
    WHV_MEMORY_ACCESS_INFO AccessInfo;
    WHV_GUEST_PHYSICAL_ADDRESS Gpa;
    WHV_GUEST_VIRTUAL_ADDRESS Gva;
} WHV_MEMORY_ACCESS_CONTEXT;

typedef union WHV_X64_IO_PORT_ACCESS_INFO {
    UINT32 AsUINT32;
} WHV_X64_IO_PORT_ACCESS_INFO;

typedef struct WHV_X64_IO_PORT_ACCESS_CONTEXT {
    UINT8 InstructionByteCount;
    UINT8 Reserved[3];
    UINT8 InstructionBytes[16];
    WHV_X64_IO_PORT_ACCESS_INFO AccessInfo;
    UINT16 PortNumber;
    UINT16 Reserved2[3];
    UINT64 Rax;
    UINT64 Rcx;
    UINT64 Rsi;
    UINT64 Rdi;
    WHV_X64_SEGMENT_REGISTER Ds;
    WHV_X64_SEGMENT_REGISTER Es;
} WHV_X64_IO_PORT_ACCESS_CONTEXT;

typedef union WHV_X64_MSR_ACCESS_INFO {
    UINT32 AsUINT32;
} WHV_X64_MSR_ACCESS_INFO;

typedef struct WHV_X64_MSR_ACCESS_CONTEXT {
    WHV_X64_MSR_ACCESS_INFO AccessInfo;
    UINT32 MsrNumber;
    UINT64 Rax;
    UINT64 Rdx;
} WHV_X64_MSR_ACCESS_CONTEXT;

typedef struct WHV_X64_CPUID_ACCESS_CONTEXT {
    UINT64 Rax;
    UINT64 Rcx;
    UINT64 Rdx;
    UINT64 Rbx;
    UINT64 DefaultResultRax;
    UINT64 DefaultResultRcx;
    UINT64 DefaultResultRdx;
    UINT64 DefaultResultRbx;
} WHV_X64_CPUID_ACCESS_CONTEXT;

typedef union WHV_VP_EXCEPTION_INFO {
    UINT32 AsUINT32;
} WHV_VP_EXCEPTION_INFO;

typedef struct WHV_VP_EXCEPTION_CONTEXT {
    UINT8 InstructionByteCount;
    UINT8 Reserved[3];
    UINT8 InstructionBytes[16];
    WHV_VP_EXCEPTION_INFO ExceptionInfo;
    UINT8 ExceptionType;
    UINT8 Reserved2[3];
    UINT32 ErrorCode;
    UINT64 ExceptionParameter;
} WHV_VP_EXCEPTION_CONTEXT;

typedef struct WHV_X64_UNSUPPORTED_FEATURE_CONTEXT {
    UINT32 FeatureCode;
    UINT32 Reserved;
    UINT64 FeatureParameter;
} WHV_X64_UNSUPPORTED_FEATURE_CONTEXT;

typedef struct WHV_RUN_VP_EXIT_CONTEXT {
    WHV_RUN_VP_EXIT_REASON ExitReason;
    UINT32 Reserved;
    WHV_VP_EXIT_CONTEXT VpContext;
    union {
        WHV_MEMORY_ACCESS_CONTEXT MemoryAccess;
        WHV_X64_IO_PORT_ACCESS_CONTEXT IoPortAccess;
        WHV_X64_MSR_ACCESS_CONTEXT MsrAccess;
        WHV_X64_CPUID_ACCESS_CONTEXT CpuidAccess;
        WHV_VP_EXCEPTION_CONTEXT VpException;
        WHV_X64_UNSUPPORTED_FEATURE_CONTEXT UnsupportedFeature;
        UINT8 _size[176];
    };
} WHV_RUN_VP_EXIT_CONTEXT;

typedef union WHV_EMULATOR_STATUS {
    UINT32 AsUINT32;
} WHV_EMULATOR_STATUS;

typedef struct WHV_EMULATOR_MEMORY_ACCESS_INFO {
    WHV_GUEST_PHYSICAL_ADDRESS GpaAddress;
    UINT8 Direction;
    UINT8 AccessSize;
    UINT8 Data[8];
} WHV_EMULATOR_MEMORY_ACCESS_INFO;

typedef struct WHV_EMULATOR_IO_ACCESS_INFO {
    UINT8 Direction;
    UINT16 Port;
    UINT16 AccessSize;
    UINT32 Data;
} WHV_EMULATOR_IO_ACCESS_INFO;
"""

# The emulator's callback types and the functions, written as in the SDK headers (less
# WINAPI / CALLBACK, which are no-ops on x64): the layout test compiles each one as a
# function-pointer initialiser against the real prototype.
CALLBACK_TYPES = {
    "WHV_EMULATOR_IO_PORT_CALLBACK":
        "HRESULT (*)(VOID *Context, WHV_EMULATOR_IO_ACCESS_INFO *IoAccess)",
    "WHV_EMULATOR_MEMORY_CALLBACK":
        "HRESULT (*)(VOID *Context, WHV_EMULATOR_MEMORY_ACCESS_INFO *MemoryAccess)",
    "WHV_EMULATOR_GET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK":
        "HRESULT (*)(VOID *Context, const WHV_REGISTER_NAME *RegisterNames, "
        "UINT32 RegisterCount, WHV_REGISTER_VALUE *RegisterValues)",
    "WHV_EMULATOR_SET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK":
        "HRESULT (*)(VOID *Context, const WHV_REGISTER_NAME *RegisterNames, "
        "UINT32 RegisterCount, const WHV_REGISTER_VALUE *RegisterValues)",
    "WHV_EMULATOR_TRANSLATE_GVA_PAGE_CALLBACK":
        "HRESULT (*)(VOID *Context, WHV_GUEST_VIRTUAL_ADDRESS Gva, "
        "WHV_TRANSLATE_GVA_FLAGS TranslateFlags, "
        "WHV_TRANSLATE_GVA_RESULT_CODE *TranslationResult, WHV_GUEST_PHYSICAL_ADDRESS *Gpa)",
}

CDEF_CALLBACKS = "".join(
    f"typedef {sig.replace('(*)', f'(*{name})', 1)};\n" for name, sig in CALLBACK_TYPES.items()
) + """
typedef struct WHV_EMULATOR_CALLBACKS {
    UINT32 Size;
    UINT32 Reserved;
    WHV_EMULATOR_IO_PORT_CALLBACK WHvEmulatorIoPortCallback;
    WHV_EMULATOR_MEMORY_CALLBACK WHvEmulatorMemoryCallback;
    WHV_EMULATOR_GET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK WHvEmulatorGetVirtualProcessorRegisters;
    WHV_EMULATOR_SET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK WHvEmulatorSetVirtualProcessorRegisters;
    WHV_EMULATOR_TRANSLATE_GVA_PAGE_CALLBACK WHvEmulatorTranslateGvaPage;
} WHV_EMULATOR_CALLBACKS;
"""

PLATFORM_FUNCTIONS = """
HRESULT WHvGetCapability(WHV_CAPABILITY_CODE CapabilityCode, VOID *CapabilityBuffer, UINT32 CapabilityBufferSizeInBytes, UINT32 *WrittenSizeInBytes);
HRESULT WHvCreatePartition(WHV_PARTITION_HANDLE *Partition);
HRESULT WHvSetupPartition(WHV_PARTITION_HANDLE Partition);
HRESULT WHvDeletePartition(WHV_PARTITION_HANDLE Partition);
HRESULT WHvGetPartitionProperty(WHV_PARTITION_HANDLE Partition, WHV_PARTITION_PROPERTY_CODE PropertyCode, VOID *PropertyBuffer, UINT32 PropertyBufferSizeInBytes, UINT32 *WrittenSizeInBytes);
HRESULT WHvSetPartitionProperty(WHV_PARTITION_HANDLE Partition, WHV_PARTITION_PROPERTY_CODE PropertyCode, const VOID *PropertyBuffer, UINT32 PropertyBufferSizeInBytes);
HRESULT WHvMapGpaRange(WHV_PARTITION_HANDLE Partition, VOID *SourceAddress, WHV_GUEST_PHYSICAL_ADDRESS GuestAddress, UINT64 SizeInBytes, WHV_MAP_GPA_RANGE_FLAGS Flags);
HRESULT WHvUnmapGpaRange(WHV_PARTITION_HANDLE Partition, WHV_GUEST_PHYSICAL_ADDRESS GuestAddress, UINT64 SizeInBytes);
HRESULT WHvTranslateGva(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, WHV_GUEST_VIRTUAL_ADDRESS Gva, WHV_TRANSLATE_GVA_FLAGS TranslateFlags, WHV_TRANSLATE_GVA_RESULT *TranslationResult, WHV_GUEST_PHYSICAL_ADDRESS *Gpa);
HRESULT WHvCreateVirtualProcessor(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, UINT32 Flags);
HRESULT WHvDeleteVirtualProcessor(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex);
HRESULT WHvRunVirtualProcessor(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, VOID *ExitContext, UINT32 ExitContextSizeInBytes);
HRESULT WHvCancelRunVirtualProcessor(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, UINT32 Flags);
HRESULT WHvGetVirtualProcessorRegisters(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, const WHV_REGISTER_NAME *RegisterNames, UINT32 RegisterCount, WHV_REGISTER_VALUE *RegisterValues);
HRESULT WHvSetVirtualProcessorRegisters(WHV_PARTITION_HANDLE Partition, UINT32 VpIndex, const WHV_REGISTER_NAME *RegisterNames, UINT32 RegisterCount, const WHV_REGISTER_VALUE *RegisterValues);
"""  # noqa: E501 (the SDK's prototypes, verbatim)

EMULATION_FUNCTIONS = """
HRESULT WHvEmulatorCreateEmulator(const WHV_EMULATOR_CALLBACKS *Callbacks, WHV_EMULATOR_HANDLE *Emulator);
HRESULT WHvEmulatorDestroyEmulator(WHV_EMULATOR_HANDLE Emulator);
HRESULT WHvEmulatorTryIoEmulation(WHV_EMULATOR_HANDLE Emulator, VOID *Context, const WHV_VP_EXIT_CONTEXT *VpContext, const WHV_X64_IO_PORT_ACCESS_CONTEXT *IoInstructionContext, WHV_EMULATOR_STATUS *EmulatorReturnStatus);
HRESULT WHvEmulatorTryMmioEmulation(WHV_EMULATOR_HANDLE Emulator, VOID *Context, const WHV_VP_EXIT_CONTEXT *VpContext, const WHV_MEMORY_ACCESS_CONTEXT *MmioInstructionContext, WHV_EMULATOR_STATUS *EmulatorReturnStatus);
"""  # noqa: E501

_PROTOTYPE = re.compile(r"^(HRESULT)\s+(\w+)\((.*)\);$")


def _prototypes(text: str) -> dict[str, str]:
    """name -> function type ("HRESULT (WHV_PARTITION_HANDLE *Partition)")."""
    out = {}
    for line in text.strip().splitlines():
        match = _PROTOTYPE.match(line)
        assert match, line
        out[match[2]] = f"{match[1]} ({match[3]})"
    return out


FUNCTIONS: dict[str, str] = _prototypes(PLATFORM_FUNCTIONS) | _prototypes(EMULATION_FUNCTIONS)
PLATFORM_DLL_FUNCTIONS = tuple(_prototypes(PLATFORM_FUNCTIONS))
EMULATION_DLL_FUNCTIONS = tuple(_prototypes(EMULATION_FUNCTIONS))

# Types the layout test checks (every struct and union declared above, and the scalar
# typedefs standing in for the SDK's enums).
STRUCTS = tuple(re.findall(r"^} (\w+);$", CDEF_TYPES + CDEF_CALLBACKS, re.M))
SCALARS = (*re.findall(r"^typedef uint32_t (WHV_\w+);$", CDEF_TYPES, re.M),
           "HRESULT", "WINBOOL", "WHV_PARTITION_HANDLE", "WHV_GUEST_PHYSICAL_ADDRESS")
# Aligned to 16 bytes in the SDK (DECLSPEC_ALIGN(16) on WHV_UINT128); cffi aligns them to 8.
ALIGN16 = frozenset({"WHV_UINT128", "WHV_X64_PENDING_EXCEPTION_EVENT", "WHV_REGISTER_VALUE",
                     "WHV_RUN_VP_EXIT_CONTEXT"})

ffi = cffi.FFI()
ffi.cdef(CDEF_TYPES + CDEF_CALLBACKS)
ffi.cdef("".join(f"{t.replace(' (', f' {n}(', 1)};\n" for n, t in FUNCTIONS.items()))


class Hr(enum.IntEnum):
    """HRESULTs this backend produces or tests for (winerror.h)."""

    S_OK = 0
    E_FAIL = -2147467259  # 0x80004005
    E_INVALIDARG = -2147024809  # 0x80070057
    WHV_E_INSUFFICIENT_BUFFER = -1070596095  # 0xC0350001


class CapabilityCode(enum.IntEnum):
    WHvCapabilityCodeHypervisorPresent = 0x0
    WHvCapabilityCodeFeatures = 0x1
    WHvCapabilityCodeExtendedVmExits = 0x2
    WHvCapabilityCodeExceptionExitBitmap = 0x3


class PropertyCode(enum.IntEnum):
    WHvPartitionPropertyCodeExtendedVmExits = 0x1
    WHvPartitionPropertyCodeExceptionExitBitmap = 0x2
    WHvPartitionPropertyCodeLocalApicEmulationMode = 0x1005
    WHvPartitionPropertyCodeProcessorCount = 0x1FFF


class ExitReason(enum.IntEnum):
    WHvRunVpExitReasonNone = 0x0
    WHvRunVpExitReasonMemoryAccess = 0x1
    WHvRunVpExitReasonX64IoPortAccess = 0x2
    WHvRunVpExitReasonUnrecoverableException = 0x4
    WHvRunVpExitReasonInvalidVpRegisterValue = 0x5
    WHvRunVpExitReasonUnsupportedFeature = 0x6
    WHvRunVpExitReasonX64InterruptWindow = 0x7
    WHvRunVpExitReasonX64Halt = 0x8
    WHvRunVpExitReasonX64MsrAccess = 0x1000
    WHvRunVpExitReasonX64Cpuid = 0x1001
    WHvRunVpExitReasonException = 0x1002
    WHvRunVpExitReasonCanceled = 0x2001


class MapFlags(enum.IntFlag):
    WHvMapGpaRangeFlagRead = 0x1
    WHvMapGpaRangeFlagWrite = 0x2
    WHvMapGpaRangeFlagExecute = 0x4


class TranslateResult(enum.IntEnum):
    WHvTranslateGvaResultSuccess = 0
    WHvTranslateGvaResultPageNotPresent = 1
    WHvTranslateGvaResultGpaUnmapped = 4


class TranslateFlags(enum.IntFlag):
    WHvTranslateGvaFlagNone = 0x0
    WHvTranslateGvaFlagValidateRead = 0x1
    WHvTranslateGvaFlagPrivilegeExempt = 0x8


class ExceptionType(enum.IntEnum):
    """The vectors the exception exit bitmap accepts (WHV_EXCEPTION_TYPE)."""

    WHvX64ExceptionTypeDivideErrorFault = 0x0
    WHvX64ExceptionTypeDebugTrapOrFault = 0x1
    WHvX64ExceptionTypeBreakpointTrap = 0x3
    WHvX64ExceptionTypeOverflowTrap = 0x4
    WHvX64ExceptionTypeBoundRangeFault = 0x5
    WHvX64ExceptionTypeInvalidOpcodeFault = 0x6
    WHvX64ExceptionTypeDeviceNotAvailableFault = 0x7
    WHvX64ExceptionTypeDoubleFaultAbort = 0x8
    WHvX64ExceptionTypeInvalidTaskStateSegmentFault = 0x0A
    WHvX64ExceptionTypeSegmentNotPresentFault = 0x0B
    WHvX64ExceptionTypeStackFault = 0x0C
    WHvX64ExceptionTypeGeneralProtectionFault = 0x0D
    WHvX64ExceptionTypePageFault = 0x0E
    WHvX64ExceptionTypeFloatingPointErrorFault = 0x10
    WHvX64ExceptionTypeAlignmentCheckFault = 0x11
    WHvX64ExceptionTypeMachineCheckAbort = 0x12
    WHvX64ExceptionTypeSimdFloatingPointFault = 0x13


class PendingInterruptionType(enum.IntEnum):
    WHvX64PendingInterrupt = 0
    WHvX64PendingException = 3


class ApicMode(enum.IntEnum):
    WHvX64LocalApicEmulationModeNone = 0
    WHvX64LocalApicEmulationModeXApic = 1


# Enum constants the layout test compares with the SDK's.
CONSTANTS: dict[str, int] = {
    m.name: int(m)
    for e in (CapabilityCode, PropertyCode, ExitReason, MapFlags, TranslateResult,
              TranslateFlags, ApicMode, ExceptionType, PendingInterruptionType)
    for m in e
}

# Bitfields read through their union's AsUINT* member: (type, field) -> (shift, width).
BITS: dict[tuple[str, str], tuple[int, int]] = {
    ("WHV_EXTENDED_VM_EXITS", "X64CpuidExit"): (0, 1),
    ("WHV_EXTENDED_VM_EXITS", "X64MsrExit"): (1, 1),
    ("WHV_EXTENDED_VM_EXITS", "ExceptionExit"): (2, 1),
    ("WHV_X64_PENDING_INTERRUPTION_REGISTER", "InterruptionPending"): (0, 1),
    ("WHV_X64_PENDING_INTERRUPTION_REGISTER", "InterruptionType"): (1, 3),
    ("WHV_X64_PENDING_INTERRUPTION_REGISTER", "DeliverErrorCode"): (4, 1),
    ("WHV_X64_PENDING_INTERRUPTION_REGISTER", "InterruptionVector"): (16, 16),
    ("WHV_X64_PENDING_INTERRUPTION_REGISTER", "ErrorCode"): (32, 32),
    ("WHV_X64_DELIVERABILITY_NOTIFICATIONS_REGISTER", "InterruptNotification"): (1, 1),
    ("WHV_X64_INTERRUPT_STATE_REGISTER", "InterruptShadow"): (0, 1),
    ("WHV_X64_PENDING_DEBUG_EXCEPTION", "Breakpoint0"): (0, 1),
    ("WHV_X64_PENDING_DEBUG_EXCEPTION", "Breakpoint3"): (3, 1),
    ("WHV_X64_PENDING_DEBUG_EXCEPTION", "SingleStep"): (4, 1),
    ("WHV_X64_PENDING_EXCEPTION_EVENT", "EventPending"): (0, 1),
    ("WHV_X64_PENDING_EXCEPTION_EVENT", "EventType"): (1, 3),
    ("WHV_X64_PENDING_EXCEPTION_EVENT", "DeliverErrorCode"): (8, 1),
    ("WHV_X64_PENDING_EXCEPTION_EVENT", "Vector"): (16, 16),
    ("WHV_X64_VP_EXECUTION_STATE", "InterruptShadow"): (12, 1),
    ("WHV_VP_EXIT_CONTEXT", "InstructionLength"): (0, 4),  # in _InstructionLengthCr8
    ("WHV_MEMORY_ACCESS_INFO", "AccessType"): (0, 2),
    ("WHV_MEMORY_ACCESS_INFO", "GpaUnmapped"): (2, 1),
    ("WHV_X64_IO_PORT_ACCESS_INFO", "IsWrite"): (0, 1),
    ("WHV_X64_IO_PORT_ACCESS_INFO", "AccessSize"): (1, 3),
    ("WHV_X64_IO_PORT_ACCESS_INFO", "StringOp"): (4, 1),
    ("WHV_X64_IO_PORT_ACCESS_INFO", "RepPrefix"): (5, 1),
    ("WHV_X64_MSR_ACCESS_INFO", "IsWrite"): (0, 1),
    ("WHV_VP_EXCEPTION_INFO", "ErrorCodeValid"): (0, 1),
    ("WHV_VP_EXCEPTION_INFO", "SoftwareException"): (1, 1),
    ("WHV_EMULATOR_STATUS", "EmulationSuccessful"): (0, 1),
}
# Where the layout test finds a bitfield's carrier when it is not the union's AsUINT*.
BIT_CARRIERS = {"WHV_VP_EXIT_CONTEXT": "_InstructionLengthCr8",
                "WHV_X64_PENDING_EXCEPTION_EVENT": "_Header"}


def bit(type_: str, field: str, value: int) -> int:
    shift, width = BITS[(type_, field)]
    return (value >> shift) & ((1 << width) - 1)


def with_bit(type_: str, field: str, value: int, new: int) -> int:
    shift, width = BITS[(type_, field)]
    mask = ((1 << width) - 1) << shift
    return (value & ~mask) | ((new << shift) & mask)


def aligned_new(ctype: str, count: int = 1) -> Any:
    """`count` zeroed objects of `ctype` on a 16-byte boundary (the SDK's alignment for
    WHV_REGISTER_VALUE arrays and exit contexts), kept alive by the returned cdata."""
    size = ffi.sizeof(ctype) * count
    raw = ffi.new("char[]", size + 15)
    address = (int(ffi.cast("uintptr_t", raw)) + 15) & ~15
    out = ffi.cast(f"{ctype} *", address)
    _keep[out] = raw
    return out


# aligned pointer -> its backing buffer, for as long as the pointer object lives.
_keep: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def failed(hr: int) -> bool:
    return hr < 0


class WhpError(PlatformError):
    """A WHv call failed; the message names the call and its HRESULT."""


def check(hr: int, call: str) -> None:
    if failed(hr):
        raise WhpError(f"{call} failed (HRESULT {hr & 0xFFFFFFFF:#010x})")


def load_dlls() -> tuple[Any, Any]:
    """WinHvPlatform.dll and WinHvEmulation.dll (Windows only; OSError when missing)."""
    if sys.platform != "win32":
        raise OSError("WinHvPlatform.dll exists only on Windows")
    return ffi.dlopen("WinHvPlatform.dll"), ffi.dlopen("WinHvEmulation.dll")
