/*
 * sampling.h — turning a row of logits into a token, the same way in every worker and in the
 * engine (plugin.h: duet_sampling_params, duet_batch_output).
 *
 *   raw logits [V] ──► log-softmax (temperature 1) ──► token_logprob, top-N logprobs
 *        │
 *        └──► / temperature ──► softmax ──► top-k ──► top-p ──► min-p ──► probs [V]
 *                                                                           │
 *                       u = duet__rng_uniform(seed, position, DUET_DRAW_SAMPLE)
 *                                                                           ▼
 *                                                   token = inverse CDF of probs at u
 *
 * Greedy (temperature < DUET_SAMPLING_EPS) takes the argmax (the lowest id on ties) and its
 * probability row is one-hot. Filters follow vLLM 0.6: top-k keeps the k largest logits, top-p
 * then keeps the smallest set of most likely tokens whose mass (renormalised after top-k) reaches
 * top_p, min-p then drops tokens below min_p times the largest remaining probability; at least
 * one token always survives, and the survivors are renormalised. The token is drawn from exactly
 * the row written to probs, so a rejection sampler may use that row as the proposal q.
 *
 * Randomness is counter-based: a draw is a pure function of (seed, position, draw index), where
 * position is the position of the token being chosen. No state is shared, so a request samples
 * the same tokens whatever else is in the batch and whichever worker runs it.
 *
 * A duet__sampler is scratch for one row at a time (one per thread); it holds no randomness.
 */
#ifndef DUET_SAMPLING_H
#define DUET_SAMPLING_H

#include <duet/plugin.h>

#include <stdint.h>

/* Temperatures below this are greedy (vLLM's _SAMPLING_EPS). */
#define DUET_SAMPLING_EPS 1e-5f

/* Draw indices: independent random streams at one (seed, position). */
#define DUET_DRAW_SAMPLE 0u   /* a worker sampling the token at a position */
#define DUET_DRAW_ACCEPT 1u   /* the rejection sampler's accept test of a draft token */
#define DUET_DRAW_RESAMPLE 2u /* the rejection sampler's draw from the residual distribution */

/* The generator compiles for CUDA devices too (the GPU worker's sampler draws the same numbers). */
#ifdef __CUDACC__
#define DUET_RNG_HD __host__ __device__
#else
#define DUET_RNG_HD
#endif

