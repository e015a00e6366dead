/*
 * kernels.c — the CPU worker's hand-written kernels: the paged KV cache, paged attention, the
 * norms, RoPE and the element-wise activations. The GEMMs are in linear.c.
 *
 * The KV pool (cpu_worker-int.h) is num_blocks blocks; inside block b, layer l, kind c (K = 0,
 * V = 1) and kv head h are block_size rows of head_dim elements, one row per slot:
 *
 *   block b ─► layer 0 ─► K ─► head 0 ─► slot 0 [head_dim] slot 1 [head_dim] ... slot bs-1
 *              │          │    head 1 ─► ...
 *              │          V ─► head 0 ─► ...
 *              layer 1 ─► ...
 *
 * so one (layer, kind, head) of one block is a contiguous [block_size][head_dim] tile, the unit
 * attention streams through. Position p of a sequence lives in block block_table[p / block_size],
 * slot p % block_size. bf16 elements are rounded to nearest even when stored and widened to f32
 * when read; attention computes in f32.
 *
 * Attention is one OpenMP region over items handed out one at a time from a shared counter
 * (rows differ in context length; a segment's last row blocks, the longest, go first). An item is
 * a block of up to LANES (row, query head) pairs of one segment and one kv head: the
 * num_heads / num_kv_heads query heads sharing that kv head times LANES / heads consecutive rows
 * (16 rows of llama-68m's one head, 2 rows of TinyLlama's 8). In a segment of two or more rows,
 * an item of LANE_MIN or more pairs (prefill, speculative scoring of groups of 4 or more) puts
 * each query in one lane of a 16-float vector ("prefill attention" below): every K and V row of
 * the block's range is widened once for all of them. Otherwise (decode: one row; small blocks)
 * the item runs row by row: all its query heads together, so every K and V row is read once per
 * row, an online softmax per head (running maximum, running sum, unnormalised output) across tiles
 * of at most ATTN_TILE positions, K and V rows taken ATTN_ROWS at a time (four dot products per
 * pass over q). Both keep all state on the stack, and the softmax's exponentials are a polynomial
 * GCC vectorises. Limits: head_dim ≤ ATTN_MAX_HEAD_DIM (the worker refuses larger models; above
 * LANE_MAX_HEAD_DIM the row-by-row path only); any block size, any context length.
 *
 * Kernels over rows fork an OpenMP team only when the work is large enough to pay for it
 * (PAR_MIN_ELEMS elements); they run on the calling thread's team otherwise.
 */
#include "cpu_worker-int.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* Elements below which an element-wise kernel stays on the calling thread. */
#define PAR_MIN_ELEMS 32768

/* Attention: head_dim limit, positions per tile, and the per-item state on the stack. */
#define ATTN_MAX_HEAD_DIM DUET_CPU_MAX_HEAD_DIM
#define ATTN_TILE 256
#define ATTN_MAX_SUB 16     /* query heads run together at most */
#define ATTN_ACC_ELEMS 4096 /* [sub][head_dim] running outputs */
#define ATTN_ROWS 4         /* K or V rows read together (dot_rows, axpy_rows) */
/* Multiply-adds (rows × context × head_dim × heads) below which attention stays on one thread. */
#define ATTN_PAR_MIN_MACS 65536

/* ---- bf16 and the cache layout --------------------------------------------------------------- */

void duet__cpu_f32_to_bf16_rows(const float *in, uint16_t *out, size_t n)
{
    const float *restrict src = in;
    uint16_t *restrict dst = out;

#pragma omp simd
    for (size_t i = 0; i < n; i++)
        dst[i] = duet__cpu_f32_to_bf16(src[i]);
}

static void bf16_to_f32_row(const uint16_t *restrict in, float *restrict out, uint32_t n)
{
#pragma omp simd
    for (uint32_t i = 0; i < n; i++)
        out[i] = duet__cpu_bf16_to_f32(in[i]);
}

void duet__cpu_kv_layout(duet_cpu_kv *kv, uint32_t block_size, uint32_t num_layers,
                         uint32_t num_kv_heads, uint32_t head_dim, bool bf16)
{
    *kv = (duet_cpu_kv){.block_size = block_size,
                        .num_layers = num_layers,
                        .num_kv_heads = num_kv_heads,
                        .head_dim = head_dim,
                        .bf16 = bf16};
    kv->block_elems = (size_t)num_layers * 2 * num_kv_heads * block_size * head_dim;
    kv->block_bytes = kv->block_elems * (bf16 ? sizeof(uint16_t) : sizeof(float));
}

/* Element offset of slot `slot` of (layer, kind, head) in block `block`. */
static size_t kv_offset(const duet_cpu_kv *kv, uint32_t block, uint32_t layer, uint32_t kind,
                        uint32_t head, uint32_t slot)
{
    size_t tile = ((size_t)layer * 2 + kind) * kv->num_kv_heads + head;

    return block * kv->block_elems + (tile * kv->block_size + slot) * kv->head_dim;
}

/* ---- walking the rows of a batch ------------------------------------------------------------ */

