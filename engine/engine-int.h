/*
 * engine-int.h — the engine's internals (duet/duet.h; docs/engine.md).
 *
 *   duet_engine
 *   ├── workers[0] target, workers[1] draft (when cfg has "speculative"): plugin, worker, info
 *   ├── bm, sched          the block manager and scheduler (same block ids for both caches)
 *   ├── reqs[n_reqs]       every request not yet reported finished, in arrival order
 *   ├── retired[n_retired] requests reported finished by the last step, freed by the next one
 *   ├── per-step scratch   batch seqs, output rows, out[] — grown on demand, never shrunk
 *   ├── spec               (with a draft) the speculative step's buffers, grown the same way,
 *   │                      and the measurements behind adaptive k
 *   └── dt                 (with overlap) run.c's draft thread, which then makes every call
 *                          into the draft worker
 *
 * A request's record keeps the tokens the engine handed to the scheduler (ids), and their
 * log-probabilities; when the scheduler finishes the request its result replaces ids (it may have
 * dropped tokens after a stop).
 *
 * The files, top to bottom. A file calls only files below it, never one above (no cycles), and
 * nothing below spec.c calls back into speculation:
 *
 *   engine.c    the public API: create and destroy (configuration, workers, caches, scheduler),
 *               requests in, abort, metrics; duet_engine_step() times step.c's step
 *   step.c      one step: schedule, then plain (here) or speculative (spec.c); end the requests
 *               the workers failed; take the finished, retire them, build the step's output
 *   spec.c      speculation, one bounded part: its state, the draft's prefill, each sequence's
 *               lookahead k, the proposal and score batches, the halves for overlap, the step
 *   adapt.c     adaptive k: moving averages of acceptance and costs, the next k
 *   batch.c     the per-step scratch, and batches from the scheduler's output
 *   run.c       every worker execute(): on the step loop, or on the draft thread (overlap), and
 *               a speculative step's propose / score runs, serial or overlapped
 *   verify.c    a speculative step's verification, sequence by sequence, then its commit
 *   rejection.c the verifier itself (rejection.h; also built into check_rejection alone)
 *   commit.c    tokens and log-probabilities into the requests and the scheduler, non-finite
 *               failures, failed requests ended, finished requests retired
 *   request.c   a request's record: find, append, free
 *   util.c      failing with a message, the clock, growing an array
 *
 * Who calls whom (each may also call request.c and util.c, which call no engine file):
 *
 *   engine.c ─► step.c, spec.c, batch.c, run.c   (the last three: creating, destroying state)
 *   step.c   ─► spec.c, batch.c, run.c, commit.c (the plain path goes straight to the bottom)
 *   spec.c   ─► adapt.c, batch.c, run.c, verify.c
 *   verify.c ─► rejection.c, commit.c
 *   adapt.c, batch.c, run.c, commit.c, rejection.c ─► no file above request.c
 *
 * so a speculative step flows step ─► spec ─► batch ─► run ─► verify ─► commit, and a plain one
 * step ─► batch ─► run ─► commit.
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

/* One sequence of a request (n of them; sequence i has the scheduler's id seq_base + i). */
struct duet__seqrec {
    int32_t *ids; /* [cap] generated tokens */
    uint32_t n_ids, cap;
    float *token_logprobs;     /* [cap] when sampling.n_logprobs > 0 */
    duet_logprob *logprobs;    /* [cap][n_logprobs] */
    uint32_t first_new;        /* ids[first_new..) are this step's */
    uint32_t draft_computed;   /* tokens whose KV the draft cache holds */
    duet_finish_reason finish; /* set when the request retires */
};

