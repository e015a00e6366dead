/*
 * request.c — a request's record (struct duet__req): finding it among the live ones, appending
 * its tokens and their log-probabilities, freeing it. It calls no other engine file.
 */
#include "build_config.h"

#include "engine-int.h"

#include <math.h>
#include <stdlib.h>

/* e->reqs is in increasing id order (ids are handed out in order, appended, and removed with
 * memmove), so a lookup is a binary search: the step looks up every scheduled group. */
struct duet__req *duet__engine_find(duet_engine *e, uint64_t id, uint32_t *index)
{
    uint32_t lo = 0, hi = e->n_reqs;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (e->reqs[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == e->n_reqs || e->reqs[lo]->id != id)
        return NULL;
    if (index)
        *index = lo;
    return e->reqs[lo];
}

duet_status duet__req_append(const struct duet__req *r, struct duet__seqrec *s,
                             const int32_t *tokens, uint32_t n, const float *token_logprobs,
                             const duet_logprob *logprobs, uint32_t stride)
{
    uint32_t nl = r->sampling.n_logprobs;

    if (s->n_ids + n > s->cap) {
        uint32_t cap = s->cap ? s->cap : 16;
        while (cap < s->n_ids + n)
            cap *= 2;
        int32_t *ids = realloc(s->ids, cap * sizeof(*ids));
        if (!ids)
            return DUET_STATUS_OUT_OF_MEMORY;
        s->ids = ids;
        if (nl) {
            float *tl = realloc(s->token_logprobs, cap * sizeof(*tl));
            if (tl)
                s->token_logprobs = tl;
            duet_logprob *lp = tl ? realloc(s->logprobs, (size_t)cap * nl * sizeof(*lp)) : NULL;
            if (!lp)
                return DUET_STATUS_OUT_OF_MEMORY;
            s->logprobs = lp;
        }
        s->cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        s->ids[s->n_ids] = tokens[i];
        if (nl) {
            s->token_logprobs[s->n_ids] = token_logprobs ? token_logprobs[i] : NAN;
            for (uint32_t j = 0; j < nl; j++)
                s->logprobs[(size_t)s->n_ids * nl + j] =
                    logprobs ? logprobs[(size_t)i * stride + j]
                             : (duet_logprob){.token = -1, .logprob = -INFINITY};
        }
        s->n_ids++;
    }
    return DUET_STATUS_OK;
}

void duet__req_free(struct duet__req *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; r->seqs && i < r->n; i++) {
        free(r->seqs[i].ids);
        free(r->seqs[i].token_logprobs);
        free(r->seqs[i].logprobs);
    }
    free(r->seqs);
    free(r->outs);
    free(r->prompt);
    free(r->prompt_lp);
    free(r->prompt_top);
    free(r->error);
    free(r->bias);
    free(r);
}
