/*
 * The block manager: vLLM 0.6's BlockSpaceManagerV2 (reference/vllm-semantics.md §1.7) over two
 * pools and a table per sequence.
 *
 *   duet_block_manager
 *     blocks[G + C]        metadata of every block      tokens[G + C][block_size]
 *     pools[DEVICE]        ids 0..G-1: free list, evictor, content map, touched list
 *     pools[HOST]          ids G..G+C-1: the same, without computed bits
 *     seqs   seq id → slot  (open addressing, grows by doubling)
 *     tables[slot]         block table of one sequence; freed slots are reused with their arrays
 *     group[]              scratch: the tables of the group being worked on
 *
 * Every public call validates its arguments and checks capacity first, then changes state;
 * a failed call leaves the manager as it was (the content of the prefix cache included).
 *
 * Deviations from vLLM 0.6, each a fix of a flaw the reference marks or a consequence of one:
 * - Eviction is exact LRU: (last_accessed asc, tokens hashed desc, insertion asc); evictor.c.
 * - Cached blocks are matched by content and predecessor, not by hash alone (allocator.c); a
 *   block whose predecessor was evicted is unreachable instead of matching a recomputed chain.
 * - The computed prefix is contiguous and never includes a block freed before it was marked
 *   computed (allocator.c); a group's common prefix counts sequences with no computed block too
 *   (vLLM skips empty lists, which could claim blocks a sequence does not have).
 * - Swaps keep blocks shared within the group (one pair per distinct block), and count each
 *   once; partial and empty lookahead blocks count toward the destination too (swap.c).
 * - can_append_slots and can_swap_in include the null block when a sliding window will first
 *   need it; can_allocate with a sliding window counts the whole prompt, which allocate takes
 *   (vLLM caps it at the window and could then fail).
 * - Calls on unknown sequences return DUET_STATUS_NOT_FOUND instead of being ignored.
 */
#include "block_manager-int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t cdiv(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

duet_status duet__bm_fail(duet_block_manager *bm, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(bm->error, sizeof(bm->error), fmt, ap);
    va_end(ap);
    return st;
}

struct duet__table *duet__bm_table(const duet_block_manager *bm, uint64_t seq)
{
    uint32_t slot = duet__map_get(&bm->seqs, seq);

    return slot == DUET__NO_BLOCK ? NULL : &bm->tables[slot];
}

void duet_block_manager_params_init(duet_block_manager_params *p)
{
    if (p)
        *p = (duet_block_manager_params){.block_size = 16, .max_seqs = 256, .watermark = 0.01};
}

const char *duet_block_manager_error(const duet_block_manager *bm)
{
    return bm ? bm->error : "";
}

/* ---- tables and groups ------------------------------------------------------------------- */

/* Makes room for `more` new sequences: table slots and seq map entries. */
static duet_status reserve_tables(duet_block_manager *bm, uint32_t more)
{
    uint64_t spare = (uint64_t)bm->tables_cap - bm->tables_used + bm->tables_free;
    uint64_t cap = bm->tables_cap ? bm->tables_cap : 8;
    struct duet__table *tables;

    if (duet__map_reserve(&bm->seqs, more))
        return DUET_STATUS_OUT_OF_MEMORY;
    if (spare >= more)
        return DUET_STATUS_OK;
    while (cap - bm->tables_used + bm->tables_free < more)
        cap *= 2;
    if (cap > DUET__MAX_BLOCKS)
        return DUET_STATUS_OUT_OF_MEMORY;
    tables = realloc(bm->tables, sizeof(*tables) * cap);
    if (!tables)
        return DUET_STATUS_OUT_OF_MEMORY;
    memset(tables + bm->tables_cap, 0, sizeof(*tables) * (cap - bm->tables_cap));
    bm->tables = tables;
    bm->tables_cap = (uint32_t)cap;
    return DUET_STATUS_OK;
}

