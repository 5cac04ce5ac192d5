"""Hardware breakpoints (DR0-DR3 semantics) on the emulated platform, built on Unicorn hooks.

Two owners share the machinery on each vCPU engine:
- the debugger's slots (`Partition.set_hardware_breakpoints`): hits exit to the host;
- the guest's own DR0-DR3/DR7: hits go to the guest's #DB handler with DR6.Bn set.

Hooks are restricted to the watched addresses (a UC_HOOK_CODE with begin = end = address,
UC_HOOK_MEM_READ/WRITE over a few bytes), so code elsewhere runs at full speed.

What Unicorn 2.1.4 does, measured (tests/platform/test_hw_breakpoints.py keeps it true):
- `emu_stop` in a code hook: the instruction does not execute, RIP stays at it. That is
  exactly an execute breakpoint (a fault: reported before the instruction).
- `emu_stop` in a memory hook aborts the instruction right after that access (Unicorn
  checks for a stop after every load and store): a store is already done, a load's
  destination register is not written, the rest (the RSP update of a push, the flags of an
  RMW) is not, and RIP stays at the instruction. Running it again would repeat the store
  (an `add` to memory adds twice). Later instructions of the translation block do not run.
- A code hook added inside a callback is not called for the rest of the current
  translation block: hooks are compiled into a block when it is translated. So "record
  the hit, stop at the next instruction with a one-shot code hook" runs on past the end of
  the instruction.
- What is exact is Unicorn's own instruction limit (the `count=` of `emu_start`, checked
  by a hook compiled into every instruction before it runs). A memory hook that sets the
  remaining limit to zero stops emulation at the next instruction boundary, after the
  accessing instruction completed: RMW, PUSH/CALL, XCHG, FXSAVE, one iteration of a REP
  string instruction, and the TF trap of the accessing instruction still happens. The
  limit lives in Unicorn's private `uc_struct` (`emu_count`); `count_field_offset()`
  finds it by probing, and data watchpoints are unavailable if it cannot.
- Memory hooks match and report guest-PHYSICAL addresses; code hooks match RIP. So a data
  slot's linear address is translated through the guest's page tables before each slice
  (at every slice, and while single-stepping whenever CR0/CR3 change).
- Unicorn implements the guest's DR7 *execute* breakpoints itself (QEMU CPU breakpoints),
  but only when the guest executes MOV to DR7: a host `reg_write` of DR7 arms nothing and
  leaves breakpoints armed by the guest in place. Data breakpoints are compiled out.
  So the guest's slots are modelled here too, from DR0-DR3/DR7 read at each slice start;
  Unicorn's own breakpoints still fire first for slots the guest armed itself (the
  platform classifies that #DB by DR6). A data breakpoint that the guest enables in the
  middle of a slice takes effect at the next slice (at most one slice later).
"""

from __future__ import annotations

import ctypes
import enum
import functools
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MODE_64,
    UC_PROT_ALL,
    Uc,
)
from unicorn import x86_const as x86

from whpx_core.platform.base import HwBreakpoint, PlatformError
from whpx_core.platform.emulated.unicorn_internals import CalibrationError, release
from whpx_core.platform.registers import RFLAGS_RF

# -- slots: validation and DR7 encoding (platform-neutral; the KVM backend uses them) ------

SLOTS = 4
EXECUTE, WRITE, READWRITE = "execute", "write", "readwrite"
_RW_BITS = {EXECUTE: 0b00, WRITE: 0b01, READWRITE: 0b11}  # DR7 R/Wn
_LEN_BITS = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}  # DR7 LENn
_KIND_OF_RW = {0b00: EXECUTE, 0b01: WRITE, 0b11: READWRITE}  # 0b10 is I/O: not modelled
_SIZE_OF_LEN = {bits: size for size, bits in _LEN_BITS.items()}
DR7_FIXED = 0x400
DR7_ENABLES = 0xFF  # L0 G0 ... L3 G3
DR6_HITS = 0xF
NO_SLOTS: tuple[HwBreakpoint | None, ...] = (None,) * SLOTS

Slots = tuple[HwBreakpoint | None, ...]


