/*
 * server-int.h — the parts of duet-server (duet/server.h, docs/server.md) and how they call each
 * other:
 *
 *   request.c   JSON text of a request body ─► struct duet__srv_request, or an OpenAI error
 *               (pure: no tokenizer, no engine; fuzz/fuzz_server_request.c drives it)
 *   server.c    the listener (libmicrohttpd, a thread per connection), routing, auth, bodies,
 *               the answers of /health, /v1/models, /tokenize, /detokenize, errors
 *   generate.c  the completions endpoints: prompts to ids, a job queued for the engine thread,
 *               the wait for its end (or its stream of chunks), the JSON and SSE answers
 *   loop.c      the engine thread: loads tokenizer and engine, drains the queue into the engine,
 *               steps, detokenizes, matches stop strings, wakes the waiting handlers
 *
 * One mutex (srv->lock) guards the queue and every job's shared state; the engine itself is
 * touched only by the engine thread.
 */
#ifndef DUET_SERVER_INT_H
#define DUET_SERVER_INT_H

#include <duet/config.h>
#include <duet/duet.h>
#include <duet/server.h>
#include <duet/tokenizer.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- request.c ------------------------------------------------------------------------------ */

/* An error answer: HTTP status and the fields of OpenAI's {"error": {...}} object. */
struct duet__srv_error {
    int status;        /* HTTP status: 400, 404, ... */
    const char *type;  /* "invalid_request_error", ... (static) */
    const char *code;  /* "model_not_found", ... (static) or NULL */
    char param[64];    /* the request field at fault, "" for none */
    char message[512]; /* what is wrong, for people */
};

/* One prompt of a completions request: text to encode, or token ids. */
struct duet__srv_prompt {
    char *text; /* NUL-terminated; NULL when ids were given */
    size_t text_len;
    int32_t *ids; /* [n_ids] when text is NULL */
    uint32_t n_ids;
};

enum duet__srv_kind {
    DUET__SRV_COMPLETIONS, /* POST /v1/completions */
    DUET__SRV_CHAT,        /* POST /v1/chat/completions */
    DUET__SRV_TOKENIZE,    /* POST /tokenize */
    DUET__SRV_DETOKENIZE,  /* POST /detokenize */
};

/* A parsed request body; every pointer is owned (duet__srv_request_fini). */
struct duet__srv_request {
    enum duet__srv_kind kind;
    char *model;                      /* "model", NULL when absent */
    struct duet__srv_prompt *prompts; /* [n_prompts]: completions, tokenize, detokenize (ids) */
    uint32_t n_prompts;
    char *messages_json; /* chat (and tokenize with messages): a JSON array, contents flattened */
    char *chat_kwargs_json;     /* chat_template_kwargs as a JSON object, or NULL */
    char *chat_template;        /* vLLM's "chat_template", or NULL */
    bool add_generation_prompt; /* default true */
    bool add_special_tokens;    /* completions and tokenize-prompt: true; chat: false */
    bool add_special_given;     /* the request set add_special_tokens */
    int64_t max_tokens;         /* max_tokens / max_completion_tokens; -1: until max_model_len */
    double temperature;         /* default 1, as OpenAI and vLLM */
    double top_p;               /* (0, 1], default 1 */
    int32_t top_k;              /* 0 = off (-1 given maps to 0) */
    double min_p;               /* [0, 1] */
    uint64_t seed;
    bool has_seed;
    char **stop; /* [n_stop] non-empty strings */
    uint32_t n_stop;
    size_t max_stop_len;     /* bytes of the longest stop string */
    int32_t *stop_token_ids; /* [n_stop_token_ids] */
    uint32_t n_stop_token_ids;
    bool ignore_eos;
    bool stream;
    bool include_usage;        /* stream_options.include_usage */
    uint32_t n;                /* choices per prompt, default 1 */
    int32_t logprobs;          /* top log-probabilities per token: completions' "logprobs", chat's
                                  "top_logprobs" with "logprobs": true; -1: none */
    bool echo;                 /* completions: the prompt leads each choice's text (and logprobs) */
    bool chat_logprobs;        /* chat: "logprobs": true */
    int32_t priority;          /* vLLM's request priority, default 0 */
    double presence_penalty;   /* [-2, 2], default 0 */
    double frequency_penalty;  /* [-2, 2], default 0 */
    double repetition_penalty; /* > 0, default 1 */
    duet_token_bias *logit_bias; /* [n_logit_bias] "logit_bias": distinct ids, biases in
                                    [-100, 100]; ids checked against the vocabulary later */
    uint32_t n_logit_bias;
};

