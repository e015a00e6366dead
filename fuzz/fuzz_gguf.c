/*
 * Fuzz target: the GGUF parser (duet__gguf_parse) on arbitrary file images.
 *
 * Beyond "no crash, no out-of-bounds read" (libFuzzer runs it under ASan and UBSan, and hands
 * over a buffer of exactly `size` bytes), it checks the parser's promises: a refusal always has
 * a message naming the file and leaves nothing behind; an accepted file's tensors lie inside it
 * (or in the parser's own copy of the q/k rows), do not overlap, and convert to float.
 *
 * The same image then goes to the tokenizer part's reader of tokenizer.ggml.*
 * (tokenizer/gguf.c): a refusal names the file; an accepted tokenizer encodes a fixed text,
 * with and without special tokens, into ids below its vocabulary size that decode again.
 */
#include "../model/model-int.h"
#include "../tokenizer/tokenizer-int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct duet__gguf *g, const uint8_t *data, uint64_t size)
{
    uint64_t end = 0;
    volatile uint8_t sink = 0;
    float first[4];

    for (size_t i = 0; i < g->n; i++) {
        const duet_tensor *t = &g->tensors[i];
        const uint8_t *p = t->data;
        bool in_file = p >= data && p <= data + size;

        if (!t->name[0] || t->offset < end || t->offset + t->nbytes > size ||
            (in_file && (uint64_t)(p - data) != t->offset))
            abort();
        if (t->nbytes)
            sink ^= p[t->nbytes - 1];
        if (duet_tensor_read_f32(t, 0, t->numel < 4 ? t->numel : 4, first) != DUET_STATUS_OK)
            abort();
        end = t->offset + t->nbytes;
    }
    (void)sink;
}

static void check_tokenizer(const char *path, const uint8_t *data, size_t size)
{
    static const char text[] = "Hello world! <s> caf\xc3\xa9 123 \xe2\x96\x81 <|end|>\n";
    duet_tokenizer *tok;
    char err[512] = "", *back;
    int32_t *ids;
    size_t n, len;

    if (duet__tokenizer_from_gguf(path, data, size, &tok, err, sizeof(err)) != DUET_STATUS_OK) {
        if (tok || strncmp(err, path, strlen(path)) != 0)
            abort();
        return;
    }
    for (int special = 0; special < 2; special++) {
        if (duet_tokenizer_encode(tok, text, sizeof(text) - 1, special, &ids, &n) != DUET_STATUS_OK)
            continue; /* out of memory, or the regex's match limit */
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (uint32_t)ids[i] >= duet_tokenizer_vocab_size(tok))
                abort();
        if (duet_tokenizer_decode(tok, ids, n, special, &back, &len) == DUET_STATUS_OK)
            duet_tokenizer_free(back);
        duet_tokenizer_free(ids);
    }
    duet_tokenizer_destroy(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char path[] = "fuzz/model.gguf";
    struct duet__gguf g;
    char err[512] = "";
    struct duet__msg msg = {err, sizeof(err)};

    if (duet__gguf_parse(path, data, size, &g, &msg) == DUET_STATUS_OK) {
        check_accepted(&g, data, size);
        duet__gguf_fini(&g);
    } else if (strncmp(err, path, sizeof(path) - 1) != 0 || g.n || g.tensors || g.owned) {
        abort();
    }
    check_tokenizer(path, data, size);
    return 0;
}
