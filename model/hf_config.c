/*
 * hf_config.c — a Hugging Face model's config.json and generation_config.json → duet_model_desc.
 * (Not duet's own configuration: that is plugin_api/, duet/config.h.)
 *
 * The keys and defaults are those of Hugging Face's LlamaConfig, MistralConfig (a sliding window
 * on every layer), Qwen2Config (q/k/v biases), Qwen3Config (per-head q/k RMSNorm, head_dim 128 by
 * default) and OPTConfig. Keys duet does not need are ignored, as transformers ignores them; keys
 * that change the computation in a way duet does not implement are refused by name
 * (UNSUPPORTED): a sliding window on some layers only, attention or MLP biases in Llama, another
 * activation, rope_scaling types other than linear and llama3, OPT without biases or without
 * LayerNorm affine parameters, and any quantization_config.
 *
 *   config.json ──► architecture (architectures[0], else model_type) ──► defaults of that class
 *     ──► sizes (integers in range) ──► switches ──► refused fields ──► rope_scaling (Llama)
 *     ──► torch_dtype ──► BOS / EOS / PAD ──► duet__desc_check (cross-field rules)
 *   generation_config.json ──► BOS / EOS / PAD given there replace config.json's
 *
 * Every message names the file and the key.
 */
#include "model-int.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct reader {
    const char *path;      /* for messages */
    json_t *root;          /* the parsed object */
    struct duet__msg *msg; /* where failures go */
};

/* A size field: key → the uint32_t at `offset` in duet_model_desc. */
struct size_field {
    const char *key;
    size_t offset;
    bool required;
    uint32_t hi; /* 1 .. hi */
};

#define SIZE_FIELD(key, field, req, hi)                                                            \
    {                                                                                              \
        key, offsetof(duet_model_desc, field), req, hi                                             \
    }

static const struct size_field llama_sizes[] = {
    SIZE_FIELD("hidden_size", hidden_size, true, DUET__MAX_DIM),
    SIZE_FIELD("intermediate_size", intermediate_size, true, DUET__MAX_DIM),
    SIZE_FIELD("num_hidden_layers", num_layers, true, DUET__MAX_LAYERS),
    SIZE_FIELD("num_attention_heads", num_heads, true, DUET__MAX_HEADS),
    SIZE_FIELD("num_key_value_heads", num_kv_heads, false, DUET__MAX_HEADS),
    SIZE_FIELD("head_dim", head_dim, false, DUET__MAX_DIM),
    SIZE_FIELD("vocab_size", vocab_size, true, DUET__MAX_DIM),
    SIZE_FIELD("max_position_embeddings", max_position, false, DUET__MAX_DIM),
};

static const struct size_field opt_sizes[] = {
    SIZE_FIELD("hidden_size", hidden_size, true, DUET__MAX_DIM),
    SIZE_FIELD("ffn_dim", intermediate_size, true, DUET__MAX_DIM),
    SIZE_FIELD("num_hidden_layers", num_layers, true, DUET__MAX_LAYERS),
    SIZE_FIELD("num_attention_heads", num_heads, true, DUET__MAX_HEADS),
    SIZE_FIELD("vocab_size", vocab_size, true, DUET__MAX_DIM),
    SIZE_FIELD("max_position_embeddings", max_position, false, DUET__MAX_DIM),
    SIZE_FIELD("word_embed_proj_dim", word_embed_proj_dim, false, DUET__MAX_DIM),
};

