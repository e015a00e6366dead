/*
 * generate.c — POST /v1/completions and /v1/chat/completions, on the handler's thread.
 *
 *   parsed request ─► prompt ids (encode the text, or render the chat template and encode it
 *   without special tokens) ─► checked against the vocabulary and max_model_len (400 naming the
 *   numbers) ─► a job queued for the engine thread (429 past server.max_queue) ─► wait until the
 *   engine admitted it (400 if it refused) ─►
 *       stream: false   wait until DONE (polling the socket: a client gone cancels the job),
 *                       then one JSON answer with usage
 *       stream: true    200 text/event-stream, a content callback that waits on the job's cond
 *                       and writes "data: {chunk}\n\n" for each piece of new text, each finish,
 *                       the usage chunk (stream_options.include_usage) and "data: [DONE]\n\n"
 *
 * While a choice runs, its last max_stop_len - 1 bytes are held back from the stream: they could
 * be the start of a stop string that must not be shown.
 */
#define _POSIX_C_SOURCE 200809L
#include "server-int.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_SLICE_S 0.05 /* how often a waiting handler looks at its socket */

/* ---- prompts ------------------------------------------------------------------------------ */

bool duet__srv_chat_ids(duet_server *srv, const struct duet__srv_request *req, int32_t **ids,
                        size_t *n, struct duet__srv_error *err)
{
    duet_chat_options opts;
    char msg[512] = "", *prompt = NULL;
    size_t len = 0;
    duet_status st;

    duet_chat_options_init(&opts);
    opts.add_generation_prompt = req->add_generation_prompt;
    opts.kwargs_json = req->chat_kwargs_json;
    opts.chat_template = req->chat_template;
    st =
        duet_tokenizer_apply_chat_template(srv->tok, req->messages_json, strlen(req->messages_json),
                                           &opts, &prompt, &len, msg, sizeof(msg));
    if (st) {
        bool client = st == DUET_STATUS_INVALID_ARGUMENT || st == DUET_STATUS_NOT_FOUND;

        return duet__srv_fail(err, client ? 400 : 500, NULL, client ? "messages" : NULL,
                              "chat template: %s", msg[0] ? msg : duet_status_str(st));
    }
    st = duet_tokenizer_encode(srv->tok, prompt, len, req->add_special_tokens, ids, n);
    duet_tokenizer_free(prompt);
    if (st)
        return duet__srv_fail(err, 400, NULL, "messages",
                              "the rendered prompt cannot be encoded: %s", duet_status_str(st));
    return true;
}

/* The ids of prompt i (a copy of the given ids, or the encoded text). */
static bool prompt_ids(duet_server *srv, const struct duet__srv_request *req, uint32_t i,
                       int32_t **ids, size_t *n, struct duet__srv_error *err)
{
    const struct duet__srv_prompt *p;

    if (req->kind == DUET__SRV_CHAT)
        return duet__srv_chat_ids(srv, req, ids, n, err);
    p = &req->prompts[i];
    if (p->text) {
        if (duet_tokenizer_encode(srv->tok, p->text, p->text_len, req->add_special_tokens, ids, n))
            return duet__srv_fail(err, 400, NULL, "prompt", "prompt %u cannot be encoded", i);
        return true;
    }
    *ids = malloc(p->n_ids * sizeof(**ids));
    if (!*ids)
        return duet__srv_fail(err, 500, NULL, NULL, "out of memory");
    memcpy(*ids, p->ids, p->n_ids * sizeof(**ids));
    *n = p->n_ids;
    return true;
}

