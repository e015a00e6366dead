# Command-line tools.
bin_PROGRAMS += tools/duet-run
tools_duet_run_SOURCES = tools/duet-run.c tools/cli.c tools/cli.h tools/run_text.c \
	tools/run_text.h
tools_duet_run_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tools_duet_run_LDADD = libduet.la $(JANSSON_LIBS) -lm
