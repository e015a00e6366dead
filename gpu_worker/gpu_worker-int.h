/*
 * gpu_worker-int.h — the GPU worker's device side and host arithmetic (docs/gpu-worker.md); the
 * C glue that drives it (worker.c, execute.c, ranks.c, gemm.c) is worker.h's.
 *
 *   plan.c      host arithmetic: tensor-parallel shards, cache geometry, one step's flat arrays
 *   gemm.c      y = x·Wᵀ through cuBLAS (bf16 / f16 / f32 inputs, f32 accumulation and output)
 *   kernels.cu  embedding, norms, RoPE + KV write, activations, paged attention (decode, prefill)
 *   sample.cu   the sampler on the device: temperature, top-k, top-p, min-p, log-probabilities
 *   probe.cu    the smallest use of the toolchain (device count, one kernel)
 *
 * Every launcher enqueues on the stream it is given and returns the launch's cudaError_t (the
 * kernels' own faults surface at the next synchronising call, which the worker checks).
 *
 * Element types: weights, the KV cache and GEMM inputs are one dtype per worker (f32, bf16 or
 * f16); the residual stream, GEMM outputs, queries and logits are f32.
 *
 * The probe (device count, bandwidth) is probe.h. The host arithmetic (element types, KV layout,
 * shards, cache sizing, a step's arrays, the prefill tile, the sampler's row settings) is plan.h,
 * which builds without CUDA.
 */
#ifndef DUET_GPU_WORKER_INT_H
#define DUET_GPU_WORKER_INT_H

#include "plan.h"
#include "probe.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- kernels (kernels.cu) ----------------------------------------------------------------- */

/* out[r][0 .. width) (+)= table[idx[r] + offset][0 .. width) for r < rows; table of dtype dt
 * ([*][width], device), out f32 with row stride out_stride. accumulate: add instead of store. */
cudaError_t duet__gpu_gather_rows(cudaStream_t s, duet_gpu_dtype dt, const void *table,
                                  uint32_t width, const uint32_t *idx, uint32_t offset,
                                  uint32_t rows, float *out, size_t out_stride, bool accumulate);

/* y[r] = x[r] / sqrt(mean(x[r]²) + eps) × w (f32 in, y of y_dt; y may be x when y_dt is f32). */
cudaError_t duet__gpu_rmsnorm(cudaStream_t s, const float *x, size_t x_stride, const float *w,
                              float eps, duet_gpu_dtype y_dt, void *y, size_t y_stride,
                              uint32_t rows, uint32_t dim);
/* Qwen3's q/k norms, in place: RMSNorm of each head_dim-wide head of each row of qkv (row stride
 * `stride`), the first q_heads with q_w, the next k_heads with k_w ([head_dim] each, f32). */
cudaError_t duet__gpu_head_rmsnorm(cudaStream_t s, float *qkv, size_t stride, uint32_t rows,
                                   uint32_t q_heads, uint32_t k_heads, uint32_t head_dim,
                                   const float *q_w, const float *k_w, float eps);
/* y[r] = (x[r] − mean) / sqrt(var + eps) × w + b (biased variance), as rmsnorm for types. */
cudaError_t duet__gpu_layernorm(cudaStream_t s, const float *x, size_t x_stride, const float *w,
                                const float *b, float eps, duet_gpu_dtype y_dt, void *y,
                                size_t y_stride, uint32_t rows, uint32_t dim);

/* y[r][i] = convert(relu ? max(x[r][i], 0) : x[r][i]) into y_dt. */
cudaError_t duet__gpu_convert(cudaStream_t s, const float *x, size_t x_stride, duet_gpu_dtype y_dt,
                              void *y, size_t y_stride, uint32_t rows, uint32_t dim, bool relu);
/* out[r][i] = silu(gu[r][i]) × gu[r][inter + i] into out_dt (gate then up in one f32 row). */
cudaError_t duet__gpu_silu_mul(cudaStream_t s, const float *gu, size_t gu_stride,
                               duet_gpu_dtype out_dt, void *out, size_t out_stride, uint32_t rows,
                               uint32_t inter);
/* y[r][i] += b[i] (f32). */
cudaError_t duet__gpu_add_bias(cudaStream_t s, float *y, size_t y_stride, const float *b,
                               uint32_t rows, uint32_t n);
/* y[i][0 .. dim) = x[idx[i]][0 .. dim) for i < n (f32). */
cudaError_t duet__gpu_select_rows(cudaStream_t s, const float *x, size_t x_stride,
                                  const uint32_t *idx, uint32_t n, float *y, size_t y_stride,
                                  uint32_t dim);
/* logits[i][v] = gathered[v / shard][i][v % shard] for v < vocab: the all-gathered shards of a
 * vocabulary-parallel lm_head ([tp][n][shard]) into rows of the whole vocabulary. */
cudaError_t duet__gpu_unshard_logits(cudaStream_t s, const float *gathered, uint32_t n,
                                     uint32_t shard, uint32_t vocab, float *logits);

/* RoPE (Hugging Face rotate_half: element i pairs with i + head_dim / 2) on the q and k heads of
 * each row of qkv ([q: num_heads][k: kv_heads][v: kv_heads] × head_dim, f32, in place), angle
 * pos[r] × inv_freq[i] computed in double, then K and V of each row into the cache slot slot[r]
 * (= block × block_size + offset) of `layer`. inv_freq NULL: no rotation (OPT). */
