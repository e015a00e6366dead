/*
 * Encoding, in Hugging Face's order:
 *
 *   text ─► U+FFFD for invalid UTF-8 ─► split around added tokens (longest match first, in the
 *   raw text) ─► each section: normalizers ─► pre-tokenizers (spans) ─► ByteLevel byte -> char
 *   mapping ─► BPE per span ─► post-processor ids around the whole
 *
 * The working buffers (duet__enc) grow as needed and are reused for every section and word of
 * one call; nothing is allocated per word once they are large enough.
 */
#include "tokenizer-int.h"

#define PCRE2_CODE_UNIT_WIDTH DUET__PCRE2_CODE_UNIT_WIDTH
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct span {
    size_t off, len;
} span;

typedef duet__buf buf;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

typedef struct duet__enc {
    const duet_tokenizer *t;
    buf text, next; /* the section's text, and the next step's */
    spans cur, out; /* pieces of text, and the next step's */
    buf word;       /* one span after the byte -> char mapping */
    buf sect;       /* a normalized section, split around normalized added tokens */
    pcre2_match_data *md;
    pcre2_match_context *mctx; /* the match limit, scaled to the text (split_span) */
    duet__bpe_scratch bpe;
    duet__ids ids;
    bool regex_failed; /* PCRE2 gave up (its match or depth limit), not a plain no-match */
} duet__enc;

static bool span_add(spans *s, size_t off, size_t len)
{
    if (len == 0)
        return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        span *v = realloc(s->v, cap * sizeof(*v));

        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){off, len};
    return true;
}

static void swap_text(duet__enc *e)
{
    buf tb = e->text;
    spans ts = e->cur;

    e->text = e->next;
    e->next = tb;
    e->next.n = 0;
    e->cur = e->out;
    e->out = ts;
    e->out.n = 0;
}

/* ---- normalizers -------------------------------------------------------------------------- */

static bool replace_all(duet__enc *e, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), i = 0;

    e->next.n = 0;
    while (i < e->text.n) {
        if (i + fl <= e->text.n && memcmp(e->text.p + i, from, fl) == 0) {
            if (!duet__buf_add(&e->next, to, tl))
                return false;
            i += fl;
        } else if (!duet__buf_add(&e->next, e->text.p + i++, 1)) {
            return false;
        }
    }
    return true;
}

/* NFC of LEN bytes at S appended to OUT (utf8proc). */
static bool nfc_append(buf *out, const char *s, size_t len)
{
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t n;
    bool ok;

    n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &r,
                     UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0)
        return false;
    ok = duet__buf_add(out, (const char *)r, (size_t)n);
    free(r);
    return ok;
}

/* NFC, touching only what can change. Chars below U+0300 (lead bytes below 0xCC) are starters
 * that never combine with what precedes them and are their own NFC, so the text can be cut
 * before any of them: only a run of chars from U+0300 up, with the char before it, goes through
 * utf8proc; the rest (all of plain English) is copied. */
static bool nfc(duet__enc *e)
{
    const char *s = e->text.p;
    size_t n = e->text.n, done = 0, i = 0, prev = 0;

    e->next.n = 0;
    while (i < n) {
        size_t end;

        if ((unsigned char)s[i] < 0xcc) {
            prev = i++;
            while (i < n && ((unsigned char)s[i] & 0xc0) == 0x80)
                i++;
            continue;
        }
        for (end = i;
             end < n && ((unsigned char)s[end] >= 0xcc || ((unsigned char)s[end] & 0xc0) == 0x80);)
            end++;
        if (!duet__buf_add(&e->next, s + done, prev - done) ||
            !nfc_append(&e->next, s + prev, end - prev))
            return false;
        done = prev = i = end;
    }
    return duet__buf_add(&e->next, s + done, n - done);
}

static bool normalize(duet__enc *e)
{
    for (uint32_t i = 0; i < e->t->n_norm; i++) {
        const duet__step *s = &e->t->norm[i];
        bool ok = true;

        if (s->kind == DUET__NORM_NFC)
            ok = nfc(e);
        else if (s->kind == DUET__NORM_REPLACE)
            ok = replace_all(e, s->str, s->str2);
        else if (e->text.n) /* Prepend: only to a non-empty text */
            ok = duet__buf_add(&e->next, s->str, strlen(s->str)) &&
                 duet__buf_add(&e->next, e->text.p, e->text.n);
        if (!ok)
            return false;
        if (s->kind != DUET__NORM_PREPEND || e->text.n)
            swap_text(e);
    }
    e->cur.n = 0;
    return span_add(&e->cur, 0, e->text.n);
}

