/*
 * A block pool: the device pool (ids 0..G-1) or the host pool (G..G+C-1), either naive or
 * prefix-caching (vLLM's NaiveBlockAllocator and PrefixCachingBlockAllocator behind one
 * interface: the naive pool is the caching one with the cache switched off).
 *
 *   free list  head → 5 → 2 → 7 → ∅      uncached, refcount 0; LIFO: freed last, reused first
 *   evictor    heap of cached blocks      refcount 0, still in the content map, revivable
 *   in use     refcount ≥ 1               referenced by block tables (or the null block)
 *   content map  hash → id                every cached block, in use or in the evictor
 *   touched      list of device blocks cached since the last mark_computed
 *
 * A block's life: alloc (free list first, else evict the least recently used cached block,
 * which leaves the map) → filled by appends → when full, promote: cached under its content hash,
 * or, if that content is cached already, given back in favour of the cached block → decref to 0:
 * a cached block enters the evictor, an uncached one the free list.
 *
 * Cached content is matched exactly, never by hash alone: a candidate from the map is reused only
 * if its tokens are equal and it follows the same physical block (prev_id, with prev_gen
 * catching a prev that has since left the cache and been reused). By induction over the chain,
 * a hit holds exactly the KV of the caller's prefix. A cached block whose prev left the cache is
 * unreachable (an orphan) and is replaced when the same content is cached again; vLLM would
 * still match it by hash, which is what makes its computed lists non-contiguous (reference §1.8).
 *
 * Computed bits (device pool): a newly cached block is touched, not computed, until the next
 * mark_computed, so other sequences of the same batch recompute it (vLLM #7822). Fix over vLLM:
 * a block whose last user goes before it was marked keeps computed = false in the evictor, and a
 * revived uncomputed block is touched again, so a block is never reported computed before a
 * step computed it. Host blocks carry no computed bits (computed queries are device only).
 */
#include "block_manager-int.h"

#include <stdlib.h>
#include <string.h>

static int32_t *block_tokens(const struct duet__pool *p, uint32_t id)
{
    return p->tokens + (size_t)id * p->block_size;
}

static void push_free(struct duet__pool *p, uint32_t id)
{
    p->blocks[id].next_free = p->free_head;
    p->free_head = id;
    p->num_free++;
}

duet_status duet__pool_init(struct duet__pool *p, struct duet__block *blocks, int32_t *tokens,
                            uint32_t base, uint32_t num_blocks, uint32_t block_size, bool caching,
                            bool tracks_computed)
{
    *p = (struct duet__pool){.blocks = blocks,
                             .tokens = tokens,
                             .base = base,
                             .num_blocks = num_blocks,
                             .block_size = block_size,
                             .caching = caching,
                             .tracks_computed = tracks_computed,
                             .free_head = DUET__NO_BLOCK,
                             .touched_head = DUET__NO_BLOCK};
    for (uint32_t i = num_blocks; i-- > 0;) {
        struct duet__block *b = &blocks[base + i];

        *b = (struct duet__block){.prev_id = DUET__NO_BLOCK,
                                  .heap_pos = DUET__NO_BLOCK,
                                  .touched_prev = DUET__NO_BLOCK,
                                  .touched_next = DUET__NO_BLOCK,
                                  .walk_dst = DUET__NO_BLOCK};
        push_free(p, base + i);
    }
    if (duet__evictor_init(&p->evictor, blocks, num_blocks))
        return DUET_STATUS_OUT_OF_MEMORY;
    if (duet__map_init(&p->cache, caching ? num_blocks : 1)) {
        duet__evictor_fini(&p->evictor);
        return DUET_STATUS_OUT_OF_MEMORY;
    }
    return DUET_STATUS_OK;
}

void duet__pool_fini(struct duet__pool *p)
{
    duet__evictor_fini(&p->evictor);
    duet__map_fini(&p->cache);
}

uint32_t duet__pool_num_free(const struct duet__pool *p)
{
    return p->num_free + p->evictor.n;
}

