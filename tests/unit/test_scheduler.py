from __future__ import annotations

import threading

from whpx_core.platform.emulated.scheduler import Baton, VirtualClock


def test_virtual_clock_fires_in_deadline_order_and_skips_cancelled():
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_at(30, lambda: fired.append("c"))
    clock.call_at(10, lambda: fired.append("a"))
    clock.call_at(20, lambda: fired.append("b")).cancel()
    assert clock.next_deadline() == 10
    clock.advance(25)
    clock.fire_due()
    assert fired == ["a"]
    assert clock.warp_to_next_deadline() and clock.now_ns() == 30
    clock.fire_due()
    assert fired == ["a", "c"]
    assert not clock.warp_to_next_deadline()


def test_baton_serialises_and_rotates():
    baton = Baton()
    order: list[int] = []
    inside = [0]
    lock = threading.Lock()

    def worker(index: int) -> None:
        for _ in range(50):
            baton.acquire(index)
            with lock:
                inside[0] += 1
                assert inside[0] == 1, "two holders at once"
            order.append(index)
            with lock:
                inside[0] -= 1
            baton.release(index)
        baton.leave(index)  # as run() does on its way out

    with baton.cond:  # all three runnable before any runs, as vCPUs in run() are
        baton.running.update(range(3))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in reversed(threads):  # host start order must not matter
        thread.start()
    for thread in threads:
        thread.join(30)
    # Strict round-robin over the runnable vCPUs, however the host schedules threads.
    assert order == [0, 1, 2] * 50
