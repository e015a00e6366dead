/*
 * duet_cpu_worker.so — the CPU worker plugin (docs/cpu-worker.md, plugin.h).
 *
 *   create ─► model folder mapped (model/) ─► every weight matrix converted once and packed
 *             (q|k|v and gate|up fused): by oneDNN in f32 / bf16, by gemv.c for the own kernels
 *             in bf16 (small M) or quantised to int8 / int4 ─► norms copied ─► samplers
 *   cache_geometry / init_cache ─► one host pool of KV blocks (+ a swap pool), zero pages
 *   execute ─► checks every id, position and size ─► swap in, swap out, copy
 *             ─► forward over all fed tokens ─► sample the output rows
 *             ─► n_draft_steps more forwards of one row per drafting sequence
 *
 * Settings (through the host, section = "target" or "speculative"): dtype auto | f32 | bf16,
 * weights auto | f32 | bf16 | f16 | int8 | int4, group_size 32 | 64 | 128, zero_point,
 * quantize_lm_head, threads (0 = every core, or every CPU of cpus), cpus (a CPU list the team is
 * pinned to, affinity.h). resolve_types() turns the two `auto`s into what
 * this model and this CPU get (docs/cpu-worker.md, "Types").
 */
#include "build_config.h"

#include "cpu_worker-int.h"

#include <duet/plugin.h>

#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CPU_WORKER_VERSION PACKAGE_VERSION

#define fail duet__cpu_fail

duet_status duet__cpu_fail(duet_worker *w, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    duet_kit_vfail(&w->err, st, fmt, ap);
    va_end(ap);
    return st;
}

/* ---- settings --------------------------------------------------------------------------- */

static bool one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static duet_status read_settings(duet_worker *w)
{
    static const char *const dtypes[] = {"auto", "f32", "bf16", NULL};
    static const char *const weight_types[] = {"auto", "f32", "bf16", "f16", "int8", "int4", NULL};
    duet_kit_settings k;
    duet_status st = duet_kit_settings_read(w->host, w->section, &k, "cpu worker", &w->err);
    char key[32];

    if (st)
        return st;
    if (!one_of(k.dtype, dtypes))
        return fail(w, DUET_STATUS_UNSUPPORTED,
                    "cpu worker: %s.dtype = \"%s\": the CPU worker computes in \"f32\" or \"bf16\" "
                    "(\"auto\": the best this CPU has for the weights)",
                    w->section, k.dtype);
    if (!one_of(k.weights, weight_types))
        return fail(
            w, DUET_STATUS_UNSUPPORTED,
            "cpu worker: %s.weights = \"%s\": the CPU worker stores weights as \"f32\", "
            "\"bf16\", \"f16\", \"int8\" or \"int4\" (\"auto\": as the model file has them)",
            w->section, k.weights);
    if (k.group_size != 32 && k.group_size != 64 && k.group_size != 128)
        return fail(w, DUET_STATUS_UNSUPPORTED,
                    "cpu worker: %s.group_size = %lld: the CPU worker quantises in groups of 32, "
                    "64 or 128",
                    w->section, (long long)k.group_size);
    snprintf(w->req_dtype, sizeof(w->req_dtype), "%s", k.dtype);
    snprintf(w->req_weights, sizeof(w->req_weights), "%s", k.weights);
    w->quant = strcmp(k.weights, "int8") == 0   ? DUET_CPU_QUANT_INT8
               : strcmp(k.weights, "int4") == 0 ? DUET_CPU_QUANT_INT4
                                                : DUET_CPU_QUANT_NONE;
    snprintf(key, sizeof(key), "%s.cpus", w->section);
    if ((st = duet__cpu_affinity_create(key, k.cpus, &w->affinity, w->err.msg, sizeof(w->err.msg))))
        return st;
    /* threads: as set; else one per CPU of the list; else the CPUs this thread may use */
    w->threads = k.threads > 0                           ? (uint32_t)k.threads
                 : duet__cpu_affinity_count(w->affinity) ? duet__cpu_affinity_count(w->affinity)
                                                         : duet__cpu_affinity_default_threads();
    w->group = (uint32_t)k.group_size;
    w->zero_point = k.zero_point;
    w->quant_lm_head = k.quantize_lm_head;
    w->kv_budget = (uint64_t)(k.cpu_kv_space_gib * (double)(1ull << 30));
    w->gemv = duet__gemv_ops(duet__gemv_isa_best());
    return DUET_STATUS_OK;
}

