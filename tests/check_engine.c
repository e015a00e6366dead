/*
 * The engine (duet/duet.h) through its public API, with the CPU worker on a small generated
 * Llama (f32 file, f32 compute). The reference for greedy output is the worker alone, driven by
 * a plain loop through the plugin ABI: one prefill, then one decode per token. Engine and loop
 * must agree token for token, whatever the batch, the KV pool size (preemption by recompute or
 * by swap) or, with a draft model, the number of speculative tokens.
 *
 * The models are generated once in main() into a mkdtemp folder under $DUET_TEST_BUILDDIR (else
 * /tmp), removed at the end; the plugin comes from $DUET_TEST_CPU_WORKER (exit 77, automake's
 * SKIP, when it is not there). Workers run only inside Check's forked test processes: libgomp
 * does not survive a fork after the parent ran OpenMP.
 */
#define _GNU_SOURCE /* nftw */
#include <duet/config.h>
#include <duet/duet.h>
#include <duet/loader.h>
#include <duet/model.h>
#include <duet/plugin.h>

#include "../model/model-int.h"
#include "check_util.h"
#include "test_dirs.h"
#include "test_rng.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VOCAB 300
#define MAX_GEN 64 /* tokens a test generates per request, at most */
#define SMALL_VOCAB 24

static char tmpdir[4096];
static char target_dir[4200];
static char draft_dir[4200];
static char small_target_dir[4200]; /* SMALL_VOCAB tokens, for the statistical test */
static char small_draft_dir[4200];
static char nan_target_dir[4200];  /* the target, NaN in one embedding row */
static char nan_draft_dir[4200];   /* the draft, the same */
static char qwen_target_dir[4200]; /* Qwen3: per-head q/k norms, head_dim 32 */
static char qwen_draft_dir[4200];
static char window_target_dir[4200]; /* Qwen2 with a sliding window of WINDOW positions */
static char window_draft_dir[4200];
static const char *plugin_path;
static char err[4096];

/* ---- models -------------------------------------------------------------------------------- */

static duet_model_desc small_llama(uint32_t vocab)
{
    duet_model_desc d;

    duet__desc_defaults(&d, DUET_ARCH_LLAMA);
    d.hidden_size = 64;
    d.intermediate_size = 128;
    d.num_layers = 2;
    d.num_heads = 4;
    d.num_kv_heads = 2;
    d.head_dim = 16;
    d.vocab_size = vocab;
    d.max_position = 256;
    d.bos_token_id = 1;
    d.n_eos = 1;
    d.eos_token_ids[0] = 2;
    d.torch_dtype = DUET_DTYPE_F32;
    return d;
}

#define WINDOW 8 /* positions the window model attends to */

/* The Qwen models: Qwen3's q/k norms, or Qwen2's biases and a sliding window of WINDOW. */
static duet_model_desc small_qwen(const char *architecture)
{
    duet_model_desc d = small_llama(VOCAB);

    snprintf(d.architecture, sizeof(d.architecture), "%s", architecture);
    duet__desc_family_defaults(&d);
    d.head_dim = d.qk_norm ? 32 : 16;
    d.sliding_window = d.attention_bias ? WINDOW : 0;
    d.tie_word_embeddings = d.attention_bias;
    return d;
}

/* A target of desc in dir and its 1-layer draft in draft_dir. */
static bool pair_generate(const duet_model_desc *desc, const char *dir, const char *draft_dir_)
{
    struct duet__msg msg = {err, sizeof(err)};
    struct duet__gen_params p = {.desc = *desc, .seed = 77, .flags = DUET_MODEL_QUIET, .dir = dir};
    struct duet__draft_params dp = {.num_layers = 1,
                                    .noise = 0.05,
                                    .seed = 8,
                                    .flags = DUET_MODEL_QUIET,
                                    .target_dir = dir,
                                    .dir = draft_dir_};

    p.tail_from = 1;
    p.tail_log2 = -4; /* the draft agrees often enough to accept some proposals */
    if (duet__gen_model(&p, &msg) == DUET_STATUS_OK && duet__gen_draft(&dp, &msg) == DUET_STATUS_OK)
        return true;
    fprintf(stderr, "check_engine: generating %s: %s\n", dir, err);
    return false;
}

#define NAN_TOKEN 7 /* the token whose embedding the nan-* models poison */

/* Writes NaN over the first element of NAN_TOKEN's embedding row of the model in dir. */
static bool poison(const char *dir)
{
    duet_model *m = NULL;
    const duet_tensor *t;
    char path[4400];
    float nan = NAN;
    bool ok;
    int fd;

    if (duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err)))
        return false;
    t = duet_model_tensor(m, "model.embed_tokens.weight");
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    fd = open(path, O_WRONLY);
    ok = t && fd >= 0 &&
         pwrite(fd, &nan, 4, (off_t)(t->offset + 4 * (uint64_t)NAN_TOKEN * t->shape[1])) == 4;
    if (fd >= 0)
        close(fd);
    duet_model_destroy(m);
    return ok;
}

static bool models_generate(void)
{
    struct duet__msg msg = {err, sizeof(err)};
    struct duet__gen_params p = {
        .desc = small_llama(VOCAB), .seed = 4242, .flags = DUET_MODEL_QUIET};
    struct duet__draft_params dp = {
        .num_layers = 1, .noise = 0.05, .seed = 7, .flags = DUET_MODEL_QUIET};

    if (!duet_test_mkdtemp(tmpdir, sizeof(tmpdir), "engine-test"))
        return false;
    snprintf(target_dir, sizeof(target_dir), "%s/target", tmpdir);
    snprintf(draft_dir, sizeof(draft_dir), "%s/draft", tmpdir);
    p.dir = target_dir;
    p.tail_from = p.desc.num_layers;
    dp.target_dir = target_dir;
    dp.dir = draft_dir;
    if (duet__gen_model(&p, &msg) != DUET_STATUS_OK ||
        duet__gen_draft(&dp, &msg) != DUET_STATUS_OK) {
        fprintf(stderr, "check_engine: generating models: %s\n", err);
        return false;
    }
    /* The statistical test's pair: a vocabulary small enough to count every token, and a draft
     * far enough from the target (one layer, 30% noise) that a broken verifier shows. */
    snprintf(small_target_dir, sizeof(small_target_dir), "%s/small-target", tmpdir);
    snprintf(small_draft_dir, sizeof(small_draft_dir), "%s/small-draft", tmpdir);
    p.desc = small_llama(SMALL_VOCAB);
    p.dir = small_target_dir;
    p.seed = 99;
    dp.target_dir = small_target_dir;
    dp.dir = small_draft_dir;
    dp.noise = 0.3;
    if (duet__gen_model(&p, &msg) != DUET_STATUS_OK ||
        duet__gen_draft(&dp, &msg) != DUET_STATUS_OK) {
        fprintf(stderr, "check_engine: generating the small models: %s\n", err);
        return false;
    }
    /* Copies of the target and of the draft (same seeds, same weights) whose embedding row of
     * token NAN_TOKEN is NaN: only sequences that hold that token go wrong. */
    snprintf(nan_target_dir, sizeof(nan_target_dir), "%s/nan-target", tmpdir);
    snprintf(nan_draft_dir, sizeof(nan_draft_dir), "%s/nan-draft", tmpdir);
    p = (struct duet__gen_params){
        .desc = small_llama(VOCAB), .seed = 4242, .flags = DUET_MODEL_QUIET, .dir = nan_target_dir};
    p.tail_from = p.desc.num_layers;
    dp = (struct duet__draft_params){.num_layers = 1,
                                     .noise = 0.05,
                                     .seed = 7,
                                     .flags = DUET_MODEL_QUIET,
                                     .target_dir = target_dir,
                                     .dir = nan_draft_dir};
    if (duet__gen_model(&p, &msg) != DUET_STATUS_OK ||
        duet__gen_draft(&dp, &msg) != DUET_STATUS_OK || !poison(nan_target_dir) ||
        !poison(nan_draft_dir)) {
        fprintf(stderr, "check_engine: generating the NaN models: %s\n", err);
        return false;
    }
    snprintf(qwen_target_dir, sizeof(qwen_target_dir), "%s/qwen3", tmpdir);
    snprintf(qwen_draft_dir, sizeof(qwen_draft_dir), "%s/qwen3-draft", tmpdir);
    snprintf(window_target_dir, sizeof(window_target_dir), "%s/qwen2-window", tmpdir);
    snprintf(window_draft_dir, sizeof(window_draft_dir), "%s/qwen2-window-draft", tmpdir);
    p.desc = small_qwen("Qwen3ForCausalLM");
    if (!pair_generate(&p.desc, qwen_target_dir, qwen_draft_dir))
        return false;
    p.desc = small_qwen("Qwen2ForCausalLM");
    return pair_generate(&p.desc, window_target_dir, window_draft_dir);
}

/* ---- configuration ------------------------------------------------------------------------- */

/* A validated configuration for the target in model_dir, with extra "key=value" overrides
 * (NULL-ended). */
static duet_config *config_for(const char *model_dir, const char *const *sets)
{
    char text[16384];
    duet_config *cfg;

    snprintf(text, sizeof(text),
             "model = \"%s\";\n"
             "target: { worker = \"%s\"; dtype = \"f32\"; threads = 1; };\n"
             "cache: { block_size = 16; cpu_kv_space_gib = 0.01; swap_space_gib = 0.0; };\n"
             "scheduler: { max_model_len = 128; };\n",
             model_dir, plugin_path);
    ck_assert_int_eq(duet_config_create(&cfg), DUET_STATUS_OK);
    ck_assert_msg(duet_config_load_string(cfg, text, "check_engine.cfg") == DUET_STATUS_OK, "%s",
                  duet_config_error(cfg));
    for (int i = 0; sets && sets[i]; i++)
        ck_assert_msg(duet_config_set(cfg, sets[i]) == DUET_STATUS_OK, "%s",
                      duet_config_error(cfg));
    ck_assert_msg(duet_config_validate(cfg) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
    return cfg;
}

static duet_config *config_of(const char *const *sets)
{
    return config_for(target_dir, sets);
}

static duet_engine *engine_of(duet_config *cfg)
{
    duet_engine *e = NULL;

    ck_assert_msg(duet_engine_create(cfg, &e, err, sizeof(err)) == DUET_STATUS_OK, "%s", err);
    return e;
}

/* ---- the reference: the worker alone ---------------------------------------------------- */

/* Greedy tokens the target worker produces alone for prompt[n]: prefill, then decodes. */
static void worker_greedy(const int32_t *prompt, uint32_t n, uint32_t max_tokens, int32_t *out)
{
    duet_config *cfg = config_of(NULL);
    duet_host *host;
    duet_plugin *plugin;
    const duet_worker_plugin *t;
    duet_worker *w;
    duet_worker_params wp = {.struct_size = sizeof(wp),
                             .role = DUET_ROLE_TARGET,
                             .model_dir = target_dir,
                             .section = "target"};
    duet_cache_config cc = {.struct_size = sizeof(cc), .block_size = 16, .num_blocks = 16};
    uint32_t table[16];
    int32_t tokens[256 + MAX_GEN];

    ck_assert_int_eq(duet_host_create(cfg, DUET_LOG_ERROR, &host), DUET_STATUS_OK);
    wp.host = duet_host_services_of(host);
    ck_assert_msg(duet_plugin_load(plugin_path, NULL, wp.host, &plugin, err, sizeof(err)) == 0,
                  "%s", err);
    t = duet_plugin_table(plugin);
    ck_assert_msg(t->create(&wp, &w, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(t->init_cache(w, &cc), DUET_STATUS_OK);
    for (uint32_t i = 0; i < 16; i++)
        table[i] = 15 - i; /* another layout than the engine's, on purpose */
    memcpy(tokens, prompt, n * sizeof(int32_t));
    for (uint32_t g = 0; g < max_tokens; g++) {
        uint32_t pos = g == 0 ? 0 : n + g - 1;
        duet_seq s = {.seq_id = 1,
                      .tokens = tokens + pos,
                      .n_tokens = g == 0 ? n : 1,
                      .pos = pos,
                      .block_table = table,
                      .n_blocks = 16,
                      .n_outputs = 1,
                      .sampling = {.top_p = 1.0f}};
        duet_batch b = {.struct_size = sizeof(b), .n_seqs = 1, .seq_size = sizeof(s), .seqs = &s};
        duet_batch_output o = {.struct_size = sizeof(o), .n_rows = 1, .tokens = &out[g]};

        ck_assert_msg(t->execute(w, &b, &o) == DUET_STATUS_OK, "%s", t->last_error(w));
        tokens[n + g] = out[g];
    }
    t->destroy(w);
    duet_plugin_unload(plugin);
    duet_host_destroy(host);
    duet_config_destroy(cfg);
}

/* ---- driving the engine ------------------------------------------------------------------ */

struct run {
    uint64_t id;
    int32_t ids[MAX_GEN + 8];
    uint32_t n_ids;
    duet_finish_reason finish;
    uint32_t streamed; /* tokens seen through first_new while it ran */
    uint32_t proposed; /* the request's num_proposed */
    char error[512];   /* its error (DUET_FINISH_ERROR); "" otherwise */
};

/* One step of e, recording results by request id (runs[i].id). */
static void run_step(duet_engine *e, struct run *runs, uint32_t n)
{
    const duet_step_output *so;

    ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "%s", duet_engine_error(e));
    for (uint32_t j = 0; j < so->n_requests; j++) {
        const duet_request_output *ro = &so->requests[j];
        for (uint32_t i = 0; i < n; i++) {
            if (runs[i].id != ro->request_id)
                continue;
            ck_assert_uint_le(ro->n_ids, MAX_GEN + 8);
            ck_assert_uint_le(ro->first_new, ro->n_ids);
            runs[i].streamed += ro->n_ids - ro->first_new;
            if (ro->n_ids) /* ids may be NULL without tokens */
                memcpy(runs[i].ids, ro->ids, ro->n_ids * sizeof(int32_t));
            runs[i].n_ids = ro->n_ids;
            runs[i].finish = ro->finish;
            runs[i].proposed = ro->num_proposed;
            /* an error exactly when the request failed */
            ck_assert_int_eq(ro->error != NULL, ro->finish == DUET_FINISH_ERROR);
            if (ro->error)
                snprintf(runs[i].error, sizeof(runs[i].error), "%s", ro->error);
        }
    }
}

/* Steps e until every request finished, recording results by request id (runs[i].id). */
static void run_all(duet_engine *e, struct run *runs, uint32_t n)
{
    for (int steps = 0; duet_engine_has_unfinished(e); steps++) {
        ck_assert_int_lt(steps, 10000);
        run_step(e, runs, n);
    }
}

/* Penalties every request of add() and token_counts() gets (NULL: none); a test that sets it
 * runs in its own process (or resets it: CK_FORK=no). */
static const duet_request_params *penalties;

static void penalties_apply(duet_request_params *p)
{
    if (!penalties)
        return;
    p->presence_penalty = penalties->presence_penalty;
    p->frequency_penalty = penalties->frequency_penalty;
    p->repetition_penalty = penalties->repetition_penalty;
    p->logit_bias = penalties->logit_bias;
    p->n_logit_bias = penalties->n_logit_bias;
}

static uint64_t add(duet_engine *e, const int32_t *prompt, uint32_t n, uint32_t max_tokens,
                    bool ignore_eos)
{
    duet_request_params p;
    uint64_t id = 0;

    duet_request_params_init(&p);
    penalties_apply(&p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = max_tokens;
    p.ignore_eos = ignore_eos;
    ck_assert_msg(duet_engine_add_request(e, &p, &id) == DUET_STATUS_OK, "%s",
                  duet_engine_error(e));
    return id;
}

/* Prompt i of the tests: lengths 5, 11, 17, 30, ids in 3..VOCAB-1. */
static uint32_t prompt_of(uint32_t i, int32_t *out)
{
    static const uint32_t lens[4] = {5, 11, 17, 30};
    uint32_t n = lens[i % 4];

    for (uint32_t j = 0; j < n; j++)
        out[j] = (int32_t)(3 + (i * 37 + j * 11) % (VOCAB - 3));
    return n;
}

/* Runs n prompts (greedy, ignore_eos, max_tokens each) on an engine built with `sets` and checks
 * each against the worker alone. Returns the engine's metrics. */
#define MAX_REQUESTS 16 /* requests greedy_matches runs at most */

/* The worker's greedy tokens for prompt i (prompt_of), computed once per test process. */
static const int32_t *greedy_reference(uint32_t i, const int32_t *prompt, uint32_t n,
                                       uint32_t max_tokens)
{
    static int32_t want[MAX_REQUESTS][MAX_GEN];
    static uint32_t have[MAX_REQUESTS]; /* max_tokens computed for prompt i; 0 for none */

    if (have[i] != max_tokens) {
        worker_greedy(prompt, n, max_tokens, want[i]);
        have[i] = max_tokens;
    }
    return want[i];
}

static duet_engine_metrics greedy_matches(const char *const *sets, uint32_t n, uint32_t max_tokens)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    struct run runs[MAX_REQUESTS] = {0};
    int32_t prompts[MAX_REQUESTS][64];
    uint32_t lens[MAX_REQUESTS];
    duet_engine_metrics m;

    for (uint32_t i = 0; i < n; i++) {
        lens[i] = prompt_of(i, prompts[i]);
        runs[i].id = add(e, prompts[i], lens[i], max_tokens, true);
    }
    run_all(e, runs, n);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    ck_assert_uint_le(n, MAX_REQUESTS);
    for (uint32_t i = 0; i < n; i++) {
        const int32_t *want = greedy_reference(i, prompts[i], lens[i], max_tokens);

        ck_assert_int_eq(runs[i].finish, DUET_FINISH_LENGTH);
        ck_assert_uint_eq(runs[i].n_ids, max_tokens);
        ck_assert_uint_eq(runs[i].streamed, max_tokens);
        for (uint32_t j = 0; j < max_tokens; j++)
            ck_assert_msg(runs[i].ids[j] == want[j], "request %u token %u: engine %d, worker %d", i,
                          j, runs[i].ids[j], want[j]);
    }
    return m;
}

/* ---- tests ------------------------------------------------------------------------------- */

START_TEST(test_greedy_output_of_one_request_equals_the_worker_alone)
{
    duet_engine_metrics m = greedy_matches(NULL, 1, 24);

    ck_assert_uint_eq(m.generated_tokens, 24);
    ck_assert(m.acceptance_rate < 0);
    ck_assert(fabs(m.mean_tokens_per_step - 1.0) < 1e-9);
}
END_TEST

START_TEST(test_greedy_output_of_four_requests_equals_the_worker_alone)
{
    duet_engine_metrics m = greedy_matches(NULL, 4, 24);

    ck_assert_uint_eq(m.generated_tokens, 4 * 24);
    ck_assert_uint_eq(m.preemptions, 0);
}
END_TEST

/* 6 blocks of 16 tokens: four requests of up to 30 + 40 tokens cannot all stay resident. */
static const char *const tiny_pool_recompute[] = {"cache.cpu_kv_space_gib=0.0000458",
                                                  "scheduler.preemption=\"recompute\"", NULL};
static const char *const tiny_pool_swap[] = {"cache.cpu_kv_space_gib=0.0000458",
                                             "cache.swap_space_gib=0.001",
                                             "scheduler.preemption=\"swap\"", NULL};
/* The same for a target and a draft sharing the CPU's budget: twice the bytes, so 6 blocks when
 * the draft is the target and 8 with the 1-layer draft. */
static const char *const spec_tiny_pool_recompute[] = {"cache.cpu_kv_space_gib=0.0000916",
                                                       "scheduler.preemption=\"recompute\"", NULL};
static const char *const spec_tiny_pool_swap[] = {"cache.cpu_kv_space_gib=0.0000916",
                                                  "cache.swap_space_gib=0.002",
                                                  "scheduler.preemption=\"swap\"", NULL};

START_TEST(test_preemption_by_recompute_keeps_greedy_output)
{
    duet_engine_metrics m = greedy_matches(tiny_pool_recompute, 4, 40);

    ck_assert_uint_eq(m.num_total_blocks, 6);
    ck_assert_uint_gt(m.preemptions, 0);
}
END_TEST

START_TEST(test_preemption_by_swap_keeps_greedy_output)
{
    duet_engine_metrics m = greedy_matches(tiny_pool_swap, 4, 40);

    ck_assert_uint_gt(m.preemptions, 0);
}
END_TEST

static const char *const *spec_sets(bool self, uint32_t k, const char *const *extra);
static const char *const *spec_sets_of(const char *draft, uint32_t k, const char *const *extra);

/* max_tokens 7, a stop id at the 6th token and max_tokens 1, on an engine built with sets. */
static void stops_are_exact(const char *const *sets)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64], want[MAX_GEN];
    uint32_t n = prompt_of(1, prompt);
    struct run runs[3] = {0};
    duet_request_params p;

    worker_greedy(prompt, n, 20, want);
    runs[0].id = add(e, prompt, n, 7, true);
    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = 20;
    p.ignore_eos = true;
    p.stop_token_ids = &want[5];
    p.n_stop_token_ids = 1;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &runs[1].id), DUET_STATUS_OK);
    runs[2].id = add(e, prompt, n, 1, true);
    run_all(e, runs, 3);
    ck_assert_int_eq(runs[0].finish, DUET_FINISH_LENGTH);
    ck_assert_uint_eq(runs[0].n_ids, 7);
    ck_assert_int_eq(runs[1].finish, DUET_FINISH_STOP);
    ck_assert_int_eq(runs[2].finish, DUET_FINISH_LENGTH);
    ck_assert_uint_eq(runs[2].n_ids, 1);
    ck_assert_int_eq(runs[2].ids[0], want[0]);
    /* The stop token is kept and ends the request at its first occurrence. */
    ck_assert_int_eq(runs[1].ids[runs[1].n_ids - 1], want[5]);
    for (uint32_t j = 0; j < runs[1].n_ids; j++) {
        ck_assert_int_eq(runs[1].ids[j], want[j]);
        ck_assert(j + 1 == runs[1].n_ids || want[j] != want[5]);
    }
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_max_tokens_and_stop_ids_are_honoured_exactly)
{
    stops_are_exact(NULL);
    /* the target as its own draft accepts every proposal: with k = 3 a decode step emits tokens
     * 1-4, then 5-8, so the stop id (token 5) and max_tokens 7 fall inside accepted runs */
    stops_are_exact(spec_sets(true, 3, NULL));
}
END_TEST

