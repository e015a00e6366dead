/* Small helpers of model/: failure messages, strings, whole-file reads and terminal progress. */
#include "model-int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

duet_status duet__fail(struct duet__msg *msg, duet_status st, const char *fmt, ...)
{
    va_list ap;

    if (!msg || !msg->buf || msg->size == 0)
        return st;
    va_start(ap, fmt);
    vsnprintf(msg->buf, msg->size, fmt, ap);
    va_end(ap);
    return st;
}

char *duet__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);

    if (copy)
        memcpy(copy, s, n);
    return copy;
}

char *duet__path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *path = malloc(a + b + 2);

    if (!path)
        return NULL;
    memcpy(path, dir, a);
    path[a] = '/';
    memcpy(path + a + 1, name, b + 1);
    return path;
}

/* Reads exactly len bytes from fd into buf. */
static bool read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

duet_status duet__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                            struct duet__msg *msg)
{
    duet_status st = DUET_STATUS_OK;
    struct stat sb;
    char *buf;
    /* O_NONBLOCK: a FIFO would block the open until a writer comes; it is refused below as not a
     * regular file (reads of regular files ignore the flag) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    *out = NULL;
    if (fd < 0)
        return duet__fail(msg, errno == ENOENT ? DUET_STATUS_NOT_FOUND : DUET_STATUS_IO, "%s: %s",
                          path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = duet__fail(msg, DUET_STATUS_IO, "%s: not a readable regular file", path);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: %lld bytes is too large (limit %zu)",
                        path, (long long)sb.st_size, max_bytes);
        goto out_close;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
        goto out_close;
    }
    if (!read_all(fd, buf, (size_t)sb.st_size)) {
        free(buf);
        st = duet__fail(msg, DUET_STATUS_IO, "%s: read failed", path);
        goto out_close;
    }
    buf[sb.st_size] = '\0';
    *out = buf;
    *len = (size_t)sb.st_size;
out_close:
    close(fd);
    return st;
}

void duet__progress_start(struct duet__progress *p, FILE *out, uint32_t flags, const char *what,
                          uint64_t total)
{
    *p = (struct duet__progress){.what = what, .total = total, .shown = -1};
    if (out)
        p->out = out;
    else if (flags & DUET_MODEL_PROGRESS)
        p->out = stderr;
    else if (!(flags & DUET_MODEL_QUIET) && total >= DUET__PROGRESS_MIN_BYTES &&
             isatty(STDERR_FILENO))
        p->out = stderr;
}

static void progress_draw(struct duet__progress *p, int pct)
{
    fprintf(p->out, "\rduet: %s %3d%% (%.1f of %.1f GB)", p->what, pct, (double)p->done / 1e9,
            (double)p->total / 1e9);
    fflush(p->out);
    p->shown = pct;
}

void duet__progress_add(struct duet__progress *p, uint64_t bytes)
{
    int pct;

    p->done += bytes;
    if (!p->out)
        return;
    pct = p->total ? (int)((double)p->done * 100.0 / (double)p->total) : 100;
    if (pct > 100)
        pct = 100;
    if (pct != p->shown)
        progress_draw(p, pct);
}

void duet__progress_end(struct duet__progress *p)
{
    if (!p->out)
        return;
    if (p->shown != 100) {
        p->done = p->total;
        progress_draw(p, 100);
    }
    fputc('\n', p->out);
    fflush(p->out);
    p->out = NULL;
}
