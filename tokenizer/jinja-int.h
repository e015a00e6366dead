/*
 * jinja-int.h — the chat-template interpreter: a Jinja2 subset over JSON-like values
 * (docs/tokenizer.md, "Chat templates").
 *
 *     template text ─► lexer (jinja_lex.c): newlines normalized, trim_blocks / lstrip_blocks /
 *                      "-" "+" whitespace control applied, comments dropped, raw blocks as text
 *                   ─► parser (jinja_parse.c): tokens ─► a tree of duet__jnode
 *                   ─► evaluator (jinja_eval.c, jinja_builtin.c): the tree run over values
 *                      (jinja_value.c) into an output buffer
 *
 * Every node, string, list and dict of one render lives in one arena (duet__jctx.chunks) that is
 * released at once when the render ends: values are small structs passed by copy, with no
 * reference counts. Lists and dicts are immutable once built, as in Jinja2's
 * ImmutableSandboxedEnvironment; only namespaces change, and every walk that recurses into
 * values (repr, tojson, equality) stops at a namespace and counts its depth, so no cycle or deep
 * nesting can exhaust the stack.
 *
 * Limits (duet__jinja_limits) bound the arena's bytes, the output's bytes, the evaluation steps
 * (nodes evaluated and loop iterations), the nesting of the tree and of macro calls: a hostile
 * template ends with DUET_STATUS_CAPACITY, never a hang or a blown stack. Every error is a
 * status with a message that names the template line.
 */
#ifndef DUET_JINJA_INT_H
#define DUET_JINJA_INT_H

#include "tokenizer-int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct duet__jinja_limits {
    size_t max_bytes;   /* arena bytes of one render (nodes and values) */
    size_t max_output;  /* bytes of the rendered text */
    uint64_t max_steps; /* nodes evaluated plus loop iterations */
    int max_depth;      /* nesting of the tree: statements inside statements, operands */
    int max_calls;      /* macro calls in progress at once */
} duet__jinja_limits;

void duet__jinja_limits_default(duet__jinja_limits *l);

/* Renders TMPL (LEN bytes) with the members of VARS (a json_t object, or NULL) as variables into
 * OUT (appended; the caller frees OUT->p whatever the result). */
duet_status duet__jinja_render(const char *tmpl, size_t len, const void *vars,
                               const duet__jinja_limits *lim, duet__buf *out, char *err,
                               size_t err_size);

/* ---- values -------------------------------------------------------------------------------- */

typedef enum duet__jkind {
    DUET__JV_UNDEF, /* Jinja2's default Undefined: prints "", falsy, iterates as empty */
    DUET__JV_NONE,
    DUET__JV_BOOL,
    DUET__JV_INT,
    DUET__JV_FLOAT,
    DUET__JV_STR,
    DUET__JV_LIST,
    DUET__JV_TUPLE,
    DUET__JV_DICT,
    DUET__JV_NS,     /* namespace(): a dict whose attributes may be assigned */
    DUET__JV_MACRO,  /* a {% macro %} node and the frame it was defined in */
    DUET__JV_FUNC,   /* a global function: range, namespace, dict, raise_exception, ... */
    DUET__JV_METHOD, /* a method looked up on a value: obj and name, applied by a call */
    DUET__JV_LOOP,   /* the loop variable of a for */
    DUET__JV_GEN,    /* what map / select / reject / selectattr / rejectattr / reverse return: a
                        generator or iterator in Jinja2, so always true, iterable once, and with
                        no len, index or printable form (u.l holds the items; jlist.used) */
} duet__jkind;

typedef struct duet__jstr {
    size_t n;  /* bytes, UTF-8 */
    char p[1]; /* n bytes and a NUL */
} duet__jstr;

typedef struct duet__jv {
    int kind; /* duet__jkind */
    union {
        bool b;
        int64_t i;
        double f;
        const duet__jstr *s;
        struct duet__jlist *l;
        struct duet__jdict *d;
        struct duet__jmacro *m;
        struct duet__jmethod *meth;
        struct duet__jloop *loop;
        int func; /* duet__jfunc */
    } u;
} duet__jv;

