/*
 * What only the GPU worker (duet_gpu_worker.so from $DUET_TEST_GPU_WORKER) has to show, through
 * its ABI on the generated models of worker_harness.c: int8 / int4 and mismatched weights and
 * missing devices refused, half-precision weights in half the device bytes, the cache of a budget
 * of 0 sized from device memory, tensor_parallel = 2 against 1 (with two devices and NCCL), and 128
 * greedy tokens identical to the CPU worker's in f32 (when $DUET_TEST_CPU_WORKER is there). The ABI
 * contract it shares with every worker is tests/check_worker_conformance.c.
 *
 * Exit 77 (automake's SKIP) when the plugin is not there, when no CUDA device is visible, and
 * under DUET_TEST_VALGRIND (the CUDA runtime is not valgrind-clean). `make check-gpu-emu` runs it
 * on the CPU under a host emulation of CUDA (tools/gpu-emu/).
 */
#define _GNU_SOURCE /* nftw */
#include "worker_harness.h"

#include "check_util.h"
#include "gpu_test_util.h" /* duet_test_gpu_devices */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_devices; /* visible CUDA devices (counted in main) */

/* ==== what only the GPU worker has to show ================================================= */

/* Weights are kept in the compute dtype: int8 / int4 (the CPU worker's) and another type are
 * refused, naming the setting. */
START_TEST(test_quantised_and_mismatched_weights_are_unsupported)
{
    static const struct create_case cases[] = {
        {"f32", "int8", NULL, DUET_STATUS_UNSUPPORTED, "int8"},
        {"bf16", "int8", NULL, DUET_STATUS_UNSUPPORTED, "int8"},
        {"f32", "int4", NULL, DUET_STATUS_UNSUPPORTED, "int4"},
        {"f32", "bf16", NULL, DUET_STATUS_UNSUPPORTED, "weights"},
        {"f16", "bf16", NULL, DUET_STATUS_UNSUPPORTED, "weights"},
        {"f16", "f16", NULL, DUET_STATUS_OK, NULL},
        {"bf16", "auto", NULL, DUET_STATUS_OK, NULL},
        {"f32", "f32", NULL, DUET_STATUS_OK, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_create(&models[M_OPT_POST], &cases[i]);
}
END_TEST

/* A device that is not there, or not a device: a refusal that names it, not a crash. */
START_TEST(test_a_missing_device_is_refused_with_its_name)
{
    static const char *const devices[] = {"cuda:99", "cuda:", "gpu0"};

    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++) {
        char extra[64];
        struct create_case c = {"f32", NULL, extra, DUET_STATUS_INVALID_ARGUMENT, devices[i]};

        snprintf(extra, sizeof(extra), "device = \"%s\";", devices[i]);
        check_create(&models[M_LLAMA_F32], &c);
    }
}
END_TEST

/* Weights on the device in the compute dtype: bf16 and f16 take half of f32's bytes and a little
 * more (the norms may stay f32). */
START_TEST(test_half_precision_weights_take_half_the_device_bytes)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    uint64_t bytes[3] = {0};

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di]};
        struct wk k;

        wk_open(&k, tm, &o);
        bytes[di] = k.info.weight_bytes;
        wk_close(&k);
    }
    ck_assert_msg(bytes[1] == bytes[2] && bytes[1] >= bytes[0] / 2 && bytes[1] < bytes[0] * 6 / 10,
                  "weight bytes f32 %llu bf16 %llu f16 %llu", (unsigned long long)bytes[0],
                  (unsigned long long)bytes[1], (unsigned long long)bytes[2]);
}
END_TEST

/* tensor_parallel = 2 against 1 on one model in one dtype: a prefill with every row, then greedy
 * decodes of the reference's tokens through the cache, every row and token "the same". */
