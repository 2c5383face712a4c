"""ARM implementations of the dot-product intrinsics (schedules/cpu/intrinsics.py registers them):
SDOT on ARMv8.2+ (int8, int4 in halves, offset-binary int4, 5- and 6-bit values), SMMLA with i8mm
(on the unpacked scratch), SMULL on ARMv8.0."""

from __future__ import annotations

from schedules.cpu.intrinsic_parts import activations_x4, high_bits, high_plane_shape, impl_high_of, impl_of, \
    impl_steps_of, int8_weights


def _sdot(acc, a, b):
    """SDOT: acc.4s += a.16b . b.16b per 32-bit lane (LLVM folds a lane broadcast b into the by-element form)."""
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), acc, a, b,
                                   dtype="int32x4")


def _activation_lanes(A, steps: int) -> list:
    """The activations of `steps` 4-k steps from one load, each step's 32-bit lane broadcast: LLVM
    folds it into SDOT's by-element form (sdot v.4s, w.16b, x.4b[i]), one load per `steps` SDOTs
    instead of a broadcast load (LD1R) each."""
    from tvm.script import tirx as T

    words = T.reinterpret(A.vload([0], f"int8x{4 * steps}"), dtype=f"int32x{steps}")
    return [T.reinterpret(T.Shuffle([words, words], [step] * 4), dtype="int8x16") for step in range(steps)]


def sdot_form(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                                       C.vload([0], "int32x4"), activations_x4(A, 4, "int8x16"),
                                       int8_weights(B, 16, bits), dtype="int32x4")

    return impl_of(4, 4, bits, update)


def sdot_halves(unsigned: bool):
    """Two SDOTs on a 4-channel x 8-k int4 tile packed in halves: one 128-bit load, the low nibbles
    meet k 0-3, the high nibbles k 4-7. Signed nibbles take shl + sshr and sshr: 3 instructions of
    unpack per 2 SDOT. Offset-binary ones (w + 8 in [0, 15], the q8 model path, whose activation
    block sums pay the +8 back as on x86) take AND and USHR: 2."""
    from tvm.script import tirx as T

    def update(A, B, C):
        if unsigned:
            packed = T.reinterpret(B.vload([0, 0], "int8x16"), dtype="uint8x16")
            low = T.reinterpret(T.bitwise_and(packed, T.Broadcast(T.uint8(15), 16)), dtype="int8x16")
            high = T.reinterpret(T.shift_right(packed, T.Broadcast(T.uint8(4), 16)), dtype="int8x16")
        else:
            packed = B.vload([0, 0], "int8x16")
            four = T.Broadcast(T.int8(4), 16)
            low, high = T.shift_right(T.shift_left(packed, four), four), T.shift_right(packed, four)
        # The activations of k 0-3 and 4-7 by element, from one 8-byte load. MODELLED against an
        # LD1R per SDOT: SmolLM2's 3072 x 576 q8 prefill GEMM 1.17x (A76) / 1.20x (A55) fewer cycles.
        first, second = _activation_lanes(A, 2)
        return _sdot(_sdot(C.vload([0], "int32x4"), low, first), high, second)

    return impl_of(4, 8, 4, update)


def sdot_steps(steps: int):
    """SDOTs on int8 weights of `steps` consecutive 4-channel x 4-k tiles (a strided [steps, 4, 4]
    view: Layout.weights_unpacked's scratch, 16 channels per k step), the activations of all the
    steps from one load, each step's 32-bit lane taken by element (sdot v.4s, w.16b, x.4b[i])."""
    from tvm.script import tirx as T

    def update(A, B, C):
        value = C.vload([0], "int32x4")
        for step, lane in enumerate(_activation_lanes(A, steps)):
            value = _sdot(value, B.vload([step, 0, 0], "int8x16"), lane)
        return value

    return impl_steps_of(4, steps, update)


