/*
 * The passes of a step (vllm-semantics §2.5–§2.11): admit prompts from the waiting queue,
 * schedule the running queue (preempting when blocks are short), swap groups back in, and the
 * priority policy's forced preemption. Each pass moves the groups it schedules from their queue
 * onto one of the step's lists; step.c turns the lists into the output and splices them back.
 *
 *   waiting ──prefills──▶ NEW_PREFILL                     ┐
 *   running ──running───▶ RUN_DECODE / RUN_PREFILL        │ step.c: output, then back to
 *             (victims) ─▶ PREEMPTED / SWAPPED_OUT        │ running / waiting front / swapped
 *   swapped ──swapped───▶ SWAP_DECODE / SWAP_PREFILL      ┘
 *
 * Admission of a group whose sequences forked and were then recomputed: its live sequences
 * share the prompt's full blocks again (allocate them once, fork) and each gets its own tail,
 * so it needs no more blocks than it held before; each sequence re-prefills all its tokens.
 * Without chunked prefill, when they do not all fit the step's token budget, the group is
 * admitted with those that fit and stays at the head of the waiting queue, holding its blocks,
 * until the rest are prefilled (vLLM cannot recompute such groups at all).
 */
#include "scheduler-int.h"

#include <inttypes.h>
#include <stdlib.h>

enum { NEXT, STOP }; /* what a pass does after looking at its queue's head */

static int hook(int (*fn)(void *, uint64_t), const duet_scheduler *s, const struct duet__group *g)
{
    return fn ? fn(s->hooks.ctx, g->request_id) : -1;
}

static uint64_t cdiv(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

static bool ensure_pairs(duet_block_pair_buf *b, uint64_t more)
{
    uint64_t need = (uint64_t)b->n + more, cap = b->cap ? b->cap : 16;
    duet_block_pair *p;

    if (need <= b->cap)
        return true;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        return false;
    p = realloc(b->pairs, sizeof(*p) * cap);
    if (!p)
        return false;
    b->pairs = p;
    b->cap = (uint32_t)cap;
    return true;
}

/* Blocks of the sequences in s->ids[0..k): at least the pairs a swap of them writes. */
static uint64_t blocks_of(const duet_scheduler *s, uint32_t k)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < k; i++) {
        duet_block_manager_seq_info info;

        if (duet_block_manager_seq_info_get(s->bm, s->ids[i], &info) == DUET_STATUS_OK)
            n += info.num_blocks;
    }
    return n;
}

/* The most copy-on-write pairs appending s->n_new[0..k) tokens can write. */
static uint64_t copies_of(const duet_scheduler *s, uint32_t k)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < k; i++)
        n += s->n_new[i] / s->block_size + 2;
    return n;
}

static bool out_room(const duet_scheduler *s)
{
    return s->sched_groups < s->groups_cap &&
           (uint64_t)s->sched_seqs + s->plan_seqs <= s->oseqs_cap;
}

static void count_scheduled(duet_scheduler *s)
{
    s->sched_groups++;
    s->sched_seqs += s->plan_seqs;
}

static void ignore(duet_scheduler *s, struct duet__group *g, duet_sched_ignore why)
{
    s->ignored[s->out.num_ignored++] = (duet_sched_ignored){g->request_id, why};
    g->ignore = (uint8_t)why;
    duet__sched_finish_group(s, g, DUET_SCHED_FINISH_IGNORED);
}

/* ---- admission --------------------------------------------------------------------------- */

/* Forked, with several live sequences: admitted with the prompt's full blocks shared. */
static bool diverged(const struct duet__group *g)
{
    return g->n_seqs == g->n && g->n_live > 1;
}

static struct duet__sseq *first_live(struct duet__group *g)
{
    for (uint32_t i = 0; i < g->n_seqs; i++)
        if (!g->seqs[i].finish)
            return &g->seqs[i];
    return &g->seqs[0];
}

static uint32_t shared_base(const duet_scheduler *s, const struct duet__group *g)
{
    return g->prompt_len / s->block_size * s->block_size;
}

/* Tokens whose blocks (rounded up per table tail) the admission takes, for can_allocate. */
static uint32_t admit_tokens(const duet_scheduler *s, struct duet__group *g)
{
    uint32_t base = shared_base(s, g);
    uint64_t blocks = base / s->block_size;

    if (!diverged(g))
        return first_live(g)->len;
    for (uint32_t i = 0; i < g->n_seqs; i++)
        if (!g->seqs[i].finish)
            blocks += cdiv(g->seqs[i].len - base, s->block_size);
    blocks *= s->block_size;
    return blocks < UINT32_MAX ? (uint32_t)blocks : UINT32_MAX;
}

