"""The debugger's expression language: tokenizer, parser, evaluator, limits and errors,
against a fake context (a few registers and symbols, and a bytearray of memory)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "whpx_core" / "symbols" / "expressions.py"


def _load():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if (ROOT / "whpx_core" / "symbols" / "__init__.py").exists():
        import whpx_core.symbols.expressions

        return whpx_core.symbols.expressions
    # The package is being written in parallel: load the module straight from its file.
    spec = importlib.util.spec_from_file_location("whpx_expressions_standalone", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


expressions = _load()
ExpressionError = expressions.ExpressionError
evaluate = expressions.evaluate
format_value = expressions.format_value
parse = expressions.parse

MASK = (1 << 64) - 1
BASE = 0x1000
RAX = 0x1122334455667788


class Unmapped(Exception):
    pass


class FakeContext:
    """rax.. r15, rip, rflags, cs; symbols; 4 KiB of memory at 0x1000. It knows only the
    64-bit registers, so eax/ax/al/ah... must be derived by the evaluator."""

    def __init__(self, registers: dict[str, int] | None = None) -> None:
        self.registers = {
            "rax": RAX, "rbx": 0x10, "rcx": MASK, "rdx": 0, "rsi": 0xAABBCCDD_EEFF0011,
            "rdi": 3, "rbp": 0x1800, "rsp": BASE, "r8": 0x0123456789ABCDEF, "r15": 37,
            "rip": 0xFFFFFFFF_81000123, "rflags": 0x246, "cs": 0x33,
        }
        self.registers.update(registers or {})
        self.symbols = {"smp_hit": 0x1010, "foo.cold": 0x1020, "main": 0x1100,
                        "rax": 0xDEAD, "odd$name": 0x1234, "Mixed": 0x55}
        self.memory = bytearray(0x1000)
        self.memory[0x008:0x010] = (0x1122334455667788).to_bytes(8, "little")
        self.memory[0x010:0x014] = (42).to_bytes(4, "little")  # smp_hit
        self.memory[0x018:0x020] = b"\xff" * 8
        self.memory[0x020:0x028] = (0x1008).to_bytes(8, "little")  # a pointer to 0x1008
        self.memory[0x100:0x108] = b"hello\0\0\0"
        self.reads: list[tuple[int, int]] = []

    def register(self, name: str) -> int | None:
        return self.registers.get(name)

    def symbol(self, name: str) -> int | None:
        return self.symbols.get(name)

    def read_memory(self, address: int, size: int) -> bytes:
        self.reads.append((address, size))
        if address < BASE or address + size > BASE + len(self.memory):
            raise Unmapped(f"page at {address:#x} is not mapped")
        return bytes(self.memory[address - BASE:address - BASE + size])


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


def s64(value: int) -> int:
    return value & MASK


def error_of(text: str | bytes, context: FakeContext | None = None) -> ExpressionError:
    with pytest.raises(ExpressionError) as raised:
        evaluate(text, context or FakeContext())
    return raised.value


# ------------------------------------------------------------------ arithmetic, precedence

ARITHMETIC = [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("100 / 10 / 5", 2),
    ("2 * 3 % 4", 2),
    ("7 % 4", 3),
    ("1 << 4 + 1", 32),
    ("1 + 2 << 3", 24),
    ("256 >> 2 >> 1", 32),
    ("1 < 2 == 1", 1),
    ("2 > 1 > 0", 1),
    ("3 & 5 == 5", 1),
    ("1 | 2 ^ 3 & 4", 3),
    ("6 ^ 3", 5),
    ("0 || 1 && 0", 0),
    ("1 || 0 && 0", 1),
    ("1 && 2", 1),
    ("0 || 7", 1),
    ("-2 * 3", s64(-6)),
    ("2 - -3", 5),
    ("- -3", 3),
    ("-(-3)", 3),
    ("+5", 5),
    ("~0", MASK),
    ("~0 == -1", 1),
    ("!5", 0),
    ("!0", 1),
    ("!!7", 1),
    ("0x10 + 0b101 + 0o17 + 1_000", 16 + 5 + 15 + 1000),
    ("0XFF + 0B1 + 0O7", 255 + 1 + 7),
    ("0xffff_ffff", 0xFFFFFFFF),
    ("'A'", 65),
    ("'A' + 1 == 'B'", 1),
    (r"'\n'", 10),
    (r"'\x41'", 0x41),
    (r"'\\'", 92),
    (r"'\''", 39),
    (r"'\0'", 0),
    ("-7 / 2", s64(-3)),
    ("-7 % 2", s64(-1)),
    ("7 / -2", s64(-3)),
    ("7 % -2", 1),
    ("0xffffffffffffffff + 1", 0),
    ("0x7fffffffffffffff + 1", 1 << 63),
    ("0 - 1", MASK),
    ("-1 < 0", 1),
    ("0xffffffffffffffff < 0", 0),  # a literal above INT64_MAX is unsigned
    ("-1 >> 1", MASK),  # arithmetic shift of a signed value
    ("0xffffffffffffffff >> 60", 0xF),  # logical shift of an unsigned value
    ("1 << 63", 1 << 63),
    ("1 << 64", 0),
    ("1 << 1000", 0),
    ("-8 >> 100", MASK),
    ("8 >> 100", 0),
    ("1 << -1", 0),
    ("(-0x7fffffffffffffff - 1) / -1", 1 << 63),
    ("(-0x7fffffffffffffff - 1) % -1", 0),
    ("18446744073709551615", MASK),
    ("  1\t+\n2  ", 3),
    ("((((((1))))))", 1),
]


@pytest.mark.parametrize(("text", "expected"), ARITHMETIC)
def test_arithmetic_and_precedence(ctx: FakeContext, text: str, expected: int) -> None:
    assert evaluate(text, ctx) == expected


def test_evaluate_accepts_a_parsed_tree_and_bytes(ctx: FakeContext) -> None:
    tree = parse("rbx * 2 + 1")
    assert evaluate(tree, ctx) == 0x21
    assert evaluate(tree, FakeContext({"rbx": 5})) == 11
    assert evaluate(b"rbx + 1", ctx) == 0x11


def test_format_value() -> None:
    assert format_value(16) == "0x10 (16)"
    assert format_value(0) == "0x0 (0)"
    assert format_value(MASK) == "0xffffffffffffffff (-1)"
    assert format_value(-1) == "0xffffffffffffffff (-1)"
    assert format_value(1 << 63) == "0x8000000000000000 (-9223372036854775808)"
    assert format_value((1 << 63) - 1) == "0x7fffffffffffffff (9223372036854775807)"


@given(st.integers(0, MASK))
def test_format_value_round_trips_through_the_language(value: int) -> None:
    shown = format_value(value)
    hex_part, decimal = shown.split(" ")
    assert evaluate(hex_part, FakeContext()) == value
    assert evaluate(decimal.strip("()"), FakeContext()) == value


# ------------------------------------------------------------------- names and registers

NAMES = [
    ("rax", RAX),
    ("$rax", RAX),
    ("RAX", RAX),
    ("eax", 0x55667788),
    ("$eax", 0x55667788),
    ("ax", 0x7788),
    ("al", 0x88),
    ("ah", 0x77),
    ("ecx", 0xFFFFFFFF),
    ("cl + 1", 0x100),  # sub-registers are unsigned, and promote without wrapping
    ("esi", 0xEEFF0011),
    ("si", 0x0011),
    ("sil", 0x11),
    ("spl", 0x00),
    ("esp", BASE),
    ("bpl", 0x00),
    ("bp", 0x1800),
    ("r8d", 0x89ABCDEF),
    ("r8w", 0xCDEF),
    ("r8b", 0xEF),
    ("r8l", 0xEF),
    ("r15d == 37", 1),
    ("eip", 0x81000123),
    ("ip", 0x0123),
    ("eflags", 0x246),
    ("cs", 0x33),
    ("rip", 0xFFFFFFFF_81000123),
    ("rip > 0x1000", 1),  # registers are unsigned: kernel addresses compare above user ones
    ("rcx == -1", 1),
    ("rcx < 0", 0),
    ("(s64) rcx < 0", 1),
    ("smp_hit", 0x1010),
    ("smp_hit+8", 0x1018),
    ("foo.cold", 0x1020),
    ("odd$name", 0x1234),
    ("Mixed", 0x55),
    ("main - smp_hit", 0xF0),
]


@pytest.mark.parametrize(("text", "expected"), NAMES)
def test_registers_sub_registers_and_symbols(ctx: FakeContext, text: str, expected: int) -> None:
    assert evaluate(text, ctx) == expected


def test_a_context_that_knows_sub_registers_is_asked_first() -> None:
    assert evaluate("eax", FakeContext({"eax": 5})) == 5
    assert evaluate("eax", FakeContext({"eax": 0x1_0000_0005})) == 5  # masked to 32 bits


def test_registers_win_over_symbols_and_dollar_forces_a_register(ctx: FakeContext) -> None:
    assert evaluate("rax", ctx) == RAX  # there is also a symbol named rax
    error = error_of("$smp_hit", ctx)
    assert str(error) == "unknown register '$smp_hit' at column 1"
    assert evaluate("$r15 + 1", ctx) == 38


def test_sub_register_of_an_unknown_register_is_unknown() -> None:
    context = FakeContext()
    del context.registers["rdx"]
    assert str(error_of("1 + edx", context)) == "unknown register or symbol 'edx' at column 5"


# ------------------------------------------------------------------------ casts and deref

CASTS = [
    ("(u8)0x1ff", 0xFF),
    ("(u8) 0x1ff", 0xFF),
    ("(uint8_t)256", 0),
    ("(s8)0xff", MASK),
    ("(s8)0x7f", 0x7F),
    ("(u16)-1", 0xFFFF),
    ("(s32)0x80000000", 0xFFFFFFFF_80000000),
    ("(u32)rax", 0x55667788),
    ("(unsigned char)300", 44),
    ("(signed char)0x80", s64(-128)),
    ("(char)0x80", s64(-128)),
    ("(short)0x8000", s64(-32768)),
    ("(unsigned short int)0x18000", 0x8000),
    ("(int)0xffffffff", MASK),
    ("(unsigned)-1", 0xFFFFFFFF),
    ("(unsigned int)-1", 0xFFFFFFFF),
    ("(signed)0xffffffff", MASK),
    ("(long)-1", MASK),
    ("(unsigned long long)-1", MASK),
    ("(long long int)5", 5),
    ("(int16_t)0x8000", s64(-32768)),
    ("(i32)-1", MASK),
    ("(s64)-1", MASK),
    ("(size_t)-1", MASK),
    ("(bool)0x100", 0),
    ("(u8)0xff + 1", 0x100),  # the cast binds tighter than +, and u8 promotes
    ("(u8)(0xff + 1)", 0),
    ("(s8)0x80 < 0", 1),
    ("(u8)0x80 < 0", 0),
    ("(u32)0 - 1", MASK),  # narrow operands promote to s64: no 32-bit wrap
    ("(u64)0 - 1 < 0", 0),
    ("(int)-5 / 2", s64(-2)),
    ("(u64)-5 / 2", (MASK - 4) // 2),
    ("(u64 *)0x1000 + 1", 0x1008),
    ("1 + (u64 *)0x1000", 0x1008),
    ("(u32*)0x1000 + 2", 0x1008),
    ("(u8 *)0x1000 + 3", 0x1003),
    ("(void *)0x1000 + 3", 0x1003),
    ("(u64 **)0x1000 + 1", 0x1008),
    ("(u16*)0x1010 - 2", 0x100C),
    ("(u64*)0x1010 - (u64*)0x1000", 2),
    ("(u64*)0x1000 - (u64*)0x1010", s64(-2)),
    ("(u64*)0x1000 * 2", 0x2000),
]


@pytest.mark.parametrize(("text", "expected"), CASTS)
def test_casts(ctx: FakeContext, text: str, expected: int) -> None:
    assert evaluate(text, ctx) == expected


DEREFS = [
    ("*(u64*)(rsp+8)", 0x1122334455667788, [(0x1008, 8)]),
    ("*(u64 *)(rsp + 8) == 0x1122334455667788", 1, [(0x1008, 8)]),
    ("*(rsp+8)", 0x1122334455667788, [(0x1008, 8)]),  # uncast: 8 bytes
    ("*smp_hit", 42, [(0x1010, 8)]),
    ("*(u32*)smp_hit", 42, [(0x1010, 4)]),
    ("*(int *)smp_hit == 42", 1, [(0x1010, 4)]),
    ("*(u8*)0x1008", 0x88, [(0x1008, 1)]),
    ("*(s8*)0x1008", s64(-0x78), [(0x1008, 1)]),
    ("*(char*)0x1008 < 0", 1, [(0x1008, 1)]),
    ("*(u16*)0x1008", 0x7788, [(0x1008, 2)]),
    ("*(s16*)0x1008", 0x7788, [(0x1008, 2)]),
    ("*(s32*)0x1018", MASK, [(0x1018, 4)]),
    ("*(u32*)0x1018", 0xFFFFFFFF, [(0x1018, 4)]),
    ("*(u32*)0x1008 + 1", 0x55667789, [(0x1008, 4)]),
    ("*((u32*)0x1008 + 1)", 0x11223344, [(0x100C, 4)]),
    ("**(u8**)0x1020", 0x88, [(0x1020, 8), (0x1008, 1)]),
    ("*(*(u32**)0x1020 + 1)", 0x11223344, [(0x1020, 8), (0x100C, 4)]),
    ("*(u8*)main + *((u8*)main + 1)", ord("h") + ord("e"), [(0x1100, 1), (0x1101, 1)]),
    ("(u8)*(u64*)0x1008", 0x88, [(0x1008, 8)]),
    ("0 && *(u64*)0", 0, []),  # short-circuit: the read never happens
    ("1 || *(u64*)0", 1, []),
    ("1 && *(u8*)0x1008", 1, [(0x1008, 1)]),
]


@pytest.mark.parametrize(("text", "expected", "reads"), DEREFS)
def test_dereference(ctx: FakeContext, text: str, expected: int,
                     reads: list[tuple[int, int]]) -> None:
    assert evaluate(text, ctx) == expected
    assert ctx.reads == reads


# ---------------------------------------------------------------------------------- errors

ERRORS = [
    ("1 +", "unexpected end of expression at column 4", 4),
    ("(1 + 2", "expected ')' to close the '(' at column 1, found end of expression at column 7",
     7),
    ("1 2", "expected an operator, found number '2' at column 3", 3),
    ("1 + )", "expected a value, found ')' at column 5", 5),
    ("rax rbx", "expected an operator, found name 'rbx' at column 5", 5),
    ("1 + foo", "unknown register or symbol 'foo' at column 5", 5),
    ("i = 37", "unexpected '=' (did you mean '=='?) at column 3", 3),
    ("1 # 2", "unexpected character '#' at column 3", 3),
    ("1 + é", "unexpected character 'é' at column 5", 5),
    ("1 + \x00", "unexpected character '\\x00' at column 5", 5),
    ("0x", "hex literal '0x' has no digits at column 1", 1),
    ("12abc", "invalid digit 'a' in decimal literal '12abc' at column 3", 3),
    ("0b102", "invalid digit '2' in binary literal '0b102' at column 5", 5),
    ("0o78", "invalid digit '8' in octal literal '0o78' at column 4", 4),
    ("08", "decimal literal '08' has a leading zero (write octal as 0o...) at column 1", 1),
    ("1__0", "misplaced '_' in decimal literal '1__0' at column 3", 3),
    ("1_", "misplaced '_' in decimal literal '1_' at column 2", 2),
    ("0x_1", "misplaced '_' in hex literal '0x_1' at column 3", 3),
    ("18446744073709551616", "integer literal '18446744073709551616' does not fit in 64 bits"
     " at column 1", 1),
    ("1" * 200, f"integer literal '{'1' * 200}' does not fit in 64 bits at column 1", 1),
    ("1.5", "unexpected character '.' at column 2", 2),
    ("'", "unterminated character literal at column 1", 1),
    ("'a", "unterminated character literal at column 1", 1),
    ("''", "empty character literal at column 1", 1),
    ("'ab'", "character literal holds more than one character at column 1", 1),
    (r"'\q'", "unknown escape '\\q' in character literal at column 2", 2),
    ("$", "expected a register name after '$' at column 1", 1),
    ("$1", "expected a register name after '$' at column 1", 1),
    ("(u8)", "unexpected end of expression at column 5", 5),
    ("(u8 x", "expected ')' after type name, found name 'x' at column 5", 5),
    ("(void)1", "cannot cast to 'void' at column 2", 2),
    ("(unsigned signed)1", "invalid type 'unsigned signed' at column 2", 2),
    ("(long short)1", "invalid type 'long short' at column 2", 2),
    ("*(void*)0x1000", "cannot dereference a 'void *' at column 1", 1),
    ("(u64*)1 + (u64*)2", "cannot add two pointers at column 9", 9),
    ("1 - (u8*)2", "cannot subtract 'u8 *' from an integer at column 3", 3),
    ("(u64*)8 - (u8*)2", "cannot subtract 'u8 *' from 'u64 *' at column 9", 9),
    ("1 / 0", "division by zero at column 3", 3),
    ("1 % (rdx)", "division by zero at column 3", 3),
    ("(s64)5 / (s64)0", "division by zero at column 8", 8),
    ("", "empty expression at column 1", 1),
    ("   ", "empty expression at column 1", 1),
    ("()", "expected a value, found ')' at column 2", 2),
]


@pytest.mark.parametrize(("text", "message", "column"), ERRORS)
def test_errors_say_what_and_where(text: str, message: str, column: int) -> None:
    error = error_of(text)
    assert str(error) == message
    assert error.column == column


def test_unmapped_read(ctx: FakeContext) -> None:
    error = error_of("1 + *(u64*)0x9000", ctx)
    assert str(error) == "cannot read 8 bytes at 0x9000 (dereference at column 5)"
    assert error.column == 5
    assert isinstance(error.__cause__, Unmapped)
    assert str(error_of("*(u16*)(rsp - 1)", ctx)).startswith("cannot read 2 bytes at 0xfff ")
    assert str(error_of("*(u8*)-1", ctx)).startswith("cannot read 1 bytes at 0xffffffffffffffff")


def test_context_failures_become_expression_errors() -> None:
    class Broken(FakeContext):
        def symbol(self, name: str) -> int | None:
            raise RuntimeError("no ELF loaded")

        def read_memory(self, address: int, size: int) -> bytes:
            return b"\x01"  # short read

    error = error_of("1 + foo", Broken())
    assert str(error) == "cannot get symbol 'foo' (no ELF loaded) at column 5"
    assert str(error_of("*(u32*)rsp", Broken())).startswith("cannot read 4 bytes at 0x1000")


def test_syntax_errors_are_raised_by_parse_without_a_context() -> None:
    with pytest.raises(ExpressionError, match="at column 4"):
        parse("1 +")
    parse("unknown_symbol + 1")  # names are resolved when evaluated


def test_nesting_limit(ctx: FakeContext) -> None:
    limit = expressions.MAX_DEPTH
    assert evaluate("(" * limit + "1" + ")" * limit, ctx) == 1
    assert evaluate("-" * limit + "1", ctx) == (1 if limit % 2 == 0 else MASK)
    for text in ("(" * (limit + 1) + "1" + ")" * (limit + 1),
                 "(" * 2000 + "1" + ")" * 2000,
                 "-" * (limit + 1) + "1",
                 "!~" * 1000 + "1",
                 "(u8)" * 1000 + "1",
                 "*" * 4000 + "rsp",
                 "1" + "+(1" * 1000 + ")" * 1000):
        error = error_of(text, ctx)
        assert "nested more than 100 levels deep" in str(error)
        assert error.column is not None


def test_long_flat_expressions_are_not_nesting(ctx: FakeContext) -> None:
    assert evaluate("+".join(["1"] * 2000), ctx) == 2000  # deep on the left, not nested
    assert evaluate("||".join(["0"] * 1000 + ["1"]), ctx) == 1
    assert evaluate("1 " + "* 1 + 1 " * 500, ctx) == 501


def test_length_limit(ctx: FakeContext) -> None:
    limit = expressions.MAX_LENGTH
    assert evaluate("1" + " " * (limit - 1), ctx) == 1
    error = error_of("1" + " " * limit, ctx)
    assert str(error) == f"expression is {limit + 1} characters long; the limit is {limit}"
    with pytest.raises(ExpressionError):
        parse("1+" * 100_000 + "1")


def test_bytes_that_are_not_utf8(ctx: FakeContext) -> None:
    assert str(error_of(b"1 + \xff", ctx)) == "expression is not valid UTF-8 (byte 4)"


def test_the_module_never_hands_text_to_python() -> None:
    source = SOURCE.read_text(encoding="utf-8")
    assert not re.search(r"\b(eval|exec|compile|__import__)\s*\(", source)
    forbidden = {"eval", "exec", "compile", "__import__", "getattr", "globals", "locals",
                 "vars", "open", "import_module"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else (
                function.attr if isinstance(function, ast.Attribute) else None)
            assert name not in forbidden, f"line {node.lineno} calls {name}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] + [getattr(node, "module", "")]
            assert not {"builtins", "importlib", "os", "subprocess", "ast", "re"} & set(
                modules), f"line {node.lineno} imports {modules}"


# -------------------------------------------------------------------------------- property

PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
TOKENS = st.lists(st.sampled_from([
    "(", ")", "*", "-", "+", "~", "!", "/", "%", "<<", ">>", "<", "<=", "==", "!=", "&&",
    "||", "&", "|", "^", "0", "1", "7", "0x1000", "0x1008", "0xffffffffffffffff", "'A'",
    "rax", "$rax", "eax", "al", "ah", "rsp", "rcx", "smp_hit", "foo.cold", "nosuch",
    "(u8)", "(s8)", "(u64*)", "(s16 *)", "(void*)", "(u8**)", "(unsigned long)", "(int",
    " ", "0b", "'", "$", "=",
]), max_size=40).map("".join)

BINARY_OPS = ["*", "/", "%", "+", "-", "<<", ">>", "<", "<=", ">", ">=", "==", "!=",
              "&", "^", "|", "&&", "||"]

# Mostly well-formed expressions over every construct (so most reach the evaluator:
# reads of unmapped memory, void derefs, pointer arithmetic, division by zero), some
# of them then damaged by cutting out a slice.
ATOMS = st.sampled_from([
    "0", "1", "8", "0x1000", "0x1008", "0x1020", "0xffffffffffffffff", "'A'", "rax", "$rsp",
    "eax", "ah", "r8b", "rcx", "rdx", "rsp", "smp_hit", "foo.cold", "nosuch", "$nosuch",
])
CASTS_TEXT = st.sampled_from([
    "(u8)", "(s8)", "(u16)", "(s32)", "(u64)", "(int)", "(unsigned long)", "(u64*)", "(s16 *)",
    "(void*)", "(u8**)", "(char *)",
])
WELL_FORMED = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(["-", "~", "!", "*", "+"]), inner).map("".join),
        st.tuples(CASTS_TEXT, inner).map("".join),
        inner.map(lambda text: f"({text})"),
        st.tuples(inner, st.sampled_from(BINARY_OPS), inner).map(" ".join),
    ),
    max_leaves=16,
)


@st.composite
def damaged(draw: st.DrawFn) -> str:
    text = draw(WELL_FORMED)
    if draw(st.booleans()):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 3)))
        text = text[:start] + text[end:]
    return text


def _only_expression_errors(text: str | bytes) -> None:
    try:
        value = evaluate(text, FakeContext())
    except ExpressionError as error:
        assert str(error)
    else:
        assert 0 <= value <= MASK


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_expression_errors(data: bytes) -> None:
    _only_expression_errors(data)
    _only_expression_errors(data.decode("latin-1"))


@settings(max_examples=300, deadline=1000)
@given(PRINTABLE)
def test_random_text_raises_only_expression_errors(text: str) -> None:
    _only_expression_errors(text)


@settings(max_examples=500, deadline=1000)
@given(TOKENS)
def test_random_token_soup_raises_only_expression_errors(text: str) -> None:
    _only_expression_errors(text)


@settings(max_examples=1000, deadline=1000)
@given(damaged())
def test_random_expressions_raise_only_expression_errors(text: str) -> None:
    _only_expression_errors(text)


# A reference for integer ASTs: Python ints, wrapped to 64 bits after every operation.
# Values are (bits, signed): literals are s64, registers u64, an operation is signed only
# if both operands are (shifts take the left operand's signedness), narrow casts promote
# to signed.

REGISTER_VALUES = {"rax": RAX, "rbx": 0x10, "rcx": MASK, "rdx": 0, "rdi": 3}
CAST_TYPES = {"u8": (8, False), "s8": (8, True), "u16": (16, False), "s16": (16, True),
              "u32": (32, False), "s32": (32, True), "u64": (64, False), "s64": (64, True)}

leaves = st.one_of(
    st.integers(0, 300).map(lambda n: ("num", n)),
    st.integers(0, (1 << 63) - 1).map(lambda n: ("num", n)),
    st.sampled_from(sorted(REGISTER_VALUES)).map(lambda r: ("reg", r)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.tuples(st.just("unary"), st.sampled_from("-~!"), children),
        st.tuples(st.just("cast"), st.sampled_from(sorted(CAST_TYPES)), children),
        st.tuples(st.just("binary"), st.sampled_from(BINARY_OPS), children, children),
    ),
    max_leaves=24,
)


def render(tree) -> str:
    kind = tree[0]
    if kind == "num":
        return str(tree[1]) if tree[1] % 2 else hex(tree[1])
    if kind == "reg":
        return tree[1]
    if kind == "unary":
        return f"({tree[1]}{render(tree[2])})"
    if kind == "cast":
        return f"(({tree[1]}) {render(tree[2])})"
    return f"({render(tree[2])} {tree[1]} {render(tree[3])})"


class DivisionByZero(Exception):
    pass


def to_signed(bits: int) -> int:
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def reference(tree) -> tuple[int, bool]:
    kind = tree[0]
    if kind == "num":
        return tree[1], True
    if kind == "reg":
        return REGISTER_VALUES[tree[1]], False
    if kind == "unary":
        bits, signed = reference(tree[2])
        if tree[1] == "!":
            return int(bits == 0), True
        return (-bits if tree[1] == "-" else ~bits) & MASK, signed
    if kind == "cast":
        width, signed = CAST_TYPES[tree[1]]
        bits = reference(tree[2])[0] & ((1 << width) - 1)
        if signed and bits >= 1 << (width - 1):
            bits -= 1 << width
        return bits & MASK, signed or width < 64
    op = tree[1]
    a, a_signed = reference(tree[2])
    if op in ("&&", "||"):
        if (a != 0) == (op == "||"):
            return int(op == "||"), True
        return int(reference(tree[3])[0] != 0), True
    b, b_signed = reference(tree[3])
    signed = a_signed and b_signed
    x, y = (to_signed(a), to_signed(b)) if signed else (a, b)
    if op in ("<<", ">>"):
        x = to_signed(a) if a_signed else a
        # exact Python ints, wrapped afterwards (a left shift by 64 or more loses every bit)
        result = (x << b if b < 64 else 0) if op == "<<" else x >> b
        return result & MASK, a_signed
    if op in ("/", "%"):
        if b == 0:
            raise DivisionByZero
        quotient = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        return (quotient if op == "/" else x - y * quotient) & MASK, signed
    results = {
        "*": x * y, "+": x + y, "-": x - y, "&": x & y, "^": x ^ y, "|": x | y,
        "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y,
    }
    comparison = op in ("<", "<=", ">", ">=", "==", "!=")
    return int(results[op]) & MASK, True if comparison else signed


@settings(max_examples=1000, deadline=1000)
@given(trees)
def test_random_integer_trees_match_a_python_reference(tree) -> None:
    text = render(tree)
    try:
        expected = reference(tree)[0]
    except DivisionByZero:
        with pytest.raises(ExpressionError, match="division by zero"):
            evaluate(text, FakeContext())
    else:
        assert evaluate(text, FakeContext()) == expected, text
