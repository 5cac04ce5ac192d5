"""Where a variable is: DWARF location expressions and location lists, evaluated for one
frame. pyelftools decodes the operations; this is the stack machine that runs them.

The result is memory (an address), a register, or bytes (a computed value: stack_value,
implicit_value, or pieces put together). Anything we cannot evaluate *correctly* here
(entry values, implicit pointers, a register the frame does not know) is OptimizedOut:
the debugger then says "optimized out" instead of showing a wrong value.
"""

from __future__ import annotations

from dataclasses import dataclass

from elftools.dwarf.die import DIE
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.locationlists import (
    BaseAddressEntry,
    LocationEntry,
    LocationExpr,
    LocationParser,
)

from whpx_core.symbols.dies import cu_base
from whpx_core.symbols.model import MemoryFunction
from whpx_core.symbols.unwind import DWARF_REGISTERS

MASK = (1 << 64) - 1
MAX_STEPS = 10_000


class OptimizedOut(Exception):
    """No (correctly computable) location at this pc."""


@dataclass(frozen=True)
class Location:
    address: int | None = None
    register: str | None = None
    data: bytes | None = None  # the value itself (not writable)


@dataclass
class FrameContext:
    pc: int
    regs: dict[str, int]
    memory: MemoryFunction
    cfa: int | None = None
    frame_base: int | None = None
    outer: bool = False  # not frame 0: its registers are unwound copies, not the vCPU's


def _signed(value: int) -> int:
    value &= MASK
    return value - (1 << 64) if value >> 63 else value


