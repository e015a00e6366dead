/*
 * duet-server — the OpenAI-compatible HTTP server (DESIGN §9, docs/server.md).
 *
 * Loads and validates the configuration (file, then --set, then --host / --port / --api-key /
 * --tokenizer / --per-request-spec-decode-metrics, which are server.* keys), starts the server
 * (duet/server.h): the listener first, printing "listening on http://HOST:PORT" on standard error
 * at once, then the engine loads in the background (/health answers 503 until it is ready; "ready"
 * is printed then). SIGINT / SIGTERM stop it: no new connections, what runs is aborted, exit 0. A
 * failed load exits 1.
 */
#include "build_config.h"

#include "cli.h"

#include <duet/config.h>
#include <duet/server.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: duet-server --config FILE [options]\n"
            "\n"
            "Serves the configured model over an OpenAI-compatible HTTP API: /v1/completions,\n"
            "/v1/chat/completions (stream: true for Server-Sent Events), /v1/models, /health,\n"
            "/tokenize, /detokenize (docs/server.md).\n"
            "\n"
            "  -c, --config FILE     libconfig file (docs/configuration.md)\n"
            "  -s, --set KEY=VALUE   override a key (repeatable), e.g. --set server.max_queue=64\n"
            "      --host H          address to listen on (server.host, default 127.0.0.1)\n"
            "      --port P          TCP port, 0 = any free one (server.port, default 8000)\n"
            "      --api-key KEY     require 'Authorization: Bearer KEY' (server.api_key)\n"
            "      --tokenizer DIR   tokenizer folder (server.tokenizer; default: the model's)\n"
            "      --per-request-spec-decode-metrics LEVEL\n"
            "                        none or summary: each answer's own speculative counts\n"
            "                        (server.per_request_spec_decode_metrics, default none)\n"
            "  -h, --help            this text\n"
            "  -V, --version         the version\n"
            "\n"
            "Prints 'listening on http://HOST:PORT' on standard error once it listens and\n"
            "'ready' once the model is loaded. SIGINT / SIGTERM: stop accepting, abort the\n"
            "requests in flight, exit 0. Exit status: 0 stopped by a signal, 1 a configuration\n"
            "or load error, 2 bad usage.\n");
}

