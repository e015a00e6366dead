/*
 * GGUF: one llama.cpp model file, parsed and validated from memory, its metadata turned into a
 * duet_model_desc and its tensors into duet_tensors under the Hugging Face names.
 *
 *   0     4        8               16            24
 *   ┌─────┬────────┬───────────────┬─────────────┬──────────────────┬────────────────────┬─────┐
 *   │GGUF │ version│ tensor count  │ kv count    │ kv pairs:        │ tensor infos:      │ pad │
 *   │     │ u32 = 3│ u64           │ u64         │ key (u64 len +   │ name, n_dims u32,  │ to  │
 *   │     │        │               │             │ bytes), type u32,│ dims u64[n_dims]   │ ali-│
 *   │     │        │               │             │ value            │ (innermost first), │ gn- │
 *   │     │        │               │             │                  │ ggml type u32,     │ ment│
 *   │     │        │               │             │                  │ offset u64         │     │
 *   └─────┴────────┴───────────────┴─────────────┴──────────────────┴────────────────────┴─────┘
 *   then the data area: each tensor at data start + its offset (a multiple of general.alignment,
 *   default 32); padding between tensors is allowed, overlaps are not.
 *
 * A value is a scalar (u8 i8 u16 i16 u32 i32 f32 bool u64 i64 f64), a string (u64 length +
 * bytes) or an array (element type u32, u64 count, elements; arrays of arrays are refused).
 * Everything little-endian (version 3 also names big-endian files, which are refused: their
 * version reads 0x03000000).
 *
 * Checks, in the order the bytes come, so that nothing is read before the check that makes it
 * safe; each failure is BAD_FORMAT naming the file, the key or tensor, and what is wrong:
 * magic → version 2 or 3 → counts that the remaining bytes could hold → each key (length,
 * no NUL, not empty, not twice) and value (a known type; bool 0 or 1; strings and arrays that
 * fit) → each tensor info (name length, no NUL, not twice; rank 1..4; no zero or overflowing
 * dimension; a known ggml type; rows of whole blocks) → general.alignment (a power of two) →
 * the data start inside the file → each tensor aligned and inside the data area → no overlaps.
 * Then the architecture (general.architecture, its keys with their types), the tensors mapped
 * (blk.N.attn_q.weight → model.layers.N.self_attn.q_proj.weight, ...), and, in llama files, the
 * rotary permutation of llama.cpp's converter undone: q and k rows are copied into `owned`, in
 * the order Hugging Face's rotate_half expects (qwen2 / qwen3 files are converted without it).
 * Everything else stays in the caller's mapping.
 */
#include "model-int.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAX_DIMS 4u
#define GGUF_MAX_NAME 64u      /* ggml's GGML_MAX_NAME, the NUL included */
#define GGUF_MAX_KEY 65535u    /* bytes of a key */
#define GGUF_MAX_TENSORS 65536 /* far more than any model has */
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_MAX_ALIGN (1u << 20)

/* ---- metadata value types --------------------------------------------------------------- */

enum vtype {
    V_U8 = 0,
    V_I8 = 1,
    V_U16 = 2,
    V_I16 = 3,
    V_U32 = 4,
    V_I32 = 5,
    V_F32 = 6,
    V_BOOL = 7,
    V_STRING = 8,
    V_ARRAY = 9,
    V_U64 = 10,
    V_I64 = 11,
    V_F64 = 12,
    V_COUNT
};

