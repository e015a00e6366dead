/*
 * GGUF files (model/gguf.c, model/gguf_write.c): every malformed case of the parser refused with
 * BAD_FORMAT (or UNSUPPORTED for valid files duet cannot run) and a message naming the key or
 * tensor, on images built byte by byte here; and files written from generated models reading
 * back the very values of their safetensors folders (F32 / F16 / BF16 exactly, Q8_0 / Q4_0 as
 * their codes say, within half a step of the originals), the q/k permutation undone; qwen2 /
 * qwen3 files (biases, q/k norms, no permutation) described, read back, and refused by tensor
 * name when one of their tensors is missing or of the wrong shape.
 */
#define _GNU_SOURCE /* nftw */
#include "../model/model-int.h"

#include "check_util.h"
#include "fault.h"
#include "test_dirs.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- building images -------------------------------------------------------------------- */

struct img {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct img *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void u32(struct img *b, uint32_t v)
{
    put(b, &v, 4);
}

static void u64(struct img *b, uint64_t v)
{
    put(b, &v, 8);
}

static void str(struct img *b, const char *s)
{
    u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void kv_u32(struct img *b, const char *key, uint32_t v)
{
    str(b, key);
    u32(b, 4);
    u32(b, v);
}

static void kv_f32(struct img *b, const char *key, float v)
{
    str(b, key);
    u32(b, 6);
    put(b, &v, 4);
}

static void kv_str(struct img *b, const char *key, const char *v)
{
    str(b, key);
    u32(b, 8);
    str(b, v);
}

/* The header of a file of n_t tensors and n_kv pairs (LLAMA_KVS of them from llama_kvs). */
static struct img start(uint64_t n_t, uint64_t n_kv)
{
    struct img b = {0};

    put(&b, "GGUF", 4);
    u32(&b, 3);
    u64(&b, n_t);
    u64(&b, n_kv);
    return b;
}

#define LLAMA_KVS 7
#define HIDDEN 32
#define VOCAB 8

/* "<arch>.<field>" */
static const char *akey(const char *arch, const char *field)
{
    static char key[128];

    snprintf(key, sizeof(key), "%s.%s", arch, field);
    return key;
}

/* A one-layer Llama (or Qwen) of hidden 32, one head, vocabulary 8. */
static void llama_kvs(struct img *b, const char *arch)
{
    kv_str(b, "general.architecture", arch);
    kv_u32(b, akey(arch, "block_count"), 1);
    kv_u32(b, akey(arch, "embedding_length"), HIDDEN);
    kv_u32(b, akey(arch, "feed_forward_length"), 64);
    kv_u32(b, akey(arch, "attention.head_count"), 1);
    kv_u32(b, akey(arch, "context_length"), 64);
    kv_f32(b, akey(arch, "attention.layer_norm_rms_epsilon"), 1e-5f);
}

static void tinfo(struct img *b, const char *name, uint32_t rank, const uint64_t *ne, uint32_t type,
                  uint64_t offset)
{
    str(b, name);
    u32(b, rank);
    for (uint32_t i = 0; i < rank; i++)
        u64(b, ne[i]);
    u32(b, type);
    u64(b, offset);
}

/* token_embd.weight [VOCAB][HIDDEN] F32 at offset 0. */
static void embd_info(struct img *b)
{
    const uint64_t ne[2] = {HIDDEN, VOCAB};

    tinfo(b, "token_embd.weight", 2, ne, 0, 0);
}

/* Pads to 32 and appends bytes of data (a ramp). */
static void data(struct img *b, size_t bytes)
{
    static const uint8_t zero[32];

    put(b, zero, (32 - b->n % 32) % 32);
    for (size_t i = 0; i < bytes; i++) {
        uint8_t v = (uint8_t)(i * 7);

        put(b, &v, 1);
    }
}

#define EMBD_BYTES (HIDDEN * VOCAB * 4)

static char err[1024];

static duet_status parse(const struct img *b, struct duet__gguf *g)
{
    struct duet__msg msg = {err, sizeof(err)};

    err[0] = '\0';
    return duet__gguf_parse("t.gguf", b->p, b->n, g, &msg);
}

/* Parses b, expects want with a message naming t.gguf and containing needle; frees b. */
static void refused(struct img *b, duet_status want, const char *needle)
{
    struct duet__gguf g;
    duet_status st = parse(b, &g);

    ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
    ck_assert_msg(strncmp(err, "t.gguf", 6) == 0 && strstr(err, needle),
                  "message '%s' does not name '%s'", err, needle);
    ck_assert_ptr_null(g.tensors);
    free(b->p);
}

/* The minimal valid file: accepted, and it describes itself. */
START_TEST(test_minimal_llama_file_is_accepted)
{
    struct img b = start(1, LLAMA_KVS);
    struct duet__gguf g;

    llama_kvs(&b, "llama");
    embd_info(&b);
    data(&b, EMBD_BYTES);
    ck_assert_msg(parse(&b, &g) == DUET_STATUS_OK, "%s", err);
    ck_assert_int_eq(g.desc.hidden_size, HIDDEN);
    ck_assert_int_eq(g.desc.vocab_size, VOCAB);
    ck_assert(g.desc.tie_word_embeddings);
    ck_assert_int_eq(g.n, 1);
    ck_assert_str_eq(g.tensors[0].name, "model.embed_tokens.weight");
    ck_assert_int_eq(g.tensors[0].shape[0], VOCAB);
    ck_assert_int_eq(g.tensors[0].shape[1], HIDDEN);
    duet__gguf_fini(&g);
    free(b.p);
}
END_TEST

START_TEST(test_bad_magic_and_short_files_are_refused)
{
    struct img b = {0};

    put(&b, "GGU", 3);
    refused(&b, DUET_STATUS_BAD_FORMAT, "not a GGUF file");
    b = (struct img){0};
    put(&b, "GGUF", 4);
    u32(&b, 3);
    refused(&b, DUET_STATUS_BAD_FORMAT, "inside the tensor count");
}
END_TEST

START_TEST(test_other_versions_are_refused)
{
    struct img b = {0};

    put(&b, "GGUF", 4);
    u32(&b, 1);
    u64(&b, 0);
    u64(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "version 1");
    b = (struct img){0};
    put(&b, "GGUF", 4);
    u32(&b, 0x03000000);
    u64(&b, 0);
    u64(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "big-endian");
}
END_TEST

START_TEST(test_counts_that_cannot_fit_are_refused)
{
    struct img b = start(1u << 30, 0);

    refused(&b, DUET_STATUS_BAD_FORMAT, "tensor count");
    b = start(0, 1ull << 40);
    refused(&b, DUET_STATUS_BAD_FORMAT, "key/value count");
}
END_TEST

START_TEST(test_string_lengths_past_the_end_are_refused)
{
    struct img b = start(0, 1);

    u64(&b, 1000);
    put(&b, "general.x", 9);
    refused(&b, DUET_STATUS_BAD_FORMAT, "string length 1000");
    b = start(0, 1);
    str(&b, "general.name");
    u32(&b, 8);
    u64(&b, 1ull << 62);
    refused(&b, DUET_STATUS_BAD_FORMAT, "general.name");
}
END_TEST

START_TEST(test_empty_keys_and_keys_with_nul_are_refused)
{
    struct img b = start(0, 1);

    str(&b, "");
    u32(&b, 4);
    u64(&b, 0);
    u64(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "empty");
    b = start(0, 1);
    u64(&b, 3);
    put(&b, "a\0b", 3);
    u32(&b, 4);
    u64(&b, 0);
    u64(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "NUL");
}
END_TEST

START_TEST(test_duplicate_keys_are_refused)
{
    struct img b = start(0, LLAMA_KVS + 1);

    llama_kvs(&b, "llama");
    kv_u32(&b, "llama.block_count", 2);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'llama.block_count' appears twice");
}
END_TEST

START_TEST(test_unknown_value_types_are_refused_by_key)
{
    struct img b = start(0, 1);

    str(&b, "general.weird");
    u32(&b, 13);
    u32(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'general.weird': unknown value type 13");
}
END_TEST

START_TEST(test_bools_other_than_0_and_1_are_refused)
{
    struct img b = start(0, 1);
    uint8_t two = 2;

    str(&b, "general.flag");
    u32(&b, 7);
    put(&b, &two, 1);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'general.flag': bool value 2");
}
END_TEST

START_TEST(test_arrays_of_arrays_and_overlong_arrays_are_refused)
{
    struct img b = start(0, 1);

    str(&b, "tokenizer.ggml.tokens");
    u32(&b, 9);
    u32(&b, 9);
    u64(&b, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'tokenizer.ggml.tokens': an array of arrays");
    b = start(0, 1);
    str(&b, "tokenizer.ggml.scores");
    u32(&b, 9);
    u32(&b, 6);
    u64(&b, 1000);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'tokenizer.ggml.scores': array of 1000 float32");
    b = start(0, 1);
    str(&b, "tokenizer.ggml.tokens");
    u32(&b, 9);
    u32(&b, 8);
    u64(&b, 2);
    str(&b, "a");
    u64(&b, 99);
    refused(&b, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.tokens: string length 99");
}
END_TEST

START_TEST(test_metadata_of_the_wrong_type_is_refused_by_key)
{
    struct img b = start(1, LLAMA_KVS);

    kv_str(&b, "general.architecture", "llama");
    kv_str(&b, "llama.block_count", "one");
    kv_u32(&b, "llama.embedding_length", HIDDEN);
    kv_u32(&b, "llama.feed_forward_length", 64);
    kv_u32(&b, "llama.attention.head_count", 1);
    kv_u32(&b, "llama.context_length", 64);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'llama.block_count' is a string");
    b = start(1, LLAMA_KVS + 1);
    llama_kvs(&b, "llama");
    kv_u32(&b, "llama.rope.freq_base", 10000);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'llama.rope.freq_base' is a uint32");
}
END_TEST

START_TEST(test_missing_keys_and_tensors_are_named)
{
    struct img b = start(1, 1);

    kv_str(&b, "general.architecture", "llama");
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "key 'llama.block_count' is missing");
    b = start(0, LLAMA_KVS);
    llama_kvs(&b, "llama");
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight' is missing");
    b = start(0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'general.architecture' is missing");
}
END_TEST

START_TEST(test_alignment_must_be_a_power_of_two_uint32)
{
    struct img b = start(1, LLAMA_KVS + 1);

    llama_kvs(&b, "llama");
    kv_u32(&b, "general.alignment", 48);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "general.alignment 48");
    b = start(1, LLAMA_KVS + 1);
    llama_kvs(&b, "llama");
    kv_f32(&b, "general.alignment", 32);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'general.alignment' is a float32");
}
END_TEST

START_TEST(test_bad_ranks_and_dimensions_are_refused_by_tensor)
{
    const uint64_t ne5[5] = {1, 1, 1, 1, 1}, zero[2] = {HIDDEN, 0},
                   huge[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    struct img b = start(1, LLAMA_KVS);

    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 5, ne5, 0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': 5 dimensions");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 0, ne5, 0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': 0 dimensions");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, zero, 0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': dimension 1 is 0 (zero)");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 3, huge, 0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "overflows");
}
END_TEST

START_TEST(test_ggml_types_unknown_unsupported_or_partial_blocks_are_refused)
{
    const uint64_t ne[2] = {HIDDEN, VOCAB}, odd[2] = {40, VOCAB};
    struct img b = start(1, LLAMA_KVS);

    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, ne, 4, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': unknown ggml type 4");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, ne, 1000, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "unknown ggml type 1000");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, ne, 3, 0);
    refused(&b, DUET_STATUS_UNSUPPORTED, "'token_embd.weight': ggml type Q4_1 is not supported");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, odd, 8, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "rows of 40 elements are not whole Q8_0 blocks");
}
END_TEST

START_TEST(test_offsets_misaligned_outside_or_overlapping_are_refused)
{
    const uint64_t ne[2] = {HIDDEN, VOCAB};
    struct img b = start(1, LLAMA_KVS);

    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, ne, 0, 16);
    data(&b, EMBD_BYTES + 16);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': offset 16 is not a multiple");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    embd_info(&b);
    data(&b, EMBD_BYTES - 1);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight': bytes [0, +1024)");
    b = start(2, LLAMA_KVS);
    llama_kvs(&b, "llama");
    embd_info(&b);
    tinfo(&b, "output.weight", 2, ne, 0, 512);
    data(&b, EMBD_BYTES + 512);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight' and 'output.weight' overlap");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, "token_embd.weight", 2, ne, 0, 1ull << 63);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "reach past");
}
END_TEST

START_TEST(test_duplicate_and_bad_tensor_names_are_refused)
{
    const uint64_t ne[2] = {HIDDEN, VOCAB};
    struct img b = start(2, LLAMA_KVS);
    char long_name[80];

    llama_kvs(&b, "llama");
    embd_info(&b);
    tinfo(&b, "token_embd.weight", 2, ne, 0, EMBD_BYTES);
    data(&b, 2 * EMBD_BYTES);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'token_embd.weight' appears twice");
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "llama");
    tinfo(&b, long_name, 2, ne, 0, 0);
    refused(&b, DUET_STATUS_BAD_FORMAT, "too long");
}
END_TEST

