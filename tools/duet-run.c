/*
 * duet-run — the standalone driver (DESIGN §9).
 *
 * This version parses every flag, loads and validates the configuration (file plus --set
 * overrides), loads the target and draft plugins and checks them against the configuration. With
 * --check it prints the resolved configuration and each plugin's path, name, version, ABI and
 * capabilities, then exits 0. Without --check it reads the prompts — token ids (--prompt-ids,
 * --prompts), or text (--prompt, --prompts-text) or one conversation (--chat) encoded with the
 * tokenizer of the target model's folder or of --tokenizer DIR (run_text.c) — builds the engine
 * (duet/duet.h), checks that the tokenizer's ids fit the model's vocabulary, queues one request
 * per prompt (the tokenizer's EOS ids as stop tokens, unless --ignore-eos) and steps the engine
 * until every request finished, printing each request's generated ids, and their text when a
 * tokenizer is loaded, as it finishes (or, with --json, one object per request), then a summary.
 * On SIGINT / SIGTERM it aborts the rest, prints them (finish "abort", with the tokens they had)
 * and the summary, and exits with 128 + the signal.
 */
#include "build_config.h"

#include "cli.h"
#include "run_text.h"

#include <duet/config.h>
#include <duet/duet.h>
#include <duet/loader.h>
#include <duet/plugin.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EXIT_USAGE = 2 };

struct options {
    const char *config_path;
    const char **sets; /* [n_sets] "key.path=value" */
    int n_sets;
    bool check;
    bool no_speculative;      /* drop the "speculative" group: the same run without the draft */
    const char *prompt_ids;   /* "1,2,3" */
    const char *prompts;      /* file, one comma-separated prompt per line */
    const char *prompt;       /* --prompt TEXT */
    const char *prompts_text; /* --prompts-text FILE: one text prompt per line */
    const char *chat;         /* --chat FILE: a JSON array of messages */
    const char *tokenizer;    /* --tokenizer DIR; NULL: the target model's folder */
    long max_tokens;
    double temperature;
    long top_k;
    double top_p;
    double presence_penalty;   /* [-2, 2] */
    double frequency_penalty;  /* [-2, 2] */
    double repetition_penalty; /* > 0, 1 = off */
    unsigned long long seed;
    bool ignore_eos;
    long logprobs;
    long prompt_logprobs;
    long n; /* --n: sequences per prompt */
    bool json;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: duet-run --config FILE [options]\n"
            "\n"
            "Runs speculative decoding (or plain decoding without a 'speculative' group) over\n"
            "prompts given as token ids or as text.\n"
            "\n"
            "Configuration:\n"
            "  -c, --config FILE        libconfig file (docs/configuration.md)\n"
            "  -s, --set KEY=VALUE      override a key, e.g. --set cache.block_size=32\n"
            "                           (repeatable; applied after the file). Among them:\n"
            "                           target.cpus / speculative.cpus = \"0-3,8\": a CPU\n"
            "                           worker's threads pinned there (disjoint lists are two\n"
            "                           devices: drafting overlaps verification);\n"
            "                           speculative.acceptance = \"synthetic\" with\n"
            "                           speculative.synthetic_rate = A: each proposal accepted\n"
            "                           with probability A (benchmarks; the summary says so)\n"
            "      --check              print the resolved configuration and the plugins that\n"
            "                           would run (path, name, version, ABI, capabilities,\n"
            "                           details such as the CPU kernels chosen); exit\n"
            "      --no-speculative     run the same configuration without the draft: the\n"
            "                           'speculative' group is dropped (after --set)\n"
            "Prompts (token ids, or text; not both):\n"
            "      --prompt-ids LIST    one prompt as comma-separated token ids: 1,2,3\n"
            "      --prompts FILE       one comma-separated prompt per line\n"
            "      --prompt TEXT        one prompt as text (encoded with BOS)\n"
            "      --prompts-text FILE  one text prompt per line (blank lines skipped); a line\n"
            "                           starting with '\"' is a JSON string, which may hold \\n\n"
            "      --chat FILE          one conversation: a JSON array of {\"role\", \"content\"}\n"
            "                           messages, rendered with the tokenizer's chat template\n"
            "                           (generation prompt added) and encoded without BOS\n"
            "      --tokenizer DIR      the folder of tokenizer.json (default: the target\n"
            "                           model's folder, or a GGUF file's, when it has one); with\n"
            "                           a tokenizer the output carries the generated text and\n"
            "                           its EOS ids stop a request too\n"
            "Sampling:\n"
            "      --max-tokens N       tokens to generate per request (default 16)\n"
            "      --temperature T      0 = greedy (default 0)\n"
            "      --top-k K            0 = off (default 0)\n"
            "      --top-p P            1 = off (default 1)\n"
            "      --presence-penalty X [-2, 2]: subtracted once from every generated token\n"
            "                           (default 0)\n"
            "      --frequency-penalty X\n"
            "                           [-2, 2]: subtracted per occurrence in the output\n"
            "                           (default 0)\n"
            "      --repetition-penalty X\n"
            "                           > 0: divides positive logits of prompt and generated\n"
            "                           tokens, multiplies negative ones (default 1: off)\n"
            "      --seed S             request i is seeded with S + i x n; its sequence j\n"
            "                           draws as S + i x n + j (default 0)\n"
            "      --n N                sequences sampled from each prompt (default 1): the\n"
            "                           prompt is computed once; each sequence is printed\n"
            "                           (\"sequence\" in --json) when its request finishes\n"
            "      --ignore-eos         do not stop at end-of-sequence tokens (the model's\n"
            "                           and the tokenizer's)\n"
            "      --logprobs N         top-N log-probabilities of each generated token\n"
            "      --prompt-logprobs N  top-N log-probabilities of each prompt token\n"
            "Output (each request printed when it finishes, then a summary):\n"
            "      --json               one JSON object per request, then a summary object\n"
            "                           (with a tokenizer, \"text\" beside \"ids\")\n"
            "  -h, --help               this text\n"
            "  -V, --version            the version\n"
            "\n"
            "Plugins named by target.worker / speculative.worker are searched in\n"
            "$DUET_PLUGIN_PATH, then plugin_dir, then %s.\n"
            "SIGINT / SIGTERM abort the requests still running; they are printed (finish\n"
            "\"abort\") before the summary.\n"
            "Exit status: 0 success, 1 a configuration, plugin or run error (or a request\n"
            "failed by the model), 2 bad usage, 128 + N stopped by signal N.\n",
            duet_plugin_install_dir());
}

