/*
 * The tokenizer part (include/duet/tokenizer.h): each component on small hand-written
 * tokenizer.json files (tests/fixtures/tokenizers/), added tokens, byte fallback, decoding,
 * streaming detokenization equal to the one-shot decode on every prefix, and the refusals of
 * unsupported components and malformed files. The comparison with Hugging Face on the real
 * tokenizers is tests/tokenizer_ref.sh.
 */
#define _GNU_SOURCE
#include "build_config.h"

#include <duet/tokenizer.h>

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_util.h"
#include "fault.h"
#include "test_dirs.h"

static duet_tokenizer *load(const char *name)
{
    const char *src = getenv("DUET_TEST_SRCDIR");
    char dir[4096], err[512] = "";
    duet_tokenizer *tok = NULL;
    duet_status st;

    snprintf(dir, sizeof(dir), "%s/tests/fixtures/tokenizers/%s", src ? src : "..", name);
    st = duet_tokenizer_load(dir, &tok, err, sizeof(err));
    ck_assert_msg(st == DUET_STATUS_OK, "loading %s: %s", dir, err);
    return tok;
}

/* Encodes TEXT and compares with the N ids of WANT. */
static void expect_ids(const duet_tokenizer *tok, const char *text, size_t len, bool special,
                       const int32_t *want, size_t n)
{
    int32_t *ids;
    size_t got;

    ck_assert_int_eq(duet_tokenizer_encode(tok, text, len, special, &ids, &got), DUET_STATUS_OK);
    ck_assert_msg(got == n, "\"%s\": %zu ids, expected %zu", text, got, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] == want[i], "\"%s\": ids[%zu] = %d, expected %d", text, i, ids[i],
                      want[i]);
    duet_tokenizer_free(ids);
}

#define EXPECT(tok, text, special, ...)                                                            \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        expect_ids(tok, text, strlen(text), special, want_, sizeof(want_) / sizeof(want_[0]));     \
    } while (0)

static void expect_text(const duet_tokenizer *tok, const int32_t *ids, size_t n, bool skip,
                        const char *want)
{
    char *text;
    size_t len;

    ck_assert_int_eq(duet_tokenizer_decode(tok, ids, n, skip, &text, &len), DUET_STATUS_OK);
    ck_assert_str_eq(text, want);
    ck_assert_uint_eq(len, strlen(want));
    duet_tokenizer_free(text);
}

#define DECODES(tok, skip, want, ...)                                                              \
    do {                                                                                           \
        const int32_t ids_[] = {__VA_ARGS__};                                                      \
        expect_text(tok, ids_, sizeof(ids_) / sizeof(ids_[0]), skip, want);                        \
    } while (0)

