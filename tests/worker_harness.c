/*
 * What the worker suites share (worker_harness.h): the models generated for a run, the profiles
 * of the workers, a worker opened through its ABI, and the comparisons with the double-precision
 * reference (reference_forward.h).
 *
 * The models: a small Llama with grouped-query attention (in an f32 and a bf16 file), a tied
 * Llama with llama3 RoPE scaling and one KV head, OPT with pre-LayerNorm and with post-LayerNorm +
 * project_in/out, a 12-token Llama for the sampling statistics, and the shapes of llama-68m and
 * opt-125m. harness_init generates those a program asks for, once, into a mkdtemp folder under
 * $DUET_TEST_BUILDDIR (else /tmp) that harness_fini removes.
 */
#define _GNU_SOURCE /* nftw */
#include "worker_harness.h"

#include "test_dirs.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the profiles -------------------------------------------------------------------------- */

static const char *const dtypes_f32[] = {"f32"};
static const char *const dtypes_cpu[] = {"f32", "bf16"};
static const char *const dtypes_gpu[] = {"f32", "bf16", "f16"};

static const struct worker_profile profiles[] = {
    {
        /* tests/fixtures/mock_worker.c: no model files, logits from a hash of two tokens */
        .name = "mock",
        .env = "DUET_TEST_PLUGIN_DIR",
        .cache_settings = "cpu_kv_space_gib = 0.25;",
        .caps =
            DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_PENALTIES,
        .budget_zero_bytes = 64ull << 20, /* its own default; it reads no cache settings */
        .dtypes = dtypes_f32,
        .n_dtypes = 1,
        .case_timeout = 60,
    },
    {
        .name = "cpu",
        .env = "DUET_TEST_CPU_WORKER",
        .numerics = true,
        .threads = true,
        .openmp = true,
        .tol_f32 = TOL_F32,
        .cache_settings = "cpu_kv_space_gib = 0.25;",
        .caps = DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_BF16 |
                DUET_CAP_F16 | DUET_CAP_INT8 | DUET_CAP_INT4 | DUET_CAP_PREFIX_CACHE |
                DUET_CAP_PENALTIES,
        .budget_zero_bytes = 1ull << 28, /* cache.cpu_kv_space_gib */
        .dtypes = dtypes_cpu,
        .n_dtypes = 2,
        .case_timeout = 60,
    },
    {
        .name = "gpu",
        .env = "DUET_TEST_GPU_WORKER",
        .numerics = true,
        .device = true,
        .tol_f32 = TOL_GPU_F32,
        /* budget 0 sizes the cache from free device memory; a small pinned swap pool */
        .cache_settings = "memory_fraction = 0.5; swap_space_gib = 0.0625;",
        .caps = DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_BF16 |
                DUET_CAP_F16 | DUET_CAP_PREFIX_CACHE | DUET_CAP_PENALTIES,
        .caps_optional = DUET_CAP_TP,    /* with NCCL */
        .details_names = "CUDA runtime", /* and the driver; no context is created for it */
        .dtypes = dtypes_gpu,
        .n_dtypes = 3,
        .case_timeout = 180, /* each worker starts a CUDA context and a cuBLAS handle */
    },
};

const struct worker_profile *worker_profile_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(profiles) / sizeof(profiles[0]); i++)
        if (strcmp(profiles[i].name, name) == 0)
            return &profiles[i];
    return NULL;
}

/* ---- the state of the program -------------------------------------------------------------- */

struct tmodel models[N_MODELS];
const struct worker_profile *profile;
const char *prog = "worker test";
const char *plugin_path;
const char *cpu_plugin_path;
bool under_valgrind;
char wk_err[4096];
const char *const *dtypes = dtypes_f32;
int n_dtypes = 1;

static char tmpdir[4096];
static duet_plugin *pinned; /* an OpenMP worker's plugin, loaded for the whole run */

/* ---- the models ---------------------------------------------------------------------------- */

static duet_model_desc small_llama(uint32_t kv_heads, duet_dtype dtype)
{
    duet_model_desc d;

    duet__desc_defaults(&d, DUET_ARCH_LLAMA);
    d.hidden_size = 64;
    d.intermediate_size = 128;
    d.num_layers = 2;
    d.num_heads = 4;
    d.num_kv_heads = kv_heads;
    d.head_dim = 16;
    d.vocab_size = 300;
    d.max_position = 256;
    d.bos_token_id = 1;
    d.n_eos = 1;
    d.eos_token_ids[0] = 2;
    d.torch_dtype = dtype;
    return d;
}

static duet_model_desc llama3_scaled(void)
{
    duet_model_desc d = small_llama(1, DUET_DTYPE_BF16);

    d.intermediate_size = 96;
    d.vocab_size = 280;
    d.tie_word_embeddings = true;
    d.rope_theta = 500000.0;
    d.rope_scaling = DUET_ROPE_SCALING_LLAMA3;
    d.rope_factor = 8.0;
    d.rope_low_freq_factor = 1.0;
    d.rope_high_freq_factor = 4.0;
    d.rope_original_max_position = 32;
    return d;
}

static duet_model_desc small_opt(bool pre_ln, uint32_t layers, uint32_t proj_dim, duet_dtype dtype)
{
    duet_model_desc d;

    duet__desc_defaults(&d, DUET_ARCH_OPT);
    d.hidden_size = 128;
    d.intermediate_size = 256;
    d.num_layers = layers;
    d.num_heads = 4;
    d.num_kv_heads = 4;
    d.head_dim = 32;
    d.vocab_size = 300;
    d.max_position = 256;
    d.word_embed_proj_dim = proj_dim;
    d.do_layer_norm_before = d.final_layer_norm = pre_ln;
    d.bos_token_id = 2;
    d.pad_token_id = 1;
    d.n_eos = 1;
    d.eos_token_ids[0] = 2;
    d.torch_dtype = dtype;
    return d;
}

static duet_model_desc tiny_vocab_llama(void)
{
    duet_model_desc d = small_llama(2, DUET_DTYPE_F32);

    d.hidden_size = 32;
    d.intermediate_size = 64;
    d.num_layers = 1;
    d.num_heads = 2;
    d.vocab_size = 12;
    d.max_position = 64;
    return d;
}

