/*
 * Plugin loader: search, dlopen, query, and the checks of DESIGN §3.
 *
 * A name without '/' ("cpu") becomes the file duet_cpu_worker.so, tried in each directory of
 * $DUET_PLUGIN_PATH, then the configured plugin_dir, then duet_plugin_install_dir(); the first
 * that exists is used, and if it then fails to load that failure is reported (we never fall
 * through to another copy silently). A value with '/' is used as the path.
 *
 * Before dlopen the file is checked to be a regular file holding a complete ELF shared object
 * of this machine (header, program headers and section headers inside the file, every loaded
 * segment too): the dynamic loader maps a truncated file and dies of SIGBUS touching it. A
 * search directory that cannot be searched (missing, not a directory, no permission) is named
 * in a warning when the plugin is then taken from a later one.
 *
 * The checks run in an order that never reads past what the plugin declared:
 *   query != NULL → struct_size covers abi_major → abi_major → struct_size covers minor 0
 *   → fingerprint → name, version → every function pointer.
 */
#define _GNU_SOURCE
#include "plugin_api-int.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef DUET_PKGLIBDIR
#error "DUET_PKGLIBDIR must name the plugin install directory"
#endif

struct duet_plugin {
    void *handle;                    /* from dlopen */
    const duet_worker_plugin *table; /* from duet_plugin_query, checked */
    char *path;                      /* as loaded; malloc'd */
};

/* Size of the table as minor 0 of this major defines it: every field up to last_error. */
#define MIN_TABLE_SIZE                                                                             \
    (offsetof(duet_worker_plugin, last_error) + sizeof(((duet_worker_plugin *)0)->last_error))

const char *duet_plugin_install_dir(void)
{
    return DUET_PKGLIBDIR;
}

/* What the search saw: the paths tried, and the directories it could not search. */
struct search {
    struct duet__strbuf tried, unusable;
};

/* Appends "dir/duet_NAME_worker.so" to the tried list, returns the path if it exists. A
 * directory that is missing, not a directory or not searchable goes to the unusable list. */
