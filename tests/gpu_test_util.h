/* gpu_test_util.h — what the device tests share. */
#ifndef DUET_GPU_TEST_UTIL_H
#define DUET_GPU_TEST_UTIL_H

#include "../gpu_worker/gpu_worker-int.h"

#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Visible CUDA devices, counted in a child process: CUDA initialised before a fork is unusable in
 * the child, and Check runs each test in a forked child, so a suite's main() must not touch CUDA
 * itself (CK_FORK=no runs are unaffected). 0 when the child fails. */
static inline int duet_test_gpu_devices(void)
{
    int wstatus = 0;
    pid_t pid;

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int n = duet__gpu_device_count();

        _exit(n > 100 ? 100 : n);
    }
    if (pid > 0 && waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    return 0;
}

#endif /* DUET_GPU_TEST_UTIL_H */
