/*
 * gpu_launch_cases.h — host-only checks of the GPU kernels' launch arithmetic (plan.c, for
 * kernels.cu): the prefill tile chosen for a head size and a shared-memory limit, the bytes that
 * tile needs, the decode partitions. Pure C: they run with or without CUDA and a GPU; a suite adds
 * them with add_gpu_launch_cases. (Launchers without work: tests/check_gpu_launch.c.)
 */
#ifndef DUET_GPU_LAUNCH_CASES_H
#define DUET_GPU_LAUNCH_CASES_H

#include "gpu_worker/plan.h"

#include <check.h>
#include <stddef.h>

/* The shared-memory limits that matter: the default per block and an H100's opt-in maximum. */
static const size_t launch_limits[] = {48 * 1024, 227 * 1024};

static bool launch_in(uint32_t v, const uint32_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == v)
            return true;
    return false;
}

START_TEST(test_prefill_config_fits_every_head_size_within_the_limits)
{
    static const uint32_t q_set[] = {64, 32, 16, 8, 4}, kv_set[] = {64, 32, 16};

    for (size_t l = 0; l < sizeof(launch_limits) / sizeof(launch_limits[0]); l++) {
        for (uint32_t hd = 2; hd <= DUET_GPU_MAX_HEAD_DIM; hd += 2) {
            duet_gpu_prefill_cfg cfg = {0};
            size_t limit = launch_limits[l];

            ck_assert_int_eq(duet__gpu_prefill_config(hd, limit, &cfg), DUET_STATUS_OK);
            ck_assert_msg(launch_in(cfg.q_rows, q_set, 5) && launch_in(cfg.kv_rows, kv_set, 3),
                          "head_dim %u: tile %u × %u", hd, cfg.q_rows, cfg.kv_rows);
            ck_assert_uint_eq(cfg.shared_bytes,
                              duet__gpu_prefill_shared(cfg.q_rows, cfg.kv_rows, hd));
            ck_assert_uint_le(cfg.shared_bytes, limit);
            ck_assert(cfg.threads > 0 && cfg.threads <= 1024 && cfg.threads % 32 == 0);
            /* The largest tile: twice the query rows (with the fewest keys) does not fit, nor
             * twice the keys with these query rows. */
            if (cfg.q_rows < 64)
                ck_assert_uint_gt(duet__gpu_prefill_shared(cfg.q_rows * 2, 16, hd), limit);
            if (cfg.kv_rows < 64)
                ck_assert_uint_gt(duet__gpu_prefill_shared(cfg.q_rows, cfg.kv_rows * 2, hd), limit);
        }
    }
}
END_TEST

START_TEST(test_prefill_shared_bytes_grow_with_every_dimension)
{
    for (uint32_t hd = 2; hd <= DUET_GPU_MAX_HEAD_DIM; hd += 2) {
        for (uint32_t q = 4; q <= 64; q *= 2) {
            for (uint32_t kv = 16; kv <= 64; kv *= 2) {
                size_t bytes = duet__gpu_prefill_shared(q, kv, hd);

                /* At least the Q, K, V and output tiles in f32. */
                ck_assert_uint_ge(bytes, sizeof(float) * (2 * (size_t)q + 2 * (size_t)kv) * hd);
                ck_assert_uint_lt(bytes, duet__gpu_prefill_shared(q * 2, kv, hd));
                ck_assert_uint_lt(bytes, duet__gpu_prefill_shared(q, kv * 2, hd));
                ck_assert_uint_lt(bytes, duet__gpu_prefill_shared(q, kv, hd + 2));
            }
        }
    }
}
END_TEST

START_TEST(test_prefill_config_refuses_bad_head_sizes_and_tiny_limits)
{
    duet_gpu_prefill_cfg cfg;

    ck_assert_int_eq(duet__gpu_prefill_config(0, 227 * 1024, &cfg), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_prefill_config(3, 227 * 1024, &cfg), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_prefill_config(512, 227 * 1024, &cfg), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_prefill_config(DUET_GPU_MAX_HEAD_DIM + 2, 227 * 1024, &cfg),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_prefill_config(128, 1024, &cfg), DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_prefill_config(64, 0, &cfg), DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_decode_partitions_cover_the_context)
{
    ck_assert_uint_eq(duet__gpu_decode_parts(1), 1);
    ck_assert_uint_eq(duet__gpu_decode_parts(DUET_GPU_DECODE_PARTITION), 1);
    ck_assert_uint_eq(duet__gpu_decode_parts(DUET_GPU_DECODE_PARTITION + 1), 2);
    ck_assert_uint_eq(duet__gpu_decode_parts(1500), 3);
}
END_TEST

static void add_gpu_launch_cases(Suite *s)
{
    TCase *tc = tcase_create("launch");

    tcase_add_test(tc, test_prefill_config_fits_every_head_size_within_the_limits);
    tcase_add_test(tc, test_prefill_shared_bytes_grow_with_every_dimension);
    tcase_add_test(tc, test_prefill_config_refuses_bad_head_sizes_and_tiny_limits);
    tcase_add_test(tc, test_decode_partitions_cover_the_context);
    suite_add_tcase(s, tc);
}

#endif /* DUET_GPU_LAUNCH_CASES_H */
