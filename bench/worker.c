/*
 * Worker plugin benchmarks (cpu-worker, gpu-worker): prefill and decode tokens per second of a
 * worker plugin (the CPU worker, or the GPU worker with gpu-worker) on generated models with
 * public models' shapes, beside the measured memory bandwidth and the fraction of the bandwidth
 * limit that decode reaches. gpu-worker (bench/gpu.c) differs only in its mode: the bandwidth is
 * a device-to-device copy, the worker gets target.device instead of target.threads, the cache
 * must fit what cache_geometry allows with budget 0, and there is no paired host probe.
 *
 *   1. Memory bandwidth: threads (as many as the worker's) each sum their share of a 1 GiB
 *      buffer (far beyond the L3 cache), in GB/s (10^9 bytes). A probe of several passes runs
 *      before each (preset, dtype) and once at the end: on a shared machine the bandwidth a
 *      probe sees moves with the neighbours' load, and the limit below uses the best pass of
 *      the whole run (the highest bandwidth the machine showed, so the smallest fraction).
 *   2. For each preset, a model folder is generated once into the models directory
 *      (<models>/<preset>-bf16: bf16 files, converted at load to the precision's storage) and
 *      reused by later runs.
 *   3. For each (preset, dtype): the plugin is loaded, a target worker created with
 *      target.dtype and target.threads, a KV cache of block size 16 allocated, then
 *      - prefill: one sequence of prompt_len tokens in one execute (1 output row);
 *      - decode at batch B: B sequences whose first `context` positions hold a prompt (prefilled
 *        once, copied into each sequence's own blocks), then steps of one token per sequence,
 *        greedy, feeding back the sampled token. Positions run from context to
 *        context + WINDOW - 1 and start again, so the attended context stays near `context`.
 *
 * Precisions: the weights' storage f32, bf16, f16, int8 or int4 (target.weights; int8 / int4 with
 * target.group_size --group, default 32), computed in what target.dtype = auto picks on this CPU
 * (bf16 where it has AVX512-BF16 or AMX, else f32; plugin_details says); gpu-worker: the compute
 * dtype f32, bf16 or f16 (target.dtype).
 *
 * Only execute() is timed. The bandwidth model of a decode step (reported as "model" in each
 * decode result): the step reads every weight matrix once in its packed form (the projections
 * and the lm_head; the embedding table stays in the file mapping, of which only B rows are read),
 * and each sequence's K and V of every attended position:
 *
 *   bytes_per_step = weight_bytes_read + B × mean_context × block_bytes / block_size
 *   limit_tokens_per_s = B × bandwidth / bytes_per_step,   fraction = measured / limit
 */
#define _GNU_SOURCE
#include "bench.h"

#include "../model/model_gen.h"

#include <duet/config.h>
#include <duet/loader.h>
#include <duet/plugin.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DUET_BENCH_PLUGIN_DIR
#define DUET_BENCH_PLUGIN_DIR NULL /* the build tree's cpu_worker/.libs, set by bench/local.mk */
#endif

/* The benchmark being run: one at a time in a process (duet-bench runs them in turn). */
static const struct duet__bench_worker_mode *mode;
static const char *bench_name = "cpu-worker";

#define BLOCK_SIZE 16
#define WINDOW 64                   /* decode positions before starting again at `context` */
#define QUICK_WINDOW 8              /* the same with --quick */
#define PAIRED_BYTES (256ull << 20) /* the probe before each decode repetition */
#define PAIRED_QUICK_BYTES (16ull << 20)
#define PAIRED_WHAT "256 MiB"

static const char *const default_presets[] = {"llama-68m", "tinyllama-1.1b"};
static const char *const default_dtypes[] = {"bf16", "int8", "int4"};
static const uint32_t default_batches[] = {1, 4};
static const char *const gpu_default_presets[] = {"llama-2-7b"};
static const char *const gpu_default_dtypes[] = {"bf16"};
static const uint32_t gpu_default_batches[] = {1, 8, 32};

static const char bw_model[] =
    "limit_tokens_per_s = batch * bandwidth / (weight_bytes_read + batch * mean_context * "
    "block_bytes / block_size); weight_bytes_read = every parameter but the embedding tables "
    "times the bytes a weight takes in the precision's packed form (f32 4, bf16 and f16 2, int8 "
    "1 + 2 / group, int4 0.5 + 2 / group: codes and an f16 scale per group; "
    "weight_bytes_source = format; a bf16 worker keeps a second, oneDNN copy for prefill that "
    "decode does not read); fraction = tokens_per_s / limit_tokens_per_s";
static const char flop_model[] =
    "gflop_per_s = (2 * layer_params * tokens + 2 * lm_head_params + 2 * num_layers * num_heads "
    "* head_dim * tokens * (tokens + 1)) / time";

/* ---- one worker ---------------------------------------------------------------------------- */

/* Parameter counts of a model folder, by what a forward step does with them. */
struct params {
    uint64_t embed;  /* embedding tables not used as lm_head: only the fed rows are read */
    uint64_t head;   /* lm_head (or the tied embeddings) */
    uint64_t layers; /* everything else: the layers and the final norm */
    uint32_t num_layers, num_heads, head_dim;
};

static int count_params(const char *dir, struct params *out)
{
    const duet_model_desc *d;
    duet_model *m;
    char err[512];

    if (duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench_name, err);
        return 1;
    }
    d = duet_model_describe(m);
    *out = (struct params){
        .num_layers = d->num_layers, .num_heads = d->num_heads, .head_dim = d->head_dim};
    for (size_t i = 0; i < duet_model_num_tensors(m); i++) {
        const duet_tensor *t = duet_model_tensor_at(m, i);
        uint64_t numel = t->numel;
        bool tok = strstr(t->name, "embed_tokens") != NULL;

        if (strncmp(t->name, "lm_head", 7) == 0 || (tok && d->tie_word_embeddings))
            out->head += numel;
        else if (tok || strstr(t->name, "embed_positions"))
            out->embed += numel;
        else
            out->layers += numel;
    }
    duet_model_destroy(m);
    return 0;
}

