"""Serial execution of emulated vCPUs, and the virtual clock that goes with it.

Unicorn's LOCK prefix is not atomic across engines running in parallel, and an
asynchronous `emu_stop` can re-execute a read-modify-write instruction
(platform-facts §2). So at most one vCPU executes guest code at any time: each vCPU
thread takes the baton, runs a `count=`-bounded slice, and hands the baton to the next
waiting vCPU in round-robin order. Time is virtual: one instruction is one nanosecond,
and when every vCPU in `run()` is halted, time jumps to the next timer deadline.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from whpx_core.platform.base import Clock


@dataclass(order=True)
class _Timer:
    deadline: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock(Clock):
    def __init__(self) -> None:
        self._now = 0
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def call_at(self, deadline_ns: int, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(deadline_ns, next(self._seq), callback)
        with self._lock:
            heapq.heappush(self._timers, timer)
        return timer

    def advance(self, ns: int) -> None:
        self._now += ns

    def next_deadline(self) -> int | None:
        with self._lock:
            while self._timers and self._timers[0].cancelled:
                heapq.heappop(self._timers)
            return self._timers[0].deadline if self._timers else None

    def warp_to_next_deadline(self) -> bool:
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self._now = max(self._now, deadline)
        return True

    def fire_due(self) -> None:
        """Run every callback that is due, including periodic ones re-armed meanwhile."""
        timers = self._timers
        if not timers or timers[0].deadline > self._now:
            # The usual case, decided without the lock. A timer added meanwhile by
            # another thread (a device on a vCPU that holds the slot, or fired by a
            # sleeping vCPU) is not lost: the next fire_due sees it.
            return
        while True:
            with self._lock:
                if not self._timers or self._timers[0].deadline > self._now:
                    return
                timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()


class Baton:
    """Round-robin ownership of the one execution slot; also the partition's wake-up
    condition (interrupts, cancels and timers all notify it)."""

    def __init__(self) -> None:
        # Held directly where no waiting is involved: `with lock` costs a third of
        # `with cond` (Condition.__enter__ is Python), and this runs around every step.
        # Re-entrant: timer callbacks fired under it may request interrupts.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._holder: int | None = None
        self._last = -1
        self._waiting: set[int] = set()
        self.running: set[int] = set()  # inside run() and not halted
        self.sleepers = 0  # halted vCPUs waiting on `cond` for an interrupt

    def _next(self) -> int:
        """Whose turn it is: round-robin over every runnable vCPU (in run(), not halted),
        not only over those whose host threads are already waiting here, so which vCPU
        runs next never depends on how fast a host thread gets here."""
        candidates = self.running | self._waiting
        after = [i for i in candidates if i > self._last]
        return min(after) if after else min(candidates)

    def acquire(self, index: int) -> None:
        with self.lock:
            running = self.running
            running.add(index)
            if self._holder is None and ((len(running) == 1 and not self._waiting) or
                                         self._next() == index):
                self._holder = index  # its turn already: the common case when stepping
                return
            self._waiting.add(index)
            while self._holder is not None or self._next() != index:
                self.cond.wait()
            self._waiting.discard(index)
            self._holder = index

    def enter_alone(self, index: int) -> bool:
        """Take the slot for one step when no vCPU is runnable or waiting: there is no
        turn to respect then, so `index` does not join the round-robin (True;
        `leave_alone` after). False, taking nothing, otherwise. The lock is not held
        while the step runs: its hooks may wait on threads that need it (cancel,
        request_interrupt)."""
        with self.lock:
            if self._holder is None and not self.running and not self._waiting:
                self._holder = index
                return True
            return False

    def leave_alone(self, index: int) -> None:
        with self.lock:
            self._holder = None
            self._last = index
            if self._waiting or self.sleepers:
                self.cond.notify_all()

    def release(self, index: int, *, leaving: bool = False) -> None:
        """Hand the slot on; `leaving`: `index` also leaves run() (see leave())."""
        with self.lock:
            self._holder = None
            self._last = index
            if leaving:
                self.running.discard(index)
                if self._waiting or self.sleepers:
                    self.cond.notify_all()
            elif self._waiting:
                self.cond.notify_all()

    def leave(self, index: int) -> None:
        """`index` left run(): halted vCPUs may now be the only ones, so time can jump."""
        with self.cond:
            self.running.discard(index)
            self.cond.notify_all()  # its turn passes on; halted vCPUs may warp time

    def wake_all(self) -> None:
        with self.cond:
            self.cond.notify_all()
