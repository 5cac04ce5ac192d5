"""WinHvEmulation glue: the callbacks through which WHvEmulatorTryIoEmulation and
WHvEmulatorTryMmioEmulation finish a port or MMIO instruction (string I/O included).

The emulator decodes the instruction and calls back for the access itself (answered by
the partition's `IoHandler`, or guest RAM for the memory side of string I/O), for
registers and for GVA translation. `Context` is a cffi handle to the vCPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from whpx_core.platform.whp.bindings import Hr, bit, check, failed, ffi

if TYPE_CHECKING:
    from whpx_core.platform.whp.vcpu import WhpVcpu


def _vcpu(context: Any) -> WhpVcpu:
    return ffi.from_handle(context)


def _on_io_port(context: Any, access: Any) -> int:
    vcpu = _vcpu(context)
    io = vcpu.partition.io
    if io is None:
        return Hr.E_FAIL
    size = int(access.AccessSize)
    if access.Direction:  # 1: write (OUT)
        io.port_write(vcpu.index, int(access.Port), size, int(access.Data) & _mask(size))
    else:
        access.Data = io.port_read(vcpu.index, int(access.Port), size) & _mask(size)
    return Hr.S_OK


def _on_memory(context: Any, access: Any) -> int:
    vcpu = _vcpu(context)
    partition = vcpu.partition
    gpa, size = int(access.GpaAddress), int(access.AccessSize)
    is_ram = partition.ram.overlaps(gpa, size)
    if access.Direction:  # 1: write
        data = bytes(ffi.buffer(access.Data, 8))[:size]
        if is_ram:
            partition.write_memory(gpa, data)
        elif partition.io is not None:
            partition.io.mmio_write(vcpu.index, gpa, size, int.from_bytes(data, "little"))
        return Hr.S_OK
    if is_ram:
        data = partition.read_memory(gpa, size)
    elif partition.io is not None:
        value = partition.io.mmio_read(vcpu.index, gpa, size) & _mask(size)
        data = value.to_bytes(size, "little")
    else:
        return Hr.E_FAIL
    ffi.memmove(access.Data, data, size)
    return Hr.S_OK


def _on_get_registers(context: Any, names: Any, count: int, values: Any) -> int:
    vcpu = _vcpu(context)
    return vcpu.api.WHvGetVirtualProcessorRegisters(vcpu.partition.handle, vcpu.index,
                                                    names, count, values)


def _on_set_registers(context: Any, names: Any, count: int, values: Any) -> int:
    vcpu = _vcpu(context)
    return vcpu.api.WHvSetVirtualProcessorRegisters(vcpu.partition.handle, vcpu.index,
                                                    names, count, values)


def _on_translate(context: Any, gva: int, flags: int, result: Any, gpa: Any) -> int:
    vcpu = _vcpu(context)
    out = ffi.new("WHV_TRANSLATE_GVA_RESULT *")
    hr = vcpu.api.WHvTranslateGva(vcpu.partition.handle, vcpu.index, gva, flags, out, gpa)
    result[0] = out.ResultCode
    return hr


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


# Exceptions inside a callback become E_FAIL, which the emulator reports as a failed
# callback: the run loop turns that into an InternalErrorExit, never a crash.
_CALLBACKS = (
    ("WHvEmulatorIoPortCallback", "WHV_EMULATOR_IO_PORT_CALLBACK", _on_io_port),
    ("WHvEmulatorMemoryCallback", "WHV_EMULATOR_MEMORY_CALLBACK", _on_memory),
    ("WHvEmulatorGetVirtualProcessorRegisters",
     "WHV_EMULATOR_GET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK", _on_get_registers),
    ("WHvEmulatorSetVirtualProcessorRegisters",
     "WHV_EMULATOR_SET_VIRTUAL_PROCESSOR_REGISTERS_CALLBACK", _on_set_registers),
    ("WHvEmulatorTranslateGvaPage", "WHV_EMULATOR_TRANSLATE_GVA_PAGE_CALLBACK", _on_translate),
)
_pointers = [ffi.callback(ctype, fn, error=Hr.E_FAIL) for _, ctype, fn in _CALLBACKS]
CALLBACKS = ffi.new("WHV_EMULATOR_CALLBACKS *")
CALLBACKS.Size = ffi.sizeof("WHV_EMULATOR_CALLBACKS")
for (_field, _, _), _pointer in zip(_CALLBACKS, _pointers, strict=True):
    setattr(CALLBACKS, _field, _pointer)


class Emulator:
    """One WHV_EMULATOR_HANDLE, owned by one vCPU."""

    def __init__(self, api: Any) -> None:
        self._api = api
        handle = ffi.new("WHV_EMULATOR_HANDLE *")
        check(api.WHvEmulatorCreateEmulator(CALLBACKS, handle), "WHvEmulatorCreateEmulator")
        self.handle = handle[0]

    def io(self, context: Any, exit_ctx: Any) -> str | None:
        """Finish a port I/O exit; None on success, else why it failed."""
        status = ffi.new("WHV_EMULATOR_STATUS *")
        hr = self._api.WHvEmulatorTryIoEmulation(self.handle, context,
                                                 ffi.addressof(exit_ctx, "VpContext"),
                                                 ffi.addressof(exit_ctx, "IoPortAccess"),
                                                 status)
        return _outcome(hr, status, "port I/O")

    def mmio(self, context: Any, exit_ctx: Any) -> str | None:
        status = ffi.new("WHV_EMULATOR_STATUS *")
        hr = self._api.WHvEmulatorTryMmioEmulation(self.handle, context,
                                                   ffi.addressof(exit_ctx, "VpContext"),
                                                   ffi.addressof(exit_ctx, "MemoryAccess"),
                                                   status)
        return _outcome(hr, status, "MMIO")

    def close(self) -> None:
        if self.handle != ffi.NULL:
            self._api.WHvEmulatorDestroyEmulator(self.handle)
            self.handle = ffi.NULL


def _outcome(hr: int, status: Any, what: str) -> str | None:
    value = int(status.AsUINT32)
    if failed(hr) or not bit("WHV_EMULATOR_STATUS", "EmulationSuccessful", value):
        return f"WHPX could not emulate the {what} instruction (hr={hr & 0xFFFFFFFF:#010x}, " \
               f"status={value:#x})"
    return None