/* The limits of one prompt: not empty, in the vocabulary, room for the tokens asked for. */
static bool check_prompt(duet_server *srv, const struct duet__srv_request *req, const int32_t *ids,
                         size_t n, struct duet__srv_error *err)
{
    uint64_t want = n + (req->max_tokens > 0 ? (uint64_t)req->max_tokens : 0);

    if (n == 0)
        return duet__srv_fail(err, 400, NULL, "prompt", "the prompt is empty");
    for (size_t t = 0; t < n; t++)
        if ((uint32_t)ids[t] >= srv->vocab_size)
            return duet__srv_fail(err, 400, NULL, "prompt",
                                  "token id %d is out of vocabulary (vocab size %u)", ids[t],
                                  srv->vocab_size);
    for (uint32_t i = 0; i < req->n_logit_bias; i++)
        if ((uint32_t)req->logit_bias[i].token >= srv->vocab_size)
            return duet__srv_fail(err, 400, NULL, "logit_bias",
                                  "token id %d is out of vocabulary (vocab size %u)",
                                  req->logit_bias[i].token, srv->vocab_size);
    if (n >= srv->max_model_len || want > srv->max_model_len) {
        if (req->max_tokens > 0)
            return duet__srv_fail(
                err, 400, NULL, "max_tokens",
                "This model's maximum context length is %u tokens. However, you requested %llu "
                "tokens (%zu in the prompt, %lld in the completion). Please reduce the length "
                "of the prompt or the completion.",
                srv->max_model_len, (unsigned long long)want, n, (long long)req->max_tokens);
        return duet__srv_fail(err, 400, NULL, "prompt",
                              "This model's maximum context length is %u tokens. However, your "
                              "prompt has %zu tokens, which leaves no room for a completion.",
                              srv->max_model_len, n);
    }
    return true;
}

/* With echo, the text of prompt i for its n choices: the prompt as given, or its ids decoded
 * (special tokens kept, as vLLM's tokenizer.decode). */
static bool echo_init(duet_server *srv, struct duet__srv_job *job, uint32_t i, const int32_t *ids,
                      size_t n_ids, struct duet__srv_error *err)
{
    const struct duet__srv_prompt *p = &job->req.prompts[i];
    char *dec = NULL;
    const char *text = p->text;
    size_t len = p->text_len;

    if (!text) {
        if (duet_tokenizer_decode(srv->tok, ids, n_ids, false, &dec, &len))
            return duet__srv_fail(err, 400, NULL, "prompt", "prompt %u cannot be decoded", i);
        text = dec;
    }
    for (uint32_t j = 0; j < job->req.n; j++) {
        struct duet__srv_choice *ch = &job->choices[i * job->req.n + j];

        ch->echo = malloc(len + 1);
        if (!ch->echo)
            break;
        memcpy(ch->echo, text, len);
        ch->echo[len] = '\0';
        ch->echo_len = len;
    }
    duet_tokenizer_free(dec);
    if (!job->choices[i * job->req.n + job->req.n - 1].echo)
        return duet__srv_fail(err, 500, NULL, NULL, "out of memory");
    return true;
}

/* vLLM refuses a priority the scheduler's policy ignores. */
static bool check_priority(duet_server *srv, const struct duet__srv_request *req,
                           struct duet__srv_error *err)
{
    if (req->priority != 0 && srv->set->scheduler.policy != DUET_SCHED_POLICY_PRIORITY)
        return duet__srv_fail(err, 400, NULL, "priority",
                              "Got priority %d but Priority scheduling is not enabled.",
                              req->priority);
    return true;
}

/* A job holding the request and n choices per prompt (choice p * n + i: sequence i of prompt p,
 * as OpenAI and vLLM number them); NULL with *err set. Only the first choice of a prompt holds
 * its ids. */
static struct duet__srv_job *job_create(duet_server *srv, struct duet__srv_request *req,
                                        struct duet__srv_error *err)
{
    uint32_t np = req->kind == DUET__SRV_CHAT ? 1 : req->n_prompts, n = req->n;
    struct duet__srv_job *job;

