"""Lazy per-compile-unit indexes: nothing of a CU is decoded until a lookup needs it.

Opening an image reads only the CU headers (cheap); a CU's line table, its functions
(top-level DIEs only, skipping type subtrees by DW_AT_sibling) and its globals are built
the first time a query lands in that CU.
"""

from __future__ import annotations

import bisect
from functools import cached_property

from elftools.dwarf.compileunit import CompileUnit
from elftools.dwarf.die import DIE
from elftools.dwarf.dwarfinfo import DWARFInfo

from whpx_core.symbols.dies import attr, die_name, die_ranges, inherited, ref
from whpx_core.symbols.lines import LineTable, Row, file_names
from whpx_core.symbols.model import Function, SourceLine

_SCOPE_TAGS = ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine")


class Unit:
    def __init__(self, dwarf: DWARFInfo, cu: CompileUnit, range_lists) -> None:
        self.dwarf = dwarf
        self.cu = cu
        self.range_lists = range_lists

    @cached_property
    def top(self) -> DIE:
        return self.cu.get_top_DIE()

    @cached_property
    def ranges(self) -> list[tuple[int, int]]:
        return die_ranges(self.top, self.range_lists)

    @cached_property
    def files(self) -> list[str]:
        return file_names(self.dwarf, self.cu) or []

    @cached_property
    def lines(self) -> LineTable:
        return LineTable(self.dwarf, self.cu)

    def contains(self, address: int) -> bool:
        return any(lo <= address < hi for lo, hi in self.ranges)

    # ----------------------------------------------------------------- top-level DIEs

    @cached_property
    def _top_level(self) -> tuple[list[Function], list[DIE]]:
        functions: list[Function] = []
        variables: list[DIE] = []
        for die in self.top.iter_children():
            if die.tag == "DW_TAG_subprogram":
                function = self.function_from_die(die)
                if function is not None:
                    functions.append(function)
            elif die.tag == "DW_TAG_variable" and "DW_AT_location" in die.attributes:
                variables.append(die)
        functions.sort(key=lambda function: function.low)
        return functions, variables

    @property
    def functions(self) -> list[Function]:
        return self._top_level[0]

    @property
    def variables(self) -> list[DIE]:
        return self._top_level[1]

    @cached_property
    def _function_lows(self) -> list[int]:
        return [function.low for function in self.functions]

    def function_at(self, address: int) -> Function | None:
        at = bisect.bisect_right(self._function_lows, address) - 1
        if at >= 0 and self.functions[at].contains(address):
            return self.functions[at]
        for function in self.functions:  # cold parts lie outside the sorted main ranges
            if len(function.ranges) > 1 and function.contains(address):
                return function
        return None

    def function_from_die(self, die: DIE, call_site: SourceLine | None = None) -> Function | None:
        ranges = sorted(die_ranges(die, self.range_lists))
        if not ranges or attr(die, "DW_AT_declaration"):
            return None
        entry = attr(die, "DW_AT_entry_pc")
        if not isinstance(entry, int) or entry < 1024:  # DWARF 5 may give an offset
            entry = attr(die, "DW_AT_low_pc")
        low, high = next(((lo, hi) for lo, hi in ranges if isinstance(entry, int)
                          and lo <= entry < hi), ranges[0])
        file_index = inherited(die, "DW_AT_decl_file")
        line = inherited(die, "DW_AT_decl_line")
        inlined = die.tag == "DW_TAG_inlined_subroutine"
        return Function(
            name=die_name(die) or f"<function at {low:#x}>",
            low=low,
            high=high,
            body_start=low if inlined else self.body_start(low, high),
            file=self.file_name(file_index),
            line=line if isinstance(line, int) else None,
            from_dwarf=True,
            ranges=tuple(ranges),
            die_offset=die.offset,
            call_site=call_site,
        )

    def file_name(self, index) -> str | None:
        if not isinstance(index, int) or not 0 <= index < len(self.files):
            return None
        return self.files[index]

    def body_start(self, low: int, high: int) -> int:
        """The first address after the prologue: a prologue_end row, else the first
        is_stmt row for a different line than the function's opening one."""
        rows = self.lines.rows_between(low, high)
        for row in rows:
            if row.prologue_end:
                return row.address
        if not rows or rows[0].address != low:
            return low
        first = rows[0].line
        for row in rows[1:]:
            if row.is_stmt and row.line != first and row.line != 0:
                return row.address
        return low

    # ------------------------------------------------------------------ nested scopes

    def scope_chain(self, function: Function, address: int) -> list[DIE]:
        """The DIEs that contain `address` from the subprogram inwards: lexical blocks
        and inlined subroutines (outermost first)."""
        if function.die_offset is None:
            return []
        die = self.dwarf.get_DIE_from_refaddr(function.die_offset, self.cu)
        chain = [die]
        while True:
            for child in die.iter_children():
                if child.tag in _SCOPE_TAGS and _holds(die_ranges(child, self.range_lists),
                                                        address):
                    chain.append(child)
                    die = child
                    break
            else:
                return chain

    def inline_chain(self, function: Function, address: int) -> list[Function]:
        """Innermost first: the inlined copies holding `address`, then the function."""
        chain = [function]
        for die in self.scope_chain(function, address)[1:]:
            if die.tag != "DW_TAG_inlined_subroutine":
                continue
            call_file = self.file_name(attr(die, "DW_AT_call_file"))
            call_line = attr(die, "DW_AT_call_line")
            site = None
            if call_file and isinstance(call_line, int):
                site = SourceLine(call_file, call_line, attr(die, "DW_AT_call_column") or 0,
                                  address)
            inlined = self.function_from_die(die, site)
            if inlined is not None:
                chain.append(inlined)
        chain.reverse()
        return chain

    def block_key(self, function: Function, address: int) -> int | None:
        """The innermost inlined copy holding `address` (its DIE offset), if any."""
        for die in reversed(self.scope_chain(function, address)[1:]):
            if die.tag == "DW_TAG_inlined_subroutine":
                return die.offset
        return None

    def type_die(self, die: DIE) -> DIE | None:
        return ref(die, "DW_AT_type")

    def source_line(self, row: Row) -> SourceLine:
        return SourceLine(self.lines.file_of(row), row.line, row.column, row.address, row.is_stmt)


def _holds(ranges: list[tuple[int, int]], address: int) -> bool:
    return any(lo <= address < hi for lo, hi in ranges)