/* Aborts two requests mid-generation on an engine built with sets. */
static void abort_frees_everything(const char *const *sets)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];
    uint32_t n = prompt_of(3, prompt);
    uint64_t a = add(e, prompt, n, 50, true), b = add(e, prompt, 5, 50, true);
    const duet_step_output *so;
    duet_engine_metrics m;
    bool seen_abort = false;

    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_lt(m.num_free_blocks, m.num_total_blocks);
    ck_assert_int_eq(duet_engine_abort(e, a), DUET_STATUS_OK);
    ck_assert_int_eq(duet_engine_abort(e, b), DUET_STATUS_OK);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    ck_assert(duet_engine_has_unfinished(e));
    ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
    ck_assert_uint_eq(so->n_requests, 2);
    for (uint32_t j = 0; j < so->n_requests; j++) {
        ck_assert_int_eq(so->requests[j].finish, DUET_FINISH_ABORT);
        seen_abort = true;
    }
    ck_assert(seen_abort);
    ck_assert(!duet_engine_has_unfinished(e));
    ck_assert_int_eq(duet_engine_abort(e, a), DUET_STATUS_NOT_FOUND);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_abort_mid_generation_frees_every_block)
{
    abort_frees_everything(NULL);
    abort_frees_everything(spec_sets(false, 3, NULL)); /* one block manager for both caches */
}
END_TEST

START_TEST(test_prompt_longer_than_max_model_len_is_refused_with_a_message)
{
    duet_config *cfg = config_of(NULL);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[129];
    duet_request_params p;
    uint64_t id = 0;

    for (int i = 0; i < 129; i++)
        prompt[i] = 5;
    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = 129;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(duet_engine_error(e), "max_model_len (128)") != NULL, "%s",
                  duet_engine_error(e));
    p.n_prompt = 4;
    prompt[2] = VOCAB;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(duet_engine_error(e), "outside the vocabulary") != NULL, "%s",
                  duet_engine_error(e));
    ck_assert(!duet_engine_has_unfinished(e));
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/*
 * A sequence near the position limit: max_model_len is the model's 256 positions, prompts of 250
 * and 253 tokens, max_tokens 20. Each ends with `length` at 257 tokens (vLLM's rule: a sequence
 * longer than max_model_len stops), equal to the worker alone; with a draft (k = 4, another
 * draft and the target itself, serial and overlapped) scoring never asks for a position past 255.
 */
static void position_limit_holds(const char *const *sets)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    static const uint32_t lens[2] = {250, 253};
    int32_t prompt[256], want[MAX_GEN];
    struct run runs[3] = {0};

    for (uint32_t j = 0; j < 256; j++)
        prompt[j] = (int32_t)(3 + (j * 13) % (VOCAB - 3));
    for (uint32_t i = 0; i < 2; i++)
        runs[i].id = add(e, prompt, lens[i], 20, true);
    runs[2].id = add(e, prompt, 5, 20, true); /* a short neighbour, finished by max_tokens */
    run_all(e, runs, 3);
    for (uint32_t i = 0; i < 2; i++) {
        ck_assert_int_eq(runs[i].finish, DUET_FINISH_LENGTH);
        ck_assert_uint_eq(runs[i].n_ids, 257 - lens[i]);
        worker_greedy(prompt, lens[i], runs[i].n_ids, want);
        for (uint32_t j = 0; j < runs[i].n_ids; j++)
            ck_assert_msg(runs[i].ids[j] == want[j], "prompt %u token %u: engine %d, worker %d",
                          lens[i], j, runs[i].ids[j], want[j]);
    }
    ck_assert_uint_eq(runs[2].n_ids, 20);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_sequences_at_the_position_limit_end_with_length)
{
    static const char *const at_limit[] = {"scheduler.max_model_len=256", NULL};

    position_limit_holds(at_limit);
    position_limit_holds(spec_sets(false, 4, at_limit));
    position_limit_holds(spec_sets(true, 4, at_limit));
    ck_assert_int_eq(setenv("DUET_FORCE_OVERLAP", "1", 1), 0);
    position_limit_holds(spec_sets(false, 4, at_limit));
}
END_TEST

/*
 * The KV cache against max_model_len: 6 blocks of 16 tokens hold 96 tokens, less than the
 * configured 128. The engine lowers max_model_len to what one sequence can use (96, less the
 * lookahead slots with a draft), so a prompt above it is refused at add_request and one that fits
 * ends with `length` at the limit — with and without chunked prefill, never retried forever
 * (run_all's step budget).
 */
static void kv_capacity_holds(const char *const *sets, uint32_t limit)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[128], want[MAX_GEN];
    struct run runs[2] = {0};
    duet_request_params p;
    duet_engine_metrics m;
    uint64_t id;

    for (uint32_t j = 0; j < 128; j++)
        prompt[j] = (int32_t)(3 + (j * 7) % (VOCAB - 3));
    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = limit + 1;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(duet_engine_error(e), "max_model_len") != NULL, "%s",
                  duet_engine_error(e));
    runs[0].id = add(e, prompt, limit - 10, 40, true);
    runs[1].id = add(e, prompt, 20, 10, true);
    run_all(e, runs, 2);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    ck_assert_int_eq(runs[0].finish, DUET_FINISH_LENGTH);
    ck_assert_uint_eq(runs[0].n_ids, 11);
    worker_greedy(prompt, limit - 10, 11, want);
    for (uint32_t j = 0; j < 11; j++)
        ck_assert_int_eq(runs[0].ids[j], want[j]);
    ck_assert_int_eq(runs[1].finish, DUET_FINISH_LENGTH);
    ck_assert_uint_eq(runs[1].n_ids, 10);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_max_model_len_is_lowered_to_what_the_kv_cache_holds)
{
    static const char *const plain[] = {"cache.cpu_kv_space_gib=0.0000458", NULL};
    static const char *const chunked[] = {
        "cache.cpu_kv_space_gib=0.0000458", "scheduler.chunked_prefill=true",
        "scheduler.max_num_batched_tokens=32", "scheduler.max_num_seqs=8", NULL};
    static const char *const spec_chunked[] = {
        "cache.cpu_kv_space_gib=0.0000916", "scheduler.chunked_prefill=true",
        "scheduler.max_num_batched_tokens=32", "scheduler.max_num_seqs=8", NULL};

    kv_capacity_holds(plain, 96);
    kv_capacity_holds(chunked, 96);
    kv_capacity_holds(spec_sets(true, 3, spec_chunked), 93);
}
END_TEST

/*
 * Non-finite logits fail only the request they hit. The nan-* models have NaN in the embedding of
 * NAN_TOKEN: a prompt holding it ends with DUET_FINISH_ERROR and a message naming the model that
 * failed; its neighbour, without the token, gets the clean target's greedy tokens. Plain decoding
 * on the poisoned target, speculative with the poisoned target and with the poisoned draft.
 */
