/*
 * Scheduler: every scenario of vllm-semantics §5.4 (1-10, and 11 — the chunked-prefill file — as
 * its own tests), each commented with its number and adapted to the C API (LoRA parts skipped,
 * delay_factor with explicit times, pools sized for the v2 block manager); then token
 * accounting, forking, abort, preemption fallbacks, the priority policy, misuse and allocation
 * failures; and a soak test: hundreds of random requests against a small KV pool under every
 * policy × preemption mode × lookahead, driven by a fake engine whose model is deterministic and
 * whose simulated KV cache checks, at every step, that what the scheduler calls computed was
 * computed.
 *
 * The suite compiles the scheduler's sources itself, so it can call the passes of a step one by
 * one (as vLLM's tests call _schedule_prefills and friends) and replace block-manager answers
 * through the test hooks (as vLLM's tests mock them). The block manager comes from libduet.
 */
#include "../scheduler/scheduler-int.h"

#include "check_util.h"
#include "fault.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static duet_block_manager *bm;
static duet_scheduler *s;
static char err[512];

/* Fault injection. The suite links the scheduler's own objects with malloc, calloc and realloc
 * renamed to the duet_test_ functions of tests/fault.c (tests/fault.mk), so its allocations come
 * here; duet_test_fail_countdown = N makes the Nth from now fail (-1: none). */

/* ---- fixtures ---------------------------------------------------------------------------- */

struct cfg {
    uint32_t bs, gpu, cpu;
    bool caching;
    uint32_t max_num_seqs, max_batched, max_model_len, lookahead;
    bool chunked;
    duet_sched_policy policy;
    duet_sched_preemption preemption;
    double delay;
    int32_t eos; /* -1: none */
};

/* vLLM's initialize_scheduler(): block size 4, budgets of 1000, pools given per test. */
static struct cfg cfg_default(void)
{
    return (struct cfg){.bs = 4,
                        .gpu = 64,
                        .cpu = 64,
                        .max_num_seqs = 1000,
                        .max_batched = 1000,
                        .max_model_len = 1000,
                        .eos = -1};
}

/* Test hooks: answers that replace the block manager's for chosen requests. */
static uint64_t no_append[8]; /* requests whose can_append_slots is false */
static int n_no_append;
static int alloc_answer = -1;   /* can_allocate for every request, -1: ask */
static int swap_in_answer = -1; /* can_swap_in for every request, -1: ask */

static int hook_can_append(void *ctx, uint64_t id)
{
    (void)ctx;
    for (int i = 0; i < n_no_append; i++)
        if (no_append[i] == id)
            return 0;
    return -1;
}

static int hook_can_allocate(void *ctx, uint64_t id)
{
    (void)ctx, (void)id;
    return alloc_answer;
}

static int hook_can_swap_in(void *ctx, uint64_t id)
{
    (void)ctx, (void)id;
    return swap_in_answer;
}

static void teardown(void)
{
    duet_scheduler_destroy(s);
    duet_block_manager_destroy(bm);
    s = NULL;
    bm = NULL;
    n_no_append = 0;
    alloc_answer = swap_in_answer = -1;
    duet_test_fail_countdown = -1;
}

static void make(const struct cfg *c)
{
    duet_block_manager_params bp;
    duet_scheduler_params sp;

    teardown();
    duet_block_manager_params_init(&bp);
    bp.block_size = c->bs;
    bp.num_device_blocks = c->gpu;
    bp.num_host_blocks = c->cpu;
    bp.prefix_caching = c->caching;
    ck_assert_msg(duet_block_manager_create(&bp, &bm, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    duet_scheduler_params_init(&sp);
    sp.max_num_seqs = c->max_num_seqs;
    sp.max_num_batched_tokens = c->max_batched;
    sp.max_model_len = c->max_model_len;
    sp.num_lookahead_slots = c->lookahead;
    sp.chunked_prefill = c->chunked;
    sp.policy = c->policy;
    sp.preemption = c->preemption;
    sp.delay_factor = c->delay;
    if (c->eos >= 0) {
        sp.eos_token_ids[0] = c->eos;
        sp.num_eos_token_ids = 1;
    }
    ck_assert_msg(duet_scheduler_create(&sp, bm, &s, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    s->hooks = (struct duet__sched_hooks){
        .can_append = hook_can_append,
        .can_allocate = hook_can_allocate,
        .can_swap_in = hook_can_swap_in,
    };
}

/* Prompt tokens start, start+1, ... (vLLM's dummy prompts are 0..n-1). */
static const int32_t *tokens_from(int32_t start, uint32_t n)
{
    static int32_t buf[4096];

    ck_assert_uint_le(n, 4096);
    for (uint32_t i = 0; i < n; i++)
        buf[i] = start + (int32_t)i;
    return buf;
}

static void add_full(uint64_t id, uint32_t len, uint32_t n, uint32_t max_tokens, int32_t prio)
{
    duet_sched_request r;

    duet_sched_request_init(&r);
    r.request_id = id;
    r.prompt = tokens_from(0, len);
    r.prompt_len = len;
    r.n = n;
    r.max_tokens = max_tokens;
    r.priority = prio;
    r.arrival_time = id;
    ck_assert_msg(duet_scheduler_add(s, &r) == DUET_STATUS_OK, "%s", duet_scheduler_error(s));
}

static void add(uint64_t id, uint32_t len, uint32_t n)
{
    add_full(id, len, n, 1000, 0);
}

static void add_tokens(uint64_t id, const int32_t *prompt, uint32_t len)
{
    duet_sched_request r;

    duet_sched_request_init(&r);
    r.request_id = id, r.prompt = prompt, r.prompt_len = len, r.max_tokens = 1000;
    ck_assert_msg(duet_scheduler_add(s, &r) == DUET_STATUS_OK, "%s", duet_scheduler_error(s));
}

static const duet_sched_output *step(uint64_t now)
{
    const duet_sched_output *out = NULL;

    ck_assert_msg(duet_scheduler_step(s, now, &out) == DUET_STATUS_OK, "%s",
                  duet_scheduler_error(s));
    return out;
}

/* vLLM's append_new_token: every sequence that sampled gets `token` (n of them for a fork). */
static void update_all(const duet_sched_output *out, int32_t token)
{
    int32_t toks[16];

    for (int i = 0; i < 16; i++)
        toks[i] = token;
    for (uint32_t i = 0; i < out->num_seqs; i++)
        if (out->seqs[i].num_samples)
            ck_assert_msg(duet_scheduler_update(s, out->seqs[i].seq_id, toks,
                                                out->seqs[i].num_samples) == DUET_STATUS_OK,
                          "%s", duet_scheduler_error(s));
}

/* The requests of out, in order, equal ids[0..n). */
static void expect_groups(const duet_sched_output *out, const uint64_t *ids, uint32_t n)
{
    ck_assert_uint_eq(out->num_groups, n);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_uint_eq(out->groups[i].request_id, ids[i]);
}

static bool no_cache_ops(const duet_sched_output *out)
{
    return out->num_copy == 0 && out->num_swap_in == 0 && out->num_swap_out == 0;
}

static uint32_t free_dev(void)
{
    return duet_block_manager_num_free_blocks(bm, DUET_BLOCK_POOL_DEVICE);
}

static uint32_t free_host(void)
{
    return duet_block_manager_num_free_blocks(bm, DUET_BLOCK_POOL_HOST);
}

static struct duet__group *group(uint64_t id)
{
    struct duet__group *g = duet__sched_map_get(&s->requests, id);

    ck_assert_ptr_nonnull(g);
    return g;
}

/* A budget for calling one pass directly, as vLLM's tests do. */
static struct duet__budget budget(uint32_t tokens, uint32_t seqs)
{
    struct duet__budget b;

    duet__sched_begin_step(s, 0);
    duet__budget_init(&b, ++s->budget_epoch, tokens, seqs);
    return b;
}

/* Pre-used budget (vLLM's add_token_budget with a dummy request). */
static void budget_use(struct duet__budget *b, uint32_t tokens, uint32_t seqs)
{
    static struct duet__group dummy;

    dummy.tok_epoch = dummy.seq_epoch = 0;
    duet__budget_add_tokens(b, &dummy, tokens);
    duet__budget_add_seqs(b, &dummy, seqs);
}

/* Runs prompts of `len` tokens (ids first..first+count-1) to their first decode: prefill step,
 * then each sampled token 1. */
static void start_running(uint64_t first, uint32_t count, uint32_t len, uint32_t n)
{
    for (uint64_t id = first; id < first + count; id++)
        add(id, len, n);
    update_all(step(1), 1);
    ck_assert_uint_eq(duet_scheduler_num_running(s), count);
}

/* ---- §5.4 scenarios 1-6: whole steps -------------------------------------------------------- */

/* §5.4 1: 4 prompts of a block each, 8 blocks: one step prefills all, the next decodes all. */
START_TEST(test_four_prompts_prefill_together_then_decode_together)
{
    struct cfg c = cfg_default();
    const uint64_t ids[] = {0, 1, 2, 3};
    const duet_sched_output *out;

    c.gpu = c.cpu = 8, c.max_num_seqs = 4, c.max_batched = 64, c.max_model_len = 16;
    make(&c);
    for (uint64_t i = 0; i < 4; i++)
        add(i, 4, 1);
    out = step(1);
    expect_groups(out, ids, 4);
    ck_assert_uint_eq(out->num_batched_tokens, 16);
    ck_assert(out->is_prefill && no_cache_ops(out));
    ck_assert_uint_eq(out->num_lookahead_slots, 0);
    update_all(out, 1);
    out = step(2);
    expect_groups(out, ids, 4);
    ck_assert_uint_eq(out->num_batched_tokens, 4);
    ck_assert(!out->is_prefill && no_cache_ops(out));
    ck_assert_uint_eq(out->num_prefill_groups, 0);
    update_all(out, 1);
}
END_TEST

/* §5.4 2: with a decode pending, a new 30-token prompt (budget 30) gets the whole step. */
START_TEST(test_new_prompt_is_scheduled_before_pending_decodes)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    /* vLLM's 2 device blocks cannot hold a 30-token prompt in the v2 manager: 16 here. */
    c.gpu = c.cpu = 16, c.max_num_seqs = 2, c.max_batched = 30, c.max_model_len = 30;
    make(&c);
    add(1, 1, 1);
    out = step(1);
    expect_groups(out, (const uint64_t[]){1}, 1);
    update_all(out, 1);
    add(2, 30, 1);
    out = step(2);
    expect_groups(out, (const uint64_t[]){2}, 1);
    ck_assert(out->is_prefill);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
}
END_TEST

/* §5.4 3: two 1-block prompts in 2 blocks; each needs a new block for its first decode: A runs,
 * B is preempted by recompute; once A is aborted, B prefills its prompt and generated token. */
START_TEST(test_preempted_prompt_is_recomputed_with_its_generated_token)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.gpu = c.cpu = 2, c.max_num_seqs = 2, c.max_batched = 64, c.max_model_len = 16;
    make(&c);
    add(1, 4, 1);
    add(2, 4, 1);
    out = step(1);
    expect_groups(out, (const uint64_t[]){1, 2}, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 8);
    ck_assert(no_cache_ops(out));
    update_all(out, 1);
    out = step(2);
    expect_groups(out, (const uint64_t[]){1}, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 1);
    ck_assert(no_cache_ops(out));
    ck_assert_uint_eq(out->num_preempted, 1);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s) + duet_scheduler_num_running(s), 2);
    ck_assert_int_eq(duet_scheduler_abort(s, 1), DUET_STATUS_OK); /* its update is dropped */
    out = step(3);
    expect_groups(out, (const uint64_t[]){2}, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 5); /* 4 prompt + 1 generated */
    ck_assert_uint_eq(out->seqs[0].num_computed, 0);
    ck_assert(out->is_prefill && no_cache_ops(out));
    ck_assert_uint_eq(duet_scheduler_num_running(s), 1);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 0);
}
END_TEST

