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
#include "config.h"

#include "cpu_worker-int.h"

#include "batch_check.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

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
                             .num_swap_blocks = w->swap.num_blocks};

    return duet__batch_check(&lim, b, o, rows, fed, w->err, sizeof(w->err));
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

#define GROW(ptr, count) (free(ptr), (ptr) = malloc((count) * sizeof(*(ptr))))

/* Where the rows of one logit row go. */
struct row_dest {
    const duet_seq *q;
    int64_t out_row; /* output row, -1 when the row only serves prompt log-probabilities */
    int64_t fed_row; /* global fed index for prompt log-probabilities, -1 for none */
    int32_t next;    /* the next fed token (prompt log-probabilities), -1 for the last */
    uint64_t pos;    /* position of the token this row chooses */
};

static duet_status grow_book(duet_worker *w, size_t n_segs, size_t n_tok)
{
    duet_cpu_scratch *s = &w->s;

    if (n_segs > s->n_segs_cap) {
        if (!GROW(s->segs, n_segs) || !GROW(s->row_base, n_segs)) {
            s->n_segs_cap = 0;
            return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
        }
        s->n_segs_cap = n_segs;
    }
    if (n_tok > s->n_tok_cap) {
        free(s->dest);
        s->dest = NULL;
        s->n_tok_cap = 0;
        if (!GROW(s->tokens, n_tok) || !GROW(s->logit_rows, n_tok) ||
            !(s->dest = malloc(n_tok * sizeof(struct row_dest))))
            return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
        s->n_tok_cap = n_tok;
    }
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

/* An output row whose logits were not all finite: nothing sampled (DUET_TOKEN_NONFINITE). */
static void nonfinite_row(const duet_batch *b, duet_batch_output *o, int64_t row, size_t V)
{
    size_t M = b->max_logprobs;

    o->tokens[row] = DUET_TOKEN_NONFINITE;
    if (b->flags & DUET_BATCH_WANT_PROBS)
        memset(o->probs + row * V, 0, V * sizeof(float));
    if (b->flags & DUET_BATCH_WANT_LOGPROBS) {
        o->token_logprobs[row] = NAN;
        for (size_t k = 0; k < M; k++)
            o->logprobs[(size_t)row * M + k] = (duet_logprob){-1, NAN};
    }
}

static void emit_row(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                     const struct row_dest *r, const float *logits)
{
    duet__sampler *s = w->samplers[omp_get_thread_num() % (int)w->threads];
    const duet_sampling_params *sp = &r->q->sampling;
    size_t V = w->d->vocab_size, M = b->max_logprobs;

    if (r->out_row >= 0 && !row_finite(logits, V)) {
        nonfinite_row(b, o, r->out_row, V);
    } else if (r->out_row >= 0) {
        bool lp = b->flags & DUET_BATCH_WANT_LOGPROBS;
        duet_logprob *top = lp && M ? o->logprobs + (size_t)r->out_row * M : NULL;
        uint32_t n_top = lp ? sp->n_logprobs : 0;

        o->tokens[r->out_row] =
            duet__sample_row(s, logits, sp, r->pos,
                             (b->flags & DUET_BATCH_WANT_PROBS) ? o->probs + r->out_row * V : NULL,
                             lp ? o->token_logprobs + r->out_row : NULL, top, n_top);
        for (uint32_t k = n_top; top && k < M; k++)
            top[k] = (duet_logprob){-1, 0.0f};
    }
    if (r->fed_row >= 0) {
        duet_logprob *top = M ? o->prompt_logprobs + (size_t)r->fed_row * M : NULL;
        uint32_t n_top = sp->n_prompt_logprobs;

        duet__row_logprobs(s, logits, top ? n_top : 0, top, r->next,
                           o->prompt_next_logprobs + r->fed_row);
        for (uint32_t k = n_top; top && k < M; k++)
            top[k] = (duet_logprob){-1, 0.0f};
    }
}

/* Samples / scores the logit rows of a step in parallel. */
static void emit_rows(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                      const struct row_dest *dest, uint32_t n)
{
    size_t V = w->d->vocab_size;

#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (uint32_t i = 0; i < n; i++)
        emit_row(w, b, o, &dest[i], w->s.logits + i * V);
}

/* The first forward: every fed token. row_base[i] = first output row of sequence i. */
static duet_status feed(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                        const uint64_t *row_base, struct row_dest *dest, uint32_t n_fed)
{
    duet_cpu_scratch *s = &w->s;
    bool plp = b->flags & DUET_BATCH_WANT_PROMPT_LOGPROBS;
    uint32_t row = 0, n_out = 0;
    duet_status st;

    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);
        uint32_t first_out = q->n_tokens - q->n_outputs;

        s->segs[i] = (duet_cpu_seg){q->block_table, q->pos, q->n_tokens, row};
        memcpy(s->tokens + row, q->tokens, q->n_tokens * sizeof(int32_t));
        for (uint32_t j = 0; j < q->n_tokens; j++) {
            bool is_out = j >= first_out;

            if (!is_out && !plp)
                continue;
            s->logit_rows[n_out] = row + j;
            dest[n_out] = (struct row_dest){
                .q = q,
                .out_row = is_out ? (int64_t)(row_base[i] + j - first_out) : -1,
                .fed_row = plp ? (int64_t)(row + j) : -1,
                .next = j + 1 < q->n_tokens ? q->tokens[j + 1] : -1,
                .pos = (uint64_t)q->pos + j + 1,
            };
            n_out++;
        }
        row += q->n_tokens;
    }
    (void)n_fed;
    st = duet__cpu_forward(w, s->segs, b->n_seqs, s->tokens, row, s->logit_rows, n_out);
    if (!st)
        emit_rows(w, b, o, dest, n_out);
    return st;
}