/* How the model file stores its matrices (layer 0's q_proj stands for all of them). */
static duet_cpu_store file_store(duet_worker *w)
{
    const duet_tensor *t = duet_model_layer_tensor(w->model, 0, "self_attn.q_proj.weight");

    if (t && t->dtype == DUET_DTYPE_BF16)
        return DUET_CPU_STORE_BF16;
    if (t && t->dtype == DUET_DTYPE_F16)
        return DUET_CPU_STORE_F16;
    return DUET_CPU_STORE_F32;
}

static const char *store_name(duet_cpu_store store)
{
    return store == DUET_CPU_STORE_BF16 ? "bf16" : store == DUET_CPU_STORE_F16 ? "f16" : "f32";
}

/* The weights' storage and the compute type from the settings, the model file and this CPU:
 * weights auto = the file's type (bf16 when dtype is bf16); dtype auto = bf16 for bf16 or
 * quantised weights where oneDNN has a bf16 matmul and the own kernels vdpbf16ps, else f32. */
static duet_status resolve_types(duet_worker *w)
{
    bool dnn_bf16 = duet__cpu_dnn_has_bf16(w->dnn);
    bool bf16_here = dnn_bf16 && w->gemv == &duet__gemv_avx512_ops;
    const char *dt = w->req_dtype, *wt = w->req_weights;
    const duet_tensor *q = duet_model_layer_tensor(w->model, 0, "self_attn.q_proj.weight");

    if (strcmp(wt, "auto") == 0 && q && q->dtype == DUET_DTYPE_Q8_0)
        w->quant = DUET_CPU_QUANT_INT8; /* a GGUF file's int8 groups, run as they are */
    else if (strcmp(wt, "auto") == 0 && q && q->dtype == DUET_DTYPE_Q4_0)
        w->quant = DUET_CPU_QUANT_INT4;
    if (strcmp(wt, "auto") == 0)
        w->store = strcmp(dt, "bf16") == 0 ? DUET_CPU_STORE_BF16 : file_store(w);
    else if (w->quant == DUET_CPU_QUANT_NONE)
        w->store = strcmp(wt, "bf16") == 0  ? DUET_CPU_STORE_BF16
                   : strcmp(wt, "f16") == 0 ? DUET_CPU_STORE_F16
                                            : DUET_CPU_STORE_F32;
    if (strcmp(dt, "auto") == 0)
        w->bf16 = bf16_here && (w->quant != DUET_CPU_QUANT_NONE || w->store == DUET_CPU_STORE_BF16);
    else
        w->bf16 = strcmp(dt, "bf16") == 0;
    if (w->bf16 && !dnn_bf16)
        return fail(
            w, DUET_STATUS_UNSUPPORTED,
            "cpu worker: %s.dtype = \"bf16\" needs a CPU with AVX512-BF16 or AMX, where "
            "oneDNN has bf16 matmul kernels (not this one, or not within "
            "$ONEDNN_MAX_CPU_ISA); use dtype \"auto\" or \"f32\": bf16 and f16 weights then "
            "stay 2 bytes and are computed in f32",
            w->section);
    if (w->bf16 && w->quant == DUET_CPU_QUANT_NONE && w->store != DUET_CPU_STORE_BF16)
        return fail(
            w, DUET_STATUS_UNSUPPORTED,
            "cpu worker: %s.weights = \"%s\" with dtype \"bf16\": a bf16 compute type takes "
            "bf16, int8 or int4 weights; %s weights are computed in \"f32\" (or \"auto\")",
            w->section, store_name(w->store), store_name(w->store));
    if (w->quant != DUET_CPU_QUANT_NONE) /* an unquantised lm_head is kept in the compute type */
        w->store = w->bf16 ? DUET_CPU_STORE_BF16 : DUET_CPU_STORE_F32;
    return DUET_STATUS_OK;
}

