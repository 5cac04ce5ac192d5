/* selfdebug: a guest that debugs itself, the way an in-guest debugger or kernel does.
 *
 * It must behave identically with and without dap-whpx's debugger attached, so a test
 * runs it both ways and compares the serial output. Three mechanisms, one per phase:
 *   (a) int3 with its own #BP handler, counting hits;
 *   (b) its own TF single-stepping: pushfq; orq $0x100,(%rsp); popfq over a few
 *       instructions, then the same with andq to clear TF. Its #DB handler counts the
 *       single-step traps, records each trap's RIP (as an offset from `self_tf_start`)
 *       and whether DR6.BS was set (platforms that do not maintain DR6 show bs=0);
 *   (c) its own DR0 execute breakpoint on `dr0_target` (DR7.L0), called DR0_CALLS times;
 *       the #DB handler counts hits with DR6.B0 and sets RF in the frame so IRETQ does
 *       not hit again. Skipped when `selfdebug_use_dr0` (patchable) is 0.
 * `selfdebug_marker` is called between the phases and after each dr0_target call: a
 * breakpoint target unrelated to the guest's own debugging, hit 4 times (7 with DR0).
 *
 * Output: "selfdebug: int3=N tf=N dr0=N" then a detail line (trap offsets, DR6 bits,
 * stray #DBs). With TF set by POPF, the trap comes after each later instruction up to
 * and including the POPF that clears TF: 5 traps here. Exit code 0.
 */
#include "rt.h"

#define RFLAGS_TF (1ull << 8)
#define RFLAGS_RF (1ull << 16)
#define DR6_B0 (1ull << 0)
#define DR6_BS (1ull << 14)
#define DR7_L0 (1ull << 0)
#define DR7_RESERVED_ONE (1ull << 10)
#define DR0_CALLS 3
#define MAX_TF_TRAPS 16
#define MAX_DR0_HITS 32   /* a breakpoint that re-fires forever is switched off here */

#define AT(name) ".globl " #name "\n" #name ":\n"

enum phase { PHASE_NONE, PHASE_TF, PHASE_DR0 };

volatile uint64_t selfdebug_use_dr0 = 1;  /* patchable */

static volatile enum phase phase;
volatile uint64_t int3_hits;
volatile uint64_t tf_traps, tf_bs;
volatile uint64_t tf_at[MAX_TF_TRAPS];
volatile uint64_t dr0_hits, dr0_b0, dr0_calls;
volatile uint64_t stray_db, stray_db_dr6;
volatile uint64_t markers;

extern const char self_tf_start[];

static inline uint64_t read_dr6(void)
{
    uint64_t v;
    __asm__ volatile("mov %%dr6, %0" : "=r"(v));
    return v;
}

static inline void write_dr6(uint64_t v) { __asm__ volatile("mov %0, %%dr6" : : "r"(v)); }
static inline void write_dr7(uint64_t v) { __asm__ volatile("mov %0, %%dr7" : : "r"(v)); }
static inline void write_dr0(uint64_t v) { __asm__ volatile("mov %0, %%dr0" : : "r"(v)); }

/* The debugger test's breakpoint target: does nothing the guest can tell. */
KEEP_CALLS void selfdebug_marker(void) { markers++; }

/* The guest's own DR0 breakpoint target. */
KEEP_CALLS void dr0_target(void) { dr0_calls++; }

KEEP_CALLS void on_bp(struct trap_frame *f)
{
    (void)f;  /* int3 is a trap: the frame already points after it */
    int3_hits++;
}

KEEP_CALLS void on_db(struct trap_frame *f)
{
    uint64_t dr6 = read_dr6();
    write_dr6(0xFFFF0FF0);  /* DR6 bits are sticky: a handler clears them */
    switch (phase) {
    case PHASE_TF:
        if (tf_traps < MAX_TF_TRAPS)
            tf_at[tf_traps] = f->rip - (uint64_t)(uintptr_t)self_tf_start;
        tf_traps++;
        if (dr6 & DR6_BS)
            tf_bs++;
        break;
    case PHASE_DR0:
        dr0_hits++;
        if (dr6 & DR6_B0)
            dr0_b0++;
        f->rflags |= RFLAGS_RF;  /* an instruction breakpoint is a fault: skip it once */
        if (dr0_hits >= MAX_DR0_HITS)
            write_dr7(DR7_RESERVED_ONE);
        break;
    default:
        stray_db++;
        stray_db_dr6 = dr6;
        f->rflags &= ~RFLAGS_TF;
        break;
    }
}

KEEP_CALLS void phase_int3(void)
{
    __asm__ volatile(AT(self_int3) "int3\n" AT(self_int3_end) : : : "memory");
}

/* The TF-stepped block: a trap after each of nop, nop, pushfq, andq, popfq. */
KEEP_CALLS void phase_tf(void)
{
    phase = PHASE_TF;
    __asm__ volatile(AT(self_tf_start) "pushfq\n"
                     AT(self_tf_or) "orq $0x100, (%%rsp)\n"
                     AT(self_tf_set) "popfq\n"
                     AT(self_tf_1) "nop\n"
                     AT(self_tf_2) "nop\n"
                     AT(self_tf_3) "pushfq\n"
                     AT(self_tf_4) "andq $~0x100, (%%rsp)\n"
                     AT(self_tf_5) "popfq\n"
                     AT(self_tf_end)
                     : : : "cc", "memory");
    phase = PHASE_NONE;
}

KEEP_CALLS void phase_dr0(void)
{
    phase = PHASE_DR0;
    write_dr6(0xFFFF0FF0);
    write_dr0((uint64_t)(uintptr_t)dr0_target);
    write_dr7(DR7_RESERVED_ONE | DR7_L0);  /* execute, 1 byte, local enable */
    for (int i = 0; i < DR0_CALLS; i++) {
        dr0_target();
        selfdebug_marker();  /* a debugger stop while the guest's DR0 is armed */
    }
    write_dr7(DR7_RESERVED_ONE);
    write_dr0(0);
    phase = PHASE_NONE;
}

static void put(const char *name, uint64_t v)
{
    serial_puts(" ");
    serial_puts(name);
    serial_puts("=");
    serial_put_dec(v);
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    (void)ram_size;
    if (cpu != 0)
        cpu_park();

    trap_set_handler(1, on_db);
    trap_set_handler(3, on_bp);

    selfdebug_marker();
    phase_int3();
    selfdebug_marker();
    phase_tf();
    selfdebug_marker();
    if (selfdebug_use_dr0)
        phase_dr0();
    selfdebug_marker();

    serial_puts("selfdebug:");
    put("int3", int3_hits);
    put("tf", tf_traps);
    put("dr0", dr0_hits);
    serial_puts("\nselfdebug: detail");
    put("bs", tf_bs);
    put("b0", dr0_b0);
    put("dr0_calls", dr0_calls);
    put("stray", stray_db);
    serial_puts(" stray_dr6=");
    serial_put_hex(stray_db_dr6);
    serial_puts(" tf_at=");
    for (uint64_t i = 0; i < tf_traps && i < MAX_TF_TRAPS; i++) {
        if (i)
            serial_puts(",");
        serial_put_dec(tf_at[i]);
    }
    serial_puts("\n");
    return 0;
}