static const struct {
    const char *architecture;
    const char *model_type;
    duet_arch arch;
} known_archs[] = {
    {"LlamaForCausalLM", "llama", DUET_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", DUET_ARCH_LLAMA},
    {"Qwen2ForCausalLM", "qwen2", DUET_ARCH_LLAMA},
    {"Qwen3ForCausalLM", "qwen3", DUET_ARCH_LLAMA},
    {"OPTForCausalLM", "opt", DUET_ARCH_OPT},
};

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* The value of key, or NULL when absent or null. */
static json_t *get(const struct reader *r, const char *key)
{
    json_t *v = json_object_get(r->root, key);

    return json_is_null(v) ? NULL : v;
}

static duet_status read_size(const struct reader *r, const struct size_field *f, duet_model_desc *d)
{
    json_t *v = get(r, f->key);
    uint32_t *out = (uint32_t *)(void *)((char *)d + f->offset);

    if (!v && f->required)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" is missing", r->path, f->key);
    if (!v)
        return DUET_STATUS_OK;
    if (!json_is_integer(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" must be an integer, not %s",
                          r->path, f->key, type_name(v));
    if (json_integer_value(v) < 1 || json_integer_value(v) > f->hi)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: %s %lld is out of range (1 .. %u)",
                          r->path, f->key, (long long)json_integer_value(v), f->hi);
    *out = (uint32_t)json_integer_value(v);
    return DUET_STATUS_OK;
}

static duet_status read_sizes(const struct reader *r, const struct size_field *f, size_t n,
                              duet_model_desc *d)
{
    for (size_t i = 0; i < n; i++) {
        duet_status st = read_size(r, &f[i], d);

        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

static duet_status read_bool(const struct reader *r, const char *key, bool *out)
{
    json_t *v = get(r, key);

    if (!v)
        return DUET_STATUS_OK;
    if (!json_is_boolean(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: \"%s\" must be true or false, not %s", r->path, key, type_name(v));
    *out = json_is_true(v);
    return DUET_STATUS_OK;
}

/* A number (integer or real) of obj[key] in [lo, hi]; absent keeps *out unless required. */
static duet_status read_number(const struct reader *r, const json_t *obj, const char *key,
                               bool required, double lo, double hi, double *out)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_null(v))
        v = NULL;
    if (!v && required)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" is missing", r->path, key);
    if (!v)
        return DUET_STATUS_OK;
    if (!json_is_number(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" must be a number, not %s",
                          r->path, key, type_name(v));
    if (!(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: %s %g is out of range (%g .. %g)",
                          r->path, key, json_number_value(v), lo, hi);
    *out = json_number_value(v);
    return DUET_STATUS_OK;
}

/* key, when present, must be the string `want`. */
static duet_status require_string(const struct reader *r, const char *key, const char *want)
{
    json_t *v = get(r, key);

    if (!v || (json_is_string(v) && strcmp(json_string_value(v), want) == 0))
        return DUET_STATUS_OK;
    if (!json_is_string(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" must be a string, not %s",
                          r->path, key, type_name(v));
    return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                      "%s: %s '%s' is not supported (duet runs '%s')", r->path, key,
                      json_string_value(v), want);
}

/* key, when present, must be the boolean `want`. */
static duet_status require_bool(const struct reader *r, const char *key, bool want)
{
    bool value = want;
    duet_status st = read_bool(r, key, &value);

    if (st || value == want)
        return st;
    return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED, "%s: %s %s is not supported", r->path, key,
                      value ? "true" : "false");
}

/* key must be absent or null. */
static duet_status require_absent(const struct reader *r, const char *key, const char *what)
{
    json_t *v = get(r, key);
    char *text;
    duet_status st;

    if (!v)
        return DUET_STATUS_OK;
    text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    st = duet__fail(r->msg, DUET_STATUS_UNSUPPORTED, "%s: %s %.60s is not supported (%s)", r->path,
                    key, text ? text : "(value)", what);
    free(text);
    return st;
}

static duet_status find_arch(const struct reader *r, duet_model_desc *d)
{
    json_t *archs = get(r, "architectures"), *type = get(r, "model_type");
    const char *name = NULL;

    if (json_is_array(archs) && json_array_size(archs) > 0) {
        if (!json_is_string(json_array_get(archs, 0)))
            return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                              "%s: \"architectures\" must list strings", r->path);
        name = json_string_value(json_array_get(archs, 0));
    }
    for (size_t i = 0; i < sizeof(known_archs) / sizeof(known_archs[0]); i++) {
        if ((name && strcmp(name, known_archs[i].architecture) == 0) ||
            (!name && json_is_string(type) &&
             strcmp(json_string_value(type), known_archs[i].model_type) == 0)) {
            duet__desc_defaults(d, known_archs[i].arch);
            snprintf(d->architecture, sizeof(d->architecture), "%s", known_archs[i].architecture);
            duet__desc_family_defaults(d);
            return DUET_STATUS_OK;
        }
    }
    if (!name && !json_is_string(type))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: neither \"architectures\" nor \"model_type\" says what model this "
                          "is",
                          r->path);
    return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                      "%s: architecture '%s' is not supported (duet runs LlamaForCausalLM, "
                      "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and OPTForCausalLM)",
                      r->path, name ? name : json_string_value(type));
}

