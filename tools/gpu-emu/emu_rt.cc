/* Host emulation of CUDA for the GPU worker (`make check-gpu-emu`, docs/gpu-worker.md): the
 * runtime, built as libemu_cuda.so. The plugin's kernels.cu and sample.cu are compiled as C++ by
 * g++ with cuda_emu.h force-included and their launches rewritten by rewrite.py; its C files and
 * the real test objects are linked against this library instead of libcudart and cuBLAS.
 *
 * What is emulated faithfully:
 *   - threads: every CUDA thread is a fiber (hand-written x86-64 context switch, 256 KiB guarded
 *     stacks, up to 1024 threads a block); a block's fibers run cooperatively on one OS thread,
 *     blocks on EMU_WORKERS threads. __syncthreads, __syncwarp and the warp shuffles switch
 *     fibers; a barrier some threads never reach is a deadlock reported as EMU FATAL with the
 *     kernel's name. EMU_ORDER=0|1|2 runs the fibers between barriers forward, reversed or in a
 *     random order, so a missing barrier shows up as a wrong result.
 *   - launches: checked against the real limits (1024 threads a block, grid y/z <= 65535,
 *     dynamic shared memory over 48 KiB only after cudaFuncSetAttribute, at most 227 KiB).
 *   - memory: cudaMalloc fills with 0xff (NaN in f32, bf16 and f16); copies are checked against
 *     the allocations and their kinds; EMU_POISON_MEMSET=1 turns a whole-allocation memset to 0
 *     into 0xff, so reads of cache entries no step wrote show up.
 *   - streams: with EMU_ASYNC=1 work is queued per stream and runs only at the points where
 *     CUDA guarantees it has (synchronisation, cudaFree, pageable copies), so a missing
 *     synchronisation gives wrong results.
 *   - cuBLAS GemmEx: column-major, op(A) op(B), alpha / beta (beta = 0 does not read C),
 *     leading dimensions validated as cuBLAS does, f32 accumulation.
 *
 * What it cannot catch: races between blocks (a block runs whole), memory-model and visibility
 * bugs (everything is sequentially consistent), warp-synchronous code that works in lockstep
 * outside the orders EMU_ORDER tries, real cuBLAS numerics (TF32, split-K), nvcc's FMA
 * contraction, register limits, occupancy and timing, static shared memory overflows, misaligned
 * fields of by-value struct arguments, uninitialised static __shared__ reads, NCCL and
 * tensor_parallel > 1 (one device, no NCCL). */
#include "cuda_emu.h"
#include <cublas_v2.h>
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

void emu_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "EMU FATAL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}
static std::mutex warn_mu;
static std::map<std::string, int> warned;
static void emu_warn(const char *kernel, const char *what)
{
    std::lock_guard<std::mutex> l(warn_mu);
    std::string k = std::string(kernel) + ": " + what;
    if (warned[k]++ == 0)
        fprintf(stderr, "EMU WARNING: %s\n", k.c_str());
}

#ifdef EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
#define TS_ACQ(x) __tsan_acquire((void *)(x))
#define TS_REL(x) __tsan_release((void *)(x))
#else
#define TS_ACQ(x) ((void)0)
#define TS_REL(x) ((void)0)
#endif
/* ---- context switch (x86-64 SysV) ---- */
extern "C" void emu_switch(void **save_sp, void *new_sp);
asm(".text\n.globl emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
    "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
    "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n");

#define STACK_BYTES (256 * 1024)
enum { RUN, WAIT, DONE };
struct emu_fiber {
    void *sp;
    char *stack;
    uint3 tid;
    unsigned lin, lane, warp;
    int state;
    const unsigned *wait_gen;
    unsigned wait_val;
    void *tsan_fiber;
};
struct warp_st {
    int count, alive;
    unsigned gen;
    int kind;
    unsigned char xch[32][16];
    size_t size[32];
};
struct sched {
    void *sp;
    std::vector<emu_fiber> f;
    int alive, bar_count;
    unsigned nthreads;
    unsigned bar_gen;
    warp_st w[32];
    const std::function<void()> *body;
    const char *name;
    bool progress;
    emu_block_ctx blk;
    std::vector<char> dyn;
    std::vector<unsigned> order;
    void *tsan_sched;
};
static int emu_order = getenv("EMU_ORDER") ? atoi(getenv("EMU_ORDER")) : 0;
thread_local emu_fiber *emu_cur;
thread_local emu_block_ctx *emu_blk;
static thread_local sched *S;

