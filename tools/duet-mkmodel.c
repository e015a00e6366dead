/*
 * duet-mkmodel — writes a deterministic random-weight model in Hugging Face layout (DESIGN §9,
 * docs/models.md): config.json, generation_config.json, and model.safetensors or shards with
 * model.safetensors.index.json. Either the shapes of a public model (--preset), explicit shapes,
 * or a draft derived from an existing target (--draft-of). Weights are streamed to disk. With
 * --tokenizer DIR the model takes a real tokenizer: its vocabulary size and special ids come from
 * it and its files are copied into the model folder; a draft takes its target's tokenizer the
 * same way (mkmodel_tokenizer.c).
 */
#include "build_config.h"

#include "cli.h"
#include "mkmodel_tokenizer.h"

#include "../model/model_gen.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_USAGE = 2 };

struct options {
    const char *out;                /* --out DIR */
    const char *preset;             /* --preset NAME, or NULL */
    const char *draft_of;           /* --draft-of DIR, or NULL */
    const char *tokenizer;          /* --tokenizer DIR, or NULL */
    duet_model_desc desc;           /* shapes given on the command line (0: not given) */
    bool has_arch;                  /* --arch */
    bool tie, post_ln;              /* --tie-embeddings, --post-layer-norm */
    bool has_dtype;                 /* --dtype */
    duet_dtype dtype;               /* --dtype */
    unsigned long long seed;        /* --seed */
    unsigned long long shard_bytes; /* --shard-size, bytes; 0: one file */
    long tail_from;                 /* --tail-from; -1: not given */
    double tail_scale;              /* --tail-scale; 0: not given */
    double noise;                   /* --noise; -1: not given */
    bool spread;                    /* --draft-layers spread */
    bool force, quiet;              /* --force, --quiet */
    bool has_gguf;                  /* --gguf */
    duet_dtype gguf;                /* --gguf: the matrices' type in DIR/model.gguf */
};

