/*
 * A fast path for the two large values of tokenizer.json: model.vocab (an object of token ->
 * id) and model.merges (an array of "a b" strings or ["a", "b"] pairs), which are most of a
 * 9-11 MB file and cost jansson about 200 ms to build and free as objects.
 *
 *   tokenizer.json ─► find model.vocab and model.merges (a structural scan: strings skipped,
 *                     brackets counted) ─► decode them here into flat arrays
 *                  ─► the rest, with those two values blanked to {} and [], to jansson
 *
 * Anything unexpected (another layout, a syntax error, a number that is not a plain integer,
 * a merge that is not two tokens, nesting deeper than 64) answers false, and the caller parses
 * the whole file with jansson as before, so that errors keep jansson's messages. The strings
 * are validated as jansson would: UTF-8, escapes, surrogate pairs.
 */
#include "tokenizer-int.h"

#include <stdlib.h>
#include <string.h>

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* True when P, before END, holds C. */
static bool at(const char *p, const char *end, char c)
{
    return p < end && *p == c;
}

/* Past the string whose opening quote is at P, or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Past the JSON value at P (not validated: jansson parses what is kept), or NULL. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;

    p = ws(p, end);
    if (p < end && *p == '"')
        return skip_string(p, end);
    if (p < end && *p != '{' && *p != '[') { /* a number, true, false or null */
        while (p < end && !strchr(",}] \t\r\n", *p))
            p++;
        return p < end ? p : NULL;
    }
    while (p < end) {
        if (*p == '"') {
            p = skip_string(p, end);
            if (!p)
                return NULL;
            continue;
        }
        if ((*p == '{' || *p == '[') && ++depth > 64)
            return NULL;
        if ((*p == '}' || *p == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return NULL;
}

static int hex4(const char *p)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;

        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* A \u escape at P (after the backslash and u) with its low surrogate; the code point or -1. */
static long unicode_escape(const char **pp, const char *end)
{
    const char *p = *pp;
    long cp = end - p >= 4 ? hex4(p) : -1, lo;

    if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff))
        return -1;
    p += 4;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || (lo = hex4(p + 2)) < 0xdc00 ||
            lo > 0xdfff)
            return -1;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }
    *pp = p;
    return cp;
}

/* Decodes the string at P into A (*OFF, *LEN); past it, or NULL when it is not valid JSON. */
static const char *decode_string(const char *p, const char *end, duet__arena *a, uint32_t *off,
                                 uint32_t *len)
{
    char buf[1024];
    size_t n = 0, k;

    if (p >= end || *p++ != '"')
        return NULL;
    while (p < end && *p != '"') {
        if (n + 4 > sizeof(buf))
            return NULL; /* a token this long: jansson's business */
        if (*p == '\\') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *e = ++p < end ? strchr(from, *p) : NULL;
            long cp;

            if (e && *p) {
                buf[n++] = to[e - from];
                p++;
                continue;
            }
            if (p >= end || *p++ != 'u' || (cp = unicode_escape(&p, end)) < 0)
                return NULL;
            n += duet__utf8_put(buf + n, (uint32_t)cp);
            continue;
        }
        if ((unsigned char)*p < 0x20 || !(k = duet__utf8_len((const unsigned char *)p, end - p)))
            return NULL;
        memcpy(buf + n, p, k);
        n += k;
        p += k;
    }
    if (p >= end || !duet__arena_add(a, buf, n, off))
        return NULL;
    *len = (uint32_t)n;
    return p + 1;
}

static bool grow(duet__raw *r, size_t need)
{
    if (need <= r->cap)
        return true;
    size_t cap = r->cap ? r->cap * 2 : 1024;
    uint32_t *off = realloc(r->off, cap * sizeof(*off)), *len;

    if (!off)
        return false;
    r->off = off;
    len = realloc(r->len, cap * sizeof(*len));
    if (!len)
        return false;
    r->len = len;
    int64_t *id = realloc(r->id, cap * sizeof(*id));
    if (!id)
        return false;
    r->id = id;
    r->cap = cap;
    return true;
}

/* An integer id: digits only, without leading zeros (JSON has none), as tokenizer.json writes
 * them; anything else (a sign, a fraction, an exponent) is left to jansson. */