START_TEST(test_byte_level_bpe_merges_by_rank_and_adds_bos)
{
    duet_tokenizer *tok = load("bytelevel");

    EXPECT(tok, "hello world", true, 266, 259, 264);
    EXPECT(tok, "hello world", false, 259, 264);
    EXPECT(tok, "hell", false, 257 + 1);        /* h e, l l, then he ll */
    EXPECT(tok, "xyz", false, 120, 121, 122);   /* no merges reach "xyz" */
    EXPECT(tok, "\xc3\xa9", false, 0xc3, 0xa9); /* é: one token per byte */
    EXPECT(tok, "", true, 266);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_added_tokens_split_the_text_before_the_model)
{
    duet_tokenizer *tok = load("bytelevel");

    EXPECT(tok, "hello<tool>world", false, 259, 267, 119, 261, 263);
    EXPECT(tok, "<|bos|><|bos|>", true, 266, 266, 266);
    EXPECT(tok, "<|bos", false, '<', '|', 'b', 'o', 's'); /* a prefix of a token is text */
    EXPECT(tok, "hello  <mask>  world", false, 259, 269, 119, 261, 263); /* lstrip, rstrip */
    ck_assert_int_eq(duet_tokenizer_token_to_id(tok, "<tool>", 6), 267);
    ck_assert(duet_tokenizer_is_special(tok, 266));
    ck_assert(!duet_tokenizer_is_special(tok, 267));
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_split_regex_nfc_and_ignore_merges)
{
    duet_tokenizer *tok = load("split");

    EXPECT(tok, "xyz", false, 265); /* whole word in the vocabulary */
    EXPECT(tok, "hello world", true, 266, 259, 264);
    /* e + combining acute: NFC makes it the same as é */
    EXPECT(tok, "e\xcc\x81", false, 0xc3, 0xa9);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_sentencepiece_bpe_prepends_and_falls_back_to_bytes)
{
    duet_tokenizer *tok = load("sentencepiece");

    EXPECT(tok, "hello", true, 1, 268);
    EXPECT(tok, "hello w", false, 268, 259, 269);
    EXPECT(tok, "\xc3\xa9", false, 259, 3 + 0xc3, 3 + 0xa9);
    EXPECT(tok, "<s>hello", true, 1, 1, 268); /* the section after <s> is prepended too */
    ck_assert_int_eq(duet_tokenizer_bos_id(tok), 1);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_normalized_added_tokens_match_the_normalized_text)
{
    duet_tokenizer *tok = load("sentencepiece-normalized");

    /* "<s>" is matched as "▁<s>", its normalized form, in "▁hello▁<s>hello" */
    EXPECT(tok, "hello <s>hello", true, 1, 268, 1, 260, 261, 265, 263);
    EXPECT(tok, "<s>", false, 1); /* the section is prepended: "▁<s>" */
    DECODES(tok, false, "<s> hello", 1, 268);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_metaspace_splits_and_fuses_unknown_chars)
{
    duet_tokenizer *tok = load("metaspace");

    EXPECT(tok, "hello w", false, 12, 14);
    EXPECT(tok, "hello zz w", false, 12, 3, 0, 14);
    EXPECT(tok, "<s>hello", true, 1, 4, 5, 9, 7); /* prepend_scheme first: only at the start */
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_invalid_utf8_becomes_replacement_chars_and_nul_is_text)
{
    duet_tokenizer *tok = load("bytelevel");

    EXPECT(tok,
           "a\xff"
           "b",
           false, 'a', 0xef, 0xbf, 0xbd, 'b');
    expect_ids(tok, "a\0b", 3, false, (const int32_t[]){'a', 0, 'b'}, 3);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_decode_runs_the_decoder_chain)
{
    duet_tokenizer *bl = load("bytelevel"), *sp = load("sentencepiece"), *ms = load("metaspace");

    DECODES(bl, false, "<|bos|>hello world", 266, 259, 264);
    DECODES(bl, true, "hello world", 266, 259, 264);
    DECODES(bl, false, "\xc3\xa9", 0xc3, 0xa9);
    DECODES(bl, false, "\xef\xbf\xbd", 0xc3); /* an incomplete char at the end */
    DECODES(sp, false, "<s> hello w", 1, 268, 259, 269);
    DECODES(sp, true, "hello w", 1, 268, 259, 269); /* Strip after Fuse: once, at the start */
    DECODES(sp, false, "\xc3\xa9", 3 + 0xc3, 3 + 0xa9);
    DECODES(sp, false,
            "\xef\xbf\xbd\xef\xbf\xbd"
            "e",
            3 + 0xc3, 3 + 0xc3, 261);      /* one per byte */
    DECODES(ms, false, "hello w", 12, 14); /* the first token loses its ▁ */
    duet_tokenizer_destroy(bl);
    duet_tokenizer_destroy(sp);
    duet_tokenizer_destroy(ms);
}
END_TEST

