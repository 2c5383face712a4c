"""SIMD building blocks of the CPU attention tiles (attention_tiles.py): lane reductions (halving
folds, trees), the integer dot products that score an int8 cache against a query rounded to int8,
and the fold of 16 keys' partial sums at once (integer or float)."""

from __future__ import annotations

# Integer dot products for the scores of an int8 cache, by the target's int8_dot kind: the int32
# lanes of one instruction (each the sum of 4 byte products), and whether its key operand is
# unsigned (then the key bytes are offset by 128 with one XOR, and 128 x the query's sum is taken
# off each score).
INT8_QUERY_DOTS = {"avx512_vnni": (16, True), "sdot": (4, False)}


def query_dot_form(int8_dot: str, d: int, kv8: bool) -> str | None:
    """The int8_dot kind whose integer dot products the per-key tile can compute an int8 cache's
    scores with (the query rounded to int8), or None for the float form (schedules choose)."""
    if kv8 and int8_dot in INT8_QUERY_DOTS and d % (4 * INT8_QUERY_DOTS[int8_dot][0]) == 0:
        return int8_dot
    return None


def int8_query_dot(kind: str, acc, K, vh, row, q8, g, d0, at=0, sign_bits=None):
    """acc[at:at + lanes] + one dot-product instruction over key row bytes [d0 * B, d0 * B + B) and
    the int8 query's (B = 4 x lanes). sign_bits: for a kind with unsigned keys, an int32 vector of
    0x80808080 (FOLD_CONSTANTS' SIGN_BITS; a broadcast here would stop MetaSchedule's FLOP estimate)."""
    from tvm.script import tirx as T

    lanes, unsigned_keys = INT8_QUERY_DOTS[kind]
    width = 4 * lanes
    key = K.vload([vh, row, d0 * width], f"int8x{width}")
    if unsigned_keys:  # k + 128 as unsigned bytes is k with its sign bit flipped
        key = T.reinterpret(T.bitwise_xor(T.reinterpret(key, dtype=f"int32x{lanes}"), sign_bits),
                            dtype=f"int8x{width}")
    name = {"avx512_vnni": "llvm.x86.avx512.vpdpbusd.512", "sdot": "llvm.aarch64.neon.sdot.v4i32.v16i8"}[kind]
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), acc.vload([at], f"int32x{lanes}"), key,
                                   q8.vload([g, d0 * width], f"int8x{width}"), dtype=f"int32x{lanes}")


# Where the target has a two-source permute of 16 32-bit lanes (x86 AVX-512: VPERMI2D, VPERMI2PS;
# the schedule's `key_fold`), the per-key tile's partial sums (one vector of lanes per key, int32
# for an int8 cache's integer scores, float32 else) are folded 16 keys at a time (attention_tiles'
# folded_scores): four halving levels of two permutes and an add each, 45 instructions for 16 keys,
# where a fold per key costs 8 (log2 16 shuffles and adds). The scratch holds the 8 first-level
# results and 2 keys' products (FOLD_SLOTS vectors: 640 bytes, under the 1 KiB TVM keeps on the stack).
KEY_FOLD_PERMUTES = {"int32": "llvm.x86.avx512.vpermi2var.d.512", "float32": "llvm.x86.avx512.vpermi2var.ps.512"}
FOLD_LANES = 16
FOLD_SLOTS = 10
FOLD_LEVELS = (8, 4, 2, 1)  # partial sums per key left after each halving level
# The fold's constant int32 vectors, which the tile writes into a scratch of their own (a vectorised
# loop over lanes) and loads: each level's two permute indices, the key order, and the sign bits
# of int8 keys. As T.Ramp / T.Broadcast expressions they would stop MetaSchedule's FLOP estimate
# (it has no rule for either), so the kernel could not be tuned; LLVM folds the loads to constants.
KEY_ORDER = 2 * len(FOLD_LEVELS)
SIGN_BITS = KEY_ORDER + 1
FOLD_CONSTANTS = SIGN_BITS + 1


def _bit_reverse4(s):
    """The lane in which the fold delivers the sum of its vector s (an involution)."""
    return ((s & 1) << 3) | ((s & 2) << 1) | ((s & 4) >> 1) | ((s & 8) >> 3)


def _fold_lane(vector: int, u):
    """Lane u of the fold's constant vector number `vector` (a Python int): a level's low then
    high permute index (in each group of 2h lanes, h lanes of the first source's pairs then h of
    the second's), the key order, or the sign bits."""
    if vector == SIGN_BITS:
        return -2139062144  # 0x80808080
    if vector == KEY_ORDER:
        return _bit_reverse4(u)
    h = FOLD_LEVELS[vector // 2]
    within = u % (2 * h)
    return u // (2 * h) * (2 * h) + within % h + within // h * FOLD_LANES + vector % 2 * h


def fold_constant(vector, u):
    """Lane u of the fold's constant `vector`, a TIR loop variable (TVMScript's loops are TIR loops)."""
    from tvm.script import tirx as T

    value = T.int32(_fold_lane(FOLD_CONSTANTS - 1, u))
    for number in reversed(range(FOLD_CONSTANTS - 1)):
        value = T.Select(vector == number, _fold_lane(number, u), value)
    return value


def needs_fold_constants(query_dot: str | None, folds: bool) -> bool:
    """Whether a tile reads FOLD_CONSTANTS: it folds keys, or its int8 keys are made unsigned."""
    return folds or (query_dot is not None and INT8_QUERY_DOTS[query_dot][1])


def fold_vector(constants, vector: int):
    """The fold's constant `vector`, loaded from the scratch the tile filled."""
    return constants.vload([vector * FOLD_LANES], f"int32x{FOLD_LANES}")


def _permute(buf, x, index, y):
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(KEY_FOLD_PERMUTES[str(buf.dtype)]), x, index, y,
                                   dtype=f"{buf.dtype}x{FOLD_LANES}")