/* rope_scaling "llama3": four parameters, all required. */
static duet_status read_llama3(const struct reader *r, const json_t *rs, duet_model_desc *d)
{
    double orig = 0;
    duet_status st;

    d->rope_scaling = DUET_ROPE_SCALING_LLAMA3;
    st = read_number(r, rs, "factor", true, 1.0, 1e6, &d->rope_factor);
    if (!st)
        st = read_number(r, rs, "low_freq_factor", true, 1e-6, 1e6, &d->rope_low_freq_factor);
    if (!st)
        st = read_number(r, rs, "high_freq_factor", true, 1e-6, 1e6, &d->rope_high_freq_factor);
    if (!st)
        st = read_number(r, rs, "original_max_position_embeddings", true, 1, DUET__MAX_DIM, &orig);
    if (st)
        return st;
    if (orig != floor(orig))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: rope_scaling original_max_position_embeddings must be an integer",
                          r->path);
    d->rope_original_max_position = (uint32_t)orig;
    return DUET_STATUS_OK;
}

static duet_status read_rope(const struct reader *r, duet_model_desc *d)
{
    json_t *rs = get(r, "rope_scaling"), *type;
    const char *name;
    duet_status st = read_number(r, r->root, "rope_theta", false, 1.0, 1e12, &d->rope_theta);

    if (!st && !rs && json_is_object(get(r, "rope_parameters"))) /* transformers >= 5 */
        rs = get(r, "rope_parameters");
    if (st || !rs)
        return st;
    if (!json_is_object(rs))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: \"rope_scaling\" must be an object or null, not %s", r->path,
                          type_name(rs));
    st = read_number(r, rs, "rope_theta", false, 1.0, 1e12, &d->rope_theta);
    type = json_object_get(rs, "rope_type") ? json_object_get(rs, "rope_type")
                                            : json_object_get(rs, "type");
    if (st || !json_is_string(type))
        return st ? st
                  : duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                               "%s: rope_scaling has no \"rope_type\" string", r->path);
    name = json_string_value(type);
    if (strcmp(name, "default") == 0)
        return DUET_STATUS_OK;
    if (strcmp(name, "linear") == 0) {
        d->rope_scaling = DUET_ROPE_SCALING_LINEAR;
        return read_number(r, rs, "factor", true, 1.0, 1e6, &d->rope_factor);
    }
    if (strcmp(name, "llama3") == 0)
        return read_llama3(r, rs, d);
    return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                      "%s: rope_scaling type '%s' is not supported (duet supports linear and "
                      "llama3)",
                      r->path, name);
}

/* An integer of key in 0 .. hi into *out (absent or null: kept). */
static duet_status read_count(const struct reader *r, const char *key, uint32_t hi, uint32_t *out)
{
    json_t *v = get(r, key);

    if (!v)
        return DUET_STATUS_OK;
    if (!json_is_integer(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" must be an integer, not %s",
                          r->path, key, type_name(v));
    if (json_integer_value(v) < 0 || json_integer_value(v) > hi)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: %s %lld is out of range (0 .. %u)",
                          r->path, key, (long long)json_integer_value(v), hi);
    *out = (uint32_t)json_integer_value(v);
    return DUET_STATUS_OK;
}

