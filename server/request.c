/*
 * request.c — the body of an OpenAI / vLLM request, from JSON text to a checked C struct.
 *
 *   JSON text ─► jansson tree ─► one pass over the members ─► struct duet__srv_request
 *                                   │ known field: type and range checked, value copied
 *                                   │ field that changes results but is not built yet
 *                                   │   (best_of, penalties, ...): 400 "not supported yet"
 *                                   │   unless it holds its neutral value (chat's echo = false)
 *                                   └ anything else: 400 "unknown field"
 *
 * Nothing here knows the tokenizer or the engine: lengths, the vocabulary and max_model_len are
 * checked by the caller once it has them. The function is pure (fuzz/fuzz_server_request.c).
 */
#include "server-int.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROMPTS 1024 /* prompts in one request */
#define MAX_STOPS 64     /* stop strings in one request */
#define MAX_LOGPROBS 20  /* vLLM's default max_logprobs */
#define MAX_N 1024       /* choices per prompt ("n"); the engine caps it at max_num_seqs */

/* Cuts an incomplete UTF-8 sequence off the end of s: a name cut to fit, or a message that
 * filled its buffer, must stay valid UTF-8 to go into the JSON answer. */
static void trim_utf8_tail(char *s)
{
    size_t n = strlen(s), lead = n;

    while (lead > 0 && n - lead < 4 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80)
        lead--;
    if (lead == 0)
        return;
    lead--; /* s[lead]: the last byte that is not a continuation byte */
    {
        unsigned char c = (unsigned char)s[lead];
        size_t want = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;

        if (n - lead < want)
            s[lead] = '\0';
    }
}

void duet__srv_utf8_copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
    trim_utf8_tail(dst);
}

bool duet__srv_fail(struct duet__srv_error *err, int status, const char *code, const char *param,
                    const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    err->code = code;
    err->type = status == 401   ? "authentication_error"
                : status == 404 ? "not_found_error"
                : status == 429 ? "rate_limit_error"
                : status == 503 ? "service_unavailable"
                : status >= 500 ? "server_error"
                                : "invalid_request_error";
    snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    trim_utf8_tail(err->param);
    trim_utf8_tail(err->message);
    return false;
}

static bool bad(struct duet__srv_error *err, const char *param, const char *what)
{
    return duet__srv_fail(err, 400, NULL, param, "'%s' %s", param, what);
}

