/*
 * Configuration: a libconfig file checked against duet's schema, then --set overrides.
 *
 * libconfig only parses. What duet keeps is its own table with one slot per schema key:
 *
 *   keys[]  (static, one row per key, in the order duet_config_print writes them)
 *     { "cache.block_size", GROUP_CACHE, INT, KEY_POW2, 1..256, default 16 }
 *   duet_config
 *     t.slots[k]   value of keys[k]: set? | from --set? | value | where it was set
 *     t.groups[g]  group g present? | where it was opened ("FILE:LINE" or "--set ASSIGNMENT")
 *     name         the file name given to load (validate's "FILE: model: ..." message)
 *     error        the message of the last failed call
 *
 * Lifecycle: create → load_file / load_string (at most once) → set … → validate → get ….
 * A load walks the parsed tree into a staging table, checking each setting as it goes; the staged
 * values move into cfg only when the whole file is good, so a failed load changes nothing. A slot
 * set by an override keeps its value when a file is loaded afterwards: overrides always win.
 *
 * A slot's "where" is what an error message names: "FILE:LINE" for a file setting, "--set
 * ASSIGNMENT" for an override (duet_config_source() shortens the latter to "--set").
 *
 * No locks: writers need external exclusion; a validated configuration is read-only and may be
 * shared by threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "plugin_api-int.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libconfig.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- schema ------------------------------------------------------------------------------ */

enum group {
    GROUP_TOP = -1,
    GROUP_TARGET,
    GROUP_SPECULATIVE,
    GROUP_CACHE,
    GROUP_SCHEDULER,
    N_GROUPS
};

static const char *const group_names[N_GROUPS] = {"target", "speculative", "cache", "scheduler"};

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
    K_SPEC_TP,
    K_SPEC_CHECK_VALUES,
    K_SPEC_NUM_TOKENS,
    K_SPEC_ACCEPTANCE,
    K_SPEC_TYPICAL_THRESHOLD,
    K_SPEC_TYPICAL_ALPHA,
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
    N_KEYS
};

enum key_flag {
    KEY_REQUIRED = 1 << 0,   /* no default; validate() reports it when missing */
    KEY_NO_DEFAULT = 1 << 1, /* optional and without default: readers say NOT_FOUND */
    KEY_NONEMPTY = 1 << 2,   /* a string that may not be "" */
    KEY_POW2 = 1 << 3,       /* an integer that must be a power of two */
    KEY_PLUGIN = 1 << 4,     /* a plugin name [a-z0-9_]+ or a path containing '/' */
    KEY_MIN_OPEN = 1 << 5,   /* a float range that excludes its minimum: (min, max] */
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
};

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const dtypes[] = {"auto", "bf16", "f16", "f32", NULL};
static const char *const weight_types[] = {"auto", "bf16", "f16", "f32", "int8", "int4", NULL};
static const char *const acceptances[] = {"rejection", "typical", NULL};
static const char *const preemptions[] = {"auto", "recompute", "swap", NULL};
static const char *const policies[] = {"fcfs", "priority", NULL};

#define STR(p, g, fl, set, d)                                                                      \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_STRING, .flags = fl, .allowed = set,       \
        .def_s = d                                                                                 \
    }
#define INT(p, g, fl, lo, hi, d)                                                                   \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_INT, .flags = fl, .imin = lo, .imax = hi,  \
        .def_i = d                                                                                 \
    }
#define FLT(p, g, fl, lo, hi, d)                                                                   \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_FLOAT, .flags = fl, .fmin = lo,            \
        .fmax = hi, .def_f = d                                                                     \
    }
#define BOOL(p, g, d)                                                                              \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_BOOL, .def_b = d                           \
    }

