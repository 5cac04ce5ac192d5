/* faults: exception delivery through the guest's own IDT.
 *
 * Each check triggers one exception from a small inline-asm block with global labels
 * around the instruction: fault_X_rip is where the CPU should report it and
 * fault_X_resume is where the handler continues (by rewriting the saved RIP, since the
 * faulting instruction would otherwise run again forever). For the traps (INT3, INT n)
 * the CPU already reports the next instruction, so both labels are the same place.
 * The handler records what it saw; the check compares vector, error code, RIP and, for
 * page faults, CR2. The labels are also handy breakpoint targets.
 *
 * One line per check ("ok UD" / "FAIL UD ..."), then exit 0 if all passed, else the
 * number of the first failing check (see the checks[] table).
 */
#include "rt.h"

/* Selector past the end of the GDT (limit 0x27), TI = 0, RPL = 0: loading it into DS is
 * #GP with the selector as error code. A TI = 1 selector would instead index the LDT,
 * which the boot contract does not describe. */
#define BAD_SELECTOR 0x1230

/* What the handler saw. */
struct trap_record {
    uint64_t count;
    uint64_t vector;
    uint64_t error_code;
    uint64_t rip;
    uint64_t cr2;
    uint64_t cs;
};

volatile struct trap_record fault_seen;
/* Where the handler resumes the current check. */
static volatile uint64_t fault_resume_rip;
/* The unmapped address used for the page faults (chosen from the RAM size). */
volatile uint64_t fault_pf_addr;

KEEP_CALLS void fault_handler(struct trap_frame *f)
{
    fault_seen.count++;
    fault_seen.vector = f->vector;
    fault_seen.error_code = f->error_code;
    fault_seen.rip = f->rip;
    fault_seen.cs = f->cs;
    fault_seen.cr2 = f->vector == 14 ? read_cr2() : 0;
    if (fault_resume_rip == 0) {
        /* No check is running: this fault is a bug, and returning would retry it. */
        serial_puts("faults: unexpected trap vector=");
        serial_put_dec(f->vector);
        serial_puts(" rip=");
        serial_put_hex(f->rip);
        serial_puts("\n");
        guest_exit(RT_EXIT_UNHANDLED_TRAP);
    }
    f->rip = fault_resume_rip;
}

/* ---- the triggers: noipa keeps each asm block (and its global labels) exactly once */

KEEP_CALLS void trigger_ud(void)
{
    __asm__ volatile(".globl fault_ud_rip, fault_ud_resume\n"
                     "fault_ud_rip: ud2\n"
                     "fault_ud_resume:\n");
}

KEEP_CALLS void trigger_de(void)
{
    __asm__ volatile(".globl fault_de_rip, fault_de_resume\n"
                     "xor %%edx, %%edx\n"
                     "mov $1, %%eax\n"
                     "xor %%ecx, %%ecx\n"
                     "fault_de_rip: divl %%ecx\n"
                     "fault_de_resume:\n"
                     : : : "rax", "rcx", "rdx", "cc");
}

KEEP_CALLS void trigger_gp_selector(void)
{
    __asm__ volatile(".globl fault_gp_sel_rip, fault_gp_sel_resume\n"
                     "mov %0, %%ax\n"
                     "fault_gp_sel_rip: mov %%ax, %%ds\n"
                     "fault_gp_sel_resume:\n"
                     : : "i"(BAD_SELECTOR) : "rax");
}

KEEP_CALLS void trigger_gp_noncanonical(void)
{
    /* Not through RSP/RBP: a non-canonical stack access would be #SS instead. */
    __asm__ volatile(".globl fault_gp_nc_rip, fault_gp_nc_resume\n"
                     "movabs $0x8000000000000000, %%rcx\n"
                     "fault_gp_nc_rip: mov (%%rcx), %%rax\n"
                     "fault_gp_nc_resume:\n"
                     : : : "rax", "rcx", "memory");
}

KEEP_CALLS void trigger_pf_read(uint64_t addr)
{
    __asm__ volatile(".globl fault_pf_read_rip, fault_pf_read_resume\n"
                     "fault_pf_read_rip: mov (%0), %%rax\n"
                     "fault_pf_read_resume:\n"
                     : : "r"(addr) : "rax", "memory");
}

KEEP_CALLS void trigger_pf_write(uint64_t addr)
{
    __asm__ volatile(".globl fault_pf_write_rip, fault_pf_write_resume\n"
                     "fault_pf_write_rip: movq $0x5a, (%0)\n"
                     "fault_pf_write_resume:\n"
                     : : "r"(addr) : "memory");
}

KEEP_CALLS void trigger_bp(void)
{
    __asm__ volatile(".globl fault_bp_rip, fault_bp_resume\n"
                     "int3\n"
                     "fault_bp_rip:\n"
                     "fault_bp_resume:\n");
}

/* INT 0x30 with known values in the callee-saved registers: they must come back
 * unchanged, which checks that the stubs save and restore the frame properly. */
KEEP_CALLS uint64_t trigger_int30(void)
{
    uint64_t bad = 0;
    /* rbx/r12/r15 are clobbers, so gcc saves them and never puts `bad` in them. */
    __asm__ volatile(".globl fault_int30_rip, fault_int30_resume\n"
                     "movabs $0x1111111111111111, %%rbx\n"
                     "movabs $0x1212121212121212, %%r12\n"
                     "movabs $0x1515151515151515, %%r15\n"
                     "int $0x30\n"
                     "fault_int30_rip:\n"
                     "fault_int30_resume:\n"
                     "movabs $0x1111111111111111, %%rax\n"
                     "xor %%rax, %%rbx\n"
                     "or %%rbx, %0\n"
                     "movabs $0x1212121212121212, %%rax\n"
                     "xor %%rax, %%r12\n"
                     "or %%r12, %0\n"
                     "movabs $0x1515151515151515, %%rax\n"
                     "xor %%rax, %%r15\n"
                     "or %%r15, %0\n"
                     : "+r"(bad) : : "rax", "rbx", "r12", "r15", "cc");
    return bad;
}

