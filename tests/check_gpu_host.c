/*
 * The GPU worker's host arithmetic, which runs (and is tested) without a GPU: tensor-parallel
 * shards (gpu_worker/plan.c: every head, key/value head, MLP column and vocabulary row owned
 * exactly once, or replicated as documented), KV block sizing, one step's flat arrays (every fed
 * row's slot through its block table, tiles covering each prefill row exactly once, decode
 * partitions), the KV element offsets the kernels use (gpu_worker-int.h, compiled for the host
 * here), the sampler's random numbers (sampling.h's generator, which the device shares) and the
 * prefill attention kernel's launch shape (gpu_launch_cases.h).
 */
#include "gpu_worker/plan.h"

#include "check_util.h"
#include "gpu_launch_cases.h"
#include "sampling.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static duet_model_desc llama(uint32_t heads, uint32_t kv_heads, uint32_t inter, uint32_t vocab)
{
    duet_model_desc d;

    memset(&d, 0, sizeof(d));
    d.arch = DUET_ARCH_LLAMA;
    d.hidden_size = heads * 64;
    d.num_heads = heads;
    d.num_kv_heads = kv_heads;
    d.head_dim = 64;
    d.intermediate_size = inter;
    d.num_layers = 3;
    d.vocab_size = vocab;
    d.max_position = 4096;
    return d;
}

/* ---- shards ------------------------------------------------------------------------------ */

/* Every query head, MLP column and vocabulary row is owned by exactly one rank, in rank order;
 * key/value heads are split the same way or each rank keeps the one its query heads read. */
static void check_partition(const duet_model_desc *d, uint32_t tp)
{
    uint32_t heads = 0, inter = 0, vocab = 0, kv = 0, group = d->num_heads / d->num_kv_heads;
    char err[256];

    for (uint32_t r = 0; r < tp; r++) {
        duet_gpu_shard sh;

        ck_assert_msg(duet__gpu_shard(d, tp, r, &sh, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                      err);
        ck_assert_uint_eq(sh.rank, r);
        ck_assert_uint_eq(sh.head0, heads);
        ck_assert_uint_eq(sh.inter0, inter);
        ck_assert_uint_eq(sh.vocab0, vocab);
        ck_assert_uint_eq(sh.vocab_pad, (d->vocab_size + tp - 1) / tp);
        ck_assert_uint_le(sh.n_vocab, sh.vocab_pad);
        heads += sh.n_heads;
        inter += sh.n_inter;
        vocab += sh.n_vocab;
        if (d->num_kv_heads % tp == 0) {
            ck_assert_uint_eq(sh.kv_head0, kv);
            kv += sh.n_kv_heads;
        } else {
            ck_assert_uint_eq(sh.n_kv_heads, 1);
        }
        /* each local query head reads a kv head the rank holds: h / (local group) */
        for (uint32_t h = 0; h < sh.n_heads; h++) {
            uint32_t global_kv = (sh.head0 + h) / group;
            uint32_t local = h / (sh.n_heads / sh.n_kv_heads);

            ck_assert_uint_lt(local, sh.n_kv_heads);
            ck_assert_uint_eq(sh.kv_head0 + local, global_kv);
        }
    }
    ck_assert_uint_eq(heads, d->num_heads);
    ck_assert_uint_eq(inter, d->intermediate_size);
    ck_assert_uint_eq(vocab, d->vocab_size);
    if (d->num_kv_heads % tp == 0)
        ck_assert_uint_eq(kv, d->num_kv_heads);
}

START_TEST(test_shards_cover_heads_columns_and_vocabulary_once)
{
    duet_model_desc mha = llama(32, 32, 11008, 32000), gqa = llama(32, 8, 14336, 128256);
    duet_model_desc odd_vocab = llama(12, 4, 3072, 50257), one_kv = llama(8, 1, 1024, 1000);

    for (uint32_t tp = 1; tp <= 8; tp *= 2) {
        check_partition(&mha, tp);
        check_partition(&gqa, tp);
        check_partition(&one_kv, tp); /* one kv head: replicated for tp > 1 */
    }
    check_partition(&odd_vocab, 1);
    check_partition(&odd_vocab, 2); /* 50257 rows: the last rank has one fewer */
    check_partition(&odd_vocab, 4);
}
END_TEST

START_TEST(test_shards_refuse_what_does_not_divide)
{
    duet_model_desc d = llama(12, 4, 3072, 50257), e = llama(32, 8, 11008, 32000);
    duet_gpu_shard sh;
    char err[256];

    ck_assert_int_eq(duet__gpu_shard(&d, 8, 0, &sh, err, sizeof(err)), DUET_STATUS_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "12 attention heads"));
    ck_assert_int_eq(duet__gpu_shard(&d, 3, 0, &sh, err, sizeof(err)),
                     DUET_STATUS_UNSUPPORTED); /* 4 kv heads and 3 ranks */
    ck_assert_ptr_nonnull(strstr(err, "key/value heads"));
    e.intermediate_size = 11001;
    ck_assert_int_eq(duet__gpu_shard(&e, 2, 0, &sh, err, sizeof(err)), DUET_STATUS_UNSUPPORTED);
    ck_assert_int_eq(duet__gpu_shard(&d, 2, 2, &sh, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet__gpu_shard(&d, 0, 0, &sh, err, sizeof(err)),
                     DUET_STATUS_INVALID_ARGUMENT);
}
END_TEST

/* ---- cache sizing ------------------------------------------------------------------------ */

START_TEST(test_block_bytes_and_block_counts)
{
    duet_model_desc d = llama(32, 8, 14336, 128256);
    duet_gpu_shard s1, s2;
    uint64_t free2[2] = {10ull << 30, 8ull << 30}, total2[2] = {16ull << 30, 16ull << 30}, b1, b2;
    char err[256];

    d.num_layers = 32;
    d.head_dim = 128;
    ck_assert_int_eq(duet__gpu_shard(&d, 1, 0, &s1, err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_int_eq(duet__gpu_shard(&d, 2, 1, &s2, err, sizeof(err)), DUET_STATUS_OK);
    /* Llama-3-8B shape, block of 16 in bf16: 32 layers × K,V × 8 heads × 16 × 128 × 2 bytes */
    b1 = duet__gpu_block_bytes(&d, &s1, 16, DUET_GPU_BF16);
    ck_assert_uint_eq(b1, 32ull * 2 * 8 * 16 * 128 * 2);
    b2 = duet__gpu_block_bytes(&d, &s2, 16, DUET_GPU_BF16);
    ck_assert_uint_eq(b2 * 2, b1);
    ck_assert_uint_eq(duet__gpu_block_bytes(&d, &s1, 16, DUET_GPU_F32), 2 * b1);
    /* a budget covers every rank; without one, each rank's cap (fraction × total) less what is in
     * use, the smallest rank deciding */
    ck_assert_uint_eq(duet__gpu_num_blocks(1ull << 30, NULL, NULL, 2, 0.9, b2), (1ull << 30) / b1);
    ck_assert_uint_eq(duet__gpu_num_blocks(0, free2, total2, 2, 0.75, b2),
                      ((12ull << 30) - (8ull << 30)) / b2); /* rank 1: 12 GiB cap, 8 in use */
    ck_assert_uint_eq(duet__gpu_num_blocks(0, free2, total2, 1, 1.0, b1), (10ull << 30) / b1);
    ck_assert_uint_eq(duet__gpu_num_blocks(0, free2, total2, 2, 0.5, b2), 0); /* cap below use */
    ck_assert_uint_eq(duet__gpu_num_blocks(0, free2, total2, 2, 0.5, 0), 0);
}
END_TEST

/* ---- one step ---------------------------------------------------------------------------- */

START_TEST(test_plan_maps_rows_to_slots_through_block_tables)
{
    enum { BS = 16 };
    static const uint32_t bt0[] = {7, 3, 9}, bt1[] = {11}, bt2[] = {2, 4, 6, 8, 10, 12, 14, 16};
    int32_t t0[40], t1[1] = {5}, t2[3] = {1, 2, 3};
    duet_gpu_plan_seq seqs[3] = {{t0, 40, 0, bt0}, {t1, 1, 9, bt1}, {t2, 3, 120, bt2}};
    duet_gpu_plan p;
    void *arena;
    const uint32_t *tok, *pos, *slot, *bt, *dec;
    const duet_gpu_seg *segs;
    const duet_gpu_tile *tiles;
    uint32_t row = 0, covered[43] = {0};

    for (int i = 0; i < 40; i++)
        t0[i] = 100 + i;
    duet__gpu_plan_count(&p, seqs, 3, BS, 16);
    ck_assert_uint_eq(p.n_rows, 44);
    ck_assert_uint_eq(p.n_segs, 3);
    ck_assert_uint_eq(p.n_dec, 1);
    ck_assert_uint_eq(p.max_parts, 1);
    ck_assert_uint_eq(p.n_tiles, 3 + 1); /* 40 rows in tiles of 16, and 3 rows */
    ck_assert_uint_eq(p.n_bt, 3 + 1 + 8);
    p.n_out = 5;
    duet__gpu_plan_layout(&p);
    ck_assert_uint_eq(p.off_tokens % 16, 0);
    ck_assert_uint_eq(p.off_rows % 16, 0);
    ck_assert_uint_ge(p.bytes, p.off_rows + 5 * sizeof(duet_gpu_sample_row));
    arena = malloc(p.bytes);
    ck_assert_ptr_nonnull(arena);
    duet__gpu_plan_fill(&p, arena, seqs, 3, BS);
    tok = (const uint32_t *)((char *)arena + p.off_tokens);
    pos = (const uint32_t *)((char *)arena + p.off_pos);
    slot = (const uint32_t *)((char *)arena + p.off_slot);
    bt = (const uint32_t *)((char *)arena + p.off_bt);
    dec = (const uint32_t *)((char *)arena + p.off_dec);
    segs = (const duet_gpu_seg *)((char *)arena + p.off_segs);
    tiles = (const duet_gpu_tile *)((char *)arena + p.off_tiles);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(segs[i].row0, row);
        ck_assert_uint_eq(segs[i].n, seqs[i].n);
        ck_assert_uint_eq(segs[i].pos, seqs[i].pos);
        for (uint32_t j = 0; j < seqs[i].n; j++) {
            uint32_t p_ = seqs[i].pos + j;

            ck_assert_uint_eq(tok[row + j], (uint32_t)seqs[i].tokens[j]);
            ck_assert_uint_eq(pos[row + j], p_);
            ck_assert_uint_eq(slot[row + j], seqs[i].block_table[p_ / BS] * BS + p_ % BS);
            /* the kernels' path: the segment's copy of the table */
            ck_assert_uint_eq(bt[segs[i].bt + p_ / BS], seqs[i].block_table[p_ / BS]);
        }
        row += seqs[i].n;
    }
    ck_assert_uint_eq(dec[0], 1);
    for (uint32_t t = 0; t < p.n_tiles; t++) {
        const duet_gpu_seg *g = &segs[tiles[t].seg];

        ck_assert_uint_ne(g->n, 1);
        for (uint32_t j = tiles[t].q0; j < g->n && j < tiles[t].q0 + p.q_rows; j++)
            covered[g->row0 + j - (g->row0 >= 41 ? 1 : 0)]++; /* skip the decode row 40 */
    }
    for (uint32_t i = 0; i < 43; i++)
        ck_assert_uint_eq(covered[i], 1);
    free(arena);
}
END_TEST

START_TEST(test_plan_splits_long_decode_contexts_into_partitions)
{
    static uint32_t table[4096];
    int32_t tok = 1;
    duet_gpu_plan_seq seqs[3] = {{&tok, 1, 0, table}, {&tok, 1, 511, table}, {&tok, 1, 512, table}};
    duet_gpu_plan p;

    ck_assert_uint_eq(duet__gpu_decode_parts(1), 1);
    ck_assert_uint_eq(duet__gpu_decode_parts(DUET_GPU_DECODE_PARTITION), 1);
    ck_assert_uint_eq(duet__gpu_decode_parts(DUET_GPU_DECODE_PARTITION + 1), 2);
    duet__gpu_plan_count(&p, seqs, 3, 16, 16);
    ck_assert_uint_eq(p.n_dec, 3);
    ck_assert_uint_eq(p.max_parts, 2); /* position 512: 513 positions */
    ck_assert_uint_eq(p.n_tiles, 0);
    seqs[2].pos = 100000;
    duet__gpu_plan_count(&p, seqs, 3, 16, 16);
    ck_assert_uint_eq(p.max_parts,
                      (100001 + DUET_GPU_DECODE_PARTITION - 1) / DUET_GPU_DECODE_PARTITION);
    ck_assert_uint_eq(p.n_bt, 1 + 32 + 100000 / 16 + 1);
}
END_TEST

/* ---- shared host/device arithmetic ------------------------------------------------------- */

START_TEST(test_kv_offsets_follow_the_block_layout)
{
    duet_gpu_kv kv = {.block_size = 16, .num_layers = 3, .kv_heads = 2, .head_dim = 64};
    uint32_t table[] = {5, 2};
    size_t seen = 0;

    kv.block_elems = (size_t)kv.num_layers * 2 * kv.kv_heads * kv.block_size * kv.head_dim;
    /* walking [layer][kind][head][slot] in order visits the block's elements in order */
    for (uint32_t l = 0; l < 3; l++)
        for (uint32_t k = 0; k < 2; k++)
            for (uint32_t h = 0; h < 2; h++)
                for (uint32_t s = 0; s < 16; s++, seen += kv.head_dim)
                    ck_assert_uint_eq(duet__gpu_kv_offset(&kv, 4, l, k, h, s),
                                      4 * kv.block_elems + seen);
    ck_assert_uint_eq(seen, kv.block_elems);
    ck_assert_uint_eq(duet__gpu_kv_pos_offset(&kv, table, 1, 1, 0, 17),
                      duet__gpu_kv_offset(&kv, 2, 1, 1, 0, 1));
    ck_assert_uint_eq(duet__gpu_kv_pos_offset(&kv, table, 0, 0, 1, 15),
                      duet__gpu_kv_offset(&kv, 5, 0, 0, 1, 15));
}
END_TEST

START_TEST(test_rng_is_a_pure_function_of_seed_position_and_draw)
{
    double sum = 0;

    for (uint64_t i = 0; i < 10000; i++) {
        double u = duet__rng_uniform(i * 7919, i % 97, (uint32_t)(i % 3));

        ck_assert(u >= 0.0 && u < 1.0);
        ck_assert(u == duet__rng_uniform(i * 7919, i % 97, (uint32_t)(i % 3)));
        sum += u;
    }
    ck_assert_double_eq_tol(sum / 10000, 0.5, 0.02);
    ck_assert(duet__rng_uniform(1, 2, 0) != duet__rng_uniform(1, 2, 1));
    ck_assert(duet__rng_uniform(1, 2, 0) != duet__rng_uniform(1, 3, 0));
}
END_TEST

int main(void)
{
    const struct duet_test_case cases[] = {
        {"shards", test_shards_cover_heads_columns_and_vocabulary_once},
        {"shard_errors", test_shards_refuse_what_does_not_divide},
        {"block_bytes", test_block_bytes_and_block_counts},
        {"plan", test_plan_maps_rows_to_slots_through_block_tables},
        {"plan_partitions", test_plan_splits_long_decode_contexts_into_partitions},
        {"kv_offsets", test_kv_offsets_follow_the_block_layout},
        {"rng", test_rng_is_a_pure_function_of_seed_position_and_draw},
    };
    Suite *s = suite_create("gpu_host");

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 0);
    add_gpu_launch_cases(s);
    return duet_test_run(s);
}
