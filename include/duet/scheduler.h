/*
 * duet/scheduler.h — continuous batching (DESIGN §6): which requests run in each step, how many
 * tokens each processes, and what the KV caches must do first (swap in, swap out, copy).
 *
 * Semantics are vLLM 0.6's Scheduler (reference/vllm-semantics.md §2) with its known flaws fixed;
 * docs/scheduler.md lists every deviation. In short:
 * - A request is a group of sequences: one prompt sequence, which forks into n sequences when
 *   its prefill completes (n > 1 is vLLM's best_of / n). Groups wait in the waiting queue, run
 *   from the running queue, or sit swapped out to host blocks in the swapped queue.
 * - Each step has a token budget (max_num_batched_tokens) and a sequence budget (max_num_seqs).
 *   The default policy makes steps either all-prefill (new prompts first, as long as nothing is
 *   swapped out) or all-decode; the chunked-prefill policy runs decodes first, then swapped
 *   groups, then prompt chunks in what is left of the budget; the priority policy is the default
 *   one plus preemption of less important running groups (smaller priority = more important;
 *   with chunked prefill it has no effect, as in vLLM 0.6).
 * - Out of KV blocks, a decode preempts victims from the back of the running queue: by recompute
 *   (blocks freed; the group goes to the front of the waiting queue and later prefills its prompt
 *   and generated tokens again) or by swap (blocks moved to host memory); when host blocks run
 *   short a swap falls back to recompute.
 * - Speculative decoding: every decode step reserves num_lookahead_slots empty KV slots after each
 *   sequence's tokens, so the target can score k drafts; the engine then reports the 1..k+1
 *   tokens each sequence accepted.
 *
 * The engine's loop, one step:
 *
 *     duet_scheduler_step(s, now, &out)        the batch: out->groups, cache ops, budgets
 *     ... run the workers: swap_in, swap_out, copy, then the forward pass over out->seqs ...
 *     duet_scheduler_update(s, seq_id, tokens, n)   once for every sequence with num_samples > 0
 *     duet_scheduler_take_finished(s, &result)      until it returns false
 *
 * Time: arrival_time and now are nanoseconds of any monotonic clock the caller likes (the same
 * clock for both); they order requests (priority ties, delay_factor) and prefix-cache eviction.
 *
 * Ownership and threads: the scheduler borrows the block manager given to duet_scheduler_create()
 * (the caller owns it, creates it before and destroys it after the scheduler) and is the only one
 * to change the block tables of the sequences it names; sequence ids come from the scheduler.
 * Requests are copied by duet_scheduler_add(). Everything the scheduler returns (the output of a
 * step, a finished request's result) is owned by it, valid as each function says. A scheduler is
 * not thread-safe: one thread at a time.
 *
 * Errors: functions that act return duet_status and leave the scheduler unchanged on failure; the
 * message is kept for duet_scheduler_error().
 */
#ifndef DUET_SCHEDULER_H
#define DUET_SCHEDULER_H

#include <duet/block_manager.h>
#include <duet/plugin.h>
#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct duet_scheduler duet_scheduler;

#define DUET_SCHED_MAX_EOS 8 /* entries of duet_scheduler_params.eos_token_ids */

typedef enum duet_sched_policy {
    DUET_SCHED_POLICY_FCFS = 0,     /* first come, first served (vLLM "fcfs") */
    DUET_SCHED_POLICY_PRIORITY = 1, /* (priority, arrival_time) order, with preemption */
} duet_sched_policy;

typedef enum duet_sched_preemption {
    DUET_SCHED_PREEMPTION_AUTO = 0,      /* recompute single-sequence groups, swap the others */
    DUET_SCHED_PREEMPTION_RECOMPUTE = 1, /* always recompute */
    DUET_SCHED_PREEMPTION_SWAP = 2,      /* always swap (recompute when host blocks are short) */
} duet_sched_preemption;

