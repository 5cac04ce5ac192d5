"""cffi ABI-mode declarations of the KVM structs this backend uses, and the ioctl table.

No compiler at install time: the structs are declared by hand (x86-64 layouts from
<linux/kvm.h> / <asm/kvm.h>) and `tests/platform/test_kvm_layout.py` compiles
`_Static_assert`s generated from `ffi.sizeof` / `ffi.offsetof` against the real header,
so a wrong offset fails CI instead of corrupting a guest.

`kvm_run`'s big unions keep only the members we read, plus the header's own padding
arrays, so every offset after them still matches.
"""

from __future__ import annotations

import enum

import cffi

CDEF = """
struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct kvm_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    uint8_t padding;
};

struct kvm_dtable {
    uint64_t base;
    uint16_t limit;
    uint16_t padding[3];
};

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    uint64_t interrupt_bitmap[4];
};

struct kvm_debugregs {
    uint64_t db[4];
    uint64_t dr6;
    uint64_t dr7;
    uint64_t flags;
    uint64_t reserved[9];
};

struct kvm_vcpu_events {
    struct {
        uint8_t injected;
        uint8_t nr;
        uint8_t has_error_code;
        uint8_t pending;
        uint32_t error_code;
    } exception;
    struct {
        uint8_t injected;
        uint8_t nr;
        uint8_t soft;
        uint8_t shadow;
    } interrupt;
    struct {
        uint8_t injected;
        uint8_t pending;
        uint8_t masked;
        uint8_t pad;
    } nmi;
    uint32_t sipi_vector;
    uint32_t flags;
    struct {
        uint8_t smm;
        uint8_t pending;
        uint8_t smm_inside_nmi;
        uint8_t latched_init;
    } smi;
    struct {
        uint8_t pending;
    } triple_fault;
    uint8_t reserved[26];
    uint8_t exception_has_payload;
    uint64_t exception_payload;
};

struct kvm_sync_regs {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_vcpu_events events;
};

struct kvm_debug_exit_arch {
    uint32_t exception;
    uint32_t pad;
    uint64_t pc;
    uint64_t dr6;
    uint64_t dr7;
};

struct kvm_guest_debug_arch {
    uint64_t debugreg[8];
};

struct kvm_guest_debug {
    uint32_t control;
    uint32_t pad;
    struct kvm_guest_debug_arch arch;
};

struct kvm_cpuid_entry2 {
    uint32_t function;
    uint32_t index;
    uint32_t flags;
    uint32_t eax;
    uint32_t ebx;
    uint32_t ecx;
    uint32_t edx;
    uint32_t padding[3];
};

struct kvm_cpuid2 {
    uint32_t nent;
    uint32_t padding;
    struct kvm_cpuid_entry2 entries[];
};

struct kvm_userspace_memory_region {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
};

struct kvm_interrupt {
    uint32_t irq;
};

struct kvm_enable_cap {
    uint32_t cap;
    uint32_t flags;
    uint64_t args[4];
    uint8_t pad[64];
};

struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint8_t padding1[6];
    uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection;
    uint8_t if_flag;
    uint16_t flags;
    uint64_t cr8;
    uint64_t apic_base;
    union {
        struct {
            uint64_t hardware_entry_failure_reason;
            uint32_t cpu;
        } fail_entry;
        struct {
            uint8_t direction;
            uint8_t size;
            uint16_t port;
            uint32_t count;
            uint64_t data_offset;
        } io;
        struct {
            struct kvm_debug_exit_arch arch;
        } debug;
        struct {
            uint64_t phys_addr;
            uint8_t data[8];
            uint32_t len;
            uint8_t is_write;
        } mmio;
        struct {
            uint32_t suberror;
            uint32_t ndata;
            uint64_t data[16];
        } internal;
        char padding[256];
    };
    uint64_t kvm_valid_regs;
    uint64_t kvm_dirty_regs;
    union {
        struct kvm_sync_regs regs;
        char padding[2048];
    } s;
};

int ioctl(int fd, unsigned long request, ...);
"""