typedef struct duet__jlist {
    size_t n;
    duet__jv *v;   /* [n] */
    bool is_range; /* from range() (or a slice of one): Python prints, compares and adds it
                      unlike a list, so those are refused or answered as Python does */
    bool used;     /* a DUET__JV_GEN already iterated: Python would find it exhausted */
} duet__jlist;

typedef struct duet__jdict {
    size_t n, cap;
    duet__jv *keys; /* [n] in insertion order */
    duet__jv *vals; /* [n] */
} duet__jdict;

typedef struct duet__jmethod {
    duet__jv obj;
    const duet__jstr *name;
} duet__jmethod;

typedef struct duet__jmacro {
    const struct duet__jnode *node; /* the DUET__N_MACRO */
    struct duet__jframe *frame;     /* where it was defined: its names stay visible */
} duet__jmacro;

typedef struct duet__jloop {
    const duet__jlist *items;
    size_t i; /* index0 of the current item */
} duet__jloop;

typedef enum duet__jfunc {
    DUET__JF_RANGE,
    DUET__JF_NAMESPACE,
    DUET__JF_DICT,
    DUET__JF_RAISE,
    DUET__JF_STRFTIME,
    DUET__JF_CYCLE, /* loop.cycle is a method of the loop value */
} duet__jfunc;

/* ---- the tree ------------------------------------------------------------------------------ */

typedef enum duet__jnode_kind {
    /* expressions */
    DUET__N_LIT,     /* lit */
    DUET__N_NAME,    /* lit: the name */
    DUET__N_LIST,    /* kids */
    DUET__N_TUPLE,   /* kids */
    DUET__N_DICT,    /* kids: key, value, key, value ... */
    DUET__N_ATTR,    /* a.lit */
    DUET__N_INDEX,   /* a[b] */
    DUET__N_SLICE,   /* a[b:c:d], each of b c d may be NULL */
    DUET__N_CALL,    /* a(kids), keyword arguments are DUET__N_KWARG kids */
    DUET__N_KWARG,   /* lit=a */
    DUET__N_FILTER,  /* a|lit(kids); a NULL in a filter block */
    DUET__N_TEST,    /* a is [not] lit(kids); op: negated */
    DUET__N_UNARY,   /* op a */
    DUET__N_BINARY,  /* a op b */
    DUET__N_COMPARE, /* a op b op c ...: kids operands, ops[] operators */
    DUET__N_COND,    /* b if a else c */
    /* statements */
    DUET__N_BODY,        /* kids */
    DUET__N_TEXT,        /* lit */
    DUET__N_OUTPUT,      /* {{ a }} */
    DUET__N_IF,          /* if a: b (a body) else c (a body, an IF or NULL) */
    DUET__N_FOR,         /* for a in b if e: c else d */
    DUET__N_SET,         /* a = b, or a = body c (block set) piped through filters e */
    DUET__N_MACRO,       /* macro lit(kids: NAME nodes, a = default): c */
    DUET__N_FILTERBLOCK, /* filter e: c */
    DUET__N_BREAK,
    DUET__N_CONTINUE,
} duet__jnode_kind;

typedef enum duet__jop {
    DUET__OP_NONE,
    DUET__OP_ADD,
    DUET__OP_SUB,
    DUET__OP_MUL,
    DUET__OP_DIV,
    DUET__OP_FLOORDIV,
    DUET__OP_MOD,
    DUET__OP_POW,
    DUET__OP_CONCAT,
    DUET__OP_AND,
    DUET__OP_OR,
    DUET__OP_NOT,
    DUET__OP_NEG,
    DUET__OP_POS,
    DUET__OP_EQ,
    DUET__OP_NE,
    DUET__OP_LT,
    DUET__OP_LE,
    DUET__OP_GT,
    DUET__OP_GE,
    DUET__OP_IN,
    DUET__OP_NOTIN,
} duet__jop;