static inline DUET_RNG_HD uint64_t duet__rng_mix(uint64_t z)
{
    /* splitmix64's finaliser: a bijection with full avalanche */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform double in [0, 1) (53 bits) that depends only on (seed, position, draw). */
static inline DUET_RNG_HD double duet__rng_uniform(uint64_t seed, uint64_t position, uint32_t draw)
{
    uint64_t h = duet__rng_mix(seed + 0x9e3779b97f4a7c15ull);
    h = duet__rng_mix(h ^ (position + 0x632be59bd9b4e019ull));
    h = duet__rng_mix(h ^ ((uint64_t)draw + 0x85157af5ull));
    return (double)(h >> 11) * 0x1.0p-53;
}

typedef struct duet__sampler duet__sampler;

/* Scratch for rows of vocab entries. The caller owns *out and releases it with
 * duet__sampler_destroy(). OUT_OF_MEMORY or INVALID_ARGUMENT (vocab 0). */
duet_status duet__sampler_create(uint32_t vocab, duet__sampler **out);
void duet__sampler_destroy(duet__sampler *sampler);

/*
 * Samples the token at `position` from one row of raw logits[vocab] with sp's settings (see the
 * top of this file) and returns it. Optional outputs (NULL to skip):
 *   probs[vocab]     the distribution the token was drawn from (one-hot for greedy)
 *   token_logprob    log-softmax of the raw logits at the returned token
 *   top[n_top]       the n_top most likely tokens by raw log-softmax, most likely first
 *                    (lower id first on ties); entries beyond vocab have token -1
 * Non-finite logits: NaN counts as -infinity; a row with no finite logit samples token 0.
 */
int32_t duet__sample_row(duet__sampler *sampler, const float *logits,
                         const duet_sampling_params *sp, uint64_t position, float *probs,
                         float *token_logprob, duet_logprob *top, uint32_t n_top);

/* Raw log-softmax of logits[vocab]: the n_top most likely into top (as duet__sample_row), and the
 * log-probability of token `next` into *next_logprob (NAN when next < 0; next_logprob may be
 * NULL). Used for prompt log-probabilities. */
void duet__row_logprobs(duet__sampler *sampler, const float *logits, uint32_t n_top,
                        duet_logprob *top, int32_t next, float *next_logprob);

/* Minor 3 penalties (plugin.h: duet_penalties). The tokens a row counts as generated beyond
 * pen->seen: fed tokens after the first output position, then tokens sampled by earlier drafting
 * steps (negative ones, DUET_TOKEN_NONFINITE, are skipped). */
typedef struct duet__recent {
    const int32_t *fed;   /* [n_fed] */
    uint32_t n_fed;       /* scoring row j: j */
    const int32_t *drawn; /* [n_drawn] */
    uint32_t n_drawn;     /* drafting step s: s */
} duet__recent;

/* The recent tokens of the row of sequence q that chooses the token at `position` (the kit's
 * row pos) and writes output row out_row of out_tokens (the batch output's tokens, whose earlier
 * rows of q are already sampled). */
static inline duet__recent duet__penalty_recent(const duet_seq *q, uint64_t position,
                                                const int32_t *out_tokens, int64_t out_row)
{
    uint64_t first = (uint64_t)q->pos + q->n_tokens - q->n_outputs; /* fed pos of output row 0 */
    uint64_t d = position - 1 - first;
    duet__recent rc = {q->tokens + (q->n_tokens - q->n_outputs) + 1, 0, NULL, 0};

    if (q->n_outputs == 0 || position < first + 1)
        return rc;
    if (d < q->n_outputs) {
        rc.n_fed = (uint32_t)d;
    } else {
        rc.n_fed = q->n_outputs - 1;
        rc.n_drawn = (uint32_t)(d - q->n_outputs + 1);
        rc.drawn = out_tokens + out_row - rc.n_drawn;
    }
    return rc;
}

/* What the penalties do to one token's logit l: v = l + bias; v = v > 0 ? v / repetition :
 * v * repetition (repetition 1 when the token is in neither prompt nor output); v - subtract
 * (frequency × count + presence × (count > 0)). In double, rounded once: the same on a device. */
typedef struct duet__penalty_edit {
    int32_t token;
    float bias;
    float repetition;
    double subtract;
} duet__penalty_edit;

static inline DUET_RNG_HD float duet__penalty_apply(float l, const duet__penalty_edit *e)
{
    double v = (double)l + (double)e->bias;

    v = v > 0 ? v / (double)e->repetition : v * (double)e->repetition;
    return (float)(v - e->subtract);
}

/* The edits of one row (each token of seen ∪ bias ∪ recent once, tokens outside [0, vocab)
 * skipped) into out, which has room for n_seen + n_bias + n_fed + n_drawn; returns how many. */
uint32_t duet__penalty_edits(const duet_penalties *pen, const duet__recent *recent, uint32_t vocab,
                             duet__penalty_edit *out);

/* Writes logits[vocab] with pen applied (plugin.h's formula; recent as above, may be NULL) into
 * out[vocab]: duet__penalty_apply over duet__penalty_edits. */
void duet__penalize(const float *logits, uint32_t vocab, const duet_penalties *pen,
                    const duet__recent *recent, float *out);

/* duet__sample_row with penalties: the token and probs from the penalised logits, the
 * log-probabilities from the raw ones. pen NULL: exactly duet__sample_row. */
int32_t duet__sample_row_penalized(duet__sampler *sampler, const float *logits,
                                   const duet_sampling_params *sp, const duet_penalties *pen,
                                   const duet__recent *recent, uint64_t position, float *probs,
                                   float *token_logprob, duet_logprob *top, uint32_t n_top);

/* The token at which the cumulative sum of probs[vocab] (in id order, non-negative entries that
 * need not sum to 1) first exceeds u × the total; the last token with positive mass when rounding
 * runs past the end; -1 when no entry is positive. */
int32_t duet__sample_from_probs(const float *probs, uint32_t vocab, double u);

#endif /* DUET_SAMPLING_H */