static duet_alloc can_admit(duet_scheduler *s, struct duet__group *g)
{
    int h = g->allocated ? DUET_ALLOC_OK : hook(s->hooks.can_allocate, s, g);
    uint64_t need;
    duet_alloc a;

    if (h >= 0)
        return (duet_alloc)h;
    need = admit_tokens(s, g);
    a = duet_block_manager_can_allocate(s->bm, (uint32_t)need, 0);
    /* A preempted group fitted once: the watermark alone must not drop it. */
    if (a == DUET_ALLOC_NEVER && g->num_preemptions) {
        need = cdiv(need, s->block_size);
        if (need <= duet_block_manager_num_total_blocks(s->bm, DUET_BLOCK_POOL_DEVICE))
            a = need <= duet_block_manager_num_free_blocks(s->bm, DUET_BLOCK_POOL_DEVICE)
                    ? DUET_ALLOC_OK
                    : DUET_ALLOC_LATER;
    }
    return a;
}

static duet_status allocate_tables(duet_scheduler *s, struct duet__group *g, uint32_t k)
{
    struct duet__sseq *q0 = first_live(g);
    uint32_t base = shared_base(s, g);
    duet_status st;

    if (!diverged(g))
        return duet_block_manager_allocate(s->bm, &q0->id, 1, q0->tokens, q0->len);
    st = duet_block_manager_allocate(s->bm, s->ids, k, q0->tokens, base);
    for (uint32_t i = 0; i < g->n_seqs && st == DUET_STATUS_OK; i++) {
        struct duet__sseq *q = &g->seqs[i];

        if (!q->finish)
            st = duet_block_manager_append_tokens(s->bm, q->id, q->tokens + base, q->len - base, 0,
                                                  0, NULL);
    }
    return st;
}

static duet_status admit(duet_scheduler *s, struct duet__group *g)
{
    uint32_t k = duet__group_ids(s, g, true);
    duet_status st = allocate_tables(s, g, k);

    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        q->has_table = !q->finish && duet_block_manager_has_seq(s->bm, q->id);
        q->table_tokens = q->has_table ? q->len : 0;
        s->num_partial += q->has_table;
    }
    if (st) {
        st = duet__sched_fail(s, DUET_STATUS_INTERNAL, "request %" PRIu64 ": allocate: %s",
                              g->request_id, duet_block_manager_error(s->bm));
        duet__sched_free_tables(s, g);
        return st;
    }
    g->allocated = true;
    return DUET_STATUS_OK;
}

/* ---- prompts (_schedule_prefills) -------------------------------------------------------- */

/* vLLM's _passed_delay: with delay_factor, hold prompts until the oldest waited long enough. */
static bool passed_delay(duet_scheduler *s)
{
    uint64_t earliest = UINT64_MAX;

    if (s->prev_prompt)
        s->last_prompt_latency = (double)s->now - (double)s->prev_time;
    s->prev_time = s->now;
    s->prev_prompt = false;
    if (!(s->p.delay_factor > 0) || !s->q[DUET__Q_WAITING].n)
        return true;
    for (const struct duet__group *g = s->q[DUET__Q_WAITING].head; g; g = g->next)
        earliest = g->arrival_time < earliest ? g->arrival_time : earliest;
    return (double)s->now - (double)earliest > s->p.delay_factor * s->last_prompt_latency ||
           !s->q[DUET__Q_RUNNING].n;
}

static uint32_t prompt_limit(const duet_scheduler *s)
{
    if (s->p.chunked_prefill)
        return s->p.max_model_len;
    return s->p.max_model_len < s->p.max_num_batched_tokens ? s->p.max_model_len
                                                            : s->p.max_num_batched_tokens;
}

static uint32_t longest(const struct duet__group *g)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < g->n_seqs; i++)
        if (!g->seqs[i].finish && g->seqs[i].len > n)
            n = g->seqs[i].len;
    return n;
}

static uint64_t prefill_remaining(const struct duet__group *g)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < g->n_seqs; i++)
        if (!g->seqs[i].finish && g->seqs[i].prefill)
            n += g->seqs[i].len - g->seqs[i].num_computed;
    return n;
}

