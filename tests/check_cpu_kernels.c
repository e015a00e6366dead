/*
 * CPU worker kernels and GEMMs against plain double-precision references on fresh random inputs
 * (seeded, so a failure reproduces), each with its tolerance stated beside the check:
 *
 *   bf16 conversion   exact: round to nearest, ties to even, NaN kept
 *   norms, SiLU       |got − ref| ≤ 1e-5 × |ref| + 1e-6 (f32 arithmetic, a few roundings)
 *   RoPE              angles ≤ 1e-7 (one rounding of the double cos/sin), rotation ≤ 1e-5
 *   KV cache, copies  exact (bf16: the rounded value)
 *   attention         |got − ref| ≤ 1e-5 (outputs are convex combinations of V in [−1, 1]);
 *                     the reference reads the cache's own values, so bf16 adds no error there
 *   linear f32        |got − ref| ≤ 1e-5 × (Σ|x·w| + |b|)
 *   linear bf16       |got − ref| ≤ 2⁻⁷ × Σ|x·w| + 1e-5 × |b| (x and w each rounded by at most
 *                     2⁻⁹ relative), and per row rms(error) ≤ 1e-2 × rms(ref)
 *   f16 conversion    exact: round to nearest, ties to even, subnormals, inf, NaN
 *   GEMV (gemv.h)     |got − ref| ≤ 1e-5 × (Σ|w·x| + |b|) + 1e-30, ref from the packed weights'
 *                     own dequantised values and the prepared activations' values, for the ISA
 *                     $DUET_TEST_GEMV_ISA names (tests/gemv-<isa>.isa; DUET_TEST_GEMV_LOG=1
 *                     prints the worst ratio seen); a row's bits the same alone and among others;
 *                     quantised weights within s / 2 plus f16 slack, prepared q within sx / 2
 *   widening          exact (every f16 bit pattern); the widened f32 GEMM as GEMV above
 *
 * The suite compiles kernels.c, linear.c and gemv*.c in (cpu_worker/local.mk). Checks inside
 * loops only call Check on failure (it records every passed assertion).
 */
#include "../cpu_worker/cpu_worker-int.h"
#include "../cpu_worker/gemv.h"
#include "../model/model-int.h"

#include "check_util.h"
#include "test_rng.h"

#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* |got − ref| ≤ tol (NaN fails), else abort naming where: fmt and its arguments. */
#define CHECK_CLOSE(got, ref, tol, fmt, ...)                                                       \
    do {                                                                                           \
        double g_ = (got), r_ = (ref), t_ = (tol);                                                 \
        if (!(fabs(g_ - r_) <= t_))                                                                \
            ck_abort_msg("got %.9g, want %.9g (tolerance %.3g) at " fmt, g_, r_, t_, __VA_ARGS__); \
    } while (0)

static char err[512];
static uint64_t rng;

/* ---- random inputs --------------------------------------------------------------------------- */

static uint64_t next_u64(void)
{
    return duet_test_rng_next(&rng);
}

/* Uniform in [-1, 1). */
static float urand(void)
{
    return (float)((double)(next_u64() >> 11) * 0x1p-52 - 1.0);
}

static uint32_t irand(uint32_t n)
{
    return (uint32_t)(next_u64() % n);
}

static float *rand_floats(size_t n, float scale, float offset)
{
    float *a = malloc(n * sizeof(float));

    ck_assert_ptr_nonnull(a);
    for (size_t i = 0; i < n; i++)
        a[i] = urand() * scale + offset;
    return a;
}

static void shuffle(uint32_t *a, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = irand(i), t = a[i - 1];

        a[i - 1] = a[j];
        a[j] = t;
    }
}

static void setup(void)
{
    rng = 20261124;
}

/* ---- bf16 ------------------------------------------------------------------------------------ */

static float bits_f32(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

START_TEST(test_bf16_rounds_to_nearest_even_and_keeps_nan)
{
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000, 0x3f80}, /* 1 */
        {0x3f808000, 0x3f80}, /* tie, even below */
        {0x3f818000, 0x3f82}, /* tie, odd below: up */
        {0x3f808001, 0x3f81}, /* just above the tie */
        {0x3f807fff, 0x3f80}, /* just below */
        {0xbf818000, 0xbf82}, /* negative tie */
        {0x80000000, 0x8000}, /* -0 */
        {0x7f800000, 0x7f80}, /* inf */
        {0x7f7fffff, 0x7f80}, /* the largest float rounds up to inf */
        {0x00000001, 0x0000}, /* denormal rounds down */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_uint_eq(duet__cpu_f32_to_bf16(bits_f32(cases[i].in)), cases[i].out);
    ck_assert(isnan(duet__cpu_bf16_to_f32(duet__cpu_f32_to_bf16(bits_f32(0x7f800001)))));
    ck_assert(isnan(duet__cpu_bf16_to_f32(duet__cpu_f32_to_bf16(bits_f32(0xff810000)))));
}
END_TEST

START_TEST(test_bf16_rows_pick_the_nearest_bf16_of_every_value)
{
    enum { N = 1031 };
    float *in = rand_floats(N, 1000.0f, 0.0f);
    uint16_t out[N];

    duet__cpu_f32_to_bf16_rows(in, out, N);
    for (size_t i = 0; i < N; i++) {
        double x = in[i], r = duet__cpu_bf16_to_f32(out[i]);
        double below = duet__cpu_bf16_to_f32((uint16_t)(out[i] - 1));
        double above = duet__cpu_bf16_to_f32((uint16_t)(out[i] + 1));

        if (out[i] != duet__cpu_f32_to_bf16(in[i]) || fabs(r - x) > fabs(below - x) ||
            fabs(r - x) > fabs(above - x))
            ck_abort_msg("element %zu: %.9g → %.9g", i, x, r);
    }
    free(in);
}
END_TEST

/* ---- norms ----------------------------------------------------------------------------------- */

enum { NORM_ROWS = 43, NORM_DIM = 771, NORM_XS = 800, NORM_YS = 780 };

static void check_rows(const float *got, size_t stride, const double *ref, uint32_t rows,
                       uint32_t dim, const char *what)
{
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t i = 0; i < dim; i++)
            CHECK_CLOSE(got[r * stride + i], ref[(size_t)r * dim + i],
                        1e-5 * fabs(ref[(size_t)r * dim + i]) + 1e-6, "%s row %u, %u", what, r, i);
}

static void rmsnorm_ref(const float *x, size_t stride, const float *w, double eps, double *ref)
{
    for (uint32_t r = 0; r < NORM_ROWS; r++) {
        const float *xr = x + r * stride;
        double ss = 0;

        for (uint32_t i = 0; i < NORM_DIM; i++)
            ss += (double)xr[i] * xr[i];
        for (uint32_t i = 0; i < NORM_DIM; i++)
            ref[(size_t)r * NORM_DIM + i] = xr[i] / sqrt(ss / NORM_DIM + eps) * w[i];
    }
}

START_TEST(test_rmsnorm_matches_the_double_reference_in_and_out_of_place)
{
    float *x = rand_floats((size_t)NORM_ROWS * NORM_XS, 2.0f, 0.0f);
    float *w = rand_floats(NORM_DIM, 1.0f, 0.0f);
    float *y = malloc((size_t)NORM_ROWS * NORM_YS * sizeof(float));
    double *ref = malloc((size_t)NORM_ROWS * NORM_DIM * sizeof(double));

    rmsnorm_ref(x, NORM_XS, w, 1e-5, ref);
    duet__cpu_rmsnorm(x, NORM_XS, w, 1e-5f, y, NORM_YS, NORM_ROWS, NORM_DIM);
    check_rows(y, NORM_YS, ref, NORM_ROWS, NORM_DIM, "rmsnorm");
    duet__cpu_rmsnorm(x, NORM_XS, w, 1e-5f, x, NORM_XS, 3, NORM_DIM);
    check_rows(x, NORM_XS, ref, 3, NORM_DIM, "rmsnorm in place");
    free(x);
    free(w);
    free(y);
    free(ref);
}
END_TEST

static void layernorm_ref(const float *x, size_t stride, const float *w, const float *b, double eps,
                          double *ref)
{
    for (uint32_t r = 0; r < NORM_ROWS; r++) {
        const float *xr = x + r * stride;
        double mean = 0, var = 0;

        for (uint32_t i = 0; i < NORM_DIM; i++)
            mean += xr[i];
        mean /= NORM_DIM;
        for (uint32_t i = 0; i < NORM_DIM; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= NORM_DIM;
        for (uint32_t i = 0; i < NORM_DIM; i++)
            ref[(size_t)r * NORM_DIM + i] = (xr[i] - mean) / sqrt(var + eps) * w[i] + b[i];
    }
}

START_TEST(test_layernorm_matches_the_double_reference_away_from_zero_mean)
{
    /* Mean 3, spread 0.5: the variance must not come from E[x²] − E[x]². */
    float *x = rand_floats((size_t)NORM_ROWS * NORM_XS, 0.5f, 3.0f);
    float *w = rand_floats(NORM_DIM, 1.0f, 0.0f), *b = rand_floats(NORM_DIM, 1.0f, 0.0f);
    float *y = malloc((size_t)NORM_ROWS * NORM_YS * sizeof(float));
    double *ref = malloc((size_t)NORM_ROWS * NORM_DIM * sizeof(double));

    layernorm_ref(x, NORM_XS, w, b, 1e-5, ref);
    duet__cpu_layernorm(x, NORM_XS, w, b, 1e-5f, y, NORM_YS, NORM_ROWS, NORM_DIM);
    check_rows(y, NORM_YS, ref, NORM_ROWS, NORM_DIM, "layernorm");
    duet__cpu_layernorm(x, NORM_XS, w, b, 1e-5f, x, NORM_XS, 3, NORM_DIM);
    check_rows(x, NORM_XS, ref, 3, NORM_DIM, "layernorm in place");
    free(x);
    free(w);
    free(b);
    free(y);
    free(ref);
}
END_TEST

/* ---- RoPE ------------------------------------------------------------------------------------ */

static double *llama_inv_freq(uint32_t head_dim)
{
    double *f = malloc(head_dim / 2 * sizeof(double));

    for (uint32_t i = 0; i < head_dim / 2; i++)
        f[i] = pow(10000.0, -2.0 * i / head_dim);
    return f;
}

START_TEST(test_rope_angles_are_cos_and_sin_of_position_times_frequency)
{
    const uint32_t pos[] = {0, 1, 17, 4095, 100000}, n = 5, d = 64;
    double *inv = llama_inv_freq(d);
    float cs[5 * 64];

    duet__cpu_rope_angles(inv, d, pos, n, cs);
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t i = 0; i < d / 2; i++) {
            double a = (double)pos[r] * inv[i];

            CHECK_CLOSE(cs[r * d + i], cos(a), 1e-7, "cos row %u, %u", r, i);
            CHECK_CLOSE(cs[r * d + d / 2 + i], sin(a), 1e-7, "sin row %u, %u", r, i);
        }
    free(inv);
}
END_TEST

static void check_rope(uint32_t rows, uint32_t heads, uint32_t d)
{
    size_t stride = (size_t)heads * d + 5;
    float *x = rand_floats(rows * stride, 1.0f, 0.0f), *x0 = malloc(rows * stride * sizeof(float));
    float *cs = malloc((size_t)rows * d * sizeof(float));
    uint32_t *pos = malloc(rows * sizeof(uint32_t));
    double *inv = llama_inv_freq(d);

    for (uint32_t r = 0; r < rows; r++)
        pos[r] = irand(5000);
    memcpy(x0, x, rows * stride * sizeof(float));
    duet__cpu_rope_angles(inv, d, pos, rows, cs);
    duet__cpu_rope(x, stride, rows, heads, d, cs);
    for (uint32_t r = 0; r < rows; r++) {
        for (uint32_t h = 0; h < heads; h++)
            for (uint32_t i = 0; i < d / 2; i++) {
                size_t lo = r * stride + (size_t)h * d + i, hi = lo + d / 2;
                double a = (double)pos[r] * inv[i], c = cos(a), s = sin(a);

                /* q·cos + rotate_half(q)·sin, rotate_half(q) = [−q_hi, q_lo] */
                CHECK_CLOSE(x[lo], x0[lo] * c - x0[hi] * s, 1e-5, "row %u head %u lo %u", r, h, i);
                CHECK_CLOSE(x[hi], x0[hi] * c + x0[lo] * s, 1e-5, "row %u head %u hi %u", r, h, i);
            }
        for (size_t i = (size_t)heads * d; i < stride; i++)
            ck_assert_float_eq(x[r * stride + i], x0[r * stride + i]);
    }
    free(x);
    free(x0);
    free(cs);
    free(pos);
    free(inv);
}