/* What duet_scheduler_create() builds. Start from duet_scheduler_params_init(). */
typedef struct duet_scheduler_params {
    uint32_t max_num_seqs;           /* sequences per step, >= 1 */
    uint32_t max_num_batched_tokens; /* tokens per step; 0 = max(max_model_len, 2048), or 512
                                        with chunked prefill; >= max_num_seqs, and without
                                        chunked prefill >= max_model_len */
    uint32_t max_model_len;          /* tokens a sequence may hold (prompt + output), >= 1 */
    duet_sched_policy policy;
    duet_sched_preemption preemption;
    bool chunked_prefill;                      /* decodes first, prompts in chunks */
    uint32_t num_lookahead_slots;              /* k: empty slots reserved per decode; 0 = none */
    int32_t eos_token_ids[DUET_SCHED_MAX_EOS]; /* tokens that end a sequence (unless ignored) */
    uint32_t num_eos_token_ids;                /* entries in use, 0..DUET_SCHED_MAX_EOS */
    double delay_factor; /* > 0: hold new prompts for delay_factor × the last prompt step's
                            latency while the oldest waits less; 0 = off */
} duet_scheduler_params;

/* A request, as given to duet_scheduler_add() (which copies it). Start from
 * duet_sched_request_init(). */
typedef struct duet_sched_request {
    uint64_t request_id;           /* unique among the requests the scheduler holds */
    const int32_t *prompt;         /* [prompt_len] token ids >= 0 */
    uint32_t prompt_len;           /* >= 1 */
    duet_sampling_params sampling; /* handed back with every scheduled group */
    uint64_t arrival_time;         /* ns, the clock of duet_scheduler_step()'s now */
    int32_t priority;              /* DUET_SCHED_POLICY_PRIORITY: smaller runs first */
    uint32_t max_tokens;           /* generated tokens per sequence, >= 1 */
    const int32_t *stop_token_ids; /* [num_stop_token_ids]: tokens that end a sequence */
    uint32_t num_stop_token_ids;
    uint32_t n;         /* sequences generated from the prompt, >= 1 */
    bool ignore_eos;    /* do not stop at the EOS tokens */
    bool spec_disabled; /* no speculation: no lookahead slots for this request */
} duet_sched_request;

/* Why a sequence or request finished. */
typedef enum duet_sched_finish {
    DUET_SCHED_FINISH_NONE = 0,    /* not finished */
    DUET_SCHED_FINISH_STOP = 1,    /* an EOS or stop token, kept as the last output token */
    DUET_SCHED_FINISH_LENGTH = 2,  /* max_tokens generated, or max_model_len exceeded */
    DUET_SCHED_FINISH_ABORT = 3,   /* duet_scheduler_abort() */
    DUET_SCHED_FINISH_IGNORED = 4, /* never run: see duet_sched_ignore */
} duet_sched_finish;

/* Why a step ignored a request. */
typedef enum duet_sched_ignore {
    DUET_SCHED_IGNORE_NONE = 0,
    DUET_SCHED_IGNORE_PROMPT_TOO_LONG = 1, /* above max_model_len (or the step's token budget) */
    DUET_SCHED_IGNORE_CANNOT_FIT = 2,      /* more KV blocks or sequences than exist */
    DUET_SCHED_IGNORE_SWAP_INFEASIBLE = 3, /* swapped out, and can never be swapped back in */
} duet_sched_ignore;

typedef enum duet_sched_state {
    DUET_SCHED_STATE_WAITING = 0,
    DUET_SCHED_STATE_RUNNING = 1,
    DUET_SCHED_STATE_SWAPPED = 2,
    DUET_SCHED_STATE_FINISHED = 3, /* waiting for duet_scheduler_take_finished() */
} duet_sched_state;

/* One sequence of a step's batch. The worker feeds tokens[num_computed .. num_computed +
 * num_new_tokens) at positions num_computed ..; in a decode, num_new_tokens is 1 and the group's
 * num_lookahead_slots slots after the sequence are reserved for drafts. */
