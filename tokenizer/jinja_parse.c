/*
 * The chat-template parser (jinja-int.h): tokens ─► a tree of duet__jnode, by recursive descent
 * with jinja2/parser.py's grammar and precedence, loosest first:
 *
 *     a if c else b   or   and   not   compare (== != < > <= >= in, not in; chained)
 *     + -   ~   * / // %   **   unary - +   primary with postfix . [] () and | filter, is test
 *
 * Statements: if / elif / else, for (with "if" filter and else), set (name, ns.attr, tuple, or a
 * block with endset), macro, filter blocks, break / continue, generation (transformers'
 * AssistantTracker: its body as is), print. Other tags (extends, include, import, call, ...) are
 * DUET_STATUS_UNSUPPORTED naming the line. Every node records how deep the tree is below it, and
 * a tree deeper than max_depth is refused, so evaluation cannot exhaust the stack.
 */
#include "jinja-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    duet__jctx *c;
    const duet__jtok *t; /* [n], ending with DUET__T_EOF */
    size_t n, pos;
    int depth;       /* statement nesting */
    int loops;       /* for loops around the statement being parsed */
    int macro_names; /* varargs (1) and kwargs (2) seen in the macro being parsed */
} parser;

typedef struct kidvec {
    duet__jnode **v;
    size_t n, cap;
} kidvec;

static const duet__jtok *cur(const parser *P)
{
    return &P->t[P->pos];
}

static bool tok_is(const duet__jtok *t, int kind, const char *s)
{
    return t->kind == kind && (!s || (t->n == strlen(s) && memcmp(t->p, s, t->n) == 0));
}

static bool is_op(const parser *P, const char *s)
{
    return tok_is(cur(P), DUET__T_OP, s);
}

static bool is_name(const parser *P, const char *s)
{
    return tok_is(cur(P), DUET__T_NAME, s);
}

static bool accept_op(parser *P, const char *s)
{
    if (!is_op(P, s))
        return false;
    P->pos++;
    return true;
}

static bool accept_name(parser *P, const char *s)
{
    if (!is_name(P, s))
        return false;
    P->pos++;
    return true;
}

static bool fail(parser *P, const char *what)
{
    const duet__jtok *t = cur(P);

    if (t->kind == DUET__T_EOF)
        return duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, t->line,
                          "unexpected end of template, expected %s", what);
    return duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, t->line, "unexpected '%.*s', expected %s",
                      (int)(t->n > 40 ? 40 : t->n), t->p, what);
}

static bool expect_op(parser *P, const char *s)
{
    char what[16];

    if (accept_op(P, s))
        return true;
    snprintf(what, sizeof(what), "'%s'", s);
    return fail(P, what);
}

static bool expect_end(parser *P)
{
    if (cur(P)->kind == DUET__T_BLOCK_END) {
        P->pos++;
        return true;
    }
    return fail(P, "end of statement block");
}

static duet__jnode *node(parser *P, int kind, int line)
{
    duet__jnode *n = duet__jalloc(P->c, sizeof(*n));

    if (n) {
        n->kind = kind;
        n->line = line;
    }
    return n;
}

/* Sets N's depth from its children; false when the tree gets too deep. */
static bool deepen(parser *P, duet__jnode *n)
{
    duet__jnode *ch[5] = {n->a, n->b, n->c, n->d, n->e};

    for (int i = 0; i < 5; i++)
        if (ch[i] && ch[i]->depth + 1 > n->depth)
            n->depth = ch[i]->depth + 1;
    for (size_t i = 0; i < n->n; i++)
        if (n->kids[i] && n->kids[i]->depth + 1 > n->depth)
            n->depth = n->kids[i]->depth + 1;
    if (n->depth > P->c->lim.max_depth)
        return duet__jerr(P->c, DUET_STATUS_CAPACITY, n->line, "nesting deeper than %d",
                          P->c->lim.max_depth);
    return true;
}

static bool kid_add(parser *P, kidvec *k, duet__jnode *n)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 8;
        duet__jnode **v = duet__jalloc(P->c, cap * sizeof(*v));

        if (!v)
            return false;
        if (k->n)
            memcpy(v, k->v, k->n * sizeof(*v));
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n++] = n;
    return true;
}