struct duet__req {
    uint64_t id;
    duet_sampling_params sampling;
    int32_t *prompt; /* [n_prompt] */
    uint32_t n_prompt;
    uint32_t n;                   /* sequences (the request's n) */
    struct duet__seqrec *seqs;    /* [n] */
    duet_completion_output *outs; /* [n] the step output's rows for it */
    uint64_t seq_base;            /* the scheduler's id of sequence 0, once scheduled */
    bool based;                   /* seq_base is known */
    float *prompt_lp;             /* [n_prompt] with n_prompt_logprobs: NAN until known */
    duet_logprob *prompt_top;     /* [n_prompt][n_prompt_logprobs]: token -1 until known */
    bool touched;                 /* emitted tokens this step */
    duet_finish_reason finish;
    uint32_t num_preemptions;
    uint32_t proposed, accepted; /* draft tokens proposed for it, and accepted */
    uint32_t drafts;             /* verifications of its proposals (steps that drafted for it) */
    uint32_t accepted_at[DUET_MAX_SPEC_TOKENS]; /* [j]: accepted at lookahead position j */
    char *error;           /* why a worker failed it (DUET_FINISH_ERROR); NULL */
    bool fail_pending;     /* error set this step: the scheduler aborts it after the step */
    bool penalized;        /* penalties or a logit bias: its sequences carry pen */
    bool count_seen;       /* repetition, frequency or presence: pen needs seen lists */
    duet_penalties pen;    /* the request's settings; seen is set per sequence and step */
    duet_token_bias *bias; /* [pen.n_bias] its logit_bias sorted by token (pen.bias) */
};

/* Per-step buffers, grown to the largest step seen. */
struct duet__scratch {
    duet_seq *seqs;            /* [cap_seqs] */
    struct duet__req **owner;  /* [cap_seqs] the request of each scheduled sequence */
    struct duet__seqrec **rec; /* [cap_seqs] and the sequence's record */
    uint32_t *samples;         /* [cap_seqs] tokens the scheduler expects (n for a fork) */
    uint32_t cap_seqs;
    float *probs; /* [cap_probs] = [rows][V] sampled rows, when a group forks */
    size_t cap_probs;
    int32_t *fork_tok; /* [cap_fork] a fork's first tokens */
    float *fork_lp;    /* [cap_fork] and their log-probabilities */
    uint32_t cap_fork;
    int32_t *tokens;        /* [cap_rows] */
    float *token_logprobs;  /* [cap_rows] */
    duet_logprob *logprobs; /* [cap_rows][max_logprobs] */
    uint32_t cap_rows, cap_logprobs;
    duet_logprob *prompt_top; /* [cap_prompt_top] prompt log-probabilities of a batch */
    float *prompt_next;       /* [cap_prompt] */
    uint32_t cap_prompt_top, cap_prompt;
    duet_request_output *out; /* [cap_out] */
    uint32_t cap_out;
    duet_penalties *pens; /* [cap_pens] each penalised sequence's, pointed at by its seq */
    uint32_t cap_pens;
    duet_token_count *seen; /* [cap_seen] their seen lists, one after another */
    uint32_t cap_seen;
    uint64_t *keys; /* [cap_keys] sort scratch: token << 1 | generated */
    uint32_t cap_keys;
};

/* What a sequence of a speculative step keeps across the updates (which invalidate the
 * scheduler's pointers). */
struct duet__spec_seq {
    uint32_t len;     /* T: tokens before the step */
    uint32_t k;       /* proposals, 0 for a plain decode */
    uint32_t trow;    /* first target row */
    uint32_t drow;    /* first draft row */
    uint32_t a;       /* accepted by verification; UINT32_MAX when not verified (failed) */
    int32_t last_out; /* the last emitted token (the recovered or bonus one) once verified */
};

/*
 * Draft-ahead for a step of one sequence (docs/engine.md, "Draft-ahead"): while the target
 * scores window N (x1..xk at T..T+k-1) the draft thread feeds x_k at T+k-1 and drafts n + 1 more
 * tokens: g, its guess of the bonus token at T+k, then y1..yn at T+k+1..T+k+n. When verification
 * accepts all k and the bonus token is g, y1..yn (and their rows) are the next step's proposals
 * (`held`); otherwise they are thrown away and the draft's cached length lowered.
 */
#define DUET__SPLIT_SIZES 16

