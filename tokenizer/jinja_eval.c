/*
 * The chat-template evaluator (jinja-int.h): runs the tree over values.
 *
 *     root frame (template-level set, macros) ─► caller's variables ─► builtins
 *        └─ for: one fresh frame per iteration (target, loop), as Jinja2 scopes a loop body
 *        └─ macro call: a frame under the frame the macro was defined in (its parameters)
 *
 * Names resolve through the frames, then the caller's variables, then the global functions.
 * An if does not open a frame, so its sets stay visible after it; a set inside a loop body
 * ends with the iteration, which is why templates carry state across iterations in a
 * namespace(). Macro bodies, block sets and filter blocks render into a capture buffer whose
 * text becomes a string. Each node evaluated and each iteration counts one step.
 */
#include "jinja-int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool eval(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out);
static bool exec(duet__jctx *c, duet__jframe *f, const duet__jnode *n);

static bool step(duet__jctx *c, int line)
{
    c->line = line;
    if (++c->steps <= c->lim.max_steps)
        return true;
    return duet__jerr(c, DUET_STATUS_CAPACITY, line, "rendering takes more than %llu steps",
                      (unsigned long long)c->lim.max_steps);
}

static duet__jv lookup(duet__jctx *c, duet__jframe *f, const duet__jstr *name)
{
    static const struct {
        const char *name;
        int func;
    } funcs[] = {{"range", DUET__JF_RANGE},
                 {"namespace", DUET__JF_NAMESPACE},
                 {"dict", DUET__JF_DICT},
                 {"raise_exception", DUET__JF_RAISE},
                 {"strftime_now", DUET__JF_STRFTIME}};
    duet__jv *v, fv = {.kind = DUET__JV_FUNC};

    for (; f; f = f->parent)
        if ((v = duet__jdict_getn(&f->vars, name->p, name->n)))
            return *v;
    if ((v = duet__jdict_getn(&c->globals, name->p, name->n)))
        return *v;
    for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++)
        if (strlen(funcs[i].name) == name->n && memcmp(funcs[i].name, name->p, name->n) == 0) {
            fv.u.func = funcs[i].func;
            return fv;
        }
    return duet__jv_undef();
}

static bool set_var(duet__jctx *c, duet__jframe *f, const duet__jstr *name, duet__jv v)
{
    duet__jv key = {.kind = DUET__JV_STR, .u.s = name};

    return duet__jdict_set(c, &f->vars, key, v);
}

/* ---- arithmetic ---------------------------------------------------------------------------- */

static bool type_error(duet__jctx *c, int line, const char *op, duet__jv a, duet__jv b)
{
    return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                      "unsupported operand types for %s: '%s' and '%s'", op, duet__jv_type(a),
                      duet__jv_type(b));
}

static int64_t ival(duet__jv v)
{
    return v.kind == DUET__JV_BOOL ? (int64_t)v.u.b : v.u.i;
}

static bool repeat(duet__jctx *c, duet__jv seq, int64_t times, duet__jv *out)
{
    size_t n = seq.kind == DUET__JV_STR ? seq.u.s->n : seq.u.l->n;
    size_t k = times > 0 ? (size_t)times : 0;

    if (k && n > c->lim.max_bytes / k)
        return duet__jerr(c, DUET_STATUS_CAPACITY, 0, "repetition too long");
    if (seq.kind == DUET__JV_STR) {
        char *p = duet__jalloc(c, n * k + 1);

        if (!p)
            return false;
        for (size_t i = 0; i < k; i++)
            memcpy(p + i * n, seq.u.s->p, n);
        return duet__jv_str(c, p, n * k, out);
    }
    if (!duet__jv_list(c, n * k, seq.kind, out))
        return false;
    for (size_t i = 0; i < k; i++)
        memcpy(out->u.l->v + i * n, seq.u.l->v, n * sizeof(duet__jv));
    return true;
}

static bool concat(duet__jctx *c, duet__jv a, duet__jv b, duet__jv *out)
{
    if (a.kind == DUET__JV_STR) {
        char *p = duet__jalloc(c, a.u.s->n + b.u.s->n + 1);

        if (!p)
            return false;
        memcpy(p, a.u.s->p, a.u.s->n);
        memcpy(p + a.u.s->n, b.u.s->p, b.u.s->n);
        return duet__jv_str(c, p, a.u.s->n + b.u.s->n, out);
    }
    if (!duet__jv_list(c, a.u.l->n + b.u.l->n, a.kind, out))
        return false;
    if (a.u.l->n)
        memcpy(out->u.l->v, a.u.l->v, a.u.l->n * sizeof(duet__jv));
    if (b.u.l->n)
        memcpy(out->u.l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof(duet__jv));
    return true;
}

