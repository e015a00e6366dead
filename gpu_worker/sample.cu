/*
 * The sampler on the device: the CPU sampler's semantics (sampling/sampling.h) for a batch of
 * rows of logits, one CUDA block per row, in double precision where the CPU sampler uses double.
 *
 *   logits [n][V] ─► prepare: key = logit (NaN → -inf, -0 → +0), id ─► keys_in, ids_in
 *                        │        segment of row i: [i·V, (i+1)·V) when it needs the order,
 *                        │        else empty
 *                        ▼
 *        cub::DeviceSegmentedRadixSort::SortPairsDescending (stable: ids ascend on ties)
 *                        │
 *                        ▼   keys_out, ids_out: each row most likely first
 *   sample_kernel, one block per row:
 *        a SAMPLE | FINITE row with a non-finite logit: DUET_TOKEN_NONFINITE, nothing sampled
 *        argmax and log-softmax norm ─► top-n (a prefix of the order), next_logprob
 *        SAMPLE: w = exp((key - max) / T) ─► top-k, top-p, min-p: each the length of a prefix
 *                ─► probs[id] = w / sum w (zeros elsewhere) ─► u ─► scan in id order ─► token
 *
 * Every filter keeps a prefix of the sorted order, so each cut is "the first position j where
 * the filter's test fails", found by a block-wide minimum, or for top-p by a block-wide scan of
 * the weights (the mass before j) carried across chunks of the row. The draw scans the written
 * probabilities in id order, as duet__sample_from_probs walks them; only the order of the double
 * additions differs from the CPU, so a token can differ only where u lands within rounding of a
 * boundary of the cumulative distribution.
 *
 * Scratch (keys and ids in and out, segment offsets, CUB's temporary storage) belongs to the
 * sampler and grows on demand: a call works through its rows at most chunk_rows at a time, so it
 * never exceeds chunk_rows × V of each array. After the sort, keys_in is free and serves as the
 * probability row of rows whose caller did not ask for probs. Growing synchronises the stream
 * before it frees the old buffers. A sampler serves one stream at a time.
 */
#include "gpu_worker-int.h"
#include "sampling.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Threads of a sample_kernel block (one block per row). */
#define THREADS 256
/* Rows sorted and sampled by one pass of a call (fewer when chunk_rows × vocab would overflow
 * CUB's int offsets). */
#define CHUNK_ROWS 128u
/* Threads of a prepare_kernel block, and its most blocks (it loops over the rest). */
#define PREPARE_THREADS 256u
#define PREPARE_MAX_BLOCKS 4096u

struct duet_gpu_sampler {
    uint32_t vocab;      /* entries per row */
    uint32_t chunk_rows; /* rows per pass: min(CHUNK_ROWS, INT32_MAX / vocab) */
    uint32_t cap_rows;   /* rows the arrays below hold (0: none allocated) */
    float *keys_in;      /* [cap_rows][vocab] sort keys; after the sort, probs rows */
    float *keys_out;     /* [cap_rows][vocab] keys of each row, largest first */
    int32_t *ids_in;     /* [cap_rows][vocab] token ids 0 .. vocab - 1 per row */
    int32_t *ids_out;    /* [cap_rows][vocab] ids in the order of keys_out */
    int *seg_begin;      /* [cap_rows] element offset of row i's segment */
    int *seg_end;        /* [cap_rows] its end (= begin: empty, the row needs no order) */
    void *temp;          /* CUB's temporary storage */
    size_t temp_bytes;   /* its size */
};

/* ------------------------------------------------------------------------------------------ */
/* What a row needs, decided the same way on the host (planning) and on the device            */
/* ------------------------------------------------------------------------------------------ */

static inline __host__ __device__ bool row_is_greedy(const duet_gpu_sample_row *r)
{
    return !(r->temperature >= DUET_SAMPLING_EPS); /* NaN too */
}

/* The row writes its top entries (n_top of them, then token -1). */
static inline __host__ __device__ bool row_writes_top(const duet_gpu_sample_row *r,
                                                      const duet_gpu_sample_out *o)
{
    return (r->mode & (DUET_GPU_ROW_SAMPLE | DUET_GPU_ROW_SCORE)) && o->top && o->max_top > 0;
}