/* Logs what resolve_types chose, and with which kernels. */
static void log_types(duet_worker *w)
{
    duet_kit_log(w->host, DUET_LOG_INFO, "cpu",
                 "%s: weights %s (setting %s), compute %s (dtype %s), GEMV kernels %s, %s",
                 w->section,
                 w->quant == DUET_CPU_QUANT_INT8   ? "int8"
                 : w->quant == DUET_CPU_QUANT_INT4 ? "int4"
                                                   : store_name(w->store),
                 w->req_weights, w->bf16 ? "bf16" : "f32", w->req_dtype, w->gemv->name,
                 w->bf16 ? "oneDNN bf16 matmul above the GEMV rows"
                 : w->store == DUET_CPU_STORE_F32 || w->quant != DUET_CPU_QUANT_NONE
                     ? "oneDNN f32 matmul"
                     : "f32 GEMM (dnnl_sgemm) over widened panels above the GEMV rows");
}

/* ---- weights ---------------------------------------------------------------------------- */

/* The tensor of layer `layer` (or a model-level tensor when layer < 0), checked to exist. */
static const duet_tensor *tensor(duet_worker *w, int32_t layer, const char *name)
{
    return layer < 0 ? duet_model_tensor(w->model, name)
                     : duet_model_layer_tensor(w->model, (uint32_t)layer, name);
}

static void mat_destroy(duet_cpu_mat *mat)
{
    if (!mat)
        return;
    duet__cpu_linear_destroy(mat->dnn);
    duet__gemv_weight_free(&mat->gemv);
    free(mat);
}

/* Packs W[n][k] (and bias) as the worker runs it: quantised for the own kernels; or for oneDNN
 * in the compute type, plus a bf16 copy for the own kernels' small M where they are vectorised. */
static duet_status mat_create(duet_worker *w, const char *name, const float *wt, const float *bias,
                              uint32_t n, uint32_t k, bool lm_head, duet_cpu_mat **out)
{
    duet_cpu_mat *mat = calloc(1, sizeof(*mat));
    duet_status st = DUET_STATUS_OK;

    *out = NULL;
    if (!mat)
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory packing %s", name);
    mat->n = n;
    mat->k = k;
    if (w->quant != DUET_CPU_QUANT_NONE && (!lm_head || w->quant_lm_head)) {
        st = duet__gemv_weight_pack(&mat->gemv, name, wt, bias, n, k,
                                    w->quant == DUET_CPU_QUANT_INT8 ? DUET_GEMV_INT8
                                                                    : DUET_GEMV_INT4,
                                    w->group, w->zero_point, w->err.msg, sizeof(w->err.msg));
    } else if (w->store != DUET_CPU_STORE_F32 && !w->bf16) {
        /* 2-byte storage computed in f32: the own kernels only, widened for large M */
        st = duet__gemv_weight_pack(&mat->gemv, name, wt, bias, n, k,
                                    w->store == DUET_CPU_STORE_F16 ? DUET_GEMV_F16
                                                                   : DUET_GEMV_BF16_F32,
                                    0, false, w->err.msg, sizeof(w->err.msg));
    } else {
        st = duet__cpu_linear_create(w->dnn, name, wt, bias, n, k, w->bf16, &mat->dnn, w->err.msg,
                                     sizeof(w->err.msg));
        if (!st && w->bf16 && w->gemv != &duet__gemv_generic_ops)
            st = duet__gemv_weight_pack(&mat->gemv, name, wt, bias, n, k, DUET_GEMV_BF16, 0, false,
                                        w->err.msg, sizeof(w->err.msg));
    }
    if (st) {
        mat_destroy(mat);
        return st;
    }
    w->weight_bytes += (mat->dnn ? duet__cpu_linear_bytes(mat->dnn) : 0) + mat->gemv.bytes;
    *out = mat;
    return DUET_STATUS_OK;
}

/* The GGUF block type that the worker's quantised format runs exactly (Q8_0 for int8, Q4_0 for
 * int4). */
static duet_dtype exact_block(const duet_worker *w)
{
    return w->quant == DUET_CPU_QUANT_INT8 ? DUET_DTYPE_Q8_0 : DUET_DTYPE_Q4_0;
}

/*
 * Whether tensors t[0..n) are packed from their stored codes: when the worker quantises this
 * matrix and they are all GGUF blocks of its format. A Q8_0 / Q4_0 tensor that the worker would
 * requantise to another int format or group is refused (as float storage, it is dequantised).
 */