static void nonfinite_fails_one_request(const char *target, const char *const *sets,
                                        const char *culprit)
{
    duet_config *cfg = config_for(target, sets);
    duet_engine *e = engine_of(cfg);
    int32_t good[64], bad[64], want[MAX_GEN];
    uint32_t n = prompt_of(0, good);
    struct run runs[2] = {0};
    duet_engine_metrics m;

    worker_greedy(good, n, 12, want);
    for (uint32_t j = 0; j < 12; j++)
        ck_assert_int_ne(want[j], NAN_TOKEN); /* else the good request would hit it too */
    memcpy(bad, good, n * sizeof(int32_t));
    bad[n - 2] = NAN_TOKEN;
    runs[0].id = add(e, bad, n, 12, true);
    runs[1].id = add(e, good, n, 12, true);
    run_all(e, runs, 2);
    ck_assert_int_eq(runs[0].finish, DUET_FINISH_ERROR);
    ck_assert_msg(strstr(runs[0].error, culprit) && strstr(runs[0].error, "non-finite"), "%s",
                  runs[0].error);
    ck_assert_int_eq(runs[1].finish, DUET_FINISH_LENGTH);
    ck_assert_uint_eq(runs[1].n_ids, 12);
    for (uint32_t j = 0; j < 12; j++)
        ck_assert_int_eq(runs[1].ids[j], want[j]);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.failed_requests, 1);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    ck_assert_str_eq(duet_finish_reason_str(DUET_FINISH_ERROR), "error");
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_nonfinite_logits_fail_only_their_request)
{
    static const char *const check[] = {"target.check_values=true", NULL};
    duet_config *cfg;
    duet_engine *e = NULL;

    nonfinite_fails_one_request(nan_target_dir, NULL, "target model");
    nonfinite_fails_one_request(nan_target_dir, spec_sets(false, 3, NULL), "target model");
    nonfinite_fails_one_request(target_dir, spec_sets_of(nan_draft_dir, 3, NULL), "draft model");
    /* target.check_values refuses the poisoned weights at load, naming the tensor. */
    cfg = config_for(nan_target_dir, check);
    ck_assert_int_eq(duet_engine_create(cfg, &e, err, sizeof(err)), DUET_STATUS_BAD_FORMAT);
    ck_assert_msg(strstr(err, "target.check_values") && strstr(err, "model.embed_tokens.weight"),
                  "%s", err);
    duet_config_destroy(cfg);
    cfg = config_for(target_dir, check);
    e = engine_of(cfg);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/* The default swap space (4 GiB) is host memory for preempted sequences; with CPU workers the KV
 * cache is host memory already, so only an explicit cache.swap_space_gib reserves it. */
START_TEST(test_cpu_only_engine_reserves_swap_only_when_asked)
{
    char text[8192];
    duet_config *cfg;
    duet_engine *e;
    duet_engine_metrics m;

    for (int explicit = 0; explicit < 2; explicit ++) {
        snprintf(text, sizeof(text),
                 "model = \"%s\";\n"
                 "target: { worker = \"%s\"; dtype = \"f32\"; threads = 1; };\n"
                 "cache: { cpu_kv_space_gib = 0.001; %s };\n",
                 target_dir, plugin_path, explicit ? "swap_space_gib = 0.001;" : "");
        ck_assert_int_eq(duet_config_create(&cfg), DUET_STATUS_OK);
        ck_assert_int_eq(duet_config_load_string(cfg, text, "swap.cfg"), DUET_STATUS_OK);
        ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
        e = engine_of(cfg);
        duet_engine_metrics_get(e, &m);
        if (explicit)
            ck_assert_uint_eq(m.num_swap_blocks, m.num_total_blocks);
        else
            ck_assert_uint_eq(m.num_swap_blocks, 0);
        duet_engine_destroy(e);
        duet_config_destroy(cfg);
    }
}
END_TEST

/* A KV budget below one block names the key to raise. */
START_TEST(test_kv_budget_below_one_block_names_the_key)
{
    static const char *const tiny[] = {"cache.cpu_kv_space_gib=0.000000001", NULL};
    duet_config *cfg = config_of(tiny);
    duet_engine *e = NULL;

    ck_assert_int_eq(duet_engine_create(cfg, &e, err, sizeof(err)), DUET_STATUS_CAPACITY);
    ck_assert_msg(strstr(err, "no KV block") && strstr(err, "raise cache.cpu_kv_space_gib"), "%s",
                  err);
    duet_config_destroy(cfg);
}
END_TEST

/* A request with spec_disabled is decoded by the target alone beside speculated ones: both give
 * the worker's greedy tokens, and only the other one has proposals. */
START_TEST(test_a_request_may_turn_speculation_off)
{
    duet_config *cfg = config_of(spec_sets(false, 3, NULL));
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64], want[MAX_GEN];
    uint32_t n = prompt_of(2, prompt);
    struct run runs[2] = {0};
    duet_request_params p;

    worker_greedy(prompt, n, 20, want);
    duet_request_params_init(&p);
    ck_assert(!p.spec_disabled);
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = 20;
    p.ignore_eos = true;
    p.spec_disabled = true;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &runs[0].id), DUET_STATUS_OK);
    runs[1].id = add(e, prompt, n, 20, true);
    run_all(e, runs, 2);
    for (uint32_t i = 0; i < 2; i++) {
        ck_assert_int_eq(runs[i].finish, DUET_FINISH_LENGTH);
        ck_assert_uint_eq(runs[i].n_ids, 20);
        for (uint32_t j = 0; j < 20; j++)
            ck_assert_int_eq(runs[i].ids[j], want[j]);
    }
    ck_assert_uint_eq(runs[0].proposed, 0);
    ck_assert_uint_gt(runs[1].proposed, 0);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_logprobs_of_greedy_tokens_rank_them_first)
{
    duet_config *cfg = config_of(NULL);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];
    uint32_t n = prompt_of(2, prompt), checked = 0;
    duet_request_params p;
    uint64_t id;

    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = 6;
    p.ignore_eos = true;
    p.sampling.n_logprobs = 3;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_OK);
    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            if (ro->finish == DUET_FINISH_NONE)
                continue;
            ck_assert_uint_eq(ro->n_logprobs, 3);
            ck_assert_uint_eq(ro->n_ids, 6);
            for (uint32_t t = 0; t < ro->n_ids; t++, checked++) {
                const duet_logprob *row = &ro->logprobs[t * 3];
                ck_assert_int_eq(row[0].token, ro->ids[t]);
                ck_assert(fabsf(row[0].logprob - ro->token_logprobs[t]) < 1e-6f);
                ck_assert(row[0].logprob <= 0 && row[0].logprob >= row[1].logprob &&
                          row[1].logprob >= row[2].logprob);
            }
        }
    }
    ck_assert_uint_eq(checked, 6);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_draft_with_another_vocabulary_is_refused)
{
    char set[4400];
    const char *sets[] = {set, NULL};
    duet_config *cfg;
    duet_engine *e = NULL;

    /* The CPU worker itself is a fine "model" path that is not a model: creation fails. */
    snprintf(set, sizeof(set), "speculative.draft_model=\"%s/nonexistent\"", tmpdir);
    cfg = config_of(sets);
    ck_assert_int_ne(duet_engine_create(cfg, &e, err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "speculative") != NULL, "%s", err);
    duet_config_destroy(cfg);
}
END_TEST

/* The engine reads the typed settings of a validated configuration (duet_config_settings); one
 * changed since its validation has none, and is refused with a message saying so. */
START_TEST(test_a_configuration_changed_after_validation_is_refused)
{
    duet_config *cfg = config_of(NULL);
    duet_engine *e = NULL;

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=32"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_engine_create(cfg, &e, err, sizeof(err)), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "duet_config_validate") != NULL, "%s", err);
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    e = engine_of(cfg);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/* Steps e until request id finishes; copies its ids, and when asked (non-NULL) its token
 * log-probabilities and its prompt log-probabilities (n_top per position). */
static void finish_one(duet_engine *e, uint64_t id, int32_t *ids, float *tok_lp, float *prompt_lp,
                       duet_logprob *prompt_top, uint32_t n_top)
{
    bool done = false;

    while (!done) {
        const duet_step_output *so;

        ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "%s", duet_engine_error(e));
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            if (ro->request_id != id || ro->finish == DUET_FINISH_NONE)
                continue;
            done = true;
            memcpy(ids, ro->ids, ro->n_ids * sizeof(int32_t));
            if (tok_lp)
                memcpy(tok_lp, ro->token_logprobs, ro->n_ids * sizeof(float));
            if (prompt_lp) {
                ck_assert_uint_eq(ro->n_prompt_logprobs, n_top);
                memcpy(prompt_lp, ro->prompt_token_logprobs, ro->n_prompt * sizeof(float));
                memcpy(prompt_top, ro->prompt_logprobs,
                       (size_t)ro->n_prompt * n_top * sizeof(duet_logprob));
            }
        }
    }
}

/* The prompt log-probabilities of A + [g0, g1] at g0 and g1 are those of decoding g0, g1 after
 * A; also when the prompt is fed in chunks. */
static void prompt_logprobs_agree(const char *const *sets)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64], gen[8];
    float tok_lp[8], plp[64];
    duet_logprob top[64 * 2];
    uint32_t n = prompt_of(2, prompt);
    duet_request_params p;
    uint64_t id;

    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = 2;
    p.ignore_eos = true;
    p.sampling.n_logprobs = 1;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_OK);
    finish_one(e, id, gen, tok_lp, NULL, NULL, 0);
    prompt[n] = gen[0];
    prompt[n + 1] = gen[1];
    p.n_prompt = n + 2;
    p.max_tokens = 1;
    p.sampling.n_logprobs = 0;
    p.sampling.n_prompt_logprobs = 2;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_OK);
    finish_one(e, id, gen + 2, NULL, plp, top, 2);
    ck_assert(isnan(plp[0]));
    ck_assert_int_eq(top[0].token, -1);
    for (uint32_t t = 1; t < n + 2; t++) {
        ck_assert_int_ge(top[t * 2].token, 0);
        ck_assert(top[t * 2].logprob <= 0 && top[t * 2].logprob >= top[t * 2 + 1].logprob);
        ck_assert(isnan(plp[t]) || plp[t] <= top[t * 2].logprob + 1e-6f);
    }
    for (uint32_t j = 0; j < 2; j++) {
        ck_assert_int_eq(top[(n + j) * 2].token, gen[j]);
        ck_assert_msg(fabsf(plp[n + j] - tok_lp[j]) < 1e-4f, "%g vs %g", (double)plp[n + j],
                      (double)tok_lp[j]);
    }
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

START_TEST(test_prompt_logprobs_agree_with_decoding)
{
    static const char *const chunked[] = {"scheduler.chunked_prefill=true",
                                          "scheduler.max_num_batched_tokens=8",
                                          "scheduler.max_num_seqs=8", NULL};

    prompt_logprobs_agree(NULL);
    prompt_logprobs_agree(chunked);
}
END_TEST

/* ---- speculative decoding ---------------------------------------------------------------- */

/* Overrides that add the draft in `draft` with k proposals, then the NULL-ended extra (may be
 * NULL). */
static const char *const *spec_sets_of(const char *draft, uint32_t k, const char *const *extra)
{
    static char model[4400], worker[4400], num[64];
    static const char *sets[12];
    int n = 0;

    snprintf(model, sizeof(model), "speculative.draft_model=\"%s\"", draft);
    snprintf(worker, sizeof(worker), "speculative.worker=\"%s\"", plugin_path);
    snprintf(num, sizeof(num), "speculative.num_tokens=%u", k);
    sets[n++] = model;
    sets[n++] = worker;
    sets[n++] = "speculative.dtype=\"f32\"";
    sets[n++] = "speculative.threads=1";
    sets[n++] = num;
    for (int i = 0; extra && extra[i] && n < 11; i++)
        sets[n++] = extra[i];
    sets[n] = NULL;
    return sets;
}

/* The same with draft_dir, or the target itself as its own draft. */
static const char *const *spec_sets(bool self, uint32_t k, const char *const *extra)
{
    return spec_sets_of(self ? target_dir : draft_dir, k, extra);
}

/* The speculative counters agree with each other. */
static void spec_metrics_consistent(const duet_engine_metrics *m)
{
    uint64_t p = 0, a = 0;

    ck_assert_uint_le(m->num_spec_tokens, DUET_MAX_SPEC_TOKENS);
    for (uint32_t j = 0; j < m->num_spec_tokens; j++) {
        p += m->proposed_at[j];
        a += m->accepted_at[j];
        ck_assert_uint_le(m->accepted_at[j], m->proposed_at[j]);
        if (j > 0) /* acceptance is causal: position j only after j - 1 */
            ck_assert_uint_le(m->accepted_at[j], m->accepted_at[j - 1]);
    }
    ck_assert_uint_eq(p, m->proposed);
    ck_assert_uint_eq(a, m->accepted);
    ck_assert_uint_eq(m->emitted, m->accepted + m->verified);
    if (m->proposed) {
        ck_assert(m->system_efficiency > 0 && m->system_efficiency <= 1.0 + 1e-12);
        ck_assert(m->mean_k >= 1.0 && m->mean_k <= m->num_spec_tokens);
    }
    ck_assert(m->idle_s >= 0 && m->verify_s <= m->execute_s + 1e-9);
    ck_assert(m->overlap_s >= 0 && m->overlap_s <= fmin(m->execute_s, m->draft_s) + 1e-6);
    ck_assert(m->execute_s + m->draft_s - m->overlap_s <= m->elapsed_s + 1e-6);
}

START_TEST(test_speculative_greedy_output_equals_plain_decoding_for_k_1_to_4)
{
    for (uint32_t k = 1; k <= 4; k++) {
        duet_engine_metrics m = greedy_matches(spec_sets(false, k, NULL), k == 2 ? 1 : 4, 24);

        ck_assert(m.speculative);
        ck_assert_uint_gt(m.proposed, 0);
        ck_assert(m.acceptance_rate >= 0 && m.acceptance_rate <= 1);
        ck_assert(m.mean_tokens_per_step >= 1.0 && m.mean_tokens_per_step <= k + 1);
    }
}
END_TEST

/* Greedy tokens of n requests (prompt_of) on an engine built with `sets`, into runs[]. */
static void engine_greedy(const char *const *sets, uint32_t n, uint32_t max_tokens,
                          struct run *runs)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];

    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = prompt_of(i, prompt);

        runs[i] = (struct run){.id = add(e, prompt, len, max_tokens, true)};
    }
    run_all(e, runs, n);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

/* engine_greedy, returning the engine's metrics. */
static duet_engine_metrics greedy_metrics_of(const char *const *sets, uint32_t n,
                                             uint32_t max_tokens, struct run *runs)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];
    duet_engine_metrics m;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = prompt_of(i, prompt);

        runs[i] = (struct run){.id = add(e, prompt, len, max_tokens, true)};
    }
    run_all(e, runs, n);
    duet_engine_metrics_get(e, &m);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    return m;
}

/*
 * Greedy tokens of n requests on the target in dir (sets as config_for takes them), stepping the
 * engine by hand to record the most device blocks in use at once (*peak).
 */
static void dir_greedy(const char *dir, const char *const *sets, uint32_t n, uint32_t max_tokens,
                       struct run *runs, uint32_t *peak)
{
    duet_config *cfg = config_for(dir, sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];
    duet_engine_metrics m;

    *peak = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = prompt_of(i, prompt);

        runs[i] = (struct run){.id = add(e, prompt, len, max_tokens, true)};
    }
    for (int steps = 0; duet_engine_has_unfinished(e); steps++) {
        ck_assert_int_lt(steps, 10000);
        run_step(e, runs, n);
        duet_engine_metrics_get(e, &m);
        if (m.num_total_blocks - m.num_free_blocks > *peak)
            *peak = m.num_total_blocks - m.num_free_blocks;
    }
    duet_engine_metrics_get(e, &m);
    /* every block back, but the null block a sliding window's tables share: the block manager
     * keeps it once it has been needed */
    ck_assert_uint_eq(m.num_free_blocks + (dir == window_target_dir), m.num_total_blocks);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

/* Qwen3 target and draft (q/k norms, head_dim apart from hidden / heads): speculative greedy
 * output equals plain decoding, k = 1 and 3, one request and four. */
START_TEST(test_speculative_greedy_output_equals_plain_with_qwen_models)
{
    for (uint32_t n = 1; n <= 4; n += 3) {
        struct run plain[4], spec[4];
        uint32_t peak;

        dir_greedy(qwen_target_dir, NULL, n, 40, plain, &peak);
        for (uint32_t k = 1; k <= 3; k += 2) {
            dir_greedy(qwen_target_dir, spec_sets_of(qwen_draft_dir, k, NULL), n, 40, spec, &peak);
            for (uint32_t i = 0; i < n; i++) {
                ck_assert_uint_eq(spec[i].n_ids, 40);
                ck_assert_mem_eq(spec[i].ids, plain[i].ids, 40 * sizeof(int32_t));
                ck_assert_uint_gt(spec[i].proposed, 0);
            }
        }
    }
}
END_TEST

/*
 * A sliding window of WINDOW positions with blocks of 4: a generation many windows long keeps
 * only the blocks of its window (the block manager frees the others and lends the null block),
 * plain and speculative alike, and the two give the same greedy tokens. Without the window the
 * same request would hold (5 + 60) / 4 = 17 blocks.
 */
START_TEST(test_sliding_window_generation_keeps_its_kv_blocks_bounded)
{
    static const char *const small_blocks[] = {"cache.block_size=4", NULL};
    const uint32_t bound = WINDOW / 4 + 2 + 2 + 1; /* window blocks, the partial block, the
                                                      lookahead of k = 3, the null block */
    struct run plain[1], spec[1];
    uint32_t peak_plain, peak_spec;

    dir_greedy(window_target_dir, small_blocks, 1, 60, plain, &peak_plain);
    dir_greedy(window_target_dir, spec_sets_of(window_draft_dir, 3, small_blocks), 1, 60, spec,
               &peak_spec);
    fprintf(stderr,
            "sliding window %u, blocks of 4, 5 + 60 tokens: at most %u blocks plain, %u "
            "speculative (17 without the window)\n",
            WINDOW, peak_plain, peak_spec);
    ck_assert_uint_le(peak_plain, bound);
    ck_assert_uint_le(peak_spec, bound);
    ck_assert_uint_eq(spec[0].n_ids, 60);
    ck_assert_mem_eq(spec[0].ids, plain[0].ids, 60 * sizeof(int32_t));
}
END_TEST

START_TEST(test_prefix_caching_with_a_sliding_window_is_refused_by_name)
{
    duet_config *cfg =
        config_for(window_target_dir, (const char *const[]){"cache.prefix_caching=true", NULL});
    duet_engine *e = NULL;

    ck_assert_int_eq(duet_engine_create(cfg, &e, err, sizeof(err)), DUET_STATUS_UNSUPPORTED);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "cache.prefix_caching") && strstr(err, "sliding window of 8"), "%s",
                  err);
    duet_config_destroy(cfg);
}
END_TEST

