"""Attention for CPUs as TensorIR (the SIMD counterpart of attention_gpu.py's thread-bound grids):
a grid of independent blocks that the schedule parallelises ("rows": one KV head's query heads for
R consecutive positions; "split": one KV chunk of decode), whose bodies run an online softmax over
tiles of `kv_tile` keys, so the S x S (or L-long) score row is never materialised. K and V rows
are read once for all Hq/Hkv query heads of a group. fp32 arithmetic; int8 caches are widened as
they are read."""

from __future__ import annotations

import math

from compiler.ops.attention_signature import cache_signatures
from compiler.ops.attention_simd import (ACCUMULATORS, FOLD_SLOTS, INT8_QUERY_DOTS, KEY_FOLDS, fold_lanes_macro,
                                         fold_pair, int8_query_dot, key_slot, row_sums, score_vectors)
from compiler.ops.fast_math import fast_exp
from compiler.ops.base import NEG_INF

# Scope of each block's scratch buffers (running max, sums, accumulators, scores): TVM puts a
# "global" allocation under 1 KiB on the stack, where LLVM keeps it in registers, but lowers every
# "local" one on a CPU to a TVMBackendAllocWorkspace call per block, memory LLVM cannot promote
# (tirx LowerTVMBuiltin). Decode at L=8192 on x86-avx512, hot caches: 0.34 -> 0.28 ms from this
# alone, 0.17 ms with `fold_lanes` (measured side by side).
BLOCK_SCOPE = "global"

