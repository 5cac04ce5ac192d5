/* srcdemo: the source-level debugging scenario (issue 6), one clearly named function per
 * feature, run in this order by vCPU 0:
 *
 *   1. leaf() called from caller_a/caller_b/caller_c (three different call stacks);
 *   2. loop100(): a 100-iteration loop over `i` (conditional breakpoint `i == 37`, logpoint);
 *   3. step_demo(): a call on one line, then another line (next / stepIn / stepOut);
 *   4. factorial(): recursion that is not a tail call (next over the recursive call);
 *   5. inspect(): a struct, a pointer to it, a union, an enum, local arrays (variables);
 *   6. chain_1 -> chain_2 -> demo_asm_frame (srcdemo_asm.S) -> chain_3 -> chain_4;
 *   7. hot_line(): one source line that loops 100,000 times (a `next` over it);
 *
 * then prints "srcdemo: ..." on serial and returns 0 (the exit port). Other vCPUs run
 * worker(), which touches none of the above, and park once vCPU 0 is done.
 *
 * Lines that tests and the engine look for carry a marker comment LINE:name; find them
 * with tests.symbols.markers.marker_line(source, name) rather than by number. Every
 * scenario function is KEEP_CALLS (noipa) and stores to volatiles so -O2 keeps it.
 */
#include "rt.h"

struct node {
    int value;
    struct node *next;
};

struct point {
    int x;
    int y;
    char tag;
};

union word {
    uint32_t u;
    uint8_t bytes[4];
};

enum color { RED, GREEN = 5, BLUE };

typedef int (*binop_t)(int, int);

volatile int demo_sink;
volatile uint32_t demo_done;
volatile uint64_t demo_hot_count = 100000;   /* patchable: iterations of hot_line() */
int demo_global = 1234;
enum color demo_color = GREEN;
int demo_matrix[2][3] = { { 1, 2, 3 }, { 4, 5, 6 } };
struct node demo_nodes[3];
const char demo_name[] = "srcdemo";

/* ---- 1. a leaf with three callers -------------------------------------------------- */
KEEP_CALLS int leaf(int x)
{
    int doubled = x * 2; /* LINE:leaf_body */
    demo_sink = doubled;
    return doubled + 1;
}

KEEP_CALLS int caller_a(void)
{
    int r = leaf(1); /* LINE:caller_a_call */
    demo_sink = r; /* keeps the call from becoming a tail call at -O2 */
    return r;
}

KEEP_CALLS int caller_b(void)
{
    int r = leaf(2); /* LINE:caller_b_call */
    /* LINE:caller_b_comment: no code on this line */
    return r + 100;
}

KEEP_CALLS int caller_c(void)
{
    int r = leaf(3); /* LINE:caller_c_call */
    return r + 200;
}

/* ---- 2. a 100-iteration loop ------------------------------------------------------- */
KEEP_CALLS uint64_t loop100(void)
{
    uint64_t total = 0;
    for (int i = 0; i < 100; i++) {
        total += (uint64_t)i; /* LINE:loop_body */
        demo_sink = i;
    }
    return total; /* LINE:loop_done */
}

/* ---- 3. next / stepIn / stepOut ---------------------------------------------------- */
KEEP_CALLS int step_callee(int a)
{
    int r = a + 10; /* LINE:callee_body */
    demo_sink = r;
    return r;
}

KEEP_CALLS int step_demo(void)
{
    int v = step_callee(5); /* LINE:step_call */
    v += 1; /* LINE:step_after */
    demo_sink = v;
    return v;
}

/* ---- 4. recursion ------------------------------------------------------------------ */
KEEP_CALLS uint64_t factorial(uint64_t n)
{
    if (n <= 1) /* LINE:fact_test */
        return 1;
    uint64_t below = factorial(n - 1); /* LINE:fact_recurse */
    demo_sink = (int)n; /* LINE:fact_after */
    return n * below;
}

