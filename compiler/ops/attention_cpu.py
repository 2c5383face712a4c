"""Attention for CPUs as TensorIR (the SIMD counterpart of attention_gpu.py's thread-bound grids):
a grid of independent blocks that the schedule parallelises ("rows": one KV head's query heads for
R consecutive positions; "split": one KV chunk of decode), whose bodies run an online softmax over
tiles of `kv_tile` keys, so the S x S (or L-long) score row is never materialised. K and V rows
are read once for all Hq/Hkv query heads of a group. fp32 arithmetic; int8 caches are widened as
they are read."""

from __future__ import annotations

from compiler.ops.attention_signature import cache_signatures
from compiler.ops.attention_simd import FOLD_CONSTANTS, FOLD_LANES, FOLD_SLOTS, INT8_QUERY_DOTS, needs_fold_constants, score_vectors
from compiler.ops.attention_tiles import folds_keys, online_softmax
from compiler.ops.base import NEG_INF

# Scope of each block's scratch buffers (running max, sums, accumulators, scores): TVM puts a
# "global" allocation under 1 KiB on the stack, where LLVM keeps it in registers, but lowers every
# "local" one on a CPU to a TVMBackendAllocWorkspace call per block, memory LLVM cannot promote
# (tirx LowerTVMBuiltin). Decode at L=8192 on x86-avx512, hot caches: 0.34 -> 0.28 ms from this
# alone, 0.17 ms with `fold_lanes` (measured side by side).
BLOCK_SCOPE = "global"


