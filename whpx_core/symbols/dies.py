"""Small helpers over pyelftools DIEs: names, address ranges, references, files."""

from __future__ import annotations

import os

from elftools.dwarf.compileunit import CompileUnit
from elftools.dwarf.die import DIE
from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry

Ranges = list[tuple[int, int]]


def text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def attr(die: DIE, name: str):
    found = die.attributes.get(name)
    return None if found is None else found.value


def ref(die: DIE, name: str) -> DIE | None:
    """The DIE an attribute refers to (DW_AT_type, DW_AT_abstract_origin ...)."""
    if name not in die.attributes:
        return None
    try:
        return die.get_DIE_from_attribute(name)
    except Exception:  # a reference form pyelftools cannot follow: treat as absent
        return None


def origin(die: DIE) -> DIE:
    """Follow abstract_origin / specification to the DIE that has the name and type."""
    seen = 0
    while seen < 8:
        target = ref(die, "DW_AT_abstract_origin") or ref(die, "DW_AT_specification")
        if target is None:
            return die
        die = target
        seen += 1
    return die


def inherited(die: DIE, name: str):
    """An attribute of the DIE or, failing that, of its abstract origin/specification."""
    seen = 0
    while die is not None and seen < 8:
        if name in die.attributes:
            return die.attributes[name].value
        die = ref(die, "DW_AT_abstract_origin") or ref(die, "DW_AT_specification")
        seen += 1
    return None


def die_name(die: DIE) -> str | None:
    return text(inherited(die, "DW_AT_name"))


def cu_base(cu: CompileUnit) -> int:
    top = cu.get_top_DIE()
    low = attr(top, "DW_AT_low_pc")
    return low if isinstance(low, int) else 0


def die_ranges(die: DIE, range_lists) -> Ranges:
    """[lo, hi) ranges of a DIE from low_pc/high_pc or DW_AT_ranges."""
    low_attr = die.attributes.get("DW_AT_low_pc")
    high_attr = die.attributes.get("DW_AT_high_pc")
    if low_attr is not None and high_attr is not None:
        low = low_attr.value
        high = high_attr.value
        if high_attr.form != "DW_FORM_addr":
            high = low + high  # DWARF 4+: high_pc is a length
        return [(low, high)] if high > low else []
    if "DW_AT_ranges" not in die.attributes or range_lists is None:
        return []
    cu = die.cu
    base = cu_base(cu)
    out: Ranges = []
    try:
        entries = range_lists.get_range_list_at_offset(die.attributes["DW_AT_ranges"].value, cu=cu)
    except Exception:
        return []
    for entry in entries:
        if isinstance(entry, BaseAddressEntry):
            base = entry.base_address
        elif isinstance(entry, RangeEntry):
            lo, hi = entry.begin_offset, entry.end_offset
            if not entry.is_absolute:
                lo, hi = lo + base, hi + base
            if hi > lo:
                out.append((lo, hi))
    return out


def comp_dir(cu: CompileUnit) -> str:
    return text(attr(cu.get_top_DIE(), "DW_AT_comp_dir")) or ""


def normalise(path: str, base: str = "") -> str:
    return os.path.normpath(os.path.join(base, path)) if base or os.path.isabs(path) \
        else os.path.normpath(path)
