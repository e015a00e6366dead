/*
 * duet_model: a validated, memory-mapped Hugging Face model folder.
 *
 *   duet_model
 *   ├── desc                     config.json, then generation_config.json's BOS / EOS
 *   ├── files[n_files]           each safetensors file: path, read-only shared mapping, size
 *   ├── tensors[n_tensors]       storage order (file by file, by offset); data points into the
 *   │                            mapping of tensor.file, name is malloc'd
 *   └── by_name[n_tensors]       the same tensors sorted by name, for bsearch
 *
 * duet_model_create, in this order (each step trusts only what the steps before it checked):
 *   1. config.json → desc; generation_config.json (optional) → BOS / EOS
 *   2. model.safetensors.index.json → its shards, else model.safetensors
 *   3. each file: open, map, duet__st_parse (sizes, JSON, entries, byte ranges)
 *   4. across files: no name twice; every index entry in the shard the index names
 *   5. the architecture: every tensor duet__layout_build lists is present, F32 / F16 / BF16,
 *      and of the shape the config implies
 *   6. DUET_MODEL_PREFAULT: read every page, with progress
 * A regular file instead of a folder is a GGUF file (gguf.c): its metadata gives desc, its
 * tensors answer to the Hugging Face names, and steps 1 to 4 become one parse.
 * Nothing is modified after create, so any number of threads may read a model. A file truncated
 * by someone else while it is mapped raises SIGBUS on access: the mapping cannot prevent that.
 */
#include "model-int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

struct duet__file {
    char *path;    /* dir/name, malloc'd */
    void *map;     /* PROT_READ mapping of the whole file; NULL when size is 0 */
    uint64_t size; /* bytes */
};

struct duet_model {
    char *dir;                   /* as given, malloc'd */
    duet_model_desc desc;        /* the architecture */
    struct duet__file *files;    /* [n_files] */
    uint32_t n_files;            /* safetensors files */
    duet_tensor *tensors;        /* [n_tensors] storage order */
    size_t n_tensors;            /* all files together */
    const duet_tensor **by_name; /* [n_tensors] sorted by name */
    uint64_t weight_bytes;       /* sum of nbytes */
    bool short_names;            /* OPT stored as "decoder.*": lookups drop "model." */
    bool sharded;                /* the weights come from model.safetensors.index.json */
    void *owned;                 /* GGUF: q / k rows un-permuted (struct duet__gguf), or NULL */
};

void duet_model_destroy(duet_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_tensors; i++)
        free((char *)m->tensors[i].name);
    for (uint32_t i = 0; i < m->n_files; i++) {
        if (m->files[i].map)
            munmap(m->files[i].map, (size_t)m->files[i].size);
        free(m->files[i].path);
    }
    free(m->files);
    free(m->tensors);
    free(m->by_name);
    free(m->owned);
    free(m->dir);
    free(m);
}

/* ---- step 1: the JSON files ------------------------------------------------------------- */

static duet_status parse_json_file(const duet_model *m, const char *name, bool optional,
                                   duet_status (*parse)(const char *, const char *, size_t,
                                                        duet_model_desc *, struct duet__msg *),
                                   duet_model_desc *desc, struct duet__msg *msg)
{
    char *path = duet__path_join(m->dir, name), *buf;
    size_t len;
    duet_status st;

    if (!path)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    st = duet__read_file(path, DUET__MAX_CONFIG, &buf, &len, msg);
    if (st == DUET_STATUS_NOT_FOUND && optional)
        st = DUET_STATUS_OK;
    else if (!st) {
        st = parse(path, buf, len, desc, msg);
        free(buf);
    }
    free(path);
    return st;
}

/* ---- step 2 and 3: find, map and parse the safetensors files ----------------------------- */

/* Whether dir holds an entry of that name: a broken or looping symlink counts, so that opening
 * it names the real problem instead of "no such file". */
static bool exists(const duet_model *m, const char *name)
{
    char *path = duet__path_join(m->dir, name);
    struct stat st;
    bool found = path && lstat(path, &st) == 0;

    free(path);
    return found;
}