typedef struct duet_sched_seq {
    uint64_t seq_id;             /* the block manager's sequence id */
    const int32_t *tokens;       /* [num_tokens] prompt, then generated tokens */
    uint32_t num_tokens;         /* tokens of the sequence */
    uint32_t num_computed;       /* leading tokens whose KV exists before this step (cached
                                    prefix blocks included) */
    uint32_t num_new_tokens;     /* tokens fed this step: a prompt chunk, or 1 */
    uint32_t num_samples;        /* tokens duet_scheduler_update() must report for it: 0 for a
                                    prompt chunk that is not the last, n for the last chunk of
                                    a group that forks, else 1 (a decode: 1 .. lookahead + 1) */
    const uint32_t *block_table; /* [num_blocks] physical device block ids */
    uint32_t num_blocks;
    bool is_prefill; /* feeds prompt (or recomputed) tokens */
} duet_sched_seq;

/* One request of a step's batch. */
typedef struct duet_sched_group {
    uint64_t request_id;
    const duet_sampling_params *sampling; /* the request's */
    const duet_sched_seq *seqs;           /* [num_seqs] within duet_sched_output.seqs */
    uint32_t num_seqs;
    uint32_t token_chunk_size;    /* vLLM's: seqs[0]'s num_new_tokens (1 for a decode) */
    uint32_t num_lookahead_slots; /* reserved after every sequence: 0 in a prefill or when the
                                     request has speculation disabled, else k */
    bool is_prefill;              /* the group's prompt is (re)computed this step */
    bool spec_disabled;           /* the request's flag: do not speculate for it */
} duet_sched_group;

typedef struct duet_sched_ignored {
    uint64_t request_id;
    duet_sched_ignore reason;
} duet_sched_ignored;

/*
 * The result of a step. Owned by the scheduler; the structure and its arrays (groups, seqs,
 * ignored, the pairs) stay valid until the next duet_scheduler_step() or
 * duet_scheduler_destroy(), so an engine may walk them while it calls duet_scheduler_update().
 * What they point into (tokens, block tables, sampling) is only current until the first
 * update or abort after the step. The cache operations run before the forward pass, in the
 * order swap_in, swap_out, copy, on both the target's and the draft's caches.
 */
typedef struct duet_sched_output {
    const duet_sched_group *groups; /* [num_groups]: prefills first, then decodes */
    uint32_t num_groups;
    uint32_t num_prefill_groups;
    const duet_sched_seq *seqs; /* [num_seqs]: every scheduled sequence, in group order */
    uint32_t num_seqs;
    const duet_block_pair *swap_in; /* [num_swap_in] host → device, physical ids */
    uint32_t num_swap_in;
    const duet_block_pair *swap_out; /* [num_swap_out] device → host */
    uint32_t num_swap_out;
    const duet_block_pair *copy; /* [num_copy] device → device (copy on write) */
    uint32_t num_copy;
    const duet_sched_ignored *ignored; /* [num_ignored] requests finished as ignored */
    uint32_t num_ignored;
    uint32_t num_lookahead_slots; /* k when the step decodes, 0 otherwise */
    uint32_t num_preempted;       /* groups preempted this step (recompute and swap) */
    uint32_t num_batched_tokens;  /* tokens fed, lookahead drafts not counted (vLLM) */
    uint32_t running_queue_size;  /* running groups after the step */
    bool is_prefill;              /* every scheduled group is a prefill (none scheduled: false) */
} duet_sched_output;

/* One sequence of a finished request. */
typedef struct duet_sched_seq_result {
    uint64_t seq_id;
    const int32_t *output; /* [num_output] generated tokens (a stop token is the last one) */
    uint32_t num_output;
    duet_sched_finish finish;
    int32_t stop_token; /* the EOS or stop token that ended it; -1 otherwise */
} duet_sched_seq_result;

/* A finished request, from duet_scheduler_take_finished(). */
typedef struct duet_sched_result {
    uint64_t request_id;
    duet_sched_finish finish; /* ABORT or IGNORED for the group, else seqs[0]'s */
    duet_sched_ignore ignore; /* why it was ignored */
    const int32_t *prompt;    /* [prompt_len] */
    uint32_t prompt_len;
    const duet_sched_seq_result *seqs; /* [num_seqs]: n, or 1 if it ended before forking */
    uint32_t num_seqs;
    uint32_t num_preemptions;      /* times it was preempted */
    uint64_t arrival_time;         /* ns, as given */
    uint64_t first_scheduled_time; /* ns, the now of its first step; 0 if it never ran */
} duet_sched_result;

