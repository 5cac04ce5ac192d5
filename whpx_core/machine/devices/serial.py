"""A 16550-style UART reduced to what a guest needs to print: THR and LSR."""

from __future__ import annotations

from collections.abc import Callable

COM1 = 0x3F8
PORTS = range(COM1, COM1 + 8)
_THR = 0
_LSR = 5
_LSR_THR_EMPTY = 0x20
_LSR_TRANSMITTER_EMPTY = 0x40


class Serial:
    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self._on_output = on_output

    def read(self, port: int) -> int:
        if port - COM1 == _LSR:
            return _LSR_THR_EMPTY | _LSR_TRANSMITTER_EMPTY  # always ready to send
        return 0

    def write(self, port: int, value: int) -> None:
        if port - COM1 == _THR:
            self._on_output(bytes([value & 0xFF]))
