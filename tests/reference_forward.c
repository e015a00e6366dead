/*
 * The reference forward pass (reference_forward.h).
 *
 *   duet_ref
 *   ├── weights           every tensor of the layout, converted to double, back to back
 *   ├── embed, positions, project_in/out, final norm, head    pointers into weights
 *   ├── layers[L]         each layer's matrices, biases and norms (NULL where the arch has none)
 *   ├── k_cache, v_cache  [layer][position][kv_heads × head_dim]
 *   └── scratch           x, h, q, k, v, scores, attention output, MLP activations
 *
 * One step: the token's embedding (plus its learned position for OPT), then every layer, then
 * the final norm and the head, exactly as Hugging Face's LlamaForCausalLM / OPTForCausalLM
 * compute one position in eval mode (no dropout).
 */
#include "reference_forward.h"

#include "../model/model-int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ref_layer {
    const double *q, *k, *v, *o;                /* attention projections [out][in] */
    const double *q_b, *k_b, *v_b, *o_b;        /* OPT biases; Qwen2's q, k, v biases */
    const double *q_norm, *k_norm;              /* Qwen3: RMSNorm of each q / k head */
    const double *gate, *up, *down, *fc1, *fc2; /* MLP (Llama: gate/up/down; OPT: fc1/fc2) */
    const double *fc1_b, *fc2_b;                /* OPT biases */
    const double *norm1_w, *norm1_b;            /* before (or OPT post-LN: after) attention */
    const double *norm2_w, *norm2_b;            /* before (after) the MLP */
};

struct duet_ref {
    const duet_model_desc *d;
    uint32_t max_tokens, pos;
    double *weights;                          /* all tensors, double */
    const double *embed, *positions;          /* [V][W], OPT [P + 2][H] */
    const double *project_in, *project_out;   /* OPT, when W != H */
    const double *final_w, *final_b, *head;   /* head: lm_head or embed when tied */
    struct ref_layer *layers;                 /* [L] */
    double *k_cache, *v_cache;                /* [L][max_tokens][K] */
    double *inv_freq;                         /* [head_dim / 2] (Llama) */
    double *x, *h, *q, *k, *v, *att, *scores; /* [H], [H], [Q], [K], [K], [Q], [max_tokens] */
    double *ff, *ff2, *wide;                  /* [I], [I], [max(H, W)] */
};

/* Where a tensor of the layout goes. */
static const double **slot_field(duet_ref *r, const struct duet__slot *s)
{
    static const struct {
        const char *suffix;
        size_t offset;
    } fields[] = {
#define F(name, field) {name, offsetof(struct ref_layer, field)}
        F("self_attn.q_proj.weight", q),
        F("self_attn.k_proj.weight", k),
        F("self_attn.v_proj.weight", v),
        F("self_attn.o_proj.weight", o),
        F("self_attn.out_proj.weight", o),
        F("self_attn.q_proj.bias", q_b),
        F("self_attn.k_proj.bias", k_b),
        F("self_attn.v_proj.bias", v_b),
        F("self_attn.out_proj.bias", o_b),
        F("self_attn.q_norm.weight", q_norm),
        F("self_attn.k_norm.weight", k_norm),
        F("mlp.gate_proj.weight", gate),
        F("mlp.up_proj.weight", up),
        F("mlp.down_proj.weight", down),
        F("fc1.weight", fc1),
        F("fc1.bias", fc1_b),
        F("fc2.weight", fc2),
        F("fc2.bias", fc2_b),
        F("input_layernorm.weight", norm1_w),
        F("post_attention_layernorm.weight", norm2_w),
        F("self_attn_layer_norm.weight", norm1_w),
        F("self_attn_layer_norm.bias", norm1_b),
        F("final_layer_norm.weight", norm2_w),
        F("final_layer_norm.bias", norm2_b),
#undef F
    };

    if (s->layer >= 0) {
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            if (strcmp(s->suffix, fields[i].suffix) == 0)
                return (const double **)(void *)((char *)&r->layers[s->layer] + fields[i].offset);
        return NULL;
    }
    if (strstr(s->name, "embed_tokens"))
        return &r->embed;
    if (strstr(s->name, "embed_positions"))
        return &r->positions;
    if (strstr(s->name, "project_in"))
        return &r->project_in;
    if (strstr(s->name, "project_out"))
        return &r->project_out;
    if (strcmp(s->name, "lm_head.weight") == 0)
        return &r->head;
    return strstr(s->name, ".bias") ? &r->final_b : &r->final_w;
}

