/*
 * duet-run's text side (run_text.h): the tokenizer, prompts given as text (--prompt,
 * --prompts-text) or as a conversation (--chat), and the text of the generated ids.
 *
 *     --prompt TEXT ──────┐
 *     --prompts-text FILE ┴─ encode, special tokens on (BOS) ──────┐
 *     --chat FILE ── chat template (+ generation prompt) ──        ├─► prompt ids ─► engine
 *                    encode, special tokens off (the template     ─┘
 *                    wrote its own BOS)                               generated ids ─► decode,
 *                                                                      special tokens skipped
 *
 * as vLLM's generate and chat do. The tokenizer is the target model's (its folder) unless
 * --tokenizer names another; runs with prompts given as ids need none.
 */
#include "run_text.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool duet__prompts_push(struct prompts *ps, int32_t *ids, uint32_t n, char *text, size_t text_len)
{
    if (ps->n == ps->cap) {
        uint32_t cap = ps->cap ? 2 * ps->cap : 8;
        struct prompt *v = realloc(ps->v, cap * sizeof(*v));

        if (!v) {
            free(ids);
            free(text);
            return false;
        }
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n++] = (struct prompt){.ids = ids, .n = n, .text = text, .text_len = text_len};
    return true;
}

void duet__prompts_free(struct prompts *ps)
{
    for (uint32_t i = 0; i < ps->n; i++) {
        free(ps->v[i].ids);
        free(ps->v[i].text);
    }
    free(ps->v);
}

/* ---- the tokenizer ------------------------------------------------------------------------ */

int duet__run_tokenizer_load(const char *dir, bool needed, bool explicit_dir, const char *flag,
                             duet_tokenizer **out)
{
    size_t len = strlen(dir) + sizeof("/tokenizer.json");
    char *path = malloc(len), err[1024] = "";
    const char *slash = strrchr(dir, '/');
    struct stat sb;
    bool present, gguf;
    duet_status st;

    *out = NULL;
    if (!path) {
        fprintf(stderr, "duet-run: out of memory\n");
        return EXIT_FAILURE;
    }
    if (stat(dir, &sb) == 0 && S_ISREG(sb.st_mode)) /* a GGUF file: tokenizer.json beside it */
        snprintf(path, len, "%.*s/tokenizer.json", slash ? (int)(slash - dir) : 1,
                 slash ? dir : ".");
    else
        snprintf(path, len, "%s/tokenizer.json", dir);
    /* A GGUF file may embed its tokenizer: duet_tokenizer_load says NOT_FOUND when it does not. */
    gguf = stat(dir, &sb) == 0 && S_ISREG(sb.st_mode);
    present = access(path, F_OK) == 0 || gguf;
    free(path);
    if (!present && !explicit_dir) {
        if (!needed)
            return 0;
        fprintf(stderr,
                "duet-run: %s needs a tokenizer, and the target model's folder %s has no "
                "tokenizer.json: pass --tokenizer DIR, or generate the model with duet-mkmodel "
                "--tokenizer DIR\n",
                flag, dir);
        return EXIT_FAILURE;
    }
    st = duet_tokenizer_load(dir, out, err, sizeof(err));
    if (st == DUET_STATUS_OK)
        return 0;
    *out = NULL;
    if (st == DUET_STATUS_NOT_FOUND && gguf && !explicit_dir && !needed)
        return 0;
    if (st == DUET_STATUS_NOT_FOUND && gguf && !explicit_dir) {
        fprintf(stderr,
                "duet-run: %s needs a tokenizer, and the target model %s has neither a "
                "tokenizer.json beside it nor tokenizer.ggml.* in it: pass --tokenizer DIR\n",
                flag, dir);
        return EXIT_FAILURE;
    }
    if (!explicit_dir && !needed) {
        fprintf(stderr,
                "duet-run: warning: the target model's tokenizer is not used (%s); the "
                "output has ids only\n",
                err);
        return 0;
    }
    fprintf(stderr, "duet-run: %s%s\n", explicit_dir ? "--tokenizer: " : "", err);
    return EXIT_FAILURE;
}

/* ---- text prompts ------------------------------------------------------------------------- */

/* Encodes and appends; the prompt keeps a copy of the text. */
static int add_encoded(const duet_tokenizer *tok, const char *text, size_t len, bool add_special,
                       const char *what, struct prompts *ps)
{
    int32_t *enc, *ids;
    size_t n;
    char *copy;
    duet_status st = duet_tokenizer_encode(tok, text, len, add_special, &enc, &n);

    if (st != DUET_STATUS_OK) {
        fprintf(stderr, "duet-run: %s: cannot encode the text: %s\n", what, duet_status_str(st));
        return EXIT_FAILURE;
    }
    if (n == 0 || n > UINT32_MAX) {
        fprintf(stderr, "duet-run: %s: the text encodes to %s tokens\n", what,
                n ? "too many" : "no");
        duet_tokenizer_free(enc);
        return EXIT_FAILURE;
    }
    ids = malloc(n * sizeof(*ids));
    copy = malloc(len + 1);
    if (!ids || !copy) {
        free(ids);
        free(copy);
        ids = NULL;
    } else {
        memcpy(ids, enc, n * sizeof(*ids));
        memcpy(copy, text, len);
        copy[len] = '\0';
    }
    duet_tokenizer_free(enc);
    /* push frees what it was given when it fails */
    if (!ids || !duet__prompts_push(ps, ids, (uint32_t)n, copy, len)) {
        fprintf(stderr, "duet-run: out of memory\n");
        return EXIT_FAILURE;
    }
    return 0;
}