static const char *const vtype_names[V_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Bytes of a scalar value type; 0 for string and array. */
static size_t vtype_size(uint32_t t)
{
    static const uint8_t size[V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

    return t < V_COUNT ? size[t] : 0;
}

/* ---- ggml tensor types ------------------------------------------------------------------ */

/* ggml's type ids (ggml.h) that duet reads, and the names of those it knows but refuses. */
static const struct {
    const char *name;
    int dtype; /* duet_dtype, or -1: a valid type duet does not read */
} ggml_types[] = {
    [0] = {"F32", DUET_DTYPE_F32},
    [1] = {"F16", DUET_DTYPE_F16},
    [2] = {"Q4_0", DUET_DTYPE_Q4_0},
    [3] = {"Q4_1", -1},
    [6] = {"Q5_0", -1},
    [7] = {"Q5_1", -1},
    [8] = {"Q8_0", DUET_DTYPE_Q8_0},
    [9] = {"Q8_1", -1},
    [10] = {"Q2_K", -1},
    [11] = {"Q3_K", -1},
    [12] = {"Q4_K", DUET_DTYPE_Q4_K},
    [13] = {"Q5_K", DUET_DTYPE_Q5_K},
    [14] = {"Q6_K", DUET_DTYPE_Q6_K},
    [15] = {"Q8_K", -1},
    [16] = {"IQ2_XXS", -1},
    [17] = {"IQ2_XS", -1},
    [18] = {"IQ3_XXS", -1},
    [19] = {"IQ1_S", -1},
    [20] = {"IQ4_NL", -1},
    [21] = {"IQ3_S", -1},
    [22] = {"IQ2_S", -1},
    [23] = {"IQ4_XS", -1},
    [24] = {"I8", -1},
    [25] = {"I16", -1},
    [26] = {"I32", -1},
    [27] = {"I64", -1},
    [28] = {"F64", -1},
    [29] = {"IQ1_M", -1},
    [30] = {"BF16", DUET_DTYPE_BF16},
    [34] = {"TQ1_0", -1},
    [35] = {"TQ2_0", -1},
    [39] = {"MXFP4", -1},
};

#define N_GGML_TYPES (sizeof(ggml_types) / sizeof(ggml_types[0]))

/* ---- the cursor ------------------------------------------------------------------------- */

struct cur {
    const char *path;
    const uint8_t *buf;
    uint64_t size, pos;
    struct duet__msg *msg;
};

static uint64_t left(const struct cur *c)
{
    return c->size - c->pos;
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* Reads an n-byte little-endian integer; `what` names it in the message when the file ends. */
static duet_status rd(struct cur *c, unsigned n, uint64_t *out, const char *what)
{
    if (left(c) < n)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: the file ends at byte %llu inside %s (truncated)", c->path,
                          (unsigned long long)c->size, what);
    *out = get_le(c->buf + c->pos, n);
    c->pos += n;
    return DUET_STATUS_OK;
}

/* A string: its bytes stay in the buffer (*s, *len). */
static duet_status rd_str(struct cur *c, const char **s, uint64_t *len, const char *what)
{
    duet_status st = rd(c, 8, len, what);

    if (st)
        return st;
    if (*len > left(c))
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: %s: string length %llu is more than the %llu bytes left in the file "
                          "(truncated?)",
                          c->path, what, (unsigned long long)*len, (unsigned long long)left(c));
    *s = (const char *)c->buf + c->pos;
    c->pos += *len;
    return DUET_STATUS_OK;
}

/* A malloc'd C string of a name or key; refused when empty, too long, or holding a NUL. */
static duet_status rd_name(struct cur *c, uint64_t max, char **out, const char *what)
{
    const char *s;
    uint64_t len;
    duet_status st = rd_str(c, &s, &len, what);

    *out = NULL;
    if (st)
        return st;
    if (len == 0 || len > max || memchr(s, '\0', (size_t)len))
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: %s at byte %llu: %s (length %llu, limit %llu, no NUL bytes)",
                          c->path, what, (unsigned long long)(c->pos - len),
                          len == 0    ? "empty"
                          : len > max ? "too long"
                                      : "holds a NUL byte",
                          (unsigned long long)len, (unsigned long long)max);
    if (!(*out = malloc((size_t)len + 1)))
        return duet__fail(c->msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", c->path);
    memcpy(*out, s, (size_t)len);
    (*out)[len] = '\0';
    return DUET_STATUS_OK;
}

/* ---- key/value pairs -------------------------------------------------------------------- */

struct kv {
    char *key;     /* malloc'd */
    uint32_t type; /* enum vtype */
    uint32_t elem; /* V_ARRAY: element type */
    uint64_t n;    /* V_ARRAY: elements */
    uint64_t at;   /* file offset of the value (of the first element for an array) */
};

/* Skips one value of scalar or string type t, checking it. */
static duet_status skip_value(struct cur *c, uint32_t t, const char *key)
{
    uint64_t v = 0, len = 0;
    const char *s;

    if (t == V_STRING)
        return rd_str(c, &s, &len, key);
    if (rd(c, (unsigned)vtype_size(t), &v, key))
        return DUET_STATUS_BAD_FORMAT;
    if (t == V_BOOL && v > 1)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s': bool value %llu is neither 0 nor 1", c->path, key,
                          (unsigned long long)v);
    return DUET_STATUS_OK;
}

static duet_status check_vtype(struct cur *c, uint32_t t, const char *key, bool in_array)
{
    if (t >= V_COUNT)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s': unknown value type %u%s (known: 0 .. %d)", c->path, key, t,
                          in_array ? " of array elements" : "", V_COUNT - 1);
    if (in_array && t == V_ARRAY)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s': an array of arrays (not supported by GGUF readers)",
                          c->path, key);
    return DUET_STATUS_OK;
}

static duet_status skip_array(struct cur *c, struct kv *kv)
{
    uint64_t elem = 0, min;
    duet_status st = rd(c, 4, &elem, kv->key);

    if (!st)
        st = check_vtype(c, (uint32_t)elem, kv->key, true);
    if (!st)
        st = rd(c, 8, &kv->n, kv->key);
    if (st)
        return st;
    kv->elem = (uint32_t)elem;
    kv->at = c->pos;
    min = kv->elem == V_STRING ? 8 : vtype_size(kv->elem);
    if (kv->n > left(c) / min)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s': array of %llu %s elements cannot fit in the %llu bytes "
                          "left in the file",
                          c->path, kv->key, (unsigned long long)kv->n, vtype_names[kv->elem],
                          (unsigned long long)left(c));
    if (kv->elem != V_STRING && kv->elem != V_BOOL) {
        c->pos += kv->n * min;
        return DUET_STATUS_OK;
    }
    for (uint64_t i = 0; i < kv->n; i++)
        if ((st = skip_value(c, kv->elem, kv->key)))
            return st;
    return DUET_STATUS_OK;
}

static duet_status read_kv(struct cur *c, struct kv *kv, uint64_t i)
{
    char what[64];
    uint64_t type = 0;
    duet_status st;

    snprintf(what, sizeof(what), "key %llu", (unsigned long long)i);
    st = rd_name(c, GGUF_MAX_KEY, &kv->key, what);
    if (!st)
        st = rd(c, 4, &type, kv->key);
    if (!st)
        st = check_vtype(c, (uint32_t)type, kv->key, false);
    if (st)
        return st;
    kv->type = (uint32_t)type;
    kv->at = c->pos;
    return kv->type == V_ARRAY ? skip_array(c, kv) : skip_value(c, kv->type, kv->key);
}

static int kv_cmp(const void *pa, const void *pb)
{
    return strcmp(((const struct kv *)pa)->key, ((const struct kv *)pb)->key);
}

/* ---- tensor infos ----------------------------------------------------------------------- */

struct tinfo {
    char *name;                 /* GGUF name, malloc'd */
    uint32_t rank;              /* 1 .. 4 */
    uint64_t ne[GGUF_MAX_DIMS]; /* ggml order: ne[0] innermost */
    uint32_t type;              /* ggml type id */
    uint64_t offset;            /* relative to the data start */
    uint64_t nbytes, numel;     /* computed */
};

