"""The boot contract (docs/boot.md): long-mode page tables, GDT, TSS and entry registers.

Everything here is plain data written into guest RAM, so every platform boots a guest
into exactly the same state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from whpx_core.platform.registers import Reg, RegValue, Segment, Table

PML4_GPA = 0x1000
PDPT_GPA = 0x2000
PD_GPA = 0x3000  # four page directories: 0x3000-0x6FFF cover 4 GiB
TAIL_PT_GPA = 0x7000  # 4 KiB pages for RAM beyond the last whole 2 MiB page
GDT_GPA = 0x8000
TSS_GPA = 0x8100
BOOT_AREA_END = 0x10000  # nothing of the guest may load below this

STACK_SIZE = 64 * 1024
LAPIC_GPA = 0xFEE00000
LAPIC_SIZE = 0x1000

PAGE_2M = 2 * 1024 * 1024
PAGE_4K = 4096

CODE_SELECTOR = 0x08
DATA_SELECTOR = 0x10
TSS_SELECTOR = 0x18

_P, _RW, _PWT, _PCD, _PS = 0x1, 0x2, 0x8, 0x10, 0x80

# Descriptor attributes in the WHV_X64_SEGMENT_REGISTER layout (see registers.Segment).
CODE_ATTRIBUTES = 0xB | 1 << 4 | 1 << 7 | 1 << 13 | 1 << 15  # exec/read accessed, L, G
DATA_ATTRIBUTES = 0x3 | 1 << 4 | 1 << 7 | 1 << 14 | 1 << 15  # read/write accessed, D/B, G
TSS_ATTRIBUTES = 0xB | 1 << 7  # 64-bit busy TSS
TSS_LIMIT = 0x67

CR0 = 0x80050033
CR4 = 0x620
EFER = 0x500

Writer = Callable[[int, bytes], None]


def minimum_ram(vcpu_count: int) -> int:
    """The boot area plus one stack per vCPU; any guest needs more than this."""
    return BOOT_AREA_END + vcpu_count * STACK_SIZE


def stack_range(vcpu_index: int, ram_size: int) -> tuple[int, int]:
    top = ram_size - vcpu_index * STACK_SIZE
    return top - STACK_SIZE, top


def _page_tables(ram_size: int) -> dict[int, bytes]:
    """Identity map of all RAM plus the uncached local APIC page."""
    pages: dict[int, bytearray] = {
        PML4_GPA: bytearray(PAGE_4K),
        PDPT_GPA: bytearray(PAGE_4K),
    }
    struct.pack_into("<Q", pages[PML4_GPA], 0, PDPT_GPA | _P | _RW)
    for i in range(4):
        pages[PD_GPA + i * PAGE_4K] = bytearray(PAGE_4K)
        struct.pack_into("<Q", pages[PDPT_GPA], i * 8, (PD_GPA + i * PAGE_4K) | _P | _RW)

    def pde(addr: int, value: int) -> None:
        pd = pages[PD_GPA + (addr >> 30) * PAGE_4K]
        struct.pack_into("<Q", pd, ((addr >> 21) & 511) * 8, value)

    whole = ram_size // PAGE_2M * PAGE_2M
    for addr in range(0, whole, PAGE_2M):
        pde(addr, addr | _P | _RW | _PS)
    if whole < ram_size:
        tail = bytearray(PAGE_4K)
        for i, addr in enumerate(range(whole, ram_size, PAGE_4K)):
            struct.pack_into("<Q", tail, i * 8, addr | _P | _RW)
        pages[TAIL_PT_GPA] = tail
        pde(whole, TAIL_PT_GPA | _P | _RW)
    pde(LAPIC_GPA, LAPIC_GPA | _P | _RW | _PS | _PWT | _PCD)
    return {gpa: bytes(data) for gpa, data in pages.items()}


def _gdt() -> bytes:
    code = 0x00AF9B000000FFFF
    data = 0x00CF93000000FFFF
    base, limit = TSS_GPA, TSS_LIMIT
    tss_low = (
        (limit & 0xFFFF)
        | (base & 0xFFFFFF) << 16
        | 0x8B << 40  # present, 64-bit TSS (busy)
        | ((limit >> 16) & 0xF) << 48
        | ((base >> 24) & 0xFF) << 56
    )
    tss_high = base >> 32
    return struct.pack("<5Q", 0, code, data, tss_low, tss_high)


def build_boot_structures(write: Writer, ram_size: int) -> None:
    """Write page tables, GDT and TSS into guest RAM (shared by all vCPUs)."""
    if ram_size > 4 << 30:
        raise ValueError("guest RAM above 4 GiB is not supported by the boot page tables")
    for gpa, data in _page_tables(ram_size).items():
        write(gpa, data)
    write(GDT_GPA, _gdt())
    write(TSS_GPA, bytes(TSS_LIMIT + 1))


def initial_registers(
    vcpu_index: int, vcpu_count: int, ram_size: int, entry: int
) -> dict[Reg, RegValue]:
    _, stack_top = stack_range(vcpu_index, ram_size)
    data = Segment(DATA_SELECTOR, 0, 0xFFFFFFFF, DATA_ATTRIBUTES)
    regs: dict[Reg, RegValue] = {
        Reg.CR0: CR0,
        Reg.CR3: PML4_GPA,
        Reg.CR4: CR4,
        Reg.EFER: EFER,
        Reg.GDTR: Table(GDT_GPA, 5 * 8 - 1),
        Reg.IDTR: Table(0, 0),
        Reg.CS: Segment(CODE_SELECTOR, 0, 0xFFFFFFFF, CODE_ATTRIBUTES),
        Reg.DS: data,
        Reg.ES: data,
        Reg.SS: data,
        Reg.FS: data,
        Reg.GS: data,
        Reg.TR: Segment(TSS_SELECTOR, TSS_GPA, TSS_LIMIT, TSS_ATTRIBUTES),
        Reg.LDTR: Segment(0, 0, 0xFFFF, 0x2),  # null LDT: not present, so unusable
        Reg.RFLAGS: 0x2,
        Reg.RIP: entry,
        Reg.RDI: vcpu_index,
        Reg.RSI: vcpu_count,
        Reg.RDX: ram_size,
        Reg.RSP: stack_top - 8,
    }
    for reg in (Reg.RAX, Reg.RBX, Reg.RCX, Reg.RBP, Reg.R8, Reg.R9, Reg.R10, Reg.R11,
                Reg.R12, Reg.R13, Reg.R14, Reg.R15):
        regs[reg] = 0
    return regs
