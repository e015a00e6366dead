/*
 * gemv.c — everything of gemv.h but the AVX kernel tables: packing and quantising weights into
 * the tiled layout gemv.h draws, preparing (optionally RMS-normalised) activations, splitting
 * tiles over the OpenMP team, CPUID / XGETBV dispatch, IEEE half conversion, and the portable C
 * kernels every ISA's kernels are tested against.
 *
 *   pack      W[n][k] f32 ──► n_pad / 16 tiles, each lane j = one output row; int8 / int4 codes
 *             with an f16 scale (and min) per lane after each group's codes
 *   prepare   x[m][k] f32 ──► bf16 rows, or int8 q + sx + Σq per row and group (one buffer)
 *   run       tiles [t0, t1) per thread ──► ops->kernel, then the bias of those tiles
 *
 * The generic kernels keep to the arithmetic gemv.h states, the integer dot product of a group
 * exact in int32 and then the group's f32 formula, so they are the reference of the AVX ones:
 * they need not be fast, only plainly right, and loops over the 16 lanes of a chunk that -O2 can
 * vectorise. They read the tiles as little-endian 32-bit words (x86-64 and AArch64 alike).
 *
 * Threading: packing over tiles, preparation over rows (when there are many), a run over tiles.
 * Every tile's result depends only on its own inputs, so y is the same bit for bit whatever the
 * number of threads.
 */
#include "gemv.h"
#include "cpu_worker-int.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define TILE DUET_GEMV_TILE
#define CHUNK 64u    /* bytes of one chunk: 16 lanes × 4 bytes */
#define ROW_BLOCK 8u /* activation rows a generic kernel carries per pass over a tile */

/* ---- layout helpers -------------------------------------------------------------------------- */

/* Bytes of a group's codes: group / 4 chunks for int8, group / 8 for int4. */
static size_t codes_bytes(duet_gemv_fmt fmt, uint32_t group)
{
    return fmt == DUET_GEMV_INT8 ? (size_t)group / 4 * CHUNK : (size_t)group / 8 * CHUNK;
}

