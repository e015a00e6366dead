/*
 * Loading a tokenizer folder: tokenizer.json's BPE model and added tokens (the components are in
 * components.c), then tokenizer_config.json and generation_config.json for BOS / EOS.
 *
 * Token strings are copied into one arena; id -> string is two arrays indexed by id; string -> id
 * is the vocabulary map (model tokens) and the added-token map (looked up first, as Hugging
 * Face's AddedVocabulary is). Every id must lie below DUET__MAX_IDS, so a hostile file cannot
 * make the id arrays huge.
 */
#include "tokenizer-int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUET__MAX_IDS (1 << 22)

int32_t duet__lookup(const duet_tokenizer *t, const char *s, size_t len)
{
    int32_t id = duet__strmap_get(&t->added_map, &t->arena, s, len);

    return id >= 0 ? id : duet__strmap_get(&t->vocab, &t->arena, s, len);
}

bool duet__raw_add(duet__raw *r, const char *s, size_t len, int64_t id)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        uint32_t *off = realloc(r->off, cap * sizeof(*off)), *lens;
        int64_t *ids;

        if (off)
            r->off = off;
        lens = off ? realloc(r->len, cap * sizeof(*lens)) : NULL;
        if (lens)
            r->len = lens;
        ids = lens ? realloc(r->id, cap * sizeof(*ids)) : NULL;
        if (!ids)
            return false;
        r->id = ids;
        r->cap = cap;
    }
    r->len[r->n] = (uint32_t)len;
    r->id[r->n] = id;
    return len <= UINT32_MAX && duet__arena_add(&r->strs, s, len, &r->off[r->n++]);
}