    if (!check_priority(srv, req, err))
        return NULL;
    job = calloc(1, sizeof(*job));
    if (!job || !(job->choices = calloc((size_t)np * n, sizeof(*job->choices)))) {
        free(job);
        duet__srv_fail(err, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    pthread_cond_init(&job->cond, NULL);
    job->refs = 1;
    job->req = *req;
    memset(req, 0, sizeof(*req));
    for (uint32_t i = 0; i < np; i++) {
        size_t len = 0;
        int32_t *ids = NULL;

        if (!prompt_ids(srv, &job->req, i, &ids, &len, err) ||
            !check_prompt(srv, &job->req, ids, len, err)) {
            free(ids);
            job->n_choices = i * n;
            duet__srv_job_release(srv, job);
            return NULL;
        }
        for (uint32_t j = 0; j < n; j++) {
            struct duet__srv_choice *ch = &job->choices[i * n + j];

            ch->prompt = j ? NULL : ids;
            ch->n_prompt = (uint32_t)len;
            ch->seq = j;
            ch->lp.stride = job->req.logprobs > 0 ? (uint32_t)job->req.logprobs : 1;
        }
        job->n_choices = (i + 1) * n;
        if (job->req.echo && !echo_init(srv, job, i, ids, len, err)) {
            duet__srv_job_release(srv, job);
            return NULL;
        }
    }
    return job;
}

/* ---- the queue ---------------------------------------------------------------------------- */

/* Hands job to the engine thread (which takes a reference); under srv->lock. */
static bool enqueue(duet_server *srv, struct duet__srv_job *job, struct duet__srv_error *err)
{
    uint32_t longest = 0;

    if (srv->state != DUET_SERVER_READY || srv->stopping)
        return duet__srv_fail(err, 503, NULL, NULL, "the server is not serving");
    if (srv->n_inflight + job->n_choices > (uint64_t)srv->set->server.max_queue)
        return duet__srv_fail(err, 429, NULL, NULL,
                              "too many requests: %u waiting or running (server.max_queue %lld)",
                              srv->n_inflight, (long long)srv->set->server.max_queue);
    for (uint32_t i = 0; i < job->n_choices; i++)
        if (job->choices[i].n_prompt > longest)
            longest = job->choices[i].n_prompt;
    job->max_tokens =
        job->req.max_tokens > 0 ? (uint32_t)job->req.max_tokens : srv->max_model_len - longest;
    snprintf(job->id, sizeof(job->id), "%s-%08llx%016llx",
             job->req.kind == DUET__SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)srv->next_job++, (unsigned long long)time(NULL) * 2654435761u);
    job->created = (long long)time(NULL);
    job->arrival = duet__srv_now();
    if (srv->set->server.request_timeout_s > 0)
        job->deadline = duet__srv_now() + (double)srv->set->server.request_timeout_s;
    job->refs++;
    srv->n_inflight += job->n_choices;
    if (srv->queue_tail)
        srv->queue_tail->next = job;
    else
        srv->queue = job;
    srv->queue_tail = job;
    pthread_cond_signal(&srv->wake);
    return true;
}

/* Waits a slice on job->cond; a client gone cancels the job. Under srv->lock. */
static void wait_slice(duet_server *srv, struct duet__srv_job *job, struct MHD_Connection *c)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(WAIT_SLICE_S * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&job->cond, &srv->lock, &ts);
    if (job->state != DUET__SRV_JOB_DONE && !job->cancel && duet__srv_client_gone(c)) {
        job->cancel = true;
        pthread_cond_signal(&srv->wake);
    }
}

/* ---- JSON --------------------------------------------------------------------------------- */

static json_t *usage_of(const struct duet__srv_job *job)
{
    uint64_t prompt = 0, completion = 0;

    for (uint32_t i = 0; i < job->n_choices; i++) {
        prompt += job->choices[i].seq ? 0 : job->choices[i].n_prompt; /* once per prompt */
        completion += job->choices[i].n_tokens;
    }
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt, "total_tokens",
                     (json_int_t)(prompt + completion), "completion_tokens",
                     (json_int_t)completion);
}

/* vLLM's per-request metrics.speculative_decoding ("summary"), or NULL when the server was not
 * asked for it (server.per_request_spec_decode_metrics), has no draft, or the request has several
 * prompts (vLLM leaves it out for n > 1). */
