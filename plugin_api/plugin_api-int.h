/* plugin_api-int.h — internals shared by the files of plugin_api/ (loader, host, config). */
#ifndef DUET_PLUGIN_API_INT_H
#define DUET_PLUGIN_API_INT_H

#include <duet/config.h>
#include <duet/loader.h>
#include <duet/plugin.h>
#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define DUET__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__PRINTF(f, a)
#endif

/* Formats a message into buf[size] (truncated, always NUL-terminated when size > 0). */
void duet__errf(char *buf, size_t size, const char *fmt, ...) DUET__PRINTF(3, 4);

/* A growing string: zero-initialise, append, then duet__strbuf_fini(). On allocation failure
 * the buffer keeps what it had and `failed` is set. */
struct duet__strbuf {
    char *buf;   /* NUL-terminated when len > 0 */
    size_t len;  /* bytes, without the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* an append could not allocate */
};

void duet__strbuf_appendf(struct duet__strbuf *sb, const char *fmt, ...) DUET__PRINTF(2, 3);
void duet__strbuf_fini(struct duet__strbuf *sb);

#endif /* DUET_PLUGIN_API_INT_H */