/* The Llama family's variants: Qwen2 (biases, tied), Qwen3 (q/k norms, wide heads), Mistral
 * with a sliding window. */
static duet_model_desc family(const char *architecture, duet_dtype dtype)
{
    duet_model_desc d = small_llama(2, dtype);

    snprintf(d.architecture, sizeof(d.architecture), "%s", architecture);
    duet__desc_family_defaults(&d);
    d.head_dim = 16;
    if (d.attention_bias)
        d.tie_word_embeddings = true;
    if (d.qk_norm)
        d.head_dim = 32;
    if (strcmp(architecture, "MistralForCausalLM") == 0)
        d.sliding_window = 12;
    d.rope_theta = 1000000.0;
    return d;
}

static duet_model_desc preset(const char *name, duet_dtype dtype)
{
    duet_model_desc d = duet__preset_find(name)->desc;

    d.torch_dtype = dtype;
    return d;
}

static struct tmodel model_entry(const char *name, duet_model_desc desc, bool is_preset)
{
    struct tmodel m = {.name = name, .desc = desc, .preset = is_preset};

    return m;
}

static void models_describe(void)
{
    models[M_LLAMA_F32] = model_entry("llama-gqa-f32", small_llama(2, DUET_DTYPE_F32), false);
    models[M_LLAMA_BF16] = model_entry("llama-gqa-bf16", small_llama(2, DUET_DTYPE_BF16), false);
    models[M_LLAMA3] = model_entry("llama3-rope", llama3_scaled(), false);
    models[M_OPT_PRE] = model_entry("opt-pre", small_opt(true, 3, 128, DUET_DTYPE_F32), false);
    models[M_OPT_POST] = model_entry("opt-post", small_opt(false, 2, 64, DUET_DTYPE_BF16), false);
    models[M_SMALL_VOCAB] = model_entry("small-vocab", tiny_vocab_llama(), false);
    models[M_LLAMA_68M] = model_entry("llama-68m", preset("llama-68m", DUET_DTYPE_F32), true);
    models[M_OPT_125M] = model_entry("opt-125m", preset("opt-125m", DUET_DTYPE_BF16), true);
    models[M_QWEN2] = model_entry("qwen2", family("Qwen2ForCausalLM", DUET_DTYPE_F32), false);
    models[M_QWEN3] = model_entry("qwen3", family("Qwen3ForCausalLM", DUET_DTYPE_BF16), false);
    models[M_MISTRAL_SW] =
        model_entry("mistral-window", family("MistralForCausalLM", DUET_DTYPE_F32), false);
}

/* Writes the models of want (the presets only outside valgrind); false with a message on
 * failure. */
static bool models_generate(unsigned want)
{
    struct duet__msg msg = {wk_err, sizeof(wk_err)};
    char prefix[64];

    snprintf(prefix, sizeof(prefix), "%s-worker-test", profile->name);
    if (!duet_test_mkdtemp(tmpdir, sizeof(tmpdir), prefix))
        return false;
    models_describe();
    for (int i = 0; i < N_MODELS; i++) {
        struct tmodel *m = &models[i];
        struct duet__gen_params p = {.desc = m->desc,
                                     .dir = m->dir,
                                     .seed = 1000 + (uint64_t)i,
                                     .tail_from = m->desc.num_layers,
                                     .flags = DUET_MODEL_QUIET};

        snprintf(m->dir, sizeof(m->dir), "%s/%s", tmpdir, m->name);
        if ((m->preset && under_valgrind) || !(want & MODEL_BIT(i)))
            continue;
        if (duet__gen_model(&p, &msg) != DUET_STATUS_OK) {
            fprintf(stderr, "%s: generating %s: %s\n", prog, m->name, wk_err);
            return false;
        }
        m->ready = true;
    }
    return true;
}

static void models_remove(void)
{
    duet_test_rmtree(tmpdir);
}
/* ---- small utilities ----------------------------------------------------------------------- */

uint64_t mix2(uint64_t seed, uint64_t i)
{
    return duet__rng_mix(duet__rng_mix(seed + 0x51ed27ull) ^ (i + 0x2545f491ull));
}

/* n pseudo-random tokens of a vocabulary of vocab. */
void make_tokens(int32_t *t, uint32_t n, uint32_t vocab, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++)
        t[i] = (int32_t)(mix2(seed, i) % vocab);
}

/* Block ids first, first + 1, ... */
void table_range(uint32_t *t, uint32_t n, uint32_t first)
{
    for (uint32_t i = 0; i < n; i++)
        t[i] = first + i;
}

/* n distinct block ids below num_blocks in random order (a prefix of a shuffled permutation). */
void table_shuffled(uint32_t *t, uint32_t n, uint32_t num_blocks, uint64_t seed)
{
    uint32_t *perm = malloc(num_blocks * sizeof(*perm));

    ck_assert_ptr_nonnull(perm);
    ck_assert_uint_le(n, num_blocks);
    for (uint32_t i = 0; i < num_blocks; i++)
        perm[i] = i;
    for (uint32_t i = num_blocks - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(mix2(seed, i) % (i + 1)), x = perm[i];

        perm[i] = perm[j];
        perm[j] = x;
    }
    memcpy(t, perm, n * sizeof(*t));
    free(perm);
}

uint32_t blocks_for(uint32_t positions, uint32_t block_size)
{
    return (positions + block_size - 1) / block_size;
}

double tol_of(const char *dtype)
{
    if (strcmp(dtype, "bf16") == 0)
        return TOL_BF16;
    return strcmp(dtype, "f16") == 0 ? TOL_F16 : profile->tol_f32;
}

duet_sampling_params sp_plain(uint64_t seed)
{
    return (duet_sampling_params){.temperature = 1.0f, .top_p = 1.0f, .seed = seed};
}

duet_sampling_params sp_greedy(void)
{
    return (duet_sampling_params){.temperature = 0.0f, .top_p = 1.0f};
}

