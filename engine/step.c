/*
 * step.c — one engine step (docs/engine.md):
 *
 *     duet_scheduler_step ─► batch from duet_sched_output ─► target execute (cache ops first)
 *       ─► duet_scheduler_update per sampling sequence ─► take_finished ─► step output
 *
 * A sequence feeds tokens[num_computed .. num_computed + num_new_tokens) at pos num_computed and
 * samples one row when the scheduler expects tokens from it (the last prompt chunk, a decode).
 * Decode steps with lookahead slots and a draft go through spec.c instead.
 */
#include "config.h"

#include "engine-int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool duet__grow(void **p, uint32_t *cap, uint32_t want, size_t elem)
{
    void *q;
    uint32_t c;

    if (want <= *cap)
        return true;
    c = *cap ? *cap : 8;
    while (c < want)
        c *= 2;
    q = realloc(*p, (size_t)c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

/* Room for n_seqs sequences, n_rows output rows of max_logprobs entries. */
static bool scratch_reserve(struct duet__scratch *sc, uint32_t n_seqs, uint32_t n_rows,
                            uint32_t max_logprobs)
{
    uint32_t c = sc->cap_seqs, r = sc->cap_rows, l = sc->cap_logprobs;
    uint32_t want_l = n_rows * (max_logprobs ? max_logprobs : 1);

    if (!duet__grow((void **)&sc->seqs, &c, n_seqs, sizeof(*sc->seqs)))
        return false;
    c = sc->cap_seqs;
    if (!duet__grow((void **)&sc->owner, &c, n_seqs, sizeof(*sc->owner)))
        return false;
    sc->cap_seqs = c;
    if (!duet__grow((void **)&sc->tokens, &r, n_rows, sizeof(*sc->tokens)))
        return false;
    r = sc->cap_rows;
    if (!duet__grow((void **)&sc->token_logprobs, &r, n_rows, sizeof(*sc->token_logprobs)))
        return false;
    sc->cap_rows = r;
    if (!duet__grow((void **)&sc->logprobs, &l, want_l, sizeof(*sc->logprobs)))
        return false;
    sc->cap_logprobs = l;
    return true;
}

duet_status duet__engine_batch_seqs(duet_engine *e, const duet_sched_output *so, uint32_t *n_rows,
                                    uint32_t *max_logprobs)
{
    uint32_t n = 0;

    *n_rows = 0;
    *max_logprobs = 0;
    if (!scratch_reserve(&e->sc, so->num_seqs, so->num_seqs, 0))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    for (uint32_t g = 0; g < so->num_groups; g++) {
        const duet_sched_group *gr = &so->groups[g];
        struct duet__req *r = duet__engine_find(e, gr->request_id, NULL);

        if (!r)
            return duet__engine_fail(e, DUET_STATUS_INTERNAL, "scheduled request %llu unknown",
                                     (unsigned long long)gr->request_id);
        for (uint32_t i = 0; i < gr->num_seqs; i++) {
            const duet_sched_seq *s = &gr->seqs[i];
            duet_seq *q = &e->sc.seqs[n];

            *q = (duet_seq){.seq_id = s->seq_id,
                            .tokens = s->tokens + s->num_computed,
                            .n_tokens = s->num_new_tokens,
                            .pos = s->num_computed,
                            .block_table = s->block_table,
                            .n_blocks = s->num_blocks,
                            .n_outputs = s->num_samples > 0 ? 1 : 0,
                            .sampling = *gr->sampling};
            if (!s->is_prefill)
                q->sampling.n_prompt_logprobs = 0;
            e->sc.owner[n++] = r;
            *n_rows += q->n_outputs;
            if (gr->sampling->n_logprobs > *max_logprobs)
                *max_logprobs = gr->sampling->n_logprobs;
            if (q->sampling.n_prompt_logprobs > *max_logprobs)
                *max_logprobs = q->sampling.n_prompt_logprobs;
            if (s->is_prefill)
                e->m.prompt_tokens += s->num_new_tokens;
        }
    }
    if (!scratch_reserve(&e->sc, n, *n_rows, *max_logprobs))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    return DUET_STATUS_OK;
}

void duet__batch_init(const duet_sched_output *so, const duet_seq *seqs, uint32_t n_seqs,
                      uint32_t flags, uint32_t max_logprobs, duet_batch *b)
{
    *b = (duet_batch){.struct_size = sizeof(*b),
                      .flags = flags,
                      .n_swap_in = so ? so->num_swap_in : 0,
                      .n_swap_out = so ? so->num_swap_out : 0,
                      .n_copy = so ? so->num_copy : 0,
                      .n_seqs = n_seqs,
                      .seq_size = sizeof(duet_seq),
                      .max_logprobs = max_logprobs,
                      .swap_in = so ? so->swap_in : NULL,
                      .swap_out = so ? so->swap_out : NULL,
                      .copy = so ? so->copy : NULL,
                      .seqs = seqs};
}

duet_status duet__worker_run(duet_engine *e, uint32_t which, const duet_batch *b,
                             duet_batch_output *o)
{
    struct duet__eworker *wk = &e->workers[which];
    double t0, dt;
    duet_status st;

    if (which == 1 && e->dt) { /* with overlap only the draft thread calls the draft */
        duet__draft_post(e, b, o);
        return duet__draft_wait(e, 0, 0);
    }
    t0 = duet__now_s();
    st = wk->t->execute(wk->w, b, o);
    dt = duet__now_s() - t0;
    if (which == 0)
        e->m.execute_s += dt;
    else
        e->m.draft_s += dt;
    if (st)
        return duet__engine_fail(e, st, "%s worker: execute: %s", which ? "draft" : "target",
                                 wk->t->last_error(wk->w));
    return DUET_STATUS_OK;
}

duet_status duet__commit(duet_engine *e, uint32_t i, const int32_t *tokens, uint32_t n,
                         const float *token_logprobs, const duet_logprob *logprobs, uint32_t stride)
{
    struct duet__req *r = e->sc.owner[i];
    duet_status st = duet__req_append(r, tokens, n, token_logprobs, logprobs, stride);

    if (st)
        return duet__engine_fail(e, st, "out of memory");
    r->touched = true;
    e->m.generated_tokens += n;
    e->m.decode_seq_steps++;
    st = duet_scheduler_update(e->sched, e->sc.seqs[i].seq_id, tokens, n);
    if (st)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "scheduler update: %s",
                                 duet_scheduler_error(e->sched));
    return DUET_STATUS_OK;
}

/* Room for the prompt log-probabilities of the batch (P fed tokens); false when none is
 * wanted. */
static duet_status prompt_lp_reserve(duet_engine *e, uint32_t n_seqs, uint32_t max_lp, bool *want)
{
    struct duet__scratch *sc = &e->sc;
    uint32_t p = 0, cap = sc->cap_prompt, cap_top = sc->cap_prompt_top;

    *want = false;
    for (uint32_t i = 0; i < n_seqs; i++) {
        p += sc->seqs[i].n_tokens;
        *want = *want || sc->seqs[i].sampling.n_prompt_logprobs > 0;
    }
    if (!*want)
        return DUET_STATUS_OK;
    if (!duet__grow((void **)&sc->prompt_next, &cap, p, sizeof(float)) ||
        !duet__grow((void **)&sc->prompt_top, &cap_top, p * max_lp, sizeof(duet_logprob)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    sc->cap_prompt = cap;
    sc->cap_prompt_top = cap_top;
    /* A worker that fills nothing leaves "unknown", not garbage. */
    for (uint32_t i = 0; i < p; i++)
        sc->prompt_next[i] = NAN;
    for (size_t i = 0; i < (size_t)p * max_lp; i++)
        sc->prompt_top[i] = (duet_logprob){.token = -1, .logprob = -INFINITY};
    return DUET_STATUS_OK;
}

/* Keeps the first prompt log-probabilities computed for each prompt position (a recomputed
 * prefill finds them there already). Fed position p predicts prompt token p + 1. */
static void prompt_lp_record(duet_engine *e, uint32_t n_seqs, uint32_t max_lp)
{
    uint32_t off = 0;

    for (uint32_t i = 0; i < n_seqs; off += e->sc.seqs[i].n_tokens, i++) {
        const duet_seq *q = &e->sc.seqs[i];
        struct duet__req *r = e->sc.owner[i];
        uint32_t nl = q->sampling.n_prompt_logprobs;

        for (uint32_t j = 0; nl && r->prompt_lp && j < q->n_tokens; j++) {
            uint32_t t = q->pos + j + 1;
            const duet_logprob *top = &e->sc.prompt_top[(size_t)(off + j) * max_lp];
            float lp = e->sc.prompt_next[off + j];

            if (t >= r->n_prompt || r->prompt_top[(size_t)t * nl].token >= 0)
                continue;
            memcpy(&r->prompt_top[(size_t)t * nl], top, nl * sizeof(*top));
            for (uint32_t k = 0; isnan(lp) && k < nl; k++) /* the last token of a chunk */
                if (top[k].token == r->prompt[t])
                    lp = top[k].logprob;
            r->prompt_lp[t] = lp;
        }
    }
}

/* Plain decoding: the target alone runs the batch and samples one token per sampling seq. */
duet_status duet__engine_run_plain(duet_engine *e, const duet_sched_output *so)
{
    uint32_t n_rows, max_lp, row = 0;
    duet_batch b;
    duet_batch_output o;
    bool want_prompt = false;
    duet_status st = duet__engine_batch_seqs(e, so, &n_rows, &max_lp);

    if (!st)
        st = prompt_lp_reserve(e, so->num_seqs, max_lp, &want_prompt);
    if (st)
        return st;
    duet__batch_init(so, e->sc.seqs, so->num_seqs,
                     (max_lp ? DUET_BATCH_WANT_LOGPROBS : 0) |
                         (want_prompt ? DUET_BATCH_WANT_PROMPT_LOGPROBS : 0),
                     max_lp, &b);
    o = (duet_batch_output){.struct_size = sizeof(o),
                            .n_rows = n_rows,
                            .tokens = e->sc.tokens,
                            .token_logprobs = max_lp ? e->sc.token_logprobs : NULL,
                            .logprobs = max_lp ? e->sc.logprobs : NULL,
                            .prompt_logprobs = want_prompt ? e->sc.prompt_top : NULL,
                            .prompt_next_logprobs = want_prompt ? e->sc.prompt_next : NULL};
    st = duet__worker_run(e, 0, &b, &o);
    if (!st && want_prompt)
        prompt_lp_record(e, so->num_seqs, max_lp);
    if (!st && e->n_workers > 1)
        st = duet__engine_draft_prefill(e, so);
    for (uint32_t i = 0; !st && i < so->num_seqs; i++) {
        if (!e->sc.seqs[i].n_outputs)
            continue;
        if (e->sc.tokens[row] == DUET_TOKEN_NONFINITE) {
            duet__fail_nonfinite(e, i, 0, e->sc.seqs[i].pos + e->sc.seqs[i].n_tokens - 1);
            row++;
            continue;
        }
        st = duet__commit(e, i, &e->sc.tokens[row], 1, max_lp ? &e->sc.token_logprobs[row] : NULL,
                          max_lp ? &e->sc.logprobs[(size_t)row * max_lp] : NULL, max_lp);
        row++;
    }
    return st;
}

void duet__fail_nonfinite(duet_engine *e, uint32_t i, uint32_t which, uint32_t pos)
{
    struct duet__req *r = e->sc.owner[i];
    const char *dir = which ? e->settings->speculative.draft_model : e->settings->model;
    char msg[1024];
    int n;

    if (r->fail_pending || r->error)
        return;
    n = snprintf(msg, sizeof(msg),
                 "the %s model %s gave non-finite logits (NaN or infinity) at position %u: its "
                 "weights or activations overflow (%s.check_values = true checks the weights at "
                 "load)",
                 which ? "draft" : "target", dir, pos, which ? "speculative" : "target");
    r->error = malloc((size_t)n + 1);
    if (r->error)
        memcpy(r->error, msg, (size_t)n + 1);
    r->fail_pending = true;
    e->n_fail_pending++;
    e->m.failed_requests++;
}

/* Ends the requests failed by this step (after every commit: aborting frees their tables). */
static duet_status abort_failed(duet_engine *e)
{
    for (uint32_t i = 0; e->n_fail_pending && i < e->n_reqs; i++) {
        struct duet__req *r = e->reqs[i];

        if (!r->fail_pending)
            continue;
        r->fail_pending = false;
        e->n_fail_pending--;
        if (duet_scheduler_abort(e->sched, r->id))
            return duet__engine_fail(e, DUET_STATUS_INTERNAL, "scheduler abort: %s",
                                     duet_scheduler_error(e->sched));
    }
    return DUET_STATUS_OK;
}

static duet_finish_reason finish_of(duet_sched_finish f)
{
    switch (f) {
    case DUET_SCHED_FINISH_STOP:
        return DUET_FINISH_STOP;
    case DUET_SCHED_FINISH_LENGTH:
        return DUET_FINISH_LENGTH;
    case DUET_SCHED_FINISH_ABORT:
        return DUET_FINISH_ABORT;
    case DUET_SCHED_FINISH_IGNORED:
        return DUET_FINISH_IGNORED;
    case DUET_SCHED_FINISH_NONE:
        break;
    }
    return DUET_FINISH_NONE;
}

/* Moves a finished request from reqs to retired, its ids set to the scheduler's final ones. */
static duet_status retire(duet_engine *e, const duet_sched_result *res)
{
    uint32_t idx, n = res->num_seqs ? res->seqs[0].num_output : 0;
    struct duet__req *r = duet__engine_find(e, res->request_id, &idx);
    uint32_t cap = e->cap_retired;

    if (!r)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "finished request %llu unknown",
                                 (unsigned long long)res->request_id);
    if (!duet__grow((void **)&e->retired, &cap, e->n_retired + 1, sizeof(*e->retired)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    e->cap_retired = cap;
    if (n > r->n_ids &&
        duet__req_append(r, res->seqs[0].output + r->n_ids, n - r->n_ids, NULL, NULL, 0))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    if (n < r->n_ids) /* the scheduler dropped what followed a stop or the length limit */
        e->m.generated_tokens -= r->n_ids - n;
    if (n)
        memcpy(r->ids, res->seqs[0].output, n * sizeof(int32_t));
    r->n_ids = n;
    if (r->first_new > n)
        r->first_new = n;
    r->finish = r->error ? DUET_FINISH_ERROR : finish_of(res->finish);
    r->num_preemptions = res->num_preemptions;
    memmove(&e->reqs[idx], &e->reqs[idx + 1], (e->n_reqs - idx - 1) * sizeof(*e->reqs));
    e->n_reqs--;
    e->retired[e->n_retired++] = r;
    return DUET_STATUS_OK;
}

static void output_of(const struct duet__req *r, duet_request_output *o)
{
    *o =
        (duet_request_output){.request_id = r->id,
                              .prompt = r->prompt,
                              .n_prompt = r->n_prompt,
                              .ids = r->ids,
                              .n_ids = r->n_ids,
                              .first_new = r->first_new,
                              .finish = r->finish,
                              .token_logprobs = r->sampling.n_logprobs ? r->token_logprobs : NULL,
                              .logprobs = r->sampling.n_logprobs ? r->logprobs : NULL,
                              .n_logprobs = r->sampling.n_logprobs,
                              .prompt_token_logprobs = r->prompt_lp,
                              .prompt_logprobs = r->prompt_top,
                              .n_prompt_logprobs = r->prompt_lp ? r->sampling.n_prompt_logprobs : 0,
                              .num_preemptions = r->num_preemptions,
                              .num_proposed = r->proposed,
                              .num_accepted = r->accepted,
                              .error = r->error};
}

/* Collects finished requests, then lists every request that has news. */
static duet_status collect(duet_engine *e)
{
    duet_sched_result res;
    uint32_t n = 0, cap = e->sc.cap_out;
    duet_status st = DUET_STATUS_OK;

    while (!st && duet_scheduler_take_finished(e->sched, &res))
        st = retire(e, &res);
    if (st)
        return st;
    if (!duet__grow((void **)&e->sc.out, &cap, e->n_reqs + e->n_retired, sizeof(*e->sc.out)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    e->sc.cap_out = cap;
    for (uint32_t i = 0; i < e->n_retired; i++)
        output_of(e->retired[i], &e->sc.out[n++]);
    for (uint32_t i = 0; i < e->n_reqs; i++)
        if (e->reqs[i]->touched)
            output_of(e->reqs[i], &e->sc.out[n++]);
    e->step_out.requests = e->sc.out;
    e->step_out.n_requests = n;
    return DUET_STATUS_OK;
}

static void step_begin(duet_engine *e)
{
    for (uint32_t i = 0; i < e->n_retired; i++)
        duet__req_free(e->retired[i]);
    e->n_retired = 0;
    for (uint32_t i = 0; i < e->n_reqs; i++) {
        e->reqs[i]->touched = false;
        e->reqs[i]->first_new = e->reqs[i]->n_ids;
    }
    memset(&e->step_out, 0, sizeof(e->step_out));
}

/* A decode step with lookahead slots and a draft speculates, unless it runs more sequences than
 * speculative.disable_by_batch_size: then the target decodes alone and the draft is only fed, so
 * its cache stays in step for when speculation resumes. */
static bool spec_step(duet_engine *e, const duet_sched_output *so)
{
    if (e->n_workers < 2 || so->num_lookahead_slots == 0 || so->num_prefill_groups > 0 ||
        so->num_seqs == 0)
        return false;
    if (e->disable_by_batch_size && so->num_seqs > e->disable_by_batch_size) {
        e->m.disabled_steps++;
        return false;
    }
    return true;
}

duet_status duet__engine_step(duet_engine *e, const duet_step_output **out)
{
    const duet_sched_output *so;
    duet_status st;

    step_begin(e);
    st = duet_scheduler_step(e->sched, duet__now_ns(), &so);
    if (st)
        return duet__engine_fail(e, st, "scheduler: %s", duet_scheduler_error(e->sched));
    e->step_out.num_seqs = so->num_seqs;
    e->step_out.num_batched_tokens = so->num_batched_tokens;
    e->step_out.num_preempted = so->num_preempted;
    e->step_out.is_prefill = so->is_prefill;
    e->m.preemptions += so->num_preempted;
    if (so->num_seqs || so->num_swap_in || so->num_swap_out || so->num_copy) {
        if (so->num_seqs)
            e->m.steps++;
        if (spec_step(e, so))
            st = duet__engine_spec_decode(e, so);
        else
            st = duet__engine_run_plain(e, so);
    }
    if (!st)
        st = abort_failed(e);
    if (!st)
        st = collect(e);
    *out = &e->step_out;
    return st;
}
