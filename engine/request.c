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

duet_status duet__req_append(struct duet__req *r, const int32_t *tokens, uint32_t n,
                             const float *token_logprobs, const duet_logprob *logprobs,
                             uint32_t stride)
{
    uint32_t nl = r->sampling.n_logprobs;

    if (r->n_ids + n > r->cap) {
        uint32_t cap = r->cap ? r->cap : 16;
        while (cap < r->n_ids + n)
            cap *= 2;
        int32_t *ids = realloc(r->ids, cap * sizeof(*ids));
        if (!ids)
            return DUET_STATUS_OUT_OF_MEMORY;
        r->ids = ids;
        if (nl) {
            float *tl = realloc(r->token_logprobs, cap * sizeof(*tl));
            if (tl)
                r->token_logprobs = tl;
            duet_logprob *lp = tl ? realloc(r->logprobs, (size_t)cap * nl * sizeof(*lp)) : NULL;
            if (!lp)
                return DUET_STATUS_OUT_OF_MEMORY;
            r->logprobs = lp;
        }
        r->cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        r->ids[r->n_ids] = tokens[i];
        if (nl) {
            r->token_logprobs[r->n_ids] = token_logprobs ? token_logprobs[i] : NAN;
            for (uint32_t j = 0; j < nl; j++)
                r->logprobs[(size_t)r->n_ids * nl + j] =
                    logprobs ? logprobs[(size_t)i * stride + j]
                             : (duet_logprob){.token = -1, .logprob = -INFINITY};
        }
        r->n_ids++;
    }
    return DUET_STATUS_OK;
}

void duet__req_free(struct duet__req *r)
{
    if (!r)
        return;
    free(r->prompt);
    free(r->ids);
    free(r->token_logprobs);
    free(r->logprobs);
    free(r->prompt_lp);
    free(r->prompt_top);
    free(r->error);
    free(r->bias);
    free(r);
}
