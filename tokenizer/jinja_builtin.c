/*
 * The chat-template builtins other than filters (jinja-int.h): attribute and item lookup with
 * Jinja2's rules, iteration, the methods of str / dict / list / loop that templates call, the
 * tests (x is defined, ...) and the global functions (range, namespace, dict, raise_exception,
 * strftime_now).
 *
 * Lookup follows jinja2.Environment.getattr / getitem: "d.key" is the attribute when the type
 * has one (d.items is the method), else the item; "d['key']" is the item, else the attribute;
 * a miss is undefined. Strings are indexed by code point, as Python's are. A Python method or
 * attribute that is not implemented here is DUET_STATUS_UNSUPPORTED naming the line, so a
 * template never silently gets an undefined where Jinja2 has a value.
 */
#include "jinja-int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#define DUET__MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

const duet__jv *duet__jarg(const duet__jargs *a, size_t i, const char *name)
{
    if (i < a->npos)
        return &a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (strcmp(a->kwname[k]->p, name) == 0)
            return &a->kw[k];
    return NULL;
}

static bool in_list(const char *name, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

static const char *const str_methods[] = {
    "capitalize",   "casefold",    "center",    "count",      "encode",       "endswith",
    "expandtabs",   "find",        "format",    "format_map", "index",        "isalnum",
    "isalpha",      "isascii",     "isdecimal", "isdigit",    "isidentifier", "islower",
    "isnumeric",    "isprintable", "isspace",   "istitle",    "isupper",      "join",
    "ljust",        "lower",       "lstrip",    "maketrans",  "partition",    "removeprefix",
    "removesuffix", "replace",     "rfind",     "rindex",     "rjust",        "rpartition",
    "rsplit",       "rstrip",      "split",     "splitlines", "startswith",   "strip",
    "swapcase",     "title",       "translate", "upper",      "zfill",        NULL};
static const char *const dict_methods[] = {"clear",      "copy",   "fromkeys", "get",
                                           "items",      "keys",   "pop",      "popitem",
                                           "setdefault", "update", "values",   NULL};
static const char *const list_methods[] = {"append", "clear",   "copy",   "count",
                                           "extend", "index",   "insert", "pop",
                                           "remove", "reverse", "sort",   NULL};
static const char *const num_attrs[] = {
    "real",       "imag",      "conjugate", "numerator",  "denominator",
    "bit_length", "bit_count", "to_bytes",  "from_bytes", "as_integer_ratio",
    "is_integer", "hex",       "fromhex",   NULL};

bool duet__jinja_is_method(duet__jv obj, const char *name)
{
    switch (obj.kind) {
    case DUET__JV_STR:
        return in_list(name, str_methods);
    case DUET__JV_DICT:
        return in_list(name, dict_methods);
    case DUET__JV_LIST:
        return in_list(name, list_methods);
    case DUET__JV_TUPLE:
        return strcmp(name, "count") == 0 || strcmp(name, "index") == 0;
    case DUET__JV_LOOP:
        return strcmp(name, "cycle") == 0 || strcmp(name, "changed") == 0;
    default:
        return false;
    }
}

static bool method_value(duet__jctx *c, duet__jv obj, const duet__jstr *name, duet__jv *out)
{
    duet__jmethod *m = duet__jalloc(c, sizeof(*m));

    if (!m)
        return false;
    m->obj = obj;
    m->name = name;
    out->kind = DUET__JV_METHOD;
    out->u.meth = m;
    return true;
}

static bool loop_attr(duet__jctx *c, const duet__jloop *l, const char *name, duet__jv *out)
{
    size_t n = l->items->n, i = l->i;

    *out = duet__jv_undef();
    if (strcmp(name, "index") == 0)
        *out = duet__jv_int((int64_t)i + 1);
    else if (strcmp(name, "index0") == 0)
        *out = duet__jv_int((int64_t)i);
    else if (strcmp(name, "revindex") == 0)
        *out = duet__jv_int((int64_t)(n - i));
    else if (strcmp(name, "revindex0") == 0)
        *out = duet__jv_int((int64_t)(n - i - 1));
    else if (strcmp(name, "first") == 0)
        *out = duet__jv_bool(i == 0);
    else if (strcmp(name, "last") == 0)
        *out = duet__jv_bool(i + 1 == n);
    else if (strcmp(name, "length") == 0)
        *out = duet__jv_int((int64_t)n);
    else if (strcmp(name, "depth") == 0)
        *out = duet__jv_int(1); /* loops are not recursive here: always the first level */
    else if (strcmp(name, "depth0") == 0)
        *out = duet__jv_int(0);
    else if (strcmp(name, "previtem") == 0 && i > 0)
        *out = l->items->v[i - 1];
    else if (strcmp(name, "nextitem") == 0 && i + 1 < n)
        *out = l->items->v[i + 1];
    (void)c;
    return true;
}

bool duet__jinja_getattr(duet__jctx *c, int line, duet__jv v, const duet__jstr *name, duet__jv *out)
{
    duet__jv *found;

    if (duet__jinja_is_method(v, name->p))
        return method_value(c, v, name, out);
    switch (v.kind) {
    case DUET__JV_UNDEF:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "attribute '%s' of an undefined value", name->p);
    case DUET__JV_DICT:
    case DUET__JV_NS:
        found = duet__jdict_getn(v.u.d, name->p, name->n);
        *out = found ? *found : duet__jv_undef();
        return true;
    case DUET__JV_LOOP:
        return loop_attr(c, v.u.loop, name->p, out);
    case DUET__JV_BOOL:
    case DUET__JV_INT:
    case DUET__JV_FLOAT:
        if (in_list(name->p, num_attrs))
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                              "attribute '%s' of a number is not supported", name->p);
        break;
    case DUET__JV_MACRO:
    case DUET__JV_FUNC:
    case DUET__JV_METHOD:
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "attributes of a %s are not supported",
                          duet__jv_type(v));
    }
    *out = duet__jv_undef();
    return true;
}