/* A whole decimal number in [lo, hi] (lo >= 0); false on anything else. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    unsigned long long v;

    if (!duet__cli_parse_u64(s, (unsigned long long)lo, (unsigned long long)hi, &v))
        return false;
    *out = (long)v;
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
    OPT_N,
    OPT_JSON,
    OPT_NO_SPECULATIVE,
    OPT_PROMPT,
    OPT_PROMPTS_TEXT,
    OPT_CHAT,
    OPT_TOKENIZER,
    OPT_PRESENCE_PENALTY,
    OPT_FREQUENCY_PENALTY,
    OPT_REPETITION_PENALTY,
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
    {"n", required_argument, NULL, OPT_N},
    {"json", no_argument, NULL, OPT_JSON},
    {"no-speculative", no_argument, NULL, OPT_NO_SPECULATIVE},
    {"prompt", required_argument, NULL, OPT_PROMPT},
    {"prompts-text", required_argument, NULL, OPT_PROMPTS_TEXT},
    {"chat", required_argument, NULL, OPT_CHAT},
    {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
    {"presence-penalty", required_argument, NULL, OPT_PRESENCE_PENALTY},
    {"frequency-penalty", required_argument, NULL, OPT_FREQUENCY_PENALTY},
    {"repetition-penalty", required_argument, NULL, OPT_REPETITION_PENALTY},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

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
    case OPT_PROMPT:
        o->prompt = arg;
        return true;
    case OPT_PROMPTS_TEXT:
        o->prompts_text = arg;
        return true;
    case OPT_CHAT:
        o->chat = arg;
        return true;
    case OPT_TOKENIZER:
        o->tokenizer = arg;
        return *arg != '\0';
    case OPT_MAX_TOKENS:
        return parse_long(arg, 1, INT32_MAX, &o->max_tokens);
    case OPT_TEMPERATURE:
        return duet__cli_parse_double(arg, 0.0, 1e6, &o->temperature);
    case OPT_TOP_K:
        return parse_long(arg, 0, INT32_MAX, &o->top_k);
    case OPT_TOP_P:
        return duet__cli_parse_double(arg, 0.0, 1.0, &o->top_p) && o->top_p > 0.0;
    case OPT_PRESENCE_PENALTY:
        return duet__cli_parse_double(arg, -2.0, 2.0, &o->presence_penalty);
    case OPT_FREQUENCY_PENALTY:
        return duet__cli_parse_double(arg, -2.0, 2.0, &o->frequency_penalty);
    case OPT_REPETITION_PENALTY:
        return duet__cli_parse_double(arg, 0.0, 1e6, &o->repetition_penalty) &&
               o->repetition_penalty > 0.0;
    case OPT_SEED:
        if (!parse_long(arg, 0, LONG_MAX, &seed_hi))
            return false;
        o->seed = (unsigned long long)seed_hi;
        return true;
    case OPT_LOGPROBS:
        return parse_long(arg, 0, 1024, &o->logprobs);
    case OPT_PROMPT_LOGPROBS:
        return parse_long(arg, 0, 1024, &o->prompt_logprobs);
    case OPT_N:
        return parse_long(arg, 1, 1024, &o->n);
    }
    return false;
}

/* Prompt sources that cannot go together; -1 to go on, or the exit status. */
static int check_prompt_sources(const struct options *o)
{
    bool ids = o->prompt_ids || o->prompts, text = o->prompt || o->prompts_text;
    const char *what = NULL;

    if (o->chat && (ids || text))
        what = "--chat FILE is one conversation: it takes no other prompt option";
    else if (ids && text)
        what = "give prompts either as token ids (--prompt-ids, --prompts) or as text (--prompt, "
               "--prompts-text), not both";
    if (!what)
        return -1;
    fprintf(stderr, "duet-run: %s\nTry 'duet-run --help'.\n", what);
    return EXIT_USAGE;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct options *o)
{
    int c;

    *o = (struct options){.max_tokens = 16, .top_p = 1.0, .n = 1, .repetition_penalty = 1.0};
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
        case OPT_NO_SPECULATIVE:
            o->no_speculative = true;
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
                fprintf(stderr, "duet-run: invalid value for --%s: '%s'\n",
                        duet__cli_option_name(long_options, c), optarg);
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
    return check_prompt_sources(o);
}