/* A new, empty table for seq in a reserved slot (reserve_tables first). */
static struct duet__table *new_table(duet_block_manager *bm, uint64_t seq)
{
    uint32_t slot = bm->table_free_head;
    struct duet__table *t;

    if (slot != DUET__NO_BLOCK) {
        bm->table_free_head = bm->tables[slot].next_free;
        bm->tables_free--;
    } else {
        slot = bm->tables_used++;
    }
    t = &bm->tables[slot];
    *t = (struct duet__table){.seq = seq, .ids = t->ids, .cap = t->cap, .live = true};
    duet__map_put(&bm->seqs, seq, slot); /* cannot fail: reserved */
    return t;
}

/* Forgets an empty table; its slot (and ids array) is reused by a later sequence. */
static void drop_table(duet_block_manager *bm, struct duet__table *t)
{
    uint32_t slot = (uint32_t)(t - bm->tables);

    duet__map_del(&bm->seqs, t->seq);
    t->live = false;
    t->next_free = bm->table_free_head;
    bm->table_free_head = slot;
    bm->tables_free++;
}

/* Fills bm->group with the tables of seqs[0..n): every one known, none twice, and swapped or
 * resident as `swapped` says (-1: either). */
static duet_status group_of(duet_block_manager *bm, const uint64_t *seqs, uint32_t n, int swapped)
{
    uint64_t epoch = ++bm->epoch;

    if (!seqs || n == 0)
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT, "a group needs 1 or more seqs");
    if (n > bm->group_cap) {
        struct duet__table **g = realloc(bm->group, sizeof(*g) * n);

        if (!g)
            return duet__bm_fail(bm, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
        bm->group = g;
        bm->group_cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct duet__table *t = duet__bm_table(bm, seqs[i]);

        if (!t)
            return duet__bm_fail(bm, DUET_STATUS_NOT_FOUND, "seq %" PRIu64 ": no block table",
                                 seqs[i]);
        if (t->mark == epoch)
            return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                                 "seq %" PRIu64 ": given twice in one group", seqs[i]);
        if (swapped >= 0 && t->swapped != (swapped > 0))
            return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT, "seq %" PRIu64 ": is %s",
                                 seqs[i], t->swapped ? "swapped out" : "not swapped out");
        t->mark = epoch;
        bm->group[i] = t;
    }
    return DUET_STATUS_OK;
}

/* ---- creation ---------------------------------------------------------------------------- */