static bool int_arith(duet__jctx *c, int line, int op, int64_t x, int64_t y, duet__jv *out)
{
    int64_t r = 0;
    bool over = false;

    switch (op) {
    case DUET__OP_ADD:
        over = __builtin_add_overflow(x, y, &r);
        break;
    case DUET__OP_SUB:
        over = __builtin_sub_overflow(x, y, &r);
        break;
    case DUET__OP_MUL:
        over = __builtin_mul_overflow(x, y, &r);
        break;
    case DUET__OP_FLOORDIV:
    case DUET__OP_MOD:
        if (y == 0)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "integer division by zero");
        over = x == INT64_MIN && y == -1;
        r = over ? 0 : op == DUET__OP_MOD ? x % y : x / y;
        if (op == DUET__OP_MOD && r != 0 && ((r < 0) != (y < 0)))
            r += y;
        else if (op == DUET__OP_FLOORDIV && !over && (x % y != 0) && ((x < 0) != (y < 0)))
            r -= 1;
        break;
    case DUET__OP_POW:
        r = 1;
        for (int64_t i = 0; i < y && !over; i++)
            over = __builtin_mul_overflow(r, x, &r) || (i > 64 && (x < -1 || x > 1));
        break;
    }
    if (over)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "integers beyond 64 bits are not supported");
    *out = duet__jv_int(r);
    return true;
}

static bool float_arith(duet__jctx *c, int line, int op, double x, double y, duet__jv *out)
{
    double r = 0;

    switch (op) {
    case DUET__OP_ADD:
        r = x + y;
        break;
    case DUET__OP_SUB:
        r = x - y;
        break;
    case DUET__OP_MUL:
        r = x * y;
        break;
    case DUET__OP_DIV:
    case DUET__OP_FLOORDIV:
    case DUET__OP_MOD:
        if (y == 0)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "division by zero");
        r = op == DUET__OP_DIV ? x / y : op == DUET__OP_FLOORDIV ? floor(x / y) : fmod(x, y);
        if (op == DUET__OP_MOD && r != 0 && ((r < 0) != (y < 0)))
            r += y;
        break;
    case DUET__OP_POW:
        if (x == 0 && y < 0)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "0.0 cannot be raised to a negative power");
        r = pow(x, y);
        break;
    }
    *out = duet__jv_float(r);
    return true;
}

static const char *op_name(int op)
{
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    return op < 9 ? names[op] : "?";
}

static bool arith(duet__jctx *c, int line, int op, duet__jv a, duet__jv b, duet__jv *out)
{
    bool seq_a = a.kind == DUET__JV_STR || a.kind == DUET__JV_LIST || a.kind == DUET__JV_TUPLE;
    bool seq_b = b.kind == DUET__JV_STR || b.kind == DUET__JV_LIST || b.kind == DUET__JV_TUPLE;
    bool int_a = a.kind == DUET__JV_INT || a.kind == DUET__JV_BOOL;
    bool int_b = b.kind == DUET__JV_INT || b.kind == DUET__JV_BOOL;

    if ((a.kind == DUET__JV_LIST && a.u.l->is_range) ||
        (b.kind == DUET__JV_LIST && b.u.l->is_range))
        return type_error(c, line, op_name(op), a, b);
    if (op == DUET__OP_ADD && seq_a && a.kind == b.kind)
        return concat(c, a, b, out);
    if (op == DUET__OP_MUL && seq_a && int_b)
        return repeat(c, a, ival(b), out);
    if (op == DUET__OP_MUL && int_a && seq_b)
        return repeat(c, b, ival(a), out);
    if (op == DUET__OP_MOD && a.kind == DUET__JV_STR)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, line,
                          "string formatting with %% is not supported");
    if (!duet__jv_is_num(a) || !duet__jv_is_num(b))
        return type_error(c, line, op_name(op), a, b);
    if (int_a && int_b && op != DUET__OP_DIV && !(op == DUET__OP_POW && ival(b) < 0))
        return int_arith(c, line, op, ival(a), ival(b), out);
    return float_arith(c, line, op, duet__jv_num(a), duet__jv_num(b), out);
}

