"""Reg <-> Unicorn register access for one engine."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

from unicorn import Uc
from unicorn import x86_const as x86
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE
from unicorn.unicorn_py3.unicorn import uclib

from whpx_core.platform.delivery import segment_from_descriptor
from whpx_core.platform.emulated.debug_registers import FastRegisters
from whpx_core.platform.emulated.native import NativeSlice
from whpx_core.platform.emulated.unicorn_internals import CpuInternals
from whpx_core.platform.registers import INTERRUPT_SHADOW, Reg, RegValue, Segment, Table

EFER_MSR = 0xC0000080
_PROT_READ = 1
# UC_CTL_WRITE(UC_CTL_TB_REMOVE_CACHE, 2 arguments), encoded as the binding does.
_CTL_REMOVE_CACHE = UC_CTL_TB_REMOVE_CACHE | 2 << 26 | UC_CTL_IO_WRITE << 30
uclib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_uint64)]
uclib.uc_vmem_translate.restype = ctypes.c_int

_SIMPLE: dict[Reg, int] = {
    Reg.RAX: x86.UC_X86_REG_RAX, Reg.RCX: x86.UC_X86_REG_RCX, Reg.RDX: x86.UC_X86_REG_RDX,
    Reg.RBX: x86.UC_X86_REG_RBX, Reg.RSP: x86.UC_X86_REG_RSP, Reg.RBP: x86.UC_X86_REG_RBP,
    Reg.RSI: x86.UC_X86_REG_RSI, Reg.RDI: x86.UC_X86_REG_RDI, Reg.R8: x86.UC_X86_REG_R8,
    Reg.R9: x86.UC_X86_REG_R9, Reg.R10: x86.UC_X86_REG_R10, Reg.R11: x86.UC_X86_REG_R11,
    Reg.R12: x86.UC_X86_REG_R12, Reg.R13: x86.UC_X86_REG_R13, Reg.R14: x86.UC_X86_REG_R14,
    Reg.R15: x86.UC_X86_REG_R15, Reg.RIP: x86.UC_X86_REG_RIP,
    Reg.RFLAGS: x86.UC_X86_REG_RFLAGS, Reg.CR0: x86.UC_X86_REG_CR0,
    Reg.CR2: x86.UC_X86_REG_CR2, Reg.CR3: x86.UC_X86_REG_CR3, Reg.CR4: x86.UC_X86_REG_CR4,
    Reg.CR8: x86.UC_X86_REG_CR8, Reg.DR0: x86.UC_X86_REG_DR0, Reg.DR1: x86.UC_X86_REG_DR1,
    Reg.DR2: x86.UC_X86_REG_DR2, Reg.DR3: x86.UC_X86_REG_DR3, Reg.DR6: x86.UC_X86_REG_DR6,
    Reg.DR7: x86.UC_X86_REG_DR7,
}
_SELECTOR: dict[Reg, int] = {
    Reg.ES: x86.UC_X86_REG_ES, Reg.CS: x86.UC_X86_REG_CS, Reg.SS: x86.UC_X86_REG_SS,
    Reg.DS: x86.UC_X86_REG_DS, Reg.FS: x86.UC_X86_REG_FS, Reg.GS: x86.UC_X86_REG_GS,
}
_SYSTEM_SEGMENT = {Reg.TR: x86.UC_X86_REG_TR, Reg.LDTR: x86.UC_X86_REG_LDTR}
_TABLE = {Reg.GDTR: x86.UC_X86_REG_GDTR, Reg.IDTR: x86.UC_X86_REG_IDTR}
_BASE = {Reg.FS: x86.UC_X86_REG_FS_BASE, Reg.GS: x86.UC_X86_REG_GS_BASE}

# Applied first when several registers are set at once: a selector load reads the GDT
# through the paging state, so mode and tables must already be in place.
_SET_ORDER = {reg: n for n, reg in enumerate(
    (Reg.CR0, Reg.CR3, Reg.CR4, Reg.EFER, Reg.GDTR, Reg.IDTR, Reg.TR, Reg.LDTR,
     Reg.CS, Reg.SS, Reg.DS, Reg.ES, Reg.FS, Reg.GS))}


class UnicornRegisters:
    def __init__(
        self, uc: Uc, internals: CpuInternals, read_linear: Callable[[int, int], bytes],
        batch: FastRegisters | NativeSlice, native: NativeSlice | None = None,
    ) -> None:
        self._uc = uc
        self._handle = uc._uch
        self._scratch = ctypes.c_uint64()
        self._scratch_ref = ctypes.byref(self._scratch)
        self._internals = internals
        self._read_linear = read_linear
        self._fast = batch  # the vCPU's batch reader: the C slice's, or ctypes
        self._native = native
        self._batch_ids: dict[tuple[Reg, ...], tuple[int, ...]] = {}

    # The binding's reg_read / reg_write cost about 2.3 us each (it re-derives the value
    # type on every call); stepping reads a dozen registers, so plain 64-bit registers
    # go straight to the C library (0.7 us).
    def read_u64(self, uid: int) -> int:
        uclib.uc_reg_read(self._handle, uid, self._scratch_ref)
        return self._scratch.value

    def write_u64(self, uid: int, value: int) -> None:
        self._scratch.value = value
        uclib.uc_reg_write(self._handle, uid, self._scratch_ref)

    def remove_cache(self, begin: int, end: int) -> None:
        """uc_ctl_remove_cache without the binding's argument encoding (~5 us a call)."""
        uclib.uc_ctl(self._handle, _CTL_REMOVE_CACHE, ctypes.c_uint64(begin),
                     ctypes.c_uint64(end))

    def translate(self, gva: int) -> int | None:
        """Unicorn's own page walk (0.7 us against ~4 us in Python). On a miss it writes
        the address into CR2 as if a fault had happened, so CR2 is put back."""
        if self._native is not None:
            return self._native.translate(gva, _PROT_READ)
        cr2 = self.read_u64(x86.UC_X86_REG_CR2)
        if uclib.uc_vmem_translate(self._handle, gva, _PROT_READ, self._scratch_ref) == 0:
            return self._scratch.value
        self.write_u64(x86.UC_X86_REG_CR2, cr2)
        return None

    def read_many(self, names: list[Reg]) -> list[RegValue]:
        """Several registers: the plain 64-bit ones in one batch (the engine reads RIP,
        RSP and RFLAGS around every step)."""
        ids = self._batch_ids.get(tuple(names))
        if ids is None:
            if not all(name in _SIMPLE for name in names):
                return [self.read(name) for name in names]
            ids = self._batch_ids[tuple(names)] = tuple(_SIMPLE[name] for name in names)
        return self._fast.read(ids)

    def read(self, reg: Reg) -> RegValue:
        uid = _SIMPLE.get(reg)
        if uid is not None:
            uclib.uc_reg_read(self._handle, uid, self._scratch_ref)
            return self._scratch.value
        uc = self._uc
        if (uid := _SELECTOR.get(reg)) is not None:
            return self._segment(reg, uc.reg_read(uid))
        if (uid := _SYSTEM_SEGMENT.get(reg)) is not None:
            selector, base, limit, flags = uc.reg_read(uid)
            return Segment(selector, base, limit, (flags >> 8) & 0xF0FF)
        if (uid := _TABLE.get(reg)) is not None:
            _, base, limit, _ = uc.reg_read(uid)
            return Table(base, limit)
        if reg is Reg.EFER:
            return uc.reg_read(x86.UC_X86_REG_MSR, EFER_MSR)
        if reg is Reg.INTERRUPT_STATE:
            return INTERRUPT_SHADOW if self._internals.interrupt_shadow else 0
        raise KeyError(reg)

    def write(self, values: dict[Reg, RegValue]) -> None:
        uc = self._uc
        for reg in sorted(values, key=lambda r: _SET_ORDER.get(r, 99)):
            value = values[reg]
            if (uid := _SIMPLE.get(reg)) is not None:
                self.write_u64(uid, _as_int(reg, value))
            elif (uid := _SELECTOR.get(reg)) is not None:
                segment = _as_segment(reg, value)
                uc.reg_write(uid, segment.selector)
                if reg in _BASE:
                    uc.reg_write(_BASE[reg], segment.base)
            elif (uid := _SYSTEM_SEGMENT.get(reg)) is not None:
                s = _as_segment(reg, value)
                uc.reg_write(uid, (s.selector, s.base, s.limit, (s.attributes & 0xF0FF) << 8))
            elif (uid := _TABLE.get(reg)) is not None:
                if not isinstance(value, Table):
                    raise TypeError(f"{reg.name} takes a Table, not {value!r}")
                uc.reg_write(uid, (0, value.base, value.limit, 0))
            elif reg is Reg.EFER:
                uc.reg_write(x86.UC_X86_REG_MSR, (EFER_MSR, _as_int(reg, value)))
            elif reg is Reg.INTERRUPT_STATE:
                self._internals.interrupt_shadow = bool(_as_int(reg, value) & INTERRUPT_SHADOW)
            else:
                raise KeyError(reg)

    def _segment(self, reg: Reg, selector: int) -> Segment:
        # Unicorn exposes only the selector (and FS/GS bases); the hidden part is read
        # back from the descriptor table, which is what a load put there.
        base = self._uc.reg_read(_BASE[reg]) if reg in _BASE else 0
        index = selector >> 3
        if index == 0:
            return Segment(selector, base, 0, 0)
        _, gdt_base, gdt_limit, _ = self._uc.reg_read(x86.UC_X86_REG_GDTR)
        if index * 8 + 7 > gdt_limit or selector & 4:
            return Segment(selector, base, 0, 0)
        try:
            (descriptor,) = struct.unpack("<Q", self._read_linear(gdt_base + index * 8, 8))
        except Exception:
            return Segment(selector, base, 0, 0)
        loaded = segment_from_descriptor(selector, descriptor)
        return Segment(selector, base if reg in _BASE else loaded.base, loaded.limit,
                       loaded.attributes)


def _as_int(reg: Reg, value: RegValue) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{reg.name} takes an integer, not {value!r}")
    return value & 0xFFFF_FFFF_FFFF_FFFF


def _as_segment(reg: Reg, value: RegValue) -> Segment:
    if isinstance(value, int):
        return Segment(value)
    if not isinstance(value, Segment):
        raise TypeError(f"{reg.name} takes a Segment or a selector, not {value!r}")
    return value
