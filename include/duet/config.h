/*
 * duet/config.h — the configuration of a duet engine.
 *
 * A configuration is a libconfig file (DESIGN §4, docs/configuration.md) checked against a schema
 * of known keys: every key has a type, a range or a set of allowed strings, and a default unless
 * it is required. Any error names the file, the line and the key ("run.cfg:7: cache.block_size:
 * must be a power of two in 1..256, got 12"); an unknown key is an error, with a suggestion when
 * it is close to a known one. Overrides ("cache.block_size=32", from duet-run's --set) are applied
 * on top of the file and checked the same way.
 *
 * Typical use:
 *
 *     duet_config *cfg;
 *     duet_config_create(&cfg);
 *     if (duet_config_load_file(cfg, path) || duet_config_set(cfg, "cache.block_size=32") ||
 *         duet_config_validate(cfg))
 *         fprintf(stderr, "%s\n", duet_config_error(cfg));
 *
 * Keys are dotted paths: "model", "target.worker", "cache.block_size". A configuration object is
 * not thread-safe for writing; once validated it may be read from any number of threads.
 */
#ifndef DUET_CONFIG_H
#define DUET_CONFIG_H

#include <duet/types.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct duet_config duet_config;

typedef enum duet_config_type {
    DUET_CONFIG_TYPE_STRING = 0,
    DUET_CONFIG_TYPE_INT = 1,   /* int64_t */
    DUET_CONFIG_TYPE_FLOAT = 2, /* double; an integer literal is accepted where a float is due */
    DUET_CONFIG_TYPE_BOOL = 3,
} duet_config_type;

/* Creates an empty configuration holding only defaults. The caller owns *out and releases it with
 * duet_config_destroy(). Fails only with DUET_STATUS_OUT_OF_MEMORY. */
DUET_API duet_status duet_config_create(duet_config **out);

/* Releases cfg and every string it handed out. NULL is allowed. */
DUET_API void duet_config_destroy(duet_config *cfg);

/* Reads a libconfig file. Every setting must be a known key of the right type and range; the first
 * error is returned as DUET_STATUS_BAD_CONFIG (DUET_STATUS_IO when the file cannot be read, or is
 * not a regular file) and its message, "FILE:LINE: KEY: what is wrong", is kept for
 * duet_config_error(). A file or text over DUET_CONFIG_MAX_BYTES is refused (BAD_CONFIG) before
 * libconfig reads it: its parser takes quadratic time in long strings and comments. A
 * configuration is loaded at most once: a second call returns DUET_STATUS_INVALID_ARGUMENT. */
#define DUET_CONFIG_MAX_BYTES (1u << 20)
DUET_API duet_status duet_config_load_file(duet_config *cfg, const char *path);

/* Same as duet_config_load_file() for text in memory; name stands for the file name in messages. */
DUET_API duet_status duet_config_load_string(duet_config *cfg, const char *text, const char *name);

/* Applies one override "key.path=value" on top of what was loaded (or on top of the defaults).
 * The value is read as the key's type: a string may be quoted or bare, a boolean is true/false
 * (also yes/no, on/off, 1/0), numbers in libconfig syntax. Setting a key inside a group creates
 * the group ("speculative.draft_model=..." turns speculation on). Errors name "--set ASSIGNMENT"
 * as the source. */
DUET_API duet_status duet_config_set(duet_config *cfg, const char *assignment);

/* Checks what cannot be checked key by key: required keys, keys required by the presence of their
 * group, and rules between keys. Call it once after loading and overriding, before reading. */
DUET_API duet_status duet_config_validate(duet_config *cfg);

/* The message of the last failed call on cfg, or "" when none failed. Owned by cfg; valid until
 * the next call that modifies cfg. */
DUET_API const char *duet_config_error(const duet_config *cfg);

/* Readers. A key that was not given yields its default. They return DUET_STATUS_NOT_FOUND for a
 * key the schema does not know or one without a value (a required key never given, an optional
 * key without default), and DUET_STATUS_INVALID_ARGUMENT when the key has another type.
 * Strings stay owned by cfg and live until it is destroyed or the key is set again. */
DUET_API duet_status duet_config_get_string(const duet_config *cfg, const char *key,
                                            const char **out);
DUET_API duet_status duet_config_get_int(const duet_config *cfg, const char *key, int64_t *out);
DUET_API duet_status duet_config_get_float(const duet_config *cfg, const char *key, double *out);
DUET_API duet_status duet_config_get_bool(const duet_config *cfg, const char *key, bool *out);

/* True when key was given explicitly, by the file or by an override (not a default). */
DUET_API bool duet_config_is_set(const duet_config *cfg, const char *key);

/* True when the group ("target", "speculative", "cache", "scheduler") appeared in the file or was
 * created by an override. "speculative" being present is what turns speculative decoding on. */
DUET_API bool duet_config_has_group(const duet_config *cfg, const char *group);

/* Removes a group ("speculative", ...): its keys return to their defaults (or to no value) and
 * duet_config_has_group() turns false, as if neither the file nor an override had named it.
 * duet-run's --no-speculative drops "speculative" to run the same configuration without the
 * draft. Call duet_config_validate() afterwards. DUET_STATUS_NOT_FOUND for an unknown group
 * (a group that is known but absent is not an error). */
DUET_API duet_status duet_config_drop_group(duet_config *cfg, const char *group);

/* The type of a known key; DUET_STATUS_NOT_FOUND for an unknown one. */
DUET_API duet_status duet_config_key_type(const char *key, duet_config_type *out);

/* Where key's value came from: "FILE:LINE", "--set", or "default". Owned by cfg. */
DUET_API const char *duet_config_source(const duet_config *cfg, const char *key);

/* Writes the resolved configuration (every known key of every present group, defaults included)
 * in libconfig syntax, each value followed by a comment naming its source. The output loads back
 * into an equal configuration. Returns DUET_STATUS_IO when writing fails. */
DUET_API duet_status duet_config_print(const duet_config *cfg, FILE *f);

#ifdef __cplusplus
}
#endif

#endif /* DUET_CONFIG_H */
