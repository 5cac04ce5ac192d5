"""A small, safe expression language for the debugger.

Used by the DAP ``evaluate`` request (watch, hover, debug console), by conditional
breakpoints (``i == 37``, ``p->next != 0``), hit conditions and logpoint ``{expr}``s.
The text is tokenized and parsed by hand (precedence climbing) into an AST, which a tree
walker evaluates against an `EvalContext` (registers, ELF symbols, guest memory and, for a
`VariableContext` that knows a frame, C variables).
Nothing here hands text to Python's own compiler.

Grammar (C precedence, loosest first; all binary operators are left-associative)::

    expr     := binary
    binary   := unary (BINOP unary)*        || && | ^ & (== !=) (< <= > >=) (<< >>) (+ -) (* / %)
    unary    := ('-' | '+' | '~' | '!' | '*' | '&') unary
              | '(' type ')' unary          cast, e.g. (u8) x, (s32) x, (u64 *) p
              | postfix
    postfix  := primary ('[' expr ']' | '.' NAME | '->' NAME)*
    primary  := INTEGER | CHAR | NAME | '$' NAME | '(' expr ')'
    type     := (u8|u16|u32|u64|s8..s64|i8..i64|uint8_t..|int8_t..|size_t|ssize_t|uintptr_t
                 |intptr_t|ptrdiff_t|bool|_Bool|void | C specifiers: signed unsigned char short
                 int long) '*'*

Values are 64-bit. Literals are signed 64-bit (``s64``) unless they only fit unsigned;
registers, symbols and uncast dereferences are ``u64``. Operands narrower than 64 bits
(from casts or sized reads) are promoted to ``s64``; an operation is signed only when both
operands are signed (so ``rax < 0`` is never true, ``(s64) rax < 0`` is the signed test).
Arithmetic wraps modulo 2**64; comparisons and ``! && ||`` give 0 or 1. Division truncates
toward zero; shifting by 64 or more gives 0 (or -1 for a negative signed ``>>``).
Pointer casts give C pointer arithmetic: ``(u32 *) p + 1`` is ``p + 4``.
A name is looked up as a C variable first (a local or argument of the context's frame,
then a global: only contexts with a ``variable`` method have them), then as a register
(case-insensitively; eax/ax/al/ah... are derived from the 64-bit register when the context
does not know them), then as an ELF symbol; ``$name`` is always a register. C variables
win over bare register names because a C programmer's ``si`` or ``cl`` means the variable;
``$si`` still reaches the register.

C variables are typed (DWARF, `whpx_core.symbols.values.Value`): ``p->next``, ``pt.x``,
``arr[2]``, ``m[1][2]``, ``*p`` follow their types; ``&var`` is the address of a variable
in memory; arithmetic and comparison use the variable's integer type (``int`` is s32,
``unsigned char`` u8 ...), and pointer arithmetic steps by the pointee's size. A struct or
union can be the final result (`evaluate_value` returns it for display) but not an operand.
Since C identifiers have no '.', ``foo.cold`` is still the symbol when no variable ``foo``
exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from whpx_core.symbols.ctypes_model import CType as DwarfType
from whpx_core.symbols.values import Value, ValueAccessError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Binary",
    "Cast",
    "EvalContext",
    "Expr",
    "ExpressionError",
    "Index",
    "IntType",
    "Member",
    "Name",
    "Number",
    "PointerType",
    "Unary",
    "VariableContext",
    "display",
    "evaluate",
    "evaluate_value",
    "format_value",
    "interpolate",
    "parse",
]

MAX_LENGTH = 4096
MAX_DEPTH = 100

MASK = (1 << 64) - 1
SIGN = 1 << 63


class ExpressionError(Exception):
    """A syntax or evaluation error; the message says what went wrong and where."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(message if column is None else f"{message} at column {column}")


class EvalContext(Protocol):
    def register(self, name: str) -> int | None: ...

    def symbol(self, name: str) -> int | None: ...

    def read_memory(self, address: int, size: int) -> bytes: ...



@runtime_checkable
class VariableContext(EvalContext, Protocol):
    """A context that also knows C variables (a frame's locals, arguments and globals)."""

    def variable(self, name: str) -> Value | None: ...


# ---------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class IntType:
    size: int  # bytes: 1, 2, 4 or 8
    signed: bool

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.size * 8}"


@dataclass(frozen=True, slots=True)
class PointerType:
    target: IntType | PointerType | None  # None: void

    def __str__(self) -> str:
        return f"{'void' if self.target is None else self.target} *"


CType = IntType | PointerType