/* A created worker with its cache, and what it runs on. */
struct bench_worker {
    duet_config *cfg;
    duet_host *host;
    duet_plugin *plugin;
    const duet_worker_plugin *tbl; /* owned by plugin */
    duet_worker *w;
    duet_model_info info;
    uint64_t block_bytes; /* one block: every layer, K and V */
    uint32_t num_blocks;  /* allocated */
};

/* Configuration, host services and the loaded, checked plugin. */
static int worker_load(struct bench_worker *wk, const struct duet_bench_opts *o, const char *dir,
                       const char *precision, uint32_t group, uint32_t threads)
{
    bool quant = strcmp(precision, "int8") == 0 || strcmp(precision, "int4") == 0;
    char err[1024];

    if (strncmp(precision, "gguf-", 5) == 0) /* a GGUF file's Q8_0 / Q4_0: weights auto */
        precision = "auto";
    /* the CPU worker: the precision is the weights' storage, computed in what dtype auto picks
     * here (plugin_details says which); the GPU worker computes in the precision */
    if (duet_config_create(&wk->cfg) ||
        duet__bench_config_setf(wk->cfg, bench_name, "model=\"%s\"", dir) ||
        duet__bench_config_setf(wk->cfg, bench_name, "target.%s=%s",
                                mode->gpu ? "dtype" : "weights", precision) ||
        (quant && (duet__bench_config_setf(wk->cfg, bench_name, "target.weights=%s", precision) ||
                   duet__bench_config_setf(wk->cfg, bench_name, "target.group_size=%u", group))) ||
        (!mode->gpu &&
         duet__bench_config_setf(wk->cfg, bench_name, "target.threads=%u", threads)) ||
        (mode->gpu && duet__bench_config_setf(wk->cfg, bench_name, "target.device=\"cuda:%u\"",
                                              o->worker.device)) ||
        (mode->gpu && o->worker.tensor_parallel &&
         duet__bench_config_setf(wk->cfg, bench_name, "target.tensor_parallel=%u",
                                 o->worker.tensor_parallel)))
        return 1;
    if (duet_config_validate(wk->cfg)) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench_name, duet_config_error(wk->cfg));
        return 1;
    }
    if (duet_host_create(wk->cfg, DUET_LOG_WARN, &wk->host))
        return 1;
    if (duet_plugin_load(o->worker.plugin, mode->plugin_dir, duet_host_services_of(wk->host),
                         &wk->plugin, err, sizeof(err)) ||
        duet_plugin_check_settings(wk->plugin, wk->cfg, "target", DUET_ROLE_TARGET, err,
                                   sizeof(err))) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench_name, err);
        return 1;
    }
    wk->tbl = duet_plugin_table(wk->plugin);
    if (DUET_ABI_HAS_FIELD(wk->tbl, duet_worker_plugin, details) && wk->tbl->details &&
        *wk->tbl->details)
        fprintf(stderr, "duet-bench: %s: %s\n", bench_name, wk->tbl->details);
    return 0;
}

static int worker_fail(const struct bench_worker *wk, const char *what, duet_status st)
{
    fprintf(stderr, "duet-bench: %s: %s: %s: %s\n", bench_name, what, duet_status_str(st),
            wk->tbl->last_error(wk->w));
    return 1;
}

/* Creates the worker and a cache of num_blocks blocks. */
static int worker_open(struct bench_worker *wk, const char *dir, uint32_t num_blocks)
{
    duet_worker_params params = {.struct_size = sizeof(params),
                                 .role = DUET_ROLE_TARGET,
                                 .model_dir = dir,
                                 .section = "target",
                                 .host = duet_host_services_of(wk->host)};
    duet_cache_geometry geom = {.struct_size = sizeof(geom), .block_size = BLOCK_SIZE};
    duet_cache_config cc = {
        .struct_size = sizeof(cc), .block_size = BLOCK_SIZE, .num_blocks = num_blocks};
    duet_status st;
    char err[1024];

    if ((st = wk->tbl->create(&params, &wk->w, err, sizeof(err))) != DUET_STATUS_OK) {
        fprintf(stderr, "duet-bench: %s: create: %s: %s\n", bench_name, duet_status_str(st), err);
        return 1;
    }
    wk->info.struct_size = sizeof(wk->info);
    if ((st = wk->tbl->describe(wk->w, &wk->info)) != DUET_STATUS_OK)
        return worker_fail(wk, "describe", st);
    if ((st = wk->tbl->cache_geometry(wk->w, &geom)) != DUET_STATUS_OK)
        return worker_fail(wk, "cache_geometry", st);
    wk->block_bytes = geom.block_bytes;
    if (mode->gpu && geom.num_blocks < num_blocks) {
        fprintf(stderr,
                "duet-bench: %s: the cache needs %u blocks, cache_geometry allows %llu "
                "(cache.memory_fraction)\n",
                bench_name, num_blocks, (unsigned long long)geom.num_blocks);
        return 1;
    }
    if ((st = wk->tbl->init_cache(wk->w, &cc)) != DUET_STATUS_OK)
        return worker_fail(wk, "init_cache", st);
    wk->num_blocks = num_blocks;
    return 0;
}

static void worker_close(struct bench_worker *wk)
{
    if (wk->tbl)
        wk->tbl->destroy(wk->w);
    duet_plugin_unload(wk->plugin);
    duet_host_destroy(wk->host);
    duet_config_destroy(wk->cfg);
}

static int worker_run(struct bench_worker *wk, const duet_batch *b, duet_batch_output *out,
                      const char *what)
{
    duet_status st = wk->tbl->execute(wk->w, b, out);

    return st ? worker_fail(wk, what, st) : 0;
}

/* ---- resident memory (cpu-worker) ------------------------------------------------------------ */

/* The process's resident memory from /proc/self/status, in bytes (0 where not reported). */
struct rss {
    double total; /* VmRSS */
    double anon;  /* RssAnon: the heap and anonymous mappings (packed weights, scratch) */
    double file;  /* RssFile: file mappings' pages in memory (the model file, libraries) */
};