START_TEST(test_decode_refuses_ids_outside_the_vocabulary)
{
    duet_tokenizer *tok = load("bytelevel");
    const int32_t bad[] = {259, 270}, neg[] = {-1};
    char *text;

    ck_assert_int_eq(duet_tokenizer_decode(tok, bad, 2, false, &text, NULL),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(duet_tokenizer_decode(tok, neg, 1, false, &text, NULL),
                     DUET_STATUS_INVALID_ARGUMENT);
    ck_assert_uint_eq(duet_tokenizer_vocab_size(tok), 270);
    ck_assert_ptr_null(duet_tokenizer_id_to_token(tok, 270, NULL));
    duet_tokenizer_destroy(tok);
}
END_TEST

/* Streams IDS[0..n) and returns the concatenated pieces, checking each is valid UTF-8. */
static char *stream(const duet_tokenizer *tok, const int32_t *ids, size_t n, bool skip)
{
    duet_detok *d;
    char *all = calloc(1, 1);
    size_t total = 0, len;
    const char *piece;

    ck_assert_int_eq(duet_detok_create(tok, skip, &d), DUET_STATUS_OK);
    for (size_t i = 0; i <= n; i++) {
        if (i < n)
            ck_assert_int_eq(duet_detok_push(d, ids[i], &piece, &len), DUET_STATUS_OK);
        else
            ck_assert_int_eq(duet_detok_finish(d, &piece, &len), DUET_STATUS_OK);
        for (size_t k = 0; k < len;) {
            size_t c = (unsigned char)piece[k] < 0x80   ? 1
                       : (unsigned char)piece[k] < 0xe0 ? 2
                       : (unsigned char)piece[k] < 0xf0 ? 3
                                                        : 4;

            ck_assert_msg(k + c <= len, "push %zu returned a partial UTF-8 char", i);
            k += c;
        }
        all = realloc(all, total + len + 1);
        memcpy(all + total, piece, len);
        total += len;
        all[total] = '\0';
    }
    duet_detok_destroy(d);
    return all;
}

static void check_every_prefix(const char *name, const int32_t *ids, size_t n)
{
    duet_tokenizer *tok = load(name);

    for (size_t k = 0; k <= n; k++) {
        for (int skip = 0; skip < 2; skip++) {
            char *one, *streamed = stream(tok, ids, k, skip);

            ck_assert_int_eq(duet_tokenizer_decode(tok, ids, k, skip, &one, NULL), DUET_STATUS_OK);
            ck_assert_msg(strcmp(one, streamed) == 0,
                          "%s, %zu ids: \"%s\" one-shot, \"%s\" "
                          "streamed",
                          name, k, one, streamed);
            duet_tokenizer_free(one);
            free(streamed);
        }
    }
    duet_tokenizer_destroy(tok);
}

START_TEST(test_streamed_text_equals_the_one_shot_decode_on_every_prefix)
{
    /* byte-level: é split over two tokens, a stray continuation byte, an unfinished char */
    const int32_t bl[] = {266,  259, 0xc3, 0xa9, 264,  0xa9, 0xe2,
                          0x82, 266, 0xf0, 0x9f, 0x98, 0x80, 0xe2};
    /* SentencePiece: byte runs valid and invalid, specials, Strip at the start */
    const int32_t sp[] = {1, 259,      3 + 0xc3, 3 + 0xa9, 268, 3 + 0xc3, 259,
                          1, 3 + 0xe2, 3 + 0x82, 3 + 0xac, 269, 3 + 0xff};
    const int32_t ms[] = {1, 12, 14, 3, 0, 4, 1, 12};

    check_every_prefix("bytelevel", bl, sizeof(bl) / sizeof(bl[0]));
    check_every_prefix("sentencepiece", sp, sizeof(sp) / sizeof(sp[0]));
    check_every_prefix("metaspace", ms, sizeof(ms) / sizeof(ms[0]));
}
END_TEST

START_TEST(test_streamed_pieces_are_complete_utf8)
{
    duet_tokenizer *tok = load("bytelevel");
    duet_detok *d;
    const char *piece;
    size_t len;

    ck_assert_int_eq(duet_detok_create(tok, false, &d), DUET_STATUS_OK);
    ck_assert_int_eq(duet_detok_push(d, 0xc3, &piece, &len), DUET_STATUS_OK);
    ck_assert_uint_eq(len, 0); /* half of é: held back */
    ck_assert_int_eq(duet_detok_push(d, 0xa9, &piece, &len), DUET_STATUS_OK);
    ck_assert_str_eq(piece, "\xc3\xa9");
    ck_assert_int_eq(duet_detok_push(d, 100000, &piece, &len), DUET_STATUS_INVALID_ARGUMENT);
    duet_detok_reset(d);
    ck_assert_int_eq(duet_detok_push(d, 259, &piece, &len), DUET_STATUS_OK);
    ck_assert_str_eq(piece, "hello");
    duet_detok_destroy(d);
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_config_files_give_bos_and_eos_ids)
{
    duet_tokenizer *tok = load("bytelevel");
    int32_t eos[DUET_TOKENIZER_MAX_EOS];

    ck_assert_int_eq(duet_tokenizer_bos_id(tok), 266);
    ck_assert_uint_eq(duet_tokenizer_eos_ids(tok, eos, DUET_TOKENIZER_MAX_EOS), 2);
    ck_assert_int_eq(eos[0], 268); /* generation_config.json's list */
    ck_assert_int_eq(eos[1], 267);
    duet_tokenizer_destroy(tok);
}
END_TEST

/* Loads NAME, encodes TEXT and decodes the ids with allocation number N failing: every step
 * either works or says DUET_STATUS_OUT_OF_MEMORY. Returns whether a failure was injected. */
static bool run_with_failure(const char *name, const char *text, long n)
{
    const char *src = getenv("DUET_TEST_SRCDIR");
    char dir[4096], err[512] = "", *out;
    duet_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids;
    duet_status st;

    snprintf(dir, sizeof(dir), "%s/tests/fixtures/tokenizers/%s", src ? src : "..", name);
    duet_test_injected = false;
    duet_test_fail_countdown = n;
    st = duet_tokenizer_load(dir, &tok, err, sizeof(err));
    if (st == DUET_STATUS_OK)
        st = duet_tokenizer_encode(tok, text, strlen(text), true, &ids, &n_ids);
    if (st == DUET_STATUS_OK) {
        st = duet_tokenizer_decode(tok, ids, n_ids, false, &out, NULL);
        if (st == DUET_STATUS_OK)
            duet_tokenizer_free(out);
    }
    duet_test_fail_countdown = -1;
    ck_assert_msg(st == DUET_STATUS_OK || (st == DUET_STATUS_OUT_OF_MEMORY && duet_test_injected),
                  "%s, allocation %ld failing: status %d (%s)", name, n, st, err);
    duet_tokenizer_free(ids);
    duet_tokenizer_destroy(tok);
    return duet_test_injected;
}

START_TEST(test_every_allocation_failure_is_reported_cleanly)
{
    const char *names[] = {"bytelevel", "split", "sentencepiece", "metaspace"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        long n = 0;

        while (run_with_failure(names[i], "hello w\xc3\xa9<s> <|bos|>zz 12 e\xcc\x81", n))
            n++;
        ck_assert_msg(n > 20, "%s: only %ld allocations", names[i], n);
    }
}
END_TEST

struct encode_job {
    const duet_tokenizer *tok;
    bool same; /* every encode gave the ids of the first */
};

static const char *const thread_texts[] = {
    "hello world", "hello<tool>world", "xyz hello xyz", "\xc3\xa9\xc3\xa9 hello", "world world",
};

static void *encode_many(void *arg)
{
    struct encode_job *job = arg;
    int32_t *first[5] = {NULL}, *ids;
    size_t n_first[5], n;

    job->same = true;
    for (int round = 0; round < 2000; round++) {
        size_t k = (size_t)round % 5;

        if (duet_tokenizer_encode(job->tok, thread_texts[k], strlen(thread_texts[k]), true, &ids,
                                  &n) != DUET_STATUS_OK) {
            job->same = false;
            break;
        }
        if (!first[k]) {
            first[k] = ids;
            n_first[k] = n;
            continue;
        }
        job->same &= n == n_first[k] && memcmp(ids, first[k], n * sizeof(*ids)) == 0;
        duet_tokenizer_free(ids);
    }
    for (size_t k = 0; k < 5; k++)
        duet_tokenizer_free(first[k]);
    return NULL;
}

START_TEST(test_threads_encode_with_one_tokenizer_at_once)
{
    duet_tokenizer *tok = load("bytelevel");
    struct encode_job jobs[4];
    pthread_t th[4];

    for (int i = 0; i < 4; i++) {
        jobs[i].tok = tok;
        ck_assert_int_eq(pthread_create(&th[i], NULL, encode_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(jobs[i].same, "thread %d saw different ids for one text", i);
    }
    EXPECT(tok, "hello world", true, 266, 259, 264);
    duet_tokenizer_destroy(tok);
}
END_TEST

/* ---- refusals ----------------------------------------------------------------------------- */

static char scratch[4096];

static void setup_dir(void)
{
    ck_assert(duet_test_mkdtemp(scratch, sizeof(scratch), "check_tokenizer"));
}

static void teardown_dir(void)
{
    duet_test_rmtree(scratch);
}

/* Writes JSON as scratch/tokenizer.json, loads it, expects STATUS and a message with NEEDLE. */
/* Writes JSON as tokenizer.json of the scratch folder. */
static void write_tokenizer_json(const char *json)
{
    char path[4200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/tokenizer.json", scratch);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(json, f);
    fclose(f);
}

static void expect_refusal(const char *json, duet_status status, const char *needle)
{
    char err[512] = "";
    duet_tokenizer *tok = NULL;

    write_tokenizer_json(json);
    ck_assert_int_eq(duet_tokenizer_load(scratch, &tok, err, sizeof(err)), status);
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(err, needle) && strstr(err, "tokenizer.json"),
                  "message \"%s\" should name \"%s\" and the file", err, needle);
}

/* The fast path for model.vocab and model.merges (tokenizer/rawjson.c) and jansson's, which a
 * file the fast path does not expect falls back to, must give the same tokenizer. */
START_TEST(test_fast_and_jansson_loading_agree)
{
    const char *src = getenv("DUET_TEST_SRCDIR");
    const char *texts[] = {"hello world", "hello<tool>world xyz", "\xc3\xa9 <mask> hello"};
    char path[4200], err[512] = "", *json;
    duet_tokenizer *fast = load("bytelevel"), *slow = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/tests/fixtures/tokenizers/bytelevel/tokenizer.json",
             src ? src : "..");
    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    json = calloc(1, 1 << 20);
    ck_assert_uint_gt(fread(json, 1, (1 << 20) - 1, f), 0);
    fclose(f);
    snprintf(path, sizeof(path), "%s/tokenizer.json", scratch);
    f = fopen(path, "w");
    /* nesting deeper than the fast path follows: jansson reads the whole file */
    fputs("{\"deep\": ", f);
    for (int i = 0; i < 70; i++)
        fputc('[', f);
    for (int i = 0; i < 70; i++)
        fputc(']', f);
    fprintf(f, ",%s", json + 1);
    fclose(f);
    ck_assert_int_eq(duet_tokenizer_load(scratch, &slow, err, sizeof(err)), DUET_STATUS_OK);
    ck_assert_uint_eq(duet_tokenizer_vocab_size(slow), duet_tokenizer_vocab_size(fast));
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int32_t *a, *b;
        size_t na, nb;

        ck_assert_int_eq(duet_tokenizer_encode(fast, texts[i], strlen(texts[i]), true, &a, &na),
                         DUET_STATUS_OK);
        ck_assert_int_eq(duet_tokenizer_encode(slow, texts[i], strlen(texts[i]), true, &b, &nb),
                         DUET_STATUS_OK);
        ck_assert_uint_eq(na, nb);
        ck_assert_int_eq(memcmp(a, b, na * sizeof(*a)), 0);
        duet_tokenizer_free(a);
        duet_tokenizer_free(b);
    }
    free(json);
    duet_tokenizer_destroy(fast);
    duet_tokenizer_destroy(slow);
}
END_TEST

/* Loads JSON as DIR/tokenizer.json of the scratch folder. */
static duet_tokenizer *load_json(const char *json)
{
    char err[512] = "";
    duet_tokenizer *tok = NULL;

    write_tokenizer_json(json);
    ck_assert_msg(duet_tokenizer_load(scratch, &tok, err, sizeof(err)) == DUET_STATUS_OK, "%s",
                  err);
    return tok;
}

/* Hugging Face's AddedVocabulary (added_vocabulary.rs): a single_word match with a word char
 * (Unicode \w) beside it is dropped and the search resumes after it; lstrip / rstrip take
 * Unicode whitespace (U+3000, U+00A0), not only ASCII. */
START_TEST(test_single_word_and_unicode_whitespace_stripping)
{
    duet_tokenizer *tok = load_json(
        "{\"added_tokens\": ["
        "{\"id\": 6, \"content\": \"<w>\", \"single_word\": true, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": false, \"special\": false},"
        "{\"id\": 7, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": true, "
        "\"rstrip\": true, \"normalized\": false, \"special\": true}],"
        "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \" \": 2, \"x\": 3, "
        "\"\xc3\xa9\": 4, \"\xe3\x80\x80\": 5, \"<\": 8, \"w\": 9, \">\": 10, \"\xc2\xa0\": 11, "
        "\"_\": 12}, \"merges\": []}}");

    EXPECT(tok, "a <w> b", false, 0, 2, 6, 2, 1);
    EXPECT(tok, "<w>", false, 6);
    EXPECT(tok, "a<w>b", false, 0, 8, 9, 10, 1);               /* inside a word: text */
    EXPECT(tok, "\xc3\xa9<w>", false, 4, 8, 9, 10);            /* é is a word char */
    EXPECT(tok, "_<w>", false, 12, 8, 9, 10);                  /* so is _ */
    EXPECT(tok, "x<w><w> ", false, 3, 8, 9, 10, 6, 2);         /* resumes after the dropped one */
    EXPECT(tok, "a\xe3\x80\x80<s>\xc2\xa0 b", false, 0, 7, 1); /* U+3000, U+00A0 stripped */
    EXPECT(tok, "<s> <s>", false, 7, 7);
    duet_tokenizer_destroy(tok);
}
END_TEST

#define BPE_MODEL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}"

START_TEST(test_unsupported_components_are_refused_by_name)
{
    expect_refusal("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", DUET_STATUS_UNSUPPORTED,
                   "WordPiece");
    expect_refusal("{\"model\": {\"type\": \"Unigram\"}}", DUET_STATUS_UNSUPPORTED, "Unigram");
    expect_refusal("{\"normalizer\": {\"type\": \"NFKC\"}, " BPE_MODEL "}", DUET_STATUS_UNSUPPORTED,
                   "NFKC");
    expect_refusal("{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                   "[{\"type\": \"Whitespace\"}]}, " BPE_MODEL "}",
                   DUET_STATUS_UNSUPPORTED, "Whitespace");
    expect_refusal("{\"decoder\": {\"type\": \"WordPiece\"}, " BPE_MODEL "}",
                   DUET_STATUS_UNSUPPORTED, "WordPiece");
    expect_refusal("{\"post_processor\": {\"type\": \"BertProcessing\"}, " BPE_MODEL "}",
                   DUET_STATUS_UNSUPPORTED, "BertProcessing");
    expect_refusal("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \" \"}, "
                   "\"behavior\": \"MergedWithNext\"}, " BPE_MODEL "}",
                   DUET_STATUS_UNSUPPORTED, "Split");
}
END_TEST

START_TEST(test_malformed_files_are_refused_with_the_place)
{
    char err[512] = "";
    duet_tokenizer *tok = NULL;

    expect_refusal("{\"model\": ", DUET_STATUS_BAD_FORMAT, "tokenizer.json:1");
    expect_refusal("[]", DUET_STATUS_BAD_FORMAT, "not a JSON object");
    expect_refusal("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
                   DUET_STATUS_BAD_FORMAT, "model.vocab[\"a\"]");
    expect_refusal("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a "
                   "c\"]}}",
                   DUET_STATUS_BAD_FORMAT, "model.merges[0]");
    expect_refusal("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                   "\"behavior\": \"Isolated\"}, " BPE_MODEL "}",
                   DUET_STATUS_BAD_FORMAT, "Split");
    expect_refusal(
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
        DUET_STATUS_BAD_FORMAT, "repeats the token \"b\" or its id 0");
    expect_refusal(
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}",
        DUET_STATUS_BAD_FORMAT, "repeats the token \"a\"");
    expect_refusal("{\"added_tokens\": [{\"content\": \"x\"}], " BPE_MODEL "}",
                   DUET_STATUS_BAD_FORMAT, "added_tokens[0]");
    ck_assert_int_eq(duet_tokenizer_load("/nonexistent/dir", &tok, err, sizeof(err)),
                     DUET_STATUS_IO);
    ck_assert(strstr(err, "/nonexistent/dir/tokenizer.json"));
}
END_TEST

/* ---- the tokenizer a GGUF file embeds ------------------------------------------------------ */

/* A GGUF metadata writer: key/value pairs into a growing buffer, no tensors. */
struct gguf_buf {
    unsigned char *p;
    size_t n, cap;
    uint64_t kvs;
};

static void gb_put(struct gguf_buf *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void gb_u32(struct gguf_buf *b, uint32_t v)
{
    unsigned char le[4] = {v & 0xff, v >> 8 & 0xff, v >> 16 & 0xff, v >> 24};

    gb_put(b, le, 4);
}

static void gb_u64(struct gguf_buf *b, uint64_t v)
{
    gb_u32(b, (uint32_t)v);
    gb_u32(b, (uint32_t)(v >> 32));
}

static void gb_str(struct gguf_buf *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}

static void gb_key(struct gguf_buf *b, const char *key, uint32_t type)
{
    gb_str(b, key);
    gb_u32(b, type);
    b->kvs++;
}

enum { GG_U32 = 4, GG_I32 = 5, GG_F32 = 6, GG_BOOL = 7, GG_STRING = 8, GG_ARRAY = 9 };

static void gb_strs(struct gguf_buf *b, const char *key, const char *const *v, size_t n)
{
    gb_key(b, key, GG_ARRAY);
    gb_u32(b, GG_STRING);
    gb_u64(b, n);
    for (size_t i = 0; i < n; i++)
        gb_str(b, v[i]);
}

static void gb_nums(struct gguf_buf *b, const char *key, uint32_t type, const void *v, size_t n)
{
    gb_key(b, key, GG_ARRAY);
    gb_u32(b, type);
    gb_u64(b, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t x;

        memcpy(&x, (const char *)v + 4 * i, 4);
        gb_u32(b, x);
    }
}

/* What a test GGUF holds; a NULL or zero field is left out. */
struct gguf_tok {
    const char *model, *pre, *chat_template;
    const char *const *tokens;
    size_t n_tokens, n_types, n_scores;
    const int32_t *types;
    const float *scores;
    const char *const *merges;
    size_t n_merges;
    int64_t bos, eos; /* -1: absent */
    int add_bos;      /* 0: absent, 1: false, 2: true */
    size_t truncate;  /* bytes cut from the end */
};

/* Writes G as scratch/model.gguf and returns its path (a static buffer). */
static const char *write_gguf(const struct gguf_tok *g)
{
    static char path[4200];
    struct gguf_buf b = {0};
    unsigned char head[24] = "GGUF\3\0\0\0";
    FILE *f;

    gb_put(&b, head, sizeof(head));
    gb_key(&b, "general.architecture", GG_STRING);
    gb_str(&b, "llama");
    if (g->model) {
        gb_key(&b, "tokenizer.ggml.model", GG_STRING);
        gb_str(&b, g->model);
    }
    if (g->pre) {
        gb_key(&b, "tokenizer.ggml.pre", GG_STRING);
        gb_str(&b, g->pre);
    }
    gb_strs(&b, "tokenizer.ggml.tokens", g->tokens, g->n_tokens);
    if (g->types)
        gb_nums(&b, "tokenizer.ggml.token_type", GG_I32, g->types, g->n_types);
    if (g->scores)
        gb_nums(&b, "tokenizer.ggml.scores", GG_F32, g->scores, g->n_scores);
    if (g->merges)
        gb_strs(&b, "tokenizer.ggml.merges", g->merges, g->n_merges);
    if (g->bos >= 0) {
        gb_key(&b, "tokenizer.ggml.bos_token_id", GG_U32);
        gb_u32(&b, (uint32_t)g->bos);
    }
    if (g->eos >= 0) {
        gb_key(&b, "tokenizer.ggml.eos_token_id", GG_U32);
        gb_u32(&b, (uint32_t)g->eos);
    }
    if (g->add_bos) {
        gb_key(&b, "tokenizer.ggml.add_bos_token", GG_BOOL);
        gb_put(&b, g->add_bos == 2 ? "\1" : "\0", 1);
    }
    if (g->chat_template) {
        gb_key(&b, "tokenizer.chat_template", GG_STRING);
        gb_str(&b, g->chat_template);
    }
    for (int i = 0; i < 8; i++)
        b.p[16 + i] = (unsigned char)(b.kvs >> 8 * i);
    snprintf(path, sizeof(path), "%s/model.gguf", scratch);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b.p, 1, b.n - g->truncate, f), b.n - g->truncate);
    fclose(f);
    free(b.p);
    return path;
}

/* Byte-level BPE ("gpt2"): "hello" in four merges, "<|end|>" a control token. */
static const char *const gpt2_tokens[] = {"h",  "e",    "l",     "o",      "he",
                                          "ll", "hell", "hello", "<|end|>"};
static const int32_t gpt2_types[] = {1, 1, 1, 1, 1, 1, 1, 1, 3};
static const char *const gpt2_merges[] = {"h e", "l l", "he ll", "hell o"};

static struct gguf_tok gpt2_gguf(void)
{
    return (struct gguf_tok){.model = "gpt2",
                             .pre = "gpt-2",
                             .tokens = gpt2_tokens,
                             .n_tokens = 9,
                             .types = gpt2_types,
                             .n_types = 9,
                             .merges = gpt2_merges,
                             .n_merges = 4,
                             .bos = -1,
                             .eos = 8,
                             .chat_template = "{{ eos_token }}!"};
}

/* SentencePiece ("llama"): merges come from the scores; 'c' only as the byte token <0x63>. */
static const char *const spm_tokens[] = {"<unk>",
                                         "<s>",
                                         "</s>",
                                         "\xe2\x96\x81",
                                         "a",
                                         "b",
                                         "\xe2\x96\x81"
                                         "a",
                                         "ab",
                                         "\xe2\x96\x81"
                                         "ab",
                                         "<0x63>"};
static const int32_t spm_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};
static const float spm_scores[] = {0, 0, 0, -100, -100, -100, -1, -2, -3, 0};

