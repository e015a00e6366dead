/*
 * The tokenizer a GGUF file embeds (tokenizer.ggml.*), turned into what the tokenizer.json
 * loader builds, so that encoding and decoding are the same code as for tokenizer.json:
 *
 *   GGUF metadata ──► kvs (key, type, value position; bounds-checked, nothing copied)
 *     tokenizer.ggml.tokens / token_type ──► RAW[0]: the model vocabulary (normal, byte,
 *                                            unknown, unused tokens) + added_tokens (control:
 *                                            special; user-defined: not special)
 *     "gpt2":  tokenizer.ggml.merges ──────► RAW[1]; tokenizer.ggml.pre ──► Split regex +
 *                                            ByteLevel (table below), ByteLevel decoder
 *     "llama": tokenizer.ggml.scores ──────► RAW[1]: every split of a normal token into two
 *                                            vocabulary pieces, ranked by the token's score
 *                                            (Hugging Face's SentencePieceExtractor); Llama 2's
 *                                            Prepend + Replace normalizer, byte_fallback from
 *                                            <0xXX> byte tokens, its decoder chain
 *   ──► a tokenizer.json-shaped jansson object (vocab and merges left empty) ──► load.c
 *   then, on the loaded tokenizer: add_bos_token / add_eos_token as TemplateProcessing's
 *   prefix / suffix, the unknown id, bos / eos / eot ids, tokenizer.chat_template and its
 *   special-token strings (set directly: a token's bytes need not be valid UTF-8 for jansson).
 *
 * Everything is read from the caller's buffer (a mapping of the file: only the metadata pages
 * are touched); each malformed or unsupported key is refused with a message naming it.
 */
#include "tokenizer-int.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum gtype {
    G_U8,
    G_I8,
    G_U16,
    G_I16,
    G_U32,
    G_I32,
    G_F32,
    G_BOOL,
    G_STRING,
    G_ARRAY,
    G_U64,
    G_I64,
    G_F64,
    G_COUNT
};

/* llama.cpp's token types (llama_token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct kv {
    const char *key;
    size_t klen;
    uint32_t type;     /* enum gtype */
    uint32_t atype;    /* element type of an array */
    uint64_t n;        /* elements of an array */
    const uint8_t *at; /* the value; for an array its first element */
};

struct meta {
    const char *path;
    const uint8_t *buf;
    uint64_t size, pos;
    struct kv *kv; /* [n_kv] */
    uint64_t n_kv;
    char *err;
    size_t err_size;
};

