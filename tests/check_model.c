/*
 * Model files: the safetensors reader and its validation (one test per malformed case, each
 * asserting the message), config.json / generation_config.json parsing, the generator
 * (presets, values, sharding, dtypes, determinism, the deep-layer knob, drafts), allocation
 * failures, and the reference forward pass with the greedy agreement of drafts.
 *
 * The suite compiles model/'s sources itself, so it reads internals (model-int.h) and injects
 * allocation failures. Files are written under $DUET_TEST_BUILDDIR (else /tmp) in a fresh
 * mkdtemp folder per test, removed afterwards.
 */
#define _GNU_SOURCE /* nftw */
#include <duet/model.h>

#include "../model/model-int.h"
#include "check_util.h"
#include "test_dirs.h"
#include "fault.h"
#include "reference_forward.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- allocation failures ------------------------------------------------------------------
 * model/local.mk compiles this program with malloc, calloc and realloc renamed to the
 * duet_test_ functions of tests/fault.c; jansson allocates through json_alloc when a test installs
 * it. duet_test_fail_countdown = N makes the Nth allocation from now fail (-1: none). */
#undef malloc
#undef calloc
#undef realloc
void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);
const char *duet_test_cxx_model_dtype_name(int dtype);

/* jansson absorbs a few of its allocation failures (its parser then still succeeds), so
 * failures injected there are counted apart from ours. */
static bool injected_json;

static void *json_alloc(size_t size)
{
    bool before = duet_test_injected;
    bool fail = duet_test_inject();

    if (fail && !before) {
        duet_test_injected = false;
        injected_json = true;
    }
    return fail ? NULL : malloc(size);
}

/* ---- fixture: a fresh folder per test ----------------------------------------------------- */

static char tmpdir[4096];
static char err[4096];
static char dir_bufs[64][4200]; /* dir_of's results */
static int dir_next;

static void setup(void)
{
    ck_assert(duet_test_mkdtemp(tmpdir, sizeof(tmpdir), "model-test"));
    err[0] = '\0';
    duet_test_fail_countdown = -1;
    dir_next = 0;
}

static void teardown(void)
{
    duet_test_rmtree(tmpdir);
}

/* tmpdir/sub, in a buffer that lives until the end of the test (at most 64 per test). */
static const char *dir_of(const char *sub)
{
    char *buf;

    ck_assert_int_lt(dir_next, 64);
    buf = dir_bufs[dir_next++];
    snprintf(buf, sizeof(dir_bufs[0]), "%s/%s", tmpdir, sub);
    return buf;
}

static void write_bytes(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4400];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_bytes(dir, name, text, strlen(text));
}

static void assert_says(const char *needle)
{
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

/* ---- models to test with ----------------------------------------------------------------- */

static duet_model_desc tiny_llama(void)
{
    duet_model_desc d;

    duet__desc_defaults(&d, DUET_ARCH_LLAMA);
    d.hidden_size = 16;
    d.intermediate_size = 24;
    d.num_layers = 2;
    d.num_heads = 4;
    d.num_kv_heads = 2;
    d.head_dim = 4;
    d.vocab_size = 32;
    d.max_position = 64;
    d.bos_token_id = 1;
    d.n_eos = 1;
    d.eos_token_ids[0] = 2;
    return d;
}

static duet_model_desc tiny_opt(bool pre_ln, uint32_t word_embed_proj_dim)
{
    duet_model_desc d;

    duet__desc_defaults(&d, DUET_ARCH_OPT);
    d.hidden_size = 16;
    d.intermediate_size = 32;
    d.num_layers = 2;
    d.num_heads = 4;
    d.num_kv_heads = 4;
    d.head_dim = 4;
    d.vocab_size = 40;
    d.max_position = 64;
    d.word_embed_proj_dim = word_embed_proj_dim;
    d.do_layer_norm_before = d.final_layer_norm = pre_ln;
    d.bos_token_id = 2;
    d.pad_token_id = 1;
    d.n_eos = 1;
    d.eos_token_ids[0] = 2;
    return d;
}

static struct duet__gen_params gen_params(const char *sub, const duet_model_desc *d,
                                          duet_dtype dtype, uint64_t seed)
{
    struct duet__gen_params p = {.desc = *d,
                                 .dir = dir_of(sub),
                                 .seed = seed,
                                 .tail_from = d->num_layers,
                                 .flags = DUET_MODEL_QUIET};

    p.desc.torch_dtype = dtype;
    return p;
}

static void generate(const struct duet__gen_params *p)
{
    struct duet__msg msg = {err, sizeof(err)};

    ck_assert_msg(duet__gen_model(p, &msg) == DUET_STATUS_OK, "generate: %s", err);
}

static duet_model *open_ok(const char *dir)
{
    duet_model *m = NULL;

    ck_assert_msg(duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err)) == DUET_STATUS_OK,
                  "%s: %s", dir, err);
    return m;
}

/* Opens dir expecting status st; the message must name `file` (a name inside dir) and say
 * `needle`. */
static void open_fails(const char *dir, duet_status st, const char *file, const char *needle)
{
    duet_model *m = (duet_model *)0x1;
    char path[4400];

    ck_assert_int_eq(duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err)), st);
    ck_assert_ptr_null(m);
    snprintf(path, sizeof(path), *file ? "%s/%s" : "%s", dir, file);
    assert_says(path);
    assert_says(needle);
}

/* Every element of every tensor of m (a sample of big ones) equals what the generator makes. */
static void assert_generated_values(const duet_model *m, const struct duet__gen_params *p)
{
    struct duet__slot *slots;
    size_t n;

    ck_assert_int_eq(duet__layout_build(&p->desc, &slots, &n), DUET_STATUS_OK);
    ck_assert_uint_eq(n, duet_model_num_tensors(m));
    for (size_t i = 0; i < n; i++) {
        const duet_tensor *t = duet_model_tensor(m, slots[i].name);
        uint64_t numel = duet__slot_numel(&slots[i]), stream;
        struct duet__gen_dist dist;

        ck_assert_msg(t != NULL, "%s missing", slots[i].name);
        ck_assert_int_eq(t->dtype, p->desc.torch_dtype);
        stream = duet__gen_stream(p->seed, slots[i].name);
        duet__gen_dist_of(p, &slots[i], &dist);
        for (uint64_t k = 0; k < 64 && k < numel; k++) {
            uint64_t idx = numel <= 64 ? k : (k * 2654435761u + 7) % numel;
            float got;

            ck_assert_int_eq(duet_tensor_read_f32(t, idx, 1, &got), DUET_STATUS_OK);
            ck_assert_msg(got == duet__gen_value(stream, idx, &dist), "%s[%llu] = %g, want %g",
                          t->name, (unsigned long long)idx, (double)got,
                          (double)duet__gen_value(stream, idx, &dist));
        }
    }
    free(slots);
}

/* ---- crafted safetensors files -------------------------------------------------------------
 * A tensor list written with a correct header and F32 (or the given dtype) data. */
struct crafted {
    char name[96];
    const char *dtype; /* "F32" unless set */
    uint32_t rank;
    uint64_t shape[2];
};

/* The tensors desc needs, as a crafted list (n set, *out malloc'd). */
static struct crafted *crafted_layout(const duet_model_desc *d, size_t *n)
{
    struct duet__slot *slots;
    struct crafted *c;

    ck_assert_int_eq(duet__layout_build(d, &slots, n), DUET_STATUS_OK);
    c = calloc(*n + 4, sizeof(*c));
    for (size_t i = 0; i < *n; i++) {
        snprintf(c[i].name, sizeof(c[i].name), "%s", slots[i].name);
        c[i].dtype = "F32";
        c[i].rank = slots[i].rank;
        memcpy(c[i].shape, slots[i].shape, sizeof(c[i].shape));
    }
    free(slots);
    return c;
}

static void write_crafted(const char *dir, const char *file, const struct crafted *c, size_t n)
{
    json_t *root = json_object();
    uint64_t at = 0;
    char *text, *buf;
    size_t len;

    for (size_t i = 0; i < n; i++) {
        duet_dtype dt;
        uint64_t bytes;
        json_t *shape = json_array();

        ck_assert(duet__dtype_parse(c[i].dtype, &dt));
        bytes = duet_dtype_size(dt);
        for (uint32_t k = 0; k < c[i].rank; k++) {
            json_array_append_new(shape, json_integer((json_int_t)c[i].shape[k]));
            bytes *= c[i].shape[k];
        }
        json_object_set_new(root, c[i].name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", c[i].dtype, "shape", shape,
                                      "data_offsets", (json_int_t)at, (json_int_t)(at + bytes)));
        at += bytes;
    }
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    len = strlen(text);
    buf = calloc(1, 8 + len + at);
    for (int b = 0; b < 8; b++)
        buf[b] = (char)((uint64_t)len >> (8 * b) & 0xff);
    memcpy(buf + 8, text, len);
    for (uint64_t i = 0; i + 4 <= at; i += 4) {
        float v = 0.25f;

        memcpy(buf + 8 + len + i, &v, 4);
    }
    write_bytes(dir, file, buf, 8 + len + at);
    free(buf);
    free(text);
}

/* A folder with the tiny Llama's config.json (from the writer) and no weights. */
static const char *config_only(const char *sub, const duet_model_desc *d)
{
    const char *dir = dir_of(sub);
    struct duet__msg msg = {err, sizeof(err)};

    ck_assert(mkdir(dir, 0755) == 0 || errno == EEXIST);
    ck_assert_int_eq(duet__write_configs(dir, d, NULL, &msg), DUET_STATUS_OK);
    return dir;
}

/* A tiny Llama folder whose model.safetensors has the raw header text and data_len bytes. */
static const char *with_header(const char *header, size_t data_len)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t len = strlen(header);
    char *buf = calloc(1, 8 + len + data_len);

    for (int b = 0; b < 8; b++)
        buf[b] = (char)((uint64_t)len >> (8 * b) & 0xff);
    memcpy(buf + 8, header, len);
    write_bytes(dir, "model.safetensors", buf, 8 + len + data_len);
    free(buf);
    return dir;
}

/* ==== the safetensors reader ================================================================ */

START_TEST(test_generated_model_loads_and_describes_itself)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_BF16, 7);
    duet_model *m;
    const duet_tensor *t;

    generate(&p);
    m = open_ok(p.dir);
    ck_assert_str_eq(duet_model_dir(m), p.dir);
    ck_assert_str_eq(duet_model_describe(m)->architecture, "LlamaForCausalLM");
    ck_assert_uint_eq(duet_model_describe(m)->num_kv_heads, 2);
    t = duet_model_layer_tensor(m, 1, "self_attn.k_proj.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->name, "model.layers.1.self_attn.k_proj.weight");
    ck_assert_uint_eq(t->rank, 2);
    ck_assert_uint_eq(t->shape[0], 8);
    ck_assert_uint_eq(t->shape[1], 16);
    ck_assert_uint_eq(t->nbytes, 8 * 16 * 2);
    ck_assert_uint_eq(t->offset % 2, 0);
    ck_assert_ptr_null(duet_model_tensor(m, "model.layers.2.self_attn.k_proj.weight"));
    ck_assert_ptr_null(duet_model_layer_tensor(m, 7, "nope"));
    for (size_t i = 1; i < duet_model_num_tensors(m); i++)
        ck_assert_uint_eq(duet_model_tensor_at(m, i)->offset,
                          duet_model_tensor_at(m, i - 1)->offset +
                              duet_model_tensor_at(m, i - 1)->nbytes);
    ck_assert_ptr_null(duet_model_tensor_at(m, duet_model_num_tensors(m)));
    assert_generated_values(m, &p);
    duet_model_destroy(m);
}
END_TEST