static duet_status use_codes(duet_worker *w, const duet_tensor *const *t, size_t n, bool lm_head,
                             bool *codes)
{
    bool quant = w->quant != DUET_CPU_QUANT_NONE && (!lm_head || w->quant_lm_head);
    size_t exact = 0;

    *codes = false;
    for (size_t i = 0; quant && i < n; i++) {
        bool block = t[i]->dtype == DUET_DTYPE_Q8_0 || t[i]->dtype == DUET_DTYPE_Q4_0;

        exact += t[i]->dtype == exact_block(w);
        if (block && (t[i]->dtype != exact_block(w) || w->group != 32 || w->zero_point))
            return fail(w, DUET_STATUS_UNSUPPORTED,
                        "cpu worker: %s: tensor %s is stored as %s (symmetric groups of 32); "
                        "%s.weights = \"%s\" with group_size %u%s would requantise it: use "
                        "weights \"auto\" (or \"%s\") with group_size 32 and zero_point false, or "
                        "a float type (dequantised)",
                        duet_model_dir(w->model), t[i]->name, duet_dtype_name(t[i]->dtype),
                        w->section, w->req_weights, w->group,
                        w->zero_point ? " and zero_point" : "",
                        t[i]->dtype == DUET_DTYPE_Q8_0 ? "int8" : "int4");
    }
    if (exact && exact != n)
        return fail(w, DUET_STATUS_UNSUPPORTED,
                    "cpu worker: %s: %s and the tensors fused with it are stored in different "
                    "types; duet packs them as one matrix",
                    duet_model_dir(w->model), t[0]->name);
    *codes = exact == n && n > 0;
    return DUET_STATUS_OK;
}

/* Packs GGUF Q8_0 / Q4_0 tensors t[0..n) stacked, from their codes and scales: no rounding; their
 * biases b[0..n) (all or none) as f32. */
static duet_status pack_codes(duet_worker *w, const duet_tensor *const *t,
                              const duet_tensor *const *b, size_t n, uint64_t rows, uint64_t k,
                              duet_cpu_mat **out)
{
    uint8_t *codes = malloc(rows * k);
    uint16_t *scales = malloc(rows * (k / 32) * sizeof(uint16_t));
    float *bias = b[0] ? malloc(rows * sizeof(float)) : NULL;
    duet_cpu_mat *mat = calloc(1, sizeof(*mat));
    duet_status st;
    uint64_t at = 0;

    *out = NULL;
    if (!codes || !scales || !mat || (b[0] && !bias)) {
        st = fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory packing %s", t[0]->name);
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        duet_tensor_read_codes(t[i], 0, t[i]->shape[0], codes + at * k, scales + at * (k / 32));
        if (bias)
            duet_tensor_read_f32(b[i], 0, b[i]->numel, bias + at);
        at += t[i]->shape[0];
    }
    mat->n = (uint32_t)rows;
    mat->k = (uint32_t)k;
    st = duet__gemv_weight_pack_codes(
        &mat->gemv, t[0]->name, codes, scales, bias, (uint32_t)rows, (uint32_t)k,
        w->quant == DUET_CPU_QUANT_INT8 ? DUET_GEMV_INT8 : DUET_GEMV_INT4, 32, w->err.msg,
        sizeof(w->err.msg));
    if (!st) {
        w->weight_bytes += mat->gemv.bytes;
        *out = mat;
        mat = NULL;
    }
out_free:
    mat_destroy(mat);
    free(codes);
    free(scales);
    free(bias);
    return st;
}

/* Packs the rows of tensors names[0..n) (each [rows_i][k]) stacked into one linear map, with
 * their biases (bias_names may be NULL, or hold NULL entries for none). */
