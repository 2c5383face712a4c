"""llama.cpp (PyPI llama-cpp-python) on the same GGUF: the peer our decoder is checked against and raced.

The same interface as our Decoder where the two are compared: reset(), forward(tokens) -> logits of
the last token, so both run identical token sequences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class LlamaCppPeer:
    def __init__(self, gguf: Path, *, threads: int, max_context: int = 2048):
        try:
            import llama_cpp
        except ImportError:
            raise ValueError("llama-cpp-python is not installed (it is in the project's `bench` extra)") from None
        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=max_context,
                                   n_batch=max_context, verbose=False)
        self.vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def reset(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()  # the KV cache, not only the token count

    def forward(self, tokens) -> np.ndarray:
        self.llm.eval([int(t) for t in tokens])
        pointer = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,)).copy()
