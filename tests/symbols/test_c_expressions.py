"""The expression language over typed C values, against hand-built types and a fake
memory (one layer: the evaluator; the real path is in test_live.py)."""

from __future__ import annotations

import pytest

from whpx_core.symbols import CType, Member, SymbolTable, Value
from whpx_core.symbols.expressions import (
    ExpressionError,
    evaluate,
    evaluate_value,
    interpolate,
)

INT = CType("base", name="int", size=4, signed=True, encoding=0x5)
CHAR = CType("base", name="char", size=1, signed=True, encoding=0x6)
NODE = CType("struct", name="node", size=16)
NODE_PTR = CType("pointer", size=8, target=NODE)
NODE.members = [Member("value", 0, INT), Member("next", 8, NODE_PTR)]
ARRAY = CType("array", target=INT, dims=[3])
MATRIX = CType("array", target=INT, dims=[2, 3])
COLOR = CType("enum", name="color", size=4, enumerators={0: "RED", 5: "GREEN"})
SYMBOLS = SymbolTable({"nodes": 0x2000, "foo.cold": 0x1020, "arr": 0x2100})


class Context:
    def __init__(self) -> None:
        self.memory = bytearray(0x1000)  # at 0x2000
        self.put(0x2000, 7, 4)
        self.put(0x2008, 0x2010, 8)
        self.put(0x2010, 11, 4)
        self.put(0x2018, 0, 8)
        for index, value in enumerate((1, 2, 3, 4, 5, 6)):
            self.put(0x2100 + 4 * index, value, 4)
        self.put(0x2200, 5, 4)
        self.variables = {
            "p": self.value(NODE_PTR, data=(0x2000).to_bytes(8, "little")),
            "n0": self.value(NODE, address=0x2000),
            "arr": self.value(ARRAY, address=0x2100),
            "m": self.value(MATRIX, address=0x2100),
            "si": self.value(INT, data=(-3 & 0xFFFFFFFF).to_bytes(4, "little")),
            "in_rbx": self.value(INT, register="rbx", data=(9).to_bytes(4, "little")),
            "gone": Value.optimized(INT),
            "color": self.value(COLOR, address=0x2200),
            "letter": self.value(CHAR, data=b"q"),
        }

    def put(self, address: int, value: int, size: int) -> None:
        self.memory[address - 0x2000:address - 0x2000 + size] = value.to_bytes(size, "little")

    def value(self, ctype: CType, **where) -> Value:
        return Value(ctype, memory=self.read_memory, symbols=SYMBOLS, **where)

    def register(self, name: str) -> int | None:
        return {"rsi": 0x1234, "rbx": 9}.get(name)

    def symbol(self, name: str) -> int | None:
        return SYMBOLS.address_of(name)

    def read_memory(self, address: int, size: int) -> bytes:
        if not 0x2000 <= address <= 0x3000 - size:
            raise OSError(f"unmapped {address:#x}")
        return bytes(self.memory[address - 0x2000:address - 0x2000 + size])

    def variable(self, name: str) -> Value | None:
        return self.variables.get(name)


@pytest.mark.parametrize(("text", "expected"), [
    ("p->value", 7),
    ("p->value == 7", 1),
    ("p->next->value", 11),
    ("p->next->next == 0", 1),
    ("p->next != 0", 1),
    ("n0.next->value", 11),
    ("(*p).value", 7),
    ("p[1].value", 11),
    ("(p + 1)->value", 11),
    ("&n0 == p", 1),
    ("&arr[1] - &arr[0]", 1),
    ("(u64)&arr[2]", 0x2108),
    ("arr[2] * 2", 6),
    ("*(arr + 2)", 3),
    ("m[1][2]", 6),
    ("m[1][0] + m[0][1]", 6),
    ("si", (-3) & (1 << 64) - 1),  # the C variable, sign-extended, not the register si
    ("si < 0", 1),
    ("$si", 0x1234),
    ("$rsi", 0x1234),
    ("in_rbx + 1", 10),
    ("(u8)-p->value", 0xF9),
    ("color == 5", 1),
    ("letter == 'q'", 1),
    ("foo.cold", 0x1020),  # no variable 'foo': still the symbol
    ("arr == arr", 1),
])
def test_c_values(text: str, expected: int) -> None:
    assert evaluate(text, Context()) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("gone + 1", "optimized out"),
    ("n0 + 1", "a 'struct node' is not a number"),
    ("!n0", "a 'struct node' is not a number"),
    ("p->nosuch", "'struct node' has no member 'nosuch'"),
    ("n0->value", "'->' needs a pointer, not 'struct node'"),
    ("&in_rbx", "cannot take the address of a value in register rbx"),
    ("&gone", "optimized out"),
    ("arr[3]", "index 3 is outside 'int [3]'"),
    ("p->next->next->value", "cannot read 4 bytes at 0x0"),
    ("rsi.x", "unknown register or symbol 'rsi.x'"),
    ("(rsi).x", "only C variables have members"),
    ("si[0]", "cannot index 'int'"),
    ("*si", "cannot dereference 'int'"),
    ("p->", "expected a member name after '->'"),
    ("arr[1", "expected ']' to close the '['"),
    ("p->3", "expected a member name after '->', found number '3'"),
])
def test_c_value_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate(text, Context())
    assert message in str(caught.value)


def test_evaluate_value_returns_c_objects() -> None:
    context = Context()
    node = evaluate_value("*p", context)
    assert isinstance(node, Value) and node.type_name == "struct node"
    assert [(name, child.format()) for name, child in node.children()] == [
        ("value", "7"), ("next", "0x2010 <nodes+16>")]
    assert evaluate_value("p->value + 1", context) == 8
    pointer = evaluate_value("&n0", context)
    assert isinstance(pointer, Value) and pointer.type_name == "struct node *"
    assert evaluate_value("m[1]", context).type_name == "int [3]"
    assert evaluate_value("color", context).format() == "GREEN"


def test_encode_for_set_variable() -> None:
    context = Context()
    assert context.variables["si"].encode(-1) == b"\xff\xff\xff\xff"
    assert context.variables["p"].encode(0x2010) == (0x2010).to_bytes(8, "little")
    assert context.variables["in_rbx"].register == "rbx"
    assert context.variables["arr"].index(1).address == 0x2104
    assert not context.variables["gone"].writable


@pytest.mark.parametrize(("message", "expected"), [
    ("i = {p->value}", "i = 7"),
    ("{p->value * 2} {si} {color} {letter}", "14 -3 GREEN 113 'q'"),
    ("{rsi} {(u8)rsi} {p}", "0x1234 52 0x2000 <nodes>"),
    ("{{literal}} {arr[1]}", "{literal} 2"),
    ("no braces", "no braces"),
    ("bad {gone} and {p->nosuch}", "bad <error: the value of type 'int' is optimized out at "
                                   "column 1> and <error: 'struct node' has no member "
                                   "'nosuch' at column 2>"),
    ("open {brace", "open {brace"),
])
def test_logpoint_interpolation(message: str, expected: str) -> None:
    assert interpolate(message, Context()) == expected
