"""`auto` picks WHPX on Windows when the capability query says the hypervisor is there,
and otherwise falls back with how to enable the feature. Unit tests of the choice layer:
Windows is simulated (sys.platform and the DLL loader), the capability query is the
backend's own code answered by the stand-in."""

from __future__ import annotations

import sys

import pytest

from whpx_core.platform import choice
from whpx_core.platform.whp import partition
from whpx_core.platform.whp.standin import StandinApi


class _NoHypervisor(StandinApi):
    def _WHvGetCapability(self, code: int, buffer, size: int, written) -> int:
        result = super()._WHvGetCapability(code, buffer, size, written)
        partition.ffi.cast("WINBOOL *", buffer)[0] = 0
        return result


@pytest.fixture
def windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    return monkeypatch


def test_auto_picks_whp_when_the_hypervisor_is_present(windows) -> None:
    windows.setattr(partition, "DllApi", StandinApi)
    chosen = choice.choose("auto")
    assert isinstance(chosen.platform, partition.WhpPlatform)
    assert chosen.note is None


def test_auto_falls_back_and_says_how_to_enable_the_feature(windows) -> None:
    windows.setattr(partition, "DllApi", _NoHypervisor)
    chosen = choice.choose("auto")
    assert not isinstance(chosen.platform, partition.WhpPlatform)
    assert chosen.note is not None
    assert "Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform" in chosen.note


def test_whp_by_name_without_the_dll_says_what_is_missing(windows) -> None:
    def missing() -> None:
        raise OSError("cannot load library 'WinHvPlatform.dll'")

    windows.setattr(partition, "DllApi", missing)
    with pytest.raises(choice.PlatformUnavailable, match="HypervisorPlatform"):
        choice.choose("whp")


def test_elsewhere_whp_is_unavailable_with_the_reason() -> None:
    if sys.platform == "win32":
        pytest.skip("this is Windows")
    with pytest.raises(choice.PlatformUnavailable, match="Windows"):
        choice.choose("whp")


def test_the_capability_query_crosses_the_c_boundary() -> None:
    assert partition.hypervisor_present(StandinApi())
    assert not partition.hypervisor_present(_NoHypervisor())


def test_run_on_simulated_windows_boots_the_guest_on_whp(windows, guests, capsys) -> None:
    """`python -m whpx_core run` with the default `auto`, the WHv functions answered by
    the stand-in: the hello guest runs to its exit code through the WHPX backend."""
    from whpx_core import cli

    windows.setattr(partition, "DllApi", StandinApi)
    code = cli.main(["run", str(guests["hello"])])
    out, err = capsys.readouterr()
    assert "platform: whp over the Linux stand-in" in err
    assert out == "Hello from dap-whpx guest!\n"
    assert code == 42