static duet_status check_params(const duet_block_manager_params *p, char *err, size_t n)
{
    uint64_t total = (uint64_t)p->num_device_blocks + p->num_host_blocks;

    if (p->block_size == 0 || p->block_size > (1u << 20)) {
        snprintf(err, n, "block_size must be in 1..%u, got %" PRIu32, 1u << 20, p->block_size);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (p->num_device_blocks == 0) {
        snprintf(err, n, "num_device_blocks must be at least 1");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (total > DUET__MAX_BLOCKS || total * p->block_size > SIZE_MAX / sizeof(int32_t)) {
        snprintf(err, n, "%" PRIu64 " blocks of %" PRIu32 " tokens are too many", total,
                 p->block_size);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (!(p->watermark >= 0.0 && p->watermark <= 1.0)) {
        snprintf(err, n, "watermark must be in 0..1, got %g", p->watermark);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (p->sliding_window && p->prefix_caching) {
        snprintf(err, n, "prefix caching does not support a sliding window");
        return DUET_STATUS_UNSUPPORTED;
    }
    return DUET_STATUS_OK;
}

static duet_status init_pools(duet_block_manager *bm)
{
    const duet_block_manager_params *p = &bm->params;
    uint64_t total = (uint64_t)p->num_device_blocks + p->num_host_blocks;

    bm->blocks = calloc(total, sizeof(*bm->blocks));
    bm->tokens = calloc(total * p->block_size, sizeof(*bm->tokens));
    if (!bm->blocks || !bm->tokens)
        return DUET_STATUS_OUT_OF_MEMORY;
    if (duet__pool_init(&bm->pools[DUET_BLOCK_POOL_DEVICE], bm->blocks, bm->tokens, 0,
                        p->num_device_blocks, p->block_size, p->prefix_caching, true))
        return DUET_STATUS_OUT_OF_MEMORY;
    return duet__pool_init(&bm->pools[DUET_BLOCK_POOL_HOST], bm->blocks, bm->tokens,
                           p->num_device_blocks, p->num_host_blocks, p->block_size,
                           p->prefix_caching, false);
}

duet_status duet_block_manager_create(const duet_block_manager_params *p, duet_block_manager **out,
                                      char *err, size_t err_size)
{
    char scratch[8];
    duet_block_manager *bm;
    duet_status st;

    if (!err || err_size == 0) {
        err = scratch;
        err_size = sizeof(scratch);
    }
    err[0] = '\0';
    if (!p || !out) {
        snprintf(err, err_size, "params and out must not be NULL");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    *out = NULL;
    st = check_params(p, err, err_size);
    if (st)
        return st;
    bm = calloc(1, sizeof(*bm));
    if (!bm)
        goto out_oom;
    bm->params = *p;
    bm->null_block = DUET__NO_BLOCK;
    bm->table_free_head = DUET__NO_BLOCK;
    bm->watermark_blocks = (uint32_t)(p->watermark * p->num_device_blocks);
    bm->window_blocks = p->sliding_window ? p->sliding_window / p->block_size + 2 : 0;
    if (init_pools(bm) || duet__map_init(&bm->seqs, 8) ||
        reserve_tables(bm, p->max_seqs < (1u << 20) ? p->max_seqs : (1u << 20)))
        goto out_destroy;
    *out = bm;
    return DUET_STATUS_OK;

out_destroy:
    duet_block_manager_destroy(bm);
out_oom:
    snprintf(err, err_size,
             "out of memory creating a block manager of %" PRIu32 " + %" PRIu32 " blocks",
             p->num_device_blocks, p->num_host_blocks);
    return DUET_STATUS_OUT_OF_MEMORY;
}

void duet_block_manager_destroy(duet_block_manager *bm)
{
    if (!bm)
        return;
    for (uint32_t i = 0; i < bm->tables_used; i++)
        free(bm->tables[i].ids);
    free(bm->tables);
    free(bm->group);
    duet__map_fini(&bm->seqs);
    duet__pool_fini(&bm->pools[DUET_BLOCK_POOL_DEVICE]);
    duet__pool_fini(&bm->pools[DUET_BLOCK_POOL_HOST]);
    free(bm->blocks);
    free(bm->tokens);
    free(bm);
}

void duet_block_manager_params_get(const duet_block_manager *bm, duet_block_manager_params *out)
{
    *out = bm->params;
}

/* ---- prompts ----------------------------------------------------------------------------- */

static duet_alloc fit(uint64_t total, uint64_t free_blocks, uint64_t need, uint64_t watermark)
{
    if (total < need + watermark)
        return DUET_ALLOC_NEVER;
    return free_blocks >= need + watermark ? DUET_ALLOC_OK : DUET_ALLOC_LATER;
}

duet_alloc duet_block_manager_can_allocate(const duet_block_manager *bm, uint32_t n_tokens,
                                           uint32_t num_lookahead_slots)
{
    if (!bm)
        return DUET_ALLOC_NEVER;
    return fit(bm->params.num_device_blocks,
               duet__pool_num_free(&bm->pools[DUET_BLOCK_POOL_DEVICE]),
               cdiv((uint64_t)n_tokens + num_lookahead_slots, bm->params.block_size),
               bm->watermark_blocks);
}

/* Checks that none of seqs has a table and that the prompt fits. */
static duet_status check_new_group(duet_block_manager *bm, const uint64_t *seqs, uint32_t n_seqs,
                                   const int32_t *tokens, uint32_t n_tokens)
{
    uint64_t need, have = duet__pool_num_free(&bm->pools[DUET_BLOCK_POOL_DEVICE]);

    if (!seqs || n_seqs == 0 || (!tokens && n_tokens))
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                             "allocate needs 1 or more seqs and the prompt's tokens");
    for (uint32_t i = 0; i < n_seqs; i++)
        if (duet__bm_table(bm, seqs[i]))
            return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                                 "seq %" PRIu64 ": already has a block table", seqs[i]);
    need = duet__prompt_cost(bm, tokens, n_tokens);
    if (need > have)
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "seq %" PRIu64 ": a prompt of %" PRIu32 " tokens needs %" PRIu64
                             " device blocks, %" PRIu64 " are free",
                             seqs[0], n_tokens, need, have);
    return DUET_STATUS_OK;
}

/* Creates the group's empty tables, each with room for the prompt's blocks; on failure none. */
static duet_status new_group(duet_block_manager *bm, const uint64_t *seqs, uint32_t n_seqs,
                             uint64_t num_blocks)
{
    uint32_t made = 0;
    duet_status st;

    if (reserve_tables(bm, n_seqs))
        return duet__bm_fail(bm, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    for (; made < n_seqs; made++) {
        if (duet__bm_table(bm, seqs[made])) {
            st = duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                               "seq %" PRIu64 ": given twice in one group", seqs[made]);
            goto out_drop;
        }
        if (duet__table_reserve(new_table(bm, seqs[made]), num_blocks)) {
            made++;
            st = duet__bm_fail(bm, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
            goto out_drop;
        }
    }
    return DUET_STATUS_OK;

out_drop:
    while (made-- > 0)
        drop_table(bm, duet__bm_table(bm, seqs[made]));
    return st;
}

duet_status duet_block_manager_allocate(duet_block_manager *bm, const uint64_t *seqs,
                                        uint32_t n_seqs, const int32_t *tokens, uint32_t n_tokens)
{
    struct duet__table *first;
    duet_status st;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = check_new_group(bm, seqs, n_seqs, tokens, n_tokens);
    if (st == DUET_STATUS_OK)
        st = new_group(bm, seqs, n_seqs, cdiv(n_tokens, bm->params.block_size));
    if (st)
        return st;
    first = duet__bm_table(bm, seqs[0]);
    duet__table_fill(bm, first, tokens, n_tokens);
    for (uint32_t i = 1; i < n_seqs; i++)
        duet__table_fork(bm, first, duet__bm_table(bm, seqs[i]));
    return DUET_STATUS_OK;
}

/* ---- decoding ---------------------------------------------------------------------------- */

/* The most slots one table may have: the device pool, and uint32 arithmetic. */
static uint64_t max_slots(const duet_block_manager *bm)
{
    uint64_t pool = (uint64_t)bm->params.num_device_blocks * bm->params.block_size;
    uint64_t limit = UINT32_MAX - bm->params.block_size;

    return pool < limit ? pool : limit;
}

/* seq's resident table, or NULL with the error set. */
static struct duet__table *resident(duet_block_manager *bm, uint64_t seq, duet_status *st)
{
    struct duet__table *t = duet__bm_table(bm, seq);

    if (!t)
        *st = duet__bm_fail(bm, DUET_STATUS_NOT_FOUND, "seq %" PRIu64 ": no block table", seq);
    else if (t->swapped)
        *st =
            duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT, "seq %" PRIu64 ": is swapped out", seq);
    return t && !t->swapped ? t : NULL;
}

bool duet_block_manager_can_append_slots(duet_block_manager *bm, const uint64_t *seqs,
                                         const uint32_t *n_new, uint32_t n_seqs,
                                         uint32_t num_lookahead_slots)
{
    uint64_t need = 0;

    if (!bm || group_of(bm, seqs, n_seqs, 0))
        return false;
    for (uint32_t i = 0; i < n_seqs; i++)
        need += duet__table_append_touched(bm, bm->group[i],
                                           (uint64_t)(n_new ? n_new[i] : 0) + num_lookahead_slots);
    if (bm->params.sliding_window && bm->null_block == DUET__NO_BLOCK)
        need++;
    return need <= duet__pool_num_free(&bm->pools[DUET_BLOCK_POOL_DEVICE]);
}

static duet_status check_pair_buf(duet_block_manager *bm, const duet_block_pair_buf *b)
{
    if (b && ((!b->pairs && b->cap) || b->n > b->cap))
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                             "pair buffer: n (%" PRIu32 ") above cap (%" PRIu32 ") or no array",
                             b->n, b->cap);
    return DUET_STATUS_OK;
}

duet_status duet_block_manager_append_tokens(duet_block_manager *bm, uint64_t seq,
                                             const int32_t *tokens, uint32_t n_tokens,
                                             uint32_t num_lookahead_slots,
                                             uint32_t num_computed_tokens,
                                             duet_block_pair_buf *copies)
{
    duet_status st = DUET_STATUS_OK;
    struct duet__table *t;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    t = resident(bm, seq, &st);
    if (!t)
        return st;
    if ((!tokens && n_tokens) || check_pair_buf(bm, copies))
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                             "seq %" PRIu64 ": tokens or copies buffer missing", seq);
    if ((uint64_t)t->num_tokens + n_tokens + num_lookahead_slots > max_slots(bm))
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "seq %" PRIu64 ": %" PRIu64 " slots exceed the device pool", seq,
                             (uint64_t)t->num_tokens + n_tokens + num_lookahead_slots);
    if ((uint64_t)num_computed_tokens > (uint64_t)t->num_tokens + n_tokens)
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                             "seq %" PRIu64 ": %" PRIu32 " computed tokens, only %" PRIu64 " exist",
                             seq, num_computed_tokens, (uint64_t)t->num_tokens + n_tokens);
    return duet__table_append(bm, t, tokens, n_tokens, num_lookahead_slots, num_computed_tokens,
                              copies);
}

