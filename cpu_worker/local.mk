# CPU worker plugin (docs/cpu-worker.md): oneDNN GEMMs, paged attention, OpenMP threads.
# Built when configure finds oneDNN and OpenMP; installed in $(pkglibdir).
EXTRA_DIST += cpu_worker/cpu_worker-int.h cpu_worker/gemv.h cpu_worker/affinity.h
# tests/gemv-<isa>.isa: check_cpu_kernels' GEMV cases for one ISA (tests/gemv_isa.sh).
ISA_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/gemv_isa.sh
GEMV_ISA_TESTS = tests/gemv-generic.isa tests/gemv-avx2.isa tests/gemv-avx512.isa
EXTRA_DIST += tests/gemv_isa.sh $(GEMV_ISA_TESTS)
# tests/NAME_avx2.avx2: tests/NAME run as on an AVX2-only CPU (tests/as_avx2.sh) where AVX-512 is.
AVX2_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/as_avx2.sh
AVX2_EMULATED_TESTS = tests/check_cpu_worker_avx2.avx2 tests/worker-cpu_avx2.avx2 \
	tests/check_engine_avx2.avx2 tests/bench_smoke_avx2.avx2
EXTRA_DIST += tests/as_avx2.sh $(AVX2_EMULATED_TESTS)
CPU_WORKER_KERNEL_SOURCES = cpu_worker/cpu_worker-int.h cpu_worker/kernels.c cpu_worker/linear.c \
	cpu_worker/gemv.h cpu_worker/gemv.c cpu_worker/argmax.c
CPU_WORKER_CFLAGS = $(AM_CFLAGS) $(OPENMP_CFLAGS)
CPU_WORKER_CPPFLAGS = $(AM_CPPFLAGS) $(ONEDNN_CPPFLAGS) $(HWLOC_CFLAGS) -I$(top_srcdir)/sampling \
	$(WORKER_KIT_CPPFLAGS)
CPU_WORKER_LIBS = $(ONEDNN_LDFLAGS) $(ONEDNN_LIBS) $(HWLOC_LIBS) -lm
EXTRA_DIST += cpu_worker/gemv_avx2.c cpu_worker/gemv_avx512.c

if BUILD_CPU_WORKER
# The ISA kernel files, each with its own flags from configure (AVX2_CFLAGS, AVX512_CFLAGS; gcc and
# clang alike); gemv.c calls them only where CPUID says the CPU runs them.
noinst_LTLIBRARIES += cpu_worker/libgemv_avx2.la cpu_worker/libgemv_avx512.la
cpu_worker_libgemv_avx2_la_SOURCES = cpu_worker/gemv_avx2.c cpu_worker/gemv.h
cpu_worker_libgemv_avx2_la_CPPFLAGS = $(CPU_WORKER_CPPFLAGS)
cpu_worker_libgemv_avx2_la_CFLAGS = $(CPU_WORKER_CFLAGS) $(AVX2_CFLAGS)
cpu_worker_libgemv_avx512_la_SOURCES = cpu_worker/gemv_avx512.c cpu_worker/gemv.h
cpu_worker_libgemv_avx512_la_CPPFLAGS = $(CPU_WORKER_CPPFLAGS)
cpu_worker_libgemv_avx512_la_CFLAGS = $(CPU_WORKER_CFLAGS) $(AVX512_CFLAGS)
CPU_WORKER_ISA_LIBS = cpu_worker/libgemv_avx2.la cpu_worker/libgemv_avx512.la

pkglib_LTLIBRARIES += cpu_worker/duet_cpu_worker.la
cpu_worker_duet_cpu_worker_la_SOURCES = cpu_worker/worker.c cpu_worker/execute.c cpu_worker/forward.c \
	cpu_worker/affinity.c cpu_worker/affinity.h $(CPU_WORKER_KERNEL_SOURCES)
