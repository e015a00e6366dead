/*
 * worker_kit.h — what every worker plugin needs besides its model runner and its kernels
 * (docs/plugin-abi.md, "Writing a worker"). A convenience library (libduet_worker_kit.la) that
 * the plugins link; nothing in it is exported from a plugin (the version script keeps only
 * duet_plugin_query).
 *
 *   duet_plugin_query ─► duet_kit_query: the table, its details text filled once
 *   create            ─► duet_kit_check_params, duet_kit_settings_read (every key of the
 *                        section, typed; a key the host does not know is an error)
 *   describe          ─► duet_kit_describe
 *   cache_geometry    ─► duet_kit_check_geometry
 *   init_cache        ─► duet_kit_check_cache_config
 *   execute           ─► duet_kit_batch_check, then duet_kit_rows_feed / duet_kit_rows_draft
 *                        (which logit row goes to which output row), duet_kit_emit_top,
 *                        duet_kit_row_nonfinite; scratch from a duet_kit_arena
 *   last_error        ─► the worker's duet_kit_error
 *
 * Threading: nothing here keeps mutable global state except a duet_kit_details, which is
 * written once under its lock before any query returns it.
 */
#ifndef DUET_WORKER_KIT_H
#define DUET_WORKER_KIT_H

#include <duet/model.h>
#include <duet/plugin.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------------------------- */

/* A worker's last message (last_error()). */
typedef struct duet_kit_error {
    char msg[1024]; /* NUL-terminated; "" when the last call succeeded */
} duet_kit_error;

