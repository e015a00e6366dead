/*
 * duet_gpu_worker.so — the GPU worker plugin (docs/gpu-worker.md, plugin.h, worker.h).
 *
 *   create ─► settings ─► model folder mapped (model/) ─► devices chosen, shards computed
 *             ─► rank threads + NCCL (tensor_parallel > 1) ─► on every rank at once: stream,
 *             cuBLAS handle, its shard of every tensor streamed to the device in f32 through a
 *             staging buffer and converted there (q|k|v and gate|up fused) ─► the sampler
 *   cache_geometry ─► block bytes of the group; blocks from free device memory × memory_fraction
 *   init_cache ─► a zeroed device pool and a pinned host swap pool per rank
 *   execute ─► execute.c
 *
 * Settings (section = "target" or "speculative"): device "auto" (= cuda:0) | "cuda:N" (ranks on
 * N .. N + tensor_parallel − 1), dtype auto (= bf16) | f32 | bf16 | f16, weights auto | the dtype,
 * tensor_parallel; cache.memory_fraction.
 */
#include "build_config.h"

#include "worker.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPU_WORKER_VERSION PACKAGE_VERSION

/* Floats of the staging buffers weights go through on their way to a device. */
#define STAGE_ELEMS ((size_t)8 << 20)

#define fail duet__gpu_fail

/* ---- settings --------------------------------------------------------------------------- */

/* device "auto" (= cuda:0) or "cuda:N" into *first; false for anything else. */
static bool parse_device(const char *device, int *first)
{
    char *end;
    long n;

    if (strcmp(device, "auto") == 0) {
        *first = 0;
        return true;
    }
    n = strncmp(device, "cuda:", 5) == 0 ? strtol(device + 5, &end, 10) : -1;
    if (n < 0 || n > 1024 || end == device + 5 || *end)
        return false;
    *first = (int)n;
    return true;
}

static duet_status read_settings(duet_gpu_worker *w, int *first_device)
{
    duet_kit_settings k;
    const char *dtype;
    duet_status st = duet_kit_settings_read(w->host, w->section, &k, "gpu worker", &w->err);

    if (st)
        return st;
    /* auto: the weights' type when set, else bf16, which every GPU the worker builds for (sm_80
     * on) computes */
    dtype = k.dtype;
    if (strcmp(dtype, "auto") == 0)
        dtype = strcmp(k.weights, "f32") == 0 || strcmp(k.weights, "f16") == 0 ? k.weights : "bf16";
    if (strcmp(dtype, "f32") == 0)
        w->dt = DUET_GPU_F32;
    else if (strcmp(dtype, "bf16") == 0)
        w->dt = DUET_GPU_BF16;
    else if (strcmp(dtype, "f16") == 0)
        w->dt = DUET_GPU_F16;
    else
        return fail(w, DUET_STATUS_UNSUPPORTED,
                    "gpu worker: %s.dtype = \"%s\": the GPU worker computes in \"f32\", \"bf16\" "
                    "or \"f16\"",
                    w->section, dtype);
    if (strcmp(k.weights, "auto") != 0 && strcmp(k.weights, dtype) != 0)
        return fail(
            w, DUET_STATUS_UNSUPPORTED,
            "gpu worker: %s.weights = \"%s\" with dtype \"%s\": the GPU worker keeps weights "
            "in its compute type (\"auto\" or \"%s\"); weight-only int8 / int4 are the "
            "CPU worker's",
            w->section, k.weights, dtype, dtype);
    if (!parse_device(k.device, first_device))
        return fail(w, DUET_STATUS_INVALID_ARGUMENT,
                    "gpu worker: %s.device = \"%s\": expected \"auto\" or \"cuda:N\"", w->section,
                    k.device);
    if (k.tensor_parallel < 1 || k.tensor_parallel > 64)
        return fail(w, DUET_STATUS_INVALID_ARGUMENT,
                    "gpu worker: %s.tensor_parallel = %lld: 1 .. 64", w->section,
                    (long long)k.tensor_parallel);
    w->tp = (uint32_t)k.tensor_parallel;
    w->memory_fraction = k.memory_fraction;
    return DUET_STATUS_OK;
}

/* ---- weights ---------------------------------------------------------------------------- */

/* The weights of one rank on their way in: the pinned host and device staging buffers. */
struct loader {
    duet_gpu_rank *r;
    float *host; /* pinned [STAGE_ELEMS] */
    float *dev;  /* device [STAGE_ELEMS] */
};