duet_seq seq_make(uint64_t id, const int32_t *tokens, uint32_t n, uint32_t pos,
                  const uint32_t *table, uint32_t n_blocks, uint32_t n_outputs,
                  duet_sampling_params sp)
{
    return (duet_seq){.seq_id = id,
                      .tokens = tokens,
                      .n_tokens = n,
                      .pos = pos,
                      .block_table = table,
                      .n_blocks = n_blocks,
                      .n_outputs = n_outputs,
                      .sampling = sp};
}

/* ---- the worker through the ABI ------------------------------------------------------------ */

/* The configuration text of a worker for dir with o. */
void config_text(char *text, size_t size, const char *dir, const struct wk_opts *o)
{
    const struct worker_profile *wp = o->cpu ? worker_profile_find("cpu") : profile;
    char group[512], threads[32] = "";
    int n;

    if (wp->threads)
        snprintf(threads, sizeof(threads), " threads = %d;", o->threads);
    snprintf(group, sizeof(group), "worker = \"%s\"; dtype = \"%s\";%s%s%s%s %s", wp->name,
             o->dtype ? o->dtype : "f32", threads, o->weights ? " weights = \"" : "",
             o->weights ? o->weights : "", o->weights ? "\";" : "", o->extra ? o->extra : "");
    n = snprintf(text, size, "model = \"%s\";\ntarget: { ", dir);
    if (o->draft)
        n += snprintf(text + n, size - (size_t)n,
                      "worker = \"%s\"; dtype = \"f32\"; };\n"
                      "speculative: { draft_model = \"%s\"; %s };\n",
                      wp->name, dir, group);
    else
        n += snprintf(text + n, size - (size_t)n, "%s };\n", group);
    snprintf(text + n, size - (size_t)n, "cache: { block_size = %u; %s };\n",
             o->block_size ? o->block_size : 16, wp->cache_settings);
}

/* Configuration, host services and the loaded plugin; no worker yet. */
void wk_prepare(struct wk *k, const char *dir, const struct wk_opts *o)
{
    char text[16384];

    memset(k, 0, sizeof(*k));
    k->block_size = o->block_size ? o->block_size : 16;
    k->tol = o->tol > 0 ? o->tol : tol_of(o->dtype ? o->dtype : "f32");
    config_text(text, sizeof(text), dir, o);
    ck_assert_int_eq(duet_config_create(&k->cfg), DUET_STATUS_OK);
    ck_assert_msg(duet_config_load_string(k->cfg, text, "test.cfg") == DUET_STATUS_OK &&
                      duet_config_validate(k->cfg) == DUET_STATUS_OK,
                  "%s\n%s", duet_config_error(k->cfg), text);
    ck_assert_int_eq(duet_host_create(k->cfg, DUET_LOG_ERROR, &k->host), DUET_STATUS_OK);
    ck_assert_msg(duet_plugin_load(o->cpu ? cpu_plugin_path : plugin_path, NULL,
                                   duet_host_services_of(k->host), &k->plugin, wk_err,
                                   sizeof(wk_err)) == DUET_STATUS_OK,
                  "%s", wk_err);
    k->t = duet_plugin_table(k->plugin);
}

duet_status wk_create(struct wk *k, const char *dir, const struct wk_opts *o)
{
    duet_worker_params p = {.struct_size = sizeof(p),
                            .role = o->draft ? DUET_ROLE_DRAFT : DUET_ROLE_TARGET,
                            .model_dir = dir,
                            .section = o->draft ? "speculative" : "target",
                            .host = duet_host_services_of(k->host)};

    wk_err[0] = '\0';
    k->w = (duet_worker *)0x1; /* create must clear it on failure */
    return k->t->create(&p, &k->w, wk_err, sizeof(wk_err));
}

duet_status wk_init_cache(struct wk *k, uint32_t num_blocks, uint32_t num_swap)
{
    duet_cache_config cc = {.struct_size = sizeof(cc),
                            .block_size = k->block_size,
                            .num_blocks = num_blocks,
                            .num_swap_blocks = num_swap};

    return k->t->init_cache(k->w, &cc);
}

/* A ready worker of model m: created, described, and its cache allocated when o asks. The mock
 * ignores m (it reads no model files) and describes its own model. */
void wk_open(struct wk *k, const struct tmodel *m, const struct wk_opts *o)
{
    ck_assert_msg(m->ready, "model %s was not generated", m->name);
    wk_prepare(k, m->dir, o);
    ck_assert_msg(wk_create(k, m->dir, o) == DUET_STATUS_OK, "%s: create: %s", m->name, wk_err);
    ck_assert_ptr_nonnull(k->w);
    k->info.struct_size = sizeof(k->info);
    ck_assert_int_eq(k->t->describe(k->w, &k->info), DUET_STATUS_OK);
    if (o->cpu || profile->numerics) /* the mock describes its own model */
        ck_assert_uint_eq(k->info.vocab_size, m->desc.vocab_size);
    if (o->num_blocks)
        ck_assert_msg(wk_init_cache(k, o->num_blocks, o->num_swap) == DUET_STATUS_OK,
                      "%s: init_cache: %s", m->name, k->t->last_error(k->w));
}

void wk_close(struct wk *k)
{
    if (k->t && k->w != (duet_worker *)0x1)
        k->t->destroy(k->w);
    duet_plugin_unload(k->plugin);
    duet_host_destroy(k->host);
    duet_config_destroy(k->cfg);
}

/* Cache operations of a batch. */

void outs_free(struct outs *o)
{
    free(o->tokens);
    free(o->probs);
    free(o->token_lp);
    free(o->lp);
    free(o->plp);
    free(o->pnext);
    memset(o, 0, sizeof(*o));
}

