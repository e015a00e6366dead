/*
 * Block tables: one per sequence, the physical block of every KV slot it uses.
 *
 *   ids[]      N  N  12 40  7  3  9              N = the null block (sliding window only)
 *              └─┬─┘ └────┬────┘  │  └─ lookahead (empty, reserved for speculative tokens)
 *        num_windowed   full      └─ partial: num_tokens % block_size tokens
 *   num_tokens = tokens recorded; slot s lives in block ids[s / block_size] at s % block_size
 *
 * Tokens live in the blocks (duet_block_manager.tokens), not in the table: every table that
 * references a block sees the same content, because a block is only ever written by a table
 * that holds its only reference (copy on write makes it so).
 *
 * Appending n tokens with k lookahead slots, in vLLM's order:
 *   1. sliding window: blocks wholly before the window return to the pool; the null block
 *      takes their place (it is allocated the first time a window needs it and kept forever);
 *   2. ensure n + k empty slots: new blocks at the end;
 *   3. write the tokens block by block: a block with other references is first copied to a new
 *      block (the worker copies the KV, src → dst, before the forward pass); a block that fills
 *      up is promoted (prefix caching may swap it for a cached block of the same content).
 * Everything that can fail is checked before the first change, so a failed call changes nothing.
 *
 * The ids array grows by doubling and is kept when the table slot is reused: no allocation per
 * token in the steady state.
 */
#include "block_manager-int.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int32_t *tokens_of(const duet_block_manager *bm, uint32_t id)
{
    return bm->tokens + (size_t)id * bm->params.block_size;
}

