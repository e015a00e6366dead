/*
 * duet-tokenize — text to token ids and back with a model folder's Hugging Face tokenizer
 * (include/duet/tokenizer.h, docs/tokenizer.md). Its input and output formats are a contract
 * that scripts and tests rely on:
 *
 *   encode:            stdin (raw UTF-8 text)      -> {"ids": [...]}
 *   --decode:          stdin (a JSON array of ids) -> {"text": "..."}
 *   --chat:            stdin (a JSON array of {"role", "content", ...} messages)
 *                      -> {"prompt": "...", "ids": [...]}: the chat template's prompt (with the
 *                      assistant's generation prompt unless --no-generation-prompt) and its ids,
 *                      encoded WITHOUT the post-processor's special tokens, since the template
 *                      writes them itself (as transformers' apply_chat_template(tokenize=True)
 *                      and vLLM do)
 *   --jsonl:           one JSON value per input line (a string to encode, an array of ids to
 *                      decode, a messages array with --chat) -> one JSON object per output
 *                      line; a bad line answers {"error": "..."} and the exit status is 1 at
 *                      the end
 */
#include "build_config.h"

#include <duet/tokenizer.h>

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_USAGE = 2 };

struct options {
    const char *dir;
    bool decode;
    bool add_special;  /* encode: the post-processor's BOS / EOS */
    bool skip_special; /* decode: drop special tokens */
    bool jsonl;
    bool chat;               /* messages to a prompt */
    bool gen_prompt;         /* --chat: add the generation prompt */
    char *chat_template;     /* --chat-template FILE's text, or NULL */
    const char *chat_kwargs; /* --chat-kwargs JSON, or NULL */
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: duet-tokenize --model DIR [options] < INPUT\n"
            "\n"
            "Encodes the UTF-8 text on stdin with DIR/tokenizer.json and prints {\"ids\": [...]}\n"
            "(invalid UTF-8 becomes U+FFFD). With --decode, reads a JSON array of ids and\n"
            "prints {\"text\": \"...\"}.\n"
            "\n"
            "  -m, --model DIR      the folder holding tokenizer.json (tokenizer_config.json,\n"
            "                       generation_config.json optional), or a GGUF file: the\n"
            "                       tokenizer.json beside it, else the tokenizer it embeds\n"
            "  -d, --decode         ids to text\n"
            "      --no-special     encode without the BOS / EOS the tokenizer adds\n"
            "      --skip-special   decode without special tokens\n"
            "      --chat           a JSON array of messages to the chat template's prompt:\n"
            "                       prints {\"prompt\": \"...\", \"ids\": [...]}, the ids encoded\n"
            "                       without special tokens (the template writes them)\n"
            "      --no-generation-prompt  --chat: end after the last message, without the\n"
            "                       assistant's header\n"
            "      --chat-template FILE  --chat: this Jinja template instead of the model's\n"
            "      --chat-kwargs JSON    --chat: a JSON object of extra template variables\n"
            "                       (enable_thinking, tools, ...)\n"
            "      --jsonl          one JSON value per line in (a string, an array of ids\n"
            "                       with --decode, a messages array with --chat), one JSON\n"
            "                       object per line out\n"
            "  -h, --help           this text\n"
            "  -V, --version        the version\n"
            "\n"
            "Exit status: 0 done, 1 a tokenizer or input error (on stderr, or as {\"error\"}\n"
            "lines with --jsonl), 2 bad usage.\n");
}

static char *read_all(FILE *f, size_t *len);