cpu_worker_duet_cpu_worker_la_CPPFLAGS = $(CPU_WORKER_CPPFLAGS)
cpu_worker_duet_cpu_worker_la_CFLAGS = $(CPU_WORKER_CFLAGS)
# -z nodelete: dlclose must not unmap libgomp and oneDNN under OpenMP's parked pool threads
# (they outlive every worker), so the plugin and what it loaded stay mapped once loaded.
cpu_worker_duet_cpu_worker_la_LDFLAGS = $(PLUGIN_LDFLAGS) $(OPENMP_CFLAGS) -Wl,-z,nodelete
cpu_worker_duet_cpu_worker_la_LIBADD = $(CPU_WORKER_ISA_LIBS) worker_kit/libduet_worker_kit.la \
	model/libduet_model.la \
	sampling/libduet_sampling.la $(CPU_WORKER_LIBS)
EXPORT_CHECKED_PLUGINS += $(abs_top_builddir)/cpu_worker/.libs/duet_cpu_worker.so

if HAVE_CHECK
# Kernels and GEMMs against a double-precision reference (compiled in, not through the plugin).
check_PROGRAMS += tests/check_cpu_kernels
tests_check_cpu_kernels_SOURCES = tests/check_cpu_kernels.c tests/check_util.h tests/test_rng.h \
	$(CPU_WORKER_KERNEL_SOURCES)
tests_check_cpu_kernels_CPPFLAGS = $(CPU_WORKER_CPPFLAGS)
tests_check_cpu_kernels_CFLAGS = $(TEST_CFLAGS) $(OPENMP_CFLAGS)
tests_check_cpu_kernels_LDADD = $(CPU_WORKER_ISA_LIBS) model/libduet_model.la $(CHECK_LIBS) \
	$(CPU_WORKER_LIBS) $(OPENMP_CFLAGS)
CHECK_TESTS += tests/check_cpu_kernels
# The same program's GEMV cases once per ISA, each a SKIP where the CPU lacks it.
TESTS += $(GEMV_ISA_TESTS)

# Pinning and NUMA placement (affinity.c compiled in; synthetic hwloc topologies for NUMA).
check_PROGRAMS += tests/check_cpu_affinity
tests_check_cpu_affinity_SOURCES = tests/check_cpu_affinity.c tests/check_util.h \
	cpu_worker/affinity.c cpu_worker/affinity.h plugin_api/cpulist.c plugin_api/cpulist.h
tests_check_cpu_affinity_CPPFLAGS = $(CPU_WORKER_CPPFLAGS)
tests_check_cpu_affinity_CFLAGS = $(TEST_CFLAGS) $(OPENMP_CFLAGS)
tests_check_cpu_affinity_LDADD = $(CHECK_LIBS) $(HWLOC_LIBS) $(PTHREAD_LIBS) $(OPENMP_CFLAGS)
CHECK_TESTS += tests/check_cpu_affinity

# What only the CPU worker has, through the ABI against tests/reference_forward.c on generated
# models (its ABI contract: tests/worker-cpu.conformance, tests/local.mk).
check_PROGRAMS += tests/check_cpu_worker
tests_check_cpu_worker_SOURCES = tests/check_cpu_worker.c $(WORKER_HARNESS_SOURCES)
tests_check_cpu_worker_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS) $(OPENMP_CFLAGS)
tests_check_cpu_worker_LDADD = $(WORKER_HARNESS_LIBS) $(OPENMP_CFLAGS)
CHECK_TESTS += tests/check_cpu_worker
# GGUF files (model/gguf.c) through the CPU worker: identical rows, exact Q8_0 / Q4_0 packing.
check_PROGRAMS += tests/check_cpu_worker_gguf
tests_check_cpu_worker_gguf_SOURCES = tests/check_cpu_worker_gguf.c $(WORKER_HARNESS_SOURCES)
tests_check_cpu_worker_gguf_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_cpu_worker_gguf_LDADD = $(WORKER_HARNESS_LIBS)
CHECK_TESTS += tests/check_cpu_worker_gguf
TESTS += $(AVX2_EMULATED_TESTS)
endif
endif
