/*
 * duet/tokenizer.h — Hugging Face tokenizers in C: tokenizer.json (+ tokenizer_config.json and
 * generation_config.json) loaded from a model folder, text encoded to ids, ids decoded to text in
 * one shot or incrementally for streaming (docs/tokenizer.md).
 *
 *     DIR/tokenizer.json          ─► normalizer, pre-tokenizer, BPE model, added tokens,
 *                                    post-processor, decoder
 *     DIR/tokenizer_config.json   ─► bos_token / eos_token (optional)
 *     DIR/generation_config.json  ─► eos_token_id (optional; overrides the config's EOS)
 *
 * Supported: byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece-style BPE (Llama 2,
 * Mistral). Any other model, normalizer, pre-tokenizer, post-processor or decoder is refused at
 * load with DUET_STATUS_UNSUPPORTED and a message naming the component and the file.
 *
 * A tokenizer is immutable after loading except for its internal cache of words already seen,
 * which a lock guards: any number of threads may encode and decode with one tokenizer at once.
 * A duet_detok belongs to one thread at a time.
 */
#ifndef DUET_TOKENIZER_H
#define DUET_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <duet/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DUET_TOKENIZER_MAX_EOS 8 /* end-of-sequence ids a tokenizer reports */

typedef struct duet_tokenizer duet_tokenizer;
typedef struct duet_detok duet_detok;

/* Loads DIR/tokenizer.json and its companions. DIR may be a GGUF file: then the tokenizer.json
 * of its folder, or without one the tokenizer the file embeds (tokenizer.ggml.*;
 * DUET_STATUS_NOT_FOUND when it has none). On failure, ERR (when not NULL) holds a message
 * that names the file and the key or component. The caller owns *OUT and releases it with
 * duet_tokenizer_destroy. */
DUET_API duet_status duet_tokenizer_load(const char *dir, duet_tokenizer **out, char *err,
                                         size_t err_size);
DUET_API void duet_tokenizer_destroy(duet_tokenizer *tok);

/* Encodes LEN bytes of TEXT (UTF-8; invalid sequences become U+FFFD as Hugging Face's string
 * APIs do; NUL bytes are ordinary characters). ADD_SPECIAL applies the post-processor (BOS/EOS),
 * as Hugging Face's encode does by default; special-token strings inside the text are always
 * matched. The caller owns *IDS (N ids; NULL when N is 0) and releases it with
 * duet_tokenizer_free. DUET_STATUS_UNSUPPORTED when a pre-tokenizer's regex gives up on the text
 * (PCRE2's match limit), never a partial split. */
DUET_API duet_status duet_tokenizer_encode(const duet_tokenizer *tok, const char *text, size_t len,
                                           bool add_special, int32_t **ids, size_t *n);

/* Decodes N ids with the tokenizer's decoder chain into a NUL-terminated UTF-8 string (*LEN bytes
 * before the NUL when LEN is not NULL). SKIP_SPECIAL drops special tokens. An id outside the
 * vocabulary is DUET_STATUS_INVALID_ARGUMENT. The caller owns *TEXT and releases it with
 * duet_tokenizer_free. */
DUET_API duet_status duet_tokenizer_decode(const duet_tokenizer *tok, const int32_t *ids, size_t n,
                                           bool skip_special, char **text, size_t *len);

/* Releases a buffer that duet_tokenizer_encode or duet_tokenizer_decode returned. */
DUET_API void duet_tokenizer_free(void *ptr);

/* Ids: one past the largest token id (model vocabulary and added tokens). */
DUET_API uint32_t duet_tokenizer_vocab_size(const duet_tokenizer *tok);
/* The id of token string TOKEN (LEN bytes) or -1. */
DUET_API int32_t duet_tokenizer_token_to_id(const duet_tokenizer *tok, const char *token,
                                            size_t len);
/* The token string of ID (not NUL-terminated, *LEN bytes; valid while TOK lives) or NULL. */
DUET_API const char *duet_tokenizer_id_to_token(const duet_tokenizer *tok, int32_t id, size_t *len);
DUET_API bool duet_tokenizer_is_special(const duet_tokenizer *tok, int32_t id);
/* The BOS id, or -1 when the tokenizer has none. */
DUET_API int32_t duet_tokenizer_bos_id(const duet_tokenizer *tok);
/* Copies up to MAX end-of-sequence ids into IDS and returns how many there are. */
DUET_API size_t duet_tokenizer_eos_ids(const duet_tokenizer *tok, int32_t *ids, size_t max);

