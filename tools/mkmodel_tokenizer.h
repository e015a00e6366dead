/* mkmodel_tokenizer.h — duet-mkmodel --tokenizer: a real Hugging Face tokenizer in a generated
 * model folder, and a draft that shares its target's (mkmodel_tokenizer.c). */
#ifndef DUET_TOOLS_MKMODEL_TOKENIZER_H
#define DUET_TOOLS_MKMODEL_TOKENIZER_H

#include <duet/model.h>

#include <stdbool.h>
#include <stddef.h>

/* The tokenizer files of a folder, read into memory before the output folder is touched (it may
 * be the same folder). */
#define DUET__TOK_FILES 5
struct duet__tok_files {
    char *bytes[DUET__TOK_FILES]; /* each file's bytes, NULL when the folder lacks it */
    size_t len[DUET__TOK_FILES];  /* bytes of each */
};

/* Loads DIR's tokenizer (a clear failure when it does not load) and reads its files:
 * tokenizer.json, and tokenizer_config.json, special_tokens_map.json, chat_template.jinja and
 * generation_config.json when present. With DESC (a model being generated), sets the model's
 * vocabulary to the tokenizer's ids (VOCAB_GIVEN: --vocab N, which must hold them, is kept: a
 * padded vocabulary) and its bos / eos / pad ids to the tokenizer's. Returns 0, or the exit
 * status after a message. The caller releases *OUT with duet__tok_files_free. */
int duet__tok_files_read(const char *dir, duet_model_desc *desc, bool vocab_given,
                         struct duet__tok_files *out);

/* Writes the files into the model folder DIR. generation_config.json is merged: the one the
 * generator wrote keeps its keys (the ids, which came from the tokenizer), and the tokenizer's
 * adds the others (sampling defaults). Returns 0, or the exit status after a message. */
int duet__tok_files_write(const struct duet__tok_files *f, const char *dir);

/* True when DIR holds tokenizer.json. */
bool duet__tok_files_present(const char *dir);

void duet__tok_files_free(struct duet__tok_files *f);

#endif /* DUET_TOOLS_MKMODEL_TOKENIZER_H */
