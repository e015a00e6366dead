/*
 * cpu_worker-int.h — the CPU worker's internal interfaces (docs/cpu-worker.md).
 *
 *   worker.c    the plugin table: create / describe / cache_geometry / init_cache / execute
 *   forward.c   one forward pass over a batch of segments (llama2.c's run.c, paged)
 *   linear.c    weight GEMMs through oneDNN matmul, weights pre-packed once at load
 *   kernels.c   norms, RoPE, activations, the paged KV cache and paged attention
 *   ../sampling the sampler shared with the engine
 *
 * The KV cache is one host pool of num_blocks blocks. A block holds block_size positions of every
 * layer, K and V, so that copy and swap move one contiguous range per block:
 *
 *   block b ─► [layer][kind: 0 = K, 1 = V][kv_head][slot][head_dim]   elements f32 or bf16
 *
 * Activations are row-major f32 with an explicit row stride (elements); row r of a batch is one
 * fed token. Kernels with OpenMP loops run on the calling thread's team (omp_set_num_threads is
 * called by the worker before each execute).
 */
#ifndef DUET_CPU_WORKER_INT_H
#define DUET_CPU_WORKER_INT_H

#include <duet/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Compiles a hot loop's function, and everything it calls (flatten), for AVX-512, AVX2 and
 * baseline x86-64, the dynamic linker picking one by CPUID (an ifunc): the worker's own files are
 * built for baseline x86-64, where these loops run 4 floats wide. Only with GCC on x86-64 ELF. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#define DUET_CPU_CLONES                                                                            \
    __attribute__((flatten, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DUET_CPU_CLONES
#endif

/* ---- bf16 --------------------------------------------------------------------------------- */

static inline float duet__cpu_bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}

/* Round to nearest, ties to even; NaN stays NaN. */
static inline uint16_t duet__cpu_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* IEEE half to f32, exact (model/dtype.c's duet_f16_to_f32, which the hot loops cannot inline),
 * without branches so that loops of it vectorise: the exponent is
 * rebiased by adding (127 − 15) << 23, an all-ones exponent (inf, NaN) gets the rest of the
 * way, a zero one (zero, subnormal) is normalised by subtracting 2⁻¹⁴ after adding its bit. */
static inline float duet__cpu_f16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } o = {(uint32_t)(h & 0x7fffu) << 13}, sub = {113u << 23};
    uint32_t exp = o.u & 0x0f800000u;

    o.u += (127u - 15u) << 23;
    if (exp == 0x0f800000u)
        o.u += (128u - 16u) << 23;
    else if (exp == 0) {
        o.u += 1u << 23;
        o.f -= sub.f;
    }
    o.u |= (uint32_t)(h & 0x8000u) << 16;
    return o.f;
}

void duet__cpu_f32_to_bf16_rows(const float *in, uint16_t *out, size_t n);

/* ---- the paged KV cache (kernels.c) -------------------------------------------------------- */

/* Attention keeps a head's state on the stack: the worker refuses models with larger heads. */
#define DUET_CPU_MAX_HEAD_DIM 512

typedef struct duet_cpu_kv {
    void *base;            /* [num_blocks][block_elems] elements, 64-byte aligned */
    uint32_t num_blocks;   /* blocks in the pool */
    uint32_t block_size;   /* positions per block */
    uint32_t num_layers;   /* layers per block */
    uint32_t num_kv_heads; /* key/value heads */
    uint32_t head_dim;     /* elements per head */
    bool bf16;             /* elements are bf16 (else f32) */
    uint32_t window;       /* sliding window: position p reads p - window + 1 .. p (0: all);
                              set after duet__cpu_kv_layout */
    size_t block_elems;    /* num_layers × 2 × num_kv_heads × block_size × head_dim */
    size_t block_bytes;    /* block_elems × element size */
} duet_cpu_kv;

/* Fills the geometry fields of kv (base NULL, num_blocks 0). */
void duet__cpu_kv_layout(duet_cpu_kv *kv, uint32_t block_size, uint32_t num_layers,
                         uint32_t num_kv_heads, uint32_t head_dim, bool bf16);

/* One sequence's share of a batch: its fed tokens are rows row0 .. row0 + n - 1, at positions
 * pos .. pos + n - 1, stored through block_table (long enough for every position: checked by
 * the caller). */
