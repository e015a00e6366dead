/*
 * worker_harness.h — what the worker suites share (worker_harness.c): the generated models, the
 * per-worker profiles, a worker opened through its ABI (the wk_* helpers), the outputs of one
 * execute, the double-precision reference and the assertions that compare a worker with it.
 *
 * Three programs use it:
 *
 *   check_worker_conformance  the ABI contract, against whichever plugin it is given (mock, CPU,
 *                             GPU); tests/conformance.sh runs it for tests/worker-NAME.conformance
 *   check_cpu_worker          what only the CPU worker has (quantisation, threads, dtype probing)
 *   check_gpu_worker          what only the GPU worker has (devices, tensor parallelism, ...)
 *
 * Logits are not exposed by the ABI. A row is compared through its probability row: with
 * temperature T and no filter (top_k 0, top_p 1, min_p 0) probs = softmax(logits / T), so
 * log(probs) is the log-softmax of logits / T, that is the logits up to a shift. Tolerances:
 *
 *     |log(p_worker[v]) - log_softmax(z)[v]|  <=  tol × max(1, max |z|),   z = logits_ref / T
 *
 * with tol = the profile's tol_f32 for f32 compute (1e-4 on the CPU, 2e-4 on the GPU), 2e-2 for
 * bf16 and 5e-3 for f16, over every token v whose reference probability is at least e^-20 of the
 * top one (below that a float probability carries no information worth testing). The argmax must
 * be the reference's, unless the reference's top two are within 2 × that bound of each other
 * (then either may win). Two worker results that must be "the same" (batching, block tables,
 * drafting, scoring, cache operations, tensor parallelism) are held to the same bound against each
 * other and each against the reference; their sampled tokens must be equal unless the seeded draw
 * u lies within 2 × that bound of a CDF boundary of the row.
 *
 * A token sampled from a row at fed position p is the token at position p + 1: it must be the
 * inverse CDF of the returned probability row at u = duet__rng_uniform(seed, p + 1,
 * DUET_DRAW_SAMPLE) (sampling.h), to within 1e-5 of float rounding.
 *
 * A program includes this after defining _GNU_SOURCE (nftw, in test_dirs.h).
 */
#ifndef DUET_WORKER_HARNESS_H
#define DUET_WORKER_HARNESS_H

#include <duet/config.h>
#include <duet/loader.h>
#include <duet/model.h>
#include <duet/plugin.h>

#include "../model/model-int.h"
#include "../sampling/sampling.h"
#include "reference_forward.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOL_F32 1e-4
/* GPU f32: cuBLAS picks its GEMM algorithm (split-K, tile order) per shape and the attention
 * kernels sum over tiles with an online softmax, so f32 sums are rounded in other orders than on
 * the CPU (and than in the reference's sequential loops): twice the CPU's bound. */
#define TOL_GPU_F32 2e-4
#define TOL_BF16 2e-2
#define TOL_F16 5e-3
#define CUTOFF_NATS 20.0 /* tokens compared: reference log-probability within this of the top */
#define DRAW_SLACK 1e-5  /* float rounding allowed in a CDF interval */

/* ---- what differs between the workers under test ------------------------------------------- */

struct worker_profile {
    const char *name;           /* the plugin's name (duet_worker_plugin.name) */
    const char *env;            /* the variable that names its plugin in `make check` */
    bool numerics;              /* runs the model folder's forward pass: the reference applies */
    bool threads;               /* has a "threads" setting */
    bool openmp;                /* starts OpenMP threads: pinned once, bf16 probed in a child */
    bool device;                /* needs a device: SKIP without one and under valgrind */
    double tol_f32;             /* relative tolerance of f32 compute */
    const char *cache_settings; /* the cache group's settings besides block_size */
    uint64_t caps;              /* duet_worker_plugin.caps exactly, besides caps_optional */
    uint64_t caps_optional;     /* caps it may have or not (DUET_CAP_TP: with NCCL) */
    const char *details_names;  /* a word its details must contain, or NULL */
    uint64_t budget_zero_bytes; /* the bytes of a budget of 0; 0: sized from the device */
    const char *const *dtypes;  /* compute dtypes it runs, f32 first */
    int n_dtypes;               /* entries of dtypes */
    int case_timeout;           /* seconds a test case may take */
};

/* The profile of the worker whose plugin is called name, or NULL. */
const struct worker_profile *worker_profile_find(const char *name);

/* ---- the models, generated once ------------------------------------------------------------ */

