/*
 * The chat-template lexer (jinja-int.h): Jinja2's lexer with transformers' settings —
 * trim_blocks, lstrip_blocks, keep_trailing_newline off.
 *
 *     "\r\n" and "\r" ─► "\n"; one trailing "\n" dropped
 *     text {% / {{ / {#  ─► TEXT, then the tag's tokens up to %} / }} / #}
 *
 * Whitespace control follows jinja2/lexer.py exactly: "{%-" strips all whitespace before the
 * tag, "-%}" all whitespace after it; otherwise lstrip_blocks removes spaces and tabs between
 * the start of a line and a block or comment tag (not "{{"), unless "{%+", and trim_blocks
 * removes the first newline after "%}" or "#}", unless "+%}". An end tag only counts at bracket
 * depth 0, so "{{ {'a': 1} }}" works. Comments vanish; {% raw %} bodies become TEXT.
 */
#include "jinja-int.h"

#include <stdlib.h>
#include <string.h>

typedef struct lexer {
    duet__jctx *c;
    const char *s; /* the normalized source */
    size_t n, pos;
    int line;
    bool line_starting; /* the last match ended with a newline (jinja2's line_starting) */
    duet__jtok *toks;   /* [cap] arena */
    size_t ntok, cap;
    int depth; /* open brackets inside a tag */
} lexer;

static bool add(lexer *L, int kind, const char *p, size_t n, int line, duet__jv v)
{
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        duet__jtok *t = duet__jalloc(L->c, cap * sizeof(*t));

        if (!t)
            return false;
        if (L->ntok)
            memcpy(t, L->toks, L->ntok * sizeof(*t));
        L->toks = t;
        L->cap = cap;
    }
    L->toks[L->ntok++] = (duet__jtok){.kind = kind, .line = line, .p = p, .n = n, .v = v};
    return true;
}

static int count_nl(const char *s, size_t n)
{
    int k = 0;

    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

/* Whitespace of Python's \s and str.rstrip(): the length of the space ending at S[N]. */
static size_t space_before(const char *s, size_t n)
{
    size_t k = n;

    while (k > 0) {
        size_t start = k - 1, len;

        while (start > 0 && ((unsigned char)s[start] & 0xc0) == 0x80)
            start--;
        if (!duet__py_space(duet__utf8_get(s + start, &len)))
            break;
        k = start;
    }
    return n - k;
}

static size_t space_after(const char *s, size_t n)
{
    size_t k = 0, len;

    while (k < n && duet__py_space(duet__utf8_get(s + k, &len)))
        k += len;
    return k;
}

/* The text before a tag, after "-" / lstrip_blocks, as a TEXT token. */
static bool emit_text(lexer *L, size_t start, size_t end, char sign, bool block)
{
    const char *t = L->s + start;
    size_t n = end - start;
    int line = L->line;
    duet__jv v;

    if (sign == '-') {
        n -= space_before(t, n);
    } else if (sign != '+' && block) {
        size_t l_pos = n;

        while (l_pos > 0 && t[l_pos - 1] != '\n')
            l_pos--;
        if ((l_pos > 0 || L->line_starting) && l_pos < n &&
            space_after(t + l_pos, n - l_pos) == n - l_pos)
            n = l_pos;
    }
    L->line += count_nl(L->s + start, end - start);
    if (n == 0)
        return true;
    return duet__jv_str(L->c, t, n, &v) && add(L, DUET__T_TEXT, t, n, line, v);
}

/* Past an end tag: "-" eats all whitespace, "+" none, else trim_blocks eats one newline. */
static void after_end(lexer *L, char sign, bool trim)
{
    size_t k = 0;

    if (sign == '-')
        k = space_after(L->s + L->pos, L->n - L->pos);
    else if (sign != '+' && trim && L->pos < L->n && L->s[L->pos] == '\n')
        k = 1;
    L->line += count_nl(L->s + L->pos, k);
    L->pos += k;
    L->line_starting = L->pos > 0 && L->s[L->pos - 1] == '\n';
}

static bool lex_comment(lexer *L)
{
    const char *end = NULL;
    size_t from = L->pos;
    char sign = 0;

    for (size_t i = from; i + 1 < L->n; i++)
        if (L->s[i] == '#' && L->s[i + 1] == '}') {
            end = L->s + i;
            break;
        }
    if (!end)
        return duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, L->line, "missing end of comment tag");
    if (end > L->s + from && (end[-1] == '-' || end[-1] == '+'))
        sign = end[-1];
    L->line += count_nl(L->s + from, (size_t)(end - L->s) - from);
    L->pos = (size_t)(end - L->s) + 2;
    after_end(L, sign, true);
    return true;
}