static duet_status no_weights(const duet_model *m, struct duet__msg *msg)
{
    if (exists(m, "pytorch_model.bin") || exists(m, "pytorch_model.bin.index.json"))
        return duet__fail(msg, DUET_STATUS_UNSUPPORTED,
                          "%s: only PyTorch .bin weights found; duet reads safetensors (convert "
                          "them, e.g. with transformers' save_pretrained(safe_serialization=True))",
                          m->dir);
    return duet__fail(msg, DUET_STATUS_NOT_FOUND, "%s: no %s or %s", m->dir, SINGLE_NAME,
                      INDEX_NAME);
}

/* The shard list: from the index when there is one, else model.safetensors alone. */
static duet_status list_files(duet_model *m, struct duet__index *ix, struct duet__msg *msg)
{
    char *path, *buf;
    size_t len;
    duet_status st;

    if (!exists(m, INDEX_NAME)) {
        if (!exists(m, SINGLE_NAME))
            return no_weights(m, msg);
        m->files = calloc(1, sizeof(*m->files));
        if (!m->files || !(m->files[0].path = duet__path_join(m->dir, SINGLE_NAME)))
            return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
        m->n_files = 1;
        return DUET_STATUS_OK;
    }
    m->sharded = true;
    if (!(path = duet__path_join(m->dir, INDEX_NAME)))
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    st = duet__read_file(path, DUET__ST_MAX_HEADER, &buf, &len, msg);
    if (!st) {
        st = duet__index_parse(path, buf, len, ix, msg);
        free(buf);
    }
    free(path);
    if (!st && !(m->files = calloc(ix->n_files, sizeof(*m->files))))
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    for (uint32_t i = 0; !st && i < ix->n_files; i++, m->n_files++)
        if (!(m->files[i].path = duet__path_join(m->dir, ix->files[i])))
            st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    return st;
}

/* The first tensor the index puts in shard `file`, for the message about a missing shard. */
static const char *first_listed(const struct duet__index *ix, uint32_t file)
{
    for (size_t i = 0; i < ix->n_entries; i++)
        if (ix->entries[i].file == file)
            return ix->entries[i].name;
    return "?";
}

static duet_status open_file(duet_model *m, uint32_t i, const struct duet__index *ix, int *fd,
                             struct duet__msg *msg)
{
    struct stat sb;

    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer forever; it is refused below
     * as not a regular file (reads of regular files ignore the flag) */
    *fd = open(m->files[i].path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0 && errno == ENOENT && ix->n_files)
        return duet__fail(msg, DUET_STATUS_NOT_FOUND,
                          "%s/%s: shard '%s' (listed for tensor '%s' and others) is missing",
                          m->dir, INDEX_NAME, ix->files[i], first_listed(ix, i));
    if (*fd < 0)
        return duet__fail(msg, errno == ENOENT ? DUET_STATUS_NOT_FOUND : DUET_STATUS_IO, "%s: %s",
                          m->files[i].path, strerror(errno));
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(*fd);
        return duet__fail(msg, DUET_STATUS_IO, "%s: not a regular file", m->files[i].path);
    }
    m->files[i].size = (uint64_t)sb.st_size;
    return DUET_STATUS_OK;
}

/* Appends a parsed file's tensors (taking their names) to m->tensors. */
static duet_status take_tensors(duet_model *m, struct duet__st_header *h, struct duet__msg *msg)
{
    duet_tensor *grown;

    grown = realloc(m->tensors, (m->n_tensors + h->n + 1) * sizeof(*grown));
    if (!grown) {
        duet__st_header_fini(h);
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    }
    m->tensors = grown;
    memcpy(m->tensors + m->n_tensors, h->tensors, h->n * sizeof(*grown));
    m->n_tensors += h->n;
    free(h->tensors);
    *h = (struct duet__st_header){0};
    return DUET_STATUS_OK;
}

/* Opens and maps file i whole (no mapping below min_size bytes, left to the parser to refuse). */
static duet_status map_whole(duet_model *m, uint32_t i, const struct duet__index *ix,
                             uint64_t min_size, struct duet__msg *msg)
{
    struct duet__file *f = &m->files[i];
    duet_status st;
    int fd;

    st = open_file(m, i, ix, &fd, msg);
    if (st)
        return st;
    if (f->size >= min_size) {
        f->map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            st = duet__fail(msg, DUET_STATUS_IO, "%s: mmap: %s", f->path, strerror(errno));
        }
    }
    close(fd);
    return st;
}

