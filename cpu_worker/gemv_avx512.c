/*
 * gemv_avx512.c — the AVX-512 GEMV / small-M GEMM kernels on packed weights (gemv.h has the
 * layout and the contract; gemv.c calls them only where CPUID reports AVX-512 F/BW/VL, VNNI and
 * BF16, and splits the tiles between threads).
 *
 * One tile is 16 outputs, one zmm lane each, so a 64-byte chunk of packed weights is one operand:
 *
 *   bf16  acc[r] = vdpbf16ps(acc[r], chunk, broadcast(x[r][2c], x[r][2c + 1]))
 *   int8  acc[r] = vpdpbusd(acc[r], chunk, broadcast(q[r][4c .. 4c + 3]))        (int32, exact)
 *   int4  acc[r] = vpdpbusd(acc[r], chunk & 0x0f, broadcast(q[r][8c .. 8c + 3]))
 *         acc[r] = vpdpbusd(acc[r], chunk >> 4 & 0x0f, broadcast(q[r][8c + 4 .. 8c + 7]))
 *
 * int8 / int4 close each group in f32: s · sx · (acc − z · Σq), or s · sx · acc + m · sx · Σq
 * when asymmetric, with s and m converted from f16 by vcvtph2ps.
 *
 * Rows: each weight chunk loaded serves a block of up to ROW_BLOCK activation rows (one
 * accumulator chain per row), and for more rows the row blocks loop inside the tile loop, so that
 * a tile's weights (k_pad × 16 bytes for int8, × 32 for bf16: L1 or L2 for every shape we run)
 * come from memory once per call and from cache for the further blocks (prefill, m = 512).
 *
 * Latency: with few rows there would be one or two dependent chains of vdpbf16ps / vpdpbusd per
 * tile, and the loop would run at the instruction latency instead of memory speed; a block of R
 * rows therefore splits its chunk loop SPLIT_INT(R) (integers) or FLOAT_SPLIT ways into
 * independent accumulators, summed at the end of the group (exactly, for the integers) or of the
 * tile.
 *
 * Prefetch: blocks of several rows spend enough time per chunk that the hardware prefetcher
 * falls behind, so the first row block of a tile prefetches PF_DIST bytes ahead (the tiles of a
 * thread's range are contiguous, so that runs on into the next tile).
 *
 * The measurements behind ROW_BLOCK, SPLIT and PF_DIST are in the comment by their definitions.
 */
#include "gemv.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) &&                      \
    defined(__AVX512VNNI__) && defined(__AVX512BF16__)

#include <immintrin.h>
#include <string.h>

/*
 * Tuning (duet-bench gemv and a standalone copy of these loops, one thread, 2-core Zen 5 under
 * load from neighbours; vpdpbusd and vdpbf16ps on zmm measured at 1 per cycle, ~3.6 G/s, with
 * vpdpbusd's latency ~4 cycles):
 *  - ROW_BLOCK 8: with the weights in L2 (n 256, k 2048) every block size from 4 to 8 runs at the
 *    instruction throughput (m = 8 and 64: int8 ~170-200 GMAC/s of a 233 peak, int4 the same,
 *    bf16 ~110 of 116), so the larger block, which loads and unpacks each chunk once for 8 rows,
 *    was kept.
 *  - SPLIT: one row alone runs latency-bound (4 chains per tile gave m = 1 at 95 GB/s int8,
 *    99 GB/s bf16, 62 GB/s int4 from L2, 2.5x what one core gets from DRAM); bf16 with 4 rows
 *    and one chain each ran at 75 GMAC/s, at 110 with 2 or 4. The integer blocks of 3 or 4 rows
 *    take 2 chains a row (each extra chain costs an add per row and group, and 8 chains already
 *    cover vpdpbusd's latency): 2026-12-07, one thread on this Xeon, n 256, k 2048 in L2 (min of
 *    300 calls), m = 4 int8 36-37 GB/s against 34 with 4 chains, int4 19.8 against 18.4. Those of
 *    5..8 rows keep one chain per row: with two, 16 + 8 accumulators spilled to the stack.
 *  - PF_DIST 4096 bytes ahead for blocks of 3+ rows (first row block only): streaming tinyllama's
 *    gate_up (11264 x 2048), int4 m = 4 took 640-920 us against 910-1400 without, m = 8
 *    1180-1460 against 1750-2200, int8 m = 4 1100-1590 against 1430-2160; at m = 1 it cost
 *    10-15 % (int8 1060-1480 against 920-1310), where the hardware prefetcher already keeps up
 *    (1 thread, m = 1: ~24-25 GB/s for all three formats with the probe at 23.6).
 */