/* qwen2 and qwen3 files: their own key prefix, Qwen2's biases and Qwen3's q/k norms (head_dim
 * from attention.key_length, not hidden / heads) in the description, their tensors mapped to the
 * Hugging Face names, and nothing copied: no q/k permutation to undo. */
START_TEST(test_qwen_files_describe_biases_norms_and_head_dim)
{
    const uint64_t bias_ne[1] = {HIDDEN}, norm_ne[1] = {16}, q_ne[2] = {HIDDEN, HIDDEN};
    struct img b = start(3, LLAMA_KVS);
    struct duet__gguf g;

    llama_kvs(&b, "qwen2");
    embd_info(&b);
    tinfo(&b, "blk.0.attn_q.bias", 1, bias_ne, 0, EMBD_BYTES);
    tinfo(&b, "blk.0.attn_q.weight", 2, q_ne, 0, EMBD_BYTES + HIDDEN * 4);
    data(&b, EMBD_BYTES + HIDDEN * 4 + HIDDEN * HIDDEN * 4);
    ck_assert_msg(parse(&b, &g) == DUET_STATUS_OK, "%s", err);
    ck_assert_str_eq(g.desc.architecture, "Qwen2ForCausalLM");
    ck_assert(g.desc.attention_bias && !g.desc.qk_norm);
    ck_assert_int_eq(g.desc.head_dim, HIDDEN);
    ck_assert_str_eq(g.tensors[1].name, "model.layers.0.self_attn.q_proj.bias");
    ck_assert_ptr_null(g.owned); /* q served from the file as it is */
    ck_assert_ptr_eq(g.tensors[2].data, b.p + g.data_start + EMBD_BYTES + HIDDEN * 4);
    duet__gguf_fini(&g);
    free(b.p);

    b = start(3, LLAMA_KVS + 1);
    llama_kvs(&b, "qwen3");
    kv_u32(&b, "qwen3.attention.key_length", 16);
    embd_info(&b);
    tinfo(&b, "blk.0.attn_q_norm.weight", 1, norm_ne, 0, EMBD_BYTES);
    tinfo(&b, "blk.0.attn_k_norm.weight", 1, norm_ne, 0, EMBD_BYTES + 64);
    data(&b, EMBD_BYTES + 128);
    ck_assert_msg(parse(&b, &g) == DUET_STATUS_OK, "%s", err);
    ck_assert_str_eq(g.desc.architecture, "Qwen3ForCausalLM");
    ck_assert(g.desc.qk_norm && !g.desc.attention_bias);
    ck_assert_int_eq(g.desc.head_dim, 16);
    ck_assert_str_eq(g.tensors[1].name, "model.layers.0.self_attn.q_norm.weight");
    ck_assert_str_eq(g.tensors[2].name, "model.layers.0.self_attn.k_norm.weight");
    duet__gguf_fini(&g);
    free(b.p);
}
END_TEST