static void rss_read(struct rss *out)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb;

    *out = (struct rss){0};
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            out->total = kb * 1024;
        else if (sscanf(line, "RssAnon: %lf kB", &kb) == 1)
            out->anon = kb * 1024;
        else if (sscanf(line, "RssFile: %lf kB", &kb) == 1)
            out->file = kb * 1024;
    }
    fclose(f);
}

/* The prefill result's memory fields: what loading the worker added, and the totals. */
static json_t *rss_extra(const struct rss *before, const struct rss *loaded, double weight_bytes)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s}", "resident_bytes", loaded->total,
                     "resident_anon_bytes", loaded->anon, "resident_file_bytes", loaded->file,
                     "resident_added_bytes", loaded->total - before->total,
                     "resident_added_anon_bytes", loaded->anon - before->anon,
                     "resident_added_file_bytes", loaded->file - before->file,
                     "worker_weight_bytes", weight_bytes, "resident_source",
                     "/proc/self/status VmRSS, RssAnon, RssFile after create and init_cache; "
                     "added = minus the same before create");
}

/* ---- the compute peak (cpu-worker) ----------------------------------------------------------- */

/* The instruction kind a CPU worker's prefill runs on, from its details (bench/peak.c): int8 /
 * int4 weights the integer dot of its GEMV kernels; bf16 weights vdpbf16ps where it computes in
 * bf16; else f32 FMAs, zmm where oneDNN's ISA is AVX-512. */
static const char *prefill_peak_kind(const char *dtype, const char *details)
{
    bool avx512 = strstr(details, "GEMV kernels avx512") != NULL;

    if (strcmp(dtype, "int8") == 0 || strcmp(dtype, "int4") == 0 || strncmp(dtype, "gguf-", 5) == 0)
        return avx512 ? "dpbusd_zmm" : "maddubs_ymm";
    if (strcmp(dtype, "bf16") == 0 && strstr(details, "dtype auto: bf16"))
        return "dpbf16_zmm";
    return strstr(details, "(ISA avx512") ? "fma_f32_zmm" : "fma_f32_ymm";
}

/* The prefill result's peak fields: that kind's peak on the run's threads, measured now. */
static json_t *peak_extra(const struct duet_bench_opts *o, const char *dtype, const char *details,
                          uint32_t threads, double gflop_per_s)
{
    const char *kind = prefill_peak_kind(dtype, details);
    double peak = duet__bench_peak_gops(o, kind, threads);

    return json_pack("{s:s, s:f, s:f}", "peak_kind", kind, "peak_gop_per_s", peak,
                     "fraction_of_peak", peak > 0 ? gflop_per_s / peak : 0.0);
}

/* ---- the measurements ---------------------------------------------------------------------- */

/* One (preset, dtype): its worker, its sizes and the block ranges of each phase. */
struct run {
    const struct duet_bench_opts *o;
    json_t *results;
    const char *preset, *dtype; /* dtype: the precision, f32 | bf16 | f16 | int8 | int4 */
    uint32_t threads;
    uint32_t group;      /* int8 / int4 group size */
    double weight_bytes; /* per weight in the precision's packed form */
    struct params params;
    struct bench_worker wk;
    uint32_t prompt_len, context, window, max_batch;
    uint32_t prefill_blocks; /* blocks 0 .. prefill_blocks - 1: the prefill sequence */
    uint32_t tmpl_blocks;    /* the next ones: the decode prompt, prefilled once */
    uint32_t seq_blocks;     /* then max_batch sequences of seq_blocks each */
    int32_t first_token;     /* sampled after the decode prompt */
    struct rss rss_before;   /* the process before the worker is created */
    struct rss rss_loaded;   /* after create and init_cache */
};

static uint32_t ceil_div(uint32_t a, uint32_t b)
{
    return (a + b - 1) / b;
}

static const duet_sampling_params greedy = {.temperature = 0, .top_p = 1.0f};

/* Deterministic prompt tokens in 3 .. vocab - 1. */
static void fill_tokens(int32_t *t, uint32_t n, uint32_t vocab, uint32_t salt)
{
    for (uint32_t i = 0; i < n; i++)
        t[i] = (int32_t)(3 + (i * 2654435761u + salt * 40503u) % (vocab > 4 ? vocab - 3 : 1));
}

/* Times fn over o->repeats repetitions of o->seconds / repeats each (at least one call). */
static int measure(struct run *r, int (*fn)(struct run *, void *), void *arg,
                   struct duet_bench_samples *s)
{
    for (int rep = 0; rep < r->o->repeats; rep++) {
        uint64_t ns = 0, ops = 0;
        uint64_t end = duet__bench_now_ns() + (uint64_t)(r->o->seconds / r->o->repeats * 1e9);

        do {
            uint64_t t0 = duet__bench_now_ns();
            if (fn(r, arg))
                return 1;
            ns += duet__bench_now_ns() - t0;
            ops++;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(s, ns, ops);
    }
    return 0;
}

/* A single-sequence execute: tokens at positions pos.., the last one producing a row. */
struct one_seq {
    duet_seq seq;
    duet_batch batch;
    duet_batch_output out;
    int32_t token; /* the output row's token */
};

static void one_seq_init(struct one_seq *q, const int32_t *tokens, uint32_t n,
                         const uint32_t *table, uint32_t n_blocks)
{
    q->seq = (duet_seq){.tokens = tokens,
                        .n_tokens = n,
                        .block_table = table,
                        .n_blocks = n_blocks,
                        .n_outputs = 1,
                        .sampling = greedy};
    q->batch = (duet_batch){.struct_size = sizeof(q->batch),
                            .n_seqs = 1,
                            .seq_size = sizeof(duet_seq),
                            .seqs = &q->seq};
    q->out = (duet_batch_output){.struct_size = sizeof(q->out), .n_rows = 1, .tokens = &q->token};
}

static int prefill_step(struct run *r, void *arg)
{
    struct one_seq *q = arg;

    return worker_run(&r->wk, &q->batch, &q->out, "prefill");
}

static json_t *prefill_extra(const struct run *r, const struct duet_bench_result *res)
{
    const struct params *p = &r->params;
    double n = r->prompt_len;
    double flop = 2.0 * p->layers * n + 2.0 * p->head +
                  2.0 * p->num_layers * p->num_heads * p->head_dim * n * (n + 1);

    const char *details =
        DUET_ABI_HAS_FIELD(r->wk.tbl, duet_worker_plugin, details) && r->wk.tbl->details
            ? r->wk.tbl->details
            : "";

    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:f, s:s}", "preset", r->preset,
        "dtype", r->dtype, "phase", "prefill", "plugin", duet_plugin_path(r->wk.plugin),
        "plugin_version", r->wk.tbl->version, "plugin_details", details, "threads", r->threads,
        "tokens", r->prompt_len, "tokens_per_s", n * 1e9 / res->ns_median, "tokens_per_s_best",
        n * 1e9 / res->ns_best, "gflop_per_s", flop / res->ns_median, "flop_model", flop_model);
}