static duet_status check_dims(struct cur *c, struct tinfo *t)
{
    uint32_t be;

    t->numel = 1;
    for (uint32_t d = 0; d < t->rank; d++) {
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / t->numel)
            return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s': dimension %u is %llu (%s)", c->path, t->name, d,
                              (unsigned long long)t->ne[d],
                              t->ne[d] ? "the element count overflows" : "zero");
        t->numel *= t->ne[d];
    }
    if (t->type >= N_GGML_TYPES || !ggml_types[t->type].name)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': unknown ggml type %u",
                          c->path, t->name, t->type);
    if (ggml_types[t->type].dtype < 0)
        return duet__fail(c->msg, DUET_STATUS_UNSUPPORTED,
                          "%s: tensor '%s': ggml type %s is not supported (duet reads F32, F16, "
                          "BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K)",
                          c->path, t->name, ggml_types[t->type].name);
    be = duet_dtype_block_elems((duet_dtype)ggml_types[t->type].dtype);
    if (be && t->ne[0] % be)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': rows of %llu elements are not whole %s blocks of %u",
                          c->path, t->name, (unsigned long long)t->ne[0], ggml_types[t->type].name,
                          be);
    if (be)
        t->nbytes = t->numel / be * duet_dtype_block_bytes((duet_dtype)ggml_types[t->type].dtype);
    else
        t->nbytes = t->numel * duet_dtype_size((duet_dtype)ggml_types[t->type].dtype);
    if (be ? t->numel / be > UINT64_MAX / 256 : t->numel > UINT64_MAX / 8)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': too large", c->path,
                          t->name);
    return DUET_STATUS_OK;
}

static duet_status read_tinfo(struct cur *c, struct tinfo *t, uint64_t i)
{
    char what[64];
    uint64_t v = 0;
    duet_status st;

    snprintf(what, sizeof(what), "the name of tensor %llu", (unsigned long long)i);
    if ((st = rd_name(c, GGUF_MAX_NAME - 1, &t->name, what)) || (st = rd(c, 4, &v, t->name)))
        return st;
    if (v == 0 || v > GGUF_MAX_DIMS)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': %llu dimensions (GGUF allows 1 .. %u)", c->path,
                          t->name, (unsigned long long)v, GGUF_MAX_DIMS);
    t->rank = (uint32_t)v;
    for (uint32_t d = 0; d < t->rank; d++)
        if ((st = rd(c, 8, &t->ne[d], t->name)))
            return st;
    if ((st = rd(c, 4, &v, t->name)))
        return st;
    t->type = (uint32_t)v;
    if ((st = rd(c, 8, &t->offset, t->name)))
        return st;
    return check_dims(c, t);
}

static int tinfo_name_cmp(const void *pa, const void *pb)
{
    return strcmp(((const struct tinfo *)pa)->name, ((const struct tinfo *)pb)->name);
}

static int tinfo_offset_cmp(const void *pa, const void *pb)
{
    const struct tinfo *a = *(const struct tinfo *const *)pa, *b = *(const struct tinfo *const *)pb;

    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    return a->nbytes < b->nbytes ? -1 : a->nbytes > b->nbytes;
}

/* ---- the whole file --------------------------------------------------------------------- */

struct parse {
    struct cur c;
    struct kv *kvs;      /* [n_kv], sorted by key after reading */
    uint64_t n_kv;       /* read so far */
    struct tinfo *ts;    /* [n_t] */
    uint64_t n_t;        /* read so far */
    uint32_t alignment;  /* general.alignment or 32 */
    uint64_t data_start; /* file offset of the data area */
};

static void parse_fini(struct parse *p)
{
    for (uint64_t i = 0; i < p->n_kv; i++)
        free(p->kvs[i].key);
    for (uint64_t i = 0; i < p->n_t; i++)
        free(p->ts[i].name);
    free(p->kvs);
    free(p->ts);
}

static const struct kv *find_kv(const struct parse *p, const char *key)
{
    struct kv k = {.key = (char *)key};

    return p->n_kv ? bsearch(&k, p->kvs, (size_t)p->n_kv, sizeof(k), kv_cmp) : NULL;
}

static duet_status read_header(struct parse *p, uint64_t *n_t, uint64_t *n_kv)
{
    struct cur *c = &p->c;
    uint64_t version = 0;

    if (c->size < 4 || memcmp(c->buf, "GGUF", 4) != 0)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: not a GGUF file (it does not start with \"GGUF\")", c->path);
    c->pos = 4;
    if (rd(c, 4, &version, "the version") || rd(c, 8, n_t, "the tensor count") ||
        rd(c, 8, n_kv, "the key/value count"))
        return DUET_STATUS_BAD_FORMAT;
    if (version != 2 && version != 3)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: GGUF version %llu%s; duet reads versions 2 and 3 (little-endian)",
                          c->path, (unsigned long long)version,
                          version == 0x03000000 ? " (a big-endian file)" : "");
    if (*n_kv > left(c) / 13) /* the smallest pair: 8-byte length, 1-byte key, type, 1 byte */
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key/value count %llu cannot fit in the file", c->path,
                          (unsigned long long)*n_kv);
    if (*n_t > GGUF_MAX_TENSORS || *n_t > left(c) / 29) /* name, rank, one dim, type, offset */
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor count %llu is absurd or cannot fit in the file", c->path,
                          (unsigned long long)*n_t);
    return DUET_STATUS_OK;
}