static duet_status pack(duet_worker *w, int32_t layer, const char *const *names,
                        const char *const *bias_names, size_t n, bool lm_head, duet_cpu_mat **out)
{
    const duet_tensor *t[4], *b[4] = {NULL, NULL, NULL, NULL};
    uint64_t rows = 0, k = 0, at = 0;
    float *wt = NULL, *bias = NULL;
    duet_status st = DUET_STATUS_OK;
    bool codes;

    for (size_t i = 0; i < n; i++) {
        t[i] = tensor(w, layer, names[i]);
        if (!t[i] || t[i]->rank != 2)
            return fail(w, DUET_STATUS_BAD_FORMAT, "cpu worker: layer %d: tensor %s is missing",
                        layer, names[i]);
        if (bias_names && bias_names[i] && !(b[i] = tensor(w, layer, bias_names[i])))
            return fail(w, DUET_STATUS_BAD_FORMAT, "cpu worker: layer %d: tensor %s is missing",
                        layer, bias_names[i]);
        k = t[i]->shape[1];
        rows += t[i]->shape[0];
    }
    if ((st = use_codes(w, t, n, lm_head, &codes)))
        return st;
    if (codes)
        return pack_codes(w, t, b, n, rows, k, out);
    wt = malloc(rows * k * sizeof(float));
    if (b[0])
        bias = malloc(rows * sizeof(float));
    if (!wt || (b[0] && !bias)) {
        st =
            fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory converting %s", names[0]);
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        duet_tensor_read_f32(t[i], 0, t[i]->numel, wt + at * k);
        if (bias)
            duet_tensor_read_f32(b[i], 0, b[i]->numel, bias + at);
        at += t[i]->shape[0];
    }
    st = mat_create(w, t[0]->name, wt, bias, (uint32_t)rows, (uint32_t)k, lm_head, out);
out_free:
    free(wt);
    free(bias);
    return st;
}

static duet_status pack1(duet_worker *w, int32_t layer, const char *name, const char *bias,
                         duet_cpu_mat **out)
{
    return pack(w, layer, &name, bias ? &bias : NULL, 1, false, out);
}

/* A norm vector as f32 (NULL name: none). */
static duet_status vec(duet_worker *w, int32_t layer, const char *name, float **out)
{
    const duet_tensor *t = tensor(w, layer, name);

    if (!t)
        return fail(w, DUET_STATUS_BAD_FORMAT, "cpu worker: tensor %s is missing", name);
    if (!(*out = malloc(t->numel * sizeof(float))))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
    w->weight_bytes += t->numel * sizeof(float);
    return duet_tensor_read_f32(t, 0, t->numel, *out);
}

/* Llama, Mistral, Qwen2 (q/k/v biases, kept in f32 in every weight format) and Qwen3 (q/k
 * norms, f32). */
