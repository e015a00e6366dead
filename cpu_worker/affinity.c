/*
 * affinity.c — pinning a CPU worker's OpenMP team and placing its memory (affinity.h has the
 * picture). hwloc does the binding and reads the topology (NUMA nodes, allowed CPUs); the list
 * itself is parsed by plugin_api/cpulist.c, as the host parsed it when it read the config.
 *
 * Why hwloc and not sched_setaffinity alone: pinning alone needs only the system call, but placing
 * weights on the NUMA node of the worker's CPUs needs the topology (which node holds which CPUs)
 * and a memory-policy call; hwloc gives both on every Linux, and its synthetic topologies let the
 * tests exercise the multi-node plan on a one-node machine.
 */
#define _GNU_SOURCE
#include "affinity.h"

#include "../plugin_api/cpulist.h"

#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct duet_cpu_affinity {
    hwloc_topology_t topo; /* this machine, loaded at create */
    hwloc_cpuset_t cpus;   /* the list; NULL without one */
    int *cpu_of;           /* [n_cpus] the list's CPUs ascending: member i runs on cpu_of[i % n] */
    uint32_t n_cpus;       /* CPUs in the list; 0 without one */
    hwloc_nodeset_t nodes; /* NUMA nodes of the list (policy >= 0) */
    int policy;            /* HWLOC_MEMBIND_BIND / _INTERLEAVE, or -1: memory left alone */
    uint64_t id;           /* unique per affinity object: what a thread's `applied` records */
};

/* Ids for affinity objects; 0 means "nothing applied". */
static uint64_t next_id = 1;

/*
 * The calling thread's record of its team: which affinity pinned it last (0: none since the
 * original mask), and that original mask, saved before the first pinning.
 */
static _Thread_local uint64_t applied;
static _Thread_local bool have_original;
static _Thread_local bool membound; /* a memory policy was set on the team */
static _Thread_local cpu_set_t original;

int duet__cpu_numa_plan(hwloc_topology_t topo, hwloc_const_cpuset_t cpus, hwloc_nodeset_t nodes)
{
    hwloc_bitmap_zero(nodes);
    if (hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE) < 2)
        return -1;
    hwloc_cpuset_to_nodeset(topo, cpus, nodes);
    if (hwloc_bitmap_iszero(nodes))
        return -1;
    return hwloc_bitmap_weight(nodes) == 1 ? HWLOC_MEMBIND_BIND : HWLOC_MEMBIND_INTERLEAVE;
}

/* Parses and checks the list into a->cpus / cpu_of; false with a message naming key. */
static bool read_list(duet_cpu_affinity *a, const char *key, const char *text, char *err,
                      size_t err_size)
{
    hwloc_const_cpuset_t allowed = hwloc_topology_get_allowed_cpuset(a->topo);
    char why[320];
    cpu_set_t set;
    uint32_t n = 0;

    if (!duet__cpulist_parse(text, &set, why, sizeof(why))) {
        snprintf(err, err_size, "cpu worker: %s: %s", key, why);
        return false;
    }
    if (!(a->cpus = hwloc_bitmap_alloc()) ||
        !(a->cpu_of = calloc((size_t)CPU_COUNT(&set), sizeof(*a->cpu_of)))) {
        snprintf(err, err_size, "cpu worker: out of memory");
        return false;
    }
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        if (!hwloc_bitmap_isset(allowed, (unsigned)c)) {
            hwloc_bitmap_list_snprintf(why, sizeof(why), allowed);
            snprintf(err, err_size,
                     "cpu worker: %s = \"%s\": CPU %d is not one this process may run on "
                     "(allowed: %s)",
                     key, text, c, why);
            return false;
        }
        hwloc_bitmap_set(a->cpus, (unsigned)c);
        a->cpu_of[n++] = c;
    }
    a->n_cpus = n;
    return true;
}

duet_status duet__cpu_affinity_create(const char *key, const char *cpus, duet_cpu_affinity **out,
                                      char *err, size_t err_size)
{
    duet_cpu_affinity *a = calloc(1, sizeof(*a));
    duet_status st = DUET_STATUS_BAD_CONFIG;

    *out = NULL;
    if (!a) {
        snprintf(err, err_size, "cpu worker: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    a->policy = -1;
    a->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
    if (hwloc_topology_init(&a->topo) || hwloc_topology_load(a->topo)) {
        snprintf(err, err_size, "cpu worker: %s: hwloc cannot read this machine's topology: %s",
                 key, strerror(errno));
        st = DUET_STATUS_DEVICE;
        goto out_destroy;
    }
    if (cpus && !read_list(a, key, cpus, err, err_size))
        goto out_destroy;
    if (a->cpus) {
        if (!(a->nodes = hwloc_bitmap_alloc())) {
            snprintf(err, err_size, "cpu worker: out of memory");
            st = DUET_STATUS_OUT_OF_MEMORY;
            goto out_destroy;
        }
        a->policy = duet__cpu_numa_plan(a->topo, a->cpus, a->nodes);
    }
    *out = a;
    return DUET_STATUS_OK;
out_destroy:
    duet__cpu_affinity_destroy(a);
    return st;
}

void duet__cpu_affinity_destroy(duet_cpu_affinity *a)
{
    if (!a)
        return;
    if (a->topo)
        hwloc_topology_destroy(a->topo);
    hwloc_bitmap_free(a->cpus);
    hwloc_bitmap_free(a->nodes);
    free(a->cpu_of);
    free(a);
}

uint32_t duet__cpu_affinity_count(const duet_cpu_affinity *a)
{
    return a ? a->n_cpus : 0;
}

void duet__cpu_affinity_describe(const duet_cpu_affinity *a, char *buf, size_t size)
{
    char cpus[256], nodes[128];

    if (!a || !a->cpus) {
        snprintf(buf, size, "no CPU list");
        return;
    }
    hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), a->cpus);
    if (a->policy < 0) {
        snprintf(buf, size, "CPUs %s (one NUMA node: memory not placed)", cpus);
        return;
    }
    hwloc_bitmap_list_snprintf(nodes, sizeof(nodes), a->nodes);
    snprintf(buf, size, "CPUs %s (NUMA: %s node%s %s)", cpus,
             a->policy == HWLOC_MEMBIND_BIND ? "bound to" : "interleaved over",
             hwloc_bitmap_weight(a->nodes) > 1 ? "s" : "", nodes);
}

