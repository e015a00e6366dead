/*
 * What a step produced (vllm-semantics §2.14): the engine reports, for every sequence that
 * sampled, the token of a completed prompt or the 1..k+1 tokens a decode accepted.
 *
 *   step:    num_computed += chunk          (the step assumes the batch runs)
 *   update:  append t0, t1, ...; num_computed += 1 for each token after the first
 *            → num_computed = len - 1: the newest token's KV comes with the next step
 *
 * Tokens go in one at a time through the stop checks (EOS unless ignored, stop tokens — both
 * kept in the output, as vLLM keeps them in the token ids — then max_model_len and max_tokens);
 * the tokens after a stop are dropped. The last prompt chunk of an n > 1 group brings n tokens,
 * one per sequence: the prompt sequence forks into n sequences sharing its blocks (vLLM forks
 * best_of children after the prompt step), and sequence i gets token i. A sequence that finishes
 * frees its blocks at once; when the last one of a group finishes, the group is finished.
 */
#include "scheduler-int.h"

#include <inttypes.h>
#include <string.h>

/* Appends accepted tokens to q; true when q finished (its blocks are then freed). */
static bool accept(duet_scheduler *s, struct duet__group *g, struct duet__sseq *q,
                   const int32_t *tokens, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0)
            q->num_computed++;
        if (duet__seq_append(s, g, q, tokens[i]))
            break;
    }
    if (!q->finish)
        return false;
    if (q->has_table)
        duet_block_manager_free(s->bm, q->id);
    q->has_table = false;
    q->table_tokens = 0;
    g->n_live--;
    return true;
}

/* Gives seqs[1..n) tables sharing seqs[0]'s blocks; on failure none is made. */
static duet_status fork_group(duet_scheduler *s, struct duet__group *g)
{
    const struct duet__sseq *p = &g->seqs[0];
    uint32_t made;

    for (made = 1; made < g->n; made++) {
        struct duet__sseq *c = &g->seqs[made];

        if (duet_block_manager_fork(s->bm, p->id, c->id))
            goto out_unfork;
        memcpy(c->tokens, p->tokens, sizeof(int32_t) * p->len);
        c->len = p->len;
        c->num_computed = p->num_computed;
        c->table_tokens = p->table_tokens;
        c->has_table = true;
        c->prefill = false;
    }
    g->n_seqs = g->n_live = g->n;
    return DUET_STATUS_OK;

out_unfork:
    while (--made > 0) {
        duet_block_manager_free(s->bm, g->seqs[made].id);
        g->seqs[made].has_table = false;
    }
    return duet__sched_fail(s, DUET_STATUS_OUT_OF_MEMORY, "request %" PRIu64 ": fork: %s",
                            g->request_id, duet_block_manager_error(s->bm));
}

static duet_status check_update(duet_scheduler *s, const struct duet__sseq *q,
                                const int32_t *tokens, uint32_t n)
{
    if (!q->samples)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "seq %" PRIu64 ": did not sample in the last step", q->id);
    if (q->decode_update ? n < 1 || n > q->samples : n != q->samples)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "seq %" PRIu64 ": %" PRIu32 " tokens, expected %s%" PRIu32, q->id,
                                n, q->decode_update ? "1 to " : "", q->samples);
    if (!tokens)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT, "seq %" PRIu64 ": no tokens",
                                q->id);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0)
            return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                    "seq %" PRIu64 ": token %" PRIu32 " is %" PRId32
                                    ", token ids must be >= 0",
                                    q->id, i, tokens[i]);
    return DUET_STATUS_OK;
}

duet_status duet_scheduler_update(duet_scheduler *s, uint64_t seq_id, const int32_t *tokens,
                                  uint32_t n_tokens)
{
    struct duet__group *g;
    struct duet__sseq *q;
    duet_status st;

    if (!s)
        return DUET_STATUS_INVALID_ARGUMENT;
    g = duet__sched_map_get(&s->seq_map, seq_id);
    if (!g || g->queue == DUET__Q_FINISHED || seq_id - g->seq_base >= g->n_seqs ||
        g->seqs[seq_id - g->seq_base].finish)
        return duet__sched_fail(s, DUET_STATUS_NOT_FOUND,
                                "seq %" PRIu64 ": unknown, finished or aborted", seq_id);
    q = &g->seqs[seq_id - g->seq_base];
    st = check_update(s, q, tokens, n_tokens);
    if (st)
        return st;
    if (!q->decode_update && n_tokens > 1 && (st = fork_group(s, g)))
        return st;
    q->samples = 0;
    g->pending--;
    s->num_pending--;
    if (!q->decode_update && n_tokens > 1) {
        for (uint32_t i = 0; i < n_tokens; i++)
            accept(s, g, &g->seqs[i], &tokens[i], 1);
    } else {
        accept(s, g, q, tokens, n_tokens);
    }
    if (g->n_live == 0)
        duet__sched_finish_group(s, g, DUET_SCHED_FINISH_NONE);
    return DUET_STATUS_OK;
}

duet_status duet_scheduler_seq_output_len(const duet_scheduler *s, uint64_t seq_id, uint32_t *out)
{
    const struct duet__group *g;

    if (!s || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    g = duet__sched_map_get(&s->seq_map, seq_id);
    if (!g || seq_id - g->seq_base >= g->n_seqs)
        return DUET_STATUS_NOT_FOUND;
    *out = g->seqs[seq_id - g->seq_base].len - g->prompt_len;
    return DUET_STATUS_OK;
}
