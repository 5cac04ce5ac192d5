/* timer: local APIC timer interrupts, periodic mode, on vCPU 0.
 *
 * Phase 1 ("busy"): interrupts on, the CPU keeps working (timer_work counts loop
 * iterations) until TIMER_PHASE_TICKS ticks arrived: interrupts must preempt running
 * code. Phase 2 ("halt"): "sti; hlt" until TIMER_PHASE_TICKS more ticks: interrupts must
 * wake a halted vCPU (on the emulated platform this is where virtual time jumps).
 *
 * A broken platform must fail, not hang: phase 1 gives up after timer_spin_limit
 * iterations without a tick; phase 2 only halts while the timer is visibly counting
 * (a non-zero current count) and otherwise waits busy, with the same bound, so a timer
 * that stopped is reported instead of waited on forever.
 *
 * Exit codes: 0 ok, 1 phase 1 went timer_spin_limit iterations without a tick,
 * 2 phase 2 found the count at 0 and no tick came within timer_spin_limit iterations,
 * 3 too many wake-ups without ticks in phase 2,
 * 4 the tick handler saw a wrong vector.
 */
#include "rt.h"

#define TIMER_VECTOR 0x20
#define TIMER_PHASE_TICKS 20

/* Patchable in the ELF (.data). 10000 at divide-by-1 is 100 us at 100 MHz: on the
 * emulated platform (1 instruction = 1 ns) a tick every 100k instructions. */
volatile uint32_t timer_initial_count = 10000;
volatile uint64_t timer_spin_limit = 50000000;   /* loop iterations without a tick */

volatile uint64_t timer_ticks;
volatile uint64_t timer_work;
volatile uint64_t timer_bad_vector;

/* The interrupt handler: breakpoint here to stop on every tick. */
KEEP_CALLS void timer_tick(struct trap_frame *f)
{
    if (f->vector != TIMER_VECTOR)
        timer_bad_vector = f->vector;
    timer_ticks++;
    lapic_eoi();
}

static int fail(int code, const char *why)
{
    lapic_timer_stop();
    cpu_cli();
    serial_puts("timer: FAIL ");
    serial_puts(why);
    serial_puts(" ticks=");
    serial_put_dec(timer_ticks);
    serial_puts("\n");
    return code;
}

/* Phase 1: runs with interrupts enabled until `until` ticks. */
KEEP_CALLS int timer_busy_phase(uint64_t until)
{
    uint64_t spins = 0;
    uint64_t last_ticks = timer_ticks;

    cpu_sti();
    while (timer_ticks < until) {
        timer_work++;
        if (timer_ticks != last_ticks) {
            last_ticks = timer_ticks;
            spins = 0;
        } else if (++spins > timer_spin_limit) {
            return fail(1, "no timer interrupt while busy");
        }
    }
    cpu_cli();
    return 0;
}

/* Wait with interrupts enabled, not halted, for the next tick; false if none arrives
 * within timer_spin_limit iterations. */
static bool wait_for_tick_busy(void)
{
    uint64_t before = timer_ticks;
    uint64_t spins = 0;
    bool ok = true;

    cpu_sti();
    while (timer_ticks == before) {
        if (++spins > timer_spin_limit) {
            ok = false;
            break;
        }
    }
    cpu_cli();
    return ok;
}

/* Phase 2: halts until `until` ticks. Interrupts are off while deciding to halt and
 * "sti; hlt" re-enables them atomically, so a tick cannot slip in unnoticed.
 *
 * Before each hlt the current count must be non-zero (periodic timer still counting).
 * On host-time platforms it can read 0 for a while when a tick is late (the count has
 * run out, the reload has not happened yet), so a 0 is not fatal by itself: wait busy,
 * bounded, for that tick instead of halting on a timer that may never fire again. */
KEEP_CALLS int timer_halt_phase(uint64_t until)
{
    uint64_t wakeups = 0;

    cpu_cli();
    while (timer_ticks < until) {
        if (lapic_read(LAPIC_TIMER_CURRENT) == 0) {
            if (!wait_for_tick_busy())
                return fail(2, "timer stopped before hlt");
            continue;
        }
        if (++wakeups > 1000 * TIMER_PHASE_TICKS)
            return fail(3, "hlt keeps waking without ticks");
        cpu_sti_hlt();
        cpu_cli();
    }
    return 0;
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    (void)ram_size;
    if (cpu != 0)
        cpu_park();

    trap_set_handler(TIMER_VECTOR, timer_tick);
    lapic_timer_start(TIMER_VECTOR, timer_initial_count, LAPIC_DIVIDE_1, true);

    int rc = timer_busy_phase(TIMER_PHASE_TICKS);
    if (rc == 0)
        rc = timer_halt_phase(timer_ticks + TIMER_PHASE_TICKS);
    if (rc != 0)
        return rc;

    lapic_timer_stop();
    if (timer_bad_vector)
        return fail(4, "tick on a wrong vector");
    serial_puts("timer: ticks=");
    serial_put_dec(timer_ticks);
    serial_puts("\n");
    return 0;
}
