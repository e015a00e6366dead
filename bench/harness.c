/* The shared benchmark harness: timing, medians, JSON results. */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <stdlib.h>
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