extern const char fault_ud_rip[], fault_ud_resume[];
extern const char fault_de_rip[], fault_de_resume[];
extern const char fault_gp_sel_rip[], fault_gp_sel_resume[];
extern const char fault_gp_nc_rip[], fault_gp_nc_resume[];
extern const char fault_pf_read_rip[], fault_pf_read_resume[];
extern const char fault_pf_write_rip[], fault_pf_write_resume[];
extern const char fault_bp_rip[], fault_bp_resume[];
extern const char fault_int30_rip[], fault_int30_resume[];

enum trigger_kind { T_UD, T_DE, T_GP_SEL, T_GP_NC, T_PF_READ, T_PF_WRITE, T_BP, T_INT30 };

struct check {
    const char *name;
    enum trigger_kind kind;
    uint64_t vector;
    uint64_t error_code;
    const char *rip;        /* the RIP the CPU must report */
    const char *resume;     /* where the handler continues */
    bool check_cr2;
};

/* Check number = index + 1 = the exit code if it is the first to fail. */
static const struct check checks[] = {
    { "UD",              T_UD,       6,    0,            fault_ud_rip,       fault_ud_resume,       false },
    { "DE",              T_DE,       0,    0,            fault_de_rip,       fault_de_resume,       false },
    { "GP selector",     T_GP_SEL,   13,   BAD_SELECTOR, fault_gp_sel_rip,   fault_gp_sel_resume,   false },
    { "GP noncanonical", T_GP_NC,    13,   0,            fault_gp_nc_rip,    fault_gp_nc_resume,    false },
    { "PF read",         T_PF_READ,  14,   0,            fault_pf_read_rip,  fault_pf_read_resume,  true },
    { "PF write",        T_PF_WRITE, 14,   2,            fault_pf_write_rip, fault_pf_write_resume, true },
    { "BP",              T_BP,       3,    0,            fault_bp_rip,       fault_bp_resume,       false },
    { "INT 0x30",        T_INT30,    0x30, 0,            fault_int30_rip,    fault_int30_resume,    false },
};
#define NCHECKS (sizeof(checks) / sizeof(checks[0]))

static void put_field(const char *name, uint64_t got, uint64_t want)
{
    serial_puts(" ");
    serial_puts(name);
    serial_puts("=");
    serial_put_hex(got);
    if (got != want) {
        serial_puts("(want ");
        serial_put_hex(want);
        serial_puts(")");
    }
}

/* Run check `c`; returns true if it passed. Prints its line. */
KEEP_CALLS bool run_check(const struct check *c)
{
    uint64_t regs_bad = 0;

    fault_seen.count = 0;
    fault_resume_rip = (uint64_t)(uintptr_t)c->resume;
    switch (c->kind) {
    case T_UD: trigger_ud(); break;
    case T_DE: trigger_de(); break;
    case T_GP_SEL: trigger_gp_selector(); break;
    case T_GP_NC: trigger_gp_noncanonical(); break;
    case T_PF_READ: trigger_pf_read(fault_pf_addr); break;
    case T_PF_WRITE: trigger_pf_write(fault_pf_addr); break;
    case T_BP: trigger_bp(); break;
    case T_INT30: regs_bad = trigger_int30(); break;
    }
    fault_resume_rip = 0;

    uint64_t want_cr2 = c->check_cr2 ? fault_pf_addr : 0;
    bool ok = fault_seen.count == 1
        && fault_seen.vector == c->vector
        && fault_seen.error_code == c->error_code
        && fault_seen.rip == (uint64_t)(uintptr_t)c->rip
        && fault_seen.cs == 0x08
        && fault_seen.cr2 == want_cr2
        && regs_bad == 0;

    serial_puts(ok ? "ok " : "FAIL ");
    serial_puts(c->name);
    if (!ok) {
        put_field("count", fault_seen.count, 1);
        put_field("vector", fault_seen.vector, c->vector);
        put_field("error", fault_seen.error_code, c->error_code);
        put_field("rip", fault_seen.rip, (uint64_t)(uintptr_t)c->rip);
        put_field("cs", fault_seen.cs, 0x08);
        if (c->check_cr2)
            put_field("cr2", fault_seen.cr2, want_cr2);
        if (regs_bad)
            put_field("regs_xor", regs_bad, 0);
    }
    serial_puts("\n");
    return ok;
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    if (cpu != 0)
        cpu_park();

    /* Only RAM (and the APIC page) is mapped. 1 GiB is beyond the default RAM; with
     * more RAM than that, use 4 GiB, past everything the boot page tables can map. */
    fault_pf_addr = ram_size <= 0x40000000 ? 0x40000000 : 0x100000000;

    const unsigned vectors[] = { 0, 3, 6, 13, 14, 0x30 };
    for (unsigned i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        trap_set_handler(vectors[i], fault_handler);

    int first_failure = 0;
    for (unsigned i = 0; i < NCHECKS; i++)
        if (!run_check(&checks[i]) && first_failure == 0)
            first_failure = (int)i + 1;

    if (first_failure == 0)
        serial_puts("faults: all checks passed\n");
    return first_failure;
}
