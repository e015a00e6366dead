/* block_manager-int.h — internals shared by the files of block_manager/. */
#ifndef DUET_BLOCK_MANAGER_INT_H
#define DUET_BLOCK_MANAGER_INT_H

#include <duet/block_manager.h>

#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define DUET__BM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__BM_PRINTF(f, a)
#endif

#define DUET__NO_BLOCK UINT32_MAX        /* "none" for block ids and links */
#define DUET__NEW_BLOCK (UINT32_MAX - 1) /* a swap's planned, not yet allocated block */
#define DUET__MAX_BLOCKS (1u << 30)      /* G + C limit: ids stay far from the sentinels */

/* duet__block.flags */
enum {
    DUET__BLOCK_CACHED = 1u << 0,   /* registered in its pool's content map under .hash */
    DUET__BLOCK_FIRST = 1u << 1,    /* cached as the first block of a sequence */
    DUET__BLOCK_COMPUTED = 1u << 2, /* its KV exists (device, cached blocks only) */
    DUET__BLOCK_TOUCHED = 1u << 3,  /* on the device pool's list awaiting mark_computed */
    DUET__BLOCK_NULL = 1u << 4,     /* the sliding window's placeholder, owned by the manager */
};

/* One physical block of either pool: metadata and (in duet_block_manager.tokens) its tokens. */
struct duet__block {
    uint64_t hash;          /* chained content hash, when CACHED */
    uint64_t prev_hash;     /* the previous block's hash when it was cached (0 for a first) */
    uint64_t last_accessed; /* caller's time units; 0 = never (evictor key, ascending) */
    uint64_t evict_order;   /* evictor insertion count (last key, ascending) */
    uint64_t mark;          /* manager epoch of the last group walk that visited it */
    uint32_t refcount;      /* references from block tables; the null block holds 1 */
    uint32_t num_tokens;    /* tokens stored, 0..block_size */
    uint32_t num_hashed;    /* tokens from the chain's start through this block, when CACHED */
    uint32_t prev_id;       /* previous block when cached, DUET__NO_BLOCK for a first block */
    uint32_t prev_gen;      /* gen of prev_id when this block was cached */
    uint32_t gen;           /* bumped each time the block leaves the content map */
    uint32_t next_free;     /* free-list link */
    uint32_t heap_pos;      /* index in the evictor heap, DUET__NO_BLOCK when not there */
    uint32_t touched_prev;  /* touched-list links */
    uint32_t touched_next;  /*   (DUET__NO_BLOCK at the ends) */
    uint32_t walk_dst;      /* group walk scratch: the block this one swaps to */
    uint32_t walk_refs;     /* group walk scratch: references from the group's tables */
    uint32_t flags;         /* DUET__BLOCK_* */
};

/* ---- hash.c ------------------------------------------------------------------------------ */

uint64_t duet__xxh64(const void *data, size_t len, uint64_t seed);
/* XXH64 of (is_first, prev_hash, tokens as little-endian int32): a full block's content hash. */
uint64_t duet__block_hash(bool is_first, uint64_t prev_hash, const int32_t *tokens, uint32_t n);
/* A bijective 64-bit mixer (splitmix64's finaliser), for map indices. */
uint64_t duet__mix64(uint64_t x);

/* ---- map.c: open addressing, linear probing, backward-shift deletion ---------------------- */

struct duet__map {
    uint64_t *keys; /* [mask + 1] */
    uint32_t *vals; /* [mask + 1]; DUET__NO_BLOCK marks an empty slot */
    uint32_t mask;  /* capacity − 1, capacity a power of two */
    uint32_t count; /* entries in use */
};

duet_status duet__map_init(struct duet__map *m, uint32_t min_entries);
void duet__map_fini(struct duet__map *m);
uint32_t duet__map_get(const struct duet__map *m, uint64_t key);
/* Inserts an absent key; val < DUET__NO_BLOCK. Grows when half full (the only failure). */
duet_status duet__map_put(struct duet__map *m, uint64_t key, uint32_t val);
/* Makes room for `more` insertions without growing. */
duet_status duet__map_reserve(struct duet__map *m, uint32_t more);
bool duet__map_del(struct duet__map *m, uint64_t key);

/* ---- evictor.c: binary min-heap of cached, unused blocks --------------------------------- */

struct duet__evictor {
    struct duet__block *blocks; /* the manager's array (absolute ids) */
    uint32_t *heap;             /* [cap] block ids, heap-ordered by evictor key */
    uint32_t n;                 /* entries */
    uint32_t cap;               /* the pool's block count */
    uint64_t next_order;        /* next insertion number */
};

duet_status duet__evictor_init(struct duet__evictor *e, struct duet__block *blocks, uint32_t cap);
void duet__evictor_fini(struct duet__evictor *e);
void duet__evictor_add(struct duet__evictor *e, uint32_t id);
void duet__evictor_remove(struct duet__evictor *e, uint32_t id);
void duet__evictor_update(struct duet__evictor *e, uint32_t id, uint64_t last_accessed);
uint32_t duet__evictor_pop(struct duet__evictor *e);
/* True when block a leaves before block b (the heap order). */
bool duet__evictor_before(const struct duet__block *a, const struct duet__block *b);

/* ---- allocator.c: one pool, naive or prefix-caching -------------------------------------- */

struct duet__pool {
    struct duet__block *blocks;   /* the manager's array (absolute ids) */
    int32_t *tokens;              /* the manager's [id][block_size] */
    uint32_t base;                /* first id of the pool */
    uint32_t num_blocks;          /* ids base .. base + num_blocks − 1 */
    uint32_t block_size;          /* tokens per block */
    bool caching;                 /* prefix caching */
    bool tracks_computed;         /* the device pool: touched list, computed bits */
    uint32_t free_head;           /* LIFO free list of uncached, unused blocks */
    uint32_t num_free;            /* its length */
    uint32_t touched_head;        /* newly cached blocks not yet marked computed */
    struct duet__evictor evictor; /* cached blocks with refcount 0 */
    struct duet__map cache;       /* content hash → block id */
    uint64_t queries;             /* cache lookups */
    uint64_t hits;                /* lookups that reused a block */
    uint64_t evictions;           /* cached blocks recycled */
    uint64_t collisions;          /* equal hash, different content */
};

duet_status duet__pool_init(struct duet__pool *p, struct duet__block *blocks, int32_t *tokens,
                            uint32_t base, uint32_t num_blocks, uint32_t block_size, bool caching,
                            bool tracks_computed);
void duet__pool_fini(struct duet__pool *p);
/* Free list plus evictor: blocks an allocation can take. */
uint32_t duet__pool_num_free(const struct duet__pool *p);
/* An empty block with refcount 1 (free list first, then eviction); DUET__NO_BLOCK when none. */
uint32_t duet__pool_alloc(struct duet__pool *p);
/* A full block holding tokens[0..block_size) at position `index` after block prev
 * (DUET__NO_BLOCK for the first): a cached one when caching finds it, else a new one, cached.
 * DUET__NO_BLOCK when the pool is exhausted. */
uint32_t duet__pool_alloc_full(struct duet__pool *p, uint32_t prev, uint32_t index,
                               const int32_t *tokens);
/* Block id at `index` after prev has just been filled in place: caches it, or, when the same
 * content is cached already, releases it and returns the cached block (with a reference). */
uint32_t duet__pool_promote(struct duet__pool *p, uint32_t id, uint32_t prev, uint32_t index);
/* The cached block holding this content, verified token by token; no counters change. */
uint32_t duet__pool_peek(const struct duet__pool *p, uint32_t prev, const int32_t *tokens);
/* Whether a full block after prev gets a content hash (caching, and prev is cached or none). */
bool duet__pool_hashable(const struct duet__pool *p, uint32_t prev);
void duet__pool_incref(struct duet__pool *p, uint32_t id);
void duet__pool_decref(struct duet__pool *p, uint32_t id);
void duet__pool_set_accessed(struct duet__pool *p, uint32_t id, uint64_t now);
void duet__pool_mark_computed(struct duet__pool *p);

/* ---- block tables ------------------------------------------------------------------------ */

struct duet__table {
    uint64_t seq;             /* the caller's sequence id */
    uint64_t last_access;     /* from duet_block_manager_access(), when accessed */
    uint64_t mark;            /* manager epoch of the last group walk (duplicate detection) */
    uint32_t *ids;            /* [cap] absolute block ids, [num_blocks] in use */
    uint32_t num_blocks;      /* entries in use */
    uint32_t cap;             /* entries allocated (kept when the table is reused) */
    uint32_t num_tokens;      /* tokens recorded */
    uint32_t num_windowed;    /* leading entries replaced by the null block */
    uint32_t computed_prefix; /* leading blocks known computed (a cache of the last query) */
    uint32_t next_free;       /* free-list link of unused table slots */
    bool accessed;            /* last_access is set */
    bool swapped;             /* ids are host blocks */
    bool live;                /* the slot holds a sequence */
};