def validate_slots(
    slots: Sequence[HwBreakpoint | None], *, count: int = SLOTS, watchpoints: str | None = None
) -> Slots:
    """The slots padded to `count`, or PlatformError naming the bad slot.

    `watchpoints` is None when data breakpoints work, else why they do not.
    """
    if len(slots) > count:
        raise PlatformError(
            f"{len(slots)} hardware breakpoint slots given, but there are only {count} "
            f"(DR0-DR{count - 1})")
    for n, bp in enumerate(slots):
        if bp is not None:
            _check_slot(n, bp, watchpoints)
    return tuple(slots) + (None,) * (count - len(slots))


def _check_slot(n: int, bp: HwBreakpoint, watchpoints: str | None) -> None:
    if bp.kind not in _RW_BITS:
        raise PlatformError(
            f"slot {n}: kind {bp.kind!r} is not 'execute', 'write' or 'readwrite' "
            f"(x86 has no read-only breakpoint)")
    if not 0 <= bp.address < 1 << 64:
        raise PlatformError(f"slot {n}: address {bp.address:#x} is not a 64-bit address")
    if bp.kind == EXECUTE:
        if bp.size != 1:
            raise PlatformError(f"slot {n}: an execute breakpoint has size 1, not {bp.size}")
        return
    if bp.size not in _LEN_BITS:
        raise PlatformError(f"slot {n}: a watchpoint covers 1, 2, 4 or 8 bytes, not {bp.size}")
    if bp.address % bp.size:
        raise PlatformError(
            f"slot {n}: a {bp.size}-byte watchpoint must be {bp.size}-byte aligned "
            f"({bp.address:#x} is not)")
    if watchpoints is not None:
        raise PlatformError(f"slot {n}: no data watchpoints here: {watchpoints}")


def encode_dr7(slots: Sequence[HwBreakpoint | None]) -> int:
    """DR7 for the slots: local enable, R/W and LEN of each used slot."""
    dr7 = DR7_FIXED
    for n, bp in enumerate(slots):
        if bp is not None:
            dr7 |= 1 << 2 * n | _RW_BITS[bp.kind] << 16 + 4 * n | _LEN_BITS[bp.size] << 18 + 4 * n
    return dr7


def decode_dr7(addresses: Sequence[int], dr7: int) -> Slots:
    """The enabled breakpoints of a DR0-DR3/DR7 image (I/O breakpoints are left out)."""
    return _decode_dr7(tuple(addresses[:SLOTS]), dr7)


@functools.lru_cache(maxsize=64)
def _decode_dr7(addresses: tuple[int, ...], dr7: int) -> Slots:
    # Cached: called before every slice, and a guest's DR image rarely changes.
    out: list[HwBreakpoint | None] = []
    for n, address in enumerate(addresses[:SLOTS]):
        kind = _KIND_OF_RW.get(dr7 >> 16 + 4 * n & 3)
        if not dr7 >> 2 * n & 3 or kind is None:
            out.append(None)
            continue
        size = 1 if kind == EXECUTE else _SIZE_OF_LEN[dr7 >> 18 + 4 * n & 3]
        # The CPU ignores the address bits below the length.
        out.append(HwBreakpoint(address & ~(size - 1), kind, size))
    return tuple(out)


# -- fast register access -----------------------------------------------------------------

class FastRegisters:
    """Registers read and written straight through Unicorn's C API.

    `Uc.reg_read` costs about 2 µs a call in Python; `uc_reg_read_batch` reads ten
    registers in about 1 µs. The bookkeeping here runs before every slice, that is before
    every single step, so it must not cost more than the step itself.
    """

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self._lib = _c_library()
        self._value = ctypes.c_uint64()
        self._batches: dict[tuple[int, ...], tuple[ctypes.Array, ctypes.Array, ctypes.Array]] = {}

    def read(self, ids: tuple[int, ...]) -> list[int]:
        if self._lib is None:
            return [self._uc.reg_read(i) for i in ids]
        batch = self._batches.get(ids)
        if batch is None:  # the ctypes arrays are built once per register list
            values = (ctypes.c_uint64 * len(ids))()
            pointers = (ctypes.c_void_p * len(ids))(
                *(ctypes.addressof(values) + 8 * i for i in range(len(ids))))
            batch = self._batches[ids] = ((ctypes.c_int * len(ids))(*ids), pointers, values)
        self._lib.uc_reg_read_batch(self._uc._uch, batch[0], batch[1], len(ids))
        return batch[2][:]

    def read_one(self, reg_id: int) -> int:
        if self._lib is None:
            return int(self._uc.reg_read(reg_id))
        self._lib.uc_reg_read(self._uc._uch, reg_id, ctypes.byref(self._value))
        return self._value.value

    def write(self, reg_id: int, value: int) -> None:
        if self._lib is None:
            self._uc.reg_write(reg_id, value)
            return
        self._value.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self._lib.uc_reg_write(self._uc._uch, reg_id, ctypes.byref(self._value))


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    try:
        from unicorn.unicorn_py3.unicorn import uclib  # type: ignore[import-untyped]
    except ImportError:  # another binding layout: fall back to Uc.reg_read
        return None
    return uclib if hasattr(uclib, "uc_reg_read_batch") else None


