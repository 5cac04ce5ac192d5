/* The emulated platform's hot path in C: one call runs a slice of one Unicorn engine.
 *
 * Python around every single step used to cost ten times what Unicorn itself costs
 * (a dozen register reads and writes through ctypes, and a Python callback for the
 * #DB that ends the step). Here the slice's register traffic is batched and the
 * interrupt / invalid-instruction hooks are C functions that only record the event:
 * what it means is still decided in Python (platform.py), from this record.
 *
 * No Unicorn header is needed: the loader passes the library's entry points in, so
 * this file builds with any C compiler against whichever libunicorn the binding loaded.
 */
#include <stddef.h>
#include <stdint.h>

#define WX_RFLAGS_TF 0x100u
#define WX_DR7_ENABLES 0xFFu
#define WX_VECTOR_DB 1
#define WX_NOT_RUN (-1)
#define WX_STATE_MAX 16
#define WX_RESULT_MAX 8

enum { WX_NO_EVENT = 0, WX_INTERRUPT = 1, WX_INVALID = 2 };

typedef int (*wx_read_batch_fn)(void *uc, int *ids, void **values, int count);
typedef int (*wx_write_fn)(void *uc, int id, const void *value);
typedef int (*wx_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout,
                           size_t count);
typedef int (*wx_stop_fn)(void *uc);
typedef int (*wx_translate_fn)(void *uc, uint64_t address, int prot, uint64_t *paddress);
typedef int (*wx_hook_add_fn)(void *uc, size_t *handle, int type, void *callback,
                              void *user_data, uint64_t begin, uint64_t end, ...);

typedef struct wx_cpu {
    void *uc;
    wx_read_batch_fn read_batch;
    wx_write_fn write;
    wx_start_fn start;
    wx_stop_fn stop;
    wx_translate_fn translate;
    /* QEMU's private CPU fields (calibrated by unicorn_internals.py): */
    int32_t *halted;        /* CPUState.halted: cleared before a slice */
    int32_t *is_int;        /* env->exception_is_int: the event came from INT n / INT3 */
    int32_t *old_exception; /* env->old_exception: reset after an event (see there) */
    int rflags_id, dr6_id, cr2_id;
    /* What the hooks saw during the last slice. */
    int32_t event;
    int32_t vector;
    int32_t trapped;  /* wx_step: the host's TF trapped, and nothing else happened */
    /* Read before a slice (state) and after it (result), in the orders Python chose;
     * state[0..3] must be RIP, RFLAGS, DR6, DR7. */
    int32_t n_state, n_result;
    int32_t state_ids[WX_STATE_MAX];
    uint64_t state[WX_STATE_MAX];
    void *state_ptrs[WX_STATE_MAX];
    int32_t result_ids[WX_RESULT_MAX];
    uint64_t result[WX_RESULT_MAX];
    void *result_ptrs[WX_RESULT_MAX];
} wx_cpu;

void wx_init(wx_cpu *c)
{
    for (int i = 0; i < WX_STATE_MAX; i++)
        c->state_ptrs[i] = &c->state[i];
    for (int i = 0; i < WX_RESULT_MAX; i++)
        c->result_ptrs[i] = &c->result[i];
}

static void on_interrupt(void *uc, uint32_t intno, void *user)
{
    wx_cpu *c = user;
    c->event = WX_INTERRUPT;
    c->vector = (int32_t)intno;
    c->stop(uc);
}

static _Bool on_invalid(void *uc, void *user)
{
    wx_cpu *c = user;
    c->event = WX_INVALID;
    c->stop(uc);
    return 1; /* handled: Unicorn must not raise UC_ERR_INSN_INVALID */
}

/* Registers this cpu's two hooks; returns the first Unicorn error, 0 if none. */
int wx_attach(wx_cpu *c, wx_hook_add_fn hook_add, int interrupt_type, int invalid_type,
              size_t *handles)
{
    int err = hook_add(c->uc, &handles[0], interrupt_type, (void *)on_interrupt, c,
                       (uint64_t)1, (uint64_t)0);
    if (err)
        return err;
    return hook_add(c->uc, &handles[1], invalid_type, (void *)on_invalid, c, (uint64_t)1,
                    (uint64_t)0);
}

