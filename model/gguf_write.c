/*
 * The GGUF writer of the generator: a validated Llama, Qwen2 or Qwen3 model (any folder duet
 * reads, generated or not) written as one GGUF v3 file, as llama.cpp's convert_hf_to_gguf.py
 * would lay it out (A = general.architecture: "qwen2", "qwen3", else "llama"):
 *
 *   header   "GGUF", version 3, tensor count, key/value count
 *   metadata general.architecture = A, general.alignment = 32, general.file_type,
 *            A.{context_length, embedding_length, block_count, feed_forward_length,
 *            rope.dimension_count, attention.head_count, attention.head_count_kv,
 *            attention.key_length, attention.value_length, attention.layer_norm_rms_epsilon,
 *            rope.freq_base, vocab_size}, the linear rope scaling when there is one,
 *            tokenizer.ggml.{bos,eos,padding}_token_id when set
 *   infos    the tensors in layout order (duet__layout_build), GGUF names (Qwen2's biases
 *            blk.N.attn_{q,k,v}.bias, Qwen3's blk.N.attn_{q,k}_norm.weight), ggml dims
 *            (innermost first), offsets aligned to 32
 *   data     each tensor converted a chunk of rows at a time; for llama, q_proj and k_proj a
 *            head at a time, its rows permuted (Hugging Face row h·D + s·D/2 + i goes to
 *            h·D + 2i + s); Qwen's converter permutes nothing
 *
 * Quantisation is ggml's reference one (quantize_row_q8_0_ref / _q4_0_ref): Q8_0 d = max|x| /
 * 127, q = round(x / d); Q4_0 d = −(the value of largest magnitude) / 8, q = min(15, ⌊x/d + 8.5⌋);
 * d stored as f16. The file is written as PATH.partial and renamed when complete.
 */
#include "model-int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 32u
#define CHUNK_ELEMS (1u << 20)

enum { T_U32 = 4, T_F32 = 6, T_STRING = 8 }; /* GGUF value types */
enum {
    G_F32 = 0,
    G_F16 = 1,
    G_Q4_0 = 2,
    G_Q8_0 = 8,
    G_Q4_K = 12,
    G_Q5_K = 13,
    G_Q6_K = 14,
    G_BF16 = 30
}; /* ggml types */

struct gw {
    FILE *f;
    const char *path; /* for messages */
    bool failed;      /* a write failed */
};

static void put(struct gw *w, const void *p, size_t n)
{
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n)
        w->failed = true;
}

static void put_u32(struct gw *w, uint32_t v)
{
    put(w, &v, 4); /* little-endian host (dtype.c) */
}

static void put_u64(struct gw *w, uint64_t v)
{
    put(w, &v, 8);
}

static void put_str(struct gw *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}

static void kv_u32(struct gw *w, const char *key, uint32_t v)
{
    put_str(w, key);
    put_u32(w, T_U32);
    put_u32(w, v);
}

static void kv_f32(struct gw *w, const char *key, float v)
{
    put_str(w, key);
    put_u32(w, T_F32);
    put(w, &v, 4);
}

static void kv_str(struct gw *w, const char *key, const char *v)
{
    put_str(w, key);
    put_u32(w, T_STRING);
    put_str(w, v);
}

/* The key "<arch>.<field>" in buf (for kv_u32, kv_f32, kv_str). */
static const char *akey(char *buf, size_t size, const char *arch, const char *field)
{
    snprintf(buf, size, "%s.%s", arch, field);
    return buf;
}

static uint32_t ggml_type(duet_dtype dt)
{
    switch (dt) {
    case DUET_DTYPE_F16:
        return G_F16;
    case DUET_DTYPE_BF16:
        return G_BF16;
    case DUET_DTYPE_Q8_0:
        return G_Q8_0;
    case DUET_DTYPE_Q4_0:
        return G_Q4_0;
    case DUET_DTYPE_Q4_K:
        return G_Q4_K;
    case DUET_DTYPE_Q5_K:
        return G_Q5_K;
    case DUET_DTYPE_Q6_K:
        return G_Q6_K;
    default:
        return G_F32;
    }
}