START_TEST(test_file_shorter_than_eight_bytes_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);

    write_bytes(dir, "model.safetensors", "\x10\0\0", 3);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "file is 3 bytes, shorter than the 8-byte header length");
    write_bytes(dir, "model.safetensors", "", 0);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors", "file is 0 bytes");
}
END_TEST

START_TEST(test_header_length_past_the_end_of_the_file_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);

    write_bytes(dir, "model.safetensors", "\x00\x01\0\0\0\0\0\0{}", 10);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "header length 256 is larger than the 2 bytes after it");
}
END_TEST

START_TEST(test_absurd_header_length_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);

    write_bytes(dir, "model.safetensors", "\0\0\0\0\0\x01\0\0{}", 10);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "header length 1099511627776 is absurd (limit 100000000 bytes)");
}
END_TEST

START_TEST(test_header_that_is_not_json_is_refused)
{
    open_fails(with_header("{\"a\": [1,", 0), DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "header is not valid JSON");
    open_fails(with_header("{\"a\": \"\xff\xfe\"}", 0), DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "header is not valid JSON");
}
END_TEST

START_TEST(test_header_that_is_not_an_object_is_refused)
{
    open_fails(with_header("[1, 2]", 0), DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "header is JSON but not an object");
}
END_TEST

START_TEST(test_metadata_must_be_an_object_of_strings)
{
    open_fails(with_header("{\"__metadata__\": [1]}", 0), DUET_STATUS_BAD_FORMAT,
               "model.safetensors", "\"__metadata__\" must be an object of strings");
    open_fails(with_header("{\"__metadata__\": {\"format\": \"pt\", \"step\": 3}}", 0),
               DUET_STATUS_BAD_FORMAT, "model.safetensors", "('step' is not a string)");
}
END_TEST

START_TEST(test_metadata_is_not_a_tensor)
{
    static const char header[] = "{\"__metadata__\":{\"format\":\"pt\"},\"t\":{\"dtype\":\"U8\","
                                 "\"shape\":[2],\"data_offsets\":[0,2]}}";
    uint8_t file[8 + sizeof(header) + 1] = {sizeof(header) - 1};
    struct duet__st_header h;
    struct duet__msg msg = {err, sizeof(err)};

    memcpy(file + 8, header, sizeof(header) - 1);
    file[sizeof(file) - 2] = 5;
    file[sizeof(file) - 1] = 6;
    ck_assert_int_eq(duet__st_parse("x", file, sizeof(file), &h, &msg), DUET_STATUS_OK);
    ck_assert_uint_eq(h.n, 1);
    ck_assert_str_eq(h.tensors[0].name, "t");
    ck_assert_uint_eq(h.tensors[0].offset, sizeof(file) - 2);
    ck_assert_int_eq(((const uint8_t *)h.tensors[0].data)[1], 6);
    duet__st_header_fini(&h);
}
END_TEST

START_TEST(test_unknown_dtype_is_refused_by_name)
{
    open_fails(
        with_header("{\"w\": {\"dtype\": \"F17\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4),
        DUET_STATUS_BAD_FORMAT, "model.safetensors", "tensor 'w': unknown dtype 'F17'");
    open_fails(with_header("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4),
               DUET_STATUS_BAD_FORMAT, "model.safetensors", "tensor 'w': no \"dtype\" string");
}
END_TEST

START_TEST(test_bad_shape_is_refused)
{
    open_fails(with_header("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, "
                           "4]}}",
                           4),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'w': \"shape\" must be an array of at most 8 non-negative integers");
    open_fails(with_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296], "
                           "\"data_offsets\": [0, 0]}}",
                           0),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'w': shape [4294967296, 4294967296] is too large");
}
END_TEST

START_TEST(test_shape_and_dtype_must_match_the_byte_range)
{
    open_fails(with_header("{\"w\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": "
                           "[0, 10]}}",
                           10),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'w': shape [2, 3] of BF16 takes 12 bytes but data_offsets [0, 10] hold 10");
}
END_TEST

START_TEST(test_offsets_outside_the_data_area_are_refused)
{
    open_fails(with_header("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, "
                           "16]}}",
                           12),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'w': data_offsets [0, 16] reach outside the data area (12 bytes)");
    open_fails(
        with_header("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4),
        DUET_STATUS_BAD_FORMAT, "model.safetensors",
        "tensor 'w': \"data_offsets\" must be [begin, end]");
}
END_TEST

START_TEST(test_overlapping_ranges_are_refused)
{
    open_fails(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, "
                           "8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, "
                           "12]}}",
                           12),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
}
END_TEST

START_TEST(test_out_of_order_range_is_refused)
{
    open_fails(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, "
                           "4]}}",
                           8),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'a': data_offsets [8, 4] are out of order (begin after end)");
}
END_TEST

START_TEST(test_gaps_and_trailing_bytes_are_refused)
{
    open_fails(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, "
                           "8]}}",
                           8),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "bytes [0, 4) of the data area belong to no tensor (a gap before tensor 'a')");
    open_fails(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, "
                           "4]}}",
                           9),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "the data area has 9 bytes but its tensors end at 4");
}
END_TEST

START_TEST(test_duplicate_names_in_one_file_are_refused)
{
    open_fails(with_header("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, "
                           "\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
                           2),
               DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "a tensor name appears twice in the header: duplicate object key near '\"a\"'");
}
END_TEST

START_TEST(test_duplicate_names_across_shards_are_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);

    write_crafted(dir, "model-00001-of-00002.safetensors", c, n);
    write_crafted(dir, "model-00002-of-00002.safetensors", c, 1);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\", "
               "\"x\": \"model-00002-of-00002.safetensors\"}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model-0000",
               "tensor 'model.embed_tokens.weight' is stored twice (also in");
    free(c);
}
END_TEST

START_TEST(test_missing_tensor_is_named_with_the_architecture)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(c[i].name, "model.layers.1.mlp.up_proj.weight") == 0)
            c[i] = c[--n];
    write_crafted(dir, "model.safetensors", c, n);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'model.layers.1.mlp.up_proj.weight' is missing (LlamaForCausalLM with 2 "
               "layers needs it)");
    free(c);
}
END_TEST

START_TEST(test_wrong_shape_for_the_config_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(c[i].name, "model.layers.0.self_attn.k_proj.weight") == 0)
            c[i].shape[0] = 16; /* as if num_key_value_heads were 4 */
    write_crafted(dir, "model.safetensors", c, n);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors",
               "tensor 'model.layers.0.self_attn.k_proj.weight' has the wrong shape for");
    assert_says("rank 2, [16, 16], expected rank 2, [8, 16]");
    free(c);
}
END_TEST

START_TEST(test_integer_weights_are_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);

    c[3].dtype = "I8";
    write_crafted(dir, "model.safetensors", c, n);
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors", "has dtype I8; weights must be");
    assert_says(c[3].name);
    free(c);
}
END_TEST

START_TEST(test_extra_tensors_are_kept_and_tied_head_may_be_present)
{
    duet_model_desc d = tiny_llama();
    const char *dir;
    size_t n;
    struct crafted *c;
    duet_model *m;

    d.tie_word_embeddings = true;
    dir = config_only("m", &d);
    c = crafted_layout(&d, &n);
    snprintf(c[n].name, sizeof(c[n].name), "model.layers.0.self_attn.rotary_emb.inv_freq");
    c[n].dtype = "F32";
    c[n].rank = 1;
    c[n++].shape[0] = 2;
    write_crafted(dir, "model.safetensors", c, n);
    m = open_ok(dir);
    ck_assert_ptr_nonnull(duet_model_tensor(m, "model.layers.0.self_attn.rotary_emb.inv_freq"));
    ck_assert_ptr_null(duet_model_tensor(m, "lm_head.weight"));
    duet_model_destroy(m);
    free(c);
}
END_TEST

START_TEST(test_shard_listed_in_the_index_must_exist)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_F32, 1);
    char pattern[4400], *name;
    glob_t g;

    p.shard_bytes = 2048;
    generate(&p);
    snprintf(pattern, sizeof(pattern), "%s/model-00002-of-*.safetensors", p.dir);
    ck_assert_int_eq(glob(pattern, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    ck_assert_int_eq(unlink(g.gl_pathv[0]), 0);
    name = strrchr(g.gl_pathv[0], '/') + 1;
    open_fails(p.dir, DUET_STATUS_NOT_FOUND, "model.safetensors.index.json", "shard '");
    assert_says(name);
    assert_says("' (listed for tensor 'model.");
    assert_says("and others) is missing");
    globfree(&g);
}
END_TEST

START_TEST(test_tensor_listed_in_the_index_must_be_in_its_shard)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);

    write_crafted(dir, "a.safetensors", c, n);
    write_crafted(dir, "b.safetensors", c, 0);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"a.safetensors\", \"model.ghost\": "
               "\"b.safetensors\"}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "b.safetensors",
               "tensor 'model.ghost' listed in model.safetensors.index.json is not in this file");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"b.safetensors\", \"x\": "
               "\"a.safetensors\"}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "a.safetensors",
               "tensor 'model.norm.weight' is here but model.safetensors.index.json puts it in "
               "b.safetensors");
    free(c);
}
END_TEST

START_TEST(test_malformed_index_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);

    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": [");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors.index.json", "not valid JSON");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors.index.json",
               "no \"weight_map\" object");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors.index.json", "lists no tensor");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"w\": \"../model.safetensors\"}}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "model.safetensors.index.json",
               "tensor 'w': the weight_map value must be a file name in the model folder");
}
END_TEST

START_TEST(test_folder_without_weights_or_config_is_refused)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d);
    duet_model *m;

    open_fails(dir, DUET_STATUS_NOT_FOUND, "",
               "no model.safetensors or "
               "model.safetensors.index.json");
    write_text(dir, "pytorch_model.bin", "x");
    open_fails(dir, DUET_STATUS_UNSUPPORTED, "", "only PyTorch .bin weights found");
    open_fails(dir_of("absent"), DUET_STATUS_NOT_FOUND, "config.json", "No such file");
    ck_assert_int_eq(duet_model_create("", 0, &m, err, sizeof(err)), DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

/* A FIFO (or another non-regular file) as config.json or model.safetensors is refused by name at
 * once: opening a FIFO for reading used to wait for a writer forever. */
START_TEST(test_fifo_as_config_or_weights_is_refused_without_hanging)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d), *fifo_dir = dir_of("f");
    char path[4400];

    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    open_fails(dir, DUET_STATUS_IO, "model.safetensors", "not a regular file");
    ck_assert_int_eq(mkdir(fifo_dir, 0755), 0);
    snprintf(path, sizeof(path), "%s/config.json", fifo_dir);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    open_fails(fifo_dir, DUET_STATUS_IO, "config.json", "not a readable regular file");
}
END_TEST

/* A symlink loop (or a dangling link) as model.safetensors is named with the reason, not
 * reported as missing weights. */
