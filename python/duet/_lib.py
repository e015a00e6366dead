"""libduet through ctypes: the library, the C functions the package calls, and errors.

Only functions are shared with the C side (duet.h, "Flat access"): handles are opaque pointers
(c_void_p) and every struct stays inside the library. _FUNCTIONS is the one list of the
prototypes the package uses; tests/python/test_abi.py checks it against include/duet/*.h.
"""

import ctypes
import ctypes.util
import os
import threading

from ctypes import (POINTER, c_bool, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_uint32, c_uint64, c_void_p)

# duet_status (duet/types.h): 0 is success, failures are negative.
STATUS_OK = 0
STATUS_NAMES = {
    -1: "INVALID_ARGUMENT", -2: "OUT_OF_MEMORY", -3: "IO", -4: "BAD_FORMAT", -5: "BAD_CONFIG",
    -6: "NOT_FOUND", -7: "ABI_MISMATCH", -8: "UNSUPPORTED", -9: "DEVICE", -10: "CAPACITY",
    -11: "INTERNAL",
}

# duet_finish_reason (duet/duet.h).
FINISH_NAMES = {0: "NONE", 1: "STOP", 2: "LENGTH", 3: "ABORT", 4: "IGNORED", 5: "ERROR"}
FINISH_NONE, FINISH_STOP, FINISH_LENGTH, FINISH_ABORT, FINISH_IGNORED, FINISH_ERROR = range(6)

# duet_config_type (duet/config.h).
CONFIG_TYPE_NAMES = {0: "STRING", 1: "INT", 2: "FLOAT", 3: "BOOL"}

_P = c_void_p          # an opaque handle: duet_config *, duet_engine *, ...
_PP = POINTER(c_void_p)  # where the library writes a handle or a buffer it allocated
_STATUS = c_int        # duet_status

# name: (restype, argtypes)
_FUNCTIONS = {
    "duet_status_str": (c_char_p, [c_int]),
    "duet_config_create": (_STATUS, [_PP]),
    "duet_config_destroy": (None, [_P]),
    "duet_config_load_file": (_STATUS, [_P, c_char_p]),
    "duet_config_set": (_STATUS, [_P, c_char_p]),
    "duet_config_validate": (_STATUS, [_P]),
    "duet_config_error": (c_char_p, [_P]),
    "duet_config_get_string": (_STATUS, [_P, c_char_p, POINTER(c_char_p)]),
    "duet_config_get_int": (_STATUS, [_P, c_char_p, POINTER(c_int64)]),
    "duet_config_get_float": (_STATUS, [_P, c_char_p, POINTER(c_double)]),
    "duet_config_get_bool": (_STATUS, [_P, c_char_p, POINTER(c_bool)]),
    "duet_config_is_set": (c_bool, [_P, c_char_p]),
    "duet_config_has_group": (c_bool, [_P, c_char_p]),
    "duet_config_key_type": (_STATUS, [c_char_p, POINTER(c_int)]),
    "duet_plugin_find": (_STATUS, [c_char_p, c_char_p, _PP, c_char_p, c_size_t]),
    "duet_engine_create": (_STATUS, [_P, _PP, c_char_p, c_size_t]),
    "duet_engine_destroy": (None, [_P]),
    "duet_engine_error": (c_char_p, [_P]),
    "duet_engine_step": (_STATUS, [_P, _PP]),
    "duet_engine_abort": (_STATUS, [_P, c_uint64]),
    "duet_engine_has_unfinished": (c_bool, [_P]),
    "duet_engine_metric": (_STATUS, [_P, c_char_p, POINTER(c_double)]),
    "duet_engine_metric_name": (c_char_p, [c_size_t]),
    "duet_request_create": (_STATUS, [_PP]),
    "duet_request_destroy": (None, [_P]),
    "duet_request_set_int": (_STATUS, [_P, c_char_p, c_int64]),
    "duet_request_set_float": (_STATUS, [_P, c_char_p, c_double]),
    "duet_request_set_tokens": (_STATUS, [_P, c_char_p, POINTER(c_int32), c_size_t]),
    "duet_request_set_logit_bias": (_STATUS, [_P, POINTER(c_int32), POINTER(c_float), c_size_t]),
    "duet_engine_add": (_STATUS, [_P, _P, POINTER(c_uint64)]),
    "duet_step_output_count": (c_uint32, [_P]),
    "duet_step_output_request": (_P, [_P, c_uint32]),
    "duet_request_output_int": (_STATUS, [_P, c_char_p, POINTER(c_int64)]),
    "duet_request_output_error": (c_char_p, [_P]),
    "duet_request_output_seq_int": (_STATUS, [_P, c_uint32, c_char_p, POINTER(c_int64)]),
    "duet_request_output_tokens": (_STATUS, [_P, c_uint32, c_uint32, c_uint32, POINTER(c_int32),
                                             POINTER(c_float), POINTER(c_int32),
                                             POINTER(c_float)]),
    "duet_request_output_prompt_logprobs": (_STATUS, [_P, POINTER(c_float), POINTER(c_int32),
                                                      POINTER(c_float)]),
    "duet_request_output_accepted_at": (c_uint32, [_P, POINTER(c_uint32), c_uint32]),
    "duet_tokenizer_load": (_STATUS, [c_char_p, _PP, c_char_p, c_size_t]),
    "duet_tokenizer_destroy": (None, [_P]),
    "duet_tokenizer_encode": (_STATUS, [_P, c_char_p, c_size_t, c_bool, _PP, POINTER(c_size_t)]),
    "duet_tokenizer_decode": (_STATUS, [_P, POINTER(c_int32), c_size_t, c_bool, _PP,
                                        POINTER(c_size_t)]),
    "duet_tokenizer_free": (None, [c_void_p]),
    "duet_tokenizer_vocab_size": (c_uint32, [_P]),
    "duet_tokenizer_token_to_id": (c_int32, [_P, c_char_p, c_size_t]),
    "duet_tokenizer_id_to_token": (c_void_p, [_P, c_int32, POINTER(c_size_t)]),
    "duet_tokenizer_is_special": (c_bool, [_P, c_int32]),
    "duet_tokenizer_bos_id": (c_int32, [_P]),
    "duet_tokenizer_eos_ids": (c_size_t, [_P, POINTER(c_int32), c_size_t]),
    "duet_tokenizer_chat_template": (c_char_p, [_P]),
    "duet_tokenizer_render_chat": (_STATUS, [_P, c_char_p, c_size_t, c_bool, c_char_p, c_char_p,
                                             _PP, POINTER(c_size_t), c_char_p, c_size_t]),
    "duet_detok_create": (_STATUS, [_P, c_bool, _PP]),
    "duet_detok_push": (_STATUS, [_P, c_int32, _PP, POINTER(c_size_t)]),
    "duet_detok_finish": (_STATUS, [_P, _PP, POINTER(c_size_t)]),
    "duet_detok_destroy": (None, [_P]),
}