duet_status duet_block_manager_ensure_empty_slots(duet_block_manager *bm, uint64_t seq,
                                                  uint32_t n_slots)
{
    return duet_block_manager_append_tokens(bm, seq, NULL, 0, n_slots, 0, NULL);
}

duet_status duet_block_manager_fork(duet_block_manager *bm, uint64_t parent, uint64_t child)
{
    const struct duet__table *p;
    struct duet__table *c;
    duet_status st;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    p = duet__bm_table(bm, parent);
    if (!p)
        return duet__bm_fail(bm, DUET_STATUS_NOT_FOUND, "seq %" PRIu64 ": no block table", parent);
    if (duet__bm_table(bm, child))
        return duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT,
                             "seq %" PRIu64 ": already has a block table", child);
    st = new_group(bm, &child, 1, p->num_blocks);
    if (st)
        return st;
    c = duet__bm_table(bm, child);
    duet__table_fork(bm, duet__bm_table(bm, parent), c); /* tables may have moved */
    return DUET_STATUS_OK;
}

duet_status duet_block_manager_free(duet_block_manager *bm, uint64_t seq)
{
    struct duet__table *t;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    t = duet__bm_table(bm, seq);
    if (!t)
        return duet__bm_fail(bm, DUET_STATUS_NOT_FOUND, "seq %" PRIu64 ": no block table", seq);
    duet__table_release_blocks(bm, t);
    drop_table(bm, t);
    return DUET_STATUS_OK;
}