static bool str_concat(duet__jctx *c, int line, duet__jv a, duet__jv b, duet__jv *out)
{
    duet__jv sa, sb;

    return duet__jv_to_str(c, line, a, &sa) && duet__jv_to_str(c, line, b, &sb) &&
           concat(c, sa, sb, out);
}

/* B in A's container: substring, element or key. */
static bool contains(duet__jctx *c, int line, duet__jv item, duet__jv seq, bool *out)
{
    switch (seq.kind) {
    case DUET__JV_STR:
        if (item.kind != DUET__JV_STR)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "'in <string>' requires string as left operand, not %s",
                              duet__jv_type(item));
        *out = item.u.s->n == 0 ||
               (item.u.s->n <= seq.u.s->n &&
                duet__memmem(seq.u.s->p, seq.u.s->n, item.u.s->p, item.u.s->n) != NULL);
        return true;
    case DUET__JV_GEN: /* consumed up to the match in Python: used, as any iteration */
    case DUET__JV_LIST:
    case DUET__JV_TUPLE: {
        duet__jlist *l;

        if (!duet__jinja_iter(c, line, seq, &l))
            return false;
        *out = false;
        for (size_t i = 0; i < l->n && !*out; i++)
            *out = duet__jv_eq(item, l->v[i], 0);
        return true;
    }
    case DUET__JV_DICT:
    case DUET__JV_NS:
        *out = duet__jdict_get(seq.u.d, item) != NULL;
        return true;
    case DUET__JV_UNDEF:
        *out = false;
        return true;
    default:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "argument of type '%s' is not iterable", duet__jv_type(seq));
    }
}

static bool compare(duet__jctx *c, int line, int op, duet__jv a, duet__jv b, bool *out)
{
    int cmp;

    switch (op) {
    case DUET__OP_EQ:
    case DUET__OP_NE:
        *out = duet__jv_eq(a, b, 0) == (op == DUET__OP_EQ);
        return true;
    case DUET__OP_IN:
    case DUET__OP_NOTIN:
        if (!contains(c, line, a, b, out))
            return false;
        *out = *out == (op == DUET__OP_IN);
        return true;
    }
    if (!duet__jv_cmp(a, b, 0, &cmp))
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "'%s' not supported between instances of '%s' and '%s'",
                          op == DUET__OP_LT   ? "<"
                          : op == DUET__OP_LE ? "<="
                          : op == DUET__OP_GT ? ">"
                                              : ">=",
                          duet__jv_type(a), duet__jv_type(b));
    *out = cmp == 2            ? false
           : op == DUET__OP_LT ? cmp < 0
           : op == DUET__OP_LE ? cmp <= 0
           : op == DUET__OP_GT ? cmp > 0
                               : cmp >= 0;
    return true;
}

static bool eval_compare(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv a, b;
    bool r = true;

    if (!eval(c, f, n->kids[0], &a))
        return false;
    for (size_t i = 1; i < n->n && r; i++) {
        if (!eval(c, f, n->kids[i], &b) || !compare(c, n->line, n->ops[i - 1], a, b, &r))
            return false;
        a = b;
    }
    *out = duet__jv_bool(r);
    return true;
}

static bool eval_binary(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv a, b;

    if (!eval(c, f, n->a, &a))
        return false;
    if (n->op == DUET__OP_AND || n->op == DUET__OP_OR) {
        if (duet__jv_truthy(a) == (n->op == DUET__OP_OR)) {
            *out = a;
            return true;
        }
        return eval(c, f, n->b, out);
    }
    if (!eval(c, f, n->b, &b))
        return false;
    if (n->op == DUET__OP_CONCAT)
        return str_concat(c, n->line, a, b, out);
    return arith(c, n->line, n->op, a, b, out);
}