/* bf16 weights computed in f32 (what an AVX2-only CPU runs: prefill on the widened f32 GEMM,
 * decode and scoring on the own kernels) in target and draft: speculative greedy output equals
 * plain decoding of the same weights, one request and four. */
START_TEST(test_speculative_greedy_output_equals_plain_with_bf16_weights_computed_in_f32)
{
    static const char *const bf16_target[] = {"target.weights=\"bf16\"", NULL};
    static const char *const bf16_both[] = {"target.weights=\"bf16\"",
                                            "speculative.weights=\"bf16\"", NULL};
    static struct run plain[4], spec[4];

    for (uint32_t n = 1; n <= 4; n += 3) {
        engine_greedy(bf16_target, n, 24, plain);
        engine_greedy(spec_sets(false, 4, bf16_both), n, 24, spec);
        for (uint32_t i = 0; i < n; i++) {
            ck_assert_uint_eq(spec[i].n_ids, 24);
            ck_assert_uint_eq(plain[i].n_ids, 24);
            for (uint32_t j = 0; j < 24; j++)
                ck_assert_msg(spec[i].ids[j] == plain[i].ids[j],
                              "%u requests: request %u token %u: speculative %d, plain %d", n, i, j,
                              spec[i].ids[j], plain[i].ids[j]);
        }
    }
}
END_TEST

/* The issue's matrix: k = 1..5, batch 1 / 4 / 16, block sizes 8 / 16 (under valgrind the corners
 * only). */
START_TEST(test_speculative_greedy_output_equals_plain_for_every_k_batch_and_block_size)
{
    static const uint32_t batches[] = {1, 4, 16};
    static const char *const block8[] = {"cache.block_size=8", NULL};
    static const char *const block16[] = {"cache.block_size=16", NULL};
    bool corners_only = getenv("DUET_TEST_VALGRIND") != NULL;

    for (uint32_t k = 1; k <= 5; k++)
        for (uint32_t b = 0; b < 3; b++)
            for (uint32_t bs = 0; bs < 2; bs++) {
                duet_engine_metrics m;

                if (corners_only && ((k != 1 && k != 5) || b == 1))
                    continue;
                m = greedy_matches(spec_sets(false, k, bs ? block16 : block8), batches[b], 16);
                ck_assert_msg(m.proposed > 0, "k %u batch %u: nothing proposed", k, batches[b]);
                ck_assert(m.mean_tokens_per_step >= 1.0 && m.mean_tokens_per_step <= k + 1);
            }
}
END_TEST

/* Total KV blocks of an engine built with sets. */
static uint32_t total_blocks(const char *const *sets)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    duet_engine_metrics m;

    duet_engine_metrics_get(e, &m);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    return m.num_total_blocks;
}

START_TEST(test_a_draft_on_the_target_device_shares_its_kv_budget)
{
    uint32_t alone = total_blocks(NULL);

    /* the target as its own draft: every block costs twice the bytes */
    ck_assert_uint_gt(alone, 1);
    ck_assert_uint_eq(total_blocks(spec_sets(true, 2, NULL)), alone / 2);
}
END_TEST

START_TEST(test_the_target_as_its_own_draft_accepts_every_proposal)
{
    duet_engine_metrics m = greedy_matches(spec_sets(true, 3, NULL), 1, 24);

    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
    ck_assert(fabs(m.acceptance_rate - 1.0) < 1e-12);
    ck_assert(m.mean_tokens_per_step > 3.0);
}
END_TEST

START_TEST(test_speculative_greedy_output_survives_preemption)
{
    duet_engine_metrics m = greedy_matches(spec_sets(false, 3, spec_tiny_pool_recompute), 4, 40);

    ck_assert_uint_gt(m.preemptions, 0);
    ck_assert_uint_gt(m.proposed, 0);
    m = greedy_matches(spec_sets(true, 2, spec_tiny_pool_swap), 4, 40);
    ck_assert_uint_gt(m.preemptions, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
}
END_TEST

/* Sampled outputs (temperature 0.8, request i seeded 100 + i, ignore_eos) of n prompts. */
static void sampled_outputs(const char *const *sets, uint32_t n, uint32_t max_tokens,
                            struct run *runs, duet_engine_metrics *m)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    int32_t prompts[4][64];

    for (uint32_t i = 0; i < n; i++) {
        duet_request_params p;

        duet_request_params_init(&p);
        p.prompt = prompts[i];
        p.n_prompt = prompt_of(i, prompts[i]);
        p.max_tokens = max_tokens;
        p.ignore_eos = true;
        p.sampling.temperature = 0.8f;
        p.sampling.seed = 100 + i;
        penalties_apply(&p);
        ck_assert_int_eq(duet_engine_add_request(e, &p, &runs[i].id), DUET_STATUS_OK);
    }
    run_all(e, runs, n);
    duet_engine_metrics_get(e, m);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

/* With p = q every proposal is accepted (u < 1) and was drawn with the target's own draw, and
 * the bonus token is the target's: rejection sampling must then reproduce plain sampling. */
START_TEST(test_sampling_with_the_target_as_its_own_draft_equals_plain_sampling)
{
    struct run plain[4] = {0}, spec[4] = {0};
    duet_engine_metrics m;

    sampled_outputs(NULL, 4, 20, plain, &m);
    sampled_outputs(spec_sets(true, 3, NULL), 4, 20, spec, &m);
    ck_assert_uint_eq(m.accepted, m.proposed);
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(spec[i].n_ids, 20);
        ck_assert_uint_eq(plain[i].n_ids, 20);
        for (uint32_t j = 0; j < 20; j++)
            ck_assert_msg(spec[i].ids[j] == plain[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          spec[i].ids[j], plain[i].ids[j]);
    }
}
END_TEST

START_TEST(test_speculation_is_off_above_disable_by_batch_size)
{
    static const char *const two[] = {"speculative.disable_by_batch_size=2", NULL};
    static const char *const four[] = {"speculative.disable_by_batch_size=4", NULL};
    duet_engine_metrics m = greedy_matches(spec_sets(false, 3, two), 4, 24);

    /* Four sequences run together from the first decode to the last: never speculative. */
    ck_assert_uint_eq(m.proposed, 0);
    ck_assert_uint_eq(m.spec_steps, 0);
    ck_assert_uint_gt(m.disabled_steps, 0);
    ck_assert(m.acceptance_rate < 0);
    /* At the threshold itself speculation stays on; one request is under either. */
    m = greedy_matches(spec_sets(false, 3, four), 4, 24);
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.disabled_steps, 0);
    spec_metrics_consistent(&m);
    m = greedy_matches(spec_sets(false, 3, two), 1, 24);
    ck_assert_uint_gt(m.proposed, 0);
}
END_TEST

START_TEST(test_adaptive_k_keeps_greedy_output_and_stays_in_range)
{
    static const char *const adaptive[] = {"speculative.adaptive=true", NULL};

    for (uint32_t k = 1; k <= 5; k += 4) {
        duet_engine_metrics m = greedy_matches(spec_sets(false, k, adaptive), 4, 40);

        ck_assert(m.adaptive);
        ck_assert_uint_gt(m.proposed, 0);
        ck_assert_uint_ge(m.last_k, 1);
        ck_assert_uint_le(m.last_k, k);
        printf("check_engine: adaptive, k <= %u: mean k %.2f, last k %u, acceptance rate %.3f\n", k,
               m.mean_k, m.last_k, m.acceptance_rate);
        spec_metrics_consistent(&m);
    }
}
END_TEST

START_TEST(test_typical_acceptance_of_greedy_requests_equals_plain_decoding)
{
    static const char *const typical[] = {"speculative.acceptance=\"typical\"", NULL};
    duet_engine_metrics m = greedy_matches(spec_sets(false, 3, typical), 4, 24);
    struct run runs[4] = {0};

    ck_assert_uint_gt(m.proposed, 0);
    spec_metrics_consistent(&m);
    /* Sampled requests go through the typical rule itself. */
    sampled_outputs(spec_sets(false, 3, typical), 4, 20, runs, &m);
    ck_assert_uint_gt(m.proposed, 0);
    spec_metrics_consistent(&m);
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(runs[i].n_ids, 20);
        for (uint32_t j = 0; j < 20; j++)
            ck_assert(runs[i].ids[j] >= 0 && runs[i].ids[j] < VOCAB);
    }
}
END_TEST

/* Synthetic acceptance at rate 0 rejects every proposal and emits the target's own token at that
 * position, the one plain decoding draws: greedy and sampled outputs equal plain decoding's. */
START_TEST(test_synthetic_acceptance_at_rate_zero_emits_what_plain_decoding_does)
{
    static const char *const zero[] = {"speculative.acceptance=\"synthetic\"",
                                       "speculative.synthetic_rate=0", NULL};
    duet_engine_metrics m = greedy_matches(spec_sets(false, 3, zero), 4, 24);
    struct run plain[4] = {0}, spec[4] = {0};

    ck_assert(m.synthetic_acceptance);
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.accepted, 0);
    spec_metrics_consistent(&m);
    sampled_outputs(NULL, 4, 20, plain, &m);
    ck_assert(!m.synthetic_acceptance);
    sampled_outputs(spec_sets(false, 3, zero), 4, 20, spec, &m);
    ck_assert_uint_eq(m.accepted, 0);
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(spec[i].n_ids, 20);
        for (uint32_t j = 0; j < 20; j++)
            ck_assert_msg(spec[i].ids[j] == plain[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          spec[i].ids[j], plain[i].ids[j]);
    }
}
END_TEST

/* At rate 1 every proposal is kept: with the target as its own draft the greedy output is still
 * plain decoding's; with another draft the output is the draft's, valid tokens all the same. */
START_TEST(test_synthetic_acceptance_keeps_proposals_at_its_rate_and_emits_valid_tokens)
{
    static const char *const one[] = {"speculative.acceptance=\"synthetic\"",
                                      "speculative.synthetic_rate=1", NULL};
    static const char *const most[] = {"speculative.acceptance=\"synthetic\"",
                                       "speculative.synthetic_rate=0.8", NULL};
    duet_engine_metrics m = greedy_matches(spec_sets(true, 3, one), 4, 24);
    struct run runs[4] = {0};

    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
    sampled_outputs(spec_sets(false, 4, most), 4, 40, runs, &m);
    ck_assert(m.synthetic_acceptance);
    spec_metrics_consistent(&m);
    /* position j keeps 0.8^(j+1) of its proposals: some kept, fewer at each later position */
    ck_assert_uint_gt(m.accepted, 0);
    ck_assert_uint_lt(m.accepted, m.proposed);
    ck_assert_uint_gt(m.accepted_at[0], m.accepted_at[3]);
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(runs[i].n_ids, 40);
        for (uint32_t j = 0; j < 40; j++)
            ck_assert(runs[i].ids[j] >= 0 && runs[i].ids[j] < VOCAB);
    }
    printf("check_engine: synthetic 0.8, k 4: accepted %llu of %llu proposals, per position",
           (unsigned long long)m.accepted, (unsigned long long)m.proposed);
    for (uint32_t j = 0; j < 4; j++)
        printf(" %llu/%llu", (unsigned long long)m.accepted_at[j],
               (unsigned long long)m.proposed_at[j]);
    printf("\n");
}
END_TEST

START_TEST(test_request_output_counts_its_proposals)
{
    duet_config *cfg = config_of(spec_sets(false, 3, NULL));
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64];
    uint32_t n = prompt_of(1, prompt), proposed = 0, accepted = 0, drafts = 0;
    uint32_t at[DUET_MAX_SPEC_TOKENS] = {0};
    uint64_t id = add(e, prompt, n, 20, true);
    duet_engine_metrics m;

    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
        for (uint32_t j = 0; j < so->n_requests; j++) {
            ck_assert_uint_eq(so->requests[j].request_id, id);
            ck_assert_uint_ge(so->requests[j].num_proposed, proposed);
            ck_assert_uint_ge(so->requests[j].num_drafts, drafts);
            ck_assert_ptr_nonnull(so->requests[j].accepted_at);
            proposed = so->requests[j].num_proposed;
            accepted = so->requests[j].num_accepted;
            drafts = so->requests[j].num_drafts;
            memcpy(at, so->requests[j].accepted_at, sizeof(at));
        }
    }
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(proposed, m.proposed);
    ck_assert_uint_eq(accepted, m.accepted);
    ck_assert_uint_eq(drafts, m.verified);
    ck_assert_uint_gt(proposed, 0);
    for (uint32_t j = 0; j < DUET_MAX_SPEC_TOKENS; j++)
        ck_assert_uint_eq(at[j], m.accepted_at[j]);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/* ---- overlap (DESIGN §7.5): forced on, the CPU worker as target and draft ------------------ */

/* Threads of this process now (Check forks each test, so only the engine's count). */
static uint32_t thread_count(void)
{
    struct stat st;

    ck_assert_int_eq(stat("/proc/self/task", &st), 0);
    return (uint32_t)st.st_nlink - 2;
}

/* Also drafts ahead with full windows whatever the timings (the counts below are then exact);
 * test_draft_ahead_window_fits_or_is_off runs the default that sizes them by time. */
static void force_overlap(bool on)
{
    ck_assert_int_eq(setenv("DUET_FORCE_OVERLAP", on ? "1" : "0", 1), 0);
    ck_assert_int_eq(setenv("DUET_AHEAD_WINDOW", "full", 1), 0);
}

START_TEST(test_overlap_is_off_by_default_when_both_workers_share_a_device)
{
    duet_engine_metrics m;

    ck_assert_int_eq(unsetenv("DUET_FORCE_OVERLAP"), 0);
    m = greedy_matches(spec_sets(false, 3, NULL), 4, 8);
    ck_assert_uint_gt(m.spec_steps, 0);
    ck_assert_uint_eq(m.overlap_steps, 0);
    ck_assert(m.overlap_s == 0);
}
END_TEST

/* Two CPU workers with disjoint target.cpus / speculative.cpus are two devices, so drafting
 * overlaps verification on its own; lists that share a CPU are one device. Either way the two
 * caches share host memory: the block count is that of one device. */
START_TEST(test_disjoint_cpu_lists_make_two_devices_and_turn_overlap_on)
{
    static const char *const apart[] = {"target.cpus=\"0\"", "speculative.cpus=\"1\"", NULL};
    static const char *const shared[] = {"target.cpus=\"0-1\"", "speculative.cpus=\"1\"", NULL};
    duet_engine_metrics one, m;
    cpu_set_t set;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    if (!CPU_ISSET(0, &set) || !CPU_ISSET(1, &set)) {
        printf("check_engine: CPUs 0 and 1 are not both allowed: CPU lists not tested\n");
        return;
    }
    ck_assert_int_eq(unsetenv("DUET_FORCE_OVERLAP"), 0);
    one = greedy_matches(spec_sets(false, 3, NULL), 4, 16);
    m = greedy_matches(spec_sets(false, 3, apart), 4, 16);
    ck_assert_uint_gt(m.overlap_steps, 0);
    ck_assert_uint_eq(m.num_total_blocks, one.num_total_blocks);
    spec_metrics_consistent(&m);
    m = greedy_matches(spec_sets(false, 3, shared), 4, 16);
    ck_assert_uint_gt(m.spec_steps, 0);
    ck_assert_uint_eq(m.overlap_steps, 0);
}
END_TEST

START_TEST(test_overlapped_greedy_output_equals_plain_decoding_for_one_and_four_requests)
{
    duet_engine_metrics m;

    force_overlap(true);
    m = greedy_matches(spec_sets(false, 3, NULL), 1, 24); /* half B is always empty */
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.overlap_steps, m.ahead_windows); /* one sequence: it drafts ahead */
    spec_metrics_consistent(&m);
    m = greedy_matches(spec_sets(false, 3, NULL), 4, 24);
    ck_assert_uint_gt(m.overlap_steps, 0);
    spec_metrics_consistent(&m);
    printf("check_engine: overlap, 4 requests: %llu of %llu steps overlapped; elapsed %.6f s, "
           "target busy %.6f idle %.6f, draft busy %.6f idle %.6f, both %.6f, neither %.6f\n",
           (unsigned long long)m.overlap_steps, (unsigned long long)m.spec_steps, m.elapsed_s,
           m.execute_s, m.target_idle_s, m.draft_s, m.draft_idle_s, m.overlap_s, m.idle_s);
    m = greedy_matches(spec_sets(true, 2, NULL), 3, 24); /* odd batch, every draft accepted */
    ck_assert_uint_gt(m.overlap_steps, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
}
END_TEST