/* The code point at index I (negative: from the end) of S, or false when out of range. */
static bool char_at(duet__jctx *c, const duet__jstr *s, int64_t i, duet__jv *out)
{
    int64_t n = (int64_t)duet__jstr_chars(s), k = 0;

    if (i < 0)
        i += n;
    if (i < 0 || i >= n) {
        *out = duet__jv_undef();
        return true;
    }
    for (size_t b = 0; b < s->n; b++) {
        if (((unsigned char)s->p[b] & 0xc0) == 0x80)
            continue;
        if (k++ == i) {
            size_t e = b + 1;

            while (e < s->n && ((unsigned char)s->p[e] & 0xc0) == 0x80)
                e++;
            return duet__jv_str(c, s->p + b, e - b, out);
        }
    }
    return true;
}

bool duet__jinja_getitem(duet__jctx *c, int line, duet__jv v, duet__jv key, duet__jv *out)
{
    bool int_key = key.kind == DUET__JV_INT || key.kind == DUET__JV_BOOL;
    int64_t i = key.kind == DUET__JV_BOOL ? key.u.b : key.u.i;
    duet__jv *found;

    *out = duet__jv_undef();
    if (v.kind == DUET__JV_UNDEF)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "item of an undefined value");
    if (v.kind == DUET__JV_DICT && (found = duet__jdict_get(v.u.d, key))) {
        *out = *found;
        return true;
    }
    if ((v.kind == DUET__JV_LIST || v.kind == DUET__JV_TUPLE) && int_key) {
        if (i < 0)
            i += (int64_t)v.u.l->n;
        if (i >= 0 && i < (int64_t)v.u.l->n)
            *out = v.u.l->v[i];
        return true;
    }
    if (v.kind == DUET__JV_STR && int_key)
        return char_at(c, v.u.s, i, out);
    if (key.kind == DUET__JV_STR)
        return duet__jinja_getattr(c, line, v, key.u.s, out);
    return true;
}

bool duet__jinja_iter(duet__jctx *c, int line, duet__jv v, duet__jlist **out)
{
    duet__jv l;
    size_t k = 0;

    switch (v.kind) {
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        *out = v.u.l;
        return true;
    case DUET__JV_GEN:
        /* Jinja2 would see it exhausted (or partly, after |first): refused, not guessed */
        if (v.u.l->used)
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                              "the result of map / select / reject / reverse is a generator in "
                              "Jinja2 and is used a second time here (add |list where it is made)");
        v.u.l->used = true;
        *out = v.u.l;
        return true;
    case DUET__JV_UNDEF:
        return duet__jv_list(c, 0, DUET__JV_LIST, &l) && (*out = l.u.l);
    case DUET__JV_DICT:
        if (!duet__jv_list(c, v.u.d->n, DUET__JV_LIST, &l))
            return false;
        if (v.u.d->n)
            memcpy(l.u.l->v, v.u.d->keys, v.u.d->n * sizeof(duet__jv));
        *out = l.u.l;
        return true;
    case DUET__JV_STR:
        if (!duet__jv_list(c, duet__jstr_chars(v.u.s), DUET__JV_LIST, &l))
            return false;
        for (size_t b = 0; b < v.u.s->n;) {
            size_t e = b + 1;

            while (e < v.u.s->n && ((unsigned char)v.u.s->p[e] & 0xc0) == 0x80)
                e++;
            if (!duet__jv_str(c, v.u.s->p + b, e - b, &l.u.l->v[k++]))
                return false;
            b = e;
        }
        *out = l.u.l;
        return true;
    default:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "'%s' object is not iterable",
                          duet__jv_type(v));
    }
}