static void check_tensor_parallel(const struct tmodel *tm, const char *dtype)
{
    enum { N = 24, DEC = 8, TOTAL = N + DEC };
    uint32_t vocab = tm->desc.vocab_size, table[2] = {3, 1};
    int32_t tokens[TOTAL];
    struct outs pre[2], dec[2][DEC];
    double *logits;
    char what[2][128];

    make_tokens(tokens, TOTAL, vocab, 160);
    logits = reference(tm, tokens, TOTAL);
    for (int tp = 0; tp < 2; tp++) {
        struct wk_opts o = {
            .dtype = dtype, .num_blocks = 4, .extra = tp ? "tensor_parallel = 2;" : NULL};
        duet_seq s = seq_make(16, tokens, N, 0, table, 2, N, sp_plain(17));
        struct wk k;

        snprintf(what[tp], sizeof(what[tp]), "%s in %s, tensor_parallel %d", tm->name, dtype,
                 tp + 1);
        wk_open(&k, tm, &o);
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &pre[tp]);
        for (uint32_t i = 0; i < DEC; i++) {
            s = seq_make(16, tokens + N + i, 1, N + i, table, 2, 1, sp_greedy());
            exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &dec[tp][i]);
        }
        wk_close(&k);
        assert_rows_match(&pre[tp], 0, N, logits, 0, 1.0, 17, tol_of(dtype), what[tp]);
        for (uint32_t i = 0; i < DEC; i++)
            assert_rows_match(&dec[tp][i], 0, 1, logits, N + i, 0.0, 0, tol_of(dtype), what[tp]);
    }
    assert_runs_agree(&pre[0], 0, &pre[1], 0, N, logits, 0, 1.0, 17, tol_of(dtype), what[1]);
    for (uint32_t i = 0; i < DEC; i++) {
        assert_runs_agree(&dec[0][i], 0, &dec[1][i], 0, 1, logits, N + i, 0.0, 0, tol_of(dtype),
                          what[1]);
        outs_free(&dec[0][i]);
        outs_free(&dec[1][i]);
    }
    outs_free(&pre[0]);
    outs_free(&pre[1]);
    free(logits);
}

/* Key/value heads split (2 over 2 ranks), replicated (1 on each rank), and OPT's projections. */
START_TEST(test_two_way_tensor_parallelism_gives_the_same_rows_and_tokens)
{
    static const int ms[] = {M_LLAMA_F32, M_LLAMA3, M_OPT_POST};
    struct wk_opts o = {0};
    struct wk k;
    bool has_tp;

    wk_prepare(&k, models[M_LLAMA_F32].dir, &o);
    has_tp = (k.t->caps & DUET_CAP_TP) != 0;
    wk_close(&k);
    if (n_devices < 2 || !has_tp) {
        printf("%s: tensor_parallel = 2 not tested: %s\n", prog,
               !has_tp ? "the plugin was built without NCCL" : "fewer than 2 CUDA devices");
        fflush(stdout);
        return;
    }
    for (size_t m = 0; m < sizeof(ms) / sizeof(ms[0]); m++)
        for (int di = 0; di < n_dtypes; di++)
            check_tensor_parallel(&models[ms[m]], dtypes[di]);
}
END_TEST

/* The greedy token after feeding seq[at .. at + fed) at positions at.. through table. */
static int32_t greedy_step(struct wk *k, const int32_t *seq, uint32_t fed, uint32_t at,
                           const uint32_t *table, uint32_t n_blocks)
{
    duet_seq s = seq_make(6, seq + at, fed, at, table, n_blocks, 1, sp_greedy());
    struct outs out;
    int32_t token;

    exec_ok(k, &s, 1, 0, NULL, &out);
    token = out.tokens[0];
    outs_free(&out);
    return token;
}

/* seq[n_prompt .. n) greedily after seq[0 .. n_prompt): the prompt in one prefill, then one
 * decode a token. */
static void greedy_generate(const struct tmodel *tm, struct wk_opts o, int32_t *seq,
                            uint32_t n_prompt, uint32_t n)
{
    uint32_t table[16], nb = blocks_for(n, 16);
    struct wk k;

    ck_assert_uint_le(nb, 16);
    table_range(table, nb, 1);
    o.num_blocks = nb + 1;
    wk_open(&k, tm, &o);
    seq[n_prompt] = greedy_step(&k, seq, n_prompt, 0, table, nb);
    for (uint32_t pos = n_prompt; pos + 1 < n; pos++)
        seq[pos + 1] = greedy_step(&k, seq, 1, pos, table, nb);
    wk_close(&k);
}

/* 128 tokens generated greedily in f32 are the CPU worker's, token for token. A difference is
 * reported with the reference's log-probabilities of the two tokens there (a near tie, or not). */
