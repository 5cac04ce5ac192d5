"""The srcdemo guest built four ways (-O0/-O2 x DWARF 4/5), once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests.build import build_guest
from whpx_core.symbols import DebugInfo

BUILDS = [("-O0", 4), ("-O0", 5), ("-O2", 4), ("-O2", 5)]
SOURCE = "srcdemo.c"


@pytest.fixture(scope="session")
def srcdemo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("srcdemo")


@pytest.fixture(scope="session", params=BUILDS, ids=[f"{o[1:]}-dwarf{d}" for o, d in BUILDS])
def srcdemo(request: pytest.FixtureRequest, srcdemo_dir: Path) -> tuple[Path, str]:
    """(ELF path, optimisation flag) for one build."""
    opt, dwarf = request.param
    return build_guest("srcdemo", srcdemo_dir, opt=opt, dwarf=dwarf), opt


@pytest.fixture(scope="session")
def info_cache() -> dict[Path, DebugInfo]:
    return {}


@pytest.fixture
def info(srcdemo: tuple[Path, str], info_cache: dict[Path, DebugInfo]) -> DebugInfo:
    path = srcdemo[0]
    if path not in info_cache:
        info_cache[path] = DebugInfo.open(path)
    return info_cache[path]