uint3 emu_tid()
{
    return emu_cur->tid;
}
unsigned emu_lane()
{
    return emu_cur->lane;
}

static void yield_wait(const unsigned *gen, unsigned val)
{
    emu_fiber *f = emu_cur;
    f->state = WAIT;
    f->wait_gen = gen;
    f->wait_val = val;
    while (*gen == val) {
#ifdef EMU_TSAN
        __tsan_switch_to_fiber(S->tsan_sched, __tsan_switch_to_fiber_no_sync);
#endif
        emu_switch(&f->sp, S->sp);
        emu_cur = f;
    }
    f->state = RUN;
}
static void check_block_release()
{
    if (S->bar_count > 0 && S->bar_count == S->alive) {
        S->bar_count = 0;
        S->bar_gen++;
    }
}
void emu_syncthreads()
{
    unsigned g = S->bar_gen;
    TS_REL(&S->bar_gen);
    S->bar_count++;
    S->progress = true;
    check_block_release();
    if (S->bar_gen == g)
        yield_wait(&S->bar_gen, g);
    TS_ACQ(&S->bar_gen);
}
static void warp_barrier(int kind)
{
    warp_st &w = S->w[emu_cur->warp];
    unsigned g = w.gen;
    if (w.count == 0)
        w.kind = kind;
    else if (w.kind != kind)
        emu_fail("%s: lanes of warp %u meet at different warp barriers (shfl vs syncwarp)", S->name,
                 emu_cur->warp);
    TS_REL(&w.gen);
    w.count++;
    S->progress = true;
    if (w.count == w.alive) {
        w.count = 0;
        w.gen++;
        TS_ACQ(&w.gen);
        return;
    }
    yield_wait(&w.gen, g);
    TS_ACQ(&w.gen);
}
static unsigned warp_full_mask()
{
    warp_st &w = S->w[emu_cur->warp];
    int left = (int)S->nthreads - (int)emu_cur->warp * 32;
    unsigned n = left >= 32 ? 32 : (unsigned)left;
    return n == 32 ? 0xffffffffu : ((1u << n) - 1);
    (void)w;
}
void emu_syncwarp(unsigned mask)
{
    warp_st &w = S->w[emu_cur->warp];
    if (mask != 0xffffffffu)
        emu_fail("%s: __syncwarp mask %#x unsupported", S->name, mask);
    if (w.alive != 32)
        emu_warn(S->name, "__syncwarp(full mask) with exited/missing lanes (UB)");
    warp_barrier(1);
}
void emu_warp_xchg(unsigned mask, const void *in, void *out, int src, size_t n)
{
    warp_st &w = S->w[emu_cur->warp];
    unsigned lane = emu_cur->lane;
    if (n > 16)
        emu_fail("shfl of %zu bytes", n);
    if (mask != 0xffffffffu)
        emu_fail("%s: shfl mask %#x unsupported", S->name, mask);
    if (w.alive != 32 || warp_full_mask() != 0xffffffffu)
        emu_fail("%s: shfl with full mask but only %d live lanes in warp %u (UB: partial warp or "
                 "exited lanes)",
                 S->name, w.alive, emu_cur->warp);
    memcpy(w.xch[lane], in, n);
    w.size[lane] = n;
    warp_barrier(2);
    if (w.size[src] != n)
        emu_fail("%s: shfl size mismatch", S->name);
    memcpy(out, w.xch[src], n);
    warp_barrier(2);
}

