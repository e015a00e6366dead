/*
 * Deterministic random weights (duet-mkmodel; docs/models.md explains the choices).
 *
 * Every element is a pure function of (seed, tensor name, element index):
 *
 *   stream = mix(seed ^ fnv1a64(name))                  one stream per tensor
 *   word   = mix(stream + (index / 4) × φ)              one 64-bit word per 4 elements
 *   u      = 16 bits of word, lane index % 4
 *   k      = (u × (2 k_max + 1)) >> 16 − k_max           uniform in [−k_max, k_max]
 *   value  = offset + step × k
 *
 * (mix: splitmix64's finaliser; φ: 2^64 / golden ratio.) Values do not depend on the order of
 * writing, the sharding or the dtype, and a test recomputes any element with duet__gen_value.
 * step is a power of two and k_max <= 255, so a value has at most 8 significant bits: exact in
 * BF16 (8-bit significand), F16 (11) and F32 — the three files of one seed hold the same model.
 * F16 also needs step >= 2^-24 (its smallest subnormal), which duet__gen_check enforces.
 *
 * Scales, σ the standard deviation (uniform on [−a, a]: σ = a/√3), e the embeddings' RMS (1
 * with an untied head; tied, the embeddings are the head and take its scale):
 *   LINEAR, PROJECT  σ = 1/√fan_in: unit-RMS inputs give unit-RMS outputs
 *   OUTPUT           σ = e/√fan_in, times 2^tail_log2 in layers >= tail_from (the deep-layer
 *                    knob: those layers then barely move the residual stream)
 *   OUTPUT_BIAS      σ = e/32, tail-scaled likewise (OPT out_proj and fc2 biases)
 *   EMBED, POSITIONS σ = e
 *   HEAD             σ = DUET__LOGIT_STD/√width: the final norm makes the hidden state unit-RMS,
 *                    so logits have σ ≈ 4 — a softmax over 32k-50k tokens that is neither flat
 *                    (σ ≪ 1) nor one-hot (σ ≫ 10): top-1 probabilities of about 0.3 on average
 *   NORM             1 + 2^-7 k, k <= 8, with a random sign when tied;  NORM_BIAS, BIAS 2^-7 k
 * Tied models need the last two twists, or they repeat one token forever: the current token's
 * embedding stays in the residual stream and, through the head, votes for itself. Scaling the
 * outputs to e keeps the token's share of the stream what it is untied, and random signs make
 * its self-vote Σ w_i e_i² average zero.
 */
#include "build_config.h"

#include "model-int.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PHI 0x9e3779b97f4a7c15ull

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t duet__gen_stream(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return mix(seed ^ h);
}

static float value_of(uint64_t word, unsigned lane, const struct duet__gen_dist *d)
{
    uint32_t u = (uint32_t)(word >> (16 * lane)) & 0xffffu;
    int32_t k = (int32_t)((u * (2 * d->k_max + 1)) >> 16) - (int32_t)d->k_max;
    float v = d->offset + d->step * (float)k;

    return d->random_sign && (u & 1u) ? -v : v; /* bit 0 barely touches k's high bits */
}

float duet__gen_value(uint64_t stream, uint64_t index, const struct duet__gen_dist *d)
{
    return value_of(mix(stream + (index / 4) * PHI), (unsigned)(index % 4), d);
}

void duet__gen_fill(uint64_t stream, uint64_t first, uint64_t count, const struct duet__gen_dist *d,
                    float *out)
{
    uint64_t i = 0;

    for (; i < count && (first + i) % 4; i++)
        out[i] = duet__gen_value(stream, first + i, d);
    for (; i + 4 <= count; i += 4) {
        uint64_t word = mix(stream + ((first + i) / 4) * PHI);

        out[i] = value_of(word, 0, d);
        out[i + 1] = value_of(word, 1, d);
        out[i + 2] = value_of(word, 2, d);
        out[i + 3] = value_of(word, 3, d);
    }
    for (; i < count; i++)
        out[i] = duet__gen_value(stream, first + i, d);
}

/* Uniform with standard deviation sigma: step = 2^e with a / step in (127.5, 255]. */
static void dist_for_std(double sigma, int extra_log2, struct duet__gen_dist *out)
{
    double a = sigma * sqrt(3.0);
    int e = (int)ceil(log2(a / 255.0));
    double k = round(a / ldexp(1.0, e));

    *out = (struct duet__gen_dist){
        .step = (float)ldexp(1.0, e + extra_log2),
        .k_max = k < 1     ? 1
                 : k > 255 ? 255
                           : (uint32_t)k,
    };
}

void duet__gen_dist_of(const struct duet__gen_params *p, const struct duet__slot *s,
                       struct duet__gen_dist *out)
{
    const duet_model_desc *d = &p->desc;
    uint32_t width = d->arch == DUET_ARCH_OPT ? d->word_embed_proj_dim : d->hidden_size;
    double head = DUET__LOGIT_STD / sqrt((double)width);
    double embed = d->tie_word_embeddings ? head : 1.0; /* RMS of the embeddings */

