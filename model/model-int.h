/*
 * model-int.h — internals shared by the files of model/: the reader (libduet_model.la: dtype.c,
 * util.c, safetensors.c, index.c, hf_config.c, layout.c, model.c) and the generator
 * (libduet_model_gen.la: write.c, generate.c, draft.c, presets.c).
 *
 * The parsers take memory buffers, not files, so that the fuzz targets (fuzz/) and the tests
 * can call them directly; model.c maps the files and hands the mappings over.
 */
#ifndef DUET_MODEL_INT_H
#define DUET_MODEL_INT_H

#include <duet/model.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#if defined(__GNUC__)
#define DUET__MODEL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__MODEL_PRINTF(f, a)
#endif

/* ---- util.c: messages, strings, progress ------------------------------------------------- */

/* Where a failing function writes its message: buf[size], NUL-terminated, truncated to fit. */
struct duet__msg {
    char *buf;   /* NULL: messages are dropped */
    size_t size; /* bytes of buf */
};

/* Formats the message and returns st, so that a failure is one statement: return duet__fail(). */
duet_status duet__fail(struct duet__msg *msg, duet_status st, const char *fmt, ...)
    DUET__MODEL_PRINTF(3, 4);
/* malloc'd copies (NULL when out of memory): of s, and of "dir/name". */
char *duet__strdup(const char *s);
char *duet__path_join(const char *dir, const char *name);
/* Reads a whole (small) file into a malloc'd, NUL-terminated buffer. NOT_FOUND when absent,
 * IO otherwise, BAD_FORMAT when larger than max_bytes. */
duet_status duet__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                            struct duet__msg *msg);

/* Progress drawn on one terminal line: "duet: checking weights  45% (6.1 of 13.5 GB)". */
struct duet__progress {
    FILE *out;        /* NULL: quiet */
    const char *what; /* "checking weights" */
    uint64_t total;   /* bytes in all */
    uint64_t done;    /* bytes so far */
    int shown;        /* percentage last drawn; -1 before the first */
};

#define DUET__PROGRESS_MIN_BYTES (64ull << 20) /* smaller jobs stay quiet on a terminal */

/* Draws to out when given, else to stderr when flags ask for it or (unless DUET_MODEL_QUIET)
 * when stderr is a terminal and total is at least DUET__PROGRESS_MIN_BYTES. */
void duet__progress_start(struct duet__progress *p, FILE *out, uint32_t flags, const char *what,
                          uint64_t total);
void duet__progress_add(struct duet__progress *p, uint64_t bytes);
void duet__progress_end(struct duet__progress *p);

/* ---- dtype.c: element types and conversions ---------------------------------------------- */

bool duet__dtype_parse(const char *name, duet_dtype *out);
bool duet__dtype_is_float(duet_dtype dtype); /* F32, F16, BF16, F64 */

float duet__bf16_to_f32(uint16_t h);
uint16_t duet__f32_to_bf16(float f); /* round to nearest, ties to even; NaN stays NaN */
/* Stores n floats as F32, F16 or BF16 (little-endian) at out. */
void duet__store(duet_dtype dtype, const float *in, size_t n, void *out);

/* ---- safetensors.c: the header of one file ----------------------------------------------- */

#define DUET__ST_MAX_HEADER 100000000ull /* bytes; the reference implementation's limit */

/* A parsed, validated file: its tensors sorted by offset, covering the data area exactly. */
struct duet__st_header {
    duet_tensor *tensors; /* [n]; names malloc'd, file = the path given to duet__st_parse */
    size_t n;             /* tensors (without __metadata__) */
    uint64_t data_start;  /* 8 + header length: file offset of the data area */
};

/* Parses and validates the file image buf[size] (an 8-byte little-endian header length, the
 * JSON header, the data area); path is only used in messages and stored in each tensor. On
 * success out owns its tensors (duet__st_header_fini); on failure out is empty. */
duet_status duet__st_parse(const char *path, const uint8_t *buf, uint64_t size,
                           struct duet__st_header *out, struct duet__msg *msg);
void duet__st_header_fini(struct duet__st_header *h);

/* ---- index.c: model.safetensors.index.json ----------------------------------------------- */