static duet_status load_config(const struct options *o, duet_config *cfg)
{
    duet_status st = duet_config_load_file(cfg, o->config_path);

    for (int i = 0; !st && i < o->n_sets; i++)
        st = duet_config_set(cfg, o->sets[i]);
    if (!st && o->no_speculative)
        st = duet_config_drop_group(cfg, "speculative");
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
    if (DUET_ABI_HAS_FIELD(t, duet_worker_plugin, details) && t->details && *t->details)
        printf("  details:      %s\n", t->details);
}

/* ---- generation ------------------------------------------------------------------------- */

/* Appends the ids of a comma-separated list (already checked by valid_id_list()). */
static bool prompts_add(struct prompts *ps, const char *list)
{
    int32_t *ids = malloc((strlen(list) / 2 + 1) * sizeof(int32_t));
    const char *s = list;
    uint32_t n = 0;

    if (!ids)
        return false;
    while (*s) {
        char *end;
        ids[n++] = (int32_t)strtol(s, &end, 10);
        s = *end ? end + 1 : end;
    }
    return duet__prompts_push(ps, ids, n, NULL, 0);
}

/* Reads --prompts FILE: one comma-separated prompt per line; blank lines are skipped. */
static int prompts_read(const char *path, struct prompts *ps)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    unsigned lineno = 0;

    struct stat st;

    if (!f) {
        fprintf(stderr, "duet-run: --prompts %s: %s\n", path, strerror(errno));
        return EXIT_FAILURE;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "duet-run: --prompts %s: is a directory, not a file of prompts\n", path);
        fclose(f);
        return EXIT_FAILURE;
    }
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strlen(line) != (size_t)len) {
            fprintf(stderr, "duet-run: %s:%u: a NUL byte in the line\n", path, lineno);
            rc = EXIT_FAILURE;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (!valid_id_list(line)) {
            fprintf(stderr, "duet-run: %s:%u: not a comma-separated list of token ids\n", path,
                    lineno);
            rc = EXIT_FAILURE;
        } else if (!prompts_add(ps, line)) {
            rc = EXIT_FAILURE;
        }
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "duet-run: --prompts %s: reading after line %u: %s\n", path, lineno,
                strerror(errno));
        rc = EXIT_FAILURE;
    }
    free(line);
    fclose(f);
    return rc;
}

static void print_ids(const int32_t *ids, uint32_t n, const char *sep)
{
    for (uint32_t i = 0; i < n; i++)
        printf("%s%d", i ? sep : "", ids[i]);
}

static void json_float(double v)
{
    if (isfinite(v))
        printf("%.6g", v);
    else
        printf("null");
}