static const struct key keys[N_KEYS] = {
    [K_MODEL] = STR("model", GROUP_TOP, KEY_REQUIRED | KEY_NONEMPTY, NULL, NULL),
    [K_PLUGIN_DIR] = STR("plugin_dir", GROUP_TOP, KEY_NO_DEFAULT | KEY_NONEMPTY, NULL, NULL),
    [K_LOG_LEVEL] = STR("log_level", GROUP_TOP, 0, log_levels, "warn"),
    [K_TARGET_WORKER] = STR("target.worker", GROUP_TARGET, KEY_PLUGIN, NULL, "cpu"),
    [K_TARGET_DEVICE] = STR("target.device", GROUP_TARGET, KEY_NONEMPTY, NULL, "auto"),
    [K_TARGET_DTYPE] = STR("target.dtype", GROUP_TARGET, 0, dtypes, "auto"),
    [K_TARGET_WEIGHTS] = STR("target.weights", GROUP_TARGET, 0, weight_types, "auto"),
    [K_TARGET_GROUP_SIZE] = INT("target.group_size", GROUP_TARGET, KEY_POW2, 32, 128, 32),
    [K_TARGET_ZERO_POINT] = BOOL("target.zero_point", GROUP_TARGET, false),
    [K_TARGET_QUANT_LM_HEAD] = BOOL("target.quantize_lm_head", GROUP_TARGET, true),
    [K_TARGET_THREADS] = INT("target.threads", GROUP_TARGET, 0, 0, 4096, 0),
    [K_TARGET_TP] = INT("target.tensor_parallel", GROUP_TARGET, 0, 1, 64, 1),
    [K_TARGET_CHECK_VALUES] = BOOL("target.check_values", GROUP_TARGET, false),
    [K_SPEC_DRAFT_MODEL] = STR("speculative.draft_model", GROUP_SPECULATIVE,
                               KEY_NO_DEFAULT | KEY_NONEMPTY, NULL, NULL),
    [K_SPEC_WORKER] = STR("speculative.worker", GROUP_SPECULATIVE, KEY_PLUGIN, NULL, "cpu"),
    [K_SPEC_DEVICE] = STR("speculative.device", GROUP_SPECULATIVE, KEY_NONEMPTY, NULL, "auto"),
    [K_SPEC_DTYPE] = STR("speculative.dtype", GROUP_SPECULATIVE, 0, dtypes, "auto"),
    [K_SPEC_WEIGHTS] = STR("speculative.weights", GROUP_SPECULATIVE, 0, weight_types, "auto"),
    [K_SPEC_GROUP_SIZE] = INT("speculative.group_size", GROUP_SPECULATIVE, KEY_POW2, 32, 128, 32),
    [K_SPEC_ZERO_POINT] = BOOL("speculative.zero_point", GROUP_SPECULATIVE, false),
    [K_SPEC_QUANT_LM_HEAD] = BOOL("speculative.quantize_lm_head", GROUP_SPECULATIVE, true),
    [K_SPEC_THREADS] = INT("speculative.threads", GROUP_SPECULATIVE, 0, 0, 4096, 0),
    [K_SPEC_TP] = INT("speculative.tensor_parallel", GROUP_SPECULATIVE, 0, 1, 64, 1),
    [K_SPEC_CHECK_VALUES] = BOOL("speculative.check_values", GROUP_SPECULATIVE, false),
    [K_SPEC_NUM_TOKENS] = INT("speculative.num_tokens", GROUP_SPECULATIVE, 0, 1, 32, 4),
    [K_SPEC_ACCEPTANCE] =
        STR("speculative.acceptance", GROUP_SPECULATIVE, 0, acceptances, "rejection"),
    [K_SPEC_TYPICAL_THRESHOLD] = FLT("speculative.typical_posterior_threshold", GROUP_SPECULATIVE,
                                     KEY_MIN_OPEN, 0.0, 1.0, 0.09),
    [K_SPEC_TYPICAL_ALPHA] =
        FLT("speculative.typical_posterior_alpha", GROUP_SPECULATIVE, KEY_MIN_OPEN, 0.0, 1.0, 0.3),
    [K_SPEC_DISABLE_BY_BATCH] =
        INT("speculative.disable_by_batch_size", GROUP_SPECULATIVE, 0, 0, 1000000, 0),
    [K_SPEC_OVERLAP] = BOOL("speculative.overlap", GROUP_SPECULATIVE, true),
    [K_SPEC_ADAPTIVE] = BOOL("speculative.adaptive", GROUP_SPECULATIVE, false),
    [K_CACHE_BLOCK_SIZE] = INT("cache.block_size", GROUP_CACHE, KEY_POW2, 1, 256, 16),
    [K_CACHE_MEMORY_FRACTION] =
        FLT("cache.memory_fraction", GROUP_CACHE, KEY_MIN_OPEN, 0.0, 1.0, 0.9),
    [K_CACHE_SWAP_SPACE] = FLT("cache.swap_space_gib", GROUP_CACHE, 0, 0.0, 1024.0, 4.0),
    [K_CACHE_PREFIX_CACHING] = BOOL("cache.prefix_caching", GROUP_CACHE, false),
    [K_CACHE_CPU_KV_SPACE] =
        FLT("cache.cpu_kv_space_gib", GROUP_CACHE, KEY_MIN_OPEN, 0.0, 4096.0, 4.0),
    [K_SCHED_MAX_NUM_SEQS] = INT("scheduler.max_num_seqs", GROUP_SCHEDULER, 0, 1, 65536, 256),
    [K_SCHED_MAX_BATCHED_TOKENS] =
        INT("scheduler.max_num_batched_tokens", GROUP_SCHEDULER, 0, 0, 16777216, 0),
    [K_SCHED_MAX_MODEL_LEN] = INT("scheduler.max_model_len", GROUP_SCHEDULER, 0, 0, 16777216, 0),
    [K_SCHED_PREEMPTION] = STR("scheduler.preemption", GROUP_SCHEDULER, 0, preemptions, "auto"),
    [K_SCHED_CHUNKED_PREFILL] = BOOL("scheduler.chunked_prefill", GROUP_SCHEDULER, false),
    [K_SCHED_POLICY] = STR("scheduler.policy", GROUP_SCHEDULER, 0, policies, "fcfs"),
};

/* Bounds the length of every path in keys[]; sizes the edit-distance row (asserted). */
#define MAX_KEY_PATH 48

static int key_find(const char *path)
{
    for (int k = 0; k < N_KEYS; k++)
        if (strcmp(keys[k].path, path) == 0)
            return k;
    return -1;
}

static int group_find(const char *name)
{
    for (int g = 0; g < N_GROUPS; g++)
        if (strcmp(group_names[g], name) == 0)
            return g;
    return -1;
}

/* The last component of a dotted path. */
static const char *last_component(const char *path)
{
    const char *dot = strrchr(path, '.');

    return dot ? dot + 1 : path;
}

/* ---- the value table --------------------------------------------------------------------- */

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
    char *name;     /* the file name given to a successful load; NULL before */
    char *error;    /* message of the last failed call; NULL for none */
    bool error_oom; /* the last call failed and its message could not be allocated */
};

static void slot_clear(struct slot *slot, duet_config_type type)
{
    if (slot->set && type == DUET_CONFIG_TYPE_STRING)
        free(slot->v.s);
    free(slot->where);
    *slot = (struct slot){0};
}

/* Stores v (taking its string) and where (taken) in slot, releasing what it held. */
static void slot_assign(struct slot *slot, duet_config_type type, union value v, char *where,
                        bool from_set)
{
    slot_clear(slot, type);
    slot->set = true;
    slot->from_set = from_set;
    slot->v = v;
    slot->where = where;
}

static void table_fini(struct table *t)
{
    for (int k = 0; k < N_KEYS; k++)
        slot_clear(&t->slots[k], keys[k].type);
    for (int g = 0; g < N_GROUPS; g++)
        free(t->groups[g].where);
    *t = (struct table){0};
}

/* ---- messages ---------------------------------------------------------------------------- */