static const char *parse_id(const char *p, const char *end, int64_t *id)
{
    int64_t v = 0;
    const char *start = p;

    while (p < end && *p >= '0' && *p <= '9' && p - start < 12)
        v = v * 10 + (*p++ - '0');
    if (p == start || (*start == '0' && p - start > 1) ||
        (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9'))))
        return NULL;
    *id = v;
    return p;
}

/* model.vocab's object into R's entries (token, id). */
static bool parse_vocab(const char *p, const char *end, duet__raw *r)
{
    p = ws(p, end);
    if (p >= end || *p++ != '{')
        return false;
    p = ws(p, end);
    if (p < end && *p == '}')
        return true;
    for (;;) {
        if (!grow(r, r->n + 1) ||
            !(p = decode_string(ws(p, end), end, &r->strs, &r->off[r->n], &r->len[r->n])))
            return false;
        p = ws(p, end);
        if (p >= end || *p++ != ':' || !(p = parse_id(ws(p, end), end, &r->id[r->n])))
            return false;
        r->n++;
        p = ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        return p < end && *p == '}';
    }
}

/* One merge: "left right" or ["left", "right"], as two entries of R (id -1). */
static const char *parse_merge(const char *p, const char *end, duet__raw *r)
{
    uint32_t off, len;
    const char *sp;

    if (!grow(r, r->n + 2))
        return NULL;
    if (p < end && *p == '[') {
        p = decode_string(ws(p + 1, end), end, &r->strs, &r->off[r->n], &r->len[r->n]);
        if (!p || !at(p = ws(p, end), end, ',') ||
            !(p = decode_string(ws(p + 1, end), end, &r->strs, &r->off[r->n + 1],
                                &r->len[r->n + 1])) ||
            !at(p = ws(p, end), end, ']'))
            return NULL;
        r->n += 2;
        return p + 1;
    }
    if (!(p = decode_string(p, end, &r->strs, &off, &len)))
        return NULL;
    sp = memchr(r->strs.data + off, ' ', len);
    if (!sp || sp == r->strs.data + off ||
        memchr(sp + 1, ' ', len - (size_t)(sp - r->strs.data - off) - 1) ||
        (size_t)(sp - r->strs.data - off) + 1 == len)
        return NULL;
    r->off[r->n] = off;
    r->len[r->n] = (uint32_t)(sp - r->strs.data - off);
    r->off[r->n + 1] = off + r->len[r->n] + 1;
    r->len[r->n + 1] = len - r->len[r->n] - 1;
    r->n += 2;
    return p;
}

static bool parse_merges(const char *p, const char *end, duet__raw *r)
{
    p = ws(p, end);
    if (p >= end || *p++ != '[')
        return false;
    p = ws(p, end);
    if (p < end && *p == ']')
        return true;
    for (;;) {
        if (!(p = parse_merge(ws(p, end), end, r)))
            return false;
        p = ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        return p < end && *p == ']';
    }
}

typedef struct range {
    const char *start, *end; /* a value's bytes; start NULL while not found */
} range;

/* Scans the object at P: the values of KEYS[0..n) into RANGES (a key twice: false). Returns the
 * end of the object, or NULL. */
static const char *scan_object(const char *p, const char *end, const char *const *keys,
                               range *ranges, int n)
{
    duet__arena key = {0};
    uint32_t off, len;

    p = ws(p, end);
    if (p >= end || *p++ != '{')
        return NULL;
    for (p = ws(p, end); p && p < end && *p != '}';) {
        const char *value;
        int k = n;

        key.len = 0;
        p = decode_string(p, end, &key, &off, &len);
        if (!p || !at(p = ws(p, end), end, ':')) {
            p = NULL;
            break;
        }
        value = ws(p + 1, end);
        for (k = 0; k < n && (strlen(keys[k]) != len || memcmp(keys[k], key.data, len)); k++)
            ;
        p = skip_value(value, end);
        if (!p || (k < n && ranges[k].start)) {
            p = NULL;
            break;
        }
        if (k < n)
            ranges[k] = (range){value, p};
        p = ws(p, end);
        if (p < end && *p == ',')
            p = ws(p + 1, end);
    }
    free(key.data);
    return p && p < end ? p + 1 : NULL;
}

static void blank(char *copy, const char *text, range r, char open, char close)
{
    size_t at = (size_t)(r.start - text), n = (size_t)(r.end - r.start);

    memset(copy + at, ' ', n);
    copy[at] = open;
    copy[at + 1] = close;
}

void duet__raw_fini(duet__raw *r)
{
    free(r->strs.data);
    free(r->off);
    free(r->len);
    free(r->id);
    memset(r, 0, sizeof(*r));
}

bool duet__raw_disabled;

bool duet__raw_split(const char *text, size_t len, duet__raw *vocab, duet__raw *merges, char **rest)
{
    static const char *const root_keys[] = {"model"}, *const model_keys[] = {"vocab", "merges"};
    const char *end = text + len;
    range model = {0}, vm[2] = {{0}, {0}};

    *rest = NULL;
    if (duet__raw_disabled || !scan_object(text, end, root_keys, &model, 1) || !model.start ||
        !scan_object(model.start, model.end, model_keys, vm, 2) || !vm[0].start || !vm[1].start ||
        vm[0].end - vm[0].start < 2 || vm[1].end - vm[1].start < 2)
        return false;
    if (!parse_vocab(vm[0].start, vm[0].end, vocab) ||
        !parse_merges(vm[1].start, vm[1].end, merges) || !(*rest = malloc(len + 1))) {
        duet__raw_fini(vocab);
        duet__raw_fini(merges);
        return false;
    }
    memcpy(*rest, text, len);
    (*rest)[len] = '\0';
    blank(*rest, text, vm[0], '{', '}');
    blank(*rest, text, vm[1], '[', ']');
    return true;
}
