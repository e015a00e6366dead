/*
 * Writers of the generator: safetensors files streamed chunk by chunk, the shard index and the
 * two JSON configs. Every JSON text is built and dumped by jansson.
 *
 *   plan    tensors in order → shards: a new shard starts when the next tensor would take the
 *           current one past shard_bytes (a tensor larger than that gets a shard of its own)
 *   header  {"__metadata__": {"format": "pt"}, name: {dtype, shape, data_offsets}, ...},
 *           padded with spaces so that the data area starts 8-byte aligned ("format": "pt" is
 *           what transformers wants to see before it loads a safetensors file)
 *   data    each tensor in chunks of CHUNK elements: fill (floats) → convert → write, so memory
 *           stays at two chunk buffers whatever the model's size
 *   commit  every file is written as NAME.partial and renamed when complete: an interrupted
 *           run never leaves a file that looks whole
 *   index   model.safetensors.index.json {"metadata": {"total_size"}, "weight_map"} (shards)
 */
#include "model-int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20) /* elements per fill call */

/* State of one duet__write_weights call. */
struct writer {
    const struct duet__write_params *p; /* folder, dtype, shard size, flags */
    struct duet__wtensor *t;            /* [n] the tensors, in writing order */
    size_t n;                           /* tensors */
    uint32_t n_shards;                  /* 0: the single file model.safetensors */
    duet__fill_fn fill;                 /* produces the values ... */
    void *ctx;                          /* ... with this context */
    float *values;                      /* [CHUNK] one chunk as floats */
    unsigned char *bytes;               /* [CHUNK × 4] the chunk in the file's dtype */
    struct duet__progress progress;     /* bytes written */
    struct duet__msg *msg;              /* where failures go */
};

static void shard_name(uint32_t shard, uint32_t n_shards, char *buf, size_t size)
{
    if (n_shards == 0)
        snprintf(buf, size, "model.safetensors");
    else
        snprintf(buf, size, "model-%05u-of-%05u.safetensors", shard + 1, n_shards);
}

/* Assigns shards and offsets; n_shards = 0 means the single file model.safetensors. */
static void plan(struct writer *w)
{
    uint64_t used = 0, size = duet_dtype_size(w->p->dtype);
    uint32_t shard = 0;

    for (size_t i = 0; i < w->n; i++) {
        uint64_t bytes = w->t[i].numel * size;

        if (w->p->shard_bytes && used > 0 && used + bytes > w->p->shard_bytes) {
            shard++;
            used = 0;
        }
        w->t[i].shard = shard;
        w->t[i].begin = used;
        used += bytes;
    }
    w->n_shards = w->p->shard_bytes ? shard + 1 : 0;
}

static json_t *tensor_entry(const struct writer *w, const struct duet__wtensor *t)
{
    json_t *shape = json_array();
    uint64_t end = t->begin + t->numel * duet_dtype_size(w->p->dtype);

    for (uint32_t d = 0; d < t->rank; d++)
        json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", duet_dtype_name(w->p->dtype), "shape", shape,
                     "data_offsets", (json_int_t)t->begin, (json_int_t)end);
}

