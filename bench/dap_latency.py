"""What a DAP client feels: adapter start to `initialize` response, and the cycle a
client runs after every instruction step (next -> stopped -> threads -> stackTrace ->
scopes -> variables), median and p95, over real pipes.

    python bench/dap_latency.py [--quick] [--platform emulated]

Baseline in the same run: a bare `threads` request round trip, the protocol's floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import build_guest, save

from tests.dap.client import DapClient


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def startup(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client = DapClient.spawn()
        client.request("initialize", {"adapterID": "whpx"})
        times.append(time.perf_counter() - started)
        client.request("disconnect", {})
        client.close()
    return times


def step_cycles(platform: str, cycles: int) -> tuple[list[float], list[float]]:
    # Schema validation is the test client's work, not the adapter's: off while timing
    # (every test validates every message).
    client = DapClient.spawn(validate_messages=False)
    try:
        client.start(build_guest("spin"), stopOnEntry=True, platform=platform)
        client.request("configurationDone")
        client.wait_event("stopped")
        floor, cycle = [], []
        for _ in range(cycles):
            started = time.perf_counter()
            client.request("threads")
            floor.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.request("next", {"threadId": 1, "granularity": "instruction"})
            client.wait_event("stopped")
            client.request("threads")
            frames = client.request("stackTrace", {"threadId": 1})["body"]["stackFrames"]
            scopes = client.request("scopes", {"frameId": frames[0]["id"]})["body"]["scopes"]
            client.request("variables",
                           {"variablesReference": scopes[0]["variablesReference"]})
            cycle.append(time.perf_counter() - started)
        assert client.problems == [], client.problems[:2]
        return floor, cycle
    finally:
        client.request("disconnect", {})
        client.close()


def describe(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values) * 1000,
            "p95_ms": percentile(values, 0.95) * 1000,
            "min_ms": min(values) * 1000, "max_ms": max(values) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--platform", default="emulated")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-c", "import dap_whpx.server"], check=True)  # warm caches
    start = describe(startup(2 if args.quick else 10))
    floor, cycle = step_cycles(args.platform, 20 if args.quick else 300)
    results = {"platform": args.platform, "start to initialize response": start,
               "threads round trip (floor)": describe(floor), "step cycle": describe(cycle)}
    for name, stats in results.items():
        if isinstance(stats, dict):
            print(f"{name:32} median {stats['median_ms']:7.2f} ms   p95 {stats['p95_ms']:7.2f}"
                  f" ms   (min {stats['min_ms']:.2f}, max {stats['max_ms']:.2f})")
    print("targets: start < 300 ms; step cycle median < 5 ms, p95 < 20 ms")
    if not args.quick:
        print(f"saved {save('dap_latency', results)}")


if __name__ == "__main__":
    main()
