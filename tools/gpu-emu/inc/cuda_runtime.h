/* emulation: the runtime API only (cuda_emu.h defines the device side) */
#pragma once
#include <cuda_runtime_api.h>
#ifdef __cplusplus
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *f, cudaFuncAttribute a, int v)
{
    return ::cudaFuncSetAttribute((const void *)f, a, v);
}
#endif
