/*
 * The chat-template filters (jinja-int.h): value|name(args), with jinja2/filters.py's semantics,
 * and tojson as transformers defines it (json.dumps with ensure_ascii=False, sort_keys=False).
 *
 * Filters that return generators in Jinja2 (map, select, reverse of a list, ...) return lists
 * here: the same items wherever a template iterates, joins or counts them. A filter outside
 * this file's table is DUET_STATUS_UNSUPPORTED naming the line.
 */
#include "jinja-int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef bool (*filter_fn)(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out);

static bool to_s(duet__jctx *c, int line, duet__jv v, const duet__jstr **s)
{
    duet__jv sv;

    if (!duet__jv_to_str(c, line, v, &sv))
        return false;
    *s = sv.u.s;
    return true;
}

static bool from_buf(duet__jctx *c, int line, duet__buf *b, bool ok, duet__jv *out)
{
    ok = ok ? duet__jv_str(c, b->p ? b->p : "", b->n, out)
            : duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, line, "out of memory");
    free(b->p);
    return ok;
}

static bool f_case(duet__jctx *c, int line, duet__jv v, char mode, duet__jv *out)
{
    const duet__jstr *s;

    return to_s(c, line, v, &s) && duet__jinja_case(c, s, mode, out);
}

static bool f_trim(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jstr *s;

    return to_s(c, line, v, &s) &&
           duet__jinja_strip(c, line, s, duet__jarg(a, 0, "chars"), true, true, out);
}

static bool f_string(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)a;
    return duet__jv_to_str(c, line, v, out);
}

static bool f_safe(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)c, (void)line, (void)a;
    *out = v;
    return true;
}

static bool f_escape(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jstr *s;
    duet__buf b = {0};
    bool ok = true;

    (void)a;
    if (!to_s(c, line, v, &s))
        return false;
    for (size_t i = 0; ok && i < s->n; i++) {
        const char *e = s->p[i] == '&'    ? "&amp;"
                        : s->p[i] == '<'  ? "&lt;"
                        : s->p[i] == '>'  ? "&gt;"
                        : s->p[i] == '"'  ? "&#34;"
                        : s->p[i] == '\'' ? "&#39;"
                                          : NULL;

        ok = e ? duet__buf_add(&b, e, strlen(e)) : duet__buf_add(&b, s->p + i, 1);
    }
    return from_buf(c, line, &b, ok, out);
}

static bool f_length(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)a;
    switch (v.kind) {
    case DUET__JV_UNDEF:
        *out = duet__jv_int(0);
        return true;
    case DUET__JV_STR:
        *out = duet__jv_int((int64_t)duet__jstr_chars(v.u.s));
        return true;
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        *out = duet__jv_int((int64_t)v.u.l->n);
        return true;
    case DUET__JV_DICT:
        *out = duet__jv_int((int64_t)v.u.d->n);
        return true;
    default:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "object of type '%s' has no len()",
                          duet__jv_type(v));
    }
}

static bool f_default(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *def = duet__jarg(a, 0, "default_value"), *b = duet__jarg(a, 1, "boolean");
    bool use = v.kind == DUET__JV_UNDEF || (b && duet__jv_truthy(*b) && !duet__jv_truthy(v));

    (void)line;
    if (!use) {
        *out = v;
        return true;
    }
    if (def) {
        *out = *def;
        return true;
    }
    return duet__jv_str(c, "", 0, out);
}

static bool f_list(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    duet__jlist *l;

    (void)a;
    if (!duet__jinja_iter(c, line, v, &l) || !duet__jv_list(c, l->n, DUET__JV_LIST, out))
        return false;
    if (l->n)
        memcpy(out->u.l->v, l->v, l->n * sizeof(duet__jv));
    return true;
}

static bool f_first_last(duet__jctx *c, int line, duet__jv v, bool last, duet__jv *out)
{
    duet__jlist *l;

    if (!duet__jinja_iter(c, line, v, &l))
        return false;
    *out = l->n ? l->v[last ? l->n - 1 : 0] : duet__jv_undef();
    return true;
}

static bool f_first(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)a;
    return f_first_last(c, line, v, false, out);
}

static bool f_last(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)a;
    if (v.kind == DUET__JV_DICT)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "last of a dict is not supported");
    if (v.kind == DUET__JV_GEN) /* Jinja2 calls reversed() on it */
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "'generator' object is not reversible");
    return f_first_last(c, line, v, true, out);
}

