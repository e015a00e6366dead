/* duet_status_str(): the names of the status codes. */
#include <duet/types.h>

const char *duet_status_str(duet_status status)
{
    switch (status) {
    case DUET_STATUS_OK:
        return "ok";
    case DUET_STATUS_INVALID_ARGUMENT:
        return "invalid argument";
    case DUET_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case DUET_STATUS_IO:
        return "i/o error";
    case DUET_STATUS_BAD_FORMAT:
        return "bad format";
    case DUET_STATUS_BAD_CONFIG:
        return "bad configuration";
    case DUET_STATUS_NOT_FOUND:
        return "not found";
    case DUET_STATUS_ABI_MISMATCH:
        return "ABI mismatch";
    case DUET_STATUS_UNSUPPORTED:
        return "unsupported";
    case DUET_STATUS_DEVICE:
        return "device error";
    case DUET_STATUS_CAPACITY:
        return "capacity exceeded";
    case DUET_STATUS_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}
