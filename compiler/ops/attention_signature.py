"""The attention kernels' PrimFunc signature, shared by the CPU (attention.py) and GPU
(attention_gpu.py) builders: float32 K/V caches, or int8 caches with a float32 scale per row."""

from __future__ import annotations


def cache_signatures(name: str, q_shape, o_shape, HKV: int, D: int, KV8: bool, body, attrs: dict):
    """An attention PrimFunc around `body(Q, K, V, Ks, Vs, O, S, L)`: float32 caches, or int8 caches
    and their row scales (after them); caches and scales may be views (any stride between heads).
    q_shape / o_shape: S -> the query and output shapes."""
    from tvm.script import tirx as T

    if KV8:
        @T.prim_func(s_tir=True)
        def kernel(q_h: T.handle, k_h: T.handle, v_h: T.handle, ks_h: T.handle, vs_h: T.handle, o_h: T.handle):
            T.func_attr(attrs)
            S = T.int32()
            L = T.int32()
            head_stride_k = T.int32()
            head_stride_v = T.int32()
            head_stride_ks = T.int32()
            head_stride_vs = T.int32()
            Q = T.match_buffer(q_h, q_shape(S), "float32")
            K = T.match_buffer(k_h, (HKV, L, D), "int8", strides=(head_stride_k, D, 1))
            V = T.match_buffer(v_h, (HKV, L, D), "int8", strides=(head_stride_v, D, 1))
            Ks = T.match_buffer(ks_h, (HKV, L), "float32", strides=(head_stride_ks, 1))
            Vs = T.match_buffer(vs_h, (HKV, L), "float32", strides=(head_stride_vs, 1))
            O = T.match_buffer(o_h, o_shape(S), "float32")
            body(Q, K, V, Ks, Vs, O, S, L)
    else:
        @T.prim_func(s_tir=True)
        def kernel(q_h: T.handle, k_h: T.handle, v_h: T.handle, o_h: T.handle):
            T.func_attr(attrs)
            S = T.int32()
            L = T.int32()
            head_stride_k = T.int32()
            head_stride_v = T.int32()
            Q = T.match_buffer(q_h, q_shape(S), "float32")
            K = T.match_buffer(k_h, (HKV, L, D), "float32", strides=(head_stride_k, D, 1))
            V = T.match_buffer(v_h, (HKV, L, D), "float32", strides=(head_stride_v, D, 1))
            O = T.match_buffer(o_h, o_shape(S), "float32")
            body(Q, K, V, None, None, O, S, L)
    return kernel.with_attr("global_symbol", name)