#define ROW_BLOCK 8 /* rows per block; the register file holds 8 × (int acc + f32 sum) */
#define SPLIT_LO 4  /* accumulators per row for blocks of 1 or 2 rows */
#define SPLIT_MID 2 /* ... of 3 or 4 rows */
#define SPLIT_HI_INT                                                                               \
    1 /* ... of 5 to 8 rows, int8 and int4 (floats keep blocks of 4: FLOAT_ROWS)                   \
       */
#define SPLIT_INT(r) ((r) <= 2 ? SPLIT_LO : (r) <= 4 ? SPLIT_MID : SPLIT_HI_INT)
#define PF_DIST 4096 /* bytes */
#define PF_ROWS 3    /* blocks of at least this many rows prefetch */

#define INLINE static inline __attribute__((always_inline))

/* Four activation bytes (or two bf16) as one broadcast dword; memcpy keeps aliasing legal. */
INLINE __m512i bcast4(const void *p)
{
    int32_t v;

    memcpy(&v, p, sizeof(v));
    return _mm512_set1_epi32(v);
}

/* How far ahead of the chunk it loads a block prefetches: the first row block of a tile streams
 * the weights from memory, and with PF_ROWS rows or more its arithmetic per chunk keeps the
 * hardware prefetcher from running far enough ahead; later blocks read the tile from cache, so
 * they "prefetch" the chunk they load (distance 0), which costs one load slot and no branch. */
INLINE size_t prefetch_distance(uint32_t r0, const int R)
{
    return r0 == 0 && R >= PF_ROWS ? PF_DIST : 0;
}

/* Lanes of tile t that are real outputs (the last tile may be partial). */
INLINE __mmask16 tile_mask(const duet_gemv_weight *w, uint32_t t)
{
    uint32_t left = w->n - t * DUET_GEMV_TILE;

    return left >= DUET_GEMV_TILE ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* ---- bf16, and bf16 / f16 against f32 activations --------------------------------------- */

/* The float formats a block runs: bf16 weights against bf16 activations (vdpbf16ps), or bf16 / f16
 * weights widened to f32 against f32 activations (FMAs). */
enum float_kind { KIND_BF16 = 0, KIND_BF16_F32 = 1, KIND_F16 = 2 };

/* Chunk p of a bf16_f32 tile (pairs of bf16 in one dword) or an f16 one (column 2c's 16 halves
 * then column 2c + 1's) as the two columns' weights in f32. */
INLINE void widen_chunk(const uint8_t *p, const bool f16, __m512 *even, __m512 *odd)
{
    if (f16) {
        *even = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        *odd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
    } else {
        __m512i v = _mm512_loadu_si512(p);

        *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
    }
}

/* acc += chunk p's contribution to row x (the row's activations from column 0): one vdpbf16ps
 * against a broadcast bf16 pair, or two FMAs against the widened columns. */
INLINE __m512 chunk_step(__m512 acc, const uint8_t *p, const void *x, uint32_t c,
                         const enum float_kind kind)
{
    __m512 even, odd;
    const float *xf = x;

    if (kind == KIND_BF16)
        return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(p),
                                (__m512bh)bcast4((const uint16_t *)x + 2 * c));
    widen_chunk(p, kind == KIND_F16, &even, &odd);
    acc = _mm512_fmadd_ps(even, _mm512_set1_ps(xf[2 * c]), acc);
    return _mm512_fmadd_ps(odd, _mm512_set1_ps(xf[2 * c + 1]), acc);
}

/* Rows r0 .. r0 + R − 1 of tile t, S chains a row (chunk c feeds chain c mod S), summed in chain
 * order at the end. The compiler keeps each widened chunk for all R rows (the loads are the
 * same and pure). */
INLINE void float_block(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t, uint32_t r0, const int R, const int S,
                        const enum float_kind kind)
{
    const size_t pf = prefetch_distance(r0, R);
    const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->tile_bytes;
    const void *x[ROW_BLOCK];
    __m512 acc[ROW_BLOCK][4];
    const uint32_t chunks = w->k_pad / 2; /* a multiple of 16, so of S */
    const __mmask16 mask = tile_mask(w, t);

#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        x[r] = kind == KIND_BF16 ? (const void *)(a->bf16 + (size_t)(r0 + r) * a->k_pad)
                                 : (const void *)(a->f32 + (size_t)(r0 + r) * a->k_pad);
#pragma GCC unroll 4
        for (int s = 0; s < S; s++)
            acc[r][s] = _mm512_setzero_ps();
    }
    for (uint32_t c = 0; c < chunks; c += (uint32_t)S) {
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) {
            const uint8_t *p = tile + (size_t)(c + s) * 64;

            if (R >= PF_ROWS)
                _mm_prefetch((const char *)(p + pf), _MM_HINT_T0);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                acc[r][s] = chunk_step(acc[r][s], p, x[r], c + s, kind);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m512 sum = acc[r][0];

#pragma GCC unroll 4
        for (int s = 1; s < S; s++)
            sum = _mm512_add_ps(sum, acc[r][s]);
        _mm512_mask_storeu_ps(y + (size_t)(r0 + r) * y_stride + (size_t)t * DUET_GEMV_TILE, mask,
                              sum);
    }
}

