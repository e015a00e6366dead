/*
 * The smallest end-to-end use of the CUDA toolchain: device discovery and one kernel, compiled by
 * nvcc through libtool (build-aux/nvcc-wrapper). The GPU worker's real kernels live beside it.
 */
#include "gpu_worker-int.h"

#include <cuda_runtime.h>
#include <stdio.h>

#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess) {                                                                 \
            snprintf(errbuf, errbuf_size, "%s: %s", #call, cudaGetErrorString(err_));              \
            st = DUET_STATUS_DEVICE;                                                               \
            goto out_free;                                                                         \
        }                                                                                          \
    } while (0)

static __global__ void saxpy_kernel(size_t n, float a, const float *x, float *y)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;

    if (i < n)
        y[i] += a * x[i];
}

extern "C" int duet__gpu_device_count(void)
{
    int n = 0;

    if (cudaGetDeviceCount(&n) != cudaSuccess)
        return 0;
    return n;
}

extern "C" duet_status duet__gpu_saxpy(size_t n, float a, const float *x, float *y, char *errbuf,
                                       size_t errbuf_size)
{
    duet_status st = DUET_STATUS_OK;
    float *dx = NULL, *dy = NULL;
    unsigned blocks = (unsigned)((n + 255) / 256);

    if (duet__gpu_device_count() == 0) {
        snprintf(errbuf, errbuf_size, "no CUDA device");
        return DUET_STATUS_UNSUPPORTED;
    }
    CUDA_TRY(cudaMalloc((void **)&dx, n * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&dy, n * sizeof(float)));
    CUDA_TRY(cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_TRY(cudaMemcpy(dy, y, n * sizeof(float), cudaMemcpyHostToDevice));
    saxpy_kernel<<<blocks, 256>>>(n, a, dx, dy);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaMemcpy(y, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
out_free:
    cudaFree(dx);
    cudaFree(dy);
    return st;
}

/* Copies the buffer into its twin `passes` times, each copy timed by its own pair of events. */
static duet_status time_copies(void *dst, const void *src, size_t bytes, uint32_t passes,
                               float *best_ms, char *err, size_t err_size)
{
    cudaEvent_t start = NULL, stop = NULL;
    cudaError_t e;
    float ms;

    *best_ms = 0;
    if ((e = cudaEventCreate(&start)) != cudaSuccess || (e = cudaEventCreate(&stop)) != cudaSuccess)
        goto out_events;
    for (uint32_t i = 0; i < passes; i++) {
        if ((e = cudaEventRecord(start, 0)) != cudaSuccess ||
            (e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0)) != cudaSuccess ||
            (e = cudaEventRecord(stop, 0)) != cudaSuccess ||
            (e = cudaEventSynchronize(stop)) != cudaSuccess ||
            (e = cudaEventElapsedTime(&ms, start, stop)) != cudaSuccess)
            goto out_events;
        if (*best_ms == 0 || ms < *best_ms)
            *best_ms = ms;
    }
out_events:
    if (stop)
        cudaEventDestroy(stop);
    if (start)
        cudaEventDestroy(start);
    if (e != cudaSuccess) {
        snprintf(err, err_size, "device-to-device copy: %s", cudaGetErrorString(e));
        return DUET_STATUS_DEVICE;
    }
    return DUET_STATUS_OK;
}

extern "C" duet_status duet__gpu_copy_bandwidth(int device, size_t bytes, uint32_t passes,
                                                double *best_gbs, char *err, size_t err_size)
{
    duet_status st = DUET_STATUS_OK;
    void *src = NULL, *dst = NULL;
    float best_ms = 0;
    char *errbuf = err;
    size_t errbuf_size = err_size;

    *best_gbs = 0;
    if (duet__gpu_device_count() <= device) {
        snprintf(err, err_size, "no CUDA device %d", device);
        return DUET_STATUS_UNSUPPORTED;
    }
    CUDA_TRY(cudaSetDevice(device));
    CUDA_TRY(cudaMalloc(&src, bytes));
    CUDA_TRY(cudaMalloc(&dst, bytes));
    CUDA_TRY(cudaMemset(src, 0x5a, bytes));
    CUDA_TRY(cudaMemset(dst, 0, bytes));
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice)); /* warm-up */
    CUDA_TRY(cudaDeviceSynchronize());
    st = time_copies(dst, src, bytes, passes ? passes : 1, &best_ms, err, err_size);
    if (st == DUET_STATUS_OK && best_ms > 0)
        *best_gbs = 2.0 * (double)bytes / (best_ms * 1e-3) / 1e9;
out_free:
    cudaFree(src);
    cudaFree(dst);
    return st;
}