/* ---- pre-tokenizers ----------------------------------------------------------------------- */

/* PCRE2's default match limit (10^7 backtracking steps per match) stops the split regexes on
 * one whitespace run of a few MB (Llama 3's `\s*[\r\n]+` alternative scans the run and backs
 * off it char by char before `\s+(?!\S)` takes it). The pre-tokenizer regexes do work
 * proportional to the run they match, so each match may take a fixed multiple of the text left:
 * long inputs encode, and a regex that really backtracks without bound still stops. */
#define MATCH_LIMIT_BASE 10000000u
#define MATCH_LIMIT_PER_BYTE 16u

/* Matches and the gaps between them both become spans (behavior "Isolated"). */
static bool split_span(duet__enc *e, pcre2_code *code, span sp)
{
    const char *subj = e->text.p + sp.off;
    size_t pos = 0, last = 0;

    while (pos < sp.len) {
        size_t left = sp.len - pos;
        uint32_t limit = left > (UINT32_MAX - MATCH_LIMIT_BASE) / MATCH_LIMIT_PER_BYTE
                             ? UINT32_MAX
                             : MATCH_LIMIT_BASE + (uint32_t)left * MATCH_LIMIT_PER_BYTE;
        int rc;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t k;

        pcre2_set_match_limit(e->mctx, limit);
        rc = pcre2_match(code, (PCRE2_SPTR)subj, sp.len, pos, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            e->regex_failed = true;
            return false;
        }
        if (ov[1] == ov[0]) { /* an empty match: try again one char further */
            k = duet__utf8_len((const unsigned char *)subj + ov[0], sp.len - ov[0]);
            pos = ov[0] + (k ? k : 1);
            continue;
        }
        if (!span_add(&e->out, sp.off + last, ov[0] - last) ||
            !span_add(&e->out, sp.off + ov[0], ov[1] - ov[0]))
            return false;
        last = pos = ov[1];
    }
    return span_add(&e->out, sp.off + last, sp.len - last);
}

static bool split_all(duet__enc *e, pcre2_code *code)
{
    e->out.n = 0;
    for (size_t i = 0; i < e->cur.n; i++)
        if (!split_span(e, code, e->cur.v[i]))
            return false;
    spans t = e->cur;
    e->cur = e->out;
    e->out = t;
    return true;
}

/* ByteLevel's add_prefix_space: a space before every span that does not start with one. */
static bool prefix_spaces(duet__enc *e)
{
    e->next.n = 0;
    e->out.n = 0;
    for (size_t i = 0; i < e->cur.n; i++) {
        span sp = e->cur.v[i];
        size_t at = e->next.n;

        if ((e->text.p[sp.off] != ' ' && !duet__buf_add(&e->next, " ", 1)) ||
            !duet__buf_add(&e->next, e->text.p + sp.off, sp.len) ||
            !span_add(&e->out, at, e->next.n - at))
            return false;
    }
    swap_text(e);
    return true;
}

/* Metaspace (first, on the whole section): ' ' -> replacement, the prefix, and with split a new
 * span before every replacement (behavior "MergedWithNext"). */
static bool metaspace(duet__enc *e, const duet__step *s, bool section_first)
{
    size_t rl = strlen(s->str), start = 0;

    if (!replace_all(e, " ", s->str))
        return false;
    swap_text(e);
    if ((s->start == 1 || (s->start == 2 && section_first)) &&
        (e->text.n < rl || memcmp(e->text.p, s->str, rl) != 0)) {
        if (!duet__buf_add(&e->next, s->str, rl) || !duet__buf_add(&e->next, e->text.p, e->text.n))
            return false;
        swap_text(e);
    }
    e->cur.n = 0;
    if (!s->use_regex)
        return span_add(&e->cur, 0, e->text.n);
    for (size_t i = 1; i + rl <= e->text.n; i++) {
        if (memcmp(e->text.p + i, s->str, rl) == 0) {
            if (!span_add(&e->cur, start, i - start))
                return false;
            start = i;
        }
    }
    return span_add(&e->cur, start, e->text.n - start);
}

