"""The only place that reaches into Unicorn's private CPU state.

Unicorn's Python binding does not expose four things the emulated platform needs:
- the error code of the last exception (#GP, #PF, ...),
- whether the last exception came from INT n / INT3 (QEMU's `exception_is_int`),
- the stale "exception in flight" (QEMU's `old_exception`): Unicorn never runs QEMU's
  delivery code, so it stays set and the next fault is wrongly promoted to #DF,
- the interrupt shadow after STI / MOV SS (QEMU's HF_INHIBIT_IRQ in `hflags`),
- whether the last `emu_start` ended in HLT (QEMU's `CPUState.halted`); without it a
  HLT looks exactly like the end of a `count=` slice.

Rather than hard-coding offsets for one wheel, `calibrate()` finds them once per process
by running probe instructions on a scratch engine and looking for the fields that change
as the probes predict. If calibration fails, the emulated platform refuses to start with
a message, instead of running guests wrongly.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

HF_INHIBIT_IRQ = 1 << 3  # QEMU target/i386/cpu.h


class CalibrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Offsets:
    cpu_pointer: int  # in uc_struct: the X86CPU pointer
    env: int  # CPUX86State inside X86CPU
    # The rest are relative to the env.
    hflags: int
    error_code: int
    exception_is_int: int
    old_exception: int
    halted: int


def _readable_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            addresses, perms = line.split()[:2]
            if perms.startswith("r"):
                lo, hi = (int(x, 16) for x in addresses.split("-"))
                ranges.append((lo, hi))
    return ranges


def _handle(uc: Uc) -> int:
    return ctypes.cast(uc._uch, ctypes.c_void_p).value or 0


_SIGNATURE = [0x5A17_0000_0000_0001 * (i + 1) & (1 << 64) - 1 for i in range(4)]
_SIGNATURE_REGS = (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RBX)
_CODE = 0x1000


def _probe_engine() -> tuple[Uc, list[tuple[int, int]]]:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x200000, UC_PROT_ALL)
    uc.reg_write(x86.UC_X86_REG_RSP, 0x100000)
    uc.hook_add(UC_HOOK_INTR, lambda uc, intno, data: uc.emu_stop())
    return uc, _readable_ranges()


def _run(uc: Uc, code: bytes, count: int) -> None:
    uc.mem_write(_CODE, code + b"\x90" * 16)
    uc.ctl_remove_cache(_CODE, _CODE + len(code) + 16)
    uc.reg_write(x86.UC_X86_REG_RIP, _CODE)
    uc.emu_start(_CODE, 0, count=count)


def _signature_at(uc: Uc, values: list[int]) -> bytes:
    for reg, value in zip(_SIGNATURE_REGS, values, strict=True):
        uc.reg_write(reg, value)
    return struct.pack("<4Q", *values)  # QEMU regs[] order: RAX, RCX, RDX, RBX


def _env_of(uc: Uc, cpu_pointer: int, env_in_cpu: int) -> int:
    (cpu,) = struct.unpack("<Q", ctypes.string_at(_handle(uc) + cpu_pointer, 8))
    return cpu + env_in_cpu


def _is_live_env(uc: Uc, env: int) -> bool:
    """The registers written now show up at `env`, and so does RIP at env->eip: a
    stale copy of the registers elsewhere in the engine does not pass both."""
    second = [v ^ 0x0F0F_0F0F_0F0F_0F0F for v in _SIGNATURE]
    needle = _signature_at(uc, second)
    uc.reg_write(x86.UC_X86_REG_RIP, 0x1234_5678)
    live = ctypes.string_at(env, 32) == needle and \
        struct.unpack("<Q", ctypes.string_at(env + 128, 8))[0] == 0x1234_5678
    for reg in _SIGNATURE_REGS:
        uc.reg_write(reg, 0)
    return live


def _find_env(uc: Uc, readable: list[tuple[int, int]]) -> tuple[int, int]:
    """Find (uc_struct offset of the CPU pointer, env offset in the CPU object).

    A candidate must hold for a second, independent engine too: otherwise any pointer
    that happens to land a little below the CPU object in the heap would qualify."""
    other, _ = _probe_engine()
    try:
        for field, at in _live_env_candidates(uc, readable):
            env = _env_of_checked(other, field, at, _readable_ranges())
            if env is not None and _is_live_env(other, env):
                return field, at
    finally:
        release(other)
    raise CalibrationError("could not locate the CPU state inside the Unicorn engine")


def _is_readable(readable: list[tuple[int, int]], addr: int, size: int) -> bool:
    return any(lo <= addr and addr + size <= hi for lo, hi in readable)


def _env_of_checked(
    uc: Uc, field: int, at: int, readable: list[tuple[int, int]]
) -> int | None:
    if not _is_readable(readable, _handle(uc) + field, 8):
        return None
    env = _env_of(uc, field, at)
    return env if _is_readable(readable, env, 256) else None


def _live_env_candidates(uc: Uc, readable: list[tuple[int, int]]):
    needle = _signature_at(uc, _SIGNATURE)
    handle = _handle(uc)
    for field in range(0, 0x4000, 8):
        if not _is_readable(readable, handle + field, 8):
            break
        (pointer,) = struct.unpack("<Q", ctypes.string_at(handle + field, 8))
        span = 0x20000
        while span >= 0x100 and not _is_readable(readable, pointer, span):
            span //= 2
        if span < 0x100:
            continue
        at = ctypes.string_at(pointer, span).find(needle)
        if at >= 0 and _is_live_env(uc, pointer + at):
            yield field, at
        needle = _signature_at(uc, _SIGNATURE)


def _i32(addr: int) -> int:
    return ctypes.c_int32.from_address(addr).value


def _single_match(candidates: list[int], what: str) -> int:
    if len(candidates) != 1:
        raise CalibrationError(f"{what}: {len(candidates)} candidate fields, expected 1")
    return candidates[0]


@functools.cache
def calibrate() -> Offsets:
    uc, readable = _probe_engine()
    try:
        return _calibrate(uc, readable)
    finally:
        release(uc)  # not left to the garbage collector (see release())


def _calibrate(uc: Uc, readable: list[tuple[int, int]]) -> Offsets:
    """Each field must show the predicted behaviour on two independent engines: a stray
    heap word near the CPU state can mimic a probe once, not on both."""
    cpu_pointer, env_in_cpu = _find_env(uc, readable)
    other, _ = _probe_engine()
    try:
        found = _field_candidates(uc, _env_of(uc, cpu_pointer, env_in_cpu))
        again = _field_candidates(other, _env_of(other, cpu_pointer, env_in_cpu))
    finally:
        release(other)
    chosen = {name: _single_match(sorted(set(found[name]) & set(again[name])), name)
              for name in found}
    return Offsets(cpu_pointer, env_in_cpu, chosen["hflags"], chosen["error_code"],
                   chosen["exception_is_int"], chosen["old_exception"], chosen["halted"])


def _field_candidates(uc: Uc, env: int) -> dict[str, list[int]]:
    window = 0x8000

    def snapshot() -> tuple[int, ...]:
        return ints(ctypes.string_at(env, window))

    def ints(blob: bytes) -> tuple[int, ...]:
        return struct.unpack(f"<{len(blob) // 4}i", blob)

    def clear(offsets: list[int]) -> None:
        for offset in offsets:
            ctypes.c_int32.from_address(env + offset).value = -1

    # old_exception and error_code: #GP(selector) from loading a selector past the GDT
    # limit, twice with different selectors. The selectors have RPL 3, which the error
    # code drops, so copies of AX do not qualify.
    fresh = snapshot()
    _run(uc, bytes.fromhex("66b83712" "8ed8"), 10)  # mov ax,0x1237; mov ds,ax
    gp = snapshot()
    old_exception = [i * 4 for i, v in enumerate(gp) if v == 13 and fresh[i] == -1]
    clear(old_exception)  # so the second fault stays #GP instead of becoming #DF
    _run(uc, bytes.fromhex("66b86b24" "8ed8"), 10)  # mov ax,0x246b; mov ds,ax
    gp2 = snapshot()
    old_exception = [o for o in old_exception if gp2[o // 4] == 13]
    error_code = [i * 4 for i, (a, b) in enumerate(zip(gp, gp2, strict=True))
                  if a == 0x1234 and b == 0x2468]
    clear(old_exception)

    # exception_is_int: 1 after INT n / INT3, 0 after a fault, twice over.
    is_int: set[int] | None = None
    for code in ("cd30", "cc"):
        _run(uc, bytes.fromhex(code), 5)
        after_int = snapshot()
        clear(old_exception)
        _run(uc, bytes.fromhex("31c9f7f1"), 5)  # xor ecx,ecx; div ecx: #DE
        after_fault = snapshot()
        clear(old_exception)
        hits = {i * 4 for i, (a, b) in enumerate(zip(after_int, after_fault, strict=True))
                if a == 1 and b == 0 and gp[i] == 0}
        is_int = hits if is_int is None else is_int & hits

    # hflags: STI sets the interrupt shadow for exactly one instruction.
    shadow: set[int] | None = None
    for _ in range(2):
        _run(uc, bytes.fromhex("fb"), 1)
        after_sti = snapshot()
        _run(uc, bytes.fromhex("90"), 1)
        after_nop = snapshot()
        hits = {i * 4 for i, (a, b) in enumerate(zip(after_sti, after_nop, strict=True))
                if a ^ b == HF_INHIBIT_IRQ and a & HF_INHIBIT_IRQ}
        shadow = hits if shadow is None else shadow & hits

    # halted lives in CPUState, before the env: HLT sets it, a plain slice end does not.
    before = env - window
    halted: set[int] | None = None
    for _ in range(2):
        _run(uc, bytes.fromhex("90f4"), 2)
        halted_blob = ints(ctypes.string_at(before, window))
        _run(uc, bytes.fromhex("9090"), 2)
        running_blob = ints(ctypes.string_at(before, window))
        hits = {k * 4 - window
                for k, (a, b) in enumerate(zip(halted_blob, running_blob, strict=True))
                if a == 1 and b == 0}
        halted = hits if halted is None else halted & hits
    return {"old_exception": old_exception, "error_code": error_code,
            "exception_is_int": sorted(is_int or ()), "hflags": sorted(shadow or ()),
            "halted": sorted(halted or ())}


class CpuInternals:
    """Typed access to one engine's private fields (offsets from `calibrate()`).

    The ctypes views are made once: the CPU state does not move, and making a view costs
    more than reading through it (this runs around every single step)."""

    def __init__(self, uc: Uc) -> None:
        self._offsets = offsets = calibrate()
        self._env = _env_of(uc, offsets.cpu_pointer, offsets.env)
        if not _is_live_env(uc, self._env):
            raise CalibrationError(
                f"the calibrated CPU state does not match this engine ({offsets})")
        self._uc = uc  # keeps the engine (and so the memory) alive
        self._error_code = self._field(offsets.error_code)
        self._is_int = self._field(offsets.exception_is_int)
        self._old_exception = self._field(offsets.old_exception)
        self._hflags = self._field(offsets.hflags)
        self._halted = self._field(offsets.halted)

    def _field(self, offset: int) -> ctypes.c_int32:
        return ctypes.c_int32.from_address(self._env + offset)

    @property
    def error_code(self) -> int:
        return self._error_code.value & 0xFFFFFFFF

    @property
    def exception_is_int(self) -> bool:
        return self._is_int.value != 0

    def clear_exception_in_flight(self) -> None:
        self._old_exception.value = -1

    @property
    def interrupt_shadow(self) -> bool:
        return bool(self._hflags.value & HF_INHIBIT_IRQ)

    @interrupt_shadow.setter
    def interrupt_shadow(self, value: bool) -> None:
        field = self._hflags
        field.value = (field.value | HF_INHIBIT_IRQ) if value else (field.value & ~HF_INHIBIT_IRQ)

    @property
    def halted(self) -> bool:
        return self._halted.value != 0

    def clear_halted(self) -> None:
        self._halted.value = 0

    @property
    def addresses(self) -> dict[str, int]:
        """Where the fields are, for the C slice (native/fastslice.c)."""
        return {"halted": ctypes.addressof(self._halted),
                "exception_is_int": ctypes.addressof(self._is_int),
                "old_exception": ctypes.addressof(self._old_exception)}


def release(uc: Uc) -> None:
    """Close the engine now rather than whenever the garbage collector gets to it: a
    late uc_close can run on any thread, concurrently with another engine, after the
    guest RAM it maps has been unmapped. The binding frees through a weakref finalizer
    that is safe to call once."""
    finalizer = getattr(uc, "_Uc__finalizer", None)
    if finalizer is not None:
        finalizer()
