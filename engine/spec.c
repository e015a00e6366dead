/*
 * spec.c — the speculative decode step (DESIGN §7; vllm-semantics §4) and keeping the draft's
 * KV cache in step with the target's.
 *
 * Per sequence, with T tokens (the last one not yet in either cache), k lookahead slots and
 * D = draft_computed (tokens whose KV the draft cache holds, D <= T - 1):
 *
 *   propose   draft:  tokens[D .. T) at pos D, n_outputs 1, n_draft_steps k - 1, WANT_PROBS
 *                     → x1..xk at positions T..T+k-1 and their rows q1..qk; KV of
 *                       tokens[D..T) and x1..x(k-1) written
 *   score     target: [tokens[T-1], x1..xk] at pos T - 1, n_outputs k + 1, WANT_PROBS
 *                     → p1..p(k+1)
 *   verify    duet__verify (GREEDY below DUET_SAMPLING_EPS, else speculative.acceptance)
 *                     → a accepted drafts + 1 recovered or bonus token
 *   commit    duet_scheduler_update with the a + 1 tokens; D = T + min(a, k - 1) (after a full
 *             accept the draft lacks x_k: the next step feeds it x_k and the bonus token)
 *
 * A sequence of the batch without lookahead slots (its request has speculation disabled) runs
 * a plain decode on the target and only feeds the draft. In every other step (prefills, mixed
 * chunked-prefill steps) the draft follows the target: it is fed tokens[D .. num_computed +
 * num_new_tokens) without sampling. A sequence preempted by recompute comes back with
 * num_computed 0, which clamps D: its draft KV is recomputed too. Swapping moves both caches
 * with the same cache operations.
 */
#include "config.h"

#include "../sampling/sampling.h"
#include "engine-int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* What a sequence of a speculative step keeps across the updates (which invalidate the
 * scheduler's pointers). */
struct spec_seq {
    uint32_t len;  /* T: tokens before the step */
    uint32_t k;    /* proposals, 0 for a plain decode */
    uint32_t trow; /* first target row */
    uint32_t drow; /* first draft row */
};

struct spec_buf {
    struct spec_seq *ss;    /* [n_seqs] */
    duet_seq *dseqs;        /* [n_seqs] the draft's batch */
    int32_t *feed;          /* [rt] target tokens: last, x1..xk per sequence */
    int32_t *ttok, *dtok;   /* [rt], [rd] sampled tokens */
    float *tprobs, *dprobs; /* [rt][V], [rd][V] */
    float *tlp;             /* [rt] target token logprobs */
    duet_logprob *lps;      /* [rt][max_lp] */
    float *scratch;         /* [V] */
};

static uint32_t draft_start(const duet_engine *e, uint32_t i)
{
    const duet_seq *q = &e->sc.seqs[i];
    uint32_t d = e->sc.owner[i]->draft_computed;

    return d < q->pos ? d : q->pos;
}

duet_status duet__engine_draft_prefill(duet_engine *e, const duet_sched_output *so)
{
    duet_batch b;
    duet_batch_output o = {.struct_size = sizeof(o)};
    duet_seq *ds = calloc(so->num_seqs ? so->num_seqs : 1, sizeof(*ds));
    duet_status st;

    if (!ds)
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    for (uint32_t i = 0; i < so->num_seqs; i++) {
        const duet_seq *q = &e->sc.seqs[i];
        uint32_t d = draft_start(e, i);

        ds[i] = *q;
        ds[i].tokens = q->tokens - q->pos + d;
        ds[i].n_tokens = q->pos + q->n_tokens - d;
        ds[i].pos = d;
        ds[i].n_outputs = 0;
        ds[i].sampling.n_logprobs = 0; /* the draft's rows are never reported */
        ds[i].sampling.n_prompt_logprobs = 0;
        e->sc.owner[i]->draft_computed = q->pos + q->n_tokens;
    }
    duet__batch_init(so, ds, so->num_seqs, 0, 0, &b);
    st = duet__worker_run(e, 1, &b, &o);
    free(ds);
    return st;
}

static void spec_buf_free(struct spec_buf *sb)
{
    free(sb->ss);
    free(sb->dseqs);
    free(sb->feed);
    free(sb->ttok);
    free(sb->dtok);
    free(sb->tprobs);
    free(sb->dprobs);
    free(sb->tlp);
    free(sb->lps);
    free(sb->scratch);
}

