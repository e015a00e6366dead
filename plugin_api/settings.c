/*
 * settings.c — the duet_config object: what was given for each key, and the readers.
 *
 * libconfig only parses (settings_parse.c). What duet keeps is one slot per schema key:
 *
 *   duet__keys[]  (schema.c, one row per key, in the order duet_config_print writes them)
 *     { "cache.block_size", GROUP_CACHE, INT, KEY_POW2, 1..256, default 16, field }
 *   duet_config
 *     t.slots[k]   value of duet__keys[k]: set? | from --set? | value | where it was set
 *     t.groups[g]  group g present? | where it was opened ("FILE:LINE" or "--set ASSIGNMENT")
 *     name         the file name given to load (validate's "FILE: model: ..." message)
 *     error        the message of the last failed call
 *     settings     every key typed (duet_settings), filled by a successful validate
 *
 * Lifecycle: create → load_file / load_string (at most once) → set … → validate → get ….
 * A load walks the parsed tree into a staging table, checking each setting as it goes; the staged
 * values move into cfg only when the whole file is good, so a failed load changes nothing. A slot
 * set by an override keeps its value when a file is loaded afterwards: overrides always win.
 * Any change (a load, a set, a dropped group) makes the typed settings stale until the next
 * validate: duet_config_settings() says NULL rather than hand out values that disagree with the
 * by-name readers.
 *
 * A slot's "where" is what an error message names: "FILE:LINE" for a file setting, "--set
 * ASSIGNMENT" for an override (duet_config_source() shortens the latter to "--set").
 *
 * No locks: writers need external exclusion; a validated configuration is read-only and may be
 * shared by threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "plugin_api-int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the value table --------------------------------------------------------------------- */

void duet__slot_clear(struct slot *slot, duet_config_type type)
{
    if (slot->set && type == DUET_CONFIG_TYPE_STRING)
        free(slot->v.s);
    free(slot->where);
    *slot = (struct slot){0};
}

void duet__slot_assign(struct slot *slot, duet_config_type type, union value v, char *where,
                       bool from_set)
{
    duet__slot_clear(slot, type);
    slot->set = true;
    slot->from_set = from_set;
    slot->v = v;
    slot->where = where;
}

void duet__table_fini(struct table *t)
{
    for (int k = 0; k < N_KEYS; k++)
        duet__slot_clear(&t->slots[k], duet__keys[k].type);
    for (int g = 0; g < N_GROUPS; g++)
        free(t->groups[g].where);
    *t = (struct table){0};
}

int64_t duet__int_of(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].set ? cfg->t.slots[k].v.i : duet__keys[k].def_i;
}

bool duet__bool_of(const duet_config *cfg, int k)
{
    return cfg->t.slots[k].set ? cfg->t.slots[k].v.b : duet__keys[k].def_b;
}

/* ---- messages ---------------------------------------------------------------------------- */