U8, U16, U32, U64 = (IntType(size, False) for size in (1, 2, 4, 8))
S8, S16, S32, S64 = (IntType(size, True) for size in (1, 2, 4, 8))

_NAMED_TYPES: dict[str, IntType | None] = {"void": None, "bool": U8, "_Bool": U8}
for _width, _u, _s in ((8, U8, S8), (16, U16, S16), (32, U32, S32), (64, U64, S64)):
    _NAMED_TYPES[f"u{_width}"] = _u
    _NAMED_TYPES[f"s{_width}"] = _s
    _NAMED_TYPES[f"i{_width}"] = _s
    _NAMED_TYPES[f"uint{_width}_t"] = _u
    _NAMED_TYPES[f"int{_width}_t"] = _s
for _alias, _type in (("size_t", U64), ("uintptr_t", U64), ("ssize_t", S64), ("intptr_t", S64),
                     ("ptrdiff_t", S64)):
    _NAMED_TYPES[_alias] = _type

_C_SPECIFIERS = frozenset({"signed", "unsigned", "char", "short", "int", "long"})
_TYPE_WORDS = _C_SPECIFIERS | _NAMED_TYPES.keys()

# ------------------------------------------------------------------------------ registers

_REGISTER_BITS: dict[str, int] = {
    name: 16 for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldtr")
}

# sub-register -> (64-bit register, shift, bits)
_SUBREGISTERS: dict[str, tuple[str, int, int]] = {}
for _x in "abcd":
    _SUBREGISTERS[f"e{_x}x"] = (f"r{_x}x", 0, 32)
    _SUBREGISTERS[f"{_x}x"] = (f"r{_x}x", 0, 16)
    _SUBREGISTERS[f"{_x}l"] = (f"r{_x}x", 0, 8)
    _SUBREGISTERS[f"{_x}h"] = (f"r{_x}x", 8, 8)
for _x in ("si", "di", "bp", "sp"):
    _SUBREGISTERS[f"e{_x}"] = (f"r{_x}", 0, 32)
    _SUBREGISTERS[_x] = (f"r{_x}", 0, 16)
    _SUBREGISTERS[f"{_x}l"] = (f"r{_x}", 0, 8)
for _n in range(8, 16):
    _SUBREGISTERS[f"r{_n}d"] = (f"r{_n}", 0, 32)
    _SUBREGISTERS[f"r{_n}w"] = (f"r{_n}", 0, 16)
    _SUBREGISTERS[f"r{_n}b"] = (f"r{_n}", 0, 8)
    _SUBREGISTERS[f"r{_n}l"] = (f"r{_n}", 0, 8)
_SUBREGISTERS.update(eip=("rip", 0, 32), ip=("rip", 0, 16),
                     eflags=("rflags", 0, 32), flags=("rflags", 0, 16))
for _sub, (_, _, _width) in _SUBREGISTERS.items():
    _REGISTER_BITS[_sub] = _width

_UNSIGNED_OF_BITS = {8: U8, 16: U16, 32: U32, 64: U64}

# ----------------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Number:
    value: int  # 0 .. 2**64 - 1
    type: IntType
    column: int


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    column: int
    register_only: bool = False  # written as $name


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # - + ~ ! * (dereference)
    operand: Expr
    column: int


@dataclass(frozen=True, slots=True)
class Cast:
    type: CType
    operand: Expr
    column: int


@dataclass(frozen=True, slots=True)
class Member:
    operand: Expr
    name: str
    arrow: bool  # '->' (through a pointer) rather than '.'
    column: int


@dataclass(frozen=True, slots=True)
class Index:
    operand: Expr
    index: Expr
    column: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    column: int


Expr = Number | Name | Unary | Cast | Binary | Member | Index

# ----------------------------------------------------------------------------- tokenizer