/* §5.4 4: max_num_seqs 2 with one running: only one of two new prompts is admitted. */
START_TEST(test_max_num_seqs_counts_running_sequences)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.gpu = c.cpu = 8, c.max_num_seqs = 2, c.max_batched = 64, c.max_model_len = 16;
    make(&c);
    add(0, 4, 1);
    update_all(step(1), 1);
    out = step(2);
    expect_groups(out, (const uint64_t[]){0}, 1);
    update_all(out, 1);
    add(1, 4, 1);
    add(2, 4, 1);
    out = step(3);
    expect_groups(out, (const uint64_t[]){1}, 1);
}
END_TEST

/* §5.4 5: delay_factor 0.5: after a prompt step, new prompts wait until the oldest has waited
 * more than half the last prompt step's latency (times in ns instead of sleeps). */
START_TEST(test_delay_factor_holds_new_prompts_back)
{
    struct cfg c = cfg_default();
    const uint64_t sec = 1000000000ull;
    const duet_sched_output *out;
    duet_sched_request r;

    c.gpu = c.cpu = 8, c.max_batched = 100, c.max_num_seqs = 64, c.max_model_len = 16;
    c.delay = 0.5;
    make(&c);
    duet_sched_request_init(&r);
    r.prompt = tokens_from(0, 4), r.prompt_len = 4, r.arrival_time = 1 * sec;
    r.request_id = 0;
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    out = step(1 * sec);
    ck_assert(out->num_prefill_groups > 0 && out->groups[0].request_id == 0);
    update_all(out, 1);
    r.request_id = 1, r.arrival_time = 2 * sec; /* one second later */
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    out = step(2 * sec);
    ck_assert_uint_eq(out->num_prefill_groups, 0);
    ck_assert_uint_eq(out->groups[0].request_id, 0);
    update_all(out, 1);
    out = step(2 * sec + 6 * sec / 10); /* 0.6 s > 0.5 × 1 s */
    ck_assert(out->num_prefill_groups > 0 && out->groups[0].request_id == 1);
}
END_TEST

/* §5.4 6: three n=2 groups; one cannot append and is swapped out; a new prompt is not admitted
 * while a group is swapped; the next step swaps it back in. (vLLM's groups never fork in that
 * test, so its decodes count 1 token per group; ours fork, 2 per group.) */
START_TEST(test_swapped_group_goes_before_new_prompts)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.max_num_seqs = 6;
    make(&c);
    start_running(0, 3, 60, 2);
    no_append[n_no_append++] = 2;
    out = step(2);
    expect_groups(out, (const uint64_t[]){0, 1}, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 4);
    ck_assert_uint_gt(out->num_swap_out, 0);
    ck_assert_uint_eq(out->num_swap_in, 0);
    ck_assert_uint_eq(duet_scheduler_num_swapped(s), 1);
    update_all(out, 1);
    add(3, 60, 2);
    out = step(3);
    expect_groups(out, (const uint64_t[]){0, 1, 2}, 3);
    ck_assert_uint_eq(out->num_batched_tokens, 6);
    ck_assert_uint_gt(out->num_swap_in, 0);
    ck_assert_uint_eq(out->num_swap_out, 0);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 1);
}
END_TEST

/* ---- §5.4 7: the prompt pass -------------------------------------------------------------- */

/* §5.4 7: a prompt longer than max_model_len is ignored. */
START_TEST(test_prompt_longer_than_max_model_len_is_ignored)
{
    struct cfg c = cfg_default();
    struct duet__budget b;
    uint32_t n = 0;

    c.max_model_len = 30;
    make(&c);
    add(0, 60, 1);
    b = budget(10000, 10000);
    ck_assert_int_eq(duet__sched_prefills(s, &b, false, false, &n), DUET_STATUS_OK);
    ck_assert_uint_eq(s->out.num_ignored, 1);
    ck_assert_int_eq(s->out.ignored[0].reason, DUET_SCHED_IGNORE_PROMPT_TOO_LONG);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(b.num_batched_tokens + b.num_curr_seqs, 0);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 0);
}
END_TEST

/* §5.4 7: the token budget: 0 admits nothing, 60 one 60-token prompt; 30 of 60 used blocks it,
 * 30 of 90 used admits it. */
START_TEST(test_prompts_respect_the_token_budget)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    uint32_t n;

    make(&c);
    add(0, 60, 1);
    add(1, 60, 1);
    b = budget(0, 10000);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 2);
    b = budget(60, 10000);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 60);
    ck_assert_uint_eq(b.num_curr_seqs, 1);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 1);

    make(&c);
    add(2, 60, 1);
    b = budget(60, 10000);
    budget_use(&b, 30, 0);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(b.num_batched_tokens, 30);
    b = budget(90, 10000);
    budget_use(&b, 30, 0);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 90);
    ck_assert_uint_eq(b.num_curr_seqs, 1);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 0);
}
END_TEST

/* §5.4 7: max_num_seqs 2 admits 2 of 3 prompts; with 2 sequences counted, none. */
START_TEST(test_prompts_respect_max_num_seqs)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    uint32_t n;

    make(&c);
    for (uint64_t i = 0; i < 3; i++)
        add(i, 60, 1);
    b = budget(10000, 2);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(b.num_batched_tokens, 120);
    ck_assert_uint_eq(b.num_curr_seqs, 2);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 1);
    b = budget(10000, 2);
    budget_use(&b, 0, 2);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(b.num_curr_seqs, 2);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 1);
}
END_TEST

/* §5.4 7: can_allocate LATER admits nothing (head-of-line blocking); NEVER ignores them all. */
START_TEST(test_prompts_wait_on_later_and_are_ignored_on_never)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    uint32_t n;

    make(&c);
    for (uint64_t i = 0; i < 3; i++)
        add(i, 60, 1);
    alloc_answer = DUET_ALLOC_LATER;
    b = budget(10000, 10000);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n + s->out.num_ignored, 0);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 3);
    alloc_answer = DUET_ALLOC_NEVER;
    b = budget(10000, 10000);
    duet__sched_prefills(s, &b, false, false, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(s->out.num_ignored, 3);
    ck_assert_int_eq(s->out.ignored[2].reason, DUET_SCHED_IGNORE_CANNOT_FIT);
    ck_assert_uint_eq(b.num_batched_tokens + b.num_curr_seqs, 0);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].n, 0);
}
END_TEST

/* ---- §5.4 8: the running pass ------------------------------------------------------------- */

/* §5.4 8: group 1 of 3 cannot append: the back of the queue (2) is preempted first, then 1
 * itself; 0 decodes. Single-sequence groups are recomputed: no swap, no copy. */
START_TEST(test_running_preempts_from_the_back_then_the_group_itself)
{
    struct duet__budget b;
    struct cfg c = cfg_default();

    make(&c);
    start_running(0, 3, 60, 1);
    no_append[n_no_append++] = 1;
    b = budget(10000, 10000);
    ck_assert_int_eq(duet__sched_running(s, &b, false), DUET_STATUS_OK);
    ck_assert_uint_eq(s->q[DUET__Q_RUNNING].n, 0);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].n, 1);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].head->request_id, 0);
    ck_assert_uint_eq(s->q[DUET__Q_PREEMPTED].n, 2);
    ck_assert_uint_eq(s->q[DUET__Q_PREEMPTED].head->request_id, 2);
    ck_assert_uint_eq(s->q[DUET__Q_PREEMPTED].tail->request_id, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 1);
    ck_assert_uint_eq(s->swap_out.n + s->copy.n, 0);
}
END_TEST

/* §5.4 8: with n=2 groups the victim is swapped out, and its two sequences leave the budget. */
START_TEST(test_running_swaps_out_multi_sequence_victims)
{
    struct duet__budget b;
    struct cfg c = cfg_default();

    make(&c);
    start_running(0, 3, 60, 2);
    b = budget(10000, 10000);
    for (uint64_t i = 0; i < 3; i++) {
        duet__budget_add_seqs(&b, group(i), duet__group_max_seqs(group(i)));
        duet__budget_add_tokens(&b, group(i), 2);
    }
    no_append[n_no_append++] = 2;
    ck_assert_int_eq(duet__sched_running(s, &b, false), DUET_STATUS_OK);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].n, 2);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].head->request_id, 0);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].tail->request_id, 1);
    ck_assert_uint_eq(s->q[DUET__Q_PREEMPTED].n, 0);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED_OUT].n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 4);
    ck_assert_uint_eq(b.num_curr_seqs, 4); /* 6 - 2 */
    ck_assert_uint_eq(s->swap_out.n, 15);  /* the 15 shared prompt blocks, once each */
    ck_assert_uint_eq(s->copy.n, 0);       /* 60 tokens: no shared partial block */
}
END_TEST

/* §5.4 8: append_slots' copy-on-write pairs reach the output: the forked sequences share a
 * partial block; the first to append copies it, the second then owns it. */
START_TEST(test_running_reports_copy_on_write_pairs)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    const uint32_t *table;
    uint32_t nb, shared;

    make(&c);
    start_running(1, 1, 58, 2);
    duet_block_manager_block_table(bm, group(1)->seqs[1].id, &table, &nb);
    shared = table[14];
    b = budget(10000, 10000);
    ck_assert_int_eq(duet__sched_running(s, &b, false), DUET_STATUS_OK);
    ck_assert_uint_eq(s->q[DUET__Q_RUN_DECODE].n, 1);
    ck_assert_uint_eq(s->copy.n, 1);
    ck_assert_uint_eq(s->copy.pairs[0].src, shared);
    ck_assert_uint_eq(s->swap_out.n + s->q[DUET__Q_PREEMPTED].n, 0);
}
END_TEST

/* ---- §5.4 9: the swapped pass ------------------------------------------------------------- */

/* Runs `count` groups to their first decode, then swaps them all out in one step. */
static void start_swapped(uint64_t first, uint32_t count, uint32_t len, uint32_t n)
{
    start_running(first, count, len, n);
    for (uint64_t id = first; id < first + count; id++)
        no_append[n_no_append++] = id;
    ck_assert_uint_eq(step(2)->num_groups, 0);
    n_no_append = 0;
    ck_assert_uint_eq(duet_scheduler_num_swapped(s), count);
}

/* §5.4 9: a swap-in moves back exactly the host blocks the swap-out wrote, in the same order,
 * into the device blocks the swap-out freed. */
START_TEST(test_swap_in_reverses_the_swap_out)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    duet_block_pair out[16];
    uint32_t n_out;

    make(&c);
    start_swapped(1, 1, 60, 2);
    n_out = s->swap_out.n;
    ck_assert_uint_eq(n_out, 15);
    memcpy(out, s->swap_out.pairs, sizeof(out[0]) * n_out);
    b = budget(10000, 10000);
    ck_assert_int_eq(duet__sched_swapped(s, &b, false), DUET_STATUS_OK);
    ck_assert_uint_eq(s->q[DUET__Q_SWAP_DECODE].n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 2);
    ck_assert_uint_eq(b.num_curr_seqs, 2);
    ck_assert_uint_eq(s->swap_in.n, n_out);
    for (uint32_t i = 0; i < n_out; i++) {
        bool found = false;

        ck_assert_uint_eq(s->swap_in.pairs[i].src, out[i].dst);
        for (uint32_t j = 0; j < n_out; j++)
            found |= s->swap_in.pairs[i].dst == out[j].src;
        ck_assert(found);
    }
}
END_TEST

