# `make check-gpu-emu`: the GPU worker's own code (gpu_worker/) on the CPU, under a host emulation
# of CUDA (docs/gpu-worker.md, "Host emulation"). Included from gpu_worker/local.mk when configure
# found CUDA and Check. Not part of `make check`: it switches fibers by hand, which the sanitizer
# builds do not follow. Builds and runs in $(top_builddir)/tools/gpu-emu (check-gpu-emu.sh).
# (its files are in EXTRA_DIST in gpu_worker/local.mk: distributed with or without CUDA)

check-gpu-emu:
	$(MAKE) $(AM_MAKEFLAGS) tests/check_gpu_worker tests/check_worker_conformance \
		tests/check_gpu_kernels tests/check_gpu_sampler cpu_worker/duet_cpu_worker.la
	srcdir='$(abs_top_srcdir)' builddir='$(abs_top_builddir)' CC='$(CC)' CXX='$(CXX)' \
	CUDA_CPPFLAGS='$(CUDA_CPPFLAGS)' CHECK_LIBS='$(CHECK_LIBS)' JANSSON_LIBS='$(JANSSON_LIBS)' \
	PYTHON='python3' W_OBJS='$(tests_check_gpu_worker_OBJECTS)' \
	K_OBJS='$(tests_check_gpu_kernels_OBJECTS)' S_OBJS='$(tests_check_gpu_sampler_OBJECTS)' \
	STRESS_CFLAGS='$(JANSSON_CFLAGS) $(CHECK_CFLAGS)' \
	$(SHELL) $(abs_top_srcdir)/tools/gpu-emu/check-gpu-emu.sh
