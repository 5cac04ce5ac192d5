"""The qbench guest (tests/guests/qbench.c): building it, patching its parameters into a
copy, and finding its long line's addresses."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "qbench"
LINE_MARK = "/* QB_LONG_LINE */"
FREE_RAM = 0x0200_0000  # 32 MiB: above the guest, below the stacks at the top of 64 MiB


def build() -> Path:
    from tests.guests import build as guests

    return guests.build_guest("qbench", OUT)


def symbols(elf: Path) -> dict[str, int]:
    with elf.open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in table.iter_symbols() if s.name}


def patched(elf: Path, values: dict[str, int]) -> Path:
    """A copy of `elf` with 64-bit .data words set: the same code for QEMU and for us,
    with the phase sizes (qb_hot_iterations, qb_line_iterations) of one measurement."""
    raw = bytearray(elf.read_bytes())
    with elf.open("rb") as f:
        image = ELFFile(f)
        table = {s.name: s["st_value"] for s in image.get_section_by_name(".symtab")
                 .iter_symbols() if s.name}
        segments = [s for s in image.iter_segments() if s["p_type"] == "PT_LOAD"]
        for name, value in values.items():
            address = table[name]
            segment = next(s for s in segments
                           if s["p_vaddr"] <= address < s["p_vaddr"] + s["p_filesz"])
            offset = segment["p_offset"] + address - segment["p_vaddr"]
            raw[offset:offset + 8] = value.to_bytes(8, "little")
    key = hashlib.sha256(raw).hexdigest()[:16]
    out = elf.parent / f"{elf.stem}-{key}.elf"
    if not out.exists():
        out.write_bytes(raw)
    return out


def long_line_ranges(elf: Path) -> list[tuple[int, int]]:
    """[lo, hi) address ranges of the source line marked QB_LONG_LINE, from DWARF."""
    source = ROOT / "tests" / "guests" / "qbench.c"
    line = next(n for n, text in enumerate(source.read_text().splitlines(), 1)
                if LINE_MARK in text)
    ranges: list[tuple[int, int]] = []
    with elf.open("rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        for unit in dwarf.iter_CUs():
            if not unit.get_top_DIE().attributes["DW_AT_name"].value.endswith(b"qbench.c"):
                continue
            rows = [e.state for e in dwarf.line_program_for_CU(unit).get_entries() if e.state]
            for row, after in itertools.pairwise(rows):
                if row.line == line and not row.end_sequence and after.address > row.address:
                    ranges.append((row.address, after.address))
    if not ranges:
        raise RuntimeError(f"no code for qbench.c:{line} in {elf}")
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def file_layout_is_contiguous(elf: Path) -> bool:
    """multiboot.S loads the file as one block: every PT_LOAD must keep the same
    address - offset distance."""
    with elf.open("rb") as f:
        loads = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
    return len({s["p_vaddr"] - s["p_offset"] for s in loads}) == 1
