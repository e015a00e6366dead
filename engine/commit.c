/*
 * commit.c — the end of a step's calls (engine-int.h has the map): what the workers produced goes
 * into the requests and the scheduler. Tokens and their log-probabilities (duet__commit, one
 * sequence; duet__commit_rows, every row of a plain batch), prompt log-probabilities, requests
 * failed by non-finite logits and their end after the step, and the scheduler's finished
 * requests retired with its final token lists. Calls only request.c and util.c.
 */
#include "build_config.h"

#include "../sampling/sampling.h"
#include "engine-int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

duet_status duet__commit(duet_engine *e, uint32_t i, const int32_t *tokens, uint32_t n,
                         const float *token_logprobs, const duet_logprob *logprobs, uint32_t stride)
{
    struct duet__req *r = e->sc.owner[i];
    struct duet__seqrec *s = e->sc.rec[i];
    uint64_t seq_id = e->sc.seqs[i].seq_id;
    uint32_t kept;
    duet_status st = duet_scheduler_update(e->sched, seq_id, tokens, n);

    if (st)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "scheduler update: %s",
                                 duet_scheduler_error(e->sched));
    /* The tokens after a stop or past max_tokens never reach the output, not even for the
     * steps until the rest of an n > 1 group finishes (retire_seq sets the final list). */
    if (duet_scheduler_seq_output_len(e->sched, seq_id, &kept) == DUET_STATUS_OK &&
        kept >= s->n_ids && kept - s->n_ids < n)
        n = kept - s->n_ids;
    st = duet__req_append(r, s, tokens, n, token_logprobs, logprobs, stride);
    if (st)
        return duet__engine_fail(e, st, "out of memory");
    r->touched = true;
    e->m.generated_tokens += n;
    e->m.decode_seq_steps++;
    return DUET_STATUS_OK;
}

/* The log-probability of token t in a row: the sampled token's, else from the row's top list
 * (which covers the whole vocabulary when the row forks a sampled group; batch.c). */
static float row_logprob(const struct duet__scratch *sc, uint32_t row, int32_t t, uint32_t max_lp)
{
    const duet_logprob *top = &sc->logprobs[(size_t)row * max_lp];

    if (sc->tokens[row] == t)
        return sc->token_logprobs[row];
    for (uint32_t j = 0; j < max_lp; j++)
        if (top[j].token == t)
            return top[j].logprob;
    return NAN;
}

/* The last prompt row of a group that forks into m sequences: the worker sampled sequence 0's
 * first token; sequence j's is drawn from the same probabilities with the draw sequence j would
 * make alone (seed + j, the same position), so a greedy group's sequences are all equal. Each
 * sequence gets its token and the row's log-probabilities; the children's draft caches hold
 * what the parent's does (the blocks are shared). */
static duet_status commit_fork(duet_engine *e, uint32_t i, uint32_t row, uint32_t m,
                               uint32_t max_lp)
{
    struct duet__scratch *sc = &e->sc;
    const duet_seq *q = &sc->seqs[i];
    struct duet__req *r = sc->owner[i];
    uint32_t vocab = e->workers[0].info.vocab_size, cap = sc->cap_fork;
    const float *probs = &sc->probs[(size_t)row * vocab];
    uint64_t pos = q->pos + q->n_tokens; /* the chosen token's (worker_kit.h) */
    duet_status st;

    if (!duet__grow((void **)&sc->fork_tok, &cap, m, sizeof(int32_t)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    cap = sc->cap_fork;
    if (!duet__grow((void **)&sc->fork_lp, &cap, m, sizeof(float)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    sc->cap_fork = cap;
    sc->fork_tok[0] = sc->tokens[row];
    for (uint32_t j = 1; j < m; j++) {
        double u = duet__rng_uniform(q->sampling.seed + j, pos, DUET_DRAW_SAMPLE);
        int32_t t = duet__sample_from_probs(probs, vocab, u);
        sc->fork_tok[j] = t < 0 ? sc->tokens[row] : t;
    }
    for (uint32_t j = 0; j < m; j++) {
        struct duet__seqrec *s = sc->rec[i] + j;
        sc->fork_lp[j] = max_lp ? row_logprob(sc, row, sc->fork_tok[j], max_lp) : NAN;
        st = duet__req_append(r, s, &sc->fork_tok[j], 1, max_lp ? &sc->fork_lp[j] : NULL,
                              max_lp ? &sc->logprobs[(size_t)row * max_lp] : NULL, max_lp);
        if (st)
            return duet__engine_fail(e, st, "out of memory");
        s->draft_computed = sc->rec[i]->draft_computed;
    }
    r->touched = true;
    e->m.generated_tokens += m;
    e->m.decode_seq_steps += m;
    if (duet_scheduler_update(e->sched, q->seq_id, sc->fork_tok, m))
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
        if (e->sc.samples[i] > 1)
            st = commit_fork(e, i, row, e->sc.samples[i], max_lp);
        else
            st = duet__commit(e, i, &e->sc.tokens[row], 1,
                              max_lp ? &e->sc.token_logprobs[row] : NULL,
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

/* Sets sequence s's tokens to the scheduler's final ones (it may have dropped what followed a
 * stop or the length limit, or never seen tokens the engine appended). */
static duet_status retire_seq(duet_engine *e, struct duet__req *r, struct duet__seqrec *s,
                              const duet_sched_seq_result *sr)
{
    uint32_t n = sr->num_output;

    if (n > s->n_ids && duet__req_append(r, s, sr->output + s->n_ids, n - s->n_ids, NULL, NULL, 0))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    if (n < s->n_ids)
        e->m.generated_tokens -= s->n_ids - n;
    if (n)
        memcpy(s->ids, sr->output, n * sizeof(int32_t));
    s->n_ids = n;
    if (s->first_new > n)
        s->first_new = n;
    return DUET_STATUS_OK;
}

duet_status duet__commit_retire(duet_engine *e, const duet_sched_result *res)
{
    uint32_t idx;
    struct duet__req *r = duet__engine_find(e, res->request_id, &idx);
    uint32_t cap = e->cap_retired;

    if (!r)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "finished request %llu unknown",
                                 (unsigned long long)res->request_id);
    if (!duet__grow((void **)&e->retired, &cap, e->n_retired + 1, sizeof(*e->retired)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    e->cap_retired = cap;
    r->finish = r->error ? DUET_FINISH_ERROR : finish_of(res->finish);
    for (uint32_t i = 0; i < r->n; i++)
        r->seqs[i].finish = r->finish;
    for (uint32_t i = 0; i < res->num_seqs; i++) {
        const duet_sched_seq_result *sr = &res->seqs[i];
        uint64_t j = r->based ? sr->seq_id - r->seq_base : i;
        duet_status st;

        if (j >= r->n) /* a sequence never scheduled: nothing to report */
            continue;
        st = retire_seq(e, r, &r->seqs[j], sr);
        if (st)
            return st;
        if (!r->error && sr->finish != DUET_SCHED_FINISH_NONE)
            r->seqs[j].finish = finish_of(sr->finish);
    }
    r->num_preemptions = res->num_preemptions;
    memmove(&e->reqs[idx], &e->reqs[idx + 1], (e->n_reqs - idx - 1) * sizeof(*e->reqs));
    e->n_reqs--;
    e->retired[e->n_retired++] = r;
    return DUET_STATUS_OK;
}
