/*
 * flat.c — duet.h's flat access for bindings: requests built field by field, step outputs and
 * metrics read by name. Everything here reads or writes the public structs only; it calls
 * duet_engine_add_request() and duet_engine_metrics_get() and nothing inside the engine.
 */
#include "build_config.h"

#include <duet/duet.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct duet_request {
    duet_request_params p;
    int32_t *prompt; /* owned copies of p's arrays */
    int32_t *stop;
    duet_token_bias *bias;
};

duet_status duet_request_create(duet_request **out)
{
    duet_request *r;

    if (!out)
        return DUET_STATUS_INVALID_ARGUMENT;
    *out = NULL;
    if (!(r = calloc(1, sizeof(*r))))
        return DUET_STATUS_OUT_OF_MEMORY;
    duet_request_params_init(&r->p);
    *out = r;
    return DUET_STATUS_OK;
}

void duet_request_destroy(duet_request *r)
{
    if (!r)
        return;
    free(r->prompt);
    free(r->stop);
    free(r->bias);
    free(r);
}

static bool in_range(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

duet_status duet_request_set_int(duet_request *r, const char *field, int64_t v)
{
    duet_request_params *p = r ? &r->p : NULL;

    if (!p || !field)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (!strcmp(field, "seed")) {
        p->sampling.seed = (uint64_t)v; /* the bits of any int64: Python passes them masked */
        return DUET_STATUS_OK;
    }
    if (!strcmp(field, "top_k") || !strcmp(field, "priority")) {
        if (!in_range(v, INT32_MIN, INT32_MAX))
            return DUET_STATUS_INVALID_ARGUMENT;
        *(field[0] == 't' ? &p->sampling.top_k : &p->priority) = (int32_t)v;
        return DUET_STATUS_OK;
    }
    if (!strcmp(field, "ignore_eos") || !strcmp(field, "spec_disabled")) {
        if (!in_range(v, 0, 1))
            return DUET_STATUS_INVALID_ARGUMENT;
        *(field[0] == 'i' ? &p->ignore_eos : &p->spec_disabled) = v != 0;
        return DUET_STATUS_OK;
    }

    uint32_t *u = !strcmp(field, "max_tokens")        ? &p->max_tokens
                  : !strcmp(field, "n")               ? &p->n
                  : !strcmp(field, "logprobs")        ? &p->sampling.n_logprobs
                  : !strcmp(field, "prompt_logprobs") ? &p->sampling.n_prompt_logprobs
                                                      : NULL;
    if (!u)
        return DUET_STATUS_NOT_FOUND;
    if (!in_range(v, 0, UINT32_MAX))
        return DUET_STATUS_INVALID_ARGUMENT;
    *u = (uint32_t)v;
    return DUET_STATUS_OK;
}

duet_status duet_request_set_float(duet_request *r, const char *field, double v)
{
    duet_request_params *p = r ? &r->p : NULL;

    if (!p || !field)
        return DUET_STATUS_INVALID_ARGUMENT;

    float *f = !strcmp(field, "temperature")          ? &p->sampling.temperature
               : !strcmp(field, "top_p")              ? &p->sampling.top_p
               : !strcmp(field, "min_p")              ? &p->sampling.min_p
               : !strcmp(field, "presence_penalty")   ? &p->presence_penalty
               : !strcmp(field, "frequency_penalty")  ? &p->frequency_penalty
               : !strcmp(field, "repetition_penalty") ? &p->repetition_penalty
                                                      : NULL;
    if (!f)
        return DUET_STATUS_NOT_FOUND;
    /* NaN stays NaN (the engine refuses it by name); only a finite value too large for a float
     * is refused here, where it would become an infinity nobody asked for. */
    if (isfinite(v) && fabs(v) > 3.4e38)
        return DUET_STATUS_INVALID_ARGUMENT;
    *f = (float)v;
    return DUET_STATUS_OK;
}

/* Replaces *dst with a copy of n elements of size sz at src; false when out of memory. */
static bool copy_array(void **dst, const void *src, size_t n, size_t sz)
{
    void *c = NULL;

    if (n) {
        if (!(c = malloc(n * sz)))
            return false;
        memcpy(c, src, n * sz);
    }
    free(*dst);
    *dst = c;
    return true;
}

duet_status duet_request_set_tokens(duet_request *r, const char *field, const int32_t *ids,
                                    size_t n)
{
    bool prompt;

    if (!r || !field || (n && !ids) || n > UINT32_MAX)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (!strcmp(field, "prompt"))
        prompt = true;
    else if (!strcmp(field, "stop_token_ids"))
        prompt = false;
    else
        return DUET_STATUS_NOT_FOUND;
    if (!copy_array(prompt ? (void **)&r->prompt : (void **)&r->stop, ids, n, sizeof(int32_t)))
        return DUET_STATUS_OUT_OF_MEMORY;
    if (prompt) {
        r->p.prompt = r->prompt;
        r->p.n_prompt = (uint32_t)n;
    } else {
        r->p.stop_token_ids = r->stop;
        r->p.n_stop_token_ids = (uint32_t)n;
    }
    return DUET_STATUS_OK;
}

duet_status duet_request_set_logit_bias(duet_request *r, const int32_t *ids, const float *bias,
                                        size_t n)
{
    duet_token_bias *b = NULL;

    if (!r || (n && (!ids || !bias)) || n > UINT32_MAX)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (n && !(b = malloc(n * sizeof(*b))))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++)
        b[i] = (duet_token_bias){.token = ids[i], .bias = bias[i]};
    free(r->bias);
    r->bias = b;
    r->p.logit_bias = b;
    r->p.n_logit_bias = (uint32_t)n;
    return DUET_STATUS_OK;
}

