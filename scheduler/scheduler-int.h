/* scheduler-int.h — internals shared by the files of scheduler/. */
#ifndef DUET_SCHEDULER_INT_H
#define DUET_SCHEDULER_INT_H

#include <duet/scheduler.h>

#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define DUET__SCHED_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DUET__SCHED_PRINTF(f, a)
#endif

#define DUET__SCHED_MAX_N (1u << 16) /* sequences per request: a sanity limit */

/* The lists a group can be on (duet__group.queue). The first four persist between steps; the
 * others hold a step's groups while it is formed and are spliced back before it returns. */
enum duet__queue_id {
    DUET__Q_WAITING = 0,  /* new, recompute-preempted, and partially re-admitted groups */
    DUET__Q_RUNNING,      /* resident groups */
    DUET__Q_SWAPPED,      /* groups whose blocks are host blocks */
    DUET__Q_FINISHED,     /* done, waiting for duet_scheduler_take_finished() */
    DUET__Q_NEW_PREFILL,  /* step: admitted from waiting */
    DUET__Q_RUN_PREFILL,  /* step: running groups scheduled as prompt chunks */
    DUET__Q_RUN_DECODE,   /* step: running groups scheduled as decodes */
    DUET__Q_SWAP_PREFILL, /* step: swapped in, prompt chunks */
    DUET__Q_SWAP_DECODE,  /* step: swapped in, decodes */
    DUET__Q_PREEMPTED,    /* step: preempted by recompute, for the front of waiting */
    DUET__Q_SWAPPED_OUT,  /* step: preempted by swap, for the back of swapped */
    DUET__Q_COUNT,
    DUET__Q_NONE = DUET__Q_COUNT, /* on no list (taken, or being moved) */
};

/* Intrusive doubly linked list: O(1) push and pop at both ends and removal anywhere. */
struct duet__queue {
    struct duet__group *head; /* front: the next to schedule */
    struct duet__group *tail; /* back: the first victim */
    uint32_t n;               /* groups on the list */
};

/* One sequence of a group. */
struct duet__sseq {
    uint64_t id;           /* block manager sequence id: the group's seq_base + index */
    int32_t *tokens;       /* [group tokens_cap] prompt, then generated tokens */
    uint32_t len;          /* tokens held */
    uint32_t num_computed; /* leading tokens whose KV exists (or will, once the step ran) */
    uint32_t table_tokens; /* tokens recorded in its block table */
    uint32_t chunk;        /* tokens scheduled in the step being formed */
    uint32_t samples;      /* tokens the next update must bring: exact for a prompt's last
                              chunk, at most this many for a decode; 0 = no update due */
    int32_t stop_token;    /* the token that stopped it, or -1 */
    uint8_t finish;        /* duet_sched_finish; NONE while alive */
    bool prefill;          /* in the prefill stage (vLLM SequenceStage) */
    bool decode_update;    /* the pending update is a decode's (1..samples tokens) */
    bool has_table;        /* the block manager holds a table for it */
};

/* One request: its sequences, stop conditions, and where it is. Allocated in one piece by
 * duet_scheduler_add() (group, sequences, results, stop tokens, prompt, token arrays). */
struct duet__group {
    struct duet__group *prev; /* links of the queue it is on */
    struct duet__group *next;
    struct duet__sseq *seqs;        /* [n]; [0, n_seqs) exist */
    duet_sched_seq_result *results; /* [n], filled when taken */
    int32_t *stop_ids;              /* [num_stop] */
    int32_t *prompt;                /* [prompt_len] */
    uint64_t request_id;
    uint64_t seq_base;        /* seqs[i].id = seq_base + i */
    uint64_t arrival_time;    /* ns */
    uint64_t first_scheduled; /* ns, valid when scheduled_ever */
    uint64_t tok_epoch;       /* budget epoch whose tokens count this group */
    uint64_t seq_epoch;       /* budget epoch whose sequences count this group */
    duet_sampling_params sampling;
    int32_t priority;
    uint32_t n;         /* sequences requested */
    uint32_t n_seqs;    /* sequences that exist: 1, or n once forked */
    uint32_t n_live;    /* of those, not finished */
    uint32_t n_prefill; /* live sequences in the prefill stage */
    uint32_t n_alloc;   /* sequences with token arrays: n, or 1 when n can never
                           fit max_num_seqs (the group will be ignored) */
    uint32_t prompt_len;
    uint32_t max_tokens;
    uint32_t num_stop;
    uint32_t tokens_cap; /* entries of every sequence's token array */
    uint32_t num_preemptions;
    uint32_t pending; /* sequences waiting for their update */
    uint8_t queue;    /* enum duet__queue_id */
    uint8_t finish;   /* duet_sched_finish of the group */
    uint8_t ignore;   /* duet_sched_ignore */
    bool ignore_eos;
    bool spec_disabled;
    bool allocated; /* its live sequences have block tables */
    bool scheduled_ever;
};

/* vLLM's SchedulingBudget. A group's tokens and sequences count once per budget (epoch), so
 * adding them twice is a no-op and subtracting works only after an add. */