/* ---- str methods --------------------------------------------------------------------------- */

static bool str_arg(duet__jctx *c, int line, const duet__jv *v, const char *what)
{
    if (v && v->kind == DUET__JV_STR)
        return true;
    return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "%s must be a string, not %s", what,
                      v ? duet__jv_type(*v) : "nothing");
}

static bool affix(const duet__jstr *s, const duet__jstr *a, bool end)
{
    return a->n <= s->n && memcmp(s->p + (end ? s->n - a->n : 0), a->p, a->n) == 0;
}

static bool m_startswith(duet__jctx *c, int line, const duet__jstr *s, const duet__jargs *a,
                         bool end, duet__jv *out)
{
    const duet__jv *p = duet__jarg(a, 0, NULL);
    bool r = false;

    if (a->npos != 1 || a->nkw)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "startswith / endswith take one argument here");
    if (p->kind == DUET__JV_TUPLE) {
        for (size_t i = 0; i < p->u.l->n; i++) {
            if (!str_arg(c, line, &p->u.l->v[i], "a prefix"))
                return false;
            r = r || affix(s, p->u.l->v[i].u.s, end);
        }
    } else {
        if (!str_arg(c, line, p, "a prefix"))
            return false;
        r = affix(s, p->u.s, end);
    }
    *out = duet__jv_bool(r);
    return true;
}

/* Whether the code point at S is one of CHARS (NULL: Python whitespace). */
static bool strip_char(const char *s, size_t *len, const duet__jstr *chars)
{
    uint32_t cp = duet__utf8_get(s, len);

    if (!chars)
        return duet__py_space(cp);
    for (size_t i = 0; i < chars->n;) {
        size_t l;

        if (duet__utf8_get(chars->p + i, &l) == cp)
            return true;
        i += l;
    }
    return false;
}

bool duet__jinja_strip(duet__jctx *c, int line, const duet__jstr *s, const duet__jv *chars,
                       bool left, bool right, duet__jv *out)
{
    const duet__jstr *set = NULL;
    size_t b = 0, e = s->n, len;

    if (chars && chars->kind != DUET__JV_NONE) {
        if (!str_arg(c, line, chars, "strip's argument"))
            return false;
        set = chars->u.s;
    }
    while (left && b < e && strip_char(s->p + b, &len, set))
        b += len;
    while (right && e > b) {
        size_t k = e - 1;

        while (k > b && ((unsigned char)s->p[k] & 0xc0) == 0x80)
            k--;
        if (!strip_char(s->p + k, &len, set))
            break;
        e = k;
    }
    return duet__jv_str(c, s->p + b, e - b, out);
}

static bool push(duet__jctx *c, duet__jv *list, size_t *cap, duet__jv v)
{
    duet__jlist *l = list->u.l;

    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        duet__jv *nv = duet__jalloc(c, ncap * sizeof(*nv));

        if (!nv)
            return false;
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof(*nv));
        l->v = nv;
        *cap = ncap;
    }
    l->v[l->n++] = v;
    return true;
}

/* str.split(): on runs of whitespace (SEP NULL) or on SEP, at most MAX splits (-1: all). */
static bool split_str(duet__jctx *c, const duet__jstr *s, const duet__jstr *sep, int64_t max,
                      duet__jv *out)
{
    size_t cap = 0, i = 0, len;
    duet__jv piece;

    if (!duet__jv_list(c, 0, DUET__JV_LIST, out))
        return false;
    if (sep) {
        size_t start = 0;
        const char *hit;

        while (max != 0 && (hit = duet__memmem(s->p + start, s->n - start, sep->p, sep->n))) {
            if (!duet__jv_str(c, s->p + start, (size_t)(hit - s->p) - start, &piece) ||
                !push(c, out, &cap, piece))
                return false;
            start = (size_t)(hit - s->p) + sep->n;
            max--;
        }
        return duet__jv_str(c, s->p + start, s->n - start, &piece) && push(c, out, &cap, piece);
    }
    while (i < s->n) {
        size_t b;

        while (i < s->n && duet__py_space(duet__utf8_get(s->p + i, &len)))
            i += len;
        if (i >= s->n)
            break;
        b = i;
        if (max == 0) /* the rest as it is, trailing whitespace included */
            return duet__jv_str(c, s->p + b, s->n - b, &piece) && push(c, out, &cap, piece);
        while (i < s->n && !duet__py_space(duet__utf8_get(s->p + i, &len)))
            i += len;
        if (!duet__jv_str(c, s->p + b, i - b, &piece) || !push(c, out, &cap, piece))
            return false;
        max--;
    }
    return true;
}

