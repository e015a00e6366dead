/*
 * Replays a fuzz target's seed corpus (make check): every file of fuzz/corpus/FUZZ_TARGET, or
 * of the files and folders given as arguments, goes through LLVMFuzzerTestOneInput once, in
 * name order. Built with the normal compiler; under --enable-asan the sanitizers watch it too.
 * Exits 0 after at least one input, 99 (a hard error) when the corpus is missing or empty.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the corpus folder"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feeds one file; returns 1 when it was read. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long size;
    int ok = 0;

    if (!f)
        return 0;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        /* an exact-size copy, so that an overread shows under ASan */
        uint8_t *exact = malloc(size ? (size_t)size : 1);

        if (exact) {
            memcpy(exact, buf, (size_t)size);
            LLVMFuzzerTestOneInput(exact, (size_t)size);
            free(exact);
            ok = 1;
        }
    }
    free(buf);
    fclose(f);
    if (!ok)
        fprintf(stderr, "replay: cannot read %s\n", path);
    return ok;
}

static int replay_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort), done = 0;

    if (n < 0) {
        fprintf(stderr, "replay: cannot read folder %s\n", dir);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];

        if (names[i]->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            done += replay_file(path);
        }
        free(names[i]);
    }
    free(names);
    return done;
}

static int replay(const char *path)
{
    struct stat sb;

    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return replay_dir(path);
    return replay_file(path);
}

int main(int argc, char **argv)
{
    const char *src = getenv("DUET_TEST_SRCDIR");
    char dir[4096];
    int done = 0;

    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            done += replay(argv[i]);
    } else {
        snprintf(dir, sizeof(dir), "%s/fuzz/corpus/%s", src ? src : ".", FUZZ_TARGET);
        done = replay(dir);
    }
    printf("replay %s: %d inputs, no failure\n", FUZZ_TARGET, done);
    return done > 0 ? 0 : 99;
}
