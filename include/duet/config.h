/*
 * duet/config.h — the configuration of a duet engine.
 *
 * A configuration is a libconfig file (DESIGN §4, docs/configuration.md) checked against a schema
 * of known keys: every key has a type, a range or a set of allowed strings, and a default unless
 * it is required. Any error names the file, the line and the key ("run.cfg:7: cache.block_size:
 * must be a power of two in 1..256, got 12"); an unknown key is an error, with a suggestion when
 * it is close to a known one. Overrides ("cache.block_size=32", from duet-run's --set) are applied
 * on top of the file and checked the same way.
 *
 * Typical use:
 *
 *     duet_config *cfg;
 *     duet_config_create(&cfg);
 *     if (duet_config_load_file(cfg, path) || duet_config_set(cfg, "cache.block_size=32") ||
 *         duet_config_validate(cfg))
 *         fprintf(stderr, "%s\n", duet_config_error(cfg));
 *
 * Keys are dotted paths: "model", "target.worker", "cache.block_size". A configuration object is
 * not thread-safe for writing; once validated it may be read from any number of threads.
 *
 * Once validated, the whole configuration is also readable as C structs, one per group
 * (duet_config_settings()): the schema fills them, so a default lives in one place and a key
 * renamed in the schema cannot go unnoticed by a reader that would fall back to its own default.
 */
#ifndef DUET_CONFIG_H
#define DUET_CONFIG_H

#include <duet/scheduler.h>
#include <duet/types.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct duet_config duet_config;

typedef enum duet_config_type {
    DUET_CONFIG_TYPE_STRING = 0,
    DUET_CONFIG_TYPE_INT = 1,   /* int64_t */
    DUET_CONFIG_TYPE_FLOAT = 2, /* double; an integer literal is accepted where a float is due */
    DUET_CONFIG_TYPE_BOOL = 3,
} duet_config_type;

/* Creates an empty configuration holding only defaults. The caller owns *out and releases it with
 * duet_config_destroy(). Fails only with DUET_STATUS_OUT_OF_MEMORY. */
DUET_API duet_status duet_config_create(duet_config **out);

/* Releases cfg and every string it handed out. NULL is allowed. */
DUET_API void duet_config_destroy(duet_config *cfg);

/* Reads a libconfig file. Every setting must be a known key of the right type and range; the first
 * error is returned as DUET_STATUS_BAD_CONFIG (DUET_STATUS_IO when the file cannot be read, or is
 * not a regular file) and its message, "FILE:LINE: KEY: what is wrong", is kept for
 * duet_config_error(). A file or text over DUET_CONFIG_MAX_BYTES is refused (BAD_CONFIG) before
 * libconfig reads it: its parser takes quadratic time in long strings and comments. A
 * configuration is loaded at most once: a second call returns DUET_STATUS_INVALID_ARGUMENT. */
#define DUET_CONFIG_MAX_BYTES (1u << 20)
DUET_API duet_status duet_config_load_file(duet_config *cfg, const char *path);

/* Same as duet_config_load_file() for text in memory; name stands for the file name in messages. */
DUET_API duet_status duet_config_load_string(duet_config *cfg, const char *text, const char *name);

/* Applies one override "key.path=value" on top of what was loaded (or on top of the defaults).
 * The value is read as the key's type: a string may be quoted or bare, a boolean is true/false
 * (also yes/no, on/off, 1/0), numbers in libconfig syntax. Setting a key inside a group creates
 * the group ("speculative.draft_model=..." turns speculation on). Errors name "--set ASSIGNMENT"
 * as the source. */
DUET_API duet_status duet_config_set(duet_config *cfg, const char *assignment);

/* Checks what cannot be checked key by key: required keys, keys required by the presence of their
 * group, and rules between keys. Call it once after loading and overriding, before reading. */
DUET_API duet_status duet_config_validate(duet_config *cfg);

/* The message of the last failed call on cfg, or "" when none failed. Owned by cfg; valid until
 * the next call that modifies cfg. */
DUET_API const char *duet_config_error(const duet_config *cfg);

/* Readers. A key that was not given yields its default. They return DUET_STATUS_NOT_FOUND for a
 * key the schema does not know or one without a value (a required key never given, an optional
 * key without default), and DUET_STATUS_INVALID_ARGUMENT when the key has another type.
 * Strings stay owned by cfg and live until it is destroyed or the key is set again. */
