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
 * the second while the target scores the first (run.c); verify and commit are the same. When
 * the first half is one sequence (batch 1 to 3) it drafts its next window ahead (ahead_*).
 */
#include "build_config.h"

#include "engine-int.h"

#include <stdlib.h>
#include <string.h>

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
    free(sp->ahead.tok);
    free(sp->ahead.probs);
    free(sp);
}

bool duet__spec_ahead_init(struct duet__spec *sp)
{
    const char *w = getenv("DUET_AHEAD_WINDOW"), *force = getenv("DUET_FORCE_OVERLAP");

    sp->ahead.window = !w || !*w || !strcmp(w, "fit") ? DUET__AHEAD_FIT
                       : !strcmp(w, "full")           ? DUET__AHEAD_FULL
                                                      : DUET__AHEAD_OFF;
    sp->split_forced = force && *force && strcmp(force, "0") != 0;
    sp->ahead.tok = malloc((sp->k_max + 1) * sizeof(int32_t));
    sp->ahead.probs = malloc((size_t)(sp->k_max + 1) * sp->vocab * sizeof(float));
    return sp->ahead.tok && sp->ahead.probs;
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

void duet__spec_ahead_drop(duet_engine *e)
{
    struct duet__ahead *ah = &e->spec->ahead;

    if (!ah->held)
        return;
    ah->held = false;
    e->m.ahead_discarded++;
    e->m.ahead_thrown_tokens += ah->n;
}

duet_status duet__spec_draft_prefill(duet_engine *e, const duet_sched_output *so)
{
    struct duet__spec *sp = e->spec;
    duet_seq *ds;

    duet__spec_ahead_drop(e);
    if (!spec_reserve(sp, so->num_seqs ? so->num_seqs : 1, 1, 1, 0))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    ds = sp->dseqs;
    for (uint32_t i = 0; i < so->num_seqs; i++) {
        const duet_seq *q = &e->sc.seqs[i];

        ds[i] = draft_seq(e, i, q->pos + q->n_tokens);
        e->sc.rec[i]->draft_computed = q->pos + q->n_tokens;
    }
    duet__batch_init(so, ds, so->num_seqs, 0, 0, &sp->pb);
    sp->po = (duet_batch_output){.struct_size = sizeof(sp->po)};
    if (!e->dt)
        return duet__worker_run(e, 1, &sp->pb, &sp->po);
    duet__draft_post(e, &sp->pb, &sp->po);
    sp->pb_posted = true;
    return DUET_STATUS_OK;
}

duet_status duet__spec_draft_prefill_wait(duet_engine *e, uint64_t t0_ns, uint64_t t1_ns)
{
    struct duet__spec *sp = e->spec;

    if (!sp->pb_posted)
        return DUET_STATUS_OK;
    sp->pb_posted = false;
    e->m.overlap_prefill_steps++;
    return duet__draft_wait(e, t0_ns, t1_ns);
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
        s->a = UINT32_MAX;
        s->last_out = -1;
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

/* Sequences of part A with the draft thread (n >= 1): all of one, else n / 2 (A = the first
 * sequence alone for a batch of 2 or 3, which then drafts ahead beside B's scoring). */
static uint32_t half_a(uint32_t n)
{
    return n == 1 ? 1 : n / 2;
}

/*
 * Draft-ahead (docs/engine.md, "Draft-ahead"), for sequence 0 of a step when it is part A alone
 * (batch 1 to 3) with the draft thread.
 *
 * ahead_take: whether the window drafted ahead by the previous step is this step's proposals.
 * It is when this step runs that sequence right after the step that drafted it, with the token
 * count the window assumed (every proposal and the bonus guess were right: ahead_after), k >= 1,
 * and no cache operations (they go with the draft's first call, which a held window skips). The
 * sequence's k is lowered to the window's length; a shorter k uses its prefix. Counts what is
 * kept and what is thrown away.
 */
static bool ahead_take(duet_engine *e, const duet_sched_output *so, struct duet__spec *sb)
{
    struct duet__ahead *ah = &sb->ahead;
    struct duet__spec_seq *s = &sb->ss[0];

    if (!ah->held)
        return false;
    if (!e->dt || sb->part_a != 1 || e->sc.seqs[0].seq_id != ah->seq_id ||
        e->sc.seqs[0].pos + 1 != ah->len || ah->step + 1 != e->m.steps || s->k == 0 ||
        so->num_swap_in || so->num_swap_out || so->num_copy) {
        duet__spec_ahead_drop(e);
        return false;
    }
    ah->held = false;
    if (s->k > ah->n)
        s->k = ah->n;
    if (s->k == ah->n) {
        e->m.ahead_kept++;
    } else {
        e->m.ahead_partial++;
        e->m.ahead_thrown_tokens += ah->n - s->k;
    }
    return true;
}

/* The held window y1..yk (rows 1..k of the ahead job) as sequence 0's proposals. */
static void ahead_use(struct duet__spec *sb)
{
    const struct duet__spec_seq *s = &sb->ss[0];

    memcpy(&sb->dtok[s->drow], &sb->ahead.tok[1], s->k * sizeof(int32_t));
    memcpy(&sb->dprobs[(size_t)s->drow * sb->vocab], &sb->ahead.probs[sb->vocab],
           (size_t)s->k * sb->vocab * sizeof(float));
}

/* Plans the ahead job of this step (ah->n = 0: none): feed x_k at T+k-1, then draft k + 1
 * tokens, g (the guess of the bonus token) at T+k and y1..yk at T+k+1..T+2k. Only when the
 * block table has those slots (the group's lookahead covers 2k positions past T - 1: the engine
 * reserves 2 num_tokens with the draft thread), the window stays below max_model_len, and the
 * request is not penalised (the draft's rows would not count x1..xk among the tokens seen: the
 * output would stay exact, the acceptance would drop). The window is shortened to the draft
 * passes that fit beside the target call it runs with (measured by run.c), and not drafted when
 * fewer than two fit ($DUET_AHEAD_WINDOW: fit, the default; full: always k; off: never). run.c
 * posts it once the proposals are known and finite. */
static void ahead_plan(duet_engine *e, const duet_sched_output *so, struct duet__spec *sb)
{
    struct duet__ahead *ah = &sb->ahead;
    const struct duet__spec_seq *s = &sb->ss[0];
    uint32_t k = s->k, m = k;

    ah->n = 0;
    ah->ran = false;
    if (!e->dt || !ah->tok || sb->part_a != 1 || k == 0 || so->num_groups == 0 ||
        so->groups[0].num_lookahead_slots < 2 * k || s->len + 2 * k >= e->max_model_len ||
        sb->dseqs[0].penalties || ah->window == DUET__AHEAD_OFF)
        return;
    if (ah->window == DUET__AHEAD_FIT && ah->pass_s > 0 && ah->beside_s > 0) {
        /* The job makes n + 1 draft passes (g, then y1..yn): as many as fit beside the target's
         * call, so that the target never waits for a window it may throw away. */
        double fit = ah->beside_s / ah->pass_s;

        if (fit < 2.0)
            return;
        if (fit < (double)k + 1)
            m = (uint32_t)fit - 1;
    }
    ah->n = m;
    ah->seq = sb->dseqs[0];
    ah->seq.tokens = &sb->dtok[s->drow + k - 1];
    ah->seq.n_tokens = 1;
    ah->seq.pos = s->len + k - 1;
    ah->seq.n_outputs = 1;
    ah->seq.n_draft_steps = m;
    duet__batch_init(NULL, &ah->seq, 1, DUET_BATCH_WANT_PROBS, 0, &ah->b);
    ah->o = (duet_batch_output){
        .struct_size = sizeof(ah->o), .n_rows = m + 1, .tokens = ah->tok, .probs = ah->probs};
}

/* After verification: the window drafted ahead is held for the next step when all k proposals
 * were accepted, the bonus token is g and the request goes on; else it is thrown away. Either
 * way, after a full accept the draft cache holds x_k (the ahead job fed it): D = T + k. */
static void ahead_after(duet_engine *e, struct duet__spec *sb)
{
    struct duet__ahead *ah = &sb->ahead;
    const struct duet__spec_seq *s = &sb->ss[0];
    duet_sched_request_info info;
    bool finite = true, live;

    if (!ah->ran)
        return;
    ah->ran = false;
    for (uint32_t j = 0; j <= ah->n; j++)
        finite = finite && ah->tok[j] >= 0;
    if (s->a == s->k) /* not UINT32_MAX: verified, so the request did not fail */
        e->sc.rec[0]->draft_computed = s->len + s->k;
    live = duet_scheduler_request_info(e->sched, e->sc.owner[0]->id, &info) == DUET_STATUS_OK &&
           info.finish == DUET_SCHED_FINISH_NONE && info.num_live_seqs > 0;
    if (finite && live && s->a == s->k && s->last_out == ah->tok[0]) {
        ah->held = true;
        ah->seq_id = e->sc.seqs[0].seq_id;
        ah->len = s->len + s->k + 1;
        ah->step = e->m.steps;
        return;
    }
    e->m.ahead_discarded++;
    e->m.ahead_thrown_tokens += ah->n + 1;
}

/* The step's parts (n >= 1 sequences): the whole batch, or with the draft thread the halves
 * A = [0, n / 2) and B = the rest, B's proposals made while A is scored (run.c). The step's
 * cache operations go with A, the first call on each worker. With one sequence B is empty: the
 * step is serial (and drafts ahead). */
static struct duet__split_cost *split_cost(struct duet__spec *sb, uint32_t n)
{
    return &sb->split[(n < DUET__SPLIT_SIZES ? n : DUET__SPLIT_SIZES) - 1];
}

/* The first part of a step of n sequences: halves (A = half_a(n)) or the whole batch, by the
 * measured cost at n; each is tried first, and every 16th choice tries the other again, so that
 * both stay measured as the load moves. Halves pay where proposing half B beside score(A) saves
 * more than a second target call costs (a GPU's fixed cost per forward pass: docs/engine.md). */
static uint32_t choose_part_a(const duet_engine *e, struct duet__spec *sb, uint32_t n)
{
    struct duet__split_cost *c;
    bool halves;

    if (!e->dt || n < 2)
        return e->dt ? half_a(n) : n;
    if (sb->split_forced)
        return half_a(n);
    c = split_cost(sb, n);
    if (c->cost[1] <= 0)
        return half_a(n);
    if (c->cost[0] <= 0)
        return n;
    halves = c->cost[1] <= c->cost[0];
    if (++c->decisions % 16 == 0)
        halves = !halves;
    return halves ? half_a(n) : n;
}

static void split_measure(struct duet__spec *sb, uint32_t n, uint32_t k, bool halves, double s)
{
    double *c = &split_cost(sb, n)->cost[halves];
    double x = s / ((double)n * (k + 1));

    *c = *c <= 0 ? x : *c + 0.25 * (x - *c);
}

static uint32_t split_parts(duet_engine *e, const duet_sched_output *so, uint32_t n,
                            uint32_t max_lp, struct duet__spec_part *parts)
{
    uint32_t h = e->spec->part_a;

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
    double d0 = e->m.draft_s, t0 = e->m.execute_s, w0 = duet__now_s();
    duet_status st = duet__batch_seqs(e, so, &n_rows, &max_lp);
    bool held;

    if (st)
        return st;
    if (k + 1 > 64 || k > DUET_MAX_SPEC_TOKENS)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "k %u too large", k);
    if (!spec_reserve(sb, n ? n : 1, n * (k + 1) + 1, n * k + 1, max_lp))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    seq_lookahead(e, so, sb, k);
    sb->part_a = choose_part_a(e, sb, n);
    held = ahead_take(e, so, sb);
    if (held && n == 1)
        k = sb->ss[0].k;
    n_spec = build_batches(e, n, sb);
    if (held)
        ahead_use(sb);
    ahead_plan(e, so, sb);
    e->m.spec_steps++;
    e->m.last_k = k;
    n_parts = split_parts(e, so, n, max_lp, parts);
    parts[0].proposed = !held;
    parts[1].proposed = true;
    st = duet__run_spec(e, parts, n_parts);
    if (!st && e->dt && n >= 2)
        split_measure(sb, n, k, n_parts == 2, duet__now_s() - w0);
    e->m.verify_s += e->m.execute_s - t0;
    if (!st)
        st = duet__verify_commit(e, n, max_lp);
    if (!st)
        ahead_after(e, sb);
    if (!st)
        duet__adapt_update(&sb->ad, n_spec, k, e->m.proposed - p0, e->m.accepted - a0,
                           e->m.draft_s - d0, e->m.execute_s - t0);
    return st;
}
