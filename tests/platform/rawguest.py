"""A bare partition with the boot state and hand-written machine code, for testing the
platform interface itself without the machine layer's devices."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from whpx_core.machine import boot
from whpx_core.machine.memory import MIB, allocate_ram
from whpx_core.platform.base import Partition, Platform
from whpx_core.platform.registers import Reg, Table

CODE = 0x100000
IDT = 0x9000


@dataclass
class RecordingIo:
    """IoHandler that records port writes and answers reads from a table."""

    writes: list[tuple[int, int, int, int]] = field(default_factory=list)
    mmio_writes: list[tuple[int, int, int, int]] = field(default_factory=list)
    port_values: dict[int, int] = field(default_factory=dict)
    mmio_values: dict[int, int] = field(default_factory=dict)

    def port_read(self, vcpu: int, port: int, size: int) -> int:
        return self.port_values.get(port, 0xFFFFFFFF) & ((1 << 8 * size) - 1)

    def port_write(self, vcpu: int, port: int, size: int, value: int) -> None:
        self.writes.append((vcpu, port, size, value))

    def mmio_read(self, vcpu: int, gpa: int, size: int) -> int:
        return self.mmio_values.get(gpa, 0)

    def mmio_write(self, vcpu: int, gpa: int, size: int, value: int) -> None:
        self.mmio_writes.append((vcpu, gpa, size, value))


class RawGuest:
    def __init__(self, platform: Platform, cpus: int = 1, memory_mib: int = 4) -> None:
        self.ram_size = memory_mib * MIB
        self.partition: Partition = platform.create_partition(cpus)
        self.ram = allocate_ram(self.ram_size)
        self.partition.map_memory(0, self.ram)
        self.io = RecordingIo()
        self.partition.set_io_handler(self.io)
        boot.build_boot_structures(self.partition.write_memory, self.ram_size)
        for i in range(cpus):
            self.vcpu(i).set_registers(boot.initial_registers(i, cpus, self.ram_size, CODE))

    def vcpu(self, index: int = 0):
        return self.partition.vcpu(index)

    def load(self, code: bytes, at: int = CODE) -> None:
        self.partition.write_memory(at, code)

    def install_idt(self, handlers: dict[int, int]) -> None:
        """Interrupt gates for the given vectors; IDTR set on every vCPU."""
        table = bytearray(256 * 16)
        for vector, address in handlers.items():
            low = (address & 0xFFFF) | boot.CODE_SELECTOR << 16 | 0x8E << 40 | \
                ((address >> 16) & 0xFFFF) << 48
            struct.pack_into("<QQ", table, vector * 16, low, address >> 32)
        self.partition.write_memory(IDT, bytes(table))
        for i in range(self.partition.vcpu_count):
            self.vcpu(i).set(Reg.IDTR, Table(IDT, len(table) - 1))

    def read_u64(self, gpa: int) -> int:
        return struct.unpack("<Q", self.partition.read_memory(gpa, 8))[0]

    def close(self) -> None:
        self.partition.close()