START_TEST(test_symlink_loop_as_weights_names_the_loop)
{
    duet_model_desc d = tiny_llama();
    const char *dir = config_only("m", &d), *dangling = config_only("n", &d);
    char path[4400];

    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    ck_assert_int_eq(symlink("model.safetensors", path), 0);
    open_fails(dir, DUET_STATUS_IO, "model.safetensors", "Too many levels of symbolic links");
    snprintf(path, sizeof(path), "%s/model.safetensors", dangling);
    ck_assert_int_eq(symlink("elsewhere.safetensors", path), 0);
    open_fails(dangling, DUET_STATUS_NOT_FOUND, "model.safetensors", "No such file");
}
END_TEST

START_TEST(test_opt_checkpoint_without_model_prefix_loads)
{
    duet_model_desc d = tiny_opt(true, 16);
    const char *dir = config_only("m", &d);
    size_t n;
    struct crafted *c = crafted_layout(&d, &n);
    duet_model *m;

    for (size_t i = 0; i < n; i++)
        memmove(c[i].name, c[i].name + 6, strlen(c[i].name + 6) + 1); /* drop "model." */
    write_crafted(dir, "model.safetensors", c, n);
    m = open_ok(dir);
    ck_assert_str_eq(duet_model_tensor(m, "model.decoder.embed_tokens.weight")->name,
                     "decoder.embed_tokens.weight");
    ck_assert_str_eq(duet_model_layer_tensor(m, 1, "fc2.bias")->name, "decoder.layers.1.fc2.bias");
    duet_model_destroy(m);
    free(c);
}
END_TEST

START_TEST(test_check_values_names_the_first_nan)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_F32, 3);
    duet_model *m;
    const duet_tensor *t;
    char path[4400];
    float nan = NAN;
    int fd;

    generate(&p);
    m = open_ok(p.dir);
    ck_assert_int_eq(duet_model_check_values(m, DUET_MODEL_QUIET, err, sizeof(err)),
                     DUET_STATUS_OK);
    t = duet_model_tensor(m, "model.layers.1.mlp.down_proj.weight");
    snprintf(path, sizeof(path), "%s/model.safetensors", p.dir);
    fd = open(path, O_WRONLY);
    ck_assert_int_eq(pwrite(fd, &nan, 4, (off_t)(t->offset + 4 * 5)), 4);
    close(fd);
    ck_assert_int_eq(duet_model_check_values(m, DUET_MODEL_QUIET, err, sizeof(err)),
                     DUET_STATUS_BAD_FORMAT);
    assert_says("model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight': element 5 is "
                "NaN");
    duet_model_prefault(m, DUET_MODEL_QUIET);
    duet_model_destroy(m);
}
END_TEST

START_TEST(test_fill_info_honours_the_callers_struct_size)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_F16, 3);
    duet_model_info info = {.struct_size = sizeof(info)}, small;
    duet_model *m;

    p.desc.n_eos = 2;
    p.desc.eos_token_ids[1] = 5;
    generate(&p);
    m = open_ok(p.dir);
    ck_assert_int_eq(duet_model_fill_info(m, &info), DUET_STATUS_OK);
    ck_assert_uint_eq(info.vocab_size, 32);
    ck_assert_uint_eq(info.num_kv_heads, 2);
    ck_assert_uint_eq(info.head_dim, 4);
    ck_assert_int_eq(info.bos_token_id, 1);
    ck_assert_uint_eq(info.n_eos, 2);
    ck_assert_int_eq(info.eos_token_ids[1], 5);
    ck_assert_int_eq(info.eos_token_ids[2], -1);
    ck_assert_uint_eq(info.weight_bytes, duet_model_weight_bytes(m));
    memset(&small, 0x5a, sizeof(small));
    small.struct_size = offsetof(duet_model_info, num_layers);
    ck_assert_int_eq(duet_model_fill_info(m, &small), DUET_STATUS_OK);
    ck_assert_uint_eq(small.max_position, 64);
    ck_assert_uint_eq(small.num_layers, 0x5a5a5a5a);
    small.struct_size = 4;
    ck_assert_int_eq(duet_model_fill_info(m, &small), DUET_STATUS_INVALID_ARGUMENT);
    duet_model_destroy(m);
}
END_TEST

/* Every allocation of duet_model_create, ours and jansson's, failed in turn. */
START_TEST(test_create_survives_every_allocation_failure)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_BF16, 5);
    duet_status st;
    long n = 0;

    p.shard_bytes = 4096;
    generate(&p);
    json_set_alloc_funcs(json_alloc, free);
    do {
        duet_model *m = NULL;

        duet_test_injected = injected_json = false;
        duet_test_fail_countdown = n++;
        st = duet_model_create(p.dir, DUET_MODEL_QUIET, &m, err, sizeof(err));
        duet_test_fail_countdown = -1;
        ck_assert_msg(st != DUET_STATUS_OK || !duet_test_injected, "failure %ld was ignored", n);
        ck_assert_msg(st == DUET_STATUS_OK || duet_test_injected || injected_json,
                      "failure without injection: %s", err);
        ck_assert_msg(st == DUET_STATUS_OK || m == NULL, "failed create returned a model");
        duet_model_destroy(m);
    } while ((st != DUET_STATUS_OK || injected_json) && n < 100000);
    json_set_alloc_funcs(malloc, free);
    ck_assert_int_gt(n, 20);
}
END_TEST

/* Field by field (padding may differ). */
static void assert_desc_eq(const duet_model_desc *a, const duet_model_desc *b)
{
    ck_assert_int_eq(a->arch, b->arch);
    ck_assert_str_eq(a->architecture, b->architecture);
    ck_assert_uint_eq(a->hidden_size, b->hidden_size);
    ck_assert_uint_eq(a->intermediate_size, b->intermediate_size);
    ck_assert_uint_eq(a->num_layers, b->num_layers);
    ck_assert_uint_eq(a->num_heads, b->num_heads);
    ck_assert_uint_eq(a->num_kv_heads, b->num_kv_heads);
    ck_assert_uint_eq(a->head_dim, b->head_dim);
    ck_assert_uint_eq(a->vocab_size, b->vocab_size);
    ck_assert_uint_eq(a->max_position, b->max_position);
    ck_assert_double_eq(a->norm_eps, b->norm_eps);
    ck_assert_int_eq(a->activation, b->activation);
    ck_assert_int_eq(a->tie_word_embeddings, b->tie_word_embeddings);
    ck_assert_double_eq(a->rope_theta, b->rope_theta);
    ck_assert_int_eq(a->rope_scaling, b->rope_scaling);
    ck_assert_double_eq(a->rope_factor, b->rope_factor);
    ck_assert_double_eq(a->rope_low_freq_factor, b->rope_low_freq_factor);
    ck_assert_double_eq(a->rope_high_freq_factor, b->rope_high_freq_factor);
    ck_assert_uint_eq(a->rope_original_max_position, b->rope_original_max_position);
    ck_assert_int_eq(a->do_layer_norm_before, b->do_layer_norm_before);
    ck_assert_int_eq(a->final_layer_norm, b->final_layer_norm);
    ck_assert_uint_eq(a->word_embed_proj_dim, b->word_embed_proj_dim);
    ck_assert_uint_eq(a->position_offset, b->position_offset);
    ck_assert_int_eq(a->torch_dtype, b->torch_dtype);
    ck_assert_int_eq(a->bos_token_id, b->bos_token_id);
    ck_assert_int_eq(a->pad_token_id, b->pad_token_id);
    ck_assert_uint_eq(a->n_eos, b->n_eos);
    for (uint32_t i = 0; i < a->n_eos; i++)
        ck_assert_int_eq(a->eos_token_ids[i], b->eos_token_ids[i]);
    ck_assert_int_eq(a->attention_bias, b->attention_bias);
    ck_assert_int_eq(a->qk_norm, b->qk_norm);
    ck_assert_uint_eq(a->sliding_window, b->sliding_window);
}

/* ==== config.json ============================================================================ */

static json_t *llama_json(void)
{
    return json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:n, s:b, s:s, s:i, "
                     "s:i, s:s}",
                     "architectures", "LlamaForCausalLM", "hidden_size", 64, "intermediate_size",
                     128, "num_hidden_layers", 2, "num_attention_heads", 8, "num_key_value_heads",
                     2, "vocab_size", 1000, "max_position_embeddings", 4096, "rms_norm_eps", 1e-5,
                     "rope_theta", 500000.0, "rope_scaling", "tie_word_embeddings", 0, "hidden_act",
                     "silu", "bos_token_id", 1, "eos_token_id", 2, "torch_dtype", "bfloat16");
}

static json_t *opt_json(void)
{
    return json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:b, s:s, s:i, s:i, s:i, "
                     "s:s}",
                     "architectures", "OPTForCausalLM", "hidden_size", 64, "ffn_dim", 256,
                     "num_hidden_layers", 2, "num_attention_heads", 4, "vocab_size", 1000,
                     "max_position_embeddings", 512, "word_embed_proj_dim", 64,
                     "do_layer_norm_before", 1, "_remove_final_layer_norm", 0,
                     "activation_function", "relu", "bos_token_id", 2, "eos_token_id", 2,
                     "pad_token_id", 1, "torch_dtype", "float16");
}

/* Parses obj as config.json (and consumes it). */
static duet_status parse_config(json_t *obj, duet_model_desc *d)
{
    char *text = json_dumps(obj, 0);
    struct duet__msg msg = {err, sizeof(err)};
    duet_status st;

    json_decref(obj);
    st = duet__config_parse("m/config.json", text, strlen(text), d, &msg);
    free(text);
    return st;
}

static void config_refused(json_t *obj, duet_status want, const char *needle)
{
    duet_model_desc d;

    ck_assert_int_eq(parse_config(obj, &d), want);
    assert_says("m/config.json: ");
    assert_says(needle);
}

START_TEST(test_llama_config_gives_every_field)
{
    duet_model_desc d;

    ck_assert_int_eq(parse_config(llama_json(), &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.arch, DUET_ARCH_LLAMA);
    ck_assert_uint_eq(d.hidden_size, 64);
    ck_assert_uint_eq(d.intermediate_size, 128);
    ck_assert_uint_eq(d.num_layers, 2);
    ck_assert_uint_eq(d.num_heads, 8);
    ck_assert_uint_eq(d.num_kv_heads, 2);
    ck_assert_uint_eq(d.head_dim, 8);
    ck_assert_uint_eq(d.vocab_size, 1000);
    ck_assert_uint_eq(d.max_position, 4096);
    ck_assert_double_eq(d.norm_eps, 1e-5);
    ck_assert_double_eq(d.rope_theta, 500000.0);
    ck_assert_int_eq(d.rope_scaling, DUET_ROPE_SCALING_NONE);
    ck_assert_int_eq(d.activation, DUET_ACTIVATION_SILU);
    ck_assert(!d.tie_word_embeddings);
    ck_assert_int_eq(d.torch_dtype, DUET_DTYPE_BF16);
    ck_assert_int_eq(d.bos_token_id, 1);
    ck_assert_uint_eq(d.n_eos, 1);
    ck_assert_int_eq(d.eos_token_ids[0], 2);
    ck_assert_int_eq(d.pad_token_id, -1);
    ck_assert_uint_eq(d.position_offset, 0);
}
END_TEST

START_TEST(test_llama3_rope_scaling_is_read)
{
    json_t *o = llama_json();
    duet_model_desc d;

    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor", 8.0,
                                  "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                                  "original_max_position_embeddings", 8192));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.rope_scaling, DUET_ROPE_SCALING_LLAMA3);
    ck_assert_double_eq(d.rope_factor, 8.0);
    ck_assert_double_eq(d.rope_low_freq_factor, 1.0);
    ck_assert_double_eq(d.rope_high_freq_factor, 4.0);
    ck_assert_uint_eq(d.rope_original_max_position, 8192);
    o = llama_json();
    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f, s:f, s:f}", "rope_type", "llama3", "factor", 8.0,
                                  "low_freq_factor", 1.0, "high_freq_factor", 4.0));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "\"original_max_position_embeddings\" is missing");
    o = llama_json();
    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor", 8.0,
                                  "low_freq_factor", 4.0, "high_freq_factor", 1.0,
                                  "original_max_position_embeddings", 8192));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "low_freq_factor < high_freq_factor");
}
END_TEST

