/*
 * duet/block_manager.h — the paged-KV block manager (DESIGN §5): which KV-cache blocks each
 * sequence uses, shared by the target's and the draft's caches (same block count, same ids).
 *
 * Semantics are vLLM 0.6's BlockSpaceManagerV2 (reference/vllm-semantics.md §1) with its known
 * flaws fixed; block_manager/manager.c lists every deviation. In short:
 * - Block ids: device blocks 0..G-1, host (swap) blocks G..G+C-1. A worker wants physical
 *   indices into each of its pools: a device block's physical index is its id, a host block's is
 *   id - G. Every (src, dst) pair this API writes is already physical.
 * - Sequences are named by caller-chosen 64-bit ids. A group (a request's sequences) is an array
 *   of ids. Each sequence has a block table: the block of every KV slot it uses, prompt tokens,
 *   generated tokens and empty lookahead slots reserved for speculative decoding.
 * - Blocks are reference counted: fork shares a whole table, and appending to a shared partial
 *   block copies it first (copy on write), handing the worker a (src, dst) pair to copy before the
 *   forward pass.
 * - With prefix caching, a full block is identified by the content of the whole prefix up to and
 *   including it; a prompt whose prefix is cached reuses those blocks, and blocks no sequence uses
 *   stay cached until a least-recently-used eviction needs them.
 *
 * A step of a scheduler, roughly:
 *
 *     can_allocate → allocate (new prompts)       can_append_slots → append_tokens (running)
 *     can_swap_out → swap_out (preempted groups)  can_swap_in → swap_in → append_tokens
 *     mark_computed (once, after the batch is formed) ... free (finished or aborted sequences)
 *
 * Errors: functions that act return duet_status and leave the manager unchanged on failure; the
 * message is kept for duet_block_manager_error(). Unknown sequences give DUET_STATUS_NOT_FOUND,
 * wrong use (a second allocate, a swapped sequence where a resident one is due, a duplicate id in
 * a group) DUET_STATUS_INVALID_ARGUMENT, and a request that needs more blocks than are free, or
 * more pair slots than the caller's buffer has, DUET_STATUS_CAPACITY. The can_* queries say in
 * advance whether an operation fits: after a yes, the operation succeeds.
 *
 * Ownership and threads: the manager owns every block table; pointers it returns stay valid until
 * the next call that changes the manager. The caller owns the token arrays and pair buffers it
 * passes; they are only read or written during the call. A manager is not thread-safe: one thread
 * at a time. Every operation costs time in proportion to the blocks and tokens it touches, never
 * to the total number of blocks or sequences.
 */
#ifndef DUET_BLOCK_MANAGER_H
#define DUET_BLOCK_MANAGER_H

#include <duet/plugin.h>
#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct duet_block_manager duet_block_manager;

/* The two block pools. */
typedef enum duet_block_pool {
    DUET_BLOCK_POOL_DEVICE = 0, /* the KV cache the workers compute with (ids 0..G-1) */
    DUET_BLOCK_POOL_HOST = 1,   /* swap space (ids G..G+C-1) */
} duet_block_pool;

/* Answer of can_allocate and can_swap_in. */
typedef enum duet_alloc {
    DUET_ALLOC_OK = 0,    /* fits now */
    DUET_ALLOC_LATER = 1, /* would fit once other sequences free their blocks */
    DUET_ALLOC_NEVER = 2, /* can never fit, even in an empty cache */
} duet_alloc;

/* What duet_block_manager_create() builds. Start from duet_block_manager_params_init(). */
typedef struct duet_block_manager_params {
    uint32_t block_size;        /* tokens per block, >= 1 */
    uint32_t num_device_blocks; /* G, >= 1 */
    uint32_t num_host_blocks;   /* C, may be 0 (no swapping) */
    uint32_t sliding_window;    /* tokens a position attends to; 0 = full attention */
    uint32_t max_seqs;          /* sequences expected alive at once: a sizing hint, not a limit */
    double watermark;           /* fraction of G that can_allocate / can_swap_in keep free, 0..1 */
    bool prefix_caching;        /* share full blocks by content (not with sliding_window) */
} duet_block_manager_params;

/* A caller-owned array that calls append (src, dst) pairs to. */
typedef struct duet_block_pair_buf {
    duet_block_pair *pairs; /* [cap] */
    uint32_t cap;           /* entries of pairs */
    uint32_t n;             /* entries in use; a call writes from pairs[n] and advances n */
} duet_block_pair_buf;

/* One sequence, as duet_block_manager_seq_info() reports it. */
typedef struct duet_block_manager_seq_info {
    uint32_t num_tokens;      /* tokens recorded in its table */
    uint32_t num_blocks;      /* entries of its block table, empty lookahead blocks included */
    uint32_t num_empty_slots; /* num_blocks × block_size − num_tokens */
    uint32_t num_windowed;    /* leading entries replaced by the null block (sliding window) */
    bool swapped;             /* its blocks are host blocks */
} duet_block_manager_seq_info;

