/*
 * schema.c — every key duet's configuration knows, and the rules its values follow.
 *
 * One row per key (docs/configuration.md lists the same keys for people):
 *
 *   duet__keys[K_CACHE_BLOCK_SIZE] =
 *     { "cache.block_size", GROUP_CACHE, INT, KEY_POW2, 1..256, default 16,
 *       field = offsetof(duet_settings, cache.block_size) }
 *
 * The row is the only place that says a key's type, range and default, and which field of the
 * typed settings (duet/config.h) it fills: the parser (settings_parse.c) checks values against
 * it, the readers (settings.c) fall back to its default, the printer writes its rows in order.
 * A string key flagged KEY_ENUM fills an enum field with the index of its value in `allowed`,
 * so the order of `allowed` is the order of the enum's constants (tests/check_config.c checks).
 *
 * Rules between keys (what one key alone cannot say) are duet_config_validate(), at the end.
 */
#define _GNU_SOURCE
#include "cpulist.h"
#include "plugin_api-int.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

/* ---- the keys ---------------------------------------------------------------------------- */

const char *const duet__group_names[N_GROUPS] = {"target", "speculative", "cache", "scheduler",
                                                 "server"};

/* Allowed strings. Those of a KEY_ENUM key are in the order of its enum's constants:
 * duet_log_level, duet_acceptance, duet_sched_preemption, duet_sched_policy. */
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const dtypes[] = {"auto", "bf16", "f16", "f32", NULL};
static const char *const weight_types[] = {"auto", "bf16", "f16", "f32", "int8", "int4", NULL};
static const char *const acceptances[] = {"rejection", "typical", "synthetic", NULL};
static const char *const preemptions[] = {"auto", "recompute", "swap", NULL};
static const char *const policies[] = {"fcfs", "priority", NULL};
static const char *const spec_metrics_levels[] = {"none", "summary", NULL};

#define STR(p, g, fl, set, d, f)                                                                   \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_STRING, .flags = fl, .allowed = set,       \
        .def_s = d, .field = offsetof(duet_settings, f)                                            \
    }
#define INT(p, g, fl, lo, hi, d, f)                                                                \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_INT, .flags = fl, .imin = lo, .imax = hi,  \
        .def_i = d, .field = offsetof(duet_settings, f)                                            \
    }
#define FLT(p, g, fl, lo, hi, d, f)                                                                \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_FLOAT, .flags = fl, .fmin = lo,            \
        .fmax = hi, .def_f = d, .field = offsetof(duet_settings, f)                                \
    }
#define BOOL(p, g, d, f)                                                                           \
    {                                                                                              \
        .path = p, .group = g, .type = DUET_CONFIG_TYPE_BOOL, .def_b = d,                          \
        .field = offsetof(duet_settings, f)                                                        \
    }