static duet__jnode *with_kids(parser *P, duet__jnode *n, kidvec *k)
{
    if (!n)
        return NULL;
    n->kids = k->v;
    n->n = k->n;
    return deepen(P, n) ? n : NULL;
}

static duet__jnode *binary(parser *P, int kind, int op, int line, duet__jnode *a, duet__jnode *b)
{
    duet__jnode *n = a && b ? node(P, kind, line) : NULL;

    if (!n)
        return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return deepen(P, n) ? n : NULL;
}

static bool name_lit(parser *P, const duet__jtok *t, duet__jv *out)
{
    return duet__jv_str(P->c, t->p, t->n, out);
}

/* ---- expressions --------------------------------------------------------------------------- */

static duet__jnode *parse_expr(parser *P);
static duet__jnode *parse_or(parser *P);
static duet__jnode *parse_unary(parser *P, bool with_filter);
static duet__jnode *parse_postfix(parser *P, duet__jnode *n);

/* "(" args ")" after the callee: positional, then name=value. */
static bool parse_args(parser *P, kidvec *k)
{
    if (!expect_op(P, "("))
        return false;
    while (!accept_op(P, ")")) {
        duet__jnode *arg;

        if (k->n && !expect_op(P, ","))
            return false;
        if (accept_op(P, ")"))
            break;
        if (is_op(P, "*") || is_op(P, "**"))
            return duet__jerr(P->c, DUET_STATUS_UNSUPPORTED, cur(P)->line,
                              "*args and **kwargs in calls are not supported");
        if (cur(P)->kind == DUET__T_NAME && tok_is(&P->t[P->pos + 1], DUET__T_OP, "=")) {
            arg = node(P, DUET__N_KWARG, cur(P)->line);
            if (!arg || !name_lit(P, cur(P), &arg->lit))
                return false;
            P->pos += 2;
            if (!(arg->a = parse_expr(P)) || !deepen(P, arg))
                return false;
        } else if (!(arg = parse_expr(P))) {
            return false;
        }
        if (!kid_add(P, k, arg))
            return false;
    }
    return true;
}

static duet__jnode *parse_call(parser *P, duet__jnode *callee)
{
    duet__jnode *n = node(P, DUET__N_CALL, cur(P)->line);
    kidvec k = {0};

    if (!n || !parse_args(P, &k))
        return NULL;
    n->a = callee;
    return with_kids(P, n, &k);
}

/* "[" subscript "]": an index or a slice a:b:c. */
static duet__jnode *parse_subscript(parser *P, duet__jnode *obj)
{
    duet__jnode *n = node(P, DUET__N_INDEX, cur(P)->line), *parts[3] = {NULL, NULL, NULL};
    int i = 0;

    if (!n)
        return NULL;
    P->pos++;
    for (;;) {
        if (!is_op(P, ":") && !is_op(P, "]") && !(parts[i] = parse_expr(P)))
            return NULL;
        if (i < 2 && accept_op(P, ":")) {
            n->kind = DUET__N_SLICE;
            i++;
            continue;
        }
        break;
    }
    if (n->kind == DUET__N_INDEX && !parts[0])
        return fail(P, "an expression") ? NULL : NULL;
    if (!expect_op(P, "]"))
        return NULL;
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    return deepen(P, n) ? n : NULL;
}

static duet__jnode *parse_postfix(parser *P, duet__jnode *n)
{
    while (n) {
        const duet__jtok *t;

        if (is_op(P, "[")) {
            n = parse_subscript(P, n);
        } else if (is_op(P, "(")) {
            n = parse_call(P, n);
        } else if (accept_op(P, ".")) {
            t = cur(P);
            if (t->kind != DUET__T_NAME && t->kind != DUET__T_INT)
                return fail(P, "an attribute name") ? NULL : NULL;
            n = binary(P, t->kind == DUET__T_NAME ? DUET__N_ATTR : DUET__N_INDEX, 0, t->line, n,
                       node(P, DUET__N_LIT, t->line));
            if (!n || !(t->kind == DUET__T_NAME ? name_lit(P, t, &n->lit) : true))
                return NULL;
            if (t->kind == DUET__T_INT)
                n->b->lit = t->v;
            if (t->kind == DUET__T_NAME)
                n->b = NULL;
            P->pos++;
        } else {
            break;
        }
    }
    return n;
}