static void fiber_entry()
{
    TS_ACQ(&S->blk);
    (*S->body)();
    emu_fiber *f = emu_cur;
    TS_REL(&S->nthreads);
    f->state = DONE;
    S->alive--;
    S->w[f->warp].alive--;
    S->progress = true;
    if (S->bar_count > 0) {
        emu_warn(S->name, "a thread exited while others wait at __syncthreads (UB)");
        check_block_release();
    }
    warp_st &w = S->w[f->warp];
    if (w.count > 0) {
        emu_warn(S->name, "a lane exited while others wait at a warp barrier");
        if (w.count == w.alive) {
            w.count = 0;
            w.gen++;
        }
    }
#ifdef EMU_TSAN
    __tsan_switch_to_fiber(S->tsan_sched, __tsan_switch_to_fiber_no_sync);
#endif
    emu_switch(&f->sp, S->sp);
    abort();
}

static void run_block(sched &s, uint3 bid, unsigned nthreads)
{
    S = &s;
    s.blk.bid = bid;
    emu_blk = &s.blk;
    s.alive = nthreads;
    s.nthreads = nthreads;
    s.bar_count = 0;
    for (unsigned i = 0; i < 32; i++) {
        s.w[i].count = 0;
        s.w[i].alive = 0;
    }
    dim3 bd = s.blk.bdim;
    for (unsigned i = 0; i < nthreads; i++) {
        emu_fiber &f = s.f[i];
        f.tid = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
        f.lin = i;
        f.lane = i % 32;
        f.warp = i / 32;
        s.w[f.warp].alive++;
        f.state = RUN;
        uintptr_t top = ((uintptr_t)f.stack + STACK_BYTES) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = 0;
        *--sp = (void *)fiber_entry;
        for (int k = 0; k < 6; k++)
            *--sp = 0;
        f.sp = sp;
    }
    s.order.resize(nthreads);
    for (unsigned i = 0; i < nthreads; i++)
        s.order[i] = i;
    static thread_local unsigned long long rng =
        0x9e3779b97f4a7c15ull ^ (unsigned long long)getpid();
    /* garbage in dynamic shared memory, as a real launch leaves it */
    if (s.blk.dyn_bytes)
        memset(s.blk.dyn_smem, 0xff, s.blk.dyn_bytes);
#ifdef EMU_TSAN
    s.tsan_sched = __tsan_get_current_fiber();
    for (unsigned i = 0; i < nthreads; i++)
        if (!s.f[i].tsan_fiber)
            s.f[i].tsan_fiber = __tsan_create_fiber(0);
#endif
    TS_REL(&s.blk);
    for (;;) {
        bool any = false;
        s.progress = false;
        if (emu_order == 2) {
            for (unsigned i = nthreads - 1; i > 0; i--) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                std::swap(s.order[i], s.order[(rng >> 33) % (i + 1)]);
            }
        }
        for (unsigned ii = 0; ii < nthreads; ii++) {
            unsigned i = emu_order == 0 ? ii : emu_order == 1 ? nthreads - 1 - ii : s.order[ii];
            emu_fiber &f = s.f[i];
            if (f.state == DONE)
                continue;
            any = true;
            if (f.state == WAIT && *f.wait_gen == f.wait_val)
                continue;
            emu_cur = &f;
#ifdef EMU_TSAN
            __tsan_switch_to_fiber(f.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
            emu_switch(&s.sp, f.sp);
        }
        if (!any) {
            TS_ACQ(&s.nthreads);
            break;
        }
        if (!s.progress) {
            int wb = 0, ww = 0;
            for (unsigned i = 0; i < nthreads; i++)
                if (s.f[i].state == WAIT)
                    (s.f[i].wait_gen == &s.bar_gen ? wb : ww)++;
            emu_fail("%s: deadlock in block (%u,%u,%u): %d threads at __syncthreads, %d at warp "
                     "barriers, %d alive (divergent barrier)",
                     s.name, bid.x, bid.y, bid.z, wb, ww, s.alive);
        }
    }
}