/* -1: g may be admitted; NEXT: it was ignored; STOP: it must wait (head-of-line blocking). */
static int check_admission(duet_scheduler *s, struct duet__group *g)
{
    duet_alloc a;

    if (g->allocated)
        return -1;
    if (longest(g) > prompt_limit(s)) {
        ignore(s, g, DUET_SCHED_IGNORE_PROMPT_TOO_LONG);
        return NEXT;
    }
    if (duet__group_max_seqs(g) > s->p.max_num_seqs) {
        ignore(s, g, DUET_SCHED_IGNORE_CANNOT_FIT);
        return NEXT;
    }
    a = can_admit(s, g);
    if (a == DUET_ALLOC_NEVER)
        ignore(s, g, DUET_SCHED_IGNORE_CANNOT_FIT);
    return a == DUET_ALLOC_OK ? -1 : a == DUET_ALLOC_NEVER ? NEXT : STOP;
}

static int prefill_one(duet_scheduler *s, struct duet__budget *b, struct duet__group *g,
                       bool chunking, duet_status *st)
{
    uint32_t seqs = duet__group_max_seqs(g), n;
    int r = check_admission(s, g);

    if (r >= 0)
        return r;
    duet__group_skip_cached(s, g);
    n = duet__group_plan(s, g, b, chunking);
    if (n == 0 || !duet__budget_can_schedule(b, n, seqs) || !out_room(s))
        return STOP;
    if (!g->allocated) {
        *st = admit(s, g);
        if (*st)
            return STOP;
        /* Now that it has blocks, cached prefix blocks are known: skip them. */
        duet__group_skip_cached(s, g);
        n = duet__group_plan(s, g, b, chunking);
    }
    duet__queue_remove(s, g);
    duet__queue_push_back(s, DUET__Q_NEW_PREFILL, g);
    duet__budget_add_tokens(b, g, n);
    duet__budget_add_seqs(b, g, seqs);
    count_scheduled(s);
    return !chunking && n < prefill_remaining(g) ? STOP : NEXT;
}

duet_status duet__sched_prefills(duet_scheduler *s, struct duet__budget *b, bool chunking,
                                 bool only_head, uint32_t *scheduled)
{
    duet_status st = DUET_STATUS_OK;
    uint32_t count = 0;

    while (passed_delay(s) && s->q[DUET__Q_WAITING].n) {
        struct duet__group *g = s->q[DUET__Q_WAITING].head;
        int r;

        if (only_head && !g->allocated)
            break;
        r = prefill_one(s, b, g, chunking, &st);
        count += g->queue == DUET__Q_NEW_PREFILL;
        if (r == STOP)
            break;
    }
    if (count)
        s->prev_prompt = true;
    if (scheduled)
        *scheduled = count;
    return st;
}

/* ---- preemption (_preempt) --------------------------------------------------------------- */

static bool swap_out(duet_scheduler *s, struct duet__group *g)
{
    uint32_t k = duet__group_ids(s, g, true);

    return duet_block_manager_can_swap_out(s->bm, s->ids, k) &&
           ensure_pairs(&s->swap_out, blocks_of(s, k)) &&
           duet_block_manager_swap_out(s->bm, s->ids, k, &s->swap_out) == DUET_STATUS_OK;
}

static void recompute(duet_scheduler *s, struct duet__group *g)
{
    duet__sched_free_tables(s, g);
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        if (q->finish)
            continue;
        q->num_computed = q->chunk = 0;
        q->prefill = true;
    }
    g->n_prefill = g->n_live;
}

void duet__sched_preempt(duet_scheduler *s, struct duet__group *g, duet_sched_preemption mode)
{
    if (mode == DUET_SCHED_PREEMPTION_AUTO)
        mode = s->p.preemption;
    if (mode == DUET_SCHED_PREEMPTION_AUTO)
        mode = duet__group_max_seqs(g) == 1 ? DUET_SCHED_PREEMPTION_RECOMPUTE
                                            : DUET_SCHED_PREEMPTION_SWAP;
    /* Part-way through its prompt, a group's full prompt blocks hold KV not computed yet; with
     * prefix caching a swap could hand them to (or overwrite) a cached block in use by others. */
    if (s->prefix_caching && g->n_prefill)
        mode = DUET_SCHED_PREEMPTION_RECOMPUTE;
    g->num_preemptions++;
    s->out.num_preempted++;
    if (mode == DUET_SCHED_PREEMPTION_SWAP && swap_out(s, g)) {
        duet__queue_push_back(s, DUET__Q_SWAPPED_OUT, g);
        s->stats.preempted_swap++;
        return;
    }
    if (mode == DUET_SCHED_PREEMPTION_SWAP)
        s->stats.swap_fallbacks++; /* vLLM raises "lack of CPU swap space" here */
    recompute(s, g);
    duet__queue_push_back(s, DUET__Q_PREEMPTED, g);
    s->stats.preempted_recompute++;
}

