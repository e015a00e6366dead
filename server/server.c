/*
 * server.c — the HTTP side of duet-server: libmicrohttpd with a thread per connection.
 *
 *   connection thread: access handler, called once for the headers, then per body piece, then
 *   once more with no data:
 *     headers  ─► route (404 / 405), auth (401; only /v1/ paths, as vLLM), loaded? (503),
 *                 Content-Length over server.max_body_bytes (413)
 *     body     ─► appended to the connection's buffer (413 past the limit)
 *     end      ─► request.c parses it ─► model check (404) ─► generate.c, or the small answers
 *                 here: /tokenize, /detokenize; GET /health, /v1/models, /metrics need no body
 *
 * Handlers may block (thread per connection): a non-streaming completion waits in its handler,
 * a stream in its content callback. duet_server_stop() quiesces the listener, tells the engine
 * thread to abort everything (which wakes every waiting handler), then stops the daemon.
 */
#define _GNU_SOURCE
#include "server-int.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- answers ------------------------------------------------------------------------------ */

int duet__srv_reply_json(struct MHD_Connection *c, int status, char *body)
{
    struct MHD_Response *r;
    int ret;

    if (!body)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A JSON string of s; bytes that are not UTF-8 (a URL can hold any) become '?' instead. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    char *copy;

    if (j || !(copy = strdup(s)))
        return j;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

int duet__srv_reply_error(struct MHD_Connection *c, const struct duet__srv_error *err)
{
    json_t *e = json_object(), *root;
    char *body;

    json_object_set_new(e, "message", json_text(err->message));
    json_object_set_new(e, "type", json_string(err->type));
    json_object_set_new(e, "param", err->param[0] ? json_text(err->param) : json_null());
    json_object_set_new(e, "code", err->code ? json_string(err->code) : json_null());
    root = json_pack("{s:o}", "error", e);
    body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return duet__srv_reply_json(c, err->status, body);
}

static int reply_fail(struct MHD_Connection *c, int status, const char *code, const char *what,
                      const char *arg)
{
    struct duet__srv_error err;

    duet__srv_fail(&err, status, code, NULL, "%s%.200s", what, arg);
    return duet__srv_reply_error(c, &err);
}

bool duet__srv_client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;
    char byte;

    if (!info)
        return false;
    p = (struct pollfd){.fd = info->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP))
        return true;
    return recv(info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ---- the small endpoints ------------------------------------------------------------------ */

static int reply_models(duet_server *srv, struct MHD_Connection *c)
{
    json_t *root = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:n, s:I}]}", "object", "list",
                             "data", "id", srv->model_name, "object", "model", "created",
                             (json_int_t)time(NULL), "owned_by", "duet", "root", srv->set->model,
                             "parent", "max_model_len", (json_int_t)srv->max_model_len);
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;

    json_decref(root);
    return duet__srv_reply_json(c, 200, body);
}

static int reply_tokenize(duet_server *srv, struct MHD_Connection *c, struct duet__srv_request *r)
{
    struct duet__srv_error err;
    int32_t *ids = NULL;
    size_t n = 0;
    json_t *list, *root;
    char *body;

    if (r->messages_json) {
        if (!duet__srv_chat_ids(srv, r, &ids, &n, &err))
            return duet__srv_reply_error(c, &err);
    } else if (duet_tokenizer_encode(srv->tok, r->prompts[0].text, r->prompts[0].text_len,
                                     r->add_special_tokens, &ids, &n)) {
        return reply_fail(c, 400, NULL, "the prompt cannot be encoded", "");
    }
    list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_integer(ids[i]));
    duet_tokenizer_free(ids);
    root = json_pack("{s:I, s:I, s:o, s:n}", "count", (json_int_t)n, "max_model_len",
                     (json_int_t)srv->max_model_len, "tokens", list, "token_strs");
    body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return duet__srv_reply_json(c, 200, body);
}

static int reply_detokenize(duet_server *srv, struct MHD_Connection *c, struct duet__srv_request *r)
{
    char *text = NULL, *body;
    size_t len = 0;
    json_t *root;

    if (duet_tokenizer_decode(srv->tok, r->prompts[0].ids, r->prompts[0].n_ids, false, &text, &len))
        return reply_fail(c, 400, NULL, "a token id is out of the vocabulary", "");
    root = json_pack("{s:o}", "prompt", json_stringn_nocheck(text, len));
    duet_tokenizer_free(text);
    body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return duet__srv_reply_json(c, 200, body);
}

/* ---- routing ------------------------------------------------------------------------------ */

enum route {
    R_NONE,
    R_HEALTH,
    R_MODELS,
    R_METRICS,
    R_COMPLETIONS,
    R_CHAT,
    R_TOKENIZE,
    R_DETOKENIZE
};

