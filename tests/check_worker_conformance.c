/*
 * The worker ABI contract (plugin.h, DESIGN.md §3), checked against whichever worker plugin this
 * program is given, only through its ABI: the path in argv[1] (else $DUET_TEST_WORKER). The plugin
 * is loaded once in a child process to learn its name, which picks its profile (worker_harness.c:
 * tolerances, dtypes, capabilities, cache settings); a plugin without a profile is a failure.
 *
 * What every worker must show: its capabilities and model description, the cache geometry, the
 * refusals of bad tokens, positions, block tables, cache operations and malformed batches, execute
 * before init_cache, an unallocatable cache. A worker that runs the model's forward pass
 * (profile.numerics: CPU, GPU) also matches the double-precision reference (reference_forward.h,
 * tolerances at the top of worker_harness.h) on prefill, decode, mixed batches, shuffled block
 * tables, copy-on-write, swap, the order of cache operations, drafting, scoring, seeded sampling,
 * sampled frequencies and prompt log-probabilities, and refuses a missing model folder. The mock
 * (tests/fixtures/mock_worker.c) reads no model files and computes logits from a hash: only the
 * cases that need no reference run against it.
 *
 * `make check` runs it three times (tests/conformance.sh, for tests/worker-NAME.conformance):
 * against tests/.libs/duet_mock_worker.so, $DUET_TEST_CPU_WORKER and $DUET_TEST_GPU_WORKER, and
 * once more against the CPU worker as on an AVX2-only CPU (tests/worker-cpu_avx2.avx2). Exit 77
 * (automake's SKIP) when the plugin is not there, for the GPU worker when no CUDA device is
 * visible or under valgrind. Every behaviour runs in each compute dtype of the profile (the CPU
 * worker's bf16 only where it runs: see harness_init).
 */
#define _GNU_SOURCE /* nftw */
#include "worker_harness.h"

#include "check_util.h"

#include <check.h>
#include <dlfcn.h>
#include <link.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ==== description and cache geometry ====================================================== */

START_TEST(test_plugin_declares_its_capabilities_and_describes_the_model)
{
    const struct tmodel *tm = &models[M_LLAMA3];
    const uint64_t caps = profile->caps;
    struct wk_opts o = {0};
    struct wk k;

    wk_open(&k, tm, &o);
    ck_assert_str_eq(k.t->name, profile->name);
    ck_assert_uint_eq(k.t->abi_major, DUET_ABI_MAJOR);
    ck_assert_msg((k.t->caps & ~profile->caps_optional) == caps,
                  "caps 0x%llx, expected 0x%llx (optionally | 0x%llx)",
                  (unsigned long long)k.t->caps, (unsigned long long)caps,
                  (unsigned long long)profile->caps_optional);
    if (profile->details_names) {
        ck_assert_ptr_nonnull(k.t->details);
        ck_assert_msg(strstr(k.t->details, profile->details_names) != NULL, "details: %s",
                      k.t->details);
    }
    if (!profile->numerics) { /* the mock: its own model, no weights */
        ck_assert_uint_gt(k.info.vocab_size, 0);
        ck_assert_uint_gt(k.info.max_position, 0);
        ck_assert_uint_gt(k.info.num_layers, 0);
        ck_assert_uint_gt(k.info.num_kv_heads, 0);
        ck_assert_uint_gt(k.info.head_dim, 0);
        ck_assert_uint_gt(k.info.n_eos, 0);
        wk_close(&k);
        return;
    }
    ck_assert_uint_eq(k.info.vocab_size, tm->desc.vocab_size);
    ck_assert_uint_eq(k.info.max_position, tm->desc.max_position);
    ck_assert_uint_eq(k.info.num_layers, tm->desc.num_layers);
    ck_assert_uint_eq(k.info.num_kv_heads, tm->desc.num_kv_heads);
    ck_assert_uint_eq(k.info.head_dim, tm->desc.head_dim);
    ck_assert_int_eq(k.info.bos_token_id, tm->desc.bos_token_id);
    ck_assert_uint_eq(k.info.n_eos, tm->desc.n_eos);
    ck_assert_int_eq(k.info.eos_token_ids[0], tm->desc.eos_token_ids[0]);
    ck_assert_uint_gt(k.info.weight_bytes, 0);
    wk_close(&k);
}
END_TEST

/* Blocks of a budget of 0: the profile's bytes (cache.cpu_kv_space_gib = 0.25 on the CPU, the
 * mock's own default); on the GPU, free device memory × cache.memory_fraction = 0.5, so at least
 * one block (check_gpu_worker bounds it by the device's memory). */
static void assert_budget_zero_geometry(const duet_cache_geometry *g)
{
    if (profile->budget_zero_bytes)
        ck_assert_uint_eq(g->num_blocks, profile->budget_zero_bytes / g->block_bytes);
    else
        ck_assert_uint_gt(g->num_blocks, 0);
}

START_TEST(test_cache_geometry_follows_layers_heads_and_dtype)
{
    const struct tmodel *tm = &models[M_OPT_POST];

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di]};
        const uint64_t elem = strcmp(dtypes[di], "f32") == 0 ? 4 : 2;
        const uint32_t sizes[3] = {8, 16, 32};
        uint64_t per_token;
        struct wk k;

        wk_open(&k, tm, &o);
        /* the model's layers × K, V × heads × dim (the mock's own model's: it reads no files) */
        if (profile->numerics)
            per_token =
                (uint64_t)tm->desc.num_layers * 2 * tm->desc.num_kv_heads * tm->desc.head_dim;
        else
            per_token = (uint64_t)k.info.num_layers * 2 * k.info.num_kv_heads * k.info.head_dim;
        for (int i = 0; i < 3; i++) {
            uint64_t want = per_token * sizes[i] * elem;
            duet_cache_geometry g = {
                .struct_size = sizeof(g), .block_size = sizes[i], .budget_bytes = (3u << 20) + 5};

            ck_assert_int_eq(k.t->cache_geometry(k.w, &g), DUET_STATUS_OK);
            ck_assert_uint_eq(g.block_bytes, want);
            ck_assert_uint_eq(g.num_blocks, ((3u << 20) + 5) / want);
            g.budget_bytes = 0; /* the profile's cache_settings */
            ck_assert_int_eq(k.t->cache_geometry(k.w, &g), DUET_STATUS_OK);
            ck_assert_uint_eq(g.block_bytes, want);
            assert_budget_zero_geometry(&g);
        }
        wk_close(&k);
    }
}
END_TEST

/* ==== agreement with the reference ========================================================= */

static void check_prefill_against_reference(const struct tmodel *tm, const char *dtype, uint32_t n,
                                            uint64_t seed)
{
    struct wk_opts o = {.dtype = dtype};

    check_prefill_with(tm, o, n, seed);
}

START_TEST(test_gqa_llama_matches_reference_in_each_dtype)
{
    for (int di = 0; di < n_dtypes; di++) {
        check_prefill_against_reference(&models[M_LLAMA_F32], dtypes[di], 40, 11);
        check_prefill_against_reference(&models[M_LLAMA_BF16], dtypes[di], 40, 12);
    }
}
END_TEST

START_TEST(test_llama3_scaled_rope_with_one_kv_head_matches_reference)
{
    for (int di = 0; di < n_dtypes; di++)
        check_prefill_against_reference(&models[M_LLAMA3], dtypes[di], 100, 13);
}
END_TEST

START_TEST(test_opt_with_pre_and_post_layer_norm_matches_reference)
{
    for (int di = 0; di < n_dtypes; di++) {
        check_prefill_against_reference(&models[M_OPT_PRE], dtypes[di], 40, 14);
        check_prefill_against_reference(&models[M_OPT_POST], dtypes[di], 40, 15);
    }
}
END_TEST

START_TEST(test_qwen2_biases_and_qwen3_head_norms_match_reference)
{
    for (int di = 0; di < n_dtypes; di++) {
        check_prefill_against_reference(&models[M_QWEN2], dtypes[di], 40, 16);
        check_prefill_against_reference(&models[M_QWEN3], dtypes[di], 40, 17);
    }
}
END_TEST

START_TEST(test_sliding_window_prefill_matches_reference)
{
    for (int di = 0; di < n_dtypes; di++)
        check_prefill_against_reference(&models[M_MISTRAL_SW], dtypes[di], 45, 18);
}
END_TEST

/* GGUF files (model = "file.gguf"): the GQA Llama (its q / k rows permuted in the file, as
 * llama.cpp's converter writes them) and Qwen3 as F32, Q8_0 and Q4_0 files against the reference
 * on the file's weights (block types dequantised). The weights are held in the compute dtype, as
 * every worker can (the CPU worker's own int8 / int4 runs of Q8_0 / Q4_0 blocks:
 * check_cpu_worker_gguf). */
