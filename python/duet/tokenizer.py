"""The tokenizer of a model folder (tokenizer.json and its companions) through libduet: the part
of Hugging Face's tokenizer interface that vLLM scripts use (docs/python.md)."""

import ctypes
import json
import os
import threading

from ctypes import c_int32, c_size_t, c_void_p

from . import _lib


def _take_string(lib, ptr, length):
    """The bytes libduet allocated at ptr (length bytes), freed; as str."""
    try:
        return ctypes.string_at(ptr, length).decode("utf-8")
    finally:
        lib.duet_tokenizer_free(ptr)


class Tokenizer:
    """A loaded tokenizer. Thread-safe (libduet's tokenizer is). Released when the last
    reference goes; the LLM that handed it out may be closed first."""

    def __init__(self, folder):
        self._lib = _lib.lib()
        self._h = None
        handle = c_void_p()
        err = ctypes.create_string_buffer(_lib.ERR_SIZE)
        st = self._lib.duet_tokenizer_load(os.fsencode(folder), ctypes.byref(handle), err,
                                           _lib.ERR_SIZE)
        if st:
            raise _lib.error(st, err.value)
        self._h = handle.value
        self.name_or_path = str(folder)
        self._token_text = {}
        self._token_lock = threading.Lock()
        eos = (c_int32 * _lib.TOKENIZER_MAX_EOS)()
        n = self._lib.duet_tokenizer_eos_ids(self._h, eos, _lib.TOKENIZER_MAX_EOS)
        self.eos_token_ids = [eos[i] for i in range(min(n, _lib.TOKENIZER_MAX_EOS))]
        bos = self._lib.duet_tokenizer_bos_id(self._h)
        self.bos_token_id = bos if bos >= 0 else None
        self.eos_token_id = self.eos_token_ids[0] if self.eos_token_ids else None

    def __del__(self):
        if getattr(self, "_h", None):
            self._lib.duet_tokenizer_destroy(self._h)
            self._h = None

    @property
    def handle(self):
        return self._h

    @property
    def vocab_size(self):
        """One past the largest id (model vocabulary and added tokens)."""
        return self._lib.duet_tokenizer_vocab_size(self._h)

    def __len__(self):
        return self.vocab_size

    @property
    def chat_template(self):
        t = self._lib.duet_tokenizer_chat_template(self._h)
        return None if t is None else t.decode("utf-8")

    def encode(self, text, add_special_tokens=True):
        """Token ids of text; add_special_tokens applies the post-processor (BOS), as Hugging
        Face's encode."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        data = text.encode("utf-8", "surrogatepass")
        ids = c_void_p()
        n = c_size_t()
        st = self._lib.duet_tokenizer_encode(self._h, data, len(data), bool(add_special_tokens),
                                             ctypes.byref(ids), ctypes.byref(n))
        if st:
            raise _lib.error(st, f"cannot encode the text: {_lib.STATUS_NAMES.get(st, st)}")
        if not ids.value:
            return []
        try:
            return list((c_int32 * n.value).from_address(ids.value))
        finally:
            self._lib.duet_tokenizer_free(ids)

    def __call__(self, text, add_special_tokens=True):
        """{"input_ids": encode(text)}, or a list of them for a list of texts."""
        if isinstance(text, (list, tuple)):
            return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, token_ids, skip_special_tokens=False):
        """The text of token_ids through the tokenizer's decoder; skip_special_tokens drops
        special tokens (Hugging Face's default is False)."""
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        ids = _lib.int32_array(token_ids, "token_ids")
        text = c_void_p()
        n = c_size_t()
        st = self._lib.duet_tokenizer_decode(self._h, ids, len(ids), bool(skip_special_tokens),
                                             ctypes.byref(text), ctypes.byref(n))
        if st:
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            raise _lib.error(st, f"cannot decode: token id {bad[0]} is outside the vocabulary "
                             f"[0, {self.vocab_size})" if bad else "cannot decode the ids")
        return _take_string(self._lib, text, n.value)

    def batch_decode(self, sequences, skip_special_tokens=False):
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def token_text(self, token_id):
        """The text of one token alone (as vLLM's Logprob.decoded_token), cached."""
        with self._token_lock:
            text = self._token_text.get(token_id)
        if text is None:
            text = self.decode([token_id]) if 0 <= token_id < self.vocab_size else ""
            with self._token_lock:
                self._token_text[token_id] = text
        return text

    def convert_ids_to_tokens(self, ids):
        single = isinstance(ids, int)
        out = []
        for i in ([ids] if single else ids):
            if isinstance(i, bool) or not isinstance(i, int) or not -2**31 <= i < 2**31:
                raise TypeError(f"ids must be ints, got {i!r}")
            n = c_size_t()
            p = self._lib.duet_tokenizer_id_to_token(self._h, i, ctypes.byref(n))
            out.append(None if not p else ctypes.string_at(p, n.value).decode("utf-8", "replace"))
        return out[0] if single else out

    def convert_tokens_to_ids(self, tokens):
        single = isinstance(tokens, str)
        out = []
        for t in ([tokens] if single else tokens):
            data = t.encode("utf-8", "surrogatepass")
            i = self._lib.duet_tokenizer_token_to_id(self._h, data, len(data))
            out.append(None if i < 0 else i)
        return out[0] if single else out

    def is_special(self, token_id):
        return bool(self._lib.duet_tokenizer_is_special(self._h, token_id))

    @property
    def all_special_ids(self):
        return [i for i in range(self.vocab_size) if self.is_special(i)]

    def render_chat(self, conversation, add_generation_prompt=True, chat_template=None,
                    chat_template_kwargs=None):
        """The prompt text of conversation (a list of {"role", "content", ...} messages)."""
        if not isinstance(conversation, (list, tuple)):
            raise TypeError("conversation must be a list of messages, got "
                            f"{type(conversation).__name__}")
        messages = json.dumps(list(conversation), ensure_ascii=False).encode("utf-8",
                                                                             "surrogatepass")
        kwargs = None
        if chat_template_kwargs:
            if not isinstance(chat_template_kwargs, dict):
                raise TypeError("chat_template_kwargs must be a dict")
            kwargs = json.dumps(chat_template_kwargs, ensure_ascii=False).encode("utf-8")
        template = None if chat_template is None else str(chat_template).encode("utf-8")
        prompt = c_void_p()
        n = c_size_t()
        err = ctypes.create_string_buffer(_lib.ERR_SIZE)
        st = self._lib.duet_tokenizer_render_chat(self._h, messages, len(messages),
                                                  bool(add_generation_prompt), template, kwargs,
                                                  ctypes.byref(prompt), ctypes.byref(n), err,
                                                  _lib.ERR_SIZE)
        if st:
            raise _lib.error(st, err.value)
        return _take_string(self._lib, prompt, n.value)

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt=False, continue_final_message=False,
                            tokenize=True, **kwargs):
        """transformers' apply_chat_template: the prompt text (tokenize=False) or its ids,
        encoded without special tokens (the template writes them)."""
        if continue_final_message:
            raise ValueError("continue_final_message is not supported by duet")
        extra = dict(kwargs)
        for key in ("padding", "truncation", "max_length", "return_tensors", "return_dict"):
            if extra.pop(key, None):
                raise ValueError(f"apply_chat_template: {key} is not supported by duet")
        if tools is not None:
            extra["tools"] = tools
        if documents is not None:
            extra["documents"] = documents
        text = self.render_chat(conversation, add_generation_prompt, chat_template, extra)
        return self.encode(text, add_special_tokens=False) if tokenize else text


class Detokenizer:
    """Incremental decoding of one sequence: push() returns the text that became final."""

    def __init__(self, tokenizer, skip_special_tokens=True):
        self._tok = tokenizer            # keeps the C tokenizer alive
        self._lib = tokenizer._lib
        self._h = None
        h = c_void_p()
        st = self._lib.duet_detok_create(tokenizer.handle, bool(skip_special_tokens),
                                         ctypes.byref(h))
        if st:
            raise _lib.error(st, "cannot create a detokenizer")
        self._h = h.value

    def __del__(self):
        if getattr(self, "_h", None):
            self._lib.duet_detok_destroy(self._h)
            self._h = None

    def _call(self, fn, *args):
        """fn(handle, *args, &text, &n): the text it made final."""
        text = c_void_p()
        n = c_size_t()
        st = fn(self._h, *args, ctypes.byref(text), ctypes.byref(n))
        if st:
            raise _lib.error(st, "cannot detokenize")
        return ctypes.string_at(text, n.value).decode("utf-8", "replace") if n.value else ""

    def push(self, token_id):
        return self._call(self._lib.duet_detok_push, token_id)

    def finish(self):
        return self._call(self._lib.duet_detok_finish)