/* The jansson path: model.vocab as (token, id) entries; ids are checked by size_ids. */
static duet_status vocab_from_json(json_t *vocab, duet__raw *r, const char *path, char *err,
                                   size_t err_size)
{
    const char *key;
    json_t *v;

    json_object_foreach(vocab, key, v)
    {
        if (!json_is_integer(v)) {
            duet__set_err(err, err_size, "%s: model.vocab[\"%s\"] is not an id in [0, %d)", path,
                          key, DUET__MAX_IDS);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (!duet__raw_add(r, key, strlen(key), json_integer_value(v)))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

/* One merge: "left right" (older files) or ["left", "right"]. */
static bool merge_parts(json_t *m, const char **l, size_t *ll, const char **r, size_t *rl)
{
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *l = json_string_value(json_array_get(m, 0));
        *ll = json_string_length(json_array_get(m, 0));
        *r = json_string_value(json_array_get(m, 1));
        *rl = json_string_length(json_array_get(m, 1));
        return true;
    }
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');

        if (!sp || strchr(sp + 1, ' ') || sp == s || sp[1] == '\0')
            return false;
        *l = s;
        *ll = (size_t)(sp - s);
        *r = sp + 1;
        *rl = strlen(sp + 1);
        return true;
    }
    return false;
}

/* The jansson path: model.merges as left, right entries. */
static duet_status merges_from_json(json_t *merges, duet__raw *r, const char *path, char *err,
                                    size_t err_size)
{
    size_t i;
    json_t *m;

    json_array_foreach(merges, i, m)
    {
        const char *l, *rt;
        size_t ll, rl;

        if (!merge_parts(m, &l, &ll, &rt, &rl)) {
            duet__set_err(err, err_size, "%s: model.merges[%zu] is not a pair of tokens", path, i);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (!duet__raw_add(r, l, ll, -1) || !duet__raw_add(r, rt, rl, -1))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

static bool valid_id(int64_t id)
{
    return id >= 0 && id < DUET__MAX_IDS;
}

/* Sizes the id arrays: one past the largest id of the vocabulary and the added tokens. */
static duet_status size_ids(duet_tokenizer *t, const duet__raw *vocab, json_t *added,
                            const char *path, char *err, size_t err_size)
{
    json_t *v;
    size_t i;
    uint32_t n = 0;

    for (i = 0; i < vocab->n; i++) {
        if (!valid_id(vocab->id[i])) {
            duet__set_err(err, err_size, "%s: model.vocab[\"%.*s\"] is not an id in [0, %d)", path,
                          (int)(vocab->len[i] < 200 ? vocab->len[i] : 200),
                          vocab->strs.data + vocab->off[i], DUET__MAX_IDS);
            return DUET_STATUS_BAD_FORMAT;
        }
        if ((uint32_t)vocab->id[i] + 1 > n)
            n = (uint32_t)vocab->id[i] + 1;
    }
    json_array_foreach(added, i, v)
    {
        json_t *id = json_object_get(v, "id");

        if (!json_is_integer(id) || !valid_id(json_integer_value(id)) ||
            !json_is_string(json_object_get(v, "content"))) {
            duet__set_err(err, err_size, "%s: added_tokens[%zu] needs an id and a content", path,
                          i);
            return DUET_STATUS_BAD_FORMAT;
        }
        if ((uint32_t)json_integer_value(id) + 1 > n)
            n = (uint32_t)json_integer_value(id) + 1;
    }
    t->n_ids = n;
    t->tok_off = calloc(n ? n : 1, sizeof(*t->tok_off));
    t->tok_len = malloc((n ? n : 1) * sizeof(*t->tok_len));
    t->special = calloc(n ? n : 1, sizeof(*t->special));
    if (!t->tok_off || !t->tok_len || !t->special)
        return DUET_STATUS_OUT_OF_MEMORY;
    memset(t->tok_len, 0xff, (n ? n : 1) * sizeof(*t->tok_len));
    return DUET_STATUS_OK;
}

/* The vocabulary: distinct tokens with distinct ids, or id -> token would depend on the order
 * a JSON reader happens to keep (Hugging Face's own readers differ there). */
static duet_status load_vocab(duet_tokenizer *t, const duet__raw *vocab, const char *path,
                              char *err, size_t err_size)
{
    if (!duet__strmap_init(&t->vocab, (uint32_t)vocab->n))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < vocab->n; i++) {
        uint32_t id = (uint32_t)vocab->id[i], off, len = vocab->len[i];
        const char *s = vocab->strs.data + vocab->off[i];

        if (t->tok_len[id] != UINT32_MAX || duet__strmap_get(&t->vocab, &t->arena, s, len) >= 0) {
            duet__set_err(err, err_size, "%s: model.vocab repeats the token \"%.*s\" or its id %u",
                          path, (int)(len < 200 ? len : 200), s, id);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (!duet__arena_add(&t->arena, s, len, &off) ||
            !duet__strmap_put(&t->vocab, &t->arena, off, len, (int32_t)id))
            return DUET_STATUS_OUT_OF_MEMORY;
        t->tok_off[id] = off;
        t->tok_len[id] = len;
    }
    return DUET_STATUS_OK;
}

static duet_status load_merges(duet_tokenizer *t, const duet__raw *m, const char *path, char *err,
                               size_t err_size)
{
    char buf[1024];

    if (!duet__pairmap_init(&t->merges, (uint32_t)(m->n / 2)))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const char *l = m->strs.data + m->off[i], *r = m->strs.data + m->off[i + 1];
        size_t ll = m->len[i], rl = m->len[i + 1];
        int32_t a, b, c;

        if (ll + rl > sizeof(buf)) {
            duet__set_err(err, err_size, "%s: model.merges[%zu] is too long", path, i / 2);
            return DUET_STATUS_BAD_FORMAT;
        }
        memcpy(buf, l, ll);
        memcpy(buf + ll, r, rl);
        a = duet__strmap_get(&t->vocab, &t->arena, l, ll);
        b = duet__strmap_get(&t->vocab, &t->arena, r, rl);
        c = duet__strmap_get(&t->vocab, &t->arena, buf, ll + rl);
        if (a < 0 || b < 0 || c < 0) {
            duet__set_err(err, err_size, "%s: model.merges[%zu] names a token not in model.vocab",
                          path, i / 2);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (!duet__pairmap_put(&t->merges, a, b, (int32_t)(i / 2), c))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

static int cmp_added(const void *a, const void *b)
{
    const duet__added *x = a, *y = b;

    return x->len != y->len ? (x->len > y->len ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

static duet_status added_one(duet_tokenizer *t, json_t *a, duet__added *out)
{
    json_t *c = json_object_get(a, "content");
    uint32_t id = (uint32_t)json_integer_value(json_object_get(a, "id"));

    if (!duet__arena_add(&t->arena, json_string_value(c), json_string_length(c), &out->off))
        return DUET_STATUS_OUT_OF_MEMORY;
    out->len = (uint32_t)json_string_length(c);
    out->id = (int32_t)id;
    out->special = json_is_true(json_object_get(a, "special"));
    out->lstrip = json_is_true(json_object_get(a, "lstrip"));
    out->rstrip = json_is_true(json_object_get(a, "rstrip"));
    out->single_word = json_is_true(json_object_get(a, "single_word"));
    t->tok_off[id] = out->off;
    t->tok_len[id] = out->len;
    t->special[id] = out->special;
    return duet__strmap_put(&t->added_map, &t->arena, out->off, out->len, out->id)
               ? DUET_STATUS_OK
               : DUET_STATUS_OUT_OF_MEMORY;
}

/* An added token with "normalized": true under a normalizer is matched, as Hugging Face does, in
 * the normalized text by its normalized content (Llama 2's "<s>" becomes "▁<s>"). */
static duet_status normalize_added(duet_tokenizer *t)
{
    for (uint32_t i = 0; i < t->n_nadded; i++) {
        duet__added *a = &t->nadded[i];
        char *norm;
        size_t len;
        duet_status st = duet__normalize_text(t, t->arena.data + a->off, a->len, &norm, &len);

        if (st != DUET_STATUS_OK)
            return st;
        if (len > UINT32_MAX || !duet__arena_add(&t->arena, norm, len, &a->off)) {
            free(norm);
            return DUET_STATUS_OUT_OF_MEMORY;
        }
        a->len = (uint32_t)len;
        if (len)
            t->nadded_first[(unsigned char)norm[0]] = true;
        free(norm);
    }
    qsort(t->nadded, t->n_nadded, sizeof(*t->nadded), cmp_added);
    return DUET_STATUS_OK;
}

/* Added tokens: matched in the raw text (or the normalized one, above), longest first. */
static duet_status load_added(duet_tokenizer *t, json_t *added)
{
    size_t i;
    json_t *a;

    t->added = calloc(json_array_size(added) + 1, sizeof(*t->added));
    t->nadded = calloc(json_array_size(added) + 1, sizeof(*t->nadded));
    if (!t->added || !t->nadded ||
        !duet__strmap_init(&t->added_map, (uint32_t)json_array_size(added)))
        return DUET_STATUS_OUT_OF_MEMORY;
    json_array_foreach(added, i, a)
    {
        bool norm = t->n_norm && json_is_true(json_object_get(a, "normalized"));
        duet__added *slot = norm ? &t->nadded[t->n_nadded] : &t->added[t->n_added];
        duet_status st;

        st = added_one(t, a, slot);
        if (st != DUET_STATUS_OK)
            return st;
        if (slot->len && norm) {
            t->n_nadded++;
        } else if (slot->len) {
            t->added_first[(unsigned char)t->arena.data[slot->off]] = true;
            t->n_added++;
        }
    }
    qsort(t->added, t->n_added, sizeof(*t->added), cmp_added);
    return DUET_STATUS_OK;
}

static duet_status check_model(json_t *model, const char *path, char *err, size_t err_size)
{
    const char *type = json_string_value(json_object_get(model, "type"));
    json_t *dropout = json_object_get(model, "dropout");
    const char *cont = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *suffix = json_string_value(json_object_get(model, "end_of_word_suffix"));

    if (!json_is_object(model)) {
        duet__set_err(err, err_size, "%s: no \"model\" object", path);
        return DUET_STATUS_BAD_FORMAT;
    }
    if (!type || strcmp(type, "BPE") != 0) {
        duet__set_err(err, err_size, "%s: model type \"%s\" is not supported (only BPE)", path,
                      type ? type : "(none)");
        return DUET_STATUS_UNSUPPORTED;
    }
    if ((dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0) ||
        (cont && *cont) || (suffix && *suffix)) {
        duet__set_err(err, err_size,
                      "%s: BPE with dropout, continuing_subword_prefix or end_of_word_suffix is "
                      "not supported",
                      path);
        return DUET_STATUS_UNSUPPORTED;
    }
    if (!json_is_object(json_object_get(model, "vocab")) ||
        !json_is_array(json_object_get(model, "merges"))) {
        duet__set_err(err, err_size, "%s: model.vocab must be an object, model.merges an array",
                      path);
        return DUET_STATUS_BAD_FORMAT;
    }
    return DUET_STATUS_OK;
}

/* True when every U+2581 of every vocabulary token lies in the token's leading run of them. */
static bool metaspace_leads_only(const duet_tokenizer *t)
{
    static const char meta[] = "\xe2\x96\x81";

    for (uint32_t i = 0; i < t->vocab.cap; i++) {
        uint32_t len = t->vocab.slot_len[i], k = 0;
        const char *s;

        if (len == UINT32_MAX)
            continue;
        s = t->arena.data + t->vocab.slot_off[i];
        while (k + 3 <= len && memcmp(s + k, meta, 3) == 0)
            k += 3;
        for (; k + 3 <= len; k++)
            if (memcmp(s + k, meta, 3) == 0)
                return false;
    }
    return true;
}

static void model_flags(duet_tokenizer *t, json_t *model)
{
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    char name[8];

    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    t->unk_id = unk ? duet__strmap_get(&t->vocab, &t->arena, unk, strlen(unk)) : -1;
    t->sp_cut = t->n_pre == 0 && metaspace_leads_only(t);
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof(name), "<0x%02X>", b);
        t->byte_ids[b] = duet__strmap_get(&t->vocab, &t->arena, name, 6);
    }
}

/* The vocabulary and merges, from the fast path (RAW already filled) or from jansson's objects. */
static duet_status load_tables(duet_tokenizer *t, json_t *model, json_t *added, duet__raw *raw,
                               const char *path, char *err, size_t err_size)
{
    duet_status st = DUET_STATUS_OK;

    if (raw[0].n == 0 && raw[1].n == 0) {
        st = vocab_from_json(json_object_get(model, "vocab"), &raw[0], path, err, err_size);
        if (st == DUET_STATUS_OK)
            st = merges_from_json(json_object_get(model, "merges"), &raw[1], path, err, err_size);
    }
    if (st == DUET_STATUS_OK)
        st = size_ids(t, &raw[0], added, path, err, err_size);
    if (st == DUET_STATUS_OK)
        st = load_vocab(t, &raw[0], path, err, err_size);
    if (st == DUET_STATUS_OK)
        st = load_merges(t, &raw[1], path, err, err_size);
    return st;
}

static duet_status load_model(duet_tokenizer *t, json_t *root, duet__raw *raw, const char *path,
                              char *err, size_t err_size)
{
    json_t *model = json_object_get(root, "model");
    json_t *added = json_object_get(root, "added_tokens");
    duet_status st = check_model(model, path, err, err_size);

    if (st != DUET_STATUS_OK)
        return st;
    if (added && !json_is_array(added)) {
        duet__set_err(err, err_size, "%s: added_tokens must be an array", path);
        return DUET_STATUS_BAD_FORMAT;
    }
    added = added ? json_incref(added) : json_array();
    st = load_tables(t, model, added, raw, path, err, err_size);
    if (st == DUET_STATUS_OK)
        st = load_added(t, added);
    json_decref(added);
    if (st == DUET_STATUS_OK)
        model_flags(t, model);
    if (st == DUET_STATUS_OK)
        st = normalize_added(t);
    return st;
}

static duet_status load_root(duet_tokenizer *t, json_t *root, duet__raw *raw, const char *path,
                             char *err, size_t err_size)
{
    duet_status st;

    if (!json_is_object(root)) {
        duet__set_err(err, err_size, "%s: not a JSON object", path);
        return DUET_STATUS_BAD_FORMAT;
    }
    /* Components first: whether a normalizer exists decides which added tokens are accepted. */
    st = duet__load_components(t, root, path, err, err_size);
    if (st == DUET_STATUS_OK)
        st = load_model(t, root, raw, path, err, err_size);
    if (st == DUET_STATUS_OK)
        st = duet__load_post(t, json_object_get(root, "post_processor"), path, err, err_size);
    return st;
}

static duet_status read_file(const char *path, char **out, size_t *len, char *err, size_t err_size)
{
    FILE *f = fopen(path, "rb");
    duet_status st = DUET_STATUS_IO;
    long size;

    *out = NULL;
    if (!f) {
        duet__set_err(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return DUET_STATUS_IO;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        *out = malloc((size_t)size + 1);
        st = !*out                                             ? DUET_STATUS_OUT_OF_MEMORY
             : fread(*out, 1, (size_t)size, f) == (size_t)size ? DUET_STATUS_OK
                                                               : DUET_STATUS_IO;
        *len = (size_t)size;
    }
    if (st == DUET_STATUS_IO)
        duet__set_err(err, err_size, "%s: cannot read", path);
    if (st != DUET_STATUS_OK) {
        free(*out);
        *out = NULL;
    }
    fclose(f);
    return st;
}

/* Parses LEN bytes of TEXT: model.vocab and model.merges by the fast path when it can
 * (rawjson.c), the rest, or everything, with jansson. */
static duet_status parse(duet_tokenizer *t, const char *text, size_t len, const char *path,
                         char *err, size_t err_size)
{
    duet__raw raw[2];
    char *rest = NULL;
    json_error_t jerr;
    json_t *root;
    duet_status st;

    memset(raw, 0, sizeof(raw));
    if (!duet__raw_split(text, len, &raw[0], &raw[1], &rest))
        rest = NULL;
    root = json_loadb(rest ? rest : text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (!root && rest) { /* let jansson find the error in the whole text */
        duet__raw_fini(&raw[0]);
        duet__raw_fini(&raw[1]);
        root = json_loadb(text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    }
    free(rest);
    if (!root) {
        duet__set_err(err, err_size, "%s:%d: %s", path, jerr.line, jerr.text);
        st = DUET_STATUS_BAD_FORMAT;
    } else {
        st = load_root(t, root, raw, path, err, err_size);
        json_decref(root);
    }
    duet__raw_fini(&raw[0]);
    duet__raw_fini(&raw[1]);
    return st;
}

/* A tokenizer.json-shaped ROOT whose model.vocab and model.merges are already in RAW (gguf.c). */
duet_status duet__load_parsed(duet_tokenizer *t, void *root, duet__raw *raw, const char *path,
                              char *err, size_t err_size)
{
    return load_root(t, root, raw, path, err, err_size);
}

/* tokenizer.json from PATH, or (TEXT not NULL) from LEN bytes of TEXT named PATH in messages. */
duet_status duet__load_json(duet_tokenizer *t, const char *path, const char *text, size_t len,
                            char *err, size_t err_size)
{
    char *file = NULL;
    duet_status st;

    if (!text) {
        st = read_file(path, &file, &len, err, err_size);
        if (st != DUET_STATUS_OK)
            return st;
        text = file;
    }
    st = parse(t, text, len, path, err, err_size);
    free(file);
    return st;
}
