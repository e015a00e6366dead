/*
 * safetensors: one file's header, parsed (jansson) and validated from memory.
 *
 *   0        8                       8 + N                                          size
 *   ┌────────┬───────────────────────┬─────────────────────────────────────────────┐
 *   │ N: u64 │ JSON header, N bytes  │ data area: the tensors back to back; each    │
 *   │ little │ (may end in spaces)   │ entry's data_offsets [begin, end) are        │
 *   │ endian │                       │ relative to its start and cover it exactly   │
 *   └────────┴───────────────────────┴─────────────────────────────────────────────┘
 *
 *   { "__metadata__": { "format": "pt", ... },                      optional, strings only
 *     "model.norm.weight": { "dtype": "BF16", "shape": [4096], "data_offsets": [0, 8192] },
 *     ... }
 *
 * Checks, in this order, so that nothing is read before the check that makes it safe; each
 * failure names the file, the tensor when there is one, and what is wrong:
 *   file >= 8 bytes → N <= DUET__ST_MAX_HEADER → 8 + N <= file size → the header is JSON
 *   (duplicate keys refused) → an object → __metadata__ an object of strings → each entry: an
 *   object, a non-empty name, a known dtype, a shape of non-negative integers (rank <= 8, no
 *   overflow), two integer data_offsets with begin <= end <= data size, and shape × dtype size
 *   = end − begin → sorted by begin: no two ranges overlap, no gap, nothing after the last.
 * The same rules as the reference implementation (huggingface/safetensors), which refuses gaps
 * and trailing bytes too.
 */
#include "model-int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void duet__st_header_fini(struct duet__st_header *h)
{
    for (size_t i = 0; i < h->n; i++)
        free((char *)h->tensors[i].name);
    free(h->tensors);
    *h = (struct duet__st_header){0};
}

/* Reads a JSON array of at most max non-negative integers; false on anything else. */
static bool read_u64s(const json_t *arr, uint64_t *out, size_t max, size_t *n)
{
    size_t i;
    json_t *v;

    if (!json_is_array(arr) || json_array_size(arr) > max)
        return false;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return false;
        out[i] = (uint64_t)json_integer_value(v);
    }
    *n = json_array_size(arr);
    return true;
}

/* "[2, 3]" into buf. */
static const char *shape_str(const uint64_t *shape, uint32_t rank, char *buf, size_t size)
{
    size_t len = 0;

    len += (size_t)snprintf(buf, size, "[");
    for (uint32_t i = 0; i < rank && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)shape[i]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
    return buf;
}

/* dtype and shape of one entry into t (numel and nbytes too). */
static duet_status parse_type(const char *path, const char *name, const json_t *v, duet_tensor *t,
                              struct duet__msg *msg)
{
    const json_t *dtype = json_object_get(v, "dtype");
    uint64_t size;
    size_t rank;
    char shape[200];

    if (!json_is_string(dtype))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': no \"dtype\" string", path,
                          name);
    if (!duet__dtype_parse(json_string_value(dtype), &t->dtype))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': unknown dtype '%s' (known: F32 F16 BF16 F64 I64 I32 "
                          "I16 I8 U8 BOOL)",
                          path, name, json_string_value(dtype));
    if (!read_u64s(json_object_get(v, "shape"), t->shape, DUET_MODEL_MAX_RANK, &rank))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': \"shape\" must be an array of at most %d "
                          "non-negative integers",
                          path, name, DUET_MODEL_MAX_RANK);
    t->rank = (uint32_t)rank;
    t->numel = 1;
    size = duet_dtype_size(t->dtype);
    for (size_t i = 0; i < rank; i++) {
        if (t->shape[i] && t->numel > UINT64_MAX / size / t->shape[i])
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': shape %s is too large",
                              path, name, shape_str(t->shape, t->rank, shape, sizeof(shape)));
        t->numel *= t->shape[i];
    }
    t->nbytes = t->numel * size;
    return DUET_STATUS_OK;
}

/* data_offsets of one entry, checked against the data area and the entry's size. */
static duet_status parse_range(const char *path, const char *name, const json_t *v,
                               uint64_t data_size, duet_tensor *t, struct duet__msg *msg)
{
    uint64_t off[2];
    size_t n;
    char shape[200];

    if (!read_u64s(json_object_get(v, "data_offsets"), off, 2, &n) || n != 2)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': \"data_offsets\" must be [begin, end], two "
                          "non-negative integers",
                          path, name);
    if (off[0] > off[1])
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] are out of order (begin "
                          "after end)",
                          path, name, (unsigned long long)off[0], (unsigned long long)off[1]);
    if (off[1] > data_size)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] reach outside the data "
                          "area (%llu bytes)",
                          path, name, (unsigned long long)off[0], (unsigned long long)off[1],
                          (unsigned long long)data_size);
    if (off[1] - off[0] != t->nbytes)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s': shape %s of %s takes %llu bytes but data_offsets "
                          "[%llu, %llu] hold %llu",
                          path, name, shape_str(t->shape, t->rank, shape, sizeof(shape)),
                          duet_dtype_name(t->dtype), (unsigned long long)t->nbytes,
                          (unsigned long long)off[0], (unsigned long long)off[1],
                          (unsigned long long)(off[1] - off[0]));
    t->offset = off[0]; /* relative until the caller adds data_start */
    return DUET_STATUS_OK;
}

