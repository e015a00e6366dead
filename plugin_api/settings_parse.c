/*
 * settings_parse.c — reading a configuration: libconfig files and strings, and --set overrides.
 *
 * Both check each value against the schema (schema.c) as they read it and name where it came
 * from in every message: "FILE:LINE: KEY: what is wrong" for a file, "--set ASSIGNMENT: KEY: ..."
 * for an override.
 *
 * A file or string is parsed by libconfig, then its tree walked into a staging table (struct
 * loader); the staged slots replace cfg's only when every setting passed, and never a slot an
 * override set. Before libconfig sees a file, check_file() refuses what its scanner cannot take
 * safely: a FIFO (which would block), a directory @include (which exits the process), anything
 * over DUET_CONFIG_MAX_BYTES (quadratic parsing), includes nested too deep.
 *
 * An override is split at '=', its value read strictly as the key's type (parse_int, ...), then
 * checked and stored, creating the key's group when it is absent.
 */
#define _POSIX_C_SOURCE 200809L
#include "plugin_api-int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *type_name(duet_config_type type)
{
    switch (type) {
    case DUET_CONFIG_TYPE_STRING:
        return "a string";
    case DUET_CONFIG_TYPE_INT:
        return "an integer";
    case DUET_CONFIG_TYPE_FLOAT:
        return "a number";
    case DUET_CONFIG_TYPE_BOOL:
        return "a boolean (true or false)";
    }
    return "a value";
}

static const char *setting_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    }
    return "a value of unknown type";
}

/* ---- loading a file ---------------------------------------------------------------------- */

struct loader {
    duet_config *cfg; /* receives the error */
    struct table *t;  /* staging table, moved into cfg on success */
    const char *name; /* the file name given to load */
};

/* "FILE:LINE" of a setting, malloc'd; FILE is the included file's name or the loaded one. */
static char *setting_where(const struct loader *ld, const config_setting_t *s)
{
    const char *file = config_setting_source_file(s);

    return duet__format("%s:%u", file ? file : ld->name, (unsigned)config_setting_source_line(s));
}

/* Reads the value of s as duet__keys[k]'s type into *v (a string is copied). */
static duet_status setting_value(const struct loader *ld, const config_setting_t *s, int k,
                                 const char *where, union value *v)
{
    int type = config_setting_type(s);
    bool is_int = type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64;

    switch (duet__keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        if (type != CONFIG_TYPE_STRING)
            break;
        v->s = strdup(config_setting_get_string(s));
        return v->s ? DUET_STATUS_OK : duet__config_fail_oom(ld->cfg);
    case DUET_CONFIG_TYPE_INT:
        if (!is_int)
            break;
        v->i = config_setting_get_int64(s);
        return DUET_STATUS_OK;
    case DUET_CONFIG_TYPE_FLOAT:
        if (!is_int && type != CONFIG_TYPE_FLOAT)
            break;
        v->f = is_int ? (double)config_setting_get_int64(s) : config_setting_get_float(s);
        return DUET_STATUS_OK;
    case DUET_CONFIG_TYPE_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            break;
        v->b = config_setting_get_bool(s);
        return DUET_STATUS_OK;
    }
    return duet__config_fail(ld->cfg, DUET_STATUS_BAD_CONFIG, where, duet__keys[k].path,
                             "must be %s, got %s", type_name(duet__keys[k].type),
                             setting_type_name(s));
}

/* Checks setting s as the value of duet__keys[k] and stages it. */
static duet_status load_key(struct loader *ld, const config_setting_t *s, int k)
{
    union value v = {0};
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return duet__config_fail_oom(ld->cfg);
    st = setting_value(ld, s, k, where, &v);
    if (st)
        goto out_free_where;
    st = duet__check_value(ld->cfg, where, k, &v);
    if (st)
        goto out_free_value;
    duet__slot_assign(&ld->t->slots[k], duet__keys[k].type, v, where, false);
    return DUET_STATUS_OK;

out_free_value:
    if (duet__keys[k].type == DUET_CONFIG_TYPE_STRING)
        free(v.s);
out_free_where:
    free(where);
    return st;
}

/* Reports an unknown setting, or a setting in an unknown place, at s. */
static duet_status load_unknown(struct loader *ld, const config_setting_t *s, const char *path,
                                const char *what)
{
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return duet__config_fail_oom(ld->cfg);
    st = duet__fail_unknown(ld->cfg, where, path, what);
    free(where);
    return st;
}