static bool f_reverse(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    duet__jlist *l;
    duet__buf b = {0};
    bool ok = true;

    (void)a;
    if (!duet__jinja_iter(c, line, v, &l))
        return false;
    if (v.kind == DUET__JV_STR) {
        for (size_t i = l->n; ok && i > 0; i--)
            ok = duet__buf_add(&b, l->v[i - 1].u.s->p, l->v[i - 1].u.s->n);
        return from_buf(c, line, &b, ok, out);
    }
    /* reversed() of a list is an iterator; of a generator, Jinja2 makes a list */
    if (!duet__jv_list(c, l->n, v.kind == DUET__JV_GEN ? DUET__JV_LIST : DUET__JV_GEN, out))
        return false;
    for (size_t i = 0; i < l->n; i++)
        out->u.l->v[i] = l->v[l->n - 1 - i];
    return true;
}

static bool f_join(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *sep = duet__jarg(a, 0, "d"), *attr = duet__jarg(a, 1, "attribute");
    const duet__jstr *d = NULL;
    duet__jlist *l;
    duet__buf b = {0};
    bool ok = true;

    if (attr)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "join's attribute argument is not supported");
    if ((sep && !to_s(c, line, *sep, &d)) || !duet__jinja_iter(c, line, v, &l))
        return false;
    for (size_t i = 0; ok && i < l->n; i++) {
        const duet__jstr *s;

        if (!to_s(c, line, l->v[i], &s)) {
            free(b.p);
            return false;
        }
        ok = (i == 0 || !d || duet__buf_add(&b, d->p, d->n)) && duet__buf_add(&b, s->p, s->n);
    }
    return from_buf(c, line, &b, ok, out);
}

static bool f_items(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    duet__jargs none = {0};

    (void)a;
    if (v.kind == DUET__JV_UNDEF)
        return duet__jv_list(c, 0, DUET__JV_LIST, out);
    if (v.kind != DUET__JV_DICT)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "can only get item pairs from a mapping");
    return duet__jinja_method(c, line, v, "items", &none, out);
}

static bool f_replace(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jstr *s;

    return to_s(c, line, v, &s) &&
           duet__jinja_replace(c, line, s, duet__jarg(a, 0, "old"), duet__jarg(a, 1, "new"),
                               duet__jarg(a, 2, "count"), out);
}

/* ---- numbers ------------------------------------------------------------------------------- */

/* Python's float(str): surrounding whitespace, inf / nan, no hex. */
static bool parse_float(const duet__jstr *s, double *f)
{
    char buf[128], *end;
    size_t b = 0, e = s->n, k = 0;

    while (b < e && duet__py_space((unsigned char)s->p[b]))
        b++;
    while (e > b && duet__py_space((unsigned char)s->p[e - 1]))
        e--;
    if (e == b || e - b >= sizeof(buf))
        return false;
    for (size_t i = b; i < e; i++) {
        if (s->p[i] == 'x' || s->p[i] == 'X' || (s->p[i] == '_' && (i == b || i + 1 == e)))
            return false;
        if (s->p[i] != '_')
            buf[k++] = s->p[i];
    }
    buf[k] = '\0';
    errno = 0;
    *f = strtod(buf, &end);
    return *end == '\0';
}

static bool parse_int(const duet__jstr *s, int64_t *i)
{
    char buf[64], *end;
    size_t b = 0, e = s->n, k = 0;

    while (b < e && duet__py_space((unsigned char)s->p[b]))
        b++;
    while (e > b && duet__py_space((unsigned char)s->p[e - 1]))
        e--;
    if (e == b || e - b >= sizeof(buf))
        return false;
    for (size_t i2 = b; i2 < e; i2++) {
        char ch = s->p[i2];

        if (!((ch >= '0' && ch <= '9') || ((ch == '-' || ch == '+') && i2 == b) ||
              (ch == '_' && i2 > b && i2 + 1 < e)))
            return false;
        if (ch != '_')
            buf[k++] = ch;
    }
    buf[k] = '\0';
    errno = 0;
    *i = strtoll(buf, &end, 10);
    return *end == '\0' && errno == 0 && end != buf;
}