START_TEST(test_overlapped_sampling_equals_the_serial_speculative_path)
{
    struct run serial[4] = {0}, overlapped[4] = {0};
    duet_engine_metrics m;

    force_overlap(false);
    sampled_outputs(spec_sets(false, 3, NULL), 4, 20, serial, &m);
    ck_assert_uint_eq(m.overlap_steps, 0);
    force_overlap(true);
    sampled_outputs(spec_sets(false, 3, NULL), 4, 20, overlapped, &m);
    ck_assert_uint_gt(m.overlap_steps, 0);
    ck_assert_uint_lt(m.accepted, m.proposed); /* rejections happened: the draft is not p */
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(overlapped[i].n_ids, 20);
        ck_assert_uint_eq(serial[i].n_ids, 20);
        for (uint32_t j = 0; j < 20; j++)
            ck_assert_msg(overlapped[i].ids[j] == serial[i].ids[j], "request %u token %u: %d vs %d",
                          i, j, overlapped[i].ids[j], serial[i].ids[j]);
    }
}
END_TEST

START_TEST(test_overlapped_greedy_output_survives_preemption)
{
    duet_engine_metrics m;

    force_overlap(true);
    m = greedy_matches(spec_sets(false, 3, spec_tiny_pool_recompute), 4, 40);
    ck_assert_uint_gt(m.preemptions, 0);
    ck_assert_uint_gt(m.overlap_steps, 0);
    m = greedy_matches(spec_sets(true, 2, spec_tiny_pool_swap), 4, 40);
    ck_assert_uint_gt(m.preemptions, 0);
    ck_assert_uint_gt(m.overlap_steps, 0);
}
END_TEST

START_TEST(test_overlapped_abort_frees_every_block_and_destroy_joins_the_draft_thread)
{
    uint32_t before = thread_count();
    duet_config *cfg;
    duet_engine *e;
    int32_t prompt[64];
    uint32_t n = prompt_of(3, prompt);
    uint64_t id[3];
    const duet_step_output *so;
    duet_engine_metrics m;

    force_overlap(true);
    cfg = config_of(spec_sets(false, 3, NULL));
    e = engine_of(cfg);
    ck_assert_uint_eq(thread_count(), before + 1);
    for (uint32_t i = 0; i < 3; i++)
        id[i] = add(e, prompt, n - i, 50, true);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_gt(m.overlap_steps, 0);
    ck_assert_uint_lt(m.num_free_blocks, m.num_total_blocks);
    ck_assert_int_eq(duet_engine_abort(e, id[1]), DUET_STATUS_OK);
    ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
    ck_assert_int_eq(duet_engine_abort(e, id[0]), DUET_STATUS_OK);
    ck_assert_int_eq(duet_engine_abort(e, id[2]), DUET_STATUS_OK);
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
    ck_assert(!duet_engine_has_unfinished(e));
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    ck_assert_uint_eq(thread_count(), before);
}
END_TEST

/* ---- the statistical end-to-end test ------------------------------------------------------ */

#define STAT_POSITIONS 5 /* generated positions compared */

/* counts[pos][token] of n sampled requests (temperature 1, request i seeded seed0 + i, one
 * prompt) on the small model, with `sets`. */
static void token_counts(const char *const *sets, uint32_t n, uint64_t seed0,
                         uint32_t counts[STAT_POSITIONS][SMALL_VOCAB], duet_engine_metrics *m)
{
    static const int32_t prompt[] = {3, 9, 4, 17, 5, 11};
    duet_config *cfg = config_for(small_target_dir, sets);
    duet_engine *e = engine_of(cfg);

    memset(counts, 0, sizeof(uint32_t) * STAT_POSITIONS * SMALL_VOCAB);
    for (uint32_t i = 0; i < n; i++) {
        duet_request_params p;
        uint64_t id;

        duet_request_params_init(&p);
        p.prompt = prompt;
        p.n_prompt = 6;
        p.max_tokens = STAT_POSITIONS;
        p.ignore_eos = true;
        p.sampling.temperature = 1.0f;
        p.sampling.seed = seed0 + i;
        penalties_apply(&p);
        ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_OK);
    }
    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;
        ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "%s", duet_engine_error(e));
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            if (ro->finish == DUET_FINISH_NONE)
                continue;
            ck_assert_uint_eq(ro->n_ids, STAT_POSITIONS);
            for (uint32_t t = 0; t < STAT_POSITIONS; t++)
                counts[t][ro->ids[t]]++;
        }
    }
    duet_engine_metrics_get(e, m);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

/* Upper 0.001 point of chi-square with df degrees of freedom (Wilson-Hilferty; within 1% of the
 * tables for df >= 2, e.g. 16.27 at 3, 29.59 at 10, 49.73 at 23). */
static double chi2_critical_001(uint32_t df)
{
    const double z = 3.090232; /* upper 0.001 point of N(0, 1) */
    double h = 2.0 / (9.0 * df), c = 1.0 - h + z * sqrt(h);

    return df == 1 ? 10.828 : df * c * c * c;
}

/*
 * Two-sample chi-square test of homogeneity on a[] and b[] (SMALL_VOCAB counts each, equal
 * totals): categories with a pooled count below 10 (an expected count below 5 in a sample) are
 * merged into one, which is itself folded into the smallest kept category when it is still below
 * 10. Returns the statistic; *df receives the degrees of freedom.
 */
static double chi2_homogeneity(const uint32_t *a, const uint32_t *b, uint32_t *df)
{
    double na = 0, nb = 0, chi2 = 0;
    uint32_t ka[SMALL_VOCAB + 1], kb[SMALL_VOCAB + 1], c = 0, ra = 0, rb = 0;

    for (uint32_t t = 0; t < SMALL_VOCAB; t++) {
        na += a[t];
        nb += b[t];
        if (a[t] + b[t] >= 10) {
            ka[c] = a[t];
            kb[c++] = b[t];
        } else {
            ra += a[t];
            rb += b[t];
        }
    }
    if (ra + rb >= 10 || c == 0) {
        ka[c] = ra;
        kb[c++] = rb;
    } else {
        uint32_t small = 0;
        for (uint32_t j = 1; j < c; j++)
            if (ka[j] + kb[j] < ka[small] + kb[small])
                small = j;
        ka[small] += ra;
        kb[small] += rb;
    }
    for (uint32_t j = 0; j < c; j++) {
        double tot = (double)ka[j] + kb[j];
        double ea = tot * na / (na + nb), eb = tot * nb / (na + nb);
        chi2 += (ka[j] - ea) * (ka[j] - ea) / ea + (kb[j] - eb) * (kb[j] - eb) / eb;
    }
    *df = c - 1;
    return chi2;
}

/*
 * Rejection sampling keeps the target's distribution: N requests of one prompt at temperature 1
 * decoded plainly and N decoded with a draft that is not the target (k = 3), disjoint seeds so
 * that the samples are independent; at each of the first STAT_POSITIONS generated positions the
 * token counts must pass a chi-square test of homogeneity at significance 0.001. Position 0 comes
 * from the prefill in both; positions 1.. from accepted drafts, recovered and bonus tokens. With
 * a verifier that accepts everything the later positions follow the draft and fail.
 */
START_TEST(test_speculative_sampling_keeps_the_target_distribution)
{
    static const char *const batch[] = {"scheduler.max_num_seqs=256", "cache.cpu_kv_space_gib=0.05",
                                        NULL};
    static uint32_t plain[STAT_POSITIONS][SMALL_VOCAB], spec[STAT_POSITIONS][SMALL_VOCAB];
    uint32_t n = getenv("DUET_TEST_VALGRIND") ? 64 : 3000, df;
    duet_engine_metrics m;

    token_counts(batch, n, 1000, plain, &m);
    token_counts(spec_sets_of(small_draft_dir, 3, batch), n, 1000000, spec, &m);
    ck_assert_uint_gt(m.proposed, 0);
    spec_metrics_consistent(&m);
    /* A draft equal to the target would prove nothing. */
    ck_assert_msg(m.acceptance_rate < 0.9, "acceptance rate %.3f", m.acceptance_rate);
    if (n < 1000) {
        printf("check_engine: under valgrind: %u requests, chi-square test not applied\n", n);
        return;
    }
    for (uint32_t t = 0; t < STAT_POSITIONS; t++) {
        double chi2 = chi2_homogeneity(plain[t], spec[t], &df), crit;

        ck_assert_uint_ge(df, 1);
        crit = chi2_critical_001(df);
        printf("check_engine: position %u: chi2 %.2f, df %u, critical (0.001) %.2f; acceptance "
               "rate %.3f\n",
               t, chi2, df, crit, m.acceptance_rate);
        ck_assert_msg(chi2 < crit, "position %u: chi2 %.2f >= %.2f (df %u)", t, chi2, crit, df);
    }
}
END_TEST

/* ---- draft-ahead: one sequence, overlapped (docs/engine.md, "Draft-ahead") ----------------- */

/* The draft-ahead counters agree, once every request finished: every window drafted ahead was
 * kept, used in part or thrown away (the last one of a request at once). */
static void ahead_metrics_consistent(const duet_engine_metrics *m)
{
    uint64_t settled = m->ahead_kept + m->ahead_partial + m->ahead_discarded;

    ck_assert_uint_eq(settled, m->ahead_windows);
    ck_assert_uint_le(m->ahead_windows, m->overlap_steps);
    ck_assert_uint_ge(m->ahead_thrown_tokens, m->ahead_discarded);
}

static const char *const one_seq[] = {"scheduler.max_num_seqs=1", NULL};
static const char *const one_seq_adaptive[] = {"scheduler.max_num_seqs=1",
                                               "speculative.adaptive=true", NULL};

/*
 * Greedy output of a single sequence drafting ahead equals plain decoding for k = 1..4 with a
 * draft that is not the target (rejections throw windows away) and with the target as its own
 * draft (every window is kept: each step after the first proposes without waiting for the
 * draft), with adaptive k (the next k may be shorter than the window: used in part), and for
 * requests that run one after another (max_num_seqs = 1).
 */
START_TEST(test_draft_ahead_greedy_output_equals_plain_decoding)
{
    duet_engine_metrics m;

    force_overlap(true);
    for (uint32_t k = 1; k <= 4; k++) {
        m = greedy_matches(spec_sets(false, k, NULL), 1, 40);
        spec_metrics_consistent(&m);
        ahead_metrics_consistent(&m);
        ck_assert_uint_gt(m.ahead_windows, 0);
        ck_assert_uint_gt(m.ahead_discarded, 0);
        ck_assert_uint_lt(m.accepted, m.proposed);
        printf("check_engine: draft-ahead, k %u: %llu windows, %llu kept, %llu in part, %llu "
               "thrown away (%llu tokens); acceptance %.3f\n",
               k, (unsigned long long)m.ahead_windows, (unsigned long long)m.ahead_kept,
               (unsigned long long)m.ahead_partial, (unsigned long long)m.ahead_discarded,
               (unsigned long long)m.ahead_thrown_tokens, m.acceptance_rate);
    }
    m = greedy_matches(spec_sets(true, 3, NULL), 1, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_eq(m.accepted, m.proposed);
    ck_assert_uint_le(m.ahead_discarded, 1); /* the last window, past max_tokens */
    ck_assert_uint_gt(m.ahead_kept, 0);
    /* Each kept window saves the step's proposing: the draft ran once per step, not twice. */
    ck_assert_uint_eq(m.ahead_kept + 1, m.spec_steps);
    m = greedy_matches(spec_sets(false, 4, one_seq_adaptive), 3, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_windows, 0);
    m = greedy_matches(spec_sets(true, 4, one_seq_adaptive), 3, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_kept + m.ahead_partial, 0);
    m = greedy_matches(spec_sets(false, 2, one_seq), 4, 24);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_windows, 0);
}
END_TEST

/*
 * The default ahead window (DUET_AHEAD_WINDOW unset: "fit") is as long as the draft passes that
 * fit beside the target's scoring, measured as the engine runs, so how many windows there are
 * depends on the machine; greedy output still equals plain decoding and every window is
 * settled. "off" drafts nothing ahead and still overlaps nothing for one sequence.
 */
START_TEST(test_draft_ahead_window_fits_or_is_off)
{
    duet_engine_metrics m;

    force_overlap(true);
    ck_assert_int_eq(unsetenv("DUET_AHEAD_WINDOW"), 0);
    for (uint32_t k = 2; k <= 4; k += 2) {
        m = greedy_matches(spec_sets(false, k, NULL), 1, 40);
        spec_metrics_consistent(&m);
        ahead_metrics_consistent(&m);
        m = greedy_matches(spec_sets(true, k, NULL), 1, 40);
        ahead_metrics_consistent(&m);
        ck_assert_uint_eq(m.accepted, m.proposed);
        printf("check_engine: fitted ahead windows, k %u: %llu windows, %llu kept, %llu in part\n",
               k, (unsigned long long)m.ahead_windows, (unsigned long long)m.ahead_kept,
               (unsigned long long)m.ahead_partial);
    }
    ck_assert_int_eq(setenv("DUET_AHEAD_WINDOW", "off", 1), 0);
    m = greedy_matches(spec_sets(false, 3, NULL), 1, 40);
    ck_assert_uint_eq(m.ahead_windows, 0);
    ck_assert_uint_eq(m.overlap_steps, 0);
    ck_assert_int_eq(unsetenv("DUET_AHEAD_WINDOW"), 0);
}
END_TEST

/*
 * Seeded sampling of single sequences drafting ahead: with the target as its own draft every
 * window is kept and the output equals plain sampling token for token (the window's draws are
 * keyed by seed and position, as a fresh proposal's would be); with another draft the output
 * equals the serial speculative path's, and a second run repeats it.
 */
