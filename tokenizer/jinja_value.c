/*
 * Values of the chat-template interpreter (jinja-int.h): the render's arena, errors, and
 * Python's view of JSON-like values — truthiness, ==, ordering, str(), repr() and json.dumps().
 *
 * The arena is a list of chunks, each at least 64 KiB, bump-allocated and freed together at the
 * end of the render; its total counts against max_bytes, so string and list growth in a template
 * loop ends in DUET_STATUS_CAPACITY. Floats print as Python's repr (the shortest string that
 * reads back to the same double), which is also what json.dumps writes.
 */
#include "jinja-int.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUET__VALUE_DEPTH 200 /* nesting of lists and dicts that str(), ==, tojson walk */

struct duet__jchunk {
    duet__jchunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *duet__jalloc(duet__jctx *c, size_t size)
{
    duet__jchunk *k = c->chunks;
    size_t need = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    void *p;

    if (c->st != DUET_STATUS_OK)
        return NULL;
    if (size > c->lim.max_bytes || c->bytes > c->lim.max_bytes - need) {
        duet__jerr(c, DUET_STATUS_CAPACITY, 0, "rendering needs more than %zu bytes",
                   c->lim.max_bytes);
        return NULL;
    }
    if (!k || k->cap - k->used < need) {
        size_t cap = need > 65536 ? need : 65536;

        if (!(k = malloc(sizeof(*k) + cap))) {
            duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, 0, "out of memory");
            return NULL;
        }
        k->next = c->chunks;
        k->used = 0;
        k->cap = cap;
        c->chunks = k;
    }
    p = (char *)k->data + k->used;
    k->used += need;
    c->bytes += need;
    memset(p, 0, size);
    return p;
}

void duet__jctx_fini(duet__jctx *c)
{
    while (c->chunks) {
        duet__jchunk *next = c->chunks->next;

        free(c->chunks);
        c->chunks = next;
    }
}

bool duet__jerr(duet__jctx *c, duet_status st, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (c->st != DUET_STATUS_OK)
        return false;
    c->st = st;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line <= 0)
        line = c->line;
    if (line > 0)
        duet__set_err(c->err, c->err_size, "chat template line %d: %s", line, msg);
    else
        duet__set_err(c->err, c->err_size, "chat template: %s", msg);
    return false;
}

/* ---- constructors -------------------------------------------------------------------------- */

duet__jv duet__jv_undef(void)
{
    duet__jv v = {.kind = DUET__JV_UNDEF};
    return v;
}

duet__jv duet__jv_none(void)
{
    duet__jv v = {.kind = DUET__JV_NONE};
    return v;
}

duet__jv duet__jv_bool(bool b)
{
    duet__jv v = {.kind = DUET__JV_BOOL, .u.b = b};
    return v;
}

duet__jv duet__jv_int(int64_t i)
{
    duet__jv v = {.kind = DUET__JV_INT, .u.i = i};
    return v;
}

duet__jv duet__jv_float(double f)
{
    duet__jv v = {.kind = DUET__JV_FLOAT, .u.f = f};
    return v;
}

bool duet__jv_str(duet__jctx *c, const char *s, size_t n, duet__jv *out)
{
    duet__jstr *str = n < SIZE_MAX - sizeof(*str) ? duet__jalloc(c, sizeof(*str) + n) : NULL;

    if (!str)
        return duet__jerr(c, DUET_STATUS_CAPACITY, 0, "string too long");
    memcpy(str->p, s, n);
    str->n = n;
    out->kind = DUET__JV_STR;
    out->u.s = str;
    return true;
}

bool duet__jv_list(duet__jctx *c, size_t n, int kind, duet__jv *out)
{
    duet__jlist *l = duet__jalloc(c, sizeof(*l));

    if (!l || (n && n > SIZE_MAX / sizeof(duet__jv)))
        return duet__jerr(c, DUET_STATUS_CAPACITY, 0, "list too long");
    if (n && !(l->v = duet__jalloc(c, n * sizeof(duet__jv))))
        return false;
    l->n = n;
    out->kind = kind;
    out->u.l = l;
    return true;
}

bool duet__jv_dict(duet__jctx *c, int kind, duet__jv *out)
{
    duet__jdict *d = duet__jalloc(c, sizeof(*d));

    if (!d)
        return false;
    out->kind = kind;
    out->u.d = d;
    return true;
}

