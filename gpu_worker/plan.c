/*
 * The GPU worker's host arithmetic (plan.h): how a model splits over tensor-parallel ranks, how
 * many KV blocks fit, the flat arrays one forward step hands the kernels, and the prefill
 * attention tile. Pure C without CUDA: the host tests check all of it on any machine.
 */
#include "build_config.h"

#include "plan.h"

#include <stdio.h>
#include <string.h>

/* ---- shards ------------------------------------------------------------------------------ */

duet_status duet__gpu_shard(const duet_model_desc *d, uint32_t tp, uint32_t rank,
                            duet_gpu_shard *out, char *err, size_t err_size)
{
    duet_gpu_shard sh = {.rank = rank, .tp = tp};

    if (tp == 0 || rank >= tp) {
        snprintf(err, err_size, "gpu worker: rank %u of tensor_parallel = %u", rank, tp);
        return DUET_STATUS_INVALID_ARGUMENT;
    }
    if (d->num_heads % tp || d->intermediate_size % tp) {
        snprintf(err, err_size,
                 "gpu worker: tensor_parallel = %u must divide the model's %u attention heads "
                 "and its intermediate size %u",
                 tp, d->num_heads, d->intermediate_size);
        return DUET_STATUS_UNSUPPORTED;
    }
    if (d->num_kv_heads % tp && tp % d->num_kv_heads) {
        snprintf(err, err_size,
                 "gpu worker: tensor_parallel = %u and the model's %u key/value heads: one must "
                 "divide the other",
                 tp, d->num_kv_heads);
        return DUET_STATUS_UNSUPPORTED;
    }
    sh.n_heads = d->num_heads / tp;
    sh.head0 = rank * sh.n_heads;
    if (d->num_kv_heads % tp == 0) {
        sh.n_kv_heads = d->num_kv_heads / tp;
        sh.kv_head0 = rank * sh.n_kv_heads;
    } else { /* replicated: the kv head of this rank's query heads (one group holds them all) */
        sh.n_kv_heads = 1;
        sh.kv_head0 = sh.head0 / (d->num_heads / d->num_kv_heads);
    }
    sh.n_inter = d->intermediate_size / tp;
    sh.inter0 = rank * sh.n_inter;
    sh.vocab_pad = (d->vocab_size + tp - 1) / tp;
    sh.vocab0 = rank * sh.vocab_pad;
    if (sh.vocab0 > d->vocab_size)
        sh.vocab0 = d->vocab_size;
    sh.n_vocab =
        d->vocab_size - sh.vocab0 < sh.vocab_pad ? d->vocab_size - sh.vocab0 : sh.vocab_pad;
    *out = sh;
    return DUET_STATUS_OK;
}

/* ---- cache sizing ------------------------------------------------------------------------ */

uint64_t duet__gpu_block_bytes(const duet_model_desc *d, const duet_gpu_shard *sh,
                               uint32_t block_size, duet_gpu_dtype dt)
{
    return (uint64_t)d->num_layers * 2 * sh->n_kv_heads * block_size * d->head_dim *
           duet__gpu_dtype_size(dt);
}

uint64_t duet__gpu_num_blocks(uint64_t budget, const uint64_t *free_bytes,
                              const uint64_t *total_bytes, uint32_t tp, double fraction,
                              uint64_t rank_block_bytes)
{
    uint64_t best = UINT64_MAX;

    if (rank_block_bytes == 0 || tp == 0)
        return 0;
    if (budget > 0)
        return budget / (rank_block_bytes * tp);
    for (uint32_t r = 0; r < tp; r++) {
        uint64_t cap = (uint64_t)((double)total_bytes[r] * fraction);
        uint64_t used = total_bytes[r] - (free_bytes[r] < total_bytes[r] ? free_bytes[r] : 0);
        uint64_t n = cap > used ? (cap - used) / rank_block_bytes : 0;

        best = n < best ? n : best;
    }
    return best;
}

/* ---- one step ---------------------------------------------------------------------------- */

void duet__gpu_plan_count(duet_gpu_plan *p, const duet_gpu_plan_seq *seqs, uint32_t n,
                          uint32_t block_size, uint32_t q_rows)
{
    memset(p, 0, sizeof(*p));
    p->n_segs = n;
    p->q_rows = q_rows;
    for (uint32_t i = 0; i < n; i++) {
        const duet_gpu_plan_seq *q = &seqs[i];
        uint32_t last = q->pos + q->n - 1;

        p->n_rows += q->n;
        p->n_bt += last / block_size + 1;
        if (q->n == 1) {
            uint32_t parts = duet__gpu_decode_parts(last + 1);

            p->n_dec++;
            p->max_parts = parts > p->max_parts ? parts : p->max_parts;
        } else {
            p->n_tiles += (q->n + q_rows - 1) / q_rows;
        }
    }
}

static size_t place(size_t *at, size_t bytes)
{
    size_t off = *at;

    *at = (off + bytes + 15) / 16 * 16;
    return off;
}

void duet__gpu_plan_layout(duet_gpu_plan *p)
{
    size_t at = 0;

    p->off_tokens = place(&at, (size_t)p->n_rows * sizeof(uint32_t));
    p->off_pos = place(&at, (size_t)p->n_rows * sizeof(uint32_t));
    p->off_slot = place(&at, (size_t)p->n_rows * sizeof(uint32_t));
    p->off_segs = place(&at, (size_t)p->n_segs * sizeof(duet_gpu_seg));
    p->off_dec = place(&at, (size_t)p->n_dec * sizeof(uint32_t));
    p->off_tiles = place(&at, (size_t)p->n_tiles * sizeof(duet_gpu_tile));
    p->off_bt = place(&at, (size_t)p->n_bt * sizeof(uint32_t));
    p->off_out = place(&at, (size_t)p->n_out * sizeof(uint32_t));
    p->off_rows = place(&at, (size_t)p->n_out * sizeof(duet_gpu_sample_row));
    p->bytes = at;
}

void duet__gpu_plan_fill(const duet_gpu_plan *p, void *arena, const duet_gpu_plan_seq *seqs,
                         uint32_t n, uint32_t block_size)
{
    char *a = arena;
    uint32_t *tokens = (uint32_t *)(a + p->off_tokens), *pos = (uint32_t *)(a + p->off_pos);
    uint32_t *slot = (uint32_t *)(a + p->off_slot), *dec = (uint32_t *)(a + p->off_dec);
    uint32_t *bt = (uint32_t *)(a + p->off_bt);
    duet_gpu_seg *segs = (duet_gpu_seg *)(a + p->off_segs);
    duet_gpu_tile *tiles = (duet_gpu_tile *)(a + p->off_tiles);
    uint32_t row = 0, n_bt = 0, n_dec = 0, n_tiles = 0;

    for (uint32_t i = 0; i < n; i++) {
        const duet_gpu_plan_seq *q = &seqs[i];
        uint32_t blocks = (q->pos + q->n - 1) / block_size + 1;

        segs[i] = (duet_gpu_seg){row, q->n, q->pos, n_bt};
        memcpy(bt + n_bt, q->block_table, blocks * sizeof(uint32_t));
        for (uint32_t j = 0; j < q->n; j++) {
            uint32_t at = q->pos + j;

            tokens[row + j] = (uint32_t)q->tokens[j];
            pos[row + j] = at;
            slot[row + j] = q->block_table[at / block_size] * block_size + at % block_size;
        }
        if (q->n == 1)
            dec[n_dec++] = i;
        else
            for (uint32_t q0 = 0; q0 < q->n; q0 += p->q_rows)
                tiles[n_tiles++] = (duet_gpu_tile){i, q0};
        row += q->n;
        n_bt += blocks;
    }
}

/* ---- the prefill attention tile (the shared-memory layout at the top of kernels.cu) ---------- */

size_t duet__gpu_prefill_shared(uint32_t q_rows, uint32_t kv_rows, uint32_t head_dim)
{
    size_t q = q_rows, kv = kv_rows, hd = head_dim;

    return sizeof(float) * (2 * q * hd + kv * (hd + 1) + kv * hd + q * kv + 3 * q);
}

duet_status duet__gpu_prefill_config(uint32_t head_dim, size_t shared_limit,
                                     duet_gpu_prefill_cfg *out)
{
    static const uint32_t q_opts[] = {64, 32, 16, 8, 4}, kv_opts[] = {64, 32, 16};

    if (head_dim == 0 || head_dim % 2 || head_dim > DUET_GPU_MAX_HEAD_DIM)
        return DUET_STATUS_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof(q_opts) / sizeof(q_opts[0]); i++) {
        for (size_t j = 0; j < sizeof(kv_opts) / sizeof(kv_opts[0]); j++) {
            size_t bytes = duet__gpu_prefill_shared(q_opts[i], kv_opts[j], head_dim);

            if (bytes <= shared_limit) {
                out->q_rows = q_opts[i];
                out->kv_rows = kv_opts[j];
                out->threads = 128;
                out->shared_bytes = bytes;
                return DUET_STATUS_OK;
            }
        }
    }
    return DUET_STATUS_INVALID_ARGUMENT;
}