struct duet__ahead {
    int32_t *tok;        /* [k_max + 1] g, y1..yn */
    float *probs;        /* [(k_max + 1) * vocab] the rows they were sampled from */
    duet_seq seq;        /* the job's sequence: [x_k] at T+k-1, 1 output, n drafting steps */
    duet_batch b;        /* the job */
    duet_batch_output o; /* its output: tok, probs */
    uint32_t n;          /* y tokens drafted (the window's proposals); 0: no job this step */
    bool ran;            /* the job ran this step (set by run.c) */
    bool held;           /* y1..yn wait for the next step */
    uint64_t seq_id;     /* held: the sequence */
    uint32_t len;        /* held: its token count when they apply (T + k + 1) */
    uint64_t step;       /* held: e->m.steps of the step that drafted them */
    /* The window's length fits the target call it runs beside (ahead_plan): moving averages of
     * that call's seconds and of one draft forward pass of sequence 0 (run.c measures both from
     * the propose and ahead jobs); 0 until measured. */
    double beside_s;
    double pass_s;
    enum { DUET__AHEAD_FIT, DUET__AHEAD_FULL, DUET__AHEAD_OFF } window; /* $DUET_AHEAD_WINDOW */
};

/* Adaptive k (adapt.c; docs/engine.md) keeps, per sequence of a step: alpha, an exponential
 * moving average of the step's acceptance rate; draft_tok_s, of the draft's seconds per proposed
 * token; verify_at[k], of the target's scoring seconds with k proposals (0 until k was tried). */
struct duet__adapt {
    bool on;                                    /* speculative.adaptive: else k stays k_max */
    uint32_t k_max;                             /* speculative.num_tokens */
    uint32_t k_next;                            /* proposals for the next step */
    double alpha;                               /* EMA acceptance rate; < 0 before any */
    double draft_tok_s;                         /* EMA draft seconds per proposed token */
    double verify_at[DUET_MAX_SPEC_TOKENS + 1]; /* EMA scoring seconds at k; 0 unknown */
    uint64_t decisions;                         /* adaptive choices made */
};

/*
 * The engine's speculative state (with a draft). spec.c fills the buffers with a step's batches,
 * run.c hands the draft's proposals to the target, verify.c reads both workers' rows. Buffers
 * grow to the largest step seen and are never shrunk, so a steady-state step allocates nothing.
 */
struct duet__spec {
    struct duet__spec_seq *ss; /* [cap_seqs] */
    duet_seq *dseqs;           /* [cap_seqs] the draft's batch */
    uint32_t cap_seqs;
    int32_t *feed, *ttok; /* [cap_rt] target tokens: last, x1..xk per sequence; sampled */
    float *tlp;           /* [cap_rt] target token logprobs */
    uint32_t cap_rt;
    duet_logprob *lps; /* [cap_lps] = [rt][max_lp] */
    uint32_t cap_lps;
    int32_t *dtok; /* [cap_rd] draft tokens */
    uint32_t cap_rd;
    float *tprobs, *dprobs; /* [cap_tp] = [rt][V], [cap_dp] = [rd][V] */
    size_t cap_tp, cap_dp;
    float *scratch; /* [V] */
    uint32_t vocab, k_max;
    struct duet__adapt ad;
    struct duet__ahead ahead; /* with the draft thread */
    /* With the draft thread, a step of n >= 2 sequences runs as halves (run.c's overlap) or whole
     * (serial), whichever measured the shorter step per sequence and position at that n (sizes
     * from DUET__SPLIT_SIZES on share the last entry): cost[0] whole, cost[1] halves, moving
     * averages of seconds, 0 until measured. Halves always with DUET_FORCE_OVERLAP=1. */
    struct duet__split_cost {
        double cost[2];
        uint32_t decisions;
    } split[DUET__SPLIT_SIZES];
    bool split_forced;
    uint32_t part_a;      /* this step's first part: sequences [0, part_a) */
    duet_batch pb;        /* the draft's batch of a plain (prefill) step, over dseqs */
    duet_batch_output po; /* its (empty) output */
    bool pb_posted;       /* pb runs on the draft thread: duet__spec_draft_prefill_wait */
};

/* A part of a speculative step (spec.c builds it, run.c runs it): sequences [lo, hi) of
 * e->sc.seqs, the draft's batch that proposes for them and the target's that scores them. */
