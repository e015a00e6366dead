/*
 * commit.c — the end of a step's calls (engine-int.h has the map): what the workers produced goes
 * into the requests and the scheduler. Tokens and their log-probabilities (duet__commit, one
 * sequence; duet__commit_rows, every row of a plain batch), prompt log-probabilities, requests
 * failed by non-finite logits and their end after the step, and the scheduler's finished
 * requests retired with its final token lists. Calls only request.c and util.c.
 */
#include "build_config.h"

#include "engine-int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

duet_status duet__commit_rows(duet_engine *e, uint32_t n_seqs, uint32_t max_lp)
{
    uint32_t row = 0;
    duet_status st = DUET_STATUS_OK;

    for (uint32_t i = 0; !st && i < n_seqs; i++) {
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

/* Keeps the first prompt log-probabilities computed for each prompt position (a recomputed
 * prefill finds them there already). Fed position p predicts prompt token p + 1. */
void duet__commit_prompt_lp(duet_engine *e, uint32_t n_seqs, uint32_t max_lp)
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

duet_status duet__commit_failed(duet_engine *e)
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

duet_status duet__commit_retire(duet_engine *e, const duet_sched_result *res)
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
