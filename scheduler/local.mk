# scheduler: continuous batching over the block manager (DESIGN §6), part of libduet.
# Included after block_manager/local.mk: its suite joins CHECK_TESTS (which TESTS already
# expands), its header the per-header compile checks of check_abi.
duet_include_HEADERS += include/duet/scheduler.h

SCHEDULER_SOURCES = \
	scheduler/scheduler-int.h \
	scheduler/budget.c \
	scheduler/group.c \
	scheduler/map.c \
	scheduler/policy.c \
	scheduler/queue.c \
	scheduler/scheduler.c \
	scheduler/step.c \
	scheduler/update.c
# A convenience library: libduet links it, and so does the suite (through tests/fault.mk).
noinst_LTLIBRARIES += scheduler/libduet_scheduler.la
scheduler_libduet_scheduler_la_SOURCES = $(SCHEDULER_SOURCES)
libduet_la_LIBADD += scheduler/libduet_scheduler.la

if HAVE_CHECK
# The suite links the part's own objects (internals, fault injection: tests/fault.mk) and takes
# the block manager from libduet.
check_PROGRAMS += tests/check_scheduler
tests_check_scheduler_SOURCES = tests/check_scheduler.c tests/check_util.h \
	tests/fault.c tests/fault.h
tests_check_scheduler_CFLAGS = $(TEST_CFLAGS)
tests_check_scheduler_LDADD = tests/fault-scheduler.a $(TEST_LIBS)
CHECK_TESTS += tests/check_scheduler

tests_check_abi_SOURCES += tests/headers/scheduler.c
endif