void outs_alloc(struct outs *o, const duet_seq *seqs, uint32_t n, uint32_t vocab, uint32_t stride)
{
    memset(o, 0, sizeof(*o));
    for (uint32_t i = 0; i < n; i++) {
        o->rows += seqs[i].n_outputs + seqs[i].n_draft_steps;
        o->fed += seqs[i].n_tokens;
    }
    o->vocab = vocab;
    o->stride = stride ? stride : 1;
    o->tokens = malloc((o->rows + 1) * sizeof(*o->tokens));
    o->probs = malloc(((size_t)o->rows * vocab + 1) * sizeof(*o->probs));
    o->token_lp = malloc((o->rows + 1) * sizeof(*o->token_lp));
    o->lp = calloc((size_t)o->rows * o->stride + 1, sizeof(*o->lp));
    o->plp = calloc((size_t)o->fed * o->stride + 1, sizeof(*o->plp));
    o->pnext = malloc((o->fed + 1) * sizeof(*o->pnext));
    ck_assert(o->tokens && o->probs && o->token_lp && o->lp && o->plp && o->pnext);
    for (uint32_t r = 0; r < o->rows; r++)
        o->tokens[r] = -2, o->token_lp[r] = NAN;
    for (size_t i = 0; i < (size_t)o->rows * vocab; i++)
        o->probs[i] = NAN;
    for (uint32_t p = 0; p < o->fed; p++)
        o->pnext[p] = 12345.0f;
}

/* One execute; rows_given overrides n_rows (UINT32_MAX: as many as the batch has), stride
 * overrides max_logprobs (0: the largest n_logprobs / n_prompt_logprobs of the batch). */
duet_status exec_full(struct wk *k, const duet_seq *seqs, uint32_t n, uint32_t flags,
                      const struct ops *ops, struct outs *o, uint32_t rows_given, uint32_t stride)
{
    duet_batch b = {.struct_size = sizeof(b),
                    .flags = flags,
                    .n_seqs = n,
                    .seq_size = sizeof(duet_seq),
                    .seqs = seqs};
    duet_batch_output out = {.struct_size = sizeof(out)};

    for (uint32_t i = 0; !stride && i < n; i++) {
        if (seqs[i].sampling.n_logprobs > b.max_logprobs)
            b.max_logprobs = seqs[i].sampling.n_logprobs;
        if (seqs[i].sampling.n_prompt_logprobs > b.max_logprobs)
            b.max_logprobs = seqs[i].sampling.n_prompt_logprobs;
    }
    if (stride)
        b.max_logprobs = stride;
    if (ops) {
        b.swap_in = ops->swap_in, b.n_swap_in = ops->n_swap_in;
        b.swap_out = ops->swap_out, b.n_swap_out = ops->n_swap_out;
        b.copy = ops->copy, b.n_copy = ops->n_copy;
    }
    outs_alloc(o, seqs, n, k->info.vocab_size, b.max_logprobs);
    out.n_rows = rows_given == UINT32_MAX ? o->rows : rows_given;
    out.tokens = o->tokens;
    if (flags & DUET_BATCH_WANT_PROBS)
        out.probs = o->probs;
    if (flags & DUET_BATCH_WANT_LOGPROBS)
        out.token_logprobs = o->token_lp, out.logprobs = o->lp;
    if (flags & DUET_BATCH_WANT_PROMPT_LOGPROBS)
        out.prompt_logprobs = o->plp, out.prompt_next_logprobs = o->pnext;
    return k->t->execute(k->w, &b, &out);
}

/* One execute that must succeed. */
void exec_ok(struct wk *k, const duet_seq *seqs, uint32_t n, uint32_t flags, const struct ops *ops,
             struct outs *o)
{
    duet_status st = exec_full(k, seqs, n, flags, ops, o, UINT32_MAX, 0);

    ck_assert_msg(st == DUET_STATUS_OK, "execute: %s: %s", duet_status_str(st),
                  k->t->last_error(k->w));
}

/* Feeds tokens[0..n) at positions pos.. of one sequence without asking for rows. */
void prefill_silent(struct wk *k, const int32_t *tokens, uint32_t n, uint32_t pos,
                    const uint32_t *table, uint32_t n_blocks)
{
    duet_seq s = seq_make(1, tokens, n, pos, table, n_blocks, 0, sp_greedy());
    struct outs o;

    exec_ok(k, &s, 1, 0, NULL, &o);
    outs_free(&o);
}

/* Only cache operations. */
void cache_ops(struct wk *k, const struct ops *ops)
{
    struct outs o;

    exec_ok(k, NULL, 0, 0, ops, &o);
    outs_free(&o);
}

/* ---- the reference ------------------------------------------------------------------------- */

/* Reference logits [n][vocab] of tokens[0..n) fed at positions 0..n-1 (malloc'd). */
double *reference(const struct tmodel *tm, const int32_t *tokens, uint32_t n)
{
    uint32_t vocab = tm->desc.vocab_size;
    double *logits = malloc((size_t)n * vocab * sizeof(double));
    duet_model *m;
    duet_ref *r;

    ck_assert_ptr_nonnull(logits);
    ck_assert_msg(duet_model_create(tm->dir, DUET_MODEL_QUIET, &m, wk_err, sizeof(wk_err)) ==
                      DUET_STATUS_OK,
                  "%s", wk_err);
    ck_assert_int_eq(duet_ref_create(m, n, &r), DUET_STATUS_OK);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_int_eq(duet_ref_step(r, tokens[i], logits + (size_t)i * vocab), DUET_STATUS_OK);
    duet_ref_destroy(r);
    duet_model_destroy(m);
    return logits;
}

/* log_softmax(logits / temperature) into lp; returns the scale max(1, max |logits / T|). */
double ref_log_softmax(const double *logits, uint32_t vocab, double temperature, double *lp)
{
    double top = -INFINITY, sum = 0, scale = 1, lse;

    for (uint32_t v = 0; v < vocab; v++) {
        lp[v] = logits[v] / temperature;
        top = fmax(top, lp[v]);
        scale = fmax(scale, fabs(lp[v]));
    }
    for (uint32_t v = 0; v < vocab; v++)
        sum += exp(lp[v] - top);
    lse = top + log(sum);
    for (uint32_t v = 0; v < vocab; v++)
        lp[v] -= lse;
    return scale;
}

/* The reference's log-probabilities of one row and the bound of comparisons with it. */

void ref_row_init(struct ref_row *rr, const double *logits, uint32_t vocab, double t, double tol)
{
    rr->lp = malloc(vocab * sizeof(double));
    ck_assert_ptr_nonnull(rr->lp);
    rr->vocab = vocab;
    rr->lim = tol * ref_log_softmax(logits, vocab, t, rr->lp);
    rr->top = duet_ref_argmax(rr->lp, vocab);
}