START_TEST(test_linear_rope_scaling_is_read_with_either_key)
{
    json_t *o = llama_json();
    duet_model_desc d;

    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f}", "type", "linear", "factor", 4.0));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.rope_scaling, DUET_ROPE_SCALING_LINEAR);
    ck_assert_double_eq(d.rope_factor, 4.0);
    o = llama_json();
    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f}", "rope_type", "linear", "factor", 0.5));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "factor 0.5 is out of range");
    o = llama_json();
    json_object_set_new(o, "rope_scaling", json_pack("{s:s}", "rope_type", "default"));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.rope_scaling, DUET_ROPE_SCALING_NONE);
}
END_TEST

START_TEST(test_other_rope_scaling_types_are_refused_by_name)
{
    json_t *o = llama_json();

    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "rope_scaling type 'yarn' is not supported");
    o = llama_json();
    json_object_set_new(o, "rope_scaling",
                        json_pack("{s:s, s:f}", "type", "dynamic", "factor", 2.0));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "rope_scaling type 'dynamic'");
}
END_TEST

START_TEST(test_tied_embeddings_drop_lm_head)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p;
    duet_model *m;

    d.tie_word_embeddings = true;
    p = gen_params("m", &d, DUET_DTYPE_BF16, 9);
    generate(&p);
    m = open_ok(p.dir);
    ck_assert(duet_model_describe(m)->tie_word_embeddings);
    ck_assert_ptr_null(duet_model_tensor(m, "lm_head.weight"));
    assert_generated_values(m, &p);
    duet_model_destroy(m);
}
END_TEST

START_TEST(test_opt_config_gives_every_field)
{
    duet_model_desc d;
    json_t *o;

    ck_assert_int_eq(parse_config(opt_json(), &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.arch, DUET_ARCH_OPT);
    ck_assert_uint_eq(d.intermediate_size, 256);
    ck_assert_uint_eq(d.num_kv_heads, 4);
    ck_assert_uint_eq(d.head_dim, 16);
    ck_assert_int_eq(d.activation, DUET_ACTIVATION_RELU);
    ck_assert(d.do_layer_norm_before && d.final_layer_norm && d.tie_word_embeddings);
    ck_assert_uint_eq(d.position_offset, 2);
    ck_assert_uint_eq(d.word_embed_proj_dim, 64);
    ck_assert_double_eq(d.norm_eps, 1e-5);
    ck_assert_int_eq(d.pad_token_id, 1);
    ck_assert_int_eq(d.torch_dtype, DUET_DTYPE_F16);
    o = opt_json();
    json_object_set_new(o, "_remove_final_layer_norm", json_true());
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert(d.do_layer_norm_before && !d.final_layer_norm);
    o = opt_json();
    json_object_set_new(o, "do_layer_norm_before", json_false());
    json_object_del(o, "word_embed_proj_dim");
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert(!d.do_layer_norm_before && !d.final_layer_norm);
    ck_assert_uint_eq(d.word_embed_proj_dim, 64);
}
END_TEST

/* Generated OPT variants load, with exactly the tensors each needs. */
START_TEST(test_opt_variants_need_their_own_tensors)
{
    const struct {
        bool pre_ln;
        uint32_t wep;
        const char *present, *absent;
    } cases[] = {
        {true, 16, "model.decoder.final_layer_norm.bias", "model.decoder.project_in.weight"},
        {false, 16, "model.decoder.layers.1.final_layer_norm.bias",
         "model.decoder.final_layer_norm.weight"},
        {false, 8, "model.decoder.project_out.weight", "model.decoder.final_layer_norm.weight"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        duet_model_desc d = tiny_opt(cases[i].pre_ln, cases[i].wep);
        char sub[16];
        struct duet__gen_params p;
        duet_model *m;

        snprintf(sub, sizeof(sub), "opt%zu", i);
        p = gen_params(sub, &d, DUET_DTYPE_F16, 2);
        generate(&p);
        m = open_ok(p.dir);
        ck_assert_ptr_nonnull(duet_model_tensor(m, cases[i].present));
        ck_assert_ptr_null(duet_model_tensor(m, cases[i].absent));
        ck_assert_uint_eq(duet_model_tensor(m, "model.decoder.embed_positions.weight")->shape[0],
                          66);
        ck_assert_uint_eq(duet_model_tensor(m, "model.decoder.embed_tokens.weight")->shape[1],
                          cases[i].wep);
        ck_assert(duet_model_describe(m)->final_layer_norm == cases[i].pre_ln);
        assert_generated_values(m, &p);
        duet_model_destroy(m);
    }
}
END_TEST

START_TEST(test_eos_list_comes_from_generation_config)
{
    duet_model_desc d = tiny_llama();
    const char *dir = dir_of("m");
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_BF16, 1);
    duet_model *m;

    generate(&p);
    write_text(dir, "generation_config.json", "{\"bos_token_id\": 3, \"eos_token_id\": [4, 5, 6]}");
    m = open_ok(dir);
    ck_assert_int_eq(duet_model_describe(m)->bos_token_id, 3);
    ck_assert_uint_eq(duet_model_describe(m)->n_eos, 3);
    ck_assert_int_eq(duet_model_describe(m)->eos_token_ids[2], 6);
    duet_model_destroy(m);
    write_text(dir, "generation_config.json", "{\"do_sample\": true}");
    m = open_ok(dir); /* falls back to config.json's ids */
    ck_assert_int_eq(duet_model_describe(m)->bos_token_id, 1);
    ck_assert_uint_eq(duet_model_describe(m)->n_eos, 1);
    ck_assert_int_eq(duet_model_describe(m)->eos_token_ids[0], 2);
    duet_model_destroy(m);
    write_text(dir, "generation_config.json", "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}");
    open_fails(dir, DUET_STATUS_UNSUPPORTED, "generation_config.json",
               "eos_token_id lists 9 ids; duet keeps at most 8");
    write_text(dir, "generation_config.json", "{\"eos_token_id\": 32}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "generation_config.json",
               "eos_token_id 32 is outside the vocabulary (vocab_size 32)");
    write_text(dir, "generation_config.json", "{\"eos_token_id\": \"2\"}");
    open_fails(dir, DUET_STATUS_BAD_FORMAT, "generation_config.json",
               "\"eos_token_id\" must be a token id");
}
END_TEST

START_TEST(test_unsupported_architecture_is_refused_by_name)
{
    json_t *o = llama_json();

    json_object_set_new(o, "architectures", json_pack("[s]", "GemmaForCausalLM"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "architecture 'GemmaForCausalLM' is not supported");
    o = llama_json();
    json_object_del(o, "architectures");
    json_object_set_new(o, "model_type", json_string("gpt2"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "architecture 'gpt2' is not supported");
    o = llama_json();
    json_object_del(o, "architectures");
    json_object_set_new(o, "model_type", json_string("llama"));
    ck_assert_int_eq(parse_config(o, &(duet_model_desc){0}), DUET_STATUS_OK);
    o = llama_json();
    json_object_del(o, "architectures");
    config_refused(o, DUET_STATUS_BAD_FORMAT, "neither \"architectures\" nor \"model_type\"");
}
END_TEST

START_TEST(test_unsupported_fields_are_refused_by_name)
{
    json_t *o = llama_json();
    duet_model_desc d;

    json_object_set_new(o, "sliding_window", json_integer(4096));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "sliding_window 4096 is not supported");
    o = llama_json();
    json_object_set_new(o, "architectures", json_pack("[s]", "MistralForCausalLM"));
    json_object_set_new(o, "sliding_window", json_null());
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_str_eq(d.architecture, "MistralForCausalLM");
    o = llama_json();
    json_object_set_new(o, "attention_bias", json_true());
    config_refused(o, DUET_STATUS_UNSUPPORTED, "attention_bias true is not supported");
    o = llama_json();
    json_object_set_new(o, "mlp_bias", json_true());
    config_refused(o, DUET_STATUS_UNSUPPORTED, "mlp_bias true is not supported");
    o = llama_json();
    json_object_set_new(o, "hidden_act", json_string("gelu"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "hidden_act 'gelu' is not supported");
    o = llama_json();
    json_object_set_new(o, "quantization_config", json_pack("{s:s}", "quant_method", "gptq"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "quantization_config {\"quant_method\":\"gptq\"}");
    o = opt_json();
    json_object_set_new(o, "activation_function", json_string("gelu"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "activation_function 'gelu' is not supported");
    o = opt_json();
    json_object_set_new(o, "enable_bias", json_false());
    config_refused(o, DUET_STATUS_UNSUPPORTED, "enable_bias false is not supported");
    o = llama_json();
    json_object_set_new(o, "torch_dtype", json_string("float8_e4m3"));
    config_refused(o, DUET_STATUS_UNSUPPORTED, "torch_dtype 'float8_e4m3' is not supported");
}
END_TEST

START_TEST(test_bad_values_name_their_key)
{
    json_t *o = llama_json();

    json_object_set_new(o, "hidden_size", json_string("64"));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "\"hidden_size\" must be an integer, not a string");
    o = llama_json();
    json_object_set_new(o, "num_hidden_layers", json_integer(0));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "num_hidden_layers 0 is out of range (1 .. 4096)");
    o = llama_json();
    json_object_del(o, "vocab_size");
    config_refused(o, DUET_STATUS_BAD_FORMAT, "\"vocab_size\" is missing");
    o = llama_json();
    json_object_set_new(o, "num_key_value_heads", json_integer(3));
    config_refused(o, DUET_STATUS_BAD_FORMAT,
                   "num_attention_heads 8 must be a non-zero multiple of num_key_value_heads 3");
    o = llama_json();
    json_object_set_new(o, "num_attention_heads", json_integer(7));
    config_refused(o, DUET_STATUS_BAD_FORMAT,
                   "hidden_size 64 is not a multiple of num_attention_heads 7");
    o = llama_json();
    json_object_set_new(o, "tie_word_embeddings", json_integer(1));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "\"tie_word_embeddings\" must be true or false");
    config_refused(json_pack("[i]", 1), DUET_STATUS_BAD_FORMAT, "JSON but not an object");
}
END_TEST

START_TEST(test_head_dim_may_differ_from_hidden_over_heads)
{
    json_t *o = llama_json();
    duet_model_desc d;

    json_object_set_new(o, "head_dim", json_integer(32));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.head_dim, 32);
    o = llama_json();
    json_object_set_new(o, "head_dim", json_integer(7));
    config_refused(o, DUET_STATUS_BAD_FORMAT, "head_dim 7 must be even");
}
END_TEST

/* Qwen2.5-0.5B's config.json as published (the keys duet reads). */
static json_t *qwen2_json(void)
{
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:b, "
                     "s:i, s:i, s:s, s:i, s:i}",
                     "architectures", "Qwen2ForCausalLM", "model_type", "qwen2", "hidden_size", 896,
                     "intermediate_size", 4864, "num_hidden_layers", 24, "num_attention_heads", 14,
                     "num_key_value_heads", 2, "vocab_size", 151936, "max_position_embeddings",
                     32768, "max_window_layers", 24, "rms_norm_eps", 1e-6, "rope_theta", 1000000.0,
                     "tie_word_embeddings", 1, "use_sliding_window", 0, "sliding_window", 32768,
                     "bos_token_id", 151643, "torch_dtype", "bfloat16", "eos_token_id", 151643,
                     "attention_dropout", 0);
}

