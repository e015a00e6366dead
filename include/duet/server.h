/*
 * duet/server.h — duet-server's serving loop as a library (DESIGN §9, docs/server.md): an
 * OpenAI-compatible HTTP server over one engine, for a host runtime to embed.
 *
 *     duet_server_start(cfg, &srv, err, sizeof(err));   listens at once; loads in the background
 *     duet_server_port(srv);                            the bound port (server.port = 0: any)
 *     duet_server_state(srv, ...) == DUET_SERVER_READY  /health answers 200 from then on
 *     duet_server_stop(srv);                            stop accepting, abort what runs, join
 *     duet_server_destroy(srv);
 *
 * The "server" group of the configuration (docs/configuration.md) sets the address, the API key,
 * the served model name, the tokenizer folder and the limits. Endpoints: POST /v1/completions,
 * POST /v1/chat/completions (both with SSE streaming), GET /v1/models, GET /health,
 * GET /metrics (Prometheus, vLLM's names), POST /tokenize, POST /detokenize.
 *
 * Threads: libmicrohttpd runs one thread per connection; one engine thread loads the tokenizer
 * and the engine, then steps the engine for every request. The functions below may be called
 * from any one thread (not concurrently with duet_server_stop / _destroy).
 */
#ifndef DUET_SERVER_H
#define DUET_SERVER_H

#include <duet/config.h>
#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct duet_server duet_server;

typedef enum duet_server_state {
    DUET_SERVER_LOADING = 0, /* the tokenizer and the engine are loading: /health answers 503 */
    DUET_SERVER_READY = 1,   /* serving */
    DUET_SERVER_FAILED = 2,  /* loading failed, or a step failed: the message says why */
    DUET_SERVER_STOPPED = 3, /* duet_server_stop() was called */
} duet_server_state;

/*
 * Binds server.host:server.port and starts serving HTTP, then loads the tokenizer and the engine
 * on the engine thread. cfg must be validated and outlive the server, unchanged. On failure (the
 * address cannot be bound, out of memory) *out is NULL and err[err_size] says why. The caller
 * owns *out and releases it with duet_server_destroy().
 */
DUET_API duet_status duet_server_start(const duet_config *cfg, duet_server **out, char *err,
                                       size_t err_size);

/* The TCP port the server listens on. */
DUET_API uint16_t duet_server_port(const duet_server *srv);

/* The state now; with DUET_SERVER_FAILED, err[err_size] (may be NULL) receives the message. */
DUET_API duet_server_state duet_server_state_get(const duet_server *srv, char *err,
                                                 size_t err_size);

/* Stops accepting connections, aborts every request (streams end with finish_reason "abort",
 * waiting requests answer 503), closes the connections and joins the threads. The time it takes
 * is bounded by one engine step (or by loading, when it has not finished). Idempotent. */
DUET_API void duet_server_stop(duet_server *srv);

/* Stops the server if needed and releases it. NULL is allowed. */
DUET_API void duet_server_destroy(duet_server *srv);

#ifdef __cplusplus
}
#endif

#endif /* DUET_SERVER_H */