void duet__srv_request_fini(struct duet__srv_request *r)
{
    for (uint32_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    for (uint32_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_token_ids);
    free(r->model);
    free(r->messages_json);
    free(r->chat_kwargs_json);
    free(r->chat_template);
    free(r->logit_bias);
    memset(r, 0, sizeof(*r));
}

/* ---- values ------------------------------------------------------------------------------- */

static bool get_number(json_t *v, const char *name, double lo, double hi,
                       struct duet__srv_error *err, double *out)
{
    if (!json_is_number(v))
        return bad(err, name, "must be a number");
    *out = json_number_value(v);
    if (!(*out >= lo && *out <= hi))
        return duet__srv_fail(err, 400, NULL, name, "'%s' must be in [%g, %g], got %g", name, lo,
                              hi, *out);
    return true;
}

static bool get_int(json_t *v, const char *name, json_int_t lo, json_int_t hi,
                    struct duet__srv_error *err, json_int_t *out)
{
    if (!json_is_integer(v))
        return bad(err, name, "must be an integer");
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return duet__srv_fail(err, 400, NULL, name, "'%s' must be in [%lld, %lld], got %lld", name,
                              (long long)lo, (long long)hi, (long long)*out);
    return true;
}

static bool get_bool(json_t *v, const char *name, struct duet__srv_error *err, bool *out)
{
    if (!json_is_boolean(v))
        return bad(err, name, "must be a boolean");
    *out = json_is_true(v);
    return true;
}

/* A string without NUL characters (prompts may hold them; names and templates may not). */
static bool plain_string(json_t *v)
{
    return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

static bool oom(struct duet__srv_error *err)
{
    return duet__srv_fail(err, 500, NULL, NULL, "out of memory");
}

/* A non-empty array of token ids in [0, INT32_MAX]. */
static bool get_ids(json_t *v, const char *name, struct duet__srv_error *err, int32_t **ids,
                    uint32_t *n)
{
    size_t i, len = json_array_size(v);
    json_t *x;

    if (!json_is_array(v) || len == 0 || len > UINT32_MAX / 2)
        return bad(err, name, "must be a non-empty list of token ids");
    *ids = malloc(len * sizeof(**ids));
    if (!*ids)
        return oom(err);
    json_array_foreach(v, i, x)
    {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return bad(err, name, "must hold token ids: integers in [0, 2147483647]");
        }
        (*ids)[i] = (int32_t)json_integer_value(x);
    }
    *n = (uint32_t)len;
    return true;
}

static bool add_text_prompt(struct duet__srv_request *r, json_t *s, struct duet__srv_error *err)
{
    struct duet__srv_prompt *p = &r->prompts[r->n_prompts];

    p->text_len = json_string_length(s);
    p->text = malloc(p->text_len + 1);
    if (!p->text)
        return oom(err);
    memcpy(p->text, json_string_value(s), p->text_len + 1);
    r->n_prompts++;
    return true;
}

/* "prompt": a string, a list of strings, a list of ids, or a list of lists of ids. */
static bool get_prompts(json_t *v, struct duet__srv_request *r, struct duet__srv_error *err)
{
    size_t i, n = json_is_array(v) ? json_array_size(v) : 1;
    bool ids = json_is_array(v) && n > 0 && json_is_integer(json_array_get(v, 0));
    json_t *x;

    if (!json_is_string(v) && !json_is_array(v))
        return bad(err, "prompt",
                   "must be a string, a list of strings, a list of token ids or a "
                   "list of lists of token ids");
    if (n == 0)
        return bad(err, "prompt", "must not be an empty list");
    if (n > MAX_PROMPTS && !ids)
        return duet__srv_fail(err, 400, NULL, "prompt", "at most %d prompts in one request",
                              MAX_PROMPTS);
    r->prompts = calloc(ids ? 1 : n, sizeof(*r->prompts));
    if (!r->prompts)
        return oom(err);
    if (json_is_string(v))
        return add_text_prompt(r, v, err);
    if (ids) {
        if (!get_ids(v, "prompt", err, &r->prompts[0].ids, &r->prompts[0].n_ids))
            return false;
        r->n_prompts = 1;
        return true;
    }
    json_array_foreach(v, i, x)
    {
        if (json_is_string(x)) {
            if (!add_text_prompt(r, x, err))
                return false;
        } else if (json_is_array(x)) {
            if (!get_ids(x, "prompt", err, &r->prompts[i].ids, &r->prompts[i].n_ids))
                return false;
            r->n_prompts++;
        } else {
            return bad(err, "prompt", "must be a list of strings or a list of lists of token ids");
        }
    }
    return true;
}

static bool get_stop(json_t *v, struct duet__srv_request *r, struct duet__srv_error *err)
{
    size_t i, n = json_is_array(v) ? json_array_size(v) : 1;
    json_t *x;

    if (json_is_null(v))
        return true;
    if (!json_is_string(v) && !json_is_array(v))
        return bad(err, "stop", "must be a string or a list of strings");
    if (n > MAX_STOPS)
        return duet__srv_fail(err, 400, NULL, "stop", "at most %d stop strings", MAX_STOPS);
    r->stop = calloc(n ? n : 1, sizeof(*r->stop));
    if (!r->stop)
        return oom(err);
    for (i = 0; i < n; i++) {
        x = json_is_array(v) ? json_array_get(v, i) : v;
        if (!plain_string(x) || json_string_length(x) == 0)
            return bad(err, "stop", "must hold non-empty strings");
        r->stop[i] = strdup(json_string_value(x));
        if (!r->stop[i])
            return oom(err);
        r->n_stop++;
        if (json_string_length(x) > r->max_stop_len)
            r->max_stop_len = json_string_length(x);
    }
    return true;
}

/* ---- chat messages ------------------------------------------------------------------------ */

/* content as a list of parts: the text parts joined with "\n" (as vLLM does). */
static json_t *flatten_parts(json_t *parts, struct duet__srv_error *err)
{
    size_t i, total = 0, at = 0;
    json_t *part, *s = NULL;
    char *buf;

    json_array_foreach(parts, i, part)
    {
        json_t *text = json_object_get(part, "text");

        if (!json_is_object(part) || !json_is_string(json_object_get(part, "type")) ||
            strcmp(json_string_value(json_object_get(part, "type")), "text") != 0 ||
            !json_is_string(text)) {
            bad(err, "messages",
                "content parts other than {\"type\": \"text\", \"text\": ...} are "
                "not supported yet");
            return NULL;
        }
        total += json_string_length(text) + 1;
    }
    buf = malloc(total + 1);
    if (!buf) {
        oom(err);
        return NULL;
    }
    json_array_foreach(parts, i, part)
    {
        json_t *text = json_object_get(part, "text");

        if (i)
            buf[at++] = '\n';
        memcpy(buf + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s = json_stringn_nocheck(buf, at);
    free(buf);
    if (!s)
        oom(err);
    return s;
}

/* A non-empty list of {"role": string, "content": string | parts | null, ...}; the copy kept has
 * every content as a string (or null). */
static bool get_messages(json_t *v, struct duet__srv_request *r, struct duet__srv_error *err)
{
    json_t *copy, *m;
    size_t i;

    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, "messages", "must be a non-empty list of messages");
    copy = json_deep_copy(v);
    if (!copy)
        return oom(err);
    json_array_foreach(copy, i, m)
    {
        json_t *content = json_object_get(m, "content"), *flat;

        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            json_decref(copy);
            return bad(err, "messages", "must hold objects with a string 'role'");
        }
        if (!content || json_is_string(content) || json_is_null(content))
            continue;
        if (!json_is_array(content)) {
            json_decref(copy);
            return bad(err, "messages", "content must be a string, a list of parts or null");
        }
        flat = flatten_parts(content, err);
        if (!flat || json_object_set_new(m, "content", flat)) {
            json_decref(copy);
            return false;
        }
    }
    r->messages_json = json_dumps(copy, JSON_COMPACT);
    json_decref(copy);
    return r->messages_json ? true : oom(err);
}

/* ---- fields ------------------------------------------------------------------------------- */

/* Fields that change results and are not built yet: accepted only with their neutral value. */
static bool neutral(const char *name, json_t *v)
{
    static const char *const null_or_false[] = {"echo",
                                                "use_beam_search",
                                                "include_stop_str_in_output",
                                                "suffix",
                                                "response_format",
                                                "tools",
                                                "tool_choice",
                                                "continue_final_message",
                                                "guided_json",
                                                "guided_regex",
                                                "guided_choice",
                                                "guided_grammar",
                                                "top_logprobs",
                                                "prompt_logprobs",
                                                "truncate_prompt_tokens",
                                                "min_tokens",
                                                "allowed_token_ids",
                                                "bad_words",
                                                NULL};
    static const char *const zero[] = {"min_tokens", NULL};

    for (const char *const *f = null_or_false; *f; f++)
        if (strcmp(name, *f) == 0)
            return json_is_null(v) || json_is_false(v) ||
                   (json_is_integer(v) && json_integer_value(v) == 0 &&
                    strcmp(name, "echo") != 0) ||
                   (json_is_array(v) && json_array_size(v) == 0);
    for (const char *const *f = zero; *f; f++)
        if (strcmp(name, *f) == 0)
            return json_is_null(v) || (json_is_number(v) && json_number_value(v) == 0);
    if (strcmp(name, "best_of") == 0)
        return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) == 1);
    if (strcmp(name, "length_penalty") == 0)
        return json_is_null(v) || (json_is_number(v) && json_number_value(v) == 1);
    if (strcmp(name, "skip_special_tokens") == 0)
        return json_is_true(v);
    return false;
}