/* extra with the CPU worker's peak share and resident memory merged in. */
static json_t *prefill_cpu_extra(const struct run *r, json_t *extra)
{
    json_t *add[2];

    if (mode->gpu || !extra)
        return extra;
    add[0] = peak_extra(r->o, r->dtype, json_string_value(json_object_get(extra, "plugin_details")),
                        r->threads, json_number_value(json_object_get(extra, "gflop_per_s")));
    add[1] = rss_extra(&r->rss_before, &r->rss_loaded, (double)r->wk.info.weight_bytes);
    for (int i = 0; i < 2; i++) {
        if (add[i])
            json_object_update(extra, add[i]);
        json_decref(add[i]);
    }
    return extra;
}

/* One prompt of prompt_len tokens per execute, in blocks 0... */
static int bench_prefill(struct run *r)
{
    uint32_t n = r->prompt_len, nb = r->prefill_blocks;
    int32_t *tokens = malloc(n * sizeof(*tokens));
    uint32_t *table = malloc(nb * sizeof(*table));
    struct duet_bench_samples s = {0};
    struct duet_bench_result res;
    struct one_seq q;
    char name[160];
    int rc = 1;

    if (!tokens || !table)
        goto out;
    fill_tokens(tokens, n, r->wk.info.vocab_size, 1);
    for (uint32_t i = 0; i < nb; i++)
        table[i] = i;
    one_seq_init(&q, tokens, n, table, nb);
    if (prefill_step(r, &q) || measure(r, prefill_step, &q, &s)) /* the first call warms up */
        goto out;
    snprintf(name, sizeof(name), "%s_%s_prefill_%u", r->preset, r->dtype, n);
    duet__bench_finish(&s, name, &res);
    duet__bench_report(r->results, &res, prefill_cpu_extra(r, prefill_extra(r, &res)));
    rc = 0;
out:
    free(tokens);
    free(table);
    return rc;
}

/* Prefills the decode prompt once into the template blocks; its sampled token is first_token. */
static int prefill_template(struct run *r)
{
    uint32_t n = r->context, nb = r->tmpl_blocks;
    int32_t *tokens = malloc(n * sizeof(*tokens));
    uint32_t *table = malloc(nb * sizeof(*table));
    struct one_seq q;
    int rc = 1;

    if (tokens && table) {
        fill_tokens(tokens, n, r->wk.info.vocab_size, 2);
        for (uint32_t i = 0; i < nb; i++)
            table[i] = r->prefill_blocks + i;
        one_seq_init(&q, tokens, n, table, nb);
        rc = worker_run(&r->wk, &q.batch, &q.out, "decode prompt");
        r->first_token = q.token;
    }
    free(tokens);
    free(table);
    return rc;
}

/* B sequences decoding together. */
struct decode {
    uint32_t batch;
    duet_seq *seqs;   /* [batch] */
    int32_t *fed;     /* [batch] the token each sequence is fed */
    int32_t *sampled; /* [batch] output rows */
    uint32_t *tables; /* [batch][seq_blocks] */
    uint32_t step;    /* position context + step is fed next */
    uint64_t ctx_sum; /* attended positions, summed over timed sequence steps */
    uint64_t ctx_n;   /* sequence steps in ctx_sum */
    duet_batch b;
    duet_batch_output out;
};

static int decode_step(struct run *r, void *arg)
{
    struct decode *d = arg;
    uint32_t pos = r->context + d->step;

    for (uint32_t i = 0; i < d->batch; i++) {
        d->fed[i] = d->step == 0 ? r->first_token : d->sampled[i];
        d->seqs[i].pos = pos;
    }
    if (worker_run(&r->wk, &d->b, &d->out, "decode step"))
        return 1;
    d->ctx_sum += (uint64_t)(pos + 1) * d->batch;
    d->ctx_n += d->batch;
    d->step = (d->step + 1) % r->window;
    return 0;
}

/* Copies the template blocks into each sequence's first blocks (a batch of cache operations). */
static int copy_template(struct run *r, const struct decode *d)
{
    uint32_t n = d->batch * r->tmpl_blocks;
    duet_block_pair *pairs = malloc(n * sizeof(*pairs));
    duet_batch b = {.struct_size = sizeof(b), .n_copy = n, .seq_size = sizeof(duet_seq)};
    duet_batch_output out = {.struct_size = sizeof(out)};
    int rc;

    if (!pairs)
        return 1;
    for (uint32_t i = 0; i < d->batch; i++)
        for (uint32_t k = 0; k < r->tmpl_blocks; k++)
            pairs[i * r->tmpl_blocks + k] = (duet_block_pair){
                .src = r->prefill_blocks + k, .dst = d->tables[i * r->seq_blocks + k]};
    b.copy = pairs;
    rc = worker_run(&r->wk, &b, &out, "copy the decode prompt");
    free(pairs);
    return rc;
}

