/*
 * The sampler: one row of logits in, one token (with the distribution it was drawn from and the
 * row's log-probabilities) out, without sorting the vocabulary.
 *
 *   logits[V] ─┬─ top-k <= 512: heap of the k best while scanning ─┐
 *              └─ otherwise: every token                           ├─► cand[0..n), id order
 *                                                                  │   w = exp((key - max) / T)
 *      top-k > 512 ─► cut(count k) ◄───────────────────────────────┤   (+inf keys: w = 1, rest 0)
 *      top-p       ─► cut(mass top_p × sum w) ◄────────────────────┘   w = 0 dropped
 *      min-p       ─► keep w >= min_p × max w
 *                  ─► probs[id] = w / sum w, zero elsewhere ─► token = inverse CDF at u
 *
 * "More likely" is one total order everywhere: larger key (the logit, NaN as -inf) first, lower
 * id on ties. Every filter keeps a prefix of that order, at least one token, and leaves the kept
 * candidates in id order, so the draw walks them in the order duet__sample_from_probs walks the
 * whole row and picks the same token from the same sums without scanning the zeros.
 *
 * cut() finds a prefix without sorting: one pass puts each candidate in one of 1024 buckets of
 * equal key width (the last one also takes everything more than 64 temperatures below the top,
 * weight < e^-64) and counts tokens and mass per bucket; a walk over the buckets finds the one
 * where the goal is reached. Buckets before it are kept whole, buckets after it dropped, and the
 * boundary bucket (typically tens of tokens) goes through the same procedure on its own key
 * range. Small sets are sorted; a set whose keys are all equal is already in order (id order).
 * So a filtered row costs a few linear passes; the exponentials of the weights dominate.
 *
 * Weights, sums and thresholds are doubles, so the kept set is the one a double-precision
 * reference finds; only probs is float. Scratch (two candidate arrays, the probability row used
 * when the caller passes none, the histogram) is sized at creation, so a row allocates nothing.
 * A sampler serves one row at a time: one per thread, no locks, no global state, no randomness.
 */
#include "sampling.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Top-k up to this keeps a heap while scanning the row; larger k goes through cut(). */
#define HEAP_TOP_K_MAX 512u
/* Buckets of one cut() level. */
#define CUT_BUCKETS 1024u
/* cut() sorts sets up to this size instead of bucketing them. */
#define CUT_SORT_MAX 64u
/* Bucket levels before cut() sorts what is left (keys that refuse to spread out). */
#define CUT_MAX_DEPTH 6u
/* Temperatures below the top beyond which tokens share cut()'s last bucket. */
#define CUT_SPAN 64.0

/* One token under consideration. */
struct cand {
    double w;    /* unnormalised probability, exp((key - max) / T) */
    float key;   /* the logit, NaN replaced by -inf */
    uint32_t id; /* token id */
};

struct duet__sampler {
    uint32_t vocab;              /* entries per row */
    struct cand *cand;           /* [vocab] heaps, then the candidates of the row */
    struct cand *spill;          /* [vocab] the boundary bucket of cut()'s first level */
    float *probs;                /* [vocab] the row drawn from when the caller passes none */
    float *penalized;            /* [vocab] a row's logits after its penalties */
    uint32_t count[CUT_BUCKETS]; /* cut(): tokens per bucket */
    double mass[CUT_BUCKETS];    /* cut(): weight per bucket */
};

duet_status duet__sampler_create(uint32_t vocab, duet__sampler **out)
{
    duet__sampler *s;

    if (!out)
        return DUET_STATUS_INVALID_ARGUMENT;
    *out = NULL;
    if (vocab == 0)
        return DUET_STATUS_INVALID_ARGUMENT;
    s = calloc(1, sizeof(*s));
    if (!s)
        return DUET_STATUS_OUT_OF_MEMORY;
    s->vocab = vocab;
    s->cand = malloc(sizeof(*s->cand) * vocab);
    if (!s->cand)
        goto out_free_sampler;
    s->spill = malloc(sizeof(*s->spill) * vocab);
    if (!s->spill)
        goto out_free_cand;
    s->probs = malloc(sizeof(*s->probs) * vocab);
    if (!s->probs)
        goto out_free_spill;
    s->penalized = malloc(sizeof(*s->penalized) * vocab);
    if (!s->penalized)
        goto out_free_probs;
    *out = s;
    return DUET_STATUS_OK;

out_free_probs:
    free(s->probs);
out_free_spill:
    free(s->spill);
out_free_cand:
    free(s->cand);
out_free_sampler:
    free(s);
    return DUET_STATUS_OUT_OF_MEMORY;
}

