/*
 * Speculative decoding benchmark (spec): decode tokens per second through the engine, without a
 * draft and with one at several k, beside what the acceptance rate and the measured step costs
 * predict.
 *
 *   1. Models, generated once into the models directory and reused: a target with a preset's
 *      shapes (llama-160m by default) whose layers from draft_layers on have their output
 *      projections scaled by tail_scale (docs/models.md: a random target whose deep layers
 *      contribute little, so that a truncated draft agrees with it as a distilled one would),
 *      and a draft derived from it: its first draft_layers layers, every tensor perturbed by
 *      draft_noise. Both in bf16 files.
 *   2. For each (dtype, batch): an engine without a speculative group (plain), then one with it
 *      for each k (speculative.num_tokens). Every round runs the fixed prompts in groups of
 *      `batch` requests, greedy, max_tokens each with ignore_eos, stepping the engine until no
 *      request is unfinished. One untimed short round warms up each engine.
 *   3. Only the decode steps are timed (a step that ran prompts only is not): tokens/s = tokens
 *      those steps emitted / their time. Each repetition runs rounds until its share of the time
 *      budget is spent (at least one); the median over repetitions is reported. The engine's
 *      metrics, read around each decode step, give the time inside the target's and the draft's
 *      execute() and the proposed and accepted draft tokens.
 *
 * The cost model (the "model" field of every result):
 *
 *   t_decode  = target execute time per plain decode step (batch sequences, 1 token each)
 *   c_draft   = draft execute time per speculative step / k / t_decode
 *   c_verify  = target execute time per speculative step (k + 1 positions) / t_decode
 *   alpha     = accepted / proposed
 *   E         = (1 - alpha^(k+1)) / (1 - alpha)           (k + 1 when alpha = 1)
 *   theoretical_speedup = E / (k * c_draft + c_verify)
 *   achieved_fraction   = (spec tokens/s / plain tokens/s) / theoretical_speedup
 *
 * t_decode and the plain tokens/s are the means of two plain runs, one before the speculative
 * ones and one after: the load of a shared machine drifts over minutes.
 *
 * E assumes every proposal is accepted independently with probability alpha, so that
 * accepted / proposed = (alpha + ... + alpha^k) / k, below alpha for k > 1: the engine's
 * acceptance rate (accepted / proposed) understates E more as k grows. The per-position
 * estimate alpha_pos = accepted / (accepted + rejected), a rejected proposal being the first one
 * refused in a step (read from each step's output), fits the model; results carry E, the
 * theoretical speed-up and the achieved fraction for both. The measured mean tokens per step M
 * is reported too, with the speed-up it allows and the fraction of that reached, which leaves the
 * acceptance model out and measures the engine's overhead alone:
 *
 *   measured_speedup_limit        = M / (k * c_draft + c_verify)
 *   achieved_fraction_of_measured = speedup / measured_speedup_limit
 *
 * The engine's own work (scheduling, verification, the speculative step's buffers) is outside
 * both workers' execute() and so counts against every achieved fraction.
 *
 * With DUET_FORCE_OVERLAP=1 in the environment the engine runs the draft on its own thread even
 * with the CPU worker as both models (docs/engine.md, "Overlap"); every speculative result then
 * carries overlap_steps, overlap_s and the draft-ahead counts of its timed steps (batch 1 drafts
 * ahead). With --threads 1 each worker uses one core, so the two fit a 2-core machine.
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
#include <unistd.h>

#ifndef DUET_BENCH_PLUGIN_DIR
#define DUET_BENCH_PLUGIN_DIR NULL /* the build tree's cpu_worker/.libs, set by bench/local.mk */
#endif

#define N_PROMPTS 4
#define PROMPT_LEN 32
#define QUICK_PROMPTS 2
#define QUICK_PROMPT_LEN 8
#define WARMUP_TOKENS 8
#define KV_SPACE "0.5" /* cache.cpu_kv_space_gib of each worker: enough for 16 sequences */

static const uint32_t default_ks[] = {1, 2, 3, 4, 6};

