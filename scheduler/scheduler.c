/*
 * The scheduler: vLLM 0.6's continuous-batching Scheduler (reference/vllm-semantics.md §2) over
 * the block manager. This file holds the object's lifecycle: create, add, abort, finished
 * results, queries. The passes of a step live in policy.c and step.c, token accounting in
 * update.c.
 *
 *   duet_scheduler
 *     q[WAITING]  ⇄ groups   new, recompute-preempted (front), partially re-admitted (head)
 *     q[RUNNING]  ⇄ groups   resident; the tail is the first preemption victim
 *     q[SWAPPED]  ⇄ groups   blocks on the host pool
 *     q[FINISHED] ⇄ groups   done, until duet_scheduler_take_finished()
 *     requests    request id → group      seq_map  sequence id → group
 *     groups[] oseqs[] ignored[] swap_in swap_out copy     the step's output, reused
 *     bm ─────────────────────────────────────────────────▶ block manager (borrowed)
 *
 *   group, one allocation:  header | seqs[n] | results[n] | stop ids | prompt
 *                           | tokens[n_alloc][cap]
 *
 * Lifecycle of a request: add → WAITING → (step admits) RUNNING ⇄ SWAPPED or back to WAITING
 * (recompute) → FINISHED (update stops it, abort, or a step ignores it) → taken → freed on the
 * next take. Every token array is sized at add for the longest the sequence can get
 * (min(prompt + max_tokens, max_model_len + 1)), so steps and updates never allocate; the output
 * arrays are sized at add for the most a step can schedule, and pair buffers grow by doubling.
 *
 * Sequence ids are handed out from a counter, n per request (seq_base .. seq_base + n - 1), and
 * name the sequences' block tables in the block manager, which must hold no other sequence.
 */
#include "scheduler-int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODEL_LEN (1u << 30)

duet_status duet__sched_fail(duet_scheduler *s, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
    return st;
}

void duet_scheduler_params_init(duet_scheduler_params *p)
{
    if (p)
        *p = (duet_scheduler_params){.max_num_seqs = 256};
}

void duet_sched_request_init(duet_sched_request *r)
{
    if (r)
        *r = (duet_sched_request){
            .sampling = {.temperature = 1.0f, .top_p = 1.0f}, .max_tokens = 16, .n = 1};
}

const char *duet_scheduler_error(const duet_scheduler *s)
{
    return s ? s->error : "";
}

/* ---- creation ---------------------------------------------------------------------------- */

static duet_status check_params(const duet_scheduler_params *p, uint32_t tokens, char *err,
                                size_t n)
{
    if (p->max_model_len == 0 || p->max_model_len > MAX_MODEL_LEN)
        snprintf(err, n, "max_model_len must be in 1..%u, got %" PRIu32, MAX_MODEL_LEN,
                 p->max_model_len);
    else if (p->max_num_seqs == 0)
        snprintf(err, n, "max_num_seqs must be at least 1");
    else if (p->policy != DUET_SCHED_POLICY_FCFS && p->policy != DUET_SCHED_POLICY_PRIORITY)
        snprintf(err, n, "unknown policy %d", (int)p->policy);
    else if ((unsigned)p->preemption > DUET_SCHED_PREEMPTION_SWAP)
        snprintf(err, n, "unknown preemption mode %d", (int)p->preemption);
    else if (p->num_eos_token_ids > DUET_SCHED_MAX_EOS)
        snprintf(err, n, "num_eos_token_ids must be at most %d, got %" PRIu32, DUET_SCHED_MAX_EOS,
                 p->num_eos_token_ids);
    else if (!(p->delay_factor >= 0.0 && isfinite(p->delay_factor)))
        snprintf(err, n, "delay_factor must be >= 0, got %g", p->delay_factor);
    else if (p->num_lookahead_slots > MAX_MODEL_LEN)
        snprintf(err, n, "num_lookahead_slots %" PRIu32 " is too large", p->num_lookahead_slots);
    else if (tokens < p->max_num_seqs)
        snprintf(err, n,
                 "max_num_batched_tokens (%" PRIu32 ") must be at least max_num_seqs (%" PRIu32 ")",
                 tokens, p->max_num_seqs);
    else if (!p->chunked_prefill && tokens < p->max_model_len)
        snprintf(err, n,
                 "max_num_batched_tokens (%" PRIu32 ") is smaller than max_model_len (%" PRIu32
                 "): the longest prompt could never be scheduled; use chunked prefill",
                 tokens, p->max_model_len);
    else
        return DUET_STATUS_OK;
    return DUET_STATUS_INVALID_ARGUMENT;
}

