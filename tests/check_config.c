/*
 * Tests of the configuration module (include/duet/config.h, docs/configuration.md).
 *
 * Bad files live in tests/configs/ and are found through $DUET_TEST_SRCDIR (the top of the
 * source tree; "." when unset). Each is checked for its whole message, whose "FILE:LINE: KEY:"
 * prefix names the path given to load. Runs with CK_FORK=no and under valgrind: every test frees
 * what it made.
 */
#define _GNU_SOURCE /* test_dirs.h: nftw */
#include <duet/config.h>

#include "../plugin_api/cpulist.h"
#include "check_util.h"
#include "test_dirs.h"

#include <sys/stat.h>
#include <sys/sysinfo.h>

#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every key of the schema, as docs/configuration.md lists them. */
static const char *const all_keys[] = {
    "model",
    "plugin_dir",
    "log_level",
    "target.worker",
    "target.device",
    "target.dtype",
    "target.weights",
    "target.group_size",
    "target.zero_point",
    "target.quantize_lm_head",
    "target.threads",
    "target.cpus",
    "target.tensor_parallel",
    "speculative.draft_model",
    "speculative.worker",
    "speculative.device",
    "speculative.dtype",
    "speculative.weights",
    "speculative.group_size",
    "speculative.zero_point",
    "speculative.quantize_lm_head",
    "speculative.threads",
    "speculative.cpus",
    "speculative.tensor_parallel",
    "speculative.num_tokens",
    "speculative.acceptance",
    "speculative.typical_posterior_threshold",
    "speculative.typical_posterior_alpha",
    "speculative.synthetic_rate",
    "speculative.disable_by_batch_size",
    "speculative.overlap",
    "speculative.adaptive",
    "cache.block_size",
    "cache.memory_fraction",
    "cache.swap_space_gib",
    "cache.prefix_caching",
    "cache.cpu_kv_space_gib",
    "scheduler.max_num_seqs",
    "scheduler.max_num_batched_tokens",
    "scheduler.max_model_len",
    "scheduler.preemption",
    "scheduler.chunked_prefill",
    "scheduler.policy",
    "server.host",
    "server.port",
    "server.api_key",
    "server.served_model_name",
    "server.tokenizer",
    "server.max_queue",
    "server.request_timeout_s",
    "server.max_body_bytes",
    "server.per_request_spec_decode_metrics",
};
#define N_ALL_KEYS (sizeof(all_keys) / sizeof(all_keys[0]))

/* ---- helpers ----------------------------------------------------------------------------- */

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);

    ck_assert_ptr_nonnull(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* The path of tests/configs/NAME under $DUET_TEST_SRCDIR; the caller frees it. */
static char *config_path(const char *name)
{
    const char *top = getenv("DUET_TEST_SRCDIR");
    char *dir = concat(top && *top ? top : ".", "/tests/configs/");
    char *path = concat(dir, name);

    free(dir);
    return path;
}

static duet_config *new_config(void)
{
    duet_config *cfg = NULL;

    ck_assert_int_eq(duet_config_create(&cfg), DUET_STATUS_OK);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

/* A configuration loaded from tests/configs/NAME, which must load. */
static duet_config *load_good(const char *name)
{
    duet_config *cfg = new_config();
    char *path = config_path(name);
    duet_status st = duet_config_load_file(cfg, path);

    ck_assert_msg(st == DUET_STATUS_OK, "%s: %s", path, duet_config_error(cfg));
    free(path);
    return cfg;
}

/* Loads tests/configs/NAME, expecting status want and the message PATH followed by rest. */
static void expect_load_error(const char *name, duet_status want, const char *rest)
{
    duet_config *cfg = new_config();
    char *path = config_path(name);
    char *expected = concat(path, rest);

    ck_assert_int_eq(duet_config_load_file(cfg, path), want);
    ck_assert_str_eq(duet_config_error(cfg), expected);
    free(expected);
    free(path);
    duet_config_destroy(cfg);
}

/* Loads tests/configs/NAME, which loads, then expects validate to fail with PATH then rest. */
static void expect_validate_error(const char *name, const char *rest)
{
    duet_config *cfg = load_good(name);
    char *path = config_path(name);
    char *expected = concat(path, rest);

    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg), expected);
    free(expected);
    free(path);
    duet_config_destroy(cfg);
}

/* Applies assignment to a fresh configuration, expecting want and the message expected. */
static void expect_set_error(const char *assignment, duet_status want, const char *expected)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(duet_config_set(cfg, assignment), want);
    ck_assert_str_eq(duet_config_error(cfg), expected);
    ck_assert(!duet_config_is_set(cfg, "cache.block_size"));
    duet_config_destroy(cfg);
}

static void expect_int(const duet_config *cfg, const char *key, int64_t want)
{
    int64_t got = -12345;

    ck_assert_int_eq(duet_config_get_int(cfg, key, &got), DUET_STATUS_OK);
    ck_assert_msg(got == want, "%s: got %lld, want %lld", key, (long long)got, (long long)want);
}

static void expect_float(const duet_config *cfg, const char *key, double want)
{
    double got = -1.0;

    ck_assert_int_eq(duet_config_get_float(cfg, key, &got), DUET_STATUS_OK);
    ck_assert_msg(got == want, "%s: got %.17g, want %.17g", key, got, want);
}

static void expect_string(const duet_config *cfg, const char *key, const char *want)
{
    const char *got = NULL;

    ck_assert_int_eq(duet_config_get_string(cfg, key, &got), DUET_STATUS_OK);
    ck_assert_str_eq(got, want);
}

static void expect_bool(const duet_config *cfg, const char *key, bool want)
{
    bool got = !want;

    ck_assert_int_eq(duet_config_get_bool(cfg, key, &got), DUET_STATUS_OK);
    ck_assert_msg(got == want, "%s: got %d, want %d", key, got, want);
}

/* Asserts that a and b give the same status and value for key. */
static void expect_same_value(const duet_config *a, const duet_config *b, const char *key)
{
    duet_config_type type;
    const char *sa = NULL, *sb = NULL;
    int64_t ia = 0, ib = 0;
    double fa = 0, fb = 0;
    bool ba = false, bb = false;

    ck_assert_int_eq(duet_config_key_type(key, &type), DUET_STATUS_OK);
    switch (type) {
    case DUET_CONFIG_TYPE_STRING:
        ck_assert_int_eq(duet_config_get_string(a, key, &sa), duet_config_get_string(b, key, &sb));
        ck_assert_msg(sa == sb || (sa && sb && strcmp(sa, sb) == 0), "%s differs", key);
        break;
    case DUET_CONFIG_TYPE_INT:
        ck_assert_int_eq(duet_config_get_int(a, key, &ia), duet_config_get_int(b, key, &ib));
        ck_assert_msg(ia == ib, "%s differs", key);
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        ck_assert_int_eq(duet_config_get_float(a, key, &fa), duet_config_get_float(b, key, &fb));
        ck_assert_msg(fa == fb, "%s differs: %.17g vs %.17g", key, fa, fb);
        break;
    case DUET_CONFIG_TYPE_BOOL:
        ck_assert_int_eq(duet_config_get_bool(a, key, &ba), duet_config_get_bool(b, key, &bb));
        ck_assert_msg(ba == bb, "%s differs", key);
        break;
    }
}

/* Prints cfg into a malloc'd string; the caller frees it. */
static char *print_to_string(const duet_config *cfg)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(duet_config_print(cfg, f), DUET_STATUS_OK);
    ck_assert_int_eq(fclose(f), 0);
    return text;
}

/* Prints cfg, loads the text into a new configuration and checks every key reads the same. */
static void expect_round_trip(const duet_config *cfg)
{
    char *text = print_to_string(cfg);
    duet_config *again = new_config();

    ck_assert_msg(duet_config_load_string(again, text, "printed") == DUET_STATUS_OK, "%s\n%s",
                  duet_config_error(again), text);
    for (size_t i = 0; i < N_ALL_KEYS; i++)
        expect_same_value(cfg, again, all_keys[i]);
    ck_assert_int_eq(duet_config_has_group(again, "speculative"),
                     duet_config_has_group(cfg, "speculative"));
    duet_config_destroy(again);
    free(text);
}

/* ---- defaults and readers ---------------------------------------------------------------- */

