/*
 * bench.h — the harness duet-bench's benchmarks share: a timer that repeats an operation until a
 * time budget is spent and reports the median over repetitions, and JSON output (jansson).
 */
#ifndef DUET_BENCH_H
#define DUET_BENCH_H

#include <duet/model.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define DUET_BENCH_MAX_LIST 16      /* entries of each list option */
#define DUET_BENCH_MAX_THREADS 1024 /* of the bandwidth probe */

/* Options of the cpu-worker and gpu-worker benchmarks; an empty list means its default. */
struct duet_bench_worker_opts {
    const char *plugin;                       /* --plugin NAME|PATH: "cpu" */
    const char *models;                       /* --models DIR: generated models, "bench-models" */
    const char *presets[DUET_BENCH_MAX_LIST]; /* --preset: llama-68m, tinyllama-1.1b */
    int n_presets;
    const char *dtypes[DUET_BENCH_MAX_LIST]; /* --dtype: f32, bf16 */
    int n_dtypes;
    uint32_t batches[DUET_BENCH_MAX_LIST]; /* --batch: 1, 4, 16 */
    int n_batches;
    uint32_t threads;         /* --threads: 0 = every online CPU */
    uint32_t prompt_len;      /* --prompt-len: 0 = 512 (64 with --quick) */
    uint32_t context;         /* --context: 0 = 128 (32 with --quick) */
    uint32_t device;          /* --device: gpu-worker's first CUDA device, 0 */
    uint32_t tensor_parallel; /* --tensor-parallel: gpu-worker's ranks, 0 = the plugin's (1) */
};

/* Options of the spec benchmark (it also reads the cpu-worker options --plugin, --models,
 * --dtype, --batch and --threads); an empty list means its default. */
struct duet_bench_spec_opts {
    const char *target;               /* --spec-target PRESET: llama-160m (tiny with --quick) */
    uint32_t draft_layers;            /* --draft-layers: 0 = 1 */
    double draft_noise;               /* --draft-noise: < 0 = 0.02 */
    double tail_scale;                /* --tail-scale: 0 = 1/64 */
    uint32_t ks[DUET_BENCH_MAX_LIST]; /* --k: 1, 2, 3, 4, 6 (2 with --quick) */
    int n_ks;
    uint32_t max_tokens; /* --max-tokens: 0 = 128 (16 with --quick) */
};

/* Options of the overlap benchmark (it also reads --preset (the draft), --dtype (the draft's
 * weights), --batch, --threads (the draft's), --models, and spec's --k and --max-tokens). */
struct duet_bench_overlap_opts {
    const char *acceptance; /* --acceptance synthetic|real: "synthetic" */
    double alpha;           /* --alpha: synthetic acceptance rate, < 0 = 0.8 */
    const char *modelled;   /* --modelled PATH: the wrapper plugin (default: the build tree's) */
    double a_s;             /* --model-a: seconds per forward pass, < 0 = the wrapper's 5.0 ms */
    double b_s;             /* --model-b: seconds per fed position, < 0 = the wrapper's 28.3 us */
};

/* Options of the gemv benchmark (it also reads --preset, --batch and --threads). */
struct duet_bench_gemv_opts {
    uint32_t group;                        /* --group: int8 / int4 group, 0 = 32 */
    const char *isas[DUET_BENCH_MAX_LIST]; /* --isa: generic, avx2, avx512 (default: the
                                              supported SIMD ones; generic too with --quick) */
    int n_isas;
    const char *fmts[DUET_BENCH_MAX_LIST]; /* --fmt: bf16, int8, int4, bf16_f32, f16 */
    int n_fmts;
    uint32_t prefill; /* --gemv-prefill: rows of the int8 prefill shape, 0 = 512 (32 quick) */
};

/* Options of the tokenizer benchmark. */
struct duet_bench_tokenizer_opts {
    const char *dir;  /* --tokenizer DIR: the folder with tokenizer.json (required) */
    const char *text; /* --text FILE: the text to encode (default: generated English words) */
};

/* Options every benchmark receives. */
struct duet_bench_opts {
    double seconds;                       /* time budget of one measurement, split over `repeats` */
    int repeats;                          /* repetitions; the median is reported */
    bool quick;                           /* smaller sizes, for the test suite */
    struct duet_bench_worker_opts worker; /* cpu-worker and spec */
    struct duet_bench_spec_opts spec;     /* spec only */
    struct duet_bench_gemv_opts gemv;     /* gemv only */
    struct duet_bench_overlap_opts ov;    /* overlap only */
    struct duet_bench_tokenizer_opts tok; /* tokenizer only */
};

/* One measured operation: median and best nanoseconds per operation over the repetitions. */
struct duet_bench_result {
    const char *name; /* "append_1_token_256_seqs" */
    double ns_median; /* per operation */
    double ns_best;
    uint64_t ops; /* operations timed in all repetitions */
};

/* The tokenizer benchmark (bench/tokenizer.c): load, encode, decode and stream. */
int duet__bench_tokenizer(const struct duet_bench_opts *o, json_t *results);

/* Monotonic time in nanoseconds. */
uint64_t duet__bench_now_ns(void);
/* duet_config_set of a printf-formatted "key=value"; on failure prints "duet-bench: BENCH: the
 * error" and returns 1 (0 on success). */