/* Float rows go in blocks of at most FLOAT_ROWS, every row with FLOAT_SPLIT chains whatever m
 * is: a row's f32 sums are then associated the same way in a block of one (decode) and of k + 1
 * (speculative scoring), so greedy speculative decoding gives the target's own tokens bit for
 * bit. (The integer formats are exact within a group and need no such care.) */
#define FLOAT_ROWS 4
#define FLOAT_SPLIT 4

INLINE void float_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                         size_t y_stride, uint32_t t0, uint32_t t1, const enum float_kind kind)
{
    for (uint32_t t = t0; t < t1; t++) {
        uint32_t r0 = 0;

        for (; r0 + FLOAT_ROWS <= a->m; r0 += FLOAT_ROWS)
            float_block(w, a, y, y_stride, t, r0, FLOAT_ROWS, FLOAT_SPLIT, kind);
        switch (a->m - r0) {
        case 3:
            float_block(w, a, y, y_stride, t, r0, 3, FLOAT_SPLIT, kind);
            break;
        case 2:
            float_block(w, a, y, y_stride, t, r0, 2, FLOAT_SPLIT, kind);
            break;
        case 1:
            float_block(w, a, y, y_stride, t, r0, 1, FLOAT_SPLIT, kind);
            break;
        }
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

/* ---- int8 and int4 ------------------------------------------------------------------------- */

/* Σ u·q of one group for R rows into acc[r][s], chain 0 of row r starting at init[r] and the
 * others at zero. */
INLINE void int_group_dots(const uint8_t *codes, const int8_t *const *q, uint32_t chunks, size_t pf,
                           const __m512i *init, __m512i acc[][4], const int R, const int S,
                           const bool int4)
{
    const __m512i low = _mm512_set1_epi8(0x0f);

#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++)
            acc[r][s] = s == 0 ? init[r] : _mm512_setzero_si512();
    for (uint32_t c = 0; c < chunks; c += (uint32_t)S) {
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) {
            __m512i v = _mm512_loadu_si512(codes + (size_t)(c + s) * 64);

            if (R >= PF_ROWS)
                _mm_prefetch((const char *)(codes + (size_t)(c + s) * 64 + pf), _MM_HINT_T0);

            if (int4) {
                __m512i lo = _mm512_and_si512(v, low);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);

#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    const int8_t *qc = q[r] + 8 * (c + s);

                    acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], lo, bcast4(qc));
                    acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], hi, bcast4(qc + 4));
                }
            } else {
#pragma GCC unroll 8
                for (int r = 0; r < R; r++)
                    acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], v, bcast4(q[r] + 4 * (c + s)));
            }
        }
    }
}

/* Rows r0 .. r0 + R − 1 of tile t. Per row and group, after the dot products: the chains'
 * integer sum (symmetric weights: started at −z·Σq, which folds the zero point into the exact
 * integer part), one convert, one product s · sx and one multiply-add, in the same order whatever
 * R is, so a row's result does not depend on the rows beside it. The weights' scale (and offset)
 * are converted once per group for all R rows. */