START_TEST(test_defaults_are_returned_for_unset_keys)
{
    duet_config *cfg = new_config();

    expect_string(cfg, "log_level", "warn");
    expect_string(cfg, "target.worker", "cpu");
    expect_string(cfg, "target.device", "auto");
    expect_string(cfg, "target.dtype", "auto");
    expect_string(cfg, "target.weights", "auto");
    expect_int(cfg, "target.threads", 0);
    expect_int(cfg, "target.group_size", 32);
    expect_bool(cfg, "target.zero_point", false);
    expect_bool(cfg, "target.quantize_lm_head", true);
    expect_int(cfg, "speculative.group_size", 32);
    expect_int(cfg, "target.tensor_parallel", 1);
    expect_string(cfg, "speculative.worker", "cpu");
    expect_int(cfg, "speculative.num_tokens", 4);
    expect_string(cfg, "speculative.acceptance", "rejection");
    expect_float(cfg, "speculative.typical_posterior_threshold", 0.09);
    expect_float(cfg, "speculative.typical_posterior_alpha", 0.3);
    expect_int(cfg, "speculative.disable_by_batch_size", 0);
    expect_bool(cfg, "speculative.overlap", true);
    expect_bool(cfg, "speculative.adaptive", false);
    expect_int(cfg, "cache.block_size", 16);
    expect_float(cfg, "cache.memory_fraction", 0.9);
    expect_float(cfg, "cache.swap_space_gib", 4.0);
    expect_bool(cfg, "cache.prefix_caching", false);
    expect_float(cfg, "cache.cpu_kv_space_gib", 4.0);
    expect_int(cfg, "scheduler.max_num_seqs", 256);
    expect_int(cfg, "scheduler.max_num_batched_tokens", 0);
    expect_int(cfg, "scheduler.max_model_len", 0);
    expect_string(cfg, "scheduler.preemption", "auto");
    expect_bool(cfg, "scheduler.chunked_prefill", false);
    expect_string(cfg, "scheduler.policy", "fcfs");
    expect_string(cfg, "server.host", "127.0.0.1");
    expect_int(cfg, "server.port", 8000);
    expect_int(cfg, "server.max_queue", 1024);
    expect_int(cfg, "server.request_timeout_s", 0);
    expect_int(cfg, "server.max_body_bytes", 16777216);
    expect_string(cfg, "server.per_request_spec_decode_metrics", "none");
    for (size_t i = 0; i < N_ALL_KEYS; i++) {
        ck_assert(!duet_config_is_set(cfg, all_keys[i]));
        ck_assert_str_eq(duet_config_source(cfg, all_keys[i]), "default");
    }
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_keys_without_value_are_not_found)
{
    duet_config *cfg = load_good("good-minimal.cfg");
    const char *s = "untouched";

    ck_assert_int_eq(duet_config_get_string(cfg, "plugin_dir", &s), DUET_STATUS_NOT_FOUND);
    ck_assert_int_eq(duet_config_get_string(cfg, "speculative.draft_model", &s),
                     DUET_STATUS_NOT_FOUND);
    ck_assert_str_eq(s, "untouched");
    duet_config_destroy(cfg);
    cfg = new_config();
    ck_assert_int_eq(duet_config_get_string(cfg, "model", &s), DUET_STATUS_NOT_FOUND);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_unknown_key_is_not_found_by_readers)
{
    duet_config *cfg = new_config();
    duet_config_type type;
    int64_t i;

    ck_assert_int_eq(duet_config_get_int(cfg, "cache.block_sz", &i), DUET_STATUS_NOT_FOUND);
    ck_assert_int_eq(duet_config_get_int(cfg, "cache", &i), DUET_STATUS_NOT_FOUND);
    ck_assert_int_eq(duet_config_key_type("cache.block_sz", &type), DUET_STATUS_NOT_FOUND);
    ck_assert(!duet_config_is_set(cfg, "cache.block_sz"));
    ck_assert(!duet_config_has_group(cfg, "cach"));
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_get_with_wrong_type_is_invalid_argument)
{
    duet_config *cfg = load_good("good-full.cfg");
    const char *s;
    int64_t i;
    double f;
    bool b;

    ck_assert_int_eq(duet_config_get_string(cfg, "cache.block_size", &s),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_get_int(cfg, "cache.memory_fraction", &i),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_get_float(cfg, "cache.block_size", &f),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_get_bool(cfg, "model", &b), DUET_STATUS_INVALID_ARGUMENT);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_key_type_reports_every_schema_key)
{
    duet_config_type type;

    for (size_t i = 0; i < N_ALL_KEYS; i++)
        ck_assert_int_eq(duet_config_key_type(all_keys[i], &type), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_key_type("cache.block_size", &type), DUET_STATUS_OK);
    ck_assert_int_eq(type, DUET_CONFIG_TYPE_INT);
    ck_assert_int_eq(duet_config_key_type("cache.memory_fraction", &type), DUET_STATUS_OK);
    ck_assert_int_eq(type, DUET_CONFIG_TYPE_FLOAT);
    ck_assert_int_eq(duet_config_key_type("speculative.overlap", &type), DUET_STATUS_OK);
    ck_assert_int_eq(type, DUET_CONFIG_TYPE_BOOL);
    ck_assert_int_eq(duet_config_key_type("target.worker", &type), DUET_STATUS_OK);
    ck_assert_int_eq(type, DUET_CONFIG_TYPE_STRING);
    ck_assert_int_eq(duet_config_key_type("cache", &type), DUET_STATUS_NOT_FOUND);
}
END_TEST

/* ---- good files -------------------------------------------------------------------------- */

START_TEST(test_minimal_file_loads_and_validates)
{
    duet_config *cfg = load_good("good-minimal.cfg");
    char *path = config_path("good-minimal.cfg");
    char *where = concat(path, ":2");

    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    ck_assert_str_eq(duet_config_error(cfg), "");
    expect_string(cfg, "model", "models/tiny-llama");
    ck_assert(duet_config_is_set(cfg, "model"));
    ck_assert_str_eq(duet_config_source(cfg, "model"), where);
    ck_assert(!duet_config_is_set(cfg, "cache.block_size"));
    ck_assert(!duet_config_has_group(cfg, "target"));
    ck_assert(!duet_config_has_group(cfg, "speculative"));
    free(where);
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_full_file_sets_every_key)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert_msg(duet_config_validate(cfg) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
    for (size_t i = 0; i < N_ALL_KEYS; i++)
        ck_assert_msg(duet_config_is_set(cfg, all_keys[i]), "%s not set", all_keys[i]);
    expect_string(cfg, "model", "models/llama-2-7b");
    expect_string(cfg, "plugin_dir", "/opt/duet/plugins");
    expect_string(cfg, "log_level", "debug");
    expect_string(cfg, "target.worker", "gpu");
    expect_string(cfg, "target.device", "cuda:1");
    expect_string(cfg, "target.dtype", "f16");
    expect_string(cfg, "target.weights", "int8");
    expect_int(cfg, "target.threads", 12);
    expect_string(cfg, "target.cpus", "0");
    expect_int(cfg, "target.group_size", 64);
    expect_bool(cfg, "target.zero_point", true);
    expect_bool(cfg, "target.quantize_lm_head", false);
    expect_int(cfg, "target.tensor_parallel", 2);
    expect_string(cfg, "speculative.draft_model", "models/llama-68m");
    expect_string(cfg, "speculative.worker", "./build/duet_cpu_worker.so");
    expect_string(cfg, "speculative.device", "cpu");
    expect_string(cfg, "speculative.dtype", "f32");
    expect_string(cfg, "speculative.weights", "int4");
    expect_int(cfg, "speculative.threads", 8);
    expect_string(cfg, "speculative.cpus", "0,0-0");
    expect_int(cfg, "speculative.group_size", 128);
    expect_bool(cfg, "speculative.zero_point", true);
    expect_bool(cfg, "speculative.quantize_lm_head", false);
    expect_int(cfg, "speculative.tensor_parallel", 4);
    expect_int(cfg, "speculative.num_tokens", 7);
    expect_string(cfg, "speculative.acceptance", "synthetic");
    expect_float(cfg, "speculative.typical_posterior_threshold", 0.25);
    expect_float(cfg, "speculative.typical_posterior_alpha", 0.5);
    expect_float(cfg, "speculative.synthetic_rate", 0.75);
    expect_int(cfg, "speculative.disable_by_batch_size", 32);
    expect_bool(cfg, "speculative.overlap", false);
    expect_bool(cfg, "speculative.adaptive", true);
    expect_int(cfg, "cache.block_size", 32);
    expect_float(cfg, "cache.memory_fraction", 0.75);
    expect_float(cfg, "cache.swap_space_gib", 8.0);
    expect_bool(cfg, "cache.prefix_caching", true);
    expect_float(cfg, "cache.cpu_kv_space_gib", 16.5);
    expect_int(cfg, "scheduler.max_num_seqs", 128);
    expect_int(cfg, "scheduler.max_num_batched_tokens", 8192);
    expect_int(cfg, "scheduler.max_model_len", 4096);
    expect_string(cfg, "scheduler.preemption", "swap");
    expect_bool(cfg, "scheduler.chunked_prefill", true);
    expect_string(cfg, "scheduler.policy", "priority");
    expect_string(cfg, "server.host", "0.0.0.0");
    expect_int(cfg, "server.port", 9000);
    expect_string(cfg, "server.api_key", "secret");
    expect_string(cfg, "server.served_model_name", "llama-2-7b-chat");
    expect_string(cfg, "server.tokenizer", "models/llama-2-7b-tok");
    expect_int(cfg, "server.max_queue", 64);
    expect_int(cfg, "server.request_timeout_s", 120);
    expect_int(cfg, "server.max_body_bytes", 65536);
    expect_string(cfg, "server.per_request_spec_decode_metrics", "summary");
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_has_group_reports_groups_of_the_file)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert(duet_config_has_group(cfg, "target"));
    ck_assert(duet_config_has_group(cfg, "speculative"));
    ck_assert(duet_config_has_group(cfg, "cache"));
    ck_assert(duet_config_has_group(cfg, "scheduler"));
    ck_assert(!duet_config_has_group(cfg, "model"));
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_dropping_a_group_forgets_its_keys_and_keeps_the_others)
{
    duet_config *cfg = load_good("good-full.cfg");
    const char *s = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    expect_int(cfg, "speculative.num_tokens", 7);
    ck_assert_int_eq(duet_config_drop_group(cfg, "speculative"), DUET_STATUS_OK);
    ck_assert(!duet_config_has_group(cfg, "speculative"));
    ck_assert(duet_config_has_group(cfg, "target"));
    ck_assert(duet_config_has_group(cfg, "cache"));
    ck_assert(!duet_config_is_set(cfg, "speculative.num_tokens"));
    ck_assert_str_eq(duet_config_source(cfg, "speculative.num_tokens"), "default");
    expect_int(cfg, "speculative.num_tokens", 4);
    ck_assert_int_eq(duet_config_get_string(cfg, "speculative.draft_model", &s),
                     DUET_STATUS_NOT_FOUND);
    ck_assert(duet_config_is_set(cfg, "cache.block_size"));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    /* Dropping an absent group is fine; an unknown one is named. */
    ck_assert_int_eq(duet_config_drop_group(cfg, "speculative"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_drop_group(cfg, "speculatve"), DUET_STATUS_NOT_FOUND);
    ck_assert_str_eq(duet_config_error(cfg), "speculatve: no such group");
    ck_assert_int_eq(duet_config_drop_group(NULL, "cache"), DUET_STATUS_INVALID_ARGUMENT);
    f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(duet_config_print(cfg, f), DUET_STATUS_OK);
    fclose(f);
    ck_assert_ptr_null(strstr(buf, "speculative"));
    free(buf);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_source_names_file_and_line_of_each_key)
{
    duet_config *cfg = load_good("good-full.cfg");
    char *path = config_path("good-full.cfg");
    char *block_size = concat(path, ":45");
    char *draft = concat(path, ":22");

    ck_assert_str_eq(duet_config_source(cfg, "cache.block_size"), block_size);
    ck_assert_str_eq(duet_config_source(cfg, "speculative.draft_model"), draft);
    ck_assert_str_eq(duet_config_source(cfg, "no.such_key"), "");
    free(draft);
    free(block_size);
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_load_string_names_messages_after_the_given_name)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(
        duet_config_load_string(cfg, "model = \"m\";\ncache: { block_sise = 8; };\n", "inline.cfg"),
        DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(
        duet_config_error(cfg),
        "inline.cfg:2: cache.block_sise: unknown key; did you mean 'cache.block_size'?");
    ck_assert_int_eq(
        duet_config_load_string(cfg, "model = \"m\";\nlog_level = \"info\";\n", "inline.cfg"),
        DUET_STATUS_OK);
    ck_assert_str_eq(duet_config_source(cfg, "log_level"), "inline.cfg:2");
    duet_config_destroy(cfg);
}
END_TEST

/* ---- bad files: parsing ------------------------------------------------------------------ */

START_TEST(test_syntax_error_names_file_and_line)
{
    expect_load_error("bad-syntax.cfg", DUET_STATUS_BAD_CONFIG, ":5: syntax error");
}
END_TEST

START_TEST(test_duplicate_setting_is_a_syntax_error)
{
    expect_load_error("bad-duplicate-setting.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: syntax error: duplicate setting name");
}
END_TEST

START_TEST(test_missing_file_is_an_io_error)
{
    expect_load_error("no-such-file.cfg", DUET_STATUS_IO,
                      ": cannot read: No such file or directory");
}
END_TEST

/* A FIFO is refused at once as not a regular file (libconfig's fopen would wait for a writer
 * forever), and a file or text over DUET_CONFIG_MAX_BYTES before libconfig reads it (its parser is
 * quadratic in long strings and comments: 10 MB took over 30 s). */
START_TEST(test_fifo_and_oversized_configurations_are_refused_at_once)
{
    char dir[4096], fifo[4200], big[4200];
    size_t n = DUET_CONFIG_MAX_BYTES + 1;
    char *text = malloc(n + 1);
    duet_config *cfg;
    FILE *f;

    ck_assert_ptr_nonnull(text);
    ck_assert(duet_test_mkdtemp(dir, sizeof(dir), "config-test"));
    snprintf(fifo, sizeof(fifo), "%s/fifo.cfg", dir);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    cfg = new_config();
    ck_assert_int_eq(duet_config_load_file(cfg, fifo), DUET_STATUS_IO);
    ck_assert_msg(strstr(duet_config_error(cfg), "fifo.cfg: cannot read: not a regular file"), "%s",
                  duet_config_error(cfg));
    duet_config_destroy(cfg);
    memset(text, '#', n); /* one long comment */
    text[n] = '\0';
    snprintf(big, sizeof(big), "%s/big.cfg", dir);
    f = fopen(big, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, n, f), n);
    fclose(f);
    cfg = new_config();
    ck_assert_int_eq(duet_config_load_file(cfg, big), DUET_STATUS_BAD_CONFIG);
    ck_assert_msg(strstr(duet_config_error(cfg), "big.cfg: 1048577 bytes is too large"), "%s",
                  duet_config_error(cfg));
    duet_config_destroy(cfg);
    cfg = new_config();
    ck_assert_int_eq(duet_config_load_string(cfg, text, "big-text"), DUET_STATUS_BAD_CONFIG);
    ck_assert_msg(strstr(duet_config_error(cfg), "big-text: 1048577 bytes is too large"), "%s",
                  duet_config_error(cfg));
    duet_config_destroy(cfg);
    free(text);
    duet_test_rmtree(dir);
}
END_TEST