static int decode_init(struct run *r, struct decode *d, uint32_t batch)
{
    uint32_t base = r->prefill_blocks + r->tmpl_blocks;

    *d = (struct decode){.batch = batch,
                         .seqs = calloc(batch, sizeof(duet_seq)),
                         .fed = calloc(batch, sizeof(int32_t)),
                         .sampled = calloc(batch, sizeof(int32_t)),
                         .tables = calloc((size_t)batch * r->seq_blocks, sizeof(uint32_t))};
    if (!d->seqs || !d->fed || !d->sampled || !d->tables)
        return 1;
    for (uint32_t i = 0; i < batch; i++) {
        for (uint32_t k = 0; k < r->seq_blocks; k++)
            d->tables[i * r->seq_blocks + k] = base + i * r->seq_blocks + k;
        d->seqs[i] = (duet_seq){.seq_id = i,
                                .tokens = &d->fed[i],
                                .n_tokens = 1,
                                .block_table = &d->tables[i * r->seq_blocks],
                                .n_blocks = r->seq_blocks,
                                .n_outputs = 1,
                                .sampling = greedy};
    }
    d->b = (duet_batch){.struct_size = sizeof(d->b),
                        .n_seqs = batch,
                        .seq_size = sizeof(duet_seq),
                        .seqs = d->seqs};
    d->out =
        (duet_batch_output){.struct_size = sizeof(d->out), .n_rows = batch, .tokens = d->sampled};
    return copy_template(r, d);
}

static void decode_fini(struct decode *d)
{
    free(d->seqs);
    free(d->fed);
    free(d->sampled);
    free(d->tables);
}

static json_t *decode_extra(const struct run *r, const struct decode *d,
                            const struct duet_bench_result *res)
{
    double b = d->batch, ctx = d->ctx_n ? (double)d->ctx_sum / d->ctx_n : 0;
    double weights = (double)(r->params.layers + r->params.head) * r->weight_bytes;

    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:I, s:s, s:I, s:f}", "preset",
                     r->preset, "dtype", r->dtype, "phase", "decode", "threads", r->threads,
                     "batch", d->batch, "prompt_context", r->context, "mean_context", ctx,
                     "tokens_per_s", b * 1e9 / res->ns_median, "tokens_per_s_best",
                     b * 1e9 / res->ns_best, "weight_bytes_read", (json_int_t)weights,
                     "weight_bytes_source", "format", "block_bytes", (json_int_t)r->wk.block_bytes,
                     "kv_bytes_read", b * ctx * (double)r->wk.block_bytes / BLOCK_SIZE);
}