static struct gguf_tok spm_gguf(void)
{
    return (struct gguf_tok){.model = "llama",
                             .tokens = spm_tokens,
                             .n_tokens = 10,
                             .types = spm_types,
                             .n_types = 10,
                             .scores = spm_scores,
                             .n_scores = 10,
                             .bos = 1,
                             .eos = 2};
}

static duet_tokenizer *load_gguf(const struct gguf_tok *g)
{
    char err[512] = "";
    duet_tokenizer *tok = NULL;
    const char *path = write_gguf(g);

    ck_assert_msg(duet_tokenizer_load(path, &tok, err, sizeof(err)) == DUET_STATUS_OK,
                  "loading %s: %s", path, err);
    return tok;
}

START_TEST(test_gguf_without_tokenizer_json_gives_its_embedded_byte_level_bpe)
{
    struct gguf_tok g = gpt2_gguf();
    duet_tokenizer *tok = load_gguf(&g);
    int32_t eos[DUET_TOKENIZER_MAX_EOS];
    const int32_t ids[] = {7, 8};

    EXPECT(tok, "hello<|end|>", true, 7, 8);
    EXPECT(tok, "hell", true, 6);
    ck_assert(duet_tokenizer_is_special(tok, 8));
    ck_assert_int_eq(duet_tokenizer_bos_id(tok), -1);
    ck_assert_uint_eq(duet_tokenizer_eos_ids(tok, eos, DUET_TOKENIZER_MAX_EOS), 1);
    ck_assert_int_eq(eos[0], 8);
    ck_assert_str_eq(duet_tokenizer_chat_template(tok), "{{ eos_token }}!");
    expect_text(tok, ids, 2, true, "hello");
    duet_tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_gguf_sentencepiece_merges_come_from_the_scores)
{
    struct gguf_tok g = spm_gguf();
    duet_tokenizer *tok = load_gguf(&g);
    const int32_t ids[] = {1, 8, 9};

    EXPECT(tok, "ab", true, 1, 8);           /* ▁a first (the best score), then ▁a + b */
    EXPECT(tok, "c", false, 3, 9);           /* no 'c' token: its byte */
    EXPECT(tok, "b<s>a", false, 3, 5, 1, 6); /* Prepend after the added token too */
    ck_assert_int_eq(duet_tokenizer_bos_id(tok), 1);
    ck_assert_ptr_null(duet_tokenizer_chat_template(tok));
    expect_text(tok, ids, 3, true, "abc");
    duet_tokenizer_destroy(tok);
    g.add_bos = 1; /* add_bos_token false */
    tok = load_gguf(&g);
    EXPECT(tok, "ab", true, 8);
    duet_tokenizer_destroy(tok);
    g.add_bos = 0, g.bos = -1; /* no BOS id: no default BOS either */
    tok = load_gguf(&g);
    EXPECT(tok, "ab", true, 8);
    ck_assert_int_eq(duet_tokenizer_bos_id(tok), -1);
    duet_tokenizer_destroy(tok);
}
END_TEST

