/*
 * The tensors each architecture needs, with the shapes its config implies (Hugging Face names,
 * PyTorch nn.Linear layout: weight [out_features, in_features]). H hidden, I intermediate,
 * V vocab, Q = heads × head_dim, K = kv_heads × head_dim, W = word_embed_proj_dim, P = positions.
 *
 *   Llama                                         OPT (prefix model.decoder.)
 *   model.embed_tokens.weight        [V, H]       embed_tokens.weight             [V, W]
 *   model.layers.N.                               embed_positions.weight          [P + 2, H]
 *     self_attn.q_proj.weight        [Q, H]       project_in.weight  (W != H)     [H, W]
 *     self_attn.k_proj.weight        [K, H]       project_out.weight (W != H)     [W, H]
 *     self_attn.v_proj.weight        [K, H]       layers.N.
 *     self_attn.o_proj.weight        [H, Q]         self_attn.{q,k,v,out}_proj.weight [H, H]
 *     mlp.gate_proj.weight           [I, H]         self_attn.{q,k,v,out}_proj.bias   [H]
 *     mlp.up_proj.weight             [I, H]         self_attn_layer_norm.{weight,bias} [H]
 *     mlp.down_proj.weight           [H, I]         fc1.weight [I, H], fc1.bias [I]
 *     input_layernorm.weight         [H]            fc2.weight [H, I], fc2.bias [H]
 *     post_attention_layernorm.weight [H]           final_layer_norm.{weight,bias} [H]
 *   model.norm.weight                [H]          final_layer_norm.{weight,bias}  [H]  (pre-LN)
 *   lm_head.weight (untied)          [V, H]       lm_head.weight (untied)         [V, W]
 *   Qwen2 adds self_attn.{q,k,v}_proj.bias [Q] [K] [K] to each layer; Qwen3 adds
 *   self_attn.{q,k}_norm.weight [head_dim] (RMSNorm of each head of q and k, before RoPE).
 *
 * Also here: the defaults of each config class and the cross-field rules of a description.
 */
#include "model-int.h"

#include <stdlib.h>
#include <string.h>

enum dim { D_H = 1, D_I, D_Q, D_K, D_V, D_W, D_P, D_D };

struct spec {
    const char *suffix;
    uint8_t role; /* enum duet__role */
    uint8_t d0;   /* enum dim */
    uint8_t d1;   /* enum dim; 0 for a vector */
};

static const struct spec llama_layer[] = {
    {"self_attn.q_proj.weight", DUET__ROLE_LINEAR, D_Q, D_H},
    {"self_attn.k_proj.weight", DUET__ROLE_LINEAR, D_K, D_H},
    {"self_attn.v_proj.weight", DUET__ROLE_LINEAR, D_K, D_H},
    {"self_attn.o_proj.weight", DUET__ROLE_OUTPUT, D_H, D_Q},
    {"mlp.gate_proj.weight", DUET__ROLE_LINEAR, D_I, D_H},
    {"mlp.up_proj.weight", DUET__ROLE_LINEAR, D_I, D_H},
    {"mlp.down_proj.weight", DUET__ROLE_OUTPUT, D_H, D_I},
    {"input_layernorm.weight", DUET__ROLE_NORM, D_H, 0},
    {"post_attention_layernorm.weight", DUET__ROLE_NORM, D_H, 0},
};

/* Qwen2's q/k/v biases and Qwen3's per-head q/k norms, after a layer's Llama tensors. */
static const struct spec qkv_bias[] = {
    {"self_attn.q_proj.bias", DUET__ROLE_BIAS, D_Q, 0},
    {"self_attn.k_proj.bias", DUET__ROLE_BIAS, D_K, 0},
    {"self_attn.v_proj.bias", DUET__ROLE_BIAS, D_K, 0},
};

static const struct spec qk_norm[] = {
    {"self_attn.q_norm.weight", DUET__ROLE_NORM, D_D, 0},
    {"self_attn.k_norm.weight", DUET__ROLE_NORM, D_D, 0},
};