/* Member `member` of the team: binds itself to its CPU and sets its memory policy (back to the
 * default when the list has none and reset_memory says another worker set one). Returns 0 or
 * the errno of the failed call; *cpu receives the CPU it tried. */
static int pin_member(const duet_cpu_affinity *a, int member, bool reset_memory, int *cpu)
{
    hwloc_bitmap_t one = hwloc_bitmap_alloc();
    int rc = 0;

    *cpu = a->cpu_of[(uint32_t)member % a->n_cpus];
    if (!one)
        return ENOMEM;
    hwloc_bitmap_only(one, (unsigned)*cpu);
    if (hwloc_set_cpubind(a->topo, one, HWLOC_CPUBIND_THREAD) != 0)
        rc = errno ? errno : EINVAL;
    else if (a->policy >= 0 &&
             hwloc_set_membind(a->topo, a->nodes, (hwloc_membind_policy_t)a->policy,
                               HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) != 0)
        rc = errno ? errno : EINVAL;
    else if (a->policy < 0 && reset_memory &&
             hwloc_set_membind(a->topo, hwloc_topology_get_complete_nodeset(a->topo),
                               HWLOC_MEMBIND_DEFAULT,
                               HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) != 0)
        rc = errno ? errno : EINVAL;
    hwloc_bitmap_free(one);
    return rc;
}

/* Member of a team going back to mask (the calling thread's original: `original` itself is the
 * member's own thread-local) and to the default memory policy. */
static int unpin_member(const duet_cpu_affinity *a, const cpu_set_t *mask, bool reset_memory)
{
    if (sched_setaffinity(0, sizeof(*mask), mask) != 0)
        return errno;
    if (reset_memory &&
        hwloc_set_membind(a->topo, hwloc_topology_get_complete_nodeset(a->topo),
                          HWLOC_MEMBIND_DEFAULT, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET))
        return errno;
    return 0;
}

duet_status duet__cpu_affinity_enter(duet_cpu_affinity *a, uint32_t threads, char *err,
                                     size_t err_size)
{
    bool pin = a->cpus != NULL, reset_memory = membound;
    int fail_rc = 0, fail_cpu = -1, fail_member = -1;
    const cpu_set_t *mask = &original; /* the address of this thread's own */

    if (applied == a->id || (!pin && applied == 0))
        return DUET_STATUS_OK;
    if (!have_original) {
        if (sched_getaffinity(0, sizeof(original), &original) != 0) {
            snprintf(err, err_size, "cpu worker: cannot read the thread's CPU mask: %s",
                     strerror(errno));
            return DUET_STATUS_DEVICE;
        }
        have_original = true;
    }
#pragma omp parallel num_threads((int)threads)
    {
        int member = omp_get_thread_num(), cpu = -1;
        int rc =
            pin ? pin_member(a, member, reset_memory, &cpu) : unpin_member(a, mask, reset_memory);

        if (rc) {
#pragma omp critical(duet_cpu_affinity)
            if (!fail_rc) {
                fail_rc = rc;
                fail_cpu = cpu;
                fail_member = member;
            }
        }
    }
    if (fail_rc) {
        applied = 0; /* some members may have moved: the next call tries again */
        if (pin)
            snprintf(err, err_size, "cpu worker: cannot pin thread %d to CPU %d: %s", fail_member,
                     fail_cpu, strerror(fail_rc));
        else
            snprintf(err, err_size, "cpu worker: cannot give thread %d its CPUs back: %s",
                     fail_member, strerror(fail_rc));
        return DUET_STATUS_DEVICE;
    }
    applied = pin ? a->id : 0;
    membound = pin && a->policy >= 0;
    return DUET_STATUS_OK;
}

void duet__cpu_affinity_leave(duet_cpu_affinity *a, uint32_t threads)
{
    const cpu_set_t *mask = &original;
    bool reset_memory = membound;

    if (!a || applied != a->id)
        return;
#pragma omp parallel num_threads((int)threads)
    unpin_member(a, mask, reset_memory); /* best effort: a destroy cannot fail */
    applied = 0;
    membound = false;
}

uint32_t duet__cpu_affinity_default_threads(void)
{
    return have_original ? (uint32_t)CPU_COUNT(&original) : (uint32_t)omp_get_num_procs();
}