static const char cost_model[] =
    "t_decode = target execute() seconds per plain decode step (batch sequences, 1 token each), "
    "the mean of the plain runs before and after the speculative ones; c_draft = draft execute() "
    "seconds per speculative step / k / t_decode; c_verify = target execute() seconds per "
    "speculative step (k + 1 positions per sequence) / t_decode; alpha = accepted / proposed; "
    "E = (1 - alpha^(k+1)) / (1 - alpha); theoretical_speedup = E / (k * c_draft + c_verify); "
    "speedup = tokens_per_s / plain_tokens_per_s (the mean of the two plain runs); "
    "achieved_fraction = speedup / theoretical_speedup; the same with alpha_pos = accepted / "
    "(accepted + rejected proposals) = acceptance_per_position: "
    "theoretical_speedup_per_position, achieved_fraction_per_position; M = mean_tokens_per_step "
    "= decode tokens / (sequence, step) pairs; measured_speedup_limit = M / (k * c_draft + "
    "c_verify); achieved_fraction_of_measured = speedup / measured_speedup_limit; tokens_per_s "
    "counts the tokens of decode steps over their time (prompt-only steps excluded)";

/* Sums over the timed decode steps of one engine, from its metrics. */
struct totals {
    uint64_t steps;     /* decode steps */
    uint64_t seq_steps; /* (sequence, step) pairs that emitted tokens */
    uint64_t tokens;    /* tokens they emitted */
    uint64_t proposed, accepted;
    uint64_t judged;           /* proposals verification judged: accepted, and a rejected one */
    uint64_t judged_accepted;  /* of those, accepted (steps that finished a request left out) */
    double execute_s, draft_s; /* inside the target's, the draft's execute() */
    double overlap_s;          /* both inside execute() at once (DUET_FORCE_OVERLAP=1 or two
                                  devices: docs/engine.md, "Overlap") */
    uint64_t overlap_steps;    /* steps that ran the draft beside the target */
    uint64_t ahead_windows, ahead_kept, ahead_partial, ahead_discarded; /* draft-ahead */
};

/* One engine: plain (k = 0) or speculative with k proposals. */
struct spec_run {
    const struct duet_bench_opts *o;
    const char *target_dir, *draft_dir, *dtype;
    uint32_t batch, k, threads;
    uint32_t n_prompts, prompt_len, max_tokens;
    const int32_t *prompts; /* [n_prompts][prompt_len] */
    duet_config *cfg;
    duet_engine *e;
    struct totals tot;
    struct duet_bench_samples s; /* ns per decode token, per repetition */
    struct duet_bench_result res;
    char name[160];
};

/* What the speculative results are compared with: the plain run of the same (dtype, batch). */
struct plain_ref {
    double tokens_per_s;
    double decode_step_s; /* t_decode */
};

/* The worker settings of one section ("target" or "speculative"). */
static int config_worker(const struct spec_run *r, const char *section)
{
    return duet__bench_config_setf(r->cfg, "spec", "%s.worker=\"%s\"", section,
                                   r->o->worker.plugin) ||
           duet__bench_config_setf(r->cfg, "spec", "%s.weights=%s", section, r->dtype) ||
           duet__bench_config_setf(r->cfg, "spec", "%s.threads=%u", section, r->threads);
}

/* The engine's configuration: the plugin named as --plugin says (a name is looked up in the
 * build tree before the install directory), small KV caches, at most `batch` sequences. */
static int spec_config(struct spec_run *r)
{
    const char *dir = DUET_BENCH_PLUGIN_DIR;

    if (duet_config_create(&r->cfg) ||
        duet__bench_config_setf(r->cfg, "spec", "model=\"%s\"", r->target_dir) ||
        config_worker(r, "target") ||
        duet__bench_config_setf(r->cfg, "spec", "cache.cpu_kv_space_gib=" KV_SPACE) ||
        duet__bench_config_setf(r->cfg, "spec", "scheduler.max_num_seqs=%u", r->batch))
        return 1;
    if (dir && !strchr(r->o->worker.plugin, '/') &&
        duet__bench_config_setf(r->cfg, "spec", "plugin_dir=\"%s\"", dir))
        return 1;
    if (r->k &&
        (duet__bench_config_setf(r->cfg, "spec", "speculative.draft_model=\"%s\"", r->draft_dir) ||
         config_worker(r, "speculative") ||
         duet__bench_config_setf(r->cfg, "spec", "speculative.num_tokens=%u", r->k)))
        return 1;
    if (duet_config_validate(r->cfg)) {
        fprintf(stderr, "duet-bench: spec: %s\n", duet_config_error(r->cfg));
        return 1;
    }
    return 0;
}