START_TEST(test_gguf_files_match_reference)
{
    static const int ms[] = {M_LLAMA_F32, M_QWEN3};
    static const duet_dtype types[] = {DUET_DTYPE_F32, DUET_DTYPE_Q8_0, DUET_DTYPE_Q4_0};

    for (size_t m = 0; m < sizeof(ms) / sizeof(ms[0]); m++)
        for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
            struct tmodel g = gguf_of(ms[m], types[t]);

            for (int di = 0; di < n_dtypes; di++) {
                struct wk_opts o = {.dtype = dtypes[di], .weights = dtypes[di]};

                check_prefill_with(&g, o, 40, 19 + 3 * m + t);
            }
        }
}
END_TEST

/*
 * A windowed decode reads no block before its window: the block manager hands those back and
 * puts its null block, which another sequence may have written, in their place. Decoding the
 * last positions with the early entries of the table pointing at a block full of another
 * sequence's K and V must still give the reference's rows.
 */
START_TEST(test_sliding_window_decode_reads_no_block_before_the_window)
{
    const struct tmodel *tm = &models[M_MISTRAL_SW];
    enum { N = 40, BS = 4 };
    uint32_t vocab = tm->desc.vocab_size, window = tm->desc.sliding_window;
    int32_t tokens[N], other[BS];
    double *logits;

    make_tokens(tokens, N, vocab, 31);
    make_tokens(other, BS, vocab, 32);
    logits = reference(tm, tokens, N);
    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .block_size = BS, .num_blocks = N / BS + 2};
        uint32_t table[N / BS], junk = N / BS + 1;
        struct outs out;
        duet_seq s;
        struct wk k;

        wk_open(&k, tm, &o);
        table_range(table, N / BS, 1);
        prefill_silent(&k, other, BS, 0, &junk, 1); /* the stand-in null block's content */
        prefill_silent(&k, tokens, N - 3, 0, table, N / BS);
        for (uint32_t p = N - 3; p < N; p++) {
            /* entries wholly before position p's window: p - window + 1 > (b + 1) × BS - 1 */
            for (uint32_t b = 0; (b + 1) * BS + window <= p + 1; b++)
                table[b] = junk;
            s = seq_make(7, tokens + p, 1, p, table, N / BS, 1, sp_plain(33));
            exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
            assert_rows_match(&out, 0, 1, logits, p, 1.0, 33, k.tol, "windowed decode");
            outs_free(&out);
        }
        wk_close(&k);
    }
    free(logits);
}
END_TEST

START_TEST(test_llama_68m_and_opt_125m_shapes_match_reference)
{
    check_preset(&models[M_LLAMA_68M], (struct wk_opts){0});
    check_preset(&models[M_OPT_125M], (struct wk_opts){0});
}
END_TEST

/* ==== prefill, decode and batching ========================================================= */

START_TEST(test_prefill_then_decode_equals_longer_prefill)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    enum { N = 21, MORE = 6 };
    uint32_t vocab = tm->desc.vocab_size;
    int32_t tokens[N + MORE];
    double *logits;

    make_tokens(tokens, N, vocab, 21);
    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .block_size = 8, .num_blocks = 16};
        uint32_t ta[4] = {0, 1, 2, 3}, tb[4] = {4, 5, 6, 7}, tc[4] = {8, 9, 10, 11};
        duet_seq s;
        struct outs dec, whole, chunk;
        struct wk k;

        wk_open(&k, tm, &o);
        /* prefill of N - 1 tokens, then the N-th as a decode */
        prefill_silent(&k, tokens, N - 1, 0, ta, 3);
        s = seq_make(1, tokens + N - 1, 1, N - 1, ta, 3, 1, sp_plain(5));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &dec);
        /* one prefill of N tokens */
        s = seq_make(2, tokens, N, 0, tb, 3, 1, sp_plain(5));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &whole);
        /* chunks of 7 and 8 tokens without rows, then 6 with a row each */
        prefill_silent(&k, tokens, 7, 0, tc, 3);
        prefill_silent(&k, tokens + 7, 8, 7, tc, 3);
        s = seq_make(3, tokens + 15, 6, 15, tc, 3, 6, sp_plain(5));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &chunk);
        /* then greedy decodes past the block boundaries, from the decoded sequence */
        tokens[N] = dec.tokens[0];
        for (uint32_t i = 1; i < MORE; i++) {
            struct outs g;

            s = seq_make(1, tokens + N + i - 1, 1, N + i - 1, ta, 4, 1, sp_greedy());
            exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &g);
            tokens[N + i] = g.tokens[0];
            outs_free(&g);
        }
        logits = reference(tm, tokens, N + MORE - 1);
        assert_rows_match(&dec, 0, 1, logits, N - 1, 1.0, 5, k.tol, "decode");
        assert_rows_match(&whole, 0, 1, logits, N - 1, 1.0, 5, k.tol, "prefill");
        assert_rows_match(&chunk, 0, 6, logits, 15, 1.0, 5, k.tol, "chunked prefill");
        assert_runs_agree(&dec, 0, &whole, 0, 1, logits, N - 1, 1.0, 5, k.tol, "decode vs prefill");
        assert_runs_agree(&chunk, 5, &whole, 0, 1, logits, N - 1, 1.0, 5, k.tol,
                          "chunked vs whole prefill");
        /* the greedy continuation: each token the reference's argmax (ties allowed) */
        for (uint32_t i = 1; i < MORE; i++) {
            struct ref_row rr;

            ref_row_init(&rr, logits + (size_t)(N + i - 1) * vocab, vocab, 1.0, k.tol);
            assert_argmax(&rr, (uint32_t)tokens[N + i], "greedy decode", i);
            ref_row_fini(&rr);
        }
        free(logits);
        outs_free(&dec);
        outs_free(&whole);
        outs_free(&chunk);
        wk_close(&k);
    }
}
END_TEST

/* One sequence of the mixed batch. */
struct mix_seq {
    uint32_t n_total;   /* tokens the reference sees */
    uint32_t cached;    /* tokens prefilled before the batch */
    uint32_t n_fed;     /* tokens fed in the batch, from position cached */
    uint32_t n_outputs; /* rows */
    bool greedy;
};

static const struct mix_seq mix[] = {
    {13, 0, 13, 13, false}, /* a whole prompt with a row at every position */
    {31, 30, 1, 1, false},  /* a decode after 30 tokens */
    {9, 0, 9, 0, false},    /* a prefill chunk without rows */
    {24, 16, 8, 2, true},   /* a continuation after a cached prefix, greedy */
    {1, 0, 1, 1, false},    /* one token at position 0 */
};
#define N_MIX (sizeof(mix) / sizeof(mix[0]))

static duet_seq mix_seq_of(uint32_t i, const int32_t *tokens, const uint32_t *table)
{
    duet_sampling_params sp = mix[i].greedy ? sp_greedy() : sp_plain(1000 + i);

    sp.n_logprobs = 3;
    sp.n_prompt_logprobs = 2;
    return seq_make(4200 + i, tokens + mix[i].cached, mix[i].n_fed, mix[i].cached, table, 2,
                    mix[i].n_outputs, sp);
}

/* Batch rows and fed tokens of sequence i against its run alone and the reference. */
static void compare_mixed(const struct outs *batch, const struct outs *alone, uint32_t i,
                          uint32_t r0, uint32_t f0, const int32_t *tokens, const double *logits,
                          double tol)
{
    const struct mix_seq *m = &mix[i];
    uint32_t pos0 = m->cached + m->n_fed - m->n_outputs, vocab = batch->vocab;
    double t = m->greedy ? 0.0 : 1.0;
    char what[64];

    snprintf(what, sizeof(what), "mixed batch seq %u", i);
    assert_rows_match(batch, r0, m->n_outputs, logits, pos0, t, 1000 + i, tol, what);
    assert_runs_agree(batch, r0, alone, 0, m->n_outputs, logits, pos0, t, 1000 + i, tol, what);
    for (uint32_t r = 0; r < m->n_outputs; r++) {
        const double *l = logits + (size_t)(pos0 + r) * vocab;
        struct ref_row rr;

        ref_row_init(&rr, l, vocab, 1.0, tol);
        ck_assert_msg(fabs(batch->token_lp[r0 + r] - rr.lp[batch->tokens[r0 + r]]) <= rr.lim,
                      "%s row %u: token logprob %.6f, reference %.6f", what, r0 + r,
                      (double)batch->token_lp[r0 + r], rr.lp[batch->tokens[r0 + r]]);
        ref_row_fini(&rr);
        assert_top_list(batch->lp + (size_t)(r0 + r) * batch->stride, 3, l, vocab, tol, what,
                        r0 + r);
    }
    assert_prompt_logprobs(batch, f0, m->n_fed, m->cached, tokens, logits, 2, tol, what);
    assert_prompt_logprobs(alone, 0, m->n_fed, m->cached, tokens, logits, 2, tol, what);
}

