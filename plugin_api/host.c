/*
 * The host services table (duet_host_services) backed by a duet_config and a stderr logger.
 *
 * The getters forward to the duet_config readers, so a plugin sees exactly the keys, types and
 * defaults of docs/configuration.md. The logger serialises lines with a mutex because the target
 * and the draft worker may log from different threads at once.
 */
#include "plugin_api-int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct duet_host {
    duet_host_services services; /* handed to plugins; services.ctx points back here */
    const duet_config *cfg;      /* not owned; outlives the host */
    duet_log_level level;        /* messages above it are dropped */
    pthread_mutex_t log_lock;    /* one line at a time on stderr */
};

static duet_status get_string(void *ctx, const char *key, const char **out)
{
    return duet_config_get_string(((duet_host *)ctx)->cfg, key, out);
}

static duet_status get_int(void *ctx, const char *key, int64_t *out)
{
    return duet_config_get_int(((duet_host *)ctx)->cfg, key, out);
}

static duet_status get_float(void *ctx, const char *key, double *out)
{
    return duet_config_get_float(((duet_host *)ctx)->cfg, key, out);
}

static duet_status get_bool(void *ctx, const char *key, bool *out)
{
    return duet_config_get_bool(((duet_host *)ctx)->cfg, key, out);
}

static const char *level_name(duet_log_level level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    return (unsigned)level < 4 ? names[level] : "log";
}

static void log_line(void *ctx, duet_log_level level, const char *plugin, const char *message)
{
    duet_host *host = ctx;

    if (level > host->level)
        return;
    pthread_mutex_lock(&host->log_lock);
    fprintf(stderr, "duet: %s: [%s] %s\n", level_name(level), plugin ? plugin : "?",
            message ? message : "");
    pthread_mutex_unlock(&host->log_lock);
}

duet_status duet_host_create(const duet_config *cfg, duet_log_level level, duet_host **out)
{
    duet_host *host = calloc(1, sizeof(*host));

    *out = NULL;
    if (!host)
        return DUET_STATUS_OUT_OF_MEMORY;
    if (pthread_mutex_init(&host->log_lock, NULL) != 0) {
        free(host);
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    host->cfg = cfg;
    host->level = level;
    host->services = (duet_host_services){
        .struct_size = sizeof(duet_host_services),
        .abi_major = DUET_ABI_MAJOR,
        .abi_minor = DUET_ABI_MINOR,
        .ctx = host,
        .config_get_string = get_string,
        .config_get_int = get_int,
        .config_get_float = get_float,
        .config_get_bool = get_bool,
        .log = log_line,
    };
    *out = host;
    return DUET_STATUS_OK;
}

void duet_host_destroy(duet_host *host)
{
    if (!host)
        return;
    pthread_mutex_destroy(&host->log_lock);
    free(host);
}

const duet_host_services *duet_host_services_of(duet_host *host)
{
    return &host->services;
}

duet_status duet_log_level_parse(const char *name, duet_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (duet_log_level)i;
            return DUET_STATUS_OK;
        }
    }
    return DUET_STATUS_NOT_FOUND;
}