static void write_text_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    fclose(f);
}

/* libconfig's scanner exits the process on an @include of a directory: every @include target is
 * checked first (from a file and from a string), and refused with the including file and line;
 * a regular file is still included. */
START_TEST(test_include_of_a_directory_is_refused_with_file_and_line)
{
    char dir[4096], sub[4200], inc[4200], main_cfg[4200], text[16384], want[8600];
    const char *level;
    duet_config *cfg;

    ck_assert(duet_test_mkdtemp(dir, sizeof(dir), "config-test"));
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    snprintf(inc, sizeof(inc), "%s/inc.cfg", dir);
    write_text_file(inc, "log_level = \"info\";\n");
    snprintf(main_cfg, sizeof(main_cfg), "%s/main.cfg", dir);
    snprintf(text, sizeof(text), "model = \"m\";\n  @include \"%s\"\n", sub);
    write_text_file(main_cfg, text);
    cfg = new_config();
    ck_assert_int_eq(duet_config_load_file(cfg, main_cfg), DUET_STATUS_IO);
    snprintf(want, sizeof(want), "%s:2: @include \"%s\": not a regular file", main_cfg, sub);
    ck_assert_str_eq(duet_config_error(cfg), want);
    duet_config_destroy(cfg);
    cfg = new_config();
    ck_assert_int_eq(duet_config_load_string(cfg, text, "text"), DUET_STATUS_IO);
    snprintf(want, sizeof(want), "text:2: @include \"%s\": not a regular file", sub);
    ck_assert_str_eq(duet_config_error(cfg), want);
    duet_config_destroy(cfg);
    snprintf(text, sizeof(text), "model = \"m\";\n@include \"%s\"\n", inc);
    write_text_file(main_cfg, text);
    cfg = new_config();
    ck_assert_msg(duet_config_load_file(cfg, main_cfg) == DUET_STATUS_OK, "%s",
                  duet_config_error(cfg));
    ck_assert_int_eq(duet_config_get_string(cfg, "log_level", &level), DUET_STATUS_OK);
    ck_assert_str_eq(level, "info");
    duet_config_destroy(cfg);
    duet_test_rmtree(dir);
}
END_TEST

/* ---- bad files: unknown keys ------------------------------------------------------------- */

START_TEST(test_unknown_top_level_key_suggests_close_name)
{
    expect_load_error("bad-unknown-top-level-key.cfg", DUET_STATUS_BAD_CONFIG,
                      ":2: log_levle: unknown key; did you mean 'log_level'?");
}
END_TEST

START_TEST(test_unknown_key_in_group_suggests_close_name)
{
    expect_load_error("bad-unknown-key-in-group.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: cache.blok_size: unknown key; did you mean 'cache.block_size'?");
}
END_TEST

START_TEST(test_key_in_wrong_place_suggests_its_full_path)
{
    expect_load_error("bad-key-in-wrong-place.cfg", DUET_STATUS_BAD_CONFIG,
                      ":2: block_size: unknown key; did you mean 'cache.block_size'?");
}
END_TEST

START_TEST(test_unknown_key_without_close_match_has_no_suggestion)
{
    expect_load_error("bad-unknown-key-no-match.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: scheduler.frobnicate: unknown key");
}
END_TEST

START_TEST(test_unknown_group_is_rejected)
{
    expect_load_error("bad-unknown-group.cfg", DUET_STATUS_BAD_CONFIG, ":3: draft: unknown group");
    expect_load_error("bad-misspelt-group.cfg", DUET_STATUS_BAD_CONFIG,
                      ":2: schedular: unknown group; did you mean 'scheduler'?");
}
END_TEST

/* ---- bad files: types and values --------------------------------------------------------- */

START_TEST(test_string_where_int_is_due_is_rejected)
{
    expect_load_error("bad-string-for-int.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: target.threads: must be an integer, got a string");
}
END_TEST

START_TEST(test_float_where_int_is_due_is_rejected)
{
    expect_load_error("bad-float-for-int.cfg", DUET_STATUS_BAD_CONFIG,
                      ":4: scheduler.max_num_seqs: must be an integer, got a float");
}
END_TEST

START_TEST(test_int_where_bool_is_due_is_rejected)
{
    expect_load_error(
        "bad-int-for-bool.cfg", DUET_STATUS_BAD_CONFIG,
        ":4: cache.prefix_caching: must be a boolean (true or false), got an integer");
}
END_TEST

START_TEST(test_int_out_of_range_is_rejected)
{
    expect_load_error("bad-int-out-of-range.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: speculative.num_tokens: must be an integer in 1..32, got 64");
}
END_TEST

