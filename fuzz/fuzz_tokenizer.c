/*
 * Fuzz target: the tokenizer.json loader and the encoder / decoder (tokenizer/). The input is a
 * tokenizer.json, then optionally two NUL bytes and a text:
 *
 *     { ...tokenizer.json... } \0\0 text to encode
 *
 * A refusal must carry a message naming tokenizer.json. An accepted tokenizer encodes the text
 * (with and without special tokens) into ids below its vocabulary size, and the streamed decode
 * of those ids equals the one-shot decode and is valid UTF-8.
 */
#include "../tokenizer/tokenizer-int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = duet__utf8_len((const unsigned char *)s + i, n - i);

        if (!k)
            abort();
        i += k;
    }
}

static void check_decode(const duet_tokenizer *tok, const int32_t *ids, size_t n)
{
    char *one, *all = NULL;
    size_t len, total = 0, pl;
    const char *piece;
    duet_detok *d;

    if (duet_tokenizer_decode(tok, ids, n, n % 2, &one, &len) != DUET_STATUS_OK)
        return; /* out of memory only: every id came from the encoder */
    if (duet_detok_create(tok, n % 2, &d) != DUET_STATUS_OK)
        abort();
    for (size_t i = 0; i <= n; i++) {
        if ((i < n ? duet_detok_push(d, ids[i], &piece, &pl) : duet_detok_finish(d, &piece, &pl)) !=
            DUET_STATUS_OK)
            abort();
        all = realloc(all, total + pl + 1);
        memcpy(all + total, piece, pl);
        total += pl;
    }
    if (total != len || (len && memcmp(all, one, len) != 0))
        abort();
    check_utf8(one, len);
    duet_detok_destroy(d);
    duet_tokenizer_free(one);
    free(all);
}

static void check_encode(const duet_tokenizer *tok, const char *text, size_t len, bool special)
{
    int32_t *ids;
    size_t n;

    if (duet_tokenizer_encode(tok, text, len, special, &ids, &n) != DUET_STATUS_OK)
        return;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= duet_tokenizer_vocab_size(tok))
            abort();
    check_decode(tok, ids, n);
    duet_tokenizer_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *text = NULL;
    size_t json_len = size, text_len = 0;
    char err[512] = "";
    duet_tokenizer *tok;

    for (size_t i = 0; i + 1 < size; i++) {
        if (data[i] == 0 && data[i + 1] == 0) {
            json_len = i;
            text = s + i + 2;
            text_len = size - i - 2;
            break;
        }
    }
    if (duet__tokenizer_from_json(s, json_len, &tok, err, sizeof(err)) != DUET_STATUS_OK) {
        if (!strstr(err, "tokenizer.json"))
            abort();
        return 0;
    }
    if (text) {
        check_encode(tok, text, text_len, true);
        check_encode(tok, text, text_len, false);
    }
    duet_tokenizer_destroy(tok);
    return 0;
}