static void usage(FILE *f)
{
    fprintf(
        f, "Usage: duet-mkmodel --out DIR (--preset NAME | --arch ARCH SHAPE) [options]\n"
           "       duet-mkmodel --out DIR --draft-of TARGET --layers N [--noise X] [options]\n"
           "       duet-mkmodel --list-presets\n"
           "\n"
           "Writes a deterministic random-weight model in Hugging Face layout: config.json,\n"
           "generation_config.json and model.safetensors (or shards and an index).\n"
           "\n"
           "Model:\n"
           "      --preset NAME          shapes of a public model (--list-presets); the shape\n"
           "                             options below override single values\n"
           "      --arch ARCH            architecture for explicit shapes: llama, mistral,\n"
           "                             qwen2 (q/k/v biases), qwen3 (q/k norms) or opt\n"
           "      --hidden N             hidden size\n"
           "      --layers N             transformer layers (with --draft-of: layers kept)\n"
           "      --heads N              attention heads\n"
           "      --kv-heads N           key/value heads (llama family; default: --heads)\n"
           "      --head-dim N           elements per head (llama family; default: hidden /\n"
           "                             heads, a preset's own unless --hidden or --heads)\n"
           "      --intermediate N       MLP width (llama intermediate_size, OPT ffn_dim)\n"
           "      --vocab N              vocabulary size (with --tokenizer: at least its ids,\n"
           "                             default exactly its ids)\n"
           "      --max-positions N      max_position_embeddings (default 2048)\n"
           "      --tie-embeddings       llama family: lm_head shares embed_tokens\n"
           "      --sliding-window N     mistral, qwen2, qwen3: every layer attends to the\n"
           "                             last N positions only\n"
           "      --word-embed-proj-dim N  opt: embedding width (adds project_in/out)\n"
           "      --post-layer-norm      opt: LayerNorm after each block (OPT-350m style)\n"
           "Tokenizer:\n"
           "      --tokenizer DIR        a Hugging Face tokenizer (DIR/tokenizer.json, loaded\n"
           "                             first): sets the vocabulary size and the BOS / EOS /\n"
           "                             pad ids, and copies tokenizer.json,\n"
           "                             tokenizer_config.json, special_tokens_map.json and\n"
           "                             chat_template.jinja into the model\n"
           "                             (generation_config.json merged); a draft takes its\n"
           "                             target's tokenizer files\n"
           "Weights:\n"
           "      --dtype f32|f16|bf16   file dtype (default bf16; drafts: the target's);\n"
           "                             one seed gives the same values in every dtype\n"
           "      --seed S               random seed (default 0)\n"
           "      --tail-from N          from layer N on, scale the output projections\n"
           "      --tail-scale S         ... by S, a power of two in [2^-16, 1]: a target whose\n"
           "                             deep layers contribute little, so that an N-layer draft\n"
           "                             agrees with it (docs/models.md)\n"
           "Draft:\n"
           "      --draft-of DIR         derive a draft from the model in DIR: same embeddings,\n"
           "                             vocabulary and tokenizer, --layers N of its layers\n"
           "      --noise X              relative noise on every other weight (0 .. 1, default 0)\n"
           "      --draft-layers first|spread  the first N layers (default) or N evenly spaced\n"
           "Output:\n"
           "      --gguf TYPE            also write DIR/model.gguf (Llama, Qwen2, Qwen3), the\n"
           "                             same model as llama.cpp's converter lays it out (llama\n"
           "                             q/k rows permuted, norms F32): TYPE f32, f16, bf16,\n"
           "                             q8_0, q4_0 (quantised as ggml's reference quantisers\n"
           "                             do), q4_k, q5_k, q6_k\n"
           "                             (plain round-to-nearest: test files; rows of whole\n"
           "                             blocks of 256); duet reads it given the file\n"
           "      --out DIR              output folder (created if needed)\n"
           "      --shard-size SIZE      shards of at most SIZE bytes (suffix K, M, G) and\n"
           "                             model.safetensors.index.json; default one file\n"
           "      --force                replace a model already in DIR\n"
           "      --quiet                no progress, no summary\n"
           "  -h, --help                 this text\n"
           "  -V, --version              the version\n"
           "\n"
           "Exit status: 0 success, 1 an error writing or reading a model, 2 bad usage\n"
           "(including a model already in DIR without --force).\n");
}

static const char *const arch_names[][2] = {{"llama", "LlamaForCausalLM"},
                                            {"mistral", "MistralForCausalLM"},
                                            {"qwen2", "Qwen2ForCausalLM"},
                                            {"qwen3", "Qwen3ForCausalLM"},
                                            {"opt", "OPTForCausalLM"}};

/* The --arch name of a description. */
static const char *arch_flag(const duet_model_desc *d)
{
    for (size_t i = 0; i < sizeof(arch_names) / sizeof(arch_names[0]); i++)
        if (strcmp(d->architecture, arch_names[i][1]) == 0)
            return arch_names[i][0];
    return duet_arch_name(d->arch);
}

static void list_presets(void)
{
    for (size_t i = 0; i < duet__preset_count(); i++) {
        const struct duet__preset *p = duet__preset_at(i);

        printf("%-16s %-36s %6.2fB params  %s, %u layers, hidden %u\n", p->name, p->source,
               (double)p->params / 1e9, arch_flag(&p->desc), p->desc.num_layers,
               p->desc.hidden_size);
    }
}

enum {
    OPT_PRESET = 256,
    OPT_ARCH,
    OPT_HIDDEN,
    OPT_LAYERS,
    OPT_HEADS,
    OPT_KV_HEADS,
    OPT_INTERMEDIATE,
    OPT_VOCAB,
    OPT_MAX_POSITIONS,
    OPT_TIE,
    OPT_HEAD_DIM,
    OPT_SLIDING_WINDOW,
    OPT_WORD_EMBED,
    OPT_POST_LN,
    OPT_DTYPE,
    OPT_SEED,
    OPT_TAIL_FROM,
    OPT_TAIL_SCALE,
    OPT_DRAFT_OF,
    OPT_NOISE,
    OPT_DRAFT_LAYERS,
    OPT_OUT,
    OPT_SHARD_SIZE,
    OPT_FORCE,
    OPT_QUIET,
    OPT_LIST,
    OPT_TOKENIZER,
    OPT_GGUF,
};

