/*
 * GEMV kernel benchmark (gemv): the CPU worker's packed-weight kernels (cpu_worker/gemv.h) alone,
 * per ISA, weight format and shape, against the machine's memory bandwidth.
 *
 *   1. A bandwidth probe (bench/harness.c, as cpu-worker's) runs with the benchmark's threads
 *      before each (ISA, format) and at the end; the fractions below use the best pass of the run.
 *   2. For each shape of the chosen presets (llama-68m and tinyllama-1.1b: the qkv, o, gate_up,
 *      down and lm_head projections), random f32 weights are packed once per format, then copied
 *      until the copies pass WORKING_SET bytes, more than the L3 cache holds: calls cycle through
 *      the copies, so every call streams its weights from memory, as decode does.
 *   3. For each m (--batch, default 1, 4, 8; and --gemv-prefill rows, 512 by default, for int8 to
 *      show the compute throughput), one call of duet__gemv_run (threads: OpenMP, --threads) is
 *      one operation; the median over the repetitions is reported with
 *
 *        gb_per_s = weight bytes / time,  fraction_of_bandwidth = gb_per_s / best probe,
 *        gmac_per_s = m · n · k / time,
 *
 *      and gb_per_s_best from the best repetition: on a shared machine a parallel region waits
 *      for whichever thread the neighbours' load has preempted, so the median can stand for the
 *      scheduler rather than the kernel.
 *
 * Activations are prepared once per (shape, m) and are not timed: the worker prepares them once
 * for all the projections that share an input.
 */
#include "build_config.h"

#include "bench.h"

#include "../cpu_worker/gemv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define WORKING_SET (256ull << 20) /* bytes of weight copies a run cycles through */
#define QUICK_WORKING_SET (4ull << 20)
#define PREFILL_ROWS 512
#define QUICK_PREFILL_ROWS 32

struct shape {
    const char *name; /* "qkv" */
    uint32_t n, k;    /* outputs, inputs */
};

struct preset {
    const char *name;
    struct shape shapes[5];
};

static const struct preset presets[] = {
    {"llama-68m",
     {{"qkv", 2304, 768},
      {"o", 768, 768},
      {"gate_up", 6144, 768},
      {"down", 768, 3072},
      {"lm_head", 32000, 768}}},
    {"tinyllama-1.1b",
     {{"qkv", 2560, 2048},
      {"o", 2048, 2048},
      {"gate_up", 11264, 2048},
      {"down", 2048, 5632},
      {"lm_head", 32000, 2048}}},
    /* --quick: small enough for the test suite, odd sizes to take the partial-tile paths */
    {"tiny",
     {{"qkv", 200, 64}, {"o", 64, 64}, {"gate_up", 344, 64}, {"down", 64, 172}, {NULL, 0, 0}}},
};

/* by duet_gemv_fmt; bf16_f32 and f16 take f32 activations (the f32 compute of 2-byte weights) */
static const char *const fmt_names[] = {"bf16", "int8", "int4", "bf16_f32", "f16"};
static const uint32_t default_batches[] = {1, 4, 8};

/* One packed shape in one format and the copies it cycles through. */
struct packed {
    duet_gemv_weight w;      /* packed once; its data is copies[0] */
    duet_gemv_weight *views; /* [n_copies]: w with data pointing at each copy */
    void **copies;           /* [n_copies] */
    uint32_t n_copies;
};

/* What one measurement needs; the caller owns everything. */
struct gemv_run {
    const struct duet_bench_opts *o;
    json_t *results;
    const duet_gemv_ops *ops;
    const char *isa, *preset;
    const struct shape *shape;
    duet_gemv_fmt fmt;
    uint32_t threads;
};

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [−1, 1). */
static float rng_float(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) / (float)(1u << 23) - 1.0f;
}

static float *random_matrix(uint32_t rows, uint32_t cols, uint64_t seed)
{
    size_t n = (size_t)rows * cols;
    float *m = malloc(n * sizeof(float));

    for (size_t i = 0; m && i < n; i++)
        m[i] = rng_float(&seed) * 0.05f;
    return m;
}