static duet_status map_file(duet_model *m, uint32_t i, const struct duet__index *ix,
                            struct duet__msg *msg)
{
    struct duet__file *f = &m->files[i];
    struct duet__st_header h;
    duet_status st = map_whole(m, i, ix, 8, msg);

    if (!st)
        st = duet__st_parse(f->path, f->map, f->size, &h, msg);
    if (!st)
        st = take_tensors(m, &h, msg);
    return st;
}

/* A GGUF file instead of steps 1 to 3: its description and tensors taken over. */
static duet_status load_gguf(duet_model *m, struct duet__msg *msg)
{
    struct duet__index none = {0};
    struct duet__gguf g;
    duet_status st;

    m->files = calloc(1, sizeof(*m->files));
    if (!m->files || !(m->files[0].path = duet__strdup(m->dir)))
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    m->n_files = 1;
    st = map_whole(m, 0, &none, 4, msg);
    if (!st)
        st = duet__gguf_parse(m->files[0].path, m->files[0].map, m->files[0].size, &g, msg);
    if (st)
        return st;
    m->desc = g.desc;
    m->tensors = g.tensors;
    m->n_tensors = g.n;
    m->owned = g.owned;
    return DUET_STATUS_OK;
}

static bool is_file(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ---- step 4: across files ---------------------------------------------------------------- */

static int by_name_cmp(const void *pa, const void *pb)
{
    const duet_tensor *const *a = pa, *const *b = pb;

    return strcmp((*a)->name, (*b)->name);
}

static const duet_tensor *find(const duet_model *m, const char *name)
{
    duet_tensor key = {.name = name};
    const duet_tensor *k = &key, **hit;

    if (!m->n_tensors)
        return NULL;
    hit = bsearch(&k, m->by_name, m->n_tensors, sizeof(*m->by_name), by_name_cmp);
    return hit ? *hit : NULL;
}

static duet_status sort_names(duet_model *m, struct duet__msg *msg)
{
    m->by_name = malloc((m->n_tensors + 1) * sizeof(*m->by_name));
    if (!m->by_name)
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    for (size_t i = 0; i < m->n_tensors; i++) {
        m->by_name[i] = &m->tensors[i];
        m->weight_bytes += m->tensors[i].nbytes;
    }
    qsort(m->by_name, m->n_tensors, sizeof(*m->by_name), by_name_cmp);
    for (size_t i = 1; i < m->n_tensors; i++)
        if (strcmp(m->by_name[i - 1]->name, m->by_name[i]->name) == 0)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s' is stored twice (also in %s)", m->by_name[i]->file,
                              m->by_name[i]->name, m->by_name[i - 1]->file);
    return DUET_STATUS_OK;
}

static duet_status check_index(const duet_model *m, const struct duet__index *ix,
                               struct duet__msg *msg)
{
    for (size_t i = 0; i < ix->n_entries; i++) {
        const struct duet__index_entry *e = &ix->entries[i];
        const duet_tensor *t = find(m, e->name);

        if (!t)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s' listed in %s is not in this file",
                              m->files[e->file].path, e->name, INDEX_NAME);
        if (t->file != m->files[e->file].path)
            return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                              "%s: tensor '%s' is here but %s puts it in %s", t->file, e->name,
                              INDEX_NAME, ix->files[e->file]);
    }
    return DUET_STATUS_OK;
}

/* ---- step 5: the architecture ------------------------------------------------------------ */

const duet_tensor *duet_model_tensor(const duet_model *m, const char *name)
{
    const duet_tensor *t = find(m, name);

    if (!t && m->short_names && strncmp(name, "model.", 6) == 0)
        t = find(m, name + 6);
    return t;
}

static duet_status check_slot(const duet_model *m, const struct duet__slot *s, const char *where,
                              struct duet__msg *msg)
{
    const duet_tensor *t = duet_model_tensor(m, s->name);
    const duet_model_desc *d = &m->desc;