def smmla_tile():
    """SMMLA (i8mm) on a 2-row x 2-channel x 8-k tile: C (2 x 2 int32, contiguous: the accumulator
    laid out in such tiles) += A (2 rows x 8 k, contiguous: the activations copied in row pairs)
    times B (2 channels x 8 k, contiguous: the unpacked scratch), one instruction for 32 products
    where SDOT does 16."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (2, 8), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            C[0, T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smmla.v4i32.v16i8"), C.vload([0, 0], "int32x4"),
                A.vload([0, 0], "int8x16"), B.vload([0, 0], "int8x16"), dtype="int32x4")

    return impl


def unpack_runs(bits: int = 4):
    """A packed tile of 4 channels' weights in offset-binary nibble halves (4 bytes a channel: k 0-3
    in the low nibbles, k 4-7 in the high; 5 or 6 bits: the bits above them ORed in from the tile's
    high-bit plane, as sdot_halves_high does) as bytes, each channel's 8 k contiguous (SMMLA's
    operand): AND and USHR give the halves, ZIP1 / ZIP2 of 32-bit words put each channel's two
    halves side by side. (TVM's vectoriser gathers such a run byte by byte: its k % 4 is no ramp.)"""
    from tvm.script import tirx as T

    first, second = [0, 4, 1, 5], [2, 6, 3, 7]  # words of [low, high]: channels 0-1, then 2-3

    def halves(W, H=None):
        packed = T.reinterpret(W.vload([0, 0], "int8x16"), dtype="uint8x16")
        low = T.reinterpret(T.bitwise_and(packed, T.Broadcast(T.uint8(15), 16)), dtype="int8x16")
        high = T.reinterpret(T.shift_right(packed, T.Broadcast(T.uint8(4), 16)), dtype="int8x16")
        if H is not None:
            top_low, top_high = high_bits(H, 4, bits)
            low, high = T.bitwise_or(low, top_low), T.bitwise_or(high, top_high)
        return T.reinterpret(low, dtype="int32x4"), T.reinterpret(high, dtype="int32x4")

    if bits == 4:
        @T.prim_func(s_tir=True)
        def impl(w: T.handle, out: T.handle):
            W = T.match_buffer(w, (4, 4), "int8", offset_factor=1)
            Out = T.match_buffer(out, (4, 8), "int8", offset_factor=1)
            with T.sblock("root"):
                T.reads(W[0:4, 0:4])
                T.writes(Out[0:4, 0:8])
                low, high = halves(W)
                Out[0, T.ramp(T.int32(0), 1, 16)] = T.reinterpret(T.Shuffle([low, high], first), dtype="int8x16")
                Out[2, T.ramp(T.int32(0), 1, 16)] = T.reinterpret(T.Shuffle([low, high], second), dtype="int8x16")

        return impl

    shape = high_plane_shape(4, bits)
    region = tuple(slice(0, e) for e in shape)

    @T.prim_func(s_tir=True)
    def impl_high(w: T.handle, h: T.handle, out: T.handle):
        W = T.match_buffer(w, (4, 4), "int8", offset_factor=1)
        H = T.match_buffer(h, shape, "int8", offset_factor=1)
        Out = T.match_buffer(out, (4, 8), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(W[0:4, 0:4], H[region])
            T.writes(Out[0:4, 0:8])
            low, high = halves(W, H)
            Out[0, T.ramp(T.int32(0), 1, 16)] = T.reinterpret(T.Shuffle([low, high], first), dtype="int8x16")
            Out[2, T.ramp(T.int32(0), 1, 16)] = T.reinterpret(T.Shuffle([low, high], second), dtype="int8x16")

    return impl_high


def sdot_halves_high(bits: int):
    """sdot_halves' unsigned form with the bits above each value's nibble (intrinsic_parts.high_bits):
    5 bits TBL, CMTST, AND, ORR into the nibbles, about 7 more instructions per 2 SDOT; 6 bits TBL,
    USHL, two ANDs, a shift and two ORRs."""
    from tvm.script import tirx as T

    def update(A, B, H, C):
        packed = T.reinterpret(B.vload([0, 0], "int8x16"), dtype="uint8x16")
        top_low, top_high = high_bits(H, 4, bits)
        low = T.bitwise_or(T.reinterpret(T.bitwise_and(packed, T.Broadcast(T.uint8(15), 16)), dtype="int8x16"),
                           top_low)
        high = T.bitwise_or(T.reinterpret(T.shift_right(packed, T.Broadcast(T.uint8(4), 16)), dtype="int8x16"),
                            top_high)
        first, second = _activation_lanes(A, 2)
        return _sdot(_sdot(C.vload([0], "int32x4"), low, first), high, second)

    return impl_high_of(4, bits, update)


def neon_form(bits: int):
    from tvm.script import tirx as T

    def smull(x, y):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"), x, y,
                                       dtype="int16x8")

    def pairwise(x):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), x,
                                       dtype="int32x4")

    def update(A, B, C):
        # [a0..a3, a0..a3] against channels (0, 1) and (2, 3): products, then sums of pairs twice.
        a_vec = activations_x4(A, 2, "int8x8")
        b_vec = int8_weights(B, 16, bits)
        low = pairwise(smull(a_vec, T.vectorlow(b_vec, dtype="int8x8")))
        high = pairwise(smull(a_vec, T.vectorhigh(b_vec, dtype="int8x8")))
        return C.vload([0], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"), low, high, dtype="int32x4")

    return impl_of(4, 4, bits, update)
