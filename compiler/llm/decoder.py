"""A llama decoder on our built kernels: GGUF weights packed once, a KV cache, logits per step.

Every projection and attention goes through the library's kernels, which also do the elementwise
steps (RMSNorms, SiLU x up, residual adds: see model_kernels.kernel_specs); numpy only looks up
embedding rows, appends to the KV cache and moves heads. `profile` accumulates wall time per kernel
role, plus "numpy" for that glue, so callers can say where the time goes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np

from compiler.llm import model_kernels
from compiler.llm.gguf import GGUFModel
from compiler.models import ModelShape
from compiler.runtime import Library


def kv_cache_bytes(shape: ModelShape, max_context: int) -> int:
    """Bytes of the float32 K and V caches for max_context tokens (what reset() allocates)."""
    return 2 * shape.layers * shape.kv_heads * max_context * shape.head_dim * 4


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_context(shape: ModelShape, max_context: int) -> None:
    """Refuse a context length whose KV cache cannot fit in this machine's memory, with the figure,
    before anything is built or allocated (numpy would fail, or the machine swap, much later)."""
    if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
        raise ValueError(f"max_context must be a positive integer, got {max_context!r}")
    need, have = kv_cache_bytes(shape, max_context), physical_memory()
    if have is not None and need > have:
        raise ValueError(f"a KV cache of max_context={max_context} tokens needs {need / 2**30:,.1f} GiB "
                         f"({shape.layers} layers x K and V x {shape.kv_heads} KV heads x {shape.head_dim} floats "
                         f"per token) but this machine has {have / 2**30:,.1f} GiB of memory: lower --max-context")


class Decoder:
    def __init__(self, model: GGUFModel, library: Library, *, max_context: int = 4096, activations: str = "f32"):
        """activations: "f32", or "q8" (llama.cpp's 8-bit activation blocks, model_kernels.kernel_specs)."""
        check_context(model.shape, max_context)
        self.model, self.shape = model, model.shape
        self.activations = activations
        self.specs = model_kernels.kernel_specs(model, activations, library.target["isa"])
        missing = [s.name for s in self.specs.values() if s.name not in library.kernels]
        if missing:
            raise ValueError(f"library {library.directory} lacks kernels this model needs with {activations} "
                             f"activations: {', '.join(missing)}")
        self.kernels = {role: library[spec.name] for role, spec in self.specs.items()}
        self.library = library
        self.max_context = max_context
        m = self.shape
        self.layers = []
        for layer in range(m.layers):
            self.layers.append({role: self._bind(role, layer) for role in model_kernels.GEMM_ROLES})
        self.head = self._bind("head", None)
        self.profile: dict[str, float] = defaultdict(float)
        self.reset()

    def _bind(self, role: str, layer: int | None):
        kernel = self.kernels[role]
        return kernel.bind(**kernel.pack(**model_kernels.logical_weights(self.model, role, layer)))

    @property
    def resident_weight_bytes(self) -> int:
        return sum(bound.nbytes for bound in [*(b for layer in self.layers for b in layer.values()), self.head])

    def reset(self) -> None:
        """Forget the context (empty KV cache). The cache lives where the kernels run (device memory
        on Vulkan), so a decode step sends the new token's K and V there, not the whole cache."""
        m = self.shape
        self.length = 0
        shape = (m.layers, m.kv_heads, self.max_context, m.head_dim)
        self.k_cache = self.library.device_array(shape, np.float32)
        self.v_cache = self.library.device_array(shape, np.float32)

    def _run(self, role: str, kernel, **inputs):
        start = time.perf_counter()
        out = kernel(**inputs)
        self.profile[role] += time.perf_counter() - start
        return out

    def forward(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """Feed tokens after the current context; returns float32 logits [vocab] of the last one.
        A first call runs prefill attention over all of them; later calls decode one token at a time."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("forward takes a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= self.model.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.model.vocab_size})")
        if self.length + tokens.size > self.max_context:
            raise ValueError(f"context of {self.length + tokens.size} tokens exceeds max_context={self.max_context}")
        if self.length > 0 and tokens.size > 1:
            logits = None
            for token in tokens:  # attention kernels cover a fresh prompt or one new token
                logits = self.forward(token[None])
            return logits
        glue = time.perf_counter()
        x = self.model.embedding_rows(tokens)
        self.profile["numpy"] += time.perf_counter() - glue
        x = self._layers(x)
        return self._run("head", self.head, x=x[-1:])[0]

    def _layers(self, x: np.ndarray) -> np.ndarray:
        m = self.shape
        t, start = x.shape[0], self.length
        positions = np.arange(start, start + t, dtype=np.int32)
        end = start + t
        for index, w in enumerate(self.layers):
            q, k, v = self._run("qkv", w["qkv"], x=x, positions=positions)
            glue = time.perf_counter()
            self.k_cache[index, :, start:end] = k
            self.v_cache[index, :, start:end] = v
            self.profile["numpy"] += time.perf_counter() - glue
            if start == 0:
                o = self._run("attention_prefill", self.kernels["attention_prefill"], q=q, k=k, v=v)  # [hq, T, d]
            else:
                o = self._run("attention_decode", self.kernels["attention_decode"], q=q[:, 0],  # views, no copies
                              k_cache=self.k_cache[index, :, :end], v_cache=self.v_cache[index, :, :end])[:, None]
            glue = time.perf_counter()
            attn = np.ascontiguousarray(o.transpose(1, 0, 2)).reshape(t, m.heads * m.head_dim)
            self.profile["numpy"] += time.perf_counter() - glue
            x = self._run("o", w["o"], x=attn, residual=x)
            gate_up = self._run("gate_up", w["gate_up"], x=x)
            x = self._run("down", w["down"], x=gate_up, residual=x)
        self.length = end
        return x
