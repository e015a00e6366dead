/* Small string helpers for plugin_api/: bounded error formatting and a growing buffer. */
#include "plugin_api-int.h"

#include <stdio.h>
#include <stdlib.h>

void duet__errf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (!buf || size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

void duet__strbuf_appendf(struct duet__strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int need;

    va_start(ap, fmt);
    need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) {
        sb->failed = true;
        return;
    }
    if (sb->len + (size_t)need + 1 > sb->cap) {
        size_t cap = (sb->len + (size_t)need + 1) * 2;
        char *grown = realloc(sb->buf, cap);

        if (!grown) {
            sb->failed = true;
            return;
        }
        sb->buf = grown;
        sb->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    sb->len += (size_t)need;
}

void duet__strbuf_fini(struct duet__strbuf *sb)
{
    free(sb->buf);
    *sb = (struct duet__strbuf){0};
}
