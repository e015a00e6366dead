/*
 * execute() of the GPU worker (plugin.h: duet_batch, duet_batch_output; worker.h).
 *
 *   check ─► duet_kit_batch_check, as every worker: nothing is touched before the batch is valid
 *   cache ─► swap_in (pinned host → device), swap_out, copy (device → device): one
 *            cudaMemcpyAsync per block and rank, on the rank's stream, in that order
 *   feed  ─► the plan (plan.c) of every fed token in one pinned arena, copied to every rank;
 *            one forward per rank; rank 0 gathers the logits of the rows that need them,
 *            samples on the device and copies the rows back in one pinned buffer
 *   draft ─► step s = 1 .. max n_draft_steps: one row per sequence still drafting, fed the token
 *            its previous row sampled, at the next position
 *
 * Row bookkeeping is the worker kit's (duet_kit_rows): output row o of sequence i is
 * row_base(i) + o, its token chosen at position pos + (fed index) + 1; prompt log-probabilities
 * go to the fed row's global index. The step's buffers, host and device, are this file's: it
 * grows them and frees them (duet__gpu_scratch_free, duet__gpu_host_scratch_free).
 */
#include "build_config.h"

#include "worker.h"

#include "sampling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define fail duet__gpu_fail

/* What a forward job needs: the plan (its arena is w->h_arena) and the batch's wishes. */
struct step {
    duet_gpu_plan p;
    const duet_batch *b;
    bool want_probs;
    uint32_t max_top;
    bool penalized;   /* a row has penalties: sample the penalised copy (see sample()) */
    uint32_t n_edits; /* duet_gpu_penalty_edit entries in the arena */
    size_t off_edits; /* their offset in the arena (after the plan) */
};

/* ---- device scratch ---------------------------------------------------------------------- */

void duet__gpu_scratch_free(duet_gpu_rank *r)
{
    duet_gpu_scratch *s = &r->s;

    cudaFree(s->x), cudaFree(s->e), cudaFree(s->h), cudaFree(s->qkv), cudaFree(s->att);
    cudaFree(s->mlp), cudaFree(s->act), cudaFree(s->final), cudaFree(s->final_t);
    cudaFree(s->logits), cudaFree(s->gathered), cudaFree(s->all_logits);
    cudaFree(s->part_out), cudaFree(s->part_ml), cudaFree(s->arena);
    cudaFree(s->tokens), cudaFree(s->probs), cudaFree(s->token_logprob);
    cudaFree(s->next_logprob), cudaFree(s->top), cudaFree(s->pen_logits), cudaFree(s->tokens2);
    memset(s, 0, sizeof(*s));
}

/* Replaces *p by a device array of bytes (at least 1). */
static cudaError_t dgrow(void **p, size_t bytes)
{
    cudaFree(*p);
    *p = NULL;
    return cudaMalloc(p, bytes > 0 ? bytes : 1);
}

#define DGROW(r, ptr, bytes) GPU_TRY((r), dgrow((void **)&(ptr), (bytes)))

static uint32_t wide_of(const duet_model_desc *d)
{
    uint32_t w = d->arch == DUET_ARCH_OPT ? d->word_embed_proj_dim : d->hidden_size;

    return w > d->hidden_size ? w : d->hidden_size;
}

