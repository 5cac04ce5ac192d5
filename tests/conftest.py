"""Shared fixtures: the platforms present on this machine, and the sample guests.

Every platform-dependent test takes the `platform` fixture, which runs it once per
platform; a platform that is not usable here is skipped with its reason, and the
terminal summary says which platforms ran and which were skipped and why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whpx_core.platform.base import Platform, PlatformUnavailable  # noqa: E402
from whpx_core.platform.choice import choose  # noqa: E402

# whp-standin: the WHPX backend's own code over the Linux stand-in for the WHv functions.
PLATFORMS = ("emulated", "kvm", "whp", "whp-standin")
_status: dict[str, str] = {}


def _probe(name: str) -> Platform | str:
    if name == "whp-standin":
        from whpx_core.platform.whp.partition import WhpPlatform
        from whpx_core.platform.whp.standin import StandinApi

        # WHPX_STANDIN_FAULTS breaks marshalled values (tests/platform/test_whp_standin.py).
        faults = os.environ.get("WHPX_STANDIN_FAULTS", "")
        return WhpPlatform(StandinApi(frozenset(filter(None, faults.split(",")))))
    try:
        return choose(name).platform
    except PlatformUnavailable as error:
        return str(error)


_probed = {name: _probe(name) for name in PLATFORMS}


@pytest.fixture(params=PLATFORMS)
def platform(request: pytest.FixtureRequest) -> Platform:
    found = _probed[request.param]
    if request.param == "whp-standin" and "dap" in request.node.path.parts:
        pytest.skip("whp-standin exists only in this process; the adapter under test picks "
                    "its platform by name in its own")
    if isinstance(found, str):
        _status[request.param] = f"skipped: {found}"
        pytest.skip(found)
    _status.setdefault(request.param, f"ran: {found.describe()}")
    return found


@pytest.fixture(scope="session")
def guests(tmp_path_factory: pytest.TempPathFactory):
    """Build the sample guests once per session; returns name -> ELF path (-O0, DWARF 5)."""
    from tests.guests import build

    out = tmp_path_factory.mktemp("guests")
    return {name: build.build_guest(name, out) for name in build.GUESTS}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("platforms")
    for name in PLATFORMS:
        found = _probed[name]
        status = _status.get(name)
        if status is None:
            available = "available" if not isinstance(found, str) else found
            status = f"not used by the selected tests ({available})"
        terminalreporter.write_line(f"{name}: {status}")