static bool eval_unary(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv a;

    if (!eval(c, f, n->a, &a))
        return false;
    if (n->op == DUET__OP_NOT) {
        *out = duet__jv_bool(!duet__jv_truthy(a));
        return true;
    }
    if (!duet__jv_is_num(a))
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line,
                          "bad operand type for unary %s: '%s'", n->op == DUET__OP_NEG ? "-" : "+",
                          duet__jv_type(a));
    if (n->op == DUET__OP_POS)
        *out = a.kind == DUET__JV_BOOL ? duet__jv_int(a.u.b) : a;
    else if (a.kind == DUET__JV_FLOAT)
        *out = duet__jv_float(-a.u.f);
    else if (ival(a) == INT64_MIN)
        return duet__jerr(c, DUET_STATUS_UNSUPPORTED, n->line,
                          "integers beyond 64 bits are not supported");
    else
        *out = duet__jv_int(-ival(a));
    return true;
}

/* ---- containers, subscripts, calls --------------------------------------------------------- */

static bool eval_seq(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    if (n->kind == DUET__N_DICT) {
        if (!duet__jv_dict(c, DUET__JV_DICT, out))
            return false;
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            duet__jv k, v;

            if (!eval(c, f, n->kids[i], &k) || !eval(c, f, n->kids[i + 1], &v))
                return false;
            if (k.kind > DUET__JV_STR && k.kind != DUET__JV_TUPLE)
                return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line, "unhashable type: '%s'",
                                  duet__jv_type(k));
            if (!duet__jdict_set(c, out->u.d, k, v))
                return false;
        }
        return true;
    }
    if (!duet__jv_list(c, n->n, n->kind == DUET__N_LIST ? DUET__JV_LIST : DUET__JV_TUPLE, out))
        return false;
    for (size_t i = 0; i < n->n; i++)
        if (!eval(c, f, n->kids[i], &out->u.l->v[i]))
            return false;
    return true;
}

/* Python's slice.indices(): START, STOP, STEP (NULL: default) over LEN items. */
static bool slice_indices(duet__jctx *c, int line, const duet__jv *sv, size_t len, int64_t *ix,
                          size_t *count)
{
    int64_t n = (int64_t)len, step = 1, start, stop;

    for (int i = 0; i < 3; i++)
        if (sv[i].kind != DUET__JV_NONE && sv[i].kind != DUET__JV_INT &&
            sv[i].kind != DUET__JV_BOOL)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "slice indices must be integers or None");
    if (sv[2].kind != DUET__JV_NONE && (step = ival(sv[2])) == 0)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line, "slice step cannot be zero");
    start = sv[0].kind == DUET__JV_NONE ? (step < 0 ? n - 1 : 0) : ival(sv[0]);
    stop = sv[1].kind == DUET__JV_NONE ? (step < 0 ? -1 - n : n) : ival(sv[1]);
    if (start < 0)
        start = start + n < 0 ? (step < 0 ? -1 : 0) : start + n;
    else if (start >= n)
        start = step < 0 ? n - 1 : n;
    if (stop < 0)
        stop = stop + n < 0 ? (step < 0 ? -1 : 0) : stop + n;
    else if (stop >= n)
        stop = step < 0 ? n - 1 : n;
    ix[0] = start;
    ix[1] = step;
    if (step < 0)
        *count = stop < start ? (size_t)((start - stop - 1) / (-step) + 1) : 0;
    else
        *count = start < stop ? (size_t)((stop - start - 1) / step + 1) : 0;
    return true;
}

/* Byte offsets of each code point of S (and S->n at the end). */
static bool char_offsets(duet__jctx *c, const duet__jstr *s, size_t **off, size_t *n)
{
    size_t k = 0;

    *n = duet__jstr_chars(s);
    if (!(*off = duet__jalloc(c, (*n + 1) * sizeof(**off))))
        return false;
    for (size_t i = 0; i < s->n; i++)
        if (((unsigned char)s->p[i] & 0xc0) != 0x80)
            (*off)[k++] = i;
    (*off)[k] = s->n;
    return true;
}

