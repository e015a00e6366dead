/* gpu_worker-int.h — the C view of the GPU worker's CUDA launchers (extern "C" in .cu files). */
#ifndef DUET_GPU_WORKER_INT_H
#define DUET_GPU_WORKER_INT_H

#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of visible CUDA devices; 0 when there is none or no driver. Never fails. */
int duet__gpu_device_count(void);

/* y[i] += a * x[i] for i < n, computed on device 0: a round trip through device memory and one
 * kernel launch, used to check the CUDA build and toolchain end to end. DUET_STATUS_UNSUPPORTED
 * when no device is present, DUET_STATUS_DEVICE with the failing call and CUDA's message in
 * errbuf when the runtime fails. */
duet_status duet__gpu_saxpy(size_t n, float a, const float *x, float *y, char *errbuf,
                            size_t errbuf_size);

#ifdef __cplusplus
}
#endif

#endif /* DUET_GPU_WORKER_INT_H */
