/*
 * The CUDA toolchain end to end: a .cu file compiled by nvcc through libtool, linked into a C
 * program, runs a kernel whose result is compared with the same computation on the host. Skips
 * (exit 77) when no GPU is present.
 */
#include "check_util.h"
#include "gpu_test_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

START_TEST(test_saxpy_on_the_device_matches_the_host)
{
    enum { N = 100003 }; /* not a multiple of the block size */
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    double *want = malloc(N * sizeof(double));
    char err[256];

    ck_assert(x && y && want);
    srand(12345);
    for (int i = 0; i < N; i++) {
        x[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
        y[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
        want[i] = (double)y[i] + 2.5 * (double)x[i];
    }
    ck_assert_msg(duet__gpu_saxpy(N, 2.5f, x, y, err, sizeof(err)) == DUET_STATUS_OK, "%s", err);
    for (int i = 0; i < N; i++)
        ck_assert_double_eq_tol(y[i], want[i], 1e-6); /* one fused multiply-add in f32 */
    free(x);
    free(y);
    free(want);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;

    if (duet_test_gpu_devices() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    s = suite_create("gpu_probe");
    tc = tcase_create("kernel");
    tcase_add_test(tc, test_saxpy_on_the_device_matches_the_host);
    suite_add_tcase(s, tc);
    return duet_test_run(s);
}
