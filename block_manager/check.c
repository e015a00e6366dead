/*
 * The invariant checker the tests run after every step (linked into the test program only).
 * It is deliberately simple and O(all blocks + all tables): it recounts everything from scratch
 * and compares with what the pools, maps and tables claim.
 *
 *   tables ──► refs[id] (references counted here)  ==  blocks[id].refcount
 *   every block is in exactly one place:  free list | evictor | in use (refcount ≥ 1)
 *   free list length + evictor size + in use == blocks of the pool
 *   cached block ⇔ content map entry; its hash recomputed from its tokens equals the key
 *   evictor: a heap in (last_accessed, −num_hashed, evict_order) with consistent positions
 *   touched list ⇔ TOUCHED flags; tables agree with their blocks' token counts and chains
 */
#include "block_manager-int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

struct checker {
    const duet_block_manager *bm;
    uint32_t *refs; /* [G + C] references from tables */
    uint8_t *where; /* [G + C] 1 = on a free list */
    uint32_t total; /* G + C */
    char *err;      /* [n] */
    size_t n;
};

#define FAIL(c, ...)                                                                               \
    do {                                                                                           \
        snprintf((c)->err, (c)->n, __VA_ARGS__);                                                   \
        return false;                                                                              \
    } while (0)

/* Expected tokens in block j of a table with num_tokens tokens. */
static uint32_t expected_tokens(uint64_t num_tokens, uint32_t j, uint32_t bs)
{
    uint64_t start = (uint64_t)j * bs;

    if (num_tokens <= start)
        return 0;
    return num_tokens - start >= bs ? bs : (uint32_t)(num_tokens - start);
}

static bool check_entry(struct checker *c, const struct duet__table *t, uint32_t j)
{
    const duet_block_manager *bm = c->bm;
    uint32_t id = t->ids[j], bs = bm->params.block_size;
    const struct duet__block *b;

    if (j < t->num_windowed) {
        if (id != bm->null_block || id == DUET__NO_BLOCK)
            FAIL(c, "seq %" PRIu64 ": windowed entry %u is %u, not the null block", t->seq, j, id);
        return true;
    }
    if (id >= c->total || id == bm->null_block)
        FAIL(c, "seq %" PRIu64 ": entry %u holds bad id %u", t->seq, j, id);
    if ((id >= bm->params.num_device_blocks) != t->swapped)
        FAIL(c, "seq %" PRIu64 ": entry %u (%u) is in the wrong pool", t->seq, j, id);
    b = &bm->blocks[id];
    c->refs[id]++;
    if (b->num_tokens != expected_tokens(t->num_tokens, j, bs))
        FAIL(c, "seq %" PRIu64 ": block %u (entry %u) holds %u tokens, expected %u", t->seq, id, j,
             b->num_tokens, expected_tokens(t->num_tokens, j, bs));
    if (!(b->flags & DUET__BLOCK_CACHED))
        return true;
    if (b->num_hashed != (j + 1) * bs)
        FAIL(c, "seq %" PRIu64 ": cached block %u at entry %u claims %u hashed tokens", t->seq, id,
             j, b->num_hashed);
    if (j == 0 ? !(b->flags & DUET__BLOCK_FIRST)
               : (b->prev_id != t->ids[j - 1] || b->prev_gen != bm->blocks[b->prev_id].gen))
        FAIL(c, "seq %" PRIu64 ": cached block %u does not follow entry %u", t->seq, id, j - 1);
    return true;
}

static bool check_table(struct checker *c, const struct duet__table *t, uint32_t slot)
{
    const duet_block_manager *bm = c->bm;

    if (duet__map_get(&bm->seqs, t->seq) != slot)
        FAIL(c, "seq %" PRIu64 ": the seq map does not point to slot %u", t->seq, slot);
    if (t->num_windowed > t->num_blocks || t->num_blocks > t->cap ||
        (uint64_t)t->num_blocks * bm->params.block_size < t->num_tokens)
        FAIL(c, "seq %" PRIu64 ": %u blocks (cap %u, %u windowed) for %u tokens", t->seq,
             t->num_blocks, t->cap, t->num_windowed, t->num_tokens);
    for (uint32_t j = 0; j < t->num_blocks; j++)
        if (!check_entry(c, t, j))
            return false;
    for (uint32_t j = 0; !t->swapped && j < t->computed_prefix; j++)
        if (!(bm->blocks[t->ids[j]].flags & DUET__BLOCK_COMPUTED))
            FAIL(c, "seq %" PRIu64 ": cached computed prefix %u covers uncomputed entry %u", t->seq,
                 t->computed_prefix, j);
    return true;
}