/* Flat row index (segment order, segment rows in order) → segment. Seeks only move forward. */
typedef struct seg_cursor {
    const duet_cpu_seg *segs;
    uint32_t seg; /* current segment */
    size_t first; /* flat index of its first row */
} seg_cursor;

static const duet_cpu_seg *seg_seek(seg_cursor *c, size_t flat, uint32_t *i)
{
    while (flat >= c->first + c->segs[c->seg].n) {
        c->first += c->segs[c->seg].n;
        c->seg++;
    }
    *i = (uint32_t)(flat - c->first);
    return &c->segs[c->seg];
}

static size_t total_rows(const duet_cpu_seg *segs, uint32_t n_segs)
{
    size_t rows = 0;

    for (uint32_t s = 0; s < n_segs; s++)
        rows += segs[s].n;
    return rows;
}

/* ---- the paged KV cache ---------------------------------------------------------------------- */

static void rope_head(float *restrict x, const float *restrict cs, uint32_t half)
{
    const float *restrict c = cs, *restrict s = cs + half;
    float *restrict lo = x, *restrict hi = x + half;

#pragma omp simd
    for (uint32_t i = 0; i < half; i++) {
        float x0 = lo[i], x1 = hi[i];

        lo[i] = x0 * c[i] - x1 * s[i];
        hi[i] = x1 * c[i] + x0 * s[i];
    }
}

static void kv_store(const duet_cpu_kv *kv, size_t off, const float *src)
{
    if (kv->bf16)
        duet__cpu_f32_to_bf16_rows(src, (uint16_t *)kv->base + off, kv->head_dim);
    else
        memcpy((float *)kv->base + off, src, kv->head_dim * sizeof(float));
}

static void kv_write_row(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *seg, uint32_t i,
                         const float *k, const float *v, size_t stride)
{
    uint32_t pos = seg->pos + i;
    uint32_t block = seg->block_table[pos / kv->block_size];
    uint32_t slot = pos % kv->block_size;
    size_t row = (size_t)(seg->row0 + i) * stride;

    for (uint32_t h = 0; h < kv->num_kv_heads; h++) {
        size_t col = (size_t)h * kv->head_dim;

        kv_store(kv, kv_offset(kv, block, layer, 0, h, slot), k + row + col);
        kv_store(kv, kv_offset(kv, block, layer, 1, h, slot), v + row + col);
    }
}

void duet__cpu_kv_write(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                        uint32_t n_segs, const float *k, const float *v, size_t stride)
{
    size_t rows = total_rows(segs, n_segs);
    size_t elems = rows * kv->num_kv_heads * kv->head_dim * 2;

#pragma omp parallel if (elems >= PAR_MIN_ELEMS)
    {
        size_t nthr = (size_t)omp_get_num_threads(), tid = (size_t)omp_get_thread_num();
        size_t lo = rows * tid / nthr, hi = rows * (tid + 1) / nthr;
        seg_cursor c = {.segs = segs};

        for (size_t r = lo; r < hi; r++) {
            uint32_t i;
            const duet_cpu_seg *seg = seg_seek(&c, r, &i);

            kv_write_row(kv, layer, seg, i, k, v, stride);
        }
    }
}

void duet__cpu_rope_kv_write(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                             uint32_t n_segs, float *qkv, size_t stride, uint32_t num_heads,
                             const float *cos_sin)
{
    size_t rows = total_rows(segs, n_segs);
    size_t elems = rows * (num_heads + 2 * (size_t)kv->num_kv_heads) * kv->head_dim;
    uint32_t hd = kv->head_dim, heads = num_heads + kv->num_kv_heads;
    float *k = qkv + (size_t)num_heads * hd, *v = k + (size_t)kv->num_kv_heads * hd;

#pragma omp parallel if (elems >= PAR_MIN_ELEMS)
    {
        size_t nthr = (size_t)omp_get_num_threads(), tid = (size_t)omp_get_thread_num();
        size_t lo = rows * tid / nthr, hi = rows * (tid + 1) / nthr;
        seg_cursor c = {.segs = segs};

        for (size_t r = lo; r < hi; r++) {
            uint32_t i;
            const duet_cpu_seg *seg = seg_seek(&c, r, &i);

            for (uint32_t h = 0; h < heads; h++) /* q then k heads, back to back */
                rope_head(qkv + r * stride + (size_t)h * hd, cos_sin + r * hd, hd / 2);
            kv_write_row(kv, layer, seg, i, k, v, stride);
        }
    }
}

void duet__cpu_kv_copy_block(const duet_cpu_kv *from, uint32_t src, const duet_cpu_kv *to,
                             uint32_t dst)
{
    assert(from->block_bytes == to->block_bytes && src < from->num_blocks && dst < to->num_blocks);
    memcpy((char *)to->base + (size_t)dst * to->block_bytes,
           (const char *)from->base + (size_t)src * from->block_bytes, from->block_bytes);
}

/* ---- paged attention ------------------------------------------------------------------------ */