/* What duet cannot run is refused by name: other architectures, a sliding window (llama.cpp
 * writes none for these; its layers would be unknown), YaRN rope scaling of Qwen2 files, a bias
 * or q/k norm the architecture does not have. */
START_TEST(test_unknown_architectures_windows_and_yarn_are_unsupported_by_name)
{
    struct img b = start(1, LLAMA_KVS + 1);

    llama_kvs(&b, "qwen2");
    kv_u32(&b, "qwen2.attention.sliding_window", 4096);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_UNSUPPORTED, "key 'qwen2.attention.sliding_window'");
    b = start(1, LLAMA_KVS + 1);
    llama_kvs(&b, "qwen2");
    kv_str(&b, "qwen2.rope.scaling.type", "yarn");
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_UNSUPPORTED, "key 'qwen2.rope.scaling.type'");
    b = start(2, LLAMA_KVS);
    llama_kvs(&b, "llama"); /* llama.cpp's llama takes optional biases; duet's Llama has none */
    embd_info(&b);
    tinfo(&b, "blk.0.attn_k.bias", 1, (const uint64_t[1]){HIDDEN}, 0, EMBD_BYTES);
    data(&b, EMBD_BYTES + HIDDEN * 4);
    refused(&b, DUET_STATUS_UNSUPPORTED, "tensor 'blk.0.attn_k.bias' is not supported in a llama");
    b = start(2, LLAMA_KVS);
    llama_kvs(&b, "qwen2");
    embd_info(&b);
    tinfo(&b, "blk.0.attn_output.bias", 1, (const uint64_t[1]){HIDDEN}, 0, EMBD_BYTES);
    data(&b, EMBD_BYTES + HIDDEN * 4);
    refused(&b, DUET_STATUS_UNSUPPORTED, "tensor 'blk.0.attn_output.bias'");
    b = start(2, LLAMA_KVS);
    llama_kvs(&b, "qwen2");
    embd_info(&b);
    tinfo(&b, "blk.0.attn_q_norm.weight", 1, (const uint64_t[1]){HIDDEN}, 0, EMBD_BYTES);
    data(&b, EMBD_BYTES + HIDDEN * 4);
    refused(&b, DUET_STATUS_UNSUPPORTED, "tensor 'blk.0.attn_q_norm.weight'");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "qwen2moe");
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_UNSUPPORTED, "'qwen2moe' is not supported");
    b = start(1, LLAMA_KVS);
    llama_kvs(&b, "falcon");
    embd_info(&b);
    data(&b, EMBD_BYTES);
    refused(&b, DUET_STATUS_UNSUPPORTED, "'falcon' is not supported");
}
END_TEST