START_TEST(test_qwen_configs_give_biases_norms_and_head_dim)
{
    json_t *o = qwen2_json();
    duet_model_desc d;

    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_int_eq(d.arch, DUET_ARCH_LLAMA);
    ck_assert_str_eq(d.architecture, "Qwen2ForCausalLM");
    ck_assert(d.attention_bias && !d.qk_norm && d.tie_word_embeddings);
    ck_assert_uint_eq(d.head_dim, 64);
    ck_assert_uint_eq(d.sliding_window, 0); /* use_sliding_window false: ignored */
    o = qwen2_json();
    json_object_set_new(o, "architectures", json_pack("[s]", "Qwen3ForCausalLM"));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert(!d.attention_bias && d.qk_norm);
    ck_assert_uint_eq(d.head_dim, 128); /* Qwen3Config's default, not 896 / 14 */
    o = qwen2_json();
    json_object_set_new(o, "architectures", json_pack("[s]", "Qwen3ForCausalLM"));
    json_object_set_new(o, "head_dim", json_integer(32));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.head_dim, 32);
    o = qwen2_json();
    json_object_set_new(o, "architectures", json_pack("[s]", "Qwen3ForCausalLM"));
    json_object_set_new(o, "attention_bias", json_true()); /* Qwen3 would add an o_proj bias */
    config_refused(o, DUET_STATUS_UNSUPPORTED, "attention_bias true is not supported");
}
END_TEST

START_TEST(test_sliding_windows_follow_transformers_and_refuse_a_mix)
{
    json_t *o = llama_json();
    duet_model_desc d;

    json_object_set_new(o, "architectures", json_pack("[s]", "MistralForCausalLM"));
    json_object_set_new(o, "sliding_window", json_integer(4096));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.sliding_window, 4096);
    o = qwen2_json(); /* 24 layers, max_window_layers 24: no layer has the window */
    json_object_set_new(o, "use_sliding_window", json_true());
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.sliding_window, 0);
    o = qwen2_json();
    json_object_set_new(o, "use_sliding_window", json_true());
    json_object_set_new(o, "max_window_layers", json_integer(0));
    json_object_set_new(o, "sliding_window", json_integer(512));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.sliding_window, 512);
    o = qwen2_json();
    json_object_set_new(o, "use_sliding_window", json_true());
    json_object_set_new(o, "max_window_layers", json_integer(21));
    config_refused(o, DUET_STATUS_UNSUPPORTED,
                   "use_sliding_window with max_window_layers 21 of 24 layers is not supported");
    o = qwen2_json();
    json_object_set_new(o, "use_sliding_window", json_true());
    json_object_set_new(o, "max_window_layers", json_integer(0));
    json_object_set_new(o, "sliding_window", json_null());
    config_refused(o, DUET_STATUS_BAD_FORMAT, "sliding_window is not a size");
    o = qwen2_json(); /* layer_types replace max_window_layers */
    json_object_set_new(o, "use_sliding_window", json_true());
    json_object_set_new(o, "layer_types", json_array());
    for (int i = 0; i < 24; i++)
        json_array_append_new(json_object_get(o, "layer_types"), json_string("sliding_attention"));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.sliding_window, 32768);
    o = qwen2_json();
    json_object_set_new(o, "use_sliding_window", json_true());
    json_object_set_new(o, "layer_types", json_array());
    for (int i = 0; i < 24; i++)
        json_array_append_new(json_object_get(o, "layer_types"),
                              json_string(i < 2 ? "full_attention" : "sliding_attention"));
    config_refused(o, DUET_STATUS_UNSUPPORTED,
                   "layer_types with a sliding window on 22 of 24 layers is not supported");
    o = qwen2_json(); /* without use_sliding_window the types do not matter */
    json_object_set_new(o, "layer_types", json_pack("[s]", "sliding_attention"));
    ck_assert_int_eq(parse_config(o, &d), DUET_STATUS_OK);
    ck_assert_uint_eq(d.sliding_window, 0);
    o = llama_json();
    json_object_set_new(o, "use_sliding_window", json_true());
    config_refused(o, DUET_STATUS_UNSUPPORTED, "use_sliding_window true is not supported");
}
END_TEST

START_TEST(test_written_configs_read_back_the_same)
{
    for (size_t i = 0; i < duet__preset_count(); i++) {
        const struct duet__preset *pr = duet__preset_at(i);
        const char *dir = config_only(pr->name, &pr->desc);
        struct duet__msg msg = {err, sizeof(err)};
        duet_model_desc back;
        char path[4400], *text;
        size_t len;

        snprintf(path, sizeof(path), "%s/config.json", dir);
        ck_assert_int_eq(duet__read_file(path, 1 << 20, &text, &len, &msg), DUET_STATUS_OK);
        ck_assert_msg(duet__config_parse(path, text, len, &back, &msg) == DUET_STATUS_OK, "%s",
                      err);
        free(text);
        assert_desc_eq(&back, &pr->desc);
    }
}
END_TEST

/* ==== the generator ========================================================================== */

START_TEST(test_presets_have_the_shapes_of_their_public_models)
{
    static const struct {
        const char *name, *tensor;
        uint64_t rows, cols;
    } spot[] = {
        {"llama-68m", "model.layers.1.mlp.down_proj.weight", 768, 3072},
        {"llama-160m", "lm_head.weight", 32000, 768},
        {"tinyllama-1.1b", "model.layers.21.self_attn.k_proj.weight", 256, 2048},
        {"llama-2-7b", "model.layers.31.mlp.gate_proj.weight", 11008, 4096},
        {"llama-3.2-1b", "model.embed_tokens.weight", 128256, 2048},
        {"mistral-7b-v0.1", "model.layers.31.mlp.up_proj.weight", 14336, 4096},
        {"qwen2.5-0.5b", "model.layers.23.self_attn.k_proj.bias", 128, 0},
        {"qwen3-0.6b", "model.layers.27.self_attn.q_proj.weight", 2048, 1024},
        {"opt-125m", "model.decoder.embed_positions.weight", 2050, 768},
        {"opt-350m", "model.decoder.project_in.weight", 1024, 512},
    };

    ck_assert_uint_eq(duet__preset_count(), sizeof(spot) / sizeof(spot[0]));
    for (size_t i = 0; i < duet__preset_count(); i++) {
        const struct duet__preset *pr = duet__preset_find(spot[i].name);
        struct duet__gen_params p = {.desc = pr->desc, .tail_from = pr->desc.num_layers};
        struct duet__slot *slots;
        struct duet__msg msg = {err, sizeof(err)};
        uint64_t params = 0;
        bool found = false;
        size_t n;

        ck_assert_int_eq(duet__desc_check(&pr->desc, pr->name, &msg), DUET_STATUS_OK);
        ck_assert_msg(duet__gen_check(&p, &msg) == DUET_STATUS_OK, "%s: %s", pr->name, err);
        ck_assert_int_eq(duet__layout_build(&pr->desc, &slots, &n), DUET_STATUS_OK);
        for (size_t k = 0; k < n; k++) {
            params += duet__slot_numel(&slots[k]);
            if (strcmp(slots[k].name, spot[i].tensor) == 0)
                found = slots[k].shape[0] == spot[i].rows && slots[k].shape[1] == spot[i].cols;
        }
        ck_assert_msg(params == pr->params, "%s: %llu parameters, %s has %llu", pr->name,
                      (unsigned long long)params, pr->source, (unsigned long long)pr->params);
        ck_assert_msg(found, "%s: %s has the wrong shape", pr->name, spot[i].tensor);
        free(slots);
    }
}
END_TEST

/* The small presets written in full (bf16) and read back, values checked. */
START_TEST(test_small_presets_round_trip)
{
    const char *names[] = {"llama-68m", "opt-125m", "llama-160m"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const struct duet__preset *pr = duet__preset_find(names[i]);
        struct duet__gen_params p = gen_params(names[i], &pr->desc, DUET_DTYPE_BF16, 11);
        duet_model_desc want = pr->desc;
        duet_model *m;

        generate(&p);
        m = open_ok(p.dir);
        want.torch_dtype = DUET_DTYPE_BF16;
        assert_desc_eq(duet_model_describe(m), &want);
        ck_assert_uint_eq(duet_model_weight_bytes(m), 2 * pr->params);
        assert_generated_values(m, &p);
        duet_model_destroy(m);
        duet_test_rmtree(p.dir); /* hundreds of MB: not all at once */
    }
}
END_TEST

/* Reads every element of both models' tensor `name` as float; true when all are equal. */
static bool same_values(const duet_model *a, const duet_model *b, const char *name)
{
    const duet_tensor *ta = duet_model_tensor(a, name), *tb = duet_model_tensor(b, name);
    float *va, *vb;
    bool same;

    ck_assert_ptr_nonnull(ta);
    ck_assert_ptr_nonnull(tb);
    ck_assert_uint_eq(ta->numel, tb->numel);
    va = malloc(ta->numel * sizeof(float) + 4);
    vb = malloc(tb->numel * sizeof(float) + 4);
    duet_tensor_read_f32(ta, 0, ta->numel, va);
    duet_tensor_read_f32(tb, 0, tb->numel, vb);
    same = memcmp(va, vb, ta->numel * sizeof(float)) == 0;
    free(va);
    free(vb);
    return same;
}

static void assert_same_model(const duet_model *a, const duet_model *b)
{
    ck_assert_uint_eq(duet_model_num_tensors(a), duet_model_num_tensors(b));
    for (size_t i = 0; i < duet_model_num_tensors(a); i++) {
        const char *name = duet_model_tensor_at(a, i)->name;

        ck_assert_msg(same_values(a, b, name), "%s differs", name);
    }
}

START_TEST(test_sharded_and_single_file_folders_load_identically)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params one = gen_params("one", &d, DUET_DTYPE_BF16, 4);
    struct duet__gen_params many = gen_params("many", &d, DUET_DTYPE_BF16, 4);
    duet_model *a, *b;
    char path[4400];

    many.shard_bytes = 1500;
    generate(&one);
    generate(&many);
    snprintf(path, sizeof(path), "%s/model.safetensors", many.dir);
    ck_assert_int_ne(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", many.dir);
    ck_assert_int_eq(access(path, F_OK), 0);
    a = open_ok(one.dir);
    b = open_ok(many.dir);
    assert_desc_eq(duet_model_describe(a), duet_model_describe(b));
    ck_assert_uint_eq(duet_model_weight_bytes(a), duet_model_weight_bytes(b));
    ck_assert_str_ne(duet_model_tensor(b, "model.norm.weight")->file,
                     duet_model_tensor(b, "model.embed_tokens.weight")->file);
    assert_same_model(a, b);
    duet_model_destroy(a);
    duet_model_destroy(b);
}
END_TEST

