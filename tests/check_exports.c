/*
 * Exported symbols: each worker plugin's dynamic symbol table defines exactly one global symbol,
 * duet_plugin_query (DESIGN §3) and refers to none of libduet's, and libduet exports its public
 * API but none of its internals.
 * The ELF file is read directly (what `nm -D --defined-only` would print), so the test needs no
 * external tool.
 */
#include "check_util.h"

#include <check.h>
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAMES 4096

struct exports {
    size_t n;                   /* defined global or weak symbols */
    char names[MAX_NAMES][128]; /* their names, truncated */
    size_t n_api_undef;         /* undefined references to libduet's API (duet_ + a letter) */
    char api_undef[128];        /* the first of them */
};

static struct exports ex;

/* Fills ex with the defined, non-local dynamic symbols of path. */
static void read_exports(const char *path)
{
    struct stat st;
    const Elf64_Ehdr *eh;
    const Elf64_Shdr *sh;
    unsigned char *map;
    int fd = open(path, O_RDONLY);

    ck_assert_msg(fd >= 0, "cannot open %s", path);
    ck_assert_int_eq(fstat(fd, &st), 0);
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    ck_assert_ptr_ne(map, MAP_FAILED);
    eh = (const Elf64_Ehdr *)map;
    ck_assert_msg(memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64,
                  "%s is not a 64-bit ELF file", path);
    sh = (const Elf64_Shdr *)(map + eh->e_shoff);
    ex.n = 0;
    ex.n_api_undef = 0;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        const Elf64_Sym *sym = (const Elf64_Sym *)(map + sh[i].sh_offset);
        const char *strtab = (const char *)(map + sh[sh[i].sh_link].sh_offset);

        if (sh[i].sh_type != SHT_DYNSYM)
            continue;
        for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); k++) {
            unsigned bind = ELF64_ST_BIND(sym[k].st_info);

            const char *name = strtab + sym[k].st_name;

            if (sym[k].st_shndx == SHN_UNDEF && strncmp(name, "duet_", 5) == 0 && name[5] != '_' &&
                ex.n_api_undef++ == 0)
                snprintf(ex.api_undef, sizeof(ex.api_undef), "%s", name);
            if (sym[k].st_shndx == SHN_UNDEF || (bind != STB_GLOBAL && bind != STB_WEAK))
                continue;
            ck_assert_uint_lt(ex.n, MAX_NAMES);
            snprintf(ex.names[ex.n++], sizeof(ex.names[0]), "%s", name);
        }
    }
    munmap(map, (size_t)st.st_size);
}

static int exported(const char *name)
{
    for (size_t i = 0; i < ex.n; i++)
        if (strcmp(ex.names[i], name) == 0)
            return 1;
    return 0;
}

START_TEST(test_each_plugin_exports_only_duet_plugin_query)
{
    const char *list = getenv("DUET_TEST_PLUGINS");
    char *copy, *save = NULL;
    int checked = 0;

    ck_assert_msg(list && *list, "DUET_TEST_PLUGINS names no plugin");
    copy = strdup(list);
    for (char *path = strtok_r(copy, " ", &save); path; path = strtok_r(NULL, " ", &save)) {
        read_exports(path);
        ck_assert_msg(ex.n == 1 && exported("duet_plugin_query"),
                      "%s exports %zu symbols (first: %s); expected only duet_plugin_query", path,
                      ex.n, ex.n ? ex.names[0] : "none");
        /* A plugin is self-contained: a host that loads libduet with RTLD_LOCAL (Python's
         * ctypes, another dlopen) gives it none of libduet's symbols. */
        ck_assert_msg(ex.n_api_undef == 0,
                      "%s needs %zu libduet symbols (first: %s); a plugin must not depend on "
                      "libduet",
                      path, ex.n_api_undef, ex.api_undef);
        checked++;
    }
    free(copy);
    ck_assert_int_ge(checked, 1);
}
END_TEST

START_TEST(test_libduet_exports_its_api_and_hides_internals)
{
    const char *lib = getenv("DUET_TEST_LIBDUET");

    ck_assert_msg(lib != NULL, "DUET_TEST_LIBDUET is not set");
    read_exports(lib);
    ck_assert(exported("duet_status_str"));
    ck_assert(exported("duet_plugin_load"));
    ck_assert(exported("duet_config_load_file"));
    ck_assert(exported("duet_tokenizer_encode"));
    ck_assert(exported("duet_detok_push"));
    ck_assert(!exported("duet__errf"));
    ck_assert(!exported("duet__bpe_word"));
    ck_assert(!exported("duet__strbuf_appendf"));
    for (size_t i = 0; i < ex.n; i++)
        ck_assert_msg(strncmp(ex.names[i], "duet_", 5) == 0 && strncmp(ex.names[i], "duet__", 6),
                      "libduet exports '%s', which is not public API", ex.names[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("exports");
    TCase *tc = tcase_create("dynamic symbols");

    tcase_add_test(tc, test_each_plugin_exports_only_duet_plugin_query);
    tcase_add_test(tc, test_libduet_exports_its_api_and_hides_internals);
    suite_add_tcase(s, tc);
    return duet_test_run(s);
}
