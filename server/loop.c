/*
 * loop.c — the engine thread: the only thread that touches the engine.
 *
 *   load: tokenizer, engine ─► state READY (or FAILED with the message)
 *   loop, holding srv->lock except inside duet_engine_step():
 *     stopping?  abort every request, fail the queued jobs, leave
 *     queue      ─► duet_engine_add_request per choice ─► job RUNNING (or DONE, failed: 400)
 *     cancelled or past their deadline ─► duet_engine_abort, job DONE ("abort")
 *     nothing to run ─► wait on srv->wake
 *     step ─► per output: new ids through the choice's duet_detok, stop strings matched on the
 *             text, finish recorded ─► the job's cond is broadcast
 *
 * A job leaves srv->active when every choice finished (the engine thread then drops its
 * reference); a choice ended by a stop string is aborted in the engine and its later ABORT
 * output ignored. Jobs are found by engine request id with a walk of srv->active: the server
 * holds at most server.max_queue of them.
 */
#define _POSIX_C_SOURCE 200809L
#include "server-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double duet__srv_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void job_free(struct duet__srv_job *job)
{
    for (uint32_t i = 0; i < job->n_choices; i++) {
        free(job->choices[i].prompt);
        free(job->choices[i].text);
        duet_detok_destroy(job->choices[i].detok);
    }
    free(job->choices);
    duet__srv_request_fini(&job->req);
    pthread_cond_destroy(&job->cond);
    free(job);
}

void duet__srv_job_release(duet_server *srv, struct duet__srv_job *job)
{
    (void)srv;
    if (--job->refs == 0)
        job_free(job);
}

/* ---- text of a choice --------------------------------------------------------------------- */

static bool append_text(struct duet__srv_choice *ch, const char *s, size_t n)
{
    if (ch->len + n + 1 > ch->cap) {
        size_t cap = ch->cap ? ch->cap : 64;
        char *t;

        while (cap < ch->len + n + 1)
            cap *= 2;
        t = realloc(ch->text, cap);
        if (!t)
            return false;
        ch->text = t;
        ch->cap = cap;
    }
    memcpy(ch->text + ch->len, s, n);
    ch->len += n;
    ch->text[ch->len] = '\0';
    return true;
}

/* Cuts the text at the first stop string that ends in the bytes added since old_len. */
static bool match_stop(const struct duet__srv_request *req, struct duet__srv_choice *ch,
                       size_t old_len)
{
    size_t from = old_len > req->max_stop_len ? old_len - req->max_stop_len : 0;
    const char *best = NULL;

    if (!req->n_stop || ch->len == 0)
        return false;
    for (uint32_t s = 0; s < req->n_stop; s++) {
        const char *hit = strstr(ch->text + from, req->stop[s]);

        if (hit && (!best || hit < best))
            best = hit;
    }
    if (!best)
        return false;
    ch->len = (size_t)(best - ch->text);
    ch->text[ch->len] = '\0';
    return true;
}

static const char *finish_name(duet_finish_reason f)
{
    switch (f) {
    case DUET_FINISH_STOP:
        return "stop";
    case DUET_FINISH_LENGTH:
    case DUET_FINISH_IGNORED:
        return "length";
    default:
        return "abort";
    }
}

/* Records why ch ended; flush: the bytes the detokenizer still holds belong to the text. */
static void choice_finish(struct duet__srv_job *job, struct duet__srv_choice *ch, const char *why,
                          bool flush)
{
    const char *text;
    size_t n;

    if (flush && ch->detok && duet_detok_finish(ch->detok, &text, &n) == DUET_STATUS_OK && n)
        append_text(ch, text, n);
    ch->finish = why;
    job->n_done++;
}

