/*
 * GGUF files through the CPU worker (duet_cpu_worker.so from $DUET_TEST_CPU_WORKER), on the
 * generated Llama, Qwen2 and Qwen3 models of worker_harness.c written again as GGUF by
 * duet__gguf_write (what duet-mkmodel --gguf does):
 *
 *   - F32 and BF16 GGUF files give the very rows (bit for bit) of the safetensors folder they
 *     were written from: the q/k permutation undone (llama files; qwen2 / qwen3 files have none),
 *     Qwen2's biases and Qwen3's q/k norms mapped, the same kernels on the same weights;
 *   - Q8_0 and Q4_0 files (Llama and Qwen), packed from their codes, match the double-precision
 *     reference run on the dequantised weights (the reference reads the same file) within the
 *     tolerances of the worker's own int8 / int4 tests; the worst error seen is printed;
 *   - a weights setting that would requantise them is refused by name;
 *   - Q4_K / Q5_K / Q6_K files, dequantised at load, against the same reference: the error the
 *     worker's weights setting adds is measured and printed.
 *
 * Exit 77 (automake's SKIP) when the plugin is not there.
 */
#define _GNU_SOURCE /* nftw */
#include "worker_harness.h"

#include "check_util.h"
#include "test_dirs.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The weights are the file's exactly, so only the int8 activations of the worker's kernels
 * differ from the reference: its int8 test's bound holds for both (worst seen 0.022, 0.018). */
#define TOL_Q8_0 4e-2
#define TOL_Q4_0 4e-2

/* The probability rows of a prefill of n tokens (every position), with options o. */
static void prefill_rows(const struct tmodel *tm, struct wk_opts o, const int32_t *tokens,
                         uint32_t n, struct outs *out)
{
    uint32_t table[64];
    struct wk k;
    duet_seq s;

    o.num_blocks = blocks_for(n, 16) + 2;
    wk_open(&k, tm, &o);
    table_range(table, blocks_for(n, 16), 1);
    s = seq_make(3, tokens, n, 0, table, blocks_for(n, 16), n, sp_plain(9));
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, out);
    wk_close(&k);
}

static void assert_identical_rows(int m, duet_dtype dtype, struct wk_opts o)
{
    struct tmodel g = gguf_of(m, dtype);
    int32_t tokens[40];
    struct outs a, b;
    uint32_t vocab = g.desc.vocab_size;

    make_tokens(tokens, 40, vocab, 5);
    prefill_rows(&models[m], o, tokens, 40, &a);
    prefill_rows(&g, o, tokens, 40, &b);
    for (uint32_t r = 0; r < 40; r++) {
        ck_assert_msg(memcmp(a.probs + (size_t)r * vocab, b.probs + (size_t)r * vocab,
                             vocab * sizeof(float)) == 0,
                      "%s as %s GGUF: row %u differs from the safetensors folder's", models[m].name,
                      duet_dtype_name(dtype), r);
        ck_assert_int_eq(a.tokens[r], b.tokens[r]);
    }
    outs_free(&a);
    outs_free(&b);
    remove(g.dir);
}

START_TEST(test_f32_and_bf16_gguf_give_the_rows_of_the_safetensors_folder)
{
    assert_identical_rows(M_LLAMA_F32, DUET_DTYPE_F32, (struct wk_opts){.weights = "f32"});
    assert_identical_rows(M_LLAMA_BF16, DUET_DTYPE_BF16,
                          (struct wk_opts){.dtype = "f32", .weights = "bf16"});
    /* the same file quantised by the worker at load: the same int8 weights either way */
    assert_identical_rows(M_LLAMA_F32, DUET_DTYPE_F32, (struct wk_opts){.weights = "int8"});
}
END_TEST