static duet__jnode *parse_filter(parser *P, duet__jnode *operand)
{
    duet__jnode *n = node(P, DUET__N_FILTER, cur(P)->line);
    kidvec k = {0};

    P->pos++; /* "|" */
    if (!n || cur(P)->kind != DUET__T_NAME)
        return n && fail(P, "a filter name") ? NULL : NULL;
    if (!name_lit(P, cur(P), &n->lit))
        return NULL;
    P->pos++;
    if (is_op(P, ".")) {
        duet__jerr(P->c, DUET_STATUS_UNSUPPORTED, cur(P)->line,
                   "dotted filter names are not supported");
        return NULL;
    }
    if (is_op(P, "(") && !parse_args(P, &k))
        return NULL;
    n->a = operand;
    return with_kids(P, n, &k);
}

static bool test_takes_arg(const parser *P)
{
    const duet__jtok *t = cur(P);

    if (t->kind == DUET__T_NAME)
        return !tok_is(t, DUET__T_NAME, "else") && !tok_is(t, DUET__T_NAME, "or") &&
               !tok_is(t, DUET__T_NAME, "and");
    return t->kind == DUET__T_STRING || t->kind == DUET__T_INT || t->kind == DUET__T_FLOAT ||
           tok_is(t, DUET__T_OP, "[") || tok_is(t, DUET__T_OP, "{");
}

static duet__jnode *parse_primary(parser *P);

static duet__jnode *parse_test(parser *P, duet__jnode *operand)
{
    duet__jnode *n = node(P, DUET__N_TEST, cur(P)->line), *arg;
    kidvec k = {0};

    P->pos++; /* "is" */
    if (!n)
        return NULL;
    n->op = accept_name(P, "not");
    if (cur(P)->kind != DUET__T_NAME)
        return fail(P, "a test name") ? NULL : NULL;
    if (!name_lit(P, cur(P), &n->lit))
        return NULL;
    P->pos++;
    if (is_op(P, "(")) {
        if (!parse_args(P, &k))
            return NULL;
    } else if (test_takes_arg(P)) {
        if (is_name(P, "is")) {
            duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, cur(P)->line,
                       "you cannot chain multiple tests with is");
            return NULL;
        }
        if (!(arg = parse_postfix(P, parse_primary(P))) || !kid_add(P, &k, arg))
            return NULL;
    }
    n->a = operand;
    return with_kids(P, n, &k);
}

static duet__jnode *parse_filter_expr(parser *P, duet__jnode *n)
{
    while (n) {
        if (is_op(P, "|"))
            n = parse_filter(P, n);
        else if (is_name(P, "is"))
            n = parse_test(P, n);
        else if (is_op(P, "("))
            n = parse_call(P, n);
        else
            break;
    }
    return n;
}

static duet__jnode *parse_seq(parser *P, int kind, const char *close)
{
    duet__jnode *n = node(P, kind, cur(P)->line);
    kidvec k = {0};

    P->pos++;
    while (n && !accept_op(P, close)) {
        duet__jnode *e;

        if (k.n && !expect_op(P, ","))
            return NULL;
        if (accept_op(P, close))
            break;
        if (!(e = parse_expr(P)) || !kid_add(P, &k, e))
            return NULL;
        if (kind == DUET__N_DICT) {
            if (!expect_op(P, ":") || !(e = parse_expr(P)) || !kid_add(P, &k, e))
                return NULL;
        }
    }
    return with_kids(P, n, &k);
}

/* "(" ")" is an empty tuple, "(a)" is a, "(a,)" and "(a, b)" are tuples. */
static duet__jnode *parse_paren(parser *P)
{
    duet__jnode *n = node(P, DUET__N_TUPLE, cur(P)->line), *e;
    kidvec k = {0};

    P->pos++;
    if (!n || accept_op(P, ")"))
        return with_kids(P, n, &k);
    if (!(e = parse_expr(P)))
        return NULL;
    if (accept_op(P, ")"))
        return e;
    if (!kid_add(P, &k, e))
        return NULL;
    while (accept_op(P, ",")) {
        if (is_op(P, ")"))
            break;
        if (!(e = parse_expr(P)) || !kid_add(P, &k, e))
            return NULL;
    }
    if (!expect_op(P, ")"))
        return NULL;
    return with_kids(P, n, &k);
}