START_TEST(test_mixed_batch_equals_each_sequence_alone)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    const uint32_t flags =
        DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_LOGPROBS | DUET_BATCH_WANT_PROMPT_LOGPROBS;
    uint32_t vocab = tm->desc.vocab_size;
    int32_t tokens[N_MIX][32];
    double *logits[N_MIX];

    for (uint32_t i = 0; i < N_MIX; i++) {
        make_tokens(tokens[i], mix[i].n_total, vocab, 30 + i);
        logits[i] = reference(tm, tokens[i], mix[i].n_total);
    }
    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .num_blocks = 2 * 2 * N_MIX};
        uint32_t tables[2][N_MIX][2];
        duet_seq seqs[N_MIX];
        struct outs batch, alone[N_MIX];
        uint32_t r0 = 0, f0 = 0;
        struct wk k;

        wk_open(&k, tm, &o);
        for (uint32_t i = 0; i < N_MIX; i++) {
            for (int run = 0; run < 2; run++) {
                table_range(tables[run][i], 2, 2 * (run * N_MIX + i));
                if (mix[i].cached)
                    prefill_silent(&k, tokens[i], mix[i].cached, 0, tables[run][i], 2);
            }
            seqs[i] = mix_seq_of(i, tokens[i], tables[0][i]);
        }
        exec_ok(&k, seqs, N_MIX, flags, NULL, &batch);
        for (uint32_t i = 0; i < N_MIX; i++) {
            duet_seq s = mix_seq_of(i, tokens[i], tables[1][i]);

            exec_ok(&k, &s, 1, flags, NULL, &alone[i]);
        }
        for (uint32_t i = 0; i < N_MIX; i++) {
            compare_mixed(&batch, &alone[i], i, r0, f0, tokens[i], logits[i], k.tol);
            r0 += mix[i].n_outputs;
            f0 += mix[i].n_fed;
            outs_free(&alone[i]);
        }
        outs_free(&batch);
        wk_close(&k);
    }
    for (uint32_t i = 0; i < N_MIX; i++)
        free(logits[i]);
}
END_TEST

/* ==== block tables and cache operations ==================================================== */

/* Two interleaved sequences through shuffled tables, in 3 chunks with every row, then greedy
 * decodes; block size bs. */
static void check_shuffled_tables(const struct tmodel *tm, const char *dtype, uint32_t bs)
{
    enum { N = 50, MORE = 6, TOTAL = N + MORE };
    const uint32_t chunk[4] = {0, 17, 37, N};
    uint32_t vocab = tm->desc.vocab_size, nb = blocks_for(TOTAL, bs), both[32], table[2][16];
    struct wk_opts o = {.dtype = dtype, .block_size = bs, .num_blocks = 2 * nb + 7};
    int32_t tokens[2][TOTAL];
    struct outs rows[2][3 + MORE];
    struct wk k;
    char what[96];

    wk_open(&k, tm, &o);
    table_shuffled(both, 2 * nb, o.num_blocks, bs);
    for (uint32_t b = 0; b < nb; b++)
        table[0][b] = both[2 * b], table[1][b] = both[2 * b + 1];
    for (int q = 0; q < 2; q++)
        make_tokens(tokens[q], N, vocab, 50 + (uint64_t)q);
    for (int c = 0; c < 3; c++) {
        uint32_t n = chunk[c + 1] - chunk[c];
        duet_seq s[2];
        struct outs out;

        for (int q = 0; q < 2; q++)
            s[q] = seq_make(q, tokens[q] + chunk[c], n, chunk[c], table[q], nb, n,
                            sp_plain(60 + (uint64_t)q));
        exec_ok(&k, s, 2, DUET_BATCH_WANT_PROBS, NULL, &out);
        for (int q = 0; q < 2; q++) {
            outs_alloc(&rows[q][c], &s[q], 1, vocab, 0);
            memcpy(rows[q][c].tokens, out.tokens + q * n, n * sizeof(int32_t));
            memcpy(rows[q][c].probs, out.probs + (size_t)q * n * vocab,
                   (size_t)n * vocab * sizeof(float));
            if (c == 2)
                tokens[q][N] = out.tokens[q * n + n - 1];
        }
        outs_free(&out);
    }
    for (uint32_t i = 1; i < MORE; i++) {
        duet_seq s[2];
        struct outs out;

        for (int q = 0; q < 2; q++)
            s[q] = seq_make(q, tokens[q] + N + i - 1, 1, N + i - 1, table[q], nb, 1, sp_greedy());
        exec_ok(&k, s, 2, DUET_BATCH_WANT_PROBS, NULL, &out);
        for (int q = 0; q < 2; q++) {
            outs_alloc(&rows[q][2 + i], &s[q], 1, vocab, 0);
            rows[q][2 + i].tokens[0] = tokens[q][N + i] = out.tokens[q];
            memcpy(rows[q][2 + i].probs, out.probs + (size_t)q * vocab, vocab * sizeof(float));
        }
        outs_free(&out);
    }
    for (int q = 0; q < 2; q++) {
        double *logits = reference(tm, tokens[q], TOTAL - 1);

        snprintf(what, sizeof(what), "block size %u, %s, seq %d", bs, dtype, q);
        for (int c = 0; c < 3; c++)
            assert_rows_match(&rows[q][c], 0, chunk[c + 1] - chunk[c], logits, chunk[c], 1.0,
                              60 + (uint64_t)q, k.tol, what);
        for (uint32_t i = 1; i < MORE; i++)
            assert_rows_match(&rows[q][2 + i], 0, 1, logits, N + i - 1, 0.0, 0, k.tol, what);
        for (int c = 0; c < 3 + MORE - 1; c++)
            outs_free(&rows[q][c]);
        free(logits);
    }
    wk_close(&k);
}

START_TEST(test_shuffled_block_tables_and_block_sizes_give_the_same_results)
{
    const uint32_t sizes[3] = {8, 16, 32};

    for (int i = 0; i < 3; i++)
        for (int di = 0; di < n_dtypes; di++)
            check_shuffled_tables(&models[i == 1 ? M_OPT_POST : M_LLAMA_F32], dtypes[di], sizes[i]);
}
END_TEST

/* Row of one decode (token at pos through table) compared with the reference of prefix+token. */
static void decode_matches(struct wk *k, const struct tmodel *tm, const int32_t *seq_tokens,
                           uint32_t pos, const uint32_t *table, uint32_t n_blocks, const char *what)
{
    duet_seq s = seq_make(77, seq_tokens + pos, 1, pos, table, n_blocks, 1, sp_plain(pos));
    double *logits = reference(tm, seq_tokens, pos + 1);
    struct outs out;

    exec_ok(k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
    assert_rows_match(&out, 0, 1, logits, pos, 1.0, pos, k->tol, what);
    outs_free(&out);
    free(logits);
}

/* The largest |log p - reference| of one decode's row (for the negative control). */
static double decode_deviation(struct wk *k, const struct tmodel *tm, const int32_t *seq_tokens,
                               uint32_t pos, const uint32_t *table, uint32_t n_blocks, double *lim)
{
    duet_seq s = seq_make(78, seq_tokens + pos, 1, pos, table, n_blocks, 1, sp_plain(1));
    double *logits = reference(tm, seq_tokens, pos + 1), worst = 0;
    struct ref_row rr;
    struct outs out;

    exec_ok(k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
    ref_row_init(&rr, logits + (size_t)pos * out.vocab, out.vocab, 1.0, k->tol);
    for (uint32_t v = 0; v < out.vocab; v++)
        if (ref_row_counts(&rr, v))
            worst = fmax(worst, fabs(log(out.probs[v]) - rr.lp[v]));
    *lim = rr.lim;
    ref_row_fini(&rr);
    outs_free(&out);
    free(logits);
    return worst;
}

START_TEST(test_copy_on_write_keeps_both_branches)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    uint32_t vocab = tm->desc.vocab_size;

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .block_size = 8, .num_blocks = 12};
        const uint32_t ta[3] = {3, 7, 1}, tb[3] = {3, 7, 9}, tz[3] = {3, 7, 11};
        const duet_block_pair copy = {.src = 1, .dst = 9};
        const struct ops ops = {.copy = &copy, .n_copy = 1};
        int32_t a[22], b[22];
        double *la, *lb, lim;
        duet_seq s[2];
        struct outs out;
        struct wk k;

        make_tokens(a, 22, vocab, 70);
        memcpy(b, a, sizeof(a));
        b[20] = (a[20] + 1) % (int32_t)vocab, b[21] = (a[21] + 7) % (int32_t)vocab;
        wk_open(&k, tm, &o);
        prefill_silent(&k, a, 20, 0, ta, 3); /* positions 16..19 in block 1 */
        /* fork: block 1 copied to 9 in the batch that decodes both branches at position 20 */
        s[0] = seq_make(10, a + 20, 1, 20, ta, 3, 1, sp_plain(3));
        s[1] = seq_make(11, b + 20, 1, 20, tb, 3, 1, sp_plain(3));
        exec_ok(&k, s, 2, DUET_BATCH_WANT_PROBS, &ops, &out);
        la = reference(tm, a, 22);
        lb = reference(tm, b, 22);
        assert_rows_match(&out, 0, 1, la, 20, 1.0, 3, k.tol, "branch a after the copy");
        assert_rows_match(&out, 1, 1, lb, 20, 1.0, 3, k.tol, "branch b after the copy");
        outs_free(&out);
        /* each branch wrote position 20 into its own block: the next step still agrees */
        decode_matches(&k, tm, b, 21, tb, 3, "branch b, next step");
        decode_matches(&k, tm, a, 21, ta, 3, "branch a, next step");
        /* control: without the copy (block 11 never written) the result is wrong */
        ck_assert_msg(decode_deviation(&k, tm, b, 20, tz, 3, &lim) > lim,
                      "a block that was never copied gives the copied block's result: the test "
                      "cannot see copies");
        free(la);
        free(lb);
        wk_close(&k);
    }
}
END_TEST

