"""Every benchmark runs in its quick mode, so none of them can rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["spin_speed.py", "engine_speed.py", "dap_latency.py",
                                    "line_step_speed.py"])
def test_benchmark_quick_mode_runs(script):
    result = subprocess.run([sys.executable, str(BENCH / script), "--quick"],
                            capture_output=True, text=True, timeout=600, cwd=BENCH)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "/s" in result.stdout or " ms" in result.stdout