/* Drafting step `step` (1-based): sequences with n_draft_steps >= step feed their last token. */
static duet_status draft_step(duet_worker *w, const duet_batch *b, duet_batch_output *o,
                              const uint64_t *row_base, struct row_dest *dest, uint32_t step)
{
    duet_cpu_scratch *s = &w->s;
    uint32_t n = 0;
    duet_status st;

    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);
        uint64_t prev = row_base[i] + q->n_outputs + step - 2;
        uint32_t pos = q->pos + q->n_tokens - 1 + step;

        if (q->n_draft_steps < step)
            continue;
        /* After a non-finite row the draft goes on with token 0; its rows repeat the mark. */
        s->tokens[n] = o->tokens[prev] < 0 ? 0 : o->tokens[prev];
        s->segs[n] = (duet_cpu_seg){q->block_table, pos, 1, n};
        s->logit_rows[n] = n;
        dest[n] = (struct row_dest){q, (int64_t)(prev + 1), -1, -1, (uint64_t)pos + 1};
        n++;
    }
    if (!n)
        return DUET_STATUS_OK;
    st = duet__cpu_forward(w, s->segs, n, s->tokens, n, s->logit_rows, n);
    if (!st)
        emit_rows(w, b, o, dest, n);
    for (uint32_t i = 0; !st && i < n; i++)
        if (o->tokens[dest[i].out_row - 1] == DUET_TOKEN_NONFINITE)
            nonfinite_row(b, o, dest[i].out_row, w->d->vocab_size);
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
    if ((st = dnn_headroom(w)) || (st = duet__cpu_dnn_prepare(w->dnn, w->err, sizeof(w->err))))
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

duet_status duet__cpu_execute(duet_worker *w, const duet_batch *b, duet_batch_output *o)
{
    uint64_t rows = 0, fed = 0, *row_base, at = 0;
    uint32_t max_steps = 0;
    struct row_dest *dest;
    duet_status st;

    if (!w)
        return DUET_STATUS_INVALID_ARGUMENT;
    w->err[0] = '\0';
    if (!b || !o)
        return fail(w, DUET_STATUS_INVALID_ARGUMENT, "cpu worker: execute: NULL batch or output");
    if ((st = check_batch(w, b, o, &rows, &fed)))
        return st;
    omp_set_num_threads((int)w->threads);
    cache_ops(w, b);
    if (!b->n_seqs)
        return DUET_STATUS_OK;
    if ((st = grow_book(w, b->n_seqs, fed)))
        return st;
    row_base = w->s.row_base;
    dest = w->s.dest;
    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);

        row_base[i] = at;
        at += (uint64_t)q->n_outputs + q->n_draft_steps;
        max_steps = q->n_draft_steps > max_steps ? q->n_draft_steps : max_steps;
    }
    st = feed(w, b, o, row_base, dest, (uint32_t)fed);
    for (uint32_t step = 1; !st && step <= max_steps; step++)
        st = draft_step(w, b, o, row_base, dest, step);
    return st;
}
