/*
 * gemv_avx2.c — GEMV / small-M GEMM kernels for x86-64 with AVX2 + FMA + F16C (no AVX-512, no
 * VNNI), on the packed layout of gemv.h. gemv.c calls them only where CPUID says so.
 *
 * A packed tile holds 16 outputs; each 64-byte chunk is two 32-byte halves, lanes 0..7 (rows
 * 16t .. 16t + 7) and lanes 8..15, so every kernel keeps ymm accumulators per half and row.
 * Rows are processed in blocks of up to FLOAT_ROWS / ROWS_INT per pass over a tile, and the row
 * blocks loop inside the tile loop: a tile (at most k_pad × 32 bytes) is read from memory once and
 * from L1/L2 for the further blocks. A block's accumulators, the split weights and a broadcast
 * activation fit the 16 ymm registers. Each chunk load is paired with a software prefetch 2 KB
 * ahead.
 *
 *   bf16  a 32-bit lane is the pair (W[n][2c] low, W[n][2c + 1] high); `<< 16` gives the even
 *         weight as f32 and `& 0xffff0000` the odd one; f16 chunks widen by vcvtph2ps. bf16
 *         activations are broadcast as one 32-bit pair and split the same way, f32 ones
 *         broadcast as they are; two FMAs per half, in the same order for every row whatever m
 *         is (a row's sums do not depend on the rows beside it: float_rows says why).
 *   int8  vpmaddubsw would saturate (255 · 127 · 2 > 32767), so codes and activations are widened
 *         to 16 bits: even bytes by `& 0x00ff` (codes) or `<< 8` then arithmetic `>> 8`
 *         (activations), odd bytes by `>> 8`; vpmaddwd sums exact products into int32.
 *   int4  codes are ≤ 15, so vpmaddubsw (codes × int8 activations) cannot saturate; a chunk adds
 *         at most 2 · 2 · 15 · 127 = 7620 to a 16-bit lane (7680 even at q = −128), so four
 *         chunks (32 inputs) are summed in 16 bits before one vpmaddwd against ones widens
 *         them to int32.
 *
 * After each group the exact int32 sum acc of Σ u·q becomes f32 (|acc| < 2^24) and enters the
 * row's f32 accumulator: symmetric y += s·sx·(acc − z·Σq), asymmetric y += s·sx·acc + m·sx·Σq,
 * with s and m the group's 16 f16 values (vcvtph2ps) and sx, Σq the activation row's group scale
 * and sum. Only outputs n < w->n are written; no bias; the calling thread only.
 */
#include "gemv.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* int8 / int4 activation rows per pass over a tile: of 2, 3 and 4, 4 measured best or equal on
 * Zen 5, although gcc then keeps a few of the integer sums on the stack (the float formats' block,
 * FLOAT_ROWS, is set by their registers: see float_rows). */
#define ROWS_INT 4 /* int8 / int4; int_kernel handles remainders of 1 .. 3 */

/* Software prefetch distance in the weight stream. The hardware prefetcher alone left DRAM reads
 * and compute serialised once m ≥ 4 (bf16 m = 4 streamed at 12 GB/s against 22 GB/s of DRAM and
 * 26 GB/s of in-cache compute); 1–4 KB ahead measured alike, 17–19 GB/s. */
#define PREFETCH_AHEAD 2048

/* Asks for the line PREFETCH_AHEAD bytes past chunk p of the weight stream (tiles are contiguous;
 * a prefetch past the end does not fault). */
ALWAYS_INLINE void prefetch_ahead(const uint8_t *p)
{
    _mm_prefetch((const char *)(p + PREFETCH_AHEAD), _MM_HINT_T0);
}

ALWAYS_INLINE __m256i bcast32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* Writes one row's outputs n0 .. n0 + 15 (lo: lanes 0..7, hi: 8..15), those below n only. */
ALWAYS_INLINE void store_tile_row(float *y, uint32_t n0, uint32_t n, __m256 lo, __m256 hi)
{
    if (n0 + DUET_GEMV_TILE <= n) {
        _mm256_storeu_ps(y + n0, lo);
        _mm256_storeu_ps(y + n0 + 8, hi);
        return;
    }
    float tmp[DUET_GEMV_TILE];
    _mm256_storeu_ps(tmp, lo);
    _mm256_storeu_ps(tmp + 8, hi);
    for (uint32_t j = 0; n0 + j < n; j++)
        y[n0 + j] = tmp[j];
}

