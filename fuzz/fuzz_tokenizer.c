/*
 * Fuzz target: the tokenizer.json loader and the encoder / decoder (tokenizer/). The input is a
 * tokenizer.json, then optionally two NUL bytes and a text:
 *
 *     { ...tokenizer.json... } \0\0 text to encode
 *
 * A refusal must carry a message naming tokenizer.json. The fast reader of model.vocab and
 * model.merges and jansson's path must agree: the same status, and for an accepted file the same
 * tokens for every id and the same ids for the text. An accepted tokenizer encodes the text (with
 * and without special tokens) into ids below its vocabulary size, and the streamed decode of
 * those ids equals the one-shot decode and is valid UTF-8.
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

/* The same file through jansson alone must give the same tokenizer as through the fast path. */
static void check_paths_agree(const char *json, size_t len, duet_status fast_st,
                              const duet_tokenizer *fast, const char *text, size_t text_len)
{
    char err[512] = "";
    duet_tokenizer *slow;
    duet_status st;

    duet__raw_disabled = true;
    st = duet__tokenizer_from_json(json, len, &slow, err, sizeof(err));
    duet__raw_disabled = false;
    if (st == DUET_STATUS_OUT_OF_MEMORY || fast_st == DUET_STATUS_OUT_OF_MEMORY)
        return;
    if ((st == DUET_STATUS_OK) != (fast_st == DUET_STATUS_OK))
        abort();
    if (st != DUET_STATUS_OK)
        return;
    if (duet_tokenizer_vocab_size(slow) != duet_tokenizer_vocab_size(fast))
        abort();
    for (uint32_t id = 0; id < duet_tokenizer_vocab_size(fast); id++) {
        size_t la = 0, lb = 0;
        const char *a = duet_tokenizer_id_to_token(fast, (int32_t)id, &la);
        const char *b = duet_tokenizer_id_to_token(slow, (int32_t)id, &lb);

        if (!a != !b || la != lb || (a && memcmp(a, b, la) != 0))
            abort();
    }
    if (text) {
        int32_t *x, *y;
        size_t nx, ny;

        if (duet_tokenizer_encode(fast, text, text_len, true, &x, &nx) == DUET_STATUS_OK &&
            duet_tokenizer_encode(slow, text, text_len, true, &y, &ny) == DUET_STATUS_OK) {
            if (nx != ny || (nx && memcmp(x, y, nx * sizeof(*x)) != 0))
                abort();
            duet_tokenizer_free(y);
        }
        duet_tokenizer_free(x);
    }
    duet_tokenizer_destroy(slow);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *text = NULL;
    size_t json_len = size, text_len = 0;
    char err[512] = "";
    duet_tokenizer *tok;
    duet_status st;

    for (size_t i = 0; i + 1 < size; i++) {
        if (data[i] == 0 && data[i + 1] == 0) {
            json_len = i;
            text = s + i + 2;
            text_len = size - i - 2;
            break;
        }
    }
    st = duet__tokenizer_from_json(s, json_len, &tok, err, sizeof(err));

    check_paths_agree(s, json_len, st, st == DUET_STATUS_OK ? tok : NULL, text, text_len);
    if (st != DUET_STATUS_OK) {
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
