# Command-line tools.
bin_PROGRAMS += tools/duet-run
tools_duet_run_SOURCES = tools/duet-run.c tools/cli.c tools/cli.h
tools_duet_run_LDADD = libduet.la -lm