/* ---- bf16 and f16 weights: bf16 or f32 activations --------------------------------------- */

/* The float formats a row block runs: bf16 weights against bf16 activations (split to f32 like
 * the weights), or bf16 / f16 weights against f32 activations. */
enum float_kind { KIND_BF16 = 0, KIND_BF16_F32 = 1, KIND_F16 = 2 };

/* Chunk p of a bf16_f32 tile (a lane's two bf16 in one dword) or an f16 one (column 2c's 16 halves
 * then column 2c + 1's) as f32: e0 / e1 column 2c lanes 0..7 / 8..15, o0 / o1 column 2c + 1. */
ALWAYS_INLINE void widen_chunk(const uint8_t *p, const bool f16, __m256 *e0, __m256 *e1, __m256 *o0,
                               __m256 *o1)
{
    if (f16) {
        *e0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        *e1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        *o0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32)));
        *o1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 48)));
        return;
    }
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
    const __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    *e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
    *o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask));
    *e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
    *o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask));
}

/* Rows r0 .. r0 + R − 1 of one tile: two FMAs per half per row and chunk, the activations
 * broadcast from f32 (or a bf16 pair split to f32). Every row has the same four chains (lanes 0..7
 * and 8..15, even and odd columns apart, added at the end) whatever R is: a row's sums do not
 * depend on m, so greedy speculative decoding (k + 1 rows scored) gives the target's own tokens bit
 * for bit. Four chains of one FMA per chunk keep one row alone at 64 bytes per FMA latency (~16 B a
 * cycle a core), above DRAM's share; they fill the registers at two rows (8 sums, 4 weights, 2
 * broadcasts), hence blocks of FLOAT_ROWS. */
#define FLOAT_ROWS 2

ALWAYS_INLINE void float_rows(const uint8_t *tile, const duet_gemv_weight *w,
                              const duet_gemv_act *a, uint32_t r0, const int R,
                              const enum float_kind kind, float *y, size_t y_stride, uint32_t n0)
{
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    const uint32_t nchunk = w->k_pad / 2;
    __m256 acc[FLOAT_ROWS][4]; /* lanes 0..7 even, 8..15 even, 0..7 odd, 8..15 odd */
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm256_setzero_ps();
    for (uint32_t c = 0; c < nchunk; c++) {
        __m256 e0, e1, o0, o1;
        prefetch_ahead(tile + (size_t)c * 64);
        widen_chunk(tile + (size_t)c * 64, kind == KIND_F16, &e0, &e1, &o0, &o1);
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const size_t at = (size_t)(r0 + r) * w->k_pad + 2 * c;
            __m256 xe, xo;
            if (kind == KIND_BF16) { /* the pair as one dword, split as the weights are */
                const __m256i p = bcast32(a->bf16 + at);
                xe = _mm256_castsi256_ps(_mm256_slli_epi32(p, 16));
                xo = _mm256_castsi256_ps(_mm256_and_si256(p, hi_mask));
            } else {
                xe = _mm256_broadcast_ss(a->f32 + at);
                xo = _mm256_broadcast_ss(a->f32 + at + 1);
            }
            acc[r][0] = _mm256_fmadd_ps(e0, xe, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(e1, xe, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(o0, xo, acc[r][2]);
            acc[r][3] = _mm256_fmadd_ps(o1, xo, acc[r][3]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
        store_tile_row(y + (size_t)(r0 + r) * y_stride, n0, w->n,
                       _mm256_add_ps(acc[r][0], acc[r][2]), _mm256_add_ps(acc[r][1], acc[r][3]));
}

ALWAYS_INLINE void float_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                                size_t y_stride, uint32_t t0, uint32_t t1,
                                const enum float_kind kind)
{
    const uint32_t m = a->m;
    for (uint32_t t = t0; t < t1; t++) {
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->tile_bytes;
        const uint32_t n0 = t * DUET_GEMV_TILE;
        uint32_t r = 0;
        for (; r + FLOAT_ROWS <= m; r += FLOAT_ROWS)
            float_rows(tile, w, a, r, FLOAT_ROWS, kind, y, y_stride, n0);
        if (r < m)
            float_rows(tile, w, a, r, 1, kind, y, y_stride, n0);
    }
}

static void bf16_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t0, uint32_t t1)
{
    float_kernel(w, a, y, y_stride, t0, t1, KIND_BF16);
}

static void bf16_f32_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                            size_t y_stride, uint32_t t0, uint32_t t1)
{
    float_kernel(w, a, y, y_stride, t0, t1, KIND_BF16_F32);
}

static void f16_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y, size_t y_stride,
                       uint32_t t0, uint32_t t1)
{
    float_kernel(w, a, y, y_stride, t0, t1, KIND_F16);
}