struct duet_config;
int duet__bench_config_setf(struct duet_config *cfg, const char *bench, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds a result to the JSON array `results`: name, ns_per_op (median), ns_per_op_best,
 * ops_per_s (from the median), operations; `extra` (may be NULL) is merged in and stolen. */
void duet__bench_report(json_t *results, const struct duet_bench_result *r, json_t *extra);

/* Per-repetition sample collection: record the time of each repetition (ns for `ops` ops). */
struct duet_bench_samples {
    double ns_per_op[64]; /* per repetition */
    int n;
    uint64_t ops;
};
void duet__bench_sample(struct duet_bench_samples *s, uint64_t ns, uint64_t ops);
void duet__bench_finish(const struct duet_bench_samples *s, const char *name,
                        struct duet_bench_result *out);

/* Measures the memory read bandwidth with `threads` threads (a pass of several over a buffer far
 * beyond the caches) and reports it as "memory_read_bandwidth" tagged with `when`; *best
 * (bytes/s) is raised to the best pass. Messages name `bench`. */
int duet__bench_bandwidth(const struct duet_bench_opts *o, const char *bench, uint32_t threads,
                          const char *when, json_t *results, double *best);

/* A short bandwidth probe to pair with each repetition of a measurement, so that a fraction of
 * the bandwidth limit compares two figures taken moments apart (the shared machine's bandwidth
 * moves by up to 2x within a run). create maps and touches `bytes` (NULL when it cannot); a
 * pass reads them once with `threads` threads. */
struct duet_bench_probe;
struct duet_bench_probe *duet__bench_probe_create(size_t bytes);
int duet__bench_probe_pass(struct duet_bench_probe *p, const char *bench, uint32_t threads,
                           double *bytes_per_s);
void duet__bench_probe_destroy(struct duet_bench_probe *p);

/* What tells the two worker benchmarks apart (bench/worker.c drives either plugin). */
struct duet__bench_worker_mode {
    const char *bench;      /* "cpu-worker" | "gpu-worker": messages and defaults */
    bool gpu;               /* target.device (and tensor_parallel) instead of target.threads;
                               bf16 and f16 only; no paired host-memory probe */
    const char *plugin_dir; /* the build tree's plugin folder, tried before the install one */
    /* The bandwidth probe run before each (preset, dtype) and at the end: appends a result
     * tagged with `when` and raises *best (bytes/s); 77 when it cannot run here. */
    int (*bandwidth)(const struct duet_bench_opts *o, const char *bench, uint32_t threads,
                     const char *when, json_t *results, double *best);
};

/* The worker benchmark of either mode (cpu-worker is duet__bench_cpu_worker). */
int duet__bench_worker(const struct duet_bench_opts *opts, const struct duet__bench_worker_mode *m,
                       json_t *results);

/* Generated models (bench/models.c). A preset's shapes, or "tiny" (a 2-layer, 64-wide Llama
 * for smoke tests), in bf16; false for an unknown name. */
bool duet__bench_preset_desc(const char *name, duet_model_desc *out);

struct duet__gen_params;
struct duet__draft_params;

/* Generates p's model into p->dir unless a usable model of its shapes is there already, after
 * checking that root (created if absent) has room; messages name the benchmark and label. */
int duet__bench_ensure_model(const char *bench, const char *root, const char *label,
                             const struct duet__gen_params *p);
/* The same for a draft derived from p->target_dir. */
int duet__bench_ensure_draft(const char *bench, const char *root, const char *label,
                             const struct duet__draft_params *p);

/* The benchmarks: each appends its results to `results` and returns 0, or prints an error and
 * returns nonzero. */
int duet__bench_block_manager(const struct duet_bench_opts *opts, json_t *results);
int duet__bench_scheduler(const struct duet_bench_opts *opts, json_t *results);
int duet__bench_cpu_worker(const struct duet_bench_opts *opts, json_t *results);
/* The scoring cost curve of the CPU worker (bench/worker.c; the cpu-worker options). */
int duet__bench_score(const struct duet_bench_opts *opts, json_t *results);
/* gpu-worker (bench/gpu.c, built with CUDA): 77 (skip) when no CUDA device is present. */
int duet__bench_gpu_worker(const struct duet_bench_opts *opts, json_t *results);
int duet__bench_spec(const struct duet_bench_opts *opts, json_t *results);
/* overlap (bench/overlap.c): the engine with a modelled GPU target and a CPU draft. */
int duet__bench_overlap(const struct duet_bench_opts *opts, json_t *results);
int duet__bench_gemv(const struct duet_bench_opts *opts, json_t *results);
/* peak (bench/peak.c): the compute peak per instruction kind on 1 and --threads threads. */
int duet__bench_peak(const struct duet_bench_opts *opts, json_t *results);
/* The peak of one kind ("fma_f32_ymm", "fma_f32_zmm", "dpbf16_zmm", "dpbusd_zmm", "maddubs_ymm")
 * on `threads` threads in 10^9 operations per second (2 per multiply-add); 0 where the CPU lacks
 * it. Takes about opts->seconds (0.05 s with --quick). */
double duet__bench_peak_gops(const struct duet_bench_opts *opts, const char *kind,
                             uint32_t threads);

#endif /* DUET_BENCH_H */