START_TEST(test_swap_out_and_in_preserve_the_results)
{
    const struct tmodel *tm = &models[M_OPT_POST];
    uint32_t vocab = tm->desc.vocab_size;

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .num_blocks = 8, .num_swap = 6};
        const uint32_t table[3] = {0, 1, 2}, back[3] = {5, 3, 0};
        const duet_block_pair out_pairs[3] = {{0, 2}, {1, 0}, {2, 5}};
        const duet_block_pair in_pairs[3] = {{2, 5}, {0, 3}, {5, 0}};
        const struct ops swap_out = {.swap_out = out_pairs, .n_swap_out = 3};
        const struct ops swap_in = {.swap_in = in_pairs, .n_swap_in = 3};
        int32_t tokens[42], other[40];
        double *logits;
        duet_seq s;
        struct outs out;
        struct wk k;

        make_tokens(tokens, 42, vocab, 80);
        make_tokens(other, 40, vocab, 81);
        wk_open(&k, tm, &o);
        prefill_silent(&k, tokens, 40, 0, table, 3);
        cache_ops(&k, &swap_out);
        prefill_silent(&k, other, 40, 0, table, 3); /* overwrite blocks 0..2 */
        /* swap in (block 0 again among the targets) and decode in the same batch */
        s = seq_make(5, tokens + 40, 1, 40, back, 3, 1, sp_plain(8));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, &swap_in, &out);
        logits = reference(tm, tokens, 42);
        assert_rows_match(&out, 0, 1, logits, 40, 1.0, 8, k.tol, "decode after swap in");
        outs_free(&out);
        decode_matches(&k, tm, tokens, 41, back, 3, "second decode after swap in");
        free(logits);
        wk_close(&k);
    }
}
END_TEST

START_TEST(test_cache_operations_run_as_swap_in_then_swap_out_then_copy)
{
    const struct tmodel *tm = &models[M_LLAMA_BF16];
    uint32_t vocab = tm->desc.vocab_size;

    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .num_blocks = 6, .num_swap = 3};
        const uint32_t ta[1] = {0}, tc[1] = {2}, td[1] = {3};
        const duet_block_pair save = {0, 0}, in = {0, 1}, out_pair = {1, 1}, copy = {1, 2},
                              restore = {1, 3};
        const struct ops o_save = {.swap_out = &save, .n_swap_out = 1};
        const struct ops o_all = {.swap_in = &in,
                                  .n_swap_in = 1,
                                  .swap_out = &out_pair,
                                  .n_swap_out = 1,
                                  .copy = &copy,
                                  .n_copy = 1};
        const struct ops o_restore = {.swap_in = &restore, .n_swap_in = 1};
        int32_t tokens[11], other[10];
        struct wk k;

        make_tokens(tokens, 11, vocab, 90);
        make_tokens(other, 10, vocab, 91);
        wk_open(&k, tm, &o);
        prefill_silent(&k, tokens, 10, 0, ta, 1);
        cache_ops(&k, &o_save);
        prefill_silent(&k, other, 10, 0, ta, 1);
        /* in one batch: swap s0 into block 1, swap block 1 out to s1, copy block 1 to 2. In this
         * order block 1, s1 and block 2 all hold the prefix; in another, s1 or 2 holds zeros. */
        cache_ops(&k, &o_all);
        cache_ops(&k, &o_restore);
        decode_matches(&k, tm, tokens, 10, tc, 1, "block copied after the swap in");
        decode_matches(&k, tm, tokens, 10, td, 1, "block swapped out after the swap in");
        wk_close(&k);
    }
}
END_TEST

/* ==== drafting and scoring ================================================================= */

/* Drafting K tokens in one execute against K single steps; then a decode after the draft, which
 * reads the KV the drafting steps wrote. */
static void check_drafting(const char *dtype, duet_sampling_params sp, const char *what)
{
    enum { L = 10, K = 5 };
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.dtype = dtype, .block_size = 8, .num_blocks = 8, .draft = true};
    uint32_t vocab = tm->desc.vocab_size, ta[2] = {4, 2}, tb[2] = {5, 6};
    double t = sp.temperature, *logits;
    int32_t tokens[L + K + 1];
    struct outs draft, single[K], after_a, after_b;
    duet_seq s;
    struct wk k;

    make_tokens(tokens, L, vocab, 100);
    wk_open(&k, tm, &o);
    prefill_silent(&k, tokens, L - 1, 0, ta, 2);
    prefill_silent(&k, tokens, L - 1, 0, tb, 2);
    s = seq_make(12, tokens + L - 1, 1, L - 1, ta, 2, 1, sp);
    s.n_draft_steps = K - 1;
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &draft);
    ck_assert_uint_eq(draft.rows, K);
    memcpy(tokens + L, draft.tokens, K * sizeof(int32_t));
    for (uint32_t i = 0; i < K; i++) {
        s = seq_make(13, tokens + L - 1 + i, 1, L - 1 + i, tb, 2, 1, sp);
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &single[i]);
    }
    /* the drafted x1..x4 are in the cache of ta: feed x5 at the next position */
    s = seq_make(12, tokens + L - 1 + K, 1, L - 1 + K, ta, 2, 1, sp);
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &after_a);
    s = seq_make(13, tokens + L - 1 + K, 1, L - 1 + K, tb, 2, 1, sp);
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &after_b);
    logits = reference(tm, tokens, L + K);
    assert_rows_match(&draft, 0, K, logits, L - 1, t, sp.seed, k.tol, what);
    for (uint32_t i = 0; i < K; i++)
        assert_runs_agree(&draft, i, &single[i], 0, 1, logits, L - 1 + i, t, sp.seed, k.tol, what);
    assert_rows_match(&after_a, 0, 1, logits, L - 1 + K, t, sp.seed, k.tol, what);
    assert_runs_agree(&after_a, 0, &after_b, 0, 1, logits, L - 1 + K, t, sp.seed, k.tol, what);
    for (uint32_t i = 0; i < K; i++)
        outs_free(&single[i]);
    outs_free(&draft);
    outs_free(&after_a);
    outs_free(&after_b);
    free(logits);
    wk_close(&k);
}

START_TEST(test_multi_step_drafting_equals_single_steps)
{
    duet_sampling_params warm = {.temperature = 0.8f, .top_p = 1.0f, .seed = 4242};

    for (int di = 0; di < n_dtypes; di++) {
        check_drafting(dtypes[di], warm, "drafting at temperature 0.8");
        check_drafting(dtypes[di], sp_greedy(), "greedy drafting");
    }
}
END_TEST

START_TEST(test_scoring_k_plus_one_positions_equals_single_decodes)
{
    enum { L = 12, K = 4 };
    const struct tmodel *tm = &models[M_OPT_PRE];
    uint32_t vocab = tm->desc.vocab_size;
    int32_t tokens[L + K];
    double *logits;

    make_tokens(tokens, L + K, vocab, 110);
    logits = reference(tm, tokens, L + K);
    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .num_blocks = 4};
        const uint32_t ta[1] = {0}, tb[2] = {2, 1};
        struct outs scored, single[K + 1];
        duet_seq s;
        struct wk k;

        wk_open(&k, tm, &o);
        prefill_silent(&k, tokens, L - 1, 0, ta, 1);
        prefill_silent(&k, tokens, L - 1, 0, tb, 1);
        s = seq_make(14, tokens + L - 1, K + 1, L - 1, ta, 1, K + 1, sp_plain(6));
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &scored);
        for (uint32_t i = 0; i <= K; i++) {
            s = seq_make(15, tokens + L - 1 + i, 1, L - 1 + i, tb, 2, 1, sp_plain(6));
            exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &single[i]);
        }
        assert_rows_match(&scored, 0, K + 1, logits, L - 1, 1.0, 6, k.tol, "scoring");
        for (uint32_t i = 0; i <= K; i++) {
            assert_runs_agree(&scored, i, &single[i], 0, 1, logits, L - 1 + i, 1.0, 6, k.tol,
                              "scoring vs single decodes");
            outs_free(&single[i]);
        }
        outs_free(&scored);
        wk_close(&k);
    }
    free(logits);
}
END_TEST

/* ==== penalties and logit bias (minor 3) =================================================== */

static void assert_seq_refused(struct wk *k, const duet_seq *bad, const char *what);

/* The penalties of the penalty cases: seen from tokens[0 .. n) of which the first n_prompt are
 * the prompt (sorted, distinct), plus a bias on two tokens. */
struct pen_fixture {
    duet_token_count seen[64];
    duet_token_bias bias[2];
    duet_penalties pen;
};