const struct key duet__keys[N_KEYS] = {
    [K_MODEL] = STR("model", GROUP_TOP, KEY_REQUIRED | KEY_NONEMPTY, NULL, NULL, model),
    [K_PLUGIN_DIR] =
        STR("plugin_dir", GROUP_TOP, KEY_NO_DEFAULT | KEY_NONEMPTY, NULL, NULL, plugin_dir),
    [K_LOG_LEVEL] = STR("log_level", GROUP_TOP, KEY_ENUM, log_levels, "warn", log_level),
    [K_TARGET_WORKER] = STR("target.worker", GROUP_TARGET, KEY_PLUGIN, NULL, "cpu", target.worker),
    [K_TARGET_DEVICE] =
        STR("target.device", GROUP_TARGET, KEY_NONEMPTY, NULL, "auto", target.device),
    [K_TARGET_DTYPE] = STR("target.dtype", GROUP_TARGET, 0, dtypes, "auto", target.dtype),
    [K_TARGET_WEIGHTS] =
        STR("target.weights", GROUP_TARGET, 0, weight_types, "auto", target.weights),
    [K_TARGET_GROUP_SIZE] =
        INT("target.group_size", GROUP_TARGET, KEY_POW2, 32, 128, 32, target.group_size),
    [K_TARGET_ZERO_POINT] = BOOL("target.zero_point", GROUP_TARGET, false, target.zero_point),
    [K_TARGET_QUANT_LM_HEAD] =
        BOOL("target.quantize_lm_head", GROUP_TARGET, true, target.quantize_lm_head),
    [K_TARGET_THREADS] = INT("target.threads", GROUP_TARGET, 0, 0, 4096, 0, target.threads),
    [K_TARGET_CPUS] =
        STR("target.cpus", GROUP_TARGET, KEY_NO_DEFAULT | KEY_CPULIST, NULL, NULL, target_cpus),
    [K_TARGET_TP] =
        INT("target.tensor_parallel", GROUP_TARGET, 0, 1, 64, 1, target.tensor_parallel),
    [K_TARGET_CHECK_VALUES] = BOOL("target.check_values", GROUP_TARGET, false, target.check_values),
    [K_SPEC_DRAFT_MODEL] = STR("speculative.draft_model", GROUP_SPECULATIVE,
                               KEY_NO_DEFAULT | KEY_NONEMPTY, NULL, NULL, speculative.draft_model),
    [K_SPEC_WORKER] = STR("speculative.worker", GROUP_SPECULATIVE, KEY_PLUGIN, NULL, "cpu",
                          speculative.draft.worker),
    [K_SPEC_DEVICE] = STR("speculative.device", GROUP_SPECULATIVE, KEY_NONEMPTY, NULL, "auto",
                          speculative.draft.device),
    [K_SPEC_DTYPE] =
        STR("speculative.dtype", GROUP_SPECULATIVE, 0, dtypes, "auto", speculative.draft.dtype),
    [K_SPEC_WEIGHTS] = STR("speculative.weights", GROUP_SPECULATIVE, 0, weight_types, "auto",
                           speculative.draft.weights),
    [K_SPEC_GROUP_SIZE] = INT("speculative.group_size", GROUP_SPECULATIVE, KEY_POW2, 32, 128, 32,
                              speculative.draft.group_size),
    [K_SPEC_ZERO_POINT] =
        BOOL("speculative.zero_point", GROUP_SPECULATIVE, false, speculative.draft.zero_point),
    [K_SPEC_QUANT_LM_HEAD] = BOOL("speculative.quantize_lm_head", GROUP_SPECULATIVE, true,
                                  speculative.draft.quantize_lm_head),
    [K_SPEC_THREADS] =
        INT("speculative.threads", GROUP_SPECULATIVE, 0, 0, 4096, 0, speculative.draft.threads),
    [K_SPEC_CPUS] = STR("speculative.cpus", GROUP_SPECULATIVE, KEY_NO_DEFAULT | KEY_CPULIST, NULL,
                        NULL, speculative_cpus),
    [K_SPEC_TP] = INT("speculative.tensor_parallel", GROUP_SPECULATIVE, 0, 1, 64, 1,
                      speculative.draft.tensor_parallel),
    [K_SPEC_CHECK_VALUES] =
        BOOL("speculative.check_values", GROUP_SPECULATIVE, false, speculative.draft.check_values),
    [K_SPEC_NUM_TOKENS] =
        INT("speculative.num_tokens", GROUP_SPECULATIVE, 0, 1, 32, 4, speculative.num_tokens),
    [K_SPEC_ACCEPTANCE] = STR("speculative.acceptance", GROUP_SPECULATIVE, KEY_ENUM, acceptances,
                              "rejection", speculative.acceptance),
    [K_SPEC_TYPICAL_THRESHOLD] =
        FLT("speculative.typical_posterior_threshold", GROUP_SPECULATIVE, KEY_MIN_OPEN, 0.0, 1.0,
            0.09, speculative.typical_posterior_threshold),
    [K_SPEC_TYPICAL_ALPHA] = FLT("speculative.typical_posterior_alpha", GROUP_SPECULATIVE,
                                 KEY_MIN_OPEN, 0.0, 1.0, 0.3, speculative.typical_posterior_alpha),
    /* no default: NAN in the typed field; required by, and only allowed with, synthetic */
    [K_SPEC_SYNTHETIC_RATE] = FLT("speculative.synthetic_rate", GROUP_SPECULATIVE, KEY_NO_DEFAULT,
                                  0.0, 1.0, NAN, synthetic_rate),
    [K_SPEC_DISABLE_BY_BATCH] = INT("speculative.disable_by_batch_size", GROUP_SPECULATIVE, 0, 0,
                                    1000000, 0, speculative.disable_by_batch_size),
    [K_SPEC_OVERLAP] = BOOL("speculative.overlap", GROUP_SPECULATIVE, true, speculative.overlap),
    [K_SPEC_ADAPTIVE] =
        BOOL("speculative.adaptive", GROUP_SPECULATIVE, false, speculative.adaptive),
    [K_CACHE_BLOCK_SIZE] =
        INT("cache.block_size", GROUP_CACHE, KEY_POW2, 1, 256, 16, cache.block_size),
    [K_CACHE_MEMORY_FRACTION] = FLT("cache.memory_fraction", GROUP_CACHE, KEY_MIN_OPEN, 0.0, 1.0,
                                    0.9, cache.memory_fraction),
    [K_CACHE_SWAP_SPACE] =
        FLT("cache.swap_space_gib", GROUP_CACHE, 0, 0.0, 1024.0, 4.0, cache.swap_space_gib),
    [K_CACHE_PREFIX_CACHING] =
        BOOL("cache.prefix_caching", GROUP_CACHE, false, cache.prefix_caching),
    [K_CACHE_CPU_KV_SPACE] = FLT("cache.cpu_kv_space_gib", GROUP_CACHE, KEY_MIN_OPEN, 0.0, 4096.0,
                                 4.0, cache.cpu_kv_space_gib),
    [K_SCHED_MAX_NUM_SEQS] =
        INT("scheduler.max_num_seqs", GROUP_SCHEDULER, 0, 1, 65536, 256, scheduler.max_num_seqs),
    [K_SCHED_MAX_BATCHED_TOKENS] = INT("scheduler.max_num_batched_tokens", GROUP_SCHEDULER, 0, 0,
                                       16777216, 0, scheduler.max_num_batched_tokens),
    [K_SCHED_MAX_MODEL_LEN] =
        INT("scheduler.max_model_len", GROUP_SCHEDULER, 0, 0, 16777216, 0, scheduler.max_model_len),
    [K_SCHED_PREEMPTION] = STR("scheduler.preemption", GROUP_SCHEDULER, KEY_ENUM, preemptions,
                               "auto", scheduler.preemption),
    [K_SCHED_CHUNKED_PREFILL] =
        BOOL("scheduler.chunked_prefill", GROUP_SCHEDULER, false, scheduler.chunked_prefill),
    [K_SCHED_POLICY] =
        STR("scheduler.policy", GROUP_SCHEDULER, KEY_ENUM, policies, "fcfs", scheduler.policy),
    [K_SERVER_HOST] =
        STR("server.host", GROUP_SERVER, KEY_NONEMPTY, NULL, "127.0.0.1", server.host),
    [K_SERVER_PORT] = INT("server.port", GROUP_SERVER, 0, 0, 65535, 8000, server.port),
    [K_SERVER_API_KEY] = STR("server.api_key", GROUP_SERVER, KEY_NO_DEFAULT | KEY_NONEMPTY, NULL,
                             NULL, server.api_key),
    [K_SERVER_SERVED_MODEL_NAME] =
        STR("server.served_model_name", GROUP_SERVER, KEY_NO_DEFAULT | KEY_NONEMPTY, NULL, NULL,
            server.served_model_name),
    [K_SERVER_TOKENIZER] = STR("server.tokenizer", GROUP_SERVER, KEY_NO_DEFAULT | KEY_NONEMPTY,
                               NULL, NULL, server.tokenizer),
    [K_SERVER_MAX_QUEUE] =
        INT("server.max_queue", GROUP_SERVER, 0, 1, 1000000, 1024, server.max_queue),
    [K_SERVER_REQUEST_TIMEOUT] =
        INT("server.request_timeout_s", GROUP_SERVER, 0, 0, 604800, 0, server.request_timeout_s),
    [K_SERVER_MAX_BODY_BYTES] = INT("server.max_body_bytes", GROUP_SERVER, 0, 1024, 1073741824,
                                    16777216, server.max_body_bytes),
    [K_SERVER_SPEC_METRICS] =
        STR("server.per_request_spec_decode_metrics", GROUP_SERVER, 0, spec_metrics_levels, "none",
            server.per_request_spec_decode_metrics),
};

