# What only the GPU worker has, through its ABI (tests/check_gpu_worker.c: refusals, device bytes,
# the cache from device memory, tensor parallelism, agreement with the CPU worker); its ABI
# contract is tests/worker-gpu.conformance (tests/local.mk). The plugin comes from
# $DUET_TEST_GPU_WORKER; exit 77 without it or without a CUDA device. Included from
# gpu_worker/local.mk, inside `if HAVE_CUDA` and `if HAVE_CHECK`.
check_PROGRAMS += tests/check_gpu_worker
tests_check_gpu_worker_SOURCES = tests/check_gpu_worker.c $(WORKER_HARNESS_SOURCES) \
	tests/gpu_test_util.h
tests_check_gpu_worker_CPPFLAGS = $(AM_CPPFLAGS) $(CUDA_CPPFLAGS)
tests_check_gpu_worker_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_gpu_worker_LDADD = gpu_worker/libduet_gpu_kernels.la $(WORKER_HARNESS_LIBS) \
	$(CUDA_LDFLAGS) $(CUDA_LIBS)
# (under check-valgrind it skips itself: the CUDA runtime is not valgrind-clean)
CHECK_TESTS += tests/check_gpu_worker