static duet_status load_group_member(struct loader *ld, enum group g, const config_setting_t *s)
{
    char *path = duet__format("%s.%s", duet__group_names[g], config_setting_name(s));
    duet_status st;
    int k;

    if (!path)
        return duet__config_fail_oom(ld->cfg);
    k = duet__key_find(path);
    st = k >= 0 ? load_key(ld, s, k) : load_unknown(ld, s, path, "unknown key");
    free(path);
    return st;
}

/* Marks group g present at s and loads its members. */
static duet_status load_group(struct loader *ld, enum group g, const config_setting_t *s)
{
    char *where = setting_where(ld, s);
    duet_status st;

    if (!where)
        return duet__config_fail_oom(ld->cfg);
    if (!config_setting_is_group(s)) {
        st = duet__config_fail(ld->cfg, DUET_STATUS_BAD_CONFIG, where, duet__group_names[g],
                               "must be a group, got %s", setting_type_name(s));
        free(where);
        return st;
    }
    ld->t->groups[g].present = true;
    ld->t->groups[g].where = where;
    for (int i = 0; i < config_setting_length(s); i++) {
        st = load_group_member(ld, g, config_setting_get_elem(s, i));
        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

static duet_status load_root(struct loader *ld, const config_setting_t *root)
{
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *s = config_setting_get_elem(root, i);
        const char *name = config_setting_name(s);
        int g = duet__group_find(name), k = duet__key_find(name);
        duet_status st;

        if (g >= 0)
            st = load_group(ld, (enum group)g, s);
        else if (k >= 0)
            st = load_key(ld, s, k);
        else
            st = load_unknown(ld, s, name,
                              config_setting_is_group(s) ? "unknown group" : "unknown key");
        if (st)
            return st;
    }
    return DUET_STATUS_OK;
}

/* Moves the staged values into cfg; a slot already set by an override keeps its value. */
static void commit_staged(duet_config *cfg, struct table *staged)
{
    cfg->validated = false;
    for (int k = 0; k < N_KEYS; k++) {
        struct slot *slot = &cfg->t.slots[k];

        if (!staged->slots[k].set || slot->from_set)
            continue;
        duet__slot_clear(slot, duet__keys[k].type);
        *slot = staged->slots[k];
        staged->slots[k] = (struct slot){0};
    }
    for (int g = 0; g < N_GROUPS; g++) {
        if (!staged->groups[g].present)
            continue;
        free(cfg->t.groups[g].where);
        cfg->t.groups[g] = staged->groups[g];
        staged->groups[g] = (struct group_state){0};
    }
}

static duet_status parse_failed(duet_config *cfg, const config_t *lc, const char *name, int err)
{
    const char *file = config_error_file(lc) ? config_error_file(lc) : name;
    const char *text;
    char *where;
    duet_status st;

    if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
        return duet__config_fail(cfg, DUET_STATUS_IO, name, NULL, "cannot read: %s",
                                 err ? strerror(err) : "not a readable file");
    where = duet__format("%s:%d", file, config_error_line(lc));
    if (!where)
        return duet__config_fail_oom(cfg);
    text = config_error_text(lc) ? config_error_text(lc) : "syntax error";
    /* libconfig's text is often just "syntax error": do not say it twice. */
    if (strcmp(text, "syntax error") == 0)
        st = duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL, "syntax error");
    else
        st = duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL, "syntax error: %s", text);
    free(where);
    return st;
}

/* Walks what libconfig parsed (ok) into cfg, or reports why it did not parse. */
static duet_status load_parsed(duet_config *cfg, const config_t *lc, int ok, int err,
                               const char *name)
{
    struct table staged = {0};
    struct loader ld = {.cfg = cfg, .t = &staged, .name = name};
    duet_status st;
    char *name_copy;

    if (!ok)
        return parse_failed(cfg, lc, name, err);
    st = load_root(&ld, config_root_setting(lc));
    if (st)
        goto out_free_staged;
    name_copy = strdup(name);
    if (!name_copy) {
        st = duet__config_fail_oom(cfg);
        goto out_free_staged;
    }
    cfg->name = name_copy;
    commit_staged(cfg, &staged);
out_free_staged:
    duet__table_fini(&staged);
    return st;
}

