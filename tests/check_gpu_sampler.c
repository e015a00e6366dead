/*
 * The sampler on the device (gpu_worker/sample.cu) against the CPU sampler (sampling/sampling.c)
 * on the same rows: batches that mix greedy and filtered rows, SAMPLE and SCORE rows, top-n and
 * none, over vocabularies from 12 to 128256 tokens, with ties, NaN and infinite logits; then the
 * tokens drawn over many seeds against the probability row the device returned (chi-square), and
 * calls that leave outputs out.
 *
 * Tolerances (the device sums doubles in another order and uses CUDA's exp and log):
 *   tokens        identical, unless u lies within DRAW_MARGIN of a boundary of the cumulative
 *                 distribution; where the two probability rows differ in any bit, the device's
 *                 token is checked against the inverse CDF of its own row instead
 *   probs         PROB_TOL absolute, and the same support; rows where a filter compared two
 *                 quantities closer than DECISION_MARGIN (relative) are not compared
 *   log-probs     LOGPROB_TOL relative to max(1, |reference|); infinities exactly
 *
 * Every input comes from a fixed-seed generator, so each run checks the same rows. Skips (exit
 * 77) without a CUDA device.
 */
#include "../gpu_worker/gpu_worker-int.h"
#include "../sampling/sampling.h"

#include "check_util.h"
#include "gpu_test_util.h"
#include "test_rng.h"

#include <check.h>
#include <cuda_runtime_api.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROB_TOL 1e-6
#define LOGPROB_TOL 1e-5
#define DRAW_MARGIN 1e-9
#define DECISION_MARGIN 1e-9
/* Stride of the top-n output; every n_top below is smaller, so the tail of -1 entries shows. */
#define MAX_TOP 24u

/* Chi-square critical values at significance 0.001 for 1..15 degrees of freedom. */
static const double chi2_crit_001[16] = {
    0.0,    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322,
    26.124, 27.877, 29.588, 31.264, 32.909, 34.528, 36.123, 37.697,
};

/* ck_assert_msg that calls into Check only when it fails (loops over whole rows). */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

#define CUDA_OK(call) ck_assert_msg((call) == cudaSuccess, "%s failed", #call)

/* ------------------------------------------------------------------------------------------ */
/* Inputs                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static uint64_t rng_state;

static double rng_unit(void)
{
    return duet_test_rng_unit(&rng_state);
}

static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng_unit() * n);
}

static double rng_gauss(void)
{
    double u = rng_unit() + 0x1.0p-60, v = rng_unit();

    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

enum row_kind {
    ROW_GAUSS,   /* normal logits of a random scale and offset */
    ROW_TIES,    /* normal logits rounded to halves: many ties */
    ROW_SKEWED,  /* magnitudes spread over many octaves */
    ROW_SPECIAL, /* NaN and -inf entries, sometimes +inf, sometimes nothing finite */
    ROW_KINDS
};

static void fill_row(float *logits, uint32_t vocab, enum row_kind kind)
{
    static const double scales[] = {0.01, 1.0, 3.0, 10.0};
    static const double offsets[] = {0.0, 50.0, -1e4};
    double scale = scales[rng_below(4)], offset = offsets[rng_below(3)];

    for (uint32_t i = 0; i < vocab; i++) {
        if (kind == ROW_TIES)
            logits[i] = (float)(round(rng_gauss() * 2.0) / 2.0);
        else if (kind == ROW_SKEWED)
            logits[i] = (float)-pow(1.3, (double)rng_below(120)) * (float)(1.0 + rng_unit());
        else
            logits[i] = (float)(offset + scale * rng_gauss());
    }
    if (kind != ROW_SPECIAL)
        return;
    for (uint32_t i = 0; i < vocab; i++) {
        uint32_t r = rng_below(16);

        logits[i] = r == 0 ? NAN : r == 1 ? -INFINITY : r == 2 ? -0.0f : logits[i];
    }
    if (rng_below(4) == 0)
        for (uint32_t j = rng_below(3) + 1; j > 0; j--)
            logits[rng_below(vocab)] = INFINITY;
    if (rng_below(6) == 0) /* nothing finite at all */
        for (uint32_t i = 0; i < vocab; i++)
            logits[i] = rng_below(2) ? NAN : -INFINITY;
}

