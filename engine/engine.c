/*
 * engine.c — building and tearing down an engine, requests in and out (duet/duet.h): the top
 * of the engine's files (engine-int.h has the map). The step itself is step.c, which runs plain
 * decoding and hands speculative steps to spec.c.
 */
#define _GNU_SOURCE /* cpu_set_t: the CPU lists of same_device() */
#include "build_config.h"

#include "../plugin_api/cpulist.h"
#include "engine-int.h"

#include <duet/model.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A warning through the host's logger (stderr unless the host routes it). */
static void engine_warn(duet_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void engine_warn(duet_engine *e, const char *fmt, ...)
{
    const duet_host_services *h = duet_host_services_of(e->host);
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    h->log(h->ctx, DUET_LOG_WARN, "engine", msg);
}

void duet_request_params_init(duet_request_params *p)
{
    memset(p, 0, sizeof(*p));
    p->sampling.top_p = 1.0f;
    p->max_tokens = 16;
    p->n = 1;
    p->repetition_penalty = 1.0f;
}

const char *duet_finish_reason_str(duet_finish_reason f)
{
    switch (f) {
    case DUET_FINISH_NONE:
        return "none";
    case DUET_FINISH_STOP:
        return "stop";
    case DUET_FINISH_LENGTH:
        return "length";
    case DUET_FINISH_ABORT:
        return "abort";
    case DUET_FINISH_IGNORED:
        return "ignored";
    case DUET_FINISH_ERROR:
        return "error";
    }
    return "unknown";
}

/* ---- workers ---------------------------------------------------------------------------- */

/* The configuration key that sizes a worker's KV cache. */
static const char *budget_key(const struct duet__eworker *wk)
{
    return wk->t && !strcmp(wk->t->name, "cpu") ? "cache.cpu_kv_space_gib"
                                                : "cache.memory_fraction";
}

/* <section>.check_values: every weight of the model in dir finite, else the tensor named. */
static duet_status check_values(duet_engine *e, const char *key, const char *dir)
{
    duet_model *m = NULL;
    char msg[768];
    duet_status st = duet_model_create(dir, 0, &m, msg, sizeof(msg));

    if (!st)
        st = duet_model_check_values(m, 0, msg, sizeof(msg));
    duet_model_destroy(m);
    if (st)
        return duet__engine_fail(e, st, "%s: %s: %s", key, dir, msg);
    return DUET_STATUS_OK;
}

/* Loads, checks and creates the worker of `section` (whose keys are ws), describes it and sizes
 * its cache. */
static duet_status worker_open(duet_engine *e, struct duet__eworker *wk, const char *section,
                               const duet_worker_settings *ws, duet_worker_role role,
                               const char *model_dir)
{
    char key[64], msg[768];
    duet_worker_params wp = {.struct_size = sizeof(wp),
                             .role = role,
                             .model_dir = model_dir,
                             .section = section,
                             .host = duet_host_services_of(e->host)};
    duet_status st;

    snprintf(key, sizeof(key), "%s.check_values", section);
    if (ws->check_values) {
        st = check_values(e, key, model_dir);
        if (st)
            return st;
    }
    snprintf(key, sizeof(key), "%s.worker", section);
    st = duet_plugin_load(ws->worker, e->settings->plugin_dir, wp.host, &wk->plugin, msg,
                          sizeof(msg));
    if (!st)
        st = duet_plugin_check_settings(wk->plugin, e->cfg, section, role, msg, sizeof(msg));
    if (st)
        return duet__engine_fail(e, st, "%s: %s", key, msg);
    wk->t = duet_plugin_table(wk->plugin);
    st = wk->t->create(&wp, &wk->w, msg, sizeof(msg));
    if (st)
        return duet__engine_fail(e, st, "%s: %s: %s", section, model_dir, msg);
    wk->info.struct_size = sizeof(wk->info);
    wk->geom = (duet_cache_geometry){.struct_size = sizeof(wk->geom), .block_size = e->block_size};
    st = wk->t->describe(wk->w, &wk->info);
    if (!st)
        st = wk->t->cache_geometry(wk->w, &wk->geom);
    if (!st && (wk->info.vocab_size == 0 || wk->geom.block_bytes == 0 || wk->geom.num_blocks == 0))
        return duet__engine_fail(e, DUET_STATUS_CAPACITY,
                                 "%s: %s: no KV block of %u tokens (%llu bytes) fits the cache "
                                 "budget: raise %s or lower cache.block_size (vocab %u)",
                                 section, model_dir, e->block_size,
                                 (unsigned long long)wk->geom.block_bytes, budget_key(wk),
                                 wk->info.vocab_size);
    if (st)
        return duet__engine_fail(e, st, "%s: %s", section, wk->t->last_error(wk->w));
    return DUET_STATUS_OK;
}

/* Whether the draft's cache lives in the target's memory: the same plugin and the same device
 * string (two CPU workers share host memory whatever CPUs they run on). */
static bool same_memory(const duet_engine *e)
{
    const char *td = e->settings->target.device;
    const char *dd = e->settings->speculative.draft.device;

    return e->n_workers > 1 && !strcmp(e->workers[0].t->name, e->workers[1].t->name) &&
           !strcmp(td, dd);
}

/* Whether two CPU lists (target.cpus, speculative.cpus) keep the workers' threads apart: both
 * given and no CPU in common. Without a list a CPU worker's threads may run anywhere. */
static bool disjoint_cpus(const char *a, const char *b)
{
    cpu_set_t sa, sb, both;
    char err[320];

    if (!a || !b || !duet__cpulist_parse(a, &sa, err, sizeof(err)) ||
        !duet__cpulist_parse(b, &sb, err, sizeof(err)))
        return false;
    CPU_AND(&both, &sa, &sb);
    return CPU_COUNT(&both) == 0;
}

/* Whether the draft computes on the target's device: the same memory (above) and CPU lists that
 * share a CPU or are not both given. Two devices compute at once: that is what overlap needs. */
static bool same_device(const duet_engine *e)
{
    return same_memory(e) &&
           !disjoint_cpus(e->settings->target_cpus, e->settings->speculative_cpus);
}

/*
 * Both caches get the same block count. In two memories (same_memory: another plugin or device
 * string) each cache fills its own budget and the smaller count wins; in one memory (two CPU
 * workers, whatever their CPU lists) the two caches share that memory's budget (the
 * target's: num_blocks × block_bytes), so a block costs the sum of the two block sizes. Swap
 * space is host memory for both: cache.swap_space_gib over the sum of the block sizes.
 */
static duet_status caches_size(duet_engine *e)
{
    uint64_t blocks = UINT64_MAX, bytes_sum = 0, swap = 0;
    bool can_swap = true, all_cpu = true;
    double gib = e->settings->cache.swap_space_gib;

    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct duet__eworker *wk = &e->workers[i];
        if (wk->geom.num_blocks < blocks)
            blocks = wk->geom.num_blocks;
        bytes_sum += wk->geom.block_bytes;
        can_swap = can_swap && (wk->t->caps & DUET_CAP_SWAP);
        all_cpu = all_cpu && !strcmp(wk->t->name, "cpu");
    }
    if (same_memory(e)) /* long double: num_blocks × block_bytes may pass 2^64 */
        blocks = (uint64_t)((long double)e->workers[0].geom.num_blocks *
                            e->workers[0].geom.block_bytes / bytes_sum);
    if (!blocks)
        return duet__engine_fail(e, DUET_STATUS_CAPACITY,
                                 "the KV budget holds no block of the target and the draft "
                                 "together (%llu bytes a block): raise %s",
                                 (unsigned long long)bytes_sum, budget_key(&e->workers[0]));
    if (blocks > DUET_ENGINE_MAX_BLOCKS) {
        engine_warn(e, "%s gives %llu KV blocks; using %u, the most the block manager tracks",
                    budget_key(&e->workers[0]), (unsigned long long)blocks, DUET_ENGINE_MAX_BLOCKS);
        blocks = DUET_ENGINE_MAX_BLOCKS;
    }
    /* The default swap space is host memory set aside for preempted sequences; on a CPU-only
     * engine the KV cache is host memory already, so only an explicit setting reserves it. */
    if (all_cpu && !e->settings->cache.swap_space_gib_given)
        gib = 0;
    if (can_swap && gib > 0)
        swap = (uint64_t)(gib * 1073741824.0) / bytes_sum;
    if (swap > DUET_ENGINE_MAX_BLOCKS) {
        engine_warn(e, "cache.swap_space_gib gives %llu swap blocks; using %u",
                    (unsigned long long)swap, DUET_ENGINE_MAX_BLOCKS);
        swap = DUET_ENGINE_MAX_BLOCKS;
    }
    e->num_blocks = (uint32_t)blocks;
    e->num_swap = (uint32_t)swap;
    return DUET_STATUS_OK;
}