def prefill_tir(HQ: int, HKV: int, D: int, BK: int, VL: int, R: int, KV8: bool = False, LANES: bool = False,
               QDOT: str | None = None, FOLD: bool = False):
    """One block per (KV head, R consecutive query rows): every K/V row loaded serves the
    R x Hq/Hkv query vectors of the block. Row i is position P + i (P = L - S) and sees keys 0..P+i.
    KV8: the caches are int8 with a float32 scale per (head, position) row. LANES: the keys-in-lanes
    tile, whose whole tiles skip the row clamping."""
    from tvm.script import tirx as T

    G = HQ // HKV
    NQ = G * R
    NV = NQ  # query vectors per block
    init, quantize_queries, tile = online_softmax(NQ, G, D, BK, VL, KV8, LANES, QDOT, FOLD)
    FOLDS = folds_keys(QDOT, VL, BK, LANES, FOLD)

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
                elif QDOT is None and FOLDS:  # the per-key tile's float key fold
                    keys = T.sblock_alloc_buffer((FOLD_SLOTS * VL,), "float32", scope=BLOCK_SCOPE)
                    rs = part
                else:  # the per-key tile uses neither
                    keys = part
                    rs = part
                if QDOT is not None:  # the queries as int8, their score factors and unsigned-key offsets
                    q8 = T.sblock_alloc_buffer((NV, D), "int8", scope=BLOCK_SCOPE)
                    qs = T.sblock_alloc_buffer((NV,), "float32", scope=BLOCK_SCOPE)
                    qo = T.sblock_alloc_buffer((NV,), "int32", scope=BLOCK_SCOPE)
                else:
                    q8, qs, qo = q, part, m
                if QDOT is not None:  # the integer scores' partial sums (and fold slots)
                    ipart = T.sblock_alloc_buffer((INT8_QUERY_DOTS[QDOT][0] * FOLD_SLOTS,), "int32", scope=BLOCK_SCOPE)
                else:
                    ipart = m
                if needs_fold_constants(QDOT, FOLDS):
                    consts = T.sblock_alloc_buffer((FOLD_CONSTANTS * FOLD_LANES,), "int32", scope=BLOCK_SCOPE)
                else:
                    consts = m
                for g in range(NQ):  # vector g: head g % G at position vt * R + g // G (clamped to S)
                    for d in T.vectorized(D):
                        q[g, d] = Q[vh * G + g % G, T.min(vt * R + g // G, S - 1), d]
                init(m, lsum, acc, consts)
                if QDOT is not None:
                    quantize_queries(q, q8, qs, qo, part, ipart, mt)
                # causal: the prefix and the tiles up to the block's last position
                for t in range((T.min(L - S + vt * R + R, L) - 1 + BK) // BK):
                    if LANES and t * BK + BK <= T.min(L - S + vt * R + R, L):  # a whole tile: no clamping
                        tile(q, K, V, Ks, Vs, vh, t * BK, t * BK + BK, L - S + vt * R + 1, m, lsum, acc, sc, keys,
                             part, rs, mt, q8, qs, qo, ipart, consts)
                    else:
                        tile(q, K, V, Ks, Vs, vh, t * BK, T.min(L - S + vt * R + R, L), L - S + vt * R + 1, m, lsum,
                             acc, sc, keys, part, rs, mt, q8, qs, qo, ipart, consts)
                for g in range(NQ):
                    if vt * R + g // G < S:
                        for d in T.vectorized(D):
                            O[vh * G + g % G, vt * R + g // G, d] = acc[g, d] / lsum[g]

    return cache_signatures("attention_prefill", lambda S: (HQ, S, D), lambda S: (HQ, S, D), HKV, D, KV8, body,
                            {"tirx.noalias": True})


def decode_tir(HQ: int, HKV: int, D: int, BK: int, VL: int, SPLIT: int, KV8: bool = False, LANES: bool = False,
               QDOT: str | None = None, FOLD: bool = False):
    """Flash-decoding: blocks over (KV head, chunk of SPLIT keys) write partial (max, sum, acc); a
    second grid merges the chunks. SPLIT is a multiple of BK. KV8: int8 caches with a float32 scale
    per (head, position) row. LANES: the keys-in-lanes tile, whose whole tiles skip the row clamping."""
    from tvm.script import tirx as T

    G = HQ // HKV
    NV = G  # query vectors per block
    init, quantize_queries, tile = online_softmax(G, G, D, BK, VL, KV8, LANES, QDOT, FOLD)
    FOLDS = folds_keys(QDOT, VL, BK, LANES, FOLD)

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
                elif QDOT is None and FOLDS:  # the per-key tile's float key fold
                    keys = T.sblock_alloc_buffer((FOLD_SLOTS * VL,), "float32", scope=BLOCK_SCOPE)
                    rs = part
                else:  # the per-key tile uses neither
                    keys = part
                    rs = part
                if QDOT is not None:  # the queries as int8, their score factors and unsigned-key offsets
                    q8 = T.sblock_alloc_buffer((NV, D), "int8", scope=BLOCK_SCOPE)
                    qs = T.sblock_alloc_buffer((NV,), "float32", scope=BLOCK_SCOPE)
                    qo = T.sblock_alloc_buffer((NV,), "int32", scope=BLOCK_SCOPE)
                else:
                    q8, qs, qo = q, part, m
                if QDOT is not None:  # the integer scores' partial sums (and fold slots)
                    ipart = T.sblock_alloc_buffer((INT8_QUERY_DOTS[QDOT][0] * FOLD_SLOTS,), "int32", scope=BLOCK_SCOPE)
                else:
                    ipart = m
                if needs_fold_constants(QDOT, FOLDS):
                    consts = T.sblock_alloc_buffer((FOLD_CONSTANTS * FOLD_LANES,), "int32", scope=BLOCK_SCOPE)
                else:
                    consts = m
                for g in range(G):
                    for d in T.vectorized(D):
                        q[g, d] = Q[vh * G + g, d]
                init(m, lsum, acc, consts)
                if QDOT is not None:
                    quantize_queries(q, q8, qs, qo, part, ipart, mt)
                for t in range(SPLIT // BK):
                    if LANES and vs * SPLIT + t * BK + BK <= L:  # a whole tile: no clamping
                        tile(q, K, V, Ks, Vs, vh, vs * SPLIT + t * BK, vs * SPLIT + t * BK + BK, L, m, lsum, acc, sc,
                             keys, part, rs, mt, q8, qs, qo, ipart, consts)
                    elif vs * SPLIT + t * BK < L:
                        tile(q, K, V, Ks, Vs, vh, vs * SPLIT + t * BK, L, L, m, lsum, acc, sc, keys, part, rs, mt, q8,
                             qs, qo, ipart, consts)
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