/* Reads LEN bytes of JSON text as a request of KIND. On success *OUT is filled and owned by the
 * caller (duet__srv_request_fini); on failure *ERR says why (status 400) and *OUT holds
 * nothing. Pure: the same input always gives the same answer. */
bool duet__srv_request_parse(const char *json, size_t len, enum duet__srv_kind kind,
                             struct duet__srv_request *out, struct duet__srv_error *err);
void duet__srv_request_fini(struct duet__srv_request *r);

/* Copies at most SIZE - 1 bytes of SRC into DST without cutting a UTF-8 character. */
void duet__srv_utf8_copy(char *dst, size_t size, const char *src);

/* Fills *ERR with STATUS, TYPE, CODE, PARAM (may be NULL) and a printf message. Returns false. */
bool duet__srv_fail(struct duet__srv_error *err, int status, const char *code, const char *param,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- the server and its jobs (loop.c, generate.c, server.c) --------------------------------- */

struct MHD_Daemon;
struct MHD_Connection;

/* A Prometheus histogram over one of metrics.c's bucket lists (vLLM's boundaries). */
#define DUET__SRV_HIST_BUCKETS 24
struct duet__srv_hist {
    uint64_t count[DUET__SRV_HIST_BUCKETS + 1]; /* [b]: observations in bucket b alone (not
                                                   cumulative); the last is +Inf */
    double sum;                                 /* seconds */
    uint64_t n;                                 /* observations */
};

/* The log-probabilities of a choice's tokens (engine thread writes, handler reads, under the
 * lock): every generated token, the stop token included, and with echo its prompt's. */
struct duet__srv_lp {
    int32_t *ids;             /* [cap] generated tokens */
    float *vals;              /* [cap] their log-probabilities */
    duet_logprob *top;        /* [cap][stride] the engine's top list of each */
    size_t *end;              /* [cap] bytes of the choice's text once the token was decoded */
    uint32_t n, cap;          /* tokens */
    uint32_t stride;          /* entries of a top row: max(req.logprobs, 1) */
    uint32_t sent;            /* tokens streamed (handler) */
    float *prompt_vals;       /* [n_prompt] with echo: the prompt's (NAN first), or NULL */
    duet_logprob *prompt_top; /* [n_prompt][stride] */
};

/* One sequence of one prompt of a job (choice p * n + seq; the first of a prompt holds its
 * engine request). Written by the engine thread under srv->lock until
 * the choice is done; read by the handler under the lock. */
struct duet__srv_choice {
    int32_t *prompt; /* [n_prompt], owned */
    uint32_t n_prompt;
    uint64_t engine_id;     /* shared by the n choices of one prompt */
    uint32_t seq;           /* its sequence in that engine request: index % n */
    bool added;             /* duet_engine_add_request() accepted it */
    duet_detok *detok;      /* owned; engine thread only */
    char *text;             /* [len] visible text so far (stop strings cut off), owned */
    size_t len, cap;        /* bytes */
    size_t sent;            /* bytes already streamed (handler) */
    uint32_t n_tokens;      /* tokens generated */
    const char *finish;     /* "stop", "length", "abort"; NULL while it runs */
    bool finish_sent;       /* the stream carried its finish_reason (handler) */
    struct duet__srv_lp lp; /* with req.logprobs >= 0 */
    char *echo;             /* [echo_len] with req.echo: the prompt's text, owned */
    size_t echo_len;
    bool echo_sent;                          /* the stream carried the echo (handler) */
    double lp_chars;                         /* text_offset of the next streamed token (handler) */
    uint32_t drafts, draft_tokens, accepted; /* its request's speculative counts (engine
                                                output; the same in its n sequences) */
    uint32_t accepted_at[DUET_MAX_SPEC_TOKENS]; /* [j]: accepted at lookahead position j */
};

enum duet__srv_job_state {
    DUET__SRV_JOB_QUEUED,  /* in srv->queue: not given to the engine yet */
    DUET__SRV_JOB_RUNNING, /* in the engine */
    DUET__SRV_JOB_DONE,    /* every choice finished, or the job failed: the engine is done */
};

/* A generating request. Two references: the handler's and the engine thread's (while the job is
 * queued or running); the last one to let go frees it (duet__srv_job_release). */
struct duet__srv_job {
    struct duet__srv_request req;     /* parsed; prompts no longer needed after encoding */
    struct duet__srv_choice *choices; /* [n_choices] */
    uint32_t n_choices;
    uint32_t max_tokens; /* resolved */
    pthread_cond_t cond; /* signalled when its state or text changes */
    enum duet__srv_job_state state;
    bool failed;                /* DONE without running: err says why */
    struct duet__srv_error err; /* with failed */
    bool cancel;                /* the client went away: abort (handler sets, engine reads) */
    uint32_t n_done;            /* choices finished */
    int refs;
    double deadline;            /* monotonic seconds; 0 = none */
    double arrival;             /* monotonic seconds it was queued (latency histograms) */
    struct duet__srv_job *next; /* in srv->queue or srv->active */
    char id[48];                /* "cmpl-..." / "chatcmpl-..." */
    long long created;          /* Unix seconds */
    bool usage_sent, done_sent; /* stream progress (handler) */
    bool role_sent;             /* chat stream: the first chunk went out (handler) */
};

struct duet_server {
    const duet_config *cfg;
    const duet_settings *set;
    char *model_name;    /* served_model_name, or the model folder's basename */
    char *tokenizer_dir; /* server.tokenizer, or the model folder */
    struct MHD_Daemon *mhd;
    uint16_t port;
    pthread_t thread; /* the engine thread */
    bool thread_started;
    bool stopped;

    pthread_mutex_t lock; /* guards everything below, and every job's shared fields */
    pthread_cond_t wake;  /* the engine thread waits on it when idle */
    duet_server_state state;
    char error[1024];                         /* with DUET_SERVER_FAILED */
    bool stopping;                            /* duet_server_stop() began */
    struct duet__srv_job *queue, *queue_tail; /* QUEUED jobs, in arrival order */
    struct duet__srv_job *active;             /* RUNNING jobs */
    uint32_t n_inflight;                      /* choices queued or running (server.max_queue) */
    duet_engine_metrics metrics; /* the engine's, copied by the engine thread after each pass */
    struct duet__srv_hist ttft;  /* seconds from arrival to a choice's first token */
    struct duet__srv_hist e2e;   /* seconds from arrival to a choice's finish */
    uint64_t next_job;           /* for ids */

    /* set by the engine thread before state turns READY; read-only after */
    duet_tokenizer *tok;
    duet_engine *engine;
    uint32_t max_model_len;
    uint32_t vocab_size;
    uint32_t num_spec_tokens; /* speculative.num_tokens; 0 without a draft */
};

/* loop.c */
void *duet__srv_engine_main(void *arg);
void duet__srv_job_release(duet_server *srv, struct duet__srv_job *job); /* under srv->lock */

/* logprobs.c: the "logprobs" of choice ch for its tokens [from, to) (with_prompt: a completion's
 * echoed prompt first); chars is the text_offset of the first token and is advanced. Under
 * srv->lock; the caller owns the result. */
struct json_t *duet__srv_logprobs_json(duet_server *srv, const struct duet__srv_job *job,
                                       const struct duet__srv_choice *ch, uint32_t from,
                                       uint32_t to, bool with_prompt, double *chars);
double duet__srv_now(void); /* monotonic seconds */

/* server.c: answers */
int duet__srv_reply_json(struct MHD_Connection *c, int status, char *body); /* takes body */
int duet__srv_reply_error(struct MHD_Connection *c, const struct duet__srv_error *err);
bool duet__srv_client_gone(struct MHD_Connection *c);

/* metrics.c: GET /metrics, Prometheus text with vLLM's names */
int duet__srv_reply_metrics(duet_server *srv, struct MHD_Connection *c);
/* Records a choice's first token / its end, SECONDS after its job's arrival; under srv->lock. */
void duet__srv_observe_ttft(duet_server *srv, double seconds);
void duet__srv_observe_e2e(duet_server *srv, double seconds);

/* generate.c: POST /v1/completions and /v1/chat/completions with a parsed request */
int duet__srv_generate(duet_server *srv, struct MHD_Connection *c, struct duet__srv_request *req);
/* The prompt ids of a chat request's messages (tokenize too); false with *err set. */
bool duet__srv_chat_ids(duet_server *srv, const struct duet__srv_request *req, int32_t **ids,
                        size_t *n, struct duet__srv_error *err);

#endif