/* ---- queries ----------------------------------------------------------------------------- */

bool duet_block_manager_has_seq(const duet_block_manager *bm, uint64_t seq)
{
    return bm && duet__bm_table(bm, seq);
}

duet_status duet_block_manager_block_table(const duet_block_manager *bm, uint64_t seq,
                                           const uint32_t **ids, uint32_t *n_blocks)
{
    const struct duet__table *t;

    if (!bm || !ids || !n_blocks)
        return DUET_STATUS_INVALID_ARGUMENT;
    t = duet__bm_table(bm, seq);
    if (!t)
        return DUET_STATUS_NOT_FOUND;
    *ids = t->ids;
    *n_blocks = t->num_blocks;
    return DUET_STATUS_OK;
}

duet_status duet_block_manager_seq_info_get(const duet_block_manager *bm, uint64_t seq,
                                            duet_block_manager_seq_info *out)
{
    const struct duet__table *t;

    if (!bm || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    t = duet__bm_table(bm, seq);
    if (!t)
        return DUET_STATUS_NOT_FOUND;
    *out = (duet_block_manager_seq_info){
        .num_tokens = t->num_tokens,
        .num_blocks = t->num_blocks,
        .num_empty_slots = t->num_blocks * bm->params.block_size - t->num_tokens,
        .num_windowed = t->num_windowed,
        .swapped = t->swapped,
    };
    return DUET_STATUS_OK;
}

uint32_t duet_block_manager_num_free_blocks(const duet_block_manager *bm, duet_block_pool pool)
{
    if (!bm || (pool != DUET_BLOCK_POOL_DEVICE && pool != DUET_BLOCK_POOL_HOST))
        return 0;
    return duet__pool_num_free(&bm->pools[pool]);
}

uint32_t duet_block_manager_num_total_blocks(const duet_block_manager *bm, duet_block_pool pool)
{
    if (!bm || (pool != DUET_BLOCK_POOL_DEVICE && pool != DUET_BLOCK_POOL_HOST))
        return 0;
    return bm->pools[pool].num_blocks;
}

/* ---- swapping ---------------------------------------------------------------------------- */

duet_alloc duet_block_manager_can_swap_in(duet_block_manager *bm, const uint64_t *seqs,
                                          const uint32_t *n_new, uint32_t n_seqs,
                                          uint32_t num_lookahead_slots)
{
    const struct duet__pool *dev;
    struct duet__swap_plan plan;

    if (!bm || group_of(bm, seqs, n_seqs, 1))
        return DUET_ALLOC_NEVER;
    dev = &bm->pools[DUET_BLOCK_POOL_DEVICE];
    duet__swap_plan(bm, bm->group, n_seqs, DUET_BLOCK_POOL_DEVICE, n_new, num_lookahead_slots,
                    &plan);
    return fit(dev->num_blocks, duet__pool_num_free(dev), plan.blocks_needed + plan.append_needed,
               bm->watermark_blocks);
}

bool duet_block_manager_can_swap_out(duet_block_manager *bm, const uint64_t *seqs, uint32_t n_seqs)
{
    struct duet__swap_plan plan;

    if (!bm || group_of(bm, seqs, n_seqs, 0))
        return false;
    duet__swap_plan(bm, bm->group, n_seqs, DUET_BLOCK_POOL_HOST, NULL, 0, &plan);
    return plan.blocks_needed <= duet__pool_num_free(&bm->pools[DUET_BLOCK_POOL_HOST]);
}

static duet_status swap(duet_block_manager *bm, const uint64_t *seqs, uint32_t n_seqs,
                        duet_block_pool dst, duet_block_pair_buf *pairs)
{
    struct duet__swap_plan plan;
    uint64_t have;
    duet_status st;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = group_of(bm, seqs, n_seqs, dst == DUET_BLOCK_POOL_DEVICE);
    if (st == DUET_STATUS_OK && !pairs)
        st = duet__bm_fail(bm, DUET_STATUS_INVALID_ARGUMENT, "swap needs a pair buffer");
    if (st || (st = check_pair_buf(bm, pairs)))
        return st;
    duet__swap_plan(bm, bm->group, n_seqs, dst, NULL, 0, &plan);
    have = duet__pool_num_free(&bm->pools[dst]);
    if (plan.blocks_needed > have)
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "swap of seq %" PRIu64 "'s group needs %" PRIu64 " %s blocks, %" PRIu64
                             " are free",
                             seqs[0], plan.blocks_needed, dst ? "host" : "device", have);
    if (plan.pairs > (uint64_t)pairs->cap - pairs->n)
        return duet__bm_fail(bm, DUET_STATUS_CAPACITY,
                             "swap of seq %" PRIu64 "'s group writes %" PRIu64
                             " pairs, the buffer has room for %" PRIu32,
                             seqs[0], plan.pairs, pairs->cap - pairs->n);
    duet__swap_run(bm, bm->group, n_seqs, dst, pairs);
    return DUET_STATUS_OK;
}