/* ---- 5. variables ------------------------------------------------------------------ */
static inline __attribute__((always_inline)) int scaled(int v, int by)
{
    int product = v * by; /* LINE:scaled_body */
    demo_sink = product;
    return product;
}

KEEP_CALLS void consume(const void *p, size_t n)
{
    demo_sink = (int)n + (int)(uintptr_t)p;
}

KEEP_CALLS int add(int a, int b)
{
    return a + b;
}

KEEP_CALLS int inspect(struct node *p, int count)
{
    struct point pt = { 3, -4, 'q' };
    int arr[5] = { 10, 20, 30, 40, 50 };
    union word w;
    enum color c = BLUE;
    binop_t op = add;
    w.u = 0x11223344u;
    consume(&pt, sizeof pt);
    consume(arr, sizeof arr);
    consume(&w, sizeof w);
    int total = p->value + p->next->value + arr[count] + pt.y; /* LINE:inspect_body */
    total = op(total, scaled((int)c, count)); /* LINE:inspect_scaled_call */
    demo_sink = total; /* LINE:inspect_after */
    return total;
}

/* ---- 6. a 5-deep call chain through an assembly frame ------------------------------ */
int demo_asm_frame(int x);          /* srcdemo_asm.S: calls chain_3(x + 1) */

KEEP_CALLS int chain_4(int x)
{
    demo_sink = x; /* LINE:chain_4_body */
    return x * 3;
}

KEEP_CALLS int chain_3(int x)
{
    int r = chain_4(x + 1); /* LINE:chain_3_call */
    return r + 1;
}

KEEP_CALLS int chain_2(int x)
{
    int r = demo_asm_frame(x + 1); /* LINE:chain_2_call */
    return r + 1;
}

KEEP_CALLS int chain_1(int x)
{
    int r = chain_2(x + 1); /* LINE:chain_1_call */
    return r + 1;
}

/* ---- 7. one line that loops 100,000 times ------------------------------------------ */
KEEP_CALLS uint64_t hot_line(uint64_t n)
{
    uint64_t sum = 0;
    for (uint64_t k = 0; k < n; k++) sum += k ^ (uint64_t)demo_sink; /* LINE:hot_loop */
    demo_sink = (int)sum; /* LINE:hot_after */
    return sum;
}

/* ---- other vCPUs ------------------------------------------------------------------- */
KEEP_CALLS void worker(unsigned cpu)
{
    (void)cpu;
    while (!demo_done) /* LINE:worker_wait */
        cpu_pause();
    cpu_park();
}

static void report(const char *what, uint64_t value)
{
    serial_puts(what);
    serial_put_dec(value);
    serial_puts(" ");
}

int guest_main(unsigned cpu, unsigned ncpus, uint64_t ram_size)
{
    (void)ncpus;
    (void)ram_size;
    if (cpu != 0)
        worker(cpu);

    demo_nodes[0].value = 7;
    demo_nodes[0].next = &demo_nodes[1];
    demo_nodes[1].value = 11;
    demo_nodes[1].next = &demo_nodes[2];
    demo_nodes[2].value = 13;
    demo_nodes[2].next = 0;

    int calls = caller_a() + caller_b() + caller_c(); /* LINE:main_callers */
    uint64_t total = loop100(); /* LINE:main_loop */
    int stepped = step_demo(); /* LINE:main_step */
    uint64_t fact = factorial(5); /* LINE:main_fact */
    int seen = inspect(&demo_nodes[0], 2); /* LINE:main_inspect */
    int chained = chain_1(1); /* LINE:main_chain */
    uint64_t hot = hot_line(demo_hot_count); /* LINE:main_hot */

    serial_puts("srcdemo: ");
    report("calls=", (uint64_t)calls);
    report("loop=", total);
    report("step=", (uint64_t)stepped);
    report("fact=", fact);
    report("inspect=", (uint64_t)seen);
    report("chain=", (uint64_t)chained);
    report("hot=", hot);
    serial_puts("\n");
    demo_done = 1;
    return 0;
}