/* Converts every tensor of the layout into r->weights and points r's fields at them. */
static duet_status load_weights(duet_ref *r, const duet_model *m)
{
    struct duet__slot *slots;
    size_t n;
    uint64_t total = 0, at = 0;
    float *row = NULL;
    duet_status st = duet__layout_build(r->d, &slots, &n);

    for (size_t i = 0; !st && i < n; i++)
        total += duet__slot_numel(&slots[i]);
    if (!st && total > (256ull << 20))
        st = DUET_STATUS_OUT_OF_MEMORY; /* a reference for small models only */
    if (!st && (!(r->weights = malloc(total * sizeof(double))) || !(row = malloc(65536 * 4))))
        st = DUET_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; !st && i < n; i++) {
        const duet_tensor *t = duet_model_tensor(m, slots[i].name);
        const double **field = slot_field(r, &slots[i]);

        for (uint64_t first = 0; first < t->numel; first += 65536) {
            uint64_t cnt = t->numel - first < 65536 ? t->numel - first : 65536;

            duet_tensor_read_f32(t, first, cnt, row);
            for (uint64_t j = 0; j < cnt; j++)
                r->weights[at + first + j] = row[j];
        }
        if (field)
            *field = r->weights + at;
        at += t->numel;
    }
    free(row);
    free(slots);
    if (!st && !r->head)
        r->head = r->embed;
    return st;
}

static duet_status alloc_state(duet_ref *r)
{
    const duet_model_desc *d = r->d;
    size_t kv = (size_t)d->num_kv_heads * d->head_dim, q = (size_t)d->num_heads * d->head_dim;
    size_t cache = (size_t)d->num_layers * r->max_tokens * kv;
    size_t wide = d->hidden_size > d->word_embed_proj_dim ? d->hidden_size : d->word_embed_proj_dim;

    r->layers = calloc(d->num_layers, sizeof(*r->layers));
    r->k_cache = calloc(cache, sizeof(double));
    r->v_cache = calloc(cache, sizeof(double));
    r->inv_freq = calloc(d->head_dim / 2 + 1, sizeof(double));
    r->x = calloc(d->hidden_size, sizeof(double));
    r->h = calloc(d->hidden_size, sizeof(double));
    r->q = calloc(q, sizeof(double));
    r->k = calloc(kv, sizeof(double));
    r->v = calloc(kv, sizeof(double));
    r->att = calloc(q, sizeof(double));
    r->scores = calloc(r->max_tokens, sizeof(double));
    r->ff = calloc(d->intermediate_size, sizeof(double));
    r->ff2 = calloc(d->intermediate_size, sizeof(double));
    r->wide = calloc(wide, sizeof(double));
    if (!r->layers || !r->k_cache || !r->v_cache || !r->inv_freq || !r->x || !r->h || !r->q ||
        !r->k || !r->v || !r->att || !r->scores || !r->ff || !r->ff2 || !r->wide)
        return DUET_STATUS_OUT_OF_MEMORY;
    return DUET_STATUS_OK;
}

void duet_ref_destroy(duet_ref *r)
{
    if (!r)
        return;
    free(r->weights);
    free(r->layers);
    free(r->k_cache);
    free(r->v_cache);
    free(r->inv_freq);
    free(r->x);
    free(r->h);
    free(r->q);
    free(r->k);
    free(r->v);
    free(r->att);
    free(r->scores);
    free(r->ff);
    free(r->ff2);
    free(r->wide);
    free(r);
}