/* tokenizer arrays: the right element types, one entry per embedding row. */
static struct img with_tokens(uint64_t n, uint32_t elem)
{
    struct img b = start(1, LLAMA_KVS + 1);

    llama_kvs(&b, "llama");
    str(&b, "tokenizer.ggml.tokens");
    u32(&b, 9);
    u32(&b, elem);
    u64(&b, n);
    for (uint64_t i = 0; i < n; i++)
        if (elem == 8)
            str(&b, "t");
        else
            u32(&b, (uint32_t)i);
    embd_info(&b);
    data(&b, EMBD_BYTES);
    return b;
}

START_TEST(test_tokenizer_arrays_must_match_the_vocabulary)
{
    struct img b = with_tokens(VOCAB, 8);
    struct duet__gguf g;

    ck_assert_msg(parse(&b, &g) == DUET_STATUS_OK, "%s", err);
    duet__gguf_fini(&g);
    free(b.p);
    b = with_tokens(VOCAB - 1, 8);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'tokenizer.ggml.tokens' has 7 entries");
    b = with_tokens(VOCAB, 4);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'tokenizer.ggml.tokens' is of type array of uint32");
}
END_TEST

START_TEST(test_q_rows_not_heads_times_head_dim_are_refused)
{
    const uint64_t ne[2] = {HIDDEN, 16};
    struct img b = start(2, LLAMA_KVS);

    llama_kvs(&b, "llama");
    embd_info(&b);
    tinfo(&b, "blk.0.attn_q.weight", 2, ne, 0, EMBD_BYTES);
    data(&b, EMBD_BYTES + HIDDEN * 16 * 4);
    refused(&b, DUET_STATUS_BAD_FORMAT, "'model.layers.0.self_attn.q_proj.weight' has 16 rows");
}
END_TEST

/* ---- files written from generated models ------------------------------------------------ */

static char tmpdir[4096];

static void setup(void)
{
    ck_assert(duet_test_mkdtemp(tmpdir, sizeof(tmpdir), "gguf-test"));
}

static void teardown(void)
{
    duet_test_rmtree(tmpdir);
}

static const char *gen_dir(void)
{
    static char dir[4200];

    snprintf(dir, sizeof(dir), "%.4000s/gen", tmpdir);
    return dir;
}