    switch (s->role) {
    case DUET__ROLE_LINEAR:
    case DUET__ROLE_PROJECT:
        return dist_for_std(1.0 / sqrt((double)s->fan_in), 0, out);
    case DUET__ROLE_OUTPUT:
        return dist_for_std(embed / sqrt((double)s->fan_in),
                            s->layer >= (int32_t)p->tail_from ? p->tail_log2 : 0, out);
    case DUET__ROLE_OUTPUT_BIAS:
        return dist_for_std(embed / 32, s->layer >= (int32_t)p->tail_from ? p->tail_log2 : 0, out);
    case DUET__ROLE_EMBED:
    case DUET__ROLE_POSITIONS:
        return dist_for_std(embed, 0, out);
    case DUET__ROLE_HEAD:
        return dist_for_std(head, 0, out);
    case DUET__ROLE_NORM:
        *out = (struct duet__gen_dist){
            .offset = 1.0f, .step = 0x1p-7f, .k_max = 8, .random_sign = d->tie_word_embeddings};
        return;
    default:
        *out = (struct duet__gen_dist){.offset = 0.0f, .step = 0x1p-7f, .k_max = 8};
    }
}

duet_status duet__gen_check(const struct duet__gen_params *p, struct duet__msg *msg)
{
    struct duet__slot *slots;
    size_t n;
    duet_status st = duet__desc_check(&p->desc, "duet-mkmodel", msg);

    if (st)
        return st;
    if (p->tail_log2 > 0 || p->tail_log2 < DUET__MIN_TAIL_LOG2)
        return duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT,
                          "duet-mkmodel: tail scale 2^%d is outside 2^%d .. 1", p->tail_log2,
                          DUET__MIN_TAIL_LOG2);
    if (p->tail_log2 && p->tail_from >= p->desc.num_layers)
        return duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT,
                          "duet-mkmodel: the tail starts at layer %u, past the last layer (%u)",
                          p->tail_from, p->desc.num_layers - 1);
    if (duet__layout_build(&p->desc, &slots, &n))
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "duet-mkmodel: out of memory");
    for (size_t i = 0; !st && i < n; i++) {
        struct duet__gen_dist dist;

        duet__gen_dist_of(p, &slots[i], &dist);
        if (dist.step < 0x1p-24f)
            st = duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT,
                            "duet-mkmodel: tensor '%s' would use steps of %g, below F16's "
                            "2^-24 (use a larger tail scale)",
                            slots[i].name, (double)dist.step);
    }
    free(slots);
    return st;
}

/* ---- writing a generated model ---------------------------------------------------------- */

struct gen_ctx {
    uint64_t *streams;            /* [n] per tensor */
    struct duet__gen_dist *dists; /* [n] per tensor */
};

static duet_status gen_fill(void *ctx, size_t i, uint64_t first, uint64_t count, float *out,
                            struct duet__msg *msg)
{
    struct gen_ctx *c = ctx;

    (void)msg;
    duet__gen_fill(c->streams[i], first, count, &c->dists[i], out);
    return DUET_STATUS_OK;
}

static char *provenance(const struct duet__gen_params *p)
{
    json_t *o = json_pack("{s:I, s:s}", "seed", (json_int_t)p->seed, "generator",
                          "duet-mkmodel " PACKAGE_VERSION);
    char *text;

    if (o && p->tail_log2 && p->tail_from < p->desc.num_layers) {
        json_object_set_new(o, "tail_from", json_integer(p->tail_from));
        json_object_set_new(o, "tail_scale", json_real(ldexp(1.0, p->tail_log2)));
    }
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static duet_status write_generated(const struct duet__gen_params *p, const struct duet__slot *s,
                                   size_t n, struct duet__msg *msg)
{
    struct duet__write_params wp = {p->dir, p->desc.torch_dtype, p->shard_bytes, p->flags};
    struct duet__wtensor *t = calloc(n + 1, sizeof(*t));
    struct gen_ctx c = {calloc(n + 1, sizeof(*c.streams)), calloc(n + 1, sizeof(*c.dists))};
    duet_status st;

    if (!t || !c.streams || !c.dists) {
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        t[i] = (struct duet__wtensor){
            .name = s[i].name, .rank = s[i].rank, .numel = duet__slot_numel(&s[i])};
        memcpy(t[i].shape, s[i].shape, sizeof(t[i].shape));
        c.streams[i] = duet__gen_stream(p->seed, s[i].name);
        duet__gen_dist_of(p, &s[i], &c.dists[i]);
    }
    st = duet__write_weights(&wp, t, n, gen_fill, &c, msg);
out_free:
    free(c.streams);
    free(c.dists);
    free(t);
    return st;
}

duet_status duet__gen_model(const struct duet__gen_params *p, struct duet__msg *msg)
{
    struct duet__slot *slots;
    size_t n;
    char *prov;
    duet_status st = duet__gen_check(p, msg);

    if (!st)
        st = duet__prepare_dir(p->dir, p->force, msg);
    if (st)
        return st;
    if (duet__layout_build(&p->desc, &slots, &n))
        return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
    st = write_generated(p, slots, n, msg);
    free(slots);
    if (st)
        return st;
    prov = provenance(p);
    st = duet__write_configs(p->dir, &p->desc, prov, msg);
    free(prov);
    return st;
}