/* The row reads its sorted order: a filtered draw or a top-n. */
static inline __host__ __device__ bool row_needs_sort(const duet_gpu_sample_row *r,
                                                      const duet_gpu_sample_out *o)
{
    return ((r->mode & DUET_GPU_ROW_SAMPLE) && !row_is_greedy(r)) ||
           (row_writes_top(r, o) && r->n_top > 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Keys                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The sort key of a logit: NaN counts as -inf; -0 becomes +0 so that the radix order and the
 * CPU's comparisons agree on what ties. */
static inline __device__ float sort_key(float x)
{
    return isnan(x) ? -INFINITY : x == 0.0f ? 0.0f : x;
}

/* keys[e] = sort_key(logits[e]), ids[e] = e mod vocab over rows × vocab elements, and each row's
 * segment for the sort (empty when the row needs no order). */
static __global__ void prepare_kernel(const float *logits, uint32_t vocab, uint32_t rows,
                                      const duet_gpu_sample_row *d_rows, duet_gpu_sample_out out,
                                      float *keys, int32_t *ids, int *seg_begin, int *seg_end)
{
    size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x, total = (size_t)rows * vocab;

    for (size_t e = first; e < total; e += stride) {
        keys[e] = sort_key(logits[e]);
        ids[e] = (int32_t)(e % vocab);
    }
    for (size_t r = first; r < rows; r += stride) {
        int begin = (int)(r * vocab); /* rows × vocab <= INT32_MAX (chunk_rows) */

        seg_begin[r] = begin;
        seg_end[r] = row_needs_sort(&d_rows[r], &out) ? begin + (int)vocab : begin;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Block-wide collectives: every thread of the block calls them, every thread gets the result   */
/* ------------------------------------------------------------------------------------------ */

/* A token in the order: larger key first, lower id on ties. */
struct best_tok {
    float key;
    uint32_t id;
};

static inline __device__ bool better(best_tok a, best_tok b)
{
    return a.key > b.key || (a.key == b.key && a.id < b.id);
}

struct better_op {
    __device__ best_tok operator()(const best_tok &a, const best_tok &b) const
    {
        return better(b, a) ? b : a;
    }
};

struct min_op {
    __device__ uint32_t operator()(uint32_t a, uint32_t b) const
    {
        return b < a ? b : a;
    }
};

struct sum_op {
    __device__ uint32_t operator()(uint32_t a, uint32_t b) const
    {
        return a + b;
    }
};

struct max_op {
    __device__ uint32_t operator()(uint32_t a, uint32_t b) const
    {
        return b > a ? b : a;
    }
};

typedef cub::BlockReduce<double, THREADS> reduce_d;
typedef cub::BlockReduce<uint32_t, THREADS> reduce_u;
typedef cub::BlockReduce<best_tok, THREADS> reduce_b;
typedef cub::BlockScan<double, THREADS> scan_d;

/* A block's shared memory: one collective's scratch at a time, and the broadcast slots. Each
 * helper below ends with a barrier, so the next collective may reuse tmp at once. */
struct block_shared {
    union {
        reduce_d::TempStorage rd;
        reduce_u::TempStorage ru;
        reduce_b::TempStorage rb;
        scan_d::TempStorage sd;
    } tmp;
    double d;
    uint32_t u;
    best_tok b;
};

static __device__ double block_sum(double v, block_shared &sh)
{
    double r = reduce_d(sh.tmp.rd).Sum(v); /* valid in thread 0 */

    if (threadIdx.x == 0)
        sh.d = r;
    __syncthreads();
    r = sh.d;
    __syncthreads();
    return r;
}

template <typename Op>
static __device__ uint32_t block_reduce_u(uint32_t v, Op op, block_shared &sh)
{
    uint32_t r = reduce_u(sh.tmp.ru).Reduce(v, op);

    if (threadIdx.x == 0)
        sh.u = r;
    __syncthreads();
    r = sh.u;
    __syncthreads();
    return r;
}

static __device__ best_tok block_best(best_tok v, block_shared &sh)
{
    best_tok r = reduce_b(sh.tmp.rb).Reduce(v, better_op());

    if (threadIdx.x == 0)
        sh.b = r;
    __syncthreads();
    r = sh.b;
    __syncthreads();
    return r;
}

/* Exclusive and inclusive prefix sums of one value per thread, and the block's total (CUB gives
 * the aggregate to every thread). */
static __device__ double block_exclusive_sum(double v, double *total, block_shared &sh)
{
    double r;

    scan_d(sh.tmp.sd).ExclusiveSum(v, r, *total);
    __syncthreads();
    return r;
}

static __device__ double block_inclusive_sum(double v, double *total, block_shared &sh)
{
    double r;

    scan_d(sh.tmp.sd).InclusiveSum(v, r, *total);
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Log-probabilities (temperature 1), as sampling.c's row_norm() and logprob_of()               */
/* ------------------------------------------------------------------------------------------ */

struct row_norm {
    float max;       /* +inf: the +inf tokens share the mass; -inf: token 0 has it all */
    uint32_t n_inf;  /* tokens at +inf */
    double log_norm; /* log of the sum of exp(key - max) over the row */
};

/* The most likely token of the row (lowest id on ties; token 0 when nothing is finite). */
static __device__ best_tok row_best(const float *logits, uint32_t vocab, block_shared &sh)
{
    best_tok b = {-INFINITY, UINT32_MAX}; /* loses to every token */

    for (uint32_t i = threadIdx.x; i < vocab; i += THREADS) {
        best_tok c = {sort_key(logits[i]), i};

        if (better(c, b))
            b = c;
    }
    return block_best(b, sh);
}

static __device__ row_norm row_norm_of(const float *logits, uint32_t vocab, float m,
                                       block_shared &sh)
{
    row_norm rn = {m, 0, 0.0};

    if (m == INFINITY) {
        uint32_t n_inf = 0;

        for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
            n_inf += logits[i] == INFINITY;
        rn.n_inf = block_reduce_u(n_inf, sum_op(), sh);
    } else if (m != -INFINITY) {
        double sum = 0.0;

        for (uint32_t i = threadIdx.x; i < vocab; i += THREADS) /* -inf adds exp(-inf) = 0 */
            sum += exp((double)sort_key(logits[i]) - (double)m);
        rn.log_norm = log(block_sum(sum, sh));
    }
    return rn;
}

static __device__ float logprob_of(const row_norm &rn, float key, uint32_t id)
{
    if (rn.max == INFINITY)
        return key == INFINITY ? (float)-log((double)rn.n_inf) : -INFINITY;
    if (rn.max == -INFINITY)
        return id == 0 ? 0.0f : -INFINITY;
    return (float)((double)key - (double)rn.max - rn.log_norm);
}

/* ------------------------------------------------------------------------------------------ */
/* The filtered draw over a sorted row                                                          */
/* ------------------------------------------------------------------------------------------ */

/* A sorted row and its weights. */
struct sorted_row {
    const float *keys;  /* [vocab] largest first */
    const int32_t *ids; /* [vocab] */
    float kmax;         /* keys[0] */
    double inv_t;       /* 1 / temperature */
};

/* The unnormalised probability of sorted position j (sampling.c weight() and weigh()). At an
 * infinite temperature a -inf key weighs NaN, which fails w > 0 as there. */
static __device__ double weight_at(const sorted_row &s, uint32_t j)
{
    float key = s.keys[j];

    if (s.kmax == INFINITY)
        return key == INFINITY ? 1.0 : 0.0;
    return exp(((double)key - (double)s.kmax) * s.inv_t);
}

/* The sum of the weights of positions [0, n). */
static __device__ double prefix_weight(const sorted_row &s, uint32_t n, block_shared &sh)
{
    double sum = 0.0;

    for (uint32_t j = threadIdx.x; j < n; j += THREADS)
        sum += weight_at(s, j);
    return block_sum(sum, sh);
}

/* The first position j < n whose weight is not positive (n when none): each thread finds its
 * first in its own stride, the block takes the least. */
static __device__ uint32_t positive_len(const sorted_row &s, uint32_t n, block_shared &sh)
{
    uint32_t fail = n;

    for (uint32_t j = threadIdx.x; j < n; j += THREADS) {
        if (!(weight_at(s, j) > 0.0)) {
            fail = j;
            break;
        }
    }
    return block_reduce_u(fail, min_op(), sh);
}

/* Top-p over positions [0, n), n > 1: keeps position j while the mass before it is below
 * top_p × the mass of all n; the most likely alone when top_p <= 0 (or NaN). Returns the kept
 * length (>= 1: nothing comes before position 0 and the goal is positive). */
static __device__ uint32_t top_p_len(const sorted_row &s, uint32_t n, double top_p,
                                     block_shared &sh)
{
    double goal, carry = 0.0;

    if (!(top_p > 0.0))
        return 1;
    goal = top_p * prefix_weight(s, n, sh);
    for (uint32_t base = 0; base < n; base += THREADS) {
        uint32_t j = base + threadIdx.x, fail;
        double w = j < n ? weight_at(s, j) : 0.0, chunk, before;

        before = carry + block_exclusive_sum(w, &chunk, sh);
        fail = block_reduce_u(j < n && !(before < goal) ? j : n, min_op(), sh);
        if (fail < n)
            return fail;
        carry += chunk;
    }
    return n;
}

/* Min-p over positions [0, n), n > 1: keeps w >= min_p × the top weight, at least one. */
static __device__ uint32_t min_p_len(const sorted_row &s, uint32_t n, double min_p,
                                     block_shared &sh)
{
    double threshold = min_p * weight_at(s, 0);
    uint32_t fail = n;

    for (uint32_t j = threadIdx.x; j < n; j += THREADS) {
        if (!(weight_at(s, j) >= threshold)) {
            fail = j;
            break;
        }
    }
    fail = block_reduce_u(fail, min_op(), sh);
    return fail > 0 ? fail : 1; /* min_p > 1 */
}

static __device__ void write_one_hot(float *probs, uint32_t vocab, uint32_t token)
{
    for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
        probs[i] = i == token ? 1.0f : 0.0f;
}

/* probs[id] = w / sum w over the kept positions [0, n), zero elsewhere; then the token at which
 * the sum of probs in id order first exceeds u × their total, or the last positive one when
 * rounding runs past the end (sampling.c write_and_draw()). */
static __device__ int32_t write_and_draw(const sorted_row &s, uint32_t n, float *probs,
                                         uint32_t vocab, double u, block_shared &sh)
{
    double inv = 1.0 / prefix_weight(s, n, sh), total = 0.0, target, carry = 0.0;
    uint32_t last = 0;

    for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
        probs[i] = 0.0f;
    __syncthreads(); /* the zeros land before the kept entries */
    for (uint32_t j = threadIdx.x; j < n; j += THREADS) {
        float p = (float)(weight_at(s, j) * inv);

        probs[s.ids[j]] = p;
        total += p;
    }
    target = u * block_sum(total, sh); /* its barrier makes the row visible to the block */
    for (uint32_t base = 0; base < vocab; base += THREADS) {
        uint32_t i = base + threadIdx.x, hit;
        float p = i < vocab ? probs[i] : 0.0f;
        double chunk, cum = carry + block_inclusive_sum((double)p, &chunk, sh);

        hit = block_reduce_u(i < vocab && p > 0.0f && cum > target ? i : vocab, min_op(), sh);
        if (hit < vocab)
            return (int32_t)hit;
        carry += chunk;
    }
    for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
        if (probs[i] > 0.0f)
            last = i + 1;
    return (int32_t)block_reduce_u(last, max_op(), sh) - 1; /* -1: nothing positive */
}

/* Temperature, top-k, top-p, min-p over the sorted row, the probability row into probs (all of
 * it) and the draw (sampling.c sample_filtered()). The row has a finite or +inf maximum. */
static __device__ int32_t sample_filtered(const sorted_row &s, const duet_gpu_sample_row &row,
                                          float *probs, uint32_t vocab, block_shared &sh)
{
    uint32_t k = row.top_k > 0 && (uint32_t)row.top_k < vocab ? (uint32_t)row.top_k : vocab;
    uint32_t n = positive_len(s, k, sh); /* top-k of the tokens of positive weight */

    if (n == 0) { /* cannot happen: position 0 weighs 1; as sampling.c */
        write_one_hot(probs, vocab, 0);
        return 0;
    }
    if (row.top_p < 1.0f && n > 1) /* false for NaN: off */
        n = top_p_len(s, n, (double)row.top_p, sh);
    if (row.min_p > 0.0f && n > 1)
        n = min_p_len(s, n, (double)row.min_p, sh);
    return write_and_draw(s, n, probs, vocab,
                          duet__rng_uniform(row.seed, row.position, DUET_DRAW_SAMPLE), sh);
}

/* ------------------------------------------------------------------------------------------ */
/* One block per row                                                                            */
/* ------------------------------------------------------------------------------------------ */

struct sample_args {
    const float *logits;             /* [rows][vocab] */
    const duet_gpu_sample_row *rows; /* [rows] */
    uint32_t vocab;                  /* entries per row */
    const float *sorted_keys;        /* [rows][vocab] largest first; NULL: nothing sorted */
    const int32_t *sorted_ids;       /* [rows][vocab] */
    float *scratch;                  /* [rows][vocab] probs rows when out.probs is NULL */
    duet_gpu_sample_out out;         /* pointers at this pass's first row */
};

/* The token of a SAMPLE row (the same in every thread), its probability row written when one is
 * wanted (one-hot for greedy rows and rows without a finite logit). */
static __device__ int32_t sample_token(const sample_args &a, uint32_t r,
                                       const duet_gpu_sample_row &row, best_tok best,
                                       block_shared &sh)
{
    uint32_t vocab = a.vocab;
    float *probs = a.out.probs ? a.out.probs + (size_t)r * vocab : NULL;
    sorted_row s;

    if (row_is_greedy(&row) || best.key == -INFINITY) {
        uint32_t token = row_is_greedy(&row) ? best.id : 0;

        if (probs)
            write_one_hot(probs, vocab, token);
        return (int32_t)token;
    }
    if (!a.sorted_keys) /* h_rows disagreed with d_rows: nothing was sorted */
        return -1;
    s.keys = a.sorted_keys + (size_t)r * vocab;
    s.ids = a.sorted_ids + (size_t)r * vocab;
    s.kmax = s.keys[0];
    s.inv_t = 1.0 / (double)row.temperature;
    return sample_filtered(s, row, probs ? probs : a.scratch + (size_t)r * vocab, vocab, sh);
}

static __device__ void write_top(const sample_args &a, uint32_t r, const duet_gpu_sample_row &row,
                                 const row_norm &rn)
{
    uint32_t vocab = a.vocab, n = row.n_top < vocab ? row.n_top : vocab;
    duet_logprob *top = a.out.top + (size_t)r * a.out.max_top;

    if (!a.sorted_keys)
        n = 0;
    for (uint32_t j = threadIdx.x; j < a.out.max_top; j += THREADS) {
        duet_logprob e = {-1, 0.0f};

        if (j < n) {
            uint32_t id = (uint32_t)a.sorted_ids[(size_t)r * vocab + j];

            e.token = (int32_t)id;
            e.logprob = logprob_of(rn, a.sorted_keys[(size_t)r * vocab + j], id);
        }
        top[j] = e;
    }
}

/* Whether every logit of the row is finite (NaN weights, an overflow: the row is not sampled). */
static __device__ bool row_finite(const float *logits, uint32_t vocab, block_shared &sh)
{
    uint32_t bad = 0;

    for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
        bad += !isfinite(logits[i]);
    return block_reduce_u(bad, sum_op(), sh) == 0;
}

/* A SAMPLE row with non-finite logits: token DUET_TOKEN_NONFINITE, a zero probability row, NAN
 * log-probability, no top entries (plugin.h). */
static __device__ void nonfinite_row(const sample_args &a, uint32_t r,
                                     const duet_gpu_sample_row &row, uint32_t vocab)
{
    if (a.out.probs)
        for (uint32_t i = threadIdx.x; i < vocab; i += THREADS)
            a.out.probs[(size_t)r * vocab + i] = 0.0f;
    if (a.out.top && a.out.max_top > 0)
        for (uint32_t j = threadIdx.x; j < a.out.max_top; j += THREADS)
            a.out.top[(size_t)r * a.out.max_top + j] = duet_logprob{-1, NAN};
    if (threadIdx.x == 0 && a.out.tokens)
        a.out.tokens[r] = DUET_TOKEN_NONFINITE;
    if (threadIdx.x == 0 && a.out.token_logprob)
        a.out.token_logprob[r] = NAN;
    (void)row;
}

static __global__ void __launch_bounds__(THREADS) sample_kernel(sample_args a)
{
    __shared__ block_shared sh;
    const uint32_t r = blockIdx.x, vocab = a.vocab;
    const duet_gpu_sample_row row = a.rows[r];
    const float *logits = a.logits + (size_t)r * vocab;
    const bool sample = row.mode & DUET_GPU_ROW_SAMPLE, score = row.mode & DUET_GPU_ROW_SCORE;
    const bool top = row_writes_top(&row, &a.out);
    const bool want_lp =
        (top && row.n_top > 0) || (score && a.out.next_logprob) || (sample && a.out.token_logprob);
    row_norm rn = {0.0f, 0, 0.0};
    best_tok best;

    if (!sample && !score) /* the whole block leaves together */
        return;
    if (sample && (row.mode & DUET_GPU_ROW_FINITE) && !row_finite(logits, vocab, sh)) {
        /* block-uniform: the whole block leaves together */
        nonfinite_row(a, r, row, vocab);
        return;
    }
    best = row_best(logits, vocab, sh);
    if (want_lp)
        rn = row_norm_of(logits, vocab, best.key, sh);
    if (top)
        write_top(a, r, row, rn);
    if (score && a.out.next_logprob && threadIdx.x == 0)
        a.out.next_logprob[r] = row.next >= 0 && (uint32_t)row.next < vocab
                                    ? logprob_of(rn, sort_key(logits[row.next]), (uint32_t)row.next)
                                    : NAN;
    if (sample) {
        int32_t token = sample_token(a, r, row, best, sh);

        if (threadIdx.x == 0 && a.out.tokens)
            a.out.tokens[r] = token;
        if (threadIdx.x == 0 && a.out.token_logprob)
            a.out.token_logprob[r] =
                token >= 0 ? logprob_of(rn, sort_key(logits[token]), (uint32_t)token) : NAN;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The host side                                                                                */
/* ------------------------------------------------------------------------------------------ */

static duet_status cuda_fail(const char *call, cudaError_t e, char *err, size_t err_size)
{
    if (err && err_size)
        snprintf(err, err_size, "gpu sampler: %s: %s", call, cudaGetErrorString(e));
    (void)cudaGetLastError(); /* a failed call is also the runtime's last error: clear it */
    return DUET_STATUS_DEVICE;
}

#define CUDA_CHECK(call, name)                                                                     \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_fail(name, e_, err, err_size);                                             \
    } while (0)

static void free_rows(duet_gpu_sampler *s)
{
    cudaFree(s->keys_in);
    cudaFree(s->keys_out);
    cudaFree(s->ids_in);
    cudaFree(s->ids_out);
    cudaFree(s->seg_begin);
    cudaFree(s->seg_end);
    s->keys_in = s->keys_out = NULL;
    s->ids_in = s->ids_out = NULL;
    s->seg_begin = s->seg_end = NULL;
    s->cap_rows = 0;
}

/* Room for rows (<= chunk_rows) rows; the stream is drained before old buffers go. */
static duet_status grow_rows(duet_gpu_sampler *s, cudaStream_t stream, uint32_t rows, char *err,
                             size_t err_size)
{
    size_t elems;

    if (rows <= s->cap_rows)
        return DUET_STATUS_OK;
    if (rows < 2 * s->cap_rows)
        rows = 2 * s->cap_rows < s->chunk_rows ? 2 * s->cap_rows : s->chunk_rows;
    CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    free_rows(s);
    elems = (size_t)rows * s->vocab;
    if (cudaMalloc((void **)&s->keys_in, elems * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&s->keys_out, elems * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&s->ids_in, elems * sizeof(int32_t)) != cudaSuccess ||
        cudaMalloc((void **)&s->ids_out, elems * sizeof(int32_t)) != cudaSuccess ||
        cudaMalloc((void **)&s->seg_begin, rows * sizeof(int)) != cudaSuccess ||
        cudaMalloc((void **)&s->seg_end, rows * sizeof(int)) != cudaSuccess) {
        cudaError_t e = cudaGetLastError();

        free_rows(s);
        return cuda_fail("cudaMalloc", e, err, err_size);
    }
    s->cap_rows = rows;
    return DUET_STATUS_OK;
}

static duet_status grow_temp(duet_gpu_sampler *s, cudaStream_t stream, size_t bytes, char *err,
                             size_t err_size)
{
    cudaError_t e;

    if (bytes <= s->temp_bytes)
        return DUET_STATUS_OK;
    CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cudaFree(s->temp);
    s->temp = NULL;
    s->temp_bytes = 0;
    e = cudaMalloc(&s->temp, bytes);
    if (e != cudaSuccess) {
        s->temp = NULL;
        return cuda_fail("cudaMalloc", e, err, err_size);
    }
    s->temp_bytes = bytes;
    return DUET_STATUS_OK;
}

/* keys_out / ids_out: the rows of a (rows <= cap_rows) that need it, sorted. */
static duet_status sort_rows(duet_gpu_sampler *s, cudaStream_t stream, const sample_args *a,
                             uint32_t rows, char *err, size_t err_size)
{
    size_t total = (size_t)rows * s->vocab, bytes = 0;
    size_t blocks = (total + PREPARE_THREADS - 1) / PREPARE_THREADS;
    int items = (int)total; /* <= INT32_MAX: chunk_rows */
    duet_status st;

    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
                   NULL, bytes, s->keys_in, s->keys_out, s->ids_in, s->ids_out, items, (int)rows,
                   s->seg_begin, s->seg_end, 0, 32, stream),
               "DeviceSegmentedRadixSort::SortPairsDescending (size)");
    st = grow_temp(s, stream, bytes, err, err_size);
    if (st != DUET_STATUS_OK)
        return st;
    if (blocks > PREPARE_MAX_BLOCKS)
        blocks = PREPARE_MAX_BLOCKS;
    prepare_kernel<<<(unsigned)blocks, PREPARE_THREADS, 0, stream>>>(
        a->logits, s->vocab, rows, a->rows, a->out, s->keys_in, s->ids_in, s->seg_begin,
        s->seg_end);
    CUDA_CHECK(cudaGetLastError(), "prepare_kernel");
    bytes = s->temp_bytes;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
                   s->temp, bytes, s->keys_in, s->keys_out, s->ids_in, s->ids_out, items, (int)rows,
                   s->seg_begin, s->seg_end, 0, 32, stream),
               "DeviceSegmentedRadixSort::SortPairsDescending");
    return DUET_STATUS_OK;
}

/* The outputs of row r0 of the call onwards. */
static duet_gpu_sample_out out_from(const duet_gpu_sample_out *o, uint32_t r0, uint32_t vocab)
{
    duet_gpu_sample_out p = *o;

    p.tokens = o->tokens ? o->tokens + r0 : NULL;
    p.probs = o->probs ? o->probs + (size_t)r0 * vocab : NULL;
    p.token_logprob = o->token_logprob ? o->token_logprob + r0 : NULL;
    p.top = o->top ? o->top + (size_t)r0 * o->max_top : NULL;
    p.next_logprob = o->next_logprob ? o->next_logprob + r0 : NULL;
    return p;
}

/* Rows r0 .. r0 + rows - 1 of the call (rows <= chunk_rows). */
static duet_status sample_pass(duet_gpu_sampler *s, cudaStream_t stream, const float *logits,
                               uint32_t r0, uint32_t rows, const duet_gpu_sample_row *d_rows,
                               const duet_gpu_sample_row *h_rows, const duet_gpu_sample_out *out,
                               char *err, size_t err_size)
{
    sample_args a = {};
    bool sort = false;

    a.logits = logits + (size_t)r0 * s->vocab;
    a.rows = d_rows + r0;
    a.vocab = s->vocab;
    a.out = out_from(out, r0, s->vocab);
    for (uint32_t i = 0; i < rows; i++)
        sort = sort || row_needs_sort(&h_rows[r0 + i], out);
    if (sort) {
        duet_status st = grow_rows(s, stream, rows, err, err_size);

        if (st == DUET_STATUS_OK)
            st = sort_rows(s, stream, &a, rows, err, err_size);
        if (st != DUET_STATUS_OK)
            return st;
        a.sorted_keys = s->keys_out;
        a.sorted_ids = s->ids_out;
        a.scratch = s->keys_in; /* read by the sort, free after it */
    }
    sample_kernel<<<rows, THREADS, 0, stream>>>(a);
    CUDA_CHECK(cudaGetLastError(), "sample_kernel");
    return DUET_STATUS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Penalties (ABI minor 3): sparse edits before the sampler, raw log-probabilities after it     */
/* ------------------------------------------------------------------------------------------ */

/* logits[row][token] = duet__penalty_apply(...) for each edit (one token per row at most once:
 * no two threads write one element). */
static __global__ void penalize_kernel(float *logits, uint32_t vocab,
                                       const duet_gpu_penalty_edit *e, uint32_t n)
{
    size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;

    for (size_t i = first; i < n; i += stride) {
        const duet__penalty_edit pe = {e[i].token, e[i].bias, e[i].repetition, e[i].subtract};
        float *l = logits + (size_t)e[i].row * vocab + (uint32_t)e[i].token;

        *l = duet__penalty_apply(*l, &pe);
    }
}

extern "C" cudaError_t duet__gpu_penalize(cudaStream_t stream, float *logits, uint32_t vocab,
                                          const duet_gpu_penalty_edit *edits, uint32_t n)
{
    size_t blocks = ((size_t)n + PREPARE_THREADS - 1) / PREPARE_THREADS;

    if (n == 0)
        return cudaSuccess;
    if (blocks > PREPARE_MAX_BLOCKS)
        blocks = PREPARE_MAX_BLOCKS;
    penalize_kernel<<<(unsigned)blocks, PREPARE_THREADS, 0, stream>>>(logits, vocab, edits, n);
    return cudaGetLastError();
}

/* out[r] = raw log-softmax of row r at tokens[r] (NAN for a negative token), one block per row:
 * the token was drawn from the penalised row, its log-probability is the raw row's. */
static __global__ void __launch_bounds__(THREADS)
    token_logprob_kernel(const float *logits, uint32_t vocab, const int32_t *tokens, float *out)
{
    __shared__ block_shared sh;
    const uint32_t r = blockIdx.x;
    const float *row = logits + (size_t)r * vocab;
    const int32_t t = tokens[r];
    best_tok best;
    row_norm rn;

    if (t < 0 || (uint32_t)t >= vocab) { /* block-uniform */
        if (threadIdx.x == 0)
            out[r] = NAN;
        return;
    }
    best = row_best(row, vocab, sh);
    rn = row_norm_of(row, vocab, best.key, sh);
    if (threadIdx.x == 0)
        out[r] = logprob_of(rn, sort_key(row[t]), (uint32_t)t);
}

extern "C" cudaError_t duet__gpu_token_logprobs(cudaStream_t stream, const float *logits,
                                                uint32_t vocab, uint32_t n, const int32_t *tokens,
                                                float *out)
{
    if (n == 0)
        return cudaSuccess;
    token_logprob_kernel<<<n, THREADS, 0, stream>>>(logits, vocab, tokens, out);
    return cudaGetLastError();
}

extern "C" duet_status duet__gpu_sampler_create(uint32_t vocab, duet_gpu_sampler **out, char *err,
                                                size_t err_size)
{
    duet_gpu_sampler *s;

    if (!out) {
        if (err && err_size)
            snprintf(err, err_size, "gpu sampler: no place for the sampler");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (vocab == 0 || vocab > INT32_MAX) {
        if (err && err_size)
            snprintf(err, err_size, "gpu sampler: vocabulary of %u tokens", vocab);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    s = (duet_gpu_sampler *)calloc(1, sizeof(*s));
    if (!s) {
        if (err && err_size)
            snprintf(err, err_size, "gpu sampler: out of host memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    s->vocab = vocab;
    s->chunk_rows = INT32_MAX / vocab < CHUNK_ROWS ? INT32_MAX / vocab : CHUNK_ROWS;
    *out = s;
    return DUET_STATUS_OK;
}

extern "C" void duet__gpu_sampler_destroy(duet_gpu_sampler *s)
{
    if (!s)
        return;
    free_rows(s);
    cudaFree(s->temp);
    free(s);
}

extern "C" duet_status duet__gpu_sample(duet_gpu_sampler *s, cudaStream_t stream,
                                        const float *logits, uint32_t n,
                                        const duet_gpu_sample_row *d_rows,
                                        const duet_gpu_sample_row *h_rows,
                                        const duet_gpu_sample_out *out, char *err, size_t err_size)
{
    if (!s || !out || (n > 0 && (!logits || !d_rows || !h_rows))) {
        if (err && err_size)
            snprintf(err, err_size, "gpu sampler: missing sampler, rows or outputs");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    for (uint64_t r0 = 0; r0 < n; r0 += s->chunk_rows) {
        uint32_t rows = n - r0 < s->chunk_rows ? (uint32_t)(n - r0) : s->chunk_rows;
        duet_status st =
            sample_pass(s, stream, logits, (uint32_t)r0, rows, d_rows, h_rows, out, err, err_size);

        if (st != DUET_STATUS_OK)
            return st;
    }
    return DUET_STATUS_OK;
}
