/*
 * linear.c — the weight GEMMs y = x·Wᵀ + bias through oneDNN matmul, weights packed once.
 *
 * oneDNN 2.6 picks a blocked weight layout for its brgemm matmul (BA16a64b2a in bf16, BA16a64b
 * in f32 on AVX-512) when the weights' format is `any` and M is known; with M a runtime dimension
 * it falls back to gemm:jit over plain weights, and brgemm refuses a runtime M, leaving a
 * reference kernel for packed weights. Measured on the 2-core Zen 5 development machine (2
 * OpenMP threads, weights streamed from DRAM; medians, noisy shared machine), brgemm on packed
 * weights against gemm:jit with a runtime M, 768→2048, 768→32000 and 2048→5632: at M = 1 both
 * stream 22–35 GB/s of weights (gemm:jit up to 1.4 times ahead on the 32000-wide one, brgemm on
 * others); at M = 2–16 (scoring drafted tokens) brgemm is 1.3–2.7 times faster; at M = 64–512 in
 * bf16 1.05–1.25 times (~430 against ~370 GFLOP/s), in f32 even. So each shape gets one packed
 * layout (chosen for M = CHUNK_MAX; oneDNN picked the same one for every M we tried) and
 * primitives for a fixed set of M that all take it:
 *
 *   slot  0 .. 30   M = 1 .. 31 exactly        (decode and speculative scoring)
 *   slot 31 .. 34   M = 32, 64, 128, 256       (prefill, in chunks)
 *
 * A call with M rows runs as chunks: the largest power of two ≤ min(M left, 256) while 32 or more
 * rows are left, then the rest exactly (M = 300: 256 + 32 + 12). NUM_SLOTS primitives per shape,
 * all made when the worker's cache is set up (duet__cpu_dnn_prepare, ~100 µs each) and kept:
 * oneDNN's JIT, which crashes rather than fail when memory is short, runs at load, and nothing
 * is created or allocated in steady state.
 *
 *   duet_cpu_dnn ─► engine, stream, attr (user scratchpad), scratch buffer
 *        └─ shapes ─► (n, k, bf16, bias): packed weight layout, prims[NUM_SLOTS]
 *   duet_cpu_linear ─► its shape, packed weights, bias
 *
 * Linears of one shape (every layer's q_proj, say) share the shape's primitives; the dnn owns
 * the shapes, so every linear is destroyed before its dnn. The scratch holds one chunk's
 * activations (bf16, or f32 when x has a row stride other than k) and the primitive's
 * scratchpad; it grows on the first calls and is reused after. Nothing here is thread-safe: one
 * dnn per worker, called from the worker's thread, the GEMMs running on its OpenMP team.
 *
 * Weights kept in bf16 or f16 by the own kernels (gemv.h) and computed in f32 — bf16 where oneDNN
 * has no bf16 matmul (AVX2-only CPUs), f16 everywhere — get their many-row GEMM here too
 * (duet__cpu_widened_run): whole tiles widened into the caller's panel, then dnnl_sgemm on it.
 * No packed f32 copy is kept: the weights stay 2 bytes, and the widening, one pass over them per
 * call, is amortised by the rows of a prefill.
 */
#include "cpu_worker-int.h"

#include <dnnl.h>
#include <dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXACT_BELOW 32u                 /* M below this has a primitive of its own */
#define CHUNK_MAX 256u                  /* rows per primitive call at most */
#define NUM_SLOTS (EXACT_BELOW - 1 + 4) /* 1 .. 31, then 32, 64, 128, 256 */
#define PAR_MIN_ELEMS 65536             /* activations converted on one thread below */
#define SCRATCH_ALIGN 64

typedef struct dnn_prim {
    dnnl_primitive_t prim;       /* NULL until first used */
    dnnl_memory_t src, dst, pad; /* [rows][k], [rows][n], scratchpad (NULL if none) */
    size_t pad_bytes;            /* scratchpad bytes */
} dnn_prim;

typedef struct dnn_shape {
    struct dnn_shape *next;
    uint32_t n, k;             /* output and input features */
    bool bf16, bias;           /* bf16 weights and activations; a bias argument */
    dnnl_memory_desc_t wei_md; /* the packed layout of the [k][n] weights */
    dnn_prim prims[NUM_SLOTS]; /* by slot (slot_rows) */
} dnn_shape;