/* Makes r's scratch hold the step. */
static duet_status scratch_grow(duet_gpu_rank *r, const struct step *st)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    duet_gpu_scratch *s = &r->s;
    size_t es = duet__gpu_dtype_size(w->dt), hd = d->head_dim, wide = wide_of(d);
    size_t qn = r->sh.n_heads * hd, qkv = qn + 2 * r->sh.n_kv_heads * hd, in = r->sh.n_inter;
    size_t rows = st->p.n_rows, out = st->p.n_out, V = d->vocab_size, vp = r->sh.vocab_pad;
    size_t parts = (size_t)st->p.n_dec * r->sh.n_heads * st->p.max_parts;

    if (rows > s->rows) {
        s->rows = 0;
        DGROW(r, s->x, rows * d->hidden_size * sizeof(float));
        DGROW(r, s->e, rows * wide * sizeof(float));
        DGROW(r, s->h, rows * wide * es);
        DGROW(r, s->qkv, rows * qkv * sizeof(float));
        DGROW(r, s->att, rows * qn * es);
        DGROW(r, s->mlp, rows * 2 * in * sizeof(float));
        DGROW(r, s->act, rows * in * es);
        s->rows = rows;
    }
    if (out > s->out_rows || st->max_top > s->top_cap) {
        size_t top = st->max_top > s->top_cap ? st->max_top : s->top_cap;

        out = out > s->out_rows ? out : s->out_rows;
        s->out_rows = 0;
        DGROW(r, s->final, out * wide * sizeof(float));
        DGROW(r, s->final_t, out * wide * es);
        DGROW(r, s->logits, out * vp * sizeof(float));
        if (w->tp > 1) {
            DGROW(r, s->gathered, (size_t)w->tp * out * vp * sizeof(float));
            DGROW(r, s->all_logits, out * V * sizeof(float));
        }
        if (r->index == 0) {
            DGROW(r, s->tokens, out * sizeof(int32_t));
            DGROW(r, s->probs, out * V * sizeof(float));
            DGROW(r, s->token_logprob, out * sizeof(float));
            DGROW(r, s->next_logprob, out * sizeof(float));
            DGROW(r, s->top, out * (top ? top : 1) * sizeof(duet_logprob));
            DGROW(r, s->pen_logits, out * V * sizeof(float));
            DGROW(r, s->tokens2, out * sizeof(int32_t));
        }
        s->out_rows = out;
        s->top_cap = (uint32_t)top;
    }
    if (parts * hd > s->parts) {
        s->parts = 0;
        DGROW(r, s->part_out, parts * hd * sizeof(float));
        DGROW(r, s->part_ml, parts * 2 * sizeof(float));
        s->parts = parts * hd;
    }
    if (st->p.bytes > s->arena_bytes) {
        s->arena_bytes = 0;
        DGROW(r, s->arena, st->p.bytes);
        s->arena_bytes = st->p.bytes;
    }
    return DUET_STATUS_OK;
}

/* ---- the forward of one rank --------------------------------------------------------------- */

#define GEMM(mat, x, xs, m, y, ys, beta)                                                           \
    do {                                                                                           \
        duet_status g_ = duet__gpu_gemm(r, (mat), (x), (xs), (m), (y), (ys), (beta));              \
        if (g_)                                                                                    \
            return g_;                                                                             \
    } while (0)
#define ALLREDUCE(x, count)                                                                        \
    do {                                                                                           \
        duet_status a_ = duet__gpu_allreduce(r, (x), (count));                                     \
        if (a_)                                                                                    \
            return a_;                                                                             \
    } while (0)

/* Norm of the layer (or the final one) from x (f32, stride xs) into y of y_dt. */
static cudaError_t norm(duet_gpu_rank *r, const float *x, size_t xs, const float *nw,
                        const float *nb, duet_gpu_dtype y_dt, void *y, size_t ys, uint32_t rows)
{
    const duet_model_desc *d = r->w->d;

    if (d->arch == DUET_ARCH_LLAMA)
        return duet__gpu_rmsnorm(r->stream, x, xs, nw, (float)d->norm_eps, y_dt, y, ys, rows,
                                 d->hidden_size);
    return duet__gpu_layernorm(r->stream, x, xs, nw, nb, (float)d->norm_eps, y_dt, y, ys, rows,
                               d->hidden_size);
}

/* The step's arrays on the device. */
struct dplan {
    const uint32_t *tokens, *pos, *slot, *dec, *bt, *out;
    const duet_gpu_seg *segs;
    const duet_gpu_tile *tiles;
    const duet_gpu_sample_row *rows;
};

static duet_status embed(duet_gpu_rank *r, const struct dplan *dp, uint32_t rows)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    duet_gpu_scratch *s = &r->s;
    uint32_t H = d->hidden_size, wide = wide_of(d);

    if (r->project_in.w) {
        uint32_t width = d->word_embed_proj_dim;

        GPU_TRY(r, duet__gpu_gather_rows(r->stream, w->dt, r->embed, width, dp->tokens, 0, rows,
                                         s->e, wide, false));
        GPU_TRY(r, duet__gpu_convert(r->stream, s->e, wide, w->dt, s->h, wide, rows, width, false));
        GEMM(&r->project_in, s->h, wide, rows, s->x, H, 0.0f);
    } else {
        GPU_TRY(r, duet__gpu_gather_rows(r->stream, w->dt, r->embed, H, dp->tokens, 0, rows, s->x,
                                         H, false));
    }
    if (r->positions)
        GPU_TRY(r, duet__gpu_gather_rows(r->stream, w->dt, r->positions, H, dp->pos,
                                         d->position_offset, rows, s->x, H, true));
    return DUET_STATUS_OK;
}

/* x += the row-parallel product (rank 0 adds to x and the bias, the others write their partial
 * sum over x, whose old value rank 0 alone keeps), then the all-reduce. */