static const struct {
    const char *path;
    const char *method;
    enum route route;
} routes[] = {
    {"/health", "GET", R_HEALTH},
    {"/v1/models", "GET", R_MODELS},
    {"/metrics", "GET", R_METRICS},
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/tokenize", "POST", R_TOKENIZE},
    {"/detokenize", "POST", R_DETOKENIZE},
};

/* Per connection request: the route and the body read so far. */
struct exchange {
    enum route route;
    char *body; /* [len] */
    size_t len, cap;
    bool too_large;
    bool answered; /* an answer was queued before the body ended */
};

static int route_of(const char *url, const char *method, enum route *out)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(url, routes[i].path) != 0)
            continue;
        if (strcmp(method, routes[i].method) != 0 &&
            !(routes[i].route == R_HEALTH && strcmp(method, "HEAD") == 0))
            return 405;
        *out = routes[i].route;
        return 0;
    }
    return 404;
}

static bool authorized(duet_server *srv, struct MHD_Connection *c)
{
    const char *key = srv->set->server.api_key;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

    if (!key)
        return true;
    return auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, key) == 0;
}

/* The checks made on the headers; returns 0 to go on reading the body, else an answer's
 * MHD result. */
static int on_headers(duet_server *srv, struct MHD_Connection *c, const char *url,
                      const char *method, struct exchange *x, bool *answered)
{
    int status = route_of(url, method, &x->route);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    duet_server_state state;

    *answered = true;
    if (status == 404)
        return reply_fail(c, 404, NULL, "no such path: ", url);
    if (status == 405)
        return reply_fail(c, 405, NULL, "method not allowed here: ", method);
    if (strncmp(url, "/v1/", 4) == 0 && !authorized(srv, c))
        return reply_fail(c, 401, "invalid_api_key", "missing or wrong API key", "");
    pthread_mutex_lock(&srv->lock);
    state = srv->state;
    pthread_mutex_unlock(&srv->lock);
    if (x->route == R_HEALTH)
        return duet__srv_reply_json(c, state == DUET_SERVER_READY ? 200 : 503, strdup(""));
    if (state != DUET_SERVER_READY)
        return reply_fail(c, 503, NULL, "the model is ",
                          state == DUET_SERVER_LOADING ? "still loading" : "not serving");
    if (x->route == R_MODELS)
        return reply_models(srv, c);
    if (x->route == R_METRICS)
        return duet__srv_reply_metrics(srv, c);
    if (cl && strtoull(cl, NULL, 10) > (unsigned long long)srv->set->server.max_body_bytes)
        return reply_fail(c, 413, NULL, "the request body is over server.max_body_bytes", "");
    *answered = false;
    return MHD_YES;
}

static bool body_append(duet_server *srv, struct exchange *x, const char *data, size_t n)
{
    if (x->len + n > (uint64_t)srv->set->server.max_body_bytes) {
        x->too_large = true;
        return true;
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        char *b;

        while (cap < x->len + n + 1)
            cap *= 2;
        b = realloc(x->body, cap);
        if (!b)
            return false;
        x->body = b;
        x->cap = cap;
    }
    memcpy(x->body + x->len, data, n);
    x->len += n;
    return true;
}

static int on_body_end(duet_server *srv, struct MHD_Connection *c, struct exchange *x)
{
    static const enum duet__srv_kind kinds[] = {[R_COMPLETIONS] = DUET__SRV_COMPLETIONS,
                                                [R_CHAT] = DUET__SRV_CHAT,
                                                [R_TOKENIZE] = DUET__SRV_TOKENIZE,
                                                [R_DETOKENIZE] = DUET__SRV_DETOKENIZE};
    struct duet__srv_request req;
    struct duet__srv_error err;
    int ret;

    if (x->too_large)
        return reply_fail(c, 413, NULL, "the request body is over server.max_body_bytes", "");
    if (!duet__srv_request_parse(x->body ? x->body : "", x->len, kinds[x->route], &req, &err))
        return duet__srv_reply_error(c, &err);
    if (req.model && strcmp(req.model, srv->model_name) != 0) {
        char name[201];

        duet__srv_utf8_copy(name, sizeof(name), req.model);
        duet__srv_fail(&err, 404, "model_not_found", "model", "The model `%s` does not exist.",
                       name);
        duet__srv_request_fini(&req);
        return duet__srv_reply_error(c, &err);
    }
    if (x->route == R_TOKENIZE)
        ret = reply_tokenize(srv, c, &req);
    else if (x->route == R_DETOKENIZE)
        ret = reply_detokenize(srv, c, &req);
    else
        ret = duet__srv_generate(srv, c, &req);
    duet__srv_request_fini(&req);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    duet_server *srv = cls;
    struct exchange *x = *con_cls;
    bool answered;
    int ret;

    (void)version;
    if (!x) {
        x = calloc(1, sizeof(*x));
        if (!x)
            return MHD_NO;
        *con_cls = x;
        ret = on_headers(srv, c, url, method, x, &answered);
        x->answered = answered;
        return (enum MHD_Result)ret;
    }
    if (x->answered) {
        *upload_data_size = 0; /* discard the rest of the body */
        return MHD_YES;
    }
    if (*upload_data_size) {
        bool ok = body_append(srv, x, upload_data, *upload_data_size);

        *upload_data_size = 0;
        return ok ? MHD_YES : MHD_NO;
    }
    x->answered = true;
    return (enum MHD_Result)on_body_end(srv, c, x);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct exchange *x = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (x) {
        free(x->body);
        free(x);
        *con_cls = NULL;
    }
}

