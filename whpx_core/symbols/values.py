"""Typed values read from a stopped guest: formatting, children, member/index/deref, and
the encoding of a new value for setVariable.

A Value lives in memory (`address`), in a register of its frame (`register`), or is
computed (`data` only, not writable). Memory is read lazily through the MemoryReader, so
expanding a big struct reads only what is shown.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from whpx_core.symbols.ctypes_model import ATE_BOOLEAN, ATE_FLOAT, CType
from whpx_core.symbols.model import MemoryFunction

if TYPE_CHECKING:
    from whpx_core.symbols.elf_symbols import SymbolTable

MASK = (1 << 64) - 1
MAX_STRING = 64


class ValueAccessError(Exception):
    """A value cannot be read or does not support the operation (message says why)."""


@dataclass
class Value:
    type: CType
    address: int | None = None
    register: str | None = None
    data: bytes | None = None
    optimized_out: bool = False
    memory: MemoryFunction | None = field(default=None, repr=False)
    symbols: SymbolTable | None = field(default=None, repr=False)
    bit_size: int | None = None  # bitfield members
    bit_offset: int = 0

    @classmethod
    def optimized(cls, ctype: CType) -> Value:
        return cls(ctype, optimized_out=True)

    # --------------------------------------------------------------------- basics

    @property
    def type_name(self) -> str:
        return self.type.display()

    @property
    def size(self) -> int:
        return self.type.byte_size

    @property
    def writable(self) -> bool:
        return not self.optimized_out and self.bit_size is None and (
            self.address is not None or self.register is not None)

    def raw(self) -> bytes:
        """The value's bytes (read from memory on first use)."""
        if self.optimized_out:
            raise ValueAccessError("optimized out")
        if self.data is None:
            if self.address is None or self.memory is None:
                raise ValueAccessError("value has no location")
            try:
                data = self.memory(self.address, self.size)
            except Exception as error:
                raise ValueAccessError(f"cannot read {self.size} bytes at {self.address:#x}") \
                    from error
            if len(data) != self.size:
                raise ValueAccessError(f"cannot read {self.size} bytes at {self.address:#x}")
            self.data = bytes(data)
        return self.data

    def _derived(self, ctype: CType, offset: int, **extra) -> Value:
        """A part of this value (a member or an element) at byte `offset`."""
        size = ctype.byte_size
        if self.optimized_out:
            return Value.optimized(ctype)
        if self.address is not None:
            return Value(ctype, address=(self.address + offset) & MASK, memory=self.memory,
                         symbols=self.symbols, **extra)
        data = self.raw()[offset:offset + size]
        if len(data) < size:
            return Value.optimized(ctype)
        return Value(ctype, data=data, memory=self.memory, symbols=self.symbols, **extra)

    # ----------------------------------------------------------------- scalars

    def as_int(self) -> int:
        stripped = self.type.strip()
        if stripped.kind not in ("base", "pointer", "enum"):
            raise ValueAccessError(f"'{self.type_name}' is not a number")
        if stripped.kind == "base" and stripped.encoding == ATE_FLOAT:
            raise ValueAccessError(f"'{self.type_name}' is a floating-point value")
        value = int.from_bytes(self.raw(), "little")
        if self.bit_size is not None:
            value = (value >> self.bit_offset) & ((1 << self.bit_size) - 1)
            width = self.bit_size
        else:
            width = 8 * len(self.raw())
        if stripped.kind != "pointer" and stripped.signed and width and value >> (width - 1):
            value -= 1 << width
        return value

    def encode(self, number: int) -> bytes:
        """The bytes to store for `number` (two's complement, truncated to the size)."""
        if not self.type.is_scalar:
            raise ValueAccessError(f"cannot assign a number to '{self.type_name}'")
        size = self.size
        return (number & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    write_bytes = encode

    # -------------------------------------------------------------------- parts

    def member(self, name: str) -> Value:
        stripped = self.type.strip()
        if stripped.kind == "pointer":
            return self.deref().member(name)
        if stripped.kind not in ("struct", "union"):
            raise ValueAccessError(f"'{self.type_name}' has no members")
        for member in stripped.members:
            if member.name == name:
                return self._derived(member.type, member.offset, bit_size=member.bit_size,
                                     bit_offset=member.bit_offset or 0)
            if not member.name and member.type.strip().kind in ("struct", "union"):
                inner = self._derived(member.type, member.offset)
                try:
                    return inner.member(name)
                except ValueAccessError:
                    continue
        raise ValueAccessError(f"'{self.type_name}' has no member '{name}'")

    def index(self, position: int) -> Value:
        stripped = self.type.strip()
        if stripped.kind == "array":
            element = self.type.element_array()
            extent = stripped.dims[0] if stripped.dims else 0
            if extent and not 0 <= position < extent:
                raise ValueAccessError(f"index {position} is outside '{self.type_name}'")
            return self._derived(element, position * element.byte_size)
        if stripped.kind == "pointer":
            target = stripped.target
            if target is None or target.strip().kind in ("void", "function"):
                raise ValueAccessError(f"cannot index '{self.type_name}'")
            address = (self.as_int() + position * target.byte_size) & MASK
            return Value(target, address=address, memory=self.memory, symbols=self.symbols)
        raise ValueAccessError(f"cannot index '{self.type_name}'")

    def deref(self) -> Value:
        stripped = self.type.strip()
        if stripped.kind == "array":
            return self.index(0)
        if stripped.kind != "pointer":
            raise ValueAccessError(f"cannot dereference '{self.type_name}'")
        target = stripped.target
        if target is None or target.strip().kind in ("void",):
            raise ValueAccessError(f"cannot dereference '{self.type_name}'")
        return Value(target, address=self.as_int(), memory=self.memory, symbols=self.symbols)

    def children(self) -> list[tuple[str, Value]]:
        if self.optimized_out:
            return []
        stripped = self.type.strip()
        if stripped.kind in ("struct", "union"):
            return [(member.name or "<anonymous>",
                     self._derived(member.type, member.offset, bit_size=member.bit_size,
                                   bit_offset=member.bit_offset or 0))
                    for member in stripped.members]
        if stripped.kind == "array":
            extent = stripped.dims[0] if stripped.dims else 0
            return [(f"[{i}]", self.index(i)) for i in range(extent)]
        if stripped.kind == "pointer":
            target = stripped.target
            if target is None or target.strip().kind in ("void", "function") or \
                    not self._readable_pointer():
                return []
            return [("*", self.deref())]
        return []

    def _readable_pointer(self) -> bool:
        try:
            return self.as_int() != 0
        except ValueAccessError:
            return False

    @property
    def has_children(self) -> bool:
        stripped = self.type.strip()
        if self.optimized_out:
            return False
        if stripped.kind in ("struct", "union", "array"):
            return True
        return stripped.kind == "pointer" and stripped.target is not None and \
            stripped.target.strip().kind not in ("void", "function")

    # --------------------------------------------------------------- formatting

    def format(self) -> str:
        if self.optimized_out:
            return "<optimized out>"
        try:
            return self._format()
        except ValueAccessError as error:
            return f"<error: {error}>"

    def _format(self) -> str:
        stripped = self.type.strip()
        kind = stripped.kind
        if kind in ("struct", "union"):
            return "{...}"
        if kind == "array":
            if stripped.target is not None and stripped.target.is_char:
                return _quote(self.raw())
            return "{...}"
        if kind == "enum":
            number = self.as_int()
            name = stripped.enumerators.get(number)
            return name if name is not None else str(number)
        if kind == "pointer":
            return self._format_pointer(stripped)
        if kind == "function" or kind == "void":
            return f"<{kind}>"
        if stripped.encoding == ATE_FLOAT:
            data = self.raw()
            if len(data) in (4, 8):
                return repr(struct.unpack("<f" if len(data) == 4 else "<d", data)[0])
            return f"<float of {len(data)} bytes>"
        number = self.as_int()
        if stripped.encoding == ATE_BOOLEAN:
            return "true" if number else "false"
        if self.type.is_char:
            return f"{number} {_char(number & 0xFF)}"
        return str(number)

    def _format_pointer(self, stripped: CType) -> str:
        address = self.as_int()
        text = f"{address:#x}"
        if address == 0:
            return "0x0"
        if self.symbols is not None:
            found = self.symbols.lookup(address, 1 << 16)
            if found is not None:
                name, offset = found
                text += f" <{name}+{offset}>" if offset else f" <{name}>"
        target = stripped.target
        if target is not None and target.is_char and self.memory is not None:
            text += " " + _quote(self._string(address))
        return text

    def _string(self, address: int) -> bytes:
        out = bytearray()
        for offset in range(MAX_STRING):
            try:
                byte = self.memory(address + offset, 1) if self.memory else b""
            except Exception:
                break
            if not byte or byte == b"\0":
                return bytes(out) + b"\0"
            out += byte
        return bytes(out)


def _char(code: int) -> str:
    if code == 0:
        return "'\\0'"
    if 32 <= code < 127 and code not in (39, 92):
        return f"'{chr(code)}'"
    return f"'\\x{code:02x}'"


def _quote(data: bytes) -> str:
    end = data.find(b"\0")
    body = data if end < 0 else data[:end]
    shown = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}"
                    for b in body)
    return f'"{shown}"' + ("..." if end < 0 else "")