struct duet_cpu_dnn {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_attr_t attr; /* scratchpad mode user: the scratchpad comes from scratch */
    dnn_shape *shapes;          /* every shape of every linear, owned */
    void *scratch;              /* SCRATCH_ALIGN-aligned, scratch_bytes */
    size_t scratch_bytes;
};

struct duet_cpu_linear {
    dnn_shape *shape;   /* owned by the dnn */
    dnnl_memory_t wei;  /* packed weights, shape->wei_md */
    dnnl_memory_t bias; /* [1][n] f32, or NULL */
    size_t bytes;       /* of the packed weights and the bias */
    char name[64];      /* for messages */
};

/* ---- errors ---------------------------------------------------------------------------------- */

/* oneDNN's unimplemented (no kernel for this data type on this CPU: oneDNN 2.6 runs bf16 only
 * with AVX-512) is UNSUPPORTED, so that a caller can fall back to f32. */
static duet_status dnn_error(char *err, size_t err_size, const char *who, const char *call,
                             dnnl_status_t s)
{
    if (err && err_size)
        snprintf(err, err_size, "%s: %s failed: %s", who, call, dnnl_status2str(s));
    if (s == dnnl_out_of_memory)
        return DUET_STATUS_OUT_OF_MEMORY;
    return s == dnnl_unimplemented ? DUET_STATUS_UNSUPPORTED : DUET_STATUS_INTERNAL;
}

static duet_status fail(char *err, size_t err_size, duet_status st, const char *who,
                        const char *what)
{
    if (err && err_size)
        snprintf(err, err_size, "%s: %s", who, what);
    return st;
}

/* Runs a oneDNN call; on failure sets st from its status and the message from `call` (the
 * failing oneDNN function) and goes to `label`. */
#define DNN_CALL(label, call, expr)                                                                \
    do {                                                                                           \
        dnnl_status_t s_ = (expr);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            st = dnn_error(err, err_size, who, call, s_);                                          \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)
#define DNN_TRY(label, fn, ...) DNN_CALL(label, #fn, fn(__VA_ARGS__))

/* ---- the engine ------------------------------------------------------------------------------ */

duet_status duet__cpu_dnn_create(duet_cpu_dnn **out, char *err, size_t err_size)
{
    const char *who = "oneDNN";
    duet_status st = DUET_STATUS_OK;
    duet_cpu_dnn *dnn = calloc(1, sizeof(*dnn));

    *out = NULL;
    if (!dnn)
        return fail(err, err_size, DUET_STATUS_OUT_OF_MEMORY, who, "out of memory");
    DNN_TRY(out_destroy, dnnl_engine_create, &dnn->engine, dnnl_cpu, 0);
    DNN_TRY(out_destroy, dnnl_stream_create, &dnn->stream, dnn->engine, dnnl_stream_default_flags);
    DNN_TRY(out_destroy, dnnl_primitive_attr_create, &dnn->attr);
    DNN_TRY(out_destroy, dnnl_primitive_attr_set_scratchpad_mode, dnn->attr,
            dnnl_scratchpad_mode_user);
    *out = dnn;
    return DUET_STATUS_OK;
out_destroy:
    duet__cpu_dnn_destroy(dnn);
    return st;
}

static void prim_fini(dnn_prim *p)
{
    dnnl_primitive_destroy(p->prim);
    dnnl_memory_destroy(p->src);
    dnnl_memory_destroy(p->dst);
    dnnl_memory_destroy(p->pad);
}

void duet__cpu_dnn_destroy(duet_cpu_dnn *dnn)
{
    if (!dnn)
        return;
    while (dnn->shapes) {
        dnn_shape *s = dnn->shapes;

        dnn->shapes = s->next;
        for (unsigned i = 0; i < NUM_SLOTS; i++)
            prim_fini(&s->prims[i]);
        free(s);
    }
    dnnl_primitive_attr_destroy(dnn->attr);
    dnnl_stream_destroy(dnn->stream);
    dnnl_engine_destroy(dnn->engine);
    free(dnn->scratch);
    free(dnn);
}

