/*
 * execute() of the CPU worker (plugin.h: duet_batch, duet_batch_output).
 *
 *   check ─► every pointer, count, id, token, position and sampling value; nothing is touched
 *            before the whole batch is known to be valid
 *   cache ─► swap_in (swap → KV), swap_out (KV → swap), copy (KV → KV), in that order
 *   feed  ─► one forward over every fed token of every sequence; logits for the output rows
 *            (and for every fed row when prompt log-probabilities are asked)
 *   rows  ─► sample each output row at the position of the token it chooses
 *   draft ─► step s = 1 .. max n_draft_steps: one row per sequence still drafting, fed the token
 *            its previous row sampled, at the next position
 *
 * Output row o of sequence i is row_base(i) + o; its token is sampled at position
 * pos + (fed index) + 1, so a request draws the same numbers in any batch.
 */
#include "build_config.h"

#include "cpu_worker-int.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#define fail duet__cpu_fail

/* ---- checks ------------------------------------------------------------------------------ */

static duet_status check_batch(duet_worker *w, const duet_batch *b, const duet_batch_output *o,
                               uint64_t *rows, uint64_t *fed)
{
    duet_batch_limits lim = {.who = "cpu worker",
                             .vocab = w->d->vocab_size,
                             .max_position = w->d->max_position,
                             .block_size = w->kv.block_size,
                             .num_blocks = w->kv.base ? w->kv.num_blocks : 0,
                             .num_swap_blocks = w->swap.num_blocks,
                             .penalties = true};

    return duet_kit_batch_check(&lim, b, o, rows, fed, w->err.msg, sizeof(w->err.msg));
}

/* ---- steps -------------------------------------------------------------------------------- */

static void cache_ops(duet_worker *w, const duet_batch *b)
{
    for (uint32_t i = 0; i < b->n_swap_in; i++)
        duet__cpu_kv_copy_block(&w->swap, b->swap_in[i].src, &w->kv, b->swap_in[i].dst);
    for (uint32_t i = 0; i < b->n_swap_out; i++)
        duet__cpu_kv_copy_block(&w->kv, b->swap_out[i].src, &w->swap, b->swap_out[i].dst);
    for (uint32_t i = 0; i < b->n_copy; i++)
        duet__cpu_kv_copy_block(&w->kv, b->copy[i].src, &w->kv, b->copy[i].dst);
}

/* Room for the bookkeeping of n_seqs sequences and n_fed fed tokens: the kit's rows and segs,
 * tokens and logit_rows carved from one arena. */
static duet_status grow_book(duet_worker *w, size_t n_segs, size_t n_tok)
{
    duet_cpu_scratch *s = &w->s;
    size_t segs = n_segs * sizeof(duet_cpu_seg), toks = n_tok * sizeof(int32_t);
    char *base;

    if (!duet_kit_rows_reserve(&s->plan, n_segs, n_tok) ||
        !(base = duet_kit_arena_reserve(&s->book, segs + toks + n_tok * sizeof(uint32_t))))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
    s->segs = (duet_cpu_seg *)(void *)base;
    s->tokens = (int32_t *)(void *)(base + segs);
    s->logit_rows = (uint32_t *)(void *)(base + segs + toks);
    return DUET_STATUS_OK;
}

/* Whether every logit is finite (its exponent bits not all ones): an OR over the row that the
 * compiler vectorises (omp simd; at -O2 it would not), 2.8 µs for 32000 logits against 12 µs as
 * a plain loop (gcc 12, SSE2, this session's Xeon) — beside a forward pass of milliseconds. */