static bool m_split(duet__jctx *c, int line, const duet__jstr *s, const duet__jargs *a,
                    duet__jv *out)
{
    const duet__jv *sep = duet__jarg(a, 0, "sep"), *max = duet__jarg(a, 1, "maxsplit");
    int64_t m = -1;

    if (max && max->kind != DUET__JV_INT)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "maxsplit must be an integer");
    if (max)
        m = max->u.i < 0 ? -1 : max->u.i;
    if (sep && sep->kind != DUET__JV_NONE) {
        if (!str_arg(c, line, sep, "split's separator"))
            return false;
        if (sep->u.s->n == 0)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "empty separator");
        return split_str(c, s, sep->u.s, m, out);
    }
    return split_str(c, s, NULL, m, out);
}

bool duet__jinja_replace(duet__jctx *c, int line, const duet__jstr *s, const duet__jv *old,
                         const duet__jv *new_, const duet__jv *count, duet__jv *out)
{
    duet__buf b = {0};
    int64_t left = count && count->kind == DUET__JV_INT && count->u.i >= 0 ? count->u.i : -1;
    size_t i = 0;
    bool ok = true;

    if (!str_arg(c, line, old, "replace's first argument") ||
        !str_arg(c, line, new_, "replace's second argument"))
        return false;
    if (old->u.s->n == 0)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "replacing the empty string is not supported");
    while (ok && i <= s->n) {
        const char *hit =
            left != 0 ? duet__memmem(s->p + i, s->n - i, old->u.s->p, old->u.s->n) : NULL;
        size_t end = hit ? (size_t)(hit - s->p) : s->n;

        ok = duet__buf_add(&b, s->p + i, end - i) &&
             (!hit || duet__buf_add(&b, new_->u.s->p, new_->u.s->n));
        if (!hit)
            break;
        i = end + old->u.s->n;
        left--;
    }
    ok = ok ? duet__jv_str(c, b.p ? b.p : "", b.n, out)
            : duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, line, "out of memory");
    free(b.p);
    return ok;
}

/* Code points whose Python case mapping is not one-to-one (SpecialCasing.txt: ß -> SS, ligatures,
 * Greek with iota subscript, İ) or depends on context (final sigma). */
static bool special_casing(uint32_t cp)
{
    return cp == 0xdf || cp == 0x130 || cp == 0x149 || cp == 0x1f0 || cp == 0x390 || cp == 0x3a3 ||
           cp == 0x3b0 || cp == 0x587 || (cp >= 0x1e96 && cp <= 0x1e9e) ||
           (cp >= 0x1f50 && cp <= 0x1f56) || (cp >= 0x1f80 && cp <= 0x1fff) ||
           (cp >= 0xfb00 && cp <= 0xfb17);
}

static bool is_cased(uint32_t cp)
{
    return utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp ||
           utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
}

bool duet__jinja_case(duet__jctx *c, const duet__jstr *s, char mode, duet__jv *out)
{
    char *p = duet__jalloc(c, s->n * 2 + 4);
    size_t o = 0, len;
    bool prev_cased = false, first = true;

    if (!p)
        return false;
    for (size_t i = 0; i < s->n; i += len) {
        uint32_t cp = duet__utf8_get(s->p + i, &len), m;
        bool upper = mode == 'u' || (mode == 't' && !prev_cased) || (mode == 'c' && first) ||
                     (mode == 'j' && first);

        if (special_casing(cp))
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, 0,
                              "case mapping of U+%04X is not supported", (unsigned)cp);
        if (upper && (mode == 't' || mode == 'c'))
            m = (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp);
        else if (upper)
            m = (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp);
        else
            m = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
        if (mode == 't')
            prev_cased = is_cased(cp);
        first = mode == 'j' && (duet__py_space(cp) || (cp && cp < 128 && strchr("-({[<", (int)cp)));
        o += duet__utf8_put(p + o, m);
    }
    return duet__jv_str(c, p, o, out);
}

static bool m_join(duet__jctx *c, int line, const duet__jstr *sep, const duet__jargs *a,
                   duet__jv *out)
{
    const duet__jv *it = duet__jarg(a, 0, NULL);
    duet__jlist *items;
    duet__buf b = {0};
    bool ok = true;

    if (!it || !duet__jinja_iter(c, line, *it, &items))
        return it ? false : duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "join needs a list");
    for (size_t i = 0; ok && i < items->n; i++) {
        if (items->v[i].kind != DUET__JV_STR) {
            free(b.p);
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "sequence item %zu: expected str instance, %s found", i,
                              duet__jv_type(items->v[i]));
        }
        ok = (i == 0 || duet__buf_add(&b, sep->p, sep->n)) &&
             duet__buf_add(&b, items->v[i].u.s->p, items->v[i].u.s->n);
    }
    ok = ok ? duet__jv_str(c, b.p ? b.p : "", b.n, out)
            : duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, line, "out of memory");
    free(b.p);
    return ok;
}