void duet__sampler_destroy(duet__sampler *sampler)
{
    if (!sampler)
        return;
    free(sampler->penalized);
    free(sampler->probs);
    free(sampler->spill);
    free(sampler->cand);
    free(sampler);
}

/* ------------------------------------------------------------------------------------------ */
/* The order: larger key first, lower id on ties                                               */
/* ------------------------------------------------------------------------------------------ */

static inline float clean_key(float x)
{
    return isnan(x) ? -INFINITY : x;
}

static inline bool better(const struct cand *a, const struct cand *b)
{
    return a->key > b->key || (a->key == b->key && a->id < b->id);
}

static int cmp_better_first(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;

    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

static int cmp_id(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;

    return (a->id > b->id) - (a->id < b->id);
}

/* ------------------------------------------------------------------------------------------ */
/* Heaps of the best n: h[0] is the worst kept, each parent worse than its children             */
/* ------------------------------------------------------------------------------------------ */

static void heap_sift_down(struct cand *h, uint32_t n, uint32_t i)
{
    struct cand x = h[i];

    for (;;) {
        uint32_t child = 2 * i + 1;

        if (child >= n)
            break;
        if (child + 1 < n && better(&h[child], &h[child + 1]))
            child++;
        if (!better(&x, &h[child]))
            break;
        h[i] = h[child];
        i = child;
    }
    h[i] = x;
}

/* Leaves the n best tokens of logits[vocab] (1 <= n <= vocab) in h[0..n) as a heap. A later id
 * never beats an equal key already kept, so a plain > decides. */
static void heap_select(const float *logits, uint32_t vocab, uint32_t n, struct cand *h)
{
    for (uint32_t i = 0; i < n; i++)
        h[i] = (struct cand){0.0, clean_key(logits[i]), i};
    for (uint32_t i = n / 2; i-- > 0;)
        heap_sift_down(h, n, i);
    for (uint32_t i = n; i < vocab; i++) {
        float key = clean_key(logits[i]);

        if (key > h[0].key) {
            h[0] = (struct cand){0.0, key, i};
            heap_sift_down(h, n, 0);
        }
    }
}

/* Turns the heap h[0..n) into a list, best first. */
static void heap_sort(struct cand *h, uint32_t n)
{
    for (uint32_t end = n; end-- > 1;) {
        struct cand worst = h[0];

        h[0] = h[end];
        h[end] = worst;
        heap_sift_down(h, end, 0);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Candidates                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* The softmax numerator of key against the largest key m; inv_t = 1 / temperature. */
static inline double weight(float key, float m, double inv_t)
{
    return exp(((double)key - (double)m) * inv_t);
}

/* Weighs c[0..n) against their largest key m and keeps, in order, those of positive weight;
 * returns how many (0 when m is -inf: no finite logit). When m is +inf the +inf tokens share the
 * mass. At an infinite temperature a -inf key weighs exp(-inf * 0) = NaN, which fails w > 0 too. */
static uint32_t weigh(struct cand *c, uint32_t n, float m, double inv_t)
{
    uint32_t r = 0;

    if (m == -INFINITY)
        return 0;
    for (uint32_t j = 0; j < n; j++) {
        struct cand x = c[j];

        x.w = m == INFINITY ? (x.key == INFINITY ? 1.0 : 0.0) : weight(x.key, m, inv_t);
        c[r] = x;
        r += x.w > 0.0;
    }
    return r;
}

/* The largest logit, NaN ignored (-inf when there is none), in four lanes so that the
 * comparisons do not wait on each other. */
static float max_logit(const float *logits, uint32_t vocab)
{
    float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;
    uint32_t i = 0;

    /* NaN never compares greater */
    for (; i + 4 <= vocab; i += 4) {
        m0 = logits[i] > m0 ? logits[i] : m0;
        m1 = logits[i + 1] > m1 ? logits[i + 1] : m1;
        m2 = logits[i + 2] > m2 ? logits[i + 2] : m2;
        m3 = logits[i + 3] > m3 ? logits[i + 3] : m3;
    }
    for (; i < vocab; i++)
        m0 = logits[i] > m0 ? logits[i] : m0;
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

/* Every token of positive weight into c, in id order; returns how many (0: no finite logit) and
 * their largest key. A row with a finite maximum, the common one, is weighed as it is gathered. */
static uint32_t gather_all(const float *logits, uint32_t vocab, double inv_t, struct cand *c,
                           float *kmax)
{
    float m = max_logit(logits, vocab);
    uint32_t n = 0;

    *kmax = m;
    if (m == -INFINITY)
        return 0;
    if (m == INFINITY) {
        for (uint32_t i = 0; i < vocab; i++)
            c[i] = (struct cand){0.0, clean_key(logits[i]), i};
        return weigh(c, vocab, m, inv_t);
    }
    for (uint32_t i = 0; i < vocab; i++) {
        float key = clean_key(logits[i]);
        double w = weight(key, m, inv_t);

        c[n] = (struct cand){w, key, i};
        n += w > 0.0; /* see weigh() for NaN */
    }
    return n;
}

/* The k best tokens (k < vocab) of positive weight into c, in id order, through a heap; returns
 * how many and their largest key. */
static uint32_t gather_top_k(const float *logits, uint32_t vocab, uint32_t k, double inv_t,
                             struct cand *c, float *kmax)
{
    float m = -INFINITY;

    heap_select(logits, vocab, k, c);
    qsort(c, k, sizeof(*c), cmp_id);
    for (uint32_t j = 0; j < k; j++)
        m = c[j].key > m ? c[j].key : m;
    *kmax = m;
    return weigh(c, k, m, inv_t);
}

/* ------------------------------------------------------------------------------------------ */
/* cut(): the kept prefix of the order, by buckets                                              */
/* ------------------------------------------------------------------------------------------ */

enum cut_mode {
    CUT_COUNT, /* keep the `goal` most likely */
    CUT_MASS,  /* keep each token whose more likely tokens weigh less than `goal` (top-p) */
};

struct cut_ctx {
    enum cut_mode mode;
    uint32_t *count; /* [CUT_BUCKETS] */
    double *mass;    /* [CUT_BUCKETS] */
};

/* How much of c[0..n), taken in the order, the goal keeps. */
static uint32_t prefix_len(const struct cand *c, uint32_t n, enum cut_mode mode, double goal)
{
    uint32_t r = 0;
    double above = 0.0;

    if (mode == CUT_COUNT)
        return goal < (double)n ? (uint32_t)goal : n;
    while (r < n && above < goal)
        above += c[r++].w;
    return r;
}

/* Bucket of key: 0 at kmax, growing as the key falls; the last one is open-ended. */
static inline uint32_t bucket_of(float key, double kmax, double scale)
{
    double t = (kmax - (double)key) * scale;

    return t < (double)(CUT_BUCKETS - 1) ? (uint32_t)t : CUT_BUCKETS - 1;
}

/* Merges b[0..nb) into c[0..na + nb); c[0..na) and b are in id order, and so is the result. */
static void merge_by_id(struct cand *c, uint32_t na, const struct cand *b, uint32_t nb)
{
    uint32_t i = na, j = nb, k = na + nb;

    while (j > 0) {
        if (i > 0 && c[i - 1].id > b[j - 1].id)
            c[--k] = c[--i];
        else
            c[--k] = b[--j];
    }
}

/*
 * Keeps the prefix of the order that goal selects from c[0..n) (in id order, largest key kmax)
 * in c[0..r), still in id order, and returns r (0 when a mass goal is <= 0). The buckets split
 * [kmax - span, kmax]; lower keys join the last one. spill has room for n. The boundary bucket
 * recurses over its exact key range, with the tail of c that the compaction freed as its spill.
 */
static uint32_t cut(const struct cut_ctx *cx, struct cand *c, uint32_t n, struct cand *spill,
                    double goal, float kmax, double span, uint32_t depth)
{
    double scale = CUT_BUCKETS / span, before = 0.0;
    float lo = INFINITY, hi = -INFINITY;
    uint32_t edge, r = 0, t = 0, kept;

    if (span == 0.0 || kmax == INFINITY) /* all tied: the id order is the order */
        return prefix_len(c, n, cx->mode, goal);
    if (n <= CUT_SORT_MAX || depth == CUT_MAX_DEPTH) {
        qsort(c, n, sizeof(*c), cmp_better_first);
        kept = prefix_len(c, n, cx->mode, goal);
        qsort(c, kept, sizeof(*c), cmp_id);
        return kept;
    }
    memset(cx->count, 0, sizeof(*cx->count) * CUT_BUCKETS);
    memset(cx->mass, 0, sizeof(*cx->mass) * CUT_BUCKETS);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t b = bucket_of(c[j].key, kmax, scale);

        cx->count[b]++;
        cx->mass[b] += c[j].w;
    }
    for (edge = 0; edge < CUT_BUCKETS; edge++) {
        double through = before + (cx->mode == CUT_COUNT ? cx->count[edge] : cx->mass[edge]);

        if (through >= goal)
            break;
        before = through;
    }
    if (edge == CUT_BUCKETS) /* the goal lies beyond the total (rounding): keep everything */
        return n;
    for (uint32_t j = 0; j < n; j++) { /* branch-free: kept and dropped tokens interleave */
        struct cand x = c[j];
        uint32_t b = bucket_of(x.key, kmax, scale);
        bool on_edge = b == edge;

        c[r] = x;
        r += b < edge;
        spill[t] = x;
        t += on_edge;
        lo = on_edge && x.key < lo ? x.key : lo;
        hi = on_edge && x.key > hi ? x.key : hi;
    }
    kept = cut(cx, spill, t, c + r, goal - before, hi, (double)hi - (double)lo, depth + 1);
    merge_by_id(c, r, spill, kept);
    return r + kept;
}

/* ------------------------------------------------------------------------------------------ */
/* Sampling                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Index in c[0..n) (id order) of the most likely token: the first with the largest key. */
static uint32_t best_index(const struct cand *c, uint32_t n)
{
    uint32_t best = 0;
    float m = c[0].key;

    for (uint32_t j = 1; j < n; j++) {
        if (c[j].key > m) {
            m = c[j].key;
            best = j;
        }
    }
    return best;
}

/* The sum of w over c[0..n), in four lanes. */
static double sum_w(const struct cand *c, uint32_t n)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    uint32_t j = 0;

    for (; j + 4 <= n; j += 4) {
        a0 += c[j].w;
        a1 += c[j + 1].w;
        a2 += c[j + 2].w;
        a3 += c[j + 3].w;
    }
    for (; j < n; j++)
        a0 += c[j].w;
    return (a0 + a1) + (a2 + a3);
}

/* Top-p over c[0..n): keeps, in id order, the smallest most likely set whose mass reaches top_p
 * of the whole (the most likely token alone when top_p <= 0) and returns its size. */
static uint32_t filter_top_p(duet__sampler *s, uint32_t n, double top_p, float kmax, double span)
{
    struct cut_ctx cx = {CUT_MASS, s->count, s->mass};

    if (!(top_p > 0.0)) {
        s->cand[0] = s->cand[best_index(s->cand, n)];
        return 1;
    }
    /* a positive goal keeps at least the most likely token: nothing weighs above it */
    return cut(&cx, s->cand, n, s->spill, top_p * sum_w(s->cand, n), kmax, span, 0);
}

/* Min-p over c[0..n): keeps, in order, the tokens with w >= min_p × the largest w, or else the
 * most likely one, and returns how many. */
static uint32_t filter_min_p(struct cand *c, uint32_t n, double min_p)
{
    struct cand best = c[best_index(c, n)];
    double threshold = min_p * best.w; /* the most likely token weighs the most */
    uint32_t r = 0;

    for (uint32_t j = 0; j < n; j++) { /* branch-free, as in cut() */
        struct cand x = c[j];

        c[r] = x;
        r += x.w >= threshold;
    }
    if (r == 0) { /* min_p > 1 */
        c[0] = best;
        r = 1;
    }
    return r;
}

/* p when positive, else +0 (NaN too), without a branch: rows mix zeros and mass at random. */
static inline float positive(float p)
{
    uint32_t bits;

    memcpy(&bits, &p, sizeof(bits));
    bits &= 0u - (uint32_t)(p > 0.0f);
    memcpy(&p, &bits, sizeof(p));
    return p;
}

static double positive_total(const float *probs, uint32_t vocab)
{
    double lane[4] = {0.0, 0.0, 0.0, 0.0}, a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    uint32_t i = 0;

    for (; i + 4 <= vocab; i += 4) {
        a0 += positive(probs[i]);
        a1 += positive(probs[i + 1]);
        a2 += positive(probs[i + 2]);
        a3 += positive(probs[i + 3]);
    }
    lane[0] = a0;
    lane[1] = a1;
    lane[2] = a2;
    lane[3] = a3;
    for (; i < vocab; i++)
        lane[i & 3] += positive(probs[i]);
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

/* Writes the row (w / sum w at the kept ids, zero elsewhere) and draws from it. With c[0..n) in
 * id order and holding every positive entry, the sums below are those duet__sample_from_probs
 * forms over the whole row (lanes by id mod 4, each in id order; zeros add nothing), so the
 * token is the one it would return. */
static int32_t write_and_draw(const struct cand *c, uint32_t n, float *probs, uint32_t vocab,
                              double u)
{
    double inv = 1.0 / sum_w(c, n), target, cum = 0.0;
    int32_t last = -1;

    memset(probs, 0, sizeof(*probs) * vocab);
    for (uint32_t j = 0; j < n; j++)
        probs[c[j].id] = (float)(c[j].w * inv);
    if (n > vocab / 4) {
        target = u * positive_total(probs, vocab);
    } else {
        double lane[4] = {0.0, 0.0, 0.0, 0.0};

        for (uint32_t j = 0; j < n; j++)
            lane[c[j].id & 3] += probs[c[j].id]; /* >= 0: adding a zero changes nothing */
        target = u * ((lane[0] + lane[1]) + (lane[2] + lane[3]));
    }
    for (uint32_t j = 0; j < n; j++) {
        float p = probs[c[j].id];

        if (p > 0.0f) {
            cum += p;
            last = (int32_t)c[j].id;
            if (cum > target)
                break;
        }
    }
    return last;
}

static void one_hot(float *probs, uint32_t vocab, uint32_t token)
{
    memset(probs, 0, sizeof(*probs) * vocab);
    probs[token] = 1.0f;
}

/* Temperature, top-k, top-p and min-p into probs, then the draw. */
static int32_t sample_filtered(duet__sampler *s, const float *logits,
                               const duet_sampling_params *sp, double u, float *probs)
{
    double inv_t = 1.0 / (double)sp->temperature, span = CUT_SPAN * (double)sp->temperature;
    uint32_t vocab = s->vocab, k = sp->top_k > 0 ? (uint32_t)sp->top_k : vocab, n;
    bool top_p = sp->top_p < 1.0f; /* false for NaN: off */
    float kmax;

    if (k < vocab && k <= HEAP_TOP_K_MAX)
        n = gather_top_k(logits, vocab, k, inv_t, s->cand, &kmax);
    else
        n = gather_all(logits, vocab, inv_t, s->cand, &kmax);
    if (n == 0) { /* no finite logit */
        one_hot(probs, vocab, 0);
        return 0;
    }
    if (k < n) {
        struct cut_ctx cx = {CUT_COUNT, s->count, s->mass};

        n = cut(&cx, s->cand, n, s->spill, (double)k, kmax, span, 0);
    }
    if (top_p && n > 1)
        n = filter_top_p(s, n, (double)sp->top_p, kmax, span);
    if (sp->min_p > 0.0f && n > 1)
        n = filter_min_p(s->cand, n, (double)sp->min_p);
    return write_and_draw(s->cand, n, probs, vocab, u);
}

/* Index of the most likely token (lowest id on ties); 0 when every logit is NaN or -inf. */
static uint32_t argmax(const float *logits, uint32_t vocab)
{
    uint32_t best = 0;
    float m = clean_key(logits[0]);

    for (uint32_t i = 1; i < vocab; i++) {
        if (logits[i] > m) { /* NaN never compares greater */
            m = logits[i];
            best = i;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------------------------ */
/* Log-probabilities                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* What the raw log-softmax of a row needs: its largest key and log(sum(exp(key - max))). */
struct row_norm {
    float max;       /* +inf: the +inf tokens share the mass; -inf: token 0 has it all */
    uint32_t n_inf;  /* tokens at +inf */
    double log_norm; /* log of the sum of exp(key - max) over finite keys */
};

static void row_norm(const float *logits, uint32_t vocab, struct row_norm *rn)
{
    float m = max_logit(logits, vocab);
    uint32_t n_inf = 0;
    double sum = 0.0;

    if (m == INFINITY) {
        for (uint32_t i = 0; i < vocab; i++)
            n_inf += logits[i] == INFINITY;
    } else if (m != -INFINITY) {
        for (uint32_t i = 0; i < vocab; i++) /* NaN and -inf add exp(-inf) = 0 */
            sum += exp((double)clean_key(logits[i]) - (double)m);
    }
    *rn = (struct row_norm){m, n_inf, isfinite(m) ? log(sum) : 0.0};
}

/* The log-probability of token id with logit key. A row with no finite logit is one-hot at 0,
 * as its sampled distribution is; a row with +inf logits splits evenly among them. */
static float logprob_of(const struct row_norm *rn, float key, uint32_t id)
{
    if (rn->max == INFINITY)
        return key == INFINITY ? (float)-log((double)rn->n_inf) : -INFINITY;
    if (rn->max == -INFINITY)
        return id == 0 ? 0.0f : -INFINITY;
    return (float)((double)key - (double)rn->max - rn->log_norm);
}

static void top_logprobs(duet__sampler *s, const float *logits, const struct row_norm *rn,
                         duet_logprob *top, uint32_t n_top)
{
    uint32_t n = n_top < s->vocab ? n_top : s->vocab;

    if (n > 0) {
        heap_select(logits, s->vocab, n, s->cand);
        heap_sort(s->cand, n);
    }
    for (uint32_t j = 0; j < n; j++)
        top[j] =
            (duet_logprob){(int32_t)s->cand[j].id, logprob_of(rn, s->cand[j].key, s->cand[j].id)};
    for (uint32_t j = n; j < n_top; j++)
        top[j] = (duet_logprob){-1, 0.0f};
}

void duet__row_logprobs(duet__sampler *sampler, const float *logits, uint32_t n_top,
                        duet_logprob *top, int32_t next, float *next_logprob)
{
    struct row_norm rn;

    if (!sampler || !logits)
        return;
    row_norm(logits, sampler->vocab, &rn);
    if (top)
        top_logprobs(sampler, logits, &rn, top, n_top);
    if (next_logprob)
        *next_logprob = next >= 0 && (uint32_t)next < sampler->vocab
                            ? logprob_of(&rn, clean_key(logits[next]), (uint32_t)next)
                            : NAN;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* The token of a row; probs (NULL: scratch for a filtered row, nothing for a greedy one) gets
 * the distribution it was drawn from. */
static int32_t sample_token(duet__sampler *s, const float *logits, const duet_sampling_params *sp,
                            uint64_t position, float *probs)
{
    uint32_t token;

    if (sp->temperature >= DUET_SAMPLING_EPS) /* false for NaN: greedy */
        return sample_filtered(s, logits, sp,
                               duet__rng_uniform(sp->seed, position, DUET_DRAW_SAMPLE),
                               probs ? probs : s->probs);
    token = argmax(logits, s->vocab);
    if (probs)
        one_hot(probs, s->vocab, token);
    return (int32_t)token;
}

int32_t duet__sample_row(duet__sampler *sampler, const float *logits,
                         const duet_sampling_params *sp, uint64_t position, float *probs,
                         float *token_logprob, duet_logprob *top, uint32_t n_top)
{
    return duet__sample_row_penalized(sampler, logits, sp, NULL, NULL, position, probs,
                                      token_logprob, top, n_top);
}

int32_t duet__sample_row_penalized(duet__sampler *sampler, const float *logits,
                                   const duet_sampling_params *sp, const duet_penalties *pen,
                                   const duet__recent *recent, uint64_t position, float *probs,
                                   float *token_logprob, duet_logprob *top, uint32_t n_top)
{
    struct row_norm rn;
    const float *keys = logits;
    int32_t token;

    if (!sampler || !logits || !sp)
        return -1;
    if (pen) {
        duet__penalize(logits, sampler->vocab, pen, recent, sampler->penalized);
        keys = sampler->penalized;
    }
    if (!token_logprob && !(top && n_top))
        return sample_token(sampler, keys, sp, position, probs);
    row_norm(logits, sampler->vocab, &rn);
    if (top)
        top_logprobs(sampler, logits, &rn, top, n_top);
    token = sample_token(sampler, keys, sp, position, probs);
    if (token_logprob && token >= 0)
        *token_logprob = logprob_of(&rn, clean_key(logits[token]), (uint32_t)token);
    return token;
}

int32_t duet__sample_from_probs(const float *probs, uint32_t vocab, double u)
{
    double total, target, cum = 0.0;
    int32_t last = -1;

    if (!probs)
        return -1;
    total = positive_total(probs, vocab);
    if (!(total > 0.0))
        return -1;
    if (!isfinite(total)) { /* an infinite entry takes everything */
        for (uint32_t i = 0; i < vocab; i++)
            if (probs[i] == INFINITY)
                return (int32_t)i;
    }
    target = u * total;
    for (uint32_t i = 0; i < vocab; i++) {
        if (probs[i] > 0.0f) {
            cum += probs[i];
            last = (int32_t)i;
            if (cum > target)
                break;
        }
    }
    return last;
}
