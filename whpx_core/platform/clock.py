"""Host monotonic time, with one timer thread per partition.

A hardware guest runs in real time, so the partition's clock is `time.monotonic_ns()`;
`call_at` callbacks (device timers raising interrupts) run on a single daemon thread
ordered by a heap, so callbacks never run concurrently with each other.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from whpx_core.platform.base import Clock


class _Timer:
    __slots__ = ("callback", "canceled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.canceled = False

    def cancel(self) -> None:
        # A flag, not a heap removal: the heap entry is dropped when it comes due.
        self.canceled = True


class MonotonicClock(Clock):
    def __init__(self, name: str = "host-timer") -> None:
        self._name = name
        self._heap: list[tuple[int, int, _Timer]] = []
        self._seq = itertools.count()  # ties on the deadline keep insertion order
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def call_at(self, deadline_ns: int, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        with self._cond:
            if self._closed:
                raise RuntimeError("clock is closed")
            heapq.heappush(self._heap, (deadline_ns, next(self._seq), timer))
            if self._thread is None:
                # Started lazily: most partitions never use a timer.
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return timer

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait_ns = self._heap[0][0] - self.now_ns()
                        if wait_ns <= 0:
                            break
                        self._cond.wait(wait_ns / 1e9)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, timer = heapq.heappop(self._heap)
            if not timer.canceled:
                timer.callback()  # outside the lock: a callback may schedule the next timer

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