START_TEST(test_draft_ahead_sampling_equals_plain_and_serial_sampling)
{
    struct run plain[4] = {0}, self[4] = {0}, serial[4] = {0}, ahead[4] = {0}, again[4] = {0};
    duet_engine_metrics m;

    force_overlap(true);
    sampled_outputs(one_seq, 4, 30, plain, &m);
    sampled_outputs(spec_sets(true, 3, one_seq), 4, 30, self, &m);
    ck_assert_uint_eq(m.accepted, m.proposed);
    ck_assert_uint_gt(m.ahead_kept, 0);
    /* Only the last window of each request, drafted past its end. */
    ck_assert_uint_le(m.ahead_discarded, 4);
    sampled_outputs(spec_sets(false, 3, one_seq), 4, 30, ahead, &m);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_windows, 0);
    ck_assert_uint_lt(m.accepted, m.proposed);
    sampled_outputs(spec_sets(false, 3, one_seq), 4, 30, again, &m);
    force_overlap(false);
    sampled_outputs(spec_sets(false, 3, one_seq), 4, 30, serial, &m);
    ck_assert_uint_eq(m.ahead_windows, 0);
    for (uint32_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(plain[i].n_ids, 30);
        ck_assert_uint_eq(self[i].n_ids, 30);
        ck_assert_uint_eq(ahead[i].n_ids, 30);
        for (uint32_t j = 0; j < 30; j++) {
            ck_assert_msg(self[i].ids[j] == plain[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          self[i].ids[j], plain[i].ids[j]);
            ck_assert_msg(ahead[i].ids[j] == again[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          ahead[i].ids[j], again[i].ids[j]);
            ck_assert_msg(ahead[i].ids[j] == serial[i].ids[j], "request %u token %u: %d vs %d", i,
                          j, ahead[i].ids[j], serial[i].ids[j]);
        }
    }
}
END_TEST

/*
 * Batches of 2 and 3 (half A is the first sequence alone): it drafts ahead beside B's scoring,
 * and greedy output equals plain decoding, seeded output the serial speculative path's (with
 * the target as its own draft: plain sampling's).
 */
START_TEST(test_draft_ahead_in_batches_of_two_and_three_keeps_the_output)
{
    struct run plain[3] = {0}, self[3] = {0}, serial[3] = {0}, ahead[3] = {0};
    duet_engine_metrics m;

    force_overlap(true);
    m = greedy_matches(spec_sets(false, 3, NULL), 3, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_windows, 0);
    m = greedy_matches(spec_sets(true, 2, NULL), 2, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_eq(m.accepted, m.proposed);
    ck_assert_uint_gt(m.ahead_kept, 0);
    m = greedy_matches(spec_sets(true, 3, NULL), 3, 40);
    ahead_metrics_consistent(&m);
    ck_assert_uint_gt(m.ahead_kept, 0);
    sampled_outputs(NULL, 3, 30, plain, &m);
    sampled_outputs(spec_sets(true, 3, NULL), 3, 30, self, &m);
    ck_assert_uint_gt(m.ahead_kept, 0);
    sampled_outputs(spec_sets(false, 3, NULL), 3, 30, ahead, &m);
    ck_assert_uint_gt(m.ahead_windows, 0);
    ck_assert_uint_lt(m.accepted, m.proposed);
    force_overlap(false);
    sampled_outputs(spec_sets(false, 3, NULL), 3, 30, serial, &m);
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t j = 0; j < 30; j++) {
            ck_assert_msg(self[i].ids[j] == plain[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          self[i].ids[j], plain[i].ids[j]);
            ck_assert_msg(ahead[i].ids[j] == serial[i].ids[j], "request %u token %u: %d vs %d", i,
                          j, ahead[i].ids[j], serial[i].ids[j]);
        }
}
END_TEST

/* counts[pos][token] of n requests of one prompt (request i seeded seed0 + i) with the given
 * sampling settings on the small model, with `sets`. */
static void sampled_counts(const char *const *sets, uint32_t n, uint64_t seed0, float temperature,
                           int32_t top_k, float top_p, uint32_t counts[STAT_POSITIONS][SMALL_VOCAB],
                           duet_engine_metrics *m)
{
    static const int32_t prompt[] = {3, 9, 4, 17, 5, 11};
    duet_config *cfg = config_for(small_target_dir, sets);
    duet_engine *e = engine_of(cfg);

    memset(counts, 0, sizeof(uint32_t) * STAT_POSITIONS * SMALL_VOCAB);
    for (uint32_t i = 0; i < n; i++) {
        duet_request_params p;
        uint64_t id;

        duet_request_params_init(&p);
        p.prompt = prompt;
        p.n_prompt = 6;
        p.max_tokens = STAT_POSITIONS;
        p.ignore_eos = true;
        p.sampling.temperature = temperature;
        p.sampling.top_k = top_k;
        p.sampling.top_p = top_p;
        p.sampling.seed = seed0 + i;
        ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_OK);
    }
    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;
        ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "%s", duet_engine_error(e));
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            if (ro->finish == DUET_FINISH_NONE)
                continue;
            ck_assert_uint_eq(ro->n_ids, STAT_POSITIONS);
            for (uint32_t t = 0; t < STAT_POSITIONS; t++)
                counts[t][ro->ids[t]]++;
        }
    }
    duet_engine_metrics_get(e, m);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}

/*
 * Draft-ahead keeps the target's distribution: as test_speculative_sampling_keeps_the_target_
 * distribution, with one sequence at a time (max_num_seqs = 1) drafting ahead, k = 1 and 2, at
 * temperature 1 and at temperature 0.7 with top-k 12 and top-p 0.9. With k = 1 positions 3 and 4
 * come from kept windows whenever the first proposal and the bonus guess were right (the test
 * requires hundreds of such windows).
 */
START_TEST(test_draft_ahead_sampling_keeps_the_target_distribution)
{
    static const char *const batch[] = {"scheduler.max_num_seqs=256", "cache.cpu_kv_space_gib=0.05",
                                        NULL};
    static const char *const alone[] = {"scheduler.max_num_seqs=1", "cache.cpu_kv_space_gib=0.05",
                                        NULL};
    static const struct {
        float temperature, top_p;
        int32_t top_k;
        uint32_t k;
    } cfgs[] = {{1.0f, 1.0f, 0, 1}, {1.0f, 1.0f, 0, 2}, {0.7f, 0.9f, 12, 1}};
    static uint32_t plain[STAT_POSITIONS][SMALL_VOCAB], spec[STAT_POSITIONS][SMALL_VOCAB];
    uint32_t n = getenv("DUET_TEST_VALGRIND") ? 64 : 3000, df;
    duet_engine_metrics m;

    force_overlap(true);
    for (uint32_t c = 0; c < sizeof(cfgs) / sizeof(cfgs[0]); c++) {
        sampled_counts(batch, n, 1000 + 10000000ull * c, cfgs[c].temperature, cfgs[c].top_k,
                       cfgs[c].top_p, plain, &m);
        sampled_counts(spec_sets_of(small_draft_dir, cfgs[c].k, alone), n,
                       5000000 + 10000000ull * c, cfgs[c].temperature, cfgs[c].top_k, cfgs[c].top_p,
                       spec, &m);
        spec_metrics_consistent(&m);
        ahead_metrics_consistent(&m);
        ck_assert_msg(m.acceptance_rate < 0.9, "acceptance rate %.3f", m.acceptance_rate);
        printf("check_engine: draft-ahead distribution, T %.1f top-k %d top-p %.1f k %u: %llu "
               "windows, %llu kept, %llu thrown away; acceptance %.3f\n",
               cfgs[c].temperature, cfgs[c].top_k, cfgs[c].top_p, cfgs[c].k,
               (unsigned long long)m.ahead_windows, (unsigned long long)m.ahead_kept,
               (unsigned long long)m.ahead_discarded, m.acceptance_rate);
        if (n < 1000)
            continue;
        ck_assert_uint_gt(m.ahead_kept, cfgs[c].k == 1 ? 300 : 50);
        for (uint32_t t = 0; t < STAT_POSITIONS; t++) {
            double chi2 = chi2_homogeneity(plain[t], spec[t], &df), crit;

            ck_assert_uint_ge(df, 1);
            crit = chi2_critical_001(df);
            printf("check_engine: position %u: chi2 %.2f, df %u, critical (0.001) %.2f\n", t, chi2,
                   df, crit);
            ck_assert_msg(chi2 < crit, "config %u position %u: chi2 %.2f >= %.2f (df %u)", c, t,
                          chi2, crit, df);
        }
    }
}
END_TEST

/* A prefill step's draft feed runs beside the target's on the draft thread, and greedy output
 * stays the worker's alone, chunked prefill and preemption included. */
START_TEST(test_overlapped_prefill_keeps_greedy_output)
{
    static const char *const chunked[] = {"scheduler.chunked_prefill=true",
                                          "scheduler.max_num_batched_tokens=8",
                                          "scheduler.max_num_seqs=4", NULL};
    duet_engine_metrics m;

    force_overlap(true);
    m = greedy_matches(spec_sets(false, 3, chunked), 4, 24);
    ck_assert_uint_gt(m.overlap_prefill_steps, 0);
    m = greedy_matches(spec_sets(false, 3, spec_tiny_pool_recompute), 4, 40);
    ck_assert_uint_gt(m.preemptions, 0);
    ck_assert_uint_gt(m.overlap_prefill_steps, 0);
    force_overlap(false);
    m = greedy_matches(spec_sets(false, 3, NULL), 2, 8);
    ck_assert_uint_eq(m.overlap_prefill_steps, 0);
}
END_TEST

/* ---- penalties and logit bias --------------------------------------------------------------- */

/* Strong settings, so that a row that miscounts changes the output: the largest presence and
 * frequency penalties vLLM allows, repetition 1.5, and a bias on two tokens. */
static const duet_token_bias strong_bias[] = {{.token = 4, .bias = 1.5f}, {.token = 9, .bias = -3}};
static const duet_request_params strong = {.presence_penalty = 2.0f,
                                           .frequency_penalty = 2.0f,
                                           .repetition_penalty = 1.5f,
                                           .logit_bias = strong_bias,
                                           .n_logit_bias = 2};

/*
 * Greedy speculative output equals plain decoding with penalties on, for k = 1..4 and a draft
 * that is not the target: the target's scored row j must count the drafts x1..xj as generated
 * tokens (a row that ignored them would pick another argmax where a draft repeats). The
 * penalties must change the output (else the comparison proves nothing), and with the target as
 * its own draft every proposal is accepted: the draft's rows are penalised exactly as the
 * target's, its own earlier drafts counted.
 */
START_TEST(test_speculative_greedy_output_with_penalties_equals_plain_decoding)
{
    static struct run plain[4], spec[4], none[4];
    bool changed = false;
    duet_engine_metrics m;

    engine_greedy(NULL, 4, 24, none);
    penalties = &strong;
    engine_greedy(NULL, 4, 24, plain);
    for (uint32_t i = 0; i < 4; i++)
        changed = changed || memcmp(none[i].ids, plain[i].ids, 24 * sizeof(int32_t));
    ck_assert_msg(changed, "the penalties did not change any greedy output");
    for (uint32_t k = 1; k <= 4; k++) {
        engine_greedy(spec_sets(false, k, NULL), 4, 24, spec);
        for (uint32_t i = 0; i < 4; i++) {
            ck_assert_uint_eq(spec[i].n_ids, 24);
            for (uint32_t j = 0; j < 24; j++)
                ck_assert_msg(spec[i].ids[j] == plain[i].ids[j],
                              "k %u request %u token %u: speculative %d, plain %d", k, i, j,
                              spec[i].ids[j], plain[i].ids[j]);
        }
    }
    m = greedy_metrics_of(spec_sets(true, 3, NULL), 2, 24, spec);
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
    for (uint32_t i = 0; i < 2; i++)
        ck_assert(!memcmp(spec[i].ids, plain[i].ids, 24 * sizeof(int32_t)));
    penalties = NULL;
}
END_TEST

/*
 * Sampling (temperature 0.8) with the target as its own draft and penalties on: the draft's row
 * at every drafting step must be the target's row at that position (p = q), so every proposal
 * is accepted and the output is plain sampling's. A draft that penalised its rows differently
 * (not counting the tokens it drafted before a step, say) still samples exactly — rejection
 * sampling is exact for any proposal that reports its distribution — but is caught here by its
 * rejections.
 */
START_TEST(test_sampling_with_penalties_and_the_target_as_its_own_draft_accepts_everything)
{
    static struct run plain[4], spec[4];
    duet_engine_metrics m;

    penalties = &strong;
    sampled_outputs(NULL, 4, 40, plain, &m);
    sampled_outputs(spec_sets(true, 4, NULL), 4, 40, spec, &m);
    penalties = NULL;
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_msg(m.accepted == m.proposed, "accepted %llu of %llu", (unsigned long long)m.accepted,
                  (unsigned long long)m.proposed);
    for (uint32_t i = 0; i < 4; i++)
        for (uint32_t j = 0; j < 40; j++)
            ck_assert_msg(spec[i].ids[j] == plain[i].ids[j], "request %u token %u: %d vs %d", i, j,
                          spec[i].ids[j], plain[i].ids[j]);
}
END_TEST

/* A logit_bias of +100 forces its token at every position, plain and speculative, even against
 * the penalties its repetition earns. */
START_TEST(test_a_logit_bias_of_100_forces_its_token)
{
    static const duet_token_bias force[] = {{.token = 77, .bias = 100.0f}};
    static const duet_request_params forced = {.frequency_penalty = 0.5f,
                                               .repetition_penalty = 1.3f,
                                               .logit_bias = force,
                                               .n_logit_bias = 1};
    static struct run runs[2];

    penalties = &forced;
    for (uint32_t k = 0; k <= 2; k += 2) {
        engine_greedy(k ? spec_sets(false, k, NULL) : NULL, 2, 20, runs);
        for (uint32_t i = 0; i < 2; i++)
            for (uint32_t j = 0; j < 20; j++)
                ck_assert_int_eq(runs[i].ids[j], 77);
    }
    penalties = NULL;
}
END_TEST

/* Out-of-range penalties are refused with a message, as vLLM refuses them. */
START_TEST(test_penalties_out_of_range_are_refused)
{
    static const int32_t prompt[] = {3, 4, 5};
    duet_token_bias twice[] = {{5, 1.0f}, {5, 2.0f}}, outside[] = {{VOCAB, 1.0f}},
                    big[] = {{5, 100.5f}};
    duet_config *cfg = config_of(NULL);
    duet_engine *e = engine_of(cfg);

    for (int c = 0; c < 7; c++) {
        duet_request_params p;
        uint64_t id;

        duet_request_params_init(&p);
        p.prompt = prompt;
        p.n_prompt = 3;
        p.presence_penalty = c == 0 ? 2.5f : 0.0f;
        p.frequency_penalty = c == 1 ? -2.01f : 0.0f;
        p.repetition_penalty = c == 2 ? 0.0f : c == 3 ? NAN : 1.0f;
        p.logit_bias = c == 4 ? twice : c == 5 ? outside : big;
        p.n_logit_bias = c == 4 ? 2 : c >= 5 ? 1 : 0;
        ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(duet_engine_error(e), c < 4 ? "penalt" : "logit_bias"));
    }
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/*
 * With penalties on, speculative sampling (a draft that is not the target, k = 3) still gives the
 * target's distribution: the chi-square test of homogeneity of
 * test_speculative_sampling_keeps_the_target_distribution, plain with penalties against
 * speculative with penalties. Positions 1.. come from scored rows that count the drafts before
 * them, so a target row that ignored them, or a draft row that did not report the distribution
 * its token was drawn from, fails here. The penalties are strong enough that plain sampling with
 * and without them differ detectably (the same test fails between those two).
 */
START_TEST(test_speculative_sampling_with_penalties_keeps_the_target_distribution)
{
    static const char *const batch[] = {"scheduler.max_num_seqs=256", "cache.cpu_kv_space_gib=0.05",
                                        NULL};
    static uint32_t none[STAT_POSITIONS][SMALL_VOCAB], plain[STAT_POSITIONS][SMALL_VOCAB],
        spec[STAT_POSITIONS][SMALL_VOCAB];
    uint32_t n = getenv("DUET_TEST_VALGRIND") ? 64 : 3000, df;
    double worst = 0;
    duet_engine_metrics m;

    token_counts(batch, n, 5000, none, &m);
    penalties = &strong;
    token_counts(batch, n, 1000, plain, &m);
    token_counts(spec_sets_of(small_draft_dir, 3, batch), n, 1000000, spec, &m);
    penalties = NULL;
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_msg(m.acceptance_rate < 0.9, "acceptance rate %.3f", m.acceptance_rate);
    if (n < 1000) {
        printf("check_engine: under valgrind: %u requests, chi-square test not applied\n", n);
        return;
    }
    for (uint32_t t = 0; t < STAT_POSITIONS; t++) {
        double chi2 = chi2_homogeneity(plain[t], spec[t], &df), crit = chi2_critical_001(df);
        double off = chi2_homogeneity(none[t], plain[t], &df) / chi2_critical_001(df);

        printf("check_engine: penalties, position %u: chi2 %.2f, df %u, critical (0.001) %.2f; "
               "without penalties %.1f x critical\n",
               t, chi2, df, crit, off);
        ck_assert_msg(chi2 < crit, "position %u: chi2 %.2f >= %.2f", t, chi2, crit);
        worst = off > worst ? off : worst;
    }
    ck_assert_msg(worst > 1.0, "penalties made no detectable difference (%.2f)", worst);
}
END_TEST

/* ---- the random soak ------------------------------------------------------------------------ */

#define SOAK_POOL 12    /* prompts the soak draws from (half share a 16-token prefix) */
#define SOAK_REF 40     /* greedy tokens known for each */
#define SOAK_CONFIGS 80 /* random configurations (fewer under valgrind) */
#define SOAK_REQS 10    /* requests per configuration, at most */
#define SOAK_STEPS 3000 /* steps a configuration may take: a hang fails here, not on a clock */

