"""SIMD building blocks of the CPU attention tiles (attention_cpu.py): lane reductions as trees,
and the integer dot products that score an int8 cache against a query rounded to int8."""

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


def int8_query_dot(kind: str, acc, K, vh, row, q8, g, d0):
    """acc + one dot-product instruction over key row bytes [d0 * B, d0 * B + B) and the int8
    query's (B = 4 x lanes)."""
    from tvm.script import tirx as T

    lanes, unsigned_keys = INT8_QUERY_DOTS[kind]
    width = 4 * lanes
    key = K.vload([vh, row, d0 * width], f"int8x{width}")
    if unsigned_keys:  # k + 128 as unsigned bytes is k with its sign bit flipped
        key = T.reinterpret(T.bitwise_xor(T.reinterpret(key, dtype=f"int32x{lanes}"),
                                          T.broadcast(T.int32(-2139062144), lanes)), dtype=f"int8x{width}")
    name = {"avx512_vnni": "llvm.x86.avx512.vpdpbusd.512", "sdot": "llvm.aarch64.neon.sdot.v4i32.v16i8"}[kind]
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), acc.vload([0], f"int32x{lanes}"), key,
                                   q8.vload([g, d0 * width], f"int8x{width}"), dtype=f"int32x{lanes}")


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
