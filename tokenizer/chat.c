/*
 * Chat templates (duet/tokenizer.h): loading a model folder's template and rendering messages
 * with it as transformers' apply_chat_template does.
 *
 *     DIR/chat_template.jinja            ─┐ (the file wins, as in transformers)
 *     tokenizer_config.json chat_template ─┴► t->chat_template (text; parsed at each render)
 *     tokenizer_config.json bos/eos/unk/pad_token ─► t->chat_tokens
 *
 *     messages + add_generation_prompt + tools/documents (none) + special tokens + kwargs
 *         ─► JSON object of variables ─► duet__jinja_render (jinja_*.c) ─► prompt
 *
 * The template is kept as text and parsed at each render (a few microseconds for real
 * templates), so a template outside the interpreter's subset never makes loading fail: the
 * tokenizer still encodes and decodes, and apply reports the construct and its line.
 */
#include "jinja-int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const token_keys[DUET__CHAT_TOKENS] = {"bos_token", "eos_token", "unk_token",
                                                          "pad_token"};

char *duet__chat_strdup(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* DIR/chat_template.jinja into *OUT (NULL when absent). */
static duet_status read_jinja(const char *dir, char **out)
{
    char path[4096];
    FILE *f;
    long size;
    duet_status st = DUET_STATUS_OK;

    *out = NULL;
    snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
    if (!(f = fopen(path, "rb")))
        return DUET_STATUS_OK;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        st = DUET_STATUS_IO;
    else if (!(*out = malloc((size_t)size + 1)))
        st = DUET_STATUS_OUT_OF_MEMORY;
    else if (fread(*out, 1, (size_t)size, f) != (size_t)size)
        st = DUET_STATUS_IO;
    else
        (*out)[size] = '\0';
    fclose(f);
    if (st != DUET_STATUS_OK) {
        free(*out);
        *out = NULL;
    }
    return st == DUET_STATUS_IO ? DUET_STATUS_OK : st; /* unreadable: as if absent */
}

/* tokenizer_config.json's chat_template: a string, or [{"name", "template"}] of which "default"
 * is taken (transformers), or NULL. */
static const char *config_template(json_t *cfg)
{
    json_t *t = json_object_get(cfg, "chat_template"), *e;
    size_t i;

    if (json_is_string(t))
        return json_string_value(t);
    json_array_foreach(t, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));

        if (name && strcmp(name, "default") == 0)
            return json_string_value(json_object_get(e, "template"));
    }
    return NULL;
}

