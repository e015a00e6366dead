# Benchmarks, run through duet-bench (docs/performance.md records their results).
bin_PROGRAMS += tools/duet-bench
tools_duet_bench_SOURCES = tools/duet-bench.c tools/cli.c tools/cli.h bench/bench.h bench/harness.c bench/block_manager.c \
	bench/scheduler.c bench/models.c bench/worker.c bench/spec.c
# cpu-worker and spec generate its models in-process (the generator and the reader's internals) and
# finds the "cpu" plugin in the build tree before the install directory.
tools_duet_bench_CPPFLAGS = $(AM_CPPFLAGS) \
	-DDUET_BENCH_PLUGIN_DIR='"$(abs_top_builddir)/cpu_worker/.libs"'
tools_duet_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_bench_LDADD = libduet.la model/libduet_model_gen.la model/libduet_model.la \
	$(JANSSON_LIBS) $(PTHREAD_LIBS) -lm
EXTRA_DIST += bench/run-block-manager.sh bench/run-scheduler.sh bench/run-cpu-worker.sh \
	bench/run-spec.sh

# A smoke run of every benchmark (short budgets, small sizes): they run and print results.
TESTS += tests/bench_smoke.sh
EXTRA_DIST += tests/bench_smoke.sh