/* The header of a shard, padded; malloc'd, *len bytes (a multiple of 8, with the prefix). */
static char *shard_header(const struct writer *w, uint32_t shard, size_t *len)
{
    json_t *root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    char *text, *padded;
    size_t n;

    for (size_t i = 0; root && i < w->n; i++)
        if (w->t[i].shard == shard)
            json_object_set_new(root, w->t[i].name, tensor_entry(w, &w->t[i]));
    text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text)
        return NULL;
    n = strlen(text);
    *len = (8 + n + 7) / 8 * 8;
    padded = malloc(*len);
    if (padded) {
        uint64_t hlen = *len - 8;

        for (int b = 0; b < 8; b++)
            padded[b] = (char)(hlen >> (8 * b) & 0xff);
        memcpy(padded + 8, text, n);
        memset(padded + 8 + n, ' ', *len - 8 - n);
    }
    free(text);
    return padded;
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t r = write(fd, p, len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

static duet_status write_tensor(struct writer *w, int fd, size_t i, const char *path)
{
    size_t size = duet_dtype_size(w->p->dtype);

    for (uint64_t first = 0; first < w->t[i].numel; first += CHUNK) {
        uint64_t n = w->t[i].numel - first < CHUNK ? w->t[i].numel - first : CHUNK;
        duet_status st = w->fill(w->ctx, i, first, n, w->values, w->msg);

        if (st)
            return st;
        duet__store(w->p->dtype, w->values, (size_t)n, w->bytes);
        if (!write_all(fd, w->bytes, (size_t)n * size))
            return duet__fail(w->msg, DUET_STATUS_IO, "%s: write: %s", path, strerror(errno));
        duet__progress_add(&w->progress, n * size);
    }
    return DUET_STATUS_OK;
}

/* Writes path.partial: the header, then the shard's tensors. */
static duet_status write_file(struct writer *w, uint32_t shard, const char *path)
{
    size_t len;
    char *header = shard_header(w, shard, &len);
    duet_status st = DUET_STATUS_OK;
    int fd;

    if (!header)
        return duet__fail(w->msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(header);
        return duet__fail(w->msg, DUET_STATUS_IO, "%s: %s", path, strerror(errno));
    }
    if (!write_all(fd, header, len))
        st = duet__fail(w->msg, DUET_STATUS_IO, "%s: write: %s", path, strerror(errno));
    for (size_t i = 0; !st && i < w->n; i++)
        if (w->t[i].shard == shard)
            st = write_tensor(w, fd, i, path);
    if (close(fd) != 0 && !st)
        st = duet__fail(w->msg, DUET_STATUS_IO, "%s: close: %s", path, strerror(errno));
    free(header);
    return st;
}

static duet_status write_shard(struct writer *w, uint32_t shard)
{
    char name[64], partial[80];
    char *path, *tmp;
    duet_status st;

    shard_name(shard, w->n_shards, name, sizeof(name));
    snprintf(partial, sizeof(partial), "%s.partial", name);
    path = duet__path_join(w->p->dir, name);
    tmp = duet__path_join(w->p->dir, partial);
    if (!path || !tmp)
        st = duet__fail(w->msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", w->p->dir);
    else
        st = write_file(w, shard, tmp);
    if (!st && rename(tmp, path) != 0)
        st = duet__fail(w->msg, DUET_STATUS_IO, "%s: rename: %s", path, strerror(errno));
    if (st && tmp)
        unlink(tmp);
    free(path);
    free(tmp);
    return st;
}

static duet_status write_index(struct writer *w)
{
    json_t *map = json_object(), *root;
    uint64_t total = 0;
    char name[64], *path = duet__path_join(w->p->dir, "model.safetensors.index.json");
    duet_status st = DUET_STATUS_OK;

    for (size_t i = 0; map && i < w->n; i++) {
        shard_name(w->t[i].shard, w->n_shards, name, sizeof(name));
        json_object_set_new(map, w->t[i].name, json_string(name));
        total += w->t[i].numel * duet_dtype_size(w->p->dtype);
    }
    root =
        json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    if (!root || !path)
        st = duet__fail(w->msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", w->p->dir);
    else if (json_dump_file(root, path, JSON_INDENT(2)) != 0)
        st = duet__fail(w->msg, DUET_STATUS_IO, "%s: cannot write", path);
    json_decref(root);
    free(path);
    return st;
}

duet_status duet__write_weights(const struct duet__write_params *p, struct duet__wtensor *t,
                                size_t n, duet__fill_fn fill, void *ctx, struct duet__msg *msg)
{
    struct writer w = {.p = p, .t = t, .n = n, .fill = fill, .ctx = ctx, .msg = msg};
    uint64_t total = 0;
    duet_status st = DUET_STATUS_OK;

    plan(&w);
    w.values = malloc(CHUNK * sizeof(float));
    w.bytes = malloc(CHUNK * sizeof(float));
    if (!w.values || !w.bytes)
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
    for (size_t i = 0; i < n; i++)
        total += t[i].numel * duet_dtype_size(p->dtype);
    duet__progress_start(&w.progress, NULL, p->flags, "writing weights", total);
    for (uint32_t s = 0; !st && s < (w.n_shards ? w.n_shards : 1); s++)
        st = write_shard(&w, s);
    duet__progress_end(&w.progress);
    if (!st && w.n_shards)
        st = write_index(&w);
    free(w.values);
    free(w.bytes);
    return st;
}

/* ---- config.json and generation_config.json --------------------------------------------- */

static const char *dtype_torch_name(duet_dtype dtype)
{
    return dtype == DUET_DTYPE_BF16 ? "bfloat16" : dtype == DUET_DTYPE_F16 ? "float16" : "float32";
}

/* bos / eos / pad ids into obj (eos as a number when there is one, else a list). */
static void set_ids(json_t *obj, const duet_model_desc *d)
{
    json_t *eos = json_array();

    json_object_set_new(obj, "bos_token_id",
                        d->bos_token_id >= 0 ? json_integer(d->bos_token_id) : json_null());
    for (uint32_t i = 0; i < d->n_eos; i++)
        json_array_append_new(eos, json_integer(d->eos_token_ids[i]));
    if (d->n_eos == 1) {
        json_object_set_new(obj, "eos_token_id", json_integer(d->eos_token_ids[0]));
        json_decref(eos);
    } else {
        json_object_set_new(obj, "eos_token_id", d->n_eos ? eos : json_null());
        if (!d->n_eos)
            json_decref(eos);
    }
    if (d->pad_token_id >= 0)
        json_object_set_new(obj, "pad_token_id", json_integer(d->pad_token_id));
}

static json_t *rope_json(const duet_model_desc *d)
{
    switch (d->rope_scaling) {
    case DUET_ROPE_SCALING_LINEAR:
        return json_pack("{s:s, s:f}", "rope_type", "linear", "factor", d->rope_factor);
    case DUET_ROPE_SCALING_LLAMA3:
        return json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                         d->rope_factor, "low_freq_factor", d->rope_low_freq_factor,
                         "high_freq_factor", d->rope_high_freq_factor,
                         "original_max_position_embeddings", (int)d->rope_original_max_position);
    case DUET_ROPE_SCALING_NONE:
        break;
    }
    return json_null();
}

static const char *llama_model_type(const duet_model_desc *d)
{
    static const char *const names[][2] = {{"MistralForCausalLM", "mistral"},
                                           {"Qwen2ForCausalLM", "qwen2"},
                                           {"Qwen3ForCausalLM", "qwen3"}};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(d->architecture, names[i][0]) == 0)
            return names[i][1];
    return "llama";
}

/* Mistral's sliding_window (null: none); Qwen's use_sliding_window, sliding_window and
 * max_window_layers 0 (a window on every layer). */
static void set_window(json_t *o, const duet_model_desc *d)
{
    if (strncmp(d->architecture, "Qwen", 4) == 0) {
        json_object_set_new(o, "use_sliding_window", json_boolean(d->sliding_window != 0));
        json_object_set_new(o, "sliding_window",
                            d->sliding_window ? json_integer(d->sliding_window) : json_null());
        json_object_set_new(o, "max_window_layers", json_integer(0));
    } else if (strcmp(d->architecture, "MistralForCausalLM") == 0) {
        json_object_set_new(o, "sliding_window",
                            d->sliding_window ? json_integer(d->sliding_window) : json_null());
    }
}

static json_t *llama_json(const duet_model_desc *d)
{
    json_t *o = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:o, s:b, s:s, s:b}",
        "architectures", d->architecture, "model_type", llama_model_type(d), "hidden_size",
        (int)d->hidden_size, "intermediate_size", (int)d->intermediate_size, "num_hidden_layers",
        (int)d->num_layers, "num_attention_heads", (int)d->num_heads, "num_key_value_heads",
        (int)d->num_kv_heads, "vocab_size", (int)d->vocab_size, "max_position_embeddings",
        (int)d->max_position, "rms_norm_eps", d->norm_eps, "rope_theta", d->rope_theta,
        "rope_scaling", rope_json(d), "tie_word_embeddings", d->tie_word_embeddings, "hidden_act",
        "silu", "mlp_bias", 0);

    if (!o)
        return NULL;
    if (!d->attention_bias) /* Qwen2 has its biases without the key */
        json_object_set_new(o, "attention_bias", json_false());
    if (d->qk_norm || d->head_dim * d->num_heads != d->hidden_size)
        json_object_set_new(o, "head_dim", json_integer(d->head_dim));
    set_window(o, d);
    return o;
}