/* §5.4 9: a token budget of 1 swaps one single-sequence group in; with it used, none. */
START_TEST(test_swap_in_respects_the_token_budget)
{
    struct duet__budget b;
    struct cfg c = cfg_default();

    c.preemption = DUET_SCHED_PREEMPTION_SWAP;
    make(&c);
    start_swapped(0, 2, 60, 1);
    b = budget(1, 10000);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 1);
    ck_assert_uint_eq(s->q[DUET__Q_SWAP_DECODE].n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 1);
    ck_assert_uint_eq(b.num_curr_seqs, 1);
    b = budget(1, 10000);
    budget_use(&b, 1, 0);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 1);
    ck_assert_uint_eq(b.num_batched_tokens, 1);
    ck_assert_uint_eq(b.num_curr_seqs, 0);
}
END_TEST

/* §5.4 9: max_num_seqs 2 swaps 2 of 4 in; the same budget again swaps none. */
START_TEST(test_swap_in_respects_max_num_seqs)
{
    struct duet__budget b;
    struct cfg c = cfg_default();

    c.preemption = DUET_SCHED_PREEMPTION_SWAP;
    make(&c);
    start_swapped(0, 4, 60, 1);
    b = budget(10000, 2);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 2);
    ck_assert_uint_eq(s->q[DUET__Q_SWAP_DECODE].n, 2);
    ck_assert_uint_eq(b.num_batched_tokens, 2);
    ck_assert_uint_eq(b.num_curr_seqs, 2);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 2);
    ck_assert_uint_eq(b.num_batched_tokens, 2);
}
END_TEST

/* §5.4 9: can_swap_in LATER swaps nothing; NEVER ignores them all as infeasible and frees their
 * host blocks (vLLM leaves them allocated). */
START_TEST(test_swap_in_waits_on_later_and_drops_infeasible_groups)
{
    struct duet__budget b;
    struct cfg c = cfg_default();
    duet_sched_result r;

    make(&c);
    start_swapped(0, 2, 60, 2);
    swap_in_answer = DUET_ALLOC_LATER;
    b = budget(10000, 10000);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 2);
    ck_assert_uint_eq(b.num_batched_tokens + b.num_curr_seqs, 0);
    swap_in_answer = DUET_ALLOC_NEVER;
    b = budget(10000, 10000);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAPPED].n, 0);
    ck_assert_uint_eq(s->out.num_ignored, 2);
    ck_assert_int_eq(s->out.ignored[0].reason, DUET_SCHED_IGNORE_SWAP_INFEASIBLE);
    ck_assert_uint_eq(b.num_batched_tokens + b.num_curr_seqs, 0);
    ck_assert_uint_eq(free_host(), 64);
    ck_assert_uint_eq(free_dev(), 64);
    ck_assert(duet_scheduler_take_finished(s, &r));
    ck_assert_int_eq(r.finish, DUET_SCHED_FINISH_IGNORED);
    ck_assert_int_eq(r.ignore, DUET_SCHED_IGNORE_SWAP_INFEASIBLE);
}
END_TEST

/* §5.4 9: a group swapped back in appends its new tokens: copy-on-write pairs reach the output. */
START_TEST(test_swap_in_reports_copy_on_write_pairs)
{
    struct duet__budget b;
    struct cfg c = cfg_default();

    make(&c);
    start_swapped(1, 1, 58, 2);
    b = budget(10000, 10000);
    duet__sched_swapped(s, &b, false);
    ck_assert_uint_eq(s->q[DUET__Q_SWAP_DECODE].n, 1);
    ck_assert_uint_eq(s->copy.n, 1);
}
END_TEST

/* ---- §5.4 10: the budget ------------------------------------------------------------------ */

/* §5.4 10: can_schedule bounds; adding a group twice counts it once; subtracting a group that
 * is not counted does nothing. */
START_TEST(test_budget_counts_each_group_once)
{
    struct duet__group g1 = {0}, g2 = {0};
    struct duet__budget b;

    duet__budget_init(&b, 7, 4, 4);
    ck_assert(duet__budget_can_schedule(&b, 1, 1));
    ck_assert(duet__budget_can_schedule(&b, 4, 4));
    ck_assert(!duet__budget_can_schedule(&b, 1, 5));
    ck_assert(!duet__budget_can_schedule(&b, 5, 1));
    ck_assert(!duet__budget_can_schedule(&b, 5, 5));
    ck_assert_uint_eq(duet__budget_remaining(&b), 4);
    duet__budget_add_tokens(&b, &g1, 2);
    ck_assert_uint_eq(duet__budget_remaining(&b), 2);
    ck_assert(duet__budget_can_schedule(&b, 2, 1));
    ck_assert(!duet__budget_can_schedule(&b, 3, 1));
    duet__budget_add_tokens(&b, &g1, 2);
    ck_assert_uint_eq(b.num_batched_tokens, 2);
    duet__budget_sub_tokens(&b, &g1, 2);
    ck_assert_uint_eq(b.num_batched_tokens, 0);
    duet__budget_sub_tokens(&b, &g1, 2);
    ck_assert_uint_eq(duet__budget_remaining(&b), 4);
    duet__budget_add_seqs(&b, &g2, 2);
    ck_assert(duet__budget_can_schedule(&b, 1, 2));
    ck_assert(!duet__budget_can_schedule(&b, 1, 3));
    duet__budget_add_seqs(&b, &g2, 2);
    ck_assert_uint_eq(b.num_curr_seqs, 2);
    duet__budget_sub_seqs(&b, &g2, 2);
    ck_assert_uint_eq(b.num_curr_seqs, 0);
    duet__budget_sub_seqs(&b, &g2, 2);
    ck_assert_uint_eq(b.num_curr_seqs, 0);
}
END_TEST

/* ---- §5.4 11: chunked prefill ------------------------------------------------------------- */

static struct cfg cfg_chunked(uint32_t max_seqs, uint32_t max_model_len, uint32_t batched)
{
    struct cfg c = cfg_default();

    c.chunked = true;
    c.max_num_seqs = max_seqs, c.max_model_len = max_model_len, c.max_batched = batched;
    return c;
}

static void expect_chunks(const duet_sched_output *out, const uint32_t *chunks, uint32_t n)
{
    ck_assert_uint_eq(out->num_groups, n);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_uint_eq(out->groups[i].token_chunk_size, chunks[i]);
}

/* §5.4 11 (simple): short prompts fit one step, then decode together. */
START_TEST(test_chunked_schedules_short_prompts_then_decodes)
{
    struct cfg c = cfg_chunked(4, 16, 64);
    const duet_sched_output *out;

    c.gpu = c.cpu = 8;
    make(&c);
    for (uint64_t i = 0; i < 4; i++)
        add(i, 4, 1);
    out = step(1);
    ck_assert_uint_eq(out->num_groups, 4);
    ck_assert_uint_eq(out->num_batched_tokens, 16);
    ck_assert(no_cache_ops(out));
    update_all(out, 1);
    out = step(2);
    ck_assert_uint_eq(out->num_groups, 4);
    ck_assert_uint_eq(out->num_batched_tokens, 4);
    ck_assert(no_cache_ops(out));
}
END_TEST

/* §5.4 11 (chunk): two 60-token prompts in a 64-token budget: 60 + a 4-token chunk; then the
 * rest of the second (56) goes first, with the first's decode. */
START_TEST(test_chunked_cuts_prompts_to_the_budget)
{
    struct cfg c = cfg_chunked(60, 80, 64);
    const duet_sched_output *out;

    make(&c);
    add(0, 60, 1);
    add(1, 60, 1);
    out = step(1);
    expect_chunks(out, (const uint32_t[]){60, 4}, 2);
    ck_assert_uint_eq(out->num_prefill_groups, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 64);
    ck_assert_uint_eq(out->seqs[0].num_samples, 1);
    ck_assert_uint_eq(out->seqs[1].num_samples, 0); /* not its last chunk: no sampling */
    update_all(out, 1);
    out = step(2);
    expect_chunks(out, (const uint32_t[]){56, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 1);
    ck_assert_uint_eq(out->seqs[0].num_computed, 4);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 57);
    ck_assert(!out->is_prefill);
}
END_TEST

/* §5.4 11 (complex): decode, a running chunk and a new chunk share a step, new prefill first. */
START_TEST(test_chunked_mixes_decodes_running_chunks_and_new_chunks)
{
    struct cfg c = cfg_chunked(60, 80, 64);
    const duet_sched_output *out;

    make(&c);
    add(0, 60, 1);
    add(1, 60, 1);
    out = step(1);
    expect_chunks(out, (const uint32_t[]){60, 4}, 2);
    update_all(out, 1);
    add(2, 60, 1);
    add(3, 60, 1);
    out = step(2);
    expect_chunks(out, (const uint32_t[]){7, 56, 1}, 3);
    ck_assert_uint_eq(out->groups[0].request_id, 2);
    ck_assert_uint_eq(out->groups[1].request_id, 1);
    ck_assert_uint_eq(out->groups[2].request_id, 0);
    ck_assert_uint_eq(out->num_prefill_groups, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 64);
    update_all(out, 1);
    ck_assert_uint_eq(group(1)->n_prefill, 0);
    ck_assert_uint_eq(group(2)->n_prefill, 1);
}
END_TEST

/* §5.4 11 (maximal decoding): decodes and running chunks are scheduled before new prompts.
 * (vLLM's max_model_len 2 would end every sequence at its first token here: 64.) */
