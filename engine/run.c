/*
 * run.c — every call into a worker's execute() (engine-int.h has the map): duet__worker_run on
 * the step loop's thread, and the draft thread of DESIGN §7.5 (docs/engine.md, "Overlap"). Calls
 * only util.c.
 *
 * When the target and the draft live on different devices the engine owns one extra thread that
 * makes every call into the draft worker, so that the step loop can run the target meanwhile:
 *
 *     step loop (main thread)                    draft thread
 *     ───────────────────────                    ────────────
 *     draft_post(job) ── mu, pending = true ──►  wakes, runs execute(draft, job) unlocked
 *     execute(target, ...)                       ...
 *     draft_wait()   ◄── mu, pending = false ──  stores status, message, busy interval
 *
 * One job at most is in flight: the step loop always waits for it before it reads the job's
 * outputs, posts another or returns, so the draft worker is only ever called from this thread and
 * the target only from the step loop's (plugin.h's threading rule). Every field of struct
 * duet__draft_thread but `thread` is guarded by `mu`; the job's batch and output buffers belong
 * to the step loop and are only touched by the draft thread between post and wait. The thread
 * is created with the engine (when overlap is in use) and joined by duet_engine_destroy().
 */
#include "build_config.h"

#include "engine-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct duet__draft_thread {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* broadcast on post, on completion and on quit */
    bool quit;             /* destroy asks the thread to end */
    bool pending;          /* a job is posted and not finished */
    const duet_batch *b;   /* the job, owned by the step loop */
    duet_batch_output *o;  /* its output, owned by the step loop */
    duet_status st;        /* the job's result */
    uint64_t t0_ns, t1_ns; /* the job's execute() interval (CLOCK_MONOTONIC) */
    char msg[512];         /* the draft's last_error() when st fails */
};

static void *draft_main(void *arg)
{
    duet_engine *e = arg;
    struct duet__draft_thread *dt = e->dt;
    struct duet__eworker *wk = &e->workers[1];

    pthread_mutex_lock(&dt->mu);
    for (;;) {
        const duet_batch *b;
        duet_batch_output *o;
        duet_status st;
        uint64_t t0, t1;

        while (!dt->quit && !dt->pending)
            pthread_cond_wait(&dt->cv, &dt->mu);
        if (dt->quit)
            break;
        b = dt->b;
        o = dt->o;
        pthread_mutex_unlock(&dt->mu);
        t0 = duet__now_ns();
        st = wk->t->execute(wk->w, b, o);
        t1 = duet__now_ns();
        pthread_mutex_lock(&dt->mu);
        if (st)
            snprintf(dt->msg, sizeof(dt->msg), "%s", wk->t->last_error(wk->w));
        dt->st = st;
        dt->t0_ns = t0;
        dt->t1_ns = t1;
        dt->pending = false;
        pthread_cond_broadcast(&dt->cv);
    }
    pthread_mutex_unlock(&dt->mu);
    return NULL;
}

duet_status duet__draft_thread_start(duet_engine *e)
{
    struct duet__draft_thread *dt = calloc(1, sizeof(*dt));
    int rc;

    if (!dt)
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    if (pthread_mutex_init(&dt->mu, NULL))
        goto out_free;
    if (pthread_cond_init(&dt->cv, NULL))
        goto out_mutex;
    e->dt = dt;
    rc = pthread_create(&dt->thread, NULL, draft_main, e);
    if (rc == 0)
        return DUET_STATUS_OK;
    e->dt = NULL;
    pthread_cond_destroy(&dt->cv);
out_mutex:
    pthread_mutex_destroy(&dt->mu);
out_free:
    free(dt);
    return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY,
                             "speculative.overlap: cannot start the draft thread");
}

void duet__draft_thread_stop(duet_engine *e)
{
    struct duet__draft_thread *dt = e->dt;

    if (!dt)
        return;
    pthread_mutex_lock(&dt->mu);
    dt->quit = true;
    pthread_cond_broadcast(&dt->cv);
    pthread_mutex_unlock(&dt->mu);
    pthread_join(dt->thread, NULL);
    pthread_cond_destroy(&dt->cv);
    pthread_mutex_destroy(&dt->mu);
    free(dt);
    e->dt = NULL;
}

/* Hands the draft worker one execute() of b into o, which the caller keeps alive until
 * duet__draft_wait. */