/* "{% raw %}" at POS (just past "{%" and its sign): its body becomes TEXT up to "endraw". */
static bool match_word_tag(const lexer *L, size_t at, const char *word, size_t *body)
{
    size_t k = at, w = strlen(word);

    k += space_after(L->s + k, L->n - k);
    if (L->n - k < w || memcmp(L->s + k, word, w) != 0)
        return false;
    k += w;
    k += space_after(L->s + k, L->n - k);
    if (k < L->n && L->s[k] == '-')
        k++;
    if (L->n - k < 2 || L->s[k] != '%' || L->s[k + 1] != '}')
        return false;
    *body = k + 2;
    return true;
}

static bool lex_raw(lexer *L, size_t body)
{
    char sign = L->s[body - 3] == '-' ? '-' : 0;

    L->line += count_nl(L->s + L->pos, body - L->pos);
    L->pos = body;
    if (sign == '-')
        after_end(L, '-', false);
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        size_t after;
        char s2 = L->s[i + 2];

        if (L->s[i] != '{' || L->s[i + 1] != '%')
            continue;
        if (!match_word_tag(L, i + 2 + (s2 == '-' || s2 == '+'), "endraw", &after))
            continue;
        if (!emit_text(L, L->pos, i, s2 == '-' || s2 == '+' ? s2 : 0, true))
            return false;
        L->pos = after;
        after_end(L, L->s[after - 3] == '-' ? '-' : 0, true);
        return true;
    }
    return duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, L->line, "missing end of raw directive");
}

static bool lex_string(lexer *L, size_t start);
static bool lex_number(lexer *L, size_t start);

static const char *const ops2[] = {"//", "**", "==", "!=", ">=", "<=", NULL};

static bool lex_op(lexer *L)
{
    const char *p = L->s + L->pos;
    size_t n = 1;

    for (int i = 0; ops2[i]; i++)
        if (L->n - L->pos >= 2 && memcmp(p, ops2[i], 2) == 0)
            n = 2;
    if (n == 1 && !strchr("+-/*%~[](){}><=.:|,;", *p))
        return duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, L->line, "unexpected char '%c'", *p);
    if (n == 1 && strchr("([{", *p))
        L->depth++;
    if (n == 1 && strchr(")]}", *p)) {
        if (L->depth == 0)
            return duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, L->line, "unexpected '%c'", *p);
        L->depth--;
    }
    L->pos += n;
    return add(L, DUET__T_OP, p, n, L->line, duet__jv_none());
}

static bool is_name_start(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

/* At depth 0: "-%}" / "%}" / "+%}" (or "-}}" / "}}") ends the tag. */
static bool end_tag(lexer *L, bool block, bool *done)
{
    const char *p = L->s + L->pos;
    size_t left = L->n - L->pos;
    char sign = 0, end = block ? '%' : '}';

    *done = false;
    if (L->depth > 0)
        return true;
    if (left >= 3 && (p[0] == '-' || (block && p[0] == '+')) && p[1] == end && p[2] == '}')
        sign = p[0];
    else if (!(left >= 2 && p[0] == end && p[1] == '}'))
        return true;
    L->pos += sign ? 3 : 2;
    *done = true;
    if (!add(L, block ? DUET__T_BLOCK_END : DUET__T_VAR_END, p, sign ? 3 : 2, L->line,
             duet__jv_none()))
        return false;
    after_end(L, sign, block);
    return true;
}

static bool lex_tag(lexer *L, bool block)
{
    int line = L->line;

    L->depth = 0;
    for (;;) {
        bool done;
        size_t sp = space_after(L->s + L->pos, L->n - L->pos);
        char ch;

        L->line += count_nl(L->s + L->pos, sp);
        L->pos += sp;
        if (L->pos >= L->n)
            return duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, line, "unexpected end of template");
        if (!end_tag(L, block, &done))
            return false;
        if (done)
            return true;
        ch = L->s[L->pos];
        if (ch == '\'' || ch == '"') {
            if (!lex_string(L, L->pos))
                return false;
        } else if (ch >= '0' && ch <= '9') {
            if (!lex_number(L, L->pos))
                return false;
        } else if (is_name_start(ch)) {
            size_t k = L->pos;

            while (k < L->n && (is_name_start(L->s[k]) || (L->s[k] >= '0' && L->s[k] <= '9')))
                k++;
            if (!add(L, DUET__T_NAME, L->s + L->pos, k - L->pos, L->line, duet__jv_none()))
                return false;
            L->pos = k;
        } else if (!lex_op(L)) {
            return false;
        }
    }
}

