# Tests: Check suites (one per part), fixtures, and the test-only plugins.
EXTRA_DIST += tests/fixtures/duet_notelf_worker.so tests/configs tests/run_check.sh

# ---- test-only plugins (never installed) ------------------------------------------------
check_LTLIBRARIES += tests/duet_mock_worker.la
tests_duet_mock_worker_la_SOURCES = tests/fixtures/mock_worker.c
tests_duet_mock_worker_la_CPPFLAGS = $(AM_CPPFLAGS) $(WORKER_KIT_CPPFLAGS) -I$(top_srcdir)/sampling
tests_duet_mock_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_mock_worker_la_LIBADD = worker_kit/libduet_worker_kit.la sampling/libduet_sampling.la -lm

check_LTLIBRARIES += tests/duet_badmajor_worker.la tests/duet_badfingerprint_worker.la \
	tests/duet_small_worker.la tests/duet_nullexecute_worker.la tests/duet_nullname_worker.la \
	tests/duet_querynull_worker.la tests/duet_nosymbol_worker.la
tests_duet_badmajor_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_badmajor_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_MAJOR
tests_duet_badmajor_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_badfingerprint_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_badfingerprint_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_FINGERPRINT
tests_duet_badfingerprint_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_small_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_small_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_SMALL
tests_duet_small_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_nullexecute_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_nullexecute_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_NULL_EXECUTE
tests_duet_nullexecute_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_nullname_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_nullname_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_NULL_NAME
tests_duet_nullname_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_querynull_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_querynull_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_QUERY_NULL
tests_duet_querynull_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
tests_duet_nosymbol_worker_la_SOURCES = tests/fixtures/broken_worker.c
tests_duet_nosymbol_worker_la_CPPFLAGS = $(AM_CPPFLAGS) -DBROKEN_NO_SYMBOL
tests_duet_nosymbol_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)

# Plugins whose dynamic symbol table check_exports inspects (the installable workers join it).
EXPORT_CHECKED_PLUGINS = $(abs_top_builddir)/tests/.libs/duet_mock_worker.so

AM_TESTS_ENVIRONMENT = \
	DUET_TEST_SRCDIR='$(abs_top_srcdir)'; export DUET_TEST_SRCDIR; \
	DUET_TEST_BUILDDIR='$(abs_top_builddir)'; export DUET_TEST_BUILDDIR; \
	DUET_TEST_PLUGIN_DIR='$(abs_top_builddir)/tests/.libs'; export DUET_TEST_PLUGIN_DIR; \
	DUET_TEST_PLUGINS='$(EXPORT_CHECKED_PLUGINS)'; export DUET_TEST_PLUGINS; \
	DUET_TEST_LIBDUET='$(abs_top_builddir)/.libs/libduet.so'; export DUET_TEST_LIBDUET; \
	DUET_TEST_PYTHON='$(PYTHON)'; export DUET_TEST_PYTHON; \
	DUET_TEST_CPU_WORKER='$(abs_top_builddir)/cpu_worker/.libs/duet_cpu_worker.so'; \
	export DUET_TEST_CPU_WORKER; \
	DUET_TEST_GPU_WORKER='$(abs_top_builddir)/gpu_worker/.libs/duet_gpu_worker.so'; \
	export DUET_TEST_GPU_WORKER; \
	ASAN_OPTIONS="$${ASAN_OPTIONS:+$$ASAN_OPTIONS:}intercept_tls_get_addr=0"; \
	export ASAN_OPTIONS; \
	unset DUET_PLUGIN_PATH;

# ---- Check suites -----------------------------------------------------------------------
if HAVE_CHECK
TEST_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
TEST_LIBS = libduet.la $(CHECK_LIBS)

check_PROGRAMS += tests/check_config tests/check_loader tests/check_exports tests/check_abi
tests_check_config_SOURCES = tests/check_config.c plugin_api/cpulist.c plugin_api/cpulist.h
tests_check_config_CFLAGS = $(TEST_CFLAGS)
tests_check_config_LDADD = $(TEST_LIBS)

tests_check_loader_SOURCES = tests/check_loader.c
tests_check_loader_CFLAGS = $(TEST_CFLAGS)
tests_check_loader_LDADD = $(TEST_LIBS)

tests_check_exports_SOURCES = tests/check_exports.c
tests_check_exports_CFLAGS = $(TEST_CFLAGS)
tests_check_exports_LDADD = $(CHECK_LIBS)

# Each public header compiled first in its own C file, and all of them from C++.
tests_check_abi_SOURCES = tests/check_abi.c tests/headers/types.c tests/headers/plugin.c \
	tests/headers/config.c tests/headers/loader.c tests/headers/all.cc tests/headers/headers.h \
	tests/check_util.h