/* A malloc'd vsprintf, or NULL when out of memory. */
static char *vformat(const char *fmt, va_list ap) DUET__PRINTF(1, 0);
static char *vformat(const char *fmt, va_list ap)
{
    va_list again;
    char *s;
    int n;

    va_copy(again, ap);
    n = vsnprintf(NULL, 0, fmt, again);
    va_end(again);
    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static char *format(const char *fmt, ...) DUET__PRINTF(1, 2);
static char *format(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

static void clear_error(duet_config *cfg)
{
    free(cfg->error);
    cfg->error = NULL;
    cfg->error_oom = false;
}

/*
 * Records "WHERE: KEY: <fmt>" (WHERE and KEY left out when NULL) as cfg's error and returns st,
 * or DUET_STATUS_OUT_OF_MEMORY when the message cannot be allocated.
 */
static duet_status fail(duet_config *cfg, duet_status st, const char *where, const char *key,
                        const char *fmt, ...) DUET__PRINTF(5, 6);
static duet_status fail(duet_config *cfg, duet_status st, const char *where, const char *key,
                        const char *fmt, ...)
{
    struct duet__strbuf sb = {0};
    va_list ap;
    char *why;

    va_start(ap, fmt);
    why = vformat(fmt, ap);
    va_end(ap);
    if (where)
        duet__strbuf_appendf(&sb, "%s: ", where);
    if (key)
        duet__strbuf_appendf(&sb, "%s: ", key);
    duet__strbuf_appendf(&sb, "%s", why ? why : "");
    free(why);
    clear_error(cfg);
    if (!why || sb.failed) {
        duet__strbuf_fini(&sb);
        cfg->error_oom = true;
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    cfg->error = sb.buf;
    return st;
}

static duet_status fail_oom(duet_config *cfg)
{
    clear_error(cfg);
    cfg->error_oom = true;
    return DUET_STATUS_OUT_OF_MEMORY;
}

/* Writes x in the fewest significant digits that read back as x ("0.9", "1024", "inf"). */
static void shortest_double(char buf[32], double x)
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

static const char *type_name(duet_config_type type)
{
    switch (type) {
    case DUET_CONFIG_TYPE_STRING:
        return "a string";
    case DUET_CONFIG_TYPE_INT:
        return "an integer";
    case DUET_CONFIG_TYPE_FLOAT:
        return "a number";
    case DUET_CONFIG_TYPE_BOOL:
        return "a boolean (true or false)";
    }
    return "a value";
}

static const char *setting_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    }
    return "a value of unknown type";
}

/* ---- did you mean ------------------------------------------------------------------------ */

/* Levenshtein distance between typed (any length) and known (a schema name). */
static size_t edit_distance(const char *typed, const char *known)
{
    size_t n = strlen(known), row[MAX_KEY_PATH + 1];

    assert(n <= MAX_KEY_PATH);
    for (size_t j = 0; j <= n; j++)
        row[j] = j;
    for (size_t i = 1; typed[i - 1]; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j];
            size_t best = diag + (typed[i - 1] != known[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[n];
}

/* Distance from typed to known when it is close enough to suggest, else SIZE_MAX. */
static size_t close_distance(const char *typed, const char *known)
{
    size_t len = strlen(typed), other = strlen(known);
    size_t limit = len / 4 > 2 ? len / 4 : 2;
    size_t d;

    if ((len > other ? len - other : other - len) > limit)
        return SIZE_MAX;
    d = edit_distance(typed, known);
    return d <= limit ? d : SIZE_MAX;
}

/* True when path lies in the group that typed names as its first component. */
static bool same_group(const char *typed, const char *path)
{
    const char *dot = strchr(typed, '.');
    size_t n = dot ? (size_t)(dot - typed) : 0;

    return dot && strncmp(typed, path, n) == 0 && path[n] == '.';
}

/*
 * The known key or group closest to typed, comparing the whole path and the last component, or
 * NULL when none is close. Ties go to a key of typed's own group, then to schema order.
 */
static const char *suggest(const char *typed)
{
    const char *last = last_component(typed), *best = NULL;
    size_t best_d = SIZE_MAX;
    bool best_same = false;

    for (int c = 0; c < N_KEYS + N_GROUPS; c++) {
        const char *path = c < N_KEYS ? keys[c].path : group_names[c - N_KEYS];
        size_t d = close_distance(typed, path);
        size_t d_last = close_distance(last, last_component(path));
        bool same = same_group(typed, path);

        if (d_last < d)
            d = d_last;
        if (d < best_d || (d == best_d && d != SIZE_MAX && same && !best_same)) {
            best = path;
            best_d = d;
            best_same = same;
        }
    }
    return best;
}

static duet_status fail_unknown(duet_config *cfg, const char *where, const char *path,
                                const char *what)
{
    const char *hint = suggest(path);

    if (hint)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, path, "%s; did you mean '%s'?", what, hint);
    return fail(cfg, DUET_STATUS_BAD_CONFIG, where, path, "%s", what);
}

/* ---- checking values --------------------------------------------------------------------- */

static duet_status check_int(duet_config *cfg, const char *where, const struct key *key, int64_t v)
{
    if ((key->flags & KEY_POW2) && (v < key->imin || v > key->imax || (v & (v - 1)) != 0))
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                    "must be a power of two in %" PRId64 "..%" PRId64 ", got %" PRId64, key->imin,
                    key->imax, v);
    if (v < key->imin || v > key->imax)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                    "must be an integer in %" PRId64 "..%" PRId64 ", got %" PRId64, key->imin,
                    key->imax, v);
    return DUET_STATUS_OK;
}

static duet_status check_float(duet_config *cfg, const char *where, const struct key *key, double v)
{
    bool min_open = key->flags & KEY_MIN_OPEN;
    char lo[32], hi[32], got[32];

    if ((min_open ? v > key->fmin : v >= key->fmin) && v <= key->fmax)
        return DUET_STATUS_OK; /* NaN fails both comparisons and lands below */
    shortest_double(lo, key->fmin);
    shortest_double(hi, key->fmax);
    shortest_double(got, v);
    return fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                "must be a number in %s%s, %s], got %s", min_open ? "(" : "[", lo, hi, got);
}

