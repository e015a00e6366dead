/*
 * The GPU worker's launchers without work (gpu_nowork_cases.h), on any machine CUDA is built on,
 * GPU or not: check_gpu_kernels, which holds them too, skips without a GPU.
 */
#include "check_util.h"
#include "gpu_nowork_cases.h"

#include <check.h>

int main(void)
{
    Suite *s = suite_create("gpu_launch");

    add_gpu_nowork_cases(s);
    return duet_test_run(s);
}