duet_status duet_block_manager_swap_in(duet_block_manager *bm, const uint64_t *seqs,
                                       uint32_t n_seqs, duet_block_pair_buf *pairs)
{
    return swap(bm, seqs, n_seqs, DUET_BLOCK_POOL_DEVICE, pairs);
}

duet_status duet_block_manager_swap_out(duet_block_manager *bm, const uint64_t *seqs,
                                        uint32_t n_seqs, duet_block_pair_buf *pairs)
{
    return swap(bm, seqs, n_seqs, DUET_BLOCK_POOL_HOST, pairs);
}

/* ---- prefix caching ---------------------------------------------------------------------- */

void duet_block_manager_mark_computed(duet_block_manager *bm)
{
    if (bm)
        duet__pool_mark_computed(&bm->pools[DUET_BLOCK_POOL_DEVICE]);
}

duet_status duet_block_manager_computed_prefix(duet_block_manager *bm, const uint64_t *seqs,
                                               uint32_t n_seqs, uint32_t *n_blocks)
{
    uint32_t n;
    duet_status st;

    if (!bm || !n_blocks)
        return DUET_STATUS_INVALID_ARGUMENT;
    st = group_of(bm, seqs, n_seqs, -1);
    if (st)
        return st;
    n = duet__table_computed_prefix(bm, bm->group[0]);
    for (uint32_t s = 1; s < n_seqs; s++) {
        const struct duet__table *a = bm->group[0], *b = bm->group[s];
        uint32_t m = duet__table_computed_prefix(bm, bm->group[s]), i = 0;

        while (i < n && i < m && a->ids[i] == b->ids[i])
            i++;
        n = i;
    }
    *n_blocks = n;
    return DUET_STATUS_OK;
}