static duet_status check_bm(const duet_scheduler *s, char *err, size_t n)
{
    const duet_block_manager *bm = s->bm;

    if (s->p.chunked_prefill && s->prefix_caching && s->p.max_num_batched_tokens % s->block_size) {
        snprintf(err, n,
                 "with chunked prefill and prefix caching, max_num_batched_tokens (%" PRIu32
                 ") must be a multiple of the block size (%" PRIu32 ")",
                 s->p.max_num_batched_tokens, s->block_size);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    for (int pool = 0; pool < 2; pool++)
        if (duet_block_manager_num_free_blocks(bm, (duet_block_pool)pool) !=
            duet_block_manager_num_total_blocks(bm, (duet_block_pool)pool)) {
            snprintf(err, n, "the block manager already holds sequences");
            return DUET_STATUS_INVALID_ARGUMENT;
        }
    return DUET_STATUS_OK;
}

static duet_status init_buffers(duet_scheduler *s)
{
    if (duet__sched_map_init(&s->requests, 64) || duet__sched_map_init(&s->seq_map, 64))
        return DUET_STATUS_OUT_OF_MEMORY;
    s->swap_in.pairs = malloc(sizeof(duet_block_pair) * 16);
    s->swap_out.pairs = malloc(sizeof(duet_block_pair) * 16);
    s->copy.pairs = malloc(sizeof(duet_block_pair) * 16);
    if (!s->swap_in.pairs || !s->swap_out.pairs || !s->copy.pairs)
        return DUET_STATUS_OUT_OF_MEMORY;
    s->swap_in.cap = s->swap_out.cap = s->copy.cap = 16;
    return DUET_STATUS_OK;
}

duet_status duet_scheduler_create(const duet_scheduler_params *p, duet_block_manager *bm,
                                  duet_scheduler **out, char *err, size_t err_size)
{
    char scratch[8];
    duet_block_manager_params bmp;
    duet_scheduler *s;
    uint32_t tokens;
    duet_status st;

    if (!err || err_size == 0) {
        err = scratch;
        err_size = sizeof(scratch);
    }
    err[0] = '\0';
    if (!p || !bm || !out) {
        snprintf(err, err_size, "params, block manager and out must not be NULL");
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    *out = NULL;
    tokens = p->max_num_batched_tokens;
    if (tokens == 0)
        tokens = p->chunked_prefill ? 512 : (p->max_model_len > 2048 ? p->max_model_len : 2048);
    st = check_params(p, tokens, err, err_size);
    if (st)
        return st;
    s = calloc(1, sizeof(*s));
    if (!s)
        goto out_oom;
    s->p = *p;
    s->p.max_num_batched_tokens = tokens;
    s->bm = bm;
    duet_block_manager_params_get(bm, &bmp);
    s->block_size = bmp.block_size;
    s->prefix_caching = bmp.prefix_caching;
    s->next_seq_id = 1;
    for (int i = 0; i < DUET__Q_COUNT; i++)
        s->q[i] = (struct duet__queue){0};
    st = check_bm(s, err, err_size);
    if (st) {
        free(s);
        return st;
    }
    if (init_buffers(s))
        goto out_destroy;
    *out = s;
    return DUET_STATUS_OK;

out_destroy:
    duet_scheduler_destroy(s);
out_oom:
    snprintf(err, err_size, "out of memory creating a scheduler");
    return DUET_STATUS_OUT_OF_MEMORY;
}

void duet_scheduler_destroy(duet_scheduler *s)
{
    if (!s)
        return;
    for (int i = 0; i < DUET__Q_COUNT; i++)
        while (s->q[i].head) {
            struct duet__group *g = s->q[i].head;

            duet__queue_remove(s, g);
            duet__sched_free_tables(s, g);
            free(g);
        }
    free(s->taken);
    duet__sched_map_fini(&s->requests);
    duet__sched_map_fini(&s->seq_map);
    free(s->groups);
    free(s->oseqs);
    free(s->ignored);
    free(s->swap_in.pairs);
    free(s->swap_out.pairs);
    free(s->copy.pairs);
    free(s->ids);
    free(s->n_new);
    free(s);
}

/* ---- adding requests --------------------------------------------------------------------- */

static duet_status check_tokens(duet_scheduler *s, const duet_sched_request *r, const int32_t *t,
                                uint32_t n, const char *what)
{
    if (n && !t)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT, "request %" PRIu64 ": %s is NULL",
                                r->request_id, what);
    for (uint32_t i = 0; i < n; i++)
        if (t[i] < 0)
            return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                    "request %" PRIu64 ": %s token %" PRIu32 " is %" PRId32
                                    ", token ids must be >= 0",
                                    r->request_id, what, i, t[i]);
    return DUET_STATUS_OK;
}

