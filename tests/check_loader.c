/*
 * Plugin loader: search order, every refusal path with its message, and a full round through
 * the mock plugin's ABI (create, describe, cache_geometry, init_cache, execute, destroy).
 */
#include <duet/config.h>
#include <duet/loader.h>
#include <duet/plugin.h>

#include "check_util.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char plugin_dir[4096]; /* the build's tests/.libs */
static char srcdir[4096];     /* the source tree's top */
static duet_config *cfg;
static duet_host *host;
static char err[2048];

static void setup(void)
{
    const char *dir = getenv("DUET_TEST_PLUGIN_DIR");
    const char *src = getenv("DUET_TEST_SRCDIR");

    snprintf(plugin_dir, sizeof(plugin_dir), "%s", dir ? dir : "tests/.libs");
    snprintf(srcdir, sizeof(srcdir), "%s", src ? src : ".");
    unsetenv("DUET_PLUGIN_PATH");
    ck_assert_int_eq(duet_config_create(&cfg), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "model=models/mock"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "target.threads=3"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_validate(cfg), DUET_STATUS_OK);
    ck_assert_int_eq(duet_host_create(cfg, DUET_LOG_ERROR, &host), DUET_STATUS_OK);
    err[0] = '\0';
}

static void teardown(void)
{
    duet_host_destroy(host);
    duet_config_destroy(cfg);
}

/* Loads "duet_NAME_worker.so" from the build's plugin directory; returns its status. */
static duet_status load_named(const char *name, duet_plugin **out)
{
    return duet_plugin_load(name, plugin_dir, duet_host_services_of(host), out, err, sizeof(err));
}

static void path_of(const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/duet_%s_worker.so", plugin_dir, name);
}

/* Standard error into a temporary file between capture_begin and capture_end, which reads
 * what was written into buf[n]. */
struct capture {
    FILE *file;
    int saved;
};

static void capture_begin(struct capture *c)
{
    c->file = tmpfile();
    ck_assert_ptr_nonnull(c->file);
    c->saved = dup(STDERR_FILENO);
    fflush(stderr);
    dup2(fileno(c->file), STDERR_FILENO);
}

static void capture_end(struct capture *c, char *buf, size_t n)
{
    size_t got;

    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    rewind(c->file);
    got = fread(buf, 1, n - 1, c->file);
    buf[got] = '\0';
    fclose(c->file);
    ck_assert_uint_gt(got, 0);
}

/* The refusal of a broken fixture: status, and a message naming the file and `needle`. */
static void assert_refused(const char *name, duet_status want, const char *needle)
{
    duet_plugin *p = (duet_plugin *)0x1;
    char path[4200];

    path_of(name, path, sizeof(path));
    ck_assert_int_eq(load_named(name, &p), want);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err, path) != NULL, "message '%s' does not name %s", err, path);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(test_missing_file_is_refused_with_its_path)
{
    duet_plugin *p;

    ck_assert_int_eq(
        duet_plugin_load("/nonexistent/duet_x_worker.so", NULL, NULL, &p, err, sizeof(err)),
        DUET_STATUS_NOT_FOUND);
    ck_assert_ptr_null(p);
    ck_assert_str_eq(err, "plugin /nonexistent/duet_x_worker.so: No such file or directory");
}
END_TEST

START_TEST(test_unknown_name_lists_every_directory_tried)
{
    duet_plugin *p;

    setenv("DUET_PLUGIN_PATH", "/first:/second", 1);
    ck_assert_int_eq(load_named("nosuch", &p), DUET_STATUS_NOT_FOUND);
    ck_assert_msg(strstr(err,
                         "plugin 'nosuch': duet_nosuch_worker.so not found (tried "
                         "/first/duet_nosuch_worker.so, /second/duet_nosuch_worker.so, ") == err,
                  "%s", err);
    ck_assert_ptr_nonnull(strstr(err, duet_plugin_install_dir()));
    ck_assert_ptr_nonnull(strstr(err, plugin_dir));
}
END_TEST

START_TEST(test_name_with_bad_characters_is_refused)
{
    duet_plugin *p;

    ck_assert_int_eq(load_named("Mock", &p), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "plugin 'Mock': a name is made of a-z, 0-9 and '_'"));
}
END_TEST