static void pen_fixture_init(struct pen_fixture *f, const int32_t *tokens, uint32_t n,
                             uint32_t n_prompt, uint32_t vocab)
{
    memset(f, 0, sizeof(*f));
    for (int32_t t = 0; t < (int32_t)vocab; t++) {
        bool in = false;
        uint32_t c = 0;

        for (uint32_t i = 0; i < n; i++) {
            in = in || tokens[i] == t;
            c += i >= n_prompt && tokens[i] == t;
        }
        if (in)
            f->seen[f->pen.n_seen++] = (duet_token_count){t, c};
    }
    f->bias[0] = (duet_token_bias){1, 2.5f};
    f->bias[1] = (duet_token_bias){(int32_t)vocab - 2, -4.0f};
    f->pen = (duet_penalties){.struct_size = sizeof(f->pen),
                              .repetition = 1.4f,
                              .frequency = 0.7f,
                              .presence = 0.3f,
                              .bias = f->bias,
                              .n_bias = 2,
                              .n_seen = f->pen.n_seen,
                              .seen = f->seen};
}

/* Reference row `pos` of logits penalised as plugin.h says, the history tokens[0 .. n) with the
 * first n_prompt the prompt, in double precision, into out[vocab]. */
static void pen_reference_row(const double *logits, uint32_t vocab, const int32_t *tokens,
                              uint32_t n, uint32_t n_prompt, const duet_penalties *p, double *out)
{
    for (uint32_t t = 0; t < vocab; t++) {
        double v = logits[t];
        uint32_t c = 0;
        bool in = false;

        for (uint32_t i = 0; i < p->n_bias; i++)
            v += p->bias[i].token == (int32_t)t ? p->bias[i].bias : 0.0;
        for (uint32_t i = 0; i < n; i++) {
            in = in || tokens[i] == (int32_t)t;
            c += i >= n_prompt && tokens[i] == (int32_t)t;
        }
        if (in) {
            v = v > 0 ? v / p->repetition : v * p->repetition;
            v -= p->frequency * c + (c ? p->presence : 0.0);
        }
        out[t] = v;
    }
}

/*
 * Scoring K + 1 positions and drafting K tokens with repetition, frequency and presence
 * penalties and a logit bias: every row is the penalised reference row, where scored row j counts
 * the fed x1..xj as generated and drafting step s the tokens steps 0..s-1 drew (so a target and a
 * draft penalise each position alike, as exact speculative sampling needs).
 */
START_TEST(test_penalised_scoring_and_drafting_rows_match_the_penalised_reference)
{
    enum { L = 10, P = 6, K = 4 };
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.dtype = dtypes[0], .block_size = 8, .num_blocks = 8, .draft = true};
    duet_sampling_params warm = {.temperature = 0.8f, .top_p = 1.0f, .seed = 77};
    uint32_t vocab = tm->desc.vocab_size, ta[2] = {0, 1}, tb[2] = {2, 3};
    int32_t tokens[L + K], drafted[L + K];
    struct pen_fixture f;
    struct outs scored, draft;
    double *logits, *pen_logits = calloc((size_t)(L + K) * vocab, sizeof(double));
    duet_seq s;
    struct wk k;

    ck_assert_ptr_nonnull(pen_logits);
    wk_open(&k, tm, &o);
    if (!(k.t->caps & DUET_CAP_PENALTIES)) { /* "penalties capability" checks the refusal */
        free(pen_logits);
        wk_close(&k);
        return;
    }
    make_tokens(tokens, L + K, vocab, 120);
    tokens[L - 2] = tokens[1]; /* repeats: generated tokens counted more than once */
    tokens[L + 1] = tokens[L - 1];
    tokens[L + 2] = tokens[L];
    pen_fixture_init(&f, tokens, L, P, vocab);
    prefill_silent(&k, tokens, L - 1, 0, ta, 2);
    prefill_silent(&k, tokens, L - 1, 0, tb, 2);
    s = seq_make(31, tokens + L - 1, K + 1, L - 1, ta, 2, K + 1, warm);
    s.sampling.n_logprobs = 3;
    s.penalties = &f.pen;
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_LOGPROBS, NULL, &scored);
    logits = reference(tm, tokens, L + K);
    for (uint32_t j = 0; j <= K; j++) {
        const double *raw_row = logits + (size_t)(L - 1 + j) * vocab;
        struct ref_row raw;

        pen_reference_row(raw_row, vocab, tokens, L + j, P, &f.pen,
                          pen_logits + (size_t)(L - 1 + j) * vocab);
        /* log-probabilities stay the raw row's */
        assert_top_list(scored.lp + (size_t)j * scored.stride, 3, raw_row, vocab, k.tol,
                        "penalised scoring, raw top", j);
        ref_row_init(&raw, raw_row, vocab, 1.0, k.tol);
        ck_assert_msg(fabs(scored.token_lp[j] - raw.lp[scored.tokens[j]]) <= raw.lim,
                      "row %u: token logprob %.6f, raw reference %.6f", j,
                      (double)scored.token_lp[j], raw.lp[scored.tokens[j]]);
        ref_row_fini(&raw);
    }
    assert_rows_match(&scored, 0, K + 1, pen_logits, L - 1, 0.8, warm.seed, k.tol,
                      "penalised scoring");
    free(logits);

    s = seq_make(32, tokens + L - 1, 1, L - 1, tb, 2, 1, warm);
    s.n_draft_steps = K - 1;
    s.penalties = &f.pen;
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &draft);
    memcpy(drafted, tokens, L * sizeof(int32_t));
    memcpy(drafted + L, draft.tokens, K * sizeof(int32_t));
    logits = reference(tm, drafted, L + K - 1);
    for (uint32_t j = 0; j < K; j++)
        pen_reference_row(logits + (size_t)(L - 1 + j) * vocab, vocab, drafted, L + j, P, &f.pen,
                          pen_logits + (size_t)(L - 1 + j) * vocab);
    assert_rows_match(&draft, 0, K, pen_logits, L - 1, 0.8, warm.seed, k.tol, "penalised drafting");
    free(logits);
    outs_free(&scored);
    outs_free(&draft);
    free(pen_logits);
    wk_close(&k);
}
END_TEST

/* Penalties reach only a worker that declares DUET_CAP_PENALTIES; one without refuses them
 * (UNSUPPORTED, naming the sequence) rather than ignore them. Malformed lists are refused. */
START_TEST(test_penalties_are_applied_only_where_declared_and_malformed_ones_refused)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.num_blocks = 4};
    const uint32_t table[1] = {1};
    const int32_t tokens[3] = {4, 5, 6};
    duet_token_bias unsorted[2] = {{7, 1.0f}, {3, 1.0f}};
    duet_penalties pen = {.struct_size = sizeof(pen),
                          .repetition = 1.0f,
                          .n_bias = 1,
                          .bias = (duet_token_bias[]){{3, 5.0f}}};
    duet_seq s = seq_make(4343, tokens, 3, 0, table, 1, 1, sp_greedy());
    struct outs out;
    struct wk k;

    wk_open(&k, tm, &o);
    s.penalties = &pen;
    if (!(k.t->caps & DUET_CAP_PENALTIES)) {
        assert_refused(&k, exec_full(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out, UINT32_MAX, 0),
                       DUET_STATUS_UNSUPPORTED, s.seq_id, "penalties without the capability");
        outs_free(&out);
        wk_close(&k);
        return;
    }
    pen.bias = (duet_token_bias[]){{3, 100.0f}}; /* forces token 3 */
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
    ck_assert_int_eq(out.tokens[0], 3);
    outs_free(&out);
    if (strcmp(profile->name, "mock") == 0) { /* the mock is lenient on purpose */
        wk_close(&k);
        return;
    }
    pen.bias = unsorted;
    pen.n_bias = 2;
    assert_seq_refused(&k, &s, "bias tokens not increasing");
    pen.n_bias = 0;
    pen.repetition = 0.0f;
    assert_seq_refused(&k, &s, "repetition 0");
    pen.repetition = 1.2f; /* counting penalties without a seen list */
    assert_seq_refused(&k, &s, "no seen list");
    wk_close(&k);
}
END_TEST

/* ==== sampling ============================================================================= */

/* Filtered rows: at most top_k tokens kept, and the kept ones are the reference's likeliest,
 * in the proportions of softmax(logits / T). */
static void assert_filtered_row(const float *p, const double *logits, uint32_t vocab, double t,
                                uint32_t top_k, double tol, uint32_t row)
{
    struct ref_row rr;
    uint32_t kept = 0, top = row_argmax(p, vocab);
    double lowest_kept = INFINITY, highest_dropped = -INFINITY;

    assert_distribution(p, vocab, "filtered", row);
    ref_row_init(&rr, logits, vocab, t, tol);
    for (uint32_t v = 0; v < vocab; v++) {
        if (p[v] > 0) {
            kept++;
            lowest_kept = fmin(lowest_kept, rr.lp[v]);
            ck_assert_msg(fabs(log(p[v] / p[top]) - (rr.lp[v] - rr.lp[top])) <= 2 * rr.lim,
                          "filtered row %u: token %u kept in the wrong proportion", row, v);
        } else {
            highest_dropped = fmax(highest_dropped, rr.lp[v]);
        }
    }
    ck_assert_msg(kept >= 1 && kept <= top_k, "filtered row %u: %u tokens kept (top_k %u)", row,
                  kept, top_k);
    ck_assert_msg(lowest_kept >= highest_dropped - 2 * rr.lim,
                  "filtered row %u: a likelier token was dropped than kept", row);
    assert_argmax(&rr, top, "filtered", row);
    ref_row_fini(&rr);
}

