"""Attention for GPUs, as thread-bound TensorIR (the GPU counterpart of attention.py's CPU grids).

Same arguments and results as attention.py's kernels; fp32 throughout. Barriers between the
shared-memory phases are inserted by TVM's ThreadSync pass. Loops over per-thread arrays are
unrolled, so the arrays live in registers (dynamic indexing would put them in memory); this also
keeps every loop well under lavapipe's limit of 65535 iterations per loop and invocation.

prefill: one workgroup per (KV head, R query rows); thread t serves query head t % G of the
group at row t // G (position P + t // G, after a prefix of P = L - S cached keys), so each K/V tile (BK keys, staged in shared memory) serves R x G queries.
Online softmax key by key over the causal tiles: only the head-dim loops are unrolled, which keeps
shaders small (a tile-wide score array would need the key loop unrolled too: 4096 unrolled FMAs at
D=128, which lavapipe's JIT took minutes to compile).

decode (flash-decoding): one workgroup per (KV head, chunk of SPLIT keys). Threads split the keys
for the scores (all G heads of the group per key), then the head dimension for P·V (coalesced V
rows); partial (max, sum, acc) per chunk go to global temporaries, and a second kernel merges them.
"""

from __future__ import annotations

import math

from compiler.ops.attention_signature import cache_signatures
from compiler.ops.base import NEG_INF

SCHEDULED = {"tirx.noalias": True, "tirx.is_scheduled": True}  # thread-bound already


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def _cache_value(T, KV8: bool):
    """Element (h, row, d) of a cache as float32: int8 caches times their row's scale."""
    if KV8:
        return lambda C, Cs, h, row, d: T.Cast("float32", C[h, row, d]) * Cs[h, row]
    return lambda C, Cs, h, row, d: C[h, row, d]