static const struct option long_options[] = {
    {"preset", required_argument, NULL, OPT_PRESET},
    {"arch", required_argument, NULL, OPT_ARCH},
    {"hidden", required_argument, NULL, OPT_HIDDEN},
    {"layers", required_argument, NULL, OPT_LAYERS},
    {"heads", required_argument, NULL, OPT_HEADS},
    {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
    {"intermediate", required_argument, NULL, OPT_INTERMEDIATE},
    {"vocab", required_argument, NULL, OPT_VOCAB},
    {"max-positions", required_argument, NULL, OPT_MAX_POSITIONS},
    {"tie-embeddings", no_argument, NULL, OPT_TIE},
    {"head-dim", required_argument, NULL, OPT_HEAD_DIM},
    {"sliding-window", required_argument, NULL, OPT_SLIDING_WINDOW},
    {"word-embed-proj-dim", required_argument, NULL, OPT_WORD_EMBED},
    {"post-layer-norm", no_argument, NULL, OPT_POST_LN},
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"tail-from", required_argument, NULL, OPT_TAIL_FROM},
    {"tail-scale", required_argument, NULL, OPT_TAIL_SCALE},
    {"draft-of", required_argument, NULL, OPT_DRAFT_OF},
    {"noise", required_argument, NULL, OPT_NOISE},
    {"draft-layers", required_argument, NULL, OPT_DRAFT_LAYERS},
    {"out", required_argument, NULL, OPT_OUT},
    {"shard-size", required_argument, NULL, OPT_SHARD_SIZE},
    {"force", no_argument, NULL, OPT_FORCE},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"list-presets", no_argument, NULL, OPT_LIST},
    {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
    {"gguf", required_argument, NULL, OPT_GGUF},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static bool takes_value(int val)
{
    for (const struct option *opt = long_options; opt->name; opt++)
        if (opt->val == val)
            return opt->has_arg == required_argument;
    return false;
}

static bool parse_u32(const char *s, uint32_t hi, uint32_t *out)
{
    unsigned long long v;

    if (!duet__cli_parse_u64(s, 1, hi, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* "1000", "500K", "64M", "2G" (powers of 1024). */
static bool parse_size(const char *s, unsigned long long *out)
{
    char *end;
    unsigned long long v, mul = 1;

    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        mul = 1ull << 10;
    else if (*end == 'M' || *end == 'm')
        mul = 1ull << 20;
    else if (*end == 'G' || *end == 'g')
        mul = 1ull << 30;
    if (mul > 1)
        end++;
    if (errno || end == s || *end || v == 0 || v > UINT64_MAX / mul)
        return false;
    *out = v * mul;
    return true;
}

static bool parse_dtype(const char *s, duet_dtype *out)
{
    if (strcmp(s, "f32") == 0)
        *out = DUET_DTYPE_F32;
    else if (strcmp(s, "f16") == 0)
        *out = DUET_DTYPE_F16;
    else if (strcmp(s, "bf16") == 0)
        *out = DUET_DTYPE_BF16;
    else
        return false;
    return true;
}

/* --arch: the architecture and its class name into d. */
static bool parse_arch(const char *s, duet_model_desc *d)
{
    for (size_t i = 0; i < sizeof(arch_names) / sizeof(arch_names[0]); i++) {
        if (strcmp(s, arch_names[i][0]) == 0) {
            d->arch = strcmp(s, "opt") == 0 ? DUET_ARCH_OPT : DUET_ARCH_LLAMA;
            snprintf(d->architecture, sizeof(d->architecture), "%s", arch_names[i][1]);
            return true;
        }
    }
    return false;
}

static bool parse_gguf(const char *s, duet_dtype *out)
{
    if (strcmp(s, "q8_0") == 0)
        *out = DUET_DTYPE_Q8_0;
    else if (strcmp(s, "q4_0") == 0)
        *out = DUET_DTYPE_Q4_0;
    else if (strcmp(s, "q4_k") == 0)
        *out = DUET_DTYPE_Q4_K;
    else if (strcmp(s, "q5_k") == 0)
        *out = DUET_DTYPE_Q5_K;
    else if (strcmp(s, "q6_k") == 0)
        *out = DUET_DTYPE_Q6_K;
    else
        return parse_dtype(s, out);
    return true;
}

/* A shape option into o->desc. */
static bool parse_shape(int c, const char *arg, struct options *o)
{
    duet_model_desc *d = &o->desc;

    switch (c) {
    case OPT_HIDDEN:
        return parse_u32(arg, DUET__MAX_DIM, &d->hidden_size);
    case OPT_LAYERS:
        return parse_u32(arg, DUET__MAX_LAYERS, &d->num_layers);
    case OPT_HEADS:
        return parse_u32(arg, DUET__MAX_HEADS, &d->num_heads);
    case OPT_KV_HEADS:
        return parse_u32(arg, DUET__MAX_HEADS, &d->num_kv_heads);
    case OPT_INTERMEDIATE:
        return parse_u32(arg, DUET__MAX_DIM, &d->intermediate_size);
    case OPT_VOCAB:
        return parse_u32(arg, DUET__MAX_DIM, &d->vocab_size);
    case OPT_MAX_POSITIONS:
        return parse_u32(arg, DUET__MAX_DIM - 2, &d->max_position);
    case OPT_WORD_EMBED:
        return parse_u32(arg, DUET__MAX_DIM, &d->word_embed_proj_dim);
    case OPT_HEAD_DIM:
        return parse_u32(arg, DUET__MAX_DIM, &d->head_dim);
    case OPT_SLIDING_WINDOW:
        return parse_u32(arg, DUET__MAX_DIM, &d->sliding_window);
    }
    return false;
}

/* Any option with a value; false when the value is bad. */
static bool parse_value(int c, const char *arg, struct options *o)
{
    unsigned long long value;
    int exponent;

    switch (c) {
    case OPT_PRESET:
        o->preset = arg;
        return duet__preset_find(arg) != NULL;
    case OPT_ARCH:
        o->has_arch = true;
        return parse_arch(arg, &o->desc);
    case OPT_DTYPE:
        o->has_dtype = true;
        return parse_dtype(arg, &o->dtype);
    case OPT_SEED:
        return duet__cli_parse_u64(arg, 0, INT64_MAX, &o->seed);
    case OPT_TAIL_FROM:
        if (!duet__cli_parse_u64(arg, 0, DUET__MAX_LAYERS, &value))
            return false;
        o->tail_from = (long)value;
        return true;
    case OPT_TAIL_SCALE:
        return duet__cli_parse_double(arg, ldexp(1.0, DUET__MIN_TAIL_LOG2), 1.0, &o->tail_scale) &&
               frexp(o->tail_scale, &exponent) == 0.5;
    case OPT_NOISE:
        return duet__cli_parse_double(arg, 0.0, DUET__MAX_NOISE, &o->noise);
    case OPT_DRAFT_LAYERS:
        o->spread = strcmp(arg, "spread") == 0;
        return o->spread || strcmp(arg, "first") == 0;
    case OPT_SHARD_SIZE:
        return parse_size(arg, &o->shard_bytes);
    case OPT_GGUF:
        o->has_gguf = true;
        return parse_gguf(arg, &o->gguf);
    }
    return parse_shape(c, arg, o);
}

/* Flags and the options that take no parser; returns -1 to go on, or an exit status. */
static int parse_flag(int c, struct options *o)
{
    switch (c) {
    case OPT_TIE:
        o->tie = true;
        return -1;
    case OPT_POST_LN:
        o->post_ln = true;
        return -1;
    case OPT_FORCE:
        o->force = true;
        return -1;
    case OPT_QUIET:
        o->quiet = true;
        return -1;
    case OPT_LIST:
        list_presets();
        return EXIT_SUCCESS;
    case 'h':
        usage(stdout);
        return EXIT_SUCCESS;
    case 'V':
        printf("duet-mkmodel %s\n", PACKAGE_VERSION);
        return EXIT_SUCCESS;
    }
    fprintf(stderr, "Try 'duet-mkmodel --help'.\n");
    return EXIT_USAGE;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    int c;

    *o = (struct options){.tail_from = -1, .noise = -1};
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        int rc;

        if (c == OPT_OUT) {
            o->out = optarg;
        } else if (c == OPT_DRAFT_OF) {
            o->draft_of = optarg;
        } else if (c == OPT_TOKENIZER) {
            o->tokenizer = optarg;
        } else if (takes_value(c)) {
            if (!parse_value(c, optarg, o)) {
                fprintf(stderr, "duet-mkmodel: invalid value for --%s: '%s'\n",
                        duet__cli_option_name(long_options, c), optarg);
                return EXIT_USAGE;
            }
        } else if ((rc = parse_flag(c, o)) >= 0) {
            return rc;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "duet-mkmodel: unexpected argument '%s'\nTry 'duet-mkmodel --help'.\n",
                argv[optind]);
        return EXIT_USAGE;
    }
    return -1;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "duet-mkmodel: %s\nTry 'duet-mkmodel --help'.\n", what);
    return EXIT_USAGE;
}

/* Overrides of a preset or defaults by the shape options that were given. */
static void apply_shapes(const struct options *o, duet_model_desc *d)
{
    const duet_model_desc *g = &o->desc;

    if (g->hidden_size)
        d->hidden_size = g->hidden_size;
    if (g->num_layers)
        d->num_layers = g->num_layers;
    if (g->num_heads)
        d->num_heads = d->num_kv_heads = g->num_heads;
    if (g->num_kv_heads)
        d->num_kv_heads = g->num_kv_heads;
    if (g->intermediate_size)
        d->intermediate_size = g->intermediate_size;
    if (g->vocab_size)
        d->vocab_size = g->vocab_size;
    if (g->max_position)
        d->max_position = g->max_position;
    if (g->word_embed_proj_dim)
        d->word_embed_proj_dim = g->word_embed_proj_dim;
    if (g->hidden_size || g->num_heads || !d->head_dim)
        d->head_dim = d->hidden_size / d->num_heads;
    if (g->head_dim)
        d->head_dim = g->head_dim;
    if (g->sliding_window)
        d->sliding_window = g->sliding_window;
    if (o->tie)
        d->tie_word_embeddings = true;
    if (o->post_ln)
        d->do_layer_norm_before = d->final_layer_norm = false;
}

/* Explicit shapes: defaults of the architecture, ids like the Llama / OPT tokenizers. */
static int explicit_desc(const struct options *o, duet_model_desc *d)
{
    const duet_model_desc *g = &o->desc;

    if (!g->hidden_size || !g->num_layers || !g->num_heads || !g->intermediate_size ||
        (!g->vocab_size && !o->tokenizer))
        return usage_error("explicit shapes need --hidden, --layers, --heads, --intermediate "
                           "and --vocab (or --tokenizer)");
    duet__desc_defaults(d, g->arch);
    snprintf(d->architecture, sizeof(d->architecture), "%s", g->architecture);
    duet__desc_family_defaults(d);
    d->head_dim = 0; /* hidden / heads unless --head-dim (Qwen3's 128 is for its real sizes) */
    if (g->arch == DUET_ARCH_OPT) {
        d->bos_token_id = g->vocab_size > 2 ? 2 : 0;
        d->pad_token_id = g->vocab_size > 1 ? 1 : -1;
        d->eos_token_ids[0] = d->bos_token_id;
        d->word_embed_proj_dim = g->hidden_size;
    } else {
        d->bos_token_id = g->vocab_size > 1 ? 1 : 0;
        d->eos_token_ids[0] = g->vocab_size > 2 ? 2 : 0;
    }
    d->n_eos = 1;
    return -1;
}

/* The description of the model to generate; -1 to go on, or an exit status. */
static int target_desc(const struct options *o, duet_model_desc *d)
{
    int rc = -1;
    bool derived; /* head_dim = hidden / heads */

    if (o->preset) {
        *d = duet__preset_find(o->preset)->desc;
        if (o->has_arch && strcmp(o->desc.architecture, d->architecture) != 0)
            return usage_error("--arch contradicts --preset");
    } else if (o->has_arch) {
        rc = explicit_desc(o, d);
    } else {
        return usage_error("give --preset NAME, --arch with shapes, or --draft-of DIR");
    }
    if (rc >= 0)
        return rc;
    if (d->arch == DUET_ARCH_OPT && (o->desc.head_dim || o->desc.sliding_window))
        return usage_error("--head-dim and --sliding-window are for the llama family");
    if (o->desc.sliding_window && strcmp(d->architecture, "LlamaForCausalLM") == 0)
        return usage_error("--sliding-window needs --arch mistral, qwen2 or qwen3");
    derived = !o->desc.head_dim && (o->desc.hidden_size || o->desc.num_heads || !d->head_dim);
    apply_shapes(o, d);
    if (derived && d->hidden_size % d->num_heads)
        return usage_error("the hidden size must be a multiple of the number of heads (or give "
                           "--head-dim)");
    if (d->arch == DUET_ARCH_OPT)
        d->num_kv_heads = d->num_heads;
    d->torch_dtype = o->has_dtype ? o->dtype : DUET_DTYPE_BF16;
    return -1;
}

/* Prints the message of a failure; returns rc. */
static int report(const struct duet__msg *msg, int rc)
{
    fprintf(stderr, "duet-mkmodel: %s\n", msg->buf);
    return rc;
}

/* Writes the model of p (its description complete). */
static int generate_with(const struct options *o, struct duet__gen_params *p, struct duet__msg *msg)
{
    int exponent;
    duet_status st;

    p->tail_from = o->tail_from >= 0 ? (uint32_t)o->tail_from : p->desc.num_layers;
    if (o->tail_scale > 0) {
        frexp(o->tail_scale, &exponent); /* scale = 0.5 × 2^exponent */
        p->tail_log2 = exponent - 1;
    }
    if (duet__gen_check(p, msg))
        return report(msg, EXIT_USAGE);
    st = duet__gen_model(p, msg);
    if (st)
        return report(msg, st == DUET_STATUS_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_FAILURE);
    return EXIT_SUCCESS;
}

/* A target model: the description from the options (and --tokenizer, whose files are read
 * before the output folder is touched and written after the model). */
static int generate(const struct options *o, struct duet__msg *msg)
{
    struct duet__gen_params p = {.dir = o->out,
                                 .seed = o->seed,
                                 .shard_bytes = o->shard_bytes,
                                 .flags = o->quiet ? DUET_MODEL_QUIET : 0,
                                 .force = o->force};
    struct duet__tok_files tok = {0};
    int rc = target_desc(o, &p.desc);

    if (rc >= 0)
        return rc;
    if (o->tokenizer &&
        (rc = duet__tok_files_read(o->tokenizer, &p.desc, o->desc.vocab_size != 0, &tok)))
        return rc;
    rc = generate_with(o, &p, msg);
    if (rc == EXIT_SUCCESS && o->tokenizer)
        rc = duet__tok_files_write(&tok, o->out);
    duet__tok_files_free(&tok);
    return rc;
}

static int derive(const struct options *o, struct duet__msg *msg)
{
    struct duet__draft_params p = {.target_dir = o->draft_of,
                                   .dir = o->out,
                                   .num_layers = o->desc.num_layers,
                                   .noise = o->noise > 0 ? o->noise : 0,
                                   .spread = o->spread,
                                   .has_dtype = o->has_dtype,
                                   .dtype = o->dtype,
                                   .seed = o->seed,
                                   .shard_bytes = o->shard_bytes,
                                   .flags = o->quiet ? DUET_MODEL_QUIET : 0,
                                   .force = o->force};
    struct duet__tok_files tok = {0};
    bool shared = duet__tok_files_present(o->draft_of);
    duet_status st;
    int rc;

    /* the target's tokenizer, so that draft and target share the vocabulary */
    if (shared && (rc = duet__tok_files_read(o->draft_of, NULL, false, &tok)))
        return rc;
    st = duet__gen_draft(&p, msg);
    if (st)
        rc = report(msg, st == DUET_STATUS_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_FAILURE);
    else
        rc = shared ? duet__tok_files_write(&tok, o->out) : EXIT_SUCCESS;
    duet__tok_files_free(&tok);
    return rc;
}

/* Mode rules that getopt cannot express; -1 to go on, or an exit status. */
static int check_modes(const struct options *o)
{
    const duet_model_desc *g = &o->desc;
    bool shapes = g->hidden_size || g->num_heads || g->num_kv_heads || g->intermediate_size ||
                  g->vocab_size || g->max_position || g->word_embed_proj_dim || o->tie ||
                  o->post_ln;

    if (!o->out)
        return usage_error("--out DIR is required");
    if ((o->tail_from >= 0) != (o->tail_scale > 0))
        return usage_error("--tail-from N and --tail-scale S go together");
    if (!o->draft_of) {
        if (o->noise >= 0 || o->spread)
            return usage_error("--noise and --draft-layers need --draft-of");
        return -1;
    }
    if (o->preset || o->has_arch || shapes || o->tail_from >= 0)
        return usage_error("--draft-of takes its shapes from the target: give only --layers N "
                           "(and --noise, --draft-layers, --dtype, --seed)");
    if (o->tokenizer)
        return usage_error("--draft-of takes the target's tokenizer: --tokenizer is for targets");
    if (!g->num_layers)
        return usage_error("--draft-of needs --layers N");
    return -1;
}

static void summary(const struct options *o, double seconds)
{
    duet_model *m;
    char err[512];

    if (o->quiet || duet_model_create(o->out, DUET_MODEL_QUIET, &m, err, sizeof(err)))
        return;
    printf("duet-mkmodel: wrote %s: %s, %u layers, %zu tensors, %.1f MB of %s in %.1f s\n", o->out,
           duet_model_describe(m)->architecture, duet_model_describe(m)->num_layers,
           duet_model_num_tensors(m), (double)duet_model_weight_bytes(m) / 1e6,
           duet_dtype_name(duet_model_tensor_at(m, 0)->dtype), seconds);
    duet_model_destroy(m);
}

/* DIR/model.gguf from the model just written in DIR. */
static int write_gguf(const struct options *o, struct duet__msg *msg)
{
    size_t len = strlen(o->out) + sizeof("/model.gguf");
    char *path = malloc(len);
    duet_model *m = NULL;
    duet_status st;

    if (!path) {
        fprintf(stderr, "duet-mkmodel: out of memory\n");
        return EXIT_FAILURE;
    }
    snprintf(path, len, "%s/model.gguf", o->out);
    st = duet_model_create(o->out, DUET_MODEL_QUIET, &m, msg->buf, msg->size);
    if (!st)
        st = duet__gguf_write(m, path, o->gguf, o->quiet ? DUET_MODEL_QUIET : 0, msg);
    duet_model_destroy(m);
    free(path);
    if (st)
        return report(msg, st == DUET_STATUS_UNSUPPORTED ? EXIT_USAGE : EXIT_FAILURE);
    if (!o->quiet)
        printf("duet-mkmodel: wrote %s/model.gguf (%s)\n", o->out, duet_dtype_name(o->gguf));
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    struct options o;
    char err[1024] = "";
    struct duet__msg msg = {err, sizeof(err)};
    struct timespec t0, t1;
    int rc = parse_args(argc, argv, &o);

    if (rc < 0)
        rc = check_modes(&o);
    if (rc >= 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = o.draft_of ? derive(&o, &msg) : generate(&o, &msg);
    if (rc == EXIT_SUCCESS && o.has_gguf)
        rc = write_gguf(&o, &msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == EXIT_SUCCESS)
        summary(&o, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return rc;
}
