"""platform/affinity.py: every thread of the process on one CPU while pinned, the CPUs
given back when the last pin is released."""

from __future__ import annotations

import os
import threading

import pytest

from whpx_core.platform import affinity

pytestmark = pytest.mark.skipif(
    not affinity.available() or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux thread affinity and at least two CPUs")


def _cpus_of(thread: threading.Thread) -> set[int]:
    assert thread.native_id is not None
    return os.sched_getaffinity(thread.native_id)


def test_pin_holds_existing_and_new_threads_on_one_cpu_and_release_restores():
    original = os.sched_getaffinity(0)
    release = threading.Event()
    before = threading.Thread(target=release.wait)
    before.start()
    first = affinity.Pin()
    second = affinity.Pin()  # pins nest
    after = threading.Thread(target=release.wait)
    after.start()
    try:
        pinned = os.sched_getaffinity(0)
        assert len(pinned) == 1 and pinned <= original
        assert _cpus_of(before) == pinned and _cpus_of(after) == pinned
        first.release()
        first.release()  # twice is once
        assert os.sched_getaffinity(0) == pinned  # `second` still holds it
        second.release()
        assert os.sched_getaffinity(0) == original
        assert _cpus_of(before) == original and _cpus_of(after) == original
    finally:
        release.set()
        before.join()
        after.join()


def test_whpx_pin_threads_0_leaves_threads_alone(monkeypatch):
    monkeypatch.setenv("WHPX_PIN_THREADS", "0")
    original = os.sched_getaffinity(0)
    pin = affinity.Pin()
    assert not pin.active and os.sched_getaffinity(0) == original
    pin.release()
