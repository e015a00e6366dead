/*
 * gpu_worker-int.h — the GPU worker's internal interfaces (docs/gpu-worker.md).
 *
 *   worker.c    the plugin table, settings, weights to the device, cache, execute, ranks (threads)
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
 * The KV cache of a rank is one device pool of num_blocks blocks; a block holds block_size
 * positions of every layer, K and V, so that copy and swap move one contiguous range per block:
 *
 *   block b ─► [layer][kind: 0 = K, 1 = V][kv_head][slot][head_dim]
 *
 * Functions marked DUET_GPU_HD compile for the host and the device from this header, so the host
 * tests check the very index arithmetic the kernels use.
 */
#ifndef DUET_GPU_WORKER_INT_H
#define DUET_GPU_WORKER_INT_H

#include <duet/model.h>
#include <duet/plugin.h>
#include <duet/types.h>

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DUET_GPU_HD __host__ __device__
#else
#define DUET_GPU_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the probe (probe.cu) ----------------------------------------------------------------- */

/* Number of visible CUDA devices; 0 when there is none or no driver. Never fails. */
int duet__gpu_device_count(void);

/* y[i] += a * x[i] for i < n, computed on device 0: a round trip through device memory and one
 * kernel launch, used to check the CUDA build and toolchain end to end. DUET_STATUS_UNSUPPORTED
 * when no device is present, DUET_STATUS_DEVICE with the failing call and CUDA's message in
 * errbuf when the runtime fails. */
duet_status duet__gpu_saxpy(size_t n, float a, const float *x, float *y, char *errbuf,
                            size_t errbuf_size);

/* The device-memory bandwidth of `device`: copies a buffer of `bytes` into another `passes`
 * times (cudaMemcpy device to device, each copy timed by CUDA events) and sets *best_gbs to the
 * best pass in GB/s (10^9 bytes) counting the read and the write: 2 x bytes per copy.
 * DUET_STATUS_UNSUPPORTED with "no CUDA device N" in err when the device is absent,
 * DUET_STATUS_DEVICE with the failing call when the runtime fails. */
duet_status duet__gpu_copy_bandwidth(int device, size_t bytes, uint32_t passes, double *best_gbs,
                                     char *err, size_t err_size);

/* ---- element types ------------------------------------------------------------------------ */

typedef enum duet_gpu_dtype {
    DUET_GPU_F32 = 0,
    DUET_GPU_BF16 = 1,
    DUET_GPU_F16 = 2,
} duet_gpu_dtype;

static inline DUET_GPU_HD size_t duet__gpu_dtype_size(duet_gpu_dtype dt)
{
    return dt == DUET_GPU_F32 ? 4 : 2;
}

/* ---- the paged KV cache ------------------------------------------------------------------- */

typedef struct duet_gpu_kv {
    void *base;           /* device: [num_blocks][block_elems] elements of dtype */
    size_t block_elems;   /* num_layers × 2 × kv_heads × block_size × head_dim */
    uint32_t num_blocks;  /* blocks in the pool */
    uint32_t block_size;  /* positions per block */
    uint32_t num_layers;  /* layers per block */
    uint32_t kv_heads;    /* key/value heads this rank keeps */
    uint32_t head_dim;    /* elements per head */
    duet_gpu_dtype dtype; /* element type */
} duet_gpu_kv;

/* Element offset of (block, layer, kind 0 = K / 1 = V, kv head, slot in block, 0) in the pool. */
static inline DUET_GPU_HD size_t duet__gpu_kv_offset(const duet_gpu_kv *kv, uint32_t block,
                                                     uint32_t layer, uint32_t kind, uint32_t head,
                                                     uint32_t slot)
{
    return (size_t)block * kv->block_elems +
           ((((size_t)layer * 2 + kind) * kv->kv_heads + head) * kv->block_size + slot) *
               kv->head_dim;
}

/* The element offset of position `pos` of a sequence (kind, head) through its block table. */
static inline DUET_GPU_HD size_t duet__gpu_kv_pos_offset(const duet_gpu_kv *kv,
                                                         const uint32_t *block_table,
                                                         uint32_t layer, uint32_t kind,
                                                         uint32_t head, uint32_t pos)
{
    return duet__gpu_kv_offset(kv, block_table[pos / kv->block_size], layer, kind, head,
                               pos % kv->block_size);
}

/* ---- one step's layout, built on the host (plan.c) and uploaded in one copy ---------------- */

/* One sequence of a forward: its fed rows row0 .. row0 + n - 1 are at positions pos .. pos + n
 * - 1 and attend, causally, to positions 0 .. their own of the sequence, through the block table
 * at block_tables + bt. */
