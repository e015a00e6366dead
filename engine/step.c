/*
 * step.c — one engine step (docs/engine.md, "One step"), the top of the step's calls
 * (engine-int.h has the map):
 *
 *     duet_scheduler_step ─► plain (here) or speculative (spec.c) ─► end the requests the
 *       workers failed ─► take_finished, retire ─► step output
 *
 * The plain path is batch.c's batch, the target's execute() (run.c), the draft fed the same
 * tokens (spec.c) and commit.c. Decode steps with lookahead slots and a draft speculate instead.
 */
#include "build_config.h"

#include "engine-int.h"

#include <string.h>

/* Plain decoding: the target alone runs the batch and samples one token per sampling sequence;
 * the draft, when there is one, is fed the same tokens so that its cache stays in step. With the
 * draft thread the draft's feed runs beside the target's execute() (docs/engine.md, "Overlap"),
 * and both are waited for before anything is committed. */
static duet_status run_plain(duet_engine *e, const duet_sched_output *so)
{
    duet_batch b;
    duet_batch_output o;
    uint64_t t0 = 0, t1 = 0;
    duet_status st = duet__batch_plain(e, so, &b, &o), st_d = DUET_STATUS_OK;

    if (!st && e->n_workers > 1)
        st = duet__spec_draft_prefill(e, so);
    if (!st) {
        t0 = duet__now_ns();
        st = duet__worker_run(e, 0, &b, &o);
        t1 = duet__now_ns();
    }
    if (e->n_workers > 1)
        st_d = duet__spec_draft_prefill_wait(e, t0, t1); /* always: its buffers must be idle */
    st = st ? st : st_d;
    if (!st && (b.flags & DUET_BATCH_WANT_PROMPT_LOGPROBS))
        duet__commit_prompt_lp(e, so->num_seqs, b.max_logprobs);
    if (!st)
        st = duet__commit_rows(e, so->num_seqs, b.max_logprobs);
    return st;
}

static void output_of(const struct duet__req *r, duet_request_output *o)
{
    const struct duet__seqrec *s0 = &r->seqs[0];
    bool lp = r->sampling.n_logprobs > 0;

    for (uint32_t i = 0; i < r->n; i++) {
        const struct duet__seqrec *s = &r->seqs[i];
        r->outs[i] = (duet_completion_output){.index = i,
                                              .ids = s->ids,
                                              .n_ids = s->n_ids,
                                              .first_new = s->first_new,
                                              .finish = s->finish,
                                              .token_logprobs = lp ? s->token_logprobs : NULL,
                                              .logprobs = lp ? s->logprobs : NULL};
    }
    *o =
        (duet_request_output){.request_id = r->id,
                              .prompt = r->prompt,
                              .n_prompt = r->n_prompt,
                              .ids = s0->ids,
                              .n_ids = s0->n_ids,
                              .first_new = s0->first_new,
                              .finish = r->finish,
                              .token_logprobs = lp ? s0->token_logprobs : NULL,
                              .logprobs = lp ? s0->logprobs : NULL,
                              .n_logprobs = r->sampling.n_logprobs,
                              .prompt_token_logprobs = r->prompt_lp,
                              .prompt_logprobs = r->prompt_top,
                              .n_prompt_logprobs = r->prompt_lp ? r->sampling.n_prompt_logprobs : 0,
                              .num_preemptions = r->num_preemptions,
                              .num_proposed = r->proposed,
                              .num_accepted = r->accepted,
                              .error = r->error,
                              .outputs = r->outs,
                              .n_outputs = r->n,
                              .num_drafts = r->drafts,
                              .accepted_at = r->accepted_at};
}

/* Collects finished requests, then lists every request that has news. */
static duet_status collect(duet_engine *e)
{
    duet_sched_result res;
    uint32_t n = 0, cap = e->sc.cap_out;
    duet_status st = DUET_STATUS_OK;

    while (!st && duet_scheduler_take_finished(e->sched, &res))
        st = duet__commit_retire(e, &res);
    if (st)
        return st;
    if (!duet__grow((void **)&e->sc.out, &cap, e->n_reqs + e->n_retired, sizeof(*e->sc.out)))
        return duet__engine_fail(e, DUET_STATUS_OUT_OF_MEMORY, "out of memory");
    e->sc.cap_out = cap;
    for (uint32_t i = 0; i < e->n_retired; i++)
        output_of(e->retired[i], &e->sc.out[n++]);
    for (uint32_t i = 0; i < e->n_reqs; i++)
        if (e->reqs[i]->touched)
            output_of(e->reqs[i], &e->sc.out[n++]);
    e->step_out.requests = e->sc.out;
    e->step_out.n_requests = n;
    return DUET_STATUS_OK;
}

static void step_begin(duet_engine *e)
{
    for (uint32_t i = 0; i < e->n_retired; i++)
        duet__req_free(e->retired[i]);
    e->n_retired = 0;
    for (uint32_t i = 0; i < e->n_reqs; i++) {
        struct duet__req *r = e->reqs[i];
        r->touched = false;
        for (uint32_t j = 0; j < r->n; j++)
            r->seqs[j].first_new = r->seqs[j].n_ids;
    }
    memset(&e->step_out, 0, sizeof(e->step_out));
}

/* A decode step with lookahead slots and a draft speculates, unless it runs more sequences than
 * speculative.disable_by_batch_size: then the target decodes alone and the draft is only fed, so
 * its cache stays in step for when speculation resumes. */
static bool spec_step(duet_engine *e, const duet_sched_output *so)
{
    if (e->n_workers < 2 || so->num_lookahead_slots == 0 || so->num_prefill_groups > 0 ||
        so->num_seqs == 0)
        return false;
    if (e->disable_by_batch_size && so->num_seqs > e->disable_by_batch_size) {
        e->m.disabled_steps++;
        return false;
    }
    return true;
}

duet_status duet__engine_step(duet_engine *e, const duet_step_output **out)
{
    const duet_sched_output *so;
    duet_status st;

    step_begin(e);
    st = duet_scheduler_step(e->sched, duet__now_ns(), &so);
    if (st)
        return duet__engine_fail(e, st, "scheduler: %s", duet_scheduler_error(e->sched));
    e->step_out.num_seqs = so->num_seqs;
    e->step_out.num_batched_tokens = so->num_batched_tokens;
    e->step_out.num_preempted = so->num_preempted;
    e->step_out.is_prefill = so->is_prefill;
    e->m.preemptions += so->num_preempted;
    if (so->num_seqs || so->num_swap_in || so->num_swap_out || so->num_copy) {
        if (so->num_seqs)
            e->m.steps++;
        if (spec_step(e, so))
            st = duet__spec_decode(e, so);
        else
            st = run_plain(e, so);
    }
    if (!st)
        st = duet__commit_failed(e);
    if (!st)
        st = collect(e);
    *out = &e->step_out;
    return st;
}
