"""Thin typed wrappers over the three KVM file-descriptor kinds (as rust-vmm kvm-ioctls).

`KvmSystem` is /dev/kvm, `VmFd` a VM, `VcpuFd` a vCPU with its mmap'd `kvm_run`. Each
method is one ioctl; nothing here knows about the platform interface.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

from whpx_core.platform.base import PlatformError
from whpx_core.platform.kvm.bindings import Ioctl, ffi, libc

KVM_DEVICE = "/dev/kvm"

CData = Any  # cffi cdata; cffi ships no type stubs


class KvmIoctlError(PlatformError):
    def __init__(self, request: Ioctl, err: int) -> None:
        super().__init__(f"{request.name} failed: {os.strerror(err)} (errno {err})")
        self.request = request
        self.errno = err


def _ioctl(fd: int, request: Ioctl, arg: CData | int = 0) -> int:
    """ioctl(2) through libc; cffi releases the GIL for the call (KVM_RUN relies on it)."""
    if isinstance(arg, int):
        arg = ffi.cast("unsigned long", arg)
    result: int = libc.ioctl(fd, request, arg)
    if result < 0:
        raise KvmIoctlError(request, ffi.errno)
    return result


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ioctl(self, request: Ioctl, arg: CData | int = 0) -> int:
        if self.fd < 0:
            raise PlatformError(f"{request.name} on a closed KVM file descriptor")
        return _ioctl(self.fd, request, arg)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KvmSystem(_Fd):
    """/dev/kvm."""

    @classmethod
    def open(cls) -> KvmSystem:
        return cls(os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC))

    def api_version(self) -> int:
        return self.ioctl(Ioctl.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        return self.ioctl(Ioctl.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return self.ioctl(Ioctl.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> CData:
        """A `struct kvm_cpuid2 *` holding every entry; grows the buffer on E2BIG."""
        count = 64
        while True:
            cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": count, "entries": count})
            try:
                self.ioctl(Ioctl.KVM_GET_SUPPORTED_CPUID, cpuid)
            except KvmIoctlError as e:
                if e.errno != errno.E2BIG or count >= 4096:
                    raise
                count *= 2
                continue
            return cpuid

    def create_vm(self) -> VmFd:
        return VmFd(self.ioctl(Ioctl.KVM_CREATE_VM, 0))


class VmFd(_Fd):
    def check_extension(self, cap: int) -> int:
        return self.ioctl(Ioctl.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(
        self, slot: int, gpa: int, size: int, userspace_addr: int, flags: int = 0
    ) -> None:
        region = ffi.new(
            "struct kvm_userspace_memory_region *",
            {
                "slot": slot,
                "flags": flags,
                "guest_phys_addr": gpa,
                "memory_size": size,
                "userspace_addr": userspace_addr,
            },
        )
        self.ioctl(Ioctl.KVM_SET_USER_MEMORY_REGION, region)

    def create_vcpu(self, index: int, mmap_size: int) -> VcpuFd:
        return VcpuFd(self.ioctl(Ioctl.KVM_CREATE_VCPU, index), mmap_size)


class VcpuFd(_Fd):
    """A vCPU fd and its shared `kvm_run` page (`self.run_area`, `self.kvm_run`)."""

    def __init__(self, fd: int, mmap_size: int) -> None:
        super().__init__(fd)
        self.run_area = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run: CData = ffi.from_buffer("struct kvm_run *", self.run_area)

    def run(self) -> bool:
        """KVM_RUN. False when interrupted (EINTR: immediate_exit or a signal)."""
        result = libc.ioctl(self.fd, Ioctl.KVM_RUN, ffi.cast("unsigned long", 0))
        if result < 0:
            err = ffi.errno
            if err in (errno.EINTR, errno.EAGAIN):
                return False
            raise KvmIoctlError(Ioctl.KVM_RUN, err)
        return True

    def get_regs(self) -> CData:
        regs = ffi.new("struct kvm_regs *")
        self.ioctl(Ioctl.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: CData) -> None:
        self.ioctl(Ioctl.KVM_SET_REGS, regs)

    def get_sregs(self) -> CData:
        sregs = ffi.new("struct kvm_sregs *")
        self.ioctl(Ioctl.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: CData) -> None:
        self.ioctl(Ioctl.KVM_SET_SREGS, sregs)

    def get_debugregs(self) -> CData:
        dregs = ffi.new("struct kvm_debugregs *")
        self.ioctl(Ioctl.KVM_GET_DEBUGREGS, dregs)
        return dregs

    def set_debugregs(self, dregs: CData) -> None:
        self.ioctl(Ioctl.KVM_SET_DEBUGREGS, dregs)

    def get_vcpu_events(self) -> CData:
        events = ffi.new("struct kvm_vcpu_events *")
        self.ioctl(Ioctl.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_vcpu_events(self, events: CData) -> None:
        self.ioctl(Ioctl.KVM_SET_VCPU_EVENTS, events)

    def set_cpuid2(self, cpuid: CData) -> None:
        self.ioctl(Ioctl.KVM_SET_CPUID2, cpuid)

    def set_guest_debug(self, control: int, debugreg: tuple[int, ...] = ()) -> None:
        dbg = ffi.new("struct kvm_guest_debug *")
        dbg.control = control
        for i, value in enumerate(debugreg):
            dbg.arch.debugreg[i] = value
        self.ioctl(Ioctl.KVM_SET_GUEST_DEBUG, dbg)

    def interrupt(self, vector: int) -> None:
        self.ioctl(Ioctl.KVM_INTERRUPT, ffi.new("struct kvm_interrupt *", {"irq": vector}))

    def close(self) -> None:
        if self.kvm_run is not None:
            ffi.release(self.kvm_run)
            self.kvm_run = None
            self.run_area.close()
        super().close()
