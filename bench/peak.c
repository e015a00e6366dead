/*
 * peak.c — the CPU's compute peak per instruction kind (`duet-bench peak`), the figure the
 * cpu-worker benchmark divides its prefill GFLOP/s by.
 *
 * Each kind is one instruction (or the AVX2 int8 triple) on CHAINS independent accumulators, every
 * accumulator an input of its own next instruction, so nothing can be hoisted out of the loop and
 * the chains hide the instruction's latency (4–5 cycles at two a cycle needs 8–10 chains):
 *
 *   fma_f32_ymm    vfmadd ymm (AVX2 + FMA)        8 lanes × 2 = 16 flop
 *   fma_f32_zmm    vfmadd zmm (AVX-512F)         16 lanes × 2 = 32 flop
 *   dpbf16_zmm     vdpbf16ps zmm (AVX512-BF16)   16 lanes × 2 products × 2 = 64 flop
 *   dpbusd_zmm     vpdpbusd zmm (AVX512-VNNI)    16 lanes × 4 byte products × 2 = 128 op
 *   maddubs_ymm    vpmaddubsw, vpmaddwd (× 1), vpaddd ymm (AVX2): 32 byte products × 2 = 64 op
 *
 * `threads` POSIX threads run the same loop; the figure is every thread's operations over the wall
 * time from a barrier to the last join (the median over the repetitions). The kernels carry their
 * ISA in a target attribute and run only where CPUID (and the OS's XSAVE state) allows them.
 */
#include "bench.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHAINS 12

#define REP(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* Sink for the accumulators, so that the loops are not optimised away. */
static volatile float sink_f;
static volatile int sink_i;

__attribute__((target("avx2,fma"))) static void fma_ymm(uint64_t iters)
{
    __m256 b = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f), s;
#define DECL(j) __m256 a##j = _mm256_set1_ps(1.0f + (j)*1e-3f);
#define STEP(j) a##j = _mm256_fmadd_ps(a##j, b, c);
#define SUM(j) s = _mm256_add_ps(s, a##j);
    REP(DECL)
    for (uint64_t i = 0; i < iters; i++) {
        REP(STEP)
    }
    s = _mm256_setzero_ps();
    REP(SUM)
    sink_f = _mm256_cvtss_f32(s);
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f"))) static void fma_zmm(uint64_t iters)
{
    __m512 b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f), s;
#define DECL(j) __m512 a##j = _mm512_set1_ps(1.0f + (j)*1e-3f);
#define STEP(j) a##j = _mm512_fmadd_ps(a##j, b, c);
#define SUM(j) s = _mm512_add_ps(s, a##j);
    REP(DECL)
    for (uint64_t i = 0; i < iters; i++) {
        REP(STEP)
    }
    s = _mm512_setzero_ps();
    REP(SUM)
    sink_f = _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512bf16"))) static void dpbf16_zmm(uint64_t iters)
{
    /* 1e-3 × 1e-3 products: the sums stay normal and far from overflow */
    __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    __m512 s;
#define DECL(j) __m512 a##j = _mm512_set1_ps(1.0f + (j));
#define STEP(j) a##j = _mm512_dpbf16_ps(a##j, x, x);
#define SUM(j) s = _mm512_add_ps(s, a##j);
    REP(DECL)
    for (uint64_t i = 0; i < iters; i++) {
        REP(STEP)
    }
    s = _mm512_setzero_ps();
    REP(SUM)
    sink_f = _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512vnni"))) static void dpbusd_zmm(uint64_t iters)
{
    __m512i u = _mm512_set1_epi8(3), q = _mm512_set1_epi8(-5), s;
#define DECL(j) __m512i a##j = _mm512_set1_epi32(j);
#define STEP(j) a##j = _mm512_dpbusd_epi32(a##j, u, q);
#define SUM(j) s = _mm512_add_epi32(s, a##j);
    REP(DECL)
    for (uint64_t i = 0; i < iters; i++) {
        REP(STEP)
    }
    s = _mm512_setzero_si512();
    REP(SUM)
    sink_i = _mm512_reduce_or_epi32(s); /* or: the sums wrap, and a C add of them would overflow */
#undef DECL
#undef STEP
#undef SUM
}

/* AVX2's int8 dot: unsigned × signed bytes to pairs (vpmaddubsw), pairs to int32 (vpmaddwd by
 * ones), accumulated; the accumulator's bytes are the next unsigned operand. */
__attribute__((target("avx2"))) static void maddubs_ymm(uint64_t iters)
{
    __m256i q = _mm256_set1_epi8(-5), ones = _mm256_set1_epi16(1), s;
#define DECL(j) __m256i a##j = _mm256_set1_epi32(j);
#define STEP(j)                                                                                    \
    a##j = _mm256_add_epi32(a##j, _mm256_madd_epi16(_mm256_maddubs_epi16(a##j, q), ones));
#define SUM(j) s = _mm256_add_epi32(s, a##j);
    REP(DECL)
    for (uint64_t i = 0; i < iters; i++) {
        REP(STEP)
    }
    s = _mm256_setzero_si256();
    REP(SUM)
    sink_i = _mm256_extract_epi32(s, 0);
#undef DECL
#undef STEP
#undef SUM
}

struct peak_kind {
    const char *name;
    const char *isa;             /* what the CPU must have, for messages and JSON */
    double ops;                  /* flop (or int op) per loop iteration */
    void (*run)(uint64_t iters); /* the loop */
    bool (*supported)(void);     /* CPUID and OS state */
};

static bool has_avx2_fma(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static bool has_avx512f(void)
{
    return __builtin_cpu_supports("avx512f");
}
static bool has_avx512bf16(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}
static bool has_avx512vnni(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
}
static bool has_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}

static const struct peak_kind kinds[] = {
    {"fma_f32_ymm", "AVX2+FMA", CHAINS * 16.0, fma_ymm, has_avx2_fma},
    {"fma_f32_zmm", "AVX-512F", CHAINS * 32.0, fma_zmm, has_avx512f},
    {"dpbf16_zmm", "AVX512-BF16", CHAINS * 64.0, dpbf16_zmm, has_avx512bf16},
    {"dpbusd_zmm", "AVX512-VNNI", CHAINS * 128.0, dpbusd_zmm, has_avx512vnni},
    {"maddubs_ymm", "AVX2", CHAINS * 64.0, maddubs_ymm, has_avx2},
};

static const struct peak_kind *kind_of(const char *name)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i].name, name) == 0)
            return &kinds[i];
    return NULL;
}