/* Allocates both caches; each worker sets up for the largest step the scheduler can make (a
 * warm-up, so that running out of memory there is an error now and not in the middle of
 * serving), and so does the engine's speculative state. That step feeds the token budget plus,
 * with a draft, k + 1 scored rows for every sequence, and has output rows for that many. */
static duet_status caches_alloc(duet_engine *e)
{
    duet_scheduler_params sp;
    uint64_t r, o;
    uint32_t rows, out;

    duet_scheduler_params_get(e->sched, &sp);
    o = (uint64_t)sp.max_num_seqs * (e->k + 1);
    r = e->k ? sp.max_num_batched_tokens + o
             : (sp.max_num_batched_tokens > sp.max_num_seqs ? sp.max_num_batched_tokens
                                                            : sp.max_num_seqs);
    rows = r < UINT32_MAX ? (uint32_t)r : UINT32_MAX;
    out = o < UINT32_MAX ? (uint32_t)o : UINT32_MAX;
    if (e->spec && !duet__spec_reserve_max(e->spec, sp.max_num_seqs))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY,
                                 "out of memory for the probability rows of %u sequences "
                                 "(scheduler.max_num_seqs) of %u tokens (speculative.num_tokens)",
                                 sp.max_num_seqs, e->k);
    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct duet__eworker *wk = &e->workers[i];
        duet_cache_config cc = {.struct_size = sizeof(cc),
                                .block_size = e->block_size,
                                .num_blocks = e->num_blocks,
                                .num_swap_blocks = e->num_swap,
                                .max_rows = rows,
                                .max_out_rows = out};
        duet_status st = wk->t->init_cache(wk->w, &cc);
        if (st)
            return duet__engine_fail(e, st,
                                     "%s: init_cache (%u blocks, %u swap blocks: %s, "
                                     "cache.swap_space_gib; steps of up to %u tokens: "
                                     "scheduler.max_num_batched_tokens, scheduler.max_num_seqs): "
                                     "%s",
                                     i ? "speculative" : "target", cc.num_blocks,
                                     cc.num_swap_blocks, budget_key(wk), rows,
                                     wk->t->last_error(wk->w));
    }
    return DUET_STATUS_OK;
}

