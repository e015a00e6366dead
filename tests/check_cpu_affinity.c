/*
 * The CPU worker's pinning and NUMA placement (cpu_worker/affinity.c), compiled in: a team
 * pinned to a CPU list runs there (each member's sched_getaffinity and sched_getcpu, read inside
 * the team), follows whichever worker last called from its thread, is given its CPUs back by a
 * worker without a list, and a thread's pinning does not touch another thread's team. The NUMA
 * plan runs on synthetic hwloc topologies of one and two nodes (this machine may have one), and
 * once through a worker's create on a two-node topology given by HWLOC_XMLFILE (where hwloc binds
 * nothing: the topology is not this machine).
 *
 * Pinning cases that need two CPUs the process may use SKIP-report themselves on one.
 */
#define _GNU_SOURCE
#include "../cpu_worker/affinity.h"

#include "check_util.h"

#include <check.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[512];

/* The CPUs this process may use, ascending, and how many (at most 64 kept). */
static int allowed[64], n_allowed;

static void read_allowed(void)
{
    cpu_set_t set;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    n_allowed = 0;
    for (int c = 0; c < CPU_SETSIZE && n_allowed < 64; c++)
        if (CPU_ISSET(c, &set))
            allowed[n_allowed++] = c;
    ck_assert_int_gt(n_allowed, 0);
}

static duet_cpu_affinity *affinity_of(const char *cpus)
{
    duet_cpu_affinity *a = NULL;
    duet_status st = duet__cpu_affinity_create("target.cpus", cpus, &a, err, sizeof(err));

    ck_assert_msg(st == DUET_STATUS_OK, "%s: %s", cpus ? cpus : "(none)", err);
    return a;
}

static duet_cpu_affinity *affinity_on(int cpu)
{
    char text[16];

    snprintf(text, sizeof(text), "%d", cpu);
    return affinity_of(text);
}