struct duet__budget {
    uint64_t epoch;        /* unique per budget */
    uint32_t token_budget; /* max_num_batched_tokens */
    uint32_t max_num_seqs;
    uint32_t num_batched_tokens; /* tokens added */
    uint32_t num_curr_seqs;      /* sequences added */
};

/* Test hooks (tests/check_scheduler.c): each returns -1 to ask the block manager, or the answer
 * to use instead (a bool, or a duet_alloc); vLLM's tests mock the block manager the same way. */
struct duet__sched_hooks {
    int (*can_append)(void *ctx, uint64_t request_id);
    int (*can_allocate)(void *ctx, uint64_t request_id);
    int (*can_swap_in)(void *ctx, uint64_t request_id);
    void *ctx;
};

/* Open addressing with linear probing and backward-shift deletion: id → group. */
struct duet__sched_map {
    uint64_t *keys;            /* [mask + 1] */
    struct duet__group **vals; /* [mask + 1]; NULL marks an empty slot */
    uint32_t mask;             /* capacity − 1, capacity a power of two */
    uint32_t count;            /* entries in use */
};

struct duet_scheduler {
    duet_scheduler_params p; /* as created, max_num_batched_tokens resolved */
    duet_block_manager *bm;  /* borrowed */
    uint32_t block_size;     /* the manager's tokens per block */
    bool prefix_caching;     /* the manager caches prefixes */
    struct duet__queue q[DUET__Q_COUNT];
    struct duet__sched_map requests; /* request id → group, until taken */
    struct duet__sched_map seq_map;  /* sequence id → group (every id of it), until taken */
    uint64_t next_seq_id;            /* seq_base of the next request */
    uint64_t budget_epoch;           /* last epoch handed to a budget */
    uint64_t now;                    /* ns, of the step being formed */
    uint32_t num_pending;            /* sequences waiting for their update */
    uint32_t num_groups;             /* groups waiting, running or swapped */
    uint32_t num_live_seqs;          /* sequence slots (n_alloc) of those groups */
    uint32_t num_partial;            /* sequences with a block table, part-way through their
                                        prompt: while any exists, mark_computed waits */
    /* delay_factor state (vLLM's _passed_delay) */
    uint64_t prev_time;         /* ns, of the last prompt-scheduling pass */
    double last_prompt_latency; /* ns */
    bool prev_prompt;           /* the last pass scheduled prompts */
    /* the step's output and its arrays; they grow by doubling and are reused */
    duet_sched_output out;
    duet_sched_group *groups; /* [groups_cap] */
    uint32_t groups_cap;
    duet_sched_seq *oseqs; /* [oseqs_cap] */
    uint32_t oseqs_cap;
    duet_sched_ignored *ignored; /* [ignored_cap] */
    uint32_t ignored_cap;
    duet_block_pair_buf swap_in;  /* host → device; pairs grow by doubling */
    duet_block_pair_buf swap_out; /* device → host */
    duet_block_pair_buf copy;     /* copy on write */
    uint64_t *ids;                /* [scratch_cap] ids of the group at hand, or of them all */
    uint32_t *n_new;              /* [scratch_cap] their tokens not yet in a block table */
    uint32_t scratch_cap;
    uint32_t plan_seqs;        /* sequences the last duet__group_plan() gave a chunk */
    bool fits_all;             /* this running pass: every running group can append */
    uint32_t sched_groups;     /* groups scheduled in the step being formed */
    uint32_t sched_seqs;       /* their sequences */
    struct duet__group *taken; /* the result last handed out, freed on the next take */
    struct duet__sched_hooks hooks;
    duet_scheduler_stats stats;
    char error[256]; /* last failure */
};

/* ---- scheduler.c ------------------------------------------------------------------------- */

duet_status duet__sched_fail(duet_scheduler *s, duet_status st, const char *fmt, ...)
    DUET__SCHED_PRINTF(3, 4);
/* Frees every block table of g's sequences (their KV is gone). */
void duet__sched_free_tables(duet_scheduler *s, struct duet__group *g);
/* Moves g (off every list) to the finished list with reason f, freeing its tables; live
 * sequences get f too. */
void duet__sched_finish_group(duet_scheduler *s, struct duet__group *g, duet_sched_finish f);

/* ---- queue.c ----------------------------------------------------------------------------- */

void duet__queue_push_back(duet_scheduler *s, int q, struct duet__group *g);
void duet__queue_push_front(duet_scheduler *s, int q, struct duet__group *g);
/* Removes g from the list it is on (no-op when on none). */
void duet__queue_remove(duet_scheduler *s, struct duet__group *g);
/* Moves every group of list `from` to the back of list `to`, in order. */
void duet__queue_splice_back(duet_scheduler *s, int from, int to);
/* Pushes g at the front of waiting, but behind a partially re-admitted head (which must stay
 * first: it holds blocks and finishes its prefill before anything else is admitted). */
void duet__queue_waiting_push_front(duet_scheduler *s, struct duet__group *g);
/* Stable sort of a list by (priority, arrival_time); a partially re-admitted waiting head stays
 * in front. O(n) when already sorted. */