static duet_status row_parallel(duet_gpu_rank *r, const duet_gpu_mat *mat, const void *in,
                                size_t in_stride, uint32_t rows)
{
    uint32_t H = r->w->d->hidden_size;

    GEMM(mat, in, in_stride, rows, r->s.x, H, r->index == 0 ? 1.0f : 0.0f);
    if (mat->bias)
        GPU_TRY(r, duet__gpu_add_bias(r->stream, r->s.x, H, mat->bias, rows, H));
    ALLREDUCE(r->s.x, (size_t)rows * H);
    return DUET_STATUS_OK;
}

static duet_status attention_block(duet_gpu_rank *r, uint32_t l, const struct step *st,
                                   const struct dplan *dp)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    const duet_gpu_layer *L = &r->layers[l];
    duet_gpu_scratch *s = &r->s;
    uint32_t rows = st->p.n_rows, H = d->hidden_size, wide = wide_of(d), hd = d->head_dim;
    size_t qn = (size_t)r->sh.n_heads * hd, qkv_n = qn + 2 * (size_t)r->sh.n_kv_heads * hd;
    bool pre = d->arch == DUET_ARCH_LLAMA || d->do_layer_norm_before;
    duet_gpu_rope_args ra = {.qkv = s->qkv,
                             .stride = qkv_n,
                             .rows = rows,
                             .num_heads = r->sh.n_heads,
                             .pos = dp->pos,
                             .slot = dp->slot,
                             .inv_freq = r->inv_freq,
                             .kv = r->kv,
                             .layer = l};
    duet_gpu_attn_args aa = {.kv = r->kv,
                             .layer = l,
                             .num_heads = r->sh.n_heads,
                             .scale = (float)(1.0 / sqrt((double)hd)),
                             .q = s->qkv,
                             .q_stride = qkv_n,
                             .out = s->att,
                             .out_stride = qn,
                             .segs = dp->segs,
                             .block_tables = dp->bt,
                             .window = d->sliding_window};

    if (pre)
        GPU_TRY(r, norm(r, s->x, H, L->norm1_w, L->norm1_b, w->dt, s->h, wide, rows));
    else
        GPU_TRY(r, duet__gpu_convert(r->stream, s->x, H, w->dt, s->h, wide, rows, H, false));
    GEMM(&L->qkv, s->h, wide, rows, s->qkv, qkv_n, 0.0f);
    if (L->qkv.bias)
        GPU_TRY(r,
                duet__gpu_add_bias(r->stream, s->qkv, qkv_n, L->qkv.bias, rows, (uint32_t)qkv_n));
    if (L->q_norm)
        GPU_TRY(r, duet__gpu_head_rmsnorm(r->stream, s->qkv, qkv_n, rows, r->sh.n_heads,
                                          r->sh.n_kv_heads, hd, L->q_norm, L->k_norm,
                                          (float)d->norm_eps));
    GPU_TRY(r, duet__gpu_rope_kv_write(r->stream, &ra));
    if (st->p.n_dec)
        GPU_TRY(r, duet__gpu_attn_decode(r->stream, &aa, dp->dec, st->p.n_dec, st->p.max_parts,
                                         s->part_out, s->part_ml));
    if (st->p.n_tiles)
        GPU_TRY(r, duet__gpu_attn_prefill(r->stream, &aa, dp->tiles, st->p.n_tiles, &w->pcfg));
    {
        duet_status rs = row_parallel(r, &L->o, s->att, qn, rows);

        if (rs)
            return rs;
    }
    if (!pre)
        GPU_TRY(r, norm(r, s->x, H, L->norm1_w, L->norm1_b, DUET_GPU_F32, s->x, H, rows));
    return DUET_STATUS_OK;
}

static duet_status mlp_block(duet_gpu_rank *r, uint32_t l, uint32_t rows)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    const duet_gpu_layer *L = &r->layers[l];
    duet_gpu_scratch *s = &r->s;
    uint32_t H = d->hidden_size, wide = wide_of(d), in = r->sh.n_inter;
    bool pre = d->arch == DUET_ARCH_LLAMA || d->do_layer_norm_before;
    duet_status rs;

    if (pre)
        GPU_TRY(r, norm(r, s->x, H, L->norm2_w, L->norm2_b, w->dt, s->h, wide, rows));
    else
        GPU_TRY(r, duet__gpu_convert(r->stream, s->x, H, w->dt, s->h, wide, rows, H, false));
    if (d->arch == DUET_ARCH_LLAMA) {
        GEMM(&L->gate_up, s->h, wide, rows, s->mlp, 2 * (size_t)in, 0.0f);
        GPU_TRY(r,
                duet__gpu_silu_mul(r->stream, s->mlp, 2 * (size_t)in, w->dt, s->act, in, rows, in));
        rs = row_parallel(r, &L->down, s->act, in, rows);
    } else {
        GEMM(&L->fc1, s->h, wide, rows, s->mlp, in, 0.0f);
        GPU_TRY(r, duet__gpu_add_bias(r->stream, s->mlp, in, L->fc1.bias, rows, in));
        GPU_TRY(r, duet__gpu_convert(r->stream, s->mlp, in, w->dt, s->act, in, rows, in, true));
        rs = row_parallel(r, &L->fc2, s->act, in, rows);
    }
    if (rs)
        return rs;
    if (!pre)
        GPU_TRY(r, norm(r, s->x, H, L->norm2_w, L->norm2_b, DUET_GPU_F32, s->x, H, rows));
    return DUET_STATUS_OK;
}

