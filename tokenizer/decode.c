/*
 * Decoding: ids -> token strings -> the decoder chain -> UTF-8 text, one token at a time.
 *
 *   id ─► token ─► step 0 ─► step 1 ─► ... ─► raw bytes ─► UTF-8 assembler ─► out
 *                  (each step may hold state: ByteFallback's run of <0xXX> bytes, a Strip's
 *                   chars still to cut from the start, Metaspace's first-token rule)
 *
 * Hugging Face's decoders transform the whole list of tokens; the ones duet supports only ever
 * look at one token, at a run of byte tokens, or at the start of the text, so feeding tokens one
 * by one gives the same result as the whole list, in O(1) amortised per token. The assembler
 * holds back an incomplete UTF-8 char at the end (at most 3 bytes) and turns invalid sequences
 * into U+FFFD as a lossy UTF-8 decode does; duet_tokenizer_decode is push for every id, then
 * finish, so the one-shot and the streamed text are equal by construction.
 */
#include "tokenizer-int.h"

#include <stdlib.h>
#include <string.h>

typedef duet__buf dbuf;

struct duet_detok {
    const duet_tokenizer *t;
    bool skip_special;
    uint64_t seen[DUET__MAX_STEPS];       /* tokens that reached each step */
    uint32_t strip_left[DUET__MAX_STEPS]; /* a stream Strip's chars still to cut */
    dbuf tmp[DUET__MAX_STEPS];            /* each step's output for the current token */
    dbuf group;                           /* ByteFallback: the run of <0xXX> bytes */
    dbuf pending;                         /* bytes of an incomplete UTF-8 char */
    dbuf out;                             /* what the current call returns */
    uint64_t n_out_tokens;                /* tokens emitted (no decoder: joined with ' ') */
};

/* Appends bytes to the output through the assembler; FINAL flushes an incomplete char too. */
static bool emit(duet_detok *d, const char *s, size_t n, bool final)
{
    size_t used;

    if (!duet__buf_add(&d->pending, s, n) ||
        !duet__buf_fit(&d->out, d->out.n + d->pending.n * 3 + 1))
        return false;
    d->out.n +=
        duet__utf8_fix(d->pending.p, d->pending.n, d->out.p + d->out.n, final ? NULL : &used);
    d->out.p[d->out.n] = '\0';
    if (final)
        used = d->pending.n;
    memmove(d->pending.p, d->pending.p + used, d->pending.n - used);
    d->pending.n -= used;
    return true;
}

/* ByteLevel: each char back to its byte; a token with a char outside the map keeps its bytes. */
static bool step_byte_level(dbuf *o, const char *s, size_t n)
{
    size_t i = 0, k;

    for (; i < n; i += k) {
        int b = duet__cp_to_byte(duet__utf8_get(s + i, &k));
        char c = (char)b;

        if (b < 0) {
            o->n = 0;
            return duet__buf_add(o, s, n);
        }
        if (!duet__buf_add(o, &c, 1))
            return false;
    }
    return true;
}

static bool step_replace(dbuf *o, const char *s, size_t n, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);

    for (size_t i = 0; i < n;) {
        bool hit = i + fl <= n && memcmp(s + i, from, fl) == 0;

        if (!(hit ? duet__buf_add(o, to, tl) : duet__buf_add(o, s + i, 1)))
            return false;
        i += hit ? fl : 1;
    }
    return true;
}

/* Strip: cut up to *LEFT leading chars equal to the content char. */
static size_t strip_start(const char *s, size_t n, const char *ch, uint32_t *left, bool stream)
{
    size_t cl = strlen(ch), at = 0;

    while (*left && at + cl <= n && memcmp(s + at, ch, cl) == 0) {
        at += cl;
        (*left)--;
    }
    if (stream && at < n)
        *left = 0; /* a different char: the start of the text is over */
    return at;
}

/* Metaspace: the replacement becomes ' ', and disappears on the first token when prepending. */
static bool step_metaspace(dbuf *o, const char *s, size_t n, const duet__step *st, bool first)
{
    size_t rl = strlen(st->str);

    for (size_t i = 0; i < n;) {
        bool hit = i + rl <= n && memcmp(s + i, st->str, rl) == 0;

        if (hit && !(first && st->flag) && !duet__buf_add(o, " ", 1))
            return false;
        if (!hit && !duet__buf_add(o, s + i, 1))
            return false;
        i += hit ? rl : 1;
    }
    return true;
}

static bool run(duet_detok *d, uint32_t k, const char *s, size_t n);

/* A finished run of byte tokens: its bytes when they are UTF-8, else U+FFFD for each byte. */
static bool flush_group(duet_detok *d, uint32_t k)
{
    dbuf g = d->group;
    bool ok = true;
    size_t i = 0, c;

    if (g.n == 0)
        return true;
    while (i < g.n && (c = duet__utf8_len((const unsigned char *)g.p + i, g.n - i)) != 0)
        i += c;
    d->group = (dbuf){0};
    if (i == g.n)
        ok = run(d, k + 1, g.p, g.n);
    for (size_t b = 0; i != g.n && b < g.n && ok; b++)
        ok = run(d, k + 1, "\xef\xbf\xbd", 3);
    free(g.p);
    return ok;
}

static bool byte_token(const char *s, size_t n, char *byte)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *h, *l;

    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return false;
    h = memchr(hex, s[3], 16);
    l = memchr(hex, s[4], 16);
    if (!h || !l || !s[3] || !s[4])
        return false;
    *byte = (char)((h - hex) << 4 | (l - hex));
    return true;
}