START_TEST(test_chunked_puts_decodes_first)
{
    struct cfg c = cfg_chunked(2, 64, 2);
    const duet_sched_output *out;

    c.gpu = c.cpu = 8;
    make(&c);
    add(0, 2, 1);
    add(1, 2, 1);
    out = step(1);
    expect_chunks(out, (const uint32_t[]){2}, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 2);
    update_all(out, 1);
    add(2, 2, 1);
    out = step(2); /* 0's decode + 1's first chunk */
    expect_chunks(out, (const uint32_t[]){1, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 1);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    update_all(out, 1);
    out = step(3); /* 0's decode + 1's last chunk */
    expect_chunks(out, (const uint32_t[]){1, 1}, 2);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    update_all(out, 1);
    out = step(4); /* only decodes */
    expect_chunks(out, (const uint32_t[]){1, 1}, 2);
    ck_assert_uint_eq(out->num_prefill_groups, 0);
    update_all(out, 1);
    ck_assert_int_eq(duet_scheduler_abort(s, 0), DUET_STATUS_OK);
    out = step(5); /* 1's decode + 2's first chunk */
    expect_chunks(out, (const uint32_t[]){1, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 2);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 2);
}
END_TEST

/* §5.4 11 (prompt limit): a prompt longer than the budget but within max_model_len is chunked. */
START_TEST(test_chunked_schedules_prompts_longer_than_the_budget)
{
    struct cfg c = cfg_chunked(32, 64, 32);
    const duet_sched_output *out;

    make(&c);
    add(1, 48, 1);
    out = step(1);
    expect_chunks(out, (const uint32_t[]){32}, 1);
    ck_assert(out->groups[0].is_prefill);
    ck_assert_uint_eq(out->num_batched_tokens, 32);
}
END_TEST

/* §5.4 11 (prompt limit exceeded): beyond max_model_len it is ignored, chunked or not. */
START_TEST(test_chunked_ignores_prompts_longer_than_max_model_len)
{
    struct cfg c = cfg_chunked(64, 32, 64);
    const duet_sched_output *out;

    make(&c);
    add(2, 48, 1);
    out = step(1);
    ck_assert_uint_eq(out->num_groups, 0);
    ck_assert_uint_eq(out->num_ignored, 1);
    ck_assert_uint_eq(out->ignored[0].request_id, 2);
}
END_TEST

/* §5.4 11 (swap): a running n=2 prompt is swapped out part-way, and swapped back in before a
 * new prompt. */
START_TEST(test_chunked_swaps_a_running_prompt_out_and_back)
{
    struct cfg c = cfg_chunked(30, 200, 30);
    const duet_sched_output *out;

    make(&c);
    add(1, 60, 2);
    out = step(1);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
    no_append[n_no_append++] = 1;
    out = step(2);
    ck_assert_uint_eq(out->num_groups, 0);
    ck_assert_uint_eq(out->num_batched_tokens, 0);
    ck_assert_uint_gt(out->num_swap_out, 0);
    ck_assert_uint_eq(out->num_swap_in, 0);
    add(2, 60, 1);
    out = step(3);
    expect_chunks(out, (const uint32_t[]){30}, 1);
    ck_assert_uint_eq(out->groups[0].request_id, 1);
    ck_assert_uint_gt(out->num_swap_in, 0);
    ck_assert_uint_eq(out->num_swap_out, 0);
    ck_assert_uint_eq(out->seqs[0].num_samples, 2); /* its last chunk: it forks */
}
END_TEST

/* §5.4 11 (running prefill over swap): a new prompt runs while swap-in is LATER, and keeps
 * the budget (running chunks first) once swap-in is possible. (vLLM 0.6.3 then swaps the group
 * in with the 29 tokens left beside the decode; vLLM's older test expected it to wait.) */
START_TEST(test_chunked_running_prompt_goes_before_a_swapped_one)
{
    struct cfg c = cfg_chunked(30, 200, 30);
    const duet_sched_output *out;

    make(&c);
    add(1, 60, 2);
    step(1);
    no_append[n_no_append++] = 1;
    ck_assert_uint_gt(step(2)->num_swap_out, 0);
    n_no_append = 0;
    swap_in_answer = DUET_ALLOC_LATER;
    add(2, 60, 1);
    out = step(3);
    expect_groups(out, (const uint64_t[]){2}, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
    ck_assert(no_cache_ops(out));
    swap_in_answer = DUET_ALLOC_OK;
    out = step(4);
    expect_groups(out, (const uint64_t[]){2}, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
    ck_assert(no_cache_ops(out));
    update_all(out, 1);
    out = step(5);
    expect_chunks(out, (const uint32_t[]){29, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 1);
    ck_assert_uint_gt(out->num_swap_in, 0);
    update_all(out, 1);
    ck_assert_int_eq(duet_scheduler_abort(s, 2), DUET_STATUS_OK);
    out = step(6);
    expect_chunks(out, (const uint32_t[]){1}, 1);
    ck_assert_uint_eq(out->groups[0].request_id, 1);
}
END_TEST

/* §5.4 11 (preempt): a single-sequence prompt preempted part-way is recomputed from scratch. */
START_TEST(test_chunked_recomputes_a_preempted_prompt)
{
    struct cfg c = cfg_chunked(30, 200, 30);
    const duet_sched_output *out;
    duet_sched_request_info info;

    make(&c);
    add(1, 60, 1);
    ck_assert_uint_eq(step(1)->num_batched_tokens, 30);
    no_append[n_no_append++] = 1;
    out = step(2);
    ck_assert_uint_eq(out->num_groups, 0);
    ck_assert(no_cache_ops(out));
    ck_assert_uint_eq(out->num_preempted, 1);
    out = step(3); /* admitted again from waiting: the running pass's hook does not apply */
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
    ck_assert_uint_eq(out->seqs[0].num_computed, 0);
    duet_scheduler_request_info(s, 1, &info);
    ck_assert_uint_eq(info.num_tokens - info.num_computed_tokens, 30);
    n_no_append = 0;
    out = step(4);
    ck_assert_uint_eq(out->num_prefill_groups, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 30);
    ck_assert_uint_eq(out->seqs[0].num_samples, 1);
}
END_TEST

/* §5.4 11 (max seqs): only max_num_seqs groups run even when the token budget has room. */
START_TEST(test_chunked_respects_max_num_seqs)
{
    struct cfg c = cfg_chunked(2, 80, 64);
    const duet_sched_output *out;

    make(&c);
    add(1, 65, 1);
    out = step(1);
    expect_chunks(out, (const uint32_t[]){64}, 1);
    for (uint64_t i = 10; i < 14; i++)
        add(i, 65, 1);
    out = step(2);
    ck_assert_uint_eq(out->num_batched_tokens, 64);
    ck_assert_uint_eq(out->num_groups, 2);
    update_all(out, 1);
    out = step(3);
    expect_chunks(out, (const uint32_t[]){2, 1}, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 3);
}
END_TEST

/* §5.4 11 (prefix caching): chunks cut by the budget end on block boundaries, and a prompt whose
 * leading blocks are cached and computed starts after them. */
START_TEST(test_chunked_prefix_caching_chunks_whole_blocks_and_skips_cached_ones)
{
    struct cfg c = cfg_chunked(8, 64, 16);
    const duet_sched_output *out;
    int32_t prompt[30];

    c.caching = true;
    make(&c);
    add(1, 22, 1); /* tokens 0..21: 5 full blocks and a partial one */
    expect_chunks(step(1), (const uint32_t[]){16}, 1);
    out = step(2);
    expect_chunks(out, (const uint32_t[]){6}, 1); /* done: its full blocks count as computed */
    update_all(out, 7);
    add_tokens(2, tokens_from(1000, 30), 30);
    out = step(3); /* 1's decode leaves 15 tokens: 12, three whole blocks */
    expect_chunks(out, (const uint32_t[]){12, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 2);
    ck_assert_uint_eq(out->seqs[0].num_samples, 0);
    update_all(out, 7);
    memcpy(prompt, tokens_from(0, 20), sizeof(int32_t) * 20); /* 1's first 5 blocks */
    for (int i = 20; i < 30; i++)
        prompt[i] = 500 + i;
    add_tokens(3, prompt, 30);
    ck_assert_int_eq(duet_scheduler_abort(s, 2), DUET_STATUS_OK);
    out = step(4);
    expect_chunks(out, (const uint32_t[]){10, 1}, 2);
    ck_assert_uint_eq(out->groups[0].request_id, 3);
    ck_assert_uint_eq(out->seqs[0].num_computed, 20);
    ck_assert_uint_eq(out->num_batched_tokens, 11);
    ck_assert_uint_eq(out->seqs[0].num_samples, 1);
}
END_TEST

/* ---- token accounting (§2.14) ------------------------------------------------------------ */

/* Takes the one finished request and checks its first sequence's output and finish reason. */
static void expect_result(uint64_t id, duet_sched_finish finish, const int32_t *output, uint32_t n)
{
    duet_sched_result r;

    ck_assert(duet_scheduler_take_finished(s, &r));
    ck_assert_uint_eq(r.request_id, id);
    ck_assert_int_eq(r.finish, finish);
    ck_assert_uint_eq(r.seqs[0].num_output, n);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_int_eq(r.seqs[0].output[i], output[i]);
    ck_assert(!duet_scheduler_take_finished(s, &r));
}

static uint64_t seq_of(const duet_sched_output *out, uint32_t i)
{
    ck_assert_uint_lt(i, out->num_seqs);
    return out->seqs[i].seq_id;
}

static void update(uint64_t seq, const int32_t *tokens, uint32_t n)
{
    ck_assert_msg(duet_scheduler_update(s, seq, tokens, n) == DUET_STATUS_OK, "%s",
                  duet_scheduler_error(s));
}

START_TEST(test_eos_stops_a_sequence_and_is_kept)
{
    struct cfg c = cfg_default();
    uint64_t seq;

    c.eos = 2;
    make(&c);
    add(1, 4, 1);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){5}, 1);
    step(2);
    update(seq, (const int32_t[]){2}, 1);
    ck_assert(!duet_scheduler_has_unfinished(s));
    ck_assert_uint_eq(free_dev(), 64); /* freed at once */
    expect_result(1, DUET_SCHED_FINISH_STOP, (const int32_t[]){5, 2}, 2);
}
END_TEST

START_TEST(test_ignore_eos_keeps_generating)
{
    struct cfg c = cfg_default();
    duet_sched_request r;
    uint64_t seq;

    c.eos = 2;
    make(&c);
    duet_sched_request_init(&r);
    r.request_id = 1, r.prompt = tokens_from(0, 4), r.prompt_len = 4;
    r.ignore_eos = true, r.max_tokens = 3;
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){2}, 1);
    step(2);
    update(seq, (const int32_t[]){2}, 1);
    step(3);
    update(seq, (const int32_t[]){2}, 1);
    expect_result(1, DUET_SCHED_FINISH_LENGTH, (const int32_t[]){2, 2, 2}, 3);
}
END_TEST

/* Several accepted tokens go in one at a time: the stop token is kept, the ones after dropped. */
START_TEST(test_tokens_after_a_stop_token_are_dropped)
{
    struct cfg c = cfg_default();
    duet_sched_request r;
    uint64_t seq;

    c.lookahead = 3;
    make(&c);
    duet_sched_request_init(&r);
    r.request_id = 1, r.prompt = tokens_from(0, 4), r.prompt_len = 4;
    r.stop_token_ids = (const int32_t[]){9}, r.num_stop_token_ids = 1;
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){5}, 1);
    step(2);
    update(seq, (const int32_t[]){7, 9, 8, 6}, 4);
    expect_result(1, DUET_SCHED_FINISH_STOP, (const int32_t[]){5, 7, 9}, 3);
}
END_TEST

START_TEST(test_max_tokens_truncates_accepted_tokens)
{
    struct cfg c = cfg_default();
    uint64_t seq;

    c.lookahead = 4;
    make(&c);
    add_full(1, 4, 1, 3, 0);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){5}, 1);
    step(2);
    update(seq, (const int32_t[]){6, 7, 8, 9, 10}, 5);
    expect_result(1, DUET_SCHED_FINISH_LENGTH, (const int32_t[]){5, 6, 7}, 3);
}
END_TEST

/* vLLM caps a sequence once it holds more than max_model_len tokens. */
START_TEST(test_max_model_len_caps_a_sequence)
{
    struct cfg c = cfg_default();
    uint64_t seq;

    c.max_model_len = 8, c.max_batched = 64, c.max_num_seqs = 4;
    make(&c);
    add(1, 6, 1);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){5}, 1); /* 7 tokens */
    step(2);
    update(seq, (const int32_t[]){6}, 1); /* 8 */
    ck_assert(duet_scheduler_has_unfinished(s));
    step(3);
    update(seq, (const int32_t[]){7}, 1); /* 9 > 8 */
    expect_result(1, DUET_SCHED_FINISH_LENGTH, (const int32_t[]){5, 6, 7}, 3);
}
END_TEST

/* A decode reserves k empty slots after the sequence's tokens, accepts 1..k+1 tokens, and keeps
 * num_computed = len - 1. */
START_TEST(test_lookahead_slots_are_reserved_and_accepted_tokens_counted)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;
    duet_sched_request_info info;
    uint64_t seq;

    c.lookahead = 4;
    make(&c);
    add(1, 4, 1);
    out = step(1);
    ck_assert_uint_eq(out->num_lookahead_slots, 0);
    ck_assert_uint_eq(out->seqs[0].num_blocks, 1);
    seq = out->seqs[0].seq_id;
    update(seq, (const int32_t[]){5}, 1);
    out = step(2);
    ck_assert_uint_eq(out->num_lookahead_slots, 4);
    ck_assert_uint_eq(out->groups[0].num_lookahead_slots, 4);
    ck_assert_uint_eq(out->seqs[0].num_computed, 4);
    ck_assert_uint_eq(out->seqs[0].num_blocks, 3); /* 5 tokens + 4 slots */
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){1, 2, 3, 4, 5, 6}, 6),
                     DUET_STATUS_INVALID_ARGUMENT);
    update(seq, (const int32_t[]){6, 7, 8, 9, 10}, 5);
    duet_scheduler_request_info(s, 1, &info);
    ck_assert_uint_eq(info.num_tokens, 10);
    ck_assert_uint_eq(info.num_computed_tokens, 9);
    out = step(3);
    ck_assert_uint_eq(out->seqs[0].num_computed, 9);
    ck_assert_uint_eq(out->seqs[0].num_blocks, 4); /* 10 tokens + 4 slots */
}
END_TEST