/* Loads the GGUF at PATH, encodes and decodes with allocation number N failing: each step works
 * or says DUET_STATUS_OUT_OF_MEMORY. Returns whether a failure was injected. */
static bool gguf_with_failure(const char *path, long n)
{
    static const char text[] = "hello<|end|> ab c";
    char err[512] = "", *out;
    duet_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids;
    duet_status st;

    duet_test_injected = false;
    duet_test_fail_countdown = n;
    st = duet_tokenizer_load(path, &tok, err, sizeof(err));
    if (st == DUET_STATUS_OK)
        st = duet_tokenizer_encode(tok, text, strlen(text), true, &ids, &n_ids);
    if (st == DUET_STATUS_OK &&
        (st = duet_tokenizer_decode(tok, ids, n_ids, false, &out, NULL)) == DUET_STATUS_OK)
        duet_tokenizer_free(out);
    duet_test_fail_countdown = -1;
    ck_assert_msg(st == DUET_STATUS_OK || (st == DUET_STATUS_OUT_OF_MEMORY && duet_test_injected),
                  "%s, allocation %ld failing: status %d (%s)", path, n, st, err);
    duet_tokenizer_free(ids);
    duet_tokenizer_destroy(tok);
    return duet_test_injected;
}

START_TEST(test_every_allocation_failure_of_a_gguf_load_is_reported_cleanly)
{
    struct gguf_tok gs[2] = {gpt2_gguf(), spm_gguf()};

    for (int i = 0; i < 2; i++) {
        const char *path = write_gguf(&gs[i]);
        long n = 0;

        while (gguf_with_failure(path, n))
            n++;
        ck_assert_msg(n > 20, "%s: only %ld allocations", gs[i].model, n);
    }
}
END_TEST

