/*
 * Presets of duet-mkmodel: the config.json of public Hugging Face models, so that a generated
 * model has exactly their tensor shapes, token ids and position limits. params is the parameter
 * count of the real model; the tests check that the layout adds up to it.
 */
#include "model-int.h"

#include <string.h>

/* Fields every preset of an architecture shares; each preset sets all the others. */
#define LLAMA(...)                                                                                 \
    {                                                                                              \
        .arch = DUET_ARCH_LLAMA, .architecture = "LlamaForCausalLM",                               \
        .activation = DUET_ACTIVATION_SILU, __VA_ARGS__                                            \
    }

/* Qwen2.5 and Qwen3's common settings: their vocabulary, θ 1e6, tied (the small sizes), bf16. */
#define QWEN(class_name, ...)                                                                      \
    {                                                                                              \
        .arch = DUET_ARCH_LLAMA, .architecture = class_name, .activation = DUET_ACTIVATION_SILU,   \
        .vocab_size = 151936, .norm_eps = 1e-6, .rope_theta = 1000000.0, .rope_factor = 1.0,       \
        .tie_word_embeddings = true, .torch_dtype = DUET_DTYPE_BF16, .bos_token_id = 151643,       \
        .pad_token_id = -1, __VA_ARGS__                                                            \
    }

#define OPT(...)                                                                                   \
    {                                                                                              \
        .arch = DUET_ARCH_OPT, .architecture = "OPTForCausalLM", .norm_eps = 1e-5,                 \
        .activation = DUET_ACTIVATION_RELU, .tie_word_embeddings = true, .rope_theta = 10000.0,    \
        .rope_factor = 1.0, .position_offset = 2, .vocab_size = 50272, .max_position = 2048,       \
        .bos_token_id = 2, .pad_token_id = 1, .n_eos = 1, .eos_token_ids = {2},                    \
        .torch_dtype = DUET_DTYPE_F16, __VA_ARGS__                                                 \
    }

