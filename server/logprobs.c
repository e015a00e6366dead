/*
 * logprobs.c — a choice's log-probabilities as OpenAI writes them (docs/server.md):
 *
 *   completions  {"tokens": [s], "token_logprobs": [x | null], "top_logprobs": [{s: x} | null],
 *                 "text_offset": [chars]}      the chosen token joins its top map (vLLM)
 *   chat         {"content": [{"token": s, "logprob": x, "bytes": [b], "top_logprobs":
 *                 [{"token", "logprob", "bytes"}]}]}
 *
 * from the tokens the engine thread kept (struct duet__srv_lp). A token's string is its id
 * decoded alone (special tokens kept), invalid UTF-8 replaced by U+FFFD (tokens that decode alike
 * share a key of a top map, which keeps the most likely's value); a log-probability that
 * is not finite is written -9999.0, vLLM's floor. With echo, a completion's prompt tokens come
 * first, the first one with a null log-probability and top map. text_offset counts characters
 * (code points), as Python's len() in vLLM, from the chars given.
 */
#include "server-int.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double lp_value(float v)
{
    return isfinite(v) && v > -9999.0f ? (double)v : -9999.0;
}

/* The decoded string of id as a JSON string (never NULL unless out of memory). */
static json_t *token_string(duet_server *srv, int32_t id)
{
    char *text = NULL;
    size_t len = 0;
    json_t *s = NULL;

    if (duet_tokenizer_decode(srv->tok, &id, 1, false, &text, &len) == DUET_STATUS_OK)
        s = json_stringn(text, len);
    duet_tokenizer_free(text);
    return s ? s : json_string("\xef\xbf\xbd");
}

static size_t code_points(json_t *s)
{
    const unsigned char *p = (const unsigned char *)json_string_value(s);
    size_t n = 0;

    for (size_t i = 0; i < json_string_length(s); i++)
        n += (p[i] & 0xC0) != 0x80;
    return n;
}

static json_t *bytes_of(json_t *s)
{
    const unsigned char *p = (const unsigned char *)json_string_value(s);
    json_t *a = json_array();

    for (size_t i = 0; a && i < json_string_length(s); i++)
        json_array_append_new(a, json_integer(p[i]));
    return a;
}

/* One completions entry: token id with log-probability val (NULL top: a null entry). */
static void cmpl_entry(duet_server *srv, json_t *o, int32_t id, float val, const duet_logprob *top,
                       uint32_t n_top, double *chars)
{
    json_t *s = token_string(srv, id), *map = top ? json_object() : json_null();
    bool seen = false;

    for (uint32_t j = 0; top && j < n_top; j++) {
        if (top[j].token < 0)
            continue;
        seen = seen || top[j].token == id;
        json_t *k = token_string(srv, top[j].token);
        if (!json_object_get(map, json_string_value(k))) /* the most likely of alike strings */
            json_object_set_new(map, json_string_value(k), json_real(lp_value(top[j].logprob)));
        json_decref(k);
    }
    if (top && !seen && !json_object_get(map, json_string_value(s)))
        json_object_set_new(map, json_string_value(s), json_real(lp_value(val)));
    json_array_append_new(json_object_get(o, "text_offset"), json_integer((json_int_t)*chars));
    *chars += (double)code_points(s);
    json_array_append_new(json_object_get(o, "token_logprobs"),
                          top ? json_real(lp_value(val)) : json_null());
    json_array_append_new(json_object_get(o, "top_logprobs"), map);
    json_array_append_new(json_object_get(o, "tokens"), s);
}

/* One chat entry: the token, its log-probability and the top n_top of its row. */
static json_t *chat_entry(duet_server *srv, int32_t id, float val, const duet_logprob *top,
                          uint32_t n_top)
{
    json_t *s = token_string(srv, id), *tops = json_array();

    for (uint32_t j = 0; j < n_top; j++) {
        if (top[j].token < 0)
            continue;
        json_t *k = token_string(srv, top[j].token);
        json_array_append_new(tops, json_pack("{s:o, s:f, s:o}", "token", k, "logprob",
                                              lp_value(top[j].logprob), "bytes", bytes_of(k)));
    }
    return json_pack("{s:o, s:f, s:o, s:o}", "token", s, "logprob", lp_value(val), "bytes",
                     bytes_of(s), "top_logprobs", tops);
}

json_t *duet__srv_logprobs_json(duet_server *srv, const struct duet__srv_job *job,
                                const struct duet__srv_choice *ch, uint32_t from, uint32_t to,
                                bool with_prompt, double *chars)
{
    const struct duet__srv_lp *lp = &ch->lp;
    const struct duet__srv_choice *lead = ch - ch->seq; /* holds the prompt's ids */
    uint32_t n_top = job->req.logprobs > 0 ? (uint32_t)job->req.logprobs : 0;
    json_t *o;

    if (job->req.kind == DUET__SRV_CHAT) {
        json_t *content = json_array();

        for (uint32_t t = from; t < to; t++)
            json_array_append_new(content, chat_entry(srv, lp->ids[t], lp->vals[t],
                                                      &lp->top[(size_t)t * lp->stride], n_top));
        return json_pack("{s:o}", "content", content);
    }
    o = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                  "text_offset");
    for (uint32_t t = 0; with_prompt && lp->prompt_vals && t < ch->n_prompt; t++)
        cmpl_entry(srv, o, lead->prompt[t], lp->prompt_vals[t],
                   t ? &lp->prompt_top[(size_t)t * lp->stride] : NULL, n_top, chars);
    for (uint32_t t = from; t < to; t++)
        cmpl_entry(srv, o, lp->ids[t], lp->vals[t], &lp->top[(size_t)t * lp->stride], n_top, chars);
    return o;
}