START_TEST(test_q8_0_and_q4_0_gguf_match_the_reference_on_dequantised_weights)
{
    static const int ms[] = {M_LLAMA_F32, M_LLAMA_BF16};
    double w8 = 0, w4 = 0;

    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        struct tmodel q8 = gguf_of(ms[i], DUET_DTYPE_Q8_0), q4 = gguf_of(ms[i], DUET_DTYPE_Q4_0);
        /* weights auto: the file's own int format, groups of 32 */
        double d8 = check_prefill_with(&q8, (struct wk_opts){.tol = TOL_Q8_0}, 40, 61 + i);
        double d4 = check_prefill_with(&q4, (struct wk_opts){.tol = TOL_Q4_0}, 40, 71 + i);
        double e8 = check_prefill_with(&q8, (struct wk_opts){.weights = "int8", .tol = TOL_Q8_0},
                                       40, 81 + i);

        fprintf(stderr,
                "%-14s worst |dlogp|/max(1,|logit|) vs dequantised reference: Q8_0 %.4f "
                "(weights int8: %.4f), Q4_0 %.4f\n",
                models[ms[i]].name, d8, e8, d4);
        w8 = fmax(w8, fmax(d8, e8));
        w4 = fmax(w4, d4);
        remove(q8.dir);
        remove(q4.dir);
    }
    fprintf(stderr, "worst: Q8_0 %.4f (bound %.3g), Q4_0 %.4f (bound %.3g)\n", w8, TOL_Q8_0, w4,
            TOL_Q4_0);
}
END_TEST

/* Qwen2 (q/k/v biases, tied embeddings, f32 folder) and Qwen3 (q/k norms, head_dim 32 that is
 * not hidden / heads, bf16 folder) as f32 GGUF files (Qwen3's bf16 values are exact in f32):
 * the folder's rows; Qwen3 also as a bf16 file, as the bf16 Llama. */
START_TEST(test_qwen_gguf_files_give_the_rows_of_the_safetensors_folder)
{
    assert_identical_rows(M_QWEN2, DUET_DTYPE_F32, (struct wk_opts){.weights = "f32"});
    assert_identical_rows(M_QWEN3, DUET_DTYPE_F32, (struct wk_opts){.weights = "f32"});
    assert_identical_rows(M_QWEN3, DUET_DTYPE_BF16,
                          (struct wk_opts){.dtype = "f32", .weights = "bf16"});
}
END_TEST

START_TEST(test_qwen_q8_0_and_q4_0_gguf_match_the_reference_on_dequantised_weights)
{
    static const int ms[] = {M_QWEN2, M_QWEN3};
    double w8 = 0, w4 = 0;

    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        struct tmodel q8 = gguf_of(ms[i], DUET_DTYPE_Q8_0), q4 = gguf_of(ms[i], DUET_DTYPE_Q4_0);
        double d8 = check_prefill_with(&q8, (struct wk_opts){.tol = TOL_Q8_0}, 40, 91 + i);
        double d4 = check_prefill_with(&q4, (struct wk_opts){.tol = TOL_Q4_0}, 40, 101 + i);

        fprintf(stderr,
                "%-14s worst |dlogp|/max(1,|logit|) vs dequantised reference: Q8_0 %.4f, Q4_0 "
                "%.4f\n",
                models[ms[i]].name, d8, d4);
        w8 = fmax(w8, d8);
        w4 = fmax(w4, d4);
        remove(q8.dir);
        remove(q4.dir);
    }
    fprintf(stderr, "qwen worst: Q8_0 %.4f (bound %.3g), Q4_0 %.4f (bound %.3g)\n", w8, TOL_Q8_0,
            w4, TOL_Q4_0);
}
END_TEST

/* weights auto and weights "int4" (group_size 32) take the same path for a Q4_0 file: the
 * file's codes and scales, packed as they are, so the rows are identical. */
START_TEST(test_q4_0_weights_auto_and_int4_are_the_same_packing)
{
    struct tmodel q4 = gguf_of(M_LLAMA_F32, DUET_DTYPE_Q4_0);
    int32_t tokens[24];
    struct outs a, b;
    uint32_t vocab = q4.desc.vocab_size;

    make_tokens(tokens, 24, vocab, 3);
    prefill_rows(&q4, (struct wk_opts){0}, tokens, 24, &a);
    prefill_rows(&q4, (struct wk_opts){.weights = "int4", .extra = "group_size = 32;"}, tokens, 24,
                 &b);
    ck_assert(memcmp(a.probs, b.probs, (size_t)24 * vocab * sizeof(float)) == 0);
    outs_free(&a);
    outs_free(&b);
    remove(q4.dir);
}
END_TEST