duet__jv *duet__jdict_get(duet__jdict *d, duet__jv key)
{
    for (size_t i = 0; i < d->n; i++)
        if (duet__jv_eq(d->keys[i], key, 0))
            return &d->vals[i];
    return NULL;
}

duet__jv *duet__jdict_getn(duet__jdict *d, const char *key, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].kind == DUET__JV_STR && d->keys[i].u.s->n == n &&
            memcmp(d->keys[i].u.s->p, key, n) == 0)
            return &d->vals[i];
    return NULL;
}

bool duet__jdict_set(duet__jctx *c, duet__jdict *d, duet__jv key, duet__jv val)
{
    duet__jv *v = duet__jdict_get(d, key);

    if (v) {
        *v = val;
        return true;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        duet__jv *keys = duet__jalloc(c, cap * sizeof(*keys));
        duet__jv *vals = keys ? duet__jalloc(c, cap * sizeof(*vals)) : NULL;

        if (!vals)
            return false;
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof(*keys));
            memcpy(vals, d->vals, d->n * sizeof(*vals));
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
    return true;
}

static bool from_json_object(duet__jctx *c, json_t *j, int depth, duet__jv *out)
{
    const char *key;
    json_t *m;

    if (!duet__jv_dict(c, DUET__JV_DICT, out))
        return false;
    json_object_foreach(j, key, m)
    {
        duet__jv k, v;

        if (!duet__jv_str(c, key, strlen(key), &k) || !duet__jv_from_json(c, m, depth + 1, &v) ||
            !duet__jdict_set(c, out->u.d, k, v))
            return false;
    }
    return true;
}

bool duet__jv_from_json(duet__jctx *c, const void *json, int depth, duet__jv *out)
{
    json_t *j = (json_t *)json, *m;
    size_t i;

    if (depth > DUET__VALUE_DEPTH)
        return duet__jerr(c, DUET_STATUS_CAPACITY, 0, "variables nested more than %d deep",
                          DUET__VALUE_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return from_json_object(c, j, depth, out);
    case JSON_ARRAY:
        if (!duet__jv_list(c, json_array_size(j), DUET__JV_LIST, out))
            return false;
        json_array_foreach(
            j, i, m) if (!duet__jv_from_json(c, m, depth + 1, &out->u.l->v[i])) return false;
        return true;
    case JSON_STRING:
        return duet__jv_str(c, json_string_value(j), json_string_length(j), out);
    case JSON_INTEGER:
        *out = duet__jv_int(json_integer_value(j));
        return true;
    case JSON_REAL:
        *out = duet__jv_float(json_real_value(j));
        return true;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = duet__jv_bool(json_is_true(j));
        return true;
    default:
        *out = duet__jv_none();
        return true;
    }
}

/* ---- Python semantics ---------------------------------------------------------------------- */

bool duet__jv_truthy(duet__jv v)
{
    switch (v.kind) {
    case DUET__JV_UNDEF:
    case DUET__JV_NONE:
        return false;
    case DUET__JV_BOOL:
        return v.u.b;
    case DUET__JV_INT:
        return v.u.i != 0;
    case DUET__JV_FLOAT:
        return v.u.f != 0;
    case DUET__JV_STR:
        return v.u.s->n > 0;
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        return v.u.l->n > 0;
    case DUET__JV_DICT:
        return v.u.d->n > 0;
    default:
        return true;
    }
}

bool duet__jv_is_num(duet__jv v)
{
    return v.kind == DUET__JV_BOOL || v.kind == DUET__JV_INT || v.kind == DUET__JV_FLOAT;
}

double duet__jv_num(duet__jv v)
{
    if (v.kind == DUET__JV_FLOAT)
        return v.u.f;
    return v.kind == DUET__JV_BOOL ? (double)v.u.b : (double)v.u.i;
}

const char *duet__jv_type(duet__jv v)
{
    static const char *const names[] = {
        "Undefined", "NoneType",  "bool",  "int",      "float",  "str",         "list",     "tuple",
        "dict",      "Namespace", "Macro", "function", "method", "LoopContext", "generator"};
    return names[v.kind];
}

static int64_t int_of(duet__jv v)
{
    return v.kind == DUET__JV_BOOL ? (int64_t)v.u.b : v.u.i;
}

static bool num_eq(duet__jv a, duet__jv b)
{
    if (a.kind != DUET__JV_FLOAT && b.kind != DUET__JV_FLOAT)
        return int_of(a) == int_of(b);
    return duet__jv_num(a) == duet__jv_num(b);
}

