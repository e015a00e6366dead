/*
 * util.c — the helpers under every other engine file (engine-int.h has the map): failing with
 * a message in e->error, the monotonic clock, growing an array. It calls no other engine file.
 */
#include "build_config.h"

#include "engine-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

duet_status duet__engine_fail(duet_engine *e, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(e->error, sizeof(e->error), fmt, ap);
    va_end(ap);
    return st;
}

uint64_t duet__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double duet__now_s(void)
{
    return (double)duet__now_ns() * 1e-9;
}

bool duet__grow(void **p, uint32_t *cap, uint32_t want, size_t elem)
{
    void *q;
    uint32_t c;

    if (want <= *cap)
        return true;
    c = *cap ? *cap : 8;
    while (c < want)
        c *= 2;
    q = realloc(*p, (size_t)c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}
