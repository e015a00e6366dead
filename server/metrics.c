/*
 * metrics.c — GET /metrics: Prometheus text format with vLLM's metric names under duet's own
 * prefix (duet:num_requests_running for vllm:num_requests_running, ...), each labelled
 * model_name="SERVED NAME"; counters are written as prometheus_client writes vLLM's (a family
 * NAME, its sample NAME_total), histograms with vLLM's bucket boundaries.
 *
 * The engine's counters (duet_engine_metrics) are copied by the engine thread after every pass of
 * its loop (srv->metrics, under srv->lock), since only that thread may call the engine; the
 * request gauges are counted here from the server's own lists: waiting = prompts queued and not
 * yet given to the engine, running = prompts in the engine and not finished. The latency
 * histograms are filled by the engine thread (loop.c) under srv->lock: time to first token when a
 * choice's first token comes out, end-to-end latency when a choice the engine had finishes (also
 * aborted), both from the moment its job was queued.
 */
#define _POSIX_C_SOURCE 200809L
#include "server-int.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), seconds; +Inf follows. */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                     20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double e2e_bounds[] = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                    5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define N_TTFT (sizeof(ttft_bounds) / sizeof(ttft_bounds[0]))
#define N_E2E (sizeof(e2e_bounds) / sizeof(e2e_bounds[0]))
_Static_assert(N_TTFT <= DUET__SRV_HIST_BUCKETS && N_E2E <= DUET__SRV_HIST_BUCKETS,
               "struct duet__srv_hist holds every bucket");

static void observe(struct duet__srv_hist *h, const double *bounds, size_t n_bounds, double v)
{
    size_t b = 0;

    while (b < n_bounds && v > bounds[b])
        b++;
    h->count[b]++;
    h->sum += v;
    h->n++;
}

void duet__srv_observe_ttft(duet_server *srv, double seconds)
{
    observe(&srv->ttft, ttft_bounds, N_TTFT, seconds);
}

void duet__srv_observe_e2e(duet_server *srv, double seconds)
{
    observe(&srv->e2e, e2e_bounds, N_E2E, seconds);
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP duet:%s %s\n# TYPE duet:%s %s\n", name, help, name, type);
}

static void metric(FILE *f, const char *name, const char *type, const char *help, const char *model,
                   double value)
{
    header(f, name, type, help);
    fprintf(f, "duet:%s{model_name=\"%s\"} %.17g\n", name, model, value);
}

/* A counter: NAME is the family, its sample NAME_total (as prometheus_client writes vLLM's). */
static void counter(FILE *f, const char *name, const char *help, const char *model, uint64_t v)
{
    header(f, name, "counter", help);
    fprintf(f, "duet:%s_total{model_name=\"%s\"} %llu\n", name, model, (unsigned long long)v);
}