static char *try_dir(const char *dir, size_t dir_len, const char *name, struct search *sr)
{
    const char *why = NULL;
    struct stat st;
    char *path;

    if (dir_len == 0)
        return NULL;
    if (asprintf(&path, "%.*s/duet_%s_worker.so", (int)dir_len, dir, name) < 0)
        return NULL;
    if (access(path, F_OK) == 0)
        return path;
    duet__strbuf_appendf(&sr->tried, "%s%s", sr->tried.len ? ", " : "", path);
    free(path);
    if (asprintf(&path, "%.*s", (int)dir_len, dir) < 0)
        return NULL;
    if (stat(path, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    else if (access(path, X_OK) != 0)
        why = "cannot be searched";
    if (why)
        duet__strbuf_appendf(&sr->unusable, "%s%s (%s)", sr->unusable.len ? ", " : "", path, why);
    free(path);
    return NULL;
}

/* Tries every directory of a colon-separated list. */
static char *try_path_list(const char *list, const char *name, struct search *tried)
{
    const char *p = list;

    while (p && *p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        char *found = try_dir(p, len, name, tried);

        if (found)
            return found;
        p = colon ? colon + 1 : NULL;
    }
    return NULL;
}

static bool valid_name(const char *name)
{
    if (!*name)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

static duet_status find(const char *name_or_path, const char *plugin_dir, char **out,
                        struct search *sr, char *errbuf, size_t errbuf_size)
{
    char *found = NULL;

    *out = NULL;
    if (strchr(name_or_path, '/')) {
        if (access(name_or_path, F_OK) != 0) {
            duet__errf(errbuf, errbuf_size, "plugin %s: %s", name_or_path, strerror(errno));
            return DUET_STATUS_NOT_FOUND;
        }
        *out = strdup(name_or_path);
        return *out ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
    }
    if (!valid_name(name_or_path)) {
        duet__errf(errbuf, errbuf_size,
                   "plugin '%s': a name is made of a-z, 0-9 and '_' (use a path with '/' for a "
                   "file)",
                   name_or_path);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    found = try_path_list(getenv("DUET_PLUGIN_PATH"), name_or_path, sr);
    if (!found && plugin_dir)
        found = try_dir(plugin_dir, strlen(plugin_dir), name_or_path, sr);
    if (!found)
        found = try_dir(DUET_PKGLIBDIR, strlen(DUET_PKGLIBDIR), name_or_path, sr);
    if (!found) {
        duet__errf(errbuf, errbuf_size, "plugin '%s': duet_%s_worker.so not found (tried %s%s%s)",
                   name_or_path, name_or_path, sr->tried.len ? sr->tried.buf : "nothing",
                   sr->unusable.len ? "; unusable directories: " : "",
                   sr->unusable.len ? sr->unusable.buf : "");
        return DUET_STATUS_NOT_FOUND;
    }
    *out = found;
    return DUET_STATUS_OK;
}

duet_status duet_plugin_find(const char *name_or_path, const char *plugin_dir, char **out,
                             char *errbuf, size_t errbuf_size)
{
    struct search sr = {0};
    duet_status st = find(name_or_path, plugin_dir, out, &sr, errbuf, errbuf_size);

    duet__strbuf_fini(&sr.tried);
    duet__strbuf_fini(&sr.unusable);
    return st;
}

/* Refuses what dlopen would crash on: anything but a complete ELF shared object of this machine
 * (the loader maps a truncated file and touches pages past its end: SIGBUS). */
static duet_status check_elf(const char *path, char *errbuf, size_t n)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    const char *why = NULL;
    Elf64_Ehdr eh;
    struct stat st;
    uint64_t size;

    if (fd < 0 || fstat(fd, &st) != 0) {
        duet__errf(errbuf, n, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return DUET_STATUS_IO;
    }
    size = (uint64_t)st.st_size;
    if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    else if (size < sizeof(eh) || pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
             memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
        why = "not an ELF file";
    else if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ehsize < sizeof(eh) ||
             eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_type != ET_DYN)
        why = "not a 64-bit ELF shared object";
#if defined(__x86_64__)
    else if (eh.e_machine != EM_X86_64)
        why = "built for another machine than x86-64";
#elif defined(__aarch64__)
    else if (eh.e_machine != EM_AARCH64)
        why = "built for another machine than AArch64";
#endif
    else if (eh.e_phoff > size || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > size - eh.e_phoff ||
             (eh.e_shoff &&
              (eh.e_shoff > size || (uint64_t)eh.e_shnum * eh.e_shentsize > size - eh.e_shoff)))
        why = "truncated: its headers end past the end of the file";
    for (uint32_t i = 0; !why && i < eh.e_phnum; i++) {
        Elf64_Phdr ph;

        if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * sizeof(ph))) !=
            (ssize_t)sizeof(ph))
            why = "unreadable program header";
        else if ((ph.p_type == PT_LOAD || ph.p_type == PT_DYNAMIC) &&
                 (ph.p_offset > size || ph.p_filesz > size - ph.p_offset))
            why = "truncated: a segment ends past the end of the file";
    }
    close(fd);
    if (!why)
        return DUET_STATUS_OK;
    duet__errf(errbuf, n, "%s: cannot load as a shared object: %s (%llu bytes)", path, why,
               (unsigned long long)size);
    return DUET_STATUS_BAD_FORMAT;
}

static duet_status check_header(const duet_worker_plugin *t, const char *path, char *errbuf,
                                size_t n)
{
    size_t major_end = offsetof(duet_worker_plugin, abi_major) + sizeof(t->abi_major);

    if (t->struct_size < major_end) {
        duet__errf(errbuf, n, "%s: plugin table struct_size is %u, expected at least %zu", path,
                   t->struct_size, (size_t)MIN_TABLE_SIZE);
        return DUET_STATUS_ABI_MISMATCH;
    }
    if (t->abi_major != DUET_ABI_MAJOR) {
        duet__errf(errbuf, n, "%s: ABI major version mismatch: expected %u, found %u", path,
                   DUET_ABI_MAJOR, t->abi_major);
        return DUET_STATUS_ABI_MISMATCH;
    }
    if (t->struct_size < MIN_TABLE_SIZE) {
        duet__errf(errbuf, n, "%s: plugin table struct_size is %u, expected at least %zu", path,
                   t->struct_size, (size_t)MIN_TABLE_SIZE);
        return DUET_STATUS_ABI_MISMATCH;
    }
    if (t->fingerprint != DUET_ABI_FINGERPRINT) {
        duet__errf(errbuf, n,
                   "%s: ABI layout fingerprint mismatch: expected 0x%016llx, found 0x%016llx", path,
                   (unsigned long long)DUET_ABI_FINGERPRINT, (unsigned long long)t->fingerprint);
        return DUET_STATUS_ABI_MISMATCH;
    }
    return DUET_STATUS_OK;
}

static duet_status check_members(const duet_worker_plugin *t, const char *path, char *errbuf,
                                 size_t n)
{
    const struct {
        const char *name;
        bool present;
    } required[] = {
        {"name", t->name && *t->name},         {"version", t->version && *t->version},
        {"create", t->create != NULL},         {"destroy", t->destroy != NULL},
        {"describe", t->describe != NULL},     {"cache_geometry", t->cache_geometry != NULL},
        {"init_cache", t->init_cache != NULL}, {"execute", t->execute != NULL},
        {"last_error", t->last_error != NULL},
    };

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!required[i].present) {
            duet__errf(errbuf, n, "%s: required plugin table member '%s' is %s", path,
                       required[i].name, i < 2 ? "NULL or empty" : "NULL");
            return DUET_STATUS_ABI_MISMATCH;
        }
    }
    return DUET_STATUS_OK;
}