static duet_status sched_params(duet_engine *e, duet_scheduler_params *sp)
{
    const duet_scheduler_settings *ss = &e->settings->scheduler;
    const duet_model_info *ti = &e->workers[0].info;

    duet_scheduler_params_init(sp);
    sp->max_num_seqs = (uint32_t)ss->max_num_seqs;
    sp->max_num_batched_tokens = (uint32_t)ss->max_num_batched_tokens;
    sp->max_model_len = e->max_model_len;
    sp->policy = ss->policy;
    sp->preemption = ss->preemption;
    sp->chunked_prefill = ss->chunked_prefill;
    sp->num_lookahead_slots = e->k;
    for (uint32_t i = 0; i < ti->n_eos && i < 8 && i < DUET_SCHED_MAX_EOS; i++)
        sp->eos_token_ids[sp->num_eos_token_ids++] = ti->eos_token_ids[i];
    return DUET_STATUS_OK;
}

/*
 * One sequence of max_model_len tokens must fit the KV cache, or it is preempted and re-admitted
 * for ever (vLLM refuses to start then). Its prompt is admitted with the block manager's
 * watermark kept free, and its last decode holds max_model_len tokens plus the lookahead slots.
 * A larger max_model_len (the models' or the configured one) is lowered to what fits, with a
 * warning naming the keys.
 */