static duet_status scratch_reserve(duet_cpu_dnn *dnn, size_t bytes, const char *who, char *err,
                                   size_t err_size)
{
    if (bytes <= dnn->scratch_bytes)
        return DUET_STATUS_OK;
    bytes = (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    free(dnn->scratch);
    dnn->scratch_bytes = 0;
    dnn->scratch = aligned_alloc(SCRATCH_ALIGN, bytes);
    if (!dnn->scratch)
        return fail(err, err_size, DUET_STATUS_OUT_OF_MEMORY, who, "out of memory for scratch");
    dnn->scratch_bytes = bytes;
    return DUET_STATUS_OK;
}

/* ---- shapes and their primitives ------------------------------------------------------------- */

static uint32_t slot_rows(unsigned slot)
{
    return slot < EXACT_BELOW - 1 ? slot + 1 : EXACT_BELOW << (slot - (EXACT_BELOW - 1));
}

/* The slot of the next chunk of a call with `left` (> 0) rows to go. */
static unsigned next_slot(uint32_t left)
{
    unsigned slot = NUM_SLOTS - 1;

    if (left < EXACT_BELOW)
        return left - 1;
    while (slot_rows(slot) > left)
        slot--;
    return slot;
}

/* A matmul primitive descriptor of `shape` for `rows` rows with weights wei_md (format any, or
 * the packed layout); *call names the oneDNN function that failed. */
static dnnl_status_t matmul_pd(const duet_cpu_dnn *dnn, const dnn_shape *shape, uint32_t rows,
                               const dnnl_memory_desc_t *wei_md, dnnl_primitive_desc_t *pd,
                               const char **call)
{
    dnnl_data_type_t dt = shape->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src_dims = {rows, shape->k}, dst_dims = {rows, shape->n}, bias_dims = {1, shape->n};
    dnnl_memory_desc_t src_md, dst_md, bias_md;
    dnnl_matmul_desc_t desc;
    dnnl_status_t s;

    *call = "dnnl_memory_desc_init_by_tag";
    if ((s = dnnl_memory_desc_init_by_tag(&src_md, 2, src_dims, dt, dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_tag(&dst_md, 2, dst_dims, dnnl_f32, dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_tag(&bias_md, 2, bias_dims, dnnl_f32, dnnl_ab)))
        return s;
    *call = "dnnl_matmul_desc_init";
    s = dnnl_matmul_desc_init(&desc, &src_md, wei_md, shape->bias ? &bias_md : NULL, &dst_md);
    if (s)
        return s;
    *call = shape->bf16 ? "dnnl_primitive_desc_create (bf16 matmul)"
                        : "dnnl_primitive_desc_create (f32 matmul)";
    return dnnl_primitive_desc_create(pd, &desc, dnn->attr, dnn->engine, NULL);
}

/* A memory object for argument `what` of pd, its data handle set per call. */
static dnnl_status_t arg_memory(const duet_cpu_dnn *dnn, const_dnnl_primitive_desc_t pd,
                                dnnl_query_t what, dnnl_memory_t *mem)
{
    return dnnl_memory_create(mem, dnnl_primitive_desc_query_md(pd, what, 0), dnn->engine,
                              DNNL_MEMORY_NONE);
}

static duet_status prim_init(duet_cpu_dnn *dnn, dnn_shape *shape, unsigned slot, const char *who,
                             char *err, size_t err_size)
{
    dnn_prim *p = &shape->prims[slot];
    dnnl_primitive_desc_t pd = NULL;
    duet_status st = DUET_STATUS_OK;
    const char *call = NULL;

    DNN_CALL(out_free_pd, call, matmul_pd(dnn, shape, slot_rows(slot), &shape->wei_md, &pd, &call));
    DNN_CALL(out_free_pd, "dnnl_memory_create", arg_memory(dnn, pd, dnnl_query_src_md, &p->src));
    DNN_CALL(out_free_pd, "dnnl_memory_create", arg_memory(dnn, pd, dnnl_query_dst_md, &p->dst));
    p->pad_bytes =
        dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    if (p->pad_bytes)
        DNN_CALL(out_free_pd, "dnnl_memory_create",
                 arg_memory(dnn, pd, dnnl_query_scratchpad_md, &p->pad));
    DNN_TRY(out_free_pd, dnnl_primitive_create, &p->prim, pd);
out_free_pd:
    dnnl_primitive_desc_destroy(pd);
    if (st != DUET_STATUS_OK) {
        prim_fini(p);
        *p = (dnn_prim){0};
    }
    return st;
}

/* The shape (n, k, bf16, bias) of dnn, added with its packed layout if new. */
static duet_status shape_get(duet_cpu_dnn *dnn, uint32_t n, uint32_t k, bool bf16, bool bias,
                             dnn_shape **out, const char *who, char *err, size_t err_size)
{
    dnnl_dims_t wei_dims = {k, n};
    dnnl_memory_desc_t any_md;
    dnnl_primitive_desc_t pd = NULL;
    duet_status st = DUET_STATUS_OK;
    const char *call = NULL;
    dnn_shape *s;

    for (s = dnn->shapes; s; s = s->next)
        if (s->n == n && s->k == k && s->bf16 == bf16 && s->bias == bias) {
            *out = s;
            return DUET_STATUS_OK;
        }
    s = calloc(1, sizeof(*s));
    if (!s)
        return fail(err, err_size, DUET_STATUS_OUT_OF_MEMORY, who, "out of memory");
    *s = (dnn_shape){.n = n, .k = k, .bf16 = bf16, .bias = bias};
    DNN_TRY(out_free_pd, dnnl_memory_desc_init_by_tag, &any_md, 2, wei_dims,
            bf16 ? dnnl_bf16 : dnnl_f32, dnnl_format_tag_any);
    DNN_CALL(out_free_pd, call, matmul_pd(dnn, s, CHUNK_MAX, &any_md, &pd, &call));
    s->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    s->next = dnn->shapes;
    dnn->shapes = s;
    *out = s;
out_free_pd:
    dnnl_primitive_desc_destroy(pd);
    if (st != DUET_STATUS_OK)
        free(s);
    return st;
}

/* ---- packing --------------------------------------------------------------------------------- */

/* Reorders W[n][k] f32 (the [k][n] weights in tag ba) into lin->wei, converting to bf16 if so. */
static duet_status pack_weights(duet_cpu_dnn *dnn, duet_cpu_linear *lin, const float *w,
                                const char *who, char *err, size_t err_size)
{
    dnnl_dims_t dims = {lin->shape->k, lin->shape->n};
    dnnl_memory_desc_t w_md;
    dnnl_memory_t w_mem = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    duet_status st = DUET_STATUS_OK;

    DNN_TRY(out_release, dnnl_memory_desc_init_by_tag, &w_md, 2, dims, dnnl_f32, dnnl_ba);
    DNN_TRY(out_release, dnnl_memory_create, &w_mem, &w_md, dnn->engine, (void *)w);
    DNN_TRY(out_release, dnnl_reorder_primitive_desc_create, &pd, &w_md, dnn->engine,
            &lin->shape->wei_md, dnn->engine, NULL);
    DNN_TRY(out_release, dnnl_primitive_create, &reorder, pd);
    {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, w_mem}, {DNNL_ARG_TO, lin->wei}};

        DNN_TRY(out_release, dnnl_primitive_execute, reorder, dnn->stream, 2, args);
        DNN_TRY(out_release, dnnl_stream_wait, dnn->stream);
    }
out_release:
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(w_mem);
    return st;
}

static duet_status bias_init(duet_cpu_dnn *dnn, duet_cpu_linear *lin, const float *bias,
                             const char *who, char *err, size_t err_size)
{
    dnnl_dims_t dims = {1, lin->shape->n};
    dnnl_memory_desc_t md;
    duet_status st = DUET_STATUS_OK;
    void *data;

    DNN_TRY(out, dnnl_memory_desc_init_by_tag, &md, 2, dims, dnnl_f32, dnnl_ab);
    DNN_TRY(out, dnnl_memory_create, &lin->bias, &md, dnn->engine, DNNL_MEMORY_ALLOCATE);
    DNN_TRY(out, dnnl_memory_get_data_handle, lin->bias, &data);
    memcpy(data, bias, (size_t)lin->shape->n * sizeof(float));
out:
    return st;
}

duet_status duet__cpu_linear_create(duet_cpu_dnn *dnn, const char *name, const float *w,
                                    const float *bias, uint32_t n, uint32_t k, bool bf16,
                                    duet_cpu_linear **out, char *err, size_t err_size)
{
    duet_cpu_linear *lin;
    duet_status st = DUET_STATUS_OK;
    const char *who;

    *out = NULL;
    if (!dnn || !w)
        return fail(err, err_size, DUET_STATUS_INVALID_ARGUMENT, name ? name : "linear",
                    "no engine or no weights");
    if (n == 0 || k == 0 || n > INT32_MAX || k > INT32_MAX) {
        if (err && err_size)
            snprintf(err, err_size, "%s: weight shape [%u][%u] (out × in) is empty or too large",
                     name ? name : "linear", n, k);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    lin = calloc(1, sizeof(*lin));
    if (!lin)
        return fail(err, err_size, DUET_STATUS_OUT_OF_MEMORY, name ? name : "linear",
                    "out of memory");
    snprintf(lin->name, sizeof(lin->name), "%s", name ? name : "linear");
    who = lin->name;
    st = shape_get(dnn, n, k, bf16, bias != NULL, &lin->shape, who, err, err_size);
    if (st != DUET_STATUS_OK)
        goto out_destroy;
    DNN_TRY(out_destroy, dnnl_memory_create, &lin->wei, &lin->shape->wei_md, dnn->engine,
            DNNL_MEMORY_ALLOCATE);
    lin->bytes = dnnl_memory_desc_get_size(&lin->shape->wei_md);
    if ((st = pack_weights(dnn, lin, w, who, err, err_size)) != DUET_STATUS_OK)
        goto out_destroy;
    if (bias) {
        if ((st = bias_init(dnn, lin, bias, who, err, err_size)) != DUET_STATUS_OK)
            goto out_destroy;
        lin->bytes += (size_t)n * sizeof(float);
    }
    *out = lin;
    return DUET_STATUS_OK;
out_destroy:
    duet__cpu_linear_destroy(lin);
    return st;
}

void duet__cpu_linear_destroy(duet_cpu_linear *lin)
{
    if (!lin)
        return;
    dnnl_memory_destroy(lin->wei);
    dnnl_memory_destroy(lin->bias);
    free(lin);
}

size_t duet__cpu_linear_bytes(const duet_cpu_linear *lin)
{
    return lin->bytes;
}

/* ---- running --------------------------------------------------------------------------------- */

/* The chunk's activations as the primitive's source: x itself when f32 and contiguous, else
 * copied (f32) or converted (bf16) into the start of the scratch. */
static void *chunk_src(duet_cpu_dnn *dnn, const dnn_shape *shape, const float *x, size_t x_stride,
                       uint32_t rows)
{
    uint32_t k = shape->k;

    if (!shape->bf16 && (x_stride == k || rows == 1))
        return (void *)x;
    if (shape->bf16) {
        uint16_t *dst = dnn->scratch;

#pragma omp parallel for if ((size_t)rows * k >= PAR_MIN_ELEMS) schedule(static)
        for (uint32_t r = 0; r < rows; r++)
            duet__cpu_f32_to_bf16_rows(x + r * x_stride, dst + (size_t)r * k, k);
    } else {
        float *dst = dnn->scratch;

        for (uint32_t r = 0; r < rows; r++)
            memcpy(dst + (size_t)r * k, x + r * x_stride, k * sizeof(float));
    }
    return dnn->scratch;
}

static size_t align_up(size_t bytes)
{
    return (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
}

/* y[rows][n] for one chunk of at most CHUNK_MAX rows, through the primitive of `slot`. */
static duet_status run_chunk(duet_cpu_dnn *dnn, const duet_cpu_linear *lin, unsigned slot,
                             const float *x, size_t x_stride, float *y, char *err, size_t err_size)
{
    const char *who = lin->name;
    dnn_shape *shape = lin->shape;
    dnn_prim *p = &shape->prims[slot];
    uint32_t rows = slot_rows(slot);
    size_t act = align_up((size_t)rows * shape->k * (shape->bf16 ? 2 : 4));
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    duet_status st;

    if (!p->prim && (st = prim_init(dnn, shape, slot, who, err, err_size)) != DUET_STATUS_OK)
        return st;
    if ((st = scratch_reserve(dnn, act + p->pad_bytes, who, err, err_size)) != DUET_STATUS_OK)
        return st;
    DNN_TRY(out, dnnl_memory_set_data_handle, p->src, chunk_src(dnn, shape, x, x_stride, rows));
    DNN_TRY(out, dnnl_memory_set_data_handle, p->dst, y);
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, p->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, lin->wei};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, p->dst};
    if (lin->bias)
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, lin->bias};
    if (p->pad) {
        DNN_TRY(out, dnnl_memory_set_data_handle, p->pad, (char *)dnn->scratch + act);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->pad};
    }
    DNN_TRY(out, dnnl_primitive_execute, p->prim, dnn->stream, nargs, args);
    DNN_TRY(out, dnnl_stream_wait, dnn->stream);