void duet__queue_sort_priority(duet_scheduler *s, int q);
/* (priority, arrival_time) of a before b. */
bool duet__group_before(const struct duet__group *a, const struct duet__group *b);

/* ---- map.c ------------------------------------------------------------------------------- */

duet_status duet__sched_map_init(struct duet__sched_map *m, uint32_t min_entries);
void duet__sched_map_fini(struct duet__sched_map *m);
struct duet__group *duet__sched_map_get(const struct duet__sched_map *m, uint64_t key);
/* Makes room for `more` insertions without growing (the only failure). */
duet_status duet__sched_map_reserve(struct duet__sched_map *m, uint32_t more);
/* Inserts an absent key after a reserve; cannot fail. */
void duet__sched_map_put(struct duet__sched_map *m, uint64_t key, struct duet__group *g);
bool duet__sched_map_del(struct duet__sched_map *m, uint64_t key);

/* ---- budget.c ---------------------------------------------------------------------------- */

void duet__budget_init(struct duet__budget *b, uint64_t epoch, uint32_t token_budget,
                       uint32_t max_num_seqs);
bool duet__budget_can_schedule(const struct duet__budget *b, uint32_t num_new_tokens,
                               uint32_t num_new_seqs);
uint32_t duet__budget_remaining(const struct duet__budget *b);
void duet__budget_add_tokens(struct duet__budget *b, struct duet__group *g, uint32_t n);
void duet__budget_sub_tokens(struct duet__budget *b, struct duet__group *g, uint32_t n);
void duet__budget_add_seqs(struct duet__budget *b, struct duet__group *g, uint32_t n);
void duet__budget_sub_seqs(struct duet__budget *b, struct duet__group *g, uint32_t n);

/* ---- group.c: sequence-level helpers ----------------------------------------------------- */

/* vLLM's get_max_num_running_seqs: n before the group forks, then its live sequences. */
static inline uint32_t duet__group_max_seqs(const struct duet__group *g)
{
    return g->n_seqs < g->n ? g->n : g->n_live;
}

/* The lookahead slots a decode of g reserves (0 with speculation disabled). */
static inline uint32_t duet__group_lookahead(const duet_scheduler *s, const struct duet__group *g)
{
    return g->spec_disabled ? 0 : s->p.num_lookahead_slots;
}
/* Fills s->ids and s->n_new (tokens not yet in a block table) with g's live sequences: all of
 * them, or (all false) those a step feeds: the prefill-stage ones while g is in prefill.
 * Returns how many. */
uint32_t duet__group_ids(duet_scheduler *s, const struct duet__group *g, bool all);
/* Sets each live sequence's chunk for this step (vLLM's _get_num_new_tokens) and returns their
 * sum: decodes 1 per sequence; prompts whole (without chunking) or cut to the budget. 0 means
 * nothing fits. */
uint32_t duet__group_plan(duet_scheduler *s, struct duet__group *g, const struct duet__budget *b,
                          bool chunking);
/* Skips the prompt blocks of g's prefill sequences that are cached and computed. */
void duet__group_skip_cached(duet_scheduler *s, struct duet__group *g);
/* Appends one token to a sequence with vLLM's stop checks; true when it finished. */
bool duet__seq_append(const duet_scheduler *s, struct duet__group *g, struct duet__sseq *q,
                      int32_t token);

/* ---- policy.c: one scheduling pass (vLLM's _schedule_*) --------------------------------- */

/* Admits waiting groups as prompts (into DUET__Q_NEW_PREFILL). only_head: continue a partially
 * re-admitted head only. Returns how many were scheduled. */
duet_status duet__sched_prefills(duet_scheduler *s, struct duet__budget *b, bool chunking,
                                 bool only_head, uint32_t *scheduled);
/* Schedules running groups, preempting from the back when blocks are short. */
duet_status duet__sched_running(duet_scheduler *s, struct duet__budget *b, bool chunking);
/* Swaps groups back in. */
duet_status duet__sched_swapped(duet_scheduler *s, struct duet__budget *b, bool chunking);
/* The priority policy's forced preemption of less important running groups. */
duet_status duet__sched_priority_preemption(duet_scheduler *s, struct duet__budget *b);
/* Preempts g by recompute or swap (mode AUTO follows the configuration; the forced recompute
 * of the priority policy passes RECOMPUTE); g goes to DUET__Q_PREEMPTED or DUET__Q_SWAPPED_OUT. */
void duet__sched_preempt(duet_scheduler *s, struct duet__group *g, duet_sched_preemption mode);
/* The two policies: run the passes, then splice the step's lists back into the queues. */
duet_status duet__sched_default(duet_scheduler *s, struct duet__budget *b);
duet_status duet__sched_chunked(duet_scheduler *s, struct duet__budget *b);

/* ---- step.c ------------------------------------------------------------------------------ */

/* Clears the output and the per-step counters for a step at time now. */
void duet__sched_begin_step(duet_scheduler *s, uint64_t now);

/* Builds s->out from the step's lists, in the policy's order, and advances computed tokens. */
void duet__sched_build_output(duet_scheduler *s, const struct duet__budget *b, bool chunking);

#endif /* DUET_SCHEDULER_INT_H */