static duet_status check_request(duet_scheduler *s, const duet_sched_request *r)
{
    if (r->prompt_len == 0)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "request %" PRIu64 ": empty prompt", r->request_id);
    if (r->n == 0 || r->n > DUET__SCHED_MAX_N)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "request %" PRIu64 ": n must be in 1..%u, got %" PRIu32,
                                r->request_id, DUET__SCHED_MAX_N, r->n);
    if (r->max_tokens == 0)
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "request %" PRIu64 ": max_tokens must be at least 1",
                                r->request_id);
    if (duet__sched_map_get(&s->requests, r->request_id))
        return duet__sched_fail(s, DUET_STATUS_INVALID_ARGUMENT,
                                "request %" PRIu64 ": the id is already in use", r->request_id);
    if (check_tokens(s, r, r->prompt, r->prompt_len, "prompt"))
        return DUET_STATUS_INVALID_ARGUMENT;
    return check_tokens(s, r, r->stop_token_ids, r->num_stop_token_ids, "stop");
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* The longest a sequence of r can get: it stops at max_tokens or once it exceeds
 * max_model_len; a prompt that is too long only keeps its prompt (it will be ignored). */
static uint32_t tokens_cap(const duet_scheduler *s, const duet_sched_request *r)
{
    uint64_t cap = (uint64_t)r->prompt_len + r->max_tokens;

    if (r->prompt_len > s->p.max_model_len)
        return r->prompt_len;
    return cap < (uint64_t)s->p.max_model_len + 1 ? (uint32_t)cap : s->p.max_model_len + 1;
}

/* One allocation for the group and its arrays; NULL when out of memory (or too large). */
static struct duet__group *group_alloc(const duet_scheduler *s, const duet_sched_request *r)
{
    uint32_t n_alloc = r->n <= s->p.max_num_seqs ? r->n : 1, cap = tokens_cap(s, r);
    size_t seqs = align8(sizeof(struct duet__group)), res = seqs + sizeof(struct duet__sseq) * r->n;
    size_t stop = align8(res + sizeof(duet_sched_seq_result) * r->n);
    size_t prompt = stop + sizeof(int32_t) * r->num_stop_token_ids;
    size_t toks = align8(prompt + sizeof(int32_t) * r->prompt_len);
    struct duet__group *g;
    char *base;