static duet_status load_llama_layer(duet_worker *w, int32_t l, duet_cpu_layer *L)
{
    static const char *const qkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight"};
    static const char *const qkv_b[] = {"self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                        "self_attn.v_proj.bias"};
    static const char *const gate_up[] = {"mlp.gate_proj.weight", "mlp.up_proj.weight"};
    duet_status st = pack(w, l, qkv, w->d->attention_bias ? qkv_b : NULL, 3, false, &L->qkv);

    if (!st)
        st = pack1(w, l, "self_attn.o_proj.weight", NULL, &L->o);
    if (!st)
        st = pack(w, l, gate_up, NULL, 2, false, &L->gate_up);
    if (!st)
        st = pack1(w, l, "mlp.down_proj.weight", NULL, &L->down);
    if (!st)
        st = vec(w, l, "input_layernorm.weight", &L->norm1_w);
    if (!st)
        st = vec(w, l, "post_attention_layernorm.weight", &L->norm2_w);
    if (!st && w->d->qk_norm)
        st = vec(w, l, "self_attn.q_norm.weight", &L->q_norm);
    if (!st && w->d->qk_norm)
        st = vec(w, l, "self_attn.k_norm.weight", &L->k_norm);
    return st;
}

static duet_status load_opt_layer(duet_worker *w, int32_t l, duet_cpu_layer *L)
{
    static const char *const qkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight"};
    static const char *const qkv_b[] = {"self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                        "self_attn.v_proj.bias"};
    duet_status st = pack(w, l, qkv, qkv_b, 3, false, &L->qkv);

    if (!st)
        st = pack1(w, l, "self_attn.out_proj.weight", "self_attn.out_proj.bias", &L->o);
    if (!st)
        st = pack1(w, l, "fc1.weight", "fc1.bias", &L->fc1);
    if (!st)
        st = pack1(w, l, "fc2.weight", "fc2.bias", &L->fc2);
    if (!st)
        st = vec(w, l, "self_attn_layer_norm.weight", &L->norm1_w);
    if (!st)
        st = vec(w, l, "self_attn_layer_norm.bias", &L->norm1_b);
    if (!st)
        st = vec(w, l, "final_layer_norm.weight", &L->norm2_w);
    if (!st)
        st = vec(w, l, "final_layer_norm.bias", &L->norm2_b);
    return st;
}

/* Embeddings, positions, projections, final norm and head. */
static duet_status load_ends(duet_worker *w)
{
    const duet_model_desc *d = w->d;
    bool opt = d->arch == DUET_ARCH_OPT;
    const char *embed = opt ? "model.decoder.embed_tokens.weight" : "model.embed_tokens.weight";
    duet_status st = DUET_STATUS_OK;

    w->embed = duet_model_tensor(w->model, embed);
    if (opt)
        w->positions = duet_model_tensor(w->model, "model.decoder.embed_positions.weight");
    if (!w->embed || (opt && !w->positions))
        return fail(w, DUET_STATUS_BAD_FORMAT, "cpu worker: the embeddings are missing");
    if (opt && d->word_embed_proj_dim != d->hidden_size) {
        st = pack1(w, -1, "model.decoder.project_in.weight", NULL, &w->project_in);
        if (!st)
            st = pack1(w, -1, "model.decoder.project_out.weight", NULL, &w->project_out);
    }
    if (!st && !opt)
        st = vec(w, -1, "model.norm.weight", &w->final_w);
    if (!st && opt && d->do_layer_norm_before && d->final_layer_norm) {
        st = vec(w, -1, "model.decoder.final_layer_norm.weight", &w->final_w);
        if (!st)
            st = vec(w, -1, "model.decoder.final_layer_norm.bias", &w->final_b);
    }
    if (!st) {
        const char *head = duet_model_tensor(w->model, "lm_head.weight") ? "lm_head.weight" : embed;

        st = pack(w, -1, &head, NULL, 1, true, &w->lm_head);
    }
    return st;
}

static duet_status load_weights(duet_worker *w)
{
    const duet_model_desc *d = w->d;
    duet_status st;

    if (!(w->layers = calloc(d->num_layers, sizeof(*w->layers))))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
    st = load_ends(w);
    for (uint32_t l = 0; !st && l < d->num_layers; l++)
        st = d->arch == DUET_ARCH_LLAMA ? load_llama_layer(w, (int32_t)l, &w->layers[l])
                                        : load_opt_layer(w, (int32_t)l, &w->layers[l]);
    if (!st && d->arch == DUET_ARCH_LLAMA) {
        if (!(w->inv_freq = calloc(d->head_dim / 2 + 1, sizeof(double))))
            return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
        duet_model_rope_inv_freq(d, w->inv_freq);
    }
    return st;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void free_layer(duet_cpu_layer *L)
{
    mat_destroy(L->qkv);
    mat_destroy(L->o);
    mat_destroy(L->gate_up);
    mat_destroy(L->down);
    mat_destroy(L->fc1);
    mat_destroy(L->fc2);
    free(L->norm1_w);
    free(L->norm1_b);
    free(L->norm2_w);
    free(L->norm2_b);
    free(L->q_norm);
    free(L->k_norm);
}

static void free_pool(duet_cpu_kv *kv)
{
    if (kv->base)
        munmap(kv->base, kv->block_bytes * kv->num_blocks);
    kv->base = NULL;
}

static void worker_destroy(duet_worker *w)
{
    duet_cpu_scratch *s;

    if (!w)
        return;
    duet__cpu_bd_report(w);
    s = &w->s;
    for (uint32_t l = 0; w->layers && l < w->d->num_layers; l++)
        free_layer(&w->layers[l]);
    free(w->layers);
    mat_destroy(w->project_in);
    mat_destroy(w->project_out);
    mat_destroy(w->lm_head);
    free(w->final_w);
    free(w->final_b);
    free(w->inv_freq);
    for (uint32_t i = 0; w->samplers && i < w->threads; i++)
        duet__sampler_destroy(w->samplers[i]);
    free(w->samplers);
    free(s->x), free(s->h), free(s->qkv), free(s->att), free(s->mlp), free(s->act);
    free(s->cos_sin), free(s->pos), free(s->final), free(s->logits), free(s->gemv_act);
    free(s->panel);
    duet_kit_rows_fini(&s->plan);
    duet_kit_arena_fini(&s->book);
    free_pool(&w->kv);
    free_pool(&w->swap);
    duet__cpu_dnn_destroy(w->dnn);
    duet_model_destroy(w->model);
    duet__cpu_affinity_leave(w->affinity, w->threads);
    duet__cpu_affinity_destroy(w->affinity);
    free(w);
}

static duet_status make_samplers(duet_worker *w)
{
    if (!(w->samplers = calloc(w->threads, sizeof(*w->samplers))))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory");
    for (uint32_t i = 0; i < w->threads; i++)
        if (duet__sampler_create(w->d->vocab_size, &w->samplers[i]))
            return fail(w, DUET_STATUS_OUT_OF_MEMORY, "cpu worker: out of memory for samplers");
    return DUET_STATUS_OK;
}

duet_status duet__cpu_enter_team(duet_worker *w)
{
    omp_set_num_threads((int)w->threads);
    return duet__cpu_affinity_enter(w->affinity, w->threads, w->err.msg, sizeof(w->err.msg));
}

static void log_affinity(duet_worker *w)
{
    char where[320];

    duet__cpu_affinity_describe(w->affinity, where, sizeof(where));
    duet_kit_log(w->host, DUET_LOG_INFO, "cpu", "%s: %u threads, %s", w->section, w->threads,
                 where);
}

static duet_status worker_create(const duet_worker_params *params, duet_worker **out, char *errbuf,
                                 size_t errbuf_size)
{
    duet_worker *w;
    duet_status st;

    *out = NULL;
    if ((st = duet_kit_check_params(params, sizeof(w->section), "cpu worker", errbuf, errbuf_size)))
        return st;
    if (!(w = calloc(1, sizeof(*w)))) {
        snprintf(errbuf, errbuf_size, "cpu worker: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    w->host = params->host;
    strcpy(w->section, params->section);
    w->bd.on = getenv("DUET_CPU_BREAKDOWN") && *getenv("DUET_CPU_BREAKDOWN") &&
               strcmp(getenv("DUET_CPU_BREAKDOWN"), "0") != 0;
    st = read_settings(w);
    if (!st)
        st = duet_model_create(params->model_dir, DUET_MODEL_QUIET, &w->model, w->err.msg,
                               sizeof(w->err.msg));
    if (!st && duet_model_describe(w->model)->head_dim > DUET_CPU_MAX_HEAD_DIM)
        st =
            fail(w, DUET_STATUS_UNSUPPORTED, "cpu worker: %s: head_dim %u: at most %u is supported",
                 params->model_dir, duet_model_describe(w->model)->head_dim, DUET_CPU_MAX_HEAD_DIM);
    if (!st) {
        w->d = duet_model_describe(w->model);
        /* the weights are converted by the pinned team, so they land on its NUMA node */
        st = duet__cpu_enter_team(w);
    }
    if (!st) {
        log_affinity(w);
        st = duet__cpu_dnn_create(&w->dnn, w->err.msg, sizeof(w->err.msg));
    }
    if (!st)
        st = resolve_types(w);
    if (!st) {
        log_types(w);
        st = load_weights(w);
    }
    if (!st)
        st = make_samplers(w);
    if (st) {
        snprintf(errbuf, errbuf_size, "%s", w->err.msg);
        worker_destroy(w);
        return st;
    }
    *out = w;
    return DUET_STATUS_OK;
}

static duet_status worker_describe(duet_worker *w, duet_model_info *info)
{
    return duet_kit_describe(duet_model_fill_info, w->model, w->weight_bytes, info, "cpu worker",
                             &w->err);
}

static duet_status worker_cache_geometry(duet_worker *w, duet_cache_geometry *g)
{
    const duet_model_desc *d = w->d;
    duet_cpu_kv kv;
    duet_status st = duet_kit_check_geometry(g, "cpu worker", &w->err);

    if (st)
        return st;
    duet__cpu_kv_layout(&kv, g->block_size, d->num_layers, d->num_kv_heads, d->head_dim, w->bf16);
    g->block_bytes = kv.block_bytes;
    g->num_blocks = (g->budget_bytes ? g->budget_bytes : w->kv_budget) / kv.block_bytes;
    return DUET_STATUS_OK;
}

/* Maps count zero blocks of kv's layout (lazily backed). */
static duet_status alloc_pool(duet_worker *w, duet_cpu_kv *kv, uint32_t count, const char *what)
{
    size_t bytes;

    kv->num_blocks = count;
    if (!count)
        return DUET_STATUS_OK;
    if (__builtin_mul_overflow(kv->block_bytes, (size_t)count, &bytes))
        bytes = SIZE_MAX;
    kv->base = bytes == SIZE_MAX ? MAP_FAILED
                                 : mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (kv->base == MAP_FAILED) {
        kv->base = NULL;
        kv->num_blocks = 0;
        return fail(w, DUET_STATUS_OUT_OF_MEMORY,
                    "cpu worker: cannot allocate the %s: %u blocks of %zu bytes", what, count,
                    kv->block_bytes);
    }
    return DUET_STATUS_OK;
}

static duet_status worker_init_cache(duet_worker *w, const duet_cache_config *c)
{
    const duet_model_desc *d = w->d;
    duet_status st = duet_kit_check_cache_config(c, w->kv.base != NULL, "cpu worker", &w->err);

    if (st)
        return st;
    duet__cpu_kv_layout(&w->kv, c->block_size, d->num_layers, d->num_kv_heads, d->head_dim,
                        w->bf16);
    w->kv.window = d->sliding_window;
    w->swap = w->kv;
    st = alloc_pool(w, &w->kv, c->num_blocks, "KV cache");
    if (!st)
        st = alloc_pool(w, &w->swap, c->num_swap_blocks, "swap space");
    if (!st)
        st = duet__cpu_enter_team(w); /* the cache's pages are first touched by the team */
    if (!st && DUET_ABI_HAS_FIELD(c, duet_cache_config, max_out_rows))
        st = duet__cpu_warm_up(w, c->max_rows, c->max_out_rows);
    if (st) {
        free_pool(&w->swap);
        free_pool(&w->kv);
    }
    return st;
}

static const char *worker_last_error(const duet_worker *w)
{
    return w ? w->err.msg : "";
}

/* duet_worker_plugin.details: the kernels this CPU gets, written by the first query. */
static duet_kit_details details = DUET_KIT_DETAILS_INIT;

/* oneDNN's ISA as it runs here (CPUID lowered by $ONEDNN_MAX_CPU_ISA). */
static const char *dnn_isa_name(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni:
        return "avx2_vnni";
    case dnnl_cpu_isa_avx2:
        return "avx2";
    default:
        return "below avx2";
    }
}

/* Whether oneDNN's ISA here has bf16 matmul kernels (what duet__cpu_dnn_has_bf16 finds by asking
 * for one, without an engine). */
static bool dnn_isa_has_bf16(void)
{
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();

    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

static const duet_worker_plugin plugin = {
    DUET_KIT_PLUGIN_HEADER("cpu", CPU_WORKER_VERSION),
    /* F16: f16 weights (computed in f32); an f16 compute dtype is refused at create */
    .caps = DUET_CAP_TARGET | DUET_CAP_DRAFT | DUET_CAP_SWAP | DUET_CAP_F32 | DUET_CAP_BF16 |
            DUET_CAP_F16 | DUET_CAP_INT8 | DUET_CAP_INT4 | DUET_CAP_PREFIX_CACHE |
            DUET_CAP_PENALTIES,
    .create = worker_create,
    .destroy = worker_destroy,
    .describe = worker_describe,
    .cache_geometry = worker_cache_geometry,
    .init_cache = worker_init_cache,
    .execute = duet__cpu_execute,
    .last_error = worker_last_error,
    .details = details.text,
};

static void fill_details(char *text, size_t size)
{
    duet_gemv_isa isa = duet__gemv_isa_best();

    snprintf(text, size,
             "GEMV kernels %s (CPUID%s); dtype auto: %s; oneDNN %d.%d (ISA %s) matmul for f32 "
             "and bf16 prefill, dnnl_sgemm over widened bf16 / f16",
             duet__gemv_isa_name(isa), getenv("DUET_CPU_ISA") ? ", lowered by $DUET_CPU_ISA" : "",
             isa == DUET_GEMV_AVX512 && dnn_isa_has_bf16()
                 ? "bf16 for bf16 and int8 / int4 weights, f32 for f32 and f16"
                 : "f32 (no AVX512-BF16 or AMX here)",
             (int)dnnl_version()->major, (int)dnnl_version()->minor, dnn_isa_name());
}

const duet_worker_plugin *duet_plugin_query(uint32_t host_abi_major, const duet_host_services *host)
{
    (void)host;
    return duet_kit_query(&plugin, host_abi_major, &details, fill_details);
}