static json_t *spec_metrics_of(duet_server *srv, const struct duet__srv_job *job)
{
    const char *level = srv->set->server.per_request_spec_decode_metrics;
    const struct duet__srv_choice *ch = &job->choices[0];
    uint32_t k =
        srv->num_spec_tokens < DUET_MAX_SPEC_TOKENS ? srv->num_spec_tokens : DUET_MAX_SPEC_TOKENS;
    json_t *hist;

    if (!level || strcmp(level, "summary") != 0 || k == 0 || job->n_choices != 1)
        return NULL;
    hist = json_array();
    for (uint32_t j = 0; j <= k; j++) /* steps that accepted exactly j: at least j, not j + 1 */
        json_array_append_new(hist, json_integer((j ? ch->accepted_at[j - 1] : ch->drafts) -
                                                 (j < k ? ch->accepted_at[j] : 0)));
    return json_pack(
        "{s:{s:o, s:o, s:o, s:I, s:I, s:I, s:I}}", "speculative_decoding", "mean_acceptance_length",
        ch->drafts ? json_real(1.0 + (double)ch->accepted / ch->drafts) : json_null(),
        "draft_acceptance_rate",
        ch->draft_tokens ? json_real((double)ch->accepted / ch->draft_tokens) : json_null(),
        "acceptance_histogram", hist, "num_spec_steps", (json_int_t)ch->drafts,
        "num_accepted_draft_tokens", (json_int_t)ch->accepted, "num_draft_tokens",
        (json_int_t)ch->draft_tokens, "num_spec_tokens", (json_int_t)k);
}

static void add_spec_metrics(duet_server *srv, const struct duet__srv_job *job, json_t *root)
{
    json_t *m = spec_metrics_of(srv, job);

    if (m)
        json_object_set_new(root, "metrics", m);
}

static json_t *envelope(duet_server *srv, const struct duet__srv_job *job, const char *object)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", job->id, "object", object, "created",
                     (json_int_t)job->created, "model", srv->model_name);
}

/* echo[n_echo] then text[n] as one JSON string (both may be NULL when empty). */
static json_t *choice_text(const char *echo, size_t n_echo, const char *text, size_t n)
{
    char *buf;
    json_t *s;

    if (!n_echo)
        return json_stringn_nocheck(text ? text : "", n);
    buf = malloc(n_echo + n + 1);
    if (!buf)
        return NULL;
    memcpy(buf, echo, n_echo);
    if (n)
        memcpy(buf + n_echo, text, n);
    s = json_stringn_nocheck(buf, n_echo + n);
    free(buf);
    return s;
}

static char *final_answer(duet_server *srv, const struct duet__srv_job *job)
{
    bool chat = job->req.kind == DUET__SRV_CHAT;
    json_t *root = envelope(srv, job, chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    char *body;

    for (uint32_t i = 0; i < job->n_choices; i++) {
        const struct duet__srv_choice *ch = &job->choices[i];
        json_t *text = choice_text(ch->echo, ch->echo_len, ch->text, ch->len);
        json_t *c = json_pack("{s:I, s:n, s:s}", "index", (json_int_t)i, "logprobs",
                              "finish_reason", ch->finish ? ch->finish : "abort");
        double chars = 0;

        if (job->req.logprobs >= 0)
            json_object_set_new(c, "logprobs",
                                duet__srv_logprobs_json(srv, job, ch, 0, ch->lp.n, true, &chars));

        if (chat)
            json_object_set_new(c, "message",
                                json_pack("{s:s, s:o}", "role", "assistant", "content", text));
        else
            json_object_set_new(c, "text", text);
        json_array_append_new(choices, c);
    }
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_of(job));
    add_spec_metrics(srv, job, root);
    body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return body;
}