static bool dict_eq(duet__jdict *a, duet__jdict *b, int depth)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        duet__jv *v = duet__jdict_get(b, a->keys[i]);

        if (!v || !duet__jv_eq(a->vals[i], *v, depth + 1))
            return false;
    }
    return true;
}

bool duet__jv_eq(duet__jv a, duet__jv b, int depth)
{
    if (depth > DUET__VALUE_DEPTH)
        return false;
    if (duet__jv_is_num(a) && duet__jv_is_num(b))
        return num_eq(a, b);
    if (a.kind != b.kind)
        return false;
    switch (a.kind) {
    case DUET__JV_UNDEF:
    case DUET__JV_NONE:
        return true;
    case DUET__JV_STR:
        return a.u.s->n == b.u.s->n && memcmp(a.u.s->p, b.u.s->p, a.u.s->n) == 0;
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        if (a.u.l->n != b.u.l->n || a.u.l->is_range != b.u.l->is_range)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!duet__jv_eq(a.u.l->v[i], b.u.l->v[i], depth + 1))
                return false;
        return true;
    case DUET__JV_DICT:
        return dict_eq(a.u.d, b.u.d, depth);
    case DUET__JV_FUNC:
        return a.u.func == b.u.func;
    default:
        return a.u.d == b.u.d; /* identity */
    }
}

static int cmp_bytes(const duet__jstr *a, const duet__jstr *b)
{
    int r = memcmp(a->p, b->p, a->n < b->n ? a->n : b->n);

    if (r)
        return r;
    return a->n < b->n ? -1 : a->n > b->n;
}

bool duet__jv_cmp(duet__jv a, duet__jv b, int depth, int *cmp)
{
    if (depth > DUET__VALUE_DEPTH)
        return false;
    if (duet__jv_is_num(a) && duet__jv_is_num(b)) {
        double x = duet__jv_num(a), y = duet__jv_num(b);

        if (a.kind != DUET__JV_FLOAT && b.kind != DUET__JV_FLOAT)
            *cmp = int_of(a) < int_of(b) ? -1 : int_of(a) > int_of(b);
        else
            *cmp = x < y ? -1 : x > y ? 1 : x == y ? 0 : 2; /* 2: NaN, no order */
        return true;
    }
    if (a.kind != b.kind)
        return false;
    if (a.kind == DUET__JV_STR) {
        *cmp = cmp_bytes(a.u.s, b.u.s); /* UTF-8 byte order is code point order */
        return true;
    }
    if (a.kind != DUET__JV_LIST && a.kind != DUET__JV_TUPLE)
        return false;
    for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
        if (duet__jv_eq(a.u.l->v[i], b.u.l->v[i], depth + 1))
            continue;
        return duet__jv_cmp(a.u.l->v[i], b.u.l->v[i], depth + 1, cmp);
    }
    *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    return true;
}

/* ---- str(), repr(), json.dumps() ----------------------------------------------------------- */