struct duet_block_manager {
    duet_block_manager_params params; /* as created */
    struct duet__block *blocks;       /* [G + C] */
    int32_t *tokens;                  /* [G + C][block_size] */
    struct duet__pool pools[2];       /* by duet_block_pool */
    struct duet__table *tables;       /* [tables_cap] slots; grows by doubling */
    uint32_t tables_cap;              /* slots allocated */
    uint32_t tables_used;             /* slots ever handed out (a prefix of tables) */
    uint32_t table_free_head;         /* freed slots, LIFO */
    uint32_t tables_free;             /* slots on that list */
    struct duet__table **group;       /* [group_cap] scratch: tables of the group at hand */
    uint32_t group_cap;               /* entries of group */
    struct duet__map seqs;            /* seq id → table slot */
    uint32_t null_block;              /* sliding window placeholder, DUET__NO_BLOCK until needed */
    uint32_t watermark_blocks;        /* int(watermark × G) */
    uint32_t window_blocks;           /* blocks a sliding window keeps: sw / bs + 2 */
    uint64_t epoch;                   /* group walks: bumped per walk */
    uint64_t cows;                    /* copies on write */
    uint64_t swapped_out;             /* pairs written by swap_out */
    uint64_t swapped_in;              /* pairs written by swap_in */
    char error[256];                  /* last failure */
};

/* manager.c */
duet_status duet__bm_fail(duet_block_manager *bm, duet_status st, const char *fmt, ...)
    DUET__BM_PRINTF(3, 4);
struct duet__table *duet__bm_table(const duet_block_manager *bm, uint64_t seq);
static inline struct duet__pool *duet__bm_pool_of(duet_block_manager *bm, uint32_t id)
{
    return &bm->pools[id >= bm->params.num_device_blocks];
}

/* block_table.c */
duet_status duet__table_reserve(struct duet__table *t, uint64_t num_blocks);
void duet__table_fill(duet_block_manager *bm, struct duet__table *t, const int32_t *tokens,
                      uint32_t n_tokens);
duet_status duet__table_append(duet_block_manager *bm, struct duet__table *t, const int32_t *tokens,
                               uint32_t n_tokens, uint32_t lookahead, uint32_t num_computed,
                               duet_block_pair_buf *copies);
void duet__table_fork(duet_block_manager *bm, const struct duet__table *parent,
                      struct duet__table *child);
void duet__table_release_blocks(duet_block_manager *bm, struct duet__table *t);
/* Blocks appending n slots takes from the pool: new ones, and copies of shared ones (vLLM's
 * get_num_blocks_touched_by_append_slots counts every touched block; that over-count refuses a
 * sequence whose last, partial block fills the pool forever). */
uint32_t duet__table_append_touched(const duet_block_manager *bm, const struct duet__table *t,
                                    uint64_t n_slots);
/* Blocks a prompt needs, with cached blocks in use credited (an upper bound). */
uint64_t duet__prompt_cost(const duet_block_manager *bm, const int32_t *tokens, uint32_t n_tokens);
uint32_t duet__table_computed_prefix(duet_block_manager *bm, struct duet__table *t);

/* swap.c */
struct duet__swap_plan {
    uint64_t blocks_needed; /* destination blocks the swap takes (an upper bound) */
    uint64_t pairs;         /* distinct source blocks: pairs the swap writes */
    uint64_t append_needed; /* blocks the appends after a swap-in may take */
};

void duet__swap_plan(duet_block_manager *bm, struct duet__table *const *tables, uint32_t n,
                     duet_block_pool dst, const uint32_t *n_new, uint32_t lookahead,
                     struct duet__swap_plan *plan);
void duet__swap_run(duet_block_manager *bm, struct duet__table *const *tables, uint32_t n,
                    duet_block_pool dst, duet_block_pair_buf *pairs);

/* ---- test support (check.c is linked into the test program only) ------------------------- */

/* Checks every invariant of bm (O(all blocks)): no block leaked or owned twice, reference counts
 * equal table references, free + used = total per pool, cached content matches its hash, the
 * evictor is a heap, tables agree with their blocks. On failure writes the first broken one to
 * err[n] and returns false. */
bool duet__block_manager_check(const duet_block_manager *bm, char *err, size_t n);

/* seq's tokens, read back from its blocks: out[0..*n); tokens of windowed blocks read as -1. */
duet_status duet__block_manager_seq_tokens(const duet_block_manager *bm, uint64_t seq, int32_t *out,
                                           uint32_t cap, uint32_t *n);

#endif /* DUET_BLOCK_MANAGER_INT_H */
