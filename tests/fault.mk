# Allocation fault injection through a link-time seam (tests/fault.h): a suite links a part's
# own convenience archive — the objects libduet and the plugins link, compiled once — with
# malloc, calloc and realloc renamed to tests/fault.c's wrappers. Every allocation of the part
# (and those the compiler writes itself, a malloc + memset turned into calloc) goes through them;
# the suite's own code keeps the real allocator.
FAULT_RENAME = --redefine-sym malloc=duet_test_malloc --redefine-sym calloc=duet_test_calloc \
	--redefine-sym realloc=duet_test_realloc
FAULT_ARCHIVES = tests/fault-block_manager.a tests/fault-scheduler.a tests/fault-model.a \
	tests/fault-model_gen.a tests/fault-tokenizer.a
CLEANFILES += $(FAULT_ARCHIVES)
EXTRA_DIST += tests/fault.mk

tests/fault-block_manager.a: block_manager/libduet_block_manager.la
	$(AM_V_GEN)$(MKDIR_P) tests && $(OBJCOPY) $(FAULT_RENAME) block_manager/.libs/libduet_block_manager.a $@
tests/fault-scheduler.a: scheduler/libduet_scheduler.la
	$(AM_V_GEN)$(MKDIR_P) tests && $(OBJCOPY) $(FAULT_RENAME) scheduler/.libs/libduet_scheduler.a $@
tests/fault-model.a: model/libduet_model.la
	$(AM_V_GEN)$(MKDIR_P) tests && $(OBJCOPY) $(FAULT_RENAME) model/.libs/libduet_model.a $@
tests/fault-model_gen.a: model/libduet_model_gen.la
	$(AM_V_GEN)$(MKDIR_P) tests && $(OBJCOPY) $(FAULT_RENAME) model/.libs/libduet_model_gen.a $@
tests/fault-tokenizer.a: tokenizer/libduet_tokenizer.la
	$(AM_V_GEN)$(MKDIR_P) tests && $(OBJCOPY) $(FAULT_RENAME) tokenizer/.libs/libduet_tokenizer.a $@