START_TEST(test_seeded_sampling_is_reproducible_and_drawn_from_the_row)
{
    enum { N = 16 };
    const struct tmodel *tm = &models[M_LLAMA_F32];
    const uint32_t flags = DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_LOGPROBS;
    struct wk_opts o = {.num_blocks = 8};
    duet_sampling_params sp = {.temperature = 0.9f,
                               .top_p = 0.95f,
                               .min_p = 0.01f,
                               .top_k = 40,
                               .seed = 1234,
                               .n_logprobs = 4};
    uint32_t vocab = tm->desc.vocab_size, ta[1] = {0}, tb[1] = {1}, tc[1] = {2}, tx[1] = {3};
    int32_t tokens[N], filler[5];
    double *logits;
    duet_seq s[2];
    struct outs a, b, c;
    uint32_t differ = 0;
    struct wk k;

    make_tokens(tokens, N, vocab, 120);
    make_tokens(filler, 5, vocab, 121);
    logits = reference(tm, tokens, N);
    wk_open(&k, tm, &o);
    s[0] = seq_make(1, tokens, N, 0, ta, 1, N, sp);
    exec_ok(&k, s, 1, flags, NULL, &a);
    /* the same request in another block, behind another sequence in the batch */
    s[0] = seq_make(2, filler, 5, 0, tx, 1, 5, sp_plain(9));
    s[1] = seq_make(3, tokens, N, 0, tb, 1, N, sp);
    exec_ok(&k, s, 2, flags, NULL, &b);
    sp.seed = 4321;
    s[0] = seq_make(4, tokens, N, 0, tc, 1, N, sp);
    exec_ok(&k, s, 1, flags, NULL, &c);
    for (uint32_t r = 0; r < N; r++) {
        const float *p = a.probs + (size_t)r * vocab;
        const double *l = logits + (size_t)r * vocab;
        struct ref_row raw;

        assert_filtered_row(p, l, vocab, 0.9, 40, profile->tol_f32, r);
        assert_sampled(p, vocab, a.tokens[r], 1234, r, "seed 1234", r);
        assert_sampled(c.probs + (size_t)r * vocab, vocab, c.tokens[r], 4321, r, "seed 4321", r);
        differ += a.tokens[r] != c.tokens[r];
        /* log-probabilities are raw (temperature 1), whatever the sampling settings */
        ref_row_init(&raw, l, vocab, 1.0, profile->tol_f32);
        ck_assert_msg(fabs(a.token_lp[r] - raw.lp[a.tokens[r]]) <= raw.lim,
                      "row %u: token logprob %.6f, raw reference %.6f", r, (double)a.token_lp[r],
                      raw.lp[a.tokens[r]]);
        ref_row_fini(&raw);
        assert_top_list(a.lp + (size_t)r * a.stride, 4, l, vocab, profile->tol_f32, "logprobs", r);
    }
    assert_runs_agree(&a, 0, &b, 5, N, logits, 0, 0.9, 1234, profile->tol_f32, "repeated request");
    ck_assert_msg(differ > 0, "seeds 1234 and 4321 sampled the same %u tokens", N);
    outs_free(&a);
    outs_free(&b);
    outs_free(&c);
    free(logits);
    wk_close(&k);
}
END_TEST

/* Upper critical value of chi-square with df degrees of freedom, z standard deviations out
 * (Wilson-Hilferty). */
static double chi2_critical(double df, double z)
{
    double a = 2.0 / (9.0 * df);

    return df * pow(1.0 - a + z * sqrt(a), 3.0);
}

START_TEST(test_sampled_frequencies_follow_the_softmax)
{
    enum { L = 5, V = 12 };
    const struct tmodel *tm = &models[M_SMALL_VOCAB];
    const double t = 2.0; /* flattens the distribution: more bins */
    uint32_t n = under_valgrind ? 600 : 6000, table[1] = {0}, counts[V] = {0}, bins = 0;
    struct wk_opts o = {.num_blocks = 2, .threads = 1};
    double *logits, lp[V], chi2 = 0, rest_expected = 0, rest_seen = 0;
    int32_t tokens[L];
    struct wk k;

    make_tokens(tokens, L, V, 130);
    logits = reference(tm, tokens, L);
    ref_log_softmax(logits + (size_t)(L - 1) * V, V, t, lp);
    wk_open(&k, tm, &o);
    prefill_silent(&k, tokens, L - 1, 0, table, 1);
    for (uint32_t i = 0; i < n; i++) {
        duet_sampling_params sp = {.temperature = (float)t, .top_p = 1.0f, .seed = 7000 + i};
        duet_seq s = seq_make(i, tokens + L - 1, 1, L - 1, table, 1, 1, sp);
        struct outs out;

        exec_ok(&k, &s, 1, 0, NULL, &out);
        ck_assert(out.tokens[0] >= 0 && out.tokens[0] < V);
        counts[out.tokens[0]]++;
        outs_free(&out);
    }
    for (uint32_t v = 0; v < V; v++) {
        double e = n * exp(lp[v]);

        if (e >= 5) {
            chi2 += (counts[v] - e) * (counts[v] - e) / e;
            bins++;
        } else {
            rest_expected += e;
            rest_seen += counts[v];
        }
    }
    if (rest_expected >= 5)
        chi2 += (rest_seen - rest_expected) * (rest_seen - rest_expected) / rest_expected, bins++;
    else
        ck_assert_msg(rest_seen <= 5 + 4 * sqrt(rest_expected + 1), "%g samples where %g expected",
                      rest_seen, rest_expected);
    ck_assert_msg(bins >= 4, "only %u bins: the distribution is too peaked to test", bins);
    ck_assert_msg(chi2 < chi2_critical(bins - 1, 3.09),
                  "chi-square %.2f over %u bins exceeds the 0.1%% critical value %.2f", chi2, bins,
                  chi2_critical(bins - 1, 3.09));
    free(logits);
    wk_close(&k);
}
END_TEST

START_TEST(test_prompt_logprobs_cover_every_fed_position)
{
    const struct tmodel *tm = &models[M_LLAMA3];
    const uint32_t flags = DUET_BATCH_WANT_PROBS | DUET_BATCH_WANT_PROMPT_LOGPROBS;
    uint32_t vocab = tm->desc.vocab_size;
    int32_t a[18], b[7];
    double *la, *lb;

    make_tokens(a, 18, vocab, 140);
    make_tokens(b, 7, vocab, 141);
    la = reference(tm, a, 18);
    lb = reference(tm, b, 7);
    for (int di = 0; di < n_dtypes; di++) {
        struct wk_opts o = {.dtype = dtypes[di], .num_blocks = 4};
        const uint32_t ta[2] = {0, 1}, tb[1] = {2};
        duet_sampling_params sp = sp_plain(3);
        struct outs first, second;
        duet_seq s[2];
        struct wk k;

        sp.n_prompt_logprobs = 5;
        wk_open(&k, tm, &o);
        s[0] = seq_make(1, a, 10, 0, ta, 2, 0, sp);
        s[1] = seq_make(2, b, 7, 0, tb, 1, 1, sp);
        ck_assert_int_eq(exec_full(&k, s, 2, flags, NULL, &first, UINT32_MAX, 7), DUET_STATUS_OK);
        s[0] = seq_make(1, a + 10, 8, 10, ta, 2, 1, sp);
        ck_assert_int_eq(exec_full(&k, s, 1, flags, NULL, &second, UINT32_MAX, 7), DUET_STATUS_OK);
        assert_prompt_logprobs(&first, 0, 10, 0, a, la, 5, k.tol, "first chunk of a");
        assert_prompt_logprobs(&first, 10, 7, 0, b, lb, 5, k.tol, "b");
        assert_prompt_logprobs(&second, 0, 8, 10, a, la, 5, k.tol, "second chunk of a");
        assert_rows_match(&first, 0, 1, lb, 6, 1.0, 3, k.tol, "b");
        assert_rows_match(&second, 0, 1, la, 17, 1.0, 3, k.tol, "a");
        outs_free(&first);
        outs_free(&second);
        wk_close(&k);
    }
    free(la);
    free(lb);
}
END_TEST

/* ==== errors =============================================================================== */

/* One bad sequence behind a good one: refused, the message naming the bad one's id. */
static void assert_seq_refused(struct wk *k, const duet_seq *bad, const char *what)
{
    static const int32_t good_tokens[2] = {3, 4};
    static const uint32_t good_table[1] = {0};
    duet_seq s[2] = {seq_make(5, good_tokens, 2, 0, good_table, 1, 1, sp_greedy()), *bad};
    struct outs o;

    assert_refused(k, exec_full(k, s, 2, DUET_BATCH_WANT_PROBS, NULL, &o, UINT32_MAX, 0),
                   DUET_STATUS_INVALID_ARGUMENT, bad->seq_id, what);
    outs_free(&o);
}