/* The new ids of one output: text, stop strings, finish. */
static void take_output(duet_server *srv, struct duet__srv_job *job, struct duet__srv_choice *ch,
                        const duet_request_output *r)
{
    uint32_t end = r->n_ids;
    size_t old_len = ch->len;
    bool stopped = false;

    ch->n_tokens = r->n_ids;
    if (r->finish == DUET_FINISH_STOP && end > 0)
        end--; /* the EOS or stop token: counted, not shown (as vLLM) */
    for (uint32_t t = r->first_new; t < end && !stopped; t++) {
        const char *text;
        size_t n;

        if (duet_detok_push(ch->detok, r->ids[t], &text, &n) == DUET_STATUS_OK && n)
            append_text(ch, text, n);
        stopped = match_stop(&job->req, ch, old_len);
    }
    if (!stopped && r->finish != DUET_FINISH_NONE) {
        size_t before = ch->len;

        choice_finish(job, ch, finish_name(r->finish), true);
        if (match_stop(&job->req, ch, before))
            ch->finish = "stop";
        return;
    }
    if (stopped) {
        choice_finish(job, ch, "stop", false);
        duet_engine_abort(srv->engine, ch->engine_id);
    }
}

/* ---- the job lists ------------------------------------------------------------------------ */

/* Marks job DONE, takes it off srv->active and drops the engine thread's reference. */
static void job_done(duet_server *srv, struct duet__srv_job *job)
{
    struct duet__srv_job **p = &srv->active;

    while (*p && *p != job)
        p = &(*p)->next;
    if (*p)
        *p = job->next;
    job->state = DUET__SRV_JOB_DONE;
    srv->n_inflight -= job->n_choices;
    pthread_cond_broadcast(&job->cond);
    duet__srv_job_release(srv, job);
}

/* Ends every unfinished choice of job with "abort" and the job. */
static void job_abort(duet_server *srv, struct duet__srv_job *job)
{
    for (uint32_t i = 0; i < job->n_choices; i++) {
        struct duet__srv_choice *ch = &job->choices[i];

        if (ch->finish)
            continue;
        if (ch->added)
            duet_engine_abort(srv->engine, ch->engine_id);
        choice_finish(job, ch, "abort", false);
    }
    job_done(srv, job);
}

static struct duet__srv_choice *find_choice(duet_server *srv, uint64_t id,
                                            struct duet__srv_job **job)
{
    for (struct duet__srv_job *j = srv->active; j; j = j->next)
        for (uint32_t i = 0; i < j->n_choices; i++)
            if (j->choices[i].added && j->choices[i].engine_id == id) {
                *job = j;
                return &j->choices[i];
            }
    return NULL;
}

/* Gives a queued job's choices to the engine; a refusal fails the whole job (400). */
static void admit(duet_server *srv, struct duet__srv_job *job)
{
    job->state = DUET__SRV_JOB_RUNNING;
    job->next = srv->active;
    srv->active = job;
    for (uint32_t i = 0; i < job->n_choices; i++) {
        struct duet__srv_choice *ch = &job->choices[i];
        duet_request_params p;

        duet_request_params_init(&p);
        p.prompt = ch->prompt;
        p.n_prompt = ch->n_prompt;
        p.max_tokens = job->max_tokens;
        p.sampling.temperature = (float)job->req.temperature;
        p.sampling.top_p = (float)job->req.top_p;
        p.sampling.top_k = job->req.top_k;
        p.sampling.min_p = (float)job->req.min_p;
        p.sampling.seed = job->req.has_seed ? job->req.seed + i : (uint64_t)rand() << 31 ^ rand();
        p.stop_token_ids = job->req.stop_token_ids;
        p.n_stop_token_ids = job->req.n_stop_token_ids;
        p.ignore_eos = job->req.ignore_eos;
        p.presence_penalty = (float)job->req.presence_penalty;
        p.frequency_penalty = (float)job->req.frequency_penalty;
        p.repetition_penalty = (float)job->req.repetition_penalty;
        p.logit_bias = job->req.logit_bias;
        p.n_logit_bias = job->req.n_logit_bias;
        if (duet_detok_create(srv->tok, true, &ch->detok) ||
            duet_engine_add_request(srv->engine, &p, &ch->engine_id)) {
            job->failed = true;
            duet__srv_fail(&job->err, ch->detok ? 400 : 500, NULL, "prompt", "%s",
                           ch->detok ? duet_engine_error(srv->engine) : "out of memory");
            job_abort(srv, job);
            return;
        }
        ch->added = true;
    }
    pthread_cond_broadcast(&job->cond);
}

