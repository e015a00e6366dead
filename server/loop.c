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

static void lp_free(struct duet__srv_lp *lp)
{
    free(lp->ids);
    free(lp->vals);
    free(lp->top);
    free(lp->end);
    free(lp->prompt_vals);
    free(lp->prompt_top);
}

static void job_free(struct duet__srv_job *job)
{
    for (uint32_t i = 0; i < job->n_choices; i++) {
        free(job->choices[i].prompt);
        free(job->choices[i].text);
        free(job->choices[i].echo);
        lp_free(&job->choices[i].lp);
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

/* Whether every choice of ch's engine request (its n siblings) has finished. */
static bool siblings_done(const struct duet__srv_job *job, const struct duet__srv_choice *ch)
{
    const struct duet__srv_choice *first = ch - ch->seq;

    for (uint32_t i = 0; i < job->req.n; i++)
        if (!first[i].finish)
            return false;
    return true;
}

/* Records why ch ended; flush: the bytes the detokenizer still holds belong to the text. An
 * engine request counts in the end-to-end latency once its last sequence ends, as every request
 * vLLM finished. */
static void choice_finish(duet_server *srv, struct duet__srv_job *job, struct duet__srv_choice *ch,
                          const char *why, bool flush)
{
    const char *text;
    size_t n;

    if (flush && ch->detok && duet_detok_finish(ch->detok, &text, &n) == DUET_STATUS_OK && n)
        append_text(ch, text, n);
    ch->finish = why;
    job->n_done++;
    if ((ch - ch->seq)->added && siblings_done(job, ch))
        duet__srv_observe_e2e(srv, duet__srv_now() - job->arrival);
}

/* The request's own counters from its output: first token time (once per engine request, on
 * its sequence 0), speculative counts (the request's, kept on each of its sequences). */
static void take_counts(duet_server *srv, struct duet__srv_job *job, struct duet__srv_choice *ch,
                        const duet_request_output *r, const duet_completion_output *o)
{
    if (ch->seq == 0 && ch->n_tokens == 0 && o->n_ids > 0)
        duet__srv_observe_ttft(srv, duet__srv_now() - job->arrival);
    ch->n_tokens = o->n_ids;
    ch->drafts = r->num_drafts;
    ch->draft_tokens = r->num_proposed;
    ch->accepted = r->num_accepted;
    if (r->accepted_at)
        memcpy(ch->accepted_at, r->accepted_at, sizeof(ch->accepted_at));
}

/* Keeps token t of o with its log-probabilities (rows of stride entries) and the text length it
 * ended at; false when out of memory. */
static bool lp_push(struct duet__srv_lp *lp, const duet_completion_output *o, uint32_t t,
                    size_t end)
{
    if (!o->token_logprobs || !o->logprobs)
        return true;
    if (lp->n == lp->cap) {
        uint32_t cap = lp->cap ? 2 * lp->cap : 64;
        int32_t *ids = realloc(lp->ids, cap * sizeof(*ids));
        float *vals = ids ? realloc(lp->vals, cap * sizeof(*vals)) : NULL;
        duet_logprob *top = NULL;
        size_t *ends = NULL;

        lp->ids = ids ? ids : lp->ids;
        lp->vals = vals ? vals : lp->vals;
        if (vals)
            top = realloc(lp->top, (size_t)cap * lp->stride * sizeof(*top));
        lp->top = top ? top : lp->top;
        if (top)
            ends = realloc(lp->end, cap * sizeof(*ends));
        if (!ends)
            return false;
        lp->end = ends;
        lp->cap = cap;
    }
    lp->ids[lp->n] = o->ids[t];
    lp->vals[lp->n] = o->token_logprobs[t];
    memcpy(&lp->top[(size_t)lp->n * lp->stride], &o->logprobs[(size_t)t * lp->stride],
           lp->stride * sizeof(duet_logprob));
    lp->end[lp->n++] = end;
    return true;
}

/* With echo and logprobs, the prompt's log-probabilities, once the engine has them (its first
 * token follows the whole prompt). */
static void lp_prompt(struct duet__srv_lp *lp, const duet_request_output *r)
{
    size_t n = r->n_prompt;

    if (lp->prompt_vals || !r->prompt_token_logprobs || !r->prompt_logprobs ||
        r->n_prompt_logprobs != lp->stride)
        return;
    lp->prompt_vals = malloc(n * sizeof(float));
    lp->prompt_top = malloc(n * lp->stride * sizeof(duet_logprob));
    if (!lp->prompt_vals || !lp->prompt_top) {
        free(lp->prompt_vals);
        free(lp->prompt_top);
        lp->prompt_vals = NULL;
        lp->prompt_top = NULL;
        return;
    }
    memcpy(lp->prompt_vals, r->prompt_token_logprobs, n * sizeof(float));
    memcpy(lp->prompt_top, r->prompt_logprobs, n * lp->stride * sizeof(duet_logprob));
}

/* The new ids of sequence ch->seq of one output: text, stop strings, finish. A stop string
 * ends the engine request only once every sequence of it has ended. */
static void take_output(duet_server *srv, struct duet__srv_job *job, struct duet__srv_choice *ch,
                        const duet_request_output *r)
{
    const duet_completion_output *o = &r->outputs[ch->seq];
    duet_finish_reason fin = r->finish == DUET_FINISH_NONE ? DUET_FINISH_NONE : o->finish;
    uint32_t end = o->n_ids;
    size_t old_len = ch->len;
    bool stopped = false;

    take_counts(srv, job, ch, r, o);
    if (fin == DUET_FINISH_STOP && end > 0)
        end--; /* the EOS or stop token: counted, not shown (as vLLM) */
    if (job->req.logprobs >= 0 && job->req.echo && o->n_ids)
        lp_prompt(&ch->lp, r);
    for (uint32_t t = o->first_new; t < o->n_ids && !stopped; t++) {
        const char *text;
        size_t n;

        if (t < end) {
            if (duet_detok_push(ch->detok, o->ids[t], &text, &n) == DUET_STATUS_OK && n)
                append_text(ch, text, n);
            stopped = match_stop(&job->req, ch, old_len);
        }
        if (job->req.logprobs >= 0 && !lp_push(&ch->lp, o, t, ch->len)) {
            choice_finish(srv, job, ch, "abort", false); /* out of memory for its logprobs */
            if (siblings_done(job, ch))
                duet_engine_abort(srv->engine, ch->engine_id);
            return;
        }
    }
    if (!stopped && fin != DUET_FINISH_NONE) {
        size_t before = ch->len;

        choice_finish(srv, job, ch, finish_name(fin), true);
        if (match_stop(&job->req, ch, before))
            ch->finish = "stop";
        return;
    }
    if (stopped) {
        choice_finish(srv, job, ch, "stop", false);
        if (siblings_done(job, ch))
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
        choice_finish(srv, job, ch, "abort", false);
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

        if (duet_detok_create(srv->tok, true, &ch->detok)) {
            job->failed = true;
            duet__srv_fail(&job->err, 500, NULL, NULL, "out of memory");
            job_abort(srv, job);
            return;
        }
        if (ch->seq) { /* a later sequence of the request of choice i - seq */
            ch->engine_id = (ch - ch->seq)->engine_id;
            ch->added = true;
            continue;
        }
        duet_request_params_init(&p);
        p.prompt = ch->prompt;
        p.n_prompt = ch->n_prompt;
        p.max_tokens = job->max_tokens;
        p.sampling.temperature = (float)job->req.temperature;
        p.sampling.top_p = (float)job->req.top_p;
        p.sampling.top_k = job->req.top_k;
        p.sampling.min_p = (float)job->req.min_p;
        /* choice i draws with seed + i: its engine request's sequence j with seed + i + j */
        p.sampling.seed = job->req.has_seed ? job->req.seed + i : (uint64_t)rand() << 31 ^ rand();
        p.stop_token_ids = job->req.stop_token_ids;
        p.n_stop_token_ids = job->req.n_stop_token_ids;
        p.ignore_eos = job->req.ignore_eos;
        p.n = job->req.n;
        p.priority = job->req.priority;
        if (job->req.logprobs >= 0) /* 0: the token's own log-probability only */
            p.sampling.n_logprobs = job->req.logprobs > 0 ? (uint32_t)job->req.logprobs : 1;
        if (job->req.logprobs >= 0 && job->req.echo)
            p.sampling.n_prompt_logprobs = p.sampling.n_logprobs;
        p.presence_penalty = (float)job->req.presence_penalty;
        p.frequency_penalty = (float)job->req.frequency_penalty;
        p.repetition_penalty = (float)job->req.repetition_penalty;
        p.logit_bias = job->req.logit_bias;
        p.n_logit_bias = job->req.n_logit_bias;
        if (duet_engine_add_request(srv->engine, &p, &ch->engine_id)) {
            job->failed = true;
            duet__srv_fail(&job->err, 400, NULL, "prompt", "%s", duet_engine_error(srv->engine));
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

        if (!ch)
            continue;
        for (uint32_t j = 0; j < job->req.n && j < r->n_outputs; j++)
            if (!ch[j].finish)
                take_output(srv, job, &ch[j], r);
        if (job->n_done == job->n_choices) {
            job_done(srv, job);
            continue;
        }
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
    srv->num_spec_tokens = m.num_spec_tokens;
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