/* dlopens path and queries its table; *handle_out is set whenever dlopen succeeded. */
static duet_status open_and_query(const char *path, const duet_host_services *host,
                                  void **handle_out, const duet_worker_plugin **table_out,
                                  char *errbuf, size_t n)
{
    duet_plugin_query_fn query;
    void *sym;
    void *handle;

    dlerror();
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    *handle_out = handle;
    if (!handle) {
        const char *why = dlerror();
        duet__errf(errbuf, n, "%s: cannot load as a shared object: %s", path,
                   why ? why : "unknown dlopen error");
        return DUET_STATUS_BAD_FORMAT;
    }
    dlerror();
    sym = dlsym(handle, DUET_PLUGIN_QUERY_SYMBOL);
    if (!sym) {
        duet__errf(errbuf, n, "%s: not a duet plugin: symbol '%s' not found", path,
                   DUET_PLUGIN_QUERY_SYMBOL);
        return DUET_STATUS_NOT_FOUND;
    }
    /* POSIX guarantees a data pointer from dlsym converts to a function pointer. */
    memcpy(&query, &sym, sizeof(query));
    *table_out = query(DUET_ABI_MAJOR, host);
    if (!*table_out) {
        duet__errf(errbuf, n,
                   "%s: %s() returned NULL for host ABI major %u (expected a plugin "
                   "table; the plugin does not serve this ABI)",
                   path, DUET_PLUGIN_QUERY_SYMBOL, DUET_ABI_MAJOR);
        return DUET_STATUS_ABI_MISMATCH;
    }
    return DUET_STATUS_OK;
}

duet_status duet_plugin_load(const char *name_or_path, const char *plugin_dir,
                             const duet_host_services *host, duet_plugin **out, char *errbuf,
                             size_t errbuf_size)
{
    const duet_worker_plugin *table = NULL;
    duet_plugin *plugin;
    void *handle = NULL;
    char *path;
    duet_status st;

    struct search sr = {0};

    *out = NULL;
    st = find(name_or_path, plugin_dir, &path, &sr, errbuf, errbuf_size);
    if (!st && sr.unusable.len && host && host->log) {
        char *msg = NULL;

        if (asprintf(&msg, "plugin '%s': skipped %s; loading %s", name_or_path, sr.unusable.buf,
                     path) >= 0)
            host->log(host->ctx, DUET_LOG_WARN, "loader", msg);
        free(msg);
    }
    duet__strbuf_fini(&sr.tried);
    duet__strbuf_fini(&sr.unusable);
    if (st)
        return st;
    st = check_elf(path, errbuf, errbuf_size);
    if (!st)
        st = open_and_query(path, host, &handle, &table, errbuf, errbuf_size);
    if (st)
        goto out_close;
    st = check_header(table, path, errbuf, errbuf_size);
    if (!st)
        st = check_members(table, path, errbuf, errbuf_size);
    if (st)
        goto out_close;
    plugin = malloc(sizeof(*plugin));
    if (!plugin) {
        st = DUET_STATUS_OUT_OF_MEMORY;
        duet__errf(errbuf, errbuf_size, "%s: out of memory", path);
        goto out_close;
    }
    *plugin = (duet_plugin){.handle = handle, .table = table, .path = path};
    *out = plugin;
    return DUET_STATUS_OK;

out_close:
    if (handle)
        dlclose(handle);
    free(path);
    return st;
}