static void packed_free(struct packed *p)
{
    for (uint32_t i = 1; i < p->n_copies; i++)
        free(p->copies[i]);
    free(p->copies);
    free(p->views);
    duet__gemv_weight_free(&p->w);
}

/* Packs W in fmt and copies it until the copies pass `working_set` bytes. */
static int packed_init(struct packed *p, const float *W, const struct gemv_run *r)
{
    uint64_t ws = r->o->quick ? QUICK_WORKING_SET : WORKING_SET;
    uint32_t group = r->o->gemv.group ? r->o->gemv.group : 32;
    char err[256];

    memset(p, 0, sizeof(*p));
    if (duet__gemv_weight_pack(&p->w, r->shape->name, W, NULL, r->shape->n, r->shape->k, r->fmt,
                               duet__gemv_fmt_16bit(r->fmt) ? 0 : group, false, err,
                               sizeof(err)) != DUET_STATUS_OK) {
        fprintf(stderr, "duet-bench: gemv: %s\n", err);
        return 1;
    }
    p->n_copies = (uint32_t)(ws / p->w.bytes + 2);
    p->copies = calloc(p->n_copies, sizeof(void *));
    p->views = calloc(p->n_copies, sizeof(duet_gemv_weight));
    if (!p->copies || !p->views)
        goto out_nomem;
    for (uint32_t i = 0; i < p->n_copies; i++) {
        size_t bytes = (p->w.bytes + DUET_GEMV_ALIGN - 1) / DUET_GEMV_ALIGN * DUET_GEMV_ALIGN;

        p->copies[i] = i ? aligned_alloc(DUET_GEMV_ALIGN, bytes) : p->w.data;
        if (!p->copies[i]) {
            p->n_copies = i;
            goto out_nomem;
        }
        if (i)
            memcpy(p->copies[i], p->w.data, p->w.bytes);
        p->views[i] = p->w;
        p->views[i].data = p->copies[i];
    }
    return 0;
out_nomem:
    fprintf(stderr, "duet-bench: gemv: out of memory for %u copies of %s\n", p->n_copies,
            r->shape->name);
    packed_free(p);
    return 1;
}

/* Times duet__gemv_run on m rows, cycling through the copies. */
static int measure(const struct gemv_run *r, const struct packed *p, uint32_t m, double bandwidth)
{
    const duet_gemv_weight *w = &p->w;
    float *x = random_matrix(m, w->k, 7 + m);
    float *y = malloc((size_t)m * w->n * sizeof(float));
    size_t act_bytes = duet__gemv_act_size(w, m);
    void *act = aligned_alloc(DUET_GEMV_ALIGN, (act_bytes + DUET_GEMV_ALIGN - 1) / DUET_GEMV_ALIGN *
                                                   DUET_GEMV_ALIGN);
    struct duet_bench_samples s = {0};
    struct duet_bench_result res;
    duet_gemv_act a;
    uint32_t next = 0;
    char name[160];
    double gbs, best;

    if (!x || !y || !act) {
        free(x);
        free(y);
        free(act);
        fprintf(stderr, "duet-bench: gemv: out of memory\n");
        return 1;
    }
    duet__gemv_act_prepare(w, x, w->k, m, NULL, 0, act, &a);
    duet__gemv_run(r->ops, &p->views[next++ % p->n_copies], &a, y, w->n); /* warm the threads */
    for (int rep = 0; rep < r->o->repeats; rep++) {
        uint64_t t0 = duet__bench_now_ns(), t, ops = 0;
        uint64_t budget = (uint64_t)(r->o->seconds / r->o->repeats * 1e9);

        do {
            duet__gemv_run(r->ops, &p->views[next++ % p->n_copies], &a, y, w->n);
            ops++;
            t = duet__bench_now_ns() - t0;
        } while (t < budget);
        duet__bench_sample(&s, t, ops);
    }
    snprintf(name, sizeof(name), "gemv_%s_%s_%s_%s_m%u", r->isa, fmt_names[r->fmt], r->preset,
             r->shape->name, m);
    duet__bench_finish(&s, name, &res);
    gbs = (double)w->bytes / res.ns_median;
    best = (double)w->bytes / res.ns_best;
    fprintf(stderr, "%-7s %-5s %-15s %-8s %6u %6u %4u %10.1f %8.1f %6.0f%% %9.1f %8.1f %6.0f%%\n",
            r->isa, fmt_names[r->fmt], r->preset, r->shape->name, w->n, w->k, m,
            res.ns_median / 1e3, gbs, 100 * gbs * 1e9 / bandwidth,
            (double)m * w->n * w->k / res.ns_median, best, 100 * best * 1e9 / bandwidth);
    duet__bench_report(
        r->results, &res,
        json_pack(
            "{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:b, s:i, s:I, s:i, s:f, s:f, s:f, s:f}",
            "isa", r->isa, "fmt", fmt_names[r->fmt], "preset", r->preset, "shape", r->shape->name,
            "n", w->n, "k", w->k, "m", m, "group", w->group, "asym", w->asym, "threads", r->threads,
            "weight_bytes", (json_int_t)w->bytes, "copies", p->n_copies, "gb_per_s", gbs,
            "gb_per_s_best", best, "fraction_of_bandwidth", gbs * 1e9 / bandwidth, "gmac_per_s",
            (double)m * w->n * w->k / res.ns_median));
    free(x);
    free(y);
    free(act);
    return 0;
}

