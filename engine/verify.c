/*
 * verify.c — a speculative step's verification (DESIGN §7.3; docs/engine.md, "Speculative
 * decoding", steps 3 and 4), sequence by sequence in batch order once both workers are done:
 * a non-finite row of either worker fails the request; otherwise duet__verify (rejection.c)
 * decides the accepted drafts and the recovered or bonus token (greedy requests by argmax
 * matching, except under synthetic acceptance, whose draws ignore the temperature), which are
 * committed (commit.c) with the target's log-probabilities, and the draft cache's length is set.
 * Calls only rejection.c, commit.c and util.c.
 */
#include "build_config.h"

#include "../sampling/sampling.h"
#include "engine-int.h"

#include <math.h>

/* Log-probability of each emitted token: the target's own when it sampled that token, else
 * looked up in the row's top list (NAN when absent). */
static void emitted_logprobs(const struct duet__spec *sb, uint32_t row, const int32_t *emitted,
                             uint32_t n, uint32_t max_lp, float *out)
{
    for (uint32_t j = 0; j < n; j++) {
        const duet_logprob *top = &sb->lps[(size_t)(row + j) * max_lp];
        out[j] = NAN;
        if (sb->ttok[row + j] == emitted[j])
            out[j] = sb->tlp[row + j];
        for (uint32_t t = 0; isnan(out[j]) && t < max_lp; t++)
            if (top[t].token == emitted[j])
                out[j] = top[t].logprob;
    }
}

/* Verifies sequence i's proposals; writes the emitted tokens and returns how many. */
static duet_status verify_one(duet_engine *e, uint32_t i, const struct duet__spec *sb,
                              int32_t *emitted, uint32_t *n_emitted)
{
    const struct duet__spec_seq *s = &sb->ss[i];
    const duet_seq *q = &e->sc.seqs[i];
    uint32_t v = e->workers[0].info.vocab_size, a = 0;
    struct duet__accept_params ap = e->accept;
    struct duet__proposal pr = {.draft_tokens = &sb->dtok[s->drow],
                                .draft_probs = &sb->dprobs[(size_t)s->drow * v],
                                .target_probs = &sb->tprobs[(size_t)s->trow * v],
                                .k = s->k,
                                .seed = q->sampling.seed,
                                .position = s->len};
    char msg[256];

    if (s->k == 0) {
        emitted[0] = sb->ttok[s->trow];
        *n_emitted = 1;
        return DUET_STATUS_OK;
    }
    /* synthetic acceptance draws its decisions whatever the temperature */
    if (q->sampling.temperature < DUET_SAMPLING_EPS && ap.method != DUET__ACCEPT_SYNTHETIC)
        ap.method = DUET__ACCEPT_GREEDY;
    if (duet__verify(&ap, &pr, v, sb->scratch, emitted, &a, msg, sizeof(msg)))
        return duet__engine_fail(e, DUET_STATUS_INTERNAL, "verify, sequence %llu: %s",
                                 (unsigned long long)q->seq_id, msg);
    *n_emitted = a + 1;
    e->m.proposed += s->k;
    e->m.accepted += a;
    e->m.emitted += a + 1;
    e->m.verified++;
    for (uint32_t j = 0; j < s->k && j < DUET_MAX_SPEC_TOKENS; j++) {
        e->m.proposed_at[j]++;
        e->m.accepted_at[j] += j < a;
        e->sc.owner[i]->accepted_at[j] += j < a;
    }
    e->sc.owner[i]->proposed += s->k;
    e->sc.owner[i]->accepted += a;
    e->sc.owner[i]->drafts++;
    return DUET_STATUS_OK;
}

/* Whether a row of sequence i was non-finite (the draft's first): then its request fails. */
static bool nonfinite_rows(duet_engine *e, uint32_t i, const struct duet__spec *sb)
{
    const struct duet__spec_seq *s = &sb->ss[i];

    for (uint32_t j = 0; j < s->k; j++)
        if (sb->dtok[s->drow + j] == DUET_TOKEN_NONFINITE) {
            duet__fail_nonfinite(e, i, 1, s->len - 1 + j);
            return true;
        }
    for (uint32_t j = 0; j <= s->k; j++)
        if (sb->ttok[s->trow + j] == DUET_TOKEN_NONFINITE) {
            duet__fail_nonfinite(e, i, 0, s->len - 1 + j);
            return true;
        }
    return false;
}

duet_status duet__verify_commit(duet_engine *e, uint32_t n, uint32_t max_lp)
{
    const struct duet__spec *sb = e->spec;
    int32_t emitted[64];
    float lp[64];
    duet_status st = DUET_STATUS_OK;

    for (uint32_t i = 0; !st && i < n; i++) {
        const struct duet__spec_seq *s = &sb->ss[i];
        uint32_t m = 0;

        if (nonfinite_rows(e, i, sb))
            continue;
        st = verify_one(e, i, sb, emitted, &m);
        if (st)
            break;
        if (max_lp)
            emitted_logprobs(sb, s->trow, emitted, m, max_lp, lp);
        e->sc.rec[i]->draft_computed = s->len + (s->k ? (m - 1 < s->k - 1 ? m - 1 : s->k - 1) : 0);
        st = duet__commit(e, i, emitted, m, max_lp ? lp : NULL,
                          max_lp ? &sb->lps[(size_t)s->trow * max_lp] : NULL, max_lp);
    }
    return st;
}