/* ---- worker pool ---- */
struct pool {
    std::mutex mu;
    std::condition_variable cv, done_cv;
    unsigned gen = 0, busy = 0;
    std::function<void(unsigned)> job;
    std::vector<std::thread> th;
    unsigned n;
    pool()
    {
        const char *e = getenv("EMU_WORKERS");
        n = e ? atoi(e) : std::thread::hardware_concurrency();
        if (n < 1)
            n = 1;
        for (unsigned i = 1; i < n; i++)
            th.emplace_back([this, i] { loop(i); });
    }
    void loop(unsigned id)
    {
        unsigned seen = 0;
        for (;;) {
            std::unique_lock<std::mutex> l(mu);
            cv.wait(l, [&] { return gen != seen; });
            seen = gen;
            auto j = job;
            l.unlock();
            j(id);
            l.lock();
            if (--busy == 0)
                done_cv.notify_all();
        }
    }
    void run(std::function<void(unsigned)> j)
    {
        {
            std::lock_guard<std::mutex> l(mu);
            job = j;
            busy = n - 1;
            gen++;
        }
        cv.notify_all();
        j(0);
        std::unique_lock<std::mutex> l(mu);
        done_cv.wait(l, [&] { return busy == 0; });
    }
};
static pool *P;
static sched *scheds;
static std::mutex launch_mu;

static thread_local cudaError_t last_error = cudaSuccess;
static std::map<const void *, int> max_dyn;

static void run_launch(const char *name, emu_cfg c, const std::function<void()> &body);
static bool emu_async = getenv("EMU_ASYNC") && atoi(getenv("EMU_ASYNC"));
struct emu_stream {
    std::vector<std::function<void()>> q;
};
static emu_stream default_stream;
static std::mutex stream_mu;
static std::vector<emu_stream *> all_streams = {&default_stream};
static emu_stream *stream_of(cudaStream_t s)
{
    if (s == 0 || s == (cudaStream_t)1 || s == (cudaStream_t)2)
        return &default_stream;
    return (emu_stream *)s;
}
void emu_enqueue(cudaStream_t s, std::function<void()> fn)
{
    if (!emu_async) {
        fn();
        return;
    }
    std::lock_guard<std::mutex> l(stream_mu);
    stream_of(s)->q.push_back(std::move(fn));
}
static void flush(emu_stream *st)
{
    std::vector<std::function<void()>> q;
    {
        std::lock_guard<std::mutex> l(stream_mu);
        q.swap(st->q);
    }
    for (auto &f : q)
        f();
}
static void flush_all()
{
    std::vector<emu_stream *> v;
    {
        std::lock_guard<std::mutex> l(stream_mu);
        v = all_streams;
    }
    for (auto *st : v)
        flush(st);
}