START_TEST(test_float_out_of_range_is_rejected)
{
    expect_load_error("bad-float-out-of-range.cfg", DUET_STATUS_BAD_CONFIG,
                      ":5: cache.memory_fraction: must be a number in (0, 1], got 1.5");
}
END_TEST

START_TEST(test_string_outside_allowed_set_lists_allowed_values)
{
    expect_load_error(
        "bad-string-not-allowed.cfg", DUET_STATUS_BAD_CONFIG,
        ":4: target.dtype: must be one of \"auto\", \"bf16\", \"f16\", \"f32\", got \"fp8\"");
}
END_TEST

START_TEST(test_block_size_must_be_a_power_of_two)
{
    expect_load_error("bad-block-size-not-power-of-two.cfg", DUET_STATUS_BAD_CONFIG,
                      ":4: cache.block_size: must be a power of two in 1..256, got 12");
}
END_TEST

START_TEST(test_group_given_as_scalar_is_rejected)
{
    expect_load_error("bad-group-as-scalar.cfg", DUET_STATUS_BAD_CONFIG,
                      ":2: cache: must be a group, got an integer");
}
END_TEST

START_TEST(test_scalar_given_as_group_list_or_array_is_rejected)
{
    expect_load_error("bad-scalar-as-group.cfg", DUET_STATUS_BAD_CONFIG,
                      ":2: log_level: must be a string, got a group");
    expect_load_error("bad-scalar-as-list.cfg", DUET_STATUS_BAD_CONFIG,
                      ":4: target.threads: must be an integer, got a list");
    expect_load_error("bad-scalar-as-array.cfg", DUET_STATUS_BAD_CONFIG,
                      ":4: cache.block_size: must be an integer, got an array");
}
END_TEST

START_TEST(test_worker_must_be_a_plugin_name_or_a_path)
{
    expect_load_error("bad-worker-name.cfg", DUET_STATUS_BAD_CONFIG,
                      ":4: target.worker: must be a plugin name ([a-z0-9_]+) or a path containing "
                      "'/', got \"GPU Worker\"");
}
END_TEST

START_TEST(test_failed_load_leaves_configuration_unchanged)
{
    duet_config *cfg = new_config();
    char *path = config_path("bad-float-out-of-range.cfg");

    ck_assert_int_eq(duet_config_load_file(cfg, path), DUET_STATUS_BAD_CONFIG);
    ck_assert(!duet_config_is_set(cfg, "model"));
    ck_assert(!duet_config_is_set(cfg, "cache.block_size"));
    ck_assert(!duet_config_has_group(cfg, "cache"));
    free(path);
    path = config_path("good-minimal.cfg");
    ck_assert_int_eq(duet_config_load_file(cfg, path), DUET_STATUS_OK);
    ck_assert_str_eq(duet_config_error(cfg), "");
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_second_load_is_refused)
{
    duet_config *cfg = load_good("good-minimal.cfg");
    char *path = config_path("good-full.cfg");

    ck_assert_int_eq(duet_config_load_file(cfg, path), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(duet_config_error(cfg), "loaded only once"));
    ck_assert_int_eq(duet_config_load_string(cfg, "model = \"x\";", "x.cfg"),
                     DUET_STATUS_INVALID_ARGUMENT);
    expect_string(cfg, "model", "models/tiny-llama");
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

/* ---- validation -------------------------------------------------------------------------- */

START_TEST(test_missing_model_fails_validation_without_a_line)
{
    expect_validate_error("bad-missing-model.cfg", ": model: required key is missing");
}
END_TEST

START_TEST(test_speculative_group_without_draft_model_fails_at_the_group_line)
{
    expect_validate_error(
        "bad-speculative-without-draft-model.cfg",
        ":4: speculative.draft_model: required when the speculative group is present");
}
END_TEST

START_TEST(test_batched_tokens_below_model_len_fails_validation)
{
    expect_validate_error("bad-batched-below-model-len.cfg",
                          ":5: scheduler.max_num_batched_tokens: must be >= "
                          "scheduler.max_model_len (4096) unless scheduler.chunked_prefill is "
                          "true, got 2048");
}
END_TEST

START_TEST(test_batched_tokens_below_model_len_is_allowed_with_chunked_prefill)
{
    duet_config *cfg = load_good("bad-batched-below-model-len.cfg");

    ck_assert_int_eq(duet_config_set(cfg, "scheduler.chunked_prefill=true"), DUET_STATUS_OK);
    ck_assert_msg(duet_config_validate(cfg) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_batched_tokens_below_num_seqs_fails_validation)
{
    expect_validate_error("bad-batched-below-num-seqs.cfg",
                          ":5: scheduler.max_num_batched_tokens: must be >= "
                          "scheduler.max_num_seqs (256), got 128");
}
END_TEST

START_TEST(test_missing_model_without_file_has_no_location)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg), "model: required key is missing");
    ck_assert_int_eq(duet_config_set(cfg, "model=models/x"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    ck_assert_str_eq(duet_config_error(cfg), "");
    duet_config_destroy(cfg);
}
END_TEST

/* ---- overrides --------------------------------------------------------------------------- */

START_TEST(test_override_applied_after_file_wins)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=64"), DUET_STATUS_OK);
    expect_int(cfg, "cache.block_size", 64);
    ck_assert_str_eq(duet_config_source(cfg, "cache.block_size"), "--set");
    ck_assert(duet_config_is_set(cfg, "cache.block_size"));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_applied_before_file_still_wins)
{
    duet_config *cfg = new_config();
    char *path = config_path("good-full.cfg");

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=128"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_load_file(cfg, path), DUET_STATUS_OK);
    expect_int(cfg, "cache.block_size", 128);
    ck_assert_str_eq(duet_config_source(cfg, "cache.block_size"), "--set");
    expect_float(cfg, "cache.memory_fraction", 0.75);
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_creates_speculative_group_and_validate_requires_draft_model)
{
    duet_config *cfg = load_good("good-minimal.cfg");

    ck_assert(!duet_config_has_group(cfg, "speculative"));
    ck_assert_int_eq(duet_config_set(cfg, "speculative.num_tokens=8"), DUET_STATUS_OK);
    ck_assert(duet_config_has_group(cfg, "speculative"));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg),
                     "--set speculative.num_tokens=8: speculative.draft_model: required when the "
                     "speculative group is present");
    ck_assert_int_eq(duet_config_set(cfg, "speculative.draft_model=models/llama-68m"),
                     DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    expect_int(cfg, "speculative.num_tokens", 8);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_unknown_key_suggests_close_name)
{
    expect_set_error("cache.block_sz=32", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_sz=32: cache.block_sz: unknown key; did you mean "
                     "'cache.block_size'?");
    expect_set_error("block_size=32", DUET_STATUS_BAD_CONFIG,
                     "--set block_size=32: block_size: unknown key; did you mean "
                     "'cache.block_size'?");
    expect_set_error("speculative.workers=gpu", DUET_STATUS_BAD_CONFIG,
                     "--set speculative.workers=gpu: speculative.workers: unknown key; did you "
                     "mean 'speculative.worker'?");
    expect_set_error("zzzzzz.qqqqqq=1", DUET_STATUS_BAD_CONFIG,
                     "--set zzzzzz.qqqqqq=1: zzzzzz.qqqqqq: unknown key");
    expect_set_error("cache=4", DUET_STATUS_BAD_CONFIG,
                     "--set cache=4: cache: is a group; set one of its keys (cache.NAME=VALUE)");
}
END_TEST