static double number(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* Adds the bandwidth limit and the fractions to every decode result from index `from` on. */
static void add_limits(json_t *results, size_t from, double bandwidth)
{
    for (size_t i = from; i < json_array_size(results); i++) {
        json_t *o = json_array_get(results, i);
        double b = number(o, "batch"), limit;
        json_t *add;

        if (!json_is_string(json_object_get(o, "phase")) ||
            strcmp(json_string_value(json_object_get(o, "phase")), "decode") != 0)
            continue;
        limit = b * bandwidth / (number(o, "weight_bytes_read") + number(o, "kv_bytes_read"));
        add = json_pack("{s:f, s:f, s:f, s:f, s:s}", "bandwidth_gb_per_s", bandwidth / 1e9,
                        "limit_tokens_per_s", limit, "fraction_of_limit",
                        number(o, "tokens_per_s") / limit, "fraction_of_limit_best",
                        number(o, "tokens_per_s_best") / limit, "model", bw_model);
        if (add)
            json_object_update(o, add);
        json_decref(add);
    }
}

/* Per repetition of a decode measurement: its tokens/s and the bandwidth a probe pass saw just
 * before it. */
struct paired {
    double tokens_per_s[64], bandwidth[64];
    int n;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* measure() with a probe pass (the better of two) before each repetition. */
static int measure_paired(struct run *r, struct decode *d, struct duet_bench_samples *s,
                          struct paired *pr)
{
    struct duet_bench_probe *probe;
    int rc = 0;

    pr->n = 0;
    if (mode->gpu) /* the host-memory probe says nothing of the device's */
        return measure(r, decode_step, d, s);
    probe = duet__bench_probe_create(r->o->quick ? PAIRED_QUICK_BYTES : PAIRED_BYTES);

    if (!probe) {
        fprintf(stderr, "duet-bench: %s: no memory for the paired probe\n", bench_name);
        return 1;
    }
    pr->n = 0;
    for (int rep = 0; !rc && rep < r->o->repeats && rep < 64; rep++) {
        uint64_t ns = 0, ops = 0, end;
        double bw0 = 0, bw1 = 0;

        if (duet__bench_probe_pass(probe, bench_name, r->threads, &bw0) ||
            duet__bench_probe_pass(probe, bench_name, r->threads, &bw1)) {
            rc = 1;
            break;
        }
        end = duet__bench_now_ns() + (uint64_t)(r->o->seconds / r->o->repeats * 1e9);
        do {
            uint64_t t0 = duet__bench_now_ns();

            if (decode_step(r, d)) {
                rc = 1;
                break;
            }
            ns += duet__bench_now_ns() - t0;
            ops++;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(s, ns, ops);
        pr->tokens_per_s[pr->n] = (double)ops * d->batch * 1e9 / (double)(ns ? ns : 1);
        pr->bandwidth[pr->n++] = bw0 > bw1 ? bw0 : bw1;
    }
    duet__bench_probe_destroy(probe);
    return rc;
}

/* The paired fractions: each repetition's tokens/s against the limit its own probe sets. */
static json_t *paired_extra(const struct run *r, const struct decode *d, struct paired *pr)
{
    double b = d->batch, ctx = d->ctx_n ? (double)d->ctx_sum / d->ctx_n : 0;
    double bytes = (double)(r->params.layers + r->params.head) * r->weight_bytes +
                   b * ctx * (double)r->wk.block_bytes / BLOCK_SIZE;
    double frac[64];

    for (int i = 0; i < pr->n; i++)
        frac[i] = pr->tokens_per_s[i] / (b * pr->bandwidth[i] / bytes);
    return json_pack("{s:f, s:f, s:s}", "fraction_of_paired_limit", median(frac, pr->n),
                     "paired_bandwidth_gb_per_s", median(pr->bandwidth, pr->n) / 1e9,
                     "paired_model",
                     "each repetition's tokens/s over batch * bandwidth / bytes_per_step with the "
                     "bandwidth of a probe pass (best of two, " PAIRED_WHAT
                     ") run just before it; the median over repetitions");
}

static int bench_decode(struct run *r, uint32_t batch)
{
    struct duet_bench_samples s = {0};
    struct duet_bench_result res;
    struct paired pr;
    struct decode d;
    json_t *extra, *paired;
    char name[160];
    int rc = 1;

    if (decode_init(r, &d, batch) || decode_step(r, &d)) /* one untimed step warms up */
        goto out;
    d.ctx_sum = d.ctx_n = 0;
    if (measure_paired(r, &d, &s, &pr))
        goto out;
    snprintf(name, sizeof(name), "%s_%s_decode_batch_%u", r->preset, r->dtype, batch);
    duet__bench_finish(&s, name, &res);
    extra = decode_extra(r, &d, &res);
    paired = pr.n ? paired_extra(r, &d, &pr) : NULL;
    if (extra && paired)
        json_object_update(extra, paired);
    json_decref(paired);
    duet__bench_report(r->results, &res, extra);
    rc = 0;
out:
    decode_fini(&d);
    return rc;
}

/* Sizes of the run from the options; the cache takes every phase's blocks side by side. */
static void run_sizes(struct run *r)
{
    const struct duet_bench_worker_opts *w = &r->o->worker;

    r->prompt_len = w->prompt_len ? w->prompt_len : r->o->quick ? 64 : 512;
    r->context = w->context ? w->context : r->o->quick ? 32 : 128;
    r->window = r->o->quick ? QUICK_WINDOW : WINDOW;
    r->max_batch = 0;
    for (int i = 0; i < w->n_batches; i++)
        r->max_batch = w->batches[i] > r->max_batch ? w->batches[i] : r->max_batch;
    r->prefill_blocks = ceil_div(r->prompt_len, BLOCK_SIZE);
    r->tmpl_blocks = ceil_div(r->context, BLOCK_SIZE);
    r->seq_blocks = ceil_div(r->context + r->window, BLOCK_SIZE);
    r->weight_bytes = strcmp(r->dtype, "f32") == 0         ? 4.0
                      : strcmp(r->dtype, "int8") == 0      ? 1.0 + 2.0 / r->group
                      : strcmp(r->dtype, "int4") == 0      ? 0.5 + 2.0 / r->group
                      : strcmp(r->dtype, "gguf-q8_0") == 0 ? 1.0 + 2.0 / 32
                      : strcmp(r->dtype, "gguf-q4_0") == 0 ? 0.5 + 2.0 / 32
                                                           : 2.0;
}

static int check_positions(const struct run *r)
{
    uint32_t max = r->wk.info.max_position;

    if (r->prompt_len <= max && r->context + r->window <= max)
        return 0;
    fprintf(stderr,
            "duet-bench: %s: %s: prompt %u or context %u + %u beyond the model's %u "
            "positions\n",
            bench_name, r->preset, r->prompt_len, r->context, r->window, max);
    return 1;
}

static int run_one(struct run *r, const char *dir)
{
    const struct duet_bench_worker_opts *w = &r->o->worker;
    uint32_t blocks;
    int rc = 1;

    run_sizes(r);
    blocks = r->prefill_blocks + r->tmpl_blocks + r->max_batch * r->seq_blocks;
    fprintf(stderr, "duet-bench: %s: %s %s, %u threads\n", bench_name, r->preset, r->dtype,
            r->threads);
    rss_read(&r->rss_before);
    if (count_params(dir, &r->params) ||
        worker_load(&r->wk, r->o, dir, r->dtype, r->group, r->threads) ||
        worker_open(&r->wk, dir, blocks) || (rss_read(&r->rss_loaded), 0) || check_positions(r) ||
        bench_prefill(r) || prefill_template(r))
        goto out;
    for (int i = 0; i < w->n_batches; i++)
        if (bench_decode(r, w->batches[i]))
            goto out;
    rc = 0;
out:
    worker_close(&r->wk);
    return rc;
}

/* What bench_preset runs for each (preset, dtype): run_one, or run_score (duet-bench score). */
static int (*run_preset)(struct run *r, const char *dir) = run_one;

#define APPEND_ALL(list, n, from)                                                                  \
    for (size_t i_ = 0; i_ < sizeof(from) / sizeof(from[0]); i_++)                                 \
    (list)[(n)++] = (from)[i_]

/* Fills in the defaults of the lists left empty (--quick: the tiny model only). */
static void default_lists(struct duet_bench_worker_opts *w, bool quick)
{
    if (!w->n_presets && quick)
        w->presets[w->n_presets++] = "tiny";
    if (!w->n_presets && mode->gpu)
        APPEND_ALL(w->presets, w->n_presets, gpu_default_presets);
    if (!w->n_presets)
        APPEND_ALL(w->presets, w->n_presets, default_presets);
    if (!w->n_dtypes && mode->gpu)
        APPEND_ALL(w->dtypes, w->n_dtypes, gpu_default_dtypes);
    if (!w->n_dtypes)
        APPEND_ALL(w->dtypes, w->n_dtypes, default_dtypes);
    if (!w->n_batches && mode->gpu)
        APPEND_ALL(w->batches, w->n_batches, gpu_default_batches);
    if (!w->n_batches)
        APPEND_ALL(w->batches, w->n_batches, default_batches);
}

/* gpu-worker computes in bf16, f16 or f32: no int8 / int4 weights. */
static int check_dtypes(const struct duet_bench_worker_opts *w)
{
    for (int i = 0; mode->gpu && i < w->n_dtypes; i++)
        if (strcmp(w->dtypes[i], "bf16") && strcmp(w->dtypes[i], "f16") &&
            strcmp(w->dtypes[i], "f32")) {
            fprintf(stderr, "duet-bench: %s: dtype %s: bf16, f16 or f32 only\n", bench_name,
                    w->dtypes[i]);
            return 1;
        }
    return 0;
}
/* gguf-q8_0 / gguf-q4_0: DIR/model-Q8_0.gguf (written from DIR once) into path; else DIR. */
static int model_of(const char *dir, const char *dtype, char *path, size_t size)
{
    duet_dtype type = strcmp(dtype, "gguf-q8_0") == 0 ? DUET_DTYPE_Q8_0 : DUET_DTYPE_Q4_0;
    char err[1024];
    struct duet__msg msg = {err, sizeof(err)};
    duet_model *m;
    FILE *f;

    if (strncmp(dtype, "gguf-", 5) != 0) {
        snprintf(path, size, "%s", dir);
        return 0;
    }
    snprintf(path, size, "%s/model-%s.gguf", dir, duet_dtype_name(type));
    if ((f = fopen(path, "rb"))) {
        fclose(f);
        return 0;
    }
    if (duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err)) ||
        (duet__gguf_write(m, path, type, 0, &msg) && (duet_model_destroy(m), 1))) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench_name, err);
        return 1;
    }
    duet_model_destroy(m);
    return 0;
}

