/*
 * BPE on one pre-tokenized word, as Hugging Face's tokenizers (models/bpe/word.rs) does it:
 *
 *   symbols  [h][e][l][l][o]      one per char (or <0xXX> per byte, or a fused unk), each with
 *             prev/next links     its token id and byte length; merged-away symbols get len 0
 *   heap     (rank, pos, merged)  every adjacent pair found in the merges; the lowest rank, then
 *                                 the leftmost, merges first; stale entries are skipped on pop
 *
 * Each merge removes one symbol and pushes at most two pairs, so a word of n chars costs
 * O(n log n). Results are kept in a cache of words already seen (duet__cache), shared by all
 * threads under a lock that is only tried: a busy cache is skipped, never waited for.
 */
#include "tokenizer-int.h"

#include <stdlib.h>
#include <string.h>

typedef struct duet__sym {
    int32_t id;
    int32_t prev, next; /* symbol indexes, -1 at the ends */
    uint32_t len;       /* bytes of the word; 0 once merged into its left neighbour */
} duet__sym;

typedef struct duet__merge {
    int32_t rank;
    int32_t pos; /* the left symbol */
    int32_t merged;
} duet__merge;

enum { CACHE_MAX_WORDS = 1 << 16, CACHE_MAX_WORD = 256 };

struct duet__cache {
    pthread_mutex_t lock;
    duet__arena words; /* cached words' bytes */
    duet__strmap map;  /* word -> offset in ids: [n, id_0 .. id_n-1] */
    duet__ids ids;
};

bool duet__ids_push(duet__ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof(*v));

        if (!v)
            return false;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return true;
}

