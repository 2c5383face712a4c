"""The online-softmax tile of the CPU attention kernels (attention_cpu.py's grids run it): the
running (max, sum, acc) of a block's query vectors over one tile of keys, in the per-key form or
the keys-in-lanes form, with float or int8 caches (and integer scores of an int8 cache)."""

from __future__ import annotations

import math

from compiler.ops.attention_simd import (ACCUMULATORS, FOLD_CONSTANTS, FOLD_LANES, INT8_QUERY_DOTS, SIGN_BITS,
                                         fold_constant, fold_lanes_macro, fold_pair, fold_vector, in_key_order,
                                         int8_query_dot, needs_fold_constants, row_sums, score_vectors)
from compiler.ops.base import NEG_INF
from compiler.ops.fast_math import fast_exp


def folds_keys(query_dot: str | None, lanes: int, kv_tile: int, keys_in_lanes: bool, key_fold: bool) -> bool:
    """Whether the tile folds 16 keys' partial sums at once (key_fold, where their lanes number 16)."""
    partial_lanes = INT8_QUERY_DOTS[query_dot][0] if query_dot is not None else lanes
    return key_fold and not keys_in_lanes and partial_lanes == FOLD_LANES and kv_tile % partial_lanes == 0


def online_softmax(G: int, GH: int, D: int, BK: int, VL: int, KV8: bool = False, keys_in_lanes: bool = False,
                   query_dot: str | None = None, key_fold: bool = False):
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
    target's instruction (INT8_QUERY_DOTS), key rows never widened.

    key_fold (the per-key form, where the target has a 16-lane two-source permute): the partial sums
    of 16 keys (int or float) are folded together (attention_simd.fold_pair), not each key's alone."""
    from tvm.script import tirx as T

    DV = D // VL
    KV = BK // VL
    IL, UNSIGNED_KEYS = INT8_QUERY_DOTS.get(query_dot, (4, False))  # int32 lanes of the query dot product

    def int8_dot(acc, K, vh, row, q8, g, d0, consts, at=0):
        sign_bits = fold_vector(consts, SIGN_BITS) if INT8_QUERY_DOTS[query_dot][1] else None
        return int8_query_dot(query_dot, acc, K, vh, row, q8, g, d0, at, sign_bits)

    FL = IL if query_dot is not None else VL  # lanes of a key's partial sums
    KEY_FOLD = folds_keys(query_dot, VL, BK, keys_in_lanes, key_fold)
    CONSTANTS = needs_fold_constants(query_dot, KEY_FOLD)
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
    def init(m, lsum, acc, consts):
        """The running max, sum and accumulators; the fold's constant vectors where the tile reads them."""
        for g in range(G):
            m[g] = T.float32(NEG_INF)
            lsum[g] = T.float32(0)
            for d in T.vectorized(D):
                acc[g, d] = T.float32(0)
        if CONSTANTS:
            for k in T.unroll(FOLD_CONSTANTS):
                for u in T.vectorized(FOLD_LANES):
                    consts[k * FOLD_LANES + u] = fold_constant(k, u)

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

    def float_key_dot(q, K, vh, row, g):
        """The VL lanes of key `row`'s dot product with query vector g, as one expression (a chain of
        FMAs LLVM keeps in a register)."""
        vector = f"float32x{VL}"
        terms = [q.vload([g, d0 * VL], vector) * (K.vload([vh, row, d0 * VL], vector) if not KV8 else T.Cast(
            vector, K.vload([vh, row, d0 * VL], f"int8x{VL}"))) for d0 in range(DV)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    @T.macro
    def key_partials(buf, slot, q, K, vh, row, q8, g, consts):
        """buf's vector `slot` = the lanes of key `row`'s dot product with query vector g."""
        if query_dot is not None:
            for u in T.vectorized(IL):
                buf[slot * IL + u] = 0
            for d0 in range(D // (4 * IL)):
                buf[slot * IL:slot * IL + IL] = int8_dot(buf, K, vh, row, q8, g, d0, consts, slot * IL)
        else:
            buf[slot * VL:slot * VL + VL] = float_key_dot(q, K, vh, row, g)

    def finished_score(total, g, Ks, vh, row, qs, qo):
        """A key's score from its dot product's total (scaled, and for int8 products offset)."""
        if query_dot is not None:
            return T.Cast("float32", total - qo[g]) * (qs[g] * Ks[vh, row])
        return total * (T.float32(scale) * Ks[vh, row]) if KV8 else total * T.float32(scale)

    @T.macro
    def fold_keys(g, c0, q, K, Ks, vh, base, kv_end, limit, sc, buf, consts, q8, qs, qo):
        """The scores of vector g against keys c0 * FL .. + FL: two keys' partial sums (slots FL/2,
        FL/2 + 1) folded into slot i at once, then three halving levels in place (fold_pair)."""
        for i in T.unroll(FL // 2):
            for j in T.unroll(2):
                key_partials(buf, FL // 2 + j, q, K, vh, T.min(base + c0 * FL + 2 * i + j, kv_end - 1), q8, g,
                             consts)
            buf[i * FL:i * FL + FL] = fold_pair(buf, FL // 2, FL // 2 + 1, FL // 2, consts)
        for i in T.unroll(FL // 4):
            buf[i * FL:i * FL + FL] = fold_pair(buf, 2 * i, 2 * i + 1, FL // 4, consts)
        for i in T.unroll(FL // 8):
            buf[i * FL:i * FL + FL] = fold_pair(buf, 2 * i, 2 * i + 1, FL // 8, consts)
        buf[0:FL] = fold_pair(buf, 0, 1, FL // 16, consts)
        buf[0:FL] = in_key_order(buf, consts)
        for c in T.vectorized(FL):
            sc[g, c0 * FL + c] = T.Select(base + c0 * FL + c < limit + g // GH, finished_score(
                buf[c], g, Ks, vh, T.min(base + c0 * FL + c, kv_end - 1), qs, qo), T.float32(NEG_INF))

    @T.macro
    def folded_scores(q, K, Ks, vh, base, kv_end, limit, sc, buf, consts, q8, qs, qo):
        """Loop order: 16 int8 key rows (16 registers) are loaded once for all G vectors; 16 float
        rows (64 registers) cannot be, and LLVM's attempt (hoisting them out of the vector loop,
        spilling) ran 0.88x, so float keys are re-read from L1 for each vector."""
        if query_dot is not None:
            for c0 in range(BK // FL):
                for g in range(G):
                    fold_keys(g, c0, q, K, Ks, vh, base, kv_end, limit, sc, buf, consts, q8, qs, qo)
        else:
            for g in range(G):
                for c0 in range(BK // FL):
                    fold_keys(g, c0, q, K, Ks, vh, base, kv_end, limit, sc, buf, consts, q8, qs, qo)

    @T.macro
    def scores_per_key(q, K, Ks, vh, base, kv_end, limit, sc, part, q8, qs, qo, ipart, consts):
        for c in range(BK):  # scores: each key row is read once for all G query vectors
            for g in range(G):
                # Keys past the end read a valid row (clamped) and are masked: no branch, no stray read.
                if query_dot is not None:
                    for u in T.vectorized(IL):
                        ipart[u] = 0
                    for d0 in range(D // (4 * IL)):
                        ipart[0:IL] = int8_dot(ipart, K, vh, T.min(base + c, kv_end - 1), q8, g, d0, consts)
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
                     ipart, consts):
        if KEY_FOLD and query_dot is not None:
            folded_scores(q, K, Ks, vh, base, kv_end, limit, sc, ipart, consts, q8, qs, qo)
        elif KEY_FOLD:
            folded_scores(q, K, Ks, vh, base, kv_end, limit, sc, keys, consts, q8, qs, qo)
        else:
            scores_per_key(q, K, Ks, vh, base, kv_end, limit, sc, part, q8, qs, qo, ipart, consts)
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
                           ipart, consts):
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
