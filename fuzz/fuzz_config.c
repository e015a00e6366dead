/*
 * Fuzz target: the JSON parsers of a model folder. The first byte picks one, the rest is the
 * file:
 *   0  config.json (duet__config_parse), then the tensor layout of what it accepted
 *   1  generation_config.json (duet__genconfig_parse) over a valid Llama config
 *   2  model.safetensors.index.json (duet__index_parse), then a lookup of every entry
 * A refusal must carry a message naming the file; an accepted config must give a layout whose
 * shapes match the description and whose byte count does not overflow.
 */
#include "../model/model-int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_layout(const duet_model_desc *d)
{
    struct duet__slot *slots;
    size_t n;
    uint64_t total = 0;

    if (duet__layout_build(d, &slots, &n) != DUET_STATUS_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        uint64_t numel = duet__slot_numel(&slots[i]);

        if (!numel || numel > UINT64_MAX / 4 - total || !slots[i].name[0])
            abort();
        total += numel;
    }
    free(slots);
}

static void check_index(const char *path, const char *text, size_t len, struct duet__msg *msg)
{
    struct duet__index ix;

    if (duet__index_parse(path, text, len, &ix, msg) != DUET_STATUS_OK)
        return;
    for (size_t i = 0; i < ix.n_entries; i++)
        if (duet__index_find(&ix, ix.entries[i].name) != &ix.entries[i] ||
            ix.entries[i].file >= ix.n_files || strchr(ix.files[ix.entries[i].file], '/'))
            abort();
    duet__index_fini(&ix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char path[] = "fuzz/config.json";
    static const char base[] = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
                               "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                               "\"num_attention_heads\": 4, \"vocab_size\": 100}";
    char err[512] = "";
    struct duet__msg msg = {err, sizeof(err)};
    const char *text = (const char *)data + 1;
    duet_model_desc d;

    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        if (duet__config_parse(path, text, size - 1, &d, &msg) == DUET_STATUS_OK)
            check_layout(&d);
        break;
    case 1:
        if (duet__config_parse(path, base, sizeof(base) - 1, &d, &msg) != DUET_STATUS_OK)
            abort();
        duet__genconfig_parse(path, text, size - 1, &d, &msg);
        break;
    default:
        check_index(path, text, size - 1, &msg);
    }
    if (err[0] && strncmp(err, path, sizeof(path) - 1) != 0)
        abort();
    return 0;
}