void duet_plugin_unload(duet_plugin *plugin)
{
    if (!plugin)
        return;
    dlclose(plugin->handle);
    free(plugin->path);
    free(plugin);
}

const duet_worker_plugin *duet_plugin_table(const duet_plugin *plugin)
{
    return plugin->table;
}

const char *duet_plugin_path(const duet_plugin *plugin)
{
    return plugin->path;
}

size_t duet_caps_str(uint64_t caps, char *buf, size_t size)
{
    static const char *const names[] = {"target", "draft",  "swap",         "tp",
                                        "f32",    "bf16",   "f16",          "int8",
                                        "int4",   "verify", "prefix-cache", "penalties"};
    const size_t n_names = sizeof(names) / sizeof(names[0]);
    size_t len = 0;

    if (size)
        buf[0] = '\0';
    for (unsigned bit = 0; bit < 64; bit++) {
        char unknown[8];
        const char *name = unknown;
        int w;

        if (!(caps & (1ull << bit)))
            continue;
        if (bit < n_names)
            name = names[bit];
        else
            snprintf(unknown, sizeof(unknown), "bit%u", bit);
        w = snprintf(len < size ? buf + len : NULL, len < size ? size - len : 0, "%s%s",
                     len ? "," : "", name);
        len += (size_t)w;
    }
    return len;
}

/* The capability a dtype or weights value needs; 0 for "auto". */
static uint64_t cap_of_type(const char *type)
{
    static const struct {
        const char *name;
        uint64_t cap;
    } map[] = {{"f32", DUET_CAP_F32},
               {"bf16", DUET_CAP_BF16},
               {"f16", DUET_CAP_F16},
               {"int8", DUET_CAP_INT8},
               {"int4", DUET_CAP_INT4}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(type, map[i].name) == 0)
            return map[i].cap;
    return 0;
}

/* One requirement: the key that asks for it and the capability it needs. */
static duet_status need_cap(const duet_plugin *plugin, const duet_config *cfg, const char *key,
                            const char *what, uint64_t cap, char *errbuf, size_t n)
{
    char caps[256];

    if (!cap || (plugin->table->caps & cap))
        return DUET_STATUS_OK;
    duet_caps_str(plugin->table->caps, caps, sizeof(caps));
    duet__errf(errbuf, n, "%s: %s: plugin %s cannot %s (its capabilities: %s)",
               duet_config_source(cfg, key), key, plugin->path, what, caps);
    return DUET_STATUS_UNSUPPORTED;
}

duet_status duet_plugin_check_settings(const duet_plugin *plugin, const duet_config *cfg,
                                       const char *section, duet_worker_role role, char *errbuf,
                                       size_t errbuf_size)
{
    char key[96], what[64];
    const char *type = "auto";
    int64_t tp = 1;
    duet_status st;

    snprintf(key, sizeof(key), "%s.worker", section);
    st = need_cap(plugin, cfg, key, role == DUET_ROLE_TARGET ? "be a target" : "be a draft",
                  role == DUET_ROLE_TARGET ? DUET_CAP_TARGET : DUET_CAP_DRAFT, errbuf, errbuf_size);
    for (int i = 0; !st && i < 2; i++) {
        const char *field = i == 0 ? "dtype" : "weights";

        snprintf(key, sizeof(key), "%s.%s", section, field);
        if (duet_config_get_string(cfg, key, &type))
            continue;
        snprintf(what, sizeof(what), "use %s %s", field, type);
        st = need_cap(plugin, cfg, key, what, cap_of_type(type), errbuf, errbuf_size);
    }
    snprintf(key, sizeof(key), "%s.tensor_parallel", section);
    if (!st && duet_config_get_int(cfg, key, &tp) == DUET_STATUS_OK && tp > 1)
        st = need_cap(plugin, cfg, key, "run tensor parallel", DUET_CAP_TP, errbuf, errbuf_size);
    return st;
}
