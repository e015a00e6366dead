# model: Hugging Face folders (config.json, safetensors) and the test-model generator
# (docs/models.md). Included after tests/local.mk: its suite joins CHECK_TESTS.
#
#   model/libduet_model.la      the reader: linked into libduet (which exports the duet_model_*
#                               API of include/duet/model.h) and into each worker plugin (where
#                               the plugin's version script hides it)
#   model/libduet_model_gen.la  the generator: duet-mkmodel and the tests only
duet_include_HEADERS += include/duet/model.h

MODEL_SOURCES = \
	model/model-int.h \
	model/model_gen.h \
	model/hf_config.c \
	model/dtype.c \
	model/gguf.c \
	model/index.c \
	model/layout.c \
	model/model.c \
	model/safetensors.c \
	model/util.c
MODEL_GEN_SOURCES = \
	model/draft.c \
	model/generate.c \
	model/gguf_write.c \
	model/presets.c \
	model/write.c

noinst_LTLIBRARIES += model/libduet_model.la model/libduet_model_gen.la
model_libduet_model_la_SOURCES = $(MODEL_SOURCES)
model_libduet_model_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
model_libduet_model_la_LIBADD = $(JANSSON_LIBS) -lm
model_libduet_model_gen_la_SOURCES = $(MODEL_GEN_SOURCES)
model_libduet_model_gen_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)

libduet_la_LIBADD += model/libduet_model.la

# ---- tools -------------------------------------------------------------------------------
bin_PROGRAMS += tools/duet-mkmodel tools/duet-model-info
# --tokenizer links the tokenizer's own objects (tokenizer/local.mk), as the fuzz replay does.
tools_duet_mkmodel_SOURCES = tools/duet-mkmodel.c tools/cli.c tools/cli.h \
	tools/mkmodel_tokenizer.c tools/mkmodel_tokenizer.h
tools_duet_mkmodel_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_mkmodel_LDADD = model/libduet_model_gen.la model/libduet_model.la \
	tokenizer/libduet_tokenizer.la $(TOKENIZER_LIBS) $(PTHREAD_LIBS) $(JANSSON_LIBS) -lm
tools_duet_model_info_SOURCES = tools/duet-model-info.c
tools_duet_model_info_LDADD = libduet.la

# ---- tests -------------------------------------------------------------------------------
if HAVE_CHECK
# The suite links the part's own objects: it reads internals (model-int.h) and injects
# allocation failures (malloc, calloc, realloc renamed to its wrappers in those objects,
# tests/fault.mk; jansson's through json_set_alloc_funcs).
check_PROGRAMS += tests/check_model
tests_check_model_SOURCES = tests/check_model.c tests/check_model_cxx.cc tests/check_util.h \
	tests/test_dirs.h \
	tests/fault.c tests/fault.h \
	tests/reference_forward.c tests/reference_forward.h
tests_check_model_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_model_CXXFLAGS = $(AM_CXXFLAGS) -std=c++11
tests_check_model_LDADD = tests/fault-model_gen.a tests/fault-model.a $(CHECK_LIBS) $(JANSSON_LIBS) -lm
CHECK_TESTS += tests/check_model
tests_check_abi_SOURCES += tests/headers/model.c

# GGUF files: the parser's refusals on images built byte by byte, files written and read back.
check_PROGRAMS += tests/check_gguf
tests_check_gguf_SOURCES = tests/check_gguf.c tests/check_util.h tests/test_dirs.h \
	tests/fault.c tests/fault.h
tests_check_gguf_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_gguf_LDADD = tests/fault-model_gen.a tests/fault-model.a $(CHECK_LIBS) \
	$(JANSSON_LIBS) -lm
CHECK_TESTS += tests/check_gguf

# Greedy agreement of a draft with its target (docs/models.md): a measuring tool, not a test.
check_PROGRAMS += tests/model_agreement
tests_model_agreement_SOURCES = tests/model_agreement.c tests/reference_forward.c \
	tests/reference_forward.h
tests_model_agreement_LDADD = model/libduet_model.la $(JANSSON_LIBS) -lm
endif

# duet-mkmodel and duet-model-info end to end: flags, exit codes, messages.
TESTS += tests/model_tools.sh
EXTRA_DIST += tests/model_tools.sh

# ---- fuzzing -----------------------------------------------------------------------------
# make check replays the seed corpus through the fuzz targets, built with the normal compiler.
check_PROGRAMS += fuzz/replay_safetensors fuzz/replay_config fuzz/replay_gguf
fuzz_replay_safetensors_SOURCES = fuzz/replay.c fuzz/fuzz_safetensors.c
fuzz_replay_safetensors_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"safetensors"'
fuzz_replay_safetensors_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
fuzz_replay_safetensors_LDADD = model/libduet_model.la $(JANSSON_LIBS) -lm
fuzz_replay_gguf_SOURCES = fuzz/replay.c fuzz/fuzz_gguf.c
fuzz_replay_gguf_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"gguf"'
fuzz_replay_gguf_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
fuzz_replay_gguf_LDADD = model/libduet_model.la tokenizer/libduet_tokenizer.la $(JANSSON_LIBS) \
	$(TOKENIZER_LIBS) $(PTHREAD_LIBS) -lm