/* The whole content of dir/name, malloc'd. */
static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[4400], *buf;
    struct duet__msg msg = {err, sizeof(err)};

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ck_assert_int_eq(duet__read_file(path, 1u << 30, &buf, len, &msg), DUET_STATUS_OK);
    return buf;
}

START_TEST(test_same_seed_gives_identical_bytes)
{
    duet_model_desc d = tiny_opt(true, 8);
    struct duet__gen_params a = gen_params("a", &d, DUET_DTYPE_F16, 42);
    struct duet__gen_params b = gen_params("b", &d, DUET_DTYPE_F16, 42);
    struct duet__gen_params c = gen_params("c", &d, DUET_DTYPE_F16, 43);
    const char *files[] = {"model.safetensors", "config.json", "generation_config.json"};

    generate(&a);
    generate(&b);
    generate(&c);
    for (size_t i = 0; i < 3; i++) {
        size_t la, lb, lc;
        char *x = slurp(a.dir, files[i], &la), *y = slurp(b.dir, files[i], &lb);
        char *z = slurp(c.dir, files[i], &lc);

        ck_assert_uint_eq(la, lb);
        ck_assert_msg(memcmp(x, y, la) == 0, "%s differs between runs", files[i]);
        ck_assert_msg(i > 0 || memcmp(x, z, la) != 0, "another seed gives the same weights");
        free(x);
        free(y);
        free(z);
    }
}
END_TEST

START_TEST(test_f32_f16_bf16_files_hold_the_same_values)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p[3] = {gen_params("f32", &d, DUET_DTYPE_F32, 8),
                                    gen_params("f16", &d, DUET_DTYPE_F16, 8),
                                    gen_params("bf16", &d, DUET_DTYPE_BF16, 8)};
    duet_model *m[3];

    for (int i = 0; i < 3; i++) {
        p[i].tail_from = 1;
        p[i].tail_log2 = -8;
        generate(&p[i]);
        m[i] = open_ok(p[i].dir);
        ck_assert_int_eq(duet_model_tensor_at(m[i], 0)->dtype, p[i].desc.torch_dtype);
    }
    assert_same_model(m[0], m[1]);
    assert_same_model(m[0], m[2]);
    for (int i = 0; i < 3; i++)
        duet_model_destroy(m[i]);
}
END_TEST

static double rms_of(const duet_model *m, const char *name)
{
    const duet_tensor *t = duet_model_tensor(m, name);
    float *v = malloc(t->numel * sizeof(float));
    double sum = 0;

    duet_tensor_read_f32(t, 0, t->numel, v);
    for (uint64_t i = 0; i < t->numel; i++)
        sum += (double)v[i] * v[i];
    free(v);
    return sqrt(sum / (double)t->numel);
}

START_TEST(test_tail_scale_shrinks_deep_output_projections)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p;
    duet_model *m;
    double ratio;

    d.num_layers = 4;
    p = gen_params("m", &d, DUET_DTYPE_BF16, 6);
    p.tail_from = 2;
    p.tail_log2 = -4;
    generate(&p);
    m = open_ok(p.dir);
    ratio = rms_of(m, "model.layers.2.self_attn.o_proj.weight") /
            rms_of(m, "model.layers.1.self_attn.o_proj.weight");
    ck_assert_double_eq_tol(ratio, 1.0 / 16, 0.2 / 16);
    ratio = rms_of(m, "model.layers.3.mlp.down_proj.weight") /
            rms_of(m, "model.layers.0.mlp.down_proj.weight");
    ck_assert_double_eq_tol(ratio, 1.0 / 16, 0.2 / 16);
    ratio = rms_of(m, "model.layers.3.mlp.up_proj.weight") /
            rms_of(m, "model.layers.0.mlp.up_proj.weight");
    ck_assert_double_eq_tol(ratio, 1.0, 0.2);
    assert_generated_values(m, &p);
    duet_model_destroy(m);
    p.tail_log2 = -17;
    ck_assert_int_eq(duet__gen_check(&p, &(struct duet__msg){err, sizeof(err)}),
                     DUET_STATUS_INVALID_ARGUMENT);
    assert_says("tail scale 2^-17 is outside 2^-16 .. 1");
}
END_TEST

START_TEST(test_generator_refuses_to_overwrite_a_model)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("m", &d, DUET_DTYPE_BF16, 1);
    struct duet__msg msg = {err, sizeof(err)};
    duet_model *m;

    p.shard_bytes = 1000;
    generate(&p);
    p.shard_bytes = 0;
    ck_assert_int_eq(duet__gen_model(&p, &msg), DUET_STATUS_INVALID_ARGUMENT);
    assert_says("already holds a model; use --force to replace it");
    p.force = true;
    generate(&p); /* the shards and the index go, the single file stays alone */
    m = open_ok(p.dir);
    ck_assert_uint_eq(duet_model_num_tensors(m), 21);
    ck_assert_str_eq(duet_model_tensor_at(m, 0)->file + strlen(p.dir), "/model.safetensors");
    duet_model_destroy(m);
}
END_TEST

static void derive(const char *target, const char *sub, uint32_t layers, double noise, bool spread,
                   duet_dtype dtype)
{
    struct duet__draft_params p = {.target_dir = target,
                                   .dir = dir_of(sub),
                                   .num_layers = layers,
                                   .noise = noise,
                                   .spread = spread,
                                   .has_dtype = true,
                                   .dtype = dtype,
                                   .seed = 5,
                                   .flags = DUET_MODEL_QUIET};
    struct duet__msg msg = {err, sizeof(err)};

    ck_assert_msg(duet__gen_draft(&p, &msg) == DUET_STATUS_OK, "draft: %s", err);
}

START_TEST(test_draft_shares_embeddings_and_takes_the_first_layers)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p;
    duet_model *t, *dr;
    double rel;

    d.num_layers = 4;
    p = gen_params("t", &d, DUET_DTYPE_BF16, 12);
    generate(&p);
    derive(p.dir, "d0", 2, 0.0, false, DUET_DTYPE_BF16);
    derive(p.dir, "d1", 2, 0.1, false, DUET_DTYPE_BF16);
    t = open_ok(p.dir);
    dr = open_ok(dir_of("d0"));
    ck_assert_uint_eq(duet_model_describe(dr)->num_layers, 2);
    ck_assert(same_values(t, dr, "model.layers.1.mlp.up_proj.weight"));
    ck_assert(same_values(t, dr, "lm_head.weight"));
    duet_model_destroy(dr);
    dr = open_ok(dir_of("d1"));
    ck_assert(same_values(t, dr, "model.embed_tokens.weight"));
    ck_assert(!same_values(t, dr, "model.layers.1.mlp.up_proj.weight"));
    rel = rms_of(dr, "model.layers.0.self_attn.q_proj.weight") /
          rms_of(t, "model.layers.0.self_attn.q_proj.weight");
    ck_assert_double_eq_tol(rel, sqrt(1 + 0.1 * 0.1), 0.02);
    duet_model_destroy(dr);
    duet_model_destroy(t);
}
END_TEST

START_TEST(test_draft_spread_selects_evenly_spaced_layers)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p;
    uint32_t sel[4];
    duet_model *t, *dr;
    const duet_tensor *a, *b;
    float x, y;

    duet__draft_select(10, 4, true, sel);
    ck_assert(sel[0] == 0 && sel[1] == 3 && sel[2] == 6 && sel[3] == 9);
    duet__draft_select(10, 1, true, sel);
    ck_assert_uint_eq(sel[0], 0);
    duet__draft_select(10, 3, false, sel);
    ck_assert(sel[0] == 0 && sel[1] == 1 && sel[2] == 2);
    d.num_layers = 5;
    p = gen_params("t", &d, DUET_DTYPE_F32, 13);
    generate(&p);
    derive(p.dir, "d", 3, 0.0, true, DUET_DTYPE_F16);
    t = open_ok(p.dir);
    dr = open_ok(dir_of("d"));
    a = duet_model_layer_tensor(t, 4, "mlp.gate_proj.weight");
    b = duet_model_layer_tensor(dr, 2, "mlp.gate_proj.weight");
    ck_assert_int_eq(b->dtype, DUET_DTYPE_F16);
    for (uint64_t i = 0; i < a->numel; i++) {
        duet_tensor_read_f32(a, i, 1, &x);
        duet_tensor_read_f32(b, i, 1, &y);
        ck_assert_float_eq(x, y);
    }
    duet_model_destroy(dr);
    duet_model_destroy(t);
}
END_TEST

START_TEST(test_draft_dtypes_hold_the_same_values)
{
    duet_model_desc d = tiny_opt(false, 8);
    struct duet__gen_params p = gen_params("t", &d, DUET_DTYPE_F32, 14);
    duet_model *a, *b, *c;

    generate(&p);
    derive(p.dir, "f32", 1, 0.3, false, DUET_DTYPE_F32);
    derive(p.dir, "f16", 1, 0.3, false, DUET_DTYPE_F16);
    derive(p.dir, "bf16", 1, 0.3, false, DUET_DTYPE_BF16);
    a = open_ok(dir_of("f32"));
    b = open_ok(dir_of("f16"));
    c = open_ok(dir_of("bf16"));
    assert_same_model(a, b);
    assert_same_model(a, c);
    duet_model_destroy(a);
    duet_model_destroy(b);
    duet_model_destroy(c);
}
END_TEST

START_TEST(test_draft_parameters_are_checked)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p = gen_params("t", &d, DUET_DTYPE_BF16, 1);
    struct duet__draft_params dp = {
        .target_dir = p.dir, .dir = dir_of("d"), .num_layers = 3, .flags = DUET_MODEL_QUIET};
    struct duet__msg msg = {err, sizeof(err)};

    generate(&p);
    ck_assert_int_eq(duet__gen_draft(&dp, &msg), DUET_STATUS_INVALID_ARGUMENT);
    assert_says("a draft keeps 1 .. 2 layers of this target, not 3");
    dp.num_layers = 1;
    dp.noise = 1.5;
    ck_assert_int_eq(duet__gen_draft(&dp, &msg), DUET_STATUS_INVALID_ARGUMENT);
    assert_says("noise 1.5 is outside 0 .. 1");
    dp.target_dir = dir_of("nothing");
    ck_assert_int_eq(duet__gen_draft(&dp, &msg), DUET_STATUS_NOT_FOUND);
}
END_TEST

/* ==== small pieces =========================================================================== */

/* The nearest of the two neighbours of f among representable values, by a double-precision
 * comparison: |f - r| <= |f - other| (ties: r even). */
static void assert_nearest(float f, float r, float below, float above, uint16_t bits)
{
    double e = fabs((double)f - r), eb = fabs((double)f - below), ea = fabs((double)f - above);

    ck_assert_msg(e <= eb && e <= ea, "%a rounded to %a, but %a or %a is nearer", (double)f,
                  (double)r, (double)below, (double)above);
    if (e == eb || e == ea)
        ck_assert_msg(!(bits & 1) || (r == below && r == above), "%a: tie not to even", (double)f);
}

/* The neighbour of a 16-bit sign-magnitude value towards zero (past zero: the other sign). */
static uint16_t smaller(uint16_t h)
{
    return (h & 0x7fff) ? h - 1 : (uint16_t)((h ^ 0x8000) | 1);
}

