/*
 * The verify step of speculative decoding (engine/rejection.h), porting vLLM's
 * tests/samplers/test_rejection_sampler.py and test_typical_acceptance_sampler.py in spirit:
 * the output format under forced accept / reject patterns, well-formed output for every shape,
 * seeded determinism, refusals with a message, exactness of rejection sampling by chi-square,
 * greedy matching and typical acceptance on constructed rows.
 *
 * Forcing a decision: p_j = q_j accepts x_j with certainty (u < p/q = 1); p_j one-hot at t != x_j
 * rejects it with certainty (p(x) = 0) and makes the residual max(0, p - q) one-hot at t, so the
 * emitted token is known.
 *
 * Statistical tests draw every draft the way the draft worker does (duet__sample_from_probs of q_j
 * at U(seed, P_j, DUET_DRAW_SAMPLE)) and vary the seed or position per trial. Their thresholds
 * are the chi-square critical values at significance 0.001 (per comparison; 8 comparisons in
 * all); all inputs come from fixed seeds, so the run is deterministic, and a correct sampler
 * passes with these seeds while, e.g., emitting from p instead of the residual or reusing the
 * accept draw of one position at the next fails by far. 10^6 trials natively (half a second),
 * 10^5 under valgrind (DUET_TEST_VALGRIND).
 */
#include "../engine/rejection.h"

#include "../sampling/sampling.h"
#include "check_util.h"
#include "test_rng.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chi-square critical values at significance 0.001 for 1..15 degrees of freedom (the same table
 * as check_sampling.c). */
static const double chi2_crit_001[16] = {
    0.0,    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322,
    26.124, 27.877, 29.588, 31.264, 32.909, 34.528, 36.123, 37.697,
};

/* ck_assert_msg that calls into Check only on failure (inner loops). */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

#define KMAX 8u
#define VMAX 1000u

static const struct duet__accept_params REJECTION = {DUET__ACCEPT_REJECTION, 0.0f, 0.0f, 0.0};
static const struct duet__accept_params GREEDY = {DUET__ACCEPT_GREEDY, 0.0f, 0.0f, 0.0};
/* The defaults of speculative.typical_posterior_threshold and typical_posterior_alpha. */
static const struct duet__accept_params TYPICAL = {DUET__ACCEPT_TYPICAL, 0.09f, 0.3f, 0.0};
/* speculative.acceptance = synthetic with speculative.synthetic_rate = 0.8. */
static const struct duet__accept_params SYNTHETIC = {DUET__ACCEPT_SYNTHETIC, 0.0f, 0.0f, 0.8};

/* Buffers of one proposal of up to KMAX drafts over up to VMAX tokens. */
static int32_t drafts[KMAX], tokens[KMAX + 1];
static float q_rows[KMAX * VMAX], p_rows[(KMAX + 1) * VMAX], scratch[VMAX];
static char err[256];

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

static void normalise(float *row, uint32_t vocab)
{
    double sum = 0.0;

    for (uint32_t v = 0; v < vocab; v++)
        sum += row[v];
    for (uint32_t v = 0; v < vocab; v++)
        row[v] = (float)(row[v] / sum);
}

/* A random distribution; each entry is zero with probability zero_frac, at least one is not. */
static void random_row(float *row, uint32_t vocab, double zero_frac)
{
    for (uint32_t v = 0; v < vocab; v++)
        row[v] = rng_unit() < zero_frac ? 0.0f : (float)(0.05 + rng_unit());
    row[rng_below(vocab)] = (float)(0.05 + rng_unit());
    normalise(row, vocab);
}

static void one_hot(float *row, uint32_t vocab, int32_t at)
{
    memset(row, 0, sizeof(*row) * vocab);
    row[at] = 1.0f;
}

/* What a worker samples from row at (seed, pos): the draft's proposals, the target's own token. */
static int32_t worker_sample(const float *row, uint32_t vocab, uint64_t seed, uint64_t pos)
{
    return duet__sample_from_probs(row, vocab, duet__rng_uniform(seed, pos, DUET_DRAW_SAMPLE));
}

static struct duet__proposal proposal(uint32_t k, uint64_t seed, uint64_t pos)
{
    return (struct duet__proposal){drafts, q_rows, p_rows, k, seed, pos};
}

static duet_status verify(const struct duet__accept_params *params, const struct duet__proposal *pr,
                          uint32_t vocab, uint32_t *n)
{
    for (uint32_t i = 0; i <= KMAX; i++)
        tokens[i] = 12345; /* must be overwritten up to index k */
    for (uint32_t v = 0; v < VMAX; v++)
        scratch[v] = NAN; /* must not matter */
    err[0] = '\0';
    return duet__verify(params, pr, vocab, scratch, tokens, n, err, sizeof(err));
}