/* Bounds the length of every path in duet__keys[]; sizes the edit-distance row (asserted). */
#define MAX_KEY_PATH 48

int duet__key_find(const char *path)
{
    for (int k = 0; k < N_KEYS; k++)
        if (strcmp(duet__keys[k].path, path) == 0)
            return k;
    return -1;
}

int duet__group_find(const char *name)
{
    for (int g = 0; g < N_GROUPS; g++)
        if (strcmp(duet__group_names[g], name) == 0)
            return g;
    return -1;
}

/* The last component of a dotted path. */
const char *duet__last_component(const char *path)
{
    const char *dot = strrchr(path, '.');

    return dot ? dot + 1 : path;
}

DUET_API const char *duet_config_key_name(size_t index)
{
    return index < N_KEYS ? duet__keys[index].path : NULL;
}

DUET_API duet_status duet_config_key_type(const char *key, duet_config_type *out)
{
    int k;

    if (!key || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    k = duet__key_find(key);
    if (k < 0)
        return DUET_STATUS_NOT_FOUND;
    *out = duet__keys[k].type;
    return DUET_STATUS_OK;
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
    const char *last = duet__last_component(typed), *best = NULL;
    size_t best_d = SIZE_MAX;
    bool best_same = false;

    for (int c = 0; c < N_KEYS + N_GROUPS; c++) {
        const char *path = c < N_KEYS ? duet__keys[c].path : duet__group_names[c - N_KEYS];
        size_t d = close_distance(typed, path);
        size_t d_last = close_distance(last, duet__last_component(path));
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

duet_status duet__fail_unknown(duet_config *cfg, const char *where, const char *path,
                               const char *what)
{
    const char *hint = suggest(path);

    if (hint)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, path, "%s; did you mean '%s'?",
                                 what, hint);
    return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, path, "%s", what);
}

/* ---- checking values --------------------------------------------------------------------- */

static duet_status check_int(duet_config *cfg, const char *where, const struct key *key, int64_t v)
{
    if ((key->flags & KEY_POW2) && (v < key->imin || v > key->imax || (v & (v - 1)) != 0))
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                                 "must be a power of two in %" PRId64 "..%" PRId64 ", got %" PRId64,
                                 key->imin, key->imax, v);
    if (v < key->imin || v > key->imax)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                                 "must be an integer in %" PRId64 "..%" PRId64 ", got %" PRId64,
                                 key->imin, key->imax, v);
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
    return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                             "must be a number in %s%s, %s], got %s", min_open ? "(" : "[", lo, hi,
                             got);
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
        return duet__config_fail_oom(cfg);
    }
    st = duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                           "must be one of %s, got \"%s\"", sb.buf, v);
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

