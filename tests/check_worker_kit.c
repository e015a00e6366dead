/*
 * check_worker_kit — the worker kit (worker_kit/worker_kit.h) on its own: the query and its
 * details, typed settings through a host, the create / cache argument checks, the row plan of
 * execute (feed and drafting steps, the non-finite mark), the top lists and the arena. The
 * workers that use it are tested through the conformance suite.
 */
#include "worker_kit.h"

#include "check_util.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a host whose settings are a small table ---------------------------------------------- */

struct setting {
    const char *key;
    char type; /* 's', 'i', 'f', 'b' */
    const char *s;
    int64_t i;
    double f;
    bool b;
};

static struct setting table[] = {
    {"target.device", 's', "cuda:1", 0, 0, false},
    {"target.dtype", 's', "bf16", 0, 0, false},
    {"target.weights", 's', "int4", 0, 0, false},
    {"target.threads", 'i', NULL, 3, 0, false},
    {"target.tensor_parallel", 'i', NULL, 2, 0, false},
    {"target.group_size", 'i', NULL, 64, 0, false},
    {"target.zero_point", 'b', NULL, 0, 0, true},
    {"target.quantize_lm_head", 'b', NULL, 0, 0, false},
    {"cache.cpu_kv_space_gib", 'f', NULL, 0, 1.5, false},
    {"cache.memory_fraction", 'f', NULL, 0, 0.75, false},
};
static const char *hidden_key; /* a key the host pretends not to know */

static const struct setting *find(const char *key, char type, duet_status *st)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(table[i].key, key) != 0 || (hidden_key && strcmp(hidden_key, key) == 0))
            continue;
        *st = table[i].type == type ? DUET_STATUS_OK : DUET_STATUS_INVALID_ARGUMENT;
        return *st ? NULL : &table[i];
    }
    *st = DUET_STATUS_NOT_FOUND;
    return NULL;
}

static duet_status get_string(void *ctx, const char *key, const char **out)
{
    duet_status st;
    const struct setting *s = find(key, 's', &st);

    (void)ctx;
    if (s)
        *out = s->s;
    return st;
}

static duet_status get_int(void *ctx, const char *key, int64_t *out)
{
    duet_status st;
    const struct setting *s = find(key, 'i', &st);

    (void)ctx;
    if (s)
        *out = s->i;
    return st;
}

static duet_status get_float(void *ctx, const char *key, double *out)
{
    duet_status st;
    const struct setting *s = find(key, 'f', &st);

    (void)ctx;
    if (s)
        *out = s->f;
    return st;
}

static duet_status get_bool(void *ctx, const char *key, bool *out)
{
    duet_status st;
    const struct setting *s = find(key, 'b', &st);

    (void)ctx;
    if (s)
        *out = s->b;
    return st;
}

static const duet_host_services host = {
    .struct_size = sizeof(duet_host_services),
    .abi_major = DUET_ABI_MAJOR,
    .abi_minor = DUET_ABI_MINOR,
    .config_get_string = get_string,
    .config_get_int = get_int,
    .config_get_float = get_float,
    .config_get_bool = get_bool,
};

START_TEST(test_settings_are_read_typed_and_an_unknown_key_is_named)
{
    duet_kit_settings k;
    duet_kit_error e = {""};

    hidden_key = NULL;
    ck_assert_int_eq(duet_kit_settings_read(&host, "target", &k, "kit", &e), DUET_STATUS_OK);
    ck_assert_str_eq(k.section, "target");
    ck_assert_str_eq(k.device, "cuda:1");
    ck_assert_str_eq(k.dtype, "bf16");
    ck_assert_str_eq(k.weights, "int4");
    ck_assert_int_eq(k.threads, 3);
    ck_assert_int_eq(k.tensor_parallel, 2);
    ck_assert_int_eq(k.group_size, 64);
    ck_assert(k.zero_point && !k.quantize_lm_head);
    ck_assert_double_eq(k.cpu_kv_space_gib, 1.5);
    ck_assert_double_eq(k.memory_fraction, 0.75);
    /* a renamed key is an error naming it, never a default of the worker's own */
    hidden_key = "target.group_size";
    ck_assert_int_eq(duet_kit_settings_read(&host, "target", &k, "kit", &e), DUET_STATUS_NOT_FOUND);
    ck_assert_msg(strstr(e.msg, "kit: cannot read setting target.group_size") == e.msg, "%s",
                  e.msg);
    hidden_key = NULL;
    /* another section's keys are not there at all */
    ck_assert_int_eq(duet_kit_settings_read(&host, "speculative", &k, "kit", &e),
                     DUET_STATUS_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(e.msg, "speculative.device"));
}
END_TEST

