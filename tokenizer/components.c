/*
 * tokenizer.json's components: normalizer, pre_tokenizer, decoder and post_processor, each null,
 * one of the types below, or a Sequence of them. Every other type, and every setting that would
 * change the ids in a way duet does not implement, is refused with DUET_STATUS_UNSUPPORTED and a
 * message naming the component, so that a tokenizer either loads exactly or not at all.
 */
#include "tokenizer-int.h"

#define PCRE2_CODE_UNIT_WIDTH DUET__PCRE2_CODE_UNIT_WIDTH
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

typedef duet_status (*step_parser)(duet__step *s, json_t *j, const char *type);

typedef struct chain {
    const char *what;     /* "normalizer", "pre_tokenizer", "decoder" */
    const char *list_key; /* the Sequence's array key */
    step_parser parse;
    duet__step *steps;
    uint32_t *n;
    const char *path;
    char *err;
    size_t err_size;
} chain;

void duet__steps_free(duet__step *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(s[i].str);
        free(s[i].str2);
        pcre2_code_free(s[i].code);
    }
}

/* A Replace's or Split's pattern: {"String": "..."} (literal) or {"Regex": "..."}. */
static const char *pattern_of(json_t *j, bool *regex)
{
    json_t *p = json_object_get(j, "pattern");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");

    *regex = r != NULL;
    return json_string_value(s ? s : r);
}

static duet_status dup_str(char **dst, const char *src)
{
    if (!src)
        return DUET_STATUS_BAD_FORMAT;
    *dst = strdup(src);
    return *dst ? DUET_STATUS_OK : DUET_STATUS_OUT_OF_MEMORY;
}

static duet_status parse_norm(duet__step *s, json_t *j, const char *type)
{
    bool regex;
    const char *pat;
    duet_status st;

    if (strcmp(type, "NFC") == 0) {
        s->kind = DUET__NORM_NFC;
        return DUET_STATUS_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        s->kind = DUET__NORM_PREPEND;
        return dup_str(&s->str, json_string_value(json_object_get(j, "prepend")));
    }
    if (strcmp(type, "Replace") != 0)
        return DUET_STATUS_UNSUPPORTED;
    s->kind = DUET__NORM_REPLACE;
    pat = pattern_of(j, &regex);
    if (regex || (pat && !*pat))
        return DUET_STATUS_UNSUPPORTED;
    st = dup_str(&s->str, pat);
    return st == DUET_STATUS_OK
               ? dup_str(&s->str2, json_string_value(json_object_get(j, "content")))
               : st;
}

static duet_status compile(duet__step *s, const char *pat, bool literal)
{
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0);

    s->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
    if (!s->code)
        return DUET_STATUS_BAD_FORMAT;
    (void)pcre2_jit_compile(s->code, PCRE2_JIT_COMPLETE); /* the interpreter when JIT is absent */
    return DUET_STATUS_OK;
}

/* GPT-2's split, ByteLevel's use_regex (Hugging Face's byte_level.rs). */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static duet_status parse_metaspace(duet__step *s, json_t *j)
{
    const char *scheme = json_string_value(json_object_get(j, "prepend_scheme"));
    json_t *aps = json_object_get(j, "add_prefix_space");
    json_t *split = json_object_get(j, "split");

    s->kind = DUET__PRE_METASPACE;
    if (scheme && strcmp(scheme, "always") != 0 && strcmp(scheme, "never") != 0 &&
        strcmp(scheme, "first") != 0)
        return DUET_STATUS_UNSUPPORTED;
    /* start: 0 never, 1 always, 2 first (only the text's first section) */
    s->start = !scheme            ? (!aps || json_is_true(aps))
               : scheme[0] == 'a' ? 1
               : scheme[0] == 'f' ? 2
                                  : 0;
    s->flag = s->start != 0;
    s->use_regex = !split || json_is_true(split);
    return dup_str(&s->str, json_string_value(json_object_get(j, "replacement")));
}

static duet_status parse_pre(duet__step *s, json_t *j, const char *type)
{
    if (strcmp(type, "Split") == 0) {
        const char *behavior = json_string_value(json_object_get(j, "behavior"));
        bool regex;
        const char *pat = pattern_of(j, &regex);

        s->kind = DUET__PRE_SPLIT;
        if (!pat || !behavior || strcmp(behavior, "Isolated") != 0 ||
            json_is_true(json_object_get(j, "invert")))
            return DUET_STATUS_UNSUPPORTED;
        return compile(s, pat, !regex);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        s->kind = DUET__PRE_BYTE_LEVEL;
        s->flag = json_is_true(json_object_get(j, "add_prefix_space"));
        s->use_regex = !json_is_false(json_object_get(j, "use_regex"));
        return s->use_regex ? compile(s, gpt2_regex, false) : DUET_STATUS_OK;
    }
    if (strcmp(type, "Metaspace") == 0)
        return parse_metaspace(s, j);
    return DUET_STATUS_UNSUPPORTED;
}

