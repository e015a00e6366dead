/*
 * cpulist.c — parsing, checking and writing CPU lists (cpulist.h).
 *
 * The syntax is the kernel's cpulist without its stride form: a comma-separated list of CPU
 * numbers and inclusive ranges, "0-3,8". Repeated or overlapping items are allowed (the union is
 * taken), as the kernel allows them; an empty list, an empty item ("0,,1", "0,"), a reversed range,
 * spaces, signs and numbers of CPU_SETSIZE or more are not. "Present" is the configured CPU count
 * (get_nprocs_conf): a CPU number at or beyond it names no CPU of this machine.
 */
#define _GNU_SOURCE
#include "cpulist.h"

#include <stdio.h>
#include <sys/sysinfo.h>

/* Reads a CPU number at *p (digits only) into *out and advances *p; false when none or too big. */
static bool read_cpu(const char **p, long *out)
{
    const char *s = *p;
    long v = 0;

    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v >= CPU_SETSIZE)
            return false;
    }
    *p = s;
    *out = v;
    return true;
}

/* Adds the item at *p ("N" or "A-B") to set and advances *p past it; false when malformed. */
static bool read_item(const char **p, cpu_set_t *set)
{
    long lo, hi;

    if (!read_cpu(p, &lo))
        return false;
    hi = lo;
    if (**p == '-') {
        (*p)++;
        if (!read_cpu(p, &hi) || hi < lo)
            return false;
    }
    for (long c = lo; c <= hi; c++)
        CPU_SET((size_t)c, set);
    return true;
}

bool duet__cpulist_parse(const char *text, cpu_set_t *set, char *err, size_t err_size)
{
    const char *p = text, *item = text;

    CPU_ZERO(set);
    if (!text || !*text) {
        snprintf(err, err_size, "CPU list is empty (expected CPU numbers and ranges: \"0-3,8\")");
        return false;
    }
    while (read_item(&p, set)) {
        if (*p == '\0')
            return true;
        if (*p != ',')
            break;
        item = ++p;
    }
    snprintf(err, err_size,
             "bad CPU list \"%s\" at \"%s\" (expected CPU numbers below %d and ranges A-B with "
             "A <= B, separated by commas: \"0-3,8\")",
             text, item, CPU_SETSIZE);
    return false;
}

bool duet__cpulist_check(const cpu_set_t *set, const cpu_set_t *allowed, char *err, size_t err_size)
{
    long present = get_nprocs_conf();
    char have[256];

    for (long c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET((size_t)c, set) || (c < present && CPU_ISSET((size_t)c, allowed)))
            continue;
        if (c >= present) {
            snprintf(err, err_size, "CPU %ld is not present: this machine has CPUs 0-%ld", c,
                     present - 1);
            return false;
        }
        duet__cpulist_format(allowed, have, sizeof(have));
        snprintf(err, err_size,
                 "CPU %ld is not allowed by the process's affinity mask (allowed: %s)", c, have);
        return false;
    }
    return true;
}

void duet__cpulist_format(const cpu_set_t *set, char *buf, size_t size)
{
    size_t len = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    for (long c = 0; c < CPU_SETSIZE; c++) {
        long hi = c;
        int n;

        if (!CPU_ISSET((size_t)c, set))
            continue;
        while (hi + 1 < CPU_SETSIZE && CPU_ISSET((size_t)(hi + 1), set))
            hi++;
        n = hi > c ? snprintf(buf + len, size - len, "%s%ld-%ld", len ? "," : "", c, hi)
                   : snprintf(buf + len, size - len, "%s%ld", len ? "," : "", c);
        if (n < 0 || (size_t)n >= size - len)
            return; /* truncated: snprintf left it NUL-terminated */
        len += (size_t)n;
        c = hi;
    }
}