static bool is_deferred(const char *name)
{
    static const char *const names[] = {"best_of",
                                        "top_logprobs",
                                        "echo",
                                        "use_beam_search",
                                        "length_penalty",
                                        "suffix",
                                        "response_format",
                                        "tools",
                                        "tool_choice",
                                        "min_tokens",
                                        "guided_json",
                                        "guided_regex",
                                        "guided_choice",
                                        "guided_grammar",
                                        "include_stop_str_in_output",
                                        "skip_special_tokens",
                                        "continue_final_message",
                                        "prompt_logprobs",
                                        "truncate_prompt_tokens",
                                        "allowed_token_ids",
                                        "bad_words",
                                        NULL};

    for (const char *const *n = names; *n; n++)
        if (strcmp(name, *n) == 0)
            return true;
    return false;
}

static bool get_stream_options(json_t *v, struct duet__srv_request *r, struct duet__srv_error *err)
{
    const char *k;
    json_t *x;

    if (json_is_null(v))
        return true;
    if (!json_is_object(v))
        return bad(err, "stream_options", "must be an object");
    json_object_foreach(v, k, x)
    {
        bool b = false;

        if (strcmp(k, "include_usage") == 0) {
            if (!get_bool(x, "stream_options.include_usage", err, &r->include_usage))
                return false;
        } else if (strcmp(k, "continuous_usage_stats") == 0) {
            if (!get_bool(x, "stream_options.continuous_usage_stats", err, &b))
                return false;
            if (b)
                return duet__srv_fail(err, 400, "unsupported_parameter",
                                      "stream_options.continuous_usage_stats",
                                      "'stream_options.continuous_usage_stats' is not supported "
                                      "yet");
        } else {
            char name[65];

            duet__srv_utf8_copy(name, sizeof(name), k);
            return duet__srv_fail(err, 400, NULL, "stream_options",
                                  "unknown field 'stream_options.%s'", name);
        }
    }
    return true;
}