/* tokens[0..k] hold the n accepted drafts, then `next`, then -1. */
static void expect_output(uint32_t k, uint32_t n, uint32_t expect_n, int32_t next)
{
    EXPECT(n == expect_n, "k %u: %u accepted, expected %u", k, n, expect_n);
    for (uint32_t i = 0; i < n; i++)
        EXPECT(tokens[i] == drafts[i], "k %u: token %u is %d, draft %d", k, i, tokens[i],
               drafts[i]);
    EXPECT(tokens[n] == next, "k %u: token %u is %d, expected %d", k, n, tokens[n], next);
    for (uint32_t i = n + 1; i <= k; i++)
        EXPECT(tokens[i] == -1, "k %u: token %u after the emitted ones is %d", k, i, tokens[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Output format and shapes                                                                     */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_forced_patterns_keep_the_leading_accepts_then_one_token_then_minus_one)
{
    enum { V = 40 };

    rng_state = 1;
    for (uint32_t k = 1; k <= 5; k++) {
        for (uint32_t mask = 0; mask < 1u << k; mask++) { /* bit j: x_{j+1} certainly accepted */
            struct duet__proposal pr =
                proposal(k, duet_test_rng_next(&rng_state), duet_test_rng_next(&rng_state) >> 20);
            uint32_t lead = 0, n;
            int32_t reject_to[KMAX], bonus = (int32_t)rng_below(V);

            while (lead < k && (mask >> lead & 1))
                lead++;
            for (uint32_t j = 0; j < k; j++) {
                random_row(q_rows + j * V, V, 0.0);
                drafts[j] = worker_sample(q_rows + j * V, V, pr.seed, pr.position + j);
                reject_to[j] = (drafts[j] + 1 + (int32_t)rng_below(V - 1)) % V;
                if (mask >> j & 1)
                    memcpy(p_rows + j * V, q_rows + j * V, sizeof(float) * V);
                else
                    one_hot(p_rows + j * V, V, reject_to[j]);
            }
            one_hot(p_rows + k * V, V, bonus);
            ck_assert_int_eq(verify(&REJECTION, &pr, V, &n), DUET_STATUS_OK);
            expect_output(k, n, lead, lead < k ? reject_to[lead] : bonus);
        }
    }
}
END_TEST

/* Every emitted token lies in its target row's support, whatever the method. */
static void check_well_formed(const struct duet__accept_params *params, uint32_t k, uint32_t vocab)
{
    struct duet__proposal pr =
        proposal(k, duet_test_rng_next(&rng_state), duet_test_rng_next(&rng_state) >> 16);
    uint32_t n;

    for (uint32_t j = 0; j <= k; j++) {
        random_row(p_rows + j * vocab, vocab, rng_unit() * 0.9);
        if (j == k)
            break;
        random_row(q_rows + j * vocab, vocab, rng_unit() * 0.9);
        drafts[j] = worker_sample(q_rows + j * vocab, vocab, pr.seed, pr.position + j);
    }
    ck_assert_int_eq(verify(params, &pr, vocab, &n), DUET_STATUS_OK);
    EXPECT(n <= k, "%u accepted of %u", n, k);
    /* synthetic acceptance keeps drafts whatever the target says: only its last token is the
     * target's */
    for (uint32_t i = params->method == DUET__ACCEPT_SYNTHETIC ? n : 0; i <= n; i++)
        EXPECT(tokens[i] >= 0 && (uint32_t)tokens[i] < vocab && p_rows[i * vocab + tokens[i]] > 0,
               "V %u k %u: token %u = %d is not in its target row's support", vocab, k, i,
               tokens[i]);
    expect_output(k, n, n, tokens[n]);
}

START_TEST(test_any_shape_gives_a_well_formed_output_with_every_method)
{
    static const uint32_t vocabs[] = {1, 2, 3, 5, 17, 100, 1000};

    rng_state = 2;
    for (uint32_t vi = 0; vi < sizeof(vocabs) / sizeof(vocabs[0]); vi++)
        for (uint32_t k = 1; k <= KMAX; k++)
            for (int rep = 0; rep < 20; rep++) {
                check_well_formed(&REJECTION, k, vocabs[vi]);
                check_well_formed(&TYPICAL, k, vocabs[vi]);
                check_well_formed(&GREEDY, k, vocabs[vi]);
                check_well_formed(&SYNTHETIC, k, vocabs[vi]);
            }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Determinism and refusals                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* A proposal of k = 4 over 50 tokens whose outcome depends on the draws. */
static void mixed_rows(void)
{
    enum { V = 50, K = 4 };

    rng_state = 3;
    for (uint32_t j = 0; j <= K; j++) {
        random_row(p_rows + j * V, V, 0.3);
        if (j < K) {
            random_row(q_rows + j * V, V, 0.3);
            drafts[j] = (int32_t)rng_below(V);
            q_rows[j * V + drafts[j]] += 0.2f;
            p_rows[j * V + drafts[j]] += 0.1f;
        }
    }
}

START_TEST(test_same_seed_and_position_give_the_same_output_and_others_differ)
{
    enum { V = 50, K = 4, N = 200 };
    int32_t first[K + 1];
    uint32_t n, n2, distinct_seed = 0, distinct_pos = 0;
    uint64_t seen_seed[N], seen_pos[N];

    mixed_rows();
    for (uint32_t i = 0; i < N; i++) {
        struct duet__proposal by_seed = proposal(K, 1000 + i, 77), by_pos = proposal(K, 9, i * 5);
        uint64_t h;

        for (int which = 0; which < 2; which++) {
            const struct duet__proposal *pr = which ? &by_pos : &by_seed;

            ck_assert_int_eq(verify(&REJECTION, pr, V, &n), DUET_STATUS_OK);
            memcpy(first, tokens, sizeof(first));
            ck_assert_int_eq(verify(&REJECTION, pr, V, &n2), DUET_STATUS_OK);
            EXPECT(n == n2 && memcmp(first, tokens, sizeof(first)) == 0,
                   "trial %u: a repeat gave another output", i);
            h = n;
            for (uint32_t j = 0; j <= K; j++)
                h = h * 1000003u + (uint64_t)(tokens[j] + 1);
            (which ? seen_pos : seen_seed)[i] = h;
        }
        distinct_seed += i == 0 || seen_seed[i] != seen_seed[i - 1];
        distinct_pos += i == 0 || seen_pos[i] != seen_pos[i - 1];
    }
    /* outputs change from one seed (position) to the next far more often than not */
    ck_assert_uint_ge(distinct_seed, N / 2);
    ck_assert_uint_ge(distinct_pos, N / 2);
}
END_TEST

static void expect_refusal(const struct duet__accept_params *params,
                           const struct duet__proposal *pr, uint32_t vocab, const char *says)
{
    uint32_t n = 99;

    ck_assert_int_eq(verify(params, pr, vocab, &n), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err, says) != NULL, "message '%s' does not say '%s'", err, says);
    ck_assert_uint_eq(n, 0);
    for (uint32_t i = 0; i <= pr->k; i++)
        ck_assert_int_eq(tokens[i], -1);
}

START_TEST(test_invalid_arguments_are_refused_with_a_message)
{
    enum { V = 50, K = 4 };
    struct duet__proposal pr = proposal(K, 1, 0);
    struct duet__accept_params bad_typical = TYPICAL;
    static const int32_t bad_ids[] = {-1, V, V + 1, INT32_MIN};
    uint32_t n;

    mixed_rows();
    for (uint32_t b = 0; b < sizeof(bad_ids) / sizeof(bad_ids[0]); b++) {
        int32_t keep = drafts[2];

        drafts[2] = bad_ids[b];
        expect_refusal(&REJECTION, &pr, V, "draft token 3");
        expect_refusal(&GREEDY, &pr, V, "outside [0, 50)");
        drafts[2] = keep;
    }
    pr.k = 0;
    expect_refusal(&REJECTION, &pr, V, "k = 0");
    pr = proposal(K, 1, 0);
    expect_refusal(&REJECTION, &pr, 0, "vocab = 0");
    pr.draft_probs = NULL;
    expect_refusal(&REJECTION, &pr, V, "draft_probs is NULL");
    ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK); /* greedy reads no q */
    pr = proposal(K, 1, 0);
    pr.target_probs = NULL;
    expect_refusal(&TYPICAL, &pr, V, "target_probs is NULL");
    pr = proposal(K, 1, 0);
    pr.draft_tokens = NULL;
    expect_refusal(&GREEDY, &pr, V, "draft_tokens is NULL");
    pr = proposal(K, 1, 0);
    ck_assert_int_eq(duet__verify(&REJECTION, &pr, V, NULL, tokens, &n, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "scratch is NULL"));
    bad_typical.method = (enum duet__accept_method)7;
    expect_refusal(&bad_typical, &pr, V, "unknown acceptance method 7");
    bad_typical = TYPICAL;
    bad_typical.typical_alpha = 0.0f;
    expect_refusal(&bad_typical, &pr, V, "must lie in (0, 1]");
    bad_typical = TYPICAL;
    bad_typical.typical_threshold = NAN;
    expect_refusal(&bad_typical, &pr, V, "must lie in (0, 1]");
    /* no message buffer, no output: refused all the same */
    ck_assert_int_eq(duet__verify(&REJECTION, &pr, V, scratch, NULL, &n, NULL, 0),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__verify(NULL, &pr, V, scratch, tokens, &n, NULL, 0),
                     DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_a_target_row_without_mass_is_refused)
{
    enum { V = 10, K = 2 };
    struct duet__proposal pr = proposal(K, 5, 40);
    uint32_t n;

    rng_state = 4;
    for (uint32_t j = 0; j < K; j++) {
        random_row(q_rows + j * V, V, 0.0);
        memcpy(p_rows + j * V, q_rows + j * V, sizeof(float) * V);
        drafts[j] = worker_sample(q_rows + j * V, V, pr.seed, pr.position + j);
    }
    memset(p_rows + K * V, 0, sizeof(float) * V); /* the bonus row */
    expect_refusal(&REJECTION, &pr, V, "target row 3 (position 42) has no positive probability");
    memset(p_rows, 0, sizeof(float) * V); /* x_1 rejects, nothing to draw from */
    expect_refusal(&REJECTION, &pr, V, "target row 1 (position 40)");
    ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK); /* argmax of zeros: token 0 */
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Exactness                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static uint32_t trials(void)
{
    return getenv("DUET_TEST_VALGRIND") ? 100000u : 1000000u;
}

static double total_variation(const float *p, const float *q, uint32_t vocab)
{
    double tv = 0.0;

    for (uint32_t v = 0; v < vocab; v++)
        tv += fabs((double)p[v] - q[v]) / 2.0;
    return tv;
}

/* counts[vocab] fit row: nothing outside its support, chi-square below the 0.001 critical value
 * for (support - 1) degrees of freedom. */
static void check_fit(const uint32_t *counts, const float *row, uint32_t vocab, const char *what)
{
    uint64_t total = 0;
    double x2 = 0.0;
    uint32_t support = 0;

    for (uint32_t v = 0; v < vocab; v++)
        total += counts[v];
    for (uint32_t v = 0; v < vocab; v++) {
        double e = (double)row[v] * (double)total;

        if (row[v] == 0.0f) {
            ck_assert_msg(counts[v] == 0, "%s: token %u outside the support emitted %u times", what,
                          v, counts[v]);
            continue;
        }
        ck_assert_msg(e >= 20.0, "%s: expected count %.1f of token %u too small", what, e, v);
        x2 += (counts[v] - e) * (counts[v] - e) / e;
        support++;
    }
    ck_assert_uint_ge(support, 2);
    ck_assert_msg(x2 < chi2_crit_001[support - 1],
                  "%s: chi-square %.3f >= %.3f (%u degrees of freedom, %llu samples)", what, x2,
                  chi2_crit_001[support - 1], support - 1, (unsigned long long)total);
}

/* A skewed target row over V tokens with token `hole` at zero, and a draft row half of it and
 * half of flatter noise with token `gap` (inside the target's support) at zero: the draft
 * proposes a token the target never emits, and the target has one the draft never proposes. */
static void target_and_draft(float *p, float *q, uint32_t vocab, uint32_t hole, uint32_t gap)
{
    for (uint32_t v = 0; v < vocab; v++)
        p[v] = v == hole ? 0.0f : (float)(0.02 + pow(rng_unit(), 3.0));
    normalise(p, vocab);
    for (uint32_t v = 0; v < vocab; v++)
        q[v] = (float)(0.5 * p[v] + 0.5 * (0.2 + rng_unit()) / vocab);
    q[gap] = 0.0f;
    normalise(q, vocab);
    ck_assert_double_ge(total_variation(p, q, vocab), 0.15);
}

START_TEST(test_the_first_emitted_token_is_distributed_as_the_target)
{
    enum { V = 12 };
    uint32_t counts[V] = {0}, n, accepted = 0, N = trials();

    rng_state = 5;
    target_and_draft(p_rows, q_rows, V, 0, 7);
    random_row(p_rows + V, V, 0.0); /* the bonus row */
    for (uint32_t i = 0; i < N; i++) {
        struct duet__proposal pr = proposal(1, 0xC0FFEE, 1000 + (uint64_t)i);

        drafts[0] = worker_sample(q_rows, V, pr.seed, pr.position);
        EXPECT(duet__verify(&REJECTION, &pr, V, scratch, tokens, &n, err, sizeof(err)) ==
                   DUET_STATUS_OK,
               "trial %u: %s", i, err);
        counts[tokens[0]]++;
        accepted += n;
    }
    check_fit(counts, p_rows, V, "k = 1, first token");
    /* the expected acceptance rate is sum(min(p, q)) = 1 - TV(p, q) */
    ck_assert_double_lt(fabs((double)accepted / N - (1.0 - total_variation(p_rows, q_rows, V))),
                        5.0 / sqrt((double)N));
}
END_TEST

/*
 * k = 3 with rows that depend on the context: the rows at position j + 1 (j >= 1) are chosen by
 * the parity c of x_j, as a language model's next-token distribution depends on the tokens
 * before it. The draft proposes x_1 ~ Q[0][0], x_2 ~ Q[1][c(x_1)], x_3 ~ Q[2][c(x_2)]; the target
 * rows are P[0][0], P[1][c(x_1)], P[2][c(x_2)], and the bonus row P[3][c(x_3)].
 *
 * Claim tested: the token emitted at position j + 1, given that x_1..x_j were accepted and x_j
 * has parity c, is distributed as P[j][c]. It holds because the decision at position j + 1 uses
 * only the draws at P_{j+1} (the draft's SAMPLE, ACCEPT, RESAMPLE; for the bonus, SAMPLE), which
 * are independent of the event conditioned on, which depends on the draws at P_1..P_j only; and
 * the rows are fixed by c. The conditioning is what a client sees: the second token it receives
 * from a step exists only when the first was an accepted draft. A verifier that correlated the
 * draws of neighbouring positions, or emitted from p instead of the residual, fails here.
 * Seven comparisons: the first token, then tokens 2, 3 and the bonus for each parity.
 */
START_TEST(test_later_tokens_given_accepted_drafts_are_distributed_as_the_target)
{
    enum { V = 12, K = 3 };
    static float P[K + 1][2][V], Q[K][2][V];
    static uint32_t counts[K + 1][2][V];
    uint32_t n, N = trials();
    char what[64];

    rng_state = 6;
    memset(counts, 0, sizeof(counts));
    for (uint32_t j = 0; j <= K; j++)
        for (uint32_t c = 0; c < 2; c++)
            if (j < K)
                target_and_draft(P[j][c], Q[j][c], V, (j + 3 * c) % V, (j + 3 * c + 5) % V);
            else
                random_row(P[j][c], V, 0.2);
    for (uint32_t i = 0; i < N; i++) {
        struct duet__proposal pr = proposal(K, 0x5EED0000ull + i, 300);
        uint32_t c = 0;

        for (uint32_t j = 0; j <= K; j++) {
            memcpy(p_rows + j * V, P[j][c], sizeof(float) * V);
            if (j == K)
                break;
            memcpy(q_rows + j * V, Q[j][c], sizeof(float) * V);
            drafts[j] = worker_sample(Q[j][c], V, pr.seed, pr.position + j);
            c = (uint32_t)drafts[j] & 1;
        }
        EXPECT(duet__verify(&REJECTION, &pr, V, scratch, tokens, &n, err, sizeof(err)) ==
                   DUET_STATUS_OK,
               "trial %u: %s", i, err);
        counts[0][0][tokens[0]]++;
        for (uint32_t j = 1; j <= n; j++)
            counts[j][drafts[j - 1] & 1][tokens[j]]++;
    }
    check_fit(counts[0][0], P[0][0], V, "token 1");
    for (uint32_t j = 1; j <= K; j++)
        for (uint32_t c = 0; c < 2; c++) {
            snprintf(what, sizeof(what), "token %u after accepted drafts, parity %u", j + 1, c);
            check_fit(counts[j][c], P[j][c], V, what);
        }
}
END_TEST

START_TEST(test_a_draft_equal_to_the_target_emits_what_the_target_alone_samples)
{
    enum { V = 300 };
    uint32_t n;

    rng_state = 7;
    for (uint32_t rep = 0; rep < 200; rep++) {
        uint32_t k = 1 + rng_below(KMAX);
        struct duet__proposal pr = proposal(k, duet_test_rng_next(&rng_state), rng_below(100000));

        for (uint32_t j = 0; j <= k; j++) {
            random_row(p_rows + j * V, V, rng_unit());
            if (j == k)
                break;
            memcpy(q_rows + j * V, p_rows + j * V, sizeof(float) * V);
            drafts[j] = worker_sample(q_rows + j * V, V, pr.seed, pr.position + j);
            /* the target worker samples the same token at that row */
            ck_assert_int_eq(drafts[j], worker_sample(p_rows + j * V, V, pr.seed, pr.position + j));
        }
        ck_assert_int_eq(verify(&REJECTION, &pr, V, &n), DUET_STATUS_OK);
        /* everything accepted, and the bonus is the target worker's own sample */
        expect_output(k, n, k, worker_sample(p_rows + k * V, V, pr.seed, pr.position + k));
    }
}
END_TEST

START_TEST(test_a_draft_token_its_row_gives_no_mass_is_rejected)
{
    enum { V = 20 };
    uint32_t n;

    rng_state = 8;
    random_row(p_rows, V, 0.0);
    random_row(p_rows + V, V, 0.0);
    random_row(q_rows, V, 0.0);
    drafts[0] = 4;
    for (uint32_t i = 0; i < 500; i++) {
        struct duet__proposal pr = proposal(1, i, 0);

        q_rows[4] = i % 2 ? 0.0f : NAN; /* p(x)/q(x) would be infinite or NaN */
        ck_assert_int_eq(verify(&REJECTION, &pr, V, &n), DUET_STATUS_OK);
        EXPECT(n == 0 && tokens[0] >= 0 && tokens[1] == -1, "trial %u: accepted", i);
    }
}
END_TEST

START_TEST(test_an_empty_residual_falls_back_to_the_target_row)
{
    enum { V = 30 };
    uint32_t n, rejected = 0;

    rng_state = 9;
    random_row(q_rows, V, 0.5);
    random_row(p_rows + V, V, 0.0);
    for (uint32_t v = 0; v < V; v++)
        p_rows[v] = 0.5f * q_rows[v]; /* p <= q everywhere, p(x)/q(x) = 1/2 */
    for (uint32_t i = 0; i < 400; i++) {
        struct duet__proposal pr = proposal(1, 77, i);

        drafts[0] = worker_sample(q_rows, V, pr.seed, pr.position);
        ck_assert_int_eq(verify(&REJECTION, &pr, V, &n), DUET_STATUS_OK);
        if (n == 1)
            continue;
        rejected++;
        EXPECT(tokens[0] ==
                   duet__sample_from_probs(p_rows, V, duet__rng_uniform(77, i, DUET_DRAW_RESAMPLE)),
               "trial %u: %d is not the draw from p", i, tokens[0]);
    }
    ck_assert_uint_gt(rejected, 150);
    ck_assert_uint_lt(rejected, 250);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Greedy                                                                                       */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_greedy_accepts_argmax_matches_and_emits_the_lowest_tied_argmax)
{
    enum { V = 8, K = 3 };
    static const float rows[K + 1][V] = {
        {0.1f, 0.3f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f}, /* argmax 1 */
        {0.0f, 0.1f, 0.1f, 0.3f, 0.1f, 0.3f, 0.1f, 0.0f}, /* tie 3 / 5: argmax 3 */
        {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f}, /* argmax 7 */
        {0.2f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.2f}, /* bonus: tie 0 / 7: argmax 0 */
    };
    struct duet__proposal pr = proposal(K, 1, 0);
    uint32_t n;

    pr.draft_probs = NULL;
    memcpy(p_rows, rows, sizeof(rows));
    memcpy(drafts, (int32_t[]){1, 3, 7}, sizeof(int32_t) * K);
    ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK);
    expect_output(K, n, 3, 0);
    drafts[1] = 5; /* the other of the tied pair */
    ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK);
    expect_output(K, n, 1, 3);
    drafts[0] = 0;
    ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK);
    expect_output(K, n, 0, 1);
}
END_TEST

