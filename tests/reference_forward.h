/*
 * reference_forward.h — a plain double-precision forward pass of the models duet runs (Llama:
 * RMSNorm, RoPE with linear / llama3 scaling, grouped-query attention, SwiGLU, and the family's
 * Qwen2 q/k/v biases, Qwen3 per-head q/k RMSNorm, Mistral / Qwen sliding window; OPT: LayerNorm
 * before or after each block, learned positions with offset 2, ReLU, project_in / project_out,
 * biases), read straight from a duet_model. It is the reference the workers' kernels are
 * compared against, so it favours obviousness over speed: every weight converted to double
 * once, simple loops, a contiguous KV cache, one token per step. Meant for small test models:
 * it holds 8 bytes per parameter.
 */
#ifndef DUET_REFERENCE_FORWARD_H
#define DUET_REFERENCE_FORWARD_H

#include <duet/model.h>

typedef struct duet_ref duet_ref;

/* A reference for model (which must outlive it) over positions 0 .. max_tokens - 1. The caller
 * releases it with duet_ref_destroy. OUT_OF_MEMORY when the weights do not fit. */
duet_status duet_ref_create(const duet_model *model, uint32_t max_tokens, duet_ref **out);
void duet_ref_destroy(duet_ref *ref);
/* Forgets every position: the next token goes to position 0. */
void duet_ref_reset(duet_ref *ref);
/* The position the next token goes to. */
uint32_t duet_ref_pos(const duet_ref *ref);
/* Feeds token at the next position; logits[vocab_size] receives the scores of the token after
 * it. INVALID_ARGUMENT for a token outside the vocabulary, CAPACITY past max_tokens. */
duet_status duet_ref_step(duet_ref *ref, int32_t token, double *logits);

/* Rotary frequencies of a Llama description (inv_freq[head_dim / 2], scaling applied), and the
 * rotation of one head vector vec[head_dim] to position pos (Hugging Face's rotate_half). */
void duet_ref_rope_freqs(const duet_model_desc *desc, double *inv_freq);
void duet_ref_rope(const double *inv_freq, uint32_t head_dim, uint32_t pos, double *vec);

/* Index of the largest of x[n] (the first on ties). */
uint32_t duet_ref_argmax(const double *x, uint32_t n);

#endif /* DUET_REFERENCE_FORWARD_H */