static bool check_tables(struct checker *c)
{
    const duet_block_manager *bm = c->bm;
    uint32_t live = 0, free_slots = 0;

    for (uint32_t slot = 0; slot < bm->tables_used; slot++) {
        if (!bm->tables[slot].live)
            continue;
        live++;
        if (!check_table(c, &bm->tables[slot], slot))
            return false;
    }
    for (uint32_t s = bm->table_free_head; s != DUET__NO_BLOCK; s = bm->tables[s].next_free)
        if (++free_slots > bm->tables_used || bm->tables[s].live)
            FAIL(c, "table free list is broken at slot %u", s);
    if (live != bm->seqs.count || live + free_slots != bm->tables_used ||
        free_slots != bm->tables_free)
        FAIL(c, "%u live tables, %u free slots, %u used, seq map holds %u", live, free_slots,
             bm->tables_used, bm->seqs.count);
    return true;
}

static bool check_free_list(struct checker *c, const struct duet__pool *p)
{
    uint32_t count = 0;

    for (uint32_t id = p->free_head; id != DUET__NO_BLOCK; id = c->bm->blocks[id].next_free) {
        const struct duet__block *b = &c->bm->blocks[id];

        if (id < p->base || id >= p->base + p->num_blocks || c->where[id] || ++count > p->num_free)
            FAIL(c, "free list of pool at %u is broken at block %u", p->base, id);
        if (b->refcount || b->flags || b->heap_pos != DUET__NO_BLOCK)
            FAIL(c, "free block %u has refcount %u, flags %#x", id, b->refcount, b->flags);
        c->where[id] = 1;
    }
    if (count != p->num_free)
        FAIL(c, "free list of pool at %u has %u blocks, num_free says %u", p->base, count,
             p->num_free);
    return true;
}

static bool check_evictor(struct checker *c, const struct duet__pool *p)
{
    const struct duet__evictor *e = &p->evictor;

    if (e->n > e->cap)
        FAIL(c, "evictor of pool at %u holds %u of %u", p->base, e->n, e->cap);
    for (uint32_t i = 0; i < e->n; i++) {
        uint32_t id = e->heap[i];

        if (id < p->base || id >= p->base + p->num_blocks || c->bm->blocks[id].heap_pos != i)
            FAIL(c, "evictor slot %u holds %u with position %u", i, id,
                 id < c->total ? c->bm->blocks[id].heap_pos : 0);
        if (i && duet__evictor_before(&c->bm->blocks[id], &c->bm->blocks[e->heap[(i - 1) / 2]]))
            FAIL(c, "evictor slot %u (block %u) comes before its parent", i, id);
    }
    return true;
}

/* One block's state: where it is, what its flags promise. Adds to *cached and *in_use. */
static bool check_block(struct checker *c, const struct duet__pool *p, uint32_t id,
                        uint32_t *cached, uint32_t *in_use)
{
    const duet_block_manager *bm = c->bm;
    const struct duet__block *b = &bm->blocks[id];
    bool is_cached = b->flags & DUET__BLOCK_CACHED;

    if (id == bm->null_block) {
        if (b->refcount != 1 || b->flags != DUET__BLOCK_NULL || c->refs[id])
            FAIL(c, "null block %u: refcount %u, flags %#x", id, b->refcount, b->flags);
        ++*in_use;
        return true;
    }
    if (b->refcount != c->refs[id])
        FAIL(c, "block %u: refcount %u, tables reference it %u times", id, b->refcount,
             c->refs[id]);
    *in_use += b->refcount > 0;
    if (b->refcount == 0 && !c->where[id] && (!is_cached || b->heap_pos == DUET__NO_BLOCK))
        FAIL(c, "block %u is leaked: unused, not free, not in the evictor", id);
    if ((b->heap_pos != DUET__NO_BLOCK) != (b->refcount == 0 && is_cached))
        FAIL(c, "block %u: evictor position %u with refcount %u", id, b->heap_pos, b->refcount);
    if (!is_cached && (b->flags & ~(uint32_t)DUET__BLOCK_NULL))
        FAIL(c, "uncached block %u has flags %#x", id, b->flags);
    if ((b->flags & (DUET__BLOCK_COMPUTED | DUET__BLOCK_TOUCHED)) && !p->tracks_computed)
        FAIL(c, "host block %u has computed flags %#x", id, b->flags);
    if ((b->flags & DUET__BLOCK_TOUCHED) && ((b->flags & DUET__BLOCK_COMPUTED) || !b->refcount))
        FAIL(c, "touched block %u: flags %#x, refcount %u", id, b->flags, b->refcount);
    if (!is_cached)
        return true;
    ++*cached;
    if (duet__map_get(&p->cache, b->hash) != id || b->num_tokens != bm->params.block_size)
        FAIL(c, "cached block %u is not in the content map under its hash", id);
    if (duet__block_hash(b->flags & DUET__BLOCK_FIRST, b->prev_hash,
                         bm->tokens + (size_t)id * bm->params.block_size,
                         bm->params.block_size) != b->hash)
        FAIL(c, "cached block %u: its tokens do not hash to its key", id);
    return true;
}

