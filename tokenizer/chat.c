/*
 * Chat templates (duet/tokenizer.h). Placeholder until the Jinja interpreter lands: every entry
 * point reports DUET_STATUS_UNSUPPORTED.
 */
#include "tokenizer-int.h"

const char *duet_tokenizer_chat_template(const duet_tokenizer *tok)
{
    (void)tok;
    return NULL;
}

void duet_chat_options_init(duet_chat_options *opts)
{
    opts->add_generation_prompt = true;
    opts->chat_template = NULL;
    opts->kwargs_json = NULL;
}

duet_status duet_tokenizer_apply_chat_template(const duet_tokenizer *tok, const char *messages_json,
                                               size_t len, const duet_chat_options *opts,
                                               char **prompt, size_t *prompt_len, char *err,
                                               size_t err_size)
{
    (void)tok, (void)messages_json, (void)len, (void)opts, (void)prompt, (void)prompt_len;
    duet__set_err(err, err_size, "chat templates are not supported yet");
    return DUET_STATUS_UNSUPPORTED;
}

duet_status duet_chat_template_render(const char *tmpl, size_t tmpl_len, const char *context_json,
                                      size_t context_len, char **out, size_t *out_len, char *err,
                                      size_t err_size)
{
    (void)tmpl, (void)tmpl_len, (void)context_json, (void)context_len, (void)out, (void)out_len;
    duet__set_err(err, err_size, "chat templates are not supported yet");
    return DUET_STATUS_UNSUPPORTED;
}