/* str.format with "{}", "{0}" and "{name}" fields and no format specs. */
static bool m_format(duet__jctx *c, int line, const duet__jstr *s, const duet__jargs *a,
                     duet__jv *out)
{
    duet__buf b = {0};
    size_t auto_i = 0;
    bool ok = true;

    for (size_t i = 0; ok && i < s->n; i++) {
        const char *close;
        const duet__jv *v = NULL;
        size_t fn;

        if ((s->p[i] == '{' || s->p[i] == '}') && i + 1 < s->n && s->p[i + 1] == s->p[i]) {
            ok = duet__buf_add(&b, s->p + i++, 1);
            continue;
        }
        if (s->p[i] != '{') {
            ok = s->p[i] != '}' && duet__buf_add(&b, s->p + i, 1);
            if (s->p[i] == '}')
                break;
            continue;
        }
        close = memchr(s->p + i, '}', s->n - i);
        fn = close ? (size_t)(close - s->p) - i - 1 : 0;
        if (close && fn == 0)
            v = duet__jarg(a, auto_i++, NULL);
        else if (close && fn == 1 && s->p[i + 1] >= '0' && s->p[i + 1] <= '9')
            v = duet__jarg(a, (size_t)(s->p[i + 1] - '0'), NULL);
        else if (close && !memchr(s->p + i + 1, ':', fn) && !memchr(s->p + i + 1, '!', fn) &&
                 !memchr(s->p + i + 1, '.', fn) && !memchr(s->p + i + 1, '[', fn)) {
            for (size_t k = 0; k < a->nkw && !v; k++)
                if (a->kwname[k]->n == fn && memcmp(a->kwname[k]->p, s->p + i + 1, fn) == 0)
                    v = &a->kw[k];
        }
        if (!v) {
            free(b.p);
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                              "this str.format field is not supported");
        }
        ok = duet__jv_write(c, line, &b, *v, false, 0);
        i += fn + 1;
    }
    if (!ok) {
        free(b.p);
        return c->st != DUET_STATUS_OK ? false
                                       : duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                                                    "this str.format text is not supported");
    }
    ok = duet__jv_str(c, b.p ? b.p : "", b.n, out);
    free(b.p);
    return ok;
}

static bool m_find(duet__jctx *c, int line, const duet__jstr *s, const duet__jargs *a, bool count,
                   duet__jv *out)
{
    const duet__jv *sub = duet__jarg(a, 0, NULL);
    const char *hit;
    int64_t n = 0;
    size_t i = 0;

    if (a->npos != 1 || !str_arg(c, line, sub, "the substring"))
        return c->st == DUET_STATUS_OK
                   ? duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "find/count take one argument")
                   : false;
    if (sub->u.s->n == 0) {
        *out = duet__jv_int(count ? (int64_t)duet__jstr_chars(s) + 1 : 0);
        return true;
    }
    while ((hit = duet__memmem(s->p + i, s->n - i, sub->u.s->p, sub->u.s->n))) {
        if (!count) {
            duet__jstr prefix = {0};
            size_t chars = 0;

            for (const char *q = s->p; q < hit; q++)
                chars += ((unsigned char)*q & 0xc0) != 0x80;
            (void)prefix;
            *out = duet__jv_int((int64_t)chars);
            return true;
        }
        n++;
        i = (size_t)(hit - s->p) + sub->u.s->n;
    }
    *out = duet__jv_int(count ? n : -1);
    return true;
}

static bool str_method(duet__jctx *c, int line, const duet__jstr *s, const char *name,
                       const duet__jargs *a, duet__jv *out)
{
    if (strcmp(name, "startswith") == 0 || strcmp(name, "endswith") == 0)
        return m_startswith(c, line, s, a, name[0] == 'e', out);
    if (strcmp(name, "strip") == 0 || strcmp(name, "lstrip") == 0 || strcmp(name, "rstrip") == 0)
        return duet__jinja_strip(c, line, s, duet__jarg(a, 0, NULL), name[0] != 'r', name[0] != 'l',
                                 out);
    if (strcmp(name, "split") == 0)
        return m_split(c, line, s, a, out);
    if (strcmp(name, "replace") == 0)
        return duet__jinja_replace(c, line, s, duet__jarg(a, 0, NULL), duet__jarg(a, 1, NULL),
                                   duet__jarg(a, 2, NULL), out);
    if (strcmp(name, "upper") == 0 || strcmp(name, "lower") == 0 || strcmp(name, "title") == 0 ||
        strcmp(name, "capitalize") == 0)
        return duet__jinja_case(c, s, name[0] == 'c' ? 'c' : name[0] == 't' ? 't' : name[0], out);
    if (strcmp(name, "join") == 0)
        return m_join(c, line, s, a, out);
    if (strcmp(name, "format") == 0)
        return m_format(c, line, s, a, out);
    if (strcmp(name, "find") == 0 || strcmp(name, "count") == 0)
        return m_find(c, line, s, a, name[0] == 'c', out);
    return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "method str.%s is not supported", name);
}