duet_status duet_block_manager_access(duet_block_manager *bm, uint64_t seq, uint64_t now)
{
    struct duet__table *t;

    if (!bm)
        return DUET_STATUS_INVALID_ARGUMENT;
    t = duet__bm_table(bm, seq);
    if (!t)
        return duet__bm_fail(bm, DUET_STATUS_NOT_FOUND, "seq %" PRIu64 ": no block table", seq);
    t->last_access = now;
    t->accessed = true;
    return DUET_STATUS_OK;
}

double duet_block_manager_hit_rate(const duet_block_manager *bm, duet_block_pool pool)
{
    const struct duet__pool *p;

    if (!bm || !bm->params.prefix_caching ||
        (pool != DUET_BLOCK_POOL_DEVICE && pool != DUET_BLOCK_POOL_HOST))
        return -1.0;
    p = &bm->pools[pool];
    return p->queries ? (double)p->hits / (double)p->queries : 0.0;
}

void duet_block_manager_stats_get(const duet_block_manager *bm, duet_block_manager_stats *out)
{
    if (!bm || !out)
        return;
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < 2; i++) {
        out->cache_queries[i] = bm->pools[i].queries;
        out->cache_hits[i] = bm->pools[i].hits;
        out->evictions[i] = bm->pools[i].evictions;
        out->hash_collisions[i] = bm->pools[i].collisions;
    }
    out->copies_on_write = bm->cows;
    out->blocks_swapped_out = bm->swapped_out;
    out->blocks_swapped_in = bm->swapped_in;
}
