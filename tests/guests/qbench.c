/* qbench: the guest bench/vs_qemu.py runs under our engine and under QEMU + gdb.
 *
 * The same ELF boots both ways: our VMM enters _start in long mode (docs/boot.md); QEMU
 * boots it with -kernel through multiboot.S. Phases, in order, each sized by a .data word
 * the benchmark patches in a copy of the ELF (0 skips a phase):
 *
 * - qb_pushf_probe: pushf; pop; store. A debugger stepping it must not leave its TF in
 *   the image the guest stores in qb_pushf_image (bit 8).
 * - the hot loop: qb_hot_iterations calls of the leaf qb_leaf (breakpoint hits, steps,
 *   run speed with and without a debugger).
 * - qb_long_line: a loop written on one source line, qb_line_iterations times (`next`
 *   over it; the line is marked QB_LONG_LINE for the benchmark to find).
 * - qb_never is never called: a breakpoint that is set but never hit.
 *
 * Every vCPU runs the hot loop; vCPU 0 waits for the others and ends the VM with exit code
 * 0 (QEMU's isa-debug-exit turns that into process status 1).
 */
#include "rt.h"

volatile uint64_t qb_hot_iterations = 1000;
volatile uint64_t qb_line_iterations = 100000;
volatile uint64_t qb_pushf_image;
volatile uint64_t qb_line_sink;
volatile uint64_t qb_result[8];
volatile uint32_t qb_done;

KEEP_CALLS uint64_t qb_leaf(uint64_t acc, uint64_t i)
{
    return acc * 31 + i;
}

KEEP_CALLS void qb_never(void)
{
    serial_puts("qbench: qb_never was called\n");
}

KEEP_CALLS void qb_hot_loop(unsigned cpu, uint64_t iterations)
{
    uint64_t acc = cpu;
    for (uint64_t i = 0; i < iterations; i++)
        acc = qb_leaf(acc, i);
    qb_result[cpu] = acc;
}

KEEP_CALLS void qb_long_line(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) qb_line_sink += i;  /* QB_LONG_LINE */
}

/* pushf; pop %rax; store: the probe a stepping debugger must be invisible to. */
__asm__(
    "   .text\n"
    "   .globl qb_pushf_probe\n"
    "   .type qb_pushf_probe, @function\n"
    "qb_pushf_probe:\n"
    "   pushfq\n"
    "   .globl qb_pushf_probe_pop\n"
    "qb_pushf_probe_pop:\n"
    "   popq %rax\n"
    "   movq %rax, qb_pushf_image(%rip)\n"
    "   .globl qb_pushf_probe_ret\n"
    "qb_pushf_probe_ret:\n"
    "   ret\n"
    "   .size qb_pushf_probe, . - qb_pushf_probe\n");
void qb_pushf_probe(void);

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ram_size;
    if (cpu == 0)
        qb_pushf_probe();
    qb_hot_loop(cpu, qb_hot_iterations);
    if (cpu != 0) {
        atomic_fetch_add_u32(&qb_done, 1);
        cpu_park();
    }
    while (qb_done != ncpus - 1)
        cpu_pause();
    qb_long_line(qb_line_iterations);
    serial_puts("qbench: done\n");
    return 0;
}
