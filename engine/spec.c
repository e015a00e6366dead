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
 *
 * With overlap (e->dt, overlap.c) the batch is split in two halves and the draft proposes for
 * the second while the target scores the first (run_overlapped); verify and commit are the same.
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

/*
 * The engine's speculative state. Buffers grow to the largest step seen and are never shrunk,
 * so a steady-state step allocates nothing. Adaptive k (docs/engine.md) keeps, per sequence of
 * a step: alpha, an exponential moving average of the step's acceptance rate; draft_tok_s, of
 * the draft's seconds per proposed token; verify_at[k], of the target's scoring seconds with k
 * proposals (0 until k was tried).
 */
struct duet__spec {
    struct spec_seq *ss; /* [cap_seqs] */
    duet_seq *dseqs;     /* [cap_seqs] the draft's batch */
    uint32_t cap_seqs;
    int32_t *feed, *ttok; /* [cap_rt] target tokens: last, x1..xk per sequence; sampled */
    float *tlp;           /* [cap_rt] target token logprobs */
    uint32_t cap_rt;
    duet_logprob *lps; /* [cap_lps] = [rt][max_lp] */
    uint32_t cap_lps;
    int32_t *dtok; /* [cap_rd] draft tokens */
    uint32_t cap_rd;
    float *tprobs, *dprobs; /* [cap_tp] = [rt][V], [cap_dp] = [rd][V] */
    size_t cap_tp, cap_dp;
    float *scratch; /* [V] */
    uint32_t vocab, k_max;
    bool adaptive;
    uint32_t k_next;                            /* proposals for the next step */
    double alpha;                               /* EMA acceptance rate; < 0 before any */
    double draft_tok_s;                         /* EMA draft seconds per proposed token */
    double verify_at[DUET_MAX_SPEC_TOKENS + 1]; /* EMA scoring seconds at k; 0 unknown */
    uint64_t decisions;                         /* adaptive choices made */
};

/* Weight of a new measurement in the moving averages. */
#define EMA_W 0.1

struct duet__spec *duet__spec_create(uint32_t k_max, uint32_t vocab, bool adaptive)
{
    struct duet__spec *sp = calloc(1, sizeof(*sp));

    if (!sp)
        return NULL;
    sp->scratch = malloc((size_t)vocab * sizeof(float));
    if (!sp->scratch) {
        free(sp);
        return NULL;
    }
    sp->vocab = vocab;
    sp->k_max = k_max;
    sp->k_next = k_max;
    sp->adaptive = adaptive;
    sp->alpha = -1.0;
    return sp;
}

void duet__spec_destroy(struct duet__spec *sp)
{
    if (!sp)
        return;
    free(sp->ss);
    free(sp->dseqs);
    free(sp->feed);
    free(sp->ttok);
    free(sp->tlp);
    free(sp->lps);
    free(sp->dtok);
    free(sp->tprobs);
    free(sp->dprobs);
    free(sp->scratch);
    free(sp);
}

static bool grow_floats(float **p, size_t *cap, size_t want)
{
    float *q;

    if (want <= *cap)
        return true;
    q = realloc(*p, want * sizeof(float)); /* exact: the engine reserves the largest at create */
    if (!q)
        return false;
    *p = q;
    *cap = want;
    return true;
}