/* The sampling fields every generating request shares. false with *err set, or true with
 * *handled telling whether the field was one of them. */
/* Completions: "logprobs" (0..MAX_LOGPROBS top entries) and "echo"; chat: "logprobs" (a
 * boolean) and "top_logprobs" (which needs it, checked in check_whole). Chat's "echo" is not
 * built (it echoes the last message, not the prompt). */
static bool logprobs_field(const char *k, json_t *v, struct duet__srv_request *r,
                           struct duet__srv_error *err, bool *handled)
{
    bool chat = r->kind == DUET__SRV_CHAT, on;
    json_int_t i;

    if (strcmp(k, "echo") == 0) {
        if (chat) {
            *handled = false;
            return true;
        }
        return json_is_null(v) || get_bool(v, k, err, &r->echo);
    }
    if (json_is_null(v))
        return true;
    if (chat && strcmp(k, "logprobs") == 0) {
        if (!get_bool(v, k, err, &on))
            return false;
        r->chat_logprobs = on;
        return true;
    }
    if (!chat && strcmp(k, "top_logprobs") == 0) {
        *handled = false;
        return true;
    }
    if (!get_int(v, k, 0, MAX_LOGPROBS, err, &i))
        return false;
    r->logprobs = (int32_t)i;
    return true;
}

/* "logit_bias": an object mapping token ids, as decimal strings, to numbers in [-100, 100]
 * (OpenAI's form); null or {} is none. */
