/* hello: the smallest useful guest. vCPU 0 prints one line and returns 42, which
 * _start writes to the debug-exit port: a fixed non-zero code, so a runner can check
 * that the exit code is propagated (0 could also mean "every vCPU halted"). */
#include "rt.h"

const char hello_message[] = "Hello from dap-whpx guest!\n";

KEEP_CALLS void say_hello(void)
{
    serial_puts(hello_message);
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    (void)ram_size;
    if (cpu != 0)
        cpu_park();     /* only vCPU 0 talks, so the output is the same for any --cpus */
    say_hello();
    return 42;
}