static duet_status fit_max_model_len(duet_engine *e, const duet_block_manager_params *bp)
{
    uint64_t wm = (uint64_t)(bp->watermark * bp->num_device_blocks);
    uint64_t slots = (uint64_t)bp->num_device_blocks * bp->block_size;
    uint64_t prompt =
        wm < bp->num_device_blocks ? (bp->num_device_blocks - wm) * bp->block_size : 0;
    uint64_t fit = slots > e->k ? slots - e->k : 0;
    const char *key = budget_key(&e->workers[0]);

    fit = prompt < fit ? prompt : fit;
    if (fit >= e->max_model_len)
        return DUET_STATUS_OK;
    if (fit == 0)
        return duet__engine_fail(
            e, DUET_STATUS_CAPACITY,
            "the KV cache (%u blocks of %u tokens) holds no sequence: raise %s",
            bp->num_device_blocks, bp->block_size, key);
    engine_warn(e,
                "max_model_len %u does not fit the KV cache (%u blocks of %u tokens%s%s): using "
                "%llu; raise %s or set scheduler.max_model_len to at most that",
                e->max_model_len, bp->num_device_blocks, bp->block_size,
                e->k ? ", lookahead of speculative.num_tokens" : "", wm ? ", watermark" : "",
                (unsigned long long)fit, key);
    e->max_model_len = (uint32_t)fit;
    return DUET_STATUS_OK;
}

/* The sliding window the shared block tables may honour: blocks can go only when every model
 * has a window, and then only those outside the widest (0: keep every block). */
static uint32_t shared_window(const duet_engine *e)
{
    uint32_t window = 0;

    for (uint32_t i = 0; i < e->n_workers; i++) {
        uint32_t w = e->workers[i].info.sliding_window; /* 0 from a plugin before minor 4 */

        if (!w)
            return 0;
        window = w > window ? w : window;
    }
    return window;
}

static void bm_params(const duet_engine *e, duet_block_manager_params *bp)
{
    duet_block_manager_params_init(bp);
    bp->block_size = e->block_size;
    bp->num_device_blocks = e->num_blocks;
    bp->num_host_blocks = e->num_swap;
    bp->prefix_caching = e->settings->cache.prefix_caching;
    bp->sliding_window = shared_window(e);
}

/* max_model_len: the least max_position of the models, scheduler.max_model_len when lower, and
 * what one sequence can hold in the KV cache. */
static duet_status limits_init(duet_engine *e)
{
    duet_block_manager_params bp;
    int64_t mml = e->settings->scheduler.max_model_len;

    e->max_model_len = e->workers[0].info.max_position;
    for (uint32_t i = 1; i < e->n_workers; i++)
        if (e->workers[i].info.max_position < e->max_model_len)
            e->max_model_len = e->workers[i].info.max_position;
    if (mml > 0 && (uint64_t)mml < e->max_model_len)
        e->max_model_len = (uint32_t)mml;
    bm_params(e, &bp);
    return fit_max_model_len(e, &bp);
}

static duet_status sched_init(duet_engine *e)
{
    duet_block_manager_params bp;
    duet_scheduler_params sp;
    char msg[512];
    duet_status st;

    bm_params(e, &bp);
    if (bp.prefix_caching && bp.sliding_window)
        return duet__engine_fail(e, DUET_STATUS_UNSUPPORTED,
                                 "cache.prefix_caching: the model has a sliding window of %u "
                                 "positions, whose freed blocks a cached prefix could not be "
                                 "rebuilt from (as in vLLM); set cache.prefix_caching = false",
                                 bp.sliding_window);
    for (uint32_t i = 0; i < e->n_workers && bp.prefix_caching; i++)
        if (!(e->workers[i].t->caps & DUET_CAP_PREFIX_CACHE))
            return duet__engine_fail(e, DUET_STATUS_UNSUPPORTED,
                                     "cache.prefix_caching: plugin '%s' cannot start a prefill "
                                     "after a cached prefix",
                                     e->workers[i].t->name);
    st = duet_block_manager_create(&bp, &e->bm, msg, sizeof(msg));
    if (st)
        return duet__engine_fail(e, st, "block manager: %s", msg);
    sched_params(e, &sp);
    st = duet_scheduler_create(&sp, e->bm, &e->sched, msg, sizeof(msg));
    if (st)
        return duet__engine_fail(e, st, "scheduler (max_model_len %u): %s", e->max_model_len, msg);
    return DUET_STATUS_OK;
}

/* Overlap (docs/engine.md) when speculative.overlap is on and the two workers are on different
 * devices: another plugin, other device strings, or disjoint CPU lists. DUET_FORCE_OVERLAP=1 / 0
 * overrides both. */