/* Counters since creation; arrays are indexed by duet_block_pool. */
typedef struct duet_block_manager_stats {
    uint64_t cache_queries[2];   /* prefix-cache lookups of full blocks (prompts, swaps) */
    uint64_t cache_hits[2];      /* lookups that reused a cached block */
    uint64_t evictions[2];       /* cached blocks given to other content */
    uint64_t hash_collisions[2]; /* equal hashes of different content, treated as misses */
    uint64_t copies_on_write;    /* device blocks copied before an append */
    uint64_t blocks_swapped_out; /* pairs written by swap_out */
    uint64_t blocks_swapped_in;  /* pairs written by swap_in */
} duet_block_manager_stats;

/* Fills p with vLLM's defaults: block_size 16, watermark 0.01, no sliding window, no prefix
 * caching, max_seqs 256; the block counts are left 0 for the caller to set. */
DUET_API void duet_block_manager_params_init(duet_block_manager_params *p);

/* Creates a manager with every block free. Fails with DUET_STATUS_INVALID_ARGUMENT for a bad
 * parameter, DUET_STATUS_UNSUPPORTED for sliding window with prefix caching (as vLLM 0.6), or
 * DUET_STATUS_OUT_OF_MEMORY; the message goes to err[err_size] (may be NULL). The caller owns *out
 * and releases it with duet_block_manager_destroy(). */
DUET_API duet_status duet_block_manager_create(const duet_block_manager_params *p,
                                               duet_block_manager **out, char *err,
                                               size_t err_size);

/* Releases bm, its tables and its pools. NULL is allowed. */
DUET_API void duet_block_manager_destroy(duet_block_manager *bm);
/* The parameters bm was created with (its geometry: block_size, pool sizes, prefix caching). */
DUET_API void duet_block_manager_params_get(const duet_block_manager *bm,
                                            duet_block_manager_params *out);

/* The message of the last failed call, or "" when none failed. Owned by bm. */
DUET_API const char *duet_block_manager_error(const duet_block_manager *bm);

/* ---- prompts ----------------------------------------------------------------------------- */

/* Whether a prompt of n_tokens (all the sequence's tokens, for a recomputed one) plus
 * num_lookahead_slots fits in the device pool while keeping the watermark free. Cached prefixes
 * are not credited (vLLM). */
DUET_API duet_alloc duet_block_manager_can_allocate(const duet_block_manager *bm, uint32_t n_tokens,
                                                    uint32_t num_lookahead_slots);

/* Gives seqs[0] a block table holding tokens[0..n_tokens) (full blocks come from the prefix cache
 * when it has them) and every other seqs[i] a fork of it. n_tokens may be 0 (empty tables). No
 * sequence of the group may have a table yet. */
DUET_API duet_status duet_block_manager_allocate(duet_block_manager *bm, const uint64_t *seqs,
                                                 uint32_t n_seqs, const int32_t *tokens,
                                                 uint32_t n_tokens);

/* ---- decoding ---------------------------------------------------------------------------- */

/* Whether every seqs[i] can take n_new[i] more tokens (n_new may be NULL: none) plus
 * num_lookahead_slots empty slots: the blocks past the table's empty slots, plus a copy of each
 * shared block the slots land in (vLLM counts every touched block, so a sequence whose partial
 * last block fills the pool could never append). No watermark. Unknown or swapped sequences make it
 * false, with a message. */
DUET_API bool duet_block_manager_can_append_slots(duet_block_manager *bm, const uint64_t *seqs,
                                                  const uint32_t *n_new, uint32_t n_seqs,
                                                  uint32_t num_lookahead_slots);

/* Records tokens[0..n_tokens) at the end of seq's table and makes sure num_lookahead_slots empty
 * slots follow them. A shared partial block is copied first: its (src, dst) device pair is
 * appended to copies, which must have room for the copies this call makes (at most
 * n_tokens / block_size + 2; NULL when the caller knows there are none: an error if one is due).
 * num_computed_tokens (tokens whose KV exists, at most the table's tokens plus n_tokens) drives
 * the sliding window: blocks wholly before the window return to the pool and are replaced by the
 * null block. */
DUET_API duet_status duet_block_manager_append_tokens(duet_block_manager *bm, uint64_t seq,
                                                      const int32_t *tokens, uint32_t n_tokens,
                                                      uint32_t num_lookahead_slots,
                                                      uint32_t num_computed_tokens,
                                                      duet_block_pair_buf *copies);

/* Makes sure seq's table has at least n_slots empty slots after its tokens (allocates
 * cdiv(n_slots - empty, block_size) blocks when short). */