START_TEST(test_spec_disabled_request_gets_no_lookahead)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;
    duet_sched_request r;
    uint64_t seq;

    c.lookahead = 4;
    make(&c);
    duet_sched_request_init(&r);
    r.request_id = 1, r.prompt = tokens_from(0, 4), r.prompt_len = 4, r.spec_disabled = true;
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    seq = seq_of(step(1), 0);
    update(seq, (const int32_t[]){5}, 1);
    out = step(2);
    ck_assert(out->groups[0].spec_disabled);
    ck_assert_uint_eq(out->groups[0].num_lookahead_slots, 0);
    ck_assert_uint_eq(out->seqs[0].num_blocks, 2);
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){1, 2}, 2),
                     DUET_STATUS_INVALID_ARGUMENT);
    update(seq, (const int32_t[]){6}, 1);
    ck_assert_int_eq(duet_scheduler_set_spec_disabled(s, 1, false), DUET_STATUS_OK);
    out = step(3);
    ck_assert(!out->groups[0].spec_disabled);
    ck_assert_uint_eq(out->groups[0].num_lookahead_slots, 4);
    update(seq, (const int32_t[]){7, 8}, 2);
}
END_TEST

/* An n = 3 request prefills once, samples 3 tokens, forks; the children share the prompt's
 * blocks, and the first decode copies the shared partial block for all but the last. */
START_TEST(test_n_sequences_fork_after_the_prompt)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;
    duet_sched_result r;

    make(&c);
    add_full(1, 6, 3, 2, 0);
    out = step(1);
    ck_assert_uint_eq(out->num_seqs, 1);
    ck_assert_uint_eq(out->seqs[0].num_samples, 3);
    ck_assert_int_eq(duet_scheduler_update(s, out->seqs[0].seq_id, (const int32_t[]){1}, 1),
                     DUET_STATUS_INVALID_ARGUMENT);
    update(out->seqs[0].seq_id, (const int32_t[]){10, 20, 30}, 3);
    ck_assert_uint_eq(free_dev(), 62);
    out = step(2);
    ck_assert_uint_eq(out->num_groups, 1);
    ck_assert_uint_eq(out->num_seqs, 3);
    ck_assert_uint_eq(out->num_batched_tokens, 3);
    ck_assert_uint_eq(out->num_copy, 2);
    ck_assert_uint_ne(out->seqs[0].block_table[1], out->seqs[2].block_table[1]);
    ck_assert_uint_eq(out->seqs[0].block_table[0], out->seqs[2].block_table[0]);
    for (uint32_t i = 0; i < 3; i++)
        update(out->seqs[i].seq_id, (const int32_t[]){(int32_t)(11 + 10 * i)}, 1);
    ck_assert(duet_scheduler_take_finished(s, &r));
    ck_assert_uint_eq(r.num_seqs, 3);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(r.seqs[i].num_output, 2);
        ck_assert_int_eq(r.seqs[i].output[0], (int32_t)(10 + 10 * i));
        ck_assert_int_eq(r.seqs[i].output[1], (int32_t)(11 + 10 * i));
        ck_assert_int_eq(r.seqs[i].finish, DUET_SCHED_FINISH_LENGTH);
    }
    ck_assert_uint_eq(free_dev(), 64);
}
END_TEST

/* ---- abort, preemption paths ------------------------------------------------------------- */

START_TEST(test_abort_frees_every_block_in_any_state)
{
    struct cfg c = cfg_default();
    duet_sched_result r;
    int taken = 0;

    c.gpu = 32;
    make(&c);
    add(2, 8, 1);
    add(1, 60, 2);
    update_all(step(1), 1);
    no_append[n_no_append++] = 1;
    step(2);      /* 1 is swapped out, 2 decodes and waits for its update */
    add(3, 8, 1); /* waiting */
    ck_assert_uint_eq(duet_scheduler_num_swapped(s), 1);
    ck_assert_uint_eq(duet_scheduler_num_running(s), 1);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 1);
    for (uint64_t id = 1; id <= 3; id++)
        ck_assert_int_eq(duet_scheduler_abort(s, id), DUET_STATUS_OK);
    ck_assert_int_eq(duet_scheduler_abort(s, 3), DUET_STATUS_OK); /* finished: no change */
    ck_assert_int_eq(duet_scheduler_abort(s, 99), DUET_STATUS_NOT_FOUND);
    ck_assert(!duet_scheduler_has_unfinished(s));
    ck_assert_uint_eq(free_dev(), 32);
    ck_assert_uint_eq(free_host(), 64);
    while (duet_scheduler_take_finished(s, &r)) {
        ck_assert_int_eq(r.finish, DUET_SCHED_FINISH_ABORT);
        taken++;
    }
    ck_assert_int_eq(taken, 3);
    ck_assert_uint_eq(step(4)->num_groups, 0); /* no update is due any more */
}
END_TEST

/* Swap-space exhaustion falls back to recompute (vLLM raises RuntimeError). */
START_TEST(test_swap_falls_back_to_recompute_without_host_blocks)
{
    struct cfg c = cfg_default();
    duet_scheduler_stats st;
    const duet_sched_output *out;

    c.cpu = 4;
    make(&c);
    start_running(1, 2, 60, 2);
    no_append[n_no_append++] = 1;
    out = step(2);
    ck_assert_uint_eq(out->num_groups, 0);
    ck_assert_uint_eq(out->num_preempted, 2);
    ck_assert_uint_eq(out->num_swap_out, 0);
    duet_scheduler_stats_get(s, &st);
    ck_assert_uint_eq(st.swap_fallbacks, 2);
    ck_assert_uint_eq(st.preempted_recompute, 2);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 2);
    ck_assert_uint_eq(free_dev(), 64);
}
END_TEST

/* A forked group preempted by recompute keeps every sequence's tokens and re-prefills each,
 * sharing the prompt's full blocks again. */
START_TEST(test_forked_group_is_recomputed_sequence_by_sequence)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.preemption = DUET_SCHED_PREEMPTION_RECOMPUTE;
    make(&c);
    add(1, 10, 2);
    out = step(1);
    update(out->seqs[0].seq_id, (const int32_t[]){100, 200}, 2);
    out = step(2);
    update(out->seqs[0].seq_id, (const int32_t[]){101}, 1);
    update(out->seqs[1].seq_id, (const int32_t[]){201}, 1);
    no_append[n_no_append++] = 1;
    out = step(3);
    ck_assert_uint_eq(out->num_preempted, 1);
    ck_assert_uint_eq(free_dev(), 64);
    n_no_append = 0;
    out = step(4);
    ck_assert(out->is_prefill);
    ck_assert_uint_eq(out->num_seqs, 2);
    ck_assert_uint_eq(out->num_batched_tokens, 24);
    for (uint32_t i = 0; i < 2; i++) {
        ck_assert_uint_eq(out->seqs[i].num_tokens, 12);
        ck_assert_uint_eq(out->seqs[i].num_computed, 0);
        ck_assert_uint_eq(out->seqs[i].num_samples, 1);
        ck_assert_int_eq(out->seqs[i].tokens[11], (int32_t)(101 + 100 * i));
    }
    ck_assert_uint_eq(out->seqs[0].block_table[1], out->seqs[1].block_table[1]); /* shared */
    ck_assert_uint_ne(out->seqs[0].block_table[2], out->seqs[1].block_table[2]);
    ck_assert_uint_eq(free_dev(), 64 - 2 - 2);
}
END_TEST

/* Without chunked prefill, a recomputed forked group whose sequences do not fit one step's
 * budget together is admitted sequence by sequence and stays at the waiting head meanwhile. */
START_TEST(test_forked_group_too_big_for_one_step_is_readmitted_over_several)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.preemption = DUET_SCHED_PREEMPTION_RECOMPUTE;
    c.max_model_len = c.max_batched = 16, c.max_num_seqs = 4;
    make(&c);
    add(1, 10, 2);
    out = step(1);
    update(out->seqs[0].seq_id, (const int32_t[]){100, 200}, 2);
    out = step(2);
    update(out->seqs[0].seq_id, (const int32_t[]){101}, 1);
    update(out->seqs[1].seq_id, (const int32_t[]){201}, 1);
    no_append[n_no_append++] = 1;
    step(3);
    n_no_append = 0;
    add(2, 5, 1);
    out = step(4); /* 12 + 12 > 16: the first sequence only */
    ck_assert_uint_eq(out->num_seqs, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 12);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 2);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].head->request_id, 1);
    update(out->seqs[0].seq_id, (const int32_t[]){102}, 1);
    out = step(5); /* the second; request 2 does not fit beside it */
    ck_assert_uint_eq(out->num_seqs, 1);
    ck_assert_uint_eq(out->num_batched_tokens, 12);
    ck_assert_int_eq(out->seqs[0].tokens[11], 201);
    update(out->seqs[0].seq_id, (const int32_t[]){202}, 1);
    ck_assert_uint_eq(duet_scheduler_num_running(s), 1);
    out = step(6); /* request 2's prompt */
    expect_groups(out, (const uint64_t[]){2}, 1);
    update_all(out, 1);
    out = step(7); /* both decode */
    ck_assert_uint_eq(out->num_seqs, 3);
    ck_assert_uint_eq(out->seqs[0].num_computed, 12);
}
END_TEST

/* ---- the priority policy (§2.10) --------------------------------------------------------- */

/* A more important prompt that cannot get blocks preempts running groups from the least
 * important up, by recompute, until it fits; it runs next. */
START_TEST(test_priority_preempts_less_important_running_groups)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;
    duet_scheduler_stats st;

    c.policy = DUET_SCHED_POLICY_PRIORITY;
    c.gpu = 8, c.max_num_seqs = 8, c.max_batched = 64, c.max_model_len = 32;
    make(&c);
    add_full(1, 16, 1, 100, 5); /* 4 blocks */
    add_full(2, 12, 1, 100, 5); /* 3 blocks */
    update_all(step(1), 1);
    add_full(3, 12, 1, 100, 0); /* 3 blocks, 1 free: LATER */
    out = step(2);
    expect_groups(out, (const uint64_t[]){1}, 1);
    ck_assert_uint_eq(out->num_preempted, 1);
    duet_scheduler_stats_get(s, &st);
    ck_assert_uint_eq(st.priority_preemptions, 1);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].head->request_id, 3);
    ck_assert_uint_eq(s->q[DUET__Q_WAITING].tail->request_id, 2);
    update_all(out, 1);
    out = step(3);
    expect_groups(out, (const uint64_t[]){3}, 1);
}
END_TEST

/* Waiting requests are ordered by (priority, arrival) once a step schedules no prompt. */
START_TEST(test_priority_orders_waiting_requests)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;

    c.policy = DUET_SCHED_POLICY_PRIORITY;
    make(&c);
    add_full(1, 8, 1, 100, 0);
    update_all(step(1), 1);
    add_full(2, 4, 1, 100, 3);
    add_full(3, 4, 1, 100, 1);
    add_full(4, 4, 1, 100, 2);
    add_full(5, 4, 1, 100, 1);
    alloc_answer = DUET_ALLOC_LATER;
    out = step(2);
    expect_groups(out, (const uint64_t[]){1}, 1);
    ck_assert_uint_eq(out->num_preempted, 0); /* 1 is the most important */
    update_all(out, 1);
    alloc_answer = -1;
    out = step(3);
    expect_groups(out, (const uint64_t[]){3, 5, 4, 2}, 4);
}
END_TEST

/* ---- misuse ------------------------------------------------------------------------------ */