duet_status duet_engine_add(duet_engine *e, const duet_request *r, uint64_t *request_id)
{
    if (!e || !r || !request_id)
        return DUET_STATUS_INVALID_ARGUMENT;
    return duet_engine_add_request(e, &r->p, request_id);
}

/* ---- outputs ------------------------------------------------------------------------------ */

uint32_t duet_step_output_count(const duet_step_output *s)
{
    return s ? s->n_requests : 0;
}

const duet_request_output *duet_step_output_request(const duet_step_output *s, uint32_t i)
{
    return s && i < s->n_requests ? &s->requests[i] : NULL;
}

duet_status duet_request_output_int(const duet_request_output *r, const char *field, int64_t *value)
{
    if (!r || !field || !value)
        return DUET_STATUS_INVALID_ARGUMENT;

    const struct {
        const char *name;
        int64_t v;
    } f[] = {
        {"request_id", (int64_t)r->request_id},
        {"n_prompt", r->n_prompt},
        {"finish", r->finish},
        {"n_outputs", r->n_outputs},
        {"logprobs", r->n_logprobs},
        {"prompt_logprobs", r->n_prompt_logprobs},
        {"num_preemptions", r->num_preemptions},
        {"num_proposed", r->num_proposed},
        {"num_accepted", r->num_accepted},
        {"num_drafts", r->num_drafts},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (!strcmp(field, f[i].name)) {
            *value = f[i].v;
            return DUET_STATUS_OK;
        }
    return DUET_STATUS_NOT_FOUND;
}

const char *duet_request_output_error(const duet_request_output *r)
{
    return r ? r->error : NULL;
}

duet_status duet_request_output_seq_int(const duet_request_output *r, uint32_t seq,
                                        const char *field, int64_t *value)
{
    const duet_completion_output *o;

    if (!r || !field || !value || seq >= r->n_outputs)
        return DUET_STATUS_INVALID_ARGUMENT;
    o = &r->outputs[seq];
    if (!strcmp(field, "index"))
        *value = o->index;
    else if (!strcmp(field, "n_ids"))
        *value = o->n_ids;
    else if (!strcmp(field, "first_new"))
        *value = o->first_new;
    else if (!strcmp(field, "finish"))
        *value = o->finish;
    else
        return DUET_STATUS_NOT_FOUND;
    return DUET_STATUS_OK;
}

/* Copies rows [from, from + n) of a top list of stride entries into ids / vals. */
static void copy_top(const duet_logprob *top, uint32_t stride, uint32_t from, uint32_t n,
                     int32_t *ids, float *vals)
{
    for (size_t i = 0; i < (size_t)n * stride; i++) {
        const duet_logprob *l = &top[(size_t)from * stride + i];

        if (ids)
            ids[i] = l->token;
        if (vals)
            vals[i] = l->logprob;
    }
}

duet_status duet_request_output_tokens(const duet_request_output *r, uint32_t seq, uint32_t from,
                                       uint32_t n, int32_t *ids, float *logprobs, int32_t *top_ids,
                                       float *top_logprobs)
{
    const duet_completion_output *o;

    if (!r || seq >= r->n_outputs)
        return DUET_STATUS_INVALID_ARGUMENT;
    o = &r->outputs[seq];
    if (from > o->n_ids || n > o->n_ids - from)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (n == 0)
        return DUET_STATUS_OK;
    if (ids)
        memcpy(ids, o->ids + from, n * sizeof(int32_t));
    if (r->n_logprobs && o->token_logprobs && logprobs)
        memcpy(logprobs, o->token_logprobs + from, n * sizeof(float));
    if (r->n_logprobs && o->logprobs)
        copy_top(o->logprobs, r->n_logprobs, from, n, top_ids, top_logprobs);
    return DUET_STATUS_OK;
}

duet_status duet_request_output_prompt_logprobs(const duet_request_output *r, float *logprobs,
                                                int32_t *top_ids, float *top_logprobs)
{
    if (!r)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (!r->n_prompt_logprobs || !r->prompt_token_logprobs || !r->prompt_logprobs)
        return DUET_STATUS_NOT_FOUND;
    if (logprobs)
        memcpy(logprobs, r->prompt_token_logprobs, r->n_prompt * sizeof(float));
    copy_top(r->prompt_logprobs, r->n_prompt_logprobs, 0, r->n_prompt, top_ids, top_logprobs);
    return DUET_STATUS_OK;
}

uint32_t duet_request_output_accepted_at(const duet_request_output *r, uint32_t *counts,
                                         uint32_t max)
{
    uint32_t n = max < DUET_MAX_SPEC_TOKENS ? max : DUET_MAX_SPEC_TOKENS;

    if (!r || !r->accepted_at || !counts)
        return 0;
    memcpy(counts, r->accepted_at, n * sizeof(uint32_t));
    return n;
}

/* ---- metrics by name ---------------------------------------------------------------------- */

enum metric_type { M_U64, M_F64, M_U32, M_BOOL };

#define M(field, type)                                                                             \
    {                                                                                              \
#field, offsetof(duet_engine_metrics, field), type                                         \
    }
static const struct {
    const char *name;
    size_t offset;
    enum metric_type type;
} metrics[] = {
    M(steps, M_U64),
    M(prompt_tokens, M_U64),
    M(generated_tokens, M_U64),
    M(decode_seq_steps, M_U64),
    M(proposed, M_U64),
    M(accepted, M_U64),
    M(emitted, M_U64),
    M(verified, M_U64),
    M(spec_steps, M_U64),
    M(disabled_steps, M_U64),
    M(overlap_steps, M_U64),
    M(preemptions, M_U64),
    M(failed_requests, M_U64),
    M(execute_s, M_F64),
    M(verify_s, M_F64),
    M(draft_s, M_F64),
    M(overlap_s, M_F64),
    M(elapsed_s, M_F64),
    M(idle_s, M_F64),
    M(target_idle_s, M_F64),
    M(draft_idle_s, M_F64),
    M(tokens_per_s, M_F64),
    M(acceptance_rate, M_F64),
    M(system_efficiency, M_F64),
    M(mean_tokens_per_step, M_F64),
    M(mean_k, M_F64),
    M(num_spec_tokens, M_U32),
    M(last_k, M_U32),
    M(num_free_blocks, M_U32),
    M(num_total_blocks, M_U32),
    M(num_swap_blocks, M_U32),
    M(max_model_len, M_U32),
    M(vocab_size, M_U32),
    M(speculative, M_BOOL),
    M(adaptive, M_BOOL),
    M(synthetic_acceptance, M_BOOL),
};
#undef M

const char *duet_engine_metric_name(size_t index)
{
    return index < sizeof(metrics) / sizeof(metrics[0]) ? metrics[index].name : NULL;
}

duet_status duet_engine_metric(const duet_engine *e, const char *name, double *value)
{
    duet_engine_metrics m;

    if (!e || !name || !value)
        return DUET_STATUS_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        const char *p = (const char *)&m + metrics[i].offset;

        if (strcmp(name, metrics[i].name))
            continue;
        duet_engine_metrics_get(e, &m);
        switch (metrics[i].type) {
        case M_U64:
            *value = (double)*(const uint64_t *)(const void *)p;
            break;
        case M_F64:
            *value = *(const double *)(const void *)p;
            break;
        case M_U32:
            *value = *(const uint32_t *)(const void *)p;
            break;
        case M_BOOL:
            *value = *(const bool *)(const void *)p;
            break;
        }
        return DUET_STATUS_OK;
    }
    return DUET_STATUS_NOT_FOUND;
}
