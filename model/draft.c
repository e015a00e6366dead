/*
 * A draft model derived from a target (duet-mkmodel --draft-of DIR --layers N --noise X).
 *
 *   target (L layers)                      draft (N layers)
 *   embed_tokens, embed_positions  ──copy──►  same (shared vocabulary and embeddings)
 *   layer sel[0], ..., sel[N-1]    ──+noise─►  layers 0 .. N-1
 *   final norm, lm_head, project_* ──+noise─►  same names
 *
 * sel is the first N layers, or (spread) N evenly spaced ones from 0 to L-1. The draft's config
 * is the target's with num_hidden_layers = N. Every perturbed tensor w becomes
 *
 *   w' = bf16(w + q δ),  δ uniform integer in [-D, D],  D = round(127 X),
 *   q  = 2^round(log2(rms(w) √3 / 127))
 *
 * so that the perturbation's RMS is about X × rms(w) (for a generated target, q is exactly its
 * step and D/127 of its range). δ comes from the same counter-based generator as the weights
 * (the draft's seed, the tensor's name, the element index). Rounding to BF16 keeps the f32,
 * f16 and bf16 drafts of one target and seed the same model; X = 0 copies exactly.
 * The target is read through the mapping in chunks, twice per perturbed tensor (RMS, then
 * values): memory stays at a few chunk buffers.
 */
#include "model-int.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NOISE_SALT 0x6472616674ull /* "draft": noise streams differ from weight streams */

struct draft_ctx {
    const duet_tensor **src; /* [n] the target tensor each draft tensor comes from */
    uint64_t *streams;       /* [n] noise stream */
    bool *perturb;           /* [n] add noise (false: copy) */
    uint32_t d_max;          /* D */
    float quantum;           /* q of the tensor being written */
    float *noise;            /* scratch, [cap] */
    uint64_t cap;            /* floats in noise */
};

void duet__draft_select(uint32_t target_layers, uint32_t n, bool spread, uint32_t *out)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!spread || n == 1)
            out[i] = i;
        else
            out[i] = (uint32_t)llround((double)i * (target_layers - 1) / (double)(n - 1));
    }
}

/* q for a tensor: from the RMS of its values, at least F16's 2^-24. */
static float quantum_of(const duet_tensor *t, float *buf, uint64_t cap)
{
    double sum = 0, q;

    for (uint64_t first = 0; first < t->numel; first += cap) {
        uint64_t n = t->numel - first < cap ? t->numel - first : cap;

        duet_tensor_read_f32(t, first, n, buf);
        for (uint64_t i = 0; i < n; i++)
            sum += (double)buf[i] * buf[i];
    }
    if (sum <= 0 || !t->numel)
        return 0x1p-24f;
    q = ldexp(1.0, (int)lround(log2(sqrt(sum / (double)t->numel) * sqrt(3.0) / 127.0)));
    return (float)(q < 0x1p-24 ? 0x1p-24 : q);
}

static duet_status draft_fill(void *ctx, size_t i, uint64_t first, uint64_t count, float *out,
                              struct duet__msg *msg)
{
    struct draft_ctx *c = ctx;
    struct duet__gen_dist dist;

    if (!c->perturb[i])
        return duet_tensor_read_f32(c->src[i], first, count, out);
    if (count > c->cap) {
        free(c->noise);
        c->cap = 0;
        if (!(c->noise = malloc(count * sizeof(float))))
            return duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "draft: out of memory");
        c->cap = count;
    }
    if (first == 0)
        c->quantum = quantum_of(c->src[i], c->noise, c->cap);
    dist = (struct duet__gen_dist){.offset = 0.0f, .step = c->quantum, .k_max = c->d_max};
    duet_tensor_read_f32(c->src[i], first, count, out);
    duet__gen_fill(c->streams[i], first, count, &dist, c->noise);
    for (uint64_t j = 0; j < count; j++)
        out[j] = duet__bf16_to_f32(duet__f32_to_bf16(out[j] + c->noise[j]));
    return DUET_STATUS_OK;
}