START_TEST(test_plugin_path_env_comes_before_plugin_dir)
{
    char *found = NULL;
    char want[4200];

    /* Both directories hold duet_mock_worker.so; the environment's copy must win. */
    setenv("DUET_PLUGIN_PATH", plugin_dir, 1);
    ck_assert_int_eq(duet_plugin_find("mock", "/nonexistent", &found, err, sizeof(err)),
                     DUET_STATUS_OK);
    path_of("mock", want, sizeof(want));
    ck_assert_str_eq(found, want);
    free(found);
    setenv("DUET_PLUGIN_PATH", "/nonexistent-a::/nonexistent-b", 1);
    ck_assert_int_eq(duet_plugin_find("mock", plugin_dir, &found, err, sizeof(err)),
                     DUET_STATUS_OK);
    ck_assert_str_eq(found, want);
    free(found);
}
END_TEST

START_TEST(test_value_with_slash_is_a_path)
{
    duet_plugin *p;
    char path[4200];

    path_of("mock", path, sizeof(path));
    ck_assert_int_eq(
        duet_plugin_load(path, "/nonexistent", duet_host_services_of(host), &p, err, sizeof(err)),
        DUET_STATUS_OK);
    ck_assert_str_eq(duet_plugin_path(p), path);
    ck_assert_str_eq(duet_plugin_table(p)->name, "mock");
    duet_plugin_unload(p);
}
END_TEST

START_TEST(test_text_file_is_not_a_shared_object)
{
    duet_plugin *p;
    char path[4200];

    snprintf(path, sizeof(path), "%s/tests/fixtures/duet_notelf_worker.so", srcdir);
    ck_assert_int_eq(duet_plugin_load(path, NULL, NULL, &p, err, sizeof(err)),
                     DUET_STATUS_BAD_FORMAT);
    ck_assert_msg(strstr(err, path) == err, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, ": cannot load as a shared object: "));
}
END_TEST

/* Copies the first n bytes of the mock plugin to dir/duet_trunc_worker.so. */
static void truncated_copy(const char *dir, size_t n, char *out, size_t out_size)
{
    char src[4200];
    FILE *in, *o;
    char *buf = malloc(n ? n : 1);

    path_of("mock", src, sizeof(src));
    snprintf(out, out_size, "%s/duet_trunc_worker.so", dir);
    in = fopen(src, "rb");
    o = fopen(out, "wb");
    ck_assert(buf && in && o);
    ck_assert_uint_eq(fread(buf, 1, n, in), n);
    ck_assert_uint_eq(fwrite(buf, 1, n, o), n);
    fclose(in);
    fclose(o);
    free(buf);
}

/* dlopen maps a truncated ELF file and dies of SIGBUS touching it: the loader checks the file
 * first. Cut at the ELF header, in the program headers, in the first segment, and short of the
 * section headers at the end. */
START_TEST(test_truncated_plugin_is_refused_by_name)
{
    char dir[] = "/tmp/duet-loader-XXXXXX", src[4200], path[4300];
    struct stat st;
    size_t cuts[6];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    path_of("mock", src, sizeof(src));
    ck_assert_int_eq(stat(src, &st), 0);
    cuts[0] = 10, cuts[1] = 100, cuts[2] = 300, cuts[3] = 5000;
    cuts[4] = (size_t)st.st_size / 2, cuts[5] = (size_t)st.st_size - 64;
    for (int i = 0; i < 6; i++) {
        duet_plugin *p = (duet_plugin *)0x1;

        truncated_copy(dir, cuts[i], path, sizeof(path));
        ck_assert_int_eq(duet_plugin_load(path, NULL, NULL, &p, err, sizeof(err)),
                         DUET_STATUS_BAD_FORMAT);
        ck_assert_ptr_null(p);
        ck_assert_msg(strstr(err, path) == err && strstr(err, "cannot load as a shared object"),
                      "cut at %zu: %s", cuts[i], err);
        unlink(path);
    }
    /* A directory named like a plugin is no plugin either. */
    snprintf(path, sizeof(path), "%s/duet_dir_worker.so", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(duet_plugin_load(path, NULL, NULL, (duet_plugin **)&cuts, err, sizeof(err)),
                     DUET_STATUS_BAD_FORMAT);
    ck_assert_msg(strstr(err, "not a regular file") != NULL, "%s", err);
    rmdir(path);
    rmdir(dir);
}
END_TEST

/* A DUET_PLUGIN_PATH entry that cannot be searched is named in a warning when the plugin then
 * comes from a later directory, and in the error when it is found nowhere. */
START_TEST(test_unusable_search_directory_is_named)
{
    char file[] = "/tmp/duet-loader-file-XXXXXX", env[8400], logged[1024] = "";
    duet_host *warn_host;
    duet_plugin *p = NULL;
    struct capture cap;
    int fd = mkstemp(file);

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(duet_host_create(cfg, DUET_LOG_WARN, &warn_host), DUET_STATUS_OK);
    snprintf(env, sizeof(env), "/nonexistent-plugins:%s", file);
    setenv("DUET_PLUGIN_PATH", env, 1);
    capture_begin(&cap);
    ck_assert_int_eq(duet_plugin_load("mock", plugin_dir, duet_host_services_of(warn_host), &p, err,
                                      sizeof(err)),
                     DUET_STATUS_OK);
    capture_end(&cap, logged, sizeof(logged));
    ck_assert_msg(strstr(logged, "duet: warn: [loader] plugin 'mock': skipped "
                                 "/nonexistent-plugins (No such file or directory), ") &&
                      strstr(logged, file) && strstr(logged, "(not a directory); loading "),
                  "%s", logged);
    duet_plugin_unload(p);
    ck_assert_int_eq(
        duet_plugin_load("mock", NULL, duet_host_services_of(warn_host), &p, err, sizeof(err)),
        DUET_STATUS_NOT_FOUND);
    ck_assert_msg(strstr(err, "unusable directories: /nonexistent-plugins"), "%s", err);
    duet_host_destroy(warn_host);
    unlink(file);
}
END_TEST

START_TEST(test_missing_query_symbol_is_refused)
{
    assert_refused("nosymbol", DUET_STATUS_NOT_FOUND,
                   ": not a duet plugin: symbol 'duet_plugin_query' not found");
}
END_TEST

START_TEST(test_query_returning_null_is_refused)
{
    assert_refused("querynull", DUET_STATUS_ABI_MISMATCH,
                   ": duet_plugin_query() returned NULL for host ABI major 1");
}
END_TEST

START_TEST(test_wrong_major_is_refused_with_both_values)
{
    assert_refused("badmajor", DUET_STATUS_ABI_MISMATCH,
                   ": ABI major version mismatch: expected 1, found 2");
}
END_TEST

START_TEST(test_wrong_fingerprint_is_refused_with_both_values)
{
    char want[128];

    snprintf(want, sizeof(want),
             ": ABI layout fingerprint mismatch: expected 0x%016llx, found 0x%016llx",
             (unsigned long long)DUET_ABI_FINGERPRINT,
             (unsigned long long)(DUET_ABI_FINGERPRINT ^ 0x5a5a5a5aull));
    assert_refused("badfingerprint", DUET_STATUS_ABI_MISMATCH, want);
}
END_TEST

START_TEST(test_small_struct_size_is_refused)
{
    char want[128];

    snprintf(want, sizeof(want), ": plugin table struct_size is %zu, expected at least %zu",
             offsetof(duet_worker_plugin, execute),
             offsetof(duet_worker_plugin, last_error) + sizeof(void *));
    assert_refused("small", DUET_STATUS_ABI_MISMATCH, want);
}
END_TEST

START_TEST(test_null_function_pointer_is_refused_by_name)
{
    assert_refused("nullexecute", DUET_STATUS_ABI_MISMATCH,
                   ": required plugin table member 'execute' is NULL");
}
END_TEST

START_TEST(test_null_name_is_refused)
{
    assert_refused("nullname", DUET_STATUS_ABI_MISMATCH,
                   ": required plugin table member 'name' is NULL or empty");
}
END_TEST

START_TEST(test_mock_table_is_accepted_and_unloads)
{
    duet_plugin *p;

    for (int i = 0; i < 3; i++) { /* load, unload, load again: nothing stays behind */
        ck_assert_int_eq(load_named("mock", &p), DUET_STATUS_OK);
        ck_assert_uint_eq(duet_plugin_table(p)->abi_major, DUET_ABI_MAJOR);
        ck_assert_uint_eq(duet_plugin_table(p)->fingerprint, DUET_ABI_FINGERPRINT);
        ck_assert_str_eq(duet_plugin_table(p)->version, "1.0.0");
        duet_plugin_unload(p);
    }
    duet_plugin_unload(NULL);
}
END_TEST

START_TEST(test_settings_the_plugin_lacks_are_refused)
{
    duet_plugin *p;

    ck_assert_int_eq(load_named("mock", &p), DUET_STATUS_OK);
    /* dtype and weights default to auto, which any plugin takes */
    ck_assert_int_eq(
        duet_plugin_check_settings(p, cfg, "target", DUET_ROLE_TARGET, err, sizeof(err)),
        DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "target.weights=bf16"), DUET_STATUS_OK);
    ck_assert_int_eq(
        duet_plugin_check_settings(p, cfg, "target", DUET_ROLE_TARGET, err, sizeof(err)),
        DUET_STATUS_UNSUPPORTED); /* the mock has f32 */
    ck_assert_msg(strstr(err, "--set: target.weights: plugin ") == err, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "cannot use weights bf16 (its capabilities: "
                                      "target,draft,swap,f32,penalties)"));
    ck_assert_int_eq(duet_config_set(cfg, "target.weights=auto"), DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "target.dtype=bf16"), DUET_STATUS_OK);
    ck_assert_int_eq(
        duet_plugin_check_settings(p, cfg, "target", DUET_ROLE_TARGET, err, sizeof(err)),
        DUET_STATUS_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "cannot use dtype bf16"));
    ck_assert_int_eq(duet_config_set(cfg, "target.dtype=f32"), DUET_STATUS_OK);
    ck_assert_int_eq(
        duet_plugin_check_settings(p, cfg, "target", DUET_ROLE_TARGET, err, sizeof(err)),
        DUET_STATUS_OK);
    ck_assert_int_eq(duet_config_set(cfg, "target.tensor_parallel=2"), DUET_STATUS_OK);
    ck_assert_int_eq(
        duet_plugin_check_settings(p, cfg, "target", DUET_ROLE_TARGET, err, sizeof(err)),
        DUET_STATUS_UNSUPPORTED);
    ck_assert_msg(strstr(err, "--set") == err && strstr(err, "cannot run tensor parallel"), "%s",
                  err);
    duet_plugin_unload(p);
}
END_TEST

START_TEST(test_caps_are_named_and_truncated_safely)
{
    char buf[16];

    ck_assert_uint_eq(
        duet_caps_str(DUET_CAP_TARGET | DUET_CAP_INT4 | (1ull << 40), buf, sizeof(buf)),
        strlen("target,int4,bit40"));
    ck_assert_str_eq(buf, "target,int4,bit");
    ck_assert_uint_eq(duet_caps_str(0, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(test_host_services_read_the_config_and_filter_logs)
{
    const duet_host_services *hs = duet_host_services_of(host);
    const char *str = NULL;
    int64_t threads = 0;
    double fraction = 0;
    bool prefix = true;
    char logged[512] = "";
    struct capture cap;

    ck_assert_uint_eq(hs->struct_size, sizeof(duet_host_services));
    ck_assert_uint_eq(hs->abi_major, DUET_ABI_MAJOR);
    ck_assert_int_eq(hs->config_get_string(hs->ctx, "target.worker", &str), DUET_STATUS_OK);
    ck_assert_str_eq(str, "cpu"); /* the default */
    ck_assert_int_eq(hs->config_get_int(hs->ctx, "target.threads", &threads), DUET_STATUS_OK);
    ck_assert_int_eq(threads, 3); /* set in setup() */
    ck_assert_int_eq(hs->config_get_float(hs->ctx, "cache.memory_fraction", &fraction),
                     DUET_STATUS_OK);
    ck_assert_double_eq(fraction, 0.9);
    ck_assert_int_eq(hs->config_get_bool(hs->ctx, "cache.prefix_caching", &prefix), DUET_STATUS_OK);
    ck_assert(!prefix);
    ck_assert_int_eq(hs->config_get_int(hs->ctx, "target.worker", &threads),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(hs->config_get_int(hs->ctx, "target.no_such_key", &threads),
                     DUET_STATUS_NOT_FOUND);
    /* The host was created at level error: a warning is dropped, an error is written. */
    capture_begin(&cap);
    hs->log(hs->ctx, DUET_LOG_WARN, "mock", "dropped");
    hs->log(hs->ctx, DUET_LOG_ERROR, "mock", "kept");
    capture_end(&cap, logged, sizeof(logged));
    ck_assert_str_eq(logged, "duet: error: [mock] kept\n");
}
END_TEST

/* ---- a full round through the ABI with the mock worker ---------------------------------- */

struct mock_round {
    duet_plugin *plugin;
    const duet_worker_plugin *t;
    duet_worker *w;
    duet_model_info info;
};

static void mock_open(struct mock_round *m, duet_worker_role role, uint32_t blocks)
{
    duet_worker_params params = {.struct_size = sizeof(params),
                                 .role = role,
                                 .model_dir = "models/mock",
                                 .section = "target",
                                 .host = duet_host_services_of(host)};
    duet_cache_config cc = {
        .struct_size = sizeof(cc), .block_size = 4, .num_blocks = blocks, .num_swap_blocks = 4};

    ck_assert_int_eq(load_named("mock", &m->plugin), DUET_STATUS_OK);
    m->t = duet_plugin_table(m->plugin);
    ck_assert_int_eq(m->t->create(&params, &m->w, err, sizeof(err)), DUET_STATUS_OK);
    m->info.struct_size = sizeof(m->info);
    ck_assert_int_eq(m->t->describe(m->w, &m->info), DUET_STATUS_OK);
    ck_assert_int_eq(m->t->init_cache(m->w, &cc), DUET_STATUS_OK);
}

static void mock_close(struct mock_round *m)
{
    m->t->destroy(m->w);
    duet_plugin_unload(m->plugin);
}

/* Runs one sequence; returns its rows' tokens in out_tokens. */
static duet_status run_one(struct mock_round *m, const duet_seq *s, const duet_block_pair *copy,
                           uint32_t n_copy, int32_t *out_tokens, uint32_t n_rows, float *probs)
{
    duet_batch b = {.struct_size = sizeof(b),
                    .flags = probs ? DUET_BATCH_WANT_PROBS : 0,
                    .n_copy = n_copy,
                    .n_seqs = 1,
                    .seq_size = sizeof(duet_seq),
                    .copy = copy,
                    .seqs = s};
    duet_batch_output o = {
        .struct_size = sizeof(o), .n_rows = n_rows, .tokens = out_tokens, .probs = probs};

    return m->t->execute(m->w, &b, &o);
}

START_TEST(test_mock_worker_runs_prefill_decode_and_drafting)
{
    struct mock_round m;
    const int32_t prompt[6] = {1, 5, 9, 13, 17, 21};
    const uint32_t table[3] = {2, 0, 1};
    duet_cache_geometry g = {.struct_size = sizeof(g), .block_size = 4, .budget_bytes = 1 << 20};
    duet_seq s = {.seq_id = 7,
                  .tokens = prompt,
                  .n_tokens = 6,
                  .pos = 0,
                  .block_table = table,
                  .n_blocks = 3,
                  .n_outputs = 1};
    int32_t first[1], again[1], drafted[3];
    float probs[3 * 97];

    mock_open(&m, DUET_ROLE_DRAFT, 8);
    ck_assert_uint_eq(m.info.vocab_size, 97);
    ck_assert_int_eq(m.t->cache_geometry(m.w, &g), DUET_STATUS_OK);
    ck_assert_uint_eq(g.num_blocks, (1u << 20) / g.block_bytes);
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, first, 1, NULL), DUET_STATUS_OK);
    /* Decoding the same last token at the same position reproduces the prefill's output. */
    s.tokens = &prompt[5], s.n_tokens = 1, s.pos = 5;
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, again, 1, NULL), DUET_STATUS_OK);
    ck_assert_int_eq(again[0], first[0]);
    /* Drafting 3 tokens: the first equals the decode's, then two autoregressive steps. */
    s.n_draft_steps = 2;
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, drafted, 3, probs), DUET_STATUS_OK);
    ck_assert_int_eq(drafted[0], first[0]);
    for (int r = 0; r < 3; r++)
        ck_assert_float_eq(probs[r * 97 + drafted[r]], 1.0f); /* greedy rows are one-hot */
    mock_close(&m);
}
END_TEST

START_TEST(test_mock_worker_reads_kv_through_block_table_and_copies)
{
    struct mock_round m;
    const int32_t prompt[4] = {3, 4, 5, 6}, last = 6;
    const uint32_t table_a[1] = {0}, table_b[2] = {5, 1};
    const duet_block_pair copy = {.src = 0, .dst = 5};
    duet_seq s = {
        .tokens = prompt, .n_tokens = 4, .block_table = table_a, .n_blocks = 1, .n_outputs = 1};
    int32_t a[1], b[1], c[1];

    mock_open(&m, DUET_ROLE_TARGET, 8);
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, a, 1, NULL), DUET_STATUS_OK);
    /* Without the copy, block 5 is empty: position 2 reads no token, so the output differs
     * (for this mock's hash; checked rather than assumed). */
    s.tokens = &last, s.n_tokens = 1, s.pos = 3, s.block_table = table_b, s.n_blocks = 2;
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, b, 1, NULL), DUET_STATUS_OK);
    ck_assert_int_ne(b[0], a[0]);
    ck_assert_int_eq(run_one(&m, &s, &copy, 1, c, 1, NULL), DUET_STATUS_OK);
    ck_assert_int_eq(c[0], a[0]);
    mock_close(&m);
}
END_TEST

START_TEST(test_mock_worker_reports_bad_batches)
{
    struct mock_round m;
    const int32_t bad_token[1] = {97};
    const int32_t ok_token[1] = {5};
    const uint32_t table[1] = {0};
    duet_seq s = {
        .tokens = bad_token, .n_tokens = 1, .block_table = table, .n_blocks = 1, .n_outputs = 1};
    int32_t out[1];

    mock_open(&m, DUET_ROLE_TARGET, 2);
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, out, 1, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(m.t->last_error(m.w), "seq 0: token id 97 out of the vocabulary (97)");
    s.tokens = ok_token, s.pos = 4;
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, out, 1, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(m.t->last_error(m.w),
                     "seq 0: block table of 1 blocks does not cover position 4");
    s.pos = 0, s.n_draft_steps = 1; /* a target does not draft */
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, out, 2, NULL), DUET_STATUS_INVALID_ARGUMENT);
    s.n_draft_steps = 0;
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, out, 0, NULL), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(m.t->last_error(m.w), "execute: 1 output rows needed, 0 given");
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, out, 1, NULL), DUET_STATUS_OK);
    ck_assert_str_eq(m.t->last_error(m.w), "");
    mock_close(&m);
}
END_TEST

