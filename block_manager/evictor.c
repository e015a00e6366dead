/*
 * The evictor: cached blocks that no table uses, kept so a later prompt can revive them, in the
 * order they should be given up.
 *
 *                     heap[0]  ← evicted first
 *                    /       \
 *               heap[1]     heap[2]          each block knows its slot: blocks[id].heap_pos
 *               /    \       /   \
 *             ...    ...   ...   ...
 *
 * Order (a min-heap on the key): least recently used first (last_accessed ascending), then the
 * deeper block of a chain (num_hashed descending) so chains are trimmed from the tail, then the
 * block that entered the evictor first (evict_order ascending). This is the exact order vLLM's
 * LRUEvictor intends; vLLM 0.6 only approximates it because its update() does not reorder
 * (reference §1.4, fixed upstream by a heap too). Every operation is O(log n); the heap array is
 * sized for the whole pool at creation, so nothing allocates afterwards.
 *
 * Lifecycle of an entry: added when a cached block's last reference goes, removed when a prompt
 * revives it, popped when an allocation needs a block and the free list is empty.
 */
#include "block_manager-int.h"

#include <stdlib.h>

bool duet__evictor_before(const struct duet__block *a, const struct duet__block *b)
{
    if (a->last_accessed != b->last_accessed)
        return a->last_accessed < b->last_accessed;
    if (a->num_hashed != b->num_hashed)
        return a->num_hashed > b->num_hashed;
    return a->evict_order < b->evict_order;
}

duet_status duet__evictor_init(struct duet__evictor *e, struct duet__block *blocks, uint32_t cap)
{
    *e = (struct duet__evictor){.blocks = blocks, .cap = cap};
    e->heap = malloc(sizeof(*e->heap) * (cap ? cap : 1));
    return e->heap ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

void duet__evictor_fini(struct duet__evictor *e)
{
    free(e->heap);
    e->heap = NULL;
}

static bool less(const struct duet__evictor *e, uint32_t i, uint32_t j)
{
    return duet__evictor_before(&e->blocks[e->heap[i]], &e->blocks[e->heap[j]]);
}

static void place(struct duet__evictor *e, uint32_t i, uint32_t id)
{
    e->heap[i] = id;
    e->blocks[id].heap_pos = i;
}

static void swap_slots(struct duet__evictor *e, uint32_t i, uint32_t j)
{
    uint32_t a = e->heap[i], b = e->heap[j];

    place(e, i, b);
    place(e, j, a);
}

static void sift_up(struct duet__evictor *e, uint32_t i)
{
    while (i > 0 && less(e, i, (i - 1) / 2)) {
        swap_slots(e, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void sift_down(struct duet__evictor *e, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < e->n && less(e, l, m))
            m = l;
        if (r < e->n && less(e, r, m))
            m = r;
        if (m == i)
            return;
        swap_slots(e, i, m);
        i = m;
    }
}

void duet__evictor_add(struct duet__evictor *e, uint32_t id)
{
    e->blocks[id].evict_order = e->next_order++;
    place(e, e->n++, id);
    sift_up(e, e->n - 1);
}

void duet__evictor_remove(struct duet__evictor *e, uint32_t id)
{
    uint32_t i = e->blocks[id].heap_pos, moved;

    e->blocks[id].heap_pos = DUET__NO_BLOCK;
    if (i == --e->n)
        return;
    moved = e->heap[e->n];
    place(e, i, moved);
    sift_up(e, i);
    sift_down(e, e->blocks[moved].heap_pos);
}

void duet__evictor_update(struct duet__evictor *e, uint32_t id, uint64_t last_accessed)
{
    e->blocks[id].last_accessed = last_accessed;
    sift_up(e, e->blocks[id].heap_pos);
    sift_down(e, e->blocks[id].heap_pos);
}

uint32_t duet__evictor_pop(struct duet__evictor *e)
{
    uint32_t id;

    if (e->n == 0)
        return DUET__NO_BLOCK;
    id = e->heap[0];
    duet__evictor_remove(e, id);
    return id;
}