static bool eval_slice(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv obj, sv[3] = {duet__jv_none(), duet__jv_none(), duet__jv_none()};
    const duet__jnode *parts[3] = {n->b, n->c, n->d};
    size_t len, count, *off = NULL;
    int64_t ix[2];
    duet__buf b = {0};
    bool ok = true;

    if (!eval(c, f, n->a, &obj))
        return false;
    for (int i = 0; i < 3; i++)
        if (parts[i] && !eval(c, f, parts[i], &sv[i]))
            return false;
    if (obj.kind == DUET__JV_LIST || obj.kind == DUET__JV_TUPLE) {
        if (!slice_indices(c, n->line, sv, obj.u.l->n, ix, &count) ||
            !duet__jv_list(c, count, obj.kind, out))
            return false;
        for (size_t i = 0; i < count; i++)
            out->u.l->v[i] = obj.u.l->v[ix[0] + (int64_t)i * ix[1]];
        out->u.l->is_range = obj.u.l->is_range;
        return true;
    }
    if (obj.kind != DUET__JV_STR) {
        if (obj.kind == DUET__JV_UNDEF)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line,
                              "cannot slice an undefined value");
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line,
                          "'%s' object is not subscriptable", duet__jv_type(obj));
    }
    if (!char_offsets(c, obj.u.s, &off, &len) || !slice_indices(c, n->line, sv, len, ix, &count))
        return false;
    for (size_t i = 0; i < count && ok; i++) {
        int64_t k = ix[0] + (int64_t)i * ix[1];

        ok = duet__buf_add(&b, obj.u.s->p + off[k], off[k + 1] - off[k]);
    }
    ok = ok ? duet__jv_str(c, b.p ? b.p : "", b.n, out)
            : duet__jerr(c, DUET_STATUS_OUT_OF_MEMORY, n->line, "out of memory");
    free(b.p);
    return ok;
}

static bool eval_args(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jargs *a)
{
    memset(a, 0, sizeof(*a));
    if (n->n == 0)
        return true;
    if (!(a->pos = duet__jalloc(c, n->n * sizeof(*a->pos))) ||
        !(a->kw = duet__jalloc(c, n->n * sizeof(*a->kw))) ||
        !(a->kwname = duet__jalloc(c, n->n * sizeof(*a->kwname))))
        return false;
    for (size_t i = 0; i < n->n; i++) {
        const duet__jnode *k = n->kids[i];

        if (k->kind == DUET__N_KWARG) {
            a->kwname[a->nkw] = k->lit.u.s;
            if (!eval(c, f, k->a, &a->kw[a->nkw++]))
                return false;
        } else if (a->nkw) {
            return duet__jerr(c, DUET_STATUS_BAD_FORMAT, k->line,
                              "positional argument follows keyword argument");
        } else if (!eval(c, f, k, &a->pos[a->npos++])) {
            return false;
        }
    }
    return true;
}

static bool call_macro(duet__jctx *c, int line, const duet__jmacro *m, const duet__jargs *a,
                       duet__jv *out);

static bool eval_call(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv callee;
    duet__jargs args;

    if (!eval(c, f, n->a, &callee) || !eval_args(c, f, n, &args))
        return false;
    switch (callee.kind) {
    case DUET__JV_MACRO:
        return call_macro(c, n->line, callee.u.m, &args, out);
    case DUET__JV_FUNC:
        return duet__jinja_func(c, n->line, callee.u.func, &args, out);
    case DUET__JV_METHOD:
        return duet__jinja_method(c, n->line, callee.u.meth->obj, callee.u.meth->name->p, &args,
                                  out);
    case DUET__JV_UNDEF:
        if (n->a->kind == DUET__N_NAME)
            return duet__jerr(c, DUET_STATUS_UNSUPPORTED, n->line,
                              "'%s' is undefined (not a supported function)", n->a->lit.u.s->p);
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line,
                          "an undefined value is not callable");
    default:
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, n->line, "'%s' object is not callable",
                          duet__jv_type(callee));
    }
}

/* Filter node N applied to its operand, or to IN where the chain starts with no operand (the
 * text of a block set or a filter block). */
static bool eval_filter(duet__jctx *c, duet__jframe *f, const duet__jnode *n, const duet__jv *in,
                        duet__jv *out)
{
    duet__jv v = in ? *in : duet__jv_undef();
    duet__jargs args;

    if (n->a && n->a->kind == DUET__N_FILTER && !eval_filter(c, f, n->a, in, &v))
        return false;
    if (n->a && n->a->kind != DUET__N_FILTER && !eval(c, f, n->a, &v))
        return false;
    if (!eval_args(c, f, n, &args))
        return false;
    return duet__jinja_filter(c, n->line, n->lit.u.s->p, v, &args, out);
}

static bool eval_test(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv v;
    duet__jargs args;
    bool r;

    if (!eval(c, f, n->a, &v) || !eval_args(c, f, n, &args) ||
        !duet__jinja_test(c, n->line, n->lit.u.s->p, v, &args, &r))
        return false;
    *out = duet__jv_bool(r != (n->op != 0));
    return true;
}