static uint16_t load_u16(const uint8_t *p)
{
    uint16_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static void store_u16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

static size_t round_up(size_t v, size_t to)
{
    return (v + to - 1) / to * to;
}

/* ---- packing --------------------------------------------------------------------------------- */

/* One lane's bf16 values into tile t (row < n; padding stays the zeroed memory). */
static void pack_bf16_lane(uint8_t *tile, uint32_t j, const float *wrow, uint32_t k)
{
    uint16_t *words = (uint16_t *)(void *)tile;

    for (uint32_t col = 0; col < k; col++)
        words[(size_t)col / 2 * (CHUNK / 2) + 2u * j + (col & 1u)] =
            duet__cpu_f32_to_bf16(wrow[col]);
}

/* One lane's f16 values: column 2c in the chunk's first 32 bytes, 2c + 1 in its second. False
 * when a finite weight overflows the f16 range. */
static bool pack_f16_lane(uint8_t *tile, uint32_t j, const float *wrow, uint32_t k)
{
    uint16_t *words = (uint16_t *)(void *)tile;
    bool ok = true;

    for (uint32_t col = 0; col < k; col++) {
        uint16_t h = duet_f32_to_f16(wrow[col]);

        ok &= !isfinite(wrow[col]) || isfinite(duet_f16_to_f32(h));
        words[(size_t)col / 2 * (CHUNK / 2) + (col & 1u) * TILE + j] = h;
    }
    return ok;
}

/* Where code e (0 .. group − 1) of lane j sits in a group block, and in which nibble (int4). */
static size_t code_offset(duet_gemv_fmt fmt, uint32_t j, uint32_t e, unsigned *nibble)
{
    if (fmt == DUET_GEMV_INT8) {
        *nibble = 0;
        return (size_t)(e / 4) * CHUNK + 4u * j + e % 4;
    }
    *nibble = (e % 8) / 4;
    return (size_t)(e / 8) * CHUNK + 4u * j + e % 4;
}

/* Scale and min of one group of n_valid weights (symmetric: min = 0), as f16 bits. Returns false
 * when a weight is not finite or the scale does not fit an f16. */
static bool group_params(const float *v, uint32_t n_valid, duet_gemv_fmt fmt, bool asym,
                         uint16_t *s16, uint16_t *m16)
{
    float lo = v[0], hi = v[0], amax = 0.0f, s, m = 0.0f;

    for (uint32_t i = 0; i < n_valid; i++) {
        if (!isfinite(v[i]))
            return false;
        lo = fminf(lo, v[i]);
        hi = fmaxf(hi, v[i]);
        amax = fmaxf(amax, fabsf(v[i]));
    }
    if (asym) {
        s = (hi - lo) / (fmt == DUET_GEMV_INT8 ? 255.0f : 15.0f);
        m = lo;
    } else {
        s = amax / (fmt == DUET_GEMV_INT8 ? 127.0f : 7.0f);
    }
    *s16 = duet_f32_to_f16(s);
    *m16 = duet_f32_to_f16(m);
    return isfinite(duet_f16_to_f32(*s16)) && isfinite(duet_f16_to_f32(*m16));
}

/* The code of w with the stored (rounded) s and m: symmetric round(w / s) + z, asymmetric
 * round((w − m) / s), clamped; an s = 0 group gets codes worth 0 (symmetric) or m. */
static uint8_t quantise(float w, float s, float m, duet_gemv_fmt fmt, bool asym)
{
    long umax = fmt == DUET_GEMV_INT8 ? 255 : 15, z = fmt == DUET_GEMV_INT8 ? 128 : 8, q;

    if (asym) {
        q = s > 0.0f ? lrintf((w - m) / s) : 0;
        return (uint8_t)(q < 0 ? 0 : q > umax ? umax : q);
    }
    q = s > 0.0f ? lrintf(w / s) : 0;
    q = q < -(z - 1) ? -(z - 1) : q > z - 1 ? z - 1 : q;
    return (uint8_t)(q + z);
}

/* One lane's group g (weights wrow[g·group ..], k logical) into its block. Padded columns get
 * the code of 0: exactly 0 when symmetric, nearly when asymmetric (their activations are 0). */
static bool pack_group_lane(const duet_gemv_weight *w, uint8_t *blk, uint32_t j, const float *wrow,
                            uint32_t g)
{
    uint32_t c0 = g * w->group, n_valid = w->k - c0 < w->group ? w->k - c0 : w->group;
    size_t cb = codes_bytes(w->fmt, w->group);
    uint16_t s16, m16;
    float s, m;

    if (!group_params(wrow + c0, n_valid, w->fmt, w->asym, &s16, &m16))
        return false;
    s = duet_f16_to_f32(s16);
    m = duet_f16_to_f32(m16);
    for (uint32_t e = 0; e < w->group; e++) {
        unsigned nib;
        size_t off = code_offset(w->fmt, j, e, &nib);
        uint8_t u = quantise(e < n_valid ? wrow[c0 + e] : 0.0f, s, m, w->fmt, w->asym);

        blk[off] |= (uint8_t)(nib ? u << 4 : u);
    }
    store_u16(blk + cb + 2u * j, s16);
    if (w->asym)
        store_u16(blk + cb + 32 + 2u * j, m16);
    return true;
}

/* Tile t from W; false when a weight or scale is out of range. */
static bool pack_tile(const duet_gemv_weight *w, const float *W, uint32_t t)
{
    uint8_t *tile = (uint8_t *)w->data + (size_t)t * w->tile_bytes;
    bool ok = true;

    memset(tile, 0, w->tile_bytes);
    for (uint32_t j = 0; j < TILE && t * TILE + j < w->n; j++) {
        const float *wrow = W + (size_t)(t * TILE + j) * w->k;

        if (w->fmt == DUET_GEMV_BF16 || w->fmt == DUET_GEMV_BF16_F32) {
            pack_bf16_lane(tile, j, wrow, w->k);
            continue;
        }
        if (w->fmt == DUET_GEMV_F16) {
            ok &= pack_f16_lane(tile, j, wrow, w->k);
            continue;
        }
        for (uint32_t g = 0; g < w->k_pad / w->group; g++)
            ok &= pack_group_lane(w, tile + (size_t)g * w->group_bytes, j, wrow, g);
    }
    return ok;
}

/* Fills w's shape fields; false (with a message) when the arguments break the contract. */
static bool weight_shape(duet_gemv_weight *w, const char *name, uint32_t n, uint32_t k,
                         duet_gemv_fmt fmt, uint32_t group, bool asym, char *err, size_t err_size)
{
    bool quant = fmt == DUET_GEMV_INT8 || fmt == DUET_GEMV_INT4;
    uint64_t tiles, tile_bytes;

    if (!duet__gemv_fmt_16bit(fmt) && !quant) {
        snprintf(err, err_size, "%s: unknown GEMV weight format %d", name, (int)fmt);
        return false;
    }
    if (quant && group != 32 && group != 64 && group != 128) {
        snprintf(err, err_size, "%s: quantisation group %u is not 32, 64 or 128", name, group);
        return false;
    }
    if (n == 0 || k == 0 || n > UINT32_MAX - TILE || k > UINT32_MAX - 128) {
        snprintf(err, err_size, "%s: weight of %u × %u cannot be packed", name, n, k);
        return false;
    }
    w->fmt = fmt;
    w->n = n;
    w->k = k;
    w->n_pad = (uint32_t)round_up(n, TILE);
    w->group = quant ? group : 0;
    w->asym = quant && asym;
    w->k_pad = (uint32_t)round_up(k, quant ? group : DUET_GEMV_K_ALIGN);
    w->group_bytes = quant ? codes_bytes(fmt, group) + (w->asym ? 64 : 32) : 0;
    tile_bytes = quant ? (uint64_t)(w->k_pad / group) * w->group_bytes : (uint64_t)w->k_pad * 32;
    tiles = w->n_pad / TILE;
    if (tile_bytes > SIZE_MAX / tiles - DUET_GEMV_ALIGN) {
        snprintf(err, err_size, "%s: weight of %u × %u is too large", name, n, k);
        return false;
    }
    w->tile_bytes = (size_t)tile_bytes;
    return true;
}

/* Allocates w->data (and w->bias, copied) for the shape weight_shape set. */
static duet_status weight_alloc(duet_gemv_weight *w, const char *name, const float *bias, char *err,
                                size_t err_size)
{
    size_t data_bytes = (size_t)(w->n_pad / TILE) * w->tile_bytes;

    w->data = aligned_alloc(DUET_GEMV_ALIGN, round_up(data_bytes, DUET_GEMV_ALIGN));
    if (bias)
        w->bias = malloc((size_t)w->n * sizeof(float));
    if (!w->data || (bias && !w->bias)) {
        snprintf(err, err_size, "%s: out of memory packing %zu bytes of GEMV weights", name,
                 data_bytes);
        duet__gemv_weight_free(w);
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    if (bias)
        memcpy(w->bias, bias, (size_t)w->n * sizeof(float));
    w->bytes = data_bytes + (bias ? (size_t)w->n * sizeof(float) : 0);
    return DUET_STATUS_OK;
}

duet_status duet__gemv_weight_pack(duet_gemv_weight *w, const char *name, const float *W,
                                   const float *bias, uint32_t n, uint32_t k, duet_gemv_fmt fmt,
                                   uint32_t group, bool asym, char *err, size_t err_size)
{
    duet_status st;
    int tiles, bad = 0;

    memset(w, 0, sizeof(*w));
    if (!W) {
        snprintf(err, err_size, "%s: no weight to pack", name);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (!weight_shape(w, name, n, k, fmt, group, asym, err, err_size)) {
        memset(w, 0, sizeof(*w));
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if ((st = weight_alloc(w, name, bias, err, err_size)))
        return st;
    tiles = (int)(w->n_pad / TILE);
#pragma omp parallel for schedule(dynamic, 4) reduction(| : bad)
    for (int t = 0; t < tiles; t++)
        bad |= !pack_tile(w, W, (uint32_t)t);
    if (bad) {
        snprintf(err, err_size,
                 w->fmt == DUET_GEMV_F16
                     ? "%s: a weight is beyond the f16 range (|w| > 65504)"
                     : "%s: a weight is not finite or a group's scale does not fit an f16",
                 name);
        duet__gemv_weight_free(w);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    return DUET_STATUS_OK;
}

/* Tile t from codes and scales as given (padded lanes stay zero). */
static void pack_codes_tile(const duet_gemv_weight *w, const uint8_t *codes, const uint16_t *scales,
                            uint32_t t)
{
    uint8_t *tile = (uint8_t *)w->data + (size_t)t * w->tile_bytes;
    uint32_t groups = w->k / w->group;
    size_t cb = codes_bytes(w->fmt, w->group);

    memset(tile, 0, w->tile_bytes);
    for (uint32_t j = 0; j < TILE && t * TILE + j < w->n; j++) {
        size_t row = (size_t)t * TILE + j;

        for (uint32_t g = 0; g < groups; g++) {
            uint8_t *blk = tile + (size_t)g * w->group_bytes;
            const uint8_t *u = codes + row * w->k + (size_t)g * w->group;

            for (uint32_t e = 0; e < w->group; e++) {
                unsigned nib;
                size_t off = code_offset(w->fmt, j, e, &nib);

                blk[off] |= (uint8_t)(nib ? u[e] << 4 : u[e]);
            }
            store_u16(blk + cb + 2u * j, scales[row * groups + g]);
        }
    }
}

duet_status duet__gemv_weight_pack_codes(duet_gemv_weight *w, const char *name,
                                         const uint8_t *codes, const uint16_t *scales,
                                         const float *bias, uint32_t n, uint32_t k,
                                         duet_gemv_fmt fmt, uint32_t group, char *err,
                                         size_t err_size)
{
    duet_status st;
    int tiles;

    memset(w, 0, sizeof(*w));
    if (!codes || !scales || (fmt != DUET_GEMV_INT8 && fmt != DUET_GEMV_INT4) || !group ||
        k % group) {
        snprintf(err, err_size,
                 "%s: pre-quantised weights need codes, scales, int8 or int4, and k %u a "
                 "multiple of the group %u",
                 name, k, group);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (!weight_shape(w, name, n, k, fmt, group, false, err, err_size)) {
        memset(w, 0, sizeof(*w));
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; fmt == DUET_GEMV_INT4 && i < (size_t)n * k; i++)
        if (codes[i] > 15) {
            snprintf(err, err_size, "%s: int4 code %u at %zu is above 15", name, codes[i], i);
            memset(w, 0, sizeof(*w));
            return DUET_STATUS_INVALID_ARGUMENT;
        }
    if ((st = weight_alloc(w, name, bias, err, err_size)))
        return st;
    tiles = (int)(w->n_pad / TILE);
#pragma omp parallel for schedule(dynamic, 4)
    for (int t = 0; t < tiles; t++)
        pack_codes_tile(w, codes, scales, (uint32_t)t);
    return DUET_STATUS_OK;
}

void duet__gemv_weight_free(duet_gemv_weight *w)
{
    free(w->data);
    free(w->bias);
    memset(w, 0, sizeof(*w));
}

float duet__gemv_weight_get(const duet_gemv_weight *w, uint32_t row, uint32_t col)
{
    const uint8_t *tile, *blk;
    unsigned nib;
    size_t cb, off;
    uint32_t j = row % TILE, e;
    float s;
    int u;

    if (row >= w->n_pad || col >= w->k_pad)
        return 0.0f;
    tile = (const uint8_t *)w->data + (size_t)(row / TILE) * w->tile_bytes;
    if (w->fmt == DUET_GEMV_BF16 || w->fmt == DUET_GEMV_BF16_F32)
        return duet__cpu_bf16_to_f32(
            load_u16(tile + (size_t)col / 2 * CHUNK + 4u * j + 2u * (col & 1u)));
    if (w->fmt == DUET_GEMV_F16)
        return duet_f16_to_f32(
            load_u16(tile + (size_t)col / 2 * CHUNK + (col & 1u) * 2u * TILE + 2u * j));
    blk = tile + (size_t)(col / w->group) * w->group_bytes;
    e = col % w->group;
    cb = codes_bytes(w->fmt, w->group);
    off = code_offset(w->fmt, j, e, &nib);
    u = nib ? blk[off] >> 4 : (w->fmt == DUET_GEMV_INT4 ? blk[off] & 0x0f : blk[off]);
    s = duet_f16_to_f32(load_u16(blk + cb + 2u * j));
    if (w->asym)
        return s * (float)u + duet_f16_to_f32(load_u16(blk + cb + 32 + 2u * j));
    return s * (float)(u - (w->fmt == DUET_GEMV_INT8 ? 128 : 8));
}

/* ---- activations ----------------------------------------------------------------------------- */

/* Byte offsets within one activation buffer: q or bf16 at 0, then scale, then qsum. */
static void act_layout(const duet_gemv_weight *w, uint32_t m, size_t *scale_off, size_t *qsum_off,
                       size_t *total)
{
    size_t elems = (size_t)m * w->k_pad, groups = w->group ? (size_t)m * (w->k_pad / w->group) : 0;

    if (duet__gemv_fmt_16bit(w->fmt)) {
        *scale_off = *qsum_off = 0;
        *total = round_up(elems * (w->fmt == DUET_GEMV_BF16 ? sizeof(uint16_t) : sizeof(float)),
                          DUET_GEMV_ALIGN);
        return;
    }
    *scale_off = round_up(elems, DUET_GEMV_ALIGN);
    *qsum_off = *scale_off + round_up(groups * sizeof(float), DUET_GEMV_ALIGN);
    *total = *qsum_off + round_up(groups * sizeof(int32_t), DUET_GEMV_ALIGN);
}

size_t duet__gemv_act_size(const duet_gemv_weight *w, uint32_t m)
{
    size_t scale_off, qsum_off, total;

    act_layout(w, m, &scale_off, &qsum_off, &total);
    return total;
}

/* 1 / sqrt(mean(x²) + eps) over the row's k values, the sum in double. */
static float rms_inv(const float *x, uint32_t k, float eps)
{
    double ss = 0.0;

    for (uint32_t i = 0; i < k; i++)
        ss += (double)x[i] * x[i];
    return (float)(1.0 / sqrt(ss / k + eps));
}

/* The value the GEMV sees at column i: x, or x · inv · norm_w in f32, in that order. */
static inline float act_value(const float *x, const float *norm_w, float inv, uint32_t i)
{
    return norm_w ? x[i] * inv * norm_w[i] : x[i];
}

static void prepare_bf16_row(const duet_gemv_weight *w, const float *x, const float *norm_w,
                             float inv, uint16_t *out)
{
    for (uint32_t i = 0; i < w->k; i++)
        out[i] = duet__cpu_f32_to_bf16(act_value(x, norm_w, inv, i));
    memset(out + w->k, 0, (size_t)(w->k_pad - w->k) * sizeof(uint16_t));
}

static void prepare_f32_row(const duet_gemv_weight *w, const float *x, const float *norm_w,
                            float inv, float *out)
{
    for (uint32_t i = 0; i < w->k; i++)
        out[i] = act_value(x, norm_w, inv, i);
    memset(out + w->k, 0, (size_t)(w->k_pad - w->k) * sizeof(float));
}

/* max |v[i]| over n values, NaNs ignored. Non-negative floats order as their bits do, so this is
 * an integer max, which every compiler vectorises (a float max reduction needs fast-math or, for
 * clang, fails its `omp simd`). */
static float abs_max(const float *v, uint32_t n)
{
    uint32_t m = 0;
    float out;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t b;

        memcpy(&b, &v[i], sizeof(b));
        b &= 0x7fffffffu;
        b = b > 0x7f800000u ? 0 : b; /* NaN */
        m = b > m ? b : m;
    }
    memcpy(&out, &m, sizeof(out));
    return out;
}

/*
 * One row quantised per group: amax = max |v| over the group's valid columns, sx = amax / 127
 * (0 when amax is 0), q = v × (127 / amax) (127 / amax in f32) rounded to nearest, ties to even,
 * clamped to [−127, 127] (a NaN to −127), 0 in the padding, and qsum = Σ q. Written for the
 * vectoriser: the rounding adds and subtracts 1.5 × 2²³ (exact for |t| ≤ 2²², as t is after the
 * clamp), the same as lrintf in the default rounding mode without a libm call per element.
 */
static void prepare_int8_row(const duet_gemv_weight *w, const float *x, const float *norm_w,
                             float inv, int8_t *q, float *scale, int32_t *qsum)
{
    const float magic = 12582912.0f;
    float v[128]; /* the group's values (group ≤ 128) */

    for (uint32_t g = 0; g < w->k_pad / w->group; g++) {
        uint32_t c0 = g * w->group, n = c0 + w->group < w->k ? w->group : w->k - c0;
        float amax = 0.0f, qinv;
        int32_t sum = 0;

        if (c0 >= w->k)
            n = 0;
        if (norm_w) {
#pragma omp simd
            for (uint32_t i = 0; i < n; i++)
                v[i] = x[c0 + i] * inv * norm_w[c0 + i];
        } else {
            memcpy(v, x + c0, n * sizeof(float));
        }
        amax = abs_max(v, n);
        qinv = amax > 0.0f ? 127.0f / amax : 0.0f;
#pragma omp simd reduction(+ : sum)
        for (uint32_t i = 0; i < n; i++) {
            float t = v[i] * qinv;
            int32_t r;

            t = t >= -127.0f ? t : -127.0f;
            t = t <= 127.0f ? t : 127.0f;
            r = (int32_t)((t + magic) - magic);
            q[c0 + i] = (int8_t)r;
            sum += r;
        }
        memset(q + c0 + n, 0, w->group - n);
        scale[g] = amax > 0.0f ? amax / 127.0f : 0.0f;
        qsum[g] = sum;
    }
}

void duet__gemv_act_prepare(const duet_gemv_weight *w, const float *x, size_t x_stride, uint32_t m,
                            const float *norm_w, float eps, void *buf, duet_gemv_act *a)
{
    size_t scale_off, qsum_off, total, groups = w->group ? w->k_pad / w->group : 0;
    bool many = (size_t)m * w->k >= 65536;

    act_layout(w, m, &scale_off, &qsum_off, &total);
    memset(a, 0, sizeof(*a));
    a->m = m;
    a->k_pad = w->k_pad;
    a->group = w->group;
    if (w->fmt == DUET_GEMV_BF16)
        a->bf16 = buf;
    else if (duet__gemv_fmt_f32_act(w->fmt))
        a->f32 = buf;
    else {
        a->q = buf;
        a->scale = (float *)(void *)((uint8_t *)buf + scale_off);
        a->qsum = (int32_t *)(void *)((uint8_t *)buf + qsum_off);
    }
#pragma omp parallel for if (many) schedule(static)
    for (int r = 0; r < (int)m; r++) {
        const float *xr = x + (size_t)r * x_stride;
        float inv = norm_w ? rms_inv(xr, w->k, eps) : 1.0f;

        if (w->fmt == DUET_GEMV_BF16)
            prepare_bf16_row(w, xr, norm_w, inv, a->bf16 + (size_t)r * w->k_pad);
        else if (a->f32)
            prepare_f32_row(w, xr, norm_w, inv, a->f32 + (size_t)r * w->k_pad);
        else
            prepare_int8_row(w, xr, norm_w, inv, a->q + (size_t)r * w->k_pad,
                             a->scale + (size_t)r * groups, a->qsum + (size_t)r * groups);
    }
}

/* ---- generic kernels ------------------------------------------------------------------------- */

/* acc[r][j] of rows r < rows into y for the tile's outputs below w->n. */
static void store_tile(const duet_gemv_weight *w, float acc[ROW_BLOCK][TILE], uint32_t rows,
                       uint32_t r0, uint32_t t, float *y, size_t y_stride)
{
    uint32_t lanes = w->n - t * TILE < TILE ? w->n - t * TILE : TILE;

    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t j = 0; j < lanes; j++)
            y[(size_t)(r0 + r) * y_stride + t * TILE + j] = acc[r][j];
}

/* Rows r0 .. r0 + rows − 1 of one bf16 tile: pairs of products summed in f32, as vdpbf16ps. */
static void bf16_tile_rows(const duet_gemv_weight *w, const duet_gemv_act *a, const uint8_t *tile,
                           uint32_t r0, uint32_t rows, float acc[ROW_BLOCK][TILE])
{
    const uint16_t *words = (const uint16_t *)(const void *)tile;

    memset(acc, 0, sizeof(float) * ROW_BLOCK * TILE);
    for (uint32_t c = 0; c < w->k_pad / 2; c++) {
        float w0[TILE], w1[TILE];

        for (uint32_t j = 0; j < TILE; j++) {
            w0[j] = duet__cpu_bf16_to_f32(words[(size_t)c * 32 + 2 * j]);
            w1[j] = duet__cpu_bf16_to_f32(words[(size_t)c * 32 + 2 * j + 1]);
        }
        for (uint32_t r = 0; r < rows; r++) {
            const uint16_t *x = a->bf16 + (size_t)(r0 + r) * a->k_pad + 2 * c;
            float x0 = duet__cpu_bf16_to_f32(x[0]), x1 = duet__cpu_bf16_to_f32(x[1]);

            for (uint32_t j = 0; j < TILE; j++)
                acc[r][j] += w0[j] * x0 + w1[j] * x1;
        }
    }
}

/* Rows r0 .. of one bf16_f32 (bf16 weights) or f16 tile against f32 activations: f32 products
 * and sums, the even column's product first. */
static void f32act_tile_rows(const duet_gemv_weight *w, const duet_gemv_act *a, const uint8_t *tile,
                             uint32_t r0, uint32_t rows, float acc[ROW_BLOCK][TILE])
{
    const uint16_t *words = (const uint16_t *)(const void *)tile;
    bool f16 = w->fmt == DUET_GEMV_F16;

    memset(acc, 0, sizeof(float) * ROW_BLOCK * TILE);
    for (uint32_t c = 0; c < w->k_pad / 2; c++) {
        float w0[TILE], w1[TILE];

        for (uint32_t j = 0; j < TILE; j++) {
            const uint16_t *p = words + (size_t)c * 32;

            w0[j] = f16 ? duet__cpu_f16_to_f32(p[j]) : duet__cpu_bf16_to_f32(p[2 * j]);
            w1[j] = f16 ? duet__cpu_f16_to_f32(p[TILE + j]) : duet__cpu_bf16_to_f32(p[2 * j + 1]);
        }
        for (uint32_t r = 0; r < rows; r++) {
            const float *x = a->f32 + (size_t)(r0 + r) * a->k_pad + 2 * c;

            for (uint32_t j = 0; j < TILE; j++)
                acc[r][j] += w0[j] * x[0] + w1[j] * x[1];
        }
    }
}

/* Σ u·q of one group for the 16 lanes, exact in int32: int8 codes, 4 per lane per chunk. */
static void dot_int8(const uint8_t *blk, const int8_t *q, uint32_t group, int32_t dot[TILE])
{
    memset(dot, 0, sizeof(int32_t) * TILE);
    for (uint32_t c = 0; c < group / 4; c++) {
        const uint8_t *p = blk + c * CHUNK;
        int32_t q0 = q[4 * c], q1 = q[4 * c + 1], q2 = q[4 * c + 2], q3 = q[4 * c + 3];

        for (uint32_t j = 0; j < TILE; j++)
            dot[j] += p[4 * j] * q0 + p[4 * j + 1] * q1 + p[4 * j + 2] * q2 + p[4 * j + 3] * q3;
    }
}

/* The same for int4: low nibbles are elements 8c + b, high nibbles 8c + 4 + b. */
static void dot_int4(const uint8_t *blk, const int8_t *q, uint32_t group, int32_t dot[TILE])
{
    memset(dot, 0, sizeof(int32_t) * TILE);
    for (uint32_t c = 0; c < group / 8; c++) {
        const uint8_t *p = blk + c * CHUNK;
        const int8_t *ql = q + 8 * c, *qh = q + 8 * c + 4;

        for (uint32_t j = 0; j < TILE; j++) {
            int32_t lo = (p[4 * j] & 0x0f) * ql[0] + (p[4 * j + 1] & 0x0f) * ql[1] +
                         (p[4 * j + 2] & 0x0f) * ql[2] + (p[4 * j + 3] & 0x0f) * ql[3];
            int32_t hi = (p[4 * j] >> 4) * qh[0] + (p[4 * j + 1] >> 4) * qh[1] +
                         (p[4 * j + 2] >> 4) * qh[2] + (p[4 * j + 3] >> 4) * qh[3];

            dot[j] += lo + hi;
        }
    }
}

/* Rows r0 .. of one int8 / int4 tile: per group the integer dot, then gemv.h's f32 formula. */
static void quant_tile_rows(const duet_gemv_weight *w, const duet_gemv_act *a, const uint8_t *tile,
                            uint32_t r0, uint32_t rows, float acc[ROW_BLOCK][TILE])
{
    uint32_t groups = w->k_pad / w->group;
    size_t cb = codes_bytes(w->fmt, w->group);
    int32_t z = w->fmt == DUET_GEMV_INT8 ? 128 : 8, dot[TILE];

    memset(acc, 0, sizeof(float) * ROW_BLOCK * TILE);
    for (uint32_t g = 0; g < groups; g++) {
        const uint8_t *blk = tile + (size_t)g * w->group_bytes;
        float s[TILE], m[TILE];

        for (uint32_t j = 0; j < TILE; j++) {
            s[j] = duet_f16_to_f32(load_u16(blk + cb + 2 * j));
            m[j] = w->asym ? duet_f16_to_f32(load_u16(blk + cb + 32 + 2 * j)) : 0.0f;
        }
        for (uint32_t r = 0; r < rows; r++) {
            size_t row = (size_t)(r0 + r);
            float sx = a->scale[row * groups + g];
            int32_t qsum = a->qsum[row * groups + g];
            const int8_t *q = a->q + row * a->k_pad + (size_t)g * w->group;

            if (w->fmt == DUET_GEMV_INT8)
                dot_int8(blk, q, w->group, dot);
            else
                dot_int4(blk, q, w->group, dot);
            for (uint32_t j = 0; j < TILE; j++)
                acc[r][j] += w->asym ? s[j] * sx * (float)dot[j] + m[j] * sx * (float)qsum
                                     : s[j] * sx * (float)(dot[j] - z * qsum);
        }
    }
}

/* The rows of one tile's accumulators for rows r0 .. r0 + rows − 1 (bf16 or quantised). */
typedef void (*tile_rows_fn)(const duet_gemv_weight *w, const duet_gemv_act *a, const uint8_t *tile,
                             uint32_t r0, uint32_t rows, float acc[ROW_BLOCK][TILE]);

/* Tiles t0 .. t1 − 1, ROW_BLOCK activation rows per pass over a tile. */
static void generic_tiles(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                          size_t y_stride, uint32_t t0, uint32_t t1, tile_rows_fn tile_rows)
{
    float acc[ROW_BLOCK][TILE];

    for (uint32_t t = t0; t < t1; t++) {
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->tile_bytes;

        for (uint32_t r0 = 0; r0 < a->m; r0 += ROW_BLOCK) {
            uint32_t rows = a->m - r0 < ROW_BLOCK ? a->m - r0 : ROW_BLOCK;

            tile_rows(w, a, tile, r0, rows, acc);
            store_tile(w, acc, rows, r0, t, y, y_stride);
        }
    }
}

static void gemv_bf16_generic(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                              size_t y_stride, uint32_t t0, uint32_t t1)
{
    generic_tiles(w, a, y, y_stride, t0, t1, bf16_tile_rows);
}

static void gemv_quant_generic(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                               size_t y_stride, uint32_t t0, uint32_t t1)
{
    generic_tiles(w, a, y, y_stride, t0, t1, quant_tile_rows);
}

static void gemv_f32act_generic(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                                size_t y_stride, uint32_t t0, uint32_t t1)
{
    generic_tiles(w, a, y, y_stride, t0, t1, f32act_tile_rows);
}

const duet_gemv_ops duet__gemv_generic_ops = {"generic",           gemv_bf16_generic,
                                              gemv_quant_generic,  gemv_quant_generic,
                                              gemv_f32act_generic, gemv_f32act_generic};

/* ---- widening ------------------------------------------------------------------------------- */

/* One lane of one 2-byte tile as f32 into out[0 .. k). */
DUET_CPU_CLONES static void widen_lane(const duet_gemv_weight *w, const uint16_t *words, uint32_t j,
                                       float *out)
{
    uint32_t k = w->k;

    if (w->fmt == DUET_GEMV_F16) {
        for (uint32_t col = 0; col < k; col++)
            out[col] = duet__cpu_f16_to_f32(words[(size_t)col / 2 * 32 + (col & 1u) * TILE + j]);
        return;
    }
    for (uint32_t col = 0; col < k; col++)
        out[col] = duet__cpu_bf16_to_f32(words[(size_t)col / 2 * 32 + 2 * j + (col & 1u)]);
}

void duet__gemv_weight_widen(const duet_gemv_weight *w, uint32_t t0, uint32_t t1, float *out,
                             size_t ld)
{
#pragma omp parallel for schedule(static) if (t1 - t0 > 1)
    for (uint32_t t = t0; t < t1; t++) {
        const uint16_t *words =
            (const uint16_t *)(const void *)((const uint8_t *)w->data + (size_t)t * w->tile_bytes);

        for (uint32_t j = 0; j < TILE; j++)
            widen_lane(w, words, j, out + ((size_t)(t - t0) * TILE + j) * ld);
    }
}

/* ---- run ------------------------------------------------------------------------------------- */

duet_gemv_kernel duet__gemv_ops_kernel(const duet_gemv_ops *ops, duet_gemv_fmt fmt)
{
    switch (fmt) {
    case DUET_GEMV_BF16:
        return ops->bf16;
    case DUET_GEMV_INT8:
        return ops->int8;
    case DUET_GEMV_INT4:
        return ops->int4;
    case DUET_GEMV_BF16_F32:
        return ops->bf16_f32;
    case DUET_GEMV_F16:
        return ops->f16;
    }
    return NULL;
}

const char *duet__gemv_fmt_name(duet_gemv_fmt fmt)
{
    static const char *const names[DUET_GEMV_NUM_FMTS] = {"bf16", "int8", "int4", "bf16_f32",
                                                          "f16"};

    return (unsigned)fmt < DUET_GEMV_NUM_FMTS ? names[fmt] : "unknown";
}

static duet_gemv_kernel kernel_for(const duet_gemv_ops *ops, duet_gemv_fmt fmt)
{
    duet_gemv_kernel k = ops ? duet__gemv_ops_kernel(ops, fmt) : NULL;

    return k ? k : duet__gemv_ops_kernel(&duet__gemv_generic_ops, fmt);
}

static void add_bias(const duet_gemv_weight *w, uint32_t m, float *y, size_t y_stride, uint32_t t0,
                     uint32_t t1)
{
    uint32_t n0 = t0 * TILE, n1 = t1 * TILE < w->n ? t1 * TILE : w->n;

    for (uint32_t r = 0; r < m; r++)
        for (uint32_t i = n0; i < n1; i++)
            y[(size_t)r * y_stride + i] += w->bias[i];
}

void duet__gemv_run(const duet_gemv_ops *ops, const duet_gemv_weight *w, const duet_gemv_act *a,
                    float *y, size_t y_stride)
{
    duet_gemv_kernel kernel = kernel_for(ops, w->fmt);
    uint32_t tiles = w->n_pad / TILE;

    if (a->m == 0)
        return;
#pragma omp parallel
    {
        uint64_t id = 0, nt = 1, t0, t1;

#ifdef _OPENMP
        id = (uint64_t)omp_get_thread_num();
        nt = (uint64_t)omp_get_num_threads();
#endif
        /* contiguous, balanced ranges: thread i gets tiles [i·T/N, (i+1)·T/N) */
        t0 = tiles * id / nt;
        t1 = tiles * (id + 1) / nt;
        if (t0 < t1) {
            kernel(w, a, y, y_stride, (uint32_t)t0, (uint32_t)t1);
            if (w->bias)
                add_bias(w, a->m, y, y_stride, (uint32_t)t0, (uint32_t)t1);
        }
    }
}

/* ---- ISA detection --------------------------------------------------------------------------- */

#if defined(__x86_64__)
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;

    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* AVX2 + FMA + F16C with the OS saving YMM state; *xcr0 is XCR0 when true. */
static bool has_avx2(uint64_t *xcr0)
{
    unsigned a, b, c, d;
    bool fma, f16c;

    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d))
        return false;
    fma = c & (1u << 12);
    f16c = c & (1u << 29);
    if (!(c & (1u << 27)) || !(c & (1u << 28)) || !fma || !f16c) /* OSXSAVE, AVX */
        return false;
    *xcr0 = xgetbv0();
    if ((*xcr0 & 0x6) != 0x6) /* XMM and YMM state */
        return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 5));
}