/* Final norm, projection and this rank's lm_head rows for the logit rows; gathered on rank 0. */
static duet_status head(duet_gpu_rank *r, const struct step *st, const struct dplan *dp,
                        const float **logits)
{
    duet_gpu_worker *w = r->w;
    const duet_model_desc *d = w->d;
    duet_gpu_scratch *s = &r->s;
    uint32_t n = st->p.n_out, H = d->hidden_size, wide = wide_of(d), vp = r->sh.vocab_pad;

    GPU_TRY(r, duet__gpu_select_rows(r->stream, s->x, H, dp->out, n, s->final, wide, H));
    if (r->final_w)
        GPU_TRY(r, norm(r, s->final, wide, r->final_w, r->final_b, w->dt, s->final_t, wide, n));
    else
        GPU_TRY(r,
                duet__gpu_convert(r->stream, s->final, wide, w->dt, s->final_t, wide, n, H, false));
    if (r->project_out.w) {
        uint32_t width = d->word_embed_proj_dim;

        GEMM(&r->project_out, s->final_t, wide, n, s->final, wide, 0.0f);
        GPU_TRY(r, duet__gpu_convert(r->stream, s->final, wide, w->dt, s->final_t, wide, n, width,
                                     false));
    }
    GEMM(&r->lm_head, s->final_t, wide, n, s->logits, vp, 0.0f);
    *logits = s->logits;
    if (w->tp > 1) {
        duet_status gs = duet__gpu_allgather(r, s->logits, s->gathered, (size_t)n * vp);

        if (gs)
            return gs;
        if (r->index == 0)
            GPU_TRY(r, duet__gpu_unshard_logits(r->stream, s->gathered, n, vp, d->vocab_size,
                                                s->all_logits));
        *logits = s->all_logits;
    }
    return DUET_STATUS_OK;
}

/* Byte layout of w->h_out: tokens, token logprobs, next logprobs, top lists, probability rows. */
struct out_layout {
    size_t tokens, token_lp, next_lp, top, probs, bytes;
};

static struct out_layout out_layout(uint32_t n, uint32_t max_top, uint32_t vocab, bool probs)
{
    struct out_layout L;

    L.tokens = 0;
    L.token_lp = L.tokens + (size_t)n * sizeof(int32_t);
    L.next_lp = L.token_lp + (size_t)n * sizeof(float);
    L.top = L.next_lp + (size_t)n * sizeof(float);
    L.probs = L.top + (size_t)n * max_top * sizeof(duet_logprob);
    L.bytes = L.probs + (probs ? (size_t)n * vocab * sizeof(float) : 0);
    return L;
}

/*
 * Rank 0, a step with penalties (ABI minor 3): the tokens and probability rows come from a
 * penalised copy of the logit rows (the arena's edits applied to it), the log-probabilities from
 * the raw rows, as the CPU worker's duet__sample_row_penalized does:
 *
 *   logits ─copy─► pen_logits ─edits─► sampler: tokens, probs
 *   logits ─► sampler (its draws discarded): top-N, prompt log-probabilities
 *          ─► token_logprob_kernel at the tokens drawn above: token_logprob
 */
static duet_status sample_penalized(duet_gpu_rank *r, const struct step *st, const struct dplan *dp,
                                    const float *logits, const duet_gpu_sample_out *so)
{
    duet_gpu_worker *w = r->w;
    duet_gpu_scratch *s = &r->s;
    uint32_t n = st->p.n_out, V = w->d->vocab_size;
    const duet_gpu_sample_row *h_rows =
        (const duet_gpu_sample_row *)((const char *)w->h_arena.base + st->p.off_rows);
    const duet_gpu_penalty_edit *edits =
        (const duet_gpu_penalty_edit *)((const char *)s->arena + st->off_edits);
    duet_gpu_sample_out drawn = {.tokens = so->tokens, .probs = so->probs};
    duet_gpu_sample_out raw = *so;
    duet_status ss;

    raw.tokens = s->tokens2;
    raw.probs = NULL;
    raw.token_logprob = NULL;
    GPU_TRY(r, cudaMemcpyAsync(s->pen_logits, logits, (size_t)n * V * sizeof(float),
                               cudaMemcpyDeviceToDevice, r->stream));
    GPU_TRY(r, duet__gpu_penalize(r->stream, s->pen_logits, V, edits, st->n_edits));
    ss = duet__gpu_sample(w->sampler, r->stream, s->pen_logits, n, dp->rows, h_rows, &drawn, r->err,
                          sizeof(r->err));
    if (!ss)
        ss = duet__gpu_sample(w->sampler, r->stream, logits, n, dp->rows, h_rows, &raw, r->err,
                              sizeof(r->err));
    if (ss)
        return ss;
    GPU_TRY(r, duet__gpu_token_logprobs(r->stream, logits, V, n, so->tokens, so->token_logprob));
    return DUET_STATUS_OK;
}

