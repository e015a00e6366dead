/*
 * A worker's settings, typed (worker_kit.h: duet_kit_settings). Every key is read through the
 * host's getters, which give the schema's default for a key that was not set; a key the host
 * does not know is an error naming it, so that a renamed key cannot quietly become a default
 * the worker made up.
 */
#include "worker_kit.h"

#include <stdio.h>

enum kind { STR, INT, FLT, BOOL };

struct key {
    const char *name; /* after "SECTION." (in_section) or the whole path */
    bool in_section;
    enum kind kind;
    size_t offset; /* in duet_kit_settings */
};

#define KEY(name, in_section, kind, field)                                                         \
    {                                                                                              \
        name, in_section, kind, offsetof(duet_kit_settings, field)                                 \
    }

static const struct key keys[] = {
    KEY("device", true, STR, device),
    KEY("dtype", true, STR, dtype),
    KEY("weights", true, STR, weights),
    KEY("threads", true, INT, threads),
    KEY("tensor_parallel", true, INT, tensor_parallel),
    KEY("group_size", true, INT, group_size),
    KEY("zero_point", true, BOOL, zero_point),
    KEY("quantize_lm_head", true, BOOL, quantize_lm_head),
    KEY("cache.cpu_kv_space_gib", false, FLT, cpu_kv_space_gib),
    KEY("cache.memory_fraction", false, FLT, memory_fraction),
};

static duet_status read_key(const duet_host_services *h, const char *path, enum kind kind,
                            void *field)
{
    switch (kind) {
    case STR:
        return h->config_get_string(h->ctx, path, field);
    case INT:
        return h->config_get_int(h->ctx, path, field);
    case FLT:
        return h->config_get_float(h->ctx, path, field);
    default:
        return h->config_get_bool(h->ctx, path, field);
    }
}

duet_status duet_kit_settings_read(const duet_host_services *host, const char *section,
                                   duet_kit_settings *out, const char *who, duet_kit_error *e)
{
    char path[96];
    duet_status st;

    *out = (duet_kit_settings){.section = section};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const struct key *k = &keys[i];

        snprintf(path, sizeof(path), "%s%s%s", k->in_section ? section : "",
                 k->in_section ? "." : "", k->name);
        st = read_key(host, path, k->kind, (char *)out + k->offset);
        if (st)
            return duet_kit_fail(e, st, "%s: cannot read setting %s (%s)", who, path,
                                 duet_status_str(st));
    }
    /* optional: no default, and hosts before it do not know it */
    snprintf(path, sizeof(path), "%s.cpus", section);
    st = host->config_get_string(host->ctx, path, &out->cpus);
    if (st == DUET_STATUS_NOT_FOUND)
        out->cpus = NULL;
    else if (st)
        return duet_kit_fail(e, st, "%s: cannot read setting %s (%s)", who, path,
                             duet_status_str(st));
    return DUET_STATUS_OK;
}