/* AVX-512 F, BW, VL, VNNI and BF16, with the OS saving opmask and ZMM state. */
static bool has_avx512(uint64_t xcr0)
{
    unsigned a, b, c, d, max_sub;

    if ((xcr0 & 0xe6) != 0xe6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    max_sub = a;
    if (!(b & (1u << 16)) || !(b & (1u << 30)) || !(b & (1u << 31)) || !(c & (1u << 11)))
        return false;
    return max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}
#endif

/* Levels nest: avx512 is only reported where avx2 is too, so lowering always stays supported. An
 * ISA whose file was built without its flags (an old compiler: configure's AVX*_CFLAGS empty) has
 * an empty table and is not supported either. */
bool duet__gemv_isa_supported(duet_gemv_isa isa)
{
#if defined(__x86_64__)
    uint64_t xcr0 = 0;

    switch (isa) {
    case DUET_GEMV_GENERIC:
        return true;
    case DUET_GEMV_AVX2:
        return duet__gemv_avx2_ops.bf16 && has_avx2(&xcr0);
    case DUET_GEMV_AVX512:
        return duet__gemv_avx2_ops.bf16 && duet__gemv_avx512_ops.bf16 && has_avx2(&xcr0) &&
               has_avx512(xcr0);
    }
    return false;
#else
    return isa == DUET_GEMV_GENERIC;
#endif
}

/* $DUET_CPU_ISA = generic | avx2 | avx512 picks that level when this CPU runs it; an unknown
 * value, or a level the CPU lacks, leaves the best one (it never raises the choice). */
duet_gemv_isa duet__gemv_isa_best(void)
{
    static const duet_gemv_isa order[] = {DUET_GEMV_AVX512, DUET_GEMV_AVX2, DUET_GEMV_GENERIC};
    const char *env = getenv("DUET_CPU_ISA");
    duet_gemv_isa best = DUET_GEMV_GENERIC;

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (duet__gemv_isa_supported(order[i])) {
            best = order[i];
            break;
        }
    if (!env)
        return best;
    for (int isa = DUET_GEMV_GENERIC; isa <= (int)best; isa++)
        if (strcmp(env, duet__gemv_isa_name((duet_gemv_isa)isa)) == 0)
            return (duet_gemv_isa)isa;
    return best;
}

const duet_gemv_ops *duet__gemv_ops(duet_gemv_isa isa)
{
    switch (isa) {
    case DUET_GEMV_AVX2:
        return &duet__gemv_avx2_ops;
    case DUET_GEMV_AVX512:
        return &duet__gemv_avx512_ops;
    case DUET_GEMV_GENERIC:
        break;
    }
    return &duet__gemv_generic_ops;
}

const char *duet__gemv_isa_name(duet_gemv_isa isa)
{
    switch (isa) {
    case DUET_GEMV_GENERIC:
        return "generic";
    case DUET_GEMV_AVX2:
        return "avx2";
    case DUET_GEMV_AVX512:
        return "avx512";
    }
    return "unknown";
}