int duet__run_add_text(const duet_tokenizer *tok, const char *text, size_t len, const char *what,
                       struct prompts *ps)
{
    return add_encoded(tok, text, len, true, what, ps);
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/* One line of --prompts-text (its newline removed): raw text, or a JSON string literal. */
static int text_line(const duet_tokenizer *tok, char *line, size_t len, const char *where,
                     struct prompts *ps)
{
    json_error_t jerr;
    json_t *s;
    int rc;

    if (line[0] != '"')
        return duet__run_add_text(tok, line, len, where, ps);
    s = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!s || !json_is_string(s)) {
        fprintf(stderr, "duet-run: %s: a line that starts with '\"' must be one JSON string: %s\n",
                where, s ? "not a string" : jerr.text);
        json_decref(s);
        return EXIT_FAILURE;
    }
    rc = duet__run_add_text(tok, json_string_value(s), json_string_length(s), where, ps);
    json_decref(s);
    return rc;
}

/* An opened prompt file, refused when it is a directory. NULL (after a message) on failure. */
static FILE *open_prompt_file(const char *flag, const char *path)
{
    FILE *f = fopen(path, "r");
    struct stat st;

    if (!f) {
        fprintf(stderr, "duet-run: %s %s: %s\n", flag, path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "duet-run: %s %s: is a directory, not a file\n", flag, path);
        fclose(f);
        return NULL;
    }
    return f;
}

int duet__run_read_text_prompts(const duet_tokenizer *tok, const char *path, struct prompts *ps)
{
    FILE *f = open_prompt_file("--prompts-text", path);
    char *line = NULL, where[512];
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    int rc = 0;

    if (!f)
        return EXIT_FAILURE;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        snprintf(where, sizeof(where), "%s:%u", path, ++lineno);
        if (strlen(line) != (size_t)len) {
            fprintf(stderr, "duet-run: %s: a NUL byte in the line\n", where);
            rc = EXIT_FAILURE;
            break;
        }
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (!blank(line, (size_t)len))
            rc = text_line(tok, line, (size_t)len, where, ps);
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "duet-run: --prompts-text %s: reading after line %u: %s\n", path, lineno,
                strerror(errno));
        rc = EXIT_FAILURE;
    }
    free(line);
    fclose(f);
    return rc;
}

/* ---- chat --------------------------------------------------------------------------------- */

/* The messages of FILE, checked to be a non-empty array of objects with a string "role", as
 * compact JSON (free()); NULL after a message naming the file. */
static char *read_messages(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &jerr), *m;
    char *out = NULL;
    size_t i;

    if (!root) {
        fprintf(stderr, "duet-run: --chat %s:%d: not JSON: %s\n", path, jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_array(root) || json_array_size(root) == 0) {
        fprintf(stderr,
                "duet-run: --chat %s: expected a non-empty JSON array of messages "
                "[{\"role\": ..., \"content\": ...}, ...]\n",
                path);
        goto out_root;
    }
    json_array_foreach(root, i, m)
    {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            fprintf(stderr,
                    "duet-run: --chat %s: message %zu is not an object with a string "
                    "\"role\"\n",
                    path, i);
            goto out_root;
        }
    }
    if (!(out = json_dumps(root, JSON_COMPACT)))
        fprintf(stderr, "duet-run: out of memory\n");
out_root:
    json_decref(root);
    return out;
}

int duet__run_read_chat(const duet_tokenizer *tok, const char *dir, const char *path,
                        struct prompts *ps)
{
    duet_chat_options opts;
    char *messages = read_messages(path), *prompt = NULL, err[1024] = "", where[512];
    size_t prompt_len = 0;
    duet_status st;
    int rc;

    if (!messages)
        return EXIT_FAILURE;
    duet_chat_options_init(&opts);
    opts.add_generation_prompt = true;
    st = duet_tokenizer_apply_chat_template(tok, messages, strlen(messages), &opts, &prompt,
                                            &prompt_len, err, sizeof(err));
    free(messages);
    if (st == DUET_STATUS_NOT_FOUND) {
        fprintf(stderr,
                "duet-run: --chat %s: the tokenizer in %s has no chat template "
                "(chat_template in tokenizer_config.json, or chat_template.jinja)\n",
                path, dir);
        return EXIT_FAILURE;
    }
    if (st != DUET_STATUS_OK) {
        fprintf(stderr, "duet-run: --chat %s: the chat template of the tokenizer in %s: %s\n", path,
                dir, *err ? err : duet_status_str(st));
        return EXIT_FAILURE;
    }
    snprintf(where, sizeof(where), "--chat %s", path);
    rc = add_encoded(tok, prompt, prompt_len, false, where, ps);
    duet_tokenizer_free(prompt);
    return rc;
}

/* ---- output text -------------------------------------------------------------------------- */

char *duet__run_decode(const duet_tokenizer *tok, const int32_t *ids, uint32_t n, size_t *len)
{
    int32_t *known = malloc((n ? n : 1) * sizeof(*known));
    uint32_t k = 0;
    char *text = NULL;

    if (!known)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        size_t token_len;

        if (duet_tokenizer_id_to_token(tok, ids[i], &token_len))
            known[k++] = ids[i];
    }
    if (duet_tokenizer_decode(tok, known, k, true, &text, len) != DUET_STATUS_OK)
        text = NULL;
    free(known);
    return text;
}
