/*
 * Sampling: the filter pipeline (temperature, top-k, top-p, min-p) against a plain
 * double-precision reference on fresh random rows, the draw against the row it was drawn from,
 * seeded reproducibility and the counter-based generator, chi-square goodness of fit of the
 * sampled tokens, log-probabilities, and the edges of duet__sample_from_probs and
 * duet__sampler_create.
 *
 * Every random input comes from a fixed-seed generator, so each run checks the same rows and the
 * statistical tests are deterministic: their thresholds are the chi-square critical values at
 * significance 0.001, which a correct sampler passes with these seeds and a skewed one fails.
 *
 * The work is sized to take about half a second natively and under half a minute under valgrind
 * (make check-valgrind).
 */
#include "../sampling/sampling.h"

#include "check_util.h"
#include "test_rng.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Probabilities of a row agree with the reference to this (absolute); the implementation rounds
 * a double to float once, so the true difference is a few 1e-8. */
#define PROB_TOL 1e-6
/* Log-probabilities agree to this, relative to max(1, |reference|). */
#define LOGPROB_TOL 1e-6
/* A reference row whose filters compared two quantities closer than this (relative) is not
 * compared: double rounding in a different order may decide such a tie either way. */
#define DECISION_MARGIN 1e-9

/* Chi-square critical values at significance 0.001 for 1..15 degrees of freedom (the standard
 * table; recomputed from the regularised incomplete gamma function), and for 63. */
static const double chi2_crit_001[16] = {
    0.0,    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322,
    26.124, 27.877, 29.588, 31.264, 32.909, 34.528, 36.123, 37.697,
};
#define CHI2_CRIT_001_DF63 103.442

/* ck_assert_msg for loops over whole rows: Check records the location of every assertion that
 * passes (a write to its pipe each), which would dominate the run time; this one only calls into
 * Check when the condition fails. */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Test inputs                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static uint64_t rng_state; /* test_rng.h's generator */

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

static void seed_inputs(uint64_t seed)
{
    rng_state = seed;
}

enum row_kind {
    ROW_GAUSS,   /* normal logits of a random scale and offset */
    ROW_TIES,    /* normal logits rounded to halves: many ties */
    ROW_SKEWED,  /* magnitudes spread over many octaves */
    ROW_SPECIAL, /* normal, with NaN and -inf entries and sometimes +inf */
    ROW_KINDS
};

static void fill_row(float *logits, uint32_t vocab, enum row_kind kind)
{
    static const double scales[] = {0.01, 1.0, 3.0, 10.0};
    static const double offsets[] = {0.0, 50.0, -1e4};
    double scale = scales[rng_below(4)], offset = offsets[rng_below(3)];

    for (uint32_t i = 0; i < vocab; i++) {
        switch (kind) {
        case ROW_TIES:
            logits[i] = (float)(round(rng_gauss() * 2.0) / 2.0);
            break;
        case ROW_SKEWED:
            logits[i] = (float)-pow(1.3, (double)rng_below(120)) * (float)(1.0 + rng_unit());
            break;
        default:
            logits[i] = (float)(offset + scale * rng_gauss());
            break;
        }
    }
    if (kind == ROW_SPECIAL) {
        for (uint32_t i = 0; i < vocab; i++) {
            uint32_t r = rng_below(16);

            logits[i] = r == 0 ? NAN : r == 1 ? -INFINITY : logits[i];
        }
        if (rng_below(4) == 0)
            for (uint32_t j = rng_below(3) + 1; j > 0; j--)
                logits[rng_below(vocab)] = INFINITY;
        if (rng_below(8) == 0) /* nothing finite at all */
            for (uint32_t i = 0; i < vocab; i++)
                logits[i] = rng_below(2) ? NAN : -INFINITY;
    }
}

static duet_sampling_params random_params(uint32_t vocab)
{
    static const float temps[] = {0.0f, 1e-6f, DUET_SAMPLING_EPS, 0.05f, 0.5f, 0.8f, 1.0f,
                                  1.5f, 1e4f};
    static const float top_ps[] = {1.0f, 1.5f, 0.95f, 0.9f, 0.5f, 0.1f, 1e-6f, 0.0f};
    static const float min_ps[] = {0.0f, 0.0f, 0.05f, 0.3f, 1.0f};
    int32_t v = (int32_t)vocab, top_ks[] = {0, -1, 1, 2, 5, 50, 300, v / 3, v - 1, v, v + 7};
    duet_sampling_params sp = {0};

    sp.temperature = temps[rng_below(9)];
    sp.top_k = rng_below(4) == 0 ? 1 + (int32_t)rng_below(vocab) : top_ks[rng_below(11)];
    sp.top_p = rng_below(4) == 0 ? (float)rng_unit() : top_ps[rng_below(8)];
    sp.min_p = rng_below(4) == 0 ? (float)rng_unit() * 0.5f : min_ps[rng_below(5)];
    sp.seed = duet_test_rng_next(&rng_state);
    return sp;
}

/* ------------------------------------------------------------------------------------------ */
/* The reference: a full sort and the obvious loops, in double                                  */
/* ------------------------------------------------------------------------------------------ */

struct ref_tok {
    double key;
    uint32_t id;
};