/* Loads G expecting STATUS and a message naming the file and NEEDLE. */
static void expect_gguf_refusal(const struct gguf_tok *g, duet_status status, const char *needle)
{
    char err[512] = "";
    duet_tokenizer *tok = NULL;
    const char *path = write_gguf(g);

    ck_assert_int_eq(duet_tokenizer_load(path, &tok, err, sizeof(err)), status);
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(err, needle) && strstr(err, "model.gguf"),
                  "message \"%s\" should name \"%s\" and the file", err, needle);
}

START_TEST(test_malformed_gguf_tokenizer_metadata_is_refused_by_name)
{
    static const char *const bad_merge[] = {"h e l"}, *const unknown_merge[] = {"h x"},
                             *const twice[] = {"h", "h"};
    static const float flat[10] = {0};
    struct gguf_tok g;

    g = gpt2_gguf(), g.model = "bert";
    expect_gguf_refusal(&g, DUET_STATUS_UNSUPPORTED, "tokenizer.ggml.model \"bert\"");
    g = gpt2_gguf(), g.pre = "mystery";
    expect_gguf_refusal(&g, DUET_STATUS_UNSUPPORTED, "tokenizer.ggml.pre \"mystery\"");
    g = gpt2_gguf(), g.model = NULL;
    expect_gguf_refusal(&g, DUET_STATUS_NOT_FOUND, "tokenizer.ggml.model");
    g = gpt2_gguf(), g.n_types = 8;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.token_type");
    g = gpt2_gguf(), g.merges = bad_merge, g.n_merges = 1;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.merges[0]");
    g = gpt2_gguf(), g.merges = unknown_merge, g.n_merges = 1;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "merges[0]");
    g = gpt2_gguf(), g.merges = NULL;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.merges' is missing");
    g = gpt2_gguf(), g.eos = 9;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.eos_token_id");
    g = gpt2_gguf(), g.tokens = twice, g.n_tokens = 2, g.n_types = 2, g.n_merges = 0, g.eos = -1;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "repeats the token \"h\"");
    g = gpt2_gguf(), g.truncate = 3;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "truncated");
    g = spm_gguf(), g.scores = NULL;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.scores' is missing");
    g = spm_gguf(), g.scores = flat;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.scores");
    g = spm_gguf(), g.bos = 10;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.bos_token_id");
    g = spm_gguf(), g.add_bos = 2, g.bos = -1;
    expect_gguf_refusal(&g, DUET_STATUS_BAD_FORMAT, "tokenizer.ggml.bos_token_id");
}
END_TEST

