"""bench/vs_qemu.py in its quick mode: QEMU + gdb and our engine both really run the qbench
guest, and the table, JSON and plot come out (the numbers are not judged here: speed is
read in the full run's table, never asserted in tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _peer_tools_or_skip() -> None:
    missing = [t for t in ("qemu-system-x86_64", "gdb") if shutil.which(t) is None]
    if missing and os.environ.get("CI"):
        pytest.fail(f"{missing} missing: scripts/setup installs them for CI")
    if missing:
        pytest.skip(f"{missing} not installed (scripts/setup installs them)")


def test_quick_run_measures_ours_and_qemu_gdb(tmp_path):
    _peer_tools_or_skip()
    done = subprocess.run([sys.executable, str(BENCH / "vs_qemu.py"), "--quick",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "vs_qemu.json").read_text())
    rows = results["rows"]
    for system in ("ours emulated", "QEMU tcg + gdb"):
        for metric in ("instruction steps/s", "breakpoint hits/s"):
            assert rows[metric][system]["median"] > 0, (metric, system, rows[metric])
        # Stepping PUSHF: the guest stored an RFLAGS image (bit 1 is always set).
        assert rows["TF seen by the guest after stepping PUSHF"][system]["image"] & 0x2
    ratio = results["ratios"]["instruction steps/s"]["ours emulated vs QEMU tcg + gdb"]
    assert ratio["ratio"] > 0
    assert "| instruction steps/s |" in (tmp_path / "vs_qemu.md").read_text()
    assert (tmp_path / "vs_qemu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qbench_elf_boots_under_qemu_and_under_our_vmm():
    """The premise of the comparison: one ELF, both loaders, same output."""
    _peer_tools_or_skip()
    sys.path.insert(0, str(BENCH))
    from qemu_compare import guest, peer

    elf = guest.patched(guest.build(), {"qb_hot_iterations": 10, "qb_line_iterations": 10})
    assert guest.file_layout_is_contiguous(elf)
    assert peer.run_alone(peer.peers_present()["tcg"], elf, timeout=60) > 0  # checks output
    ours = subprocess.run([sys.executable, "-m", "whpx_core", "run", str(elf),
                           "--platform", "emulated"],
                          capture_output=True, text=True, timeout=60, cwd=BENCH.parent)
    assert ours.returncode == 0, ours.stderr
    assert "qbench: done" in ours.stdout