/*
 * Qwen's explicit layer_types (transformers >= 4.53 writes them; they replace max_window_layers):
 * "sliding_attention" on every layer gives the window, "full_attention" on every layer none, a
 * mix is refused by name.
 */
static duet_status read_layer_types(const struct reader *r, duet_model_desc *d, uint32_t window)
{
    json_t *types = get(r, "layer_types"), *t;
    uint32_t sliding = 0;
    size_t i;

    if (!json_is_array(types) || json_array_size(types) != d->num_layers)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: \"layer_types\" must list one string per layer (%u)", r->path,
                          d->num_layers);
    json_array_foreach(types, i, t)
    {
        const char *name = json_is_string(t) ? json_string_value(t) : "";

        if (strcmp(name, "sliding_attention") == 0)
            sliding++;
        else if (strcmp(name, "full_attention") != 0)
            return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                              "%s: layer_types[%zu] '%s' is not supported (sliding_attention or "
                              "full_attention)",
                              r->path, i, name);
    }
    if (sliding && sliding < d->num_layers)
        return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                          "%s: layer_types with a sliding window on %u of %u layers is not "
                          "supported (duet runs a window on every layer or on none)",
                          r->path, sliding, d->num_layers);
    d->sliding_window = sliding ? window : 0;
    return DUET_STATUS_OK;
}

/*
 * The sliding window. Mistral: sliding_window (null: none) on every layer. Qwen2 / Qwen3: only
 * with use_sliding_window, and then, as transformers' layer_types has it, on layers
 * max_window_layers .. L - 1 (the first max_window_layers attend to everything): duet runs the
 * uniform cases (max_window_layers 0: every layer; >= L: none) and refuses a mix by name; an
 * explicit layer_types decides instead. Without use_sliding_window Qwen has no window, whatever
 * sliding_window and layer_types say (transformers sets sliding_window to None). Llama has no
 * window.
 */
static duet_status read_window(const struct reader *r, duet_model_desc *d)
{
    bool qwen = strncmp(d->architecture, "Qwen", 4) == 0, use = false;
    uint32_t window = 0, max_window_layers = 28; /* Qwen2Config's and Qwen3Config's default */
    duet_status st;

    if (strcmp(d->architecture, "LlamaForCausalLM") == 0) {
        st = require_bool(r, "use_sliding_window", false);
        return st ? st : require_absent(r, "sliding_window", "sliding-window attention");
    }
    st = read_bool(r, "use_sliding_window", &use);
    if (!st && (use || !qwen))
        st = read_count(r, "sliding_window", DUET__MAX_DIM, &window);
    if (!st && use)
        st = read_count(r, "max_window_layers", DUET__MAX_LAYERS, &max_window_layers);
    if (st || !qwen)
        goto out;
    if (use && !window)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: use_sliding_window is true but sliding_window is not a size",
                          r->path);
    if (use && get(r, "layer_types"))
        return read_layer_types(r, d, window);
    if (use && max_window_layers >= d->num_layers)
        window = 0; /* no layer reaches max_window_layers: full attention everywhere */
    else if (use && max_window_layers > 0)
        return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                          "%s: use_sliding_window with max_window_layers %u of %u layers is not "
                          "supported (a sliding window on layers %u .. %u only; duet runs a window "
                          "on every layer, max_window_layers 0, or on none)",
                          r->path, max_window_layers, d->num_layers, max_window_layers,
                          d->num_layers - 1);
out:
    d->sliding_window = window;
    return st;
}

static duet_status read_llama(const struct reader *r, duet_model_desc *d)
{
    duet_status st = read_sizes(r, llama_sizes, sizeof(llama_sizes) / sizeof(llama_sizes[0]), d);

    if (!st)
        st = read_number(r, r->root, "rms_norm_eps", false, 0.0, 1.0, &d->norm_eps);
    if (!st)
        st = read_bool(r, "tie_word_embeddings", &d->tie_word_embeddings);
    if (!st)
        st = require_string(r, "hidden_act", "silu");
    if (!st)
        st = require_bool(r, "attention_bias", false);
    if (!st)
        st = require_bool(r, "mlp_bias", false);
    if (!st)
        st = read_window(r, d);
    if (!st)
        st = read_rope(r, d);
    if (st)
        return st;
    if (!d->num_kv_heads)
        d->num_kv_heads = d->num_heads;
    if (!d->head_dim && d->hidden_size % d->num_heads)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: hidden_size %u is not a multiple of num_attention_heads %u (and no "
                          "head_dim is given)",
                          r->path, d->hidden_size, d->num_heads);
    if (!d->head_dim)
        d->head_dim = d->hidden_size / d->num_heads;
    return DUET_STATUS_OK;
}