static bool f_int(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *def = duet__jarg(a, 0, "default"), *base = duet__jarg(a, 1, "base");
    double f;
    int64_t i;

    if (base && !(base->kind == DUET__JV_INT && base->u.i == 10))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "int's base is not supported");
    if (v.kind == DUET__JV_INT || v.kind == DUET__JV_BOOL) {
        *out = duet__jv_int(v.kind == DUET__JV_BOOL ? v.u.b : v.u.i);
        return true;
    }
    if (v.kind == DUET__JV_STR && parse_int(v.u.s, &i)) {
        *out = duet__jv_int(i);
        return true;
    }
    if ((v.kind == DUET__JV_FLOAT && (f = v.u.f, true)) ||
        (v.kind == DUET__JV_STR && parse_float(v.u.s, &f))) {
        if (isinf(f) || fabs(f) >= 9.2e18)
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "int of %g is not supported", f);
        if (!isnan(f)) {
            *out = duet__jv_int((int64_t)f);
            return true;
        }
    }
    *out = def ? *def : duet__jv_int(0);
    return true;
}

static bool f_float(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *def = duet__jarg(a, 0, "default");
    double f;

    (void)c, (void)line;
    if (duet__jv_is_num(v))
        *out = duet__jv_float(duet__jv_num(v));
    else if (v.kind == DUET__JV_STR && parse_float(v.u.s, &f))
        *out = duet__jv_float(f);
    else
        *out = def ? *def : duet__jv_float(0.0);
    return true;
}

static bool f_abs(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    (void)a;
    if (v.kind == DUET__JV_FLOAT) {
        *out = duet__jv_float(fabs(v.u.f));
        return true;
    }
    if ((v.kind != DUET__JV_INT && v.kind != DUET__JV_BOOL) || v.u.i == INT64_MIN)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "bad operand type for abs(): '%s'",
                          duet__jv_type(v));
    *out = duet__jv_int(v.kind == DUET__JV_BOOL ? v.u.b : llabs(v.u.i));
    return true;
}

static bool f_round(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *prec = duet__jarg(a, 0, "precision"), *method = duet__jarg(a, 1, "method");
    int64_t p = prec && prec->kind == DUET__JV_INT ? prec->u.i : 0;
    char buf[512];
    double f;

    if ((prec && prec->kind != DUET__JV_INT) || p < 0 || p > 100 ||
        (method && !(method->kind == DUET__JV_STR && strcmp(method->u.s->p, "common") == 0)))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "round with these arguments is not supported");
    if (v.kind == DUET__JV_INT || v.kind == DUET__JV_BOOL) {
        *out = duet__jv_int(v.kind == DUET__JV_BOOL ? v.u.b : v.u.i);
        return true;
    }
    if (v.kind != DUET__JV_FLOAT)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "round of a %s", duet__jv_type(v));
    if (isnan(v.u.f) || isinf(v.u.f) || fabs(v.u.f) > 1e300) {
        *out = v;
        return true;
    }
    snprintf(buf, sizeof(buf), "%.*f", (int)p, v.u.f); /* exact value, ties to even */
    f = strtod(buf, NULL);
    *out = duet__jv_float(f == 0 ? copysign(0.0, v.u.f) : f);
    return true;
}

/* ---- tojson -------------------------------------------------------------------------------- */

static bool f_tojson(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *indent = duet__jarg(a, 1, "indent"), *ascii = duet__jarg(a, 0, "ensure_ascii");
    const duet__jv *sep = duet__jarg(a, 2, "separators"), *sort = duet__jarg(a, 3, "sort_keys");
    const duet__jstr *ind = NULL;
    char spaces[64];
    duet__jv iv;
    duet__buf b = {0};

    if (a->npos == 1 && a->nkw == 0) { /* tojson(2): jinja's own signature has indent first */
        indent = &a->pos[0];
        ascii = NULL;
    }
    if ((ascii && duet__jv_truthy(*ascii)) || (sep && sep->kind != DUET__JV_NONE) ||
        (sort && duet__jv_truthy(*sort)))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "tojson's ensure_ascii, separators and sort_keys are not supported");
    if (indent && indent->kind == DUET__JV_INT) {
        int64_t n = indent->u.i < 0 ? 0 : indent->u.i > 60 ? 60 : indent->u.i;

        memset(spaces, ' ', (size_t)n);
        if (!duet__jv_str(c, spaces, (size_t)n, &iv))
            return false;
        ind = iv.u.s;
    } else if (indent && indent->kind == DUET__JV_STR) {
        ind = indent->u.s;
    } else if (indent && indent->kind != DUET__JV_NONE) {
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "tojson's indent must be an int");
    }
    if (!duet__jv_json(c, line, &b, v, ind, 0)) {
        free(b.p);
        return false;
    }
    return from_buf(c, line, &b, true, out);
}

/* A line break of Python's str.splitlines other than \n: \r, \v, \f, U+001C..U+001E, U+0085,
 * U+2028, U+2029. */