static duet_status try_create(const duet_scheduler_params *p)
{
    duet_scheduler *t = NULL;
    duet_status st;

    err[0] = '\0';
    st = duet_scheduler_create(p, bm, &t, err, sizeof(err));
    ck_assert(st == DUET_STATUS_OK || (t == NULL && err[0] != '\0'));
    duet_scheduler_destroy(t);
    return st;
}

START_TEST(test_create_rejects_bad_parameters)
{
    struct cfg c = cfg_default();
    duet_scheduler_params p, q;
    duet_scheduler *t = NULL;
    uint64_t seq = 77;

    c.caching = true;
    make(&c);
    duet_scheduler_destroy(s), s = NULL;
    duet_scheduler_params_init(&p);
    p.max_model_len = 16;
    ck_assert_int_eq(duet_scheduler_create(NULL, bm, &t, NULL, 0), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_scheduler_create(&p, NULL, &t, err, 8), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_scheduler_create(&p, bm, NULL, err, 0), DUET_STATUS_INVALID_ARGUMENT);
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        q = p;                                                                                     \
        q.field = value;                                                                           \
        ck_assert_int_eq(try_create(&q), DUET_STATUS_INVALID_ARGUMENT);                            \
    } while (0)
    BAD(max_model_len, 0);
    BAD(max_num_seqs, 0);
    BAD(max_num_batched_tokens, 8); /* below max_model_len, no chunked prefill */
    BAD(num_eos_token_ids, 9);
    BAD(delay_factor, -1.0);
    BAD(policy, (duet_sched_policy)7);
    BAD(preemption, (duet_sched_preemption)9);
    q = p, q.chunked_prefill = true, q.max_num_batched_tokens = 4, q.max_num_seqs = 8;
    ck_assert_int_eq(try_create(&q), DUET_STATUS_INVALID_ARGUMENT);  /* below max_num_seqs */
    q = p, q.chunked_prefill = true, q.max_num_batched_tokens = 258; /* not whole blocks */
    ck_assert_int_eq(try_create(&q), DUET_STATUS_INVALID_ARGUMENT);
#undef BAD
    ck_assert_int_eq(duet_scheduler_create(&p, bm, &t, err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_uint_eq(t->p.max_num_batched_tokens, 2048);
    duet_scheduler_destroy(t);
    q = p, q.chunked_prefill = true;
    ck_assert_int_eq(duet_scheduler_create(&q, bm, &t, err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_uint_eq(t->p.max_num_batched_tokens, 512);
    duet_scheduler_destroy(t);
    ck_assert_int_eq(duet_block_manager_allocate(bm, &seq, 1, tokens_from(0, 4), 4),
                     DUET_STATUS_OK);
    ck_assert_int_eq(try_create(&p), DUET_STATUS_INVALID_ARGUMENT); /* bm not empty */
}
END_TEST

static void expect_add_fails(duet_sched_request *r, duet_status want)
{
    uint32_t waiting = duet_scheduler_num_waiting(s);

    ck_assert_int_eq(duet_scheduler_add(s, r), want);
    ck_assert_str_ne(duet_scheduler_error(s), "");
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), waiting);
    duet_sched_request_init(r);
    r->request_id = 1, r->prompt = tokens_from(0, 4), r->prompt_len = 4;
}

START_TEST(test_add_rejects_bad_requests)
{
    struct cfg c = cfg_default();
    const int32_t bad[] = {1, -3, 2};
    duet_sched_request r;

    make(&c);
    ck_assert_int_eq(duet_scheduler_add(s, NULL), DUET_STATUS_INVALID_ARGUMENT);
    duet_sched_request_init(&r);
    r.request_id = 1, r.prompt = tokens_from(0, 4), r.prompt_len = 4;
    ck_assert_int_eq(duet_scheduler_add(s, &r), DUET_STATUS_OK);
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT); /* duplicate id */
    r.request_id = 2;
    r.prompt_len = 0;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.prompt = NULL;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.prompt = bad, r.prompt_len = 3;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.n = 0;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.n = DUET__SCHED_MAX_N + 1;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.max_tokens = 0;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.num_stop_token_ids = 2;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    r.request_id = 2, r.stop_token_ids = bad, r.num_stop_token_ids = 3;
    expect_add_fails(&r, DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_uint_eq(duet_scheduler_num_waiting(s), 1);
}
END_TEST

START_TEST(test_step_refuses_while_updates_are_pending)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out = NULL;
    uint64_t seq;

    make(&c);
    ck_assert_int_eq(duet_scheduler_step(s, 1, NULL), DUET_STATUS_INVALID_ARGUMENT);
    add(1, 4, 1);
    seq = seq_of(step(1), 0);
    ck_assert_int_eq(duet_scheduler_step(s, 2, &out), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_ne(duet_scheduler_error(s), "");
    update(seq, (const int32_t[]){1}, 1);
    ck_assert_int_eq(duet_scheduler_step(s, 2, &out), DUET_STATUS_OK);
}
END_TEST

START_TEST(test_update_rejects_misuse)
{
    struct cfg c = cfg_chunked(8, 200, 30);
    const duet_sched_output *out;
    uint64_t seq;

    make(&c);
    add(1, 60, 1);
    seq = seq_of(step(1), 0);
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){1}, 1),
                     DUET_STATUS_INVALID_ARGUMENT); /* a chunk that did not sample */
    ck_assert_int_eq(duet_scheduler_update(s, 12345, (const int32_t[]){1}, 1),
                     DUET_STATUS_NOT_FOUND);
    out = step(2);
    ck_assert_uint_eq(out->seqs[0].num_samples, 1);
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){1, 2}, 2),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_scheduler_update(s, seq, NULL, 1), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){-1}, 1),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_scheduler_update(NULL, seq, (const int32_t[]){1}, 1),
                     DUET_STATUS_INVALID_ARGUMENT);
    update(seq, (const int32_t[]){1}, 1);
    ck_assert_int_eq(duet_scheduler_update(s, seq, (const int32_t[]){1}, 1),
                     DUET_STATUS_INVALID_ARGUMENT); /* twice */
}
END_TEST

/* Prompts above max_model_len, groups of more sequences than max_num_seqs and prompts larger
 * than the whole cache are accepted by add and ignored by the step, with their reason. */
START_TEST(test_impossible_requests_are_ignored_by_the_step)
{
    struct cfg c = cfg_default();
    const duet_sched_output *out;
    const duet_sched_ignore want[] = {DUET_SCHED_IGNORE_PROMPT_TOO_LONG,
                                      DUET_SCHED_IGNORE_CANNOT_FIT, DUET_SCHED_IGNORE_CANNOT_FIT};
    duet_sched_result r;

    c.gpu = 8, c.max_model_len = 64, c.max_num_seqs = 4, c.max_batched = 64;
    make(&c);
    add(1, 70, 1);
    add(2, 4, 5);
    add(3, 40, 1);
    add(4, 4, 1);
    out = step(1);
    expect_groups(out, (const uint64_t[]){4}, 1);
    ck_assert_uint_eq(out->num_ignored, 3);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(out->ignored[i].request_id, i + 1);
        ck_assert_int_eq(out->ignored[i].reason, want[i]);
        ck_assert(duet_scheduler_take_finished(s, &r));
        ck_assert_uint_eq(r.request_id, i + 1);
        ck_assert_int_eq(r.finish, DUET_SCHED_FINISH_IGNORED);
        ck_assert_int_eq(r.ignore, want[i]);
        ck_assert_uint_eq(r.seqs[0].num_output, 0);
        ck_assert_str_eq(duet_sched_ignore_str(r.ignore), i ? "cannot fit" : "prompt too long");
    }
    ck_assert_str_eq(duet_sched_finish_str(DUET_SCHED_FINISH_IGNORED), "ignored");
    ck_assert_str_eq(duet_sched_finish_str((duet_sched_finish)42), "unknown");
}
END_TEST

/* Every allocation of create, add, step and update made to fail in turn: the call reports it
 * (or, inside a step, falls back) and leaves the scheduler as it was; nothing leaks. */
START_TEST(test_allocation_failures_leave_the_scheduler_unchanged)
{
    for (long n = 0;; n++) {
        struct cfg c = cfg_default();
        duet_scheduler_params p;
        duet_sched_result r;
        uint64_t t = 1;

        make(&c);
        p = s->p;
        duet_scheduler_destroy(s), s = NULL;
        duet_test_injected = false;
        duet_test_fail_countdown = n;
        if (duet_scheduler_create(&p, bm, &s, err, sizeof(err)) != DUET_STATUS_OK) {
            ck_assert(duet_test_injected && s == NULL);
            continue;
        }
        for (uint64_t id = 1; id <= 3; id++)
            while (duet_scheduler_add(s, &(duet_sched_request){.request_id = id,
                                                               .prompt = tokens_from(0, 9),
                                                               .prompt_len = 9,
                                                               .max_tokens = 3,
                                                               .n = 1 + (uint32_t)(id == 2)}))
                ck_assert_uint_eq(duet_scheduler_num_waiting(s), id - 1);
        while (duet_scheduler_has_unfinished(s))
            update_all(step(t++), 1);
        for (int i = 0; i < 3; i++)
            ck_assert(duet_scheduler_take_finished(s, &r) && r.finish == DUET_SCHED_FINISH_LENGTH);
        ck_assert_uint_eq(free_dev(), 64);
        if (!duet_test_injected)
            break;
    }
}
END_TEST

/* ---- soak: a fake engine over random requests -------------------------------------------- */

#define SOAK_REQS 240
#define SOAK_EOS 0
#define SOAK_STOP 1
#define SOAK_BS 4
#define SOAK_GPU 48
#define SOAK_MAX_LEN 48
#define SOAK_GARBAGE (-7) /* KV of a rejected draft */

struct soak_req {
    int32_t prompt[64];
    uint32_t prompt_len, n, max_tokens, arrive, abort_at;
    int32_t priority;
    bool ignore_eos, stop1, spec_disabled;
    uint64_t seq0;       /* id of its first sequence, once seen */
    uint64_t first_seen; /* order of its first scheduling; 0 = never */
    bool added, aborted, done;
};

struct soak {
    struct cfg c;
    struct soak_req req[SOAK_REQS];
    int32_t *kv_dev;  /* [gpu][bs] the token whose KV each slot holds */
    int32_t *kv_host; /* [cpu][bs] */
    uint64_t rng;
    uint64_t seen; /* scheduling order counter */
    uint64_t tick; /* step number */
    uint32_t done; /* requests taken */
};

/* Checks in the soak's inner loops: Check records every passed ck_assert (a write each), so
 * these only call it on failure. */
#define SOAK_ASSERT(c) SOAK_ASSERT_MSG(c, "%s", #c)
#define SOAK_ASSERT_MSG(c, ...)                                                                    \
    do {                                                                                           \
        if (!(c))                                                                                  \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)