typedef struct duet_gpu_seg {
    uint32_t row0; /* first fed row of the sequence in the step */
    uint32_t n;    /* fed rows */
    uint32_t pos;  /* position of row0 */
    uint32_t bt;   /* offset of its block table in the step's block-table array */
} duet_gpu_seg;

/* A tile of query rows of one sequence for the prefill attention kernel: rows q0 .. q0 +
 * q_rows - 1 of the sequence (clipped to its n), q_rows as duet_gpu_prefill_cfg says. */
typedef struct duet_gpu_tile {
    uint32_t seg; /* index into the step's segments */
    uint32_t q0;  /* first row of the tile, counted from the segment's row0 */
} duet_gpu_tile;

/* Positions one block of the decode attention kernel covers; longer contexts split into
 * partitions merged by a second kernel (split-K along the context). */
#define DUET_GPU_DECODE_PARTITION 512u

/* Partitions of a context of len positions (>= 1 for len >= 1). */
static inline DUET_GPU_HD uint32_t duet__gpu_decode_parts(uint32_t len)
{
    return (len + DUET_GPU_DECODE_PARTITION - 1) / DUET_GPU_DECODE_PARTITION;
}

/* Shape of the prefill attention kernel for a head size (duet__gpu_prefill_config). */
typedef struct duet_gpu_prefill_cfg {
    uint32_t q_rows;     /* query rows per tile (block) */
    uint32_t kv_rows;    /* key / value positions staged in shared memory at a time */
    uint32_t threads;    /* threads per block */
    size_t shared_bytes; /* dynamic shared memory per block */
} duet_gpu_prefill_cfg;

/* Chooses the prefill tile for head_dim (<= DUET_GPU_MAX_HEAD_DIM) within shared_limit bytes of
 * shared memory per block: Q, K, V tiles and the output accumulators in f32, plus the scores.
 * INVALID_ARGUMENT when no tile fits. */
#define DUET_GPU_MAX_HEAD_DIM 256u
duet_status duet__gpu_prefill_config(uint32_t head_dim, size_t shared_limit,
                                     duet_gpu_prefill_cfg *out);
/* Shared memory the prefill kernel needs for cfg's tile and head_dim. */
size_t duet__gpu_prefill_shared(uint32_t q_rows, uint32_t kv_rows, uint32_t head_dim);

/* ---- tensor parallelism and cache sizing (plan.c) ------------------------------------------ */

/* What rank `rank` of `tp` keeps of a model: column-parallel q|k|v and gate|up (its heads and
 * intermediate columns), row-parallel o and down (the same ranges as inputs), a vocabulary-
 * parallel lm_head (rows vocab0 .. vocab0 + n_vocab − 1, padded to vocab_pad rows). Key/value
 * heads are split when tp divides them and replicated when they divide tp (each rank then keeps
 * the one its query heads read). */
typedef struct duet_gpu_shard {
    uint32_t rank, tp;
    uint32_t head0, n_heads;       /* query heads */
    uint32_t kv_head0, n_kv_heads; /* key / value heads */
    uint32_t inter0, n_inter;      /* MLP columns (intermediate_size) */
    uint32_t vocab0, n_vocab;      /* real lm_head rows */
    uint32_t vocab_pad;            /* rows of every rank's lm_head: ceil(vocab / tp) */
} duet_gpu_shard;

/* Fills *out, or INVALID_ARGUMENT / UNSUPPORTED with the reason in err when tp does not divide
 * the model (heads, intermediate size; key/value heads neither divided nor dividing). */
duet_status duet__gpu_shard(const duet_model_desc *d, uint32_t tp, uint32_t rank,
                            duet_gpu_shard *out, char *err, size_t err_size);

/* Bytes of one KV block on one rank. */
uint64_t duet__gpu_block_bytes(const duet_model_desc *d, const duet_gpu_shard *sh,
                               uint32_t block_size, duet_gpu_dtype dt);
/* Blocks that fit: budget / (rank block bytes × tp) when budget > 0 (a budget for all ranks),
 * else the smallest over ranks of what the cap fraction × total_bytes[r] leaves above the memory
 * already in use (total − free: the weights, the CUDA context, other processes), divided by the
 * rank block bytes (vLLM's gpu_memory_utilization). */
uint64_t duet__gpu_num_blocks(uint64_t budget, const uint64_t *free_bytes,
                              const uint64_t *total_bytes, uint32_t tp, double fraction,
                              uint64_t rank_block_bytes);