typedef struct duet__jnode duet__jnode;
struct duet__jnode {
    int kind;  /* duet__jnode_kind */
    int op;    /* duet__jop, or the negation of a test */
    int line;  /* template line, from 1 */
    int depth; /* nesting below this node, checked against max_depth */
    duet__jnode *a, *b, *c, *d, *e;
    duet__jnode **kids; /* [n] */
    size_t n;
    unsigned char *ops; /* [n - 1] comparison operators of a DUET__N_COMPARE */
    duet__jv lit;
};

/* ---- one render ---------------------------------------------------------------------------- */

typedef struct duet__jchunk duet__jchunk;

typedef struct duet__jframe {
    struct duet__jframe *parent;
    duet__jdict vars;
} duet__jframe;

typedef struct duet__jctx {
    duet__jchunk *chunks; /* the arena: every node and value of the render */
    size_t bytes;         /* arena bytes allocated so far */
    duet__jinja_limits lim;
    duet_status st; /* the first error; DUET_STATUS_OK until one */
    char *err;
    size_t err_size;
    uint64_t steps;
    int calls;           /* macro calls in progress */
    duet__buf *out;      /* where output goes now (a capture inside a macro or block set) */
    duet__jdict globals; /* the caller's variables */
    int line;            /* the line being evaluated, for errors that have none at hand */
    int breaking;        /* 1: break, 2: continue pending */
} duet__jctx;

