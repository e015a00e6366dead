/*
 * One forward pass of the CPU worker over a batch of rows (cpu_worker-int.h).
 *
 *   tokens ─► embed (+ OPT positions, project_in) ─► x [rows][hidden]
 *   per layer:
 *     h = norm1(x)                         (OPT post-LN: h = x)
 *     qkv = h·Wqkvᵀ (+ b: OPT, Qwen2) ─► Qwen3: RMSNorm of each q and k head
 *         ─► RoPE on q, k (Llama family) ─► K, V into the paged cache
 *     att = paged causal attention(q)      every row sees its own sequence's positions 0 .. p
 *                                          (p - W + 1 .. p with a sliding window W)
 *     x += att·Woᵀ (+ b)                   (post-LN: x = norm1(x))
 *     h = norm2(x)                         (post-LN: h = x)
 *     Llama: x += down(silu(gate(h)) × up(h))    OPT: x += fc2(relu(fc1(h)))
 *   rows that need logits: final norm ─► project_out ─► lm_head ─► logits [n_out][vocab]
 *
 * All rows of all sequences go through each GEMM together (M = rows); only attention looks at
 * sequence boundaries. The scratch grows to the largest step and is reused.
 */
#include "build_config.h"

#include "cpu_worker-int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Replaces ptr by an uninitialised array of count (>= 1) elements; NULL when out of memory. */
#define GROW(ptr, count) (free(ptr), (ptr) = malloc(((count) + 1) * sizeof(*(ptr))))

static uint32_t width_of(const duet_model_desc *d)
{
    return d->arch == DUET_ARCH_OPT ? d->word_embed_proj_dim : d->hidden_size;
}

static uint32_t wide_of(const duet_model_desc *d)
{
    uint32_t w = width_of(d);

    return w > d->hidden_size ? w : d->hidden_size;
}

duet_status duet__cpu_grow_scratch(duet_worker *w, size_t rows, size_t n_out)
{
    const duet_model_desc *d = w->d;
    duet_cpu_scratch *s = &w->s;
    size_t q = (size_t)d->num_heads * d->head_dim, kv = (size_t)d->num_kv_heads * d->head_dim;

    if (rows > s->rows) {
        if (!GROW(s->x, rows * d->hidden_size) || !GROW(s->h, rows * wide_of(d)) ||
            !GROW(s->qkv, rows * (q + 2 * kv)) || !GROW(s->att, rows * q) ||
            !GROW(s->mlp, rows * 2 * (size_t)d->intermediate_size) ||
            !GROW(s->act, rows * d->intermediate_size) || !GROW(s->cos_sin, rows * d->head_dim) ||
            !GROW(s->pos, rows))
            goto out_nomem;
        s->rows = rows;
    }
    if (n_out > s->out_rows) {
        if (!GROW(s->final, n_out * wide_of(d)) || !GROW(s->logits, n_out * d->vocab_size))
            goto out_nomem;
        s->out_rows = n_out;
    }
    return DUET_STATUS_OK;

out_nomem:
    s->rows = s->out_rows = 0; /* a failed GROW leaves NULL: regrow everything next time */
    snprintf(w->err.msg, sizeof(w->err.msg),
             "cpu worker: out of memory for the scratch of %zu rows", rows);
    return DUET_STATUS_OUT_OF_MEMORY;
}

/* x = the embeddings of the tokens (projected, plus learned positions for OPT). */
static duet_status embed(duet_worker *w, const int32_t *tokens, uint32_t n_rows)
{
    const duet_model_desc *d = w->d;
    uint32_t hidden = d->hidden_size, width = width_of(d);
    float *dst = w->project_in ? w->s.h : w->s.x;
    size_t stride = w->project_in ? wide_of(d) : hidden;
    duet_status st = DUET_STATUS_OK;

#pragma omp parallel for schedule(static) if (n_rows > 16)
    for (uint32_t r = 0; r < n_rows; r++)
        duet_tensor_read_f32(w->embed, (uint64_t)tokens[r] * width, width, dst + r * stride);
    if (w->project_in)
        st = duet__cpu_mat_run(w, w->project_in, w->s.h, stride, n_rows, NULL, w->s.x);
    if (st || !w->positions)
        return st;
    for (uint32_t r = 0; r < n_rows; r++) {
        float *row = w->s.h; /* the learned position, added to x */

        duet_tensor_read_f32(w->positions, (uint64_t)(w->s.pos[r] + d->position_offset) * hidden,
                             hidden, row);
        for (uint32_t i = 0; i < hidden; i++)
            w->s.x[(size_t)r * hidden + i] += row[i];
    }
    return st;
}

