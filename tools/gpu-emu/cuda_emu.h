/* Host emulation of CUDA device code (`make check-gpu-emu`; emu_rt.cc says what it emulates and
 * what it cannot catch), force-included (g++ -include) into C++ copies of kernels.cu and
 * sample.cu. __global__ and friends are emptied, __shared__ is a static thread_local (one block
 * at a time per OS thread), threadIdx / blockIdx / blockDim / gridDim come from the running fiber.
 * The warp shuffles are exact for a full mask with all 32 lanes alive (anything else is EMU
 * FATAL). CUB's BlockReduce leaves its result poisoned outside thread 0, as CUB leaves it
 * undefined; DeviceSegmentedRadixSort is stable and descending by the radix order of the float
 * bits (-0 < +0, as the real one). bf16 and f16 conversions are the CUDA headers' own host code. */
#pragma once
#include "inc/cuda_runtime.h"
#include <vector_types.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <functional>
#include <algorithm>
#include <vector>
#include <tuple>
#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __launch_bounds__(...)

struct emu_fiber;
struct emu_block_ctx {
    uint3 bid;
    dim3 bdim;
    dim3 gdim;
    char *dyn_smem;
    size_t dyn_bytes;
};
extern thread_local emu_fiber *emu_cur;
extern thread_local emu_block_ctx *emu_blk;
uint3 emu_tid();
#define threadIdx (emu_tid())
#define blockIdx (emu_blk->bid)
#define blockDim (emu_blk->bdim)
#define gridDim (emu_blk->gdim)
void emu_syncthreads();
void emu_syncwarp(unsigned mask);
void emu_warp_xchg(unsigned mask, const void *in, void *out, int src_lane_or_neg, size_t n);
void emu_fail(const char *fmt, ...);
unsigned emu_lane();
static inline void __syncthreads()
{
    emu_syncthreads();
}
static inline void __syncwarp(unsigned m = 0xffffffffu)
{
    emu_syncwarp(m);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    if (width != 32)
        emu_fail("shfl width %d unsupported", width);
    T r;
    emu_warp_xchg(mask, &v, &r, src & 31, sizeof(T));
    return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int o, int width = 32)
{
    if (width != 32)
        emu_fail("shfl width %d unsupported", width);
    T r;
    emu_warp_xchg(mask, &v, &r, (int)((emu_lane() ^ (unsigned)o) & 31), sizeof(T));
    return r;
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    if (width != 32)
        emu_fail("shfl width %d unsupported", width);
    unsigned s = emu_lane() + d;
    T r;
    emu_warp_xchg(mask, &v, &r, (int)(s < 32 ? s : emu_lane()), sizeof(T));
    return r;
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    if (width != 32)
        emu_fail("shfl width %d unsupported", width);
    int s = (int)emu_lane() - (int)d;
    T r;
    emu_warp_xchg(mask, &v, &r, s >= 0 ? s : (int)emu_lane(), sizeof(T));
    return r;
}
static inline float __fmul_rn(float a, float b)
{
    volatile float r = a * b;
    return r;
}
static inline float __fadd_rn(float a, float b)
{
    volatile float r = a + b;
    return r;
}
static inline float __fsub_rn(float a, float b)
{
    volatile float r = a - b;
    return r;
}
static inline float __fmaf_rn(float a, float b, float c)
{
    return fmaf(a, b, c);
}
static inline float __fdividef(float a, float b)
{
    return a / b;
}
static inline int __clz(int x)
{
    return x ? __builtin_clz((unsigned)x) : 32;
}
static inline int __ffs(int x)
{
    return __builtin_ffs(x);
}
static inline int __popc(unsigned x)
{
    return __builtin_popcount(x);
}

/* a launch: kernel address (for cudaFuncSetAttribute), config, body run by every thread */
struct emu_cfg {
    dim3 g, b;
    size_t smem;
    cudaStream_t s;
};
static inline emu_cfg emu_mkcfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0)
{
    return {g, b, smem, s};
}
void emu_launch(const void *kernel, const char *name, emu_cfg c, std::function<void()> body);
template <class T> static inline void emu_check_align(const char *name, const T &x)
{
    if constexpr (std::is_pointer_v<T>) {
        typedef std::remove_cv_t<std::remove_pointer_t<T>> E;
        if constexpr (!std::is_void_v<E>)
            if ((uintptr_t)x % alignof(E))
                emu_fail("%s: misaligned pointer argument %p (needs %zu)", name, (const void *)x,
                         alignof(E));
    }
}
/* The arguments are converted to the kernel's parameter types at the launch, as CUDA copies
 * them; every thread then gets its own copy (parameters are the thread's locals). */