static const duet_tensor *tensor(duet_gpu_worker *w, int32_t layer, const char *name)
{
    return layer < 0 ? duet_model_tensor(w->model, name)
                     : duet_model_layer_tensor(w->model, (uint32_t)layer, name);
}

static void *dev_at(void *base, size_t elems, duet_gpu_dtype dt)
{
    return (char *)base + elems * duet__gpu_dtype_size(dt);
}

/* Rows row0 .. row0 + n_rows − 1, columns col0 .. col0 + n_cols − 1 of the 2-D tensor t into
 * dst (dtype dt, rows of n_cols back to back). */
static duet_status upload(struct loader *ld, const duet_tensor *t, uint64_t row0, uint64_t n_rows,
                          uint64_t col0, uint64_t n_cols, void *dst, duet_gpu_dtype dt)
{
    duet_gpu_rank *r = ld->r;
    uint64_t k = t->rank == 2 ? t->shape[1] : t->numel;
    uint64_t rows = t->rank == 2 ? t->shape[0] : 1, per = STAGE_ELEMS / (n_cols ? n_cols : 1);

    if (row0 + n_rows > rows || col0 + n_cols > k || per == 0)
        return duet__gpu_rank_fail(r, DUET_STATUS_BAD_FORMAT,
                                   "gpu worker: tensor %s: rows %llu + %llu, columns %llu + %llu "
                                   "are outside its shape",
                                   t->name, (unsigned long long)row0, (unsigned long long)n_rows,
                                   (unsigned long long)col0, (unsigned long long)n_cols);
    for (uint64_t at = 0; at < n_rows; at += per) {
        uint64_t n = n_rows - at < per ? n_rows - at : per;
        duet_status st = DUET_STATUS_OK;

        if (col0 == 0 && n_cols == k)
            st = duet_tensor_read_f32(t, (row0 + at) * k, n * k, ld->host);
        for (uint64_t i = 0; !st && !(col0 == 0 && n_cols == k) && i < n; i++)
            st = duet_tensor_read_f32(t, (row0 + at + i) * k + col0, n_cols, ld->host + i * n_cols);
        if (st)
            return duet__gpu_rank_fail(r, st, "gpu worker: cannot read tensor %s", t->name);
        GPU_TRY(r, cudaMemcpyAsync(ld->dev, ld->host, n * n_cols * sizeof(float),
                                   cudaMemcpyHostToDevice, r->stream));
        GPU_TRY(r, duet__gpu_convert(r->stream, ld->dev, n_cols, dt, dev_at(dst, at * n_cols, dt),
                                     n_cols, (uint32_t)n, (uint32_t)n_cols, false));
        GPU_TRY(r, cudaStreamSynchronize(r->stream)); /* the staging buffers are reused */
    }
    return DUET_STATUS_OK;
}

static duet_status dev_alloc(duet_gpu_rank *r, void **p, size_t bytes, const char *what)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);

    if (e != cudaSuccess) {
        *p = NULL;
        return duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY,
                                   "gpu worker: device %d: cannot allocate %zu bytes for %s: %s",
                                   r->device, bytes, what, cudaGetErrorString(e));
    }
    r->weight_bytes += bytes;
    return DUET_STATUS_OK;
}

/* One piece of a fused matrix: rows row0 .. row0 + n_rows − 1 and columns col0 .. col0 + n_cols
 * − 1 of a tensor (n_cols = 0: every column), with the same rows of a bias (NULL: none). */
struct piece {
    const char *name, *bias;
    uint64_t row0, n_rows, col0, n_cols;
};