enum {
    M_LLAMA_F32,   /* GQA Llama, f32 file */
    M_LLAMA_BF16,  /* the same values in a bf16 file */
    M_LLAMA3,      /* tied embeddings, one KV head, llama3 RoPE scaling, bf16 file */
    M_OPT_PRE,     /* OPT, pre-LayerNorm, 3 layers, f32 file */
    M_OPT_POST,    /* OPT, post-LayerNorm, project_in / project_out, bf16 file */
    M_SMALL_VOCAB, /* 12 tokens: the chi-square test */
    M_LLAMA_68M,   /* preset shape, f32 file */
    M_OPT_125M,    /* preset shape, bf16 file */
    M_QWEN2,       /* q/k/v biases, tied embeddings, f32 file */
    M_QWEN3,       /* per-head q/k RMSNorm, head_dim 32 != hidden / heads, GQA, bf16 file */
    M_MISTRAL_SW,  /* sliding window of 12 positions (not a multiple of any block size), f32 */
    N_MODELS
};
#define MODEL_BIT(m) (1u << (m))
#define ALL_MODELS (MODEL_BIT(N_MODELS) - 1)
#define PRESET_MODELS (MODEL_BIT(M_LLAMA_68M) | MODEL_BIT(M_OPT_125M))

struct tmodel {
    const char *name;     /* folder under tmpdir */
    duet_model_desc desc; /* as generated; torch_dtype is the file dtype */
    bool preset;          /* a public model's shape: large */
    bool ready;           /* generated */
    char dir[4200];       /* tmpdir/name */
};

/* ---- the state of a test program (set by harness_init) ------------------------------------- */

extern struct tmodel models[N_MODELS];
extern const struct worker_profile *profile; /* the worker under test */
extern const char *prog;                     /* the program's name, for messages */
extern const char *plugin_path;              /* the worker under test */
extern const char *cpu_plugin_path;          /* $DUET_TEST_CPU_WORKER (or NULL): the CPU worker */
extern bool under_valgrind; /* DUET_TEST_VALGRIND: no preset-sized models, fewer samples */
extern char wk_err[4096];   /* the last message of a create or a load */

/* Compute dtypes tested: the profile's, or 1 (f32) where bf16 compute cannot run (harness_init). */
extern const char *const *dtypes;
extern int n_dtypes;

/*
 * Before anything else: sets the state above for the worker of profile p whose plugin is at
 * plugin (NULL: none). EXIT_SUCCESS to go on, or 77 (automake's SKIP, with a line saying why) when
 * the worker cannot be tested here: its plugin is not there, or it needs a device and runs under
 * valgrind.
 */
int harness_check(const char *program, const struct worker_profile *p, const char *plugin);

/*
 * Then: generates the models of want (a mask of MODEL_BIT; the presets only outside valgrind)
 * under $DUET_TEST_BUILDDIR, and for an OpenMP worker loads the plugin once for the whole run and
 * probes bf16 compute (n_dtypes becomes 1 where it cannot run). False with a message on failure.
 * harness_fini undoes it, whatever it got to.
 */
bool harness_init(unsigned want);
void harness_fini(void);

/* ---- small utilities ----------------------------------------------------------------------- */

uint64_t mix2(uint64_t seed, uint64_t i);
void make_tokens(int32_t *t, uint32_t n, uint32_t vocab, uint64_t seed);
void table_range(uint32_t *t, uint32_t n, uint32_t first);
void table_shuffled(uint32_t *t, uint32_t n, uint32_t num_blocks, uint64_t seed);
uint32_t blocks_for(uint32_t positions, uint32_t block_size);
double tol_of(const char *dtype);
duet_sampling_params sp_plain(uint64_t seed);
duet_sampling_params sp_greedy(void);
duet_seq seq_make(uint64_t id, const int32_t *tokens, uint32_t n, uint32_t pos,
                  const uint32_t *table, uint32_t n_blocks, uint32_t n_outputs,
                  duet_sampling_params sp);

/* ---- the worker through the ABI ------------------------------------------------------------ */

struct wk_opts {
    const char *dtype;   /* "f32" (NULL) or "bf16", "f16" */
    const char *weights; /* NULL: not set ("auto") */
    int threads;         /* CPU worker: 0 = all cores (not a GPU worker setting) */
    uint32_t block_size; /* 0: 16 */
    uint32_t num_blocks; /* 0: no init_cache */
    uint32_t num_swap;   /* swap blocks */
    bool draft;          /* role DRAFT, section "speculative"; else TARGET, "target" */
    const char *extra;   /* more settings of the worker's group ("group_size = 32;"), or NULL */
    double tol;          /* tolerance against the reference; 0: that of dtype */
    bool cpu;            /* the CPU worker ($DUET_TEST_CPU_WORKER), not the one under test */
};

struct wk {
    duet_config *cfg;
    duet_host *host;
    duet_plugin *plugin;
    const duet_worker_plugin *t;
    duet_worker *w;
    duet_model_info info;
    uint32_t block_size; /* tokens per block */
    double tol;          /* relative tolerance of the compute dtype */
};

void config_text(char *text, size_t size, const char *dir, const struct wk_opts *o);
void wk_prepare(struct wk *k, const char *dir, const struct wk_opts *o);
duet_status wk_create(struct wk *k, const char *dir, const struct wk_opts *o);
duet_status wk_init_cache(struct wk *k, uint32_t num_blocks, uint32_t num_swap);
void wk_open(struct wk *k, const struct tmodel *m, const struct wk_opts *o);
void wk_close(struct wk *k);

/* Cache operations of a batch. */
struct ops {
    const duet_block_pair *swap_in, *swap_out, *copy;
    uint32_t n_swap_in, n_swap_out, n_copy;
};