# -- stopping after the current instruction (private Unicorn state) ------------------------

_PROBE_CODE, _PROBE_DATA = 0x1000, 0x8000


def _handle(uc: Uc) -> int:
    return ctypes.cast(uc._uch, ctypes.c_void_p).value or 0


def _readable(address: int, size: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if perms.startswith("r") and lo <= address and address + size <= hi:
                return True
    return False


def _probe_engine(code: bytes) -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000, UC_PROT_ALL)
    uc.mem_write(_PROBE_CODE, code)
    uc.reg_write(x86.UC_X86_REG_RSP, 0xF000)
    return uc


def _offsets_holding(uc: Uc, value: int, span: int) -> set[int]:
    blob = ctypes.string_at(_handle(uc), span)
    return {i for i in range(0, span - 7, 8) if struct.unpack_from("<Q", blob, i)[0] == value}


@functools.cache
def count_field_offset() -> int:
    """Offset of `emu_count` (the instruction limit of the running `emu_start`) in
    Unicorn's `uc_struct`; CalibrationError if it cannot be found and verified.

    Found as the one field holding two unusual `count=` values after two runs, then
    checked by doing what the platform does with it: a write hook zeroes it and the run
    must stop right after the writing instruction.
    """
    uc = _probe_engine(b"\x90" * 8 + b"\xf4")
    try:
        span = 0x2000
        if not _readable(_handle(uc), span):
            raise CalibrationError("Unicorn's engine state is not readable")
        found = None
        for count in (0x5A17_3C21, 0x2E6B_9D13):
            uc.emu_start(_PROBE_CODE, 0, count=count)
            at = _offsets_holding(uc, count, span)
            found = at if found is None else found & at
        if not found or len(found) != 1:
            raise CalibrationError(f"emu_count: {len(found or ())} candidate fields, expected 1")
        offset = found.pop()
    finally:
        release(uc)
    _verify_stop(offset)
    return offset


def _verify_stop(offset: int) -> None:
    # mov %rax, DATA; inc %rbx; inc %rbx; hlt -- one translation block
    code = b"\x48\x89\x04\x25" + struct.pack("<I", _PROBE_DATA) + b"\x48\xff\xc3" * 2 + b"\xf4"
    uc = _probe_engine(code)
    try:
        field_ = ctypes.c_size_t.from_address(_handle(uc) + offset)
        uc.hook_add(UC_HOOK_MEM_WRITE, lambda *args: setattr(field_, "value", 0), None,
                    _PROBE_DATA, _PROBE_DATA)
        uc.reg_write(x86.UC_X86_REG_RAX, 0x1234)
        uc.emu_start(_PROBE_CODE, 0, count=100)
        rip = uc.reg_read(x86.UC_X86_REG_RIP)
        stored = struct.unpack("<Q", uc.mem_read(_PROBE_DATA, 8))[0]
        if (rip, uc.reg_read(x86.UC_X86_REG_RBX), stored) != (_PROBE_CODE + 8, 0, 0x1234):
            raise CalibrationError(f"zeroing emu_count did not stop after the store (RIP {rip:#x})")
    finally:
        release(uc)


def watchpoints_unavailable() -> str | None:
    """None when data breakpoints work on this Unicorn build, else why not."""
    try:
        count_field_offset()
    except CalibrationError as error:
        return f"this Unicorn build cannot stop after an access ({error})"
    return None


class _CountStop:
    """Ends the running `emu_start` before the next instruction, after this one completes."""

    def __init__(self, uc: Uc) -> None:
        self._field = ctypes.c_size_t.from_address(_handle(uc) + count_field_offset())
        self._uc = uc  # keeps the engine (and so the field) alive

    def after_this_instruction(self) -> None:
        self._field.value = 0


# -- the hooks of one vCPU -----------------------------------------------------------------

