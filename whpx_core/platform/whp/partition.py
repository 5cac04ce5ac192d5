"""The WHPX platform and partition: WHvCreatePartition, properties, GPA mappings, vCPUs.

`api` is where the WHv functions come from: WinHvPlatform.dll and WinHvEmulation.dll on
Windows (`DllApi`), or the Linux stand-in (standin.py), which has the same functions
with the same C signatures. Everything above `api` is the same code in both cases.
"""

from __future__ import annotations

import mmap
import sys
import threading
from typing import Any

from whpx_core.platform.base import Capabilities, Clock, Partition, Platform, PlatformError
from whpx_core.platform.clock import MonotonicClock
from whpx_core.platform.ram import GuestRam
from whpx_core.platform.whp import bindings as wb
from whpx_core.platform.whp.bindings import PropertyCode, check, ffi
from whpx_core.platform.whp.vcpu import WhpVcpu

EXCEPTION_TYPES = frozenset(int(v) for v in wb.ExceptionType)
MAX_VCPUS = 64
ENABLE_HINT = ("enable the Windows feature 'Windows Hypervisor Platform' (in an "
               "administrator PowerShell: Enable-WindowsOptionalFeature -Online "
               "-FeatureName HypervisorPlatform), then reboot")


class DllApi:
    """The real WHv functions, from WinHvPlatform.dll and WinHvEmulation.dll."""

    def __init__(self) -> None:
        self._platform, self._emulation = wb.load_dlls()

    def __getattr__(self, name: str) -> Any:
        lib = self._emulation if name in wb.EMULATION_DLL_FUNCTIONS else self._platform
        return getattr(lib, name)

    def describe(self) -> str:
        return "whp (Windows Hypervisor Platform, WinHvPlatform.dll)"

    def clock(self, partition: Any) -> Clock:
        return MonotonicClock("whp-timer")

    def memory_written(self, partition: Any, gpa: int, size: int) -> None:
        """Nothing to do: hardware caches no translated guest code (the stand-in does)."""


def hypervisor_present(api: Any) -> bool:
    capability = ffi.new("WHV_CAPABILITY *")
    written = ffi.new("UINT32 *")
    hr = api.WHvGetCapability(wb.CapabilityCode.WHvCapabilityCodeHypervisorPresent,
                              capability, ffi.sizeof(capability[0]), written)
    return not wb.failed(hr) and bool(capability.HypervisorPresent)


class WhpPlatform(Platform):
    name = "whp"

    def __init__(self, api: Any | None = None) -> None:
        self.api = api if api is not None else DllApi()

    @classmethod
    def probe(cls) -> str | None:
        if sys.platform != "win32":
            return "WHPX needs Windows (WinHvPlatform.dll)"
        try:
            api = DllApi()
        except OSError as error:
            return f"WinHvPlatform.dll cannot be loaded ({error}): {ENABLE_HINT}"
        if not hypervisor_present(api):
            return f"the hypervisor is not present: {ENABLE_HINT}"
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities(
            icebp_exits=True,
            single_step="tf",
            hardware_breakpoints=0,
            guest_exception_delivery=True,
            interceptable_vectors=EXCEPTION_TYPES,
            max_vcpus=MAX_VCPUS,
            notes=("single step: RFLAGS.TF with an interrupt shadow (the seed's); every "
                   "exception is intercepted during a step so that it ends in the handler",
                   "the debugger's hardware breakpoints are not offered: WHPX exposes "
                   "only the guest's own DR0-DR7"),
        )

    def describe(self) -> str:
        return self.api.describe()

    def create_partition(self, vcpu_count: int) -> WhpPartition:
        if not 1 <= vcpu_count <= MAX_VCPUS:
            raise PlatformError(f"WHPX partitions here have 1 to {MAX_VCPUS} vCPUs")
        return WhpPartition(self.api, vcpu_count)