static bool overlap_wanted(const duet_engine *e)
{
    const char *force = getenv("DUET_FORCE_OVERLAP");

    if (force && *force)
        return strcmp(force, "0") != 0;
    return e->settings->speculative.overlap && !same_device(e);
}

static duet_status spec_init(duet_engine *e)
{
    const duet_speculative_settings *ss = &e->settings->speculative;
    const char *draft = ss->draft_model;
    duet_status st;

    e->k = (uint32_t)ss->num_tokens;
    e->accept.method = ss->acceptance == DUET_ACCEPTANCE_TYPICAL     ? DUET__ACCEPT_TYPICAL
                       : ss->acceptance == DUET_ACCEPTANCE_SYNTHETIC ? DUET__ACCEPT_SYNTHETIC
                                                                     : DUET__ACCEPT_REJECTION;
    e->accept.typical_threshold = (float)ss->typical_posterior_threshold;
    e->accept.typical_alpha = (float)ss->typical_posterior_alpha;
    e->accept.synthetic_rate = e->settings->synthetic_rate;
    if (ss->acceptance == DUET_ACCEPTANCE_SYNTHETIC)
        engine_warn(e,
                    "speculative.acceptance = synthetic: each proposal is accepted with "
                    "probability %g whatever the models say (benchmarks only); the output "
                    "is not the target's",
                    e->accept.synthetic_rate);
    e->disable_by_batch_size = (uint32_t)ss->disable_by_batch_size;
    st = worker_open(e, &e->workers[1], "speculative", &ss->draft, DUET_ROLE_DRAFT, draft);
    e->n_workers = 2;
    if (st)
        return st;
    if (e->k == 0 || e->k > DUET_MAX_SPEC_TOKENS)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "speculative.num_tokens: %u is outside 1..%u", e->k,
                                 DUET_MAX_SPEC_TOKENS);
    e->spec = duet__spec_create(e->k, e->workers[0].info.vocab_size, ss->adaptive);
    if (!e->spec)
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    if (e->workers[1].info.vocab_size != e->workers[0].info.vocab_size)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "speculative.draft_model: %s has a vocabulary of %u tokens, the "
                                 "target %s has %u: they must be equal",
                                 draft, e->workers[1].info.vocab_size, e->settings->model,
                                 e->workers[0].info.vocab_size);
    if (overlap_wanted(e))
        return duet__draft_thread_start(e);
    return DUET_STATUS_OK;
}

static duet_status engine_build(duet_engine *e)
{
    const duet_settings *s = e->settings;
    duet_status st;

    if (duet_host_create(e->cfg, s->log_level, &e->host))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    e->block_size = (uint32_t)s->cache.block_size;
    e->n_workers = 1;
    st = worker_open(e, &e->workers[0], "target", &s->target, DUET_ROLE_TARGET, s->model);
    if (!st && s->speculative.enabled)
        st = spec_init(e);
    if (!st)
        st = caches_size(e);
    if (!st)
        st = limits_init(e);
    if (!st)
        st = sched_init(e);
    if (!st)
        st = caches_alloc(e);
    e->next_id = 1;
    e->m.acceptance_rate = -1.0;
    return st;
}

duet_status duet_engine_create(const duet_config *cfg, duet_engine **out, char *err,
                               size_t err_size)
{
    duet_engine *e = calloc(1, sizeof(*e));
    duet_status st;

    *out = NULL;
    if (!e) {
        if (err && err_size)
            snprintf(err, err_size, "out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    e->cfg = cfg;
    e->settings = duet_config_settings(cfg);
    st = e->settings ? engine_build(e)
                     : duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                         "the configuration is not validated: call "
                                         "duet_config_validate() before duet_engine_create()");
    if (st) {
        if (err && err_size)
            snprintf(err, err_size, "%s", e->error);
        duet_engine_destroy(e);
        return st;
    }
    *out = e;
    return DUET_STATUS_OK;
}

void duet_engine_destroy(duet_engine *e)
{
    if (!e)
        return;
    duet__draft_thread_stop(e);
    duet_scheduler_destroy(e->sched);
    duet_block_manager_destroy(e->bm);
    for (uint32_t i = 0; i < 2; i++) {
        struct duet__eworker *wk = &e->workers[i];
        if (wk->w)
            wk->t->destroy(wk->w);
        duet_plugin_unload(wk->plugin);
    }
    duet_host_destroy(e->host);
    for (uint32_t i = 0; i < e->n_reqs; i++)
        duet__req_free(e->reqs[i]);
    for (uint32_t i = 0; i < e->n_retired; i++)
        duet__req_free(e->retired[i]);
    free(e->reqs);
    free(e->retired);
    duet__scratch_free(&e->sc);
    duet__spec_destroy(e->spec);
    free(e);
}

const char *duet_engine_error(const duet_engine *e)
{
    return e->error;
}

/* ---- requests ----------------------------------------------------------------------------- */

/* n sequences must fit one step (a group runs all its sequences at once); a priority means
 * something only under the priority policy, and vLLM refuses it elsewhere. */
static duet_status check_n_priority(duet_engine *e, const duet_request_params *p)
{
    duet_scheduler_params sp;

    duet_scheduler_params_get(e->sched, &sp);
    if (p->n == 0 || p->n > sp.max_num_seqs)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "n is %u: it must be 1 .. %u (scheduler.max_num_seqs)", p->n,
                                 sp.max_num_seqs);
    if (p->priority != 0 && sp.policy != DUET_SCHED_POLICY_PRIORITY)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "priority %d: a priority needs scheduler.policy = \"priority\"",
                                 p->priority);
    return DUET_STATUS_OK;
}

