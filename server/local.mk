# server: the OpenAI-compatible serving loop behind duet-server (include/duet/server.h,
# docs/server.md), part of libduet so that a host runtime can embed it. server-int.h has the file
# map: request.c (JSON body ─► request, pure) ◄─ server.c (HTTP: libmicrohttpd) ─► generate.c
# (completions) ─► loop.c (the engine thread).
duet_include_HEADERS += include/duet/server.h
SERVER_REQUEST_SOURCES = server/server-int.h server/request.c
libduet_la_SOURCES += $(SERVER_REQUEST_SOURCES) server/server.c server/generate.c server/loop.c \
	server/metrics.c server/logprobs.c
libduet_la_CPPFLAGS += $(JANSSON_CFLAGS) $(MHD_CFLAGS)
libduet_la_LIBADD += $(JANSSON_LIBS) $(MHD_LIBS)

bin_PROGRAMS += tools/duet-server
tools_duet_server_SOURCES = tools/duet-server.c tools/cli.c tools/cli.h
tools_duet_server_LDADD = libduet.la $(PTHREAD_LIBS)

if HAVE_CHECK
tests_check_abi_SOURCES += tests/headers/server.c
# The request parser on its own (the suite compiles it: libduet hides the duet__ internals).
check_PROGRAMS += tests/check_server
tests_check_server_SOURCES = tests/check_server.c tests/check_util.h $(SERVER_REQUEST_SOURCES)
tests_check_server_CFLAGS = $(TEST_CFLAGS) $(JANSSON_CFLAGS)
tests_check_server_LDADD = $(JANSSON_LIBS) $(CHECK_LIBS)
CHECK_TESTS += tests/check_server
endif

# duet-server end to end with curl on a tiny generated model and draft with a real tokenizer.
TESTS += tests/server_check.sh
EXTRA_DIST += tests/server_check.sh tests/prom_check.mjs

# 64 concurrent streaming clients x 4 requests, 8 rounds: outputs equal to each prompt alone,
# flat RSS, clients that leave mid-stream free their blocks (a few seconds; node's http module).
TESTS += tests/server_load.sh
EXTRA_DIST += tests/server_load.sh tests/server_load.mjs tests/server_lib.sh

# The official openai npm client against duet-server (cached like tests/tokenizer_ref.sh's
# packages in tests/server-npm; distclean removes it; a SKIP without the registry).
TESTS += tests/server_openai.sh
EXTRA_DIST += tests/server_openai.sh tests/server_openai.mjs

# ---- fuzzing -----------------------------------------------------------------------------
# make check replays fuzz/corpus/server_request through the parser; make fuzz runs it.
check_PROGRAMS += fuzz/replay_server_request
fuzz_replay_server_request_SOURCES = fuzz/replay.c fuzz/fuzz_server_request.c \
	$(SERVER_REQUEST_SOURCES)
fuzz_replay_server_request_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_TARGET='"server_request"'
fuzz_replay_server_request_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
fuzz_replay_server_request_LDADD = $(JANSSON_LIBS)
TESTS += fuzz/replay_server_request
EXTRA_DIST += fuzz/server_request.dict

FUZZ_TARGETS += server_request
fuzz/fuzz-server_request: $(top_srcdir)/fuzz/fuzz_server_request.c $(top_srcdir)/server/request.c
	$(AM_V_CC)$(FUZZ_BUILD) $(JANSSON_CFLAGS) $(top_srcdir)/fuzz/fuzz_server_request.c \
	  $(top_srcdir)/server/request.c $(JANSSON_LIBS)
fuzz: fuzz/fuzz-server_request
