/*
 * duet/model.h — Hugging Face model folders: config.json, generation_config.json and safetensors
 * weights (model.safetensors, or model.safetensors.index.json and its shards), memory-mapped and
 * validated (docs/models.md); or one GGUF file (llama.cpp's format), its metadata standing for
 * config.json and its tensors answering to the Hugging Face names.
 *
 *     DIR/config.json                 ─► duet_model_desc: the architecture (Llama or OPT)
 *     DIR/generation_config.json      ─► BOS / EOS ids (optional; else config.json's)
 *     DIR/model.safetensors           ─► duet_tensor[]: name, dtype, shape, pointer into the map
 *       or model.safetensors.index.json + model-0000N-of-0000M.safetensors
 *
 * duet_model_create() reads and checks everything before it returns: the JSON files, every
 * safetensors header (sizes, dtypes, shapes, byte ranges, overlaps, duplicates), the index
 * against its shards, and every tensor the architecture needs (present, floating point, the
 * shape config.json implies). A failure gives a status and a message that names the file, the
 * tensor or key, and what is wrong; the weights themselves are not read (duet_model_prefault and
 * duet_model_check_values do that, with progress on a terminal).
 *
 * Tensor data is the read-only file mapping itself: no copy is made, pointers stay valid until
 * duet_model_destroy(), and they need not be aligned (read them with memcpy or
 * duet_tensor_read_f32). A model is immutable after creation, so any number of threads may read
 * it at once.
 */
#ifndef DUET_MODEL_H
#define DUET_MODEL_H

#include <duet/plugin.h>
#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DUET_MODEL_MAX_RANK 8 /* dimensions of a tensor */
#define DUET_MODEL_MAX_EOS 8  /* end-of-sequence ids (as duet_model_info holds) */

/* Element types of the safetensors format that duet reads. */
typedef enum duet_dtype {
    DUET_DTYPE_F32 = 0,
    DUET_DTYPE_F16 = 1,
    DUET_DTYPE_BF16 = 2,
    DUET_DTYPE_F64 = 3,
    DUET_DTYPE_I64 = 4,
    DUET_DTYPE_I32 = 5,
    DUET_DTYPE_I16 = 6,
    DUET_DTYPE_I8 = 7,
    DUET_DTYPE_U8 = 8,
    DUET_DTYPE_BOOL = 9,
    /* Block-quantised types of GGUF files (ggml's layouts): each row of the tensor (its last
     * dimension) is a run of blocks of duet_dtype_block_elems() elements. */
    DUET_DTYPE_Q8_0 = 10, /* 34-byte blocks of 32: f16 scale d, 32 × int8 q; w = d·q */
    DUET_DTYPE_Q4_0 = 11, /* 18-byte blocks of 32: f16 d, 16 bytes of nibbles u; w = d·(u − 8) */
    DUET_DTYPE_Q4_K = 12, /* 144-byte super-blocks of 256 (dequantised when read) */
    DUET_DTYPE_Q5_K = 13, /* 176-byte super-blocks of 256 (dequantised when read) */
    DUET_DTYPE_Q6_K = 14, /* 210-byte super-blocks of 256 (dequantised when read) */
} duet_dtype;

typedef enum duet_arch {
    DUET_ARCH_LLAMA = 0, /* LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and
                            Qwen3ForCausalLM (the Llama family: flags below tell them apart) */
    DUET_ARCH_OPT = 1,   /* OPTForCausalLM */
} duet_arch;

typedef enum duet_rope_scaling {
    DUET_ROPE_SCALING_NONE = 0,
    DUET_ROPE_SCALING_LINEAR = 1, /* positions divided by rope_factor */
    DUET_ROPE_SCALING_LLAMA3 = 2, /* Llama 3.1: low frequencies divided by rope_factor, smoothly */
} duet_rope_scaling;

typedef enum duet_activation {
    DUET_ACTIVATION_SILU = 0, /* Llama: down(silu(gate(x)) * up(x)) */
    DUET_ACTIVATION_RELU = 1, /* OPT: fc2(relu(fc1(x))) */
} duet_activation;

/*
 * The architecture, as config.json and generation_config.json describe it. Read-only: the model
 * owns it. Fields marked Llama or OPT keep their default in the other architecture.
 */
