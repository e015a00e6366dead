/*
 * Open-addressing hash tables for the vocabulary and the merges (tokenizer-int.h).
 *
 *   duet__strmap: slots [hash & (cap-1)], linear probing; a slot holds the key's arena offset and
 *                 length (UINT32_MAX = empty) and the value. Keys are never removed.
 *   duet__pairmap: the same over 64-bit keys (left id << 32 | right id), UINT64_MAX = empty.
 *
 * Both grow to twice their size at 50 % load, so a lookup probes about two slots. Built once at
 * load; read-only afterwards, so any number of threads may look up at once.
 */
#include "tokenizer-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void duet__set_err(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;

    if (!err || err_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

bool duet__buf_fit(duet__buf *b, size_t bytes)
{
    size_t cap = b->cap ? b->cap : 64;
    char *p;

    if (bytes <= b->cap)
        return true;
    while (cap < bytes)
        cap = cap > SIZE_MAX / 2 ? bytes : cap * 2;
    if (!(p = realloc(b->p, cap)))
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool duet__buf_add(duet__buf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX - b->n - 1 || !duet__buf_fit(b, b->n + n + 1))
        return false;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

bool duet__arena_add(duet__arena *a, const char *s, size_t len, uint32_t *off)
{
    if (a->len + len + 1 > UINT32_MAX)
        return false;
    if (a->len + len + 1 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4096;
        char *p;

        while (cap < a->len + len + 1)
            cap *= 2;
        p = realloc(a->data, cap);
        if (!p)
            return false;
        a->data = p;
        a->cap = cap;
    }
    memcpy(a->data + a->len, s, len);
    a->data[a->len + len] = '\0';
    *off = (uint32_t)a->len;
    a->len += len + 1;
    return true;
}

/* FNV-1a: short keys, no seed needed (the tables are built from a trusted-size file). */
uint32_t duet__hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

static uint32_t pow2_for(uint32_t expected)
{
    uint32_t cap = 16;

    while (cap < expected * 2 && cap < (1u << 30))
        cap *= 2;
    return cap;
}

bool duet__strmap_init(duet__strmap *m, uint32_t expected)
{
    m->cap = pow2_for(expected);
    m->count = 0;
    m->slot_off = malloc(m->cap * sizeof(*m->slot_off));
    m->slot_len = malloc(m->cap * sizeof(*m->slot_len));
    m->slot_value = malloc(m->cap * sizeof(*m->slot_value));
    if (!m->slot_off || !m->slot_len || !m->slot_value) {
        duet__strmap_fini(m);
        return false;
    }
    memset(m->slot_len, 0xff, m->cap * sizeof(*m->slot_len));
    return true;
}

void duet__strmap_fini(duet__strmap *m)
{
    free(m->slot_off);
    free(m->slot_len);
    free(m->slot_value);
    memset(m, 0, sizeof(*m));
}

static uint32_t strmap_find(const duet__strmap *m, const duet__arena *a, const char *s, size_t len)
{
    uint32_t i = duet__hash(s, len) & (m->cap - 1);

    while (m->slot_len[i] != UINT32_MAX) {
        if (m->slot_len[i] == len && memcmp(a->data + m->slot_off[i], s, len) == 0)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

static bool strmap_grow(duet__strmap *m, const duet__arena *a)
{
    duet__strmap bigger;

    if (m->cap >= (1u << 30))
        return false;
    bigger.cap = m->cap * 2;
    if (!duet__strmap_init(&bigger, m->cap))
        return false;
    for (uint32_t i = 0; i < m->cap; i++) {
        uint32_t j;

        if (m->slot_len[i] == UINT32_MAX)
            continue;
        j = strmap_find(&bigger, a, a->data + m->slot_off[i], m->slot_len[i]);
        bigger.slot_off[j] = m->slot_off[i];
        bigger.slot_len[j] = m->slot_len[i];
        bigger.slot_value[j] = m->slot_value[i];
        bigger.count++;
    }
    duet__strmap_fini(m);
    *m = bigger;
    return true;
}

bool duet__strmap_put(duet__strmap *m, const duet__arena *a, uint32_t off, uint32_t len,
                      int32_t value)
{
    uint32_t i;

    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m, a))
        return false;
    i = strmap_find(m, a, a->data + off, len);
    if (m->slot_len[i] == UINT32_MAX)
        m->count++;
    m->slot_off[i] = off;
    m->slot_len[i] = len;
    m->slot_value[i] = value;
    return true;
}

int32_t duet__strmap_get(const duet__strmap *m, const duet__arena *a, const char *s, size_t len)
{
    uint32_t i;

    if (m->cap == 0)
        return -1;
    i = strmap_find(m, a, s, len);
    return m->slot_len[i] == UINT32_MAX ? -1 : m->slot_value[i];
}

bool duet__pairmap_init(duet__pairmap *m, uint32_t expected)
{
    m->cap = pow2_for(expected);
    m->count = 0;
    m->keys = malloc(m->cap * sizeof(*m->keys));
    m->rank = malloc(m->cap * sizeof(*m->rank));
    m->merged = malloc(m->cap * sizeof(*m->merged));
    if (!m->keys || !m->rank || !m->merged) {
        duet__pairmap_fini(m);
        return false;
    }
    memset(m->keys, 0xff, m->cap * sizeof(*m->keys));
    return true;
}

void duet__pairmap_fini(duet__pairmap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof(*m));
}

static uint32_t pair_find(const duet__pairmap *m, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & (m->cap - 1);

    while (m->keys[i] != UINT64_MAX && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static bool pairmap_grow(duet__pairmap *m)
{
    duet__pairmap bigger;

    if (m->cap >= (1u << 30) || !duet__pairmap_init(&bigger, m->cap))
        return false;
    for (uint32_t i = 0; i < m->cap; i++) {
        uint32_t j;

        if (m->keys[i] == UINT64_MAX)
            continue;
        j = pair_find(&bigger, m->keys[i]);
        bigger.keys[j] = m->keys[i];
        bigger.rank[j] = m->rank[i];
        bigger.merged[j] = m->merged[i];
        bigger.count++;
    }
    duet__pairmap_fini(m);
    *m = bigger;
    return true;
}

/* A pair listed twice keeps its last rank, as Hugging Face's loaders (a map built in order) do. */
bool duet__pairmap_put(duet__pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i;

    if ((m->count + 1) * 2 > m->cap && !pairmap_grow(m))
        return false;
    i = pair_find(m, key);
    if (m->keys[i] != key)
        m->count++;
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    return true;
}

bool duet__pairmap_get(const duet__pairmap *m, int32_t left, int32_t right, int32_t *rank,
                       int32_t *merged)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i;

    if (m->cap == 0)
        return false;
    i = pair_find(m, key);
    if (m->keys[i] != key)
        return false;
    *rank = m->rank[i];
    *merged = m->merged[i];
    return true;
}
