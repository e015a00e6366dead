/*
 * duet-model-info — validates a Hugging Face model folder and prints its architecture and
 * tensor table (DESIGN §9). It runs the same validation as a worker loading the model
 * (duet_model_create), so a folder it accepts loads, and a folder it refuses gets the same
 * message: the file, the tensor or key, and what is wrong.
 */
#include "build_config.h"

#include <duet/model.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_USAGE = 2 };

struct options {
    const char *dir;   /* the model folder */
    bool tensors;      /* print the tensor table */
    bool check_values; /* scan every weight for NaN / infinity */
    bool quiet;        /* no progress */
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: duet-model-info [options] DIR|FILE.gguf\n"
               "\n"
               "Validates the model folder DIR (config.json, generation_config.json, and\n"
               "model.safetensors or model.safetensors.index.json with its shards: every\n"
               "tensor's name, dtype, shape and byte range), or a GGUF file (its metadata,\n"
               "tensor infos, types, offsets and sizes; tensors shown under the Hugging Face\n"
               "names duet uses), and prints the architecture and a tensor table.\n"
               "\n"
               "      --no-tensors     print the architecture only\n"
               "      --check-values   also read every weight and refuse NaN or infinity\n"
               "      --quiet          no progress on the terminal\n"
               "  -h, --help           this text\n"
               "  -V, --version        the version\n"
               "\n"
               "Exit status: 0 valid, 1 invalid or unreadable (the message names the file and\n"
               "tensor), 2 bad usage.\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum { OPT_NO_TENSORS = 256, OPT_CHECK_VALUES, OPT_QUIET };
    static const struct option long_options[] = {
        {"no-tensors", no_argument, NULL, OPT_NO_TENSORS},
        {"check-values", no_argument, NULL, OPT_CHECK_VALUES},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct options){.tensors = true};
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_NO_TENSORS:
            o->tensors = false;
            break;
        case OPT_CHECK_VALUES:
            o->check_values = true;
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("duet-model-info %s\n", PACKAGE_VERSION);
            return EXIT_SUCCESS;
        default:
            fprintf(stderr, "Try 'duet-model-info --help'.\n");
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "duet-model-info: give exactly one model folder or GGUF file\n"
                        "Try 'duet-model-info --help'.\n");
        return EXIT_USAGE;
    }
    o->dir = argv[optind];
    return -1;
}

static const char *rope_str(const duet_model_desc *d, char *buf, size_t size)
{
    switch (d->rope_scaling) {
    case DUET_ROPE_SCALING_LINEAR:
        snprintf(buf, size, "theta %g, linear scaling, factor %g", d->rope_theta, d->rope_factor);
        break;
    case DUET_ROPE_SCALING_LLAMA3:
        snprintf(buf, size,
                 "theta %g, llama3 scaling, factor %g, low_freq_factor %g, high_freq_factor %g, "
                 "original_max_position_embeddings %u",
                 d->rope_theta, d->rope_factor, d->rope_low_freq_factor, d->rope_high_freq_factor,
                 d->rope_original_max_position);
        break;
    default:
        snprintf(buf, size, "theta %g, no scaling", d->rope_theta);
    }
    return buf;
}

static void print_ids(const duet_model_desc *d)
{
    printf("bos_token_id:     %d\n", d->bos_token_id);
    printf("eos_token_ids:    ");
    for (uint32_t i = 0; i < d->n_eos; i++)
        printf("%s%d", i ? ", " : "", d->eos_token_ids[i]);
    printf("%s\n", d->n_eos ? "" : "none");
    printf("pad_token_id:     %d\n", d->pad_token_id);
}