typedef struct duet_cpu_seg {
    const uint32_t *block_table; /* physical block ids */
    uint32_t pos;                /* position of row row0 */
    uint32_t n;                  /* rows (fed tokens) */
    uint32_t row0;               /* first row in the batch's activations */
} duet_cpu_seg;

/* Stores K and V of every row of every segment in layer `layer`: row r's K is
 * k[r × stride .. + num_kv_heads × head_dim) (heads back to back), V likewise from v. */
void duet__cpu_kv_write(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                        uint32_t n_segs, const float *k, const float *v, size_t stride);

/*
 * Causal paged attention of layer `layer` for every row of every segment: row r at position p
 * attends to positions 0 .. p of its own sequence (p - kv->window + 1 .. p with a sliding window:
 * the blocks before it may be gone, replaced by the block manager's null block), read from the
 * cache (so the layer's K and V for the rows must have been written first). q: row r's heads at q +
 * r × q_stride
 * ([num_heads][head_dim], RoPE applied); out likewise at out + r × out_stride. Query head h reads
 * kv head h / (num_heads / num_kv_heads). softmax(scale × q·k) weights V. Online softmax over
 * blocks: no scratch, any block size, any context length.
 */
void duet__cpu_attention(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                         uint32_t n_segs, uint32_t num_heads, float scale, const float *q,
                         size_t q_stride, float *out, size_t out_stride);

/* RoPE on the q and k heads of each row of qkv ([q: num_heads][k: num_kv_heads][v] × head_dim,
 * row stride `stride`, angles as duet__cpu_rope takes them), then K and V into the cache as
 * duet__cpu_kv_write: one pass over the rows instead of three. */
void duet__cpu_rope_kv_write(const duet_cpu_kv *kv, uint32_t layer, const duet_cpu_seg *segs,
                             uint32_t n_segs, float *qkv, size_t stride, uint32_t num_heads,
                             const float *cos_sin);

/* Copies block src to dst (both in kv), or between kv and a swap pool of the same layout. */
void duet__cpu_kv_copy_block(const duet_cpu_kv *from, uint32_t src, const duet_cpu_kv *to,
                             uint32_t dst);

/* ---- element-wise kernels (kernels.c) ------------------------------------------------------ */

/* y[r] = x[r] / sqrt(mean(x[r]²) + eps) × w, for n_rows rows of dim (strides in elements;
 * y may equal x). */
void duet__cpu_rmsnorm(const float *x, size_t x_stride, const float *w, float eps, float *y,
                       size_t y_stride, uint32_t n_rows, uint32_t dim);
/* RMSNorm of each of the n_heads heads of head_dim in each row of x (row stride `stride`), in
 * place, with the weights w[head_dim] (Qwen3's q_norm / k_norm). */
void duet__cpu_head_rmsnorm(float *x, size_t stride, uint32_t n_rows, uint32_t n_heads,
                            uint32_t head_dim, const float *w, float eps);
/* y[r] = (x[r] − mean) / sqrt(var + eps) × w + b (biased variance; y may equal x). */
void duet__cpu_layernorm(const float *x, size_t x_stride, const float *w, const float *b, float eps,
                         float *y, size_t y_stride, uint32_t n_rows, uint32_t dim);

/* Rotates n_heads heads of head_dim in each row (Hugging Face rotate_half: element i pairs with
 * i + head_dim / 2) by row r's angles: cos_sin[r × head_dim + i] = cos(pos_r × inv_freq[i]) and
 * cos_sin[r × head_dim + head_dim / 2 + i] = the sine, for i < head_dim / 2. */
void duet__cpu_rope(float *x, size_t stride, uint32_t n_rows, uint32_t n_heads, uint32_t head_dim,
                    const float *cos_sin);
/* cos_sin[n][head_dim] for positions pos[n] (angles computed in double). */
void duet__cpu_rope_angles(const double *inv_freq, uint32_t head_dim, const uint32_t *pos,
                           uint32_t n, float *cos_sin);

/* out[r][i] = silu(gu[r][i]) × gu[r][inter + i]   (gate then up in one row of 2 × inter) */
void duet__cpu_silu_mul(const float *gu, size_t gu_stride, float *out, size_t out_stride,
                        uint32_t n_rows, uint32_t inter);
/* x[r][i] = max(x[r][i], 0) */
void duet__cpu_relu(float *x, size_t stride, uint32_t n_rows, uint32_t dim);
/* y[r][i] += x[r][i] */
void duet__cpu_add(float *y, size_t y_stride, const float *x, size_t x_stride, uint32_t n_rows,
                   uint32_t dim);