/*
 * The CPUs this process may run on, read once when libduet is loaded: the workers pin the threads
 * that call them (docs/cpu-worker.md, "Threads"), so a later sched_getaffinity of the calling
 * thread could answer one worker's CPUs instead of the process's.
 */
static cpu_set_t process_cpus;

__attribute__((constructor)) static void read_process_cpus(void)
{
    if (sched_getaffinity(0, sizeof(process_cpus), &process_cpus) == 0)
        return;
    CPU_ZERO(&process_cpus); /* not known: every present CPU */
    for (long c = 0; c < get_nprocs_conf() && c < CPU_SETSIZE; c++)
        CPU_SET((size_t)c, &process_cpus);
}

static duet_status check_cpulist(duet_config *cfg, const char *where, const struct key *key,
                                 const char *v)
{
    char err[320];
    cpu_set_t set;

    if (!duet__cpulist_parse(v, &set, err, sizeof(err)) ||
        !duet__cpulist_check(&set, &process_cpus, err, sizeof(err)))
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path, "%s", err);
    return DUET_STATUS_OK;
}

static duet_status check_string(duet_config *cfg, const char *where, const struct key *key,
                                const char *v)
{
    if (key->flags & KEY_CPULIST)
        return check_cpulist(cfg, where, key, v);
    if ((key->flags & (KEY_NONEMPTY | KEY_PLUGIN)) && v[0] == '\0')
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
                                 "must not be empty");
    if ((key->flags & KEY_PLUGIN) && !is_plugin_name(v))
        return duet__config_fail(
            cfg, DUET_STATUS_BAD_CONFIG, where, key->path,
            "must be a plugin name ([a-z0-9_]+) or a path containing '/', got \"%s\"", v);
    if (key->allowed) {
        for (const char *const *a = key->allowed; *a; a++)
            if (strcmp(*a, v) == 0)
                return DUET_STATUS_OK;
        return fail_not_allowed(cfg, where, key, v);
    }
    return DUET_STATUS_OK;
}

