/*
 * Swapping a group of sequences between the device pool and the host pool.
 *
 *   tables    A: d3 d8 d5        B: d3 d8 d9          (B forked from A, then diverged)
 *   walk      d3 → h0 (pair)     d3 → h0 (shared)     first visit of a source block plans or
 *             d8 → h1 (pair)     d8 → h1 (shared)     allocates its destination (walk_dst);
 *             d5 → h2 (pair)     d9 → h3 (pair)       later visits reuse it and add a reference
 *
 * A walk stamps every source block it visits with a fresh epoch (block.mark), so "first visit"
 * costs O(1) and a walk is O(blocks of the group). Fix over vLLM: vLLM swaps each sequence
 * separately, so a block shared by two sequences of the group gets two destination blocks (the
 * naive allocator) and is counted twice by get_num_full_blocks_touched (its [quirk]); here it
 * stays shared, gets one pair, and is counted once.
 *
 * duet__swap_plan counts, without changing anything, the destination blocks the swap takes: one
 * per distinct source block, except full blocks the destination's prefix cache holds in use
 * already (those are shared, as vLLM's swap_in through allocate_immutable_block does). A cached
 * block in the destination's evictor still costs one (reviving it takes it from the free count).
 * The count is an upper bound of what duet__swap_run takes, so a planned swap never runs out.
 *
 * For a swap-in it also counts what appending n_new tokens and k lookahead slots to each
 * sequence will take right after: new blocks past the table's empty slots, plus a copy for each
 * partial block the tokens land in that the group shares. (vLLM instead adds its
 * get_num_blocks_touched_by_append_slots and leaves partial and empty blocks out of the swap's
 * own count; both agree when nothing is shared and no empty lookahead block is swapped.)
 */
#include "block_manager-int.h"

#include <assert.h>
#include <string.h>

static uint32_t physical(const duet_block_manager *bm, uint32_t id)
{
    return id < bm->params.num_device_blocks ? id : id - bm->params.num_device_blocks;
}

static bool is_full(const duet_block_manager *bm, uint32_t id)
{
    return bm->blocks[id].num_tokens == bm->params.block_size;
}

/* Destination of the first visit of t->ids[i]: a cached block in use there, or a new one. */
static uint32_t plan_block(duet_block_manager *bm, const struct duet__pool *dp,
                           const struct duet__table *t, uint32_t i)
{
    uint32_t src = t->ids[i];
    uint32_t prev = i > t->num_windowed ? bm->blocks[t->ids[i - 1]].walk_dst : DUET__NO_BLOCK;
    uint32_t hit;

    if (!is_full(bm, src) || prev == DUET__NEW_BLOCK || !duet__pool_hashable(dp, prev))
        return DUET__NEW_BLOCK;
    hit = duet__pool_peek(dp, prev, bm->tokens + (size_t)src * bm->params.block_size);
    return hit != DUET__NO_BLOCK && bm->blocks[hit].refcount > 0 ? hit : DUET__NEW_BLOCK;
}

/* Blocks that appending n tokens and k slots to t takes once the group is swapped in. */
static uint64_t append_after(const duet_block_manager *bm, const struct duet__table *t, uint64_t n,
                             uint64_t k)
{
    uint32_t bs = bm->params.block_size;
    uint64_t empty = (uint64_t)t->num_blocks * bs - t->num_tokens, need = 0;

    if (n + k > empty)
        need = (n + k - empty + bs - 1) / bs;
    for (uint64_t i = t->num_tokens / bs;
         n && i < t->num_blocks && i <= (t->num_tokens + n - 1) / bs; i++)
        need += bm->blocks[t->ids[i]].walk_refs > 1;
    return need;
}

void duet__swap_plan(duet_block_manager *bm, struct duet__table *const *tables, uint32_t n,
                     duet_block_pool dst, const uint32_t *n_new, uint32_t lookahead,
                     struct duet__swap_plan *plan)
{
    const struct duet__pool *dp = &bm->pools[dst];
    uint64_t epoch = ++bm->epoch;

    memset(plan, 0, sizeof(*plan));
    for (uint32_t s = 0; s < n; s++) {
        const struct duet__table *t = tables[s];

        for (uint32_t i = t->num_windowed; i < t->num_blocks; i++) {
            struct duet__block *b = &bm->blocks[t->ids[i]];

            if (b->mark != epoch) {
                b->mark = epoch;
                b->walk_refs = 0;
                b->walk_dst = plan_block(bm, dp, t, i);
                plan->blocks_needed += b->walk_dst == DUET__NEW_BLOCK;
                plan->pairs++;
            }
            b->walk_refs++;
        }
    }
    if (dst != DUET_BLOCK_POOL_DEVICE)
        return;
    for (uint32_t s = 0; s < n; s++)
        plan->append_needed += append_after(bm, tables[s], n_new ? n_new[s] : 0, lookahead);
    if (bm->params.sliding_window && bm->null_block == DUET__NO_BLOCK)
        plan->append_needed++;
}

/* Allocates the destination of source block src at index i of t (whose earlier entries are
 * already moved): a cached block of the same content when the destination has one. */
static uint32_t move_block(duet_block_manager *bm, struct duet__pool *dp,
                           const struct duet__table *t, uint32_t i, uint32_t src)
{
    uint32_t bs = bm->params.block_size, dst;
    const int32_t *tokens = bm->tokens + (size_t)src * bs;

    if (is_full(bm, src))
        return duet__pool_alloc_full(dp, i > t->num_windowed ? t->ids[i - 1] : DUET__NO_BLOCK, i,
                                     tokens);
    dst = duet__pool_alloc(dp);
    assert(dst != DUET__NO_BLOCK); /* duet__swap_plan counted it */
    memcpy(bm->tokens + (size_t)dst * bs, tokens, sizeof(*tokens) * bm->blocks[src].num_tokens);
    bm->blocks[dst].num_tokens = bm->blocks[src].num_tokens;
    return dst;
}

void duet__swap_run(duet_block_manager *bm, struct duet__table *const *tables, uint32_t n,
                    duet_block_pool dst, duet_block_pair_buf *pairs)
{
    struct duet__pool *dp = &bm->pools[dst], *sp = &bm->pools[!dst];
    uint64_t epoch = ++bm->epoch;
    uint32_t first_pair = pairs->n;

    for (uint32_t s = 0; s < n; s++) {
        struct duet__table *t = tables[s];

        for (uint32_t i = t->num_windowed; i < t->num_blocks; i++) {
            uint32_t src = t->ids[i];
            struct duet__block *b = &bm->blocks[src];

            if (b->mark == epoch) {
                duet__pool_incref(dp, b->walk_dst);
            } else {
                b->mark = epoch;
                b->walk_dst = move_block(bm, dp, t, i, src);
                pairs->pairs[pairs->n++] =
                    (duet_block_pair){.src = physical(bm, src), .dst = physical(bm, b->walk_dst)};
            }
            duet__pool_decref(sp, src);
            t->ids[i] = b->walk_dst;
        }
        t->swapped = dst == DUET_BLOCK_POOL_HOST;
        t->computed_prefix = 0;
    }
    if (dst == DUET_BLOCK_POOL_HOST)
        bm->swapped_out += pairs->n - first_pair;
    else
        bm->swapped_in += pairs->n - first_pair;
}