/* ---- greedy sampling (argmax.c) ----------------------------------------------------------- */

/* When every one of the n logits is finite: true, and *token = the index of the largest (the
 * lowest on ties, −0 equal to +0): sampling's greedy token, in one vectorised pass. False
 * (token untouched) when a logit is NaN or ±inf, or n is 0. */
bool duet__cpu_argmax(const float *logits, size_t n, uint32_t *token);

/* ---- weight GEMMs through oneDNN (linear.c) ------------------------------------------------ */

typedef struct duet_cpu_dnn duet_cpu_dnn;       /* engine, stream, scratch: one per worker */
typedef struct duet_cpu_linear duet_cpu_linear; /* one packed weight matrix */

/* The oneDNN CPU engine and stream of one worker. The caller owns *out (duet_cpu_dnn_destroy).
 * On failure a message is written to err[err_size]. */
duet_status duet__cpu_dnn_create(duet_cpu_dnn **out, char *err, size_t err_size);
void duet__cpu_dnn_destroy(duet_cpu_dnn *dnn);

/*
 * Packs W[n][k] (row-major f32, as Hugging Face stores out × in) and optional bias[n] for
 * y = x·Wᵀ + bias, in bf16 (bf16 = true: bf16 weights and activations, f32 accumulation and
 * output) or f32. The layout is the one oneDNN's matmul picks for any M (the weights are read
 * once, not kept). The caller owns *out (duet_cpu_linear_destroy). `name` is used in messages.
 */
duet_status duet__cpu_linear_create(duet_cpu_dnn *dnn, const char *name, const float *w,
                                    const float *bias, uint32_t n, uint32_t k, bool bf16,
                                    duet_cpu_linear **out, char *err, size_t err_size);
void duet__cpu_linear_destroy(duet_cpu_linear *lin);
/* Bytes of the packed weights and bias. */
size_t duet__cpu_linear_bytes(const duet_cpu_linear *lin);

/* y[m][n] = x[m][k]·Wᵀ + bias for m rows: x rows at x + r × x_stride (f32; converted to bf16 in
 * the dnn's scratch when the linear is bf16), y contiguous ([m][n]). */
duet_status duet__cpu_linear_run(duet_cpu_dnn *dnn, const duet_cpu_linear *lin, const float *x,
                                 size_t x_stride, uint32_t m, float *y, char *err, size_t err_size);

/* True when oneDNN has a bf16 matmul here (AVX512-BF16 or AMX, within $ONEDNN_MAX_CPU_ISA): a
 * small primitive descriptor is asked for. */
bool duet__cpu_dnn_has_bf16(duet_cpu_dnn *dnn);
/* Creates every primitive of every shape made so far and the scratch the largest needs, so that
 * no oneDNN set-up happens while serving. */
duet_status duet__cpu_dnn_prepare(duet_cpu_dnn *dnn, char *err, size_t err_size);

#include "affinity.h"
#include "gemv.h"

/*
 * y[m][n] (row stride y_stride) = x·W'ᵀ + bias for a 2-byte GEMV weight computed in f32 — the
 * GEMM of bf16 / f16 storage where there is no bf16 matmul, or f16 anywhere: W' is widened, a
 * panel of whole tiles at a time, into panel (panel_elems floats, at least 16 × k), and each
 * panel is one dnnl_sgemm on the calling thread's OpenMP team. INVALID_ARGUMENT for a weight of
 * another format or a panel too small.
 */
duet_status duet__cpu_widened_run(const duet_gemv_weight *w, const float *x, size_t x_stride,
                                  uint32_t m, float *y, size_t y_stride, float *panel,
                                  size_t panel_elems, char *err, size_t err_size);

/* ---- the worker and its forward pass (worker.c, forward.c) ---------------------------------- */

#include <duet/model.h>

#include "sampling.h"
#include "worker_kit.h"