static int bench_preset(const struct duet_bench_opts *o, const char *preset, uint32_t threads,
                        double *bandwidth, json_t *results)
{
    struct duet__gen_params gen;
    duet_model_desc desc;
    char dir[4200];
    int rc;

    if (!duet__bench_preset_desc(preset, &desc)) {
        fprintf(stderr,
                "duet-bench: %s: unknown preset '%s' (duet-mkmodel --list, or "
                "tiny)\n",
                bench_name, preset);
        return 1;
    }
    snprintf(dir, sizeof(dir), "%s/%s-bf16", o->worker.models, preset);
    gen = (struct duet__gen_params){
        .desc = desc, .dir = dir, .seed = 1, .tail_from = desc.num_layers, .force = true};
    if (duet__bench_ensure_model(bench_name, o->worker.models, dir, &gen))
        return 1;
    for (int i = 0; i < o->worker.n_dtypes; i++) {
        char when[160], model[4300];
        struct run r = {.o = o,
                        .results = results,
                        .preset = preset,
                        .dtype = o->worker.dtypes[i],
                        .threads = threads,
                        .group = o->gemv.group ? o->gemv.group : 32};
        snprintf(when, sizeof(when), "before %s %s", preset, r.dtype);
        if ((rc = model_of(dir, r.dtype, model, sizeof(model))) != 0 ||
            (rc = mode->bandwidth(o, bench_name, threads, when, results, bandwidth)) != 0 ||
            (rc = run_preset(&r, model)) != 0)
            return rc;
    }
    return 0;
}

int duet__bench_worker(const struct duet_bench_opts *opts, const struct duet__bench_worker_mode *m,
                       json_t *results)
{
    struct duet_bench_opts o = *opts;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = o.worker.threads ? o.worker.threads : (uint32_t)(cpus > 0 ? cpus : 1);
    double bandwidth = 0;
    size_t first = json_array_size(results);
    int rc;

    mode = m;
    bench_name = m->bench;
    if (threads > DUET_BENCH_MAX_THREADS) {
        fprintf(stderr, "duet-bench: %s: at most %d threads\n", bench_name, DUET_BENCH_MAX_THREADS);
        return 1;
    }
    default_lists(&o.worker, o.quick);
    if (check_dtypes(&o.worker))
        return 1;
    for (int i = 0; i < o.worker.n_presets; i++)
        if ((rc = bench_preset(&o, o.worker.presets[i], threads, &bandwidth, results)) != 0)
            return rc;
    if ((rc = m->bandwidth(&o, bench_name, threads, "end", results, &bandwidth)) != 0)
        return rc;
    add_limits(results, first, bandwidth);
    return 0;
}

int duet__bench_cpu_worker(const struct duet_bench_opts *opts, json_t *results)
{
    static const struct duet__bench_worker_mode cpu = {.bench = "cpu-worker",
                                                       .plugin_dir = DUET_BENCH_PLUGIN_DIR,
                                                       .bandwidth = duet__bench_bandwidth};

    run_preset = run_one;
    return duet__bench_worker(opts, &cpu, results);
}

/* ---- the scoring cost curve (duet-bench score) ---------------------------------------------
 *
 * What a speculative step costs the target: for one sequence holding `context` prefilled
 * positions, the time of ONE execute that scores k + 1 positions (the last accepted token and k
 * proposals fed at once, n_outputs k + 1 and WANT_PROBS, as engine/spec.c builds the score batch)
 * over the time of a plain 1-position decode step (n_outputs 1, no flags), for k = 0 .. 8. The
 * executes write their KV at positions context .. context + k, the same ones every time, so the
 * attended context stays put. Every repetition times the decode step and each k in a rotated order
 * (repetition i starts i variants further on), and the ratio is the median over repetitions of
 * each repetition's own ratio: drift of the shared machine between the variants cancels.
 */

#define SCORE_MAX_K 8
#define SCORE_VARIANTS (SCORE_MAX_K + 2) /* variant 0: the decode step; v ≥ 1: k = v − 1 */

struct score {
    int32_t tokens[SCORE_MAX_K + 1];  /* fed: the same tokens every execute */
    int32_t sampled[SCORE_MAX_K + 1]; /* output rows */
    float *probs;                     /* [SCORE_MAX_K + 1][vocab] WANT_PROBS rows */
    uint32_t *table;                  /* [n_blocks] */
    uint32_t n_blocks;
    double ns[SCORE_VARIANTS][64]; /* per repetition: ns per execute */
    struct duet_bench_samples s[SCORE_VARIANTS];
};