    if ((uint64_t)n_alloc * cap > (SIZE_MAX - toks) / sizeof(int32_t) / 2)
        return NULL;
    base = calloc(1, toks + sizeof(int32_t) * (size_t)n_alloc * cap);
    if (!base)
        return NULL;
    g = (struct duet__group *)base;
    g->seqs = (struct duet__sseq *)(base + seqs);
    g->results = (duet_sched_seq_result *)(base + res);
    g->stop_ids = (int32_t *)(base + stop);
    g->prompt = (int32_t *)(base + prompt);
    for (uint32_t i = 0; i < n_alloc; i++)
        g->seqs[i].tokens = (int32_t *)(base + toks) + (size_t)i * cap;
    g->n_alloc = n_alloc;
    g->tokens_cap = cap;
    return g;
}

static void group_init(duet_scheduler *s, struct duet__group *g, const duet_sched_request *r)
{
    struct duet__sseq *q0 = &g->seqs[0];

    g->request_id = r->request_id;
    g->seq_base = s->next_seq_id;
    s->next_seq_id += r->n;
    g->arrival_time = r->arrival_time;
    g->sampling = r->sampling;
    g->priority = r->priority;
    g->n = r->n;
    g->n_seqs = g->n_live = g->n_prefill = 1;
    g->prompt_len = r->prompt_len;
    g->max_tokens = r->max_tokens;
    g->num_stop = r->num_stop_token_ids;
    g->ignore_eos = r->ignore_eos;
    g->spec_disabled = r->spec_disabled;
    g->queue = DUET__Q_NONE;
    if (r->num_stop_token_ids)
        memcpy(g->stop_ids, r->stop_token_ids, sizeof(int32_t) * r->num_stop_token_ids);
    memcpy(g->prompt, r->prompt, sizeof(int32_t) * r->prompt_len);
    for (uint32_t i = 0; i < r->n; i++)
        g->seqs[i] = (struct duet__sseq){
            .id = g->seq_base + i, .tokens = g->seqs[i].tokens, .stop_token = -1, .prefill = true};
    memcpy(q0->tokens, r->prompt, sizeof(int32_t) * r->prompt_len);
    q0->len = r->prompt_len;
}

static bool grow(void **arr, uint32_t *cap, uint64_t need, size_t elem)
{
    uint64_t c = *cap ? *cap : 16;
    void *a;

    if (need <= *cap)
        return true;
    while (c < need)
        c *= 2;
    if (c > UINT32_MAX || c > SIZE_MAX / elem)
        return false;
    a = realloc(*arr, (size_t)c * elem);
    if (!a)
        return false;
    *arr = a;
    *cap = (uint32_t)c;
    return true;
}

/* Room, before the group joins, for everything a step or an update may need: the output arrays
 * at their largest, the scratch ids, the map entries. */
static duet_status reserve_for(duet_scheduler *s, const struct duet__group *g)
{
    uint32_t most = s->p.max_num_seqs;
    uint64_t groups = (uint64_t)s->num_groups + 1, seqs = (uint64_t)s->num_live_seqs + g->n_alloc;
    uint32_t scratch_cap = s->scratch_cap;

    if (!grow((void **)&s->groups, &s->groups_cap, groups < most ? groups : most,
              sizeof(*s->groups)) ||
        !grow((void **)&s->oseqs, &s->oseqs_cap, seqs < most ? seqs : most, sizeof(*s->oseqs)) ||
        !grow((void **)&s->ignored, &s->ignored_cap, groups, sizeof(*s->ignored)) ||
        !grow((void **)&s->ids, &scratch_cap, seqs, sizeof(*s->ids)) ||
        !grow((void **)&s->n_new, &s->scratch_cap, seqs, sizeof(*s->n_new)) ||
        duet__sched_map_reserve(&s->requests, 1) ||
        duet__sched_map_reserve(&s->seq_map, g->n_alloc))
        return DUET_STATUS_OUT_OF_MEMORY;
    return DUET_STATUS_OK;
}