/* The outputs of one execute, allocated from the batch. */
struct outs {
    uint32_t rows;     /* R */
    uint32_t fed;      /* P */
    uint32_t vocab;    /* V */
    uint32_t stride;   /* max_logprobs (at least 1 for the allocation) */
    int32_t *tokens;   /* [R] */
    float *probs;      /* [R][V] */
    float *token_lp;   /* [R] */
    duet_logprob *lp;  /* [R][stride] */
    duet_logprob *plp; /* [P][stride] */
    float *pnext;      /* [P] */
};

void outs_free(struct outs *o);
void outs_alloc(struct outs *o, const duet_seq *seqs, uint32_t n, uint32_t vocab, uint32_t stride);
duet_status exec_full(struct wk *k, const duet_seq *seqs, uint32_t n, uint32_t flags,
                      const struct ops *ops, struct outs *o, uint32_t rows_given, uint32_t stride);
void exec_ok(struct wk *k, const duet_seq *seqs, uint32_t n, uint32_t flags, const struct ops *ops,
             struct outs *o);
void prefill_silent(struct wk *k, const int32_t *tokens, uint32_t n, uint32_t pos,
                    const uint32_t *table, uint32_t n_blocks);
void cache_ops(struct wk *k, const struct ops *ops);

/* ---- the reference ------------------------------------------------------------------------- */

/* The reference's log-probabilities of one row and the bound of comparisons with it. */
struct ref_row {
    double *lp;     /* [vocab] log_softmax(logits / T) */
    double lim;     /* tol × max(1, max |logits / T|) */
    uint32_t top;   /* argmax */
    uint32_t vocab; /* entries */
};

double *reference(const struct tmodel *tm, const int32_t *tokens, uint32_t n);
double ref_log_softmax(const double *logits, uint32_t vocab, double temperature, double *lp);
void ref_row_init(struct ref_row *rr, const double *logits, uint32_t vocab, double t, double tol);
void ref_row_fini(struct ref_row *rr);
bool ref_row_counts(const struct ref_row *rr, uint32_t v);
uint32_t row_argmax(const float *p, uint32_t vocab);

/* ---- assertions ---------------------------------------------------------------------------- */

void assert_argmax(const struct ref_row *rr, uint32_t got, const char *what, uint32_t row);
void assert_distribution(const float *p, uint32_t vocab, const char *what, uint32_t row);
void assert_row_matches(const float *p, const double *logits, uint32_t vocab, double t, double tol,
                        const char *what, uint32_t row);
void assert_greedy_row(const float *p, int32_t token, const double *logits, uint32_t vocab,
                       double tol, const char *what, uint32_t row);
void assert_rows_agree(const float *a, const float *b, const double *logits, uint32_t vocab,
                       double t, double tol, const char *what, uint32_t row);
void cdf_interval(const float *p, uint32_t vocab, int32_t t, double *lo, double *hi);
void assert_sampled(const float *p, uint32_t vocab, int32_t token, uint64_t seed, uint32_t pos,
                    const char *what, uint32_t row);
void assert_same_token(const float *a, int32_t ta, int32_t tb, uint32_t vocab, double u,
                       double margin, const char *what, uint32_t row);
void assert_rows_match(const struct outs *o, uint32_t r0, uint32_t n, const double *logits,
                       uint32_t pos0, double t, uint64_t seed, double tol, const char *what);
void assert_runs_agree(const struct outs *a, uint32_t ra, const struct outs *b, uint32_t rb,
                       uint32_t n, const double *logits, uint32_t pos0, double t, uint64_t seed,
                       double tol, const char *what);
void assert_top_list(const duet_logprob *top, uint32_t n, const double *logits, uint32_t vocab,
                     double tol, const char *what, uint32_t row);
void assert_prompt_logprobs(const struct outs *o, uint32_t f0, uint32_t n_fed, uint32_t fed_pos0,
                            const int32_t *tokens, const double *logits, uint32_t n_top, double tol,
                            const char *what);
void assert_refused(struct wk *k, duet_status st, duet_status want, uint64_t seq_id,
                    const char *what);

/* ---- checks more than one program runs ----------------------------------------------------- */

double check_prefill_with(const struct tmodel *tm, struct wk_opts o, uint32_t n, uint64_t seed);
/* models[m] written again as a GGUF file of dtype beside its folder (duet__gguf_write, what
 * duet-mkmodel --gguf does): a tmodel whose dir is the file. */
struct tmodel gguf_of(int m, duet_dtype dtype);
void check_preset(const struct tmodel *tm, struct wk_opts base);

/* One create that must end with want: on failure no worker and a message that names `named`
 * (when not NULL). */
struct create_case {
    const char *dtype, *weights; /* NULL weights: not set */
    const char *extra;           /* more settings, or NULL */
    duet_status want;
    const char *named; /* a word the refusal must contain, or NULL */
};

void check_create(const struct tmodel *tm, const struct create_case *c);

#endif /* DUET_WORKER_HARNESS_H */