static void histogram(FILE *f, const char *name, const char *help, const char *model,
                      const struct duet__srv_hist *h, const double *bounds, size_t n_bounds)
{
    uint64_t cum = 0;

    header(f, name, "histogram", help);
    for (size_t b = 0; b < n_bounds; b++) {
        cum += h->count[b];
        fprintf(f, "duet:%s_bucket{le=\"%g\",model_name=\"%s\"} %llu\n", name, bounds[b], model,
                (unsigned long long)cum);
    }
    fprintf(f, "duet:%s_bucket{le=\"+Inf\",model_name=\"%s\"} %llu\n", name, model,
            (unsigned long long)h->n);
    fprintf(f, "duet:%s_count{model_name=\"%s\"} %llu\n", name, model, (unsigned long long)h->n);
    fprintf(f, "duet:%s_sum{model_name=\"%s\"} %.17g\n", name, model, h->sum);
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

/* What the reply shows, copied under srv->lock. */
struct snapshot {
    duet_engine_metrics m;
    struct duet__srv_hist ttft, e2e;
    uint32_t waiting, running;
};

static void write_spec(FILE *f, const char *model, const duet_engine_metrics *m)
{
    counter(f, "spec_decode_num_drafts", "Number of spec decoding drafts.", model, m->verified);
    counter(f, "spec_decode_num_draft_tokens", "Number of draft tokens.", model, m->proposed);
    counter(f, "spec_decode_num_accepted_tokens", "Number of accepted tokens.", model, m->accepted);
    header(f, "spec_decode_num_accepted_tokens_per_pos", "counter",
           "Accepted tokens per draft position.");
    for (uint32_t j = 0; j < m->num_spec_tokens && j < DUET_MAX_SPEC_TOKENS; j++)
        fprintf(f,
                "duet:spec_decode_num_accepted_tokens_per_pos_total{model_name=\"%s\","
                "position=\"%u\"} %llu\n",
                model, j, (unsigned long long)m->accepted_at[j]);
    metric(f, "spec_decode_synthetic_acceptance", "gauge",
           "1 when speculative.acceptance = synthetic: acceptance is drawn at a configured rate "
           "(benchmarks), not measured.",
           model, m->synthetic_acceptance);
}

static void write_metrics(FILE *f, const char *model, const struct snapshot *s)
{
    const duet_engine_metrics *m = &s->m;
    double used =
        m->num_total_blocks ? 1.0 - (double)m->num_free_blocks / (double)m->num_total_blocks : 0.0;

    metric(f, "num_requests_running", "gauge", "Number of requests running in the engine.", model,
           s->running);
    metric(f, "num_requests_waiting", "gauge",
           "Number of requests waiting to be given to the engine.", model, s->waiting);
    metric(f, "gpu_cache_usage_perc", "gauge",
           "KV-cache usage of the target's device blocks. 1 means 100 percent usage.", model, used);
    counter(f, "prompt_tokens", "Number of prefill tokens processed.", model, m->prompt_tokens);
    counter(f, "generation_tokens", "Number of generation tokens processed.", model,
            m->generated_tokens);
    counter(f, "num_preemptions", "Cumulative number of preemptions.", model, m->preemptions);
    header(f, "engine_step_seconds", "counter",
           "duet's own: seconds the engine thread spent inside duet_engine_step().");
    fprintf(f, "duet:engine_step_seconds_total{model_name=\"%s\"} %.17g\n", model, m->elapsed_s);
    counter(f, "engine_steps", "duet's own: engine steps that ran a batch.", model, m->steps);
    histogram(f, "time_to_first_token_seconds", "Histogram of time to first token in seconds.",
              model, &s->ttft, ttft_bounds, N_TTFT);
    histogram(f, "e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.", model, &s->e2e, e2e_bounds,
              N_E2E);
    if (m->speculative)
        write_spec(f, model, m);
}

/* NAME as a label value: backslash, double quote and newline escaped. False when too long. */
static bool label_value(const char *name, char *out, size_t size)
{
    size_t n = 0;

    for (; *name; name++) {
        const char *esc = *name == '\\'   ? "\\\\"
                          : *name == '"'  ? "\\\""
                          : *name == '\n' ? "\\n"
                                          : NULL;
        size_t k = esc ? 2 : 1;

        if (n + k >= size)
            return false;
        if (esc)
            memcpy(out + n, esc, 2);
        else
            out[n] = *name;
        n += k;
    }
    out[n] = '\0';
    return true;
}

int duet__srv_reply_metrics(duet_server *srv, struct MHD_Connection *c)
{
    struct snapshot snap;
    char model[1024];
    struct MHD_Response *r;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int ret;

    pthread_mutex_lock(&srv->lock);
    snap.m = srv->metrics;
    snap.ttft = srv->ttft;
    snap.e2e = srv->e2e;
    count_requests(srv, &snap.waiting, &snap.running);
    pthread_mutex_unlock(&srv->lock);
    f = open_memstream(&text, &len);
    if (!f)
        return MHD_NO;
    if (!label_value(srv->model_name, model, sizeof(model))) {
        fclose(f);
        free(text);
        return MHD_NO;
    }
    write_metrics(f, model, &snap);
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
