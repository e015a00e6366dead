/*
 * Penalties and logit bias (plugin.h: duet_penalties; vLLM's logits processor for logit_bias,
 * then its apply_penalties): a sparse edit of one row of logits.
 *
 *   logits[V] ──copy──► out[V]
 *   every token of seen ∪ bias ∪ recent, each once:
 *       v = logit + bias[t]
 *       if t in prompt ∪ generated:  v = v > 0 ? v / repetition : v * repetition
 *                                    v -= frequency × count[t] + presence × (count[t] > 0)
 *
 * seen and bias are sorted by token (binary search); recent holds a few tokens (the drafts
 * before a row, at most k), searched linearly. So a row costs one copy of V floats and
 * O((|seen| + |bias|) log) edits, and no vocab-sized count array is ever built.
 */
#include "sampling.h"

#include <stdbool.h>
#include <string.h>

static const duet_token_count *find_seen(const duet_penalties *p, int32_t t)
{
    uint32_t lo = 0, hi = p->n_seen;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (p->seen[mid].token < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n_seen && p->seen[lo].token == t ? &p->seen[lo] : NULL;
}

static const duet_token_bias *find_bias(const duet_penalties *p, int32_t t)
{
    uint32_t lo = 0, hi = p->n_bias;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (p->bias[mid].token < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n_bias && p->bias[lo].token == t ? &p->bias[lo] : NULL;
}

/* Occurrences of t among the first n recent tokens (fed, then drawn). */
static uint32_t recent_count(const duet__recent *rc, int32_t t, uint32_t n)
{
    uint32_t c = 0, i;

    if (!rc)
        return 0;
    for (i = 0; i < rc->n_fed && i < n; i++)
        c += rc->fed[i] == t;
    for (uint32_t j = 0; j < rc->n_drawn && i + j < n; j++)
        c += rc->drawn[j] == t;
    return c;
}

static int32_t recent_at(const duet__recent *rc, uint32_t i)
{
    return i < rc->n_fed ? rc->fed[i] : rc->drawn[i - rc->n_fed];
}

static duet__penalty_edit edit_of(int32_t t, const duet_penalties *p, const duet__recent *rc)
{
    const duet_token_count *s = find_seen(p, t);
    const duet_token_bias *b = find_bias(p, t);
    uint32_t extra = recent_count(rc, t, UINT32_MAX);
    duet__penalty_edit e = {t, b ? b->bias : 0.0f, 1.0f, 0.0};

    if (s || extra) {
        double c = (double)(s ? s->count : 0) + extra;

        e.repetition = p->repetition;
        e.subtract = (double)p->frequency * c + (c > 0 ? (double)p->presence : 0.0);
    }
    return e;
}

uint32_t duet__penalty_edits(const duet_penalties *p, const duet__recent *rc, uint32_t vocab,
                             duet__penalty_edit *out)
{
    uint32_t n = 0, n_recent = rc ? rc->n_fed + rc->n_drawn : 0;

    for (uint32_t i = 0; i < p->n_seen; i++)
        if ((uint32_t)p->seen[i].token < vocab)
            out[n++] = edit_of(p->seen[i].token, p, rc);
    for (uint32_t i = 0; i < p->n_bias; i++)
        if ((uint32_t)p->bias[i].token < vocab && !find_seen(p, p->bias[i].token))
            out[n++] = edit_of(p->bias[i].token, p, rc);
    for (uint32_t i = 0; i < n_recent; i++) {
        int32_t t = recent_at(rc, i);

        /* once per token: skip marks, tokens edited above, and repeats within recent */
        if (t < 0 || (uint32_t)t >= vocab || find_seen(p, t) || find_bias(p, t) ||
            recent_count(rc, t, i) > 0)
            continue;
        out[n++] = edit_of(t, p, rc);
    }
    return n;
}

void duet__penalize(const float *logits, uint32_t vocab, const duet_penalties *p,
                    const duet__recent *rc, float *out)
{
    memcpy(out, logits, (size_t)vocab * sizeof(*out));
    for (uint32_t i = 0; i < p->n_seen; i++)
        if ((uint32_t)p->seen[i].token < vocab) {
            duet__penalty_edit e = edit_of(p->seen[i].token, p, rc);

            out[e.token] = duet__penalty_apply(out[e.token], &e);
        }
    for (uint32_t i = 0, n = rc ? rc->n_fed + rc->n_drawn : 0; i < p->n_bias + n; i++) {
        duet__penalty_edit e;
        int32_t t = i < p->n_bias ? p->bias[i].token : recent_at(rc, i - p->n_bias);

        if (t < 0 || (uint32_t)t >= vocab || find_seen(p, t) ||
            (i >= p->n_bias && (find_bias(p, t) || recent_count(rc, t, i - p->n_bias) > 0)))
            continue;
        e = edit_of(t, p, rc);
        out[t] = duet__penalty_apply(out[t], &e);
    }
}