static duet_status fail_not_allowed(duet_config *cfg, const char *where, const struct key *key,
                                    const char *v)
{
    struct duet__strbuf sb = {0};
    duet_status st;

    for (const char *const *a = key->allowed; *a; a++)
        duet__strbuf_appendf(&sb, "%s\"%s\"", a == key->allowed ? "" : ", ", *a);
    if (sb.failed) {
        duet__strbuf_fini(&sb);
        return fail_oom(cfg);
    }
    st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path, "must be one of %s, got \"%s\"",
              sb.buf, v);
    duet__strbuf_fini(&sb);
    return st;
}

static bool is_plugin_name(const char *v)
{
    if (strchr(v, '/'))
        return true;
    for (const char *c = v; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

static duet_status check_string(duet_config *cfg, const char *where, const struct key *key,
                                const char *v)
{
    if ((key->flags & (KEY_NONEMPTY | KEY_PLUGIN)) && v[0] == '\0')
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path, "must not be empty");
    if ((key->flags & KEY_PLUGIN) && !is_plugin_name(v))
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                    "must be a plugin name ([a-z0-9_]+) or a path containing '/', got \"%s\"", v);
    if (key->allowed) {
        for (const char *const *a = key->allowed; *a; a++)
            if (strcmp(*a, v) == 0)
                return DUET_STATUS_OK;
        return fail_not_allowed(cfg, where, key, v);
    }
    return DUET_STATUS_OK;
}

/* Checks v against the range, pattern or set of keys[k]; the type is already right. */
static duet_status check_value(duet_config *cfg, const char *where, int k, const union value *v)
{
    switch (keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        return check_string(cfg, where, &keys[k], v->s);
    case DUET_CONFIG_TYPE_INT:
        return check_int(cfg, where, &keys[k], v->i);
    case DUET_CONFIG_TYPE_FLOAT:
        return check_float(cfg, where, &keys[k], v->f);
    case DUET_CONFIG_TYPE_BOOL:
        return DUET_STATUS_OK;
    }
    return DUET_STATUS_OK;
}

/* ---- loading a file ---------------------------------------------------------------------- */

struct loader {
    duet_config *cfg; /* receives the error */
    struct table *t;  /* staging table, moved into cfg on success */
    const char *name; /* the file name given to load */
};

/* "FILE:LINE" of a setting, malloc'd; FILE is the included file's name or the loaded one. */
static char *setting_where(const struct loader *ld, const config_setting_t *s)
{
    const char *file = config_setting_source_file(s);

    return format("%s:%u", file ? file : ld->name, (unsigned)config_setting_source_line(s));
}

/* Reads the value of s as keys[k]'s type into *v (a string is copied). */
static duet_status setting_value(const struct loader *ld, const config_setting_t *s, int k,
                                 const char *where, union value *v)
{
    int type = config_setting_type(s);
    bool is_int = type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64;

    switch (keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        if (type != CONFIG_TYPE_STRING)
            break;
        v->s = strdup(config_setting_get_string(s));
        return v->s ? DUET_STATUS_OK : fail_oom(ld->cfg);
    case DUET_CONFIG_TYPE_INT:
        if (!is_int)
            break;
        v->i = config_setting_get_int64(s);
        return DUET_STATUS_OK;
    case DUET_CONFIG_TYPE_FLOAT:
        if (!is_int && type != CONFIG_TYPE_FLOAT)
            break;
        v->f = is_int ? (double)config_setting_get_int64(s) : config_setting_get_float(s);
        return DUET_STATUS_OK;
    case DUET_CONFIG_TYPE_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            break;
        v->b = config_setting_get_bool(s);
        return DUET_STATUS_OK;
    }
    return fail(ld->cfg, DUET_STATUS_BAD_CONFIG, where, keys[k].path, "must be %s, got %s",
                type_name(keys[k].type), setting_type_name(s));
}

/* Checks setting s as the value of keys[k] and stages it. */
static duet_status load_key(struct loader *ld, const config_setting_t *s, int k)
{
    union value v = {0};
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return fail_oom(ld->cfg);
    st = setting_value(ld, s, k, where, &v);
    if (st)
        goto out_free_where;
    st = check_value(ld->cfg, where, k, &v);
    if (st)
        goto out_free_value;
    slot_assign(&ld->t->slots[k], keys[k].type, v, where, false);
    return DUET_STATUS_OK;

out_free_value:
    if (keys[k].type == DUET_CONFIG_TYPE_STRING)
        free(v.s);
out_free_where:
    free(where);
    return st;
}

/* Reports an unknown setting, or a setting in an unknown place, at s. */
static duet_status load_unknown(struct loader *ld, const config_setting_t *s, const char *path,
                                const char *what)
{
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return fail_oom(ld->cfg);
    st = fail_unknown(ld->cfg, where, path, what);
    free(where);
    return st;
}

static duet_status load_group_member(struct loader *ld, enum group g, const config_setting_t *s)
{
    char *path = format("%s.%s", group_names[g], config_setting_name(s));
    duet_status st;
    int k;

    if (!path)
        return fail_oom(ld->cfg);
    k = key_find(path);
    st = k >= 0 ? load_key(ld, s, k) : load_unknown(ld, s, path, "unknown key");
    free(path);
    return st;
}

