"""The binding and the C headers agree: every prototype the package declares through ctypes
(duet._lib._FUNCTIONS) matches its declaration in include/duet/*.h, and the status and finish
constants the package uses have the headers' values."""

import ctypes
import os
import re
import unittest

from ctypes import (POINTER, c_bool, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_uint32, c_uint64, c_void_p)

import duet
from duet import _lib
from models import SRC

HEADERS = os.path.join(SRC, "include", "duet")

# C types (normalised) -> the ctypes type the binding must use for them.
SCALARS = {"duet_status": c_int, "duet_config_type": c_int, "int": c_int, "int32_t": c_int32, "int64_t": c_int64,
           "uint32_t": c_uint32, "uint64_t": c_uint64, "size_t": c_size_t, "double": c_double,
           "float": c_float, "bool": c_bool, "duet_finish_reason": c_int}
OPAQUE = {"duet_config", "duet_engine", "duet_request", "duet_step_output",
          "duet_request_output", "duet_tokenizer", "duet_detok", "void"}


def prototypes():
    """name -> (return type, [parameter types]) of every DUET_API function."""
    text = ""
    for name in sorted(os.listdir(HEADERS)):
        with open(os.path.join(HEADERS, name)) as f:
            text += f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    protos = {}
    for m in re.finditer(r"DUET_API\s+([^;{]*?)\b(duet_\w+)\s*\(([^)]*)\)\s*;", text):
        params = [p.strip() for p in m.group(3).split(",")]
        params = [] if params == ["void"] else params
        types = [re.sub(r"\s*\b\w+$", "", p) if not p.endswith("*") else p for p in params]
        protos[m.group(2)] = (" ".join(m.group(1).split()), [" ".join(t.split()) for t in types])
    return protos


def expected(ctype, is_return=False):
    """The ctypes type (or a tuple of accepted ones) for a C type string."""
    t = ctype.replace("const ", "").replace(" *", "*").strip()
    if t in SCALARS:
        return (SCALARS[t],)
    if t == "char*":
        return (c_char_p, c_void_p) if is_return else (c_char_p,)
    if t.endswith("**"):
        return (POINTER(c_void_p), POINTER(c_char_p))
    if t.endswith("*"):
        base = t[:-1]
        if base in OPAQUE:
            return (c_void_p,)
        if base in SCALARS:
            return (POINTER(SCALARS[base]),)
    if t == "void":
        return (None,)
    raise AssertionError(f"no ctypes mapping for C type {ctype!r}")


class AbiTest(unittest.TestCase):
    def test_every_binding_prototype_matches_the_header(self):
        protos = prototypes()
        self.assertGreater(len(protos), 50)
        for name, (restype, argtypes) in _lib._FUNCTIONS.items():
            with self.subTest(function=name):
                self.assertIn(name, protos, f"{name} is not declared in include/duet")
                c_ret, c_params = protos[name]
                self.assertIn(restype, expected(c_ret, True), f"{name}: return {c_ret}")
                self.assertEqual(len(argtypes), len(c_params), f"{name}: {c_params}")
                for i, (a, c) in enumerate(zip(argtypes, c_params)):
                    self.assertIn(a, expected(c), f"{name}: parameter {i} is {c}")

    def test_the_library_exports_every_function_the_binding_uses(self):
        lib = _lib.lib()
        for name in _lib._FUNCTIONS:
            self.assertTrue(hasattr(lib, name), name)

    def enum(self, name):
        text = open(os.path.join(HEADERS, name)).read()
        return {m.group(1): int(m.group(2))
                for m in re.finditer(r"DUET_(?:STATUS|FINISH)_(\w+)\s*=\s*(-?\d+)", text)}

    def test_status_values_match_types_h(self):
        values = self.enum("types.h")
        self.assertEqual(values.pop("OK"), _lib.STATUS_OK)
        self.assertEqual({v: k for k, v in values.items()}, _lib.STATUS_NAMES)

    def test_finish_reasons_match_duet_h(self):
        values = self.enum("duet.h")
        self.assertEqual({v: k for k, v in values.items()}, _lib.FINISH_NAMES)

    def test_limits_match(self):
        text = open(os.path.join(HEADERS, "duet.h")).read()
        self.assertIn(f"#define DUET_MAX_SPEC_TOKENS {_lib.MAX_SPEC_TOKENS}", text)
        text = open(os.path.join(HEADERS, "tokenizer.h")).read()
        self.assertIn(f"#define DUET_TOKENIZER_MAX_EOS {_lib.TOKENIZER_MAX_EOS}", text)

    def test_the_library_names_every_status(self):
        lib = _lib.lib()
        for code in _lib.STATUS_NAMES:
            self.assertNotIn(b"unknown", lib.duet_status_str(code))
        self.assertIn(b"unknown", lib.duet_status_str(-99))

    def test_unknown_field_names_are_not_found(self):
        lib = _lib.lib()
        req = c_void_p()
        self.assertEqual(lib.duet_request_create(ctypes.byref(req)), 0)
        try:
            self.assertEqual(lib.duet_request_set_int(req, b"max_tokens", 5), 0)
            self.assertEqual(lib.duet_request_set_int(req, b"no_such_field", 5), -6)
            self.assertEqual(lib.duet_request_set_float(req, b"max_tokens", 5.0), -6)
            self.assertEqual(lib.duet_request_set_int(req, b"max_tokens", -1), -1)
            self.assertEqual(lib.duet_request_set_int(req, b"n", 2**32), -1)
            self.assertEqual(lib.duet_request_set_float(req, b"temperature", 1e39), -1)
            self.assertEqual(lib.duet_request_set_tokens(req, b"prompt", None, 0), 0)
            self.assertEqual(lib.duet_request_set_tokens(req, b"bogus", None, 0), -6)
        finally:
            lib.duet_request_destroy(req)
        self.assertIsNone(lib.duet_engine_metric_name(10**6))
        self.assertEqual(lib.duet_engine_metric_name(0), b"steps")

    def test_version(self):
        self.assertRegex(duet.__version__, r"^\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