/* ---- the query and its details -------------------------------------------------------------- */

static int fills;

static void fill(char *text, size_t size)
{
    fills++;
    snprintf(text, size, "kernels of test %d", fills);
}

START_TEST(test_query_checks_the_major_and_writes_details_once)
{
    static const duet_worker_plugin plugin_table = {DUET_KIT_PLUGIN_HEADER("kit", "0.1")};
    static duet_kit_details details = DUET_KIT_DETAILS_INIT;

    fills = 0;
    ck_assert_ptr_eq(duet_kit_query(&plugin_table, DUET_ABI_MAJOR, &details, fill), &plugin_table);
    ck_assert_ptr_null(duet_kit_query(&plugin_table, DUET_ABI_MAJOR + 1, &details, fill));
    ck_assert_ptr_eq(duet_kit_query(&plugin_table, DUET_ABI_MAJOR, &details, fill), &plugin_table);
    ck_assert_int_eq(fills, 1);
    ck_assert_str_eq(details.text, "kernels of test 1");
    ck_assert_uint_eq(plugin_table.struct_size, sizeof(duet_worker_plugin));
    ck_assert_uint_eq(plugin_table.fingerprint, DUET_ABI_FINGERPRINT);
    ck_assert_str_eq(plugin_table.name, "kit");
    ck_assert_ptr_eq(duet_kit_query(&plugin_table, DUET_ABI_MAJOR, NULL, NULL), &plugin_table);
}
END_TEST

/* ---- create, describe and the cache checks --------------------------------------------------- */

static duet_status fill_info(const duet_model *m, duet_model_info *info)
{
    (void)m;
    info->vocab_size = 77;
    return DUET_STATUS_OK;
}

START_TEST(test_create_describe_and_cache_arguments_are_checked)
{
    duet_worker_params p = {sizeof(p), DUET_ROLE_TARGET, "/m", "target", &host};
    duet_cache_geometry g = {sizeof(g), 0, 0, 0, 0};
    duet_cache_config c = {sizeof(c), 16, 0, 0, 0, 0};
    duet_model_info info = {.struct_size = sizeof(info)};
    duet_kit_error e = {""};
    char err[128];

    ck_assert_int_eq(duet_kit_check_params(&p, 16, "kit", err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_int_eq(duet_kit_check_params(&p, 6, "kit", err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT); /* "target" does not fit 6 bytes */
    ck_assert_str_eq(err, "kit: create: incomplete parameters");
    p.host = NULL;
    ck_assert_int_eq(duet_kit_check_params(&p, 16, "kit", err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_kit_describe(fill_info, NULL, 1234, &info, "kit", &e), DUET_STATUS_OK);
    ck_assert_uint_eq(info.vocab_size, 77);
    ck_assert_uint_eq(info.weight_bytes, 1234);
    info.struct_size = offsetof(duet_model_info, weight_bytes); /* an older host's struct */
    info.weight_bytes = 5;
    ck_assert_int_eq(duet_kit_describe(fill_info, NULL, 1234, &info, "kit", &e), DUET_STATUS_OK);
    ck_assert_uint_eq(info.weight_bytes, 5);
    ck_assert_int_eq(duet_kit_check_geometry(&g, "kit", &e), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(e.msg, "kit: cache_geometry: block_size must be 1 .. 65536");
    g.block_size = 65536;
    ck_assert_int_eq(duet_kit_check_geometry(&g, "kit", &e), DUET_STATUS_OK);
    ck_assert_int_eq(duet_kit_check_cache_config(&c, false, "kit", &e),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(e.msg, "kit: init_cache: num_blocks is 0");
    c.num_blocks = 8;
    ck_assert_int_eq(duet_kit_check_cache_config(&c, true, "kit", &e),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(e.msg, "kit: init_cache: the cache already exists");
    ck_assert_int_eq(duet_kit_check_cache_config(&c, false, "kit", &e), DUET_STATUS_OK);
}
END_TEST

/* ---- the row plan ------------------------------------------------------------------------- */

/* Sequence 0: a prefill chunk of 3 with one output and 2 drafting steps at position 10; sequence
 * 1: scoring, 2 fed tokens both outputs at position 4. */
static const int32_t toks0[] = {11, 12, 13}, toks1[] = {21, 22};

static void make_batch(duet_seq *seqs, duet_batch *b, uint32_t flags)
{
    memset(seqs, 0, 2 * sizeof(*seqs));
    seqs[0] = (duet_seq){.seq_id = 100,
                         .tokens = toks0,
                         .n_tokens = 3,
                         .pos = 10,
                         .n_outputs = 1,
                         .n_draft_steps = 2};
    seqs[1] = (duet_seq){.seq_id = 101, .tokens = toks1, .n_tokens = 2, .pos = 4, .n_outputs = 2};
    *b = (duet_batch){.struct_size = sizeof(*b),
                      .flags = flags,
                      .n_seqs = 2,
                      .seq_size = sizeof(duet_seq),
                      .seqs = seqs};
}

static void assert_row(const duet_kit_row *r, const duet_seq *q, uint32_t fed, int32_t next,
                       int64_t out_row, int64_t fed_row, uint64_t pos)
{
    ck_assert_ptr_eq(r->q, q);
    ck_assert_uint_eq(r->fed, fed);
    ck_assert_int_eq(r->next, next);
    ck_assert_int_eq(r->out_row, out_row);
    ck_assert_int_eq(r->fed_row, fed_row);
    ck_assert_uint_eq(r->pos, pos);
}

START_TEST(test_feed_rows_are_the_outputs_and_with_prompt_logprobs_every_fed_token)
{
    duet_kit_rows r = {0};
    duet_seq seqs[2];
    duet_batch b;

    make_batch(seqs, &b, 0);
    ck_assert(duet_kit_rows_reserve(&r, 2, 5));
    ck_assert_uint_eq(duet_kit_rows_feed(&r, &b), 3);
    ck_assert_uint_eq(r.row_base[0], 0); /* 1 output + 2 drafts */
    ck_assert_uint_eq(r.row_base[1], 3);
    ck_assert_uint_eq(r.max_steps, 2);
    assert_row(&r.rows[0], &seqs[0], 2, -1, 0, -1, 13);
    assert_row(&r.rows[1], &seqs[1], 3, 22, 3, -1, 5);
    assert_row(&r.rows[2], &seqs[1], 4, -1, 4, -1, 6);
    make_batch(seqs, &b, DUET_BATCH_WANT_PROMPT_LOGPROBS);
    ck_assert_uint_eq(duet_kit_rows_feed(&r, &b), 5);
    assert_row(&r.rows[0], &seqs[0], 0, 12, -1, 0, 11);
    assert_row(&r.rows[1], &seqs[0], 1, 13, -1, 1, 12);
    assert_row(&r.rows[2], &seqs[0], 2, -1, 0, 2, 13);
    assert_row(&r.rows[4], &seqs[1], 4, -1, 4, 4, 6);
    duet_kit_rows_fini(&r);
}
END_TEST

START_TEST(test_draft_steps_feed_the_previous_token_and_repeat_the_nonfinite_mark)
{
    duet_kit_rows r = {0};
    int32_t out_tokens[5] = {40, -7, -7, 50, 51};
    float probs[5 * 3], token_lp[5];
    duet_logprob top[5 * 2];
    duet_batch_output o = {.struct_size = sizeof(o),
                           .n_rows = 5,
                           .tokens = out_tokens,
                           .probs = probs,
                           .token_logprobs = token_lp,
                           .logprobs = top};
    duet_seq seqs[2];
    duet_batch b;

    make_batch(seqs, &b, DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_LOGPROBS);
    b.max_logprobs = 2;
    ck_assert(duet_kit_rows_reserve(&r, 2, 5));
    duet_kit_rows_feed(&r, &b);
    ck_assert_uint_eq(duet_kit_rows_draft(&r, &b, &o, 1), 1); /* sequence 1 does not draft */
    ck_assert_int_eq(r.draft_tok[0], 40);
    assert_row(&r.rows[0], &seqs[0], 0, -1, 1, -1, 14); /* fed at 13, chooses position 14 */
    /* step 1 came out non-finite: step 2 feeds token 0 and repeats the mark */
    duet_kit_row_nonfinite(&b, &o, 1, 3);
    ck_assert_int_eq(out_tokens[1], DUET_TOKEN_NONFINITE);
    ck_assert_float_eq(probs[3], 0.0f);
    ck_assert(isnan(token_lp[1]) && isnan(top[2].logprob) && top[3].token == -1);
    ck_assert_uint_eq(duet_kit_rows_draft(&r, &b, &o, 2), 1);
    ck_assert_int_eq(r.draft_tok[0], 0);
    assert_row(&r.rows[0], &seqs[0], 0, -1, 2, -1, 15);
    out_tokens[2] = 9; /* what the forward sampled for the row: overwritten by the mark */
    duet_kit_rows_repeat_nonfinite(&r, 1, &b, &o, 3);
    ck_assert_int_eq(out_tokens[2], DUET_TOKEN_NONFINITE);
    ck_assert_int_eq(out_tokens[3], 50); /* sequence 1's rows untouched */
    duet_kit_rows_fini(&r);
}
END_TEST

/* A host of minor 2 passes a duet_seq that ends before `penalties`: the batch is accepted and
 * duet_seq_penalties() reads none, whatever lies past the host's struct; a minor-3 host's
 * penalties are read, and refused by a worker that does not apply them. */
START_TEST(test_penalties_are_read_only_where_the_hosts_seq_size_covers_them)
{
    static const int32_t toks[] = {3, 4};
    static const uint32_t blocks[1] = {0};
    duet_penalties pen = {.struct_size = sizeof(pen), .repetition = 1.0f};
    duet_seq seqs[2];
    duet_batch b;
    duet_batch_limits lim = {
        .who = "kit test", .vocab = 50, .max_position = 64, .block_size = 16, .num_blocks = 2};
    int32_t tokens[1];
    duet_batch_output o = {.struct_size = sizeof(o), .n_rows = 1, .tokens = tokens};
    uint64_t rows, fed;
    char err[256];

    memset(seqs, 0, sizeof(seqs));
    seqs[0] = (duet_seq){.seq_id = 7,
                         .tokens = toks,
                         .n_tokens = 2,
                         .block_table = blocks,
                         .n_blocks = 1,
                         .n_outputs = 1,
                         .sampling = {.top_p = 1.0f},
                         .penalties = &pen};
    b = (duet_batch){.struct_size = sizeof(b),
                     .n_seqs = 1,
                     .seq_size = (uint32_t)offsetof(duet_seq, penalties),
                     .seqs = seqs};
    ck_assert_ptr_null(duet_seq_penalties(&b, &seqs[0]));
    ck_assert_int_eq(duet_kit_batch_check(&lim, &b, &o, &rows, &fed, err, sizeof(err)),
                     DUET_STATUS_OK);
    b.seq_size = sizeof(duet_seq);
    ck_assert_ptr_eq(duet_seq_penalties(&b, &seqs[0]), &pen);
    ck_assert_int_eq(duet_kit_batch_check(&lim, &b, &o, &rows, &fed, err, sizeof(err)),
                     DUET_STATUS_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "sequence 7"));
    lim.penalties = true;
    ck_assert_int_eq(duet_kit_batch_check(&lim, &b, &o, &rows, &fed, err, sizeof(err)),
                     DUET_STATUS_OK);
    b.seq_size = (uint32_t)offsetof(duet_seq, penalties) - 1;
    ck_assert_int_eq(duet_kit_batch_check(&lim, &b, &o, &rows, &fed, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_top_lists_are_copied_and_padded)
{
    duet_logprob src[2] = {{5, -0.1f}, {6, -2.0f}}, top[4];

    duet_kit_emit_top(top, src, 2, 4);
    ck_assert_int_eq(top[0].token, 5);
    ck_assert_int_eq(top[1].token, 6);
    ck_assert_int_eq(top[2].token, -1);
    ck_assert_int_eq(top[3].token, -1);
    top[0] = (duet_logprob){8, -0.5f};
    duet_kit_emit_top(top, top, 1, 4); /* in place: only the padding */
    ck_assert_int_eq(top[0].token, 8);
    ck_assert_int_eq(top[1].token, -1);
    duet_kit_emit_top(NULL, src, 2, 4); /* no list asked for */
}
END_TEST

/* ---- the arena ------------------------------------------------------------------------------ */

static int allocs, releases;
static bool refuse;

static void *counting_alloc(size_t bytes)
{
    allocs++;
    return refuse ? NULL : malloc(bytes);
}

static void counting_release(void *p)
{
    releases++;
    free(p);
}

START_TEST(test_the_arena_grows_to_the_largest_request_through_its_allocator)
{
    duet_kit_arena a = {NULL, 0, counting_alloc, counting_release};
    void *p;

    allocs = releases = 0;
    refuse = false;
    ck_assert_ptr_nonnull(p = duet_kit_arena_reserve(&a, 100));
    ck_assert_ptr_eq(duet_kit_arena_reserve(&a, 50), p); /* smaller: kept */
    ck_assert_ptr_nonnull(duet_kit_arena_reserve(&a, 200));
    ck_assert_int_eq(allocs, 2);
    ck_assert_int_eq(releases, 1);
    ck_assert_uint_eq(a.bytes, 200);
    refuse = true;
    ck_assert_ptr_null(duet_kit_arena_reserve(&a, 400)); /* fails: the arena is then empty */
    ck_assert_ptr_null(a.base);
    ck_assert_uint_eq(a.bytes, 0);
    refuse = false;
    ck_assert_ptr_nonnull(duet_kit_arena_reserve(&a, 10));
    duet_kit_arena_fini(&a);
    ck_assert_int_eq(releases, 3);
    ck_assert_ptr_null(a.base);
}
END_TEST

static Suite *kit_suite(void)
{
    const struct duet_test_case cases[] = {
        {"settings", test_settings_are_read_typed_and_an_unknown_key_is_named},
        {"query", test_query_checks_the_major_and_writes_details_once},
        {"checks", test_create_describe_and_cache_arguments_are_checked},
        {"feed rows", test_feed_rows_are_the_outputs_and_with_prompt_logprobs_every_fed_token},
        {"draft rows", test_draft_steps_feed_the_previous_token_and_repeat_the_nonfinite_mark},
        {"seq size", test_penalties_are_read_only_where_the_hosts_seq_size_covers_them},
        {"top lists", test_top_lists_are_copied_and_padded},
        {"arena", test_the_arena_grows_to_the_largest_request_through_its_allocator},
    };
    Suite *s = suite_create("worker_kit");

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 0);
    return s;
}

int main(void)
{
    return duet_test_run(kit_suite());
}
