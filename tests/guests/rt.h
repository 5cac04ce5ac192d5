/* Tiny runtime shared by the C guests (start.S, traps.S, rt.c).
 *
 * The machine state these helpers assume is docs/boot.md: 64-bit long mode, identity
 * mapped RAM, serial at 0x3F8, debug exit at port 0xF4, xAPIC at 0xFEE00000.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NOINLINE __attribute__((noinline))
/* noipa: no inlining, cloning or interprocedural shortcuts even at -O2, so the function
 * keeps its symbol, its call sites and its breakpoint address. */
#define KEEP_CALLS __attribute__((noipa, used))
#define NORETURN __attribute__((noreturn))
#define ALIGNED(n) __attribute__((aligned(n)))

/* ---- entry point supplied by each C guest ---------------------------------------------
 * Called on every vCPU with the boot contract's RDI/RSI/RDX, after vCPU 0 cleared .bss
 * and the IDT is loaded. If it returns, _start writes the value to port 0xF4. */
int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size);

/* ---- port I/O ---------------------------------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* ---- CPU helpers ------------------------------------------------------------------- */
static inline void cpu_pause(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void cpu_cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void cpu_sti(void) { __asm__ volatile("sti" ::: "memory"); }
/* sti's one-instruction interrupt shadow makes "sti; hlt" atomic: an interrupt that is
 * already pending wakes the hlt instead of being taken before it. */
static inline void cpu_sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

/* Park this vCPU for good: interrupts off, halted. When every vCPU is parked the VM ends
 * with exit code 0 (boot contract), so only park vCPUs that have nothing left to say. */
NORETURN void cpu_park(void);

/* ---- atomics and a spinlock -------------------------------------------------------- */
/* lock xadd: returns the old value. */
static inline uint64_t atomic_fetch_add_u64(volatile uint64_t *p, uint64_t v)
{
    __asm__ volatile("lock xaddq %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
static inline uint32_t atomic_fetch_add_u32(volatile uint32_t *p, uint32_t v)
{
    __asm__ volatile("lock xaddl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}

typedef struct { volatile uint32_t locked; } spinlock_t;
#define SPINLOCK_INIT { 0 }
void spin_lock(spinlock_t *l);
void spin_unlock(spinlock_t *l);

/* ---- serial (16550 at 0x3F8) and exit ---------------------------------------------- */
#define SERIAL_PORT 0x3F8
#define DEBUG_EXIT_PORT 0xF4

void serial_putc(char c);
void serial_puts(const char *s);
void serial_put_hex(uint64_t v);   /* "0x" + lowercase hex, no leading zeros */
void serial_put_dec(uint64_t v);

/* Write `code` to the debug-exit port: the VM ends with that exit code. */
NORETURN void guest_exit(uint32_t code);

/* Exit code used by the runtime when an exception/interrupt arrives that no handler was
 * registered for (the trap is printed to serial first). */
#define RT_EXIT_UNHANDLED_TRAP 0xEE

/* ---- traps --------------------------------------------------------------------------
 * traps.S has one stub per vector (all 256). Each stub pushes a 0 error code if the CPU
 * does not push one, then the vector number, saves every GPR (and the SSE state) and
 * calls trap_dispatch(), which calls the handler registered for the vector. A handler
 * may change the frame (e.g. rip to skip a faulting instruction); iretq then resumes
 * from the frame. */
struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vector, error_code;
    /* pushed by the CPU */
    uint64_t rip, cs, rflags, rsp, ss;
};

typedef void (*trap_handler_t)(struct trap_frame *frame);

/* Register the C handler for `vector` (NULL: unhandled again). Shared by all vCPUs. */
void trap_set_handler(unsigned vector, trap_handler_t handler);
/* Point IDT gate `vector` at a raw entry point (64-bit interrupt gate, selector 0x08,
 * DPL 0). The runtime already points every gate at its stub; this is for guests that
 * want their own assembly entry. */
void idt_set_gate(unsigned vector, void (*entry)(void));
/* lidt the runtime's IDT on this vCPU (start.S already does it on every vCPU). */
void idt_load(void);
/* Called by the stubs. */
void trap_dispatch(struct trap_frame *frame);

/* ---- local APIC (xAPIC, MMIO at 0xFEE00000) ----------------------------------------- */
#define LAPIC_BASE 0xFEE00000u
#define LAPIC_ID 0x020
#define LAPIC_VERSION 0x030
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3E0

#define LAPIC_SPURIOUS_VECTOR 0xFF
#define LAPIC_LVT_MASKED (1u << 16)
#define LAPIC_LVT_PERIODIC (1u << 17)

/* Divide configuration register values (bits 0,1,3). */
#define LAPIC_DIVIDE_1 0xB
#define LAPIC_DIVIDE_2 0x0
#define LAPIC_DIVIDE_4 0x1
#define LAPIC_DIVIDE_8 0x2
#define LAPIC_DIVIDE_16 0x3
#define LAPIC_DIVIDE_32 0x8
#define LAPIC_DIVIDE_64 0x9
#define LAPIC_DIVIDE_128 0xA

static inline uint32_t lapic_read(uint32_t reg) { return *(volatile uint32_t *)(uintptr_t)(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(uintptr_t)(LAPIC_BASE + reg) = v; }

/* Software-enable this vCPU's APIC (SVR bit 8, spurious vector 0xFF) with TPR 0. */
void lapic_enable(void);
/* Start the timer: it counts `initial_count` ticks of 100 MHz / divide, then raises
 * `vector`; periodic reloads it. Writing the initial count last is what arms it. */
void lapic_timer_start(uint8_t vector, uint32_t initial_count, uint32_t divide_code, bool periodic);
void lapic_timer_stop(void);
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

/* ---- freestanding libc bits gcc may call on its own ------------------------------- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif
