"""W4A16 on float16 lanes (ops/qgemm_w4a16._acc_fp16_lanes): one tile of 16 columns x 2 k (a byte
per column, nibble h for k 2p + h, offset binary) times `rows` token rows, accumulated into float16.

The weights become halves with no conversion or arithmetic: byte-wise AND and USHR give the
nibbles u, TBL looks up the high byte of the half w = u - 8 (each integer of [-8, 7] is a half
with a zero low byte), ZIP1 / ZIP2 put zero bytes under them. 2 NEON ops per 8 weights, shared by
every row of the tile (the tensor expression's own form, an OR of 0x6400 and an FSUB of 1032, is
exact too; LLVM made it UXTL, ORR and FSUB: 4)."""

from __future__ import annotations

COLUMNS = 16  # a weight tile: two registers of 8 half lanes
_REGISTERED: dict[int, str] = {}


def _desc(rows: int):
    """C[i, j] += (half(0x6400 | nibble h of B[j]) - 1032) * A[i, h], as the op's tensor expression is
    written (its block's iterators in its order: row, column, nibble; a one-row tile has no row)."""
    from tvm.script import tirx as T

    def value(A, B, i, vj, vh):
        return (T.reinterpret("float16", T.Cast("uint16", T.bitwise_or(T.bitwise_and(
            T.shift_right(T.Cast("int32", B[vj]), vh * 4), 15), 25600))) - T.float16(1032.0)) * A[i, vh]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (rows, 2), "float16", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (COLUMNS,), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, COLUMNS), "float16", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:COLUMNS], B[0:COLUMNS], A[0:rows, 0:2])
            T.writes(C[0:rows, 0:COLUMNS])
            for h, i, j in T.grid(2, rows, COLUMNS):
                with T.sblock("update"):
                    vi, vj, vh = T.axis.remap("SSR", [i, j, h])
                    C[vi, vj] = C[vi, vj] + value(A, B, vi, vj, vh)

    @T.prim_func(s_tir=True)
    def desc_one_row(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (1, 2), "float16", offset_factor=1, strides=[T.int32(), 1])
        B = T.match_buffer(b, (COLUMNS,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1, COLUMNS), "float16", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0, 0:COLUMNS], B[0:COLUMNS], A[0, 0:2])
            T.writes(C[0, 0:COLUMNS])
            for h, i, j in T.grid(2, 1, COLUMNS):
                with T.sblock("update"):
                    vj, vh = T.axis.remap("SR", [j, h])
                    C[0, vj] = C[0, vj] + value(A, B, 0, vj, vh)

    return desc_one_row if rows == 1 else desc


# The high bytes of the halves w = u - 8 for u = 0..15 (every integer of [-8, 7] is a half whose
# low byte is zero: 0xc800 is -8, 0x3c00 is 1)
HALF_HIGH_BYTES = (0xC8, 0xC7, 0xC6, 0xC5, 0xC4, 0xC2, 0xC0, 0xBC, 0x00, 0x3C, 0x40, 0x42, 0x44, 0x45, 0x46, 0x47)


def _weights(B):
    """[nibble h][column half]: the tile's weights as float16x8 vectors."""
    from tvm.script import tirx as T

    packed = T.reinterpret(B.vload([0], "int8x16"), dtype="uint8x16")
    nibbles = (T.bitwise_and(packed, T.Broadcast(T.uint8(15), 16)), T.shift_right(packed, T.Broadcast(T.uint8(4), 16)))
    # the table as a constant vector (LLVM folds the lane picks of splats into one literal)
    table = T.Shuffle([T.Broadcast(T.uint8(b), 16) for b in HALF_HIGH_BYTES], [16 * i for i in range(16)])
    zero = T.Broadcast(T.uint8(0), 16)
    halves = []
    for u in nibbles:  # TBL: each nibble's half's high byte; ZIP1 / ZIP2 under zero bytes: the halves
        high = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.tbl1"), table, u,
                                       dtype="uint8x16")
        zipped = [T.Shuffle([high, zero], [first + i // 2 + (0 if i % 2 else 16) for i in range(16)]) for first in (0, 8)]
        halves.append([T.reinterpret(z, dtype="float16x8") for z in zipped])
    return halves


def _impl(rows: int):
    from tvm.script import tirx as T

    def row_update(A, B, C, i, half):
        w = _weights(B)
        value = C.vload([i, half * 8], "float16x8")
        for h in range(2):
            value = value + w[h][half] * T.Broadcast(A[i, h], 8)
        return value

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        sa = T.int32()
        sc = T.int32()
        A = T.match_buffer(a, (rows, 2), "float16", offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (COLUMNS,), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, COLUMNS), "float16", offset_factor=1, strides=[sc, 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:COLUMNS], B[0:COLUMNS], A[0:rows, 0:2])
            T.writes(C[0:rows, 0:COLUMNS])
            for i in T.unroll(rows):
                C[i, T.ramp(0, 1, 8)] = row_update(A, B, C, i, 0)
                C[i, T.ramp(8, 1, 8)] = row_update(A, B, C, i, 1)

    return impl


def half_intrinsic(rows: int) -> str:
    """The registered name of the 16-column x 2-k float16 tile of `rows` token rows."""
    if rows not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        name = f"ekc_w4a16_half_{rows}x{COLUMNS}"
        TensorIntrin.register(name, _desc(rows), _impl(rows))
        _REGISTERED[rows] = name
    return _REGISTERED[rows]