static int spec_open(struct spec_run *r)
{
    char err[1024];

    if (spec_config(r))
        return 1;
    if (duet_engine_create(r->cfg, &r->e, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: spec: %s\n", err);
        return 1;
    }
    return 0;
}

static void spec_close(struct spec_run *r)
{
    duet_engine_destroy(r->e);
    duet_config_destroy(r->cfg);
    r->e = NULL;
    r->cfg = NULL;
}

/* Adds what a decode step did (the metrics after it less those before) to t. */
static void add_step(struct totals *t, const duet_engine_metrics *a, const duet_engine_metrics *b)
{
    t->steps++;
    t->seq_steps += b->decode_seq_steps - a->decode_seq_steps;
    t->tokens += b->generated_tokens - a->generated_tokens;
    t->proposed += b->proposed - a->proposed;
    t->accepted += b->accepted - a->accepted;
    t->execute_s += b->execute_s - a->execute_s;
    t->draft_s += b->draft_s - a->draft_s;
    t->overlap_s += b->overlap_s - a->overlap_s;
    t->overlap_steps += b->overlap_steps - a->overlap_steps;
    t->ahead_windows += b->ahead_windows - a->ahead_windows;
    t->ahead_kept += b->ahead_kept - a->ahead_kept;
    t->ahead_partial += b->ahead_partial - a->ahead_partial;
    t->ahead_discarded += b->ahead_discarded - a->ahead_discarded;
}

/* Proposals judged in a speculative step: a sequence that gained n tokens had n - 1 proposals
 * accepted, and one more rejected unless all k were accepted. */
static void add_judged(const struct spec_run *r, const duet_step_output *out, struct totals *t)
{
    for (uint32_t i = 0; r->k && i < out->n_requests; i++) {
        const duet_request_output *q = &out->requests[i];
        uint32_t n = q->n_ids - q->first_new;

        if (q->finish != DUET_FINISH_NONE || n == 0) /* max_tokens may have cut it short */
            continue;
        t->judged_accepted += n - 1;
        t->judged += n - 1 + (n <= r->k);
    }
}

/* Steps until every request has finished; decode steps are timed into *ns and, with t, summed. */
static int run_steps(struct spec_run *r, struct totals *t, uint64_t *ns)
{
    duet_engine_metrics before, after;
    const duet_step_output *out;

    while (duet_engine_has_unfinished(r->e)) {
        uint64_t t0, t1;

        duet_engine_metrics_get(r->e, &before);
        t0 = duet__bench_now_ns();
        if (duet_engine_step(r->e, &out)) {
            fprintf(stderr, "duet-bench: spec: step: %s\n", duet_engine_error(r->e));
            return 1;
        }
        t1 = duet__bench_now_ns();
        if (out->is_prefill || !t)
            continue;
        duet_engine_metrics_get(r->e, &after);
        add_step(t, &before, &after);
        add_judged(r, out, t);
        *ns += t1 - t0;
    }
    return 0;
}

/* One round: every prompt, `batch` requests at a time, max_tokens each. */
static int run_round(struct spec_run *r, uint32_t max_tokens, struct totals *t, uint64_t *ns)
{
    duet_request_params p;
    uint64_t id;

    duet_request_params_init(&p);
    p.n_prompt = r->prompt_len;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    for (uint32_t first = 0; first < r->n_prompts; first += r->batch) {
        for (uint32_t i = 0; i < r->batch; i++) {
            p.prompt = r->prompts + (size_t)((first + i) % r->n_prompts) * r->prompt_len;
            if (duet_engine_add_request(r->e, &p, &id)) {
                fprintf(stderr, "duet-bench: spec: %s\n", duet_engine_error(r->e));
                return 1;
            }
        }
        if (run_steps(r, t, ns))
            return 1;
    }
    return 0;
}

/* A warm-up round, then o->repeats repetitions of o->seconds / repeats each (at least a round). */
static int spec_measure(struct spec_run *r)
{
    uint64_t unused = 0;

    if (run_round(r, WARMUP_TOKENS < r->max_tokens ? WARMUP_TOKENS : r->max_tokens, NULL, &unused))
        return 1;
    for (int rep = 0; rep < r->o->repeats; rep++) {
        uint64_t end = duet__bench_now_ns() + (uint64_t)(r->o->seconds / r->o->repeats * 1e9);
        uint64_t ns = 0, tokens = r->tot.tokens;

        do {
            if (run_round(r, r->max_tokens, &r->tot, &ns))
                return 1;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&r->s, ns, r->tot.tokens - tokens);
    }
    return 0;
}

/* E(alpha, k): expected tokens per step when each proposal is accepted with probability alpha. */
static double expected_tokens(double alpha, uint32_t k)
{
    if (alpha >= 1.0 - 1e-12)
        return k + 1.0;
    return (1.0 - pow(alpha, k + 1.0)) / (1.0 - alpha);
}

static json_t *common_extra(const struct spec_run *r, const char *preset,
                            const struct duet_bench_result *res)
{
    const struct totals *t = &r->tot;

    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, "
                     "s:s}",
                     "preset", preset, "dtype", r->dtype, "mode", r->k ? "speculative" : "plain",
                     "batch", r->batch, "k", r->k, "threads", r->threads, "prompts", r->n_prompts,
                     "prompt_len", r->prompt_len, "max_tokens", r->max_tokens, "decode_steps",
                     (json_int_t)t->steps, "decode_tokens", (json_int_t)t->tokens, "tokens_per_s",
                     res->ns_median > 0 ? 1e9 / res->ns_median : 0.0, "tokens_per_s_best",
                     res->ns_best > 0 ? 1e9 / res->ns_best : 0.0, "mean_tokens_per_step",
                     t->seq_steps ? (double)t->tokens / t->seq_steps : 0.0, "target_step_ms",
                     t->steps ? t->execute_s * 1e3 / t->steps : 0.0, "model", cost_model);
}