static void gen_llama(const char *dir)
{
    struct duet__gen_params p = {.dir = dir, .seed = 11, .force = true, .flags = DUET_MODEL_QUIET};
    char e[512];
    struct duet__msg msg = {e, sizeof(e)};

    duet__desc_defaults(&p.desc, DUET_ARCH_LLAMA);
    p.desc.hidden_size = 64;
    p.desc.intermediate_size = 96;
    p.desc.num_layers = 2;
    p.desc.num_heads = 4;
    p.desc.num_kv_heads = 2;
    p.desc.head_dim = 16;
    p.desc.vocab_size = 100;
    p.desc.bos_token_id = 1;
    p.desc.n_eos = 1;
    p.desc.eos_token_ids[0] = 2;
    p.desc.torch_dtype = DUET_DTYPE_F32;
    ck_assert_msg(duet__gen_model(&p, &msg) == DUET_STATUS_OK, "%s", e);
}

/* A Qwen2 (biases, tied embeddings) or Qwen3 (q/k norms, head_dim 32 != hidden / heads) of
 * two layers, f32. */
static void gen_qwen(const char *dir, const char *architecture)
{
    struct duet__gen_params p = {.dir = dir, .seed = 13, .force = true, .flags = DUET_MODEL_QUIET};
    char e[512];
    struct duet__msg msg = {e, sizeof(e)};

    duet__desc_defaults(&p.desc, DUET_ARCH_LLAMA);
    snprintf(p.desc.architecture, sizeof(p.desc.architecture), "%s", architecture);
    duet__desc_family_defaults(&p.desc);
    p.desc.hidden_size = 64;
    p.desc.intermediate_size = 96;
    p.desc.num_layers = 2;
    p.desc.num_heads = 4;
    p.desc.num_kv_heads = 2;
    p.desc.head_dim = p.desc.qk_norm ? 32 : 16;
    p.desc.tie_word_embeddings = p.desc.attention_bias;
    p.desc.vocab_size = 100;
    p.desc.rope_theta = 1000000.0;
    p.desc.norm_eps = 1e-6;
    p.desc.torch_dtype = DUET_DTYPE_F32;
    ck_assert_msg(duet__gen_model(&p, &msg) == DUET_STATUS_OK, "%s", e);
}