/* ---- life --------------------------------------------------------------------------------- */

static duet_status listen_on(duet_server *srv, char *err, size_t err_size)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    const union MHD_DaemonInfo *info;
    int rc;

    snprintf(port, sizeof(port), "%lld", (long long)srv->set->server.port);
    rc = getaddrinfo(srv->set->server.host, port, &hints, &ai);
    if (rc) {
        snprintf(err, err_size, "server.host %s: %s", srv->set->server.host, gai_strerror(rc));
        return DUET_STATUS_BAD_CONFIG;
    }
    srv->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                    MHD_USE_ITC | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                                0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->mhd) {
        snprintf(err, err_size, "cannot listen on %s:%s (address in use, or not local?)",
                 srv->set->server.host, port);
        return DUET_STATUS_IO;
    }
    info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : (uint16_t)srv->set->server.port;
    return DUET_STATUS_OK;
}

/* served_model_name, or the basename of the model folder (trailing slashes dropped). */
static char *model_name(const duet_settings *set)
{
    char *copy, *name;

    if (set->server.served_model_name)
        return strdup(set->server.served_model_name);
    copy = strdup(set->model);
    if (!copy)
        return NULL;
    name = strdup(basename(copy));
    free(copy);
    return name;
}

DUET_API duet_status duet_server_start(const duet_config *cfg, duet_server **out, char *err,
                                       size_t err_size)
{
    const duet_settings *set = duet_config_settings(cfg);
    duet_server *srv;
    duet_status st;

    *out = NULL;
    if (!set) {
        snprintf(err, err_size, "the configuration is not validated");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        return DUET_STATUS_OUT_OF_MEMORY;
    srv->cfg = cfg;
    srv->set = set;
    srv->model_name = model_name(set);
    srv->tokenizer_dir = strdup(set->server.tokenizer ? set->server.tokenizer : set->model);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->wake, NULL);
    if (!srv->model_name || !srv->tokenizer_dir) {
        snprintf(err, err_size, "out of memory");
        st = DUET_STATUS_OUT_OF_MEMORY;
        goto out_free;
    }
    st = listen_on(srv, err, err_size);
    if (st)
        goto out_free;
    if (pthread_create(&srv->thread, NULL, duet__srv_engine_main, srv)) {
        snprintf(err, err_size, "cannot start the engine thread");
        st = DUET_STATUS_OUT_OF_MEMORY;
        goto out_free;
    }
    srv->thread_started = true;
    *out = srv;
    return DUET_STATUS_OK;
out_free:
    duet_server_destroy(srv);
    return st;
}

DUET_API uint16_t duet_server_port(const duet_server *srv)
{
    return srv->port;
}

DUET_API duet_server_state duet_server_state_get(const duet_server *srv, char *err, size_t err_size)
{
    duet_server_state st;

    pthread_mutex_lock((pthread_mutex_t *)&srv->lock);
    st = srv->state;
    if (err && err_size)
        snprintf(err, err_size, "%s", srv->error);
    pthread_mutex_unlock((pthread_mutex_t *)&srv->lock);
    return st;
}

DUET_API void duet_server_stop(duet_server *srv)
{
    if (!srv || srv->stopped)
        return;
    srv->stopped = true;
    if (srv->mhd)
        MHD_quiesce_daemon(srv->mhd);
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    if (srv->state != DUET_SERVER_FAILED)
        srv->state = DUET_SERVER_STOPPED;
    pthread_cond_signal(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    if (srv->thread_started)
        pthread_join(srv->thread, NULL);
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
}

DUET_API void duet_server_destroy(duet_server *srv)
{
    if (!srv)
        return;
    duet_server_stop(srv);
    duet_engine_destroy(srv->engine);
    duet_tokenizer_destroy(srv->tok);
    pthread_cond_destroy(&srv->wake);
    pthread_mutex_destroy(&srv->lock);
    free(srv->model_name);
    free(srv->tokenizer_dir);
    free(srv);
}
