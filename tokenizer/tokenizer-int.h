/*
 * tokenizer-int.h — the tokenizer part's internals (include/duet/tokenizer.h, docs/tokenizer.md).
 *
 *     text ─► added tokens split ─► normalizer ─► pre-tokenizers ─► BPE per word ─► template
 *     ids  ─► tokens ─► decoder chain (per token, O(1)) ─► UTF-8 assembler ─► text
 *
 * Strings live in one arena per tokenizer (duet__arena); the vocabulary maps token bytes to ids
 * (duet__strmap, open addressing), merges map an id pair to its rank and result (duet__pairmap).
 */
#ifndef DUET_TOKENIZER_INT_H
#define DUET_TOKENIZER_INT_H

#include <duet/tokenizer.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DUET__PCRE2_CODE_UNIT_WIDTH 8

/* ---- storage ------------------------------------------------------------------------------ */

typedef struct duet__arena {
    char *data; /* bytes; strings are addressed by offset */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} duet__arena;

bool duet__arena_add(duet__arena *a, const char *s, size_t len, uint32_t *off);

/* String -> int32 map; keys are offsets into an arena the caller passes to each call. */
typedef struct duet__strmap {
    uint32_t *slot_off;  /* [cap] key offset into the arena */
    uint32_t *slot_len;  /* [cap] key length; UINT32_MAX for an empty slot */
    int32_t *slot_value; /* [cap] */
    uint32_t cap;        /* slots, a power of two */
    uint32_t count;      /* keys held */
} duet__strmap;

bool duet__strmap_init(duet__strmap *m, uint32_t expected);
void duet__strmap_fini(duet__strmap *m);
/* Inserts or replaces; false when out of memory. */
bool duet__strmap_put(duet__strmap *m, const duet__arena *a, uint32_t off, uint32_t len,
                      int32_t value);
/* The value of key S (LEN bytes) or -1. */
int32_t duet__strmap_get(const duet__strmap *m, const duet__arena *a, const char *s, size_t len);
uint32_t duet__hash(const char *s, size_t len);

/* (left id, right id) -> (rank, merged id). */
typedef struct duet__pairmap {
    uint64_t *keys;  /* [cap] left << 32 | right; UINT64_MAX for an empty slot */
    int32_t *rank;   /* [cap] */
    int32_t *merged; /* [cap] */
    uint32_t cap;    /* slots, a power of two */
    uint32_t count;
} duet__pairmap;

bool duet__pairmap_init(duet__pairmap *m, uint32_t expected);
void duet__pairmap_fini(duet__pairmap *m);
bool duet__pairmap_put(duet__pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t merged);
bool duet__pairmap_get(const duet__pairmap *m, int32_t left, int32_t right, int32_t *rank,
                       int32_t *merged);

/* ---- components --------------------------------------------------------------------------- */

enum { DUET__MAX_STEPS = 8 }; /* normalizers, pre-tokenizers or decoders in one chain */

typedef enum duet__norm_kind {
    DUET__NORM_NFC,
    DUET__NORM_PREPEND, /* prepend STR to a non-empty text */
    DUET__NORM_REPLACE, /* literal STR -> STR2 */
} duet__norm_kind;

typedef enum duet__pre_kind {
    DUET__PRE_SPLIT,      /* PCRE2 regex, matches and gaps both kept (Isolated) */
    DUET__PRE_BYTE_LEVEL, /* optional prefix space and GPT-2 regex; bytes mapped last */
    DUET__PRE_METASPACE,  /* ' ' -> replacement, optional prefix, split before replacements */
} duet__pre_kind;

typedef enum duet__dec_kind {
    DUET__DEC_BYTE_LEVEL,
    DUET__DEC_REPLACE,       /* literal STR -> STR2 per token */
    DUET__DEC_BYTE_FALLBACK, /* <0xXX> runs -> bytes, or U+FFFD per byte when not UTF-8 */
    DUET__DEC_FUSE,
    DUET__DEC_STRIP,     /* START chars of CH from the start (per token, or once after Fuse) */
    DUET__DEC_METASPACE, /* replacement -> ' '; none of them on the first token when PREPEND */
} duet__dec_kind;

typedef struct duet__step {
    int kind;       /* duet__norm_kind, duet__pre_kind or duet__dec_kind */
    char *str;      /* NUL-terminated; prepend text, pattern, replacement char */
    char *str2;     /* replacement content */
    void *code;     /* pcre2_code * of a Split */
    bool flag;      /* ByteLevel add_prefix_space; Metaspace prepend; Strip after Fuse */
    bool use_regex; /* ByteLevel use_regex; Metaspace split */
    uint32_t start; /* Strip: chars from the start */
} duet__step;