int wx_read_state(wx_cpu *c)
{
    return c->read_batch(c->uc, c->state_ids, c->state_ptrs, c->n_state);
}

/* Run up to `count` instructions from state[0] (RIP). With `host_tf`, RFLAGS.TF is set
 * for the slice (the step primitive) and taken out again afterwards unless the guest
 * had set it itself (state[1]). Then reads the result registers. Returns the
 * uc_emu_start error (0: none). */
int wx_run(wx_cpu *c, uint64_t count, int host_tf)
{
    uint64_t rflags = c->state[1];
    int err;
    c->event = WX_NO_EVENT;
    if (host_tf) {
        uint64_t with_tf = rflags | WX_RFLAGS_TF;
        c->write(c->uc, c->rflags_id, &with_tf);
    }
    if (c->halted)
        *c->halted = 0;
    err = c->start(c->uc, c->state[0], 0, 0, (size_t)count);
    if (host_tf && c->event == WX_INTERRUPT && c->vector == WX_VECTOR_DB &&
        !(c->state[3] & WX_DR7_ENABLES)) {
        /* The host's TF trapped (no DR breakpoint can be the cause): the step primitive
         * leaves no trace in DR6. */
        c->write(c->uc, c->dr6_id, &c->state[2]);
    }
    if (host_tf && !(rflags & WX_RFLAGS_TF)) {
        uint64_t now;
        void *ptr = &now;
        int id = c->rflags_id;
        c->read_batch(c->uc, &id, &ptr, 1);
        now &= ~(uint64_t)WX_RFLAGS_TF;
        c->write(c->uc, c->rflags_id, &now);
    }
    c->read_batch(c->uc, c->result_ids, c->result_ptrs, c->n_result);
    return err;
}

/* One host single step, when nothing but TF is involved: reads the state and, unless
 * the guest's DR7 enables a breakpoint (the general path in Python handles those),
 * runs one instruction under TF. Returns WX_NOT_RUN, or wx_run's result. */
int wx_step(wx_cpu *c)
{
    int err;
    c->event = WX_NO_EVENT;
    c->trapped = 0;
    err = wx_read_state(c);
    if (err)
        return err;
    if (c->state[3] & WX_DR7_ENABLES)
        return WX_NOT_RUN;
    err = wx_run(c, 1, 1);
    if (!err && c->event == WX_INTERRUPT && c->vector == WX_VECTOR_DB && !*c->is_int) {
        c->trapped = 1;
        *c->old_exception = -1; /* Unicorn never ran QEMU's delivery, which clears it */
    }
    return err;
}

/* Registers by id into `out`, in batches of WX_STATE_MAX. */
int wx_read(wx_cpu *c, int *ids, uint64_t *out, int count)
{
    void *ptrs[WX_STATE_MAX];
    for (int done = 0; done < count; done += WX_STATE_MAX) {
        int n = count - done < WX_STATE_MAX ? count - done : WX_STATE_MAX;
        for (int i = 0; i < n; i++)
            ptrs[i] = &out[done + i];
        int err = c->read_batch(c->uc, ids + done, ptrs, n);
        if (err)
            return err;
    }
    return 0;
}

/* Guest-linear to guest-physical through Unicorn's page walk. A miss writes the address
 * into CR2 as if the guest had faulted, so CR2 is put back. Returns 1 when mapped. */
int wx_translate(wx_cpu *c, uint64_t linear, int prot, uint64_t *physical)
{
    uint64_t cr2 = 0;
    void *ptr = &cr2;
    int id = c->cr2_id;
    int saved = c->read_batch(c->uc, &id, &ptr, 1) == 0;
    if (c->translate(c->uc, linear, prot, physical) == 0)
        return 1;
    if (saved)
        c->write(c->uc, c->cr2_id, &cr2);
    return 0;
}
