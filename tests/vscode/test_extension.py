"""The VS Code extension builds (tsc), packages (vsce) into a .vsix, and its launch schema
is exactly the adapter's launch arguments.

The adapter's side is read from its pydantic model (`LaunchArguments`), minus the fields
DAP itself defines for every launch request (`noDebug`, `__restart`: VS Code sets those,
users don't write them). scripts/setup runs `npm ci` in vscode-extension/.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dap_whpx.protocol.messages import LaunchArguments
from tests.vscode.build import package

ROOT = Path(__file__).resolve().parents[2]
DAP_SCHEMA = ROOT / "tests" / "dap" / "debugAdapterProtocol.json"
# What VS Code itself reads in every configuration, whatever the debug type.
VSCODE_ATTRIBUTES = {"type", "request", "name", "preLaunchTask", "postDebugTask"}


@pytest.fixture(scope="module")
def vsix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package(tmp_path_factory.mktemp("vsix"))


@pytest.fixture(scope="module")
def manifest(vsix: Path) -> dict[str, Any]:
    with zipfile.ZipFile(vsix) as archive:
        return json.loads(archive.read("extension/package.json"))


def debugger(manifest: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [d for d in manifest["contributes"]["debuggers"] if d["type"] == "whpx"]
    return entry


def adapter_fields() -> dict[str, Any]:
    dap_defined = json.loads(DAP_SCHEMA.read_text())["definitions"][
        "LaunchRequestArguments"]["properties"]
    schema = LaunchArguments.model_json_schema()
    return {name: spec for name, spec in schema["properties"].items()
            if name not in dap_defined}


def test_vsix_holds_the_compiled_extension(vsix: Path, manifest: dict[str, Any]) -> None:
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
    assert {"extension/out/extension.js", "extension/out/adapter.js",
            "extension/readme.md", "extension/LICENSE.txt"} <= names
    assert manifest["main"] == "./out/extension.js"
    assert not any(name.startswith("extension/src/") for name in names)
    assert not any("node_modules" in name for name in names)


def test_launch_schema_is_exactly_the_adapters_launch_arguments(
        manifest: dict[str, Any]) -> None:
    launch = debugger(manifest)["configurationAttributes"]["launch"]
    fields = adapter_fields()
    assert set(launch["properties"]) == set(fields)
    required = set(LaunchArguments.model_json_schema()["required"])
    assert set(launch["required"]) == required
    for name, spec in fields.items():
        attribute = launch["properties"][name]
        assert attribute.get("description"), f"{name}: no description"
        types = [spec["type"]] if "type" in spec else [
            option["type"] for option in spec["anyOf"] if option["type"] != "null"]
        assert [attribute["type"]] == types, name
        for key in ("enum", "minimum", "maximum"):
            assert attribute.get(key) == spec.get(key), f"{name}: {key}"
        if name not in required and spec.get("default") is not None:
            assert attribute["default"] == spec["default"], f"{name}: default"


def test_shipped_configurations_use_only_schema_attributes_and_validate(
        manifest: dict[str, Any]) -> None:
    entry = debugger(manifest)
    properties = set(entry["configurationAttributes"]["launch"]["properties"])
    configurations = entry["initialConfigurations"] + [
        snippet["body"] for snippet in entry["configurationSnippets"]]
    example = json.loads(_strip_comments(
        (ROOT / "examples" / "smp-guest" / ".vscode" / "launch.json").read_text()))
    configurations += example["configurations"]
    for configuration in configurations:
        assert configuration["type"] == "whpx"
        assert set(configuration) - VSCODE_ATTRIBUTES <= properties, configuration
        launch_fields = {k: v for k, v in configuration.items() if k in properties}
        LaunchArguments.model_validate(launch_fields)  # what the adapter will accept


def test_breakpoints_for_c_cpp_and_assembly(manifest: dict[str, Any]) -> None:
    languages = {b["language"] for b in manifest["contributes"]["breakpoints"]}
    assert languages == {"c", "cpp", "asm"}
    # VS Code has no built-in assembly language: the extension maps the file types.
    (asm,) = [lang for lang in manifest["contributes"]["languages"] if lang["id"] == "asm"]
    assert {".s", ".S", ".asm"} <= set(asm["extensions"])


def _strip_comments(text: str) -> str:
    """launch.json is JSON with // comments (at line starts here)."""
    return "\n".join(line for line in text.splitlines()
                     if not line.lstrip().startswith("//"))