static int cmp_ref(const void *pa, const void *pb)
{
    const struct ref_tok *a = pa, *b = pb;

    if (a->key != b->key)
        return a->key > b->key ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The tokens of a row, most likely first (larger logit, NaN as -inf; lower id on ties). The
 * caller frees the result. */
static struct ref_tok *ref_order(const float *logits, uint32_t vocab)
{
    struct ref_tok *t = malloc(sizeof(*t) * vocab);

    ck_assert_ptr_nonnull(t);
    for (uint32_t i = 0; i < vocab; i++)
        t[i] = (struct ref_tok){isnan(logits[i]) ? -INFINITY : (double)logits[i], i};
    qsort(t, vocab, sizeof(*t), cmp_ref);
    return t;
}

static void normalise(double *p, uint32_t vocab)
{
    double sum = 0.0;

    for (uint32_t i = 0; i < vocab; i++)
        sum += p[i];
    for (uint32_t i = 0; i < vocab; i++)
        p[i] /= sum;
}

/* Top-p on p (normalised), most likely first: keeps a token while the mass before it is below
 * top_p, and at least one. Lowers *margin to the closest such comparison. */
static void ref_top_p(const struct ref_tok *t, uint32_t vocab, double top_p, double *p,
                      double *margin)
{
    double before = 0.0;

    for (uint32_t r = 0; r < vocab; r++) {
        double pr = p[t[r].id];

        if (r > 0 && pr > 0.0 && fabs(before - top_p) < *margin) /* the first always stays */
            *margin = fabs(before - top_p);
        if (!(before < top_p) && r > 0)
            p[t[r].id] = 0.0;
        before += pr;
    }
    normalise(p, vocab);
}

/* Min-p on p (normalised): drops p < min_p × max p, keeping the most likely token. */
static void ref_min_p(const struct ref_tok *t, uint32_t vocab, double min_p, double *p,
                      double *margin)
{
    double pmax = p[t[0].id], threshold = min_p * pmax;

    for (uint32_t r = 1; r < vocab; r++) {
        double pr = p[t[r].id];

        if (pr > 0.0 && pr != pmax && fabs(pr - threshold) / pmax < *margin)
            *margin = fabs(pr - threshold) / pmax;
        if (pr < threshold)
            p[t[r].id] = 0.0;
    }
    normalise(p, vocab);
}

/* The distribution duet__sample_row must write for this row into p[vocab]; *margin gets the
 * closest call any filter made (relative), 1 when none was close. */
static void ref_probs(const float *logits, uint32_t vocab, const duet_sampling_params *sp,
                      double *p, double *margin)
{
    struct ref_tok *t = ref_order(logits, vocab);
    double m = t[0].key, temp = sp->temperature;
    uint32_t k = sp->top_k <= 0 || (uint32_t)sp->top_k >= vocab ? vocab : (uint32_t)sp->top_k;

    *margin = 1.0;
    memset(p, 0, sizeof(*p) * vocab);
    if (!(sp->temperature >= DUET_SAMPLING_EPS) || m == -INFINITY) {
        p[m == -INFINITY ? 0 : t[0].id] = 1.0; /* greedy, or nothing finite: token 0 */
        free(t);
        return;
    }
    for (uint32_t r = 0; r < k; r++) {
        double key = t[r].key;

        if (m == INFINITY)
            p[t[r].id] = key == INFINITY ? 1.0 : 0.0;
        else
            p[t[r].id] = exp((key - m) / temp);
    }
    normalise(p, vocab);
    if (sp->top_p < 1.0f)
        ref_top_p(t, vocab, sp->top_p, p, margin);
    if (sp->min_p > 0.0f)
        ref_min_p(t, vocab, sp->min_p, p, margin);
    free(t);
}

/* Log-softmax of the raw logits at token i, in double. */
static double ref_logprob(const float *logits, uint32_t vocab, uint32_t i)
{
    double m = -INFINITY, sum = 0.0, key = isnan(logits[i]) ? -INFINITY : logits[i];
    uint32_t n_inf = 0;

    for (uint32_t j = 0; j < vocab; j++) {
        if (logits[j] > m)
            m = logits[j];
        n_inf += logits[j] == INFINITY;
    }
    if (m == INFINITY)
        return key == INFINITY ? -log((double)n_inf) : -INFINITY;
    if (m == -INFINITY)
        return i == 0 ? 0.0 : -INFINITY;
    for (uint32_t j = 0; j < vocab; j++)
        if (!isnan(logits[j]))
            sum += exp((double)logits[j] - m);
    return key - m - log(sum);
}

/* ------------------------------------------------------------------------------------------ */
/* The filter pipeline                                                                          */
/* ------------------------------------------------------------------------------------------ */

static duet__sampler *sampler;

static void teardown(void)
{
    duet__sampler_destroy(sampler);
    sampler = NULL;
}

static void make_sampler(uint32_t vocab)
{
    duet__sampler_destroy(sampler);
    sampler = NULL;
    ck_assert_int_eq(duet__sampler_create(vocab, &sampler), DUET_STATUS_OK);
    ck_assert_ptr_nonnull(sampler);
}

static void describe(char *buf, size_t size, uint32_t vocab, uint32_t row, enum row_kind kind,
                     const duet_sampling_params *sp)
{
    snprintf(buf, size, "vocab %u row %u kind %d: T %g top_k %d top_p %g min_p %g", vocab, row,
             (int)kind, (double)sp->temperature, sp->top_k, (double)sp->top_p, (double)sp->min_p);
}

/* Samples one row and checks probs against the reference and the token against probs. Returns
 * false when the row was too close a call to compare. */
static bool check_row(const float *logits, uint32_t vocab, const duet_sampling_params *sp,
                      uint64_t position, float *probs, double *ref, const char *what)
{
    double margin, sum = 0.0, u = duet__rng_uniform(sp->seed, position, DUET_DRAW_SAMPLE);
    int32_t token = duet__sample_row(sampler, logits, sp, position, probs, NULL, NULL, 0);

    EXPECT(token >= 0 && (uint32_t)token < vocab, "%s: token %d", what, token);
    EXPECT(probs[token] > 0.0f, "%s: token %d has probability 0", what, token);
    EXPECT(token == duet__sample_from_probs(probs, vocab, u),
           "%s: token %d is not the inverse CDF of the written row", what, token);
    EXPECT(token == duet__sample_row(sampler, logits, sp, position, NULL, NULL, NULL, 0),
           "%s: a different token without a probs row", what);
    ref_probs(logits, vocab, sp, ref, &margin);
    if (margin < DECISION_MARGIN)
        return false;
    for (uint32_t i = 0; i < vocab; i++) {
        EXPECT(fabs(probs[i] - ref[i]) <= PROB_TOL, "%s: p[%u] = %.9g, reference %.9g", what, i,
               (double)probs[i], ref[i]);
        /* the same support, where float can tell (below FLT_MIN either is right) */
        if (ref[i] == 0.0 || ref[i] >= FLT_MIN)
            EXPECT((probs[i] > 0.0f) == (ref[i] > 0.0), "%s: support differs at %u (%g)", what, i,
                   ref[i]);
        sum += probs[i];
    }
    EXPECT(fabs(sum - 1.0) < 1e-5, "%s: probs sum to %.9g", what, sum);
    return true;
}

START_TEST(test_filtered_rows_match_a_double_precision_reference)
{
    static const uint32_t vocabs[] = {1, 2, 7, 97, 1000, 32000};
    static const uint32_t rows[] = {40, 120, 300, 300, 300, 36};
    uint32_t compared = 0, total = 0;

    seed_inputs(0x5a3b1e);
    for (size_t v = 0; v < sizeof(vocabs) / sizeof(vocabs[0]); v++) {
        uint32_t vocab = vocabs[v];
        float *logits = malloc(sizeof(*logits) * vocab), *probs = malloc(sizeof(*probs) * vocab);
        double *ref = malloc(sizeof(*ref) * vocab);

        ck_assert(logits && probs && ref);
        make_sampler(vocab);
        for (uint32_t row = 0; row < rows[v]; row++) {
            enum row_kind kind = (enum row_kind)(row % ROW_KINDS);
            duet_sampling_params sp = random_params(vocab);
            char what[160];

            fill_row(logits, vocab, kind);
            describe(what, sizeof(what), vocab, row, kind, &sp);
            compared +=
                check_row(logits, vocab, &sp, duet_test_rng_next(&rng_state), probs, ref, what);
            total++;
        }
        free(logits);
        free(probs);
        free(ref);
    }
    /* close calls are rare; most rows must have been compared */
    ck_assert_msg(compared * 20 >= total * 19, "only %u of %u rows compared", compared, total);
}
END_TEST

/* Rows that steer each path of the implementation: the heap and the bucketed top-k, top-p
 * boundaries inside a bucket, ties across a boundary, and the common serving settings. */
START_TEST(test_common_settings_on_a_full_vocabulary_match_the_reference)
{
    const uint32_t vocab = 32000;
    const duet_sampling_params settings[] = {
        {.temperature = 1.0f, .top_p = 1.0f},
        {.temperature = 0.8f, .top_p = 1.0f, .top_k = 50},
        {.temperature = 0.8f, .top_p = 0.9f},
        {.temperature = 0.7f, .top_p = 0.95f, .top_k = 40},
        {.temperature = 1.0f, .top_p = 0.9f, .top_k = 5000},
        {.temperature = 1.0f, .top_p = 1.0f, .top_k = 512}, /* the largest top-k for the heap */
        {.temperature = 1.0f, .top_p = 1.0f, .top_k = 513},
        {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.05f},
        {.temperature = 1.2f, .top_p = 0.8f, .min_p = 0.1f, .top_k = 1000},
    };
    float *logits = malloc(sizeof(*logits) * vocab), *probs = malloc(sizeof(*probs) * vocab);
    double *ref = malloc(sizeof(*ref) * vocab);

    ck_assert(logits && probs && ref);
    seed_inputs(0xc0ffee);
    make_sampler(vocab);
    for (size_t s = 0; s < sizeof(settings) / sizeof(settings[0]); s++) {
        for (enum row_kind kind = ROW_GAUSS; kind <= ROW_TIES; kind++) {
            duet_sampling_params sp = settings[s];
            char what[160];

            sp.seed = s;
            fill_row(logits, vocab, kind);
            describe(what, sizeof(what), vocab, (uint32_t)s, kind, &sp);
            ck_assert_msg(check_row(logits, vocab, &sp, 7, probs, ref, what),
                          "%s: a close call on a fixed row", what);
        }
    }
    free(logits);
    free(probs);
    free(ref);
}
END_TEST

/* Tied tokens whose masses add up exactly (everything else weighs exp(-10000) = 0): the
 * boundary cases the reference comparison has to leave out. */
START_TEST(test_top_p_keeps_the_smallest_set_that_reaches_it_exactly)
{
    const uint32_t vocab = 1000;
    float *logits = malloc(sizeof(*logits) * vocab), *probs = malloc(sizeof(*probs) * vocab);
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

    ck_assert(logits && probs);
    make_sampler(vocab);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        duet_sampling_params sp = {
            .temperature = 1.0f, .top_p = cases[c].top_p, .top_k = cases[c].top_k, .seed = c};
        uint32_t n = cases[c].n_tied, kept = 0;

        for (uint32_t i = 0; i < vocab; i++)
            logits[i] = -1e4f;
        for (uint32_t j = 0; j < n; j++)
            logits[n == 4 ? four[j] : 2 * j] = 10.0f;
        duet__sample_row(sampler, logits, &sp, 0, probs, NULL, NULL, 0);
        for (uint32_t j = 0; j < n; j++) {
            uint32_t id = n == 4 ? four[j] : 2 * j;

            ck_assert_msg(probs[id] == (j < cases[c].kept ? 1.0f / (float)cases[c].kept : 0.0f),
                          "case %zu: p[%u] = %g", c, id, (double)probs[id]);
            kept += probs[id] > 0.0f;
        }
        ck_assert_uint_eq(kept, cases[c].kept);
    }
    free(logits);
    free(probs);
}
END_TEST