typedef struct duet_model_desc {
    duet_arch arch;
    char architecture[64];      /* config.json architectures[0], e.g. "LlamaForCausalLM" */
    uint32_t hidden_size;       /* width of the residual stream */
    uint32_t intermediate_size; /* MLP width (Llama intermediate_size, OPT ffn_dim) */
    uint32_t num_layers;        /* transformer layers (num_hidden_layers) */
    uint32_t num_heads;         /* query heads */
    uint32_t num_kv_heads;      /* key/value heads; num_heads without grouped-query attention */
    uint32_t head_dim;          /* elements per head (head_dim, else hidden_size / num_heads) */
    uint32_t vocab_size;        /* rows of embed_tokens and lm_head */
    uint32_t max_position;      /* max_position_embeddings */
    double norm_eps;            /* rms_norm_eps (Llama); LayerNorm epsilon, 1e-5 (OPT) */
    duet_activation activation; /* SILU (Llama) or RELU (OPT) */
    bool tie_word_embeddings;   /* lm_head is embed_tokens (no lm_head.weight needed) */
    /* Llama: rotary position embedding */
    double rope_theta;                   /* base of the rotary frequencies (10000) */
    duet_rope_scaling rope_scaling;      /* rope_scaling.rope_type (or .type) */
    double rope_factor;                  /* LINEAR, LLAMA3: factor */
    double rope_low_freq_factor;         /* LLAMA3: low_freq_factor */
    double rope_high_freq_factor;        /* LLAMA3: high_freq_factor */
    uint32_t rope_original_max_position; /* LLAMA3: original_max_position_embeddings */
    /* OPT */
    bool do_layer_norm_before;    /* pre-LayerNorm layers (false: OPT-350m's post-LN) */
    bool final_layer_norm;        /* model.decoder.final_layer_norm exists */
    uint32_t word_embed_proj_dim; /* embedding width; != hidden_size adds project_in/_out */
    uint32_t position_offset;     /* learned positions: position p uses row p + 2 (0: Llama) */
    /* Both */
    duet_dtype torch_dtype;                    /* torch_dtype (or dtype): F32, F16 or BF16 */
    int32_t bos_token_id;                      /* -1 when the model has none */
    int32_t pad_token_id;                      /* -1 when the model has none */
    uint32_t n_eos;                            /* valid entries of eos_token_ids */
    int32_t eos_token_ids[DUET_MODEL_MAX_EOS]; /* generation_config.json, else config.json */
    /* Llama family: Qwen2, Qwen3, Mistral */
    bool attention_bias;     /* q, k and v projections have biases (Qwen2) */
    bool qk_norm;            /* RMSNorm over each head of q and k before RoPE (Qwen3) */
    uint32_t sliding_window; /* a position attends to the last sliding_window positions, itself
                                included (keys at p' > p - sliding_window); 0: all of them */
} duet_model_desc;

/* One tensor of a safetensors or GGUF file. Read-only: the model owns it and everything it points
 * to. */
typedef struct duet_tensor {
    const char *name;                    /* as stored, e.g. "model.layers.0.mlp.up_proj.weight" */
    const char *file;                    /* path of the file that holds it */
    const void *data;                    /* first byte, in the read-only mapping; maybe unaligned */
    uint64_t nbytes;                     /* numel × duet_dtype_size(dtype); blocks × bytes */
    uint64_t offset;                     /* byte offset of data in the file */
    uint64_t numel;                      /* product of shape (1 for rank 0) */
    uint64_t shape[DUET_MODEL_MAX_RANK]; /* [rank], outermost first (row-major) */
    uint32_t rank;                       /* 0 .. DUET_MODEL_MAX_RANK */
    duet_dtype dtype;
} duet_tensor;

typedef struct duet_model duet_model; /* opaque */

/* Flags of duet_model_create() and of the functions that read weights. */
#define DUET_MODEL_QUIET (1u << 0)    /* never draw progress */
#define DUET_MODEL_PROGRESS (1u << 1) /* draw progress on stderr even when it is no terminal */
#define DUET_MODEL_PREFAULT (1u << 2) /* create: read every page now (duet_model_prefault) */

/*
 * Opens the model folder dir (or the GGUF file dir names: a regular file) and validates it (see the
 * top of this file). Progress is drawn on stderr only when it is a terminal and the weights are
 * large, unless flags say otherwise. On success *out is a model the caller releases with
 * duet_model_destroy(); on failure *out is NULL and a NUL-terminated message (truncated to fit) is
 * written to errbuf[errbuf_size]. Statuses: NOT_FOUND (no config.json, no weights, a missing
 * shard), IO, BAD_FORMAT (malformed JSON or safetensors, a tensor missing or of the wrong shape),
 * UNSUPPORTED (an architecture, field or value duet cannot run, named in the message),
 * OUT_OF_MEMORY.
 */
DUET_API duet_status duet_model_create(const char *dir, uint32_t flags, duet_model **out,
                                       char *errbuf, size_t errbuf_size);