static bool eval_index(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv obj, key;

    if (!eval(c, f, n->a, &obj))
        return false;
    if (n->kind == DUET__N_ATTR)
        return duet__jinja_getattr(c, n->line, obj, n->lit.u.s, out);
    if (!eval(c, f, n->b, &key))
        return false;
    return duet__jinja_getitem(c, n->line, obj, key, out);
}

static bool eval(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jv *out)
{
    duet__jv cond;

    if (!step(c, n->line))
        return false;
    switch (n->kind) {
    case DUET__N_LIT:
        *out = n->lit;
        return true;
    case DUET__N_NAME:
        *out = lookup(c, f, n->lit.u.s);
        return true;
    case DUET__N_LIST:
    case DUET__N_TUPLE:
    case DUET__N_DICT:
        return eval_seq(c, f, n, out);
    case DUET__N_ATTR:
    case DUET__N_INDEX:
        return eval_index(c, f, n, out);
    case DUET__N_SLICE:
        return eval_slice(c, f, n, out);
    case DUET__N_CALL:
        return eval_call(c, f, n, out);
    case DUET__N_FILTER:
        return eval_filter(c, f, n, NULL, out);
    case DUET__N_TEST:
        return eval_test(c, f, n, out);
    case DUET__N_UNARY:
        return eval_unary(c, f, n, out);
    case DUET__N_BINARY:
        return eval_binary(c, f, n, out);
    case DUET__N_COMPARE:
        return eval_compare(c, f, n, out);
    case DUET__N_COND:
        if (!eval(c, f, n->a, &cond))
            return false;
        if (duet__jv_truthy(cond))
            return eval(c, f, n->b, out);
        if (n->c)
            return eval(c, f, n->c, out);
        *out = duet__jv_undef();
        return true;
    default:
        return duet__jerr(c, DUET_STATUS_INTERNAL, n->line, "statement used as an expression");
    }
}

/* ---- statements ---------------------------------------------------------------------------- */

/* Renders BODY into a new string. */
static bool capture(duet__jctx *c, duet__jframe *f, const duet__jnode *body, duet__jv *out)
{
    duet__buf b = {0}, *saved = c->out;
    bool ok;

    c->out = &b;
    ok = exec(c, f, body);
    c->out = saved;
    ok = ok && duet__jv_str(c, b.p ? b.p : "", b.n, out);
    free(b.p);
    return ok;
}

static bool new_frame(duet__jctx *c, duet__jframe *parent, duet__jframe **out)
{
    if (!(*out = duet__jalloc(c, sizeof(**out))))
        return false;
    (*out)->parent = parent;
    return true;
}

/* Binds varargs (a tuple of the positional arguments past the parameters) and kwargs (a dict of
 * the keyword arguments that name none) when the macro's body uses them, as Jinja2 does; without
 * them, such arguments are an error. */
static bool bind_extras(duet__jctx *c, int line, duet__jframe *f, const duet__jnode *def,
                        const duet__jargs *a)
{
    duet__jv va, kw, name;
    size_t extra = a->npos > def->n ? a->npos - def->n : 0;

    if (extra && !(def->op & 1))
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                          "macro '%s' takes not more than %zu argument(s)", def->lit.u.s->p,
                          def->n);
    if (!duet__jv_list(c, extra, DUET__JV_TUPLE, &va) || !duet__jv_dict(c, DUET__JV_DICT, &kw))
        return false;
    if (extra)
        memcpy(va.u.l->v, a->pos + def->n, extra * sizeof(duet__jv));
    for (size_t i = 0; i < a->nkw; i++) {
        size_t k = 0;

        while (k < def->n && strcmp(def->kids[k]->lit.u.s->p, a->kwname[i]->p) != 0)
            k++;
        if (k < def->n && k >= a->npos)
            continue;
        if (k < def->n || !(def->op & 2))
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, line,
                              "macro '%s' takes no keyword argument '%s'", def->lit.u.s->p,
                              a->kwname[i]->p);
        if (!duet__jdict_set(c, kw.u.d, (duet__jv){.kind = DUET__JV_STR, .u.s = a->kwname[i]},
                             a->kw[i]))
            return false;
    }
    if ((def->op & 1) && (!duet__jv_str(c, "varargs", 7, &name) || !set_var(c, f, name.u.s, va)))
        return false;
    return !(def->op & 2) || (duet__jv_str(c, "kwargs", 6, &name) && set_var(c, f, name.u.s, kw));
}