/* llama.cpp's general.file_type (LLAMA_FTYPE_*) of a file whose matrices are dt. */
static uint32_t file_type(duet_dtype dt)
{
    switch (dt) {
    case DUET_DTYPE_F16:
        return 1;
    case DUET_DTYPE_BF16:
        return 32;
    case DUET_DTYPE_Q8_0:
        return 7;
    case DUET_DTYPE_Q4_0:
        return 2;
    case DUET_DTYPE_Q4_K:
        return 15; /* Q4_K_M */
    case DUET_DTYPE_Q5_K:
        return 17; /* Q5_K_M */
    case DUET_DTYPE_Q6_K:
        return 18;
    default:
        return 0;
    }
}

/* Writes the metadata; returns how many pairs (called once to count with w->f = NULL). */
static uint64_t put_metadata(struct gw *w, const duet_model_desc *d, duet_dtype dt)
{
    const char *a = duet__gguf_arch(d);
    char k[96];
    uint64_t n = 0;

#define KV(call) (n++, w->f ? (void)(call) : (void)0)
    KV(kv_str(w, "general.architecture", a));
    KV(kv_str(w, "general.name", "duet-mkmodel"));
    KV(kv_u32(w, "general.alignment", ALIGN));
    KV(kv_u32(w, "general.file_type", file_type(dt)));
    KV(kv_u32(w, akey(k, sizeof(k), a, "context_length"), d->max_position));
    KV(kv_u32(w, akey(k, sizeof(k), a, "embedding_length"), d->hidden_size));
    KV(kv_u32(w, akey(k, sizeof(k), a, "block_count"), d->num_layers));
    KV(kv_u32(w, akey(k, sizeof(k), a, "feed_forward_length"), d->intermediate_size));
    KV(kv_u32(w, akey(k, sizeof(k), a, "rope.dimension_count"), d->head_dim));
    KV(kv_u32(w, akey(k, sizeof(k), a, "attention.head_count"), d->num_heads));
    KV(kv_u32(w, akey(k, sizeof(k), a, "attention.head_count_kv"), d->num_kv_heads));
    KV(kv_u32(w, akey(k, sizeof(k), a, "attention.key_length"), d->head_dim));
    KV(kv_u32(w, akey(k, sizeof(k), a, "attention.value_length"), d->head_dim));
    KV(kv_f32(w, akey(k, sizeof(k), a, "attention.layer_norm_rms_epsilon"), (float)d->norm_eps));
    KV(kv_f32(w, akey(k, sizeof(k), a, "rope.freq_base"), (float)d->rope_theta));
    KV(kv_u32(w, akey(k, sizeof(k), a, "vocab_size"), d->vocab_size));
    if (d->rope_scaling == DUET_ROPE_SCALING_LINEAR) {
        KV(kv_str(w, akey(k, sizeof(k), a, "rope.scaling.type"), "linear"));
        KV(kv_f32(w, akey(k, sizeof(k), a, "rope.scaling.factor"), (float)d->rope_factor));
    }
    if (d->bos_token_id >= 0)
        KV(kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)d->bos_token_id));
    if (d->n_eos)
        KV(kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)d->eos_token_ids[0]));
    if (d->pad_token_id >= 0)
        KV(kv_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)d->pad_token_id));
#undef KV
    return n;
}

/* One tensor to write. */
struct wt {
    const duet_tensor *src; /* in the model read */
    char name[64];          /* GGUF name */
    duet_dtype dtype;       /* in the file */
    uint32_t rank;          /* 1 or 2 */
    uint64_t rows, k;       /* shape [rows][k]; rows = 1 for a vector */
    uint32_t heads;         /* permuted q / k: heads; else 0 */
    uint64_t offset;        /* in the data area */
    uint64_t nbytes;
};

static uint64_t row_bytes(duet_dtype dt, uint64_t k)
{
    if (duet__dtype_is_block(dt))
        return k / duet_dtype_block_elems(dt) * duet_dtype_block_bytes(dt);
    return k * duet_dtype_size(dt);
}

static void quant_q8_0(const float *x, uint8_t *b)
{
    float amax = 0.0f, d, id;
    uint16_t h;

    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    d = amax / 127.0f;
    id = d != 0.0f ? 1.0f / d : 0.0f;
    h = duet_f32_to_f16(d);
    memcpy(b, &h, 2);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
}