static duet_model *open_model(const char *path)
{
    duet_model *m;

    ck_assert_msg(duet_model_create(path, DUET_MODEL_QUIET, &m, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s: %s", path, err);
    return m;
}

static duet_model *write_gguf(const duet_model *src, duet_dtype dtype, char *path, size_t size)
{
    struct duet__msg msg = {err, sizeof(err)};

    snprintf(path, size, "%.4100s/m-%s.gguf", gen_dir(), duet_dtype_name(dtype));
    ck_assert_msg(duet__gguf_write(src, path, dtype, DUET_MODEL_QUIET, &msg) == DUET_STATUS_OK,
                  "%s", err);
    return open_model(path);
}

static float *values(const duet_tensor *t)
{
    float *v = malloc(t->numel * sizeof(float));

    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(duet_tensor_read_f32(t, 0, t->numel, v), DUET_STATUS_OK);
    return v;
}

START_TEST(test_float_gguf_files_read_back_the_folders_values)
{
    static const duet_dtype types[] = {DUET_DTYPE_F32, DUET_DTYPE_F16, DUET_DTYPE_BF16};
    duet_model *src;
    char path[4300];

    gen_llama(gen_dir());
    src = open_model(gen_dir());
    for (size_t i = 0; i < 3; i++) {
        duet_model *g = write_gguf(src, types[i], path, sizeof(path));
        const duet_model_desc *a = duet_model_describe(src), *b = duet_model_describe(g);

        ck_assert_int_eq(a->num_kv_heads, b->num_kv_heads);
        ck_assert_int_eq(a->intermediate_size, b->intermediate_size);
        ck_assert_int_eq(a->bos_token_id, b->bos_token_id);
        ck_assert_int_eq(a->eos_token_ids[0], b->eos_token_ids[0]);
        ck_assert_int_eq(a->tie_word_embeddings, b->tie_word_embeddings);
        for (size_t t = 0; t < duet_model_num_tensors(src); t++) {
            const duet_tensor *x = duet_model_tensor_at(src, t);
            const duet_tensor *y = duet_model_tensor(g, x->name);
            float *vx, *vy;

            ck_assert_msg(y != NULL, "%s missing from the %s GGUF", x->name,
                          duet_dtype_name(types[i]));
            vx = values(x);
            vy = values(y);
            /* generated values are exact in every float type (model_gen.h) */
            ck_assert_msg(memcmp(vx, vy, x->numel * sizeof(float)) == 0, "%s differs in %s",
                          x->name, duet_dtype_name(types[i]));
            free(vx);
            free(vy);
        }
        duet_model_destroy(g);
        remove(path);
    }
    duet_model_destroy(src);
}
END_TEST

/* A whole file into memory (the caller frees it). */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p;
    long len;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    ck_assert_int_gt(len, 0);
    rewind(f);
    p = malloc((size_t)len);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Every tensor of src (the folder) in g (its GGUF file) with the same shape and values. */
static void assert_same_tensors(duet_model *src, duet_model *g)
{
    for (size_t t = 0; t < duet_model_num_tensors(src); t++) {
        const duet_tensor *x = duet_model_tensor_at(src, t);
        const duet_tensor *y = duet_model_tensor(g, x->name);
        float *vx, *vy;

        ck_assert_msg(y != NULL, "%s missing from the GGUF", x->name);
        ck_assert_int_eq(x->rank, y->rank);
        ck_assert_int_eq(x->shape[0], y->shape[0]);
        vx = values(x);
        vy = values(y);
        ck_assert_msg(memcmp(vx, vy, x->numel * sizeof(float)) == 0, "%s differs", x->name);
        free(vx);
        free(vy);
    }
}

/* Generated Qwen2 / Qwen3 folders written as F32 GGUF: general.architecture qwen2 / qwen3 (the
 * description reads back), every tensor's values, and no permutation in the file: the q and k
 * rows lie in the file in the Hugging Face order (the reader copies nothing). */
START_TEST(test_qwen_gguf_files_read_back_unpermuted)
{
    static const char *const archs[] = {"Qwen2ForCausalLM", "Qwen3ForCausalLM"};
    char path[4300];

    for (size_t i = 0; i < 2; i++) {
        duet_model *src, *g;
        const duet_model_desc *a, *b;
        struct duet__gguf parsed;
        struct duet__msg msg = {err, sizeof(err)};
        uint8_t *img;
        size_t n;

        gen_qwen(gen_dir(), archs[i]);
        src = open_model(gen_dir());
        g = write_gguf(src, DUET_DTYPE_F32, path, sizeof(path));
        a = duet_model_describe(src);
        b = duet_model_describe(g);
        ck_assert_str_eq(b->architecture, archs[i]);
        ck_assert_int_eq(a->attention_bias, b->attention_bias);
        ck_assert_int_eq(a->qk_norm, b->qk_norm);
        ck_assert_int_eq(a->head_dim, b->head_dim);
        ck_assert_int_eq(a->tie_word_embeddings, b->tie_word_embeddings);
        /* written as float32, as llama.cpp does */
        ck_assert(a->rope_theta == b->rope_theta && (float)a->norm_eps == (float)b->norm_eps);
        assert_same_tensors(src, g);
        img = slurp(path, &n);
        ck_assert_msg(memmem(img, n, i ? "qwen3.attention.key_length" : "qwen2.block_count",
                             i ? 26 : 17) != NULL,
                      "no %s keys", i ? "qwen3" : "qwen2");
        ck_assert_msg(duet__gguf_parse(path, img, n, &parsed, &msg) == DUET_STATUS_OK, "%s", err);
        ck_assert_ptr_null(parsed.owned);
        duet__gguf_fini(&parsed);
        free(img);
        duet_model_destroy(g);
        duet_model_destroy(src);
        remove(path);
    }
}
END_TEST

/* Patches the written file at path: the first occurrence of from (a tensor name) becomes to (of
 * the same length); with dim0 nonzero, that tensor's innermost dimension becomes dim0 instead. */
static void patch_file(const char *path, const char *from, const char *to, uint64_t dim0)
{
    size_t n;
    uint8_t *img = slurp(path, &n), *at = memmem(img, n, from, strlen(from));
    FILE *f;

    ck_assert_msg(at != NULL, "%s not in %s", from, path);
    if (dim0)
        memcpy(at + strlen(from) + 4, &dim0, 8); /* after the name: rank u32, then ne[0] */
    else
        memcpy(at, to, strlen(to));
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(img, 1, n, f), n);
    fclose(f);
    free(img);
}

/* A qwen file without one of its biases or norms, or with one of the wrong shape, is refused
 * naming the tensor. */
START_TEST(test_qwen_files_missing_or_misshapen_biases_and_norms_are_refused_by_name)
{
    static const struct {
        const char *arch, *from, *to;
        uint64_t dim0;
        const char *needle;
    } cases[] = {
        {"Qwen2ForCausalLM", "blk.1.attn_v.bias", "blk.1.attn_v.biaz", 0,
         "tensor 'model.layers.1.self_attn.v_proj.bias' is missing"},
        {"Qwen2ForCausalLM", "blk.0.attn_k.bias", NULL, 16,
         "tensor 'model.layers.0.self_attn.k_proj.bias' has the wrong shape"},
        {"Qwen3ForCausalLM", "blk.0.attn_k_norm.weight", "blk.0.attn_k_morm.weight", 0,
         "tensor 'model.layers.0.self_attn.k_norm.weight' is missing"},
        {"Qwen3ForCausalLM", "blk.1.attn_q_norm.weight", NULL, 16,
         "tensor 'model.layers.1.self_attn.q_norm.weight' has the wrong shape"},
    };
    char path[4300];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        duet_model *src, *m = NULL;

        gen_qwen(gen_dir(), cases[i].arch);
        src = open_model(gen_dir());
        duet_model_destroy(write_gguf(src, DUET_DTYPE_Q8_0, path, sizeof(path)));
        duet_model_destroy(src);
        patch_file(path, cases[i].from, cases[i].to, cases[i].dim0);
        ck_assert_int_eq(duet_model_create(path, DUET_MODEL_QUIET, &m, err, sizeof(err)),
                         DUET_STATUS_BAD_FORMAT);
        ck_assert_msg(strstr(err, cases[i].needle) && strstr(err, "m-Q8_0.gguf"),
                      "message '%s' does not name '%s'", err, cases[i].needle);
        ck_assert_ptr_null(m);
        remove(path);
    }
}
END_TEST

/* Q8_0 / Q4_0: the codes and scales give read_f32's values exactly, and those are near the
 * originals: ggml's reference quantisers round to nearest with the unrounded scale d (Q8_0: half
 * a step; Q4_0: d = −max / 8 leaves −max at code 16, clamped to 15: a whole step), and the stored
 * f16 d differs from it by 2^-11 relative, times the code (127 or 8). */
