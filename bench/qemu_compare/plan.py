"""What one run measures: sizes for the full and the quick run, metrics and targets."""

from __future__ import annotations

from dataclasses import dataclass

HUGE = 1 << 40  # hot-loop iterations that never end within a measurement


@dataclass(frozen=True)
class Sizes:
    runs: int
    steps_fast: int  # instruction steps on emulated / TCG
    steps_slow: int  # on KVM (kvm_pvm emulates CPL0 code)
    hits: int
    peer_hits_with_others: int  # gdb re-inserts every breakpoint on every resume
    others: int
    breakpoint_counts: tuple[int, ...]
    line_iterations: int
    run_fast: int  # hot-loop iterations for the run-speed rows
    run_slow: int
    dap_cycles: int
    peer_timeout: float  # one gdb scenario
    next_timeout: float  # gdb's `next` over the long line: capped, a lower bound if hit
    # Every QEMU boot under kvm_pvm takes seconds (the BIOS runs emulated): the quick run
    # skips the rows that boot QEMU (kvm) many times.
    all_kvm_peer_rows: bool = True


FULL = Sizes(runs=3, steps_fast=2_000, steps_slow=1_000, hits=2_000, peer_hits_with_others=100,
             others=1_000, breakpoint_counts=(10, 100, 1_000, 10_000), line_iterations=100_000,
             run_fast=10_000_000, run_slow=100_000, dap_cycles=300, peer_timeout=900,
             next_timeout=240)
QUICK = Sizes(runs=1, steps_fast=50, steps_slow=50, hits=50, peer_hits_with_others=10,
              others=100, breakpoint_counts=(10, 100), line_iterations=300,
              run_fast=200_000, run_slow=2_000, dap_cycles=10, peer_timeout=120,
              next_timeout=30, all_kvm_peer_rows=False)

# (ours, theirs): like with like, software emulation and KVM.
PAIRS = (("ours emulated", "QEMU tcg + gdb"), ("ours kvm", "QEMU kvm + gdb"))


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    target: float | None  # ours / theirs (or theirs / ours for times) the issue asks for


def metrics(sizes: Sizes) -> list[Metric]:
    biggest = sizes.breakpoint_counts[-1]
    costs = [Metric(f"set + resume + remove {count:,} breakpoints (s)", False,
                    50 if count == biggest else None)
             for count in sizes.breakpoint_counts if count >= 1_000 or count == biggest]
    return [
        Metric("instruction steps/s", True, 20),
        Metric("breakpoint hits/s", True, 10),
        Metric(f"breakpoint hits/s with {sizes.others:,} others", True, 100),
        Metric("breakpoint hits/s, 2 vCPUs", True, None),
        *costs,
        Metric(f"next over the {sizes.line_iterations:,}-iteration line (s)", False, 250),
        Metric("guest run time alone (s)", False, None),
        Metric("guest run time, debugger attached (s)", False, None),
    ]
