/*
 * adapt.c — adaptive k (speculative.adaptive; docs/engine.md, "Adaptive k"): moving averages of
 * the acceptance rate, the draft's cost per proposal and the target's scoring cost at each k, and
 * the k with the most tokens per second that they predict. Pure arithmetic on struct
 * duet__adapt; calls no other engine file.
 */
#include "build_config.h"

#include "engine-int.h"

#include <math.h>

/* Weight of a new measurement in the moving averages. */
#define EMA_W 0.1

void duet__adapt_init(struct duet__adapt *ad, uint32_t k_max, bool on)
{
    *ad = (struct duet__adapt){.on = on, .k_max = k_max, .k_next = k_max, .alpha = -1.0};
}

/* E(k) = 1 + a + ... + a^k: expected tokens a sequence gains from k proposals, each accepted
 * with probability a independently. */
static double expected_tokens(double a, uint32_t k)
{
    return a >= 1.0 - 1e-9 ? (double)k + 1 : (1.0 - pow(a, (double)k + 1)) / (1.0 - a);
}

/* Scoring seconds at k: measured, else interpolated linearly between the nearest measured k on
 * each side, else extrapolated from the nearest one with the slope of the two nearest (never
 * below flat), else flat from the only one. */
static double verify_cost(const struct duet__adapt *ad, uint32_t k)
{
    uint32_t lo = 0, hi = 0, lo2 = 0, hi2 = 0;

    if (ad->verify_at[k] > 0)
        return ad->verify_at[k];
    for (uint32_t j = k - 1; j >= 1 && !lo2; j--)
        if (ad->verify_at[j] > 0)
            *(lo ? &lo2 : &lo) = j;
    for (uint32_t j = k + 1; j <= ad->k_max && !hi2; j++)
        if (ad->verify_at[j] > 0)
            *(hi ? &hi2 : &hi) = j;
    if (lo && hi)
        return ad->verify_at[lo] +
               (ad->verify_at[hi] - ad->verify_at[lo]) * (double)(k - lo) / (double)(hi - lo);
    if (lo && lo2)
        return ad->verify_at[lo] +
               fmax(0.0, (ad->verify_at[lo] - ad->verify_at[lo2]) / (double)(lo - lo2)) *
                   (double)(k - lo);
    if (hi && hi2)
        return fmax(ad->verify_at[hi] * 1e-3,
                    ad->verify_at[hi] -
                        fmax(0.0, (ad->verify_at[hi2] - ad->verify_at[hi]) / (double)(hi2 - hi)) *
                            (double)(hi - k));
    return lo ? ad->verify_at[lo] : ad->verify_at[hi];
}

/* argmax over k in 1..k_max of E(k) / (k draft_tok_s + verify_cost(k)); every 16th choice tries
 * a neighbour of the best instead, so that the costs next to it stay measured. */
static uint32_t choose_k(struct duet__adapt *ad)
{
    uint32_t best = ad->k_max;
    double best_rate = -1.0;

    for (uint32_t k = 1; k <= ad->k_max; k++) {
        double rate = expected_tokens(ad->alpha, k) / (k * ad->draft_tok_s + verify_cost(ad, k));
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    if (++ad->decisions % 16 == 0) {
        uint32_t nb = (ad->decisions / 16) % 2 ? best + 1 : best - 1;
        if (nb >= 1 && nb <= ad->k_max)
            best = nb;
    }
    return best;
}

static double ema(double avg, double x)
{
    return avg <= 0 ? x : avg + EMA_W * (x - avg);
}

void duet__adapt_update(struct duet__adapt *ad, uint32_t n, uint32_t k, uint64_t p, uint64_t a,
                        double draft_s, double verify_s)
{
    if (!ad->on || n == 0 || k == 0 || p == 0)
        return;
    ad->alpha = ad->alpha < 0 ? (double)a / (double)p
                              : ad->alpha + EMA_W * ((double)a / (double)p - ad->alpha);
    ad->draft_tok_s = ema(ad->draft_tok_s, draft_s / ((double)n * k));
    ad->verify_at[k] = ema(ad->verify_at[k], verify_s / n);
    if (ad->verify_at[k] <= 0)
        ad->verify_at[k] = 1e-12; /* a clock too coarse to see it: measured, and cheap */
    ad->k_next = choose_k(ad);
}