duet_status duet_scheduler_add(duet_scheduler *s, const duet_sched_request *r)
{
    struct duet__group *g;

    if (!s || !r)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (check_request(s, r))
        return DUET_STATUS_INVALID_ARGUMENT;
    g = group_alloc(s, r);
    if (!g)
        return duet__sched_fail(s, DUET_STATUS_OUT_OF_MEMORY, "request %" PRIu64 ": out of memory",
                                r->request_id);
    if (reserve_for(s, g)) {
        free(g);
        return duet__sched_fail(s, DUET_STATUS_OUT_OF_MEMORY, "request %" PRIu64 ": out of memory",
                                r->request_id);
    }
    group_init(s, g, r);
    duet__sched_map_put(&s->requests, g->request_id, g);
    for (uint32_t i = 0; i < g->n_alloc; i++)
        duet__sched_map_put(&s->seq_map, g->seq_base + i, g);
    duet__queue_push_back(s, DUET__Q_WAITING, g);
    s->num_groups++;
    s->num_live_seqs += g->n_alloc;
    s->stats.requests_added++;
    return DUET_STATUS_OK;
}

/* ---- finishing --------------------------------------------------------------------------- */

void duet__sched_free_tables(duet_scheduler *s, struct duet__group *g)
{
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        if (q->has_table) {
            duet_block_manager_free(s->bm, q->id);
            s->num_partial -= q->prefill && !q->finish;
        }
        q->has_table = false;
        q->table_tokens = 0;
    }
    g->allocated = false;
}

void duet__sched_finish_group(duet_scheduler *s, struct duet__group *g, duet_sched_finish f)
{
    duet__queue_remove(s, g);
    duet__sched_free_tables(s, g);
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        struct duet__sseq *q = &g->seqs[i];

        if (q->samples) {
            q->samples = 0;
            s->num_pending--;
        }
        if (!q->finish)
            q->finish = (uint8_t)f;
    }
    g->pending = 0;
    g->n_live = g->n_prefill = 0;
    g->finish = (uint8_t)(f ? f : g->seqs[0].finish);
    s->num_groups--;
    s->num_live_seqs -= g->n_alloc;
    if (f == DUET_SCHED_FINISH_ABORT)
        s->stats.requests_aborted++;
    else if (f == DUET_SCHED_FINISH_IGNORED)
        s->stats.requests_ignored++;
    else
        s->stats.requests_finished++;
    duet__queue_push_back(s, DUET__Q_FINISHED, g);
}

void duet_scheduler_params_get(const duet_scheduler *s, duet_scheduler_params *out)
{
    *out = s->p;
}

duet_status duet_scheduler_abort(duet_scheduler *s, uint64_t request_id)
{
    struct duet__group *g;

    if (!s)
        return DUET_STATUS_INVALID_ARGUMENT;
    g = duet__sched_map_get(&s->requests, request_id);
    if (!g)
        return duet__sched_fail(s, DUET_STATUS_NOT_FOUND, "request %" PRIu64 ": unknown",
                                request_id);
    if (g->queue != DUET__Q_FINISHED)
        duet__sched_finish_group(s, g, DUET_SCHED_FINISH_ABORT);
    return DUET_STATUS_OK;
}

/* Forgets g's ids (they may be reused from now on); its memory goes on the next take. */
static void forget(duet_scheduler *s, struct duet__group *g)
{
    duet__sched_map_del(&s->requests, g->request_id);
    for (uint32_t i = 0; i < g->n_alloc; i++)
        duet__sched_map_del(&s->seq_map, g->seq_base + i);
}

