"""Linux KVM behind the WHv-shaped platform interface.

`KvmPlatform` is /dev/kvm, `KvmPartition` a VM (memory slots, MMIO ranges, intercepts,
clock), `KvmVcpu` (vcpu.py) a vCPU with its run loop.

Threading: cancelling a vCPU that is inside KVM_RUN needs a signal with a real Python
handler (KVM_RUN only returns EINTR for a signal that is delivered, not ignored).
`signal.signal` works only in the main thread, so `install_kick_handler()` runs when the
first partition is created, which must then happen on the main thread (or call
`install_kick_handler()` from the main thread beforehand).
"""

from __future__ import annotations

import mmap
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from whpx_core.platform.base import (
    Capabilities,
    HwBreakpoint,
    IoHandler,
    Partition,
    Platform,
    PlatformError,
    PlatformUnavailable,
)
from whpx_core.platform.clock import MonotonicClock
from whpx_core.platform.emulated.debug_registers import NO_SLOTS, validate_slots
from whpx_core.platform.exits import Vector
from whpx_core.platform.kvm import bindings as kb
from whpx_core.platform.kvm.bindings import ffi
from whpx_core.platform.kvm.fds import KVM_DEVICE, CData, KvmSystem
from whpx_core.platform.kvm.vcpu import KICK_SIGNAL, KvmVcpu
from whpx_core.platform.ram import GuestRam

PAGE = 4096
# Vectors KVM can stop on: #DB (USE_HW_BP / SINGLESTEP) and #BP (USE_SW_BP). KVM has no
# general exception bitmap like WHv's ExceptionExitBitmap.
INTERCEPTABLE = frozenset({Vector.DB, Vector.BP})


def _on_kick(signum: int, frame: object) -> None:
    """Does nothing: its existence makes the kick signal interrupt KVM_RUN (EINTR)."""


def install_kick_handler() -> None:
    """Install the no-op handler for the kick signal. Main thread only (a Python rule)."""
    if callable(signal.getsignal(KICK_SIGNAL)):
        return  # ours, or the application's own handler: either makes KVM_RUN return
    if threading.current_thread() is not threading.main_thread():
        raise PlatformError(
            f"the first KVM partition must be created on the main thread (it installs a "
            f"{KICK_SIGNAL.name} handler), or call install_kick_handler() there first"
        )
    signal.signal(KICK_SIGNAL, _on_kick)


def detect_pvm() -> bool:
    """kvm_pvm: a paravirtual KVM module that emulates CPL0 guest code (no VT-x/AMD-V)."""
    if Path("/sys/module/kvm_pvm").exists():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" not in flags and " svm" not in flags


class KvmPlatform(Platform):
    name = "kvm"
    _capabilities: Capabilities | None = None  # measured once per process

    def __init__(self) -> None:
        reason = self.probe()
        if reason:
            raise PlatformUnavailable(reason)
        self.is_pvm = detect_pvm()
        if threading.current_thread() is threading.main_thread():
            # Now, while we can: partitions may later be created on worker threads.
            install_kick_handler()

    @classmethod
    def probe(cls) -> str | None:
        try:
            system = KvmSystem.open()
        except OSError as error:
            return f"cannot open {KVM_DEVICE}: {error.strerror}"
        try:
            version = system.api_version()
        except PlatformError as error:
            return str(error)
        finally:
            system.close()
        if version != kb.KVM_API_VERSION:
            return f"{KVM_DEVICE} speaks KVM API {version}, not {kb.KVM_API_VERSION}"
        return None

    def capabilities(self) -> Capabilities:
        if KvmPlatform._capabilities is None:
            from whpx_core.platform.kvm.probe import measure_capabilities

            KvmPlatform._capabilities = measure_capabilities(self)
        return KvmPlatform._capabilities

    def describe(self) -> str:
        if self.is_pvm:
            return (
                "Linux KVM via kvm_pvm (paravirtual, no VT-x/AMD-V): CPL0 guest code is "
                "emulated (~1-2 M instructions/s); INT1/INT3/INT n at CPL0 are emulation "
                "failures that this backend turns into #DB/#BP exits or IDT deliveries"
            )
        return "Linux KVM (hardware virtualization)"

    def limits(self) -> tuple[int, int]:
        """(hard maximum, recommended) vCPUs per VM, from KVM_CAP_MAX_VCPUS / NR_VCPUS."""
        system = KvmSystem.open()
        try:
            recommended = system.check_extension(kb.KVM_CAP_NR_VCPUS) or 4
            maximum = system.check_extension(kb.KVM_CAP_MAX_VCPUS) or recommended
        finally:
            system.close()
        return maximum, recommended

    def create_partition(self, vcpu_count: int) -> KvmPartition:
        maximum, _ = self.limits()
        if not 1 <= vcpu_count <= maximum:
            raise PlatformError(f"KVM runs 1 to {maximum} vCPUs per VM here")
        return KvmPartition(vcpu_count)


