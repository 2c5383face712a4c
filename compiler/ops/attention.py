"""Causal grouped-query attention: prefill (flash-style) and decode (flash-decoding, split over L).

Prefill takes S new query rows at positions P..P+S-1 against the cache's L = P + S keys (all of the
prefix, causal within the new rows): P = 0 is a fresh prompt, P > 0 a chunk of a long prompt or a
later chat turn over the same cache. Both read the caches as views of longer ones (`strided`).

Online softmax cannot be written as a tensor expression, so the kernels are TensorIR functions:
attention_cpu.py (SIMD) and attention_gpu.py (thread-bound). This module is the ops' interface:
arguments, the numpy reference, inputs for tests and benchmarks.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ops.base import Arg, OpDef, Option, check_divisible
from compiler.specs import KernelSpec

KV_OPTION = {"kv": Option("f32", ("f32", "int8"), tag=lambda kv: "kv8" if kv == "int8" else "")}


def cache_arguments(spec: KernelSpec, key_doc: str) -> list[Arg]:
    """The K and V cache arguments [Hkv, L, D] (views of longer caches allowed); with kv="int8",
    int8 rows and a float32 scale per (head, position) row [Hkv, L] after them."""
    hkv, d = spec.dim("hkv"), spec.dim("d")
    if spec.opt("kv") == "int8":
        return [Arg("k_cache", (hkv, "L", d), "int8", "input", strided=True, doc=key_doc + "; int8, x k_scale"),
                Arg("v_cache", (hkv, "L", d), "int8", "input", strided=True),
                Arg("k_scale", (hkv, "L"), "float32", "input", strided=True, doc="one scale per cached key row"),
                Arg("v_scale", (hkv, "L"), "float32", "input", strided=True)]
    return [Arg("k_cache", (hkv, "L", d), "float32", "input", strided=True, doc=key_doc),
            Arg("v_cache", (hkv, "L", d), "float32", "input", strided=True)]


def dequantized_caches(k_cache, v_cache, k_scale=None, v_scale=None):
    """The caches as float64 values: int8 rows times their scales (the reference's view)."""
    if k_scale is None:
        return k_cache, v_cache
    return (k_cache.astype(np.float64) * k_scale.astype(np.float64)[..., None],
            v_cache.astype(np.float64) * v_scale.astype(np.float64)[..., None])


def query_dot(spec: KernelSpec, layout) -> str | None:
    """The int8_dot kind this layout computes an int8 cache's scores with (the query rounded to
    int8: ops/attention_cpu.py), None for float scores (float caches, GPUs)."""
    return None if layout.threaded else (layout.query_dot or None)


def rounded_queries(q: np.ndarray) -> np.ndarray:
    """q as the integer-dot kernels see it: each query vector (last axis) rounded to int8 by its
    absolute maximum, in the kernels' float32 steps, back as float64."""
    q = np.asarray(q, np.float32)
    amax = np.abs(q).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    return np.rint(q * inverse).astype(np.float64) * (amax.astype(np.float64) / 127)


def random_caches(spec: KernelSpec, length: int, rng) -> dict[str, np.ndarray]:
    hkv, d = spec.dim("hkv"), spec.dim("d")
    if spec.opt("kv") == "int8":  # rows of a model's magnitude: |k| up to ~2.5
        return {"k_cache": rng.integers(-127, 128, (hkv, length, d), dtype=np.int8),
                "v_cache": rng.integers(-127, 128, (hkv, length, d), dtype=np.int8),
                "k_scale": rng.uniform(0.005, 0.02, (hkv, length)).astype(np.float32),
                "v_scale": rng.uniform(0.005, 0.02, (hkv, length)).astype(np.float32)}
    return {"k_cache": rng.standard_normal((hkv, length, d)).astype(np.float32),
            "v_cache": rng.standard_normal((hkv, length, d)).astype(np.float32)}


class AttentionPrefill(OpDef):
    def __init__(self):
        super().__init__("attention_prefill", ("hq", "hkv", "d"),
                         {"causal": Option(True, (True,), tag=lambda c: ""), **KV_OPTION})

    def validate(self, spec: KernelSpec) -> None:
        check_divisible(self.name, "hq", spec.dim("hq"), spec.dim("hkv"))
        if spec.dim("d") % 2:
            raise ValueError(f"{self.name}: d={spec.dim('d')} must be even")

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        hq, d = spec.dim("hq"), spec.dim("d")
        return [Arg("q", (hq, "S", d), "float32", "input", doc="the new rows' queries (positions L-S..L-1)"),
                *cache_arguments(spec, "keys of positions 0..L-1 (L >= S), the new rows' own last; "
                                       "may be a view of a longer cache"),
                Arg("o", (hq, "S", d), "float32", "output")]

    def dims_at_least(self, spec: KernelSpec) -> dict[str, str]:
        return {"L": "S"}  # the cache holds the new rows

    def build(self, spec: KernelSpec, layout):
        kv8 = spec.opt("kv") == "int8"
        if layout.threaded:  # a GPU layout: thread-bound TensorIR
            from compiler.ops.attention_gpu import prefill_gpu_tir

            return prefill_gpu_tir(spec.dim("hq"), spec.dim("hkv"), spec.dim("d"), layout.kv_tile, layout.threads,
                                   kv8)
        from compiler.ops.attention_cpu import prefill_tir

        return prefill_tir(spec.dim("hq"), spec.dim("hkv"), spec.dim("d"), layout.kv_tile, layout.lanes,
                           layout.q_rows, kv8, layout.keys_in_lanes, query_dot(spec, layout), layout.key_fold)

    def flops(self, spec, sizes):
        s = sizes["S"]  # all of the prefix, and about half of the S x S causal scores
        prefix = sizes.get("L", s) - s
        return 4.0 * spec.dim("hq") * spec.dim("d") * s * (prefix + (s + 1) / 2)

    def reference(self, spec, q, k_cache, v_cache, k_scale=None, v_scale=None):
        k, v = dequantized_caches(k_cache, v_cache, k_scale, v_scale)
        return {"o": attention_reference(q, k, v, causal_offset=k.shape[1] - q.shape[1])}

    def layout_reference(self, spec, layout, q, **caches):
        return self.reference(spec, rounded_queries(q) if query_dot(spec, layout) else q, **caches)

    def random_inputs(self, spec, sizes, rng):
        """sizes: S, and L (default S: a fresh prompt)."""
        s, hq, d = sizes["S"], spec.dim("hq"), spec.dim("d")
        return {"q": rng.standard_normal((hq, s, d)).astype(np.float32),
                **random_caches(spec, sizes.get("L", s), rng)}


class AttentionDecode(OpDef):
    def __init__(self):
        super().__init__("attention_decode", ("hq", "hkv", "d"), dict(KV_OPTION))

    validate = AttentionPrefill.validate

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        hq, d = spec.dim("hq"), spec.dim("d")
        return [Arg("q", (hq, d), "float32", "input"),
                *cache_arguments(spec, "keys of positions 0..L-1; may be a view of a longer cache [Hkv, capacity, D]"),
                Arg("o", (hq, d), "float32", "output")]

    def build(self, spec: KernelSpec, layout):
        kv8 = spec.opt("kv") == "int8"
        if layout.threaded:
            from compiler.ops.attention_gpu import decode_gpu_tir

            return decode_gpu_tir(spec.dim("hq"), spec.dim("hkv"), spec.dim("d"), layout.split_len, layout.threads,
                                  kv8)
        from compiler.ops.attention_cpu import decode_tir

        return decode_tir(spec.dim("hq"), spec.dim("hkv"), spec.dim("d"), layout.kv_tile, layout.lanes,
                          layout.split_len, kv8, layout.keys_in_lanes, query_dot(spec, layout), layout.key_fold)

    def flops(self, spec, sizes):
        return 4.0 * spec.dim("hq") * spec.dim("d") * sizes["L"]

    def reference(self, spec, q, k_cache, v_cache, k_scale=None, v_scale=None):
        k, v = dequantized_caches(k_cache, v_cache, k_scale, v_scale)
        o = attention_reference(q[:, None, :], k, v, causal_offset=k.shape[1] - 1)
        return {"o": o[:, 0, :]}

    layout_reference = AttentionPrefill.layout_reference

    def random_inputs(self, spec, sizes, rng):
        hq, d = spec.dim("hq"), spec.dim("d")
        return {"q": rng.standard_normal((hq, d)).astype(np.float32), **random_caches(spec, sizes["L"], rng)}


def attention_reference(q, k, v, causal_offset: int) -> np.ndarray:
    """softmax(q k^T / sqrt(D)) v in float64; query row i sees keys j <= i + causal_offset."""
    hq, s, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    kk = np.repeat(k.astype(np.float64), group, axis=0)
    vv = np.repeat(v.astype(np.float64), group, axis=0)
    scores = q.astype(np.float64) @ kk.transpose(0, 2, 1) / math.sqrt(d)
    mask = np.arange(n)[None, :] > (np.arange(s)[:, None] + causal_offset)
    scores = np.where(mask[None], -np.inf, scores)
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    return p @ vv


OPS = {"attention_prefill": AttentionPrefill(), "attention_decode": AttentionDecode()}