/* The own kernels take a matrix that also has a GEMM path for at most this many rows, the GEMM
 * above: decode, drafting and k + 1 scoring stay on the own kernels, prefill goes to oneDNN's
 * brgemm (bf16 compute; tinyllama bf16 at batch 4: 56–74 tokens/s in two runs against oneDNN's
 * 48, docs/performance.md) or to the widened f32 GEMM (2-byte weights computed in f32: there
 * the two prefill 16 and 48 tokens alike, 20.7 / 21.3 and 44.0 / 43.6 tokens/s on tinyllama
 * as on an AVX2 CPU, 2026-12-07, so the crossover is flat). int8 / int4 matrices have no GEMM
 * path and always run on the own kernels. 16 rather than 8 so that scoring k = 8 .. 15 proposals
 * stays on the kernels that decode runs: a float row is then summed in the same order as in a
 * 1-row step (greedy speculation reproduces the target), and f16 at k = 8 no longer widens the
 * whole matrix for 9 rows (`duet-bench score`: 11x a decode step before, docs/performance.md). */
#define DUET_CPU_GEMV_MAX_M 16u

/* One weight matrix y = x·Wᵀ + b, packed for oneDNN, for the own kernels, or both (bf16: the own
 * kernels for M ≤ DUET_CPU_GEMV_MAX_M, oneDNN above). */
typedef struct duet_cpu_mat {
    duet_cpu_linear *dnn;  /* oneDNN's packed copy, or NULL */
    duet_gemv_weight gemv; /* the own kernels' packed copy (gemv.data NULL when none) */
    uint32_t n, k;         /* outputs, inputs */
} duet_cpu_mat;

/* Weight-only quantisation of the worker's matrices (setting `weights`). */
typedef enum duet_cpu_quant {
    DUET_CPU_QUANT_NONE = 0, /* weights stored as `store` says */
    DUET_CPU_QUANT_INT8 = 1,
    DUET_CPU_QUANT_INT4 = 2,
} duet_cpu_quant;

/* How unquantised matrices are stored (setting `weights`, or the model file's type for auto). */
typedef enum duet_cpu_store {
    DUET_CPU_STORE_F32 = 0,  /* f32, oneDNN's f32 matmul */
    DUET_CPU_STORE_BF16 = 1, /* bf16: with a bf16 compute type oneDNN's bf16 matmul and the own
                                bf16 kernels, with f32 the own kernels widening to f32 */
    DUET_CPU_STORE_F16 = 2,  /* f16, widened to f32 by the own kernels */
} duet_cpu_store;

/* The panel of the 2-byte formats' f32 GEMM (duet__cpu_widened_run) holds this many floats
 * (1 MiB: 128 rows of k = 2048, 32 of k = 5632). Measured on tinyllama-1.1b bf16 as on an AVX2
 * CPU (2 threads, 2026-12-07): 1 and 4 MiB panels alike at 512 tokens (72.6 and 74.9 tokens/s),
 * the 1 MiB one a little ahead at 48 (43.6 against 39.7), where its panel stays in L2. */
#define DUET_CPU_PANEL_ELEMS (1u << 18)

/* One transformer layer's weights. Linear maps are NULL where the architecture has none; norm
 * vectors are f32 copies. */
typedef struct duet_cpu_layer {
    duet_cpu_mat *qkv;        /* [q | k | v] fused: (heads + 2 × kv_heads) × head_dim outputs */
    duet_cpu_mat *o;          /* attention output projection (o_proj / out_proj) */
    duet_cpu_mat *gate_up;    /* Llama: [gate | up] fused, 2 × intermediate outputs */
    duet_cpu_mat *down;       /* Llama: down_proj */
    duet_cpu_mat *fc1;        /* OPT */
    duet_cpu_mat *fc2;        /* OPT */
    float *norm1_w, *norm1_b; /* input_layernorm / self_attn_layer_norm ([hidden]) */
    float *norm2_w, *norm2_b; /* post_attention_layernorm / final_layer_norm of the layer */
    float *q_norm, *k_norm;   /* Qwen3: RMSNorm weights of each q / k head ([head_dim]) */
} duet_cpu_layer;