fuzz_replay_config_SOURCES = fuzz/replay.c fuzz/fuzz_config.c
fuzz_replay_config_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"config"'
fuzz_replay_config_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
fuzz_replay_config_LDADD = model/libduet_model.la $(JANSSON_LIBS) -lm
check_PROGRAMS += fuzz/replay_duet_config
fuzz_replay_duet_config_SOURCES = fuzz/replay.c fuzz/fuzz_duet_config.c
fuzz_replay_duet_config_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"duet_config"'
fuzz_replay_duet_config_LDADD = libduet.la
TESTS += fuzz/replay_safetensors fuzz/replay_config fuzz/replay_duet_config fuzz/replay_gguf
EXTRA_DIST += fuzz/corpus fuzz/safetensors.dict fuzz/config.dict fuzz/duet_config.dict \
	fuzz/gguf.dict \
	fuzz/lsan.supp

# make fuzz: libFuzzer builds (clang, ASan + UBSan) run FUZZ_SECONDS each; new inputs go to
# fuzz/work/TARGET in the build tree, crashes to fuzz/artifacts/.
FUZZ_SECONDS = 60
FUZZ_CC = clang
FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_MODEL_C = $(patsubst %,$(top_srcdir)/%,$(filter %.c,$(MODEL_SOURCES)))
FUZZ_BUILD = $(MKDIR_P) fuzz && $(FUZZ_CC) $(FUZZ_CFLAGS) -DHAVE_CONFIG_H -I$(top_builddir) \
	$(AM_CPPFLAGS) $(JANSSON_CFLAGS) -o $@

fuzz/fuzz-safetensors: $(top_srcdir)/fuzz/fuzz_safetensors.c $(FUZZ_MODEL_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(top_srcdir)/fuzz/fuzz_safetensors.c $(FUZZ_MODEL_C) \
	  $(JANSSON_LIBS) -lm
fuzz/fuzz-gguf: $(top_srcdir)/fuzz/fuzz_gguf.c $(FUZZ_MODEL_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(PCRE2_CFLAGS) $(UTF8PROC_CFLAGS) $(top_srcdir)/fuzz/fuzz_gguf.c \
	  $(FUZZ_MODEL_C) $(FUZZ_TOKENIZER_C) $(JANSSON_LIBS) $(TOKENIZER_LIBS) -lpthread -lm
fuzz/fuzz-config: $(top_srcdir)/fuzz/fuzz_config.c $(FUZZ_MODEL_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(top_srcdir)/fuzz/fuzz_config.c $(FUZZ_MODEL_C) $(JANSSON_LIBS) -lm

FUZZ_DUET_CONFIG_C = $(top_srcdir)/plugin_api/schema.c $(top_srcdir)/plugin_api/settings.c \
	$(top_srcdir)/plugin_api/settings_parse.c $(top_srcdir)/plugin_api/settings_print.c \
	$(top_srcdir)/plugin_api/util.c $(top_srcdir)/plugin_api/status.c
fuzz/fuzz-duet_config: $(top_srcdir)/fuzz/fuzz_duet_config.c $(FUZZ_DUET_CONFIG_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(LIBCONFIG_CFLAGS) -DDUET_PKGLIBDIR='"$(pkglibdir)"' \
	  $(top_srcdir)/fuzz/fuzz_duet_config.c $(FUZZ_DUET_CONFIG_C) $(LIBCONFIG_LIBS) -lm

# Other parts add their targets to FUZZ_TARGETS and fuzz's prerequisites (tokenizer/local.mk).
FUZZ_TARGETS = safetensors config duet_config gguf
fuzz: fuzz/fuzz-safetensors fuzz/fuzz-config fuzz/fuzz-duet_config fuzz/fuzz-gguf
	@for t in $(FUZZ_TARGETS); do \
	  $(MKDIR_P) fuzz/work/$$t fuzz/artifacts && \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s" && \
	  LSAN_OPTIONS=suppressions=$(abs_top_srcdir)/fuzz/lsan.supp:print_suppressions=0 \
	  ./fuzz/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -dict=$(top_srcdir)/fuzz/$$t.dict -artifact_prefix=fuzz/artifacts/$$t- \
	    fuzz/work/$$t $(top_srcdir)/fuzz/corpus/$$t \
	    || exit 1; \
	done
clean-fuzz:
	rm -rf fuzz/work fuzz/artifacts $(FUZZ_TARGETS:%=fuzz/fuzz-%)
clean-local: clean-fuzz
.PHONY: fuzz clean-fuzz