static bool merge_less(const duet__merge *a, const duet__merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(duet__merge *h, size_t *n, duet__merge m)
{
    size_t i = (*n)++;

    while (i > 0 && merge_less(&m, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static duet__merge heap_pop(duet__merge *h, size_t *n)
{
    duet__merge top = h[0], last = h[--(*n)];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= *n)
            break;
        if (c + 1 < *n && merge_less(&h[c + 1], &h[c]))
            c++;
        if (!merge_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void add_sym(duet__sym *sym, size_t *n, int32_t id, uint32_t len)
{
    sym[*n] = (duet__sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
    (*n)++;
}

/* The initial symbols: vocabulary chars, else <0xXX> bytes, else the (fused) unknown token. */
static size_t split_chars(const duet_tokenizer *t, duet__sym *sym, const char *w, size_t len)
{
    size_t n = 0, i = 0, k;
    int32_t unk_len = 0;

    for (; i < len; i += k) {
        int32_t id;

        k = duet__utf8_len((const unsigned char *)w + i, len - i);
        k = k ? k : 1;
        id = duet__strmap_get(&t->vocab, &t->arena, w + i, k);
        if (id >= 0) {
            if (unk_len)
                add_sym(sym, &n, t->unk_id, (uint32_t)unk_len);
            unk_len = 0;
            add_sym(sym, &n, id, (uint32_t)k);
            continue;
        }
        if (t->byte_fallback) {
            size_t b;

            for (b = 0; b < k && t->byte_ids[(unsigned char)w[i + b]] >= 0; b++)
                ;
            if (b == k) {
                for (b = 0; b < k; b++)
                    add_sym(sym, &n, t->byte_ids[(unsigned char)w[i + b]], 1);
                continue;
            }
        }
        if (t->unk_id < 0)
            continue;
        if (unk_len && !t->fuse_unk)
            add_sym(sym, &n, t->unk_id, (uint32_t)unk_len), unk_len = 0;
        unk_len += (int32_t)k;
    }
    if (unk_len)
        add_sym(sym, &n, t->unk_id, (uint32_t)unk_len);
    if (n)
        sym[n - 1].next = -1;
    return n;
}

static void push_pair(const duet_tokenizer *t, duet__bpe_scratch *s, size_t *nh, int32_t pos)
{
    int32_t rank, merged, next = s->sym[pos].next;

    if (next >= 0 && duet__pairmap_get(&t->merges, s->sym[pos].id, s->sym[next].id, &rank, &merged))
        heap_push(s->heap, nh, (duet__merge){rank, pos, merged});
}

static void merge_all(const duet_tokenizer *t, duet__bpe_scratch *s, size_t n)
{
    size_t nh = 0;

    for (size_t i = 0; i + 1 < n; i++)
        push_pair(t, s, &nh, (int32_t)i);
    while (nh) {
        duet__merge top = heap_pop(s->heap, &nh);
        duet__sym *left = &s->sym[top.pos];
        int32_t rank, merged, next = left->next;

        if (left->len == 0 || next < 0 ||
            !duet__pairmap_get(&t->merges, left->id, s->sym[next].id, &rank, &merged) ||
            merged != top.merged)
            continue;
        left->id = top.merged;
        left->len += s->sym[next].len;
        left->next = s->sym[next].next;
        s->sym[next].len = 0;
        if (left->next >= 0)
            s->sym[left->next].prev = top.pos;
        if (left->prev >= 0)
            push_pair(t, s, &nh, left->prev);
        push_pair(t, s, &nh, top.pos);
    }
}

static bool scratch_fit(duet__bpe_scratch *s, size_t n)
{
    if (n <= s->cap)
        return true;
    free(s->sym);
    free(s->heap);
    s->cap = n < 64 ? 64 : n * 2;
    s->sym = malloc(s->cap * sizeof(*s->sym));
    s->heap = malloc(s->cap * 3 * sizeof(*s->heap)); /* n - 1 pairs, then two per merge */
    if (!s->sym || !s->heap) {
        s->cap = 0;
        return false;
    }
    return true;
}

static bool cache_get(duet__cache *c, const char *w, size_t len, duet__ids *out)
{
    int32_t at;
    bool hit = false;

    if (len > CACHE_MAX_WORD || pthread_mutex_trylock(&c->lock) != 0)
        return false;
    at = duet__strmap_get(&c->map, &c->words, w, len);
    if (at >= 0) {
        hit = true;
        for (int32_t i = 0; i < c->ids.v[at] && hit; i++)
            hit = duet__ids_push(out, c->ids.v[at + 1 + i]);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void cache_put(duet__cache *c, const char *w, size_t len, const int32_t *ids, size_t n)
{
    uint32_t off;
    size_t at;

    if (len > CACHE_MAX_WORD || pthread_mutex_trylock(&c->lock) != 0)
        return;
    at = c->ids.n;
    if (c->map.count < CACHE_MAX_WORDS && duet__ids_push(&c->ids, (int32_t)n)) {
        bool ok = true;

        for (size_t i = 0; i < n && ok; i++)
            ok = duet__ids_push(&c->ids, ids[i]);
        if (!ok || !duet__arena_add(&c->words, w, len, &off) ||
            !duet__strmap_put(&c->map, &c->words, off, (uint32_t)len, (int32_t)at))
            c->ids.n = at; /* out of memory: the word is not cached, nothing else changes */
    }
    pthread_mutex_unlock(&c->lock);
}

duet_status duet__bpe_word(const duet_tokenizer *t, duet__bpe_scratch *s, const char *w, size_t len,
                           duet__ids *out)
{
    size_t n, first = out->n;
    int32_t whole;

    if (len == 0 || cache_get(t->cache, w, len, out))
        return DUET_STATUS_OK;
    whole = t->ignore_merges ? duet__strmap_get(&t->vocab, &t->arena, w, len) : -1;
    if (whole >= 0)
        return duet__ids_push(out, whole) ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
    if (!scratch_fit(s, len + 1))
        return DUET_STATUS_OUT_OF_MEMORY;
    n = split_chars(t, s->sym, w, len);
    merge_all(t, s, n);
    for (int32_t i = n ? 0 : -1; i >= 0; i = s->sym[i].next)
        if (!duet__ids_push(out, s->sym[i].id))
            return DUET_STATUS_OUT_OF_MEMORY;
    if (out->n > first) /* a word of chars with no token and no unk has no ids: not cached */
        cache_put(t->cache, w, len, out->v + first, out->n - first);
    return DUET_STATUS_OK;
}

duet_status duet__cache_create(duet__cache **out)
{
    duet__cache *c = calloc(1, sizeof(*c));

    if (!c || !duet__strmap_init(&c->map, 1024)) {
        free(c);
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return DUET_STATUS_OK;
}

void duet__cache_destroy(duet__cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    duet__strmap_fini(&c->map);
    free(c->words.data);
    free(c->ids.v);
    free(c);
}