static void enter(duet_cpu_affinity *a, uint32_t threads)
{
    omp_set_num_threads((int)threads);
    ck_assert_msg(duet__cpu_affinity_enter(a, threads, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
}

/*
 * Runs a team of `threads` members from the calling thread, as a worker's kernels do, and records
 * each member's mask; then asserts member i may run on want[i % n_want] only (n_want = 0: on every
 * CPU of the process) and, when pinned, runs there now.
 */
static void expect_team(uint32_t threads, const int *want, int n_want, const char *what)
{
    cpu_set_t masks[16];
    int where[16], members = 0;

    ck_assert_uint_le(threads, 16);
#pragma omp parallel num_threads((int)threads)
    {
        int i = omp_get_thread_num();

        sched_getaffinity(0, sizeof(masks[i]), &masks[i]);
        where[i] = sched_getcpu();
#pragma omp atomic
        members++;
    }
    ck_assert_int_eq(members, (int)threads);
    for (int i = 0; i < (int)threads; i++) {
        if (n_want) {
            int c = want[i % n_want];

            ck_assert_msg(CPU_COUNT(&masks[i]) == 1 && CPU_ISSET(c, &masks[i]),
                          "%s: member %d may run on %d CPUs, not CPU %d alone", what, i,
                          CPU_COUNT(&masks[i]), c);
            ck_assert_msg(where[i] == c, "%s: member %d runs on CPU %d, not %d", what, i, where[i],
                          c);
        } else {
            ck_assert_msg(CPU_COUNT(&masks[i]) == n_allowed,
                          "%s: member %d may run on %d CPUs of %d", what, i, CPU_COUNT(&masks[i]),
                          n_allowed);
        }
    }
}

START_TEST(test_a_team_pinned_to_one_cpu_runs_there)
{
    int cpu;
    duet_cpu_affinity *a;

    read_allowed();
    cpu = allowed[n_allowed - 1]; /* CPU 1 on a two-CPU machine */
    a = affinity_on(cpu);
    ck_assert_uint_eq(duet__cpu_affinity_count(a), 1);
    enter(a, 2);
    expect_team(2, &cpu, 1, "pinned to one CPU");
    enter(a, 2); /* already held: nothing changes */
    expect_team(2, &cpu, 1, "entered again");
    duet__cpu_affinity_leave(a, 2); /* a worker's destroy */
    expect_team(2, NULL, 0, "after the worker left");
    duet__cpu_affinity_destroy(a);
}
END_TEST

START_TEST(test_members_take_the_cpus_of_the_list_in_turn)
{
    char text[64];
    duet_cpu_affinity *a;

    read_allowed();
    if (n_allowed < 2) {
        printf("check_cpu_affinity: one CPU allowed: two-CPU lists not tested\n");
        return;
    }
    snprintf(text, sizeof(text), "%d,%d", allowed[1], allowed[0]); /* order does not matter */
    a = affinity_of(text);
    ck_assert_uint_eq(duet__cpu_affinity_count(a), 2);
    enter(a, 4);
    expect_team(4, allowed, 2, "two CPUs, four members");
    duet__cpu_affinity_destroy(a);
}
END_TEST

START_TEST(test_a_team_follows_the_worker_that_calls_from_its_thread)
{
    duet_cpu_affinity *a, *b, *none;

    read_allowed();
    if (n_allowed < 2) {
        printf("check_cpu_affinity: one CPU allowed: switching between CPUs not tested\n");
        return;
    }
    a = affinity_on(allowed[0]);
    b = affinity_on(allowed[1]);
    none = affinity_of(NULL);
    ck_assert_uint_eq(duet__cpu_affinity_count(none), 0);
    enter(none, 2); /* nothing pinned yet: nothing to do */
    expect_team(2, NULL, 0, "never pinned");
    enter(a, 2);
    expect_team(2, &allowed[0], 1, "worker a");
    enter(b, 2);
    expect_team(2, &allowed[1], 1, "worker b");
    enter(a, 3); /* a larger team: the new member is pinned too */
    expect_team(3, &allowed[0], 1, "worker a again");
    enter(none, 3);
    expect_team(3, NULL, 0, "a worker without a list");
    duet__cpu_affinity_destroy(none);
    duet__cpu_affinity_destroy(b);
    duet__cpu_affinity_destroy(a);
}
END_TEST

struct other_thread {
    duet_cpu_affinity *a;
    int cpu;
    char failure[256]; /* "" when the team ran where it should */
};

static void *pin_from_another_thread(void *arg)
{
    struct other_thread *t = arg;
    cpu_set_t masks[2];

    omp_set_num_threads(2);
    if (duet__cpu_affinity_enter(t->a, 2, t->failure, sizeof(t->failure)))
        return NULL;
#pragma omp parallel num_threads(2)
    sched_getaffinity(0, sizeof(masks[0]), &masks[omp_get_thread_num()]);
    for (int i = 0; i < 2; i++)
        if (CPU_COUNT(&masks[i]) != 1 || !CPU_ISSET(t->cpu, &masks[i]))
            snprintf(t->failure, sizeof(t->failure), "member %d is not on CPU %d alone", i, t->cpu);
    return NULL;
}

START_TEST(test_each_calling_thread_has_its_own_pinned_team)
{
    struct other_thread t = {0};
    pthread_t th;

    read_allowed();
    t.cpu = allowed[n_allowed - 1];
    t.a = affinity_on(t.cpu);
    expect_team(2, NULL, 0, "this thread's team before");
    ck_assert_int_eq(pthread_create(&th, NULL, pin_from_another_thread, &t), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(t.failure[0] == '\0', "the other thread's team: %s", t.failure);
    expect_team(2, NULL, 0, "this thread's team after");
    /* the same worker from this thread now pins this team too */
    enter(t.a, 2);
    expect_team(2, &t.cpu, 1, "this thread's team pinned");
    duet__cpu_affinity_destroy(t.a);
}
END_TEST

START_TEST(test_bad_lists_are_refused_naming_the_key)
{
    duet_cpu_affinity *a = (duet_cpu_affinity *)&err; /* must be reset to NULL */
    char text[32];

    ck_assert_int_eq(duet__cpu_affinity_create("speculative.cpus", "3-1", &a, err, sizeof(err)),
                     DUET_STATUS_BAD_CONFIG);
    ck_assert_ptr_null(a);
    ck_assert_msg(strstr(err, "cpu worker: speculative.cpus: bad CPU list \"3-1\"") == err, "%s",
                  err);
    ck_assert_int_eq(duet__cpu_affinity_create("target.cpus", "", &a, err, sizeof(err)),
                     DUET_STATUS_BAD_CONFIG);
    ck_assert_msg(strstr(err, "target.cpus: CPU list is empty") != NULL, "%s", err);
    snprintf(text, sizeof(text), "0-%ld", sysconf(_SC_NPROCESSORS_CONF));
    ck_assert_int_eq(duet__cpu_affinity_create("target.cpus", text, &a, err, sizeof(err)),
                     DUET_STATUS_BAD_CONFIG);
    ck_assert_msg(strstr(err, "is not one this process may run on (allowed: ") != NULL, "%s", err);
}
END_TEST

/* A synthetic topology: "pack:2 numa:1 core:2 pu:1" has PUs 0-1 on node 0 and 2-3 on node 1. */
static hwloc_topology_t synthetic(const char *description)
{
    hwloc_topology_t topo;

    ck_assert_int_eq(hwloc_topology_init(&topo), 0);
    ck_assert_int_eq(hwloc_topology_set_synthetic(topo, description), 0);
    ck_assert_int_eq(hwloc_topology_load(topo), 0);
    return topo;
}

/* The plan for the CPU list cpus on topo: its policy, and its nodes in list syntax. */
static int plan(hwloc_topology_t topo, const char *cpus, char *nodes, size_t size)
{
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), ns = hwloc_bitmap_alloc();
    int policy;

    ck_assert_int_eq(hwloc_bitmap_list_sscanf(set, cpus), 0);
    policy = duet__cpu_numa_plan(topo, set, ns);
    hwloc_bitmap_list_snprintf(nodes, size, ns);
    hwloc_bitmap_free(ns);
    hwloc_bitmap_free(set);
    return policy;
}

START_TEST(test_memory_is_bound_to_one_node_or_interleaved_over_several)
{
    hwloc_topology_t two = synthetic("pack:2 numa:1 core:2 pu:1");
    hwloc_topology_t one = synthetic("pack:1 numa:1 core:4 pu:1");
    char nodes[64];

    ck_assert_int_eq(hwloc_get_nbobjs_by_type(two, HWLOC_OBJ_NUMANODE), 2);
    ck_assert_int_eq(plan(two, "0-1", nodes, sizeof(nodes)), HWLOC_MEMBIND_BIND);
    ck_assert_str_eq(nodes, "0");
    ck_assert_int_eq(plan(two, "3", nodes, sizeof(nodes)), HWLOC_MEMBIND_BIND);
    ck_assert_str_eq(nodes, "1");
    ck_assert_int_eq(plan(two, "1-2", nodes, sizeof(nodes)), HWLOC_MEMBIND_INTERLEAVE);
    ck_assert_str_eq(nodes, "0-1");
    ck_assert_int_eq(plan(two, "0,2-3", nodes, sizeof(nodes)), HWLOC_MEMBIND_INTERLEAVE);
    ck_assert_str_eq(nodes, "0-1");
    ck_assert_int_eq(plan(one, "0-3", nodes, sizeof(nodes)), -1);
    ck_assert_str_eq(nodes, "");
    hwloc_topology_destroy(one);
    hwloc_topology_destroy(two);
}
END_TEST

/* A worker's create on a two-node machine, the machine given as XML (HWLOC_XMLFILE): the plan
 * reaches the affinity object, and entering works (hwloc binds nothing on a topology that is not
 * this system's). */
START_TEST(test_a_worker_on_a_two_node_topology_places_its_memory)
{
    hwloc_topology_t two = synthetic("pack:2 numa:1 core:2 pu:1");
    char path[] = "/tmp/duet-topology-XXXXXX", where[256];
    duet_cpu_affinity *a;
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(hwloc_topology_export_xml(two, path, 0), 0);
    hwloc_topology_destroy(two);
    setenv("HWLOC_XMLFILE", path, 1);
    a = affinity_of("2-3");
    duet__cpu_affinity_describe(a, where, sizeof(where));
    ck_assert_str_eq(where, "CPUs 2-3 (NUMA: bound to node 1)");
    ck_assert_int_eq(duet__cpu_affinity_enter(a, 2, err, sizeof(err)), DUET_STATUS_OK);
    duet__cpu_affinity_destroy(a);
    a = affinity_of("1-2");
    duet__cpu_affinity_describe(a, where, sizeof(where));
    ck_assert_str_eq(where, "CPUs 1-2 (NUMA: interleaved over nodes 0-1)");
    duet__cpu_affinity_destroy(a);
    unsetenv("HWLOC_XMLFILE");
    unlink(path);
    read_allowed();
    a = affinity_on(allowed[0]);
    duet__cpu_affinity_describe(a, where, sizeof(where));
    printf("check_cpu_affinity: this machine: %s\n", where);
    duet__cpu_affinity_destroy(a);
}
END_TEST

static Suite *affinity_suite(void)
{
    Suite *s = suite_create("cpu_affinity");
    const struct duet_test_case cases[] = {
        {"one cpu", test_a_team_pinned_to_one_cpu_runs_there},
        {"in turn", test_members_take_the_cpus_of_the_list_in_turn},
        {"follows", test_a_team_follows_the_worker_that_calls_from_its_thread},
        {"threads", test_each_calling_thread_has_its_own_pinned_team},
        {"bad lists", test_bad_lists_are_refused_naming_the_key},
        {"numa plan", test_memory_is_bound_to_one_node_or_interleaved_over_several},
        {"numa create", test_a_worker_on_a_two_node_topology_places_its_memory},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 60);
    return s;
}

int main(void)
{
    return duet_test_run(affinity_suite());
}