START_TEST(test_override_without_equals_is_rejected)
{
    expect_set_error("cache.block_size", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size: cache.block_size: missing '=' (expected KEY=VALUE)");
    expect_set_error("=32", DUET_STATUS_BAD_CONFIG,
                     "--set =32: missing key before '=' (expected KEY=VALUE)");
}
END_TEST

START_TEST(test_override_rejects_malformed_numbers)
{
    expect_set_error("cache.block_size=12abc", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size=12abc: cache.block_size: must be an integer, got "
                     "\"12abc\"");
    expect_set_error("cache.block_size=", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size=: cache.block_size: must be an integer, got \"\"");
    expect_set_error("cache.block_size=16.0", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size=16.0: cache.block_size: must be an integer, got "
                     "\"16.0\"");
    expect_set_error("cache.block_size=99999999999999999999", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size=99999999999999999999: cache.block_size: out of "
                     "range for an integer, got \"99999999999999999999\"");
    expect_set_error("cache.swap_space_gib=1e999", DUET_STATUS_BAD_CONFIG,
                     "--set cache.swap_space_gib=1e999: cache.swap_space_gib: out of range for a "
                     "number, got \"1e999\"");
    expect_set_error("cache.swap_space_gib=nan", DUET_STATUS_BAD_CONFIG,
                     "--set cache.swap_space_gib=nan: cache.swap_space_gib: must be a number, got "
                     "\"nan\"");
    expect_set_error("cache.swap_space_gib=4.0x", DUET_STATUS_BAD_CONFIG,
                     "--set cache.swap_space_gib=4.0x: cache.swap_space_gib: must be a number, "
                     "got \"4.0x\"");
    expect_set_error("cache.prefix_caching=maybe", DUET_STATUS_BAD_CONFIG,
                     "--set cache.prefix_caching=maybe: cache.prefix_caching: must be a boolean "
                     "(true or false), got \"maybe\"");
}
END_TEST

START_TEST(test_override_rejects_out_of_range_values)
{
    expect_set_error("cache.block_size=32768", DUET_STATUS_BAD_CONFIG,
                     "--set cache.block_size=32768: cache.block_size: must be a power of two in "
                     "1..256, got 32768");
    expect_set_error("speculative.group_size=48", DUET_STATUS_BAD_CONFIG,
                     "--set speculative.group_size=48: speculative.group_size: must be a power of "
                     "two in 32..128, got 48");
    expect_set_error("target.group_size=16", DUET_STATUS_BAD_CONFIG,
                     "--set target.group_size=16: target.group_size: must be a power of two in "
                     "32..128, got 16");
    expect_set_error("target.tensor_parallel=0", DUET_STATUS_BAD_CONFIG,
                     "--set target.tensor_parallel=0: target.tensor_parallel: must be an integer "
                     "in 1..64, got 0");
    expect_set_error("cache.memory_fraction=0", DUET_STATUS_BAD_CONFIG,
                     "--set cache.memory_fraction=0: cache.memory_fraction: must be a number in "
                     "(0, 1], got 0");
    expect_set_error("cache.swap_space_gib=-1", DUET_STATUS_BAD_CONFIG,
                     "--set cache.swap_space_gib=-1: cache.swap_space_gib: must be a number in "
                     "[0, 1024], got -1");
    expect_set_error("scheduler.policy=lifo", DUET_STATUS_BAD_CONFIG,
                     "--set scheduler.policy=lifo: scheduler.policy: must be one of \"fcfs\", "
                     "\"priority\", got \"lifo\"");
    expect_set_error("target.worker=", DUET_STATUS_BAD_CONFIG,
                     "--set target.worker=: target.worker: must not be empty");
}
END_TEST

START_TEST(test_failed_override_keeps_the_previous_value)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=33"), DUET_STATUS_BAD_CONFIG);
    expect_int(cfg, "cache.block_size", 32);
    ck_assert_str_ne(duet_config_source(cfg, "cache.block_size"), "--set");
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_reads_libconfig_integer_forms)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=0x20"), DUET_STATUS_OK);
    expect_int(cfg, "cache.block_size", 32);
    ck_assert_int_eq(duet_config_set(cfg, "scheduler.max_model_len=8192L"), DUET_STATUS_OK);
    expect_int(cfg, "scheduler.max_model_len", 8192);
    ck_assert_int_eq(duet_config_set(cfg, " target.threads = +8 "), DUET_STATUS_OK);
    expect_int(cfg, "target.threads", 8);
    ck_assert_int_eq(duet_config_set(cfg, "cache.swap_space_gib=16"), DUET_STATUS_OK);
    expect_float(cfg, "cache.swap_space_gib", 16.0);
    ck_assert_int_eq(duet_config_set(cfg, "cache.memory_fraction=.5e0"), DUET_STATUS_OK);
    expect_float(cfg, "cache.memory_fraction", 0.5);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_reads_booleans_in_every_spelling)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "on", "1"};
    static const char *const no[] = {"false", "False", "no", "off", "0"};
    duet_config *cfg = new_config();
    char buf[64];

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(buf, sizeof(buf), "cache.prefix_caching=%s", yes[i]);
        ck_assert_int_eq(duet_config_set(cfg, buf), DUET_STATUS_OK);
        expect_bool(cfg, "cache.prefix_caching", true);
        snprintf(buf, sizeof(buf), "cache.prefix_caching=%s", no[i]);
        ck_assert_int_eq(duet_config_set(cfg, buf), DUET_STATUS_OK);
        expect_bool(cfg, "cache.prefix_caching", false);
    }
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_override_reads_quoted_and_bare_strings)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(duet_config_set(cfg, "model=models/llama 7b"), DUET_STATUS_OK);
    expect_string(cfg, "model", "models/llama 7b");
    ck_assert_int_eq(duet_config_set(cfg, "model=\"a \\\"quoted\\\" \\\\ path\""), DUET_STATUS_OK);
    expect_string(cfg, "model", "a \"quoted\" \\ path");
    ck_assert_int_eq(duet_config_set(cfg, "target.dtype=\"f32\""), DUET_STATUS_OK);
    expect_string(cfg, "target.dtype", "f32");
    ck_assert_int_eq(duet_config_set(cfg, "model=\"unterminated"), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg), "--set model=\"unterminated: model: the quoted "
                                             "string has no closing quote");
    ck_assert_int_eq(duet_config_set(cfg, "model=\"a\" b"), DUET_STATUS_BAD_CONFIG);
    ck_assert_int_eq(duet_config_set(cfg, "model=\"a\\n\""), DUET_STATUS_BAD_CONFIG);
    expect_string(cfg, "model", "a \"quoted\" \\ path");
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_error_is_empty_after_a_successful_call)
{
    duet_config *cfg = new_config();

    ck_assert_str_eq(duet_config_error(cfg), "");
    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=3"), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_ne(duet_config_error(cfg), "");
    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=4"), DUET_STATUS_OK);
    ck_assert_str_eq(duet_config_error(cfg), "");
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_null_arguments_are_refused)
{
    duet_config *cfg = new_config();
    int64_t i;

    ck_assert_int_eq(duet_config_create(NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_load_file(NULL, "x"), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_load_file(cfg, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_set(cfg, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_get_int(cfg, NULL, &i), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_get_int(cfg, "target.threads", NULL),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_config_print(cfg, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(duet_config_error(NULL), "");
    duet_config_destroy(NULL);
    duet_config_destroy(cfg);
}
END_TEST

/* ---- printing ---------------------------------------------------------------------------- */

START_TEST(test_print_round_trips_to_an_equal_configuration)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert_int_eq(duet_config_set(cfg, "cache.memory_fraction=0.1"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "speculative.typical_posterior_alpha=1e-5"),
                     DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "cache.swap_space_gib=1024"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "model=\"we\\\"ird\\\\ \ttab\""), DUET_STATUS_OK);
    expect_round_trip(cfg);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_print_round_trips_defaults_and_minimal_files)
{
    duet_config *cfg = new_config();

    expect_round_trip(cfg);
    duet_config_destroy(cfg);
    cfg = load_good("good-minimal.cfg");
    expect_round_trip(cfg);
    ck_assert_int_eq(duet_config_set(cfg, "model=line one\nline two"), DUET_STATUS_OK);
    expect_round_trip(cfg);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_print_names_the_source_of_each_value)
{
    duet_config *cfg = load_good("good-minimal.cfg");
    char *path = config_path("good-minimal.cfg");
    char *model_line = concat("model = \"models/tiny-llama\"; # ", path);
    char *text;

    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=32"), DUET_STATUS_OK);
    text = print_to_string(cfg);
    ck_assert_ptr_nonnull(strstr(text, model_line));
    ck_assert_ptr_nonnull(strstr(text, "    block_size = 32; # --set\n"));
    ck_assert_ptr_nonnull(strstr(text, "    memory_fraction = 0.9; # default\n"));
    ck_assert_ptr_nonnull(strstr(text, "    swap_space_gib = 4.0; # default\n"));
    ck_assert_ptr_nonnull(strstr(text, "log_level = \"warn\"; # default\n"));
    ck_assert_ptr_null(strstr(text, "plugin_dir"));
    ck_assert_ptr_null(strstr(text, "speculative"));
    ck_assert_ptr_nonnull(strstr(text, "\ntarget = {\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nscheduler = {\n"));
    free(text);
    free(model_line);
    free(path);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_print_to_a_failing_stream_is_an_io_error)
{
    duet_config *cfg = new_config();
    FILE *f = fopen("/dev/full", "w");

    if (!f) {
        duet_config_destroy(cfg);
        return; /* no /dev/full here: nothing to check */
    }
    ck_assert_int_eq(duet_config_print(cfg, f), DUET_STATUS_IO);
    fclose(f);
    duet_config_destroy(cfg);
}
END_TEST

/* ---- CPU lists and synthetic acceptance ---------------------------------------------------- */

/* Loads text under the name "cpus.cfg", expecting BAD_CONFIG and the message expected. */
static void expect_text_error(const char *text, const char *expected)
{
    duet_config *cfg = new_config();

    ck_assert_int_eq(duet_config_load_string(cfg, text, "cpus.cfg"), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg), expected);
    duet_config_destroy(cfg);
}

/* Loads and validates text, expecting validation to fail with the message expected. */
static void expect_text_validate_error(const char *text, const char *expected)
{
    duet_config *cfg = new_config();

    ck_assert_msg(duet_config_load_string(cfg, text, "synthetic.cfg") == DUET_STATUS_OK, "%s",
                  duet_config_error(cfg));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_BAD_CONFIG);
    ck_assert_str_eq(duet_config_error(cfg), expected);
    duet_config_destroy(cfg);
}

/* The lowest CPU this process may run on. */
static int first_allowed_cpu(void)
{
    cpu_set_t set;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            return c;
    ck_abort_msg("the affinity mask is empty");
    return -1;
}

START_TEST(test_cpu_lists_in_cpulist_syntax_are_accepted)
{
    int c = first_allowed_cpu();
    char text[256], list[64];
    duet_config *cfg = new_config();
    const duet_settings *s;

    snprintf(list, sizeof(list), "%d,%d-%d,%d", c, c, c, c);
    snprintf(text, sizeof(text),
             "model = \"m\";\ntarget: { cpus = \"%d\"; };\n"
             "speculative: { draft_model = \"d\"; cpus = \"%s\"; };\n",
             c, list);
    ck_assert_msg(duet_config_load_string(cfg, text, "cpus.cfg") == DUET_STATUS_OK, "%s",
                  duet_config_error(cfg));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    s = duet_config_settings(cfg);
    ck_assert_int_eq(atoi(s->target_cpus), c);
    ck_assert_str_eq(s->speculative_cpus, list);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_malformed_cpu_lists_are_refused_with_file_line_and_key)
{
    static const char *const bad[] = {
        "1-0", "0,", ",0",  "0,,1",  "a",  " 0",   "0 ",
        "0-",  "-1", "0;1", "0-3:2", "+1", "1024", "99999999999999999999"};
    char text[256], want[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        duet_config *cfg = new_config();

        snprintf(text, sizeof(text), "model = \"m\";\n\ntarget: { cpus = \"%s\"; };\n", bad[i]);
        ck_assert_int_eq(duet_config_load_string(cfg, text, "cpus.cfg"), DUET_STATUS_BAD_CONFIG);
        snprintf(want, sizeof(want), "cpus.cfg:3: target.cpus: bad CPU list \"%s\" at", bad[i]);
        ck_assert_msg(strncmp(duet_config_error(cfg), want, strlen(want)) == 0,
                      "\"%s\": got \"%s\"", bad[i], duet_config_error(cfg));
        duet_config_destroy(cfg);
    }
    expect_text_error("model = \"m\";\nspeculative: {\n draft_model = \"d\";\n cpus = \"\"; };\n",
                      "cpus.cfg:4: speculative.cpus: CPU list is empty (expected CPU numbers and "
                      "ranges: \"0-3,8\")");
    expect_text_error("model = \"m\";\ntarget: { cpus = \"0-1x\"; };\n",
                      "cpus.cfg:2: target.cpus: bad CPU list \"0-1x\" at \"0-1x\" (expected CPU "
                      "numbers below 1024 and ranges A-B with A <= B, separated by commas: "
                      "\"0-3,8\")");
}
END_TEST

START_TEST(test_cpus_this_machine_lacks_are_refused)
{
    long n = get_nprocs_conf();
    char text[128], want[256];

    snprintf(text, sizeof(text), "model = \"m\";\ntarget: { cpus = \"0-%ld\"; };\n", n);
    snprintf(want, sizeof(want),
             "cpus.cfg:2: target.cpus: CPU %ld is not present: this machine has CPUs 0-%ld", n,
             n - 1);
    expect_text_error(text, want);
    if (n < 1023) {
        snprintf(want, sizeof(want),
                 "--set target.cpus=1023: target.cpus: CPU 1023 is not present: this machine has "
                 "CPUs 0-%ld",
                 n - 1);
        expect_set_error("target.cpus=1023", DUET_STATUS_BAD_CONFIG, want);
    }
}
END_TEST

START_TEST(test_cpus_outside_the_affinity_mask_are_refused)
{
    cpu_set_t set, allowed;
    char err[256];

    /* the checker on its own, with a mask of CPU 0 alone (this process may have just one CPU) */
    CPU_ZERO(&allowed);
    CPU_SET(0, &allowed);
    ck_assert(duet__cpulist_parse("0", &set, err, sizeof(err)));
    ck_assert(duet__cpulist_check(&set, &allowed, err, sizeof(err)));
    if (get_nprocs_conf() < 2)
        return;
    ck_assert(duet__cpulist_parse("0-1", &set, err, sizeof(err)));
    ck_assert(!duet__cpulist_check(&set, &allowed, err, sizeof(err)));
    ck_assert_str_eq(err, "CPU 1 is not allowed by the process's affinity mask (allowed: 0)");
}
END_TEST

START_TEST(test_cpu_lists_are_written_back_in_cpulist_syntax)
{
    cpu_set_t set;
    char err[256], buf[64];

    ck_assert(duet__cpulist_parse("8,0-3,2,10-11,12", &set, err, sizeof(err)));
    ck_assert_int_eq(CPU_COUNT(&set), 8);
    duet__cpulist_format(&set, buf, sizeof(buf));
    ck_assert_str_eq(buf, "0-3,8,10-12");
    ck_assert(duet__cpulist_parse("1023", &set, err, sizeof(err)));
    duet__cpulist_format(&set, buf, sizeof(buf));
    ck_assert_str_eq(buf, "1023");
}
END_TEST

START_TEST(test_synthetic_acceptance_takes_a_rate_in_zero_to_one)
{
    static const double rates[] = {0.0, 0.8, 1.0};
    char text[256];

    for (size_t i = 0; i < 3; i++) {
        duet_config *cfg = new_config();

        snprintf(text, sizeof(text),
                 "model = \"m\";\nspeculative: { draft_model = \"d\"; acceptance = "
                 "\"synthetic\"; synthetic_rate = %.17g; };\n",
                 rates[i]);
        ck_assert_int_eq(duet_config_load_string(cfg, text, "synthetic.cfg"), DUET_STATUS_OK);
        ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
        ck_assert_int_eq(duet_config_settings(cfg)->speculative.acceptance,
                         DUET_ACCEPTANCE_SYNTHETIC);
        ck_assert(duet_config_settings(cfg)->synthetic_rate == rates[i]);
        duet_config_destroy(cfg);
    }
}
END_TEST

START_TEST(test_synthetic_rates_outside_zero_to_one_are_refused)
{
    expect_text_error(
        "model = \"m\";\nspeculative: { draft_model = \"d\";\n acceptance = "
        "\"synthetic\";\n synthetic_rate = 1.5; };\n",
        "cpus.cfg:4: speculative.synthetic_rate: must be a number in [0, 1], got 1.5");
    expect_text_error("model = \"m\";\nspeculative: { draft_model = \"d\";\n acceptance = "
                      "\"synthetic\";\n synthetic_rate = -0.25; };\n",
                      "cpus.cfg:4: speculative.synthetic_rate: must be a number in [0, 1], got "
                      "-0.25");
    expect_set_error("speculative.synthetic_rate=1.0001", DUET_STATUS_BAD_CONFIG,
                     "--set speculative.synthetic_rate=1.0001: speculative.synthetic_rate: must be "
                     "a number in [0, 1], got 1.0001");
}
END_TEST

START_TEST(test_synthetic_rate_without_synthetic_acceptance_is_refused)
{
    expect_text_validate_error(
        "model = \"m\";\nspeculative: { draft_model = \"d\";\n synthetic_rate = 0.5; };\n",
        "synthetic.cfg:3: speculative.synthetic_rate: only applies with speculative.acceptance = "
        "\"synthetic\" (it is \"rejection\")");
    expect_text_validate_error(
        "model = \"m\";\nspeculative: { draft_model = \"d\";\n acceptance = \"typical\";\n"
        " synthetic_rate = 0.5; };\n",
        "synthetic.cfg:4: speculative.synthetic_rate: only applies with speculative.acceptance = "
        "\"synthetic\" (it is \"typical\")");
    expect_text_validate_error(
        "model = \"m\";\nspeculative: { draft_model = \"d\";\n acceptance = \"synthetic\"; };\n",
        "synthetic.cfg:3: speculative.acceptance: \"synthetic\" needs speculative.synthetic_rate "
        "(the probability of accepting each proposal, 0..1)");
}
END_TEST

/* ---- typed settings ---------------------------------------------------------------------- */

/*
 * Where each key lands in duet_settings, written out here by hand, apart from the schema's own
 * table, with a valid value other than the key's default. The tests below fail when a schema key
 * has no row here (so no typed field), when a row names a key the schema lacks (a renamed key),
 * or when a typed field disagrees with the by-name getter of its key.
 */
enum mirror_kind { MIRROR_STRING, MIRROR_INT, MIRROR_FLOAT, MIRROR_BOOL, MIRROR_ENUM };

struct mirror {
    const char *key;          /* dotted path */
    size_t offset;            /* offsetof(duet_settings, field) */
    enum mirror_kind kind;    /* the field's C type */
    const char *const *names; /* MIRROR_ENUM: the string of each enum constant, by value */
    const char *other;        /* a value other than the default, as --set takes it */
};

static const char *const log_level_names[] = {
    [DUET_LOG_ERROR] = "error",
    [DUET_LOG_WARN] = "warn",
    [DUET_LOG_INFO] = "info",
    [DUET_LOG_DEBUG] = "debug",
    NULL,
};
static const char *const acceptance_names[] = {
    [DUET_ACCEPTANCE_REJECTION] = "rejection",
    [DUET_ACCEPTANCE_TYPICAL] = "typical",
    [DUET_ACCEPTANCE_SYNTHETIC] = "synthetic",
    NULL,
};
static const char *const preemption_names[] = {
    [DUET_SCHED_PREEMPTION_AUTO] = "auto",
    [DUET_SCHED_PREEMPTION_RECOMPUTE] = "recompute",
    [DUET_SCHED_PREEMPTION_SWAP] = "swap",
    NULL,
};
static const char *const policy_names[] = {
    [DUET_SCHED_POLICY_FCFS] = "fcfs",
    [DUET_SCHED_POLICY_PRIORITY] = "priority",
    NULL,
};

#define MIRROR(key, field, kind, names, other)                                                     \
    {                                                                                              \
        key, offsetof(duet_settings, field), MIRROR_##kind, names, other                           \
    }

static const struct mirror mirrors[] = {
    MIRROR("model", model, STRING, NULL, "models/other"),
    MIRROR("plugin_dir", plugin_dir, STRING, NULL, "/opt/duet"),
    MIRROR("log_level", log_level, ENUM, log_level_names, "debug"),
    MIRROR("target.worker", target.worker, STRING, NULL, "gpu"),
    MIRROR("target.device", target.device, STRING, NULL, "cuda:1"),
    MIRROR("target.dtype", target.dtype, STRING, NULL, "bf16"),
    MIRROR("target.weights", target.weights, STRING, NULL, "int8"),
    MIRROR("target.group_size", target.group_size, INT, NULL, "64"),
    MIRROR("target.zero_point", target.zero_point, BOOL, NULL, "true"),
    MIRROR("target.quantize_lm_head", target.quantize_lm_head, BOOL, NULL, "false"),
    MIRROR("target.threads", target.threads, INT, NULL, "6"),
    MIRROR("target.cpus", target_cpus, STRING, NULL, "0"),
    MIRROR("target.tensor_parallel", target.tensor_parallel, INT, NULL, "2"),
    MIRROR("target.check_values", target.check_values, BOOL, NULL, "true"),
    MIRROR("speculative.draft_model", speculative.draft_model, STRING, NULL, "models/draft"),
    MIRROR("speculative.worker", speculative.draft.worker, STRING, NULL, "./duet_x_worker.so"),
    MIRROR("speculative.device", speculative.draft.device, STRING, NULL, "cpu"),
    MIRROR("speculative.dtype", speculative.draft.dtype, STRING, NULL, "f32"),
    MIRROR("speculative.weights", speculative.draft.weights, STRING, NULL, "int4"),
    MIRROR("speculative.group_size", speculative.draft.group_size, INT, NULL, "128"),
    MIRROR("speculative.zero_point", speculative.draft.zero_point, BOOL, NULL, "true"),
    MIRROR("speculative.quantize_lm_head", speculative.draft.quantize_lm_head, BOOL, NULL, "false"),
    MIRROR("speculative.threads", speculative.draft.threads, INT, NULL, "3"),
    MIRROR("speculative.cpus", speculative_cpus, STRING, NULL, "0,0"),
    MIRROR("speculative.tensor_parallel", speculative.draft.tensor_parallel, INT, NULL, "4"),
    MIRROR("speculative.check_values", speculative.draft.check_values, BOOL, NULL, "true"),
    MIRROR("speculative.num_tokens", speculative.num_tokens, INT, NULL, "7"),
    MIRROR("speculative.acceptance", speculative.acceptance, ENUM, acceptance_names, "synthetic"),
    MIRROR("speculative.typical_posterior_threshold", speculative.typical_posterior_threshold,
           FLOAT, NULL, "0.25"),
    MIRROR("speculative.typical_posterior_alpha", speculative.typical_posterior_alpha, FLOAT, NULL,
           "0.5"),
    MIRROR("speculative.synthetic_rate", synthetic_rate, FLOAT, NULL, "0.8"),
    MIRROR("speculative.disable_by_batch_size", speculative.disable_by_batch_size, INT, NULL, "32"),
    MIRROR("speculative.overlap", speculative.overlap, BOOL, NULL, "false"),
    MIRROR("speculative.adaptive", speculative.adaptive, BOOL, NULL, "true"),
    MIRROR("cache.block_size", cache.block_size, INT, NULL, "32"),
    MIRROR("cache.memory_fraction", cache.memory_fraction, FLOAT, NULL, "0.75"),
    MIRROR("cache.swap_space_gib", cache.swap_space_gib, FLOAT, NULL, "8"),
    MIRROR("cache.prefix_caching", cache.prefix_caching, BOOL, NULL, "true"),
    MIRROR("cache.cpu_kv_space_gib", cache.cpu_kv_space_gib, FLOAT, NULL, "16.5"),
    MIRROR("scheduler.max_num_seqs", scheduler.max_num_seqs, INT, NULL, "128"),
    MIRROR("scheduler.max_num_batched_tokens", scheduler.max_num_batched_tokens, INT, NULL, "8192"),
    MIRROR("scheduler.max_model_len", scheduler.max_model_len, INT, NULL, "4096"),
    MIRROR("scheduler.preemption", scheduler.preemption, ENUM, preemption_names, "swap"),
    MIRROR("scheduler.chunked_prefill", scheduler.chunked_prefill, BOOL, NULL, "true"),
    MIRROR("scheduler.policy", scheduler.policy, ENUM, policy_names, "priority"),
    MIRROR("server.host", server.host, STRING, NULL, "0.0.0.0"),
    MIRROR("server.port", server.port, INT, NULL, "9000"),
    MIRROR("server.api_key", server.api_key, STRING, NULL, "secret"),
    MIRROR("server.served_model_name", server.served_model_name, STRING, NULL, "tiny"),
    MIRROR("server.tokenizer", server.tokenizer, STRING, NULL, "models/tok"),
    MIRROR("server.max_queue", server.max_queue, INT, NULL, "8"),
    MIRROR("server.request_timeout_s", server.request_timeout_s, INT, NULL, "30"),
    MIRROR("server.max_body_bytes", server.max_body_bytes, INT, NULL, "4096"),
    MIRROR("server.per_request_spec_decode_metrics", server.per_request_spec_decode_metrics, STRING,
           NULL, "summary"),
};
#define N_MIRRORS (sizeof(mirrors) / sizeof(mirrors[0]))

static const struct mirror *mirror_of(const char *key)
{
    for (size_t i = 0; i < N_MIRRORS; i++)
        if (strcmp(mirrors[i].key, key) == 0)
            return &mirrors[i];
    return NULL;
}

static duet_config_type mirror_type(const struct mirror *m)
{
    switch (m->kind) {
    case MIRROR_INT:
        return DUET_CONFIG_TYPE_INT;
    case MIRROR_FLOAT:
        return DUET_CONFIG_TYPE_FLOAT;
    case MIRROR_BOOL:
        return DUET_CONFIG_TYPE_BOOL;
    case MIRROR_STRING:
    case MIRROR_ENUM:
        break;
    }
    return DUET_CONFIG_TYPE_STRING;
}

/* The string field, or the name of the enum field's value, of m in s. */
static const char *typed_string(const duet_settings *s, const struct mirror *m)
{
    const char *field = (const char *)s + m->offset, *str;
    size_t n = 0;
    int e;

    if (m->kind == MIRROR_STRING) {
        memcpy(&str, field, sizeof(str));
        return str;
    }
    memcpy(&e, field, sizeof(e));
    while (m->names[n])
        n++;
    ck_assert_msg(e >= 0 && (size_t)e < n, "%s: typed enum value %d is not a constant", m->key, e);
    return m->names[e];
}

/* Asserts that m's field of s holds what the by-name getter returns for m->key in cfg. */
static void expect_typed_equals_getter(const duet_config *cfg, const duet_settings *s,
                                       const struct mirror *m)
{
    const char *field = (const char *)s + m->offset, *want_s = NULL, *got_s;
    int64_t want_i = 0, got_i;
    double want_f = 0, got_f;
    bool want_b = false, got_b;

    switch (m->kind) {
    case MIRROR_STRING:
    case MIRROR_ENUM:
        got_s = typed_string(s, m);
        if (duet_config_get_string(cfg, m->key, &want_s) != DUET_STATUS_OK)
            ck_assert_msg(!got_s, "%s: typed \"%s\", the getter has no value", m->key, got_s);
        else
            ck_assert_msg(got_s && strcmp(got_s, want_s) == 0, "%s: typed \"%s\", getter \"%s\"",
                          m->key, got_s ? got_s : "(null)", want_s);
        break;
    case MIRROR_INT:
        memcpy(&got_i, field, sizeof(got_i));
        ck_assert_int_eq(duet_config_get_int(cfg, m->key, &want_i), DUET_STATUS_OK);
        ck_assert_msg(got_i == want_i, "%s: typed %lld, getter %lld", m->key, (long long)got_i,
                      (long long)want_i);
        break;
    case MIRROR_FLOAT:
        memcpy(&got_f, field, sizeof(got_f));
        if (duet_config_get_float(cfg, m->key, &want_f) == DUET_STATUS_NOT_FOUND) {
            ck_assert_msg(isnan(got_f), "%s: typed %.17g, the getter has no value", m->key, got_f);
            break;
        }
        ck_assert_msg(got_f == want_f, "%s: typed %.17g, getter %.17g", m->key, got_f, want_f);
        break;
    case MIRROR_BOOL:
        memcpy(&got_b, field, sizeof(got_b));
        ck_assert_int_eq(duet_config_get_bool(cfg, m->key, &want_b), DUET_STATUS_OK);
        ck_assert_msg(got_b == want_b, "%s: typed %d, getter %d", m->key, got_b, want_b);
        break;
    }
}

/* Asserts every typed field of validated cfg, and the fields that are not keys, against the
 * by-name readers. */
static void expect_typed_settings_agree(const duet_config *cfg)
{
    const duet_settings *s = duet_config_settings(cfg);

    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->struct_size, sizeof(duet_settings));
    for (size_t i = 0; i < N_MIRRORS; i++)
        expect_typed_equals_getter(cfg, s, &mirrors[i]);
    ck_assert_int_eq(s->speculative.enabled, duet_config_has_group(cfg, "speculative"));
    ck_assert_int_eq(s->cache.swap_space_gib_given,
                     duet_config_is_set(cfg, "cache.swap_space_gib"));
}