struct duet__index_entry {
    char *name;    /* tensor name */
    uint32_t file; /* index into duet__index.files */
};

struct duet__index {
    char **files;                      /* [n_files] shard names, in order of first mention */
    uint32_t n_files;                  /* distinct shards */
    struct duet__index_entry *entries; /* [n_entries] sorted by name */
    size_t n_entries;                  /* tensors listed */
};

/* Parses weight_map. Shard names must be plain file names (no '/', not "." or ".."). */
duet_status duet__index_parse(const char *path, const char *buf, size_t len,
                              struct duet__index *out, struct duet__msg *msg);
void duet__index_fini(struct duet__index *ix);
const struct duet__index_entry *duet__index_find(const struct duet__index *ix, const char *name);

/* ---- hf_config.c: config.json and generation_config.json --------------------------------- */

/* Limits on every size in config.json, so that shapes and byte counts never overflow. */
#define DUET__MAX_DIM (1u << 24)    /* hidden, intermediate, vocab, positions, head products */
#define DUET__MAX_LAYERS 4096u      /* num_hidden_layers */
#define DUET__MAX_HEADS 4096u       /* num_attention_heads, num_key_value_heads */
#define DUET__MAX_CONFIG (1u << 24) /* bytes of a config file */

/* Defaults of an architecture, as Hugging Face's config classes have them. */
void duet__desc_defaults(duet_model_desc *desc, duet_arch arch);
/* config.json → desc (every field); BOS/EOS from it as the fallback. */
duet_status duet__config_parse(const char *path, const char *buf, size_t len, duet_model_desc *desc,
                               struct duet__msg *msg);
/* generation_config.json → desc's BOS and EOS ids (those it gives replace config.json's). */
duet_status duet__genconfig_parse(const char *path, const char *buf, size_t len,
                                  duet_model_desc *desc, struct duet__msg *msg);
/* Cross-field rules (heads divide, ids in the vocabulary, ...), path naming the config. */
duet_status duet__desc_check(const duet_model_desc *desc, const char *path, struct duet__msg *msg);

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

/* ---- write.c: streaming safetensors and JSON writers (generator) ------------------------- */

/* One tensor to write. */
struct duet__wtensor {
    const char *name;  /* points into the caller's slot */
    uint32_t rank;     /* 1 or 2 */
    uint64_t shape[2]; /* [rank] */
    uint64_t numel;    /* elements */
    uint32_t shard;    /* file it goes to (set by the writer) */
    uint64_t begin;    /* data_offsets[0] in that file (set by the writer) */
};

/* Produces elements first .. first + count - 1 of tensor i as floats. */
typedef duet_status (*duet__fill_fn)(void *ctx, size_t i, uint64_t first, uint64_t count,
                                     float *out, struct duet__msg *msg);

struct duet__write_params {
    const char *dir;      /* existing folder */
    duet_dtype dtype;     /* F32, F16 or BF16 */
    uint64_t shard_bytes; /* 0: one model.safetensors; else shards of at most this (or one
                             tensor) + model.safetensors.index.json */
    uint32_t flags;       /* DUET_MODEL_QUIET / DUET_MODEL_PROGRESS */
};

/* Writes the weights, streamed in chunks (never the whole model in memory): each file as
 * NAME.partial, renamed when complete. Fills t[i].shard and t[i].begin. */
duet_status duet__write_weights(const struct duet__write_params *p, struct duet__wtensor *t,
                                size_t n, duet__fill_fn fill, void *ctx, struct duet__msg *msg);
/* config.json and generation_config.json for desc; provenance (may be NULL) is stored under
 * "_duet_mkmodel" in config.json. The JSON objects are built with jansson. */
duet_status duet__write_configs(const char *dir, const duet_model_desc *desc,
                                const char *provenance_json, struct duet__msg *msg);
/* Creates dir if needed. A model already there (config.json or weights) is an error, or with
 * force is removed first (duet__clear_model_dir). */
duet_status duet__prepare_dir(const char *dir, bool force, struct duet__msg *msg);
/* Removes model files a previous run left in dir (weights, index, shards, configs). */
duet_status duet__clear_model_dir(const char *dir, struct duet__msg *msg);

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

#endif /* DUET_MODEL_INT_H */