/* Marks group g present at s and loads its members. */
static duet_status load_group(struct loader *ld, enum group g, const config_setting_t *s)
{
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return fail_oom(ld->cfg);
    if (!config_setting_is_group(s)) {
        st = fail(ld->cfg, DUET_STATUS_BAD_CONFIG, where, group_names[g], "must be a group, got %s",
                  setting_type_name(s));
        free(where);
        return st;
    }
    ld->t->groups[g].present = true;
    ld->t->groups[g].where = where;
    for (int i = 0; i < config_setting_length(s); i++) {
        st = load_group_member(ld, g, config_setting_get_elem(s, i));
        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

static duet_status load_root(struct loader *ld, const config_setting_t *root)
{
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *s = config_setting_get_elem(root, i);
        const char *name = config_setting_name(s);
        int g = group_find(name), k = key_find(name);
        duet_status st;

        if (g >= 0)
            st = load_group(ld, (enum group)g, s);
        else if (k >= 0)
            st = load_key(ld, s, k);
        else
            st = load_unknown(ld, s, name,
                              config_setting_is_group(s) ? "unknown group" : "unknown key");
        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

/* Moves the staged values into cfg; a slot already set by an override keeps its value. */
static void commit_staged(duet_config *cfg, struct table *staged)
{
    for (int k = 0; k < N_KEYS; k++) {
        struct slot *slot = &cfg->t.slots[k];

        if (!staged->slots[k].set || slot->from_set)
            continue;
        slot_clear(slot, keys[k].type);
        *slot = staged->slots[k];
        staged->slots[k] = (struct slot){0};
    }
    for (int g = 0; g < N_GROUPS; g++) {
        if (!staged->groups[g].present)
            continue;
        free(cfg->t.groups[g].where);
        cfg->t.groups[g] = staged->groups[g];
        staged->groups[g] = (struct group_state){0};
    }
}

static duet_status parse_failed(duet_config *cfg, const config_t *lc, const char *name, int err)
{
    const char *file = config_error_file(lc) ? config_error_file(lc) : name;
    const char *text;
    char *where;
    duet_status st;

    if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
        return fail(cfg, DUET_STATUS_IO, name, NULL, "cannot read: %s",
                    err ? strerror(err) : "not a readable file");
    where = format("%s:%d", file, config_error_line(lc));
    if (!where)
        return fail_oom(cfg);
    text = config_error_text(lc) ? config_error_text(lc) : "syntax error";
    /* libconfig's text is often just "syntax error": do not say it twice. */
    if (strcmp(text, "syntax error") == 0)
        st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL, "syntax error");
    else
        st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL, "syntax error: %s", text);
    free(where);
    return st;
}

/* Walks what libconfig parsed (ok) into cfg, or reports why it did not parse. */
static duet_status load_parsed(duet_config *cfg, const config_t *lc, int ok, int err,
                               const char *name)
{
    struct table staged = {0};
    struct loader ld = {.cfg = cfg, .t = &staged, .name = name};
    duet_status st;
    char *name_copy;

    if (!ok)
        return parse_failed(cfg, lc, name, err);
    st = load_root(&ld, config_root_setting(lc));
    if (st)
        goto out_free_staged;
    name_copy = strdup(name);
    if (!name_copy) {
        st = fail_oom(cfg);
        goto out_free_staged;
    }
    cfg->name = name_copy;
    commit_staged(cfg, &staged);
out_free_staged:
    table_fini(&staged);
    return st;
}

static duet_status begin_load(duet_config *cfg)
{
    clear_error(cfg);
    if (cfg->name)
        return fail(cfg, DUET_STATUS_INVALID_ARGUMENT, NULL, NULL,
                    "a configuration is loaded only once; %s is already loaded", cfg->name);
    return DUET_STATUS_OK;
}

#define MAX_INCLUDE_DEPTH 10 /* libconfig's own limit */

static duet_status check_file(duet_config *cfg, const char *path, const char *where, int depth);

/* The @include lines of text (a file's contents, or a string loaded under `name`): each target
 * must pass check_file too, for libconfig's scanner exits the process (exit(2)) on an include
 * that is a directory. A target that cannot be opened is left to libconfig, whose message names
 * it. Lines are read as libconfig's scanner does: @include first on the line (after blanks), then
 * a quoted path, relative to the current directory. */
static duet_status check_includes(duet_config *cfg, const char *text, const char *name, int depth)
{
    unsigned line = 1;

    for (const char *p = text; *p; line++) {
        const char *eol = strchr(p, '\n'), *q = p;

        while (*q == ' ' || *q == '\t')
            q++;
        if (strncmp(q, "@include", 8) == 0) {
            const char *open_q = strchr(q + 8, '"'), *close_q;

            close_q = open_q && (!eol || open_q < eol) ? strchr(open_q + 1, '"') : NULL;
            if (close_q && (!eol || close_q < eol)) {
                char *target = strndup(open_q + 1, (size_t)(close_q - open_q - 1));
                char *where = format("%s:%u", name, line);
                duet_status st;

                if (!target || !where) {
                    free(target);
                    free(where);
                    return fail_oom(cfg);
                }
                st = check_file(cfg, target, where, depth + 1);
                free(target);
                free(where);
                if (st)
                    return st;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return DUET_STATUS_OK;
}

/* A configuration file that libconfig may read: a regular file (a FIFO would block the read for
 * ever) of at most DUET_CONFIG_MAX_BYTES, whose @include targets are such files too. Opened
 * without blocking, so a FIFO is seen, not waited on; a file that cannot be opened is left to
 * libconfig, whose message names the reason. `where` prefixes messages: the path itself, or the
 * "file:line" of the @include that names it. */
static duet_status check_file(duet_config *cfg, const char *path, const char *where, int depth)
{
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    duet_status st = DUET_STATUS_OK;
    char *text = NULL;

    if (fd < 0)
        return DUET_STATUS_OK;
    if (depth > MAX_INCLUDE_DEPTH)
        st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
                  "@include \"%s\": includes nest deeper than %d", path, MAX_INCLUDE_DEPTH);
    else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = fail(cfg, DUET_STATUS_IO, where, NULL,
                  depth ? "@include \"%s\": not a regular file" : "cannot read: not a regular file",
                  path);
    else if ((uint64_t)sb.st_size > DUET_CONFIG_MAX_BYTES && depth)
        st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
                  "@include \"%s\": %lld bytes is too large for a configuration (at most %u)", path,
                  (long long)sb.st_size, DUET_CONFIG_MAX_BYTES);
    else if ((uint64_t)sb.st_size > DUET_CONFIG_MAX_BYTES)
        st = fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
                  "%lld bytes is too large for a configuration (at most %u)", (long long)sb.st_size,
                  DUET_CONFIG_MAX_BYTES);
    else if (!(text = calloc(1, (size_t)sb.st_size + 1)))
        st = fail_oom(cfg);
    else if (read(fd, text, (size_t)sb.st_size) == sb.st_size)
        st = check_includes(cfg, text, path, depth);
    free(text);
    close(fd);
    return st;
}

DUET_API duet_status duet_config_load_file(duet_config *cfg, const char *path)
{
    config_t lc;
    duet_status st;
    int ok, err;

    if (!cfg || !path)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = begin_load(cfg);
    if (!st)
        st = check_file(cfg, path, path, 0);
    if (st)
        return st;
    config_init(&lc);
    errno = 0;
    ok = config_read_file(&lc, path);
    err = errno;
    st = load_parsed(cfg, &lc, ok, err, path);
    config_destroy(&lc);
    return st;
}

DUET_API duet_status duet_config_load_string(duet_config *cfg, const char *text, const char *name)
{
    config_t lc;
    duet_status st;
    int ok;

    if (!cfg || !text || !name)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = begin_load(cfg);
    if (st)
        return st;
    if (strlen(text) > DUET_CONFIG_MAX_BYTES)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, name, NULL,
                    "%zu bytes is too large for a configuration (at most %u)", strlen(text),
                    DUET_CONFIG_MAX_BYTES);
    if ((st = check_includes(cfg, text, name, 0)) != DUET_STATUS_OK)
        return st;
    config_init(&lc);
    ok = config_read_string(&lc, text);
    st = load_parsed(cfg, &lc, ok, 0, name);
    config_destroy(&lc);
    return st;
}