/* The measured inputs of the cost model: alpha (both ways), the costs relative to t_decode. */
static json_t *spec_costs(const struct spec_run *r, const struct plain_ref *plain, double *cost)
{
    const struct totals *t = &r->tot;
    double steps = t->steps ? (double)t->steps : 1.0;
    double c_draft = t->draft_s / steps / r->k / plain->decode_step_s;
    double c_verify = t->execute_s / steps / plain->decode_step_s;

    *cost = r->k * c_draft + c_verify;
    return json_pack(
        "{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "draft", r->draft_dir, "proposed",
        (json_int_t)t->proposed, "accepted", (json_int_t)t->accepted, "acceptance_rate",
        t->proposed ? (double)t->accepted / t->proposed : 0.0, "acceptance_per_position",
        t->judged ? (double)t->judged_accepted / t->judged : 0.0, "plain_target_step_ms",
        plain->decode_step_s * 1e3, "draft_ms_per_token", t->draft_s * 1e3 / steps / r->k,
        "c_draft", c_draft, "c_verify", c_verify, "plain_tokens_per_s", plain->tokens_per_s);
}

/* The predictions and the fractions of them reached. */
static json_t *spec_fractions(const struct spec_run *r, const struct plain_ref *plain,
                              const struct duet_bench_result *res, double cost)
{
    const struct totals *t = &r->tot;
    double alpha = t->proposed ? (double)t->accepted / t->proposed : 0.0;
    double alpha_pos = t->judged ? (double)t->judged_accepted / t->judged : 0.0;
    double e = expected_tokens(alpha, r->k), e_pos = expected_tokens(alpha_pos, r->k);
    double m = t->seq_steps ? (double)t->tokens / t->seq_steps : 0.0;
    double speedup = 1e9 / res->ns_median / plain->tokens_per_s;

    return json_pack(
        "{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "speedup", speedup,
        "expected_tokens_per_step", e, "theoretical_speedup", e / cost, "achieved_fraction",
        speedup * cost / e, "expected_tokens_per_step_per_position", e_pos,
        "theoretical_speedup_per_position", e_pos / cost, "achieved_fraction_per_position",
        speedup * cost / e_pos, "measured_speedup_limit", m / cost, "achieved_fraction_of_measured",
        m > 0 ? speedup * cost / m : 0.0);
}

/* The overlap of the draft with the target in the timed decode steps (none unless the engine
 * runs the draft thread: DUET_FORCE_OVERLAP=1 with the CPU worker as both). */
static json_t *spec_overlap(const struct spec_run *r)
{
    const struct totals *t = &r->tot;

    return json_pack("{s:b, s:I, s:f, s:I, s:I, s:I, s:I}", "overlap", t->overlap_steps > 0,
                     "overlap_steps", (json_int_t)t->overlap_steps, "overlap_s", t->overlap_s,
                     "ahead_windows", (json_int_t)t->ahead_windows, "ahead_kept",
                     (json_int_t)t->ahead_kept, "ahead_partial", (json_int_t)t->ahead_partial,
                     "ahead_discarded", (json_int_t)t->ahead_discarded);
}

