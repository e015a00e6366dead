/* Number and option parsing shared by the command-line tools (cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

bool duet__cli_parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                         unsigned long long *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (*s == '-')
        return false;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool duet__cli_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

const char *duet__cli_option_name(const struct option *options, int val)
{
    for (const struct option *opt = options; opt->name; opt++)
        if (opt->val == val)
            return opt->name;
    return "?";
}