static bool pre_tokenize(duet__enc *e, bool section_first)
{
    for (uint32_t i = 0; i < e->t->n_pre; i++) {
        const duet__step *s = &e->t->pre[i];
        bool ok = true;

        if (s->kind == DUET__PRE_METASPACE)
            ok = metaspace(e, s, section_first);
        else if (s->kind == DUET__PRE_BYTE_LEVEL && s->flag)
            ok = prefix_spaces(e);
        if (ok && s->code)
            ok = split_all(e, s->code);
        if (!ok)
            return false;
    }
    return true;
}

/* SentencePiece-style sections (sp_cut): a new span before each U+2581 that follows another
 * char. No token spans such a cut, so BPE on the pieces equals BPE on the whole, and a long
 * text becomes short, cacheable words instead of one word the length of the text. */
static bool sp_cut(duet__enc *e)
{
    static const char meta[] = "\xe2\x96\x81";
    const char *s = e->text.p;

    e->out.n = 0;
    for (size_t i = 0; i < e->cur.n; i++) {
        size_t start = e->cur.v[i].off, end = start + e->cur.v[i].len;

        for (size_t p = start + 3; p + 3 <= end; p++) {
            if (memcmp(s + p, meta, 3) != 0 || memcmp(s + p - 3, meta, 3) == 0)
                continue;
            if (!span_add(&e->out, start, p - start))
                return false;
            start = p;
        }
        if (!span_add(&e->out, start, end - start))
            return false;
    }
    spans t = e->cur;
    e->cur = e->out;
    e->out = t;
    return true;
}

/* ---- sections ----------------------------------------------------------------------------- */

static duet_status encode_span(duet__enc *e, span sp)
{
    const char *w = e->text.p + sp.off;
    size_t len = sp.len;

    if (e->t->byte_level) {
        e->word.n = 0;
        if (!duet__buf_fit(&e->word, sp.len * 2 + 1))
            return DUET_STATUS_OUT_OF_MEMORY;
        for (size_t i = 0; i < sp.len; i++)
            e->word.n +=
                duet__utf8_put(e->word.p + e->word.n, duet__byte_to_cp[(unsigned char)w[i]]);
        w = e->word.p;
        len = e->word.n;
    }
    return duet__bpe_word(e->t, &e->bpe, w, len, &e->ids);
}

/* One piece of normalized text: pre-tokenizers, then BPE on every span. */
static duet_status encode_piece(duet__enc *e, const char *s, size_t len, bool section_first)
{
    duet_status st = DUET_STATUS_OK;

    if (len == 0)
        return DUET_STATUS_OK;
    e->text.n = 0;
    e->next.n = 0;
    e->cur.n = 0;
    if (!duet__buf_add(&e->text, s, len) || !span_add(&e->cur, 0, len) ||
        !pre_tokenize(e, section_first) || (e->t->sp_cut && !sp_cut(e)))
        return e->regex_failed ? DUET_STATUS_UNSUPPORTED : DUET_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < e->cur.n && st == DUET_STATUS_OK; i++)
        st = encode_span(e, e->cur.v[i]);
    return st;
}

/* The longest of the N added tokens A (sorted longest first) at TEXT + I, or NULL. */
static const duet__added *match_added(const duet_tokenizer *t, const duet__added *a, uint32_t n,
                                      const bool *first, const char *text, size_t len, size_t i)
{
    if (!first[(unsigned char)text[i]])
        return NULL;
    for (uint32_t k = 0; k < n; k++)
        if (a[k].len <= len - i && memcmp(text + i, t->arena.data + a[k].off, a[k].len) == 0)
            return &a[k];
    return NULL;
}

/* single_word: no word char just before BEGIN or just after END. */
static bool single_word_ok(const char *text, size_t len, size_t begin, size_t end)
{
    size_t k;

    return (begin == 0 || !duet__cp_is_word(duet__utf8_prev(text, begin, &k))) &&
           (end == len || !duet__cp_is_word(duet__utf8_get(text + end, &k)));
}

typedef duet_status (*section_fn)(duet__enc *e, const char *s, size_t len, bool first);

/* Splits TEXT (valid UTF-8) around the added tokens of A: the text between goes to FN, a token
 * becomes its id. As Hugging Face's AddedVocabulary: the leftmost longest match wins; a
 * single_word match with a word char beside it is dropped and the search goes on after it;
 * lstrip / rstrip take the Unicode whitespace beside a token with it (lstrip never reaching back
 * into the previous token). */
