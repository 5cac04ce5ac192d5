"""The emulated platform's C hot path (fastslice.c), built on first use and cached.

`load()` returns the cffi library, or None when it cannot be had: no C compiler (a
Windows machine without one, say), or `WHPX_NATIVE=0` in the environment (the pure
Python slice, kept for those machines and compared against in bench/engine_speed.py).
`reason()` says why it is not in use. The library is built with the system's C compiler
into a per-user cache (`WHPX_NATIVE_CACHE`, default ~/.cache/dap-whpx), named after a
hash of its source, so a changed source is rebuilt and concurrent builds do not clash.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

SOURCE = Path(__file__).with_name("fastslice.c")

CDEF = """
typedef struct wx_cpu {
    void *uc;
    void *read_batch;
    void *write;
    void *start;
    void *stop;
    void *translate;
    int32_t *halted;
    int32_t *is_int;
    int32_t *old_exception;
    int rflags_id, dr6_id, cr2_id;
    int32_t event;
    int32_t vector;
    int32_t trapped;
    int32_t n_state, n_result;
    int32_t state_ids[16];
    uint64_t state[16];
    void *state_ptrs[16];
    int32_t result_ids[8];
    uint64_t result[8];
    void *result_ptrs[8];
} wx_cpu;
void wx_init(wx_cpu *c);
int wx_attach(wx_cpu *c, void *hook_add, int interrupt_type, int invalid_type,
              size_t *handles);
int wx_read_state(wx_cpu *c);
int wx_run(wx_cpu *c, uint64_t count, int host_tf);
int wx_step(wx_cpu *c);
int wx_read(wx_cpu *c, int *ids, uint64_t *out, int count);
int wx_translate(wx_cpu *c, uint64_t linear, int prot, uint64_t *physical);
"""
NO_EVENT, INTERRUPT, INVALID = 0, 1, 2
NOT_RUN = -1
STATE_MAX, RESULT_MAX = 16, 8

ffi = FFI()
ffi.cdef(CDEF)

_reason: str | None = None


def reason() -> str | None:
    """Why the C slice is not in use (None when it is)."""
    load()
    return _reason


@functools.cache
def load():  # type: ignore[no-untyped-def]
    global _reason
    if os.environ.get("WHPX_NATIVE", "1") == "0":
        _reason = "WHPX_NATIVE=0"
        return None
    try:
        return ffi.dlopen(str(_built()))
    except (OSError, subprocess.SubprocessError) as error:
        _reason = f"could not build {SOURCE.name}: {error}"
        return None


def _cache_dir() -> Path:
    configured = os.environ.get("WHPX_NATIVE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dap-whpx"


def _built() -> Path:
    source = SOURCE.read_bytes()
    host = f"{sys.platform} {platform.machine()}".encode()  # a home shared across hosts
    tag = hashlib.sha256(source + host).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    target = _cache_dir() / f"fastslice-{tag}{suffix}"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        compiler = "gcc" if shutil.which("gcc") else compiler
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler ({compiler} not found)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: another process may be building it too.
    handle, partial = tempfile.mkstemp(suffix=suffix, dir=target.parent)
    os.close(handle)
    try:
        flags = ["-O2", "-shared"] + ([] if sys.platform == "win32" else ["-fPIC"])
        done = subprocess.run([compiler, *flags, "-o", partial, str(SOURCE)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no message"]
            raise OSError(f"{compiler} failed: {lines[-1]}")
        os.replace(partial, target)
        for stale in target.parent.glob(f"fastslice-*{suffix}"):
            if stale != target:  # built from an older source; a process using one keeps it
                with contextlib.suppress(OSError):
                    stale.unlink()
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


class NativeSlice:
    """One vCPU engine's `wx_cpu`: its hooks attached, its register lists set.

    `state_ids` are read by `read_state()` before a slice (RIP, RFLAGS, DR6 and DR7
    first); `result_ids` by `run()` after it."""

    def __init__(self, lib, uc, internals: dict[str, int],  # type: ignore[no-untyped-def]
                 state_ids: tuple[int, ...], result_ids: tuple[int, ...],
                 rflags_id: int, dr6_id: int, cr2_id: int, hook_types: tuple[int, int]) -> None:
        import ctypes

        from unicorn.unicorn_py3.unicorn import uclib

        assert len(state_ids) <= STATE_MAX and len(result_ids) <= RESULT_MAX
        self._lib = lib
        self._uc = uc  # the struct points into the engine: keep it alive as long
        cpu = self.cpu = ffi.new("wx_cpu *")
        lib.wx_init(cpu)

        def entry(name: str):  # type: ignore[no-untyped-def]
            return ffi.cast("void *", ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value)

        cpu.uc = ffi.cast("void *", uc._uch.value)
        cpu.read_batch = entry("uc_reg_read_batch")
        cpu.write = entry("uc_reg_write")
        cpu.start = entry("uc_emu_start")
        cpu.stop = entry("uc_emu_stop")
        cpu.translate = entry("uc_vmem_translate")
        cpu.halted = ffi.cast("int32_t *", internals["halted"])
        cpu.is_int = ffi.cast("int32_t *", internals["exception_is_int"])
        cpu.old_exception = ffi.cast("int32_t *", internals["old_exception"])
        cpu.rflags_id, cpu.dr6_id, cpu.cr2_id = rflags_id, dr6_id, cr2_id
        self._batches: dict[tuple[int, ...], tuple[object, object, int]] = {}
        self._physical = ffi.new("uint64_t *")
        cpu.n_state, cpu.n_result = len(state_ids), len(result_ids)
        cpu.state_ids[0 : len(state_ids)] = list(state_ids)
        cpu.result_ids[0 : len(result_ids)] = list(result_ids)
        self._handles = ffi.new("size_t[2]")
        err = lib.wx_attach(cpu, entry("uc_hook_add"), hook_types[0], hook_types[1],
                            self._handles)
        if err:
            raise OSError(f"uc_hook_add failed with Unicorn error {err}")
        self._n_state, self._n_result = len(state_ids), len(result_ids)

    def read_state(self) -> list[int]:
        self._lib.wx_read_state(self.cpu)
        return ffi.unpack(self.cpu.state, self._n_state)

    def run(self, count: int, host_tf: bool) -> int:
        """Runs the slice from the RIP `read_state()` saw; returns the Unicorn error."""
        return self._lib.wx_run(self.cpu, count, host_tf)

    def step(self) -> int:
        """wx_step: one host TF step unless the guest's DR7 is armed (NOT_RUN)."""
        return self._lib.wx_step(self.cpu)

    def read(self, ids: tuple[int, ...]) -> list[int]:
        """Registers by Unicorn id, in one batch."""
        batch = self._batches.get(ids)
        if batch is None:
            batch = self._batches[ids] = (ffi.new("int[]", list(ids)),
                                          ffi.new("uint64_t[]", len(ids)), len(ids))
        self._lib.wx_read(self.cpu, batch[0], batch[1], batch[2])
        return ffi.unpack(batch[1], batch[2])

    def translate(self, linear: int, prot: int) -> int | None:
        if self._lib.wx_translate(self.cpu, linear, prot, self._physical):
            return self._physical[0]
        return None

    def result(self) -> list[int]:
        return ffi.unpack(self.cpu.result, self._n_result)

    @property
    def event(self) -> tuple[int, int]:
        return self.cpu.event, self.cpu.vector