/* Arena memory (zeroed); NULL after setting an error (out of memory, or over max_bytes). */
void *duet__jalloc(duet__jctx *c, size_t size);
/* Records the first error: "chat template line LINE: ..." and returns false. */
bool duet__jerr(duet__jctx *c, duet_status st, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void duet__jctx_fini(duet__jctx *c);

/* Values (jinja_value.c). */
duet__jv duet__jv_undef(void);
duet__jv duet__jv_none(void);
duet__jv duet__jv_bool(bool b);
duet__jv duet__jv_int(int64_t i);
duet__jv duet__jv_float(double f);
bool duet__jv_str(duet__jctx *c, const char *s, size_t n, duet__jv *out);
bool duet__jv_list(duet__jctx *c, size_t n, int kind, duet__jv *out);
bool duet__jv_dict(duet__jctx *c, int kind, duet__jv *out);
bool duet__jdict_set(duet__jctx *c, duet__jdict *d, duet__jv key, duet__jv val);
/* The value of KEY, or NULL. */
duet__jv *duet__jdict_get(duet__jdict *d, duet__jv key);
duet__jv *duet__jdict_getn(duet__jdict *d, const char *key, size_t n);
bool duet__jv_from_json(duet__jctx *c, const void *json, int depth, duet__jv *out);

bool duet__jv_truthy(duet__jv v);
bool duet__jv_is_num(duet__jv v);
double duet__jv_num(duet__jv v);
const char *duet__jv_type(duet__jv v);
bool duet__jv_eq(duet__jv a, duet__jv b, int depth);
/* *CMP < 0, 0, > 0 as Python orders A and B; false (no error set) when they do not compare. */
bool duet__jv_cmp(duet__jv a, duet__jv b, int depth, int *cmp);
/* Python's str() (REPR false) or repr() of V appended to B; false on an error (set on C). */
bool duet__jv_write(duet__jctx *c, int line, duet__buf *b, duet__jv v, bool repr, int depth);
/* V as a string value (str()). */
bool duet__jv_to_str(duet__jctx *c, int line, duet__jv v, duet__jv *out);
/* json.dumps(V, ensure_ascii=False, indent=INDENT (NULL: none)). */
bool duet__jv_json(duet__jctx *c, int line, duet__buf *b, duet__jv v, const duet__jstr *indent,
                   int level);
void duet__float_repr(double f, char out[40]);
/* Code points of a UTF-8 string. */
/* The first occurrence of NEEDLE (NN bytes) in HAY (HN bytes), or NULL. */
const char *duet__memmem(const char *hay, size_t hn, const char *needle, size_t nn);
size_t duet__jstr_chars(const duet__jstr *s);
bool duet__py_space(uint32_t cp);

/* Lexer and parser (jinja_lex.c, jinja_parse.c). */
typedef enum duet__jtok_kind {
    DUET__T_EOF,
    DUET__T_TEXT,
    DUET__T_BLOCK_BEGIN,
    DUET__T_BLOCK_END,
    DUET__T_VAR_BEGIN,
    DUET__T_VAR_END,
    DUET__T_NAME,
    DUET__T_INT,
    DUET__T_FLOAT,
    DUET__T_STRING,
    DUET__T_OP,
} duet__jtok_kind;

typedef struct duet__jtok {
    int kind; /* duet__jtok_kind */
    int line;
    const char *p; /* the token's text in the normalized source */
    size_t n;
    duet__jv v; /* TEXT and STRING: the string; INT and FLOAT: the number */
} duet__jtok;

bool duet__jinja_lex(duet__jctx *c, const char *src, size_t len, duet__jtok **toks, size_t *n);
bool duet__jinja_parse(duet__jctx *c, const duet__jtok *toks, size_t n, duet__jnode **root);

/* Evaluation (jinja_eval.c) and the builtins (jinja_builtin.c). */
typedef struct duet__jargs {
    duet__jv *pos; /* [npos] */
    size_t npos;
    const duet__jstr **kwname; /* [nkw] */
    duet__jv *kw;              /* [nkw] */
    size_t nkw;
} duet__jargs;

bool duet__jinja_run(duet__jctx *c, const duet__jnode *root);
bool duet__jinja_filter(duet__jctx *c, int line, const char *name, duet__jv v,
                        const duet__jargs *args, duet__jv *out);
bool duet__jinja_test(duet__jctx *c, int line, const char *name, duet__jv v,
                      const duet__jargs *args, bool *out);
bool duet__jinja_method(duet__jctx *c, int line, duet__jv obj, const char *name,
                        const duet__jargs *args, duet__jv *out);
bool duet__jinja_func(duet__jctx *c, int line, int func, const duet__jargs *args, duet__jv *out);
/* Whether NAME is a method of OBJ's Python type (a lookup of it is a method, not an item). */
bool duet__jinja_is_method(duet__jv obj, const char *name);
/* Gets attribute NAME of V (Jinja's getattr: attribute, then item); undefined when absent. */
bool duet__jinja_getattr(duet__jctx *c, int line, duet__jv v, const duet__jstr *name,
                         duet__jv *out);
bool duet__jinja_getitem(duet__jctx *c, int line, duet__jv v, duet__jv key, duet__jv *out);
/* Items of an iterable (list, tuple, string chars, dict keys; undefined: none) as a list. */
bool duet__jinja_iter(duet__jctx *c, int line, duet__jv v, duet__jlist **out);
/* str.strip / lstrip / rstrip (CHARS NULL or None: whitespace). */
bool duet__jinja_strip(duet__jctx *c, int line, const duet__jstr *s, const duet__jv *chars,
                       bool left, bool right, duet__jv *out);
/* str.replace(OLD, NEW[, COUNT]). */
bool duet__jinja_replace(duet__jctx *c, int line, const duet__jstr *s, const duet__jv *old,
                         const duet__jv *new_, const duet__jv *count, duet__jv *out);
/* Case mappings per code point (utf8proc's simple mappings): MODE 'u' upper, 'l' lower, 't'
 * str.title(), 'c' str.capitalize(), 'j' Jinja's title filter. */
bool duet__jinja_case(duet__jctx *c, const duet__jstr *s, char mode, duet__jv *out);
/* A keyword or positional argument: the Ith positional, else the keyword NAME, else NULL. */
const duet__jv *duet__jarg(const duet__jargs *a, size_t i, const char *name);

#endif