/* ---- running (_schedule_running) --------------------------------------------------------- */

/* Whether every running group can append at once: then each one's check, in turn, would say
 * yes (the worst-case counts add up), and the pass skips them. The common steady state. */
static bool all_fit(duet_scheduler *s)
{
    uint32_t k = 0;

    if (s->hooks.can_append)
        return false;
    for (const struct duet__group *g = s->q[DUET__Q_RUNNING].head; g; g = g->next) {
        uint32_t la = g->n_prefill ? 0 : duet__group_lookahead(s, g);

        for (uint32_t i = 0; i < g->n_seqs; i++) {
            const struct duet__sseq *q = &g->seqs[i];

            if (q->finish || (g->n_prefill && !q->prefill))
                continue;
            s->ids[k] = q->id;
            s->n_new[k++] = q->len - q->table_tokens + la; /* lookahead folded in */
        }
    }
    return k && ensure_pairs(&s->copy, copies_of(s, k)) &&
           duet_block_manager_can_append_slots(s->bm, s->ids, s->n_new, k, 0);
}

static bool can_append(duet_scheduler *s, struct duet__group *g)
{
    uint32_t k, la;
    int h;

    if (s->fits_all)
        return true;
    k = duet__group_ids(s, g, false);
    la = g->n_prefill ? 0 : duet__group_lookahead(s, g);
    if (!ensure_pairs(&s->copy, copies_of(s, k)))
        return false;
    h = hook(s->hooks.can_append, s, g);
    if (h >= 0)
        return h;
    return duet_block_manager_can_append_slots(s->bm, s->ids, s->n_new, k, la);
}

/* vLLM's _append_slots: records the tokens the tables have not seen and reserves lookahead. */
static duet_status append_slots(duet_scheduler *s, struct duet__group *g)
{
    uint32_t la = g->n_prefill ? 0 : duet__group_lookahead(s, g);

    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        if (q->finish || (g->n_prefill && !q->prefill))
            continue;
        if (duet_block_manager_append_tokens(s->bm, q->id, q->tokens + q->table_tokens,
                                             q->len - q->table_tokens, la, q->num_computed,
                                             &s->copy))
            return duet__sched_fail(s, DUET_STATUS_INTERNAL, "seq %" PRIu64 ": append: %s", q->id,
                                    duet_block_manager_error(s->bm));
        q->table_tokens = q->len;
    }
    return DUET_STATUS_OK;
}

static duet_status run_one(duet_scheduler *s, struct duet__budget *b, struct duet__group *g,
                           uint32_t n, bool chunking)
{
    duet_status st;

    while (!can_append(s, g)) {
        struct duet__group *victim = s->q[DUET__Q_RUNNING].tail ? s->q[DUET__Q_RUNNING].tail : g;

        duet__budget_sub_tokens(b, g, n);
        duet__budget_sub_seqs(b, g, duet__group_max_seqs(g));
        duet__queue_remove(s, victim);
        duet__sched_preempt(s, victim, DUET_SCHED_PREEMPTION_AUTO);
        if (victim == g)
            return DUET_STATUS_OK;
    }
    st = append_slots(s, g);
    duet__queue_push_back(s, g->n_prefill ? DUET__Q_RUN_PREFILL : DUET__Q_RUN_DECODE, g);
    duet__budget_add_tokens(b, g, n);
    if (chunking)
        duet__budget_add_seqs(b, g, duet__group_max_seqs(g));
    count_scheduled(s);
    return st;
}

duet_status duet__sched_running(duet_scheduler *s, struct duet__budget *b, bool chunking)
{
    duet_status st = DUET_STATUS_OK;

    s->fits_all = all_fit(s);
    while (s->q[DUET__Q_RUNNING].n) {
        struct duet__group *g = s->q[DUET__Q_RUNNING].head;
        uint32_t n;

        duet__group_skip_cached(s, g);
        n = duet__group_plan(s, g, b, chunking);
        if (n == 0 || !out_room(s))
            break;
        /* vLLM adds a running group's sequences unchecked; they always fit without chunking,
         * but a chunked step may have admitted prompts beside running groups it could not
         * schedule. */
        if (chunking && !duet__budget_can_schedule(b, n, duet__group_max_seqs(g)))
            break;
        duet__queue_remove(s, g);
        st = run_one(s, b, g, n, chunking);
        if (st)
            break;
    }
    s->fits_all = false;
    return st;
}