static void norm(const duet_worker *w, const float *x, const float *wt, const float *b, float *y,
                 size_t y_stride, uint32_t n_rows)
{
    const duet_model_desc *d = w->d;

    if (d->arch == DUET_ARCH_LLAMA)
        duet__cpu_rmsnorm(x, d->hidden_size, wt, (float)d->norm_eps, y, y_stride, n_rows,
                          d->hidden_size);
    else
        duet__cpu_layernorm(x, d->hidden_size, wt, b, (float)d->norm_eps, y, y_stride, n_rows,
                            d->hidden_size);
}

/* mat's 2-byte weights in f32 for many rows: widened panels and dnnl_sgemm (the panel is
 * allocated on first use). */
static duet_status widened_run(duet_worker *w, const duet_cpu_mat *mat, const float *x,
                               size_t x_stride, uint32_t m, float *y)
{
    size_t need =
        (size_t)16 * mat->k > DUET_CPU_PANEL_ELEMS ? (size_t)16 * mat->k : DUET_CPU_PANEL_ELEMS;

    if (need > w->s.panel_elems) {
        free(w->s.panel);
        w->s.panel_elems = 0;
        if (!(w->s.panel = aligned_alloc(DUET_GEMV_ALIGN, need * sizeof(float))))
            return duet__cpu_fail(w, DUET_STATUS_OUT_OF_MEMORY,
                                  "cpu worker: out of memory for a weight panel of %zu floats",
                                  need);
        w->s.panel_elems = need;
    }
    return duet__cpu_widened_run(&mat->gemv, x, x_stride, m, y, mat->n, w->s.panel,
                                 w->s.panel_elems, w->err.msg, sizeof(w->err.msg));
}

duet_status duet__cpu_mat_run(duet_worker *w, const duet_cpu_mat *mat, const float *x,
                              size_t x_stride, uint32_t m, const float *norm_w, float *y)
{
    float eps = (float)w->d->norm_eps;
    /* the GEMM for many rows: oneDNN's packed copy, or widening the own kernels' 2-byte weights;
     * int8 / int4 have none */
    bool widen = !mat->dnn && duet__gemv_fmt_f32_act(mat->gemv.fmt), gemm = mat->dnn || widen;
    /* the head's matrices count in head()'s stage */
    bool timed = w->bd.on && mat != w->lm_head && mat != w->project_out;

    if (mat->gemv.data && (m <= DUET_CPU_GEMV_MAX_M || !gemm)) {
        size_t need = duet__gemv_act_size(&mat->gemv, m);
        uint64_t t0 = timed ? duet__cpu_now_ns() : 0, t1 = 0;
        duet_gemv_act a;

        if (need > w->s.gemv_act_bytes) {
            free(w->s.gemv_act);
            w->s.gemv_act_bytes = 0;
            need = (need + DUET_GEMV_ALIGN - 1) / DUET_GEMV_ALIGN * DUET_GEMV_ALIGN;
            if (!(w->s.gemv_act = aligned_alloc(DUET_GEMV_ALIGN, need)))
                return duet__cpu_fail(w, DUET_STATUS_OUT_OF_MEMORY,
                                      "cpu worker: out of memory for the activations of %u rows",
                                      m);
            w->s.gemv_act_bytes = need;
        }
        duet__gemv_act_prepare(&mat->gemv, x, x_stride, m, norm_w, eps, w->s.gemv_act, &a);
        if (timed) {
            t1 = duet__cpu_now_ns();
            w->bd.cur[DUET_CPU_STAGE_ACT] += t1 - t0;
        }
        duet__gemv_run(w->gemv, &mat->gemv, &a, y, mat->n);
        if (timed)
            w->bd.cur[DUET_CPU_STAGE_GEMV] += duet__cpu_now_ns() - t1;
        return DUET_STATUS_OK;
    }
    if (norm_w) {
        duet__cpu_rmsnorm(x, x_stride, norm_w, eps, w->s.h, mat->k, m, mat->k);
        x = w->s.h;
        x_stride = mat->k;
    }
    if (widen)
        return widened_run(w, mat, x, x_stride, m, y);
    return duet__cpu_linear_run(w->dnn, mat->dnn, x, x_stride, m, y, w->err.msg,
                                sizeof(w->err.msg));
}