    if (!t)
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s' is missing (%s with %u layers needs it)", where, s->name,
                          d->architecture, d->num_layers);
    if (t->dtype != DUET_DTYPE_F32 && t->dtype != DUET_DTYPE_F16 && t->dtype != DUET_DTYPE_BF16 &&
        !(s->rank == 2 && duet__dtype_is_block(t->dtype)))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16 (or, "
                          "matrices of a GGUF file, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K)",
                          t->file, t->name, duet_dtype_name(t->dtype));
    if (t->rank != s->rank || t->shape[0] != s->shape[0] ||
        (s->rank == 2 && t->shape[1] != s->shape[1]))
        return duet__fail(msg, DUET_STATUS_BAD_FORMAT,
                          "%s: tensor '%s' has the wrong shape for %s/config.json: rank %u, "
                          "[%llu, %llu], expected rank %u, [%llu, %llu]",
                          t->file, t->name, m->dir, t->rank, (unsigned long long)t->shape[0],
                          (unsigned long long)(t->rank > 1 ? t->shape[1] : 0), s->rank,
                          (unsigned long long)s->shape[0], (unsigned long long)s->shape[1]);
    return DUET_STATUS_OK;
}

static duet_status check_layout(duet_model *m, struct duet__msg *msg)
{
    struct duet__slot *slots;
    size_t n;
    duet_status st = duet__layout_build(&m->desc, &slots, &n);
    char *index = duet__path_join(m->dir, INDEX_NAME);

    if (st || !index) {
        free(slots);
        free(index);
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    }
    m->short_names =
        m->desc.arch == DUET_ARCH_OPT && !find(m, slots[0].name) && find(m, slots[0].name + 6);
    for (size_t i = 0; !st && i < n; i++)
        st = check_slot(m, &slots[i], m->sharded ? index : m->files[0].path, msg);
    free(slots);
    free(index);
    return st;
}

/* ---- create ----------------------------------------------------------------------------- */

static duet_status load(duet_model *m, uint32_t flags, struct duet__msg *msg)
{
    struct duet__index ix = {0};
    duet_status st;
    bool gguf = is_file(m->dir);

    if (gguf) {
        st = load_gguf(m, msg);
    } else {
        st = parse_json_file(m, "config.json", false, duet__config_parse, &m->desc, msg);
        if (!st)
            st = parse_json_file(m, "generation_config.json", true, duet__genconfig_parse, &m->desc,
                                 msg);
        if (!st)
            st = list_files(m, &ix, msg);
    }
    for (uint32_t i = 0; !st && !gguf && i < m->n_files; i++)
        st = map_file(m, i, &ix, msg);
    if (!st)
        st = sort_names(m, msg);
    if (!st)
        st = check_index(m, &ix, msg);
    if (!st)
        st = check_layout(m, msg);
    duet__index_fini(&ix);
    if (!st && (flags & DUET_MODEL_PREFAULT))
        duet_model_prefault(m, flags);
    return st;
}

