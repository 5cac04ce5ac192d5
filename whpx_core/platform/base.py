"""The one platform interface, shaped after the WHv API.

A `Platform` creates a `Partition` (WHvCreatePartition + WHvSetupPartition); a partition
maps guest-physical memory (WHvMapGpaRange), owns vCPUs (WHvCreateVirtualProcessor) and
chooses which exception vectors exit to the host (the ExceptionExitBitmap property). A
`Vcpu` reads and writes registers by name and runs until an exit
(WHvRunVirtualProcessor), and can be cancelled from any thread
(WHvCancelRunVirtualProcessor).

Threading contract: each vCPU's `run()` is called from one host thread of its own. A
platform may serialise them inside (the emulated one does, for exact atomics); callers
never need to know.
"""

from __future__ import annotations

import abc
import mmap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from whpx_core.platform.exits import Exit
from whpx_core.platform.paging import PageFault, PagingState, translate
from whpx_core.platform.registers import Reg, RegValue


class PlatformUnavailable(Exception):
    """The platform cannot be used on this machine; the message says what is missing."""


class PlatformError(Exception):
    """A platform call failed (the hypervisor refused an operation)."""


class IoHandler(Protocol):
    """Answers the guest's port and MMIO accesses, synchronously, on the vCPU's thread.

    A handler that wants the vCPU to stop (the debug-exit port, say) cancels it; the
    access itself always completes first.
    """

    def port_read(self, vcpu: int, port: int, size: int) -> int: ...

    def port_write(self, vcpu: int, port: int, size: int, value: int) -> None: ...

    def mmio_read(self, vcpu: int, gpa: int, size: int) -> int: ...

    def mmio_write(self, vcpu: int, gpa: int, size: int, value: int) -> None: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(abc.ABC):
    """The partition's time base.

    Hardware platforms use host monotonic time. The emulated platform uses virtual time
    derived from instructions executed, so timer interrupts arrive at the same guest
    instruction on every run.
    """

    @abc.abstractmethod
    def now_ns(self) -> int: ...

    @abc.abstractmethod
    def call_at(self, deadline_ns: int, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` once, at or after `deadline_ns`, on a thread the platform picks."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a platform's debug mechanisms can do on this host (measured, not assumed)."""

    # An executed 0xF1 at CPL0 exits to the host as #DB (possibly through a quirk).
    icebp_exits: bool
    # The step primitive: "tf" (RFLAGS.TF with #DB intercepted) or "guest-debug"
    # (KVM_GUESTDBG_SINGLESTEP, for hosts where an engine-set TF never exits).
    single_step: str
    # Hardware breakpoint slots (DR0-DR3) the platform honours, 0 if none.
    hardware_breakpoints: int = 0
    hardware_watchpoints: bool = False
    # Exceptions not intercepted are delivered through the guest's IDT.
    guest_exception_delivery: bool = True
    # Vectors `set_exception_intercepts` accepts (WHv: any; KVM: only #DB and #BP).
    interceptable_vectors: frozenset[int] = frozenset(range(32))
    max_vcpus: int = 1
    # One vCPU executes at a time (the emulated platform's baton): the threads that drive
    # the VM lose nothing by sharing one CPU, and gain cheap hand-overs (affinity.py).
    serial_execution: bool = False
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class HwBreakpoint:
    """One of the debugger's four hardware breakpoint slots (DR0-DR3 semantics)."""

    address: int
    kind: str = "execute"  # "execute", "write" or "readwrite" (x86 has no read-only)
    size: int = 1  # 1, 2, 4 or 8 bytes, naturally aligned; execute breakpoints use 1


class Vcpu(abc.ABC):
    index: int

    @abc.abstractmethod
    def get_registers(self, names: Iterable[Reg]) -> list[RegValue]: ...

    @abc.abstractmethod
    def set_registers(self, values: Mapping[Reg, RegValue]) -> None: ...

    def get(self, name: Reg) -> RegValue:
        return self.get_registers((name,))[0]

    def get_int(self, name: Reg) -> int:
        value = self.get(name)
        assert isinstance(value, int), name
        return value

    def set(self, name: Reg, value: RegValue) -> None:
        self.set_registers({name: value})

    def translate_gva(self, gva: int, read_phys: Callable[[int, int], bytes]) -> int | None:
        """Guest-physical address of `gva` through this vCPU's page tables, None when not
        mapped (WHvTranslateGva). The default walks the tables with `read_phys`;
        platforms with a faster walk override it."""
        cr0, cr3 = self.get_registers((Reg.CR0, Reg.CR3))
        assert isinstance(cr0, int) and isinstance(cr3, int)
        try:
            return translate(read_phys, PagingState(cr0, cr3), gva)
        except PageFault:
            return None

    @abc.abstractmethod
    def run(self) -> Exit:
        """Run until an exit. Blocks; releases the GIL while the guest runs."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Make the current or next `run()` return `CanceledExit` promptly. Thread-safe."""

    @abc.abstractmethod
    def set_single_step(self, enabled: bool) -> None:
        """Arm the platform's step primitive: each `run()` then executes at most one
        instruction and returns `ExceptionExit(#DB, debug_status=BS)`. If that
        instruction raises an exception or interrupt that is delivered to the guest, the
        step ends at the handler's first instruction, before it runs. No #DB is left
        pending afterwards. With a TF-based primitive (WHPX, emulated) the guest could
        see TF in an RFLAGS image it saves during the step (PUSHF, an exception frame):
        the engine repairs those (debug/stepping.py)."""

    @abc.abstractmethod
    def request_interrupt(self, vector: int) -> None:
        """Raise an external interrupt. It is delivered through the guest's IDT when the
        guest can take it (IF=1, no interrupt shadow) and wakes a halted vCPU.
        Thread-safe."""

    @abc.abstractmethod
    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """Deliver an exception to the guest at its next `run()`, as the CPU would
        (re-delivery of an intercepted exception that was not the debugger's)."""


class Partition(abc.ABC):
    vcpu_count: int
    clock: Clock

    @abc.abstractmethod
    def map_memory(self, gpa: int, buffer: mmap.mmap) -> None:
        """Back guest-physical [gpa, gpa+len(buffer)) with a host buffer."""

    @abc.abstractmethod
    def add_mmio_region(self, gpa: int, size: int) -> None:
        """Accesses to [gpa, gpa+size) go to the IoHandler's mmio_read / mmio_write."""

    @abc.abstractmethod
    def set_io_handler(self, handler: IoHandler) -> None: ...

    @abc.abstractmethod
    def set_exception_intercepts(self, vectors: frozenset[int]) -> None:
        """Vectors that exit to the host instead of reaching the guest's IDT. Only
        called while no vCPU runs (the WHv ExceptionExitBitmap rule)."""

    def set_hardware_breakpoints(self, slots: Sequence[HwBreakpoint | None]) -> None:
        """The debugger's own hardware breakpoints, slot n like DRn (at most
        `Capabilities.hardware_breakpoints` slots; only while no vCPU runs). They are
        separate from the guest's DR0-DR7, which stay the guest's. A hit exits as
        ExceptionExit(#DB) with bit n of `debug_status` set: execute breakpoints before
        the instruction (RIP at it), data breakpoints after the access (RIP after it)."""
        if any(slot is not None for slot in slots):
            raise PlatformError("this platform has no hardware breakpoints")

    @abc.abstractmethod
    def read_memory(self, gpa: int, size: int) -> bytes: ...

    @abc.abstractmethod
    def write_memory(self, gpa: int, data: bytes) -> None:
        """Host write to guest-physical memory. Platforms that cache translated guest
        code (Unicorn) invalidate it here, so every host write goes through this."""

    def swap_bytes(self, gpas: Sequence[int], values: Sequence[int]) -> None:
        """Write single bytes at many guest-physical addresses, without invalidating
        translated code. Only for the breakpoint park / unpark cycle, where the bytes
        written back are the ones translated code was made from. Platforms with a faster
        bulk path override this."""
        for gpa, value in zip(gpas, values, strict=True):
            self._swap_byte(int(gpa), int(value))

    def _swap_byte(self, gpa: int, value: int) -> None:
        self.write_memory(gpa, bytes([value]))

    def write_step_byte(self, gpa: int, value: int) -> None:
        """Write one byte for an exclusive step over a planted breakpoint: the original
        byte before the step, the INT1 after it (every other vCPU halted). A platform
        that caches translated code may keep it where the step cannot run stale code."""
        self.write_memory(gpa, bytes([value]))

    @abc.abstractmethod
    def vcpu(self, index: int) -> Vcpu: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Platform(abc.ABC):
    name: str

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """None when usable here; otherwise a one-line reason naming what is missing."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the user: which hypervisor, and any quirk that matters."""

    @abc.abstractmethod
    def create_partition(self, vcpu_count: int) -> Partition: ...
