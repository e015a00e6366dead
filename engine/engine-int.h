/*
 * engine-int.h — the engine's internals (duet/duet.h; docs/engine.md).
 *
 *   duet_engine
 *   ├── workers[0] target, workers[1] draft (when cfg has "speculative"): plugin, worker, info
 *   ├── bm, sched          the block manager and scheduler (same block ids for both caches)
 *   ├── reqs[n_reqs]       every request not yet reported finished, in arrival order
 *   ├── retired[n_retired] requests reported finished by the last step, freed by the next one
 *   ├── per-step scratch   batch seqs, output rows, out[] — grown on demand, never shrunk
 *   ├── spec               (with a draft) spec.c's buffers, grown the same way, and the
 *   │                      measurements behind adaptive k
 *   └── dt                 (with overlap) overlap.c's draft thread, which then makes every call
 *                          into the draft worker
 *
 * A request's record keeps the tokens the engine handed to the scheduler (ids), and their
 * log-probabilities; when the scheduler finishes the request its result replaces ids (it may have
 * dropped tokens after a stop).
 */
#ifndef DUET_ENGINE_INT_H
#define DUET_ENGINE_INT_H

#include <duet/block_manager.h>
#include <duet/duet.h>
#include <duet/loader.h>
#include <duet/scheduler.h>

#include "rejection.h"

#include <pthread.h>

/* KV blocks of each pool at most (the block manager tracks 2^30 device and host blocks). */
#define DUET_ENGINE_MAX_BLOCKS (1u << 29)

struct duet__eworker {
    duet_plugin *plugin;         /* loaded, checked */
    const duet_worker_plugin *t; /* its table */
    duet_worker *w;              /* created */
    duet_model_info info;        /* describe() */
    duet_cache_geometry geom;    /* cache_geometry() with budget 0 */
};

struct duet__req {
    uint64_t id;
    duet_sampling_params sampling;
    int32_t *prompt; /* [n_prompt] */
    uint32_t n_prompt;
    int32_t *ids; /* [cap] generated tokens */
    uint32_t n_ids, cap;
    float *token_logprobs;    /* [cap] when sampling.n_logprobs > 0 */
    duet_logprob *logprobs;   /* [cap][n_logprobs] */
    float *prompt_lp;         /* [n_prompt] with n_prompt_logprobs: NAN until known */
    duet_logprob *prompt_top; /* [n_prompt][n_prompt_logprobs]: token -1 until known */
    uint32_t first_new;       /* ids[first_new..) are this step's */
    uint32_t draft_computed;  /* tokens whose KV the draft cache holds */
    bool touched;             /* emitted tokens this step */
    duet_finish_reason finish;
    uint32_t num_preemptions;
    uint32_t proposed, accepted; /* draft tokens proposed for it, and accepted */
    char *error;                 /* why a worker failed it (DUET_FINISH_ERROR); NULL */
    bool fail_pending;           /* error set this step: the scheduler aborts it after the step */
};

/* Per-step buffers, grown to the largest step seen. */
struct duet__scratch {
    duet_seq *seqs;           /* [cap_seqs] */
    struct duet__req **owner; /* [cap_seqs] the request of each scheduled sequence */
    uint32_t cap_seqs;
    int32_t *tokens;        /* [cap_rows] */
    float *token_logprobs;  /* [cap_rows] */
    duet_logprob *logprobs; /* [cap_rows][max_logprobs] */
    uint32_t cap_rows, cap_logprobs;
    duet_logprob *prompt_top; /* [cap_prompt_top] prompt log-probabilities of a batch */
    float *prompt_next;       /* [cap_prompt] */
    uint32_t cap_prompt_top, cap_prompt;
    duet_request_output *out; /* [cap_out] */
    uint32_t cap_out;
};

struct duet_engine {
    const duet_config *cfg;
    const duet_settings *settings; /* cfg's, typed: every key the engine reads */
    duet_host *host;
    struct duet__eworker workers[2];
    uint32_t n_workers;  /* 1, or 2 with a draft */
    uint32_t block_size; /* tokens per KV block */
    uint32_t num_blocks; /* device blocks of each cache */
    uint32_t num_swap;   /* swap blocks of each cache */
    uint32_t max_model_len;
    uint32_t k; /* speculative.num_tokens (0 without a draft) */
    struct duet__accept_params accept;
    uint32_t disable_by_batch_size; /* speculation off in steps running more sequences; 0 never */
    struct duet__spec *spec;        /* spec.c's state, with a draft */
    struct duet__draft_thread *dt;  /* overlap.c's draft thread; NULL without overlap */
    duet_block_manager *bm;
    duet_scheduler *sched;
    uint64_t next_id;
    struct duet__req **reqs; /* [n_reqs] live, in arrival order */
    uint32_t n_reqs, cap_reqs;
    struct duet__req **retired; /* [n_retired] reported finished, freed next step */
    uint32_t n_retired, cap_retired;
    struct duet__scratch sc;
    duet_step_output step_out;
    duet_engine_metrics m;
    uint32_t n_fail_pending; /* requests with fail_pending set (abort_failed runs only then) */
    bool broken;             /* a worker failed mid-step */
    char error[1024];
};