static void print_arch(const duet_model *m)
{
    const duet_model_desc *d = duet_model_describe(m);
    char rope[256];

    printf("model:            %s\n", duet_model_dir(m));
    printf("architecture:     %s (%s)\n", d->architecture, duet_arch_name(d->arch));
    printf("hidden_size:      %u\n", d->hidden_size);
    printf("intermediate:     %u (%s)\n", d->intermediate_size,
           d->activation == DUET_ACTIVATION_RELU ? "relu" : "silu-gated");
    printf("layers:           %u\n", d->num_layers);
    printf("heads:            %u (kv heads %u, head_dim %u)\n", d->num_heads, d->num_kv_heads,
           d->head_dim);
    printf("vocab_size:       %u\n", d->vocab_size);
    printf("max_positions:    %u\n", d->max_position);
    printf("norm_eps:         %g\n", d->norm_eps);
    if (d->arch == DUET_ARCH_LLAMA)
        printf("rope:             %s\n", rope_str(d, rope, sizeof(rope)));
    else
        printf("opt:              layer norm %s each block, %s final layer norm, "
               "word_embed_proj_dim %u, learned positions offset %u\n",
               d->do_layer_norm_before ? "before" : "after", d->final_layer_norm ? "a" : "no",
               d->word_embed_proj_dim, d->position_offset);
    printf("tied embeddings:  %s\n", d->tie_word_embeddings ? "yes" : "no");
    if (d->arch == DUET_ARCH_LLAMA)
        printf("attention:        %s%s, %s\n", d->attention_bias ? "q/k/v biases" : "no biases",
               d->qk_norm ? ", per-head q/k RMSNorm" : "",
               d->sliding_window ? "sliding window" : "full (no sliding window)");
    if (d->sliding_window)
        printf("sliding_window:   %u\n", d->sliding_window);
    printf("torch_dtype:      %s\n", duet_dtype_name(d->torch_dtype));
    print_ids(d);
}

static void print_tensor(const duet_tensor *t, int width, const char *dir)
{
    char shape[128];
    size_t len = 0, dir_len = strlen(dir);
    const char *file = t->file;

    shape[0] = '\0';
    for (uint32_t i = 0; i < t->rank && len < sizeof(shape); i++)
        len += (size_t)snprintf(shape + len, sizeof(shape) - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)t->shape[i]);
    if (strncmp(file, dir, dir_len) == 0 && file[dir_len] == '/')
        file += dir_len + 1;
    printf("  %-*s %-5s [%s]%*s %12llu  [%llu, %llu)  %s\n", width, t->name,
           duet_dtype_name(t->dtype), shape, (int)(14 - (len < 14 ? len : 14)), "",
           (unsigned long long)t->nbytes, (unsigned long long)t->offset,
           (unsigned long long)(t->offset + t->nbytes), file);
}

static void print_tensors(const duet_model *m)
{
    size_t n = duet_model_num_tensors(m);
    uint64_t params = 0;
    int width = 4;

    for (size_t i = 0; i < n; i++) {
        const duet_tensor *t = duet_model_tensor_at(m, i);

        if ((int)strlen(t->name) > width)
            width = (int)strlen(t->name);
        params += t->numel;
    }
    printf("tensors:          %zu, %llu elements, %llu bytes\n", n, (unsigned long long)params,
           (unsigned long long)duet_model_weight_bytes(m));
    printf("  %-*s %-5s %-16s %12s  %-24s %s\n", width, "name", "dtype", "shape", "bytes",
           "[begin, end) in file", "file");
    for (size_t i = 0; i < n; i++)
        print_tensor(duet_model_tensor_at(m, i), width, duet_model_dir(m));
}

int main(int argc, char **argv)
{
    struct options o;
    duet_model *m;
    char err[2048];
    int rc = parse_args(argc, argv, &o);
    uint32_t flags;

    if (rc >= 0)
        return rc;
    flags = o.quiet ? DUET_MODEL_QUIET : 0;
    if (duet_model_create(o.dir, flags, &m, err, sizeof(err))) {
        fprintf(stderr, "duet-model-info: %s\n", err);
        return EXIT_FAILURE;
    }
    print_arch(m);
    if (o.tensors)
        print_tensors(m);
    if (o.check_values && duet_model_check_values(m, flags, err, sizeof(err))) {
        fprintf(stderr, "duet-model-info: %s\n", err);
        rc = EXIT_FAILURE;
    } else {
        printf("valid: yes%s\n", o.check_values ? " (every value finite)" : "");
        rc = EXIT_SUCCESS;
    }
    duet_model_destroy(m);
    return rc;
}