/* Room for n sequences, rt target rows, rd draft rows, max_lp log-probabilities per row. */
static bool spec_reserve(struct duet__spec *sp, uint32_t n, uint32_t rt, uint32_t rd,
                         uint32_t max_lp)
{
    uint32_t c = sp->cap_seqs, r = sp->cap_rt;

    if (!duet__grow((void **)&sp->ss, &c, n, sizeof(*sp->ss)))
        return false;
    c = sp->cap_seqs;
    if (!duet__grow((void **)&sp->dseqs, &c, n, sizeof(*sp->dseqs)))
        return false;
    sp->cap_seqs = c;
    if (!duet__grow((void **)&sp->feed, &r, rt, sizeof(*sp->feed)))
        return false;
    r = sp->cap_rt;
    if (!duet__grow((void **)&sp->ttok, &r, rt, sizeof(*sp->ttok)))
        return false;
    r = sp->cap_rt;
    if (!duet__grow((void **)&sp->tlp, &r, rt, sizeof(*sp->tlp)))
        return false;
    sp->cap_rt = r;
    return duet__grow((void **)&sp->lps, &sp->cap_lps, rt * (max_lp ? max_lp : 1),
                      sizeof(*sp->lps)) &&
           duet__grow((void **)&sp->dtok, &sp->cap_rd, rd, sizeof(*sp->dtok)) &&
           grow_floats(&sp->tprobs, &sp->cap_tp, (size_t)rt * sp->vocab) &&
           grow_floats(&sp->dprobs, &sp->cap_dp, (size_t)rd * sp->vocab);
}

bool duet__spec_reserve_max(struct duet__spec *sp, uint32_t max_seqs)
{
    uint64_t rt = (uint64_t)max_seqs * (sp->k_max + 1) + 1, rd = (uint64_t)max_seqs * sp->k_max + 1;

    return rt < UINT32_MAX && spec_reserve(sp, max_seqs, (uint32_t)rt, (uint32_t)rd, 0);
}

static uint32_t draft_start(const duet_engine *e, uint32_t i)
{
    const duet_seq *q = &e->sc.seqs[i];
    uint32_t d = e->sc.owner[i]->draft_computed;

    return d < q->pos ? d : q->pos;
}

duet_status duet__spec_draft_prefill(duet_engine *e, const duet_sched_output *so)
{
    struct duet__spec *sp = e->spec;
    duet_batch b;
    duet_batch_output o = {.struct_size = sizeof(o)};
    duet_seq *ds;

    if (!spec_reserve(sp, so->num_seqs ? so->num_seqs : 1, 1, 1, 0))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    ds = sp->dseqs;
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
    return duet__worker_run(e, 1, &b, &o);
}

/* Lookahead of each scheduled sequence, from its group, capped at the step's k and at the
 * positions left below max_model_len (the least max_position of both models): scoring k
 * proposals feeds the target positions T - 1 .. T + k - 1, so k <= max_model_len - T. A sequence
 * at the limit gets k = 0 (a plain decode, the last token it may produce). */
static void seq_lookahead(const duet_engine *e, const duet_sched_output *so, struct duet__spec *sp,
                          uint32_t k)
{
    uint32_t n = 0;

    for (uint32_t g = 0; g < so->num_groups; g++)
        for (uint32_t i = 0; i < so->groups[g].num_seqs; i++, n++) {
            uint32_t la = so->groups[g].num_lookahead_slots, len = e->sc.seqs[n].pos + 1;
            uint32_t room = len < e->max_model_len ? e->max_model_len - len : 0;

            la = la < k ? la : k;
            sp->ss[n].k = la < room ? la : room;
        }
}