static void check_blocks(const duet_tensor *x, const duet_tensor *y)
{
    uint64_t rows = y->shape[0], k = y->shape[1];
    uint8_t *codes = malloc(rows * k);
    uint16_t *scales = malloc(rows * k / 32 * 2);
    float *vx = values(x), *vy = values(y);
    int zero = y->dtype == DUET_DTYPE_Q8_0 ? 128 : 8;
    float bound = y->dtype == DUET_DTYPE_Q8_0 ? 0.5f + 128 * 0x1p-11f : 1.0f + 8 * 0x1p-11f;

    ck_assert(codes && scales);
    ck_assert_int_eq(duet_tensor_read_codes(y, 0, rows, codes, scales), DUET_STATUS_OK);
    for (uint64_t i = 0; i < rows * k; i++) {
        float s = duet_f16_to_f32(scales[i / 32]);

        ck_assert_msg(vy[i] == s * (float)(codes[i] - zero), "%s[%llu]: codes give %g, read %g",
                      y->name, (unsigned long long)i, (double)(s * (float)(codes[i] - zero)),
                      (double)vy[i]);
        ck_assert_msg(fabsf(vx[i] - vy[i]) <= bound * fabsf(s) + 1e-7f,
                      "%s[%llu]: %g quantised to %g, step %g", y->name, (unsigned long long)i,
                      (double)vx[i], (double)vy[i], (double)s);
    }
    free(codes);
    free(scales);
    free(vx);
    free(vy);
}

START_TEST(test_q8_0_and_q4_0_files_hold_the_values_within_a_step)
{
    static const duet_dtype types[] = {DUET_DTYPE_Q8_0, DUET_DTYPE_Q4_0};
    duet_model *src;
    char path[4300];

    gen_llama(gen_dir());
    src = open_model(gen_dir());
    for (size_t i = 0; i < 2; i++) {
        duet_model *g = write_gguf(src, types[i], path, sizeof(path));

        for (size_t t = 0; t < duet_model_num_tensors(src); t++) {
            const duet_tensor *x = duet_model_tensor_at(src, t);
            const duet_tensor *y = duet_model_tensor(g, x->name);

            ck_assert_ptr_nonnull(y);
            if (x->rank == 2) {
                ck_assert_int_eq(y->dtype, types[i]);
                check_blocks(x, y);
            } else {
                ck_assert_int_eq(y->dtype, DUET_DTYPE_F32);
            }
        }
        ck_assert_int_eq(
            duet_tensor_read_codes(duet_model_tensor(g, "model.norm.weight"), 0, 1, NULL, NULL),
            DUET_STATUS_INVALID_ARGUMENT);
        duet_model_destroy(g);
        remove(path);
    }
    duet_model_destroy(src);
}
END_TEST

/* K-quant files (duet's plain round-to-nearest writer) decode to the originals within the error
 * of their code widths: RMS of the error over RMS of the tensor, for the uniform values of a
 * generated model about 1/√12 of a step, 6.7 % with 16 levels, 3.3 % with 32, 1.6 % with 64. */
START_TEST(test_k_quant_files_hold_the_values_within_their_code_widths)
{
    static const struct {
        duet_dtype dtype;
        double bound;
    } types[] = {{DUET_DTYPE_Q4_K, 0.10}, {DUET_DTYPE_Q5_K, 0.05}, {DUET_DTYPE_Q6_K, 0.03}};
    struct duet__gen_params p = {
        .dir = gen_dir(), .seed = 5, .force = true, .flags = DUET_MODEL_QUIET};
    char e[512], path[4300];
    struct duet__msg msg = {e, sizeof(e)};
    duet_model *src;

    duet__desc_defaults(&p.desc, DUET_ARCH_LLAMA);
    p.desc.hidden_size = 256;
    p.desc.intermediate_size = 512;
    p.desc.num_layers = 1;
    p.desc.num_heads = 4;
    p.desc.num_kv_heads = 2;
    p.desc.head_dim = 64;
    p.desc.vocab_size = 64;
    p.desc.torch_dtype = DUET_DTYPE_F32;
    ck_assert_msg(duet__gen_model(&p, &msg) == DUET_STATUS_OK, "%s", e);
    src = open_model(gen_dir());
    for (size_t i = 0; i < 3; i++) {
        duet_model *g = write_gguf(src, types[i].dtype, path, sizeof(path));
        double worst = 0;

        for (size_t t = 0; t < duet_model_num_tensors(src); t++) {
            const duet_tensor *x = duet_model_tensor_at(src, t);
            const duet_tensor *y = duet_model_tensor(g, x->name);
            float *vx, *vy;
            double sq = 0, ref = 0;

            if (x->rank != 2)
                continue;
            ck_assert_int_eq(y->dtype, types[i].dtype);
            vx = values(x);
            vy = values(y);
            for (uint64_t k = 0; k < x->numel; k++) {
                sq += ((double)vx[k] - vy[k]) * ((double)vx[k] - vy[k]);
                ref += (double)vx[k] * vx[k];
            }
            worst = fmax(worst, sqrt(sq / ref));
            free(vx);
            free(vy);
        }
        fprintf(stderr, "%s: worst relative RMS error of a matrix %.4f (bound %.2f)\n",
                duet_dtype_name(types[i].dtype), worst, types[i].bound);
        ck_assert_msg(worst < types[i].bound, "%s: relative RMS error %g",
                      duet_dtype_name(types[i].dtype), worst);
        duet_model_destroy(g);
        remove(path);
    }
    duet_model_destroy(src);
}
END_TEST

