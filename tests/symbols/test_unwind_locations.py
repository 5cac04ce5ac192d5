"""The unwinder and the location-expression machine on their own: CFI from .eh_frame,
the frame-pointer fallback, and DWARF operations gcc emits at -O2 that the srcdemo guest
may not happen to contain (pieces, implicit values, branches, entry values)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from whpx_core.symbols import DebugInfo
from whpx_core.symbols.locations import ExpressionRunner, FrameContext, OptimizedOut


class FakeStack:
    """A few 8-byte words of memory; anything else is unreadable."""

    def __init__(self, words: dict[int, int]) -> None:
        self.words = words

    def __call__(self, address: int, size: int) -> bytes:
        base = address - address % 8
        if base not in self.words:
            raise OSError(f"unmapped {address:#x}")
        return self.words[base].to_bytes(8, "little")[address - base:address - base + size]


@pytest.fixture(scope="module")
def eh_frame_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image whose only CFI is .eh_frame (gcc's default asynchronous tables)."""
    out = tmp_path_factory.mktemp("eh")
    source = out / "eh.c"
    source.write_text(
        "__attribute__((noinline)) int inner(int x) { return x * 3; }\n"
        "__attribute__((noinline)) int outer(int x) { return inner(x + 1) + 1; }\n"
        "void _start(void) { outer(1); for (;;) ; }\n")
    elf = out / "eh.elf"
    subprocess.run(["gcc", "-O2", "-g", "-ffreestanding", "-nostdlib", "-static", "-no-pie",
                    "-fno-pic", "-o", str(elf), str(source)], check=True)
    return elf


def test_unwind_through_eh_frame(eh_frame_elf: Path) -> None:
    info = DebugInfo.open(eh_frame_elf)
    assert info.dwarf.has_EH_CFI()
    inner = info.function_named("inner")
    outer = info.function_named("outer")
    return_address = outer.low + 1  # any address inside outer: a call returns there
    memory = FakeStack({0x8000: return_address})
    frames = info.unwind({"rip": inner.low, "rsp": 0x8000, "rbp": 0x1234}, memory)
    assert [frame.function.name for frame in frames[:2]] == ["inner", "outer"]
    assert frames[0].cfa == 0x8008
    assert frames[1].pc == return_address and frames[1].regs["rsp"] == 0x8008
    assert frames[1].regs["rbp"] == 0x1234  # callee-saved and untouched: kept
    assert "rax" not in frames[1].regs  # caller-saved: unknown in the outer frame


def test_frame_pointer_fallback_where_no_cfi_covers_the_pc(eh_frame_elf: Path) -> None:
    info = DebugInfo.open(eh_frame_elf)
    outer = info.function_named("outer")
    memory = FakeStack({0x9000: 0x9100, 0x9008: outer.low + 1})
    frames = info.unwind({"rip": 0x7000_0000, "rsp": 0x8ff0, "rbp": 0x9000}, memory)
    assert frames[0].function is None and frames[0].cfa == 0x9010
    assert frames[1].function.name == "outer"
    assert frames[1].regs["rbp"] == 0x9100 and frames[1].regs["rsp"] == 0x9010


@pytest.fixture(scope="module")
def runner_die(srcdemo_dir: Path):
    from tests.guests.build import build_guest

    elf = build_guest("srcdemo", srcdemo_dir, opt="-O2", dwarf=5)
    info = DebugInfo.open(elf)
    leaf = info.function_named("leaf")
    unit = info.unit_at(leaf.low)
    die = info.dwarf.get_DIE_from_refaddr(leaf.die_offset, unit.cu)
    return ExpressionRunner(info.dwarf), die


def _frame(**extra) -> FrameContext:
    memory = FakeStack({0x5000: 0x1122334455667788})
    context = FrameContext(0x100000, {"rbx": 0xAABBCCDD, "rsp": 0x4000}, memory, cfa=0x4100)
    for name, value in extra.items():
        setattr(context, name, value)
    return context


LIT = lambda n: 0x30 + n  # noqa: E731
STACK_VALUE, PIECE, REG3, BREG7, FBREG, CFA, ADDR, DEREF = (
    0x9F, 0x93, 0x53, 0x77, 0x91, 0x9C, 0x03, 0x06)


@pytest.mark.parametrize(("expr", "expected"), [
    ([BREG7, 0x08], ("address", 0x4008)),
    ([REG3], ("register", "rbx")),
    ([FBREG, 0x6C], ("address", 0x3000 - 20)),  # sleb -20 from the frame base
    ([CFA], ("address", 0x4100)),
    ([LIT(7), LIT(3), 0x1C, STACK_VALUE], ("data", (4).to_bytes(8, "little"))),  # minus
    ([ADDR, *(0x5000).to_bytes(8, "little"), DEREF, STACK_VALUE],
     ("data", (0x1122334455667788).to_bytes(8, "little"))),
    ([REG3, PIECE, 4, LIT(5), STACK_VALUE, PIECE, 4],
     ("data", bytes.fromhex("ddccbbaa") + (5).to_bytes(4, "little"))),
    ([0x9E, 2, 0x34, 0x12], ("data", b"\x34\x12")),  # implicit_value
    # lit4; lit1; bra +1 (taken: skips lit2); stack_value
    ([LIT(4), LIT(1), 0x28, 1, 0, LIT(2), STACK_VALUE], ("data", (4).to_bytes(8, "little"))),
    ([LIT(4), LIT(0), 0x28, 1, 0, LIT(2), STACK_VALUE], ("data", (2).to_bytes(8, "little"))),
])
def test_location_operations(runner_die, expr: list[int], expected) -> None:
    runner, die = runner_die
    location = runner.location(die, expr, _frame(frame_base=0x3000))
    kind, value = expected
    assert getattr(location, kind) == value


@pytest.mark.parametrize("expr", [
    [0xA3, 2, 0x55, STACK_VALUE],  # DW_OP_entry_value(DW_OP_reg5): not known here
    [0x70, 0x00],  # breg0 (rax) in a frame that does not know rax
    [REG3, PIECE, 4, PIECE, 4],  # second half optimized out
    [0x90, 17],  # regx 17 (an SSE register)
    [FBREG, 0x00],  # no frame base
    [],
])
def test_unknown_locations_are_optimized_out(runner_die, expr: list[int]) -> None:
    runner, die = runner_die
    with pytest.raises(OptimizedOut):
        runner.location(die, expr, _frame())