START_TEST(test_greedy_takes_the_lowest_id_among_tied_maxima_and_writes_one_hot)
{
    const float logits[] = {1.0f, NAN, 4.0f, -INFINITY, 4.0f, 3.5f};
    float probs[6];
    duet_sampling_params sp = {.temperature = 0.0f, .top_p = 1.0f, .seed = 3};
    const float temps[] = {0.0f, 1e-6f, 9e-6f, NAN};

    make_sampler(6);
    for (size_t t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
        sp.temperature = temps[t];
        memset(probs, 0x7f, sizeof(probs));
        ck_assert_int_eq(duet__sample_row(sampler, logits, &sp, 11, probs, NULL, NULL, 0), 2);
        for (uint32_t i = 0; i < 6; i++)
            ck_assert_float_eq(probs[i], i == 2 ? 1.0f : 0.0f);
    }
}
END_TEST

START_TEST(test_positive_infinite_logits_share_all_the_mass)
{
    const float logits[] = {1.0f, INFINITY, 3.0f, NAN, INFINITY, -INFINITY, 2.0f};
    float probs[7];
    duet_sampling_params sp = {.temperature = 0.7f, .top_p = 1.0f, .seed = 5};
    float lp;

    make_sampler(7);
    for (uint64_t pos = 0; pos < 64; pos++) {
        int32_t token = duet__sample_row(sampler, logits, &sp, pos, probs, &lp, NULL, 0);

        ck_assert(token == 1 || token == 4);
        ck_assert_float_eq_tol(lp, (float)-log(2.0), 1e-7f);
        for (uint32_t i = 0; i < 7; i++)
            ck_assert_float_eq(probs[i], i == 1 || i == 4 ? 0.5f : 0.0f);
    }
    sp.top_k = 1;
    ck_assert_int_eq(duet__sample_row(sampler, logits, &sp, 0, probs, NULL, NULL, 0), 1);
    ck_assert_float_eq(probs[1], 1.0f);
    sp.temperature = 0.0f;
    ck_assert_int_eq(duet__sample_row(sampler, logits, &sp, 0, probs, NULL, NULL, 0), 1);
}
END_TEST

