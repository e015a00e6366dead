/*
 * Fuzz target: the chat-template interpreter (tokenizer/jinja_*.c). The input is a Jinja
 * template, then optionally two NUL bytes and a JSON object of variables:
 *
 *     {% for m in messages %}...{% endfor %} \0\0 {"messages": [...], ...}
 *
 * Without variables, a small chat (system, user with <think>, tools) stands in. Rendering runs
 * under small limits, so every input ends quickly; it must end with one of the documented
 * statuses, a message naming the chat template on failure, and valid UTF-8 text on success.
 */
#include "../tokenizer/jinja-int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_vars[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
    "\"content\": \"<think>\\nwhy\\n</think>\\n\\nhi \\u00e9\"}, {\"role\": \"assistant\", "
    "\"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"function\": {\"name\": \"f\", "
    "\"arguments\": {\"x\": [1, 2.5, null, true]}}}]}], \"add_generation_prompt\": true, "
    "\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"tools\": [{\"type\": \"function\", "
    "\"function\": {\"name\": \"f\", \"parameters\": {}}}], \"enable_thinking\": false}";

static void check_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = duet__utf8_len((const unsigned char *)s + i, n - i);

        if (!k)
            abort();
        i += k;
    }
}

static bool known_status(duet_status st)
{
    return st == DUET_STATUS_OK || st == DUET_STATUS_INVALID_ARGUMENT ||
           st == DUET_STATUS_BAD_FORMAT || st == DUET_STATUS_UNSUPPORTED ||
           st == DUET_STATUS_CAPACITY || st == DUET_STATUS_OUT_OF_MEMORY;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data, *sep = NULL;
    size_t tmpl_len = size;
    json_t *vars;
    duet__jinja_limits lim;
    duet__buf out = {0};
    char err[512] = "";
    duet_status st;

    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == 0 && data[i + 1] == 0) {
            sep = text + i + 2;
            tmpl_len = i;
            break;
        }
    vars = sep ? json_loadb(sep, size - tmpl_len - 2, 0, NULL) : json_loads(default_vars, 0, NULL);
    if (!json_is_object(vars)) {
        json_decref(vars);
        return 0;
    }
    duet__jinja_limits_default(&lim);
    lim.max_bytes = 16 << 20;
    lim.max_output = 1 << 20;
    lim.max_steps = 200000;
    st = duet__jinja_render(text, tmpl_len, vars, &lim, &out, err, sizeof(err));
    if (!known_status(st))
        abort();
    if (st != DUET_STATUS_OK && strncmp(err, "chat template", 13) != 0)
        abort();
    if (st == DUET_STATUS_OK)
        check_utf8(out.p, out.n);
    free(out.p);
    json_decref(vars);
    return 0;
}
