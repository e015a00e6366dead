/*
 * worker.h — the GPU worker's C glue (docs/gpu-worker.md): one duet_worker, one duet_gpu_rank
 * per GPU of its tensor-parallel group. Calls go one way: worker.c → execute.c → ranks.c, gemm.c
 * → the device code (gpu_worker-int.h); the plugin scaffolding is the worker kit's.
 *
 *   worker.c   plugin table, settings, weights to the devices, describe, cache sizing and pools
 *   execute.c  execute(): checks, cache operations, the step's plan, forward, sampling, rows out;
 *              it owns the step's buffers (host and device) and frees them
 *   ranks.c    the rank threads (one per GPU when tensor_parallel > 1), NCCL, and the failure
 *              messages of the worker and its ranks
 *   gemm.c     cuBLAS GEMMs
 *
 * Every rank holds the weights of its shard (gpu_worker-int.h: duet_gpu_shard), its own KV pool
 * and swap pool with the same block ids, a stream, a cuBLAS handle and scratch. A forward runs
 * the same plan on every rank; the residual stream is replicated, and the row-parallel GEMMs
 * (o, down) all-reduce it. Rank 0 gathers the logits and samples.
 */
#ifndef DUET_GPU_WORKER_H
#define DUET_GPU_WORKER_H

#include "gpu_worker-int.h"
#include "worker_kit.h"

#include <cublas_v2.h>
#include <pthread.h>
#ifdef DUET_HAVE_NCCL
#include <nccl.h>
#endif

/* One weight matrix y = x·Wᵀ (+ bias) on a device: W [n][k] of the worker's dtype. */
typedef struct duet_gpu_mat {
    void *w;     /* device [n][k] */
    float *bias; /* device [n] f32, or NULL */
    uint32_t n, k;
    bool shared; /* w belongs to another matrix (tied lm_head): not freed */
} duet_gpu_mat;

/* A layer's share on one rank. Llama: qkv, o, gate_up, down; OPT: qkv, o, fc1, fc2. Norm
 * vectors are f32 (replicated). */
typedef struct duet_gpu_layer {
    duet_gpu_mat qkv, o, gate_up, down, fc1, fc2;
    float *norm1_w, *norm1_b, *norm2_w, *norm2_b;
    float *q_norm, *k_norm; /* Qwen3: RMSNorm weights of each q / k head ([head_dim]) */
} duet_gpu_layer;

/* Device buffers of one step, grown (never shrunk) to the largest step seen. */
typedef struct duet_gpu_scratch {
    size_t rows;          /* fed rows the row buffers hold */
    size_t out_rows;      /* logit rows the output buffers hold */
    size_t parts;         /* floats of part_out */
    size_t arena_bytes;   /* bytes of arena */
    float *x;             /* [rows][hidden] residual stream (f32) */
    float *e;             /* [rows][wide] embeddings before project_in (OPT), f32 */
    void *h;              /* [rows][wide] GEMM input (dtype) */
    float *qkv;           /* [rows][(heads + 2 kv_heads) × head_dim] (rank's) */
    void *att;            /* [rows][heads × head_dim] (dtype) */
    float *mlp;           /* [rows][2 × inter] (rank's) */
    void *act;            /* [rows][inter] (dtype) */
    float *final;         /* [out_rows][wide] */
    void *final_t;        /* [out_rows][wide] (dtype) */
    float *logits;        /* [out_rows][vocab_pad] this rank's logits; rank 0 with tp = 1: all */
    float *gathered;      /* [tp][out_rows][vocab_pad] all-gathered shards (tp > 1) */
    float *all_logits;    /* [out_rows][vocab] (tp > 1, rank 0) */
    float *part_out;      /* decode attention partitions */
    float *part_ml;       /* their (max, sum) pairs */
    void *arena;          /* the step's plan (device copy) */
    int32_t *tokens;      /* [out_rows] sampler outputs (rank 0) */
    float *probs;         /* [out_rows][vocab] */
    float *token_logprob; /* [out_rows] */
    float *next_logprob;  /* [out_rows] */
    duet_logprob *top;    /* [out_rows][top_cap] */
    float *pen_logits;    /* [out_rows][vocab] penalised copy of the logit rows (rank 0) */
    int32_t *tokens2;     /* [out_rows] the raw rows' pass draws, discarded (rank 0) */
    uint32_t top_cap;     /* entries per row of top */
} duet_gpu_scratch;

typedef struct duet_gpu_rank {
    struct duet_worker *w;
    uint32_t index;      /* rank */
    int device;          /* CUDA device ordinal */
    duet_gpu_shard sh;   /* what this rank keeps */
    cudaStream_t stream; /* every operation of the rank */
    cublasHandle_t blas; /* bound to stream */
#ifdef DUET_HAVE_NCCL
    ncclComm_t comm; /* the group's communicator (tp > 1) */
#endif
    void *embed;                                   /* [vocab][width] (dtype) */
    void *positions;                               /* OPT [max_position + offset][hidden] (dtype) */
    duet_gpu_mat project_in, project_out, lm_head; /* lm_head: [vocab_pad][width] */
    float *final_w, *final_b;
    duet_gpu_layer *layers; /* [num_layers] */
    double *inv_freq;       /* Llama [head_dim / 2] */
    float *stage;           /* device f32 staging for weight conversion */
    uint64_t weight_bytes;  /* bytes of weights on this device */
    duet_gpu_kv kv;         /* KV pool (base NULL before init_cache) */
    void *swap;             /* pinned host swap pool, num_swap_blocks × block bytes */
    duet_gpu_scratch s;
    /* the job the rank threads run (ranks.c) */
    pthread_t thread;
    bool thread_started;
    duet_status st; /* last job's result */
    char err[512];  /* its message */
} duet_gpu_rank;

