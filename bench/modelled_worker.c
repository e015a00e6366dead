/*
 * duet_modelled_worker.so — a worker that behaves like a GPU target without a GPU (benchmarks
 * only; built in the tree, never installed).
 *
 * It loads a real worker plugin (the CPU worker by default) and forwards every call to it, but
 * stretches each execute() that runs a forward pass to a modelled device time
 *
 *     t = passes × a + b × positions
 *
 *     positions = Σ over sequences (n_tokens + n_draft_steps): the tokens the batch feeds
 *     passes    = 1 + the largest n_draft_steps (1 for a target: prefill, decode, scoring)
 *
 * by sleeping for whatever the inner worker left of t. While it sleeps the CPU core is free, as
 * it is while a GPU computes, so a CPU draft overlapping it competes for nothing. The inner
 * worker runs a model whose work is negligible beside t (a 64-wide model with the draft's
 * vocabulary: it gives the tokens and the probability rows; their values matter only to real
 * acceptance); where it takes longer than t, the call takes as long as it did (duet-bench
 * overlap reports that excess).
 *
 * The defaults model a 7B bf16 Llama target on one H100 SXM (docs/performance.md, "Overlap
 * under a modelled GPU target"):
 *
 *     a = 5.0 ms:   13.5 GB of bf16 weights read at 3.35 TB/s (HBM3) = 4.0 ms, plus ~1 ms of
 *                   kernel launches and synchronisation per step
 *     b = 28.3 µs:  2 × 7e9 FLOP a position at half of the 989 TFLOP/s dense bf16 peak
 *
 * (KV-cache reads are left out: the benchmark's contexts are under 200 tokens.)
 *
 * Settings: <section>.device (a free string to the engine, which tells devices apart by it and
 * by the plugin's name) carries the model: "auto", or comma-separated items a=SECONDS,
 * b=SECONDS, inner=PLUGIN_PATH; every other key goes to the inner worker unchanged, and the
 * inner worker reads "auto" for <section>.device. The plugin's name is "modelled", so the engine
 * sees the target and a CPU draft on different devices and overlaps them (docs/engine.md,
 * "Overlap"). Its capabilities are the CPU worker's; an inner plugin lacking one is refused.
 */
#define _POSIX_C_SOURCE 200809L
#include "build_config.h"

#include "worker_kit.h"

#include <duet/plugin.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef DUET_MODELLED_INNER
#define DUET_MODELLED_INNER "duet_cpu_worker.so" /* bench/local.mk: the build tree's CPU worker */
#endif

#define MODELLED_A_S 5.0e-3  /* seconds a forward pass costs besides its positions */
#define MODELLED_B_S 2.83e-5 /* seconds a fed position costs */

#define MODELLED_CAPS                                                                              \
    (DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_BF16 |             \
     DUET_CAP_F16 | DUET_CAP_INT8 | DUET_CAP_INT4 | DUET_CAP_PREFIX_CACHE | DUET_CAP_PENALTIES)

struct duet_worker {
    void *dl;                        /* the inner plugin's dlopen handle */
    const duet_worker_plugin *inner; /* its table */
    duet_worker *iw;                 /* the inner worker */
    const duet_host_services *outer; /* the host's services */
    duet_host_services host;         /* what the inner worker gets: the host's, ctx = this */
    char device_key[64];             /* "<section>.device", read as "auto" by the inner worker */
    double a_s;                      /* seconds per forward pass */
    double b_s;                      /* seconds per fed position */
    char inner_path[1024];           /* the inner plugin's file */
    duet_kit_error err;              /* last_error() */
};

/* ---- host services as the inner worker sees them --------------------------------------- */

static duet_status get_string(void *ctx, const char *key, const char **out)
{
    duet_worker *w = ctx;

    if (strcmp(key, w->device_key) == 0) {
        *out = "auto";
        return DUET_STATUS_OK;
    }
    return w->outer->config_get_string(w->outer->ctx, key, out);
}

static duet_status get_int(void *ctx, const char *key, int64_t *out)
{
    duet_worker *w = ctx;

    return w->outer->config_get_int(w->outer->ctx, key, out);
}

static duet_status get_float(void *ctx, const char *key, double *out)
{
    duet_worker *w = ctx;

    return w->outer->config_get_float(w->outer->ctx, key, out);
}

