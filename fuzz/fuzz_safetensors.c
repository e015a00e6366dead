/*
 * Fuzz target: the safetensors header parser (duet__st_parse) on arbitrary file images.
 *
 * Beyond "no crash, no out-of-bounds read" (libFuzzer runs it under ASan and UBSan, and hands
 * over a buffer of exactly `size` bytes), it checks the parser's promises: a refusal always
 * has a message naming the file, and an accepted file's tensors lie inside it, tile the data
 * area in order, and convert to float.
 */
#include "../model/model-int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct duet__st_header *h, uint64_t size)
{
    uint64_t end = h->data_start;
    volatile uint8_t sink = 0;
    float first[4];

    for (size_t i = 0; i < h->n; i++) {
        const duet_tensor *t = &h->tensors[i];

        if (t->offset != end || t->offset + t->nbytes > size || !t->name[0])
            abort();
        if (t->nbytes)
            sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
        if (duet__dtype_is_float(t->dtype) &&
            duet_tensor_read_f32(t, 0, t->numel < 4 ? t->numel : 4, first) != DUET_STATUS_OK)
            abort();
        end = t->offset + t->nbytes;
    }
    if (end != size)
        abort();
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char path[] = "fuzz/model.safetensors";
    struct duet__st_header h;
    char err[512] = "";
    struct duet__msg msg = {err, sizeof(err)};

    if (duet__st_parse(path, data, size, &h, &msg) == DUET_STATUS_OK) {
        check_accepted(&h, size);
        duet__st_header_fini(&h);
    } else if (strncmp(err, path, sizeof(path) - 1) != 0 || h.n || h.tensors) {
        abort();
    }
    return 0;
}