#define RUN(mat, x, stride, m, y) RUN_NORMED(mat, x, stride, m, NULL, y)
#define RUN_NORMED(mat, x, stride, m, norm_w, y)                                                   \
    do {                                                                                           \
        duet_status st_ = duet__cpu_mat_run(w, (mat), (x), (stride), (m), (norm_w), (y));          \
        if (st_)                                                                                   \
            return st_;                                                                            \
    } while (0)

/* Attention half of layer l: x += o(attention(norm1(x))). */
static duet_status attention_block(duet_worker *w, uint32_t l, const duet_cpu_seg *segs,
                                   uint32_t n_segs, uint32_t n_rows)
{
    const duet_model_desc *d = w->d;
    const duet_cpu_layer *L = &w->layers[l];
    duet_cpu_scratch *s = &w->s;
    uint32_t hidden = d->hidden_size, hd = d->head_dim;
    size_t q = (size_t)d->num_heads * hd, kv = (size_t)d->num_kv_heads * hd, stride = q + 2 * kv;
    bool pre = d->arch == DUET_ARCH_LLAMA || d->do_layer_norm_before;
    uint64_t t0;

    if (d->arch == DUET_ARCH_LLAMA) {
        RUN_NORMED(L->qkv, s->x, hidden, n_rows, L->norm1_w, s->qkv);
    } else {
        t0 = duet__cpu_bd_start(w);
        if (pre)
            norm(w, s->x, L->norm1_w, L->norm1_b, s->h, hidden, n_rows);
        duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
        RUN(L->qkv, pre ? s->h : s->x, hidden, n_rows, s->qkv);
    }
    t0 = duet__cpu_bd_start(w);
    if (L->q_norm) {
        duet__cpu_head_rmsnorm(s->qkv, stride, n_rows, d->num_heads, hd, L->q_norm,
                               (float)d->norm_eps);
        duet__cpu_head_rmsnorm(s->qkv + q, stride, n_rows, d->num_kv_heads, hd, L->k_norm,
                               (float)d->norm_eps);
    }
    if (d->arch == DUET_ARCH_LLAMA)
        duet__cpu_rope_kv_write(&w->kv, l, segs, n_segs, s->qkv, stride, d->num_heads, s->cos_sin);
    else
        duet__cpu_kv_write(&w->kv, l, segs, n_segs, s->qkv + q, s->qkv + q + kv, stride);
    duet__cpu_attention(&w->kv, l, segs, n_segs, d->num_heads, (float)(1.0 / sqrt((double)hd)),
                        s->qkv, stride, s->att, q);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_ATTENTION, t0);
    RUN(L->o, s->att, q, n_rows, s->h);
    t0 = duet__cpu_bd_start(w);
    duet__cpu_add(s->x, hidden, s->h, hidden, n_rows, hidden);
    if (!pre)
        norm(w, s->x, L->norm1_w, L->norm1_b, s->x, hidden, n_rows);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
    return DUET_STATUS_OK;
}

