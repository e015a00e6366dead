/*
 * Overlap benchmark (overlap): what a CPU draft adds to a GPU target, measured without a GPU.
 *
 * The target is bench/modelled_worker.c: the CPU worker running a 64-wide model with the draft's
 * vocabulary, each execute() padded by sleeping to t(P) = a + b × P for the P positions it feeds
 * (defaults: a 7B bf16 target on an H100, about 5 ms a decode step at batch 1). The draft is a
 * real CPU draft: a preset's random model (llama-68m; tiny with --quick), int4, 1 thread.
 *
 *   1. Models, generated once into the models directory and reused: the draft's
 *      (<models>/<preset>-bf16, as cpu-worker writes it) and the target's tiny model with the
 *      draft's vocabulary (<models>/overlap-target-v<vocab>-bf16).
 *   2. For each batch: plain decoding of the modelled target (no speculative group), then for
 *      each k the speculative engine with speculative.overlap false (serial) and true. Each runs
 *      `batch` requests at a time, greedy, max_tokens each with ignore_eos; one untimed short
 *      round warms it up; only decode steps are timed (prompt-only steps are not).
 *   3. Acceptance: "synthetic" writes speculative.acceptance = "synthetic" and
 *      speculative.synthetic_rate = alpha (each proposal accepted independently with probability
 *      alpha, whatever the models say); "real" verifies for real, with the draft's own model in
 *      bf16 as the target's inner model (the draft is its int4 copy, so they mostly agree; that
 *      model's compute is not negligible at large batches: target_excess says by how much the
 *      target overran the model).
 *
 * Per (batch, k, overlap), from the engine's metrics summed over the timed decode steps:
 *
 *   speedup            = tokens_per_s / plain tokens_per_s
 *   hidden_draft_share = overlap_s / draft_s: the part of drafting the target's time hid
 *   target_idle_share  = (elapsed_s - execute_s) / elapsed_s; draft_idle_share likewise
 *   t1, t_verify       = t(batch), t(batch × (k + 1)): the modelled plain and scoring steps
 *   E                  = (1 - alpha^(k+1)) / (1 - alpha), alpha the synthetic rate or, with real
 *                        acceptance, accepted / (accepted + first rejected) per step
 *   ideal_speedup      = E × t1 / t_verify: a free draft, one target call a step
 *   ideal_speedup_measured = M × t1 / t_verify with M the measured mean tokens per step
 *   target_model_s     = the modelled time of the target's calls (two per overlapped step, one
 *                        per half), target_excess_share = execute_s / target_model_s - 1
 *   step_ms_at_model   = the step time less the target's overrun (execute_s - target_model_s):
 *                        exact for plain and serial runs, a lower bound for overlapped ones
 *   projected_tokens_per_s(_at_model) = batch × E(--alpha, k) / step time (1 for plain): what
 *                        --acceptance projected reports (a step's cost does not depend on what
 *                        is accepted)
 *
 * Each batch ends with a summary result: the best k with and without overlap and whether
 * speculation beats plain decoding there, by measured tokens/s and by the projected ones at the
 * model (docs/performance.md turns these into
 * speculative.disable_by_batch_size).
 */
#define _GNU_SOURCE
#include "bench.h"

#include "../model/model_gen.h"

#include <duet/config.h>
#include <duet/duet.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DUET_BENCH_PLUGIN_DIR
#define DUET_BENCH_PLUGIN_DIR NULL /* the build tree's cpu_worker/.libs, set by bench/local.mk */
#endif
#ifndef DUET_BENCH_MODELLED
#define DUET_BENCH_MODELLED "duet_modelled_worker.so" /* set by bench/local.mk */
#endif

#define PROMPT_LEN 32
#define QUICK_PROMPT_LEN 8
#define WARMUP_TOKENS 4
#define DEFAULT_A_S 5.0e-3 /* the wrapper's defaults (bench/modelled_worker.c) */
#define DEFAULT_B_S 2.83e-5
#define KV_SPACE "0.5" /* cache.cpu_kv_space_gib of each worker */