static const struct spec opt_layer[] = {
    {"self_attn.k_proj.weight", DUET__ROLE_LINEAR, D_H, D_H},
    {"self_attn.k_proj.bias", DUET__ROLE_BIAS, D_H, 0},
    {"self_attn.v_proj.weight", DUET__ROLE_LINEAR, D_H, D_H},
    {"self_attn.v_proj.bias", DUET__ROLE_BIAS, D_H, 0},
    {"self_attn.q_proj.weight", DUET__ROLE_LINEAR, D_H, D_H},
    {"self_attn.q_proj.bias", DUET__ROLE_BIAS, D_H, 0},
    {"self_attn.out_proj.weight", DUET__ROLE_OUTPUT, D_H, D_H},
    {"self_attn.out_proj.bias", DUET__ROLE_OUTPUT_BIAS, D_H, 0},
    {"self_attn_layer_norm.weight", DUET__ROLE_NORM, D_H, 0},
    {"self_attn_layer_norm.bias", DUET__ROLE_NORM_BIAS, D_H, 0},
    {"fc1.weight", DUET__ROLE_LINEAR, D_I, D_H},
    {"fc1.bias", DUET__ROLE_BIAS, D_I, 0},
    {"fc2.weight", DUET__ROLE_OUTPUT, D_H, D_I},
    {"fc2.bias", DUET__ROLE_OUTPUT_BIAS, D_H, 0},
    {"final_layer_norm.weight", DUET__ROLE_NORM, D_H, 0},
    {"final_layer_norm.bias", DUET__ROLE_NORM_BIAS, D_H, 0},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

void duet__desc_defaults(duet_model_desc *d, duet_arch arch)
{
    *d = (duet_model_desc){
        .arch = arch,
        .max_position = 2048,
        .norm_eps = arch == DUET_ARCH_OPT ? 1e-5 : 1e-6,
        .activation = arch == DUET_ARCH_OPT ? DUET_ACTIVATION_RELU : DUET_ACTIVATION_SILU,
        .tie_word_embeddings = arch == DUET_ARCH_OPT,
        .rope_theta = 10000.0,
        .rope_factor = 1.0,
        .do_layer_norm_before = arch == DUET_ARCH_OPT,
        .final_layer_norm = arch == DUET_ARCH_OPT,
        .position_offset = arch == DUET_ARCH_OPT ? 2 : 0,
        .torch_dtype = DUET_DTYPE_F32,
        .bos_token_id = -1,
        .pad_token_id = -1,
    };
    snprintf(d->architecture, sizeof(d->architecture), "%s",
             arch == DUET_ARCH_OPT ? "OPTForCausalLM" : "LlamaForCausalLM");
}

void duet__desc_family_defaults(duet_model_desc *d)
{
    if (strcmp(d->architecture, "Qwen2ForCausalLM") == 0)
        d->attention_bias = true; /* Qwen2Attention: bias on q, k and v, none on o */
    if (strcmp(d->architecture, "Qwen3ForCausalLM") == 0) {
        d->qk_norm = true;
        d->head_dim = 128; /* Qwen3Config's default: independent of hidden / heads */
    }
}

static uint64_t dim(const duet_model_desc *d, unsigned which)
{
    switch (which) {
    case D_H:
        return d->hidden_size;
    case D_I:
        return d->intermediate_size;
    case D_Q:
        return (uint64_t)d->num_heads * d->head_dim;
    case D_K:
        return (uint64_t)d->num_kv_heads * d->head_dim;
    case D_V:
        return d->vocab_size;
    case D_W:
        return d->word_embed_proj_dim;
    case D_P:
        return (uint64_t)d->max_position + d->position_offset;
    case D_D:
        return d->head_dim;
    }
    return 0;
}

uint64_t duet__slot_numel(const struct duet__slot *s)
{
    return s->rank == 1 ? s->shape[0] : s->shape[0] * s->shape[1];
}

bool duet__layer_name(const duet_model_desc *d, int32_t layer, const char *suffix, char *buf,
                      size_t size)
{
    int n;

    if (layer < 0)
        n = snprintf(buf, size, "%s", suffix);
    else
        n = snprintf(buf, size, "%s%d.%s",
                     d->arch == DUET_ARCH_OPT ? "model.decoder.layers." : "model.layers.", layer,
                     suffix);
    return n >= 0 && (size_t)n < size;
}

static void add(const duet_model_desc *d, struct duet__slot *out, size_t *n, int32_t layer,
                const struct spec *s)
{
    struct duet__slot *slot = &out[(*n)++];

    *slot = (struct duet__slot){.suffix = s->suffix, .layer = layer, .role = s->role};
    duet__layer_name(d, layer, s->suffix, slot->name, sizeof(slot->name));
    slot->rank = s->d1 ? 2 : 1;
    slot->shape[0] = dim(d, s->d0);
    slot->shape[1] = s->d1 ? dim(d, s->d1) : 0;
    slot->fan_in = slot->shape[1];
}

static void build_llama(const duet_model_desc *d, struct duet__slot *out, size_t *n)
{
    static const struct spec embed = {"model.embed_tokens.weight", DUET__ROLE_EMBED, D_V, D_H};
    static const struct spec norm = {"model.norm.weight", DUET__ROLE_NORM, D_H, 0};
    static const struct spec head = {"lm_head.weight", DUET__ROLE_HEAD, D_V, D_H};

    add(d, out, n, -1, &embed);
    for (uint32_t l = 0; l < d->num_layers; l++) {
        for (size_t i = 0; i < COUNT(llama_layer); i++)
            add(d, out, n, (int32_t)l, &llama_layer[i]);
        for (size_t i = 0; d->attention_bias && i < COUNT(qkv_bias); i++)
            add(d, out, n, (int32_t)l, &qkv_bias[i]);
        for (size_t i = 0; d->qk_norm && i < COUNT(qk_norm); i++)
            add(d, out, n, (int32_t)l, &qk_norm[i]);
    }
    add(d, out, n, -1, &norm);
    if (!d->tie_word_embeddings)
        add(d, out, n, -1, &head);
}

static void build_opt(const duet_model_desc *d, struct duet__slot *out, size_t *n)
{
    static const struct spec globals[] = {
        {"model.decoder.embed_tokens.weight", DUET__ROLE_EMBED, D_V, D_W},
        {"model.decoder.embed_positions.weight", DUET__ROLE_POSITIONS, D_P, D_H},
        {"model.decoder.project_in.weight", DUET__ROLE_PROJECT, D_H, D_W},
        {"model.decoder.project_out.weight", DUET__ROLE_PROJECT, D_W, D_H},
        {"model.decoder.final_layer_norm.weight", DUET__ROLE_NORM, D_H, 0},
        {"model.decoder.final_layer_norm.bias", DUET__ROLE_NORM_BIAS, D_H, 0},
        {"lm_head.weight", DUET__ROLE_HEAD, D_V, D_W},
    };
    bool project = d->word_embed_proj_dim != d->hidden_size;

    add(d, out, n, -1, &globals[0]);
    add(d, out, n, -1, &globals[1]);
    if (project) {
        add(d, out, n, -1, &globals[2]);
        add(d, out, n, -1, &globals[3]);
    }
    for (uint32_t l = 0; l < d->num_layers; l++)
        for (size_t i = 0; i < COUNT(opt_layer); i++)
            add(d, out, n, (int32_t)l, &opt_layer[i]);
    if (d->final_layer_norm) {
        add(d, out, n, -1, &globals[4]);
        add(d, out, n, -1, &globals[5]);
    }
    if (!d->tie_word_embeddings)
        add(d, out, n, -1, &globals[6]);
}

duet_status duet__layout_build(const duet_model_desc *d, struct duet__slot **out, size_t *n)
{
    size_t per_layer = d->arch == DUET_ARCH_OPT
                           ? COUNT(opt_layer)
                           : COUNT(llama_layer) + COUNT(qkv_bias) + COUNT(qk_norm);

    *n = 0;
    *out = calloc((size_t)d->num_layers * per_layer + 8, sizeof(**out));
    if (!*out)
        return DUET_STATUS_OUT_OF_MEMORY;
    if (d->arch == DUET_ARCH_OPT)
        build_opt(d, *out, n);
    else
        build_llama(d, *out, n);
    return DUET_STATUS_OK;
}

/* ---- cross-field rules ------------------------------------------------------------------ */

static duet_status check_sizes(const duet_model_desc *d, const char *path, struct duet__msg *msg)
{
    if (!d->hidden_size || d->hidden_size > DUET__MAX_DIM || !d->intermediate_size ||
        d->intermediate_size > DUET__MAX_DIM || !d->vocab_size || d->vocab_size > DUET__MAX_DIM ||
        !d->max_position || d->max_position > DUET__MAX_DIM - d->position_offset ||
        !d->num_layers || d->num_layers > DUET__MAX_LAYERS || !d->head_dim ||
        d->head_dim > DUET__MAX_DIM)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: a size is 0 or too large (hidden_size %u, intermediate_size %u, "
                          "vocab_size %u, max_position_embeddings %u, num_hidden_layers %u, "
                          "head_dim %u)",
                          path, d->hidden_size, d->intermediate_size, d->vocab_size,
                          d->max_position, d->num_layers, d->head_dim);
    if (!d->num_heads || d->num_heads > DUET__MAX_HEADS || !d->num_kv_heads ||
        d->num_kv_heads > d->num_heads || d->num_heads % d->num_kv_heads)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: num_attention_heads %u must be a non-zero multiple of "
                          "num_key_value_heads %u",
                          path, d->num_heads, d->num_kv_heads);
    if ((uint64_t)d->num_heads * d->head_dim > DUET__MAX_DIM)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: num_attention_heads %u × head_dim %u is too large", path,
                          d->num_heads, d->head_dim);
    return DUET_STATUS_OK;
}