/* ---- overrides --------------------------------------------------------------------------- */

/* One override being applied: the assignment split into key and value, and its message prefix. */
struct override {
    char *where; /* "--set ASSIGNMENT" */
    char *key;   /* trimmed text before '=' */
    char *value; /* trimmed text after '=', NULL when there is no '=' */
};

static char *dup_trimmed(const char *begin, const char *end)
{
    char *s;

    while (begin < end && isspace((unsigned char)*begin))
        begin++;
    while (end > begin && isspace((unsigned char)end[-1]))
        end--;
    s = malloc((size_t)(end - begin) + 1);
    if (s) {
        memcpy(s, begin, (size_t)(end - begin));
        s[end - begin] = '\0';
    }
    return s;
}

static void override_fini(struct override *o)
{
    free(o->where);
    free(o->key);
    free(o->value);
}

static duet_status override_split(duet_config *cfg, const char *assignment, struct override *o)
{
    const char *eq = strchr(assignment, '=');
    const char *key_end = eq ? eq : assignment + strlen(assignment);

    o->where = format("--set %s", assignment);
    o->key = dup_trimmed(assignment, key_end);
    o->value = eq ? dup_trimmed(eq + 1, eq + strlen(eq)) : NULL;
    if (!o->where || !o->key || (eq && !o->value))
        return fail_oom(cfg);
    if (o->key[0] == '\0')
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, NULL,
                    "missing key before '=' (expected KEY=VALUE)");
    if (!eq)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, o->key,
                    "missing '=' (expected KEY=VALUE)");
    return DUET_STATUS_OK;
}

enum parse_result {
    PARSE_OK,
    PARSE_BAD,   /* not the type's syntax */
    PARSE_RANGE, /* the syntax is right but the number does not fit */
};

/* libconfig integer syntax: [+-]digits or 0x hex digits, then an optional L or LL. */
static enum parse_result parse_int(const char *text, int64_t *out)
{
    bool hex = text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
    const char *digits = hex ? text + 2 : text + (text[0] == '+' || text[0] == '-');
    char *end;

    if (!(hex ? isxdigit((unsigned char)*digits) : isdigit((unsigned char)*digits)))
        return PARSE_BAD;
    errno = 0;
    *out = strtoll(text, &end, hex ? 16 : 10);
    if (*end == 'L')
        end += end[1] == 'L' ? 2 : 1;
    if (*end != '\0')
        return PARSE_BAD;
    return errno == ERANGE ? PARSE_RANGE : PARSE_OK;
}

static size_t count_digits(const char *s)
{
    size_t n = 0;

    while (isdigit((unsigned char)s[n]))
        n++;
    return n;
}

/* Checks decimal floating point (or integer) syntax: no hex, inf or nan. */
static bool is_decimal_number(const char *text)
{
    const char *p = text + (text[0] == '+' || text[0] == '-');
    size_t int_digits = count_digits(p), frac_digits = 0;

    p += int_digits;
    if (*p == '.') {
        frac_digits = count_digits(p + 1);
        p += 1 + frac_digits;
    }
    if (int_digits + frac_digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p += 1 + (p[1] == '+' || p[1] == '-');
        if (count_digits(p) == 0)
            return false;
        p += count_digits(p);
    }
    return *p == '\0';
}

/* A decimal number that fits a double (no overflow, no underflow). */
static enum parse_result parse_float(const char *text, double *out)
{
    if (!is_decimal_number(text))
        return PARSE_BAD;
    errno = 0;
    *out = strtod(text, NULL);
    return errno == ERANGE || !isfinite(*out) ? PARSE_RANGE : PARSE_OK;
}

static enum parse_result parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            *out = strcasecmp(text, yes[i]) == 0;
            return PARSE_OK;
        }
    }
    return PARSE_BAD;
}

/* Unquotes "…" with \" and \\ escapes into out (malloc'd); a bare string is copied. Returns a
 * message for a malformed quoted string, or NULL (out NULL too when out of memory). */
static const char *parse_string(const char *text, char **out)
{
    char *s = malloc(strlen(text) + 1), *w = s;
    const char *p = text + 1;

    *out = s;
    if (!s || text[0] != '"') {
        if (s)
            strcpy(s, text);
        return NULL;
    }
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
            p++;
        else if (*p == '\\')
            return "only \\\" and \\\\ may be escaped in a quoted string";
        *w++ = *p;
    }
    *w = '\0';
    if (*p != '"')
        return "the quoted string has no closing quote";
    if (p[1] != '\0')
        return "text follows the closing quote";
    return NULL;
}