/* Writes the message (truncated to fit) and returns st. */
duet_status duet_kit_fail(duet_kit_error *e, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
duet_status duet_kit_vfail(duet_kit_error *e, duet_status st, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* ---- the plugin table ---------------------------------------------------------------------- */

/* The fields every table starts with (a designated-initialiser list). */
#define DUET_KIT_PLUGIN_HEADER(name_, version_)                                                    \
    .struct_size = sizeof(duet_worker_plugin), .abi_major = DUET_ABI_MAJOR,                        \
    .abi_minor = DUET_ABI_MINOR, .fingerprint = DUET_ABI_FINGERPRINT, .name = (name_),             \
    .version = (version_)

/* duet_worker_plugin.details: one line written once, by the first query, and never again. */
typedef struct duet_kit_details {
    pthread_mutex_t lock;
    bool done;      /* text written (read and set under lock) */
    char text[384]; /* what the table's details points at */
} duet_kit_details;

#define DUET_KIT_DETAILS_INIT                                                                      \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, false, ""                                                       \
    }

/* The one symbol a plugin exports (plugin.h), which it defines with duet_kit_query's help. */
DUET_API const duet_worker_plugin *duet_plugin_query(uint32_t host_abi_major,
                                                     const duet_host_services *host);

/* The body of a plugin's duet_plugin_query: fills details once with fill(text, size) (NULL: no
 * details) and returns table when host_abi_major is DUET_ABI_MAJOR, else NULL. */
const duet_worker_plugin *duet_kit_query(const duet_worker_plugin *table, uint32_t host_abi_major,
                                         duet_kit_details *details,
                                         void (*fill)(char *text, size_t size));

/* ---- create ------------------------------------------------------------------------------- */

/* Checks create()'s parameters (who: "cpu worker"); section_cap is the worker's room for the
 * section name, NUL included. On failure a message in errbuf. */
duet_status duet_kit_check_params(const duet_worker_params *params, size_t section_cap,
                                  const char *who, char *errbuf, size_t errbuf_size);

/* The settings of one worker section, typed (docs/configuration.md). Strings belong to the host
 * and live as long as the worker's host context. */
typedef struct duet_kit_settings {
    const char *section;     /* "target" or "speculative" */
    const char *device;      /* SECTION.device: "auto", "cuda:N", "cpu" */
    const char *dtype;       /* SECTION.dtype: compute type, "auto" | "f32" | "bf16" | "f16" */
    const char *weights;     /* SECTION.weights: storage, "auto" | ... | "int8" | "int4" */
    int64_t threads;         /* SECTION.threads: 0 = every core (or every CPU of cpus) */
    const char *cpus;        /* SECTION.cpus: CPU list "0-3,8"; NULL when not given, or when
                                the host predates the key (it is optional) */
    int64_t tensor_parallel; /* SECTION.tensor_parallel: devices */
    int64_t group_size;      /* SECTION.group_size: weights per quantisation scale */
    bool zero_point;         /* SECTION.zero_point: asymmetric int8 / int4 */
    bool quantize_lm_head;   /* SECTION.quantize_lm_head */
    double cpu_kv_space_gib; /* cache.cpu_kv_space_gib: a CPU worker's cache budget */
    double memory_fraction;  /* cache.memory_fraction: of a device's memory */
} duet_kit_settings;

/* Reads every setting of section through the host's getters (each key's default is the
 * schema's, given by the host). A key the host does not know, or of another type, is an error
 * naming it: a worker never falls back on a default of its own. The exception is SECTION.cpus,
 * which has no default: NOT_FOUND (not given, or a host older than the key) leaves it NULL. */
duet_status duet_kit_settings_read(const duet_host_services *host, const char *section,
                                   duet_kit_settings *out, const char *who, duet_kit_error *e);

/* Logs one formatted line through the host (nothing when it has no log). */
void duet_kit_log(const duet_host_services *host, duet_log_level level, const char *plugin,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- describe, cache_geometry, init_cache --------------------------------------------------- */

/* describe() of a worker that runs model with weight_bytes of weights: info filled by fill_info
 * (the model reader's duet_model_fill_info; the kit does not link the reader), weight_bytes set
 * where the host's struct has room for it. */
duet_status duet_kit_describe(duet_status (*fill_info)(const duet_model *, duet_model_info *),
                              const duet_model *model, uint64_t weight_bytes, duet_model_info *info,
                              const char *who, duet_kit_error *e);

/* cache_geometry()'s input: a block size of 1 .. 65536 in a struct the host filled. */
duet_status duet_kit_check_geometry(const duet_cache_geometry *g, const char *who,
                                    duet_kit_error *e);

/* init_cache()'s input: a block size of 1 .. 65536 and num_blocks > 0, once per worker
 * (have_cache: the worker has a cache already). */
duet_status duet_kit_check_cache_config(const duet_cache_config *c, bool have_cache,
                                        const char *who, duet_kit_error *e);

/* ---- execute: the batch ------------------------------------------------------------------- */

/* What a worker's batches must fit. */
typedef struct duet_batch_limits {
    const char *who;          /* message prefix: "cpu worker", "gpu worker" */
    uint32_t vocab;           /* tokens must be below */
    uint32_t max_position;    /* positions must be below */
    uint32_t block_size;      /* positions per block */
    uint32_t num_blocks;      /* device (KV) blocks; 0 before init_cache (refused) */
    uint32_t num_swap_blocks; /* swap blocks */
    bool penalties;           /* the worker applies duet_seq.penalties (DUET_CAP_PENALTIES);
                                 false: a sequence that has them is refused */
} duet_batch_limits;

/* Checks the batch and the output against lim before anything is touched: pointers, counts,
 * block ids, tokens, positions, sampling values and the output arrays the flags ask for. On
 * success *rows = output rows of the batch and *fed = fed tokens; else a message naming the
 * sequence / pair / array in err. DUET_BATCH_VERIFY is refused (UNSUPPORTED): no worker runs the
 * rejection sampler itself. */
duet_status duet_kit_batch_check(const duet_batch_limits *lim, const duet_batch *b,
                                 const duet_batch_output *o, uint64_t *rows, uint64_t *fed,
                                 char *err, size_t err_size);

/* ---- execute: which logit row goes where ---------------------------------------------------- */

/* One row of logits a forward computes, and where its results go. */
typedef struct duet_kit_row {
    const duet_seq *q; /* its sequence */
    uint32_t fed;      /* index of its fed token in the forward (the logits to take) */
    int32_t next;      /* the fed token after it (prompt log-probabilities); -1 for none */
    int64_t out_row;   /* output row; -1 when the row only serves prompt log-probabilities */
    int64_t fed_row;   /* global fed index for prompt log-probabilities; -1 for none */
    uint64_t pos;      /* position of the token this row chooses (the seed's position) */
} duet_kit_row;

/* The rows of one execute: row_base of every sequence, the rows of the current forward, and the
 * tokens a drafting step feeds. Grown to the largest batch seen; _fini releases it. */
typedef struct duet_kit_rows {
    uint64_t *row_base; /* [cap_seqs] first output row of each sequence */
    int32_t *draft_tok; /* [cap_seqs] the token each drafting sequence feeds */
    duet_kit_row *rows; /* [cap_rows] */
    size_t cap_seqs, cap_rows;
    uint32_t max_steps; /* the batch's largest n_draft_steps */
} duet_kit_rows;

void duet_kit_rows_fini(duet_kit_rows *r);

/* Room for a batch of n_seqs sequences and n_fed fed tokens (false: out of memory). */
bool duet_kit_rows_reserve(duet_kit_rows *r, size_t n_seqs, size_t n_fed);

/* The first forward over every fed token: sets row_base and max_steps and returns the number of
 * rows written to r->rows (the output rows, and every fed row with prompt log-probabilities).
 * Needs rows_reserve(b->n_seqs, fed). */
uint32_t duet_kit_rows_feed(duet_kit_rows *r, const duet_batch *b);

/* Drafting step `step` (1 .. max_steps): one row per sequence with n_draft_steps >= step, fed
 * the token its previous row sampled (0 after a non-finite row, whose mark the row repeats:
 * duet_kit_rows_repeat_nonfinite) at the next position. Row i feeds r->draft_tok[i] to r->rows[i].q
 * at position rows[i].pos - 1; its fed index is i. Returns the number of rows. */
uint32_t duet_kit_rows_draft(duet_kit_rows *r, const duet_batch *b, const duet_batch_output *o,
                             uint32_t step);

/* Marks output row `row` non-finite (DUET_TOKEN_NONFINITE; probs zero, log-probabilities NAN /
 * token -1) in what the batch asked for; vocab: the probability row's length. */
void duet_kit_row_nonfinite(const duet_batch *b, duet_batch_output *o, int64_t row, uint32_t vocab);

/* After a drafting step of n rows: a row whose previous row was non-finite repeats the mark. */
void duet_kit_rows_repeat_nonfinite(const duet_kit_rows *r, uint32_t n, const duet_batch *b,
                                    duet_batch_output *o, uint32_t vocab);

/* Writes top[0 .. n) from src (when src is not top) and pads top[n .. m) with token -1. */
void duet_kit_emit_top(duet_logprob *top, const duet_logprob *src, uint32_t n, uint32_t m);

/* ---- scratch ---------------------------------------------------------------------------- */

/* One buffer grown to the largest request seen (never shrunk), through the worker's allocator
 * (malloc / free when alloc is NULL; pinned host memory for a GPU worker). Carved into the
 * arrays of one step by the caller. */
typedef struct duet_kit_arena {
    void *base;
    size_t bytes;
    void *(*alloc)(size_t bytes); /* NULL: malloc */
    void (*release)(void *p);     /* NULL: free */
} duet_kit_arena;

/* At least `bytes` bytes, the old contents not kept; NULL when the allocator fails (the arena is
 * then empty). */
void *duet_kit_arena_reserve(duet_kit_arena *a, size_t bytes);
void duet_kit_arena_fini(duet_kit_arena *a);

#endif /* DUET_WORKER_KIT_H */