/* A request's state, from duet_scheduler_request_info(). */
typedef struct duet_sched_request_info {
    duet_sched_state state;
    duet_sched_finish finish;     /* NONE until finished */
    uint32_t num_seqs;            /* 1 until an n > 1 request forks, then n */
    uint32_t num_live_seqs;       /* sequences not finished */
    uint32_t num_tokens;          /* seqs[0]: prompt + generated */
    uint32_t num_computed_tokens; /* seqs[0]: tokens whose KV exists */
    uint32_t num_output_tokens;   /* seqs[0]: generated */
    uint32_t num_preemptions;
    bool spec_disabled;
} duet_sched_request_info;

/* Counters since creation. */
typedef struct duet_scheduler_stats {
    uint64_t steps; /* duet_scheduler_step() calls that succeeded */
    uint64_t requests_added;
    uint64_t requests_finished; /* stop or length */
    uint64_t requests_aborted;
    uint64_t requests_ignored;
    uint64_t preempted_recompute;  /* preemptions by recompute, fallbacks and priority included */
    uint64_t preempted_swap;       /* preemptions by swap */
    uint64_t swap_fallbacks;       /* swaps done as recompute for lack of host blocks */
    uint64_t priority_preemptions; /* recomputes forced by a more important waiting request */
    uint64_t batched_tokens;       /* sum of num_batched_tokens */
} duet_scheduler_stats;

/* Fills p with vLLM's defaults: max_num_seqs 256, automatic max_num_batched_tokens, FCFS,
 * automatic preemption, no chunked prefill, no lookahead, no EOS, no delay. max_model_len is left
 * 0 for the caller to set. */
DUET_API void duet_scheduler_params_init(duet_scheduler_params *p);

/* Fills r with defaults: n 1, max_tokens 16 (vLLM's), temperature 1, top_p 1, everything else 0
 * or NULL. */
DUET_API void duet_sched_request_init(duet_sched_request *r);

/* Creates a scheduler over bm, which must have no sequences yet and outlive the scheduler.
 * Fails with DUET_STATUS_INVALID_ARGUMENT for a bad parameter (the message, in err[err_size]
 * when err is not NULL, names it) or DUET_STATUS_OUT_OF_MEMORY. The caller owns *out and releases
 * it with duet_scheduler_destroy(). */
DUET_API duet_status duet_scheduler_create(const duet_scheduler_params *p, duet_block_manager *bm,
                                           duet_scheduler **out, char *err, size_t err_size);

/* Releases s and every request it holds; their block tables are freed in the block manager.
 * NULL is allowed. */
DUET_API void duet_scheduler_destroy(duet_scheduler *s);
/* The parameters s runs with, defaults resolved (max_num_batched_tokens when it was 0). */
DUET_API void duet_scheduler_params_get(const duet_scheduler *s, duet_scheduler_params *out);

/* The message of the last failed call, or "" when none failed. Owned by s. */
DUET_API const char *duet_scheduler_error(const duet_scheduler *s);

/* Queues a request at the back of the waiting queue; its prompt and stop tokens are copied.
 * DUET_STATUS_INVALID_ARGUMENT for an empty prompt, a negative token id, n or max_tokens of 0,
 * or a request id the scheduler already holds. A prompt longer than max_model_len, or one that
 * can never fit the KV cache, is accepted and later ignored by a step (as vLLM). */
DUET_API duet_status duet_scheduler_add(duet_scheduler *s, const duet_sched_request *r);

/*
 * Schedules one step at time now. *out receives the batch (see duet_sched_output for how long it
 * stays valid). The step assumes the batch runs: prompt chunks count as computed from now on.
 * A step allocates nothing in the steady state: duet_scheduler_add() reserves the output, and
 * only the cache-operation arrays may grow (when that fails, the step waits or preempts instead
 * of failing). Fails with DUET_STATUS_INVALID_ARGUMENT while a sequence of the previous step
 * still waits for its duet_scheduler_update() (abort its request to drop it), or with
 * DUET_STATUS_INTERNAL if the block manager refused what it had said would fit (a bug; the
 * message says which call).
 */
