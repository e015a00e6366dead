# Benchmarks, run through duet-bench (docs/performance.md records their results).
bin_PROGRAMS += tools/duet-bench
tools_duet_bench_SOURCES = tools/duet-bench.c tools/cli.c tools/cli.h bench/bench.h bench/harness.c bench/block_manager.c \
	bench/scheduler.c bench/models.c bench/worker.c bench/spec.c bench/overlap.c bench/tokenizer.c \
	bench/peak.c
# cpu-worker and spec generate its models in-process (the generator and the reader's internals) and
# finds the "cpu" plugin in the build tree before the install directory.
tools_duet_bench_CPPFLAGS = $(AM_CPPFLAGS) \
	-DDUET_BENCH_PLUGIN_DIR='"$(abs_top_builddir)/cpu_worker/.libs"' \
	-DDUET_BENCH_MODELLED='"$(abs_top_builddir)/bench/.libs/duet_modelled_worker.so"'
tools_duet_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_bench_LDADD = libduet.la model/libduet_model_gen.la model/libduet_model.la \
	$(JANSSON_LIBS) $(PTHREAD_LIBS) -lm
# gemv: the CPU worker's GEMV kernels alone, built in when the CPU worker is (only the gemv files:
# they need OpenMP but not oneDNN).
if BUILD_CPU_WORKER
tools_duet_bench_SOURCES += bench/gemv.c cpu_worker/gemv.h cpu_worker/gemv.c \
	cpu_worker/cpu_worker-int.h
tools_duet_bench_CPPFLAGS += -DDUET_BENCH_GEMV -I$(top_srcdir)/sampling $(WORKER_KIT_CPPFLAGS)
tools_duet_bench_CFLAGS += $(OPENMP_CFLAGS)
tools_duet_bench_LDADD += $(CPU_WORKER_ISA_LIBS)
tools_duet_bench_LDFLAGS = $(OPENMP_CFLAGS)
else
EXTRA_DIST += bench/gemv.c
endif
# gpu-worker: the GPU worker plugin (found in the build tree's gpu_worker/.libs) beside a
# device-to-device copy's bandwidth (gpu_worker/probe.cu), built in with CUDA; without it the
# subcommand says so and exits 77.
if HAVE_CUDA
tools_duet_bench_SOURCES += bench/gpu.c gpu_worker/probe.h
tools_duet_bench_CPPFLAGS += -DDUET_BENCH_GPU $(CUDA_CPPFLAGS) \
	-DDUET_BENCH_GPU_PLUGIN_DIR='"$(abs_top_builddir)/gpu_worker/.libs"'
tools_duet_bench_LDADD += gpu_worker/libduet_gpu_kernels.la $(CUDA_LDFLAGS) $(CUDA_LIBS)
else
EXTRA_DIST += bench/gpu.c
endif
EXTRA_DIST += bench/run-block-manager.sh bench/run-scheduler.sh bench/run-cpu-worker.sh bench/run-gemv.sh bench/run-score.sh \
	bench/run-spec.sh bench/run-gpu-worker.sh bench/torch_llama.py bench/run-server.sh \
	bench/server_load.mjs bench/run-overlap.sh

# overlap's target: a worker plugin that pads a real worker's execute() to a modelled GPU time
# (bench/modelled_worker.c). Built with the tree (duet-bench overlap uses it from there), never
# installed; its inner worker defaults to the build tree's CPU worker.
noinst_LTLIBRARIES += bench/duet_modelled_worker.la
bench_duet_modelled_worker_la_SOURCES = bench/modelled_worker.c
bench_duet_modelled_worker_la_CPPFLAGS = $(AM_CPPFLAGS) $(WORKER_KIT_CPPFLAGS) \
	-DDUET_MODELLED_INNER='"$(abs_top_builddir)/cpu_worker/.libs/duet_cpu_worker.so"'
bench_duet_modelled_worker_la_LDFLAGS = $(TEST_PLUGIN_LDFLAGS)
bench_duet_modelled_worker_la_LIBADD = worker_kit/libduet_worker_kit.la

# A smoke run of every benchmark (short budgets, small sizes): they run and print results.
TESTS += tests/bench_smoke.sh
EXTRA_DIST += tests/bench_smoke.sh