static void touched_add(struct duet__pool *p, uint32_t id)
{
    struct duet__block *b = &p->blocks[id];

    b->flags |= DUET__BLOCK_TOUCHED;
    b->touched_prev = DUET__NO_BLOCK;
    b->touched_next = p->touched_head;
    if (p->touched_head != DUET__NO_BLOCK)
        p->blocks[p->touched_head].touched_prev = id;
    p->touched_head = id;
}

static void touched_remove(struct duet__pool *p, uint32_t id)
{
    struct duet__block *b = &p->blocks[id];

    if (b->touched_prev != DUET__NO_BLOCK)
        p->blocks[b->touched_prev].touched_next = b->touched_next;
    else
        p->touched_head = b->touched_next;
    if (b->touched_next != DUET__NO_BLOCK)
        p->blocks[b->touched_next].touched_prev = b->touched_prev;
    b->touched_prev = b->touched_next = DUET__NO_BLOCK;
    b->flags &= ~DUET__BLOCK_TOUCHED;
}

/* Takes a block out of the content map; blocks that were cached after it become unreachable. */
static void uncache(struct duet__pool *p, uint32_t id)
{
    struct duet__block *b = &p->blocks[id];

    if (b->flags & DUET__BLOCK_TOUCHED)
        touched_remove(p, id);
    duet__map_del(&p->cache, b->hash);
    b->flags = 0;
    b->gen++;
}

uint32_t duet__pool_alloc(struct duet__pool *p)
{
    uint32_t id = p->free_head;
    struct duet__block *b;

    if (id != DUET__NO_BLOCK) {
        p->free_head = p->blocks[id].next_free;
        p->num_free--;
    } else if (p->evictor.n) {
        id = duet__evictor_pop(&p->evictor);
        uncache(p, id);
        p->evictions++;
    } else {
        return DUET__NO_BLOCK;
    }
    b = &p->blocks[id];
    b->refcount = 1;
    b->num_tokens = 0;
    b->last_accessed = 0;
    b->flags = 0;
    return id;
}

bool duet__pool_hashable(const struct duet__pool *p, uint32_t prev)
{
    return p->caching && (prev == DUET__NO_BLOCK || (p->blocks[prev].flags & DUET__BLOCK_CACHED));
}

static uint64_t hash_after(const struct duet__pool *p, uint32_t prev, const int32_t *tokens)
{
    bool first = prev == DUET__NO_BLOCK;

    return duet__block_hash(first, first ? 0 : p->blocks[prev].hash, tokens, p->block_size);
}

/* 0: cand holds this content after prev; 1: same tokens after another block (an orphan);
 * 2: other tokens (a hash collision). */
static int compare(const struct duet__pool *p, uint32_t cand, uint32_t prev, const int32_t *tokens)
{
    const struct duet__block *b = &p->blocks[cand];
    bool first = prev == DUET__NO_BLOCK;

    if (first != !!(b->flags & DUET__BLOCK_FIRST) ||
        memcmp(block_tokens(p, cand), tokens, sizeof(*tokens) * p->block_size) != 0)
        return 2;
    if (!first && (b->prev_id != prev || b->prev_gen != p->blocks[prev].gen))
        return 1;
    return 0;
}

uint32_t duet__pool_peek(const struct duet__pool *p, uint32_t prev, const int32_t *tokens)
{
    uint32_t cand = duet__map_get(&p->cache, hash_after(p, prev, tokens));

    return cand != DUET__NO_BLOCK && compare(p, cand, prev, tokens) == 0 ? cand : DUET__NO_BLOCK;
}

static uint32_t lookup(struct duet__pool *p, uint64_t h, uint32_t prev, const int32_t *tokens)
{
    uint32_t cand = duet__map_get(&p->cache, h);
    int c;

    if (cand == DUET__NO_BLOCK)
        return DUET__NO_BLOCK;
    c = compare(p, cand, prev, tokens);
    p->collisions += c == 2;
    return c == 0 ? cand : DUET__NO_BLOCK;
}

/* Registers full block id under h. An unused block holding the key (an orphan or a collision)
 * gives way; one in use keeps it, and id stays uncached (so do the blocks after it). */