static bool get_logit_bias(json_t *v, struct duet__srv_request *r, struct duet__srv_error *err)
{
    const char *key;
    json_t *b;
    size_t n;

    if (json_is_null(v))
        return true;
    if (!json_is_object(v))
        return bad(err, "logit_bias", "must be an object mapping token ids to numbers");
    n = json_object_size(v);
    if (n > 1u << 20)
        return bad(err, "logit_bias", "has too many entries");
    if (n && !(r->logit_bias = calloc(n, sizeof(*r->logit_bias))))
        return oom(err);
    json_object_foreach(v, key, b)
    {
        char *end;
        long long id;

        errno = 0;
        id = strtoll(key, &end, 10);
        if (!*key || *end || errno || id < 0 || id > INT32_MAX || key[0] == '+' || key[0] == ' ')
            return bad(err, "logit_bias", "keys must be token ids (non-negative integers)");
        if (!json_is_number(b) || !(json_number_value(b) >= -100 && json_number_value(b) <= 100))
            return bad(err, "logit_bias", "values must be numbers in [-100, 100]");
        for (uint32_t i = 0; i < r->n_logit_bias; i++)
            if (r->logit_bias[i].token == (int32_t)id)
                return bad(err, "logit_bias", "a token id is given twice");
        r->logit_bias[r->n_logit_bias++] =
            (duet_token_bias){.token = (int32_t)id, .bias = (float)json_number_value(b)};
    }
    return true;
}

/* presence_penalty, frequency_penalty, repetition_penalty (null: the default), logit_bias. */
static bool penalty_field(const char *k, json_t *v, struct duet__srv_request *r,
                          struct duet__srv_error *err, bool *handled)
{
    *handled = true;
    if (strcmp(k, "logit_bias") == 0)
        return get_logit_bias(v, r, err);
    if (json_is_null(v) &&
        (strcmp(k, "presence_penalty") == 0 || strcmp(k, "frequency_penalty") == 0 ||
         strcmp(k, "repetition_penalty") == 0))
        return true;
    if (strcmp(k, "presence_penalty") == 0)
        return get_number(v, k, -2.0, 2.0, err, &r->presence_penalty);
    if (strcmp(k, "frequency_penalty") == 0)
        return get_number(v, k, -2.0, 2.0, err, &r->frequency_penalty);
    if (strcmp(k, "repetition_penalty") == 0) {
        if (!get_number(v, k, 0.0, 1e6, err, &r->repetition_penalty))
            return false;
        return r->repetition_penalty > 0 ? true : bad(err, k, "must be > 0");
    }
    *handled = false;
    return true;
}

static bool sampling_field(const char *k, json_t *v, struct duet__srv_request *r,
                           struct duet__srv_error *err, bool *handled)
{
    json_int_t i;