bool duet_scheduler_take_finished(duet_scheduler *s, duet_sched_result *out)
{
    struct duet__group *g;

    if (!s || !out)
        return false;
    free(s->taken);
    s->taken = NULL;
    g = s->q[DUET__Q_FINISHED].head;
    if (!g)
        return false;
    duet__queue_remove(s, g);
    forget(s, g);
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        const struct duet__sseq *q = &g->seqs[i];
        uint32_t out_len = q->len > g->prompt_len ? q->len - g->prompt_len : 0;

        g->results[i] = (duet_sched_seq_result){.seq_id = q->id,
                                                .output = q->tokens + g->prompt_len,
                                                .num_output = out_len,
                                                .finish = (duet_sched_finish)q->finish,
                                                .stop_token = q->stop_token};
    }
    *out = (duet_sched_result){.request_id = g->request_id,
                               .finish = (duet_sched_finish)g->finish,
                               .ignore = (duet_sched_ignore)g->ignore,
                               .prompt = g->prompt,
                               .prompt_len = g->prompt_len,
                               .seqs = g->results,
                               .num_seqs = g->n_seqs,
                               .num_preemptions = g->num_preemptions,
                               .arrival_time = g->arrival_time,
                               .first_scheduled_time = g->scheduled_ever ? g->first_scheduled : 0};
    s->taken = g;
    return true;
}

/* ---- queries ----------------------------------------------------------------------------- */

static duet_sched_state state_of(const struct duet__group *g)
{
    switch (g->queue) {
    case DUET__Q_RUNNING:
        return DUET_SCHED_STATE_RUNNING;
    case DUET__Q_SWAPPED:
        return DUET_SCHED_STATE_SWAPPED;
    case DUET__Q_FINISHED:
        return DUET_SCHED_STATE_FINISHED;
    default:
        return DUET_SCHED_STATE_WAITING;
    }
}

duet_status duet_scheduler_request_info(const duet_scheduler *s, uint64_t request_id,
                                        duet_sched_request_info *out)
{
    const struct duet__group *g;
    const struct duet__sseq *q;

    if (!s || !out)
        return DUET_STATUS_INVALID_ARGUMENT;
    g = duet__sched_map_get(&s->requests, request_id);
    if (!g)
        return DUET_STATUS_NOT_FOUND;
    q = &g->seqs[0];
    *out = (duet_sched_request_info){.state = state_of(g),
                                     .finish = (duet_sched_finish)g->finish,
                                     .num_seqs = g->n_seqs,
                                     .num_live_seqs = g->n_live,
                                     .num_tokens = q->len,
                                     .num_computed_tokens = q->num_computed,
                                     .num_output_tokens = q->len - g->prompt_len,
                                     .num_preemptions = g->num_preemptions,
                                     .spec_disabled = g->spec_disabled};
    return DUET_STATUS_OK;
}

duet_status duet_scheduler_set_spec_disabled(duet_scheduler *s, uint64_t request_id, bool disabled)
{
    struct duet__group *g;

    if (!s)
        return DUET_STATUS_INVALID_ARGUMENT;
    g = duet__sched_map_get(&s->requests, request_id);
    if (!g)
        return duet__sched_fail(s, DUET_STATUS_NOT_FOUND, "request %" PRIu64 ": unknown",
                                request_id);
    g->spec_disabled = disabled;
    return DUET_STATUS_OK;
}

uint32_t duet_scheduler_num_waiting(const duet_scheduler *s)
{
    return s ? s->q[DUET__Q_WAITING].n : 0;
}

uint32_t duet_scheduler_num_running(const duet_scheduler *s)
{
    return s ? s->q[DUET__Q_RUNNING].n : 0;
}

uint32_t duet_scheduler_num_swapped(const duet_scheduler *s)
{
    return s ? s->q[DUET__Q_SWAPPED].n : 0;
}

bool duet_scheduler_has_unfinished(const duet_scheduler *s)
{
    return s && s->num_groups > 0;
}

void duet_scheduler_stats_get(const duet_scheduler *s, duet_scheduler_stats *out)
{
    if (s && out)
        *out = s->stats;
}

const char *duet_sched_finish_str(duet_sched_finish f)
{
    static const char *const names[] = {"none", "stop", "length", "abort", "ignored"};

    return (unsigned)f < sizeof(names) / sizeof(names[0]) ? names[f] : "unknown";
}

const char *duet_sched_ignore_str(duet_sched_ignore i)
{
    static const char *const names[] = {"none", "prompt too long", "cannot fit", "swap infeasible"};

    return (unsigned)i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown";
}