class WhpPartition(Partition):
    def __init__(self, api: Any, vcpu_count: int) -> None:
        self.api = api
        self.vcpu_count = vcpu_count
        handle = ffi.new("WHV_PARTITION_HANDLE *")
        check(api.WHvCreatePartition(handle), "WHvCreatePartition")
        self.handle = handle[0]
        self._vcpus: list[WhpVcpu] = []
        try:
            self._set_property(PropertyCode.WHvPartitionPropertyCodeProcessorCount,
                               "ProcessorCount", vcpu_count)
            exits = 0
            for name in ("X64CpuidExit", "X64MsrExit", "ExceptionExit"):
                exits = wb.with_bit("WHV_EXTENDED_VM_EXITS", name, exits, 1)
            self._set_property(PropertyCode.WHvPartitionPropertyCodeExtendedVmExits,
                               "ExtendedVmExits", exits)
            # The machine models the local APIC itself (machine/devices), over MMIO.
            self._set_property(PropertyCode.WHvPartitionPropertyCodeLocalApicEmulationMode,
                               "LocalApicEmulationMode",
                               wb.ApicMode.WHvX64LocalApicEmulationModeNone)
            check(api.WHvSetupPartition(self.handle), "WHvSetupPartition")
            self.clock = api.clock(self.handle)
            self.ram = GuestRam()
            self.io = None
            self.intercepts: frozenset[int] = frozenset()
            self._bitmap = 0
            self._steppers: set[int] = set()
            self._lock = threading.Lock()
            self._vcpus = [WhpVcpu(self, i) for i in range(vcpu_count)]
        except BaseException:
            self.close()
            raise

    def _set_property(self, code: int, field: str, value: int) -> None:
        prop = ffi.new("WHV_PARTITION_PROPERTY *")
        setattr(prop, field, value)
        check(self.api.WHvSetPartitionProperty(self.handle, code, prop, ffi.sizeof(prop[0])),
              f"WHvSetPartitionProperty({PropertyCode(code).name})")

    # -- memory -----------------------------------------------------------------------
    def map_memory(self, gpa: int, buffer: mmap.mmap) -> None:
        if gpa % 4096 or len(buffer) % 4096:
            raise PlatformError("guest memory must be page aligned")
        self.ram.add(gpa, buffer)
        source = ffi.from_buffer(buffer)
        flags = wb.MapFlags(7)  # read, write, execute
        check(self.api.WHvMapGpaRange(self.handle, source, gpa, len(buffer), flags),
              "WHvMapGpaRange")

    def add_mmio_region(self, gpa: int, size: int) -> None:
        """Nothing to do: an unmapped GPA already exits as a memory access."""

    def read_memory(self, gpa: int, size: int) -> bytes:
        return self.ram.read(gpa, size)

    def write_memory(self, gpa: int, data: bytes) -> None:
        self.ram.write(gpa, data)
        self.api.memory_written(self.handle, gpa, len(data))

    def swap_bytes(self, gpas, values) -> None:  # type: ignore[no-untyped-def]
        self.ram.swap_bytes(gpas, values)

    # -- configuration ----------------------------------------------------------------
    def set_io_handler(self, handler) -> None:  # type: ignore[no-untyped-def]
        self.io = handler

    def set_exception_intercepts(self, vectors: frozenset[int]) -> None:
        if not vectors <= EXCEPTION_TYPES:
            wrong = sorted(vectors - EXCEPTION_TYPES)
            raise PlatformError(f"WHPX cannot intercept vectors {wrong}")
        self.intercepts = frozenset(vectors)
        self._apply_bitmap()

    def stepping(self, index: int, enabled: bool) -> None:
        """A vCPU arms or ends a step (only while no other vCPU runs: the engine steps
        with the others halted, so the bitmap may change now)."""
        with self._lock:
            (self._steppers.add if enabled else self._steppers.discard)(index)
        self._apply_bitmap()

    def _apply_bitmap(self) -> None:
        vectors = EXCEPTION_TYPES if self._steppers else self.intercepts
        bitmap = sum(1 << v for v in vectors)
        if bitmap != self._bitmap:  # the seed sets it only when it changes
            self._set_property(PropertyCode.WHvPartitionPropertyCodeExceptionExitBitmap,
                               "ExceptionExitBitmap", bitmap)
            self._bitmap = bitmap

    def vcpu(self, index: int) -> WhpVcpu:
        return self._vcpus[index]

    def close(self) -> None:
        if self.handle == ffi.NULL:
            return
        for vcpu in self._vcpus:
            vcpu.close()
        self._vcpus = []
        self.api.WHvDeletePartition(self.handle)
        self.handle = ffi.NULL
        close_clock = getattr(getattr(self, "clock", None), "close", None)
        if close_clock is not None:
            close_clock()