static bool request_penalized(const duet_request_params *p)
{
    return p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f ||
           p->repetition_penalty != 1.0f || p->n_logit_bias > 0;
}

/* vLLM's ranges (SamplingParams._verify_args; OpenAI's for logit_bias), and workers that apply
 * them: a worker without DUET_CAP_PENALTIES would refuse every batch of the request. */
static duet_status check_penalties(duet_engine *e, const duet_request_params *p)
{
    uint32_t vocab = e->workers[0].info.vocab_size;

    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2) ||
        !(p->frequency_penalty >= -2 && p->frequency_penalty <= 2) ||
        !(p->repetition_penalty > 0 && isfinite(p->repetition_penalty)))
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "bad penalties: presence_penalty %g [-2, 2], frequency_penalty "
                                 "%g [-2, 2], repetition_penalty %g (> 0)",
                                 (double)p->presence_penalty, (double)p->frequency_penalty,
                                 (double)p->repetition_penalty);
    if (p->n_logit_bias && !p->logit_bias)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT, "logit_bias is NULL");
    if (p->n_logit_bias) {
        /* one bit per vocabulary id: a list as long as the vocabulary checks in linear time */
        uint8_t *given = calloc(vocab / 8 + 1, 1);

        if (!given)
            return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
        for (uint32_t i = 0; i < p->n_logit_bias; i++) {
            const duet_token_bias *b = &p->logit_bias[i];
            uint32_t t = (uint32_t)b->token;

            if (b->token < 0 || t >= vocab || !(b->bias >= -100 && b->bias <= 100)) {
                free(given);
                return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                         "logit_bias[%u]: token %d must be in [0, %u) and its "
                                         "bias %g in [-100, 100]",
                                         i, b->token, vocab, (double)b->bias);
            }
            if (given[t / 8] & (1u << (t % 8))) {
                free(given);
                return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                         "logit_bias: token %d is given twice", b->token);
            }
            given[t / 8] |= (uint8_t)(1u << (t % 8));
        }
        free(given);
    }
    if (!request_penalized(p))
        return DUET_STATUS_OK;
    for (uint32_t i = 0; i < e->n_workers; i++)
        if (!(e->workers[i].t->caps & DUET_CAP_PENALTIES))
            return duet__engine_fail(e, DUET_STATUS_UNSUPPORTED,
                                     "penalties and logit_bias need DUET_CAP_PENALTIES: the %s "
                                     "worker '%s' does not apply them",
                                     i ? "draft" : "target", e->workers[i].t->name);
    return DUET_STATUS_OK;
}

static int cmp_bias(const void *a, const void *b)
{
    int32_t x = ((const duet_token_bias *)a)->token, y = ((const duet_token_bias *)b)->token;

    return (x > y) - (x < y);
}