START_TEST(test_row_without_a_finite_logit_samples_token_zero)
{
    const float logits[] = {NAN, -INFINITY, NAN, -INFINITY, -INFINITY};
    const float temps[] = {0.0f, 1.0f};
    float probs[5], lp;
    duet_logprob top[3];

    make_sampler(5);
    for (size_t t = 0; t < 2; t++) {
        duet_sampling_params sp = {
            .temperature = temps[t], .top_p = 0.5f, .top_k = 2, .min_p = 0.1f, .seed = 9};

        ck_assert_int_eq(duet__sample_row(sampler, logits, &sp, 4, probs, &lp, top, 3), 0);
        for (uint32_t i = 0; i < 5; i++)
            ck_assert_float_eq(probs[i], i == 0 ? 1.0f : 0.0f);
        /* the log-probabilities describe the same one-hot row */
        ck_assert_float_eq(lp, 0.0f);
        ck_assert_int_eq(top[0].token, 0);
        ck_assert_float_eq(top[0].logprob, 0.0f);
        ck_assert_int_eq(top[1].token, 1);
        ck_assert(isinf(top[1].logprob) && top[1].logprob < 0);
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Seeds, positions and draw indices                                                            */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_same_seed_and_position_give_the_same_token_whatever_ran_before)
{
    const uint32_t vocab = 1000;
    float *a = malloc(sizeof(*a) * vocab), *b = malloc(sizeof(*b) * vocab);
    duet__sampler *other;
    duet_sampling_params sp = {.temperature = 1.0f, .top_p = 0.95f, .top_k = 500, .seed = 42};
    int32_t first[64];

    ck_assert(a && b);
    seed_inputs(77);
    fill_row(a, vocab, ROW_GAUSS);
    fill_row(b, vocab, ROW_SPECIAL);
    make_sampler(vocab);
    ck_assert_int_eq(duet__sampler_create(vocab, &other), DUET_STATUS_OK);
    for (uint64_t pos = 0; pos < 64; pos++)
        first[pos] = duet__sample_row(sampler, a, &sp, pos, NULL, NULL, NULL, 0);
    for (uint64_t pos = 64; pos-- > 0;) {
        duet_sampling_params noise = {.temperature = 2.0f, .top_p = 0.3f, .seed = pos};

        /* another row, other settings and another sampler in between change nothing */
        duet__sample_row(sampler, b, &noise, pos * 31, NULL, NULL, NULL, 0);
        ck_assert_int_eq(duet__sample_row(sampler, a, &sp, pos, NULL, NULL, NULL, 0), first[pos]);
        ck_assert_int_eq(duet__sample_row(other, a, &sp, pos, NULL, NULL, NULL, 0), first[pos]);
    }
    duet__sampler_destroy(other);
    free(a);
    free(b);
}
END_TEST

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;

    return (a > b) - (a < b);
}