static std::once_flag pool_once;
void emu_launch(const void *kernel, const char *name, emu_cfg c, std::function<void()> body)
{
    std::call_once(pool_once, [] {
        P = new pool();
        scheds = new sched[P->n];
        for (unsigned i = 0; i < P->n; i++) {
            scheds[i].f.resize(1024);
            for (auto &f : scheds[i].f) {
                char *m = (char *)mmap(NULL, STACK_BYTES + 4096, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (m == MAP_FAILED)
                    emu_fail("mmap");
                mprotect(m, 4096, PROT_NONE);
                f.stack = m + 4096;
            }
        }
    });
    unsigned nt = c.b.x * c.b.y * c.b.z;
    unsigned long long nb = (unsigned long long)c.g.x * c.g.y * c.g.z;
    if (!c.g.x || !c.g.y || !c.g.z || !c.b.x || !c.b.y || !c.b.z || c.b.x > 1024 || c.b.y > 1024 ||
        c.b.z > 64 || nt > 1024 || c.g.x > 2147483647u || c.g.y > 65535 || c.g.z > 65535) {
        fprintf(stderr, "EMU: %s: invalid launch config grid (%u,%u,%u) block (%u,%u,%u)\n", name,
                c.g.x, c.g.y, c.g.z, c.b.x, c.b.y, c.b.z);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    int lim = 48 * 1024;
    if (max_dyn.count(kernel))
        lim = max_dyn[kernel];
    if (c.smem > (size_t)lim) {
        fprintf(stderr, "EMU: %s: %zu bytes of dynamic shared memory > %d allowed\n", name, c.smem,
                lim);
        last_error = cudaErrorInvalidValue;
        return;
    }
    emu_enqueue(c.s, [name, c, body]() { run_launch(name, c, body); });
}

static void run_launch(const char *name, emu_cfg c, const std::function<void()> &body)
{
    std::lock_guard<std::mutex> lg(launch_mu);
    unsigned nt = c.b.x * c.b.y * c.b.z;
    unsigned long long nb = (unsigned long long)c.g.x * c.g.y * c.g.z;
    if (getenv("EMU_TRACE"))
        fprintf(stderr, "EMU launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", name, c.g.x,
                c.g.y, c.g.z, c.b.x, c.b.y, c.b.z, c.smem);
    std::atomic<unsigned long long> next{0};
    P->run([&](unsigned id) {
        sched &s = scheds[id];
        s.body = &body;
        s.name = name;
        s.blk.bdim = c.b;
        s.blk.gdim = c.g;
        s.dyn.resize(c.smem + 16);
        s.blk.dyn_smem = s.dyn.data();
        s.blk.dyn_bytes = c.smem;
        for (;;) {
            unsigned long long b = next++;
            if (b >= nb)
                break;
            uint3 bid = {(unsigned)(b % c.g.x), (unsigned)((b / c.g.x) % c.g.y),
                         (unsigned)(b / ((unsigned long long)c.g.x * c.g.y))};
            run_block(s, bid, nt);
        }
    });
}

void *cub::emu_poison(void *p, size_t n)
{
    memset(p, 0xa5, n);
    return p;
}

/* ---- cudart ---- */
static std::mutex mem_mu;
static std::map<uintptr_t, size_t> dev_allocs;
static size_t dev_used;
static bool is_dev(const void *p, size_t n)
{
    std::lock_guard<std::mutex> l(mem_mu);
    auto it = dev_allocs.upper_bound((uintptr_t)p);
    if (it == dev_allocs.begin())
        return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}
static void check_copy(void *d, const void *s, size_t n, cudaMemcpyKind k, const char *what)
{
    if (!n)
        return;
    bool dd = is_dev(d, n), sd = is_dev(s, n);
    bool ok = k == cudaMemcpyHostToDevice     ? (dd && !sd)
              : k == cudaMemcpyDeviceToHost   ? (!dd && sd)
              : k == cudaMemcpyDeviceToDevice ? (dd && sd)
                                              : true;
    if (!ok)
        emu_fail("%s(%p <- %p, %zu bytes, kind %d): pointers do not match the kind or lie outside "
                 "an allocation (dst dev %d, src dev %d)",
                 what, d, s, n, (int)k, dd, sd);
}
extern "C" {
cudaError_t cudaMalloc(void **p, size_t n)
{
    /* a failed call also becomes the thread's last error, as in the real runtime */
    if (n > ((size_t)8 << 30)) {
        *p = NULL;
        return last_error = cudaErrorMemoryAllocation;
    }
    *p = malloc(n ? n : 1);
    if (!*p)
        return last_error = cudaErrorMemoryAllocation;
    memset(*p, 0xff, n); /* NaN in every float format: uninitialised reads show */
    std::lock_guard<std::mutex> l(mem_mu);
    dev_allocs[(uintptr_t)*p] = n;
    dev_used += n;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
    flush_all(); /* synchronises the device */
    if (!p)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> l(mem_mu);
        auto it = dev_allocs.find((uintptr_t)p);
        if (it == dev_allocs.end())
            emu_fail("cudaFree(%p): not a device allocation", p);
        dev_used -= it->second;
        dev_allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}
static std::map<uintptr_t, size_t> host_allocs;
static bool is_pinned(const void *p, size_t n)
{
    std::lock_guard<std::mutex> l(mem_mu);
    auto it = host_allocs.upper_bound((uintptr_t)p);
    if (it == host_allocs.begin())
        return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned)
{
    *p = malloc(n ? n : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    memset(*p, 0xee, n);
    std::lock_guard<std::mutex> l(mem_mu);
    host_allocs[(uintptr_t)*p] = n;
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n)
{
    return cudaHostAlloc(p, n, 0);
}
cudaError_t cudaFreeHost(void *p)
{
    flush_all(); /* synchronises the device */
    if (!p)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> l(mem_mu);
        if (!host_allocs.erase((uintptr_t)p))
            emu_fail("cudaFreeHost(%p): not from cudaHostAlloc", p);
    }
    free(p);
    return cudaSuccess;
}
/* the legacy default stream: waits for its own work (the worker's streams are non-blocking) */
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
    check_copy(d, s, n, k, "cudaMemcpy");
    flush(&default_stream);
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
    check_copy(d, s, n, k, "cudaMemcpyAsync");
    if (!emu_async || !n) {
        memmove(d, s, n);
        return cudaSuccess;
    }
    if (k == cudaMemcpyHostToDevice && !is_pinned(s, n)) {
        /* pageable source: staged at the call */
        std::shared_ptr<std::vector<char>> copy =
            std::make_shared<std::vector<char>>((const char *)s, (const char *)s + n);
        emu_enqueue(st, [d, copy, n]() { memcpy(d, copy->data(), n); });
    } else if (k == cudaMemcpyDeviceToHost && !is_pinned(d, n)) {
        /* pageable destination: returns once the copy is done */
        flush(stream_of(st));
        memmove(d, s, n);
    } else
        emu_enqueue(st, [d, s, n]() { memmove(d, s, n); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void *d, int v, size_t n)
{
    if (n && !is_dev(d, n))
        emu_fail("cudaMemset outside allocation");
    flush(&default_stream);
    memset(d, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st)
{
    if (n && !is_dev(d, n))
        emu_fail("cudaMemsetAsync outside allocation");
    if (v == 0 && getenv("EMU_POISON_MEMSET")) {
        /* test: zeroing a whole allocation (the KV pool) writes NaN instead, so that reads of
         * cache entries no step wrote show up */
        std::lock_guard<std::mutex> l(mem_mu);
        auto it = dev_allocs.find((uintptr_t)d);
        if (it != dev_allocs.end() && it->second == n)
            v = 0xff;
    }
    emu_enqueue(st, [d, v, n]() { memset(d, v, n); });
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    emu_stream *st = new emu_stream();
    std::lock_guard<std::mutex> l(stream_mu);
    all_streams.push_back(st);
    *s = (cudaStream_t)st;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    return cudaStreamCreate(s);
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    emu_stream *st = stream_of(s);
    flush(st);
    if (st == &default_stream)
        return cudaSuccess;
    std::lock_guard<std::mutex> l(stream_mu);
    all_streams.erase(std::find(all_streams.begin(), all_streams.end(), st));
    delete st;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    flush(stream_of(s));
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
    flush_all();
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}
cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d)
{
    return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *total)
{
    *total = (size_t)16 << 30;
    *fr = *total - dev_used - ((size_t)1 << 30);
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d)
{
    if (d != 0)
        return cudaErrorInvalidDevice;
    switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
        *v = 232448;
        return cudaSuccess; /* H100 */
    case cudaDevAttrMaxSharedMemoryPerBlock:
        *v = 49152;
        return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
        *v = 132;
        return cudaSuccess;
    default:
        emu_fail("cudaDeviceGetAttribute(%d) not emulated", (int)a);
    }
    return cudaErrorInvalidValue;
}
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v)
{
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize)
        emu_fail("cudaFuncSetAttribute(%d)", (int)a);
    if (v < 0 || v > 232448)
        return cudaErrorInvalidValue; /* H100: 227 KiB less static */
    max_dyn[f] = v;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties_v2(cudaDeviceProp *p, int d)
{
    if (d != 0)
        return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    strcpy(p->name, "Emulated H100 (host)");
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = (size_t)16 << 30;
    p->sharedMemPerBlockOptin = 232448;
    p->sharedMemPerBlock = 49152;
    p->multiProcessorCount = 132;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    return cudaGetDeviceProperties_v2(p, d);
}
cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e)
{
    static char b[64];
    snprintf(b, sizeof b, "emulated cuda error %d", (int)e);
    return b;
}
const char *cudaGetErrorName(cudaError_t e)
{
    return cudaGetErrorString(e);
}

int duet__gpu_device_count(void)
{
    return 1;
}

/* ---- cuBLAS ---- */
struct cublasContext {
    cudaStream_t s;
};
cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s)
{
    h->s = s;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s)
{
    static char b[64];
    snprintf(b, sizeof b, "emulated cublas status %d", (int)s);
    return b;
}
static float ld(const void *p, cudaDataType_t t, size_t i)
{
    switch (t) {
    case CUDA_R_32F:
        return ((const float *)p)[i];
    case CUDA_R_16BF:
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case CUDA_R_16F:
        return __half2float(((const __half *)p)[i]);
    default:
        emu_fail("gemm type %d", (int)t);
    }
    return 0;
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                            int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T)
        emu_fail("gemm op");
    if (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T)
        emu_fail("gemm op");
    if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k) ||
        ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (comp != CUBLAS_COMPUTE_32F)
        emu_fail("gemm compute type %d not emulated", (int)comp);
    if (at != bt)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!(ct == CUDA_R_32F || ct == at))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    float al = *(const float *)alpha, be = *(const float *)beta;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    /* the operands must lie in device memory */
    size_t es = at == CUDA_R_32F ? 4 : 2, cs = ct == CUDA_R_32F ? 4 : 2;
    size_t aext = ta == CUBLAS_OP_N ? (size_t)lda * (k - 1) + m : (size_t)lda * (m - 1) + k;
    size_t bext = tb == CUBLAS_OP_N ? (size_t)ldb * (n - 1) + k : (size_t)ldb * (k - 1) + n;
    size_t cext = (size_t)ldc * (n - 1) + m;
    if (k > 0 && (!is_dev(A, aext * es) || !is_dev(B, bext * es)))
        emu_fail("cublasGemmEx: A or B outside a device allocation");
    if (!is_dev(C, cext * cs))
        emu_fail("cublasGemmEx: C outside a device allocation (m %d n %d ldc %d)", m, n, ldc);
    emu_enqueue(h->s, [=]() {
        std::vector<float> bcol(k);
        for (int j = 0; j < n; j++) {
            for (int l = 0; l < k; l++)
                bcol[l] = ld(B, bt, tb == CUBLAS_OP_N ? l + (size_t)j * ldb : j + (size_t)l * ldb);
            for (int i = 0; i < m; i++) {
                float acc = 0;
                if (ta == CUBLAS_OP_T) {
                    size_t o = (size_t)i * lda;
                    if (at == CUDA_R_32F) {
                        const float *a = (const float *)A + o;
                        for (int l = 0; l < k; l++)
                            acc += a[l] * bcol[l];
                    } else
                        for (int l = 0; l < k; l++)
                            acc += ld(A, at, o + l) * bcol[l];
                } else
                    for (int l = 0; l < k; l++)
                        acc += ld(A, at, i + (size_t)l * lda) * bcol[l];
                size_t ci = i + (size_t)j * ldc;
                float r = al * acc;
                if (be != 0.0f)
                    r += be * ld(C, ct, ci);
                if (ct == CUDA_R_32F)
                    ((float *)C)[ci] = r;
                else if (ct == CUDA_R_16BF)
                    ((__nv_bfloat16 *)C)[ci] = __float2bfloat16_rn(r);
                else
                    ((__half *)C)[ci] = __float2half_rn(r);
            }
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}
}
