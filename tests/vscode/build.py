"""Build and package the VS Code extension (tsc + vsce), as a user or CI would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXTENSION = Path(__file__).resolve().parents[2] / "vscode-extension"


def package(out_dir: Path) -> Path:
    """`npm run package` (tsc, then vsce package) into out_dir; returns the .vsix."""
    npm = shutil.which("npm")
    assert npm, "npm is not installed (scripts/setup installs it)"
    assert (EXTENSION / "node_modules" / "@vscode" / "vsce").is_dir(), \
        "run scripts/setup (npm ci in vscode-extension)"
    vsix = out_dir / "dap-whpx.vsix"
    result = subprocess.run([npm, "run", "package", "--", "--out", str(vsix)], cwd=EXTENSION,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return vsix