static duet_status read_kvs(struct parse *p, uint64_t n)
{
    duet_status st = DUET_STATUS_OK;

    if (!(p->kvs = calloc((size_t)n + 1, sizeof(*p->kvs))))
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->c.path);
    for (; !st && p->n_kv < n;) {
        st = read_kv(&p->c, &p->kvs[p->n_kv], p->n_kv);
        if (p->kvs[p->n_kv].key)
            p->n_kv++;
    }
    if (st)
        return st;
    qsort(p->kvs, (size_t)p->n_kv, sizeof(*p->kvs), kv_cmp);
    for (uint64_t i = 1; i < p->n_kv; i++)
        if (strcmp(p->kvs[i - 1].key, p->kvs[i].key) == 0)
            return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: key '%s' appears twice",
                              p->c.path, p->kvs[i].key);
    return DUET_STATUS_OK;
}

static duet_status read_tinfos(struct parse *p, uint64_t n)
{
    duet_status st = DUET_STATUS_OK;

    if (!(p->ts = calloc((size_t)n + 1, sizeof(*p->ts))))
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->c.path);
    for (; !st && p->n_t < n;) {
        st = read_tinfo(&p->c, &p->ts[p->n_t], p->n_t);
        if (p->ts[p->n_t].name)
            p->n_t++;
    }
    if (st)
        return st;
    qsort(p->ts, (size_t)p->n_t, sizeof(*p->ts), tinfo_name_cmp);
    for (uint64_t i = 1; i < p->n_t; i++)
        if (strcmp(p->ts[i - 1].name, p->ts[i].name) == 0)
            return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s' appears twice",
                              p->c.path, p->ts[i].name);
    return DUET_STATUS_OK;
}

static duet_status read_alignment(struct parse *p)
{
    const struct kv *kv = find_kv(p, "general.alignment");

    p->alignment = GGUF_DEFAULT_ALIGN;
    if (!kv)
        return DUET_STATUS_OK;
    if (kv->type != V_U32)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key 'general.alignment' is a %s; it must be a uint32", p->c.path,
                          vtype_names[kv->type]);
    p->alignment = (uint32_t)get_le(p->c.buf + kv->at, 4);
    if (!p->alignment || (p->alignment & (p->alignment - 1)) || p->alignment > GGUF_MAX_ALIGN)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: general.alignment %u is not a power of two up to %u", p->c.path,
                          p->alignment, GGUF_MAX_ALIGN);
    return DUET_STATUS_OK;
}

/* No two tensors share a byte (sorted by offset, each must start at or after the end of the one
 * before; padding between them is allowed). */
static duet_status check_overlaps(struct parse *p)
{
    const struct tinfo **by = malloc(((size_t)p->n_t + 1) * sizeof(*by));
    duet_status st = DUET_STATUS_OK;
    uint64_t end = 0;

    if (!by)
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->c.path);
    for (uint64_t i = 0; i < p->n_t; i++)
        by[i] = &p->ts[i];
    qsort(by, (size_t)p->n_t, sizeof(*by), tinfo_offset_cmp);
    for (uint64_t i = 0; !st && i < p->n_t; i++) {
        if (i && by[i]->offset < end)
            st = duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                            "%s: tensors '%s' and '%s' overlap (bytes %llu .. %llu of the data "
                            "area)",
                            p->c.path, by[i - 1]->name, by[i]->name,
                            (unsigned long long)by[i]->offset, (unsigned long long)end);
        end = by[i]->offset + by[i]->nbytes;
    }
    free(by);
    return st;
}

/* The data area inside the file; every tensor aligned and inside it; none overlapping another. */
static duet_status check_ranges(struct parse *p)
{
    struct cur *c = &p->c;
    uint64_t data_size;

    p->data_start = (c->pos + p->alignment - 1) / p->alignment * p->alignment;
    if (p->n_t == 0 && p->data_start > c->size) /* no data: the padding may be left out */
        p->data_start = c->size;
    if (p->data_start > c->size)
        return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: the data area would start at byte %llu, past the end of the file "
                          "(%llu bytes)",
                          c->path, (unsigned long long)p->data_start, (unsigned long long)c->size);
    data_size = c->size - p->data_start;
    for (uint64_t i = 0; i < p->n_t; i++) {
        const struct tinfo *t = &p->ts[i];

        if (t->offset % p->alignment)
            return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
                              c->path, t->name, (unsigned long long)t->offset, p->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return duet__fail(c->msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s': bytes [%llu, +%llu) of the data area reach past "
                              "its end (%llu bytes; file truncated?)",
                              c->path, t->name, (unsigned long long)t->offset,
                              (unsigned long long)t->nbytes, (unsigned long long)data_size);
    }
    return check_overlaps(p);
}

/* ---- metadata → description --------------------------------------------------------------- */

/* The architectures a GGUF file may name, with what sets them apart; others are refused by
 * name. To add one, give it a row (and its tensors a line in gguf_names); the key names follow
 * "<arch>.<field>". Only llama.cpp's LlamaModel converter permutes the q / k rows for ggml's
 * RoPE: its Qwen2Model (and Qwen3Model, derived from it) keeps the Hugging Face order. */
struct gguf_arch {
    const char *name;    /* general.architecture */
    const char *hf_name; /* duet_model_desc.architecture */
    bool permuted;       /* q / k rows interleaved for ggml's RoPE by the converter */
    bool qkv_bias;       /* blk.N.attn_{q,k,v}.bias (duet_model_desc.attention_bias) */
    bool qk_norm;        /* blk.N.attn_{q,k}_norm.weight (duet_model_desc.qk_norm) */
};

static const struct gguf_arch gguf_archs[] = {
    {"llama", "LlamaForCausalLM", true, false, false},
    {"qwen2", "Qwen2ForCausalLM", false, true, false},
    {"qwen3", "Qwen3ForCausalLM", false, false, true},
};