/* ---- literals ------------------------------------------------------------------------------ */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Python's unicode-escape of one backslash sequence at S (after the backslash): the code point
 * (or -1 to keep the backslash and the char) and the bytes consumed. */
static long unescape(const char *s, size_t left, size_t *used)
{
    static const char simple[] = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v\n\n";
    int digits = s[0] == 'x' ? 2 : s[0] == 'u' ? 4 : s[0] == 'U' ? 8 : 0;
    long cp = 0;

    *used = 1;
    for (int i = 0; simple[i]; i += 2)
        if (s[0] == simple[i])
            return s[0] == '\n' ? -2 : (unsigned char)simple[i + 1];
    if (s[0] >= '0' && s[0] <= '7') {
        size_t k = 0;

        while (k < 3 && k < left && s[k] >= '0' && s[k] <= '7')
            cp = cp * 8 + (s[k++] - '0');
        *used = k;
        return cp;
    }
    if (s[0] == 'N')
        return -5;
    if (!digits)
        return -1;
    if ((size_t)digits >= left)
        return -3;
    for (int i = 1; i <= digits; i++) {
        if (hexval(s[i]) < 0)
            return -3;
        cp = cp * 16 + hexval(s[i]);
    }
    *used = (size_t)digits + 1;
    return cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000) ? -3 : cp;
}

static bool lex_string(lexer *L, size_t start)
{
    char q = L->s[start], cpbuf[4];
    duet__buf b = {0};
    size_t k = start + 1;
    int line = L->line;
    duet__jv v;
    bool ok = true;

    while (ok && k < L->n && L->s[k] != q) {
        size_t used = 1;
        long cp =
            L->s[k] == '\\' && k + 1 < L->n ? unescape(L->s + k + 1, L->n - k - 1, &used) : -4;

        if (cp == -3 || cp == -5) {
            free(b.p);
            return cp == -5
                       ? duet__jerr(L->c, DUET_STATUS_UNSUPPORTED, line,
                                    "\\N{...} escapes are not supported")
                       : duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, line, "bad escape in a string");
        }
        if (cp >= 0)
            ok = duet__buf_add(&b, cpbuf, duet__utf8_put(cpbuf, (uint32_t)cp));
        else if (cp == -2)
            ok = true; /* backslash-newline: a line continuation */
        else
            ok = duet__buf_add(&b, L->s + k, cp == -1 ? 2 : 1);
        k += cp == -4 ? 1 : used + 1;
    }
    if (!ok || k >= L->n) {
        free(b.p);
        return ok ? duet__jerr(L->c, DUET_STATUS_BAD_FORMAT, line, "unterminated string")
                  : duet__jerr(L->c, DUET_STATUS_OUT_OF_MEMORY, line, "out of memory");
    }
    ok = duet__jv_str(L->c, b.p ? b.p : "", b.n, &v) &&
         add(L, DUET__T_STRING, L->s + start, k + 1 - start, line, v);
    free(b.p);
    L->line += count_nl(L->s + start, k - start);
    L->pos = k + 1;
    return ok;
}

/* Digits with single underscores between them; returns the end. */
static size_t digits_at(const char *s, size_t k, size_t n)
{
    if (k >= n || s[k] < '0' || s[k] > '9')
        return k;
    while (k < n && ((s[k] >= '0' && s[k] <= '9') ||
                     (s[k] == '_' && k + 1 < n && s[k + 1] >= '0' && s[k + 1] <= '9')))
        k++;
    return k;
}