/* On one-hot rows (what the workers write for greedy requests), rejection sampling, greedy
 * matching on the rows and greedy matching on the ids all give argmax matching. */
START_TEST(test_greedy_rows_ids_and_rejection_on_one_hot_rows_agree)
{
    enum { V = 64 };
    int32_t argmax[KMAX + 1], expect[KMAX + 1], ids_out[KMAX + 1];
    uint32_t n, n_ids;

    rng_state = 10;
    for (uint32_t rep = 0; rep < 2000; rep++) {
        uint32_t k = 1 + rng_below(KMAX), lead = 0;
        struct duet__proposal pr = proposal(k, duet_test_rng_next(&rng_state), rng_below(1000));

        for (uint32_t j = 0; j <= k; j++) {
            argmax[j] = (int32_t)rng_below(V);
            one_hot(p_rows + j * V, V, argmax[j]);
            if (j < k) {
                drafts[j] = rng_below(3) ? argmax[j] : (int32_t)rng_below(V);
                one_hot(q_rows + j * V, V, drafts[j]);
            }
        }
        while (lead < k && drafts[lead] == argmax[lead])
            lead++;
        ck_assert_int_eq(
            duet__verify_greedy_ids(drafts, argmax, k, V, ids_out, &n_ids, err, sizeof(err)),
            DUET_STATUS_OK);
        ck_assert_int_eq(verify(&REJECTION, &pr, V, &n), DUET_STATUS_OK);
        expect_output(k, n, lead, argmax[lead]);
        memcpy(expect, tokens, sizeof(expect));
        ck_assert_int_eq(verify(&GREEDY, &pr, V, &n), DUET_STATUS_OK);
        expect_output(k, n, lead, argmax[lead]);
        ck_assert_uint_eq(n_ids, lead);
        ck_assert_int_eq(memcmp(ids_out, expect, sizeof(int32_t) * (k + 1)), 0);
    }
}
END_TEST