/* One {"id": logprob} map: the top n of row, and the chosen token when it is not among them
 * (vLLM lists it too). */
static void json_lp_map(const duet_logprob *row, uint32_t n_top, int32_t token, float token_lp)
{
    bool seen = false;
    int n = 0;

    printf("{");
    for (uint32_t j = 0; j < n_top; j++) {
        if (row[j].token < 0)
            continue;
        seen = seen || row[j].token == token;
        printf("%s\"%d\": ", n++ ? ", " : "", row[j].token);
        json_float(row[j].logprob);
    }
    if (!seen) {
        printf("%s\"%d\": ", n ? ", " : "", token);
        json_float(token_lp);
    }
    printf("}");
}

static void json_logprobs(const duet_request_output *r)
{
    printf(", \"logprobs\": [");
    for (uint32_t t = 0; t < r->n_ids; t++) {
        printf("%s", t ? ", " : "");
        json_lp_map(&r->logprobs[(size_t)t * r->n_logprobs], r->n_logprobs, r->ids[t],
                    r->token_logprobs[t]);
    }
    printf("]");
}

/* A JSON string of LEN bytes, escaped as jansson escapes (duet-tokenize prints the same text
 * byte for byte): quotes, backslashes, \b \f \n \r \t, other control characters as \u00XX. */
static void json_string(const char *s, size_t len)
{
    static const char short_escape[] = {
        ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};

    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < sizeof(short_escape) && short_escape[c])
            printf("\\%c", short_escape[c]);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* The text of a request's generated ids as a JSON string (null when out of memory). */
static void json_text(const duet_tokenizer *tok, const duet_request_output *r)
{
    size_t len;
    char *text = duet__run_decode(tok, r->ids, r->n_ids, &len);

    if (text)
        json_string(text, len);
    else
        printf("null");
    duet_tokenizer_free(text);
}

/* null for the first prompt token (and any position never computed), then the top-N maps. */
static void json_prompt_logprobs(const duet_request_output *r, const struct prompt *p)
{
    printf(", \"prompt_logprobs\": [null");
    for (uint32_t t = 1; t < r->n_prompt; t++) {
        const duet_logprob *row = &r->prompt_logprobs[(size_t)t * r->n_prompt_logprobs];

        printf(", ");
        if (row[0].token < 0)
            printf("null");
        else
            json_lp_map(row, r->n_prompt_logprobs, p->ids[t], r->prompt_token_logprobs[t]);
    }
    printf("]");
}

/* What a run prints with, and what it steps. */
struct run {
    const struct options *o;
    duet_engine *e;
    const struct prompts *ps;
    const uint64_t *ids;       /* [ps->n] request ids, ascending */
    const duet_tokenizer *tok; /* NULL: no tokenizer, ids only */
    bool spec;                 /* the engine has a draft: proposed / accepted counts are printed */
};

/* A finished request, human-readable: one line, then the prompt's text (for text prompts) and
 * the generated text (with a tokenizer), each a JSON string. */
static void print_result_text(const struct run *run, const struct prompt *p,
                              const duet_request_output *r, uint32_t index, uint32_t seq)
{
    printf("request %u", index);
    if (run->o->n > 1)
        printf(" sequence %u", seq);
    printf(": prompt [");
    print_ids(p->ids, p->n, ",");
    printf("] -> [");
    print_ids(r->ids, r->n_ids, ",");
    printf("] (%s, %u tokens", duet_finish_reason_str(r->finish), r->n_ids);
    if (run->spec)
        printf(", %u of %u proposals accepted", r->num_accepted, r->num_proposed);
    printf(")%s%s\n", r->error ? ": " : "", r->error ? r->error : "");
    if (p->text) {
        printf("  prompt: ");
        json_string(p->text, p->text_len);
        printf("\n");
    }
    if (run->tok) {
        printf("  text:   ");
        json_text(run->tok, r);
        printf("\n");
    }
}

/* A finished request, as soon as it finished (with --n > 1, once per sequence). */
static void print_one(const struct run *run, const duet_request_output *r, uint32_t index,
                      uint32_t seq);

static void print_result(const struct run *run, const duet_request_output *r, uint32_t index)
{
    for (uint32_t j = 0; j < r->n_outputs; j++) {
        const duet_completion_output *c = &r->outputs[j];
        duet_request_output v = *r; /* the request, as seen by sequence j */

        v.ids = c->ids;
        v.n_ids = c->n_ids;
        v.first_new = c->first_new;
        v.finish = c->finish;
        v.token_logprobs = c->token_logprobs;
        v.logprobs = c->logprobs;
        print_one(run, &v, index, j);
    }
}

