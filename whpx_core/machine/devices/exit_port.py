"""The debug-exit port: a write of v ends the VM with exit code v."""

from __future__ import annotations

from collections.abc import Callable

PORT = 0xF4


class ExitPort:
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def write(self, value: int) -> None:
        self._on_exit(value)
