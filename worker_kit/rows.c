/*
 * Which logit row goes to which output row (worker_kit.h: duet_kit_rows), the same in every
 * worker: output row o of sequence i is row_base(i) + o, its token chosen at position
 * pos + (fed index) + 1; prompt log-probabilities go to the fed row's global index; drafting
 * step s feeds the token the sequence's previous row sampled.
 */
#include "worker_kit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void duet_kit_rows_fini(duet_kit_rows *r)
{
    free(r->row_base);
    free(r->draft_tok);
    free(r->rows);
    *r = (duet_kit_rows){0};
}

/* Replaces *p with room for n elements of elem bytes (contents not kept). */
static bool regrow(void **p, size_t n, size_t elem)
{
    free(*p);
    *p = n <= SIZE_MAX / elem ? malloc(n * elem) : NULL;
    return *p != NULL;
}

bool duet_kit_rows_reserve(duet_kit_rows *r, size_t n_seqs, size_t n_fed)
{
    if (n_seqs > r->cap_seqs) {
        r->cap_seqs = 0;
        if (!regrow((void **)&r->row_base, n_seqs, sizeof(*r->row_base)) ||
            !regrow((void **)&r->draft_tok, n_seqs, sizeof(*r->draft_tok)))
            return false;
        r->cap_seqs = n_seqs;
    }
    /* a drafting step has a row per sequence, the first forward one per fed token at most */
    n_fed = n_fed > n_seqs ? n_fed : n_seqs;
    if (n_fed > r->cap_rows) {
        r->cap_rows = 0;
        if (!regrow((void **)&r->rows, n_fed, sizeof(*r->rows)))
            return false;
        r->cap_rows = n_fed;
    }
    return true;
}

uint32_t duet_kit_rows_feed(duet_kit_rows *r, const duet_batch *b)
{
    bool plp = b->flags & DUET_BATCH_WANT_PROMPT_LOGPROBS;
    uint64_t at = 0;
    uint32_t n = 0, fed = 0;

    r->max_steps = 0;
    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);
        uint32_t first_out = q->n_tokens - q->n_outputs;

        r->row_base[i] = at;
        at += (uint64_t)q->n_outputs + q->n_draft_steps;
        r->max_steps = q->n_draft_steps > r->max_steps ? q->n_draft_steps : r->max_steps;
        for (uint32_t j = 0; j < q->n_tokens; j++) {
            bool is_out = j >= first_out;

            if (!is_out && !plp)
                continue;
            r->rows[n++] = (duet_kit_row){
                .q = q,
                .fed = fed + j,
                .next = j + 1 < q->n_tokens ? q->tokens[j + 1] : -1,
                .out_row = is_out ? (int64_t)(r->row_base[i] + j - first_out) : -1,
                .fed_row = plp ? (int64_t)(fed + j) : -1,
                .pos = (uint64_t)q->pos + j + 1,
            };
        }
        fed += q->n_tokens;
    }
    return n;
}

uint32_t duet_kit_rows_draft(duet_kit_rows *r, const duet_batch *b, const duet_batch_output *o,
                             uint32_t step)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);
        uint64_t prev = r->row_base[i] + q->n_outputs + step - 2;
        uint32_t pos = q->pos + q->n_tokens - 1 + step;

        if (q->n_draft_steps < step)
            continue;
        /* After a non-finite row the draft goes on with token 0; its rows repeat the mark. */
        r->draft_tok[n] = o->tokens[prev] < 0 ? 0 : o->tokens[prev];
        r->rows[n] = (duet_kit_row){q, n, -1, (int64_t)(prev + 1), -1, (uint64_t)pos + 1};
        n++;
    }
    return n;
}

void duet_kit_row_nonfinite(const duet_batch *b, duet_batch_output *o, int64_t row, uint32_t vocab)
{
    size_t M = b->max_logprobs, V = vocab;

    o->tokens[row] = DUET_TOKEN_NONFINITE;
    if (b->flags & DUET_BATCH_WANT_PROBS)
        memset(o->probs + (size_t)row * V, 0, V * sizeof(float));
    if (b->flags & DUET_BATCH_WANT_LOGPROBS) {
        o->token_logprobs[row] = NAN;
        for (size_t k = 0; k < M; k++)
            o->logprobs[(size_t)row * M + k] = (duet_logprob){-1, NAN};
    }
}

void duet_kit_rows_repeat_nonfinite(const duet_kit_rows *r, uint32_t n, const duet_batch *b,
                                    duet_batch_output *o, uint32_t vocab)
{
    for (uint32_t i = 0; i < n; i++)
        if (o->tokens[r->rows[i].out_row - 1] == DUET_TOKEN_NONFINITE)
            duet_kit_row_nonfinite(b, o, r->rows[i].out_row, vocab);
}

void duet_kit_emit_top(duet_logprob *top, const duet_logprob *src, uint32_t n, uint32_t m)
{
    if (!top)
        return;
    if (src != top)
        memcpy(top, src, (size_t)(n < m ? n : m) * sizeof(*top));
    for (uint32_t k = n; k < m; k++)
        top[k] = (duet_logprob){-1, 0.0f};
}