static void print_one(const struct run *run, const duet_request_output *r, uint32_t index,
                      uint32_t seq)
{
    const struct prompt *p = &run->ps->v[index];
    bool lp = r->logprobs && r->token_logprobs && r->n_logprobs;

    if (!run->o->json) {
        print_result_text(run, p, r, index, seq);
        return;
    }
    printf("{\"request\": %u, ", index);
    if (run->o->n > 1)
        printf("\"sequence\": %u, ", seq);
    if (p->text) {
        printf("\"prompt\": ");
        json_string(p->text, p->text_len);
        printf(", ");
    }
    printf("\"prompt_ids\": [");
    print_ids(p->ids, p->n, ", ");
    printf("], \"ids\": [");
    print_ids(r->ids, r->n_ids, ", ");
    printf("]");
    if (run->tok) {
        printf(", \"text\": ");
        json_text(run->tok, r);
    }
    printf(", \"finish_reason\": \"%s\"", duet_finish_reason_str(r->finish));
    if (lp)
        json_logprobs(r);
    if (r->n_prompt_logprobs && r->prompt_logprobs)
        json_prompt_logprobs(r, p);
    if (run->spec)
        printf(", \"proposed\": %u, \"accepted\": %u", r->num_proposed, r->num_accepted);
    if (r->error) {
        printf(", \"error\": ");
        json_string(r->error, strlen(r->error));
    }
    printf("}\n");
}

static void print_per_position(const uint64_t *v, uint32_t n, const char *sep)
{
    for (uint32_t j = 0; j < n; j++)
        printf("%s%llu", j ? sep : "", (unsigned long long)v[j]);
}

/* The speculative counters and the time split, human-readable, after the summary line. */
static void print_spec_text(const duet_engine_metrics *m)
{
    if (m->speculative) {
        printf("speculative: k %u%s, proposed %llu, accepted %llu, emitted %llu, acceptance "
               "rate %.3f, system efficiency %.3f, mean k %.2f, steps %llu (%llu without "
               "speculation by batch size)\n",
               m->num_spec_tokens, m->adaptive ? " (adaptive)" : "",
               (unsigned long long)m->proposed, (unsigned long long)m->accepted,
               (unsigned long long)m->emitted, m->acceptance_rate > 0 ? m->acceptance_rate : 0,
               m->system_efficiency > 0 ? m->system_efficiency : 0, m->mean_k,
               (unsigned long long)m->spec_steps, (unsigned long long)m->disabled_steps);
        printf("accepted per position: ");
        for (uint32_t j = 0; j < m->num_spec_tokens; j++)
            printf("%s%llu/%llu", j ? " " : "", (unsigned long long)m->accepted_at[j],
                   (unsigned long long)m->proposed_at[j]);
        printf("\n");
    }
    printf("time: target %.3f s (verify %.3f s), draft %.3f s, engine (neither worker) %.3f s; "
           "idle: target %.3f s, draft %.3f s\n",
           m->execute_s, m->verify_s, m->draft_s, m->idle_s, m->target_idle_s, m->draft_idle_s);
    if (m->overlap_steps)
        printf("overlap: %llu steps drafted one half while the target scored the other, both "
               "busy %.3f s\n",
               (unsigned long long)m->overlap_steps, m->overlap_s);
}

static void json_rate(double v)
{
    if (v >= 0)
        printf("%.6f", v);
    else
        printf("null");
}

/* speculative.acceptance of an engine with a draft ("rejection", "typical", "synthetic"), else
 * NULL; with "synthetic", speculative.synthetic_rate goes to *rate. */
static const char *acceptance_of(const duet_config *cfg, const duet_engine_metrics *m, double *rate)
{
    const char *name = NULL;

    *rate = -1;
    if (!m->speculative || duet_config_get_string(cfg, "speculative.acceptance", &name))
        return NULL;
    if (m->synthetic_acceptance)
        duet_config_get_float(cfg, "speculative.synthetic_rate", rate);
    return name;
}