/* Every allocation of duet_model_create on a GGUF file failed in turn: a status, never a model
 * half made (ASan and valgrind runs see leaks). */
START_TEST(test_create_of_a_gguf_file_survives_every_allocation_failure)
{
    char path[4300];
    duet_model *src;
    duet_status st;
    long n = 0;

    gen_llama(gen_dir());
    src = open_model(gen_dir());
    duet_model_destroy(write_gguf(src, DUET_DTYPE_Q8_0, path, sizeof(path)));
    duet_model_destroy(src);
    do {
        duet_model *m = NULL;

        duet_test_injected = false;
        duet_test_fail_countdown = n++;
        st = duet_model_create(path, DUET_MODEL_QUIET, &m, err, sizeof(err));
        duet_test_fail_countdown = -1;
        ck_assert_msg(st != DUET_STATUS_OK || !duet_test_injected, "failure %ld was ignored", n);
        ck_assert_msg(st == DUET_STATUS_OK || duet_test_injected, "failure without injection: %s",
                      err);
        ck_assert_msg(st == DUET_STATUS_OK || m == NULL, "failed create returned a model");
        duet_model_destroy(m);
    } while (st != DUET_STATUS_OK && n < 100000);
    ck_assert_int_gt(n, 10);
}
END_TEST

/* A K-quant super-block built by hand dequantises as ggml's layout says. */
START_TEST(test_q6_k_block_dequantises_as_laid_out)
{
    uint8_t blk[210] = {0};
    uint16_t d = duet_f32_to_f16(0.5f);
    duet_tensor t = {
        .data = blk, .numel = 256, .rank = 1, .shape = {256}, .dtype = DUET_DTYPE_Q6_K};
    float y[256];

    /* element 0: low 4 bits 5 (ql[0] low nibble), high 2 bits 2 (qh[0] bits 0-1): q = 37 - 32 */
    blk[0] = 0x05;
    blk[128] = 0x02;
    /* element 64: ql[0] high nibble 1, qh[0] bits 4-5 = 0: q = 1 - 32 */
    blk[0] |= 0x10;
    for (int i = 0; i < 16; i++)
        blk[192 + i] = (uint8_t)(i + 1); /* scale of sub-block i */
    memcpy(blk + 208, &d, 2);
    ck_assert_int_eq(duet_tensor_read_f32(&t, 0, 256, y), DUET_STATUS_OK);
    ck_assert_float_eq(y[0], 0.5f * 1 * 5);
    ck_assert_float_eq(y[64], 0.5f * 5 * (1 - 32));
    ck_assert_float_eq(y[1], 0.5f * 1 * -32);
    ck_assert_float_eq(y[200], 0.5f * 13 * -32); /* n = 128, l = 8, third quarter: scale 12 */
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    const struct duet_test_case cases[] = {
        {"minimal file", test_minimal_llama_file_is_accepted},
        {"magic", test_bad_magic_and_short_files_are_refused},
        {"version", test_other_versions_are_refused},
        {"counts", test_counts_that_cannot_fit_are_refused},
        {"string lengths", test_string_lengths_past_the_end_are_refused},
        {"keys", test_empty_keys_and_keys_with_nul_are_refused},
        {"duplicate keys", test_duplicate_keys_are_refused},
        {"value types", test_unknown_value_types_are_refused_by_key},
        {"bools", test_bools_other_than_0_and_1_are_refused},
        {"arrays", test_arrays_of_arrays_and_overlong_arrays_are_refused},
        {"metadata types", test_metadata_of_the_wrong_type_is_refused_by_key},
        {"missing", test_missing_keys_and_tensors_are_named},
        {"alignment", test_alignment_must_be_a_power_of_two_uint32},
        {"dimensions", test_bad_ranks_and_dimensions_are_refused_by_tensor},
        {"ggml types", test_ggml_types_unknown_unsupported_or_partial_blocks_are_refused},
        {"offsets", test_offsets_misaligned_outside_or_overlapping_are_refused},
        {"tensor names", test_duplicate_and_bad_tensor_names_are_refused},
        {"qwen files", test_qwen_files_describe_biases_norms_and_head_dim},
        {"architectures", test_unknown_architectures_windows_and_yarn_are_unsupported_by_name},
        {"q rows", test_q_rows_not_heads_times_head_dim_are_refused},
        {"tokenizer arrays", test_tokenizer_arrays_must_match_the_vocabulary},
        {"float files", test_float_gguf_files_read_back_the_folders_values},
        {"block files", test_q8_0_and_q4_0_files_hold_the_values_within_a_step},
        {"qwen files written", test_qwen_gguf_files_read_back_unpermuted},
        {"qwen tensors refused",
         test_qwen_files_missing_or_misshapen_biases_and_norms_are_refused_by_name},
        {"q6_k", test_q6_k_block_dequantises_as_laid_out},
        {"k-quant files", test_k_quant_files_hold_the_values_within_their_code_widths},
        {"allocation failures", test_create_of_a_gguf_file_survives_every_allocation_failure},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), setup, teardown, 60);
    return s;
}

int main(void)
{
    return duet_test_run(gguf_suite());
}