def in_key_order(buf, constants):
    """The fold's 16 sums (buf's first vector) with key s's in lane s: the halving levels deliver
    vector s's sum in lane bit_reverse4(s), so the keys are fed in order (the cache read
    sequentially) and one permute puts the sums back. Float decode at L=8192 (x86-avx512, hot,
    against the per-key form): keys fed bit-reversed 0.79-0.92x, in order 0.98-0.99x, with the same
    loop order; the int8 form, whose 16 rows are one register each, ran the same either way."""
    x = buf.vload([0], f"{buf.dtype}x{FOLD_LANES}")
    return _permute(buf, x, fold_vector(constants, KEY_ORDER), x)


def fold_pair(buf, a, b, h: int, constants):
    """One halving level of the key fold on vectors a and b of buf (16 lanes each, of its dtype):
    in each group of 2h lanes, h partial sums of a's key then h of b's (the halves of each added)."""
    vector = f"{buf.dtype}x{FOLD_LANES}"
    x, y = buf.vload([a * FOLD_LANES], vector), buf.vload([b * FOLD_LANES], vector)
    level = 2 * FOLD_LEVELS.index(h)
    return _permute(buf, x, fold_vector(constants, level), y) + _permute(buf, x, fold_vector(constants, level + 1), y)


# Vector accumulators the keys-in-lanes value loop keeps live: 4-cycle FMA latency x 2 pipes needs
# about 8; 12 leave room for the operands in a 32-register file.
ACCUMULATORS = 12


def score_vectors(G: int, VL: int) -> int:
    """Query vectors whose keys-in-lanes scores accumulate together (a divisor of G, SV x VL
    accumulators up to ACCUMULATORS). One vector's VL x VL partial sums are VL dependency chains,
    too few for 4-cycle FMAs on 2 pipes. SmolLM2's attention (9 / 3 heads, D 64), MODELLED, one
    vector -> three: prefill S=128 A76 1530 -> 1113 us, A55 7864 -> 7233 us; decode L=2048 A76 229
    -> 221 us, A55 1143 -> 1221 us (the key loop stays rolled: unrolled by hand it is 1.17x
    faster on the in-order A55 and 1.11x slower on the A76; the tuner's unroll knob can choose)."""
    return max(sv for sv in range(1, G + 1) if G % sv == 0 and (sv == 1 or sv * VL <= ACCUMULATORS))


def fold_lanes_macro():
    """A TVMScript macro: fold_lanes(op, part, lanes) reduces part[0:lanes] into part[0]."""
    from tvm.script import tirx as T

    @T.macro
    def fold_lanes(op, part, lanes):
        """part[0] = op-reduction of part[0:lanes], by halving vector steps (log2 lanes of them,
        where a tree of lane reads costs lanes - 1 scalar steps and as many lane extractions)."""
        if lanes >= 64:
            for u in T.vectorized(32):
                part[u] = op(part[u], part[u + 32])
        if lanes >= 32:
            for u in T.vectorized(16):
                part[u] = op(part[u], part[u + 16])
        if lanes >= 16:
            for u in T.vectorized(8):
                part[u] = op(part[u], part[u + 8])
        if lanes >= 8:
            for u in T.vectorized(4):
                part[u] = op(part[u], part[u + 4])
        if lanes >= 4:
            for u in T.vectorized(2):
                part[u] = op(part[u], part[u + 2])
        if lanes >= 2:
            part[0] = op(part[0], part[1])

    return fold_lanes


def _tree(op, buf, lanes: int, row=None):
    """op-reduction of buf[0:lanes] (of buf[row, 0:lanes] with a row) as a balanced tree (short
    dependency chains, SLP-friendly)."""
    terms = [buf[u] if row is None else buf[row, u] for u in range(lanes)]
    while len(terms) > 1:
        terms = [op(terms[i], terms[i + 1]) for i in range(0, len(terms), 2)]
    return terms[0]


def row_sums(rows, c, lanes: int):
    """The sum of rows[c, 0:lanes] as a balanced tree. With c the vectorised lane, each term is a
    strided (transposed) read of the local tile, which LLVM turns into shuffles: the VL sums of VL
    rows cost VL - 1 vector adds, where a horizontal sum per row costs VL x log2(VL) steps. (Not
    T.Shuffle: MetaSchedule's FLOP estimate has no rule for it, so such a kernel cannot be tuned.)"""
    return _tree(lambda a, b: a + b, rows, lanes, row=c)
