/* smp: every vCPU runs the same counting loop at once.
 *
 * The shared counter is bumped with lock xadd, so the total is exact only if the
 * platform makes locked instructions atomic across vCPUs. The per-vCPU counters are
 * plain increments on separate cache lines (each vCPU owns one), and smp_hit() is a
 * tiny function every vCPU calls on every iteration: a breakpoint on it is hit by all
 * vCPUs concurrently. vCPU 0 waits for everyone, checks the sums and reports.
 *
 * Exit codes: 0 ok, 1 a counter is wrong, 2 more vCPUs than SMP_MAX_CPUS.
 */
#include "rt.h"

#define SMP_MAX_CPUS 8

/* Patchable in the ELF (.data) by tests that want a shorter or longer run. */
volatile uint64_t smp_iterations = 100000;

volatile uint64_t smp_shared;          /* bumped by every vCPU with lock xadd */
volatile uint32_t smp_done;            /* vCPUs that finished their loop */

struct percpu_counter {
    volatile uint64_t count;
} ALIGNED(64);                         /* one cache line each: no false sharing */

struct percpu_counter smp_percpu[SMP_MAX_CPUS];

/* Called once per iteration by every vCPU: the per-vCPU increment. */
KEEP_CALLS void smp_hit(unsigned cpu)
{
    smp_percpu[cpu].count++;
}

KEEP_CALLS void smp_worker(unsigned cpu, uint64_t iterations)
{
    for (uint64_t i = 0; i < iterations; i++) {
        atomic_fetch_add_u64(&smp_shared, 1);
        smp_hit(cpu);
    }
    atomic_fetch_add_u32(&smp_done, 1);
}

/* vCPU 0 only, once every vCPU is done. Returns the exit code. */
KEEP_CALLS int smp_check(unsigned ncpus, uint64_t iterations)
{
    int status = 0;
    uint64_t shared = smp_shared;

    if (shared != (uint64_t)ncpus * iterations) {
        serial_puts("smp: FAIL shared=");
        serial_put_dec(shared);
        serial_puts(" expected=");
        serial_put_dec((uint64_t)ncpus * iterations);
        serial_puts("\n");
        status = 1;
    }
    for (unsigned c = 0; c < SMP_MAX_CPUS; c++) {
        uint64_t want = c < ncpus ? iterations : 0;
        if (smp_percpu[c].count != want) {
            serial_puts("smp: FAIL cpu ");
            serial_put_dec(c);
            serial_puts(" count=");
            serial_put_dec(smp_percpu[c].count);
            serial_puts(" expected=");
            serial_put_dec(want);
            serial_puts("\n");
            status = 1;
        }
    }
    serial_puts("smp: ");
    serial_put_dec(ncpus);
    serial_puts(" cpus, shared=");
    serial_put_dec(shared);
    serial_puts("\n");
    return status;
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ram_size;
    if (ncpus > SMP_MAX_CPUS) {
        if (cpu != 0)
            cpu_park();
        serial_puts("smp: FAIL more than 8 vCPUs\n");
        return 2;
    }

    uint64_t iterations = smp_iterations;   /* read once: the loop bound must not move */
    smp_worker(cpu, iterations);

    if (cpu != 0)
        cpu_park();     /* vCPU 0 must stay running: it reports and ends the VM */
    while (smp_done != ncpus)
        cpu_pause();
    return smp_check(ncpus, iterations);
}
