"""A local APIC reduced to its timer (xAPIC MMIO layout), one per vCPU.

Why a local APIC rather than a PIT: it is per-vCPU, it is what every SMP guest already
programs, and WHPX and KVM both offer one in the hypervisor, so a guest written against
this one runs unchanged there. Time comes from the partition clock (virtual on the
emulated platform), so deadlines are exact instruction counts there.
"""

from __future__ import annotations

from collections.abc import Callable

from whpx_core.platform.base import Clock, TimerHandle

BASE = 0xFEE00000
SIZE = 0x1000
TIMER_HZ = 100_000_000  # 100 MHz bus clock before the divider
_NS_PER_TICK = 1_000_000_000 // TIMER_HZ

ID = 0x20
VERSION = 0x30
TPR = 0x80
EOI = 0xB0
SVR = 0xF0
LVT_TIMER = 0x320
INITIAL_COUNT = 0x380
CURRENT_COUNT = 0x390
DIVIDE_CONFIG = 0x3E0

_SVR_ENABLE = 1 << 8
_LVT_MASKED = 1 << 16
_LVT_PERIODIC = 1 << 17
_VERSION_VALUE = 0x0005_0014  # version 0x14, 6 LVT entries


def divide_value(config: int) -> int:
    """Decode the divide configuration register (bits 0, 1, 3)."""
    code = (config & 0x3) | ((config >> 1) & 0x4)
    return 1 if code == 0x7 else 2 << code


class LocalApic:
    def __init__(self, index: int, clock: Clock, raise_irq: Callable[[int], None]) -> None:
        self._index = index
        self._clock = clock
        self._raise_irq = raise_irq
        self._regs: dict[int, int] = {SVR: 0xFF, LVT_TIMER: _LVT_MASKED, DIVIDE_CONFIG: 0}
        self._deadline = 0
        self._period_ns = 0
        self._timer: TimerHandle | None = None

    def read(self, offset: int) -> int:
        if offset == ID:
            return self._index << 24
        if offset == VERSION:
            return _VERSION_VALUE
        if offset == CURRENT_COUNT:
            if self._timer is None:
                return 0
            remaining = self._deadline - self._clock.now_ns()
            if remaining <= 0 and self._regs[LVT_TIMER] & _LVT_PERIODIC and self._period_ns:
                # On host time the expiry callback may run late; periodic hardware has
                # reloaded already, so count within the current period.
                remaining %= self._period_ns
            remaining = max(0, remaining)
            return remaining // (_NS_PER_TICK * divide_value(self._regs[DIVIDE_CONFIG]))
        return self._regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if offset in (ID, VERSION, CURRENT_COUNT):
            return  # read-only here
        if offset == EOI:
            return  # interrupts are edge-like in this model: nothing in service to clear
        self._regs[offset] = value
        if offset == INITIAL_COUNT:
            self._arm(value)

    def _arm(self, count: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if count == 0:
            return
        divide = divide_value(self._regs[DIVIDE_CONFIG])
        self._period_ns = count * divide * _NS_PER_TICK
        self._deadline = self._clock.now_ns() + self._period_ns
        self._timer = self._clock.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        lvt = self._regs[LVT_TIMER]
        if self._regs[SVR] & _SVR_ENABLE and not lvt & _LVT_MASKED:
            self._raise_irq(lvt & 0xFF)
        if lvt & _LVT_PERIODIC:
            self._deadline += self._period_ns
            self._timer = self._clock.call_at(self._deadline, self._expire)
        else:
            self._timer = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
