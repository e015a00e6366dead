/*
 * The plugin-table side of the kit (worker_kit.h): the query, the details text, create()'s
 * parameters and settings, describe, and the checks of cache_geometry / init_cache.
 */
#include "worker_kit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

duet_status duet_kit_vfail(duet_kit_error *e, duet_status st, const char *fmt, va_list ap)
{
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    return st;
}

duet_status duet_kit_fail(duet_kit_error *e, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    duet_kit_vfail(e, st, fmt, ap);
    va_end(ap);
    return st;
}

const duet_worker_plugin *duet_kit_query(const duet_worker_plugin *table, uint32_t host_abi_major,
                                         duet_kit_details *details,
                                         void (*fill)(char *text, size_t size))
{
    if (details && fill) {
        pthread_mutex_lock(&details->lock);
        if (!details->done)
            fill(details->text, sizeof(details->text));
        details->done = true;
        pthread_mutex_unlock(&details->lock);
    }
    return host_abi_major == DUET_ABI_MAJOR ? table : NULL;
}

duet_status duet_kit_check_params(const duet_worker_params *params, size_t section_cap,
                                  const char *who, char *errbuf, size_t errbuf_size)
{
    if (!params || params->struct_size < sizeof(duet_worker_params) || !params->model_dir ||
        !params->section || !params->host || strlen(params->section) >= section_cap) {
        snprintf(errbuf, errbuf_size, "%s: create: incomplete parameters", who);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    return DUET_STATUS_OK;
}

void duet_kit_log(const duet_host_services *host, duet_log_level level, const char *plugin,
                  const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!host->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    host->log(host->ctx, level, plugin, msg);
}

duet_status duet_kit_describe(duet_status (*fill_info)(const duet_model *, duet_model_info *),
                              const duet_model *model, uint64_t weight_bytes, duet_model_info *info,
                              const char *who, duet_kit_error *e)
{
    duet_status st;

    if (!info)
        return duet_kit_fail(e, DUET_STATUS_INVALID_ARGUMENT, "%s: describe: info is NULL", who);
    st = fill_info(model, info);
    if (!st && DUET_ABI_HAS_FIELD(info, duet_model_info, weight_bytes))
        info->weight_bytes = weight_bytes;
    return st;
}

duet_status duet_kit_check_geometry(const duet_cache_geometry *g, const char *who,
                                    duet_kit_error *e)
{
    if (!g || g->struct_size < sizeof(*g) || g->block_size == 0 || g->block_size > 65536)
        return duet_kit_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                             "%s: cache_geometry: block_size must be 1 .. 65536", who);
    return DUET_STATUS_OK;
}

duet_status duet_kit_check_cache_config(const duet_cache_config *c, bool have_cache,
                                        const char *who, duet_kit_error *e)
{
    if (!c || !DUET_ABI_HAS_FIELD(c, duet_cache_config, num_swap_blocks) || c->block_size == 0 ||
        c->block_size > 65536)
        return duet_kit_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                             "%s: init_cache: block_size must be 1 .. 65536", who);
    if (have_cache)
        return duet_kit_fail(e, DUET_STATUS_INVALID_ARGUMENT,
                             "%s: init_cache: the cache already exists", who);
    if (c->num_blocks == 0)
        return duet_kit_fail(e, DUET_STATUS_INVALID_ARGUMENT, "%s: init_cache: num_blocks is 0",
                             who);
    return DUET_STATUS_OK;
}