#define SOAK_CMP(x, op, y)                                                                         \
    SOAK_ASSERT_MSG((x)op(y), "%s %s %s: %lld vs %lld", #x, #op, #y, (long long)(x), (long long)(y))
#define SOAK_CMP_eq(x, y) SOAK_CMP(x, ==, y)
#define SOAK_CMP_lt(x, y) SOAK_CMP(x, <, y)
#define SOAK_CMP_le(x, y) SOAK_CMP(x, <=, y)
#define SOAK_CMP_gt(x, y) SOAK_CMP(x, >, y)

static uint64_t soak_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t soak_rand(struct soak *k, uint32_t n)
{
    k->rng = soak_mix(k->rng);
    return (uint32_t)(k->rng % n);
}

/* The fake model: the token sequence `seq` of request `id` holds at position `pos`. */
static int32_t soak_token(uint64_t id, uint32_t seq, uint32_t pos)
{
    uint64_t h = soak_mix(id * 1000003u + seq * 7919u + pos);
    uint32_t r = (uint32_t)(h % 100);

    if (r < 2)
        return SOAK_EOS;
    if (r < 4)
        return SOAK_STOP;
    return 2 + (int32_t)((h >> 8) % 60);
}

/* Its expected output: tokens until a stop, max_tokens, or more than max_model_len. */
static uint32_t soak_expected(const struct soak_req *r, uint64_t id, uint32_t seq, int32_t *out,
                              duet_sched_finish *finish)
{
    uint32_t len = r->prompt_len, n = 0;

    for (;;) {
        int32_t t = soak_token(id, seq, len++);

        out[n++] = t;
        *finish = DUET_SCHED_FINISH_STOP;
        if ((!r->ignore_eos && t == SOAK_EOS) || (r->stop1 && t == SOAK_STOP))
            return n;
        *finish = DUET_SCHED_FINISH_LENGTH;
        if (len > SOAK_MAX_LEN || n == r->max_tokens)
            return n;
    }
}

static void soak_make_request(struct soak *k, uint32_t i)
{
    struct soak_req *r = &k->req[i];
    uint32_t kind = soak_rand(k, 100), base = soak_rand(k, 3);

    memset(r, 0, sizeof(*r));
    r->prompt_len = 1 + soak_rand(k, 30);
    if (kind < 3)
        r->prompt_len = SOAK_MAX_LEN + 1 + soak_rand(k, 10);              /* ignored: too long */
    r->n = kind >= 3 && kind < 5 ? 9 : kind < 20 ? 2 : kind < 25 ? 3 : 1; /* 9: cannot fit */
    r->max_tokens = 1 + soak_rand(k, 24);
    r->arrive = soak_rand(k, 120);
    r->abort_at = soak_rand(k, 100) < 5 ? r->arrive + soak_rand(k, 40) : UINT32_MAX;
    r->priority = k->c.policy == DUET_SCHED_POLICY_PRIORITY ? (int32_t)soak_rand(k, 3) : 0;
    r->ignore_eos = soak_rand(k, 10) == 0;
    r->stop1 = soak_rand(k, 2) == 0;
    r->spec_disabled = soak_rand(k, 10) == 0;
    /* Prompts share prefixes (three bases) so that prefix caching has hits. */
    for (uint32_t t = 0; t < r->prompt_len; t++)
        r->prompt[t] = t < 12 ? (int32_t)(100 + base * 20 + t) : 2 + (int32_t)soak_rand(k, 60);
}

static const int32_t soak_stop_ids[] = {SOAK_STOP};

static void soak_add_arrivals(struct soak *k)
{
    for (uint32_t i = 0; i < SOAK_REQS; i++) {
        struct soak_req *r = &k->req[i];
        duet_sched_request q;

        if (r->added || r->arrive > k->tick)
            continue;
        duet_sched_request_init(&q);
        q.request_id = i + 1, q.prompt = r->prompt, q.prompt_len = r->prompt_len;
        q.n = r->n, q.max_tokens = r->max_tokens, q.priority = r->priority;
        q.arrival_time = k->tick * 1000 + i, q.ignore_eos = r->ignore_eos;
        q.spec_disabled = r->spec_disabled;
        q.stop_token_ids = soak_stop_ids, q.num_stop_token_ids = r->stop1;
        ck_assert_int_eq(duet_scheduler_add(s, &q), DUET_STATUS_OK);
        r->added = true;
    }
}

/* Applies the cache operations as a worker would: swap in, swap out, copy. */
static void soak_cache_ops(struct soak *k, const duet_sched_output *out)
{
    size_t bs = SOAK_BS * sizeof(int32_t);

    for (uint32_t i = 0; i < out->num_swap_in; i++)
        memcpy(k->kv_dev + out->swap_in[i].dst * SOAK_BS,
               k->kv_host + out->swap_in[i].src * SOAK_BS, bs);
    for (uint32_t i = 0; i < out->num_swap_out; i++)
        memcpy(k->kv_host + out->swap_out[i].dst * SOAK_BS,
               k->kv_dev + out->swap_out[i].src * SOAK_BS, bs);
    for (uint32_t i = 0; i < out->num_copy; i++)
        memcpy(k->kv_dev + out->copy[i].dst * SOAK_BS, k->kv_dev + out->copy[i].src * SOAK_BS, bs);
}

static int32_t *soak_slot(struct soak *k, const duet_sched_seq *q, uint32_t pos)
{
    SOAK_CMP_lt(pos / SOAK_BS, q->num_blocks);
    return &k->kv_dev[q->block_table[pos / SOAK_BS] * SOAK_BS + pos % SOAK_BS];
}

/* A scheduled sequence holds exactly its expected tokens, its table covers what the step
 * writes, and the KV of every token it calls computed is there. */
static void soak_check_seq(struct soak *k, const duet_sched_group *g, const duet_sched_seq *q)
{
    struct soak_req *r = &k->req[g->request_id - 1];
    uint32_t idx = (uint32_t)(q->seq_id - r->seq0);
    uint64_t need = (uint64_t)q->num_computed + q->num_new_tokens;

    SOAK_CMP_lt(idx, r->n);
    SOAK_CMP_le(q->num_tokens, SOAK_MAX_LEN);
    for (uint32_t t = 0; t < q->num_tokens; t++)
        SOAK_CMP_eq(q->tokens[t],
                    t < r->prompt_len ? r->prompt[t] : soak_token(g->request_id, idx, t));
    SOAK_CMP_le(need, q->num_tokens);
    SOAK_CMP_gt(q->num_new_tokens, 0);
    if (!q->is_prefill)
        need = (uint64_t)q->num_tokens + g->num_lookahead_slots;
    SOAK_CMP_le(need, (uint64_t)q->num_blocks * SOAK_BS);
    for (uint32_t t = 0; t < q->num_computed; t++)
        SOAK_ASSERT_MSG(*soak_slot(k, q, t) == q->tokens[t],
                        "request %" PRIu64 " seq %u: KV of token %u is %d, not %d", g->request_id,
                        idx, t, *soak_slot(k, q, t), q->tokens[t]);
}

/* The forward pass: writes the KV of the fed tokens, and for a decode the drafts, the first
 * accepted - 1 of which are right. Returns the number of tokens accepted. */
static uint32_t soak_forward(struct soak *k, const duet_sched_group *g, const duet_sched_seq *q)
{
    struct soak_req *r = &k->req[g->request_id - 1];
    uint32_t idx = (uint32_t)(q->seq_id - r->seq0), la = g->num_lookahead_slots;
    uint32_t accepted = q->is_prefill ? 1 : 1 + soak_rand(k, la + 1);

    for (uint32_t t = q->num_computed; t < q->num_computed + q->num_new_tokens; t++)
        *soak_slot(k, q, t) = q->tokens[t];
    for (uint32_t j = 0; !q->is_prefill && j < la; j++)
        *soak_slot(k, q, q->num_tokens + j) =
            j + 1 < accepted ? soak_token(g->request_id, idx, q->num_tokens + j) : SOAK_GARBAGE;
    return accepted;
}

/* Budgets and the shape of a step's output. */
static void soak_check_output(const struct soak *k, const duet_sched_output *out)
{
    uint32_t tokens = 0, decodes = 0;

    SOAK_CMP_le(out->num_batched_tokens, s->p.max_num_batched_tokens);
    SOAK_CMP_le(out->num_seqs, k->c.max_num_seqs);
    SOAK_ASSERT(out->num_swap_in == 0 || out->num_swap_out == 0);
    for (uint32_t i = 0; i < out->num_seqs; i++)
        tokens += out->seqs[i].num_new_tokens;
    SOAK_CMP_eq(tokens, out->num_batched_tokens);
    for (uint32_t i = 0; i < out->num_groups; i++) {
        SOAK_CMP_gt(out->groups[i].num_seqs, 0);
        SOAK_ASSERT(out->groups[i].seqs >= out->seqs &&
                    out->groups[i].seqs < out->seqs + out->num_seqs);
        decodes += !out->groups[i].is_prefill;
        SOAK_ASSERT(i < out->num_prefill_groups ? out->groups[i].is_prefill || k->c.chunked
                                                : !out->groups[i].is_prefill);
    }
    if (!k->c.chunked) /* prefill-only or decode-only steps */
        SOAK_ASSERT(out->num_prefill_groups == 0 || decodes == 0);
    SOAK_CMP_eq(out->num_lookahead_slots, decodes ? k->c.lookahead : 0);
}

/* Feeds what a step sampled back: one prompt token (n when it forks), or 1..k+1 decodes. */
static void soak_update(struct soak *k, const duet_sched_group *g, const duet_sched_seq *q,
                        uint32_t accepted)
{
    struct soak_req *r = &k->req[g->request_id - 1];
    uint32_t idx = (uint32_t)(q->seq_id - r->seq0), n = q->is_prefill ? q->num_samples : accepted;
    int32_t toks[16];

    if (!q->num_samples || r->aborted)
        return;
    for (uint32_t j = 0; j < n; j++)
        toks[j] = q->is_prefill ? soak_token(g->request_id, n > 1 ? j : idx, q->num_tokens)
                                : soak_token(g->request_id, idx, q->num_tokens + j);
    update(q->seq_id, toks, n);
}

static void soak_abort_some(struct soak *k)
{
    for (uint32_t i = 0; i < SOAK_REQS; i++) {
        struct soak_req *r = &k->req[i];

        if (r->added && !r->done && !r->aborted && r->abort_at <= k->tick) {
            SOAK_CMP_eq(duet_scheduler_abort(s, i + 1), DUET_STATUS_OK);
            r->aborted = true;
        }
    }
}

static void soak_step(struct soak *k)
{
    const duet_sched_output *out;
    uint32_t accepted[64];

    soak_add_arrivals(k);
    out = step(k->tick * 1000 + 999);
    soak_check_output(k, out);
    soak_cache_ops(k, out);
    SOAK_CMP_le(out->num_seqs, 64);
    for (uint32_t i = 0; i < out->num_groups; i++) {
        const duet_sched_group *g = &out->groups[i];
        struct soak_req *r = &k->req[g->request_id - 1];

        if (!r->first_seen) {
            r->first_seen = ++k->seen;
            r->seq0 = g->seqs[0].seq_id;
        }
        for (uint32_t j = 0; j < g->num_seqs; j++)
            soak_check_seq(k, g, &g->seqs[j]);
    }

    for (uint32_t i = 0; i < out->num_groups; i++)
        for (uint32_t j = 0; j < out->groups[i].num_seqs; j++)
            accepted[out->groups[i].seqs + j - out->seqs] =
                soak_forward(k, &out->groups[i], &out->groups[i].seqs[j]);
    soak_abort_some(k); /* between the step and its updates: the updates are dropped */
    for (uint32_t i = 0; i < out->num_groups; i++)
        for (uint32_t j = 0; j < out->groups[i].num_seqs; j++)
            soak_update(k, &out->groups[i], &out->groups[i].seqs[j],
                        accepted[out->groups[i].seqs + j - out->seqs]);
}

/* A finished request holds exactly its expected tokens (aborted and ignored ones excepted). */
static void soak_take(struct soak *k)
{
    duet_sched_result res;

    while (duet_scheduler_take_finished(s, &res)) {
        struct soak_req *r = &k->req[res.request_id - 1];
        bool impossible = r->prompt_len > SOAK_MAX_LEN || r->n > k->c.max_num_seqs;
        int32_t want[64];
        duet_sched_finish finish;

        SOAK_ASSERT(!r->done);
        r->done = true;
        k->done++;
        if (res.finish == DUET_SCHED_FINISH_ABORT) {
            SOAK_ASSERT(r->aborted);
            continue;
        }
        SOAK_ASSERT_MSG(impossible == (res.finish == DUET_SCHED_FINISH_IGNORED),
                        "request %" PRIu64 ": finish %s (%s)", res.request_id,
                        duet_sched_finish_str(res.finish), duet_sched_ignore_str(res.ignore));
        if (impossible)
            continue;
        SOAK_CMP_eq(res.num_seqs, r->n);
        for (uint32_t q = 0; q < res.num_seqs; q++) {
            uint32_t n = soak_expected(r, res.request_id, q, want, &finish);

            SOAK_CMP_eq(res.seqs[q].finish, finish);
            SOAK_CMP_eq(res.seqs[q].num_output, n);
            SOAK_ASSERT(memcmp(res.seqs[q].output, want, n * sizeof(int32_t)) == 0);
        }
    }
}

/* First scheduling follows arrival within a priority (ignored and never-run ones excepted). */
static void soak_check_fcfs(const struct soak *k)
{
    for (uint32_t a = 0; a < SOAK_REQS; a++)
        for (uint32_t b = 0; b < SOAK_REQS; b++) {
            const struct soak_req *x = &k->req[a], *y = &k->req[b];
            bool earlier = x->arrive < y->arrive || (x->arrive == y->arrive && a < b);

            if (earlier && x->priority == y->priority && x->first_seen && y->first_seen)
                SOAK_ASSERT_MSG(x->first_seen < y->first_seen,
                                "request %u arrived before %u but was scheduled after it", a + 1,
                                b + 1);
        }
}

static struct soak *soak_new(const struct cfg *c, uint64_t seed)
{
    struct soak *k = calloc(1, sizeof(*k));

    ck_assert_ptr_nonnull(k);
    k->c = *c;
    k->rng = seed;
    k->kv_dev = malloc(sizeof(int32_t) * c->gpu * SOAK_BS);
    k->kv_host = malloc(sizeof(int32_t) * (c->cpu + 1) * SOAK_BS);
    ck_assert(k->kv_dev && k->kv_host);
    memset(k->kv_dev, 0xff, sizeof(int32_t) * c->gpu * SOAK_BS);
    make(c);
    return k;
}

/* Runs the engine until every request is done, then checks the end state; frees k. */
static void soak_finish(struct soak *k, duet_scheduler_stats *total)
{
    duet_scheduler_stats st;

    for (; k->done < SOAK_REQS; k->tick++) {
        ck_assert_msg(k->tick < 20000, "no progress: %u of %u requests done", k->done, SOAK_REQS);
        soak_step(k);
        soak_take(k);
    }
    soak_check_fcfs(k);
    ck_assert(!duet_scheduler_has_unfinished(s));
    ck_assert_uint_eq(free_dev(), k->c.gpu);
    ck_assert_uint_eq(free_host(), k->c.cpu);
    duet_scheduler_stats_get(s, &st);
    ck_assert_msg(st.preempted_recompute + st.preempted_swap > 0,
                  "no preemption (lookahead %u, preemption %d, caching %d, %u host blocks)",
                  k->c.lookahead, (int)k->c.preemption, (int)k->c.caching, k->c.cpu);
    total->preempted_recompute += st.preempted_recompute;
    total->preempted_swap += st.preempted_swap;
    total->swap_fallbacks += st.swap_fallbacks;
    total->priority_preemptions += st.priority_preemptions;
    free(k->kv_dev);
    free(k->kv_host);
    free(k);
}

static void soak_run(const struct cfg *c, uint64_t seed, duet_scheduler_stats *total)
{
    struct soak *k = soak_new(c, seed);

    for (uint32_t i = 0; i < SOAK_REQS; i++)
        soak_make_request(k, i);
    soak_finish(k, total);
}

/* One policy under every preemption mode (swap with a tiny host pool forcing the fallback) ×
 * lookahead 0 and 4, and with prefix caching (automatic and swap preemption). */
static void soak_policy(bool chunked, duet_sched_policy policy)
{
    const duet_sched_preemption modes[] = {DUET_SCHED_PREEMPTION_AUTO,
                                           DUET_SCHED_PREEMPTION_RECOMPUTE,
                                           DUET_SCHED_PREEMPTION_SWAP, DUET_SCHED_PREEMPTION_SWAP};
    duet_scheduler_stats total = {0};
    uint64_t seed = 1 + (uint64_t)chunked * 100 + (uint64_t)policy * 1000;

    for (int m = 0; m < 6; m++)
        for (uint32_t la = 0; la <= 4; la += 4) {
            struct cfg c = cfg_default();

            /* A smaller pool with prefix caching, which shares blocks: every run preempts. */
            c.gpu = m >= 4 ? SOAK_GPU - 8 : SOAK_GPU, c.cpu = m == 3 ? 6 : 128;
            c.max_num_seqs = 8;
            c.max_model_len = SOAK_MAX_LEN, c.max_batched = chunked ? 16 : SOAK_MAX_LEN;
            c.chunked = chunked, c.policy = policy, c.lookahead = la, c.eos = SOAK_EOS;
            c.preemption = modes[m < 4 ? m : m == 4 ? 0 : 2];
            c.caching = m >= 4;
            soak_run(&c, seed++, &total);
        }
    ck_assert_uint_gt(total.preempted_swap, 0);
    ck_assert_uint_gt(total.swap_fallbacks, 0);
    if (policy == DUET_SCHED_POLICY_PRIORITY)
        ck_assert_uint_gt(total.priority_preemptions, 0);
}

START_TEST(test_random_requests_finish_with_their_tokens_under_the_default_policy)
{
    soak_policy(false, DUET_SCHED_POLICY_FCFS);
}
END_TEST

START_TEST(test_random_requests_finish_with_their_tokens_under_chunked_prefill)
{
    soak_policy(true, DUET_SCHED_POLICY_FCFS);
}
END_TEST

START_TEST(test_random_requests_finish_with_their_tokens_under_the_priority_policy)
{
    soak_policy(false, DUET_SCHED_POLICY_PRIORITY);
}
END_TEST

/* With prefix caching, a prompt preempted part-way holds full blocks whose KV is not computed
 * yet. Swapped out, its swap-in would land on the cached blocks that another request with the
 * same prefix computed meanwhile, and overwrite them: so it is recomputed instead. The fake
 * engine's KV cache catches the overwrite if it happens. */
START_TEST(test_prompt_preempted_part_way_is_recomputed_with_prefix_caching)
{
    struct cfg c = cfg_chunked(4, SOAK_MAX_LEN, 8);
    duet_scheduler_stats total = {0};
    struct soak *k;

    c.gpu = c.cpu = 48, c.caching = true, c.preemption = DUET_SCHED_PREEMPTION_SWAP;
    c.eos = SOAK_EOS;
    k = soak_new(&c, 1);
    for (uint32_t i = 0; i < SOAK_REQS; i++)
        k->req[i] = (struct soak_req){.arrive = UINT32_MAX, .abort_at = UINT32_MAX, .done = i > 1};
    for (uint32_t i = 0; i < 2; i++) {
        k->req[i].prompt_len = 18, k->req[i].n = 1, k->req[i].max_tokens = 4;
        k->req[i].arrive = 2 * i, k->req[i].ignore_eos = true;
        for (uint32_t t = 0; t < 18; t++)
            k->req[i].prompt[t] = t < 16 ? 100 + (int32_t)t : 200 + (int32_t)(i * 10 + t);
    }
    k->done = SOAK_REQS - 2;
    soak_step(k); /* 0: the first chunk of request 1 */
    no_append[n_no_append++] = 1;
    k->tick++, soak_step(k); /* 1: request 1 is preempted */
    ck_assert_uint_eq(duet_scheduler_num_swapped(s), 0);
    n_no_append = 0;
    swap_in_answer = DUET_ALLOC_LATER;
    for (k->tick++; k->tick < 6; k->tick++)
        soak_step(k), soak_take(k);
    swap_in_answer = -1;
    soak_finish(k, &total);
    ck_assert_uint_eq(total.preempted_recompute, 1);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

static Suite *scheduler_suite(void)
{
    Suite *su = suite_create("scheduler");
    const struct duet_test_case cases[] = {
#define CASE(t) {#t, t}
        CASE(test_four_prompts_prefill_together_then_decode_together),
        CASE(test_new_prompt_is_scheduled_before_pending_decodes),
        CASE(test_preempted_prompt_is_recomputed_with_its_generated_token),
        CASE(test_max_num_seqs_counts_running_sequences),
        CASE(test_delay_factor_holds_new_prompts_back),
        CASE(test_swapped_group_goes_before_new_prompts),
        CASE(test_prompt_longer_than_max_model_len_is_ignored),
        CASE(test_prompts_respect_the_token_budget),
        CASE(test_prompts_respect_max_num_seqs),
        CASE(test_prompts_wait_on_later_and_are_ignored_on_never),
        CASE(test_running_preempts_from_the_back_then_the_group_itself),
        CASE(test_running_swaps_out_multi_sequence_victims),
        CASE(test_running_reports_copy_on_write_pairs),
        CASE(test_swap_in_reverses_the_swap_out),
        CASE(test_swap_in_respects_the_token_budget),
        CASE(test_swap_in_respects_max_num_seqs),
        CASE(test_swap_in_waits_on_later_and_drops_infeasible_groups),
        CASE(test_swap_in_reports_copy_on_write_pairs),
        CASE(test_budget_counts_each_group_once),
        CASE(test_chunked_schedules_short_prompts_then_decodes),
        CASE(test_chunked_cuts_prompts_to_the_budget),
        CASE(test_chunked_mixes_decodes_running_chunks_and_new_chunks),
        CASE(test_chunked_puts_decodes_first),
        CASE(test_chunked_schedules_prompts_longer_than_the_budget),
        CASE(test_chunked_ignores_prompts_longer_than_max_model_len),
        CASE(test_chunked_swaps_a_running_prompt_out_and_back),
        CASE(test_chunked_running_prompt_goes_before_a_swapped_one),
        CASE(test_chunked_recomputes_a_preempted_prompt),
        CASE(test_chunked_respects_max_num_seqs),
        CASE(test_chunked_prefix_caching_chunks_whole_blocks_and_skips_cached_ones),
        CASE(test_eos_stops_a_sequence_and_is_kept),
        CASE(test_ignore_eos_keeps_generating),
        CASE(test_tokens_after_a_stop_token_are_dropped),
        CASE(test_max_tokens_truncates_accepted_tokens),
        CASE(test_max_model_len_caps_a_sequence),
        CASE(test_lookahead_slots_are_reserved_and_accepted_tokens_counted),
        CASE(test_spec_disabled_request_gets_no_lookahead),
        CASE(test_n_sequences_fork_after_the_prompt),
        CASE(test_abort_frees_every_block_in_any_state),
        CASE(test_swap_falls_back_to_recompute_without_host_blocks),
        CASE(test_forked_group_is_recomputed_sequence_by_sequence),
        CASE(test_forked_group_too_big_for_one_step_is_readmitted_over_several),
        CASE(test_priority_preempts_less_important_running_groups),
        CASE(test_priority_orders_waiting_requests),
        CASE(test_create_rejects_bad_parameters),
        CASE(test_add_rejects_bad_requests),
        CASE(test_step_refuses_while_updates_are_pending),
        CASE(test_update_rejects_misuse),
        CASE(test_impossible_requests_are_ignored_by_the_step),
        CASE(test_allocation_failures_leave_the_scheduler_unchanged),
        CASE(test_random_requests_finish_with_their_tokens_under_the_default_policy),
        CASE(test_random_requests_finish_with_their_tokens_under_chunked_prefill),
        CASE(test_random_requests_finish_with_their_tokens_under_the_priority_policy),
        CASE(test_prompt_preempted_part_way_is_recomputed_with_prefix_caching),
#undef CASE
    };

    duet_test_add_cases(su, cases, sizeof(cases) / sizeof(cases[0]), NULL, teardown, 300);
    return su;
}

int main(void)
{
    return duet_test_run(scheduler_suite());
}