static void drain_queue(duet_server *srv)
{
    while (srv->queue) {
        struct duet__srv_job *job = srv->queue;

        srv->queue = job->next;
        if (!srv->queue)
            srv->queue_tail = NULL;
        admit(srv, job);
    }
}

/* Jobs whose client went away or whose deadline passed. */
static void reap(duet_server *srv)
{
    double now = duet__srv_now();
    struct duet__srv_job *j = srv->active, *next;

    for (; j; j = next) {
        next = j->next;
        if (j->cancel || (j->deadline > 0 && now > j->deadline))
            job_abort(srv, j);
    }
}

/* Every job ends: running ones aborted, queued ones failed with 503. */
static void abort_all(duet_server *srv)
{
    while (srv->queue) {
        struct duet__srv_job *job = srv->queue;

        srv->queue = job->next;
        job->failed = true;
        duet__srv_fail(&job->err, 503, NULL, NULL, "the server is shutting down");
        job->state = DUET__SRV_JOB_RUNNING;
        job->next = srv->active;
        srv->active = job;
        job_abort(srv, job);
    }
    srv->queue_tail = NULL;
    while (srv->active)
        job_abort(srv, srv->active);
}

static void take_step(duet_server *srv, const duet_step_output *so)
{
    for (uint32_t i = 0; i < so->n_requests; i++) {
        const duet_request_output *r = &so->requests[i];
        struct duet__srv_job *job;
        struct duet__srv_choice *ch = find_choice(srv, r->request_id, &job);

        if (!ch || ch->finish)
            continue;
        take_output(srv, job, ch, r);
        if (job->n_done == job->n_choices)
            job_done(srv, job);
        else
            pthread_cond_broadcast(&job->cond);
    }
}

static void fail_server(duet_server *srv, const char *what, const char *msg)
{
    snprintf(srv->error, sizeof(srv->error), "%s: %s", what, msg);
    srv->state = DUET_SERVER_FAILED;
    abort_all(srv);
}

static void serve(duet_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    while (!srv->stopping && srv->state == DUET_SERVER_READY) {
        const duet_step_output *so;
        duet_status st;

        drain_queue(srv);
        reap(srv);
        duet_engine_metrics_get(srv->engine, &srv->metrics);
        if (!duet_engine_has_unfinished(srv->engine)) {
            pthread_cond_wait(&srv->wake, &srv->lock);
            continue;
        }
        pthread_mutex_unlock(&srv->lock);
        st = duet_engine_step(srv->engine, &so);
        pthread_mutex_lock(&srv->lock);
        if (st)
            fail_server(srv, "engine step", duet_engine_error(srv->engine));
        else
            take_step(srv, so);
    }
    abort_all(srv);
    pthread_mutex_unlock(&srv->lock);
}

static void load(duet_server *srv)
{
    char err[1024] = "";
    duet_tokenizer *tok = NULL;
    duet_engine *engine = NULL;
    duet_engine_metrics m;

    if (duet_tokenizer_load(srv->tokenizer_dir, &tok, err, sizeof(err))) {
        pthread_mutex_lock(&srv->lock);
        snprintf(srv->error, sizeof(srv->error), "tokenizer: %s", err);
        srv->state = DUET_SERVER_FAILED;
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    if (duet_engine_create(srv->cfg, &engine, err, sizeof(err))) {
        duet_tokenizer_destroy(tok);
        pthread_mutex_lock(&srv->lock);
        snprintf(srv->error, sizeof(srv->error), "engine: %s", err);
        srv->state = DUET_SERVER_FAILED;
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    duet_engine_metrics_get(engine, &m);
    srand((unsigned)time(NULL) ^ (unsigned)getpid()); /* seeds of requests without "seed" */
    pthread_mutex_lock(&srv->lock);
    srv->tok = tok;
    srv->engine = engine;
    srv->metrics = m;
    srv->max_model_len = m.max_model_len;
    srv->vocab_size = m.vocab_size;
    if (srv->state == DUET_SERVER_LOADING)
        srv->state = DUET_SERVER_READY;
    pthread_mutex_unlock(&srv->lock);
}

void *duet__srv_engine_main(void *arg)
{
    duet_server *srv = arg;

    load(srv);
    if (srv->engine)
        serve(srv);
    return NULL;
}