static void quant_q4_0(const float *x, uint8_t *b)
{
    float amax = 0.0f, max = 0.0f, d, id;
    uint16_t h;

    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    d = max / -8.0f;
    id = d != 0.0f ? 1.0f / d : 0.0f;
    h = duet_f32_to_f16(d);
    memcpy(b, &h, 2);
    for (int i = 0; i < 16; i++) {
        int lo = (int)(x[i] * id + 8.5f), hi = (int)(x[i + 16] * id + 8.5f);

        lo = lo > 15 ? 15 : lo;
        hi = hi > 15 ? 15 : hi;
        b[2 + i] = (uint8_t)(lo | hi << 4);
    }
}

/*
 * K-quants, for test files only: plain round-to-nearest quantisers that produce valid blocks of
 * ggml's layouts (llama.cpp's own search for the best scales is not reproduced, so its files
 * come out slightly more accurate than these).
 */
static uint16_t put_f16(uint8_t *p, float v)
{
    uint16_t h = duet_f32_to_f16(v);

    memcpy(p, &h, 2);
    return h;
}

static int clampi(long v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* Q6_K: 16 sub-blocks of 16, int8 scales of an f16 d, codes −32 .. 31 stored + 32. */
static void quant_q6_k(const float *x, uint8_t *b)
{
    float s[16], smax = 0.0f, d, dd;
    int8_t *sc = (int8_t *)(b + 192);

    memset(b, 0, 208);
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f, vmax = 0.0f;

        for (int i = 0; i < 16; i++)
            if (fabsf(x[16 * j + i]) > amax) {
                amax = fabsf(x[16 * j + i]);
                vmax = x[16 * j + i];
            }
        s[j] = vmax / -32.0f;
        smax = fabsf(s[j]) > fabsf(smax) ? s[j] : smax;
    }
    d = smax / -128.0f;
    dd = duet_f16_to_f32(put_f16(b + 208, d));
    for (int j = 0; j < 16; j++)
        sc[j] = (int8_t)(dd != 0.0f ? clampi(lrintf(s[j] / dd), -128, 127) : 0);
    for (int p = 0; p < 256; p++) {
        int half = p / 128, in = p % 128, quarter = in / 32, l = in % 32;
        float step = dd * (float)sc[p / 16];
        int q = (step != 0.0f ? clampi(lrintf(x[p] / step), -32, 31) : 0) + 32;
        uint8_t *ql = b + 64 * half + l + (quarter & 1) * 32, *qh = b + 128 + 32 * half + l;

        *ql |= (uint8_t)(quarter < 2 ? q & 15 : (q & 15) << 4);
        *qh |= (uint8_t)((q >> 4) << (2 * quarter));
    }
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, w = d·sc·q − dmin·m with 6-bit sc and m, q of 4 or 5 bits. */
static void quant_q45_k(const float *x, bool five, uint8_t *b)
{
    float scale[8], min[8], smax = 0.0f, mmax = 0.0f, d, dmin, qmax = five ? 31.0f : 15.0f;
    int sc[8], m[8];
    uint8_t *scales = b + 4, *qh = b + 16, *ql = b + (five ? 48 : 16);

    memset(b, 0, five ? 176 : 144);
    for (int j = 0; j < 8; j++) {
        float lo = 0.0f, hi = 0.0f;

        for (int i = 0; i < 32; i++) {
            lo = fminf(lo, x[32 * j + i]);
            hi = fmaxf(hi, x[32 * j + i]);
        }
        scale[j] = (hi - lo) / qmax;
        min[j] = -lo;
        smax = fmaxf(smax, scale[j]);
        mmax = fmaxf(mmax, min[j]);
    }
    d = duet_f16_to_f32(put_f16(b, smax / 63.0f));
    dmin = duet_f16_to_f32(put_f16(b + 2, mmax / 63.0f));
    for (int j = 0; j < 8; j++) {
        sc[j] = d > 0.0f ? clampi(lrintf(scale[j] / d), 0, 63) : 0;
        m[j] = dmin > 0.0f ? clampi(lrintf(min[j] / dmin), 0, 63) : 0;
        if (j < 4) {
            scales[j] |= (uint8_t)sc[j];
            scales[j + 4] |= (uint8_t)m[j];
        } else {
            scales[j + 4] = (uint8_t)((sc[j] & 15) | (m[j] & 15) << 4);
            scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            scales[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
    for (int p = 0; p < 256; p++) {
        int j = p / 32, l = p % 32, chunk = p / 64;
        float step = d * (float)sc[j];
        int q = step > 0.0f ? clampi(lrintf((x[p] + dmin * (float)m[j]) / step), 0, (int)qmax) : 0;

        ql[32 * chunk + l] |= (uint8_t)(j & 1 ? (q & 15) << 4 : q & 15);
        if (five && q > 15)
            qh[l] |= (uint8_t)(1u << j);
    }
}

/* Converts rows floats of k elements each into the file's dtype. */
static void encode(duet_dtype dt, const float *x, uint64_t rows, uint64_t k, uint8_t *out)
{
    uint64_t nb = rows * k / 32;

    if (dt == DUET_DTYPE_Q6_K || dt == DUET_DTYPE_Q4_K || dt == DUET_DTYPE_Q5_K) {
        for (uint64_t b = 0; b < rows * k / 256; b++)
            if (dt == DUET_DTYPE_Q6_K)
                quant_q6_k(x + 256 * b, out + 210 * b);
            else
                quant_q45_k(x + 256 * b, dt == DUET_DTYPE_Q5_K,
                            out + duet_dtype_block_bytes(dt) * b);
    } else if (dt == DUET_DTYPE_Q8_0)
        for (uint64_t b = 0; b < nb; b++)
            quant_q8_0(x + 32 * b, out + 34 * b);
    else if (dt == DUET_DTYPE_Q4_0)
        for (uint64_t b = 0; b < nb; b++)
            quant_q4_0(x + 32 * b, out + 18 * b);
    else
        duet__store(dt, x, (size_t)(rows * k), out);
}

/* Writes one tensor's data; x and tmp hold CHUNK_ELEMS floats (or one head), out its bytes. */
static duet_status put_tensor(struct gw *w, const duet_model_desc *d, const struct wt *t, float *x,
                              float *tmp, uint8_t *out)
{
    uint64_t step = t->heads ? d->head_dim : CHUNK_ELEMS / t->k ? CHUNK_ELEMS / t->k : 1;
    uint32_t half = d->head_dim / 2;

    for (uint64_t r = 0; r < t->rows; r += step) {
        uint64_t n = t->rows - r < step ? t->rows - r : step;
        float *src = x;

        if (duet_tensor_read_f32(t->src, r * t->k, n * t->k, x))
            return DUET_STATUS_INTERNAL;
        if (t->heads) { /* one head: Hugging Face row s·D/2 + i → row 2i + s */
            for (uint32_t i = 0; i < half; i++)
                for (uint32_t s = 0; s < 2; s++)
                    memcpy(tmp + (2 * i + s) * t->k, x + (s * half + i) * t->k,
                           t->k * sizeof(float));
            src = tmp;
        }
        encode(t->dtype, src, n, t->k, out);
        put(w, out, (size_t)row_bytes(t->dtype, t->k) * n);
    }
    return DUET_STATUS_OK;
}

static void put_pad(struct gw *w, uint64_t at)
{
    static const uint8_t zeros[ALIGN];

    put(w, zeros, (size_t)((ALIGN - at % ALIGN) % ALIGN));
}

/* The tensors of m's layout with their GGUF names, types and offsets. */
static duet_status plan(const duet_model *m, duet_dtype dtype, struct wt **out, size_t *n,
                        struct duet__msg *msg)
{
    const duet_model_desc *d = duet_model_describe(m);
    struct duet__slot *slots;
    uint64_t at = 0;
    duet_status st = DUET_STATUS_OK;

    if (duet__layout_build(d, &slots, n) || !(*out = calloc(*n + 1, sizeof(**out)))) {
        if (*n)
            free(slots);
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    }
    for (size_t i = 0; !st && i < *n; i++) {
        struct wt *t = &(*out)[i];

        t->src = duet_model_tensor(m, slots[i].name);
        t->rank = slots[i].rank;
        t->rows = slots[i].rank == 2 ? slots[i].shape[0] : 1;
        t->k = slots[i].rank == 2 ? slots[i].shape[1] : slots[i].shape[0];
        t->dtype = slots[i].rank == 2 ? dtype : DUET_DTYPE_F32;
        t->heads = duet__gguf_permuted_heads(d, slots[i].name);
        if (!t->src || !duet__gguf_name(slots[i].name, t->name, sizeof(t->name)))
            st = duet__fail(msg, DUET_STATUS_UNSUPPORTED, "tensor '%s' has no GGUF name",
                            slots[i].name);
        else if (duet__dtype_is_block(t->dtype) && t->k % duet_dtype_block_elems(t->dtype))
            st = duet__fail(msg, DUET_STATUS_UNSUPPORTED,
                            "tensor '%s': rows of %llu elements are not whole %s blocks of %u",
                            slots[i].name, (unsigned long long)t->k, duet_dtype_name(dtype),
                            duet_dtype_block_elems(t->dtype));
        t->offset = at;
        t->nbytes = row_bytes(t->dtype, t->k) * t->rows;
        at += (t->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    free(slots);
    return st;
}

static void put_infos(struct gw *w, const struct wt *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        put_str(w, t[i].name);
        put_u32(w, t[i].rank);
        put_u64(w, t[i].k);
        if (t[i].rank == 2)
            put_u64(w, t[i].rows);
        put_u32(w, ggml_type(t[i].dtype));
        put_u64(w, t[i].offset);
    }
}

static duet_status put_file(struct gw *w, const duet_model *m, duet_dtype dtype, const struct wt *t,
                            size_t n, uint32_t flags, struct duet__msg *msg)
{
    const duet_model_desc *d = duet_model_describe(m);
    uint64_t max_k = 1, total = 0;
    float *x, *tmp;
    uint8_t *out;
    struct duet__progress pr;
    duet_status st = DUET_STATUS_OK;

    for (size_t i = 0; i < n; i++) {
        max_k = t[i].k > max_k ? t[i].k : max_k;
        total += t[i].nbytes;
    }
    x = malloc((CHUNK_ELEMS + max_k * (d->head_dim + 1)) * sizeof(float));
    tmp = malloc((size_t)max_k * d->head_dim * sizeof(float));
    out = malloc((CHUNK_ELEMS + max_k * (d->head_dim + 1)) * sizeof(float));
    if (!x || !tmp || !out) {
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", w->path);
        goto out_free;
    }
    put(w, "GGUF", 4);
    put_u32(w, 3);
    put_u64(w, n);
    put_u64(w, put_metadata(&(struct gw){0}, d, dtype));
    put_metadata(w, d, dtype);
    put_infos(w, t, n);
    put_pad(w, (uint64_t)ftell(w->f));
    duet__progress_start(&pr, NULL, flags, "writing GGUF", total);
    for (size_t i = 0; !st && i < n && !w->failed; i++) {
        st = put_tensor(w, d, &t[i], x, tmp, out);
        put_pad(w, t[i].nbytes);
        duet__progress_add(&pr, t[i].nbytes);
    }
    duet__progress_end(&pr);
    if (!st && w->failed)
        st = duet__fail(msg, DUET_STATUS_IO, "%s: write: %s", w->path, strerror(errno));
out_free:
    free(x);
    free(tmp);
    free(out);
    return st;
}

duet_status duet__gguf_write(const duet_model *m, const char *path, duet_dtype dtype,
                             uint32_t flags, struct duet__msg *msg)
{
    struct wt *t = NULL;
    size_t n = 0;
    char *partial = malloc(strlen(path) + 9);
    struct gw w = {.path = path};
    duet_status st;

    if (!partial)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    if (duet_model_describe(m)->arch != DUET_ARCH_LLAMA) {
        free(partial);
        return duet__fail(msg, DUET_STATUS_UNSUPPORTED,
                          "%s: GGUF output is for Llama, Mistral, Qwen2 and Qwen3 models", path);
    }
    if (duet_model_describe(m)->sliding_window) { /* the reader refuses the key: see gguf.c */
        free(partial);
        return duet__fail(msg, DUET_STATUS_UNSUPPORTED,
                          "%s: a %s with a sliding window cannot be written as GGUF (llama.cpp's "
                          "llama, qwen2 and qwen3 files have none)",
                          path, duet_model_describe(m)->architecture);
    }
    sprintf(partial, "%s.partial", path);
    st = plan(m, dtype, &t, &n, msg);
    if (!st && !(w.f = fopen(partial, "wb")))
        st = duet__fail(msg, DUET_STATUS_IO, "%s: %s", partial, strerror(errno));
    if (!st)
        st = put_file(&w, m, dtype, t, n, flags, msg);
    if (w.f && fclose(w.f) != 0 && !st)
        st = duet__fail(msg, DUET_STATUS_IO, "%s: close: %s", partial, strerror(errno));
    if (!st && rename(partial, path) != 0)
        st = duet__fail(msg, DUET_STATUS_IO, "%s: rename: %s", path, strerror(errno));
    if (st && w.f)
        remove(partial);
    free(partial);
    free(t);
    return st;
}