DUET_API duet_status duet_config_get_string(const duet_config *cfg, const char *key,
                                            const char **out);
DUET_API duet_status duet_config_get_int(const duet_config *cfg, const char *key, int64_t *out);
DUET_API duet_status duet_config_get_float(const duet_config *cfg, const char *key, double *out);
DUET_API duet_status duet_config_get_bool(const duet_config *cfg, const char *key, bool *out);

/* True when key was given explicitly, by the file or by an override (not a default). */
DUET_API bool duet_config_is_set(const duet_config *cfg, const char *key);

/* True when the group ("target", "speculative", "cache", "scheduler", "server") appeared in the
 * file or was created by an override. "speculative" being present is what turns speculative
 * decoding on. */
DUET_API bool duet_config_has_group(const duet_config *cfg, const char *group);

/* Removes a group ("speculative", ...): its keys return to their defaults (or to no value) and
 * duet_config_has_group() turns false, as if neither the file nor an override had named it.
 * duet-run's --no-speculative drops "speculative" to run the same configuration without the
 * draft. Call duet_config_validate() afterwards. DUET_STATUS_NOT_FOUND for an unknown group
 * (a group that is known but absent is not an error). */
DUET_API duet_status duet_config_drop_group(duet_config *cfg, const char *group);

/* The type of a known key; DUET_STATUS_NOT_FOUND for an unknown one. */
DUET_API duet_status duet_config_key_type(const char *key, duet_config_type *out);

/* Where key's value came from: "FILE:LINE", "--set", or "default". Owned by cfg. */
DUET_API const char *duet_config_source(const duet_config *cfg, const char *key);

/* The dotted path of the index-th key of the schema (0, 1, ... in the order duet_config_print()
 * writes them), or NULL past the last: lists every key the schema knows. Static strings. */
DUET_API const char *duet_config_key_name(size_t index);

/* ---- typed settings ---------------------------------------------------------------------- */

/* speculative.acceptance; the values follow the order of the key's allowed strings. */
typedef enum duet_acceptance {
    DUET_ACCEPTANCE_REJECTION = 0, /* "rejection": modified rejection sampling (exact) */
    DUET_ACCEPTANCE_TYPICAL = 1,   /* "typical": typical acceptance (Medusa) */
    DUET_ACCEPTANCE_SYNTHETIC = 2, /* "synthetic": each proposal accepted with probability
                                      speculative.synthetic_rate (benchmarks only) */
} duet_acceptance;

/* The keys the target and the draft worker share: "target.KEY" and "speculative.KEY". */
typedef struct duet_worker_settings {
    const char *worker;      /* .worker: plugin name ([a-z0-9_]+) or a path containing '/' */
    const char *device;      /* .device: "auto", "cpu", "cuda:0", ... */
    const char *dtype;       /* .dtype: "auto" | "bf16" | "f16" | "f32" */
    const char *weights;     /* .weights: "auto" | "bf16" | "f16" | "f32" | "int8" | "int4" */
    int64_t group_size;      /* .group_size: int8/int4 inputs sharing one scale: 32, 64, 128 */
    bool zero_point;         /* .zero_point: int8/int4 groups are asymmetric */
    bool quantize_lm_head;   /* .quantize_lm_head: the output head is quantised too */
    int64_t threads;         /* .threads: CPU threads, 0 = all cores */
    int64_t tensor_parallel; /* .tensor_parallel: devices, 1..64 */
    bool check_values;       /* .check_values: check every weight is finite at load */
} duet_worker_settings;

/* The "speculative" group. */
typedef struct duet_speculative_settings {
    bool enabled;               /* the group is present: speculative decoding is on */
    const char *draft_model;    /* speculative.draft_model; NULL when the group is absent */
    duet_worker_settings draft; /* speculative.worker, .device, .dtype, ... (as the target's) */
    int64_t num_tokens;         /* speculative.num_tokens: k, proposals per step, 1..32 */
    duet_acceptance acceptance; /* speculative.acceptance */
    double typical_posterior_threshold; /* speculative.typical_posterior_threshold, (0, 1] */
    double typical_posterior_alpha;     /* speculative.typical_posterior_alpha, (0, 1] */
    int64_t disable_by_batch_size; /* speculative.disable_by_batch_size: sequences; 0 = never */
    bool overlap;                  /* speculative.overlap: draft while the target verifies */
    bool adaptive;                 /* speculative.adaptive: size k from measured acceptance */
} duet_speculative_settings;