duet_status duet__chat_load(duet_tokenizer *t, const char *dir, void *cfg_)
{
    json_t *cfg = cfg_;
    const char *tmpl;
    duet_status st = read_jinja(dir, &t->chat_template);

    if (st != DUET_STATUS_OK)
        return st;
    if (!t->chat_template && (tmpl = config_template(cfg)) &&
        !(t->chat_template = duet__chat_strdup(tmpl, strlen(tmpl))))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (int i = 0; i < DUET__CHAT_TOKENS; i++) {
        json_t *v = json_object_get(cfg, token_keys[i]);
        json_t *s = json_is_object(v) ? json_object_get(v, "content") : v;

        if (json_is_string(s) &&
            !(t->chat_tokens[i] = duet__chat_strdup(json_string_value(s), json_string_length(s))))
            return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

void duet__chat_free(duet_tokenizer *t)
{
    free(t->chat_template);
    for (int i = 0; i < DUET__CHAT_TOKENS; i++)
        free(t->chat_tokens[i]);
}

const char *duet_tokenizer_chat_template(const duet_tokenizer *tok)
{
    return tok ? tok->chat_template : NULL;
}

void duet_chat_options_init(duet_chat_options *opts)
{
    opts->add_generation_prompt = true;
    opts->chat_template = NULL;
    opts->kwargs_json = NULL;
}

/* ---- rendering ----------------------------------------------------------------------------- */

static duet_status check_messages(json_t *msgs, char *err, size_t err_size)
{
    json_t *m;
    size_t i;

    if (!json_is_array(msgs)) {
        duet__set_err(err, err_size, "messages: not a JSON array");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    json_array_foreach(msgs, i, m)
    {
        json_t *content = json_object_get(m, "content");

        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            duet__set_err(err, err_size, "messages[%zu]: not an object with a string \"role\"", i);
            return DUET_STATUS_INVALID_ARGUMENT;
        }
        if (content && !json_is_string(content) && !json_is_null(content) &&
            !json_is_array(content)) {
            duet__set_err(err, err_size,
                          "messages[%zu].content: not a string, null or a list of parts", i);
            return DUET_STATUS_INVALID_ARGUMENT;
        }
    }
    return DUET_STATUS_OK;
}

/* The variables of one render: the defaults, then the members of KWARGS over them. */
static duet_status build_vars(const duet_tokenizer *tok, json_t *msgs, bool gen_prompt,
                              const char *kwargs, json_t **out, char *err, size_t err_size)
{
    json_t *vars = json_object(), *kw = NULL;
    bool ok = vars != NULL;
    json_error_t jerr;

    ok = ok && json_object_set(vars, "messages", msgs) == 0 &&
         json_object_set_new(vars, "add_generation_prompt", json_boolean(gen_prompt)) == 0 &&
         json_object_set_new(vars, "tools", json_null()) == 0 &&
         json_object_set_new(vars, "documents", json_null()) == 0;
    for (int i = 0; ok && tok && i < DUET__CHAT_TOKENS; i++)
        if (tok->chat_tokens[i])
            ok = json_object_set_new(vars, token_keys[i], json_string(tok->chat_tokens[i])) == 0;
    if (ok && kwargs) {
        if (!(kw = json_loads(kwargs, JSON_DECODE_ANY, &jerr)) || !json_is_object(kw)) {
            json_decref(kw);
            json_decref(vars);
            duet__set_err(err, err_size, "chat kwargs: not a JSON object (%s)",
                          kw ? "another value" : jerr.text);
            return DUET_STATUS_INVALID_ARGUMENT;
        }
        ok = json_object_update(vars, kw) == 0;
        json_decref(kw);
    }
    if (!ok) {
        json_decref(vars);
        duet__set_err(err, err_size, "chat template: out of memory");
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    *out = vars;
    return DUET_STATUS_OK;
}

static duet_status render(const char *tmpl, size_t len, json_t *vars, char **out, size_t *out_len,
                          char *err, size_t err_size)
{
    duet__jinja_limits lim;
    duet__buf b = {0};
    duet_status st;

    duet__jinja_limits_default(&lim);
    st = duet__jinja_render(tmpl, len, vars, &lim, &b, err, err_size);
    if (st != DUET_STATUS_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    if (out_len)
        *out_len = b.n;
    return DUET_STATUS_OK;
}

duet_status duet_tokenizer_apply_chat_template(const duet_tokenizer *tok, const char *messages_json,
                                               size_t len, const duet_chat_options *opts,
                                               char **prompt, size_t *prompt_len, char *err,
                                               size_t err_size)
{
    duet_chat_options defaults;
    const char *tmpl;
    json_t *msgs, *vars;
    json_error_t jerr;
    duet_status st;

    if (!tok || !messages_json || !prompt)
        return DUET_STATUS_INVALID_ARGUMENT;
    *prompt = NULL;
    if (!opts) {
        duet_chat_options_init(&defaults);
        opts = &defaults;
    }
    if (!(tmpl = opts->chat_template ? opts->chat_template : tok->chat_template)) {
        duet__set_err(err, err_size, "the tokenizer has no chat template");
        return DUET_STATUS_NOT_FOUND;
    }
    if (!(msgs = json_loadb(messages_json, len, JSON_DECODE_ANY, &jerr))) {
        duet__set_err(err, err_size, "messages: %s (line %d)", jerr.text, jerr.line);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    st = check_messages(msgs, err, err_size);
    if (st == DUET_STATUS_OK)
        st = build_vars(tok, msgs, opts->add_generation_prompt, opts->kwargs_json, &vars, err,
                        err_size);
    json_decref(msgs);
    if (st != DUET_STATUS_OK)
        return st;
    st = render(tmpl, strlen(tmpl), vars, prompt, prompt_len, err, err_size);
    json_decref(vars);
    return st;
}

duet_status duet_tokenizer_render_chat(const duet_tokenizer *tok, const char *messages_json,
                                       size_t len, bool add_generation_prompt,
                                       const char *chat_template, const char *kwargs_json,
                                       char **prompt, size_t *prompt_len, char *err,
                                       size_t err_size)
{
    duet_chat_options opts;

    duet_chat_options_init(&opts);
    opts.add_generation_prompt = add_generation_prompt;
    opts.chat_template = chat_template;
    opts.kwargs_json = kwargs_json;
    return duet_tokenizer_apply_chat_template(tok, messages_json, len, &opts, prompt, prompt_len,
                                              err, err_size);
}

duet_status duet_chat_template_render(const char *tmpl, size_t tmpl_len, const char *context_json,
                                      size_t context_len, char **out, size_t *out_len, char *err,
                                      size_t err_size)
{
    json_t *vars = NULL;
    json_error_t jerr;
    duet_status st;

    if (!tmpl || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    *out = NULL;
    if (context_json && !(vars = json_loadb(context_json, context_len, JSON_DECODE_ANY, &jerr))) {
        duet__set_err(err, err_size, "context: %s (line %d)", jerr.text, jerr.line);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (vars && !json_is_object(vars)) {
        json_decref(vars);
        duet__set_err(err, err_size, "context: not a JSON object");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    st = render(tmpl, tmpl_len, vars, out, out_len, err, err_size);
    json_decref(vars);
    return st;
}
