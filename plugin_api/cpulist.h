/*
 * cpulist.h — CPU lists in Linux cpulist syntax ("0-3,8", as /sys/devices/system/cpu/online and
 * taskset -c write them), the value of target.cpus and speculative.cpus (docs/configuration.md).
 *
 * Compiled into libduet (the configuration checks a list when it is read) and into the worker kit
 * (a CPU worker reads its own list), so both sides parse a list the same way. Nothing here keeps
 * state: the functions are safe from any thread.
 */
#ifndef DUET_PLUGIN_API_CPULIST_H
#define DUET_PLUGIN_API_CPULIST_H

#ifndef _GNU_SOURCE
#error "cpulist.h needs _GNU_SOURCE (cpu_set_t) before the first system header"
#endif

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Parses text ("N", "A-B", comma-separated, no spaces, A <= B, every CPU below CPU_SETSIZE) into
 * *set. On failure returns false with the reason in err[err_size] ("CPU list is empty", "bad
 * range '3-1' ..."), *set then undefined.
 */
bool duet__cpulist_parse(const char *text, cpu_set_t *set, char *err, size_t err_size);

/*
 * Checks that every CPU of set is present on this machine and allowed by allowed (the process's
 * affinity mask). On failure returns false with the first offending CPU and the allowed CPUs in
 * err[err_size].
 */
bool duet__cpulist_check(const cpu_set_t *set, const cpu_set_t *allowed, char *err,
                         size_t err_size);

/* Writes set in cpulist syntax ("0-3,8") into buf[size] (truncated, NUL-terminated). */
void duet__cpulist_format(const cpu_set_t *set, char *buf, size_t size);

#endif /* DUET_PLUGIN_API_CPULIST_H */