static uint32_t rnd(uint64_t *st, uint32_t n)
{
    return (uint32_t)(duet_test_rng_next(st) % n);
}

/* One random engine: plain or speculative (another draft or the target itself, k 1..4, serial or
 * overlapped), preemption by recompute or swap, prefix caching, chunked prefill, block size 8
 * or 16, and a KV cache of a few blocks, so that requests preempt each other. */
static const char *const *soak_config(uint64_t *st, char *desc, size_t desc_size)
{
    static char kv[96], bs[64], swap[64];
    static const char *sets[16];
    uint32_t block = rnd(st, 2) ? 16 : 8, blocks = 3 + rnd(st, 10), n = 0, k = 1 + rnd(st, 4);
    bool spec = rnd(st, 3) != 0, self = spec && rnd(st, 3) == 0, swapping = rnd(st, 2);
    bool caching = rnd(st, 2), chunked = rnd(st, 2), overlap = spec && rnd(st, 2);
    double bytes = (double)blocks * block * (512.0 + (spec ? (self ? 512.0 : 256.0) : 0.0)) + 64;

    snprintf(kv, sizeof(kv), "cache.cpu_kv_space_gib=%.12f", bytes / 1073741824.0);
    snprintf(bs, sizeof(bs), "cache.block_size=%u", block);
    snprintf(swap, sizeof(swap), "cache.swap_space_gib=%.12f", 4 * bytes / 1073741824.0);
    sets[n++] = kv;
    sets[n++] = bs;
    sets[n++] = swapping ? "scheduler.preemption=\"swap\"" : "scheduler.preemption=\"recompute\"";
    if (swapping)
        sets[n++] = swap;
    sets[n++] = caching ? "cache.prefix_caching=true" : "cache.prefix_caching=false";
    if (chunked) {
        sets[n++] = "scheduler.chunked_prefill=true";
        sets[n++] = "scheduler.max_num_seqs=8";
        sets[n++] = "scheduler.max_num_batched_tokens=32";
    }
    sets[n] = NULL;
    ck_assert_int_eq(setenv("DUET_FORCE_OVERLAP", overlap ? "1" : "0", 1), 0);
    snprintf(desc, desc_size, "%s%s k %u, %u blocks of %u, %s, caching %d, chunked %d, overlap %d",
             spec ? "speculative" : "plain", self ? " (self-draft)" : "", spec ? k : 0, blocks,
             block, swapping ? "swap" : "recompute", caching, chunked, overlap);
    return spec ? spec_sets_of(self ? target_dir : draft_dir, k, sets) : sets;
}

/*
 * The soak: random engines (soak_config) each serve up to SOAK_REQS requests drawn from a pool
 * of prompts, with random max_tokens, arriving at random steps, one of them aborted at a random
 * step. Every request must be reported finished exactly once: with `length` and the greedy
 * tokens the worker alone gives its prompt (max_tokens of them, or up to max_model_len), or
 * with `abort` and a prefix of them; a prompt longer than the max_model_len the KV cache allows
 * is refused at add_request. Every block is free at the end, within SOAK_STEPS steps.
 */
START_TEST(test_random_engines_finish_every_request_once_with_its_solo_tokens)
{
    static int32_t pool[SOAK_POOL][48], ref[SOAK_POOL][SOAK_REF];
    static uint32_t pool_len[SOAK_POOL];
    uint64_t st = 20261207;
    uint32_t configs = getenv("DUET_TEST_VALGRIND") ? 3 : SOAK_CONFIGS;

    for (uint32_t i = 0; i < SOAK_POOL; i++) {
        pool_len[i] = 3 + rnd(&st, 38);
        for (uint32_t j = 0; j < pool_len[i]; j++)
            pool[i][j] = (int32_t)(i % 2 && j < 16 ? 100 + j : 3 + rnd(&st, VOCAB - 3));
        worker_greedy(pool[i], pool_len[i], SOAK_REF, ref[i]);
    }
    for (uint32_t c = 0; c < configs; c++) {
        char desc[256];
        duet_config *cfg = config_of(soak_config(&st, desc, sizeof(desc)));
        duet_engine *e = engine_of(cfg);
        uint32_t n = 2 + rnd(&st, SOAK_REQS - 1), which[SOAK_REQS], max_tokens[SOAK_REQS];
        uint32_t arrive[SOAK_REQS], seen[SOAK_REQS] = {0}, added = 0, abort_at = rnd(&st, 40);
        uint32_t victim = rnd(&st, n);
        uint64_t ids[SOAK_REQS] = {0};
        struct run runs[SOAK_REQS] = {0};
        duet_engine_metrics m;
        uint32_t limit, steps = 0;

        duet_engine_metrics_get(e, &m);
        limit = m.max_model_len;
        for (uint32_t i = 0; i < n; i++) {
            which[i] = rnd(&st, SOAK_POOL);
            max_tokens[i] = 1 + rnd(&st, 24);
            arrive[i] = i == 0 ? 0 : rnd(&st, 30);
        }
        while (added < n || duet_engine_has_unfinished(e)) {
            const duet_step_output *so;

            ck_assert_msg(steps < SOAK_STEPS, "config %u (%s): no end after %u steps", c, desc,
                          steps);
            for (uint32_t i = 0; i < n; i++)
                if (!ids[i] && arrive[i] <= steps && pool_len[which[i]] > limit) {
                    /* Longer than what the KV cache holds: refused, with the reason. */
                    duet_request_params p;

                    duet_request_params_init(&p);
                    p.prompt = pool[which[i]];
                    p.n_prompt = pool_len[which[i]];
                    ck_assert_int_eq(duet_engine_add_request(e, &p, &ids[i]),
                                     DUET_STATUS_INVALID_ARGUMENT);
                    ck_assert_ptr_nonnull(strstr(duet_engine_error(e), "max_model_len"));
                    ids[i] = UINT64_MAX;
                    seen[i] = 1;
                    runs[i].finish = DUET_FINISH_IGNORED;
                    added++;
                } else if (!ids[i] && arrive[i] <= steps) {
                    ids[i] = add(e, pool[which[i]], pool_len[which[i]], max_tokens[i], true);
                    runs[i].id = ids[i];
                    added++;
                }
            if (steps == abort_at && ids[victim] && !seen[victim] && ids[victim] != UINT64_MAX)
                ck_assert_int_eq(duet_engine_abort(e, ids[victim]), DUET_STATUS_OK);
            ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "config %u (%s): %s", c, desc,
                          duet_engine_error(e));
            steps++;
            for (uint32_t j = 0; j < so->n_requests; j++) {
                const duet_request_output *ro = &so->requests[j];

                for (uint32_t i = 0; i < n; i++) {
                    if (ids[i] != ro->request_id)
                        continue;
                    ck_assert_msg(!seen[i], "config %u (%s): request %u reported after it finished",
                                  c, desc, i);
                    ck_assert_uint_le(ro->n_ids, SOAK_REF);
                    if (ro->n_ids) /* ids may be NULL without tokens */
                        memcpy(runs[i].ids, ro->ids, ro->n_ids * sizeof(int32_t));
                    runs[i].n_ids = ro->n_ids;
                    runs[i].finish = ro->finish;
                    seen[i] += ro->finish != DUET_FINISH_NONE;
                }
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t want = max_tokens[i], room = limit + 1 - pool_len[which[i]];

            want = want < room ? want : room;
            ck_assert_msg(seen[i] == 1, "config %u (%s): request %u finished %u times", c, desc, i,
                          seen[i]);
            if (runs[i].finish == DUET_FINISH_IGNORED) /* refused at add_request */
                ck_assert_uint_gt(pool_len[which[i]], limit);
            else if (runs[i].finish == DUET_FINISH_ABORT)
                ck_assert_msg(i == victim && runs[i].n_ids <= want, "config %u (%s): request %u", c,
                              desc, i);
            else
                ck_assert_msg(runs[i].finish == DUET_FINISH_LENGTH && runs[i].n_ids == want,
                              "config %u (%s): request %u: %s with %u tokens, want length with %u",
                              c, desc, i, duet_finish_reason_str(runs[i].finish), runs[i].n_ids,
                              want);
            for (uint32_t j = 0; j < runs[i].n_ids; j++)
                ck_assert_msg(runs[i].ids[j] == ref[which[i]][j],
                              "config %u (%s): request %u token %u: %d, alone %d", c, desc, i, j,
                              runs[i].ids[j], ref[which[i]][j]);
        }
        duet_engine_metrics_get(e, &m);
        ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
        printf("check_engine: soak %u: %s: %u requests, %u steps, %llu preemptions\n", c, desc, n,
               steps, (unsigned long long)m.preemptions);
        duet_engine_destroy(e);
        duet_config_destroy(cfg);
    }
}
END_TEST

/* ---- n > 1: one prompt, several sequences ------------------------------------------------- */

#define MAX_N 4

/* The sequences of one request (prompt 1, max_tokens group_max_tokens, ignore_eos) with n sequences
 * at temperature temp and seed, on an engine built with sets; checks the output's shape, that every
 * block is free after, and returns the engine's metrics. */
static uint32_t group_max_tokens = 16; /* group_run's max_tokens */

static duet_engine_metrics group_run(const char *const *sets, uint32_t n, float temp, uint64_t seed,
                                     int32_t out[MAX_N][MAX_GEN], bool companion)
{
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    duet_request_params p;
    duet_engine_metrics m;
    int32_t prompt[64], companion_prompt[64];
    uint32_t streamed[MAX_N] = {0}, n_ids[MAX_N] = {0};
    uint64_t id;
    bool finished = false;

    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = prompt_of(1, prompt);
    p.max_tokens = group_max_tokens;
    p.ignore_eos = true;
    p.n = n;
    p.sampling.temperature = temp;
    p.sampling.seed = seed;
    ck_assert_msg(duet_engine_add_request(e, &p, &id) == DUET_STATUS_OK, "%s",
                  duet_engine_error(e));
    if (companion) /* prompt 3 beside it: competition for the blocks */
        add(e, companion_prompt, prompt_of(3, companion_prompt), 16, true);
    for (int steps = 0; duet_engine_has_unfinished(e); steps++) {
        const duet_step_output *so;

        ck_assert_int_lt(steps, 1000);
        ck_assert_msg(duet_engine_step(e, &so) == DUET_STATUS_OK, "%s", duet_engine_error(e));
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];

            if (ro->request_id != id)
                continue;
            ck_assert_uint_eq(ro->n_outputs, n);
            ck_assert_uint_eq(ro->n_ids, ro->outputs[0].n_ids);
            for (uint32_t i = 0; i < n; i++) {
                const duet_completion_output *c = &ro->outputs[i];
                ck_assert_uint_eq(c->index, i);
                ck_assert_uint_le(c->first_new, c->n_ids);
                ck_assert_uint_le(c->n_ids, group_max_tokens);
                streamed[i] += c->n_ids - c->first_new;
                if (c->n_ids)
                    memcpy(out[i], c->ids, c->n_ids * sizeof(int32_t));
                n_ids[i] = c->n_ids;
                ck_assert_int_eq(c->finish, ro->finish == DUET_FINISH_NONE ? DUET_FINISH_NONE
                                                                           : DUET_FINISH_LENGTH);
            }
            finished = ro->finish != DUET_FINISH_NONE;
        }
    }
    ck_assert(finished);
    for (uint32_t i = 0; i < n; i++) {
        ck_assert_uint_eq(n_ids[i], group_max_tokens);
        ck_assert_uint_eq(streamed[i], group_max_tokens);
    }
    duet_engine_metrics_get(e, &m);
    ck_assert_uint_eq(m.num_free_blocks, m.num_total_blocks);
    ck_assert_uint_eq(m.generated_tokens, group_max_tokens * (n + companion));
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    return m;
}

static duet_engine_metrics group_outputs(const char *const *sets, uint32_t n, float temp,
                                         uint64_t seed, int32_t out[MAX_N][MAX_GEN])
{
    return group_run(sets, n, temp, seed, out, false);
}

START_TEST(test_greedy_sequences_of_one_prompt_all_equal_the_worker_alone)
{
    int32_t out[MAX_N][MAX_GEN], prompt[64];
    uint32_t len = prompt_of(1, prompt);
    const int32_t *want = greedy_reference(1, prompt, len, 16);

    group_outputs(NULL, 3, 0.0f, 0, out);
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t j = 0; j < 16; j++)
            ck_assert_msg(out[i][j] == want[j], "sequence %u token %u: %d, worker %d", i, j,
                          out[i][j], want[j]);
}
END_TEST

/* Sequence i of a request seeded s draws as a request of n = 1 seeded s + i. */
START_TEST(test_seeded_sequences_are_reproducible_differ_and_draw_as_seed_plus_index)
{
    int32_t a[MAX_N][MAX_GEN], b[MAX_N][MAX_GEN], solo[MAX_N][MAX_GEN];
    uint32_t differ = 0;

    group_outputs(NULL, 4, 0.8f, 7, a);
    group_outputs(NULL, 4, 0.8f, 7, b);
    for (uint32_t i = 0; i < 4; i++) {
        group_outputs(NULL, 1, 0.8f, 7 + i, &solo[i]);
        ck_assert_mem_eq(a[i], b[i], 16 * sizeof(int32_t));
        ck_assert_mem_eq(a[i], solo[i], 16 * sizeof(int32_t));
        for (uint32_t j = 0; j < i; j++)
            differ += memcmp(a[i], a[j], 16 * sizeof(int32_t)) != 0;
    }
    ck_assert_uint_eq(differ, 6);
}
END_TEST

/* Sampled sequences of one request end at different steps under speculation: a sequence that
 * reached max_tokens while its siblings run never shows the tokens its last verification
 * accepted past the limit (group_run checks every step's output). */
START_TEST(test_speculative_sampled_sequences_never_show_tokens_past_max_tokens)
{
    int32_t out[MAX_N][MAX_GEN];

    group_max_tokens = 8;
    for (uint64_t seed = 1; seed <= 6; seed++)
        group_outputs(spec_sets(false, 3, NULL), 3, 1.0f, seed, out);
    group_max_tokens = 16;
}
END_TEST

/* duet.h's flat access: a request built field by field runs as the same request given as a
 * struct, and every output field and array read by name equals the struct's. */
