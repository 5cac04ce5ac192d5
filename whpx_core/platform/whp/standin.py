"""A stand-in for WinHvPlatform.dll and WinHvEmulation.dll on Linux, over the emulated
platform.

Every WHv function the backend uses exists here as a cffi callback of the SDK's exact C
type (bindings.FUNCTIONS), so the backend's calls cross a real C call boundary with the
same cdata it passes to the DLLs: register-name and WHV_REGISTER_VALUE arrays (checked
for 16-byte alignment), exit-context buffers (checked for size), property buffers,
emulator callback tables. Behind them an `EmulatedPartition` executes the guest, and
WHPX behaviour the backend relies on is modelled: the exception exit bitmap, exits for
port I/O and MMIO finished through the emulator callbacks, a pending single-step #DB
that reaches the guest unless PendingDebugException.SingleStep is cleared, interrupt
injection through WHvRegisterPendingInterruption, interrupt-window exits.

`faults` breaks one marshalled value on purpose (tests/platform/test_whp_standin.py shows
the scenario suite catches it). `memory_written` is the one call that is not a WHv
function: Unicorn caches translated guest code, hardware does not.
"""

from __future__ import annotations

import ctypes
import itertools
from typing import Any

from unicorn import UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED

from whpx_core.platform.emulated.platform import EmulatedPartition, EmulatedPlatform
from whpx_core.platform.registers import INTERRUPT_SHADOW, RFLAGS_IF, Reg
from whpx_core.platform.whp import bindings as wb
from whpx_core.platform.whp.bindings import Hr, PropertyCode, ffi
from whpx_core.platform.whp.standin_run import emulate, run
from whpx_core.platform.whp.standin_values import REGS, from_value, to_value
from whpx_core.platform.whp.standin_vp import Access, StandinVp

_PENDING_INTERRUPTION = 0x80000000
_DELIVERABILITY = 0x80000004
_PENDING_DEBUG = 0x80000006
_SINGLE_STEP = 1 << 4
_PAGE = 0x1000


class StandinError(Exception):
    pass


class _Partition:
    def __init__(self) -> None:
        self.properties: dict[int, int] = {}
        self.emulated: EmulatedPartition | None = None
        self.vps: dict[int, StandinVp] = {}
        self.emulators: dict[int, Any] = {}