/* --chat-template FILE: its text (NUL-terminated) in O. */
static int read_template(const char *path, struct options *o)
{
    FILE *f = fopen(path, "rb");
    size_t len;

    free(o->chat_template);
    o->chat_template = f ? read_all(f, &len) : NULL;
    if (f)
        fclose(f);
    if (!o->chat_template) {
        fprintf(stderr, "duet-tokenize: cannot read %s\n", path);
        return 1;
    }
    o->chat_template[len] = '\0';
    return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum {
        OPT_NO_SPECIAL = 256,
        OPT_SKIP_SPECIAL,
        OPT_JSONL,
        OPT_CHAT,
        OPT_NO_GEN,
        OPT_CHAT_TEMPLATE,
        OPT_CHAT_KWARGS
    };
    static const struct option long_options[] = {
        {"model", required_argument, NULL, 'm'},
        {"decode", no_argument, NULL, 'd'},
        {"no-special", no_argument, NULL, OPT_NO_SPECIAL},
        {"skip-special", no_argument, NULL, OPT_SKIP_SPECIAL},
        {"jsonl", no_argument, NULL, OPT_JSONL},
        {"chat", no_argument, NULL, OPT_CHAT},
        {"no-generation-prompt", no_argument, NULL, OPT_NO_GEN},
        {"chat-template", required_argument, NULL, OPT_CHAT_TEMPLATE},
        {"chat-kwargs", required_argument, NULL, OPT_CHAT_KWARGS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct options){.add_special = true, .gen_prompt = true};
    while ((c = getopt_long(argc, argv, "m:dhV", long_options, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->dir = optarg;
            break;
        case 'd':
            o->decode = true;
            break;
        case OPT_NO_SPECIAL:
            o->add_special = false;
            break;
        case OPT_SKIP_SPECIAL:
            o->skip_special = true;
            break;
        case OPT_JSONL:
            o->jsonl = true;
            break;
        case OPT_CHAT:
            o->chat = true;
            break;
        case OPT_NO_GEN:
            o->gen_prompt = false;
            break;
        case OPT_CHAT_TEMPLATE:
            if (read_template(optarg, o) != 0)
                return 1;
            break;
        case OPT_CHAT_KWARGS:
            o->chat_kwargs = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("duet-tokenize %s\n", PACKAGE_VERSION);
            exit(0);
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (o->chat && o->decode) {
        fprintf(stderr, "duet-tokenize: --chat and --decode do not go together\n");
        return EXIT_USAGE;
    }
    if (!o->dir || optind != argc) {
        fprintf(stderr, "duet-tokenize: %s\n",
                o->dir ? "unexpected argument"
                       : "--model DIR is "
                         "required");
        return EXIT_USAGE;
    }
    return 0;
}

/* All of stdin; *LEN bytes (NUL bytes included). NULL when out of memory. */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap), *p;

    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            p = realloc(buf, cap * 2);
            if (!p)
                break;
            buf = p;
            cap *= 2;
        }
    }
    if (buf && n == cap) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static json_t *error_obj(const char *msg)
{
    return json_pack("{s:s}", "error", msg);
}

static json_t *encode_text(const duet_tokenizer *tok, const struct options *o, const char *text,
                           size_t len)
{
    int32_t *ids;
    size_t n;
    duet_status st = duet_tokenizer_encode(tok, text, len, o->add_special, &ids, &n);
    json_t *arr, *res;

    if (st == DUET_STATUS_UNSUPPORTED)
        return error_obj("unsupported: the pre-tokenizer's regex gave up on this text (PCRE2's "
                         "match limit)");
    if (st != DUET_STATUS_OK)
        return error_obj(duet_status_str(st));
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    duet_tokenizer_free(ids);
    res = json_object();
    json_object_set_new(res, "ids", arr);
    return res;
}

static json_t *decode_ids(const duet_tokenizer *tok, const struct options *o, json_t *arr)
{
    size_t n = json_array_size(arr), i, len;
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    json_t *v, *res;
    char *text, msg[96];
    duet_status st;

    if (!ids)
        return error_obj("out of memory");
    json_array_foreach(arr, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= (json_int_t)duet_tokenizer_vocab_size(tok)) {
            snprintf(msg, sizeof(msg), "ids[%zu] is not a token id below %u", i,
                     duet_tokenizer_vocab_size(tok));
            free(ids);
            return error_obj(msg);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    st = duet_tokenizer_decode(tok, ids, n, o->skip_special, &text, &len);
    free(ids);
    if (st != DUET_STATUS_OK)
        return error_obj(duet_status_str(st));
    res = json_pack("{s:s%}", "text", text, len);
    duet_tokenizer_free(text);
    return res;
}

/* --chat: a messages array -> {"prompt", "ids"}. */
static json_t *chat_answer(const duet_tokenizer *tok, const struct options *o, const char *in,
                           size_t len)
{
    duet_chat_options opts;
    char *prompt, err[512] = "";
    size_t plen;
    json_t *res, *enc;
    duet_status st;

    duet_chat_options_init(&opts);
    opts.add_generation_prompt = o->gen_prompt;
    opts.chat_template = o->chat_template;
    opts.kwargs_json = o->chat_kwargs;
    st = duet_tokenizer_apply_chat_template(tok, in, len, &opts, &prompt, &plen, err, sizeof(err));
    if (st != DUET_STATUS_OK)
        return error_obj(err[0] ? err : duet_status_str(st));
    enc = encode_text(tok, &(struct options){.add_special = false}, prompt, plen);
    if (json_object_get(enc, "error")) {
        duet_tokenizer_free(prompt);
        return enc;
    }
    res = json_pack("{s:s%,s:O}", "prompt", prompt, plen, "ids", json_object_get(enc, "ids"));
    json_decref(enc);
    duet_tokenizer_free(prompt);
    return res ? res : error_obj("out of memory");
}

/* One input value (--jsonl line or --decode input) -> the answer. */
static json_t *answer(const duet_tokenizer *tok, const struct options *o, const char *in,
                      size_t len)
{
    json_error_t jerr;
    json_t *v, *res;
    char msg[256];

    if (o->chat)
        return chat_answer(tok, o, in, len);
    if (!(v = json_loadb(in, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr))) {
        snprintf(msg, sizeof(msg), "input is not JSON: %s", jerr.text);
        return error_obj(msg);
    }
    if (o->decode && json_is_array(v))
        res = decode_ids(tok, o, v);
    else if (!o->decode && json_is_string(v))
        res = encode_text(tok, o, json_string_value(v), json_string_length(v));
    else
        res = error_obj(o->decode ? "expected a JSON array of ids" : "expected a JSON string");
    json_decref(v);
    return res;
}

/* Prints RES on one line; false when it is an error (its message also goes to stderr). */
static bool print(json_t *res, bool jsonl)
{
    json_t *err = json_object_get(res, "error");
    bool ok = !err;

    if (err && !jsonl)
        fprintf(stderr, "duet-tokenize: %s\n", json_string_value(err));
    else
        json_dumpf(res, stdout, JSON_COMPACT);
    if (!err || jsonl)
        putchar('\n');
    json_decref(res);
    return ok;
}

static int run_jsonl(const duet_tokenizer *tok, const struct options *o)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;

    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        ok &= print(answer(tok, o, line, (size_t)n), true);
        fflush(stdout);
    }
    free(line);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct options o;
    duet_tokenizer *tok;
    char err[512] = "", *in;
    size_t len;
    int rc = parse_args(argc, argv, &o);

    if (rc) {
        free(o.chat_template);
        return rc;
    }
    if (duet_tokenizer_load(o.dir, &tok, err, sizeof(err)) != DUET_STATUS_OK) {
        fprintf(stderr, "duet-tokenize: %s\n", err);
        free(o.chat_template);
        return 1;
    }
    if (o.jsonl) {
        rc = run_jsonl(tok, &o);
    } else if (!(in = read_all(stdin, &len))) {
        fprintf(stderr, "duet-tokenize: cannot read stdin (out of memory)\n");
        rc = 1;
    } else {
        rc = print(o.decode || o.chat ? answer(tok, &o, in, len) : encode_text(tok, &o, in, len),
                   false)
                 ? 0
                 : 1;
        free(in);
    }
    duet_tokenizer_destroy(tok);
    free(o.chat_template);
    return rc;
}