/* ---- one step's arrays (plan.c) ------------------------------------------------------------ */

/* One sequence of a forward as execute hands it to the planner. */
typedef struct duet_gpu_plan_seq {
    const int32_t *tokens;       /* [n] */
    uint32_t n;                  /* fed tokens (>= 1) */
    uint32_t pos;                /* position of tokens[0] */
    const uint32_t *block_table; /* covers positions 0 .. pos + n − 1 (checked by the caller) */
} duet_gpu_plan_seq;

/* Counts and byte offsets of the arrays of one forward, laid out in one arena (16-byte aligned
 * arrays) that is filled on the host and copied to every rank's device at once. */
typedef struct duet_gpu_plan {
    uint32_t n_rows;    /* fed rows */
    uint32_t n_segs;    /* sequences */
    uint32_t n_dec;     /* sequences with one fed row: the decode kernel */
    uint32_t max_parts; /* decode partitions of the longest decode context (0 without decode) */
    uint32_t n_tiles;   /* prefill tiles of the sequences with more than one row */
    uint32_t n_bt;      /* block-table entries */
    uint32_t n_out;     /* rows of logits (set by the caller before duet__gpu_plan_layout) */
    uint32_t q_rows;    /* rows per prefill tile */
    size_t off_tokens;  /* uint32_t [n_rows] token ids */
    size_t off_pos;     /* uint32_t [n_rows] positions */
    size_t off_slot;    /* uint32_t [n_rows] physical slots (block × block_size + offset) */
    size_t off_segs;    /* duet_gpu_seg [n_segs] */
    size_t off_dec;     /* uint32_t [n_dec] indices of the decode sequences */
    size_t off_tiles;   /* duet_gpu_tile [n_tiles] */
    size_t off_bt;      /* uint32_t [n_bt] block tables back to back */
    size_t off_out;     /* uint32_t [n_out] the fed row of each logit row (caller fills) */
    size_t off_rows;    /* duet_gpu_sample_row [n_out] their sampling settings (caller fills) */
    size_t bytes;       /* the whole arena */
} duet_gpu_plan;

/* Counts the rows, segments, decode partitions, tiles (q_rows rows each) and block-table entries
 * of seqs[0 .. n) for blocks of block_size; clears n_out. */
void duet__gpu_plan_count(duet_gpu_plan *p, const duet_gpu_plan_seq *seqs, uint32_t n,
                          uint32_t block_size, uint32_t q_rows);
/* Sets the offsets and the size of the arena from the counts (n_out included). */
void duet__gpu_plan_layout(duet_gpu_plan *p);
/* Writes tokens, positions, slots, segments, the decode list, tiles and block tables into the
 * arena (p->bytes bytes); the caller writes the logit rows and their settings. */
void duet__gpu_plan_fill(const duet_gpu_plan *p, void *arena, const duet_gpu_plan_seq *seqs,
                         uint32_t n, uint32_t block_size);

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

/* What one row of logits is for (duet_gpu_sample_row.mode). */
#define DUET_GPU_ROW_SAMPLE (1u << 0) /* choose a token (and its probability row, logprob) */
#define DUET_GPU_ROW_SCORE (1u << 1)  /* prompt log-probabilities: top-n and the next token */
#define DUET_GPU_ROW_FINITE                                                                        \
    (1u << 2) /* SAMPLE: a row with a non-finite logit is not sampled:                             \
                 DUET_TOKEN_NONFINITE (the worker's rows; without it NaN                           \
                 counts as -inf and +inf shares the mass, as sampling.h) */

/* One row's settings, on the device (sampling.h has the semantics; the GPU sampler follows
 * them: the same order, filters and draw, in double precision, with sampling.h's own
 * duet_rng_uniform, which compiles for the device too). */
typedef struct duet_gpu_sample_row {
    float temperature; /* < DUET_SAMPLING_EPS: greedy */
    float top_p;
    float min_p;
    int32_t top_k;
    uint64_t seed;
    uint64_t position; /* position of the token chosen: u = rng(seed, position, 0) */
    uint32_t mode;     /* DUET_GPU_ROW_* */
    uint32_t n_top;    /* SAMPLE: top-n raw log-probabilities of the row; SCORE: the same for the
                          prompt (0: none) */
    int32_t next;      /* SCORE: the next fed token (its logprob into next_logprob), -1 none */
    uint32_t reserved;
} duet_gpu_sample_row;

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

#ifdef __cplusplus
}
#endif

#endif /* DUET_GPU_WORKER_INT_H */