void duet__draft_post(duet_engine *e, const duet_batch *b, duet_batch_output *o)
{
    struct duet__draft_thread *dt = e->dt;

    pthread_mutex_lock(&dt->mu);
    dt->b = b;
    dt->o = o;
    dt->st = DUET_STATUS_OK;
    dt->pending = true;
    pthread_cond_broadcast(&dt->cv);
    pthread_mutex_unlock(&dt->mu);
}

/* Blocks until the posted job is done, adds its seconds to draft_s and those inside the target's
 * interval [t0_ns, t1_ns) (0, 0: none) to overlap_s, and returns its status (a failure is named
 * in e->error). */
duet_status duet__draft_wait(duet_engine *e, uint64_t t0_ns, uint64_t t1_ns)
{
    struct duet__draft_thread *dt = e->dt;
    uint64_t lo, hi;
    duet_status st;

    pthread_mutex_lock(&dt->mu);
    while (dt->pending)
        pthread_cond_wait(&dt->cv, &dt->mu);
    st = dt->st;
    e->m.draft_s += (double)(dt->t1_ns - dt->t0_ns) * 1e-9;
    lo = dt->t0_ns > t0_ns ? dt->t0_ns : t0_ns;
    hi = dt->t1_ns < t1_ns ? dt->t1_ns : t1_ns;
    if (hi > lo)
        e->m.overlap_s += (double)(hi - lo) * 1e-9;
    if (st)
        duet__engine_fail(e, st, "draft worker: execute: %s", dt->msg);
    pthread_mutex_unlock(&dt->mu);
    return st;
}

duet_status duet__worker_run(duet_engine *e, uint32_t which, const duet_batch *b,
                             duet_batch_output *o)
{
    struct duet__eworker *wk = &e->workers[which];
    double t0, dt;
    duet_status st;

    if (which == 1 && e->dt) { /* with overlap only the draft thread calls the draft */
        duet__draft_post(e, b, o);
        return duet__draft_wait(e, 0, 0);
    }
    t0 = duet__now_s();
    st = wk->t->execute(wk->w, b, o);
    dt = duet__now_s() - t0;
    if (which == 0)
        e->m.execute_s += dt;
    else
        e->m.draft_s += dt;
    if (st)
        return duet__engine_fail(e, st, "%s worker: execute: %s", which ? "draft" : "target",
                                 wk->t->last_error(wk->w));
    return DUET_STATUS_OK;
}

/* The target scores what the draft proposed: each sequence's proposals of [lo, hi) follow its
 * last token in the target's fed tokens. Returns whether every proposal was finite. */
static bool feed_proposals(struct duet__spec *sb, uint32_t lo, uint32_t hi)
{
    bool finite = true;

    for (uint32_t i = lo; i < hi; i++) {
        int32_t *f = &sb->feed[sb->ss[i].trow + 1];

        memcpy(f, &sb->dtok[sb->ss[i].drow], sb->ss[i].k * sizeof(int32_t));
        for (uint32_t j = 0; j < sb->ss[i].k; j++) {
            finite = finite && f[j] >= 0;
            f[j] = f[j] < 0 ? 0 : f[j]; /* a failed draft row: scored, then dropped */
        }
    }
    return finite;
}

#define AHEAD_EMA_W 0.25 /* weight of the newest measurement in the ahead job's averages */

static void ahead_ema(double *avg, double x)
{
    *avg = *avg <= 0 ? x : *avg + AHEAD_EMA_W * (x - *avg);
}

/* The draft's propose of part a, timed per forward pass when a is sequence 0 alone (the pass
 * time that ahead_plan sizes the next ahead windows with). */
static duet_status propose(duet_engine *e, struct duet__spec_part *a)
{
    struct duet__spec *sb = e->spec;
    double d0 = e->m.draft_s;
    duet_status st = duet__worker_run(e, 1, &a->propose, &a->propose_out);
    uint32_t k = sb->ss[a->lo].k;

    if (!st && a->lo == 0 && a->hi == 1 && k > 0 && e->m.draft_s > d0)
        ahead_ema(&sb->ahead.pass_s, (e->m.draft_s - d0) / k);
    return st;
}

/* Runs the target's score of part s with the ahead job beside it (posted by the caller), waits
 * for both, and measures the score's seconds and the job's seconds per draft pass. */
