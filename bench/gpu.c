/*
 * gpu-worker: bench/worker.c's worker benchmark driving the GPU worker plugin (duet_gpu_worker.so)
 * with target.device, beside the device-memory bandwidth that a device-to-device copy reaches
 * (gpu_worker/probe.cu), measured in the same run before each (preset, dtype) and at the end.
 * Built only with CUDA (bench/local.mk); exits 77 (skip) when no CUDA device is visible.
 */
#include "bench.h"

#include "../gpu_worker/probe.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <string.h>

#ifndef DUET_BENCH_GPU_PLUGIN_DIR
#define DUET_BENCH_GPU_PLUGIN_DIR                                                                  \
    NULL /* the build tree's gpu_worker/.libs, set by bench/local.mk */
#endif

#define COPY_BYTES (1ull << 30) /* per buffer: far beyond the L2 cache */
#define COPY_QUICK_BYTES (64ull << 20)
#define COPY_PASSES 20
#define COPY_QUICK_PASSES 3

static int copy_bandwidth(const struct duet_bench_opts *o, const char *bench, uint32_t threads,
                          const char *when, json_t *results, double *best)
{
    size_t bytes = o->quick ? COPY_QUICK_BYTES : COPY_BYTES;
    uint32_t passes = o->quick ? COPY_QUICK_PASSES : COPY_PASSES;
    struct duet_bench_result r = {.name = "device_copy_bandwidth", .ops = passes};
    double gbs = 0;
    char err[512];

    (void)threads;
    if (duet__gpu_copy_bandwidth((int)o->worker.device, bytes, passes, &gbs, err, sizeof(err)) !=
            DUET_STATUS_OK ||
        gbs <= 0) {
        fprintf(stderr, "duet-bench: %s: bandwidth probe: %s\n", bench, err);
        return 1;
    }
    if (gbs * 1e9 > *best)
        *best = gbs * 1e9;
    r.ns_median = r.ns_best = 2.0 * (double)bytes / gbs; /* GB/s = bytes / ns */
    duet__bench_report(
        results, &r,
        json_pack("{s:s, s:s, s:i, s:I, s:i, s:f}", "what",
                  "cudaMemcpy device to device of one buffer into another, timed by CUDA events; "
                  "GB = 1e9 bytes, read + write counted (2 x buffer_bytes per copy); the best pass",
                  "when", when, "device", (int)o->worker.device, "buffer_bytes", (json_int_t)bytes,
                  "passes", (int)passes, "gb_per_s_best", gbs));
    return 0;
}

/* The device's name, memory and the driver and runtime versions, as one result. */
static int report_device(const struct duet_bench_opts *o, json_t *results)
{
    struct cudaDeviceProp prop;
    int driver = 0, runtime = 0;
    cudaError_t e;

    if ((e = cudaGetDeviceProperties(&prop, (int)o->worker.device)) != cudaSuccess ||
        (e = cudaDriverGetVersion(&driver)) != cudaSuccess ||
        (e = cudaRuntimeGetVersion(&runtime)) != cudaSuccess) {
        fprintf(stderr, "duet-bench: gpu-worker: device %u: %s\n", o->worker.device,
                cudaGetErrorString(e));
        return 1;
    }
    fprintf(stderr, "duet-bench: gpu-worker: device %u: %s, driver API %d, runtime %d\n",
            o->worker.device, prop.name, driver, runtime);
    json_array_append_new(results,
                          json_pack("{s:s, s:i, s:s, s:I, s:i, s:i, s:i, s:i}", "name",
                                    "gpu_device", "device", (int)o->worker.device, "device_name",
                                    prop.name, "memory_bytes", (json_int_t)prop.totalGlobalMem,
                                    "compute_capability", prop.major * 10 + prop.minor,
                                    "cuda_driver_version", driver, "cuda_runtime_version", runtime,
                                    "multiprocessors", prop.multiProcessorCount));
    return 0;
}

int duet__bench_gpu_worker(const struct duet_bench_opts *opts, json_t *results)
{
    static const struct duet__bench_worker_mode gpu = {.bench = "gpu-worker",
                                                       .gpu = true,
                                                       .plugin_dir = DUET_BENCH_GPU_PLUGIN_DIR,
                                                       .bandwidth = copy_bandwidth};
    struct duet_bench_opts o = *opts;
    int n = duet__gpu_device_count();

    if (n == 0) {
        fprintf(stderr, "duet-bench: gpu-worker: no CUDA device (skipped)\n");
        return 77;
    }
    if ((int)o.worker.device >= n) {
        fprintf(stderr, "duet-bench: gpu-worker: --device %u: %d CUDA device(s)\n", o.worker.device,
                n);
        return 1;
    }
    if (strcmp(o.worker.plugin, "cpu") == 0) /* the default of --plugin is cpu-worker's */
        o.worker.plugin = "gpu";
    if (report_device(&o, results))
        return 1;
    return duet__bench_worker(&o, &gpu, results);
}