# Every struct declared above, for the layout test.
STRUCTS: tuple[str, ...] = (
    "kvm_regs",
    "kvm_segment",
    "kvm_dtable",
    "kvm_sregs",
    "kvm_debugregs",
    "kvm_vcpu_events",
    "kvm_sync_regs",
    "kvm_debug_exit_arch",
    "kvm_guest_debug_arch",
    "kvm_guest_debug",
    "kvm_cpuid_entry2",
    "kvm_cpuid2",
    "kvm_userspace_memory_region",
    "kvm_interrupt",
    "kvm_enable_cap",
    "kvm_run",
)

ffi = cffi.FFI()
ffi.cdef(CDEF)
libc = ffi.dlopen(None)

# --- ioctl numbers (asm-generic/ioctl.h encoding), derived from the struct sizes ---------

_KVMIO = 0xAE
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, struct: str | None) -> int:
    size = ffi.sizeof(f"struct {struct}") if struct else 0
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | nr


class Ioctl(enum.IntEnum):
    """The ioctl table: each name is the macro of the same name in <linux/kvm.h>."""

    # system fd (/dev/kvm)
    KVM_GET_API_VERSION = _ioc(0, 0x00, None)
    KVM_CREATE_VM = _ioc(0, 0x01, None)
    KVM_CHECK_EXTENSION = _ioc(0, 0x03, None)
    KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, None)
    KVM_GET_SUPPORTED_CPUID = _ioc(_IOC_READ | _IOC_WRITE, 0x05, "kvm_cpuid2")
    # vm fd
    KVM_CREATE_VCPU = _ioc(0, 0x41, None)
    KVM_SET_USER_MEMORY_REGION = _ioc(_IOC_WRITE, 0x46, "kvm_userspace_memory_region")
    KVM_ENABLE_CAP = _ioc(_IOC_WRITE, 0xA3, "kvm_enable_cap")
    # vcpu fd
    KVM_RUN = _ioc(0, 0x80, None)
    KVM_GET_REGS = _ioc(_IOC_READ, 0x81, "kvm_regs")
    KVM_SET_REGS = _ioc(_IOC_WRITE, 0x82, "kvm_regs")
    KVM_GET_SREGS = _ioc(_IOC_READ, 0x83, "kvm_sregs")
    KVM_SET_SREGS = _ioc(_IOC_WRITE, 0x84, "kvm_sregs")
    KVM_INTERRUPT = _ioc(_IOC_WRITE, 0x86, "kvm_interrupt")
    KVM_SET_CPUID2 = _ioc(_IOC_WRITE, 0x90, "kvm_cpuid2")
    KVM_SET_GUEST_DEBUG = _ioc(_IOC_WRITE, 0x9B, "kvm_guest_debug")
    KVM_GET_VCPU_EVENTS = _ioc(_IOC_READ, 0x9F, "kvm_vcpu_events")
    KVM_SET_VCPU_EVENTS = _ioc(_IOC_WRITE, 0xA0, "kvm_vcpu_events")
    KVM_GET_DEBUGREGS = _ioc(_IOC_READ, 0xA1, "kvm_debugregs")
    KVM_SET_DEBUGREGS = _ioc(_IOC_WRITE, 0xA2, "kvm_debugregs")


KVM_API_VERSION = 12

# --- constants (same names as the header; the layout test checks them too) --------------

KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_DEBUGREGS = 50
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SET_GUEST_DEBUG2 = 195

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1

KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000

KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

KVM_VCPUEVENT_VALID_SHADOW = 0x00000004
KVM_X86_SHADOW_INT_MOV_SS = 0x01
KVM_X86_SHADOW_INT_STI = 0x02

# Constants checked by the layout test, name -> value.
CONSTANTS: dict[str, int] = {
    name: value
    for name, value in globals().items()
    if name.startswith(("KVM_CAP_", "KVM_EXIT_", "KVM_GUESTDBG_", "KVM_SYNC_X86_", "KVM_X86_"))
    or name in ("KVM_API_VERSION", "KVM_INTERNAL_ERROR_EMULATION", "KVM_VCPUEVENT_VALID_SHADOW")
}