static duet_status begin_load(duet_config *cfg)
{
    duet__config_clear_error(cfg);
    if (cfg->name)
        return duet__config_fail(cfg, DUET_STATUS_INVALID_ARGUMENT, NULL, NULL,
                                 "a configuration is loaded only once; %s is already loaded",
                                 cfg->name);
    return DUET_STATUS_OK;
}

#define MAX_INCLUDE_DEPTH 10 /* libconfig's own limit */

static duet_status check_file(duet_config *cfg, const char *path, const char *where, int depth);

/* The @include lines of text (a file's contents, or a string loaded under `name`): each target
 * must pass check_file too, for libconfig's scanner exits the process (exit(2)) on an include
 * that is a directory. A target that cannot be opened is left to libconfig, whose message names
 * it. Lines are read as libconfig's scanner does: @include first on the line (after blanks), then
 * a quoted path, relative to the current directory. */
static duet_status check_includes(duet_config *cfg, const char *text, const char *name, int depth)
{
    unsigned line = 1;

    for (const char *p = text; *p; line++) {
        const char *eol = strchr(p, '\n'), *q = p;

        while (*q == ' ' || *q == '\t')
            q++;
        if (strncmp(q, "@include", 8) == 0) {
            const char *open_q = strchr(q + 8, '"'), *close_q;

            close_q = open_q && (!eol || open_q < eol) ? strchr(open_q + 1, '"') : NULL;
            if (close_q && (!eol || close_q < eol)) {
                char *target = strndup(open_q + 1, (size_t)(close_q - open_q - 1));
                char *where = duet__format("%s:%u", name, line);
                duet_status st;

                if (!target || !where) {
                    free(target);
                    free(where);
                    return duet__config_fail_oom(cfg);
                }
                st = check_file(cfg, target, where, depth + 1);
                free(target);
                free(where);
                if (st)
                    return st;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return DUET_STATUS_OK;
}

/* A configuration file that libconfig may read: a regular file (a FIFO would block the read for
 * ever) of at most DUET_CONFIG_MAX_BYTES, whose @include targets are such files too. Opened
 * without blocking, so a FIFO is seen, not waited on; a file that cannot be opened is left to
 * libconfig, whose message names the reason. `where` prefixes messages: the path itself, or the
 * "file:line" of the @include that names it. */
static duet_status check_file(duet_config *cfg, const char *path, const char *where, int depth)
{
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    duet_status st = DUET_STATUS_OK;
    char *text = NULL;

    if (fd < 0)
        return DUET_STATUS_OK;
    if (depth > MAX_INCLUDE_DEPTH)
        st = duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
                               "@include \"%s\": includes nest deeper than %d", path,
                               MAX_INCLUDE_DEPTH);
    else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = duet__config_fail(cfg, DUET_STATUS_IO, where, NULL,
                               depth ? "@include \"%s\": not a regular file"
                                     : "cannot read: not a regular file",
                               path);
    else if ((uint64_t)sb.st_size > DUET_CONFIG_MAX_BYTES && depth)
        st = duet__config_fail(
            cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
            "@include \"%s\": %lld bytes is too large for a configuration (at most %u)", path,
            (long long)sb.st_size, DUET_CONFIG_MAX_BYTES);
    else if ((uint64_t)sb.st_size > DUET_CONFIG_MAX_BYTES)
        st = duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, where, NULL,
                               "%lld bytes is too large for a configuration (at most %u)",
                               (long long)sb.st_size, DUET_CONFIG_MAX_BYTES);
    else if (!(text = calloc(1, (size_t)sb.st_size + 1)))
        st = duet__config_fail_oom(cfg);
    else if (read(fd, text, (size_t)sb.st_size) == sb.st_size)
        st = check_includes(cfg, text, path, depth);
    free(text);
    close(fd);
    return st;
}

DUET_API duet_status duet_config_load_file(duet_config *cfg, const char *path)
{
    config_t lc;
    duet_status st;
    int ok, err;

    if (!cfg || !path)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = begin_load(cfg);
    if (!st)
        st = check_file(cfg, path, path, 0);
    if (st)
        return st;
    config_init(&lc);
    errno = 0;
    ok = config_read_file(&lc, path);
    err = errno;
    st = load_parsed(cfg, &lc, ok, err, path);
    config_destroy(&lc);
    return st;
}

DUET_API duet_status duet_config_load_string(duet_config *cfg, const char *text, const char *name)
{
    config_t lc;
    duet_status st;
    int ok;

    if (!cfg || !text || !name)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = begin_load(cfg);
    if (st)
        return st;
    if (strlen(text) > DUET_CONFIG_MAX_BYTES)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, name, NULL,
                                 "%zu bytes is too large for a configuration (at most %u)",
                                 strlen(text), DUET_CONFIG_MAX_BYTES);
    if ((st = check_includes(cfg, text, name, 0)) != DUET_STATUS_OK)
        return st;
    config_init(&lc);
    ok = config_read_string(&lc, text);
    st = load_parsed(cfg, &lc, ok, 0, name);
    config_destroy(&lc);
    return st;
}