typedef struct duet_gpu_rope_args {
    float *qkv;
    size_t stride; /* elements between rows of qkv */
    uint32_t rows;
    uint32_t num_heads;     /* query heads of the rank */
    const uint32_t *pos;    /* [rows] positions */
    const uint32_t *slot;   /* [rows] physical slots */
    const double *inv_freq; /* [head_dim / 2] or NULL */
    duet_gpu_kv kv;         /* kv_heads and head_dim describe qkv's k and v */
    uint32_t layer;
} duet_gpu_rope_args;
cudaError_t duet__gpu_rope_kv_write(cudaStream_t s, const duet_gpu_rope_args *a);

/* Causal paged attention of one layer: row r of segment g (at position p = pos + r − row0)
 * attends to positions 0 .. p of the sequence, read from the cache (the step's K and V were
 * written first). Query head h reads kv head h / (num_heads / kv_heads); softmax(scale × q·k)
 * weights V. q rows f32 ([num_heads][head_dim] from q + row × q_stride), out rows of kv.dtype. */
typedef struct duet_gpu_attn_args {
    duet_gpu_kv kv;
    uint32_t layer;
    uint32_t num_heads; /* query heads of the rank */
    float scale;
    const float *q;
    size_t q_stride;
    void *out;
    size_t out_stride;
    const duet_gpu_seg *segs;     /* device */
    const uint32_t *block_tables; /* device */
    uint32_t window;              /* sliding window: position p attends to p − window + 1 .. p
                                     (0: to every position) */
} duet_gpu_attn_args;

/* Decode: one query row per listed segment (segs[dec[i]].n == 1), grid (heads, n_dec,
 * max_parts); partitions of DUET_GPU_DECODE_PARTITION positions write f32 partial outputs and
 * (max, sum) pairs to part_out / part_ml, merged by a second kernel when max_parts > 1.
 * part_out holds n_dec × num_heads × max_parts × head_dim floats, part_ml twice n_dec ×
 * num_heads × max_parts. */
cudaError_t duet__gpu_attn_decode(cudaStream_t s, const duet_gpu_attn_args *a, const uint32_t *dec,
                                  uint32_t n_dec, uint32_t max_parts, float *part_out,
                                  float *part_ml);
/* Prefill and multi-position scoring: one block per (query head, tile), tiles of cfg->q_rows
 * rows, keys and values staged cfg->kv_rows at a time, online softmax, causal. */
cudaError_t duet__gpu_attn_prefill(cudaStream_t s, const duet_gpu_attn_args *a,
                                   const duet_gpu_tile *tiles, uint32_t n_tiles,
                                   const duet_gpu_prefill_cfg *cfg);
/* Sets the prefill kernel's dynamic shared-memory limit to bytes (needed above 48 KiB); once per
 * device. */
cudaError_t duet__gpu_attn_prefill_setup(size_t shared_bytes);

/* ---- the sampler (sample.cu) -------------------------------------------------------------- */

/* Where the sampler writes (device arrays; any may be NULL when not wanted). Row i of the call
 * writes element i (probs: i × vocab, top: i × max_top). */
typedef struct duet_gpu_sample_out {
    int32_t *tokens;      /* [n] SAMPLE rows */
    float *probs;         /* [n][vocab] SAMPLE rows: the filtered distribution (one-hot greedy) */
    float *token_logprob; /* [n] SAMPLE rows: raw log-softmax at the token */
    duet_logprob *top;    /* [n][max_top]: n_top entries, then token -1 */
    float *next_logprob;  /* [n] SCORE rows: raw log-softmax at next (NAN for next < 0) */
    uint32_t max_top;     /* stride of top */
} duet_gpu_sample_out;

typedef struct duet_gpu_sampler duet_gpu_sampler; /* device scratch for up to max_rows rows */

/* Scratch for rows of vocab logits, grown on demand. On failure a message in err. */
duet_status duet__gpu_sampler_create(uint32_t vocab, duet_gpu_sampler **out, char *err,
                                     size_t err_size);
void duet__gpu_sampler_destroy(duet_gpu_sampler *s);
/* Samples / scores n rows of logits (device, [n][vocab] f32) with the settings d_rows (device)
 * — h_rows is the same array on the host, read to plan the work. Enqueued on stream; returns
 * DUET_STATUS_DEVICE (message in err) when a launch or an allocation fails. */
duet_status duet__gpu_sample(duet_gpu_sampler *s, cudaStream_t stream, const float *logits,
                             uint32_t n, const duet_gpu_sample_row *d_rows,
                             const duet_gpu_sample_row *h_rows, const duet_gpu_sample_out *out,
                             char *err, size_t err_size);

/* Minor 3 penalties: one edit of one logit row (sampling.h's duet__penalty_edit), and the
 * kernels around the sampler: the edits on a copy of the rows before it, the raw rows'
 * log-probability of the tokens it drew after it. Enqueued on stream. */
typedef struct duet_gpu_penalty_edit {
    uint32_t row;     /* logit row of the call */
    int32_t token;    /* the logit edited: sampling.h's duet__penalty_edit from here on */
    float bias;       /* added first */
    float repetition; /* then divides a positive value, multiplies a negative one */
    double subtract;  /* then subtracted */
} duet_gpu_penalty_edit;

cudaError_t duet__gpu_penalize(cudaStream_t s, float *logits, uint32_t vocab,
                               const duet_gpu_penalty_edit *edits, uint32_t n);
cudaError_t duet__gpu_token_logprobs(cudaStream_t s, const float *logits, uint32_t vocab,
                                     uint32_t n, const int32_t *tokens, float *out);

#ifdef __cplusplus
}
#endif

#endif /* DUET_GPU_WORKER_INT_H */