static uint64_t cdiv(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

duet_status duet__table_reserve(struct duet__table *t, uint64_t num_blocks)
{
    uint64_t cap = t->cap ? t->cap : 4;
    uint32_t *ids;

    if (num_blocks <= t->cap)
        return DUET_STATUS_OK;
    while (cap < num_blocks)
        cap *= 2;
    if (cap > DUET__MAX_BLOCKS)
        cap = num_blocks;
    ids = realloc(t->ids, sizeof(*ids) * cap);
    if (!ids)
        return DUET_STATUS_OUT_OF_MEMORY;
    t->ids = ids;
    t->cap = (uint32_t)cap;
    return DUET_STATUS_OK;
}

static uint32_t prev_of(const struct duet__table *t, uint32_t index)
{
    return index ? t->ids[index - 1] : DUET__NO_BLOCK;
}

void duet__table_fill(duet_block_manager *bm, struct duet__table *t, const int32_t *tokens,
                      uint32_t n_tokens)
{
    struct duet__pool *dev = &bm->pools[DUET_BLOCK_POOL_DEVICE];
    uint32_t bs = bm->params.block_size, rest = n_tokens % bs;
    uint32_t id;

    for (uint32_t i = 0; i < n_tokens / bs; i++) {
        id = duet__pool_alloc_full(dev, prev_of(t, i), i, tokens + (size_t)i * bs);
        assert(id != DUET__NO_BLOCK); /* duet__prompt_cost said it fits */
        t->ids[t->num_blocks++] = id;
    }
    if (rest) {
        id = duet__pool_alloc(dev);
        assert(id != DUET__NO_BLOCK);
        memcpy(tokens_of(bm, id), tokens + (n_tokens - rest), sizeof(*tokens) * rest);
        bm->blocks[id].num_tokens = rest;
        t->ids[t->num_blocks++] = id;
    }
    t->num_tokens = n_tokens;
}

uint64_t duet__prompt_cost(const duet_block_manager *bm, const int32_t *tokens, uint32_t n_tokens)
{
    const struct duet__pool *dev = &bm->pools[DUET_BLOCK_POOL_DEVICE];
    uint32_t bs = bm->params.block_size, full = n_tokens / bs, prev = DUET__NO_BLOCK, i;
    uint64_t blocks = cdiv(n_tokens, bs);

    if (!dev->caching || blocks <= duet__pool_num_free(dev))
        return blocks;
    /* Full blocks already in use by other tables cost nothing. A chain of in-use blocks starts
     * at the first block; after the first block that is not one, none can follow (an in-use
     * block's predecessor is in use too). */
    for (i = 0; i < full && duet__pool_hashable(dev, prev); i++) {
        uint32_t hit = duet__pool_peek(dev, prev, tokens + (size_t)i * bs);

        if (hit == DUET__NO_BLOCK || bm->blocks[hit].refcount == 0)
            break;
        prev = hit;
    }
    return blocks - i;
}

/* ---- appending --------------------------------------------------------------------------- */

struct append_plan {
    uint64_t new_blocks;  /* blocks appended by ensure */
    uint64_t copies;      /* shared blocks the tokens land in */
    uint64_t window_free; /* blocks the window releases to the pool */
    uint32_t window_end;  /* num_windowed afterwards */
    bool needs_null;      /* the null block must be allocated */
};

static void plan_window(const duet_block_manager *bm, const struct duet__table *t,
                        uint32_t num_computed, struct append_plan *plan)
{
    uint32_t bs = bm->params.block_size;
    int64_t end = (int64_t)(num_computed / bs) - bm->window_blocks;

    plan->window_end = t->num_windowed;
    if (!bm->params.sliding_window)
        return;
    if (end > (int64_t)(t->num_tokens / bs))
        end = t->num_tokens / bs; /* only blocks that were full before this call */
    if (end <= (int64_t)t->num_windowed)
        return;
    plan->window_end = (uint32_t)end;
    for (uint32_t i = t->num_windowed; i < plan->window_end; i++)
        plan->window_free += bm->blocks[t->ids[i]].refcount == 1;
    plan->needs_null = bm->null_block == DUET__NO_BLOCK;
}

static void plan_append(const duet_block_manager *bm, const struct duet__table *t, uint64_t n,
                        uint64_t slots, struct append_plan *plan)
{
    uint32_t bs = bm->params.block_size;
    uint64_t empty = (uint64_t)t->num_blocks * bs - t->num_tokens;

    plan->new_blocks = slots > empty ? cdiv(slots - empty, bs) : 0;
    if (n == 0)
        return;
    for (uint64_t i = t->num_tokens / bs; i < t->num_blocks && i <= (t->num_tokens + n - 1) / bs;
         i++)
        plan->copies += bm->blocks[t->ids[i]].refcount > 1;
}

static void apply_window(duet_block_manager *bm, struct duet__table *t, uint32_t end)
{
    struct duet__pool *dev = &bm->pools[DUET_BLOCK_POOL_DEVICE];

    if (end <= t->num_windowed)
        return;
    for (uint32_t i = t->num_windowed; i < end; i++)
        duet__pool_decref(dev, t->ids[i]);
    if (bm->null_block == DUET__NO_BLOCK) {
        bm->null_block = duet__pool_alloc(dev);
        assert(bm->null_block != DUET__NO_BLOCK); /* plan_window counted it */
        bm->blocks[bm->null_block].flags = DUET__BLOCK_NULL;
    }
    for (uint32_t i = t->num_windowed; i < end; i++)
        t->ids[i] = bm->null_block;
    t->num_windowed = end;
}

static void ensure_blocks(duet_block_manager *bm, struct duet__table *t, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        uint32_t id = duet__pool_alloc(&bm->pools[DUET_BLOCK_POOL_DEVICE]);

        assert(id != DUET__NO_BLOCK);
        t->ids[t->num_blocks++] = id;
    }
}

/* The block at index i, ready to be written: a copy of it when other tables share it. */
static uint32_t writable(duet_block_manager *bm, struct duet__table *t, uint32_t i,
                         duet_block_pair_buf *copies)
{
    struct duet__pool *dev = &bm->pools[DUET_BLOCK_POOL_DEVICE];
    uint32_t src = t->ids[i], dst;

    if (bm->blocks[src].refcount == 1)
        return src;
    dst = duet__pool_alloc(dev);
    assert(dst != DUET__NO_BLOCK);
    memcpy(tokens_of(bm, dst), tokens_of(bm, src), sizeof(int32_t) * bm->blocks[src].num_tokens);
    bm->blocks[dst].num_tokens = bm->blocks[src].num_tokens;
    duet__pool_decref(dev, src);
    copies->pairs[copies->n++] = (duet_block_pair){.src = src, .dst = dst};
    bm->cows++;
    t->ids[i] = dst;
    return dst;
}