/* Adds both to extra, stealing them. */
static void merge(json_t *extra, json_t *a, json_t *b)
{
    if (extra && a)
        json_object_update(extra, a);
    if (extra && b)
        json_object_update(extra, b);
    json_decref(a);
    json_decref(b);
}

/* Runs one engine and names its result; `suffix` tells two plain runs apart. */
static int spec_one(struct spec_run *r, const char *preset, const char *suffix)
{
    int rc;

    fprintf(stderr, "duet-bench: spec: %s %s batch %u, %s k %u\n", preset, r->dtype, r->batch,
            r->k ? "speculative" : "plain", r->k);
    rc = spec_open(r) || spec_measure(r);
    spec_close(r);
    if (r->k)
        snprintf(r->name, sizeof(r->name), "%s_%s_batch_%u_spec_k%u", preset, r->dtype, r->batch,
                 r->k);
    else
        snprintf(r->name, sizeof(r->name), "%s_%s_batch_%u_plain%s", preset, r->dtype, r->batch,
                 suffix);
    duet__bench_finish(&r->s, r->name, &r->res);
    return rc;
}

static void spec_report(const struct spec_run *r, const char *preset, const struct plain_ref *plain,
                        json_t *results)
{
    json_t *extra = common_extra(r, preset, &r->res);
    double cost = 0;

    if (r->k && plain->tokens_per_s > 0 && plain->decode_step_s > 0) {
        json_t *costs = spec_costs(r, plain, &cost);

        merge(extra, costs, spec_fractions(r, plain, &r->res, cost));
    }
    if (r->k)
        merge(extra, spec_overlap(r), NULL);
    duet__bench_report(results, &r->res, extra);
}

/* ---- models, prompts, the runs ------------------------------------------------------------- */

/* Folders of the target and the draft, generated unless already there. */
struct spec_models {
    const char *preset;
    char target[4200]; /* <models>/<preset>-tail<from>x<scale>-bf16 */
    char draft[4300];  /* <target>-draft<layers>-noise<noise> */
};

static int spec_models(const struct duet_bench_opts *o, struct spec_models *m)
{
    const struct duet_bench_spec_opts *so = &o->spec;
    const char *root = o->worker.models;
    struct duet__gen_params gen = {.seed = 1, .force = true};
    struct duet__draft_params dp = {
        .num_layers = so->draft_layers, .noise = so->draft_noise, .seed = 0, .force = true};
    int exponent;

    if (!duet__bench_preset_desc(m->preset, &gen.desc)) {
        fprintf(stderr, "duet-bench: spec: unknown preset '%s' (duet-mkmodel --list, or tiny)\n",
                m->preset);
        return 1;
    }
    if (so->draft_layers > gen.desc.num_layers) {
        fprintf(stderr, "duet-bench: spec: --draft-layers %u: %s has %u layers\n", so->draft_layers,
                m->preset, gen.desc.num_layers);
        return 1;
    }
    frexp(so->tail_scale, &exponent); /* scale = 0.5 x 2^exponent */
    gen.tail_from = so->draft_layers;
    gen.tail_log2 = exponent - 1;
    snprintf(m->target, sizeof(m->target), "%s/%s-tail%ux%g-bf16", root, m->preset,
             so->draft_layers, so->tail_scale);
    snprintf(m->draft, sizeof(m->draft), "%s-draft%u-noise%g", m->target, so->draft_layers,
             so->draft_noise);
    gen.dir = m->target;
    dp.target_dir = m->target;
    dp.dir = m->draft;
    return duet__bench_ensure_model("spec", root, m->target, &gen) ||
           duet__bench_ensure_draft("spec", root, m->draft, &dp);
}

/* Deterministic prompt tokens in 3 .. vocab - 1, a different sequence per prompt. */
static int32_t *make_prompts(uint32_t n, uint32_t len, const char *dir)
{
    int32_t *t = malloc((size_t)n * len * sizeof(*t));
    duet_model *m;
    uint32_t vocab;
    char err[512];

    if (!t || duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: spec: %s\n", t ? err : "out of memory");
        free(t);
        return NULL;
    }
    vocab = duet_model_describe(m)->vocab_size;
    duet_model_destroy(m);
    for (uint32_t i = 0; i < n * len; i++)
        t[i] = (int32_t)(3 + ((i % len) * 2654435761u + (i / len + 7) * 40503u) % (vocab - 3));
    return t;
}