class Owner(enum.Enum):
    HOST = "host"  # the debugger's slots: hits exit to the host
    GUEST = "guest"  # the guest's DR0-DR3/DR7: hits go to the guest's #DB handler


@dataclass(frozen=True, slots=True)
class _Unit:
    owner: Owner
    slot: int
    bp: HwBreakpoint

    @property
    def bit(self) -> int:
        return 1 << self.slot


@dataclass(slots=True)
class Hits:
    """What the hooks saw during one slice (DR6 B0-B3 images per owner)."""

    host_exec: int = 0
    guest_exec: int = 0
    host_data: int = 0
    guest_data: int = 0
    access_rip: int | None = None  # the instruction whose access hit a data slot
    # A guest execute slot let this instruction run because RFLAGS.RF was set; the CPU
    # clears RF once it completes (Unicorn only at some block ends), so the platform does.
    resumed_at: int | None = None

    @property
    def execute(self) -> bool:
        return bool(self.host_exec or self.guest_exec)

    @property
    def data(self) -> bool:
        return bool(self.host_data or self.guest_data)

    @property
    def any(self) -> bool:
        return self.execute or self.data or self.resumed_at is not None


@dataclass(slots=True)
class _DataHook:
    physical: int
    handles: list[int] = field(default_factory=list)


Translate = Callable[[int], int | None]  # linear -> physical, None if not mapped
_GUEST_STATE = (x86.UC_X86_REG_RFLAGS, x86.UC_X86_REG_DR7, x86.UC_X86_REG_DR0,
                x86.UC_X86_REG_DR1, x86.UC_X86_REG_DR2, x86.UC_X86_REG_DR3)


def _bits(units: Iterable[_Unit]) -> int:
    out = 0
    for unit in units:
        out |= unit.bit
    return out