static duet__jnode *parse_literal(parser *P)
{
    const duet__jtok *t = cur(P);
    duet__jnode *n = node(P, DUET__N_LIT, t->line);
    duet__buf b = {0};
    bool ok = true;

    if (!n)
        return NULL;
    n->lit = t->v;
    P->pos++;
    if (t->kind != DUET__T_STRING || cur(P)->kind != DUET__T_STRING)
        return n;
    /* adjacent strings join, as in Python */
    for (t = &P->t[P->pos - 1]; ok && t->kind == DUET__T_STRING; t++)
        ok = duet__buf_add(&b, t->v.u.s->p, t->v.u.s->n);
    P->pos = (size_t)(t - P->t);
    ok = ok ? duet__jv_str(P->c, b.p, b.n, &n->lit)
            : duet__jerr(P->c, DUET_STATUS_OUT_OF_MEMORY, n->line, "out of memory");
    free(b.p);
    return ok ? n : NULL;
}

static duet__jnode *parse_primary(parser *P)
{
    const duet__jtok *t = cur(P);
    duet__jnode *n;

    if (t->kind == DUET__T_STRING || t->kind == DUET__T_INT || t->kind == DUET__T_FLOAT)
        return parse_literal(P);
    if (is_op(P, "("))
        return parse_paren(P);
    if (is_op(P, "["))
        return parse_seq(P, DUET__N_LIST, "]");
    if (is_op(P, "{"))
        return parse_seq(P, DUET__N_DICT, "}");
    if (t->kind != DUET__T_NAME)
        return fail(P, "an expression") ? NULL : NULL;
    if (!(n = node(P, DUET__N_LIT, t->line)))
        return NULL;
    P->pos++;
    if (tok_is(t, DUET__T_NAME, "true") || tok_is(t, DUET__T_NAME, "True"))
        n->lit = duet__jv_bool(true);
    else if (tok_is(t, DUET__T_NAME, "false") || tok_is(t, DUET__T_NAME, "False"))
        n->lit = duet__jv_bool(false);
    else if (tok_is(t, DUET__T_NAME, "none") || tok_is(t, DUET__T_NAME, "None"))
        n->lit = duet__jv_none();
    else if ((n->kind = DUET__N_NAME) && !name_lit(P, t, &n->lit))
        return NULL;
    if (n->kind == DUET__N_NAME)
        P->macro_names |= tok_is(t, DUET__T_NAME, "varargs")  ? 1
                          : tok_is(t, DUET__T_NAME, "kwargs") ? 2
                                                              : 0;
    return n;
}

/* Counts one level of parser recursion; false past max_depth. */
static bool enter(parser *P, int line)
{
    if (++P->depth <= P->c->lim.max_depth)
        return true;
    return duet__jerr(P->c, DUET_STATUS_CAPACITY, line, "nesting deeper than %d",
                      P->c->lim.max_depth);
}