typedef struct attn_args {
    const duet_cpu_kv *kv;
    uint32_t layer;
    uint32_t group; /* query heads per kv head */
    uint32_t sub;   /* query heads run together (≤ ATTN_MAX_SUB) */
    float scale;
    const float *q; /* row r, head h at q + r × q_stride + h × head_dim */
    size_t q_stride;
    float *out; /* likewise */
    size_t out_stride;
} attn_args;

/* Online-softmax state of up to ATTN_MAX_SUB query heads of one row. */
typedef struct attn_state {
    const float *q[ATTN_MAX_SUB];             /* [head_dim] each */
    float max[ATTN_MAX_SUB];                  /* running maximum of the scores */
    float sum[ATTN_MAX_SUB];                  /* running Σ exp(score − max) */
    float acc[ATTN_ACC_ELEMS];                /* [sub][head_dim] Σ exp(score − max) × v */
    float p[ATTN_MAX_SUB][ATTN_TILE];         /* the tile's scores, then their weights */
    float rows[ATTN_ROWS][ATTN_MAX_HEAD_DIM]; /* bf16 K or V rows widened to f32 */
} attn_state;

/* out[r] = q·k[r] for ATTN_ROWS rows at once: q is read once, and four sums hide the latency. */
static void dot_rows(const float *restrict q, const float *const k[ATTN_ROWS], uint32_t n,
                     float *restrict out)
{
    const float *restrict k0 = k[0], *restrict k1 = k[1], *restrict k2 = k[2], *restrict k3 = k[3];
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;

#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (uint32_t i = 0; i < n; i++) {
        s0 += q[i] * k0[i];
        s1 += q[i] * k1[i];
        s2 += q[i] * k2[i];
        s3 += q[i] * k3[i];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* y += Σ_r a[r] × v[r] over ATTN_ROWS rows: y is loaded and stored once per four rows. */
static void axpy_rows(float *restrict y, const float *restrict a, const float *const v[ATTN_ROWS],
                      uint32_t n)
{
    const float *restrict v0 = v[0], *restrict v1 = v[1], *restrict v2 = v[2], *restrict v3 = v[3];
    float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];

#pragma omp simd
    for (uint32_t i = 0; i < n; i++)
        y[i] += a0 * v0[i] + a1 * v1[i] + a2 * v2[i] + a3 * v3[i];
}

static void scale_row(float *restrict y, float a, uint32_t n)
{
#pragma omp simd
    for (uint32_t i = 0; i < n; i++)
        y[i] *= a;
}

/*
 * e^x for x ≤ 0 (Cephes' expf: 2^n × e^r with n = round(x / ln 2), a degree-7 polynomial for
 * e^r; relative error below 2e-7), written so that GCC vectorises a loop of it. Below −87 it
 * returns e^−87 (a weight of 1.6e-38 beside the maximum's 1); NaN stays NaN.
 */
static inline float exp_nonpositive(float x)
{
    const float round = 12582912.0f; /* 1.5 × 2²³: adding it rounds to an integer */
    union {
        float f;
        uint32_t u;
    } m, scale;
    float n, r, y;

    x = x < -87.0f ? -87.0f : x;
    m.f = x * 1.44269504088896341f + round;
    n = m.f - round;
    r = x - n * 0.693359375f - n * -2.12194440e-4f;
    y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    scale.u = (m.u - 0x4b400000u + 127u) << 23; /* 2^n: n sits in m's low mantissa bits */
    return y * scale.f;
}

/* Rows slot .. slot + n − 1 (n ≤ ATTN_ROWS) of a K or V tile as f32, in place for an f32 cache,
 * widened into st->rows for bf16; rows past n repeat the last (their results are not used). */
static void kv_rows(const duet_cpu_kv *kv, size_t tile_off, uint32_t slot, uint32_t n,
                    attn_state *st, const float *rows[ATTN_ROWS])
{
    for (uint32_t r = 0; r < ATTN_ROWS; r++) {
        size_t off = tile_off + (size_t)(slot + (r < n ? r : n - 1)) * kv->head_dim;

        if (!kv->bf16) {
            rows[r] = (const float *)kv->base + off;
        } else if (r < n) {
            bf16_to_f32_row((const uint16_t *)kv->base + off, st->rows[r], kv->head_dim);
            rows[r] = st->rows[r];
        } else {
            rows[r] = rows[n - 1];
        }
    }
}

/* Scores of nt positions (from slot0 of one block) for the nh heads: p[j][t] = scale × q_j·k_t. */
static void tile_scores(const attn_args *a, attn_state *st, uint32_t nh, size_t k_off,
                        uint32_t slot0, uint32_t nt)
{
    uint32_t d = a->kv->head_dim;

    for (uint32_t t = 0; t < nt; t += ATTN_ROWS) {
        uint32_t n = nt - t < ATTN_ROWS ? nt - t : ATTN_ROWS;
        const float *k[ATTN_ROWS];
        float s[ATTN_ROWS];

        kv_rows(a->kv, k_off, slot0 + t, n, st, k);
        for (uint32_t j = 0; j < nh; j++) {
            dot_rows(st->q[j], k, d, s);
            for (uint32_t r = 0; r < n; r++)
                st->p[j][t + r] = a->scale * s[r];
        }
    }
}