void ref_row_fini(struct ref_row *rr)
{
    free(rr->lp);
}

/* True when token v takes part in comparisons. */
bool ref_row_counts(const struct ref_row *rr, uint32_t v)
{
    return rr->lp[v] >= rr->lp[rr->top] - CUTOFF_NATS;
}

/* An argmax of a worker's row must be the reference's unless the reference's top two are
 * within 2 × lim of each other. */
void assert_argmax(const struct ref_row *rr, uint32_t got, const char *what, uint32_t row)
{
    ck_assert_msg(got == rr->top || rr->lp[rr->top] - rr->lp[got] <= 2 * rr->lim,
                  "%s row %u: argmax %u (reference log-probability %.6f), reference argmax %u "
                  "(%.6f)",
                  what, row, got, rr->lp[got], rr->top, rr->lp[rr->top]);
}

uint32_t row_argmax(const float *p, uint32_t vocab)
{
    uint32_t best = 0;

    for (uint32_t v = 1; v < vocab; v++)
        if (p[v] > p[best])
            best = v;
    return best;
}

/* A probability row: finite entries in [0, 1] summing to 1. */
void assert_distribution(const float *p, uint32_t vocab, const char *what, uint32_t row)
{
    double sum = 0;

    for (uint32_t v = 0; v < vocab; v++) {
        if (!(p[v] >= 0.0f && p[v] <= 1.0f))
            ck_abort_msg("%s row %u: probability %g at token %u", what, row, (double)p[v], v);
        sum += p[v];
    }
    ck_assert_msg(fabs(sum - 1.0) < 1e-4, "%s row %u: probabilities sum to %.7f", what, row, sum);
}

/* A worker's unfiltered row (temperature T) against reference logits. */
void assert_row_matches(const float *p, const double *logits, uint32_t vocab, double t, double tol,
                        const char *what, uint32_t row)
{
    struct ref_row rr;
    double worst = -1;
    uint32_t worst_v = 0;

    assert_distribution(p, vocab, what, row);
    ref_row_init(&rr, logits, vocab, t, tol);
    for (uint32_t v = 0; v < vocab; v++) {
        double d;

        if (!ref_row_counts(&rr, v))
            continue;
        d = p[v] > 0 ? fabs(log(p[v]) - rr.lp[v]) : INFINITY;
        if (d > worst)
            worst = d, worst_v = v;
    }
    ck_assert_msg(worst <= rr.lim,
                  "%s row %u: log-probability of token %u is %.6f, reference %.6f (bound %.3g)",
                  what, row, worst_v, log(p[worst_v]), rr.lp[worst_v], rr.lim);
    assert_argmax(&rr, row_argmax(p, vocab), what, row);
    ref_row_fini(&rr);
}

/* A greedy row: one-hot at the reference's argmax (ties as assert_argmax), token = argmax. */
void assert_greedy_row(const float *p, int32_t token, const double *logits, uint32_t vocab,
                       double tol, const char *what, uint32_t row)
{
    struct ref_row rr;

    ck_assert_msg(token >= 0 && (uint32_t)token < vocab, "%s row %u: token %d", what, row, token);
    for (uint32_t v = 0; v < vocab; v++)
        ck_assert_msg(p[v] == (v == (uint32_t)token ? 1.0f : 0.0f),
                      "%s row %u: greedy row is not one-hot at its token %d (p[%u] = %g)", what,
                      row, token, v, (double)p[v]);
    ref_row_init(&rr, logits, vocab, 1.0, tol);
    assert_argmax(&rr, (uint32_t)token, what, row);
    ref_row_fini(&rr);
}

/* Two worker rows that must agree: within the bound of the reference row, same argmax. */
void assert_rows_agree(const float *a, const float *b, const double *logits, uint32_t vocab,
                       double t, double tol, const char *what, uint32_t row)
{
    struct ref_row rr;
    double worst = -1;
    uint32_t worst_v = 0, ta = row_argmax(a, vocab), tb = row_argmax(b, vocab);

    ref_row_init(&rr, logits, vocab, t, tol);
    for (uint32_t v = 0; v < vocab; v++) {
        double d;

        if (!ref_row_counts(&rr, v) && !(a[v] > 0 && b[v] > 0))
            continue;
        if (a[v] == b[v])
            d = 0;
        else
            d = a[v] > 0 && b[v] > 0 ? fabs(log(a[v]) - log(b[v])) : INFINITY;
        if (d > worst)
            worst = d, worst_v = v;
    }
    ck_assert_msg(worst <= rr.lim, "%s row %u: token %u has probability %.9g and %.9g (bound %.3g)",
                  what, row, worst_v, (double)a[worst_v], (double)b[worst_v], rr.lim);
    ck_assert_msg(ta == tb || fabs(rr.lp[ta] - rr.lp[tb]) <= 2 * rr.lim,
                  "%s row %u: argmax %u and %u", what, row, ta, tb);
    ref_row_fini(&rr);
}

/* The normalised CDF interval [lo, hi) of token t in row p. */
void cdf_interval(const float *p, uint32_t vocab, int32_t t, double *lo, double *hi)
{
    double total = 0, before = 0;

    for (uint32_t v = 0; v < vocab; v++) {
        if (p[v] > 0)
            total += p[v];
        if ((int32_t)v < t && p[v] > 0)
            before += p[v];
    }
    *lo = before / total;
    *hi = (before + (p[t] > 0 ? p[t] : 0)) / total;
}

/* The token of a row at fed position pos was drawn from the row at u(seed, pos + 1). */
void assert_sampled(const float *p, uint32_t vocab, int32_t token, uint64_t seed, uint32_t pos,
                    const char *what, uint32_t row)
{
    double u = duet__rng_uniform(seed, (uint64_t)pos + 1, DUET_DRAW_SAMPLE), lo, hi;
    double u_own = duet__rng_uniform(seed, pos, DUET_DRAW_SAMPLE);

    ck_assert_msg(token >= 0 && (uint32_t)token < vocab && p[token] > 0,
                  "%s row %u: token %d has no probability", what, row, token);
    cdf_interval(p, vocab, token, &lo, &hi);
    ck_assert_msg(u >= lo - DRAW_SLACK && u <= hi + DRAW_SLACK,
                  "%s row %u (fed position %u): token %d has CDF interval [%.7f, %.7f) but "
                  "u(seed %llu, position %u) = %.7f%s",
                  what, row, pos, token, lo, hi, (unsigned long long)seed, pos + 1, u,
                  u_own >= lo && u_own < hi ? " (u at the fed position itself fits: off by one?)"
                                            : "");
}

