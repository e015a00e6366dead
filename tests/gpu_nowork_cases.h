/*
 * gpu_nowork_cases.h — the GPU worker's launchers given no work answer at once, without a device
 * (they make no CUDA call), and an element type the kernels do not know is refused before any
 * launch. Needs the CUDA runtime, not a GPU: tests/check_gpu_launch.c runs it everywhere CUDA is
 * built, check_gpu_kernels with the device tests; a suite adds it with add_gpu_nowork_cases.
 */
#ifndef DUET_GPU_NOWORK_CASES_H
#define DUET_GPU_NOWORK_CASES_H

#include "gpu_worker/gpu_worker-int.h"

#include <check.h>

/* No work: success at once, without a device (these make no CUDA call). An element type the
 * kernels do not know: cudaErrorInvalidValue, again before any launch. */
START_TEST(test_launchers_without_work_answer_at_once)
{
    duet_gpu_attn_args attn = {.kv = {.block_size = 16, .kv_heads = 1, .head_dim = 64},
                               .num_heads = 4};
    duet_gpu_rope_args rope = {.num_heads = 4, .kv = attn.kv};
    duet_gpu_prefill_cfg cfg = {.q_rows = 16, .kv_rows = 16, .threads = 128};

    ck_assert_int_eq(duet__gpu_gather_rows(0, DUET_GPU_F32, NULL, 8, NULL, 0, 0, NULL, 8, false),
                     cudaSuccess);
    ck_assert_int_eq(duet__gpu_rmsnorm(0, NULL, 8, NULL, 1e-5f, DUET_GPU_BF16, NULL, 8, 0, 8),
                     cudaSuccess);
    ck_assert_int_eq(
        duet__gpu_layernorm(0, NULL, 8, NULL, NULL, 1e-5f, DUET_GPU_F16, NULL, 8, 0, 8),
        cudaSuccess);
    ck_assert_int_eq(duet__gpu_convert(0, NULL, 8, DUET_GPU_F32, NULL, 8, 0, 8, true), cudaSuccess);
    ck_assert_int_eq(duet__gpu_silu_mul(0, NULL, 16, DUET_GPU_F32, NULL, 8, 0, 8), cudaSuccess);
    ck_assert_int_eq(duet__gpu_add_bias(0, NULL, 8, NULL, 0, 8), cudaSuccess);
    ck_assert_int_eq(duet__gpu_select_rows(0, NULL, 8, NULL, 0, NULL, 8, 8), cudaSuccess);
    ck_assert_int_eq(duet__gpu_unshard_logits(0, NULL, 0, 8, 16, NULL), cudaSuccess);
    ck_assert_int_eq(duet__gpu_rope_kv_write(0, &rope), cudaSuccess);
    ck_assert_int_eq(duet__gpu_attn_decode(0, &attn, NULL, 0, 1, NULL, NULL), cudaSuccess);
    ck_assert_int_eq(duet__gpu_attn_prefill(0, &attn, NULL, 0, &cfg), cudaSuccess);
    ck_assert_int_eq(duet__gpu_convert(0, NULL, 8, (duet_gpu_dtype)7, NULL, 8, 1, 8, false),
                     cudaErrorInvalidValue);
}
END_TEST

static void add_gpu_nowork_cases(Suite *s)
{
    TCase *tc = tcase_create("no work");

    tcase_add_test(tc, test_launchers_without_work_answer_at_once);
    suite_add_tcase(s, tc);
}

#endif /* DUET_GPU_NOWORK_CASES_H */