class ExpressionRunner:
    def __init__(self, dwarf) -> None:
        self.dwarf = dwarf
        self._parsers: dict[int, DWARFExprParser] = {}
        self._location_lists = dwarf.location_lists()
        self._location_parser = LocationParser(self._location_lists)

    def parser(self, die: DIE) -> DWARFExprParser:
        structs = die.cu.structs
        key = id(structs)
        if key not in self._parsers:
            self._parsers[key] = DWARFExprParser(structs)
        return self._parsers[key]

    def expression_at(self, die: DIE, attribute: str, pc: int) -> list[int] | None:
        """The location expression bytes of `attribute` that apply at `pc` (None: none)."""
        found = die.attributes.get(attribute)
        if found is None:
            return None
        version = die.cu.header.version
        if not LocationParser.attribute_has_location(found, version):
            return None
        try:
            parsed = self._location_parser.parse_from_attribute(found, version, die)
        except Exception as error:
            raise OptimizedOut(f"unreadable location list ({error})") from None
        if isinstance(parsed, LocationExpr):
            return parsed.loc_expr
        base = cu_base(die.cu)
        default = None
        for entry in parsed:
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
            elif isinstance(entry, LocationEntry):
                if entry.begin_offset == -1:
                    default = entry.loc_expr
                    continue
                low, high = entry.begin_offset, entry.end_offset
                if not entry.is_absolute:
                    low, high = low + base, high + base
                if low <= pc < high:
                    return entry.loc_expr
        return default

    def location(self, die: DIE, expr: list[int], frame: FrameContext) -> Location:
        if not expr:
            raise OptimizedOut("empty location")
        return self._run(die, expr, frame, want_location=True)

    def value(self, die: DIE, expr: list[int], frame: FrameContext) -> int:
        """An expression that computes a number (a frame base)."""
        result = self._run(die, expr, frame, want_location=True)
        if result.address is not None:
            return result.address
        if result.register is not None:
            return self._register(frame, result.register)
        assert result.data is not None
        return int.from_bytes(result.data[:8].ljust(8, b"\0"), "little")

    @staticmethod
    def _register(frame: FrameContext, name: str) -> int:
        value = frame.regs.get(name)
        if value is None:
            raise OptimizedOut(f"{name} is not known in this frame")
        return value

    def _run(self, die: DIE, expr: list[int], frame: FrameContext,
             want_location: bool) -> Location:
        ops = self.parser(die).parse_expr(expr)
        offsets = {op.offset: index for index, op in enumerate(ops)}
        ends = [ops[index + 1].offset if index + 1 < len(ops) else len(expr)
                for index in range(len(ops))]
        stack: list[int] = []
        pieces: list[bytes] = []
        register: str | None = None
        implicit: bytes | None = None
        is_value = False
        index = steps = 0
        while index < len(ops):
            steps += 1
            if steps > MAX_STEPS:
                raise OptimizedOut("location expression does not terminate")
            op = ops[index]
            name, args = op.op_name, op.args
            index += 1
            if name.startswith("DW_OP_lit"):
                stack.append(int(name[9:]))
            elif name.startswith("DW_OP_const") and name not in ("DW_OP_constx",):
                stack.append(args[0] & MASK)
            elif name in ("DW_OP_addr",):
                stack.append(args[0])
            elif name in ("DW_OP_addrx", "DW_OP_constx", "DW_OP_GNU_addr_index",
                          "DW_OP_GNU_const_index"):
                stack.append(self.dwarf.get_addr(die.cu, args[0]))
            elif name.startswith("DW_OP_reg") and name != "DW_OP_regx":
                register = _dwarf_register(int(name[9:]))
            elif name == "DW_OP_regx":
                register = _dwarf_register(args[0])
            elif name.startswith("DW_OP_breg") and name != "DW_OP_bregx":
                base = self._register(frame, _dwarf_register(int(name[10:])))
                stack.append((base + args[0]) & MASK)
            elif name == "DW_OP_bregx":
                base = self._register(frame, _dwarf_register(args[0]))
                stack.append((base + args[1]) & MASK)
            elif name == "DW_OP_fbreg":
                if frame.frame_base is None:
                    raise OptimizedOut("no frame base")
                stack.append((frame.frame_base + args[0]) & MASK)
            elif name == "DW_OP_call_frame_cfa":
                if frame.cfa is None:
                    raise OptimizedOut("CFA unknown")
                stack.append(frame.cfa)
            elif name == "DW_OP_stack_value":
                is_value = True
            elif name == "DW_OP_implicit_value":
                implicit = bytes(args[1] if len(args) > 1 else args[0])
            elif name == "DW_OP_piece":
                pieces.append(self._piece(stack, register, implicit, is_value, args[0], frame))
                stack, register, implicit, is_value = [], None, None, False
            elif name in ("DW_OP_skip", "DW_OP_bra"):
                jump = name == "DW_OP_skip" or _pop(stack) != 0
                if jump:
                    target = ends[index - 1] + args[0]
                    if target == len(expr):
                        break
                    if target not in offsets:
                        raise OptimizedOut("branch into the middle of an operation")
                    index = offsets[target]
            elif name in _SIMPLE:
                _SIMPLE[name](stack, args)
            elif name in ("DW_OP_deref", "DW_OP_deref_size"):
                size = args[0] if name == "DW_OP_deref_size" else 8
                address = _pop(stack)
                try:
                    data = frame.memory(address, size)
                except Exception as error:
                    raise OptimizedOut(f"cannot read {address:#x}") from error
                stack.append(int.from_bytes(data, "little"))
            elif name in ("DW_OP_convert", "DW_OP_GNU_convert", "DW_OP_reinterpret",
                          "DW_OP_GNU_reinterpret"):
                _convert(stack, die, args[0])
            elif name == "DW_OP_nop":
                pass
            else:  # entry values, implicit pointers, parameter refs, TLS, calls ...
                raise OptimizedOut(f"{name} is not supported")
        if pieces:
            if stack or register is not None or implicit is not None:
                raise OptimizedOut("trailing operations after the last piece")
            return Location(data=b"".join(pieces))
        if implicit is not None:
            return Location(data=implicit)
        if register is not None:
            return Location(register=register)
        if not stack:
            raise OptimizedOut("empty location")
        if is_value:
            return Location(data=stack[-1].to_bytes(8, "little"))
        return Location(address=stack[-1])

    def _piece(self, stack: list[int], register: str | None, implicit: bytes | None,
               is_value: bool, size: int, frame: FrameContext) -> bytes:
        if implicit is not None:
            return implicit[:size].ljust(size, b"\0")
        if register is not None:
            value = self._register(frame, register)
            return (value & ((1 << (8 * min(size, 8))) - 1)).to_bytes(min(size, 8), "little") \
                .ljust(size, b"\0")
        if not stack:
            raise OptimizedOut("part of the value is optimized out")
        if is_value:
            return (stack[-1] & MASK).to_bytes(8, "little")[:size].ljust(size, b"\0")
        try:
            return frame.memory(stack[-1], size)
        except Exception as error:
            raise OptimizedOut(f"cannot read {stack[-1]:#x}") from error


def _dwarf_register(number: int) -> str:
    if number >= len(DWARF_REGISTERS):
        raise OptimizedOut(f"DWARF register {number} (not a general register)")
    return DWARF_REGISTERS[number]


