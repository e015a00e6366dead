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