START_TEST(test_rope_rotates_each_element_with_its_partner_half_a_head_away)
{
    check_rope(5, 3, 64);
    check_rope(3, 7, 6);
    check_rope(70, 8, 64); /* enough work for the OpenMP team */
}
END_TEST

/* ---- activations ----------------------------------------------------------------------------- */

START_TEST(test_silu_mul_gates_the_up_half_with_the_silu_of_the_gate_half)
{
    const uint32_t rows = 9, inter = 37;
    const size_t gs = 2 * inter + 3, os = inter + 2;
    float *gu = rand_floats(rows * gs, 8.0f, 0.0f), *out = malloc(rows * os * sizeof(float));

    duet__cpu_silu_mul(gu, gs, out, os, rows, inter);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t i = 0; i < inter; i++) {
            double g = gu[r * gs + i], u = gu[r * gs + inter + i];
            double ref = g / (1.0 + exp(-g)) * u;

            CHECK_CLOSE(out[r * os + i], ref, 1e-5 * fabs(ref) + 1e-6, "row %u, %u", r, i);
        }
    free(gu);
    free(out);
}
END_TEST

START_TEST(test_relu_and_add_work_row_by_row_with_strides)
{
    const uint32_t rows = 6, dim = 29;
    const size_t ys = 31, xs = 33;
    float *y = rand_floats(rows * ys, 1.0f, 0.0f), *x = rand_floats(rows * xs, 1.0f, 0.0f);
    float *y0 = malloc(rows * ys * sizeof(float));

    memcpy(y0, y, rows * ys * sizeof(float));
    duet__cpu_relu(y, ys, rows, dim);
    for (uint32_t r = 0; r < rows; r++)
        for (size_t i = 0; i < ys; i++)
            ck_assert_float_eq(y[r * ys + i],
                               i < dim ? fmaxf(y0[r * ys + i], 0.0f) : y0[r * ys + i]);
    memcpy(y0, y, rows * ys * sizeof(float));
    duet__cpu_add(y, ys, x, xs, rows, dim);
    for (uint32_t r = 0; r < rows; r++)
        for (size_t i = 0; i < ys; i++)
            ck_assert_float_eq(y[r * ys + i],
                               i < dim ? y0[r * ys + i] + x[r * xs + i] : y0[r * ys + i]);
    free(y);
    free(x);
    free(y0);
}
END_TEST

/* ---- the KV cache ---------------------------------------------------------------------------- */

/* A pool of num_blocks blocks of kv's layout, every element NaN (so reads of unwritten slots show
 * up in results). */
static void pool_init(duet_cpu_kv *kv, uint32_t num_blocks)
{
    kv->num_blocks = num_blocks;
    kv->base = aligned_alloc(64, (num_blocks * kv->block_bytes + 63) / 64 * 64);
    ck_assert_ptr_nonnull(kv->base);
    for (size_t i = 0; i < num_blocks * kv->block_elems; i++) {
        if (kv->bf16)
            ((uint16_t *)kv->base)[i] = 0x7fc0;
        else
            ((float *)kv->base)[i] = NAN;
    }
}

/* Element (layer, kind, head, position p, d) of a sequence, read back as f32. */
static double kv_get(const duet_cpu_kv *kv, const uint32_t *table, uint32_t layer, uint32_t kind,
                     uint32_t head, uint32_t p, uint32_t d)
{
    size_t off = table[p / kv->block_size] * kv->block_elems +
                 ((((size_t)layer * 2 + kind) * kv->num_kv_heads + head) * kv->block_size +
                  p % kv->block_size) *
                     kv->head_dim +
                 d;

    return kv->bf16 ? duet__cpu_bf16_to_f32(((const uint16_t *)kv->base)[off])
                    : ((const float *)kv->base)[off];
}

static double stored(const duet_cpu_kv *kv, float x)
{
    return kv->bf16 ? duet__cpu_bf16_to_f32(duet__cpu_f32_to_bf16(x)) : x;
}

static void check_kv_write(bool bf16)
{
    duet_cpu_kv kv;
    const uint32_t layer = 1, kvh = 2, d = 8, n = 6, pos = 3;
    const size_t stride = kvh * d + 3;
    uint32_t table[4] = {0, 1, 2, 3};
    duet_cpu_seg seg = {.block_table = table, .pos = pos, .n = n, .row0 = 2};
    float *k = rand_floats((seg.row0 + n) * stride, 1.0f, 0.0f);
    float *v = rand_floats((seg.row0 + n) * stride, 1.0f, 0.0f);
    size_t written = 0, nans = 0;

    duet__cpu_kv_layout(&kv, 4, 3, kvh, d, bf16);
    ck_assert_uint_eq(kv.block_elems, 3 * 2 * kvh * 4 * d);
    ck_assert_uint_eq(kv.block_bytes, kv.block_elems * (bf16 ? 2 : 4));
    pool_init(&kv, 5);
    shuffle(table, 4);
    duet__cpu_kv_write(&kv, layer, &seg, 1, k, v, stride);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t h = 0; h < kvh; h++)
            for (uint32_t e = 0; e < d; e++) {
                size_t x = (seg.row0 + i) * stride + h * d + e;

                ck_assert(kv_get(&kv, table, layer, 0, h, pos + i, e) == stored(&kv, k[x]));
                ck_assert(kv_get(&kv, table, layer, 1, h, pos + i, e) == stored(&kv, v[x]));
                written += 2;
            }
    for (size_t i = 0; i < kv.num_blocks * kv.block_elems; i++)
        nans += bf16 ? ((uint16_t *)kv.base)[i] == 0x7fc0 : isnan(((float *)kv.base)[i]);
    ck_assert_uint_eq(nans + written, kv.num_blocks * kv.block_elems);
    free(kv.base);
    free(k);
    free(v);
}

START_TEST(test_kv_write_puts_each_row_in_its_block_and_slot_and_nowhere_else)
{
    check_kv_write(false);
    check_kv_write(true);
}
END_TEST

/* The fused RoPE + KV write leaves the same q, k and cache as RoPE on q and k, then the write. */
static void check_rope_kv_write(bool bf16)
{
    enum { HEADS = 4, KVH = 2, D = 8, N = 7, POS = 2 };
    const size_t stride = (HEADS + 2 * KVH) * D + 5;
    uint32_t table[4] = {0, 1, 2, 3}, pos[N + 3];
    duet_cpu_seg segs[2] = {{.block_table = table, .pos = POS, .n = 4, .row0 = 0},
                            {.block_table = table + 2, .pos = 1, .n = 3, .row0 = 4}};
    float *a = rand_floats(N * stride, 1.0f, 0.0f), *b = malloc(N * stride * sizeof(float));
    float *cs = malloc(N * D * sizeof(float));
    double inv_freq[D / 2];
    duet_cpu_kv ka, kb;

    ck_assert(b && cs);
    memcpy(b, a, N * stride * sizeof(float));
    for (uint32_t i = 0; i < D / 2; i++)
        inv_freq[i] = pow(10000.0, -2.0 * i / D);
    for (uint32_t r = 0; r < N; r++)
        pos[r] = r < 4 ? POS + r : 1 + (r - 4);
    duet__cpu_rope_angles(inv_freq, D, pos, N, cs);
    duet__cpu_kv_layout(&ka, 4, 2, KVH, D, bf16);
    kb = ka;
    pool_init(&ka, 4);
    pool_init(&kb, 4);
    duet__cpu_rope(a, stride, N, HEADS, D, cs);
    duet__cpu_rope(a + HEADS * D, stride, N, KVH, D, cs);
    duet__cpu_kv_write(&ka, 1, segs, 2, a + HEADS * D, a + (HEADS + KVH) * D, stride);
    duet__cpu_rope_kv_write(&kb, 1, segs, 2, b, stride, HEADS, cs);
    ck_assert(memcmp(a, b, N * stride * sizeof(float)) == 0);
    ck_assert(memcmp(ka.base, kb.base, 4 * ka.block_bytes) == 0);
    free(ka.base);
    free(kb.base);
    free(a);
    free(b);
    free(cs);
}

START_TEST(test_fused_rope_and_kv_write_equal_rope_then_write)
{
    check_rope_kv_write(false);
    check_rope_kv_write(true);
}
END_TEST

START_TEST(test_kv_copy_block_copies_exactly_one_block_between_pools)
{
    duet_cpu_kv kv, swap;
    float *before;

    duet__cpu_kv_layout(&kv, 16, 2, 3, 24, true);
    duet__cpu_kv_layout(&swap, 16, 2, 3, 24, true);
    pool_init(&kv, 4);
    pool_init(&swap, 3);
    for (size_t i = 0; i < kv.num_blocks * kv.block_elems; i++)
        ((uint16_t *)kv.base)[i] = duet__cpu_f32_to_bf16(urand());
    before = malloc(swap.num_blocks * swap.block_bytes);
    memcpy(before, swap.base, swap.num_blocks * swap.block_bytes);
    duet__cpu_kv_copy_block(&kv, 2, &swap, 1);
    ck_assert_mem_eq((char *)swap.base + swap.block_bytes, (char *)kv.base + 2 * kv.block_bytes,
                     kv.block_bytes);
    ck_assert_mem_eq(swap.base, before, swap.block_bytes);
    ck_assert_mem_eq((char *)swap.base + 2 * swap.block_bytes,
                     (char *)before + 2 * swap.block_bytes, swap.block_bytes);
    duet__cpu_kv_copy_block(&swap, 1, &kv, 0);
    ck_assert_mem_eq(kv.base, (char *)kv.base + 2 * kv.block_bytes, kv.block_bytes);
    free(kv.base);
    free(swap.base);
    free(before);
}
END_TEST

/* ---- attention ------------------------------------------------------------------------------- */

struct attn_case {
    uint32_t block_size, num_heads, num_kv_heads, head_dim;
    bool bf16;
};

/* The batch: a prompt, a chunk of a longer prompt, decode rows (one at position 0, one long),
 * and a speculative check of 5 tokens. */
static const struct {
    uint32_t pos, n;
} attn_segs[] = {{0, 37}, {50, 20}, {100, 1}, {0, 1}, {63, 5}, {700, 1}};
enum { ATTN_SEGS = sizeof(attn_segs) / sizeof(attn_segs[0]), ATTN_LAYERS = 3, ATTN_LAYER = 1 };

struct attn_batch {
    duet_cpu_kv kv;
    duet_cpu_seg segs[ATTN_SEGS];
    uint32_t *tables[ATTN_SEGS];
    uint32_t rows;
    size_t q_stride, out_stride, kv_stride;
    float *q, *out, *k, *v; /* [rows][stride] */
};

/* Allocates shuffled blocks to every sequence, writes each one's history (positions before pos)
 * with one kv_write per sequence and the batch's own rows with one kv_write for all. */