/* Turns head j's scores into weights against the new running maximum, rescaling its state. */
static void tile_softmax(attn_state *st, uint32_t j, uint32_t nt, uint32_t d)
{
    float *restrict p = st->p[j];
    float max = st->max[j], sum = 0.0f;

    for (uint32_t t = 0; t < nt; t++)
        max = p[t] > max ? p[t] : max;
#pragma omp simd reduction(+ : sum)
    for (uint32_t t = 0; t < nt; t++) {
        p[t] = exp_nonpositive(p[t] - max);
        sum += p[t];
    }
    if (max != st->max[j]) {
        float c = expf(st->max[j] - max);

        st->sum[j] *= c;
        scale_row(st->acc + (size_t)j * d, c, d);
        st->max[j] = max;
    }
    st->sum[j] += sum;
}

static void tile_values(const attn_args *a, attn_state *st, uint32_t nh, size_t v_off,
                        uint32_t slot0, uint32_t nt)
{
    uint32_t d = a->kv->head_dim;

    for (uint32_t t = 0; t < nt; t += ATTN_ROWS) {
        uint32_t n = nt - t < ATTN_ROWS ? nt - t : ATTN_ROWS;
        const float *v[ATTN_ROWS];

        kv_rows(a->kv, v_off, slot0 + t, n, st, v);
        for (uint32_t j = 0; j < nh; j++) {
            float w[ATTN_ROWS] = {0.0f, 0.0f, 0.0f, 0.0f};

            for (uint32_t r = 0; r < n; r++)
                w[r] = st->p[j][t + r];
            axpy_rows(st->acc + (size_t)j * d, w, v, d);
        }
    }
}

/* Query heads h0 .. h0 + nh − 1 (kv head g) of batch row `row`, over positions 0 .. ctx − 1
 * (the last kv->window of them with a sliding window). */
static void attend_heads(const attn_args *a, attn_state *st, const uint32_t *block_table,
                         uint32_t ctx, uint32_t row, uint32_t g, uint32_t h0, uint32_t nh)
{
    const duet_cpu_kv *kv = a->kv;
    uint32_t d = kv->head_dim, bs = kv->block_size;

    for (uint32_t j = 0; j < nh; j++) {
        st->q[j] = a->q + (size_t)row * a->q_stride + (size_t)(h0 + j) * d;
        st->max[j] = -INFINITY;
        st->sum[j] = 0.0f;
    }
    memset(st->acc, 0, (size_t)nh * d * sizeof(float));
    for (uint32_t pos = kv->window && ctx > kv->window ? ctx - kv->window : 0; pos < ctx;) {
        uint32_t block = block_table[pos / bs], slot0 = pos % bs;
        uint32_t nt = bs - slot0;

        if (nt > ATTN_TILE)
            nt = ATTN_TILE;
        if (nt > ctx - pos)
            nt = ctx - pos;
        tile_scores(a, st, nh, kv_offset(kv, block, a->layer, 0, g, 0), slot0, nt);
        for (uint32_t j = 0; j < nh; j++)
            tile_softmax(st, j, nt, d);
        tile_values(a, st, nh, kv_offset(kv, block, a->layer, 1, g, 0), slot0, nt);
        pos += nt;
    }
    for (uint32_t j = 0; j < nh; j++) {
        float *out = a->out + (size_t)row * a->out_stride + (size_t)(h0 + j) * d;
        const float *acc = st->acc + (size_t)j * d;
        float inv = 1.0f / st->sum[j];

#pragma omp simd
        for (uint32_t i = 0; i < d; i++)
            out[i] = acc[i] * inv;
    }
}

/* Query heads h0 .. h0 + nh − 1 (of kv head g) for row i of seg, a->sub of them at a time
 * (cloned per ISA: measured 7 % more llama-68m prefill tokens/s, attention's share of a profile
 * down by a third). */
DUET_CPU_CLONES
static void attend_item(const attn_args *a, const duet_cpu_seg *seg, uint32_t i, uint32_t g,
                        uint32_t h0, uint32_t nh)
{
    attn_state st;
    uint32_t ctx = seg->pos + i + 1, row = seg->row0 + i;

    for (uint32_t h = 0; h < nh; h += a->sub) {
        uint32_t n = nh - h < a->sub ? nh - h : a->sub;

        attend_heads(a, &st, seg->block_table, ctx, row, g, h0 + h, n);
    }
}

/* ---- prefill attention: query rows in the SIMD lanes ----------------------------------------- */

/*
 * A block of query vectors — up to LANES (row, head) pairs of one segment and one kv head: the
 * group's query heads times consecutive rows — runs as one item with each query vector in one
 * lane of a 16-float vector. A K row, widened once, scores every lane with head_dim broadcast
 * FMAs (no horizontal sums); the softmax's running maximum and sum are vectors over the lanes;
 * the output is kept transposed, ot[e] = the lanes' element e, and each V row's elements are
 * broadcast against the lanes' weights. The causal limit and the sliding window are per lane
 * masks over the positions of the block's widest range (lanes whose rows start later skip the
 * first positions by a weight of exactly 0). GCC's vector extension lowers the 16 lanes to one
 * zmm (AVX-512), two ymm (AVX2) or four xmm per operation in each clone.
 */
