"""C types as the debugger sees them, built from DWARF type DIEs (cached per DIE).

One small class with a `kind` covers base types, pointers, typedefs, const/volatile,
enums, structs, unions, arrays and function types; `strip()` looks through typedefs and
qualifiers to what decides layout and formatting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elftools.dwarf.die import DIE

from whpx_core.symbols.dies import attr, ref, text

# DW_ATE_* encodings that matter for formatting.
ATE_BOOLEAN, ATE_FLOAT = 0x2, 0x4
_SIGNED = {0x5, 0x6, 0xd}  # signed, signed_char, signed_fixed
_CHAR = {0x6, 0x8}  # DW_ATE_signed_char, DW_ATE_unsigned_char
_QUALIFIERS = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
               "DW_TAG_restrict_type": "restrict", "DW_TAG_atomic_type": "_Atomic"}


@dataclass(eq=False)
class Member:
    name: str
    offset: int  # bytes
    type: CType
    bit_size: int | None = None
    bit_offset: int | None = None  # from the start of the member's storage, LSB first


@dataclass(eq=False)
class CType:
    kind: str  # base pointer struct union array enum typedef qualified function void
    name: str = ""
    size: int = 0
    target: CType | None = None  # pointer/typedef/qualified/array element/function return
    signed: bool = False
    encoding: int = 0
    members: list[Member] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)  # array extents, outermost first
    enumerators: dict[int, str] = field(default_factory=dict)
    qualifier: str = ""
    params: list[CType] = field(default_factory=list)

    def strip(self) -> CType:
        current = self
        for _ in range(32):
            if current.kind in ("typedef", "qualified") and current.target is not None:
                current = current.target
            else:
                break
        return current

    @property
    def byte_size(self) -> int:
        stripped = self.strip()
        if stripped.kind == "array":
            count = 1
            for extent in stripped.dims:
                count *= extent
            return count * (stripped.target.byte_size if stripped.target else 0)
        if stripped.kind == "pointer":
            return stripped.size or 8
        return stripped.size

    @property
    def is_scalar(self) -> bool:
        return self.strip().kind in ("base", "pointer", "enum")

    @property
    def is_char(self) -> bool:
        stripped = self.strip()
        return stripped.kind == "base" and stripped.size == 1 and stripped.encoding in _CHAR

    def element_array(self) -> CType:
        """For a multi-dimensional array, the type of one element of its first extent."""
        stripped = self.strip()
        if len(stripped.dims) <= 1:
            assert stripped.target is not None
            return stripped.target
        return CType("array", target=stripped.target, dims=stripped.dims[1:])

    def display(self) -> str:
        return _spell(self, "")


def _spell(ctype: CType | None, inner: str) -> str:
    """C declarator spelling: `int *[3]`, `int (*)(int, int)`, `struct node *`."""
    if ctype is None:
        return f"void{' ' + inner if inner else ''}".strip()
    kind = ctype.kind
    if kind in ("base", "struct", "union", "enum", "typedef", "void"):
        prefix = {"struct": "struct ", "union": "union ", "enum": "enum "}.get(kind, "")
        name = prefix + (ctype.name or "<anonymous>") if kind != "void" else "void"
        return f"{name} {inner}".strip() if inner else name
    if kind == "qualified":
        if ctype.target is not None and ctype.target.strip().kind == "array":
            return _spell(ctype.target, inner)  # C qualifies an array's elements, not it
        return _spell(ctype.target, f"{ctype.qualifier} {inner}".strip()) if inner \
            else f"{ctype.qualifier} {_spell(ctype.target, '')}"
    if kind == "pointer":
        target = ctype.target
        needs_parens = target is not None and target.strip().kind in ("array", "function") \
            and target.kind not in ("typedef",)
        return _spell(target, f"(*{inner})" if needs_parens else f"*{inner}")
    if kind == "array":
        extents = "".join(f"[{extent}]" if extent else "[]" for extent in ctype.dims)
        return _spell(ctype.target, f"{inner}{extents}" if inner else extents)
    if kind == "function":
        params = ", ".join(param.display() for param in ctype.params) or "void"
        return _spell(ctype.target, f"{inner}({params})")
    return ctype.name or "?"


class TypeBuilder:
    def __init__(self) -> None:
        self._cache: dict[int, CType] = {}

    def of(self, die: DIE | None) -> CType | None:
        """The CType of a type DIE (None means void)."""
        if die is None:
            return None
        cached = self._cache.get(die.offset)
        if cached is not None:
            return cached
        ctype = CType("void")
        self._cache[die.offset] = ctype  # before recursing: types may refer to themselves
        self._fill(ctype, die)
        return ctype

    def _fill(self, ctype: CType, die: DIE) -> None:
        tag = die.tag
        ctype.name = text(attr(die, "DW_AT_name")) or ""
        size = attr(die, "DW_AT_byte_size")
        ctype.size = size if isinstance(size, int) else 0
        target = ref(die, "DW_AT_type")
        if tag == "DW_TAG_base_type":
            ctype.kind = "base"
            ctype.encoding = attr(die, "DW_AT_encoding") or 0
            ctype.signed = ctype.encoding in _SIGNED
        elif tag == "DW_TAG_pointer_type" or tag == "DW_TAG_reference_type":
            ctype.kind = "pointer"
            ctype.size = ctype.size or 8
            ctype.target = self.of(target)
        elif tag == "DW_TAG_typedef":
            ctype.kind = "typedef"
            ctype.target = self.of(target)
            if ctype.target is None:
                ctype.target = CType("void")
        elif tag in _QUALIFIERS:
            ctype.kind = "qualified"
            ctype.qualifier = _QUALIFIERS[tag]
            ctype.target = self.of(target) or CType("void")
        elif tag == "DW_TAG_enumeration_type":
            ctype.kind = "enum"
            underlying = self.of(target)
            ctype.signed = underlying.strip().signed if underlying else False
            for child in die.iter_children():
                if child.tag == "DW_TAG_enumerator":
                    value = attr(child, "DW_AT_const_value")
                    if isinstance(value, int):
                        ctype.enumerators.setdefault(value, text(attr(child, "DW_AT_name"))
                                                     or "?")
            if not ctype.signed and any(value < 0 for value in ctype.enumerators):
                ctype.signed = True
        elif tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            ctype.kind = "union" if tag == "DW_TAG_union_type" else "struct"
            for child in die.iter_children():
                if child.tag == "DW_TAG_member":
                    ctype.members.append(self._member(child))
        elif tag == "DW_TAG_array_type":
            ctype.kind = "array"
            ctype.target = self.of(target)
            for child in die.iter_children():
                if child.tag == "DW_TAG_subrange_type":
                    ctype.dims.append(_extent(child))
        elif tag == "DW_TAG_subroutine_type":
            ctype.kind = "function"
            ctype.target = self.of(target)
            ctype.params = [self.of(ref(child, "DW_AT_type")) or CType("void")
                            for child in die.iter_children()
                            if child.tag == "DW_TAG_formal_parameter"]
        else:
            ctype.kind = "base"  # unknown tag: show its bytes as an unsigned number
            ctype.name = ctype.name or tag

    def _member(self, die: DIE) -> Member:
        location = attr(die, "DW_AT_data_member_location")
        offset = location if isinstance(location, int) else 0
        mtype = self.of(ref(die, "DW_AT_type")) or CType("void")
        bit_size = attr(die, "DW_AT_bit_size")
        bit_offset = None
        if isinstance(bit_size, int):
            data_bit = attr(die, "DW_AT_data_bit_offset")
            if isinstance(data_bit, int):  # DWARF 4+: from the start of the struct
                offset, bit_offset = data_bit // 8, data_bit % 8
            else:  # DWARF 2/3: from the most significant bit of the storage unit
                old = attr(die, "DW_AT_bit_offset") or 0
                storage = (attr(die, "DW_AT_byte_size") or mtype.byte_size) * 8
                bit_offset = storage - old - bit_size
        return Member(text(attr(die, "DW_AT_name")) or "", offset, mtype,
                      bit_size if isinstance(bit_size, int) else None, bit_offset)


def _extent(subrange: DIE) -> int:
    count = attr(subrange, "DW_AT_count")
    if isinstance(count, int):
        return count
    upper = attr(subrange, "DW_AT_upper_bound")
    if isinstance(upper, int):
        lower = attr(subrange, "DW_AT_lower_bound")
        return upper - (lower if isinstance(lower, int) else 0) + 1
    return 0  # flexible or variable-length: unknown