/* Fills the draft's batch (proposals) and turns sc.seqs into the target's (scoring). */
static void build_batches(duet_engine *e, uint32_t n, struct duet__spec *sb, uint32_t *rt,
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

/* The draft's batch and output for sequences [lo, hi) (lo < hi; their rows are contiguous and
 * end at rd_hi), with the step's cache operations when so is not NULL. */
static void propose_init(const duet_sched_output *so, struct duet__spec *sb, uint32_t lo,
                         uint32_t hi, uint32_t rd_hi, duet_batch *b, duet_batch_output *o)
{
    uint32_t r0 = sb->ss[lo].drow;

    *o = (duet_batch_output){.struct_size = sizeof(*o),
                             .n_rows = rd_hi - r0,
                             .tokens = &sb->dtok[r0],
                             .probs = &sb->dprobs[(size_t)r0 * sb->vocab]};
    duet__batch_init(so, &sb->dseqs[lo], hi - lo, DUET_BATCH_WANT_PROBS, 0, b);
}

/* The target's batch and output for sequences [lo, hi) (rows up to rt_hi), their proposals
 * copied into the fed tokens first; cache operations as for propose_init. */
static void score_init(duet_engine *e, const duet_sched_output *so, struct duet__spec *sb,
                       uint32_t lo, uint32_t hi, uint32_t rt_hi, uint32_t max_lp, duet_batch *b,
                       duet_batch_output *o)
{
    uint32_t r0 = sb->ss[lo].trow;
    uint32_t flags = DUET_BATCH_WANT_PROBS | (max_lp ? DUET_BATCH_WANT_LOGPROBS : 0);

    *o = (duet_batch_output){.struct_size = sizeof(*o),
                             .n_rows = rt_hi - r0,
                             .tokens = &sb->ttok[r0],
                             .probs = &sb->tprobs[(size_t)r0 * sb->vocab],
                             .token_logprobs = max_lp ? &sb->tlp[r0] : NULL,
                             .logprobs = max_lp ? &sb->lps[(size_t)r0 * max_lp] : NULL};
    for (uint32_t i = lo; i < hi; i++) {
        int32_t *f = &sb->feed[sb->ss[i].trow + 1];

        memcpy(f, &sb->dtok[sb->ss[i].drow], sb->ss[i].k * sizeof(int32_t));
        for (uint32_t j = 0; j < sb->ss[i].k; j++)
            f[j] = f[j] < 0 ? 0 : f[j]; /* a failed draft row: scored, then dropped */
    }
    duet__batch_init(so, &e->sc.seqs[lo], hi - lo, flags, max_lp, b);
}

/* Propose, then score, for the whole batch. */
static duet_status run_serial(duet_engine *e, const duet_sched_output *so, struct duet__spec *sb,
                              uint32_t n, uint32_t rt, uint32_t rd, uint32_t max_lp)
{
    duet_batch b;
    duet_batch_output o;
    duet_status st;

    propose_init(so, sb, 0, n, rd, &b, &o);
    st = duet__worker_run(e, 1, &b, &o);
    if (st)
        return st;
    score_init(e, so, sb, 0, n, rt, max_lp, &b, &o);
    return duet__worker_run(e, 0, &b, &o);
}

/*
 * The overlap (DESIGN §7.5): halves A = [0, h) and B = [h, n), each sequence's work independent
 * of the others' (own block table, own draws), so the order changes no token:
 *
 *     draft:   propose(A) │ propose(B)  │
 *     target:             │ score(A)    │ score(B)
 *
 * The step's cache operations go with the first call on each worker. B is empty with one
 * sequence: the step is then serial.
 */
static duet_status run_overlapped(duet_engine *e, const duet_sched_output *so,
                                  struct duet__spec *sb, uint32_t n, uint32_t rt, uint32_t rd,
                                  uint32_t max_lp)
{
    uint32_t h = (n + 1) / 2;
    uint32_t rd_a = h < n ? sb->ss[h].drow : rd, rt_a = h < n ? sb->ss[h].trow : rt;
    duet_batch pa, pb, sa, sbt;
    duet_batch_output pao, pbo, sao, sbo;
    uint64_t t0, t1;
    duet_status st, st_b = DUET_STATUS_OK;

    propose_init(so, sb, 0, h, rd_a, &pa, &pao);
    st = duet__worker_run(e, 1, &pa, &pao);
    if (st)
        return st;
    if (h < n) {
        propose_init(NULL, sb, h, n, rd, &pb, &pbo);
        duet__draft_post(e, &pb, &pbo);
    }
    score_init(e, so, sb, 0, h, rt_a, max_lp, &sa, &sao);
    t0 = duet__now_ns();
    st = duet__worker_run(e, 0, &sa, &sao);
    t1 = duet__now_ns();
    if (h < n) {
        /* Always waited for: B's buffers must be idle before anything returns. */
        st_b = duet__draft_wait(e, t0, t1);
        e->m.overlap_steps++;
    }
    if (st || st_b || h == n)
        return st ? st : st_b;
    score_init(e, NULL, sb, h, n, rt, max_lp, &sbt, &sbo);
    return duet__worker_run(e, 0, &sbt, &sbo);
}

/* Log-probability of each emitted token: the target's own when it sampled that token, else
 * looked up in the row's top list (NAN when absent). */
static void emitted_logprobs(const struct duet__spec *sb, uint32_t row, const int32_t *emitted,
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
static duet_status verify_one(duet_engine *e, uint32_t i, const struct duet__spec *sb,
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
    e->m.emitted += a + 1;
    e->m.verified++;
    for (uint32_t j = 0; j < s->k && j < DUET_MAX_SPEC_TOKENS; j++) {
        e->m.proposed_at[j]++;
        e->m.accepted_at[j] += j < a;
    }
    e->sc.owner[i]->proposed += s->k;
    e->sc.owner[i]->accepted += a;
    return DUET_STATUS_OK;
}

/* Whether a row of sequence i was non-finite (the draft's first): then its request fails. */
static bool nonfinite_rows(duet_engine *e, uint32_t i, const struct duet__spec *sb)
{
    const struct spec_seq *s = &sb->ss[i];

    for (uint32_t j = 0; j < s->k; j++)
        if (sb->dtok[s->drow + j] == DUET_TOKEN_NONFINITE) {
            duet__fail_nonfinite(e, i, 1, s->len - 1 + j);
            return true;
        }
    for (uint32_t j = 0; j <= s->k; j++)
        if (sb->ttok[s->trow + j] == DUET_TOKEN_NONFINITE) {
            duet__fail_nonfinite(e, i, 0, s->len - 1 + j);
            return true;
        }
    return false;
}

static duet_status commit_all(duet_engine *e, uint32_t n, const struct duet__spec *sb,
                              uint32_t max_lp)
{
    int32_t emitted[64];
    float lp[64];
    duet_status st = DUET_STATUS_OK;

    for (uint32_t i = 0; !st && i < n; i++) {
        const struct spec_seq *s = &sb->ss[i];
        uint32_t m = 0;

        if (nonfinite_rows(e, i, sb))
            continue;
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

/* ---- adaptive k ---------------------------------------------------------------------------- */

/* E(k) = 1 + a + ... + a^k: expected tokens a sequence gains from k proposals, each accepted
 * with probability a independently. */
static double expected_tokens(double a, uint32_t k)
{
    return a >= 1.0 - 1e-9 ? (double)k + 1 : (1.0 - pow(a, (double)k + 1)) / (1.0 - a);
}

/* Scoring seconds at k: measured, else interpolated linearly between the nearest measured k on
 * each side, else extrapolated from the nearest one with the slope of the two nearest (never
 * below flat), else flat from the only one. */
static double verify_cost(const struct duet__spec *sp, uint32_t k)
{
    uint32_t lo = 0, hi = 0, lo2 = 0, hi2 = 0;

    if (sp->verify_at[k] > 0)
        return sp->verify_at[k];
    for (uint32_t j = k - 1; j >= 1 && !lo2; j--)
        if (sp->verify_at[j] > 0)
            *(lo ? &lo2 : &lo) = j;
    for (uint32_t j = k + 1; j <= sp->k_max && !hi2; j++)
        if (sp->verify_at[j] > 0)
            *(hi ? &hi2 : &hi) = j;
    if (lo && hi)
        return sp->verify_at[lo] +
               (sp->verify_at[hi] - sp->verify_at[lo]) * (double)(k - lo) / (double)(hi - lo);
    if (lo && lo2)
        return sp->verify_at[lo] +
               fmax(0.0, (sp->verify_at[lo] - sp->verify_at[lo2]) / (double)(lo - lo2)) *
                   (double)(k - lo);
    if (hi && hi2)
        return fmax(sp->verify_at[hi] * 1e-3,
                    sp->verify_at[hi] -
                        fmax(0.0, (sp->verify_at[hi2] - sp->verify_at[hi]) / (double)(hi2 - hi)) *
                            (double)(hi - k));
    return lo ? sp->verify_at[lo] : sp->verify_at[hi];
}

/* argmax over k in 1..k_max of E(k) / (k draft_tok_s + verify_cost(k)); every 16th choice tries
 * a neighbour of the best instead, so that the costs next to it stay measured. */
static uint32_t choose_k(struct duet__spec *sp)
{
    uint32_t best = sp->k_max;
    double best_rate = -1.0;

    for (uint32_t k = 1; k <= sp->k_max; k++) {
        double rate = expected_tokens(sp->alpha, k) / (k * sp->draft_tok_s + verify_cost(sp, k));
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    if (++sp->decisions % 16 == 0) {
        uint32_t nb = (sp->decisions / 16) % 2 ? best + 1 : best - 1;
        if (nb >= 1 && nb <= sp->k_max)
            best = nb;
    }
    return best;
}

static double ema(double avg, double x)
{
    return avg <= 0 ? x : avg + EMA_W * (x - avg);
}

/* Folds a step's measurements (n sequences that proposed k each; p proposed, a accepted; the
 * draft's and the target's seconds) into the averages, and picks the next k. */
static void adapt(struct duet__spec *sp, uint32_t n, uint32_t k, uint64_t p, uint64_t a,
                  double draft_s, double verify_s)
{
    if (!sp->adaptive || n == 0 || k == 0 || p == 0)
        return;
    sp->alpha = sp->alpha < 0 ? (double)a / (double)p
                              : sp->alpha + EMA_W * ((double)a / (double)p - sp->alpha);
    sp->draft_tok_s = ema(sp->draft_tok_s, draft_s / ((double)n * k));
    sp->verify_at[k] = ema(sp->verify_at[k], verify_s / n);
    if (sp->verify_at[k] <= 0)
        sp->verify_at[k] = 1e-12; /* a clock too coarse to see it: measured, and cheap */
    sp->k_next = choose_k(sp);
}

/* ---- the step ------------------------------------------------------------------------------- */

duet_status duet__spec_decode(duet_engine *e, const duet_sched_output *so)
{
    struct duet__spec *sb = e->spec;
    uint32_t n_rows, max_lp, rt, rd, n = so->num_seqs, k = sb->k_next, n_spec = 0;
    uint64_t p0 = e->m.proposed, a0 = e->m.accepted;
    double d0 = e->m.draft_s, t0 = e->m.execute_s;
    duet_status st = duet__batch_seqs(e, so, &n_rows, &max_lp);

    if (st)
        return st;
    if (k + 1 > 64 || k > DUET_MAX_SPEC_TOKENS)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "k %u too large", k);
    if (!spec_reserve(sb, n ? n : 1, n * (k + 1) + 1, n * k + 1, max_lp))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    seq_lookahead(e, so, sb, k);
    build_batches(e, n, sb, &rt, &rd);
    for (uint32_t i = 0; i < n; i++)
        n_spec += sb->ss[i].k > 0;
    e->m.spec_steps++;
    e->m.last_k = k;
    st = e->dt ? run_overlapped(e, so, sb, n, rt, rd, max_lp)
               : run_serial(e, so, sb, n, rt, rd, max_lp);
    e->m.verify_s += e->m.execute_s - t0;
    if (!st)
        st = commit_all(e, n, sb, max_lp);
    if (!st)
        adapt(sb, n_spec, k, e->m.proposed - p0, e->m.accepted - a0, e->m.draft_s - d0,
              e->m.execute_s - t0);
    return st;
}