/* ---- overrides --------------------------------------------------------------------------- */

/* One override being applied: the assignment split into key and value, and its message prefix. */
struct override {
    char *where; /* "--set ASSIGNMENT" */
    char *key;   /* trimmed text before '=' */
    char *value; /* trimmed text after '=', NULL when there is no '=' */
};

static char *dup_trimmed(const char *begin, const char *end)
{
    char *s;

    while (begin < end && isspace((unsigned char)*begin))
        begin++;
    while (end > begin && isspace((unsigned char)end[-1]))
        end--;
    s = malloc((size_t)(end - begin) + 1);
    if (s) {
        memcpy(s, begin, (size_t)(end - begin));
        s[end - begin] = '\0';
    }
    return s;
}

static void override_fini(struct override *o)
{
    free(o->where);
    free(o->key);
    free(o->value);
}

static duet_status override_split(duet_config *cfg, const char *assignment, struct override *o)
{
    const char *eq = strchr(assignment, '=');
    const char *key_end = eq ? eq : assignment + strlen(assignment);

    o->where = duet__format("--set %s", assignment);
    o->key = dup_trimmed(assignment, key_end);
    o->value = eq ? dup_trimmed(eq + 1, eq + strlen(eq)) : NULL;
    if (!o->where || !o->key || (eq && !o->value))
        return duet__config_fail_oom(cfg);
    if (o->key[0] == '\0')
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, NULL,
                                 "missing key before '=' (expected KEY=VALUE)");
    if (!eq)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, o->key,
                                 "missing '=' (expected KEY=VALUE)");
    return DUET_STATUS_OK;
}

enum parse_result {
    PARSE_OK,
    PARSE_BAD,   /* not the type's syntax */
    PARSE_RANGE, /* the syntax is right but the number does not fit */
};

/* libconfig integer syntax: [+-]digits or 0x hex digits, then an optional L or LL. */
static enum parse_result parse_int(const char *text, int64_t *out)
{
    bool hex = text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
    const char *digits = hex ? text + 2 : text + (text[0] == '+' || text[0] == '-');
    char *end;

    if (!(hex ? isxdigit((unsigned char)*digits) : isdigit((unsigned char)*digits)))
        return PARSE_BAD;
    errno = 0;
    *out = strtoll(text, &end, hex ? 16 : 10);
    if (*end == 'L')
        end += end[1] == 'L' ? 2 : 1;
    if (*end != '\0')
        return PARSE_BAD;
    return errno == ERANGE ? PARSE_RANGE : PARSE_OK;
}

static size_t count_digits(const char *s)
{
    size_t n = 0;

    while (isdigit((unsigned char)s[n]))
        n++;
    return n;
}

/* Checks decimal floating point (or integer) syntax: no hex, inf or nan. */
static bool is_decimal_number(const char *text)
{
    const char *p = text + (text[0] == '+' || text[0] == '-');
    size_t int_digits = count_digits(p), frac_digits = 0;

    p += int_digits;
    if (*p == '.') {
        frac_digits = count_digits(p + 1);
        p += 1 + frac_digits;
    }
    if (int_digits + frac_digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p += 1 + (p[1] == '+' || p[1] == '-');
        if (count_digits(p) == 0)
            return false;
        p += count_digits(p);
    }
    return *p == '\0';
}

/* A decimal number that fits a double (no overflow, no underflow). */
static enum parse_result parse_float(const char *text, double *out)
{
    if (!is_decimal_number(text))
        return PARSE_BAD;
    errno = 0;
    *out = strtod(text, NULL);
    return errno == ERANGE || !isfinite(*out) ? PARSE_RANGE : PARSE_OK;
}

static enum parse_result parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            *out = strcasecmp(text, yes[i]) == 0;
            return PARSE_OK;
        }
    }
    return PARSE_BAD;
}

