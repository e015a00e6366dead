/*
 * spec.c — speculation (DESIGN §7; vllm-semantics §4), a bounded part below step.c: the
 * speculative state, the draft's prefill that keeps its KV cache in step with the target's, the
 * lookahead k of each sequence, the proposal and score batches, and the speculative decode step,
 * which calls down into batch.c, run.c (the worker calls), verify.c (verify and commit) and
 * adapt.c (the next k). Nothing below calls back into it.
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
 * With overlap (e->dt) the batch is split in two halves (split_parts) and the draft proposes for
 * the second while the target scores the first (run.c); verify and commit are the same.
 */
#include "build_config.h"

#include "engine-int.h"

#include <stdlib.h>

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
    duet__adapt_init(&sp->ad, k_max, adaptive);
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
    uint32_t d = e->sc.rec[i]->draft_computed;

    return d < q->pos ? d : q->pos;
}

/* The draft's sequence for scheduled sequence i: the tokens its cache lacks up to end, no output
 * rows, no log-probabilities (the draft's rows are never reported). */
static duet_seq draft_seq(const duet_engine *e, uint32_t i, uint32_t end)
{
    const duet_seq *q = &e->sc.seqs[i];
    uint32_t d = draft_start(e, i);
    duet_seq ds = *q;

    ds.tokens = q->tokens - q->pos + d;
    ds.n_tokens = end - d;
    ds.pos = d;
    ds.n_outputs = 0;
    ds.sampling.n_logprobs = 0;
    ds.sampling.n_prompt_logprobs = 0;
    return ds;
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

        ds[i] = draft_seq(e, i, q->pos + q->n_tokens);
        e->sc.rec[i]->draft_computed = q->pos + q->n_tokens;
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

/* Fills the draft's batch (proposals) and turns sc.seqs into the target's (scoring); returns
 * how many sequences propose. Each sequence's rows follow the previous one's. */
static uint32_t build_batches(duet_engine *e, uint32_t n, struct duet__spec *sb)
{
    uint32_t rt = 0, rd = 0, n_spec = 0;

    for (uint32_t i = 0; i < n; i++) {
        duet_seq *q = &e->sc.seqs[i];
        struct duet__spec_seq *s = &sb->ss[i];

        s->len = q->pos + 1;
        s->trow = rt;
        s->drow = rd;
        sb->dseqs[i] = draft_seq(e, i, s->len);
        sb->dseqs[i].n_outputs = s->k ? 1 : 0;
        sb->dseqs[i].n_draft_steps = s->k ? s->k - 1 : 0;
        sb->feed[rt] = q->tokens[0];
        q->tokens = &sb->feed[rt];
        q->n_tokens = s->k + 1;
        q->n_outputs = s->k + 1;
        rt += s->k + 1;
        rd += s->k;
        n_spec += s->k > 0;
    }
    return n_spec;
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

/* The target's batch and output for sequences [lo, hi) (rows up to rt_hi; run.c copies the
 * proposals into the fed tokens before it runs); cache operations as for propose_init. */
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
    duet__batch_init(so, &e->sc.seqs[lo], hi - lo, flags, max_lp, b);
}

/* Part [lo, hi) of the step (lo < hi), with the step's cache operations when so is not NULL. */
static void part_init(duet_engine *e, const duet_sched_output *so, uint32_t lo, uint32_t hi,
                      uint32_t max_lp, struct duet__spec_part *p)
{
    struct duet__spec *sb = e->spec;
    const struct duet__spec_seq *last = &sb->ss[hi - 1];

    p->lo = lo;
    p->hi = hi;
    propose_init(so, sb, lo, hi, last->drow + last->k, &p->propose, &p->propose_out);
    score_init(e, so, sb, lo, hi, last->trow + last->k + 1, max_lp, &p->score, &p->score_out);
}

/* The step's parts (n >= 1 sequences): the whole batch, or with the draft thread the halves
 * A = [0, ceil(n / 2)) and B = the rest, B's proposals made while A is scored (run.c). The
 * step's cache operations go with A, the first call on each worker. With one sequence B is
 * empty: the step is serial. */
static uint32_t split_parts(duet_engine *e, const duet_sched_output *so, uint32_t n,
                            uint32_t max_lp, struct duet__spec_part *parts)
{
    uint32_t h = e->dt ? (n + 1) / 2 : n;

    part_init(e, so, 0, h, max_lp, &parts[0]);
    if (h == n)
        return 1;
    part_init(e, NULL, h, n, max_lp, &parts[1]);
    return 2;
}

duet_status duet__spec_decode(duet_engine *e, const duet_sched_output *so)
{
    struct duet__spec *sb = e->spec;
    struct duet__spec_part parts[2];
    uint32_t n_rows, max_lp, n = so->num_seqs, k = sb->ad.k_next, n_spec, n_parts;
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
    n_spec = build_batches(e, n, sb);
    e->m.spec_steps++;
    e->m.last_k = k;
    n_parts = split_parts(e, so, n, max_lp, parts);
    st = duet__run_spec(e, parts, n_parts);
    e->m.verify_s += e->m.execute_s - t0;
    if (!st)
        st = duet__verify_commit(e, n, max_lp);
    if (!st)
        duet__adapt_update(&sb->ad, n_spec, k, e->m.proposed - p0, e->m.accepted - a0,
                           e->m.draft_s - d0, e->m.execute_s - t0);
    return st;
}