static bool run_step(duet_detok *d, uint32_t k, const char *s, size_t n, dbuf *o)
{
    const duet__step *st = &d->t->dec[k];
    bool first = d->seen[k]++ == 0;
    size_t cut;

    switch (st->kind) {
    case DUET__DEC_BYTE_LEVEL:
        return step_byte_level(o, s, n);
    case DUET__DEC_REPLACE:
        return step_replace(o, s, n, st->str, st->str2);
    case DUET__DEC_METASPACE:
        return step_metaspace(o, s, n, st, first);
    case DUET__DEC_STRIP:
        if (!st->flag)
            d->strip_left[k] = st->start;
        cut = strip_start(s, n, st->str, &d->strip_left[k], st->flag);
        return duet__buf_add(o, s + cut, n - cut);
    default: /* Fuse: joining is what the stream does anyway */
        return duet__buf_add(o, s, n);
    }
}

/* Token S (N bytes) through steps K.. of the chain, then to the output. */
static bool run(duet_detok *d, uint32_t k, const char *s, size_t n)
{
    char byte;

    for (; k < d->t->n_dec; k++) {
        dbuf *o = &d->tmp[k];

        if (d->t->dec[k].kind == DUET__DEC_BYTE_FALLBACK) {
            if (byte_token(s, n, &byte))
                return duet__buf_add(&d->group, &byte, 1);
            if (!flush_group(d, k))
                return false;
            continue;
        }
        o->n = 0;
        if (!run_step(d, k, s, n, o))
            return false;
        s = o->p ? o->p : "";
        n = o->n;
    }
    if (d->t->n_dec == 0 && d->n_out_tokens++ && !emit(d, " ", 1, false))
        return false;
    return emit(d, s, n, false);
}

duet_status duet_detok_create(const duet_tokenizer *t, bool skip_special, duet_detok **out)
{
    duet_detok *d;

    if (!t || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    d = calloc(1, sizeof(*d));
    if (!d)
        return DUET_STATUS_OUT_OF_MEMORY;
    d->t = t;
    d->skip_special = skip_special;
    duet_detok_reset(d);
    *out = d;
    return DUET_STATUS_OK;
}

void duet_detok_reset(duet_detok *d)
{
    for (uint32_t k = 0; k < d->t->n_dec; k++) {
        d->seen[k] = 0;
        d->strip_left[k] = d->t->dec[k].start;
    }
    d->group.n = 0;
    d->pending.n = 0;
    d->out.n = 0;
    d->n_out_tokens = 0;
}

static void result(duet_detok *d, const char **text, size_t *len)
{
    if (text)
        *text = d->out.p ? d->out.p : "";
    if (len)
        *len = d->out.n;
}

duet_status duet_detok_push(duet_detok *d, int32_t id, const char **text, size_t *len)
{
    const duet_tokenizer *t = d->t;

    d->out.n = 0;
    result(d, text, len);
    if (id < 0 || (uint32_t)id >= t->n_ids || t->tok_len[id] == UINT32_MAX)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (d->skip_special && t->special[id])
        return DUET_STATUS_OK;
    if (!run(d, 0, t->arena.data + t->tok_off[id], t->tok_len[id]))
        return DUET_STATUS_OUT_OF_MEMORY;
    result(d, text, len);
    return DUET_STATUS_OK;
}

duet_status duet_detok_finish(duet_detok *d, const char **text, size_t *len)
{
    bool ok = true;

    d->out.n = 0;
    for (uint32_t k = 0; k < d->t->n_dec && ok; k++)
        if (d->t->dec[k].kind == DUET__DEC_BYTE_FALLBACK)
            ok = flush_group(d, k);
    ok = ok && emit(d, "", 0, true);
    result(d, text, len);
    return ok ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

void duet_detok_destroy(duet_detok *d)
{
    if (!d)
        return;
    for (uint32_t k = 0; k < DUET__MAX_STEPS; k++)
        free(d->tmp[k].p);
    free(d->group.p);
    free(d->pending.p);
    free(d->out.p);
    free(d);
}

duet_status duet_tokenizer_decode(const duet_tokenizer *t, const int32_t *ids, size_t n,
                                  bool skip_special, char **text, size_t *len)
{
    duet_detok *d = NULL;
    dbuf all = {0};
    const char *s;
    size_t sl;
    duet_status st;

    if (!t || (!ids && n) || !text)
        return DUET_STATUS_INVALID_ARGUMENT;
    *text = NULL;
    st = duet_detok_create(t, skip_special, &d);
    for (size_t i = 0; i <= n && st == DUET_STATUS_OK; i++) {
        st = i < n ? duet_detok_push(d, ids[i], &s, &sl) : duet_detok_finish(d, &s, &sl);
        if (st == DUET_STATUS_OK && !duet__buf_add(&all, s, sl))
            st = DUET_STATUS_OUT_OF_MEMORY;
    }
    duet_detok_destroy(d);
    if (st == DUET_STATUS_OK && !all.p && !duet__buf_add(&all, "", 0))
        st = DUET_STATUS_OUT_OF_MEMORY;
    if (st != DUET_STATUS_OK) {
        free(all.p);
        return st;
    }
    *text = all.p;
    if (len)
        *len = all.n;
    return DUET_STATUS_OK;
}
