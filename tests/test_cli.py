"""`python -m whpx_core run` end to end, as a user runs it: real processes, real guests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "whpx_core", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_hello_output_and_exit_code(guests):
    result = cli("run", str(guests["hello"]), "--platform", "emulated")
    assert result.stdout == "Hello from dap-whpx guest!\n"
    assert result.returncode == 42
    assert "platform: emulated" in result.stderr


def test_auto_names_the_platform_it_picked(guests):
    result = cli("run", str(guests["hello"]))
    assert result.returncode == 42
    assert "platform:" in result.stderr


def test_smp_on_four_cpus(guests):
    result = cli("run", str(guests["smp"]), "--cpus", "4", "--platform", "emulated")
    assert result.returncode == 0, result.stderr
    assert "smp: 4 cpus" in result.stdout


def _bad(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_not_an_elf(tmp_path: Path):
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"MZ this is not an elf" * 10)
    _bad(cli("run", str(junk), "--platform", "emulated"), "not an ELF")


def test_missing_file(tmp_path: Path):
    _bad(cli("run", str(tmp_path / "nope.elf"), "--platform", "emulated"), "cannot read")


def test_truncated_elf(guests, tmp_path: Path):
    truncated = tmp_path / "truncated.elf"
    truncated.write_bytes(Path(guests["hello"]).read_bytes()[:200])
    _bad(cli("run", str(truncated), "--platform", "emulated"), "truncated")


def test_elf32_is_refused(guests, tmp_path: Path):
    data = bytearray(Path(guests["hello"]).read_bytes())
    data[4] = 1  # EI_CLASS = ELFCLASS32
    path = tmp_path / "elf32.elf"
    path.write_bytes(data)
    _bad(cli("run", str(path), "--platform", "emulated"), "32-bit")


def test_wrong_machine_is_refused(guests, tmp_path: Path):
    data = bytearray(Path(guests["hello"]).read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    path = tmp_path / "arm.elf"
    path.write_bytes(data)
    _bad(cli("run", str(path), "--platform", "emulated"), "not x86-64")


def test_segment_outside_ram(guests, tmp_path: Path):
    _bad(cli("run", str(guests["hello"]), "--platform", "emulated", "--memory", "1"),
         "memory must be at least")


def test_too_many_cpus(guests):
    _bad(cli("run", str(guests["hello"]), "--platform", "emulated", "--cpus", "500"), "cpus")


def test_unknown_platform(guests):
    _bad(cli("run", str(guests["hello"]), "--platform", "vmware"), "invalid choice")


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows message")
def test_whp_unavailable_here_says_why(guests):
    _bad(cli("run", str(guests["hello"]), "--platform", "whp"), "Windows")