static bool spec_buf_alloc(struct spec_buf *sb, uint32_t n, uint32_t rt, uint32_t rd, uint32_t v,
                           uint32_t max_lp)
{
    sb->ss = calloc(n, sizeof(*sb->ss));
    sb->dseqs = calloc(n, sizeof(*sb->dseqs));
    sb->feed = calloc(rt, sizeof(*sb->feed));
    sb->ttok = calloc(rt, sizeof(*sb->ttok));
    sb->dtok = calloc(rd + 1, sizeof(*sb->dtok));
    sb->tprobs = malloc((size_t)rt * v * sizeof(float));
    sb->dprobs = malloc(((size_t)rd + 1) * v * sizeof(float));
    sb->tlp = calloc(rt, sizeof(*sb->tlp));
    sb->lps = calloc((size_t)rt * (max_lp ? max_lp : 1), sizeof(*sb->lps));
    sb->scratch = malloc((size_t)v * sizeof(float));
    return sb->ss && sb->dseqs && sb->feed && sb->ttok && sb->dtok && sb->tprobs && sb->dprobs &&
           sb->tlp && sb->lps && sb->scratch;
}

/* Lookahead of each scheduled sequence, from its group. */
static void seq_lookahead(const duet_sched_output *so, struct spec_buf *sb)
{
    uint32_t n = 0;

    for (uint32_t g = 0; g < so->num_groups; g++)
        for (uint32_t i = 0; i < so->groups[g].num_seqs; i++)
            sb->ss[n++].k = so->groups[g].num_lookahead_slots;
}

/* Fills the draft's batch (proposals) and turns sc.seqs into the target's (scoring). */
static void build_batches(duet_engine *e, uint32_t n, struct spec_buf *sb, uint32_t *rt,
                          uint32_t *rd)
{
    *rt = 0;
    *rd = 0;
    for (uint32_t i = 0; i < n; i++) {
        duet_seq *q = &e->sc.seqs[i];
        struct spec_seq *s = &sb->ss[i];
        uint32_t d = draft_start(e, i);

        s->len = q->pos + 1;
        s->trow = *rt;
        s->drow = *rd;
        sb->dseqs[i] = *q;
        sb->dseqs[i].tokens = q->tokens - q->pos + d;
        sb->dseqs[i].n_tokens = s->len - d;
        sb->dseqs[i].pos = d;
        sb->dseqs[i].n_outputs = s->k ? 1 : 0;
        sb->dseqs[i].n_draft_steps = s->k ? s->k - 1 : 0;
        sb->dseqs[i].sampling.n_logprobs = 0;
        sb->dseqs[i].sampling.n_prompt_logprobs = 0;
        sb->feed[*rt] = q->tokens[0];
        q->tokens = &sb->feed[*rt];
        q->n_tokens = s->k + 1;
        q->n_outputs = s->k + 1;
        *rt += s->k + 1;
        *rd += s->k;
    }
}

static duet_status propose(duet_engine *e, const duet_sched_output *so, struct spec_buf *sb,
                           uint32_t rd)
{
    duet_batch b;
    duet_batch_output o = {
        .struct_size = sizeof(o), .n_rows = rd, .tokens = sb->dtok, .probs = sb->dprobs};

    duet__batch_init(so, sb->dseqs, so->num_seqs, DUET_BATCH_WANT_PROBS, 0, &b);
    return duet__worker_run(e, 1, &b, &o);
}

static duet_status score(duet_engine *e, const duet_sched_output *so, struct spec_buf *sb,
                         uint32_t rt, uint32_t max_lp)
{
    duet_batch b;
    duet_batch_output o = {.struct_size = sizeof(o),
                           .n_rows = rt,
                           .tokens = sb->ttok,
                           .probs = sb->tprobs,
                           .token_logprobs = max_lp ? sb->tlp : NULL,
                           .logprobs = max_lp ? sb->lps : NULL};
    uint32_t flags = DUET_BATCH_WANT_PROBS | (max_lp ? DUET_BATCH_WANT_LOGPROBS : 0);

    for (uint32_t i = 0; i < so->num_seqs; i++)
        memcpy(&sb->feed[sb->ss[i].trow + 1], &sb->dtok[sb->ss[i].drow],
               sb->ss[i].k * sizeof(int32_t));
    duet__batch_init(so, e->sc.seqs, so->num_seqs, flags, max_lp, &b);
    return duet__worker_run(e, 0, &b, &o);
}