static duet__jnode *parse_unary(parser *P, bool with_filter)
{
    int line = cur(P)->line;
    duet__jnode *n;

    if (is_op(P, "-") || is_op(P, "+")) {
        int op = is_op(P, "-") ? DUET__OP_NEG : DUET__OP_POS;

        P->pos++;
        if (!enter(P, line))
            return NULL;
        n = binary(P, DUET__N_UNARY, op, line, parse_unary(P, false), node(P, DUET__N_LIT, line));
        P->depth--;
        if (n)
            n->b = NULL;
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    return with_filter ? parse_filter_expr(P, n) : n;
}

/* One level of left-associative binary operators: OPS (NULL-terminated) over NEXT. */
static duet__jnode *parse_level(parser *P, duet__jnode *(*next)(parser *), const char *const *ops,
                                const int *codes)
{
    duet__jnode *n = next(P);

    for (int i = 0; n && ops[i];) {
        int line = cur(P)->line;

        if (!accept_op(P, ops[i])) {
            i++;
            continue;
        }
        n = binary(P, DUET__N_BINARY, codes[i], line, n, next(P));
        i = 0;
    }
    return n;
}

static duet__jnode *parse_unary_f(parser *P)
{
    return parse_unary(P, true);
}

static duet__jnode *parse_pow(parser *P)
{
    static const char *const ops[] = {"**", NULL};
    static const int codes[] = {DUET__OP_POW};
    return parse_level(P, parse_unary_f, ops, codes);
}

static duet__jnode *parse_math2(parser *P)
{
    static const char *const ops[] = {"*", "/", "//", "%", NULL};
    static const int codes[] = {DUET__OP_MUL, DUET__OP_DIV, DUET__OP_FLOORDIV, DUET__OP_MOD};
    return parse_level(P, parse_pow, ops, codes);
}

static duet__jnode *parse_concat(parser *P)
{
    static const char *const ops[] = {"~", NULL};
    static const int codes[] = {DUET__OP_CONCAT};
    return parse_level(P, parse_math2, ops, codes);
}

static duet__jnode *parse_math1(parser *P)
{
    static const char *const ops[] = {"+", "-", NULL};
    static const int codes[] = {DUET__OP_ADD, DUET__OP_SUB};
    return parse_level(P, parse_concat, ops, codes);
}

static int compare_op(parser *P)
{
    static const char *const ops[] = {"==", "!=", "<", ">", "<=", ">=", NULL};
    static const int codes[] = {DUET__OP_EQ, DUET__OP_NE, DUET__OP_LT,
                                DUET__OP_GT, DUET__OP_LE, DUET__OP_GE};

    for (int i = 0; ops[i]; i++)
        if (accept_op(P, ops[i]))
            return codes[i];
    if (accept_name(P, "in"))
        return DUET__OP_IN;
    if (is_name(P, "not") && tok_is(&P->t[P->pos + 1], DUET__T_NAME, "in")) {
        P->pos += 2;
        return DUET__OP_NOTIN;
    }
    return DUET__OP_NONE;
}

static duet__jnode *parse_compare(parser *P)
{
    int line = cur(P)->line, op;
    duet__jnode *first = parse_math1(P), *n, *e;
    kidvec k = {0};
    unsigned char ops[64];

    if (!first || (op = compare_op(P)) == DUET__OP_NONE)
        return first;
    if (!(n = node(P, DUET__N_COMPARE, line)) || !kid_add(P, &k, first))
        return NULL;
    do {
        if (k.n > sizeof(ops)) {
            duet__jerr(P->c, DUET_STATUS_CAPACITY, line, "too many chained comparisons");
            return NULL;
        }
        ops[k.n - 1] = (unsigned char)op;
        if (!(e = parse_math1(P)) || !kid_add(P, &k, e))
            return NULL;
    } while ((op = compare_op(P)) != DUET__OP_NONE);
    if (!(n->ops = duet__jalloc(P->c, k.n)))
        return NULL;
    memcpy(n->ops, ops, k.n - 1);
    return with_kids(P, n, &k);
}

static duet__jnode *parse_not(parser *P)
{
    int line = cur(P)->line;
    duet__jnode *n;

    if (!accept_name(P, "not"))
        return parse_compare(P);
    if (++P->depth > P->c->lim.max_depth) {
        duet__jerr(P->c, DUET_STATUS_CAPACITY, line, "nesting deeper than %d", P->c->lim.max_depth);
        return NULL;
    }
    n = binary(P, DUET__N_UNARY, DUET__OP_NOT, line, parse_not(P), node(P, DUET__N_LIT, line));
    P->depth--;
    if (n)
        n->b = NULL;
    return n;
}

static duet__jnode *parse_andor(parser *P, bool is_or)
{
    duet__jnode *n = is_or ? parse_andor(P, false) : parse_not(P);

    while (n && is_name(P, is_or ? "or" : "and")) {
        int line = cur(P)->line;

        P->pos++;
        n = binary(P, DUET__N_BINARY, is_or ? DUET__OP_OR : DUET__OP_AND, line, n,
                   is_or ? parse_andor(P, false) : parse_not(P));
    }
    return n;
}

static duet__jnode *parse_or(parser *P)
{
    return parse_andor(P, true);
}

/* a if c else b (Jinja2's parse_condexpr). */
static duet__jnode *parse_expr(parser *P)
{
    int line = cur(P)->line;
    duet__jnode *n;

    if (++P->depth > P->c->lim.max_depth) {
        duet__jerr(P->c, DUET_STATUS_CAPACITY, line, "nesting deeper than %d", P->c->lim.max_depth);
        return NULL;
    }
    n = parse_or(P);
    while (n && accept_name(P, "if")) {
        duet__jnode *cond = node(P, DUET__N_COND, line);

        if (!cond || !(cond->a = parse_or(P)))
            return NULL;
        cond->b = n;
        if (accept_name(P, "else") && !(cond->c = parse_expr(P)))
            return NULL;
        n = deepen(P, cond) ? cond : NULL;
    }
    P->depth--;
    return n;
}

/* An expression, or a tuple when commas follow ({% set a, b = 1, 2 %}). */
static duet__jnode *parse_tuple(parser *P, bool names_only)
{
    duet__jnode *first = names_only ? parse_primary(P) : parse_expr(P), *n, *e;
    kidvec k = {0};

    if (!first || !is_op(P, ","))
        return first;
    if (!(n = node(P, DUET__N_TUPLE, first->line)) || !kid_add(P, &k, first))
        return NULL;
    while (accept_op(P, ",")) {
        if (!(e = names_only ? parse_primary(P) : parse_expr(P)) || !kid_add(P, &k, e))
            return NULL;
    }
    return with_kids(P, n, &k);
}

/* ---- statements ---------------------------------------------------------------------------- */

static duet__jnode *subparse(parser *P, const char *const *ends);

static bool assign_target(parser *P, duet__jnode *t, bool with_ns)
{
    if (t->kind == DUET__N_NAME)
        return true;
    if (t->kind == DUET__N_TUPLE) {
        for (size_t i = 0; i < t->n; i++)
            if (t->kids[i]->kind != DUET__N_NAME)
                return duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, t->line, "can't assign to %s",
                                  "a non-name");
        return true;
    }
    if (with_ns && t->kind == DUET__N_ATTR && t->a->kind == DUET__N_NAME)
        return true;
    return duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, t->line, "can't assign to this target");
}