/* ---- swapped (_schedule_swapped) --------------------------------------------------------- */

static duet_alloc can_swap_in(duet_scheduler *s, struct duet__group *g)
{
    uint32_t k = duet__group_ids(s, g, true);
    uint32_t la = g->n_prefill ? 0 : duet__group_lookahead(s, g);
    int h = hook(s->hooks.can_swap_in, s, g);

    if (h >= 0)
        return (duet_alloc)h;
    return duet_block_manager_can_swap_in(s->bm, s->ids, s->n_new, k, la);
}

static int swap_in_one(duet_scheduler *s, struct duet__budget *b, struct duet__group *g,
                       bool chunking, duet_status *st)
{
    uint32_t seqs = duet__group_max_seqs(g), n, k;
    duet_alloc a = can_swap_in(s, g);

    if (a == DUET_ALLOC_NEVER)
        ignore(s, g, DUET_SCHED_IGNORE_SWAP_INFEASIBLE);
    if (a != DUET_ALLOC_OK)
        return a == DUET_ALLOC_NEVER ? NEXT : STOP;
    n = duet__group_plan(s, g, b, chunking);
    if (n == 0 || !duet__budget_can_schedule(b, n, seqs) || !out_room(s))
        return STOP;
    k = duet__group_ids(s, g, true);
    if (!ensure_pairs(&s->swap_in, blocks_of(s, k)) || !ensure_pairs(&s->copy, copies_of(s, k)))
        return STOP;
    if (duet_block_manager_swap_in(s->bm, s->ids, k, &s->swap_in)) {
        *st = duet__sched_fail(s, DUET_STATUS_INTERNAL, "request %" PRIu64 ": swap in: %s",
                               g->request_id, duet_block_manager_error(s->bm));
        return STOP;
    }
    duet__queue_remove(s, g);
    *st = append_slots(s, g);
    duet__queue_push_back(s, g->n_prefill ? DUET__Q_SWAP_PREFILL : DUET__Q_SWAP_DECODE, g);
    duet__budget_add_tokens(b, g, n);
    duet__budget_add_seqs(b, g, seqs);
    count_scheduled(s);
    return *st ? STOP : NEXT;
}

duet_status duet__sched_swapped(duet_scheduler *s, struct duet__budget *b, bool chunking)
{
    duet_status st = DUET_STATUS_OK;

    while (s->q[DUET__Q_SWAPPED].n)
        if (swap_in_one(s, b, s->q[DUET__Q_SWAPPED].head, chunking, &st) == STOP)
            break;
    return st;
}

/* ---- priority (_schedule_priority_preemption) -------------------------------------------- */

/* Whether the waiting head g could run now without preempting anything. */
static bool head_fits(duet_scheduler *s, const struct duet__budget *b, struct duet__group *g,
                      uint32_t n)
{
    return n && can_admit(s, g) == DUET_ALLOC_OK &&
           duet__budget_can_schedule(b, n, duet__group_max_seqs(g));
}

/* Whether preempting could ever let g run: not a prompt a step would ignore (vLLM preempts
 * for those too, and then ignores them). */
static bool head_admissible(duet_scheduler *s, struct duet__group *g)
{
    return g->allocated ||
           (longest(g) <= prompt_limit(s) && duet__group_max_seqs(g) <= s->p.max_num_seqs &&
            can_admit(s, g) != DUET_ALLOC_NEVER);
}

duet_status duet__sched_priority_preemption(duet_scheduler *s, struct duet__budget *b)
{
    struct duet__group *g = s->q[DUET__Q_WAITING].head;

    duet__queue_sort_priority(s, DUET__Q_RUNNING);
    if (g && head_admissible(s, g)) {
        uint32_t n = duet__group_plan(s, g, b, false);

        duet__queue_remove(s, g);
        while (s->q[DUET__Q_RUNNING].n && duet__group_before(g, s->q[DUET__Q_RUNNING].tail) &&
               !head_fits(s, b, g, n)) {
            struct duet__group *v = s->q[DUET__Q_RUNNING].tail;

            duet__queue_remove(s, v);
            duet__budget_sub_seqs(b, v, duet__group_max_seqs(v));
            duet__sched_preempt(s, v, DUET_SCHED_PREEMPTION_RECOMPUTE);
            duet__queue_remove(s, v);
            duet__queue_waiting_push_front(s, v);
            s->stats.priority_preemptions++;
        }
        duet__queue_push_front(s, DUET__Q_WAITING, g);
    }
    duet__queue_sort_priority(s, DUET__Q_WAITING);
    return DUET_STATUS_OK;
}
