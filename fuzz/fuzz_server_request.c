/*
 * Fuzz target: duet-server's request parser (server/request.c). The first byte picks the
 * endpoint (its value mod 4: completions, chat, tokenize, detokenize), the rest is the body.
 *
 * The parser must answer every input: either a request whose fields keep the promises of
 * server-int.h (prompts present and non-empty lists, ids in [0, INT32_MAX], stop strings
 * non-empty and max_stop_len their longest, messages a JSON text, top_p in (0, 1]), or an error
 * with a 4xx / 500 status, a type and a message in valid UTF-8. The same input parsed twice gives
 * the same answer (the function is pure).
 */
#include "../server/server-int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const struct duet__srv_request *r)
{
    size_t longest = 0;

    if (r->kind == DUET__SRV_COMPLETIONS && r->n_prompts == 0)
        abort();
    if (r->kind == DUET__SRV_CHAT && !r->messages_json)
        abort();
    for (uint32_t i = 0; i < r->n_prompts; i++) {
        const struct duet__srv_prompt *p = &r->prompts[i];

        if (!p->text && (!p->ids || p->n_ids == 0))
            abort();
        for (uint32_t t = 0; !p->text && t < p->n_ids; t++)
            if (p->ids[t] < 0)
                abort();
    }
    for (uint32_t s = 0; s < r->n_stop; s++) {
        if (!r->stop[s][0])
            abort();
        if (strlen(r->stop[s]) > longest)
            longest = strlen(r->stop[s]);
    }
    if (longest != r->max_stop_len || !(r->top_p > 0 && r->top_p <= 1) || r->top_k < 0 ||
        r->temperature < 0 || (r->max_tokens != -1 && r->max_tokens < 1) ||
        (r->include_usage && !r->stream))
        abort();
}

static void check_error(const struct duet__srv_error *e)
{
    json_t *msg = json_string(e->message), *param = json_string(e->param);

    if ((e->status != 400 && e->status != 500) || !e->type || !e->message[0])
        abort();
    if (!msg || !param) /* the answer's JSON needs valid UTF-8 */
        abort();
    json_decref(msg);
    json_decref(param);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct duet__srv_request a, b;
    struct duet__srv_error ea, eb;
    enum duet__srv_kind kind;
    bool ok_a, ok_b;

    if (size < 1)
        return 0;
    kind = (enum duet__srv_kind)(data[0] % 4);
    ok_a = duet__srv_request_parse((const char *)data + 1, size - 1, kind, &a, &ea);
    ok_b = duet__srv_request_parse((const char *)data + 1, size - 1, kind, &b, &eb);
    if (ok_a != ok_b)
        abort();
    if (ok_a) {
        check_request(&a);
        if (a.n_prompts != b.n_prompts || a.n_stop != b.n_stop || a.max_tokens != b.max_tokens)
            abort();
        duet__srv_request_fini(&a);
        duet__srv_request_fini(&b);
    } else {
        check_error(&ea);
        if (ea.status != eb.status || strcmp(ea.message, eb.message) != 0)
            abort();
    }
    return 0;
}