START_TEST(test_different_seeds_and_positions_give_different_draws)
{
    enum { N = 20000 };
    const uint32_t vocab = 1000;
    double *u = malloc(sizeof(*u) * 3 * N);
    float *logits = malloc(sizeof(*logits) * vocab);
    duet_sampling_params sp = {.temperature = 1.0f, .top_p = 1.0f};
    int32_t seen_seed[1000] = {0}, seen_pos[1000] = {0};
    uint32_t distinct_seed = 0, distinct_pos = 0;

    ck_assert(u && logits);
    /* no two of (seed s, position p, draw d) for neighbouring s, p, d collide */
    for (uint32_t i = 0; i < N; i++) {
        u[3 * i] = duet__rng_uniform(i, 0, DUET_DRAW_SAMPLE);
        u[3 * i + 1] = duet__rng_uniform(0, i + 1, DUET_DRAW_SAMPLE);
        u[3 * i + 2] = duet__rng_uniform(1, i, DUET_DRAW_ACCEPT);
    }
    qsort(u, 3 * N, sizeof(*u), cmp_double);
    for (uint32_t i = 1; i < 3 * N; i++)
        EXPECT(u[i] != u[i - 1], "two draws gave %.17g", u[i]);
    /* on a flat row, 100 seeds (or 100 positions) choose close to 100 distinct tokens */
    for (uint32_t i = 0; i < vocab; i++)
        logits[i] = 0.25f;
    make_sampler(vocab);
    for (uint32_t i = 0; i < 100; i++) {
        int32_t t;

        sp.seed = 1000 + i;
        t = duet__sample_row(sampler, logits, &sp, 5, NULL, NULL, NULL, 0);
        distinct_seed += seen_seed[t]++ == 0;
        sp.seed = 1000;
        t = duet__sample_row(sampler, logits, &sp, 5 + i, NULL, NULL, NULL, 0);
        distinct_pos += seen_pos[t]++ == 0;
    }
    ck_assert_uint_ge(distinct_seed, 85);
    ck_assert_uint_ge(distinct_pos, 85);
    free(u);
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

START_TEST(test_rng_uniform_is_uniform_by_chi_square)
{
    enum { BUCKETS = 64, N = 128000 };
    double expected[BUCKETS];
    uint32_t by_position[BUCKETS] = {0}, by_seed[BUCKETS] = {0};

    for (uint32_t b = 0; b < BUCKETS; b++)
        expected[b] = (double)N / BUCKETS;
    for (uint32_t i = 0; i < N; i++) {
        double a = duet__rng_uniform(12345, i, DUET_DRAW_SAMPLE), c = duet__rng_uniform(i, 7, 0);

        EXPECT(a >= 0.0 && a < 1.0 && c >= 0.0 && c < 1.0, "draw %u: %g %g", i, a, c);
        by_position[(uint32_t)(a * BUCKETS)]++;
        by_seed[(uint32_t)(c * BUCKETS)]++;
    }
    /* 63 degrees of freedom */
    ck_assert_double_lt(chi_square(by_position, expected, BUCKETS), CHI2_CRIT_001_DF63);
    ck_assert_double_lt(chi_square(by_seed, expected, BUCKETS), CHI2_CRIT_001_DF63);
}
END_TEST

START_TEST(test_draw_indices_are_independent_streams)
{
    enum { GRID = 8, N = 64000 };
    static const uint32_t pairs[3][2] = {
        {DUET_DRAW_SAMPLE, DUET_DRAW_ACCEPT},
        {DUET_DRAW_SAMPLE, DUET_DRAW_RESAMPLE},
        {DUET_DRAW_ACCEPT, DUET_DRAW_RESAMPLE},
    };
    double expected[GRID * GRID];

    for (uint32_t b = 0; b < GRID * GRID; b++)
        expected[b] = (double)N / (GRID * GRID);
    for (int p = 0; p < 3; p++) {
        uint32_t grid[GRID * GRID] = {0};
        double sx = 0, sy = 0, sxy = 0, sxx = 0, syy = 0, r;

        for (uint32_t i = 0; i < N; i++) {
            double x = duet__rng_uniform(99, i, pairs[p][0]),
                   y = duet__rng_uniform(99, i, pairs[p][1]);

            grid[(uint32_t)(x * GRID) * GRID + (uint32_t)(y * GRID)]++;
            sx += x;
            sy += y;
            sxy += x * y;
            sxx += x * x;
            syy += y * y;
        }
        /* the joint histogram of two draws at the same (seed, position) is flat: 63 degrees of
         * freedom; and their correlation is within 4 standard errors of 0 */
        ck_assert_double_lt(chi_square(grid, expected, GRID * GRID), CHI2_CRIT_001_DF63);
        r = (N * sxy - sx * sy) / sqrt((N * sxx - sx * sx) * (N * syy - sy * sy));
        ck_assert_double_lt(fabs(r), 4.0 / sqrt((double)N));
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Goodness of fit of the sampled tokens                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Samples n positions of one 16-token row and checks the token counts against the written
 * probabilities: no token outside the support, and chi-square below the 0.001 critical value. */
static void check_fit(const duet_sampling_params *sp, uint32_t n, uint32_t expect_support)
{
    enum { V = 16 };
    float logits[V], probs[V], row[V];
    uint32_t counts[V] = {0}, obs[V], support = 0;
    double expected[V], x2;

    seed_inputs(2024);
    for (uint32_t i = 0; i < V; i++)
        logits[i] = (float)rng_gauss();
    make_sampler(V);
    duet__sample_row(sampler, logits, sp, 0, row, NULL, NULL, 0);
    for (uint32_t pos = 0; pos < n; pos++) {
        int32_t t = duet__sample_row(sampler, logits, sp, pos, probs, NULL, NULL, 0);

        EXPECT(t >= 0 && t < V, "token %d", t);
        counts[t]++;
    }
    for (uint32_t i = 0; i < V; i++) {
        if (row[i] == 0.0f) {
            ck_assert_msg(counts[i] == 0, "token %u outside the support drawn %u times", i,
                          counts[i]);
            continue;
        }
        ck_assert_msg(row[i] * n >= 5.0f, "expected count of token %u too small for the test", i);
        expected[support] = (double)row[i] * n;
        obs[support++] = counts[i];
    }
    ck_assert_uint_eq(support, expect_support);
    if (support < 2)
        return;
    x2 = chi_square(obs, expected, support);
    ck_assert_msg(x2 < chi2_crit_001[support - 1],
                  "chi-square %.3f >= %.3f (%u degrees of freedom)", x2, chi2_crit_001[support - 1],
                  support - 1);
}

START_TEST(test_sampled_frequencies_fit_the_row_at_plain_temperature)
{
    duet_sampling_params sp = {.temperature = 0.9f, .top_p = 1.0f, .seed = 0xfeed};

    check_fit(&sp, 200000, 16);
}
END_TEST

START_TEST(test_sampled_frequencies_fit_the_row_with_top_k_top_p_and_min_p)
{
    duet_sampling_params sp = {
        .temperature = 1.3f, .top_k = 9, .top_p = 0.85f, .min_p = 0.08f, .seed = 0xbeef};
    float logits[16], row[16];
    uint32_t support = 0;

    /* the filters must bind: fewer tokens than top-k keeps, more than one */
    seed_inputs(2024);
    for (uint32_t i = 0; i < 16; i++)
        logits[i] = (float)rng_gauss();
    make_sampler(16);
    duet__sample_row(sampler, logits, &sp, 0, row, NULL, NULL, 0);
    for (uint32_t i = 0; i < 16; i++)
        support += row[i] > 0.0f;
    ck_assert(support > 2 && support < 9);
    check_fit(&sp, 200000, support);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Log-probabilities                                                                            */
/* ------------------------------------------------------------------------------------------ */

static void check_top(const float *logits, uint32_t vocab, const duet_logprob *top, uint32_t n_top,
                      const char *what)
{
    struct ref_tok *t = ref_order(logits, vocab);

    for (uint32_t j = 0; j < n_top; j++) {
        double ref;

        if (j >= vocab) {
            EXPECT(top[j].token == -1, "%s: entry %u past the vocabulary has token %d", what, j,
                   top[j].token);
            continue;
        }
        EXPECT(top[j].token == (int32_t)t[j].id, "%s: entry %u is token %d, not %u", what, j,
               top[j].token, t[j].id);
        ref = ref_logprob(logits, vocab, t[j].id);
        if (isinf(ref))
            EXPECT(top[j].logprob == (float)ref, "%s: entry %u: %g, not %g", what, j,
                   (double)top[j].logprob, ref);
        else
            EXPECT(fabs(top[j].logprob - ref) <= LOGPROB_TOL * fmax(1.0, fabs(ref)),
                   "%s: entry %u: %.9g, reference %.9g", what, j, (double)top[j].logprob, ref);
    }
    free(t);
}

START_TEST(test_top_logprobs_match_a_double_reference_in_order_and_value)
{
    static const uint32_t vocabs[] = {7, 97, 1000, 32000};
    static const uint32_t n_tops[] = {1, 5, 20};

    seed_inputs(31337);
    for (size_t v = 0; v < 4; v++) {
        uint32_t vocab = vocabs[v];
        float *logits = malloc(sizeof(*logits) * vocab);

        ck_assert_ptr_nonnull(logits);
        make_sampler(vocab);
        for (uint32_t row = 0; row < (vocab > 1000 ? 4u : 24u); row++) {
            enum row_kind kind = (enum row_kind)(row % ROW_KINDS);
            uint32_t n_top = n_tops[row % 3];
            duet_logprob top[20];
            char what[64];

            fill_row(logits, vocab, kind);
            snprintf(what, sizeof(what), "vocab %u row %u kind %d", vocab, row, (int)kind);
            duet__row_logprobs(sampler, logits, n_top, top, -1, NULL);
            check_top(logits, vocab, top, n_top, what);
        }
        free(logits);
    }
}
END_TEST

START_TEST(test_token_logprob_is_the_raw_log_softmax_of_the_sampled_token)
{
    const uint32_t vocab = 97;
    float logits[97], lp, probs[97];
    duet_logprob top[8], again[8];

    seed_inputs(4242);
    make_sampler(vocab);
    for (uint32_t row = 0; row < 200; row++) {
        duet_sampling_params sp = random_params(vocab);
        int32_t token;
        double ref;

        fill_row(logits, vocab, (enum row_kind)(row % ROW_KINDS));
        token = duet__sample_row(sampler, logits, &sp, row, probs, &lp, top, 8);
        /* asking for log-probabilities changes neither the token nor the row */
        ck_assert_int_eq(token, duet__sample_row(sampler, logits, &sp, row, NULL, NULL, NULL, 0));
        ref = ref_logprob(logits, vocab, (uint32_t)token);
        if (isinf(ref))
            ck_assert(lp == (float)ref);
        else
            ck_assert_msg(fabs(lp - ref) <= LOGPROB_TOL * fmax(1.0, fabs(ref)),
                          "row %u: %.9g, reference %.9g", row, (double)lp, ref);
        duet__row_logprobs(sampler, logits, 8, again, -1, NULL);
        ck_assert_mem_eq(top, again, sizeof(top));
    }
}
END_TEST

START_TEST(test_row_logprobs_give_the_next_token_and_nan_without_one)
{
    const uint32_t vocab = 1000;
    float *logits = malloc(sizeof(*logits) * vocab), next;
    duet_logprob top[4];

    ck_assert_ptr_nonnull(logits);
    seed_inputs(8);
    fill_row(logits, vocab, ROW_GAUSS);
    make_sampler(vocab);
    for (uint32_t id = 0; id < vocab; id += 37) {
        double ref = ref_logprob(logits, vocab, id);

        duet__row_logprobs(sampler, logits, 4, top, (int32_t)id, &next);
        ck_assert_msg(fabs(next - ref) <= LOGPROB_TOL * fmax(1.0, fabs(ref)), "%u: %g vs %g", id,
                      (double)next, ref);
        check_top(logits, vocab, top, 4, "row logprobs");
    }
    duet__row_logprobs(sampler, logits, 4, top, -1, &next);
    ck_assert(isnan(next));
    duet__row_logprobs(sampler, logits, 0, NULL, 5, NULL); /* nothing asked, nothing written */
    free(logits);
}
END_TEST

START_TEST(test_top_entries_past_the_vocabulary_have_token_minus_one)
{
    const float logits[] = {0.5f, -1.0f, 2.0f};
    duet_sampling_params sp = {.temperature = 1.0f, .top_p = 1.0f};
    duet_logprob top[6];
    float lp;

    make_sampler(3);
    duet__row_logprobs(sampler, logits, 6, top, 2, &lp);
    check_top(logits, 3, top, 6, "row logprobs");
    memset(top, 0, sizeof(top));
    duet__sample_row(sampler, logits, &sp, 0, NULL, &lp, top, 6);
    check_top(logits, 3, top, 6, "sample row");
    ck_assert_int_eq(top[0].token, 2);
    ck_assert_int_eq(top[3].token, -1);
    ck_assert_int_eq(top[5].token, -1);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* duet__sample_from_probs and duet__sampler_create */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_sample_from_probs_inverts_the_cdf_at_its_edges)
{
    const float zeros[4] = {0};
    const float row[6] = {0.0f, 0.0f, 0.3f, 0.0f, 0.7f, 0.0f};
    const float unnormalised[3] = {2.0f, 0.0f, 6.0f};
    const float odd[5] = {-1.0f, NAN, 0.25f, -0.0f, 0.75f};
    const double below_one = 1.0 - 0x1.0p-53;

    ck_assert_int_eq(duet__sample_from_probs(zeros, 4, 0.5), -1);
    ck_assert_int_eq(duet__sample_from_probs(zeros, 0, 0.5), -1);
    /* zeros are never chosen, from u = 0 up to the largest u below 1 */
    ck_assert_int_eq(duet__sample_from_probs(row, 6, 0.0), 2);
    ck_assert_int_eq(duet__sample_from_probs(row, 6, 0.29), 2);
    ck_assert_int_eq(duet__sample_from_probs(row, 6, 0.31), 4);
    ck_assert_int_eq(duet__sample_from_probs(row, 6, below_one), 4);
    /* rounding past the end gives the last token with mass */
    ck_assert_int_eq(duet__sample_from_probs(row, 6, 1.0), 4);
    /* the total need not be 1: the cumulative sum must exceed u × total (here 8) */
    ck_assert_int_eq(duet__sample_from_probs(unnormalised, 3, 0.24), 0);
    ck_assert_int_eq(duet__sample_from_probs(unnormalised, 3, 0.25), 2);
    ck_assert_int_eq(duet__sample_from_probs(unnormalised, 3, 0.9), 2);
    /* entries that are not positive carry no mass */
    ck_assert_int_eq(duet__sample_from_probs(odd, 5, 0.0), 2);
    ck_assert_int_eq(duet__sample_from_probs(odd, 5, 0.2), 2);
    ck_assert_int_eq(duet__sample_from_probs(odd, 5, 0.3), 4);
    ck_assert_int_eq(duet__sample_from_probs(odd, 5, below_one), 4);
}
END_TEST

START_TEST(test_create_refuses_an_empty_vocabulary)
{
    duet__sampler *s = (duet__sampler *)&s;

    ck_assert_int_eq(duet__sampler_create(0, &s), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(duet__sampler_create(5, NULL), DUET_STATUS_INVALID_ARGUMENT);
    duet__sampler_destroy(NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Penalties and logit bias                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* The penalised logits in double precision, dense and naive: vLLM's logit bias, then its
 * repetition, frequency and presence penalties over count[] (generated occurrences, recent
 * tokens included) and in_set[] (prompt or generated). */
static void ref_penalize(const float *logits, uint32_t vocab, const double *bias,
                         const uint32_t *count, const bool *in_set, double rep, double freq,
                         double pres, double *out)
{
    for (uint32_t t = 0; t < vocab; t++) {
        double v = (double)logits[t] + bias[t];

        if (in_set[t]) {
            v = v > 0 ? v / rep : v * rep;
            v -= freq * count[t] + (count[t] > 0 ? pres : 0.0);
        }
        out[t] = v;
    }
}

struct pen_case {
    uint32_t vocab;
    float logits[1000];
    double bias_d[1000], ref[1000];
    uint32_t count[1000];
    bool in_set[1000];
    duet_token_bias bias[16];
    duet_token_count seen[1000];
    int32_t fed[8], drawn[8];
    duet_penalties pen;
    duet__recent rc;
};

/* A random case: prompt and output tokens, a bias list, recent fed and drawn tokens. */
static void pen_case_fill(struct pen_case *c, uint32_t vocab)
{
    uint32_t n_prompt = 1 + rng_below(40), n_out = rng_below(40), n_bias = rng_below(16);
    bool prompt[1000] = {false};

    memset(c, 0, sizeof(*c));
    c->vocab = vocab;
    for (uint32_t t = 0; t < vocab; t++)
        c->logits[t] = (float)(rng_gauss() * 4.0);
    for (uint32_t i = 0; i < n_prompt; i++)
        prompt[rng_below(vocab)] = true;
    for (uint32_t i = 0; i < n_out; i++)
        c->count[rng_below(vocab)]++;
    for (uint32_t t = 0; t < vocab; t++) {
        c->in_set[t] = prompt[t] || c->count[t];
        if (c->in_set[t])
            c->seen[c->pen.n_seen++] = (duet_token_count){(int32_t)t, c->count[t]};
    }
    for (uint32_t t = 0; t < vocab && c->pen.n_bias < n_bias; t++)
        if (rng_below(vocab) < 2 * n_bias) {
            float b = (float)(rng_below(2) ? rng_unit() * 200.0 - 100.0 : rng_gauss());

            c->bias[c->pen.n_bias++] = (duet_token_bias){(int32_t)t, b};
            c->bias_d[t] = b;
        }
    c->rc.n_fed = rng_below(5);
    c->rc.n_drawn = rng_below(5);
    for (uint32_t i = 0; i < c->rc.n_fed; i++) {
        c->fed[i] = (int32_t)rng_below(vocab);
        c->count[c->fed[i]]++;
        c->in_set[c->fed[i]] = true;
    }
    for (uint32_t i = 0; i < c->rc.n_drawn; i++) {
        c->drawn[i] = rng_below(6) ? (int32_t)rng_below(vocab) : DUET_TOKEN_NONFINITE;
        if (c->drawn[i] >= 0) {
            c->count[c->drawn[i]]++;
            c->in_set[c->drawn[i]] = true;
        }
    }
    c->rc.fed = c->fed;
    c->rc.drawn = c->drawn;
    c->pen.struct_size = sizeof(c->pen);
    c->pen.repetition = (float)(0.5 + 1.5 * rng_unit());
    c->pen.frequency = (float)(4.0 * rng_unit() - 2.0);
    c->pen.presence = (float)(4.0 * rng_unit() - 2.0);
    c->pen.seen = c->seen;
    c->pen.bias = c->bias;
    ref_penalize(c->logits, vocab, c->bias_d, c->count, c->in_set, c->pen.repetition,
                 c->pen.frequency, c->pen.presence, c->ref);
}

/* Penalised logits agree with the dense double reference to float rounding: a relative 1e-6
 * (one rounding of the double result is 6e-8; the tolerance leaves room, a wrong count or a
 * missed token is off by at least min(|frequency|, |presence|, the repetition factor)). */
START_TEST(test_penalties_match_a_double_precision_reference)
{
    static const uint32_t vocabs[] = {2, 7, 97, 1000};
    static struct pen_case c;
    static float out[1000], again[1000];
    static duet__penalty_edit edits[1100];
    uint32_t n_edits;

    seed_inputs(0x9e7a1);
    for (uint32_t v = 0; v < 4; v++)
        for (uint32_t row = 0; row < 300; row++) {
            pen_case_fill(&c, vocabs[v]);
            duet__penalize(c.logits, c.vocab, &c.pen, &c.rc, out);
            /* the edit list a device applies gives the same row, bit for bit */
            n_edits = duet__penalty_edits(&c.pen, &c.rc, c.vocab, edits);
            ck_assert_uint_le(n_edits, c.pen.n_seen + c.pen.n_bias + c.rc.n_fed + c.rc.n_drawn);
            memcpy(again, c.logits, c.vocab * sizeof(float));
            for (uint32_t i = 0; i < n_edits; i++) {
                for (uint32_t j = 0; j < i; j++)
                    EXPECT(edits[j].token != edits[i].token, "token %d edited twice",
                           edits[i].token);
                again[edits[i].token] = duet__penalty_apply(again[edits[i].token], &edits[i]);
            }
            EXPECT(!memcmp(again, out, c.vocab * sizeof(float)), "vocab %u row %u: edits differ",
                   c.vocab, row);
            for (uint32_t t = 0; t < c.vocab; t++)
                EXPECT(fabs(out[t] - c.ref[t]) <= 1e-6 * fmax(1.0, fabs(c.ref[t])),
                       "vocab %u row %u token %u: %.9g, reference %.9g (rep %g freq %g pres %g)",
                       c.vocab, row, t, (double)out[t], c.ref[t], (double)c.pen.repetition,
                       (double)c.pen.frequency, (double)c.pen.presence);
        }
}
END_TEST

/* Sampling with penalties draws from the penalised row (the same token and probs as sampling
 * that row directly) and reports the raw row's log-probabilities. */
START_TEST(test_penalised_sampling_draws_from_the_penalised_row_with_raw_logprobs)
{
    static struct pen_case c;
    static float pen[1000], probs_a[1000], probs_b[1000];
    duet_logprob top_a[4], top_b[4];
    float lp_a, lp_b;
    duet_sampling_params sp = {.temperature = 0.9f, .top_p = 0.95f, .top_k = 50, .seed = 7};

    seed_inputs(0x9e7a2);
    make_sampler(1000);
    for (uint32_t row = 0; row < 200; row++) {
        int32_t a, b;

        pen_case_fill(&c, 1000);
        sp.temperature = row % 4 ? 0.9f : 0.0f;
        duet__penalize(c.logits, c.vocab, &c.pen, &c.rc, pen);
        a = duet__sample_row_penalized(sampler, c.logits, &sp, &c.pen, &c.rc, row, probs_a, &lp_a,
                                       top_a, 4);
        b = duet__sample_row(sampler, pen, &sp, row, probs_b, NULL, NULL, 0);
        EXPECT(a == b, "row %u: token %d, from the penalised row %d", row, a, b);
        EXPECT(!memcmp(probs_a, probs_b, sizeof(probs_a)), "row %u: probs differ", row);
        duet__sample_row(sampler, c.logits, &sp, row, NULL, &lp_b, top_b, 4);
        duet__row_logprobs(sampler, c.logits, 4, top_b, a, &lp_b);
        EXPECT(fabs(lp_a - lp_b) <= LOGPROB_TOL * fmax(1.0, fabs(lp_b)),
               "row %u: token logprob %g, raw %g", row, (double)lp_a, (double)lp_b);
        EXPECT(!memcmp(top_a, top_b, sizeof(top_a)), "row %u: top logprobs are not raw", row);
    }
    /* and a bias of +100 forces its token, greedy or not */
    c.pen = (duet_penalties){.struct_size = sizeof(c.pen),
                             .repetition = 1.0f,
                             .n_bias = 1,
                             .bias = &(duet_token_bias){.token = 613, .bias = 100.0f}};
    for (uint32_t row = 0; row < 20; row++) {
        sp.temperature = row % 2 ? 1.0f : 0.0f;
        ck_assert_int_eq(duet__sample_row_penalized(sampler, c.logits, &sp, &c.pen, NULL, row, NULL,
                                                    NULL, NULL, 0),
                         613);
    }
}
END_TEST

/* Which tokens a row counts beyond seen: scoring row j the drafts x1..xj, drafting step s the
 * tokens steps 0..s-1 sampled. */
START_TEST(test_penalty_recent_tokens_follow_the_rows_of_scoring_and_drafting)
{
    static const int32_t score[] = {5, 11, 12, 13}, draft[] = {3, 4};
    static const int32_t out[] = {-1, 21, 22, 23, 24};
    duet_seq q = {.tokens = score, .n_tokens = 4, .pos = 10, .n_outputs = 4};
    duet__recent rc;

    for (uint32_t j = 0; j < 4; j++) {
        rc = duet__penalty_recent(&q, 11 + j, out, j);
        ck_assert_uint_eq(rc.n_fed, j);
        ck_assert_uint_eq(rc.n_drawn, 0);
        ck_assert_ptr_eq(rc.fed, score + 1);
    }
    q = (duet_seq){.tokens = draft, .n_tokens = 2, .pos = 6, .n_outputs = 1, .n_draft_steps = 3};
    for (uint32_t s = 0; s < 4; s++) {
        rc = duet__penalty_recent(&q, 8 + s, out, 1 + s);
        ck_assert_uint_eq(rc.n_fed, 0);
        ck_assert_uint_eq(rc.n_drawn, s);
        if (s)
            ck_assert_ptr_eq(rc.drawn, out + 1);
    }
}
END_TEST

static Suite *sampling_suite(void)
{
    Suite *s = suite_create("sampling");
    const struct duet_test_case cases[] = {
        {"reference", test_filtered_rows_match_a_double_precision_reference},
        {"common settings", test_common_settings_on_a_full_vocabulary_match_the_reference},
        {"top-p exact", test_top_p_keeps_the_smallest_set_that_reaches_it_exactly},
        {"greedy", test_greedy_takes_the_lowest_id_among_tied_maxima_and_writes_one_hot},
        {"+inf", test_positive_infinite_logits_share_all_the_mass},
        {"no finite logit", test_row_without_a_finite_logit_samples_token_zero},
        {"reproducible", test_same_seed_and_position_give_the_same_token_whatever_ran_before},
        {"distinct draws", test_different_seeds_and_positions_give_different_draws},
        {"rng uniform", test_rng_uniform_is_uniform_by_chi_square},
        {"draw streams", test_draw_indices_are_independent_streams},
        {"fit plain", test_sampled_frequencies_fit_the_row_at_plain_temperature},
        {"fit filtered", test_sampled_frequencies_fit_the_row_with_top_k_top_p_and_min_p},
        {"top logprobs", test_top_logprobs_match_a_double_reference_in_order_and_value},
        {"token logprob", test_token_logprob_is_the_raw_log_softmax_of_the_sampled_token},
        {"row logprobs", test_row_logprobs_give_the_next_token_and_nan_without_one},
        {"past vocab", test_top_entries_past_the_vocabulary_have_token_minus_one},
        {"from probs", test_sample_from_probs_inverts_the_cdf_at_its_edges},
        {"create", test_create_refuses_an_empty_vocabulary},
        {"penalties reference", test_penalties_match_a_double_precision_reference},
        {"penalised sampling",
         test_penalised_sampling_draws_from_the_penalised_row_with_raw_logprobs},
        {"penalty recent", test_penalty_recent_tokens_follow_the_rows_of_scoring_and_drafting},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, teardown, 120);
    return s;
}

int main(void)
{
    return duet_test_run(sampling_suite());
}