typedef struct duet__added {
    uint32_t off, len; /* content in the arena */
    int32_t id;
    bool special;
    bool lstrip, rstrip; /* take the whitespace before / after a match with it */
    bool single_word;    /* match only where no word char is on either side */
} duet__added;

typedef struct duet__cache duet__cache;

enum { DUET__CHAT_TOKENS = 4 }; /* bos_token, eos_token, unk_token, pad_token */

struct duet_tokenizer {
    duet__arena arena;      /* every token string */
    uint32_t *tok_off;      /* [n_ids] token string offset in the arena */
    uint32_t *tok_len;      /* [n_ids] bytes; UINT32_MAX where no token has the id */
    bool *special;          /* [n_ids] */
    uint32_t n_ids;         /* one past the largest id */
    duet__strmap vocab;     /* model vocabulary: token -> id */
    duet__strmap added_map; /* added tokens: content -> id */
    duet__pairmap merges;
    duet__added *added; /* [n_added] matched in the raw text, sorted longest first */
    uint32_t n_added;
    bool added_first[256]; /* first bytes of added tokens */
    duet__added *nadded;   /* [n_nadded] "normalized": true under a normalizer: their normalized
                              content, matched in the normalized text, sorted longest first */
    uint32_t n_nadded;
    bool nadded_first[256];
    duet__step norm[DUET__MAX_STEPS];
    uint32_t n_norm;
    duet__step pre[DUET__MAX_STEPS];
    uint32_t n_pre;
    duet__step dec[DUET__MAX_STEPS];
    uint32_t n_dec;
    bool byte_level;    /* pre-tokenized words are mapped byte -> char before BPE */
    bool byte_fallback; /* unknown chars -> <0xXX> tokens */
    bool fuse_unk;      /* consecutive unknowns -> one unk */
    bool ignore_merges; /* a word found whole in the vocabulary is one token */
    bool sp_cut; /* no pre-tokenizer, and no token has U+2581 after another char: a section can be
                  * cut before every U+2581 that follows another char and BPE gives the same
                  * ids on the pieces (which the cache then holds) as on the whole */
    int32_t unk_id;               /* -1 when none */
    int32_t byte_ids[256];        /* <0xXX> token ids, -1 where absent */
    int32_t prefix[4], suffix[4]; /* post-processor ids around the sequence */
    uint32_t n_prefix, n_suffix;
    int32_t bos_id;
    int32_t eos_ids[DUET_TOKENIZER_MAX_EOS];
    uint32_t n_eos;
    duet__cache *cache;
    char *chat_template;                  /* NUL-terminated, or NULL (chat.c) */
    char *chat_tokens[DUET__CHAT_TOKENS]; /* bos, eos, unk, pad token strings, or NULL */
};

/* GPT-2's byte <-> printable char map (ByteLevel). */
extern const uint16_t duet__byte_to_cp[256];
int duet__cp_to_byte(uint32_t cp);

/* UTF-8 helpers. */
size_t duet__utf8_len(const unsigned char *s, size_t n); /* bytes of a valid char at S, or 0 */
size_t duet__utf8_put(char *dst, uint32_t cp);
uint32_t duet__utf8_get(const char *s, size_t *len);
uint32_t duet__utf8_prev(const char *s, size_t i, size_t *len); /* the char ending at S + I */
bool duet__cp_is_space(uint32_t cp);                            /* Unicode White_Space */
bool duet__cp_is_word(uint32_t cp);                             /* Rust regex's Unicode \w */
/* Copies N bytes of SRC to DST (3 * N bytes of room) with every invalid sequence replaced by
 * U+FFFD (WHATWG maximal subparts) and returns the bytes written. With USED, an incomplete char
 * at the very end is left out (more bytes may complete it) and *USED gets the bytes consumed. */
size_t duet__utf8_fix(const char *src, size_t n, char *dst, size_t *used);
bool duet__utf8_incomplete(const unsigned char *s, size_t k);
/* A copy of TEXT with invalid sequences replaced by U+FFFD (WHATWG maximal subparts). */
char *duet__utf8_sanitize(const char *text, size_t len, size_t *out_len);

/* model.vocab or model.merges decoded by the fast path (rawjson.c). */
typedef struct duet__raw {
    duet__arena strs;    /* the decoded strings */
    uint32_t *off, *len; /* [n] strings in strs: vocab tokens, or merges' left and right */
    int64_t *id;         /* [n] vocab ids (unused for merges) */
    size_t n, cap;
} duet__raw;