struct peak_thread {
    const struct peak_kind *k;
    uint64_t iters;
    int go; /* set once every thread is made (or one failed: 2, and none runs) */
};

static void *peak_thread_main(void *arg)
{
    struct peak_thread *t = arg;
    int go;

    while ((go = __atomic_load_n(&t->go, __ATOMIC_ACQUIRE)) == 0)
        ;
    if (go == 1)
        t->k->run(t->iters);
    return NULL;
}

/* Nanoseconds for `threads` threads to run `iters` iterations each; 0 when a thread fails. */
static uint64_t peak_time(const struct peak_kind *k, uint32_t threads, uint64_t iters)
{
    pthread_t tid[DUET_BENCH_MAX_THREADS];
    struct peak_thread t = {.k = k, .iters = iters};
    uint32_t made = 0;
    uint64_t t0;

    while (made < threads && pthread_create(&tid[made], NULL, peak_thread_main, &t) == 0)
        made++;
    t0 = duet__bench_now_ns();
    __atomic_store_n(&t.go, made == threads ? 1 : 2, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < made; i++)
        pthread_join(tid[i], NULL);
    if (made < threads) {
        fprintf(stderr, "duet-bench: peak: could not start %u threads\n", threads);
        return 0;
    }
    t0 = duet__bench_now_ns() - t0;
    return t0 ? t0 : 1;
}

/* The median ops/s of kind k on `threads` threads over o's repetitions and time budget. */
static double peak_measure(const struct duet_bench_opts *o, const struct peak_kind *k,
                           uint32_t threads, struct duet_bench_samples *s)
{
    double budget = (o->quick ? 0.05 : o->seconds) / (o->repeats > 0 ? o->repeats : 1);
    uint64_t iters = 100000, ns = peak_time(k, 1, iters);
    struct duet_bench_result res;

    *s = (struct duet_bench_samples){0};
    if (ns == 0)
        return 0.0;

    /* a repetition runs about `budget` seconds on each thread */
    iters = (uint64_t)((double)iters * budget * 1e9 / (double)ns) + 1;
    for (int r = 0; r < (o->repeats > 0 ? o->repeats : 1); r++) {
        if ((ns = peak_time(k, threads, iters)) == 0)
            return 0.0;
        duet__bench_sample(s, ns, iters * threads);
    }
    duet__bench_finish(s, k->name, &res);
    return res.ns_median > 0 ? k->ops * 1e9 / res.ns_median : 0.0;
}

double duet__bench_peak_gops(const struct duet_bench_opts *o, const char *kind, uint32_t threads)
{
    const struct peak_kind *k = kind_of(kind);
    struct duet_bench_samples s;

    if (!k || !k->supported() || threads == 0 || threads > DUET_BENCH_MAX_THREADS)
        return 0.0;
    return peak_measure(o, k, threads, &s) / 1e9;
}

/* One result per (kind the CPU has, thread count): 1 and the worker's. */
int duet__bench_peak(const struct duet_bench_opts *o, json_t *results)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t all = o->worker.threads ? o->worker.threads : (uint32_t)(cpus > 0 ? cpus : 1);
    uint32_t counts[2] = {1, all};

    if (all > DUET_BENCH_MAX_THREADS) {
        fprintf(stderr, "duet-bench: peak: at most %d threads\n", DUET_BENCH_MAX_THREADS);
        return 1;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const struct peak_kind *k = &kinds[i];

        if (!k->supported()) {
            fprintf(stderr, "duet-bench: peak: %s skipped: no %s here\n", k->name, k->isa);
            continue;
        }
        for (int c = 0; c < (all > 1 ? 2 : 1); c++) {
            struct duet_bench_samples s;
            struct duet_bench_result res;
            char name[96];
            double gops = peak_measure(o, k, counts[c], &s) / 1e9;

            snprintf(name, sizeof(name), "peak_%s_%u_threads", k->name, counts[c]);
            duet__bench_finish(&s, name, &res);
            duet__bench_report(results, &res,
                               json_pack("{s:s, s:s, s:i, s:f, s:f, s:f}", "kind", k->name, "isa",
                                         k->isa, "threads", counts[c], "gop_per_s", gops,
                                         "gop_per_s_per_thread", gops / counts[c],
                                         "ops_per_iteration", k->ops));
        }
    }
    return 0;
}
