/* cli.h — what the command-line tools (duet-run, duet-mkmodel, duet-bench) parse alike. */
#ifndef DUET_TOOLS_CLI_H
#define DUET_TOOLS_CLI_H

#include <getopt.h>
#include <stdbool.h>

/* A whole unsigned decimal number in [lo, hi] (no sign, nothing after it). */
bool duet__cli_parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                         unsigned long long *out);
/* A finite number in [lo, hi] (strtod syntax, nothing after it). */
bool duet__cli_parse_double(const char *s, double lo, double hi, double *out);
/* The long name of the option whose val is val in options (NULL-name terminated); "?" if none. */
const char *duet__cli_option_name(const struct option *options, int val);

#endif /* DUET_TOOLS_CLI_H */