static duet_status check_arch(const duet_model_desc *d, const char *path, struct duet__msg *msg)
{
    if (d->arch == DUET_ARCH_LLAMA && d->head_dim % 2)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: head_dim %u must be even for rotary embeddings", path, d->head_dim);
    if (d->arch == DUET_ARCH_LLAMA && d->rope_scaling == DUET_ROPE_SCALING_LLAMA3 &&
        (!(d->rope_low_freq_factor < d->rope_high_freq_factor) || !d->rope_original_max_position))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: rope_scaling llama3 needs low_freq_factor < high_freq_factor and "
                          "original_max_position_embeddings > 0",
                          path);
    if (d->arch == DUET_ARCH_OPT &&
        (d->head_dim * d->num_heads != d->hidden_size || !d->word_embed_proj_dim ||
         d->word_embed_proj_dim > DUET__MAX_DIM))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: OPT needs hidden_size %u = num_attention_heads %u × head_dim %u "
                          "and word_embed_proj_dim %u in 1 .. %u",
                          path, d->hidden_size, d->num_heads, d->head_dim, d->word_embed_proj_dim,
                          DUET__MAX_DIM);
    if (d->torch_dtype != DUET_DTYPE_F32 && d->torch_dtype != DUET_DTYPE_F16 &&
        d->torch_dtype != DUET_DTYPE_BF16)
        return duet__fail(msg, DUET_STATUS_UNSUPPORTED, "%s: torch_dtype %s is not supported", path,
                          duet_dtype_name(d->torch_dtype));
    return DUET_STATUS_OK;
}