static const uint32_t default_batches[] = {1, 2, 4, 8, 16, 32};
static const uint32_t default_ks[] = {2, 3, 4, 5, 6, 7, 8};

/* Sums over the timed decode steps of one engine. */
struct ov_totals {
    uint64_t steps, seq_steps, tokens, proposed, accepted, judged, judged_accepted;
    uint64_t spec_steps, overlap_steps;
    double execute_s, draft_s, overlap_s, elapsed_s; /* engine metrics */
    double model_s;                                  /* modelled seconds of the target's calls */
    double wall_s;                                   /* timed decode steps, by the bench's clock */
};

/* One engine: plain (k = 0) or speculative with k proposals, serial or overlapped. */
struct ov_run {
    const struct duet_bench_opts *o;
    const char *target_dir, *draft_dir;
    uint32_t batch, k, prompt_len, max_tokens;
    bool overlap;
    const int32_t *prompts; /* [batch][prompt_len] */
    duet_config *cfg;
    duet_engine *e;
    struct ov_totals tot;
    struct duet_bench_samples s; /* ns per decode token, per repetition */
    struct duet_bench_result res;
    char name[96];
};

/* The speculative group: the CPU draft, k, overlap, and the acceptance. */
static int config_draft(const struct ov_run *r)
{
    const struct duet_bench_overlap_opts *ov = &r->o->ov;
    duet_config *c = r->cfg;

    if (duet__bench_config_setf(c, "overlap", "speculative.draft_model=\"%s\"", r->draft_dir) ||
        duet__bench_config_setf(c, "overlap", "speculative.worker=\"cpu\"") ||
        duet__bench_config_setf(c, "overlap", "speculative.weights=%s", r->o->worker.dtypes[0]) ||
        duet__bench_config_setf(c, "overlap", "speculative.threads=%u", r->o->worker.threads) ||
        duet__bench_config_setf(c, "overlap", "speculative.num_tokens=%u", r->k) ||
        duet__bench_config_setf(c, "overlap", "speculative.overlap=%s",
                                r->overlap ? "true" : "false"))
        return 1;
    if (strcmp(ov->acceptance, "synthetic") != 0)
        return 0;
    if (duet__bench_config_setf(c, "overlap", "speculative.acceptance=\"synthetic\"") ||
        duet__bench_config_setf(c, "overlap", "speculative.synthetic_rate=%.17g", ov->alpha)) {
        fprintf(stderr, "duet-bench: overlap: this build has no synthetic acceptance: "
                        "use --acceptance real\n");
        return 1;
    }
    return 0;
}

static int ov_config(struct ov_run *r)
{
    const struct duet_bench_overlap_opts *ov = &r->o->ov;
    const char *dir = DUET_BENCH_PLUGIN_DIR;
    duet_config *c;

    if (duet_config_create(&r->cfg))
        return 1;
    c = r->cfg;
    if (duet__bench_config_setf(c, "overlap", "model=\"%s\"", r->target_dir) ||
        duet__bench_config_setf(c, "overlap", "target.worker=\"%s\"", ov->modelled) ||
        duet__bench_config_setf(c, "overlap", "target.device=\"a=%.17g,b=%.17g\"", ov->a_s,
                                ov->b_s) ||
        duet__bench_config_setf(c, "overlap", "target.weights=bf16") ||
        duet__bench_config_setf(c, "overlap", "target.threads=1") ||
        duet__bench_config_setf(c, "overlap", "cache.cpu_kv_space_gib=" KV_SPACE) ||
        duet__bench_config_setf(c, "overlap", "cache.swap_space_gib=0") ||
        duet__bench_config_setf(c, "overlap", "scheduler.max_num_seqs=%u", r->batch))
        return 1;
    if (dir && duet__bench_config_setf(c, "overlap", "plugin_dir=\"%s\"", dir))
        return 1;
    if (r->k && config_draft(r))
        return 1;
    if (duet_config_validate(c)) {
        fprintf(stderr, "duet-bench: overlap: %s\n", duet_config_error(c));
        return 1;
    }
    return 0;
}