static size_t gsize(uint32_t t)
{
    static const uint8_t size[G_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

    return t < G_COUNT ? size[t] : 0;
}

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static duet_status bad(struct meta *m, const char *what)
{
    duet__set_err(m->err, m->err_size, "%s: %s", m->path, what);
    return DUET_STATUS_BAD_FORMAT;
}

static bool take(struct meta *m, uint64_t n, uint64_t *v)
{
    if (m->size - m->pos < n)
        return false;
    if (v)
        *v = le(m->buf + m->pos, (unsigned)n);
    m->pos += n;
    return true;
}

static bool skip_str(struct meta *m)
{
    uint64_t len;

    return take(m, 8, &len) && len <= m->size - m->pos && (m->pos += len, true);
}

static duet_status bad_value(struct meta *m, const struct kv *kv, const char *what)
{
    duet__set_err(m->err, m->err_size, "%s: key '%.*s': %s", m->path,
                  (int)(kv->klen < 200 ? kv->klen : 200), kv->key, what);
    return DUET_STATUS_BAD_FORMAT;
}

static duet_status read_value(struct meta *m, struct kv *kv)
{
    uint64_t v;

    if (!take(m, 4, &v) || v >= G_COUNT)
        return bad_value(m, kv, "an unknown value type, or the file ends (truncated?)");
    kv->type = (uint32_t)v;
    if (kv->type == G_ARRAY) {
        if (!take(m, 4, &v) || v >= G_COUNT || v == G_ARRAY || !take(m, 8, &kv->n))
            return bad_value(m, kv, "a bad array element type, or the file ends (truncated?)");
        kv->atype = (uint32_t)v;
    }
    kv->at = m->buf + m->pos;
    if (kv->type == G_STRING)
        return skip_str(m) ? DUET_STATUS_OK
                           : bad_value(m, kv, "the string runs past the file (truncated?)");
    if (kv->type != G_ARRAY)
        return take(m, gsize(kv->type), NULL)
                   ? DUET_STATUS_OK
                   : bad_value(m, kv, "the value runs past the file (truncated?)");
    if (kv->atype != G_STRING)
        return kv->n <= (m->size - m->pos) / gsize(kv->atype) &&
                       take(m, kv->n * gsize(kv->atype), NULL)
                   ? DUET_STATUS_OK
                   : bad_value(m, kv, "the array runs past the file (truncated?)");
    for (uint64_t i = 0; i < kv->n; i++)
        if (!skip_str(m))
            return bad_value(m, kv, "the array's strings run past the file (truncated?)");
    return DUET_STATUS_OK;
}

/* The header and every key/value pair; tensor infos are not read. */
static duet_status read_meta(struct meta *m)
{
    uint64_t version, n_tensors, n;
    duet_status st;

    if (m->size < 4 || memcmp(m->buf, "GGUF", 4) != 0)
        return bad(m, "not a GGUF file (no GGUF magic)");
    m->pos = 4;
    if (!take(m, 4, &version) || (version != 2 && version != 3))
        return bad(m, "GGUF version is not 2 or 3");
    if (!take(m, 8, &n_tensors) || !take(m, 8, &n) || n > (m->size - m->pos) / 13)
        return bad(m, "the key/value count is more than the file could hold");
    m->kv = calloc(n ? n : 1, sizeof(*m->kv));
    if (!m->kv)
        return DUET_STATUS_OUT_OF_MEMORY;
    for (m->n_kv = 0; m->n_kv < n; m->n_kv++) {
        struct kv *kv = &m->kv[m->n_kv];
        uint64_t len;

        if (!take(m, 8, &len) || len == 0 || len > m->size - m->pos)
            return bad(m, "a metadata key is empty or runs past the file (truncated?)");
        kv->key = (const char *)m->buf + m->pos;
        kv->klen = (size_t)len;
        m->pos += len;
        if ((st = read_value(m, kv)) != DUET_STATUS_OK)
            return st;
    }
    return DUET_STATUS_OK;
}

static const struct kv *find(const struct meta *m, const char *key)
{
    size_t len = strlen(key);

    for (uint64_t i = 0; i < m->n_kv; i++)
        if (m->kv[i].klen == len && memcmp(m->kv[i].key, key, len) == 0)
            return &m->kv[i];
    return NULL;
}

/* ---- typed accessors: each refusal names the key ------------------------------------------- */

static duet_status wrong(struct meta *m, const char *key, const char *want)
{
    duet__set_err(m->err, m->err_size, "%s: key '%s' must be %s", m->path, key, want);
    return DUET_STATUS_BAD_FORMAT;
}

/* A string key into S / LEN (S NULL when absent). */
static duet_status get_str(struct meta *m, const char *key, const char **s, size_t *len)
{
    const struct kv *kv = find(m, key);

    *s = NULL;
    *len = 0;
    if (!kv)
        return DUET_STATUS_OK;
    if (kv->type != G_STRING)
        return wrong(m, key, "a string");
    *len = (size_t)le(kv->at, 8);
    *s = (const char *)kv->at + 8;
    return DUET_STATUS_OK;
}

/* An integer key that is a token id below N_IDS into *ID (unchanged when absent). */
static duet_status get_id(struct meta *m, const char *key, uint64_t n_ids, int32_t *id)
{
    const struct kv *kv = find(m, key);
    int64_t v;

    if (!kv)
        return DUET_STATUS_OK;
    if (kv->type > G_I32 && kv->type != G_U64 && kv->type != G_I64)
        return wrong(m, key, "an integer");
    v = (int64_t)le(kv->at, (unsigned)gsize(kv->type));
    if (kv->type == G_I8 || kv->type == G_I16 || kv->type == G_I32)
        v = kv->type == G_I8 ? (int8_t)v : kv->type == G_I16 ? (int16_t)v : (int32_t)v;
    if (v < 0 || (uint64_t)v >= n_ids) {
        duet__set_err(m->err, m->err_size, "%s: key '%s' = %lld is not a token id in [0, %llu)",
                      m->path, key, (long long)v, (unsigned long long)n_ids);
        return DUET_STATUS_BAD_FORMAT;
    }
    *id = (int32_t)v;
    return DUET_STATUS_OK;
}

static duet_status get_bool(struct meta *m, const char *key, bool *out)
{
    const struct kv *kv = find(m, key);

    if (!kv)
        return DUET_STATUS_OK;
    if (kv->type != G_BOOL || kv->at[0] > 1)
        return wrong(m, key, "a bool");
    *out = kv->at[0] == 1;
    return DUET_STATUS_OK;
}

/* An array key of N elements of type TYPE (required). */
static duet_status get_array(struct meta *m, const char *key, uint32_t type, uint64_t n,
                             const struct kv **out)
{
    const struct kv *kv = find(m, key);
    static const char *const names[G_COUNT] = {[G_STRING] = "an array of strings",
                                               [G_F32] = "an array of float32",
                                               [G_I32] = "an array of int32"};

    *out = kv;
    if (!kv) {
        duet__set_err(m->err, m->err_size, "%s: key '%s' is missing", m->path, key);
        return DUET_STATUS_BAD_FORMAT;
    }
    if (kv->type != G_ARRAY || kv->atype != type)
        return wrong(m, key, names[type]);
    if (n != UINT64_MAX && kv->n != n) {
        duet__set_err(m->err, m->err_size,
                      "%s: key '%s' has %llu elements; tokenizer.ggml.tokens has %llu", m->path,
                      key, (unsigned long long)kv->n, (unsigned long long)n);
        return DUET_STATUS_BAD_FORMAT;
    }
    return DUET_STATUS_OK;
}

/* ---- the tokenizer's pieces ---------------------------------------------------------------- */

/* What one load builds; freed by gtok_fini. */
struct gtok {
    duet__raw raw[2]; /* model vocabulary and merges, as load.c takes them */
    const char **tok; /* [n] token bytes, in the file */
    uint32_t *len;    /* [n] */
    int32_t *type;    /* [n] llama_token_type */
    float *score;     /* [n], "llama" only */
    uint64_t n;       /* tokens */
    json_t *root;     /* the tokenizer.json-shaped object */
    json_t *added;    /* root's added_tokens */
    bool add_bos, add_eos;
    int32_t unk; /* the unknown token's id, or -1 */
};

static void gtok_fini(struct gtok *g)
{
    duet__raw_fini(&g->raw[0]);
    duet__raw_fini(&g->raw[1]);
    free(g->tok);
    free(g->len);
    free(g->type);
    free(g->score);
    json_decref(g->root);
}

static duet_status tok_err(struct meta *m, uint64_t i, const char *what)
{
    duet__set_err(m->err, m->err_size, "%s: tokenizer.ggml.tokens[%llu] %s", m->path,
                  (unsigned long long)i, what);
    return DUET_STATUS_BAD_FORMAT;
}

/* tokenizer.ggml.tokens, token_type (absent: all normal) and, for "llama", scores. */
static duet_status read_tokens(struct meta *m, struct gtok *g, bool scores)
{
    const struct kv *toks, *types = find(m, "tokenizer.ggml.token_type"), *sc;
    const uint8_t *p;
    duet_status st = get_array(m, "tokenizer.ggml.tokens", G_STRING, UINT64_MAX, &toks);

    if (st)
        return st;
    if (toks->n == 0 || toks->n > (1 << 22))
        return wrong(m, "tokenizer.ggml.tokens", "an array of 1 to 4194304 tokens");
    g->n = toks->n;
    if (types && (st = get_array(m, "tokenizer.ggml.token_type", G_I32, g->n, &types)))
        return st;
    if (scores && (st = get_array(m, "tokenizer.ggml.scores", G_F32, g->n, &sc)))
        return st;
    g->tok = malloc(g->n * sizeof(*g->tok));
    g->len = malloc(g->n * sizeof(*g->len));
    g->type = malloc(g->n * sizeof(*g->type));
    g->score = scores ? malloc(g->n * sizeof(*g->score)) : NULL;
    if (!g->tok || !g->len || !g->type || (scores && !g->score))
        return DUET_STATUS_OUT_OF_MEMORY;
    p = toks->at;
    for (uint64_t i = 0; i < g->n; i++) {
        uint64_t len = le(p, 8);

        g->tok[i] = (const char *)p + 8;
        g->len[i] = (uint32_t)len;
        p += 8 + len;
        g->type[i] = types ? (int32_t)le(types->at + 4 * i, 4) : TT_NORMAL;
        if (scores) {
            uint32_t bits = (uint32_t)le(sc->at + 4 * i, 4);

            memcpy(&g->score[i], &bits, sizeof(float));
            if (g->score[i] != g->score[i])
                return tok_err(m, i, "has a NaN score");
        }
        if (len == 0 || len > 1024 || memchr(g->tok[i], '\0', (size_t)len))
            return tok_err(m, i, "is empty, longer than 1024 bytes or holds a NUL byte");
        if (g->type[i] < TT_NORMAL || g->type[i] > TT_BYTE)
            return tok_err(m, i, "has a token_type outside 1..6");
    }
    return DUET_STATUS_OK;
}

/* Control and user-defined tokens become added tokens (special or not), the others the model's
 * vocabulary; the unknown token is both, as in Llama 2's tokenizer.json. */
static duet_status split_vocab(struct meta *m, struct gtok *g)
{
    for (uint64_t i = 0; i < g->n; i++) {
        json_t *a;

        if (g->type[i] != TT_CONTROL && g->type[i] != TT_USER &&
            !duet__raw_add(&g->raw[0], g->tok[i], g->len[i], (int64_t)i))
            return DUET_STATUS_OUT_OF_MEMORY;
        if (g->type[i] != TT_CONTROL && g->type[i] != TT_USER && g->type[i] != TT_UNKNOWN)
            continue;
        a = json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content",
                      g->tok[i], (size_t)g->len[i], "single_word", 0, "lstrip", 0, "rstrip", 0,
                      "normalized", 0, "special", g->type[i] != TT_USER);
        if (!a)
            return tok_err(m, i, "is not valid UTF-8");
        if (json_array_append_new(g->added, a))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

/* "gpt2": tokenizer.ggml.merges, "left right" each. */
static duet_status read_merges(struct meta *m, struct gtok *g)
{
    const struct kv *kv;
    const uint8_t *p;
    duet_status st = get_array(m, "tokenizer.ggml.merges", G_STRING, UINT64_MAX, &kv);

    if (st)
        return st;
    p = kv->at;
    for (uint64_t i = 0; i < kv->n; i++) {
        size_t len = (size_t)le(p, 8);
        const char *s = (const char *)p + 8, *sp = memchr(s, ' ', len);

        p += 8 + len;
        if (!sp || sp == s || sp + 1 == s + len ||
            memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
            duet__set_err(m->err, m->err_size,
                          "%s: tokenizer.ggml.merges[%llu] is not two tokens split by one space",
                          m->path, (unsigned long long)i);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (!duet__raw_add(&g->raw[1], s, (size_t)(sp - s), -1) ||
            !duet__raw_add(&g->raw[1], sp + 1, len - (size_t)(sp + 1 - s), -1))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

/* One derived SentencePiece merge: LEFT + RIGHT = MERGED, whose score ranks it. */
struct spm_merge {
    float score;
    uint32_t merged, left, right;
};

static int cmp_spm(const void *pa, const void *pb)
{
    const struct spm_merge *a = pa, *b = pb;

    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->merged != b->merged)
        return a->merged < b->merged ? -1 : 1;
    if (a->left != b->left)
        return a->left < b->left ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

/* The splits of normal token I into two pieces of the vocabulary, at each char boundary. */
static bool spm_splits(const struct gtok *g, const duet__strmap *map, const duet__arena *ar,
                       uint32_t i, struct spm_merge **v, size_t *n, size_t *cap)
{
    const char *s = g->tok[i];

    for (size_t k = 1; k < g->len[i]; k++) {
        int32_t l, r;

        if (((unsigned char)s[k] & 0xc0) == 0x80)
            continue; /* inside a UTF-8 char */
        l = duet__strmap_get(map, ar, s, k);
        r = duet__strmap_get(map, ar, s + k, g->len[i] - k);
        if (l < 0 || r < 0)
            continue;
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 4096;
            struct spm_merge *nv = realloc(*v, c * sizeof(*nv));

            if (!nv)
                return false;
            *v = nv;
            *cap = c;
        }
        (*v)[(*n)++] = (struct spm_merge){g->score[i], i, (uint32_t)l, (uint32_t)r};
    }
    return true;
}

/* "llama": merges derived from the scores, as Hugging Face's SentencePieceExtractor does:
 * every split of a token into two vocabulary pieces, ordered by the token's score (highest
 * first), then by the ids. Only normal tokens are merge results. */
static duet_status derive_merges(struct meta *m, struct gtok *g)
{
    duet__strmap map;
    duet__arena ar = {0};
    struct spm_merge *v = NULL;
    size_t n = 0, cap = 0;
    duet_status st = DUET_STATUS_OUT_OF_MEMORY;
    bool varied = false;

    for (uint64_t i = 1; i < g->n; i++)
        varied |= g->score[i] != g->score[0];
    if (!varied)
        return wrong(m, "tokenizer.ggml.scores", "varied: merges are derived from them");
    if (!duet__strmap_init(&map, (uint32_t)g->n))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (uint64_t i = 0; i < g->n; i++) {
        uint32_t off;

        if (!duet__arena_add(&ar, g->tok[i], g->len[i], &off) ||
            !duet__strmap_put(&map, &ar, off, g->len[i], (int32_t)i))
            goto out_free;
    }
    for (uint64_t i = 0; i < g->n; i++)
        if (g->type[i] == TT_NORMAL && !spm_splits(g, &map, &ar, (uint32_t)i, &v, &n, &cap))
            goto out_free;
    if (n)
        qsort(v, n, sizeof(*v), cmp_spm);
    st = DUET_STATUS_OK;
    for (size_t k = 0; k < n && st == DUET_STATUS_OK; k++)
        if (!duet__raw_add(&g->raw[1], g->tok[v[k].left], g->len[v[k].left], -1) ||
            !duet__raw_add(&g->raw[1], g->tok[v[k].right], g->len[v[k].right], -1))
            st = DUET_STATUS_OUT_OF_MEMORY;
out_free:
    free(v);
    duet__strmap_fini(&map);
    free(ar.data);
    return st;
}

/* ---- the tokenizer.json-shaped object -------------------------------------------------------- */

#define LLAMA3_REGEX                                                                               \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_REGEX                                                                                \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* tokenizer.ggml.pre names (llama.cpp's) and what Hugging Face's tokenizer.json of those
 * models holds: the Split regex (NULL: ByteLevel's own GPT-2 regex), NFC, ignore_merges, BOS. */
static const struct pre {
    const char *name;
    const char *regex;
    bool nfc, ignore_merges, add_bos;
} pres[] = {
    {"llama-bpe", LLAMA3_REGEX, false, true, true},
    {"llama3", LLAMA3_REGEX, false, true, true},
    {"llama-v3", LLAMA3_REGEX, false, true, true},
    {"qwen2", QWEN2_REGEX, true, false, false},
    {"deepseek-r1-qwen", QWEN2_REGEX, true, false, false},
    {"gpt-2", NULL, false, false, false},
    {"default", NULL, false, false, false},
};

static duet_status find_pre(struct meta *m, const struct pre **out)
{
    const char *s;
    size_t len;
    duet_status st = get_str(m, "tokenizer.ggml.pre", &s, &len);

    if (st)
        return st;
    if (!s) {
        *out = &pres[sizeof(pres) / sizeof(pres[0]) - 1]; /* before the key: "default" */
        return DUET_STATUS_OK;
    }
    for (size_t i = 0; i < sizeof(pres) / sizeof(pres[0]); i++)
        if (strlen(pres[i].name) == len && memcmp(pres[i].name, s, len) == 0) {
            *out = &pres[i];
            return DUET_STATUS_OK;
        }
    duet__set_err(m->err, m->err_size,
                  "%s: tokenizer.ggml.pre \"%.*s\" is not supported (duet reads llama-bpe, llama3, "
                  "llama-v3, qwen2, deepseek-r1-qwen, gpt-2, default)",
                  m->path, (int)(len < 64 ? len : 64), s);
    return DUET_STATUS_UNSUPPORTED;
}

static json_t *gpt2_root(const struct pre *pre)
{
    json_t *byte_level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                   0, "trim_offsets", 0, "use_regex", pre->regex == NULL);
    json_t *pt = pre->regex
                     ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                                 "pretokenizers", "type", "Split", "pattern", "Regex", pre->regex,
                                 "behavior", "Isolated", "invert", 0, byte_level)
                     : byte_level;

    return json_pack("{s:o, s:o, s:{s:s, s:b}, s:{s:s, s:{}, s:[], s:b}, s:[]}", "normalizer",
                     pre->nfc ? json_pack("{s:s}", "type", "NFC") : json_null(), "pre_tokenizer",
                     pt, "decoder", "type", "ByteLevel", "use_regex", 0, "model", "type", "BPE",
                     "vocab", "merges", "ignore_merges", pre->ignore_merges, "added_tokens");
}

/* Llama 2's tokenizer.json; the unknown token's id is set on the loaded tokenizer. */
static json_t *llama_root(bool prefix, bool byte_fallback)
{
    static const char meta[] = "\xe2\x96\x81";
    json_t *norm = json_pack("[{s:s, s:{s:s}, s:s}]", "type", "Replace", "pattern", "String", " ",
                             "content", meta);
    json_t *dec = json_pack("[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]", "type", "Replace", "pattern",
                            "String", meta, "content", " ", "type", "ByteFallback", "type", "Fuse");

    if (!norm || !dec ||
        (prefix &&
         (json_array_insert_new(norm, 0,
                                json_pack("{s:s, s:s}", "type", "Prepend", "prepend", meta)) ||
          json_array_append_new(dec, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content",
                                               " ", "start", 1, "stop", 0))))) {
        json_decref(norm);
        json_decref(dec);
        return NULL;
    }
    return json_pack("{s:{s:s, s:o}, s:n, s:{s:s, s:o}, s:{s:s, s:{}, s:[], s:b, s:b}, s:[]}",
                     "normalizer", "type", "Sequence", "normalizers", norm, "pre_tokenizer",
                     "decoder", "type", "Sequence", "decoders", dec, "model", "type", "BPE",
                     "vocab", "merges", "byte_fallback", byte_fallback, "fuse_unk", 1,
                     "added_tokens");
}

/* add_bos_token / add_eos_token: BOS / EOS around the sequence, as TemplateProcessing puts them
 * (set on the loaded tokenizer: a token's bytes need not be valid UTF-8 for jansson). */
static duet_status add_post(struct meta *m, struct gtok *g, duet_tokenizer *t)
{
    int32_t bos = -1, eos = -1;
    duet_status st;

    if ((st = get_id(m, "tokenizer.ggml.bos_token_id", g->n, &bos)) ||
        (st = get_id(m, "tokenizer.ggml.eos_token_id", g->n, &eos)) ||
        (st = get_bool(m, "tokenizer.ggml.add_bos_token", &g->add_bos)) ||
        (st = get_bool(m, "tokenizer.ggml.add_eos_token", &g->add_eos)))
        return st;
    if (bos < 0 && !find(m, "tokenizer.ggml.add_bos_token"))
        g->add_bos = false; /* the default BOS of a file that names none */
    if (g->add_bos && bos < 0)
        return wrong(m, "tokenizer.ggml.bos_token_id", "present when add_bos_token is true");
    if (g->add_eos && eos < 0)
        return wrong(m, "tokenizer.ggml.eos_token_id", "present when add_eos_token is true");
    t->n_prefix = g->add_bos;
    t->prefix[0] = bos;
    t->n_suffix = g->add_eos;
    t->suffix[0] = eos;
    t->unk_id = g->unk;
    return DUET_STATUS_OK;
}

/* "llama": the keys of SentencePiece's normalizer, the unknown token, merges from the scores. */
static duet_status build_spm(struct meta *m, struct gtok *g)
{
    bool prefix = true, ws = false, bytes = false;
    duet_status st;

    g->unk = -1;
    if ((st = get_bool(m, "tokenizer.ggml.add_space_prefix", &prefix)) ||
        (st = get_bool(m, "tokenizer.ggml.remove_extra_whitespaces", &ws)) ||
        (st = get_id(m, "tokenizer.ggml.unknown_token_id", g->n, &g->unk)))
        return st;
    if (ws) {
        duet__set_err(m->err, m->err_size,
                      "%s: tokenizer.ggml.remove_extra_whitespaces is not supported", m->path);
        return DUET_STATUS_UNSUPPORTED;
    }
    for (uint64_t i = 0; i < g->n; i++) {
        bytes |= g->type[i] == TT_BYTE;
        if (g->unk < 0 && g->type[i] == TT_UNKNOWN)
            g->unk = (int32_t)i;
    }
    if ((st = derive_merges(m, g)))
        return st;
    g->root = llama_root(prefix, bytes);
    g->add_bos = true;
    return DUET_STATUS_OK;
}

/* The "llama" (SentencePiece) or "gpt2" (byte-level BPE) object and its tables. */
static duet_status build(struct meta *m, struct gtok *g, const char *model, size_t model_len)
{
    bool spm = model_len == 5 && memcmp(model, "llama", 5) == 0;
    const struct pre *pre = NULL;
    duet_status st;

    if (!spm && !(model_len == 4 && memcmp(model, "gpt2", 4) == 0)) {
        duet__set_err(m->err, m->err_size,
                      "%s: tokenizer.ggml.model \"%.*s\" is not supported (duet reads llama and "
                      "gpt2)",
                      m->path, (int)(model_len < 64 ? model_len : 64), model);
        return DUET_STATUS_UNSUPPORTED;
    }
    if ((st = read_tokens(m, g, spm)))
        return st;
    if (spm && (st = build_spm(m, g)))
        return st;
    if (!spm) {
        if ((st = find_pre(m, &pre)) || (st = read_merges(m, g)))
            return st;
        g->root = gpt2_root(pre);
        g->add_bos = pre->add_bos;
        g->unk = -1;
    }
    if (!g->root)
        return DUET_STATUS_OUT_OF_MEMORY;
    g->added = json_object_get(g->root, "added_tokens");
    return split_vocab(m, g);
}

/* BOS, EOS (then EOT when it differs), the chat template and its special-token strings. */
static duet_status load_extras(struct meta *m, const struct gtok *g, duet_tokenizer *t)
{
    static const char *const keys[DUET__CHAT_TOKENS] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    int32_t eos = -1, eot = -1;
    const char *tmpl;
    size_t len;
    duet_status st;

    if ((st = get_id(m, keys[0], g->n, &t->bos_id)) || (st = get_id(m, keys[1], g->n, &eos)) ||
        (st = get_id(m, "tokenizer.ggml.eot_token_id", g->n, &eot)) ||
        (st = get_str(m, "tokenizer.chat_template", &tmpl, &len)))
        return st;
    if (eos >= 0)
        t->eos_ids[t->n_eos++] = eos;
    if (eot >= 0 && eot != eos)
        t->eos_ids[t->n_eos++] = eot;
    if (tmpl && (memchr(tmpl, '\0', len) || !(t->chat_template = duet__chat_strdup(tmpl, len))))
        return memchr(tmpl, '\0', len) ? wrong(m, "tokenizer.chat_template", "free of NUL bytes")
                                       : DUET_STATUS_OUT_OF_MEMORY;
    for (int i = 0; i < DUET__CHAT_TOKENS; i++) {
        int32_t id = -1;

        if ((st = get_id(m, keys[i], g->n, &id)))
            return st;
        if (id >= 0 && !(t->chat_tokens[i] = duet__chat_strdup(g->tok[id], g->len[id])))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

static duet_status load_meta(struct meta *m, duet_tokenizer *t)
{
    struct gtok g;
    const char *model;
    size_t len;
    duet_status st;

    memset(&g, 0, sizeof(g));
    if ((st = read_meta(m)) || (st = get_str(m, "tokenizer.ggml.model", &model, &len)))
        return st;
    if (!model) {
        duet__set_err(m->err, m->err_size,
                      "%s: no tokenizer.json beside it and no tokenizer.ggml.model in it", m->path);
        return DUET_STATUS_NOT_FOUND;
    }
    st = build(m, &g, model, len);
    if (st == DUET_STATUS_OK)
        st = duet__load_parsed(t, g.root, g.raw, m->path, m->err, m->err_size);
    if (st == DUET_STATUS_OK)
        st = add_post(m, &g, t);
    if (st == DUET_STATUS_OK)
        st = load_extras(m, &g, t);
    gtok_fini(&g);
    return st;
}

duet_status duet__tokenizer_from_gguf(const char *path, const uint8_t *buf, uint64_t size,
                                      duet_tokenizer **out, char *err, size_t err_size)
{
    struct meta m = {path, buf, size, 0, NULL, 0, err, err_size};
    duet_tokenizer *t = calloc(1, sizeof(*t));
    duet_status st = t ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;

    *out = NULL;
    if (t) {
        t->unk_id = -1;
        t->bos_id = -1;
        st = load_meta(&m, t);
    }
    if (st == DUET_STATUS_OK)
        st = duet__cache_create(&t->cache);
    free(m.kv);
    if (st != DUET_STATUS_OK) {
        if (st == DUET_STATUS_OUT_OF_MEMORY)
            duet__set_err(err, err_size, "%s: out of memory", path);
        duet_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return DUET_STATUS_OK;
}

bool duet__is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    char magic[4];
    bool yes = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;

    if (f)
        fclose(f);
    return yes;
}

duet_status duet__tokenizer_load_gguf(const char *path, duet_tokenizer **out, char *err,
                                      size_t err_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    void *map;
    duet_status st;

    *out = NULL;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size <= 0) {
        duet__set_err(err, err_size, "%s: cannot open or read", path);
        if (fd >= 0)
            close(fd);
        return DUET_STATUS_IO;
    }
    map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        duet__set_err(err, err_size, "%s: cannot map", path);
        return DUET_STATUS_IO;
    }
    st = duet__tokenizer_from_gguf(path, map, (uint64_t)sb.st_size, out, err, err_size);
    munmap(map, (size_t)sb.st_size);
    return st;
}