static const struct duet__preset presets[] = {
    {"llama-68m", "JackFram/llama-68m", 68030208,
     LLAMA(.hidden_size = 768, .intermediate_size = 3072, .num_layers = 2, .num_heads = 12,
           .num_kv_heads = 12, .head_dim = 64, .vocab_size = 32000, .max_position = 2048,
           .norm_eps = 1e-6, .rope_theta = 10000.0, .rope_factor = 1.0,
           .torch_dtype = DUET_DTYPE_F32, .bos_token_id = 0, .pad_token_id = 1, .n_eos = 1,
           .eos_token_ids = {2})},
    {"llama-160m", "JackFram/llama-160m", 162417408,
     LLAMA(.hidden_size = 768, .intermediate_size = 3072, .num_layers = 12, .num_heads = 12,
           .num_kv_heads = 12, .head_dim = 64, .vocab_size = 32000, .max_position = 2048,
           .norm_eps = 1e-6, .rope_theta = 10000.0, .rope_factor = 1.0,
           .torch_dtype = DUET_DTYPE_F32, .bos_token_id = 0, .pad_token_id = 1, .n_eos = 1,
           .eos_token_ids = {2})},
    {"tinyllama-1.1b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1100048384,
     LLAMA(.hidden_size = 2048, .intermediate_size = 5632, .num_layers = 22, .num_heads = 32,
           .num_kv_heads = 4, .head_dim = 64, .vocab_size = 32000, .max_position = 2048,
           .norm_eps = 1e-5, .rope_theta = 10000.0, .rope_factor = 1.0,
           .torch_dtype = DUET_DTYPE_BF16, .bos_token_id = 1, .pad_token_id = -1, .n_eos = 1,
           .eos_token_ids = {2})},
    {"llama-2-7b", "meta-llama/Llama-2-7b-hf", 6738415616,
     LLAMA(.hidden_size = 4096, .intermediate_size = 11008, .num_layers = 32, .num_heads = 32,
           .num_kv_heads = 32, .head_dim = 128, .vocab_size = 32000, .max_position = 4096,
           .norm_eps = 1e-5, .rope_theta = 10000.0, .rope_factor = 1.0,
           .torch_dtype = DUET_DTYPE_F16, .bos_token_id = 1, .pad_token_id = -1, .n_eos = 1,
           .eos_token_ids = {2})},
    {"llama-3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", 1235814400,
     LLAMA(.hidden_size = 2048, .intermediate_size = 8192, .num_layers = 16, .num_heads = 32,
           .num_kv_heads = 8, .head_dim = 64, .vocab_size = 128256, .max_position = 131072,
           .norm_eps = 1e-5, .tie_word_embeddings = true, .rope_theta = 500000.0,
           .rope_scaling = DUET_ROPE_SCALING_LLAMA3, .rope_factor = 32.0,
           .rope_low_freq_factor = 1.0, .rope_high_freq_factor = 4.0,
           .rope_original_max_position = 8192, .torch_dtype = DUET_DTYPE_BF16,
           .bos_token_id = 128000, .pad_token_id = -1, .n_eos = 3,
           .eos_token_ids = {128001, 128008, 128009})},
    {"mistral-7b-v0.1",
     "mistralai/Mistral-7B-v0.1",
     7241732096,
     {.arch = DUET_ARCH_LLAMA,
      .architecture = "MistralForCausalLM",
      .activation = DUET_ACTIVATION_SILU,
      .hidden_size = 4096,
      .intermediate_size = 14336,
      .num_layers = 32,
      .num_heads = 32,
      .num_kv_heads = 8,
      .head_dim = 128,
      .vocab_size = 32000,
      .max_position = 32768,
      .norm_eps = 1e-5,
      .rope_theta = 10000.0,
      .rope_factor = 1.0,
      .torch_dtype = DUET_DTYPE_BF16,
      .bos_token_id = 1,
      .pad_token_id = -1,
      .n_eos = 1,
      .eos_token_ids = {2},
      .sliding_window = 4096}},
    {"qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", 494032768,
     QWEN("Qwen2ForCausalLM", .hidden_size = 896, .intermediate_size = 4864, .num_layers = 24,
          .num_heads = 14, .num_kv_heads = 2, .head_dim = 64, .max_position = 32768,
          .attention_bias = true, .n_eos = 1, .eos_token_ids = {151643})},
    {"qwen3-0.6b", "Qwen/Qwen3-0.6B", 596049920,
     QWEN("Qwen3ForCausalLM", .hidden_size = 1024, .intermediate_size = 3072, .num_layers = 28,
          .num_heads = 16, .num_kv_heads = 8, .head_dim = 128, .max_position = 40960,
          .qk_norm = true, .n_eos = 2, .eos_token_ids = {151645, 151643})},
    {"opt-125m", "facebook/opt-125m", 125239296,
     OPT(.hidden_size = 768, .intermediate_size = 3072, .num_layers = 12, .num_heads = 12,
         .num_kv_heads = 12, .head_dim = 64, .word_embed_proj_dim = 768,
         .do_layer_norm_before = true, .final_layer_norm = true)},
    {"opt-350m", "facebook/opt-350m", 331196416,
     OPT(.hidden_size = 1024, .intermediate_size = 4096, .num_layers = 24, .num_heads = 16,
         .num_kv_heads = 16, .head_dim = 64, .word_embed_proj_dim = 512,
         .do_layer_norm_before = false, .final_layer_norm = false)},
};

size_t duet__preset_count(void)
{
    return sizeof(presets) / sizeof(presets[0]);
}

const struct duet__preset *duet__preset_at(size_t i)
{
    return i < duet__preset_count() ? &presets[i] : NULL;
}

const struct duet__preset *duet__preset_find(const char *name)
{
    for (size_t i = 0; i < duet__preset_count(); i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}
