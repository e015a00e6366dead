/*
 * settings_print.c — duet_config_print: the resolved configuration in libconfig syntax.
 *
 * Top-level keys first, then one group per schema group (speculative only when present), every
 * key with a value in schema order, each followed by a comment naming its source. What it writes
 * loads back into an equal configuration (tests/check_config.c round-trips it).
 */
#include "plugin_api-int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes s as a libconfig string literal. */
static void print_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c == '\t')
            fputs("\\t", f);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, "\\x%02x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* Writes x with the fewest digits that read back as x (at most %.17g), adding ".0" when that
 * alone would read back as an integer. */
static void print_float(FILE *f, double x)
{
    char buf[32];

    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    fputs(buf, f);
    if (!strpbrk(buf, ".eEn"))
        fputs(".0", f);
}

/* Writes a comment's text, replacing control characters that would end or break it. */
static void print_comment(FILE *f, const char *text)
{
    fputs(" # ", f);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        fputc(*c < 0x20 || *c == 0x7f ? '?' : *c, f);
    fputc('\n', f);
}

static void print_key(const duet_config *cfg, FILE *f, int k, const char *indent)
{
    const struct slot *slot = &cfg->t.slots[k];
    int64_t i;

    if (!slot->set && (duet__keys[k].flags & (KEY_REQUIRED | KEY_NO_DEFAULT)))
        return;
    fprintf(f, "%s%s = ", indent, duet__last_component(duet__keys[k].path));
    switch (duet__keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        print_string(f, slot->set ? slot->v.s : duet__keys[k].def_s);
        break;
    case DUET_CONFIG_TYPE_INT:
        i = duet__int_of(cfg, k);
        fprintf(f, "%" PRId64 "%s", i, i < INT32_MIN || i > INT32_MAX ? "L" : "");
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        print_float(f, slot->set ? slot->v.f : duet__keys[k].def_f);
        break;
    case DUET_CONFIG_TYPE_BOOL:
        fputs(duet__bool_of(cfg, k) ? "true" : "false", f);
        break;
    }
    fputc(';', f);
    print_comment(f, duet_config_source(cfg, duet__keys[k].path));
}

DUET_API duet_status duet_config_print(const duet_config *cfg, FILE *f)
{
    if (!cfg || !f)
        return DUET_STATUS_INVALID_ARGUMENT;
    for (int k = 0; k < N_KEYS; k++)
        if (duet__keys[k].group == GROUP_TOP)
            print_key(cfg, f, k, "");
    for (int g = 0; g < N_GROUPS; g++) {
        if (g == GROUP_SPECULATIVE && !cfg->t.groups[g].present)
            continue;
        fprintf(f, "\n%s = {\n", duet__group_names[g]);
        for (int k = 0; k < N_KEYS; k++)
            if (duet__keys[k].group == (enum group)g)
                print_key(cfg, f, k, "    ");
        fputs("};\n", f);
    }
    if (fflush(f) != 0 || ferror(f))
        return DUET_STATUS_IO;
    return DUET_STATUS_OK;
}