class StandinApi:
    """The WHv functions the backend calls, as C callbacks over the emulated platform."""

    def __init__(self, faults: frozenset[str] = frozenset()) -> None:
        self.faults = faults
        self._partitions: dict[int, _Partition] = {}
        self._emulators: dict[int, Any] = {}
        self._ids = itertools.count(0x1000, 0x10)
        self._callbacks = []  # keeps the C callbacks alive
        for name, ctype in wb.FUNCTIONS.items():
            implementation = getattr(self, f"_{name}")
            callback = ffi.callback(ctype, self._guarded(implementation), error=Hr.E_FAIL)
            self._callbacks.append(callback)
            setattr(self, name, callback)

    @staticmethod
    def _guarded(function: Any) -> Any:
        def call(*args: Any) -> int:
            try:
                return function(*args)
            except StandinError:
                return Hr.E_INVALIDARG
        return call

    def describe(self) -> str:
        broken = f"; fault injected: {', '.join(sorted(self.faults))}" if self.faults else ""
        return ("whp over the Linux stand-in (the WHv functions with their C signatures, "
                f"backed by the emulated platform){broken}")

    def clock(self, handle: Any) -> Any:
        emulated = self._partition(handle).emulated
        assert emulated is not None
        return emulated.clock  # virtual time, as the emulated platform keeps it

    def memory_written(self, handle: Any, gpa: int, size: int) -> None:
        emulated = self._partition(handle).emulated
        assert emulated is not None
        for index in range(emulated.vcpu_count):
            emulated.vcpu(index).remove_cache(gpa, gpa + size)

    # -- helpers ------------------------------------------------------------------------
    def _partition(self, handle: Any) -> _Partition:
        partition = self._partitions.get(int(ffi.cast("uintptr_t", handle)))
        if partition is None:
            raise StandinError("invalid partition handle")
        return partition

    def _vp(self, handle: Any, index: int) -> StandinVp:
        vp = self._partition(handle).vps.get(index)
        if vp is None:
            raise StandinError(f"no virtual processor {index}")
        return vp

    @staticmethod
    def _aligned(pointer: Any) -> None:
        if int(ffi.cast("uintptr_t", pointer)) % 16:
            raise StandinError("WHV_REGISTER_VALUE arrays and exit contexts are 16-byte aligned")

    # -- capability and partition ---------------------------------------------------------
    def _WHvGetCapability(self, code: int, buffer: Any, size: int, written: Any) -> int:
        if code != wb.CapabilityCode.WHvCapabilityCodeHypervisorPresent or size < 4:
            return Hr.E_INVALIDARG
        ffi.cast("WINBOOL *", buffer)[0] = 1
        if written != ffi.NULL:
            written[0] = 4
        return Hr.S_OK

    def _WHvCreatePartition(self, out: Any) -> int:
        key = next(self._ids)
        self._partitions[key] = _Partition()
        out[0] = ffi.cast("WHV_PARTITION_HANDLE", key)
        return Hr.S_OK

    def _WHvSetPartitionProperty(self, handle: Any, code: int, buffer: Any, size: int) -> int:
        partition = self._partition(handle)
        if size < ffi.sizeof("WHV_PARTITION_PROPERTY"):
            return Hr.E_INVALIDARG
        prop = ffi.cast("WHV_PARTITION_PROPERTY *", buffer)
        if code == PropertyCode.WHvPartitionPropertyCodeExceptionExitBitmap:
            if partition.emulated is None:
                return Hr.E_INVALIDARG
            if any(vp.running for vp in partition.vps.values()):
                raise StandinError("the exception exit bitmap changed while a vCPU runs")
            bitmap = int(prop.ExceptionExitBitmap)
            partition.emulated.set_exception_intercepts(
                frozenset(v for v in range(64) if bitmap >> v & 1))
            return Hr.S_OK
        if partition.emulated is not None:
            return Hr.E_INVALIDARG  # the others are set before WHvSetupPartition
        field = {PropertyCode.WHvPartitionPropertyCodeProcessorCount: "ProcessorCount",
                 PropertyCode.WHvPartitionPropertyCodeExtendedVmExits: "ExtendedVmExits",
                 PropertyCode.WHvPartitionPropertyCodeLocalApicEmulationMode:
                     "LocalApicEmulationMode"}.get(code)
        if field is None:
            return Hr.E_INVALIDARG
        partition.properties[code] = int(getattr(prop, field))
        return Hr.S_OK

    def _WHvGetPartitionProperty(self, handle: Any, code: int, buffer: Any, size: int,
                                 written: Any) -> int:
        value = self._partition(handle).properties.get(code)
        if value is None or size < 8:
            return Hr.E_INVALIDARG
        ffi.cast("UINT64 *", buffer)[0] = value
        return Hr.S_OK

    def _WHvSetupPartition(self, handle: Any) -> int:
        partition = self._partition(handle)
        count = partition.properties.get(PropertyCode.WHvPartitionPropertyCodeProcessorCount)
        if not count or partition.emulated is not None:
            return Hr.E_INVALIDARG
        partition.emulated = EmulatedPlatform().create_partition(count)
        partition.emulated.set_io_handler(_Bridge(partition))
        return Hr.S_OK

    def _WHvDeletePartition(self, handle: Any) -> int:
        partition = self._partition(handle)
        for vp in partition.vps.values():
            vp.close()
        if partition.emulated is not None:
            partition.emulated.close()
        del self._partitions[int(ffi.cast("uintptr_t", handle))]
        return Hr.S_OK

    def _WHvMapGpaRange(self, handle: Any, source: Any, gpa: int, size: int, flags: int) -> int:
        emulated = self._partition(handle).emulated
        if emulated is None or gpa % _PAGE or size % _PAGE or not flags:
            return Hr.E_INVALIDARG
        # The backend's own buffer, shared as WHPX shares it: no copy.
        buffer = (ctypes.c_char * size).from_address(int(ffi.cast("uintptr_t", source)))
        emulated.map_memory(gpa, buffer)  # type: ignore[arg-type]
        return Hr.S_OK

    def _WHvUnmapGpaRange(self, handle: Any, gpa: int, size: int) -> int:
        return Hr.E_INVALIDARG  # the backend never unmaps

    # -- virtual processors -----------------------------------------------------------------
    def _WHvCreateVirtualProcessor(self, handle: Any, index: int, flags: int) -> int:
        partition = self._partition(handle)
        emulated = partition.emulated
        if emulated is None or flags or index in partition.vps or index >= emulated.vcpu_count:
            return Hr.E_INVALIDARG
        vcpu = emulated.vcpu(index)
        vcpu.uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED,
                         lambda uc, access, address, size, value, data:
                         _map_mmio_page(emulated, address))
        partition.vps[index] = StandinVp(vcpu)
        return Hr.S_OK

    def _WHvDeleteVirtualProcessor(self, handle: Any, index: int) -> int:
        self._vp(handle, index).close()
        del self._partition(handle).vps[index]
        return Hr.S_OK

    def _WHvCancelRunVirtualProcessor(self, handle: Any, index: int, flags: int) -> int:
        vp = self._vp(handle, index)
        vp.cancel_requested = True  # sticky: a run that has not started returns at once
        vp.vcpu.cancel()
        return Hr.S_OK

    def _WHvRunVirtualProcessor(self, handle: Any, index: int, buffer: Any, size: int) -> int:
        vp = self._vp(handle, index)
        if size < ffi.sizeof("WHV_RUN_VP_EXIT_CONTEXT"):
            return wb.Hr.WHV_E_INSUFFICIENT_BUFFER
        self._aligned(buffer)
        if vp.access is not None:
            raise StandinError("run again before the last port/MMIO exit was emulated")
        ctx = ffi.cast("WHV_RUN_VP_EXIT_CONTEXT *", buffer)
        ffi.memmove(ctx, b"\0" * ffi.sizeof(ctx[0]), ffi.sizeof(ctx[0]))
        vp.exit_address = int(ffi.cast("uintptr_t", buffer))
        run(vp, ctx, self.faults)
        return Hr.S_OK

    # -- registers ----------------------------------------------------------------------------
    def _WHvGetVirtualProcessorRegisters(self, handle: Any, index: int, names: Any, count: int,
                                         values: Any) -> int:
        vp = self._vp(handle, index)
        self._aligned(values)
        numbers = [int(names[i]) for i in range(count)]
        regs = [REGS[n] for n in numbers if n in REGS]
        read = dict(zip(regs, vp.vcpu.get_registers(regs), strict=True))
        slots = list(range(count))
        if "register-order" in self.faults:
            slots.reverse()  # values written back in the wrong order: an index mix-up
        for i, number in zip(slots, numbers, strict=True):
            ffi.memmove(ffi.addressof(values[i]), b"\0" * 16, 16)
            if number in REGS:
                value = read[REGS[number]]
                to_value(values[i], REGS[number], value)
            elif number == _PENDING_DEBUG:
                values[i].Reg64 = vp.pending_debug
            elif number in (_PENDING_INTERRUPTION, _DELIVERABILITY):
                values[i].Reg64 = int(vp.window_wanted) << 1 if number == _DELIVERABILITY else 0
            else:
                return Hr.E_INVALIDARG
        return Hr.S_OK

    def _WHvSetVirtualProcessorRegisters(self, handle: Any, index: int, names: Any, count: int,
                                         values: Any) -> int:
        vp = self._vp(handle, index)
        self._aligned(values)
        updates = {}
        for i in range(count):
            number = int(names[i])
            if number in REGS:
                updates[REGS[number]] = from_value(values[i], REGS[number])
            elif number == _PENDING_DEBUG:
                vp.pending_debug = int(values[i].Reg64)
            elif number == _DELIVERABILITY:
                vp.window_wanted = bool(int(values[i].Reg64) >> 1 & 1)
            elif number == _PENDING_INTERRUPTION:
                _inject(vp, int(values[i].Reg64))
            else:
                return Hr.E_INVALIDARG
        if updates:
            vp.vcpu.set_registers(updates)
        return Hr.S_OK

    def _WHvTranslateGva(self, handle: Any, index: int, gva: int, flags: int, result: Any,
                         gpa: Any) -> int:
        found = self._vp(handle, index).vcpu.translate_gva(gva)
        result.ResultCode = 0 if found is not None else 1
        gpa[0] = found or 0
        return Hr.S_OK

    # -- WinHvEmulation ---------------------------------------------------------------------
    def _WHvEmulatorCreateEmulator(self, callbacks: Any, out: Any) -> int:
        if callbacks.Size != ffi.sizeof("WHV_EMULATOR_CALLBACKS"):
            return Hr.E_INVALIDARG
        key = next(self._ids)
        self._emulators[key] = callbacks
        out[0] = ffi.cast("WHV_EMULATOR_HANDLE", key)
        return Hr.S_OK

    def _WHvEmulatorDestroyEmulator(self, emulator: Any) -> int:
        self._emulators.pop(int(ffi.cast("uintptr_t", emulator)), None)
        return Hr.S_OK

    def _WHvEmulatorTryIoEmulation(self, emulator: Any, context: Any, vp_context: Any,
                                   io: Any, status: Any) -> int:
        return emulate(self._emulator(emulator), self._pending(vp_context, io, 48), context,
                       status)

    def _WHvEmulatorTryMmioEmulation(self, emulator: Any, context: Any, vp_context: Any,
                                     mmio: Any, status: Any) -> int:
        return emulate(self._emulator(emulator), self._pending(vp_context, mmio, 48), context,
                       status)

    def _emulator(self, handle: Any) -> Any:
        callbacks = self._emulators.get(int(ffi.cast("uintptr_t", handle)))
        if callbacks is None:
            raise StandinError("invalid emulator handle")
        return callbacks

    def _pending(self, vp_context: Any, access_context: Any, offset: int) -> StandinVp:
        """The vCPU whose exit context these pointers point into (VpContext at +8, the
        access context at +48, as in WHV_RUN_VP_EXIT_CONTEXT)."""
        address = int(ffi.cast("uintptr_t", vp_context)) - 8
        if int(ffi.cast("uintptr_t", access_context)) != address + offset:
            raise StandinError("the access context is not the exit context's")
        for partition in self._partitions.values():
            for vp in partition.vps.values():
                if vp.exit_address == address and vp.access is not None:
                    return vp
        raise StandinError("no port or MMIO exit is waiting in this exit context")


