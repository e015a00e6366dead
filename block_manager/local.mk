# block_manager: the paged-KV v2 block manager (DESIGN §5), part of libduet.
# Included after tests/local.mk: its suite joins CHECK_TESTS (which TESTS already expands), its
# header the per-header compile checks of check_abi.
duet_include_HEADERS += include/duet/block_manager.h

BLOCK_MANAGER_SOURCES = \
	block_manager/block_manager-int.h \
	block_manager/allocator.c \
	block_manager/block_table.c \
	block_manager/evictor.c \
	block_manager/hash.c \
	block_manager/manager.c \
	block_manager/map.c \
	block_manager/swap.c
# A convenience library: libduet links it, and so does the suite (through tests/fault.mk).
noinst_LTLIBRARIES += block_manager/libduet_block_manager.la
block_manager_libduet_block_manager_la_SOURCES = $(BLOCK_MANAGER_SOURCES)
libduet_la_LIBADD += block_manager/libduet_block_manager.la

if HAVE_CHECK
# The suite links the part's own objects (libduet hides internals), their allocator renamed to
# tests/fault.c's (tests/fault.mk), and the test-only checker.
check_PROGRAMS += tests/check_block_manager
tests_check_block_manager_SOURCES = tests/check_block_manager.c tests/check_util.h \
	tests/fault.c tests/fault.h block_manager/check.c
tests_check_block_manager_CFLAGS = $(TEST_CFLAGS)
tests_check_block_manager_LDADD = tests/fault-block_manager.a $(TEST_LIBS)
CHECK_TESTS += tests/check_block_manager

tests_check_abi_SOURCES += tests/headers/block_manager.c
endif
