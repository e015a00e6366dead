/*
 * A hash map from 64-bit keys to 32-bit values: sequence id → table slot, and content hash →
 * cached block id.
 *
 *     keys[]  k0   k1   ·    k3   ·    ·    k6   k7        capacity a power of two
 *     vals[]  v0   v1   ∅    v3   ∅    ∅    v6   v7        ∅ = DUET__NO_BLOCK (empty slot)
 *
 * A key lives at the first empty-or-matching slot probing linearly from mix(key) & mask. The
 * table is at most half full, so probes stay short. Deletion shifts later members of the probe
 * run back into the hole (no tombstones), so lookups never slow down with churn. The map grows by
 * doubling only in duet__map_put/duet__map_reserve; the content maps are sized for every block at
 * creation and never grow.
 */
#include "block_manager-int.h"

#include <stdlib.h>

static uint32_t home(const struct duet__map *m, uint64_t key)
{
    return (uint32_t)duet__mix64(key) & m->mask;
}

static duet_status alloc_slots(struct duet__map *m, uint32_t cap)
{
    m->keys = malloc(sizeof(*m->keys) * cap);
    m->vals = malloc(sizeof(*m->vals) * cap);
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        *m = (struct duet__map){0};
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    for (uint32_t i = 0; i < cap; i++)
        m->vals[i] = DUET__NO_BLOCK;
    m->mask = cap - 1;
    m->count = 0;
    return DUET_STATUS_OK;
}

/* The smallest power of two holding `entries` at most half full (at least 8). */
static uint64_t capacity_for(uint64_t entries)
{
    uint64_t cap = 8;

    while (cap < 2 * entries)
        cap *= 2;
    return cap;
}

duet_status duet__map_init(struct duet__map *m, uint32_t min_entries)
{
    *m = (struct duet__map){0};
    if (capacity_for(min_entries) > (1ull << 31))
        return DUET_STATUS_OUT_OF_MEMORY;
    return alloc_slots(m, (uint32_t)capacity_for(min_entries));
}

void duet__map_fini(struct duet__map *m)
{
    free(m->keys);
    free(m->vals);
    *m = (struct duet__map){0};
}

uint32_t duet__map_get(const struct duet__map *m, uint64_t key)
{
    for (uint32_t i = home(m, key);; i = (i + 1) & m->mask) {
        if (m->vals[i] == DUET__NO_BLOCK)
            return DUET__NO_BLOCK;
        if (m->keys[i] == key)
            return m->vals[i];
    }
}

static void insert(struct duet__map *m, uint64_t key, uint32_t val)
{
    uint32_t i = home(m, key);

    while (m->vals[i] != DUET__NO_BLOCK)
        i = (i + 1) & m->mask;
    m->keys[i] = key;
    m->vals[i] = val;
    m->count++;
}

duet_status duet__map_reserve(struct duet__map *m, uint32_t more)
{
    struct duet__map bigger;
    uint64_t need = (uint64_t)m->count + more;

    if (2 * need <= (uint64_t)m->mask + 1)
        return DUET_STATUS_OK;
    if (capacity_for(need) > (1ull << 31) || alloc_slots(&bigger, (uint32_t)capacity_for(need)))
        return DUET_STATUS_OUT_OF_MEMORY;
    for (uint32_t i = 0; i <= m->mask; i++)
        if (m->vals[i] != DUET__NO_BLOCK)
            insert(&bigger, m->keys[i], m->vals[i]);
    duet__map_fini(m);
    *m = bigger;
    return DUET_STATUS_OK;
}

duet_status duet__map_put(struct duet__map *m, uint64_t key, uint32_t val)
{
    duet_status st = duet__map_reserve(m, 1);

    if (st == DUET_STATUS_OK)
        insert(m, key, val);
    return st;
}

bool duet__map_del(struct duet__map *m, uint64_t key)
{
    uint32_t hole = home(m, key);

    while (m->vals[hole] != DUET__NO_BLOCK && m->keys[hole] != key)
        hole = (hole + 1) & m->mask;
    if (m->vals[hole] == DUET__NO_BLOCK)
        return false;
    /* Move back every later member of the run whose home is not between the hole and it. */
    for (uint32_t i = (hole + 1) & m->mask; m->vals[i] != DUET__NO_BLOCK; i = (i + 1) & m->mask) {
        uint32_t h = home(m, m->keys[i]);

        if (((i - h) & m->mask) >= ((i - hole) & m->mask)) {
            m->keys[hole] = m->keys[i];
            m->vals[hole] = m->vals[i];
            hole = i;
        }
    }
    m->vals[hole] = DUET__NO_BLOCK;
    m->count--;
    return true;
}
