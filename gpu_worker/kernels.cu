/*
 * kernels.cu — the GPU worker's own kernels: embedding gathers, norms, RoPE with the KV-cache
 * write, activations and paged attention (decode and prefill). Each kernel is a template over the
 * element type it reads or writes (float, __nv_bfloat16, __half); its launcher switches on the
 * duet_gpu_dtype. Arithmetic is f32 (RoPE's angles in double), as in the CPU worker
 * (cpu_worker/kernels.c), which is the reference.
 *
 * Launch shapes:
 *
 *   elementwise (gather, convert, silu, bias, select, unshard)
 *                    grid (⌈cols / 256⌉, min(rows, 65535)), 256 threads, rows looped over y
 *   rmsnorm, layernorm
 *                    one block of 256 threads per row (up to 2^20 blocks, looping beyond)
 *   rope + kv write  one block of 128 threads per row (likewise): cos / sin of the row in shared
 *                    memory (256 f32),
 *                    then a thread per (head, pair) rotates and stores K, then V is copied
 *   decode           grid (heads, min(n_dec, 65535), max_parts), 128 threads; static shared:
 *                    q (256 f32), the partition's logits (512 f32), a reduction scratch (32 f32)
 *   decode merge     grid (heads, min(n_dec, 65535)), 128 threads, no shared memory
 *   prefill          grid (heads, min(n_tiles, 65535)), cfg->threads, dynamic shared memory of
 *                    duet__gpu_prefill_shared (the layout below)
 *
 * Decode partials: entry e = (i × num_heads + h) × max_parts + part for decode sequence i (its
 * index in dec), query head h; part_out[e × head_dim + d] is the partition's unnormalised output
 * Σ exp(s − max) × v, part_ml[2e] its maximum score and part_ml[2e + 1] its Σ exp(s − max).
 * Partitions past a sequence's own duet__gpu_decode_parts are neither written nor read.
 */
#include "gpu_worker-int.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>

#define EW_THREADS 256u   /* elementwise kernels */
#define NORM_THREADS 256u /* one row per block */
#define ROPE_THREADS 128u
#define DEC_THREADS 128u
#define MAX_GRID_YZ 65535u
#define MAX_ROW_BLOCKS (1u << 20)
#define FULL_MASK 0xffffffffu

/* ---- element conversions ------------------------------------------------------------------- */

template <typename T> static __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <> __device__ __forceinline__ float to_f32<__half>(__half v)
{
    return __half2float(v);
}

/* Round to nearest, ties to even. */
template <typename T> static __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float v)
{
    return __float2half_rn(v);
}

/* Rows to cover with a grid's y (or z) dimension: the kernels loop when there are more. */
static unsigned grid_rows(uint32_t rows)
{
    return rows < MAX_GRID_YZ ? rows : MAX_GRID_YZ;
}

static unsigned grid_cols(uint32_t cols)
{
    return (unsigned)(((size_t)cols + EW_THREADS - 1) / EW_THREADS);
}

/* Blocks of a one-block-per-row kernel (norms, RoPE): the kernels loop past MAX_ROW_BLOCKS. */
static unsigned row_blocks(uint32_t rows)
{
    return rows < MAX_ROW_BLOCKS ? rows : MAX_ROW_BLOCKS;
}

/* Instantiates launch(T) for the element type dt, or answers cudaErrorInvalidValue. */
#define DISPATCH_DTYPE(dt, LAUNCH)                                                                 \
    do {                                                                                           \
        switch (dt) {                                                                              \
        case DUET_GPU_F32:                                                                         \
            LAUNCH(float);                                                                         \
            break;                                                                                 \
        case DUET_GPU_BF16:                                                                        \
            LAUNCH(__nv_bfloat16);                                                                 \
            break;                                                                                 \
        case DUET_GPU_F16:                                                                         \
            LAUNCH(__half);                                                                        \
            break;                                                                                 \
        default:                                                                                   \
            return cudaErrorInvalidValue;                                                          \
        }                                                                                          \
    } while (0)

/* ---- reductions ---------------------------------------------------------------------------- */

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

/* Sum (or maximum) of v over the block, returned to every thread. blockDim.x is a multiple of 32
 * (≤ 1024); red holds 32 floats. Every thread of the block must call it (it synchronises), and it
 * synchronises again before returning so that red may be reused at once. */
static __device__ float block_reduce(float v, float *red, bool is_max)
{
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;

    v = is_max ? warp_max(v) : warp_sum(v);
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < warps ? red[lane] : (is_max ? -INFINITY : 0.0f);
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    return v;
}

/* ---- embedding gather ---------------------------------------------------------------------- */