/* ---- dict, list and loop methods ----------------------------------------------------------- */

static bool dict_method(duet__jctx *c, int line, duet__jdict *d, const char *name,
                        const duet__jargs *a, duet__jv *out)
{
    bool items = strcmp(name, "items") == 0, keys = strcmp(name, "keys") == 0;
    const duet__jv *k = duet__jarg(a, 0, NULL), *def = duet__jarg(a, 1, NULL);

    if (strcmp(name, "get") == 0) {
        duet__jv *v = k ? duet__jdict_get(d, *k) : NULL;

        if (!k)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "get needs a key");
        *out = v ? *v : def ? *def : duet__jv_none();
        return true;
    }
    if (!items && !keys && strcmp(name, "values") != 0)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "method dict.%s is not supported",
                          name);
    if (!duet__jv_list(c, d->n, DUET__JV_LIST, out))
        return false;
    for (size_t i = 0; i < d->n; i++) {
        if (!items) {
            out->u.l->v[i] = keys ? d->keys[i] : d->vals[i];
            continue;
        }
        if (!duet__jv_list(c, 2, DUET__JV_TUPLE, &out->u.l->v[i]))
            return false;
        out->u.l->v[i].u.l->v[0] = d->keys[i];
        out->u.l->v[i].u.l->v[1] = d->vals[i];
    }
    return true;
}

static bool list_method(duet__jctx *c, int line, const duet__jlist *l, const char *name,
                        const duet__jargs *a, duet__jv *out)
{
    const duet__jv *x = duet__jarg(a, 0, NULL);
    int64_t n = 0;

    if ((strcmp(name, "count") != 0 && strcmp(name, "index") != 0) || !x)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "method list.%s is not supported (lists are immutable here)", name);
    for (size_t i = 0; i < l->n; i++)
        if (duet__jv_eq(l->v[i], *x, 0)) {
            if (name[0] == 'i') {
                *out = duet__jv_int((int64_t)i);
                return true;
            }
            n++;
        }
    if (name[0] == 'i')
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "value is not in list");
    *out = duet__jv_int(n);
    return true;
}

bool duet__jinja_method(duet__jctx *c, int line, duet__jv obj, const char *name,
                        const duet__jargs *a, duet__jv *out)
{
    switch (obj.kind) {
    case DUET__JV_STR:
        return str_method(c, line, obj.u.s, name, a, out);
    case DUET__JV_DICT:
        return dict_method(c, line, obj.u.d, name, a, out);
    case DUET__JV_LIST:
    case DUET__JV_TUPLE:
        return list_method(c, line, obj.u.l, name, a, out);
    case DUET__JV_LOOP:
        if (strcmp(name, "cycle") == 0 && a->npos > 0 && a->nkw == 0) {
            *out = a->pos[obj.u.loop->i % a->npos];
            return true;
        }
        break;
    }
    return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "method %s.%s is not supported",
                      duet__jv_type(obj), name);
}

/* ---- tests --------------------------------------------------------------------------------- */

static bool test_compare(duet__jctx *c, int line, const char *name, duet__jv v,
                         const duet__jv *other, bool *out)
{
    static const char *const names[] = {"eq",       "equalto", "==", "ne", "!=", "lt",
                                        "lessthan", "<",       "le", "<=", "gt", "greaterthan",
                                        ">",        "ge",      ">=", NULL};
    static const char ops[] = "eeennllllggggg";
    int i = 0, cmp;

    while (names[i] && strcmp(names[i], name) != 0)
        i++;
    if (!names[i])
        return false;
    if (!other)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "test '%s' needs an argument",
                          name);
    if (ops[i] == 'e' || ops[i] == 'n') {
        *out = duet__jv_eq(v, *other, 0) == (ops[i] == 'e');
        return true;
    }
    if (!duet__jv_cmp(v, *other, 0, &cmp))
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "'%s' not supported between '%s' and '%s'", name, duet__jv_type(v),
                          duet__jv_type(*other));
    *out = cmp != 2 && (i < 10 ? (i < 8 ? cmp < 0 : cmp <= 0) : (i < 13 ? cmp > 0 : cmp >= 0));
    return true;
}