static bool other_line_break(const duet__jstr *s)
{
    for (size_t i = 0; i < s->n; i++) {
        unsigned char ch = (unsigned char)s->p[i];

        if (ch == '\r' || ch == '\v' || ch == '\f' || (ch >= 0x1c && ch <= 0x1e) ||
            (ch == 0xc2 && i + 1 < s->n && (unsigned char)s->p[i + 1] == 0x85) ||
            (ch == 0xe2 && i + 2 < s->n && (unsigned char)s->p[i + 1] == 0x80 &&
             ((unsigned char)s->p[i + 2] == 0xa8 || (unsigned char)s->p[i + 2] == 0xa9)))
            return true;
    }
    return false;
}

static bool f_indent(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *w = duet__jarg(a, 0, "width"), *first = duet__jarg(a, 1, "first"),
                   *blank = duet__jarg(a, 2, "blank");
    const duet__jstr *s;
    duet__jv ind;
    duet__buf b = {0};
    bool ok = true;
    char sp[64];

    if (!to_s(c, line, v, &s))
        return false;
    if (w && w->kind == DUET__JV_STR) {
        ind = *w;
    } else {
        int64_t n = w && w->kind == DUET__JV_INT ? w->u.i : 4;

        if (n < 0 || n > 60 || (w && w->kind != DUET__JV_INT))
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "indent width not supported");
        memset(sp, ' ', (size_t)n);
        if (!duet__jv_str(c, sp, (size_t)n, &ind))
            return false;
    }
    if (other_line_break(s))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "indent of text with line breaks other than \\n is not supported");
    /* Jinja2's do_indent splits S + "\n" into lines, that is S at every \n: the lines after the
     * first get the indent, only the non-empty ones unless BLANK; FIRST indents the first too */
    if (first && duet__jv_truthy(*first))
        ok = duet__buf_add(&b, ind.u.s->p, ind.u.s->n);
    for (size_t i = 0; ok && i < s->n; i++) {
        ok = duet__buf_add(&b, s->p + i, 1);
        if (ok && s->p[i] == '\n' &&
            ((blank && duet__jv_truthy(*blank)) || (i + 1 < s->n && s->p[i + 1] != '\n')))
            ok = duet__buf_add(&b, ind.u.s->p, ind.u.s->n);
    }
    return from_buf(c, line, &b, ok, out);
}

/* ---- select / reject / map ----------------------------------------------------------------- */

/* Item's attribute NAME, dotted names and integer parts as jinja2's make_attrgetter. */
static bool attr_path(duet__jctx *c, int line, duet__jv item, const duet__jstr *name, duet__jv *out)
{
    size_t b = 0;

    *out = item;
    while (b <= name->n) {
        const char *dot = memchr(name->p + b, '.', name->n - b);
        size_t e = dot ? (size_t)(dot - name->p) : name->n;
        duet__jv key;

        if (!duet__jv_str(c, name->p + b, e - b, &key))
            return false;
        if (e > b && name->p[b] >= '0' && name->p[b] <= '9')
            key = duet__jv_int(strtoll(key.u.s->p, NULL, 10));
        if (out->kind == DUET__JV_UNDEF)
            return true;
        if (!duet__jinja_getitem(c, line, *out, key, out))
            return false;
        b = e + 1;
    }
    return true;
}

/* select / reject (ATTR false) and selectattr / rejectattr (ATTR true). */
static bool select_items(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, bool attr,
                         bool keep, duet__jv *out)
{
    size_t first_arg = attr ? 1 : 0, k = 0;
    const duet__jv *an = attr ? duet__jarg(a, 0, NULL) : NULL, *tn = duet__jarg(a, first_arg, NULL);
    duet__jargs targs = {0};
    duet__jlist *l;

    if ((attr && (!an || an->kind != DUET__JV_STR)) || (tn && tn->kind != DUET__JV_STR) || a->nkw)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "select / reject with these arguments are not supported");
    if (a->npos > first_arg + 1) {
        targs.pos = a->pos + first_arg + 1;
        targs.npos = a->npos - first_arg - 1;
    }
    if (!duet__jinja_iter(c, line, v, &l) || !duet__jv_list(c, l->n, DUET__JV_GEN, out))
        return false;
    for (size_t i = 0; i < l->n; i++) {
        duet__jv x = l->v[i];
        bool r;

        if (attr && !attr_path(c, line, x, an->u.s, &x))
            return false;
        if (tn) {
            if (!duet__jinja_test(c, line, tn->u.s->p, x, &targs, &r))
                return false;
        } else {
            r = duet__jv_truthy(x);
        }
        if (r == keep)
            out->u.l->v[k++] = l->v[i];
    }
    out->u.l->n = k;
    return true;
}