START_TEST(test_greedy_ids_refuse_ids_outside_the_vocabulary)
{
    int32_t d[2] = {1, 2}, t[3] = {1, 2, 3}, out[3];
    uint32_t n = 5;

    ck_assert_int_eq(duet__verify_greedy_ids(d, t, 2, 4, out, &n, err, sizeof(err)),
                     DUET_STATUS_OK);
    ck_assert_uint_eq(n, 2);
    t[2] = 4;
    ck_assert_int_eq(duet__verify_greedy_ids(d, t, 2, 4, out, &n, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "target token 3 is 4, outside [0, 4)"));
    ck_assert_int_eq(out[0], -1);
    d[0] = -1;
    ck_assert_int_eq(duet__verify_greedy_ids(d, t, 2, 4, out, &n, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "draft token 1 is -1"));
    ck_assert_int_eq(duet__verify_greedy_ids(d, t, 0, 4, out, &n, NULL, 0),
                     DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Typical acceptance                                                                           */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_typical_accepts_everything_under_a_uniform_target)
{
    enum { V = 16, K = 5 };
    struct duet__proposal pr = proposal(K, 3, 9);
    uint32_t n;

    pr.draft_probs = NULL; /* typical reads no draft row */
    for (uint32_t j = 0; j <= K; j++)
        for (uint32_t v = 0; v < V; v++)
            p_rows[j * V + v] = 1.0f / V;
    for (int32_t x = 0; x < V; x++) {
        for (uint32_t j = 0; j < K; j++)
            drafts[j] = (x + (int32_t)j) % V;
        ck_assert_int_eq(verify(&TYPICAL, &pr, V, &n), DUET_STATUS_OK);
        expect_output(K, n, K, worker_sample(p_rows + K * V, V, pr.seed, pr.position + K));
    }
}
END_TEST

START_TEST(test_typical_accepts_a_one_hot_target_only_at_its_token_and_emits_it)
{
    enum { V = 16, K = 4 };
    struct duet__proposal pr = proposal(K, 3, 9);
    uint32_t n;

    for (uint32_t j = 0; j <= K; j++)
        one_hot(p_rows + j * V, V, (int32_t)(2 * j + 1));
    for (uint32_t miss = 0; miss <= K; miss++) { /* drafts match the one-hot tokens before miss */
        for (uint32_t j = 0; j < K; j++)
            drafts[j] = (int32_t)(2 * j + 1) + (j == miss);
        ck_assert_int_eq(verify(&TYPICAL, &pr, V, &n), DUET_STATUS_OK);
        expect_output(K, n, miss, (int32_t)(2 * miss + 1));
    }
}
END_TEST

/* p = [.5 .3 .1 .05 .05 0 0 0]: H = 1.2377 nats, alpha e^-H = 0.0870 with alpha 0.3, so the
 * default bound is min(0.09, 0.0870) = 0.0870. */
START_TEST(test_typical_threshold_and_alpha_move_the_bound)
{
    enum { V = 8, K = 1 };
    static const float row[V] = {0.5f, 0.3f, 0.1f, 0.05f, 0.05f, 0.0f, 0.0f, 0.0f};
    static const struct {
        float threshold, alpha;
        int32_t draft;
        uint32_t accepted;
    } cases[] = {
        {0.09f, 0.3f, 2, 1}, {0.09f, 0.3f, 3, 0}, /* bound 0.0870 */
        {0.04f, 0.3f, 3, 1},                      /* bound 0.04 */
        {0.09f, 0.1f, 3, 1},                      /* bound 0.029 */
        {0.2f, 1.0f, 2, 0},  {0.2f, 1.0f, 1, 1},  /* bound 0.2 */
        {1.0f, 1.0f, 2, 0},  {1.0f, 1.0f, 1, 1},  /* bound 0.290 */
        {0.09f, 0.3f, 6, 0},                      /* p(x) = 0 */
    };
    struct duet__proposal pr = proposal(K, 4, 0);
    uint32_t n;

    memcpy(p_rows, row, sizeof(row));
    one_hot(p_rows + V, V, 6); /* bonus */
    for (uint32_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct duet__accept_params params = {DUET__ACCEPT_TYPICAL, cases[i].threshold,
                                             cases[i].alpha, 0.0};

        drafts[0] = cases[i].draft;
        ck_assert_int_eq(verify(&params, &pr, V, &n), DUET_STATUS_OK);
        ck_assert_msg(n == cases[i].accepted, "case %u: %u accepted", i, n);
        expect_output(K, n, cases[i].accepted, n ? 6 : 0); /* recovered: the argmax, token 0 */
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Synthetic acceptance                                                                         */
/* ------------------------------------------------------------------------------------------ */

/*
 * Rate 0.8, k = 4, 20,000 proposals (about 59,000 accept decisions: 2.95 a proposal) on random
 * rows, each with its own seed and position. Every decision is an independent Bernoulli(0.8), so
 * the accepted share of the decisions made (n accepts, plus the rejection when n < k) lies within
 * 4 standard deviations of 0.8 (sd = sqrt(0.8 · 0.2 / decisions) ≈ 0.00165, so within ±0.0066; a
 * failure by chance has probability 6e-5), and the accepted lengths follow the truncated geometric
 * law P(n = i) = 0.8^i · 0.2 (i < k), P(n = k) = 0.8^k: chi-square with k degrees of freedom below
 * its 0.001 critical value.
 */
START_TEST(test_synthetic_acceptance_accepts_each_proposal_with_its_rate)
{
    enum { V = 20, K = 4, N = 20000 };
    const double rate = SYNTHETIC.synthetic_rate;
    uint64_t lengths[K + 1] = {0}, accepted = 0, decisions = 0;
    double chi2 = 0.0, share, sd;
    uint32_t n;

    rng_state = 11;
    for (uint32_t i = 0; i < N; i++) {
        struct duet__proposal pr = proposal(K, duet_test_rng_next(&rng_state), 1 + 3u * i);

        for (uint32_t j = 0; j <= K; j++) {
            random_row(p_rows + j * V, V, 0.3);
            if (j < K)
                drafts[j] = (int32_t)rng_below(V);
        }
        ck_assert_int_eq(verify(&SYNTHETIC, &pr, V, &n), DUET_STATUS_OK);
        lengths[n]++;
        accepted += n;
        decisions += n + (n < K);
    }
    share = (double)accepted / (double)decisions;
    sd = sqrt(rate * (1.0 - rate) / (double)decisions);
    ck_assert_msg(fabs(share - rate) < 4.0 * sd,
                  "accepted %.5f of %llu decisions; rate %.2f, 4 sd = %.5f", share,
                  (unsigned long long)decisions, rate, 4.0 * sd);
    for (uint32_t i = 0; i <= K; i++) {
        double want = (i < K ? pow(rate, i) * (1.0 - rate) : pow(rate, K)) * N;

        chi2 += ((double)lengths[i] - want) * ((double)lengths[i] - want) / want;
    }
    ck_assert_msg(chi2 < chi2_crit_001[K], "accepted lengths: chi-square %.2f >= %.3f", chi2,
                  chi2_crit_001[K]);
    printf("check_rejection: synthetic 0.8, k 4: accepted %.4f of %llu decisions (4 sd %.4f), "
           "lengths chi-square %.2f\n",
           share, (unsigned long long)decisions, 4.0 * sd, chi2);
}
END_TEST

/* The token after the accepted drafts is the target's own: the draw from p_j that plain decoding
 * makes at P_j (a rejection), or from p_{k+1} (all accepted); the same seed and position give the
 * same output, rates 0 and 1 reject and accept everything. */
START_TEST(test_synthetic_acceptance_continues_with_the_target_own_token)
{
    enum { V = 50, K = 4, N = 2000 };
    struct duet__accept_params params = SYNTHETIC;
    int32_t first[K + 1];
    uint32_t n, n2, rejected = 0;

    mixed_rows();
    for (uint32_t i = 0; i < N; i++) {
        struct duet__proposal pr = proposal(K, 7000 + i, 13 + i);

        ck_assert_int_eq(verify(&SYNTHETIC, &pr, V, &n), DUET_STATUS_OK);
        EXPECT(tokens[n] == worker_sample(p_rows + n * V, V, pr.seed, pr.position + n),
               "trial %u: token %u is %d, not the target's own", i, n, tokens[n]);
        expect_output(K, n, n, tokens[n]);
        rejected += n < K;
        memcpy(first, tokens, sizeof(first));
        ck_assert_int_eq(verify(&SYNTHETIC, &pr, V, &n2), DUET_STATUS_OK);
        EXPECT(n2 == n && memcmp(first, tokens, sizeof(first)) == 0,
               "trial %u: a repeat gave another output", i);
    }
    ck_assert_uint_gt(rejected, N / 4); /* both branches ran: 1 - 0.8^4 = 0.59 reject */
    ck_assert_uint_lt(rejected, N - N / 4);
    for (uint32_t i = 0; i < 200; i++) {
        struct duet__proposal pr = proposal(K, 3 + i, 5 * i);

        params.synthetic_rate = 0.0;
        ck_assert_int_eq(verify(&params, &pr, V, &n), DUET_STATUS_OK);
        expect_output(K, n, 0, worker_sample(p_rows, V, pr.seed, pr.position));
        params.synthetic_rate = 1.0;
        ck_assert_int_eq(verify(&params, &pr, V, &n), DUET_STATUS_OK);
        expect_output(K, n, K, worker_sample(p_rows + K * V, V, pr.seed, pr.position + K));
    }
}
END_TEST

START_TEST(test_synthetic_rates_outside_zero_to_one_are_refused)
{
    enum { V = 50, K = 4 };
    static const double bad[] = {-0.01, 1.01, NAN, INFINITY};
    struct duet__accept_params params = SYNTHETIC;
    struct duet__proposal pr = proposal(K, 1, 0);
    uint32_t n;

    mixed_rows();
    for (uint32_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        params.synthetic_rate = bad[i];
        expect_refusal(&params, &pr, V, "verify (synthetic): rate");
    }
    pr.draft_probs = NULL; /* synthetic reads neither q nor scratch */
    ck_assert_int_eq(duet__verify(&SYNTHETIC, &pr, V, NULL, tokens, &n, err, sizeof(err)),
                     DUET_STATUS_OK);
}
END_TEST

static Suite *rejection_suite(void)
{
    Suite *s = suite_create("rejection");
    const struct duet_test_case cases[] = {
        {"forced patterns",
         test_forced_patterns_keep_the_leading_accepts_then_one_token_then_minus_one},
        {"shapes", test_any_shape_gives_a_well_formed_output_with_every_method},
        {"seeded", test_same_seed_and_position_give_the_same_output_and_others_differ},
        {"invalid", test_invalid_arguments_are_refused_with_a_message},
        {"empty target row", test_a_target_row_without_mass_is_refused},
        {"first token exact", test_the_first_emitted_token_is_distributed_as_the_target},
        {"later tokens exact",
         test_later_tokens_given_accepted_drafts_are_distributed_as_the_target},
        {"draft = target", test_a_draft_equal_to_the_target_emits_what_the_target_alone_samples},
        {"q(x) = 0", test_a_draft_token_its_row_gives_no_mass_is_rejected},
        {"empty residual", test_an_empty_residual_falls_back_to_the_target_row},
        {"greedy", test_greedy_accepts_argmax_matches_and_emits_the_lowest_tied_argmax},
        {"greedy agree", test_greedy_rows_ids_and_rejection_on_one_hot_rows_agree},
        {"greedy ids invalid", test_greedy_ids_refuse_ids_outside_the_vocabulary},
        {"typical uniform", test_typical_accepts_everything_under_a_uniform_target},
        {"typical one-hot", test_typical_accepts_a_one_hot_target_only_at_its_token_and_emits_it},
        {"typical bound", test_typical_threshold_and_alpha_move_the_bound},
        {"synthetic rate", test_synthetic_acceptance_accepts_each_proposal_with_its_rate},
        {"synthetic token", test_synthetic_acceptance_continues_with_the_target_own_token},
        {"synthetic invalid", test_synthetic_rates_outside_zero_to_one_are_refused},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 120);
    return s;
}

int main(void)
{
    return duet_test_run(rejection_suite());
}