static duet_status parse_dec(duet__step *s, json_t *j, const char *type)
{
    bool regex;
    const char *pat;

    if (strcmp(type, "ByteLevel") == 0 || strcmp(type, "ByteFallback") == 0 ||
        strcmp(type, "Fuse") == 0) {
        s->kind = type[0] == 'F'   ? DUET__DEC_FUSE
                  : type[4] == 'L' ? DUET__DEC_BYTE_LEVEL
                                   : DUET__DEC_BYTE_FALLBACK;
        return DUET_STATUS_OK;
    }
    if (strcmp(type, "Strip") == 0) {
        json_t *stop = json_object_get(j, "stop");

        s->kind = DUET__DEC_STRIP;
        s->start = (uint32_t)json_integer_value(json_object_get(j, "start"));
        if (json_integer_value(stop) != 0 || s->start > 64) /* trailing strips break streaming */
            return DUET_STATUS_UNSUPPORTED;
        return dup_str(&s->str, json_string_value(json_object_get(j, "content")));
    }
    if (strcmp(type, "Metaspace") == 0) {
        duet_status st = parse_metaspace(s, j);

        s->kind = DUET__DEC_METASPACE;
        return st;
    }
    if (strcmp(type, "Replace") != 0)
        return DUET_STATUS_UNSUPPORTED;
    s->kind = DUET__DEC_REPLACE;
    pat = pattern_of(j, &regex);
    if (regex || !pat || !*pat || dup_str(&s->str, pat) != DUET_STATUS_OK)
        return regex ? DUET_STATUS_UNSUPPORTED : DUET_STATUS_BAD_FORMAT;
    return dup_str(&s->str2, json_string_value(json_object_get(j, "content")));
}

static duet_status chain_add(chain *c, json_t *j, int depth);

/* A Sequence's steps, in order; nesting deeper than 4 is refused as an unsupported type. */
static duet_status chain_add_list(chain *c, json_t *j, int depth)
{
    json_t *list = json_object_get(j, c->list_key), *e;
    duet_status st;
    size_t i;

    if (!json_is_array(list)) {
        duet__set_err(c->err, c->err_size, "%s: %s Sequence has no \"%s\" array", c->path, c->what,
                      c->list_key);
        return DUET_STATUS_BAD_FORMAT;
    }
    json_array_foreach(list, i, e)
    {
        if ((st = chain_add(c, e, depth + 1)) != DUET_STATUS_OK)
            return st;
    }
    return DUET_STATUS_OK;
}

static duet_status chain_add(chain *c, json_t *j, int depth)
{
    const char *type = json_string_value(json_object_get(j, "type"));
    duet_status st;

    if (!j || json_is_null(j)) /* absent or null: no such component */
        return DUET_STATUS_OK;
    if (!type) {
        duet__set_err(c->err, c->err_size, "%s: %s has no \"type\"", c->path, c->what);
        return DUET_STATUS_BAD_FORMAT;
    }
    if (strcmp(type, "Sequence") == 0 && depth < 4)
        return chain_add_list(c, j, depth);
    if (*c->n == DUET__MAX_STEPS) {
        duet__set_err(c->err, c->err_size, "%s: %s has more than %d steps", c->path, c->what,
                      DUET__MAX_STEPS);
        return DUET_STATUS_UNSUPPORTED;
    }
    memset(&c->steps[*c->n], 0, sizeof(c->steps[*c->n]));
    st = c->parse(&c->steps[*c->n], j, type);
    (*c->n)++; /* counted even on failure, so that duet__steps_free releases it */
    if (st == DUET_STATUS_UNSUPPORTED)
        duet__set_err(c->err, c->err_size,
                      "%s: %s type \"%s\" with these settings is not supported", c->path, c->what,
                      type);
    else if (st == DUET_STATUS_BAD_FORMAT)
        duet__set_err(c->err, c->err_size,
                      "%s: %s \"%s\" is malformed (a missing key or bad regex)", c->path, c->what,
                      type);
    return st;
}

/* ByteLevel's byte mapping runs after every split, so it must be the last pre-tokenizer; a
 * Metaspace rewrites the text, so it must be the first. */
static duet_status check_pre_order(duet_tokenizer *t, const char *path, char *err, size_t err_size)
{
    for (uint32_t i = 0; i < t->n_pre; i++) {
        if ((t->pre[i].kind == DUET__PRE_BYTE_LEVEL && i + 1 != t->n_pre) ||
            (t->pre[i].kind == DUET__PRE_METASPACE && i != 0)) {
            duet__set_err(err, err_size,
                          "%s: pre_tokenizer: ByteLevel only last and Metaspace only first in a "
                          "Sequence are supported",
                          path);
            return DUET_STATUS_UNSUPPORTED;
        }
        if (t->pre[i].kind == DUET__PRE_BYTE_LEVEL)
            t->byte_level = true;
    }
    return DUET_STATUS_OK;
}

/* Strip after a Fuse cuts once from the start of the text, otherwise from each token. */
static void mark_strips(duet_tokenizer *t)
{
    bool fused = false;

    for (uint32_t i = 0; i < t->n_dec; i++) {
        if (t->dec[i].kind == DUET__DEC_FUSE)
            fused = true;
        if (t->dec[i].kind == DUET__DEC_STRIP)
            t->dec[i].flag = fused;
    }
}

duet_status duet__load_components(duet_tokenizer *t, void *root, const char *path, char *err,
                                  size_t err_size)
{
    chain norm = {"normalizer", "normalizers", parse_norm, t->norm,
                  &t->n_norm,   path,          err,        err_size};
    chain pre = {"pre_tokenizer", "pretokenizers", parse_pre, t->pre, &t->n_pre, path, err,
                 err_size};
    chain dec = {"decoder", "decoders", parse_dec, t->dec, &t->n_dec, path, err, err_size};
    duet_status st;

    st = chain_add(&norm, json_object_get(root, "normalizer"), 0);
    if (st == DUET_STATUS_OK)
        st = chain_add(&pre, json_object_get(root, "pre_tokenizer"), 0);
    if (st == DUET_STATUS_OK)
        st = chain_add(&dec, json_object_get(root, "decoder"), 0);
    if (st == DUET_STATUS_OK)
        st = check_pre_order(t, path, err, err_size);
    mark_strips(t);
    return st;
}