/* ---- chat templates ------------------------------------------------------------------------
 * tokenizer_config.json's Jinja "chat_template" (a string, or a list of {"name", "template"} of
 * which "default" is taken), or DIR/chat_template.jinja, which takes precedence as in
 * transformers. Rendering follows transformers' apply_chat_template: Jinja2 with trim_blocks and
 * lstrip_blocks, the variables messages, add_generation_prompt, bos_token, eos_token, unk_token,
 * pad_token (strings from tokenizer_config.json, undefined when absent, as transformers'
 * special_tokens_map), tools and documents (none unless the kwargs give them), the functions
 * raise_exception and strftime_now, and transformers' tojson filter. Only a subset of Jinja is
 * interpreted (docs/tokenizer.md); a construct outside it is DUET_STATUS_UNSUPPORTED with a
 * message naming the template line, never wrong text, and it does not make loading fail. Limits
 * on memory, output, steps and nesting stop hostile templates with DUET_STATUS_CAPACITY. A
 * rendered prompt already carries the template's BOS: encode it with ADD_SPECIAL false, as
 * transformers and vLLM do. */

/* The tokenizer's chat template (NUL-terminated; valid while TOK lives), or NULL when it has
 * none. */
DUET_API const char *duet_tokenizer_chat_template(const duet_tokenizer *tok);

typedef struct duet_chat_options {
    bool add_generation_prompt; /* end with the assistant's header (default true) */
    const char *chat_template;  /* NULL: the tokenizer's own template */
    const char *kwargs_json;    /* NULL, or a JSON object whose members become template variables
                                   (vLLM's chat_template_kwargs: enable_thinking, tools, ...) */
} duet_chat_options;

/* Fills *OPTS with the defaults above. */
DUET_API void duet_chat_options_init(duet_chat_options *opts);

/* Renders MESSAGES_JSON (LEN bytes: a JSON array of objects with at least "role" and "content")
 * with the tokenizer's template into a NUL-terminated prompt (*PROMPT_LEN bytes before the NUL
 * when not NULL), which the caller releases with duet_tokenizer_free. OPTS NULL means the
 * defaults. Errors: DUET_STATUS_INVALID_ARGUMENT for bad messages or kwargs, a template's
 * raise_exception (ERR holds its message) or another error Jinja2 would raise while rendering,
 * DUET_STATUS_NOT_FOUND when there is no template, DUET_STATUS_UNSUPPORTED /
 * DUET_STATUS_BAD_FORMAT for templates outside the subset or malformed, DUET_STATUS_CAPACITY past
 * the limits (ERR names the line). */
DUET_API duet_status duet_tokenizer_apply_chat_template(const duet_tokenizer *tok,
                                                        const char *messages_json, size_t len,
                                                        const duet_chat_options *opts,
                                                        char **prompt, size_t *prompt_len,
                                                        char *err, size_t err_size);

/* duet_tokenizer_apply_chat_template() with the options as arguments, for bindings that share
 * no struct layout with the library (duet.h, "Flat access"). */
DUET_API duet_status duet_tokenizer_render_chat(const duet_tokenizer *tok,
                                                const char *messages_json, size_t len,
                                                bool add_generation_prompt,
                                                const char *chat_template, const char *kwargs_json,
                                                char **prompt, size_t *prompt_len, char *err,
                                                size_t err_size);

/* Renders a Jinja template TMPL (TMPL_LEN bytes) with the variables of CONTEXT_JSON (a JSON
 * object; NULL means none) under the same rules, without a tokenizer. */
DUET_API duet_status duet_chat_template_render(const char *tmpl, size_t tmpl_len,
                                               const char *context_json, size_t context_len,
                                               char **out, size_t *out_len, char *err,
                                               size_t err_size);

/* Incremental detokenization for streaming. Each push returns the bytes that became final: only
 * complete UTF-8; the concatenation of every push and the finish equals duet_tokenizer_decode of
 * the same ids, and each push costs O(1) amortised. *TEXT stays valid until the next call on D.
 * The caller owns *OUT and releases it with duet_detok_destroy; TOK must outlive it. */
DUET_API duet_status duet_detok_create(const duet_tokenizer *tok, bool skip_special,
                                       duet_detok **out);
DUET_API duet_status duet_detok_push(duet_detok *d, int32_t id, const char **text, size_t *len);
DUET_API duet_status duet_detok_finish(duet_detok *d, const char **text, size_t *len);
/* Forgets every id pushed so far: D starts a new text. */
DUET_API void duet_detok_reset(duet_detok *d);
DUET_API void duet_detok_destroy(duet_detok *d);

#ifdef __cplusplus
}
#endif

#endif
