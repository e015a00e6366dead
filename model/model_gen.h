/*
 * model_gen.h — the test-model generator's interface (libduet_model_gen.la, docs/models.md):
 * what duet-mkmodel, the benchmarks and the tests use to write deterministic random models and
 * drafts and to look up the shapes of public models. The reader's API is include/duet/model.h;
 * the part's own internals are model-int.h.
 */
#ifndef DUET_MODEL_GEN_H
#define DUET_MODEL_GEN_H

#include <duet/model.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a failing function writes its message: buf[size], NUL-terminated, truncated to fit. */
struct duet__msg {
    char *buf;   /* NULL: messages are dropped */
    size_t size; /* bytes of buf */
};

/* ---- limits and defaults of a description (config.c) ------------------------------------- */

/* Limits on every size in config.json, so that shapes and byte counts never overflow. */
#define DUET__MAX_DIM (1u << 24)    /* hidden, intermediate, vocab, positions, head products */
#define DUET__MAX_LAYERS 4096u      /* num_hidden_layers */
#define DUET__MAX_HEADS 4096u       /* num_attention_heads, num_key_value_heads */
#define DUET__MAX_CONFIG (1u << 24) /* bytes of a config file */

/* Defaults of an architecture, as Hugging Face's config classes have them. */
void duet__desc_defaults(duet_model_desc *desc, duet_arch arch);
/* What desc->architecture adds to the Llama family's defaults: Qwen2's q/k/v biases, Qwen3's
 * q/k norms and head_dim 128. */
void duet__desc_family_defaults(duet_model_desc *desc);

/* ---- layout.c: the tensors an architecture needs ----------------------------------------- */

/* What a tensor does: the generator picks its value distribution from this. */
enum duet__role {
    DUET__ROLE_EMBED,       /* token embeddings */
    DUET__ROLE_POSITIONS,   /* OPT learned positions */
    DUET__ROLE_LINEAR,      /* a projection read by the next stage (q, k, v, gate, up, fc1) */
    DUET__ROLE_OUTPUT,      /* a projection back into the residual stream (o, down, out, fc2) */
    DUET__ROLE_PROJECT,     /* OPT project_in / project_out */
    DUET__ROLE_HEAD,        /* lm_head */
    DUET__ROLE_NORM,        /* a norm's weight (around 1) */
    DUET__ROLE_NORM_BIAS,   /* a LayerNorm's bias */
    DUET__ROLE_BIAS,        /* a projection's bias, before a nonlinearity or attention */
    DUET__ROLE_OUTPUT_BIAS, /* the bias of an OUTPUT projection (OPT out_proj, fc2) */
};

/* One tensor the architecture needs. */
struct duet__slot {
    char name[96];      /* full name, canonical ("model." prefix) */
    const char *suffix; /* name after the layer prefix (static string) */
    int32_t layer;      /* layer index; -1 outside the layers */
    uint32_t role;      /* enum duet__role */
    uint32_t rank;      /* 1 or 2 */
    uint64_t shape[2];  /* [rank] */
    uint64_t fan_in;    /* inputs per output of a projection (shape[1]); 0 otherwise */
};

/* Every tensor desc needs, in the order a checkpoint stores them. *out is malloc'd. */
duet_status duet__layout_build(const duet_model_desc *desc, struct duet__slot **out, size_t *n);
/* "model.layers.L.suffix" or "model.decoder.layers.L.suffix"; false if it does not fit. */
bool duet__layer_name(const duet_model_desc *desc, int32_t layer, const char *suffix, char *buf,
                      size_t size);
uint64_t duet__slot_numel(const struct duet__slot *s);

/* ---- generate.c: deterministic random weights -------------------------------------------- */

/* Values offset + step × k, k uniform in [-k_max, k_max]: with step a power of two and
 * k_max <= 255, every value is exact in BF16, F16 and F32. */
struct duet__gen_dist {
    float offset;     /* 1 for norm weights, else 0 */
    float step;       /* a power of two */
    uint32_t k_max;   /* 0 .. 255 */
    bool random_sign; /* negate half the values (norm weights of tied models) */
};

