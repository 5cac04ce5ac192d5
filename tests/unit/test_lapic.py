from __future__ import annotations

from whpx_core.machine.devices import lapic
from whpx_core.platform.emulated.scheduler import VirtualClock


def test_divide_configuration_decoding():
    assert [lapic.divide_value(c) for c in (0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB)] == \
        [2, 4, 8, 16, 32, 64, 128, 1]


def test_periodic_timer_raises_its_vector_each_period():
    clock = VirtualClock()
    raised: list[tuple[int, int]] = []
    apic = lapic.LocalApic(0, clock, lambda vector: raised.append((clock.now_ns(), vector)))
    apic.write(lapic.SVR, 0x1FF)
    apic.write(lapic.DIVIDE_CONFIG, 0xB)  # divide by 1: 10 ns per count
    apic.write(lapic.LVT_TIMER, 0x20 | 1 << 17)
    apic.write(lapic.INITIAL_COUNT, 1000)  # 10 us
    clock.advance(5_000)
    clock.fire_due()
    assert raised == []
    assert apic.read(lapic.CURRENT_COUNT) == 500
    clock.advance(30_000)
    clock.fire_due()
    assert raised == [(35_000, 0x20)] * 3


def test_masked_or_disabled_timer_raises_nothing():
    clock = VirtualClock()
    raised: list[int] = []
    apic = lapic.LocalApic(1, clock, raised.append)
    apic.write(lapic.LVT_TIMER, 0x20 | 1 << 16)
    apic.write(lapic.SVR, 0x1FF)
    apic.write(lapic.INITIAL_COUNT, 10)
    clock.advance(10_000)
    clock.fire_due()
    assert raised == []
    assert apic.read(lapic.ID) == 1 << 24