static bool lex_number(lexer *L, size_t start)
{
    char buf[64];
    size_t k = digits_at(L->s, start, L->n), j = 0, e;
    bool is_float = false;
    duet__jv v;

    if (k + 1 < L->n && L->s[k] == '.' && digits_at(L->s, k + 1, L->n) > k + 1) {
        k = digits_at(L->s, k + 1, L->n);
        is_float = true;
    }
    if (k < L->n && (L->s[k] == 'e' || L->s[k] == 'E')) {
        e = k + 1 + (k + 1 < L->n && (L->s[k + 1] == '+' || L->s[k + 1] == '-'));
        if (digits_at(L->s, e, L->n) > e) {
            k = digits_at(L->s, e, L->n);
            is_float = true;
        }
    }
    for (size_t i = start; i < k && j + 1 < sizeof(buf); i++)
        if (L->s[i] != '_')
            buf[j++] = L->s[i];
    buf[j] = '\0';
    if (k - start >= sizeof(buf) - 1 || (!is_float && (j > 18)))
        return duet__jerr(L->c, DUET_STATUS_UNSUPPORTED, L->line,
                          "number literal '%.*s' is too long", (int)(k - start), L->s + start);
    v = is_float ? duet__jv_float(strtod(buf, NULL)) : duet__jv_int(strtoll(buf, NULL, 10));
    if (k < L->n && is_name_start(L->s[k]))
        return duet__jerr(L->c, DUET_STATUS_UNSUPPORTED, L->line,
                          "number literal '%.*s' is not supported", (int)(k + 1 - start),
                          L->s + start);
    L->pos = k;
    return add(L, is_float ? DUET__T_FLOAT : DUET__T_INT, L->s + start, k - start, L->line, v);
}

/* ---- the root state ------------------------------------------------------------------------ */

/* The next "{{", "{%" or "{#" at or after POS, or N. */
static size_t next_tag(const lexer *L)
{
    for (size_t i = L->pos; i + 1 < L->n; i++)
        if (L->s[i] == '{' && (L->s[i + 1] == '{' || L->s[i + 1] == '%' || L->s[i + 1] == '#'))
            return i;
    return L->n;
}

static bool lex_root(lexer *L)
{
    while (L->pos < L->n) {
        size_t t = next_tag(L), body;
        char kind, sign;

        if (t == L->n) {
            return emit_text(L, L->pos, L->n, 0, false);
        }
        kind = L->s[t + 1];
        sign = t + 2 < L->n && (L->s[t + 2] == '-' || L->s[t + 2] == '+') ? L->s[t + 2] : 0;
        if (!emit_text(L, L->pos, t, sign, kind != '{'))
            return false;
        L->line_starting = false;
        L->pos = t + 2 + (sign != 0);
        if (kind == '%' && match_word_tag(L, L->pos, "raw", &body)) {
            if (!lex_raw(L, body))
                return false;
        } else if (kind == '#') {
            if (!lex_comment(L))
                return false;
        } else if (!add(L, kind == '%' ? DUET__T_BLOCK_BEGIN : DUET__T_VAR_BEGIN, L->s + t, 2,
                        L->line, duet__jv_none()) ||
                   !lex_tag(L, kind == '%')) {
            return false;
        }
    }
    return true;
}

/* The source with "\r\n" and "\r" as "\n" and one trailing newline dropped, in the arena. */
static char *normalize(duet__jctx *c, const char *src, size_t len, size_t *n)
{
    char *s = duet__jalloc(c, len + 1);
    size_t k = 0;

    if (!s)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[k++] = '\n';
            i += i + 1 < len && src[i + 1] == '\n';
        } else {
            s[k++] = src[i];
        }
    }
    if (k > 0 && s[k - 1] == '\n')
        k--;
    *n = k;
    return s;
}

bool duet__jinja_lex(duet__jctx *c, const char *src, size_t len, duet__jtok **toks, size_t *n)
{
    lexer L = {.c = c, .line = 1, .line_starting = true};

    if (!(L.s = normalize(c, src, len, &L.n)) || !lex_root(&L) ||
        !add(&L, DUET__T_EOF, L.s + L.n, 0, L.line, duet__jv_none()))
        return false;
    *toks = L.toks;
    *n = L.ntok;
    return true;
}
