/* run_text.h — duet-run's prompts and its text side: prompts as token ids or as text, the
 * tokenizer that turns text into ids and generated ids back into text (run_text.c). */
#ifndef DUET_TOOLS_RUN_TEXT_H
#define DUET_TOOLS_RUN_TEXT_H

#include <duet/tokenizer.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One prompt: its ids, and the text they were encoded from (NULL for prompts given as ids). */
struct prompt {
    int32_t *ids;    /* [n] */
    uint32_t n;      /* 1 .. */
    char *text;      /* [text_len] bytes, NUL-terminated; NULL for id prompts */
    size_t text_len; /* bytes of text before its NUL (the text may hold NUL bytes) */
};

struct prompts {
    struct prompt *v; /* [n] */
    uint32_t n, cap;
};

/* Appends a prompt whose ids and text (may be NULL) the list takes over, malloc'd; false when out
 * of memory (the list then frees them). */
bool duet__prompts_push(struct prompts *ps, int32_t *ids, uint32_t n, char *text, size_t text_len);
void duet__prompts_free(struct prompts *ps);

/* Loads the tokenizer of DIR for duet-run. NEEDED: text options ask for it, so a folder without
 * tokenizer.json is an error that says how to get one (FLAG names the option, "--prompt", ...).
 * EXPLICIT: DIR came from --tokenizer, so any failure is an error. Otherwise a missing or
 * unloadable tokenizer leaves *OUT NULL (with a warning when it is there but cannot be loaded)
 * and the run goes on with ids only. Returns 0, or the exit status. */
int duet__run_tokenizer_load(const char *dir, bool needed, bool explicit_dir, const char *flag,
                             duet_tokenizer **out);

/* Encodes TEXT (LEN bytes) with the tokenizer's special tokens (BOS), as vLLM's generate does,
 * and appends it as a prompt; WHAT names it in messages. Returns 0, or the exit status. */
int duet__run_add_text(const duet_tokenizer *tok, const char *text, size_t len, const char *what,
                       struct prompts *ps);

/* --prompts-text FILE: one prompt per line; a line that starts with '"' is a JSON string (which
 * may hold newlines); blank lines are skipped. Returns 0, or the exit status. */
int duet__run_read_text_prompts(const duet_tokenizer *tok, const char *path, struct prompts *ps);

/* --chat FILE: a JSON array of {"role", "content"} messages, one conversation, rendered with the
 * tokenizer's chat template (with the generation prompt) and encoded without special tokens, as
 * vLLM does for chat. DIR names the tokenizer in messages. Returns 0, or the exit status. */
int duet__run_read_chat(const duet_tokenizer *tok, const char *dir, const char *path,
                        struct prompts *ps);

/* The text of N generated ids, special tokens skipped (vLLM's skip_special_tokens); ids the
 * tokenizer does not know (a model vocabulary padded past the tokenizer's) are left out, as
 * Hugging Face's decode does. *LEN bytes before the NUL. The caller frees it with
 * duet_tokenizer_free; NULL when out of memory. */
char *duet__run_decode(const duet_tokenizer *tok, const int32_t *ids, uint32_t n, size_t *len);

#endif /* DUET_TOOLS_RUN_TEXT_H */
