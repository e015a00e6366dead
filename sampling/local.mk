# sampling: logits → token (temperature, top-k, top-p, min-p, seeded draws, log-probabilities),
# shared by the workers and the engine.
# A convenience library linked into each of them.
SAMPLING_SOURCES = sampling/sampling.c sampling/penalty.c sampling/sampling.h
noinst_LTLIBRARIES += sampling/libduet_sampling.la
sampling_libduet_sampling_la_SOURCES = $(SAMPLING_SOURCES)
sampling_libduet_sampling_la_LIBADD = -lm

if HAVE_CHECK
check_PROGRAMS += tests/check_sampling
tests_check_sampling_SOURCES = tests/check_sampling.c tests/check_util.h tests/test_rng.h
tests_check_sampling_CFLAGS = $(TEST_CFLAGS)
tests_check_sampling_LDADD = sampling/libduet_sampling.la $(CHECK_LIBS) -lm
CHECK_TESTS += tests/check_sampling
endif