/* Binds draft slot s to its target tensor and fills the writer's entry. */
static duet_status bind(const duet_model *target, const struct duet__draft_params *p,
                        const uint32_t *sel, const struct duet__slot *s, struct draft_ctx *c,
                        size_t i, struct duet__wtensor *t, struct duet__msg *msg)
{
    char name[128];

    duet__layer_name(duet_model_describe(target), s->layer < 0 ? -1 : (int32_t)sel[s->layer],
                     s->layer < 0 ? s->name : s->suffix, name, sizeof(name));
    c->src[i] = duet_model_tensor(target, name);
    if (!c->src[i])
        return duet__fail(msg, DUET_STATUS_INTERNAL, "%s: tensor '%s' vanished", p->target_dir,
                          name);
    c->perturb[i] = p->noise > 0 && s->role != DUET__ROLE_EMBED && s->role != DUET__ROLE_POSITIONS;
    c->streams[i] = duet__gen_stream(p->seed ^ NOISE_SALT, s->name);
    *t = (struct duet__wtensor){.name = s->name, .rank = s->rank, .numel = duet__slot_numel(s)};
    memcpy(t->shape, s->shape, sizeof(t->shape));
    return DUET_STATUS_OK;
}

static char *draft_provenance(const struct duet__draft_params *p, const uint32_t *sel)
{
    json_t *layers = json_array(), *o;
    char *text;

    for (uint32_t i = 0; i < p->num_layers; i++)
        json_array_append_new(layers, json_integer(sel[i]));
    o = json_pack("{s:s, s:o, s:f, s:I}", "draft_of", p->target_dir, "layers", layers, "noise",
                  p->noise, "seed", (json_int_t)p->seed);
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* Writes the weights of desc (the draft) from target. */
static duet_status write_draft(const duet_model *target, const struct duet__draft_params *p,
                               const duet_model_desc *desc, const uint32_t *sel,
                               struct duet__msg *msg)
{
    struct duet__write_params wp = {p->dir, desc->torch_dtype, p->shard_bytes, p->flags};
    struct draft_ctx c = {.d_max = (uint32_t)lround(p->noise * 127.0)};
    struct duet__wtensor *t = NULL;
    struct duet__slot *s = NULL;
    size_t n = 0;
    duet_status st = duet__layout_build(desc, &s, &n);

    if (!st) {
        t = calloc(n + 1, sizeof(*t));
        c.src = calloc(n + 1, sizeof(*c.src));
        c.streams = calloc(n + 1, sizeof(*c.streams));
        c.perturb = calloc(n + 1, sizeof(*c.perturb));
    }
    if (st || !t || !c.src || !c.streams || !c.perturb)
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
    for (size_t i = 0; !st && i < n; i++)
        st = bind(target, p, sel, &s[i], &c, i, &t[i], msg);
    if (!st)
        st = duet__write_weights(&wp, t, n, draft_fill, &c, msg);
    free(c.src);
    free(c.streams);
    free(c.perturb);
    free(c.noise);
    free(t);
    free(s);
    return st;
}

static duet_status check_params(const duet_model_desc *target, const struct duet__draft_params *p,
                                struct duet__msg *msg)
{
    if (p->num_layers < 1 || p->num_layers > target->num_layers)
        return duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT,
                          "%s: a draft keeps 1 .. %u layers of this target, not %u", p->target_dir,
                          target->num_layers, p->num_layers);
    if (!(p->noise >= 0 && p->noise <= DUET__MAX_NOISE))
        return duet__fail(msg, DUET_STATUS_INVALID_ARGUMENT, "draft: noise %g is outside 0 .. %g",
                          p->noise, DUET__MAX_NOISE);
    return DUET_STATUS_OK;
}

duet_status duet__gen_draft(const struct duet__draft_params *p, struct duet__msg *msg)
{
    duet_model *target;
    duet_model_desc desc;
    uint32_t *sel = NULL;
    char *prov = NULL;
    duet_status st = duet_model_create(p->target_dir, p->flags, &target, msg->buf, msg->size);

    if (st)
        return st;
    desc = *duet_model_describe(target);
    st = check_params(&desc, p, msg);
    if (!st && !(sel = calloc(p->num_layers, sizeof(*sel))))
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
    if (st)
        goto out_target;
    duet__draft_select(desc.num_layers, p->num_layers, p->spread, sel);
    desc.num_layers = p->num_layers;
    if (p->has_dtype)
        desc.torch_dtype = p->dtype;
    st = duet__prepare_dir(p->dir, p->force, msg);
    if (!st)
        st = write_draft(target, p, &desc, sel, msg);
    if (!st && !(prov = draft_provenance(p, sel)))
        st = duet__fail(msg, DUET_STATUS_OUT_OF_MEMORY, "%s: out of memory", p->dir);
    if (!st)
        st = duet__write_configs(p->dir, &desc, prov, msg);
    free(prov);
out_target:
    free(sel);
    duet_model_destroy(target);
    return st;
}