static bool row_finite(const float *logits, size_t V)
{
    uint32_t bad = 0;

#pragma omp simd reduction(| : bad)
    for (size_t i = 0; i < V; i++) {
        uint32_t bits;

        memcpy(&bits, &logits[i], sizeof(bits));
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

/* Whether penalties leave every logit as it is (sampling's duet__penalize would copy the row
 * unchanged): none given, or repetition 1, frequency and presence 0 and no bias. */
static bool penalties_off(const duet_penalties *p)
{
    return !p ||
           (p->repetition == 1.0f && p->frequency == 0.0f && p->presence == 0.0f && p->n_bias == 0);
}

/* The greedy token of an output row that asks for nothing but its token (no probabilities, no
 * log-probabilities, no penalties): duet__cpu_argmax's one pass, which also checks the row is
 * finite. False when the row needs the full sampler or is not finite. */
static bool greedy_row(const duet_batch *b, duet_batch_output *o, const duet_kit_row *r,
                       const float *logits, size_t V)
{
    const duet_sampling_params *sp = &r->q->sampling;
    uint32_t token;

    if (r->out_row < 0 || sp->temperature >= DUET_SAMPLING_EPS || /* NaN: greedy too */
        (b->flags & (DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_LOGPROBS)) ||
        !penalties_off(duet_seq_penalties(b, r->q)) || !duet__cpu_argmax(logits, V, &token))
        return false;
    o->tokens[r->out_row] = (int32_t)token;
    return true;
}

static void emit_row(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                     const duet_kit_row *r, const float *logits)
{
    duet__sampler *s = w->samplers[omp_get_thread_num() % (int)w->threads];
    const duet_sampling_params *sp = &r->q->sampling;
    size_t V = w->d->vocab_size, M = b->max_logprobs;

    if (greedy_row(b, o, r, logits, V)) {
        /* the token alone, in one pass */
    } else if (r->out_row >= 0 && !row_finite(logits, V)) {
        duet_kit_row_nonfinite(b, o, r->out_row, (uint32_t)V);
    } else if (r->out_row >= 0) {
        bool lp = b->flags & DUET_BATCH_WANT_LOGPROBS;
        duet_logprob *top = lp && M ? o->logprobs + (size_t)r->out_row * M : NULL;
        uint32_t n_top = lp ? sp->n_logprobs : 0;

        duet__recent rc = duet__penalty_recent(r->q, r->pos, o->tokens, r->out_row);

        o->tokens[r->out_row] = duet__sample_row_penalized(
            s, logits, sp, duet_seq_penalties(b, r->q), &rc, r->pos,
            (b->flags & DUET_BATCH_WANT_PROBS) ? o->probs + r->out_row * V : NULL,
            lp ? o->token_logprobs + r->out_row : NULL, top, n_top);
        duet_kit_emit_top(top, top, n_top, (uint32_t)M);
    }
    if (r->fed_row >= 0) {
        duet_logprob *top = M ? o->prompt_logprobs + (size_t)r->fed_row * M : NULL;
        uint32_t n_top = sp->n_prompt_logprobs;

        duet__row_logprobs(s, logits, top ? n_top : 0, top, r->next,
                           o->prompt_next_logprobs + r->fed_row);
        duet_kit_emit_top(top, top, n_top, (uint32_t)M);
    }
}

/* Samples / scores the logit rows of a step in parallel. */
static void emit_rows(duet_worker *w, const duet_batch *b, duet_batch_output *o, uint32_t n)
{
    size_t V = w->d->vocab_size;
    const duet_kit_row *rows = w->s.plan.rows;
    uint64_t t0 = duet__cpu_bd_start(w);

#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (uint32_t i = 0; i < n; i++)
        emit_row(w, b, o, &rows[i], w->s.logits + i * V);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_SAMPLE, t0);
}

/* The first forward: every fed token, logits for the kit's rows. */
static duet_status feed(duet_worker *w, const duet_batch *b, duet_batch_output *o)
{
    duet_cpu_scratch *s = &w->s;
    uint64_t t0 = duet__cpu_bd_start(w);
    uint32_t row = 0, n_out = duet_kit_rows_feed(&s->plan, b);
    duet_status st;

    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);

        s->segs[i] = (duet_cpu_seg){q->block_table, q->pos, q->n_tokens, row};
        memcpy(s->tokens + row, q->tokens, q->n_tokens * sizeof(int32_t));
        row += q->n_tokens;
    }
    for (uint32_t i = 0; i < n_out; i++)
        s->logit_rows[i] = s->plan.rows[i].fed;
    duet__cpu_bd_add(w, DUET_CPU_STAGE_SETUP, t0);
    st = duet__cpu_forward(w, s->segs, b->n_seqs, s->tokens, row, s->logit_rows, n_out);
    if (!st)
        emit_rows(w, b, o, n_out);
    return st;
}

