/*
 * duet/plugin.h — the worker plugin ABI (DESIGN §3).
 *
 * A worker plugin is a shared object (duet_cpu_worker.so, duet_gpu_worker.so) that owns one
 * model's weights and its KV cache and runs one forward step per call over a batch whose KV
 * layout the host decided. It exports exactly one symbol:
 *
 *     const duet_worker_plugin *duet_plugin_query(uint32_t host_abi_major,
 *                                                 const duet_host_services *host);
 *
 * Lifecycle, as the host drives it:
 *
 *     dlopen ─► duet_plugin_query ─► check table (major, fingerprint, struct_size, pointers)
 *       ─► create(params) ─► describe ─► cache_geometry ─► init_cache ─► execute ... execute
 *       ─► destroy ─► dlclose
 *
 * Rules both sides keep:
 * - Errors are values. Every operation returns duet_status; after a failure, last_error(worker)
 *   gives a message that names what was wrong. Nothing unwinds across the boundary and a plugin
 *   never calls exit() or abort(), whatever its input.
 * - Nothing allocated on one side is freed on the other. Input buffers belong to the host and are
 *   only read during the call; output buffers belong to the host and are written during the call.
 * - Fields are only ever appended within a major version. A table or parameter struct starts with
 *   struct_size (the size its writer was compiled with); a reader uses a field only when
 *   struct_size covers it (DUET_ABI_HAS_FIELD). The layout fingerprint covers the fields of
 *   minor 0, so it stays equal across minor versions and catches builds whose compiler laid the
 *   structs out differently.
 * - Threading: the host calls a worker from one thread at a time. Different workers (the target
 *   and the draft) may be called concurrently from different threads, so a plugin keeps no mutable
 *   global state. duet_plugin_query itself must be callable more than once.
 * - Block ids in a batch are physical indices into the worker's own pools: device blocks
 *   0..num_device_blocks-1 (host memory for the CPU worker), swap blocks 0..num_swap_blocks-1.
 *   The block manager's global numbering (device 0..G-1, host G..G+C-1) is translated by the host.
 * - Randomness: every random draw for a sequence comes from (sampling.seed, position of the row,
 *   draw index), never from a shared stream, so a request's output does not depend on the batch.
 */
#ifndef DUET_PLUGIN_H
#define DUET_PLUGIN_H

#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version. The major changes when a layout or a meaning changes; the minor when fields or
 * capabilities are appended. A host refuses a plugin of another major. */
#define DUET_ABI_MAJOR 1u
#define DUET_ABI_MINOR 4u

/* The one symbol a plugin exports, and its type. */
#define DUET_PLUGIN_QUERY_SYMBOL "duet_plugin_query"

/* True when a struct that starts with uint32_t struct_size, written by a peer, is large enough to
 * hold `field` (a pointer to the struct is p). */
