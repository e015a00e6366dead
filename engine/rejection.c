/*
 * rejection.c — verifying a proposal (rejection.h has the contract).
 *
 * Why REJECTION is exact (Leviathan et al. 2023, Chen et al. 2023): with x ~ q and an independent
 * u, P(emit v) = q(v) min(1, p(v)/q(v)) + P(reject) r(v) = min(q, p)(v) + (1 - Σ min(p, q)) r(v),
 * and r = max(0, p - q) / Σ max(0, p - q) = (p - min(p, q)) / (1 - Σ min(p, q)), so the sum is
 * p(v). Each position uses its own draws (seed, P_j, ACCEPT / RESAMPLE), independent of those of
 * other positions and of the draft's own (seed, P_j, SAMPLE), so the argument holds position by
 * position, conditioned on everything emitted before it.
 *
 * Where this differs from vLLM 0.6.3 (§4.9): vLLM floors the residual at the smallest normal
 * float before normalising, which leaves every token a tiny chance; here the residual is exactly
 * max(0, p - q), and a residual with no mass (p <= q everywhere, possible only by rounding or
 * unnormalised rows) falls back to p itself. vLLM accepts a draft whose q(x) = 0 (ratio ∞); such
 * a token cannot have been sampled from q, so here it rejects. The entropy of TYPICAL is the exact
 * -Σ p log p (0 log 0 = 0), without vLLM's log(p + 1e-5) guard.
 */
#include "rejection.h"

#include "../sampling/sampling.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