tests_check_abi_CFLAGS = $(TEST_CFLAGS)
tests_check_abi_CXXFLAGS = $(AM_CXXFLAGS) -std=c++11
tests_check_abi_LDADD = $(TEST_LIBS)

CHECK_TESTS = tests/check_config tests/check_loader tests/check_exports tests/check_abi
TESTS += $(CHECK_TESTS)

# The worker suites' shared code (worker_harness.h): the conformance suite here, the CPU and GPU
# workers' own suites in cpu_worker/local.mk and gpu_worker/tests.mk.
WORKER_HARNESS_SOURCES = tests/worker_harness.c tests/worker_harness.h tests/check_util.h \
	tests/test_dirs.h tests/reference_forward.c tests/reference_forward.h
WORKER_HARNESS_LIBS = model/libduet_model_gen.la model/libduet_model.la $(TEST_LIBS) \
	$(JANSSON_LIBS) -lm

# The worker ABI contract against the plugin it is given (tests/check_worker_conformance.c), run
# by tests/conformance.sh for each tests/worker-NAME.conformance: the mock, the CPU and the GPU
# worker (a SKIP where that plugin was not built, or without a CUDA device).
check_PROGRAMS += tests/check_worker_conformance
tests_check_worker_conformance_SOURCES = tests/check_worker_conformance.c $(WORKER_HARNESS_SOURCES)
tests_check_worker_conformance_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_worker_conformance_LDADD = $(WORKER_HARNESS_LIBS)
CONFORMANCE_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/conformance.sh
CONFORMANCE_TESTS = tests/worker-mock.conformance tests/worker-cpu.conformance \
	tests/worker-gpu.conformance
TESTS += $(CONFORMANCE_TESTS)
endif
EXTRA_DIST += tests/conformance.sh tests/worker-mock.conformance tests/worker-cpu.conformance \
	tests/worker-gpu.conformance

# duet-run end to end: --check against the mock plugin, errors and exit codes.
TESTS += tests/run_check.sh
EXTRA_DIST += tests/fixtures/broken_worker.c

# duet-run under address-space limits: a clean refusal at load or a full run, never a crash.
TESTS += tests/limits_check.sh
EXTRA_DIST += tests/limits_check.sh
# GGUF files end to end (duet-mkmodel --gguf, duet-model-info, duet-run with a GGUF draft).
TESTS += tests/gguf_check.sh
EXTRA_DIST += tests/gguf_check.sh

# The installed tree: duet-run from $(DESTDIR)$(bindir) against the mock plugin of this build.
installcheck-local: $(check_LTLIBRARIES)
	LD_LIBRARY_PATH='$(DESTDIR)$(libdir)' DUET_PLUGIN_PATH='$(abs_top_builddir)/tests/.libs' \
	  '$(DESTDIR)$(bindir)/duet-run' --config '$(abs_top_srcdir)/examples/mock.cfg' --check

# The Check suites under valgrind, without Check's fork so that leaks are seen. oneDNN is held to
# AVX there: on Intel CPUs (not on the AMD Zen 5 of earlier runs) valgrind 3.19 reports thousands
# of uninitialised values from the stack frames of oneDNN 2.6's AVX2 JIT GEMM kernels, and 32-byte
# reads just past that GEMM's own packing buffers, whatever our code does (the session-start tree
# of 2026-12-07 showed them too); with ONEDNN_MAX_CPU_ISA=AVX they are gone. This run is for our
# memory errors and leaks; the AVX2 and AVX-512 paths are the plain and ASan runs' business.
# The GEMV kernel cases run there too, each ISA through tests/gemv_isa.sh with valgrind as its
# $DUET_TEST_WRAPPER (valgrind's CPU has no AVX-512: that one is a SKIP), and the conformance runs
# through tests/conformance.sh the same way (the GPU worker's is a SKIP there).
VALGRIND_RUN = $(LIBTOOL) --mode=execute $(VALGRIND) --error-exitcode=99 --quiet \
	--leak-check=full --errors-for-leak-kinds=definite \
	--suppressions=$(abs_top_srcdir)/tests/valgrind.supp
check-valgrind:
	@test -n "$(VALGRIND)" || { echo "valgrind not found"; exit 1; }
	ONEDNN_MAX_CPU_ISA=AVX CK_FORK=no DUET_TEST_VALGRIND=1 DUET_TEST_WRAPPER='$(VALGRIND_RUN)' \
	  $(MAKE) $(AM_MAKEFLAGS) check TESTS='$(CHECK_TESTS) $(GEMV_ISA_TESTS) $(CONFORMANCE_TESTS)' \
	  LOG_COMPILER='$(VALGRIND_RUN)'
.PHONY: check-valgrind
EXTRA_DIST += tests/valgrind.supp