/* ---- int8 / int4: group epilogue --------------------------------------------------------- */

/*
 * Adds one group's exact sums iacc[r][h] (Σ u·q, lanes of half h) to the f32 accumulators facc:
 * symmetric s·sx·(acc − z·Σq), asymmetric s·sx·acc + m·sx·Σq.
 */
ALWAYS_INLINE void group_finish(const uint8_t *sm, bool asym, int32_t z, const duet_gemv_act *a,
                                uint32_t r0, const int R, uint32_t g, uint32_t ngroup,
                                __m256i iacc[][2], __m256 facc[][2])
{
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sm));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sm + 16)));
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    if (asym) {
        m0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sm + 32)));
        m1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sm + 48)));
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const size_t idx = (size_t)(r0 + r) * ngroup + g;
        const float sxf = a->scale[idx];
        const int32_t qs = a->qsum[idx];
        const __m256 sx = _mm256_set1_ps(sxf);
        if (asym) {
            const __m256 msq = _mm256_set1_ps(sxf * (float)qs);
            facc[r][0] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][0]), _mm256_mul_ps(s0, sx), facc[r][0]);
            facc[r][1] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][1]), _mm256_mul_ps(s1, sx), facc[r][1]);
            facc[r][0] = _mm256_fmadd_ps(m0, msq, facc[r][0]);
            facc[r][1] = _mm256_fmadd_ps(m1, msq, facc[r][1]);
        } else {
            const __m256i zq = _mm256_set1_epi32(z * qs);
            facc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(iacc[r][0], zq)),
                                         _mm256_mul_ps(s0, sx), facc[r][0]);
            facc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(iacc[r][1], zq)),
                                         _mm256_mul_ps(s1, sx), facc[r][1]);
        }
    }
}

/* ---- int8 ------------------------------------------------------------------------------------ */

/* Σ u·q of one group (group / 4 chunks at codes) for rows r0 .. r0 + R − 1, into iacc. */
ALWAYS_INLINE void int8_group_dot(const uint8_t *codes, const int8_t *q, uint32_t k_pad,
                                  uint32_t group, const int R, __m256i iacc[][2])
{
    const __m256i lo_mask = _mm256_set1_epi16(0x00ff);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        iacc[r][0] = iacc[r][1] = _mm256_setzero_si256();
    for (uint32_t c = 0; c < group / 4; c++) {
        prefetch_ahead(codes + (size_t)c * 64);
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)c * 64));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)c * 64 + 32));
        const __m256i we0 = _mm256_and_si256(v0, lo_mask), wo0 = _mm256_srli_epi16(v0, 8);
        const __m256i we1 = _mm256_and_si256(v1, lo_mask), wo1 = _mm256_srli_epi16(v1, 8);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256i x = bcast32(q + (size_t)r * k_pad + 4 * c);
            const __m256i xe = _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8);
            const __m256i xo = _mm256_srai_epi16(x, 8);
            iacc[r][0] = _mm256_add_epi32(iacc[r][0], _mm256_add_epi32(_mm256_madd_epi16(we0, xe),
                                                                       _mm256_madd_epi16(wo0, xo)));
            iacc[r][1] = _mm256_add_epi32(iacc[r][1], _mm256_add_epi32(_mm256_madd_epi16(we1, xe),
                                                                       _mm256_madd_epi16(wo1, xo)));
        }
    }
}

/* ---- int4 ------------------------------------------------------------------------------------ */