START_TEST(test_out_of_vocabulary_tokens_are_refused)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.num_blocks = 4};
    const uint32_t table[1] = {1};
    int32_t tokens[3] = {4, -1, 6};
    duet_seq s = seq_make(4242, tokens, 3, 0, table, 1, 1, sp_greedy());
    double *logits;
    struct outs out;
    struct wk k;

    wk_open(&k, tm, &o); /* k.info.vocab_size is the model's (the mock's own) */
    assert_seq_refused(&k, &s, "token -1");
    tokens[1] = (int32_t)k.info.vocab_size;
    assert_seq_refused(&k, &s, "token = vocab_size");
    tokens[1] = INT32_MAX;
    assert_seq_refused(&k, &s, "token INT32_MAX");
    tokens[1] = (int32_t)k.info.vocab_size - 1; /* the worker is still usable */
    s = seq_make(4242, tokens, 3, 0, table, 1, 3, sp_plain(2));
    exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
    if (!profile->numerics) {
        outs_free(&out);
        wk_close(&k);
        return;
    }
    logits = reference(tm, tokens, 3);
    assert_rows_match(&out, 0, 3, logits, 0, 1.0, 2, k.tol, "after refusals");
    outs_free(&out);
    free(logits);
    wk_close(&k);
}
END_TEST

/* The model's limit is max = describe()'s max_position (256 in the generated models, the mock's
 * own otherwise): a table of max / 16 + 2 blocks covers every position asked for. */
START_TEST(test_positions_beyond_the_model_limit_are_refused)
{
    int32_t tokens[6] = {5, 6, 7, 8, 9, 10};
    struct wk k;

    for (int draft = 0; draft < 2; draft++) {
        /* OPT (learned positions: an unchecked position reads past the table) and a drafting
         * Llama; both have max_position 256 */
        const struct tmodel *tm = &models[draft ? M_LLAMA_F32 : M_OPT_PRE];
        struct wk_opts o = {.draft = draft};
        uint32_t max, n_blocks, *table;
        duet_seq s;
        struct outs out;

        ck_assert_uint_eq(tm->desc.max_position, 256);
        wk_open(&k, tm, &o);
        max = k.info.max_position;
        if (profile->numerics)
            ck_assert_uint_eq(max, tm->desc.max_position);
        n_blocks = max / 16 + 2;
        table = malloc(n_blocks * sizeof(*table));
        ck_assert_ptr_nonnull(table);
        table_range(table, n_blocks, 0);
        ck_assert_msg(wk_init_cache(&k, n_blocks, 0) == DUET_STATUS_OK, "init_cache: %s",
                      k.t->last_error(k.w));
        s = seq_make(4243, tokens, 6, max - 6, table, n_blocks, 1, sp_greedy());
        exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out); /* positions max-6..max-1 */
        outs_free(&out);
        s.pos = max - 5;
        assert_seq_refused(&k, &s, "positions max-5..max");
        s.pos = max, s.n_tokens = 1;
        assert_seq_refused(&k, &s, "position max");
        s.pos = UINT32_MAX - 2, s.n_tokens = 6; /* pos + n_tokens wraps around */
        assert_seq_refused(&k, &s, "positions wrapping around 2^32");
        if (draft) {
            s = seq_make(4244, tokens, 1, max - 6, table, n_blocks, 1, sp_greedy());
            s.n_draft_steps = 5; /* feeds positions max-6..max-1 */
            exec_ok(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out);
            outs_free(&out);
            s.n_draft_steps = 6; /* the last step would feed position max */
            assert_seq_refused(&k, &s, "drafting to position max");
        }
        wk_close(&k);
        free(table);
    }
}
END_TEST

START_TEST(test_short_block_tables_and_bad_block_ids_are_refused)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.num_blocks = 6, .num_swap = 2, .draft = true};
    const uint32_t table[3] = {3, 4, 5}, bad_table[2] = {1, 6}, huge_table[2] = {1, UINT32_MAX};
    int32_t tokens[20];
    duet_seq s;
    struct outs out;
    struct wk k;

    wk_open(&k, tm, &o);
    /* tokens of the model it describes (the mock's own) */
    make_tokens(tokens, 20, k.info.vocab_size, 150);
    s = seq_make(4245, tokens, 20, 0, table, 1, 1, sp_greedy()); /* needs 2 blocks */
    assert_seq_refused(&k, &s, "20 tokens in 1 block");
    s.n_blocks = 2;
    exec_ok(&k, &s, 1, 0, NULL, &out);
    outs_free(&out);
    s = seq_make(4246, tokens, 3, 30, table, 2, 1, sp_greedy()); /* positions 30..32 */
    assert_seq_refused(&k, &s, "prefix continuation past the table");
    s = seq_make(4247, tokens, 1, 14, table, 1, 1, sp_greedy());
    s.n_draft_steps = 2; /* writes positions 14..16: needs 2 blocks */
    assert_seq_refused(&k, &s, "drafting past the table");
    s.n_blocks = 2;
    exec_ok(&k, &s, 1, 0, NULL, &out);
    outs_free(&out);
    s = seq_make(4248, tokens, 20, 0, bad_table, 2, 1, sp_greedy());
    assert_seq_refused(&k, &s, "block id = num_blocks");
    s.block_table = huge_table;
    assert_seq_refused(&k, &s, "block id UINT32_MAX");
    wk_close(&k);
}
END_TEST

START_TEST(test_cache_operations_with_bad_block_ids_are_refused)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.num_blocks = 6, .num_swap = 2};
    const duet_block_pair bad_dev = {0, 6}, bad_swap_in = {2, 0}, bad_swap_out = {0, 2};
    const struct ops ops[3] = {{.copy = &bad_dev, .n_copy = 1},
                               {.swap_in = &bad_swap_in, .n_swap_in = 1},
                               {.swap_out = &bad_swap_out, .n_swap_out = 1}};
    const char *what[3] = {"copy to block 6 of 6", "swap in from swap block 2 of 2",
                           "swap out to swap block 2 of 2"};
    struct wk k;

    wk_open(&k, tm, &o);
    for (int i = 0; i < 3; i++) {
        struct outs out;

        assert_refused(&k, exec_full(&k, NULL, 0, 0, &ops[i], &out, UINT32_MAX, 0),
                       DUET_STATUS_INVALID_ARGUMENT, UINT64_MAX, what[i]);
        outs_free(&out);
    }
    wk_close(&k);
}
END_TEST

START_TEST(test_malformed_batches_are_refused)
{
    const struct tmodel *tm = &models[M_LLAMA_F32];
    struct wk_opts o = {.num_blocks = 4, .draft = true};
    const uint32_t table[1] = {0};
    int32_t tokens[3] = {7, 8, 9};
    duet_seq s = seq_make(4249, tokens, 3, 0, table, 1, 4, sp_greedy());
    struct outs out;
    struct wk k;

    wk_open(&k, tm, &o);
    assert_seq_refused(&k, &s, "n_outputs > n_tokens");
    s.n_outputs = 0, s.n_draft_steps = 2;
    assert_seq_refused(&k, &s, "n_draft_steps without n_outputs");
    s.n_outputs = 2, s.n_draft_steps = 1;
    assert_refused(&k, exec_full(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out, 2, 0),
                   DUET_STATUS_INVALID_ARGUMENT, UINT64_MAX, "2 output rows for 3");
    outs_free(&out);
    ck_assert_int_eq(exec_full(&k, &s, 1, DUET_BATCH_WANT_PROBS, NULL, &out, 3, 0), DUET_STATUS_OK);
    outs_free(&out);
    wk_close(&k);
}
END_TEST

START_TEST(test_execute_before_init_cache_is_refused)
{
    struct wk_opts o = {0};
    const uint32_t table[1] = {0};
    const int32_t tokens[1] = {1};
    duet_seq s = seq_make(4250, tokens, 1, 0, table, 1, 1, sp_greedy());
    struct outs out;
    struct wk k;

    wk_open(&k, &models[M_LLAMA_F32], &o);
    assert_refused(&k, exec_full(&k, &s, 1, 0, NULL, &out, UINT32_MAX, 0),
                   DUET_STATUS_INVALID_ARGUMENT, UINT64_MAX, "execute before init_cache");
    outs_free(&out);
    wk_close(&k);
}
END_TEST

START_TEST(test_cache_too_large_to_allocate_is_out_of_memory)
{
    const struct tmodel *tm = &models[M_OPT_PRE]; /* 768 KiB per block of 256 tokens in f32 */
    struct wk_opts o = {.block_size = 256};
    duet_cache_geometry g = {.struct_size = sizeof(g), .block_size = 256, .budget_bytes = 1};
    struct wk k;

    wk_open(&k, tm, &o);
    ck_assert_int_eq(k.t->cache_geometry(k.w, &g), DUET_STATUS_OK);
    /* the mock's blocks are smaller (256 bytes a token): larger blocks, so that 2^32 - 1 of them
     * still exceed 2^50 bytes */
    while (!profile->numerics && g.block_bytes * (uint64_t)UINT32_MAX <= 1ull << 50) {
        g.block_size *= 2;
        ck_assert_int_eq(k.t->cache_geometry(k.w, &g), DUET_STATUS_OK);
    }
    k.block_size = g.block_size;
    ck_assert_uint_gt(g.block_bytes * (uint64_t)UINT32_MAX, 1ull << 50);
    assert_refused(&k, wk_init_cache(&k, UINT32_MAX, 0), DUET_STATUS_OUT_OF_MEMORY, UINT64_MAX,
                   "init_cache of 2^32 - 1 blocks");
    wk_close(&k);
}
END_TEST