static bool call_macro(duet__jctx *c, int line, const duet__jmacro *m, const duet__jargs *a,
                       duet__jv *out)
{
    const duet__jnode *def = m->node;
    duet__jframe *f;
    bool ok;

    if (c->calls >= c->lim.max_calls)
        return duet__jerr(c, DUET_STATUS_CAPACITY, line, "macro calls nested deeper than %d",
                          c->lim.max_calls);
    if (!new_frame(c, m->frame, &f) || !bind_extras(c, line, f, def, a))
        return false;
    for (size_t k = 0; k < def->n; k++) {
        const duet__jnode *p = def->kids[k];
        duet__jv v = duet__jv_undef(), *kv = NULL;

        for (size_t i = 0; i < a->nkw && !kv; i++)
            if (strcmp(p->lit.u.s->p, a->kwname[i]->p) == 0)
                kv = &a->kw[i];
        if (k < a->npos)
            v = a->pos[k];
        else if (kv)
            v = *kv;
        else if (p->a && !eval(c, f, p->a, &v))
            return false;
        if (!set_var(c, f, p->lit.u.s, v))
            return false;
    }
    c->calls++;
    ok = capture(c, f, def->c, out);
    c->calls--;
    return ok;
}

static bool assign(duet__jctx *c, duet__jframe *f, const duet__jnode *t, duet__jv v)
{
    duet__jv ns;

    if (t->kind == DUET__N_NAME)
        return set_var(c, f, t->lit.u.s, v);
    if (t->kind == DUET__N_ATTR) {
        ns = lookup(c, f, t->a->lit.u.s);
        if (ns.kind != DUET__JV_NS)
            return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, t->line,
                              "cannot assign attribute on non-namespace object");
        return duet__jdict_set(c, ns.u.d, (duet__jv){.kind = DUET__JV_STR, .u.s = t->lit.u.s}, v);
    }
    if ((v.kind != DUET__JV_LIST && v.kind != DUET__JV_TUPLE) || v.u.l->n != t->n)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, t->line,
                          "cannot unpack a %s into %zu names", duet__jv_type(v), t->n);
    for (size_t i = 0; i < t->n; i++)
        if (!set_var(c, f, t->kids[i]->lit.u.s, v.u.l->v[i]))
            return false;
    return true;
}

static bool exec_set(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jv v;

    if (n->b) {
        if (!eval(c, f, n->b, &v))
            return false;
    } else {
        if (!capture(c, f, n->c, &v))
            return false;
        if (n->e && !eval_filter(c, f, n->e, &v, &v))
            return false;
    }
    return assign(c, f, n->a, v);
}

/* The items of a for, after its "if" filter, each evaluated with the target bound. */
static bool loop_items(duet__jctx *c, duet__jframe *f, const duet__jnode *n, duet__jlist **items)
{
    duet__jv it, cond, kept;
    duet__jlist *all;
    size_t k = 0;

    if (!eval(c, f, n->b, &it) || !duet__jinja_iter(c, n->line, it, &all))
        return false;
    if (!n->e) {
        *items = all;
        return true;
    }
    if (!duet__jv_list(c, all->n, DUET__JV_LIST, &kept))
        return false;
    for (size_t i = 0; i < all->n; i++) {
        duet__jframe *g;

        if (!step(c, n->line) || !new_frame(c, f, &g) || !assign(c, g, n->a, all->v[i]) ||
            !eval(c, g, n->e, &cond))
            return false;
        if (duet__jv_truthy(cond))
            kept.u.l->v[k++] = all->v[i];
    }
    kept.u.l->n = k;
    *items = kept.u.l;
    return true;
}

static bool exec_for(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jlist *items;
    duet__jloop *loop = duet__jalloc(c, sizeof(*loop));
    duet__jv loop_name;

    if (!loop || !duet__jv_str(c, "loop", 4, &loop_name) || !loop_items(c, f, n, &items))
        return false;
    if (items->n == 0)
        return n->d ? exec(c, f, n->d) : true;
    loop->items = items;
    for (size_t i = 0; i < items->n; i++) {
        duet__jframe *g;

        loop->i = i;
        if (!step(c, n->line) || !new_frame(c, f, &g) || !assign(c, g, n->a, items->v[i]) ||
            !set_var(c, g, loop_name.u.s, (duet__jv){.kind = DUET__JV_LOOP, .u.loop = loop}) ||
            !exec(c, g, n->c))
            return false;
        if (c->breaking == 1) {
            c->breaking = 0;
            break;
        }
        c->breaking = 0;
    }
    return true;
}