struct duet_worker {
    const duet_host_services *host;
    char section[16];          /* "target" or "speculative" */
    duet_model *model;         /* the mapped model folder */
    const duet_model_desc *d;  /* its architecture */
    duet_gpu_dtype dt;         /* weights, KV cache, GEMM inputs */
    uint32_t tp;               /* ranks */
    double memory_fraction;    /* of each device's memory for the cache (cache.memory_fraction) */
    duet_gpu_rank *ranks;      /* [tp] */
    duet_gpu_prefill_cfg pcfg; /* prefill attention tile (the smallest device's shared memory) */
    uint64_t weight_bytes;     /* over all ranks */
    uint32_t num_blocks, num_swap_blocks, block_size; /* the cache (0 before init_cache) */
    duet_gpu_sampler *sampler;                        /* on rank 0 */
    /* host side of a step (execute.c's), grown like the device scratch */
    duet_kit_arena h_arena;                  /* pinned: the plan */
    duet_kit_arena h_out;                    /* pinned: sampler outputs copied back */
    duet_kit_rows plan;                      /* which logit row goes where */
    duet_kit_arena book;                     /* the plan's sequences (duet_gpu_plan_seq) */
    struct duet__penalty_edit *edit_scratch; /* [cap_edit_scratch] one row's penalty edits */
    size_t cap_edit_scratch;
    /* rank threads (tp > 1) */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t generation; /* bumped per job */
    uint32_t finished;   /* ranks done with the current job */
    bool quit;
    bool pool; /* threads and the sync objects exist */
    duet_status (*job)(duet_gpu_rank *r, void *arg);
    void *job_arg;
    duet_kit_error err; /* last_error() */
};

typedef struct duet_worker duet_gpu_worker;

/* ---- ranks.c ------------------------------------------------------------------------------ */

/* Writes the message of a failure into w->err and returns st. */
duet_status duet__gpu_fail(duet_gpu_worker *w, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a rank (its job's message; ranks.c copies it to the worker). */
duet_status duet__gpu_rank_fail(duet_gpu_rank *r, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A CUDA runtime call inside a rank job: a failure returns DUET_STATUS_DEVICE (OUT_OF_MEMORY for
 * cudaErrorMemoryAllocation) with the call and CUDA's message. */
#define GPU_TRY(r, call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return duet__gpu_rank_fail(                                                            \
                (r),                                                                               \
                e_ == cudaErrorMemoryAllocation ? DUET_STATUS_OUT_OF_MEMORY : DUET_STATUS_DEVICE,  \
                "gpu worker: device %d: %s: %s", (r)->device, #call, cudaGetErrorString(e_));      \
    } while (0)

/* Starts one thread per rank (tp > 1) and the NCCL communicator; nothing for tp = 1. */
duet_status duet__gpu_ranks_start(duet_gpu_worker *w);
/* Stops the threads and destroys the communicator. */
void duet__gpu_ranks_stop(duet_gpu_worker *w);
/* Runs job on every rank (each on its own thread, device set) and waits; the first failing
 * rank's status and message become the worker's. */
duet_status duet__gpu_ranks_run(duet_gpu_worker *w, duet_status (*job)(duet_gpu_rank *, void *),
                                void *arg);
/* Sum of x[0 .. count) over the ranks, in place, on r's stream (nothing for tp = 1). */
duet_status duet__gpu_allreduce(duet_gpu_rank *r, float *x, size_t count);
/* Every rank's send[0 .. count) into recv[rank × count ..] on every rank. */
duet_status duet__gpu_allgather(duet_gpu_rank *r, const float *send, float *recv, size_t count);

/* ---- gemm.c ------------------------------------------------------------------------------- */

/* y[m][n] = beta × y + x[m][k]·Wᵀ for the matrix (x of the worker's dtype with row stride
 * x_stride, y f32 with row stride y_stride), f32 accumulation; the bias is not applied. */
duet_status duet__gpu_gemm(duet_gpu_rank *r, const duet_gpu_mat *mat, const void *x,
                           size_t x_stride, uint32_t m, float *y, size_t y_stride, float beta);

/* ---- execute.c ---------------------------------------------------------------------------- */

duet_status duet__gpu_execute(duet_gpu_worker *w, const duet_batch *b, duet_batch_output *o);
/* Releases a rank's step buffers. */
void duet__gpu_scratch_free(duet_gpu_rank *r);
/* Releases the worker's host buffers of a step. */
void duet__gpu_host_scratch_free(duet_gpu_worker *w);

#endif /* DUET_GPU_WORKER_H */
