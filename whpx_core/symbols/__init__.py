"""Symbols for the debugger: ELF symbol tables and DWARF debug information.

`DebugInfo.open(path)` is the entry point (lines, functions, unwinding, variables);
`expressions` is the C-like expression language evaluated over registers, symbols and
(through an EvalContext that knows a frame) C variables.
"""

from whpx_core.symbols.ctypes_model import CType, Member
from whpx_core.symbols.debug_info import DebugInfo, DebugInfoError
from whpx_core.symbols.elf_symbols import SymbolTable
from whpx_core.symbols.eval_context import FrameEvalContext
from whpx_core.symbols.model import (
    Frame,
    FrameScopes,
    Function,
    LineResolution,
    MemoryReader,
    SourceLine,
    Variable,
)
from whpx_core.symbols.values import Value, ValueAccessError

__all__ = [
    "CType",
    "DebugInfo",
    "DebugInfoError",
    "Frame",
    "FrameEvalContext",
    "FrameScopes",
    "Function",
    "LineResolution",
    "Member",
    "MemoryReader",
    "SourceLine",
    "SymbolTable",
    "Value",
    "ValueAccessError",
    "Variable",
]