START_TEST(test_conversions_round_to_nearest_even)
{
    uint64_t s = 0x1234567;

    for (uint32_t h = 0; h < 65536; h++) {
        float b = duet__bf16_to_f32((uint16_t)h), f = duet_f16_to_f32((uint16_t)h);

        if (!isnan(b))
            ck_assert_uint_eq(duet__f32_to_bf16(b), h);
        if (!isnan(f))
            ck_assert_uint_eq(duet_f32_to_f16(f), h);
    }
    for (int i = 0; i < 200000; i++) {
        uint32_t bits;
        float f, r;
        uint16_t h;

        s = s * 6364136223846793005ull + 1442695040888963407ull;
        bits = (uint32_t)(s >> 32);
        if (i % 2)
            bits = (bits & 0x87ffffffu) | 0x30000000u; /* around F16's range */
        memcpy(&f, &bits, 4);
        if (!isfinite(f) || fabsf(f) >= 65504.0f)
            continue;
        h = duet__f32_to_bf16(f);
        r = duet__bf16_to_f32(h);
        assert_nearest(f, r, duet__bf16_to_f32(smaller(h)), duet__bf16_to_f32(h + 1), h);
        h = duet_f32_to_f16(f);
        r = duet_f16_to_f32(h);
        assert_nearest(f, r, duet_f16_to_f32(smaller(h)), duet_f16_to_f32(h + 1), h);
    }
    ck_assert_uint_eq(duet_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(duet_f32_to_f16(-1e-10f), 0x8000);
    ck_assert(isnan(duet_f16_to_f32(duet_f32_to_f16(NAN))));
    ck_assert(isnan(duet__bf16_to_f32(duet__f32_to_bf16(NAN))));
}
END_TEST

START_TEST(test_read_f32_converts_every_float_dtype)
{
    const uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00}; /* 1, -2, 2^-24 */
    const uint8_t bf16[] = {0x80, 0x3f, 0x40, 0xc0};            /* 1, -3 */
    double f64[2] = {0.5, -0.25};
    float out[3];
    duet_tensor t = {.dtype = DUET_DTYPE_F16, .data = f16, .numel = 3};

    ck_assert_int_eq(duet_tensor_read_f32(&t, 0, 3, out), DUET_STATUS_OK);
    ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f);
    t = (duet_tensor){.dtype = DUET_DTYPE_BF16, .data = bf16, .numel = 2};
    ck_assert_int_eq(duet_tensor_read_f32(&t, 1, 1, out), DUET_STATUS_OK);
    ck_assert(out[0] == -3.0f);
    t = (duet_tensor){.dtype = DUET_DTYPE_F64, .data = f64, .numel = 2};
    ck_assert_int_eq(duet_tensor_read_f32(&t, 0, 2, out), DUET_STATUS_OK);
    ck_assert(out[0] == 0.5f && out[1] == -0.25f);
    ck_assert_int_eq(duet_tensor_read_f32(&t, 1, 2, out), DUET_STATUS_INVALID_ARGUMENT);
    t.dtype = DUET_DTYPE_I32;
    ck_assert_int_eq(duet_tensor_read_f32(&t, 0, 1, out), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(duet_dtype_name(DUET_DTYPE_BF16), "BF16");
    ck_assert_str_eq(duet_dtype_name((duet_dtype)99), "?");
    ck_assert_uint_eq(duet_dtype_size(DUET_DTYPE_I64), 8);
    ck_assert_uint_eq(duet_dtype_size((duet_dtype)-1), 0);
    ck_assert_str_eq(duet_arch_name(DUET_ARCH_OPT), "opt");
    ck_assert_str_eq(duet_test_cxx_model_dtype_name(DUET_DTYPE_F16), "F16");
}
END_TEST

START_TEST(test_progress_draws_only_when_asked_or_on_a_terminal)
{
    FILE *f = tmpfile();
    struct duet__progress p;
    char buf[512] = "";
    size_t n;

    duet__progress_start(&p, f, 0, "checking", 200);
    duet__progress_add(&p, 50);
    duet__progress_add(&p, 1);
    duet__progress_end(&p);
    rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_msg(strstr(buf, "\rduet: checking  25% (0.0 of 0.0 GB)"), "drew '%s'", buf);
    ck_assert_msg(strstr(buf, "100%") && buf[n - 1] == '\n', "drew '%s'", buf);
    duet__progress_start(&p, NULL, DUET_MODEL_QUIET, "x", 1ull << 40);
    ck_assert_ptr_null(p.out);
    duet__progress_start(&p, NULL, 0, "x", 1);
    ck_assert_ptr_null(p.out);
    duet__progress_start(&p, NULL, 0, "x", 1ull << 40);
    ck_assert_ptr_eq(p.out, isatty(STDERR_FILENO) ? stderr : NULL);
    duet__progress_start(&p, NULL, DUET_MODEL_PROGRESS, "x", 1);
    ck_assert_ptr_eq(p.out, stderr);
}
END_TEST

/* ==== the reference forward pass and greedy agreement ======================================== */

/* Mean top-1 probability and entropy (nats) of the next-token distributions along a greedy
 * generation of `steps` tokens. */
static void logit_stats(const duet_model *m, uint32_t steps, double *top1, double *entropy)
{
    uint32_t vocab = duet_model_describe(m)->vocab_size;
    double *logits = malloc(vocab * sizeof(double));
    duet_ref *r;
    int32_t token = 1;

    *top1 = *entropy = 0;
    ck_assert_int_eq(duet_ref_create(m, steps, &r), DUET_STATUS_OK);
    for (uint32_t s = 0; s < steps; s++) {
        double max, sum = 0, ent = 0;

        ck_assert_int_eq(duet_ref_step(r, token, logits), DUET_STATUS_OK);
        token = (int32_t)duet_ref_argmax(logits, vocab);
        max = logits[token];
        for (uint32_t v = 0; v < vocab; v++)
            sum += exp(logits[v] - max);
        for (uint32_t v = 0; v < vocab; v++) {
            double p = exp(logits[v] - max) / sum;

            ent -= p > 0 ? p * log(p) : 0;
        }
        *top1 += 1 / sum / steps;
        *entropy += ent / steps;
    }
    duet_ref_destroy(r);
    free(logits);
}

START_TEST(test_logits_are_neither_flat_nor_saturated)
{
    duet_model_desc d = tiny_llama(), o = tiny_opt(true, 64);
    struct duet__gen_params p;
    duet_model *m;
    double top1, entropy;

    d.hidden_size = 128;
    d.head_dim = 32;
    d.intermediate_size = 256;
    d.vocab_size = 32000;
    p = gen_params("llama", &d, DUET_DTYPE_BF16, 21);
    generate(&p);
    m = open_ok(p.dir);
    logit_stats(m, 12, &top1, &entropy);
    duet_model_destroy(m);
    ck_assert_msg(top1 > 0.05 && top1 < 0.9 && entropy > 1.0 && entropy < log(32000) - 1.0,
                  "llama: mean top-1 probability %.3f, entropy %.2f nats", top1, entropy);
    o.hidden_size = 64;
    o.num_heads = 4;
    o.head_dim = 16;
    o.vocab_size = 50272;
    p = gen_params("opt", &o, DUET_DTYPE_BF16, 22);
    generate(&p);
    m = open_ok(p.dir);
    logit_stats(m, 12, &top1, &entropy);
    duet_model_destroy(m);
    ck_assert_msg(top1 > 0.05 && top1 < 0.9 && entropy > 1.0 && entropy < log(50272) - 1.0,
                  "opt: mean top-1 probability %.3f, entropy %.2f nats", top1, entropy);
}
END_TEST

/* With every layer's output projections scaled by 2^-10, the logits are the head applied to the
 * normed embedding (plus position for OPT): a check of the reference's plumbing against a direct
 * computation. */
START_TEST(test_reference_reduces_to_the_embedding_when_layers_are_silent)
{
    duet_model_desc d = tiny_llama();
    struct duet__gen_params p;
    duet_model *m;
    duet_ref *r;
    double logits[32], x[16], ss = 0;
    float e[16], w[16], head[16];

    p = gen_params("m", &d, DUET_DTYPE_F32, 30);
    p.tail_from = 0;
    p.tail_log2 = -10;
    generate(&p);
    m = open_ok(p.dir);
    ck_assert_int_eq(duet_ref_create(m, 4, &r), DUET_STATUS_OK);
    ck_assert_int_eq(duet_ref_step(r, 5, logits), DUET_STATUS_OK);
    duet_tensor_read_f32(duet_model_tensor(m, "model.embed_tokens.weight"), 5 * 16, 16, e);
    duet_tensor_read_f32(duet_model_tensor(m, "model.norm.weight"), 0, 16, w);
    for (int i = 0; i < 16; i++)
        ss += (double)e[i] * e[i];
    for (int i = 0; i < 16; i++)
        x[i] = e[i] / sqrt(ss / 16 + d.norm_eps) * w[i];
    for (int v = 0; v < 32; v++) {
        double want = 0;

        duet_tensor_read_f32(duet_model_tensor(m, "lm_head.weight"), (uint64_t)v * 16, 16, head);
        for (int i = 0; i < 16; i++)
            want += head[i] * x[i];
        ck_assert_double_eq_tol(logits[v], want, 0.05); /* the silent layers add ~2^-10 */
    }
    ck_assert_uint_eq(duet_ref_pos(r), 1);
    ck_assert_int_eq(duet_ref_step(r, 32, logits), DUET_STATUS_INVALID_ARGUMENT);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(duet_ref_step(r, 1, logits), DUET_STATUS_OK);
    ck_assert_int_eq(duet_ref_step(r, 1, logits), DUET_STATUS_CAPACITY);
    duet_ref_reset(r);
    ck_assert_uint_eq(duet_ref_pos(r), 0);
    duet_ref_destroy(r);
    duet_model_destroy(m);
}
END_TEST

START_TEST(test_rope_scores_depend_on_relative_position_only)
{
    duet_model_desc d = tiny_llama();
    double f[8], q[16], k[16], q2[16], k2[16];

    d.head_dim = 16;
    for (int s = 0; s < 3; s++) {
        double dot1 = 0, dot2 = 0;

        d.rope_scaling = (duet_rope_scaling)s;
        d.rope_factor = 8;
        d.rope_low_freq_factor = 1;
        d.rope_high_freq_factor = 4;
        d.rope_original_max_position = 64;
        duet_ref_rope_freqs(&d, f);
        for (int i = 0; i < 16; i++) {
            q[i] = q2[i] = sin(i + 1.0);
            k[i] = k2[i] = cos(3.0 * i);
        }
        duet_ref_rope(f, 16, 7, q);
        duet_ref_rope(f, 16, 3, k);
        duet_ref_rope(f, 16, 107, q2);
        duet_ref_rope(f, 16, 103, k2);
        for (int i = 0; i < 16; i++) {
            dot1 += q[i] * k[i];
            dot2 += q2[i] * k2[i];
        }
        ck_assert_double_eq_tol(dot1, dot2, 1e-9);
    }
    duet_ref_rope_freqs(&d, f); /* llama3: highest frequency kept, lowest divided by 8 */
    ck_assert_double_eq_tol(f[0], 1.0, 1e-12);
    ck_assert_double_eq_tol(f[7], pow(10000.0, -14.0 / 16) / 8, 1e-15);
    d.rope_scaling = DUET_ROPE_SCALING_LINEAR;
    duet_ref_rope_freqs(&d, f);
    ck_assert_double_eq_tol(f[0], 1.0 / 8, 1e-12);
}
END_TEST

/* Greedy agreement of a draft with its target: the target generates greedily from a few
 * prompts; at each position, does the draft's argmax (fed the same prefix) match? */