duet_status duet_model_create(const char *dir, uint32_t flags, duet_model **out, char *errbuf,
                              size_t errbuf_size)
{
    struct duet__msg msg = {errbuf, errbuf_size};
    duet_model *m;
    duet_status st;

    *out = NULL;
    if (errbuf && errbuf_size)
        errbuf[0] = '\0';
    if (!dir || !*dir)
        return duet__fail(&msg, DUET_STATUS_INVALID_ARGUMENT, "no model folder given");
    m = calloc(1, sizeof(*m));
    if (!m || !(m->dir = duet__strdup(dir))) {
        free(m);
        return duet__fail(&msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
    }
    st = load(m, flags, &msg);
    if (st) {
        duet_model_destroy(m);
        return st;
    }
    *out = m;
    return DUET_STATUS_OK;
}

/* ---- accessors -------------------------------------------------------------------------- */

const duet_model_desc *duet_model_describe(const duet_model *m)
{
    return &m->desc;
}

const char *duet_model_dir(const duet_model *m)
{
    return m->dir;
}

uint64_t duet_model_weight_bytes(const duet_model *m)
{
    return m->weight_bytes;
}

size_t duet_model_num_tensors(const duet_model *m)
{
    return m->n_tensors;
}

const duet_tensor *duet_model_tensor_at(const duet_model *m, size_t i)
{
    return i < m->n_tensors ? &m->tensors[i] : NULL;
}

const duet_tensor *duet_model_layer_tensor(const duet_model *m, uint32_t layer, const char *suffix)
{
    char name[256];

    if (layer > INT32_MAX ||
        !duet__layer_name(&m->desc, (int32_t)layer, suffix, name, sizeof(name)))
        return NULL;
    return duet_model_tensor(m, name);
}

#define SET_IF_FITS(info, field, value)                                                            \
    do {                                                                                           \
        if (DUET_ABI_HAS_FIELD(info, duet_model_info, field))                                      \
            (info)->field = (value);                                                               \
    } while (0)

duet_status duet_model_fill_info(const duet_model *m, duet_model_info *info)
{
    const duet_model_desc *d = &m->desc;

    if (!info || info->struct_size < offsetof(duet_model_info, vocab_size) + sizeof(uint32_t))
        return DUET_STATUS_INVALID_ARGUMENT;
    SET_IF_FITS(info, vocab_size, d->vocab_size);
    SET_IF_FITS(info, max_position, d->max_position);
    SET_IF_FITS(info, num_layers, d->num_layers);
    SET_IF_FITS(info, num_kv_heads, d->num_kv_heads);
    SET_IF_FITS(info, head_dim, d->head_dim);
    SET_IF_FITS(info, bos_token_id, d->bos_token_id);
    SET_IF_FITS(info, n_eos, d->n_eos);
    if (DUET_ABI_HAS_FIELD(info, duet_model_info, eos_token_ids))
        for (uint32_t i = 0; i < DUET_MODEL_MAX_EOS; i++)
            info->eos_token_ids[i] = i < d->n_eos ? d->eos_token_ids[i] : -1;
    SET_IF_FITS(info, weight_bytes, m->weight_bytes);
    SET_IF_FITS(info, sliding_window, d->sliding_window);
    return DUET_STATUS_OK;
}

/* ---- reading the weights ---------------------------------------------------------------- */

void duet_model_prefault(const duet_model *m, uint32_t flags)
{
    struct duet__progress p;
    const uint64_t chunk = 16ull << 20;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t total = 0;
    volatile unsigned char sink = 0;

    for (uint32_t i = 0; i < m->n_files; i++)
        total += m->files[i].size;
    duet__progress_start(&p, NULL, flags, "reading weights", total);
    for (uint32_t i = 0; i < m->n_files; i++) {
        const unsigned char *base = m->files[i].map;

        if (!base)
            continue;
        madvise(m->files[i].map, (size_t)m->files[i].size, MADV_WILLNEED);
        for (uint64_t off = 0; off < m->files[i].size; off += chunk) {
            uint64_t end = off + chunk < m->files[i].size ? off + chunk : m->files[i].size;

            for (uint64_t b = off; b < end; b += (uint64_t)(page > 0 ? page : 4096))
                sink ^= base[b];
            duet__progress_add(&p, end - off);
        }
    }
    duet__progress_end(&p);
    (void)sink;
}

/* Scans one tensor; on a non-finite value names it. buf holds `cap` floats. */
static duet_status scan_tensor(const duet_tensor *t, float *buf, size_t cap,
                               struct duet__progress *p, struct duet__msg *msg)
{
    for (uint64_t first = 0; first < t->numel; first += cap) {
        uint64_t n = t->numel - first < cap ? t->numel - first : cap;

        duet_tensor_read_f32(t, first, n, buf);
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(buf[i]))
                return duet__fail(
                    msg, DUET_STATUS_BAD_FORMAT, "%s: tensor '%s': element %llu is %s", t->file,
                    t->name, (unsigned long long)(first + i), isnan(buf[i]) ? "NaN" : "infinite");
        duet__progress_add(p, n * t->nbytes / t->numel); /* block types: bytes pro rata */
    }
    return DUET_STATUS_OK;
}

duet_status duet_model_check_values(const duet_model *m, uint32_t flags, char *errbuf,
                                    size_t errbuf_size)
{
    struct duet__msg msg = {errbuf, errbuf_size};
    const size_t cap = 1u << 18;
    struct duet__progress p;
    duet_status st = DUET_STATUS_OK;
    float *buf = malloc(cap * sizeof(float));

    if (!buf)
        return duet__fail(&msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", m->dir);
    duet__progress_start(&p, NULL, flags, "checking values", m->weight_bytes);
    for (size_t i = 0; !st && i < m->n_tensors; i++)
        if (duet__dtype_is_float(m->tensors[i].dtype) || duet__dtype_is_block(m->tensors[i].dtype))
            st = scan_tensor(&m->tensors[i], buf, cap, &p, &msg);
    duet__progress_end(&p);
    free(buf);
    return st;
}
