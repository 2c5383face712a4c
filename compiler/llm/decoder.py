"""A llama decoder on our built kernels: GGUF weights packed once, a KV cache, logits per step.
Any number of tokens may follow the cached context (a chat's next turn, a long prompt in chunks):
they are prefilled over it; a single token goes through the prepared decode step.

Every projection and attention goes through the library's kernels, which also do the elementwise
steps (RMSNorms, SiLU x up, residual adds: see model_kernels.kernel_specs); numpy only looks up
embedding rows, appends to the KV cache and moves heads. `profile` accumulates wall time per kernel
role, plus "numpy" for that glue, so callers can say where the time goes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from types import SimpleNamespace

import numpy as np

from compiler.llm import model_kernels
from compiler.llm.gguf import GGUFModel
from compiler.models import ModelShape
from compiler.runtime import Library, empty


def kv_cache_bytes(shape: ModelShape, max_context: int, kv_cache: str = "f32") -> int:
    """Bytes of the K and V caches for max_context tokens (what the decoder allocates): float32
    rows, or int8 rows with a float32 scale each."""
    row = shape.head_dim * 4 if kv_cache == "f32" else shape.head_dim + 4
    return 2 * shape.layers * shape.kv_heads * max_context * row


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_context(shape: ModelShape, max_context: int, kv_cache: str = "f32") -> None:
    """Refuse a context length whose KV cache cannot fit in this machine's memory, with the figure,
    before anything is built or allocated (numpy would fail, or the machine swap, much later)."""
    if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
        raise ValueError(f"max_context must be a positive integer, got {max_context!r}")
    need, have = kv_cache_bytes(shape, max_context, kv_cache), physical_memory()
    if have is not None and need > have:
        row = f"{shape.head_dim} floats" if kv_cache == "f32" else f"{shape.head_dim} bytes and a scale"
        raise ValueError(f"a KV cache of max_context={max_context} tokens needs {need / 2**30:,.1f} GiB "
                         f"({shape.layers} layers x K and V x {shape.kv_heads} KV heads x {row} "
                         f"per token) but this machine has {have / 2**30:,.1f} GiB of memory: lower --max-context")


class Decoder:
    def __init__(self, model: GGUFModel, library: Library, *, max_context: int = 4096, activations: str = "f32",
                 prefill_chunk: int | None = None, kv_cache: str = "f32"):
        """activations: "f32", or "q8" (llama.cpp's 8-bit activation blocks, model_kernels.kernel_specs).
        prefill_chunk: prefill long inputs this many tokens at a time (None: all at once), which
        bounds the activations' memory; the result is the same to float rounding.
        kv_cache: "f32", or "int8" (each K and V row rounded to int8 with its own scale as it is
        appended: a quarter of the bytes, read by both attention kernels as they are)."""
        check_context(model.shape, max_context, kv_cache)
        if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                          or prefill_chunk < 1):
            raise ValueError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
        self.prefill_chunk = prefill_chunk
        self.model, self.shape = model, model.shape
        self.activations, self.kv_cache = activations, kv_cache
        self.plan = model_kernels.kernel_plan(model, activations, library.target["isa"], kv_cache,
                                               library.target.get("int8_dot", "none"))
        missing = [s.name for s in self.plan.specs if s.name not in library.kernels]
        if missing:
            raise ValueError(f"library {library.directory} lacks kernels this model needs with {activations} "
                             f"activations and a {kv_cache} KV cache: {', '.join(missing)}")
        self.kernels = {role: library[spec.name] for role, spec in self.plan.shared.items()}
        self.library = library
        self.max_context = max_context
        # per layer: role -> its kernel bound to the layer's weights (roles qkv, o, gate_up, down, and
        # v where the layer's V weights differ in type from Q's and K's)
        self.layers = [{role: self._bind(library[spec.name], role, layer) for role, spec in specs.items()}
                       for layer, specs in enumerate(self.plan.layers)]
        self.head = self._bind(self.kernels["head"], "head", None)
        self.profile: dict[str, float] = defaultdict(float)
        self._step = None  # the decode step's prepared calls, made on the first decode step
        self.reset()

    def _bind(self, kernel, role: str, layer: int | None):
        return kernel.bind(**kernel.pack(**model_kernels.logical_weights(self.model, role, layer)))

    @property
    def resident_weight_bytes(self) -> int:
        return sum(bound.nbytes for bound in [*(b for layer in self.layers for b in layer.values()), self.head])

    def reset(self) -> None:
        """Forget the context. The KV cache is allocated once, and written through (zeros) then, as
        llama.cpp clears its own: kernels read only its first `length` rows, but a cache first
        touched by a prompt would pay its page faults in that prompt's time to first token (~200 ms
        for a 2048-token SmolLM2 cache on this VM). It lives where the kernels run (device memory
        on Vulkan), so a decode step sends the new token's K and V there, not the whole cache."""
        self.length = 0
        if not hasattr(self, "caches"):
            m = self.shape
            rows = (m.layers, m.kv_heads, self.max_context)
            dtype = np.float32 if self.kv_cache == "f32" else np.int8
            names = ("k_cache", "v_cache") + (("k_scale", "v_scale") if self.kv_cache == "int8" else ())
            self.caches = {name: self.library.device_array(rows + (m.head_dim,) if name.endswith("cache") else rows,
                                                           dtype if name.endswith("cache") else np.float32)
                           for name in names}
            for cache in self.caches.values():
                cache[...] = 0

    def _rounded(self, k: np.ndarray, v: np.ndarray):
        """For an int8 cache, the new rows [Hkv, T, D] rounded by the kv_quant kernel: (k int8,
        k scales, v int8, v scales); None for a float32 cache."""
        if self.kv_cache == "f32":
            return None
        hkv, t, d = k.shape
        quantise = self.kernels["kv_quant"]
        return (*self._run("kv_quant", quantise, x=k.reshape(hkv * t, d)),
                *self._run("kv_quant", quantise, x=v.reshape(hkv * t, d)))

    def _append(self, index: int, start: int, end: int, k: np.ndarray, v: np.ndarray, rounded) -> None:
        """The new rows' K and V [Hkv, T, D] into layer `index`'s cache at positions start..end-1:
        as they are, or (int8 cache) as `rounded` (see _rounded)."""
        if rounded is None:
            self.caches["k_cache"][index, :, start:end] = k
            self.caches["v_cache"][index, :, start:end] = v
            return
        hkv, t, d = k.shape
        kq, ks, vq, vs = rounded
        self.caches["k_cache"][index, :, start:end] = kq.reshape(hkv, t, d)
        self.caches["k_scale"][index, :, start:end] = ks.reshape(hkv, t)
        self.caches["v_cache"][index, :, start:end] = vq.reshape(hkv, t, d)
        self.caches["v_scale"][index, :, start:end] = vs.reshape(hkv, t)

    def _cache_views(self, index: int, end: int) -> dict:
        """Layer `index`'s cache arguments for the attention kernels: views of its first `end` rows."""
        return {name: cache[index, :, :end] for name, cache in self.caches.items()}

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens of the context (the cache rows after them are
        overwritten by what comes next): a conversation whose new rendering shares only a prefix
        with what was fed re-feeds from there, not from the start."""
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self.length:
            raise ValueError(f"truncate: length must be an integer in [0, {self.length}], got {length!r}")
        self.length = length

    def _run(self, role: str, kernel, **inputs):
        """kernel(**inputs) (a prepared call takes none), its wall time added to the role's."""
        start = time.perf_counter()
        out = kernel(**inputs)
        self.profile[role] += time.perf_counter() - start
        return out

    def forward(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """Feed tokens after the current context; returns float32 logits [vocab] of the last one.
        Several tokens are prefilled together over the cached context (in chunks of at most
        `prefill_chunk` when set); one token takes the decode step."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("forward takes a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= self.model.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.model.vocab_size})")
        if self.length + tokens.size > self.max_context:
            raise ValueError(f"context of {self.length + tokens.size} tokens exceeds max_context={self.max_context}")
        if tokens.size == 1 and self.length > 0:
            return self._decode(int(tokens[0]))
        chunk = self.prefill_chunk or tokens.size
        for begin in range(0, tokens.size, chunk):
            glue = time.perf_counter()
            x = self.model.embedding_rows(tokens[begin:begin + chunk])
            self.profile["numpy"] += time.perf_counter() - glue
            x = self._layers(x)
        return self._run("head", self.head, x=x[-1:])[0]

    def _decode_step(self) -> "DecodeStep":
        if self._step is None:
            self._step = DecodeStep(self)
        return self._step

    def _decode(self, token: int) -> np.ndarray:
        """One token after the context, through the prepared decode step."""
        step, start = self._decode_step(), self.length
        end = start + 1
        glue = time.perf_counter()
        step.x[...] = self.model.embedding_rows(np.array([token]))
        step.positions[0] = start
        self.profile["numpy"] += time.perf_counter() - glue
        attention = self.kernels["attention_decode"]
        for index, layer in enumerate(step.layers):
            self._run("qkv", layer.qkv)
            if layer.v_proj:
                self._run("v", layer.v_proj)
            rounded = None
            if layer.kv_quant:
                for call in layer.kv_quant:
                    self._run("kv_quant", call)
                rounded = (*layer.kv_quant[0].outputs, *layer.kv_quant[1].outputs)
            glue = time.perf_counter()
            self._append(index, start, end, layer.k, layer.v, rounded)
            self.profile["numpy"] += time.perf_counter() - glue
            o = self._run("attention_decode", attention, q=layer.q[:, 0],  # views of the caches, no copies
                          **self._cache_views(index, end))
            glue = time.perf_counter()
            layer.attention[...] = o.reshape(layer.attention.shape)  # [hq, d] is [1, hq * d] for one token
            self.profile["numpy"] += time.perf_counter() - glue
            self._run("o", layer.o)
            self._run("gate_up", layer.gate_up)
            self._run("down", layer.down)
        self.length = end
        self._run("head", step.head)
        return step.head.outputs[0][0].copy()

    def _layers(self, x: np.ndarray) -> np.ndarray:
        """The layers of T new tokens after the cached context: prefill attention over all of it."""
        m, t, start = self.shape, x.shape[0], self.length
        end = start + t
        positions = np.arange(start, end, dtype=np.int32)
        for index, w in enumerate(self.layers):
            q, k, *v = self._run("qkv", w["qkv"], x=x, positions=positions)
            v = v[0] if v else self._run("v", w["v"], x=x).reshape(t, m.kv_heads, m.head_dim).transpose(1, 0, 2)
            rounded = self._rounded(k, v)
            glue = time.perf_counter()
            self._append(index, start, end, k, v, rounded)
            self.profile["numpy"] += time.perf_counter() - glue
            o = self._run("attention_prefill", self.kernels["attention_prefill"], q=q,  # [hq, T, d]
                          **self._cache_views(index, end))
            glue = time.perf_counter()
            attn = np.ascontiguousarray(o.transpose(1, 0, 2)).reshape(t, m.heads * m.head_dim)
            self.profile["numpy"] += time.perf_counter() - glue
            x = self._run("o", w["o"], x=attn, residual=x)
            gate_up = self._run("gate_up", w["gate_up"], x=x)
            x = self._run("down", w["down"], x=gate_up, residual=x)
        self.length = end
        return x


class DecodeStep:
    """A decode step's GEMM calls prepared once (BoundKernel.prepare) on fixed buffers: each layer
    reads the previous one's output buffer, so a token costs the kernels and ~1 us of Python per
    call instead of ~10 us of argument checks, conversions and output allocations. Attention reads
    a cache view that grows each step: it stays a plain call."""

    def __init__(self, decoder: Decoder):
        m = decoder.shape
        self.x = empty((1, m.hidden), np.float32)
        self.positions = empty((1,), np.int32)
        self.layers, x = [], self.x
        quantise = decoder.kernels["kv_quant"].bind() if "kv_quant" in decoder.kernels else None
        for weights in decoder.layers:
            layer = SimpleNamespace(attention=empty((1, m.heads * m.head_dim), np.float32))
            layer.qkv = weights["qkv"].prepare(x=x, positions=self.positions)
            layer.v_proj = weights["v"].prepare(x=x) if "v" in weights else None  # V of another type than Q, K
            layer.q, layer.k, *v = layer.qkv.outputs
            layer.v = v[0] if v else layer.v_proj.outputs[0].reshape(m.kv_heads, 1, m.head_dim)  # [1, Hkv D] as [Hkv, 1, D]
            # an int8 cache: the new K and V rows rounded (one scale per head's row) before they are appended
            layer.kv_quant = [quantise.prepare(x=row.reshape(m.kv_heads, m.head_dim)) for row in (layer.k, layer.v)] \
                if quantise else []
            layer.o = weights["o"].prepare(x=layer.attention, residual=x)
            layer.gate_up = weights["gate_up"].prepare(x=layer.o.outputs[0])
            layer.down = weights["down"].prepare(x=layer.gate_up.outputs[0], residual=layer.o.outputs[0])
            x = layer.down.outputs[0]
            self.layers.append(layer)
        self.head = decoder.head.prepare(x=x)