static double agreement(const duet_model *target, const duet_model *draft, uint32_t prompts,
                        uint32_t tokens)
{
    uint32_t vocab = duet_model_describe(target)->vocab_size, agree = 0, total = 0;
    double *lt = malloc(vocab * sizeof(double)), *ld = malloc(vocab * sizeof(double));
    duet_ref *rt, *rd;

    ck_assert_int_eq(duet_ref_create(target, tokens + 8, &rt), DUET_STATUS_OK);
    ck_assert_int_eq(duet_ref_create(draft, tokens + 8, &rd), DUET_STATUS_OK);
    for (uint32_t p = 0; p < prompts; p++) {
        int32_t token = 0;

        duet_ref_reset(rt);
        duet_ref_reset(rd);
        for (uint32_t i = 0; i < 4 + tokens; i++) {
            duet_ref_step(rt, token, lt);
            duet_ref_step(rd, token, ld);
            if (i >= 4) {
                agree += duet_ref_argmax(lt, vocab) == duet_ref_argmax(ld, vocab);
                total++;
            }
            token = i < 3 ? (int32_t)((p * 7919 + i * 104729) % vocab)
                          : (int32_t)duet_ref_argmax(lt, vocab);
        }
    }
    duet_ref_destroy(rt);
    duet_ref_destroy(rd);
    free(lt);
    free(ld);
    return (double)agree / total;
}

/* Agreement of a plain and a tail-scaled target of desc with 2-layer drafts (noise 0.02), and of
 * an exact full copy of the tail-scaled one. */
static void measure_agreement(const duet_model_desc *desc, double *plain, double *tail,
                              double *same)
{
    struct duet__gen_params p = gen_params("plain", desc, DUET_DTYPE_BF16, 40);
    struct duet__gen_params t = gen_params("tail", desc, DUET_DTYPE_BF16, 40);
    duet_model *target, *draft;

    t.tail_from = 2;
    t.tail_log2 = -5;
    generate(&p);
    generate(&t);
    derive(p.dir, "dplain", 2, 0.02, false, DUET_DTYPE_BF16);
    derive(t.dir, "dtail", 2, 0.02, false, DUET_DTYPE_BF16);
    derive(t.dir, "dsame", desc->num_layers, 0.0, false, DUET_DTYPE_F32);
    target = open_ok(p.dir);
    draft = open_ok(dir_of("dplain"));
    *plain = agreement(target, draft, 4, 16);
    duet_model_destroy(target);
    duet_model_destroy(draft);
    target = open_ok(t.dir);
    draft = open_ok(dir_of("dtail"));
    *tail = agreement(target, draft, 4, 16);
    duet_model_destroy(draft);
    draft = open_ok(dir_of("dsame"));
    *same = agreement(target, draft, 2, 8);
    duet_model_destroy(draft);
    duet_model_destroy(target);
}

START_TEST(test_tail_scaled_target_agrees_with_its_shallow_draft)
{
    duet_model_desc d[2] = {tiny_llama(), tiny_opt(true, 64)};

    for (int i = 0; i < 2; i++) {
        double plain, tail, same;

        d[i].hidden_size = d[i].word_embed_proj_dim = 64;
        d[i].head_dim = 16;
        d[i].intermediate_size = 128;
        d[i].num_layers = 6;
        d[i].vocab_size = 256;
        measure_agreement(&d[i], &plain, &tail, &same);
        teardown();
        setup();
        ck_assert_double_eq(same, 1.0);
        ck_assert_msg(tail >= 0.75 && tail > plain + 0.2,
                      "%s greedy agreement: tail-scaled %.2f, plain %.2f",
                      duet_arch_name(d[i].arch), tail, plain);
    }
}
END_TEST

/* Random tied models easily collapse into repeating one token (the head is the embedding, and
 * the current token's embedding is in the residual stream): the generator prevents it. */
START_TEST(test_tied_models_do_not_repeat_one_token)
{
    duet_model_desc d[2] = {tiny_llama(), tiny_opt(true, 64)};

    for (int i = 0; i < 2; i++) {
        struct duet__gen_params p;
        duet_model *m;
        duet_ref *r;
        double logits[256];
        int32_t token = 0;
        bool seen[256] = {false};
        int distinct = 0;

        d[i].hidden_size = d[i].word_embed_proj_dim = 64;
        d[i].head_dim = 16;
        d[i].intermediate_size = 128;
        d[i].num_layers = 6;
        d[i].vocab_size = 256;
        d[i].tie_word_embeddings = true;
        p = gen_params(i ? "opt" : "llama", &d[i], DUET_DTYPE_BF16, 3);
        generate(&p);
        m = open_ok(p.dir);
        ck_assert_int_eq(duet_ref_create(m, 40, &r), DUET_STATUS_OK);
        for (int step = 0; step < 40; step++) {
            ck_assert_int_eq(duet_ref_step(r, token, logits), DUET_STATUS_OK);
            token = step < 3 ? 17 * step + 5 : (int32_t)duet_ref_argmax(logits, 256);
            if (step >= 3 && !seen[token]) {
                seen[token] = true;
                distinct++;
            }
        }
        ck_assert_msg(distinct >= 8, "%s: %d distinct tokens in 37 greedy steps",
                      duet_arch_name(d[i].arch), distinct);
        duet_ref_destroy(r);
        duet_model_destroy(m);
    }
}
END_TEST

START_TEST(test_opt_reference_runs_every_variant)
{
    for (int v = 0; v < 2; v++) {
        duet_model_desc d = tiny_opt(v == 0, v == 0 ? 16 : 8);
        struct duet__gen_params p = gen_params(v ? "b" : "a", &d, DUET_DTYPE_F16, 50);
        duet_model *m;
        duet_ref *r;
        double a[40], b[40];

        generate(&p);
        m = open_ok(p.dir);
        ck_assert_int_eq(duet_ref_create(m, 8, &r), DUET_STATUS_OK);
        ck_assert_int_eq(duet_ref_step(r, 3, a), DUET_STATUS_OK);
        ck_assert_int_eq(duet_ref_step(r, 3, b), DUET_STATUS_OK);
        ck_assert_msg(memcmp(a, b, sizeof(a)) != 0, "position made no difference");
        for (int i = 0; i < 40; i++)
            ck_assert(isfinite(a[i]) && isfinite(b[i]));
        duet_ref_reset(r);
        ck_assert_int_eq(duet_ref_step(r, 3, b), DUET_STATUS_OK);
        ck_assert_int_eq(memcmp(a, b, sizeof(a)), 0);
        duet_ref_destroy(r);
        duet_model_destroy(m);
    }
}
END_TEST

/* ==== suite ================================================================================== */

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    const struct duet_test_case cases[] = {
        {"generated model", test_generated_model_loads_and_describes_itself},
        {"short file", test_file_shorter_than_eight_bytes_is_refused},
        {"header past end", test_header_length_past_the_end_of_the_file_is_refused},
        {"absurd header", test_absurd_header_length_is_refused},
        {"header not json", test_header_that_is_not_json_is_refused},
        {"header not object", test_header_that_is_not_an_object_is_refused},
        {"metadata strings", test_metadata_must_be_an_object_of_strings},
        {"metadata not tensor", test_metadata_is_not_a_tensor},
        {"unknown dtype", test_unknown_dtype_is_refused_by_name},
        {"bad shape", test_bad_shape_is_refused},
        {"size mismatch", test_shape_and_dtype_must_match_the_byte_range},
        {"outside data", test_offsets_outside_the_data_area_are_refused},
        {"overlap", test_overlapping_ranges_are_refused},
        {"out of order", test_out_of_order_range_is_refused},
        {"gaps", test_gaps_and_trailing_bytes_are_refused},
        {"duplicate in file", test_duplicate_names_in_one_file_are_refused},
        {"duplicate across shards", test_duplicate_names_across_shards_are_refused},
        {"missing tensor", test_missing_tensor_is_named_with_the_architecture},
        {"wrong shape", test_wrong_shape_for_the_config_is_refused},
        {"integer weights", test_integer_weights_are_refused},
        {"extra tensors", test_extra_tensors_are_kept_and_tied_head_may_be_present},
        {"missing shard", test_shard_listed_in_the_index_must_exist},
        {"index vs shard", test_tensor_listed_in_the_index_must_be_in_its_shard},
        {"bad index", test_malformed_index_is_refused},
        {"no weights", test_folder_without_weights_or_config_is_refused},
        {"fifo", test_fifo_as_config_or_weights_is_refused_without_hanging},
        {"symlink loop", test_symlink_loop_as_weights_names_the_loop},
        {"opt short names", test_opt_checkpoint_without_model_prefix_loads},
        {"check values", test_check_values_names_the_first_nan},
        {"fill info", test_fill_info_honours_the_callers_struct_size},
        {"allocation failures", test_create_survives_every_allocation_failure},
        {"llama config", test_llama_config_gives_every_field},
        {"llama3 rope", test_llama3_rope_scaling_is_read},
        {"linear rope", test_linear_rope_scaling_is_read_with_either_key},
        {"other rope", test_other_rope_scaling_types_are_refused_by_name},
        {"tied embeddings", test_tied_embeddings_drop_lm_head},
        {"opt config", test_opt_config_gives_every_field},
        {"opt variants", test_opt_variants_need_their_own_tensors},
        {"eos list", test_eos_list_comes_from_generation_config},
        {"unsupported arch", test_unsupported_architecture_is_refused_by_name},
        {"unsupported fields", test_unsupported_fields_are_refused_by_name},
        {"bad values", test_bad_values_name_their_key},
        {"head dim", test_head_dim_may_differ_from_hidden_over_heads},
        {"qwen configs", test_qwen_configs_give_biases_norms_and_head_dim},
        {"sliding windows", test_sliding_windows_follow_transformers_and_refuse_a_mix},
        {"configs round trip", test_written_configs_read_back_the_same},
        {"preset shapes", test_presets_have_the_shapes_of_their_public_models},
        {"small presets", test_small_presets_round_trip},
        {"sharded", test_sharded_and_single_file_folders_load_identically},
        {"same seed", test_same_seed_gives_identical_bytes},
        {"dtypes", test_f32_f16_bf16_files_hold_the_same_values},
        {"tail scale", test_tail_scale_shrinks_deep_output_projections},
        {"overwrite", test_generator_refuses_to_overwrite_a_model},
        {"draft first", test_draft_shares_embeddings_and_takes_the_first_layers},
        {"draft spread", test_draft_spread_selects_evenly_spaced_layers},
        {"draft dtypes", test_draft_dtypes_hold_the_same_values},
        {"draft params", test_draft_parameters_are_checked},
        {"conversions", test_conversions_round_to_nearest_even},
        {"read f32", test_read_f32_converts_every_float_dtype},
        {"progress", test_progress_draws_only_when_asked_or_on_a_terminal},
        {"logit scale", test_logits_are_neither_flat_nor_saturated},
        {"reference plumbing", test_reference_reduces_to_the_embedding_when_layers_are_silent},
        {"rope", test_rope_scores_depend_on_relative_position_only},
        {"agreement", test_tail_scaled_target_agrees_with_its_shallow_draft},
        {"tied no repetition", test_tied_models_do_not_repeat_one_token},
        {"opt reference", test_opt_reference_runs_every_variant},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), setup, teardown, 300);
    return s;
}

int main(void)
{
    return duet_test_run(model_suite());
}