void duet__float_repr(double f, char out[40])
{
    char e[40], digits[24];
    int p, exp, nd = 0;
    bool neg = signbit(f) != 0; /* -0.0 prints as Python's "-0.0" */

    if (isnan(f) || isinf(f)) {
        snprintf(out, 40, "%s", isnan(f) ? "nan" : f < 0 ? "-inf" : "inf");
        return;
    }
    for (p = 1; p <= 17; p++) { /* the shortest digits that read back */
        snprintf(e, sizeof(e), "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    for (const char *s = e; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9')
            digits[nd++] = *s;
    digits[nd] = '\0';
    exp = atoi(strchr(e, 'e') + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        digits[--nd] = '\0';
    if (exp < -4 || exp >= 16) {
        snprintf(out, 40, "%s%c%s%s%se%c%02d", neg ? "-" : "", digits[0], nd > 1 ? "." : "",
                 digits + 1, "", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        snprintf(out, 40, "%s0.%.*s%s", neg ? "-" : "", -exp - 1, "0000", digits);
    } else if (nd > exp + 1) {
        snprintf(out, 40, "%s%.*s.%s", neg ? "-" : "", exp + 1, digits, digits + exp + 1);
    } else {
        snprintf(out, 40, "%s%s%.*s.0", neg ? "-" : "", digits, exp + 1 - nd, "0000000000000000");
    }
}

static bool put(duet__jctx *c, duet__buf *b, const char *s, size_t n)
{
    if (b->n + n > c->lim.max_output)
        return duet__jerr(c, DUET_STATUS_CAPACITY, 0, "output exceeds %zu bytes",
                          c->lim.max_output);
    if (!duet__buf_add(b, s, n))
        return duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, 0, "out of memory");
    return true;
}

static bool puts_(duet__jctx *c, duet__buf *b, const char *s)
{
    return put(c, b, s, strlen(s));
}

/* Python's repr of a str: single quotes unless the text has ' and no ". */
static bool write_repr_str(duet__jctx *c, duet__buf *b, const duet__jstr *s)
{
    char q = memchr(s->p, '\'', s->n) && !memchr(s->p, '"', s->n) ? '"' : '\'';
    char esc[8];

    if (!put(c, b, &q, 1))
        return false;
    for (size_t i = 0; i < s->n; i++) {
        unsigned char ch = (unsigned char)s->p[i];
        const char *e = ch == '\\'   ? "\\\\"
                        : ch == '\n' ? "\\n"
                        : ch == '\r' ? "\\r"
                        : ch == '\t' ? "\\t"
                                     : NULL;

        if (!e && ch == (unsigned char)q)
            e = q == '\'' ? "\\'" : "\\\"";
        if (!e && (ch < 0x20 || ch == 0x7f)) {
            snprintf(esc, sizeof(esc), "\\x%02x", ch);
            e = esc;
        }
        if (!(e ? puts_(c, b, e) : put(c, b, (const char *)&ch, 1)))
            return false;
    }
    return put(c, b, &q, 1);
}

static bool write_seq(duet__jctx *c, int line, duet__buf *b, duet__jv v, int depth)
{
    bool tuple = v.kind == DUET__JV_TUPLE;

    if (v.u.l->is_range)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "printing a range is not supported (use |list)");

    if (!puts_(c, b, tuple ? "(" : "["))
        return false;
    for (size_t i = 0; i < v.u.l->n; i++)
        if ((i && !puts_(c, b, ", ")) || !duet__jv_write(c, line, b, v.u.l->v[i], true, depth + 1))
            return false;
    if (tuple && v.u.l->n == 1 && !puts_(c, b, ","))
        return false;
    return puts_(c, b, tuple ? ")" : "]");
}

static bool write_dict(duet__jctx *c, int line, duet__buf *b, const duet__jdict *d, int depth)
{
    if (!puts_(c, b, "{"))
        return false;
    for (size_t i = 0; i < d->n; i++)
        if ((i && !puts_(c, b, ", ")) || !duet__jv_write(c, line, b, d->keys[i], true, depth + 1) ||
            !puts_(c, b, ": ") || !duet__jv_write(c, line, b, d->vals[i], true, depth + 1))
            return false;
    return puts_(c, b, "}");
}

bool duet__jv_write(duet__jctx *c, int line, duet__buf *b, duet__jv v, bool repr, int depth)
{
    char num[40];

    if (depth > DUET__VALUE_DEPTH)
        return duet__jerr(c, DUET_STATUS_CAPACITY, line, "value nested more than %d deep",
                          DUET__VALUE_DEPTH);
    switch (v.kind) {
    case DUET__JV_UNDEF:
        return repr ? puts_(c, b, "Undefined") : true;
    case DUET__JV_NONE:
        return puts_(c, b, "None");
    case DUET__JV_BOOL:
        return puts_(c, b, v.u.b ? "True" : "False");
    case DUET__JV_INT:
        snprintf(num, sizeof(num), "%lld", (long long)v.u.i);
        return puts_(c, b, num);
    case DUET__JV_FLOAT:
        duet__float_repr(v.u.f, num);
        return puts_(c, b, num);
    case DUET__JV_STR:
        return repr ? write_repr_str(c, b, v.u.s) : put(c, b, v.u.s->p, v.u.s->n);
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        return write_seq(c, line, b, v, depth);
    case DUET__JV_DICT:
        return write_dict(c, line, b, v.u.d, depth);
    default:
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "printing a %s is not supported",
                          duet__jv_type(v));
    }
}

bool duet__jv_to_str(duet__jctx *c, int line, duet__jv v, duet__jv *out)
{
    duet__buf b = {0};
    bool ok;

    if (v.kind == DUET__JV_STR) {
        *out = v;
        return true;
    }
    ok = duet__jv_write(c, line, &b, v, false, 0) && duet__jv_str(c, b.p ? b.p : "", b.n, out);
    free(b.p);
    return ok;
}

static bool json_str(duet__jctx *c, duet__buf *b, const duet__jstr *s)
{
    char esc[8];

    if (!put(c, b, "\"", 1))
        return false;
    for (size_t i = 0; i < s->n; i++) {
        unsigned char ch = (unsigned char)s->p[i];
        const char *e = ch == '"'    ? "\\\""
                        : ch == '\\' ? "\\\\"
                        : ch == '\n' ? "\\n"
                        : ch == '\r' ? "\\r"
                        : ch == '\t' ? "\\t"
                        : ch == '\b' ? "\\b"
                        : ch == '\f' ? "\\f"
                                     : NULL;

        if (!e && ch < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            e = esc;
        }
        if (!(e ? puts_(c, b, e) : put(c, b, (const char *)&ch, 1)))
            return false;
    }
    return put(c, b, "\"", 1);
}

/* A newline and LEVEL indents when pretty-printing, else nothing. */
static bool json_nl(duet__jctx *c, duet__buf *b, const duet__jstr *indent, int level)
{
    if (!indent)
        return true;
    if (!put(c, b, "\n", 1))
        return false;
    for (int i = 0; i < level; i++)
        if (!put(c, b, indent->p, indent->n))
            return false;
    return true;
}

static bool json_container(duet__jctx *c, int line, duet__buf *b, duet__jv v,
                           const duet__jstr *indent, int level)
{
    bool dict = v.kind == DUET__JV_DICT;
    size_t n = dict ? v.u.d->n : v.u.l->n;

    if (!dict && v.u.l->is_range)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "Object of type range is not JSON serializable");

    if (n == 0)
        return puts_(c, b, dict ? "{}" : "[]");
    if (!puts_(c, b, dict ? "{" : "["))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (i && !puts_(c, b, indent ? "," : ", "))
            return false;
        if (!json_nl(c, b, indent, level + 1))
            return false;
        if (dict) {
            duet__jv k = v.u.d->keys[i];

            if (k.kind != DUET__JV_STR)
                return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                                  "tojson of a dict with %s keys is not supported",
                                  duet__jv_type(k));
            if (!json_str(c, b, k.u.s) || !puts_(c, b, ": "))
                return false;
        }
        if (!duet__jv_json(c, line, b, dict ? v.u.d->vals[i] : v.u.l->v[i], indent, level + 1))
            return false;
    }
    return json_nl(c, b, indent, level) && puts_(c, b, dict ? "}" : "]");
}