/* Tensor names: GGUF ("blk.N." + suffix for layers) → Hugging Face (the Llama family). */
static const struct {
    const char *gguf, *hf;
    bool layer;
} gguf_names[] = {
    {"token_embd.weight", "model.embed_tokens.weight", false},
    {"output_norm.weight", "model.norm.weight", false},
    {"output.weight", "lm_head.weight", false},
    {"attn_norm.weight", "input_layernorm.weight", true},
    {"attn_q.weight", "self_attn.q_proj.weight", true},
    {"attn_k.weight", "self_attn.k_proj.weight", true},
    {"attn_v.weight", "self_attn.v_proj.weight", true},
    {"attn_output.weight", "self_attn.o_proj.weight", true},
    {"ffn_norm.weight", "post_attention_layernorm.weight", true},
    {"ffn_gate.weight", "mlp.gate_proj.weight", true},
    {"ffn_up.weight", "mlp.up_proj.weight", true},
    {"ffn_down.weight", "mlp.down_proj.weight", true},
    {"attn_q.bias", "self_attn.q_proj.bias", true},          /* qwen2 */
    {"attn_k.bias", "self_attn.k_proj.bias", true},          /* qwen2 */
    {"attn_v.bias", "self_attn.v_proj.bias", true},          /* qwen2 */
    {"attn_q_norm.weight", "self_attn.q_norm.weight", true}, /* qwen3 */
    {"attn_k_norm.weight", "self_attn.k_norm.weight", true}, /* qwen3 */
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* An integer key (any integer type) into *out when present; required keys must be there. */
static duet_status key_u32(const struct parse *p, const char *arch, const char *field,
                           bool required, uint32_t *out)
{
    char key[128];
    const struct kv *kv;
    int64_t v;

    snprintf(key, sizeof(key), "%s%s%s", arch ? arch : "", arch ? "." : "", field);
    if (!(kv = find_kv(p, key)))
        return required ? duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: key '%s' is missing",
                                     p->c.path, key)
                        : DUET_STATUS_OK;
    if (kv->type == V_ARRAY || kv->type == V_STRING || kv->type == V_BOOL || kv->type == V_F32 ||
        kv->type == V_F64)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s' is a %s; it must be an integer", p->c.path, key,
                          vtype_names[kv->type]);
    v = (int64_t)get_le(p->c.buf + kv->at, (unsigned)vtype_size(kv->type));
    if (kv->type == V_I8)
        v = (int8_t)v;
    else if (kv->type == V_I16)
        v = (int16_t)v;
    else if (kv->type == V_I32)
        v = (int32_t)v;
    if (v < 0 || v > (int64_t)UINT32_MAX)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: key '%s' = %lld is out of range",
                          p->c.path, key, (long long)v);
    *out = (uint32_t)v;
    return DUET_STATUS_OK;
}

static duet_status key_f64(const struct parse *p, const char *arch, const char *field,
                           bool required, double *out)
{
    char key[128];
    const struct kv *kv;
    uint64_t bits;

    snprintf(key, sizeof(key), "%s.%s", arch, field);
    if (!(kv = find_kv(p, key)))
        return required ? duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: key '%s' is missing",
                                     p->c.path, key)
                        : DUET_STATUS_OK;
    if (kv->type != V_F32 && kv->type != V_F64)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s' is a %s; it must be a float32 or float64", p->c.path, key,
                          vtype_names[kv->type]);
    bits = get_le(p->c.buf + kv->at, (unsigned)vtype_size(kv->type));
    if (kv->type == V_F32) {
        uint32_t b32 = (uint32_t)bits;
        float f;

        memcpy(&f, &b32, sizeof(f));
        *out = f;
    } else {
        memcpy(out, &bits, sizeof(*out));
    }
    if (!(*out > 0.0 && *out < 1e300))
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key '%s' = %g must be positive and finite", p->c.path, key, *out);
    return DUET_STATUS_OK;
}

/* A string key compared with s (false when absent or not a string). */
static bool key_is(const struct parse *p, const char *key, const char *s, bool *present)
{
    const struct kv *kv = find_kv(p, key);
    uint64_t len;

    *present = kv != NULL;
    if (!kv || kv->type != V_STRING)
        return false;
    len = get_le(p->c.buf + kv->at, 8);
    return len == strlen(s) && memcmp(p->c.buf + kv->at + 8, s, (size_t)len) == 0;
}

static duet_status find_arch(const struct parse *p, const struct gguf_arch **out)
{
    const struct kv *kv = find_kv(p, "general.architecture");
    char name[64];
    uint64_t len;
    bool present;

    if (!kv || kv->type != V_STRING)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                          "%s: key 'general.architecture' is %s; it must be a string", p->c.path,
                          kv ? vtype_names[kv->type] : "missing");
    for (size_t i = 0; i < COUNT(gguf_archs); i++)
        if (key_is(p, "general.architecture", gguf_archs[i].name, &present)) {
            *out = &gguf_archs[i];
            return DUET_STATUS_OK;
        }
    len = get_le(p->c.buf + kv->at, 8);
    snprintf(name, sizeof(name), "%.*s", (int)(len < 40 ? len : 40),
             (const char *)p->c.buf + kv->at + 8);
    return duet__fail(
        p->c.msg, DUET_STATUS_UNSUPPORTED,
        "%s: GGUF architecture '%s' is not supported (duet reads llama, qwen2 and qwen3)",
        p->c.path, name);
}

static const struct tinfo *find_tinfo(const struct parse *p, const char *name)
{
    struct tinfo k = {.name = (char *)name};

    return p->n_t ? bsearch(&k, p->ts, (size_t)p->n_t, sizeof(k), tinfo_name_cmp) : NULL;
}

