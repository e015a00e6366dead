/*
 * duet/types.h — types shared by every part of duet and by its plugins.
 *
 * This header is part of the plugin ABI: the status codes and their values never change within a
 * major ABI version (new codes are only ever added).
 */
#ifndef DUET_TYPES_H
#define DUET_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define DUET_API __declspec(dllexport)
#elif defined(__GNUC__)
#define DUET_API __attribute__((visibility("default")))
#else
#define DUET_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every operation that can fail returns a duet_status: 0 is success, every failure is negative.
 * The value says what kind of failure it was; the message (duet_config_error(),
 * worker->last_error(), ...) says which file, line, key or tensor was at fault.
 */
typedef enum duet_status {
    DUET_STATUS_OK = 0,
    DUET_STATUS_INVALID_ARGUMENT = -1, /* a caller passed a value outside the contract */
    DUET_STATUS_OUT_OF_MEMORY = -2,    /* an allocation (host or device) failed */
    DUET_STATUS_IO = -3,               /* a file could not be opened, read or mapped */
    DUET_STATUS_BAD_FORMAT = -4,       /* a file's content is malformed (model, tensor, JSON) */
    DUET_STATUS_BAD_CONFIG = -5,       /* a configuration file or override is wrong */
    DUET_STATUS_NOT_FOUND = -6,        /* a key, plugin, file or symbol does not exist */
    DUET_STATUS_ABI_MISMATCH = -7,     /* a plugin was built against another ABI */
    DUET_STATUS_UNSUPPORTED = -8,      /* valid, but this build, worker or device cannot do it */
    DUET_STATUS_DEVICE = -9,           /* a device runtime (CUDA, cuBLAS, NCCL) reported an error */
    DUET_STATUS_CAPACITY = -10, /* does not fit: more blocks, tokens or sequences than exist */
    DUET_STATUS_INTERNAL = -11, /* a broken invariant inside duet: a bug, please report */
} duet_status;

/* A short constant name for a status ("invalid argument"); never NULL, even for unknown values. */
DUET_API const char *duet_status_str(duet_status status);

/* Severity of a log message, most severe first; a logger shows levels <= its threshold. */
typedef enum duet_log_level {
    DUET_LOG_ERROR = 0,
    DUET_LOG_WARN = 1,
    DUET_LOG_INFO = 2,
    DUET_LOG_DEBUG = 3,
} duet_log_level;

#ifdef __cplusplus
}
#endif

#endif /* DUET_TYPES_H */