/* The "cache" group. */
typedef struct duet_cache_settings {
    int64_t block_size;        /* cache.block_size: tokens per KV block, power of two 1..256 */
    double memory_fraction;    /* cache.memory_fraction: of a GPU worker's device memory, (0, 1] */
    double swap_space_gib;     /* cache.swap_space_gib: GiB of host memory for swapped blocks */
    bool swap_space_gib_given; /* cache.swap_space_gib was given (file or --set), not defaulted */
    bool prefix_caching;       /* cache.prefix_caching */
    double cpu_kv_space_gib;   /* cache.cpu_kv_space_gib: GiB of KV cache of a CPU worker */
} duet_cache_settings;

/* The "scheduler" group. */
typedef struct duet_scheduler_settings {
    int64_t max_num_seqs; /* scheduler.max_num_seqs: sequences per step */
    int64_t
        max_num_batched_tokens; /* scheduler.max_num_batched_tokens: tokens per step; 0 = auto */
    int64_t max_model_len;      /* scheduler.max_model_len: tokens; 0 = the models' */
    duet_sched_preemption preemption; /* scheduler.preemption */
    bool chunked_prefill;             /* scheduler.chunked_prefill */
    duet_sched_policy policy;         /* scheduler.policy */
} duet_scheduler_settings;

/* The "server" group: duet-server (duet/server.h, docs/server.md). */
typedef struct duet_server_settings {
    const char *host;              /* server.host: address to listen on */
    int64_t port;                  /* server.port: TCP port, 0 = any free port */
    const char *api_key;           /* server.api_key: required bearer token; NULL = none */
    const char *served_model_name; /* server.served_model_name; NULL = the model folder's name */
    const char *tokenizer;         /* server.tokenizer: folder; NULL = the model folder */
    int64_t max_queue;             /* server.max_queue: requests waiting or running, then 429 */
    int64_t request_timeout_s;     /* server.request_timeout_s: seconds, then abort; 0 = none */
    int64_t max_body_bytes;        /* server.max_body_bytes: request body bytes, then 413 */
    const char *per_request_spec_decode_metrics; /* server.per_request_spec_decode_metrics:
                                                    "none" or "summary" (appended) */
} duet_server_settings;

/* Every key of a validated configuration, typed: each field holds what the getter of its key
 * returns (the value given, else the schema's default). Fields are only ever appended; a reader
 * compiled against a newer header checks struct_size before using a newer field. */
typedef struct duet_settings {
    uint32_t struct_size;                  /* sizeof(duet_settings) of the library */
    const char *model;                     /* model: target model directory */
    const char *plugin_dir;                /* plugin_dir; NULL when not given */
    duet_log_level log_level;              /* log_level */
    duet_worker_settings target;           /* target.* */
    duet_speculative_settings speculative; /* speculative.* */
    duet_cache_settings cache;             /* cache.* */
    duet_scheduler_settings scheduler;     /* scheduler.* */
    duet_server_settings server;           /* server.* (appended) */
    /* Appended, not in their groups' structs, which are embedded above and so cannot grow. */
    const char *target_cpus;      /* target.cpus: CPU list ("0-3,8"); NULL when not given */
    const char *speculative_cpus; /* speculative.cpus: the draft worker's CPU list, or NULL */
    double synthetic_rate;        /* speculative.synthetic_rate, [0, 1]; NAN when not given */
} duet_settings;

/* The typed settings of cfg, filled by the last successful duet_config_validate(); NULL before it,
 * and again after any call that changes cfg (load, set, drop_group) until it is validated anew.
 * Owned by cfg, as are its strings: valid until cfg changes or is destroyed. */
DUET_API const duet_settings *duet_config_settings(const duet_config *cfg);

/* Writes the resolved configuration (every known key of every present group, defaults included)
 * in libconfig syntax, each value followed by a comment naming its source. The output loads back
 * into an equal configuration. Returns DUET_STATUS_IO when writing fails. */
DUET_API duet_status duet_config_print(const duet_config *cfg, FILE *f);

#ifdef __cplusplus
}
#endif

#endif /* DUET_CONFIG_H */