static duet__jnode *parse_for(parser *P, int line)
{
    static const char *const body_ends[] = {"endfor", "else", NULL}, *const else_ends[] = {"endfor",
                                                                                           NULL};
    duet__jnode *n = node(P, DUET__N_FOR, line);

    if (!n || !(n->a = parse_tuple(P, true)) || !assign_target(P, n->a, false))
        return NULL;
    if (!accept_name(P, "in"))
        return fail(P, "'in'") ? NULL : NULL;
    if (!(n->b = parse_or(P)))
        return NULL;
    if (accept_name(P, "if") && !(n->e = parse_expr(P)))
        return NULL;
    if (is_name(P, "recursive")) {
        duet__jerr(P->c, DUET_STATUS_UNSUPPORTED, line, "recursive loops are not supported");
        return NULL;
    }
    P->loops++;
    if (!expect_end(P) || !(n->c = subparse(P, body_ends)))
        return NULL;
    P->loops--;
    if (accept_name(P, "else") && (!expect_end(P) || !(n->d = subparse(P, else_ends))))
        return NULL;
    P->pos++; /* endfor */
    return expect_end(P) && deepen(P, n) ? n : NULL;
}

static duet__jnode *parse_if(parser *P, int line)
{
    static const char *const ends[] = {"endif", "elif", "else", NULL}, *const else_ends[] = {
                                                                           "endif", NULL};
    duet__jnode *n = node(P, DUET__N_IF, line);

    if (!n || !(n->a = parse_or(P)) || !expect_end(P) || !(n->b = subparse(P, ends)))
        return NULL;
    if (accept_name(P, "elif")) {
        if (!enter(P, line) || !(n->c = parse_if(P, cur(P)->line)))
            return NULL;
        P->depth--;
        return deepen(P, n) ? n : NULL;
    }
    if (accept_name(P, "else") && (!expect_end(P) || !(n->c = subparse(P, else_ends))))
        return NULL;
    P->pos++; /* endif */
    return expect_end(P) && deepen(P, n) ? n : NULL;
}