/* Rank 0: sample the logit rows and copy the results to w->h_out. */
static duet_status sample(duet_gpu_rank *r, const struct step *st, const struct dplan *dp,
                          const float *logits)
{
    duet_gpu_worker *w = r->w;
    duet_gpu_scratch *s = &r->s;
    uint32_t n = st->p.n_out, V = w->d->vocab_size;
    struct out_layout L = out_layout(n, st->max_top, V, st->want_probs);
    const duet_gpu_sample_row *h_rows =
        (const duet_gpu_sample_row *)((const char *)w->h_arena.base + st->p.off_rows);
    duet_gpu_sample_out so = {.tokens = s->tokens,
                              .probs = st->want_probs ? s->probs : NULL,
                              .token_logprob = s->token_logprob,
                              .top = st->max_top ? s->top : NULL,
                              .next_logprob = s->next_logprob,
                              .max_top = st->max_top};
    char *h = w->h_out.base;
    duet_status ss = st->penalized ? sample_penalized(r, st, dp, logits, &so)
                                   : duet__gpu_sample(w->sampler, r->stream, logits, n, dp->rows,
                                                      h_rows, &so, r->err, sizeof(r->err));

    if (ss)
        return r->st = ss;
    GPU_TRY(r, cudaMemcpyAsync(h + L.tokens, s->tokens, n * sizeof(int32_t), cudaMemcpyDeviceToHost,
                               r->stream));
    GPU_TRY(r, cudaMemcpyAsync(h + L.token_lp, s->token_logprob, n * sizeof(float),
                               cudaMemcpyDeviceToHost, r->stream));
    GPU_TRY(r, cudaMemcpyAsync(h + L.next_lp, s->next_logprob, n * sizeof(float),
                               cudaMemcpyDeviceToHost, r->stream));
    if (st->max_top)
        GPU_TRY(r,
                cudaMemcpyAsync(h + L.top, s->top, (size_t)n * st->max_top * sizeof(duet_logprob),
                                cudaMemcpyDeviceToHost, r->stream));
    if (st->want_probs)
        GPU_TRY(r, cudaMemcpyAsync(h + L.probs, s->probs, (size_t)n * V * sizeof(float),
                                   cudaMemcpyDeviceToHost, r->stream));
    return DUET_STATUS_OK;
}

/* The rank job of a forward: arg is the struct step. */
static duet_status rank_forward(duet_gpu_rank *r, void *arg)
{
    const struct step *st = arg;
    duet_gpu_worker *w = r->w;
    const char *a;
    struct dplan dp;
    const float *logits = NULL;
    duet_status fs = scratch_grow(r, st);

    if (fs)
        return fs;
    GPU_TRY(r, cudaMemcpyAsync(r->s.arena, w->h_arena.base, st->p.bytes, cudaMemcpyHostToDevice,
                               r->stream));
    a = r->s.arena;
    dp = (struct dplan){.tokens = (const uint32_t *)(a + st->p.off_tokens),
                        .pos = (const uint32_t *)(a + st->p.off_pos),
                        .slot = (const uint32_t *)(a + st->p.off_slot),
                        .dec = (const uint32_t *)(a + st->p.off_dec),
                        .bt = (const uint32_t *)(a + st->p.off_bt),
                        .out = (const uint32_t *)(a + st->p.off_out),
                        .segs = (const duet_gpu_seg *)(a + st->p.off_segs),
                        .tiles = (const duet_gpu_tile *)(a + st->p.off_tiles),
                        .rows = (const duet_gpu_sample_row *)(a + st->p.off_rows)};
    fs = embed(r, &dp, st->p.n_rows);
    for (uint32_t l = 0; !fs && l < w->d->num_layers; l++) {
        fs = attention_block(r, l, st, &dp);
        if (!fs)
            fs = mlp_block(r, l, st->p.n_rows);
    }
    if (!fs && st->p.n_out)
        fs = head(r, st, &dp, &logits);
    if (!fs && st->p.n_out && r->index == 0)
        fs = sample(r, st, &dp, logits);
    if (fs)
        return fs;
    GPU_TRY(r, cudaStreamSynchronize(r->stream));
    return DUET_STATUS_OK;
}

