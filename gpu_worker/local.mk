# GPU worker plugin (docs/gpu-worker.md): cuBLAS GEMMs, own CUDA kernels, the sampler on the
# device, NCCL tensor parallelism. Built when configure finds CUDA and cuBLAS; installed in
# $(pkglibdir). Its host arithmetic (plan.c) is tested everywhere; the device tests skip (exit 77)
# without a GPU.
GPU_WORKER_CU = gpu_worker/probe.cu gpu_worker/kernels.cu gpu_worker/sample.cu
GPU_WORKER_C = gpu_worker/worker.c gpu_worker/execute.c gpu_worker/gemm.c gpu_worker/ranks.c
EXTRA_DIST += gpu_worker/gpu_worker-int.h gpu_worker/probe.h gpu_worker/worker.h gpu_worker/tests.mk \
	$(GPU_WORKER_CU) \
	$(GPU_WORKER_C)
# The host emulation of CUDA behind `make check-gpu-emu` (tools/gpu-emu/local.mk).
EXTRA_DIST += tools/gpu-emu/local.mk tools/gpu-emu/check-gpu-emu.sh tools/gpu-emu/rewrite.py tools/gpu-emu/cuda_emu.h \
	tools/gpu-emu/emu_rt.cc tools/gpu-emu/make_stress.py tools/gpu-emu/inc/cuda_runtime.h \
	tools/gpu-emu/inc/cub/block/block_reduce.cuh tools/gpu-emu/inc/cub/block/block_scan.cuh \
	tools/gpu-emu/inc/cub/device/device_segmented_radix_sort.cuh

GPU_WORKER_CPPFLAGS = $(AM_CPPFLAGS) $(CUDA_CPPFLAGS) $(NCCL_CPPFLAGS) -I$(top_srcdir)/sampling \
	$(WORKER_KIT_CPPFLAGS)

# The host arithmetic (plan.h: shards, cache sizing, one step's arrays, the prefill tile): pure C,
# built and tested with or without CUDA.
noinst_LTLIBRARIES += gpu_worker/libduet_gpu_plan.la
gpu_worker_libduet_gpu_plan_la_SOURCES = gpu_worker/plan.c gpu_worker/plan.h
gpu_worker_libduet_gpu_plan_la_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
if HAVE_CHECK
check_PROGRAMS += tests/check_gpu_host
tests_check_gpu_host_SOURCES = tests/check_gpu_host.c tests/check_util.h tests/gpu_launch_cases.h
tests_check_gpu_host_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/sampling
tests_check_gpu_host_CFLAGS = $(TEST_CFLAGS)
tests_check_gpu_host_LDADD = gpu_worker/libduet_gpu_plan.la sampling/libduet_sampling.la \
	$(TEST_LIBS) -lm
CHECK_TESTS += tests/check_gpu_host
endif

if HAVE_CUDA
# The device code (nvcc through build-aux/nvcc-wrapper). Linked as C: libtool needs a tag; nvcc
# output needs libcudart and the C++ runtime. It calls plan.c (the prefill tile): link it before
# libduet_gpu_plan.la.
noinst_LTLIBRARIES += gpu_worker/libduet_gpu_kernels.la
gpu_worker_libduet_gpu_kernels_la_SOURCES = $(GPU_WORKER_CU) gpu_worker/gpu_worker-int.h \
	gpu_worker/probe.h
nodist_EXTRA_gpu_worker_libduet_gpu_kernels_la_SOURCES = dummy.c
gpu_worker_libduet_gpu_kernels_la_LIBADD = $(CUDA_LDFLAGS) $(CUDA_LIBS) -lstdc++

pkglib_LTLIBRARIES += gpu_worker/duet_gpu_worker.la
gpu_worker_duet_gpu_worker_la_SOURCES = $(GPU_WORKER_C) gpu_worker/worker.h gpu_worker/gpu_worker-int.h
gpu_worker_duet_gpu_worker_la_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
gpu_worker_duet_gpu_worker_la_LDFLAGS = $(PLUGIN_LDFLAGS)
gpu_worker_duet_gpu_worker_la_LIBADD = gpu_worker/libduet_gpu_plan.la \
	gpu_worker/libduet_gpu_kernels.la worker_kit/libduet_worker_kit.la model/libduet_model.la \
	sampling/libduet_sampling.la \
	$(CUDA_LDFLAGS) $(CUBLAS_LIBS) $(NCCL_LDFLAGS) $(NCCL_LIBS) $(CUDA_LIBS) $(PTHREAD_LIBS) -lm
EXPORT_CHECKED_PLUGINS += $(abs_top_builddir)/gpu_worker/.libs/duet_gpu_worker.so

if HAVE_CHECK
# Launchers without work answer without a device: runs with the CUDA runtime, GPU or not.
check_PROGRAMS += tests/check_gpu_launch
tests_check_gpu_launch_SOURCES = tests/check_gpu_launch.c tests/check_util.h \
	tests/gpu_nowork_cases.h
tests_check_gpu_launch_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
tests_check_gpu_launch_CFLAGS = $(TEST_CFLAGS)
tests_check_gpu_launch_LDADD = gpu_worker/libduet_gpu_kernels.la gpu_worker/libduet_gpu_plan.la \
	$(TEST_LIBS) $(CUDA_LDFLAGS) $(CUDA_LIBS) -lm
TESTS += tests/check_gpu_launch

# Device tests: exit 77 without a GPU.
check_PROGRAMS += tests/check_gpu_probe tests/check_gpu_kernels tests/check_gpu_sampler
tests_check_gpu_probe_SOURCES = tests/check_gpu_probe.c tests/gpu_test_util.h
tests_check_gpu_probe_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
tests_check_gpu_probe_CFLAGS = $(TEST_CFLAGS)
tests_check_gpu_probe_LDADD = gpu_worker/libduet_gpu_kernels.la $(TEST_LIBS) $(CUDA_LDFLAGS) \
	$(CUDA_LIBS)
tests_check_gpu_kernels_SOURCES = tests/check_gpu_kernels.c tests/check_util.h tests/test_rng.h \
	tests/gpu_launch_cases.h tests/gpu_nowork_cases.h
tests_check_gpu_kernels_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
tests_check_gpu_kernels_CFLAGS = $(TEST_CFLAGS)
tests_check_gpu_kernels_LDADD = gpu_worker/libduet_gpu_kernels.la gpu_worker/libduet_gpu_plan.la \
	$(TEST_LIBS) $(CUDA_LDFLAGS) $(CUDA_LIBS) -lm
tests_check_gpu_sampler_SOURCES = tests/check_gpu_sampler.c tests/check_util.h tests/test_rng.h \
	tests/gpu_test_util.h
tests_check_gpu_sampler_CPPFLAGS = $(GPU_WORKER_CPPFLAGS)
tests_check_gpu_sampler_CFLAGS = $(TEST_CFLAGS)
tests_check_gpu_sampler_LDADD = gpu_worker/libduet_gpu_kernels.la sampling/libduet_sampling.la \
	$(TEST_LIBS) $(CUDA_LDFLAGS) $(CUDA_LIBS) -lm
# (not under valgrind: the CUDA runtime is not valgrind-clean; compute-sanitizer is its tool)
TESTS += tests/check_gpu_probe tests/check_gpu_kernels tests/check_gpu_sampler
include gpu_worker/tests.mk
include tools/gpu-emu/local.mk
endif
endif