/* Settings from the lists the serving paths use, a mode and a top-n. */
static duet_gpu_sample_row random_row(uint32_t vocab)
{
    static const float temps[] = {0.0f, 0.0f, 0.7f, 1.0f, 1.5f, NAN};
    static const float top_ps[] = {1.0f, 0.9f, 0.5f, 1e-6f};
    static const float min_ps[] = {0.0f, 0.0f, 0.05f, 1.0f};
    static const uint32_t n_tops[] = {0, 0, 1, 5, 20};
    static const uint32_t modes[] = {DUET_GPU_ROW_SAMPLE, DUET_GPU_ROW_SAMPLE, DUET_GPU_ROW_SCORE,
                                     DUET_GPU_ROW_SAMPLE | DUET_GPU_ROW_SCORE};
    int32_t top_ks[] = {0, 1, 5, 40, (int32_t)vocab, -1};
    duet_gpu_sample_row r;

    memset(&r, 0, sizeof(r));
    r.temperature = temps[rng_below(6)];
    r.top_k = top_ks[rng_below(6)];
    r.top_p = top_ps[rng_below(4)];
    r.min_p = min_ps[rng_below(4)];
    r.seed = duet_test_rng_next(&rng_state);
    r.position = duet_test_rng_next(&rng_state) >> 40;
    r.mode = modes[rng_below(4)];
    r.n_top = n_tops[rng_below(5)];
    r.next = rng_below(5) == 0 ? -1 : (int32_t)rng_below(vocab);
    return r;
}

static duet_sampling_params params_of(const duet_gpu_sample_row *r)
{
    duet_sampling_params sp;

    memset(&sp, 0, sizeof(sp));
    sp.temperature = r->temperature;
    sp.top_p = r->top_p;
    sp.min_p = r->min_p;
    sp.top_k = r->top_k;
    sp.seed = r->seed;
    return sp;
}

/* ------------------------------------------------------------------------------------------ */
/* One call on the device                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Which outputs a call asks for. */
enum {
    WANT_TOKENS = 1 << 0,
    WANT_PROBS = 1 << 1,
    WANT_TOKEN_LP = 1 << 2,
    WANT_TOP = 1 << 3,
    WANT_NEXT = 1 << 4,
    WANT_ALL = 0x1f,
};

/* A batch's results on the host: [n], [n][vocab], [n][MAX_TOP]. */
struct results {
    int32_t *tokens;
    float *probs;
    float *token_lp;
    duet_logprob *top;
    float *next_lp;
};

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;

    CUDA_OK(cudaMalloc(&p, bytes));
    return p;
}

static void *host_alloc(size_t bytes)
{
    void *p = malloc(bytes);

    ck_assert_ptr_nonnull(p);
    return p;
}

static void results_init(struct results *r, uint32_t n, uint32_t vocab)
{
    r->tokens = host_alloc(sizeof(*r->tokens) * n);
    r->probs = host_alloc(sizeof(*r->probs) * n * vocab);
    r->token_lp = host_alloc(sizeof(*r->token_lp) * n);
    r->top = host_alloc(sizeof(*r->top) * n * MAX_TOP);
    r->next_lp = host_alloc(sizeof(*r->next_lp) * n);
}

static void results_fini(struct results *r)
{
    free(r->tokens);
    free(r->probs);
    free(r->token_lp);
    free(r->top);
    free(r->next_lp);
}