static json_t *opt_json(const duet_model_desc *d)
{
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:b, s:s, s:b, s:b, "
                     "s:b}",
                     "architectures", "OPTForCausalLM", "model_type", "opt", "hidden_size",
                     (int)d->hidden_size, "ffn_dim", (int)d->intermediate_size, "num_hidden_layers",
                     (int)d->num_layers, "num_attention_heads", (int)d->num_heads, "vocab_size",
                     (int)d->vocab_size, "max_position_embeddings", (int)d->max_position,
                     "word_embed_proj_dim", (int)d->word_embed_proj_dim, "do_layer_norm_before",
                     d->do_layer_norm_before, "_remove_final_layer_norm",
                     d->do_layer_norm_before && !d->final_layer_norm, "activation_function", "relu",
                     "enable_bias", 1, "layer_norm_elementwise_affine", 1, "tie_word_embeddings",
                     d->tie_word_embeddings);
}

static duet_status dump(json_t *root, const char *dir, const char *name, struct duet__msg *msg)
{
    char *path = duet__path_join(dir, name);
    duet_status st = DUET_STATUS_OK;

    if (!root || !path)
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
    else if (json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0)
        st = duet__fail(msg, DUET_STATUS_IO, "%s: cannot write", path);
    json_decref(root);
    free(path);
    return st;
}