/* A matrix from pieces stacked by rows (all of the same width). */
static duet_status mat_load(struct loader *ld, int32_t layer, const struct piece *pieces,
                            size_t n_pieces, duet_gpu_mat *mat)
{
    duet_gpu_rank *r = ld->r;
    duet_gpu_worker *w = r->w;
    const duet_tensor *t[3], *b[3] = {NULL, NULL, NULL};
    uint64_t rows = 0, k = 0, at = 0;
    duet_status st;

    for (size_t i = 0; i < n_pieces; i++) {
        t[i] = tensor(w, layer, pieces[i].name);
        if (!t[i] || t[i]->rank != 2)
            return duet__gpu_rank_fail(r, DUET_STATUS_BAD_FORMAT,
                                       "gpu worker: layer %d: tensor %s is missing or not 2-D",
                                       layer, pieces[i].name);
        if (pieces[i].bias && !(b[i] = tensor(w, layer, pieces[i].bias)))
            return duet__gpu_rank_fail(r, DUET_STATUS_BAD_FORMAT,
                                       "gpu worker: layer %d: tensor %s is missing", layer,
                                       pieces[i].bias);
        k = pieces[i].n_cols ? pieces[i].n_cols : t[i]->shape[1];
        rows += pieces[i].n_rows;
    }
    mat->n = (uint32_t)rows;
    mat->k = (uint32_t)k;
    st = dev_alloc(r, &mat->w, rows * k * duet__gpu_dtype_size(w->dt), pieces[0].name);
    if (!st && b[0])
        st = dev_alloc(r, (void **)&mat->bias, rows * sizeof(float), pieces[0].bias);
    for (size_t i = 0; !st && i < n_pieces; i++) {
        const struct piece *p = &pieces[i];

        st = upload(ld, t[i], p->row0, p->n_rows, p->col0, k, dev_at(mat->w, at * k, w->dt), w->dt);
        if (!st && b[i]) /* a bias is one row of n values: its columns are our rows */
            st = upload(ld, b[i], 0, 1, p->row0, p->n_rows, mat->bias + at, DUET_GPU_F32);
        at += p->n_rows;
    }
    return st;
}

/* A whole vector (norm weight or bias) as f32. */
static duet_status vec_load(struct loader *ld, int32_t layer, const char *name, float **out)
{
    const duet_tensor *t = tensor(ld->r->w, layer, name);
    duet_status st;

    if (!t)
        return duet__gpu_rank_fail(ld->r, DUET_STATUS_BAD_FORMAT,
                                   "gpu worker: layer %d: tensor %s is missing", layer, name);
    st = dev_alloc(ld->r, (void **)out, t->numel * sizeof(float), name);
    return st ? st : upload(ld, t, 0, 1, 0, t->numel, *out, DUET_GPU_F32);
}

/* Llama, Mistral, Qwen2 (q/k/v biases: column-parallel, each rank's rows) and Qwen3 (q/k norms:
 * per head, every rank the whole vector). */
static duet_status load_llama_layer(struct loader *ld, int32_t l, duet_gpu_layer *L)
{
    const duet_model_desc *d = ld->r->w->d;
    const duet_gpu_shard *sh = &ld->r->sh;
    uint64_t hd = d->head_dim, q0 = sh->head0 * hd, nq = sh->n_heads * hd;
    uint64_t k0 = sh->kv_head0 * hd, nk = sh->n_kv_heads * hd;
    bool b = d->attention_bias;
    struct piece qkv[] = {
        {"self_attn.q_proj.weight", b ? "self_attn.q_proj.bias" : NULL, q0, nq, 0, 0},
        {"self_attn.k_proj.weight", b ? "self_attn.k_proj.bias" : NULL, k0, nk, 0, 0},
        {"self_attn.v_proj.weight", b ? "self_attn.v_proj.bias" : NULL, k0, nk, 0, 0}};
    struct piece o = {"self_attn.o_proj.weight", NULL, 0, d->hidden_size, q0, nq};
    struct piece gate_up[] = {{"mlp.gate_proj.weight", NULL, sh->inter0, sh->n_inter, 0, 0},
                              {"mlp.up_proj.weight", NULL, sh->inter0, sh->n_inter, 0, 0}};
    struct piece down = {"mlp.down_proj.weight", NULL, 0, d->hidden_size, sh->inter0, sh->n_inter};
    duet_status st = mat_load(ld, l, qkv, 3, &L->qkv);

    if (!st)
        st = mat_load(ld, l, &o, 1, &L->o);
    if (!st)
        st = mat_load(ld, l, gate_up, 2, &L->gate_up);
    if (!st)
        st = mat_load(ld, l, &down, 1, &L->down);
    if (!st)
        st = vec_load(ld, l, "input_layernorm.weight", &L->norm1_w);
    if (!st)
        st = vec_load(ld, l, "post_attention_layernorm.weight", &L->norm2_w);
    if (!st && d->qk_norm)
        st = vec_load(ld, l, "self_attn.q_norm.weight", &L->q_norm);
    if (!st && d->qk_norm)
        st = vec_load(ld, l, "self_attn.k_norm.weight", &L->k_norm);
    return st;
}