static void print_summary(const struct options *o, const duet_config *cfg,
                          const duet_engine_metrics *m, uint32_t n_req)
{
    double rate;
    const char *acceptance = acceptance_of(cfg, m, &rate);

    if (!o->json) {
        printf("%u requests, %llu tokens generated in %.3f s (%.1f tokens/s), %llu steps", n_req,
               (unsigned long long)m->generated_tokens, m->elapsed_s, m->tokens_per_s,
               (unsigned long long)m->steps);
        if (m->acceptance_rate >= 0)
            printf(", acceptance rate %.3f", m->acceptance_rate);
        if (m->synthetic_acceptance)
            printf(" (synthetic acceptance at %g: not the models')", rate);
        printf(", %.2f tokens per step\n", m->mean_tokens_per_step);
        print_spec_text(m);
        return;
    }
    printf("{\"requests\": %u, \"generated_tokens\": %llu, \"elapsed_s\": %.6f, "
           "\"tokens_per_s\": %.3f, \"acceptance_rate\": ",
           n_req, (unsigned long long)m->generated_tokens, m->elapsed_s, m->tokens_per_s);
    json_rate(m->acceptance_rate);
    printf(", \"mean_tokens_per_step\": %.6f, \"steps\": %llu, \"proposed\": %llu, "
           "\"accepted\": %llu, \"preemptions\": %llu, \"emitted\": %llu, "
           "\"system_efficiency\": ",
           m->mean_tokens_per_step, (unsigned long long)m->steps, (unsigned long long)m->proposed,
           (unsigned long long)m->accepted, (unsigned long long)m->preemptions,
           (unsigned long long)m->emitted);
    json_rate(m->system_efficiency);
    printf(", \"num_spec_tokens\": %u, \"adaptive\": %s, \"mean_k\": %.6f, "
           "\"spec_steps\": %llu, \"disabled_steps\": %llu, \"proposed_per_position\": [",
           m->num_spec_tokens, m->adaptive ? "true" : "false", m->mean_k,
           (unsigned long long)m->spec_steps, (unsigned long long)m->disabled_steps);
    print_per_position(m->proposed_at, m->num_spec_tokens, ", ");
    printf("], \"accepted_per_position\": [");
    print_per_position(m->accepted_at, m->num_spec_tokens, ", ");
    printf("], \"target_s\": %.6f, \"verify_s\": %.6f, \"draft_s\": %.6f, \"idle_s\": %.6f, "
           "\"target_idle_s\": %.6f, \"draft_idle_s\": %.6f, \"overlap_s\": %.6f, "
           "\"overlap_steps\": %llu, \"acceptance\": ",
           m->execute_s, m->verify_s, m->draft_s, m->idle_s, m->target_idle_s, m->draft_idle_s,
           m->overlap_s, (unsigned long long)m->overlap_steps);
    if (acceptance)
        printf("\"%s\"", acceptance); /* one of the schema's names: nothing to escape */
    else
        printf("null");
    printf(", \"synthetic_rate\": ");
    json_rate(rate);
    printf("}\n");
}

/* Queues every prompt; request i is seeded with seed + i. The tokenizer's EOS ids stop a
 * request as the model's do (vLLM adds them to its stop ids), unless --ignore-eos. */
static int add_requests(const struct run *run, uint64_t *ids)
{
    const struct options *o = run->o;
    const struct prompts *ps = run->ps;
    int32_t stop[DUET_TOKENIZER_MAX_EOS];
    size_t n_stop = 0;

    if (run->tok && !o->ignore_eos)
        n_stop = duet_tokenizer_eos_ids(run->tok, stop, DUET_TOKENIZER_MAX_EOS);
    if (n_stop > DUET_TOKENIZER_MAX_EOS)
        n_stop = DUET_TOKENIZER_MAX_EOS;
    for (uint32_t i = 0; i < ps->n; i++) {
        duet_request_params p;

        duet_request_params_init(&p);
        p.stop_token_ids = stop;
        p.n_stop_token_ids = (uint32_t)n_stop;
        p.prompt = ps->v[i].ids;
        p.n_prompt = ps->v[i].n;
        p.max_tokens = (uint32_t)o->max_tokens;
        p.ignore_eos = o->ignore_eos;
        p.sampling.temperature = (float)o->temperature;
        p.sampling.top_k = (int32_t)o->top_k;
        p.sampling.top_p = (float)o->top_p;
        p.sampling.seed = o->seed + (unsigned long long)i * (unsigned long long)o->n;
        p.n = (uint32_t)o->n;
        p.presence_penalty = (float)o->presence_penalty;
        p.frequency_penalty = (float)o->frequency_penalty;
        p.repetition_penalty = (float)o->repetition_penalty;
        p.sampling.n_logprobs = (uint32_t)o->logprobs;
        p.sampling.n_prompt_logprobs = (uint32_t)o->prompt_logprobs;
        if (duet_engine_add_request(run->e, &p, &ids[i])) {
            fprintf(stderr, "duet-run: prompt %u: %s\n", i, duet_engine_error(run->e));
            return EXIT_FAILURE;
        }
    }
    return 0;
}