bool duet__jv_json(duet__jctx *c, int line, duet__buf *b, duet__jv v, const duet__jstr *indent,
                   int level)
{
    char num[40];

    if (level > DUET__VALUE_DEPTH)
        return duet__jerr(c, DUET_STATUS_CAPACITY, line, "value nested more than %d deep",
                          DUET__VALUE_DEPTH);
    switch (v.kind) {
    case DUET__JV_NONE:
        return puts_(c, b, "null");
    case DUET__JV_BOOL:
        return puts_(c, b, v.u.b ? "true" : "false");
    case DUET__JV_INT:
        snprintf(num, sizeof(num), "%lld", (long long)v.u.i);
        return puts_(c, b, num);
    case DUET__JV_FLOAT:
        if (isnan(v.u.f) || isinf(v.u.f))
            return puts_(c, b, isnan(v.u.f) ? "NaN" : v.u.f < 0 ? "-Infinity" : "Infinity");
        duet__float_repr(v.u.f, num);
        return puts_(c, b, num);
    case DUET__JV_STR:
        return json_str(c, b, v.u.s);
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
    case DUET__JV_DICT:
        return json_container(c, line, b, v, indent, level);
    default:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "Object of type %s is not JSON serializable", duet__jv_type(v));
    }
}

/* ---- strings ------------------------------------------------------------------------------- */

const char *duet__memmem(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0)
        return hay;
    for (size_t i = 0; nn <= hn && i <= hn - nn; i++) {
        const char *p = memchr(hay + i, needle[0], hn - nn + 1 - i);

        if (!p)
            return NULL;
        i = (size_t)(p - hay);
        if (memcmp(p, needle, nn) == 0)
            return p;
    }
    return NULL;
}

size_t duet__jstr_chars(const duet__jstr *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++)
        n += ((unsigned char)s->p[i] & 0xc0) != 0x80;
    return n;
}

/* str.isspace() / str.split() / str.strip() whitespace. */
bool duet__py_space(uint32_t cp)
{
    if (cp <= 0x20)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}