class _Bridge:
    """The emulated partition's IoHandler: every access becomes an exit of its vCPU."""

    def __init__(self, partition: _Partition) -> None:
        self._partition = partition

    def _access(self, vcpu: int, access: Access) -> int:
        return self._partition.vps[vcpu].on_access(access)

    def port_read(self, vcpu: int, port: int, size: int) -> int:
        return self._access(vcpu, Access("port", False, port, size))

    def port_write(self, vcpu: int, port: int, size: int, value: int) -> None:
        self._access(vcpu, Access("port", True, port, size, value))

    def mmio_read(self, vcpu: int, gpa: int, size: int) -> int:
        return self._access(vcpu, Access("mmio", False, gpa, size))

    def mmio_write(self, vcpu: int, gpa: int, size: int, value: int) -> None:
        self._access(vcpu, Access("mmio", True, gpa, size, value))


def _map_mmio_page(emulated: EmulatedPartition, address: int) -> bool:
    """An access to an unmapped guest-physical page: on WHPX a memory-access exit, here
    the page becomes MMIO (for every vCPU) and the access is retried."""
    emulated.add_mmio_region(address & ~(_PAGE - 1), _PAGE)
    return True


def _inject(vp: StandinVp, value: int) -> None:
    """WHvRegisterPendingInterruption: InterruptionPending (bit 0), type (bits 1-3: 0 an
    external interrupt, 3 a hardware exception), error code valid (4), vector (16-31),
    error code (32-63)."""
    if not value & 1:
        return
    kind, vector = value >> 1 & 7, value >> 16 & 0xFFFF
    if kind == 0:
        rflags, state = vp.vcpu.get_registers((Reg.RFLAGS, Reg.INTERRUPT_STATE))
        if not int(rflags) & RFLAGS_IF or int(state) & INTERRUPT_SHADOW:
            raise StandinError("an interrupt injected while the guest cannot take it")
        vp.vcpu.request_interrupt(vector)
    elif kind == 3:
        vp.vcpu.inject_exception(vector, value >> 32 if value >> 4 & 1 else None)
    else:
        raise StandinError(f"interruption type {kind} is not modelled")