static duet_status load_opt_layer(struct loader *ld, int32_t l, duet_gpu_layer *L)
{
    const duet_model_desc *d = ld->r->w->d;
    const duet_gpu_shard *sh = &ld->r->sh;
    bool first = ld->r->index == 0; /* row-parallel biases are added once, by rank 0 */
    uint64_t hd = d->head_dim, q0 = sh->head0 * hd, nq = sh->n_heads * hd;
    uint64_t k0 = sh->kv_head0 * hd, nk = sh->n_kv_heads * hd;
    struct piece qkv[] = {{"self_attn.q_proj.weight", "self_attn.q_proj.bias", q0, nq, 0, 0},
                          {"self_attn.k_proj.weight", "self_attn.k_proj.bias", k0, nk, 0, 0},
                          {"self_attn.v_proj.weight", "self_attn.v_proj.bias", k0, nk, 0, 0}};
    struct piece o = {"self_attn.out_proj.weight",
                      first ? "self_attn.out_proj.bias" : NULL,
                      0,
                      d->hidden_size,
                      q0,
                      nq};
    struct piece fc1 = {"fc1.weight", "fc1.bias", sh->inter0, sh->n_inter, 0, 0};
    struct piece fc2 = {"fc2.weight", first ? "fc2.bias" : NULL, 0, d->hidden_size, sh->inter0,
                        sh->n_inter};
    duet_status st = mat_load(ld, l, qkv, 3, &L->qkv);

    if (!st)
        st = mat_load(ld, l, &o, 1, &L->o);
    if (!st)
        st = mat_load(ld, l, &fc1, 1, &L->fc1);
    if (!st)
        st = mat_load(ld, l, &fc2, 1, &L->fc2);
    if (!st)
        st = vec_load(ld, l, "self_attn_layer_norm.weight", &L->norm1_w);
    if (!st)
        st = vec_load(ld, l, "self_attn_layer_norm.bias", &L->norm1_b);
    if (!st)
        st = vec_load(ld, l, "final_layer_norm.weight", &L->norm2_w);
    if (!st)
        st = vec_load(ld, l, "final_layer_norm.bias", &L->norm2_b);
    return st;
}

/* A whole 2-D tensor of dtype into a new device array. */
static duet_status table_load(struct loader *ld, const duet_tensor *t, void **out)
{
    duet_gpu_worker *w = ld->r->w;
    duet_status st = dev_alloc(ld->r, out, t->numel * duet__gpu_dtype_size(w->dt), t->name);

    return st ? st : upload(ld, t, 0, t->shape[0], 0, t->shape[1], *out, w->dt);
}

/* Embeddings, positions, projections, final norm and this rank's rows of the head. */
static duet_status load_ends(struct loader *ld)
{
    duet_gpu_rank *r = ld->r;
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    bool opt = d->arch == DUET_ARCH_OPT;
    const char *embed = opt ? "model.decoder.embed_tokens.weight" : "model.embed_tokens.weight";
    const duet_tensor *te = duet_model_tensor(w->model, embed), *tp = NULL, *th;
    uint32_t width = opt ? d->word_embed_proj_dim : d->hidden_size;
    duet_status st;

    if (opt)
        tp = duet_model_tensor(w->model, "model.decoder.embed_positions.weight");
    if (!te || te->rank != 2 || (opt && (!tp || tp->rank != 2)))
        return duet__gpu_rank_fail(r, DUET_STATUS_BAD_FORMAT,
                                   "gpu worker: the embeddings (%s) are missing", embed);
    st = table_load(ld, te, &r->embed);
    if (!st && tp)
        st = table_load(ld, tp, &r->positions);
    if (!st && opt && d->word_embed_proj_dim != d->hidden_size) {
        struct piece in = {"model.decoder.project_in.weight", NULL, 0, d->hidden_size, 0, 0};
        struct piece out = {"model.decoder.project_out.weight", NULL, 0, width, 0, 0};

        st = mat_load(ld, -1, &in, 1, &r->project_in);
        if (!st)
            st = mat_load(ld, -1, &out, 1, &r->project_out);
    }
    if (!st && !opt)
        st = vec_load(ld, -1, "model.norm.weight", &r->final_w);
    if (!st && opt && d->do_layer_norm_before && d->final_layer_norm) {
        st = vec_load(ld, -1, "model.decoder.final_layer_norm.weight", &r->final_w);
        if (!st)
            st = vec_load(ld, -1, "model.decoder.final_layer_norm.bias", &r->final_b);
    }
    if (st)
        return st;
    th = duet_model_tensor(w->model, "lm_head.weight");
    if (!th)
        th = te;
    if (th->rank != 2 || th->shape[0] != d->vocab_size || th->shape[1] != width)
        return duet__gpu_rank_fail(r, DUET_STATUS_BAD_FORMAT,
                                   "gpu worker: tensor %s: expected [%u][%u]", th->name,
                                   d->vocab_size, width);
    r->lm_head.n = r->sh.vocab_pad;
    r->lm_head.k = width;
    if (th == te && w->tp == 1) { /* tied: the embeddings are the head */
        r->lm_head.w = r->embed;
        r->lm_head.shared = true;
        return DUET_STATUS_OK;
    }
    st = dev_alloc(r, &r->lm_head.w, (size_t)r->sh.vocab_pad * width * duet__gpu_dtype_size(w->dt),
                   th->name);
    if (!st) /* padding rows score 0 and are never read back */
        GPU_TRY(r, cudaMemsetAsync(r->lm_head.w, 0,
                                   (size_t)r->sh.vocab_pad * width * duet__gpu_dtype_size(w->dt),
                                   r->stream));
    return st ? st : upload(ld, th, r->sh.vocab0, r->sh.n_vocab, 0, width, r->lm_head.w, w->dt);
}