/* Every m of one shape in one format. */
static int bench_shape(const struct gemv_run *r, const float *W, double bandwidth)
{
    const struct duet_bench_opts *o = r->o;
    struct packed p;
    int rc = 0;

    if (packed_init(&p, W, r))
        return 1;
    for (int i = 0; i < o->worker.n_batches && !rc; i++)
        rc = measure(r, &p, o->worker.batches[i], bandwidth);
    if (!rc && r->fmt == DUET_GEMV_INT8)
        rc = measure(r, &p,
                     o->gemv.prefill ? o->gemv.prefill
                                     : (o->quick ? QUICK_PREFILL_ROWS : PREFILL_ROWS),
                     bandwidth);
    packed_free(&p);
    return rc;
}

static const struct preset *find_preset(const char *name)
{
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

static bool selected(const char *const *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* One (ISA, format) over every shape of every preset; the weights are generated per shape. */
static int bench_isa_fmt(struct gemv_run *r, double *bandwidth)
{
    const struct duet_bench_opts *o = r->o;
    char when[64];

    snprintf(when, sizeof(when), "before %s %s", r->isa, fmt_names[r->fmt]);
    if (duet__bench_bandwidth(o, "gemv", r->threads, when, r->results, bandwidth))
        return 1;
    for (int i = 0; i < o->worker.n_presets; i++) {
        const struct preset *ps = find_preset(o->worker.presets[i]);

        r->preset = ps->name;
        for (const struct shape *sh = ps->shapes; sh < ps->shapes + 5 && sh->name; sh++) {
            float *W = random_matrix(sh->n, sh->k, 1 + sh->n * 31u + sh->k);
            int rc;

            if (!W) {
                fprintf(stderr, "duet-bench: gemv: out of memory\n");
                return 1;
            }
            r->shape = sh;
            rc = bench_shape(r, W, *bandwidth);
            free(W);
            if (rc)
                return 1;
        }
    }
    return 0;
}

static duet_gemv_kernel ops_kernel(const duet_gemv_ops *ops, duet_gemv_fmt f)
{
    return duet__gemv_ops_kernel(ops, f);
}

/* The fractions of every gemv result from index `first` on against the best probe of the run
 * (the highest bandwidth the machine showed, so the smallest fraction). */
static void rescale(json_t *results, size_t first, double bandwidth)
{
    for (size_t i = first; i < json_array_size(results); i++) {
        json_t *o = json_array_get(results, i);
        json_t *gbs = json_object_get(o, "gb_per_s");

        if (json_is_real(gbs))
            json_object_set_new(o, "fraction_of_bandwidth",
                                json_real(json_real_value(gbs) * 1e9 / bandwidth));
    }
}

/* Fills the defaults of the lists and checks the names; false with a message for a bad one. */
static bool default_lists(struct duet_bench_opts *o)
{
    struct duet_bench_worker_opts *w = &o->worker;
    struct duet_bench_gemv_opts *g = &o->gemv;

    if (!w->n_presets && o->quick)
        w->presets[w->n_presets++] = "tiny";
    if (!w->n_presets) {
        w->presets[w->n_presets++] = "llama-68m";
        w->presets[w->n_presets++] = "tinyllama-1.1b";
    }
    for (int i = 0; i < w->n_presets; i++)
        if (!find_preset(w->presets[i])) {
            fprintf(stderr,
                    "duet-bench: gemv: unknown preset '%s' (llama-68m, tinyllama-1.1b, "
                    "tiny)\n",
                    w->presets[i]);
            return false;
        }
    if (!w->n_batches)
        for (size_t i = 0; i < sizeof(default_batches) / sizeof(default_batches[0]); i++)
            w->batches[w->n_batches++] = default_batches[i];
    if (!g->n_fmts)
        for (int i = 0; i < DUET_GEMV_NUM_FMTS; i++)
            g->fmts[g->n_fmts++] = fmt_names[i];
    if (!g->n_isas) {
        if (o->quick)
            g->isas[g->n_isas++] = "generic";
        g->isas[g->n_isas++] = "avx2";
        g->isas[g->n_isas++] = "avx512";
    }
    return true;
}

int duet__bench_gemv(const struct duet_bench_opts *opts, json_t *results)
{
    struct duet_bench_opts o = *opts;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = o.worker.threads ? o.worker.threads : (uint32_t)(cpus > 0 ? cpus : 1);
    size_t first = json_array_size(results);
    double bandwidth = 0;

    if (threads > DUET_BENCH_MAX_THREADS) {
        fprintf(stderr, "duet-bench: gemv: at most %d threads\n", DUET_BENCH_MAX_THREADS);
        return 1;
    }
    if (!default_lists(&o))
        return 1;
#ifdef _OPENMP
    omp_set_num_threads((int)threads);
#endif
    fprintf(stderr, "%-7s %-5s %-15s %-8s %6s %6s %4s %10s %8s %7s %9s %8s %7s\n", "isa", "fmt",
            "preset", "shape", "n", "k", "m", "us/call", "GB/s", "of_bw", "GMAC/s", "best",
            "of_bw");
    for (duet_gemv_isa isa = DUET_GEMV_GENERIC; isa <= DUET_GEMV_AVX512; isa++) {
        struct gemv_run r = {.o = &o, .results = results, .threads = threads};

        r.isa = duet__gemv_isa_name(isa);
        r.ops = duet__gemv_ops(isa);
        if (!selected(o.gemv.isas, o.gemv.n_isas, r.isa))
            continue;
        if (!duet__gemv_isa_supported(isa)) {
            fprintf(stderr, "%-7s (not supported by this CPU)\n", r.isa);
            continue;
        }
        for (duet_gemv_fmt f = DUET_GEMV_BF16; f < DUET_GEMV_NUM_FMTS; f++) {
            r.fmt = f;
            if (!selected(o.gemv.fmts, o.gemv.n_fmts, fmt_names[f]))
                continue;
            if (!ops_kernel(r.ops, f)) { /* duet__gemv_run would fall back to generic */
                fprintf(stderr, "%-7s %-5s (no kernel in this build)\n", r.isa, fmt_names[f]);
                continue;
            }
            if (bench_isa_fmt(&r, &bandwidth))
                return 1;
        }
    }
    if (duet__bench_bandwidth(&o, "gemv", threads, "end", results, &bandwidth))
        return 1;
    fprintf(stderr, "best probe bandwidth: %.1f GB/s (%u threads)\n", bandwidth / 1e9, threads);
    rescale(results, first, bandwidth);
    return 0;
}