START_TEST(test_flat_access_equals_the_structs)
{
    duet_config *cfg = config_of(spec_sets(false, 3, NULL));
    duet_engine *e = engine_of(cfg);
    int32_t prompt[64], stop = 7, bias_id = 5;
    float bias = -2.0f;
    uint32_t n = prompt_of(2, prompt), steps = 0;
    duet_request *rq;
    uint64_t id_flat, id_struct;
    duet_request_params p;
    int32_t got[2][MAX_GEN];
    uint32_t n_got[2] = {0, 0};
    int64_t v;
    double d;

    ck_assert_int_eq(duet_request_create(&rq), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_tokens(rq, "prompt", prompt, n), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_tokens(rq, "stop_token_ids", &stop, 1), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_logit_bias(rq, &bias_id, &bias, 1), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_int(rq, "max_tokens", 12), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_int(rq, "logprobs", 2), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_int(rq, "prompt_logprobs", 1), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_int(rq, "seed", 9), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_float(rq, "temperature", 0.7), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_float(rq, "top_p", 0.9), DUET_STATUS_OK);
    ck_assert_int_eq(duet_request_set_int(rq, "nonsense", 1), DUET_STATUS_NOT_FOUND);
    ck_assert_int_eq(duet_request_set_int(rq, "max_tokens", -1), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_engine_add(e, rq, &id_flat), DUET_STATUS_OK);
    duet_request_destroy(rq);

    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = n;
    p.stop_token_ids = &stop;
    p.n_stop_token_ids = 1;
    p.logit_bias = &(duet_token_bias){.token = bias_id, .bias = bias};
    p.n_logit_bias = 1;
    p.max_tokens = 12;
    p.sampling.n_logprobs = 2;
    p.sampling.n_prompt_logprobs = 1;
    p.sampling.seed = 9;
    p.sampling.temperature = 0.7f;
    p.sampling.top_p = 0.9f;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id_struct), DUET_STATUS_OK);

    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;

        ck_assert_uint_lt(steps++, 200);
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
        ck_assert_uint_eq(duet_step_output_count(so), so->n_requests);
        ck_assert_ptr_null(duet_step_output_request(so, so->n_requests));
        for (uint32_t i = 0; i < so->n_requests; i++) {
            const duet_request_output *r = duet_step_output_request(so, i);
            const duet_completion_output *o = &r->outputs[0];
            uint32_t k = r->request_id == id_flat ? 0 : 1, nl = r->n_logprobs;
            int32_t ids[MAX_GEN], top_ids[MAX_GEN * 2];
            float lps[MAX_GEN], top_lps[MAX_GEN * 2];

            ck_assert_ptr_eq(r, &so->requests[i]);
            ck_assert_int_eq(duet_request_output_int(r, "request_id", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, (int64_t)r->request_id);
            ck_assert_int_eq(duet_request_output_int(r, "finish", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, r->finish);
            ck_assert_int_eq(duet_request_output_int(r, "num_proposed", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, r->num_proposed);
            ck_assert_int_eq(duet_request_output_int(r, "logprobs", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, 2);
            ck_assert_int_eq(duet_request_output_int(r, "bogus", &v), DUET_STATUS_NOT_FOUND);
            ck_assert_int_eq(duet_request_output_seq_int(r, 0, "n_ids", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, o->n_ids);
            ck_assert_int_eq(duet_request_output_seq_int(r, 0, "first_new", &v), DUET_STATUS_OK);
            ck_assert_int_eq(v, o->first_new);
            ck_assert_int_eq(duet_request_output_seq_int(r, 1, "n_ids", &v),
                             DUET_STATUS_INVALID_ARGUMENT);
            ck_assert_int_eq(
                duet_request_output_tokens(r, 0, 0, o->n_ids, ids, lps, top_ids, top_lps),
                DUET_STATUS_OK);
            ck_assert_int_eq(duet_request_output_tokens(r, 0, 1, o->n_ids, ids, NULL, NULL, NULL),
                             DUET_STATUS_INVALID_ARGUMENT);
            for (uint32_t t = 0; t < o->n_ids; t++) {
                ck_assert_int_eq(ids[t], o->ids[t]);
                ck_assert_mem_eq(&lps[t], &o->token_logprobs[t], sizeof(float)); /* NAN too */
                for (uint32_t j = 0; j < nl; j++) {
                    ck_assert_int_eq(top_ids[t * nl + j], o->logprobs[t * nl + j].token);
                    ck_assert_mem_eq(&top_lps[t * nl + j], &o->logprobs[t * nl + j].logprob,
                                     sizeof(float));
                }
            }
            if (o->n_ids)
                memcpy(got[k], o->ids, o->n_ids * sizeof(int32_t));
            n_got[k] = o->n_ids;
            if (r->finish != DUET_FINISH_NONE) {
                float plp[64];
                int32_t ptop[64];
                uint32_t acc[DUET_MAX_SPEC_TOKENS];

                ck_assert_int_eq(duet_request_output_prompt_logprobs(r, plp, ptop, NULL),
                                 DUET_STATUS_OK);
                for (uint32_t t = 1; t < r->n_prompt; t++) {
                    ck_assert(plp[t] == r->prompt_token_logprobs[t] ||
                              (isnan(plp[t]) && isnan(r->prompt_token_logprobs[t])));
                    ck_assert_int_eq(ptop[t], r->prompt_logprobs[t].token);
                }
                ck_assert_uint_eq(duet_request_output_accepted_at(r, acc, 4), 4);
                for (uint32_t j = 0; j < 4; j++)
                    ck_assert_uint_eq(acc[j], r->accepted_at[j]);
                ck_assert_ptr_eq(duet_request_output_error(r), r->error);
            }
        }
    }
    ck_assert_uint_eq(n_got[0], n_got[1]);
    ck_assert_mem_eq(got[0], got[1], n_got[0] * sizeof(int32_t));
    ck_assert_int_eq(duet_engine_metric(e, "generated_tokens", &d), DUET_STATUS_OK);
    ck_assert(d == (double)(n_got[0] + n_got[1]));
    ck_assert_int_eq(duet_engine_metric(e, "speculative", &d), DUET_STATUS_OK);
    ck_assert(d == 1.0);
    ck_assert_int_eq(duet_engine_metric(e, "nope", &d), DUET_STATUS_NOT_FOUND);
    for (size_t i = 0; duet_engine_metric_name(i); i++)
        ck_assert_int_eq(duet_engine_metric(e, duet_engine_metric_name(i), &d), DUET_STATUS_OK);
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/* Each sequence of a forked group is drafted and verified on its own: greedy output equals the
 * worker's, and with the target as its own draft sampled output equals plain sampling. */
START_TEST(test_speculative_sequences_of_one_prompt_equal_plain_decoding)
{
    int32_t out[MAX_N][MAX_GEN], plain[MAX_N][MAX_GEN], prompt[64];
    uint32_t len = prompt_of(1, prompt);
    const int32_t *want = greedy_reference(1, prompt, len, 16);
    duet_engine_metrics m = group_outputs(spec_sets(false, 3, NULL), 3, 0.0f, 0, out);

    ck_assert_uint_gt(m.proposed, 0);
    spec_metrics_consistent(&m);
    for (uint32_t i = 0; i < 3; i++)
        ck_assert_mem_eq(out[i], want, 16 * sizeof(int32_t));
    group_outputs(NULL, 4, 0.8f, 11, plain);
    m = group_outputs(spec_sets(true, 3, NULL), 4, 0.8f, 11, out);
    ck_assert_uint_gt(m.proposed, 0);
    ck_assert_uint_eq(m.accepted, m.proposed);
    for (uint32_t i = 0; i < 4; i++)
        ck_assert_mem_eq(out[i], plain[i], 16 * sizeof(int32_t));
}
END_TEST

/* A forked group preempted (swap or recompute of every sequence) keeps its greedy output. */
START_TEST(test_sequences_of_one_prompt_survive_preemption)
{
    static const char *const sets[][3] = {
        {"cache.cpu_kv_space_gib=0.0000763", "scheduler.preemption=\"recompute\"", NULL},
        {"cache.cpu_kv_space_gib=0.0000763", "cache.swap_space_gib=0.001", NULL},
    };
    int32_t out[MAX_N][MAX_GEN], prompt[64];
    uint32_t len = prompt_of(1, prompt);
    const int32_t *want = greedy_reference(1, prompt, len, 16);

    for (uint32_t c = 0; c < 2; c++) {
        duet_engine_metrics m = group_run(sets[c], 4, 0.0f, 0, out, true);

        ck_assert_uint_gt(m.preemptions, 0);
        for (uint32_t i = 0; i < 4; i++)
            ck_assert_mem_eq(out[i], want, 16 * sizeof(int32_t));
    }
}
END_TEST

START_TEST(test_n_and_priority_are_checked)
{
    duet_config *cfg = config_of(NULL);
    duet_engine *e = engine_of(cfg);
    duet_request_params p;
    int32_t prompt[64];
    uint64_t id;

    duet_request_params_init(&p);
    ck_assert_uint_eq(p.n, 1);
    p.prompt = prompt;
    p.n_prompt = prompt_of(0, prompt);
    p.n = 0;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(duet_engine_error(e), "n is 0"));
    p.n = 257; /* scheduler.max_num_seqs is 256 */
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    p.n = 1;
    p.priority = 3;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &id), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(duet_engine_error(e), "scheduler.policy"));
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
}
END_TEST

/* Two requests, one sequence a step: the second (priority 0) finishes first under the priority
 * policy, which preempts the first (priority 5); first come, first served otherwise. */
static uint64_t first_finished(const char *policy, int32_t prio_a, int32_t prio_b,
                               uint32_t *preempted_a)
{
    const char *sets[] = {"scheduler.max_num_seqs=1", policy, NULL};
    duet_config *cfg = config_of(sets);
    duet_engine *e = engine_of(cfg);
    duet_request_params p;
    int32_t prompt[64];
    uint64_t ids[2], first = 0;

    duet_request_params_init(&p);
    p.prompt = prompt;
    p.n_prompt = prompt_of(2, prompt);
    p.max_tokens = 12;
    p.ignore_eos = true;
    p.priority = prio_a;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &ids[0]), DUET_STATUS_OK);
    p.priority = prio_b;
    ck_assert_int_eq(duet_engine_add_request(e, &p, &ids[1]), DUET_STATUS_OK);
    while (duet_engine_has_unfinished(e)) {
        const duet_step_output *so;
        ck_assert_int_eq(duet_engine_step(e, &so), DUET_STATUS_OK);
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            if (ro->finish == DUET_FINISH_NONE)
                continue;
            ck_assert_int_eq(ro->finish, DUET_FINISH_LENGTH);
            if (!first)
                first = ro->request_id;
            if (ro->request_id == ids[0])
                *preempted_a = ro->num_preemptions;
        }
    }
    duet_engine_destroy(e);
    duet_config_destroy(cfg);
    return first == ids[0] ? 0 : 1;
}

START_TEST(test_a_more_important_request_runs_first_under_the_priority_policy)
{
    uint32_t pre = 0;

    ck_assert_uint_eq(first_finished("scheduler.policy=\"priority\"", 5, 0, &pre), 1);
    ck_assert_uint_gt(pre, 0);
    ck_assert_uint_eq(first_finished("scheduler.policy=\"priority\"", 0, 5, &pre), 0);
    ck_assert_uint_eq(pre, 0);
    ck_assert_uint_eq(first_finished("scheduler.policy=\"fcfs\"", 0, 0, &pre), 0);
}
END_TEST

/* Every case starts with DUET_FORCE_OVERLAP and DUET_AHEAD_WINDOW unset: with CK_FORK=no
 * (valgrind) the cases share one process, and a setting one case made would otherwise change the
 * next one's engines (overlap reserves 2k lookahead slots). */
static void overlap_env_reset(void)
{
    ck_assert_int_eq(unsetenv("DUET_FORCE_OVERLAP"), 0);
    ck_assert_int_eq(unsetenv("DUET_AHEAD_WINDOW"), 0);
}

static Suite *engine_suite(void)
{
    Suite *s = suite_create("engine");
    const struct duet_test_case cases[] = {
        {"greedy", test_greedy_output_of_one_request_equals_the_worker_alone},
        {"batch", test_greedy_output_of_four_requests_equals_the_worker_alone},
        {"recompute", test_preemption_by_recompute_keeps_greedy_output},
        {"swap", test_preemption_by_swap_keeps_greedy_output},
        {"limits", test_max_tokens_and_stop_ids_are_honoured_exactly},
        {"abort", test_abort_mid_generation_frees_every_block},
        {"refusal", test_prompt_longer_than_max_model_len_is_refused_with_a_message},
        {"position-limit", test_sequences_at_the_position_limit_end_with_length},
        {"kv-capacity", test_max_model_len_is_lowered_to_what_the_kv_cache_holds},
        {"nonfinite", test_nonfinite_logits_fail_only_their_request},
        {"cpu swap", test_cpu_only_engine_reserves_swap_only_when_asked},
        {"kv budget", test_kv_budget_below_one_block_names_the_key},
        {"spec-disabled", test_a_request_may_turn_speculation_off},
        {"logprobs", test_logprobs_of_greedy_tokens_rank_them_first},
        {"draft", test_draft_with_another_vocabulary_is_refused},
        {"unvalidated", test_a_configuration_changed_after_validation_is_refused},
        {"prompt-logprobs", test_prompt_logprobs_agree_with_decoding},
        {"speculative", test_speculative_greedy_output_equals_plain_decoding_for_k_1_to_4},
        {"speculative qwen", test_speculative_greedy_output_equals_plain_with_qwen_models},
        {"sliding window blocks", test_sliding_window_generation_keeps_its_kv_blocks_bounded},
        {"sliding window prefix caching",
         test_prefix_caching_with_a_sliding_window_is_refused_by_name},
        {"speculative bf16 in f32",
         test_speculative_greedy_output_equals_plain_with_bf16_weights_computed_in_f32},
        {"speculative matrix",
         test_speculative_greedy_output_equals_plain_for_every_k_batch_and_block_size},
        {"shared kv budget", test_a_draft_on_the_target_device_shares_its_kv_budget},
        {"self-draft", test_the_target_as_its_own_draft_accepts_every_proposal},
        {"speculative-preemption", test_speculative_greedy_output_survives_preemption},
        {"self-draft-sampling",
         test_sampling_with_the_target_as_its_own_draft_equals_plain_sampling},
        {"disable-by-batch-size", test_speculation_is_off_above_disable_by_batch_size},
        {"adaptive-k", test_adaptive_k_keeps_greedy_output_and_stays_in_range},
        {"typical", test_typical_acceptance_of_greedy_requests_equals_plain_decoding},
        {"cpu lists", test_disjoint_cpu_lists_make_two_devices_and_turn_overlap_on},
        {"synthetic zero", test_synthetic_acceptance_at_rate_zero_emits_what_plain_decoding_does},
        {"synthetic rate",
         test_synthetic_acceptance_keeps_proposals_at_its_rate_and_emits_valid_tokens},
        {"request-counts", test_request_output_counts_its_proposals},
        {"overlap-default", test_overlap_is_off_by_default_when_both_workers_share_a_device},
        {"overlap-greedy",
         test_overlapped_greedy_output_equals_plain_decoding_for_one_and_four_requests},
        {"overlap-sampling", test_overlapped_sampling_equals_the_serial_speculative_path},
        {"overlap-preemption", test_overlapped_greedy_output_survives_preemption},
        {"overlap-abort",
         test_overlapped_abort_frees_every_block_and_destroy_joins_the_draft_thread},
        {"distribution", test_speculative_sampling_keeps_the_target_distribution},
        {"ahead-greedy", test_draft_ahead_greedy_output_equals_plain_decoding},
        {"ahead-fit", test_draft_ahead_window_fits_or_is_off},
        {"ahead-sampling", test_draft_ahead_sampling_equals_plain_and_serial_sampling},
        {"ahead-batch", test_draft_ahead_in_batches_of_two_and_three_keeps_the_output},
        {"ahead-distribution", test_draft_ahead_sampling_keeps_the_target_distribution},
        {"overlap-prefill", test_overlapped_prefill_keeps_greedy_output},
        {"penalties-greedy", test_speculative_greedy_output_with_penalties_equals_plain_decoding},
        {"penalties-self-draft",
         test_sampling_with_penalties_and_the_target_as_its_own_draft_accepts_everything},
        {"logit-bias", test_a_logit_bias_of_100_forces_its_token},
        {"penalties-refused", test_penalties_out_of_range_are_refused},
        {"penalties-distribution",
         test_speculative_sampling_with_penalties_keeps_the_target_distribution},
        {"soak", test_random_engines_finish_every_request_once_with_its_solo_tokens},
        {"n greedy", test_greedy_sequences_of_one_prompt_all_equal_the_worker_alone},
        {"n seeded", test_seeded_sequences_are_reproducible_differ_and_draw_as_seed_plus_index},
        {"n speculative", test_speculative_sequences_of_one_prompt_equal_plain_decoding},
        {"n speculative max_tokens",
         test_speculative_sampled_sequences_never_show_tokens_past_max_tokens},
        {"flat access", test_flat_access_equals_the_structs},
        {"n preemption", test_sequences_of_one_prompt_survive_preemption},
        {"n priority checks", test_n_and_priority_are_checked},
        {"priority", test_a_more_important_request_runs_first_under_the_priority_policy},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), overlap_env_reset, NULL, 120);
    return s;
}

int main(void)
{
    int status;

    plugin_path = getenv("DUET_TEST_CPU_WORKER");
    if (!plugin_path || access(plugin_path, R_OK) != 0) {
        printf("check_engine: SKIP: the CPU worker plugin (DUET_TEST_CPU_WORKER=%s) is not "
               "there\n",
               plugin_path ? plugin_path : "");
        return 77;
    }
    if (!models_generate()) {
        duet_test_rmtree(tmpdir);
        return EXIT_FAILURE;
    }
    status = duet_test_run(engine_suite());
    duet_test_rmtree(tmpdir);
    return status;
}