DUET_API duet_status duet_block_manager_ensure_empty_slots(duet_block_manager *bm, uint64_t seq,
                                                           uint32_t n_slots);

/* Gives child a table sharing every block of parent's (no block is allocated). */
DUET_API duet_status duet_block_manager_fork(duet_block_manager *bm, uint64_t parent,
                                             uint64_t child);

/* Releases seq's table; blocks nobody else uses return to their pool (cached full blocks stay
 * revivable). With prefix caching, the time given to duet_block_manager_access() becomes the
 * blocks' last access. DUET_STATUS_NOT_FOUND (and nothing changes) for an unknown seq. */
DUET_API duet_status duet_block_manager_free(duet_block_manager *bm, uint64_t seq);

/* ---- queries ----------------------------------------------------------------------------- */

/* Whether seq has a block table. */
DUET_API bool duet_block_manager_has_seq(const duet_block_manager *bm, uint64_t seq);

/* seq's block table: (*ids)[0..*n_blocks), device ids (which are physical indices) or, while
 * swapped out, host ids (physical index = id - G). Entries before the sliding window hold the
 * null block's id (a device block) in both cases. The array is owned by bm and valid until the
 * next call that changes bm. */
DUET_API duet_status duet_block_manager_block_table(const duet_block_manager *bm, uint64_t seq,
                                                    const uint32_t **ids, uint32_t *n_blocks);

DUET_API duet_status duet_block_manager_seq_info_get(const duet_block_manager *bm, uint64_t seq,
                                                     duet_block_manager_seq_info *out);

/* Free blocks of a pool; with prefix caching, cached blocks no sequence uses count as free. */
DUET_API uint32_t duet_block_manager_num_free_blocks(const duet_block_manager *bm,
                                                     duet_block_pool pool);
DUET_API uint32_t duet_block_manager_num_total_blocks(const duet_block_manager *bm,
                                                      duet_block_pool pool);

/* ---- swapping ---------------------------------------------------------------------------- */

/* Whether the group's host blocks fit in the device pool, keeping the watermark free, together
 * with what appending n_new[i] tokens (n_new may be NULL: none) and num_lookahead_slots to each
 * afterwards needs. After DUET_ALLOC_OK, swap_in and those appends succeed. */
DUET_API duet_alloc duet_block_manager_can_swap_in(duet_block_manager *bm, const uint64_t *seqs,
                                                   const uint32_t *n_new, uint32_t n_seqs,
                                                   uint32_t num_lookahead_slots);

/* Whether the group's device blocks fit in the host pool. */
DUET_API bool duet_block_manager_can_swap_out(duet_block_manager *bm, const uint64_t *seqs,
                                              uint32_t n_seqs);

/* Moves every sequence of the group to the other pool and appends one physical (src, dst) pair
 * per distinct source block to pairs (host → device for swap_in, device → host for swap_out), in
 * table order. A block several sequences of the group share stays shared (one copy, one pair).
 * pairs must have room for one pair per distinct block of the group. */
DUET_API duet_status duet_block_manager_swap_in(duet_block_manager *bm, const uint64_t *seqs,
                                                uint32_t n_seqs, duet_block_pair_buf *pairs);
DUET_API duet_status duet_block_manager_swap_out(duet_block_manager *bm, const uint64_t *seqs,
                                                 uint32_t n_seqs, duet_block_pair_buf *pairs);

/* ---- prefix caching ---------------------------------------------------------------------- */

/* Marks every block that became cached since the last call as computed: call once per
 * scheduling pass, after the batch is formed (the step is assumed to succeed). Until then another
 * sequence sharing such a block recomputes it. No-op without prefix caching. */
DUET_API void duet_block_manager_mark_computed(duet_block_manager *bm);

/* The number of leading blocks whose KV all sequences of the group share and already have:
 * the same computed block at each position, stopping at the first that differs or is not
 * computed, never counting a sequence's last block (so a fully cached prompt still computes a
 * token). The ids are the first *n_blocks entries of any of their tables. 0 without prefix
 * caching or while swapped. */
DUET_API duet_status duet_block_manager_computed_prefix(duet_block_manager *bm,
                                                        const uint64_t *seqs, uint32_t n_seqs,
                                                        uint32_t *n_blocks);

/* Records that seq ran at time now (any monotonic unit the caller likes; 0 means never). The
 * eviction order uses it once seq is freed: least recently used first, deeper blocks first on a
 * tie. */
DUET_API duet_status duet_block_manager_access(duet_block_manager *bm, uint64_t seq, uint64_t now);

/* Hits / queries of the pool's prefix cache: 0.0 before any query, -1.0 without prefix caching. */
DUET_API double duet_block_manager_hit_rate(const duet_block_manager *bm, duet_block_pool pool);

DUET_API void duet_block_manager_stats_get(const duet_block_manager *bm,
                                           duet_block_manager_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* DUET_BLOCK_MANAGER_H */
