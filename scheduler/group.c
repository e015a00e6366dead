/*
 * Sequence groups: the per-request arithmetic of a step (vllm-semantics §2.1, §2.14).
 *
 *   group ─ seqs[0]          the prompt sequence; seqs[1..n) exist once an n > 1 group forks
 *           seqs[i].tokens   [prompt ... generated]                   len
 *                            [── num_computed ──)  KV exists
 *                            [──── table_tokens ────)  recorded in the block table
 *
 * A sequence is in the prefill stage until a step computes its last prompt token (all of its
 * tokens after a recompute), then in the decode stage, where each step feeds 1 token (plus the
 * drafts written into the lookahead slots) and the update appends the 1..k+1 accepted ones, so
 * that num_computed = len - 1 afterwards: the newest token's KV is computed by the next step.
 *
 * A group whose sequences forked and were then preempted by recompute re-prefills every live
 * sequence; while any of them is in the prefill stage the group is "in prefill" and those that
 * finished theirs wait (they are neither fed nor given new slots) until all are done.
 */
#include "scheduler-int.h"

#include <assert.h>

uint32_t duet__group_ids(duet_scheduler *s, const struct duet__group *g, bool all)
{
    uint32_t k = 0;

    for (uint32_t i = 0; i < g->n_seqs; i++) {
        const struct duet__sseq *q = &g->seqs[i];

        if (q->finish || (!all && g->n_prefill && !q->prefill))
            continue;
        s->ids[k] = q->id;
        s->n_new[k] = q->len - q->table_tokens;
        k++;
    }
    return k;
}

/* Chunk of one prefill sequence with `left` budget tokens (vLLM's chunking rule). */
static uint32_t prefill_chunk(const duet_scheduler *s, uint32_t remaining, uint32_t left,
                              bool chunking, bool first)
{
    uint32_t c;

    if (!chunking)
        return first || remaining <= left ? remaining : 0;
    c = remaining < left ? remaining : left;
    /* With prefix caching a cut chunk ends on a block boundary, so blocks fill whole. */
    if (s->prefix_caching && c < remaining)
        c -= c % s->block_size;
    return c;
}

uint32_t duet__group_plan(duet_scheduler *s, struct duet__group *g, const struct duet__budget *b,
                          bool chunking)
{
    uint32_t left = duet__budget_remaining(b), total = 0, seqs = 0;
    bool stop = false;

    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        q->chunk = 0;
        if (q->finish || stop || (g->n_prefill && !q->prefill))
            continue;
        if (g->n_prefill)
            q->chunk = prefill_chunk(s, q->len - q->num_computed, left > total ? left - total : 0,
                                     chunking, total == 0);
        else
            q->chunk = 1;
        stop = q->chunk == 0;
        total += q->chunk;
        seqs += q->chunk > 0;
    }
    /* A decode is never cut: with chunking it fits the budget whole or waits (vLLM would
     * overrun the budget with a multi-sequence decode). */
    if (!g->n_prefill && chunking && total > left)
        total = seqs = 0;
    s->plan_seqs = total ? seqs : 0;
    return total;
}

void duet__group_skip_cached(duet_scheduler *s, struct duet__group *g)
{
    if (!s->prefix_caching || !g->n_prefill)
        return;
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];
        uint32_t blocks = 0;
        uint64_t cached;

        if (q->finish || !q->prefill || !q->has_table)
            continue;
        if (duet_block_manager_computed_prefix(s->bm, &q->id, 1, &blocks))
            continue;
        cached = (uint64_t)blocks * s->block_size;
        if (cached > q->num_computed) {
            assert(cached < q->len); /* never the last block */
            q->num_computed = (uint32_t)cached;
        }
    }
}

static bool is_stop(const duet_scheduler *s, const struct duet__group *g, int32_t token)
{
    if (!g->ignore_eos)
        for (uint32_t i = 0; i < s->p.num_eos_token_ids; i++)
            if (s->p.eos_token_ids[i] == token)
                return true;
    for (uint32_t i = 0; i < g->num_stop; i++)
        if (g->stop_ids[i] == token)
            return true;
    return false;
}

bool duet__seq_append(const duet_scheduler *s, struct duet__group *g, struct duet__sseq *q,
                      int32_t token)
{
    assert(q->len < g->tokens_cap);
    q->tokens[q->len++] = token;
    /* vLLM's StopChecker order: EOS, stop tokens, max_model_len, max_tokens. */
    if (is_stop(s, g, token)) {
        q->finish = DUET_SCHED_FINISH_STOP;
        q->stop_token = token;
    } else if (q->len > s->p.max_model_len || q->len - g->prompt_len >= g->max_tokens) {
        q->finish = DUET_SCHED_FINISH_LENGTH;
    }
    return q->finish != DUET_SCHED_FINISH_NONE;
}
