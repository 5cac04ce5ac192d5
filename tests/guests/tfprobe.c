/* tfprobe: what the guest can see of a debugger's single-step primitive (RFLAGS.TF).
 *
 * Each probe is a short straight-line asm block whose every instruction has a global
 * label: the probe's name (`probe_pushf`) on the first, then `probe_pushf_1`,
 * `probe_pushf_2`, ... on the next ones and `probe_pushf_end` after the last. Whatever
 * the instruction does (a trap, a fault whose handler skips it, an IRETQ), the next
 * instruction that runs in the probe is the next label, so a test that steps from the
 * probe's label knows every RIP a step must land on. Handlers run on the runtime's stubs
 * (traps.S), so the first instruction of a handler is its IDT gate's target.
 *
 * Every observation is an RFLAGS image the guest got hold of (stored by the probe, or the
 * one the CPU saved in an exception frame) or a count; none may show TF (bit 8) unless
 * the guest set it. They live in globals (read them with a breakpoint on `tfprobe_done`)
 * and are printed at the end, one `name=value` per line. The guest exits with 0.
 *
 * Probes, in order:
 *   probe_pushf  pushfq; pop; store                    (PUSHF saves the live TF)
 *   probe_popf   pushq $2; popfq; pushfq; popfq; ...   (POPF loads TF; a round trip)
 *   probe_iretq  build an IRETQ frame (RFLAGS image 2) returning to the next label
 *   probe_int    int $0x30: handler records the saved RFLAGS, returns
 *   probe_int3   int3: likewise
 *   probe_fault  ud2: handler records the saved RFLAGS and skips the 2 bytes
 *   probe_dr6    clear DR6, nop, read DR6: the step's #DB must not set DR6.BS
 *   probe_timer  APIC timer expired while interrupts were off: sti; nop; nop; nop
 *                (an interrupt is pending from the sti shadow's end on)
 * An unexpected #DB (a TF that leaked into the guest's state) is counted, not fatal.
 */
#include "rt.h"

#define TIMER_VECTOR 0x20
#define INT_VECTOR 0x30

/* A global label on the next instruction. */
#define AT(name) ".globl " #name "\n" #name ":\n"
/* pushfq; pop into RAX; store: the probe's own look at RFLAGS (clobbers RAX). */
#define STORE_RFLAGS(a, b, c, var) \
    AT(a) "pushfq\n" AT(b) "popq %%rax\n" AT(c) "movq %%rax, " #var "(%%rip)\n"

/* ---- observations ------------------------------------------------------------------ */
volatile uint64_t seen_pushf;        /* what pushfq stored */
volatile uint64_t seen_popf;         /* RFLAGS after popfq of a TF=0 image and a round trip */
volatile uint64_t seen_iretq;        /* RFLAGS after iretq with a TF=0 image */
volatile uint64_t seen_int_frame;    /* RFLAGS the CPU saved for int $0x30 */
volatile uint64_t seen_int_after;    /* RFLAGS after the handler returned */
volatile uint64_t seen_int3_frame;
volatile uint64_t seen_int3_after;
volatile uint64_t seen_ud_frame;
volatile uint64_t seen_ud_after;
volatile uint64_t seen_timer_frame;  /* RFLAGS the CPU saved for the timer interrupt */
volatile uint64_t seen_timer_after;
volatile uint64_t seen_dr6;          /* DR6 after a nop, cleared just before: no BS */

volatile uint64_t hits_int, hits_int3, hits_ud, hits_timer;
volatile uint64_t unexpected_db;     /* #DBs the guest took: it never sets TF itself */
volatile uint64_t unexpected_db_rip;
volatile uint64_t timer_rip;         /* where the timer interrupt came in */

/* Patchable: spin bounds for the timer probe (kvm_pvm runs ~2 M instructions/s). */
volatile uint64_t tfprobe_timer_count = 1000;    /* 10 us at 100 MHz / 1 */
volatile uint64_t tfprobe_spin_limit = 20000000;

/* ---- handlers ---------------------------------------------------------------------- */
KEEP_CALLS void on_int(struct trap_frame *f)
{
    hits_int++;
    seen_int_frame = f->rflags;
}

KEEP_CALLS void on_int3(struct trap_frame *f)
{
    hits_int3++;
    seen_int3_frame = f->rflags;
}

KEEP_CALLS void on_ud(struct trap_frame *f)
{
    hits_ud++;
    seen_ud_frame = f->rflags;
    f->rip += 2;  /* ud2 */
}

KEEP_CALLS void on_timer(struct trap_frame *f)
{
    hits_timer++;
    seen_timer_frame = f->rflags;
    timer_rip = f->rip;
    lapic_eoi();
}

KEEP_CALLS void on_db(struct trap_frame *f)
{
    unexpected_db++;
    unexpected_db_rip = f->rip;
    f->rflags &= ~0x100ull;  /* a leaked TF would trap on every instruction: stop it */
}

/* ---- probes: noipa keeps each asm block, and its labels, exactly once --------------- */
KEEP_CALLS void run_probe_pushf(void)
{
    __asm__ volatile(STORE_RFLAGS(probe_pushf, probe_pushf_1, probe_pushf_2, seen_pushf)
                     AT(probe_pushf_end)
                     : : : "rax", "memory");
}

KEEP_CALLS void run_probe_popf(void)
{
    __asm__ volatile(AT(probe_popf) "pushq $0x2\n"
                     AT(probe_popf_1) "popfq\n"           /* TF=0 image: stepping must go on */
                     AT(probe_popf_2) "pushfq\n"          /* round trip: a TF pushed here... */
                     AT(probe_popf_3) "popfq\n"           /* ...would be loaded back here */
                     STORE_RFLAGS(probe_popf_4, probe_popf_5, probe_popf_6, seen_popf)
                     AT(probe_popf_end)
                     : : : "rax", "cc", "memory");
}