/* Per-step scratch, grown (never shrunk) to the largest step seen. */
typedef struct duet_cpu_scratch {
    size_t rows;           /* rows every buffer below holds */
    size_t out_rows;       /* rows of logits */
    float *x;              /* [rows][hidden] residual stream */
    float *h;              /* [rows][max(hidden, word_embed_proj_dim)] normed input / projections */
    float *qkv;            /* [rows][(heads + 2 kv_heads) × head_dim] */
    float *att;            /* [rows][heads × head_dim] */
    float *mlp;            /* [rows][2 × intermediate] */
    float *act;            /* [rows][intermediate] */
    float *cos_sin;        /* [rows][head_dim] */
    uint32_t *pos;         /* [rows] */
    float *final;          /* [out_rows][max(hidden, word_embed_proj_dim)] */
    float *logits;         /* [out_rows][vocab] */
    void *gemv_act;        /* prepared activations of the own kernels (duet__gemv_act_prepare) */
    size_t gemv_act_bytes; /* its size */
    float *panel;          /* widened weights of duet__cpu_widened_run, or NULL until needed */
    size_t panel_elems;    /* its floats */
    /* execute.c's bookkeeping: the rows of a step, and segs, tokens and logit_rows carved
     * from book (duet__cpu_book) */
    duet_kit_rows plan;   /* which logit row goes where */
    duet_kit_arena book;  /* segs, tokens, logit_rows */
    duet_cpu_seg *segs;   /* [sequences] */
    int32_t *tokens;      /* [fed] fed tokens, all sequences back to back */
    uint32_t *logit_rows; /* [fed] rows whose logits a step needs */
} duet_cpu_scratch;

/* ---- the decode-step breakdown (DUET_CPU_BREAKDOWN, docs/cpu-worker.md) ------------------- */

/* Where the time of a decode step goes, measured on the calling (master) thread around each
 * stage: a stage's time includes its OpenMP fork and join, so threads waiting at a region's end
 * barrier count in that stage; "rest" is the execute time outside every stage (the gaps
 * between them, the forward's bookkeeping). */
typedef enum duet_cpu_stage {
    DUET_CPU_STAGE_SETUP = 0, /* execute's checks, cache operations, bookkeeping, segments */
    DUET_CPU_STAGE_EMBED,     /* positions, RoPE angles, embedding rows */
    DUET_CPU_STAGE_ACT,       /* activation preparation of the GEMVs (fused RMSNorm, int8 quant) */
    DUET_CPU_STAGE_GEMV,      /* the layers' GEMVs (qkv, o, gate_up, down) */
    DUET_CPU_STAGE_ATTENTION, /* RoPE, K / V into the cache, paged attention */
    DUET_CPU_STAGE_ELEMWISE,  /* SiLU × up, residual adds, norms outside a GEMV's input */
    DUET_CPU_STAGE_LM_HEAD,   /* final norm, projection, lm_head (its preparation and GEMV) */
    DUET_CPU_STAGE_SAMPLE,    /* sampling, argmax, log-probabilities over the logit rows */
    DUET_CPU_NUM_STAGES
} duet_cpu_stage;

typedef struct duet_cpu_breakdown {
    bool on;                           /* $DUET_CPU_BREAKDOWN set at create */
    bool decode;                       /* the execute under way has fed one row a seq */
    uint64_t t0;                       /* ns: start of the execute under way */
    uint64_t cur[DUET_CPU_NUM_STAGES]; /* ns of the execute under way, per stage */
    uint64_t cur_steps;                /* forward passes of the execute under way */
    uint64_t ns[DUET_CPU_NUM_STAGES];  /* ns summed over the decode executes */
    uint64_t total_ns;                 /* ns of those executes, start to end */
    uint64_t steps;                    /* their forward passes (decode steps) */
    uint64_t seqs;                     /* their sequences (summed over executes) */
    uint64_t executes;                 /* their count */
} duet_cpu_breakdown;

/* CLOCK_MONOTONIC in ns. */
uint64_t duet__cpu_now_ns(void);

/* The stage clock: duet__cpu_bd_start gives a start time (0 when the breakdown is off, without
 * reading the clock); duet__cpu_bd_add adds the time since it to stage. */
#define duet__cpu_bd_start(w) ((w)->bd.on ? duet__cpu_now_ns() : 0)
#define duet__cpu_bd_add(w, stage, t0)                                                             \
    do {                                                                                           \
        if ((w)->bd.on)                                                                            \
            (w)->bd.cur[(stage)] += duet__cpu_now_ns() - (t0);                                     \
    } while (0)

/* Prints the breakdown of the decode executes so far to stderr (nothing when off or none). */
void duet__cpu_bd_report(const duet_worker *w);

