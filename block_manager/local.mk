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
libduet_la_SOURCES += $(BLOCK_MANAGER_SOURCES)

if HAVE_CHECK
# The suite compiles the sources itself (with the test-only checker): libduet hides internals.
check_PROGRAMS += tests/check_block_manager
tests_check_block_manager_SOURCES = tests/check_block_manager.c tests/check_util.h \
	tests/fault.c tests/fault.h \
	$(BLOCK_MANAGER_SOURCES) block_manager/check.c
tests_check_block_manager_CFLAGS = $(TEST_CFLAGS)
# Fault injection: the suite's copy of the sources allocates through the suite's wrappers.
tests_check_block_manager_CPPFLAGS = $(AM_CPPFLAGS) -Dmalloc=duet_test_malloc \
	-Dcalloc=duet_test_calloc -Drealloc=duet_test_realloc
tests_check_block_manager_LDADD = $(TEST_LIBS)
CHECK_TESTS += tests/check_block_manager

tests_check_abi_SOURCES += tests/headers/block_manager.c
endif
