/*
 * duet/loader.h — finding, loading and checking worker plugins, and the host services they use.
 *
 * A plugin is named either by a short name ("cpu" → duet_cpu_worker.so, looked up in
 * $DUET_PLUGIN_PATH (a colon list), then the configured plugin_dir, then the install directory)
 * or by a path (any value containing '/'). Loading dlopens it (RTLD_NOW | RTLD_LOCAL), calls
 * duet_plugin_query and refuses a plugin whose table is too small, whose ABI major or layout
 * fingerprint differs from the host's, or whose required functions are NULL. Every refusal is a
 * status plus a message naming the file and the expected and found values.
 */
#ifndef DUET_LOADER_H
#define DUET_LOADER_H

#include <duet/config.h>
#include <duet/plugin.h>
#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- host services ---------------------------------------------------------------------- */

typedef struct duet_host duet_host;

/* Creates the host side of the services table: config getters over cfg and a logger writing
 * "duet: LEVEL: [plugin] message" lines to stderr for levels <= level. cfg must outlive the host
 * (strings handed to plugins are cfg's). The caller owns *out; release with duet_host_destroy()
 * after every plugin worker created with it is destroyed. */
DUET_API duet_status duet_host_create(const duet_config *cfg, duet_log_level level,
                                      duet_host **out);
DUET_API void duet_host_destroy(duet_host *host);

/* The table to give duet_plugin_load() and duet_worker_params.host; owned by host. */
DUET_API const duet_host_services *duet_host_services_of(duet_host *host);

/* Parses "error", "warn", "info", "debug"; DUET_STATUS_NOT_FOUND for anything else. */
DUET_API duet_status duet_log_level_parse(const char *name, duet_log_level *out);

/* ---- plugins ---------------------------------------------------------------------------- */

typedef struct duet_plugin duet_plugin; /* a loaded, checked plugin */

/* The directory plugins are installed in ($(pkglibdir)), searched last. */
DUET_API const char *duet_plugin_install_dir(void);

/* Finds the file for name_or_path without loading it. plugin_dir may be NULL. On success *out is
 * a malloc'd path the caller frees with free(). On failure errbuf lists what was tried. */
DUET_API duet_status duet_plugin_find(const char *name_or_path, const char *plugin_dir, char **out,
                                      char *errbuf, size_t errbuf_size);

/* Finds, loads and checks a plugin. host may be NULL only for inspection (a plugin may need it
 * in its query). The caller owns *out and releases it with duet_plugin_unload() after destroying
 * every worker it created. On failure *out is NULL and errbuf holds the message. */
DUET_API duet_status duet_plugin_load(const char *name_or_path, const char *plugin_dir,
                                      const duet_host_services *host, duet_plugin **out,
                                      char *errbuf, size_t errbuf_size);

/* dlcloses the plugin. NULL is allowed. */
DUET_API void duet_plugin_unload(duet_plugin *plugin);

/* The checked table (valid until unload) and the absolute path the plugin was loaded from. */
DUET_API const duet_worker_plugin *duet_plugin_table(const duet_plugin *plugin);
DUET_API const char *duet_plugin_path(const duet_plugin *plugin);

/* Checks that a loaded plugin can do what the configuration group `section` ("target" or
 * "speculative") asks of it in `role`: the role itself, the dtype and weights, and tensor
 * parallelism. DUET_STATUS_UNSUPPORTED with a message naming the key, its source and the plugin
 * when it cannot. */
DUET_API duet_status duet_plugin_check_settings(const duet_plugin *plugin, const duet_config *cfg,
                                                const char *section, duet_worker_role role,
                                                char *errbuf, size_t errbuf_size);

/* Writes the names of the capability bits ("target,draft,swap,bf16") into buf, truncated to fit
 * and NUL-terminated; returns the length the full text needs, like snprintf. Unknown bits are
 * written as "bitN". */
DUET_API size_t duet_caps_str(uint64_t caps, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* DUET_LOADER_H */
