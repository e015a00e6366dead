/* The shared benchmark harness: timing, medians, JSON results. */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include "bench.h"

#include <duet/config.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

uint64_t duet__bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void duet__bench_sample(struct duet_bench_samples *s, uint64_t ns, uint64_t ops)
{
    if (s->n < (int)(sizeof(s->ns_per_op) / sizeof(s->ns_per_op[0])) && ops > 0)
        s->ns_per_op[s->n++] = (double)ns / (double)ops;
    s->ops += ops;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

void duet__bench_finish(const struct duet_bench_samples *s, const char *name,
                        struct duet_bench_result *out)
{
    double sorted[64];

    *out = (struct duet_bench_result){.name = name, .ops = s->ops};
    if (s->n == 0)
        return;
    for (int i = 0; i < s->n; i++)
        sorted[i] = s->ns_per_op[i];
    qsort(sorted, (size_t)s->n, sizeof(double), cmp_double);
    out->ns_best = sorted[0];
    out->ns_median = s->n % 2 ? sorted[s->n / 2] : (sorted[s->n / 2 - 1] + sorted[s->n / 2]) / 2;
}

void duet__bench_report(json_t *results, const struct duet_bench_result *r, json_t *extra)
{
    json_t *o =
        json_pack("{s:s, s:f, s:f, s:f, s:I}", "name", r->name, "ns_per_op", r->ns_median,
                  "ns_per_op_best", r->ns_best, "ops_per_s",
                  r->ns_median > 0 ? 1e9 / r->ns_median : 0.0, "operations", (json_int_t)r->ops);

    if (o && extra)
        json_object_update(o, extra);
    json_decref(extra);
    if (o)
        json_array_append_new(results, o);
}

/* ---- memory bandwidth (cpu-worker, gemv) ------------------------------------------------------
 *
 * `threads` threads each sum their share of a 1 GiB buffer (far beyond the L3 cache), in GB/s
 * (10^9 bytes). */

#define BW_BYTES (1ull << 30)
#define BW_QUICK_BYTES (64ull << 20)
#define BW_PASSES 20

typedef uint64_t bw_vec __attribute__((vector_size(16)));

struct bw_part {
    const bw_vec *p; /* this thread's share of the buffer */
    size_t n;        /* vectors in it (a multiple of 4) */
    uint64_t sum;    /* what it read, so that the reads are not optimised away */
};

static void *bw_read(void *arg)
{
    struct bw_part *part = arg;
    bw_vec a = {0}, b = {0}, c = {0}, d = {0};

    for (size_t i = 0; i < part->n; i += 4) {
        a += part->p[i];
        b += part->p[i + 1];
        c += part->p[i + 2];
        d += part->p[i + 3];
    }
    a += b + c + d;
    part->sum = a[0] + a[1];
    return NULL;
}

/* One pass over the buffer by `threads` threads (the calling one included); ns of the pass. */
static int bw_pass(const char *bench, const void *buf, size_t bytes, uint32_t threads, uint64_t *ns,
                   uint64_t *sink)
{
    struct bw_part parts[DUET_BENCH_MAX_THREADS] = {{0}};
    pthread_t tids[DUET_BENCH_MAX_THREADS];
    size_t per = bytes / sizeof(bw_vec) / threads / 4 * 4;
    uint64_t t0 = duet__bench_now_ns();
    uint32_t started = 1;
    int rc = 0;

    for (uint32_t t = 0; t < threads; t++)
        parts[t] = (struct bw_part){.p = (const bw_vec *)buf + t * per, .n = per};
    for (; started < threads; started++)
        if (pthread_create(&tids[started], NULL, bw_read, &parts[started]) != 0) {
            rc = 1;
            break;
        }
    bw_read(&parts[0]);
    for (uint32_t t = 1; t < started; t++)
        pthread_join(tids[t], NULL);
    *ns = duet__bench_now_ns() - t0;
    for (uint32_t t = 0; t < started; t++)
        *sink += parts[t].sum;
    if (rc)
        fprintf(stderr, "duet-bench: %s: cannot start %u threads\n", bench, threads);
    return rc;
}

struct duet_bench_probe {
    void *buf;
    size_t bytes;
    uint64_t sink;
};

struct duet_bench_probe *duet__bench_probe_create(size_t bytes)
{
    struct duet_bench_probe *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->bytes = bytes;
    p->buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p->buf == MAP_FAILED) {
        free(p);
        return NULL;
    }
    madvise(p->buf, bytes, MADV_HUGEPAGE);
    memset(p->buf, 1, bytes);
    return p;
}

int duet__bench_probe_pass(struct duet_bench_probe *p, const char *bench, uint32_t threads,
                           double *bytes_per_s)
{
    uint64_t ns;

    if (bw_pass(bench, p->buf, p->bytes, threads, &ns, &p->sink))
        return 1;
    *bytes_per_s = (double)p->bytes * 1e9 / (double)(ns ? ns : 1);
    return 0;
}

void duet__bench_probe_destroy(struct duet_bench_probe *p)
{
    volatile uint64_t keep;

    if (!p)
        return;
    keep = p->sink;
    (void)keep;
    munmap(p->buf, p->bytes);
    free(p);
}

int duet__bench_bandwidth(const struct duet_bench_opts *o, const char *bench, uint32_t threads,
                          const char *when, json_t *results, double *best)
{
    size_t bytes = o->quick ? BW_QUICK_BYTES : BW_BYTES;
    int passes = o->quick ? 3 : BW_PASSES;
    struct duet_bench_samples s = {0};
    struct duet_bench_result r;
    volatile uint64_t keep;
    uint64_t sink = 0, ns;
    void *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (buf == MAP_FAILED) {
        fprintf(stderr, "duet-bench: %s: cannot map %zu bytes: %s\n", bench, bytes,
                strerror(errno));
        return 1;
    }
    madvise(buf, bytes, MADV_HUGEPAGE);
    memset(buf, 1, bytes); /* fault every page in before timing */
    for (int i = 0; i < passes; i++) {
        if (bw_pass(bench, buf, bytes, threads, &ns, &sink)) {
            munmap(buf, bytes);
            return 1;
        }
        duet__bench_sample(&s, ns, 1);
    }
    keep = sink;
    (void)keep;
    munmap(buf, bytes);
    duet__bench_finish(&s, "memory_read_bandwidth", &r);
    if ((double)bytes * 1e9 / r.ns_best > *best)
        *best = (double)bytes * 1e9 / r.ns_best;
    duet__bench_report(results, &r,
                       json_pack("{s:s, s:s, s:I, s:i, s:i, s:f, s:f}", "what",
                                 "read-only sum over a buffer (GB = 1e9 bytes); one operation is "
                                 "one pass over the buffer",
                                 "when", when, "buffer_bytes", (json_int_t)bytes, "threads",
                                 threads, "passes", passes, "gb_per_s", (double)bytes / r.ns_median,
                                 "gb_per_s_best", (double)bytes / r.ns_best));
    return 0;
}

int duet__bench_config_setf(struct duet_config *cfg, const char *bench, const char *fmt, ...)
{
    char buf[4400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (duet_config_set(cfg, buf)) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench, duet_config_error(cfg));
        return 1;
    }
    return 0;
}