static duet_status read_rope(const struct parse *p, const char *a, duet_model_desc *d)
{
    uint32_t rot = d->head_dim;
    bool present;
    char key[128];
    duet_status st = key_f64(p, a, "rope.freq_base", false, &d->rope_theta);

    if (!st)
        st = key_u32(p, a, "rope.dimension_count", false, &rot);
    if (st)
        return st;
    if (rot != d->head_dim)
        return duet__fail(p->c.msg, DUET_STATUS_UNSUPPORTED,
                          "%s: %s.rope.dimension_count %u: partial rotary embeddings (head_dim "
                          "%u) are not supported",
                          p->c.path, a, rot, d->head_dim);
    if (find_tinfo(p, "rope_freqs.weight"))
        return duet__fail(p->c.msg, DUET_STATUS_UNSUPPORTED,
                          "%s: tensor 'rope_freqs.weight' (Llama 3.1 rope scaling as factors) is "
                          "not supported from GGUF",
                          p->c.path);
    snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
    if (key_is(p, key, "linear", &present)) {
        d->rope_scaling = DUET_ROPE_SCALING_LINEAR;
        return key_f64(p, a, "rope.scaling.factor", true, &d->rope_factor);
    }
    if (present && !key_is(p, key, "none", &present))
        return duet__fail(p->c.msg, DUET_STATUS_UNSUPPORTED,
                          "%s: key '%s': only \"none\" and \"linear\" rope scaling are supported",
                          p->c.path, key);
    return DUET_STATUS_OK;
}

static duet_status read_ids(const struct parse *p, duet_model_desc *d)
{
    uint32_t bos = UINT32_MAX, eos = UINT32_MAX, eot = UINT32_MAX, pad = UINT32_MAX;
    duet_status st = key_u32(p, NULL, "tokenizer.ggml.bos_token_id", false, &bos);

    if (!st)
        st = key_u32(p, NULL, "tokenizer.ggml.eos_token_id", false, &eos);
    if (!st)
        st = key_u32(p, NULL, "tokenizer.ggml.eot_token_id", false, &eot);
    if (!st)
        st = key_u32(p, NULL, "tokenizer.ggml.padding_token_id", false, &pad);
    if (st)
        return st;
    d->bos_token_id = bos > INT32_MAX ? -1 : (int32_t)bos;
    d->pad_token_id = pad > INT32_MAX ? -1 : (int32_t)pad;
    if (eos <= INT32_MAX)
        d->eos_token_ids[d->n_eos++] = (int32_t)eos;
    if (eot <= INT32_MAX && eot != eos)
        d->eos_token_ids[d->n_eos++] = (int32_t)eot;
    return DUET_STATUS_OK;
}

/*
 * The embedded tokenizer's arrays, when present (the tokenizer part reads them, tokenizer/gguf.c;
 * here a file whose vocabulary disagrees with its embeddings is malformed, as llama.cpp would
 * find): tokens an array of strings of one entry per embedding row; scores (float32) and
 * token_type (int32) of the same length; merges an array of strings.
 */
static duet_status check_tokenizer_keys(const struct parse *p, uint32_t vocab)
{
    static const struct {
        const char *key;
        uint32_t elem; /* enum vtype */
        bool per_token;
    } arrays[] = {
        {"tokenizer.ggml.tokens", V_STRING, true},
        {"tokenizer.ggml.scores", V_F32, true},
        {"tokenizer.ggml.token_type", V_I32, true},
        {"tokenizer.ggml.merges", V_STRING, false},
    };

    for (size_t i = 0; i < COUNT(arrays); i++) {
        const struct kv *kv = find_kv(p, arrays[i].key);

        if (!kv)
            continue;
        if (kv->type != V_ARRAY || kv->elem != arrays[i].elem)
            return duet__fail(
                p->c.msg, DUET_STATUS_BAD_FORMAT,
                "%s: key '%s' is of type %s%s%s; it must be an array of %s", p->c.path,
                arrays[i].key, vtype_names[kv->type], kv->type == V_ARRAY ? " of " : "",
                kv->type == V_ARRAY ? vtype_names[kv->elem] : "", vtype_names[arrays[i].elem]);
        if (arrays[i].per_token && kv->n != vocab)
            return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                              "%s: key '%s' has %llu entries but token_embd.weight has %u rows",
                              p->c.path, arrays[i].key, (unsigned long long)kv->n, vocab);
    }
    return DUET_STATUS_OK;
}

/* The float type of the matrices, as config.json's torch_dtype would say (F32 for block types). */
static duet_dtype file_dtype(const struct parse *p)
{
    const struct tinfo *t = find_tinfo(p, "blk.0.attn_q.weight");
    int dt = t ? ggml_types[t->type].dtype : DUET_DTYPE_F32;

    return dt == DUET_DTYPE_F16 || dt == DUET_DTYPE_BF16 ? (duet_dtype)dt : DUET_DTYPE_F32;
}

/*
 * A sliding window is refused: llama.cpp's converters write none for these architectures, and
 * its key alone would not say on which layers it applies (Qwen's max_window_layers), so a
 * window that duet ignored or guessed would change the model.
 */
static duet_status refuse_window(const struct parse *p, const char *a)
{
    char key[128];

    snprintf(key, sizeof(key), "%s.attention.sliding_window", a);
    if (find_kv(p, key))
        return duet__fail(p->c.msg, DUET_STATUS_UNSUPPORTED,
                          "%s: key '%s': sliding-window attention is not supported from GGUF",
                          p->c.path, key);
    return DUET_STATUS_OK;
}

/*
 * A layer tensor the row does not run is refused rather than ignored: llama.cpp's llama
 * architecture takes optional q/k/v/o biases, which duet's Llama does not add, and no row here
 * has an o_proj bias; a q/k norm in a file that is not qwen3 likewise.
 */
