/*
 * The checks every worker runs on a batch before it touches anything (worker_kit.h:
 * duet_kit_batch_check), so that every worker refuses the same batches with the same messages.
 * Nothing is written but the message.
 */
#include "worker_kit.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

struct ctx {
    const duet_batch_limits *lim;
    char *err;
    size_t err_size;
};

__attribute__((format(printf, 3, 4))) static duet_status fail(struct ctx *c, duet_status st,
                                                              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, c->err_size, fmt, ap);
    va_end(ap);
    return st;
}

static duet_status check_pairs(struct ctx *c, const char *what, const duet_block_pair *pairs,
                               uint32_t n, uint32_t src_limit, uint32_t dst_limit)
{
    if (n && !pairs)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT, "%s: %s: %u pairs but no array", c->lim->who,
                    what, n);
    for (uint32_t i = 0; i < n; i++)
        if (pairs[i].src >= src_limit || pairs[i].dst >= dst_limit)
            return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                        "%s: %s[%u] = (%u, %u): ids must be below (%u, %u)", c->lim->who, what, i,
                        pairs[i].src, pairs[i].dst, src_limit, dst_limit);
    return DUET_STATUS_OK;
}

static duet_status check_sampling(struct ctx *c, const duet_batch *b, const duet_seq *q)
{
    const duet_sampling_params *sp = &q->sampling;
    unsigned long long id = (unsigned long long)q->seq_id;

    if (!isfinite(sp->temperature) || sp->temperature < 0)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: temperature %g must be finite and >= 0", c->lim->who, id,
                    (double)sp->temperature);
    if (!(sp->top_p > 0 && sp->top_p <= 1))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: top_p %g must be in (0, 1]", c->lim->who, id,
                    (double)sp->top_p);
    if (!(sp->min_p >= 0 && sp->min_p <= 1))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: min_p %g must be in [0, 1]", c->lim->who, id,
                    (double)sp->min_p);
    if ((b->flags & DUET_BATCH_WANT_LOGPROBS) && sp->n_logprobs > b->max_logprobs)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: n_logprobs %u exceeds the batch's max_logprobs %u",
                    c->lim->who, id, sp->n_logprobs, b->max_logprobs);
    if ((b->flags & DUET_BATCH_WANT_PROMPT_LOGPROBS) && sp->n_prompt_logprobs > b->max_logprobs)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: n_prompt_logprobs %u exceeds the batch's "
                    "max_logprobs %u",
                    c->lim->who, id, sp->n_prompt_logprobs, b->max_logprobs);
    return DUET_STATUS_OK;
}

/* Minor 3 penalties: present only where the worker applies them; values in range; both lists
 * sorted by token, unique, inside the vocabulary. */
static duet_status check_penalties(struct ctx *c, const duet_batch *b, const duet_seq *q)
{
    const duet_penalties *p = duet_seq_penalties(b, q);
    unsigned long long id = (unsigned long long)q->seq_id;
    bool neutral;

    if (!p)
        return DUET_STATUS_OK;
    if (!c->lim->penalties)
        return fail(c, DUET_STATUS_UNSUPPORTED,
                    "%s: sequence %llu: penalties / logit_bias are not supported by this worker",
                    c->lim->who, id);
    if (p->struct_size < sizeof(*p))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: penalties struct_size %u < %zu", c->lim->who, id,
                    p->struct_size, sizeof(*p));
    if (!(p->repetition > 0) || !isfinite(p->repetition) || !isfinite(p->frequency) ||
        !isfinite(p->presence))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: repetition %g must be finite and > 0, frequency %g and "
                    "presence %g finite",
                    c->lim->who, id, (double)p->repetition, (double)p->frequency,
                    (double)p->presence);
    neutral = p->repetition == 1.0f && p->frequency == 0.0f && p->presence == 0.0f;
    if ((p->n_bias && !p->bias) || (p->n_seen && !p->seen) || (!neutral && !p->n_seen))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: penalties: a list is missing", c->lim->who, id);
    for (uint32_t i = 0; i < p->n_bias; i++)
        if (p->bias[i].token < 0 || (uint32_t)p->bias[i].token >= c->lim->vocab ||
            (i && p->bias[i].token <= p->bias[i - 1].token) || !isfinite(p->bias[i].bias))
            return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                        "%s: sequence %llu: bias[%u] (token %d): tokens must increase, lie in "
                        "the vocabulary and have finite biases",
                        c->lim->who, id, i, p->bias[i].token);
    for (uint32_t i = 0; i < p->n_seen; i++)
        if (p->seen[i].token < 0 || (uint32_t)p->seen[i].token >= c->lim->vocab ||
            (i && p->seen[i].token <= p->seen[i - 1].token))
            return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                        "%s: sequence %llu: seen[%u] (token %d): tokens must increase and lie "
                        "in the vocabulary",
                        c->lim->who, id, i, p->seen[i].token);
    return DUET_STATUS_OK;
}