static void cache_block(struct duet__pool *p, uint32_t id, uint64_t h, uint32_t prev,
                        uint32_t index)
{
    struct duet__block *b = &p->blocks[id];
    uint32_t old = duet__map_get(&p->cache, h);
    bool first = prev == DUET__NO_BLOCK;

    if (old != DUET__NO_BLOCK) {
        if (p->blocks[old].refcount > 0)
            return;
        duet__evictor_remove(&p->evictor, old);
        uncache(p, old);
        push_free(p, old);
    }
    duet__map_put(&p->cache, h, id); /* cannot fail: sized for every block */
    b->hash = h;
    b->prev_hash = first ? 0 : p->blocks[prev].hash;
    b->prev_id = prev;
    b->prev_gen = first ? 0 : p->blocks[prev].gen;
    b->num_hashed = (index + 1) * p->block_size;
    b->flags |= DUET__BLOCK_CACHED | (first ? DUET__BLOCK_FIRST : 0);
    if (p->tracks_computed)
        touched_add(p, id);
}

uint32_t duet__pool_alloc_full(struct duet__pool *p, uint32_t prev, uint32_t index,
                               const int32_t *tokens)
{
    bool hashable = duet__pool_hashable(p, prev);
    uint64_t h = 0;
    uint32_t id;

    if (hashable) {
        h = hash_after(p, prev, tokens);
        p->queries++;
        id = lookup(p, h, prev, tokens);
        if (id != DUET__NO_BLOCK) {
            p->hits++;
            duet__pool_incref(p, id);
            return id;
        }
    }
    id = duet__pool_alloc(p);
    if (id == DUET__NO_BLOCK)
        return id;
    memcpy(block_tokens(p, id), tokens, sizeof(*tokens) * p->block_size);
    p->blocks[id].num_tokens = p->block_size;
    if (hashable)
        cache_block(p, id, h, prev, index);
    return id;
}

uint32_t duet__pool_promote(struct duet__pool *p, uint32_t id, uint32_t prev, uint32_t index)
{
    const int32_t *tokens = block_tokens(p, id);
    uint64_t h;
    uint32_t hit;

    if (!duet__pool_hashable(p, prev))
        return id;
    h = hash_after(p, prev, tokens);
    hit = lookup(p, h, prev, tokens);
    if (hit == DUET__NO_BLOCK) {
        cache_block(p, id, h, prev, index);
        return id;
    }
    duet__pool_decref(p, id);
    duet__pool_incref(p, hit);
    return hit;
}

void duet__pool_incref(struct duet__pool *p, uint32_t id)
{
    struct duet__block *b = &p->blocks[id];

    if (b->refcount == 0) { /* a cached block revived from the evictor */
        duet__evictor_remove(&p->evictor, id);
        b->last_accessed = 0;
        if (p->tracks_computed && !(b->flags & DUET__BLOCK_COMPUTED))
            touched_add(p, id);
    }
    b->refcount++;
}

void duet__pool_decref(struct duet__pool *p, uint32_t id)
{
    struct duet__block *b = &p->blocks[id];

    if (--b->refcount > 0)
        return;
    if (b->flags & DUET__BLOCK_CACHED) {
        if (b->flags & DUET__BLOCK_TOUCHED)
            touched_remove(p, id);
        duet__evictor_add(&p->evictor, id);
    } else {
        b->flags = 0;
        push_free(p, id);
    }
}

void duet__pool_set_accessed(struct duet__pool *p, uint32_t id, uint64_t now)
{
    if (p->blocks[id].refcount > 0)
        p->blocks[id].last_accessed = now;
    else if (p->blocks[id].heap_pos != DUET__NO_BLOCK)
        duet__evictor_update(&p->evictor, id, now);
}

void duet__pool_mark_computed(struct duet__pool *p)
{
    while (p->touched_head != DUET__NO_BLOCK) {
        uint32_t id = p->touched_head;

        touched_remove(p, id);
        p->blocks[id].flags |= DUET__BLOCK_COMPUTED;
    }
}