/* Filters of a block set or a filter block: "| name(args) | ..." as a chain on NULL. */
static duet__jnode *filter_chain(parser *P, bool required)
{
    duet__jnode *n = NULL;

    if (required && !is_op(P, "|") && cur(P)->kind == DUET__T_NAME) {
        /* {% filter upper %}: the first filter has no "|" */
        P->pos--;
    } else if (!is_op(P, "|")) {
        return NULL;
    }
    do {
        duet__jnode *f = parse_filter(P, n);

        if (!f)
            return NULL;
        n = f;
    } while (is_op(P, "|"));
    return n;
}

static duet__jnode *parse_set(parser *P, int line)
{
    static const char *const ends[] = {"endset", NULL};
    duet__jnode *n = node(P, DUET__N_SET, line);

    if (!n)
        return NULL;
    if (cur(P)->kind == DUET__T_NAME && tok_is(&P->t[P->pos + 1], DUET__T_OP, ".")) {
        n->a = parse_postfix(P, parse_primary(P));
    } else {
        n->a = parse_tuple(P, true);
    }
    if (!n->a || !assign_target(P, n->a, true))
        return NULL;
    if (accept_op(P, "=")) {
        if (!(n->b = parse_tuple(P, false)) || !expect_end(P))
            return NULL;
        return deepen(P, n) ? n : NULL;
    }
    if (n->a->kind != DUET__N_NAME && n->a->kind != DUET__N_ATTR)
        return fail(P, "'='") ? NULL : NULL;
    if (is_op(P, "|") && !(n->e = filter_chain(P, false)))
        return NULL;
    if (!expect_end(P) || !(n->c = subparse(P, ends)))
        return NULL;
    P->pos++;
    return expect_end(P) && deepen(P, n) ? n : NULL;
}

static duet__jnode *parse_macro(parser *P, int line)
{
    static const char *const ends[] = {"endmacro", NULL};
    duet__jnode *n = node(P, DUET__N_MACRO, line);
    kidvec k = {0};
    int loops = P->loops, names;

    if (!n || cur(P)->kind != DUET__T_NAME)
        return n && fail(P, "a macro name") ? NULL : NULL;
    if (!name_lit(P, cur(P), &n->lit))
        return NULL;
    P->pos++;
    if (!expect_op(P, "("))
        return NULL;
    while (!accept_op(P, ")")) {
        duet__jnode *param;

        if ((k.n && !expect_op(P, ",")) || cur(P)->kind != DUET__T_NAME)
            return fail(P, "a parameter name") ? NULL : NULL;
        if (!(param = parse_primary(P)) || param->kind != DUET__N_NAME)
            return fail(P, "a parameter name") ? NULL : NULL;
        if (accept_op(P, "=") && !(param->a = parse_expr(P)))
            return NULL;
        if (!deepen(P, param) || !kid_add(P, &k, param))
            return NULL;
    }
    P->loops = 0;
    names = P->macro_names;
    P->macro_names = 0;
    if (!expect_end(P) || !(n->c = subparse(P, ends)))
        return NULL;
    n->op = P->macro_names; /* the body takes extra arguments as varargs / kwargs */
    P->macro_names |= names;
    P->loops = loops;
    P->pos++;
    if (cur(P)->kind == DUET__T_NAME)
        P->pos++; /* {% endmacro name %} */
    return expect_end(P) ? with_kids(P, n, &k) : NULL;
}

static duet__jnode *parse_block_with(parser *P, int kind, const char *end, int line)
{
    const char *ends[] = {end, NULL};
    duet__jnode *n = node(P, kind, line);

    if (!n)
        return NULL;
    if (kind == DUET__N_FILTERBLOCK && !(n->e = filter_chain(P, true)))
        return NULL;
    if (!expect_end(P) || !(n->c = subparse(P, ends)))
        return NULL;
    P->pos++;
    if (kind == DUET__N_BODY) /* {% generation %}: just its body */
        return expect_end(P) ? n->c : NULL;
    return expect_end(P) && deepen(P, n) ? n : NULL;
}

static duet__jnode *parse_loop_control(parser *P, int kind, int line)
{
    duet__jnode *n;

    if (P->loops == 0) {
        duet__jerr(P->c, DUET_STATUS_BAD_FORMAT, line, "'%s' outside a loop",
                   kind == DUET__N_BREAK ? "break" : "continue");
        return NULL;
    }
    n = node(P, kind, line);
    return n && expect_end(P) ? n : NULL;
}