/* A malloc'd vsprintf, or NULL when out of memory. */
static char *vformat(const char *fmt, va_list ap) DUET__PRINTF(1, 0);
static char *vformat(const char *fmt, va_list ap)
{
    va_list again;
    char *s;
    int n;

    va_copy(again, ap);
    n = vsnprintf(NULL, 0, fmt, again);
    va_end(again);
    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *duet__format(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

void duet__config_clear_error(duet_config *cfg)
{
    free(cfg->error);
    cfg->error = NULL;
    cfg->error_oom = false;
}

duet_status duet__config_fail(duet_config *cfg, duet_status st, const char *where, const char *key,
                              const char *fmt, ...)
{
    struct duet__strbuf sb = {0};
    va_list ap;
    char *why;

    va_start(ap, fmt);
    why = vformat(fmt, ap);
    va_end(ap);
    if (where)
        duet__strbuf_appendf(&sb, "%s: ", where);
    if (key)
        duet__strbuf_appendf(&sb, "%s: ", key);
    duet__strbuf_appendf(&sb, "%s", why ? why : "");
    free(why);
    duet__config_clear_error(cfg);
    if (!why || sb.failed) {
        duet__strbuf_fini(&sb);
        cfg->error_oom = true;
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    cfg->error = sb.buf;
    return st;
}

duet_status duet__config_fail_oom(duet_config *cfg)
{
    duet__config_clear_error(cfg);
    cfg->error_oom = true;
    return DUET_STATUS_OUT_OF_MEMORY;
}

/* ---- object and readers ------------------------------------------------------------------ */

DUET_API duet_status duet_config_create(duet_config **out)
{
    duet_config *cfg;

    if (!out)
        return DUET_STATUS_INVALID_ARGUMENT;
    cfg = calloc(1, sizeof(*cfg));
    *out = cfg;
    return cfg ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

DUET_API void duet_config_destroy(duet_config *cfg)
{
    if (!cfg)
        return;
    duet__table_fini(&cfg->t);
    free(cfg->name);
    free(cfg->error);
    free(cfg);
}

DUET_API const char *duet_config_error(const duet_config *cfg)
{
    if (!cfg)
        return "";
    if (cfg->error_oom)
        return "out of memory";
    return cfg->error ? cfg->error : "";
}

/* Finds key for a reader of the given type; *k is its index when the result is OK. */
static duet_status reader_find(const duet_config *cfg, const char *key, const void *out,
                               duet_config_type type, int *k)
{
    if (!cfg || !key || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    *k = duet__key_find(key);
    if (*k < 0)
        return DUET_STATUS_NOT_FOUND;
    if (duet__keys[*k].type != type)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (!cfg->t.slots[*k].set && (duet__keys[*k].flags & (KEY_REQUIRED | KEY_NO_DEFAULT)))
        return DUET_STATUS_NOT_FOUND;
    return DUET_STATUS_OK;
}

DUET_API duet_status duet_config_get_string(const duet_config *cfg, const char *key,
                                            const char **out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_STRING, &k);

    if (!st)
        *out = cfg->t.slots[k].set ? cfg->t.slots[k].v.s : duet__keys[k].def_s;
    return st;
}

DUET_API duet_status duet_config_get_int(const duet_config *cfg, const char *key, int64_t *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_INT, &k);

    if (!st)
        *out = duet__int_of(cfg, k);
    return st;
}

DUET_API duet_status duet_config_get_float(const duet_config *cfg, const char *key, double *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_FLOAT, &k);

    if (!st)
        *out = cfg->t.slots[k].set ? cfg->t.slots[k].v.f : duet__keys[k].def_f;
    return st;
}

DUET_API duet_status duet_config_get_bool(const duet_config *cfg, const char *key, bool *out)
{
    int k;
    duet_status st = reader_find(cfg, key, out, DUET_CONFIG_TYPE_BOOL, &k);

    if (!st)
        *out = duet__bool_of(cfg, k);
    return st;
}

DUET_API bool duet_config_is_set(const duet_config *cfg, const char *key)
{
    int k = cfg && key ? duet__key_find(key) : -1;

    return k >= 0 && cfg->t.slots[k].set;
}

DUET_API bool duet_config_has_group(const duet_config *cfg, const char *group)
{
    int g = cfg && group ? duet__group_find(group) : -1;

    return g >= 0 && cfg->t.groups[g].present;
}

DUET_API duet_status duet_config_drop_group(duet_config *cfg, const char *group)
{
    int g;

    if (!cfg || !group)
        return DUET_STATUS_INVALID_ARGUMENT;
    duet__config_clear_error(cfg);
    g = duet__group_find(group);
    if (g < 0)
        return duet__config_fail(cfg, DUET_STATUS_NOT_FOUND, NULL, group, "no such group");
    for (int k = 0; k < N_KEYS; k++)
        if (duet__keys[k].group == (enum group)g)
            duet__slot_clear(&cfg->t.slots[k], duet__keys[k].type);
    free(cfg->t.groups[g].where);
    cfg->t.groups[g] = (struct group_state){0};
    cfg->validated = false;
    return DUET_STATUS_OK;
}

DUET_API const char *duet_config_source(const duet_config *cfg, const char *key)
{
    int k = cfg && key ? duet__key_find(key) : -1;

    if (k < 0)
        return "";
    if (!cfg->t.slots[k].set)
        return "default";
    return cfg->t.slots[k].from_set ? "--set" : cfg->t.slots[k].where;
}

/* ---- typed settings ---------------------------------------------------------------------- */

/* KEY_ENUM fields are written as an int: every such enum must have an int's size. */
_Static_assert(sizeof(duet_log_level) == sizeof(int), "log_level is stored as an int");
_Static_assert(sizeof(duet_acceptance) == sizeof(int), "acceptance is stored as an int");
_Static_assert(sizeof(duet_sched_policy) == sizeof(int), "policy is stored as an int");
_Static_assert(sizeof(duet_sched_preemption) == sizeof(int), "preemption is stored as an int");

/* The index of v in allowed[] (a checked value is always there). */
static int allowed_index(const char *const *allowed, const char *v)
{
    for (int i = 0; allowed[i]; i++)
        if (strcmp(allowed[i], v) == 0)
            return i;
    return 0;
}

/* Writes the value of key k, given or default, into its field of s. */
static void settings_fill_key(const duet_config *cfg, int k, duet_settings *s)
{
    const struct key *key = &duet__keys[k];
    const struct slot *slot = &cfg->t.slots[k];
    char *field = (char *)s + key->field;
    const char *str;
    double f;
    int index;
    int64_t i;
    bool b;

    switch (key->type) {
    case DUET_CONFIG_TYPE_STRING:
        str = slot->set ? slot->v.s : key->def_s; /* NULL: no value, no default */
        if (key->flags & KEY_ENUM) {
            assert(str && key->allowed); /* the schema gives every KEY_ENUM key a default */
            index = allowed_index(key->allowed, str);
            memcpy(field, &index, sizeof(index));
        } else {
            memcpy(field, &str, sizeof(str));
        }
        break;
    case DUET_CONFIG_TYPE_INT:
        i = duet__int_of(cfg, k);
        memcpy(field, &i, sizeof(i));
        break;
    case DUET_CONFIG_TYPE_FLOAT:
        f = slot->set ? slot->v.f : key->def_f;
        memcpy(field, &f, sizeof(f));
        break;
    case DUET_CONFIG_TYPE_BOOL:
        b = duet__bool_of(cfg, k);
        memcpy(field, &b, sizeof(b));
        break;
    }
}

void duet__settings_fill(duet_config *cfg)
{
    duet_settings *s = &cfg->settings;

    *s = (duet_settings){.struct_size = sizeof(*s)};
    for (int k = 0; k < N_KEYS; k++)
        settings_fill_key(cfg, k, s);
    s->speculative.enabled = cfg->t.groups[GROUP_SPECULATIVE].present;
    s->cache.swap_space_gib_given = cfg->t.slots[K_CACHE_SWAP_SPACE].set;
    cfg->validated = true;
}

DUET_API const duet_settings *duet_config_settings(const duet_config *cfg)
{
    return cfg && cfg->validated ? &cfg->settings : NULL;
}