#define LANES 16
#define LANE_MIN 8            /* query vectors below which an item takes the per-row path */
#define LANE_MAX_HEAD_DIM 256 /* larger heads take the per-row path */
#define LANE_TILE 128         /* positions per tile at most */
#define LANE_KV_ELEMS 8192    /* widened K or V rows of a tile: [tile][head_dim] */
#define LANE_POS 4            /* positions scored together */
#define LANE_SPLIT 4          /* partial sums per score (lane_scores adds four) */
#define LANE_COLS 8           /* output elements accumulated together */

/* The helpers below pass vectors by value; they are static and inlined (flatten), so the ABI
 * note GCC gives for 64-byte vectors outside an AVX-512 clone does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float lane_f __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t lane_i __attribute__((vector_size(LANES * sizeof(int32_t))));

typedef struct lane_state {
    lane_f qt[LANE_MAX_HEAD_DIM]; /* [head_dim] lanes: the queries, transposed */
    lane_f ot[LANE_MAX_HEAD_DIM]; /* [head_dim] lanes: Σ exp(score − max) × v, transposed */
    lane_f p[LANE_TILE];          /* [position] lanes: a tile's scores, then their weights */
    lane_f max, sum;              /* running maximum and Σ exp(score − max) per lane */
    lane_f scale;                 /* the softmax scale, every lane */
    lane_i lo, hi;                /* lane reads positions lo .. hi − 1 */
    float k[LANE_KV_ELEMS];       /* bf16 K rows of a tile widened, [position][head_dim] */
    float v[LANE_KV_ELEMS];       /* the same for V */
    uint32_t row[LANES], head[LANES], n; /* each used lane's batch row and query head */
} lane_state;