/* MLP half of layer l. */
static duet_status mlp_block(duet_worker *w, uint32_t l, uint32_t n_rows)
{
    const duet_model_desc *d = w->d;
    const duet_cpu_layer *L = &w->layers[l];
    duet_cpu_scratch *s = &w->s;
    uint32_t hidden = d->hidden_size, inter = d->intermediate_size;
    bool pre = d->arch == DUET_ARCH_LLAMA || d->do_layer_norm_before;
    uint64_t t0;

    if (d->arch == DUET_ARCH_LLAMA) {
        RUN_NORMED(L->gate_up, s->x, hidden, n_rows, L->norm2_w, s->mlp);
        t0 = duet__cpu_bd_start(w);
        duet__cpu_silu_mul(s->mlp, 2 * (size_t)inter, s->act, inter, n_rows, inter);
        duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
        RUN(L->down, s->act, inter, n_rows, s->h);
    } else {
        t0 = duet__cpu_bd_start(w);
        if (pre)
            norm(w, s->x, L->norm2_w, L->norm2_b, s->h, hidden, n_rows);
        duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
        RUN(L->fc1, pre ? s->h : s->x, hidden, n_rows, s->act);
        t0 = duet__cpu_bd_start(w);
        duet__cpu_relu(s->act, inter, n_rows, inter);
        duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
        RUN(L->fc2, s->act, inter, n_rows, s->h);
    }
    t0 = duet__cpu_bd_start(w);
    duet__cpu_add(s->x, hidden, s->h, hidden, n_rows, hidden);
    if (!pre)
        norm(w, s->x, L->norm2_w, L->norm2_b, s->x, hidden, n_rows);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_ELEMWISE, t0);
    return DUET_STATUS_OK;
}

/* Final norm, projection and lm_head for the chosen rows. */
static duet_status head(duet_worker *w, const uint32_t *out_rows, uint32_t n_out)
{
    const duet_model_desc *d = w->d;
    duet_cpu_scratch *s = &w->s;
    uint32_t hidden = d->hidden_size, wide = wide_of(d);
    const float *in = s->final;

    for (uint32_t i = 0; i < n_out; i++)
        memcpy(s->final + (size_t)i * wide, s->x + (size_t)out_rows[i] * hidden,
               hidden * sizeof(float));
    if (d->arch == DUET_ARCH_LLAMA) {
        RUN_NORMED(w->lm_head, s->final, wide, n_out, w->final_w, s->logits);
        return DUET_STATUS_OK;
    }
    if (w->final_w)
        norm(w, s->final, w->final_w, w->final_b, s->final, wide, n_out);
    if (w->project_out) {
        /* s->h is free now and holds at least n_out rows of width (n_out <= rows) */
        RUN(w->project_out, s->final, wide, n_out, s->h);
        in = s->h;
        wide = width_of(d);
    }
    RUN(w->lm_head, in, wide, n_out, s->logits);
    return DUET_STATUS_OK;
}

duet_status duet__cpu_forward(duet_worker *w, const duet_cpu_seg *segs, uint32_t n_segs,
                              const int32_t *tokens, uint32_t n_rows, const uint32_t *out_rows,
                              uint32_t n_out)
{
    const duet_model_desc *d = w->d;
    duet_status st = duet__cpu_grow_scratch(w, n_rows, n_out);
    uint64_t t0 = duet__cpu_bd_start(w);

    if (st)
        return st;
    w->bd.decode &= n_rows == n_segs;
    w->bd.cur_steps++;
    for (uint32_t i = 0; i < n_segs; i++)
        for (uint32_t j = 0; j < segs[i].n; j++)
            w->s.pos[segs[i].row0 + j] = segs[i].pos + j;
    if (d->arch == DUET_ARCH_LLAMA)
        duet__cpu_rope_angles(w->inv_freq, d->head_dim, w->s.pos, n_rows, w->s.cos_sin);
    st = embed(w, tokens, n_rows);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_EMBED, t0);
    for (uint32_t l = 0; !st && l < d->num_layers; l++) {
        st = attention_block(w, l, segs, n_segs, n_rows);
        if (!st)
            st = mlp_block(w, l, n_rows);
    }
    t0 = duet__cpu_bd_start(w);
    if (!st && n_out)
        st = head(w, out_rows, n_out);
    duet__cpu_bd_add(w, DUET_CPU_STAGE_LM_HEAD, t0);
    return st;
}