/* Unquotes "…" with \" and \\ escapes into out (malloc'd); a bare string is copied. Returns a
 * message for a malformed quoted string, or NULL (out NULL too when out of memory). */
static const char *parse_string(const char *text, char **out)
{
    char *s = malloc(strlen(text) + 1), *w = s;
    const char *p = text + 1;

    *out = s;
    if (!s || text[0] != '"') {
        if (s)
            strcpy(s, text);
        return NULL;
    }
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
            p++;
        else if (*p == '\\')
            return "only \\\" and \\\\ may be escaped in a quoted string";
        *w++ = *p;
    }
    *w = '\0';
    if (*p != '"')
        return "the quoted string has no closing quote";
    if (p[1] != '\0')
        return "text follows the closing quote";
    return NULL;
}

static duet_status override_string(duet_config *cfg, const struct override *o, int k,
                                   union value *v)
{
    const char *bad = parse_string(o->value, &v->s);

    if (!v->s)
        return duet__config_fail_oom(cfg);
    if (bad) {
        free(v->s);
        v->s = NULL;
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, duet__keys[k].path, "%s",
                                 bad);
    }
    return DUET_STATUS_OK;
}

/* Reads the override's value text as duet__keys[k]'s type, strictly. */
static duet_status override_value(duet_config *cfg, const struct override *o, int k, union value *v)
{
    enum parse_result r = PARSE_BAD;

    switch (duet__keys[k].type) {
    case DUET_CONFIG_TYPE_STRING:
        return override_string(cfg, o, k, v);
    case DUET_CONFIG_TYPE_INT:
        r = parse_int(o->value, &v->i);
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        r = parse_float(o->value, &v->f);
        break;
    case DUET_CONFIG_TYPE_BOOL:
        r = parse_bool(o->value, &v->b);
        break;
    }
    if (r == PARSE_RANGE)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, duet__keys[k].path,
                                 "out of range for %s, got \"%s\"", type_name(duet__keys[k].type),
                                 o->value);
    if (r == PARSE_BAD)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, duet__keys[k].path,
                                 "must be %s, got \"%s\"", type_name(duet__keys[k].type), o->value);
    return DUET_STATUS_OK;
}

/* Stores v for duet__keys[k] as an override, creating the key's group when it is absent. */
static duet_status override_commit(duet_config *cfg, const struct override *o, int k, union value v)
{
    enum group g = duet__keys[k].group;
    char *where = strdup(o->where);
    char *group_where = NULL;

    if (g != GROUP_TOP && !cfg->t.groups[g].present)
        group_where = strdup(o->where);
    if (!where || (g != GROUP_TOP && !cfg->t.groups[g].present && !group_where)) {
        free(where);
        free(group_where);
        return duet__config_fail_oom(cfg);
    }
    duet__slot_assign(&cfg->t.slots[k], duet__keys[k].type, v, where, true);
    cfg->validated = false;
    if (group_where) {
        cfg->t.groups[g].present = true;
        cfg->t.groups[g].where = group_where;
    }
    return DUET_STATUS_OK;
}

static duet_status override_apply(duet_config *cfg, const struct override *o)
{
    union value v = {0};
    int k = duet__key_find(o->key);
    duet_status st;

    if (k < 0 && duet__group_find(o->key) >= 0)
        return duet__config_fail(cfg, DUET_STATUS_BAD_CONFIG, o->where, o->key,
                                 "is a group; set one of its keys (%s.NAME=VALUE)", o->key);
    if (k < 0)
        return duet__fail_unknown(cfg, o->where, o->key, "unknown key");
    st = override_value(cfg, o, k, &v);
    if (!st)
        st = duet__check_value(cfg, o->where, k, &v);
    if (!st)
        st = override_commit(cfg, o, k, v);
    if (st && duet__keys[k].type == DUET_CONFIG_TYPE_STRING)
        free(v.s);
    return st;
}

DUET_API duet_status duet_config_set(duet_config *cfg, const char *assignment)
{
    struct override o = {0};
    duet_status st;

    if (!cfg)
        return DUET_STATUS_INVALID_ARGUMENT;
    duet__config_clear_error(cfg);
    if (!assignment)
        return duet__config_fail(cfg, DUET_STATUS_INVALID_ARGUMENT, NULL, NULL,
                                 "no assignment given");
    st = override_split(cfg, assignment, &o);
    if (!st)
        st = override_apply(cfg, &o);
    override_fini(&o);
    return st;
}
