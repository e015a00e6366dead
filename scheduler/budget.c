/*
 * A step's budget (vLLM's SchedulingBudget, vllm-semantics §2.3): tokens and sequences added so
 * far against max_num_batched_tokens and max_num_seqs.
 *
 *   budget { epoch, token_budget, max_num_seqs, num_batched_tokens, num_curr_seqs }
 *   group  { tok_epoch, seq_epoch }   == budget.epoch: the group is counted
 *
 * vLLM keeps two sets of request ids so that adding a group twice counts it once and subtracting
 * a group that was never added does nothing; a group's epoch fields do the same in O(1) without
 * clearing anything between steps (each budget takes a new epoch).
 */
#include "scheduler-int.h"

void duet__budget_init(struct duet__budget *b, uint64_t epoch, uint32_t token_budget,
                       uint32_t max_num_seqs)
{
    *b = (struct duet__budget){
        .epoch = epoch, .token_budget = token_budget, .max_num_seqs = max_num_seqs};
}

bool duet__budget_can_schedule(const struct duet__budget *b, uint32_t num_new_tokens,
                               uint32_t num_new_seqs)
{
    return (uint64_t)b->num_batched_tokens + num_new_tokens <= b->token_budget &&
           (uint64_t)b->num_curr_seqs + num_new_seqs <= b->max_num_seqs;
}

uint32_t duet__budget_remaining(const struct duet__budget *b)
{
    return b->num_batched_tokens < b->token_budget ? b->token_budget - b->num_batched_tokens : 0;
}

void duet__budget_add_tokens(struct duet__budget *b, struct duet__group *g, uint32_t n)
{
    if (g->tok_epoch == b->epoch)
        return;
    g->tok_epoch = b->epoch;
    b->num_batched_tokens += n;
}

void duet__budget_sub_tokens(struct duet__budget *b, struct duet__group *g, uint32_t n)
{
    if (g->tok_epoch != b->epoch)
        return;
    g->tok_epoch = 0;
    b->num_batched_tokens -= n < b->num_batched_tokens ? n : b->num_batched_tokens;
}

void duet__budget_add_seqs(struct duet__budget *b, struct duet__group *g, uint32_t n)
{
    if (g->seq_epoch == b->epoch)
        return;
    g->seq_epoch = b->epoch;
    b->num_curr_seqs += n;
}

void duet__budget_sub_seqs(struct duet__budget *b, struct duet__group *g, uint32_t n)
{
    if (g->seq_epoch != b->epoch)
        return;
    g->seq_epoch = 0;
    b->num_curr_seqs -= n < b->num_curr_seqs ? n : b->num_curr_seqs;
}
