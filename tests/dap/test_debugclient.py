"""The adapter under DebugClient (npm @vscode/debugadapter-testsupport) with node --test.

scripts/setup installs the npm package into tests/dap/node; without node or the package
this test fails with the reason rather than skipping: it is part of the contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NODE_DIR = Path(__file__).parent / "node"


def test_debugclient_suite_passes(guests):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup installs it)"
    assert (NODE_DIR / "node_modules" / "@vscode" / "debugadapter-testsupport").is_dir(), \
        "run scripts/setup (npm install in tests/dap/node)"
    env = dict(os.environ, WHPX_PYTHON=sys.executable,
               WHPX_GUESTS=str(Path(guests["hello"]).parent), WHPX_PLATFORM="emulated",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([node, "--test", "adapter.test.mjs"], cwd=NODE_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# pass 3" in result.stdout and "# fail 0" in result.stdout, result.stdout[-2000:]