static int answer_when_done(duet_server *srv, struct MHD_Connection *c, struct duet__srv_job *job)
{
    char *body;

    pthread_mutex_lock(&srv->lock);
    while (job->state != DUET__SRV_JOB_DONE)
        wait_slice(srv, job, c);
    if (job->failed) {
        struct duet__srv_error err = job->err;

        duet__srv_job_release(srv, job);
        pthread_mutex_unlock(&srv->lock);
        return duet__srv_reply_error(c, &err);
    }
    body = final_answer(srv, job);
    duet__srv_job_release(srv, job);
    pthread_mutex_unlock(&srv->lock);
    return duet__srv_reply_json(c, 200, body);
}

/* ---- streaming ---------------------------------------------------------------------------- */

struct stream {
    duet_server *srv;
    struct duet__srv_job *job;
    struct MHD_Connection *conn;
    char *buf; /* [len] bytes ready to send, from off */
    size_t len, off, cap;
};

static void out_append(struct stream *s, const char *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        char *b;

        while (cap < s->len + n)
            cap *= 2;
        b = realloc(s->buf, cap);
        if (!b)
            return;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

/* "data: JSON\n\n"; takes root. */
static void out_event(struct stream *s, json_t *root)
{
    char *text;

    if (s->job->req.include_usage && !json_object_get(root, "usage"))
        json_object_set_new(root, "usage", json_null());
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        return;
    out_append(s, "data: ", 6);
    out_append(s, text, strlen(text));
    out_append(s, "\n\n", 2);
    free(text);
}

/* One chunk of choice i: text (n bytes), the echo first when not sent yet, the log-probabilities
 * of the tokens whose text it completes (all the rest when it finishes), and its finish reason
 * or NULL. */
static void out_chunk(struct stream *s, uint32_t i, const char *text, size_t n, const char *finish)
{
    struct duet__srv_job *job = s->job;
    struct duet__srv_choice *ch = &job->choices[i];
    bool chat = job->req.kind == DUET__SRV_CHAT, echo = !ch->echo_sent && ch->echo_len;
    json_t *root = envelope(s->srv, job, chat ? "chat.completion.chunk" : "text_completion");
    json_t *c = json_pack("{s:I, s:n}", "index", (json_int_t)i, "logprobs");

    if (chat) {
        json_t *delta = json_object();

        if (n || !finish)
            json_object_set_new(delta, "content", json_stringn_nocheck(text, n));
        json_object_set_new(c, "delta", delta);
    } else {
        json_object_set_new(c, "text", choice_text(ch->echo, echo ? ch->echo_len : 0, text, n));
    }
    if (job->req.logprobs >= 0) {
        uint32_t to = ch->lp.sent;
        size_t end = ch->sent + n;

        while (to < ch->lp.n && (finish || ch->lp.end[to] <= end))
            to++;
        json_object_set_new(
            c, "logprobs",
            duet__srv_logprobs_json(s->srv, job, ch, ch->lp.sent, to, echo, &ch->lp_chars));
        ch->lp.sent = to;
    }
    ch->echo_sent = true;
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(root, "choices", json_pack("[o]", c));
    out_event(s, root);
}

/* The bytes of ch that may be streamed now: all when finished, else all but what could start a
 * stop string, ending on a UTF-8 character boundary. */
static size_t streamable(const struct duet__srv_job *job, const struct duet__srv_choice *ch)
{
    size_t hold = job->req.max_stop_len ? job->req.max_stop_len - 1 : 0, end;

    if (ch->finish)
        return ch->len;
    end = ch->len > hold ? ch->len - hold : 0;
    while (end > ch->sent && ((unsigned char)ch->text[end] & 0xC0) == 0x80)
        end--;
    return end < ch->sent ? ch->sent : end;
}

/* Appends every chunk the job's state allows; under srv->lock. */
static void produce(struct stream *s)
{
    struct duet__srv_job *job = s->job;

    for (uint32_t i = 0; job->req.kind == DUET__SRV_CHAT && !job->role_sent && i < job->n_choices;
         i++) { /* every choice opens with its role (vLLM) */
        json_t *root = envelope(s->srv, job, "chat.completion.chunk");

        json_object_set_new(root, "choices",
                            json_pack("[{s:I, s:{s:s, s:s}, s:n, s:n}]", "index", (json_int_t)i,
                                      "delta", "role", "assistant", "content", "", "logprobs",
                                      "finish_reason"));
        out_event(s, root);
    }
    job->role_sent = true;
    for (uint32_t i = 0; i < job->n_choices; i++) {
        struct duet__srv_choice *ch = &job->choices[i];
        size_t end = streamable(job, ch);

        if (ch->finish_sent || (end == ch->sent && !ch->finish))
            continue;
        out_chunk(s, i, ch->text + ch->sent, end - ch->sent, ch->finish);
        ch->sent = end;
        ch->finish_sent = ch->finish != NULL;
    }
    if (job->state != DUET__SRV_JOB_DONE || job->done_sent)
        return;
    if (job->req.include_usage) {
        json_t *root = envelope(s->srv, job, "chat.completion.chunk");

        if (job->req.kind != DUET__SRV_CHAT)
            json_object_set_new(root, "object", json_string("text_completion"));
        json_object_set_new(root, "choices", json_array());
        json_object_set_new(root, "usage", usage_of(job));
        add_spec_metrics(s->srv, job, root);
        out_event(s, root);
    }
    out_append(s, "data: [DONE]\n\n", 14);
    job->done_sent = true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *s = cls;
    duet_server *srv = s->srv;
    ssize_t n = 0;

    (void)pos;
    pthread_mutex_lock(&srv->lock);
    while (s->off == s->len) {
        s->off = s->len = 0;
        produce(s);
        if (s->len)
            break;
        if (s->job->done_sent) {
            pthread_mutex_unlock(&srv->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        wait_slice(srv, s->job, s->conn);
        if (s->job->cancel) {
            pthread_mutex_unlock(&srv->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    n = (ssize_t)(s->len - s->off < max ? s->len - s->off : max);
    memcpy(buf, s->buf + s->off, (size_t)n);
    s->off += (size_t)n;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

/* The response is gone (sent, or the connection closed): a job still running is cancelled. */
static void stream_free(void *cls)
{
    struct stream *s = cls;
    duet_server *srv = s->srv;

    pthread_mutex_lock(&srv->lock);
    if (s->job->state != DUET__SRV_JOB_DONE) {
        s->job->cancel = true;
        pthread_cond_signal(&srv->wake);
    }
    duet__srv_job_release(srv, s->job);
    pthread_mutex_unlock(&srv->lock);
    free(s->buf);
    free(s);
}

static int answer_stream(duet_server *srv, struct MHD_Connection *c, struct duet__srv_job *job)
{
    struct stream *s = calloc(1, sizeof(*s));
    struct MHD_Response *resp;
    int ret;

    pthread_mutex_lock(&srv->lock);
    while (job->state == DUET__SRV_JOB_QUEUED)
        wait_slice(srv, job, c);
    if (job->failed || !s) {
        struct duet__srv_error err = job->err;

        if (!s)
            duet__srv_fail(&err, 500, NULL, NULL, "out of memory");
        duet__srv_job_release(srv, job);
        pthread_mutex_unlock(&srv->lock);
        free(s);
        return duet__srv_reply_error(c, &err);
    }
    pthread_mutex_unlock(&srv->lock);
    *s = (struct stream){.srv = srv, .job = job, .conn = c};
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

int duet__srv_generate(duet_server *srv, struct MHD_Connection *c, struct duet__srv_request *req)
{
    struct duet__srv_error err = {0};
    struct duet__srv_job *job = job_create(srv, req, &err);
    bool ok;

    if (!job)
        return duet__srv_reply_error(c, &err);
    pthread_mutex_lock(&srv->lock);
    ok = enqueue(srv, job, &err);
    if (!ok)
        duet__srv_job_release(srv, job);
    pthread_mutex_unlock(&srv->lock);
    if (!ok)
        return duet__srv_reply_error(c, &err);
    return job->req.stream ? answer_stream(srv, c, job) : answer_when_done(srv, c, job);
}