static void attn_batch_init(struct attn_batch *b, const struct attn_case *c)
{
    uint32_t need = 0, used = 0, *ids;

    memset(b, 0, sizeof(*b));
    duet__cpu_kv_layout(&b->kv, c->block_size, ATTN_LAYERS, c->num_kv_heads, c->head_dim, c->bf16);
    for (uint32_t s = 0; s < ATTN_SEGS; s++) {
        need += (attn_segs[s].pos + attn_segs[s].n + c->block_size - 1) / c->block_size;
        b->rows += attn_segs[s].n;
    }
    pool_init(&b->kv, need + 3);
    ids = malloc((need + 3) * sizeof(uint32_t));
    for (uint32_t i = 0; i < need + 3; i++)
        ids[i] = i;
    shuffle(ids, need + 3);
    b->kv_stride = (size_t)c->num_kv_heads * c->head_dim + 2;
    b->q_stride = (size_t)c->num_heads * c->head_dim + 3;
    b->out_stride = (size_t)c->num_heads * c->head_dim + 5;
    b->q = rand_floats(b->rows * b->q_stride, 3.0f, 0.0f);
    b->out = malloc(b->rows * b->out_stride * sizeof(float));
    b->k = rand_floats(b->rows * b->kv_stride, 1.0f, 0.0f);
    b->v = rand_floats(b->rows * b->kv_stride, 1.0f, 0.0f);
    for (uint32_t s = 0, row0 = 0; s < ATTN_SEGS; row0 += attn_segs[s++].n) {
        uint32_t pos = attn_segs[s].pos;
        uint32_t nb = (pos + attn_segs[s].n + c->block_size - 1) / c->block_size;
        float *hk = rand_floats((size_t)pos * b->kv_stride + 1, 1.0f, 0.0f);
        float *hv = rand_floats((size_t)pos * b->kv_stride + 1, 1.0f, 0.0f);
        duet_cpu_seg hist = {.pos = 0, .n = pos, .row0 = 0};

        b->tables[s] = malloc(nb * sizeof(uint32_t));
        memcpy(b->tables[s], ids + used, nb * sizeof(uint32_t));
        used += nb;
        hist.block_table = b->tables[s];
        duet__cpu_kv_write(&b->kv, ATTN_LAYER, &hist, 1, hk, hv, b->kv_stride);
        b->segs[s] = (duet_cpu_seg){
            .block_table = b->tables[s], .pos = pos, .n = attn_segs[s].n, .row0 = row0};
        free(hk);
        free(hv);
    }
    duet__cpu_kv_write(&b->kv, ATTN_LAYER, b->segs, ATTN_SEGS, b->k, b->v, b->kv_stride);
    free(ids);
}

static void attn_batch_fini(struct attn_batch *b)
{
    for (uint32_t s = 0; s < ATTN_SEGS; s++)
        free(b->tables[s]);
    free(b->kv.base);
    free(b->q);
    free(b->out);
    free(b->k);
    free(b->v);
}

/* The K (kind 0) or V (kind 1) of positions 0 .. ctx − 1 of a sequence as the cache holds them,
 * [ctx][kv_head][head_dim]. */
static double *gather_kv(const struct attn_batch *b, const uint32_t *table, uint32_t kind,
                         uint32_t ctx)
{
    uint32_t kvh = b->kv.num_kv_heads, d = b->kv.head_dim;
    double *a = malloc((size_t)ctx * kvh * d * sizeof(double));

    for (uint32_t p = 0; p < ctx; p++)
        for (uint32_t g = 0; g < kvh; g++)
            for (uint32_t e = 0; e < d; e++)
                a[((size_t)p * kvh + g) * d + e] = kv_get(&b->kv, table, ATTN_LAYER, kind, g, p, e);
    return a;
}

/* Query head h at position ctx − 1 in double precision: softmax(scale × q·K) · V. */
static void attn_ref(const struct attn_case *c, const float *q, const double *k, const double *v,
                     uint32_t ctx, uint32_t h, double scale, double *out, double *w)
{
    uint32_t kvh = c->num_kv_heads, d = c->head_dim, g = h / (c->num_heads / kvh);
    double max = -INFINITY, sum = 0;

    for (uint32_t p = 0; p < ctx; p++) {
        const double *kp = k + ((size_t)p * kvh + g) * d;

        w[p] = 0;
        for (uint32_t e = 0; e < d; e++)
            w[p] += q[e] * kp[e];
        w[p] *= scale;
        max = fmax(max, w[p]);
    }
    for (uint32_t p = 0; p < ctx; p++)
        sum += w[p] = exp(w[p] - max);
    for (uint32_t e = 0; e < d; e++)
        out[e] = 0;
    for (uint32_t p = 0; p < ctx; p++) {
        const double *vp = v + ((size_t)p * kvh + g) * d;

        for (uint32_t e = 0; e < d; e++)
            out[e] += w[p] / sum * vp[e];
    }
}

static void check_segment(const struct attn_batch *b, const struct attn_case *c, uint32_t s,
                          double scale, double *ref, double *w)
{
    const duet_cpu_seg *seg = &b->segs[s];
    double *k = gather_kv(b, seg->block_table, 0, seg->pos + seg->n);
    double *v = gather_kv(b, seg->block_table, 1, seg->pos + seg->n);

    for (uint32_t i = 0; i < seg->n; i++)
        for (uint32_t h = 0; h < c->num_heads; h++) {
            size_t col = (size_t)h * c->head_dim;
            const float *got = b->out + (seg->row0 + i) * b->out_stride + col;

            attn_ref(c, b->q + (seg->row0 + i) * b->q_stride + col, k, v, seg->pos + i + 1, h,
                     scale, ref, w);
            for (uint32_t e = 0; e < c->head_dim; e++)
                CHECK_CLOSE(got[e], ref[e], 1e-5,
                            "block size %u %s: segment %u (pos %u) row %u head %u, %u",
                            c->block_size, c->bf16 ? "bf16" : "f32", s, seg->pos, i, h, e);
        }
    free(k);
    free(v);
}

static void check_attention(const struct attn_case *c)
{
    struct attn_batch b;
    double scale = 1.0 / sqrt(c->head_dim), *ref = malloc(c->head_dim * sizeof(double));
    double *w = malloc(1024 * sizeof(double));

    attn_batch_init(&b, c);
    duet__cpu_attention(&b.kv, ATTN_LAYER, b.segs, ATTN_SEGS, c->num_heads, (float)scale, b.q,
                        b.q_stride, b.out, b.out_stride);
    for (uint32_t s = 0; s < ATTN_SEGS; s++)
        check_segment(&b, c, s, scale, ref, w);
    attn_batch_fini(&b);
    free(ref);
    free(w);
}

