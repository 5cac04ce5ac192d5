"""One compile unit's line table, decoded once: address <-> file:line both ways.

Rows keep the line program's order inside each sequence (addresses never decrease there);
`starts` is every row address sorted, for bisecting an address to its row.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from elftools.dwarf.compileunit import CompileUnit
from elftools.dwarf.dwarfinfo import DWARFInfo

from whpx_core.symbols.dies import comp_dir, normalise, text


@dataclass(frozen=True, slots=True)
class Row:
    address: int
    file: int  # index into LineTable.files
    line: int
    column: int
    is_stmt: bool
    prologue_end: bool
    end: int  # the next row's address: this row covers [address, end)


def file_names(dwarf: DWARFInfo, cu: CompileUnit) -> list[str] | None:
    """The absolute paths of the line program's file table, indexed as its rows index
    them (DWARF 5 counts from 0, earlier versions from 1: slot 0 is then a placeholder)."""
    program = dwarf.line_program_for_CU(cu)
    if program is None:
        return None
    version = program.header["version"]
    base = comp_dir(cu)
    dirs = [text(d) or "" for d in program.header["include_directory"]]
    names: list[str] = [] if version >= 5 else [""]
    for entry in program.header["file_entry"]:
        index = entry.dir_index
        if version >= 5:
            directory = dirs[index] if index < len(dirs) else ""
        else:
            directory = dirs[index - 1] if 0 < index <= len(dirs) else ""
        names.append(normalise(text(entry.name) or "?", normalise(directory, base)
                               if directory else base))
    return names


class LineTable:
    def __init__(self, dwarf: DWARFInfo, cu: CompileUnit) -> None:
        self.files = file_names(dwarf, cu) or []
        self.rows: list[Row] = []
        program = dwarf.line_program_for_CU(cu)
        if program is None:
            self.starts: list[int] = []
            return
        pending: list[tuple[int, int, int, int, bool, bool]] = []
        for entry in program.get_entries():
            state = entry.state
            if state is None:
                continue
            if state.end_sequence:
                self._close(pending, state.address)
                pending = []
            else:
                pending.append((state.address, state.file, state.line, state.column,
                                bool(state.is_stmt), bool(state.prologue_end)))
        self.rows.sort(key=lambda row: row.address)  # stable: sequence order within an address
        self.starts = [row.address for row in self.rows]

    def _close(self, pending: list[tuple[int, int, int, int, bool, bool]], end: int) -> None:
        for index, (address, file, line, column, is_stmt, prologue_end) in enumerate(pending):
            following = pending[index + 1][0] if index + 1 < len(pending) else end
            self.rows.append(Row(address, file, line, column, is_stmt, prologue_end, following))

    def file_of(self, row: Row) -> str:
        return self.files[row.file] if 0 <= row.file < len(self.files) else "?"

    def row_at(self, address: int) -> Row | None:
        """The row whose range holds `address` (the last of several at one address)."""
        at = bisect.bisect_right(self.starts, address) - 1
        while at >= 0:
            row = self.rows[at]
            if row.address <= address < row.end:
                return self._statement_at(at)
            if row.address < address:
                return None
            at -= 1  # an empty row (address == end) at the same address: look before it
        return None

    def _statement_at(self, at: int) -> Row:
        """Prefer a statement row at the same address (as gdb does): at -O2 a row that is
        not a statement often follows the statement's own row at one address, and it is
        the statement's line that the user stopped at."""
        row = self.rows[at]
        probe = at
        while not row.is_stmt and probe > 0:
            earlier = self.rows[probe - 1]
            if earlier.address != row.address or earlier.line == 0:
                break
            if earlier.is_stmt:
                return Row(earlier.address, earlier.file, earlier.line, earlier.column, True,
                           earlier.prologue_end, row.end)
            probe -= 1
        return row

    def rows_between(self, low: int, high: int) -> list[Row]:
        start = bisect.bisect_left(self.starts, low)
        end = bisect.bisect_left(self.starts, high)
        return self.rows[start:end]