int main(void)
{
    const struct duet_test_case fixtures[] = {
        {"byte_level", test_byte_level_bpe_merges_by_rank_and_adds_bos},
        {"added_tokens", test_added_tokens_split_the_text_before_the_model},
        {"split", test_split_regex_nfc_and_ignore_merges},
        {"sentencepiece", test_sentencepiece_bpe_prepends_and_falls_back_to_bytes},
        {"metaspace", test_metaspace_splits_and_fuses_unknown_chars},
        {"normalized_added", test_normalized_added_tokens_match_the_normalized_text},
        {"bad_input", test_invalid_utf8_becomes_replacement_chars_and_nul_is_text},
        {"decode", test_decode_runs_the_decoder_chain},
        {"decode_bad_ids", test_decode_refuses_ids_outside_the_vocabulary},
        {"detok_prefixes", test_streamed_text_equals_the_one_shot_decode_on_every_prefix},
        {"detok_utf8", test_streamed_pieces_are_complete_utf8},
        {"config", test_config_files_give_bos_and_eos_ids},
        {"allocation_failures", test_every_allocation_failure_is_reported_cleanly},
        {"threads", test_threads_encode_with_one_tokenizer_at_once},
    };
    const struct duet_test_case refusals[] = {
        {"unsupported", test_unsupported_components_are_refused_by_name},
        {"malformed", test_malformed_files_are_refused_with_the_place},
        {"fast_and_jansson", test_fast_and_jansson_loading_agree},
        {"single_word", test_single_word_and_unicode_whitespace_stripping},
        {"gguf_byte_level", test_gguf_without_tokenizer_json_gives_its_embedded_byte_level_bpe},
        {"gguf_sentencepiece", test_gguf_sentencepiece_merges_come_from_the_scores},
        {"gguf_malformed", test_malformed_gguf_tokenizer_metadata_is_refused_by_name},
        {"gguf_allocation_failures",
         test_every_allocation_failure_of_a_gguf_load_is_reported_cleanly},
    };
    Suite *s = suite_create("tokenizer");

    duet_test_add_cases(s, fixtures, sizeof(fixtures) / sizeof(fixtures[0]), NULL, NULL, 0);
    duet_test_add_cases(s, refusals, sizeof(refusals) / sizeof(refusals[0]), setup_dir,
                        teardown_dir, 0);
    return duet_test_run(s);
}
