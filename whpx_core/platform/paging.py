"""Guest-virtual to guest-physical translation (what WHvTranslateGva does).

Long-mode 4-level paging with 1 GiB, 2 MiB and 4 KiB pages; identity when paging is
off. Used by software exception delivery and by the debugger's virtual memory access.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

CR0_PG = 1 << 31
CR0_WP = 1 << 16

_P, _RW, _US, _PS = 0x1, 0x2, 0x4, 0x80
_ADDR_MASK = 0x000F_FFFF_FFFF_F000

# Page-fault error code bits.
PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2


class PageFault(Exception):
    def __init__(self, address: int, error_code: int) -> None:
        super().__init__(f"page fault at {address:#x} (error code {error_code:#x})")
        self.address = address
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class PagingState:
    cr0: int
    cr3: int


ReadPhys = Callable[[int, int], bytes]


def translate(
    read_phys: ReadPhys, state: PagingState, va: int, *, write: bool = False, user: bool = False
) -> int:
    """Return the physical address of `va` or raise PageFault as the CPU would."""
    if not state.cr0 & CR0_PG:
        return va & 0xFFFF_FFFF_FFFF_FFFF
    access = (PF_WRITE if write else 0) | (PF_USER if user else 0)
    table = state.cr3 & _ADDR_MASK
    writable = usable = True
    for level, shift in enumerate((39, 30, 21, 12)):
        index = (va >> shift) & 0x1FF
        (entry,) = struct.unpack("<Q", read_phys(table + index * 8, 8))
        if not entry & _P:
            raise PageFault(va, access)
        writable &= bool(entry & _RW)
        usable &= bool(entry & _US)
        is_leaf = shift == 12 or (level in (1, 2) and entry & _PS)
        if is_leaf:
            if (user and not usable) or (write and not writable and (user or state.cr0 & CR0_WP)):
                raise PageFault(va, access | PF_PRESENT)
            page_mask = (1 << shift) - 1
            return (entry & _ADDR_MASK & ~page_mask) | (va & page_mask)
        table = entry & _ADDR_MASK
    raise AssertionError("unreachable")