DUET_API duet_status duet_scheduler_step(duet_scheduler *s, uint64_t now,
                                         const duet_sched_output **out);

/*
 * Reports what the last step produced for sequence seq_id (one whose num_samples was > 0):
 * - the last chunk of a prompt: tokens[0] is the sampled token; for a group that forks
 *   (num_samples = n > 1), tokens[i] is the first token of the group's i-th sequence, and the
 *   sequences 1..n-1 exist from now on (their ids follow seq_id);
 * - a decode: the 1..k+1 tokens accepted, k the group's num_lookahead_slots.
 * Tokens are appended one at a time; a sequence stops at the first EOS (unless ignore_eos) or
 * stop token, which is kept, or when it reaches max_tokens or exceeds max_model_len, and the
 * tokens after that are dropped. A finished sequence frees its blocks at once; a request whose
 * sequences all finished goes to duet_scheduler_take_finished(). DUET_STATUS_NOT_FOUND for an
 * unknown (or finished, or aborted) sequence; DUET_STATUS_INVALID_ARGUMENT for a sequence that
 * did not sample in the last step, a wrong token count or a negative token.
 */
DUET_API duet_status duet_scheduler_update(duet_scheduler *s, uint64_t seq_id,
                                           const int32_t *tokens, uint32_t n_tokens);

/* The tokens sequence seq_id holds after its prompt: what duet_scheduler_update() kept (the
 * tokens after a stop or past the length limit are dropped). DUET_STATUS_NOT_FOUND for an
 * unknown sequence, or one whose request was taken with duet_scheduler_take_finished(). */
DUET_API duet_status duet_scheduler_seq_output_len(const duet_scheduler *s, uint64_t seq_id,
                                                   uint32_t *out);

/* Ends a request in any state: its blocks are freed at once and it goes to
 * duet_scheduler_take_finished() with DUET_SCHED_FINISH_ABORT. A request that already finished
 * is left as it is (DUET_STATUS_OK); an unknown one gives DUET_STATUS_NOT_FOUND. */
DUET_API duet_status duet_scheduler_abort(duet_scheduler *s, uint64_t request_id);

/* Hands out the oldest finished request (stopped, length-capped, aborted or ignored) in *out and
 * forgets its id; false when none is left. *out and what it points to stay valid until the next
 * call of this function or duet_scheduler_destroy(). */
DUET_API bool duet_scheduler_take_finished(duet_scheduler *s, duet_sched_result *out);

/* A held request's state (finished ones until they are taken). DUET_STATUS_NOT_FOUND if unknown. */
DUET_API duet_status duet_scheduler_request_info(const duet_scheduler *s, uint64_t request_id,
                                                 duet_sched_request_info *out);

/* Turns speculation off (or back on) for a request from its next decode step: its groups get no
 * lookahead slots and accept exactly 1 token per decode. The draft cache must still be kept in
 * step by the engine. */
DUET_API duet_status duet_scheduler_set_spec_disabled(duet_scheduler *s, uint64_t request_id,
                                                      bool disabled);

DUET_API uint32_t duet_scheduler_num_waiting(const duet_scheduler *s);
DUET_API uint32_t duet_scheduler_num_running(const duet_scheduler *s);
DUET_API uint32_t duet_scheduler_num_swapped(const duet_scheduler *s);
/* Requests waiting, running or swapped (finished ones not counted). */
DUET_API bool duet_scheduler_has_unfinished(const duet_scheduler *s);

DUET_API void duet_scheduler_stats_get(const duet_scheduler *s, duet_scheduler_stats *out);

/* Short names ("stop", "prompt too long"); never NULL. */
DUET_API const char *duet_sched_finish_str(duet_sched_finish f);
DUET_API const char *duet_sched_ignore_str(duet_sched_ignore i);

#ifdef __cplusplus
}
#endif

#endif /* DUET_SCHEDULER_H */
