"""The stand-in for WinHvPlatform.dll is strict about what the backend passes it, and a
wrong marshalled value makes the scenario suite fail (so its passing means something).

The whole scenario suite runs on `whp-standin` through the `platform` fixture; here it is
run again, in a subprocess, with one value broken on purpose (WHPX_STANDIN_FAULTS).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from whpx_core.platform.registers import Reg
from whpx_core.platform.whp import registers as wr
from whpx_core.platform.whp.bindings import Hr, ffi
from whpx_core.platform.whp.partition import WhpPlatform
from whpx_core.platform.whp.standin import StandinApi

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def partition():
    made = WhpPlatform(StandinApi()).create_partition(1)
    yield made
    made.close()


def test_misaligned_register_values_are_refused(partition) -> None:
    """The SDK aligns WHV_REGISTER_VALUE to 16 bytes; cffi alone would not."""
    raw = ffi.new("char[]", 16 * 2 + 32)
    aligned_address = (int(ffi.cast("uintptr_t", raw)) + 15) & ~15
    misaligned = ffi.cast("WHV_REGISTER_VALUE *", aligned_address + 8)
    assert int(ffi.cast("uintptr_t", misaligned)) % 16 == 8
    hr = partition.api.WHvGetVirtualProcessorRegisters(
        partition.handle, 0, wr.name_array([wr.NAMES[Reg.RIP]]), 1, misaligned)
    assert hr == Hr.E_INVALIDARG
    aligned = wr.value_array(1)
    assert partition.api.WHvGetVirtualProcessorRegisters(
        partition.handle, 0, wr.name_array([wr.NAMES[Reg.RIP]]), 1, aligned) == Hr.S_OK


def test_a_short_exit_context_buffer_is_refused(partition) -> None:
    buffer = ffi.new("char[]", 256)
    hr = partition.api.WHvRunVirtualProcessor(partition.handle, 0, buffer, 200)
    assert hr == Hr.WHV_E_INSUFFICIENT_BUFFER


def test_an_unknown_partition_handle_is_refused(partition) -> None:
    bogus = ffi.cast("WHV_PARTITION_HANDLE", 0x42)
    assert partition.api.WHvSetupPartition(bogus) == Hr.E_INVALIDARG


def test_registers_round_trip_through_the_c_boundary(partition) -> None:
    vcpu = partition.vcpu(0)
    values = {Reg.RAX: 0x1122334455667788, Reg.RFLAGS: 0x246, Reg.CR3: 0x5000}
    vcpu.set_registers(values)
    assert vcpu.get_registers(values) == list(values.values())


def _suite_with_fault(fault: str, select: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WHPX_STANDIN_FAULTS=fault)
    return subprocess.run(
        # -x: the first failure is the proof; a broken guest may otherwise spin in HLT
        # until a later test's own timeout.
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k",
         f"whp-standin and ({select})", "tests/platform/test_platform_contract.py",
         "tests/debug/test_engine.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fault", ["register-order", "exception-rip"])
def test_a_broken_marshalled_value_fails_the_suite(fault: str) -> None:
    result = _suite_with_fault(fault, "not stateful")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    failed = re.search(r"(\d+) failed", summary)
    assert result.returncode == 1 and failed and int(failed[1]) > 0, result.stdout[-3000:]
    assert f"fault injected: {fault}" in result.stdout  # the summary says what ran


def test_a_symmetric_marshalling_bug_in_the_backend_is_caught(tmp_path: Path) -> None:
    """The stand-in unmarshals with its own code (standin_values.py), so a backend bug
    that its own load/store would undo, table base and limit swapped both ways, still
    fails the suite. Run in a temporary copy of the project with the bug planted."""
    import shutil

    copy = tmp_path / "project"
    for name in ("whpx_core", "tests", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns(
                "__pycache__", "node_modules"))
        else:
            shutil.copy(source, copy / name)
    registers = copy / "whpx_core/platform/whp/registers.py"
    text = registers.read_text()
    store = "slot.Table.Base, slot.Table.Limit = value.base, value.limit"
    load = "return Table(slot.Table.Base, slot.Table.Limit)"
    assert store in text and load in text
    registers.write_text(text.replace(store, "slot.Table.Base, slot.Table.Limit = "
                                             "value.limit, value.base")
                         .replace(load, "return Table(slot.Table.Limit, slot.Table.Base)"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k",
         "whp-standin", "tests/platform/test_platform_contract.py"],
        cwd=copy, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-3000:]
    # -x: one test fails (or errors in its setup, where the registers are first set).
    assert re.search(r"\b1 (failed|error)\b", result.stdout.splitlines()[-1]), \
        result.stdout[-3000:]
    assert str(copy / "whpx_core") in result.stdout  # the copy with the bug ran