static duet_status read_opt(const struct reader *r, duet_model_desc *d)
{
    bool remove_final = false;
    duet_status st = read_sizes(r, opt_sizes, sizeof(opt_sizes) / sizeof(opt_sizes[0]), d);

    if (!st)
        st = read_bool(r, "tie_word_embeddings", &d->tie_word_embeddings);
    if (!st)
        st = read_bool(r, "do_layer_norm_before", &d->do_layer_norm_before);
    if (!st)
        st = read_bool(r, "_remove_final_layer_norm", &remove_final);
    if (!st)
        st = require_string(r, "activation_function", "relu");
    if (!st)
        st = require_bool(r, "enable_bias", true);
    if (!st)
        st = require_bool(r, "layer_norm_elementwise_affine", true);
    if (st)
        return st;
    if (d->hidden_size % d->num_heads)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: hidden_size %u is not a multiple of num_attention_heads %u", r->path,
                          d->hidden_size, d->num_heads);
    d->num_kv_heads = d->num_heads;
    d->head_dim = d->hidden_size / d->num_heads;
    d->final_layer_norm = d->do_layer_norm_before && !remove_final;
    if (!d->word_embed_proj_dim)
        d->word_embed_proj_dim = d->hidden_size;
    return DUET_STATUS_OK;
}

static duet_status read_dtype(const struct reader *r, duet_model_desc *d)
{
    static const struct {
        const char *name;
        duet_dtype dtype;
    } names[] = {
        {"float32", DUET_DTYPE_F32}, {"float16", DUET_DTYPE_F16}, {"bfloat16", DUET_DTYPE_BF16}};
    const char *key = get(r, "torch_dtype") ? "torch_dtype" : "dtype";
    json_t *v = get(r, key);

    if (!v)
        return DUET_STATUS_OK;
    if (!json_is_string(v))
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: \"%s\" must be a string, not %s",
                          r->path, key, type_name(v));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(json_string_value(v), names[i].name) == 0) {
            d->torch_dtype = names[i].dtype;
            return DUET_STATUS_OK;
        }
    }
    return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                      "%s: %s '%s' is not supported (float32, float16 or bfloat16)", r->path, key,
                      json_string_value(v));
}

/* One token id (or null: none) into *out. */
static duet_status read_id(const struct reader *r, const char *key, const json_t *v, int32_t *out)
{
    if (json_is_null(v)) {
        *out = -1;
        return DUET_STATUS_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < -1 ||
        json_integer_value(v) >= (json_int_t)DUET__MAX_DIM)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT,
                          "%s: \"%s\" must be a token id (a non-negative integer) or null", r->path,
                          key);
    *out = (int32_t)json_integer_value(v);
    return DUET_STATUS_OK;
}

static duet_status read_eos(const struct reader *r, const json_t *v, duet_model_desc *d)
{
    size_t i;
    json_t *e;

    d->n_eos = 0;
    if (json_is_null(v))
        return DUET_STATUS_OK;
    if (!json_is_array(v)) {
        duet_status st = read_id(r, "eos_token_id", v, &d->eos_token_ids[0]);

        d->n_eos = !st && d->eos_token_ids[0] >= 0; /* -1: none */
        return st;
    }
    if (json_array_size(v) > DUET_MODEL_MAX_EOS)
        return duet__fail(r->msg, DUET_STATUS_UNSUPPORTED,
                          "%s: eos_token_id lists %zu ids; duet keeps at most %d", r->path,
                          json_array_size(v), DUET_MODEL_MAX_EOS);
    json_array_foreach(v, i, e)
    {
        duet_status st = read_id(r, "eos_token_id", e, &d->eos_token_ids[i]);

        if (!st && d->eos_token_ids[i] < 0)
            st = duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: eos_token_id lists null or -1",
                            r->path);
        if (st)
            return st;
        d->n_eos++;
    }
    return DUET_STATUS_OK;
}