static bool exec_macro_def(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jmacro *m = duet__jalloc(c, sizeof(*m));

    if (!m)
        return false;
    m->node = n;
    m->frame = f;
    return set_var(c, f, n->lit.u.s, (duet__jv){.kind = DUET__JV_MACRO, .u.m = m});
}

static bool exec_output(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jv v;

    return eval(c, f, n->a, &v) && duet__jv_write(c, n->line, c->out, v, false, 0);
}

static bool exec_filter_block(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jv v;

    return capture(c, f, n->c, &v) && eval_filter(c, f, n->e, &v, &v) &&
           duet__jv_write(c, n->line, c->out, v, false, 0);
}

static bool exec(duet__jctx *c, duet__jframe *f, const duet__jnode *n)
{
    duet__jv cond;

    if (!step(c, n->line))
        return false;
    switch (n->kind) {
    case DUET__N_BODY:
        for (size_t i = 0; i < n->n && !c->breaking; i++)
            if (!exec(c, f, n->kids[i]))
                return false;
        return true;
    case DUET__N_TEXT:
        return duet__jv_write(c, n->line, c->out, n->lit, false, 0);
    case DUET__N_OUTPUT:
        return exec_output(c, f, n);
    case DUET__N_IF:
        if (!eval(c, f, n->a, &cond))
            return false;
        if (duet__jv_truthy(cond))
            return exec(c, f, n->b);
        return n->c ? exec(c, f, n->c) : true;
    case DUET__N_FOR:
        return exec_for(c, f, n);
    case DUET__N_SET:
        return exec_set(c, f, n);
    case DUET__N_MACRO:
        return exec_macro_def(c, f, n);
    case DUET__N_FILTERBLOCK:
        return exec_filter_block(c, f, n);
    case DUET__N_BREAK:
    case DUET__N_CONTINUE:
        c->breaking = n->kind == DUET__N_BREAK ? 1 : 2;
        return true;
    default:
        return duet__jerr(c, DUET_STATUS_INTERNAL, n->line, "expression used as a statement");
    }
}

bool duet__jinja_run(duet__jctx *c, const duet__jnode *root)
{
    duet__jframe *f;

    return new_frame(c, NULL, &f) && exec(c, f, root);
}

static bool add_vars(duet__jctx *c, const void *vars)
{
    duet__jv v;

    if (!vars)
        return true;
    if (!duet__jv_from_json(c, vars, 0, &v))
        return false;
    if (v.kind != DUET__JV_DICT)
        return duet__jerr(c, DUET_STATUS_INVALID_ARGUMENT, 0, "variables are not a JSON object");
    c->globals = *v.u.d;
    return true;
}

void duet__jinja_limits_default(duet__jinja_limits *l)
{
    l->max_bytes = (size_t)256 << 20;
    l->max_output = (size_t)64 << 20;
    l->max_steps = 50000000;
    l->max_depth = 100;
    l->max_calls = 20;
}

duet_status duet__jinja_render(const char *tmpl, size_t len, const void *vars,
                               const duet__jinja_limits *lim, duet__buf *out, char *err,
                               size_t err_size)
{
    duet__jctx c = {.lim = *lim, .err = err, .err_size = err_size, .out = out};
    duet__jtok *toks;
    size_t ntok;
    duet__jnode *root;
    char *fixed;
    size_t fixed_len;

    if (!(fixed = duet__utf8_sanitize(tmpl, len, &fixed_len))) {
        duet__set_err(err, err_size, "chat template: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    if (duet__jinja_lex(&c, fixed, fixed_len, &toks, &ntok) &&
        duet__jinja_parse(&c, toks, ntok, &root) && add_vars(&c, vars) &&
        duet__jinja_run(&c, root) && !duet__buf_add(out, "", 0))
        duet__jerr(&c, DUET_STATUS_OUT_OF_MEMORY, 0, "out of memory");
    free(fixed);
    duet__jctx_fini(&c);
    return c.st;
}