/* On a terminal: one line on stderr, rewritten every step, erased at the end. */
static void progress(duet_engine *e, uint32_t done, uint32_t n, bool last)
{
    duet_engine_metrics m;

    if (last) {
        fprintf(stderr, "\r\033[K");
        return;
    }
    duet_engine_metrics_get(e, &m);
    fprintf(stderr, "\r\033[Kstep %llu: %u/%u requests done, %llu tokens, %.1f tokens/s",
            (unsigned long long)m.steps, done, n, (unsigned long long)m.generated_tokens,
            m.tokens_per_s);
    if (m.speculative && m.proposed)
        fprintf(stderr, ", acceptance %.2f", m.acceptance_rate);
}

/* SIGINT / SIGTERM: the number, read between steps. A second one ends the process at once. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

static void catch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The index of request id among ids[n] (ascending, as the engine hands them out); n if none. */
static uint32_t index_of(const uint64_t *ids, uint32_t n, uint64_t id)
{
    uint32_t lo = 0, hi = n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo] == id ? lo : n;
}

/* Standard output after a step's results: flushed, so that what finished is out. */
static bool flush_results(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return true;
    fprintf(stderr, "duet-run: writing the results to standard output: %s\n",
            errno ? strerror(errno) : "write error");
    return false;
}

struct tally {
    uint32_t done, failed, aborted;
    uint8_t *printed; /* [n] */
};

/* Aborts every request not printed yet: the next step reports them with the tokens they have. */
static void abort_rest(duet_engine *e, const uint64_t *ids, uint32_t n, const struct tally *t)
{
    for (uint32_t i = 0; i < n; i++)
        if (!t->printed[i])
            duet_engine_abort(e, ids[i]); /* NOT_FOUND: it finished meanwhile */
}

/* Steps the engine until every request finished, printing each one as it finishes. */
static int run_engine(const struct run *run, struct tally *t)
{
    bool tty = isatty(STDERR_FILENO), aborting = false;
    duet_engine *e = run->e;
    const uint64_t *ids = run->ids;
    uint32_t n = run->ps->n;
    int rc = 0;

    while (!rc && duet_engine_has_unfinished(e)) {
        const duet_step_output *so;

        if (stop_signal && !aborting) {
            abort_rest(e, ids, n, t);
            aborting = true;
        }
        if (duet_engine_step(e, &so)) {
            if (tty)
                progress(e, t->done, n, true);
            fprintf(stderr, "duet-run: %s\n", duet_engine_error(e));
            return EXIT_FAILURE;
        }
        for (uint32_t j = 0; j < so->n_requests; j++) {
            const duet_request_output *ro = &so->requests[j];
            uint32_t i = index_of(ids, n, ro->request_id);

            if (ro->finish == DUET_FINISH_NONE || i == n)
                continue;
            if (tty)
                progress(e, t->done, n, true);
            print_result(run, ro, i);
            t->printed[i] = 1;
            t->done++;
            t->failed += ro->finish == DUET_FINISH_ERROR;
            t->aborted += ro->finish == DUET_FINISH_ABORT;
        }
        if (so->n_requests && !flush_results())
            rc = EXIT_FAILURE;
        if (tty && !rc)
            progress(e, t->done, n, false);
    }
    if (tty)
        progress(e, t->done, n, true);
    return rc;
}

/* The first text option given ("--chat", ...), or NULL when the prompts are ids. */
static const char *text_flag(const struct options *o)
{
    return o->chat ? "--chat" : o->prompt ? "--prompt" : o->prompts_text ? "--prompts-text" : NULL;
}

/* The folder of the tokenizer: --tokenizer DIR, else the target model's. */
static const char *tokenizer_dir(const struct options *o, const duet_config *cfg)
{
    return o->tokenizer ? o->tokenizer : duet_config_settings(cfg)->model;
}

/* Loads the tokenizer (when text options or --tokenizer ask for one, or the model's folder has
 * one) and reads every prompt, ids or text. Returns 0, or the exit status. */
static int read_prompts(const struct options *o, const duet_config *cfg, duet_tokenizer **tok,
                        struct prompts *ps)
{
    const char *flag = text_flag(o), *dir = tokenizer_dir(o, cfg);
    int rc = duet__run_tokenizer_load(dir, flag != NULL, o->tokenizer != NULL, flag, tok);