template <class... P, class... A>
static inline void emu_launch_k(void (*k)(P...), const char *name, emu_cfg c, A &&...a)
{
    std::tuple<std::decay_t<P>...> t(std::forward<A>(a)...);
    std::apply([name](auto &...x) { (emu_check_align(name, x), ...); }, t);
    emu_launch((const void *)k, name, c, [k, t]() { std::apply(k, t); });
}
/* Work on a stream: run now, or (EMU_ASYNC=1) when the stream is synchronised. */
void emu_enqueue(cudaStream_t s, std::function<void()> fn);
static inline void *emu_dyn_smem()
{
    return emu_blk->dyn_smem;
}

namespace cub
{
void *emu_poison(void *p, size_t n);
template <class T, int N> struct BlockReduce {
    struct TempStorage {
        T v[N];
    };
    TempStorage &t;
    BlockReduce(TempStorage &s) : t(s)
    {
    }
    template <class Op> T Reduce(T x, Op op)
    {
        if ((int)(blockDim.x * blockDim.y * blockDim.z) != N)
            emu_fail("BlockReduce<%d> with %u threads", N, blockDim.x);
        t.v[threadIdx.x] = x;
        __syncthreads();
        T r = t.v[0];
        for (int i = 1; i < N; i++)
            r = op(r, t.v[i]);
        __syncthreads();
        if (threadIdx.x != 0)
            emu_poison(&r, sizeof r); /* valid in thread 0 only */
        return r;
    }
    T Sum(T x)
    {
        return Reduce(x, [](T a, T b) { return a + b; });
    }
};
template <class T, int N> struct BlockScan {
    struct TempStorage {
        T v[N];
    };
    TempStorage &t;
    BlockScan(TempStorage &s) : t(s)
    {
    }
    void ExclusiveSum(T x, T &o, T &agg)
    {
        t.v[threadIdx.x] = x;
        __syncthreads();
        o = 0;
        agg = 0;
        for (int i = 0; i < N; i++) {
            if (i < (int)threadIdx.x)
                o += t.v[i];
            agg += t.v[i];
        }
        __syncthreads();
    }
    void InclusiveSum(T x, T &o, T &agg)
    {
        t.v[threadIdx.x] = x;
        __syncthreads();
        o = 0;
        agg = 0;
        for (int i = 0; i < N; i++) {
            if (i <= (int)threadIdx.x)
                o += t.v[i];
            agg += t.v[i];
        }
        __syncthreads();
    }
};
static inline uint32_t emu_radix_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
struct DeviceSegmentedRadixSort {
    template <class V>
    static cudaError_t SortPairsDescending(void *temp, size_t &bytes, const float *kin, float *kout,
                                           const V *vin, V *vout, int items, int segs, const int *b,
                                           const int *e, int begin_bit = 0, int end_bit = 32,
                                           cudaStream_t stream = 0)
    {
        if (!temp) {
            bytes = 256;
            return cudaSuccess;
        }
        if (begin_bit != 0 || end_bit != 32)
            emu_fail("radix sort bits %d..%d", begin_bit, end_bit);
        if (bytes < 256)
            return cudaErrorInvalidValue;
        emu_enqueue(stream, [=]() {
            for (int s = 0; s < segs; s++) {
                if (b[s] < 0 || e[s] > items || (e[s] > b[s] && b[s] > e[s]))
                    emu_fail("bad segment %d: %d..%d of %d", s, b[s], e[s], items);
                std::vector<std::pair<float, V>> p;
                for (int i = b[s]; i < e[s]; i++)
                    p.push_back({kin[i], vin[i]});
                std::stable_sort(p.begin(), p.end(), [](auto &x, auto &y) {
                    return emu_radix_key(x.first) > emu_radix_key(y.first);
                });
                for (int i = b[s]; i < e[s]; i++) {
                    kout[i] = p[i - b[s]].first;
                    vout[i] = p[i - b[s]].second;
                }
            }
        });
        return cudaSuccess;
    }
};
} // namespace cub
