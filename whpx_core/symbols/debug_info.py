"""DebugInfo: everything the debugger asks of an ELF's DWARF, behind one object.

Lines and functions live here; unwinding (`unwind.py`) and variables (`variables.py`)
are separate modules that this class only forwards to. Indexing is lazy per compile
unit (`units.py`), so opening a big image costs about one pass over the CU headers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from whpx_core.symbols.elf_symbols import SymbolTable
from whpx_core.symbols.lines import Row
from whpx_core.symbols.model import (
    Frame,
    FrameScopes,
    Function,
    LineResolution,
    MemoryFunction,
    SourceLine,
    Variable,
)
from whpx_core.symbols.units import Unit


class DebugInfoError(Exception):
    """The file is missing or is not an ELF image we can read."""


class DebugInfo:
    def __init__(self, path: Path, elf: ELFFile, handle) -> None:
        self.path = path
        self._elf = elf
        self._handle = handle  # pyelftools reads sections lazily from the open file
        self.dwarf = elf.get_dwarf_info() if elf.has_dwarf_info() else None
        self.has_dwarf = self.dwarf is not None and elf.get_section_by_name(
            ".debug_info") is not None
        table, self._function_symbols = _read_symtab(elf)
        self.symbols = SymbolTable(table)

    @classmethod
    def open(cls, elf_path: str | os.PathLike[str]) -> DebugInfo:
        path = Path(elf_path)
        try:
            handle = path.open("rb")
        except OSError as error:
            raise DebugInfoError(f"cannot open {path}: {error.strerror}") from None
        try:
            return cls(path, ELFFile(handle), handle)
        except (ELFError, ValueError, KeyError) as error:
            handle.close()
            raise DebugInfoError(f"{path} is not a readable ELF image: {error}") from None

    def close(self) -> None:
        self._handle.close()

    # ------------------------------------------------------------------------ units

    @cached_property
    def range_lists(self):
        return self.dwarf.range_lists() if self.dwarf is not None else None

    @cached_property
    def units(self) -> list[Unit]:
        if not self.has_dwarf:
            return []
        return [Unit(self.dwarf, cu, self.range_lists) for cu in self.dwarf.iter_CUs()]

    @cached_property
    def _units_by_offset(self) -> dict[int, Unit]:
        return {unit.cu.cu_offset: unit for unit in self.units}

    @cached_property
    def _aranges(self):
        return self.dwarf.get_aranges() if self.has_dwarf else None

    def unit_at(self, address: int) -> Unit | None:
        if self._aranges is not None:
            offset = self._aranges.cu_offset_at_addr(address)
            if offset is not None and offset in self._units_by_offset:
                return self._units_by_offset[offset]
        for unit in self.units:  # no .debug_aranges, or a CU it does not list
            if unit.contains(address):
                return unit
        return None

    # ------------------------------------------------------------------------ lines

    def source_files(self) -> list[str]:
        files = {name for unit in self.units for name in unit.files if name}
        return sorted(files)

    def line_for_address(self, address: int) -> SourceLine | None:
        unit = self.unit_at(address)
        if unit is None:
            return None
        row = unit.lines.row_at(address)
        if row is None or row.line == 0:
            return None
        return unit.source_line(row)

    def _match_file(self, file: str) -> list[tuple[Unit, set[int]]]:
        """The units whose line tables name `file`: by absolute path, else path suffix,
        else basename (the first rule that matches anything wins)."""
        wanted = os.path.normpath(file)
        tests = (
            lambda name: name == wanted,
            lambda name: name.endswith(os.sep + wanted.lstrip(os.sep)),
            lambda name: os.path.basename(name) == os.path.basename(wanted),
        )
        for test in tests:
            found = []
            for unit in self.units:
                ids = {index for index, name in enumerate(unit.files) if name and test(name)}
                if ids:
                    found.append((unit, ids))
            if found:
                return found
        return []

    def _file_rows(self, file: str) -> list[tuple[Unit, Row]]:
        out = []
        for unit, ids in self._match_file(file):
            out += [(unit, row) for row in unit.lines.rows if row.file in ids and row.is_stmt
                    and row.line > 0]
        return out

    def lines_with_code(self, file: str, start_line: int, end_line: int | None = None) -> list[int]:
        end = start_line if end_line is None else end_line
        return sorted({row.line for _, row in self._file_rows(file)
                       if start_line <= row.line <= end})

    def resolve_line(self, file: str, line: int) -> LineResolution | None:
        rows = self._file_rows(file)
        if not rows:
            return None
        # Stay in the function whose lines span `line`, when there is one.
        by_function: dict[Function | None, list[tuple[Unit, Row]]] = {}
        for unit, row in rows:
            by_function.setdefault(unit.function_at(row.address), []).append((unit, row))
        candidates = rows
        for function, its_rows in by_function.items():
            lines = [row.line for _, row in its_rows]
            if function is not None and min(lines) <= line <= max(lines):
                candidates = its_rows
                break
        later = [row.line for _, row in candidates if row.line >= line]
        if not later:
            return None
        target = min(later)
        chosen: dict[tuple[int | None, int | None], int] = {}
        for unit, row in candidates:
            if row.line != target:
                continue
            function = unit.function_at(row.address)
            key = (function.low if function else None,
                   unit.block_key(function, row.address) if function else None)
            address = row.address
            if function is not None and address == function.low and key[1] is None:
                address = function.body_start  # the opening line: stop after the prologue
            if key not in chosen or address < chosen[key]:
                chosen[key] = address
        return LineResolution(target, sorted(set(chosen.values())))

    def line_ranges(self, address: int) -> list[tuple[int, int]]:
        unit = self.unit_at(address)
        if unit is None:
            return []
        row = unit.lines.row_at(address)
        if row is None:
            return []
        function = unit.function_at(address)
        spans = function.ranges if function else ((row.address, row.end),)
        out: list[tuple[int, int]] = []
        for lo, hi in spans:
            for other in unit.lines.rows_between(lo, hi):
                if other.line == row.line and other.file == row.file and other.end > other.address:
                    end = min(other.end, hi)
                    if out and out[-1][1] == other.address:
                        out[-1] = (out[-1][0], end)
                    else:
                        out.append((other.address, end))
        return out

    # -------------------------------------------------------------------- functions

    def function_at(self, address: int) -> Function | None:
        unit = self.unit_at(address)
        if unit is not None:
            function = unit.function_at(address)
            if function is not None:
                return function
        return self._symbol_function(address)

    def _symbol_function(self, address: int) -> Function | None:
        """A .symtab function (assembly without DWARF subprograms)."""
        for name, (low, size) in self._function_symbols.items():
            if low <= address < low + max(size, 1):
                line = self.line_for_address(low)
                return Function(name, low, low + max(size, 1), low,
                                line.file if line else None, line.line if line else None,
                                from_dwarf=False, ranges=((low, low + max(size, 1)),))
        return None

    def function_named(self, name: str) -> Function | None:
        symbol = self._function_symbols.get(name)
        if symbol is not None:  # .symtab finds the one CU to index
            found = self.function_at(symbol[0])
            if found is not None and found.name == name:
                return found
        for unit in self.units:  # static functions that share a name, no .symtab ...
            for function in unit.functions:
                if function.name == name:
                    return function
        if name in self._function_symbols:
            return self._symbol_function(self._function_symbols[name][0])
        return None

    def inline_chain(self, address: int) -> list[Function]:
        unit = self.unit_at(address)
        function = unit.function_at(address) if unit else None
        if function is None:
            outer = self._symbol_function(address)
            return [outer] if outer else []
        return unit.inline_chain(function, address)

    # ---------------------------------------------------- unwinding and variables

    @cached_property
    def _unwinder(self):
        from whpx_core.symbols.unwind import Unwinder

        return Unwinder(self)

    def unwind(self, regs: Mapping[str, int], memory: MemoryFunction,
               max_frames: int = 64) -> list[Frame]:
        return self._unwinder.unwind(regs, memory, max_frames)

    @cached_property
    def _variables(self):
        from whpx_core.symbols.variables import Variables

        return Variables(self)

    def frame_scopes(self, frame: Frame, memory: MemoryFunction,
                     inline_depth: int = 0) -> FrameScopes:
        """inline_depth: which of `inline_chain(frame.lookup_pc)` (0 = innermost)."""
        return self._variables.frame_scopes(frame, memory, inline_depth)

    def globals(self, memory: MemoryFunction) -> list[Variable]:
        return self._variables.globals(memory)

    def lookup_variable(self, frame: Frame | None, name: str, memory: MemoryFunction,
                        inline_depth: int = 0) -> Variable | None:
        return self._variables.lookup(frame, name, memory, inline_depth)


def _read_symtab(elf: ELFFile) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """(name -> value for defined symbols, function name -> (address, size)).

    Decoded with struct rather than pyelftools' per-symbol parser: that one costs about
    0.1 ms a symbol, seconds for a big image, and open must stay well under a second."""
    section = elf.get_section_by_name(".symtab")
    if not isinstance(section, SymbolTableSection) or elf.elfclass != 64 \
            or not elf.little_endian:
        return {}, {}
    strings = elf.get_section(section["sh_link"]).data()
    data = section.data()
    symbols: dict[str, int] = {}
    functions: dict[str, tuple[int, int]] = {}
    for name_offset, info, _, shndx, value, size in struct.iter_unpack(
            "<IBBHQQ", data[:len(data) - len(data) % 24]):
        kind = info & 0xF
        if not name_offset or shndx == 0 or kind not in (_STT_NOTYPE, _STT_OBJECT, _STT_FUNC):
            continue
        end = strings.find(b"\0", name_offset)
        name = strings[name_offset:end if end >= 0 else None].decode("utf-8", "replace")
        symbols[name] = value
        if kind == _STT_FUNC:
            functions[name] = (value, size)
    return symbols, functions


_STT_NOTYPE, _STT_OBJECT, _STT_FUNC = 0, 1, 2