struct duet__gen_params {
    duet_model_desc desc; /* architecture to write; torch_dtype is the file dtype */
    const char *dir;      /* output folder (created if absent) */
    uint64_t seed;
    uint64_t shard_bytes; /* 0: one file */
    uint32_t tail_from;   /* layers >= tail_from scale their output projections ... */
    int32_t tail_log2;    /* ... by 2^tail_log2 (0: no scaling) */
    uint32_t flags;       /* progress flags */
    bool force;           /* replace a model already in dir */
};

#define DUET__LOGIT_STD 4.0 /* target standard deviation of the logits (docs/models.md) */
#define DUET__MIN_TAIL_LOG2 (-16)

/* The distribution of a tensor of the generated model. */
void duet__gen_dist_of(const struct duet__gen_params *p, const struct duet__slot *s,
                       struct duet__gen_dist *out);
/* The random stream of a tensor: depends on seed and name only, not on order or sharding. */
uint64_t duet__gen_stream(uint64_t seed, const char *name);
/* Element `index` of a tensor with that stream and distribution (what the file holds). */
float duet__gen_value(uint64_t stream, uint64_t index, const struct duet__gen_dist *d);
/* Fills out[count] with elements first.. (fast path of duet__gen_value). */
void duet__gen_fill(uint64_t stream, uint64_t first, uint64_t count, const struct duet__gen_dist *d,
                    float *out);
/* Writes the whole model: weights, then config.json and generation_config.json. */
duet_status duet__gen_model(const struct duet__gen_params *p, struct duet__msg *msg);
/* Checks p (shapes, dtype, tail) before any file is touched. */
duet_status duet__gen_check(const struct duet__gen_params *p, struct duet__msg *msg);

/* ---- draft.c: a draft derived from a target --------------------------------------------- */

struct duet__draft_params {
    const char *target_dir; /* a valid model folder */
    const char *dir;        /* output folder */
    uint32_t num_layers;    /* layers the draft keeps, 1 .. target's */
    double noise;           /* relative noise: RMS of the perturbation / RMS of the tensor */
    bool spread;            /* evenly spaced layers instead of the first num_layers */
    bool has_dtype;         /* write dtype instead of the target's torch_dtype */
    duet_dtype dtype;
    uint64_t seed;
    uint64_t shard_bytes;
    uint32_t flags;
    bool force;
};

#define DUET__MAX_NOISE 1.0

/* Target layer of each draft layer: the first n, or n evenly spaced from 0 to L - 1. */
void duet__draft_select(uint32_t target_layers, uint32_t n, bool spread, uint32_t *out);
duet_status duet__gen_draft(const struct duet__draft_params *p, struct duet__msg *msg);

/* ---- gguf_write.c: GGUF files of a model (generator) ------------------------------------- */

/* Writes model m (Llama) as the GGUF file path (through path.partial): metadata from its
 * description, tensors in dtype (F32, F16, BF16, Q8_0, Q4_0, or for tests Q4_K, Q5_K, Q6_K;
 * norms always F32, as llama.cpp writes them), q and k rows permuted as llama.cpp's converter
 * does, Q8_0 / Q4_0 quantised as ggml's reference quantisers do, K-quants by plain rounding.
 * Streamed one head or chunk of rows at a time. */
duet_status duet__gguf_write(const duet_model *m, const char *path, duet_dtype dtype,
                             uint32_t flags, struct duet__msg *msg);

/* ---- presets.c: shapes of public models ------------------------------------------------- */

struct duet__preset {
    const char *name;     /* "llama-68m" */
    const char *source;   /* the Hugging Face model it copies: "JackFram/llama-68m" */
    uint64_t params;      /* parameter count of that model (checked by the tests) */
    duet_model_desc desc; /* its config.json */
};

size_t duet__preset_count(void);
const struct duet__preset *duet__preset_at(size_t i);
const struct duet__preset *duet__preset_find(const char *name);

#endif /* DUET_MODEL_GEN_H */