/* Tokens of two runs of one row must be equal unless u is near a CDF boundary of row a. */
void assert_same_token(const float *a, int32_t ta, int32_t tb, uint32_t vocab, double u,
                       double margin, const char *what, uint32_t row)
{
    double lo, hi;

    if (ta == tb)
        return;
    cdf_interval(a, vocab, ta, &lo, &hi);
    ck_assert_msg(u - lo <= margin || hi - u <= margin,
                  "%s row %u: tokens %d and %d (u %.7f well inside [%.7f, %.7f))", what, row, ta,
                  tb, u, lo, hi);
}

/* Rows r0.. of o against reference logits of fed positions pos0..: unfiltered with temperature
 * t (or greedy when t is 0), each token drawn as sampling.h says. */
void assert_rows_match(const struct outs *o, uint32_t r0, uint32_t n, const double *logits,
                       uint32_t pos0, double t, uint64_t seed, double tol, const char *what)
{
    uint32_t vocab = o->vocab;

    for (uint32_t i = 0; i < n; i++) {
        const float *p = o->probs + (size_t)(r0 + i) * vocab;
        const double *l = logits + (size_t)(pos0 + i) * vocab;

        if (t == 0) {
            assert_greedy_row(p, o->tokens[r0 + i], l, vocab, tol, what, r0 + i);
            continue;
        }
        assert_row_matches(p, l, vocab, t, tol, what, r0 + i);
        assert_sampled(p, vocab, o->tokens[r0 + i], seed, pos0 + i, what, r0 + i);
    }
}

/* Rows ra.. of a and rb.. of b are the same results (see the top of the file). */
void assert_runs_agree(const struct outs *a, uint32_t ra, const struct outs *b, uint32_t rb,
                       uint32_t n, const double *logits, uint32_t pos0, double t, uint64_t seed,
                       double tol, const char *what)
{
    uint32_t vocab = a->vocab;

    for (uint32_t i = 0; i < n; i++) {
        const float *pa = a->probs + (size_t)(ra + i) * vocab;
        const float *pb = b->probs + (size_t)(rb + i) * vocab;
        const double *l = logits + (size_t)(pos0 + i) * vocab;
        struct ref_row rr;

        if (t != 0) /* greedy rows are one-hot: only their tokens are compared */
            assert_rows_agree(pa, pb, l, vocab, t, tol, what, ra + i);
        ref_row_init(&rr, l, vocab, t == 0 ? 1.0 : t, tol);
        if (t == 0)
            ck_assert_msg(a->tokens[ra + i] == b->tokens[rb + i] ||
                              fabs(rr.lp[a->tokens[ra + i]] - rr.lp[b->tokens[rb + i]]) <=
                                  2 * rr.lim,
                          "%s row %u: greedy tokens %d and %d", what, ra + i, a->tokens[ra + i],
                          b->tokens[rb + i]);
        else
            assert_same_token(pa, a->tokens[ra + i], b->tokens[rb + i], vocab,
                              duet__rng_uniform(seed, (uint64_t)pos0 + i + 1, DUET_DRAW_SAMPLE),
                              2 * rr.lim, what, ra + i);
        ref_row_fini(&rr);
    }
}

/* A top-N list against the reference's raw log-probabilities (temperature 1): distinct valid
 * tokens, values within the bound, most likely first, and each token's rank no worse than its
 * place (ties within 2 × the bound allowed). */
void assert_top_list(const duet_logprob *top, uint32_t n, const double *logits, uint32_t vocab,
                     double tol, const char *what, uint32_t row)
{
    struct ref_row rr;

    ref_row_init(&rr, logits, vocab, 1.0, tol);
    for (uint32_t i = 0; i < n; i++) {
        int32_t t = top[i].token;
        uint32_t better = 0;

        ck_assert_msg(t >= 0 && (uint32_t)t < vocab, "%s row %u: top[%u].token = %d", what, row, i,
                      t);
        for (uint32_t j = 0; j < i; j++)
            ck_assert_msg(top[j].token != t, "%s row %u: token %d listed twice", what, row, t);
        ck_assert_msg(fabs(top[i].logprob - rr.lp[t]) <= rr.lim,
                      "%s row %u: top[%u] token %d logprob %.6f, reference %.6f", what, row, i, t,
                      (double)top[i].logprob, rr.lp[t]);
        ck_assert_msg(i == 0 || top[i].logprob <= top[i - 1].logprob,
                      "%s row %u: top list not sorted at %u", what, row, i);
        for (uint32_t v = 0; v < vocab; v++)
            better += rr.lp[v] > rr.lp[t] + 2 * rr.lim;
        ck_assert_msg(better <= i, "%s row %u: top[%u] = token %d but %u tokens are likelier", what,
                      row, i, t, better);
    }
    ref_row_fini(&rr);
}

/* Prompt log-probabilities of fed positions f0.. (fed_pos0.. in the sequence whose full token
 * list is tokens) against the reference: the next fed token's log-probability (NAN after the
 * last fed token) and the top n_top. */