class BreakpointHooks:
    """The Unicorn hooks of one vCPU engine for the debugger's and the guest's slots.

    `prepare()` runs before each slice and makes the hooks match the slots; the hooks
    record into `hits`, which the platform turns into exits or guest #DBs afterwards.
    """

    def __init__(self, uc: Uc, regs: FastRegisters) -> None:
        self._uc = uc
        self._regs = regs
        self._stop = _CountStop(uc) if watchpoints_unavailable() is None else None
        self.host: Slots = NO_SLOTS
        self._guest: Slots = NO_SLOTS
        self._exec: dict[int, tuple[int, tuple[_Unit, ...]]] = {}  # address -> hook, units
        self._data: dict[_Unit, _DataHook] = {}
        self._physical: dict[int, int | None] = {}  # linear -> physical, for `_paging`
        self._paging: tuple[int, int] | None = None
        self.hits = Hits()
        # RF for the debugger's execute slots: the address a hit was reported at. The
        # first execution there is not checked again, as the CPU does not re-check an
        # instruction whose fault-class #DB was delivered (RFLAGS.RF).
        self.reported_at: int | None = None

    @property
    def armed(self) -> bool:
        return bool(self._exec or self._data)

    def idle(self) -> bool:
        """Nothing hooked or to hook, no RF pending: a slice needs no prepare(). Clears
        what an earlier slice's hooks saw."""
        if self._exec or self._data or self.host != NO_SLOTS or self.reported_at is not None:
            return False
        if self.hits.any:
            self.hits = Hits()
        return True

    def prepare(self, rip: int, dr: Sequence[int], dr7: int, paging: tuple[int, int],
                translate: Translate, *, retranslate: bool) -> None:
        """Before a slice: hooks for the current slots (guest DRs as read now)."""
        if self.reported_at != rip:
            self.reported_at = None  # RIP moved (a step, an event, the host): RF is gone
        self.hits = Hits()
        self._guest = decode_dr7(dr, dr7) if dr7 & DR7_ENABLES else NO_SLOTS
        if not self.armed and self._guest == NO_SLOTS and self.host == NO_SLOTS:
            return
        units = self._units()
        self._arm_execute([u for u in units if u.bp.kind == EXECUTE])
        data = [u for u in units if u.bp.kind != EXECUTE and self._stop is not None]
        if retranslate or paging != self._paging:
            self._paging, self._physical = paging, {}
        self._arm_data({u: self._translate(u.bp.address, translate) for u in data})

    def _units(self) -> list[_Unit]:
        return [_Unit(owner, n, bp)
                for owner, slots in ((Owner.HOST, self.host), (Owner.GUEST, self._guest))
                for n, bp in enumerate(slots) if bp is not None]

    def _translate(self, linear: int, translate: Translate) -> int | None:
        if linear not in self._physical:
            self._physical[linear] = translate(linear)
        return self._physical[linear]

    # -- execute slots: one code hook per address -------------------------------------------
    def _arm_execute(self, units: list[_Unit]) -> None:
        wanted: dict[int, tuple[_Unit, ...]] = {}
        for unit in units:
            wanted[unit.bp.address] = (*wanted.get(unit.bp.address, ()), unit)
        for address in [a for a in self._exec if a not in wanted]:
            self._uc.hook_del(self._exec.pop(address)[0])
        for address, group in wanted.items():
            if address in self._exec:
                self._exec[address] = (self._exec[address][0], group)
                continue
            handle = self._uc.hook_add(UC_HOOK_CODE, self._on_execute, None, address, address)
            self._exec[address] = (handle, group)
            # Hooks are compiled into translated blocks: retranslate any holding `address`.
            self._uc.ctl_remove_cache(address, address + 1)

    def _on_execute(self, uc: Uc, address: int, size: int, data: object) -> None:
        entry = self._exec.get(address)
        if entry is None:
            return
        units = entry[1]
        host = _bits(u for u in units if u.owner is Owner.HOST)
        if host and self.reported_at == address:
            self.reported_at = None  # RF: this one execution runs unchecked
            host = 0
        guest = self._guest_execute_bits([u for u in units if u.owner is Owner.GUEST], address)
        if host or guest:
            self.hits.host_exec |= host
            self.hits.guest_exec |= guest
            uc.emu_stop()  # before the instruction: it does not execute

    def _guest_execute_bits(self, units: list[_Unit], address: int) -> int:
        if not units:
            return 0
        if self._regs.read_one(x86.UC_X86_REG_RFLAGS) & RFLAGS_RF:
            # Runs unchecked; RF is cleared once it completes: stop there to do it (a loop
            # back here would otherwise never hit again).
            self.hits.resumed_at = address
            if self._stop is not None:
                self._stop.after_this_instruction()
            return 0
        return self._live_guest_bits(units)

    def _live_guest_bits(self, units: list[_Unit]) -> int:
        """The guest slots among `units` that its DR7 still enables now (a MOV to DR7 in
        this slice may have changed them)."""
        if not units:
            return 0
        _, dr7, *dr = self._regs.read(_GUEST_STATE)
        live = decode_dr7(dr, dr7)
        return _bits(u for u in units if live[u.slot] == u.bp)

    # -- data slots: memory hooks on the physical address ---------------------------------------
    def _arm_data(self, wanted: dict[_Unit, int | None]) -> None:
        for unit in list(self._data):
            if wanted.get(unit) != self._data[unit].physical:
                for handle in self._data.pop(unit).handles:
                    self._uc.hook_del(handle)
        first = not self._data
        for unit, physical in wanted.items():
            if physical is not None and unit not in self._data:
                self._data[unit] = self._hook_data(unit, physical)
        if first and self._data:
            # Blocks translated with no memory hook may take Unicorn's fast memory path.
            self._uc.ctl_flush_tb()

    def _hook_data(self, unit: _Unit, physical: int) -> _DataHook:
        hook = _DataHook(physical)
        # The hook range is tested against the access's first byte: start it early enough
        # to see an (up to 8-byte) access that begins before the slot and overlaps it.
        begin, end = max(0, physical - 7), physical + unit.bp.size - 1
        types = [UC_HOOK_MEM_WRITE] + ([UC_HOOK_MEM_READ] if unit.bp.kind == READWRITE else [])
        for hook_type in types:
            hook.handles.append(
                self._uc.hook_add(hook_type, self._on_access, (unit, physical), begin, end))
        return hook

    def _on_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                   data: tuple[_Unit, int]) -> None:
        unit, physical = data
        if not (address < physical + unit.bp.size and physical < address + size):
            return
        if unit.owner is Owner.GUEST:
            if not self._live_guest_bits([unit]):
                return
            self.hits.guest_data |= unit.bit
        else:
            self.hits.host_data |= unit.bit
        if self.hits.access_rip is None:
            self.hits.access_rip = self._regs.read_one(x86.UC_X86_REG_RIP)
        assert self._stop is not None
        self._stop.after_this_instruction()  # a trap: after the access completes