START_TEST(test_missing_model_directory_fails_create_with_its_path)
{
    const char *dir = "/nonexistent/duet-model";
    struct wk_opts o = {0};
    struct wk k;

    wk_prepare(&k, dir, &o);
    ck_assert_int_ne(wk_create(&k, dir, &o), DUET_STATUS_OK);
    ck_assert_ptr_null(k.w);
    ck_assert_msg(strstr(wk_err, dir) != NULL, "message '%s' does not name %s", wk_err, dir);
    wk_close(&k);
}
END_TEST

/* ==== the suite ============================================================================ */

/* A case of the contract; one with numerics needs the reference, so a worker that runs a model's
 * forward pass. */
struct conformance_case {
    const char *name;
    const TTest *test;
    bool numerics;
};

static Suite *conformance_suite(void)
{
    Suite *s = suite_create("worker_conformance");
    const struct conformance_case cases[] = {
        {"capabilities and description",
         test_plugin_declares_its_capabilities_and_describes_the_model, false},
        {"cache geometry", test_cache_geometry_follows_layers_heads_and_dtype, false},
        {"gqa llama vs reference", test_gqa_llama_matches_reference_in_each_dtype, true},
        {"llama3 rope vs reference", test_llama3_scaled_rope_with_one_kv_head_matches_reference,
         true},
        {"opt vs reference", test_opt_with_pre_and_post_layer_norm_matches_reference, true},
        {"prefill then decode", test_prefill_then_decode_equals_longer_prefill, true},
        {"mixed batch", test_mixed_batch_equals_each_sequence_alone, true},
        {"block tables", test_shuffled_block_tables_and_block_sizes_give_the_same_results, true},
        {"copy on write", test_copy_on_write_keeps_both_branches, true},
        {"swap", test_swap_out_and_in_preserve_the_results, true},
        {"cache op order", test_cache_operations_run_as_swap_in_then_swap_out_then_copy, true},
        {"drafting", test_multi_step_drafting_equals_single_steps, true},
        {"scoring", test_scoring_k_plus_one_positions_equals_single_decodes, true},
        {"seeded sampling", test_seeded_sampling_is_reproducible_and_drawn_from_the_row, true},
        {"sampled frequencies", test_sampled_frequencies_follow_the_softmax, true},
        {"prompt logprobs", test_prompt_logprobs_cover_every_fed_position, true},
        {"penalties vs reference",
         test_penalised_scoring_and_drafting_rows_match_the_penalised_reference, true},
        {"penalties capability",
         test_penalties_are_applied_only_where_declared_and_malformed_ones_refused, false},
        {"bad tokens", test_out_of_vocabulary_tokens_are_refused, false},
        {"bad positions", test_positions_beyond_the_model_limit_are_refused, false},
        {"short block tables", test_short_block_tables_and_bad_block_ids_are_refused, false},
        {"bad cache operations", test_cache_operations_with_bad_block_ids_are_refused, false},
        {"malformed batches", test_malformed_batches_are_refused, false},
        {"no cache", test_execute_before_init_cache_is_refused, false},
        {"cache too large", test_cache_too_large_to_allocate_is_out_of_memory, false},
        {"missing model", test_missing_model_directory_fails_create_with_its_path, true},
        {"qwen2 and qwen3 vs reference", test_qwen2_biases_and_qwen3_head_norms_match_reference,
         true},
        {"sliding window prefill", test_sliding_window_prefill_matches_reference, true},
        {"sliding window decode", test_sliding_window_decode_reads_no_block_before_the_window,
         true},
        {"gguf vs reference", test_gguf_files_match_reference, true},
    };
    const struct duet_test_case presets[] = {
        {"preset shapes vs reference", test_llama_68m_and_opt_125m_shapes_match_reference},
    };
    int skipped = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct duet_test_case c = {cases[i].name, cases[i].test};

        if (cases[i].numerics && !profile->numerics)
            skipped++;
        else
            duet_test_add_cases(s, &c, 1, NULL, NULL, profile->case_timeout);
    }
    if (!profile->numerics)
        skipped += (int)(sizeof(presets) / sizeof(presets[0]));
    else if (!under_valgrind)
        duet_test_add_cases(s, presets, sizeof(presets) / sizeof(presets[0]), NULL, NULL, 300);
    if (skipped)
        printf("%s: %d cases against the reference not run: the %s worker runs no model\n", prog,
               skipped, profile->name);
    fflush(stdout);
    return s;
}

/* dl_iterate_phdr callback: the device count of the first loaded object that defines
 * cudaGetDeviceCount (the CUDA runtime the plugin loaded, or the host emulation of it). */
static int count_devices(struct dl_phdr_info *info, size_t size, void *data)
{
    void *h = info->dlpi_name[0] ? dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    int (*count)(int *) = NULL;
    int n = 0;

    (void)size;
    if (!h)
        return 0;
    *(void **)&count = dlsym(h, "cudaGetDeviceCount");
    if (count)
        *(int *)data = count(&n) == 0 ? n : 0;
    dlclose(h);
    return count != NULL;
}

/* The CUDA devices the runtime the plugin loaded sees; -1 when it loaded none. Only in the
 * identifying child: cudaGetDeviceCount initialises the driver, which a process must not do
 * before Check forks its test processes. */
static int cuda_devices(void)
{
    int n = -1;

    dl_iterate_phdr(count_devices, &n);
    return n;
}

/* The plugin's name, details and CUDA device count (-1: not a CUDA plugin), read in a child
 * process: counting devices initialises CUDA, which a forked child (Check's test processes)
 * could not use after, and the CPU worker loads libgomp. False with a message. */
static bool identify(const char *path, char *name, char *details, size_t size, int *devices)
{
    int fd[2], wstatus = 0;
    char buf[1024] = "", *p;
    ssize_t got;
    pid_t pid;

    if (pipe(fd) != 0)
        return false;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        duet_plugin *pl;
        const duet_worker_plugin *t;

        close(fd[0]);
        if (duet_plugin_load(path, NULL, NULL, &pl, wk_err, sizeof(wk_err)) != DUET_STATUS_OK) {
            fprintf(stderr, "check_worker_conformance: %s\n", wk_err);
            _exit(1);
        }
        t = duet_plugin_table(pl);
        snprintf(buf, sizeof(buf), "%d\n%s\n%s", cuda_devices(), t->name,
                 t->details ? t->details : "");
        _exit(write(fd[1], buf, strlen(buf)) == (ssize_t)strlen(buf) ? 0 : 1);
    }
    close(fd[1]);
    got = pid > 0 ? read(fd[0], buf, sizeof(buf) - 1) : -1;
    close(fd[0]);
    if (pid <= 0 || waitpid(pid, &wstatus, 0) != pid || !WIFEXITED(wstatus) ||
        WEXITSTATUS(wstatus) != 0 || got <= 0)
        return false;
    buf[got] = '\0';
    *devices = atoi(buf);
    p = strchr(buf, '\n') ? strchr(buf, '\n') + 1 : buf + got;
    snprintf(details, size, "%s", strchr(p, '\n') ? strchr(p, '\n') + 1 : "");
    p[strcspn(p, "\n")] = '\0';
    snprintf(name, size, "%s", p);
    return true;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : getenv("DUET_TEST_WORKER");
    const struct worker_profile *p;
    static char name[256], details[256], program[300];
    int status, devices = -1;

    if (!path || access(path, R_OK) != 0) {
        printf("check_worker_conformance: SKIP: the worker plugin (argv[1] or DUET_TEST_WORKER: "
               "%s) is not there\n",
               path ? path : "");
        return 77;
    }
    if (!identify(path, name, details, sizeof(name), &devices)) {
        printf("check_worker_conformance: %s: cannot load the plugin\n", path);
        return EXIT_FAILURE;
    }
    p = worker_profile_find(name);
    if (!p) {
        printf("check_worker_conformance: %s: no profile for a worker called \"%s\" "
               "(worker_harness.c)\n",
               path, name);
        return EXIT_FAILURE;
    }
    snprintf(program, sizeof(program), "check_worker_conformance (%s)", name);
    status = harness_check(program, p, path);
    if (status != EXIT_SUCCESS)
        return status;
    if (p->device && devices <= 0) {
        printf("%s: SKIP: no CUDA device (%s)\n", program, details);
        return 77;
    }
    if (!harness_init(p->numerics ? ALL_MODELS : ALL_MODELS & ~PRESET_MODELS)) {
        harness_fini();
        return EXIT_FAILURE;
    }
    status = duet_test_run(conformance_suite());
    harness_fini();
    return status;
}
