/*
 * batch.c — the per-step scratch (e->sc) and the batches built in it from the scheduler's
 * output (docs/engine.md, "One step"). A sequence feeds tokens[num_computed .. num_computed +
 * num_new_tokens) at pos num_computed and samples one row when the scheduler expects tokens from
 * it (the last prompt chunk, a decode). spec.c turns the same sequences into its proposal and
 * score batches. Calls only request.c and util.c.
 */
#include "build_config.h"

#include "../sampling/sampling.h"
#include "engine-int.h"

#include <math.h>
#include <stdlib.h>

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
    c = sc->cap_seqs;
    if (!duet__grow((void **)&sc->rec, &c, n_seqs, sizeof(*sc->rec)))
        return false;
    c = sc->cap_seqs;
    if (!duet__grow((void **)&sc->samples, &c, n_seqs, sizeof(*sc->samples)))
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

void duet__scratch_free(struct duet__scratch *sc)
{
    free(sc->seqs);
    free(sc->owner);
    free(sc->rec);
    free(sc->samples);
    free(sc->probs);
    free(sc->fork_tok);
    free(sc->fork_lp);
    free(sc->tokens);
    free(sc->token_logprobs);
    free(sc->prompt_top);
    free(sc->prompt_next);
    free(sc->logprobs);
    free(sc->out);
    free(sc->pens);
    free(sc->seen);
    free(sc->keys);
}

/* Scheduled sequence s (index idx in its request) of group gr as the workers see it: the tokens
 * it is fed this step at pos num_computed, one output row when the scheduler expects a token from
 * it, prompt log-probabilities only while it prefills. Sequence idx draws with seed + idx (vLLM's
 * child requests), so sequence 0 draws as a request with n = 1. A group that forks samples its
 * first n tokens from one row: commit.c draws the others from its probabilities, looking their
 * log-probabilities up in a top list of the whole vocabulary when sampled tokens need them. */
static duet_seq seq_of(const duet_sched_group *gr, const duet_sched_seq *s, uint32_t idx,
                       uint32_t vocab)
{
    duet_seq q = {.seq_id = s->seq_id,
                  .tokens = s->tokens + s->num_computed,
                  .n_tokens = s->num_new_tokens,
                  .pos = s->num_computed,
                  .block_table = s->block_table,
                  .n_blocks = s->num_blocks,
                  .n_outputs = s->num_samples > 0 ? 1 : 0,
                  .sampling = *gr->sampling};

    q.sampling.seed += idx;
    if (!s->is_prefill)
        q.sampling.n_prompt_logprobs = 0;
    if (s->num_samples > 1 && q.sampling.n_logprobs && q.sampling.temperature >= DUET_SAMPLING_EPS)
        q.sampling.n_logprobs = vocab;
    return q;
}

/* The record of scheduled sequence s of r: the scheduler numbers a request's sequences from the
 * prompt's id up, so the first one scheduled is sequence 0. */
static struct duet__seqrec *rec_of(duet_engine *e, struct duet__req *r, const duet_sched_seq *s,
                                   uint32_t *idx)
{
    if (!r->based) {
        r->seq_base = s->seq_id;
        r->based = true;
    }
    if (s->seq_id < r->seq_base || s->seq_id - r->seq_base >= r->n) {
        duet__engine_fail(e, DUET_STATUS_INTERNAL, "request %llu: sequence %llu out of range",
                          (unsigned long long)r->id, (unsigned long long)s->seq_id);
        return NULL;
    }
    *idx = (uint32_t)(s->seq_id - r->seq_base);
    return &r->seqs[*idx];
}

/* ---- penalties (docs/engine.md, "Penalties") ----------------------------------------------- */

static int cmp_u64(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;

    return (a > b) - (a < b);
}

/* The seen list of a sequence holding tokens[n] of which the first n_prompt are the prompt:
 * every distinct token, sorted, with its count among the generated ones. keys has room for n;
 * returns the entries written to seen. */
static uint32_t seen_of(const int32_t *tokens, uint32_t n, uint32_t n_prompt, uint64_t *keys,
                        duet_token_count *seen)
{
    uint32_t m = 0;

    for (uint32_t i = 0; i < n; i++)
        keys[i] = (uint64_t)(uint32_t)tokens[i] << 1 | (i >= n_prompt);
    qsort(keys, n, sizeof(*keys), cmp_u64);
    for (uint32_t i = 0; i < n; i++) {
        int32_t t = (int32_t)(keys[i] >> 1);

        if (!m || seen[m - 1].token != t)
            seen[m++] = (duet_token_count){.token = t, .count = 0};
        seen[m - 1].count += (uint32_t)(keys[i] & 1);
    }
    return m;
}

/* Points every sampling sequence of a penalised request at its penalties: the request's
 * settings, and with repetition / frequency / presence the seen list of all its tokens (the
 * fed position of its first output row is its last token: a decode, the last prompt chunk, and
 * spec.c's proposal and score batches, which copy these seqs). The sort costs O(L log L) per
 * sequence and step, only for requests that count tokens. */