/* bos_token_id, eos_token_id and pad_token_id: those present replace d's. */
static duet_status read_ids(const struct reader *r, duet_model_desc *d)
{
    json_t *v;
    duet_status st = DUET_STATUS_OK;

    if ((v = json_object_get(r->root, "bos_token_id")))
        st = read_id(r, "bos_token_id", v, &d->bos_token_id);
    if (!st && (v = json_object_get(r->root, "pad_token_id")))
        st = read_id(r, "pad_token_id", v, &d->pad_token_id);
    if (!st && (v = json_object_get(r->root, "eos_token_id")))
        st = read_eos(r, v, d);
    return st;
}

static duet_status load_object(struct reader *r, const char *buf, size_t len)
{
    json_error_t e;

    r->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
    if (!r->root)
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: not valid JSON: %s (line %d)",
                          r->path, e.text, e.line);
    if (!json_is_object(r->root)) {
        json_decref(r->root);
        return duet__fail(r->msg, DUET_STATUS_BAD_FORMAT, "%s: JSON but not an object", r->path);
    }
    return DUET_STATUS_OK;
}

duet_status duet__config_parse(const char *path, const char *buf, size_t len, duet_model_desc *desc,
                               struct duet__msg *msg)
{
    struct reader r = {.path = path, .msg = msg};
    duet_model_desc d;
    duet_status st = load_object(&r, buf, len);

    if (st)
        return st;
    st = find_arch(&r, &d);
    if (!st)
        st = require_absent(&r, "quantization_config", "weights must be F32, F16 or BF16");
    if (!st)
        st = d.arch == DUET_ARCH_OPT ? read_opt(&r, &d) : read_llama(&r, &d);
    if (!st)
        st = read_dtype(&r, &d);
    if (!st)
        st = read_ids(&r, &d);
    if (!st)
        st = duet__desc_check(&d, path, msg);
    json_decref(r.root);
    if (!st)
        *desc = d;
    return st;
}

duet_status duet__genconfig_parse(const char *path, const char *buf, size_t len,
                                  duet_model_desc *desc, struct duet__msg *msg)
{
    struct reader r = {.path = path, .msg = msg};
    duet_model_desc d = *desc;
    duet_status st = load_object(&r, buf, len);

    if (st)
        return st;
    st = read_ids(&r, &d);
    if (!st)
        st = duet__desc_check(&d, path, msg);
    json_decref(r.root);
    if (!st)
        *desc = d;
    return st;
}

/* Rotary frequencies (model-int.h). */
void duet_model_rope_inv_freq(const duet_model_desc *d, double *inv_freq)
{
    const double pi = 3.14159265358979323846;
    double low_wavelen = d->rope_original_max_position / d->rope_low_freq_factor;
    double high_wavelen = d->rope_original_max_position / d->rope_high_freq_factor;

    for (uint32_t i = 0; i < d->head_dim / 2; i++) {
        double f = pow(d->rope_theta, -2.0 * i / d->head_dim), wavelen = 2 * pi / f;

        if (d->rope_scaling == DUET_ROPE_SCALING_LINEAR) {
            f /= d->rope_factor;
        } else if (d->rope_scaling == DUET_ROPE_SCALING_LLAMA3) {
            if (wavelen > low_wavelen) {
                f /= d->rope_factor;
            } else if (wavelen >= high_wavelen) {
                double smooth =
                    (d->rope_original_max_position / wavelen - d->rope_low_freq_factor) /
                    (d->rope_high_freq_factor - d->rope_low_freq_factor);

                f = (1 - smooth) * f / d->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}
