/*
 * model_agreement — measures how often drafts agree with a target under greedy decoding, with
 * the double-precision reference forward pass (docs/models.md records its numbers).
 *
 *   tests/model_agreement [--prompts N] [--tokens T] TARGET DRAFT...
 *
 * For each prompt (4 pseudo-random tokens), the target generates T tokens greedily; at every
 * generated position each draft, fed the same prefix, predicts its argmax. Agreement is the
 * fraction of positions where the argmaxes match: the probability that a greedy draft token is
 * accepted, which sets the speed-up of speculative decoding. Also prints the target's mean
 * top-1 probability and entropy (is the softmax neither flat nor one-hot?).
 */
#include "reference_forward.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run {
    duet_model *model;
    duet_ref *ref;
    double *logits; /* [vocab] */
    unsigned agree; /* positions agreeing with the target (drafts) */
};

static int open_run(const char *dir, uint32_t positions, struct run *r)
{
    char err[2048];

    if (duet_model_create(dir, DUET_MODEL_QUIET, &r->model, err, sizeof(err))) {
        fprintf(stderr, "model_agreement: %s\n", err);
        return -1;
    }
    if (duet_ref_create(r->model, positions, &r->ref)) {
        fprintf(stderr, "model_agreement: %s: too large for the reference\n", dir);
        return -1;
    }
    r->logits = malloc(duet_model_describe(r->model)->vocab_size * sizeof(double));
    return r->logits ? 0 : -1;
}

static void close_run(struct run *r)
{
    duet_ref_destroy(r->ref);
    duet_model_destroy(r->model);
    free(r->logits);
}

/* Softmax statistics of one row: adds its top-1 probability and entropy. */
static void add_stats(const double *logits, uint32_t vocab, double *top1, double *entropy)
{
    double max = logits[duet_ref_argmax(logits, vocab)], sum = 0, ent = 0;

    for (uint32_t v = 0; v < vocab; v++)
        sum += exp(logits[v] - max);
    for (uint32_t v = 0; v < vocab; v++) {
        double p = exp(logits[v] - max) / sum;

        ent -= p > 0 ? p * log(p) : 0;
    }
    *top1 += 1 / sum;
    *entropy += ent;
}

/* One prompt through the target and every draft; returns the positions scored. */
static unsigned run_prompt(struct run *runs, int n, uint32_t prompt, uint32_t tokens, double *top1,
                           double *entropy)
{
    uint32_t vocab = duet_model_describe(runs[0].model)->vocab_size;
    int32_t token = 0;

    for (int k = 0; k < n; k++)
        duet_ref_reset(runs[k].ref);
    for (uint32_t i = 0; i < 4 + tokens; i++) {
        for (int k = 0; k < n; k++)
            duet_ref_step(runs[k].ref, token, runs[k].logits);
        if (i >= 4) {
            uint32_t want = duet_ref_argmax(runs[0].logits, vocab);

            for (int k = 1; k < n; k++)
                runs[k].agree += duet_ref_argmax(runs[k].logits, vocab) == want;
            add_stats(runs[0].logits, vocab, top1, entropy);
        }
        token = i < 3 ? (int32_t)((prompt * 7919u + i * 104729u) % vocab)
                      : (int32_t)duet_ref_argmax(runs[0].logits, vocab);
    }
    return tokens;
}

static bool parse_count(const char *s, unsigned long *out)
{
    char *end;

    errno = 0;
    *out = strtoul(s, &end, 10);
    return !errno && end != s && !*end && *out > 0 && *out < 100000;
}

int main(int argc, char **argv)
{
    unsigned long prompts = 16, tokens = 32;
    int first = 1, n, rc = 1;
    struct run *runs;
    unsigned total = 0;
    double top1 = 0, entropy = 0;

    while (first + 1 < argc && argv[first][0] == '-') {
        bool ok = strcmp(argv[first], "--prompts") == 0  ? parse_count(argv[first + 1], &prompts)
                  : strcmp(argv[first], "--tokens") == 0 ? parse_count(argv[first + 1], &tokens)
                                                         : false;

        if (!ok) {
            fprintf(stderr, "model_agreement: bad option %s\n", argv[first]);
            return 2;
        }
        first += 2;
    }
    n = argc - first;
    if (n < 2) {
        fprintf(stderr, "usage: model_agreement [--prompts N] [--tokens T] TARGET DRAFT...\n");
        return 2;
    }
    runs = calloc((size_t)n, sizeof(*runs));
    for (int k = 0; k < n; k++)
        if (!runs || open_run(argv[first + k], (uint32_t)tokens + 4, &runs[k]))
            goto out;
    for (uint32_t p = 0; p < prompts; p++)
        total += run_prompt(runs, n, p, (uint32_t)tokens, &top1, &entropy);
    printf("target %s: mean top-1 probability %.3f, entropy %.2f nats, %u positions\n", argv[first],
           top1 / total, entropy / total, total);
    for (int k = 1; k < n; k++)
        printf("  draft %s: greedy agreement %.3f\n", argv[first + k],
               (double)runs[k].agree / total);
    rc = 0;
out:
    for (int k = 0; runs && k < n; k++)
        close_run(&runs[k]);
    free(runs);
    return rc;
}
