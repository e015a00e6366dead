/*
 * plan.h — the GPU worker's host arithmetic, without CUDA (plan.c; docs/gpu-worker.md): element
 * types, the paged KV cache's layout, tensor-parallel shards, cache sizing, one step's flat
 * arrays, the prefill attention tile and the sampler's per-row settings. The device code includes
 * it through gpu_worker-int.h; the host tests (tests/check_gpu_host.c) include it alone and build
 * everywhere, CUDA or not.
 *
 * The KV cache of a rank is one device pool of num_blocks blocks; a block holds block_size
 * positions of every layer, K and V, so that copy and swap move one contiguous range per block:
 *
 *   block b ─► [layer][kind: 0 = K, 1 = V][kv_head][slot][head_dim]
 *
 * Functions marked DUET_GPU_HD compile for the host and the device from this header, so the host
 * tests check the very index arithmetic the kernels use.
 */
#ifndef DUET_GPU_PLAN_H
#define DUET_GPU_PLAN_H

#include <duet/model.h>
#include <duet/plugin.h>
#include <duet/types.h>

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
/* Shared memory the prefill kernel needs for cfg's tile and head_dim (the layout at the top of
 * kernels.cu). */
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

/* ---- the sampler's row settings (sample.cu) ------------------------------------------------- */

/* What one row of logits is for (duet_gpu_sample_row.mode). */
#define DUET_GPU_ROW_SAMPLE (1u << 0) /* choose a token (and its probability row, logprob) */
#define DUET_GPU_ROW_SCORE (1u << 1)  /* prompt log-probabilities: top-n and the next token */
#define DUET_GPU_ROW_FINITE                                                                        \
    (1u << 2) /* SAMPLE: a row with a non-finite logit is not sampled:                             \
                 DUET_TOKEN_NONFINITE (the worker's rows; without it NaN                           \
                 counts as -inf and +inf shares the mass, as sampling.h) */

/* One row's settings, on the device (sampling.h has the semantics; the GPU sampler follows
 * them: the same order, filters and draw, in double precision, with sampling.h's own
 * duet__rng_uniform, which compiles for the device too). */
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

#ifdef __cplusplus
}
#endif

#endif /* DUET_GPU_PLAN_H */