struct duet__spec_part {
    uint32_t lo, hi;
    bool proposed; /* the draft proposes in this step; false: proposals held from draft-ahead */
    duet_batch propose, score;
    duet_batch_output propose_out, score_out;
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
    uint32_t k;         /* speculative.num_tokens (0 without a draft) */
    uint32_t lookahead; /* KV slots the scheduler reserves per decode: k, 2k with draft-ahead */
    struct duet__accept_params accept;
    uint32_t disable_by_batch_size; /* speculation off in steps running more sequences; 0 never */
    struct duet__spec *spec;        /* the speculative state, with a draft */
    struct duet__draft_thread *dt;  /* run.c's draft thread; NULL without overlap */
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
    uint32_t
        n_fail_pending; /* requests with fail_pending set (duet__commit_failed runs only then) */
    bool broken;        /* a worker failed mid-step */
    char error[1024];
};

/* step.c: one step (duet_engine_step does the timing and the broken state around it). */
duet_status duet__engine_step(duet_engine *e, const duet_step_output **out);

/* spec.c: the speculative state (buffers, adaptive k) of an engine with a draft; NULL when out
 * of memory. adaptive: choose k per step (docs/engine.md). */
struct duet__spec *duet__spec_create(uint32_t k_max, uint32_t vocab, bool adaptive);
void duet__spec_destroy(struct duet__spec *sp);
/* The draft-ahead buffers (with the draft thread); false when out of memory. */
bool duet__spec_ahead_init(struct duet__spec *sp);
/* Reserves the buffers of a step of max_seqs sequences (their probability rows: the largest
 * allocations of a step), so that a step of any size allocates nothing that could fail. */
bool duet__spec_reserve_max(struct duet__spec *sp, uint32_t max_seqs);
/* The speculative decode of a step (DESIGN §7): propose, score, verify, commit. */
duet_status duet__spec_decode(duet_engine *e, const duet_sched_output *so);
/* Runs the step's cache operations on the draft and feeds it what its cache lacks up to the end
 * of what the target is fed (e->sc.seqs, built by duet__batch_seqs), without sampling. With the
 * draft thread the job is only posted (it runs beside the target's half of the step) and
 * duet__spec_draft_prefill_wait waits for it; without, it has run on return. A draft-ahead
 * window held for the next step is dropped (a plain step comes between). */
duet_status duet__spec_draft_prefill(duet_engine *e, const duet_sched_output *so);
/* Waits for the posted draft prefill (none: returns OK), counting its time inside the target's
 * execute() interval [t0_ns, t1_ns) as overlap. */
duet_status duet__spec_draft_prefill_wait(duet_engine *e, uint64_t t0_ns, uint64_t t1_ns);
/* Counts a held draft-ahead window as thrown away (the step will not use it). */
void duet__spec_ahead_drop(duet_engine *e);

/* adapt.c: k_max proposals at first; with on, duet__adapt_update picks each next k. */
void duet__adapt_init(struct duet__adapt *ad, uint32_t k_max, bool on);
/* Folds a step's measurements (n sequences that proposed k each; p proposed, a accepted; the
 * draft's and the target's seconds) into the averages, and picks the next k (ad->k_next). */
void duet__adapt_update(struct duet__adapt *ad, uint32_t n, uint32_t k, uint64_t p, uint64_t a,
                        double draft_s, double verify_s);

/* batch.c */
void duet__scratch_free(struct duet__scratch *sc);
/* Fills e->sc.seqs / e->sc.owner with a plain batch for the scheduler's output (one output row
 * per sampling sequence); *n_rows and *max_logprobs receive the rows and the largest n_logprobs
 * among them. */
duet_status duet__batch_seqs(duet_engine *e, const duet_sched_output *so, uint32_t *n_rows,
                             uint32_t *max_logprobs);
/* A batch over the step's cache operations (so may be NULL: none) and seqs[n_seqs]. */
void duet__batch_init(const duet_sched_output *so, const duet_seq *seqs, uint32_t n_seqs,
                      uint32_t flags, uint32_t max_logprobs, duet_batch *b);
/* The plain step's batch b and its output o in e->sc: duet__batch_seqs, with the token and prompt
 * log-probabilities asked for (b->max_logprobs, DUET_BATCH_WANT_PROMPT_LOGPROBS in b->flags). */
duet_status duet__batch_plain(duet_engine *e, const duet_sched_output *so, duet_batch *b,
                              duet_batch_output *o);