static duet_status batch_penalties(duet_engine *e, const duet_sched_output *so)
{
    struct duet__scratch *sc = &e->sc;
    uint32_t n = 0, n_pen = 0, seen_total = 0, max_len = 0, at = 0;

    for (uint32_t g = 0; g < so->num_groups; g++)
        for (uint32_t i = 0; i < so->groups[g].num_seqs; i++, n++) {
            const duet_sched_seq *s = &so->groups[g].seqs[i];

            if (!sc->owner[n]->penalized || !sc->seqs[n].n_outputs)
                continue;
            n_pen++;
            if (sc->owner[n]->count_seen) {
                seen_total += s->num_tokens;
                max_len = s->num_tokens > max_len ? s->num_tokens : max_len;
            }
        }
    if (!n_pen)
        return DUET_STATUS_OK;
    if (!duet__grow((void **)&sc->pens, &sc->cap_pens, n_pen, sizeof(*sc->pens)) ||
        !duet__grow((void **)&sc->seen, &sc->cap_seen, seen_total ? seen_total : 1,
                    sizeof(*sc->seen)) ||
        !duet__grow((void **)&sc->keys, &sc->cap_keys, max_len ? max_len : 1, sizeof(*sc->keys)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    n = n_pen = 0;
    for (uint32_t g = 0; g < so->num_groups; g++)
        for (uint32_t i = 0; i < so->groups[g].num_seqs; i++, n++) {
            const duet_sched_seq *s = &so->groups[g].seqs[i];
            struct duet__req *r = sc->owner[n];
            duet_penalties *pen = &sc->pens[n_pen++];

            if (!r->penalized || !sc->seqs[n].n_outputs) {
                n_pen--;
                continue;
            }
            *pen = r->pen;
            if (r->count_seen) {
                pen->seen = sc->seen + at;
                pen->n_seen =
                    seen_of(s->tokens, s->num_tokens, r->n_prompt, sc->keys, sc->seen + at);
                at += pen->n_seen;
            }
            sc->seqs[n].penalties = pen;
        }
    return DUET_STATUS_OK;
}

duet_status duet__batch_seqs(duet_engine *e, const duet_sched_output *so, uint32_t *n_rows,
                             uint32_t *max_logprobs)
{
    uint32_t n = 0, vocab = e->workers[0].info.vocab_size;

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
            uint32_t idx = 0;

            e->sc.rec[n] = rec_of(e, r, s, &idx);
            if (!e->sc.rec[n])
                return DUET_STATUS_INTERNAL;
            *q = seq_of(gr, s, idx, vocab);
            e->sc.samples[n] = s->num_samples;
            e->sc.owner[n++] = r;
            *n_rows += q->n_outputs;
            if (q->sampling.n_logprobs > *max_logprobs)
                *max_logprobs = q->sampling.n_logprobs;
            if (q->sampling.n_prompt_logprobs > *max_logprobs)
                *max_logprobs = q->sampling.n_prompt_logprobs;
            if (s->is_prefill)
                e->m.prompt_tokens += s->num_new_tokens;
        }
    }
    if (!scratch_reserve(&e->sc, n, *n_rows, *max_logprobs))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    return batch_penalties(e, so);
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

/* Probability rows for every output row when a group of the batch forks (commit.c draws its
 * other sequences' first tokens from them); false when none forks. */
static duet_status probs_reserve(duet_engine *e, uint32_t n_seqs, uint32_t n_rows, bool *want)
{
    struct duet__scratch *sc = &e->sc;
    size_t need = (size_t)n_rows * e->workers[0].info.vocab_size;
    float *p;

    *want = false;
    for (uint32_t i = 0; i < n_seqs; i++)
        *want = *want || sc->samples[i] > 1;
    if (!*want || need <= sc->cap_probs)
        return DUET_STATUS_OK;
    p = realloc(sc->probs, need * sizeof(float));
    if (!p)
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    sc->probs = p;
    sc->cap_probs = need;
    return DUET_STATUS_OK;
}

duet_status duet__batch_plain(duet_engine *e, const duet_sched_output *so, duet_batch *b,
                              duet_batch_output *o)
{
    uint32_t n_rows, max_lp;
    bool want_prompt = false, want_probs = false;
    duet_status st = duet__batch_seqs(e, so, &n_rows, &max_lp);

    if (!st)
        st = prompt_lp_reserve(e, so->num_seqs, max_lp, &want_prompt);
    if (!st)
        st = probs_reserve(e, so->num_seqs, n_rows, &want_probs);
    if (st)
        return st;
    duet__batch_init(so, e->sc.seqs, so->num_seqs,
                     (max_lp ? DUET_BATCH_WANT_LOGPROBS : 0) |
                         (want_prompt ? DUET_BATCH_WANT_PROMPT_LOGPROBS : 0) |
                         (want_probs ? DUET_BATCH_WANT_PROBS : 0),
                     max_lp, b);
    *o = (duet_batch_output){.struct_size = sizeof(*o),
                             .n_rows = n_rows,
                             .tokens = e->sc.tokens,
                             .token_logprobs = max_lp ? e->sc.token_logprobs : NULL,
                             .logprobs = max_lp ? e->sc.logprobs : NULL,
                             .prompt_logprobs = want_prompt ? e->sc.prompt_top : NULL,
                             .prompt_next_logprobs = want_prompt ? e->sc.prompt_next : NULL,
                             .probs = want_probs ? e->sc.probs : NULL};
    return DUET_STATUS_OK;
}