def _online_softmax(G: int, GH: int, D: int, BK: int, VL: int, KV8: bool = False, keys_in_lanes: bool = False,
                    query_dot: str | None = None):
    """TVMScript macros shared by prefill and decode: the running (max, sum, acc) of G query
    vectors `q` [G, D] (GH heads of a KV group for each of G / GH consecutive positions) against one
    tile of BK keys starting at `base`. Vector g sees keys below `limit + g // GH` (causal); keys at
    or beyond `kv_end` do not exist. KV8: int8 K and V rows with one scale per row (Ks, Vs): the
    key's scale multiplies its finished score, the value's its probability, so the rows are only
    widened, never rescaled element by element.

    Two forms of the tile, a layout choice (the target's `attention_keys_in_lanes`):
    - per key: each key's dot product accumulates VL-wide and ends in a tree (horizontal) sum;
      value rows are added to all G accumulators key by key.
    - keys in lanes: VL keys' dot products accumulate as VL rows of a local tile (SV query vectors'
      tiles at once, `score_vectors`), reduced together by `row_sums` into one vector of VL scores
      per query vector, so masking and scaling are SIMD over keys;
      the values run per column chunk, G x CP accumulators held over the tile's keys (independent
      FMA chains, few loads). Keys past `kv_end` are read clamped to the last row and masked (no
      branch, no stray read). 1.7-2.2x fewer cycles on the ARM cycle model (decode); slower on x86 with cold
      caches (measured), hence not everywhere.

    query_dot (int8 caches, the per-key form): the scores are integer dot products of the key rows
    with the query rounded to int8 (one scale per query vector, as llama.cpp's q8_0 cache), on the
    target's instruction (INT8_QUERY_DOTS), key rows never widened; KEY_FOLDS: 16 keys at once."""
    from tvm.script import tirx as T

    DV = D // VL
    KV = BK // VL
    IL, UNSIGNED_KEYS = INT8_QUERY_DOTS.get(query_dot, (4, False))  # int32 lanes of the query dot product

    def int8_dot(acc, K, vh, row, q8, g, d0, at=0):
        return int8_query_dot(query_dot, acc, K, vh, row, q8, g, d0, at)

    def fold(buf, a, b, h):
        return fold_pair(query_dot, buf, a, b, h)

    KEY_FOLD = query_dot in KEY_FOLDS and BK % IL == 0  # IL keys' scores folded together (x86-avx512)
    # Value column chunks per pass over a tile's keys: enough independent accumulators (G x CP, up
    # to ACCUMULATORS) to hide the FMA latency, few enough to stay in registers.
    CP = max(cp for cp in range(1, DV + 1) if DV % cp == 0 and (cp == 1 or G * cp <= ACCUMULATORS))
    SV = score_vectors(G, VL)
    scale = 1.0 / math.sqrt(D)
    fold_lanes = fold_lanes_macro()

    def add(a, b):
        return a + b

    def maximum(a, b):
        return T.max(a, b)

    @T.macro
    def quantize_queries(q, q8, qs, qo, part, ipart, mt):
        """q8 = q rounded to int8 by its absolute maximum; qs = the factor that turns an int8 dot
        product back into a score (a NaN or Inf in q makes it NaN, so the vector's scores are NaN
        as in the float form); qo = 128 x the sum of q8 where the keys are offset to unsigned."""
        for g in range(G):
            for u in T.vectorized(VL):
                part[u] = T.abs(q[g, u])
            for d0 in range(1, DV):
                for u in T.vectorized(VL):
                    part[u] = T.max(part[u], T.abs(q[g, d0 * VL + u]))
            fold_lanes(maximum, part, VL)
            mt[0] = part[0]
            for u in T.vectorized(VL):
                part[u] = q[g, u]
            for d0 in range(1, DV):
                for u in T.vectorized(VL):
                    part[u] = part[u] + q[g, d0 * VL + u]
            fold_lanes(add, part, VL)
            qs[g] = T.Select(T.isfinite(part[0]), mt[0] * T.float32(scale / 127), T.float32(math.nan))
            mt[1] = T.Select(mt[0] > T.float32(0), T.float32(127) / mt[0], T.float32(0))
            for d in T.vectorized(D):
                q8[g, d] = T.Cast("int8", T.nearbyint(q[g, d] * mt[1]))
            for u in T.vectorized(IL):
                ipart[u] = T.Cast("int32", q8[g, u])
            for d0 in range(1, D // IL):
                for u in T.vectorized(IL):
                    ipart[u] = ipart[u] + T.Cast("int32", q8[g, d0 * IL + u])
            fold_lanes(add, ipart, IL)
            qo[g] = ipart[0] * (128 if UNSIGNED_KEYS else 0)

    @T.macro
    def init(m, lsum, acc):
        for g in range(G):
            m[g] = T.float32(NEG_INF)
            lsum[g] = T.float32(0)
            for d in T.vectorized(D):
                acc[g, d] = T.float32(0)

    @T.macro
    def rescale(g, m, lsum, acc, sc, part, mt):
        """Vector g's new running max over the tile's scores, p = exp(s - max) in place of them, and
        its running sum and accumulators rescaled to the new max."""
        for u in T.vectorized(VL):
            part[u] = sc[g, u]
        for c0 in range(1, KV):
            for u in T.vectorized(VL):
                part[u] = T.max(part[u], sc[g, c0 * VL + u])
        fold_lanes(maximum, part, VL)
        mt[0] = T.max(m[g], part[0])
        mt[1] = fast_exp(m[g] - mt[0])
        m[g] = mt[0]
        for c in T.vectorized(BK):
            sc[g, c] = fast_exp(sc[g, c] - mt[0])
        for u in T.vectorized(VL):
            part[u] = sc[g, u]
        for c0 in range(1, KV):
            for u in T.vectorized(VL):
                part[u] = part[u] + sc[g, c0 * VL + u]
        fold_lanes(add, part, VL)
        lsum[g] = lsum[g] * mt[1] + part[0]
        for d in T.vectorized(D):
            acc[g, d] = acc[g, d] * mt[1]

    @T.macro
    def folded_int8_scores(K, Ks, vh, base, kv_end, limit, sc, q8, qs, qo, ipart):
        """The int8 scores of IL keys at a time: two keys' dot products (slots IL/2, IL/2 + 1), folded
        into slot i at once, then three halving levels in place (attention_simd.fold_pair)."""
        for c0 in range(BK // IL):
            for g in range(G):
                for i in T.unroll(IL // 2):
                    for j in T.unroll(2):
                        for u in T.vectorized(IL):
                            ipart[(IL // 2 + j) * IL + u] = 0
                        for d0 in range(D // (4 * IL)):
                            ipart[(IL // 2 + j) * IL:(IL // 2 + j + 1) * IL] = int8_dot(
                                ipart, K, vh, T.min(base + c0 * IL + key_slot(2 * i + j), kv_end - 1), q8, g, d0,
                                (IL // 2 + j) * IL)
                    ipart[i * IL:i * IL + IL] = fold(ipart, IL // 2, IL // 2 + 1, IL // 2)
                for i in T.unroll(IL // 4):
                    ipart[i * IL:i * IL + IL] = fold(ipart, 2 * i, 2 * i + 1, IL // 4)
                for i in T.unroll(IL // 8):
                    ipart[i * IL:i * IL + IL] = fold(ipart, 2 * i, 2 * i + 1, IL // 8)
                ipart[0:IL] = fold(ipart, 0, 1, IL // 16)
                for c in T.vectorized(IL):
                    sc[g, c0 * IL + c] = T.Select(base + c0 * IL + c < limit + g // GH, T.Cast(
                        "float32", ipart[c] - qo[g]) * (qs[g] * Ks[vh, T.min(base + c0 * IL + c, kv_end - 1)]),
                        T.float32(NEG_INF))

    @T.macro
    def scores_per_key(q, K, Ks, vh, base, kv_end, limit, sc, part, q8, qs, qo, ipart):
        for c in range(BK):  # scores: each key row is read once for all G query vectors
            for g in range(G):
                # Keys past the end read a valid row (clamped) and are masked: no branch, no stray read.
                if query_dot is not None:
                    for u in T.vectorized(IL):
                        ipart[u] = 0
                    for d0 in range(D // (4 * IL)):
                        ipart[0:IL] = int8_dot(ipart, K, vh, T.min(base + c, kv_end - 1), q8, g, d0)
                    fold_lanes(add, ipart, IL)
                    sc[g, c] = T.Select(base + c < limit + g // GH, T.Cast("float32", ipart[0] - qo[g]) * (
                        qs[g] * Ks[vh, T.min(base + c, kv_end - 1)]), T.float32(NEG_INF))
                else:
                    for u in T.vectorized(VL):
                        part[u] = q[g, u] * T.Cast("float32", K[vh, T.min(base + c, kv_end - 1), u])
                    for d0 in range(1, DV):
                        for u in T.vectorized(VL):
                            part[u] = part[u] + q[g, d0 * VL + u] * T.Cast(
                                "float32", K[vh, T.min(base + c, kv_end - 1), d0 * VL + u])
                    fold_lanes(add, part, VL)
                    if KV8:
                        sc[g, c] = T.Select(base + c < limit + g // GH, part[0] * (
                            T.float32(scale) * Ks[vh, T.min(base + c, kv_end - 1)]), T.float32(NEG_INF))
                    else:
                        sc[g, c] = T.Select(base + c < limit + g // GH, part[0] * T.float32(scale), T.float32(NEG_INF))

    @T.macro
    def tile_per_key(q, K, V, Ks, Vs, vh, base, kv_end, limit, m, lsum, acc, sc, keys, part, rs, mt, q8, qs, qo,
                     ipart):
        if KEY_FOLD:
            folded_int8_scores(K, Ks, vh, base, kv_end, limit, sc, q8, qs, qo, ipart)
        else:
            scores_per_key(q, K, Ks, vh, base, kv_end, limit, sc, part, q8, qs, qo, ipart)
        for g in range(G):
            rescale(g, m, lsum, acc, sc, part, mt)
            if KV8:  # each value row's scale, on its probability (SIMD over the tile's keys)
                for c in T.vectorized(BK):
                    sc[g, c] = sc[g, c] * Vs[vh, T.min(base + c, kv_end - 1)]
        for c in range(BK):  # acc += p v, each value row read once for all G query vectors
            if base + c < kv_end:
                for g in range(G):
                    for d in T.vectorized(D):
                        acc[g, d] = acc[g, d] + sc[g, c] * T.Cast("float32", V[vh, base + c, d])

    @T.macro
    def tile_keys_in_lanes(q, K, V, Ks, Vs, vh, base, kv_end, limit, m, lsum, acc, sc, keys, part, rs, mt, q8, qs, qo,
                           ipart):
        for c0 in range(KV):  # scores, VL keys x SV query vectors at a time (each key chunk loaded once for SV)
            for g0 in range(G // SV):
                for p in T.unroll(SV):
                    for c in T.unroll(VL):
                        for u in T.vectorized(VL):
                            keys[p * VL + c, u] = q[g0 * SV + p, u] * T.Cast(
                                "float32", K[vh, T.min(base + c0 * VL + c, kv_end - 1), u])
                for d0 in range(1, DV):
                    for c in T.unroll(VL):
                        for p in T.unroll(SV):
                            for u in T.vectorized(VL):
                                keys[p * VL + c, u] = keys[p * VL + c, u] + q[g0 * SV + p, d0 * VL + u] * T.Cast(
                                    "float32", K[vh, T.min(base + c0 * VL + c, kv_end - 1), d0 * VL + u])
                for p in T.unroll(SV):
                    for c in T.vectorized(VL):
                        sc[g0 * SV + p, c0 * VL + c] = row_sums(keys, p * VL + c, VL)
        if KV8:  # the tile's row scales, read once for all G vectors
            for c in range(BK):
                rs[0, c] = Ks[vh, T.min(base + c, kv_end - 1)] * T.float32(scale)
                rs[1, c] = Vs[vh, T.min(base + c, kv_end - 1)]
        for g in range(G):  # mask and scale, SIMD over keys
            for c in T.vectorized(BK):
                if KV8:
                    sc[g, c] = T.Select(base + c < limit + g // GH, sc[g, c] * rs[0, c], T.float32(NEG_INF))
                else:
                    sc[g, c] = T.Select(base + c < limit + g // GH, sc[g, c] * T.float32(scale), T.float32(NEG_INF))
            rescale(g, m, lsum, acc, sc, part, mt)
            if KV8:
                for c in T.vectorized(BK):
                    sc[g, c] = sc[g, c] * rs[1, c]
        for d1 in range(DV // CP):  # acc += p v: CP column chunks of all G accumulators over the tile's keys
            for c in range(BK):
                for g in T.unroll(G):
                    for j in T.unroll(CP):
                        for u in T.vectorized(VL):
                            acc[g, (d1 * CP + j) * VL + u] = acc[g, (d1 * CP + j) * VL + u] + sc[g, c] * T.Cast(
                                "float32", V[vh, T.min(base + c, kv_end - 1), (d1 * CP + j) * VL + u])

    return init, quantize_queries, tile_keys_in_lanes if keys_in_lanes else tile_per_key


def prefill_tir(HQ: int, HKV: int, D: int, BK: int, VL: int, R: int, KV8: bool = False, LANES: bool = False,
               QDOT: str | None = None):
    """One block per (KV head, R consecutive query rows): every K/V row loaded serves the
    R x Hq/Hkv query vectors of the block. Row i is position P + i (P = L - S) and sees keys 0..P+i.
    KV8: the caches are int8 with a float32 scale per (head, position) row. LANES: the keys-in-lanes
    tile, whose whole tiles skip the row clamping."""
    from tvm.script import tirx as T

    G = HQ // HKV
    NQ = G * R
    NV = NQ  # query vectors per block
    init, quantize_queries, tile = _online_softmax(NQ, G, D, BK, VL, KV8, LANES, QDOT)

    @T.macro
    def body(Q, K, V, Ks, Vs, O, S, L):
        for hk, it in T.grid(HKV, (S + R - 1) // R):
            with T.sblock("rows"):
                vh, vt = T.axis.remap("SS", [hk, it])
                T.reads(Q[vh * G: vh * G + G, vt * R: T.min(vt * R + R, S), 0:D],
                        K[vh, 0:T.min(L - S + vt * R + R, L), 0:D], V[vh, 0:T.min(L - S + vt * R + R, L), 0:D])
                T.writes(O[vh * G: vh * G + G, vt * R: T.min(vt * R + R, S), 0:D])
                q = T.sblock_alloc_buffer((NQ, D), "float32", scope=BLOCK_SCOPE)
                m = T.sblock_alloc_buffer((NQ,), "float32", scope=BLOCK_SCOPE)
                lsum = T.sblock_alloc_buffer((NQ,), "float32", scope=BLOCK_SCOPE)
                acc = T.sblock_alloc_buffer((NQ, D), "float32", scope=BLOCK_SCOPE)
                sc = T.sblock_alloc_buffer((NQ, BK), "float32", scope=BLOCK_SCOPE)
                part = T.sblock_alloc_buffer((VL,), "float32", scope=BLOCK_SCOPE)
                mt = T.sblock_alloc_buffer((2,), "float32", scope=BLOCK_SCOPE)
                if LANES:  # the keys' partial dot products, and the tile's row scales (int8 caches)
                    keys = T.sblock_alloc_buffer((score_vectors(NQ, VL) * VL, VL), "float32", scope=BLOCK_SCOPE)
                    rs = T.sblock_alloc_buffer((2, BK), "float32", scope=BLOCK_SCOPE)
                else:  # the per-key tile uses neither
                    keys = part
                    rs = part
                if QDOT is not None:  # the queries as int8, their score factors and unsigned-key offsets
                    q8 = T.sblock_alloc_buffer((NV, D), "int8", scope=BLOCK_SCOPE)
                    qs = T.sblock_alloc_buffer((NV,), "float32", scope=BLOCK_SCOPE)
                    qo = T.sblock_alloc_buffer((NV,), "int32", scope=BLOCK_SCOPE)
                    ipart = T.sblock_alloc_buffer((INT8_QUERY_DOTS[QDOT][0] * FOLD_SLOTS,), "int32", scope=BLOCK_SCOPE)
                else:
                    q8, qs, qo, ipart = q, part, m, m
                for g in range(NQ):  # vector g: head g % G at position vt * R + g // G (clamped to S)
                    for d in T.vectorized(D):
                        q[g, d] = Q[vh * G + g % G, T.min(vt * R + g // G, S - 1), d]
                init(m, lsum, acc)
                if QDOT is not None:
                    quantize_queries(q, q8, qs, qo, part, ipart, mt)
                # causal: the prefix and the tiles up to the block's last position
                for t in range((T.min(L - S + vt * R + R, L) - 1 + BK) // BK):
                    if LANES and t * BK + BK <= T.min(L - S + vt * R + R, L):  # a whole tile: no clamping
                        tile(q, K, V, Ks, Vs, vh, t * BK, t * BK + BK, L - S + vt * R + 1, m, lsum, acc, sc, keys,
                             part, rs, mt, q8, qs, qo, ipart)
                    else:
                        tile(q, K, V, Ks, Vs, vh, t * BK, T.min(L - S + vt * R + R, L), L - S + vt * R + 1, m, lsum,
                             acc, sc, keys, part, rs, mt, q8, qs, qo, ipart)
                for g in range(NQ):
                    if vt * R + g // G < S:
                        for d in T.vectorized(D):
                            O[vh * G + g % G, vt * R + g // G, d] = acc[g, d] / lsum[g]

    return cache_signatures("attention_prefill", lambda S: (HQ, S, D), lambda S: (HQ, S, D), HKV, D, KV8, body,
                            {"tirx.noalias": True})


def decode_tir(HQ: int, HKV: int, D: int, BK: int, VL: int, SPLIT: int, KV8: bool = False, LANES: bool = False,
               QDOT: str | None = None):
    """Flash-decoding: blocks over (KV head, chunk of SPLIT keys) write partial (max, sum, acc); a
    second grid merges the chunks. SPLIT is a multiple of BK. KV8: int8 caches with a float32 scale
    per (head, position) row. LANES: the keys-in-lanes tile, whose whole tiles skip the row clamping."""
    from tvm.script import tirx as T

    G = HQ // HKV
    NV = G  # query vectors per block
    init, quantize_queries, tile = _online_softmax(G, G, D, BK, VL, KV8, LANES, QDOT)

    @T.macro
    def body(Q, K, V, Ks, Vs, O, S, L):  # S: unused (one query row)
        pm = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT), "float32")
        pl = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT), "float32")
        pacc = T.sblock_alloc_buffer((HQ, (L + SPLIT - 1) // SPLIT, D), "float32")
        for hk, sp in T.grid(HKV, (L + SPLIT - 1) // SPLIT):
            with T.sblock("split"):
                vh, vs = T.axis.remap("SS", [hk, sp])
                T.reads(Q[vh * G: vh * G + G, 0:D], K[vh, vs * SPLIT: vs * SPLIT + SPLIT, 0:D],
                        V[vh, vs * SPLIT: vs * SPLIT + SPLIT, 0:D])
                T.writes(pm[vh * G: vh * G + G, vs], pl[vh * G: vh * G + G, vs],
                         pacc[vh * G: vh * G + G, vs, 0:D])
                q = T.sblock_alloc_buffer((G, D), "float32", scope=BLOCK_SCOPE)
                m = T.sblock_alloc_buffer((G,), "float32", scope=BLOCK_SCOPE)
                lsum = T.sblock_alloc_buffer((G,), "float32", scope=BLOCK_SCOPE)
                acc = T.sblock_alloc_buffer((G, D), "float32", scope=BLOCK_SCOPE)
                sc = T.sblock_alloc_buffer((G, BK), "float32", scope=BLOCK_SCOPE)
                part = T.sblock_alloc_buffer((VL,), "float32", scope=BLOCK_SCOPE)
                mt = T.sblock_alloc_buffer((2,), "float32", scope=BLOCK_SCOPE)
                if LANES:  # the keys' partial dot products, and the tile's row scales (int8 caches)
                    keys = T.sblock_alloc_buffer((score_vectors(G, VL) * VL, VL), "float32", scope=BLOCK_SCOPE)
                    rs = T.sblock_alloc_buffer((2, BK), "float32", scope=BLOCK_SCOPE)
                else:  # the per-key tile uses neither
                    keys = part
                    rs = part
                if QDOT is not None:  # the queries as int8, their score factors and unsigned-key offsets
                    q8 = T.sblock_alloc_buffer((NV, D), "int8", scope=BLOCK_SCOPE)
                    qs = T.sblock_alloc_buffer((NV,), "float32", scope=BLOCK_SCOPE)
                    qo = T.sblock_alloc_buffer((NV,), "int32", scope=BLOCK_SCOPE)
                    ipart = T.sblock_alloc_buffer((INT8_QUERY_DOTS[QDOT][0] * FOLD_SLOTS,), "int32", scope=BLOCK_SCOPE)
                else:
                    q8, qs, qo, ipart = q, part, m, m
                for g in range(G):
                    for d in T.vectorized(D):
                        q[g, d] = Q[vh * G + g, d]
                init(m, lsum, acc)
                if QDOT is not None:
                    quantize_queries(q, q8, qs, qo, part, ipart, mt)
                for t in range(SPLIT // BK):
                    if LANES and vs * SPLIT + t * BK + BK <= L:  # a whole tile: no clamping
                        tile(q, K, V, Ks, Vs, vh, vs * SPLIT + t * BK, vs * SPLIT + t * BK + BK, L, m, lsum, acc, sc,
                             keys, part, rs, mt, q8, qs, qo, ipart)
                    elif vs * SPLIT + t * BK < L:
                        tile(q, K, V, Ks, Vs, vh, vs * SPLIT + t * BK, L, L, m, lsum, acc, sc, keys, part, rs, mt, q8,
                             qs, qo, ipart)
                for g in range(G):
                    pm[vh * G + g, vs] = m[g]
                    pl[vh * G + g, vs] = lsum[g]
                    for d in T.vectorized(D):
                        pacc[vh * G + g, vs, d] = acc[g, d]
        for h in range(HQ):
            with T.sblock("merge"):
                vh = T.axis.remap("S", [h])
                T.reads(pm[vh, 0:(L + SPLIT - 1) // SPLIT], pl[vh, 0:(L + SPLIT - 1) // SPLIT],
                        pacc[vh, 0:(L + SPLIT - 1) // SPLIT, 0:D])
                T.writes(O[vh, 0:D])
                gm = T.sblock_alloc_buffer((1,), "float32", scope=BLOCK_SCOPE)
                gl = T.sblock_alloc_buffer((1,), "float32", scope=BLOCK_SCOPE)
                gm[0] = T.float32(NEG_INF)
                gl[0] = T.float32(0)
                for s in range((L + SPLIT - 1) // SPLIT):
                    gm[0] = T.max(gm[0], pm[vh, s])
                for d in T.vectorized(D):
                    O[vh, d] = T.float32(0)
                for s in range((L + SPLIT - 1) // SPLIT):
                    gl[0] = gl[0] + pl[vh, s] * T.exp(pm[vh, s] - gm[0])
                    for d in T.vectorized(D):
                        O[vh, d] = O[vh, d] + pacc[vh, s, d] * T.exp(pm[vh, s] - gm[0])
                for d in T.vectorized(D):
                    O[vh, d] = O[vh, d] / gl[0]


    return cache_signatures("attention_decode", lambda S: (HQ, D), lambda S: (HQ, D), HKV, D, KV8, body,
                            {"tirx.noalias": True})