def prefill_gpu_tir(HQ: int, HKV: int, D: int, BK: int, THREADS: int, KV8: bool = False):
    from tvm.script import tirx as T

    value = _cache_value(T, KV8)

    G = HQ // HKV
    R = max(1, THREADS // G)
    NT = R * G  # threads of a workgroup
    LOADS = _ceil(BK * D, NT)
    scale = 1.0 / math.sqrt(D)

    @T.macro
    def body(Q, K, V, Ks, Vs, O, S, L):  # keys: the prefix P = L - S, then the new rows'
        for hk in T.thread_binding(HKV, thread="blockIdx.y"):
            for bt in T.thread_binding((S + R - 1) // R, thread="blockIdx.x"):
                for tx in T.thread_binding(NT, thread="threadIdx.x"):
                    with T.sblock("rows"):
                        T.reads(Q[0:HQ, 0:S, 0:D], K[hk, 0:L, 0:D], V[hk, 0:L, 0:D])
                        T.writes(O[0:HQ, 0:S, 0:D])
                        ks = T.sblock_alloc_buffer((BK, D), "float32", scope="shared")
                        vs = T.sblock_alloc_buffer((BK, D), "float32", scope="shared")
                        q = T.sblock_alloc_buffer((D,), "float32", scope="local")
                        acc = T.sblock_alloc_buffer((D,), "float32", scope="local")
                        st = T.sblock_alloc_buffer((4,), "float32", scope="local")  # m, l, score, correction
                        for d in T.unroll(D):
                            q[d] = Q[hk * G + tx % G, T.min(bt * R + tx // G, S - 1), d] * T.float32(scale)
                            acc[d] = T.float32(0)
                        st[0] = T.float32(NEG_INF)
                        st[1] = T.float32(0)
                        for t in range((T.min(L - S + bt * R + R, L) + BK - 1) // BK):
                            for i in T.unroll(LOADS):  # the tile, loaded by all threads (rows clamped to L)
                                if i * NT + tx < BK * D:
                                    ks[(i * NT + tx) // D, (i * NT + tx) % D] = value(
                                        K, Ks, hk, T.min(t * BK + (i * NT + tx) // D, L - 1), (i * NT + tx) % D)
                                    vs[(i * NT + tx) // D, (i * NT + tx) % D] = value(
                                        V, Vs, hk, T.min(t * BK + (i * NT + tx) // D, L - 1), (i * NT + tx) % D)
                            for c in range(BK):  # online softmax key by key (the prefix, causal new keys)
                                if t * BK + c <= L - S + bt * R + tx // G:
                                    st[2] = T.float32(0)
                                    for d in T.unroll(D):
                                        st[2] = st[2] + q[d] * ks[c, d]
                                    st[3] = T.exp(st[0] - T.max(st[0], st[2]))
                                    st[0] = T.max(st[0], st[2])
                                    st[2] = T.exp(st[2] - st[0])
                                    st[1] = st[1] * st[3] + st[2]
                                    for d in T.unroll(D):
                                        acc[d] = acc[d] * st[3] + st[2] * vs[c, d]
                        if bt * R + tx // G < S:
                            for d in T.unroll(D):
                                O[hk * G + tx % G, bt * R + tx // G, d] = acc[d] / st[1]

    return cache_signatures("attention_prefill", lambda S: (HQ, S, D), lambda S: (HQ, S, D), HKV, D, KV8, body,
                            SCHEDULED)


def decode_gpu_tir(HQ: int, HKV: int, D: int, SPLIT: int, THREADS: int, KV8: bool = False):
    from tvm.script import tirx as T

    value = _cache_value(T, KV8)

    G = HQ // HKV
    KEYS = _ceil(SPLIT, THREADS)  # keys per thread in a chunk
    DIMS = _ceil(D, THREADS)  # head-dim elements per thread
    QLOADS = _ceil(G * D, THREADS)
    scale = 1.0 / math.sqrt(D)

    @T.macro
    def body(Q, K, V, Ks, Vs, O, S, L):
        pm = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT), "float32")
        pl = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT), "float32")
        pacc = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT, D), "float32")
        for hk in T.thread_binding(HKV, thread="blockIdx.y"):
            for sp in T.thread_binding((L + SPLIT - 1) // SPLIT, thread="blockIdx.x"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    with T.sblock("split"):
                        T.reads(Q[0:HQ, 0:D], K[hk, 0:L, 0:D], V[hk, 0:L, 0:D])
                        T.writes(pm[0:HQ, sp], pl[0:HQ, sp], pacc[0:HQ, sp, 0:D])
                        qs = T.sblock_alloc_buffer((G, D), "float32", scope="shared")
                        sc = T.sblock_alloc_buffer((G, KEYS * THREADS), "float32", scope="shared")
                        red = T.sblock_alloc_buffer((G, THREADS), "float32", scope="shared")
                        stat = T.sblock_alloc_buffer((G, 2), "float32", scope="shared")
                        part = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        for i in range(QLOADS):
                            if i * THREADS + tx < G * D:
                                qs[(i * THREADS + tx) // D, (i * THREADS + tx) % D] = Q[
                                    hk * G + (i * THREADS + tx) // D, (i * THREADS + tx) % D] * T.float32(scale)
                        for j in range(KEYS):  # scores: thread tx takes keys tx, tx + THREADS, ...
                            for g in range(G):
                                part[0] = T.float32(0)
                                for d in T.unroll(D):
                                    part[0] = part[0] + qs[g, d] * value(
                                        K, Ks, hk, T.min(sp * SPLIT + j * THREADS + tx, L - 1), d)
                                sc[g, j * THREADS + tx] = T.Select(
                                    j * THREADS + tx < SPLIT and sp * SPLIT + j * THREADS + tx < L,
                                    part[0], T.float32(NEG_INF))
                        for g in range(G):  # per-thread maximum, then one thread per head finishes it
                            part[0] = T.float32(NEG_INF)
                            for j in range(KEYS):
                                part[0] = T.max(part[0], sc[g, j * THREADS + tx])
                            red[g, tx] = part[0]
                        if tx < G:
                            part[0] = T.float32(NEG_INF)
                            for u in range(THREADS):
                                part[0] = T.max(part[0], red[tx, u])
                            stat[tx, 0] = part[0]
                        for g in range(G):  # p = exp(s - max) in place, per-thread sums
                            part[0] = T.float32(0)
                            for j in range(KEYS):
                                sc[g, j * THREADS + tx] = T.exp(sc[g, j * THREADS + tx] - stat[g, 0])
                                part[0] = part[0] + sc[g, j * THREADS + tx]
                            red[g, tx] = part[0]
                        if tx < G:
                            part[0] = T.float32(0)
                            for u in range(THREADS):
                                part[0] = part[0] + red[tx, u]
                            pm[hk * G + tx, sp] = stat[tx, 0]
                            pl[hk * G + tx, sp] = part[0]
                        for e in range(DIMS):  # P·V: threads over the head dimension
                            if e * THREADS + tx < D:
                                for g in range(G):
                                    part[0] = T.float32(0)
                                    for c in range(T.min(SPLIT, L - sp * SPLIT)):
                                        part[0] = part[0] + sc[g, c] * value(V, Vs, hk, sp * SPLIT + c,
                                                                             e * THREADS + tx)
                                    pacc[hk * G + g, sp, e * THREADS + tx] = part[0]
        for h in T.thread_binding(HQ, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                with T.sblock("merge"):
                    T.reads(pm[h, 0:(L + SPLIT - 1) // SPLIT], pl[h, 0:(L + SPLIT - 1) // SPLIT],
                            pacc[h, 0:(L + SPLIT - 1) // SPLIT, 0:D])
                    T.writes(O[h, 0:D])
                    gs = T.sblock_alloc_buffer((3,), "float32", scope="local")  # max, sum, acc
                    gs[0] = T.float32(NEG_INF)
                    for s in range((L + SPLIT - 1) // SPLIT):
                        gs[0] = T.max(gs[0], pm[h, s])
                    gs[1] = T.float32(0)
                    for s in range((L + SPLIT - 1) // SPLIT):
                        gs[1] = gs[1] + pl[h, s] * T.exp(pm[h, s] - gs[0])
                    for e in range(DIMS):
                        if e * THREADS + tx < D:
                            gs[2] = T.float32(0)
                            for s in range((L + SPLIT - 1) // SPLIT):
                                gs[2] = gs[2] + pacc[h, s, e * THREADS + tx] * T.exp(pm[h, s] - gs[0])
                            O[h, e * THREADS + tx] = gs[2] / gs[1]

    return cache_signatures("attention_decode", lambda S: (HQ, D), lambda S: (HQ, D), HKV, D, KV8, body, SCHEDULED)
