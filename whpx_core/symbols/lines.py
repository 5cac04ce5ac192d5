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


Pending = list[tuple[int, int, int, int, bool, bool]]  # address file line column stmt prologue


def _decode_with_pyelftools(program) -> list[tuple[Pending, int]]:
    sequences: list[tuple[Pending, int]] = []
    pending: Pending = []
    for entry in program.get_entries():
        state = entry.state
        if state is None:
            continue
        if state.end_sequence:
            sequences.append((pending, state.address))
            pending = []
        else:
            pending.append((state.address, state.file, state.line, state.column,
                            bool(state.is_stmt), bool(state.prologue_end)))
    return sequences


def _uleb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _sleb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value - (1 << shift) if byte & 0x40 else value), at


def _decode(program, address_size: int) -> list[tuple[Pending, int]]:
    """The line program's state machine (DWARF 2-5, section 6.2), straight over the bytes.

    pyelftools parses the header (kept) and would decode the opcodes too, but at about
    10 us an opcode that is most of the time a first breakpoint takes in a big image; this
    loop is ~10x faster and tests check it against pyelftools' rows for every guest."""
    header = program.header
    stream = program.stream
    stream.seek(program.program_start_offset)
    data = stream.read(program.program_end_offset - program.program_start_offset)
    min_length = header["minimum_instruction_length"]
    default_stmt = bool(header["default_is_stmt"])
    line_base, line_range = header["line_base"], header["line_range"]
    opcode_base = header["opcode_base"]
    lengths = header["standard_opcode_lengths"]
    sequences: list[tuple[Pending, int]] = []
    pending: Pending = []

    def reset() -> list:
        return [0, 1, 1, 0, default_stmt, False]  # address file line column stmt prologue

    state = reset()
    at = 0
    while at < len(data):
        opcode = data[at]
        at += 1
        if opcode >= opcode_base:
            adjusted = opcode - opcode_base
            state[0] += (adjusted // line_range) * min_length
            state[2] += line_base + adjusted % line_range
            pending.append(tuple(state))
            state[5] = False
        elif opcode == 0:
            length, at = _uleb(data, at)
            end = at + length
            sub = data[at] if length else 0
            if sub == 1:  # end_sequence
                sequences.append((pending, state[0]))
                pending = []
                state = reset()
            elif sub == 2:  # set_address
                state[0] = int.from_bytes(data[at + 1:at + 1 + address_size], "little")
            at = end  # define_file, set_discriminator and vendor opcodes: nothing we keep
        elif opcode == 1:  # copy
            pending.append(tuple(state))
            state[5] = False
        elif opcode == 2:  # advance_pc
            advance, at = _uleb(data, at)
            state[0] += advance * min_length
        elif opcode == 3:  # advance_line
            advance, at = _sleb(data, at)
            state[2] += advance
        elif opcode == 4:  # set_file
            state[1], at = _uleb(data, at)
        elif opcode == 5:  # set_column
            state[3], at = _uleb(data, at)
        elif opcode == 6:  # negate_stmt
            state[4] = not state[4]
        elif opcode == 8:  # const_add_pc
            state[0] += ((255 - opcode_base) // line_range) * min_length
        elif opcode == 9:  # fixed_advance_pc
            state[0] += int.from_bytes(data[at:at + 2], "little")
            at += 2
        elif opcode == 10:  # set_prologue_end
            state[5] = True
        else:  # basic_block, epilogue_begin, isa, or unknown: skip its ULEB operands
            for _ in range(lengths[opcode - 1]):
                _, at = _uleb(data, at)
    return sequences


class LineTable:
    def __init__(self, dwarf: DWARFInfo, cu: CompileUnit) -> None:
        self.files = file_names(dwarf, cu) or []
        self.rows: list[Row] = []
        program = dwarf.line_program_for_CU(cu)
        if program is None:
            self.starts: list[int] = []
            return
        try:
            sequences = _decode(program, cu.structs.address_size)
        except (IndexError, ValueError):  # something our decoder does not know: the slow way
            sequences = _decode_with_pyelftools(program)
        for rows, end in sequences:
            self._close(rows, end)
        self.rows.sort(key=lambda row: row.address)  # stable: sequence order within an address
        self.starts = [row.address for row in self.rows]

    def _close(self, pending: Pending, end: int) -> None:
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