/* t(P) = a + b × P, the wrapper's model of one call. */
static double model_t(const struct duet_bench_overlap_opts *ov, double positions)
{
    return ov->a_s + ov->b_s * positions;
}

/* Adds a decode step (metrics a before, b after; out its output) to t. */
static void add_step(struct ov_run *r, const duet_step_output *out, const duet_engine_metrics *a,
                     const duet_engine_metrics *b)
{
    struct ov_totals *t = &r->tot;
    const struct duet_bench_overlap_opts *ov = &r->o->ov;
    double n = out->num_seqs, per = 1;

    t->steps++;
    t->seq_steps += b->decode_seq_steps - a->decode_seq_steps;
    t->tokens += b->generated_tokens - a->generated_tokens;
    t->proposed += b->proposed - a->proposed;
    t->accepted += b->accepted - a->accepted;
    t->spec_steps += b->spec_steps - a->spec_steps;
    t->overlap_steps += b->overlap_steps - a->overlap_steps;
    t->execute_s += b->execute_s - a->execute_s;
    t->draft_s += b->draft_s - a->draft_s;
    t->overlap_s += b->overlap_s - a->overlap_s;
    t->elapsed_s += b->elapsed_s - a->elapsed_s;
    if (b->spec_steps > a->spec_steps)
        per = b->last_k + 1.0;
    if (b->overlap_steps > a->overlap_steps) /* halves of ceil(n / 2) and floor(n / 2) */
        t->model_s += model_t(ov, ceil(n / 2) * per) + model_t(ov, floor(n / 2) * per);
    else
        t->model_s += model_t(ov, n * per);
}

/* Proposals judged in a speculative step (as bench/spec.c counts them). */
static void add_judged(struct ov_run *r, const duet_step_output *out)
{
    for (uint32_t i = 0; r->k && i < out->n_requests; i++) {
        const duet_request_output *q = &out->requests[i];
        uint32_t n = q->n_ids - q->first_new;

        if (q->finish != DUET_FINISH_NONE || n == 0)
            continue;
        r->tot.judged_accepted += n - 1;
        r->tot.judged += n - 1 + (n <= r->k);
    }
}

/* Steps until every request has finished; decode steps are timed into *ns when timed. */
static int run_steps(struct ov_run *r, bool timed, uint64_t *ns)
{
    duet_engine_metrics before, after;
    const duet_step_output *out;

    while (duet_engine_has_unfinished(r->e)) {
        uint64_t t0;

        duet_engine_metrics_get(r->e, &before);
        t0 = duet__bench_now_ns();
        if (duet_engine_step(r->e, &out)) {
            fprintf(stderr, "duet-bench: overlap: step: %s\n", duet_engine_error(r->e));
            return 1;
        }
        if (out->is_prefill || !timed)
            continue;
        t0 = duet__bench_now_ns() - t0;
        *ns += t0;
        r->tot.wall_s += t0 * 1e-9;
        duet_engine_metrics_get(r->e, &after);
        add_step(r, out, &before, &after);
        add_judged(r, out);
    }
    return 0;
}

/* One round: `batch` requests of max_tokens each, to the end. */
static int run_round(struct ov_run *r, uint32_t max_tokens, bool timed, uint64_t *ns)
{
    duet_request_params p;
    uint64_t id;

    duet_request_params_init(&p);
    p.n_prompt = r->prompt_len;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    for (uint32_t i = 0; i < r->batch; i++) {
        p.prompt = r->prompts + (size_t)i * r->prompt_len;
        if (duet_engine_add_request(r->e, &p, &id)) {
            fprintf(stderr, "duet-bench: overlap: %s\n", duet_engine_error(r->e));
            return 1;
        }
    }
    return run_steps(r, timed, ns);
}