/* Copies [n] elements of size `size` back when the device array exists. */
static void fetch(void *host, const void *dev, size_t bytes)
{
    if (dev)
        CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

/* Runs n rows of logits[n][vocab] through sampler with rows' settings, asking for the outputs in
 * want, into res (fields not asked for are left as they were). */
static void run_device(duet_gpu_sampler *sampler, uint32_t vocab, const float *logits, uint32_t n,
                       const duet_gpu_sample_row *rows, unsigned want, struct results *res)
{
    size_t nv = (size_t)n * vocab;
    float *d_logits = dev_alloc(sizeof(float) * nv);
    duet_gpu_sample_row *d_rows = dev_alloc(sizeof(*d_rows) * n);
    duet_gpu_sample_out out = {0};
    cudaStream_t stream;
    char err[256] = "";

    CUDA_OK(cudaStreamCreate(&stream));
    CUDA_OK(cudaMemcpy(d_logits, logits, sizeof(float) * nv, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d_rows, rows, sizeof(*d_rows) * n, cudaMemcpyHostToDevice));
    out.max_top = MAX_TOP;
    out.tokens = want & WANT_TOKENS ? dev_alloc(sizeof(int32_t) * n) : NULL;
    out.probs = want & WANT_PROBS ? dev_alloc(sizeof(float) * nv) : NULL;
    out.token_logprob = want & WANT_TOKEN_LP ? dev_alloc(sizeof(float) * n) : NULL;
    out.top = want & WANT_TOP ? dev_alloc(sizeof(duet_logprob) * n * MAX_TOP) : NULL;
    out.next_logprob = want & WANT_NEXT ? dev_alloc(sizeof(float) * n) : NULL;
    ck_assert_msg(duet__gpu_sample(sampler, stream, d_logits, n, d_rows, rows, &out, err,
                                   sizeof(err)) == DUET_STATUS_OK,
                  "duet__gpu_sample: %s", err);
    CUDA_OK(cudaStreamSynchronize(stream));
    fetch(res->tokens, out.tokens, sizeof(int32_t) * n);
    fetch(res->probs, out.probs, sizeof(float) * nv);
    fetch(res->token_lp, out.token_logprob, sizeof(float) * n);
    fetch(res->top, out.top, sizeof(duet_logprob) * n * MAX_TOP);
    fetch(res->next_lp, out.next_logprob, sizeof(float) * n);
    CUDA_OK(cudaStreamDestroy(stream));
    cudaFree(out.tokens);
    cudaFree(out.probs);
    cudaFree(out.token_logprob);
    cudaFree(out.top);
    cudaFree(out.next_logprob);
    cudaFree(d_rows);
    cudaFree(d_logits);
}

/* ------------------------------------------------------------------------------------------ */
/* The reference: the CPU sampler on each row                                                  */
/* ------------------------------------------------------------------------------------------ */

static void run_cpu(uint32_t vocab, const float *logits, uint32_t n,
                    const duet_gpu_sample_row *rows, struct results *res)
{
    duet__sampler *cpu;

    ck_assert_int_eq(duet__sampler_create(vocab, &cpu), DUET_STATUS_OK);
    for (uint32_t i = 0; i < n; i++) {
        const duet_gpu_sample_row *r = &rows[i];
        duet_sampling_params sp = params_of(r);
        const float *row = logits + (size_t)i * vocab;
        duet_logprob *top = res->top + (size_t)i * MAX_TOP;

        for (uint32_t j = 0; j < MAX_TOP; j++)
            top[j] = (duet_logprob){-1, 0.0f};
        if (r->mode & DUET_GPU_ROW_SAMPLE)
            res->tokens[i] =
                duet__sample_row(cpu, row, &sp, r->position, res->probs + (size_t)i * vocab,
                                 &res->token_lp[i], top, r->n_top);
        if (r->mode & DUET_GPU_ROW_SCORE)
            duet__row_logprobs(cpu, row, r->n_top, top, r->next, &res->next_lp[i]);
    }
    duet__sampler_destroy(cpu);
}

struct order_tok {
    double key;
    uint32_t id;
};

static int cmp_order(const void *pa, const void *pb)
{
    const struct order_tok *a = pa, *b = pb;

    if (a->key != b->key)
        return a->key > b->key ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* The weight at sorted position j against the largest key m (+inf: the +inf keys share). */
static double ref_weight(double key, double m, double inv_t)
{
    if (m == INFINITY)
        return key == INFINITY ? 1.0 : 0.0;
    return exp((key - m) * inv_t);
}

/* The closest call the top-p and min-p filters of a SAMPLE row make, relative (1 when none):
 * where it is below DECISION_MARGIN, another order of double additions may decide otherwise. */
static double filter_margin(const float *logits, uint32_t vocab, const duet_gpu_sample_row *r)
{
    struct order_tok *t;
    double inv_t = 1.0 / (double)r->temperature, margin = 1.0, sum = 0.0, before = 0.0, *w;
    uint32_t k = r->top_k > 0 && (uint32_t)r->top_k < vocab ? (uint32_t)r->top_k : vocab, n = 0;

    if (!(r->mode & DUET_GPU_ROW_SAMPLE) || !(r->temperature >= DUET_SAMPLING_EPS))
        return 1.0;
    t = host_alloc(sizeof(*t) * vocab);
    w = host_alloc(sizeof(*w) * vocab);
    for (uint32_t i = 0; i < vocab; i++)
        t[i] = (struct order_tok){isnan(logits[i]) ? -INFINITY : (double)logits[i], i};
    qsort(t, vocab, sizeof(*t), cmp_order);
    while (n < k && t[0].key != -INFINITY && (w[n] = ref_weight(t[n].key, t[0].key, inv_t)) > 0.0)
        sum += w[n++];
    if (r->top_p < 1.0f && r->top_p > 0.0f && n > 1) {
        double goal = (double)r->top_p * sum;

        for (uint32_t j = 0; j < n; j++) {
            if (j > 0 && fabs(before - goal) / sum < margin)
                margin = fabs(before - goal) / sum;
            if (!(before < goal)) {
                n = j;
                break;
            }
            before += w[j];
        }
    } else if (r->top_p < 1.0f && n > 1) {
        n = 1;
    }
    if (r->min_p > 0.0f && n > 1)
        for (uint32_t j = 1; j < n; j++) /* a tie with the top weighs exactly as much */
            if (t[j].key != t[0].key && fabs(w[j] - (double)r->min_p * w[0]) / w[0] < margin)
                margin = fabs(w[j] - (double)r->min_p * w[0]) / w[0];
    free(t);
    free(w);
    return margin;
}

/* ------------------------------------------------------------------------------------------ */
/* Comparisons                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static bool logprob_close(float got, float want)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs((double)got - (double)want) <= LOGPROB_TOL * fmax(1.0, fabs((double)want));
}

/* u lies within DRAW_MARGIN (relative to the total) of a boundary of the cumulative sum of p. */
static bool near_boundary(const float *p, uint32_t vocab, double u)
{
    double total = 0.0, cum = 0.0;

    for (uint32_t i = 0; i < vocab; i++)
        total += p[i] > 0.0f ? p[i] : 0.0f;
    for (uint32_t i = 0; i < vocab; i++) {
        if (p[i] > 0.0f) {
            cum += p[i];
            if (fabs(cum / total - u) < DRAW_MARGIN)
                return true;
        }
    }
    return false;
}

/* The token and probability row of SAMPLE row i; returns false when the row was too close a
 * call for its probabilities to be compared. */
static bool check_sample(const float *logits, uint32_t vocab, const duet_gpu_sample_row *r,
                         const float *got_p, int32_t got, const float *want_p, int32_t want,
                         const char *what)
{
    double u = duet__rng_uniform(r->seed, r->position, DUET_DRAW_SAMPLE), sum = 0.0;
    bool same_row = memcmp(got_p, want_p, sizeof(float) * vocab) == 0;

    EXPECT(got >= 0 && (uint32_t)got < vocab, "%s: token %d", what, got);
    EXPECT(got_p[got] > 0.0f, "%s: token %d has probability 0", what, got);
    if (same_row)
        EXPECT(got == want || near_boundary(want_p, vocab, u),
               "%s: token %d, the CPU sampler drew %d from the same row", what, got, want);
    else
        EXPECT(got == duet__sample_from_probs(got_p, vocab, u) || near_boundary(got_p, vocab, u),
               "%s: token %d is not the inverse CDF of the row written", what, got);
    if (filter_margin(logits, vocab, r) < DECISION_MARGIN)
        return false;
    for (uint32_t i = 0; i < vocab; i++) {
        EXPECT(fabs((double)got_p[i] - (double)want_p[i]) <= PROB_TOL, "%s: p[%u] = %.9g, CPU %.9g",
               what, i, (double)got_p[i], (double)want_p[i]);
        if (want_p[i] == 0.0f || want_p[i] >= FLT_MIN)
            EXPECT((got_p[i] > 0.0f) == (want_p[i] > 0.0f), "%s: support differs at %u", what, i);
        sum += got_p[i];
    }
    EXPECT(fabs(sum - 1.0) < 1e-5, "%s: probs sum to %.9g", what, sum);
    return true;
}

static void check_top(const duet_logprob *got, const duet_logprob *want, const char *what)
{
    for (uint32_t j = 0; j < MAX_TOP; j++) {
        EXPECT(got[j].token == want[j].token, "%s: top[%u] is token %d, CPU %d", what, j,
               got[j].token, want[j].token);
        EXPECT(logprob_close(got[j].logprob, want[j].logprob), "%s: top[%u] logprob %.9g, CPU %.9g",
               what, j, (double)got[j].logprob, (double)want[j].logprob);
    }
}

/* Compares every output of a batch run with WANT_ALL; returns how many SAMPLE rows had their
 * probabilities compared, and counts the SAMPLE rows in *sampled. */
static uint32_t compare_batch(const float *logits, uint32_t vocab, uint32_t n,
                              const duet_gpu_sample_row *rows, const struct results *got,
                              const struct results *want, uint32_t *sampled)
{
    uint32_t compared = 0;

    for (uint32_t i = 0; i < n; i++) {
        const duet_gpu_sample_row *r = &rows[i];
        char what[192];

        snprintf(what, sizeof(what),
                 "vocab %u row %u: mode %u T %g top_k %d top_p %g min_p %g n_top %u next %d", vocab,
                 i, r->mode, (double)r->temperature, r->top_k, (double)r->top_p, (double)r->min_p,
                 r->n_top, r->next);
        check_top(got->top + (size_t)i * MAX_TOP, want->top + (size_t)i * MAX_TOP, what);
        if (r->mode & DUET_GPU_ROW_SCORE)
            EXPECT(logprob_close(got->next_lp[i], want->next_lp[i]),
                   "%s: next_logprob %.9g, CPU %.9g", what, (double)got->next_lp[i],
                   (double)want->next_lp[i]);
        if (!(r->mode & DUET_GPU_ROW_SAMPLE))
            continue;
        (*sampled)++;
        compared +=
            check_sample(logits + (size_t)i * vocab, vocab, r, got->probs + (size_t)i * vocab,
                         got->tokens[i], want->probs + (size_t)i * vocab, want->tokens[i], what);
        /* the raw log-probability of the token each drew */
        EXPECT(got->tokens[i] != want->tokens[i] ||
                   logprob_close(got->token_lp[i], want->token_lp[i]),
               "%s: token_logprob %.9g, CPU %.9g", what, (double)got->token_lp[i],
               (double)want->token_lp[i]);
    }
    return compared;
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* n random rows of vocab through both samplers; every output compared. */
static void check_random_batch(uint32_t vocab, uint32_t n, uint64_t seed)
{
    float *logits = host_alloc(sizeof(float) * n * vocab);
    duet_gpu_sample_row *rows = host_alloc(sizeof(*rows) * n);
    struct results got, want;
    duet_gpu_sampler *sampler;
    uint32_t compared, sampled = 0;
    char err[256] = "";

    rng_state = seed;
    for (uint32_t i = 0; i < n; i++) {
        fill_row(logits + (size_t)i * vocab, vocab, (enum row_kind)(i % ROW_KINDS));
        rows[i] = random_row(vocab);
    }
    results_init(&got, n, vocab);
    results_init(&want, n, vocab);
    ck_assert_msg(duet__gpu_sampler_create(vocab, &sampler, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s", err);
    run_device(sampler, vocab, logits, n, rows, WANT_ALL, &got);
    run_cpu(vocab, logits, n, rows, &want);
    compared = compare_batch(logits, vocab, n, rows, &got, &want, &sampled);
    /* close calls are rare; most rows must have been compared */
    ck_assert_msg(compared * 10 >= sampled * 9, "only %u of %u rows compared", compared, sampled);
    duet__gpu_sampler_destroy(sampler);
    results_fini(&got);
    results_fini(&want);
    free(rows);
    free(logits);
}

START_TEST(test_small_vocabularies_match_the_cpu_sampler)
{
    check_random_batch(12, 400, 0x5a3b1e);
    check_random_batch(1000, 300, 0xbeef); /* more rows than one pass of the sampler */
}
END_TEST

START_TEST(test_serving_vocabularies_match_the_cpu_sampler)
{
    check_random_batch(32000, 48, 0xc0ffee);
    check_random_batch(50272, 40, 0xfeed);
    check_random_batch(128256, 32, 0xabcdef);
}
END_TEST

/* A fresh sampler's scratch grows from nothing on a first small call, then again on a larger
 * one, and a call that sorts nothing (greedy rows without top-n) needs none. */
START_TEST(test_scratch_grows_across_calls)
{
    const uint32_t vocab = 5000, sizes[] = {1, 3, 130, 2};
    duet_gpu_sampler *sampler;
    char err[256] = "";

    ck_assert_msg(duet__gpu_sampler_create(vocab, &sampler, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s", err);
    rng_state = 99;
    for (size_t c = 0; c < sizeof(sizes) / sizeof(sizes[0]); c++) {
        uint32_t n = sizes[c], sampled = 0;
        float *logits = host_alloc(sizeof(float) * n * vocab);
        duet_gpu_sample_row *rows = host_alloc(sizeof(*rows) * n);
        struct results got, want;

        for (uint32_t i = 0; i < n; i++) {
            fill_row(logits + (size_t)i * vocab, vocab, ROW_GAUSS);
            rows[i] = random_row(vocab);
            if (c == 3) { /* greedy, no top-n: nothing to sort */
                rows[i].temperature = 0.0f;
                rows[i].n_top = 0;
            }
        }
        results_init(&got, n, vocab);
        results_init(&want, n, vocab);
        run_device(sampler, vocab, logits, n, rows, WANT_ALL, &got);
        run_cpu(vocab, logits, n, rows, &want);
        compare_batch(logits, vocab, n, rows, &got, &want, &sampled);
        results_fini(&got);
        results_fini(&want);
        free(rows);
        free(logits);
    }
    duet__gpu_sampler_destroy(sampler);
}
END_TEST

/* Each output may be left out; the others stay the same. */
START_TEST(test_outputs_left_out_change_nothing_else)
{
    const uint32_t vocab = 1000, n = 64;
    const unsigned wants[] = {WANT_TOKENS, WANT_TOKENS | WANT_TOP, WANT_TOKENS | WANT_TOKEN_LP,
                              WANT_NEXT, WANT_TOKENS | WANT_PROBS | WANT_NEXT};
    float *logits = host_alloc(sizeof(float) * n * vocab);
    duet_gpu_sample_row *rows = host_alloc(sizeof(*rows) * n);
    struct results all, some;
    duet_gpu_sampler *sampler;
    char err[256] = "";

    rng_state = 4242;
    for (uint32_t i = 0; i < n; i++) {
        fill_row(logits + (size_t)i * vocab, vocab, (enum row_kind)(i % ROW_KINDS));
        rows[i] = random_row(vocab);
    }
    results_init(&all, n, vocab);
    results_init(&some, n, vocab);
    ck_assert_msg(duet__gpu_sampler_create(vocab, &sampler, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s", err);
    run_device(sampler, vocab, logits, n, rows, WANT_ALL, &all);
    for (size_t w = 0; w < sizeof(wants) / sizeof(wants[0]); w++) {
        run_device(sampler, vocab, logits, n, rows, wants[w], &some);
        for (uint32_t i = 0; i < n; i++) {
            bool sample = rows[i].mode & DUET_GPU_ROW_SAMPLE,
                 score = rows[i].mode & DUET_GPU_ROW_SCORE;

            if (sample && (wants[w] & WANT_TOKENS))
                EXPECT(some.tokens[i] == all.tokens[i], "want %#x row %u: token %d, not %d",
                       wants[w], i, some.tokens[i], all.tokens[i]);
            if (sample && (wants[w] & WANT_TOKEN_LP))
                EXPECT(memcmp(&some.token_lp[i], &all.token_lp[i], sizeof(float)) == 0,
                       "want %#x row %u: token_logprob", wants[w], i);
            if (score && (wants[w] & WANT_NEXT))
                EXPECT(memcmp(&some.next_lp[i], &all.next_lp[i], sizeof(float)) == 0,
                       "want %#x row %u: next_logprob", wants[w], i);
        }
        if (wants[w] & WANT_TOP)
            EXPECT(memcmp(some.top, all.top, sizeof(duet_logprob) * n * MAX_TOP) == 0,
                   "want %#x: top differs", wants[w]);
    }
    duet__gpu_sampler_destroy(sampler);
    results_fini(&all);
    results_fini(&some);
    free(rows);
    free(logits);
}
END_TEST

/* A worker's SAMPLE rows (DUET_GPU_ROW_FINITE) with a NaN or an infinite logit are not sampled:
 * DUET_TOKEN_NONFINITE, a zero probability row, NAN log-probability, no top entries; a clean row
 * beside them is sampled as the CPU sampler does. */
START_TEST(test_finite_rows_refuse_nan_and_infinity)
{
    enum { V = 6, N = 4 };
    const float logits[N][V] = {
        {1.0f, NAN, 4.0f, 2.0f, 4.0f, 3.5f},
        {1.0f, INFINITY, 3.0f, 2.0f, 0.5f, 2.0f},
        {1.0f, 2.0f, 3.0f, -INFINITY, 0.5f, 2.0f},
        {1.0f, 2.0f, 3.0f, 4.0f, 0.5f, 2.0f},
    };
    duet_gpu_sample_row rows[N];
    struct results got;
    duet_gpu_sampler *sampler;
    char err[256] = "";

    memset(rows, 0, sizeof(rows));
    for (uint32_t i = 0; i < N; i++) {
        rows[i].temperature = i == 1 ? 0.7f : 0.0f;
        rows[i].top_p = 1.0f;
        rows[i].seed = 5 + i;
        rows[i].mode = DUET_GPU_ROW_SAMPLE | DUET_GPU_ROW_FINITE;
        rows[i].n_top = 2;
        rows[i].next = -1;
    }
    results_init(&got, N, V);
    ck_assert_msg(duet__gpu_sampler_create(V, &sampler, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    run_device(sampler, V, &logits[0][0], N, rows, WANT_ALL, &got);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_int_eq(got.tokens[i], DUET_TOKEN_NONFINITE);
        ck_assert(isnan(got.token_lp[i]));
        for (uint32_t t = 0; t < V; t++)
            ck_assert_float_eq(got.probs[i * V + t], 0.0f);
    }
    ck_assert_int_eq(got.tokens[3], 3); /* the clean row: its argmax */
    duet__gpu_sampler_destroy(sampler);
    results_fini(&got);
}
END_TEST

/* Hand-made rows whose outputs are known exactly. */
START_TEST(test_ties_infinities_and_empty_rows_give_the_cpu_results)
{
    enum { V = 6, N = 5 };
    const float logits[N][V] = {
        {1.0f, NAN, 4.0f, -INFINITY, 4.0f, 3.5f},         /* greedy: the lower of two tied */
        {1.0f, INFINITY, 3.0f, NAN, INFINITY, 2.0f},      /* +inf share the mass */
        {NAN, -INFINITY, NAN, -INFINITY, -INFINITY, NAN}, /* nothing finite: token 0 */
        {NAN, -INFINITY, NAN, -INFINITY, -INFINITY, NAN}, /* the same, greedy */
        {-0.0f, 0.0f, -0.0f, 0.0f, -1.0f, -INFINITY},     /* signed zeros tie */
    };
    duet_gpu_sample_row rows[N];
    struct results got, want;
    duet_gpu_sampler *sampler;
    uint32_t sampled = 0;
    char err[256] = "";

    memset(rows, 0, sizeof(rows));
    for (uint32_t i = 0; i < N; i++) {
        rows[i].temperature = 0.7f;
        rows[i].top_p = 1.0f;
        rows[i].seed = 17 + i;
        rows[i].position = 3;
        rows[i].mode = DUET_GPU_ROW_SAMPLE | DUET_GPU_ROW_SCORE;
        rows[i].n_top = V;
        rows[i].next = (int32_t)i;
    }
    rows[0].temperature = 0.0f;
    rows[2].top_k = 2;
    rows[2].top_p = 0.5f;
    rows[2].min_p = 0.1f;
    rows[3].temperature = 0.0f;
    results_init(&got, N, V);
    results_init(&want, N, V);
    ck_assert_msg(duet__gpu_sampler_create(V, &sampler, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    run_device(sampler, V, &logits[0][0], N, rows, WANT_ALL, &got);
    run_cpu(V, &logits[0][0], N, rows, &want);
    compare_batch(&logits[0][0], V, N, rows, &got, &want, &sampled);
    ck_assert_int_eq(got.tokens[0], 2);
    ck_assert(got.tokens[1] == 1 || got.tokens[1] == 4);
    ck_assert_float_eq(got.probs[V + 1], 0.5f);
    ck_assert_float_eq_tol(got.token_lp[1], (float)-log(2.0), 1e-7f);
    for (uint32_t i = 2; i <= 3; i++) {
        ck_assert_int_eq(got.tokens[i], 0);
        ck_assert_float_eq(got.probs[i * V], 1.0f);
        ck_assert_float_eq(got.token_lp[i], 0.0f);
        ck_assert_int_eq(got.top[i * MAX_TOP].token, 0);
    }
    ck_assert_int_eq(got.top[4 * MAX_TOP].token, 0); /* the four zeros tie: ids ascend */
    ck_assert_int_eq(got.top[4 * MAX_TOP + 1].token, 1);
    ck_assert_int_eq(got.top[4 * MAX_TOP + 3].token, 3);
    ck_assert_int_eq(got.top[4 * MAX_TOP + V].token, -1);
    duet__gpu_sampler_destroy(sampler);
    results_fini(&got);
    results_fini(&want);
}
END_TEST

/* Tied tokens whose masses add up exactly (everything else weighs exp(-10010) = 0): top-p keeps
 * the smallest set that reaches the goal, the lowest ids among the tied, as on the CPU. */
START_TEST(test_top_p_keeps_the_smallest_set_that_reaches_it_exactly)
{
    enum { V = 1000 };
    const uint32_t four[] = {3, 500, 501, 999};
    const struct {
        uint32_t n_tied; /* the first n_tied even ids, or the four above */
        float top_p;
        int32_t top_k;
        uint32_t kept; /* the lowest ids among the tied */
    } cases[] = {
        {4, 0.5f, 0, 2},    {4, 0.75f, 0, 3},  {4, 0.7500001f, 0, 4}, {4, 0.5f, 3, 2},
        {4, 0.66f, 3, 2},   {4, 0.67f, 3, 3},  {100, 0.5f, 0, 50},    {100, 0.5f, 60, 30},
        {100, 0.01f, 0, 1}, {100, 0.0f, 0, 1}, {100, 1.0f, 70, 70},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    float *logits = host_alloc(sizeof(float) * N * V);
    duet_gpu_sample_row rows[N];
    struct results got, want;
    duet_gpu_sampler *sampler;
    uint32_t sampled = 0;
    char err[256] = "";

    memset(rows, 0, sizeof(rows));
    for (uint32_t c = 0; c < N; c++) {
        float *row = logits + (size_t)c * V;

        for (uint32_t i = 0; i < V; i++)
            row[i] = -1e4f;
        for (uint32_t j = 0; j < cases[c].n_tied; j++)
            row[cases[c].n_tied == 4 ? four[j] : 2 * j] = 10.0f;
        rows[c] = (duet_gpu_sample_row){.temperature = 1.0f,
                                        .top_p = cases[c].top_p,
                                        .top_k = cases[c].top_k,
                                        .seed = c,
                                        .mode = DUET_GPU_ROW_SAMPLE,
                                        .next = -1};
    }
    results_init(&got, N, V);
    results_init(&want, N, V);
    ck_assert_msg(duet__gpu_sampler_create(V, &sampler, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    run_device(sampler, V, logits, N, rows, WANT_ALL, &got);
    run_cpu(V, logits, N, rows, &want);
    compare_batch(logits, V, N, rows, &got, &want, &sampled);
    for (uint32_t c = 0; c < N; c++) {
        uint32_t kept = 0;

        for (uint32_t j = 0; j < cases[c].n_tied; j++) {
            uint32_t id = cases[c].n_tied == 4 ? four[j] : 2 * j;
            float p = got.probs[(size_t)c * V + id];

            ck_assert_msg(p == (j < cases[c].kept ? 1.0f / (float)cases[c].kept : 0.0f),
                          "case %u: p[%u] = %g", c, id, (double)p);
            kept += p > 0.0f;
        }
        ck_assert_uint_eq(kept, cases[c].kept);
    }
    duet__gpu_sampler_destroy(sampler);
    results_fini(&got);
    results_fini(&want);
    free(logits);
}
END_TEST

static double chi_square(const uint32_t *counts, const double *expected, uint32_t n)
{
    double x2 = 0.0;

    for (uint32_t i = 0; i < n; i++)
        x2 += (counts[i] - expected[i]) * (counts[i] - expected[i]) / expected[i];
    return x2;
}

/* Draws n tokens of one 12-token row (a different seed and position per row of one call) and
 * checks their counts against the probability row returned: nothing outside its support, and
 * chi-square below the 0.001 critical value. */
static void check_fit(float temperature, int32_t top_k, float top_p, float min_p)
{
    enum { V = 12, N = 24000 };
    static const float row[V] = {1.2f, 0.3f, -0.5f, 2.0f, 0.0f,  -1.0f,
                                 0.8f, 1.5f, -0.2f, 0.5f, -2.5f, 1.0f};
    float *logits = host_alloc(sizeof(float) * N * V);
    duet_gpu_sample_row *rows = host_alloc(sizeof(*rows) * N);
    uint32_t counts[V] = {0}, obs[V], support = 0;
    double expected[V], x2;
    struct results got;
    duet_gpu_sampler *sampler;
    char err[256] = "";

    memset(rows, 0, sizeof(*rows) * N);
    for (uint32_t i = 0; i < N; i++) {
        memcpy(logits + (size_t)i * V, row, sizeof(row));
        rows[i] = (duet_gpu_sample_row){.temperature = temperature,
                                        .top_p = top_p,
                                        .min_p = min_p,
                                        .top_k = top_k,
                                        .seed = 1000 + i,
                                        .position = i,
                                        .mode = DUET_GPU_ROW_SAMPLE,
                                        .next = -1};
    }
    results_init(&got, N, V);
    ck_assert_msg(duet__gpu_sampler_create(V, &sampler, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    run_device(sampler, V, logits, N, rows, WANT_TOKENS | WANT_PROBS, &got);
    for (uint32_t i = 0; i < N; i++) {
        EXPECT(got.tokens[i] >= 0 && got.tokens[i] < V, "token %d", got.tokens[i]);
        EXPECT(memcmp(got.probs + (size_t)i * V, got.probs, sizeof(float) * V) == 0,
               "row %u: another probability row for the same logits", i);
        counts[got.tokens[i]]++;
    }
    for (uint32_t i = 0; i < V; i++) {
        if (got.probs[i] == 0.0f) {
            ck_assert_msg(counts[i] == 0, "token %u outside the support drawn %u times", i,
                          counts[i]);
            continue;
        }
        ck_assert_msg(got.probs[i] * N >= 5.0f, "expected count of token %u too small", i);
        expected[support] = (double)got.probs[i] * N;
        obs[support++] = counts[i];
    }
    ck_assert_uint_ge(support, 2);
    x2 = chi_square(obs, expected, support);
    ck_assert_msg(x2 < chi2_crit_001[support - 1],
                  "chi-square %.3f >= %.3f (%u degrees of freedom)", x2, chi2_crit_001[support - 1],
                  support - 1);
    duet__gpu_sampler_destroy(sampler);
    results_fini(&got);
    free(rows);
    free(logits);
}

START_TEST(test_drawn_tokens_follow_the_returned_probabilities)
{
    check_fit(1.0f, 0, 1.0f, 0.0f);
    check_fit(0.7f, 0, 0.9f, 0.0f);
    check_fit(1.5f, 5, 1.0f, 0.0f);
    check_fit(1.0f, 0, 1.0f, 0.05f);
}
END_TEST

START_TEST(test_create_refuses_an_empty_vocabulary)
{
    duet_gpu_sampler *sampler = (duet_gpu_sampler *)&sampler;
    char err[256] = "";

    ck_assert_int_eq(duet__gpu_sampler_create(0, &sampler, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(sampler);
    ck_assert(strstr(err, "gpu sampler") != NULL);
    duet__gpu_sampler_destroy(NULL);
}
END_TEST

int main(void)
{
    const struct duet_test_case cases[] = {
        {"small_vocabularies", test_small_vocabularies_match_the_cpu_sampler},
        {"serving_vocabularies", test_serving_vocabularies_match_the_cpu_sampler},
        {"scratch", test_scratch_grows_across_calls},
        {"outputs", test_outputs_left_out_change_nothing_else},
        {"special_rows", test_ties_infinities_and_empty_rows_give_the_cpu_results},
        {"finite_rows", test_finite_rows_refuse_nan_and_infinity},
        {"top_p_exact", test_top_p_keeps_the_smallest_set_that_reaches_it_exactly},
        {"fit", test_drawn_tokens_follow_the_returned_probabilities},
        {"create", test_create_refuses_an_empty_vocabulary},
    };
    Suite *s;

    if (duet_test_gpu_devices() == 0) {
        printf("check_gpu_sampler: SKIP: no CUDA device\n");
        return 77;
    }
    s = suite_create("gpu_sampler");
    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 300);
    return duet_test_run(s);
}