struct options {
    const char *config_path;
    char **sets; /* [n_sets] "key=value", the flags' included (owned when from a flag) */
    bool *owned; /* [n_sets] */
    int n_sets;
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, 's'},
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"api-key", required_argument, NULL, 'k'},
    {"tokenizer", required_argument, NULL, 't'},
    {"per-request-spec-decode-metrics", required_argument, NULL, 'm'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* A flag standing for KEY: "KEY=VALUE", the value quoted (so that any text is a string) when
 * quote is true. */
static bool add_flag_set(struct options *o, const char *key, const char *value, bool quote)
{
    size_t n = strlen(key) + 2 * strlen(value) + 4;
    char *s = malloc(n), *w;

    if (!s)
        return false;
    w = s + sprintf(s, "%s=%s", key, quote ? "\"" : "");
    for (const char *v = value; *v; v++) {
        if (*v == '"' || *v == '\\')
            *w++ = '\\';
        *w++ = *v;
    }
    strcpy(w, quote ? "\"" : "");
    o->owned[o->n_sets] = true;
    o->sets[o->n_sets++] = s;
    return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    unsigned long long port;
    char num[24];
    int c;

    o->sets = calloc((size_t)argc, sizeof(*o->sets));
    o->owned = calloc((size_t)argc, sizeof(*o->owned));
    if (!o->sets || !o->owned)
        return EXIT_FAILURE;
    while ((c = getopt_long(argc, argv, "c:s:hV", long_options, NULL)) != -1) {
        bool ok = true;

        switch (c) {
        case 'c':
            o->config_path = optarg;
            break;
        case 's':
            o->sets[o->n_sets++] = optarg;
            break;
        case 'H':
            ok = add_flag_set(o, "server.host", optarg, true);
            break;
        case 'p':
            if (!duet__cli_parse_u64(optarg, 0, 65535, &port)) {
                fprintf(stderr, "duet-server: invalid value for --port: '%s'\n", optarg);
                return EXIT_USAGE;
            }
            snprintf(num, sizeof(num), "%llu", port);
            ok = add_flag_set(o, "server.port", num, false);
            break;
        case 'k':
            ok = add_flag_set(o, "server.api_key", optarg, true);
            break;
        case 't':
            ok = add_flag_set(o, "server.tokenizer", optarg, true);
            break;
        case 'm':
            ok = add_flag_set(o, "server.per_request_spec_decode_metrics", optarg, true);
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("duet-server %s\n", PACKAGE_VERSION);
            return EXIT_SUCCESS;
        default:
            fprintf(stderr, "Try 'duet-server --help'.\n");
            return EXIT_USAGE;
        }
        if (!ok)
            return EXIT_FAILURE;
    }
    if (optind < argc) {
        fprintf(stderr, "duet-server: unexpected argument '%s'\nTry 'duet-server --help'.\n",
                argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->config_path) {
        fprintf(stderr, "duet-server: --config FILE is required\nTry 'duet-server --help'.\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* The file, then prefix caching on unless the file says otherwise (a server's requests share
 * system prompts and chat turns; vllm serve's default too), then --set and the flags. */
static duet_status load_config(const struct options *o, duet_config *cfg)
{
    duet_status st = duet_config_load_file(cfg, o->config_path);

    if (!st && !duet_config_is_set(cfg, "cache.prefix_caching"))
        st = duet_config_set(cfg, "cache.prefix_caching=true");
    for (int i = 0; !st && i < o->n_sets; i++)
        st = duet_config_set(cfg, o->sets[i]);
    if (!st)
        st = duet_config_validate(cfg);
    if (st)
        fprintf(stderr, "duet-server: %s\n", duet_config_error(cfg));
    return st;
}

/* Waits for SIGINT / SIGTERM (blocked in every thread, taken here) or a failed load. */
static int wait_for_end(duet_server *srv, const sigset_t *stop)
{
    bool said_ready = false;

    for (;;) {
        struct timespec slice = {0, 100 * 1000 * 1000};
        char err[1024];
        duet_server_state st = duet_server_state_get(srv, err, sizeof(err));
        int sig;

        if (st == DUET_SERVER_FAILED) {
            fprintf(stderr, "duet-server: %s\n", err);
            return EXIT_FAILURE;
        }
        if (st == DUET_SERVER_READY && !said_ready) {
            fprintf(stderr, "duet-server: ready\n");
            said_ready = true;
        }
        sig = sigtimedwait(stop, NULL, &slice);
        if (sig == SIGINT || sig == SIGTERM) {
            fprintf(stderr, "duet-server: signal %d: stopping\n", sig);
            return EXIT_SUCCESS;
        }
    }
}

static int serve(const struct options *o)
{
    duet_config *cfg = NULL;
    duet_server *srv = NULL;
    sigset_t stop;
    char err[1024];
    int rc = EXIT_FAILURE;

    if (duet_config_create(&cfg)) {
        fprintf(stderr, "duet-server: out of memory\n");
        return EXIT_FAILURE;
    }
    if (load_config(o, cfg))
        goto out_config;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* inherited by every thread started below */
    if (duet_server_start(cfg, &srv, err, sizeof(err))) {
        fprintf(stderr, "duet-server: %s\n", err);
        goto out_config;
    }
    fprintf(stderr, "duet-server: prefix caching %s\n",
            duet_config_settings(cfg)->cache.prefix_caching ? "on" : "off");
    fprintf(stderr, "duet-server: listening on http://%s:%u\n",
            duet_config_settings(cfg)->server.host, duet_server_port(srv));
    rc = wait_for_end(srv, &stop);
    duet_server_destroy(srv);
out_config:
    duet_config_destroy(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    int rc = parse_args(argc, argv, &o);

    if (rc < 0)
        rc = serve(&o);
    for (int i = 0; i < o.n_sets; i++)
        if (o.owned[i])
            free(o.sets[i]);
    free(o.sets);
    free(o.owned);
    return rc;
}