static void write_tokens(duet_block_manager *bm, struct duet__table *t, const int32_t *tokens,
                         uint32_t n, duet_block_pair_buf *copies)
{
    uint32_t bs = bm->params.block_size, done = 0;

    while (done < n) {
        uint32_t i = t->num_tokens / bs, off = t->num_tokens % bs;
        uint32_t k = bs - off < n - done ? bs - off : n - done;
        uint32_t id = writable(bm, t, i, copies);

        memcpy(tokens_of(bm, id) + off, tokens + done, sizeof(*tokens) * k);
        bm->blocks[id].num_tokens = off + k;
        if (off + k == bs)
            t->ids[i] =
                duet__pool_promote(&bm->pools[DUET_BLOCK_POOL_DEVICE], id, prev_of(t, i), i);
        t->num_tokens += k;
        done += k;
    }
}

duet_status duet__table_append(duet_block_manager *bm, struct duet__table *t, const int32_t *tokens,
                               uint32_t n_tokens, uint32_t lookahead, uint32_t num_computed,
                               duet_block_pair_buf *copies)
{
    struct append_plan plan = {0};
    uint64_t need, have;

    plan_window(bm, t, num_computed, &plan);
    plan_append(bm, t, n_tokens, (uint64_t)n_tokens + lookahead, &plan);
    need = plan.new_blocks + plan.copies + plan.needs_null;
    have = duet__pool_num_free(&bm->pools[DUET_BLOCK_POOL_DEVICE]) + plan.window_free;
    if (need > have)
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "seq %" PRIu64 ": appending needs %" PRIu64 " device blocks, %" PRIu64
                             " are free",
                             t->seq, need, have);
    if (plan.copies > (copies ? (uint64_t)copies->cap - copies->n : 0))
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "seq %" PRIu64 ": %" PRIu64 " copy-on-write pairs do not fit the "
                             "copies buffer",
                             t->seq, plan.copies);
    if (duet__table_reserve(t, t->num_blocks + plan.new_blocks))
        return duet__bm_fail(bm, DUET_STATUS_OUT_OF_MEMORY, "seq %" PRIu64 ": out of memory",
                             t->seq);
    apply_window(bm, t, plan.window_end);
    ensure_blocks(bm, t, plan.new_blocks);
    write_tokens(bm, t, tokens, n_tokens, copies);
    return DUET_STATUS_OK;
}

uint32_t duet__table_append_touched(const duet_block_manager *bm, const struct duet__table *t,
                                    uint64_t n_slots)
{
    struct append_plan plan = {0};

    /* Every slot counted as written: blocks beyond the table's empty slots, and the shared
     * blocks the slots land in (copied on write). vLLM counts each touched block as new, so a
     * sequence whose partial last block fills the pool could never append, and was preempted
     * and re-admitted forever. */
    plan_append(bm, t, n_slots, n_slots, &plan);
    return (uint32_t)(plan.new_blocks + plan.copies);
}

/* ---- fork, free, computed prefix --------------------------------------------------------- */

void duet__table_fork(duet_block_manager *bm, const struct duet__table *parent,
                      struct duet__table *child)
{
    if (parent->num_blocks) /* an empty table may have no array */
        memcpy(child->ids, parent->ids, sizeof(*child->ids) * parent->num_blocks);
    for (uint32_t i = parent->num_windowed; i < parent->num_blocks; i++)
        duet__pool_incref(duet__bm_pool_of(bm, parent->ids[i]), parent->ids[i]);
    child->num_blocks = parent->num_blocks;
    child->num_tokens = parent->num_tokens;
    child->num_windowed = parent->num_windowed;
    child->computed_prefix = parent->computed_prefix;
    child->swapped = parent->swapped;
}

void duet__table_release_blocks(duet_block_manager *bm, struct duet__table *t)
{
    if (bm->params.prefix_caching && t->accessed)
        for (uint32_t i = t->num_windowed; i < t->num_blocks; i++)
            duet__pool_set_accessed(duet__bm_pool_of(bm, t->ids[i]), t->ids[i], t->last_access);
    for (uint32_t i = t->num_windowed; i < t->num_blocks; i++)
        duet__pool_decref(duet__bm_pool_of(bm, t->ids[i]), t->ids[i]);
    t->num_blocks = t->num_tokens = t->num_windowed = t->computed_prefix = 0;
}

uint32_t duet__table_computed_prefix(duet_block_manager *bm, struct duet__table *t)
{
    uint32_t i = t->computed_prefix;

    if (t->swapped || !bm->params.prefix_caching || t->num_blocks == 0)
        return 0;
    while (i + 1 < t->num_blocks && (bm->blocks[t->ids[i]].flags & DUET__BLOCK_COMPUTED))
        i++;
    t->computed_prefix = i;
    return i;
}