START_TEST(test_greedy_generation_in_f32_is_the_cpu_workers)
{
    enum { PROMPT = 8, GEN = 128, N = PROMPT + GEN };
    static const int ms[] = {M_LLAMA_F32, M_OPT_PRE};
    struct wk_opts on_gpu = {0}, on_cpu = {.cpu = true};

    if (!cpu_plugin_path || access(cpu_plugin_path, R_OK) != 0) {
        printf("%s: agreement with the CPU worker not tested: DUET_TEST_CPU_WORKER (%s) is not "
               "there\n",
               prog, cpu_plugin_path ? cpu_plugin_path : "");
        fflush(stdout);
        return;
    }
    for (size_t m = 0; m < sizeof(ms) / sizeof(ms[0]); m++) {
        const struct tmodel *tm = &models[ms[m]];
        uint32_t vocab = tm->desc.vocab_size, i = PROMPT;
        int32_t gpu[N], cpu[N];
        struct ref_row rr;
        double *logits;

        make_tokens(gpu, PROMPT, vocab, 170 + m);
        memcpy(cpu, gpu, sizeof(gpu));
        greedy_generate(tm, on_gpu, gpu, PROMPT, N);
        greedy_generate(tm, on_cpu, cpu, PROMPT, N);
        while (i < N && gpu[i] == cpu[i])
            i++;
        if (i == N)
            continue;
        logits = reference(tm, cpu, i);
        ref_row_init(&rr, logits + (size_t)(i - 1) * vocab, vocab, 1.0, TOL_GPU_F32);
        ck_abort_msg("%s: generated token %u is %d on the GPU and %d on the CPU (reference "
                     "log-probabilities %.6f and %.6f, bound %.3g)",
                     tm->name, i - PROMPT, gpu[i], cpu[i], rr.lp[gpu[i]], rr.lp[cpu[i]], rr.lim);
    }
}
END_TEST
/* A budget of 0: free device memory × cache.memory_fraction = 0.5 (the profile's cache
 * settings), so at least one block and at most half the device, in every dtype and block size. */
START_TEST(test_cache_of_budget_zero_is_sized_from_device_memory)
{
    const struct tmodel *tm = &models[M_OPT_POST];

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di]};
        const uint32_t sizes[3] = {8, 16, 32};
        struct wk k;

        wk_open(&k, tm, &o);
        for (int i = 0; i < 3; i++) {
            duet_cache_geometry g = {
                .struct_size = sizeof(g), .block_size = sizes[i], .budget_bytes = 0};
            size_t free_bytes = 0, total = 0;

            ck_assert_int_eq(k.t->cache_geometry(k.w, &g), DUET_STATUS_OK);
            ck_assert_int_eq(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
            ck_assert_uint_gt(g.num_blocks, 0);
            ck_assert_msg(g.num_blocks * g.block_bytes <= total / 2,
                          "budget 0: %llu blocks of %llu bytes on a device of %zu bytes",
                          (unsigned long long)g.num_blocks, (unsigned long long)g.block_bytes,
                          total);
        }
        wk_close(&k);
    }
}
END_TEST

/* ==== the suite ============================================================================ */

static Suite *gpu_worker_suite(void)
{
    Suite *s = suite_create("gpu_worker");
    const struct duet_test_case cases[] = {
        {"unsupported weights", test_quantised_and_mismatched_weights_are_unsupported},
        {"missing device", test_a_missing_device_is_refused_with_its_name},
        {"weight bytes", test_half_precision_weights_take_half_the_device_bytes},
        {"cache from device memory", test_cache_of_budget_zero_is_sized_from_device_memory},
    };
    const struct duet_test_case presets[] = {
        {"tensor parallel", test_two_way_tensor_parallelism_gives_the_same_rows_and_tokens},
        {"greedy as the cpu worker", test_greedy_generation_in_f32_is_the_cpu_workers},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL,
                        profile->case_timeout);
    if (!under_valgrind)
        duet_test_add_cases(s, presets, sizeof(presets) / sizeof(presets[0]), NULL, NULL, 300);
    return s;
}

int main(void)
{
    const unsigned want =
        MODEL_BIT(M_LLAMA_F32) | MODEL_BIT(M_LLAMA3) | MODEL_BIT(M_OPT_PRE) | MODEL_BIT(M_OPT_POST);
    int status = harness_check("check_gpu_worker", worker_profile_find("gpu"),
                               getenv("DUET_TEST_GPU_WORKER"));

    if (status != EXIT_SUCCESS)
        return status;
    n_devices = duet_test_gpu_devices();
    if (n_devices == 0) {
        printf("%s: SKIP: no CUDA device\n", prog);
        return 77;
    }
    if (!harness_init(want)) {
        harness_fini();
        return EXIT_FAILURE;
    }
    status = duet_test_run(gpu_worker_suite());
    harness_fini();
    return status;
}
