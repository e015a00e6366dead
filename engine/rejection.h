/*
 * rejection.h — the verify step of speculative decoding (DESIGN §7.3; vllm-semantics §4.9–4.12):
 * given one sequence's k draft tokens, the draft rows they were sampled from and the target's
 * k + 1 rows, decide how many drafts to keep and which token follows them.
 *
 *   drafts    x_1   x_2   ...  x_k
 *   position  P_1   P_1+1 ...  P_1+k-1   P_1+k
 *   draft     q_1   q_2   ...  q_k
 *   target    p_1   p_2   ...  p_k       p_{k+1}
 *   output    x_1 .. x_{n}, then t, then -1 up to index k      (n = n_accepted, 0..k)
 *
 * t is the token emitted at the first rejected position (n < k) or the bonus token drawn from
 * p_{k+1} (n = k). Every row has already been through the request's sampling settings
 * (temperature, top-k, top-p, min-p; one-hot for greedy), exactly as the workers sampled from
 * them. Randomness is duet__rng_uniform(seed, position, draw) from sampling.h, so the outcome is
 * a pure function of the inputs.
 *
 * Methods:
 *   REJECTION  accept x_j iff u < p_j(x_j) / q_j(x_j), u = U(seed, P_j, DUET_DRAW_ACCEPT); at the
 *              first rejection emit a draw from normalise(max(0, p_j - q_j)) with
 *              U(seed, P_j, DUET_DRAW_RESAMPLE) (from p_j when that residual is all zero); the
 *              bonus is p_{k+1} drawn with U(seed, P_1 + k, DUET_DRAW_SAMPLE), the token the
 *              target worker itself sampled for that row. The emitted tokens are distributed
 *              exactly as the target alone would sample them. q_j(x_j) = 0 (or not finite)
 *              cannot come from sampling q_j and rejects.
 *   TYPICAL    accept x_j iff p_j(x_j) > min(threshold, alpha * exp(-H(p_j))) (Medusa; vLLM's
 *              TypicalAcceptanceSampler); emit argmax p_j at the first rejection; bonus as
 *              REJECTION. Deterministic per row and not distribution-preserving; q is not read.
 *   SYNTHETIC  accept x_j iff u < rate, u = U(seed, P_j, DUET_DRAW_ACCEPT): each proposal
 *              independently with probability rate, whatever the rows say (benchmarks: acceptance
 *              set by hand, speculative.acceptance = synthetic). At the first rejection emit the
 *              target's own token at P_j, the draw from p_j with U(seed, P_j, DUET_DRAW_SAMPLE)
 *              that plain decoding makes there; bonus as REJECTION. The accepted drafts are the
 *              draft's tokens, so the output is not the target's distribution. q is not read; a
 *              greedy (one-hot) p_j makes the emitted token its argmax.
 *   GREEDY     accept x_j iff x_j == argmax p_j; emit argmax p_j at the first mismatch; the bonus
 *              is argmax p_{k+1}. q is not read. (REJECTION on one-hot rows gives the same.)
 * argmax takes the lowest id among tied maxima, as the sampler's greedy path does.
 */
#ifndef DUET_ENGINE_REJECTION_H
#define DUET_ENGINE_REJECTION_H

#include <duet/types.h>

#include <stddef.h>
#include <stdint.h>

enum duet__accept_method {
    DUET__ACCEPT_REJECTION, /* modified rejection sampling (speculative.acceptance = rejection) */
    DUET__ACCEPT_TYPICAL,   /* typical acceptance (speculative.acceptance = typical) */
    DUET__ACCEPT_GREEDY,    /* exact argmax matching on the target rows */
    DUET__ACCEPT_SYNTHETIC, /* accepted with a fixed probability (speculative.acceptance =
                               synthetic) */
};

struct duet__accept_params {
    enum duet__accept_method method;
    float typical_threshold; /* TYPICAL: posterior threshold, (0, 1] */
    float typical_alpha;     /* TYPICAL: posterior alpha, (0, 1] */
    double synthetic_rate;   /* SYNTHETIC: probability of accepting each proposal, [0, 1] */
};

/* One sequence's proposal and its scores. */
struct duet__proposal {
    const int32_t *draft_tokens; /* [k] x_1..x_k */
    const float *draft_probs;    /* [k][vocab] q_j, the row x_j was sampled from; REJECTION only */
    const float *target_probs;   /* [k + 1][vocab] p_j at the positions of x_1..x_k, then bonus */
    uint32_t k;                  /* proposals, >= 1 */
    uint64_t seed;               /* the request's duet_sampling_params.seed */
    uint64_t position;           /* P_1, the position of x_1 */
};

/*
 * Verifies one proposal (see the top of this file). Writes tokens[0..k]: the n_accepted accepted
 * drafts, then the recovered or bonus token, then -1; and *n_accepted (0..k). REJECTION needs
 * scratch[vocab] (its contents on entry do not matter; nothing is allocated). The caller owns
 * every buffer.
 *
 * DUET_STATUS_INVALID_ARGUMENT, with the reason in err[err_size] (err may be NULL), for k = 0,
 * vocab = 0, a NULL array the method reads, a draft token outside [0, vocab), typical parameters
 * outside (0, 1], a synthetic rate outside [0, 1], or a target row with no positive entry to draw
 * from; tokens (when not NULL) are then all -1 and *n_accepted 0.
 */
duet_status duet__verify(const struct duet__accept_params *params, const struct duet__proposal *pr,
                         uint32_t vocab, float *scratch, int32_t *tokens, uint32_t *n_accepted,
                         char *err, size_t err_size);

/*
 * GREEDY from the target's sampled ids alone (greedy rows: the token is the argmax):
 * target_argmax[0..k] are the target's tokens at P_1..P_1 + k. Same output and errors as
 * duet__verify; target ids must also lie in [0, vocab).
 */
duet_status duet__verify_greedy_ids(const int32_t *draft_tokens, const int32_t *target_argmax,
                                    uint32_t k, uint32_t vocab, int32_t *tokens,
                                    uint32_t *n_accepted, char *err, size_t err_size);

#endif /* DUET_ENGINE_REJECTION_H */