def _pop(stack: list[int]) -> int:
    if not stack:
        raise OptimizedOut("location expression underflows its stack")
    return stack.pop()


def _binary(function):
    def run(stack: list[int], args: list) -> None:
        right = _pop(stack)
        left = _pop(stack)
        stack.append(function(left, right) & MASK)
    return run


def _unary(function):
    def run(stack: list[int], args: list) -> None:
        stack.append(function(_pop(stack)) & MASK)
    return run


def _divide(left: int, right: int) -> int:
    if right == 0:
        raise OptimizedOut("division by zero in a location expression")
    a, b = _signed(left), _signed(right)
    quotient = abs(a) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def _modulo(left: int, right: int) -> int:
    if right == 0:
        raise OptimizedOut("division by zero in a location expression")
    return left % right


def _pick(stack: list[int], depth: int) -> None:
    if depth >= len(stack):
        raise OptimizedOut("location expression underflows its stack")
    stack.append(stack[-1 - depth])


def _rotate(stack: list[int]) -> None:
    if len(stack) < 3:
        raise OptimizedOut("location expression underflows its stack")
    stack[-3], stack[-2], stack[-1] = stack[-1], stack[-3], stack[-2]


def _swap(stack: list[int]) -> None:
    if len(stack) < 2:
        raise OptimizedOut("location expression underflows its stack")
    stack[-1], stack[-2] = stack[-2], stack[-1]


_SIMPLE = {
    "DW_OP_dup": lambda stack, args: _pick(stack, 0),
    "DW_OP_over": lambda stack, args: _pick(stack, 1),
    "DW_OP_pick": lambda stack, args: _pick(stack, args[0]),
    "DW_OP_drop": lambda stack, args: _pop(stack) and None,
    "DW_OP_swap": lambda stack, args: _swap(stack),
    "DW_OP_rot": lambda stack, args: _rotate(stack),
    "DW_OP_plus_uconst": lambda stack, args: stack.append((_pop(stack) + args[0]) & MASK),
    "DW_OP_abs": _unary(lambda value: abs(_signed(value))),
    "DW_OP_neg": _unary(lambda value: -value),
    "DW_OP_not": _unary(lambda value: ~value),
    "DW_OP_plus": _binary(lambda a, b: a + b),
    "DW_OP_minus": _binary(lambda a, b: a - b),
    "DW_OP_mul": _binary(lambda a, b: a * b),
    "DW_OP_div": _binary(_divide),
    "DW_OP_mod": _binary(_modulo),
    "DW_OP_and": _binary(lambda a, b: a & b),
    "DW_OP_or": _binary(lambda a, b: a | b),
    "DW_OP_xor": _binary(lambda a, b: a ^ b),
    "DW_OP_shl": _binary(lambda a, b: a << b if b < 64 else 0),
    "DW_OP_shr": _binary(lambda a, b: a >> b if b < 64 else 0),
    "DW_OP_shra": _binary(lambda a, b: _signed(a) >> min(b, 63)),
    "DW_OP_eq": _binary(lambda a, b: int(_signed(a) == _signed(b))),
    "DW_OP_ne": _binary(lambda a, b: int(_signed(a) != _signed(b))),
    "DW_OP_lt": _binary(lambda a, b: int(_signed(a) < _signed(b))),
    "DW_OP_le": _binary(lambda a, b: int(_signed(a) <= _signed(b))),
    "DW_OP_gt": _binary(lambda a, b: int(_signed(a) > _signed(b))),
    "DW_OP_ge": _binary(lambda a, b: int(_signed(a) >= _signed(b))),
}


def _convert(stack: list[int], die: DIE, type_offset: int) -> None:
    """DW_OP_convert to a base type: truncate (and sign-extend) to its size."""
    if not stack:
        raise OptimizedOut("location expression underflows its stack")
    if type_offset == 0:
        return  # the generic type: nothing to do
    try:
        base = die.cu.get_DIE_from_refaddr(die.cu.cu_offset + type_offset)
    except Exception as error:
        raise OptimizedOut("DW_OP_convert to an unknown type") from error
    size = base.attributes.get("DW_AT_byte_size")
    encoding = base.attributes.get("DW_AT_encoding")
    if size is None or size.value > 8:
        raise OptimizedOut("DW_OP_convert to a type wider than 64 bits")
    bits = 8 * size.value
    value = stack.pop() & ((1 << bits) - 1)
    if encoding is not None and encoding.value in (0x5, 0x6) and value >> (bits - 1):
        value -= 1 << bits
    stack.append(value & MASK)