TOKENIZER_MAX_EOS = 8      # DUET_TOKENIZER_MAX_EOS
MAX_SPEC_TOKENS = 32       # DUET_MAX_SPEC_TOKENS
ERR_SIZE = 4096


class DuetError(Exception):
    """An error libduet reported: .status is its duet_status name ("BAD_CONFIG", ...), .code
    the number, and the message is libduet's own (it names the file, line, key or tensor)."""

    def __init__(self, message, status="INTERNAL", code=-11):
        super().__init__(message)
        self.status = status
        self.code = code


class DuetValueError(DuetError, ValueError):
    """A configuration, a request or a file's content is wrong (INVALID_ARGUMENT, BAD_CONFIG,
    BAD_FORMAT, CAPACITY)."""


class DuetOSError(DuetError, OSError):
    """A file, a plugin or a device could not be used (IO, NOT_FOUND)."""


class DuetMemoryError(DuetError, MemoryError):
    """OUT_OF_MEMORY."""


class DuetRuntimeError(DuetError, RuntimeError):
    """ABI_MISMATCH, UNSUPPORTED, DEVICE, INTERNAL."""


_CLASS_OF = {
    "INVALID_ARGUMENT": DuetValueError, "BAD_CONFIG": DuetValueError,
    "BAD_FORMAT": DuetValueError, "CAPACITY": DuetValueError, "IO": DuetOSError,
    "NOT_FOUND": DuetOSError, "OUT_OF_MEMORY": DuetMemoryError,
}


def error(code, message):
    """The exception for duet_status code with libduet's message."""
    status = STATUS_NAMES.get(code, "INTERNAL")
    cls = _CLASS_OF.get(status, DuetRuntimeError)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return cls(message or status.lower().replace("_", " "), status, code)


def _candidates():
    env = os.environ.get("DUET_LIBRARY")
    if env:
        yield env
        return
    try:
        from . import _paths
        yield _paths.LIBRARY
    except ImportError:
        pass
    found = ctypes.util.find_library("duet")
    if found:
        yield found


_lock = threading.Lock()
_lib = None


def lib():
    """libduet, loaded once with every prototype of _FUNCTIONS set."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        handle = None
        for path in _candidates():
            try:
                handle = ctypes.CDLL(path)
                break
            except OSError as e:
                tried.append(f"{path}: {e}")
        if handle is None:
            raise ImportError("duet: libduet.so was not found (set DUET_LIBRARY to its path, or "
                              "install duet with make install); tried: "
                              + ("; ".join(tried) or "nothing"))
        for name, (restype, argtypes) in _FUNCTIONS.items():
            try:
                fn = getattr(handle, name)
            except AttributeError as e:
                raise ImportError(f"duet: {handle._name} has no {name}: the library is older "
                                  "than this package") from e
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = handle
        return _lib


def plugin_dirs():
    """The build tree's worker folders when the package runs from it, else [] (libduet
    searches $DUET_PLUGIN_PATH, plugin_dir and its install folder itself)."""
    try:
        from . import _paths
        return list(getattr(_paths, "PLUGIN_DIRS", []))
    except ImportError:
        return []


_libc = None


def free(ptr):
    """free() for what libduet hands out with malloc (duet_plugin_find's path)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
        _libc.free.argtypes = [c_void_p]
        _libc.free.restype = None
    _libc.free(ptr)


def int32_array(values, what):
    """A ctypes int32 array of values, each checked to be an int in range (ctypes would wrap
    larger ones silently)."""
    values = list(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{what} must hold ints, got {type(v).__name__}")
        if not -2**31 <= v < 2**31:
            raise ValueError(f"{what}: {v} is not a token id")
    return (c_int32 * len(values))(*values)
