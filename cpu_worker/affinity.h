/*
 * affinity.h — where a CPU worker's threads run and its memory lives (SECTION.cpus;
 * docs/cpu-worker.md, "Threads, CPUs and NUMA").
 *
 * A worker's threads are an OpenMP team of whichever thread calls it: the host's main thread
 * for the target, the engine's draft thread for the draft, or any thread a host likes. libgomp
 * keeps one pool of team threads per calling thread and gives team member i the same pool thread
 * each time, so pinning member i once holds until something else pins that team:
 *
 *   calling thread T ──► parallel region of `threads` members, member i binds itself to
 *                        cpu_of[i % n_cpus] (hwloc, this thread only) and, on a machine with
 *                        several NUMA nodes, sets its memory policy (bind to the node of the
 *                        list, or interleave over the nodes it spans)
 *   T's thread-local `applied` = the worker's id: the next call from T with the same worker
 *                        does nothing; a call from another thread, or after another worker
 *                        pinned T's team, pins again
 *
 * A worker without a list pins nothing, but when T's team was pinned by another worker it sets
 * the team back to T's mask from before the first pinning (and the default memory policy), so an
 * unpinned worker never runs squeezed onto another worker's CPUs. Weights are converted inside
 * create() by the pinned team, so under the memory policy they land on the list's node(s).
 *
 * Threading: an affinity object is read-only after create; the only mutable state is the calling
 * thread's own (thread-local) record of what its team was given.
 */
#ifndef DUET_CPU_WORKER_AFFINITY_H
#define DUET_CPU_WORKER_AFFINITY_H

#include <duet/types.h>

#include <hwloc.h>
#include <stddef.h>
#include <stdint.h>

typedef struct duet_cpu_affinity duet_cpu_affinity;

/*
 * Reads the CPU list cpus (Linux cpulist syntax, "0-3,8"; NULL: no list) of the setting named key
 * ("target.cpus") and loads the machine's topology. A list that does not parse, or names a CPU
 * the topology does not offer this process, is refused (BAD_CONFIG) with a message naming key in
 * err[err_size]. The caller owns *out and releases it with duet__cpu_affinity_destroy.
 */
duet_status duet__cpu_affinity_create(const char *key, const char *cpus, duet_cpu_affinity **out,
                                      char *err, size_t err_size);
void duet__cpu_affinity_destroy(duet_cpu_affinity *a);

/* CPUs in the list; 0 without one (then the worker's thread count defaults to every core). */
uint32_t duet__cpu_affinity_count(const duet_cpu_affinity *a);

/* One line for the log: "CPUs 0-3 (NUMA: node 0, bind)", "no CPU list". */
void duet__cpu_affinity_describe(const duet_cpu_affinity *a, char *buf, size_t size);

/*
 * Pins the calling thread's team of `threads` members as the top of this file says, unless it
 * holds this worker's pinning already. Call before the worker's parallel work, after
 * omp_set_num_threads(threads). DEVICE with a message when the system refuses a binding.
 */
duet_status duet__cpu_affinity_enter(duet_cpu_affinity *a, uint32_t threads, char *err,
                                     size_t err_size);

/* When the calling thread's team holds a's pinning, gives it back the mask it had before (a
 * worker's destroy: the host's thread does not stay on the CPUs of a worker that is gone). */
void duet__cpu_affinity_leave(duet_cpu_affinity *a, uint32_t threads);

/* Threads of a worker without threads or cpus settings: the CPUs the calling thread had before
 * any worker pinned its team (omp_get_num_procs() would count a pinned thread's one CPU). */
uint32_t duet__cpu_affinity_default_threads(void);

/*
 * The memory placement for a worker on cpus in topo: fills nodes with the NUMA nodes of cpus and
 * returns HWLOC_MEMBIND_BIND (one node) or HWLOC_MEMBIND_INTERLEAVE (several), or -1 (nothing to
 * place: the topology has a single NUMA node). Works on any topology, synthetic ones included.
 */
int duet__cpu_numa_plan(hwloc_topology_t topo, hwloc_const_cpuset_t cpus, hwloc_nodeset_t nodes);

#endif /* DUET_CPU_WORKER_AFFINITY_H */