/* ---- cache operations -------------------------------------------------------------------- */

static duet_status rank_cache_ops(duet_gpu_rank *r, void *arg)
{
    const duet_batch *b = arg;
    size_t bb = r->kv.block_elems * duet__gpu_dtype_size(r->kv.dtype);
    char *kv = r->kv.base, *swap = r->swap;

    for (uint32_t i = 0; i < b->n_swap_in; i++)
        GPU_TRY(r, cudaMemcpyAsync(kv + b->swap_in[i].dst * bb, swap + b->swap_in[i].src * bb, bb,
                                   cudaMemcpyHostToDevice, r->stream));
    for (uint32_t i = 0; i < b->n_swap_out; i++)
        GPU_TRY(r, cudaMemcpyAsync(swap + b->swap_out[i].dst * bb, kv + b->swap_out[i].src * bb, bb,
                                   cudaMemcpyDeviceToHost, r->stream));
    for (uint32_t i = 0; i < b->n_copy; i++)
        GPU_TRY(r, cudaMemcpyAsync(kv + b->copy[i].dst * bb, kv + b->copy[i].src * bb, bb,
                                   cudaMemcpyDeviceToDevice, r->stream));
    if (b->n_swap_out) /* the host may read the swap pool after this call */
        GPU_TRY(r, cudaStreamSynchronize(r->stream));
    return DUET_STATUS_OK;
}

/* ---- host side of a step ----------------------------------------------------------------- */