static duet_status refuse_extra_tensors(const struct parse *p, const struct gguf_arch *ga)
{
    static const char *const bias[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
    static const char *const norm[] = {"attn_q_norm.weight", "attn_k_norm.weight"};

    for (uint64_t i = 0; i < p->n_t; i++) {
        const char *name = p->ts[i].name, *dot;
        bool extra;

        if (strncmp(name, "blk.", 4) != 0 || !(dot = strchr(name + 4, '.')))
            continue;
        extra = strcmp(dot + 1, "attn_output.bias") == 0;
        for (size_t j = 0; !ga->qkv_bias && j < COUNT(bias); j++)
            extra = extra || strcmp(dot + 1, bias[j]) == 0;
        for (size_t j = 0; !ga->qk_norm && j < COUNT(norm); j++)
            extra = extra || strcmp(dot + 1, norm[j]) == 0;
        if (extra)
            return duet__fail(p->c.msg, DUET_STATUS_UNSUPPORTED,
                              "%s: tensor '%s' is not supported in a %s file (duet's %s has no "
                              "such weight; it is refused rather than ignored)",
                              p->c.path, name, ga->name, ga->hf_name);
    }
    return DUET_STATUS_OK;
}

static duet_status read_desc(const struct parse *p, duet_model_desc *d)
{
    const struct gguf_arch *ga = NULL;
    const struct tinfo *embd;
    duet_status st = find_arch(p, &ga);
    const char *a = ga ? ga->name : "";

    if (st)
        return st;
    duet__desc_defaults(d, DUET_ARCH_LLAMA);
    snprintf(d->architecture, sizeof(d->architecture), "%s", ga->hf_name);
    d->attention_bias = ga->qkv_bias;
    d->qk_norm = ga->qk_norm;
    if ((st = refuse_window(p, a)) || (st = refuse_extra_tensors(p, ga)))
        return st;
    if ((st = key_u32(p, a, "block_count", true, &d->num_layers)) ||
        (st = key_u32(p, a, "embedding_length", true, &d->hidden_size)) ||
        (st = key_u32(p, a, "feed_forward_length", true, &d->intermediate_size)) ||
        (st = key_u32(p, a, "attention.head_count", true, &d->num_heads)) ||
        (st = key_u32(p, a, "context_length", false, &d->max_position)) ||
        (st = key_f64(p, a, "attention.layer_norm_rms_epsilon", true, &d->norm_eps)))
        return st;
    d->num_kv_heads = d->num_heads;
    d->head_dim = d->num_heads ? d->hidden_size / d->num_heads : 0;
    if ((st = key_u32(p, a, "attention.head_count_kv", false, &d->num_kv_heads)) ||
        (st = key_u32(p, a, "attention.key_length", false, &d->head_dim)) ||
        (st = read_rope(p, a, d)) || (st = read_ids(p, d)))
        return st;
    if (!(embd = find_tinfo(p, "token_embd.weight")) || embd->rank != 2)
        return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT, "%s: tensor 'token_embd.weight' is %s",
                          p->c.path, embd ? "not 2-dimensional" : "missing");
    d->vocab_size = embd->ne[1] > UINT32_MAX ? 0 : (uint32_t)embd->ne[1];
    if ((st = check_tokenizer_keys(p, d->vocab_size)))
        return st;
    d->tie_word_embeddings = !find_tinfo(p, "output.weight");
    d->torch_dtype = file_dtype(p);
    return duet__desc_check(d, p->c.path, p->c.msg);
}

/* ---- tensors ---------------------------------------------------------------------------- */

/* The Hugging Face name of a GGUF tensor name into buf; unknown names are kept as they are. */
static void hf_name(const duet_model_desc *d, const char *gguf, char *buf, size_t size)
{
    const char *dot;
    char *end;
    unsigned long layer = 0;

    if (strncmp(gguf, "blk.", 4) == 0 && gguf[4] >= '0' && gguf[4] <= '9') {
        layer = strtoul(gguf + 4, &end, 10);
        dot = *end == '.' ? end + 1 : NULL;
        for (size_t i = 0; dot && layer < d->num_layers && i < COUNT(gguf_names); i++)
            if (gguf_names[i].layer && strcmp(dot, gguf_names[i].gguf) == 0) {
                snprintf(buf, size, "model.layers.%lu.%s", layer, gguf_names[i].hf);
                return;
            }
    }
    for (size_t i = 0; i < COUNT(gguf_names); i++)
        if (!gguf_names[i].layer && strcmp(gguf, gguf_names[i].gguf) == 0) {
            snprintf(buf, size, "%s", gguf_names[i].hf);
            return;
        }
    snprintf(buf, size, "%s", gguf);
}

bool duet__gguf_name(const char *hf, char *buf, size_t size)
{
    unsigned long layer;
    char *end;

    for (size_t i = 0; i < COUNT(gguf_names); i++)
        if (!gguf_names[i].layer && strcmp(hf, gguf_names[i].hf) == 0)
            return snprintf(buf, size, "%s", gguf_names[i].gguf) < (int)size;
    if (strncmp(hf, "model.layers.", 13) != 0 || hf[13] < '0' || hf[13] > '9')
        return false;
    layer = strtoul(hf + 13, &end, 10);
    for (size_t i = 0; *end == '.' && i < COUNT(gguf_names); i++)
        if (gguf_names[i].layer && strcmp(end + 1, gguf_names[i].hf) == 0)
            return snprintf(buf, size, "blk.%lu.%s", layer, gguf_names[i].gguf) < (int)size;
    return false;
}

/* The row of a description: its class name's, else llama (Mistral and other Llamas). */
static const struct gguf_arch *arch_of(const duet_model_desc *d)
{
    for (size_t i = 0; i < COUNT(gguf_archs); i++)
        if (strcmp(d->architecture, gguf_archs[i].hf_name) == 0)
            return &gguf_archs[i];
    return &gguf_archs[0];
}

const char *duet__gguf_arch(const duet_model_desc *d)
{
    return arch_of(d)->name;
}