static duet_status override_string(duet_config *cfg, const struct override *o, int k,
                                   union value *v)
{
    const char *bad = parse_string(o->value, &v->s);

    if (!v->s)
        return fail_oom(cfg);
    if (bad) {
        free(v->s);
        v->s = NULL;
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, keys[k].path, "%s", bad);
    }
    return DUET_STATUS_OK;
}

/* Reads the override's value text as keys[k]'s type, strictly. */
static duet_status override_value(duet_config *cfg, const struct override *o, int k, union value *v)
{
    enum parse_result r = PARSE_BAD;

    switch (keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        return override_string(cfg, o, k, v);
    case DUET_CONFIG_TYPE_INT:
        r = parse_int(o->value, &v->i);
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        r = parse_float(o->value, &v->f);
        break;
    case DUET_CONFIG_TYPE_BOOL:
        r = parse_bool(o->value, &v->b);
        break;
    }
    if (r == PARSE_RANGE)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, keys[k].path,
                    "out of range for %s, got \"%s\"", type_name(keys[k].type), o->value);
    if (r == PARSE_BAD)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, keys[k].path, "must be %s, got \"%s\"",
                    type_name(keys[k].type), o->value);
    return DUET_STATUS_OK;
}

/* Stores v for keys[k] as an override, creating the key's group when it is absent. */
static duet_status override_commit(duet_config *cfg, const struct override *o, int k, union value v)
{
    enum group g = keys[k].group;
    char *where = strdup(o->where);
    char *group_where = NULL;

    if (g != GROUP_TOP && !cfg->t.groups[g].present)
        group_where = strdup(o->where);
    if (!where || (g != GROUP_TOP && !cfg->t.groups[g].present && !group_where)) {
        free(where);
        free(group_where);
        return fail_oom(cfg);
    }
    slot_assign(&cfg->t.slots[k], keys[k].type, v, where, true);
    if (group_where) {
        cfg->t.groups[g].present = true;
        cfg->t.groups[g].where = group_where;
    }
    return DUET_STATUS_OK;
}

static duet_status override_apply(duet_config *cfg, const struct override *o)
{
    union value v = {0};
    int k = key_find(o->key);
    duet_status st;

    if (k < 0 && group_find(o->key) >= 0)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, o->key,
                    "is a group; set one of its keys (%s.NAME=VALUE)", o->key);
    if (k < 0)
        return fail_unknown(cfg, o->where, o->key, "unknown key");
    st = override_value(cfg, o, k, &v);
    if (!st)
        st = check_value(cfg, o->where, k, &v);
    if (!st)
        st = override_commit(cfg, o, k, v);
    if (st && keys[k].type == DUET_CONFIG_TYPE_STRING)
        free(v.s);
    return st;
}

DUET_API duet_status duet_config_set(duet_config *cfg, const char *assignment)
{
    struct override o = {0};
    duet_status st;

    if (!cfg)
        return DUET_STATUS_INVALID_ARGUMENT;
    clear_error(cfg);
    if (!assignment)
        return fail(cfg, DUET_STATUS_INVALID_ARGUMENT, NULL, NULL, "no assignment given");
    st = override_split(cfg, assignment, &o);
    if (!st)
        st = override_apply(cfg, &o);
    override_fini(&o);
    return st;
}

/* ---- validation -------------------------------------------------------------------------- */

/* Where an error about keys[k] points: where it was set, else the loaded file, else nowhere. */
static const char *key_where(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].where ? cfg->t.slots[k].where : cfg->name;
}

static int64_t int_of(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].set ? cfg->t.slots[k].v.i : keys[k].def_i;
}

static bool bool_of(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].set ? cfg->t.slots[k].v.b : keys[k].def_b;
}

static duet_status validate_scheduler(duet_config *cfg)
{
    int64_t batched = int_of(cfg, K_SCHED_MAX_BATCHED_TOKENS);
    int64_t model_len = int_of(cfg, K_SCHED_MAX_MODEL_LEN);
    int64_t seqs = int_of(cfg, K_SCHED_MAX_NUM_SEQS);
    const char *where = key_where(cfg, K_SCHED_MAX_BATCHED_TOKENS);
    const char *path = keys[K_SCHED_MAX_BATCHED_TOKENS].path;

    if (!bool_of(cfg, K_SCHED_CHUNKED_PREFILL) && batched > 0 && model_len > 0 &&
        batched < model_len)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, path,
                    "must be >= scheduler.max_model_len (%" PRId64
                    ") unless scheduler.chunked_prefill is true, got %" PRId64,
                    model_len, batched);
    if (batched > 0 && batched < seqs)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, where, path,
                    "must be >= scheduler.max_num_seqs (%" PRId64 "), got %" PRId64, seqs, batched);
    return DUET_STATUS_OK;
}

DUET_API duet_status duet_config_validate(duet_config *cfg)
{
    if (!cfg)
        return DUET_STATUS_INVALID_ARGUMENT;
    clear_error(cfg);
    if (!cfg->t.slots[K_MODEL].set)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, cfg->name, keys[K_MODEL].path,
                    "required key is missing");
    if (cfg->t.groups[GROUP_SPECULATIVE].present && !cfg->t.slots[K_SPEC_DRAFT_MODEL].set)
        return fail(cfg, DUET_STATUS_BAD_CONFIG, cfg->t.groups[GROUP_SPECULATIVE].where,
                    keys[K_SPEC_DRAFT_MODEL].path,
                    "required when the speculative group is present");
    return validate_scheduler(cfg);
}

/* ---- object and readers ------------------------------------------------------------------ */

