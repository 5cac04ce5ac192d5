"""bench/dwarf_open.py in its quick mode, so the benchmark cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_dwarf_open_quick_mode_runs() -> None:
    result = subprocess.run([sys.executable, str(BENCH / "dwarf_open.py"), "--quick"],
                            capture_output=True, text=True, timeout=600, cwd=BENCH)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "x baseline" in result.stdout and "open + first breakpoint" in result.stdout