/* engine.c */
duet_status duet__engine_fail(duet_engine *e, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct duet__req *duet__engine_find(duet_engine *e, uint64_t id, uint32_t *index);
void duet__req_free(struct duet__req *r);
/* Appends n tokens (and their log-probabilities, rows of stride `stride`; may be NULL). */
duet_status duet__req_append(struct duet__req *r, const int32_t *tokens, uint32_t n,
                             const float *token_logprobs, const duet_logprob *logprobs,
                             uint32_t stride);
double duet__now_s(void);
uint64_t duet__now_ns(void);

/* step.c */
/* Fails the request of scheduled sequence i: worker `which` (0 target, 1 draft) gave a row of
 * non-finite logits for position pos. The request ends with DUET_FINISH_ERROR after the step;
 * its sequence must not be committed. */
void duet__fail_nonfinite(duet_engine *e, uint32_t i, uint32_t which, uint32_t pos);
/* Grows *p (elements of elem bytes, capacity *cap) to hold want; false when out of memory. */
bool duet__grow(void **p, uint32_t *cap, uint32_t want, size_t elem);
duet_status duet__engine_step(duet_engine *e, const duet_step_output **out);
/* Fills e->sc.seqs / e->sc.owner with a plain batch for the scheduler's output (one output row
 * per sampling sequence); *n_rows and *max_logprobs receive the rows and the largest n_logprobs
 * among them. */
duet_status duet__engine_batch_seqs(duet_engine *e, const duet_sched_output *so, uint32_t *n_rows,
                                    uint32_t *max_logprobs);
/* Plain decoding of a step: the target alone, one token per sampling sequence. */
duet_status duet__engine_run_plain(duet_engine *e, const duet_sched_output *so);
/* A batch over the step's cache operations (so may be NULL: none) and seqs[n_seqs]. */
void duet__batch_init(const duet_sched_output *so, const duet_seq *seqs, uint32_t n_seqs,
                      uint32_t flags, uint32_t max_logprobs, duet_batch *b);
/* execute() on worker `which` (0 target, 1 draft), timed; a failure is named in e->error. */
duet_status duet__worker_run(duet_engine *e, uint32_t which, const duet_batch *b,
                             duet_batch_output *o);
/* Reports n tokens of scheduled sequence i (e->sc.seqs[i]) to its request and the scheduler. */
duet_status duet__commit(duet_engine *e, uint32_t i, const int32_t *tokens, uint32_t n,
                         const float *token_logprobs, const duet_logprob *logprobs,
                         uint32_t stride);

/* spec.c: the speculative state (buffers, adaptive k) of an engine with a draft; NULL when out
 * of memory. adaptive: choose k per step (docs/engine.md). */
struct duet__spec *duet__spec_create(uint32_t k_max, uint32_t vocab, bool adaptive);
void duet__spec_destroy(struct duet__spec *sp);
/* Reserves the buffers of a step of max_seqs sequences (their probability rows: the largest
 * allocations of a step), so that a step of any size allocates nothing that could fail. */
bool duet__spec_reserve_max(struct duet__spec *sp, uint32_t max_seqs);
/* spec.c: the speculative decode of a step (DESIGN §7): propose, score, verify, commit. */
duet_status duet__engine_spec_decode(duet_engine *e, const duet_sched_output *so);
/* Runs the step's cache operations on the draft and feeds it what its cache lacks up to the end
 * of what the target is fed (e->sc.seqs, built by duet__engine_batch_seqs), without sampling. */
duet_status duet__engine_draft_prefill(duet_engine *e, const duet_sched_output *so);

/* overlap.c: the draft thread (docs/engine.md, "Overlap"). start creates it (e->dt), stop
 * joins and frees it (NULL is allowed). post hands the draft worker one execute() of b into o,
 * which the caller keeps alive until wait; wait blocks until it is done, adds its seconds to
 * draft_s and those inside the target's interval [t0_ns, t1_ns) (0, 0: none) to overlap_s, and
 * returns its status (a failure is named in e->error). At most one job is in flight. */
duet_status duet__draft_thread_start(duet_engine *e);
void duet__draft_thread_stop(duet_engine *e);
void duet__draft_post(duet_engine *e, const duet_batch *b, duet_batch_output *o);
duet_status duet__draft_wait(duet_engine *e, uint64_t t0_ns, uint64_t t1_ns);

#endif /* DUET_ENGINE_INT_H */
