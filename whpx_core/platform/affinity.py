"""Keeping the threads that hand a VM back and forth on one CPU.

Every stop and every resume is a hand-over between threads: the client's (the one that
calls `resume`, the one that waits for the stop) and a vCPU thread. Waking a thread that
sleeps on another CPU costs an inter-processor interrupt, which in a virtual machine
(such as the CI's) goes through the host: about 20 µs per wake-up here, twice per
breakpoint hit. On one CPU the woken thread simply runs when the waker blocks:
`python bench/engine_speed.py` measured 142 µs per hit spread over two CPUs and 66 µs
on one.

The engine pins only where one thing executes at a time anyway: a VM with one vCPU, or
any VM on the emulated platform (its baton, `Capabilities.serial_execution`). KVM vCPUs
of an SMP guest run in parallel, and pinning them would cost more than it saves; with one
vCPU, KVM hits rose from 4,800/s to 7,000/s here. Linux only (`os.sched_setaffinity` on
thread ids); elsewhere a no-op. `WHPX_PIN_THREADS=0` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

_lock = threading.Lock()
_holders = 0
_original: set[int] | None = None  # the process's CPUs before the first pin


def available() -> bool:
    return hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task") and \
        os.environ.get("WHPX_PIN_THREADS", "1") != "0"


def _threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _set_all(cpus: set[int]) -> None:
    for tid in _threads():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(tid, cpus)


def _current_cpu(allowed: set[int]) -> int:
    try:
        cpu = ctypes.CDLL(None).sched_getcpu()
    except (OSError, AttributeError):
        cpu = -1
    return cpu if cpu in allowed else max(allowed)


class Pin:
    """Every thread of the process on one CPU (the caller's), until `release()`; threads
    started meanwhile inherit it. Pins nest: the last release gives every thread the
    process's CPUs from before the first pin (a thread's own narrower mask is not kept).
    Every thread means every one: another engine's too, say an SMP KVM one living in the
    same process (the adapter runs one VM per process; the test suite runs engines one
    after the other)."""

    def __init__(self) -> None:
        global _holders, _original
        self.active = available()
        self._released = False
        if not self.active:
            return
        with _lock:
            if _holders == 0:
                _original = os.sched_getaffinity(0)
                if len(_original) > 1:
                    _set_all({_current_cpu(_original)})
            _holders += 1

    def release(self) -> None:
        global _holders
        with _lock:
            if not self.active or self._released:
                return
            self._released = True
            _holders -= 1
            if _holders == 0 and _original is not None and len(_original) > 1:
                _set_all(_original)