class KvmPartition(Partition):
    def __init__(self, vcpu_count: int, *, kick_signal: bool = True) -> None:
        self.is_pvm = detect_pvm()
        if kick_signal:
            install_kick_handler()
        self.kick_signal = kick_signal
        self.vcpu_count = vcpu_count
        self.clock = MonotonicClock("kvm-timer")
        self.intercepts: frozenset[int] = frozenset()
        self.hw_slots: tuple[HwBreakpoint | None, ...] = NO_SLOTS  # the debugger's DR0-3
        self.hw_slots_used = 0  # how many of them are set
        self.io_handler: IoHandler | None = None
        self.closed = False
        self.ram = GuestRam()
        self._pins: list[CData] = []  # ffi.from_buffer: pins each buffer while KVM maps it
        self._mmio: list[tuple[int, int]] = []
        self._system = KvmSystem.open()
        self._vcpus: list[KvmVcpu] = []
        try:
            self._vm = self._system.create_vm()
            sync = self._system.check_extension(kb.KVM_CAP_SYNC_REGS)
            cpuid = self._system.supported_cpuid()
            mmap_size = self._system.vcpu_mmap_size()
            for index in range(vcpu_count):
                fd = self._vm.create_vcpu(index, mmap_size)
                # CPUID before any sregs: KVM checks CR4/EFER bits against it.
                fd.set_cpuid2(_cpuid_for(cpuid, index))
                self._vcpus.append(KvmVcpu(self, index, fd, sync))
        except BaseException:
            self.close()
            raise

    # -- memory -----------------------------------------------------------------------
    def map_memory(self, gpa: int, buffer: mmap.mmap) -> None:
        size = len(buffer)
        if gpa % PAGE or size % PAGE or size == 0:
            raise PlatformError("guest memory must be page aligned and not empty")
        if self._overlaps(gpa, size):
            raise PlatformError(f"guest-physical range {gpa:#x}+{size:#x} is already in use")
        pointer = ffi.from_buffer(buffer, require_writable=True)
        address = int(ffi.cast("uintptr_t", pointer))
        try:
            self._vm.set_user_memory_region(len(self._pins), gpa, size, address)
        except PlatformError:
            ffi.release(pointer)
            raise
        self._pins.append(pointer)
        self.ram.add(gpa, buffer)

    def add_mmio_region(self, gpa: int, size: int) -> None:
        # No memory slot backs it, so guest accesses come out as KVM_EXIT_MMIO.
        if self._overlaps(gpa, size):
            raise PlatformError(f"MMIO range {gpa:#x}+{size:#x} overlaps memory or MMIO")
        self._mmio.append((gpa, size))

    def _overlaps(self, gpa: int, size: int) -> bool:
        return self.ram.overlaps(gpa, size) or \
            any(gpa < g + s and g < gpa + size for g, s in self._mmio)

    def is_mmio(self, gpa: int, size: int) -> bool:
        return any(g <= gpa and gpa + size <= g + s for g, s in self._mmio)

    def read_memory(self, gpa: int, size: int) -> bytes:
        return self.ram.read(gpa, size)

    def write_memory(self, gpa: int, data: bytes) -> None:
        self.ram.write(gpa, data)

    def swap_bytes(self, gpas, values) -> None:  # type: ignore[no-untyped-def]
        self.ram.swap_bytes(gpas, values)

    # -- configuration ----------------------------------------------------------------
    def set_io_handler(self, handler: IoHandler) -> None:
        self.io_handler = handler

    def set_exception_intercepts(self, vectors: frozenset[int]) -> None:
        unsupported = set(vectors) - INTERCEPTABLE
        if unsupported:
            raise PlatformError(
                f"KVM can intercept only #DB (1) and #BP (3), not {sorted(unsupported)}"
            )
        self.intercepts = frozenset(vectors)
        for vcpu in self._vcpus:
            vcpu._apply_guest_debug()

    def set_hardware_breakpoints(self, slots: Sequence[HwBreakpoint | None]) -> None:
        """Through KVM_SET_GUEST_DEBUG (USE_HW_BP, debugreg[0-3] and [7]); what becomes of
        the guest's own breakpoints meanwhile is in vcpu.py's docstring."""
        if not any(bp is not None for bp in slots):
            checked = NO_SLOTS
        else:
            caps = _measured_capabilities()
            why = None if caps.hardware_watchpoints else _NO_WATCHPOINTS
            checked = validate_slots(slots, watchpoints=why)
            used = max(n for n, bp in enumerate(checked) if bp is not None)
            if used >= caps.hardware_breakpoints:
                raise PlatformError(
                    f"slot {used}: only {caps.hardware_breakpoints} hardware breakpoint "
                    f"slots fire on this host (measured)")
        self.arm_slots(checked)

    def arm_slots(self, slots: Sequence[HwBreakpoint | None]) -> None:
        """Set the debugger's slots without checking them against the measured
        capabilities (the probe, which measures them, uses this)."""
        self.hw_slots = tuple(slots)
        self.hw_slots_used = sum(bp is not None for bp in self.hw_slots)
        for vcpu in self._vcpus:
            vcpu._apply_guest_debug()

    def vcpu(self, index: int) -> KvmVcpu:
        return self._vcpus[index]

    # -- teardown ---------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for vcpu in self._vcpus:
            vcpu.cancel()  # a run() still in progress returns CanceledExit
        self.clock.close()
        for vcpu in self._vcpus:
            # Closing a vCPU fd under a thread still in KVM_RUN would free the kvm_run
            # page it reads: wait for it; if it never leaves, leak the fd instead.
            if vcpu.wait_idle(timeout=5.0):
                vcpu.close()
        if hasattr(self, "_vm"):
            self._vm.close()
        self._system.close()
        for pointer in self._pins:
            ffi.release(pointer)  # the caller may close its buffer now
        self._pins.clear()
        self.ram.clear()


_NO_WATCHPOINTS = (
    "data watchpoints never fire under this KVM (measured at startup: a write watchpoint "
    "in KVM_SET_GUEST_DEBUG debugreg[] did not trap)"
)


def _measured_capabilities() -> Capabilities:
    """The capabilities measured once per process (a throw-away partition, a few ms)."""
    if KvmPlatform._capabilities is not None:
        return KvmPlatform._capabilities
    return KvmPlatform().capabilities()


def _cpuid_for(supported: CData, index: int) -> CData:
    """KVM_GET_SUPPORTED_CPUID with this vCPU's APIC ID filled in (leaves 1, 0xB, 0x1F)."""
    cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": supported.nent, "entries": supported.nent})
    ffi.memmove(
        cpuid.entries, supported.entries, supported.nent * ffi.sizeof("struct kvm_cpuid_entry2")
    )
    for i in range(cpuid.nent):
        entry = cpuid.entries[i]
        if entry.function == 1:
            entry.ebx = (entry.ebx & 0x00FFFFFF) | (index & 0xFF) << 24
        elif entry.function in (0xB, 0x1F):
            entry.edx = index
    return cpuid