/* A message into err[err_size] (err may be NULL). */
static void errf(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;

    if (!err || err_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* The lowest id among the largest entries; NaN entries never win; 0 when none is > -inf. */
static int32_t argmax(const float *row, uint32_t vocab)
{
    float best = -INFINITY;
    int32_t id = 0;

    for (uint32_t i = 0; i < vocab; i++) {
        if (row[i] > best) {
            best = row[i];
            id = (int32_t)i;
        }
    }
    return id;
}

static const char *method_name(enum duet__accept_method m)
{
    return m == DUET__ACCEPT_TYPICAL     ? "typical"
           : m == DUET__ACCEPT_GREEDY    ? "greedy"
           : m == DUET__ACCEPT_SYNTHETIC ? "synthetic"
                                         : "rejection";
}

/* Checks what every method reads. Returns false with the message written. */
static bool valid(const struct duet__accept_params *params, const struct duet__proposal *pr,
                  uint32_t vocab, const float *scratch, char *err, size_t err_size)
{
    bool rejection = params->method == DUET__ACCEPT_REJECTION;
    const char *m = method_name(params->method);

    if ((unsigned)params->method > DUET__ACCEPT_SYNTHETIC) {
        errf(err, err_size, "verify: unknown acceptance method %d", (int)params->method);
        return false;
    }
    if (pr->k == 0 || vocab == 0) {
        errf(err, err_size, "verify: k = %u and vocab = %u must both be at least 1", pr->k, vocab);
        return false;
    }
    if (!pr->draft_tokens || !pr->target_probs || (rejection && (!pr->draft_probs || !scratch))) {
        errf(err, err_size, "verify (%s): %s is NULL", m,
             !pr->draft_tokens   ? "draft_tokens"
             : !pr->target_probs ? "target_probs"
             : !pr->draft_probs  ? "draft_probs"
                                 : "scratch");
        return false;
    }
    if (params->method == DUET__ACCEPT_TYPICAL &&
        !(params->typical_threshold > 0.0f && params->typical_threshold <= 1.0f &&
          params->typical_alpha > 0.0f && params->typical_alpha <= 1.0f)) {
        errf(err, err_size,
             "verify (typical): posterior threshold %g and alpha %g must lie in (0, 1]",
             (double)params->typical_threshold, (double)params->typical_alpha);
        return false;
    }
    if (params->method == DUET__ACCEPT_SYNTHETIC &&
        !(params->synthetic_rate >= 0.0 && params->synthetic_rate <= 1.0)) {
        errf(err, err_size, "verify (synthetic): rate %g must lie in [0, 1]",
             params->synthetic_rate);
        return false;
    }
    for (uint32_t j = 0; j < pr->k; j++) {
        if (pr->draft_tokens[j] < 0 || (uint32_t)pr->draft_tokens[j] >= vocab) {
            errf(err, err_size, "verify: draft token %u (position %llu) is %d, outside [0, %u)",
                 j + 1, (unsigned long long)(pr->position + j), pr->draft_tokens[j], vocab);
            return false;
        }
    }
    return true;
}

/* REJECTION at one position: true to accept x; otherwise the token emitted instead (-1 when p
 * has no positive entry) goes to *emit. */
static bool rejection_step(const float *p, const float *q, int32_t x, uint32_t vocab, uint64_t seed,
                           uint64_t pos, float *residual, int32_t *emit)
{
    double u = duet__rng_uniform(seed, pos, DUET_DRAW_ACCEPT), u_r;

    /* u < min(1, p/q) is u < p/q since u < 1; NaN anywhere rejects */
    if (isfinite(q[x]) && q[x] > 0.0f && u < (double)p[x] / (double)q[x])
        return true;
    u_r = duet__rng_uniform(seed, pos, DUET_DRAW_RESAMPLE);
    for (uint32_t v = 0; v < vocab; v++) {
        float d = p[v] - q[v];

        residual[v] = d > 0.0f ? d : 0.0f;
    }
    *emit = duet__sample_from_probs(residual, vocab, u_r);
    if (*emit < 0)
        *emit = duet__sample_from_probs(p, vocab, u_r);
    return false;
}

/* TYPICAL at one position: p(x) > min(threshold, alpha exp(-H(p))). */
static bool typical_accepts(const struct duet__accept_params *params, const float *p, int32_t x,
                            uint32_t vocab)
{
    double h = 0.0;

    for (uint32_t v = 0; v < vocab; v++)
        if (p[v] > 0.0f)
            h -= (double)p[v] * log((double)p[v]);
    return (double)p[x] > fmin(params->typical_threshold, params->typical_alpha * exp(-h));
}

/* SYNTHETIC at one position: true to accept x; otherwise the target's own token goes to *emit
 * (-1 when p has no positive entry). */
static bool synthetic_step(const float *p, uint32_t vocab, double rate, uint64_t seed, uint64_t pos,
                           int32_t *emit)
{
    /* u < rate: never for rate 0, always for rate 1 (u lies in [0, 1)) */
    if (duet__rng_uniform(seed, pos, DUET_DRAW_ACCEPT) < rate)
        return true;
    *emit = duet__sample_from_probs(p, vocab, duet__rng_uniform(seed, pos, DUET_DRAW_SAMPLE));
    return false;
}

static void finish(int32_t *tokens, uint32_t k, uint32_t n, uint32_t *n_accepted)
{
    for (uint32_t i = n + 1; i <= k; i++)
        tokens[i] = -1;
    *n_accepted = n;
}

static duet_status refuse(int32_t *tokens, uint32_t k, uint32_t *n_accepted)
{
    for (uint32_t i = 0; tokens && i <= k; i++)
        tokens[i] = -1;
    if (n_accepted)
        *n_accepted = 0;
    return DUET_STATUS_INVALID_ARGUMENT;
}

duet_status duet__verify(const struct duet__accept_params *params, const struct duet__proposal *pr,
                         uint32_t vocab, float *scratch, int32_t *tokens, uint32_t *n_accepted,
                         char *err, size_t err_size)
{
    uint32_t j, k;
    int32_t t = -1;

    if (!params || !pr || !tokens || !n_accepted) {
        errf(err, err_size, "verify: params, proposal, tokens and n_accepted must not be NULL");
        return refuse(tokens, pr ? pr->k : 0, n_accepted);
    }
    k = pr->k;
    if (!valid(params, pr, vocab, scratch, err, err_size))
        return refuse(tokens, k, n_accepted);
    for (j = 0; j < k; j++) {
        const float *p = pr->target_probs + (size_t)j * vocab;
        int32_t x = pr->draft_tokens[j];
        bool ok;

        if (params->method == DUET__ACCEPT_REJECTION) {
            ok = rejection_step(p, pr->draft_probs + (size_t)j * vocab, x, vocab, pr->seed,
                                pr->position + j, scratch, &t);
        } else if (params->method == DUET__ACCEPT_SYNTHETIC) {
            ok = synthetic_step(p, vocab, params->synthetic_rate, pr->seed, pr->position + j, &t);
        } else {
            ok = params->method == DUET__ACCEPT_GREEDY ? x == argmax(p, vocab)
                                                       : typical_accepts(params, p, x, vocab);
            t = ok ? -1 : argmax(p, vocab);
        }
        if (!ok)
            break;
        tokens[j] = x;
    }
    if (j == k) {
        const float *bonus = pr->target_probs + (size_t)k * vocab;

        t = params->method == DUET__ACCEPT_GREEDY
                ? argmax(bonus, vocab)
                : duet__sample_from_probs(
                      bonus, vocab,
                      duet__rng_uniform(pr->seed, pr->position + k, DUET_DRAW_SAMPLE));
    }
    if (t < 0) {
        errf(err, err_size, "verify: target row %u (position %llu) has no positive probability",
             j + 1, (unsigned long long)(pr->position + j));
        return refuse(tokens, k, n_accepted);
    }
    tokens[j] = t;
    finish(tokens, k, j, n_accepted);
    return DUET_STATUS_OK;
}

duet_status duet__verify_greedy_ids(const int32_t *draft_tokens, const int32_t *target_argmax,
                                    uint32_t k, uint32_t vocab, int32_t *tokens,
                                    uint32_t *n_accepted, char *err, size_t err_size)
{
    uint32_t j;

    if (!draft_tokens || !target_argmax || !tokens || !n_accepted || k == 0 || vocab == 0) {
        errf(err, err_size, "verify (greedy ids): NULL array, k = %u or vocab = %u", k, vocab);
        return refuse(tokens, k, n_accepted);
    }
    for (j = 0; j <= k; j++) {
        bool draft_bad = j < k && (draft_tokens[j] < 0 || (uint32_t)draft_tokens[j] >= vocab);

        if (draft_bad || target_argmax[j] < 0 || (uint32_t)target_argmax[j] >= vocab) {
            errf(err, err_size, "verify (greedy ids): %s token %u is %d, outside [0, %u)",
                 draft_bad ? "draft" : "target", j + 1,
                 draft_bad ? draft_tokens[j] : target_argmax[j], vocab);
            return refuse(tokens, k, n_accepted);
        }
    }
    for (j = 0; j < k && draft_tokens[j] == target_argmax[j]; j++)
        tokens[j] = draft_tokens[j];
    tokens[j] = target_argmax[j];
    finish(tokens, k, j, n_accepted);
    return DUET_STATUS_OK;
}
