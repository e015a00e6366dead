/*
 * A step: run the policy's passes (policy.c), turn the step's lists into the output, and splice
 * them back into the queues in vLLM's order (vllm-semantics §2.8, §2.9, §2.13).
 *
 *   default   output: NEW_PREFILL | RUN_DECODE | SWAP_DECODE   (prefills or decodes, never both)
 *             running += NEW_PREFILL, RUN_DECODE, SWAP_DECODE
 *   chunked   output: NEW_PREFILL | RUN_PREFILL | SWAP_PREFILL | RUN_DECODE | SWAP_DECODE
 *             running += SWAP_DECODE, SWAP_PREFILL, RUN_DECODE, RUN_PREFILL, NEW_PREFILL
 *   both      waiting = PREEMPTED (reversed, as deque.extendleft) + waiting; swapped += SWAPPED_OUT
 *
 * Building the output advances each scheduled sequence's computed tokens by its chunk and marks
 * the sequences that sampled as waiting for their update; then the block manager marks the
 * blocks of the batch computed (the step is assumed to succeed, as vLLM assumes).
 */
#include "scheduler-int.h"

#include <inttypes.h>

/* One scheduled sequence: its output entry, then its state as if the step ran. */
static void emit_seq(duet_scheduler *s, struct duet__group *g, struct duet__sseq *q, uint32_t la)
{
    duet_sched_seq *e = &s->oseqs[s->out.num_seqs++];

    *e = (duet_sched_seq){.seq_id = q->id,
                          .tokens = q->tokens,
                          .num_tokens = q->len,
                          .num_computed = q->num_computed,
                          .num_new_tokens = q->chunk,
                          .is_prefill = q->prefill};
    duet_block_manager_block_table(s->bm, q->id, &e->block_table, &e->num_blocks);
    q->num_computed += q->chunk;
    q->decode_update = !q->prefill;
    if (!q->prefill) {
        q->samples = la + 1;
    } else if (q->num_computed == q->len) {
        q->prefill = false;
        g->n_prefill--;
        s->num_partial--;
        q->samples = g->n_seqs < g->n ? g->n : 1;
    } else {
        q->samples = 0;
    }
    e->num_samples = q->decode_update ? 1 : q->samples;
    if (q->samples) {
        g->pending++;
        s->num_pending++;
    }
    q->chunk = 0;
}

static void emit_group(duet_scheduler *s, struct duet__group *g)
{
    duet_sched_group *o = &s->groups[s->out.num_groups++];
    uint32_t first = s->out.num_seqs;
    bool prefill = g->n_prefill > 0;
    uint32_t la = prefill ? 0 : duet__group_lookahead(s, g);

    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        /* The access time only orders prefix-cache eviction. */
        if (s->prefix_caching && !q->finish && q->has_table)
            duet_block_manager_access(s->bm, q->id, s->now);
        if (!q->finish && q->chunk)
            emit_seq(s, g, q, la);
    }
    *o = (duet_sched_group){.request_id = g->request_id,
                            .sampling = &g->sampling,
                            .seqs = &s->oseqs[first],
                            .num_seqs = s->out.num_seqs - first,
                            .token_chunk_size = s->oseqs[first].num_new_tokens,
                            .num_lookahead_slots = la,
                            .is_prefill = prefill,
                            .spec_disabled = g->spec_disabled};
    s->out.num_prefill_groups += prefill;
    if (!prefill)
        s->out.num_lookahead_slots = s->p.num_lookahead_slots;
    if (!g->scheduled_ever) {
        g->scheduled_ever = true;
        g->first_scheduled = s->now;
    }
}

static void emit_list(duet_scheduler *s, int q)
{
    for (struct duet__group *g = s->q[q].head; g; g = g->next)
        emit_group(s, g);
}

void duet__sched_build_output(duet_scheduler *s, const struct duet__budget *b, bool chunking)
{
    static const int order_default[] = {DUET__Q_NEW_PREFILL, DUET__Q_RUN_PREFILL,
                                        DUET__Q_RUN_DECODE, DUET__Q_SWAP_PREFILL,
                                        DUET__Q_SWAP_DECODE};
    static const int order_chunked[] = {DUET__Q_NEW_PREFILL, DUET__Q_RUN_PREFILL,
                                        DUET__Q_SWAP_PREFILL, DUET__Q_RUN_DECODE,
                                        DUET__Q_SWAP_DECODE};
    const int *order = chunking ? order_chunked : order_default;

    for (int i = 0; i < 5; i++)
        emit_list(s, order[i]);
    /* The block manager marks every block cached since its last call, the full prompt blocks
     * of a prompt still being prefilled in chunks included: wait until none is (vLLM marks
     * them, and a later hit could skip KV that was never computed). */
    if (s->num_partial == 0)
        duet_block_manager_mark_computed(s->bm);
    s->out.num_batched_tokens = b->num_batched_tokens;
    s->out.is_prefill = s->out.num_groups && s->out.num_prefill_groups == s->out.num_groups;
}

/* Preempted groups to the front of waiting: the one preempted last ends up first (vLLM's
 * waiting.extendleft(preempted)). */