static inline lane_f lane_splat(float s)
{
    return (lane_f){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
}

static inline lane_f lane_select(lane_i mask, lane_f a, lane_f b)
{
    return (lane_f)(((lane_i)a & mask) | ((lane_i)b & ~mask));
}

static inline lane_f lane_max(lane_f a, lane_f b)
{
    return lane_select(a > b, a, b);
}

/* exp_nonpositive over the lanes; −∞ (a masked score) gives exactly 0. */
static inline lane_f lane_exp(lane_f x)
{
    const lane_f round = lane_splat(12582912.0f);
    lane_i live = x > lane_splat(-INFINITY);
    lane_f m, n, r, y;

    x = lane_max(x, lane_splat(-87.0f));
    m = x * 1.44269504088896341f + round;
    n = m - round;
    r = x - n * 0.693359375f - n * -2.12194440e-4f;
    y = lane_splat(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    y *= (lane_f)(((lane_i)m - 0x4b400000 + 127) << 23);
    return (lane_f)((lane_i)y & live);
}

/* nt rows of a K or V tile from slot0 as f32 [nt][head_dim]: in place, or widened into buf. */
static const float *lane_rows(const duet_cpu_kv *kv, size_t tile_off, uint32_t slot0, uint32_t nt,
                              float *buf)
{
    size_t off = tile_off + (size_t)slot0 * kv->head_dim;

    if (!kv->bf16)
        return (const float *)kv->base + off;
    bf16_to_f32_row((const uint16_t *)kv->base + off, buf, nt * kv->head_dim);
    return buf;
}

/* p[t] = the lanes' scores of positions pos0 + t, −∞ outside each lane's range. Each score sums
 * LANE_SPLIT interleaved partial sums over head_dim, as the per-row path's vector reduction
 * does, rather than one running sum (head_dim roundings deep). */
static void lane_scores(lane_state *st, const float *k, uint32_t d, uint32_t pos0, uint32_t nt)
{
    for (uint32_t t = 0; t < nt; t += LANE_POS) {
        const float *kr[LANE_POS];
        lane_f s[LANE_POS][LANE_SPLIT];
        uint32_t e = 0;

        for (uint32_t j = 0; j < LANE_POS; j++) {
            kr[j] = k + (size_t)(t + j < nt ? t + j : nt - 1) * d;
            for (uint32_t c = 0; c < LANE_SPLIT; c++)
                s[j][c] = lane_splat(0.0f);
        }
        for (; e + LANE_SPLIT <= d; e += LANE_SPLIT)
            for (uint32_t c = 0; c < LANE_SPLIT; c++) {
                lane_f q = st->qt[e + c];

                for (uint32_t j = 0; j < LANE_POS; j++)
                    s[j][c] += q * kr[j][e + c];
            }
        for (; e < d; e++)
            for (uint32_t j = 0; j < LANE_POS; j++)
                s[j][0] += st->qt[e] * kr[j][e];
        for (uint32_t j = 0; j < LANE_POS && t + j < nt; j++) {
            int32_t pos = (int32_t)(pos0 + t + j);
            lane_i in = (st->lo <= pos) & (st->hi > pos);
            lane_f sum = (s[j][0] + s[j][1]) + (s[j][2] + s[j][3]);

            st->p[t + j] = lane_select(in, sum * st->scale, lane_splat(-INFINITY));
        }
    }
}

/* Scores to weights against the new running maximum, rescaling the lanes' state. */
static void lane_softmax(lane_state *st, uint32_t nt, uint32_t d)
{
    lane_f max = st->max, sum = lane_splat(0.0f), c;

    for (uint32_t t = 0; t < nt; t++)
        max = lane_max(max, st->p[t]);
    for (uint32_t t = 0; t < nt; t++) {
        st->p[t] = lane_exp(st->p[t] - max);
        sum += st->p[t];
    }
    /* a lane without a position so far keeps max −∞: its factor is 1, not e^(−∞ + ∞) */
    c = lane_select(max == st->max, lane_splat(1.0f), lane_exp(st->max - max));
    for (uint32_t e = 0; e < d; e++)
        st->ot[e] *= c;
    st->sum = st->sum * c + sum;
    st->max = max;
}

/* ot[e] += Σ_t p[t] × v[t][e], LANE_COLS elements at a time. */
static void lane_values(lane_state *st, const float *v, uint32_t d, uint32_t nt)
{
    uint32_t e0 = 0;

    for (; e0 + LANE_COLS <= d; e0 += LANE_COLS) {
        lane_f acc[LANE_COLS];

        for (uint32_t j = 0; j < LANE_COLS; j++)
            acc[j] = st->ot[e0 + j];
        for (uint32_t t = 0; t < nt; t++) {
            const float *vr = v + (size_t)t * d + e0;
            lane_f p = st->p[t];

            for (uint32_t j = 0; j < LANE_COLS; j++)
                acc[j] += p * vr[j];
        }
        for (uint32_t j = 0; j < LANE_COLS; j++)
            st->ot[e0 + j] = acc[j];
    }
    for (; e0 < d; e0++)
        for (uint32_t t = 0; t < nt; t++)
            st->ot[e0] += st->p[t] * v[(size_t)t * d + e0];
}

/* Lanes ← rows i0 .. i0 + nr − 1 of seg × query heads h0 .. h0 + nh − 1; unused lanes copy lane
 * 0's range with a zero query. Returns the positions the lanes read, [*lo, *hi). */
static void lane_load(const attn_args *a, lane_state *st, const duet_cpu_seg *seg, uint32_t i0,
                      uint32_t nr, uint32_t h0, uint32_t nh, uint32_t *lo, uint32_t *hi)
{
    uint32_t d = a->kv->head_dim, w = a->kv->window;

    memset(st->qt, 0, d * sizeof(lane_f));
    memset(st->ot, 0, d * sizeof(lane_f));
    st->n = nr * nh;
    for (uint32_t l = 0; l < LANES; l++) {
        uint32_t ll = l < st->n ? l : 0, ctx = seg->pos + i0 + ll / nh + 1;

        st->row[l] = seg->row0 + i0 + ll / nh;
        st->head[l] = h0 + ll % nh;
        st->hi[l] = (int32_t)ctx;
        st->lo[l] = (int32_t)(w && ctx > w ? ctx - w : 0);
    }
    for (uint32_t l = 0; l < st->n; l++) {
        const float *q = a->q + (size_t)st->row[l] * a->q_stride + (size_t)st->head[l] * d;

        for (uint32_t e = 0; e < d; e++)
            st->qt[e][l] = q[e];
    }
    st->max = lane_splat(-INFINITY);
    st->scale = lane_splat(a->scale);
    st->sum = lane_splat(0.0f);
    *lo = (uint32_t)st->lo[0];
    *hi = (uint32_t)st->hi[st->n - 1];
}

/* One lane item: rows i0 .. i0 + nr − 1 of seg, query heads h0 .. h0 + nh − 1 of kv head g. */
DUET_CPU_CLONES
static void attend_lanes(const attn_args *a, const duet_cpu_seg *seg, uint32_t i0, uint32_t nr,
                         uint32_t g, uint32_t h0, uint32_t nh)
{
    const duet_cpu_kv *kv = a->kv;
    uint32_t d = kv->head_dim, bs = kv->block_size, lo, hi;
    uint32_t tile = LANE_KV_ELEMS / d < LANE_TILE ? LANE_KV_ELEMS / d : LANE_TILE;
    lane_state st;

    lane_load(a, &st, seg, i0, nr, h0, nh, &lo, &hi);
    for (uint32_t pos = lo; pos < hi;) {
        uint32_t block = seg->block_table[pos / bs], slot0 = pos % bs, nt = bs - slot0;

        nt = nt < tile ? nt : tile;
        nt = nt < hi - pos ? nt : hi - pos;
        lane_scores(&st, lane_rows(kv, kv_offset(kv, block, a->layer, 0, g, 0), slot0, nt, st.k), d,
                    pos, nt);
        lane_softmax(&st, nt, d);
        lane_values(&st, lane_rows(kv, kv_offset(kv, block, a->layer, 1, g, 0), slot0, nt, st.v), d,
                    nt);
        pos += nt;
    }
    for (uint32_t l = 0; l < st.n; l++) {
        float *out = a->out + (size_t)st.row[l] * a->out_stride + (size_t)st.head[l] * d;
        float inv = 1.0f / st.sum[l];

        for (uint32_t e = 0; e < d; e++)
            out[e] = st.ot[e][l] * inv;
    }
}

/* How the (row, query head) pairs of a segment and kv head are cut into items: blocks of `rows`
 * rows × `heads` query heads (rows × heads ≤ LANES), `subs` head blocks per kv head. */
typedef struct attn_plan {
    uint32_t rows, heads, subs;
} attn_plan;

static size_t seg_items(const attn_plan *pl, const duet_cpu_seg *seg, uint32_t kvh)
{
    return (size_t)(seg->n + pl->rows - 1) / pl->rows * kvh * pl->subs;
}

/* Item k of seg: the row blocks from the last (the longest contexts first, for balance). */
static void run_item(const attn_args *a, const attn_plan *pl, const duet_cpu_seg *seg, size_t k)
{
    uint32_t kvh = a->kv->num_kv_heads, per = kvh * pl->subs;
    uint32_t blocks = (seg->n + pl->rows - 1) / pl->rows, blk = blocks - 1 - (uint32_t)(k / per);
    uint32_t g = (uint32_t)(k % per) / pl->subs, hs = (uint32_t)(k % per) % pl->subs;
    uint32_t i0 = blk * pl->rows, nr = seg->n - i0 < pl->rows ? seg->n - i0 : pl->rows;
    uint32_t h0 = g * a->group + hs * pl->heads;
    uint32_t nh = a->group - hs * pl->heads < pl->heads ? a->group - hs * pl->heads : pl->heads;

    if (seg->n >= 2 && nr * nh >= LANE_MIN && a->kv->head_dim <= LANE_MAX_HEAD_DIM) {
        attend_lanes(a, seg, i0, nr, g, h0, nh);
        return;
    }
    for (uint32_t r = 0; r < nr; r++)
        attend_item(a, seg, i0 + r, g, h0, nh);
}

static size_t attention_macs(const duet_cpu_seg *segs, uint32_t n_segs, size_t per_position)
{
    size_t positions = 0;

    for (uint32_t s = 0; s < n_segs; s++)
        positions += (size_t)segs[s].n * segs[s].pos + (size_t)segs[s].n * (segs[s].n + 1) / 2;
    return positions * per_position;
}

void duet__cpu_attention(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                         uint32_t n_segs, uint32_t num_heads, float scale, const float *q,
                         size_t q_stride, float *out, size_t out_stride)
{
    uint32_t kvh = kv->num_kv_heads, d = kv->head_dim;
    size_t items = 0, next = 0;
    size_t macs = attention_macs(segs, n_segs, (size_t)num_heads * d * 2);
    attn_plan pl;
    attn_args a;

    assert(kvh > 0 && num_heads % kvh == 0 && d > 0 && d <= ATTN_MAX_HEAD_DIM);
    a = (attn_args){.kv = kv,
                    .layer = layer,
                    .group = num_heads / kvh,
                    .sub = ATTN_ACC_ELEMS / d < ATTN_MAX_SUB ? ATTN_ACC_ELEMS / d : ATTN_MAX_SUB,
                    .scale = scale,
                    .q = q,
                    .q_stride = q_stride,
                    .out = out,
                    .out_stride = out_stride};
    pl.heads = a.group < LANES ? a.group : LANES;
    pl.rows = LANES / pl.heads;
    pl.subs = (a.group + pl.heads - 1) / pl.heads;
    for (uint32_t s = 0; s < n_segs; s++)
        items += seg_items(&pl, &segs[s], kvh);
#pragma omp parallel if (items > 1 && macs >= ATTN_PAR_MIN_MACS)
    {
        uint32_t seg = 0;
        size_t first = 0, id;

        for (;;) {
#pragma omp atomic capture
            id = next++;
            if (id >= items)
                break;
            while (id >= first + seg_items(&pl, &segs[seg], kvh))
                first += seg_items(&pl, &segs[seg++], kvh);
            run_item(&a, &pl, &segs[seg], id - first);
        }
    }
}

/* ---- norms ----------------------------------------------------------------------------------- */

static void rmsnorm_row(const float *x, const float *restrict w, float eps, float *y, uint32_t dim)
{
    double ss = 0.0;
    float r;

#pragma omp simd reduction(+ : ss)
    for (uint32_t i = 0; i < dim; i++)
        ss += (double)x[i] * x[i];
    r = (float)(1.0 / sqrt(ss / dim + eps));
    /* y may be x: each element is read before it is written, in the same iteration. */
#pragma omp simd
    for (uint32_t i = 0; i < dim; i++)
        y[i] = x[i] * r * w[i];
}

void duet__cpu_rmsnorm(const float *x, size_t x_stride, const float *w, float eps, float *y,
                       size_t y_stride, uint32_t n_rows, uint32_t dim)
{
#pragma omp parallel for if ((size_t)n_rows * dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++)
        rmsnorm_row(x + r * x_stride, w, eps, y + r * y_stride, dim);
}

void duet__cpu_head_rmsnorm(float *x, size_t stride, uint32_t n_rows, uint32_t n_heads,
                            uint32_t head_dim, const float *w, float eps)
{
#pragma omp parallel for if ((size_t)n_rows * n_heads * head_dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++)
        for (uint32_t h = 0; h < n_heads; h++) {
            float *head = x + r * stride + (size_t)h * head_dim;

            rmsnorm_row(head, w, eps, head, head_dim);
        }
}

static void layernorm_row(const float *x, const float *restrict w, const float *restrict b,
                          float eps, float *y, uint32_t dim)
{
    double sum = 0.0, var = 0.0, mean, r;

#pragma omp simd reduction(+ : sum)
    for (uint32_t i = 0; i < dim; i++)
        sum += x[i];
    mean = sum / dim;
    /* Two passes, centred in double: rows far from zero mean keep their digits. */
#pragma omp simd reduction(+ : var)
    for (uint32_t i = 0; i < dim; i++)
        var += (x[i] - mean) * (x[i] - mean);
    r = 1.0 / sqrt(var / dim + eps);
#pragma omp simd
    for (uint32_t i = 0; i < dim; i++)
        y[i] = (float)((x[i] - mean) * r) * w[i] + b[i];
}

void duet__cpu_layernorm(const float *x, size_t x_stride, const float *w, const float *b, float eps,
                         float *y, size_t y_stride, uint32_t n_rows, uint32_t dim)
{
#pragma omp parallel for if ((size_t)n_rows * dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++)
        layernorm_row(x + r * x_stride, w, b, eps, y + r * y_stride, dim);
}

/* ---- RoPE ------------------------------------------------------------------------------------ */

void duet__cpu_rope(float *x, size_t stride, uint32_t n_rows, uint32_t n_heads, uint32_t head_dim,
                    const float *cos_sin)
{
#pragma omp parallel for if ((size_t)n_rows * n_heads * head_dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++)
        for (uint32_t h = 0; h < n_heads; h++)
            rope_head(x + r * stride + (size_t)h * head_dim, cos_sin + (size_t)r * head_dim,
                      head_dim / 2);
}

void duet__cpu_rope_angles(const double *inv_freq, uint32_t head_dim, const uint32_t *pos,
                           uint32_t n, float *cos_sin)
{
    uint32_t half = head_dim / 2;

    for (uint32_t r = 0; r < n; r++) {
        float *cs = cos_sin + (size_t)r * head_dim;

        for (uint32_t i = 0; i < half; i++) {
            double angle = (double)pos[r] * inv_freq[i];

            cs[i] = (float)cos(angle);
            cs[half + i] = (float)sin(angle);
        }
    }
}

/* ---- activations ----------------------------------------------------------------------------- */

/* silu(g) × u with the sigmoid from exp_nonpositive of −|g| (e = e^−|g|: σ = 1 / (1 + e) for
 * g ≥ 0, e / (1 + e) below), a loop GCC vectorises instead of a libm expf call per element. */
DUET_CPU_CLONES
static void silu_mul_row(const float *restrict gu, float *restrict out, uint32_t inter)
{
    const float *restrict up = gu + inter;

#pragma omp simd
    for (uint32_t i = 0; i < inter; i++) {
        float g = gu[i], e = exp_nonpositive(g < 0.0f ? g : -g), r = 1.0f / (1.0f + e);

        out[i] = g * (g < 0.0f ? e * r : r) * up[i];
    }
}

void duet__cpu_silu_mul(const float *gu, size_t gu_stride, float *out, size_t out_stride,
                        uint32_t n_rows, uint32_t inter)
{
#pragma omp parallel for if ((size_t)n_rows * inter >= PAR_MIN_ELEMS / 4) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++)
        silu_mul_row(gu + r * gu_stride, out + r * out_stride, inter);
}

void duet__cpu_relu(float *x, size_t stride, uint32_t n_rows, uint32_t dim)
{
#pragma omp parallel for if ((size_t)n_rows * dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++) {
        float *restrict row = x + r * stride;

#pragma omp simd
        for (uint32_t i = 0; i < dim; i++)
            row[i] = row[i] > 0.0f ? row[i] : 0.0f;
    }
}

void duet__cpu_add(float *y, size_t y_stride, const float *x, size_t x_stride, uint32_t n_rows,
                   uint32_t dim)
{
#pragma omp parallel for if ((size_t)n_rows * dim >= PAR_MIN_ELEMS) schedule(static)
    for (uint32_t r = 0; r < n_rows; r++) {
        float *restrict yr = y + r * y_stride;
        const float *restrict xr = x + r * x_stride;

#pragma omp simd
        for (uint32_t i = 0; i < dim; i++)
            yr[i] += xr[i];
    }
}