/* Log-probability of each emitted token: the target's own when it sampled that token, else
 * looked up in the row's top list (NAN when absent). */
static void emitted_logprobs(const struct spec_buf *sb, uint32_t row, const int32_t *emitted,
                             uint32_t n, uint32_t max_lp, float *out)
{
    for (uint32_t j = 0; j < n; j++) {
        const duet_logprob *top = &sb->lps[(size_t)(row + j) * max_lp];
        out[j] = NAN;
        if (sb->ttok[row + j] == emitted[j])
            out[j] = sb->tlp[row + j];
        for (uint32_t t = 0; isnan(out[j]) && t < max_lp; t++)
            if (top[t].token == emitted[j])
                out[j] = top[t].logprob;
    }
}

/* Verifies sequence i's proposals; writes the emitted tokens and returns how many. */
static duet_status verify_one(duet_engine *e, uint32_t i, const struct spec_buf *sb,
                              int32_t *emitted, uint32_t *n_emitted)
{
    const struct spec_seq *s = &sb->ss[i];
    const duet_seq *q = &e->sc.seqs[i];
    uint32_t v = e->workers[0].info.vocab_size, a = 0;
    struct duet__accept_params ap = e->accept;
    struct duet__proposal pr = {.draft_tokens = &sb->dtok[s->drow],
                                .draft_probs = &sb->dprobs[(size_t)s->drow * v],
                                .target_probs = &sb->tprobs[(size_t)s->trow * v],
                                .k = s->k,
                                .seed = q->sampling.seed,
                                .position = s->len};
    char msg[256];

    if (s->k == 0) {
        emitted[0] = sb->ttok[s->trow];
        *n_emitted = 1;
        return DUET_STATUS_OK;
    }
    if (q->sampling.temperature < DUET_SAMPLING_EPS)
        ap.method = DUET__ACCEPT_GREEDY;
    if (duet__verify(&ap, &pr, v, sb->scratch, emitted, &a, msg, sizeof(msg)))
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "verify, sequence %llu: %s",
                                 (unsigned long long)q->seq_id, msg);
    *n_emitted = a + 1;
    e->m.proposed += s->k;
    e->m.accepted += a;
    return DUET_STATUS_OK;
}

static duet_status commit_all(duet_engine *e, uint32_t n, const struct spec_buf *sb,
                              uint32_t max_lp)
{
    int32_t emitted[64];
    float lp[64];
    duet_status st = DUET_STATUS_OK;

    for (uint32_t i = 0; !st && i < n; i++) {
        const struct spec_seq *s = &sb->ss[i];
        uint32_t m = 0;

        st = verify_one(e, i, sb, emitted, &m);
        if (st)
            break;
        if (max_lp)
            emitted_logprobs(sb, s->trow, emitted, m, max_lp, lp);
        e->sc.owner[i]->draft_computed =
            s->len + (s->k ? (m - 1 < s->k - 1 ? m - 1 : s->k - 1) : 0);
        st = duet__commit(e, i, emitted, m, max_lp ? lp : NULL,
                          max_lp ? &sb->lps[(size_t)s->trow * max_lp] : NULL, max_lp);
    }
    return st;
}

duet_status duet__engine_spec_decode(duet_engine *e, const duet_sched_output *so)
{
    struct spec_buf sb = {0};
    uint32_t n_rows, max_lp, rt, rd, n = so->num_seqs;
    duet_status st = duet__engine_batch_seqs(e, so, &n_rows, &max_lp);

    if (st)
        return st;
    if (e->k + 1 > 64)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "k %u too large", e->k);
    if (!spec_buf_alloc(&sb, n ? n : 1, n * (e->k + 1) + 1, n * e->k + 1,
                        e->workers[0].info.vocab_size, max_lp)) {
        spec_buf_free(&sb);
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    }
    seq_lookahead(so, &sb);
    build_batches(e, n, &sb, &rt, &rd);
    st = propose(e, so, &sb, rd);
    if (!st)
        st = score(e, so, &sb, rt, max_lp);
    if (!st)
        st = commit_all(e, n, &sb, max_lp);
    spec_buf_free(&sb);
    return st;
}
