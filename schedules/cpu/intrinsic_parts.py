"""Pieces the dot-product intrinsics share (schedules/cpu/intrinsics.py, intrinsics_arm.py): weight
tiles unpacked in registers, activation broadcasts, and the implementation's buffer frame."""

from __future__ import annotations


def interleave(lo, hi, lanes: int):
    """[lo0, hi0, lo1, hi1, ...] of two `lanes`-wide vectors."""
    from tvm.script import tirx as T

    return T.Shuffle([lo, hi], [i // 2 + (i % 2) * lanes for i in range(2 * lanes)])


def int8_weights(B, n: int, bits: int):
    """The weight tile as n int8 lanes in (channel, k) order; int4 nibbles unpacked in registers."""
    from tvm.script import tirx as T

    if bits == 8:
        return B.vload([0, 0], f"int8x{n}")
    packed = B.vload([0, 0], f"int8x{n // 2}")
    four = T.Broadcast(T.int8(4), n // 2)
    return interleave(T.shift_right(T.shift_left(packed, four), four), T.shift_right(packed, four), n // 2)


def int16_weights(B, n: int, bits: int):
    """The weight tile as n sign-extended int16 lanes in (channel, k) order."""
    from tvm.script import tirx as T

    if bits == 8:
        return T.Cast(f"int16x{n}", B.vload([0, 0], f"int8x{n}"))
    wide = T.Cast(f"int16x{n // 2}", B.vload([0, 0], f"int8x{n // 2}"))
    low = T.shift_right(T.shift_left(wide, T.Broadcast(T.int16(12), n // 2)), T.Broadcast(T.int16(12), n // 2))
    high = T.shift_right(T.shift_left(wide, T.Broadcast(T.int16(8), n // 2)), T.Broadcast(T.int16(12), n // 2))
    return interleave(low, high, n // 2)


def impl_of(nt: int, kt: int, bits: int, update):
    """The implementation of an nt x kt intrinsic: C[0:nt] = update(A, B, C) as one vector expression."""
    from tvm.script import tirx as T

    b_cols = kt if bits == 8 else kt // 2

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, b_cols), "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:nt, 0:b_cols])
            T.writes(C[0:nt])
            C[T.ramp(T.int32(0), 1, nt)] = update(A, B, C)

    return impl


def activations_x4(A, copies: int, dtype: str, start: int = 0):
    """4 activation bytes (from `start`) as one int32, repeated `copies` times, reinterpreted as `dtype`."""
    from tvm.script import tirx as T

    return T.reinterpret(T.broadcast(T.reinterpret(A.vload([start], "int8x4"), dtype="int32"), copies), dtype=dtype)


def fifth_bits(H, nt: int):
    """For a tile of nt channels x 8 k in nibble halves (lane 4 c + i holds channel c's k i in its low
    nibble and k 4 + i in its high one) with H one byte per channel of its k's fifth bits (bit k):
    (low, high) int8 vectors of 16 where that lane's k 0-3 (low) or k 4-7 (high) bit is set, to OR
    into the unpacked nibbles. The byte is spread over its channel's lanes (one shuffle: TBL, VPSHUFB /
    VPERMB), then tested against each lane's bit."""
    from tvm.script import tirx as T

    lanes = 4 * nt
    packed = T.reinterpret(H.vload([0], f"int8x{nt}"), dtype=f"uint8x{nt}")
    spread = T.Shuffle([packed] * 4, [lane // 4 for lane in range(lanes)])  # a Shuffle may not widen its input

    def part(first_bit: int):
        masks = T.Shuffle([T.Broadcast(T.uint8(1 << (first_bit + i)), nt) for i in range(4)],
                          [lane % 4 * nt for lane in range(lanes)])
        set_ = T.bitwise_and(spread, masks) != T.Broadcast(T.uint8(0), lanes)
        return T.reinterpret(T.Select(set_, T.Broadcast(T.uint8(16), lanes), T.Broadcast(T.uint8(0), lanes)),
                             dtype=f"int8x{lanes}")

    return part(0), part(4)


def high_bit_pairs(H, nt: int):
    """fifth_bits' counterpart for 6-bit values: H is 2 bytes per channel (packing.py high_bit_pairs),
    lane i's four top bits (k i's at bits 0-1, k 4 + i's at 2-3) a nibble of byte i % 2. The bytes
    are spread to their lanes (one shuffle), every other 16-bit pair shifted left by 4 (ARM USHL,
    x86 VPMULLW), so each lane's nibble sits in bits 4-7; masks give (low, high) to OR in."""
    from tvm.script import tirx as T

    lanes = 4 * nt
    packed = T.reinterpret(H.vload([0, 0], f"int8x{2 * nt}"), dtype=f"uint8x{2 * nt}")
    spread = T.Shuffle([packed, packed], [lane // 4 * 2 + lane % 2 for lane in range(lanes)])
    shifts = T.Shuffle([T.Broadcast(T.uint16(4), nt), T.Broadcast(T.uint16(0), nt)], [i % 2 * nt for i in range(2 * nt)])
    tops = T.reinterpret(T.shift_left(T.reinterpret(spread, dtype=f"uint16x{2 * nt}"), shifts), dtype=f"uint8x{lanes}")
    mask = T.Broadcast(T.uint8(0x30), lanes)
    low = T.bitwise_and(tops, mask)
    high = T.bitwise_and(T.shift_right(tops, T.Broadcast(T.uint8(2), lanes)), mask)
    return T.reinterpret(low, dtype=f"int8x{lanes}"), T.reinterpret(high, dtype=f"int8x{lanes}")


def high_bits(H, nt: int, bits: int):
    """(low, high) vectors of the bits above each value's nibble, for 5- or 6-bit weight tiles."""
    return fifth_bits(H, nt) if bits == 5 else high_bit_pairs(H, nt)


def high_plane_shape(nt: int, bits: int) -> tuple[int, ...]:
    """The high-bit plane of one nt x 8 tile: a byte per channel (5 bits), two (6 bits)."""
    return (nt,) if bits == 5 else (nt, 2)


def impl_high_of(nt: int, bits: int, update):
    """The implementation frame of an nt x 8 tile of 5- or 6-bit weights: nibble halves B and the
    tile's high-bit plane H (schedules/cpu/intrinsics.py _desc_high)."""
    from tvm.script import tirx as T

    shape = high_plane_shape(nt, bits)
    region = tuple(slice(0, e) for e in shape)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, h: T.handle, c: T.handle):
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, 4), "int8", offset_factor=1)
        H = T.match_buffer(h, shape, "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:8], B[0:nt, 0:4], H[region])
            T.writes(C[0:nt])
            C[T.ramp(T.int32(0), 1, nt)] = update(A, B, H, C)

    return impl


def impl_steps_of(nt: int, steps: int, update):
    """The implementation of an intrinsic on int8 weights of `steps` consecutive k tiles of nt
    channels x 4 k, a strided [steps, nt, 4] view (Layout.weights_unpacked's scratch):
    C[0:nt] = update(A, B, C)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (4 * steps,), "int8", offset_factor=1)
        B = T.match_buffer(b, (steps, nt, 4), "int8", offset_factor=1, strides=[T.int32(), 4, 1])
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:4 * steps], B[0:steps, 0:nt, 0:4])
            T.writes(C[0:nt])
            C[T.ramp(T.int32(0), 1, nt)] = update(A, B, C)

    return impl


def high_value(B, H, c, k, kt: int, bits: int):
    """The int32 value of channel c's k in a tile of offset-binary nibble halves B with the bits above
    them in H (5 bits: bit k of H[c]; 6 bits: packing.py high_bit_pairs), as ops/qgemm_int.py reads it."""
    from tvm.script import tirx as T

    nibble = T.bitwise_and(T.shift_right(T.Cast("int32", B[c, k % (kt // 2)]), k // (kt // 2) * 4), 15)
    if bits == 5:
        top = T.bitwise_and(T.shift_right(T.Cast("int32", H[c]), k), 1)
    else:
        top = T.bitwise_and(T.shift_right(T.Cast("int32", H[c, k % 2]), k % 4 // 2 * 4 + k % kt // 4 * 2), 3)
    return T.bitwise_or(nibble, T.shift_left(top, 4))
