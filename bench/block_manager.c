/*
 * Block manager benchmark: operations per second for what a scheduler step does to the paged-KV
 * block manager (issue 3): allocating a 2048-token prompt (prefix caching cold and fully cached,
 * and without caching), a decode step's appends for 256 and 4096 sequences (with and without 4
 * lookahead slots), fork, free, swap out and swap in.
 *
 * Only the operation itself is inside the timed region; preparing tokens and undoing the
 * operation (freeing what was allocated) happen outside it.
 */
#include "bench.h"

#include <duet/block_manager.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS 16
#define PROMPT 2048

/* Repeats the statements given after samples (which time their own operations into `ns` and
 * `ops`) until the budget is spent, once per repetition. */
#define MEASURE(opts, samples, ...)                                                                \
    do {                                                                                           \
        for (int rep_ = 0; rep_ < (opts)->repeats; rep_++) {                                       \
            uint64_t ns = 0, ops = 0;                                                              \
            uint64_t end_ =                                                                        \
                duet__bench_now_ns() + (uint64_t)((opts)->seconds / (opts)->repeats * 1e9);        \
            do {                                                                                   \
                __VA_ARGS__;                                                                       \
            } while (duet__bench_now_ns() < end_);                                                 \
            duet__bench_sample(samples, ns, ops);                                                  \
        }                                                                                          \
    } while (0)

static duet_block_manager *make_bm(uint32_t device, uint32_t host, bool caching)
{
    duet_block_manager_params p;
    duet_block_manager *bm = NULL;
    char err[256];

    duet_block_manager_params_init(&p);
    p.block_size = BS;
    p.num_device_blocks = device;
    p.num_host_blocks = host;
    p.prefix_caching = caching;
    p.max_seqs = 4096;
    if (duet_block_manager_create(&p, &bm, err, sizeof(err)))
        fprintf(stderr, "duet-bench: block manager: %s\n", err);
    return bm;
}

static int fail(duet_block_manager *bm, const char *what)
{
    fprintf(stderr, "duet-bench: block manager: %s: %s\n", what, duet_block_manager_error(bm));
    return 1;
}

static void fill_prompt(int32_t *tokens, uint32_t n, uint32_t salt)
{
    for (uint32_t i = 0; i < n; i++)
        tokens[i] = (int32_t)((i * 2654435761u + salt * 40503u) % 32000u);
}

/* Allocating a PROMPT-token prompt: caching off, on with new content, on with cached content. */
static int bench_allocate(const struct duet_bench_opts *o, json_t *results, bool caching,
                          bool cached, const char *name)
{
    duet_block_manager *bm = make_bm(8192, 0, caching);
    struct duet_bench_samples s = {0};
    struct duet_bench_result r;
    int32_t tokens[PROMPT];
    uint64_t seq = 1;
    uint32_t salt = 0;
    int rc;

    if (!bm)
        return 1;
    fill_prompt(tokens, PROMPT, 0);
    MEASURE(o, &s, {
        uint64_t t0;
        if (!cached)
            fill_prompt(tokens, 1, ++salt); /* a new first token changes every block's hash */
        t0 = duet__bench_now_ns();
        if (duet_block_manager_allocate(bm, &seq, 1, tokens, PROMPT))
            goto out_fail;
        ns += duet__bench_now_ns() - t0;
        ops++;
        duet_block_manager_free(bm, seq++);
    });
    duet__bench_finish(&s, name, &r);
    duet__bench_report(results, &r,
                       json_pack("{s:i, s:i, s:f}", "prompt_tokens", PROMPT, "block_size", BS,
                                 "hit_rate",
                                 duet_block_manager_hit_rate(bm, DUET_BLOCK_POOL_DEVICE)));
    duet_block_manager_destroy(bm);
    return 0;
out_fail:
    rc = fail(bm, name);
    duet_block_manager_destroy(bm);
    return rc;
}

/* Allocates n_seqs sequences of 16-token prompts, ids 1..n_seqs. */
static int start_seqs(duet_block_manager *bm, uint64_t *ids, uint32_t n_seqs)
{
    int32_t prompt[BS];

    for (uint32_t i = 0; i < n_seqs; i++) {
        ids[i] = i + 1;
        fill_prompt(prompt, BS, i + 1);
        if (duet_block_manager_allocate(bm, &ids[i], 1, prompt, BS))
            return fail(bm, "allocate");
    }
    return 0;
}

/* One decode step: can_append_slots for the batch, one token appended to each sequence with
 * `lookahead` empty slots reserved, then mark_computed. Sequences restart every 512 steps. */