_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
_BASE_NAMES = {2: "binary", 8: "octal", 10: "decimal", 16: "hex"}
_PREFIXES = {"0x": 16, "0X": 16, "0b": 2, "0B": 2, "0o": 8, "0O": 8}
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_PART = _IDENT_START | frozenset("0123456789.$")
_NUMBER_PART = _IDENT_START | frozenset("0123456789")
_WHITESPACE = frozenset(" \t\r\n\f\v")
_OPERATORS_2 = frozenset({"<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "->"})
_OPERATORS_1 = frozenset("+-*/%<>&^|~!()[]")
_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "a": 7, "b": 8, "f": 12, "v": 11,
            "\\": 92, "'": 39, '"': 34}


class _Token(NamedTuple):
    kind: str  # "num", "name", "reg", "op", "end"
    text: str
    column: int
    value: int = 0


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of expression"
    if token.kind == "num":
        return f"number '{token.text}'"
    if token.kind in ("name", "reg"):
        return f"name '{token.text}'"
    return f"'{token.text}'"


def _number(text: str, column: int) -> int:
    base = _PREFIXES.get(text[:2], 10)
    body = text[2:] if base != 10 else text
    kind = _BASE_NAMES[base]
    if not body:
        raise ExpressionError(f"{kind} literal '{text}' has no digits", column)
    offset = len(text) - len(body)
    for index, char in enumerate(body):
        if char == "_":
            if index == 0 or index == len(body) - 1 or body[index - 1] == "_":
                raise ExpressionError(
                    f"misplaced '_' in {kind} literal '{text}'", column + offset + index)
        elif char not in _DIGITS[base]:
            raise ExpressionError(
                f"invalid digit '{char}' in {kind} literal '{text}'", column + offset + index)
    digits = body.replace("_", "")
    if base == 10 and len(digits) > 1 and digits[0] == "0":
        raise ExpressionError(
            f"decimal literal '{text}' has a leading zero (write octal as 0o...)", column)
    if len(digits) > 64:  # also keeps int() far from its digit limit
        raise ExpressionError(f"integer literal '{text}' does not fit in 64 bits", column)
    value = int(digits, base)
    if value > MASK:
        raise ExpressionError(f"integer literal '{text}' does not fit in 64 bits", column)
    return value


def _char_literal(text: str, start: int) -> tuple[int, int]:
    """The value of the character literal opening at text[start], and the index after it."""
    column = start + 1
    index = start + 1
    if index >= len(text) or text[index] == "\n":
        raise ExpressionError("unterminated character literal", column)
    char = text[index]
    if char == "'":
        raise ExpressionError("empty character literal", column)
    if char == "\\":
        index += 1
        if index >= len(text):
            raise ExpressionError("unterminated character literal", column)
        escape = text[index]
        if escape == "x":
            end = index + 1
            while end < len(text) and end < index + 3 and text[end] in _DIGITS[16]:
                end += 1
            if end == index + 1:
                raise ExpressionError("'\\x' needs hex digits", index + 1)
            value = int(text[index + 1:end], 16)
            index = end
        elif escape in _ESCAPES:
            value = _ESCAPES[escape]
            index += 1
        else:
            raise ExpressionError(f"unknown escape '\\{escape}' in character literal", index)
    else:
        value = ord(char)
        index += 1
    if index >= len(text):
        raise ExpressionError("unterminated character literal", column)
    if text[index] != "'":
        raise ExpressionError("character literal holds more than one character", column)
    return value, index + 1


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        column = index + 1
        if char in _WHITESPACE:
            index += 1
        elif char in "0123456789":
            end = index + 1
            while end < length and text[end] in _NUMBER_PART:
                end += 1
            literal = text[index:end]
            tokens.append(_Token("num", literal, column, _number(literal, column)))
            index = end
        elif char == "." and tokens and (tokens[-1].kind in ("name", "reg")
                                         or tokens[-1].text in (")", "]")) \
                and text[index - 1] not in _WHITESPACE:
            tokens.append(_Token("op", ".", column))  # member access (never in a number)
            index += 1
        elif char in _IDENT_START or char == "$":
            start = index + 1 if char == "$" else index
            if start >= length or text[start] not in _IDENT_START:
                raise ExpressionError("expected a register name after '$'", column)
            end = start + 1
            while end < length and text[end] in _IDENT_PART:
                end += 1
            kind = "reg" if char == "$" else "name"
            tokens.append(_Token(kind, text[start:end], column))
            index = end
        elif char == "'":
            value, end = _char_literal(text, index)
            tokens.append(_Token("num", text[index:end], column, value))
            index = end
        elif text[index:index + 2] in _OPERATORS_2:
            tokens.append(_Token("op", text[index:index + 2], column))
            index += 2
        elif char in _OPERATORS_1:
            tokens.append(_Token("op", char, column))
            index += 1
        elif char == "=":
            raise ExpressionError("unexpected '=' (did you mean '=='?)", column)
        else:
            shown = char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
            raise ExpressionError(f"unexpected character '{shown}'", column)
    tokens.append(_Token("end", "", length + 1))
    return tokens


# -------------------------------------------------------------------------------- parser

_PRECEDENCE = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, "<=": 7, ">": 7, ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}
_UNARY = frozenset("-+~!*&")


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.position]
        if token.kind != "end":
            self.position += 1
        return token

    def enter(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep", column)

    def whole(self) -> Expr:
        expr = self.binary(1)
        token = self.peek()
        if token.kind != "end":
            raise ExpressionError(f"expected an operator, found {_describe(token)}", token.column)
        return expr

    def binary(self, min_precedence: int) -> Expr:
        left = self.unary()
        while True:
            token = self.peek()
            precedence = _PRECEDENCE.get(token.text, 0) if token.kind == "op" else 0
            if precedence < min_precedence:
                return left
            self.advance()
            self.enter(token.column)
            right = self.binary(precedence + 1)
            self.depth -= 1
            left = Binary(token.text, left, right, token.column)

    def unary(self) -> Expr:
        token = self.peek()
        if token.kind == "op" and token.text in _UNARY:
            self.advance()
            self.enter(token.column)
            operand = self.unary()
            self.depth -= 1
            return Unary(token.text, operand, token.column)
        following = self.peek(1)
        if token.text == "(" and following.kind == "name" and following.text in _TYPE_WORDS:
            self.advance()
            target = self.type_name()
            self.enter(token.column)
            operand = self.unary()
            self.depth -= 1
            return Cast(target, operand, token.column)
        return self.postfix()

    def postfix(self) -> Expr:
        expr = self.primary()
        while True:
            token = self.peek()
            if token.kind != "op" or token.text not in ("[", ".", "->"):
                return expr
            self.advance()
            self.enter(token.column)
            if token.text == "[":
                index = self.binary(1)
                closing = self.peek()
                if closing.kind != "op" or closing.text != "]":
                    raise ExpressionError(
                        f"expected ']' to close the '[' at column {token.column}, "
                        f"found {_describe(closing)}", closing.column)
                self.advance()
                expr = Index(expr, index, token.column)
            else:
                name = self.peek()
                if name.kind != "name":
                    raise ExpressionError(
                        f"expected a member name after '{token.text}', found {_describe(name)}",
                        name.column)
                self.advance()
                parts = name.text.split(".")
                if "" in parts or any("$" in part for part in parts):
                    raise ExpressionError(f"invalid member name '{name.text}'", name.column)
                expr = Member(expr, parts[0], token.text == "->", token.column)
                for part in parts[1:]:
                    expr = Member(expr, part, False, token.column)
            self.depth -= 1

    def type_name(self) -> CType:
        first = self.peek()
        words: list[str] = []
        while self.peek().kind == "name" and self.peek().text in _C_SPECIFIERS:
            words.append(self.advance().text)
        base = _c_type(words, first.column) if words else _NAMED_TYPES[self.advance().text]
        target: CType | None = base
        while self.peek().text == "*" and self.peek().kind == "op":
            self.advance()
            target = PointerType(target)
        if target is None:
            raise ExpressionError("cannot cast to 'void'", first.column)
        token = self.peek()
        if token.text != ")" or token.kind != "op":
            raise ExpressionError(
                f"expected ')' after type name, found {_describe(token)}", token.column)
        self.advance()
        return target

    def primary(self) -> Expr:
        token = self.advance()
        if token.kind == "num":
            value = token.value
            return Number(value, S64 if value < SIGN else U64, token.column)
        if token.kind in ("name", "reg"):
            return Name(token.text, token.column, token.kind == "reg")
        if token.kind == "op" and token.text == "(":
            self.enter(token.column)
            expr = self.binary(1)
            self.depth -= 1
            closing = self.peek()
            if closing.kind != "op" or closing.text != ")":
                raise ExpressionError(
                    f"expected ')' to close the '(' at column {token.column}, "
                    f"found {_describe(closing)}", closing.column)
            self.advance()
            return expr
        if token.kind == "end":
            raise ExpressionError("unexpected end of expression", token.column)
        raise ExpressionError(f"expected a value, found {_describe(token)}", token.column)


def _c_type(words: list[str], column: int) -> IntType:
    counts = {word: words.count(word) for word in _C_SPECIFIERS}
    spelled = " ".join(words)
    signs = counts["signed"] + counts["unsigned"]
    sizes = counts["char"] + counts["short"] + min(counts["long"], 1)
    if signs > 1 or counts["int"] > 1 or counts["long"] > 2 or sizes > 1 or (
            counts["char"] and counts["int"]):
        raise ExpressionError(f"invalid type '{spelled}'", column)
    size = 1 if counts["char"] else 2 if counts["short"] else 8 if counts["long"] else 4
    return IntType(size, not counts["unsigned"])


def parse(text: str | bytes) -> Expr:
    """Parse an expression; `ExpressionError` (with a column) on bad syntax or limits."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ExpressionError(f"expression is not valid UTF-8 (byte {error.start})") from None
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip(" \t\r\n\f\v"):
        raise ExpressionError("empty expression", 1)
    try:
        return _Parser(_tokenize(text)).whole()
    except RecursionError:  # the depth limit should make this unreachable
        raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep") from None


# ----------------------------------------------------------------------------- evaluator


class _Value(NamedTuple):
    bits: int  # 0 .. 2**64 - 1
    type: CType
    obj: Value | None = None  # the typed C value this came from (variables and their parts)


def _signed(bits: int) -> int:
    return bits - (1 << 64) if bits & SIGN else bits


def _promotes_signed(ctype: CType) -> bool:
    """After promotion to 64 bits, is the operand signed? (Narrow types all fit in s64.)"""
    return isinstance(ctype, IntType) and (ctype.signed or ctype.size < 8)


def _size_of(ctype: CType | None) -> int:
    if ctype is None:
        return 1  # void * arithmetic steps by bytes, as in GNU C
    return ctype.size if isinstance(ctype, IntType) else 8


def _convert(bits: int, ctype: CType) -> int:
    """Truncate (and sign-extend) a 64-bit pattern to `ctype`, as a 64-bit pattern."""
    if isinstance(ctype, PointerType) or ctype.size == 8:
        return bits & MASK
    width = ctype.size * 8
    bits &= (1 << width) - 1
    if ctype.signed and bits >> (width - 1):
        bits |= MASK ^ ((1 << width) - 1)
    return bits


def _unreadable(size: int, address: int, column: int) -> ExpressionError:
    error = ExpressionError(
        f"cannot read {size} bytes at {address:#x} (dereference at column {column})")
    error.column = column
    return error


def _truth(flag: bool) -> _Value:
    return _Value(1 if flag else 0, S64)


class _Evaluator:
    def __init__(self, context: EvalContext) -> None:
        self.context = context
        self.depth = 0

    def value_of(self, node: Expr) -> _Value:
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Number):
            return _Value(node.value & MASK, node.type)
        if isinstance(node, Name):
            return self.name(node)
        if isinstance(node, Member):
            return self.member(node)
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Unary | Cast):
            operand = self.nested(node.operand, node.column)
            if isinstance(node, Unary) and node.op in ("*", "&"):
                return self.dereference(node, operand) if node.op == "*" \
                    else self.address_of(node, operand)
            _scalar(operand, node.column)
            if isinstance(node, Cast):
                return _Value(_convert(operand.bits, node.type), node.type)
            return self.unary(node, operand)
        raise ExpressionError(f"not an expression node: {type(node).__name__}")

    def nested(self, node: Expr, column: int) -> _Value:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep", column)
        try:
            return self.value_of(node)
        finally:
            self.depth -= 1

    def binary(self, node: Binary) -> _Value:
        # Walk the left spine iteratively: `1+1+...+1` is deep on the left but not nested.
        spine: list[Binary] = []
        current: Expr = node
        while isinstance(current, Binary):
            spine.append(current)
            current = current.left
        value = self.value_of(current)
        for step in reversed(spine):
            _scalar(value, step.column)
            if step.op in ("&&", "||"):
                if (value.bits != 0) == (step.op == "||"):
                    value = _truth(step.op == "||")
                else:
                    right = _scalar(self.nested(step.right, step.column), step.column)
                    value = _truth(right.bits != 0)
            else:
                right = _scalar(self.nested(step.right, step.column), step.column)
                value = self.arithmetic(step, value, right)
        return value

    def arithmetic(self, node: Binary, left: _Value, right: _Value) -> _Value:
        op, a, b = node.op, left.bits, right.bits
        if op in ("+", "-") and (isinstance(left.type, PointerType)
                                 or isinstance(right.type, PointerType)):
            return self.pointer_arithmetic(node, left, right)
        signed = _promotes_signed(left.type) and _promotes_signed(right.type)
        kind = S64 if signed else U64
        if op == "+":
            return _Value((a + b) & MASK, kind)
        if op == "-":
            return _Value((a - b) & MASK, kind)
        if op == "*":
            return _Value((a * b) & MASK, kind)
        if op in ("/", "%"):
            if b == 0:
                raise ExpressionError("division by zero", node.column)
            if signed:
                x, y = _signed(a), _signed(b)
                quotient = abs(x) // abs(y)
                if (x < 0) != (y < 0):
                    quotient = -quotient
                result = quotient if op == "/" else x - y * quotient
                return _Value(result & MASK, kind)
            return _Value(a // b if op == "/" else a % b, kind)
        if op in ("<<", ">>"):
            kind = S64 if _promotes_signed(left.type) else U64
            count = min(b, 64)
            if op == "<<":
                return _Value((a << count) & MASK if count < 64 else 0, kind)
            if kind.signed:
                return _Value((_signed(a) >> count) & MASK, kind)
            return _Value(a >> count, kind)
        if op in ("==", "!="):
            return _truth((a == b) == (op == "=="))
        if op in ("<", "<=", ">", ">="):
            if signed:
                a, b = _signed(a), _signed(b)
            if op == "<":
                return _truth(a < b)
            if op == "<=":
                return _truth(a <= b)
            if op == ">":
                return _truth(a > b)
            return _truth(a >= b)
        if op == "&":
            return _Value(a & b, kind)
        if op == "^":
            return _Value(a ^ b, kind)
        if op == "|":
            return _Value(a | b, kind)
        raise ExpressionError(f"unknown operator '{op}'", node.column)

    def pointer_arithmetic(self, node: Binary, left: _Value, right: _Value) -> _Value:
        lp, rp = isinstance(left.type, PointerType), isinstance(right.type, PointerType)
        if lp and rp:
            assert isinstance(left.type, PointerType) and isinstance(right.type, PointerType)
            if node.op == "+":
                raise ExpressionError("cannot add two pointers", node.column)
            size = _step(left)
            if size != _step(right):
                raise ExpressionError(
                    f"cannot subtract '{right.type}' from '{left.type}'", node.column)
            difference = _signed((left.bits - right.bits) & MASK)
            quotient = abs(difference) // size
            return _Value((-quotient if difference < 0 else quotient) & MASK, S64)
        if rp and node.op == "-":
            raise ExpressionError(f"cannot subtract '{right.type}' from an integer", node.column)
        pointer, offset = (left, right) if lp else (right, left)
        assert isinstance(pointer.type, PointerType)
        step = (offset.bits * _step(pointer)) & MASK
        bits = (pointer.bits + step if node.op == "+" else pointer.bits - step) & MASK
        return _Value(bits, pointer.type, _moved_pointer(pointer.obj, bits))

    def unary(self, node: Unary, operand: _Value) -> _Value:
        if node.op == "*":
            return self.dereference(node, operand)
        if node.op == "!":
            return _truth(operand.bits == 0)
        kind = S64 if _promotes_signed(operand.type) else U64
        if node.op == "-":
            return _Value(-operand.bits & MASK, kind)
        if node.op == "~":
            return _Value(~operand.bits & MASK, kind)
        return _Value(operand.bits, kind)  # unary +

    def dereference(self, node: Unary, pointer: _Value) -> _Value:
        if pointer.obj is not None:
            kind = pointer.obj.type.strip().kind
            if kind not in ("pointer", "array"):
                raise ExpressionError(
                    f"cannot dereference '{pointer.obj.type_name}'", node.column)
            return self.typed(lambda: pointer.obj.deref(), node.column)
        target: CType = U64
        if isinstance(pointer.type, PointerType):
            if pointer.type.target is None:
                raise ExpressionError("cannot dereference a 'void *'", node.column)
            target = pointer.type.target
        size = _size_of(target)
        address = pointer.bits
        try:
            data = self.context.read_memory(address, size)
        except Exception as error:
            raise _unreadable(size, address, node.column) from error
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != size:
            raise _unreadable(size, address, node.column)
        return _Value(_convert(int.from_bytes(data, "little"), target), target)

    def typed(self, get, column: int) -> _Value:
        """A part of a C value (member, element, pointee), as an operand."""
        try:
            return _from_object(get(), column)
        except ValueAccessError as error:
            raise ExpressionError(str(error), column) from None

    def member(self, node: Member) -> _Value:
        base = self.nested(node.operand, node.column)
        obj = base.obj
        if obj is None:
            raise ExpressionError(
                f"'{node.name}' is not a member of a non-C value (only C variables have "
                "members)", node.column)
        kind = obj.type.strip().kind
        if node.arrow and kind not in ("pointer", "array"):
            raise ExpressionError(f"'->' needs a pointer, not '{obj.type_name}'", node.column)
        if node.arrow:
            return self.typed(lambda: obj.deref().member(node.name), node.column)
        return self.typed(lambda: obj.member(node.name), node.column)

    def index(self, node: Index) -> _Value:
        base = self.nested(node.operand, node.column)
        position = _scalar(self.nested(node.index, node.column), node.column)
        offset = _signed(position.bits) if _promotes_signed(position.type) else position.bits
        if base.obj is not None:
            return self.typed(lambda: base.obj.index(offset), node.column)
        if not isinstance(base.type, PointerType):
            raise ExpressionError(f"cannot index a '{base.type}'", node.column)
        moved = self.pointer_arithmetic(Binary("+", node.operand, node.index, node.column),
                                        base, position)
        return self.dereference(Unary("*", node.operand, node.column), moved)

    def address_of(self, node: Unary, operand: _Value) -> _Value:
        obj = operand.obj
        if obj is None:
            if isinstance(node.operand, Name) and not node.operand.register_only and \
                    self.ask("symbol", node.operand.name, node.operand) == operand.bits:
                return _Value(operand.bits, U64)  # an ELF symbol's value is its address
            raise ExpressionError("'&' needs a variable in memory", node.column)
        if obj.address is None:
            where = f"register {obj.register}" if obj.register else "no memory"
            raise ExpressionError(f"cannot take the address of a value in {where}",
                                  node.column)
        pointer = DwarfType("pointer", size=8, target=obj.type)
        value = Value(pointer, data=obj.address.to_bytes(8, "little"), memory=obj.memory,
                      symbols=obj.symbols)
        return _Value(obj.address, PointerType(_plain(obj.type)), value)

    def name(self, node: Name) -> _Value:
        name = node.name
        variable = self.variable(node)
        if variable is not None:
            return variable
        register = name.lower()
        value = self.ask("register", register, node)
        if value is not None:
            bits = _REGISTER_BITS.get(register, 64)
            return _Value(value & ((1 << bits) - 1), _UNSIGNED_OF_BITS[bits])
        if register in _SUBREGISTERS:
            parent, shift, bits = _SUBREGISTERS[register]
            whole = self.ask("register", parent, node)
            if whole is not None:
                return _Value((whole >> shift) & ((1 << bits) - 1), _UNSIGNED_OF_BITS[bits])
        if node.register_only:
            raise ExpressionError(f"unknown register '${name}'", node.column)
        value = self.ask("symbol", name, node)
        if value is not None:
            return _Value(value & MASK, U64)
        raise ExpressionError(f"unknown register or symbol '{name}'", node.column)

    def variable(self, node: Name) -> _Value | None:
        if node.register_only or not isinstance(self.context, VariableContext):
            return None
        parts = node.name.split(".")
        try:
            found = self.context.variable(parts[0])
        except Exception as error:
            raise ExpressionError(f"cannot get variable '{parts[0]}' ({error})",
                                  node.column) from None
        if found is None:
            return None
        if not isinstance(found, Value):
            raise ExpressionError(f"variable '{parts[0]}' is not a typed value", node.column)
        obj = found

        def members() -> Value:
            current = obj
            for part in parts[1:]:
                if not part:
                    raise ValueAccessError(f"invalid member name in '{node.name}'")
                current = current.member(part)
            return current

        return self.typed(members, node.column)

    def ask(self, what: str, name: str, node: Name) -> int | None:
        try:
            value = (self.context.register if what == "register" else self.context.symbol)(name)
        except Exception as error:
            raise ExpressionError(f"cannot get {what} '{name}' ({error})", node.column) from None
        if value is not None and not isinstance(value, int):
            raise ExpressionError(f"{what} '{name}' is not an integer", node.column)
        return value


def _run(text_or_expr: str | bytes | Expr, context: EvalContext) -> _Value:
    expr = (parse(text_or_expr) if isinstance(text_or_expr, str | bytes | bytearray)
            else text_or_expr)
    try:
        return _Evaluator(context).value_of(expr)
    except RecursionError:  # only a hand-built AST can get here
        raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep") from None


def evaluate(text_or_expr: str | bytes | Expr, context: EvalContext) -> int:
    """The expression's value as a 64-bit pattern (0 .. 2**64 - 1); comparisons give 0/1."""
    return _scalar(_run(text_or_expr, context), 1).bits


def evaluate_value(text_or_expr: str | bytes | Expr, context: EvalContext) -> int | Value:
    """Like `evaluate`, but a result that is a C variable or a part of one (a struct, an
    array element, ``*p``) comes back as its typed `Value`, for display and children."""
    result = _run(text_or_expr, context)
    return result.obj if result.obj is not None else result.bits


def display(text_or_expr: str | bytes | Expr, context: EvalContext) -> str:
    """The value as a person reads it: C values as C (``37``, ``BLUE``, ``0x1000 <sym>``),
    signed and narrow results in decimal, 64-bit unsigned ones and pointers in hex."""
    result = _run(text_or_expr, context)
    if result.obj is not None:
        return result.obj.format()
    if isinstance(result.type, IntType) and (result.type.signed or result.type.size < 8):
        return str(_signed(result.bits) if result.type.signed else result.bits)
    return f"{result.bits:#x}"


def interpolate(message: str, context: EvalContext) -> str:
    """A logpoint message with every ``{expression}`` replaced by `display` of it; ``{{``
    and ``}}`` are literal braces. A failing expression becomes ``<error: ...>`` in the
    text: a logpoint reports, it never stops the guest."""
    out: list[str] = []
    index = 0
    while index < len(message):
        char = message[index]
        if char in "{}" and message[index:index + 2] in ("{{", "}}"):
            out.append(char)
            index += 2
            continue
        if char != "{":
            out.append(char)
            index += 1
            continue
        end = message.find("}", index + 1)
        if end < 0:
            out.append(message[index:])
            break
        try:
            out.append(display(message[index + 1:end], context))
        except ExpressionError as error:
            out.append(f"<error: {error}>")
        index = end + 1
    return "".join(out)


# ------------------------------------------------------------------------ C values


def _plain(ctype: DwarfType | None) -> IntType | PointerType | None:
    """The expression-language type closest to a DWARF type (for casts and printing)."""
    if ctype is None:
        return None
    stripped = ctype.strip()
    if stripped.kind in ("base", "enum") and stripped.size in (1, 2, 4, 8):
        return IntType(stripped.size, stripped.signed)
    if stripped.kind == "pointer":
        return PointerType(_plain(stripped.target) if stripped.target is not None and
                           stripped.target.strip().kind in ("base", "enum") else None)
    return None


def _from_object(obj: Value, column: int) -> _Value:
    if obj.optimized_out:
        raise ExpressionError(f"the value of type '{obj.type_name}' is optimized out", column)
    stripped = obj.type.strip()
    try:
        if stripped.kind in ("base", "enum"):
            number = obj.as_int()
            size = stripped.size if stripped.size in (1, 2, 4, 8) else 8
            return _Value(number & MASK, IntType(size, stripped.signed), obj)
        if stripped.kind == "pointer":
            return _Value(obj.as_int() & MASK, PointerType(_plain(stripped.target)), obj)
    except ValueAccessError as error:
        raise ExpressionError(str(error), column) from None
    if stripped.kind == "array":
        if obj.address is None:
            return _Value(0, U64, obj)  # a computed array: displayable, not an operand
        return _Value(obj.address, PointerType(_plain(stripped.target)), obj)
    return _Value(obj.address or 0, U64, obj)  # struct, union, function: display only


def _scalar(value: _Value, column: int) -> _Value:
    """`value` as an operand: structs and unions (and computed arrays) are not numbers."""
    obj = value.obj
    if obj is not None:
        kind = obj.type.strip().kind
        if kind in ("struct", "union", "function", "void") or (
                kind == "array" and obj.address is None):
            raise ExpressionError(f"a '{obj.type_name}' is not a number", column)
    return value


def _step(pointer: _Value) -> int:
    """How far `pointer + 1` moves: the pointee's size (DWARF types know structs too)."""
    if pointer.obj is not None:
        stripped = pointer.obj.type.strip()
        target = stripped.target if stripped.kind in ("pointer", "array") else None
        if stripped.kind == "array":
            target = pointer.obj.type.element_array()
        if target is not None and target.strip().kind not in ("void", "function"):
            return target.byte_size or 1
        if target is not None:
            return 1
    assert isinstance(pointer.type, PointerType)
    return _size_of(pointer.type.target)


def _moved_pointer(obj: Value | None, bits: int) -> Value | None:
    """The typed pointer after arithmetic (an array decays to a pointer to its element)."""
    if obj is None:
        return None
    stripped = obj.type.strip()
    if stripped.kind == "array":
        pointer = DwarfType("pointer", size=8, target=obj.type.element_array())
    elif stripped.kind == "pointer":
        pointer = obj.type
    else:
        return None
    return Value(pointer, data=bits.to_bytes(8, "little"), memory=obj.memory,
                 symbols=obj.symbols)


def format_value(value: int) -> str:
    """``0x10 (16)``; the decimal is negative when the sign bit is set."""
    bits = value & MASK
    return f"{bits:#x} ({_signed(bits)})"