static bool test_number(duet__jctx *c, int line, const char *name, duet__jv v, const duet__jv *arg,
                        bool *out)
{
    int64_t n, d = 2;

    if (v.kind == DUET__JV_FLOAT)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "test '%s' on a float is not supported",
                          name);
    if (v.kind != DUET__JV_INT && v.kind != DUET__JV_BOOL)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "test '%s' needs a number, not %s",
                          name, duet__jv_type(v));
    n = v.kind == DUET__JV_BOOL ? v.u.b : v.u.i;
    if (name[0] == 'd') {
        if (!arg || arg->kind != DUET__JV_INT || arg->u.i == 0)
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                              "divisibleby needs a nonzero integer");
        d = arg->u.i;
    }
    *out = name[0] == 'o' ? n % 2 != 0 : n % d == 0;
    return true;
}

static bool test_kind(const char *name, duet__jv v, bool *out)
{
    int k = v.kind;

    if (strcmp(name, "defined") == 0)
        *out = k != DUET__JV_UNDEF;
    else if (strcmp(name, "undefined") == 0)
        *out = k == DUET__JV_UNDEF;
    else if (strcmp(name, "none") == 0)
        *out = k == DUET__JV_NONE;
    else if (strcmp(name, "string") == 0)
        *out = k == DUET__JV_STR;
    else if (strcmp(name, "number") == 0)
        *out = k == DUET__JV_INT || k == DUET__JV_FLOAT || k == DUET__JV_BOOL;
    else if (strcmp(name, "integer") == 0)
        *out = k == DUET__JV_INT;
    else if (strcmp(name, "float") == 0)
        *out = k == DUET__JV_FLOAT;
    else if (strcmp(name, "boolean") == 0)
        *out = k == DUET__JV_BOOL;
    else if (strcmp(name, "true") == 0 || strcmp(name, "false") == 0)
        *out = k == DUET__JV_BOOL && v.u.b == (name[0] == 't');
    else if (strcmp(name, "mapping") == 0)
        *out = k == DUET__JV_DICT;
    else if (strcmp(name, "iterable") == 0 || strcmp(name, "sequence") == 0)
        *out = k == DUET__JV_STR || k == DUET__JV_LIST || k == DUET__JV_TUPLE ||
               k == DUET__JV_DICT || k == DUET__JV_UNDEF ||
               ((k == DUET__JV_LOOP || k == DUET__JV_GEN) && name[0] == 'i');
    else if (strcmp(name, "callable") == 0)
        *out = k == DUET__JV_MACRO || k == DUET__JV_FUNC || k == DUET__JV_METHOD;
    else
        return false;
    return true;
}

bool duet__jinja_test(duet__jctx *c, int line, const char *name, duet__jv v,
                      const duet__jargs *args, bool *out)
{
    const duet__jv *arg = duet__jarg(args, 0, NULL);
    duet__jv low;

    if (test_kind(name, v, out))
        return true;
    if (c->st != DUET_STATUS_OK || test_compare(c, line, name, v, arg, out))
        return c->st == DUET_STATUS_OK;
    if (strcmp(name, "even") == 0 || strcmp(name, "odd") == 0 || strcmp(name, "divisibleby") == 0)
        return test_number(c, line, name, v, arg, out);
    if (strcmp(name, "in") == 0) {
        if (!arg)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "test 'in' needs a list");
        if (arg->kind == DUET__JV_STR && v.kind == DUET__JV_STR)
            *out = duet__memmem(arg->u.s->p, arg->u.s->n, v.u.s->p, v.u.s->n) != NULL;
        else if (arg->kind == DUET__JV_DICT)
            *out = duet__jdict_get(arg->u.d, v) != NULL;
        else if (arg->kind == DUET__JV_LIST || arg->kind == DUET__JV_TUPLE) {
            *out = false;
            for (size_t i = 0; i < arg->u.l->n && !*out; i++)
                *out = duet__jv_eq(v, arg->u.l->v[i], 0);
        } else
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "test 'in' on a %s is not supported", duet__jv_type(*arg));
        return true;
    }
    if ((strcmp(name, "lower") == 0 || strcmp(name, "upper") == 0) && v.kind == DUET__JV_STR) {
        if (!duet__jinja_case(c, v.u.s, name[0] == 'l' ? 'l' : 'u', &low))
            return false;
        *out = duet__jv_eq(low, v, 0) &&
               (name[0] == 'l' ? duet__jinja_case(c, v.u.s, 'u', &low)
                               : duet__jinja_case(c, v.u.s, 'l', &low)) &&
               !duet__jv_eq(low, v, 0);
        return c->st == DUET_STATUS_OK;
    }
    if (strcmp(name, "sameas") == 0 && arg &&
        (v.kind <= DUET__JV_BOOL || arg->kind <= DUET__JV_BOOL)) {
        *out = v.kind == arg->kind && (v.kind != DUET__JV_BOOL || v.u.b == arg->u.b);
        return true;
    }
    return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "test '%s' is not supported", name);
}

