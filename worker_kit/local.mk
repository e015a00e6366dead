# worker_kit: what every worker plugin needs besides its model runner and kernels (worker_kit.h;
# docs/plugin-abi.md, "Writing a worker"): the plugin table and its details, typed settings,
# create / describe / cache checks, the batch checks, the row bookkeeping of execute, scratch.
# A convenience library the plugins (and the mock worker) link.
WORKER_KIT_CPPFLAGS = -I$(top_srcdir)/worker_kit
noinst_LTLIBRARIES += worker_kit/libduet_worker_kit.la
worker_kit_libduet_worker_kit_la_SOURCES = worker_kit/worker_kit.h worker_kit/plugin.c \
	worker_kit/settings.c worker_kit/batch_check.c worker_kit/rows.c worker_kit/arena.c \
	plugin_api/status.c plugin_api/cpulist.h plugin_api/cpulist.c
worker_kit_libduet_worker_kit_la_LIBADD = -lm

if HAVE_CHECK
# The kit on its own (the workers that use it: the conformance suite).
check_PROGRAMS += tests/check_worker_kit
tests_check_worker_kit_SOURCES = tests/check_worker_kit.c tests/check_util.h
tests_check_worker_kit_CPPFLAGS = $(AM_CPPFLAGS) $(WORKER_KIT_CPPFLAGS)
tests_check_worker_kit_CFLAGS = $(TEST_CFLAGS)
tests_check_worker_kit_LDADD = worker_kit/libduet_worker_kit.la $(TEST_LIBS) -lm
CHECK_TESTS += tests/check_worker_kit
endif