#define DUET_ABI_HAS_FIELD(p, type, field)                                                         \
    ((p)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* ------------------------------------------------------------------------------------------ */
/* Host services: what the host offers a plugin.                                              */
/* ------------------------------------------------------------------------------------------ */

/*
 * Given to duet_plugin_query and again in duet_worker_params. The table and the context live
 * until the last worker created with it is destroyed. Plugins read their settings only through
 * these getters, so they never link libconfig.
 *
 * Keys are the configuration's dotted paths ("target.threads", "speculative.weights",
 * "cache.block_size"; docs/configuration.md). A key that was not given yields its default. The
 * getters return DUET_STATUS_NOT_FOUND for a key that does not exist or has no value, and
 * DUET_STATUS_INVALID_ARGUMENT for a key of another type. A returned string is owned by the host
 * and stays valid while the context lives.
 */
typedef struct duet_host_services {
    uint32_t struct_size; /* sizeof(duet_host_services) as the host was built */
    uint32_t abi_major;   /* DUET_ABI_MAJOR of the host */
    uint32_t abi_minor;   /* DUET_ABI_MINOR of the host */
    uint32_t reserved;    /* zero */
    void *ctx;            /* passed back as the first argument of every function below */
    duet_status (*config_get_string)(void *ctx, const char *key, const char **out);
    duet_status (*config_get_int)(void *ctx, const char *key, int64_t *out);
    duet_status (*config_get_float)(void *ctx, const char *key, double *out);
    duet_status (*config_get_bool)(void *ctx, const char *key, bool *out);
    /* Logs one message (no trailing newline needed) from the named plugin. Thread-safe. */
    void (*log)(void *ctx, duet_log_level level, const char *plugin, const char *message);
} duet_host_services;

/* ------------------------------------------------------------------------------------------ */
/* Worker creation and description                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Capability bits of a plugin (duet_worker_plugin.caps). */
#define DUET_CAP_TARGET (1ull << 0) /* can be the target model */
#define DUET_CAP_DRAFT (1ull << 1)  /* can be the draft: multi-step drafting in one execute */
#define DUET_CAP_SWAP (1ull << 2)   /* has swap space: swap_in / swap_out cache operations */
#define DUET_CAP_TP (1ull << 3)     /* tensor parallelism (tensor_parallel > 1) */
#define DUET_CAP_F32 (1ull << 4)    /* f32 compute */
#define DUET_CAP_BF16 (1ull << 5)   /* bf16 compute */
#define DUET_CAP_F16 (1ull << 6)    /* f16 compute */
#define DUET_CAP_INT8 (1ull << 7)   /* weight-only int8 */
#define DUET_CAP_INT4 (1ull << 8)   /* weight-only int4 */
#define DUET_CAP_VERIFY (1ull << 9) /* runs the rejection sampler itself (DUET_BATCH_VERIFY) */
#define DUET_CAP_PREFIX_CACHE (1ull << 10) /* prefill may start after a cached prefix (pos > 0) */
#define DUET_CAP_PENALTIES                                                                         \
    (1ull << 11) /* minor 3: applies duet_seq.penalties (the host sends                            \
                    none to a worker without it) */

/* The role a worker is created for. */
typedef enum duet_worker_role {
    DUET_ROLE_TARGET = 0,
    DUET_ROLE_DRAFT = 1,
} duet_worker_role;

/* Parameters of create(). Owned by the host; read during create() only, except `host`, which
 * lives as duet_host_services says. */
typedef struct duet_worker_params {
    uint32_t struct_size;           /* sizeof(duet_worker_params) as the host was built */
    uint32_t role;                  /* duet_worker_role */
    const char *model_dir;          /* Hugging Face model folder: config.json, *.safetensors */
    const char *section;            /* config group of this worker: "target" or "speculative" */
    const duet_host_services *host; /* settings and logging */
} duet_worker_params;

/* What a created worker tells the host about its model (describe()). */
typedef struct duet_model_info {
    uint32_t struct_size;     /* in: sizeof(duet_model_info) as the host was built */
    uint32_t vocab_size;      /* rows of the lm_head: length of every probability row */
    uint32_t max_position;    /* positions the model supports (max_position_embeddings) */
    uint32_t num_layers;      /* transformer layers */
    uint32_t num_kv_heads;    /* key/value heads (grouped-query attention) */
    uint32_t head_dim;        /* elements per head */
    int32_t bos_token_id;     /* -1 when the model has none */
    uint32_t n_eos;           /* valid entries of eos_token_ids */
    int32_t eos_token_ids[8]; /* end-of-sequence ids (generation_config.json may list several) */
    uint64_t weight_bytes;    /* bytes the weights occupy where they live */
    /* ---- minor 4 ---- */
    uint32_t sliding_window; /* position p attends to p - sliding_window + 1 .. p only, so the
                                host may free KV blocks before that; 0: all positions */
} duet_model_info;

/* KV-cache sizing (cache_geometry()). */
typedef struct duet_cache_geometry {
    uint32_t struct_size;  /* in: sizeof(duet_cache_geometry) as the host was built */
    uint32_t block_size;   /* in: tokens per KV block */
    uint64_t budget_bytes; /* in: bytes the cache may take; 0 = the worker's own limit (device
                              memory × cache.memory_fraction less what is in use, or
                              cache.cpu_kv_space_gib) */
    uint64_t block_bytes;  /* out: bytes of one block: all layers, K and V */
    uint64_t num_blocks;   /* out: blocks that fit the budget */
} duet_cache_geometry;

/* Cache allocation (init_cache()). */
typedef struct duet_cache_config {
    uint32_t struct_size;     /* sizeof(duet_cache_config) as the host was built */
    uint32_t block_size;      /* tokens per block, as given to cache_geometry() */
    uint32_t num_blocks;      /* device KV blocks (host memory for a CPU worker) */
    uint32_t num_swap_blocks; /* swap blocks in host memory; 0 without DUET_CAP_SWAP */
    /* Minor 2: the largest execute() the host will make (0: not known). A worker sets up its
     * scratch and its libraries for it now, so that running out of memory is an init_cache
     * error, not a failure in the middle of serving. */
    uint32_t max_rows;     /* fed tokens of one execute() */
    uint32_t max_out_rows; /* output rows (sampled and draft rows; prompt log-probability rows
                              may need more) */
} duet_cache_config;

/* ------------------------------------------------------------------------------------------ */
/* One execute() call                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* A block copy or move: physical ids as the header comment describes. */
typedef struct duet_block_pair {
    uint32_t src;
    uint32_t dst;
} duet_block_pair;

/* How a sequence samples. The same settings apply at every row the sequence produces: decode,
 * each scored position, each drafting step (vllm-semantics §4.7: the request's own settings at
 * every position). */
typedef struct duet_sampling_params {
    float temperature;          /* 0 = greedy (argmax; its probability row is one-hot) */
    float top_p;                /* keep the smallest set with mass >= top_p; 1 = off */
    float min_p;                /* drop tokens below min_p × the top probability; 0 = off */
    int32_t top_k;              /* keep the k most likely tokens; 0 = off */
    uint64_t seed;              /* every random draw comes from (seed, position, draw index) */
    uint32_t n_logprobs;        /* top-N log-probabilities per output row; 0 = none */
    uint32_t n_prompt_logprobs; /* top-N per fed position (DUET_BATCH_WANT_PROMPT_LOGPROBS) */
} duet_sampling_params;

/* Minor 3: one logit_bias entry: `bias` is added to the logit of `token`. */
typedef struct duet_token_bias {
    int32_t token; /* 0 .. vocab_size - 1 */
    float bias;    /* finite; the host allows -100 .. 100 */
} duet_token_bias;

/* Minor 3: a token the sequence holds before its first output row (see duet_penalties). */
typedef struct duet_token_count {
    int32_t token;  /* 0 .. vocab_size - 1 */
    uint32_t count; /* occurrences among the generated tokens; 0: only in the prompt */
} duet_token_count;

/*
 * Minor 3: vLLM's penalties and logit bias (vllm-semantics §4.7; docs/plugin-abi.md). Every
 * sampled row of the sequence (decode, each scored position, each drafting step) turns its raw
 * logits l into
 *
 *     l' = l + bias[t]                                     (logit_bias; 0 for unlisted tokens)
 *     l' = l' > 0 ? l' / repetition : l' * repetition       when t is in prompt ∪ generated
 *     l' = l' - frequency × count[t] - presence × (count[t] > 0)
 *
 * before temperature, top-k, top-p and min-p; probs rows and the token are drawn from l'. The
 * log-probabilities (token_logprobs, top-N, prompt log-probabilities) stay those of the raw
 * logits. `seen` describes the sequence up to and including the fed position of its first
 * output row (the prompt and the tokens generated so far). A later row of the same sequence also
 * counts, as generated, the fed tokens after that position (scoring: row j sees x1..xj) and the
 * tokens its earlier drafting steps sampled, so the target's row j and the draft's step j are
 * penalised alike (duet__penalty_recent() in sampling/sampling.h). Sparse: no vocab-sized array
 * crosses the boundary.
 */
typedef struct duet_penalties {
    uint32_t struct_size;        /* sizeof(duet_penalties) as the host was built */
    float repetition;            /* > 0; 1 = off */
    float frequency;             /* 0 = off (the host allows -2 .. 2) */
    float presence;              /* 0 = off (the host allows -2 .. 2) */
    const duet_token_bias *bias; /* [n_bias] strictly increasing token ids; NULL when 0 */
    uint32_t n_bias;
    uint32_t n_seen;              /* entries of seen */
    const duet_token_count *seen; /* [n_seen] strictly increasing token ids: every distinct
                                     token of the sequence so far; NULL when 0 (allowed only
                                     when repetition is 1 and frequency, presence 0) */
} duet_penalties;

/*
 * One sequence of a batch.
 *
 * tokens are fed at positions pos .. pos + n_tokens - 1, their K and V written into the sequence's
 * blocks (slot of position p: block_table[p / block_size], offset p % block_size); attention sees
 * positions 0 .. p. The last n_outputs fed positions each produce one output row: a sampled
 * token, and when asked its probability row and log-probabilities. Then n_draft_steps further
 * steps each feed the token sampled by the previous row at the next position and produce one more
 * row. Rows per sequence: n_outputs + n_draft_steps.
 *
 *   prefill chunk       tokens = prompt[a..b), pos = a,  n_outputs = (last chunk ? 1 : 0)
 *   decode              tokens = [last],       pos = L-1, n_outputs = 1
 *   scoring (target)    tokens = [last, x1..xk], pos = L-1, n_outputs = k+1
 *   drafting (draft)    tokens = [last],       pos = L-1, n_outputs = 1, n_draft_steps = k-1
 *                       (k proposals; the KV of x1..x_{k-1} is written, that of x_k is not)
 *   verify (target)     as scoring, plus draft_tokens / draft_probs, flag DUET_BATCH_VERIFY
 *
 * The block table must cover every position written: pos + n_tokens + n_draft_steps - 1.
 */
typedef struct duet_seq {
    uint64_t seq_id;             /* the host's id, for messages */
    const int32_t *tokens;       /* [n_tokens] */
    uint32_t n_tokens;           /* >= 1 */
    uint32_t pos;                /* position of tokens[0] */
    const uint32_t *block_table; /* [n_blocks] physical device block ids */
    uint32_t n_blocks;           /* entries of block_table */
    uint32_t n_outputs;          /* 0 .. n_tokens */
    uint32_t n_draft_steps;      /* extra autoregressive steps; draft role only; needs n_outputs */
    uint32_t reserved;           /* zero */
    duet_sampling_params sampling;
    const int32_t *draft_tokens; /* VERIFY: [n_outputs - 1] proposals x1..xk; else NULL */
    const float *draft_probs;    /* VERIFY: [n_outputs - 1][vocab_size] the rows they were
                                    sampled from; else NULL */
    /* ---- minor 3 (read it when batch->seq_size covers it) ---- */
    const duet_penalties *penalties; /* NULL: none; else only for a DUET_CAP_PENALTIES worker;
                                        read with duet_seq_penalties() */
} duet_seq;

/* Batch flags. */
#define DUET_BATCH_WANT_PROBS (1u << 0)           /* fill duet_batch_output.probs */
#define DUET_BATCH_WANT_LOGPROBS (1u << 1)        /* fill the top-N log-probabilities */
#define DUET_BATCH_WANT_PROMPT_LOGPROBS (1u << 2) /* fill prompt_logprobs for fed positions */
#define DUET_BATCH_VERIFY (1u << 3)               /* run rejection sampling (DUET_CAP_VERIFY) */

/*
 * The input of execute(). The cache operations run first, in the order swap_in, swap_out, copy
 * (vllm-semantics §3.2), then the forward pass over seqs. A batch with n_seqs = 0 only does the
 * cache operations. seq_size lets a newer host pass a longer duet_seq: sequence i is at
 * (const char *)seqs + i * seq_size (duet_batch_seq()).
 */
typedef struct duet_batch {
    uint32_t struct_size;           /* sizeof(duet_batch) as the host was built */
    uint32_t flags;                 /* DUET_BATCH_* */
    uint32_t n_swap_in;             /* entries of swap_in */
    uint32_t n_swap_out;            /* entries of swap_out */
    uint32_t n_copy;                /* entries of copy */
    uint32_t n_seqs;                /* entries of seqs */
    uint32_t seq_size;              /* sizeof(duet_seq) as the host was built: the stride of seqs */
    uint32_t max_logprobs;          /* stride of the logprob arrays: >= every n_logprobs and
                                       n_prompt_logprobs in the batch */
    const duet_block_pair *swap_in; /* src = swap block, dst = device block */
    const duet_block_pair *swap_out; /* src = device block, dst = swap block */
    const duet_block_pair *copy;     /* device src -> device dst (copy on write): K and V of
                                        every layer */
    const duet_seq *seqs;            /* see duet_batch_seq() */
} duet_batch;

/* duet_batch_output.tokens of a row whose logits held NaN or infinity: the worker sampled
 * nothing (its probs row is zero, its log-probabilities NAN / token -1), and a draft step fed
 * after it repeats the mark. The host fails that sequence's request, naming the model. */
#define DUET_TOKEN_NONFINITE (-2)

/* One entry of a top-N list. Unused entries (fewer candidates than N) have token -1. */
typedef struct duet_logprob {
    int32_t token;
    float logprob; /* natural log of the model's probability (raw logits, temperature 1) */
} duet_logprob;

/*
 * The output of execute(). Every array is allocated by the host, sized from the batch, and
 * written by the worker. Rows are numbered over the batch: sequence 0's rows first, each
 * sequence's rows in position order (R = total rows = sum of n_outputs + n_draft_steps;
 * P = total fed tokens = sum of n_tokens).
 */
typedef struct duet_batch_output {
    uint32_t struct_size;          /* sizeof(duet_batch_output) as the host was built */
    uint32_t n_rows;               /* in: R, the capacity of the row arrays (checked) */
    int32_t *tokens;               /* [R] the sampled token of each row; for VERIFY, the emitted
                                      tokens (n_accepted[i] + 1 of them) from the sequence's first
                                      row on, -1 after them; DUET_TOKEN_NONFINITE for a row whose
                                      logits were not all finite (nothing sampled) */
    float *probs;                  /* [R][vocab_size] WANT_PROBS: the distribution each token was
                                      sampled from, after temperature, top-k, top-p and min-p
                                      (one-hot for greedy); NULL otherwise */
    float *token_logprobs;         /* [R] WANT_LOGPROBS: log-probability of the sampled token */
    duet_logprob *logprobs;        /* [R][max_logprobs] WANT_LOGPROBS: top-n_logprobs, most likely
                                      first */
    duet_logprob *prompt_logprobs; /* [P][max_logprobs] WANT_PROMPT_LOGPROBS: at fed position j,
                                      the top-n_prompt_logprobs for the token after it */
    float *prompt_next_logprobs;   /* [P] WANT_PROMPT_LOGPROBS: log-probability of the next fed
                                      token (NAN for the last fed token of a sequence) */
    uint32_t *n_accepted;          /* [n_seqs] VERIFY: draft tokens accepted, 0..k */
} duet_batch_output;

/* Sequence i of a batch, honouring the host's seq_size. */
static inline const duet_seq *duet_batch_seq(const duet_batch *batch, uint32_t i)
{
    return (const duet_seq *)(const void *)((const char *)batch->seqs +
                                            (size_t)i * batch->seq_size);
}

/* The penalties of sequence q of batch (minor 3): NULL when the host's duet_seq (seq_size) is
 * older than the field or has none. Readers use this, never q->penalties directly. */
static inline const duet_penalties *duet_seq_penalties(const duet_batch *batch, const duet_seq *q)
{
    return batch->seq_size >= offsetof(duet_seq, penalties) + sizeof(q->penalties) ? q->penalties
                                                                                   : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The plugin table                                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct duet_worker duet_worker; /* opaque, owned by the plugin */

/*
 * What duet_plugin_query returns: a static table that lives until the plugin is unloaded. All
 * function pointers are required (never NULL).
 */
typedef struct duet_worker_plugin {
    uint32_t struct_size; /* sizeof(duet_worker_plugin) as the plugin was built */
    uint32_t abi_major;   /* DUET_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;   /* DUET_ABI_MINOR the plugin was built with */
    uint32_t reserved;    /* zero */
    uint64_t fingerprint; /* DUET_ABI_FINGERPRINT as the plugin was built */
    const char *name;     /* short name: "cpu", "gpu"; static */
    const char *version;  /* the plugin's own version string; static */
    uint64_t caps;        /* DUET_CAP_* */

    /* Loads the model and prepares to run it. On success *out is a worker the host releases with
     * destroy(); on failure *out is NULL and a NUL-terminated message (truncated to fit) is
     * written to errbuf[errbuf_size]. */
    duet_status (*create)(const duet_worker_params *params, duet_worker **out, char *errbuf,
                          size_t errbuf_size);
    /* Releases the worker, its weights and its cache. NULL is allowed. */
    void (*destroy)(duet_worker *worker);
    /* Fills *info (info->struct_size is set by the host). */
    duet_status (*describe)(duet_worker *worker, duet_model_info *info);
    /* Bytes per KV block for geom->block_size and how many fit geom->budget_bytes. */
    duet_status (*cache_geometry)(duet_worker *worker, duet_cache_geometry *geom);
    /* Allocates the KV cache (zero-filled) and the swap space; once per worker. */
    duet_status (*init_cache)(duet_worker *worker, const duet_cache_config *config);
    /* Runs the cache operations, then one forward step (see duet_batch). */
    duet_status (*execute)(duet_worker *worker, const duet_batch *batch, duet_batch_output *out);
    /* The message of the last failed call on worker; "" if none. Owned by the worker, valid until
     * its next call. */
    const char *(*last_error)(const duet_worker *worker);

    /* ---- minor 1 ---- */
    /* How the plugin runs on this machine, one line for people ("kernels avx512 (...)"), set by
     * the time duet_plugin_query returns; static. NULL or "" when it has nothing to say. */
    const char *details;
} duet_worker_plugin;

/* The exported entry point's type. host_abi_major is the host's DUET_ABI_MAJOR; a plugin that
 * cannot serve it returns NULL (the host then refuses it). */
typedef const duet_worker_plugin *(*duet_plugin_query_fn)(uint32_t host_abi_major,
                                                          const duet_host_services *host);

/*
 * The layout fingerprint: a constant expression over the sizes and offsets of the ABI structs as
 * they were in minor 0 of this major, and the sizes of the basic types they use, each weighted by
 * its own odd 64-bit constant (arithmetic is modulo 2^64). Whole-struct sizes enter only for
 * structs that can never grow (array elements, embedded structs); the others may gain fields in
 * a minor version. Host and plugin each evaluate it with their own compiler; a difference means
 * the two lay the structs out differently. Being a constant, it can initialise a static plugin
 * table.
 */
#define DUET__FP_FIELD(type, field, m_off, m_size)                                                 \
    ((uint64_t)offsetof(type, field) * (m_off) + (uint64_t)sizeof(((type *)0)->field) * (m_size))

#define DUET_ABI_FINGERPRINT                                                                       \
    ((uint64_t)DUET_ABI_MAJOR * 0x9362da5cc13da58bull +                                            \
     (uint64_t)sizeof(void *) * 0xf6fadfa7e5c15b63ull +                                            \
     (uint64_t)sizeof(void (*)(void)) * 0x7e6ddce7a7ace733ull +                                    \
     (uint64_t)sizeof(duet_status) * 0x2c63888f28f00481ull +                                       \
     (uint64_t)sizeof(bool) * 0x8f7b7676d015b0ddull +                                              \
     (uint64_t)sizeof(duet_block_pair) * 0x8a119b9e16bc1733ull +                                   \
     (uint64_t)sizeof(duet_logprob) * 0x609e467ada679f81ull +                                      \
     (uint64_t)sizeof(duet_sampling_params) * 0xac8efe121c5989f1ull +                              \
     DUET__FP_FIELD(duet_host_services, ctx, 0x0d9782bfcdc83011ull, 0x5796a670482c590full) +       \
     DUET__FP_FIELD(duet_host_services, log, 0xa93258ef7777682dull, 0x0b80a25553a12945ull) +       \
     DUET__FP_FIELD(duet_worker_params, host, 0x0f8a7abff2e91ac7ull, 0x45ac16b9c20dbc21ull) +      \
     DUET__FP_FIELD(duet_model_info, eos_token_ids, 0x789c1af40ce8fcc9ull,                         \
                    0xdd2ee150d2840277ull) +                                                       \
     DUET__FP_FIELD(duet_model_info, weight_bytes, 0x90b401a6c1cc0affull, 0x3c3ae353fb14628full) + \
     DUET__FP_FIELD(duet_cache_geometry, num_blocks, 0xd419c7723226db95ull,                        \
                    0xb9c8b9ffe46ed627ull) +                                                       \
     DUET__FP_FIELD(duet_cache_config, num_swap_blocks, 0x96f0da847a2a3b87ull,                     \
                    0xbbeeb6361d33bc6dull) +                                                       \
     DUET__FP_FIELD(duet_sampling_params, seed, 0x525a56c9a30f4301ull, 0x68e58909ccb2b417ull) +    \
     DUET__FP_FIELD(duet_sampling_params, n_prompt_logprobs, 0x84c4b877678537a3ull,                \
                    0xff53a46f5ead703bull) +                                                       \
     DUET__FP_FIELD(duet_seq, tokens, 0x9514b7dde2ad0479ull, 0xe179f773a6e0f3c1ull) +              \
     DUET__FP_FIELD(duet_seq, block_table, 0x64b936976b4b76b1ull, 0x0c28cec1b94722afull) +         \
     DUET__FP_FIELD(duet_seq, sampling, 0x8322905089933837ull, 0xa398d022d4351df5ull) +            \
     DUET__FP_FIELD(duet_seq, draft_probs, 0x4372a2a784a67245ull, 0x4c8b1eb44f1eaccfull) +         \
     DUET__FP_FIELD(duet_batch, max_logprobs, 0x0e3a655f20731ab3ull, 0xac9130f4547c17d3ull) +      \
     DUET__FP_FIELD(duet_batch, swap_out, 0x7e9bf77c6519a9d5ull, 0xca3ab343ac333b69ull) +          \
     DUET__FP_FIELD(duet_batch, seqs, 0x38d889d2b47a5c1dull, 0x03c472ca4495f8b5ull) +              \
     DUET__FP_FIELD(duet_batch_output, probs, 0x6c2386e5cc86ba65ull, 0x77dde229df88ae4dull) +      \
     DUET__FP_FIELD(duet_batch_output, n_accepted, 0xec925f09a227f039ull, 0xc3dd75f6808578e7ull) + \
     DUET__FP_FIELD(duet_worker_plugin, fingerprint, 0xaa0336d98b8c82f1ull,                        \
                    0xbb262a934ce15c61ull) +                                                       \
     DUET__FP_FIELD(duet_worker_plugin, caps, 0x307a6fc42fd7b23bull, 0xb183256ea16ec121ull) +      \
     DUET__FP_FIELD(duet_worker_plugin, create, 0x7891da33e83a9d41ull, 0x8f39aaa5729ad53dull) +    \
     DUET__FP_FIELD(duet_worker_plugin, last_error, 0xadf438f7b27c1c75ull, 0xe5a9f6b1a29709bfull))

#ifdef __cplusplus
}
#endif

#endif /* DUET_PLUGIN_H */
