"""The one place that routes the guest's port and MMIO accesses to devices.

It implements the platform's `IoHandler`; every platform calls it synchronously on the
vCPU's thread.
"""

from __future__ import annotations

from whpx_core.machine.devices import exit_port, lapic, serial
from whpx_core.machine.devices.exit_port import ExitPort
from whpx_core.machine.devices.lapic import LocalApic
from whpx_core.machine.devices.serial import Serial


class IoBus:
    def __init__(self, serial_port: Serial, exit: ExitPort, apics: list[LocalApic]) -> None:
        self._serial = serial_port
        self._exit = exit
        self._apics = apics

    def port_read(self, vcpu: int, port: int, size: int) -> int:
        if port in serial.PORTS:
            return self._serial.read(port)
        return (1 << (8 * size)) - 1  # nothing there: the bus floats high

    def port_write(self, vcpu: int, port: int, size: int, value: int) -> None:
        if port in serial.PORTS:
            self._serial.write(port, value)
        elif port == exit_port.PORT:
            self._exit.write(value)

    def mmio_read(self, vcpu: int, gpa: int, size: int) -> int:
        if lapic.BASE <= gpa < lapic.BASE + lapic.SIZE:
            return self._apics[vcpu].read(gpa - lapic.BASE) & ((1 << (8 * size)) - 1)
        return (1 << (8 * size)) - 1

    def mmio_write(self, vcpu: int, gpa: int, size: int, value: int) -> None:
        if lapic.BASE <= gpa < lapic.BASE + lapic.SIZE:
            self._apics[vcpu].write(gpa - lapic.BASE, value)