KEEP_CALLS void run_probe_iretq(void)
{
    __asm__ volatile(AT(probe_iretq) "movq %%rsp, %%rax\n"
                     AT(probe_iretq_1) "pushq $0x10\n"    /* SS */
                     AT(probe_iretq_2) "pushq %%rax\n"    /* RSP */
                     AT(probe_iretq_3) "pushq $0x2\n"     /* RFLAGS: no TF */
                     AT(probe_iretq_4) "pushq $0x08\n"    /* CS */
                     AT(probe_iretq_5) "leaq probe_iretq_8(%%rip), %%rax\n"
                     AT(probe_iretq_6) "pushq %%rax\n"    /* RIP: the next label */
                     AT(probe_iretq_7) "iretq\n"
                     STORE_RFLAGS(probe_iretq_8, probe_iretq_9, probe_iretq_10, seen_iretq)
                     AT(probe_iretq_end)
                     : : : "rax", "cc", "memory");
}

KEEP_CALLS void run_probe_int(void)
{
    __asm__ volatile(AT(probe_int) "int $0x30\n"
                     STORE_RFLAGS(probe_int_1, probe_int_2, probe_int_3, seen_int_after)
                     AT(probe_int_end)
                     : : : "rax", "memory");
}

KEEP_CALLS void run_probe_int3(void)
{
    __asm__ volatile(AT(probe_int3) "int3\n"
                     STORE_RFLAGS(probe_int3_1, probe_int3_2, probe_int3_3, seen_int3_after)
                     AT(probe_int3_end)
                     : : : "rax", "memory");
}

KEEP_CALLS void run_probe_fault(void)
{
    __asm__ volatile(AT(probe_fault) "ud2\n"
                     STORE_RFLAGS(probe_fault_1, probe_fault_2, probe_fault_3, seen_ud_after)
                     AT(probe_fault_end)
                     : : : "rax", "memory");
}

/* The step primitive's #DB must not show in the guest's DR6 either. The upper half of
 * DR6 must be written as 0, hence movl. */
KEEP_CALLS void run_probe_dr6(void)
{
    __asm__ volatile(AT(probe_dr6) "movl $0xffff0ff0, %%eax\n"
                     AT(probe_dr6_1) "movq %%rax, %%dr6\n"
                     AT(probe_dr6_2) "nop\n"
                     AT(probe_dr6_3) "movq %%dr6, %%rax\n"
                     AT(probe_dr6_4) "movq %%rax, seen_dr6(%%rip)\n"
                     AT(probe_dr6_end)
                     : : : "rax", "memory");
}

/* The timer expires while interrupts are off, so its interrupt is pending when `sti`
 * runs: it is taken once the sti shadow is over (after probe_timer_1's nop) unless a
 * debugger holds it off while stepping. The probe then waits for it with IF=1. */
KEEP_CALLS int run_probe_timer(void)
{
    uint64_t spins = 0;

    cpu_cli();
    lapic_timer_start(TIMER_VECTOR, (uint32_t)tfprobe_timer_count, LAPIC_DIVIDE_1, false);
    while (lapic_read(LAPIC_TIMER_CURRENT) != 0)
        if (++spins > tfprobe_spin_limit)
            return 1;
    /* On host time the expiry callback may run a little after the count reads 0. */
    for (volatile int i = 0; i < 2000; i++)
        ;
    __asm__ volatile(AT(probe_timer) "sti\n"
                     AT(probe_timer_1) "nop\n"
                     AT(probe_timer_2) "nop\n"
                     AT(probe_timer_3) "nop\n"
                     AT(probe_timer_end)
                     : : : "memory");
    for (spins = 0; hits_timer == 0; )
        if (++spins > tfprobe_spin_limit)
            break;
    __asm__ volatile(STORE_RFLAGS(probe_timer_after, probe_timer_after_1, probe_timer_after_2,
                                  seen_timer_after) : : : "rax", "memory");
    cpu_cli();
    lapic_timer_stop();
    return hits_timer == 1 ? 0 : 2;
}

/* Breakpoint here: every observation is final. */
KEEP_CALLS void tfprobe_done(void) {}

static void put(const char *name, uint64_t v)
{
    serial_puts(name);
    serial_puts("=");
    serial_put_hex(v);
    serial_puts("\n");
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    (void)ram_size;
    if (cpu != 0)
        cpu_park();

    trap_set_handler(1, on_db);
    trap_set_handler(3, on_int3);
    trap_set_handler(6, on_ud);
    trap_set_handler(INT_VECTOR, on_int);
    trap_set_handler(TIMER_VECTOR, on_timer);

    run_probe_pushf();
    run_probe_popf();
    run_probe_iretq();
    run_probe_int();
    run_probe_int3();
    run_probe_fault();
    run_probe_dr6();
    int timer = run_probe_timer();
    tfprobe_done();

    put("pushf", seen_pushf);
    put("popf", seen_popf);
    put("iretq", seen_iretq);
    put("int_frame", seen_int_frame);
    put("int_after", seen_int_after);
    put("int3_frame", seen_int3_frame);
    put("int3_after", seen_int3_after);
    put("ud_frame", seen_ud_frame);
    put("ud_after", seen_ud_after);
    put("timer_frame", seen_timer_frame);
    put("timer_after", seen_timer_after);
    put("dr6", seen_dr6);
    put("hits_int", hits_int);
    put("hits_int3", hits_int3);
    put("hits_ud", hits_ud);
    put("hits_timer", hits_timer);
    put("unexpected_db", unexpected_db);
    serial_puts(timer == 0 ? "tfprobe: done\n" : "tfprobe: timer did not fire\n");
    return 0;
}