/* The request's penalties as the workers get them (a sorted copy of logit_bias). */
static duet_status penalties_init(struct duet__req *r, const duet_request_params *p)
{
    r->penalized = request_penalized(p);
    r->count_seen = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f ||
                    p->repetition_penalty != 1.0f;
    r->pen = (duet_penalties){.struct_size = sizeof(r->pen),
                              .repetition = p->repetition_penalty,
                              .frequency = p->frequency_penalty,
                              .presence = p->presence_penalty,
                              .n_bias = p->n_logit_bias};
    if (!p->n_logit_bias)
        return DUET_STATUS_OK;
    r->bias = malloc(p->n_logit_bias * sizeof(*r->bias));
    if (!r->bias)
        return DUET_STATUS_OUT_OF_MEMORY;
    memcpy(r->bias, p->logit_bias, p->n_logit_bias * sizeof(*r->bias));
    qsort(r->bias, p->n_logit_bias, sizeof(*r->bias), cmp_bias);
    r->pen.bias = r->bias;
    return DUET_STATUS_OK;
}

static duet_status check_request(duet_engine *e, const duet_request_params *p)
{
    const duet_sampling_params *s = &p->sampling;
    uint32_t vocab = e->workers[0].info.vocab_size;

    if (!p->prompt || p->n_prompt == 0)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT, "the prompt is empty");
    if (p->n_prompt > e->max_model_len)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "the prompt has %u tokens, more than max_model_len (%u): it is "
                                 "refused, not truncated",
                                 p->n_prompt, e->max_model_len);
    for (uint32_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || (uint32_t)p->prompt[i] >= vocab)
            return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                     "prompt token %u is %d, outside the vocabulary [0, %u)", i,
                                     p->prompt[i], vocab);
    if (p->max_tokens == 0)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT, "max_tokens must be >= 1");
    if (!(s->temperature >= 0 && isfinite(s->temperature)) || !(s->top_p > 0 && s->top_p <= 1) ||
        s->top_k < 0 || !(s->min_p >= 0 && s->min_p <= 1))
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "bad sampling settings: temperature %g (>= 0), top_p %g (0, 1], "
                                 "top_k %d (>= 0), min_p %g [0, 1]",
                                 (double)s->temperature, (double)s->top_p, s->top_k,
                                 (double)s->min_p);
    if (s->n_logprobs > vocab || s->n_prompt_logprobs > vocab)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                                 "logprobs %u / prompt_logprobs %u exceed the vocabulary (%u)",
                                 s->n_logprobs, s->n_prompt_logprobs, vocab);
    if (p->n_stop_token_ids && !p->stop_token_ids)
        return duet__engine_fail(e, DUET_STATUS_INVALID_ARGUMENT, "stop_token_ids is NULL");
    duet_status st = check_n_priority(e, p);

    return st ? st : check_penalties(e, p);
}

static duet_status reqs_push(duet_engine *e, struct duet__req *r)
{
    if (e->n_reqs == e->cap_reqs) {
        uint32_t cap = e->cap_reqs ? 2 * e->cap_reqs : 16;
        struct duet__req **v = realloc(e->reqs, cap * sizeof(*v));
        if (!v)
            return DUET_STATUS_OUT_OF_MEMORY;
        e->reqs = v;
        e->cap_reqs = cap;
    }
    e->reqs[e->n_reqs++] = r;
    return DUET_STATUS_OK;
}

static duet_status prompt_lp_init(struct duet__req *r, const duet_request_params *p)
{
    size_t n = (size_t)p->n_prompt * p->sampling.n_prompt_logprobs;

    r->prompt_lp = malloc(p->n_prompt * sizeof(float));
    r->prompt_top = malloc(n * sizeof(duet_logprob));
    if (!r->prompt_lp || !r->prompt_top)
        return DUET_STATUS_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < p->n_prompt; i++)
        r->prompt_lp[i] = NAN;
    for (size_t i = 0; i < n; i++)
        r->prompt_top[i] = (duet_logprob){.token = -1, .logprob = -INFINITY};
    return DUET_STATUS_OK;
}