duet_status duet__write_configs(const char *dir, const duet_model_desc *d,
                                const char *provenance_json, struct duet__msg *msg)
{
    json_t *config = d->arch == DUET_ARCH_OPT ? opt_json(d) : llama_json(d);
    json_t *gen = json_pack("{s:b}", "_from_model_config", 1);
    duet_status st;

    if (config) {
        set_ids(config, d);
        json_object_set_new(config, "torch_dtype", json_string(dtype_torch_name(d->torch_dtype)));
        if (provenance_json)
            json_object_set_new(config, "_duet_mkmodel", json_loads(provenance_json, 0, NULL));
    }
    if (gen)
        set_ids(gen, d);
    st = dump(config, dir, "config.json", msg);
    if (!st)
        st = dump(gen, dir, "generation_config.json", msg);
    else
        json_decref(gen);
    return st;
}

/* Creates dir if needed; refuses (or, forced, clears) a model already there. */
duet_status duet__prepare_dir(const char *dir, bool force, struct duet__msg *msg)
{
    char *config = duet__path_join(dir, "config.json");
    char *index = duet__path_join(dir, "model.safetensors.index.json");
    char *single = duet__path_join(dir, "model.safetensors");
    bool taken =
        config && index && single &&
        (access(config, F_OK) == 0 || access(index, F_OK) == 0 || access(single, F_OK) == 0);
    duet_status st = DUET_STATUS_OK;

    if (!config || !index || !single)
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
    else if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        st = duet__fail(msg, DUET_STATUS_IO, "%s: %s", dir, strerror(errno));
    else if (taken && !force)
        st = duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT,
                        "%s already holds a model; use --force to replace it", dir);
    else if (taken)
        st = duet__clear_model_dir(dir, msg);
    free(config);
    free(index);
    free(single);
    return st;
}

/* ---- replacing a model ------------------------------------------------------------------ */

static bool is_model_file(const char *name)
{
    /* the tokenizer's files too (duet-mkmodel --tokenizer): a stale one would not match the new
     * vocabulary */
    static const char *const patterns[] = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.*",
        "model-*-of-*.safetensors",
        "model-*-of-*.safetensors.partial",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "model.gguf",
        "model.gguf.partial",
    };

    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++)
        if (fnmatch(patterns[i], name, 0) == 0)
            return true;
    return false;
}

duet_status duet__clear_model_dir(const char *dir, struct duet__msg *msg)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    duet_status st = DUET_STATUS_OK;

    if (!d)
        return errno == ENOENT ? DUET_STATUS_OK
                               : duet__fail(msg, DUET_STATUS_IO, "%s: %s", dir, strerror(errno));
    while (!st && (e = readdir(d))) {
        char *path;

        if (!is_model_file(e->d_name))
            continue;
        path = duet__path_join(dir, e->d_name);
        if (!path)
            st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
        else if (unlink(path) != 0)
            st = duet__fail(msg, DUET_STATUS_IO, "%s: %s", path, strerror(errno));
        free(path);
    }
    closedir(d);
    return st;
}
