/*
 * Fuzz target: a duet configuration (libconfig syntax and the schema of docs/configuration.md).
 * The input is split at its first NUL byte: before it the configuration text, given to
 * duet_config_load_string() as "fuzz.cfg"; after it lines of KEY=VALUE, each given to
 * duet_config_set() as a --set override. Then validation, the typed settings checked against the
 * getters, every schema key read back with its type, and the resolved configuration printed. A
 * refusal must carry a message; nothing may crash, leak or read out of bounds. Inputs holding
 * "@include" are left out: an include reads the file it names (check_config tests the include
 * checks), and the fuzzer must not wander the file system.
 */
#include <duet/config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every key a configuration may hold, read back through the getter of its type. */
static void read_back(const duet_config *cfg)
{
    static const char *const keys[] = {"model",
                                       "plugin_dir",
                                       "log_level",
                                       "target.worker",
                                       "target.dtype",
                                       "target.threads",
                                       "target.check_values",
                                       "speculative.draft_model",
                                       "speculative.num_tokens",
                                       "speculative.typical_posterior_alpha",
                                       "speculative.overlap",
                                       "cache.block_size",
                                       "cache.swap_space_gib",
                                       "cache.prefix_caching",
                                       "scheduler.max_model_len",
                                       "scheduler.preemption",
                                       "no_such.key"};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        duet_config_type t;
        const char *s;
        int64_t n;
        double f;
        bool b;

        if (duet_config_key_type(keys[i], &t) != DUET_STATUS_OK)
            continue;
        (void)duet_config_is_set(cfg, keys[i]);
        (void)duet_config_source(cfg, keys[i]);
        if (t == DUET_CONFIG_TYPE_STRING &&
            duet_config_get_string(cfg, keys[i], &s) == DUET_STATUS_OK && !s)
            abort();
        if (t == DUET_CONFIG_TYPE_INT)
            (void)duet_config_get_int(cfg, keys[i], &n);
        if (t == DUET_CONFIG_TYPE_FLOAT)
            (void)duet_config_get_float(cfg, keys[i], &f);
        if (t == DUET_CONFIG_TYPE_BOOL)
            (void)duet_config_get_bool(cfg, keys[i], &b);
    }
}

/* The typed settings exist exactly when validation passed, and agree with the getters. */
static void check_settings(const duet_config *cfg, bool valid)
{
    const duet_settings *st = duet_config_settings(cfg);
    const char *model = NULL;
    int64_t block_size = 0;

    if (!valid) {
        if (st)
            abort();
        return;
    }
    if (!st || duet_config_get_string(cfg, "model", &model) != DUET_STATUS_OK ||
        duet_config_get_int(cfg, "cache.block_size", &block_size) != DUET_STATUS_OK)
        abort();
    if (strcmp(st->model, model) != 0 || st->cache.block_size != block_size ||
        st->speculative.enabled != duet_config_has_group(cfg, "speculative") ||
        (unsigned)st->scheduler.policy > DUET_SCHED_POLICY_PRIORITY)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t text_len = nul ? (size_t)(nul - data) : size;
    char *text = malloc(text_len + 1), *sets = NULL, *line, *save = NULL;
    duet_config *cfg = NULL;
    duet_status st;
    FILE *sink;

    if (!text)
        return 0;
    memcpy(text, data, text_len);
    text[text_len] = '\0';
    if (strstr(text, "@include") || duet_config_create(&cfg) != DUET_STATUS_OK) {
        free(text);
        return 0;
    }
    if (duet_config_load_string(cfg, text, "fuzz.cfg") != DUET_STATUS_OK) {
        if (!duet_config_error(cfg)[0])
            abort(); /* a refusal without a message */
        goto out;
    }
    if (nul && (sets = malloc(size - text_len))) {
        memcpy(sets, nul + 1, size - text_len - 1);
        sets[size - text_len - 1] = '\0';
        for (line = strtok_r(sets, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            if (duet_config_set(cfg, line) != DUET_STATUS_OK && !duet_config_error(cfg)[0])
                abort();
    }
    st = duet_config_validate(cfg);
    if (st != DUET_STATUS_OK && !duet_config_error(cfg)[0])
        abort();
    check_settings(cfg, st == DUET_STATUS_OK);
    read_back(cfg);
    sink = fopen("/dev/null", "w");
    if (sink) {
        duet_config_print(cfg, sink);
        fclose(sink);
    }
out:
    duet_config_destroy(cfg);
    free(sets);
    free(text);
    return 0;
}
