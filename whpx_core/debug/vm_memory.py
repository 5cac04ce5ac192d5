"""Guest memory as the debugger sees it: guest-virtual access through a vCPU's page
tables, planted breakpoint bytes hidden, and the `MemoryPort` the breakpoint table uses."""

from __future__ import annotations

import numpy as np

from whpx_core.platform.base import Partition, PlatformError
from whpx_core.platform.paging import PagingState
from whpx_core.platform.registers import Reg


class GuestMemoryError(Exception):
    pass


class VmMemory:
    """Implements breakpoints.MemoryPort over a partition; translations use the paging
    state of one vCPU (vCPU 0 unless told otherwise), as the seed did."""

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        self._paging_vcpu = 0

    def paging(self, vcpu: int | None = None) -> PagingState:
        cr0, cr3 = self.partition.vcpu(self._paging_vcpu if vcpu is None else vcpu)\
            .get_registers([Reg.CR0, Reg.CR3])
        assert isinstance(cr0, int) and isinstance(cr3, int)
        return PagingState(cr0, cr3)

    def translate(self, address: int, vcpu: int | None = None) -> int | None:
        gpa = self.partition.vcpu(self._paging_vcpu if vcpu is None else vcpu)\
            .translate_gva(address, self.partition.read_memory)
        if gpa is None:
            return None
        try:
            self.partition.read_memory(gpa, 1)
        except PlatformError:
            return None  # mapped, but not RAM (MMIO)
        return gpa

    def read_byte(self, gpa: int) -> int:
        return self.partition.read_memory(gpa, 1)[0]

    def write_byte(self, gpa: int, value: int) -> bool:
        try:
            self.partition.write_memory(gpa, bytes([value]))
        except PlatformError:
            return False
        return True

    def write_step_byte(self, gpa: int, value: int) -> None:
        self.partition.write_step_byte(gpa, value)

    def swap_bytes(self, gpas: np.ndarray, values: np.ndarray) -> None:
        self.partition.swap_bytes(gpas, values)

    # -- guest-virtual ranges, page by page ------------------------------------------
    def read_virtual(self, address: int, size: int, vcpu: int | None = None) -> bytes:
        if (address & 0xFFF) + size <= 0x1000:  # one page: the common case, kept short
            gpa = self.partition.vcpu(self._paging_vcpu if vcpu is None else vcpu)\
                .translate_gva(address, self.partition.read_memory)
            if gpa is None:
                raise GuestMemoryError(f"address {address:#x} is not mapped")
            try:
                return self.partition.read_memory(gpa, size)
            except PlatformError:
                raise GuestMemoryError(f"address {address:#x} is not RAM") from None
        out = bytearray()
        for va, gpa, chunk in self._pages(address, size, vcpu):
            if gpa is None:
                raise GuestMemoryError(f"address {va:#x} is not mapped")
            out += self.partition.read_memory(gpa, chunk)
        return bytes(out)

    def write_virtual(self, address: int, data: bytes, vcpu: int | None = None) -> None:
        done = 0
        for va, gpa, chunk in self._pages(address, len(data), vcpu):
            if gpa is None:
                raise GuestMemoryError(f"address {va:#x} is not mapped")
            self.partition.write_memory(gpa, data[done : done + chunk])
            done += chunk

    def _pages(self, address: int, size: int, vcpu: int | None):
        cpu = self.partition.vcpu(self._paging_vcpu if vcpu is None else vcpu)
        end = address + size
        while address < end:
            chunk = min(end, (address | 0xFFF) + 1) - address
            gpa = cpu.translate_gva(address, self.partition.read_memory)
            if gpa is not None:
                try:
                    self.partition.read_memory(gpa, chunk)
                except PlatformError:
                    gpa = None
            yield address, gpa, chunk
            address += chunk