void assert_prompt_logprobs(const struct outs *o, uint32_t f0, uint32_t n_fed, uint32_t fed_pos0,
                            const int32_t *tokens, const double *logits, uint32_t n_top, double tol,
                            const char *what)
{
    uint32_t vocab = o->vocab;

    for (uint32_t j = 0; j < n_fed; j++) {
        const double *l = logits + (size_t)(fed_pos0 + j) * vocab;
        float got = o->pnext[f0 + j];

        if (j + 1 == n_fed) {
            ck_assert_msg(isnan(got), "%s fed %u: last fed token has prompt logprob %g", what,
                          f0 + j, (double)got);
        } else {
            struct ref_row rr;
            int32_t next = tokens[fed_pos0 + j + 1];

            ref_row_init(&rr, l, vocab, 1.0, tol);
            ck_assert_msg(fabs(got - rr.lp[next]) <= rr.lim,
                          "%s fed %u: prompt logprob of token %d is %.6f, reference %.6f", what,
                          f0 + j, next, (double)got, rr.lp[next]);
            ref_row_fini(&rr);
        }
        assert_top_list(o->plp + (size_t)(f0 + j) * o->stride, n_top, l, vocab, tol, what, f0 + j);
    }
}

/* last_error() after a refusal: status want, and a message naming seq_id (UINT64_MAX: none). */
void assert_refused(struct wk *k, duet_status st, duet_status want, uint64_t seq_id,
                    const char *what)
{
    const char *msg = k->t->last_error(k->w);
    char id[32];

    ck_assert_msg(st == want, "%s: status '%s', expected '%s'", what, duet_status_str(st),
                  duet_status_str(want));
    ck_assert_msg(msg && *msg, "%s: last_error() is empty", what);
    if (seq_id == UINT64_MAX)
        return;
    snprintf(id, sizeof(id), "%llu", (unsigned long long)seq_id);
    ck_assert_msg(strstr(msg, id) != NULL, "%s: message '%s' does not name seq %s", what, msg, id);
}

/* ---- checks more than one program runs ----------------------------------------------------- */

struct tmodel gguf_of(int m, duet_dtype dtype)
{
    struct tmodel g = models[m];
    char err[512];
    struct duet__msg msg = {err, sizeof(err)};
    duet_model *src;

    snprintf(g.dir, sizeof(g.dir), "%s/model-%s.gguf", models[m].dir, duet_dtype_name(dtype));
    ck_assert_msg(duet_model_create(models[m].dir, DUET_MODEL_QUIET, &src, err, sizeof(err)) ==
                      DUET_STATUS_OK,
                  "%s", err);
    ck_assert_msg(duet__gguf_write(src, g.dir, dtype, DUET_MODEL_QUIET, &msg) == DUET_STATUS_OK,
                  "%s", err);
    duet_model_destroy(src);
    return g;
}

/* Prefill of n tokens with a row at every position, each compared with the reference. */
/* Prefill of n tokens with a row at every position, each asserted against the reference within
 * the worker's tolerance; returns the worst |log p − reference| / max(1, max |logit|) (tokens
 * within CUTOFF_NATS of the top). */
double check_prefill_with(const struct tmodel *tm, struct wk_opts o, uint32_t n, uint64_t seed)
{
    uint32_t vocab = tm->desc.vocab_size, table[64];
    int32_t *tokens = malloc(n * sizeof(*tokens));
    double *logits, worst = 0;
    struct outs out;
    struct wk k;
    duet_seq s;
    char what[256];

    o.num_blocks = blocks_for(n, 16) + 2;
    ck_assert_ptr_nonnull(tokens);
    make_tokens(tokens, n, vocab, seed);
    logits = reference(tm, tokens, n);
    wk_open(&k, tm, &o);
    table_range(table, blocks_for(n, 16), 1);
    s = seq_make(3, tokens, n, 0, table, blocks_for(n, 16), n, sp_plain(seed));
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
    snprintf(what, sizeof(what), "%s (%s file) computed in %s, weights %s %s", tm->name,
             duet_dtype_name(tm->desc.torch_dtype), o.dtype ? o.dtype : "f32",
             o.weights ? o.weights : "auto", o.extra ? o.extra : "");
    assert_rows_match(&out, 0, n, logits, 0, 1.0, seed, k.tol, what);
    for (uint32_t r = 0; r < n; r++) {
        const float *p = out.probs + (size_t)r * vocab;
        struct ref_row rr;

        ref_row_init(&rr, logits + (size_t)r * vocab, vocab, 1.0, k.tol);
        for (uint32_t v = 0; v < vocab; v++)
            if (ref_row_counts(&rr, v))
                worst = fmax(worst, fabs(log(p[v]) - rr.lp[v]) / (rr.lim / k.tol));
        ref_row_fini(&rr);
    }
    outs_free(&out);
    wk_close(&k);
    free(logits);
    free(tokens);
    return worst;
}

/* A preset shape: 5 tokens of prefill then one decode, in both dtypes (or, with base.dtype set,
 * in base's settings only), one reference pass. */
void check_preset(const struct tmodel *tm, struct wk_opts base)
{
    enum { N = 6 };
    uint32_t vocab = tm->desc.vocab_size, table[1] = {2};
    int32_t tokens[N];
    double *logits;

    make_tokens(tokens, N, vocab, 16);
    logits = reference(tm, tokens, N);
    for (int di = 0; di < (base.dtype ? 1 : n_dtypes); di++) {
        struct wk_opts o = base;
        duet_seq s = seq_make(9, tokens, N - 1, 0, table, 1, N - 1, sp_plain(17));
        struct outs a, b;
        struct wk k;
        char what[256];

        if (!o.dtype)
            o.dtype = dtypes[di];
        o.num_blocks = 4;
        snprintf(what, sizeof(what), "%s in %s, weights %s", tm->name, o.dtype,
                 o.weights ? o.weights : "auto");
        wk_open(&k, tm, &o);
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &a);
        assert_rows_match(&a, 0, N - 1, logits, 0, 1.0, 17, k.tol, what);
        s = seq_make(9, tokens + N - 1, 1, N - 1, table, 1, 1, sp_plain(17));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &b);
        assert_rows_match(&b, 0, 1, logits, N - 1, 1.0, 17, k.tol, what);
        outs_free(&a);
        outs_free(&b);
        wk_close(&k);
    }
    free(logits);
}

