# engine: the serving loop of DESIGN §7, part of libduet: duet/duet.h. engine-int.h has the file
# map and the direction of calls: engine.c (create, requests) ─► step.c (one scheduler step) ─►
# spec.c, adapt.c (speculation) ─► batch.c (batches) ─► run.c (worker calls, the draft thread)
# ─► verify.c ─► commit.c ─► request.c, util.c. Its verification step (rejection.c: rejection
# sampling, typical acceptance, greedy matching) draws through the shared sampler. Included after
# tests/local.mk: its suites join CHECK_TESTS.
duet_include_HEADERS += include/duet/duet.h
ENGINE_SOURCES = engine/rejection.h engine/rejection.c
libduet_la_SOURCES += $(ENGINE_SOURCES) engine/engine-int.h engine/engine.c engine/step.c \
	engine/spec.c engine/adapt.c engine/batch.c engine/run.c engine/verify.c engine/commit.c \
	engine/request.c engine/util.c engine/flat.c
libduet_la_LIBADD += sampling/libduet_sampling.la

if HAVE_CHECK
# The suite compiles the sources itself: libduet hides the duet__ internals it tests.
check_PROGRAMS += tests/check_rejection
tests_check_rejection_SOURCES = tests/check_rejection.c tests/check_util.h tests/test_rng.h \
	$(ENGINE_SOURCES) plugin_api/util.c
tests_check_rejection_CFLAGS = $(TEST_CFLAGS)
tests_check_rejection_LDADD = sampling/libduet_sampling.la $(CHECK_LIBS) -lm
CHECK_TESTS += tests/check_rejection

# The engine through its public API on generated models with the CPU worker (skips without it).
check_PROGRAMS += tests/check_engine
tests_check_engine_SOURCES = tests/check_engine.c tests/check_util.h tests/test_dirs.h
tests_check_engine_CFLAGS = $(TEST_CFLAGS)
tests_check_engine_LDADD = model/libduet_model_gen.la model/libduet_model.la $(TEST_LIBS) -lm
CHECK_TESTS += tests/check_engine
tests_check_abi_SOURCES += tests/headers/duet.c
endif
