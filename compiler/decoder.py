"""A llama decoder on our built kernels: GGUF weights packed once, a KV cache, logits per step.

Every projection and attention goes through the library's kernels; the elementwise glue (embedding
rows, RMSNorm, SiLU x up, residual adds) is numpy in float32. `profile` accumulates wall time per
kernel role, plus "numpy" for the glue, so callers can say where the time goes.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from compiler import gguf_kernels
from compiler.gguf_file import GGUFModel
from compiler.loader import Library


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    scale = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(eps))
    return (x * scale.astype(np.float32)) * weight


def silu_mul(gate_up: np.ndarray, ffn: int) -> np.ndarray:
    gate, up = gate_up[:, :ffn], gate_up[:, ffn:]
    return gate / (1.0 + np.exp(-gate)) * up


class Decoder:
    def __init__(self, model: GGUFModel, library: Library, *, max_context: int = 4096):
        self.model, self.shape = model, model.shape
        self.specs = gguf_kernels.kernel_specs(model)
        missing = [s.name for s in self.specs.values() if s.name not in library.kernels]
        if missing:
            raise ValueError(f"library {library.directory} lacks kernels this model needs: {', '.join(missing)}")
        self.kernels = {role: library[spec.name] for role, spec in self.specs.items()}
        self.eps = model.rms_eps
        self.max_context = max_context
        m = self.shape
        self.layers = []
        for layer in range(m.layers):
            packed = {role: self.kernels[role].pack(**gguf_kernels.logical_weights(model, role, layer))
                      for role in gguf_kernels.GEMM_ROLES}
            packed["attn_norm"] = model.float_tensor(f"blk.{layer}.attn_norm.weight")
            packed["ffn_norm"] = model.float_tensor(f"blk.{layer}.ffn_norm.weight")
            self.layers.append(packed)
        self.head = self.kernels["head"].pack(**gguf_kernels.logical_weights(model, "head", None))
        self.output_norm = model.float_tensor("output_norm.weight")
        self.profile: dict[str, float] = defaultdict(float)
        self.reset()

    @property
    def resident_weight_bytes(self) -> int:
        arrays = [a for layer in self.layers for packed in layer.values()
                  for a in (packed.values() if isinstance(packed, dict) else [packed])]
        return sum(a.nbytes for a in [*arrays, *self.head.values(), self.output_norm])

    def reset(self) -> None:
        """Forget the context (empty KV cache)."""
        m = self.shape
        self.length = 0
        self.k_cache = np.zeros((m.layers, m.kv_heads, self.max_context, m.head_dim), np.float32)
        self.v_cache = np.zeros_like(self.k_cache)

    def _run(self, role: str, **inputs):
        start = time.perf_counter()
        out = self.kernels[role](**inputs)
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
        glue = time.perf_counter()
        h = rms_norm(x[-1:], self.output_norm, self.eps)
        self.profile["numpy"] += time.perf_counter() - glue
        return self._run("head", x=h, **self.head)[0]

    def _layers(self, x: np.ndarray) -> np.ndarray:
        m = self.shape
        t, start = x.shape[0], self.length
        positions = np.arange(start, start + t, dtype=np.int32)
        end = start + t
        for index, w in enumerate(self.layers):
            glue = time.perf_counter()
            h = rms_norm(x, w["attn_norm"], self.eps)
            self.profile["numpy"] += time.perf_counter() - glue
            q, k, v = self._run("qkv", x=h, positions=positions, **w["qkv"])
            glue = time.perf_counter()
            self.k_cache[index, :, start:end] = k
            self.v_cache[index, :, start:end] = v
            if start == 0:
                self.profile["numpy"] += time.perf_counter() - glue
                o = self._run("attention_prefill", q=q, k=k, v=v)  # [hq, T, d]
            else:
                keys = np.ascontiguousarray(self.k_cache[index, :, :end])
                values = np.ascontiguousarray(self.v_cache[index, :, :end])
                self.profile["numpy"] += time.perf_counter() - glue
                o = self._run("attention_decode", q=q[:, 0], k_cache=keys, v_cache=values)[:, None]
            glue = time.perf_counter()
            attn = np.ascontiguousarray(o.transpose(1, 0, 2)).reshape(t, m.heads * m.head_dim)
            self.profile["numpy"] += time.perf_counter() - glue
            x = x + self._run("o", x=attn, **w["o"])
            glue = time.perf_counter()
            h = rms_norm(x, w["ffn_norm"], self.eps)
            self.profile["numpy"] += time.perf_counter() - glue
            gate_up = self._run("gate_up", x=h, **w["gate_up"])
            glue = time.perf_counter()
            act = silu_mul(gate_up, m.ffn)
            self.profile["numpy"] += time.perf_counter() - glue
            x = x + self._run("down", x=act, **w["down"])
        self.length = end
        return x
