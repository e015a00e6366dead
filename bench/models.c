/*
 * Generated benchmark models, shared by cpu-worker and spec: a preset's shapes, and folders
 * generated once into the models directory (a target, or a draft derived from one) and reused by
 * later runs when a usable model of the same shapes is already there.
 */
#include "bench.h"

#include "../model/model_gen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

bool duet__bench_preset_desc(const char *name, duet_model_desc *out)
{
    const struct duet__preset *p;

    if (strcmp(name, "tiny") == 0) {
        *out = duet__preset_find("llama-68m")->desc;
        out->hidden_size = 64;
        out->intermediate_size = 128;
        out->num_heads = 4;
        out->num_kv_heads = 2;
        out->head_dim = 16;
        out->vocab_size = 512;
    } else if ((p = duet__preset_find(name)) != NULL) {
        *out = p->desc;
    } else {
        return false;
    }
    out->torch_dtype = DUET_DTYPE_BF16;
    return true;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* True when dir holds a readable model of desc's shapes. */
static bool model_usable(const char *dir, const duet_model_desc *desc)
{
    duet_model *m;
    const duet_model_desc *d;
    char err[512];
    bool ok;

    if (duet_model_create(dir, DUET_MODEL_QUIET, &m, err, sizeof(err)))
        return false;
    d = duet_model_describe(m);
    ok = d->hidden_size == desc->hidden_size && d->num_layers == desc->num_layers &&
         d->intermediate_size == desc->intermediate_size && d->vocab_size == desc->vocab_size &&
         d->num_kv_heads == desc->num_kv_heads;
    duet_model_destroy(m);
    return ok;
}

/* Bytes the generated files will take: every element of the layout in bf16. */
static uint64_t model_file_bytes(const duet_model_desc *desc)
{
    struct duet__slot *slots;
    uint64_t numel = 0;
    size_t n;

    if (duet__layout_build(desc, &slots, &n))
        return 0;
    for (size_t i = 0; i < n; i++)
        numel += duet__slot_numel(&slots[i]);
    free(slots);
    return numel * 2;
}

/* Creates root and checks that it has room for `bytes` more (and 64 MB to spare). */
static int check_room(const char *bench, const char *root, const char *label, uint64_t bytes)
{
    uint64_t need = bytes + (64ull << 20);
    struct statvfs fs;

    if (make_dirs(root) != 0 || statvfs(root, &fs) != 0) {
        fprintf(stderr, "duet-bench: %s: %s: %s\n", bench, root, strerror(errno));
        return 1;
    }
    if ((uint64_t)fs.f_bavail * fs.f_frsize < need) {
        fprintf(stderr, "duet-bench: %s: %s needs %.1f GB for %s, %.1f GB free\n", bench, root,
                need / 1e9, label, (double)fs.f_bavail * fs.f_frsize / 1e9);
        return 1;
    }
    fprintf(stderr, "duet-bench: %s: generating %s (%.1f MB of bf16)\n", bench, label, bytes / 1e6);
    return 0;
}

int duet__bench_ensure_model(const char *bench, const char *root, const char *label,
                             const struct duet__gen_params *p)
{
    char err[1024];
    struct duet__msg msg = {err, sizeof(err)};

    if (model_usable(p->dir, &p->desc))
        return 0;
    if (check_room(bench, root, label, model_file_bytes(&p->desc)))
        return 1;
    if (duet__gen_check(p, &msg) || duet__gen_model(p, &msg)) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench, err);
        return 1;
    }
    return 0;
}

int duet__bench_ensure_draft(const char *bench, const char *root, const char *label,
                             const struct duet__draft_params *p)
{
    duet_model_desc desc;
    duet_model *m;
    char err[1024];
    struct duet__msg msg = {err, sizeof(err)};

    if (duet_model_create(p->target_dir, DUET_MODEL_QUIET, &m, err, sizeof(err))) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench, err);
        return 1;
    }
    desc = *duet_model_describe(m);
    duet_model_destroy(m);
    desc.num_layers = p->num_layers;
    if (model_usable(p->dir, &desc))
        return 0;
    if (check_room(bench, root, label, model_file_bytes(&desc)))
        return 1;
    if (duet__gen_draft(p, &msg)) {
        fprintf(stderr, "duet-bench: %s: %s\n", bench, err);
        return 1;
    }
    return 0;
}
