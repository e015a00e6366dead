/*
 * The tokenizer object: loading a folder (tokenizer.json, tokenizer_config.json,
 * generation_config.json), the post-processor, and the lookups of include/duet/tokenizer.h.
 */
#include "tokenizer-int.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TemplateProcessing's "single": SpecialToken items before and after {"Sequence": "A"}. */
static duet_status load_template(duet_tokenizer *t, json_t *post, const char *path, char *err,
                                 size_t err_size)
{
    json_t *single = json_object_get(post, "single"), *item;
    size_t i;
    bool after = false;

    json_array_foreach(single, i, item)
    {
        const char *tok =
            json_string_value(json_object_get(json_object_get(item, "SpecialToken"), "id"));
        int32_t id = tok ? duet__lookup(t, tok, strlen(tok)) : -1;

        if (json_object_get(item, "Sequence")) {
            after = true;
            continue;
        }
        if (id < 0 || (after ? t->n_suffix : t->n_prefix) == 4) {
            duet__set_err(err, err_size,
                          "%s: post_processor.single[%zu] names no known special token", path, i);
            return DUET_STATUS_BAD_FORMAT;
        }
        if (after)
            t->suffix[t->n_suffix++] = id;
        else
            t->prefix[t->n_prefix++] = id;
    }
    return DUET_STATUS_OK;
}

duet_status duet__load_post(duet_tokenizer *t, void *post_, const char *path, char *err,
                            size_t err_size)
{
    json_t *post = post_, *e;
    const char *type = json_string_value(json_object_get(post, "type"));
    size_t i;

    if (!post || json_is_null(post) || (type && strcmp(type, "ByteLevel") == 0))
        return DUET_STATUS_OK; /* ByteLevel only trims offsets: the ids are unchanged */
    if (type && strcmp(type, "TemplateProcessing") == 0)
        return load_template(t, post, path, err, err_size);
    if (type && strcmp(type, "Sequence") == 0) {
        json_array_foreach(json_object_get(post, "processors"), i, e)
        {
            const char *et = json_string_value(json_object_get(e, "type"));

            if (et && strcmp(et, "Sequence") == 0)
                break;
            if (duet__load_post(t, e, path, err, err_size) != DUET_STATUS_OK)
                return DUET_STATUS_UNSUPPORTED;
        }
        if (i == json_array_size(json_object_get(post, "processors")))
            return DUET_STATUS_OK;
    }
    duet__set_err(err, err_size, "%s: post_processor type \"%s\" is not supported", path,
                  type ? type : "(none)");
    return DUET_STATUS_UNSUPPORTED;
}

/* bos_token / eos_token: a string or {"content": "..."}. */
static int32_t config_token(const duet_tokenizer *t, json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    const char *s = json_string_value(json_is_object(v) ? json_object_get(v, "content") : v);

    return s ? duet__lookup(t, s, strlen(s)) : -1;
}

static json_t *load_optional(const char *dir, const char *name, size_t flags, char *path,
                             size_t path_size)
{
    snprintf(path, path_size, "%s/%s", dir, name);
    return json_load_file(path, flags, NULL);
}

/* transformers' LlamaTokenizer(Fast) rebuilds its template from add_bos_token / add_eos_token. */
static void llama_flags(duet_tokenizer *t, json_t *cfg)
{
    const char *cls = json_string_value(json_object_get(cfg, "tokenizer_class"));
    json_t *bos = json_object_get(cfg, "add_bos_token"),
           *eos = json_object_get(cfg, "add_eos_token");
    int32_t bos_id = config_token(t, cfg, "bos_token"), eos_id = config_token(t, cfg, "eos_token");

    if (!cls || strncmp(cls, "LlamaTokenizer", 14) != 0 || (!bos && !eos))
        return;
    t->n_prefix = json_is_true(bos) && bos_id >= 0;
    t->prefix[0] = bos_id;
    t->n_suffix = json_is_true(eos) && eos_id >= 0;
    t->suffix[0] = eos_id;
}

static duet_status load_config(duet_tokenizer *t, const char *dir)
{
    char path[4096];
    /* Reals for integers: Llama 3's model_max_length (1e30) is beyond jansson's integers, and
     * no key read here is a number. */
    json_t *cfg =
        load_optional(dir, "tokenizer_config.json", JSON_DECODE_INT_AS_REAL, path, sizeof(path));
    json_t *gen = load_optional(dir, "generation_config.json", 0, path, sizeof(path));
    json_t *eos = json_object_get(gen, "eos_token_id"), *e;
    size_t i;
    duet_status st;

    t->bos_id = config_token(t, cfg, "bos_token");
    if (json_is_integer(eos) && json_integer_value(eos) >= 0)
        t->eos_ids[t->n_eos++] = (int32_t)json_integer_value(eos);
    json_array_foreach(eos, i, e) if (json_is_integer(e) && t->n_eos < DUET_TOKENIZER_MAX_EOS &&
                                      json_integer_value(e) >= 0 &&
                                      json_integer_value(e) <= INT32_MAX) t->eos_ids[t->n_eos++] =
        (int32_t)json_integer_value(e);
    if (t->n_eos == 0 && config_token(t, cfg, "eos_token") >= 0)
        t->eos_ids[t->n_eos++] = config_token(t, cfg, "eos_token");
    llama_flags(t, cfg);
    st = duet__chat_load(t, dir, cfg);
    json_decref(cfg);
    json_decref(gen);
    return st;
}

