/* Runtime helpers for the C guests: serial output, exit, IDT and traps, local APIC. */
#include "rt.h"

/* ---- exit and parking -------------------------------------------------------------- */

void cpu_park(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void guest_exit(uint32_t code)
{
    outl(DEBUG_EXIT_PORT, code);
    /* The VMM should have stopped us; if it did not, at least do nothing more. */
    cpu_park();
}

/* ---- spinlock ---------------------------------------------------------------------- */

void spin_lock(spinlock_t *l)
{
    uint32_t v;
    do {
        v = 1;
        __asm__ volatile("lock xchgl %0, %1" : "+r"(v), "+m"(l->locked) : : "memory");
        if (v == 0)
            return;
        /* Spin on a plain read so waiters do not keep the line locked. */
        while (l->locked)
            cpu_pause();
    } while (1);
}

void spin_unlock(spinlock_t *l)
{
    barrier();              /* x86 stores are release-ordered; stop the compiler only */
    l->locked = 0;
}

/* ---- serial ------------------------------------------------------------------------ */

void serial_putc(char c)
{
    /* LSR bit 5: transmit holding register empty. */
    while (!(inb(SERIAL_PORT + 5) & 0x20))
        cpu_pause();
    outb(SERIAL_PORT, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

void serial_put_hex(uint64_t v)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v & 0xF];
        v >>= 4;
    } while (v);
    serial_puts("0x");
    while (n)
        serial_putc(buf[--n]);
}

void serial_put_dec(uint64_t v)
{
    char buf[20];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        serial_putc(buf[--n]);
}

/* ---- IDT and traps ----------------------------------------------------------------- */

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;      /* P | DPL | 0 | type */
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gates are 16 bytes");

#define KERNEL_CS 0x08
#define GATE_INTERRUPT_64 0x8E  /* present, DPL 0, type 0xE: IF cleared on entry */

static struct idt_gate idt[256] ALIGNED(16);
static trap_handler_t trap_handlers[256];

extern void (*const trap_stub_table[256])(void);   /* traps.S */

void idt_set_gate(unsigned vector, void (*entry)(void))
{
    uint64_t a = (uint64_t)(uintptr_t)entry;
    struct idt_gate *g = &idt[vector & 0xFF];
    g->offset_low = (uint16_t)a;
    g->selector = KERNEL_CS;
    g->ist = 0;
    g->type_attr = GATE_INTERRUPT_64;
    g->offset_mid = (uint16_t)(a >> 16);
    g->offset_high = (uint32_t)(a >> 32);
    g->reserved = 0;
}

void idt_load(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

void trap_set_handler(unsigned vector, trap_handler_t handler)
{
    trap_handlers[vector & 0xFF] = handler;
}

/* Called once by vCPU 0 from _start, after .bss is cleared and before other vCPUs run:
 * every vector gets its stub, so even an unexpected exception is reported rather than
 * escalating to a triple fault. */
void rt_init(void);
void rt_init(void)
{
    for (unsigned v = 0; v < 256; v++)
        idt_set_gate(v, trap_stub_table[v]);
}

void trap_dispatch(struct trap_frame *f)
{
    trap_handler_t h = trap_handlers[f->vector & 0xFF];
    if (h) {
        h(f);
        return;
    }
    /* A spurious APIC interrupt needs no EOI and no action. */
    if (f->vector == LAPIC_SPURIOUS_VECTOR)
        return;
    serial_puts("unhandled trap: vector=");
    serial_put_dec(f->vector);
    serial_puts(" error=");
    serial_put_hex(f->error_code);
    serial_puts(" rip=");
    serial_put_hex(f->rip);
    if (f->vector == 14) {
        serial_puts(" cr2=");
        serial_put_hex(read_cr2());
    }
    serial_puts("\n");
    guest_exit(RT_EXIT_UNHANDLED_TRAP);
}

/* ---- local APIC -------------------------------------------------------------------- */

void lapic_enable(void)
{
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, 0x100 | LAPIC_SPURIOUS_VECTOR);
}

void lapic_timer_start(uint8_t vector, uint32_t initial_count, uint32_t divide_code, bool periodic)
{
    lapic_enable();
    lapic_write(LAPIC_TIMER_DIVIDE, divide_code);
    lapic_write(LAPIC_LVT_TIMER, vector | (periodic ? LAPIC_LVT_PERIODIC : 0));
    lapic_write(LAPIC_TIMER_INITIAL, initial_count);
}

void lapic_timer_stop(void)
{
    lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_MASKED);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
}

/* ---- libc bits --------------------------------------------------------------------- *
 * gcc may emit calls to these even with -ffreestanding (struct copies, big zeroings).
 * The loops must not be turned back into calls to themselves by the optimizer. */
#define NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

NO_LIBCALLS void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

NO_LIBCALLS void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

NO_LIBCALLS void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}