INLINE void int_block(const duet_gemv_weight *w, const duet_gemv_act *a, float *y, size_t y_stride,
                      uint32_t t, uint32_t r0, const int R, const int S, const bool int4,
                      const bool asym)
{
    const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->tile_bytes;
    const uint32_t group = w->group, groups = w->k_pad / group;
    const uint32_t chunks = int4 ? group / 8 : group / 4; /* 4 .. 32, a multiple of S */
    const size_t code_bytes = (size_t)chunks * 64;
    const int32_t z = int4 ? 8 : 128;
    const __mmask16 mask = tile_mask(w, t);
    const int8_t *q[ROW_BLOCK];
    const float *sx[ROW_BLOCK];
    const int32_t *qsum[ROW_BLOCK];
    __m512i acc[ROW_BLOCK][4], init[ROW_BLOCK];
    __m512 out[ROW_BLOCK];
    const size_t pf = prefetch_distance(r0, R);

#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        q[r] = a->q + (size_t)(r0 + r) * a->k_pad;
        sx[r] = a->scale + (size_t)(r0 + r) * groups;
        qsum[r] = a->qsum + (size_t)(r0 + r) * groups;
        out[r] = _mm512_setzero_ps();
    }
    for (uint32_t g = 0; g < groups; g++) {
        const uint8_t *block = tile + (size_t)g * w->group_bytes;
        const int8_t *qg[ROW_BLOCK];
        __m512 s, m = _mm512_setzero_ps();

#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            qg[r] = q[r] + (size_t)g * group;
            init[r] = asym ? _mm512_setzero_si512() : _mm512_set1_epi32(-z * qsum[r][g]);
        }
        int_group_dots(block, qg, chunks, pf, init, acc, R, S, int4);
        s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + code_bytes)));
        if (asym)
            m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + code_bytes + 32)));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512i sum = acc[r][0];
            const float xs = sx[r][g];

#pragma GCC unroll 4
            for (int i = 1; i < S; i++)
                sum = _mm512_add_epi32(sum, acc[r][i]);
            out[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(s, _mm512_set1_ps(xs)),
                                     out[r]);
            if (asym)
                out[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xs * (float)qsum[r][g]), out[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        _mm512_mask_storeu_ps(y + (size_t)(r0 + r) * y_stride + (size_t)t * DUET_GEMV_TILE, mask,
                              out[r]);
}

/* The remainder block of R = m mod ROW_BLOCK rows (1 .. ROW_BLOCK − 1). */
INLINE void int_tail(const duet_gemv_weight *w, const duet_gemv_act *a, float *y, size_t y_stride,
                     uint32_t t, uint32_t r0, uint32_t R, const bool int4, const bool asym)
{
    switch (R) {
#if ROW_BLOCK > 7
    case 7:
        int_block(w, a, y, y_stride, t, r0, 7, SPLIT_INT(7), int4, asym);
        break;
#endif
#if ROW_BLOCK > 6
    case 6:
        int_block(w, a, y, y_stride, t, r0, 6, SPLIT_INT(6), int4, asym);
        break;
#endif
#if ROW_BLOCK > 5
    case 5:
        int_block(w, a, y, y_stride, t, r0, 5, SPLIT_INT(5), int4, asym);
        break;
#endif
#if ROW_BLOCK > 4
    case 4:
        int_block(w, a, y, y_stride, t, r0, 4, SPLIT_INT(4), int4, asym);
        break;
#endif
    case 3:
        int_block(w, a, y, y_stride, t, r0, 3, SPLIT_INT(3), int4, asym);
        break;
    case 2:
        int_block(w, a, y, y_stride, t, r0, 2, SPLIT_INT(2), int4, asym);
        break;
    case 1:
        int_block(w, a, y, y_stride, t, r0, 1, SPLIT_INT(1), int4, asym);
        break;
    }
}

INLINE void int_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y, size_t y_stride,
                       uint32_t t0, uint32_t t1, const bool int4, const bool asym)
{
    for (uint32_t t = t0; t < t1; t++) {
        uint32_t r0 = 0;

        for (; r0 + ROW_BLOCK <= a->m; r0 += ROW_BLOCK)
            int_block(w, a, y, y_stride, t, r0, ROW_BLOCK, SPLIT_INT(ROW_BLOCK), int4, asym);
        int_tail(w, a, y, y_stride, t, r0, a->m - r0, int4, asym);
    }
}

static void int8_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t0, uint32_t t1)
{
    if (w->asym)
        int_kernel(w, a, y, y_stride, t0, t1, false, true);
    else
        int_kernel(w, a, y, y_stride, t0, t1, false, false);
}

static void int4_kernel(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                        size_t y_stride, uint32_t t0, uint32_t t1)
{
    if (w->asym)
        int_kernel(w, a, y, y_stride, t0, t1, true, true);
    else
        int_kernel(w, a, y, y_stride, t0, t1, true, false);
}

const duet_gemv_ops duet__gemv_avx512_ops = {"avx512",    bf16_kernel,     int8_kernel,
                                             int4_kernel, bf16_f32_kernel, f16_kernel};

#else /* built without the ISA's flags (configure: AVX*_CFLAGS): no kernels */

const duet_gemv_ops duet__gemv_avx512_ops = {"avx512", NULL, NULL, NULL, NULL, NULL};

#endif