static duet_status get_bool(void *ctx, const char *key, bool *out)
{
    duet_worker *w = ctx;

    return w->outer->config_get_bool(w->outer->ctx, key, out);
}

static void log_msg(void *ctx, duet_log_level level, const char *plugin, const char *message)
{
    duet_worker *w = ctx;

    w->outer->log(w->outer->ctx, level, plugin, message);
}

/* ---- the model's settings ------------------------------------------------------------------ */

/* One "a=..." / "b=..." value: finite, 0 .. 10 s. */
static bool parse_seconds(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return !errno && end != s && *end == '\0' && *out >= 0 && *out <= 10;
}

/* Reads <section>.device into the model's parameters and the inner plugin's path. */
static duet_status parse_device(duet_worker *w, const char *dev)
{
    char buf[1200], *save = NULL;

    w->a_s = MODELLED_A_S;
    w->b_s = MODELLED_B_S;
    snprintf(w->inner_path, sizeof(w->inner_path), "%s", DUET_MODELLED_INNER);
    if (strcmp(dev, "auto") == 0)
        return DUET_STATUS_OK;
    if (strlen(dev) >= sizeof(buf))
        return duet_kit_fail(&w->err, DUET_STATUS_BAD_CONFIG, "%s is too long", w->device_key);
    memcpy(buf, dev, strlen(dev) + 1);
    for (char *it = strtok_r(buf, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        bool ok = false;

        if (strncmp(it, "a=", 2) == 0)
            ok = parse_seconds(it + 2, &w->a_s);
        else if (strncmp(it, "b=", 2) == 0)
            ok = parse_seconds(it + 2, &w->b_s);
        else if (strncmp(it, "inner=", 6) == 0 && it[6] && strlen(it + 6) < sizeof(w->inner_path))
            ok = (snprintf(w->inner_path, sizeof(w->inner_path), "%s", it + 6), true);
        if (!ok)
            return duet_kit_fail(&w->err, DUET_STATUS_BAD_CONFIG,
                                 "%s: '%s' is not a=SECONDS, b=SECONDS (0..10) or inner=PATH",
                                 w->device_key, it);
    }
    return DUET_STATUS_OK;
}

/* ---- the inner plugin ---------------------------------------------------------------------- */

/* Opens the inner plugin and checks its table as the host's loader would. */
static duet_status open_inner(duet_worker *w)
{
    duet_plugin_query_fn query;
    const duet_worker_plugin *t;

    if (!(w->dl = dlopen(w->inner_path, RTLD_NOW | RTLD_LOCAL)))
        return duet_kit_fail(&w->err, DUET_STATUS_NOT_FOUND, "inner plugin: %s", dlerror());
    *(void **)&query = dlsym(w->dl, DUET_PLUGIN_QUERY_SYMBOL);
    if (!query || !(t = query(DUET_ABI_MAJOR, &w->host)))
        return duet_kit_fail(&w->err, DUET_STATUS_ABI_MISMATCH, "inner plugin %s: no table",
                             w->inner_path);
    if (t->abi_major != DUET_ABI_MAJOR || t->fingerprint != DUET_ABI_FINGERPRINT ||
        t->struct_size < offsetof(duet_worker_plugin, details) || !t->create || !t->destroy ||
        !t->describe || !t->cache_geometry || !t->init_cache || !t->execute || !t->last_error)
        return duet_kit_fail(&w->err, DUET_STATUS_ABI_MISMATCH,
                             "inner plugin %s: another ABI (major %u)", w->inner_path,
                             t->abi_major);
    if ((t->caps & MODELLED_CAPS) != MODELLED_CAPS)
        return duet_kit_fail(&w->err, DUET_STATUS_UNSUPPORTED,
                             "inner plugin %s lacks capabilities 0x%llx", w->inner_path,
                             (unsigned long long)(MODELLED_CAPS & ~t->caps));
    w->inner = t;
    return DUET_STATUS_OK;
}

/* Copies the inner worker's message after a failed call. */
static duet_status inner_failed(duet_worker *w, duet_status st)
{
    return duet_kit_fail(&w->err, st, "%s", w->inner->last_error(w->iw));
}

static void modelled_destroy(duet_worker *w)
{
    if (!w)
        return;
    if (w->iw)
        w->inner->destroy(w->iw);
    if (w->dl)
        dlclose(w->dl);
    free(w);
}

static duet_status modelled_create(const duet_worker_params *params, duet_worker **out,
                                   char *errbuf, size_t errbuf_size)
{
    duet_worker *w;
    duet_worker_params ip;
    const char *dev = "auto";
    duet_status st;

    *out = NULL;
    if ((st = duet_kit_check_params(params, 32, "modelled worker", errbuf, errbuf_size)))
        return st;
    if (!(w = calloc(1, sizeof(*w)))) {
        snprintf(errbuf, errbuf_size, "modelled worker: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    w->outer = params->host;
    w->host = *params->host;
    w->host.struct_size = sizeof(w->host);
    w->host.ctx = w;
    w->host.config_get_string = get_string;
    w->host.config_get_int = get_int;
    w->host.config_get_float = get_float;
    w->host.config_get_bool = get_bool;
    w->host.log = log_msg;
    snprintf(w->device_key, sizeof(w->device_key), "%s.device", params->section);
    if (w->outer->config_get_string(w->outer->ctx, w->device_key, &dev) != DUET_STATUS_OK)
        dev = "auto";
    ip = *params;
    ip.host = &w->host;
    if ((st = parse_device(w, dev)) || (st = open_inner(w)) ||
        (st = w->inner->create(&ip, &w->iw, errbuf, errbuf_size))) {
        if (w->err.msg[0])
            snprintf(errbuf, errbuf_size, "modelled worker: %s", w->err.msg);
        modelled_destroy(w);
        return st;
    }
    *out = w;
    return DUET_STATUS_OK;
}

static duet_status modelled_describe(duet_worker *w, duet_model_info *info)
{
    duet_status st = w->inner->describe(w->iw, info);

    return st ? inner_failed(w, st) : st;
}

static duet_status modelled_cache_geometry(duet_worker *w, duet_cache_geometry *geom)
{
    duet_status st = w->inner->cache_geometry(w->iw, geom);

    return st ? inner_failed(w, st) : st;
}

static duet_status modelled_init_cache(duet_worker *w, const duet_cache_config *config)
{
    duet_status st = w->inner->init_cache(w->iw, config);

    return st ? inner_failed(w, st) : st;
}

/* The modelled seconds of batch (0 for cache operations alone). */
static double modelled_seconds(const duet_worker *w, const duet_batch *batch)
{
    uint64_t positions = 0;
    uint32_t steps = 0;

    if (batch->n_seqs == 0)
        return 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(batch, i);

        positions += (uint64_t)q->n_tokens + q->n_draft_steps;
        if (q->n_draft_steps > steps)
            steps = q->n_draft_steps;
    }
    return (1.0 + steps) * w->a_s + (double)positions * w->b_s;
}

/* Sleeps until start + seconds on the monotonic clock (at once when that has passed). */
static void sleep_until(const struct timespec *start, double seconds)
{
    struct timespec end = *start;
    long long ns = (long long)(seconds * 1e9);

    end.tv_sec += (time_t)(ns / 1000000000);
    end.tv_nsec += (long)(ns % 1000000000);
    if (end.tv_nsec >= 1000000000) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR)
        continue;
}

static duet_status modelled_execute(duet_worker *w, const duet_batch *batch, duet_batch_output *out)
{
    struct timespec start;
    duet_status st;

    clock_gettime(CLOCK_MONOTONIC, &start);
    if ((st = w->inner->execute(w->iw, batch, out)))
        return inner_failed(w, st);
    sleep_until(&start, modelled_seconds(w, batch));
    w->err.msg[0] = '\0';
    return DUET_STATUS_OK;
}

static const char *modelled_last_error(const duet_worker *w)
{
    return w->err.msg;
}

static const duet_worker_plugin modelled_plugin = {
    DUET_KIT_PLUGIN_HEADER("modelled", PACKAGE_VERSION),
    .caps = MODELLED_CAPS,
    .create = modelled_create,
    .destroy = modelled_destroy,
    .describe = modelled_describe,
    .cache_geometry = modelled_cache_geometry,
    .init_cache = modelled_init_cache,
    .execute = modelled_execute,
    .last_error = modelled_last_error,
    .details = "a real worker padded to t = passes x a + b x positions (default a 5.0 ms, "
               "b 28.3 us: a 7B bf16 target on an H100)",
};

const duet_worker_plugin *duet_plugin_query(uint32_t host_abi_major, const duet_host_services *host)
{
    (void)host;
    return host_abi_major == DUET_ABI_MAJOR ? &modelled_plugin : NULL;
}