/* run.c: execute() on worker `which` (0 target, 1 draft), timed; a failure is named in e->error.
 * With the draft thread the draft's execute() runs there, waited for at once. */
duet_status duet__worker_run(duet_engine *e, uint32_t which, const duet_batch *b,
                             duet_batch_output *o);
/* Runs a speculative step's parts (1, or 2 with the draft thread): each part's proposals (unless
 * held from draft-ahead), then its scores, the proposals copied into the target's fed tokens in
 * between; with two parts the second part's proposals run beside the first part's scoring. With
 * one part and e->spec->ahead.n > 0 the draft-ahead job runs beside the scoring, when every
 * proposal is finite (ahead.ran says). Every job has ended on return. */
duet_status duet__run_spec(duet_engine *e, struct duet__spec_part *parts, uint32_t n_parts);
/* The draft thread's job queue of one: post hands it b into o (kept alive by the caller until
 * the wait); wait blocks until it is done, adds its seconds to draft_s and those inside
 * [t0_ns, t1_ns) (the target's execute(); 0, 0: none) to overlap_s. */
void duet__draft_post(duet_engine *e, const duet_batch *b, duet_batch_output *o);
duet_status duet__draft_wait(duet_engine *e, uint64_t t0_ns, uint64_t t1_ns);
/* The draft thread (docs/engine.md, "Overlap"): start creates it (e->dt), stop joins and frees
 * it (NULL is allowed). */
duet_status duet__draft_thread_start(duet_engine *e);
void duet__draft_thread_stop(duet_engine *e);

/* verify.c: verifies and commits the n sequences of a speculative step whose workers have run
 * (e->spec's rows; max_lp log-probabilities per target row), in batch order. */
duet_status duet__verify_commit(duet_engine *e, uint32_t n, uint32_t max_lp);

/* commit.c: reports n tokens of scheduled sequence i (e->sc.seqs[i]) to its request and the
 * scheduler. */
duet_status duet__commit(duet_engine *e, uint32_t i, const int32_t *tokens, uint32_t n,
                         const float *token_logprobs, const duet_logprob *logprobs,
                         uint32_t stride);
/* Commits the row of each sampling sequence of a plain batch (e->sc.tokens, log-probabilities of
 * max_lp entries), or fails its request when the row was non-finite. */
duet_status duet__commit_rows(duet_engine *e, uint32_t n_seqs, uint32_t max_lp);
/* Copies the prompt log-probabilities of a plain batch (e->sc) into the requests that lack them. */
void duet__commit_prompt_lp(duet_engine *e, uint32_t n_seqs, uint32_t max_lp);
/* Fails the request of scheduled sequence i: worker `which` (0 target, 1 draft) gave a row of
 * non-finite logits for position pos. The request ends with DUET_FINISH_ERROR after the step;
 * its sequence must not be committed. */
void duet__fail_nonfinite(duet_engine *e, uint32_t i, uint32_t which, uint32_t pos);
/* Ends the requests failed by this step (after every commit: aborting frees their tables). */
duet_status duet__commit_failed(duet_engine *e);
/* Moves a finished request from reqs to retired, its ids set to the scheduler's final ones. */
duet_status duet__commit_retire(duet_engine *e, const duet_sched_result *res);

/* request.c */
struct duet__req *duet__engine_find(duet_engine *e, uint64_t id, uint32_t *index);
void duet__req_free(struct duet__req *r);
/* Appends n tokens to sequence s of r (and their log-probabilities, rows of stride `stride`;
 * may be NULL). */
duet_status duet__req_append(const struct duet__req *r, struct duet__seqrec *s,
                             const int32_t *tokens, uint32_t n, const float *token_logprobs,
                             const duet_logprob *logprobs, uint32_t stride);

/* util.c */
duet_status duet__engine_fail(duet_engine *e, duet_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
double duet__now_s(void);
uint64_t duet__now_ns(void);
/* Grows *p (elements of elem bytes, capacity *cap) to hold want; false when out of memory. */
bool duet__grow(void **p, uint32_t *cap, uint32_t want, size_t elem);

#endif /* DUET_ENGINE_INT_H */
