/*
 * plugin_api-int.h — internals shared by the files of plugin_api/.
 *
 *   loader.c          dlopen a worker plugin, check its ABI table (duet/loader.h)
 *   host.c            the duet_host_services a plugin gets: by-name config getters, a logger
 *   status.c, util.c  duet_status names; message and growing-string helpers
 *
 * The configuration (duet/config.h, docs/configuration.md) is four files around one table:
 *
 *   schema.c          the keys: name, group, type, range or allowed strings, default, and the
 *                     field of duet_settings each fills; key lookup and "did you mean"; the
 *                     checks of one value and the rules between keys (duet_config_validate)
 *   settings.c        the duet_config object: one slot per key, error messages, the by-name
 *                     readers, and duet_settings filled from the slots and the schema
 *   settings_parse.c  libconfig files and strings (@include checks, FILE:LINE of each setting)
 *                     and --set assignments, each checked against the schema as it is read
 *   settings_print.c  duet_config_print: the resolved configuration in libconfig syntax
 *
 * "config" elsewhere means other things: model/hf_config.c reads a model's Hugging Face
 * config.json, and the build's config.h is autoconf's (docs/configuration.md, "Which config").
 */
#ifndef DUET_PLUGIN_API_INT_H
#define DUET_PLUGIN_API_INT_H

#include <duet/config.h>
#include <duet/loader.h>
#include <duet/plugin.h>
#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define DUET__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__PRINTF(f, a)
#endif

/* Formats a message into buf[size] (truncated, always NUL-terminated when size > 0). */
void duet__errf(char *buf, size_t size, const char *fmt, ...) DUET__PRINTF(3, 4);

/* A growing string: zero-initialise, append, then duet__strbuf_fini(). On allocation failure
 * the buffer keeps what it had and `failed` is set. */
struct duet__strbuf {
    char *buf;   /* NUL-terminated when len > 0 */
    size_t len;  /* bytes, without the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* an append could not allocate */
};

void duet__strbuf_appendf(struct duet__strbuf *sb, const char *fmt, ...) DUET__PRINTF(2, 3);
void duet__strbuf_fini(struct duet__strbuf *sb);

/* ---- configuration: the schema (schema.c) ------------------------------------------------ */

enum group {
    GROUP_TOP = -1,
    GROUP_TARGET,
    GROUP_SPECULATIVE,
    GROUP_CACHE,
    GROUP_SCHEDULER,
    GROUP_SERVER,
    N_GROUPS
};

enum key_id {
    K_MODEL,
    K_PLUGIN_DIR,
    K_LOG_LEVEL,
    K_TARGET_WORKER,
    K_TARGET_DEVICE,
    K_TARGET_DTYPE,
    K_TARGET_WEIGHTS,
    K_TARGET_GROUP_SIZE,
    K_TARGET_ZERO_POINT,
    K_TARGET_QUANT_LM_HEAD,
    K_TARGET_THREADS,
    K_TARGET_CPUS,
    K_TARGET_TP,
    K_TARGET_CHECK_VALUES,
    K_SPEC_DRAFT_MODEL,
    K_SPEC_WORKER,
    K_SPEC_DEVICE,
    K_SPEC_DTYPE,
    K_SPEC_WEIGHTS,
    K_SPEC_GROUP_SIZE,
    K_SPEC_ZERO_POINT,
    K_SPEC_QUANT_LM_HEAD,
    K_SPEC_THREADS,
    K_SPEC_CPUS,
    K_SPEC_TP,
    K_SPEC_CHECK_VALUES,
    K_SPEC_NUM_TOKENS,
    K_SPEC_ACCEPTANCE,
    K_SPEC_TYPICAL_THRESHOLD,
    K_SPEC_TYPICAL_ALPHA,
    K_SPEC_SYNTHETIC_RATE,
    K_SPEC_DISABLE_BY_BATCH,
    K_SPEC_OVERLAP,
    K_SPEC_ADAPTIVE,
    K_CACHE_BLOCK_SIZE,
    K_CACHE_MEMORY_FRACTION,
    K_CACHE_SWAP_SPACE,
    K_CACHE_PREFIX_CACHING,
    K_CACHE_CPU_KV_SPACE,
    K_SCHED_MAX_NUM_SEQS,
    K_SCHED_MAX_BATCHED_TOKENS,
    K_SCHED_MAX_MODEL_LEN,
    K_SCHED_PREEMPTION,
    K_SCHED_CHUNKED_PREFILL,
    K_SCHED_POLICY,
    K_SERVER_HOST,
    K_SERVER_PORT,
    K_SERVER_API_KEY,
    K_SERVER_SERVED_MODEL_NAME,
    K_SERVER_TOKENIZER,
    K_SERVER_MAX_QUEUE,
    K_SERVER_REQUEST_TIMEOUT,
    K_SERVER_MAX_BODY_BYTES,
    K_SERVER_SPEC_METRICS,
    N_KEYS
};