    *handled = true;
    if (json_is_null(v) &&
        (strcmp(k, "max_tokens") == 0 || strcmp(k, "seed") == 0 ||
         strcmp(k, "max_completion_tokens") == 0 || strcmp(k, "stop_token_ids") == 0))
        return true;
    if (strcmp(k, "max_tokens") == 0 || strcmp(k, "max_completion_tokens") == 0) {
        if (!get_int(v, k, 1, INT32_MAX, err, &i))
            return false;
        r->max_tokens = i;
    } else if (strcmp(k, "temperature") == 0) {
        return get_number(v, k, 0.0, 1e6, err, &r->temperature);
    } else if (strcmp(k, "top_p") == 0) {
        if (!get_number(v, k, 0.0, 1.0, err, &r->top_p))
            return false;
        if (r->top_p <= 0)
            return bad(err, k, "must be in (0, 1]");
    } else if (strcmp(k, "top_k") == 0) {
        if (!get_int(v, k, -1, INT32_MAX, err, &i))
            return false;
        r->top_k = i < 0 ? 0 : (int32_t)i;
    } else if (strcmp(k, "min_p") == 0) {
        return get_number(v, k, 0.0, 1.0, err, &r->min_p);
    } else if (strcmp(k, "seed") == 0) {
        if (!json_is_integer(v))
            return bad(err, k, "must be an integer");
        r->seed = (uint64_t)json_integer_value(v);
        r->has_seed = true;
    } else if (strcmp(k, "stop") == 0) {
        return get_stop(v, r, err);
    } else if (strcmp(k, "stop_token_ids") == 0) {
        return json_is_array(v) && json_array_size(v) == 0
                   ? true
                   : get_ids(v, k, err, &r->stop_token_ids, &r->n_stop_token_ids);
    } else if (strcmp(k, "ignore_eos") == 0) {
        return get_bool(v, k, err, &r->ignore_eos);
    } else if (strcmp(k, "n") == 0) {
        if (json_is_null(v))
            return true;
        if (!get_int(v, k, 1, MAX_N, err, &i))
            return false;
        r->n = (uint32_t)i;
    } else if (strcmp(k, "logprobs") == 0 || strcmp(k, "top_logprobs") == 0 ||
               strcmp(k, "echo") == 0) {
        return logprobs_field(k, v, r, err, handled);
    } else if (strcmp(k, "priority") == 0) {
        if (json_is_null(v))
            return true;
        if (!get_int(v, k, INT32_MIN, INT32_MAX, err, &i))
            return false;
        r->priority = (int32_t)i;
    } else if (strcmp(k, "stream") == 0) {
        return json_is_null(v) ? true : get_bool(v, k, err, &r->stream);
    } else if (strcmp(k, "stream_options") == 0) {
        return get_stream_options(v, r, err);
    } else {
        return penalty_field(k, v, r, err, handled);
    }
    return true;
}

/* The fields of one kind of request other than the sampling ones. */
static bool kind_field(const char *k, json_t *v, struct duet__srv_request *r,
                       struct duet__srv_error *err, bool *handled)
{
    bool chat_like = r->kind == DUET__SRV_CHAT || r->kind == DUET__SRV_TOKENIZE;

    *handled = true;
    if (strcmp(k, "prompt") == 0 && r->kind != DUET__SRV_CHAT && r->kind != DUET__SRV_DETOKENIZE)
        return get_prompts(v, r, err);
    if (strcmp(k, "tokens") == 0 && r->kind == DUET__SRV_DETOKENIZE) {
        if (!(r->prompts = calloc(1, sizeof(*r->prompts))))
            return oom(err);
        r->n_prompts = 1;
        return get_ids(v, "tokens", err, &r->prompts[0].ids, &r->prompts[0].n_ids);
    }
    if (strcmp(k, "messages") == 0 && chat_like)
        return get_messages(v, r, err);
    if (strcmp(k, "add_special_tokens") == 0 && r->kind != DUET__SRV_DETOKENIZE) {
        r->add_special_given = true;
        return get_bool(v, k, err, &r->add_special_tokens);
    }
    if (strcmp(k, "add_generation_prompt") == 0 && chat_like)
        return get_bool(v, k, err, &r->add_generation_prompt);
    if (strcmp(k, "chat_template_kwargs") == 0 && chat_like) {
        if (json_is_null(v))
            return true;
        if (!json_is_object(v))
            return bad(err, k, "must be an object");
        r->chat_kwargs_json = json_dumps(v, JSON_COMPACT);
        return r->chat_kwargs_json ? true : oom(err);
    }
    if (strcmp(k, "chat_template") == 0 && chat_like) {
        if (json_is_null(v))
            return true;
        if (!plain_string(v))
            return bad(err, k, "must be a string");
        r->chat_template = strdup(json_string_value(v));
        return r->chat_template ? true : oom(err);
    }
    *handled = false;
    return true;
}

static bool one_field(const char *k, json_t *v, struct duet__srv_request *r,
                      struct duet__srv_error *err)
{
    bool ok, handled, generates = r->kind == DUET__SRV_COMPLETIONS || r->kind == DUET__SRV_CHAT;
    char name[65];