duet_status duet_ref_create(const duet_model *m, uint32_t max_tokens, duet_ref **out)
{
    duet_ref *r = calloc(1, sizeof(*r));
    duet_status st;

    *out = NULL;
    if (!r)
        return DUET_STATUS_OUT_OF_MEMORY;
    r->d = duet_model_describe(m);
    r->max_tokens = max_tokens ? max_tokens : 1;
    st = alloc_state(r);
    if (!st)
        st = load_weights(r, m);
    if (st) {
        duet_ref_destroy(r);
        return st;
    }
    if (r->d->arch == DUET_ARCH_LLAMA)
        duet_ref_rope_freqs(r->d, r->inv_freq);
    *out = r;
    return DUET_STATUS_OK;
}

void duet_ref_reset(duet_ref *r)
{
    r->pos = 0;
}

uint32_t duet_ref_pos(const duet_ref *r)
{
    return r->pos;
}

uint32_t duet_ref_argmax(const double *x, uint32_t n)
{
    uint32_t best = 0;

    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* ---- building blocks -------------------------------------------------------------------- */

/* y[rows] = w[rows][cols] · x[cols] (+ bias). */
static void matvec(const double *w, const double *bias, const double *x, uint64_t rows,
                   uint64_t cols, double *y)
{
    for (uint64_t r = 0; r < rows; r++) {
        double sum = bias ? bias[r] : 0.0;

        for (uint64_t c = 0; c < cols; c++)
            sum += w[r * cols + c] * x[c];
        y[r] = sum;
    }
}

static void rms_norm(const double *x, const double *w, uint32_t n, double eps, double *y)
{
    double ss = 0;

    for (uint32_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    ss = 1.0 / sqrt(ss / n + eps);
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] * ss * w[i];
}

static void layer_norm(const double *x, const double *w, const double *b, uint32_t n, double eps,
                       double *y)
{
    double mean = 0, var = 0;

    for (uint32_t i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (uint32_t i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var = 1.0 / sqrt(var / n + eps);
    for (uint32_t i = 0; i < n; i++)
        y[i] = (x[i] - mean) * var * w[i] + b[i];
}

void duet_ref_rope_freqs(const duet_model_desc *d, double *inv_freq)
{
    const double pi = 3.14159265358979323846;
    double low_wavelen = d->rope_original_max_position / d->rope_low_freq_factor;
    double high_wavelen = d->rope_original_max_position / d->rope_high_freq_factor;

    for (uint32_t i = 0; i < d->head_dim / 2; i++) {
        double f = pow(d->rope_theta, -2.0 * i / d->head_dim), wavelen = 2 * pi / f;

        if (d->rope_scaling == DUET_ROPE_SCALING_LINEAR) {
            f /= d->rope_factor;
        } else if (d->rope_scaling == DUET_ROPE_SCALING_LLAMA3 && wavelen > low_wavelen) {
            f /= d->rope_factor;
        } else if (d->rope_scaling == DUET_ROPE_SCALING_LLAMA3 && wavelen >= high_wavelen) {
            double smooth = (d->rope_original_max_position / wavelen - d->rope_low_freq_factor) /
                            (d->rope_high_freq_factor - d->rope_low_freq_factor);

            f = (1 - smooth) * f / d->rope_factor + smooth * f;
        }
        inv_freq[i] = f;
    }
}

void duet_ref_rope(const double *inv_freq, uint32_t head_dim, uint32_t pos, double *vec)
{
    uint32_t half = head_dim / 2;

    for (uint32_t i = 0; i < half; i++) {
        double c = cos(pos * inv_freq[i]), s = sin(pos * inv_freq[i]);
        double a = vec[i], b = vec[i + half];

        vec[i] = a * c - b * s;
        vec[i + half] = b * c + a * s;
    }
}

/* Causal attention of r->q against the cached K/V of layer l, positions 0 .. pos (with a
 * sliding window W: pos - W + 1 .. pos, transformers' mask keeping keys at p' > pos - W), into
 * r->att. q is already scaled (OPT) or divided here (Llama) by √head_dim. */
static void attend(duet_ref *r, uint32_t l, double scale)
{
    const duet_model_desc *d = r->d;
    uint32_t hd = d->head_dim, group = d->num_heads / d->num_kv_heads;
    size_t kv = (size_t)d->num_kv_heads * hd;
    const double *kc = r->k_cache + (size_t)l * r->max_tokens * kv;
    const double *vc = r->v_cache + (size_t)l * r->max_tokens * kv;
    uint32_t w = d->sliding_window, first = w && r->pos >= w ? r->pos - w + 1 : 0;

    for (uint32_t h = 0; h < d->num_heads; h++) {
        const double *q = r->q + (size_t)h * hd;
        size_t off = (size_t)(h / group) * hd;
        double max = -INFINITY, sum = 0;

        for (uint32_t t = first; t <= r->pos; t++) {
            double s = 0;

            for (uint32_t i = 0; i < hd; i++)
                s += q[i] * kc[t * kv + off + i];
            r->scores[t] = s * scale;
            max = r->scores[t] > max ? r->scores[t] : max;
        }
        for (uint32_t t = first; t <= r->pos; t++)
            sum += r->scores[t] = exp(r->scores[t] - max);
        for (uint32_t i = 0; i < hd; i++) {
            double acc = 0;

            for (uint32_t t = first; t <= r->pos; t++)
                acc += r->scores[t] * vc[t * kv + off + i];
            r->att[(size_t)h * hd + i] = acc / sum;
        }
    }
}

/* Projects r->h into q, k, v; writes k, v to the cache of layer l at r->pos. */
static void qkv(duet_ref *r, uint32_t l)
{
    const duet_model_desc *d = r->d;
    const struct ref_layer *w = &r->layers[l];
    size_t kv = (size_t)d->num_kv_heads * d->head_dim, q = (size_t)d->num_heads * d->head_dim;
    size_t at = ((size_t)l * r->max_tokens + r->pos) * kv;

    matvec(w->q, w->q_b, r->h, q, d->hidden_size, r->q);
    matvec(w->k, w->k_b, r->h, kv, d->hidden_size, r->k);
    matvec(w->v, w->v_b, r->h, kv, d->hidden_size, r->v);
    for (uint32_t h = 0; w->q_norm && h < d->num_heads; h++)
        rms_norm(r->q + (size_t)h * d->head_dim, w->q_norm, d->head_dim, d->norm_eps,
                 r->q + (size_t)h * d->head_dim);
    for (uint32_t h = 0; w->k_norm && h < d->num_kv_heads; h++)
        rms_norm(r->k + (size_t)h * d->head_dim, w->k_norm, d->head_dim, d->norm_eps,
                 r->k + (size_t)h * d->head_dim);
    if (d->arch == DUET_ARCH_LLAMA) {
        for (uint32_t h = 0; h < d->num_heads; h++)
            duet_ref_rope(r->inv_freq, d->head_dim, r->pos, r->q + (size_t)h * d->head_dim);
        for (uint32_t h = 0; h < d->num_kv_heads; h++)
            duet_ref_rope(r->inv_freq, d->head_dim, r->pos, r->k + (size_t)h * d->head_dim);
    }
    memcpy(r->k_cache + at, r->k, kv * sizeof(double));
    memcpy(r->v_cache + at, r->v, kv * sizeof(double));
}

/* x += o(attention(norm1(x))) and x += down(silu(gate(h)) * up(h)), h = norm2(x). */
static void llama_layer(duet_ref *r, uint32_t l)
{
    const duet_model_desc *d = r->d;
    const struct ref_layer *w = &r->layers[l];
    uint32_t n = d->hidden_size, inter = d->intermediate_size;

    rms_norm(r->x, w->norm1_w, n, d->norm_eps, r->h);
    qkv(r, l);
    attend(r, l, 1.0 / sqrt((double)d->head_dim));
    matvec(w->o, NULL, r->att, n, (uint64_t)d->num_heads * d->head_dim, r->h);
    for (uint32_t i = 0; i < n; i++)
        r->x[i] += r->h[i];
    rms_norm(r->x, w->norm2_w, n, d->norm_eps, r->h);
    matvec(w->gate, NULL, r->h, inter, n, r->ff);
    matvec(w->up, NULL, r->h, inter, n, r->ff2);
    for (uint32_t i = 0; i < inter; i++)
        r->ff[i] = r->ff[i] / (1.0 + exp(-r->ff[i])) * r->ff2[i];
    matvec(w->down, NULL, r->ff, n, inter, r->h);
    for (uint32_t i = 0; i < n; i++)
        r->x[i] += r->h[i];
}

/* One OPT block; LayerNorm before (pre-LN) or after (post-LN) each residual add. */
static void opt_layer(duet_ref *r, uint32_t l)
{
    const duet_model_desc *d = r->d;
    const struct ref_layer *w = &r->layers[l];
    uint32_t n = d->hidden_size, inter = d->intermediate_size;
    bool pre = d->do_layer_norm_before;

    if (pre)
        layer_norm(r->x, w->norm1_w, w->norm1_b, n, d->norm_eps, r->h);
    else
        memcpy(r->h, r->x, n * sizeof(double));
    qkv(r, l);
    attend(r, l, 1.0 / sqrt((double)d->head_dim));
    matvec(w->o, w->o_b, r->att, n, n, r->h);
    for (uint32_t i = 0; i < n; i++)
        r->x[i] += r->h[i];
    if (!pre)
        layer_norm(r->x, w->norm1_w, w->norm1_b, n, d->norm_eps, r->x);
    if (pre)
        layer_norm(r->x, w->norm2_w, w->norm2_b, n, d->norm_eps, r->h);
    else
        memcpy(r->h, r->x, n * sizeof(double));
    matvec(w->fc1, w->fc1_b, r->h, inter, n, r->ff);
    for (uint32_t i = 0; i < inter; i++)
        r->ff[i] = r->ff[i] > 0 ? r->ff[i] : 0;
    matvec(w->fc2, w->fc2_b, r->ff, n, inter, r->h);
    for (uint32_t i = 0; i < n; i++)
        r->x[i] += r->h[i];
    if (!pre)
        layer_norm(r->x, w->norm2_w, w->norm2_b, n, d->norm_eps, r->x);
}

/* The token's input to layer 0 in r->x. */
static void embed(duet_ref *r, int32_t token)
{
    const duet_model_desc *d = r->d;
    uint32_t n = d->hidden_size, width = d->arch == DUET_ARCH_OPT ? d->word_embed_proj_dim : n;
    const double *e = r->embed + (size_t)token * width;

    if (r->project_in)
        matvec(r->project_in, NULL, e, n, width, r->x);
    else
        memcpy(r->x, e, n * sizeof(double));
    if (d->arch == DUET_ARCH_OPT)
        for (uint32_t i = 0; i < n; i++)
            r->x[i] += r->positions[(size_t)(r->pos + d->position_offset) * n + i];
}

/* Final norm, projection and head: logits from r->x. */
static void head(duet_ref *r, double *logits)
{
    const duet_model_desc *d = r->d;
    uint32_t n = d->hidden_size;
    const double *h = r->x;

    if (d->arch == DUET_ARCH_LLAMA) {
        rms_norm(r->x, r->final_w, n, d->norm_eps, r->h);
        h = r->h;
    } else if (d->final_layer_norm) {
        layer_norm(r->x, r->final_w, r->final_b, n, d->norm_eps, r->h);
        h = r->h;
    }
    if (r->project_out) {
        matvec(r->project_out, NULL, h, d->word_embed_proj_dim, n, r->wide);
        h = r->wide;
        n = d->word_embed_proj_dim;
    }
    matvec(r->head, NULL, h, d->vocab_size, n, logits);
}

duet_status duet_ref_step(duet_ref *r, int32_t token, double *logits)
{
    if (token < 0 || (uint32_t)token >= r->d->vocab_size)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (r->pos >= r->max_tokens || r->pos >= r->d->max_position)
        return DUET_STATUS_CAPACITY;
    embed(r, token);
    for (uint32_t l = 0; l < r->d->num_layers; l++) {
        if (r->d->arch == DUET_ARCH_LLAMA)
            llama_layer(r, l);
        else
            opt_layer(r, l);
    }
    head(r, logits);
    r->pos++;
    return DUET_STATUS_OK;
}