START_TEST(test_attention_matches_the_reference_with_grouped_query_heads)
{
    static const struct attn_case cases[] = {
        {1, 8, 2, 32, false}, {8, 8, 2, 20, false}, {16, 8, 2, 64, false}, {32, 8, 2, 32, false},
        {16, 8, 2, 64, true}, {8, 8, 2, 20, true},  {1, 8, 2, 16, true},   {32, 8, 2, 32, true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention(&cases[i]);
}
END_TEST

START_TEST(test_attention_matches_the_reference_for_mha_mqa_and_big_groups)
{
    static const struct attn_case cases[] = {
        {16, 4, 4, 16, false},   /* one query head per kv head */
        {8, 3, 1, 40, true},     /* multi-query */
        {16, 20, 1, 256, false}, /* more query heads per kv head than run together */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention(&cases[i]);
}
END_TEST

START_TEST(test_attention_handles_blocks_longer_than_one_tile)
{
    static const struct attn_case cases[] = {{256, 4, 2, 16, false}, {512, 2, 1, 8, true}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention(&cases[i]);
}
END_TEST

/* Blocks of query rows share each K / V row (the lanes path): the same reference with a sliding
 * window (row at position p reads p − window + 1 .. p; 0 = all), group sizes that fill the lanes
 * with heads (8, 24: two head blocks), leave some idle (3: five rows of three heads) or put one
 * head of sixteen rows in them (1). */
static void check_attention_window(const struct attn_case *c, uint32_t window)
{
    struct attn_batch b;
    double scale = 1.0 / sqrt(c->head_dim), *ref = malloc(c->head_dim * sizeof(double));
    double *w = malloc(1024 * sizeof(double));
    uint32_t kvh = c->num_kv_heads, d = c->head_dim;

    attn_batch_init(&b, c);
    b.kv.window = window;
    duet__cpu_attention(&b.kv, ATTN_LAYER, b.segs, ATTN_SEGS, c->num_heads, (float)scale, b.q,
                        b.q_stride, b.out, b.out_stride);
    for (uint32_t s = 0; s < ATTN_SEGS; s++) {
        const duet_cpu_seg *seg = &b.segs[s];
        double *k = gather_kv(&b, seg->block_table, 0, seg->pos + seg->n);
        double *v = gather_kv(&b, seg->block_table, 1, seg->pos + seg->n);

        for (uint32_t i = 0; i < seg->n; i++) {
            uint32_t ctx = seg->pos + i + 1, lo = window && ctx > window ? ctx - window : 0;

            for (uint32_t h = 0; h < c->num_heads; h++) {
                size_t col = (size_t)h * d, skip = (size_t)lo * kvh * d;
                const float *got = b.out + (seg->row0 + i) * b.out_stride + col;

                attn_ref(c, b.q + (seg->row0 + i) * b.q_stride + col, k + skip, v + skip, ctx - lo,
                         h, scale, ref, w);
                for (uint32_t e = 0; e < d; e++)
                    CHECK_CLOSE(got[e], ref[e], 1e-5,
                                "block size %u %s window %u: segment %u (pos %u) row %u head "
                                "%u, %u",
                                c->block_size, c->bf16 ? "bf16" : "f32", window, s, seg->pos, i, h,
                                e);
            }
        }
        free(k);
        free(v);
    }
    attn_batch_fini(&b);
    free(ref);
    free(w);
}

START_TEST(test_attention_blocks_of_query_rows_match_the_reference_with_windows)
{
    static const struct {
        struct attn_case c;
        uint32_t window;
    } cases[] = {
        {{16, 32, 4, 64, true}, 0},   {{16, 8, 2, 32, true}, 12}, {{1, 3, 1, 40, false}, 5},
        {{32, 24, 1, 16, false}, 30}, {{16, 4, 4, 16, true}, 9},  {{64, 2, 2, 128, false}, 600},
        {{16, 16, 1, 256, true}, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention_window(&cases[i].c, cases[i].window);
}
END_TEST

/* ---- linear ---------------------------------------------------------------------------------- */

static duet_cpu_dnn *dnn;

static void dnn_setup(void)
{
    setup();
    ck_assert_msg(duet__cpu_dnn_create(&dnn, err, sizeof(err)) == DUET_STATUS_OK, "%s", err);
}

static void dnn_teardown(void)
{
    duet__cpu_dnn_destroy(dnn);
    dnn = NULL;
}

struct linear_case {
    uint32_t n, k;
    bool bf16, bias;
};

struct linear_data {
    float *w, *b; /* [n][k], [n] or NULL */
    duet_cpu_linear *lin;
};

/* Packs random weights; false (and a note) where oneDNN has no bf16 matmul for this CPU, as
 * under valgrind, whose CPU has no AVX-512: then creation must say so as UNSUPPORTED. */
static bool linear_data_init(struct linear_data *ld, const struct linear_case *c, const char *name)
{
    duet_status st;

    ld->w = rand_floats((size_t)c->n * c->k, 1.0f, 0.0f);
    ld->b = c->bias ? rand_floats(c->n, 1.0f, 0.0f) : NULL;
    st = duet__cpu_linear_create(dnn, name, ld->w, ld->b, c->n, c->k, c->bf16, &ld->lin, err,
                                 sizeof(err));
    if (st == DUET_STATUS_UNSUPPORTED && c->bf16) {
        ck_assert_msg(strstr(err, name) && strstr(err, "bf16"), "%s", err);
        fprintf(stderr, "note: bf16 linear not checked: %s\n", err);
        ck_assert_ptr_null(ld->lin);
        free(ld->w);
        free(ld->b);
        return false;
    }
    ck_assert_msg(st == DUET_STATUS_OK, "%s", err);
    ck_assert_uint_ge(duet__cpu_linear_bytes(ld->lin),
                      (size_t)c->n * c->k * (c->bf16 ? 2 : 4) + (c->bias ? c->n * 4 : 0));
    return true;
}

static void linear_data_fini(struct linear_data *ld)
{
    duet__cpu_linear_destroy(ld->lin);
    free(ld->w);
    free(ld->b);
}

/* Runs m rows with row stride x_stride and checks every output against double precision. */
static void check_linear_run(const struct linear_case *c, const struct linear_data *ld, uint32_t m,
                             size_t x_stride)
{
    float *x = rand_floats(m * x_stride, 1.0f, 0.0f), *y = malloc((size_t)m * c->n * 4);

    ck_assert_msg(duet__cpu_linear_run(dnn, ld->lin, x, x_stride, m, y, err, sizeof(err)) ==
                      DUET_STATUS_OK,
                  "%s", err);
    for (uint32_t r = 0; r < m; r++) {
        double err2 = 0, ref2 = 0;

        for (uint32_t j = 0; j < c->n; j++) {
            double ref = ld->b ? ld->b[j] : 0, mag = 0, bias = ld->b ? fabs(ld->b[j]) : 0, tol;

            for (uint32_t i = 0; i < c->k; i++) {
                double p = (double)x[r * x_stride + i] * ld->w[(size_t)j * c->k + i];

                ref += p;
                mag += fabs(p);
            }
            tol = c->bf16 ? 0x1p-7 * mag + 1e-5 * bias : 1e-5 * (mag + bias);
            CHECK_CLOSE(y[(size_t)r * c->n + j], ref, tol, "%s n %u k %u m %u: row %u, col %u",
                        c->bf16 ? "bf16" : "f32", c->n, c->k, m, r, j);
            err2 += (y[(size_t)r * c->n + j] - ref) * (y[(size_t)r * c->n + j] - ref);
            ref2 += ref * ref;
        }
        ck_assert_msg(sqrt(err2) <= 1e-2 * sqrt(ref2), "rms error %g of row %u, rms %g",
                      sqrt(err2 / c->n), r, sqrt(ref2 / c->n));
    }
    free(x);
    free(y);
}

static void check_linear(const struct linear_case *c)
{
    static const uint32_t ms[] = {1, 3, 17, 130, 1, 300, 3};
    struct linear_data ld;

    if (!linear_data_init(&ld, c, "test.proj"))
        return;
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        check_linear_run(c, &ld, ms[i], c->k + 3);
        check_linear_run(c, &ld, ms[i], c->k);
    }
    linear_data_fini(&ld);
}

START_TEST(test_linear_f32_matches_the_reference_for_any_m)
{
    static const struct linear_case cases[] = {
        {37, 45, false, true}, {130, 67, false, false}, {16, 16, false, true}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_linear(&cases[i]);
}
END_TEST

START_TEST(test_linear_bf16_matches_the_reference_for_any_m)
{
    static const struct linear_case cases[] = {
        {37, 45, true, true}, {130, 67, true, false}, {64, 96, true, true}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_linear(&cases[i]);
}
END_TEST

START_TEST(test_linears_of_one_shape_share_primitives_but_not_weights)
{
    const struct linear_case c = {48, 33, true, true};
    struct linear_data a, b;

    if (!linear_data_init(&a, &c, "a"))
        return;
    ck_assert(linear_data_init(&b, &c, "b"));
    for (int i = 0; i < 2; i++) {
        check_linear_run(&c, &a, 5, c.k);
        check_linear_run(&c, &b, 5, c.k);
        check_linear_run(&c, &b, 1, c.k + 1);
        check_linear_run(&c, &a, 1, c.k + 1);
    }
    linear_data_fini(&a);
    check_linear_run(&c, &b, 40, c.k);
    linear_data_fini(&b);
}
END_TEST

START_TEST(test_linear_create_refuses_an_empty_weight_with_a_message)
{
    float w[4] = {1, 2, 3, 4};
    duet_cpu_linear *lin = (duet_cpu_linear *)w;

    err[0] = '\0';
    ck_assert_int_eq(duet__cpu_linear_create(dnn, "layers.0.q_proj", w, NULL, 0, 4, true, &lin, err,
                                             sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(lin);
    ck_assert_msg(strstr(err, "layers.0.q_proj") && strstr(err, "[0][4]"), "%s", err);
    lin = (duet_cpu_linear *)w;
    err[0] = '\0';
    ck_assert_int_eq(
        duet__cpu_linear_create(dnn, "lm_head", w, NULL, 4, 0, false, &lin, err, sizeof(err)),
        DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(lin);
    ck_assert_msg(strstr(err, "lm_head") && strstr(err, "[4][0]"), "%s", err);
}
END_TEST

START_TEST(test_linear_run_of_no_rows_does_nothing_and_bad_strides_are_refused)
{
    const struct linear_case c = {8, 12, false, false};
    struct linear_data ld;
    float x[24] = {0}, y[16] = {0};

    ck_assert(linear_data_init(&ld, &c, "small"));
    ck_assert_int_eq(duet__cpu_linear_run(dnn, ld.lin, x, 12, 0, y, err, sizeof(err)),
                     DUET_STATUS_OK);
    ck_assert_int_eq(duet__cpu_linear_run(dnn, ld.lin, x, 11, 2, y, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err, "small"), "%s", err);
    linear_data_fini(&ld);
}
END_TEST

/* ---- GEMV on packed weights (gemv.h) --------------------------------------------------------- */

/*
 * These cases run once per ISA, as their own automake tests (tests/gemv-<isa>.isa through
 * tests/gemv_isa.sh, which sets DUET_TEST_GEMV_ISA): an ISA this CPU does not run is a SKIP there,
 * and an ISA's table must have a kernel for every format (no silent fallback to the generic one).
 * The reference is the packed matrix's own dequantised weights
 * (duet__gemv_weight_get) times the prepared activations' values (bf16, or q × sx) in double: what
 * remains is the kernels' f32 arithmetic, |y − ref| ≤ 1e-5 × (Σ_k |w·x| + |bias|) + 1e-30.
 */
enum { GEMV_MAX_M = 33, GEMV_YPAD = 3 };

static const uint32_t gemv_ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 16, 17, 33};
static const struct {
    uint32_t n, k;
    bool bias;
} gemv_shapes[] = {{37, 200, true}, {16, 32, false}, {300, 768, true}, {100, 1000, false}};
static const uint32_t gemv_groups[] = {32, 64, 128};
static double gemv_worst;      /* largest |y − ref| / (Σ|w·x| + |b|) seen, for the log */
static duet_gemv_isa gemv_isa; /* the ISA under test ($DUET_TEST_GEMV_ISA) */

#define fmt_name duet__gemv_fmt_name

/* The ops table under test, checked to have its own kernel for fmt. */
static unsigned gemv_isas(duet_gemv_fmt fmt, const duet_gemv_ops *out[3])
{
    out[0] = duet__gemv_ops(gemv_isa);
    ck_assert_msg(duet__gemv_ops_kernel(out[0], fmt) != NULL, "%s has no %s kernel", out[0]->name,
                  fmt_name(fmt));
    return 1;
}

static void *gemv_act_alloc(const duet_gemv_weight *w, uint32_t m)
{
    void *buf = aligned_alloc(DUET_GEMV_ALIGN, duet__gemv_act_size(w, m));

    ck_assert_ptr_nonnull(buf);
    return buf;
}

/* The value a prepared activation stands for. */
static double act_at(const duet_gemv_act *a, uint32_t r, uint32_t i)
{
    size_t at = (size_t)r * a->k_pad + i;

    if (a->bf16)
        return duet__cpu_bf16_to_f32(a->bf16[at]);
    if (a->f32)
        return a->f32[at];
    return a->q[at] * (double)a->scale[(size_t)r * (a->k_pad / a->group) + i / a->group];
}

static double *dequantised(const duet_gemv_weight *w)
{
    double *wd = malloc((size_t)w->n * w->k * sizeof(double));

    ck_assert_ptr_nonnull(wd);
    for (uint32_t j = 0; j < w->n; j++)
        for (uint32_t i = 0; i < w->k; i++)
            wd[(size_t)j * w->k + i] = duet__gemv_weight_get(w, j, i);
    return wd;
}

/* ref and mag ([m][n]): Σ w·x + b and Σ |w·x| + |b| in double. */
static void gemv_reference(const duet_gemv_weight *w, const double *wd, const duet_gemv_act *a,
                           double *ref, double *mag)
{
    double *xd = malloc((size_t)w->k * sizeof(double));

    ck_assert_ptr_nonnull(xd);
    for (uint32_t r = 0; r < a->m; r++) {
        for (uint32_t i = 0; i < w->k; i++)
            xd[i] = act_at(a, r, i);
        for (uint32_t j = 0; j < w->n; j++) {
            double s = w->bias ? w->bias[j] : 0, t = w->bias ? fabs(w->bias[j]) : 0;

            for (uint32_t i = 0; i < w->k; i++) {
                double p = wd[(size_t)j * w->k + i] * xd[i];

                s += p;
                t += fabs(p);
            }
            ref[(size_t)r * w->n + j] = s;
            mag[(size_t)r * w->n + j] = t;
        }
    }
    free(xd);
}

/* Runs ops on a and checks y against ref, and that no padding column was written. */
static void check_gemv_run(const duet_gemv_ops *ops, const duet_gemv_weight *w,
                           const duet_gemv_act *a, const double *ref, const double *mag)
{
    size_t ys = (size_t)w->n + GEMV_YPAD;
    float *y = malloc(a->m * ys * sizeof(float));

    ck_assert_ptr_nonnull(y);
    for (size_t i = 0; i < a->m * ys; i++)
        y[i] = NAN;
    duet__gemv_run(ops, w, a, y, ys);
    for (uint32_t r = 0; r < a->m; r++) {
        for (uint32_t j = 0; j < w->n; j++) {
            double got = y[r * ys + j], want = ref[(size_t)r * w->n + j];
            double m = mag[(size_t)r * w->n + j];

            CHECK_CLOSE(got, want, 1e-5 * m + 1e-30, "%s %s group %u%s n %u k %u m %u: y[%u][%u]",
                        ops->name, fmt_name(w->fmt), w->group, w->asym ? " asym" : "", w->n, w->k,
                        a->m, r, j);
            if (fabs(got - want) / (m + 1e-30) > gemv_worst)
                gemv_worst = fabs(got - want) / (m + 1e-30);
        }
        for (uint32_t j = w->n; j < ys; j++)
            if (!isnan(y[r * ys + j]))
                ck_abort_msg("%s %s: padding y[%u][%u] written", ops->name, fmt_name(w->fmt), r, j);
    }
    free(y);
}

/* One packed weight against every m and every ISA. */
static void check_gemv_shape(duet_gemv_fmt fmt, uint32_t group, bool asym, uint32_t n, uint32_t k,
                             bool with_bias)
{
    const duet_gemv_ops *isas[3];
    unsigned n_isas = gemv_isas(fmt, isas);
    size_t xs = (size_t)k + 5;
    float *W = rand_floats((size_t)n * k, 1.0f, 0.0f), *bias = rand_floats(n, 1.0f, 0.0f);
    float *x = rand_floats(GEMV_MAX_M * xs, 2.0f, 0.0f);
    double *ref = malloc((size_t)GEMV_MAX_M * n * sizeof(double));
    double *mag = malloc((size_t)GEMV_MAX_M * n * sizeof(double)), *wd;
    duet_gemv_weight w;

    ck_assert(ref && mag);
    ck_assert_msg(duet__gemv_weight_pack(&w, "w", W, with_bias ? bias : NULL, n, k, fmt, group,
                                         asym, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s", err);
    wd = dequantised(&w);
    for (size_t mi = 0; mi < sizeof(gemv_ms) / sizeof(gemv_ms[0]); mi++) {
        void *buf = gemv_act_alloc(&w, gemv_ms[mi]);
        duet_gemv_act a;

        duet__gemv_act_prepare(&w, x, xs, gemv_ms[mi], NULL, 0.0f, buf, &a);
        gemv_reference(&w, wd, &a, ref, mag);
        for (unsigned i = 0; i < n_isas; i++)
            check_gemv_run(isas[i], &w, &a, ref, mag);
        free(buf);
    }
    duet__gemv_weight_free(&w);
    free(wd);
    free(ref);
    free(mag);
    free(x);
    free(bias);
    free(W);
}

static void check_gemv_fmt(duet_gemv_fmt fmt)
{
    bool two_byte = duet__gemv_fmt_16bit(fmt);

    gemv_worst = 0;
    for (size_t gi = 0; gi < sizeof(gemv_groups) / sizeof(gemv_groups[0]); gi++)
        for (int asym = 0; asym < 2; asym++)
            for (size_t s = 0; s < sizeof(gemv_shapes) / sizeof(gemv_shapes[0]); s++) {
                if (two_byte && (gi > 0 || asym))
                    continue;
                check_gemv_shape(fmt, two_byte ? 0 : gemv_groups[gi], asym, gemv_shapes[s].n,
                                 gemv_shapes[s].k, gemv_shapes[s].bias);
            }
    if (getenv("DUET_TEST_GEMV_LOG")) {
        const duet_gemv_ops *isas[3];
        unsigned n = gemv_isas(fmt, isas);

        fprintf(stderr,
                "gemv %s on %u ISA(s), last %s: worst |y - ref| / (sum |w x| + |b|) = %.3g\n",
                fmt_name(fmt), n, isas[n - 1]->name, gemv_worst);
    }
}

START_TEST(test_gemv_bf16_matches_the_reference_for_every_isa_m_and_shape)
{
    check_gemv_fmt(DUET_GEMV_BF16);
}
END_TEST

START_TEST(test_gemv_int8_matches_the_reference_for_every_isa_group_m_and_shape)
{
    check_gemv_fmt(DUET_GEMV_INT8);
}
END_TEST

START_TEST(test_gemv_int4_matches_the_reference_for_every_isa_group_m_and_shape)
{
    check_gemv_fmt(DUET_GEMV_INT4);
}
END_TEST

START_TEST(test_gemv_bf16_weights_with_f32_activations_match_the_reference_for_every_m)
{
    check_gemv_fmt(DUET_GEMV_BF16_F32);
}
END_TEST

START_TEST(test_gemv_f16_weights_with_f32_activations_match_the_reference_for_every_m)
{
    check_gemv_fmt(DUET_GEMV_F16);
}
END_TEST

/* Rows of W with their own scale and offset (a zero row, a constant row, big and small rows):
 * scale 10^(−3 .. 1), offset ±scale × 2 for asymmetric rows. */
static float *gemv_rows_of_many_scales(uint32_t n, uint32_t k)
{
    float *W = malloc((size_t)n * k * sizeof(float));

    ck_assert_ptr_nonnull(W);
    for (uint32_t j = 0; j < n; j++) {
        float scale = powf(10.0f, urand() * 2.0f - 1.0f), offset = urand() * 2.0f * scale;

        for (uint32_t i = 0; i < k; i++)
            W[(size_t)j * k + i] = j == 0 ? 0.0f : j == 1 ? 0.75f : urand() * scale + offset;
    }
    return W;
}

/* |W' − W| ≤ s / 2 for every weight, s recomputed here from the group (gemv.h's formula), with
 * slack for s and m being f16: s rounds by ds = max(2⁻¹¹ s, 2⁻²⁵) (2⁻²⁵ where s is subnormal in
 * f16, group max below about 127 × 2⁻¹⁴), which the top code multiplies (umax × ds, the clamp);
 * m by dm = max(2⁻¹¹ |min|, 2⁻²⁵); and f32 rounding 1e-6 × (|min| + |max|). */
static void check_quantisation(duet_gemv_fmt fmt, uint32_t group, bool asym)
{
    enum { N = 21, K = 300 };
    float *W = gemv_rows_of_many_scales(N, K);
    duet_gemv_weight w;

    ck_assert_msg(duet__gemv_weight_pack(&w, "q", W, NULL, N, K, fmt, group, asym, err,
                                         sizeof(err)) == DUET_STATUS_OK,
                  "%s", err);
    for (uint32_t j = 0; j < N; j++)
        for (uint32_t g0 = 0; g0 < K; g0 += group) {
            uint32_t g1 = g0 + group < K ? g0 + group : K;
            double lo = W[(size_t)j * K + g0], hi = lo, amax = 0, s, tol, umax;

            for (uint32_t i = g0; i < g1; i++) {
                lo = fmin(lo, W[(size_t)j * K + i]);
                hi = fmax(hi, W[(size_t)j * K + i]);
                amax = fmax(amax, fabs(W[(size_t)j * K + i]));
            }
            s = asym ? (hi - lo) / (fmt == DUET_GEMV_INT8 ? 255 : 15)
                     : amax / (fmt == DUET_GEMV_INT8 ? 127 : 7);
            umax = asym ? (fmt == DUET_GEMV_INT8 ? 255 : 15) : (fmt == DUET_GEMV_INT8 ? 127 : 7);
            tol = s / 2 + umax * fmax(0x1p-11 * s, 0x1p-25) +
                  (asym ? fmax(0x1p-11 * fabs(lo), 0x1p-25) : 0) + 1e-6 * (fabs(lo) + fabs(hi));
            for (uint32_t i = g0; i < g1; i++)
                CHECK_CLOSE(duet__gemv_weight_get(&w, j, i), W[(size_t)j * K + i], tol,
                            "%s group %u%s: W[%u][%u]", fmt_name(fmt), group, asym ? " asym" : "",
                            j, i);
        }
    for (uint32_t j = N; j < w.n_pad; j++) /* padded rows are zero */
        for (uint32_t i = 0; i < w.k_pad; i++)
            if (duet__gemv_weight_get(&w, j, i) != 0.0f)
                ck_abort_msg("padded row %u col %u is not zero", j, i);
    for (uint32_t j = 0; j < N && !asym; j++) /* symmetric padded columns exactly zero */
        for (uint32_t i = K; i < w.k_pad; i++)
            if (duet__gemv_weight_get(&w, j, i) != 0.0f)
                ck_abort_msg("row %u padded col %u is not zero", j, i);
    duet__gemv_weight_free(&w);
    free(W);
}

START_TEST(test_gemv_quantised_weights_are_within_half_a_step_of_the_originals)
{
    for (int fmt = DUET_GEMV_INT8; fmt <= DUET_GEMV_INT4; fmt++)
        for (size_t gi = 0; gi < sizeof(gemv_groups) / sizeof(gemv_groups[0]); gi++)
            for (int asym = 0; asym < 2; asym++)
                check_quantisation((duet_gemv_fmt)fmt, gemv_groups[gi], asym);
}
END_TEST

START_TEST(test_gemv_bf16_weights_are_the_nearest_even_bf16_and_padding_is_zero)
{
    enum { N = 19, K = 45 };
    float *W = rand_floats((size_t)N * K, 100.0f, 0.0f);
    duet_gemv_weight w;

    ck_assert(duet__gemv_weight_pack(&w, "b", W, NULL, N, K, DUET_GEMV_BF16, 0, false, err,
                                     sizeof(err)) == DUET_STATUS_OK);
    ck_assert_uint_eq(w.n_pad, 32);
    ck_assert_uint_eq(w.k_pad, 64);
    ck_assert_uint_eq(w.tile_bytes, 64 * 32);
    ck_assert_uint_eq(w.bytes, 2 * 64 * 32);
    ck_assert_uint_eq((uintptr_t)w.data % DUET_GEMV_ALIGN, 0);
    for (uint32_t j = 0; j < w.n_pad; j++)
        for (uint32_t i = 0; i < w.k_pad; i++) {
            float want = j < N && i < K
                             ? duet__cpu_bf16_to_f32(duet__cpu_f32_to_bf16(W[(size_t)j * K + i]))
                             : 0.0f;

            if (duet__gemv_weight_get(&w, j, i) != want)
                ck_abort_msg("W[%u][%u]: %g, want %g", j, i, duet__gemv_weight_get(&w, j, i), want);
        }
    duet__gemv_weight_free(&w);
    free(W);
}
END_TEST

/* The bytes where gemv.h puts row j, column i, read here independently of gemv.c: the weight
 * they stand for must be duet__gemv_weight_get's. */
static double layout_weight(const duet_gemv_weight *w, uint32_t j, uint32_t i)
{
    const uint8_t *tile = (const uint8_t *)w->data + (size_t)(j / 16) * w->tile_bytes;
    const uint8_t *blk;
    uint16_t s16, m16 = 0;
    size_t codes;
    int u;

    if (w->fmt == DUET_GEMV_BF16 || w->fmt == DUET_GEMV_BF16_F32) {
        uint32_t word;

        memcpy(&word, tile + (size_t)(i / 2) * 64 + 4 * (j % 16), 4);
        return duet__cpu_bf16_to_f32((uint16_t)(i % 2 ? word >> 16 : word & 0xffff));
    }
    if (w->fmt == DUET_GEMV_F16) { /* column 2c's 16 halves, then 2c + 1's */
        memcpy(&s16, tile + (size_t)(i / 2) * 64 + (i % 2) * 32 + 2 * (j % 16), 2);
        return duet_f16_to_f32(s16);
    }
    blk = tile + (size_t)(i / w->group) * w->group_bytes;
    i %= w->group;
    codes = w->fmt == DUET_GEMV_INT8 ? w->group * 16 : w->group * 8;
    ck_assert_uint_eq(w->group_bytes, codes + (w->asym ? 64 : 32));
    if (w->fmt == DUET_GEMV_INT8)
        u = blk[(i / 4) * 64 + 4 * (j % 16) + i % 4];
    else
        u = (blk[(i / 8) * 64 + 4 * (j % 16) + i % 4] >> (i % 8 >= 4 ? 4 : 0)) & 0x0f;
    memcpy(&s16, blk + codes + 2 * (j % 16), 2);
    if (w->asym)
        memcpy(&m16, blk + codes + 32 + 2 * (j % 16), 2);
    if (w->asym)
        return (double)duet_f16_to_f32(s16) * u + duet_f16_to_f32(m16);
    return (double)duet_f16_to_f32(s16) * (u - (w->fmt == DUET_GEMV_INT8 ? 128 : 8));
}

START_TEST(test_gemv_packed_bytes_follow_the_layout_of_gemv_h)
{
    enum { N = 40, K = 200 };
    float *W = rand_floats((size_t)N * K, 1.0f, 0.0f);

    for (int fmt = DUET_GEMV_BF16; fmt < DUET_GEMV_NUM_FMTS; fmt++)
        for (size_t gi = 0; gi < 3; gi++)
            for (int asym = 0; asym < 2; asym++) {
                duet_gemv_weight w;

                if (duet__gemv_fmt_16bit((duet_gemv_fmt)fmt) && (gi || asym))
                    continue;
                ck_assert(duet__gemv_weight_pack(&w, "l", W, NULL, N, K, (duet_gemv_fmt)fmt,
                                                 gemv_groups[gi], asym, err,
                                                 sizeof(err)) == DUET_STATUS_OK);
                for (uint32_t j = 0; j < N; j++)
                    for (uint32_t i = 0; i < K; i++)
                        if (layout_weight(&w, j, i) != duet__gemv_weight_get(&w, j, i))
                            ck_abort_msg("%s group %u%s: W[%u][%u] is %g in the bytes, %g got",
                                         fmt_name((duet_gemv_fmt)fmt), w.group, asym ? " asym" : "",
                                         j, i, layout_weight(&w, j, i),
                                         duet__gemv_weight_get(&w, j, i));
                duet__gemv_weight_free(&w);
            }
    free(W);
}
END_TEST

/* Pre-quantised codes (a GGUF file's Q8_0 / Q4_0 blocks) are packed as given: in gemv.h's bytes,
 * every weight is its scale × (code − zero) exactly; bad codes and shapes are refused. */
START_TEST(test_gemv_codes_are_packed_exactly_as_given)
{
    enum { N = 37, K = 96 };
    uint64_t seed = 77;
    duet_gemv_weight w2;
    uint8_t *codes = malloc((size_t)N * K);
    uint16_t *scales = malloc((size_t)N * K / 32 * sizeof(uint16_t));

    ck_assert(codes && scales);
    for (int fmt = DUET_GEMV_INT8; fmt <= DUET_GEMV_INT4; fmt++) {
        int zero = fmt == DUET_GEMV_INT8 ? 128 : 8;
        duet_gemv_weight w;

        for (size_t i = 0; i < (size_t)N * K; i++)
            codes[i] = (uint8_t)(duet_test_rng_next(&seed) % (fmt == DUET_GEMV_INT8 ? 256 : 16));
        for (size_t g = 0; g < (size_t)N * K / 32; g++)
            scales[g] = duet_f32_to_f16((float)(duet_test_rng_unit(&seed) * 0.02 - 0.01));
        ck_assert_msg(duet__gemv_weight_pack_codes(&w, "c", codes, scales, NULL, N, K,
                                                   (duet_gemv_fmt)fmt, 32, err,
                                                   sizeof(err)) == DUET_STATUS_OK,
                      "%s", err);
        for (uint32_t j = 0; j < N; j++)
            for (uint32_t i = 0; i < K; i++) {
                double want = (double)duet_f16_to_f32(scales[(j * K + i) / 32]) *
                              (codes[(size_t)j * K + i] - zero);

                if (layout_weight(&w, j, i) != want || duet__gemv_weight_get(&w, j, i) != want)
                    ck_abort_msg("%s: W[%u][%u] is %g in the bytes, %g got, want %g",
                                 fmt_name((duet_gemv_fmt)fmt), j, i, layout_weight(&w, j, i),
                                 duet__gemv_weight_get(&w, j, i), want);
            }
        duet__gemv_weight_free(&w);
    }
    codes[5] = 16;
    ck_assert_int_eq(duet__gemv_weight_pack_codes(&w2, "c", codes, scales, NULL, N, K,
                                                  DUET_GEMV_INT4, 32, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert(strstr(err, "above 15"));
    ck_assert_int_eq(duet__gemv_weight_pack_codes(&w2, "c", codes, scales, NULL, N, 80,
                                                  DUET_GEMV_INT8, 32, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gemv_weight_pack_codes(&w2, "c", codes, scales, NULL, N, K,
                                                  DUET_GEMV_BF16, 32, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    free(codes);
    free(scales);
}
END_TEST

/* Prepared int8 rows: sx = amax / 127 of the group's values v (0 for a zero group), q in range,
 * |q × sx − v| ≤ sx / 2 × (1 + 1e-6), Σ q right, padding 0; bf16 rows the nearest even bf16. */
static void check_prepared(const duet_gemv_weight *w, const duet_gemv_act *a, const float *v,
                           size_t vs)
{
    for (uint32_t r = 0; r < a->m; r++) {
        if (w->fmt == DUET_GEMV_BF16) {
            for (uint32_t i = 0; i < w->k_pad; i++)
                if (a->bf16[(size_t)r * a->k_pad + i] !=
                    (i < w->k ? duet__cpu_f32_to_bf16(v[r * vs + i]) : 0))
                    ck_abort_msg("bf16 row %u col %u", r, i);
            continue;
        }
        if (duet__gemv_fmt_f32_act(w->fmt)) {
            for (uint32_t i = 0; i < w->k_pad; i++)
                if (a->f32[(size_t)r * a->k_pad + i] != (i < w->k ? v[r * vs + i] : 0.0f))
                    ck_abort_msg("f32 row %u col %u", r, i);
            continue;
        }
        for (uint32_t g = 0; g < w->k_pad / w->group; g++) {
            uint32_t g0 = g * w->group, g1 = g0 + w->group < w->k ? g0 + w->group : w->k;
            size_t gi = (size_t)r * (w->k_pad / w->group) + g;
            float amax = 0, sx = a->scale[gi];
            int32_t sum = 0;

            for (uint32_t i = g0; i < g1; i++)
                amax = fmaxf(amax, fabsf(v[r * vs + i]));
            if (sx != amax / 127.0f)
                ck_abort_msg("row %u group %u: sx %g, want %g", r, g, sx, amax / 127.0f);
            for (uint32_t i = g0; i < g0 + w->group; i++) {
                int q = a->q[(size_t)r * a->k_pad + i];

                if (q < -127 || q > 127 || (i >= g1 && q != 0))
                    ck_abort_msg("row %u col %u: q %d", r, i, q);
                sum += q;
                if (i < g1)
                    CHECK_CLOSE((double)q * sx, v[r * vs + i], sx / 2 * (1 + 1e-6), "row %u col %u",
                                r, i);
            }
            if (a->qsum[gi] != sum)
                ck_abort_msg("row %u group %u: qsum %d, want %d", r, g, a->qsum[gi], sum);
        }
    }
}

START_TEST(test_gemv_prepared_activations_are_rounded_per_group_and_zero_padded)
{
    enum { M = 5, K = 200, XS = 203 };
    float *x = rand_floats((size_t)M * XS, 3.0f, 0.0f);

    for (uint32_t i = 0; i < 128; i++) /* zero groups in row 1 */
        x[XS + i] = 0.0f;
    for (int fmt = DUET_GEMV_BF16; fmt < DUET_GEMV_NUM_FMTS; fmt++)
        for (size_t gi = 0; gi < 3; gi++) {
            float *W = rand_floats((size_t)16 * K, 1.0f, 0.0f);
            duet_gemv_weight w;
            duet_gemv_act a;
            void *buf;

            ck_assert(duet__gemv_weight_pack(&w, "a", W, NULL, 16, K, (duet_gemv_fmt)fmt,
                                             gemv_groups[gi], false, err,
                                             sizeof(err)) == DUET_STATUS_OK);
            buf = gemv_act_alloc(&w, M);
            duet__gemv_act_prepare(&w, x, XS, M, NULL, 0.0f, buf, &a);
            ck_assert_uint_eq(a.m, M);
            ck_assert_uint_eq(a.k_pad, w.k_pad);
            ck_assert_uint_eq(a.group, w.group);
            if (!duet__gemv_fmt_16bit((duet_gemv_fmt)fmt)) {
                ck_assert_uint_eq((uintptr_t)a.scale % DUET_GEMV_ALIGN, 0);
                ck_assert_uint_eq((uintptr_t)a.qsum % DUET_GEMV_ALIGN, 0);
                ck_assert_float_eq(a.scale[w.k_pad / w.group], 0.0f);
            }
            check_prepared(&w, &a, x, XS);
            free(buf);
            duet__gemv_weight_free(&w);
            free(W);
        }
    free(x);
}
END_TEST

/* The fused RMSNorm prepares what an RMS-normalised copy (double) prepares: sx within 1e-6
 * relative, q within one step (a value on a rounding tie may go either way), bf16 within one
 * bf16 step; and the fused values are within sx / 2 + 2e-6 × amax of the normalised copy. */
START_TEST(test_gemv_fused_rmsnorm_prepares_what_a_normalised_copy_prepares)
{
    enum { M = 4, K = 300, XS = 301 };
    const float eps = 1e-5f;
    float *x = rand_floats((size_t)M * XS, 4.0f, 0.5f), *nw = rand_floats(K, 0.5f, 1.0f);
    float *xn = malloc((size_t)M * XS * sizeof(float));

    ck_assert_ptr_nonnull(xn);
    for (uint32_t r = 0; r < M; r++) {
        double ss = 0;

        for (uint32_t i = 0; i < K; i++)
            ss += (double)x[r * XS + i] * x[r * XS + i];
        for (uint32_t i = 0; i < K; i++)
            xn[r * XS + i] = (float)(x[r * XS + i] / sqrt(ss / K + eps) * nw[i]);
    }
    for (int fmt = DUET_GEMV_BF16; fmt <= DUET_GEMV_INT8; fmt++) {
        float *W = rand_floats((size_t)16 * K, 1.0f, 0.0f);
        duet_gemv_weight w;
        duet_gemv_act a, b;
        void *fused, *copy;

        ck_assert(duet__gemv_weight_pack(&w, "n", W, NULL, 16, K, (duet_gemv_fmt)fmt, 64, false,
                                         err, sizeof(err)) == DUET_STATUS_OK);
        fused = gemv_act_alloc(&w, M);
        copy = gemv_act_alloc(&w, M);
        duet__gemv_act_prepare(&w, x, XS, M, nw, eps, fused, &a);
        duet__gemv_act_prepare(&w, xn, XS, M, NULL, 0.0f, copy, &b);
        for (uint32_t r = 0; r < M; r++)
            for (uint32_t i = 0; i < w.k_pad; i++) {
                size_t at = (size_t)r * w.k_pad + i, gi = at / (w.group ? w.group : 1);

                if (fmt == DUET_GEMV_BF16) {
                    if (abs((int)a.bf16[at] - (int)b.bf16[at]) > 1)
                        ck_abort_msg("bf16 row %u col %u", r, i);
                    continue;
                }
                CHECK_CLOSE(a.scale[gi], b.scale[gi], 1e-6 * b.scale[gi], "row %u group %zu", r,
                            gi);
                if (abs(a.q[at] - b.q[at]) > 1)
                    ck_abort_msg("row %u col %u: q %d vs %d", r, i, a.q[at], b.q[at]);
                if (i < K)
                    CHECK_CLOSE(a.q[at] * (double)a.scale[gi], xn[r * XS + i],
                                a.scale[gi] / 2 + 2e-6 * 127 * a.scale[gi], "row %u col %u", r, i);
            }
        free(fused);
        free(copy);
        duet__gemv_weight_free(&w);
        free(W);
    }
    free(xn);
    free(nw);
    free(x);
}
END_TEST

/* y of one run with `threads` OpenMP threads. */
static float *gemv_run_threads(const duet_gemv_ops *ops, const duet_gemv_weight *w,
                               const duet_gemv_act *a, int threads)
{
    float *y = calloc((size_t)a->m * w->n, sizeof(float));

    ck_assert_ptr_nonnull(y);
    omp_set_num_threads(threads);
    duet__gemv_run(ops, w, a, y, w->n);
    return y;
}

/* Threads split tiles, so 1, 2 or 3 threads give the same bits; and a kernel called on pieces
 * [0, t1), [t1, t2), [t2, T) writes what one call on [0, T) writes. */
static void check_gemv_split(const duet_gemv_ops *ops, const duet_gemv_weight *w,
                             const duet_gemv_act *a)
{
    uint32_t tiles = w->n_pad / 16, t1 = tiles / 3, t2 = tiles - 1;
    duet_gemv_kernel kernel = duet__gemv_ops_kernel(ops, w->fmt);
    float *y1 = gemv_run_threads(ops, w, a, 1), *y2 = gemv_run_threads(ops, w, a, 2);
    float *y3 = gemv_run_threads(ops, w, a, 3);
    size_t bytes = (size_t)a->m * w->n * sizeof(float);

    ck_assert_msg(memcmp(y1, y2, bytes) == 0 && memcmp(y1, y3, bytes) == 0, "%s %s threads",
                  ops->name, fmt_name(w->fmt));
    kernel(w, a, y1, w->n, 0, tiles);
    kernel(w, a, y2, w->n, 0, t1);
    kernel(w, a, y2, w->n, t1, t2);
    kernel(w, a, y2, w->n, t2, tiles);
    ck_assert_msg(memcmp(y1, y2, bytes) == 0, "%s %s pieces", ops->name, fmt_name(w->fmt));
    free(y1);
    free(y2);
    free(y3);
}

START_TEST(test_gemv_threads_and_tile_pieces_give_the_same_bits)
{
    enum { N = 150, K = 256, M = 11 };
    float *W = rand_floats((size_t)N * K, 1.0f, 0.0f), *b = rand_floats(N, 1.0f, 0.0f);
    float *x = rand_floats((size_t)M * K, 1.0f, 0.0f);

    for (int fmt = DUET_GEMV_BF16; fmt < DUET_GEMV_NUM_FMTS; fmt++) {
        const duet_gemv_ops *isas[3];
        unsigned n_isas = gemv_isas((duet_gemv_fmt)fmt, isas);
        duet_gemv_weight w;
        duet_gemv_act a;
        void *buf;

        ck_assert(duet__gemv_weight_pack(&w, "t", W, b, N, K, (duet_gemv_fmt)fmt, 64,
                                         fmt == DUET_GEMV_INT4, err,
                                         sizeof(err)) == DUET_STATUS_OK);
        buf = gemv_act_alloc(&w, M);
        duet__gemv_act_prepare(&w, x, K, M, NULL, 0.0f, buf, &a);
        for (unsigned i = 0; i < n_isas; i++)
            check_gemv_split(isas[i], &w, &a);
        free(buf);
        duet__gemv_weight_free(&w);
    }
    free(x);
    free(b);
    free(W);
}
END_TEST

/* Widening is exact: every element of the panel is the packed weight duet__gemv_weight_get reads
 * (padded rows zero), for bf16 and f16 weights spanning f16's subnormals to near its largest
 * value, and for all 65536 halves (inf and NaN included) laid into one f16 matrix. */
START_TEST(test_gemv_widen_gives_the_packed_weights_exactly)
{
    enum { N = 37, K = 70, LD = 75 };
    float *W = malloc((size_t)N * K * sizeof(float)), *out;
    duet_gemv_weight w;

    ck_assert_ptr_nonnull(W);
    for (size_t i = 0; i < (size_t)N * K; i++)
        W[i] = urand() * powf(2.0f, (float)irand(40) - 24.0f);
    for (int fmt = DUET_GEMV_BF16_F32; fmt <= DUET_GEMV_F16; fmt++) {
        ck_assert(duet__gemv_weight_pack(&w, "wd", W, NULL, N, K, (duet_gemv_fmt)fmt, 0, false, err,
                                         sizeof(err)) == DUET_STATUS_OK);
        out = malloc((size_t)w.n_pad * LD * sizeof(float));
        ck_assert_ptr_nonnull(out);
        duet__gemv_weight_widen(&w, 1, w.n_pad / 16, out, LD); /* from the second tile on */
        for (uint32_t j = 16; j < w.n_pad; j++)
            for (uint32_t i = 0; i < K; i++)
                if (memcmp(&out[(size_t)(j - 16) * LD + i],
                           &(float){duet__gemv_weight_get(&w, j, i)}, sizeof(float)) != 0)
                    ck_abort_msg("%s: row %u col %u widened to %g, packed %g",
                                 fmt_name((duet_gemv_fmt)fmt), j, i, out[(size_t)(j - 16) * LD + i],
                                 duet__gemv_weight_get(&w, j, i));
        duet__gemv_weight_free(&w);
        free(out);
    }
    free(W);
    /* every half: 256 rows of 256 columns, the packed bits set directly */
    W = calloc(256 * 256, sizeof(float));
    out = malloc(256 * 256 * sizeof(float));
    ck_assert(W && out);
    ck_assert(duet__gemv_weight_pack(&w, "halves", W, NULL, 256, 256, DUET_GEMV_F16, 0, false, err,
                                     sizeof(err)) == DUET_STATUS_OK);
    for (uint32_t j = 0; j < 256; j++)
        for (uint32_t i = 0; i < 256; i++) {
            uint16_t h = (uint16_t)(j << 8 | i);

            memcpy((uint8_t *)w.data + (size_t)(j / 16) * w.tile_bytes + (size_t)(i / 2) * 64 +
                       (i % 2) * 32 + 2 * (j % 16),
                   &h, 2);
        }
    duet__gemv_weight_widen(&w, 0, 16, out, 256);
    for (uint32_t j = 0; j < 256; j++)
        for (uint32_t i = 0; i < 256; i++) {
            float want = duet_f16_to_f32((uint16_t)(j << 8 | i)), got = out[j * 256 + i];

            if (memcmp(&got, &want, sizeof(float)) != 0 && !(isnan(got) && isnan(want)))
                ck_abort_msg("half 0x%04x widened to %a, want %a", j << 8 | i, got, want);
        }
    duet__gemv_weight_free(&w);
    free(out);
    free(W);
}
END_TEST

/* The f32 GEMM over widened panels: |y − ref| ≤ 1e-5 × (Σ|w·x| + |b|) against the packed weights
 * in double, for panels of one tile, of several, and of the whole matrix, with strides and bias;
 * outputs past n and rows past m untouched. */
START_TEST(test_widened_gemm_matches_the_reference_for_every_panel_size)
{
    enum { N = 100, K = 96, M = 37, XS = 101, YS = 107 };
    static const size_t panels[] = {16 * K, 48 * K + 5, 1u << 20};
    float *W = rand_floats((size_t)N * K, 1.0f, 0.0f), *b = rand_floats(N, 1.0f, 0.0f);
    float *x = rand_floats((size_t)(M + 1) * XS, 2.0f, 0.0f), *panel = malloc((1u << 20) * 4);
    float *y = malloc((size_t)(M + 1) * YS * sizeof(float));

    ck_assert(panel && y);
    for (int fmt = DUET_GEMV_BF16_F32; fmt <= DUET_GEMV_F16; fmt++)
        for (size_t pi = 0; pi < sizeof(panels) / sizeof(panels[0]); pi++) {
            duet_gemv_weight w;

            ck_assert(duet__gemv_weight_pack(&w, "g", W, b, N, K, (duet_gemv_fmt)fmt, 0, false, err,
                                             sizeof(err)) == DUET_STATUS_OK);
            for (size_t i = 0; i < (size_t)(M + 1) * YS; i++)
                y[i] = NAN;
            ck_assert_int_eq(
                duet__cpu_widened_run(&w, x, XS, M, y, YS, panel, panels[pi], err, sizeof(err)),
                DUET_STATUS_OK);
            for (uint32_t r = 0; r < M; r++) {
                for (uint32_t j = 0; j < N; j++) {
                    double ref = b[j], mag = fabs(b[j]);

                    for (uint32_t i = 0; i < K; i++) {
                        double p = (double)duet__gemv_weight_get(&w, j, i) * x[r * XS + i];

                        ref += p;
                        mag += fabs(p);
                    }
                    CHECK_CLOSE(y[r * YS + j], ref, 1e-5 * mag, "%s panel %zu: y[%u][%u]",
                                fmt_name((duet_gemv_fmt)fmt), panels[pi], r, j);
                }
                for (uint32_t j = N; j < YS; j++)
                    ck_assert(isnan(y[r * YS + j]));
            }
            for (uint32_t j = 0; j < YS; j++)
                ck_assert(isnan(y[M * YS + j]));
            duet__gemv_weight_free(&w);
        }
    free(y);
    free(panel);
    free(x);
    free(b);
    free(W);
}
END_TEST

START_TEST(test_widened_gemm_refuses_other_formats_and_small_panels)
{
    float W[16 * 64] = {0}, x[64] = {0}, y[16], panel[16 * 64];
    duet_gemv_weight w;

    ck_assert(duet__gemv_weight_pack(&w, "q", W, NULL, 16, 64, DUET_GEMV_INT8, 32, false, err,
                                     sizeof(err)) == DUET_STATUS_OK);
    ck_assert_int_eq(duet__cpu_widened_run(&w, x, 64, 1, y, 16, panel, 16 * 64, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    duet__gemv_weight_free(&w);
    ck_assert(duet__gemv_weight_pack(&w, "h", W, NULL, 16, 64, DUET_GEMV_F16, 0, false, err,
                                     sizeof(err)) == DUET_STATUS_OK);
    ck_assert_int_eq(
        duet__cpu_widened_run(&w, x, 64, 1, y, 16, panel, 16 * 64 - 1, err, sizeof(err)),
        DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__cpu_widened_run(&w, x, 64, 1, y, 16, panel, 16 * 64, err, sizeof(err)),
                     DUET_STATUS_OK);
    W[3] = 1e6f; /* beyond f16 */
    duet__gemv_weight_free(&w);
    ck_assert_int_eq(duet__gemv_weight_pack(&w, "big", W, NULL, 16, 64, DUET_GEMV_F16, 0, false,
                                            err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "f16 range"));
}
END_TEST

/* A row's outputs are the same bits whether it is run alone (decode) or among m rows (k + 1
 * scoring, a batch): greedy speculative decoding then reproduces the target's own tokens. */
START_TEST(test_gemv_rows_give_the_same_bits_alone_and_among_others)
{
    enum { N = 70, K = 512, MAX_M = 17 };
    float *W = rand_floats((size_t)N * K, 1.0f, 0.0f),
          *x = rand_floats((size_t)MAX_M * K, 1.0f, 0.0f);
    float *y1 = malloc(N * sizeof(float)), *ym = malloc((size_t)MAX_M * N * sizeof(float));

    ck_assert(y1 && ym);
    for (int fmt = DUET_GEMV_BF16; fmt < DUET_GEMV_NUM_FMTS; fmt++)
        for (int asym = 0; asym < 2; asym++) {
            const duet_gemv_ops *isas[3];
            unsigned n_isas = gemv_isas((duet_gemv_fmt)fmt, isas);
            duet_gemv_weight w;
            duet_gemv_act a1, am;
            void *b1, *bm;

            if (asym && duet__gemv_fmt_16bit((duet_gemv_fmt)fmt))
                continue;
            ck_assert(duet__gemv_weight_pack(&w, "r", W, NULL, N, K, (duet_gemv_fmt)fmt, 32, asym,
                                             err, sizeof(err)) == DUET_STATUS_OK);
            b1 = gemv_act_alloc(&w, 1);
            bm = gemv_act_alloc(&w, MAX_M);
            for (unsigned i = 0; i < n_isas; i++)
                for (uint32_t m = 2; m <= MAX_M; m++) {
                    duet__gemv_act_prepare(&w, x, K, m, NULL, 0.0f, bm, &am);
                    duet__gemv_run(isas[i], &w, &am, ym, N);
                    for (uint32_t r = 0; r < m; r++) {
                        duet__gemv_act_prepare(&w, x + (size_t)r * K, K, 1, NULL, 0.0f, b1, &a1);
                        duet__gemv_run(isas[i], &w, &a1, y1, N);
                        if (memcmp(y1, ym + (size_t)r * N, N * sizeof(float)) != 0)
                            ck_abort_msg("%s %s%s: row %u of %u differs from the row alone",
                                         isas[i]->name, fmt_name((duet_gemv_fmt)fmt),
                                         asym ? " asym" : "", r, m);
                    }
                }
            free(b1);
            free(bm);
            duet__gemv_weight_free(&w);
        }
    free(ym);
    free(y1);
    free(x);
    free(W);
}
END_TEST

/* ---- greedy argmax ----------------------------------------------------------------------------
 */

/* The first index of the largest of n finite values, compared as floats (sampling's argmax). */
static uint32_t ref_argmax(const float *x, size_t n)
{
    uint32_t best = 0;

    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (uint32_t)i;
    return best;
}

START_TEST(test_argmax_is_the_first_largest_logit_and_refuses_non_finite_rows)
{
    const size_t lens[] = {1, 2, 511, 512, 513, 1024, 1500, 32000};
    uint64_t seed = 0xa59a3a11u;
    float *x = malloc(32000 * sizeof(float));

    ck_assert_ptr_nonnull(x);
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        size_t n = lens[li];

        for (int trial = 0; trial < 40; trial++) {
            uint32_t got = UINT32_MAX, a = (uint32_t)(duet_test_rng_next(&seed) % n),
                     c = (uint32_t)(duet_test_rng_next(&seed) % n);
            /* trials: spread values, all negative, small integers (many ties), signed zeros */
            int kind = trial % 4;

            for (size_t i = 0; i < n; i++) {
                double u = duet_test_rng_unit(&seed);

                x[i] = kind == 0   ? (float)(40.0 * u - 20.0)
                       : kind == 1 ? (float)(-1e30 * u - 1.0)
                       : kind == 2 ? (float)(int)(6.0 * u) - 3.0f
                                   : (u < 0.5 ? -0.0f : 0.0f) - (u < 0.1 ? 1.0f : 0.0f);
            }
            if (kind == 0) /* a planted tie for the largest */
                x[a] = x[c] = 30.0f;
            ck_assert(duet__cpu_argmax(x, n, &got));
            ck_assert_uint_eq(got, ref_argmax(x, n));
            /* any one non-finite logit refuses the row and leaves the token alone */
            x[a] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
            got = UINT32_MAX;
            ck_assert(!duet__cpu_argmax(x, n, &got));
            ck_assert_uint_eq(got, UINT32_MAX);
        }
    }
    ck_assert(!duet__cpu_argmax(x, 0, &(uint32_t){0}));
    free(x);
}
END_TEST

START_TEST(test_f16_conversion_rounds_to_nearest_even_with_subnormals_inf_and_nan)
{
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000, 0x3c00}, /* 1 */
        {0xc0000000, 0xc000}, /* -2 */
        {0x80000000, 0x8000}, /* -0 */
        {0x3dcccccd, 0x2e66}, /* 0.1 */
        {0x477fe000, 0x7bff}, /* 65504, the largest */
        {0x477fefff, 0x7bff}, /* just below the tie above it */
        {0x477ff000, 0x7c00}, /* 65520: the tie, even is inf */
        {0x7f800000, 0x7c00}, /* inf */
        {0xff800000, 0xfc00}, /* -inf */
        {0x3f801000, 0x3c00}, /* 1 + 2⁻¹¹: tie, even below */
        {0x3f803000, 0x3c02}, /* 1 + 3 × 2⁻¹¹: tie, odd below: up */
        {0x3f801001, 0x3c01}, /* just above the tie */
        {0x33800000, 0x0001}, /* 2⁻²⁴, the smallest subnormal */
        {0x33000000, 0x0000}, /* 2⁻²⁵: tie, even is 0 */
        {0x33000001, 0x0001}, /* just above it */
        {0x33c00000, 0x0002}, /* 3 × 2⁻²⁵: tie between 1 and 2 */
        {0x387fc000, 0x03ff}, /* the largest subnormal */
        {0x387fe000, 0x0400}, /* tie between it and 2⁻¹⁴: even */
        {0x38800000, 0x0400}, /* 2⁻¹⁴ */
        {0x2f000000, 0x0000}, /* 2⁻³³ */
        {0xb3800000, 0x8001}, /* -2⁻²⁴ */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(duet_f32_to_f16(bits_f32(cases[i].in)) == cases[i].out,
                      "0x%08x → 0x%04x, want 0x%04x", cases[i].in,
                      duet_f32_to_f16(bits_f32(cases[i].in)), cases[i].out);
    ck_assert_float_eq(duet_f16_to_f32(0x0001), 0x1p-24f);
    ck_assert_float_eq(duet_f16_to_f32(0x03ff), 1023 * 0x1p-24f);
    ck_assert_float_eq(duet_f16_to_f32(0x7bff), 65504.0f);
    ck_assert_float_eq(duet_f16_to_f32(0xc000), -2.0f);
    ck_assert(isinf(duet_f16_to_f32(0x7c00)) && duet_f16_to_f32(0x7c00) > 0);
    ck_assert(signbit(duet_f16_to_f32(0x8000)));
    ck_assert(isnan(duet_f16_to_f32(0x7e00)) && isnan(duet_f16_to_f32(0xfc01)));
    ck_assert((duet_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (duet_f32_to_f16(NAN) & 0x3ff) != 0);
    ck_assert((duet_f32_to_f16(bits_f32(0x7f800001)) & 0x3ff) != 0);
    /* every f16 but NaN survives the round trip */
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7c00) != 0x7c00 || (h & 0x3ff) == 0)
            if (duet_f32_to_f16(duet_f16_to_f32((uint16_t)h)) != h)
                ck_abort_msg("0x%04x does not survive the round trip", h);
}
END_TEST

START_TEST(test_f16_conversion_picks_the_nearest_half_of_random_values)
{
    for (int i = 0; i < 200000; i++) {
        float f = (float)(urand() * ldexp(1.0, (int)irand(44) - 28));
        uint16_t h = duet_f32_to_f16(f);
        double got = duet_f16_to_f32(h), d = fabs(got - f);
        double below = duet_f16_to_f32((uint16_t)(h - 1));
        double above = (h & 0x7fff) < 0x7bff ? duet_f16_to_f32((uint16_t)(h + 1)) : got;

        if ((h & 0x7fff) == 0x7c00) { /* overflow only past the tie above 65504 */
            if (fabs(f) < 65520.0)
                ck_abort_msg("%.9g overflows", f);
        } else if ((h & 0x7fff) != 0 && (d > fabs(below - f) || d > fabs(above - f))) {
            ck_abort_msg("%.9g → %.9g (0x%04x)", f, got, h);
        }
    }
}
END_TEST

START_TEST(test_gemv_isa_choice_follows_duet_cpu_isa_only_downwards)
{
    duet_gemv_isa best;

    unsetenv("DUET_CPU_ISA");
    best = duet__gemv_isa_best();
    ck_assert(duet__gemv_isa_supported(DUET_GEMV_GENERIC));
    ck_assert(duet__gemv_isa_supported(best));
    for (int isa = DUET_GEMV_GENERIC; isa <= DUET_GEMV_AVX512; isa++) {
        const char *name = duet__gemv_isa_name((duet_gemv_isa)isa);

        ck_assert_str_eq(duet__gemv_ops((duet_gemv_isa)isa)->name, name);
        if (isa > (int)best)
            ck_assert(!duet__gemv_isa_supported((duet_gemv_isa)isa));
        setenv("DUET_CPU_ISA", name, 1);
        ck_assert_int_eq(duet__gemv_isa_best(),
                         duet__gemv_isa_supported((duet_gemv_isa)isa) ? isa : (int)best);
    }
    setenv("DUET_CPU_ISA", "avx1024", 1);
    ck_assert_int_eq(duet__gemv_isa_best(), best);
    setenv("DUET_CPU_ISA", "", 1);
    ck_assert_int_eq(duet__gemv_isa_best(), best);
    unsetenv("DUET_CPU_ISA");
}
END_TEST

START_TEST(test_gemv_pack_refuses_bad_groups_sizes_and_values_with_a_message)
{
    float W[2 * 64] = {0}, bad[64] = {0};
    duet_gemv_weight w;

    for (int i = 0; i < 128; i++)
        W[i] = urand();
    ck_assert_int_eq(duet__gemv_weight_pack(&w, "blk.0.q", W, NULL, 2, 64, DUET_GEMV_INT8, 48,
                                            false, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "blk.0.q"));
    ck_assert_ptr_nonnull(strstr(err, "48"));
    ck_assert_ptr_null(w.data);
    err[0] = '\0';
    ck_assert_int_eq(duet__gemv_weight_pack(&w, "blk.1.k", W, NULL, 0, 64, DUET_GEMV_INT4, 32,
                                            false, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "blk.1.k"));
    ck_assert_int_eq(
        duet__gemv_weight_pack(&w, "z", W, NULL, 2, 0, DUET_GEMV_BF16, 0, false, err, sizeof(err)),
        DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gemv_weight_pack(&w, "f", W, NULL, 2, 64, (duet_gemv_fmt)7, 32, false,
                                            err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    bad[5] = NAN;
    ck_assert_int_eq(duet__gemv_weight_pack(&w, "nan", bad, NULL, 1, 64, DUET_GEMV_INT8, 64, false,
                                            err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "nan"));
    ck_assert_ptr_null(w.data);
}
END_TEST

/* ---- suite ----------------------------------------------------------------------------------- */

static Suite *cpu_kernels_suite(void)
{
    Suite *s = suite_create("cpu_kernels");
    const struct duet_test_case cases[] = {
        {"bf16 rounding", test_bf16_rounds_to_nearest_even_and_keeps_nan},
        {"bf16 rows", test_bf16_rows_pick_the_nearest_bf16_of_every_value},
        {"rmsnorm", test_rmsnorm_matches_the_double_reference_in_and_out_of_place},
        {"layernorm", test_layernorm_matches_the_double_reference_away_from_zero_mean},
        {"rope angles", test_rope_angles_are_cos_and_sin_of_position_times_frequency},
        {"rope", test_rope_rotates_each_element_with_its_partner_half_a_head_away},
        {"silu mul", test_silu_mul_gates_the_up_half_with_the_silu_of_the_gate_half},
        {"relu add", test_relu_and_add_work_row_by_row_with_strides},
        {"kv write", test_kv_write_puts_each_row_in_its_block_and_slot_and_nowhere_else},
        {"fused rope and kv write", test_fused_rope_and_kv_write_equal_rope_then_write},
        {"kv copy", test_kv_copy_block_copies_exactly_one_block_between_pools},
        {"attention gqa", test_attention_matches_the_reference_with_grouped_query_heads},
        {"attention mha mqa", test_attention_matches_the_reference_for_mha_mqa_and_big_groups},
        {"attention tiles", test_attention_handles_blocks_longer_than_one_tile},
        {"attention query blocks",
         test_attention_blocks_of_query_rows_match_the_reference_with_windows},
        {"gemv quantisation", test_gemv_quantised_weights_are_within_half_a_step_of_the_originals},
        {"gemv bf16 packing", test_gemv_bf16_weights_are_the_nearest_even_bf16_and_padding_is_zero},
        {"gemv layout", test_gemv_packed_bytes_follow_the_layout_of_gemv_h},
        {"gemv codes", test_gemv_codes_are_packed_exactly_as_given},
        {"gemv prepare", test_gemv_prepared_activations_are_rounded_per_group_and_zero_padded},
        {"gemv fused rmsnorm", test_gemv_fused_rmsnorm_prepares_what_a_normalised_copy_prepares},
        {"gemv widen", test_gemv_widen_gives_the_packed_weights_exactly},
        {"widened gemm", test_widened_gemm_matches_the_reference_for_every_panel_size},
        {"widened gemm errors", test_widened_gemm_refuses_other_formats_and_small_panels},
        {"f16 rounding", test_f16_conversion_rounds_to_nearest_even_with_subnormals_inf_and_nan},
        {"f16 nearest", test_f16_conversion_picks_the_nearest_half_of_random_values},
        {"gemv isa", test_gemv_isa_choice_follows_duet_cpu_isa_only_downwards},
        {"gemv pack errors", test_gemv_pack_refuses_bad_groups_sizes_and_values_with_a_message},
        {"argmax", test_argmax_is_the_first_largest_logit_and_refuses_non_finite_rows},
    };
    const struct duet_test_case dnn_cases[] = {
        {"linear f32", test_linear_f32_matches_the_reference_for_any_m},
        {"linear bf16", test_linear_bf16_matches_the_reference_for_any_m},
        {"linear shared shape", test_linears_of_one_shape_share_primitives_but_not_weights},
        {"linear empty", test_linear_create_refuses_an_empty_weight_with_a_message},
        {"linear run args", test_linear_run_of_no_rows_does_nothing_and_bad_strides_are_refused},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), setup, NULL, 120);
    duet_test_add_cases(s, dnn_cases, sizeof(dnn_cases) / sizeof(dnn_cases[0]), dnn_setup,
                        dnn_teardown, 120);
    return s;
}

/* The GEMV kernels of one ISA (gemv_isa), every format. */
static Suite *gemv_isa_suite(void)
{
    Suite *s = suite_create("gemv_isa");
    const struct duet_test_case cases[] = {
        {"gemv bf16", test_gemv_bf16_matches_the_reference_for_every_isa_m_and_shape},
        {"gemv int8", test_gemv_int8_matches_the_reference_for_every_isa_group_m_and_shape},
        {"gemv int4", test_gemv_int4_matches_the_reference_for_every_isa_group_m_and_shape},
        {"gemv bf16_f32",
         test_gemv_bf16_weights_with_f32_activations_match_the_reference_for_every_m},
        {"gemv f16", test_gemv_f16_weights_with_f32_activations_match_the_reference_for_every_m},
        {"gemv threads", test_gemv_threads_and_tile_pieces_give_the_same_bits},
        {"gemv rows", test_gemv_rows_give_the_same_bits_alone_and_among_others},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), setup, NULL, 240);
    return s;
}

/* Without $DUET_TEST_GEMV_ISA: everything but the per-ISA GEMV cases. With it (generic, avx2 or
 * avx512; tests/gemv_isa.sh sets it): those cases for that ISA, or exit 77 (SKIP) when this CPU
 * does not run it. */
int main(void)
{
    const char *isa = getenv("DUET_TEST_GEMV_ISA");

    if (!isa)
        return duet_test_run(cpu_kernels_suite());
    for (int i = DUET_GEMV_GENERIC; i <= DUET_GEMV_AVX512; i++)
        if (strcmp(isa, duet__gemv_isa_name((duet_gemv_isa)i)) == 0) {
            gemv_isa = (duet_gemv_isa)i;
            if (!duet__gemv_isa_supported(gemv_isa)) {
                printf("check_cpu_kernels: SKIP: this CPU does not run the %s GEMV kernels "
                       "(CPUID)\n",
                       isa);
                return 77;
            }
            printf("check_cpu_kernels: the %s GEMV kernels\n", isa);
            return duet_test_run(gemv_isa_suite());
        }
    fprintf(stderr, "check_cpu_kernels: DUET_TEST_GEMV_ISA=%s: not generic, avx2 or avx512\n", isa);
    return 99;
}