    if (!rc && o->prompt_ids && !prompts_add(ps, o->prompt_ids)) {
        fprintf(stderr, "duet-run: out of memory\n");
        rc = EXIT_FAILURE;
    }
    if (!rc && o->prompts)
        rc = prompts_read(o->prompts, ps);
    if (!rc && o->prompt)
        rc = duet__run_add_text(*tok, o->prompt, strlen(o->prompt), "--prompt", ps);
    if (!rc && o->prompts_text)
        rc = duet__run_read_text_prompts(*tok, o->prompts_text, ps);
    if (!rc && o->chat)
        rc = duet__run_read_chat(*tok, dir, o->chat, ps);
    if (!rc && ps->n == 0) {
        fprintf(stderr, "duet-run: no prompt: give --prompt-ids LIST, --prompts FILE, --prompt "
                        "TEXT, --prompts-text FILE or --chat FILE\n");
        rc = EXIT_USAGE;
    }
    return rc;
}

/* A tokenizer with ids past the target model's vocabulary is not the model's: it could encode a
 * prompt the model cannot read. An error when the run asked for the tokenizer; otherwise (the
 * model folder's, for a run on ids) it is dropped with a warning. Returns 0, or the exit status. */
static int check_vocab(const struct options *o, const duet_config *cfg, duet_tokenizer **tok,
                       const duet_engine_metrics *m)
{
    bool asked = text_flag(o) || o->tokenizer;
    uint32_t v = *tok ? duet_tokenizer_vocab_size(*tok) : 0;

    if (v <= m->vocab_size)
        return 0;
    fprintf(stderr,
            "duet-run: %sthe tokenizer in %s has %u token ids, more than the target model's "
            "vocabulary (%u): it is not this model's tokenizer (give the model's own with "
            "--tokenizer DIR, or generate the model with duet-mkmodel --tokenizer DIR)%s\n",
            asked ? "" : "warning: ", tokenizer_dir(o, cfg), v, m->vocab_size,
            asked ? "" : "; the output has ids only");
    if (asked)
        return EXIT_FAILURE;
    duet_tokenizer_destroy(*tok);
    *tok = NULL;
    return 0;
}

static int generate(const struct options *o, const duet_config *cfg)
{
    struct prompts ps = {0};
    struct tally t = {0};
    struct run run = {.o = o, .ps = &ps};
    uint64_t *ids = NULL;
    duet_tokenizer *tok = NULL;
    duet_engine *e = NULL;
    duet_engine_metrics m;
    char err[1024];
    int rc = read_prompts(o, cfg, &tok, &ps);

    if (rc)
        goto out_prompts;
    rc = EXIT_FAILURE;
    t.printed = calloc(ps.n, 1);
    ids = calloc(ps.n, sizeof(*ids));
    if (!t.printed || !ids)
        goto out_prompts;
    if (duet_engine_create(cfg, &e, err, sizeof(err))) {
        fprintf(stderr, "duet-run: %s\n", err);
        goto out_prompts;
    }
    duet_engine_metrics_get(e, &m);
    if (check_vocab(o, cfg, &tok, &m))
        goto out_engine;
    catch_stop_signals();
    run.e = e;
    run.ids = ids;
    run.tok = tok;
    run.spec = m.speculative;
    if (add_requests(&run, ids) || run_engine(&run, &t))
        goto out_engine;
    duet_engine_metrics_get(e, &m);
    print_summary(o, cfg, &m, ps.n);
    if (!flush_results())
        goto out_engine;
    if (stop_signal) {
        fprintf(stderr, "duet-run: stopped by signal %d: %u of %u requests finished before it\n",
                (int)stop_signal, t.done - t.aborted, ps.n);
        rc = 128 + stop_signal;
    } else if (t.failed) {
        fprintf(stderr, "duet-run: %u of %u requests failed (finish_reason \"error\")\n", t.failed,
                ps.n);
    } else {
        rc = EXIT_SUCCESS;
    }
out_engine:
    duet_engine_destroy(e);
out_prompts:
    free(t.printed);
    free(ids);
    duet__prompts_free(&ps);
    duet_tokenizer_destroy(tok);
    return rc;
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
        for (int i = 0; i < n_roles; i++)
            duet_plugin_unload(roles[i].plugin);
        n_roles = 0;
        rc = generate(o, cfg);
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
