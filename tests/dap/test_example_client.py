"""The example project (examples/smp-guest) under DebugClient (npm
@vscode/debugadapter-testsupport) with node --test: machine level (example.test.mjs) and
source level (example-source.test.mjs) and two races that were bugs once
(example-races.test.mjs).

The example is copied and built with its own build.sh, as a user starting from it would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def example_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("example") / "smp-guest"
    shutil.copytree(ROOT / "examples" / "smp-guest", folder,
                    ignore=shutil.ignore_patterns("build"))
    result = subprocess.run(["sh", "build.sh"], cwd=folder, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / "build" / "guest.elf"


def run_node_tests(example_elf: Path, *files: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup installs it)"
    assert (NODE_DIR / "node_modules" / "@vscode" / "debugadapter-testsupport").is_dir(), \
        "run scripts/setup (npm install in tests/dap/node)"
    env = dict(os.environ, WHPX_PYTHON=sys.executable, WHPX_EXAMPLE_ELF=str(example_elf),
               WHPX_PLATFORM="emulated", PYTHONPATH=str(ROOT))
    return subprocess.run([node, "--test", "--test-reporter=tap", *files], cwd=NODE_DIR,
                          env=env, capture_output=True, text=True, timeout=600)


def test_example_machine_and_source_level(example_elf: Path) -> None:
    result = run_node_tests(example_elf, "example.test.mjs", "example-source.test.mjs")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "# pass 4" in result.stdout and "# fail 0" in result.stdout, result.stdout[-2000:]


def test_example_races(example_elf: Path) -> None:
    result = run_node_tests(example_elf, "example-races.test.mjs")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