out:
    return st;
}

duet_status duet__cpu_dnn_prepare(duet_cpu_dnn *dnn, char *err, size_t err_size)
{
    size_t need = 0;
    duet_status st;

    if (!dnn)
        return DUET_STATUS_OK;
    for (dnn_shape *shape = dnn->shapes; shape; shape = shape->next)
        for (unsigned slot = 0; slot < NUM_SLOTS; slot++) {
            dnn_prim *p = &shape->prims[slot];
            size_t act = align_up((size_t)slot_rows(slot) * shape->k * (shape->bf16 ? 2 : 4));
            char who[64];

            snprintf(who, sizeof(who), "matmul %ux%u%s", shape->n, shape->k,
                     shape->bf16 ? " bf16" : "");
            if (!p->prim && (st = prim_init(dnn, shape, slot, who, err, err_size)))
                return st;
            need = act + p->pad_bytes > need ? act + p->pad_bytes : need;
        }
    return scratch_reserve(dnn, need, "oneDNN matmul", err, err_size);
}

duet_status duet__cpu_linear_run(duet_cpu_dnn *dnn, const duet_cpu_linear *lin, const float *x,
                                 size_t x_stride, uint32_t m, float *y, char *err, size_t err_size)
{
    uint32_t done = 0;

    if (m == 0)
        return DUET_STATUS_OK;
    if (!dnn || !lin || !x || !y || x_stride < lin->shape->k)
        return fail(err, err_size, DUET_STATUS_INVALID_ARGUMENT, lin ? lin->name : "linear",
                    "no engine, input or output, or an input row stride below k");
    while (done < m) {
        unsigned slot = next_slot(m - done);
        duet_status st = run_chunk(dnn, lin, slot, x + (size_t)done * x_stride, x_stride,
                                   y + (size_t)done * lin->shape->n, err, err_size);

        if (st != DUET_STATUS_OK)
            return st;
        done += slot_rows(slot);
    }
    return DUET_STATUS_OK;
}

