/*
 * model-int.h — internals shared by the files of model/: the reader (libduet_model.la: dtype.c,
 * util.c, safetensors.c, index.c, hf_config.c, layout.c, model.c) and the generator
 * (libduet_model_gen.la: write.c, generate.c, draft.c, presets.c). What the generator offers
 * the rest of the tree is model_gen.h.
 *
 * The parsers take memory buffers, not files, so that the fuzz targets (fuzz/) and the tests
 * can call them directly; model.c maps the files and hands the mappings over.
 */
#ifndef DUET_MODEL_INT_H
#define DUET_MODEL_INT_H

#include "model_gen.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#if defined(__GNUC__)
#define DUET__MODEL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__MODEL_PRINTF(f, a)
#endif

/* ---- util.c: messages, strings, progress ------------------------------------------------- */

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
bool duet__dtype_is_block(duet_dtype dtype); /* GGUF's Q8_0, Q4_0, Q4_K, Q5_K, Q6_K */

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

/* ---- gguf.c: one GGUF file -------------------------------------------------------------- */

/* A parsed, validated GGUF file: the description its metadata gives, its tensors under the
 * Hugging Face names (data in the caller's buffer, or in owned for the un-permuted q / k). */
struct duet__gguf {
    duet_model_desc desc; /* from the metadata */
    duet_tensor *tensors; /* [n] by offset; names malloc'd, file = the path given */
    size_t n;             /* tensors */
    void *owned;          /* malloc'd rows of q and k, in Hugging Face order; or NULL */
    uint32_t alignment;   /* general.alignment (32 when absent) */
    uint64_t data_start;  /* file offset of the data area */
    uint64_t n_kv;        /* metadata pairs */
};

/* True when buf starts with GGUF's magic. */
bool duet__gguf_magic(const uint8_t *buf, uint64_t size);
/* Parses and validates the file image buf[size] (gguf.c's opening comment lists the checks);
 * path is only used in messages and stored in each tensor. On success out owns its tensors and
 * copies (duet__gguf_fini), pointing into buf otherwise; on failure out is empty. */
duet_status duet__gguf_parse(const char *path, const uint8_t *buf, uint64_t size,
                             struct duet__gguf *out, struct duet__msg *msg);
void duet__gguf_fini(struct duet__gguf *g);
/* The GGUF name of a Hugging Face Llama / Qwen tensor name ("model.layers.3.mlp.up_proj.weight"
 * → "blk.3.ffn_up.weight"); false for names GGUF has none for. */
bool duet__gguf_name(const char *hf, char *buf, size_t size);
/* general.architecture for a Llama-family description: "qwen2", "qwen3", else "llama". */
const char *duet__gguf_arch(const duet_model_desc *desc);
/* Heads of a q_proj (num_heads) or k_proj (num_kv_heads) weight, whose rows llama.cpp's
 * converter permutes for its RoPE (llama files only); 0 for every other tensor. */
uint32_t duet__gguf_permuted_heads(const duet_model_desc *desc, const char *hf);

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

/* config.json → desc (every field); BOS/EOS from it as the fallback. */
duet_status duet__config_parse(const char *path, const char *buf, size_t len, duet_model_desc *desc,
                               struct duet__msg *msg);
/* generation_config.json → desc's BOS and EOS ids (those it gives replace config.json's). */
duet_status duet__genconfig_parse(const char *path, const char *buf, size_t len,
                                  duet_model_desc *desc, struct duet__msg *msg);
/* Cross-field rules (heads divide, ids in the vocabulary, ...), path naming the config. */
duet_status duet__desc_check(const duet_model_desc *desc, const char *path, struct duet__msg *msg);

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

#endif /* DUET_MODEL_INT_H */