START_TEST(test_settings_that_would_requantise_gguf_blocks_are_refused)
{
    struct tmodel q8 = gguf_of(M_LLAMA_F32, DUET_DTYPE_Q8_0),
                  q4 = gguf_of(M_LLAMA_F32, DUET_DTYPE_Q4_0);
    const struct create_case q8_cases[] = {
        {"f32", "int4", NULL, DUET_STATUS_UNSUPPORTED, "Q8_0"},
        {"f32", "int8", "group_size = 64;", DUET_STATUS_UNSUPPORTED, "group_size 64"},
        {"f32", "int8", "zero_point = true;", DUET_STATUS_UNSUPPORTED, "zero_point"},
        {"f32", NULL, "group_size = 128;", DUET_STATUS_UNSUPPORTED, "requantise"},
        {"f32", "f32", NULL, DUET_STATUS_OK, NULL}, /* dequantised: allowed */
    };
    const struct create_case q4_cases[] = {
        {"f32", "int8", NULL, DUET_STATUS_UNSUPPORTED, "Q4_0"},
        {"f32", "int4", NULL, DUET_STATUS_OK, NULL},
    };

    for (size_t i = 0; i < sizeof(q8_cases) / sizeof(q8_cases[0]); i++)
        check_create(&q8, &q8_cases[i]);
    for (size_t i = 0; i < sizeof(q4_cases) / sizeof(q4_cases[0]); i++)
        check_create(&q4, &q4_cases[i]);
    remove(q8.dir);
    remove(q4.dir);
}
END_TEST

/* Max and mean over rows and counted tokens of |log p_worker − log p_ref| / max(1, max |logit|). */
struct err_stats {
    double max, mean;
};

static struct err_stats logit_error(const struct tmodel *tm, struct wk_opts o, uint32_t n,
                                    uint64_t seed)
{
    uint32_t vocab = tm->desc.vocab_size;
    int32_t *tokens = malloc(n * sizeof(*tokens));
    struct err_stats e = {0, 0};
    double *logits, sum = 0;
    uint64_t count = 0;
    struct outs out;

    ck_assert_ptr_nonnull(tokens);
    make_tokens(tokens, n, vocab, seed);
    logits = reference(tm, tokens, n);
    prefill_rows(tm, o, tokens, n, &out);
    for (uint32_t r = 0; r < n; r++) {
        struct ref_row rr;

        ref_row_init(&rr, logits + (size_t)r * vocab, vocab, 1.0, 1.0);
        for (uint32_t v = 0; v < vocab; v++)
            if (ref_row_counts(&rr, v)) {
                double d = fabs(log(out.probs[(size_t)r * vocab + v]) - rr.lp[v]) / rr.lim;

                e.max = fmax(e.max, d);
                sum += d;
                count++;
            }
        ref_row_fini(&rr);
    }
    e.mean = count ? sum / (double)count : 0;
    outs_free(&out);
    free(logits);
    free(tokens);
    return e;
}

/*
 * K-quant files (Q4_K, Q5_K, Q6_K: what Q4_K_M / Q5_K_M files hold) are dequantised at load and
 * stored as `weights` says; the reference runs on the same dequantised weights, so what is
 * measured is what the worker adds: nothing beyond f32 rounding with weights f32 (auto), its
 * own int8 / int4 rounding of those floats otherwise. Bounds: the worker's f32, int8 and int4
 * tolerances. A model of hidden 256 (rows of whole super-blocks).
 */
START_TEST(test_k_quant_files_requantised_error_is_measured)
{
    static const duet_dtype types[] = {DUET_DTYPE_Q4_K, DUET_DTYPE_Q5_K, DUET_DTYPE_Q6_K};
    static const struct {
        const char *weights;
        double tol;
    } ws[] = {{"f32", 1e-4}, {"int8", 4e-2}, {"int4", 3e-1}};
    struct tmodel base = models[M_LLAMA_F32];
    struct duet__gen_params p = {.seed = 17, .force = true, .flags = DUET_MODEL_QUIET};
    char e[512];
    struct duet__msg msg = {e, sizeof(e)};

    snprintf(base.dir, sizeof(base.dir), "%.4000s-k256", models[M_LLAMA_F32].dir);
    base.name = "llama-k256";
    base.desc.hidden_size = 256;
    base.desc.intermediate_size = 512;
    base.desc.head_dim = 64;
    base.desc.torch_dtype = DUET_DTYPE_F32;
    p.desc = base.desc;
    p.dir = base.dir;
    ck_assert_msg(duet__gen_model(&p, &msg) == DUET_STATUS_OK, "%s", e);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        struct tmodel g = base;
        duet_model *src;

        snprintf(g.dir, sizeof(g.dir), "%.4000s/model-%s.gguf", base.dir,
                 duet_dtype_name(types[t]));
        ck_assert(duet_model_create(base.dir, DUET_MODEL_QUIET, &src, e, sizeof(e)) == 0);
        ck_assert_msg(duet__gguf_write(src, g.dir, types[t], DUET_MODEL_QUIET, &msg) == 0, "%s", e);
        duet_model_destroy(src);
        for (size_t w = 0; w < sizeof(ws) / sizeof(ws[0]); w++) {
            struct err_stats st = logit_error(
                &g, (struct wk_opts){.weights = ws[w].weights, .tol = ws[w].tol}, 40, 90 + w);

            fprintf(stderr,
                    "%s GGUF, weights %-4s: |dlogp|/max(1,|logit|) vs the dequantised "
                    "reference: max %.2e, mean %.2e (bound %g)\n",
                    duet_dtype_name(types[t]), ws[w].weights, st.max, st.mean, ws[w].tol);
            ck_assert_msg(st.max <= ws[w].tol, "%s, weights %s: %g", duet_dtype_name(types[t]),
                          ws[w].weights, st.max);
        }
    }
    duet_test_rmtree(base.dir);
}
END_TEST

static Suite *gguf_worker_suite(void)
{
    Suite *s = suite_create("cpu_worker_gguf");
    const struct duet_test_case cases[] = {
        {"f32 / bf16 identical", test_f32_and_bf16_gguf_give_the_rows_of_the_safetensors_folder},
        {"q8_0 / q4_0 vs reference",
         test_q8_0_and_q4_0_gguf_match_the_reference_on_dequantised_weights},
        {"qwen f32 / bf16 identical", test_qwen_gguf_files_give_the_rows_of_the_safetensors_folder},
        {"qwen q8_0 / q4_0 vs reference",
         test_qwen_q8_0_and_q4_0_gguf_match_the_reference_on_dequantised_weights},
        {"q4_0 packing", test_q4_0_weights_auto_and_int4_are_the_same_packing},
        {"requantising refused", test_settings_that_would_requantise_gguf_blocks_are_refused},
        {"k-quants", test_k_quant_files_requantised_error_is_measured},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL,
                        profile->case_timeout);
    return s;
}

int main(void)
{
    const unsigned want =
        MODEL_BIT(M_LLAMA_F32) | MODEL_BIT(M_LLAMA_BF16) | MODEL_BIT(M_QWEN2) | MODEL_BIT(M_QWEN3);
    int status = harness_check("check_cpu_worker_gguf", worker_profile_find("cpu"),
                               getenv("DUET_TEST_CPU_WORKER"));

    if (status != EXIT_SUCCESS)
        return status;
    if (!harness_init(want)) {
        harness_fini();
        return EXIT_FAILURE;
    }
    status = duet_test_run(gguf_worker_suite());
    harness_fini();
    return status;
}