static duet_status score_beside_ahead(duet_engine *e, struct duet__spec_part *s)
{
    struct duet__ahead *ah = &e->spec->ahead;
    double d0 = e->m.draft_s;
    uint64_t t0 = duet__now_ns(), t1;
    duet_status st = duet__worker_run(e, 0, &s->score, &s->score_out), st_a;

    t1 = duet__now_ns();
    st_a = duet__draft_wait(e, t0, t1); /* always: the job's buffers must be idle */
    ah->ran = true;
    e->m.ahead_windows++;
    ahead_ema(&ah->beside_s, (double)(t1 - t0) * 1e-9);
    if (e->m.draft_s > d0)
        ahead_ema(&ah->pass_s, (e->m.draft_s - d0) / (ah->n + 1));
    return st ? st : st_a;
}

/* The target's score of part s without an ahead job, timed as the call an ahead job would run
 * beside when the draft thread exists. */
static duet_status score_alone(duet_engine *e, struct duet__spec_part *s)
{
    uint64_t t0 = duet__now_ns();
    duet_status st = duet__worker_run(e, 0, &s->score, &s->score_out);

    if (!st && e->dt)
        ahead_ema(&e->spec->ahead.beside_s, (double)(duet__now_ns() - t0) * 1e-9);
    return st;
}

/*
 * Propose (unless the proposals are held from draft-ahead), then score, for the whole batch.
 * With the draft thread and an ahead job (docs/engine.md, "Draft-ahead") the draft drafts the
 * next window while the target scores this one:
 *
 *     draft:   propose(N) │ ahead(N+1)  │
 *     target:             │ score(N)    │ verify
 *
 * and propose(N) is skipped when window N was drafted ahead in the previous step.
 */
static duet_status run_serial(duet_engine *e, struct duet__spec_part *a)
{
    struct duet__spec *sb = e->spec;
    struct duet__ahead *ah = &sb->ahead;
    duet_status st = DUET_STATUS_OK;
    bool finite;

    ah->ran = false;
    if (a->proposed)
        st = propose(e, a);
    if (st)
        return st;
    finite = feed_proposals(sb, a->lo, a->hi);
    if (!e->dt || !ah->n || !finite)
        return score_alone(e, a);
    duet__draft_post(e, &ah->b, &ah->o);
    e->m.overlap_steps++;
    return score_beside_ahead(e, a);
}

/*
 * The overlap (DESIGN §7.5): halves A = [0, h) and B = [h, n), each sequence's work independent
 * of the others' (own block table, own draws), so the order changes no token:
 *
 *     draft:   propose(A) │ propose(B)  │ ahead(A)
 *     target:             │ score(A)    │ score(B)
 *
 * When A is one sequence its next window is drafted ahead beside score(B) (the draft is idle
 * there otherwise), and propose(A) is skipped when A's window was drafted ahead in the previous
 * step: the target then starts scoring at once. The step's cache operations go with the first
 * call on each worker (A's batches; a held window is only used in a step without them).
 */
static duet_status run_overlapped(duet_engine *e, struct duet__spec_part *a,
                                  struct duet__spec_part *b)
{
    struct duet__ahead *ah = &e->spec->ahead;
    uint64_t t0, t1;
    duet_status st = DUET_STATUS_OK, st_b;
    bool finite;

    ah->ran = false;
    if (a->proposed)
        st = propose(e, a);
    if (st)
        return st;
    duet__draft_post(e, &b->propose, &b->propose_out);
    finite = feed_proposals(e->spec, a->lo, a->hi);
    t0 = duet__now_ns();
    st = duet__worker_run(e, 0, &a->score, &a->score_out);
    t1 = duet__now_ns();
    /* Always waited for: B's buffers must be idle before anything returns. */
    st_b = duet__draft_wait(e, t0, t1);
    e->m.overlap_steps++;
    if (st || st_b)
        return st ? st : st_b;
    feed_proposals(e->spec, b->lo, b->hi);
    if (!ah->n || !finite)
        return score_alone(e, b);
    duet__draft_post(e, &ah->b, &ah->o);
    return score_beside_ahead(e, b);
}

duet_status duet__run_spec(duet_engine *e, struct duet__spec_part *parts, uint32_t n_parts)
{
    return n_parts == 2 ? run_overlapped(e, &parts[0], &parts[1]) : run_serial(e, &parts[0]);
}
