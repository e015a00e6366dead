/*
 * duet-run — the standalone driver (DESIGN §9).
 *
 * This version parses every flag, loads and validates the configuration (file plus --set
 * overrides), loads the target and draft plugins and checks them against the configuration. With
 * --check it prints the resolved configuration and each plugin's path, name, version, ABI and
 * capabilities, then exits 0. Generation itself needs the engine, which this version does not
 * have yet: without --check duet-run says so and exits with status 2.
 */
#include "config.h"

#include <duet/config.h>
#include <duet/loader.h>
#include <duet/plugin.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_USAGE = 2 };

struct options {
    const char *config_path;
    const char **sets; /* [n_sets] "key.path=value" */
    int n_sets;
    bool check;
    const char *prompt_ids; /* "1,2,3" */
    const char *prompts;    /* file, one comma-separated prompt per line */
    long max_tokens;
    double temperature;
    long top_k;
    double top_p;
    unsigned long long seed;
    bool ignore_eos;
    long logprobs;
    long prompt_logprobs;
    bool json;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: duet-run --config FILE [options]\n"
            "\n"
            "Runs speculative decoding (or plain decoding without a 'speculative' group) over\n"
            "prompts given as token ids.\n"
            "\n"
            "Configuration:\n"
            "  -c, --config FILE        libconfig file (docs/configuration.md)\n"
            "  -s, --set KEY=VALUE      override a key, e.g. --set cache.block_size=32\n"
            "                           (repeatable; applied after the file)\n"
            "      --check              print the resolved configuration and the plugins that\n"
            "                           would run (path, name, version, ABI, capabilities); exit\n"
            "Prompts:\n"
            "      --prompt-ids LIST    one prompt as comma-separated token ids: 1,2,3\n"
            "      --prompts FILE       one comma-separated prompt per line\n"
            "Sampling:\n"
            "      --max-tokens N       tokens to generate per request (default 16)\n"
            "      --temperature T      0 = greedy (default 0)\n"
            "      --top-k K            0 = off (default 0)\n"
            "      --top-p P            1 = off (default 1)\n"
            "      --seed S             request i is seeded with S + i (default 0)\n"
            "      --ignore-eos         do not stop at end-of-sequence tokens\n"
            "      --logprobs N         top-N log-probabilities of each generated token\n"
            "      --prompt-logprobs N  top-N log-probabilities of each prompt token\n"
            "Output:\n"
            "      --json               one JSON object per request, then a summary object\n"
            "  -h, --help               this text\n"
            "  -V, --version            the version\n"
            "\n"
            "Plugins named by target.worker / speculative.worker are searched in\n"
            "$DUET_PLUGIN_PATH, then plugin_dir, then %s.\n"
            "Exit status: 0 success, 1 a configuration, plugin or run error, 2 bad usage.\n",
            duet_plugin_install_dir());
}

/* Parses a whole decimal number in [lo, hi]; false on anything else. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* A comma-separated list of non-negative token ids; at least one. */
static bool valid_id_list(const char *s)
{
    const char *p = s;

    do {
        char *end;
        long v;

        errno = 0;
        v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ','))
            return false;
        p = *end ? end + 1 : end;
    } while (*p);
    return p[-1] != ',';
}