/* A validated configuration with every key set by --set to its mirror's other value. */
static duet_config *config_with_every_key_set(void)
{
    duet_config *cfg = new_config();

    for (size_t i = 0; i < N_MIRRORS; i++) {
        char *assignment = concat(mirrors[i].key, "=");
        char *full = concat(assignment, mirrors[i].other);

        ck_assert_msg(duet_config_set(cfg, full) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
        free(full);
        free(assignment);
    }
    ck_assert_msg(duet_config_validate(cfg) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
    return cfg;
}

START_TEST(test_every_schema_key_has_a_typed_field)
{
    size_t n = 0;
    duet_config_type type;

    for (const char *key; (key = duet_config_key_name(n)) != NULL; n++) {
        const struct mirror *m = mirror_of(key);

        ck_assert_msg(m, "schema key %s has no typed field (duet_settings) in the table here", key);
        ck_assert_int_eq(duet_config_key_type(key, &type), DUET_STATUS_OK);
        ck_assert_msg(type == mirror_type(m), "%s: schema type %d, typed field type %d", key, type,
                      mirror_type(m));
    }
    for (size_t i = 0; i < N_MIRRORS; i++)
        ck_assert_msg(duet_config_key_type(mirrors[i].key, &type) == DUET_STATUS_OK,
                      "typed field of %s: the schema has no such key", mirrors[i].key);
    ck_assert_uint_eq(n, N_MIRRORS);
    ck_assert_ptr_null(duet_config_key_name((size_t)-1));
}
END_TEST

START_TEST(test_typed_settings_hold_the_defaults_of_unset_keys)
{
    duet_config *cfg = new_config();
    const duet_settings *s;

    ck_assert_int_eq(duet_config_set(cfg, "model=models/m"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    expect_typed_settings_agree(cfg);
    s = duet_config_settings(cfg);
    ck_assert_ptr_null(s->plugin_dir);
    ck_assert_ptr_null(s->speculative.draft_model);
    ck_assert(!s->speculative.enabled);
    ck_assert(!s->cache.swap_space_gib_given);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_typed_settings_hold_every_value_set)
{
    duet_config *dflt = new_config(), *cfg = config_with_every_key_set();
    const duet_settings *s = duet_config_settings(cfg), *d;

    expect_typed_settings_agree(cfg);
    ck_assert(s->speculative.enabled);
    ck_assert(s->cache.swap_space_gib_given);
    /* Every field moved off its default: no two keys share a field, none is left unfilled. */
    ck_assert_int_eq(duet_config_set(dflt, "model=models/m"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_validate(dflt), DUET_STATUS_OK);
    d = duet_config_settings(dflt);
    for (size_t i = 0; i < N_MIRRORS; i++) {
        const struct mirror *m = &mirrors[i];
        const char *a = (const char *)s + m->offset, *b = (const char *)d + m->offset;

        ck_assert_msg(duet_config_is_set(cfg, m->key), "%s not set", m->key);
        if (m->kind == MIRROR_STRING || m->kind == MIRROR_ENUM) {
            const char *ts = typed_string(s, m), *td = typed_string(d, m);

            ck_assert_msg(ts && (!td || strcmp(ts, td) != 0), "%s: typed field kept its default",
                          m->key);
        } else {
            size_t size = m->kind == MIRROR_BOOL ? sizeof(bool) : sizeof(int64_t);

            ck_assert_msg(memcmp(a, b, size) != 0, "%s: typed field kept its default", m->key);
        }
    }
    duet_config_destroy(dflt);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_typed_settings_of_a_full_file_match_its_values)
{
    duet_config *cfg = load_good("good-full.cfg");

    ck_assert_msg(duet_config_validate(cfg) == DUET_STATUS_OK, "%s", duet_config_error(cfg));
    expect_typed_settings_agree(cfg);
    ck_assert_int_eq(duet_config_settings(cfg)->scheduler.policy, DUET_SCHED_POLICY_PRIORITY);
    ck_assert_int_eq(duet_config_settings(cfg)->speculative.acceptance, DUET_ACCEPTANCE_SYNTHETIC);
    duet_config_destroy(cfg);
}
END_TEST

START_TEST(test_typed_settings_exist_only_while_validated)
{
    duet_config *cfg = config_with_every_key_set();

    ck_assert_ptr_null(duet_config_settings(NULL));
    ck_assert_ptr_nonnull(duet_config_settings(cfg));
    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=3"), DUET_STATUS_BAD_CONFIG);
    ck_assert_ptr_nonnull(duet_config_settings(cfg)); /* a failed set changed nothing */
    ck_assert_int_eq(duet_config_set(cfg, "cache.block_size=64"), DUET_STATUS_OK);
    ck_assert_ptr_null(duet_config_settings(cfg));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_settings(cfg)->cache.block_size, 64);
    ck_assert_int_eq(duet_config_drop_group(cfg, "speculative"), DUET_STATUS_OK);
    ck_assert_ptr_null(duet_config_settings(cfg));
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    expect_typed_settings_agree(cfg);
    ck_assert(!duet_config_settings(cfg)->speculative.enabled);
    ck_assert_int_eq(duet_config_load_string(cfg, "model = \"m\";", "late.cfg"), DUET_STATUS_OK);
    ck_assert_ptr_null(duet_config_settings(cfg));
    duet_config_destroy(cfg);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

static void add(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);

    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}
#define ADD(s, test) add(s, #test, test)

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");

    ADD(s, test_defaults_are_returned_for_unset_keys);
    ADD(s, test_keys_without_value_are_not_found);
    ADD(s, test_unknown_key_is_not_found_by_readers);
    ADD(s, test_get_with_wrong_type_is_invalid_argument);
    ADD(s, test_key_type_reports_every_schema_key);
    ADD(s, test_minimal_file_loads_and_validates);
    ADD(s, test_full_file_sets_every_key);
    ADD(s, test_has_group_reports_groups_of_the_file);
    ADD(s, test_dropping_a_group_forgets_its_keys_and_keeps_the_others);
    ADD(s, test_source_names_file_and_line_of_each_key);
    ADD(s, test_load_string_names_messages_after_the_given_name);
    ADD(s, test_syntax_error_names_file_and_line);
    ADD(s, test_duplicate_setting_is_a_syntax_error);
    ADD(s, test_missing_file_is_an_io_error);
    ADD(s, test_fifo_and_oversized_configurations_are_refused_at_once);
    ADD(s, test_include_of_a_directory_is_refused_with_file_and_line);
    ADD(s, test_unknown_top_level_key_suggests_close_name);
    ADD(s, test_unknown_key_in_group_suggests_close_name);
    ADD(s, test_key_in_wrong_place_suggests_its_full_path);
    ADD(s, test_unknown_key_without_close_match_has_no_suggestion);
    ADD(s, test_unknown_group_is_rejected);
    ADD(s, test_string_where_int_is_due_is_rejected);
    ADD(s, test_float_where_int_is_due_is_rejected);
    ADD(s, test_int_where_bool_is_due_is_rejected);
    ADD(s, test_int_out_of_range_is_rejected);
    ADD(s, test_float_out_of_range_is_rejected);
    ADD(s, test_string_outside_allowed_set_lists_allowed_values);
    ADD(s, test_block_size_must_be_a_power_of_two);
    ADD(s, test_group_given_as_scalar_is_rejected);
    ADD(s, test_scalar_given_as_group_list_or_array_is_rejected);
    ADD(s, test_worker_must_be_a_plugin_name_or_a_path);
    ADD(s, test_failed_load_leaves_configuration_unchanged);
    ADD(s, test_second_load_is_refused);
    ADD(s, test_missing_model_fails_validation_without_a_line);
    ADD(s, test_speculative_group_without_draft_model_fails_at_the_group_line);
    ADD(s, test_batched_tokens_below_model_len_fails_validation);
    ADD(s, test_batched_tokens_below_model_len_is_allowed_with_chunked_prefill);
    ADD(s, test_batched_tokens_below_num_seqs_fails_validation);
    ADD(s, test_missing_model_without_file_has_no_location);
    ADD(s, test_override_applied_after_file_wins);
    ADD(s, test_override_applied_before_file_still_wins);
    ADD(s, test_override_creates_speculative_group_and_validate_requires_draft_model);
    ADD(s, test_override_unknown_key_suggests_close_name);
    ADD(s, test_override_without_equals_is_rejected);
    ADD(s, test_override_rejects_malformed_numbers);
    ADD(s, test_override_rejects_out_of_range_values);
    ADD(s, test_failed_override_keeps_the_previous_value);
    ADD(s, test_override_reads_libconfig_integer_forms);
    ADD(s, test_override_reads_booleans_in_every_spelling);
    ADD(s, test_override_reads_quoted_and_bare_strings);
    ADD(s, test_error_is_empty_after_a_successful_call);
    ADD(s, test_null_arguments_are_refused);
    ADD(s, test_print_round_trips_to_an_equal_configuration);
    ADD(s, test_print_round_trips_defaults_and_minimal_files);
    ADD(s, test_print_names_the_source_of_each_value);
    ADD(s, test_print_to_a_failing_stream_is_an_io_error);
    ADD(s, test_every_schema_key_has_a_typed_field);
    ADD(s, test_typed_settings_hold_the_defaults_of_unset_keys);
    ADD(s, test_typed_settings_hold_every_value_set);
    ADD(s, test_typed_settings_of_a_full_file_match_its_values);
    ADD(s, test_typed_settings_exist_only_while_validated);
    ADD(s, test_cpu_lists_in_cpulist_syntax_are_accepted);
    ADD(s, test_malformed_cpu_lists_are_refused_with_file_line_and_key);
    ADD(s, test_cpus_this_machine_lacks_are_refused);
    ADD(s, test_cpus_outside_the_affinity_mask_are_refused);
    ADD(s, test_cpu_lists_are_written_back_in_cpulist_syntax);
    ADD(s, test_synthetic_acceptance_takes_a_rate_in_zero_to_one);
    ADD(s, test_synthetic_rates_outside_zero_to_one_are_refused);
    ADD(s, test_synthetic_rate_without_synthetic_acceptance_is_refused);
    return s;
}

int main(void)
{
    return duet_test_run(config_suite());
}