/* As int8_group_dot for int4 codes (group / 8 chunks), four chunks summed in 16 bits at a time. */
ALWAYS_INLINE void int4_group_dot(const uint8_t *codes, const int8_t *q, uint32_t k_pad,
                                  uint32_t group, const int R, __m256i iacc[][2])
{
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        iacc[r][0] = iacc[r][1] = _mm256_setzero_si256();
    for (uint32_t c0 = 0; c0 < group / 8; c0 += 4) {
        __m256i acc16[ROWS_INT][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc16[r][0] = acc16[r][1] = _mm256_setzero_si256();
        for (uint32_t c = c0; c < c0 + 4; c++) {
            prefetch_ahead(codes + (size_t)c * 64);
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)c * 64));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)c * 64 + 32));
            const __m256i lo0 = _mm256_and_si256(v0, nib);
            const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
            const __m256i lo1 = _mm256_and_si256(v1, nib);
            const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const int8_t *qr = q + (size_t)r * k_pad + 8 * c;
                const __m256i xl = bcast32(qr), xh = bcast32(qr + 4);
                acc16[r][0] =
                    _mm256_add_epi16(acc16[r][0], _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl),
                                                                   _mm256_maddubs_epi16(hi0, xh)));
                acc16[r][1] =
                    _mm256_add_epi16(acc16[r][1], _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl),
                                                                   _mm256_maddubs_epi16(hi1, xh)));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            iacc[r][0] = _mm256_add_epi32(iacc[r][0], _mm256_madd_epi16(acc16[r][0], ones));
            iacc[r][1] = _mm256_add_epi32(iacc[r][1], _mm256_madd_epi16(acc16[r][1], ones));
        }
    }
}

/* ---- int8 / int4: tiles ---------------------------------------------------------------------- */

/* Rows r0 .. r0 + R − 1 of one int8 (bits 8) or int4 (bits 4) tile, all groups. */
ALWAYS_INLINE void int_rows(const uint8_t *tile, const duet_gemv_weight *w, const duet_gemv_act *a,
                            uint32_t r0, const int R, const int bits, bool asym, float *y,
                            size_t y_stride, uint32_t n0)
{
    const uint32_t group = w->group, ngroup = w->k_pad / group;
    const size_t codes_bytes = (size_t)group * (bits == 8 ? 16 : 8);
    const int32_t z = bits == 8 ? 128 : 8;
    __m256 facc[ROWS_INT][2];
    __m256i iacc[ROWS_INT][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        facc[r][0] = facc[r][1] = _mm256_setzero_ps();
    for (uint32_t g = 0; g < ngroup; g++) {
        const uint8_t *codes = tile + (size_t)g * w->group_bytes;
        const int8_t *q = a->q + (size_t)r0 * w->k_pad + (size_t)g * group;
        if (bits == 8)
            int8_group_dot(codes, q, w->k_pad, group, R, iacc);
        else
            int4_group_dot(codes, q, w->k_pad, group, R, iacc);
        group_finish(codes + codes_bytes, asym, z, a, r0, R, g, ngroup, iacc, facc);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        store_tile_row(y + (size_t)(r0 + r) * y_stride, n0, w->n, facc[r][0], facc[r][1]);
}

/* All rows of tiles t0 .. t1 − 1, in blocks of 4 rows (then 3, 2 or 1). */
ALWAYS_INLINE void int_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                              size_t y_stride, uint32_t t0, uint32_t t1, const int bits, bool asym)
{
    const uint32_t m = a->m;
    for (uint32_t t = t0; t < t1; t++) {
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->tile_bytes;
        const uint32_t n0 = t * DUET_GEMV_TILE;
        uint32_t r = 0;
        for (; r + ROWS_INT <= m; r += ROWS_INT)
            int_rows(tile, w, a, r, ROWS_INT, bits, asym, y, y_stride, n0);
        switch (m - r) {
        case 3:
            int_rows(tile, w, a, r, 3, bits, asym, y, y_stride, n0);
            break;
        case 2:
            int_rows(tile, w, a, r, 2, bits, asym, y, y_stride, n0);
            break;
        case 1:
            int_rows(tile, w, a, r, 1, bits, asym, y, y_stride, n0);
            break;
        }
    }
}

static void int8_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t0, uint32_t t1)
{
    if (w->asym)
        int_kernel(w, a, y, y_stride, t0, t1, 8, true);
    else
        int_kernel(w, a, y, y_stride, t0, t1, 8, false);
}

static void int4_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t0, uint32_t t1)
{
    if (w->asym)
        int_kernel(w, a, y, y_stride, t0, t1, 4, true);
    else
        int_kernel(w, a, y, y_stride, t0, t1, 4, false);
}

const duet_gemv_ops duet__gemv_avx2_ops = {"avx2",      bf16_kernel,     int8_kernel,
                                           int4_kernel, bf16_f32_kernel, f16_kernel};

#else /* built without the ISA's flags (configure: AVX*_CFLAGS): no kernels */

const duet_gemv_ops duet__gemv_avx2_ops = {"avx2", NULL, NULL, NULL, NULL, NULL};

#endif