enum {
    OPT_CHECK = 256,
    OPT_PROMPT_IDS,
    OPT_PROMPTS,
    OPT_MAX_TOKENS,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_SEED,
    OPT_IGNORE_EOS,
    OPT_LOGPROBS,
    OPT_PROMPT_LOGPROBS,
    OPT_JSON,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"set", required_argument, NULL, 's'},
    {"check", no_argument, NULL, OPT_CHECK},
    {"prompt-ids", required_argument, NULL, OPT_PROMPT_IDS},
    {"prompts", required_argument, NULL, OPT_PROMPTS},
    {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"top-k", required_argument, NULL, OPT_TOP_K},
    {"top-p", required_argument, NULL, OPT_TOP_P},
    {"seed", required_argument, NULL, OPT_SEED},
    {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
    {"logprobs", required_argument, NULL, OPT_LOGPROBS},
    {"prompt-logprobs", required_argument, NULL, OPT_PROMPT_LOGPROBS},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static const char *option_name(int val)
{
    for (const struct option *opt = long_options; opt->name; opt++)
        if (opt->val == val)
            return opt->name;
    return "?";
}

/* Handles one sampling or prompt option; false when its value is bad. */
static bool parse_run_option(int c, const char *arg, struct options *o)
{
    long seed_hi;

    switch (c) {
    case OPT_PROMPT_IDS:
        o->prompt_ids = arg;
        return valid_id_list(arg);
    case OPT_PROMPTS:
        o->prompts = arg;
        return true;
    case OPT_MAX_TOKENS:
        return parse_long(arg, 1, INT32_MAX, &o->max_tokens);
    case OPT_TEMPERATURE:
        return parse_double(arg, 0.0, 1e6, &o->temperature);
    case OPT_TOP_K:
        return parse_long(arg, 0, INT32_MAX, &o->top_k);
    case OPT_TOP_P:
        return parse_double(arg, 0.0, 1.0, &o->top_p) && o->top_p > 0.0;
    case OPT_SEED:
        if (!parse_long(arg, 0, LONG_MAX, &seed_hi))
            return false;
        o->seed = (unsigned long long)seed_hi;
        return true;
    case OPT_LOGPROBS:
        return parse_long(arg, 0, 1024, &o->logprobs);
    case OPT_PROMPT_LOGPROBS:
        return parse_long(arg, 0, 1024, &o->prompt_logprobs);
    }
    return false;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct options *o)
{
    int c;

    *o = (struct options){.max_tokens = 16, .top_p = 1.0};
    o->sets = calloc((size_t)argc, sizeof(*o->sets));
    if (!o->sets)
        return EXIT_FAILURE;
    while ((c = getopt_long(argc, argv, "c:s:hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config_path = optarg;
            break;
        case 's':
            o->sets[o->n_sets++] = optarg;
            break;
        case OPT_CHECK:
            o->check = true;
            break;
        case OPT_IGNORE_EOS:
            o->ignore_eos = true;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("duet-run %s (plugin ABI %u.%u)\n", PACKAGE_VERSION, DUET_ABI_MAJOR,
                   DUET_ABI_MINOR);
            return EXIT_SUCCESS;
        case '?':
            fprintf(stderr, "Try 'duet-run --help'.\n");
            return EXIT_USAGE;
        default:
            if (!parse_run_option(c, optarg, o)) {
                fprintf(stderr, "duet-run: invalid value for --%s: '%s'\n", option_name(c), optarg);
                return EXIT_USAGE;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "duet-run: unexpected argument '%s'\nTry 'duet-run --help'.\n",
                argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->config_path) {
        fprintf(stderr, "duet-run: --config FILE is required\nTry 'duet-run --help'.\n");
        return EXIT_USAGE;
    }
    return -1;
}

static duet_status load_config(const struct options *o, duet_config *cfg)
{
    duet_status st = duet_config_load_file(cfg, o->config_path);

    for (int i = 0; !st && i < o->n_sets; i++)
        st = duet_config_set(cfg, o->sets[i]);
    if (!st)
        st = duet_config_validate(cfg);
    if (st)
        fprintf(stderr, "duet-run: %s\n", duet_config_error(cfg));
    return st;
}

/* The worker roles a configuration asks for. */
struct role {
    const char *section; /* "target" or "speculative" */
    const char *label;   /* "target" or "draft" */
    duet_worker_role role;
    duet_plugin *plugin; /* loaded */
};

static void print_plugin(const struct role *r, const duet_config *cfg)
{
    const duet_worker_plugin *t = duet_plugin_table(r->plugin);
    char caps[256];
    char key[64];
    const char *worker = "";

    snprintf(key, sizeof(key), "%s.worker", r->section);
    duet_config_get_string(cfg, key, &worker);
    duet_caps_str(t->caps, caps, sizeof(caps));
    printf("%s: worker \"%s\"\n", r->label, worker);
    printf("  path:         %s\n", duet_plugin_path(r->plugin));
    printf("  name:         %s\n", t->name);
    printf("  version:      %s\n", t->version);
    printf("  abi:          %u.%u (fingerprint 0x%016llx; host %u.%u)\n", t->abi_major,
           t->abi_minor, (unsigned long long)t->fingerprint, DUET_ABI_MAJOR, DUET_ABI_MINOR);
    printf("  capabilities: %s\n", caps);
}

static int run(const struct options *o)
{
    struct role roles[2] = {
        {.section = "target", .label = "target", .role = DUET_ROLE_TARGET},
        {.section = "speculative", .label = "draft", .role = DUET_ROLE_DRAFT},
    };
    int n_roles = 1, rc = EXIT_FAILURE;
    duet_log_level level = DUET_LOG_WARN;
    const char *plugin_dir = NULL, *level_name = "warn";
    duet_config *cfg = NULL;
    duet_host *host = NULL;
    char err[1024];

    if (duet_config_create(&cfg)) {
        fprintf(stderr, "duet-run: out of memory\n");
        return EXIT_FAILURE;
    }
    if (load_config(o, cfg))
        goto out_config;
    duet_config_get_string(cfg, "plugin_dir", &plugin_dir);
    duet_config_get_string(cfg, "log_level", &level_name);
    duet_log_level_parse(level_name, &level);
    if (duet_host_create(cfg, level, &host)) {
        fprintf(stderr, "duet-run: out of memory\n");
        goto out_config;
    }
    if (duet_config_has_group(cfg, "speculative"))
        n_roles = 2;
    for (int i = 0; i < n_roles; i++) {
        char key[64];
        const char *worker = "";

        snprintf(key, sizeof(key), "%s.worker", roles[i].section);
        duet_config_get_string(cfg, key, &worker);
        if (duet_plugin_load(worker, plugin_dir, duet_host_services_of(host), &roles[i].plugin, err,
                             sizeof(err)) ||
            duet_plugin_check_settings(roles[i].plugin, cfg, roles[i].section, roles[i].role, err,
                                       sizeof(err))) {
            fprintf(stderr, "duet-run: %s: %s\n", key, err);
            goto out_plugins;
        }
    }
    if (!o->check) {
        fprintf(stderr, "duet-run: generation needs the duet engine, which this version of duet "
                        "does not include yet; --check validates the configuration and plugins\n");
        rc = EXIT_USAGE;
        goto out_plugins;
    }
    printf("# resolved configuration\n");
    if (duet_config_print(cfg, stdout))
        goto out_plugins;
    printf("\n");
    for (int i = 0; i < n_roles; i++)
        print_plugin(&roles[i], cfg);
    printf("check: ok\n");
    rc = fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;

out_plugins:
    for (int i = 0; i < n_roles; i++)
        duet_plugin_unload(roles[i].plugin);
    duet_host_destroy(host);
out_config:
    duet_config_destroy(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o;
    int rc = parse_args(argc, argv, &o);

    if (rc < 0)
        rc = run(&o);
    free(o.sets);
    return rc;
}
