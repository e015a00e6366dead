# Benchmarks, run through duet-bench (docs/performance.md records their results).
bin_PROGRAMS += tools/duet-bench
tools_duet_bench_SOURCES = tools/duet-bench.c bench/bench.h bench/harness.c bench/block_manager.c \
	bench/scheduler.c
tools_duet_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_bench_LDADD = libduet.la $(JANSSON_LIBS)
EXTRA_DIST += bench/run-block-manager.sh bench/run-scheduler.sh

# A smoke run of every benchmark (short budgets, small sizes): they run and print results.
TESTS += tests/bench_smoke.sh
EXTRA_DIST += tests/bench_smoke.sh