/* Pinned host memory for the arenas (cudaHostAlloc; NULL when it fails). */
static void *pinned_alloc(size_t bytes)
{
    void *p = NULL;

    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void pinned_free(void *p)
{
    cudaFreeHost(p);
}

/* A pinned arena of at least bytes. */
static void *host_grow(duet_gpu_worker *w, duet_kit_arena *a, size_t bytes)
{
    void *p;

    a->alloc = pinned_alloc;
    a->release = pinned_free;
    if (!(p = duet_kit_arena_reserve(a, bytes)))
        fail(w, DUET_STATUS_OUT_OF_MEMORY,
             "gpu worker: cannot allocate %zu bytes of pinned host memory", bytes);
    return p;
}

void duet__gpu_host_scratch_free(duet_gpu_worker *w)
{
    duet_kit_arena_fini(&w->h_arena);
    duet_kit_arena_fini(&w->h_out);
    duet_kit_arena_fini(&w->book);
    duet_kit_rows_fini(&w->plan);
    free(w->edit_scratch);
    w->edit_scratch = NULL;
    w->cap_edit_scratch = 0;
}

/* Room for the rows of n_seqs sequences and n_fed fed tokens, and the plan's sequences. */
static duet_status book_make(duet_gpu_worker *w, uint32_t n_seqs, uint64_t n_fed)
{
    if (!duet_kit_rows_reserve(&w->plan, n_seqs, n_fed) ||
        !duet_kit_arena_reserve(&w->book, (size_t)n_seqs * sizeof(duet_gpu_plan_seq)))
        return fail(w, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
    return DUET_STATUS_OK;
}

/* The settings row of a logit row. */
static duet_gpu_sample_row sample_row(const duet_batch *b, const duet_kit_row *d)
{
    const duet_sampling_params *sp = &d->q->sampling;
    uint32_t n_lp = d->out_row >= 0 && (b->flags & DUET_BATCH_WANT_LOGPROBS) ? sp->n_logprobs : 0;
    uint32_t n_plp = d->fed_row >= 0 ? sp->n_prompt_logprobs : 0;

    return (duet_gpu_sample_row){
        .temperature = sp->temperature,
        .top_p = sp->top_p,
        .min_p = sp->min_p,
        .top_k = sp->top_k,
        .seed = sp->seed,
        .position = d->pos,
        .mode = (d->out_row >= 0 ? DUET_GPU_ROW_SAMPLE | DUET_GPU_ROW_FINITE : 0u) |
                (d->fed_row >= 0 ? DUET_GPU_ROW_SCORE : 0u),
        .n_top = n_lp > n_plp ? n_lp : n_plp,
        .next = d->fed_row >= 0 ? d->next : -1,
    };
}

/* Lays out the plan of seqs in w->h_arena with room for n_out logit rows. */
static duet_status plan_make(duet_gpu_worker *w, struct step *st, const duet_gpu_plan_seq *seqs,
                             uint32_t n, uint32_t n_out, size_t max_edits)
{
    duet__gpu_plan_count(&st->p, seqs, n, w->block_size, w->pcfg.q_rows);
    st->p.n_out = n_out;
    duet__gpu_plan_layout(&st->p);
    st->off_edits = (st->p.bytes + 15) & ~(size_t)15;
    if (max_edits)
        st->p.bytes = st->off_edits + max_edits * sizeof(duet_gpu_penalty_edit);
    if (!host_grow(w, &w->h_arena, st->p.bytes))
        return DUET_STATUS_OUT_OF_MEMORY;
    duet__gpu_plan_fill(&st->p, w->h_arena.base, seqs, n, w->block_size);
    return DUET_STATUS_OK;
}

/* Runs the step's forward on every rank and writes the kit's rows [0 .. n_out) to o. */
static duet_status run_step(duet_gpu_worker *w, struct step *st, duet_batch_output *o)
{
    const duet_batch *b = st->b;
    uint32_t n = st->p.n_out, V = w->d->vocab_size, M = b->max_logprobs;
    struct out_layout L = out_layout(n, st->max_top, V, st->want_probs);
    const char *h;
    duet_status rs = host_grow(w, &w->h_out, L.bytes) ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;

    if (!rs)
        rs = duet__gpu_ranks_run(w, rank_forward, st);
    if (rs)
        return rs;
    h = w->h_out.base;
    for (uint32_t i = 0; i < n; i++) {
        const duet_kit_row *d = &w->plan.rows[i];
        const duet_sampling_params *sp = &d->q->sampling;
        const duet_logprob *top = (const duet_logprob *)(h + L.top) + (size_t)i * st->max_top;

        if (d->out_row >= 0) {
            size_t row = (size_t)d->out_row;

            o->tokens[row] = ((const int32_t *)(h + L.tokens))[i];
            if (st->want_probs)
                memcpy(o->probs + row * V, (const float *)(h + L.probs) + (size_t)i * V,
                       V * sizeof(float));
            if (b->flags & DUET_BATCH_WANT_LOGPROBS) {
                o->token_logprobs[row] = ((const float *)(h + L.token_lp))[i];
                duet_kit_emit_top(o->logprobs + row * M, top, sp->n_logprobs, M);
            }
        }
        if (d->fed_row >= 0) {
            size_t row = (size_t)d->fed_row;

            o->prompt_next_logprobs[row] = ((const float *)(h + L.next_lp))[i];
            duet_kit_emit_top(o->prompt_logprobs + row * M, top, sp->n_prompt_logprobs, M);
        }
    }
    return DUET_STATUS_OK;
}

/* The most penalty edits a logit row can have: its seen and bias lists, and every fed or drafted
 * token of its sequence (0 without penalties or without a sampled token). */
static size_t row_edits_bound(const duet_batch *b, const duet_kit_row *d)
{
    const duet_penalties *p = duet_seq_penalties(b, d->q);

    if (!p || d->out_row < 0)
        return 0;
    return (size_t)p->n_seen + p->n_bias + d->q->n_tokens + d->q->n_draft_steps;
}

/* The edits of the penalised sampled rows into the arena (o: the rows drafted so far). */
static void edits_fill(duet_gpu_worker *w, struct step *st, const duet_batch_output *o,
                       uint32_t n_out)
{
    duet_gpu_penalty_edit *e = (duet_gpu_penalty_edit *)((char *)w->h_arena.base + st->off_edits);
    duet__penalty_edit *one = w->edit_scratch;

    st->n_edits = 0;
    st->penalized = false;
    for (uint32_t i = 0; i < n_out; i++) {
        const duet_kit_row *d = &w->plan.rows[i];
        duet__recent rc;
        uint32_t m;

        if (!duet_seq_penalties(st->b, d->q) || d->out_row < 0)
            continue;
        st->penalized = true;
        rc = duet__penalty_recent(d->q, d->pos, o->tokens, d->out_row);
        m = duet__penalty_edits(duet_seq_penalties(st->b, d->q), &rc, w->d->vocab_size, one);
        for (uint32_t j = 0; j < m; j++)
            e[st->n_edits++] = (duet_gpu_penalty_edit){.row = i,
                                                       .token = one[j].token,
                                                       .bias = one[j].bias,
                                                       .repetition = one[j].repetition,
                                                       .subtract = one[j].subtract};
    }
}

/* The plan of n_out rows over n plan sequences, their logit rows, their sampler settings and
 * their penalty edits. */
static duet_status step_make(duet_gpu_worker *w, struct step *st, const duet_batch_output *o,
                             uint32_t n, uint32_t n_out)
{
    duet_gpu_sample_row *rows;
    uint32_t *out;
    size_t max_edits = 0, per_row = 0;
    duet_status ps;

    for (uint32_t i = 0; i < n_out; i++) {
        size_t m = row_edits_bound(st->b, &w->plan.rows[i]);

        max_edits += m;
        per_row = m > per_row ? m : per_row;
    }
    if (per_row > w->cap_edit_scratch) {
        duet__penalty_edit *p = realloc(w->edit_scratch, per_row * sizeof(*p));

        if (!p)
            return fail(w, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
        w->edit_scratch = p;
        w->cap_edit_scratch = per_row;
    }
    if ((ps = plan_make(w, st, w->book.base, n, n_out, max_edits)))
        return ps;
    out = (uint32_t *)((char *)w->h_arena.base + st->p.off_out);
    rows = (duet_gpu_sample_row *)((char *)w->h_arena.base + st->p.off_rows);
    for (uint32_t i = 0; i < n_out; i++) {
        out[i] = w->plan.rows[i].fed;
        rows[i] = sample_row(st->b, &w->plan.rows[i]);
    }
    edits_fill(w, st, o, n_out);
    return DUET_STATUS_OK;
}

/* The first forward: every fed token. */
static duet_status feed(duet_gpu_worker *w, const duet_batch *b, duet_batch_output *o,
                        struct step *st)
{
    duet_gpu_plan_seq *seqs = w->book.base;
    uint32_t n_out = duet_kit_rows_feed(&w->plan, b);
    duet_status fs;

    for (uint32_t i = 0; i < b->n_seqs; i++) {
        const duet_seq *q = duet_batch_seq(b, i);

        seqs[i] = (duet_gpu_plan_seq){q->tokens, q->n_tokens, q->pos, q->block_table};
    }
    if ((fs = step_make(w, st, o, b->n_seqs, n_out)))
        return fs;
    return run_step(w, st, o);
}

/* Drafting step `step` (1-based): sequences with n_draft_steps >= step feed their last token. */
static duet_status draft_step(duet_gpu_worker *w, const duet_batch *b, duet_batch_output *o,
                              struct step *st, uint32_t step)
{
    duet_gpu_plan_seq *seqs = w->book.base;
    uint32_t n = duet_kit_rows_draft(&w->plan, b, o, step);
    duet_status ds;

    if (!n)
        return DUET_STATUS_OK;
    for (uint32_t i = 0; i < n; i++) {
        const duet_kit_row *r = &w->plan.rows[i];

        seqs[i] = (duet_gpu_plan_seq){&w->plan.draft_tok[i], 1, (uint32_t)(r->pos - 1),
                                      r->q->block_table};
    }
    if ((ds = step_make(w, st, o, n, n)) || (ds = run_step(w, st, o)))
        return ds;
    duet_kit_rows_repeat_nonfinite(&w->plan, n, b, o, w->d->vocab_size);
    return DUET_STATUS_OK;
}

duet_status duet__gpu_execute(duet_gpu_worker *w, const duet_batch *b, duet_batch_output *o)
{
    uint64_t rows = 0, fed = 0;
    duet_batch_limits lim;
    struct step st;
    duet_status es;

    if (!w)
        return DUET_STATUS_INVALID_ARGUMENT;
    w->err.msg[0] = '\0';
    if (!b || !o)
        return fail(w, DUET_STATUS_INVALID_ARGUMENT, "gpu worker: execute: NULL batch or output");
    lim = (duet_batch_limits){.who = "gpu worker",
                              .vocab = w->d->vocab_size,
                              .max_position = w->d->max_position,
                              .block_size = w->block_size,
                              .num_blocks = w->num_blocks,
                              .num_swap_blocks = w->num_swap_blocks,
                              .penalties = true};
    if ((es = duet_kit_batch_check(&lim, b, o, &rows, &fed, w->err.msg, sizeof(w->err.msg))))
        return es;
    if ((b->n_swap_in || b->n_swap_out || b->n_copy) &&
        (es = duet__gpu_ranks_run(w, rank_cache_ops, (void *)b)))
        return es;
    if (!b->n_seqs)
        return DUET_STATUS_OK;
    if ((es = book_make(w, b->n_seqs, fed)))
        return es;
    memset(&st, 0, sizeof(st));
    st.b = b;
    st.want_probs = b->flags & DUET_BATCH_WANT_PROBS;
    st.max_top = (b->flags & (DUET_BATCH_WANT_LOGPROBS | DUET_BATCH_WANT_PROMPT_LOGPROBS))
                     ? b->max_logprobs
                     : 0;
    es = feed(w, b, o, &st);
    for (uint32_t step = 1; !es && step <= w->plan.max_steps; step++)
        es = draft_step(w, b, o, &st, step);
    return es;
}