/* Checks v against the range, pattern or set of duet__keys[k]; the type is already right. */
duet_status duet__check_value(duet_config *cfg, const char *where, int k, const union value *v)
{
    switch (duet__keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        return check_string(cfg, where, &duet__keys[k], v->s);
    case DUET_CONFIG_TYPE_INT:
        return check_int(cfg, where, &duet__keys[k], v->i);
    case DUET_CONFIG_TYPE_FLOAT:
        return check_float(cfg, where, &duet__keys[k], v->f);
    case DUET_CONFIG_TYPE_BOOL:
        return DUET_STATUS_OK;
    }
    return DUET_STATUS_OK;
}

/* ---- validation -------------------------------------------------------------------------- */

/* Where an error about key k points: where it was set, else the loaded file, else nowhere. */
static const char *key_where(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].where ? cfg->t.slots[k].where : cfg->name;
}

static duet_status validate_scheduler(duet_config *cfg)
{
    int64_t batched = duet__int_of(cfg, K_SCHED_MAX_BATCHED_TOKENS);
    int64_t model_len = duet__int_of(cfg, K_SCHED_MAX_MODEL_LEN);
    int64_t seqs = duet__int_of(cfg, K_SCHED_MAX_NUM_SEQS);
    const char *where = key_where(cfg, K_SCHED_MAX_BATCHED_TOKENS);
    const char *path = duet__keys[K_SCHED_MAX_BATCHED_TOKENS].path;

    if (!duet__bool_of(cfg, K_SCHED_CHUNKED_PREFILL) && batched > 0 && model_len > 0 &&
        batched < model_len)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, path,
                                 "must be >= scheduler.max_model_len (%" PRId64
                                 ") unless scheduler.chunked_prefill is true, got %" PRId64,
                                 model_len, batched);
    if (batched > 0 && batched < seqs)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, path,
                                 "must be >= scheduler.max_num_seqs (%" PRId64 "), got %" PRId64,
                                 seqs, batched);
    return DUET_STATUS_OK;
}

/* speculative.synthetic_rate is given exactly when speculative.acceptance is "synthetic". */
static duet_status validate_synthetic(duet_config *cfg)
{
    const struct slot *acc = &cfg->t.slots[K_SPEC_ACCEPTANCE];
    bool synthetic = acc->set && strcmp(acc->v.s, "synthetic") == 0;
    bool rate = cfg->t.slots[K_SPEC_SYNTHETIC_RATE].set;

    if (synthetic && !rate)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, key_where(cfg, K_SPEC_ACCEPTANCE),
                                 duet__keys[K_SPEC_ACCEPTANCE].path,
                                 "\"synthetic\" needs speculative.synthetic_rate (the probability "
                                 "of accepting each proposal, 0..1)");
    if (rate && !synthetic)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, key_where(cfg, K_SPEC_SYNTHETIC_RATE),
                                 duet__keys[K_SPEC_SYNTHETIC_RATE].path,
                                 "only applies with speculative.acceptance = \"synthetic\" (it is "
                                 "\"%s\")",
                                 acc->set ? acc->v.s : duet__keys[K_SPEC_ACCEPTANCE].def_s);
    return DUET_STATUS_OK;
}

DUET_API duet_status duet_config_validate(duet_config *cfg)
{
    duet_status st;

    if (!cfg)
        return DUET_STATUS_INVALID_ARGUMENT;
    duet__config_clear_error(cfg);
    cfg->validated = false;
    if (!cfg->t.slots[K_MODEL].set)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, cfg->name, duet__keys[K_MODEL].path,
                                 "required key is missing");
    if (cfg->t.groups[GROUP_SPECULATIVE].present && !cfg->t.slots[K_SPEC_DRAFT_MODEL].set)
        return duet__config_fail(
            cfg, DUET_STATUS_BAD_CONFIG, cfg->t.groups[GROUP_SPECULATIVE].where,
            duet__keys[K_SPEC_DRAFT_MODEL].path, "required when the speculative group is present");
    st = validate_scheduler(cfg);
    if (!st)
        st = validate_synthetic(cfg);
    if (!st)
        duet__settings_fill(cfg);
    return st;
}
