/*
 * probe.h — the GPU worker's probe (probe.cu): host-callable checks of the CUDA build and of a
 * device, used by the worker, the device tests and duet-bench's bandwidth reference.
 */
#ifndef DUET_GPU_PROBE_H
#define DUET_GPU_PROBE_H

#include <duet/types.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the probe (probe.cu) ----------------------------------------------------------------- */

/* Number of visible CUDA devices; 0 when there is none or no driver. Never fails. */
int duet__gpu_device_count(void);

/* y[i] += a * x[i] for i < n, computed on device 0: a round trip through device memory and one
 * kernel launch, used to check the CUDA build and toolchain end to end. DUET_STATUS_UNSUPPORTED
 * when no device is present, DUET_STATUS_DEVICE with the failing call and CUDA's message in
 * errbuf when the runtime fails. */
duet_status duet__gpu_saxpy(size_t n, float a, const float *x, float *y, char *errbuf,
                            size_t errbuf_size);

/* The device-memory bandwidth of `device`: copies a buffer of `bytes` into another `passes`
 * times (cudaMemcpy device to device, each copy timed by CUDA events) and sets *best_gbs to the
 * best pass in GB/s (10^9 bytes) counting the read and the write: 2 x bytes per copy.
 * DUET_STATUS_UNSUPPORTED with "no CUDA device N" in err when the device is absent,
 * DUET_STATUS_DEVICE with the failing call when the runtime fails. */
duet_status duet__gpu_copy_bandwidth(int device, size_t bytes, uint32_t passes, double *best_gbs,
                                     char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif /* DUET_GPU_PROBE_H */