duet_status duet_engine_add_request(duet_engine *e, const duet_request_params *p,
                                    uint64_t *request_id)
{
    duet_sched_request sr;
    struct duet__req *r;
    duet_status st = check_request(e, p);

    if (st)
        return st;
    r = calloc(1, sizeof(*r));
    if (r) {
        r->n = p->n;
        r->seqs = calloc(p->n, sizeof(*r->seqs));
        r->outs = calloc(p->n, sizeof(*r->outs));
    }
    if (!r || !r->seqs || !r->outs || !(r->prompt = malloc(p->n_prompt * sizeof(int32_t))) ||
        reqs_push(e, r)) {
        duet__req_free(r);
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    }
    if ((p->sampling.n_prompt_logprobs && prompt_lp_init(r, p)) || penalties_init(r, p)) {
        e->n_reqs--;
        duet__req_free(r);
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(r->prompt, p->prompt, p->n_prompt * sizeof(int32_t));
    r->n_prompt = p->n_prompt;
    r->id = e->next_id;
    r->sampling = p->sampling;
    duet_sched_request_init(&sr);
    sr.request_id = r->id;
    sr.prompt = p->prompt;
    sr.prompt_len = p->n_prompt;
    sr.sampling = p->sampling;
    sr.arrival_time = duet__now_ns();
    sr.max_tokens = p->max_tokens;
    sr.stop_token_ids = p->stop_token_ids;
    sr.num_stop_token_ids = p->n_stop_token_ids;
    sr.ignore_eos = p->ignore_eos;
    sr.spec_disabled = p->spec_disabled;
    sr.n = p->n;
    sr.priority = p->priority;
    st = duet_scheduler_add(e->sched, &sr);
    if (st) {
        e->n_reqs--;
        duet__req_free(r);
        return duet__engine_fail(e, st, "%s", duet_scheduler_error(e->sched));
    }
    e->next_id++;
    *request_id = r->id;
    return DUET_STATUS_OK;
}

duet_status duet_engine_abort(duet_engine *e, uint64_t request_id)
{
    struct duet__req *r = duet__engine_find(e, request_id, NULL);

    if (!r || r->finish != DUET_FINISH_NONE)
        return duet__engine_fail(e, DUET_STATUS_NOT_FOUND, "request %llu: unknown or finished",
                                 (unsigned long long)request_id);
    return duet_scheduler_abort(e->sched, request_id);
}

bool duet_engine_has_unfinished(const duet_engine *e)
{
    return e->n_reqs > 0;
}

void duet_engine_metrics_get(const duet_engine *e, duet_engine_metrics *out)
{
    *out = e->m;
    out->tokens_per_s = e->m.elapsed_s > 0 ? (double)e->m.generated_tokens / e->m.elapsed_s : 0;
    out->acceptance_rate = e->m.proposed ? (double)e->m.accepted / (double)e->m.proposed : -1.0;
    out->mean_tokens_per_step =
        e->m.decode_seq_steps ? (double)e->m.generated_tokens / (double)e->m.decode_seq_steps : 0;
    out->system_efficiency =
        e->m.proposed ? (double)e->m.emitted / (double)(e->m.proposed + e->m.verified) : -1.0;
    out->mean_k = e->m.verified ? (double)e->m.proposed / (double)e->m.verified : 0;
    out->idle_s = fmax(0.0, e->m.elapsed_s - (e->m.execute_s + e->m.draft_s - e->m.overlap_s));
    out->target_idle_s = fmax(0.0, e->m.elapsed_s - e->m.execute_s);
    out->draft_idle_s = e->n_workers > 1 ? fmax(0.0, e->m.elapsed_s - e->m.draft_s) : 0;
    out->num_spec_tokens = e->n_workers > 1 ? e->k : 0;
    out->adaptive = e->spec && e->settings->speculative.adaptive;
    out->num_free_blocks = duet_block_manager_num_free_blocks(e->bm, DUET_BLOCK_POOL_DEVICE);
    out->num_total_blocks = duet_block_manager_num_total_blocks(e->bm, DUET_BLOCK_POOL_DEVICE);
    out->num_swap_blocks = e->num_swap;
    out->max_model_len = e->max_model_len;
    out->vocab_size = e->workers[0].info.vocab_size;
    out->speculative = e->n_workers > 1;
    out->synthetic_acceptance = e->spec && e->accept.method == DUET__ACCEPT_SYNTHETIC;
}

duet_status duet_engine_step(duet_engine *e, const duet_step_output **out)
{
    double t0 = duet__now_s();
    duet_status st;

    if (e->broken)
        return duet__engine_fail(e, DUET_STATUS_INTERNAL,
                                 "a previous step failed; the engine can only be destroyed");
    st = duet__engine_step(e, out);
    if (st)
        e->broken = true;
    e->m.elapsed_s += duet__now_s() - t0;
    return st;
}