static duet_status parse_metadata(const char *path, const json_t *v, struct duet__msg *msg)
{
    const char *key;
    const json_t *val;

    if (!json_is_object(v))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: \"__metadata__\" must be an object of strings", path);
    json_object_foreach((json_t *)v, key, val)
    {
        if (!json_is_string(val))
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: \"__metadata__\" must be an object of strings ('%s' is not "
                              "a string)",
                              path, key);
    }
    return DUET_STATUS_OK;
}

static duet_status parse_entry(const char *path, const char *name, const json_t *v,
                               uint64_t data_size, duet_tensor *t, struct duet__msg *msg)
{
    duet_status st;

    if (!*name)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: a tensor has an empty name", path);
    if (!json_is_object(v))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': entry is not an object",
                          path, name);
    st = parse_type(path, name, v, t, msg);
    if (!st)
        st = parse_range(path, name, v, data_size, t, msg);
    if (st)
        return st;
    t->name = duet__strdup(name);
    if (!t->name)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    return DUET_STATUS_OK;
}

static int by_range(const void *pa, const void *pb)
{
    const duet_tensor *a = pa, *b = pb;

    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes)
        return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Sorted tensors must tile [0, data_size) exactly. Offsets are still relative. */
static duet_status check_tiling(const char *path, const duet_tensor *t, size_t n,
                                uint64_t data_size, struct duet__msg *msg)
{
    uint64_t end = 0;

    for (size_t i = 0; i < n; i++) {
        if (t[i].offset < end)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                              t[i - 1].name, (unsigned long long)t[i - 1].offset,
                              (unsigned long long)end, t[i].name, (unsigned long long)t[i].offset,
                              (unsigned long long)(t[i].offset + t[i].nbytes));
        if (t[i].offset > end)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: bytes [%llu, %llu) of the data area belong to no tensor (a "
                              "gap before tensor '%s')",
                              path, (unsigned long long)end, (unsigned long long)t[i].offset,
                              t[i].name);
        end = t[i].offset + t[i].nbytes;
    }
    if (end != data_size)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: the data area has %llu bytes but its tensors end at %llu (%s)", path,
                          (unsigned long long)data_size, (unsigned long long)end,
                          n ? "trailing bytes after the last tensor" : "no tensors");
    return DUET_STATUS_OK;
}

/* Entries of the header object into out->tensors (unsorted). */
static duet_status parse_entries(const char *path, json_t *root, uint64_t data_size,
                                 struct duet__st_header *out, struct duet__msg *msg)
{
    const char *name;
    json_t *v;
    duet_status st;

    out->tensors = calloc(json_object_size(root) + 1, sizeof(*out->tensors));
    if (!out->tensors)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    json_object_foreach(root, name, v)
    {
        if (strcmp(name, "__metadata__") == 0) {
            st = parse_metadata(path, v, msg);
        } else {
            st = parse_entry(path, name, v, data_size, &out->tensors[out->n], msg);
            if (!st)
                out->tensors[out->n++].file = path;
        }
        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

/* The header bytes as a JSON object. */
static duet_status load_header(const char *path, const uint8_t *json, size_t len, json_t **out,
                               struct duet__msg *msg)
{
    json_error_t e;

    *out = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &e);
    if (!*out) {
        if (strncmp(e.text, "duplicate object key", 20) == 0)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: a tensor name appears twice in the header: %s (byte %d)", path,
                              e.text, e.position + 8);
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: header is not valid JSON: %s (line %d, column %d)", path, e.text,
                          e.line, e.column);
    }
    if (!json_is_object(*out)) {
        json_decref(*out);
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: header is JSON but not an object",
                          path);
    }
    return DUET_STATUS_OK;
}

/* The 8-byte prefix: N, checked against the cap and the file. */
static duet_status read_prefix(const char *path, const uint8_t *buf, uint64_t size, uint64_t *n,
                               struct duet__msg *msg)
{
    if (size < 8)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: file is %llu bytes, shorter than the 8-byte header length", path,
                          (unsigned long long)size);
    *n = 0;
    for (int i = 7; i >= 0; i--)
        *n = *n << 8 | buf[i];
    if (*n > DUET__ST_MAX_HEADER)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: header length %llu is absurd (limit %llu bytes)", path,
                          (unsigned long long)*n, DUET__ST_MAX_HEADER);
    if (*n > size - 8)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: header length %llu is larger than the %llu bytes after it", path,
                          (unsigned long long)*n, (unsigned long long)(size - 8));
    return DUET_STATUS_OK;
}

duet_status duet__st_parse(const char *path, const uint8_t *buf, uint64_t size,
                           struct duet__st_header *out, struct duet__msg *msg)
{
    uint64_t n = 0, data_size;
    json_t *root = NULL;
    duet_status st;

    *out = (struct duet__st_header){0};
    st = read_prefix(path, buf, size, &n, msg);
    if (!st)
        st = load_header(path, buf + 8, (size_t)n, &root, msg);
    if (st)
        return st;
    data_size = size - 8 - n;
    st = parse_entries(path, root, data_size, out, msg);
    json_decref(root);
    if (!st) {
        qsort(out->tensors, out->n, sizeof(*out->tensors), by_range);
        st = check_tiling(path, out->tensors, out->n, data_size, msg);
    }
    if (st) {
        duet__st_header_fini(out);
        return st;
    }
    out->data_start = 8 + n;
    for (size_t i = 0; i < out->n; i++) {
        out->tensors[i].offset += out->data_start;
        out->tensors[i].data = buf + out->tensors[i].offset;
    }
    return DUET_STATUS_OK;
}
