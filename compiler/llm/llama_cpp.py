"""llama.cpp (PyPI llama-cpp-python) on the same GGUF: the peer our decoder is checked against and raced.

The same interface as our Decoder where the two are compared: reset(), forward(tokens) -> logits of
the last token, so both run identical token sequences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


KV_TYPES = {"f32": 0, "f16": 1}  # enum ggml_type


class LlamaCppPeer:
    def __init__(self, gguf: Path, *, threads: int, max_context: int = 2048, kv_cache: str = "f16"):
        """kv_cache: "f16" (llama.cpp's default) or "f32", the precision of our decoder's cache: its
        fp16 rounding of K and V alone moves SmolLM2's logits by up to ~1.3."""
        if kv_cache not in KV_TYPES:
            raise ValueError(f"kv_cache must be one of {sorted(KV_TYPES)}, got {kv_cache!r}")
        try:
            import llama_cpp
        except ImportError:
            raise ValueError("llama-cpp-python is not installed (it is in the project's `bench` extra)") from None
        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=max_context,
                                   n_batch=max_context, verbose=False, type_k=KV_TYPES[kv_cache],
                                   type_v=KV_TYPES[kv_cache])
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