template <typename T>
static __global__ void gather_rows_kernel(const T *table, uint32_t width, const uint32_t *idx,
                                          uint32_t offset, uint32_t rows, float *out,
                                          size_t out_stride, bool accumulate)
{
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= width)
        return;
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float v = to_f32(table[((size_t)idx[r] + offset) * width + c]);
        float *o = out + (size_t)r * out_stride + c;

        *o = accumulate ? *o + v : v;
    }
}

extern "C" cudaError_t duet__gpu_gather_rows(cudaStream_t s, duet_gpu_dtype dt, const void *table,
                                             uint32_t width, const uint32_t *idx, uint32_t offset,
                                             uint32_t rows, float *out, size_t out_stride,
                                             bool accumulate)
{
    dim3 grid(grid_cols(width), grid_rows(rows));

    if (rows == 0 || width == 0)
        return cudaSuccess;
#define LAUNCH(T)                                                                                  \
    gather_rows_kernel<T><<<grid, EW_THREADS, 0, s>>>((const T *)table, width, idx, offset, rows,  \
                                                      out, out_stride, accumulate)
    DISPATCH_DTYPE(dt, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

/* ---- norms --------------------------------------------------------------------------------- */

/* y may be x (f32): every thread reads its own elements before it writes them, and the reduction
 * (which synchronises) finishes every read of the row before the first write. */
template <typename T>
static __global__ void rmsnorm_kernel(const float *x, size_t x_stride, const float *w, float eps,
                                      T *y, size_t y_stride, uint32_t rows, uint32_t dim)
{
    __shared__ float red[32];

    for (uint32_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + (size_t)r * x_stride;
        T *yr = y + (size_t)r * y_stride;
        float ss = 0.0f, inv;

        for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
            ss += xr[i] * xr[i];
        ss = block_reduce(ss, red, false);
        inv = (float)(1.0 / sqrt((double)ss / dim + eps));
        for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
            yr[i] = from_f32<T>(xr[i] * inv * w[i]);
    }
}

/* Two passes over the row (mean, then the centred variance), as the CPU worker does. */
template <typename T>
static __global__ void layernorm_kernel(const float *x, size_t x_stride, const float *w,
                                        const float *b, float eps, T *y, size_t y_stride,
                                        uint32_t rows, uint32_t dim)
{
    __shared__ float red[32];

    for (uint32_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + (size_t)r * x_stride;
        T *yr = y + (size_t)r * y_stride;
        float sum = 0.0f, var = 0.0f, mean, inv;

        for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
            sum += xr[i];
        mean = block_reduce(sum, red, false) / (float)dim;
        for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
            var += (xr[i] - mean) * (xr[i] - mean);
        var = block_reduce(var, red, false);
        inv = (float)(1.0 / sqrt((double)var / dim + eps));
        for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
            yr[i] = from_f32<T>((xr[i] - mean) * inv * w[i] + b[i]);
    }
}

extern "C" cudaError_t duet__gpu_rmsnorm(cudaStream_t s, const float *x, size_t x_stride,
                                         const float *w, float eps, duet_gpu_dtype y_dt, void *y,
                                         size_t y_stride, uint32_t rows, uint32_t dim)
{
    if (rows == 0 || dim == 0)
        return cudaSuccess;
#define LAUNCH(T)                                                                                  \
    rmsnorm_kernel<T><<<row_blocks(rows), NORM_THREADS, 0, s>>>(x, x_stride, w, eps, (T *)y,       \
                                                                y_stride, rows, dim)
    DISPATCH_DTYPE(y_dt, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

/* A warp per (row, head): the head's sum of squares by lane-strided partial sums, then the scaled
 * head written back by the lanes that read it. */
static __global__ void head_rmsnorm_kernel(float *qkv, size_t stride, uint32_t rows,
                                           uint32_t q_heads, uint32_t k_heads, uint32_t hd,
                                           const float *q_w, const float *k_w, float eps)
{
    const uint32_t lane = threadIdx.x % 32, warps = blockDim.x / 32, heads = q_heads + k_heads;

    for (uint32_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (uint32_t h = threadIdx.x / 32; h < heads; h += warps) {
            float *x = qkv + (size_t)r * stride + (size_t)h * hd, ss = 0.0f, inv;
            const float *w = h < q_heads ? q_w : k_w;

            for (uint32_t d = lane; d < hd; d += 32)
                ss += x[d] * x[d];
            inv = (float)(1.0 / sqrt((double)warp_sum(ss) / hd + eps));
            for (uint32_t d = lane; d < hd; d += 32)
                x[d] = x[d] * inv * w[d];
        }
}

extern "C" cudaError_t duet__gpu_head_rmsnorm(cudaStream_t s, float *qkv, size_t stride,
                                              uint32_t rows, uint32_t q_heads, uint32_t k_heads,
                                              uint32_t head_dim, const float *q_w, const float *k_w,
                                              float eps)
{
    if (rows == 0 || q_heads + k_heads == 0)
        return cudaSuccess;
    if (head_dim == 0)
        return cudaErrorInvalidValue;
    head_rmsnorm_kernel<<<row_blocks(rows), NORM_THREADS, 0, s>>>(qkv, stride, rows, q_heads,
                                                                  k_heads, head_dim, q_w, k_w, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t duet__gpu_layernorm(cudaStream_t s, const float *x, size_t x_stride,
                                           const float *w, const float *b, float eps,
                                           duet_gpu_dtype y_dt, void *y, size_t y_stride,
                                           uint32_t rows, uint32_t dim)
{
    if (rows == 0 || dim == 0)
        return cudaSuccess;
#define LAUNCH(T)                                                                                  \
    layernorm_kernel<T><<<row_blocks(rows), NORM_THREADS, 0, s>>>(x, x_stride, w, b, eps, (T *)y,  \
                                                                  y_stride, rows, dim)
    DISPATCH_DTYPE(y_dt, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

/* ---- activations and row moves --------------------------------------------------------------- */

template <typename T>
static __global__ void convert_kernel(const float *x, size_t x_stride, T *y, size_t y_stride,
                                      uint32_t rows, uint32_t dim, bool relu)
{
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= dim)
        return;
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float v = x[(size_t)r * x_stride + c];

        y[(size_t)r * y_stride + c] = from_f32<T>(relu ? fmaxf(v, 0.0f) : v);
    }
}

extern "C" cudaError_t duet__gpu_convert(cudaStream_t s, const float *x, size_t x_stride,
                                         duet_gpu_dtype y_dt, void *y, size_t y_stride,
                                         uint32_t rows, uint32_t dim, bool relu)
{
    dim3 grid(grid_cols(dim), grid_rows(rows));

    if (rows == 0 || dim == 0)
        return cudaSuccess;
#define LAUNCH(T)                                                                                  \
    convert_kernel<T><<<grid, EW_THREADS, 0, s>>>(x, x_stride, (T *)y, y_stride, rows, dim, relu)
    DISPATCH_DTYPE(y_dt, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

template <typename T>
static __global__ void silu_mul_kernel(const float *gu, size_t gu_stride, T *out, size_t out_stride,
                                       uint32_t rows, uint32_t inter)
{
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= inter)
        return;
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float *row = gu + (size_t)r * gu_stride;
        float g = row[c], u = row[(size_t)inter + c];

        out[(size_t)r * out_stride + c] = from_f32<T>(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" cudaError_t duet__gpu_silu_mul(cudaStream_t s, const float *gu, size_t gu_stride,
                                          duet_gpu_dtype out_dt, void *out, size_t out_stride,
                                          uint32_t rows, uint32_t inter)
{
    dim3 grid(grid_cols(inter), grid_rows(rows));

    if (rows == 0 || inter == 0)
        return cudaSuccess;
#define LAUNCH(T)                                                                                  \
    silu_mul_kernel<T><<<grid, EW_THREADS, 0, s>>>(gu, gu_stride, (T *)out, out_stride, rows, inter)
    DISPATCH_DTYPE(out_dt, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

static __global__ void add_bias_kernel(float *y, size_t y_stride, const float *b, uint32_t rows,
                                       uint32_t n)
{
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= n)
        return;
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y)
        y[(size_t)r * y_stride + c] += b[c];
}

extern "C" cudaError_t duet__gpu_add_bias(cudaStream_t s, float *y, size_t y_stride, const float *b,
                                          uint32_t rows, uint32_t n)
{
    if (rows == 0 || n == 0)
        return cudaSuccess;
    add_bias_kernel<<<dim3(grid_cols(n), grid_rows(rows)), EW_THREADS, 0, s>>>(y, y_stride, b, rows,
                                                                               n);
    return cudaGetLastError();
}

static __global__ void select_rows_kernel(const float *x, size_t x_stride, const uint32_t *idx,
                                          uint32_t n, float *y, size_t y_stride, uint32_t dim)
{
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;

    if (c >= dim)
        return;
    for (uint32_t i = blockIdx.y; i < n; i += gridDim.y)
        y[(size_t)i * y_stride + c] = x[(size_t)idx[i] * x_stride + c];
}

extern "C" cudaError_t duet__gpu_select_rows(cudaStream_t s, const float *x, size_t x_stride,
                                             const uint32_t *idx, uint32_t n, float *y,
                                             size_t y_stride, uint32_t dim)
{
    if (n == 0 || dim == 0)
        return cudaSuccess;
    select_rows_kernel<<<dim3(grid_cols(dim), grid_rows(n)), EW_THREADS, 0, s>>>(
        x, x_stride, idx, n, y, y_stride, dim);
    return cudaGetLastError();
}

static __global__ void unshard_logits_kernel(const float *gathered, uint32_t n, uint32_t shard,
                                             uint32_t vocab, float *logits)
{
    uint32_t v = blockIdx.x * blockDim.x + threadIdx.x;

    if (v >= vocab)
        return;
    for (uint32_t i = blockIdx.y; i < n; i += gridDim.y)
        logits[(size_t)i * vocab + v] = gathered[((size_t)(v / shard) * n + i) * shard + v % shard];
}

extern "C" cudaError_t duet__gpu_unshard_logits(cudaStream_t s, const float *gathered, uint32_t n,
                                                uint32_t shard, uint32_t vocab, float *logits)
{
    if (n == 0 || vocab == 0)
        return cudaSuccess;
    if (shard == 0)
        return cudaErrorInvalidValue;
    unshard_logits_kernel<<<dim3(grid_cols(vocab), grid_rows(n)), EW_THREADS, 0, s>>>(
        gathered, n, shard, vocab, logits);
    return cudaGetLastError();
}

/* ---- RoPE and the KV-cache write ------------------------------------------------------------- */

/* One block per row. The row's cos / sin (f32, rounded from double as the CPU worker's
 * duet__cpu_rope_angles does) go to shared memory; a thread per (q or k head, pair i) rotates x[i]
 * and x[i + half] in place with rope_head's operation order (no fused multiply-add) and stores a
 * k head's pair into the cache itself, so that no thread reads another's result. */
template <typename T> static __global__ void rope_kv_write_kernel(duet_gpu_rope_args a, T *cache)
{
    __shared__ float cs[DUET_GPU_MAX_HEAD_DIM]; /* [cos: half][sin: half] */
    const uint32_t hd = a.kv.head_dim, half = hd / 2, heads = a.num_heads + a.kv.kv_heads;

    for (uint32_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        float *row = a.qkv + (size_t)r * a.stride;
        uint32_t slot = a.slot[r], block = slot / a.kv.block_size, off = slot % a.kv.block_size;
        const float *v = row + (size_t)heads * hd;

        if (a.inv_freq) {
            __syncthreads(); /* the previous row's threads are done with cs */
            for (uint32_t i = threadIdx.x; i < half; i += blockDim.x) {
                double sn, cn;

                sincos((double)a.pos[r] * a.inv_freq[i], &sn, &cn);
                cs[i] = (float)cn;
                cs[half + i] = (float)sn;
            }
            __syncthreads();
        }
        for (uint32_t j = threadIdx.x; j < heads * half; j += blockDim.x) {
            uint32_t h = j / half, i = j % half;
            float *x = row + (size_t)h * hd;
            float x0 = x[i], x1 = x[i + half];

            if (a.inv_freq) {
                float c = cs[i], sn = cs[half + i];
                float lo = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
                float hi = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, sn));

                x[i] = lo;
                x[i + half] = hi;
                x0 = lo;
                x1 = hi;
            }
            if (h >= a.num_heads) {
                T *k = cache + duet__gpu_kv_offset(&a.kv, block, a.layer, 0, h - a.num_heads, off);

                k[i] = from_f32<T>(x0);
                k[i + half] = from_f32<T>(x1);
            }
        }
        for (uint32_t j = threadIdx.x; j < a.kv.kv_heads * hd; j += blockDim.x) {
            uint32_t h = j / hd, d = j % hd;

            cache[duet__gpu_kv_offset(&a.kv, block, a.layer, 1, h, off) + d] = from_f32<T>(v[j]);
        }
    }
}

extern "C" cudaError_t duet__gpu_rope_kv_write(cudaStream_t s, const duet_gpu_rope_args *a)
{
    unsigned blocks = row_blocks(a->rows);

    if (a->rows == 0)
        return cudaSuccess;
    if (a->kv.head_dim == 0 || a->kv.head_dim % 2 || a->kv.head_dim > DUET_GPU_MAX_HEAD_DIM ||
        a->kv.block_size == 0)
        return cudaErrorInvalidValue;
#define LAUNCH(T) rope_kv_write_kernel<T><<<blocks, ROPE_THREADS, 0, s>>>(*a, (T *)a->kv.base)
    DISPATCH_DTYPE(a->kv.dtype, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

/* ---- decode attention ------------------------------------------------------------------------ */

/* Lane-split q·k of the partition's positions p0 .. p0 + n − 1, a warp per position, into p_s. */
template <typename T>
static __device__ void decode_scores(const duet_gpu_attn_args &a, const uint32_t *bt, uint32_t kvh,
                                     uint32_t p0, uint32_t n, const float *q_s, float *p_s)
{
    const T *cache = (const T *)a.kv.base;
    const uint32_t lane = threadIdx.x % 32, warps = blockDim.x / 32;

    for (uint32_t j = threadIdx.x / 32; j < n; j += warps) {
        const T *k = cache + duet__gpu_kv_pos_offset(&a.kv, bt, a.layer, 0, kvh, p0 + j);
        float dot = 0.0f;

        for (uint32_t d = lane; d < a.kv.head_dim; d += 32)
            dot += q_s[d] * to_f32(k[d]);
        dot = warp_sum(dot);
        if (lane == 0)
            p_s[j] = a.scale * dot;
    }
}

/* p_s[j] = exp(p_s[j] − max) for j < n; the maximum into *mx, the sum returned (every thread).
 * Each thread rewrites only the entries it read, and the reductions synchronise, so the caller
 * may read all of p_s afterwards. */
static __device__ float decode_softmax(float *p_s, uint32_t n, float *red, float *mx)
{
    float m = -INFINITY, sum = 0.0f;

    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x)
        m = fmaxf(m, p_s[j]);
    m = block_reduce(m, red, true);
    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(p_s[j] - m);

        p_s[j] = e;
        sum += e;
    }
    *mx = m;
    return block_reduce(sum, red, false);
}

/* Σ_j p_s[j] × v[p0 + j][d]: a thread per dimension, so a warp reads a row of V at once. */
template <typename T>
static __device__ float decode_value(const duet_gpu_attn_args &a, const uint32_t *bt, uint32_t kvh,
                                     uint32_t p0, uint32_t n, const float *p_s, uint32_t d)
{
    const T *cache = (const T *)a.kv.base;
    float acc = 0.0f;

    for (uint32_t j = 0; j < n; j++) {
        const T *v = cache + duet__gpu_kv_pos_offset(&a.kv, bt, a.layer, 1, kvh, p0 + j);

        acc += p_s[j] * to_f32(v[d]);
    }
    return acc;
}

/* The first position a row at pos reads: pos − window + 1 with a sliding window, else 0. */
static __device__ __forceinline__ uint32_t window_start(const duet_gpu_attn_args &a, uint32_t pos)
{
    return a.window && pos + 1 > a.window ? pos + 1 - a.window : 0;
}

/* One block per (query head, decode sequence, partition): scores into shared memory, their
 * softmax, then the weighted values, normalised into out (one partition) or left for the merge
 * with the partition's (max, sum). Partitions split the positions the row reads: from its
 * window's start (0 without a window) to its own. */
template <typename T>
static __global__ void attn_decode_kernel(duet_gpu_attn_args a, const uint32_t *dec, uint32_t n_dec,
                                          uint32_t max_parts, float *part_out, float *part_ml)
{
    __shared__ float q_s[DUET_GPU_MAX_HEAD_DIM];
    __shared__ float p_s[DUET_GPU_DECODE_PARTITION];
    __shared__ float red[32];
    const uint32_t hd = a.kv.head_dim, h = blockIdx.x, part = blockIdx.z;
    const uint32_t kvh = h / (a.num_heads / a.kv.kv_heads);

    for (uint32_t i = blockIdx.y; i < n_dec; i += gridDim.y) {
        const duet_gpu_seg seg = a.segs[dec[i]];
        const uint32_t *bt = a.block_tables + seg.bt;
        const float *q = a.q + (size_t)seg.row0 * a.q_stride + (size_t)h * hd;
        const uint32_t first = window_start(a, seg.pos), len = seg.pos + 1 - first;
        const uint32_t p0 = first + part * DUET_GPU_DECODE_PARTITION;
        const size_t e = ((size_t)i * a.num_heads + h) * max_parts + part;
        uint32_t n;
        float mx, sum;

        if (part >= duet__gpu_decode_parts(len)) /* the same for the whole block */
            continue;
        n = first + len - p0 < DUET_GPU_DECODE_PARTITION ? first + len - p0
                                                         : DUET_GPU_DECODE_PARTITION;
        __syncthreads(); /* the previous sequence's threads are done with q_s and p_s */
        for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x)
            q_s[d] = q[d];
        __syncthreads();
        decode_scores<T>(a, bt, kvh, p0, n, q_s, p_s);
        __syncthreads();
        sum = decode_softmax(p_s, n, red, &mx);
        for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc = decode_value<T>(a, bt, kvh, p0, n, p_s, d);

            if (max_parts == 1)
                ((T *)a.out)[(size_t)seg.row0 * a.out_stride + (size_t)h * hd + d] =
                    from_f32<T>(acc / sum);
            else
                part_out[e * hd + d] = acc;
        }
        if (max_parts > 1 && threadIdx.x == 0) {
            part_ml[2 * e] = mx;
            part_ml[2 * e + 1] = sum;
        }
    }
}

/* Combines a sequence's partitions: out = Σ_p e^(m_p − M) × o_p / Σ_p e^(m_p − M) × l_p with M
 * the largest m_p. Each thread owns dimensions and reads the (m, l) pairs itself. */
template <typename T>
static __global__ void attn_merge_kernel(duet_gpu_attn_args a, const uint32_t *dec, uint32_t n_dec,
                                         uint32_t max_parts, const float *part_out,
                                         const float *part_ml)
{
    const uint32_t hd = a.kv.head_dim, h = blockIdx.x;

    for (uint32_t i = blockIdx.y; i < n_dec; i += gridDim.y) {
        const duet_gpu_seg seg = a.segs[dec[i]];
        uint32_t parts = duet__gpu_decode_parts(seg.pos + 1 - window_start(a, seg.pos));
        size_t e0 = ((size_t)i * a.num_heads + h) * max_parts;
        T *o = (T *)a.out + (size_t)seg.row0 * a.out_stride + (size_t)h * hd;
        float m = -INFINITY, l = 0.0f;

        if (parts > max_parts) /* a plan that says fewer: never read past this head's entries */
            parts = max_parts;
        for (uint32_t p = 0; p < parts; p++)
            m = fmaxf(m, part_ml[2 * (e0 + p)]);
        for (uint32_t p = 0; p < parts; p++)
            l += expf(part_ml[2 * (e0 + p)] - m) * part_ml[2 * (e0 + p) + 1];
        for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc = 0.0f;

            for (uint32_t p = 0; p < parts; p++)
                acc += expf(part_ml[2 * (e0 + p)] - m) * part_out[(e0 + p) * hd + d];
            o[d] = from_f32<T>(acc / l);
        }
    }
}

static bool attn_args_ok(const duet_gpu_attn_args *a)
{
    const duet_gpu_kv *kv = &a->kv;

    return kv->head_dim > 0 && kv->head_dim <= DUET_GPU_MAX_HEAD_DIM && kv->block_size > 0 &&
           kv->kv_heads > 0 && a->num_heads >= kv->kv_heads && a->num_heads % kv->kv_heads == 0;
}

extern "C" cudaError_t duet__gpu_attn_decode(cudaStream_t s, const duet_gpu_attn_args *a,
                                             const uint32_t *dec, uint32_t n_dec,
                                             uint32_t max_parts, float *part_out, float *part_ml)
{
    dim3 grid(a->num_heads, grid_rows(n_dec), max_parts), merge(a->num_heads, grid_rows(n_dec));
    cudaError_t err;

    if (n_dec == 0 || max_parts == 0 || a->num_heads == 0)
        return cudaSuccess;
    if (!attn_args_ok(a) || max_parts > MAX_GRID_YZ)
        return cudaErrorInvalidValue;
#define LAUNCH(T)                                                                                  \
    attn_decode_kernel<T><<<grid, DEC_THREADS, 0, s>>>(*a, dec, n_dec, max_parts, part_out, part_ml)
    DISPATCH_DTYPE(a->kv.dtype, LAUNCH);
#undef LAUNCH
    err = cudaGetLastError();
    if (err != cudaSuccess || max_parts == 1)
        return err;
#define LAUNCH(T)                                                                                  \
    attn_merge_kernel<T><<<merge, DEC_THREADS, 0, s>>>(*a, dec, n_dec, max_parts, part_out, part_ml)
    DISPATCH_DTYPE(a->kv.dtype, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

/* ---- prefill attention ----------------------------------------------------------------------- */

/*
 * One block per (query head, tile of q_rows query rows of a sequence). Shared memory, all f32:
 *
 *   q_s [q_rows][head_dim]       the tile's queries
 *   k_s [kv_rows][head_dim + 1]  a chunk of keys (padded: threads of a warp read different keys)
 *   v_s [kv_rows][head_dim]      the chunk's values
 *   o_s [q_rows][head_dim]       Σ exp(s − m) × v so far
 *   s_s [q_rows][kv_rows]        the chunk's scores, then their weights exp(s − m)
 *   m_s, l_s, a_s [q_rows]       running maximum, running Σ exp(s − m), the chunk's rescale
 *
 * Keys run from position 0 (with a sliding window: the first row's window start) to the tile's
 * last row's position, kv_rows at a time; a row ignores the positions after its own and those
 * before its window. Rows past the segment's end (a partial tile) are never computed.
 */
typedef struct prefill_smem {
    float *q, *k, *v, *o, *s, *m, *l, *alpha;
} prefill_smem;

/* The tile a block works on: its first row, row count and the position of its first row. */
typedef struct prefill_tile {
    uint32_t row0, rows, pos0;
    const uint32_t *bt;
} prefill_tile;

static __device__ prefill_smem prefill_carve(float *base, uint32_t q_rows, uint32_t kv_rows,
                                             uint32_t hd)
{
    prefill_smem sm;

    sm.q = base;
    sm.k = sm.q + (size_t)q_rows * hd;
    sm.v = sm.k + (size_t)kv_rows * (hd + 1);
    sm.o = sm.v + (size_t)kv_rows * hd;
    sm.s = sm.o + (size_t)q_rows * hd;
    sm.m = sm.s + (size_t)q_rows * kv_rows;
    sm.l = sm.m + q_rows;
    sm.alpha = sm.l + q_rows;
    return sm;
}

static __device__ void prefill_stage_q(const duet_gpu_attn_args &a, const prefill_smem &sm,
                                       const prefill_tile &t, uint32_t h)
{
    const uint32_t hd = a.kv.head_dim;

    for (uint32_t x = threadIdx.x; x < t.rows * hd; x += blockDim.x) {
        uint32_t qi = x / hd, d = x % hd;

        sm.q[x] = a.q[(size_t)(t.row0 + qi) * a.q_stride + (size_t)h * hd + d];
        sm.o[x] = 0.0f;
    }
    for (uint32_t qi = threadIdx.x; qi < t.rows; qi += blockDim.x) {
        sm.m[qi] = -INFINITY;
        sm.l[qi] = 0.0f;
    }
}

template <typename T>
static __device__ void prefill_stage_kv(const duet_gpu_attn_args &a, const prefill_smem &sm,
                                        const prefill_tile &t, uint32_t kvh, uint32_t c0,
                                        uint32_t nk)
{
    const T *cache = (const T *)a.kv.base;
    const uint32_t hd = a.kv.head_dim;

    for (uint32_t x = threadIdx.x; x < nk * hd; x += blockDim.x) {
        uint32_t j = x / hd, d = x % hd;

        sm.k[(size_t)j * (hd + 1) + d] =
            to_f32(cache[duet__gpu_kv_pos_offset(&a.kv, t.bt, a.layer, 0, kvh, c0 + j) + d]);
        sm.v[x] = to_f32(cache[duet__gpu_kv_pos_offset(&a.kv, t.bt, a.layer, 1, kvh, c0 + j) + d]);
    }
}

/* s_s[qi][j] = scale × q·k, or −∞ for positions past the row's own, before its window, or past
 * the chunk's end. */
static __device__ void prefill_scores(const duet_gpu_attn_args &a, const prefill_smem &sm,
                                      const prefill_tile &t, uint32_t kv_rows, uint32_t c0,
                                      uint32_t nk)
{
    const uint32_t hd = a.kv.head_dim;

    for (uint32_t x = threadIdx.x; x < t.rows * kv_rows; x += blockDim.x) {
        uint32_t qi = x / kv_rows, j = x % kv_rows;
        float dot = -INFINITY;

        if (j < nk && c0 + j <= t.pos0 + qi && c0 + j >= window_start(a, t.pos0 + qi)) {
            const float *q = sm.q + (size_t)qi * hd, *k = sm.k + (size_t)j * (hd + 1);

            dot = 0.0f;
            for (uint32_t d = 0; d < hd; d++)
                dot += q[d] * k[d];
            dot *= a.scale;
        }
        sm.s[x] = dot;
    }
}

/* A warp per row: the chunk's maximum, the new running maximum, weights exp(s − m) in place of
 * the scores, the running sum and the factor the row's accumulator is rescaled by. */
static __device__ void prefill_softmax(const prefill_smem &sm, const prefill_tile &t,
                                       uint32_t kv_rows)
{
    const uint32_t lane = threadIdx.x % 32, warps = blockDim.x / 32;

    for (uint32_t qi = threadIdx.x / 32; qi < t.rows; qi += warps) {
        float *s = sm.s + (size_t)qi * kv_rows;
        float mx = -INFINITY, sum = 0.0f, m_old = sm.m[qi], m_new;

        for (uint32_t j = lane; j < kv_rows; j += 32)
            mx = fmaxf(mx, s[j]);
        m_new = fmaxf(m_old, warp_max(mx));
        for (uint32_t j = lane; j < kv_rows; j += 32) {
            float p = m_new == -INFINITY ? 0.0f : expf(s[j] - m_new);

            s[j] = p;
            sum += p;
        }
        sum = warp_sum(sum);
        __syncwarp(); /* every lane has read m[qi] */
        if (lane == 0) {
            float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);

            sm.alpha[qi] = alpha;
            sm.l[qi] = sm.l[qi] * alpha + sum;
            sm.m[qi] = m_new;
        }
    }
}

static __device__ void prefill_accumulate(const prefill_smem &sm, const prefill_tile &t,
                                          uint32_t hd, uint32_t kv_rows, uint32_t nk)
{
    for (uint32_t x = threadIdx.x; x < t.rows * hd; x += blockDim.x) {
        uint32_t qi = x / hd, d = x % hd;
        const float *p = sm.s + (size_t)qi * kv_rows;
        float acc = sm.o[x] * sm.alpha[qi];

        for (uint32_t j = 0; j < nk; j++)
            acc += p[j] * sm.v[(size_t)j * hd + d];
        sm.o[x] = acc;
    }
}

template <typename T>
static __device__ void prefill_write(const duet_gpu_attn_args &a, const prefill_smem &sm,
                                     const prefill_tile &t, uint32_t h)
{
    const uint32_t hd = a.kv.head_dim;

    for (uint32_t x = threadIdx.x; x < t.rows * hd; x += blockDim.x) {
        uint32_t qi = x / hd, d = x % hd;
        T *o = (T *)a.out + (size_t)(t.row0 + qi) * a.out_stride + (size_t)h * hd;

        o[d] = from_f32<T>(sm.o[x] / sm.l[qi]);
    }
}

template <typename T>
static __global__ void attn_prefill_kernel(duet_gpu_attn_args a, const duet_gpu_tile *tiles,
                                           uint32_t n_tiles, uint32_t q_rows, uint32_t kv_rows)
{
    extern __shared__ float smem[];
    const uint32_t hd = a.kv.head_dim, h = blockIdx.x;
    const uint32_t kvh = h / (a.num_heads / a.kv.kv_heads);
    const prefill_smem sm = prefill_carve(smem, q_rows, kv_rows, hd);

    for (uint32_t ti = blockIdx.y; ti < n_tiles; ti += gridDim.y) {
        const duet_gpu_tile tile = tiles[ti];
        const duet_gpu_seg seg = a.segs[tile.seg];
        prefill_tile t;
        uint32_t n_keys;

        if (tile.q0 >= seg.n) /* the same for the whole block */
            continue;
        t.rows = seg.n - tile.q0 < q_rows ? seg.n - tile.q0 : q_rows;
        t.row0 = seg.row0 + tile.q0;
        t.pos0 = seg.pos + tile.q0;
        t.bt = a.block_tables + seg.bt;
        n_keys = t.pos0 + t.rows; /* the last row's position + 1 */
        __syncthreads();          /* the previous tile's threads are done with shared memory */
        prefill_stage_q(a, sm, t, h);
        for (uint32_t c0 = window_start(a, t.pos0); c0 < n_keys; c0 += kv_rows) {
            uint32_t nk = n_keys - c0 < kv_rows ? n_keys - c0 : kv_rows;

            prefill_stage_kv<T>(a, sm, t, kvh, c0, nk);
            __syncthreads();
            prefill_scores(a, sm, t, kv_rows, c0, nk);
            __syncthreads();
            prefill_softmax(sm, t, kv_rows);
            __syncthreads();
            prefill_accumulate(sm, t, hd, kv_rows, nk);
            __syncthreads();
        }
        prefill_write<T>(a, sm, t, h);
    }
}

extern "C" cudaError_t duet__gpu_attn_prefill(cudaStream_t s, const duet_gpu_attn_args *a,
                                              const duet_gpu_tile *tiles, uint32_t n_tiles,
                                              const duet_gpu_prefill_cfg *cfg)
{
    dim3 grid(a->num_heads, grid_rows(n_tiles));

    if (n_tiles == 0 || a->num_heads == 0)
        return cudaSuccess;
    if (!attn_args_ok(a) || cfg->q_rows == 0 || cfg->kv_rows == 0 || cfg->threads == 0 ||
        cfg->threads % 32 || cfg->threads > 1024 ||
        cfg->shared_bytes < duet__gpu_prefill_shared(cfg->q_rows, cfg->kv_rows, a->kv.head_dim))
        return cudaErrorInvalidValue;
#define LAUNCH(T)                                                                                  \
    attn_prefill_kernel<T><<<grid, cfg->threads, cfg->shared_bytes, s>>>(                          \
        *a, tiles, n_tiles, cfg->q_rows, cfg->kv_rows)
    DISPATCH_DTYPE(a->kv.dtype, LAUNCH);
#undef LAUNCH
    return cudaGetLastError();
}

extern "C" cudaError_t duet__gpu_attn_prefill_setup(size_t shared_bytes)
{
    const cudaFuncAttribute attr = cudaFuncAttributeMaxDynamicSharedMemorySize;
    int bytes = (int)shared_bytes;
    cudaError_t err;

    if (shared_bytes > (size_t)INT_MAX)
        return cudaErrorInvalidValue;
    if ((err = cudaFuncSetAttribute(attn_prefill_kernel<float>, attr, bytes)) != cudaSuccess ||
        (err = cudaFuncSetAttribute(attn_prefill_kernel<__nv_bfloat16>, attr, bytes)) !=
            cudaSuccess)
        return err;
    return cudaFuncSetAttribute(attn_prefill_kernel<__half>, attr, bytes);
}