static void splice_preempted(duet_scheduler *s)
{
    while (s->q[DUET__Q_PREEMPTED].head) {
        struct duet__group *g = s->q[DUET__Q_PREEMPTED].head;

        duet__queue_remove(s, g);
        duet__queue_waiting_push_front(s, g);
    }
    duet__queue_splice_back(s, DUET__Q_SWAPPED_OUT, DUET__Q_SWAPPED);
}

/* Admitted groups join running, except a partially re-admitted one: back to the waiting head. */
static void splice_new_prefills(duet_scheduler *s)
{
    while (s->q[DUET__Q_NEW_PREFILL].head) {
        struct duet__group *g = s->q[DUET__Q_NEW_PREFILL].head;

        duet__queue_remove(s, g);
        if (g->n_prefill && !s->p.chunked_prefill)
            duet__queue_push_front(s, DUET__Q_WAITING, g);
        else
            duet__queue_push_back(s, DUET__Q_RUNNING, g);
    }
}

duet_status duet__sched_default(duet_scheduler *s, struct duet__budget *b)
{
    const struct duet__group *head = s->q[DUET__Q_WAITING].head;
    bool swapped = s->q[DUET__Q_SWAPPED].n > 0;
    uint32_t prefills = 0;
    duet_status st = DUET_STATUS_OK;

    /* Count running sequences first, so prompts cannot exceed max_num_seqs. */
    for (struct duet__group *g = s->q[DUET__Q_RUNNING].head; g; g = g->next)
        duet__budget_add_seqs(b, g, duet__group_max_seqs(g));
    /* Swapped groups come before new prompts; a partially re-admitted head is not new. */
    if (!swapped || (head && head->allocated))
        st = duet__sched_prefills(s, b, false, swapped, &prefills);
    if (!st && !prefills && s->p.policy == DUET_SCHED_POLICY_PRIORITY)
        st = duet__sched_priority_preemption(s, b);
    if (!st && !prefills) {
        st = duet__sched_running(s, b, false);
        if (!st && !s->q[DUET__Q_PREEMPTED].n && !s->q[DUET__Q_SWAPPED_OUT].n)
            st = duet__sched_swapped(s, b, false);
    }
    duet__sched_build_output(s, b, false);
    splice_preempted(s);
    splice_new_prefills(s);
    duet__queue_splice_back(s, DUET__Q_RUN_PREFILL, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_RUN_DECODE, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_SWAP_PREFILL, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_SWAP_DECODE, DUET__Q_RUNNING);
    return st;
}

duet_status duet__sched_chunked(duet_scheduler *s, struct duet__budget *b)
{
    duet_status st = duet__sched_running(s, b, true);

    if (!st && !s->q[DUET__Q_PREEMPTED].n && !s->q[DUET__Q_SWAPPED_OUT].n)
        st = duet__sched_swapped(s, b, true);
    if (!st)
        st = duet__sched_prefills(s, b, true, false, NULL);
    duet__sched_build_output(s, b, true);
    splice_preempted(s);
    duet__queue_splice_back(s, DUET__Q_SWAP_DECODE, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_SWAP_PREFILL, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_RUN_DECODE, DUET__Q_RUNNING);
    duet__queue_splice_back(s, DUET__Q_RUN_PREFILL, DUET__Q_RUNNING);
    splice_new_prefills(s);
    return st;
}

void duet__sched_begin_step(duet_scheduler *s, uint64_t now)
{
    s->now = now;
    s->out = (duet_sched_output){.groups = s->groups,
                                 .seqs = s->oseqs,
                                 .swap_in = s->swap_in.pairs,
                                 .swap_out = s->swap_out.pairs,
                                 .copy = s->copy.pairs,
                                 .ignored = s->ignored};
    s->swap_in.n = s->swap_out.n = s->copy.n = 0;
    s->sched_groups = s->sched_seqs = 0;
}

duet_status duet_scheduler_step(duet_scheduler *s, uint64_t now, const duet_sched_output **out)
{
    struct duet__budget b;
    duet_status st;

    if (!s || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (s->num_pending)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "%" PRIu32 " sequences of the last step wait for their update",
                                s->num_pending);
    duet__sched_begin_step(s, now);
    duet__budget_init(&b, ++s->budget_epoch, s->p.max_num_batched_tokens, s->p.max_num_seqs);
    st = s->p.chunked_prefill ? duet__sched_chunked(s, &b) : duet__sched_default(s, &b);
    /* The pair buffers may have grown during the step. */
    s->out.swap_in = s->swap_in.pairs;
    s->out.num_swap_in = s->swap_in.n;
    s->out.swap_out = s->swap_out.pairs;
    s->out.num_swap_out = s->swap_out.n;
    s->out.copy = s->copy.pairs;
    s->out.num_copy = s->copy.n;
    s->out.running_queue_size = s->q[DUET__Q_RUNNING].n;
    *out = &s->out;
    if (st)
        return st;
    s->stats.steps++;
    s->stats.batched_tokens += s->out.num_batched_tokens;
    return DUET_STATUS_OK;
}
