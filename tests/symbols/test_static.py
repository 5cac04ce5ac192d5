"""DebugInfo against the built srcdemo ELFs, cross-checked with objdump's decoded line
table and gdb's own breakpoint placement."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.symbols.conftest import SOURCE
from tests.symbols.markers import GUEST_DIR, marker_line
from whpx_core.symbols import DebugInfo, DebugInfoError

SOURCE_PATH = str(GUEST_DIR / SOURCE)


def objdump_rows(path: Path) -> dict[int, tuple[str, int]]:
    """address -> (file basename, line) of the last line-table row at that address."""
    out = subprocess.run(["objdump", "--dwarf=decodedline", str(path)], capture_output=True,
                         text=True, check=True).stdout
    rows: dict[int, tuple[str, int]] = {}
    for text in out.splitlines():
        match = re.match(r"^(\S+)\s+(\d+)\s+(0x[0-9a-f]+)", text)
        if match:
            rows[int(match.group(3), 16)] = (match.group(1), int(match.group(2)))
    return rows


def gdb_break(path: Path, where: str) -> tuple[int, int]:
    """(address, line) where gdb puts `break where`."""
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"break {where}", str(path)],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Breakpoint 1 at (0x[0-9a-f]+): file .*, line (\d+)\.", out)
    assert match, out
    return int(match.group(1), 16), int(match.group(2))


needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None,
                               reason="gdb is not installed (scripts/setup installs it)")


def test_address_to_line_matches_objdump(srcdemo, info: DebugInfo) -> None:
    rows = objdump_rows(srcdemo[0])
    checked = 0
    for address, (name, line) in rows.items():
        if name not in ("srcdemo.c", "srcdemo_asm.S") or line == 0:
            continue
        found = info.line_for_address(address)
        if found is None:
            continue  # an end-of-sequence address
        assert (Path(found.file).name, found.line) == (name, line), hex(address)
        assert Path(found.file).is_absolute()
        checked += 1
    assert checked > 50


@needs_gdb
@pytest.mark.parametrize("marker", ["leaf_body", "loop_body", "step_call", "fact_recurse",
                                    "inspect_body", "chain_4_body", "hot_loop",
                                    "caller_b_comment"])
def test_line_to_address_matches_gdb(srcdemo, info: DebugInfo, marker: str) -> None:
    line = marker_line(SOURCE, marker)
    resolved = info.resolve_line(SOURCE, line)
    assert resolved is not None
    address, gdb_line = gdb_break(srcdemo[0], f"{SOURCE}:{line}")
    assert resolved.line == gdb_line
    assert address in resolved.addresses


def test_file_is_matched_by_path_suffix_and_basename(info: DebugInfo) -> None:
    line = marker_line(SOURCE, "leaf_body")
    expected = info.resolve_line(SOURCE_PATH, line)
    assert expected is not None and expected.line == line
    assert info.resolve_line("guests/srcdemo.c", line) == expected
    assert info.resolve_line("srcdemo.c", line) == expected
    assert info.resolve_line("nosuch.c", line) is None
    assert SOURCE_PATH in info.source_files()
    assert str(GUEST_DIR / "srcdemo_asm.S") in info.source_files()


def test_a_line_without_code_moves_to_the_next_line_with_code(info: DebugInfo) -> None:
    comment = marker_line(SOURCE, "caller_b_comment")
    resolved = info.resolve_line(SOURCE, comment)
    assert resolved is not None and resolved.line > comment
    assert info.lines_with_code(SOURCE, comment) == []
    assert resolved.line in info.lines_with_code(SOURCE, comment, comment + 5)
    # Past the last line of a function nothing there has code: the next function's line.
    end = info.function_named("caller_c")
    assert end is not None


def test_resolve_stays_inside_the_function(info: DebugInfo) -> None:
    function = info.function_named("leaf")
    assert function is not None
    for address in info.resolve_line(SOURCE, marker_line(SOURCE, "leaf_body")).addresses:
        assert function.contains(address)


def test_functions_and_body_start(srcdemo, info: DebugInfo) -> None:
    leaf = info.function_named("leaf")
    assert leaf is not None and leaf.from_dwarf and leaf.file == SOURCE_PATH
    assert info.function_at(leaf.low) == leaf
    assert info.function_at(leaf.high - 1) == leaf
    assert leaf.low <= leaf.body_start < leaf.high
    body = info.line_for_address(leaf.body_start)
    assert body is not None and body.line == marker_line(SOURCE, "leaf_body")
    if srcdemo[1] == "-O0":
        assert leaf.body_start > leaf.low  # the -O0 prologue is skipped
    asm = info.function_at(info.symbols.address_of("demo_asm_call"))
    assert asm is not None and asm.name == "demo_asm_frame"
    assert info.function_at(0x10) is None


@needs_gdb
def test_body_start_matches_gdb(srcdemo, info: DebugInfo) -> None:
    for name in ("leaf", "loop100", "inspect", "chain_3", "factorial"):
        function = info.function_named(name)
        assert function is not None
        assert gdb_break(srcdemo[0], name)[0] == function.body_start, name


def test_inline_chain(info: DebugInfo) -> None:
    inspect = info.function_named("inspect")
    assert inspect is not None
    call_line = marker_line(SOURCE, "inspect_scaled_call")
    chains = [info.inline_chain(address) for address in range(inspect.low, inspect.high)]
    inlined = [chain for chain in chains if chain[0].name == "scaled"]
    assert inlined, "scaled() is always_inline: some of inspect's code is its inlined copy"
    for chain in inlined:
        assert [function.name for function in chain] == ["scaled", "inspect"]
        assert chain[0].call_site is not None and chain[0].call_site.line == call_line
    assert info.inline_chain(info.function_named("leaf").low)[0].name == "leaf"


def test_line_ranges_cover_the_line_inside_its_function(info: DebugInfo) -> None:
    hot = info.resolve_line(SOURCE, marker_line(SOURCE, "hot_loop"))
    function = info.function_named("hot_line")
    ranges = info.line_ranges(hot.addresses[0])
    assert ranges and any(lo <= hot.addresses[0] < hi for lo, hi in ranges)
    for lo, hi in ranges:
        assert function.contains(lo) and function.contains(hi - 1)
        for address in (lo, hi - 1):
            assert info.line_for_address(address).line == hot.line


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DebugInfoError, match="cannot open"):
        DebugInfo.open(tmp_path / "missing.elf")
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"not an elf at all")
    with pytest.raises(DebugInfoError, match="not a readable ELF"):
        DebugInfo.open(junk)


def test_fast_line_decoder_agrees_with_pyelftools(info: DebugInfo) -> None:
    from whpx_core.symbols.lines import _decode, _decode_with_pyelftools

    rows = 0
    for unit in info.units:
        program = info.dwarf.line_program_for_CU(unit.cu)
        expected = _decode_with_pyelftools(program)
        assert _decode(program, unit.cu.structs.address_size) == expected
        rows += sum(len(sequence) for sequence, _ in expected)
    assert rows > 100
