/*
 * duet-mkmodel --tokenizer DIR (mkmodel_tokenizer.h): a generated model gets a real tokenizer.
 *
 *     DIR/tokenizer.json ─── loaded (refused here if duet cannot load it) ───┐
 *                            its ids: vocab_size, bos / eos / pad ids ──► config.json,
 *                                                                        generation_config.json
 *     DIR/tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 *     chat_template.jinja ──── copied as they are ─────────────────────► OUT/
 *     DIR/generation_config.json ── merged into the generated one ─────► OUT/
 *
 * The files are read before the output folder is touched, so DIR may be OUT itself (--force
 * clears a model's tokenizer files too). A draft (--draft-of) takes its target's files the same
 * way, so that the two share one vocabulary.
 */
#include "mkmodel_tokenizer.h"

#include <duet/tokenizer.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_USAGE = 2 };

/* The files, in the order of duet__tok_files's arrays; the first is required. */
static const char *const names[DUET__TOK_FILES] = {
    "tokenizer.json",      "tokenizer_config.json",  "special_tokens_map.json",
    "chat_template.jinja", "generation_config.json",
};
enum { GENERATION_CONFIG = 4 };

static char *path_join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);

    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* The whole of PATH into *BYTES (NUL-terminated, *LEN bytes before it). 0, ENOENT, or an errno. */
static int slurp(const char *path, char **bytes, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *grown;
    size_t n = 0, cap = 0, got;
    int err = 0;

    if (!f)
        return errno;
    do {
        if (n + 1 >= cap) {
            cap = cap ? 2 * cap : 1 << 16;
            if (!(grown = realloc(buf, cap))) {
                err = ENOMEM;
                break;
            }
            buf = grown;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    if (!err && ferror(f))
        err = errno ? errno : EIO;
    fclose(f);
    if (err) {
        free(buf);
        return err;
    }
    buf[n] = '\0';
    *bytes = buf;
    *len = n;
    return 0;
}

bool duet__tok_files_present(const char *dir)
{
    char *path = path_join(dir, names[0]);
    bool present = path && access(path, F_OK) == 0;

    free(path);
    return present;
}

/* The id of tokenizer_config.json's KEY ("pad_token": a string or {"content": ...}), or -1. */
static int32_t config_token(const duet_tokenizer *tok, json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);

    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    return duet_tokenizer_token_to_id(tok, json_string_value(v), json_string_length(v));
}

/* The model's vocabulary and special ids from the tokenizer. */
static int apply_ids(const duet_tokenizer *tok, const char *dir, const char *config_bytes,
                     duet_model_desc *d, bool vocab_given)
{
    uint32_t v = duet_tokenizer_vocab_size(tok);
    int32_t eos[DUET_TOKENIZER_MAX_EOS];
    size_t n_eos = duet_tokenizer_eos_ids(tok, eos, DUET_TOKENIZER_MAX_EOS);
    json_t *cfg = config_bytes ? json_loads(config_bytes, 0, NULL) : NULL;

    if (vocab_given && d->vocab_size < v) {
        fprintf(stderr,
                "duet-mkmodel: --vocab %u is smaller than the %u token ids of the tokenizer in "
                "%s\nTry 'duet-mkmodel --help'.\n",
                d->vocab_size, v, dir);
        json_decref(cfg);
        return EXIT_USAGE;
    }
    if (!vocab_given)
        d->vocab_size = v;
    d->bos_token_id = duet_tokenizer_bos_id(tok);
    d->pad_token_id = config_token(tok, cfg, "pad_token");
    d->n_eos = 0;
    for (size_t i = 0; i < n_eos && i < DUET_TOKENIZER_MAX_EOS && i < DUET_MODEL_MAX_EOS; i++)
        if (eos[i] >= 0 && (uint32_t)eos[i] < d->vocab_size)
            d->eos_token_ids[d->n_eos++] = eos[i];
    json_decref(cfg);
    return 0;
}

/* Reads every file of the list that DIR has. */
static int read_files(const char *dir, struct duet__tok_files *out)
{
    for (int i = 0; i < DUET__TOK_FILES; i++) {
        char *path = path_join(dir, names[i]);
        int err = path ? slurp(path, &out->bytes[i], &out->len[i]) : ENOMEM;

        if (err && (err != ENOENT || i == 0)) {
            fprintf(stderr, "duet-mkmodel: %s/%s: %s\n", dir, names[i], strerror(err));
            free(path);
            return EXIT_FAILURE;
        }
        free(path);
    }
    return 0;
}

int duet__tok_files_read(const char *dir, duet_model_desc *desc, bool vocab_given,
                         struct duet__tok_files *out)
{
    duet_tokenizer *tok;
    char err[1024] = "";
    int rc;

    memset(out, 0, sizeof(*out));
    if (duet_tokenizer_load(dir, &tok, err, sizeof(err)) != DUET_STATUS_OK) {
        fprintf(stderr, "duet-mkmodel: --tokenizer %s: %s\n", dir, err);
        return EXIT_FAILURE;
    }
    rc = read_files(dir, out);
    if (!rc && desc)
        rc = apply_ids(tok, dir, out->bytes[1], desc, vocab_given);
    duet_tokenizer_destroy(tok);
    if (rc)
        duet__tok_files_free(out);
    return rc;
}

static int write_file(const char *dir, const char *name, const char *bytes, size_t len)
{
    char *path = path_join(dir, name);
    FILE *f = path ? fopen(path, "wb") : NULL;
    bool ok = f && fwrite(bytes, 1, len, f) == len;

    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "duet-mkmodel: %s/%s: cannot write: %s\n", dir, name,
                path ? strerror(errno) : "out of memory");
    free(path);
    return ok ? 0 : EXIT_FAILURE;
}

/* OUT/generation_config.json (written by the generator) plus the keys of the tokenizer's that it
 * lacks; a tokenizer's generation_config.json that is not a JSON object adds nothing. */
static int merge_generation_config(const char *dir, const char *theirs_bytes)
{
    char *path = path_join(dir, names[GENERATION_CONFIG]);
    json_t *ours = path ? json_load_file(path, 0, NULL) : NULL;
    json_t *theirs = json_loads(theirs_bytes, 0, NULL);
    int rc = 0;

    if (!ours || !json_is_object(ours)) {
        fprintf(stderr, "duet-mkmodel: %s: cannot read back the generated file\n",
                path ? path : dir);
        rc = EXIT_FAILURE;
    } else if (json_is_object(theirs)) {
        json_object_update_missing(ours, theirs);
        if (json_dump_file(ours, path, JSON_INDENT(2)) != 0) {
            fprintf(stderr, "duet-mkmodel: %s: cannot write\n", path);
            rc = EXIT_FAILURE;
        }
    }
    json_decref(ours);
    json_decref(theirs);
    free(path);
    return rc;
}

int duet__tok_files_write(const struct duet__tok_files *f, const char *dir)
{
    int rc = 0;

    for (int i = 0; !rc && i < DUET__TOK_FILES; i++) {
        if (!f->bytes[i])
            continue;
        if (i == GENERATION_CONFIG)
            rc = merge_generation_config(dir, f->bytes[i]);
        else
            rc = write_file(dir, names[i], f->bytes[i], f->len[i]);
    }
    return rc;
}

void duet__tok_files_free(struct duet__tok_files *f)
{
    for (int i = 0; i < DUET__TOK_FILES; i++) {
        free(f->bytes[i]);
        f->bytes[i] = NULL;
    }
}