uint32_t duet__gguf_permuted_heads(const duet_model_desc *d, const char *hf)
{
    const char *s = strrchr(hf, '.');

    if (strncmp(hf, "model.layers.", 13) != 0 || !s || !arch_of(d)->permuted)
        return 0;
    if (strstr(hf, ".self_attn.q_proj.weight"))
        return d->num_heads;
    if (strstr(hf, ".self_attn.k_proj.weight"))
        return d->num_kv_heads;
    return 0;
}

/*
 * The converter stores row h·D + 2i + s of a head (D = head_dim, i < D/2, s = 0 or 1) where
 * Hugging Face has row h·D + s·D/2 + i: the halves that rotate_half pairs became adjacent rows
 * (the pairs ggml's RoPE rotates). Copies the rows back, whole rows of bytes at a time.
 */
static void unpermute(const uint8_t *src, uint8_t *dst, uint32_t heads, uint32_t head_dim,
                      size_t row_bytes)
{
    uint32_t half = head_dim / 2;

    for (uint32_t h = 0; h < heads; h++)
        for (uint32_t i = 0; i < half; i++)
            for (uint32_t s = 0; s < 2; s++)
                memcpy(dst + ((size_t)h * head_dim + s * half + i) * row_bytes,
                       src + ((size_t)h * head_dim + 2 * i + s) * row_bytes, row_bytes);
}

static duet_status make_tensor(struct parse *p, const struct tinfo *ti, const duet_model_desc *d,
                               duet_tensor *t)
{
    char name[160];

    hf_name(d, ti->name, name, sizeof(name));
    *t = (duet_tensor){.file = p->c.path,
                       .data = p->c.buf + p->data_start + ti->offset,
                       .nbytes = ti->nbytes,
                       .offset = p->data_start + ti->offset,
                       .numel = ti->numel,
                       .rank = ti->rank,
                       .dtype = (duet_dtype)ggml_types[ti->type].dtype};
    for (uint32_t i = 0; i < ti->rank; i++)
        t->shape[i] = ti->ne[ti->rank - 1 - i];
    if (!(t->name = duet__strdup(name)))
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->c.path);
    return DUET_STATUS_OK;
}

/* Bytes the permuted q and k tensors need in `owned`; checks their shapes first. */
static duet_status permuted_bytes(struct parse *p, const duet_tensor *ts, size_t n,
                                  const duet_model_desc *d, uint64_t *total)
{
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t heads = duet__gguf_permuted_heads(d, ts[i].name);

        if (!heads)
            continue;
        if (ts[i].rank != 2 || ts[i].shape[0] != (uint64_t)heads * d->head_dim)
            return duet__fail(p->c.msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s' has %llu rows, expected %u heads × head_dim %u",
                              p->c.path, ts[i].name, (unsigned long long)ts[i].shape[0], heads,
                              d->head_dim);
        *total += ts[i].nbytes;
    }
    return DUET_STATUS_OK;
}

static int tensor_offset_cmp(const void *pa, const void *pb)
{
    const duet_tensor *a = pa, *b = pb;

    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static duet_status make_tensors(struct parse *p, struct duet__gguf *out)
{
    const duet_model_desc *d = &out->desc;
    uint64_t total, at = 0;
    duet_status st = DUET_STATUS_OK;

    if (!(out->tensors = calloc((size_t)p->n_t + 1, sizeof(*out->tensors))))
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->c.path);
    for (uint64_t i = 0; !st && i < p->n_t; i++)
        if (!(st = make_tensor(p, &p->ts[i], d, &out->tensors[i])))
            out->n++;
    if (!st)
        st = permuted_bytes(p, out->tensors, out->n, d, &total);
    if (st)
        return st;
    if (total && !(out->owned = malloc((size_t)total)))
        return duet__fail(p->c.msg, DUET_STATUS_OUT_OF_MEMORY,
                          "%s: out of memory for the q/k rows (%llu bytes)", p->c.path,
                          (unsigned long long)total);
    for (size_t i = 0; i < out->n; i++) {
        duet_tensor *t = &out->tensors[i];
        uint32_t heads = duet__gguf_permuted_heads(d, t->name);

        if (!heads)
            continue;
        unpermute(t->data, (uint8_t *)out->owned + at, heads, d->head_dim,
                  (size_t)(t->nbytes / t->shape[0]));
        t->data = (uint8_t *)out->owned + at;
        at += t->nbytes;
    }
    qsort(out->tensors, out->n, sizeof(*out->tensors), tensor_offset_cmp);
    return DUET_STATUS_OK;
}

bool duet__gguf_magic(const uint8_t *buf, uint64_t size)
{
    return size >= 4 && memcmp(buf, "GGUF", 4) == 0;
}

void duet__gguf_fini(struct duet__gguf *g)
{
    for (size_t i = 0; i < g->n; i++)
        free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->owned);
    *g = (struct duet__gguf){0};
}

duet_status duet__gguf_parse(const char *path, const uint8_t *buf, uint64_t size,
                             struct duet__gguf *out, struct duet__msg *msg)
{
    struct parse p = {.c = {path, buf, size, 0, msg}};
    uint64_t n_t = 0, n_kv = 0;
    duet_status st;

    *out = (struct duet__gguf){0};
    st = read_header(&p, &n_t, &n_kv);
    if (!st)
        st = read_kvs(&p, n_kv);
    if (!st)
        st = read_tinfos(&p, n_t);
    if (!st)
        st = read_alignment(&p);
    if (!st)
        st = check_ranges(&p);
    if (!st)
        st = read_desc(&p, &out->desc);
    if (!st)
        st = make_tensors(&p, out);
    out->alignment = p.alignment;
    out->data_start = p.data_start;
    out->n_kv = p.n_kv;
    parse_fini(&p);
    if (st)
        duet__gguf_fini(out);
    return st;
}
