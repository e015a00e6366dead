/*
 * gguf-tokenizer-write DIR OUT.gguf [PRE [MODEL.gguf]]: a GGUF file whose tokenizer.ggml.* holds
 * DIR/tokenizer.json's tokenizer, as a converter would write it, for the tests of the embedded
 * tokenizer (gguf_tokenizer_ref.sh); no tensors, or MODEL.gguf's metadata (but its tokenizer.*
 * keys and architecture) and tensors after the tokenizer's keys:
 *
 *   byte_fallback BPE ──► "llama": tokens, scores, token_type (byte / unknown / control /
 *                         user-defined / normal); a token's score is minus the rank of the first
 *                         merge that makes it (SentencePiece's BPE scores rank its pieces so),
 *                         0 for specials and bytes, -1e9 for single chars
 *   other BPE         ──► "gpt2": tokens, merges "left right", token_type, tokenizer.ggml.pre PRE
 *   bos / eos ids     ──► from tokenizer_config.json's bos_token / eos_token; add_bos_token from
 *                         whether post_processor's "single" starts with a special token
 *   chat_template     ──► tokenizer.chat_template
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STRING = 8, T_ARRAY = 9 };

static FILE *out;
static uint64_t n_kv;

static void w64(uint64_t v)
{
    fwrite(&v, 8, 1, out); /* little-endian hosts only: a test tool */
}

static void w32(uint32_t v)
{
    fwrite(&v, 4, 1, out);
}

static void wstr(const char *s, size_t len)
{
    w64(len);
    fwrite(s, 1, len, out);
}

static void key(const char *k, uint32_t type)
{
    wstr(k, strlen(k));
    w32(type);
    n_kv++;
}

/* ---- MODEL.gguf's metadata and tensors, copied after the tokenizer's keys ---------------- */

static unsigned char *model;
static size_t model_size, model_pos;

static uint64_t rd(unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = n; i-- > 0;)
        v = v << 8 | model[model_pos + i];
    model_pos += n;
    return v;
}

static void skip_value(uint32_t type)
{
    static const unsigned size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

    if (type == T_STRING) {
        model_pos += rd(8);
    } else if (type == T_ARRAY) {
        uint32_t at = (uint32_t)rd(4);
        uint64_t n = rd(8);

        for (uint64_t i = 0; i < n; i++)
            skip_value(at);
    } else {
        model_pos += size[type];
    }
}

/* Copies MODEL's key/value pairs (but tokenizer.* and general.architecture), then its tensor
 * infos and data; returns the tensor count. */