static duet__jnode *parse_statement(parser *P)
{
    const duet__jtok *t = cur(P);
    int line = t->line;
    duet__jnode *n;

    if (t->kind != DUET__T_NAME)
        return fail(P, "a tag name") ? NULL : NULL;
    P->pos++;
    if (tok_is(t, DUET__T_NAME, "for"))
        return parse_for(P, line);
    if (tok_is(t, DUET__T_NAME, "if"))
        return parse_if(P, line);
    if (tok_is(t, DUET__T_NAME, "set"))
        return parse_set(P, line);
    if (tok_is(t, DUET__T_NAME, "macro"))
        return parse_macro(P, line);
    if (tok_is(t, DUET__T_NAME, "filter"))
        return parse_block_with(P, DUET__N_FILTERBLOCK, "endfilter", line);
    if (tok_is(t, DUET__T_NAME, "generation"))
        return parse_block_with(P, DUET__N_BODY, "endgeneration", line);
    if (tok_is(t, DUET__T_NAME, "break"))
        return parse_loop_control(P, DUET__N_BREAK, line);
    if (tok_is(t, DUET__T_NAME, "continue"))
        return parse_loop_control(P, DUET__N_CONTINUE, line);
    if (tok_is(t, DUET__T_NAME, "print")) {
        n = node(P, DUET__N_OUTPUT, line);
        if (!n || !(n->a = parse_tuple(P, false)) || !expect_end(P))
            return NULL;
        return deepen(P, n) ? n : NULL;
    }
    duet__jerr(P->c, DUET_STATUS_UNSUPPORTED, line, "the '%.*s' tag is not supported",
               (int)(t->n > 40 ? 40 : t->n), t->p);
    return NULL;
}

static bool is_end(const parser *P, const char *const *ends)
{
    for (int i = 0; ends && ends[i]; i++)
        if (tok_is(cur(P), DUET__T_NAME, ends[i]))
            return true;
    return false;
}

static duet__jnode *one_node(parser *P, const char *const *ends, bool *stop)
{
    const duet__jtok *t = cur(P);
    duet__jnode *n;

    *stop = false;
    switch (t->kind) {
    case DUET__T_TEXT:
        if ((n = node(P, DUET__N_TEXT, t->line)))
            n->lit = t->v;
        P->pos++;
        return n;
    case DUET__T_VAR_BEGIN:
        P->pos++;
        n = node(P, DUET__N_OUTPUT, t->line);
        if (!n || !(n->a = parse_tuple(P, false)))
            return NULL;
        if (cur(P)->kind != DUET__T_VAR_END)
            return fail(P, "end of print statement") ? NULL : NULL;
        P->pos++;
        return deepen(P, n) ? n : NULL;
    case DUET__T_BLOCK_BEGIN:
        P->pos++;
        if (is_end(P, ends)) {
            *stop = true;
            return NULL;
        }
        return parse_statement(P);
    default:
        if (ends) {
            fail(P, ends[0]);
            return NULL;
        }
        *stop = true;
        return NULL;
    }
}

/* Nodes up to a {% tag %} named in ENDS (left at the tag's name), or to the end (ENDS NULL). */
static duet__jnode *subparse(parser *P, const char *const *ends)
{
    duet__jnode *body = node(P, DUET__N_BODY, cur(P)->line);
    kidvec k = {0};

    if (!body)
        return NULL;
    if (++P->depth > P->c->lim.max_depth) {
        duet__jerr(P->c, DUET_STATUS_CAPACITY, body->line, "nesting deeper than %d",
                   P->c->lim.max_depth);
        return NULL;
    }
    for (;;) {
        bool stop;
        duet__jnode *n = one_node(P, ends, &stop);

        if (stop)
            break;
        if (!n || !kid_add(P, &k, n))
            return NULL;
    }
    P->depth--;
    return with_kids(P, body, &k);
}

bool duet__jinja_parse(duet__jctx *c, const duet__jtok *toks, size_t n, duet__jnode **root)
{
    parser P = {.c = c, .t = toks, .n = n};

    *root = subparse(&P, NULL);
    if (*root && cur(&P)->kind != DUET__T_EOF)
        return fail(&P, "end of template");
    return *root != NULL;
}
