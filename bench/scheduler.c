/*
 * Scheduler benchmark (issue 4): the scheduler's own cost per step, without a model.
 *
 * - Decode steps at 64, 256, 1024 and 4096 running sequences: duet_scheduler_step() (the
 *   block-manager work of the step included: can_append_slots, append, block tables, access,
 *   mark_computed) and the engine's duet_scheduler_update() of 1 token per sequence, timed
 *   separately and reported together; also 256 sequences with 4 lookahead slots. Sequences
 *   start with 16-token prompts and restart (untimed) every 256 steps.
 * - A burst of 1000 arriving 64-token prompts: duet_scheduler_add() of all of them, then the
 *   prefill steps (and first-token updates) until none waits; per prompt and per burst.
 *
 * Only the scheduler's calls are timed; building requests and restarting are not.
 */
#include "bench.h"

#include <duet/scheduler.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS 16
#define PROMPT 16
#define RESTART 256
#define BURST 1000
#define BURST_PROMPT 64

struct decode_bench {
    duet_block_manager *bm;
    duet_scheduler *s;
    uint32_t n;       /* running sequences */
    uint64_t next_id; /* next request id */
    uint64_t now;     /* ns, the scheduler's clock */
};

static int fail(const struct decode_bench *d, const char *what)
{
    fprintf(stderr, "duet-bench: scheduler: %s: %s\n", what,
            d->s ? duet_scheduler_error(d->s) : "create failed");
    return 1;
}