DUET_API duet_status duet_config_create(duet_config **out)
{
    duet_config *cfg;

    if (!out)
        return DUET_STATUS_INVALID_ARGUMENT;
    cfg = calloc(1, sizeof(*cfg));
    *out = cfg;
    return cfg ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

DUET_API void duet_config_destroy(duet_config *cfg)
{
    if (!cfg)
        return;
    table_fini(&cfg->t);
    free(cfg->name);
    free(cfg->error);
    free(cfg);
}

DUET_API const char *duet_config_error(const duet_config *cfg)
{
    if (!cfg)
        return "";
    if (cfg->error_oom)
        return "out of memory";
    return cfg->error ? cfg->error : "";
}

/* Finds key for a reader of the given type; *k is its index when the result is OK. */
static duet_status reader_find(const duet_config *cfg, const char *key, const void *out,
                               duet_config_type type, int *k)
{
    if (!cfg || !key || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    *k = key_find(key);
    if (*k < 0)
        return DUET_STATUS_NOT_FOUND;
    if (keys[*k].type != type)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (!cfg->t.slots[*k].set && (keys[*k].flags & (KEY_REQUIRED | KEY_NO_DEFAULT)))
        return DUET_STATUS_NOT_FOUND;
    return DUET_STATUS_OK;
}

DUET_API duet_status duet_config_get_string(const duet_config *cfg, const char *key,
                                            const char **out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_STRING, &k);

    if (!st)
        *out = cfg->t.slots[k].set ? cfg->t.slots[k].v.s : keys[k].def_s;
    return st;
}

DUET_API duet_status duet_config_get_int(const duet_config *cfg, const char *key, int64_t *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_INT, &k);

    if (!st)
        *out = int_of(cfg, k);
    return st;
}

DUET_API duet_status duet_config_get_float(const duet_config *cfg, const char *key, double *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_FLOAT, &k);

    if (!st)
        *out = cfg->t.slots[k].set ? cfg->t.slots[k].v.f : keys[k].def_f;
    return st;
}

DUET_API duet_status duet_config_get_bool(const duet_config *cfg, const char *key, bool *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_BOOL, &k);

    if (!st)
        *out = bool_of(cfg, k);
    return st;
}

DUET_API bool duet_config_is_set(const duet_config *cfg, const char *key)
{
    int k = cfg && key ? key_find(key) : -1;

    return k >= 0 && cfg->t.slots[k].set;
}

DUET_API bool duet_config_has_group(const duet_config *cfg, const char *group)
{
    int g = cfg && group ? group_find(group) : -1;

    return g >= 0 && cfg->t.groups[g].present;
}

DUET_API duet_status duet_config_drop_group(duet_config *cfg, const char *group)
{
    int g;

    if (!cfg || !group)
        return DUET_STATUS_INVALID_ARGUMENT;
    clear_error(cfg);
    g = group_find(group);
    if (g < 0)
        return fail(cfg, DUET_STATUS_NOT_FOUND, NULL, group, "no such group");
    for (int k = 0; k < N_KEYS; k++)
        if (keys[k].group == (enum group)g)
            slot_clear(&cfg->t.slots[k], keys[k].type);
    free(cfg->t.groups[g].where);
    cfg->t.groups[g] = (struct group_state){0};
    return DUET_STATUS_OK;
}

DUET_API duet_status duet_config_key_type(const char *key, duet_config_type *out)
{
    int k;

    if (!key || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    k = key_find(key);
    if (k < 0)
        return DUET_STATUS_NOT_FOUND;
    *out = keys[k].type;
    return DUET_STATUS_OK;
}

DUET_API const char *duet_config_source(const duet_config *cfg, const char *key)
{
    int k = cfg && key ? key_find(key) : -1;

    if (k < 0)
        return "";
    if (!cfg->t.slots[k].set)
        return "default";
    return cfg->t.slots[k].from_set ? "--set" : cfg->t.slots[k].where;
}

/* ---- printing ---------------------------------------------------------------------------- */

/* Writes s as a libconfig string literal. */
static void print_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c == '\t')
            fputs("\\t", f);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, "\\x%02x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* Writes x with the fewest digits that read back as x (at most %.17g), adding ".0" when that
 * alone would read back as an integer. */
static void print_float(FILE *f, double x)
{
    char buf[32];

    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    fputs(buf, f);
    if (!strpbrk(buf, ".eEn"))
        fputs(".0", f);
}

/* Writes a comment's text, replacing control characters that would end or break it. */
static void print_comment(FILE *f, const char *text)
{
    fputs(" # ", f);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        fputc(*c < 0x20 || *c == 0x7f ? '?' : *c, f);
    fputc('\n', f);
}

static void print_key(const duet_config *cfg, FILE *f, int k, const char *indent)
{
    const struct slot *slot = &cfg->t.slots[k];
    int64_t i;

    if (!slot->set && (keys[k].flags & (KEY_REQUIRED | KEY_NO_DEFAULT)))
        return;
    fprintf(f, "%s%s = ", indent, last_component(keys[k].path));
    switch (keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        print_string(f, slot->set ? slot->v.s : keys[k].def_s);
        break;
    case DUET_CONFIG_TYPE_INT:
        i = int_of(cfg, k);
        fprintf(f, "%" PRId64 "%s", i, i < INT32_MIN || i > INT32_MAX ? "L" : "");
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        print_float(f, slot->set ? slot->v.f : keys[k].def_f);
        break;
    case DUET_CONFIG_TYPE_BOOL:
        fputs(bool_of(cfg, k) ? "true" : "false", f);
        break;
    }
    fputc(';', f);
    print_comment(f, duet_config_source(cfg, keys[k].path));
}

DUET_API duet_status duet_config_print(const duet_config *cfg, FILE *f)
{
    if (!cfg || !f)
        return DUET_STATUS_INVALID_ARGUMENT;
    for (int k = 0; k < N_KEYS; k++)
        if (keys[k].group == GROUP_TOP)
            print_key(cfg, f, k, "");
    for (int g = 0; g < N_GROUPS; g++) {
        if (g == GROUP_SPECULATIVE && !cfg->t.groups[g].present)
            continue;
        fprintf(f, "\n%s = {\n", group_names[g]);
        for (int k = 0; k < N_KEYS; k++)
            if (keys[k].group == (enum group)g)
                print_key(cfg, f, k, "    ");
        fputs("};\n", f);
    }
    if (fflush(f) != 0 || ferror(f))
        return DUET_STATUS_IO;
    return DUET_STATUS_OK;
}