/* Unmaps and frees everything; NULL is allowed. Every pointer the model gave becomes invalid. */
DUET_API void duet_model_destroy(duet_model *model);

DUET_API const duet_model_desc *duet_model_describe(const duet_model *model);
DUET_API const char *duet_model_dir(const duet_model *model);
/* Bytes of all tensors together. */
DUET_API uint64_t duet_model_weight_bytes(const duet_model *model);

/* Tensors in storage order: by file (index order), then by offset. i < duet_model_num_tensors. */
DUET_API size_t duet_model_num_tensors(const duet_model *model);
DUET_API const duet_tensor *duet_model_tensor_at(const duet_model *model, size_t i);
/* The tensor of that Hugging Face name, or NULL. OPT checkpoints stored without the "model."
 * prefix ("decoder.layers.0...") answer to the canonical "model.decoder..." names too. */
DUET_API const duet_tensor *duet_model_tensor(const duet_model *model, const char *name);
/* Tensor `suffix` of a layer: "self_attn.q_proj.weight" of layer 3 is
 * "model.layers.3.self_attn.q_proj.weight" (Llama) or "model.decoder.layers.3...." (OPT). */
DUET_API const duet_tensor *duet_model_layer_tensor(const duet_model *model, uint32_t layer,
                                                    const char *suffix);

/* Fills what a worker's describe() reports (info->struct_size set by the caller is honoured). */
DUET_API duet_status duet_model_fill_info(const duet_model *model, duet_model_info *info);

/* Reads every page of the weights once, so that the first forward pass does not stall on disk;
 * draws progress as duet_model_create() does (flags: DUET_MODEL_QUIET, DUET_MODEL_PROGRESS). */
DUET_API void duet_model_prefault(const duet_model *model, uint32_t flags);
/* Scans every floating-point tensor for NaN and infinity, with progress. On the first bad value
 * returns DUET_STATUS_BAD_FORMAT with a message naming file, tensor and element. */
DUET_API duet_status duet_model_check_values(const duet_model *model, uint32_t flags, char *errbuf,
                                             size_t errbuf_size);

/* Converts elements first .. first + count - 1 (in row-major order) of a floating-point or
 * block-quantised tensor to float (block types dequantised exactly as ggml does). INVALID_ARGUMENT
 * for a range outside the tensor or an integer dtype. */
DUET_API duet_status duet_tensor_read_f32(const duet_tensor *tensor, uint64_t first, uint64_t count,
                                          float *out);

/*
 * Rows row .. row + rows - 1 of a 2-D Q8_0 or Q4_0 tensor as stored, without rounding anything:
 * codes[r][c] (rows × shape[1] bytes) the unsigned code of weight c of row r and scales[r][g]
 * (rows × shape[1] / 32) the IEEE f16 bits of group g's scale, weight = scale × (code − zero)
 * with zero = 128 (Q8_0: code = q + 128) or 8 (Q4_0): the symmetric int8 / int4 groups of 32
 * that the CPU worker's kernels run. INVALID_ARGUMENT for another dtype or rank, or a range
 * outside the tensor.
 */
DUET_API duet_status duet_tensor_read_codes(const duet_tensor *tensor, uint64_t row, uint64_t rows,
                                            uint8_t *codes, uint16_t *scales);

/* Rotary frequencies of a Llama description, its rope scaling (linear, llama3) applied:
 * inv_freq[i] for i < head_dim / 2, the angle of position p being p × inv_freq[i] (what every
 * worker's RoPE uses). */
DUET_API void duet_model_rope_inv_freq(const duet_model_desc *desc, double *inv_freq);

/* IEEE half precision to float (exact), and float to half: round to nearest, ties to even,
 * overflow to infinity, NaN kept. */
DUET_API float duet_f16_to_f32(uint16_t h);
DUET_API uint16_t duet_f32_to_f16(float f);

/* "F32", "BF16", ... as safetensors spells them, "Q8_0", "Q4_K", ... as ggml does; "?" for other
 * values. */
DUET_API const char *duet_dtype_name(duet_dtype dtype);
/* Bytes per element; 0 for block-quantised types and other values. */
DUET_API size_t duet_dtype_size(duet_dtype dtype);
/* Block-quantised types: elements per block (32 or 256) and bytes per block; 0 for others. */
DUET_API uint32_t duet_dtype_block_elems(duet_dtype dtype);
DUET_API size_t duet_dtype_block_bytes(duet_dtype dtype);
/* "llama", "opt"; "?" for other values. */
DUET_API const char *duet_arch_name(duet_arch arch);

#ifdef __cplusplus
}
#endif

#endif /* DUET_MODEL_H */