static bool f_select(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    return select_items(c, line, v, a, false, true, out);
}

static bool f_reject(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    return select_items(c, line, v, a, false, false, out);
}

static bool f_selectattr(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    return select_items(c, line, v, a, true, true, out);
}

static bool f_rejectattr(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    return select_items(c, line, v, a, true, false, out);
}

static bool f_map(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *attr = duet__jarg(a, 99, "attribute"), *def = duet__jarg(a, 99, "default");
    const duet__jv *fname = a->npos ? &a->pos[0] : NULL;
    duet__jargs fargs = {0};
    duet__jlist *l;

    if ((!attr && !fname) || (attr && (attr->kind != DUET__JV_STR || a->npos)) ||
        (fname && (fname->kind != DUET__JV_STR || a->nkw)))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "map with these arguments is not supported");
    if (fname) {
        fargs.pos = a->pos + 1;
        fargs.npos = a->npos - 1;
    }
    if (!duet__jinja_iter(c, line, v, &l) || !duet__jv_list(c, l->n, DUET__JV_GEN, out))
        return false;
    for (size_t i = 0; i < l->n; i++) {
        duet__jv *x = &out->u.l->v[i];

        if (attr) {
            if (!attr_path(c, line, l->v[i], attr->u.s, x))
                return false;
            if (x->kind == DUET__JV_UNDEF && def)
                *x = *def;
        } else if (!duet__jinja_filter(c, line, fname->u.s->p, l->v[i], &fargs, x)) {
            return false;
        }
    }
    return true;
}

static bool f_sum(duet__jctx *c, int line, duet__jv v, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *attr = duet__jarg(a, 0, "attribute"), *start = duet__jarg(a, 1, "start");
    duet__jlist *l;
    duet__jv acc = start ? *start : duet__jv_int(0);

    if (attr)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "sum's attribute argument is not supported");
    if (!duet__jinja_iter(c, line, v, &l))
        return false;
    for (size_t i = 0; i < l->n; i++) {
        if (!duet__jv_is_num(acc) || !duet__jv_is_num(l->v[i]))
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "sum of non-numbers");
        if (acc.kind == DUET__JV_FLOAT || l->v[i].kind == DUET__JV_FLOAT)
            acc = duet__jv_float(duet__jv_num(acc) + duet__jv_num(l->v[i]));
        else if (__builtin_add_overflow(acc.kind == DUET__JV_BOOL ? acc.u.b : acc.u.i,
                                        l->v[i].kind == DUET__JV_BOOL ? l->v[i].u.b : l->v[i].u.i,
                                        &acc.u.i))
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "sum beyond 64 bits");
        else
            acc.kind = DUET__JV_INT;
    }
    *out = acc;
    return true;
}

/* The case filters have no function of their own: f_case with their mode. */
static const struct {
    const char *name;
    filter_fn fn; /* NULL: f_case(mode) */
    char mode;
} filters[] = {
    {"abs", f_abs, 0},         {"capitalize", NULL, 'c'},
    {"count", f_length, 0},    {"d", f_default, 0},
    {"default", f_default, 0}, {"e", f_escape, 0},
    {"escape", f_escape, 0},   {"first", f_first, 0},
    {"float", f_float, 0},     {"indent", f_indent, 0},
    {"int", f_int, 0},         {"items", f_items, 0},
    {"join", f_join, 0},       {"last", f_last, 0},
    {"length", f_length, 0},   {"list", f_list, 0},
    {"lower", NULL, 'l'},      {"map", f_map, 0},
    {"reject", f_reject, 0},   {"rejectattr", f_rejectattr, 0},
    {"replace", f_replace, 0}, {"reverse", f_reverse, 0},
    {"round", f_round, 0},     {"safe", f_safe, 0},
    {"select", f_select, 0},   {"selectattr", f_selectattr, 0},
    {"string", f_string, 0},   {"sum", f_sum, 0},
    {"title", NULL, 'j'},      {"tojson", f_tojson, 0},
    {"trim", f_trim, 0},       {"upper", NULL, 'u'},
};

bool duet__jinja_filter(duet__jctx *c, int line, const char *name, duet__jv v,
                        const duet__jargs *args, duet__jv *out)
{
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        if (strcmp(filters[i].name, name) == 0)
            return filters[i].fn ? filters[i].fn(c, line, v, args, out)
                                 : f_case(c, line, v, filters[i].mode, out);
    return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "filter '%s' is not supported", name);
}
