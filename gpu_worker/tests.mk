# The GPU worker plugin through its ABI: tests/check_cpu_worker.c built a second time with
# -DDUET_TEST_GPU_WORKER, so that the GPU worker answers the CPU worker's tests (plus its own:
# refusals, tensor parallelism, agreement with the CPU worker). The plugin comes from
# $DUET_TEST_GPU_WORKER; exit 77 without it or without a CUDA device. Included from
# gpu_worker/local.mk, inside `if HAVE_CUDA` and `if HAVE_CHECK`.
check_PROGRAMS += tests/check_gpu_worker
tests_check_gpu_worker_SOURCES = tests/check_cpu_worker.c tests/check_util.h tests/test_dirs.h \
	tests/reference_forward.c tests/reference_forward.h tests/gpu_test_util.h
tests_check_gpu_worker_CPPFLAGS = $(AM_CPPFLAGS) $(CUDA_CPPFLAGS) -DDUET_TEST_GPU_WORKER
tests_check_gpu_worker_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_gpu_worker_LDADD = model/libduet_model_gen.la model/libduet_model.la \
	gpu_worker/libduet_gpu_kernels.la $(TEST_LIBS) $(JANSSON_LIBS) $(CUDA_LDFLAGS) $(CUDA_LIBS) -lm
# (under check-valgrind it skips itself: the CUDA runtime is not valgrind-clean)
CHECK_TESTS += tests/check_gpu_worker