/* Drafting step `step` (1-based): sequences with n_draft_steps >= step feed their last token. */
static duet_status draft_step(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                              uint32_t step)
{
    duet_cpu_scratch *s = &w->s;
    uint64_t t0 = duet__cpu_bd_start(w);
    uint32_t n = duet_kit_rows_draft(&s->plan, b, o, step);
    duet_status st;

    if (!n)
        return DUET_STATUS_OK;
    for (uint32_t i = 0; i < n; i++) {
        const duet_kit_row *r = &s->plan.rows[i];

        s->tokens[i] = s->plan.draft_tok[i];
        s->segs[i] = (duet_cpu_seg){r->q->block_table, (uint32_t)(r->pos - 1), 1, i};
        s->logit_rows[i] = i;
    }
    duet__cpu_bd_add(w, DUET_CPU_STAGE_SETUP, t0);
    st = duet__cpu_forward(w, s->segs, n, s->tokens, n, s->logit_rows, n);
    if (!st) {
        emit_rows(w, b, o, n);
        duet_kit_rows_repeat_nonfinite(&s->plan, n, b, o, w->d->vocab_size);
    }
    return st;
}

/* Address space oneDNN's first primitives take (JIT code, its thread pool's set-up): 88 MiB for
 * llama-160m and 122 MiB for a tiny model, measured as VmSize around duet__cpu_dnn_prepare; a
 * second worker in the process (a draft) added 1 MiB. Twice that is asked for. */
#define DNN_SETUP_BYTES (256ull << 20)
#define DNN_MORE_BYTES (32ull << 20)

static bool dnn_set_up; /* a worker of this process prepared its primitives */

/* Under an address-space limit (ulimit -v), whether oneDNN's set-up fits what is left: its JIT
 * crashes (SIGSEGV) rather than fail when an mmap is refused, so room for it is probed first. */