enum key_flag {
    KEY_REQUIRED = 1 << 0,   /* no default; validate() reports it when missing */
    KEY_NO_DEFAULT = 1 << 1, /* optional and without default: readers say NOT_FOUND */
    KEY_NONEMPTY = 1 << 2,   /* a string that may not be "" */
    KEY_POW2 = 1 << 3,       /* an integer that must be a power of two */
    KEY_PLUGIN = 1 << 4,     /* a plugin name [a-z0-9_]+ or a path containing '/' */
    KEY_MIN_OPEN = 1 << 5,   /* a float range that excludes its minimum: (min, max] */
    KEY_ENUM = 1 << 6,       /* a string whose typed field is an enum: its index in allowed[] */
    KEY_CPULIST = 1 << 7,    /* a CPU list ("0-3,8") of CPUs this process may run on */
};

struct key {
    const char *path;           /* dotted path, "cache.block_size" */
    enum group group;           /* GROUP_TOP for top-level keys */
    duet_config_type type;      /* what the value must be */
    unsigned flags;             /* enum key_flag */
    int64_t imin, imax;         /* INT: inclusive range */
    double fmin, fmax;          /* FLOAT: range, inclusive unless KEY_MIN_OPEN */
    const char *const *allowed; /* STRING: NULL-terminated allowed values, or NULL for any */
    const char *def_s;          /* defaults, by type */
    int64_t def_i;
    double def_f;
    bool def_b;
    size_t field; /* offsetof(duet_settings, ...) of the typed field the value fills */
};

union value {
    int64_t i;
    double f;
    bool b;
    char *s; /* owned by the slot */
};

struct slot {
    bool set;      /* given by the file or by an override */
    bool from_set; /* given by an override */
    union value v; /* meaningful when set; v.s owned */
    char *where;   /* "FILE:LINE" or "--set ASSIGNMENT"; owned; NULL when not set */
};

struct group_state {
    bool present; /* appeared in the file or was created by an override */
    char *where;  /* where it was opened; owned; NULL when absent */
};

struct table {
    struct slot slots[N_KEYS];
    struct group_state groups[N_GROUPS];
};

struct duet_config {
    struct table t;
    char *name;             /* the file name given to a successful load; NULL before */
    char *error;            /* message of the last failed call; NULL for none */
    bool error_oom;         /* the last call failed and its message could not be allocated */
    bool validated;         /* settings is current: validated, and unchanged since */
    duet_settings settings; /* filled by a successful validate; strings point into t or keys */
};

extern const struct key duet__keys[N_KEYS];           /* one row per key, in print order */
extern const char *const duet__group_names[N_GROUPS]; /* "target", ... by enum group */

/* The index of the key or group of that name, or -1. */
int duet__key_find(const char *path);
int duet__group_find(const char *name);

/* The last component of a dotted path. */
const char *duet__last_component(const char *path);

/* Checks v against the range, pattern or set of duet__keys[k]; the type is already right.
 * A failure is recorded in cfg with `where` and the key's path. */
duet_status duet__check_value(duet_config *cfg, const char *where, int k, const union value *v);

/* Records "WHERE: PATH: WHAT" in cfg, adding "; did you mean 'X'?" for a close known name. */
duet_status duet__fail_unknown(duet_config *cfg, const char *where, const char *path,
                               const char *what);

/* ---- configuration: the object (settings.c) ---------------------------------------------- */

void duet__slot_clear(struct slot *slot, duet_config_type type);
/* Stores v (taking its string) and where (taken) in slot, releasing what it held. */
void duet__slot_assign(struct slot *slot, duet_config_type type, union value v, char *where,
                       bool from_set);
void duet__table_fini(struct table *t);

/* The value of key k (INT or BOOL): the slot's when set, else the schema's default. */
int64_t duet__int_of(const duet_config *cfg, int k);
bool duet__bool_of(const duet_config *cfg, int k);

/* A malloc'd sprintf, or NULL when out of memory. */
char *duet__format(const char *fmt, ...) DUET__PRINTF(1, 2);

void duet__config_clear_error(duet_config *cfg);

/*
 * Records "WHERE: KEY: <fmt>" (WHERE and KEY left out when NULL) as cfg's error and returns st,
 * or DUET_STATUS_OUT_OF_MEMORY when the message cannot be allocated.
 */
duet_status duet__config_fail(duet_config *cfg, duet_status st, const char *where, const char *key,
                              const char *fmt, ...) DUET__PRINTF(5, 6);
duet_status duet__config_fail_oom(duet_config *cfg);

/* Fills cfg->settings from the slots and the schema's defaults and marks it current. */
void duet__settings_fill(duet_config *cfg);

#endif /* DUET_PLUGIN_API_INT_H */