/* Fills in the defaults of the options left unset (--quick: the tiny model, k 2, 16 tokens). */
static void spec_defaults(struct duet_bench_opts *o)
{
    struct duet_bench_spec_opts *so = &o->spec;
    struct duet_bench_worker_opts *w = &o->worker;

    if (!so->target)
        so->target = o->quick ? "tiny" : "llama-160m";
    if (!so->draft_layers)
        so->draft_layers = 1;
    if (so->draft_noise < 0)
        so->draft_noise = 0.02;
    if (!(so->tail_scale > 0))
        so->tail_scale = 1.0 / 64;
    if (!so->max_tokens)
        so->max_tokens = o->quick ? 16 : 128;
    if (!so->n_ks && o->quick)
        so->ks[so->n_ks++] = 2;
    for (size_t i = 0; !so->n_ks && i < sizeof(default_ks) / sizeof(default_ks[0]); i++)
        so->ks[i] = default_ks[i];
    if (!so->n_ks)
        so->n_ks = (int)(sizeof(default_ks) / sizeof(default_ks[0]));
    if (!w->n_dtypes)
        w->dtypes[w->n_dtypes++] = "bf16";
    if (!w->n_batches)
        w->batches[w->n_batches++] = 1;
}

/* For one (dtype, batch): plain, every k, plain again; the speculative runs are compared with
 * the mean of the two plain ones, which bracket them in time (the load of a shared machine
 * drifts over minutes). */
static int spec_batch(const struct spec_run *tmpl, const char *preset, json_t *results)
{
    struct spec_run runs[DUET_BENCH_MAX_LIST + 2];
    int n = tmpl->o->spec.n_ks + 2;
    struct plain_ref plain = {0};
    const struct spec_run *p0 = &runs[0], *p1 = &runs[n - 1];

    for (int i = 0; i < n; i++) {
        runs[i] = *tmpl;
        runs[i].k = i == 0 || i == n - 1 ? 0 : tmpl->o->spec.ks[i - 1];
        if (spec_one(&runs[i], preset, i == n - 1 ? "_after" : ""))
            return 1;
    }
    if (p0->res.ns_median > 0 && p1->res.ns_median > 0 && p0->tot.steps && p1->tot.steps) {
        plain.tokens_per_s = (1e9 / p0->res.ns_median + 1e9 / p1->res.ns_median) / 2;
        plain.decode_step_s =
            (p0->tot.execute_s / p0->tot.steps + p1->tot.execute_s / p1->tot.steps) / 2;
    }
    for (int i = 0; i < n; i++)
        spec_report(&runs[i], preset, &plain, results);
    return 0;
}

int duet__bench_spec(const struct duet_bench_opts *opts, json_t *results)
{
    struct duet_bench_opts o = *opts;
    struct spec_models m = {0};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    struct spec_run tmpl = {.o = &o};
    int32_t *prompts;
    int rc = 0;

    spec_defaults(&o);
    m.preset = o.spec.target;
    if (spec_models(&o, &m))
        return 1;
    tmpl.n_prompts = o.quick ? QUICK_PROMPTS : N_PROMPTS;
    tmpl.prompt_len = o.quick ? QUICK_PROMPT_LEN : PROMPT_LEN;
    tmpl.max_tokens = o.spec.max_tokens;
    tmpl.threads = o.worker.threads ? o.worker.threads : (uint32_t)(cpus > 0 ? cpus : 1);
    tmpl.target_dir = m.target;
    tmpl.draft_dir = m.draft;
    if (!(prompts = make_prompts(tmpl.n_prompts, tmpl.prompt_len, m.target)))
        return 1;
    tmpl.prompts = prompts;
    for (int d = 0; d < o.worker.n_dtypes && !rc; d++)
        for (int b = 0; b < o.worker.n_batches && !rc; b++) {
            tmpl.dtype = o.worker.dtypes[d];
            tmpl.batch = o.worker.batches[b];
            rc = spec_batch(&tmpl, m.preset, results);
        }
    free(prompts);
    return rc;
}
