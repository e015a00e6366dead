# engine: the serving loop of DESIGN §7, part of libduet. For now its verification step
# (rejection sampling, typical acceptance, greedy matching), which draws through the shared
# sampler. Included after tests/local.mk: its suite joins CHECK_TESTS.
ENGINE_SOURCES = engine/rejection.h engine/rejection.c
libduet_la_SOURCES += $(ENGINE_SOURCES)
libduet_la_LIBADD += sampling/libduet_sampling.la

if HAVE_CHECK
# The suite compiles the sources itself: libduet hides the duet__ internals it tests.
check_PROGRAMS += tests/check_rejection
tests_check_rejection_SOURCES = tests/check_rejection.c tests/check_util.h $(ENGINE_SOURCES)
tests_check_rejection_CFLAGS = $(TEST_CFLAGS)
tests_check_rejection_LDADD = sampling/libduet_sampling.la $(CHECK_LIBS) -lm
CHECK_TESTS += tests/check_rejection
endif