static int create(struct decode_bench *d, uint32_t n, uint32_t device_blocks, uint32_t lookahead,
                  uint32_t prompt)
{
    duet_block_manager_params bp;
    duet_scheduler_params sp;
    char err[256];

    duet_block_manager_params_init(&bp);
    bp.block_size = BS;
    bp.num_device_blocks = device_blocks;
    bp.max_seqs = n;
    duet_scheduler_params_init(&sp);
    sp.max_num_seqs = n;
    sp.max_model_len = 2048;
    sp.max_num_batched_tokens = n * prompt > 2048 ? n * prompt : 2048;
    sp.num_lookahead_slots = lookahead;
    if (duet_block_manager_create(&bp, &d->bm, err, sizeof(err)) ||
        duet_scheduler_create(&sp, d->bm, &d->s, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: scheduler: %s\n", err);
        return 1;
    }
    return 0;
}

static void destroy(struct decode_bench *d)
{
    duet_scheduler_destroy(d->s);
    duet_block_manager_destroy(d->bm);
    d->s = NULL;
    d->bm = NULL;
}

/* Feeds every sampled sequence of out one token. */
static int update_all(struct decode_bench *d, const duet_sched_output *out)
{
    static const int32_t toks[8] = {5, 5, 5, 5, 5, 5, 5, 5};

    for (uint32_t i = 0; i < out->num_seqs; i++)
        if (out->seqs[i].num_samples &&
            duet_scheduler_update(d->s, out->seqs[i].seq_id, toks, 1) != DUET_STATUS_OK)
            return fail(d, "update");
    return 0;
}

/* Aborts whatever runs, then adds n fresh prompts and prefills them (one step). */
static int restart(struct decode_bench *d)
{
    const duet_sched_output *out;
    duet_sched_request r;
    duet_sched_result res;
    int32_t prompt[PROMPT];

    for (uint64_t id = d->next_id > d->n ? d->next_id - d->n : 0; id < d->next_id; id++)
        duet_scheduler_abort(d->s, id);
    while (duet_scheduler_take_finished(d->s, &res))
        ;
    duet_sched_request_init(&r);
    r.prompt = prompt, r.prompt_len = PROMPT, r.max_tokens = 1u << 20;
    for (uint32_t i = 0; i < d->n; i++) {
        for (uint32_t t = 0; t < PROMPT; t++)
            prompt[t] = (int32_t)((d->next_id * 31 + t * 7) % 32000);
        r.request_id = d->next_id++;
        r.arrival_time = d->now;
        if (duet_scheduler_add(d->s, &r))
            return fail(d, "add");
    }
    if (duet_scheduler_step(d->s, ++d->now, &out) || out->num_groups != d->n)
        return fail(d, "prefill step");
    return update_all(d, out);
}

/* One timed decode step: the step and the updates, added to *step_ns and *update_ns. */
static int decode_once(struct decode_bench *d, uint64_t *step_ns, uint64_t *update_ns)
{
    const duet_sched_output *out;
    uint64_t t0 = duet__bench_now_ns(), t1, t2;

    if (duet_scheduler_step(d->s, ++d->now, &out))
        return fail(d, "decode step");
    t1 = duet__bench_now_ns();
    if (update_all(d, out))
        return 1;
    t2 = duet__bench_now_ns();
    if (out->num_seqs != d->n || out->num_preempted)
        return fail(d, "decode step: not every sequence ran");
    *step_ns += t1 - t0;
    *update_ns += t2 - t1;
    return 0;
}

static void report_decode(json_t *results, uint32_t n, uint32_t lookahead,
                          const struct duet_bench_samples *all,
                          const struct duet_bench_samples *step,
                          const struct duet_bench_samples *upd)
{
    struct duet_bench_result r, rs, ru;
    char name[96];

    snprintf(name, sizeof(name), "scheduler_decode_step_%u_seqs%s", n,
             lookahead ? "_lookahead4" : "");
    duet__bench_finish(all, name, &r);
    duet__bench_finish(step, name, &rs);
    duet__bench_finish(upd, name, &ru);
    duet__bench_report(results, &r,
                       json_pack("{s:i, s:i, s:f, s:f, s:f}", "sequences", n, "lookahead_slots",
                                 lookahead, "step_ns", rs.ns_median, "update_ns", ru.ns_median,
                                 "ns_per_sequence", r.ns_median / n));
}

static int bench_decode(const struct duet_bench_opts *o, json_t *results, uint32_t n,
                        uint32_t lookahead)
{
    struct decode_bench d = {.n = n, .next_id = 1};
    struct duet_bench_samples all = {0}, step = {0}, upd = {0};
    uint32_t blocks = n * ((PROMPT + RESTART + lookahead) / BS + 2);
    uint32_t steps = 0;
    int rc = 1;

    if (create(&d, n, blocks, lookahead, PROMPT) || restart(&d))
        goto out;
    for (int rep = 0; rep < o->repeats; rep++) {
        uint64_t end = duet__bench_now_ns() + (uint64_t)(o->seconds / o->repeats * 1e9);
        uint64_t step_ns = 0, update_ns = 0, ops = 0;

        do {
            if (decode_once(&d, &step_ns, &update_ns))
                goto out;
            ops++;
            if (++steps % RESTART == 0 && restart(&d))
                goto out;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&all, step_ns + update_ns, ops);
        duet__bench_sample(&step, step_ns, ops);
        duet__bench_sample(&upd, update_ns, ops);
    }
    report_decode(results, n, lookahead, &all, &step, &upd);
    rc = 0;
out:
    destroy(&d);
    return rc;
}

/* One burst: adds BURST prompts, then steps (with first-token updates) until none waits. */
static int burst_once(struct decode_bench *d, const int32_t *prompts, uint64_t *add_ns,
                      uint64_t *admit_ns)
{
    const duet_sched_output *out;
    duet_sched_request r;
    uint64_t t0, t1, t2;

    duet_sched_request_init(&r);
    r.prompt_len = BURST_PROMPT, r.max_tokens = 1u << 20;
    t0 = duet__bench_now_ns();
    for (uint32_t i = 0; i < BURST; i++) {
        r.request_id = i + 1, r.prompt = prompts + (size_t)i * BURST_PROMPT;
        if (duet_scheduler_add(d->s, &r))
            return fail(d, "add");
    }
    t1 = duet__bench_now_ns();
    while (duet_scheduler_num_waiting(d->s))
        if (duet_scheduler_step(d->s, ++d->now, &out) || update_all(d, out))
            return fail(d, "prefill step");
    t2 = duet__bench_now_ns();
    *add_ns += t1 - t0;
    *admit_ns += t2 - t1;
    return 0;
}

static int bench_burst(const struct duet_bench_opts *o, json_t *results)
{
    int32_t *prompts = malloc(sizeof(int32_t) * BURST * BURST_PROMPT);
    struct duet_bench_samples all = {0}, add = {0}, admit = {0};
    struct duet_bench_result r, ra, rs;
    struct decode_bench d = {.n = BURST};
    int rc = 1;

    if (!prompts)
        return 1;
    for (uint32_t i = 0; i < BURST * BURST_PROMPT; i++)
        prompts[i] = (int32_t)((i * 2654435761u) % 32000u);
    for (int rep = 0; rep < o->repeats; rep++) {
        uint64_t end = duet__bench_now_ns() + (uint64_t)(o->seconds / o->repeats * 1e9);
        uint64_t add_ns = 0, admit_ns = 0, bursts = 0;

        do {
            if (create(&d, 1024, BURST * (BURST_PROMPT / BS + 2), 0, 8))
                goto out;
            if (burst_once(&d, prompts, &add_ns, &admit_ns))
                goto out;
            destroy(&d);
            bursts++;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&all, add_ns + admit_ns, bursts * BURST);
        duet__bench_sample(&add, add_ns, bursts * BURST);
        duet__bench_sample(&admit, admit_ns, bursts * BURST);
    }
    duet__bench_finish(&all, "scheduler_burst_1000_prompts", &r);
    duet__bench_finish(&add, "add", &ra);
    duet__bench_finish(&admit, "admit", &rs);
    duet__bench_report(results, &r,
                       json_pack("{s:i, s:i, s:f, s:f, s:f}", "prompts", BURST, "prompt_tokens",
                                 BURST_PROMPT, "add_ns_per_prompt", ra.ns_median,
                                 "schedule_ns_per_prompt", rs.ns_median, "burst_us",
                                 r.ns_median * BURST / 1e3));
    rc = 0;
out:
    destroy(&d);
    free(prompts);
    return rc;
}

int duet__bench_scheduler(const struct duet_bench_opts *o, json_t *results)
{
    static const uint32_t sizes[] = {64, 256, 1024, 4096};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (bench_decode(o, results, sizes[i], 0))
            return 1;
    return bench_decode(o, results, 256, 4) || bench_burst(o, results);
}