static int bench_decode(const struct duet_bench_opts *o, json_t *results, uint32_t n_seqs,
                        uint32_t lookahead, bool caching)
{
    uint32_t device = n_seqs * (512 / BS + 4);
    duet_block_manager *bm = make_bm(device, 0, caching);
    uint64_t *ids = calloc(n_seqs, sizeof(*ids));
    uint32_t *ones = malloc(n_seqs * sizeof(*ones));
    struct duet_bench_samples s = {0};
    struct duet_bench_result r;
    duet_block_pair pairs[4];
    uint32_t len = BS, steps = 0;
    char name[96];
    int rc = 1;

    if (!bm || !ids || !ones || start_seqs(bm, ids, n_seqs))
        goto out;
    for (uint32_t i = 0; i < n_seqs; i++)
        ones[i] = 1;
    MEASURE(o, &s, {
        uint64_t t0 = duet__bench_now_ns();
        if (!duet_block_manager_can_append_slots(bm, ids, ones, n_seqs, lookahead))
            goto out_fail;
        for (uint32_t i = 0; i < n_seqs; i++) {
            duet_block_pair_buf copies = {.pairs = pairs, .cap = 4};
            const int32_t token = (int32_t)(len + i);
            if (duet_block_manager_append_tokens(bm, ids[i], &token, 1, lookahead, len + 1,
                                                 &copies))
                goto out_fail;
        }
        duet_block_manager_mark_computed(bm);
        ns += duet__bench_now_ns() - t0;
        ops++;
        len++;
        if (++steps % 512 == 0) { /* restart, untimed */
            for (uint32_t i = 0; i < n_seqs; i++)
                duet_block_manager_free(bm, ids[i]);
            if (start_seqs(bm, ids, n_seqs))
                goto out;
            len = BS;
        }
    });
    snprintf(name, sizeof(name), "decode_step_%u_seqs%s%s", n_seqs, lookahead ? "_lookahead4" : "",
             caching ? "_prefix_caching" : "");
    duet__bench_finish(&s, name, &r);
    duet__bench_report(results, &r,
                       json_pack("{s:i, s:i, s:f}", "sequences", n_seqs, "lookahead_slots",
                                 lookahead, "ns_per_sequence", r.ns_median / n_seqs));
    rc = 0;
    goto out;
out_fail:
    fprintf(stderr, "duet-bench: block manager: decode step %u of %u sequences, %u free blocks\n",
            steps, n_seqs, duet_block_manager_num_free_blocks(bm, DUET_BLOCK_POOL_DEVICE));
    rc = fail(bm, "decode step");
out:
    free(ids);
    free(ones);
    duet_block_manager_destroy(bm);
    return rc;
}

/* fork + free of a PROMPT-token sequence, and swap out + swap in of it, timed separately. */
static int bench_fork_swap(const struct duet_bench_opts *o, json_t *results)
{
    const uint32_t nb = PROMPT / BS;
    duet_block_manager *bm = make_bm(4 * nb, 2 * nb, false);
    struct duet_bench_samples fork_s = {0}, free_s = {0}, out_s = {0}, in_s = {0};
    struct duet_bench_result r;
    duet_block_pair *pairs = calloc(nb, sizeof(*pairs));
    int32_t tokens[PROMPT];
    uint64_t parent = 1, child = 2;
    int rc = 1;

    fill_prompt(tokens, PROMPT, 7);
    if (!bm || !pairs || duet_block_manager_allocate(bm, &parent, 1, tokens, PROMPT))
        goto out;
    for (int rep = 0; rep < o->repeats; rep++) {
        uint64_t fork_ns = 0, free_ns = 0, out_ns = 0, in_ns = 0, n = 0;
        uint64_t end = duet__bench_now_ns() + (uint64_t)(o->seconds / o->repeats * 1e9);
        do {
            duet_block_pair_buf buf = {.pairs = pairs, .cap = nb};
            uint64_t t0 = duet__bench_now_ns(), t1, t2, t3, t4;
            if (duet_block_manager_fork(bm, parent, child))
                goto out_fail;
            t1 = duet__bench_now_ns();
            duet_block_manager_free(bm, child);
            t2 = duet__bench_now_ns();
            if (duet_block_manager_swap_out(bm, &parent, 1, &buf))
                goto out_fail;
            t3 = duet__bench_now_ns();
            buf.n = 0;
            if (duet_block_manager_swap_in(bm, &parent, 1, &buf))
                goto out_fail;
            t4 = duet__bench_now_ns();
            fork_ns += t1 - t0, free_ns += t2 - t1, out_ns += t3 - t2, in_ns += t4 - t3, n++;
        } while (duet__bench_now_ns() < end);
        duet__bench_sample(&fork_s, fork_ns, n);
        duet__bench_sample(&free_s, free_ns, n);
        duet__bench_sample(&out_s, out_ns, n);
        duet__bench_sample(&in_s, in_ns, n);
    }
    duet__bench_finish(&fork_s, "fork_2048", &r);
    duet__bench_report(results, &r, json_pack("{s:i}", "blocks", nb));
    duet__bench_finish(&free_s, "free_forked_2048", &r);
    duet__bench_report(results, &r, json_pack("{s:i}", "blocks", nb));
    duet__bench_finish(&out_s, "swap_out_2048", &r);
    duet__bench_report(results, &r, json_pack("{s:i}", "blocks", nb));
    duet__bench_finish(&in_s, "swap_in_2048", &r);
    duet__bench_report(results, &r, json_pack("{s:i}", "blocks", nb));
    rc = 0;
    goto out;
out_fail:
    rc = fail(bm, "fork/swap");
out:
    free(pairs);
    duet_block_manager_destroy(bm);
    return rc;
}

int duet__bench_block_manager(const struct duet_bench_opts *o, json_t *results)
{
    const uint32_t big = o->quick ? 512 : 4096;

    return bench_allocate(o, results, true, false, "allocate_2048_prefix_caching_cold") ||
           bench_allocate(o, results, true, true, "allocate_2048_prefix_caching_cached") ||
           bench_allocate(o, results, false, false, "allocate_2048_no_caching") ||
           bench_decode(o, results, 256, 0, false) || bench_decode(o, results, 256, 4, false) ||
           bench_decode(o, results, 256, 4, true) || bench_decode(o, results, big, 0, false) ||
           bench_decode(o, results, big, 4, false) || bench_fork_swap(o, results);
}