/* The rank job of create: stream, cuBLAS, weights of the shard. */
static duet_status rank_setup(duet_gpu_rank *r, void *arg)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    struct loader ld = {r, NULL, NULL};
    cublasStatus_t bs;
    duet_status st = DUET_STATUS_OK;

    (void)arg;
    GPU_TRY(r, cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking));
    if ((bs = cublasCreate(&r->blas)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetStream(r->blas, r->stream)) != CUBLAS_STATUS_SUCCESS)
        return duet__gpu_rank_fail(r, DUET_STATUS_DEVICE, "gpu worker: device %d: cuBLAS: %s",
                                   r->device, cublasGetStatusString(bs));
    GPU_TRY(r, duet__gpu_attn_prefill_setup(w->pcfg.shared_bytes));
    GPU_TRY(r, cudaHostAlloc((void **)&ld.host, STAGE_ELEMS * sizeof(float), cudaHostAllocDefault));
    if (cudaMalloc((void **)&ld.dev, STAGE_ELEMS * sizeof(float)) != cudaSuccess) {
        cudaFreeHost(ld.host);
        return duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY,
                                   "gpu worker: device %d: no room for the staging buffer",
                                   r->device);
    }
    if (!(r->layers = calloc(d->num_layers, sizeof(*r->layers))))
        st = duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
    if (!st)
        st = load_ends(&ld);
    for (uint32_t l = 0; !st && l < d->num_layers; l++) {
        st = d->arch == DUET_ARCH_LLAMA ? load_llama_layer(&ld, (int32_t)l, &r->layers[l])
                                        : load_opt_layer(&ld, (int32_t)l, &r->layers[l]);
        if (!st && r->index == 0)
            duet_kit_log(w->host, DUET_LOG_INFO, "gpu",
                         "%s: layer %u / %u on the device(s), %.2f GiB on device %d", w->section,
                         l + 1, d->num_layers, (double)r->weight_bytes / (1 << 30), r->device);
    }
    if (!st && d->arch == DUET_ARCH_LLAMA) {
        double *f = calloc(d->head_dim / 2 + 1, sizeof(double));

        if (!f)
            st = duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
        if (!st) {
            duet_model_rope_inv_freq(d, f);
            st = dev_alloc(r, (void **)&r->inv_freq, d->head_dim / 2 * sizeof(double), "RoPE");
        }
        if (!st && cudaMemcpy(r->inv_freq, f, d->head_dim / 2 * sizeof(double),
                              cudaMemcpyHostToDevice) != cudaSuccess)
            st = duet__gpu_rank_fail(r, DUET_STATUS_DEVICE, "gpu worker: device %d: cudaMemcpy",
                                     r->device);
        free(f);
    }
    cudaStreamSynchronize(r->stream);
    cudaFree(ld.dev);
    cudaFreeHost(ld.host);
    return st;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void mat_free(duet_gpu_mat *m)
{
    if (!m->shared)
        cudaFree(m->w);
    cudaFree(m->bias);
}

