/*
 * The greedy token of a logit row in one vectorised pass (cpu_worker-int.h, duet__cpu_argmax).
 *
 * Sampling's own argmax (sampling/sampling.c) walks the row with a compare and branch per
 * logit, which does not vectorise: 50 µs of a 1.6 ms llama-68m decode step over 32,000 logits,
 * beside a separate pass that checks the row is finite. Here both come from one pass over
 * blocks of ARGMAX_BLOCK logits:
 *
 *   each logit x ─► key = the bits of x + 0.0f (−0 becomes +0) as an int32, ordered like the
 *                   floats (negative ones have their magnitude bits flipped), so that the
 *                   block's max is an integer max reduction, which every compiler vectorises
 *   each block   ─► its max key; the first block whose max beats every earlier block's holds
 *                   the first largest logit; an OR of "exponent all ones" flags a NaN or ±inf
 *   that block   ─► scanned for the first logit equal to the max: the lowest id on ties
 *
 * A row with a non-finite logit is answered false, so its caller can treat it as the engine
 * asks (duet_kit_row_nonfinite); for a finite row the token is exactly sampling's argmax.
 */
#include "build_config.h"

#include "cpu_worker-int.h"

#include <string.h>

#define ARGMAX_BLOCK 512u /* logits per block: 2 KiB, short enough to rescan from L1 */

/* The ordered key of a finite x: int32 order of keys is float order of values, −0 = +0. */
static inline int32_t order_key(float x)
{
    int32_t b;

    x += 0.0f; /* −0 + 0 = +0 in round-to-nearest */
    memcpy(&b, &x, sizeof(b));
    return b ^ ((b >> 31) & 0x7fffffff);
}

/* The max key of n logits, and whether any is non-finite (*bad). */
static int32_t block_max(const float *x, uint32_t n, uint32_t *bad)
{
    int32_t m = INT32_MIN;
    uint32_t nf = 0;

#pragma omp simd reduction(max : m) reduction(| : nf)
    for (uint32_t i = 0; i < n; i++) {
        uint32_t bits;
        int32_t k = order_key(x[i]);

        memcpy(&bits, &x[i], sizeof(bits));
        nf |= (bits & 0x7f800000u) == 0x7f800000u;
        m = k > m ? k : m;
    }
    *bad |= nf;
    return m;
}

DUET_CPU_CLONES bool duet__cpu_argmax(const float *logits, size_t n, uint32_t *token)
{
    int32_t best = INT32_MIN;
    size_t best_block = 0;
    uint32_t bad = 0;

    if (n == 0)
        return false;
    for (size_t b0 = 0; b0 < n; b0 += ARGMAX_BLOCK) {
        uint32_t len = n - b0 < ARGMAX_BLOCK ? (uint32_t)(n - b0) : ARGMAX_BLOCK;
        int32_t m = block_max(logits + b0, len, &bad);

        if (m > best) {
            best = m;
            best_block = b0;
        }
    }
    if (bad)
        return false;
    for (size_t i = best_block;; i++)
        if (order_key(logits[i]) == best) {
            *token = (uint32_t)i;
            return true;
        }
}