static bool check_touched(struct checker *c, const struct duet__pool *p)
{
    uint32_t count = 0, flagged = 0, prev = DUET__NO_BLOCK;

    for (uint32_t id = p->touched_head; id != DUET__NO_BLOCK; id = c->bm->blocks[id].touched_next) {
        if (id < p->base || id >= p->base + p->num_blocks || ++count > p->num_blocks ||
            c->bm->blocks[id].touched_prev != prev ||
            !(c->bm->blocks[id].flags & DUET__BLOCK_TOUCHED))
            FAIL(c, "touched list of pool at %u is broken at block %u", p->base, id);
        prev = id;
    }
    for (uint32_t id = p->base; id < p->base + p->num_blocks; id++)
        flagged += !!(c->bm->blocks[id].flags & DUET__BLOCK_TOUCHED);
    if (flagged != count)
        FAIL(c, "%u blocks flagged touched, %u on the touched list", flagged, count);
    return true;
}

static bool check_pool(struct checker *c, const struct duet__pool *p)
{
    uint32_t cached = 0, in_use = 0;

    if (!check_free_list(c, p) || !check_evictor(c, p) || !check_touched(c, p))
        return false;
    for (uint32_t id = p->base; id < p->base + p->num_blocks; id++)
        if (!check_block(c, p, id, &cached, &in_use))
            return false;
    if (cached != p->cache.count)
        FAIL(c, "pool at %u: %u cached blocks, content map holds %u", p->base, cached,
             p->cache.count);
    if (p->num_free + p->evictor.n + in_use != p->num_blocks)
        FAIL(c, "pool at %u: free %u + evictor %u + in use %u != %u blocks", p->base, p->num_free,
             p->evictor.n, in_use, p->num_blocks);
    return true;
}

bool duet__block_manager_check(const duet_block_manager *bm, char *err, size_t n)
{
    struct checker c = {.bm = bm, .err = err, .n = n};
    bool ok;

    c.total = bm->params.num_device_blocks + bm->params.num_host_blocks;
    c.refs = calloc(c.total, sizeof(*c.refs));
    c.where = calloc(c.total, 1);
    if (!c.refs || !c.where) {
        snprintf(err, n, "checker: out of memory");
        ok = false;
        goto out_free;
    }
    ok = check_tables(&c) && check_pool(&c, &bm->pools[DUET_BLOCK_POOL_DEVICE]) &&
         check_pool(&c, &bm->pools[DUET_BLOCK_POOL_HOST]);
out_free:
    free(c.refs);
    free(c.where);
    return ok;
}

duet_status duet__block_manager_seq_tokens(const duet_block_manager *bm, uint64_t seq, int32_t *out,
                                           uint32_t cap, uint32_t *n)
{
    const struct duet__table *t = duet__bm_table(bm, seq);
    uint32_t bs = bm->params.block_size;

    if (!t)
        return DUET_STATUS_NOT_FOUND;
    if (t->num_tokens > cap)
        return DUET_STATUS_CAPACITY;
    for (uint32_t s = 0; s < t->num_tokens; s++)
        out[s] = s / bs < t->num_windowed ? -1 : bm->tokens[(size_t)t->ids[s / bs] * bs + s % bs];
    *n = t->num_tokens;
    return DUET_STATUS_OK;
}