static uint64_t copy_model(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint64_t n_t, n, align = 32;
    size_t start, data;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (model_size = (size_t)ftell(f)) < 24 ||
        !(model = malloc(model_size)) || fseek(f, 0, SEEK_SET) != 0 ||
        fread(model, 1, model_size, f) != model_size) {
        fprintf(stderr, "gguf-tokenizer-write: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    model_pos = 8;
    n_t = rd(8);
    n = rd(8);
    for (uint64_t i = 0; i < n; i++) {
        size_t at = model_pos, klen = (size_t)rd(8);
        const char *k = (const char *)model + model_pos;
        uint32_t type;

        model_pos += klen;
        type = (uint32_t)rd(4);
        if (klen == 17 && memcmp(k, "general.alignment", 17) == 0)
            align = (uint32_t)(model[model_pos] | model[model_pos + 1] << 8 |
                               model[model_pos + 2] << 16 | (uint32_t)model[model_pos + 3] << 24);
        skip_value(type);
        if ((klen >= 10 && memcmp(k, "tokenizer.", 10) == 0) ||
            (klen == 20 && memcmp(k, "general.architecture", 20) == 0))
            continue;
        fwrite(model + at, 1, model_pos - at, out);
        n_kv++;
    }
    start = model_pos;
    for (uint64_t i = 0; i < n_t; i++) {
        model_pos += rd(8);
        model_pos += 8 * rd(4) + 4 + 8;
    }
    fwrite(model + start, 1, model_pos - start, out);
    data = (model_pos + align - 1) / align * align;
    while (ftell(out) % (long)align)
        fputc(0, out);
    fwrite(model + data, 1, model_size - data, out);
    free(model);
    return n_t;
}

static const char *token_str(json_t *v)
{
    return json_string_value(json_is_object(v) ? json_object_get(v, "content") : v);
}

static int fail(const char *what)
{
    fprintf(stderr, "gguf-tokenizer-write: %s\n", what);
    return 1;
}

/* Splits merge M into L + R (a "l r" string or an array of two). */
static void merge_parts(json_t *m, char *buf, size_t size, const char **l, const char **r)
{
    if (json_is_array(m)) {
        *l = json_string_value(json_array_get(m, 0));
        *r = json_string_value(json_array_get(m, 1));
        return;
    }
    snprintf(buf, size, "%s", json_string_value(m));
    *l = buf;
    *r = strchr(buf, ' ');
    if (*r)
        *(char *)(*r)++ = '\0';
}

int main(int argc, char **argv)
{
    char path[4096], buf[2048], cat[4096];
    json_t *tj, *cfg, *vocab, *merges, *added, *v, *first;
    const char **tok, *k;
    int32_t *type, bos = -1, eos = -1;
    float *score;
    size_t n = 0, i;
    bool spm, add_bos;
    long pos;
    uint64_t n_tensors;

    if (argc < 3)
        return fail("usage: gguf-tokenizer-write DIR OUT.gguf [PRE [MODEL.gguf]]");
    snprintf(path, sizeof(path), "%s/tokenizer.json", argv[1]);
    if (!(tj = json_load_file(path, 0, NULL)))
        return fail("cannot read tokenizer.json");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", argv[1]);
    cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, NULL);
    vocab = json_object_get(json_object_get(tj, "model"), "vocab");
    merges = json_object_get(json_object_get(tj, "model"), "merges");
    added = json_object_get(tj, "added_tokens");
    spm = json_is_true(json_object_get(json_object_get(tj, "model"), "byte_fallback"));
    json_object_foreach(vocab, k, v) if ((size_t)json_integer_value(v) + 1 > n) n =
        (size_t)json_integer_value(v) + 1;
    json_array_foreach(added, i,
                       v) if ((size_t)json_integer_value(json_object_get(v, "id")) + 1 > n) n =
        (size_t)json_integer_value(json_object_get(v, "id")) + 1;
    tok = calloc(n, sizeof(*tok));
    type = calloc(n, sizeof(*type));
    score = calloc(n, sizeof(*score));
    if (!tok || !type || !score)
        return fail("out of memory");
    json_object_foreach(vocab, k, v)
    {
        size_t id = (size_t)json_integer_value(v);

        tok[id] = k;
        type[id] = 1;
        score[id] =
            spm && strlen(k) == 6 && strncmp(k, "<0x", 3) == 0 ? (type[id] = 6, 0.0f) : -1e9f;
    }
    json_array_foreach(added, i, v)
    {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));

        tok[id] = json_string_value(json_object_get(v, "content"));
        type[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
        score[id] = 0.0f;
    }
    k = json_string_value(json_object_get(json_object_get(tj, "model"), "unk_token"));
    if (k && json_is_integer(json_object_get(vocab, k)))
        type[json_integer_value(json_object_get(vocab, k))] = 2;
    for (i = n; i-- > 0;) {
        if (!tok[i])
            return fail("the ids have a gap");
    }
    if (spm) /* the rank of the first merge that makes a token; later merges never lower it */
        for (i = json_array_size(merges); i-- > 0;) {
            const char *l, *r;

            merge_parts(json_array_get(merges, i), buf, sizeof(buf), &l, &r);
            snprintf(cat, sizeof(cat), "%s%s", l, r);
            if (json_is_integer(json_object_get(vocab, cat)))
                score[json_integer_value(json_object_get(vocab, cat))] = -(float)i;
        }
    first = json_array_get(json_object_get(json_object_get(tj, "post_processor"), "single"), 0);
    add_bos = json_object_get(first, "SpecialToken") != NULL;
    for (i = 0; i < n; i++) {
        const char *b = token_str(json_object_get(cfg, "bos_token")),
                   *e = token_str(json_object_get(cfg, "eos_token"));

        if (add_bos && !b)
            b = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
        if (b && strcmp(tok[i], b) == 0)
            bos = (int32_t)i;
        if (e && strcmp(tok[i], e) == 0)
            eos = (int32_t)i;
    }

    if (!(out = fopen(argv[2], "wb")))
        return fail("cannot write the output");
    fwrite("GGUF", 1, 4, out);
    w32(3);
    w64(0);
    pos = ftell(out);
    w64(0); /* the key count, patched below */
    key("general.architecture", T_STRING);
    wstr("llama", 5);
    key("tokenizer.ggml.model", T_STRING);
    wstr(spm ? "llama" : "gpt2", spm ? 5 : 4);
    if (!spm && argc > 3 && *argv[3]) {
        key("tokenizer.ggml.pre", T_STRING);
        wstr(argv[3], strlen(argv[3]));
    }
    key("tokenizer.ggml.tokens", T_ARRAY);
    w32(T_STRING);
    w64(n);
    for (i = 0; i < n; i++)
        wstr(tok[i], strlen(tok[i]));
    key("tokenizer.ggml.token_type", T_ARRAY);
    w32(T_I32);
    w64(n);
    fwrite(type, 4, n, out);
    if (spm) {
        key("tokenizer.ggml.scores", T_ARRAY);
        w32(T_F32);
        w64(n);
        fwrite(score, 4, n, out);
    } else {
        key("tokenizer.ggml.merges", T_ARRAY);
        w32(T_STRING);
        w64(json_array_size(merges));
        json_array_foreach(merges, i, v)
        {
            const char *l, *r;

            merge_parts(v, buf, sizeof(buf), &l, &r);
            snprintf(cat, sizeof(cat), "%s %s", l, r);
            wstr(cat, strlen(cat));
        }
    }
    if (bos >= 0) {
        key("tokenizer.ggml.bos_token_id", T_U32);
        w32((uint32_t)bos);
    }
    if (eos >= 0) {
        key("tokenizer.ggml.eos_token_id", T_U32);
        w32((uint32_t)eos);
    }
    key("tokenizer.ggml.add_bos_token", T_BOOL);
    fputc(add_bos ? 1 : 0, out);
    key("tokenizer.ggml.add_eos_token", T_BOOL);
    fputc(0, out);
    if ((k = json_string_value(json_object_get(cfg, "chat_template")))) {
        key("tokenizer.chat_template", T_STRING);
        wstr(k, strlen(k));
    }
    n_tensors = argc > 4 ? copy_model(argv[4]) : 0;
    fseek(out, pos - 8, SEEK_SET);
    w64(n_tensors);
    w64(n_kv);
    if (fclose(out) != 0)
        return fail("cannot write the output");
    free(tok);
    free(type);
    free(score);
    json_decref(cfg);
    json_decref(tj);
    return 0;
}