/* ---- f32 GEMMs over 2-byte storage --------------------------------------------------------- */

duet_status duet__cpu_widened_run(const duet_gemv_weight *w, const float *x, size_t x_stride,
                                  uint32_t m, float *y, size_t y_stride, float *panel,
                                  size_t panel_elems, char *err, size_t err_size)
{
    uint32_t tiles = w->n_pad / DUET_GEMV_TILE, per = (uint32_t)(panel_elems / w->k / 16);

    if (m == 0)
        return DUET_STATUS_OK;
    if (!duet__gemv_fmt_16bit(w->fmt) || per == 0 || x_stride < w->k || y_stride < w->n)
        return fail(err, err_size, DUET_STATUS_INVALID_ARGUMENT, "widened GEMM",
                    "not a 2-byte weight, a panel below 16 rows, or a stride below k or n");
    for (uint32_t t0 = 0; t0 < tiles; t0 += per) {
        uint32_t t1 = t0 + per < tiles ? t0 + per : tiles, n0 = t0 * DUET_GEMV_TILE;
        uint32_t nb = (t1 * DUET_GEMV_TILE < w->n ? t1 * DUET_GEMV_TILE : w->n) - n0;
        dnnl_status_t s;

        duet__gemv_weight_widen(w, t0, t1, panel, w->k);
        s = dnnl_sgemm('N', 'T', m, nb, w->k, 1.0f, x, (dnnl_dim_t)x_stride, panel, w->k, 0.0f,
                       y + n0, (dnnl_dim_t)y_stride);
        if (s != dnnl_success)
            return dnn_error(err, err_size, "widened GEMM", "dnnl_sgemm", s);
        if (w->bias)
            for (uint32_t r = 0; r < m; r++)
                for (uint32_t i = 0; i < nb; i++)
                    y[(size_t)r * y_stride + n0 + i] += w->bias[n0 + i];
    }
    return DUET_STATUS_OK;
}

bool duet__cpu_dnn_has_bf16(duet_cpu_dnn *dnn)
{
    dnn_shape shape = {.n = 64, .k = 64, .bf16 = true};
    dnnl_dims_t dims = {64, 64};
    dnnl_memory_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    const char *call;
    bool ok;

    if (dnnl_memory_desc_init_by_tag(&md, 2, dims, dnnl_bf16, dnnl_format_tag_any))
        return false;
    ok = matmul_pd(dnn, &shape, 16, &md, &pd, &call) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    return ok;
}
