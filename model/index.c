/*
 * model.safetensors.index.json: which shard holds each tensor of a sharded checkpoint.
 *
 *   { "metadata": { "total_size": 13476839424 },
 *     "weight_map": { "lm_head.weight": "model-00002-of-00002.safetensors", ... } }
 *
 * Parsed into the distinct shard names (in order of first mention, so that files are opened in
 * a stable order) and the entries sorted by tensor name for lookup. Shard names must be plain
 * file names in the model folder: a name with '/' or a "." / ".." could read files elsewhere.
 * metadata is not needed and not checked: total_size is a hint that writers get wrong.
 */
#include "model-int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void duet__index_fini(struct duet__index *ix)
{
    for (uint32_t i = 0; i < ix->n_files; i++)
        free(ix->files[i]);
    for (size_t i = 0; i < ix->n_entries; i++)
        free(ix->entries[i].name);
    free(ix->files);
    free(ix->entries);
    *ix = (struct duet__index){0};
}

static int by_name(const void *pa, const void *pb)
{
    const struct duet__index_entry *a = pa, *b = pb;

    return strcmp(a->name, b->name);
}

const struct duet__index_entry *duet__index_find(const struct duet__index *ix, const char *name)
{
    struct duet__index_entry key = {.name = (char *)name};

    if (!ix->n_entries)
        return NULL;
    return bsearch(&key, ix->entries, ix->n_entries, sizeof(key), by_name);
}

static bool plain_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* The index of shard `file` in ix->files, adding it when new; -1 when out of memory. */
static int64_t shard_of(struct duet__index *ix, const char *file)
{
    for (uint32_t i = 0; i < ix->n_files; i++)
        if (strcmp(ix->files[i], file) == 0)
            return i;
    ix->files[ix->n_files] = duet__strdup(file);
    if (!ix->files[ix->n_files])
        return -1;
    return ix->n_files++;
}

static duet_status add_entries(const char *path, json_t *map, struct duet__index *ix,
                               struct duet__msg *msg)
{
    const char *name;
    json_t *v;
    size_t n = json_object_size(map);

    ix->files = calloc(n + 1, sizeof(*ix->files));
    ix->entries = calloc(n + 1, sizeof(*ix->entries));
    if (!ix->files || !ix->entries)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    json_object_foreach(map, name, v)
    {
        struct duet__index_entry *e = &ix->entries[ix->n_entries];
        int64_t file;

        if (!json_is_string(v) || !plain_file_name(json_string_value(v)))
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s': the weight_map value must be a file name in the "
                              "model folder",
                              path, name);
        file = shard_of(ix, json_string_value(v));
        e->name = file < 0 ? NULL : duet__strdup(name);
        if (!e->name)
            return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
        e->file = (uint32_t)file;
        ix->n_entries++;
    }
    qsort(ix->entries, ix->n_entries, sizeof(*ix->entries), by_name);
    return DUET_STATUS_OK;
}

duet_status duet__index_parse(const char *path, const char *buf, size_t len,
                              struct duet__index *out, struct duet__msg *msg)
{
    json_error_t e;
    json_t *root, *map;
    duet_status st;

    *out = (struct duet__index){0};
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: not valid JSON: %s (line %d)", path,
                          e.text, e.line);
    map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        st = duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: no \"weight_map\" object", path);
    } else if (json_object_size(map) == 0) {
        st = duet__fail(msg, DUET_STATUS_BAD_FORMAT, "%s: \"weight_map\" lists no tensor", path);
    } else {
        st = add_entries(path, map, out, msg);
    }
    json_decref(root);
    if (st)
        duet__index_fini(out);
    return st;
}
