/* Two vCPUs (or more) count the primes below LIMIT, each in its own share of the range.
 * vCPU 0 waits for the others, prints the total on the serial port and exits with 0
 * when it is right (303 primes below 2000), 1 when it is not.
 *
 * Good places to stop: count_primes (every vCPU calls it), is_prime, and writes to
 * `finished` (a data breakpoint).
 */
#define LIMIT 2000
#define EXPECTED 303
#define MAX_CPUS 8

volatile unsigned long results[MAX_CPUS];
volatile unsigned int finished;

static void serial_putc(char c)
{
    __asm__ volatile("outb %0, %1" : : "a"(c), "Nd"((unsigned short)0x3F8));
}

static void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

static void serial_put_dec(unsigned long value)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        serial_putc(digits[--n]);
}

int is_prime(unsigned long n)
{
    if (n < 2)
        return 0;
    for (unsigned long d = 2; d * d <= n; d++) {
        if (n % d == 0)
            return 0;
    }
    return 1;
}

unsigned long count_primes(unsigned long from, unsigned long to)
{
    unsigned long count = 0;
    for (unsigned long n = from; n < to; n++) {
        if (is_prime(n))
            count++;
    }
    return count;
}

int guest_main(unsigned int cpu, unsigned int ncpus)
{
    if (ncpus > MAX_CPUS)
        return 2;
    unsigned long share = LIMIT / ncpus;
    unsigned long from = cpu * share;
    unsigned long to = cpu + 1 == ncpus ? LIMIT : from + share;

    results[cpu] = count_primes(from, to);
    __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
    if (cpu != 0) {
        for (;;)
            __asm__ volatile("cli; hlt");   /* only vCPU 0 reports and ends the VM */
    }

    while (finished != ncpus)
        __asm__ volatile("pause");
    unsigned long total = 0;
    for (unsigned int c = 0; c < ncpus; c++)
        total += results[c];
    serial_puts("primes below 2000: ");
    serial_put_dec(total);
    serial_puts("\n");
    return total == EXPECTED ? 0 : 1;
}
