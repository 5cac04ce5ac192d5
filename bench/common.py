"""Shared helpers for the benchmarks: building guests, platforms present, results."""

from __future__ import annotations

import json
import os
import platform as host
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
# The adapter processes the benchmarks start must import this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def build_guest(name: str) -> Path:
    from tests.guests import build

    return build.build_guest(name, ROOT / "build" / "guests")


def platforms_present() -> dict[str, object]:
    """name -> Platform, or name -> reason string when not usable here."""
    from whpx_core.platform.base import PlatformUnavailable
    from whpx_core.platform.choice import choose

    found: dict[str, object] = {}
    for name in ("emulated", "kvm"):
        try:
            found[name] = choose(name).platform
        except PlatformUnavailable as error:
            found[name] = str(error)
    return found


def repeat(fn: Callable[[], float], runs: int) -> dict[str, float]:
    values = [fn() for _ in range(runs)]
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def machine_description() -> str:
    return f"{host.node()} {host.machine()} {host.system()} {host.release()}, " \
        f"Python {host.python_version()}"


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine_description(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