static duet_status split_added(duet__enc *e, const duet__added *a, uint32_t n, const bool *first,
                               const char *text, size_t len, bool text_first, section_fn fn)
{
    size_t start = 0, i = 0, k;
    duet_status st;

    while (i < len) {
        const duet__added *m = match_added(e->t, a, n, first, text, len, i);
        size_t end = i;

        if (!m) {
            i++;
            continue;
        }
        if (m->single_word && !single_word_ok(text, len, i, i + m->len)) {
            i += m->len;
            continue;
        }
        while (m->lstrip && end > start && duet__cp_is_space(duet__utf8_prev(text, end, &k)))
            end -= k;
        st = fn(e, text + start, end - start, text_first && start == 0);
        if (st != DUET_STATUS_OK)
            return st;
        if (!duet__ids_push(&e->ids, m->id))
            return DUET_STATUS_OUT_OF_MEMORY;
        i += m->len;
        while (m->rstrip && i < len && duet__cp_is_space(duet__utf8_get(text + i, &k)))
            i += k;
        start = i;
    }
    return fn(e, text + start, len - start, text_first && start == 0);
}

/* A section of raw text between added tokens: normalized, then split around the normalized added
 * tokens when there are any. */
static duet_status encode_section(duet__enc *e, const char *s, size_t len, bool section_first)
{
    const duet_tokenizer *t = e->t;

    if (len == 0)
        return DUET_STATUS_OK;
    e->text.n = 0;
    e->next.n = 0;
    if (!duet__buf_add(&e->text, s, len) || !normalize(e))
        return DUET_STATUS_OUT_OF_MEMORY;
    if (t->n_nadded == 0)
        return encode_piece(e, e->text.p, e->text.n, section_first);
    e->sect.n = 0;
    if (!duet__buf_add(&e->sect, e->text.p, e->text.n))
        return DUET_STATUS_OUT_OF_MEMORY;
    return split_added(e, t->nadded, t->n_nadded, t->nadded_first, e->sect.p, e->sect.n,
                       section_first, encode_piece);
}

static duet_status encode_text(duet__enc *e, const char *text, size_t n)
{
    const duet_tokenizer *t = e->t;

    return split_added(e, t->added, t->n_added, t->added_first, text, n, true, encode_section);
}

duet_status duet__normalize_text(const duet_tokenizer *t, const char *text, size_t len, char **out,
                                 size_t *out_len)
{
    duet__enc e = {.t = t};
    bool ok = duet__buf_add(&e.text, text, len) && normalize(&e) && duet__buf_add(&e.text, "", 0);

    *out = ok ? e.text.p : NULL;
    *out_len = ok ? e.text.n : 0;
    if (ok)
        e.text.p = NULL;
    free(e.text.p);
    free(e.next.p);
    free(e.cur.v);
    free(e.out.v);
    return ok ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

static void enc_fini(duet__enc *e)
{
    free(e->text.p);
    free(e->next.p);
    free(e->word.p);
    free(e->sect.p);
    free(e->cur.v);
    free(e->out.v);
    free(e->bpe.sym);
    free(e->bpe.heap);
    pcre2_match_data_free(e->md);
    pcre2_match_context_free(e->mctx);
}

duet_status duet_tokenizer_encode(const duet_tokenizer *t, const char *text, size_t len,
                                  bool add_special, int32_t **ids, size_t *n)
{
    duet__enc e = {.t = t};
    duet_status st = DUET_STATUS_OUT_OF_MEMORY;
    size_t clean_len;
    char *clean;

    if (!t || (!text && len) || !ids || !n)
        return DUET_STATUS_INVALID_ARGUMENT;
    *ids = NULL;
    *n = 0;
    clean = duet__utf8_sanitize(text ? text : "", len, &clean_len);
    e.md = pcre2_match_data_create(4, NULL);
    e.mctx = pcre2_match_context_create(NULL);
    if (!clean || !e.md || !e.mctx)
        goto out_free;
    for (uint32_t i = 0; i < t->n_prefix * add_special; i++)
        if (!duet__ids_push(&e.ids, t->prefix[i]))
            goto out_free;
    st = encode_text(&e, clean, clean_len);
    for (uint32_t i = 0; i < t->n_suffix * add_special && st == DUET_STATUS_OK; i++)
        if (!duet__ids_push(&e.ids, t->suffix[i]))
            st = DUET_STATUS_OUT_OF_MEMORY;
    if (st == DUET_STATUS_OK) {
        *ids = e.ids.v;
        *n = e.ids.n;
        e.ids.v = NULL;
    }
out_free:
    free(e.ids.v);
    free(clean);
    enc_fini(&e);
    return st;
}
