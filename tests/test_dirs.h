/* test_dirs.h — scratch folders of the test suites: made under $DUET_TEST_BUILDDIR (else /tmp)
 * with a unique name, removed with everything in them. A suite that includes this defines
 * _GNU_SOURCE first (nftw). */
#ifndef DUET_TEST_DIRS_H
#define DUET_TEST_DIRS_H

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* Makes BUILDDIR/prefix-XXXXXX into buf[size]; false (with perror) when it cannot. */
static inline bool duet_test_mkdtemp(char *buf, size_t size, const char *prefix)
{
    const char *build = getenv("DUET_TEST_BUILDDIR");

    snprintf(buf, size, "%s/%s-XXXXXX", build ? build : "/tmp", prefix);
    if (mkdtemp(buf))
        return true;
    perror(buf);
    return false;
}

static inline int duet__test_remove_one(const char *path, const struct stat *sb, int flag,
                                        struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it; nothing when dir is "". */
static inline void duet_test_rmtree(const char *dir)
{
    if (dir[0])
        nftw(dir, duet__test_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* DUET_TEST_DIRS_H */
