/*
 * Id → group maps (request ids, sequence ids): open addressing with linear probing.
 *
 *   keys[mask + 1]   64-bit ids, placed at mix(id) & mask or the next free slot after it
 *   vals[mask + 1]   the group, NULL for an empty slot
 *
 * The table doubles when it would become more than half full, so probes stay short; deletion
 * shifts the following entries of the probe run back (no tombstones), so lookups never slow
 * down with churn. Insertions happen after duet__sched_map_reserve(), so they cannot fail.
 */
#include "scheduler-int.h"

#include <stdlib.h>

/* splitmix64's finaliser: a bijective mixer, so sequential ids spread over the table. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static duet_status rehash(struct duet__sched_map *m, uint32_t cap)
{
    uint64_t *keys = malloc(sizeof(*keys) * cap);
    struct duet__group **vals = calloc(cap, sizeof(*vals));
    uint32_t old_cap = m->vals ? m->mask + 1 : 0;

    if (!keys || !vals) {
        free(keys);
        free(vals);
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    for (uint32_t i = 0; i < old_cap; i++) {
        uint32_t j;

        if (!m->vals[i])
            continue;
        for (j = (uint32_t)mix(m->keys[i]) & (cap - 1); vals[j]; j = (j + 1) & (cap - 1))
            ;
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->mask = cap - 1;
    return DUET_STATUS_OK;
}

duet_status duet__sched_map_init(struct duet__sched_map *m, uint32_t min_entries)
{
    uint32_t cap = 16;

    *m = (struct duet__sched_map){0};
    while (cap / 2 < min_entries && cap < (1u << 31))
        cap *= 2;
    return rehash(m, cap);
}

void duet__sched_map_fini(struct duet__sched_map *m)
{
    free(m->keys);
    free(m->vals);
    *m = (struct duet__sched_map){0};
}

struct duet__group *duet__sched_map_get(const struct duet__sched_map *m, uint64_t key)
{
    for (uint32_t i = (uint32_t)mix(key) & m->mask; m->vals[i]; i = (i + 1) & m->mask)
        if (m->keys[i] == key)
            return m->vals[i];
    return NULL;
}

duet_status duet__sched_map_reserve(struct duet__sched_map *m, uint32_t more)
{
    uint64_t need = (uint64_t)m->count + more, cap = (uint64_t)m->mask + 1;

    if (need <= cap / 2)
        return DUET_STATUS_OK;
    while (cap / 2 < need)
        cap *= 2;
    if (cap > (1u << 31))
        return DUET_STATUS_OUT_OF_MEMORY;
    return rehash(m, (uint32_t)cap);
}

void duet__sched_map_put(struct duet__sched_map *m, uint64_t key, struct duet__group *g)
{
    uint32_t i = (uint32_t)mix(key) & m->mask;

    while (m->vals[i])
        i = (i + 1) & m->mask;
    m->keys[i] = key;
    m->vals[i] = g;
    m->count++;
}

bool duet__sched_map_del(struct duet__sched_map *m, uint64_t key)
{
    uint32_t i = (uint32_t)mix(key) & m->mask, j;

    while (m->vals[i] && m->keys[i] != key)
        i = (i + 1) & m->mask;
    if (!m->vals[i])
        return false;
    /* Backward shift: move each later entry of the run into the hole if its home allows. */
    for (j = (i + 1) & m->mask; m->vals[j]; j = (j + 1) & m->mask) {
        uint32_t home = (uint32_t)mix(m->keys[j]) & m->mask;

        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->vals[i] = NULL;
    m->count--;
    return true;
}