    if (strcmp(k, "model") == 0) {
        if (json_is_null(v))
            return true;
        if (!plain_string(v))
            return bad(err, "model", "must be a string");
        r->model = strdup(json_string_value(v));
        return r->model ? true : oom(err);
    }
    if (strcmp(k, "user") == 0)
        return json_is_string(v) || json_is_null(v) ? true : bad(err, "user", "must be a string");
    ok = kind_field(k, v, r, err, &handled);
    if (handled)
        return ok;
    if (generates) {
        if (!sampling_field(k, v, r, err, &handled))
            return false;
        if (handled)
            return true;
        if (is_deferred(k)) {
            if (neutral(k, v))
                return true;
            return duet__srv_fail(err, 400, "unsupported_parameter", k, "'%s' is not supported yet",
                                  k);
        }
    }
    duet__srv_utf8_copy(name, sizeof(name), k);
    return duet__srv_fail(err, 400, NULL, k, "unknown field '%s'", name);
}

static void defaults(struct duet__srv_request *r, enum duet__srv_kind kind)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->n = 1;
    r->logprobs = -1;
    r->repetition_penalty = 1.0;
    r->add_generation_prompt = true;
    r->add_special_tokens = kind != DUET__SRV_CHAT;
}

/* What must be present, and what goes together. */
static bool check_whole(struct duet__srv_request *r, struct duet__srv_error *err)
{
    if (r->kind == DUET__SRV_CHAT && !r->messages_json)
        return duet__srv_fail(err, 400, NULL, "messages", "'messages' is required");
    if (r->kind == DUET__SRV_COMPLETIONS && !r->n_prompts)
        return duet__srv_fail(err, 400, NULL, "prompt", "'prompt' is required");
    if (r->kind == DUET__SRV_DETOKENIZE && !r->n_prompts)
        return duet__srv_fail(err, 400, NULL, "tokens", "'tokens' is required");
    if (r->kind == DUET__SRV_TOKENIZE && !r->n_prompts == !r->messages_json)
        return duet__srv_fail(err, 400, NULL, "prompt",
                              "give exactly one of 'prompt' and 'messages'");
    if (r->kind == DUET__SRV_TOKENIZE && r->n_prompts > 1)
        return duet__srv_fail(err, 400, NULL, "prompt", "'prompt' must be one prompt");
    if (r->kind == DUET__SRV_TOKENIZE && r->messages_json && !r->add_special_given)
        r->add_special_tokens = false; /* vLLM's /tokenize of messages, as chat */
    if (r->include_usage && !r->stream)
        return duet__srv_fail(err, 400, NULL, "stream_options",
                              "'stream_options' can only be given with 'stream': true");
    if (r->kind == DUET__SRV_CHAT && !r->chat_logprobs && r->logprobs > 0)
        return duet__srv_fail(err, 400, NULL, "top_logprobs",
                              "when using 'top_logprobs', 'logprobs' must be set to true");
    if (r->kind == DUET__SRV_CHAT)
        r->logprobs = r->chat_logprobs ? (r->logprobs > 0 ? r->logprobs : 0) : -1;
    return true;
}

bool duet__srv_request_parse(const char *json, size_t len, enum duet__srv_kind kind,
                             struct duet__srv_request *out, struct duet__srv_error *err)
{
    json_error_t jerr;
    json_t *root, *v;
    const char *k;
    bool ok = true;

    defaults(out, kind);
    memset(err, 0, sizeof(*err));
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return duet__srv_fail(err, 400, NULL, NULL, "invalid JSON at line %d, column %d: %s",
                              jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root))
        ok = duet__srv_fail(err, 400, NULL, NULL, "the request body must be a JSON object");
    json_object_foreach(root, k, v)
    {
        if (!ok || !(ok = one_field(k, v, out, err)))
            break;
    }
    json_decref(root);
    if (ok)
        ok = check_whole(out, err);
    if (!ok)
        duet__srv_request_fini(out);
    return ok;
}