void check_create(const struct tmodel *tm, const struct create_case *c)
{
    struct wk_opts o = {.dtype = c->dtype, .weights = c->weights, .extra = c->extra};
    duet_status st;
    struct wk k;

    wk_prepare(&k, tm->dir, &o);
    st = wk_create(&k, tm->dir, &o);
    ck_assert_msg(st == c->want, "dtype %s, weights %s %s: %s (%s)", c->dtype,
                  c->weights ? c->weights : "(default)", c->extra ? c->extra : "",
                  duet_status_str(st), wk_err);
    if (st != DUET_STATUS_OK) {
        ck_assert_ptr_null(k.w);
        ck_assert_msg(wk_err[0] != '\0', "dtype %s: no message", c->dtype);
        ck_assert_msg(!c->named || strstr(wk_err, c->named) != NULL,
                      "message '%s' does not name %s", wk_err, c->named);
    }
    wk_close(&k);
}

/* The status of creating a bf16 worker (run in a child process: see probe_bf16). */
static duet_status create_bf16_worker(void)
{
    struct wk_opts o = {.dtype = "bf16"};
    char text[16384];
    duet_config *cfg = NULL;
    duet_host *host = NULL;
    duet_plugin *plugin = NULL;
    duet_worker *w = NULL;
    duet_status st;

    config_text(text, sizeof(text), models[M_LLAMA_F32].dir, &o);
    st = duet_config_create(&cfg);
    if (!st)
        st = duet_config_load_string(cfg, text, "probe.cfg");
    if (!st)
        st = duet_host_create(cfg, DUET_LOG_ERROR, &host);
    if (!st)
        st = duet_plugin_load(plugin_path, NULL, duet_host_services_of(host), &plugin, wk_err,
                              sizeof(wk_err));
    if (!st) {
        const duet_worker_plugin *t = duet_plugin_table(plugin);
        duet_worker_params p = {.struct_size = sizeof(p),
                                .role = DUET_ROLE_TARGET,
                                .model_dir = models[M_LLAMA_F32].dir,
                                .section = "target",
                                .host = duet_host_services_of(host)};

        st = t->create(&p, &w, wk_err, sizeof(wk_err));
        t->destroy(w);
        if (st == DUET_STATUS_UNSUPPORTED)
            printf("%s: bf16 compute not tested: %s\n", prog, wk_err);
    }
    duet_plugin_unload(plugin);
    duet_host_destroy(host);
    duet_config_destroy(cfg);
    return st;
}

/* Whether bf16 compute can run here: oneDNN has no bf16 matmul on CPUs without AVX-512, and
 * valgrind emulates such a CPU. UNSUPPORTED turns the bf16 cases off (with a note); any other
 * failure keeps them, so that the tests report it. The probe runs in a child: a worker starts
 * OpenMP threads, and libgomp does not survive the fork of Check's test processes. */
static void probe_bf16(void)
{
    int wstatus = 0;
    pid_t pid;

    if (under_valgrind) {
        printf("%s: bf16 compute not tested under valgrind (its CPU has no AVX-512)\n", prog);
        n_dtypes = 1;
        return;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        duet_status st = create_bf16_worker();

        fflush(stdout); /* the note; _exit flushes nothing */
        _exit(st == DUET_STATUS_UNSUPPORTED ? 3 : 0);
    }
    if (pid > 0 && waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus) &&
        WEXITSTATUS(wstatus) == 3)
        n_dtypes = 1;
}

/* ---- the program around the suite ---------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
/* The out-of-memory test asks for more than 2^50 bytes: under ASan such a malloc must return NULL
 * (as it does without ASan) instead of aborting. And LeakSanitizer, as GCC 12 ships it, follows
 * garbage dynamic-TLS ranges of dlopen'ed libraries (libdnnl) on glibc >= 2.34 and crashes at exit
 * ("Tracer caught signal 11", google/sanitizers#1322): leave dynamic TLS out of its scan. The CUDA
 * driver maps device memory where ASan's shadow gap is: that gap must not be protected (in every
 * program of the harness: the conformance suite loads whichever worker it is given).
 * Exported, so that the runtime finds it despite -fvisibility=hidden. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:intercept_tls_get_addr=0:protect_shadow_gap=0";
}
#endif

int harness_check(const char *program, const struct worker_profile *p, const char *plugin)
{
    prog = program;
    profile = p;
    plugin_path = plugin;
    cpu_plugin_path = getenv("DUET_TEST_CPU_WORKER");
    under_valgrind = getenv("DUET_TEST_VALGRIND") != NULL;
    dtypes = p->dtypes;
    n_dtypes = p->n_dtypes;
    if (p->device && under_valgrind) {
        printf("%s: SKIP: the CUDA runtime is not valgrind-clean (compute-sanitizer is its "
               "tool)\n",
               prog);
        return 77;
    }
    /* Under valgrind with two OpenMP threads, once many primitives sit in oneDNN's primitive cache
     * memcheck reports uninitialised values inside oneDNN's JIT code (a varying number, none with
     * the cache off or with one thread, none for any test alone). Until that is understood the
     * valgrind run keeps to what it is for, our own memory errors and leaks. */
    if (p->openmp && under_valgrind)
        setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0", 0);
    if (!plugin || access(plugin, R_OK) != 0) {
        printf("%s: SKIP: the %s worker plugin (%s=%s) is not there\n", prog, p->name, p->env,
               plugin ? plugin : "");
        return 77;
    }
    return EXIT_SUCCESS;
}

/* An OpenMP worker's setup before the suite: one handle for the whole run, as a host keeps, so
 * that the workers' own loads never unload libdnnl under libgomp's live thread pool (which
 * valgrind reports as errors); dlopen runs no OpenMP, so Check may still fork. Then the bf16
 * probe. False with a message when the plugin does not load. */
static bool openmp_setup(void)
{
    if (duet_plugin_load(plugin_path, NULL, NULL, &pinned, wk_err, sizeof(wk_err)) !=
        DUET_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", prog, wk_err);
        return false;
    }
    if (n_dtypes > 1)
        probe_bf16();
    return true;
}

bool harness_init(unsigned want)
{
    if (profile->openmp)
        want |= MODEL_BIT(M_LLAMA_F32); /* the bf16 probe's */
    if (!models_generate(want))
        return false;
    return !profile->openmp || openmp_setup();
}

void harness_fini(void)
{
    duet_plugin_unload(pinned);
    pinned = NULL;
    models_remove();
}