static void rank_free(duet_gpu_rank *r, uint32_t num_layers)
{
    if (cudaSetDevice(r->device) != cudaSuccess)
        return;
    if (r->stream)
        cudaStreamSynchronize(r->stream);
    for (uint32_t l = 0; r->layers && l < num_layers; l++) {
        duet_gpu_layer *L = &r->layers[l];

        mat_free(&L->qkv), mat_free(&L->o), mat_free(&L->gate_up), mat_free(&L->down);
        mat_free(&L->fc1), mat_free(&L->fc2);
        cudaFree(L->norm1_w), cudaFree(L->norm1_b), cudaFree(L->norm2_w), cudaFree(L->norm2_b);
        cudaFree(L->q_norm), cudaFree(L->k_norm);
    }
    free(r->layers);
    mat_free(&r->lm_head); /* before the embeddings it may share */
    mat_free(&r->project_in), mat_free(&r->project_out);
    cudaFree(r->embed), cudaFree(r->positions), cudaFree(r->final_w), cudaFree(r->final_b);
    cudaFree(r->inv_freq);
    cudaFree(r->kv.base);
    cudaFreeHost(r->swap);
    duet__gpu_scratch_free(r);
    if (r->blas)
        cublasDestroy(r->blas);
    if (r->stream)
        cudaStreamDestroy(r->stream);
}

static void worker_destroy(duet_worker *w)
{
    if (!w)
        return;
    duet__gpu_ranks_stop(w);
    if (w->sampler) {
        cudaSetDevice(w->ranks[0].device);
        duet__gpu_sampler_destroy(w->sampler);
    }
    for (uint32_t i = 0; w->ranks && i < w->tp; i++)
        rank_free(&w->ranks[i], w->d ? w->d->num_layers : 0);
    free(w->ranks);
    duet__gpu_host_scratch_free(w);
    duet_model_destroy(w->model);
    free(w);
}

/* Devices, shards and the prefill tile every device can run. */
static duet_status plan_ranks(duet_gpu_worker *w, int first)
{
    int count = duet__gpu_device_count();
    size_t shared = SIZE_MAX;

    if (count == 0)
        return fail(w, DUET_STATUS_UNSUPPORTED, "gpu worker: no CUDA device is visible");
    if (first + (int)w->tp > count)
        return fail(w, DUET_STATUS_INVALID_ARGUMENT,
                    "gpu worker: %s.device = cuda:%d with tensor_parallel = %u needs devices %d .. "
                    "%d; %d are visible",
                    w->section, first, w->tp, first, first + (int)w->tp - 1, count);
    if (!(w->ranks = calloc(w->tp, sizeof(*w->ranks))))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
    for (uint32_t i = 0; i < w->tp; i++) {
        duet_gpu_rank *r = &w->ranks[i];
        int optin = 0;
        duet_status st;

        r->w = w;
        r->index = i;
        r->device = first + (int)i;
        st = duet__gpu_shard(w->d, w->tp, i, &r->sh, w->err.msg, sizeof(w->err.msg));
        if (st)
            return st;
        if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, r->device) !=
            cudaSuccess)
            return fail(w, DUET_STATUS_DEVICE, "gpu worker: cannot query device %d", r->device);
        shared = (size_t)optin < shared ? (size_t)optin : shared;
    }
    if (duet__gpu_prefill_config(w->d->head_dim, shared, &w->pcfg))
        return fail(w, DUET_STATUS_UNSUPPORTED,
                    "gpu worker: head_dim %u: the attention kernels take even head sizes up to %u",
                    w->d->head_dim, DUET_GPU_MAX_HEAD_DIM);
    return DUET_STATUS_OK;
}