/* One sequence: counts, tokens, positions, block table. */
static duet_status check_seq(struct ctx *c, const duet_batch *b, const duet_seq *q)
{
    unsigned long long id = (unsigned long long)q->seq_id;
    uint64_t last = (uint64_t)q->pos + q->n_tokens - 1 + q->n_draft_steps, need;
    duet_status st;

    if (!q->tokens || q->n_tokens == 0)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT, "%s: sequence %llu: no tokens", c->lim->who,
                    id);
    if (q->n_outputs > q->n_tokens)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: n_outputs %u exceeds n_tokens %u", c->lim->who, id,
                    q->n_outputs, q->n_tokens);
    if (q->n_draft_steps && !q->n_outputs)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: n_draft_steps %u needs n_outputs >= 1", c->lim->who, id,
                    q->n_draft_steps);
    for (uint32_t j = 0; j < q->n_tokens; j++)
        if (q->tokens[j] < 0 || (uint32_t)q->tokens[j] >= c->lim->vocab)
            return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                        "%s: sequence %llu: token %d at index %u is outside the "
                        "vocabulary (0 .. %u)",
                        c->lim->who, id, q->tokens[j], j, c->lim->vocab - 1);
    if (last >= c->lim->max_position)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: position %llu is beyond the model's limit of %u "
                    "positions",
                    c->lim->who, id, (unsigned long long)last, c->lim->max_position);
    need = last / c->lim->block_size + 1;
    if (!q->block_table || q->n_blocks < need)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: sequence %llu: position %llu needs %llu blocks, the block table "
                    "has %u",
                    c->lim->who, id, (unsigned long long)last, (unsigned long long)need,
                    q->block_table ? q->n_blocks : 0);
    for (uint64_t i = 0; i < need; i++)
        if (q->block_table[i] >= c->lim->num_blocks)
            return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                        "%s: sequence %llu: block_table[%llu] = %u is not a block (the "
                        "cache has %u)",
                        c->lim->who, id, (unsigned long long)i, q->block_table[i],
                        c->lim->num_blocks);
    st = check_penalties(c, b, q);
    return st ? st : check_sampling(c, b, q);
}

/* The output arrays the batch's flags and sizes call for. */
static duet_status check_output(struct ctx *c, const duet_batch *b, const duet_batch_output *o,
                                uint64_t rows, uint64_t fed)
{
    bool lp = b->flags & DUET_BATCH_WANT_LOGPROBS, plp = b->flags & DUET_BATCH_WANT_PROMPT_LOGPROBS;

    if (o->struct_size < sizeof(*o))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT, "%s: output struct_size %u < %zu", c->lim->who,
                    o->struct_size, sizeof(*o));
    if (rows > o->n_rows)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: the batch produces %llu rows, the output holds %u", c->lim->who,
                    (unsigned long long)rows, o->n_rows);
    if ((rows && !o->tokens) || (rows && (b->flags & DUET_BATCH_WANT_PROBS) && !o->probs) ||
        (rows && lp && (!o->token_logprobs || (b->max_logprobs && !o->logprobs))) ||
        (fed && plp && (!o->prompt_next_logprobs || (b->max_logprobs && !o->prompt_logprobs))))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: an output array the batch's flags ask for is NULL", c->lim->who);
    return DUET_STATUS_OK;
}

duet_status duet_kit_batch_check(const duet_batch_limits *lim, const duet_batch *b,
                                 const duet_batch_output *o, uint64_t *rows, uint64_t *fed,
                                 char *err, size_t err_size)
{
    struct ctx cx = {lim, err, err_size}, *c = &cx;
    duet_status st;

    /* a host of minor 2 passes duet_seq without penalties: duet_seq_penalties() reads NULL */
    if (b->struct_size < sizeof(*b) ||
        (b->n_seqs && (!b->seqs || b->seq_size < offsetof(duet_seq, penalties))))
        return fail(c, DUET_STATUS_INVALID_ARGUMENT,
                    "%s: batch struct_size %u / seq_size %u too small, or no seqs", c->lim->who,
                    b->struct_size, b->seq_size);
    if (b->flags & DUET_BATCH_VERIFY)
        return fail(c, DUET_STATUS_UNSUPPORTED,
                    "%s: DUET_BATCH_VERIFY: this worker returns probability rows; the "
                    "engine verifies",
                    c->lim->who);
    if (!c->lim->num_blocks)
        return fail(c, DUET_STATUS_INVALID_ARGUMENT, "%s: execute before init_cache", c->lim->who);
    st = check_pairs(c, "swap_in", b->swap_in, b->n_swap_in, c->lim->num_swap_blocks,
                     c->lim->num_blocks);
    if (!st)
        st = check_pairs(c, "swap_out", b->swap_out, b->n_swap_out, c->lim->num_blocks,
                         c->lim->num_swap_blocks);
    if (!st)
        st = check_pairs(c, "copy", b->copy, b->n_copy, c->lim->num_blocks, c->lim->num_blocks);
    *rows = *fed = 0;
    for (uint32_t i = 0; !st && i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);

        st = check_seq(c, b, q);
        *rows += (uint64_t)q->n_outputs + q->n_draft_steps;
        *fed += q->n_tokens;
    }
    if (!st && *fed > UINT32_MAX / 2)
        st = fail(c, DUET_STATUS_CAPACITY, "%s: %llu tokens in one batch is too many", c->lim->who,
                  (unsigned long long)*fed);
    return st ? st : check_output(c, b, o, *rows, *fed);
}