static duet_status dnn_headroom(duet_worker *w)
{
    unsigned long long bytes =
        __atomic_load_n(&dnn_set_up, __ATOMIC_RELAXED) ? DNN_MORE_BYTES : DNN_SETUP_BYTES;
    struct rlimit rl;
    void *p;

    if (!w->dnn || getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return DUET_STATUS_OK;
    p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return fail(w, DUET_STATUS_OUT_OF_MEMORY,
                    "cpu worker: the address-space limit (ulimit -v, %llu KiB) leaves less than "
                    "%llu MiB for oneDNN's set-up",
                    (unsigned long long)(rl.rlim_cur >> 10), bytes >> 20);
    munmap(p, bytes);
    return DUET_STATUS_OK;
}

duet_status duet__cpu_warm_up(duet_worker *w, uint32_t max_rows, uint32_t max_out)
{
    uint32_t table[4], n = DUET_CPU_GEMV_MAX_M + 8, bs = w->kv.block_size;
    uint64_t room = (uint64_t)(w->kv.num_blocks < 4 ? w->kv.num_blocks : 4) * bs;
    duet_cpu_seg seg;
    duet_status st;

    if ((st = grow_book(w, max_rows ? max_rows : 1, max_rows > n ? max_rows : n)) ||
        (st = duet__cpu_grow_scratch(w, max_rows, max_out)))
        return st;
    if ((st = dnn_headroom(w)) ||
        (st = duet__cpu_dnn_prepare(w->dnn, w->err.msg, sizeof(w->err.msg))))
        return st;
    __atomic_store_n(&dnn_set_up, true, __ATOMIC_RELAXED);
    /* A prefill of n rows above the GEMV threshold at positions 0 .., then one decode row. */
    if (room < 2)
        return DUET_STATUS_OK;
    n = (uint64_t)n + 1 <= room ? n : (uint32_t)room - 1;
    for (uint32_t i = 0; i < 4; i++)
        table[i] = i < w->kv.num_blocks ? i : 0;
    omp_set_num_threads((int)w->threads);
    for (uint32_t i = 0; i < n; i++) {
        w->s.tokens[i] = 0;
        w->s.logit_rows[i] = i;
    }
    seg = (duet_cpu_seg){table, 0, n, 0};
    st = duet__cpu_forward(w, &seg, 1, w->s.tokens, n, w->s.logit_rows + n - 1, 1);
    seg = (duet_cpu_seg){table, n, 1, 0};
    if (!st)
        st = duet__cpu_forward(w, &seg, 1, w->s.tokens, 1, w->s.logit_rows, 1);
    return st;
}

/* ---- the breakdown ---------------------------------------------------------------------- */

uint64_t duet__cpu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bd_begin(duet_worker *w)
{
    duet_cpu_breakdown *bd = &w->bd;

    memset(bd->cur, 0, sizeof(bd->cur));
    bd->cur_steps = 0;
    bd->decode = true;
    bd->t0 = duet__cpu_now_ns();
}

/* Adds the execute that ends to the totals when it was all decode steps. */
static void bd_end(duet_worker *w, const duet_batch *b, duet_status st)
{
    duet_cpu_breakdown *bd = &w->bd;

    if (st || !bd->decode || !bd->cur_steps)
        return;
    for (int i = 0; i < DUET_CPU_NUM_STAGES; i++)
        bd->ns[i] += bd->cur[i];
    bd->total_ns += duet__cpu_now_ns() - bd->t0;
    bd->steps += bd->cur_steps;
    bd->seqs += b->n_seqs;
    bd->executes++;
}

void duet__cpu_bd_report(const duet_worker *w)
{
    static const char *const names[DUET_CPU_NUM_STAGES] = {
        "setup", "embed", "act_prep", "gemv", "attention", "elementwise", "lm_head", "sample"};
    const duet_cpu_breakdown *bd = &w->bd;
    uint64_t staged = 0;

    if (!bd->on || !bd->steps)
        return;
    fprintf(
        stderr,
        "cpu worker %s breakdown: %llu decode executes, %llu steps, %llu sequences, %u threads; "
        "µs per step (share):",
        w->section, (unsigned long long)bd->executes, (unsigned long long)bd->steps,
        (unsigned long long)bd->seqs, w->threads);
    for (int i = 0; i < DUET_CPU_NUM_STAGES; i++) {
        staged += bd->ns[i];
        fprintf(stderr, " %s %.1f (%.1f%%)", names[i], 1e-3 * (double)bd->ns[i] / (double)bd->steps,
                100.0 * (double)bd->ns[i] / (double)bd->total_ns);
    }
    fprintf(stderr, " rest %.1f (%.1f%%) total %.1f\n",
            1e-3 * (double)(bd->total_ns - staged) / (double)bd->steps,
            100.0 * (double)(bd->total_ns - staged) / (double)bd->total_ns,
            1e-3 * (double)bd->total_ns / (double)bd->steps);
}

/* ---- execute ----------------------------------------------------------------------------- */

static duet_status execute(duet_worker *w, const duet_batch *b, duet_batch_output *o)
{
    uint64_t rows = 0, fed = 0, t0 = duet__cpu_bd_start(w);
    duet_status st;

    if ((st = check_batch(w, b, o, &rows, &fed)) || (st = duet__cpu_enter_team(w)))
        return st;
    cache_ops(w, b);
    if (!b->n_seqs)
        return DUET_STATUS_OK;
    if ((st = grow_book(w, b->n_seqs, fed)))
        return st;
    duet__cpu_bd_add(w, DUET_CPU_STAGE_SETUP, t0);
    st = feed(w, b, o);
    for (uint32_t step = 1; !st && step <= w->s.plan.max_steps; step++)
        st = draft_step(w, b, o, step);
    return st;
}

duet_status duet__cpu_execute(duet_worker *w, const duet_batch *b, duet_batch_output *o)
{
    duet_status st;

    if (!w)
        return DUET_STATUS_INVALID_ARGUMENT;
    w->err.msg[0] = '\0';
    if (!b || !o)
        return fail(w, DUET_STATUS_INVALID_ARGUMENT, "cpu worker: execute: NULL batch or output");
    if (!w->bd.on)
        return execute(w, b, o);
    bd_begin(w);
    st = execute(w, b, o);
    bd_end(w, b, st);
    return st;
}