static duet_status worker_create(const duet_worker_params *params, duet_worker **out, char *errbuf,
                                 size_t errbuf_size)
{
    duet_worker *w;
    struct cudaDeviceProp prop = {0};
    duet_status st;
    int first = 0;

    *out = NULL;
    if ((st = duet_kit_check_params(params, sizeof(w->section), "gpu worker", errbuf, errbuf_size)))
        return st;
    if (!(w = calloc(1, sizeof(*w)))) {
        snprintf(errbuf, errbuf_size, "gpu worker: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    w->host = params->host;
    strcpy(w->section, params->section);
    st = read_settings(w, &first);
    if (!st)
        st = duet_model_create(params->model_dir, DUET_MODEL_QUIET, &w->model, w->err.msg,
                               sizeof(w->err.msg));
    if (!st) {
        w->d = duet_model_describe(w->model);
        st = plan_ranks(w, first);
    }
    if (!st)
        st = duet__gpu_ranks_start(w);
    if (!st)
        st = duet__gpu_ranks_run(w, rank_setup, NULL);
    if (!st && cudaSetDevice(w->ranks[0].device) != cudaSuccess)
        st =
            fail(w, DUET_STATUS_DEVICE, "gpu worker: cudaSetDevice(%d) failed", w->ranks[0].device);
    if (!st)
        st =
            duet__gpu_sampler_create(w->d->vocab_size, &w->sampler, w->err.msg, sizeof(w->err.msg));
    if (st) {
        snprintf(errbuf, errbuf_size, "%s", w->err.msg);
        worker_destroy(w);
        return st;
    }
    for (uint32_t i = 0; i < w->tp; i++)
        w->weight_bytes += w->ranks[i].weight_bytes;
    if (cudaGetDeviceProperties(&prop, first) != cudaSuccess)
        snprintf(prop.name, sizeof(prop.name), "?");
    duet_kit_log(w->host, DUET_LOG_INFO, "gpu",
                 "%s: %.2f GiB of weights on %u device(s) from cuda:%d (%.64s, sm_%d%d)",
                 w->section, (double)w->weight_bytes / (1 << 30), w->tp, first, prop.name,
                 prop.major, prop.minor);
    *out = w;
    return DUET_STATUS_OK;
}

static duet_status worker_describe(duet_worker *w, duet_model_info *info)
{
    return duet_kit_describe(duet_model_fill_info, w->model, w->weight_bytes, info, "gpu worker",
                             &w->err);
}

static duet_status worker_cache_geometry(duet_worker *w, duet_cache_geometry *g)
{
    uint64_t rank_bytes, free_bytes[64], total_bytes[64];
    duet_status st = duet_kit_check_geometry(g, "gpu worker", &w->err);

    if (st)
        return st;
    rank_bytes = duet__gpu_block_bytes(w->d, &w->ranks[0].sh, g->block_size, w->dt);
    for (uint32_t i = 0; !g->budget_bytes && i < w->tp; i++) {
        size_t fr = 0, total = 0;
        cudaError_t e = cudaSetDevice(w->ranks[i].device);

        if (e == cudaSuccess)
            e = cudaMemGetInfo(&fr, &total);
        if (e != cudaSuccess)
            return fail(w, DUET_STATUS_DEVICE, "gpu worker: device %d: cudaMemGetInfo: %s",
                        w->ranks[i].device, cudaGetErrorString(e));
        free_bytes[i] = fr;
        total_bytes[i] = total;
    }
    g->block_bytes = rank_bytes * w->tp;
    g->num_blocks = duet__gpu_num_blocks(g->budget_bytes, free_bytes, total_bytes, w->tp,
                                         w->memory_fraction, rank_bytes);
    if (g->num_blocks > UINT32_MAX / g->block_size) /* init_cache's limit: 2^32 slots */
        g->num_blocks = UINT32_MAX / g->block_size;
    return DUET_STATUS_OK;
}

/* The rank job of init_cache: arg is the duet_cache_config. */
static duet_status rank_cache(duet_gpu_rank *r, void *arg)
{
    const duet_cache_config *c = arg;
    const duet_model_desc *d = r->w->d;
    size_t block_bytes, bytes;
    cudaError_t e;

    r->kv = (duet_gpu_kv){.block_elems = (size_t)d->num_layers * 2 * r->sh.n_kv_heads *
                                         c->block_size * d->head_dim,
                          .num_blocks = c->num_blocks,
                          .block_size = c->block_size,
                          .num_layers = d->num_layers,
                          .kv_heads = r->sh.n_kv_heads,
                          .head_dim = d->head_dim,
                          .dtype = r->w->dt};
    block_bytes = r->kv.block_elems * duet__gpu_dtype_size(r->w->dt);
    if (__builtin_mul_overflow(block_bytes, (size_t)c->num_blocks, &bytes) ||
        (e = cudaMalloc(&r->kv.base, bytes)) != cudaSuccess) {
        r->kv.base = NULL;
        return duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY,
                                   "gpu worker: device %d: cannot allocate the KV cache: %u blocks "
                                   "of %zu bytes",
                                   r->device, c->num_blocks, block_bytes);
    }
    GPU_TRY(r, cudaMemsetAsync(r->kv.base, 0, bytes, r->stream));
    if (c->num_swap_blocks) {
        if (__builtin_mul_overflow(block_bytes, (size_t)c->num_swap_blocks, &bytes) ||
            cudaHostAlloc(&r->swap, bytes, cudaHostAllocDefault) != cudaSuccess) {
            r->swap = NULL;
            return duet__gpu_rank_fail(r, DUET_STATUS_OUT_OF_MEMORY,
                                       "gpu worker: cannot allocate %u pinned swap blocks of %zu "
                                       "bytes",
                                       c->num_swap_blocks, block_bytes);
        }
        memset(r->swap, 0, bytes);
    }
    GPU_TRY(r, cudaStreamSynchronize(r->stream));
    return DUET_STATUS_OK;
}

static duet_status worker_init_cache(duet_worker *w, const duet_cache_config *c)
{
    duet_status st = duet_kit_check_cache_config(c, w->num_blocks != 0, "gpu worker", &w->err);

    if (st)
        return st;
    if ((uint64_t)c->num_blocks * c->block_size > UINT32_MAX)
        return fail(w, DUET_STATUS_OUT_OF_MEMORY,
                    "gpu worker: init_cache: %u blocks of %u positions: more than the 2^32 slots "
                    "the kernels address",
                    c->num_blocks, c->block_size);
    st = duet__gpu_ranks_run(w, rank_cache, (void *)c);
    if (st) {
        for (uint32_t i = 0; i < w->tp; i++) {
            cudaSetDevice(w->ranks[i].device);
            cudaFree(w->ranks[i].kv.base);
            cudaFreeHost(w->ranks[i].swap);
            w->ranks[i].kv.base = w->ranks[i].swap = NULL;
        }
        return st;
    }
    w->num_blocks = c->num_blocks;
    w->num_swap_blocks = c->num_swap_blocks;
    w->block_size = c->block_size;
    return DUET_STATUS_OK;
}

static const char *worker_last_error(const duet_worker *w)
{
    return w ? w->err.msg : "";
}

/* duet_worker_plugin.details: what the plugin was built with and the driver it finds, written by
 * the first query — without starting the CUDA runtime, which create() does (and then logs the
 * devices it uses). */
static duet_kit_details details = DUET_KIT_DETAILS_INIT;

static const duet_worker_plugin plugin = {
    DUET_KIT_PLUGIN_HEADER("gpu", GPU_WORKER_VERSION),
    .caps = DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_BF16 |
            DUET_CAP_F16 | DUET_CAP_PREFIX_CACHE | DUET_CAP_PENALTIES
#ifdef DUET_HAVE_NCCL
            | DUET_CAP_TP
#endif
    ,
    .create = worker_create,
    .destroy = worker_destroy,
    .describe = worker_describe,
    .cache_geometry = worker_cache_geometry,
    .init_cache = worker_init_cache,
    .execute = duet__gpu_execute,
    .last_error = worker_last_error,
    .details = details.text,
};

/* cudaRuntimeGetVersion and cudaDriverGetVersion answer without creating a context. */
static void fill_details(char *text, size_t size)
{
    int runtime = 0, driver = 0;

    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    if (!driver) {
        snprintf(text, size, "CUDA runtime %d.%d, no CUDA driver; cuBLAS GEMMs (cublasGemmEx)",
                 runtime / 1000, runtime % 1000 / 10);
        return;
    }
    snprintf(text, size, "CUDA runtime %d.%d, driver %d.%d; cuBLAS GEMMs (cublasGemmEx)%s",
             runtime / 1000, runtime % 1000 / 10, driver / 1000, driver % 1000 / 10,
#ifdef DUET_HAVE_NCCL
             "; NCCL tensor parallelism"
#else
             "; no NCCL (tensor_parallel = 1 only)"
#endif
    );
}

const duet_worker_plugin *duet_plugin_query(uint32_t host_abi_major, const duet_host_services *host)
{
    (void)host;
    return duet_kit_query(&plugin, host_abi_major, &details, fill_details);
}