/* A tokenizer from DIR/tokenizer.json (TEXT NULL) or from TEXT, without the companion files. */
static duet_status create(const char *path, const char *text, size_t len, duet_tokenizer **out,
                          char *err, size_t err_size)
{
    duet_tokenizer *t = calloc(1, sizeof(*t));
    duet_status st;

    *out = NULL;
    if (!t)
        return DUET_STATUS_OUT_OF_MEMORY;
    t->unk_id = -1;
    t->bos_id = -1;
    st = duet__load_json(t, path, text, len, err, err_size);
    if (st == DUET_STATUS_OK)
        st = duet__cache_create(&t->cache);
    if (st != DUET_STATUS_OK) {
        if (st == DUET_STATUS_OUT_OF_MEMORY)
            duet__set_err(err, err_size, "%s: out of memory", path);
        duet_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return DUET_STATUS_OK;
}

duet_status duet__tokenizer_from_json(const char *text, size_t len, duet_tokenizer **out, char *err,
                                      size_t err_size)
{
    return create("tokenizer.json", text, len, out, err, err_size);
}

/* The folder of a model path: dir itself, or for a GGUF file (a regular file) the folder that
 * holds it, whose tokenizer.json stands beside the file. */
static const char *model_folder(const char *dir, char *buf, size_t size)
{
    struct stat sb;
    const char *slash;

    if (stat(dir, &sb) != 0 || !S_ISREG(sb.st_mode))
        return dir;
    slash = strrchr(dir, '/');
    if (!slash)
        return ".";
    snprintf(buf, size, "%.*s", slash > dir ? (int)(slash - dir) : 1, dir); /* "/x" -> "/" */
    return buf;
}

duet_status duet_tokenizer_load(const char *dir, duet_tokenizer **out, char *err, size_t err_size)
{
    char path[4096], folder[3072];
    const char *gguf;
    duet_status st;

    if (!dir || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    gguf = dir;
    dir = model_folder(dir, folder, sizeof(folder));
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    /* A GGUF file without a tokenizer.json beside it: the tokenizer it embeds. */
    if (dir != gguf && access(path, F_OK) != 0 && duet__is_gguf(gguf))
        return duet__tokenizer_load_gguf(gguf, out, err, err_size);
    st = create(path, NULL, 0, out, err, err_size);
    if (st == DUET_STATUS_OK && (st = load_config(*out, dir)) != DUET_STATUS_OK) {
        duet__set_err(err, err_size, "%s: out of memory reading the chat template", dir);
        duet_tokenizer_destroy(*out);
        *out = NULL;
    }
    return st;
}

void duet_tokenizer_destroy(duet_tokenizer *t)
{
    if (!t)
        return;
    duet__cache_destroy(t->cache);
    duet__chat_free(t);
    duet__steps_free(t->norm, t->n_norm);
    duet__steps_free(t->pre, t->n_pre);
    duet__steps_free(t->dec, t->n_dec);
    duet__strmap_fini(&t->vocab);
    duet__strmap_fini(&t->added_map);
    duet__pairmap_fini(&t->merges);
    free(t->added);
    free(t->nadded);
    free(t->tok_off);
    free(t->tok_len);
    free(t->special);
    free(t->arena.data);
    free(t);
}

void duet_tokenizer_free(void *ptr)
{
    free(ptr);
}

uint32_t duet_tokenizer_vocab_size(const duet_tokenizer *t)
{
    return t->n_ids;
}

int32_t duet_tokenizer_token_to_id(const duet_tokenizer *t, const char *token, size_t len)
{
    return duet__lookup(t, token, len);
}

const char *duet_tokenizer_id_to_token(const duet_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_ids || t->tok_len[id] == UINT32_MAX)
        return NULL;
    if (len)
        *len = t->tok_len[id];
    return t->arena.data + t->tok_off[id];
}

bool duet_tokenizer_is_special(const duet_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_ids && t->special[id];
}

int32_t duet_tokenizer_bos_id(const duet_tokenizer *t)
{
    return t->bos_id;
}

size_t duet_tokenizer_eos_ids(const duet_tokenizer *t, int32_t *ids, size_t max)
{
    for (size_t i = 0; i < t->n_eos && i < max; i++)
        ids[i] = t->eos_ids[i];
    return t->n_eos;
}