struct duet_worker {
    const duet_host_services *host; /* settings and logging */
    char section[16];               /* "target" or "speculative" */
    duet_model *model;              /* the mapped model folder */
    const duet_model_desc *d;       /* its architecture */
    bool bf16;                      /* compute type bf16: bf16 GEMMs and KV cache (else f32) */
    duet_cpu_quant quant;           /* int8 / int4 weights (setting weights) */
    duet_cpu_store store;           /* storage of the unquantised matrices */
    char req_dtype[8];              /* setting dtype as given: auto | f32 | bf16 */
    char req_weights[8];            /* setting weights as given */
    uint32_t group;                 /* their group size (setting group_size) */
    bool zero_point;                /* asymmetric groups (setting zero_point) */
    bool quant_lm_head;             /* the lm_head quantised too (setting quantize_lm_head) */
    const duet_gemv_ops *gemv;      /* the own kernels CPUID chose */
    uint32_t threads;               /* OpenMP threads of every step */
    duet_cpu_affinity *affinity;    /* setting cpus: where the team runs (affinity.h) */
    uint64_t kv_budget;             /* cache bytes for a budget of 0 (cache.cpu_kv_space_gib) */
    duet_cpu_dnn *dnn;              /* oneDNN engine, stream, scratch */
    const duet_tensor *embed;       /* [vocab][width] read row by row from the mapping */
    const duet_tensor *positions;   /* OPT learned positions [max_position + 2][hidden] */
    duet_cpu_mat *project_in;       /* OPT, width != hidden */
    duet_cpu_mat *project_out;      /* OPT, width != hidden */
    duet_cpu_mat *lm_head;          /* [vocab][width] (the embeddings when tied) */
    float *final_w, *final_b;       /* final norm (NULL for OPT without one) */
    duet_cpu_layer *layers;         /* [num_layers] */
    double *inv_freq;               /* Llama: rotary frequencies [head_dim / 2] */
    uint64_t weight_bytes;          /* resident packed weights */
    duet_cpu_kv kv;                 /* the KV pool (base NULL before init_cache) */
    duet_cpu_kv swap;               /* swap pool, same layout */
    duet_cpu_scratch s;             /* per-step buffers */
    duet__sampler **samplers;       /* [threads] one per OpenMP thread */
    duet_kit_error err;             /* last_error() */
    duet_cpu_breakdown bd;          /* decode-step breakdown ($DUET_CPU_BREAKDOWN) */
};

/* Sets the calling thread's OpenMP team to the worker's thread count and pins it to the worker's
 * CPUs when it does not hold them already (affinity.h). Every entry point that runs the team
 * calls it first; DEVICE with w->err when a thread cannot be pinned. */
duet_status duet__cpu_enter_team(duet_worker *w);

/* Runs the model over rows of tokens (segments as duet__cpu_kv_write describes, rows numbered
 * 0 .. n_rows - 1 in segment order) and writes the logits of rows out_rows[0 .. n_out - 1] into
 * w->s.logits ([n_out][vocab]). Every token, position and block id has been checked. Grows the
 * scratch first; OUT_OF_MEMORY (with w->err) when it cannot. */
duet_status duet__cpu_forward(duet_worker *w, const duet_cpu_seg *segs, uint32_t n_segs,
                              const int32_t *tokens, uint32_t n_rows, const uint32_t *out_rows,
                              uint32_t n_out);
/* Makes the scratch hold rows rows and n_out logit rows; OUT_OF_MEMORY (with w->err). */
duet_status duet__cpu_grow_scratch(duet_worker *w, size_t rows, size_t n_out);
/* execute.c: the scratch of an execute() of max_rows fed tokens and max_out output rows, then a
 * forward pass through each path (GEMM prefill and GEMV decode, into the cache's first blocks,
 * which hold nothing yet) so that oneDNN's and OpenMP's lazy set-up happens at init_cache. */
duet_status duet__cpu_warm_up(duet_worker *w, uint32_t max_rows, uint32_t max_out);
/* y[m][n] = x·Wᵀ + b for m rows of x (row stride x_stride) through whichever packed copy of mat
 * suits m (forward.c). With norm_w, each row of x is RMS-normalised first (eps = the model's):
 * fused into the own kernels' input, a separate pass into w->s.h before oneDNN (x must not be
 * w->s.h then). */
duet_status duet__cpu_mat_run(duet_worker *w, const duet_cpu_mat *mat, const float *x,
                              size_t x_stride, uint32_t m, const float *norm_w, float *y);
/* Writes the message of a failure into w->err and returns st. */
duet_status duet__cpu_fail(duet_worker *w, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The plugin's execute() (execute.c). */
duet_status duet__cpu_execute(duet_worker *w, const duet_batch *batch, duet_batch_output *out);

#endif /* DUET_CPU_WORKER_INT_H */