/* One execute of variant v. */
static int score_exec(struct run *r, struct score *sc, int v)
{
    uint32_t n = v == 0 ? 1 : (uint32_t)v;
    duet_seq seq = {.tokens = sc->tokens,
                    .n_tokens = n,
                    .pos = r->context,
                    .block_table = sc->table,
                    .n_blocks = sc->n_blocks,
                    .n_outputs = n,
                    .sampling = greedy};
    duet_batch b = {.struct_size = sizeof(b),
                    .flags = v == 0 ? 0 : DUET_BATCH_WANT_PROBS,
                    .n_seqs = 1,
                    .seq_size = sizeof(duet_seq),
                    .seqs = &seq};
    duet_batch_output out = {.struct_size = sizeof(out),
                             .n_rows = n,
                             .tokens = sc->sampled,
                             .probs = v == 0 ? NULL : sc->probs};

    return worker_run(&r->wk, &b, &out, v == 0 ? "decode step" : "score");
}

/* Repetition rep: every variant for its share of the budget (at least one execute each). */
static int score_repetition(struct run *r, struct score *sc, int rep)
{
    double budget = r->o->seconds / r->o->repeats / SCORE_VARIANTS * 1e9;

    for (int j = 0; j < SCORE_VARIANTS; j++) {
        int v = (j + rep) % SCORE_VARIANTS;
        uint64_t ns = 0, ops = 0, end = duet__bench_now_ns() + (uint64_t)budget;

        do {
            uint64_t t0 = duet__bench_now_ns();

            if (score_exec(r, sc, v))
                return 1;
            ns += duet__bench_now_ns() - t0;
            ops++;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&sc->s[v], ns, ops);
        sc->ns[v][rep] = (double)ns / (double)ops;
    }
    return 0;
}

static json_t *score_extra(const struct run *r, const struct score *sc, int v, int reps)
{
    double ratio[64];

    for (int i = 0; i < reps; i++)
        ratio[i] = sc->ns[v][i] / sc->ns[0][i];
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:s}", "preset", r->preset, "dtype",
                     r->dtype, "phase", v == 0 ? "score_decode" : "score", "threads", r->threads,
                     "context", r->context, "positions", v == 0 ? 1 : v, "ratio_to_decode",
                     median(ratio, reps), "ratio_model",
                     v == 0 ? "the 1-position decode step every ratio divides by"
                            : "median over repetitions of (ns of one execute scoring k + 1 "
                              "positions, n_outputs k + 1, WANT_PROBS) / (ns of a 1-position "
                              "decode step in the same repetition)");
}

/* Reports every variant, and the curve as one line per k on stderr. */
static void score_report(struct run *r, struct score *sc, int reps)
{
    fprintf(stderr, "duet-bench: score: %s %s:", r->preset, r->dtype);
    for (int v = 0; v < SCORE_VARIANTS; v++) {
        struct duet_bench_result res;
        json_t *extra = score_extra(r, sc, v, reps);
        char name[160];

        if (v == 0)
            snprintf(name, sizeof(name), "%s_%s_score_decode", r->preset, r->dtype);
        else
            snprintf(name, sizeof(name), "%s_%s_score_k%d", r->preset, r->dtype, v - 1);
        duet__bench_finish(&sc->s[v], name, &res);
        if (v == 0)
            fprintf(stderr, " decode %.2f ms, k+1/decode", res.ns_median / 1e6);
        else
            fprintf(stderr, " %.2f", json_real_value(json_object_get(extra, "ratio_to_decode")));
        duet__bench_report(r->results, &res, extra);
    }
    fprintf(stderr, "\n");
}

static int score_measure(struct run *r, struct score *sc)
{
    int reps = r->o->repeats < 64 ? r->o->repeats : 64;

    for (int v = 0; v < SCORE_VARIANTS; v++) /* warm-up: every shape once */
        if (score_exec(r, sc, v))
            return 1;
    for (int rep = 0; rep < reps; rep++)
        if (score_repetition(r, sc, rep))
            return 1;
    score_report(r, sc, reps);
    return 0;
}

/* One (preset, dtype) of the score benchmark: the context prefilled into blocks 0.., then the
 * curve measured on the blocks that follow it. */
static int run_score(struct run *r, const char *dir)
{
    struct score *sc = calloc(1, sizeof(*sc));
    int rc = 1;

    run_sizes(r);
    r->prefill_blocks = 0; /* the template is the scored sequence's start */
    r->window = SCORE_MAX_K + 1;
    r->prompt_len = 0; /* no prefill measurement */
    fprintf(stderr, "duet-bench: score: %s %s, %u threads, context %u\n", r->preset, r->dtype,
            r->threads, r->context);
    if (!sc)
        goto out;
    sc->n_blocks = ceil_div(r->context + SCORE_MAX_K + 1, BLOCK_SIZE);
    if (count_params(dir, &r->params) ||
        worker_load(&r->wk, r->o, dir, r->dtype, r->group, r->threads) ||
        worker_open(&r->wk, dir, sc->n_blocks) || check_positions(r) || prefill_template(r))
        goto out;
    sc->probs = malloc((size_t)(SCORE_MAX_K + 1) * r->wk.info.vocab_size * sizeof(float));
    sc->table = malloc(sc->n_blocks * sizeof(uint32_t));
    if (!sc->probs || !sc->table)
        goto out;
    for (uint32_t i = 0; i < sc->n_blocks; i++)
        sc->table[i] = i;
    sc->tokens[0] = r->first_token;
    fill_tokens(sc->tokens + 1, SCORE_MAX_K, r->wk.info.vocab_size, 3);
    rc = score_measure(r, sc);
out:
    worker_close(&r->wk);
    if (sc) {
        free(sc->probs);
        free(sc->table);
    }
    free(sc);
    return rc;
}

/* The score curve is a ratio of two times: no bandwidth probe. */
static int no_bandwidth(const struct duet_bench_opts *o, const char *bench, uint32_t threads,
                        const char *when, json_t *results, double *best)
{
    (void)o, (void)bench, (void)threads, (void)when, (void)results, (void)best;
    return 0;
}

int duet__bench_score(const struct duet_bench_opts *opts, json_t *results)
{
    static const struct duet__bench_worker_mode cpu = {
        .bench = "score", .plugin_dir = DUET_BENCH_PLUGIN_DIR, .bandwidth = no_bandwidth};

    run_preset = run_score;
    return duet__bench_worker(opts, &cpu, results);
}
