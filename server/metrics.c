/*
 * metrics.c — GET /metrics: Prometheus text format with vLLM's metric names, each labelled
 * model_name="SERVED NAME".
 *
 * The engine's counters (duet_engine_metrics) are copied by the engine thread after every pass of
 * its loop (srv->metrics, under srv->lock), since only that thread may call the engine; the
 * request gauges are counted here from the server's own lists: waiting = prompts queued and not
 * yet given to the engine, running = prompts in the engine and not finished.
 */
#define _POSIX_C_SOURCE 200809L
#include "server-int.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void metric(FILE *f, const char *name, const char *type, const char *help, const char *model,
                   double value)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s{model_name=\"%s\"} %.17g\n", name, help, name, type,
            name, model, value);
}

/* Prompts (engine requests, of n choices each) waiting in the queue and running in the engine;
 * under srv->lock. */
static void count_requests(const duet_server *srv, uint32_t *waiting, uint32_t *running)
{
    *waiting = *running = 0;
    for (const struct duet__srv_job *j = srv->queue; j; j = j->next)
        *waiting += j->n_choices / j->req.n;
    for (const struct duet__srv_job *j = srv->active; j; j = j->next)
        for (uint32_t i = 0; i < j->n_choices; i += j->req.n) {
            bool live = false;

            for (uint32_t k = 0; k < j->req.n; k++)
                live = live || !j->choices[i + k].finish;
            *running += live;
        }
}

static void write_metrics(FILE *f, const char *model, const duet_engine_metrics *m,
                          uint32_t waiting, uint32_t running)
{
    double used =
        m->num_total_blocks ? 1.0 - (double)m->num_free_blocks / (double)m->num_total_blocks : 0.0;

    metric(f, "vllm:num_requests_running", "gauge", "Number of requests running in the engine.",
           model, running);
    metric(f, "vllm:num_requests_waiting", "gauge",
           "Number of requests waiting to be given to the engine.", model, waiting);
    metric(f, "vllm:gpu_cache_usage_perc", "gauge",
           "KV-cache usage of the target's device blocks. 1 means 100 percent usage.", model, used);
    metric(f, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", model,
           (double)m->prompt_tokens);
    metric(f, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
           model, (double)m->generated_tokens);
    metric(f, "vllm:num_preemptions_total", "counter", "Cumulative number of preemptions.", model,
           (double)m->preemptions);
    if (!m->speculative)
        return;
    metric(f, "vllm:spec_decode_draft_acceptance_rate", "gauge",
           "Speculative token acceptance rate.", model,
           m->acceptance_rate > 0 ? m->acceptance_rate : 0);
    metric(f, "vllm:spec_decode_efficiency", "gauge", "Speculative decoding system efficiency.",
           model, m->system_efficiency > 0 ? m->system_efficiency : 0);
    metric(f, "vllm:spec_decode_num_accepted_tokens_total", "counter", "Number of accepted tokens.",
           model, (double)m->accepted);
    metric(f, "vllm:spec_decode_num_draft_tokens_total", "counter", "Number of draft tokens.",
           model, (double)m->proposed);
    metric(f, "vllm:spec_decode_num_emitted_tokens_total", "counter", "Number of emitted tokens.",
           model, (double)m->emitted);
}

int duet__srv_reply_metrics(duet_server *srv, struct MHD_Connection *c)
{
    duet_engine_metrics m;
    uint32_t waiting, running;
    struct MHD_Response *r;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int ret;

    pthread_mutex_lock(&srv->lock);
    m = srv->metrics;
    count_requests(srv, &waiting, &running);
    pthread_mutex_unlock(&srv->lock);
    f = open_memstream(&text, &len);
    if (!f)
        return MHD_NO;
    write_metrics(f, srv->model_name, &m, waiting, running);
    if (fclose(f) != 0) {
        free(text);
        return MHD_NO;
    }
    r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}