/* ---- global functions ---------------------------------------------------------------------- */

static bool f_range(duet__jctx *c, int line, const duet__jargs *a, duet__jv *out)
{
    int64_t v[3] = {0, 0, 1}, n;

    if (a->npos < 1 || a->npos > 3 || a->nkw)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "range takes 1 to 3 integers");
    for (size_t i = 0; i < a->npos; i++) {
        if (a->pos[i].kind != DUET__JV_INT && a->pos[i].kind != DUET__JV_BOOL)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "range takes integers, not %s",
                              duet__jv_type(a->pos[i]));
        v[a->npos == 1 ? 1 : i] = a->pos[i].kind == DUET__JV_BOOL ? a->pos[i].u.b : a->pos[i].u.i;
    }
    if (v[2] == 0)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "range() arg 3 must not be zero");
    if ((v[2] > 0 && v[0] >= v[1]) || (v[2] < 0 && v[0] <= v[1]))
        n = 0;
    else if ((v[1] - v[0]) / v[2] >= DUET__MAX_RANGE)
        n = DUET__MAX_RANGE + 1;
    else
        n = ((v[1] - v[0]) + v[2] + (v[2] > 0 ? -1 : 1)) / v[2];
    if (n > DUET__MAX_RANGE)
        return duet__jerr(c, DUET_STATUS_CAPACITY, line,
                          "range too big, maximum size for range is %d", DUET__MAX_RANGE);
    if (!duet__jv_list(c, (size_t)n, DUET__JV_LIST, out))
        return false;
    for (int64_t i = 0; i < n; i++)
        out->u.l->v[i] = duet__jv_int(v[0] + i * v[2]);
    out->u.l->is_range = true;
    return true;
}

static bool f_dict(duet__jctx *c, int line, int kind, const duet__jargs *a, duet__jv *out)
{
    if (!duet__jv_dict(c, kind, out))
        return false;
    if (a->npos > 1 || (a->npos == 1 && a->pos[0].kind != DUET__JV_DICT))
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "namespace() / dict() take a dict and keyword arguments");
    for (size_t i = 0; a->npos && i < a->pos[0].u.d->n; i++)
        if (!duet__jdict_set(c, out->u.d, a->pos[0].u.d->keys[i], a->pos[0].u.d->vals[i]))
            return false;
    for (size_t i = 0; i < a->nkw; i++)
        if (!duet__jdict_set(c, out->u.d, (duet__jv){.kind = DUET__JV_STR, .u.s = a->kwname[i]},
                             a->kw[i]))
            return false;
    return true;
}

/* The format is the template's (strftime_now's argument, as Python's strftime takes it). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static size_t format_time(char *buf, size_t n, const char *fmt, const struct tm *tm)
{
    return strftime(buf, n, fmt, tm);
}
#pragma GCC diagnostic pop

static bool f_strftime(duet__jctx *c, int line, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *fmt = duet__jarg(a, 0, "format");
    char buf[512];
    time_t now = time(NULL);
    struct tm tm;
    size_t n;

    if (!fmt || fmt->kind != DUET__JV_STR || memchr(fmt->u.s->p, 0, fmt->u.s->n))
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "strftime_now takes a format string");
    if (!localtime_r(&now, &tm))
        return duet__jerr(c, DUET_STATUS_INTERNAL, line, "localtime failed");
    n = format_time(buf, sizeof(buf), fmt->u.s->p, &tm);
    if (n == 0 && fmt->u.s->n > 0)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "strftime_now's result is empty or too long");
    return duet__jv_str(c, buf, n, out);
}

bool duet__jinja_func(duet__jctx *c, int line, int func, const duet__jargs *a, duet__jv *out)
{
    const duet__jv *msg;

    switch (func) {
    case DUET__JF_RANGE:
        return f_range(c, line, a, out);
    case DUET__JF_NAMESPACE:
        return f_dict(c, line, DUET__JV_NS, a, out);
    case DUET__JF_DICT:
        return f_dict(c, line, DUET__JV_DICT, a, out);
    case DUET__JF_RAISE:
        msg = duet__jarg(a, 0, "message");
        if (msg && msg->kind == DUET__JV_STR)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "%.*s",
                              (int)(msg->u.s->n > 400 ? 400 : msg->u.s->n), msg->u.s->p);
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "raise_exception");
    case DUET__JF_STRFTIME:
        return f_strftime(c, line, a, out);
    default:
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line, "function not supported");
    }
}
