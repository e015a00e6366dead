/*
 * Tokenizer benchmark (tokenizer): a tokenizer.json folder (--tokenizer DIR) loaded, a text
 * (--text FILE, else generated English words) encoded with special tokens, its ids decoded in one
 * shot and streamed id by id through a duet_detok. Each repetition is one full pass of each
 * operation; the median over --repeats is reported with MB/s (text bytes) and tokens/s beside it.
 * The word cache starts empty in every repetition's encode (a fresh load).
 */
#include "build_config.h"

#include <duet/tokenizer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* English-like text: common words, capitals, numbers and punctuation, from a fixed seed. */
static char *generate_text(size_t size)
{
    static const char *const words[] = {
        "the",      "of",    "and",       "to",          "in",         "is",      "that",   "for",
        "it",       "as",    "was",       "with",        "be",         "by",      "on",     "not",
        "he",       "this",  "are",       "or",          "his",        "from",    "at",     "which",
        "but",      "have",  "an",        "had",         "they",       "you",     "were",   "their",
        "one",      "all",   "we",        "can",         "her",        "has",     "there",  "been",
        "if",       "more",  "when",      "will",        "would",      "who",     "so",     "no",
        "language", "model", "tokenizer", "decoding",    "request",    "server",  "memory", "cache",
        "quickly",  "don't", "it's",      "speculative", "throughput", "latency", "batch",  "GPU",
    };
    char *text = malloc(size + 32);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    size_t n = 0;

    while (text && n < size) {
        const char *w;

        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w = words[x % (sizeof(words) / sizeof(words[0]))];
        if (x % 97 == 0)
            n += (size_t)snprintf(text + n, 32, "%u", (unsigned)(x >> 40) % 100000);
        else
            n += (size_t)snprintf(text + n, 32, "%s", w);
        text[n++] = x % 23 == 0 ? '.' : x % 17 == 0 ? ',' : x % 251 == 0 ? '\n' : ' ';
    }
    if (text)
        text[n < size ? n : size] = '\0';
    return text;
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        *len = (size_t)size;
        fclose(f);
        return buf;
    }
    free(buf);
    if (f)
        fclose(f);
    return NULL;
}

struct tok_samples {
    struct duet_bench_samples load, encode, decode, stream;
    size_t n_ids;
};

/* Streams IDS through a detokenizer; returns the bytes it produced, or 0 on an error. */
static size_t stream_all(const duet_tokenizer *tok, const int32_t *ids, size_t n)
{
    duet_detok *d;
    const char *piece;
    size_t len, total = 0;

    if (duet_detok_create(tok, false, &d) != DUET_STATUS_OK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (duet_detok_push(d, ids[i], &piece, &len) != DUET_STATUS_OK)
            break;
        total += len;
    }
    if (duet_detok_finish(d, &piece, &len) == DUET_STATUS_OK)
        total += len;
    duet_detok_destroy(d);
    return total;
}

/* One repetition of each operation; false (with a message) on an error. */
static bool repetition(const char *dir, const char *text, size_t len, struct tok_samples *s)
{
    char err[512] = "", *out;
    duet_tokenizer *tok;
    int32_t *ids = NULL;
    uint64_t t0 = duet__bench_now_ns();
    bool ok = false;

    if (duet_tokenizer_load(dir, &tok, err, sizeof(err)) != DUET_STATUS_OK) {
        fprintf(stderr, "duet-bench: tokenizer: %s\n", err);
        return false;
    }
    duet__bench_sample(&s->load, duet__bench_now_ns() - t0, 1);
    t0 = duet__bench_now_ns();
    if (duet_tokenizer_encode(tok, text, len, true, &ids, &s->n_ids) != DUET_STATUS_OK)
        goto out_destroy;
    duet__bench_sample(&s->encode, duet__bench_now_ns() - t0, 1);
    t0 = duet__bench_now_ns();
    if (duet_tokenizer_decode(tok, ids, s->n_ids, false, &out, NULL) != DUET_STATUS_OK)
        goto out_destroy;
    duet__bench_sample(&s->decode, duet__bench_now_ns() - t0, 1);
    duet_tokenizer_free(out);
    t0 = duet__bench_now_ns();
    ok = stream_all(tok, ids, s->n_ids) > 0 || s->n_ids == 0;
    duet__bench_sample(&s->stream, duet__bench_now_ns() - t0, s->n_ids ? s->n_ids : 1);
out_destroy:
    if (!ok)
        fprintf(stderr, "duet-bench: tokenizer: encoding or decoding failed\n");
    duet_tokenizer_free(ids);
    duet_tokenizer_destroy(tok);
    return ok;
}

static void report(json_t *results, const struct duet_bench_samples *s, const char *name,
                   size_t bytes, size_t tokens, const char *dir)
{
    struct duet_bench_result r;
    double sec;

    duet__bench_finish(s, name, &r);
    if (strcmp(name, "tokenizer_load") == 0) {
        duet__bench_report(results, &r, json_pack("{s:s}", "tokenizer", dir));
        return;
    }
    sec = r.ns_median * 1e-9;
    if (strcmp(name, "tokenizer_stream") == 0)
        sec *= (double)tokens; /* its samples are per token */
    duet__bench_report(results, &r,
                       json_pack("{s:s, s:I, s:I, s:f, s:f}", "tokenizer", dir, "text_bytes",
                                 (json_int_t)bytes, "tokens", (json_int_t)tokens, "mb_per_s",
                                 sec > 0 ? (double)bytes / 1e6 / sec : 0.0, "tokens_per_s",
                                 sec > 0 ? (double)tokens / sec : 0.0));
}

int duet__bench_tokenizer(const struct duet_bench_opts *o, json_t *results)
{
    struct tok_samples s = {0};
    size_t len = o->quick ? 64 << 10 : 4 << 20;
    char *text;
    bool ok = true;

    if (!o->tok.dir) {
        fprintf(stderr, "duet-bench: tokenizer: needs --tokenizer DIR (skipped)\n");
        return 77;
    }
    text = o->tok.text ? read_text(o->tok.text, &len) : generate_text(len);
    if (!text) {
        fprintf(stderr, "duet-bench: tokenizer: cannot read %s\n", o->tok.text);
        return 1;
    }
    len = strlen(text) < len && !o->tok.text ? strlen(text) : len;
    for (int r = 0; r < o->repeats && ok; r++)
        ok = repetition(o->tok.dir, text, len, &s);
    if (ok) {
        report(results, &s.load, "tokenizer_load", len, s.n_ids, o->tok.dir);
        report(results, &s.encode, "tokenizer_encode", len, s.n_ids, o->tok.dir);
        report(results, &s.decode, "tokenizer_decode", len, s.n_ids, o->tok.dir);
        report(results, &s.stream, "tokenizer_stream", len, s.n_ids, o->tok.dir);
    }
    free(text);
    return ok ? 0 : 1;
}