START_TEST(test_mock_sampling_depends_on_seed_and_position_only)
{
    struct mock_round m;
    const int32_t prompt[3] = {8, 9, 10};
    const uint32_t table[1] = {0};
    duet_seq s = {.tokens = prompt,
                  .n_tokens = 3,
                  .block_table = table,
                  .n_blocks = 1,
                  .n_outputs = 3,
                  .sampling = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 20, .seed = 42}};
    int32_t x[3], y[3];
    float probs[3 * 97];

    mock_open(&m, DUET_ROLE_TARGET, 2);
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, x, 3, probs), DUET_STATUS_OK);
    ck_assert_int_eq(run_one(&m, &s, NULL, 0, y, 3, NULL), DUET_STATUS_OK);
    for (int r = 0; r < 3; r++) {
        double sum = 0;
        int nonzero = 0;

        ck_assert_int_eq(x[r], y[r]);
        ck_assert_float_gt(probs[r * 97 + x[r]], 0.0f);
        for (int v = 0; v < 97; v++) {
            sum += probs[r * 97 + v];
            nonzero += probs[r * 97 + v] > 0;
        }
        ck_assert_double_eq_tol(sum, 1.0, 1e-5);
        ck_assert_int_le(nonzero, 20); /* top-k */
    }
    mock_close(&m);
}
END_TEST

static Suite *loader_suite(void)
{
    Suite *s = suite_create("loader");
    const struct duet_test_case cases[] = {
        {"missing file", test_missing_file_is_refused_with_its_path},
        {"search", test_unknown_name_lists_every_directory_tried},
        {"bad name", test_name_with_bad_characters_is_refused},
        {"search order", test_plugin_path_env_comes_before_plugin_dir},
        {"path", test_value_with_slash_is_a_path},
        {"not elf", test_text_file_is_not_a_shared_object},
        {"no symbol", test_missing_query_symbol_is_refused},
        {"query null", test_query_returning_null_is_refused},
        {"major", test_wrong_major_is_refused_with_both_values},
        {"fingerprint", test_wrong_fingerprint_is_refused_with_both_values},
        {"struct size", test_small_struct_size_is_refused},
        {"null pointer", test_null_function_pointer_is_refused_by_name},
        {"null name", test_null_name_is_refused},
        {"accept", test_mock_table_is_accepted_and_unloads},
        {"settings", test_settings_the_plugin_lacks_are_refused},
        {"caps", test_caps_are_named_and_truncated_safely},
        {"host services", test_host_services_read_the_config_and_filter_logs},
        {"truncated", test_truncated_plugin_is_refused_by_name},
        {"unusable dir", test_unusable_search_directory_is_named},
        {"mock round", test_mock_worker_runs_prefill_decode_and_drafting},
        {"mock kv", test_mock_worker_reads_kv_through_block_table_and_copies},
        {"mock errors", test_mock_worker_reports_bad_batches},
        {"mock sampling", test_mock_sampling_depends_on_seed_and_position_only},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), setup, teardown, 0);
    return s;
}

int main(void)
{
    return duet_test_run(loader_suite());
}