/* A warm-up round, then o->repeats repetitions of o->seconds / repeats each (a round at least). */
static int ov_measure(struct ov_run *r)
{
    uint64_t unused = 0;

    if (run_round(r, WARMUP_TOKENS, false, &unused))
        return 1;
    for (int rep = 0; rep < r->o->repeats; rep++) {
        uint64_t end = duet__bench_now_ns() + (uint64_t)(r->o->seconds / r->o->repeats * 1e9);
        uint64_t ns = 0, tokens = r->tot.tokens;

        do {
            if (run_round(r, r->max_tokens, true, &ns))
                return 1;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&r->s, ns, r->tot.tokens - tokens);
    }
    return 0;
}

static int ov_one(struct ov_run *r)
{
    char err[1024];
    int rc = 0;

    if (r->k)
        snprintf(r->name, sizeof(r->name), "overlap_batch_%u_k%u_%s", r->batch, r->k,
                 r->overlap ? "overlap" : "serial");
    else
        snprintf(r->name, sizeof(r->name), "overlap_batch_%u_plain", r->batch);
    fprintf(stderr, "duet-bench: overlap: %s\n", r->name);
    if (ov_config(r))
        rc = 1;
    else if (duet_engine_create(r->cfg, &r->e, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: overlap: %s\n", err);
        rc = 1;
    } else {
        rc = ov_measure(r);
    }
    duet_engine_destroy(r->e);
    duet_config_destroy(r->cfg);
    r->e = NULL;
    r->cfg = NULL;
    duet__bench_finish(&r->s, r->name, &r->res);
    return rc;
}

/* ---- results ------------------------------------------------------------------------------ */

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

static double tokens_per_s(const struct ov_run *r)
{
    return r->res.ns_median > 0 ? 1e9 / r->res.ns_median : 0.0;
}

/* E(alpha, k): expected tokens per step when each proposal is accepted with probability alpha. */
static double expected_tokens(double alpha, uint32_t k)
{
    if (alpha >= 1.0 - 1e-12)
        return k + 1.0;
    return (1.0 - pow(alpha, k + 1.0)) / (1.0 - alpha);
}

/* What every run reports: its throughput, each device's busy and idle time, the model's fit. */
static json_t *common_extra(const struct ov_run *r)
{
    const struct ov_totals *t = &r->tot;

    return json_pack("{s:i, s:i, s:b, s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
                     "s:f, s:f, s:f, s:f}",
                     "batch", r->batch, "k", r->k, "overlap", r->overlap, "mode",
                     r->k ? "speculative" : "plain", "decode_steps", (json_int_t)t->steps,
                     "decode_tokens", (json_int_t)t->tokens, "tokens_per_s", tokens_per_s(r),
                     "mean_tokens_per_step", ratio((double)t->tokens, (double)t->seq_steps),
                     "elapsed_s", t->elapsed_s, "execute_s", t->execute_s, "draft_s", t->draft_s,
                     "overlap_s", t->overlap_s, "target_idle_share",
                     ratio(t->elapsed_s - t->execute_s, t->elapsed_s), "draft_idle_share",
                     r->k ? ratio(t->elapsed_s - t->draft_s, t->elapsed_s) : 0.0,
                     "hidden_draft_share", ratio(t->overlap_s, t->draft_s), "target_step_ms",
                     ratio(t->execute_s * 1e3, (double)t->steps), "draft_step_ms",
                     ratio(t->draft_s * 1e3, (double)t->steps), "target_model_s", t->model_s,
                     "target_excess_share", ratio(t->execute_s, t->model_s) - 1.0);
}

/* Decode steps' mean time, and the tokens/s it gives at --alpha (E(alpha, k) tokens a sequence
 * and step; 1 for plain decoding): acceptance does not change what a step costs. */
static double projected_tps(const struct ov_run *r, double wall_s)
{
    double e = r->k ? expected_tokens(r->o->ov.alpha, r->k) : 1.0;

    return ratio(r->batch * e * (double)r->tot.steps, wall_s);
}

/* The decode steps' time had the target kept to its model: less the time its inner worker ran
 * past it. Exact for plain and serial runs (every target call is on the step's path); for an
 * overlapped run a lower bound (the first half's overrun may have hidden behind drafting). */
static double wall_at_model(const struct ov_run *r)
{
    double excess = r->tot.execute_s - r->tot.model_s;

    return r->tot.wall_s - (excess > 0 ? excess : 0.0);
}

static json_t *projected_extra(const struct ov_run *r)
{
    double steps = (double)r->tot.steps;

    return json_pack("{s:f, s:f, s:f, s:f, s:f}", "step_ms", ratio(r->tot.wall_s * 1e3, steps),
                     "step_ms_at_model", ratio(wall_at_model(r) * 1e3, steps), "projected_alpha",
                     r->o->ov.alpha, "projected_tokens_per_s", projected_tps(r, r->tot.wall_s),
                     "projected_tokens_per_s_at_model", projected_tps(r, wall_at_model(r)));
}

/* The speculative run against plain decoding and the ideal of a free draft. */
static json_t *spec_extra(const struct ov_run *r, double plain_tps)
{
    const struct duet_bench_overlap_opts *ov = &r->o->ov;
    const struct ov_totals *t = &r->tot;
    bool real = strcmp(ov->acceptance, "real") == 0;
    double alpha = real ? ratio((double)t->judged_accepted, (double)t->judged) : ov->alpha;
    double t1 = model_t(ov, r->batch), tv = model_t(ov, (double)r->batch * (r->k + 1));
    double e = expected_tokens(alpha, r->k), m = ratio((double)t->tokens, (double)t->seq_steps);

    return json_pack("{s:s, s:f, s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "acceptance",
                     ov->acceptance, "alpha", alpha, "acceptance_rate",
                     ratio((double)t->accepted, (double)t->proposed), "plain_tokens_per_s",
                     plain_tps, "spec_steps", (json_int_t)t->spec_steps, "overlap_steps",
                     (json_int_t)t->overlap_steps, "speedup", ratio(tokens_per_s(r), plain_tps),
                     "t1_ms", t1 * 1e3, "t_verify_ms", tv * 1e3, "expected_tokens_per_step", e,
                     "ideal_speedup", e * t1 / tv, "ideal_speedup_measured", m * t1 / tv);
}

static void report(const struct ov_run *r, double plain_tps, json_t *results)
{
    json_t *extra = common_extra(r), *p = projected_extra(r);

    if (extra && p)
        json_object_update(extra, p);
    json_decref(p);
    if (r->k && extra) {
        json_t *s = spec_extra(r, plain_tps);

        if (s)
            json_object_update(extra, s);
        json_decref(s);
    }
    duet__bench_report(results, &r->res, extra);
}

/* The best k of one kind of run (overlap or not) by measured or projected tokens/s. */
static void best_k(const struct ov_run *runs, int n, bool overlap, bool projected, double *speedup,
                   uint32_t *k)
{
    double plain =
        projected ? projected_tps(&runs[0], wall_at_model(&runs[0])) : tokens_per_s(&runs[0]);

    *speedup = 0;
    *k = 0;
    for (int i = 1; i < n; i++) {
        double sp = ratio(projected ? projected_tps(&runs[i], wall_at_model(&runs[i]))
                                    : tokens_per_s(&runs[i]),
                          plain);

        if (runs[i].overlap == overlap && sp > *speedup) {
            *speedup = sp;
            *k = runs[i].k;
        }
    }
}

/* The batch's summary: the best k serial and overlapped, and whether speculation pays, by the
 * measured tokens/s and by those projected at --alpha. */
static void report_summary(const struct ov_run *runs, int n, json_t *results)
{
    double sp[4];
    uint32_t k[4], batch = runs[0].batch;
    struct duet_bench_result res = {0};
    char name[64];

    for (int i = 0; i < 4; i++)
        best_k(runs, n, i & 1, i >> 1, &sp[i], &k[i]);
    snprintf(name, sizeof(name), "overlap_batch_%u_summary", batch);
    res.name = name;
    res.ns_median = runs[0].res.ns_median;
    res.ns_best = runs[0].res.ns_best;
    duet__bench_report(
        results, &res,
        json_pack("{s:i, s:f, s:i, s:f, s:i, s:f, s:b, s:f, s:i, s:f, s:i, s:f, s:b}", "batch",
                  batch, "plain_tokens_per_s", tokens_per_s(&runs[0]), "best_k_serial", k[0],
                  "best_speedup_serial", sp[0], "best_k_overlap", k[1], "best_speedup_overlap",
                  sp[1], "speculate", sp[0] > 1.0 || sp[1] > 1.0, "projected_alpha",
                  runs[0].o->ov.alpha, "projected_best_k_serial", k[2],
                  "projected_best_speedup_serial", sp[2], "projected_best_k_overlap", k[3],
                  "projected_best_speedup_overlap", sp[3], "projected_speculate",
                  sp[2] > 1.0 || sp[3] > 1.0));
}

/* ---- models, prompts, the runs ------------------------------------------------------------- */

struct ov_models {
    char draft[4200];  /* <models>/<preset>-bf16 */
    char target[4200]; /* <models>/overlap-target-v<vocab>-bf16, or the draft's with real */
    uint32_t vocab;
};

static int ov_models(const struct duet_bench_opts *o, const char *preset, struct ov_models *m)
{
    struct duet__gen_params gen = {.seed = 1, .force = true};
    struct duet__gen_params tgt = {.seed = 2, .force = true};

    if (!duet__bench_preset_desc(preset, &gen.desc)) {
        fprintf(stderr, "duet-bench: overlap: unknown preset '%s'\n", preset);
        return 1;
    }
    snprintf(m->draft, sizeof(m->draft), "%s/%s-bf16", o->worker.models, preset);
    gen.dir = m->draft;
    gen.tail_from = gen.desc.num_layers;
    if (duet__bench_ensure_model("overlap", o->worker.models, m->draft, &gen))
        return 1;
    m->vocab = gen.desc.vocab_size;
    if (strcmp(o->ov.acceptance, "real") == 0) {
        snprintf(m->target, sizeof(m->target), "%s", m->draft);
        return 0;
    }
    duet__bench_preset_desc("tiny", &tgt.desc);
    tgt.desc.vocab_size = m->vocab;
    tgt.desc.bos_token_id = gen.desc.bos_token_id;
    tgt.desc.n_eos = gen.desc.n_eos;
    memcpy(tgt.desc.eos_token_ids, gen.desc.eos_token_ids, sizeof(tgt.desc.eos_token_ids));
    tgt.tail_from = tgt.desc.num_layers;
    snprintf(m->target, sizeof(m->target), "%s/overlap-target-v%u-bf16", o->worker.models,
             m->vocab);
    tgt.dir = m->target;
    return duet__bench_ensure_model("overlap", o->worker.models, m->target, &tgt);
}

/* Deterministic prompt tokens in 3 .. vocab - 1, a different sequence per prompt. */
static int32_t *make_prompts(uint32_t n, uint32_t len, uint32_t vocab)
{
    int32_t *t = malloc((size_t)n * len * sizeof(*t));

    for (uint32_t i = 0; t && i < n * len; i++)
        t[i] = (int32_t)(3 + ((i % len) * 2654435761u + (i / len + 7) * 40503u) % (vocab - 3));
    return t;
}

static void ov_defaults(struct duet_bench_opts *o)
{
    struct duet_bench_worker_opts *w = &o->worker;
    struct duet_bench_spec_opts *so = &o->spec;

    if (!o->ov.acceptance)
        o->ov.acceptance = "synthetic";
    if (o->ov.alpha < 0)
        o->ov.alpha = 0.8;
    if (!o->ov.modelled)
        o->ov.modelled = DUET_BENCH_MODELLED;
    if (o->ov.a_s < 0)
        o->ov.a_s = DEFAULT_A_S;
    if (o->ov.b_s < 0)
        o->ov.b_s = DEFAULT_B_S;
    if (!w->n_presets)
        w->presets[w->n_presets++] = o->quick ? "tiny" : "llama-68m";
    if (!w->n_dtypes)
        w->dtypes[w->n_dtypes++] = "int4";
    if (!w->threads)
        w->threads = 1;
    for (size_t i = 0; !w->n_batches && i < 6; i++)
        w->batches[i] = default_batches[i];
    if (!w->n_batches)
        w->n_batches = o->quick ? 2 : 6;
    if (!so->n_ks && o->quick)
        so->ks[so->n_ks++] = 2;
    for (size_t i = 0; !so->n_ks && i < 7; i++)
        so->ks[i] = default_ks[i];
    if (!so->n_ks)
        so->n_ks = 7;
    if (!so->max_tokens)
        so->max_tokens = o->quick ? 8 : 64;
}

/* Plain, then every k serial and overlapped, for one batch size. */
static int ov_batch(const struct ov_run *tmpl, json_t *results)
{
    struct ov_run runs[1 + 2 * DUET_BENCH_MAX_LIST];
    int n = 1 + 2 * tmpl->o->spec.n_ks;
    double plain_tps;

    for (int i = 0; i < n; i++) {
        runs[i] = *tmpl;
        runs[i].k = i ? tmpl->o->spec.ks[(i - 1) / 2] : 0;
        runs[i].overlap = i && (i - 1) % 2 == 1;
        if (ov_one(&runs[i]))
            return 1;
    }
    plain_tps = tokens_per_s(&runs[0]);
    for (int i = 0; i < n; i++)
        report(&runs[i], plain_tps, results);
    report_summary(runs, n, results);
    return 0;
}

int duet__bench_overlap(const struct duet_bench_opts *opts, json_t *results)
{
    struct duet_bench_opts o = *opts;
    struct ov_models m = {0};
    struct ov_run tmpl = {.o = &o};
    uint32_t max_batch = 0;
    int32_t *prompts;
    int rc = 0;

    ov_defaults(&o);
    if (strcmp(o.ov.acceptance, "synthetic") != 0 && strcmp(o.ov.acceptance, "real") != 0 &&
        strcmp(o.ov.acceptance, "projected") != 0) {
        fprintf(stderr, "duet-bench: overlap: --acceptance synthetic|real|projected\n");
        return 1;
    }
    if (ov_models(&o, o.worker.presets[0], &m))
        return 1;
    for (int b = 0; b < o.worker.n_batches; b++)
        max_batch = o.worker.batches[b] > max_batch ? o.worker.batches[b] : max_batch;
    tmpl.prompt_len = o.quick ? QUICK_PROMPT_LEN : PROMPT_LEN;
    tmpl.max_tokens = o.spec.max_tokens;
    tmpl.target_dir = m.target;
    tmpl.draft_dir = m.draft;
    if (!(prompts = make_prompts(max_batch, tmpl.prompt_len, m.vocab))) {
        fprintf(stderr, "duet-bench: overlap: out of memory\n");
        return 1;
    }
    tmpl.prompts = prompts;
    for (int b = 0; b < o.worker.n_batches && !rc; b++) {
        tmpl.batch = o.worker.batches[b];
        rc = ov_batch(&tmpl, results);
    }
    free(prompts);
    return rc;
}