/* Finds and decodes model.vocab and model.merges of the LEN bytes of TEXT and gives the rest of
 * the text, those values blanked to {} and [], in *REST (the caller frees it). False when the
 * file is not of the expected shape: then jansson parses all of it. */
bool duet__raw_split(const char *text, size_t len, duet__raw *vocab, duet__raw *merges,
                     char **rest);
void duet__raw_fini(duet__raw *r);
/* Appends string S (LEN bytes) with ID (-1 for merges); false when out of memory. */
bool duet__raw_add(duet__raw *r, const char *s, size_t len, int64_t id);
/* Set by the fuzz target only (single-threaded): every load takes jansson's path, so that it can
 * compare the two. */
extern bool duet__raw_disabled;

/* Loading (load.c, components.c). */
duet_status duet__load_json(duet_tokenizer *t, const char *path, const char *text, size_t len,
                            char *err, size_t err_size);
/* A tokenizer.json-shaped ROOT (json_t *) whose model.vocab and model.merges (left empty in
 * ROOT) were decoded into RAW[0] and RAW[1] by the caller (gguf.c). */
duet_status duet__load_parsed(duet_tokenizer *t, void *root, duet__raw *raw, const char *path,
                              char *err, size_t err_size);
/* The tokenizer embedded in a GGUF file's tokenizer.ggml.* metadata (gguf.c): from the SIZE
 * bytes at BUF named PATH in messages. DUET_STATUS_NOT_FOUND when the file holds no
 * tokenizer.ggml.model. The caller owns *OUT (duet_tokenizer_destroy). */
duet_status duet__tokenizer_from_gguf(const char *path, const uint8_t *buf, uint64_t size,
                                      duet_tokenizer **out, char *err, size_t err_size);
/* The same from the GGUF file PATH (mapped, only its metadata read). */
duet_status duet__tokenizer_load_gguf(const char *path, duet_tokenizer **out, char *err,
                                      size_t err_size);
/* True when PATH is a file that starts with GGUF's magic. */
bool duet__is_gguf(const char *path);
/* A tokenizer from tokenizer.json's text alone (the fuzz target): no companion files. */
duet_status duet__tokenizer_from_json(const char *text, size_t len, duet_tokenizer **out, char *err,
                                      size_t err_size);
duet_status duet__load_components(duet_tokenizer *t, void *root, const char *path, char *err,
                                  size_t err_size);
void duet__steps_free(duet__step *s, uint32_t n);
duet_status duet__load_post(duet_tokenizer *t, void *post, const char *path, char *err,
                            size_t err_size);
int32_t duet__lookup(const duet_tokenizer *t, const char *s, size_t len);

/* Encoding (encode.c, bpe.c). */
typedef struct duet__ids {
    int32_t *v;
    size_t n, cap;
} duet__ids;
bool duet__ids_push(duet__ids *ids, int32_t id);
/* TEXT through the normalizers into a new string the caller frees (*OUT_LEN bytes). */
duet_status duet__normalize_text(const duet_tokenizer *t, const char *text, size_t len, char **out,
                                 size_t *out_len);
/* One BPE word's working set, reused from word to word within one encode call. */
typedef struct duet__bpe_scratch {
    struct duet__sym *sym;    /* [cap] the word's symbols, a linked list in an array */
    struct duet__merge *heap; /* [cap * 3] candidate merges, a min-heap on (rank, pos) */
    size_t cap;
} duet__bpe_scratch;
duet_status duet__bpe_word(const duet_tokenizer *t, duet__bpe_scratch *s, const char *w, size_t len,
                           duet__ids *out);
duet_status duet__cache_create(duet__cache **out);
void duet__cache_destroy(duet__cache *c);

/* A growable byte string: p[0 .. n), a NUL after it once anything was added (map.c). */
typedef struct duet__buf {
    char *p;
    size_t n, cap;
} duet__buf;

/* Capacity for at least `bytes` (doubling); false when out of memory (b unchanged). */
bool duet__buf_fit(duet__buf *b, size_t bytes);
/* Appends n bytes and keeps the NUL after them; false when out of memory. */
bool duet__buf_add(duet__buf *b, const char *s, size_t n);

/* Chat templates (chat.c): the template and special-token strings of DIR and CFG (the parsed
 * tokenizer_config.json, or NULL); DUET_STATUS_OUT_OF_MEMORY is the only failure. */
duet_status duet__chat_load(duet_tokenizer *t, const char *dir, void *cfg);
void duet__chat_free(duet_tokenizer *t);
/* A NUL-terminated malloc'd copy of S[0 .. N) (chat.c), or NULL when out of memory. */
char *duet__chat_strdup(const char *s, size_t n);

void duet__set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