static duet_status check_ids(const duet_model_desc *d, const char *path, struct duet__msg *msg)
{
    const int32_t vocab = (int32_t)d->vocab_size;

    if (d->bos_token_id >= vocab || d->pad_token_id >= vocab)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: bos_token_id %d or pad_token_id %d is outside the vocabulary "
                          "(vocab_size %u)",
                          path, d->bos_token_id, d->pad_token_id, d->vocab_size);
    if (d->n_eos > DUET_MODEL_MAX_EOS)
        return duet__fail(msg, DUET_STATUS_UNSUPPORTED, "%s: %u eos ids; at most %d", path,
                          d->n_eos, DUET_MODEL_MAX_EOS);
    for (uint32_t i = 0; i < d->n_eos; i++)
        if (d->eos_token_ids[i] < 0 || d->eos_token_ids[i] >= vocab)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: eos_token_id %d is outside the vocabulary (vocab_size %u)", path,
                              d->eos_token_ids[i], d->vocab_size);
    return DUET_STATUS_OK;
}

duet_status duet__desc_check(const duet_model_desc *d, const char *path, struct duet__msg *msg)
{
    duet_status st = check_sizes(d, path, msg);

    if (!st)
        st = check_arch(d, path, msg);
    if (!st)
        st = check_ids(d, path, msg);
    return st;
}
